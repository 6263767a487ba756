"""Ingest raw shop files into the canonical tables, keeping every rejected row and a report.

Picks each file's layout (UCI Online Retail, OTTO, or the data contract), then writes
``events.parquet``, ``orders.parquet``, ``items.parquet`` (those present), ``rejects.csv``
and ``ingest_report.json``. Each file is written atomically (temp file, then rename) and
rows are sorted by fixed keys, so a rerun on the same inputs gives byte-identical outputs.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.adapters import AdapterResult, read_online_retail, read_otto
from features.contract import SPECS
from features.errors import IngestError
from features.readers import peek_columns
from features.salvage import read_salvaged
from features.validate import validate

LAYOUTS = ("auto", "contract", "online-retail", "otto")
TABLE_FILES = {"events": "events.parquet", "orders": "orders.parquet", "items": "items.parquet"}
REJECTS_FILE, REPORT_FILE = "rejects.csv", "ingest_report.json"
FAILED_DIR = "failed"  # a run with a file of only rejects writes its rejects and report here, no tables
# rows sort by these keys, then by their order in the input file
SORT_KEYS = {"orders": ["ts", "order_id", "item_id"], "events": ["ts", "session_id"], "items": ["item_id"]}
PRIMARY = {"online-retail": "orders", "otto": "events"}


@dataclass
class FileReport:
    """What became of one input file: read == accepted + rejected."""

    table: str
    path: str
    layout: str
    read: int
    accepted: int
    rejected: int
    by_reason: dict[str, int]
    notes: dict = field(default_factory=dict)

    def summary(self) -> str:
        reasons = "; ".join(f"{reason}: {count:,}" for reason, count in self.by_reason.items())
        line = (
            f"{self.table} {Path(self.path).name}: read {self.read:,} = accepted {self.accepted:,}"
            f" + rejected {self.rejected:,}" + (f" ({reasons})" if reasons else "")
        )
        notes = "; ".join(f"{k}: {_fmt(v)}" for k, v in self.notes.items() if v not in ([], {}, None))
        return line + (f"\n  {notes}" if notes else "")


@dataclass
class IngestReport:
    """Per-file counts and the number of rows written per canonical table (none, and ``out_dir`` the failed/ folder
    beside the tables, when a file had every row rejected)."""

    out_dir: Path
    files: list[FileReport]
    tables: dict[str, int]

    def summary(self) -> str:
        written = ", ".join(f"{TABLE_FILES[t]} ({n:,} rows)" for t, n in self.tables.items())
        return "\n".join([f.summary() for f in self.files] + [f"wrote {written} to {self.out_dir}"])

    def to_dict(self) -> dict:
        return {"files": [asdict(f) for f in self.files], "tables": self.tables}


@dataclass
class Canonical:
    """The canonical tables of an ingest output directory (None where absent)."""

    events: pd.DataFrame | None = None
    orders: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    engine: object = None  # features.relational.engine.Engine that computes features from them; None: pandas


def detect_layout(path: Path) -> str:
    """The file's layout: "online-retail" (InvoiceNo/StockCode header), "otto" (session/events
    records) or "contract"."""
    columns = set(peek_columns(Path(path)))
    if {"InvoiceNo", "StockCode"} <= columns:
        return "online-retail"
    if {"session", "events"} <= columns:
        return "otto"
    return "contract"


def ingest(orders: Path | None, events: Path | None, items: Path | None, out_dir: Path, layout: str = "auto",
           forgotten=None, progress: Callable[[str], None] = lambda msg: None, engine="duckdb") -> IngestReport:
    """Read, validate and write the given files; ``layout`` other than "auto" applies to all.

    Rows of shoppers on the forgotten list (``forgotten``, default: the project's list, see
    features/privacy.py) are rejected as "forgotten user" with nothing of them kept. Damaged
    CSV / JSON Lines files (truncated gzip, bytes that are not UTF-8, broken lines) keep their
    readable rows; each damaged row is a reject (features/salvage.py).

    A table that an adapter derives on the side (items from Online Retail, orders from
    OTTO) is used only when no file is given for it. Canonical tables not produced by this
    run are removed from ``out_dir`` so that it never mixes two runs. A catalogue that holds none
    of the items bought or viewed is refused (``IngestError``): its ids cannot be this shop's.
    ``progress`` hears of each file as it is read and of the writing. ``engine`` runs the contract's
    row rules: "duckdb" (the default), "spark", an ``features.relational.engine.Engine``, or "pandas"
    (the in-process reference the engines are tested against).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    inputs = {t: Path(p) for t, p in (("orders", orders), ("events", events), ("items", items)) if p is not None}
    if not inputs:
        raise ValueError("give at least one of orders, events, items")
    if forgotten is None:
        from features.privacy import ForgetList, PrivacyError

        try:
            forgotten = ForgetList.open()
        except PrivacyError as e:
            raise IngestError(f"forgotten-users list: {e}") from e
    engine = _engine(engine)
    reports, rejects, primary, side = [], [], {}, {}
    for slot, path in inputs.items():
        file_layout = detect_layout(path) if layout == "auto" else layout
        table = PRIMARY.get(file_layout, slot)
        progress(f"ingest: reading {path.name} ({file_layout} layout)")
        if table in primary:
            raise IngestError(f"{path}: gives the {table} table, which {primary[table][0]} already gives")
        result = _read(path, slot, file_layout, forgotten, engine)
        primary[table] = (path, result.tables[table])
        side.update({t: df for t, df in result.tables.items() if t != table})
        reports.append(FileReport(table, str(path), file_layout, **result.counts))
        rejects.append(result.rejects)
    tables = side | {t: df for t, (_, df) in primary.items()}
    del primary, side, result  # sort one table at a time, dropping each unsorted copy (peak memory)
    tables = {t: _sorted(tables.pop(t), SORT_KEYS[t]) for t in TABLE_FILES if t in tables}
    engine_tables = {t: df for t, df in tables.items() if not isinstance(df, pd.DataFrame)}  # sorted, in the engine
    if "items" in inputs:
        if (gap := _check_catalogue(tables, inputs["items"])) and (listed := [f for f in reports if f.table == "items"]):
            listed[0].notes["items ordered or viewed but not in this catalogue"] = gap
    out_dir = Path(out_dir)
    if any(f.read and not f.accepted for f in reports):
        # every row of a file rejected: the run cannot be used, so the last good run's tables stay as they were;
        # this run's rejects and report go to failed/ beside them (the caller says so and points there)
        out_dir, tables = out_dir / FAILED_DIR, {}
    else:
        shutil.rmtree(out_dir / FAILED_DIR, ignore_errors=True)
    progress("ingest: writing the canonical tables")
    out_dir.mkdir(parents=True, exist_ok=True)
    for table, name in TABLE_FILES.items():
        if table in tables:
            write = tables[table].write if table in engine_tables else partial(write_canonical, tables[table])
            _write_atomic(out_dir / name, write)
        elif (out_dir / name).exists():
            (out_dir / name).unlink()
    rejects = pd.concat(rejects, ignore_index=True)
    if len(forgotten):
        from features.privacy import redact_rejects

        rejects = redact_rejects(rejects, forgotten)  # their rows rejected for other reasons too
    _write_atomic(out_dir / REJECTS_FILE, lambda p: rejects.to_csv(p, index=False, lineterminator="\n"))
    report = IngestReport(out_dir, reports, {t: len(df) for t, df in tables.items()})
    text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    _write_atomic(out_dir / REPORT_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return report


def load_canonical(out_dir: Path) -> Canonical:
    """The tables written by ``ingest`` (dtypes as validate produces them)."""
    out_dir = Path(out_dir)
    found = {t: _ns(pd.read_parquet(out_dir / name)) for t, name in TABLE_FILES.items() if (out_dir / name).exists()}
    if not found:
        raise IngestError(f"{out_dir}: no canonical tables ({', '.join(TABLE_FILES.values())}); run ingest first")
    return Canonical(**found)


def write_canonical(df: pd.DataFrame, path: Path) -> None:
    """A canonical table as Parquet that Spark reads too: timestamps in microseconds (Spark refuses
    Parquet's nanosecond timestamps; nothing in the data contract is finer than a microsecond)."""
    df = _ns(df.copy(deep=False))  # the same file whichever unit the frame holds (a rewrite reads microseconds)
    df.to_parquet(path, index=False, engine="pyarrow", coerce_timestamps="us", allow_truncated_timestamps=True)


def _ns(df: pd.DataFrame) -> pd.DataFrame:
    """Timestamps back to datetime64[ns], the dtype validate gives."""
    for name in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[name]) and df[name].dtype != "datetime64[ns]":
            df[name] = df[name].astype("datetime64[ns]")
    return df


