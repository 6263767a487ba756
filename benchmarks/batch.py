"""Batch scoring: training.batch.score_all (top-k of every user, bought items left out, to Parquet)
next to the floor: implicit's C++ top-k (``implicit.cpu.topk.topk``, multi-threaded, the one
``AlternatingLeastSquares.recommend`` uses) on the same factors, the same exclusions and the same
Parquet output.

    python -m benchmarks.batch task {ours|floor} <bundle_dir> <out.parquet> [k] [max_users]
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit


def ours(bundle_dir: str, out: str, k: str = "10", max_users: str = "0") -> None:
    from training.batch import score_all
    from training.bundle import ModelBundle

    bundle = ModelBundle.load(Path(bundle_dir))
    users = np.arange(min(int(max_users), len(bundle.users))) if int(max_users) else None
    start = time.perf_counter()
    report = score_all(bundle, int(k), out, users=users)
    seconds = time.perf_counter() - start
    emit(seconds, users=report.users, rows=report.rows, check=_check(out))


def floor(bundle_dir: str, out: str, k: str = "10", max_users: str = "0") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from implicit.cpu.topk import topk
    from threadpoolctl import threadpool_limits

    from training.batch import SCHEMA, fallback_top, top_table
    from training.bundle import ModelBundle

    bundle = ModelBundle.load(Path(bundle_dir))
    k = int(k)
    n = min(int(max_users), len(bundle.users)) if int(max_users) else len(bundle.users)
    uf, itf, bought = bundle.model.user_factors_, bundle.model.item_factors_, bundle.bought.tocsr()
    start = time.perf_counter()
    block = 8192
    # the same work as ours: users with an empty interaction row get the fallback list, not a score
    active = np.diff(bundle.interactions.indptr) > 0
    popular = bundle.fallback.recommend(np.array([0]), k)
    item_ids = pa.array(bundle.items.ids)
    with pq.ParquetWriter(out, SCHEMA, compression="zstd") as writer, threadpool_limits(1, "blas"):
        for lo in range(0, n, block):
            rows = np.arange(lo, min(n, lo + block))
            warm = active[rows]
            ids = np.empty((len(rows), k), np.int64)
            scores = np.empty((len(rows), k), np.float32)
            ids[warm], scores[warm] = topk(itf, uf[rows[warm]], k, filter_query_items=bought[rows[warm]],
                                           num_threads=os.cpu_count() or 1)
            ids[~warm], scores[~warm] = fallback_top(bundle, rows[~warm], k, bought[rows[~warm]], popular)
            writer.write_table(top_table(bundle, item_ids, rows, ids, scores, warm))
    seconds = time.perf_counter() - start
    emit(seconds, users=n, rows=pq.ParquetFile(out).metadata.num_rows, check=_check(out))


def _check(path: str) -> dict:
    """Agreement material: the first ranked item of a fixed sample of users."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["user_id", "rank", "item_id"]).to_pandas()
    first = t[t["rank"] == 1].set_index("user_id")["item_id"]
    return {"rank1": first.iloc[:: max(1, len(first) // 2000)].to_dict()}


if __name__ == "__main__":
    tasks = {"ours": ours, "floor": floor}
    if len(sys.argv) < 5 or sys.argv[1] != "task" or sys.argv[2] not in tasks:
        sys.exit("usage: python -m benchmarks.batch task {ours|floor} BUNDLE OUT [K] [MAX_USERS]")
    tasks[sys.argv[2]](*sys.argv[3:])
