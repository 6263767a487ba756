"""Typed training configuration: the search space of recipes and the evaluation settings.

Loadable from YAML (``configs/train.yaml``), with a documented default for every field.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from features.cooccurrence import AssociationConfig
from features.interactions import InteractionConfig
from training.propensity.config import PropensityConfig
from training.recommenders import ModelConfig
from training.recommenders.als import ALSConfig
from training.recommenders.popular import PopularConfig
from training.recommenders.ranker import RankerSettings


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


def complexity(candidate: Candidate) -> int:
    """How simple and cheap a recipe is (lower: simpler); ties within the noise go to the lowest."""
    model = candidate.model
    if model.kind == "popular":
        timed = candidate.interactions.half_life_days is not None or candidate.interactions.window_days is not None
        return 1 if timed else 0
    return {"itemknn": 2, "als": 3, "ease": 3, "blend": 4, "ranker": 5}[model.kind]


class RankerSearch(RankerSettings):
    """The second stage's settings; its retrievers are the best recipes the search found."""

    enabled: bool = Field(True, description="try the LightGBM ranker over the best retrievers")
    item_time: list[bool] = Field(
        [True, False], min_length=1, description="rankers tried: with the items' features in time, without them, or both")
    stacked_label_periods: int = Field(
        3, ge=1, le=6, description="the better of those rankers is tried again learning from this many label periods "
        "stacked (when more than label_periods): months of labels instead of one, where the shop's history allows")
    fresh_buyers_days: float | None = Field(
        7.0, gt=0, description="the best ranker is tried again with one more retriever: the items with the most distinct "
        "buyers in this many recent days, so that new and rising items reach its candidates (a seasonal shop's peak); "
        "not tried when the best trending recipe is already that list; null: never")


class SearchSpace(BaseModel):
    """What ``shoprec train`` tries on the shop's own validation period, in stages: popularity
    and trending, then each personal family from its starting points, then blends of the best
    personal model with the best trending recipe, then the ranker over the best of everything.
    A stage that would not fit in the budget is skipped (and said so in the metrics)."""

    budget_minutes: float = Field(10.0, gt=0, description="wall-clock budget of the search on the validation split")
    trending_half_life_days: list[float] = Field([3.0, 7.0, 14.0, 30.0], description="trending recipes tried")
    trending_window_days: list[float] = Field(
        [7.0, 30.0], description="trending as distinct buyers in the last days (no decay) also tried: on shops whose "
        "items come and go, what sells now beats a decayed history")
    als: list[ALSConfig] = Field(
        default_factory=lambda: [ALSConfig(factors=64, regularization=0.05, alpha=1.0),
                                 ALSConfig(factors=128, regularization=0.5, alpha=0.5),
                                 ALSConfig(factors=32, regularization=0.5, alpha=0.5)],
        description="ALS starting points")
    ease_l2: list[float] = Field([100.0, 300.0, 1000.0], description="EASE ridge penalties tried")
    ease_max_items: int = Field(15_000, ge=1, le=40_000, description="EASE models the most popular items only")
    itemknn_neighbours: list[int] = Field([50, 200], description="BM25 item-kNN neighbourhood sizes tried")
    blend_weights: list[float] = Field([0.5, 1.0, 2.0, 4.0, 8.0], description="weights of trending against a personal model")
    weighted_rows: bool = Field(True, description="with a clickstream, also try views and carts weighted against purchases")
    purchase_rows: bool = Field(True, description="with a clickstream, also try popularity, trending and the best "
                                "personal models on purchases alone (views and carts left out)")
    ranker: RankerSearch = Field(default_factory=RankerSearch)
    finalists: int = Field(4, ge=0, description="best recipes on validation (besides the best peer and the shop's "
                           "champion recipe) scored again on the period before it; the choice is made on both periods' "
                           "users together, so one period's luck does not decide (0: validation alone)")


class TrainConfig(BaseModel):
    test_days: float = Field(30, gt=0, description="length of the test period (and of the validation period before it)")
    k: int = Field(10, ge=1, le=100, description="list length of the metrics")
    baseline: str = Field("popular", description="candidate reported as the popularity baseline")
    fallback: Candidate = Field(
        default_factory=lambda: Candidate(name="trending-14d", interactions=_trending(14), model=PopularConfig(count="weight")),
        description="what unknown users get: a popularity recipe fitted on all data",
    )
    search: SearchSpace | None = Field(default_factory=SearchSpace,
                                       description="the recipes searched on validation (None: only `candidates`)")
    candidates: list[Candidate] = Field(default_factory=list, description="fixed recipes tried besides the search")
    peers: bool = Field(True, description="score the PRODUCT.md peers in the run (and let them win)")
    together: AssociationConfig = Field(default_factory=AssociationConfig, description="bought-together rules")
    never_recommend: list[str] = Field(
        ["non-product"], description="catalogue categories no answer recommends (postage, fees, manual adjustments: "
        "Online Retail's codes POST, DOT, M, BANK CHARGES, ... are 'non-product'); they stay in the data, the models, "
        "the evaluation's truth and a caller's /rerank list")
    propensity: PropensityConfig = Field(
        default_factory=PropensityConfig, description="the churn and conversion models trained with the orders "
        "(label lengths, training snapshots, calibration, LightGBM; training/propensity/config.py): another recipe "
        "replaces the shop's champion bundle only when better beyond noise on validation")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return strictly(cls, yaml.safe_load(Path(path).read_text()) or {})

    def dump(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def candidate(self, name: str) -> Candidate:
        """A fixed candidate by name."""
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate named {name!r}; have {[c.name for c in self.candidates]}")


def strictly(model: type[BaseModel], data: dict) -> BaseModel:
    """``model.model_validate(data)``, refusing a key no setting has (a typo would otherwise run the default
    silently): ValueError naming its path and the nearest setting. Checked against what each part of ``data``
    became, so a model chosen by its ``kind`` is checked against that model's own settings. Saved configs (a
    champion's recipe, a bundle's row settings) are read as before: only a user's file is held to this."""
    validated = model.model_validate(data)
    if unknown := _unknown_keys(data, validated, ""):
        raise ValueError("; ".join(unknown))
    return validated


def _unknown_keys(data, value, where: str) -> list[str]:
    import difflib

    out = []
    if isinstance(value, BaseModel) and isinstance(data, dict):
        fields = type(value).model_fields
        names = set(fields) | {f.alias for f in fields.values() if f.alias}
        for key, sub in data.items():
            path = f"{where}{key}"
            if key not in names:
                near = difflib.get_close_matches(str(key), sorted(names), n=1)
                out.append(f"{path}: not a setting" + (f" (did you mean {where}{near[0]}?)" if near else ""))
            else:
                out += _unknown_keys(sub, getattr(value, key, None), f"{path}.")
    elif isinstance(value, (list, tuple)) and isinstance(data, (list, tuple)):
        for i, (sub, item) in enumerate(zip(data, value)):
            out += _unknown_keys(sub, item, f"{where}{i}.")
    return out
