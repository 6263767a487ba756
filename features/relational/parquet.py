"""Typed Parquet inputs validated inside the engine (DuckDB): the raw file never enters pandas.

``read_contract_parquet`` reads a data-contract Parquet file with ``engine.read_parquet`` (the file's row
number kept as the position), does the parsing that ``features.validate.parse`` does for typed columns in the
engine (text stripped of the whitespace Python's ``str.strip`` removes, empty text missing, event types lower
case, NaN missing, infinities bad, missing in_stock true), runs the same row rules (``validation.reasons``) and
returns the accepted rows as an ``EngineTable``: an expression, sorted by the canonical keys, that ingest
writes to Parquet batch by batch with the schema and row groups the pandas writer gives (byte-identical files).
Only the rejected rows come back to Python, their raw records read from just the row groups that hold them.

Anything this path does not cover returns None and the caller takes the pandas path, which also raises the
errors of files that cannot fit the contract: another engine, a forgotten-users list, a column of another type
(text timestamps or numbers, categoricals), a timestamp with a time zone or in nanoseconds, a pandas index
stored as a column, repeated or missing required columns, no rows, or a column where no value is usable.
"""
from __future__ import annotations

import io
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import EVENT_TYPES, TableSpec
from features.relational.validation import POS, PRE, ROW, bad_column, reasons
from features.validate import FORGOTTEN, records

# the characters Python's str.strip() removes (str.isspace), which pandas' .str.strip() removes too
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
ROW_GROUP = 1024 * 1024  # pyarrow's default row group length (pandas' to_parquet writes with it)


@ibis.udf.scalar.builtin
def trim(s: dt.string, characters: dt.string) -> dt.string:
    """DuckDB's trim(string, characters)."""


@dataclass
class EngineTable:
    """A canonical table still in the engine: ``expr`` (sorted) and its number of rows."""

    engine: object
    expr: ibis.Table
    unsorted: ibis.Table  # the same rows in no particular order (cheaper to ask)
    rows: int
    schema: pa.Schema  # what pandas' to_parquet of the canonical frame gives (dtypes + pandas metadata)

    def __len__(self) -> int:
        return self.rows

    def item_ids(self) -> ibis.Table:
        return self.unsorted.select("item_id")

    def write(self, path: Path) -> None:
        """The Parquet file ``features.ingest.write_canonical`` writes for the same rows, byte for byte."""
        # DuckDB's own streaming reader (Ibis 12's to_pyarrow_batches calls a method DuckDB 2 no longer has); the
        # in-memory tables of the expression (the rejected positions) registered first, as Ibis does before a query
        self.engine.con._run_pre_execute_hooks(self.expr)
        reader = self.engine.con.con.sql(str(self.engine.con.compile(self.expr))).to_arrow_reader(ROW_GROUP)
        with pq.ParquetWriter(path, self.schema, compression="snappy", coerce_timestamps="us",
                              allow_truncated_timestamps=True) as writer:
            pending, held = [], 0
            for batch in _prefetched(reader):  # DuckDB makes the next batch while this one is encoded
                pending.append(batch)
                held += batch.num_rows
                while held >= ROW_GROUP:
                    table = pa.Table.from_batches(pending)
                    writer.write_table(_cast(table.slice(0, ROW_GROUP), self.schema), row_group_size=ROW_GROUP)
                    del pending
                    rest = table.slice(ROW_GROUP)
                    pending, held = rest.to_batches(), rest.num_rows
            if held or self.rows == 0:
                table = pa.Table.from_batches(pending, schema=pending[0].schema) if pending else self.schema.empty_table()
                writer.write_table(_cast(table, self.schema), row_group_size=ROW_GROUP)


