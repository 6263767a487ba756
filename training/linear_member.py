"""``LinearMember``: an L2-regularised logistic regression on the same features as a LightGBM model, averaged
with it on the standardised score scale: the propensity models' second member (training/propensity/model.py)
and, where a recipe asks for it, the ranker's (training/recommenders/ranker.py).

Boosted trees fitted on a few thousand customers (or one shop's few label periods) have high variance, and a
tree cannot score beyond the range of values it was trained on; a linear model on log-scaled features has
little variance and extrapolates, and the two disagree where each is wrong. For the propensity models the
average beat LightGBM alone on all 18 validation periods of Online Retail and the small and gift synthetic
shops (three per target, churn and conversion) and tied on the grocery and wide test shops, where the trees
alone score 0.81-0.95; no test period was read to choose it.

    member = LinearMember.fit(X, y, c=0.1, seed=42)   # X: a DataFrame, or an array (columns by position)
    member.decision(X)        # (n,) log-odds
    member.contributions(X)   # (n, n_features): coefficient x standardised value, per input feature
    LinearMember.from_json(member.to_json())

The design is computed here, not by a scikit-learn pipeline, so that it is saved as plain numbers:
signed log1p of each feature, a missing value replaced by the training median (with a 0/1 column
saying it was missing, for features that had any), then standardised. scikit-learn fits the coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def _signed_log(X: np.ndarray) -> np.ndarray:
    return np.sign(X) * np.log1p(np.abs(X))


def _values(X, features: list[str] | None = None) -> np.ndarray:
    """The feature matrix as floats: a DataFrame's ``features`` columns in that order, or an array as it is."""
    if isinstance(X, pd.DataFrame):
        return (X if features is None else X[features]).to_numpy(dtype=float)
    return np.asarray(X, dtype=float)


@dataclass
class LinearMember:
    features: list[str]
    median: np.ndarray  # (n_features,) of the signed log, NaN-free
    flagged: list[int]  # features with a "was missing" column, in the design after the features
    mean: np.ndarray  # (n_columns,) of the design before standardising
    scale: np.ndarray  # (n_columns,)
    coef: np.ndarray  # (n_columns,)
    intercept: float

    @classmethod
    def fit(cls, X, y, c: float, seed: int) -> "LinearMember":
        from sklearn.linear_model import LogisticRegression

        logged = _signed_log(_values(X))
        missing = np.isnan(logged)
        median = np.nanmedian(np.where(missing.all(axis=0), 0.0, logged), axis=0)  # a never-seen feature: 0
        flagged = [int(j) for j in np.flatnonzero(missing.any(axis=0))]
        names = list(X.columns) if isinstance(X, pd.DataFrame) else [str(j) for j in range(logged.shape[1])]
        member = cls(names, median, flagged, np.zeros(0), np.ones(0), np.zeros(0), 0.0)
        raw = member._unscaled(logged)
        member.mean = raw.mean(axis=0)
        sd = raw.std(axis=0)
        member.scale = np.where(sd > 0, sd, 1.0)
        lr = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(member._scaled(raw), np.asarray(y, dtype=float))
        member.coef, member.intercept = lr.coef_[0].astype(float), float(lr.intercept_[0])
        return member

    def _unscaled(self, logged: np.ndarray) -> np.ndarray:
        missing = np.isnan(logged)
        filled = np.where(missing, self.median[None, :], logged)
        return np.hstack([filled, missing[:, self.flagged].astype(float)])

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.mean) / self.scale

    def _design(self, X) -> np.ndarray:
        return self._scaled(self._unscaled(_signed_log(_values(X, self.features))))

    def decision(self, X) -> np.ndarray:
        """(n,) log-odds."""
        return self._design(X) @ self.coef + self.intercept

    def contributions(self, X) -> np.ndarray:
        """(n, n_features) each input feature's share of the log-odds (its "was missing" column folded in);
        with ``intercept`` they sum to ``decision``."""
        terms = self._design(X) * self.coef
        n = len(self.features)
        out = terms[:, :n].copy()
        out[:, self.flagged] += terms[:, n:]
        return out

    def to_json(self) -> dict:
        return {"features": self.features, "median": self.median.tolist(), "flagged": self.flagged,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept}

    @classmethod
    def from_json(cls, d: dict) -> "LinearMember":
        return cls(list(d["features"]), np.asarray(d["median"], dtype=float), [int(j) for j in d["flagged"]],
                   np.asarray(d["mean"], dtype=float), np.asarray(d["scale"], dtype=float),
                   np.asarray(d["coef"], dtype=float), float(d["intercept"]))


def blend_scale(trees: np.ndarray, linear: np.ndarray) -> dict:
    """Each member's score mean and spread on the training rows: ``{"trees": [mean, sd], "linear": [mean, sd]}``
    (a spread of 0 counts as 1), saved with the model."""
    return {k: [float(v.mean()), float(v.std()) or 1.0] for k, v in (("trees", trees), ("linear", linear))}


def blended(scale: dict, trees, linear):
    """The members' scores (or biases) standardised by ``blend_scale`` and summed: the combined score."""
    (mt, st), (ml, sl) = scale["trees"], scale["linear"]
    return (trees - mt) / st + (linear - ml) / sl
