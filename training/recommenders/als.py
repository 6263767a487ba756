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
        "bm25", description="re-weighting of the interaction matrix before fitting"
    )
    bm25_k1: float = Field(100.0, gt=0, description="BM25 K1 (weighting='bm25')")
    bm25_b: float = Field(0.8, ge=0, le=1, description="BM25 B (weighting='bm25')")
    seed: int = Field(42, description="random state of the factor initialisation")


def weight(matrix: sp.csr_matrix, config: ALSConfig) -> sp.csr_matrix:
    """Re-weight a users x items matrix as the config says (float32 CSR, same shape)."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    if config.weighting == "bm25":
        # implicit's weighting functions work on items x users rows
        return bm25_weight(matrix.T.tocsr(), K1=config.bm25_k1, B=config.bm25_b).T.tocsr().astype(np.float32)
    if config.weighting == "tfidf":
        return tfidf_weight(matrix.T.tocsr()).T.tocsr().astype(np.float32)
    if config.weighting == "log":
        out = matrix.copy().astype(np.float32)
        out.data = np.log1p(out.data)
        return out
    return matrix.astype(np.float32)


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

    def item_vectors(self) -> np.ndarray:
        return self.item_factors_

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.user_factors_, self.item_factors_

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """User factors (n, factors) from interaction rows, item factors fixed: one ALS half-step
        per user, x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p, as in Hu, Koren & Volinsky (2008)."""
        y = self.item_factors_
        yty = self._gram()
        reg = getattr(self.config, "regularization", 0.01) * np.eye(y.shape[1])
        alpha = getattr(self.config, "alpha", 1.0)
        rows = sp.csr_matrix(user_items, dtype=np.float64)
        if getattr(self.config, "weighting", "none") == "log":
            rows.data = np.log1p(rows.data)
        out = np.zeros((rows.shape[0], y.shape[1]), dtype=np.float32)
        for u in range(rows.shape[0]):
            idx = rows.indices[rows.indptr[u] : rows.indptr[u + 1]]
            if len(idx) == 0:
                continue
            conf = 1.0 + alpha * rows.data[rows.indptr[u] : rows.indptr[u + 1]]
            yi = y[idx].astype(np.float64)
            a = yty + (yi.T * (conf - 1.0)) @ yi + reg
            out[u] = np.linalg.solve(a, yi.T @ conf)
        return out

    def _gram(self) -> np.ndarray:
        """Y'Y in float64, computed once per item factor array (100k x 100 factors: ~50 ms, far
        more than the rest of a fold-in, so not per request)."""
        return self._derived("_gram_cache", self.item_factors_, lambda y: y.T.astype(np.float64) @ y.astype(np.float64))

    def score_rows(self, user_items: sp.csr_matrix) -> np.ndarray:
        return self.fold_in(user_items) @ self.item_factors_.T

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]
