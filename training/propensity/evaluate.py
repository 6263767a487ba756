"""The time-based evaluation of a target (churn or conversion) with its baselines.

Test rows are scored at ``end - days`` with labels up to ``end``; the model and the
baselines learn from rows whose labels end by then (``end - 2*days``, the PRODUCT.md
protocol). Baselines: recency alone, and logistic regression on RFM + tenure (log1p,
standardised), the peers of PRODUCT.md. Metrics: ROC AUC, PR AUC (average precision),
Brier score and the lift in the top decile; the synthetic shop adds the oracle's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from features.labels import DAY
from training.propensity.config import PropensityConfig
from training.propensity.dataset import Rows, Snapshots, fit_split, training_dates
from training.propensity.ensemble import LabelEnsemble, label_summary
from training.propensity.model import PropensityModel

RFM_TENURE = ["recency_days", "frequency", "monetary", "tenure_days"]
TRUTH_COLUMNS = {("churn", 90): "p_churn_90", ("conversion", 30): "p_buy_30"}


def lift(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Positive rate among the ``share`` highest scores over the overall positive rate."""
    n = max(1, int(math.ceil(share * len(y))))
    top = np.argsort(-p, kind="stable")[:n]
    base = float(np.mean(y))
    return float(np.mean(y[top]) / base) if base > 0 else float("nan")


def classification_metrics(y, p) -> dict:
    """ROC AUC, PR AUC, Brier, lift@10% (NaN where one class is missing)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "lift@10%": lift(y, p),
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
    }


def recency_baseline():
    """Recency alone, turned into a probability by a one-feature logistic fit (same ranking)."""
    pick = FunctionTransformer(lambda X: np.log1p(np.asarray(X)[:, :1]))
    return make_pipeline(pick, LogisticRegression(max_iter=1000))


def rfm_logreg():
    """Logistic regression on log1p(recency, frequency, monetary, tenure), standardised."""
    return make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression(max_iter=1000))


def fit_model(snaps: Snapshots, target: str, cfg: PropensityConfig,
              apply_at: pd.Timestamp) -> tuple[PropensityModel | LabelEnsemble, Rows]:
    """The model for scoring ``target`` at ``apply_at``: the target's own label length (LightGBM and its linear member,
    rows at ``apply_at - days`` and earlier snapshots, customers split into trees / held-out as ``fit_split``
    describes), joined by a model per other length of ``cfg.label_lengths`` (training/propensity/ensemble.py). A length
    whose window does not fit in the history, or teaches one class only, is left out and named in ``skipped``."""
    days = cfg.days(target)
    own, fit, held = _fit_one(snaps, target, cfg, apply_at, days)
    others = [d for d in cfg.label_lengths if d != days]
    if not others:
        return own, fit
    members, skipped = {days: own}, {}
    for d in others:
        try:
            members[d] = _fit_one(snaps, target, cfg, apply_at, d)[0]
        except ValueError as e:
            skipped[f"{d}d"] = str(e)
    if len(members) == 1:
        return own, fit
    return LabelEnsemble.fit(members, days, held.X, held.y, cfg.calibration, skipped), fit


def _fit_one(snaps: Snapshots, target: str, cfg: PropensityConfig, apply_at: pd.Timestamp,
             days: int) -> tuple[PropensityModel, Rows, Rows]:
    """``target`` over ``days`` days, learned from its latest complete window before ``apply_at``: the model, its
    training rows and its held-out rows."""
    dated = snaps.stacked(training_dates(apply_at - days * DAY, cfg.snapshots, cfg.snapshot_step_days), target, days)
    fit, held = fit_split(dated, cfg.holdout_share, cfg.seed)
    p = cfg.lgbm
    params = {"learning_rate": p.learning_rate, "num_leaves": p.num_leaves, "min_child_samples": p.min_child_samples,
              "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction, "lambda_l2": p.lambda_l2}
    model = PropensityModel(params, cfg.calibration, cfg.seed, p.max_rounds, p.early_stopping_rounds, cfg.linear_c)
    return model.fit(fit.X, fit.y, held.X, held.y), fit, held


@dataclass
class TargetEvaluation:
    """One target's test: metrics per scorer, the test labels and each scorer's probabilities."""

    target: str
    days: int
    test_at: pd.Timestamp
    train_at: list[pd.Timestamp]
    y: pd.Series
    scores: dict[str, np.ndarray]  # "model", "baseline_recency", "baseline_rfm_logreg", maybe "oracle"
    model: PropensityModel | LabelEnsemble
    notes: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        out = classification_metrics(self.y, self.scores["model"])
        for name, p in self.scores.items():
            if name != "model":
                out[name] = classification_metrics(self.y, p)
        out.update({"days": self.days, "test_at": str(self.test_at), "train_at": [str(t) for t in self.train_at],
                    "best_iteration": self.model.best_iteration_, "calibration": self.model.calibration_["method"],
                    "linear_c": self.model.linear_c, **label_summary(self.model, self.days), **self.notes})
        return out


def evaluate_target(snaps: Snapshots, target: str, cfg: PropensityConfig, truth_dir: Path | None = None) -> TargetEvaluation:
    days = cfg.days(target)
    test_at = snaps.end - days * DAY
    test = snaps.rows(test_at, target, days)
    model, fit = fit_model(snaps, target, cfg, test_at)
    train = snaps.rows(test_at - days * DAY, target, days)  # the protocol's training rows, for the baselines
    scores = {"model": model.predict_proba(test.X)}
    for name, make in (("baseline_recency", recency_baseline), ("baseline_rfm_logreg", rfm_logreg)):
        scores[name] = make().fit(train.X[RFM_TENURE], train.y).predict_proba(test.X[RFM_TENURE])[:, 1]
    notes = {}
    if truth_dir is not None:
        oracle = oracle_scores(Path(truth_dir), test_at, target, days, test.X.index)
        if isinstance(oracle, str):
            notes["oracle_note"] = oracle
        else:
            scores["oracle"] = oracle
    return TargetEvaluation(target, days, test_at, fit.at, test.y, scores, model, notes)


def oracle_scores(truth_dir: Path, at: pd.Timestamp, target: str, days: int, users: pd.Index) -> np.ndarray | str:
    """The synthetic shop's true probability of the label at ``at`` (a row of truth/users.parquet
    is the state at the end of its day), or why there is none."""
    column = TRUTH_COLUMNS.get((target, days))
    if column is None:
        return f"the truth has no probability for {target} over {days} days"
    truth = pd.read_parquet(Path(truth_dir) / "users.parquet", columns=["user_id", "date", column])
    day = (at - pd.Timedelta(microseconds=1)).floor("D")
    rows = truth[truth["date"] == day].set_index("user_id")[column]
    if rows.empty:
        return f"the truth has no rows dated {day.date()} (dates: {sorted(truth['date'].dt.date.unique())})"
    p = rows.reindex(users.astype(str))
    if p.isna().any():
        return f"{int(p.isna().sum())} scored customers are missing from the truth"
    return p.to_numpy(dtype=float)
