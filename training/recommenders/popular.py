"""Most-popular items: the baseline, and the fallback for unknown users."""
from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.recommenders.base import Recommender


class PopularConfig(BaseModel):
    kind: Literal["popular"] = "popular"
    count: Literal["users", "weight"] = Field(
        "users", description="rank by distinct users (robust to bulk buyers) or by summed interaction weight"
    )


class PopularRecommender(Recommender):
    """Same list for everyone: items ranked by distinct users or summed weight (ties by row)."""

    kind = "popular"
    Config = PopularConfig

    def fit(self, interactions: sp.csr_matrix) -> Self:
        x = interactions.tocsc()
        if self.config.count == "users":
            counts = np.diff(x.indptr).astype(np.float64)
        else:
            counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
        # log scale (same ranking) so that blends see comparable magnitudes; a tiny
        # tie-break keeps equal counts in a stable order
        self.item_scores_ = (np.log1p(counts) - np.arange(len(counts)) * 1e-9).astype(np.float32)
        return self

    @property
    def n_items(self) -> int:
        return len(self.item_scores_)

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return np.tile(self.item_scores_, (len(user_rows), 1))

    def score_rows(self, user_items: sp.csr_matrix, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        return np.tile(self.item_scores_, (user_items.shape[0], 1))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_scores_ = arrays["item_scores"]
