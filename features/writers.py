"""Write a table in the format its file name says (the formats ``features/readers.py`` reads).

Every command that writes a table (``shoprec export-events --out``, ``shoprec churn-list --out``)
goes through ``write_table``: ``.csv``, ``.csv.gz``, ``.parquet`` (``.pq``), ``.jsonl``
(``.ndjson``, either gzipped). A name it cannot honour is refused before any work
(``check_table_path``), never written in another format under that name.
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pandas as pd

from features.errors import InputError

FORMATS = {  # suffix -> (format, gzip)
    ".csv": ("csv", False),
    ".csv.gz": ("csv", True),
    ".parquet": ("parquet", False),
    ".pq": ("parquet", False),
    ".jsonl": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False),
    ".ndjson.gz": ("jsonl", True),
}


def check_table_path(path: Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name; ``InputError`` for a name without a writable suffix."""
    name = Path(path).name.lower()
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"{path}: cannot tell the table format from the name",
                     "end it with .csv, .csv.gz, .parquet or .jsonl (also .pq, .ndjson, .jsonl.gz)")


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` (no index) atomically: to a temporary name beside ``path``, then renamed over it."""
    path = Path(path)
    fmt, gzipped = check_table_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            with open(tmp, "wb") as raw, _text(raw, gzipped) as f:
                if fmt == "csv":
                    frame.to_csv(f, index=False, lineterminator="\n")
                else:
                    frame.to_json(f, orient="records", lines=True, date_format="iso", date_unit="us", force_ascii=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _text(raw, gzipped: bool) -> io.TextIOWrapper:
    """UTF-8 text onto ``raw``, through gzip without a file name or time in its header (same rows, same bytes)."""
    stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gzipped else raw
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")
