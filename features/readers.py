"""Read raw shop files (CSV, CSV.gz, Parquet, JSON Lines) into DataFrames, values untouched.

CSV columns stay text (empty stays "") so that validation sees exactly what the file says;
Parquet and JSON keep their own types. Anything unreadable raises ``IngestError`` naming the
file and what is wrong, never a bare parser exception.
"""
from __future__ import annotations

import codecs
import gzip
import json
import zlib
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from features.errors import EMPTY_REMEDY, IngestError

FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
}

# Arrow's JSON types as nullable pandas dtypes: an int column with a null stays integral.
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}
_DECOMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def file_format(path: Path) -> str:
    """The format of the file ("csv", "parquet" or "jsonl"), from its name."""
    name = Path(path).name.lower()
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    raise IngestError(f"{path}: unsupported file type (expected one of {', '.join(FORMATS)})")


def read_raw(path: Path, encoding: str | None = None) -> pd.DataFrame:
    """The file as a DataFrame with a RangeIndex: row i is data row i + 1 of the file.

    ``encoding`` applies to CSV (default UTF-8; pass e.g. "latin-1" for legacy exports).
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: empty file", EMPTY_REMEDY)
    try:
        if fmt == "csv":
            return _read_csv(path, encoding)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return _read_jsonl(path)
    except IngestError:
        raise
    except UnicodeDecodeError as e:
        raise _encoding_error(path, encoding or "utf-8") from e
    except _DECOMPRESSION_ERRORS as e:
        raise IngestError(f"{path}: truncated or corrupt gzip ({e})") from e
    except pd.errors.EmptyDataError as e:
        raise IngestError(f"{path}: empty file (no header)", EMPTY_REMEDY) from e
    except pd.errors.ParserError as e:
        raise IngestError(f"{path}: malformed CSV ({e})") from e
    except (pa.ArrowException, OSError) as e:
        raise IngestError(f"{path}: cannot read as {fmt} ({e})") from e


def peek_columns(path: Path) -> list[str]:
    """Column names without reading the data (JSON Lines: the keys of the first record)."""
    path = Path(path)
    fmt = file_format(path)
    try:
        if fmt == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0, dtype=str, sep=delimiter(path)).columns]
        if fmt == "parquet":
            return list(pq.read_schema(path).names)
        with _open_text(path) as f:
            first = next((line for line in f if line.strip()), "{}")
        record = json.loads(first)
        return list(record) if isinstance(record, dict) else []
    except Exception as e:  # the full read reports the precise problem
        if isinstance(e, (FileNotFoundError, IsADirectoryError)):
            raise IngestError(f"{path}: file not found") from e
        return []


def read_json_table(path: Path) -> pa.Table:
    """JSON Lines through Arrow (fast, typed); raises Arrow errors on mixed-type columns."""
    with pa.input_stream(str(path), compression="detect") as stream:
        return pa_json.read_json(stream)


def _read_csv(path: Path, encoding: str | None) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding=encoding or "utf-8",
                       sep=delimiter(path, encoding))


DELIMITERS = (";", "\t", "|")  # a header without a comma: the first of these it holds (European spreadsheet exports)


def delimiter(path: Path, encoding: str | None = None) -> str:
    """The CSV's column separator, from its header line: a comma, or else ';', a tab or '|' when the header holds one
    (a semicolon file was refused as 'missing required column order_id ... found order_id;user_id;...')."""
    opener = gzip.open if Path(path).name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding=encoding or "utf-8", errors="replace", newline="") as f:
            header = f.readline()
    except (OSError, EOFError):
        return ","
    return delimiter_of(header)


def delimiter_of(header: str) -> str:
    """A comma, or else the first of ``DELIMITERS`` the header line holds (a comma when none)."""
    return "," if "," in header else next((d for d in DELIMITERS if d in header), ",")


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        table = read_json_table(path)
    except (pa.ArrowException, OSError):
        return _read_jsonl_python(path)
    if table.num_rows == 0:
        raise IngestError(f"{path}: empty file (no records)", EMPTY_REMEDY)
    return table.to_pandas(types_mapper=_NULLABLE.get)


def _read_jsonl_python(path: Path) -> pd.DataFrame:
    """Slow path for files Arrow refuses (a column mixing numbers and text): object columns
    keep each value as written, and a broken line is reported with its number."""
    records = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise IngestError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise IngestError(f"{path}: line {lineno} is not a JSON object")
            records.append(record)
    if not records:
        raise IngestError(f"{path}: empty file (no records)", EMPTY_REMEDY)
    keys = dict.fromkeys(k for r in records for k in r)
    return pd.DataFrame({k: pd.Series([r.get(k) for r in records], dtype=object) for k in keys})


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _open_bytes(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _encoding_error(path: Path, encoding: str) -> IngestError:
    """Names the byte offset of the first undecodable byte (after decompression)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    where = "unknown offset"
    with _open_bytes(path) as f:
        while True:
            try:
                chunk = f.read(1 << 20)
            except _DECOMPRESSION_ERRORS:  # also cut short: the offset found so far (if any) stands
                break
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                buffered = len(e.object) - len(chunk)
                where = f"byte offset {offset - buffered + e.start}"
                break
            if not chunk:
                break
            offset += len(chunk)
    hint = "" if encoding.lower().replace("-", "") != "utf8" else (
        "; save it as UTF-8 first (a spreadsheet's 'CSV UTF-8' export, or `iconv -f latin1 -t utf-8`), or from Python "
        "pass encoding= (e.g. 'latin-1')")
    return IngestError(f"{path}: not valid {encoding} at {where}{hint}")
