"""Customer value inside ``shoprec train``: evaluate the two-part model against its peers by
PRODUCT.md's protocol, fit the production model, and build what the marketers see (stages,
flows, cohorts, funnel, personas).

Protocol (PRODUCT.md "Customer value"): cutoff = end - horizon; population = every customer with
a purchase up to the cutoff; actual = their spend in (cutoff, cutoff + horizon]. The model learns
from rows at cutoff - horizon (and earlier snapshots) whose labels end by the cutoff; the peers
are fitted on the orders up to the cutoff. Production: trained at end - horizon, applied at end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import lifecycle
from features.labels import DAY
from training.propensity.dataset import Snapshots, held_out, training_dates
from training.value.config import ValueConfig
from training.value.metrics import KEYS, value_metrics
from training.value.model import ValueModel
from training.value.peers import PEERS, buy_till_you_die, future_spend, peer_predictions
from training.value.personas import Personas


class ValueRows:
    """Features for the value model at a date: the point-in-time user features (shared with the
    propensity models through ``Snapshots``) joined with the BG/NBD + Gamma-Gamma quantities."""

    def __init__(self, snaps: Snapshots, cfg: ValueConfig):
        self.snaps, self.cfg = snaps, cfg
        self._cache: dict = {}

    def features(self, at, days: int) -> pd.DataFrame:
        key = (pd.Timestamp(at), days)
        if key not in self._cache:
            X = self.snaps.features(at)
            btyd = buy_till_you_die(self.snaps.orders, at, days, self.cfg.penalizer, 0.0)
            self._cache[key] = X.join(btyd.reindex(X.index))
        return self._cache[key]

    def labelled(self, at, days: int) -> tuple[pd.DataFrame, pd.Series]:
        X = self.features(at, days)
        return X, future_spend(self.snaps.orders, X.index, at, days)


def _params(cfg: ValueConfig) -> dict:
    p = cfg.lgbm
    return {"learning_rate": p.learning_rate, "num_leaves": p.num_leaves, "min_child_samples": p.min_child_samples,
            "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction, "lambda_l2": p.lambda_l2}


def fit_value_model(rows: ValueRows, cfg: ValueConfig, apply_at, days: int) -> tuple[ValueModel, list[pd.Timestamp]]:
    """The model applied at ``apply_at``: rows at apply_at - days and earlier snapshots (labels end by
    ``apply_at``); held-out customers (all their rows) stop the boosting."""
    start = rows.snaps.orders["ts"].min()
    dates = [d for d in training_dates(pd.Timestamp(apply_at) - days * DAY, cfg.snapshots, cfg.snapshot_step_days)
             if d > start + cfg.snapshot_step_days * DAY]
    if not dates:
        raise ValueError(f"no training date for a {days}-day value model applied at {apply_at}: the orders start {start}")
    Xs, ys = zip(*(rows.labelled(d, days) for d in dates))
    X, y = pd.concat(Xs), pd.concat(ys)
    held = held_out(X.index, cfg.holdout_share, cfg.seed)
    model = ValueModel(_params(cfg), cfg.seed, cfg.lgbm.max_rounds, cfg.lgbm.early_stopping_rounds)
    return model.fit(X[~held], y[~held], X[held], y[held]), dates


@dataclass
class ValuePrediction:
    """Expected spend over ``days`` at ``at`` for the rows of ``rows.features(at, days)``: the horizon's own model
    (``own``, whose parts give P(buys)) joined, for the main horizon, by models over ``cfg.label_lengths`` trained on
    their own latest complete windows (a shorter question learns from more recent rows), each scaled to ``days``;
    the CLV is the geometric mean of (1 + spend) less 1. Lengths the history cannot hold are named in ``skipped``."""

    spend: np.ndarray
    p_buy: np.ndarray  # the own model's P(any purchase in the horizon)
    own: ValueModel
    members: dict  # days -> ValueModel, the own one included
    train_at: list
    skipped: dict

    @classmethod
    def fit(cls, rows: ValueRows, cfg: ValueConfig, at, days: int) -> "ValuePrediction":
        X = rows.features(at, days)
        own, dates = fit_value_model(rows, cfg, at, days)
        parts = own.parts(X)
        members, skipped, logs = {days: own}, {}, [np.log1p((parts["p_buy"] * parts["spend_if_buying"]).to_numpy())]
        lengths = [d for d in cfg.label_lengths if d != days] if days == cfg.horizon_days else []
        for d in lengths:
            try:
                model, _ = fit_value_model(rows, cfg, at, d)
            except ValueError as e:
                skipped[f"{d}d"] = str(e)
                continue
            members[d] = model
            logs.append(np.log1p(model.predict(rows.features(at, d).reindex(X.index)) * days / d))
        return cls(np.expm1(np.mean(logs, axis=0)), parts["p_buy"].to_numpy(), own, dict(sorted(members.items())), dates,
                   skipped)


@dataclass
class ValueEvaluation:
    days: int
    test_at: pd.Timestamp
    train_at: list
    actual: np.ndarray
    predictions: dict  # "model" and each peer -> (n,) expected spend
    model: ValueModel
    notes: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        out = value_metrics(self.actual, self.predictions["model"])
        peers = {name: value_metrics(self.actual, p) for name, p in self.predictions.items() if name != "model"}
        best = max(peers, key=lambda n: (peers[n]["norm_gini"], peers[n]["spearman"]))
        out.update({"peers": peers, "best_peer": best,
                    "beats_best_peer": {k: bool(out[k] >= max(p[k] for p in peers.values())) for k in
                                        ("spearman", "norm_gini", "top10_capture", "top20_capture")},
                    "days": self.days, "cutoff": str(self.test_at), "train_at": [str(t) for t in self.train_at],
                    "customers": int(len(self.actual)), "zero_share": float(np.mean(self.actual == 0)),
                    "iterations": self.model.iterations_, **self.notes})
        return out


def evaluate_value(rows: ValueRows, cfg: ValueConfig, days: int) -> ValueEvaluation:
    """The protocol for one horizon: cutoff = end - days."""
    test_at = rows.snaps.end - days * DAY
    X, actual = rows.labelled(test_at, days)
    ours = ValuePrediction.fit(rows, cfg, test_at, days)
    preds = {"model": ours.spend} | peer_predictions(rows.snaps.orders, X.index, test_at, days, cfg.penalizer)
    notes = {"label_lengths": list(ours.members)} | ({"label_lengths_skipped": ours.skipped} if ours.skipped else {})
    return ValueEvaluation(days, test_at, ours.train_at, actual.to_numpy(), preds, ours.own, notes)


def horizons(snaps: Snapshots, cfg: ValueConfig) -> tuple[list[int], dict]:
    """Horizons the history allows (training labels need two horizons before the end), and why others were skipped."""
    span = (snaps.end - snaps.orders["ts"].min()) / DAY
    keep, skipped = [], {}
    for days in dict.fromkeys((cfg.horizon_days, cfg.long_horizon_days)):
        if span >= 2 * days + cfg.snapshot_step_days:
            keep.append(days)
        else:
            skipped[str(days)] = f"history of {span:.0f} days is shorter than two {days}-day horizons and a month"
    return keep, skipped


@dataclass
class ValueResult:
    """What ``shoprec train`` gets: metrics (the ``clv`` section), the scores per customer at the
    end date, the production models and the marketers' report."""

    metrics: dict
    scores: pd.DataFrame  # index user_id: clv_<h>d, p_buy_<h>d, stage, persona
    models: dict
    report: dict
    evaluation: ValueEvaluation | None


