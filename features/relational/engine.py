"""The engine that runs the relational pipeline: DuckDB (embedded, nothing to start) or Apache Spark.

    engine = connect("duckdb")                     # or connect("spark", master="local[2]")
    orders = engine.table(orders_df)               # a pandas frame, an Arrow table
    orders = engine.read_parquet("s3://.../orders/")  # or Parquet at any path or URI the engine reads
    frame = engine.frame(expr)                     # run an expression: pandas, canonical dtypes

Both engines run in UTC (Spark's session time zone, DuckDB's TimeZone): date parts and day
boundaries agree. Timestamps are compared and subtracted as integer microseconds since the epoch
(``micros``), never through interval arithmetic, which Spark cannot do below a second.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.datatypes as dt
import pandas as pd
import pyarrow as pa

from features.money import MICRO_UNITS

ENGINES = ("duckdb", "spark")
SPARK_MASTER_ENV = "SHOPREC_SPARK_MASTER"
DRIVER_MEMORY_ENV = "SHOPREC_SPARK_DRIVER_MEMORY"  # e.g. 8g; Spark's default is 1g
DEFAULT_SPARK_MASTER = "local[2]"
DUCKDB_MEMORY_ENV = "SHOPREC_DUCKDB_MEMORY"  # e.g. 4GB; DuckDB's default is 80% of the machine's memory
DUCKDB_TEMP_ENV = "SHOPREC_DUCKDB_TEMP"  # where DuckDB spills; default <system temp>/shoprec-duckdb
_names = itertools.count()
US_PER_DAY = 86_400_000_000


@ibis.udf.scalar.builtin
def unix_micros(ts: dt.timestamp) -> dt.int64:
    """Microseconds since 1970-01-01 UTC: Spark's built-in; on DuckDB a macro over ``epoch_us``."""


def micros(ts: ibis.Value) -> ibis.Value:
    """A timestamp column as int64 microseconds since the epoch (exact, unlike ``epoch_seconds``,
    which rounds on DuckDB and drops the fraction on Spark)."""
    return unix_micros(ts)


def f64(x: float) -> ibis.Value:
    """A float64 constant that stays float64 on Spark, which reads a plain ``1.0`` in SQL as a DECIMAL
    (an average of DECIMAL(2,1) values keeps five decimals)."""
    return ibis.literal(repr(float(x))).cast("float64")


def exact_sum(x: ibis.Value) -> ibis.Value:
    """The sum of a float64 column (money, quantities), the same on every engine whatever the order of the
    rows (features/money.py): each value rounded to a millionth, summed as exact integers (DECIMAL(38, 0)),
    divided back."""
    units = (x * f64(MICRO_UNITS)).round().cast("int64").cast("decimal(38, 0)")
    return units.sum().cast("float64") / f64(MICRO_UNITS)


def at_micros(at) -> int:
    """A cutoff (anything ``pd.Timestamp`` takes, naive UTC) as microseconds since the epoch."""
    return int(pd.Timestamp(at).value) // 1000  # .value is nanoseconds whatever the unit


def ts_literal(at) -> ibis.Value:
    """A cutoff as a timestamp literal (microsecond precision)."""
    return ibis.literal(pd.Timestamp(at).as_unit("us").to_pydatetime(), type="timestamp")


@dataclass
class Engine:
    """An Ibis connection with the settings both engines need to agree, and the edges in and out."""

    name: str
    con: object
    _tables: dict = field(default_factory=dict, repr=False)

    def table(self, data: pd.DataFrame | pa.Table) -> ibis.Table:
        """An in-memory table as an expression (registered once per frame object)."""
        key = id(data)
        if key not in self._tables:
            self._tables[key] = (data, self._register(_arrow(data)))
        return self._tables[key][1]

    def _register(self, table: pa.Table) -> ibis.Table:
        if self.name != "spark":
            return ibis.memtable(table)
        # Spark: straight from Arrow (Ibis's memtable goes through pandas, and Spark's Arrow path fails on
        # chunked text columns, falling back to a row-by-row copy)
        name = f"shoprec_{next(_names)}"
        self.con._session.createDataFrame(table).createOrReplaceTempView(name)
        return self.con.table(name)

    def read_parquet(self, path: str | Path) -> ibis.Table:
        """Parquet at a local path or any URI the engine can read (s3://, hdfs://, abfss:// on Spark)."""
        if self.name != "spark":
            return self.con.read_parquet(str(path))
        # Spark reads Parquet's naive timestamps as TIMESTAMP_NTZ, which its time functions refuse: as TIMESTAMP
        # (the session is in UTC, so the values stay), as tables registered from memory have them
        from pyspark.sql.types import TimestampNTZType

        frame = self.con._session.read.parquet(str(path))
        for f in frame.schema.fields:
            if isinstance(f.dataType, TimestampNTZType):
                frame = frame.withColumn(f.name, frame[f.name].cast("timestamp"))
        name = f"shoprec_{next(_names)}"
        frame.createOrReplaceTempView(name)
        return self.con.table(name)

    def arrow(self, expr: ibis.Expr) -> pa.Table:
        return self.con.to_pyarrow(expr)

    def frame(self, expr: ibis.Table) -> pd.DataFrame:
        """Run ``expr``; text as pandas "string", timestamps datetime64[ns] naive, as the pandas pipeline has them."""
        return to_canonical_frame(self.arrow(expr))

    def write_parquet(self, expr: ibis.Table, path: str | Path) -> None:
        """Write the result as Parquet (on Spark by the executors, so any URI Spark writes works)."""
        self.con.to_parquet(expr, str(path))

    @contextlib.contextmanager
    def materialized(self, expr: ibis.Table):
        """``expr`` computed once and kept for the block (a temporary table on DuckDB, a cached DataFrame on
        Spark): what several queries read is scanned and filtered once, not once per query."""
        if self.name == "spark":
            table = expr.cache()
            try:
                yield table
            finally:
                table.release()
            return
        name = f"shoprec_tmp_{next(_names)}"
        table = self.con.create_table(name, expr, temp=True)
        try:
            yield table
        finally:  # Ibis 12's DROP TABLE does not parse on DuckDB 2 (see PITFALLS): plain SQL
            self.con.con.execute(f'DROP TABLE IF EXISTS temp.main."{name}"')

    def forget(self, data) -> None:
        """Drop the registration of an in-memory table made by ``table``."""
        entry = self._tables.pop(id(data), None)
        if entry is not None and self.name == "spark":
            self.con._session.catalog.dropTempView(entry[1].get_name())


