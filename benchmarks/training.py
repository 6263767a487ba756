"""Training: our recommender interface next to the raw library on the same matrix and params.

  als         ALSRecommender.fit (the "als" recipe: 100 factors, reg 0.01, alpha 1, 15 iterations,
              no re-weighting) vs implicit.cpu.als.AlternatingLeastSquares.fit with the same params
              on the same float32 CSR matrix; children alternate ours/raw.
  ease        EASERecommender.fit at its cap (EASEConfig().max_items items) vs the floor: the same
              B = I - P/diag(P), P = (X'X + l2 I)^-1, with LAPACK's Cholesky inverse (dpotrf+dpotri,
              in place) instead of numpy's general LU inverse; both on the same BLAS threads.
  fit_bundle  training.pipeline.fit_bundle for the "als" recipe on the canonical tables (the
              model, the fallback, bought-together rules, catalog), next to the raw ALS fit.

    python -m benchmarks.training task <task> <matrix.npz|canonical_dir> [out]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import emit

ALS_PARAMS = dict(factors=100, regularization=0.01, alpha=1.0, iterations=15)  # the "als" candidate


def _matrix(path: str):
    import numpy as np
    import scipy.sparse as sp

    return sp.load_npz(path).tocsr().astype(np.float32)


def als_ours(path: str, out: str | None = None) -> None:
    from training.recommenders.als import ALSConfig, ALSRecommender

    from implicit.cpu.als import AlternatingLeastSquares

    m = _matrix(path)
    model = ALSRecommender(ALSConfig(**ALS_PARAMS, weighting="none", seed=42))
    # time the library's own fit inside ours too: total - inner = the interface's cost, measured
    # in the same process and so free of the run-to-run noise of this shared machine
    inner = []
    library_fit = AlternatingLeastSquares.fit

    def timed_fit(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return library_fit(self, *args, **kwargs)
        finally:
            inner.append(time.perf_counter() - t)

    AlternatingLeastSquares.fit = timed_fit
    start = time.perf_counter()
    model.fit(m)
    seconds = time.perf_counter() - start
    AlternatingLeastSquares.fit = library_fit
    if out:
        model.save(Path(out))
    emit(seconds, shape=list(m.shape), nnz=int(m.nnz), check=float(abs(model.item_factors_).sum()),
         library_seconds=sum(inner), interface_seconds=seconds - sum(inner))


def als_raw(path: str, out: str | None = None) -> None:
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    m = _matrix(path)
    model = AlternatingLeastSquares(**ALS_PARAMS, random_state=42, calculate_training_loss=False)
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):  # what implicit asks for; the same in ours
        model.fit(m, show_progress=False)
    seconds = time.perf_counter() - start
    emit(seconds, shape=list(m.shape), nnz=int(m.nnz), check=float(np.abs(model.item_factors).sum()))


def _ease_gram(m, max_items: int):
    import numpy as np

    popularity = np.diff(m.tocsc().indptr)
    kept = np.sort(np.argsort(-popularity, kind="stable")[:max_items])
    xk = m[:, kept]
    return (xk.T @ xk).toarray().astype(np.float64), kept


def ease_ours(path: str, max_items: str | None = None) -> None:
    import numpy as np

    from training.recommenders.neighbours import EASEConfig, EASERecommender

    m = _matrix(path)
    config = EASEConfig() if max_items is None else EASEConfig(max_items=int(max_items))
    start = time.perf_counter()
    model = EASERecommender(config).fit(m)
    seconds = time.perf_counter() - start
    b = model.item_weights_
    emit(seconds, items=int(b.shape[0]), max_items=config.max_items, check=float(np.abs(b).sum(dtype=np.float64)),
         corner=b[:3, :3].round(6).tolist())


def ease_floor(path: str, max_items: str | None = None) -> None:
    import numpy as np
    from scipy.linalg import lapack

    from training.recommenders.neighbours import EASEConfig

    m = _matrix(path)
    config = EASEConfig() if max_items is None else EASEConfig(max_items=int(max_items))
    start = time.perf_counter()
    gram, kept = _ease_gram(m, config.max_items)
    gram[np.diag_indices_from(gram)] += config.l2
    c, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)
    assert info == 0, info
    p, info = lapack.dpotri(c, lower=False, overwrite_c=True)  # upper triangle of the inverse
    assert info == 0, info
    p = np.triu(p) + np.triu(p, 1).T
    d = np.diag(p).copy()
    p /= -d
    p[np.diag_indices_from(p)] = 0.0
    b = p.astype(np.float32)
    seconds = time.perf_counter() - start
    emit(seconds, items=int(b.shape[0]), max_items=config.max_items, check=float(np.abs(b).sum(dtype=np.float64)),
         corner=b[:3, :3].round(6).tolist())


def fit_bundle_ours(canonical: str, out: str | None = None) -> None:
    from features.ingest import load_canonical
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig

    canon = load_canonical(Path(canonical))
    candidate = Candidate(name="als", interactions={"binary": True},
                          model=ALSConfig(**ALS_PARAMS, weighting="none"))
    start = time.perf_counter()
    bundle = fit_bundle(candidate, TrainConfig(), canon.events, canon.orders, {"run_id": "bench"}, items=canon.items)
    seconds = time.perf_counter() - start
    emit(seconds, users=len(bundle.users), items=len(bundle.items))


TASKS = {f.__name__: f for f in (als_ours, als_raw, ease_ours, ease_floor, fit_bundle_ours)}

if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] != "task" or sys.argv[2] not in TASKS:
        sys.exit(f"usage: python -m benchmarks.training task {{{'|'.join(TASKS)}}} INPUT [ARG]")
    TASKS[sys.argv[2]](*sys.argv[3:])
