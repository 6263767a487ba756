"""Fitting single models on a training view, each (model, interactions) recipe once per view.

Blends and the ranker reuse the same base models (e.g. the ALS inside three blend weights
and the ranker's retrievers), so fitted models are cached on the view they were fitted on.
"""
from __future__ import annotations

from features.interactions import InteractionConfig, TrainingView
from training.recommenders.als import ALSRecommender
from training.recommenders.base import Recommender
from training.recommenders.neighbours import EASERecommender, ItemKNNRecommender
from training.recommenders.popular import PopularRecommender

BASE_MODELS: dict[str, type[Recommender]] = {
    m.kind: m for m in (PopularRecommender, ALSRecommender, ItemKNNRecommender, EASERecommender)
}


def fit_base(view: TrainingView, config, interactions: InteractionConfig) -> Recommender:
    """A base model fitted on ``view.matrix(interactions)``; fitted once per view and recipe."""
    cache = view.__dict__.setdefault("_models", {})
    key = (config.model_dump_json(), interactions.model_dump_json())
    if key not in cache:
        cache[key] = BASE_MODELS[config.kind](config).fit(view.matrix(interactions))
    return cache[key]


def forget_fits(view: TrainingView, keep: list[tuple]) -> None:
    """Drop the view's cached base models except ``keep`` ((config, interactions) pairs): a search
    fits many EASE models of ~1 GB each on a wide catalogue and needs only the best ones later."""
    cache = view.__dict__.get("_models", {})
    wanted = {(c.model_dump_json(), i.model_dump_json()) for c, i in keep}
    for key in [k for k in cache if k not in wanted]:
        del cache[key]
