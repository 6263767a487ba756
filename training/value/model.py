"""``ValueModel``: a customer's spend over the next horizon as a two-part LightGBM model.

    model = ValueModel(params, seed=42).fit(X, spend, X_held, spend_held)
    model.predict(X)          # (n,) expected spend = P(buys) × E[spend | buys]
    model.parts(X)            # DataFrame p_buy, spend_if_buying
    model.save(dir); ValueModel.load(dir)     # two LightGBM text files + model.json

The first part is a binary classifier (any purchase in the horizon); the second a regression
of log spend on the customers who bought, turned back into money with Duan's smearing factor
(the mean of exp(residual) on held-out buyers), so E[spend | buys] is not the geometric mean.
Held-out customers stop the boosting of both parts; the trees never see them.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.boosting import early_stopped, require_files
from training.propensity.model import feature_frame


class ValueModel:
    def __init__(self, params: dict | None = None, seed: int = 42, max_rounds: int = 3000,
                 early_stopping_rounds: int = 100):
        self.params = dict(params or {})
        self.seed = seed
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds

    def fit(self, X: pd.DataFrame, spend, X_held: pd.DataFrame, spend_held) -> "ValueModel":
        """Fit on (X, spend >= 0) with early stopping on the held-out rows."""
        if list(X.columns) != list(X_held.columns):
            raise ValueError("training and held-out rows must have the same feature columns")
        y, y_held = np.asarray(spend, dtype=float), np.asarray(spend_held, dtype=float)
        if len(y) != len(X) or len(y_held) != len(X_held):
            raise ValueError(f"rows and spend differ in length: {len(X)} vs {len(y)}, {len(X_held)} vs {len(y_held)}")
        if (y < 0).any() or (y_held < 0).any():
            raise ValueError("spend must be >= 0 (purchases only)")
        buys, held_buys = y > 0, y_held > 0
        if buys.sum() < 2 or (~buys).sum() < 2 or held_buys.sum() < 1:
            raise ValueError(f"need buyers and non-buyers to learn from: {int(buys.sum())} of {len(y)} training rows "
                             f"and {int(held_buys.sum())} of {len(y_held)} held-out rows bought")
        self.features_ = list(X.columns)
        boost = (self.params, self.seed)
        self.buy_, buy = early_stopped("binary", *boost, X, buys.astype(float), X_held, held_buys.astype(float),
                                       self.max_rounds, self.early_stopping_rounds)
        self.spend_, spend = early_stopped("regression", *boost, X[buys], np.log(y[buys]), X_held[held_buys],
                                           np.log(y_held[held_buys]), self.max_rounds, self.early_stopping_rounds)
        self.iterations_ = {"buy": buy, "spend": spend}
        resid = np.log(y_held[held_buys]) - self.spend_.predict(X_held[held_buys], num_iteration=self.iterations_["spend"])
        self.smearing_ = float(np.mean(np.exp(resid)))
        return self

    def parts(self, X: pd.DataFrame) -> pd.DataFrame:
        """P(buys in the horizon) and the expected spend if buying, per row of X."""
        X = self._frame(X)
        p = self.buy_.predict(X, num_iteration=self.iterations_["buy"])
        spend = np.exp(self.spend_.predict(X, num_iteration=self.iterations_["spend"])) * self.smearing_
        return pd.DataFrame({"p_buy": p, "spend_if_buying": spend}, index=X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) expected spend over the horizon."""
        parts = self.parts(X)
        return (parts["p_buy"] * parts["spend_if_buying"]).to_numpy()

    def importance(self) -> pd.Series:
        """Total gain per feature over both parts, largest first."""
        gain = (self.buy_.feature_importance("gain", iteration=self.iterations_["buy"])
                + self.spend_.feature_importance("gain", iteration=self.iterations_["spend"]))
        return pd.Series(gain, index=self.features_).sort_values(ascending=False)

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        return feature_frame(X, self.features_)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.buy_.save_model(str(path / "buy.txt"), num_iteration=self.iterations_["buy"])
        self.spend_.save_model(str(path / "spend.txt"), num_iteration=self.iterations_["spend"])
        meta = {"features": self.features_, "iterations": self.iterations_, "smearing": self.smearing_,
                "params": self.params, "seed": self.seed, "max_rounds": self.max_rounds,
                "early_stopping_rounds": self.early_stopping_rounds}
        (path / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "ValueModel":
        path = Path(path)
        require_files(path, ("buy.txt", "spend.txt", "model.json"), "value model")
        meta = json.loads((path / "model.json").read_text())
        model = cls(meta["params"], meta["seed"], meta["max_rounds"], meta["early_stopping_rounds"])
        model.buy_ = lgb.Booster(model_file=str(path / "buy.txt"))
        model.spend_ = lgb.Booster(model_file=str(path / "spend.txt"))
        model.features_, model.iterations_, model.smearing_ = meta["features"], meta["iterations"], meta["smearing"]
        return model
