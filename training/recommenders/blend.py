"""A weighted blend of recommenders, each fitted on its own view of the interactions.

Scores are standardised per user (z-score over the items a part scores) before weighting,
so a taste model (ALS) and a "what sells now" model (trending popularity) can be mixed with
one weight. A part that does not score every item (EASE capped to the most popular items)
gives the others its lowest standardised score; an item no part scores stays -inf.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from features.interactions import InteractionConfig, TrainingView
from training.recommenders.als import ALSConfig
from training.recommenders.base import Recommender, as_trained, first_similarity
from training.recommenders.fitting import BASE_MODELS, fit_base
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.part_rows import PartRows
from training.recommenders.popular import PopularConfig

PartConfig = PopularConfig | ALSConfig | ItemKNNConfig | EASEConfig


class BlendPart(BaseModel):
    weight: float = Field(1.0, description="weight of this part's standardised scores")
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    model: PartConfig = Field(discriminator="kind")


class BlendConfig(BaseModel):
    kind: Literal["blend"] = "blend"
    parts: list[BlendPart] = Field(min_length=1)


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per row, z-scores over the finite entries (float32); the others stay -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    finite = np.isfinite(scores)
    if finite.all():
        out = scores - scores.mean(axis=1, keepdims=True)
        return out / (out.std(axis=1, keepdims=True) + 1e-9)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    values = np.where(finite, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    std = np.sqrt((np.where(finite, values - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    return np.where(finite, (values - mean) / (std + 1e-9), -np.inf).astype(np.float32)


def weighted_sum(weights: list[float], part_scores) -> np.ndarray:
    """Sum of weight x standardised scores; where a part has no score, its row minimum stands in,
    and items that no part scores stay -inf (unrecommendable)."""
    total, scored = None, None
    for w, scores in zip(weights, part_scores):
        z = standardise(scores)
        finite = np.isfinite(z)
        floor = np.where(finite, z, np.inf).min(axis=1, keepdims=True)
        floor[~np.isfinite(floor)] = 0.0
        term = w * np.where(finite, z, floor)
        total = term if total is None else total + term
        scored = finite if scored is None else scored | finite
    return np.where(scored, total, -np.inf).astype(np.float32)


class BlendRecommender(Recommender):
    kind = "blend"
    Config = BlendConfig
    part_rows_: PartRows | None = None  # each part's training rows (fit_view); None: one row for all

    def fit(self, interactions: sp.csr_matrix) -> Self:
        """Fit every part on the same matrix (use ``fit_view`` for per-part matrices)."""
        self.parts_ = [BASE_MODELS[p.model.kind](p.model).fit(interactions) for p in self.config.parts]
        self.part_rows_ = None  # one matrix for every part: the row as given is each part's row
        return self

    def fit_view(self, view: TrainingView) -> Self:
        """Fit each part on the view's matrix built with its own interaction config."""
        self.parts_ = [fit_base(view, part.model, part.interactions) for part in self.config.parts]
        self.part_rows_ = PartRows.of_view(view, self.config.parts)
        return self

    @property
    def n_items(self) -> int:
        return self.parts_[0].n_items

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        return weighted_sum([p.weight for p in self.config.parts], (m.scores(user_rows) for m in self.parts_))

    def score_rows(self, user_items: sp.csr_matrix, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """Each part scores the row as it saw rows in training (binary parts: 1.0 per item)."""
        return weighted_sum([p.weight for p in self.config.parts],
                            (m.score_rows(as_trained(user_items, p.interactions.binary), exclude)
                             for p, m in zip(self.config.parts, self.parts_)))

    def score_events(self, row: sp.csr_matrix, user_row: int, items: np.ndarray, kinds,
                     exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """Each part reads the shopper's row as built by its own config (its training row plus the new events)."""
        if self.part_rows_ is None:
            return self.score_rows(row, exclude)
        return weighted_sum([p.weight for p in self.config.parts],
                            (m.score_rows(self.part_rows_.row(i, user_row, items, kinds, self.n_items), exclude)
                             for i, m in enumerate(self.parts_)))

    def item_similarity(self, item_rows: np.ndarray) -> np.ndarray:
        return first_similarity(self.parts_, item_rows)

    def similarity_between(self, item_rows: np.ndarray, among: np.ndarray) -> np.ndarray:
        return first_similarity(self.parts_, item_rows, among)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {} if self.part_rows_ is None else self.part_rows_.arrays()  # the parts: in their own folders

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.part_rows_ = PartRows.from_arrays(arrays, self.config.parts)

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
