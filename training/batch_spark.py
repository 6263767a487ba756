"""Batch scoring on Apache Spark: every shopper's top-k written as Parquet by the executors.

The bundle (factors, vocabularies, purchases to exclude, fallback) is broadcast once to the executors
as the folder's bytes; each Python worker unpacks and loads it once and scores whole blocks of user
rows with ``training.batch.BlockScorer``, the code the single-machine ``score_all`` runs, over the same
blocks. So the rows written are the same, value for value (``tests/test_score_all.py``); only the
layout differs: a Parquet dataset (one file per task, in user order) at any path or URI Spark writes.
On a cluster the executors need the shoprec package (``spark-submit --py-files`` or installed).
"""
from __future__ import annotations

import io
import math
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from training.batch import SCHEMA, BatchReport

SPARK_SCHEMA = "user_id string, rank short, item_id string, score float, source string"
_loaded: dict = {}  # per Python worker: (bundle token, k, exclude_bought) -> BlockScorer


def pack(folder: Path) -> bytes:
    """A folder as tar bytes (what is broadcast)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(folder), arcname="bundle")
    return buf.getvalue()


def _scorer(token: str, broadcast, k: int, exclude_bought: bool):
    key = (token, k, exclude_bought)
    if key not in _loaded:
        from training.batch import BlockScorer
        from training.bundle import ModelBundle

        where = Path(tempfile.mkdtemp(prefix="shoprec-bundle-"))
        with tarfile.open(fileobj=io.BytesIO(broadcast.value), mode="r") as tar:
            tar.extractall(where, filter="data")
        _loaded[key] = BlockScorer(ModelBundle.load(where / "bundle"), k, exclude_bought)
    return _loaded[key]


def score_all_spark(bundle_dir: str | Path, k: int = 10, out_path: str = "recommendations", block: int = 8192,
                    exclude_bought: bool = True, session=None, n_users: int | None = None,
                    skip_user_ids: list[str] = ()) -> BatchReport:
    """Top-k of the bundle in ``bundle_dir`` for every user row but those of ``skip_user_ids`` (forgotten shoppers),
    written by Spark to ``out_path`` (a Parquet dataset: local path or URI). ``session`` defaults to the process's
    SparkSession (features.relational.engine.spark_session)."""
    from features.relational.engine import spark_session
    from features.vocab import IdVocab

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    start = time.perf_counter()
    session = session or spark_session()
    bundle_dir = Path(bundle_dir)
    n = n_users if n_users is not None else len(IdVocab.load(bundle_dir / "users.npz"))
    shared = session.sparkContext.broadcast(pack(bundle_dir))
    token = uuid.uuid4().hex  # names this broadcast in the workers' cache
    n_blocks = math.ceil(n / block)
    parts = max(1, min(n_blocks, session.sparkContext.defaultParallelism * 4))

    def score(batches):
        scorer = _scorer(token, shared, k, exclude_bought)
        for batch in batches:
            for b in batch.column("id").to_pylist():
                rows = np.arange(b * block, min(n, (b + 1) * block), dtype=np.int64)
                table = scorer(rows)
                table = table.set_column(4, "source", table.column("source").cast(pa.string()))
                yield from table.to_batches()

    blocks = session.range(0, n_blocks, 1, numPartitions=parts)
    frame = blocks.mapInArrow(score, SPARK_SCHEMA)
    if skip_user_ids:
        frame = frame.filter(~frame["user_id"].isin(list(skip_user_ids)))
    frame.write.mode("overwrite").parquet(str(out_path))
    rows = session.read.parquet(str(out_path)).count()
    shared.unpersist()
    return BatchReport(Path(str(out_path)), n - len(set(skip_user_ids)), rows, time.perf_counter() - start)


def read_top(path: str | Path) -> "pa.Table":
    """A top-k output of either scorer as one Arrow table of ``SCHEMA`` (Spark's dataset in part order)."""
    import pyarrow.dataset as ds

    path = Path(path)
    if path.is_dir():
        files = sorted(str(p) for p in path.glob("part-*.parquet"))
        table = ds.dataset(files, format="parquet").to_table()
    else:
        table = ds.dataset(str(path), format="parquet").to_table()
    return table.cast(pa.schema([f.with_type(pa.string()) if f.name == "source" else f for f in SCHEMA]))