def train_value(snaps: Snapshots, cfg: ValueConfig | None = None, segments: pd.Series | None = None) -> ValueResult:
    """Evaluate every horizon the history allows, fit production models, score everyone at the end.

    ``segments`` (user_id -> RFM segment) splits the funnel and the CLV distribution by segment."""
    cfg = cfg or ValueConfig()
    rows = ValueRows(snaps, cfg)
    keep, skipped = horizons(snaps, cfg)
    if cfg.horizon_days not in keep:
        raise ValueError(f"customer value: {skipped[str(cfg.horizon_days)]}")
    evals = {d: evaluate_value(rows, cfg, d) for d in keep}
    main = evals[cfg.horizon_days]
    metrics = {k: v for k, v in main.metrics().items()}
    metrics["horizons"] = {str(d): {k: e.metrics()[k] for k in (*KEYS, "best_peer")} for d, e in evals.items()}
    metrics["skipped_horizons"] = skipped

    X = snaps.features(snaps.end)
    scores = pd.DataFrame(index=X.index)
    models = {}
    for d in keep:
        ours = ValuePrediction.fit(rows, cfg, snaps.end, d)
        scores[f"clv_{d}d"] = ours.spend
        scores[f"p_buy_{d}d"] = ours.p_buy
        models[f"value_{d}d"] = ours.own
        models.update({f"value_{d}d_over_{m}d": model for m, model in ours.members.items() if m != d})
    scores["stage"] = lifecycle.stages(snaps.orders, snaps.end, cfg.lifecycle).reindex(X.index).astype(str)
    personas = Personas(cfg.persona_k, cfg.seed).fit(X)
    scores["persona"] = personas.labels_.reindex(X.index).astype(int)
    names = {d["persona"]: d["description"] for d in personas.describe()}
    scores["persona_description"] = scores["persona"].map(names)
    report = marketing_report(snaps, cfg, scores, personas, segments)
    metrics["personas"] = {"k": personas.k_, "silhouette": personas.silhouette_,
                           "silhouettes": {str(k): v for k, v in personas.silhouettes_.items()}}
    return ValueResult(metrics, scores, models, report, main)


