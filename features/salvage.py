"""Rows from damaged files: a gzip stream cut short, bytes that are not valid UTF-8, JSON
Lines with broken lines.

``read_raw`` refuses such a file whole. Ingest reads through ``read_salvaged`` instead: a
file that reads cleanly is returned as ``read_raw`` gives it; a damaged one keeps every row
that can be read, and each damaged row stays in the frame, flagged in
``df.attrs[DAMAGE]`` ({reason: row positions}), so that validation rejects it with that reason
and read = accepted + rejected still holds. What cannot be counted (rows after the point
where a gzip stream breaks) is said in ``df.attrs[NOTES]``. A file in which most rows do not
decode is in another encoding, not damaged: that stays a file error.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import zlib
from pathlib import Path

import pandas as pd

from features.errors import IngestError
from features.readers import delimiter_of, file_format, read_raw

DAMAGE, NOTES = "row_damage", "damage_notes"
BAD_ENCODING = "bad encoding"
TRUNCATED = "truncated row"
BAD_JSON = "not valid JSON"
NOT_OBJECT = "not a JSON object"
_MARK = "\U0010fffe"  # a noncharacter: stands for undecodable bytes until the rows are flagged
_HANDLER = "shoprec-salvage"
_SALVAGEABLE = (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error, json.JSONDecodeError)
MAX_BAD_SHARE = 0.5  # more undecodable rows than this: wrong encoding, a file error


def read_salvaged(path: Path, encoding: str | None = None) -> pd.DataFrame:
    """``read_raw``, or for a damaged CSV / JSON Lines file (gzipped or not) every row it has."""
    path = Path(path)
    try:
        return read_raw(path, encoding)
    except IngestError as e:
        if file_format(path) == "parquet" or not isinstance(e.__cause__, _SALVAGEABLE):
            raise
        refusal = e
    data, cut, why = _readable_bytes(path)
    body, tail = (data, b"") if cut is None else _split_tail(data)
    if not body.strip():
        raise refusal
    codecs.register_error(_HANDLER, lambda err: (_MARK, err.end))
    try:
        if file_format(path) == "csv":
            df, damage = _csv(body, tail, encoding or "utf-8")
        else:
            df, damage = _jsonl(body, tail)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, LookupError) as e:
        raise refusal from e
    if len(df) == 0:
        raise refusal
    bad = len(damage.get(BAD_ENCODING, ()))
    if bad > MAX_BAD_SHARE * max(len(df), 1):
        raise refusal
    notes = {}
    if cut is not None:
        notes["damaged"] = f"gzip stream breaks after {cut:,} decompressed bytes ({why}); rows after that point are lost"
    if bad:
        notes["bad_encoding"] = f"{bad:,} rows not valid {encoding or 'utf-8'} (undecodable bytes shown as U+FFFD)"
    df.attrs[DAMAGE] = {reason: sorted(rows) for reason, rows in damage.items() if rows}
    df.attrs[NOTES] = notes
    return df


def damage_masks(df: pd.DataFrame) -> list[tuple[str, list[int]]]:
    """(reason, row positions) of the rows a damaged file could not give whole."""
    return list((df.attrs.get(DAMAGE) or {}).items())


def _readable_bytes(path: Path) -> tuple[bytes, int | None, str]:
    """The (decompressed) bytes as far as they go, where a gzip stream broke (None: it did
    not) and why."""
    raw = path.read_bytes()
    if not path.name.lower().endswith(".gz"):
        return raw, None, ""
    out, pos = bytearray(), 0
    while pos < len(raw):
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(raw[pos:])
            out += d.flush()
        except zlib.error as e:
            return bytes(out), len(out), f"corrupt: {e}"
        if not d.eof:
            return bytes(out), len(out), "the stream ends early"
        rest = d.unused_data
        if not rest.strip(b"\x00"):
            break
        pos = len(raw) - len(rest)  # another gzip member follows
    return bytes(out), None, ""


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """Complete lines, and the line the break cut off (empty if it cut between lines)."""
    end = data.rfind(b"\n")
    return data[: end + 1], data[end + 1 :]


def _decode(data: bytes, encoding: str) -> str:
    return data.decode(encoding, errors=_HANDLER)


def _csv(body: bytes, tail: bytes, encoding: str) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    text = _decode(body, encoding)
    sep = delimiter_of(text.split("\n", 1)[0])
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, sep=sep)
    damage: dict[str, list[int]] = {BAD_ENCODING: [], TRUNCATED: []}
    if tail.strip():
        fields = next(csv.reader([_decode(tail, encoding)], delimiter=sep), [])
        fields = (fields + [""] * len(df.columns))[: len(df.columns)]
        df = pd.concat([df, pd.DataFrame([fields], columns=df.columns, dtype=str)], ignore_index=True)
        damage[TRUNCATED].append(len(df) - 1)
    marked = pd.Series(False, index=df.index)
    for column in df.columns:
        marked |= df[column].astype(str).str.contains(_MARK, regex=False)
    damage[BAD_ENCODING] = [i for i in df.index[marked] if i not in damage[TRUNCATED]]
    if marked.any():
        df = df.apply(lambda c: c.str.replace(_MARK, "\ufffd", regex=False))
    return df, damage


def _jsonl(body: bytes, tail: bytes) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    records: list[dict] = []
    damage: dict[str, list[int]] = {BAD_ENCODING: [], TRUNCATED: [], BAD_JSON: [], NOT_OBJECT: []}
    lines = [(line, None) for line in body.split(b"\n")] + ([(tail, TRUNCATED)] if tail.strip() else [])
    for line, problem in lines:
        if not line.strip():
            continue
        text = _decode(line, "utf-8")
        if problem is None and _MARK in text:
            problem = BAD_ENCODING
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record, problem = {}, problem or BAD_JSON
        if not isinstance(record, dict):
            record, problem = {}, problem or NOT_OBJECT
        if problem:
            damage[problem].append(len(records))
            record = {k: v.replace(_MARK, "\ufffd") if isinstance(v, str) else v for k, v in record.items()}
        records.append(record)
    keys = dict.fromkeys(k for r in records for k in r)
    df = pd.DataFrame({k: pd.Series([r.get(k) for r in records], dtype=object) for k in keys},
                      index=pd.RangeIndex(len(records)))
    return df, damage