UNLISTED_MAX_ROWS = 2_000_000  # above this many order/event rows the ids are compared in the engine, without a count


def _check_catalogue(tables: dict[str, pd.DataFrame], path: Path) -> str:
    """``IngestError`` when the catalogue shares no item id with the orders and events (both non-empty); else how many
    of their items the catalogue lacks, with examples ('' when it lists them all, or for a clickstream of millions):
    such items have no category, price or stock, so no category or price filter lets them through."""
    catalogue = tables.get("items")
    used = [tables[t] for t in ("orders", "events") if t in tables and len(tables[t])]
    if catalogue is None or not len(catalogue) or not used:
        return ""
    large = sum(len(df) for df in used) > UNLISTED_MAX_ROWS
    if large and any(not isinstance(df, pd.DataFrame) for df in [catalogue, *used]) and _shares_items(catalogue, used):
        return ""  # tables still in the engine: the ids are compared there; the ids themselves only for the error
    listed = pd.Index(_item_ids(catalogue).astype(str).unique())
    seen = pd.Index(pd.concat([_item_ids(df) for df in used], ignore_index=True).astype(str).unique())
    found = seen.isin(listed)
    if not found.any():
        raise IngestError(f"{path}: none of the {len(seen):,} items in the orders/events (e.g. {', '.join(seen[:3])}) "
                          f"is among the catalogue's {len(listed):,} items (e.g. {', '.join(listed[:3])})",
                          "give the catalogue of this shop, with the same item_id values as its orders and events")
    missing = seen[~found]
    if large or not len(missing):
        return ""
    return (f"{len(missing):,} of {len(seen):,} (e.g. {', '.join(sorted(missing)[:3])}): no category, price or stock "
            "for them, so no category or price filter lets them through")