def _prefetched(reader, depth: int = 2):
    """The batches of ``reader``, read ahead by a thread (at most ``depth`` waiting): DuckDB and pyarrow's
    Parquet encoder both release the GIL, so on two cores the query and the writing overlap."""
    batches: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        """Queue ``item`` unless the consumer has stopped (then False)."""
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull():
        try:
            for batch in reader:
                if not put(batch):
                    return
            put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)

    thread = threading.Thread(target=pull, name="duckdb-batches", daemon=True)
    thread.start()
    try:
        while (item := batches.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def read_contract_parquet(engine, path: Path, spec: TableSpec, source: str, forgotten=None):
    """(EngineTable of accepted rows, rejects frame, counts) for a typed Parquet file, or None (pandas path)."""
    if getattr(engine, "name", None) != "duckdb" or (forgotten is not None and len(forgotten)):
        return None
    path = Path(path)
    if not path.name.lower().endswith((".parquet", ".pq")) or not path.is_file():
        return None
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return None  # the pandas path names what is wrong
    schema, n = meta.schema.to_arrow_schema(), meta.num_rows
    if n == 0 or _stored_index(schema):
        return None
    names = [str(c).strip().lower() for c in schema.names]
    if len(set(names)) != len(names) or any(c not in names for c in spec.required) or "file_row_number" in names:
        return None
    types = dict(zip(names, schema.types))
    for c in spec.columns:
        if c.name in types and not _typed(types[c.name], c.kind):
            return None
    raw = engine.con.read_parquet(str(path), file_row_number=True)
    raw = raw.rename({new: old for old, new in zip(schema.names, names) if old != new})
    staged = {POS: raw.file_row_number.cast("int64"), ROW: raw.file_row_number.cast("int64") + 1,
              PRE: ibis.null("string")}
    for c in spec.columns:
        staged.update(_column(raw, c, types))
    t = raw.select(**staged)
    judged = reasons(t, spec)
    out = engine.frame(judged.filter(judged.reason.notnull()).select(POS, "reason", "kind").order_by(POS))
    positions = out[POS].to_numpy()
    if not _usable(engine, t, spec, types, every_column=len(positions) == n):
        return None
    # the accepted rows: the staged ones less the rejected positions (the rules are not run a second time)
    accepted = t if not len(positions) else t.anti_join(ibis.memtable(pa.table({POS: pa.array(positions, pa.int64())})), POS)
    from features.ingest import SORT_KEYS

    unsorted = accepted.select(*spec.names)
    accepted = accepted.order_by([*SORT_KEYS[spec.name], POS]).select(*spec.names)
    rejects = pd.DataFrame({
        "source": pd.Series([source] * len(positions), dtype="string"),
        "row": (positions + 1).astype(np.int64),
        "reason": out["reason"].astype("string"),
        "record": pd.Series(records(_raw_rows(path, names, positions), np.arange(len(positions))), dtype="string"),
    })
    rejects.loc[rejects["reason"] == FORGOTTEN, "record"] = "{}"
    counts = out["kind"].value_counts()
    by_reason = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    counts = {"read": n, "accepted": n - len(positions), "rejected": len(positions), "by_reason": by_reason,
              "notes": {"ignored_columns": [c for c in names if c not in spec.names]}}
    return EngineTable(engine, accepted, unsorted, n - len(positions), _canonical_schema(spec)), rejects, counts


def _typed(kind: pa.DataType, column_kind: str) -> bool:
    """The Arrow types whose parsing this path does exactly as ``validate.parse``."""
    if column_kind == "str":
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if column_kind == "datetime":
        return pa.types.is_timestamp(kind) and kind.tz is None and kind.unit in ("s", "ms", "us")
    if column_kind == "float":
        return pa.types.is_floating(kind) or pa.types.is_integer(kind)
    return pa.types.is_boolean(kind)


def _stored_index(schema: pa.Schema) -> bool:
    """A pandas index stored as a column (pandas reads it back as the index, not a column)."""
    pandas_meta = schema.pandas_metadata or {}
    return any(isinstance(i, str) for i in pandas_meta.get("index_columns", [])) or any(
        str(c).startswith("__index_level_") for c in schema.names)


def _column(raw: ibis.Table, c, types: dict) -> dict:
    """The staged values of one spec column (and its ``_bad_`` texts where a value can be bad)."""
    if c.name not in types:  # an optional column the file does not have
        kind = {"str": "string", "datetime": "timestamp", "float": "float64", "bool": "boolean"}[c.kind]
        return {c.name: ibis.literal(True) if c.kind == "bool" else ibis.null(kind)}
    v = raw[c.name]
    if c.kind == "str":
        v = v.cast("string")
        ws = ibis.literal(WHITESPACE)
        # trim with a character set is slow: only where the first or last character is whitespace (or "")
        text = ibis.cases((ws.contains(v.left(1)) | ws.contains(v.right(1)), trim(v, ws)), else_=v)
        text = ibis.cases((text == "", ibis.null("string")), else_=text)
        return {c.name: text.lower() if c.name == "event_type" else text}
    if c.kind == "datetime":
        return {c.name: v.cast("timestamp")}
    if c.kind == "bool":
        return {c.name: v.fill_null(True)}
    x = v.cast("float64")
    if not pa.types.is_floating(types[c.name]):
        return {c.name: x}
    # NaN is missing (pandas' isna), an infinity is a value that is not a number: bad
    return {c.name: ibis.cases((x.isnan() | x.isinf(), ibis.null("float64")), else_=x),
            bad_column(c.name): ibis.cases((x.isinf(), ibis.cases((x > 0, ibis.literal("'inf'")),
                                                                  else_=ibis.literal("'-inf'"))),
                                           else_=ibis.null("string"))}


def _usable(engine, t: ibis.Table, spec: TableSpec, types: dict, every_column: bool) -> bool:
    """False where the pandas path refuses the file (``validate._whole_column``, ``check_event_types``): a column
    with no usable value (nullable: no usable value but a bad one), or no known event type. Unless every row was
    rejected (``every_column``), only the nullable columns with ``_bad_`` texts can be at fault: a required column
    without a usable value, or an event_type column without a known type, rejects every row."""
    checks, rules = {}, []
    for c in spec.columns:
        if c.name not in types or not (every_column or (c.nullable and bad_column(c.name) in t.columns)):
            continue
        checks[f"u_{c.name}"] = t[c.name].notnull().sum()
        if bad_column(c.name) in t.columns:
            checks[f"b_{c.name}"] = t[bad_column(c.name)].notnull().sum()
        rules.append(c)
        if c.name == "event_type":
            checks["known"] = t[c.name].isin(EVENT_TYPES).fill_null(False).sum()
    if not checks:
        return True
    row = {k: int(v or 0) for k, v in engine.frame(t.aggregate(**checks)).iloc[0].items()}
    for c in rules:
        if row[f"u_{c.name}"] == 0 and (not c.nullable or row.get(f"b_{c.name}", 0) > 0):
            return False
    return row.get("known", 1) > 0


def _raw_rows(path: Path, names: list[str], positions: np.ndarray) -> pd.DataFrame:
    """The file's rows at ``positions`` as ``pd.read_parquet`` gives them (for the reject records), read from
    only the row groups that hold them."""
    file = pq.ParquetFile(path)
    starts = np.cumsum([0] + [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)])
    parts = []
    for g in np.unique(np.searchsorted(starts, positions, side="right") - 1) if len(positions) else []:
        local = positions[(positions >= starts[g]) & (positions < starts[g + 1])] - starts[g]
        parts.append(file.read_row_group(int(g)).take(pa.array(local)))
    table = pa.concat_tables(parts) if parts else file.schema_arrow.empty_table()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(file.schema_arrow.metadata), buf)
    df = pd.read_parquet(io.BytesIO(buf.getvalue()))
    return df.set_axis(names, axis=1).reset_index(drop=True)


def _canonical_schema(spec: TableSpec) -> pa.Schema:
    """The Arrow schema (with pandas metadata) pandas' to_parquet gives a canonical frame of ``spec``."""
    dtypes = {"str": "string", "datetime": "datetime64[ns]", "float": "float64", "bool": "bool"}
    frame = pd.DataFrame({c.name: pd.Series([], dtype=dtypes[c.kind]) for c in spec.columns})
    return pa.Schema.from_pandas(frame, preserve_index=False)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s types, one chunk per column as pandas' table has (pages are cut per chunk)."""
    return pa.Table.from_arrays([table.column(name).cast(schema.field(name).type) for name in schema.names],
                                schema=schema).combine_chunks()
