"""A weighted blend of recommenders, each fitted on its own view of the interactions.

Scores are standardised per user (z-score over items) before weighting, so a taste model
(ALS) and a "what sells now" model (trending popularity) can be mixed with one weight.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from features.interactions import InteractionConfig, TrainingView
from training.recommenders.als import ALSConfig
from training.recommenders.base import Recommender, first_similarity
from training.recommenders.bpr import BPRConfig
from training.recommenders.fitting import BASE_MODELS, fit_base
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.popular import PopularConfig

PartConfig = PopularConfig | ALSConfig | BPRConfig | ItemKNNConfig | EASEConfig


class BlendPart(BaseModel):
    weight: float = Field(1.0, description="weight of this part's standardised scores")
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    model: PartConfig = Field(discriminator="kind")


class BlendConfig(BaseModel):
    kind: Literal["blend"] = "blend"
    parts: list[BlendPart] = Field(min_length=1)


def _standardise(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.mean(axis=1, keepdims=True)
    return scores / (scores.std(axis=1, keepdims=True) + 1e-9)


class BlendRecommender(Recommender):
    kind = "blend"
    Config = BlendConfig

    def fit(self, interactions: sp.csr_matrix) -> Self:
        """Fit every part on the same matrix (use ``fit_view`` for per-part matrices)."""
        self.parts_ = [BASE_MODELS[p.model.kind](p.model).fit(interactions) for p in self.config.parts]
        return self

    def fit_view(self, view: TrainingView) -> Self:
        """Fit each part on the view's matrix built with its own interaction config."""
        self.parts_ = [fit_base(view, part.model, part.interactions) for part in self.config.parts]
        return self

    @property
    def n_items(self) -> int:
        return self.parts_[0].n_items

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        total = np.zeros((len(user_rows), self.n_items), dtype=np.float32)
        for part, model in zip(self.config.parts, self.parts_):
            total += part.weight * _standardise(model.scores(user_rows))
        return total

    def score_rows(self, user_items: sp.csr_matrix) -> np.ndarray:
        total = np.zeros((user_items.shape[0], self.n_items), dtype=np.float32)
        for part, model in zip(self.config.parts, self.parts_):
            total += part.weight * _standardise(model.score_rows(user_items))
        return total

    def item_similarity(self, item_rows: np.ndarray) -> np.ndarray:
        return first_similarity(self.parts_, item_rows)

    def similarity_between(self, item_rows: np.ndarray, among: np.ndarray) -> np.ndarray:
        return first_similarity(self.parts_, item_rows, among)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}  # the parts are saved in their own folders

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def save(self, path: Path) -> None:
        super().save(path)
        for i, model in enumerate(self.parts_):
            model.save(Path(path) / f"part{i}")

    @classmethod
    def load(cls, path: Path) -> Self:
        model = super().load(path)
        model.parts_ = [BASE_MODELS[part.model.kind].load(Path(path) / f"part{i}")
                        for i, part in enumerate(model.config.parts)]
        return model
