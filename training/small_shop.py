"""The model of a shop too small for the evaluation protocol: the fallback recipe, without evidence.

Below the protocol's minimum (training/history.py) no recipe can be chosen on validation or
reported on test, so ``shoprec train`` fits what the data supports on all of it: the config's
fallback recipe (trending, a 14-day half-life; on a short history that is popularity), the same
recipe unknown shoppers get. It is registered in the shop's lineage with no test figure, its
metrics say why, and it becomes the champion only where no model chosen on validation is one.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable

from features.interactions import purchases
from training import tracking
from training.config import TrainConfig
from training.history import measure, require_trainable, short_history
from training.pipeline import fit_bundle
from training.train import TrainOutcome, finish

TAG = "small_shop"  # on the registered version: why it is a fallback


def promotion(champion: tracking.Champion | None, eval_key: str) -> tuple[bool, str]:
    """A fallback replaces no champion but another fallback (on new data)."""
    if champion is None:
        return True, "no champion for this shop yet (a fallback: too little history to choose on validation)"
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(tracking.MODEL_NAME, champion.version).tags or {}
    if TAG not in tags:
        return False, (f"champion v{champion.version} was chosen on validation; a fallback fitted without "
                       "evidence does not replace it")
    if champion.eval_key == eval_key:
        return False, f"same data as champion v{champion.version} (also a fallback): nothing new to serve"
    return True, f"the fallback refitted on new data (was v{champion.version}, also a fallback)"


def train_small_shop(
    canonical,
    config: TrainConfig,
    project_dir: Path,
    shop: str,
    champion: tracking.Champion | None,
    eval_key: str,
    digest: str,
    truth_dir: Path | None = None,
    metrics_out: Path | None = None,
    ingest_report: dict | None = None,
    progress: Callable[[str], None] = print,
) -> TrainOutcome:
    """Fit, log, register and maybe promote the fallback recipe on all data; the propensity
    models too where the orders allow. Raises ``InputError`` when no model can learn at all."""
    import mlflow

    events, orders = canonical.events, canonical.orders
    bought = purchases(events, orders)
    require_trainable(bought, events, orders)
    shortfall = short_history(bought, config.test_days)
    history = measure(bought, config.test_days)
    recipe = config.fallback
    why = {"reason": shortfall.problem, "remedy": shortfall.remedy, "minimum_days": 2 * config.test_days,
           "history_days": round(history.days, 2), "purchases": history.purchases, "shoppers": history.shoppers,
           "items": history.items,
           "periods": [{"name": p.name, "cutoff": None if p.cutoff is None else str(p.cutoff),
                        "purchases_before": p.purchases_before, "shoppers_buying_new_after": p.shoppers_after}
                       for p in history.periods]}
    promote, reason = promotion(champion, eval_key)
    started = time.perf_counter()
    progress(f"too little history for the protocol: fitting the fallback {recipe.name} on all data (no test figure)")
    with mlflow.start_run(run_name=f"train-{shop}-{recipe.name}-fallback") as run:
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).resolve().parents[1]), "data_digest": digest,
                         "eval_key": eval_key, "chosen": recipe.name, "shop": shop, TAG: shortfall.problem})
        mlflow.log_params({"test_days": config.test_days, "k": config.k, "chosen": recipe.name, "shop": shop,
                           "rows_events": 0 if events is None else len(events),
                           "rows_orders": 0 if orders is None else len(orders)})
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        if ingest_report:
            mlflow.log_dict(ingest_report, "ingest_report.json")
        bundle = fit_bundle(recipe, config, events, orders,
                            {"run_id": run.info.run_id, "data_digest": digest, "eval_key": eval_key, "shop": shop,
                             "test_ndcg@10": None, "validation_ndcg@10": None, TAG: shortfall.problem,
                             "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                            items=canonical.items)
        with tempfile.TemporaryDirectory() as tmp:
            bundle.save(Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), artifact_path="bundle")
        version = tracking.register(run.info.run_id, "bundle", {
            "eval_key": eval_key, "shop": shop, "candidate": json.dumps(recipe.model_dump(mode="json")),
            "data_digest": digest, TAG: shortfall.problem[:4000]})
        mlflow.set_tag("model_version", version)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        if promote:
            tracking.move_alias(version, reason, champion, run.info.run_id, shop=shop)
        mlflow.set_tag("champion_decision", reason)
        report = {"recommend": {
            "model": recipe.name, "recipe": recipe.model_dump(mode="json"), "chosen_on": None, "small_shop": why,
            f"ndcg@{config.k}": None, f"recall@{config.k}": None, f"validation_ndcg@{config.k}": None,
            f"served_ndcg@{config.k}": None, f"session_ndcg@{config.k}": None, "best_peer": None,
            "baseline_popularity": None, "peers": {}, "test_users": 0, "model_version": version, "shop": shop,
            "champion": {"promoted": promote, "reason": reason, "previous": champion.version if champion else None}}}
        mlflow.log_dict(report, "metrics.json")
        run_id = run.info.run_id
    return finish(canonical, project_dir, shop, truth_dir, metrics_out, progress,
                  TrainOutcome(report, run_id, version, promote, reason), config.propensity)
