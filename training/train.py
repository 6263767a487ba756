"""``shoprec train``: evaluate, fit, log to MLflow, register, and promote within the shop's lineage.

The champion alias of a lineage (``champion-<shop>``) moves on validation evidence only
(training/selection.py): to a challenger recipe that beats the champion's recipe beyond
noise, or to the champion's recipe refitted on new data. The test period only reports.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from features.errors import ShortHistory
from training import tracking
from training.config import Candidate, TrainConfig
from training.pipeline import OracleFactory, data_digest, evaluate, fit_bundle, metrics_report
from training.propensity.config import PropensityConfig
from training.selection import same_recipe
from training.report_plots import log_recommender_report

PROTOCOL = "discovery-v2"  # bump when the evaluation protocol changes: old scores stop comparing


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


def promotion(champion: tracking.Champion | None, chosen: Candidate, eval_key: str, gate: dict) -> tuple[bool, str]:
    """Whether the new version becomes its lineage's champion, from validation evidence only."""
    if champion is None:
        return True, gate.get("reason", "no champion for this shop yet")
    if champion.eval_key == eval_key and champion.candidate and same_recipe(chosen, Candidate.model_validate(champion.candidate)):
        return False, f"same data and same recipe as champion v{champion.version}: nothing new to serve"
    if gate.get("keep_incumbent"):
        return True, f"{gate['reason']}, refitted on the new data (was v{champion.version})"
    return True, f"{gate['reason']} (was v{champion.version})"