def marketing_report(snaps: Snapshots, cfg: ValueConfig, scores: pd.DataFrame, personas: Personas,
                     segments: pd.Series | None) -> dict:
    """Tables for the marketers' dashboard and ``shoprec segments`` (plain JSON)."""
    flows = lifecycle.transitions(snaps.orders, snaps.end, cfg.lifecycle)
    matrix = lifecycle.transition_matrix(flows, cfg.lifecycle)
    latest = flows[flows["month"] == flows["month"].max()] if len(flows) else flows
    clv = scores[f"clv_{cfg.horizon_days}d"]
    by = segments.reindex(scores.index).astype(str) if segments is not None else scores["stage"]
    dist = clv.groupby(by).describe(percentiles=[0.25, 0.5, 0.75, 0.9])[["count", "mean", "25%", "50%", "75%", "90%", "max"]]
    return {
        "scored_at": str(snaps.end), "horizon_days": cfg.horizon_days,
        "stages": [{"name": s.name, "description": s.description} for s in cfg.lifecycle.stages],
        "stage_counts": scores["stage"].value_counts().to_dict(),
        "transition_matrix": {"rows": list(matrix.index), "columns": list(matrix.columns),
                              "share": matrix.round(4).to_numpy().tolist()},
        "latest_flows": latest.to_dict("records"),
        "cohorts": lifecycle.cohorts(snaps.orders, snaps.end).round(4).to_dict("records"),
        "funnel": lifecycle.funnel(snaps.events, snaps.end, segments).to_dict("records"),
        "personas": personas.describe(),
        "clv_by_segment": {str(k): {c: round(float(v), 2) for c, v in row.items()} for k, row in dist.iterrows()},
        "clv_by_stage": {str(k): round(float(v), 2) for k, v in clv.groupby(scores["stage"]).mean().items()},
    }


def with_value(bundle, result: ValueResult, horizon_days: int, kept: pd.Series | None = None) -> None:
    """Put customer value into a propensity bundle: ``expected_spend`` becomes the model's CLV over the churn horizon
    times the share of their spend the customer kept so far (``kept``, by user id: not returned or cancelled; 1 where
    not given), so value at risk = churn probability × the spend expected to stay. A customer who cancelled all they
    ordered risks nothing, whatever the gross order they placed. The CLV, stage and persona columns join the scores,
    the models and the report join the bundle."""
    from training.propensity.bundle import rank

    s = bundle.scores.set_index("user_id", drop=False)
    v = result.scores.reindex(s.index.astype(str))
    clv = v[f"clv_{horizon_days}d"]
    if clv.isna().any():
        raise ValueError(f"{int(clv.isna().sum())} scored customers have no customer value")
    share = np.ones(len(s)) if kept is None else kept.reindex(s.index.astype(str)).fillna(1.0).clip(0.0, 1.0).to_numpy()
    s["expected_spend"] = clv.to_numpy() * share
    s["value_at_risk"] = s["churn_probability"].to_numpy() * s["expected_spend"].to_numpy()
    for col in v.columns:
        s[col] = v[col].to_numpy()
    # one answer to "will they buy in the horizon" wherever a marketer reads it: the churn model's (the protocol
    # evaluates it), not the value model's own first part, which could say 0.28 where churn said 0.98
    s[f"p_buy_{horizon_days}d"] = 1.0 - s["churn_probability"].to_numpy()
    bundle.scores = rank(s.reset_index(drop=True))
    bundle.__post_init__()  # re-index the lookup columns
    bundle.models.update(result.models)
    bundle.meta["value"] = result.report
    bundle.meta["value_columns"] = list(v.columns)
