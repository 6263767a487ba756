"""``PropensityModel``: a calibrated binary classifier, LightGBM and (by default) a logistic regression
averaged on the standardised log-odds scale, saved as LightGBM text plus JSON.

    model = PropensityModel(params, calibration="platt", seed=42, linear_c=0.1).fit(X, y, X_held, y_held)
    p = model.predict_proba(X)            # (n,) calibrated P(label = 1)
    contrib = model.contributions(X)      # (n, n_features) contributions to the combined log-odds
    model.save(path); PropensityModel.load(path)

The held-out rows stop the boosting (log loss) and fit the calibration, so the trees never
see them. The combined score is each member's log-odds standardised by its mean and standard
deviation on the training rows, summed (``linear_c`` None: LightGBM alone, as bundles saved before
the linear member). Contributions are each member's (TreeSHAP for the trees, coefficient x value for
the linear model, training/linear_member.py) on the same scale, so they still add up to the
score. Calibration is Platt scaling (Platt 1999: a logistic curve on the raw score) or isotonic
regression (Zadrozny & Elkan 2002), stored as plain numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.boosting import early_stopped, require_files
from training.linear_member import LinearMember, blend_scale, blended

MIN_CALIBRATION_ROWS = 20


class PropensityModel:
    """Binary LightGBM (and a linear member) plus a calibration map from the raw score to probabilities."""

    linear_: LinearMember | None = None
    blend_: dict | None = None  # {"trees": [mean, sd], "linear": [mean, sd]} of each member's log-odds

    def __init__(self, params: dict | None = None, calibration: str = "platt", seed: int = 42,
                 max_rounds: int = 2000, early_stopping_rounds: int = 100, linear_c: float | None = None):
        self.params = dict(params or {})
        self.calibration = calibration
        self.seed = seed
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.linear_c = linear_c

    def fit(self, X: pd.DataFrame, y, X_held: pd.DataFrame, y_held) -> "PropensityModel":
        """Boost on (X, y) with early stopping on the held-out rows, then calibrate on them."""
        if list(X.columns) != list(X_held.columns):
            raise ValueError("training and held-out rows must have the same feature columns")
        if len(X) == 0 or len(X_held) == 0:
            raise ValueError(f"need training and held-out rows, got {len(X)} and {len(X_held)}")
        y, y_held = np.asarray(y, dtype=float), np.asarray(y_held, dtype=float)
        if len(np.unique(y)) < 2:
            raise ValueError(f"training labels are all {y[0]:g}: cannot learn a classifier from one class")
        self.features_ = list(X.columns)
        self.booster_, self.best_iteration_ = early_stopped("binary", {"metric": "binary_logloss", **self.params}, self.seed,
                                                            X, y, X_held, y_held, self.max_rounds, self.early_stopping_rounds)
        if self.linear_c is not None:
            self.linear_ = LinearMember.fit(X, y, self.linear_c, self.seed)
            self.blend_ = blend_scale(self._tree_score(X), self.linear_.decision(X))
        self.calibration_ = fit_calibration(self.raw_score(X_held), y_held, self.calibration)
        return self

    def _tree_score(self, X: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(self._frame(X), num_iteration=self.best_iteration_, raw_score=True)

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) uncalibrated score: the trees' log-odds, or with the linear member the sum of both members'
        standardised log-odds."""
        trees = self._tree_score(X)
        return trees if self.linear_ is None else blended(self.blend_, trees, self.linear_.decision(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) calibrated probabilities of the positive class."""
        return apply_calibration(self.calibration_, self.raw_score(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """(n, n_features) each feature's contribution to the raw score; with ``base_score`` they sum to it."""
        c = self.booster_.predict(self._frame(X), num_iteration=self.best_iteration_, pred_contrib=True)[:, :-1]
        if self.linear_ is not None:
            c = c / self.blend_["trees"][1] + self.linear_.contributions(X) / self.blend_["linear"][1]
        return pd.DataFrame(c, index=X.index, columns=self.features_)

    def base_score(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) the part of the raw score no feature accounts for (the members' biases)."""
        bias = self.booster_.predict(self._frame(X), num_iteration=self.best_iteration_, pred_contrib=True)[:, -1]
        return bias if self.linear_ is None else blended(self.blend_, bias, self.linear_.intercept)

    def importance(self) -> pd.Series:
        """The trees' total gain per feature, largest first."""
        gain = self.booster_.feature_importance("gain", iteration=self.best_iteration_)
        return pd.Series(gain, index=self.features_).sort_values(ascending=False)

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        return feature_frame(X, self.features_)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(path / "model.txt"), num_iteration=self.best_iteration_)
        meta = {"features": self.features_, "best_iteration": self.best_iteration_, "params": self.params,
                "seed": self.seed, "max_rounds": self.max_rounds, "early_stopping_rounds": self.early_stopping_rounds,
                "calibration": self.calibration_, "linear_c": self.linear_c,
                "linear": None if self.linear_ is None else self.linear_.to_json(), "blend": self.blend_}
        (path / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "PropensityModel":
        path = Path(path)
        require_files(path, ("model.txt", "model.json"), "propensity model")
        meta = json.loads((path / "model.json").read_text())
        model = cls(meta["params"], meta["calibration"]["method"], meta["seed"], meta["max_rounds"],
                    meta["early_stopping_rounds"], meta.get("linear_c"))  # saved before the linear member: trees only
        model.booster_ = lgb.Booster(model_file=str(path / "model.txt"))
        model.features_ = meta["features"]
        model.best_iteration_ = meta["best_iteration"]
        model.calibration_ = meta["calibration"]
        if meta.get("linear"):
            model.linear_, model.blend_ = LinearMember.from_json(meta["linear"]), meta["blend"]
        return model


def fit_calibration(raw: np.ndarray, y: np.ndarray, method: str) -> dict:
    """A JSON-able map from raw log-odds to probabilities, fitted on held-out rows.

    Too few rows, or a single class, leave the model's own sigmoid ("identity").
    """
    if len(y) < MIN_CALIBRATION_ROWS or len(np.unique(y)) < 2:
        return {"method": "identity", "requested": method, "rows": int(len(y))}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]), "rows": int(len(y))}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist(),
                "rows": int(len(y))}
    raise ValueError(f"calibration must be 'platt' or 'isotonic', got {method!r}")


def apply_calibration(cal: dict, raw: np.ndarray) -> np.ndarray:
    if cal["method"] == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * raw + cal["b"])))
    if cal["method"] == "isotonic":
        return np.interp(raw, np.asarray(cal["x"]), np.asarray(cal["y"]))
    return 1.0 / (1.0 + np.exp(-raw))


def feature_frame(X: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The model's feature columns of ``X``, in its order; a missing column is named."""
    missing = [f for f in features if f not in X.columns]
    if missing:
        raise ValueError(f"feature columns missing: {missing}")
    return X[features]