def train(
    canonical,
    config: TrainConfig,
    project_dir: Path,
    shop: str,
    truth_dir: Path | None = None,
    metrics_out: Path | None = None,
    ingest_report: dict | None = None,
    progress: Callable[[str], None] = print,
) -> TrainOutcome:
    """Search and choose on validation, report on test, fit the chosen recipe on all data,
    track and register it in ``shop``'s lineage, and move that lineage's champion alias."""
    import mlflow

    tracking.check_shop(shop)
    tracking.setup(project_dir)
    events, orders = canonical.events, canonical.orders
    digest = data_digest({"events": events, "orders": orders})
    eval_key = f"{PROTOCOL}:{digest}:test_days={config.test_days:g}:k={config.k}"
    champion = tracking.current_champion(shop=shop)
    incumbent = Candidate.model_validate(champion.candidate) if champion is not None and champion.candidate else None

    started = time.perf_counter()
    oracle = synthetic_oracle(truth_dir, config.test_days) if truth_dir else None
    try:
        evaluation = evaluate(config, events, orders, incumbent=incumbent, oracle=oracle, progress=progress,
                              engine=getattr(canonical, "engine", None))
    except ShortHistory:  # below the protocol's minimum: the fallback recipe on all data, no test figure
        from training.small_shop import train_small_shop

        return train_small_shop(canonical, config, project_dir, shop, champion, eval_key, digest, truth_dir=truth_dir,
                                metrics_out=metrics_out, ingest_report=ingest_report, progress=progress)
    report = metrics_report(evaluation, config)
    chosen = evaluation.recipe
    k = config.k
    score = round(evaluation.score(evaluation.chosen, k), 6)  # test: reported, never used to decide
    val_score = round(evaluation.validation[evaluation.chosen][f"ndcg@{k}"], 6)
    promote, reason = promotion(champion, chosen, eval_key, evaluation.gate)

    with mlflow.start_run(run_name=f"train-{shop}-{evaluation.chosen}") as run:
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).resolve().parents[1]),
                         "data_digest": digest, "eval_key": eval_key, "chosen": evaluation.chosen, "shop": shop})
        mlflow.log_params({"test_days": config.test_days, "k": k, "chosen": evaluation.chosen, "shop": shop,
                           "n_trials": len(evaluation.validation),
                           "budget_minutes": config.search.budget_minutes if config.search else 0,
                           "rows_events": 0 if events is None else len(events),
                           "rows_orders": 0 if orders is None else len(orders)})
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        if ingest_report:
            mlflow.log_dict(ingest_report, "ingest_report.json")
        for name, m in evaluation.test.items():
            mlflow.log_metrics({f"test.{name}.ndcg_at_{k}": m[f"ndcg@{k}"], f"test.{name}.recall_at_{k}": m[f"recall@{k}"]})
        for name, m in evaluation.validation.items():
            mlflow.log_metrics({f"val.{name}.ndcg_at_{k}": m[f"ndcg@{k}"]})
        mlflow.log_metrics({f"ndcg_at_{k}": score, f"val_ndcg_at_{k}": val_score,
                            f"recall_at_{k}": report["recommend"][f"recall@{k}"]}
                           | {f"served.{key.replace('@', '_at_')}": v for key, v in evaluation.served.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}
                           | ({f"session_ndcg_at_{k}": evaluation.session[f"ndcg@{k}"]}
                              if f"ndcg@{k}" in evaluation.session else {}))
        mlflow.log_table(_peer_table(report["recommend"], k), "peers.json")
        if evaluation.oracle:
            mlflow.log_metric(f"oracle.ndcg_at_{k}", evaluation.oracle[f"ndcg@{k}"])
        mlflow.log_dict(report, "metrics.json")
        ranked = dict(sorted(evaluation.test_ranked.items(), key=lambda kv: kv[0] != evaluation.chosen))  # chosen first
        log_recommender_report(mlflow, evaluation.test_split, ranked, k)  # plots: NDCG by activity, coverage

        progress(f"fitting {evaluation.chosen} on all data")
        bundle = fit_bundle(chosen, config, events, orders,
                            {"run_id": run.info.run_id, "data_digest": digest, "eval_key": eval_key, "shop": shop,
                             "test_ndcg@10": score, "validation_ndcg@10": val_score,
                             "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                            items=canonical.items, engine=getattr(canonical, "engine", None))
        with tempfile.TemporaryDirectory() as tmp:
            bundle.save(Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), artifact_path="bundle")
        version = tracking.register(run.info.run_id, "bundle", {
            "eval_key": eval_key, "test_ndcg": f"{score:.6f}", "validation_ndcg": f"{val_score:.6f}", "shop": shop,
            "candidate": json.dumps(chosen.model_dump(mode="json")), "data_digest": digest})
        mlflow.set_tag("model_version", version)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        if promote:
            tracking.move_alias(version, reason, champion, run.info.run_id, shop=shop)
        mlflow.set_tag("champion_decision", reason)
        run_id = run.info.run_id

    report["recommend"]["model_version"] = version
    report["recommend"]["shop"] = shop
    report["recommend"]["champion"] = {"promoted": promote, "reason": reason,
                                       "previous": champion.version if champion else None}
    return finish(canonical, project_dir, shop, truth_dir, metrics_out, progress,
                  TrainOutcome(report, run_id, version, promote, reason), config.propensity)


def finish(canonical, project_dir: Path, shop: str, truth_dir: Path | None, metrics_out: Path | None,
           progress: Callable[[str], None], outcome: TrainOutcome, propensity: PropensityConfig | None = None) -> TrainOutcome:
    """The rest of every training run: the churn, conversion and customer-value models where the
    orders allow, then the metrics file."""
    if canonical.orders is not None and len(canonical.orders):
        from training.propensity.train import train_propensity

        try:
            outcome.metrics.update(train_propensity(canonical, project_dir, propensity, shop=shop, truth_dir=truth_dir,
                                                    progress=progress))
        except ValueError as e:  # e.g. less than two horizons of order history
            h = (propensity or PropensityConfig()).horizon_days
            ts = canonical.orders["ts"]
            need = (f"they learn from customers scored two churn horizons ({2 * h} days) before the end, and the "
                    f"orders span {(ts.max() - ts.min()).days} days: {e}")
            progress(f"churn and conversion models skipped: {need}")
            outcome.metrics["propensity"] = {"skipped": need}
    if metrics_out:
        atomic_write_json(metrics_out, outcome.metrics)
    return outcome


def _peer_table(rec: dict, k: int) -> dict:
    """The run's table in MLflow: the chosen recipe next to every peer, validation and test."""
    names = [rec["model"]] + sorted(rec["peers"])
    rows = {name: rec["candidates"].get(name) or rec["peers"].get(name) for name in names}
    return {"recipe": names,
            "role": ["chosen"] + ["peer"] * (len(names) - 1),
            f"validation_ndcg@{k}": [rows[n]["validation"][f"ndcg@{k}"] for n in names],
            f"test_ndcg@{k}": [(rows[n]["test"] or {}).get(f"ndcg@{k}") for n in names]}
