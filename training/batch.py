"""Batch scoring: top-k for every user of a bundle, written to Parquet.

    from training.batch import score_all
    report = score_all(ModelBundle.load("bundle"), k=10, out_path="top10.parquet")

One row per (user, rank): ``user_id`` (string), ``rank`` (1..k, int16), ``item_id`` (string),
``score`` (float32), ``source`` ("model" or "fallback"). Items the user already bought are left
out (``exclude_bought``); a user with fewer than k allowed items gets fewer rows. Users whose
interaction row is empty (registered, nothing in the training window) get the fallback list, as
the service gives them: the model has nothing personal for them, and not scoring them saves
that share of the work. Blocks of users are scored through the
``Recommender.recommend`` batch API on ``threads`` threads (NumPy's matrix products and
partitions release the GIL; BLAS is held to one thread per worker so the two do not fight)
and written in user order, one Parquet row group per block, so memory stays bounded.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from training.bundle import ModelBundle

SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int16()), ("item_id", pa.string()), ("score", pa.float32()),
                    ("source", pa.dictionary(pa.int8(), pa.string()))])
SOURCES = pa.array(["model", "fallback"])


def fallback_top(bundle: ModelBundle, rows: np.ndarray, k: int, excluded, popular, shared: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for users the model has nothing on: the ``popular`` list (the fallback's top-k,
    shape (1, k) each), or for users with more left out in ``excluded`` (a CSR aligned with ``rows``; None:
    nothing) than the ``shared`` items left out for everyone (``popular`` leaves those out already), the
    fallback's list without their items."""
    items, scores = np.repeat(popular[0], len(rows), axis=0), np.repeat(popular[1], len(rows), axis=0)
    has_bought = np.diff(excluded.indptr) > shared if excluded is not None else np.zeros(len(rows), bool)
    if has_bought.any():
        items[has_bought], scores[has_bought] = bundle.fallback.recommend(rows[has_bought], k, excluded[has_bought])
    return items, scores


def top_table(bundle: ModelBundle, item_ids: pa.Array, rows: np.ndarray, items: np.ndarray, scores: np.ndarray,
              warm: np.ndarray) -> pa.Table:
    """One block of users' top-k as rows of ``SCHEMA`` (item -1 or a score that is not finite: no row);
    ``item_ids`` is ``pa.array(bundle.items.ids)``, converted once by the caller."""
    keep = (items >= 0) & np.isfinite(scores)
    n_keep = keep.sum(axis=1)
    ranks = np.arange(1, items.shape[1] + 1, dtype=np.int16)
    return pa.table({
        "user_id": pa.array(np.repeat(bundle.users.ids[rows], n_keep)),
        "rank": pa.array(np.broadcast_to(ranks, items.shape)[keep]),
        "item_id": item_ids.take(pa.array(items[keep].astype(np.int64))),
        "score": pa.array(scores[keep].astype(np.float32)),
        "source": pa.DictionaryArray.from_arrays(pa.array(np.repeat((~warm).astype(np.int8), n_keep)), SOURCES),
    }, schema=SCHEMA)


class BlockScorer:
    """Top-k of one block of user rows as ``SCHEMA`` rows: the work of ``score_all`` for each block, also what
    each Spark task runs (training/batch_spark.py), so both write the same rows."""

    def __init__(self, bundle: ModelBundle, k: int, exclude_bought: bool = True):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.bundle, self.k, self.exclude_bought = bundle, k, exclude_bought
        self.shared = len(bundle.never_rows())  # items left out for everyone (categories no answer recommends)
        self.active = np.diff(bundle.interactions.indptr) > 0
        self.popular = bundle.fallback.recommend(np.array([0]), k, bundle.left_out(np.zeros(1, np.int64), bought=False))
        self.item_ids = pa.array(bundle.items.ids)

    def __call__(self, rows: np.ndarray) -> pa.Table:
        k, excluded = self.k, self.bundle.left_out(rows, self.exclude_bought)
        warm = self.active[rows]
        items = np.empty((len(rows), k), np.int64)
        scores = np.empty((len(rows), k), np.float32)
        with threadpool_limits(1, "blas"):
            if warm.any():
                items[warm], scores[warm] = self.bundle.model.recommend(
                    rows[warm], k, excluded[warm] if excluded is not None else None)
            items[~warm], scores[~warm] = fallback_top(self.bundle, rows[~warm], k,
                                                       excluded[~warm] if excluded is not None else None,
                                                       self.popular, self.shared)
        return top_table(self.bundle, self.item_ids, rows, items, scores, warm)


@dataclass
class BatchReport:
    path: Path
    users: int
    rows: int
    seconds: float


def score_all(bundle: ModelBundle, k: int = 10, out_path: str | Path = "recommendations.parquet", block: int = 8192,
              exclude_bought: bool = True, threads: int | None = None, users: np.ndarray | None = None) -> BatchReport:
    """Top-k of ``bundle.model`` for every user row (or the rows in ``users``) to ``out_path``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    start = time.perf_counter()
    rows_all = np.arange(len(bundle.users), dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    threads = threads or os.cpu_count() or 1
    scorer = BlockScorer(bundle, k, exclude_bought)

    def one(lo: int):
        return scorer(rows_all[lo : lo + block])

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    n_rows = 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer, ThreadPoolExecutor(threads) as pool:
            starts = range(0, len(rows_all), block)
            # at most 2 blocks per thread in flight: bounded memory, results written in order
            pending = []
            for lo in starts:
                pending.append(pool.submit(one, lo))
                if len(pending) >= 2 * threads:
                    table = pending.pop(0).result()
                    writer.write_table(table)
                    n_rows += table.num_rows
            for fut in pending:
                table = fut.result()
                writer.write_table(table)
                n_rows += table.num_rows
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return BatchReport(out_path, len(rows_all), n_rows, time.perf_counter() - start)
