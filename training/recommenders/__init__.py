"""Recommenders behind one interface (see ``base.Recommender``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Union

import scipy.sparse as sp
from pydantic import Field

from features.interactions import InteractionConfig, TrainingView
from training.recommenders.als import ALSConfig, ALSRecommender
from training.recommenders.base import Recommender, topk
from training.recommenders.blend import BlendConfig, BlendRecommender
from training.recommenders.fitting import fit_base
from training.recommenders.neighbours import EASEConfig, EASERecommender, ItemKNNConfig, ItemKNNRecommender
from training.recommenders.popular import PopularConfig, PopularRecommender
from training.recommenders.ranker import RankerConfig, RankerRecommender

MODELS: dict[str, type[Recommender]] = {
    m.kind: m
    for m in (PopularRecommender, ALSRecommender, ItemKNNRecommender, EASERecommender,
              BlendRecommender, RankerRecommender)
}

ModelConfig = Annotated[
    Union[PopularConfig, ALSConfig, ItemKNNConfig, EASEConfig, BlendConfig, RankerConfig],
    Field(discriminator="kind"),
]


def make_model(config) -> Recommender:
    return MODELS[config.kind](config)


def fit_model(config, interactions: InteractionConfig, view: TrainingView) -> Recommender:
    """Fit a model on the data its recipe asks for: one matrix, one matrix per blend part,
    or the whole view (a stacked ranker needs time to make its own labels)."""
    model = make_model(config)
    if hasattr(model, "fit_view"):
        return model.fit_view(view)
    return fit_base(view, config, interactions)


def load_model(path: Path) -> Recommender:
    """Load any saved recommender, dispatching on the kind in ``model.json``."""
    kind = json.loads((Path(path) / "model.json").read_text())["kind"]
    if kind not in MODELS:
        raise ValueError(f"{path}: unknown model kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind].load(path)


__all__ = ["MODELS", "ModelConfig", "Recommender", "fit_model", "load_model", "make_model", "topk"]
