"""``train_propensity``: evaluate, fit, explain, log to MLflow, register and maybe promote the
churn and conversion models as one bundle (``shoprec-propensity``).

One registered bundle holds both models because they are scored from the same features at
the same date and served from one table: a version is one consistent list for marketers.
Whether it becomes the shop's champion is decided on a validation period before the test
period (training/propensity/gate.py); the test figures only report.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

from features.user_features import rfm_segments
from training import tracking
from training.propensity import gate
from training.propensity.bundle import PropensityBundle, score_table
from training.propensity.config import TARGETS, PropensityConfig
from training.propensity.dataset import Snapshots
from training.propensity.evaluate import evaluate_target, fit_model
from training.propensity.reasons import reasons

PROTOCOL = "propensity-v1"  # bump when the protocol changes: old scores stop comparing
MODEL_NAME = "shoprec-propensity"
PROGRESS_STEPS = 6  # calls to ``progress`` per run


def _clean(value):
    """JSON-safe metrics: NaN -> None, recursively."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    """MLflow metric names (``churn.baseline_recency.lift_at_10pct``) for every number."""
    out = {}
    for k, v in metrics.items():
        name = prefix + k.replace("@", "_at_").replace("%", "pct")
        if isinstance(v, dict):
            out.update(_flat(v, name + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and not math.isnan(v):
            out[name] = float(v)
    return out


def evaluate(snaps: Snapshots, cfg: PropensityConfig, truth_dir: Path | None = None) -> dict:
    """Both targets' test evaluations, by target."""
    return {t: evaluate_target(snaps, t, cfg, truth_dir) for t in TARGETS}


def mean_test_auc(evals: dict) -> float:
    """Mean test ROC AUC of the two targets, rounded as the registry tag stores it (reported, never compared)."""
    return round(float(sum(evals[t].metrics()["roc_auc"] for t in TARGETS) / len(TARGETS)), 6)


def production_bundle(snaps: Snapshots, cfg: PropensityConfig, meta: dict) -> PropensityBundle:
    """Models trained on the latest complete window, every customer scored at ``end``."""
    X = snaps.features(snaps.end)
    models = {t: fit_model(snaps, t, cfg, snaps.end)[0] for t in TARGETS}
    p = {t: models[t].predict_proba(X) for t in TARGETS}
    why = reasons(models["churn"].contributions(X), X, cfg.top_reasons)
    scores = score_table(X, rfm_segments(X), p["churn"], p["conversion"], why, cfg.horizon_days)
    meta = meta | {"scored_at": str(snaps.end), "customers": len(scores), "horizon_days": cfg.horizon_days,
                   "window_days": cfg.window_days, "features": list(X.columns),
                   "best_iteration": {t: models[t].best_iteration_ for t in TARGETS}}
    return PropensityBundle(scores, meta, models)