def _item_ids(table) -> pd.Series:
    """The item_id column of a canonical table (pandas, or still in the engine: in its sorted order)."""
    if isinstance(table, pd.DataFrame):
        return table["item_id"]
    return table.engine.frame(table.expr.select("item_id"))["item_id"]


def _shares_items(catalogue, used: list) -> bool:
    """Whether the catalogue lists any item of the orders/events, asked of the engine of the tables there."""
    engine = next(df.engine for df in [catalogue, *used] if not isinstance(df, pd.DataFrame))
    frames = [df for df in [catalogue, *used] if isinstance(df, pd.DataFrame)]

    def ids(df):
        t = engine.table(df).select("item_id") if isinstance(df, pd.DataFrame) else df.item_ids()
        return t.select(item_id=t.item_id.cast("string"))

    listed = ids(catalogue)
    try:  # the orders first (the smaller table), each read only until a listed item turns up
        return any(len(engine.frame(ids(df).semi_join(listed, "item_id").limit(1))) > 0 for df in used)
    finally:
        for df in frames:
            engine.forget(df)


def _engine(engine):
    """The engine of the row rules: None for "pandas", else a connected ``Engine``."""
    if engine is None or engine == "pandas":
        return None
    if isinstance(engine, str):
        from features.relational.engine import connect

        return connect(engine)
    return engine


def _read(path: Path, slot: str, layout: str, forgotten, engine=None) -> AdapterResult:
    if layout == "online-retail":
        return read_online_retail(path, forgotten, engine=engine)
    if layout == "otto":
        return read_otto(path, forgotten, engine=engine)
    if engine is not None:  # typed Parquet: read and validated in the engine, never in pandas
        from features.relational.parquet import read_contract_parquet

        done = read_contract_parquet(engine, path, SPECS[slot], path.name, forgotten)
        if done is not None:
            return AdapterResult({slot: done[0]}, done[1], done[2])
    return AdapterResult.from_validation(
        slot, validate(read_salvaged(path), SPECS[slot], path.name, forgotten=forgotten, engine=engine))


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows by ``keys`` (missing values last), ties in input order (a table still in the engine is sorted there)."""
    if not isinstance(df, pd.DataFrame):
        return df
    try:
        # Arrow's sort is stable and puts nulls last, like the pandas sort below, and is much
        # faster on text keys (no categorical of every session id first)
        table = pa.table({k: pa.array(df[k]) for k in keys})
        positions = pc.sort_indices(table, sort_keys=[(k, "ascending", "at_end") for k in keys])
        return df.take(positions.to_numpy()).reset_index(drop=True)
    except (pa.ArrowException, TypeError, ValueError):  # a key Arrow cannot take (mixed objects): pandas
        order = df.assign(_row=np.arange(len(df))).sort_values(keys + ["_row"], kind="stable").index
        return df.loc[order].reset_index(drop=True)


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary name in the same directory, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, dict, list)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return ", ".join(map(str, value))
