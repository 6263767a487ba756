"""Typed training configuration: the candidate recipes and the evaluation settings.

Loadable from YAML (``configs/train.yaml``), with a documented default for every field.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from features.cooccurrence import AssociationConfig
from features.interactions import InteractionConfig
from training.recommenders import ModelConfig
from training.recommenders.als import ALSConfig
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.ranker import RankerConfig
from training.recommenders.blend import BlendConfig, BlendPart
from training.recommenders.popular import PopularConfig


class Candidate(BaseModel):
    """A recipe: how interactions are weighted, and which model learns from them."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="short unique name")
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    model: ModelConfig

    def row_interactions(self) -> InteractionConfig:
        """How a shopper's row is built for fold-in: a blend or a ranker uses its first personal
        part's view (the parts re-read it as they were trained, see ``as_trained``)."""
        parts = getattr(self.model, "parts", None) or getattr(self.model, "retrievers", None)
        if parts:
            personal = [p for p in parts if p.model.kind != "popular"] or parts
            return personal[0].interactions
        return self.interactions


def _trending(days: float = 7) -> InteractionConfig:
    return InteractionConfig(binary=True, half_life_days=days, window_days=8 * days)


def default_candidates() -> list[Candidate]:
    binary = InteractionConfig(binary=True)
    weighted = InteractionConfig()
    als = ALSConfig(factors=100, regularization=0.01, alpha=1.0, iterations=15, weighting="none")
    out = [
        Candidate(name="popular", interactions=binary, model=PopularConfig()),
        Candidate(name="trending-7d", interactions=_trending(7), model=PopularConfig(count="weight")),
        Candidate(name="als", interactions=binary, model=als),
        Candidate(name="als-weighted", interactions=weighted, model=als.model_copy(update={"weighting": "log"})),
    ]
    for w in (1.0, 2.0, 4.0, 8.0):
        parts = [
            BlendPart(weight=1.0, interactions=binary, model=als),
            BlendPart(weight=w, interactions=_trending(7), model=PopularConfig(count="weight")),
        ]
        out.append(Candidate(name=f"als-trending-w{w:g}", model=BlendConfig(parts=parts)))
    return out


def ranker_candidate(als: ALSConfig, ease: EASEConfig, itemknn: ItemKNNConfig, trend_days: float = 7,
                     name: str = "ranker") -> Candidate:
    """Second stage: ALS, EASE, item-kNN, trending and popular candidates re-ranked by LightGBM."""
    binary = InteractionConfig(binary=True)
    retrievers = [BlendPart(interactions=binary, model=als), BlendPart(interactions=binary, model=ease),
                  BlendPart(interactions=_trending(trend_days), model=PopularConfig(count="weight")),
                  BlendPart(interactions=binary, model=itemknn), BlendPart(interactions=binary, model=PopularConfig())]
    return Candidate(name=name, model=RankerConfig(retrievers=retrievers, candidates=50))


class TrainConfig(BaseModel):
    test_days: float = Field(30, gt=0, description="length of the test period (and of the validation period before it)")
    k: int = Field(10, ge=1, le=100, description="list length of the metrics")
    baseline: str = Field("popular", description="candidate reported as the popularity baseline")
    fallback: Candidate = Field(
        default_factory=lambda: Candidate(name="trending-14d", interactions=_trending(14), model=PopularConfig(count="weight")),
        description="what unknown users get: a popularity recipe fitted on all data",
    )
    candidates: list[Candidate] = Field(default_factory=default_candidates)
    together: AssociationConfig = Field(default_factory=AssociationConfig, description="bought-together rules")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    def dump(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate named {name!r}; have {[c.name for c in self.candidates]}")