def train_propensity(canonical, project_dir: Path, config: PropensityConfig | None = None, truth_dir: Path | None = None,
                     progress: Callable[[str], None] = print, bundle_out: Path | None = None, shop: str = "shop") -> dict:
    """Evaluate (PRODUCT.md protocol), fit the production models, log and register the bundle.

    Returns {"churn": {...}, "conversion": {...}, "propensity": {model_version, champion, ...}};
    ``bundle_out`` also keeps a local copy of the bundle.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.pipeline import data_digest

    cfg = config or PropensityConfig()
    started = time.perf_counter()
    tracking.setup(project_dir)
    snaps = Snapshots(canonical, cfg.end)
    digest = data_digest({"events": canonical.events, "orders": canonical.orders})
    eval_key = gate.eval_key(PROTOCOL, digest, snaps.end, cfg)

    progress("propensity: evaluating churn and conversion")
    evals = evaluate(snaps, cfg, truth_dir)
    metrics = {t: evals[t].metrics() for t in TARGETS}
    score = mean_test_auc(evals)
    progress("propensity: the champion gate, on the validation period")
    try:
        validation = gate.validate(snaps, cfg)
    except ValueError as e:  # less than three label lengths of history
        validation = str(e)
    champion = tracking.current_champion(MODEL_NAME, shop)
    decision = gate.decide(snaps, cfg, eval_key, champion, validation)
    if not isinstance(validation, str):
        decision["validation_roc_auc"] = validation.roc_auc()
    promote, reason = decision["promoted"], decision["reason"]
    value, value_skipped = _customer_value(snaps, cfg, progress)  # CLV, stages, personas (training/value/)

    progress("propensity: fitting the production models")
    with mlflow.start_run(run_name="propensity") as run:
        run_id = run.info.run_id
        bundle = production_bundle(snaps, cfg, {"run_id": run_id, "data_digest": digest, "eval_key": eval_key, "shop": shop,
                                                "test": {t: _clean({k: metrics[t][k] for k in ("roc_auc", "pr_auc", "brier")})
                                                         for t in TARGETS},
                                                "config": cfg.model_dump(mode="json")})
        if value is not None:
            from training.propensity.bundle import kept_share
            from training.value.train import with_value

            # value at risk = churn probability x predicted spend x the share of spend the customer kept
            with_value(bundle, value, cfg.horizon_days, kept_share(snaps.features(snaps.end)))
        progress("propensity: logging to MLflow")
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).resolve().parents[2]), "data_digest": digest,
                         "eval_key": eval_key, "kind": "propensity", "shop": shop})
        mlflow.log_params({"horizon_days": cfg.horizon_days, "window_days": cfg.window_days, "snapshots": cfg.snapshots,
                           "calibration": cfg.calibration, "holdout_share": cfg.holdout_share, "seed": cfg.seed,
                           "linear_c": cfg.linear_c, "label_lengths": ",".join(map(str, cfg.label_lengths)), "end": str(snaps.end), **{f"lgbm.{k}": v for k, v in cfg.lgbm.model_dump().items()}})
        mlflow.log_metrics(_flat(metrics) | _flat(decision.get("validation_roc_auc", {}), "validation.")
                           | {"test_score": score, "customers_scored": float(len(bundle.scores))})
        mlflow.log_dict(cfg.model_dump(mode="json"), "propensity_config.json")
        mlflow.log_dict(_clean(metrics), "propensity_metrics.json")
        _log_figures(mlflow, list(evals.values()))
        if value is not None:
            from training.value.plots import gains_chart

            mlflow.log_metrics(_flat(_clean({k: v for k, v in value.metrics.items() if k != "horizons"}), "clv."))
            mlflow.log_dict(_clean(value.metrics), "clv_metrics.json")
            mlflow.log_dict(_clean(value.report), "customer_value_report.json")
            mlflow.log_figure(gains_chart(value.evaluation), "plots/clv_gains.png")
        with tempfile.TemporaryDirectory() as tmp:
            bundle.save(Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), artifact_path="propensity_bundle")
        client = MlflowClient()
        try:
            client.get_registered_model(MODEL_NAME)
        except MlflowException:
            client.create_registered_model(MODEL_NAME, description="shoprec churn + conversion propensity bundles "
                                           "(LightGBM text + JSON, scores as Parquet; no pickle)")
        version = tracking.register(run_id, "propensity_bundle", {
            "eval_key": eval_key, "test_score": f"{score:.6f}", "data_digest": digest, "shop": shop,
            **({} if isinstance(validation, str) else {"validation_score": f"{validation.score():.6f}"}),
            "test_churn_roc_auc": f"{metrics['churn']['roc_auc']:.6f}",
            "test_conversion_roc_auc": f"{metrics['conversion']['roc_auc']:.6f}",
            "candidate": json.dumps(cfg.model_dump(mode="json"))}, name=MODEL_NAME)
        mlflow.set_tag("model_version", version)
        if promote:
            tracking.move_alias(version, reason, champion, run_id, name=MODEL_NAME, shop=shop)
        mlflow.set_tag("champion_decision", reason)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
    if bundle_out is not None:
        bundle.meta["model_version"] = version
        bundle.save(Path(bundle_out))
    progress("propensity: done")
    out = _clean(metrics)
    out["clv"] = _clean(value.metrics) if value is not None else {"skipped": value_skipped}
    out["propensity"] = {"model_version": version, "run_id": run_id, "registered_model": MODEL_NAME,
                         "score": score, "scored_at": str(snaps.end), "customers": len(bundle.scores),
                         "champion": _clean(decision)}
    return out


def _customer_value(snaps: Snapshots, cfg: PropensityConfig, progress):
    """(training/value/'s result at the churn horizon, "") or (None, why) when the history is too
    short for its protocol."""
    from training.value.config import ValueConfig
    from training.value.train import train_value

    progress("propensity: customer value, stages and personas")
    X = snaps.features(snaps.end)
    try:
        return train_value(snaps, ValueConfig(horizon_days=cfg.horizon_days), rfm_segments(X)["segment"]), ""
    except ValueError as e:
        return None, str(e)


def _log_figures(mlflow, evals) -> None:
    from training.propensity import plots

    for name, make in (("calibration", plots.calibration_curve), ("gains", plots.gains_chart),
                       ("feature_importance", plots.importance_chart)):
        mlflow.log_figure(make(evals), f"plots/{name}.png")
