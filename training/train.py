"""``shoprec train``: ingest, evaluate, fit, log to MLflow, register and maybe promote."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from training import tracking
from training.config import Candidate, TrainConfig
from training.pipeline import OracleFactory, data_digest, evaluate_candidates, fit_bundle, metrics_report
from training.report_plots import log_recommender_report

PROTOCOL = "discovery-v1"  # bump when the evaluation protocol changes: old scores stop comparing


@dataclass
class TrainOutcome:
    metrics: dict
    run_id: str
    version: str
    promoted: bool
    reason: str


def synthetic_oracle(truth_dir: Path, test_days: float) -> OracleFactory:
    """Oracle scorer from the synthetic shop's truth: true preference over the test period after the cutoff."""
    from features.synthetic import load_truth

    truth = load_truth(truth_dir)

    def factory(split):
        users = split.view.users.ids
        items = split.view.items.ids
        return lambda rows: truth.preference(users[rows], items, at=split.cutoff, horizon_days=test_days)

    return factory


def atomic_write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)  # a failed write leaves the previous file and no temp beside it
        raise


def train(
    canonical,
    config: TrainConfig,
    project_dir: Path,
    truth_dir: Path | None = None,
    metrics_out: Path | None = None,
    ingest_report: dict | None = None,
    progress: Callable[[str], None] = print,
) -> TrainOutcome:
    """Evaluate every candidate, fit the chosen one on all data, track and register it."""
    import mlflow

    tracking.setup(project_dir)
    events, orders = canonical.events, canonical.orders
    digest = data_digest({"events": events, "orders": orders})
    eval_key = f"{PROTOCOL}:{digest}:test_days={config.test_days:g}:k={config.k}"
    champion = tracking.current_champion()
    extra = []
    if champion is not None and champion.eval_key != eval_key and champion.candidate:
        recipe = Candidate.model_validate(champion.candidate)
        extra = [recipe.model_copy(update={"name": f"champion.{recipe.name}"})]

    started = time.perf_counter()
    oracle = synthetic_oracle(truth_dir, config.test_days) if truth_dir else None
    evaluation = evaluate_candidates(config, events, orders, oracle=oracle, extra=extra, progress=progress)
    report = metrics_report(evaluation, config)
    chosen = config.candidate(evaluation.chosen)
    score = round(evaluation.score(chosen.name, config.k), 6)  # as stored in the registry tag
    rescored = round(evaluation.score(extra[0].name, config.k), 6) if extra else None
    promote, reason = tracking.decide(score, eval_key, champion, rescored)

    with mlflow.start_run(run_name=f"train-{chosen.name}") as run:
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).resolve().parents[1]),
                         "data_digest": digest, "eval_key": eval_key, "chosen": chosen.name})
        mlflow.log_params({"test_days": config.test_days, "k": config.k, "chosen": chosen.name,
                           "n_candidates": len(config.candidates),
                           "rows_events": 0 if events is None else len(events),
                           "rows_orders": 0 if orders is None else len(orders)})
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        if ingest_report:
            mlflow.log_dict(ingest_report, "ingest_report.json")
        for name, m in evaluation.test.items():
            mlflow.log_metrics({f"test.{name}.ndcg_at_{config.k}": m[f"ndcg@{config.k}"],
                                f"test.{name}.recall_at_{config.k}": m[f"recall@{config.k}"]})
        for name, m in evaluation.validation.items():
            mlflow.log_metrics({f"val.{name}.ndcg_at_{config.k}": m[f"ndcg@{config.k}"]})
        mlflow.log_metrics({f"ndcg_at_{config.k}": score, f"recall_at_{config.k}": report["recommend"][f"recall@{config.k}"]})
        if evaluation.oracle:
            mlflow.log_metric(f"oracle.ndcg_at_{config.k}", evaluation.oracle[f"ndcg@{config.k}"])
        mlflow.log_dict(report, "metrics.json")
        log_recommender_report(mlflow, chosen, config, events, orders)  # plots: NDCG by activity, coverage

        progress(f"fitting {chosen.name} on all data")
        bundle = fit_bundle(chosen, config, events, orders,
                            {"run_id": run.info.run_id, "data_digest": digest, "eval_key": eval_key,
                             "test_ndcg@10": score, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                            items=canonical.items)
        with tempfile.TemporaryDirectory() as tmp:
            bundle.save(Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), artifact_path="bundle")
        version = tracking.register(run.info.run_id, "bundle", {
            "eval_key": eval_key, "test_ndcg": f"{score:.6f}",
            "candidate": json.dumps(chosen.model_dump(mode="json")), "data_digest": digest})
        mlflow.set_tag("model_version", version)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        if promote:
            tracking.move_alias(version, reason, champion, run.info.run_id)
        mlflow.set_tag("champion_decision", reason)
        run_id = run.info.run_id

    report["recommend"]["model_version"] = version
    report["recommend"]["champion"] = {"promoted": promote, "reason": reason}
    if orders is not None and len(orders):
        from training.propensity.train import train_propensity

        try:
            report.update(train_propensity(canonical, project_dir, truth_dir=truth_dir, progress=progress))
        except ValueError as e:  # e.g. less than two horizons of order history
            progress(f"churn and conversion models skipped: {e}")
            report["propensity"] = {"skipped": str(e)}
    if metrics_out:
        atomic_write_json(metrics_out, report)
    return TrainOutcome(report, run_id, version, promote, reason)
