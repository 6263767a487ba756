"""LightGBM as the propensity and customer-value models use it: the same fixed settings (deterministic,
one thread, bagging every round), early stopping on held-out rows, and saved files checked before loading.

    booster, best = early_stopped("binary", params, seed, X, y, X_held, y_held, max_rounds, patience)
    require_files(path, ("model.txt", "model.json"), "propensity model")
"""
from __future__ import annotations

from pathlib import Path

import lightgbm as lgb


def lgb_params(objective: str, params: dict, seed: int) -> dict:
    """``params`` (the config's) with the settings that make a model reproducible on any machine."""
    return {"objective": objective, "verbose": -1, **params, "seed": seed, "deterministic": True,
            "force_row_wise": True, "bagging_freq": 1, "num_threads": 1}


def early_stopped(objective: str, params: dict, seed: int, X, y, X_held, y_held, max_rounds: int,
                  patience: int) -> tuple[lgb.Booster, int]:
    """Boost on (X, y) until the held-out rows' loss has not improved for ``patience`` rounds: the booster
    and its best iteration."""
    train = lgb.Dataset(X, y, free_raw_data=True)
    held = lgb.Dataset(X_held, y_held, reference=train)
    booster = lgb.train(lgb_params(objective, params, seed), train, max_rounds, valid_sets=[held],
                        callbacks=[lgb.early_stopping(patience, verbose=False)])
    return booster, int(booster.best_iteration or booster.current_iteration())


def require_files(path: Path, names: tuple[str, ...], what: str) -> None:
    """FileNotFoundError naming the first of ``names`` missing under ``path``."""
    for name in names:
        if not (Path(path) / name).exists():
            raise FileNotFoundError(f"{what} {path} is incomplete: {name} is missing")
