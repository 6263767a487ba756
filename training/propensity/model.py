"""``PropensityModel``: a calibrated LightGBM binary classifier, saved as LightGBM text plus JSON.

    model = PropensityModel(params, calibration="platt", seed=42).fit(X, y, X_held, y_held)
    p = model.predict_proba(X)            # (n,) calibrated P(label = 1)
    contrib = model.contributions(X)      # (n, n_features) log-odds contributions (SHAP, TreeSHAP)
    model.save(path); PropensityModel.load(path)

The held-out rows stop the boosting (log loss) and fit the calibration, so the trees never
see them. Calibration is Platt scaling (Platt 1999: a logistic curve on the raw log-odds)
or isotonic regression (Zadrozny & Elkan 2002), stored as plain numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

MIN_CALIBRATION_ROWS = 20


class PropensityModel:
    """Binary LightGBM plus a calibration map from its raw log-odds to probabilities."""

    def __init__(self, params: dict | None = None, calibration: str = "platt", seed: int = 42,
                 max_rounds: int = 2000, early_stopping_rounds: int = 100):
        self.params = dict(params or {})
        self.calibration = calibration
        self.seed = seed
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds

    def _lgb_params(self) -> dict:
        return {"objective": "binary", "metric": "binary_logloss", "verbose": -1, **self.params,
                "seed": self.seed, "deterministic": True, "force_row_wise": True, "bagging_freq": 1,
                "num_threads": 1}

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
        train = lgb.Dataset(X, y, free_raw_data=True)
        held = lgb.Dataset(X_held, y_held, reference=train)
        self.booster_ = lgb.train(self._lgb_params(), train, self.max_rounds, valid_sets=[held],
                                  callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        self.calibration_ = fit_calibration(self.raw_score(X_held), y_held, self.calibration)
        return self

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) uncalibrated log-odds."""
        return self.booster_.predict(self._frame(X), num_iteration=self.best_iteration_, raw_score=True)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) calibrated probabilities of the positive class."""
        return apply_calibration(self.calibration_, self.raw_score(X))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """(n, n_features) each feature's contribution to the raw log-odds (the bias column dropped)."""
        c = self.booster_.predict(self._frame(X), num_iteration=self.best_iteration_, pred_contrib=True)
        return pd.DataFrame(c[:, :-1], index=X.index, columns=self.features_)

    def importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
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
                "calibration": self.calibration_}
        (path / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "PropensityModel":
        path = Path(path)
        for name in ("model.txt", "model.json"):
            if not (path / name).exists():
                raise FileNotFoundError(f"propensity model {path} is incomplete: {name} is missing")
        meta = json.loads((path / "model.json").read_text())
        model = cls(meta["params"], meta["calibration"]["method"], meta["seed"], meta["max_rounds"],
                    meta["early_stopping_rounds"])
        model.booster_ = lgb.Booster(model_file=str(path / "model.txt"))
        model.features_ = meta["features"]
        model.best_iteration_ = meta["best_iteration"]
        model.calibration_ = meta["calibration"]
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
