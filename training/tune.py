"""Hyper-parameter search on the validation split only (never the test period).

Random search over small grids per model family, seeded; every trial is a nested MLflow
run under one parent run. The result is a training config whose candidates carry the best
parameters per family, saved as the file ``shoprec train`` reads by default.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import pandas as pd

from training.config import Candidate, TrainConfig, _trending, ranker_candidate
from training.evaluate import Split, score_discovery, time_split
from features.interactions import InteractionConfig
from training.recommenders.als import ALSConfig
from training.recommenders.blend import BlendConfig, BlendPart
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.popular import PopularConfig

BINARY = InteractionConfig(binary=True)

SPACES: dict[str, tuple[type, dict[str, list]]] = {
    "als": (ALSConfig, {"factors": [32, 64, 100, 128, 192], "regularization": [0.001, 0.01, 0.05, 0.1, 0.5],
                        "alpha": [0.5, 1.0, 2.0, 5.0, 10.0], "iterations": [15], "weighting": ["none"]}),
    "ease": (EASEConfig, {"l2": [30.0, 100.0, 300.0, 1000.0, 3000.0]}),
    "itemknn": (ItemKNNConfig, {"neighbours": [20, 50, 100, 200, 400], "similarity": ["bm25"]}),
}
PERSONAL = ("als", "ease")  # families blended with trending popularity
TREND_DAYS = [3.0, 7.0, 14.0]
BLEND_WEIGHTS = [1.0, 2.0, 4.0, 8.0]


def _grid(space: dict[str, list]) -> list[dict]:
    keys = sorted(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def tune(
    events: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    base: TrainConfig,
    trials: int = 12,
    seed: int = 42,
    log_trial: Callable[[str, dict, float], None] = lambda name, params, score: None,
) -> tuple[TrainConfig, dict[str, dict]]:
    """Search each family on the validation split; returns the tuned config and the best trial per family."""
    test = time_split(events, orders, base.test_days)
    val = time_split(test.view.events, test.view.orders, base.test_days)
    rng = np.random.default_rng(seed)
    best: dict[str, dict] = {}
    for family, (config_cls, space) in SPACES.items():
        grid = _grid(space)
        for i in rng.permutation(len(grid))[:trials]:
            params = grid[i]
            model = config_cls(**params)
            score = _score(Candidate(name=family, interactions=BINARY, model=model), val, base.k)
            log_trial(family, params, score)
            if score > best.get(family, {}).get("score", -1.0):
                best[family] = {"score": score, "params": params, "config": model}
    for personal, days, weight in itertools.product(PERSONAL, TREND_DAYS, BLEND_WEIGHTS):
        params = {"personal": personal, "trend_days": days, "weight": weight}
        score = _score(_blend(best[personal]["config"], days, weight), val, base.k)
        log_trial(f"{personal}-trending", params, score)
        if score > best.get(f"{personal}-trending", {}).get("score", -1.0):
            best[f"{personal}-trending"] = {"score": score, "params": params}
    return _tuned_config(base, best), {f: {"score": b["score"], "params": b["params"]} for f, b in best.items()}


def _score(candidate: Candidate, split: Split, k: int) -> float:
    from training.pipeline import fit_candidate

    return score_discovery(fit_candidate(candidate, split.view).scores, split, k)[f"ndcg@{k}"]


def _blend(personal, days: float, weight: float, name: str = "blend") -> Candidate:
    parts = [BlendPart(weight=1.0, interactions=BINARY, model=personal),
             BlendPart(weight=weight, interactions=_trending(days), model=PopularConfig(count="weight"))]
    return Candidate(name=name, model=BlendConfig(parts=parts))


def _tuned_config(base: TrainConfig, best: dict) -> TrainConfig:
    """Baselines, the best of each family, and each blend at its best weight and the neighbouring ones."""
    days = best[max((f"{p}-trending" for p in PERSONAL), key=lambda f: best[f]["score"])]["params"]["trend_days"]
    candidates = [
        Candidate(name="popular", interactions=BINARY, model=PopularConfig()),
        Candidate(name=f"trending-{days:g}d", interactions=_trending(days), model=PopularConfig(count="weight")),
    ] + [Candidate(name=family, interactions=BINARY, model=best[family]["config"]) for family in SPACES]
    for personal in PERSONAL:
        b = best[f"{personal}-trending"]["params"]
        for w in sorted({b["weight"] / 2, b["weight"], b["weight"] * 2}):
            candidates.append(_blend(best[personal]["config"], b["trend_days"], w,
                                     f"{personal}-trending{b['trend_days']:g}d-w{w:g}"))
    candidates.append(ranker_candidate(best["als"]["config"], best["ease"]["config"], best["itemknn"]["config"], days))
    return base.model_copy(update={"candidates": candidates})