def connect(name: str = "duckdb", master: str | None = None) -> Engine:
    """``duckdb`` (in-process, in memory) or ``spark`` (``master``, else $SHOPREC_SPARK_MASTER, else local[2])."""
    if name == "duckdb":
        con = ibis.duckdb.connect()
        con.raw_sql("SET TimeZone = 'UTC'")
        # every result whose order matters is ordered explicitly, so DuckDB need not keep the order rows
        # came in (which costs memory and parallelism in scans, sorts and writes)
        con.raw_sql("SET preserve_insertion_order = false")
        # what does not fit spills to the system's temporary directory, not to ./.tmp where the process started
        spill = os.environ.get(DUCKDB_TEMP_ENV) or str(Path(tempfile.gettempdir()) / "shoprec-duckdb")
        con.raw_sql("SET temp_directory = '" + spill.replace("'", "''") + "'")
        if os.environ.get(DUCKDB_MEMORY_ENV):
            con.raw_sql(f"SET memory_limit = '{duckdb_memory(os.environ[DUCKDB_MEMORY_ENV])}'")
        con.raw_sql("CREATE OR REPLACE MACRO unix_micros(ts) AS epoch_us(ts)")
        return Engine("duckdb", con)
    if name == "spark":
        return Engine("spark", ibis.pyspark.connect(spark_session(master)))
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")


def duckdb_memory(value: str) -> str:
    """A DuckDB memory limit ("4GB", "512MiB"): what DuckDB's sorts, joins and aggregates may hold before they
    spill to its temporary directory. ValueError naming the value otherwise."""
    text = str(value).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", text, flags=re.IGNORECASE):
        raise ValueError(f"{DUCKDB_MEMORY_ENV}={value!r}: expected a size such as 4GB or 512MiB")
    return text


def spark_session(master: str | None = None):
    """The process's SparkSession (created once): UTC, no UI, Arrow transfers to and from pandas. The master:
    ``master``, else $SHOPREC_SPARK_MASTER, else the one spark-submit was given, else local[2]."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:  # the optional extra is not installed
        from features.errors import InputError

        raise InputError("--engine spark needs PySpark and a Java runtime",
                         "pip install '.[spark]' (and Debian's openjdk-17-jre-headless), or use --engine duckdb") from e
    master = master or os.environ.get(SPARK_MASTER_ENV)
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit either
        master = DEFAULT_SPARK_MASTER
    builder = SparkSession.builder.appName("shoprec")
    if master is not None:  # else spark-submit's --master holds
        builder = builder.master(master)
    if (master or "").startswith("local"):  # Python workers on this machine: this interpreter (its packages)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if os.environ.get(DRIVER_MEMORY_ENV):  # the JVM this process starts (local mode: the whole of Spark)
        builder = builder.config("spark.driver.memory", os.environ[DRIVER_MEMORY_ENV])
    return (builder
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")  # no stage bars in logs: shoprec prints its own steps
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "8")
            .getOrCreate())


def _arrow(data: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def to_canonical_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow result as the pandas frame the pandas pipeline produces (see ``Engine.frame``)."""
    columns = {}
    for name, col in zip(table.column_names, table.columns):
        kind = col.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            columns[name] = pd.Series(col.to_pandas(), dtype="string")
        elif pa.types.is_timestamp(kind):
            s = col.to_pandas()
            if getattr(s.dt, "tz", None) is not None:
                s = s.dt.tz_convert("UTC").dt.tz_localize(None)
            columns[name] = s.astype("datetime64[ns]")
        else:
            columns[name] = col.to_pandas()
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))
