"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library."""
from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.recommenders.base import Recommender


class ALSConfig(BaseModel):
    kind: Literal["als"] = "als"
    factors: int = Field(64, ge=1, le=1024, description="latent dimensions")
    regularization: float = Field(0.05, ge=0, description="L2 penalty on the factors")
    alpha: float = Field(1.0, gt=0, description="confidence = 1 + alpha * weighted interaction")
    iterations: int = Field(15, ge=1, le=200, description="ALS sweeps")
    weighting: Literal["none", "bm25", "tfidf", "log"] = Field(
        "none", description="re-weighting of the interaction matrix before fitting (fold-in re-weights a "
        "shopper's row alone: exact for none and log, an approximation for bm25 and tfidf)"
    )
    bm25_k1: float = Field(100.0, gt=0, description="BM25 K1 (weighting='bm25')")
    bm25_b: float = Field(0.8, ge=0, le=1, description="BM25 B (weighting='bm25')")
    seed: int = Field(42, description="random state of the factor initialisation")


def weight(matrix: sp.csr_matrix, config: ALSConfig) -> sp.csr_matrix:
    """Re-weight a users x items matrix as the config says (float32 CSR, same shape)."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    weighting = getattr(config, "weighting", "none")
    if weighting == "bm25":
        # implicit's weighting functions work on items x users rows
        return bm25_weight(matrix.T.tocsr(), K1=config.bm25_k1, B=config.bm25_b).T.tocsr().astype(np.float32)
    if weighting == "tfidf":
        return tfidf_weight(matrix.T.tocsr()).T.tocsr().astype(np.float32)
    if weighting == "log":
        out = matrix.astype(np.float32, copy=True)
        out.data = np.log1p(out.data)
        return out
    return matrix.astype(np.float32, copy=False)  # as it is when already float32 (a fold-in's row: no copy)


class ALSRecommender(Recommender):
    kind = "als"
    Config = ALSConfig

    def fit(self, interactions: sp.csr_matrix) -> Self:
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=self.config.factors,
            regularization=self.config.regularization,
            alpha=self.config.alpha,
            iterations=self.config.iterations,
            random_state=self.config.seed,
            calculate_training_loss=False,
        )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads slow it down
            model.fit(weight(sp.csr_matrix(interactions), self.config), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    @property
    def n_items(self) -> int:
        return self.item_factors_.shape[0]

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return self.user_factors_[np.asarray(user_rows, dtype=np.int64)] @ self.item_factors_.T

    def scores_of(self, item_rows: np.ndarray, user_row: int, events: tuple | None = None) -> np.ndarray:
        """A known shopper's scores of just ``item_rows`` (a 100-item rerank need not read 100k item vectors)."""
        if events is not None:
            return super().scores_of(item_rows, user_row, events)
        item_rows = np.asarray(item_rows, dtype=np.int64)
        return self.item_factors_[item_rows] @ self.user_factors_[user_row]

    def item_vectors(self) -> np.ndarray:
        return self.item_factors_

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.user_factors_, self.item_factors_

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """User factors (n, factors) from interaction rows, item factors fixed: the exact
        least-squares user step that implicit trains with (``implicit.cpu.als.user_linear_equation``):
        confidence c = alpha * weighted interaction, x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p
        (Hu, Koren & Volinsky 2008). Written out here because implicit's own solver needs writable
        item factors and the service's are memory-mapped read-only."""
        y = self.item_factors_
        alpha = getattr(self.config, "alpha", 1.0)
        base = self._fold_in_base()
        rows = weight(user_items if sp.isspmatrix_csr(user_items) else sp.csr_matrix(user_items), self.config)
        out = np.zeros((rows.shape[0], y.shape[1]), dtype=np.float32)
        for u in range(rows.shape[0]):
            idx = rows.indices[rows.indptr[u] : rows.indptr[u + 1]]
            if len(idx) == 0:
                continue
            conf = alpha * rows.data[rows.indptr[u] : rows.indptr[u + 1]].astype(np.float64)
            yi = y[idx].astype(np.float64)
            extra, target = np.abs(conf) - 1.0, np.where(conf > 0, conf, 0.0)
            if len(idx) <= y.shape[1] // 2:  # a short row: a low-rank update of the shared part (Woodbury)
                out[u] = _low_rank_solve(self._fold_in_base_inverse(), yi, extra, target)
            else:
                out[u] = np.linalg.solve(base + (yi.T * extra) @ yi, yi.T @ target)
        return out

    def _fold_in_base_inverse(self) -> np.ndarray:
        """(Y'Y + reg I)^-1, float64, once per item factor array: a shopper's system is this part plus a
        term of rank at most their row's length."""
        return self._derived("_fold_in_base_inverse_cache", self.item_factors_,
                             lambda y: np.linalg.inv(self._fold_in_base()))

    def _gram(self) -> np.ndarray:
        """Y'Y (float32, as implicit keeps it), computed once per item factor array (100k x 100
        factors: ~50 ms, far more than the rest of a fold-in, so not per request)."""
        return self._derived("_gram_cache", self.item_factors_,
                             lambda y: np.ascontiguousarray(np.asarray(y, np.float32).T @ np.asarray(y, np.float32)))

    def _fold_in_base(self) -> np.ndarray:
        """Y'Y + reg I in float64, the part of every fold-in's system that does not depend on the shopper
        (once per item factor array, not per request)."""
        reg = getattr(self.config, "regularization", 0.01)
        return self._derived("_fold_in_base_cache", self.item_factors_,
                             lambda y: self._gram().astype(np.float64) + reg * np.eye(y.shape[1]))

    def score_rows(self, user_items: sp.csr_matrix, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        return self.fold_in(user_items) @ self.item_factors_.T

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]


def _low_rank_solve(base_inverse: np.ndarray, u: np.ndarray, d: np.ndarray, p: np.ndarray) -> np.ndarray:
    """x = (B + U'DU)^-1 U'p from B^-1, by the Woodbury identity: with W = U B^-1 (n x k, n items of
    k factors), z = W'p = B^-1 U'p and x = z - W' (I + D W U')^-1 D U z; O(n k^2) instead of the O(k^3)
    of solving the k x k system (~0.3 ms at 100 factors), for rows of n << k items."""
    w = u @ base_inverse
    z = w.T @ p
    m = np.eye(len(d)) + d[:, None] * (w @ u.T)
    return z - w.T @ np.linalg.solve(m, d * (u @ z))
