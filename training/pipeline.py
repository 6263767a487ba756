"""Choose, test and fit the recommender: validation picks, the test period only reports.

    data ──► validation split (cutoff = test cutoff - test_days) ──► every candidate scored ──► best by val NDCG
         └─► test split (cutoff = last purchase - test_days) ──────► every candidate reported (not used to choose)
         └─► all data ──► chosen candidate + fallback fitted ──► ModelBundle
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from features.cooccurrence import association_rules, baskets
from features.interactions import TrainingView, training_view
from training.bundle import ModelBundle
from training.config import Candidate, TrainConfig
from training.evaluate import ScoreFn, Split, personal_frequency, score_buy_again, score_discovery, time_split
from training.recommenders import Recommender, fit_model

OracleFactory = Callable[[Split], ScoreFn]  # builds an oracle scorer for a split's users and items


def fit_candidate(candidate: Candidate, view: TrainingView) -> Recommender:
    return fit_model(candidate.model, candidate.interactions, view)


@dataclass
class Evaluation:
    validation: dict[str, dict] = field(default_factory=dict)  # candidate -> metrics on the validation split
    test: dict[str, dict] = field(default_factory=dict)  # candidate -> metrics on the test split
    buy_again: dict[str, dict] = field(default_factory=dict)
    splits: dict[str, dict] = field(default_factory=dict)
    chosen: str = ""
    oracle: dict | None = None

    def score(self, name: str, k: int = 10) -> float:
        return self.test[name][f"ndcg@{k}"]


def evaluate_candidates(
    config: TrainConfig,
    events: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    oracle: OracleFactory | None = None,
    extra: list[Candidate] = (),
    progress: Callable[[str], None] = lambda msg: None,
) -> Evaluation:
    """Score every candidate on validation and test; choose on validation only."""
    k = config.k
    test_split = time_split(events, orders, config.test_days)
    val_split = time_split(test_split.view.events, test_split.view.orders, config.test_days)
    result = Evaluation(splits={"validation": val_split.summary(), "test": test_split.summary()})
    for candidate in config.candidates:
        progress(f"validating {candidate.name}")
        start = time.perf_counter()
        model = fit_candidate(candidate, val_split.view)
        result.validation[candidate.name] = score_discovery(model.scores, val_split, k) | {
            "fit_seconds": round(time.perf_counter() - start, 3)
        }
    result.chosen = max(result.validation, key=lambda name: result.validation[name][f"ndcg@{k}"])
    # extra recipes (the current champion's) are re-scored on test for the promotion rule only
    names = {c.name for c in config.candidates}
    for candidate in list(config.candidates) + [c for c in extra if c.name not in names]:
        progress(f"testing {candidate.name}")
        model = fit_candidate(candidate, test_split.view)
        result.test[candidate.name] = score_discovery(model.scores, test_split, k)
        if candidate.name in (result.chosen, config.baseline):
            result.buy_again[candidate.name] = score_buy_again(model.scores, test_split, k)
    result.buy_again["personal_frequency"] = score_buy_again(personal_frequency(test_split), test_split, k)
    if oracle is not None:
        progress("scoring the oracle")
        result.oracle = score_discovery(oracle(test_split), test_split, k)
    return result


def fit_bundle(
    candidate: Candidate,
    config: TrainConfig,
    events: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    meta: dict,
    items: pd.DataFrame | None = None,
) -> ModelBundle:
    """Fit the chosen recipe, the fallback and the bought-together rules on all data, as served."""
    view = training_view(events, orders)
    model = fit_candidate(candidate, view)
    fallback_model = fit_candidate(config.fallback, view)
    rows = candidate.row_interactions()
    together = association_rules(baskets(_basket_lines(events, orders), view.items), config.together)
    meta = meta | {"name": candidate.name, "kind": candidate.model.kind, "fallback": config.fallback.name,
                   "data_until": str(view.now), "n_users": len(view.users), "n_items": len(view.items),
                   "row_interactions": rows.model_dump(mode="json")}
    return ModelBundle(model, fallback_model, view.users, view.items, view.bought, view.matrix(rows), together,
                       catalog(items, view.items), meta, candidate.model_dump(mode="json"))


def _basket_lines(events: pd.DataFrame | None, orders: pd.DataFrame | None) -> pd.DataFrame:
    """Order lines, or purchase events grouped by session when there are no orders."""
    if orders is not None:
        return orders
    ev = events[events["event_type"] == "purchase"]
    return pd.DataFrame({"order_id": ev["session_id"], "item_id": ev["item_id"], "quantity": 1.0})


def catalog(items: pd.DataFrame | None, vocab) -> pd.DataFrame | None:
    """Catalog columns aligned to the item vocabulary (items missing from the catalog: unknown category, in stock)."""
    if items is None:
        return None
    aligned = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    aligned = aligned.reindex(vocab.ids)
    return pd.DataFrame({
        "category": aligned["category"].astype("string").to_numpy(),
        "price": aligned["price"].astype("float64").to_numpy(),
        "in_stock": aligned["in_stock"].astype("boolean").fillna(True).astype(bool).to_numpy(),
    })


def metrics_report(evaluation: Evaluation, config: TrainConfig) -> dict:
    """The metrics file: the chosen model's test scores, the baseline's, and everything else."""
    k = config.k
    chosen, base = evaluation.test[evaluation.chosen], evaluation.test[config.baseline]
    report = {
        f"ndcg@{k}": chosen[f"ndcg@{k}"],
        f"recall@{k}": chosen[f"recall@{k}"],
        "model": evaluation.chosen,
        "chosen_on": "validation",
        "test_users": chosen["users"],
        "baseline_popularity": {f"ndcg@{k}": base[f"ndcg@{k}"], f"recall@{k}": base[f"recall@{k}"]},
        "candidates": {
            name: {"validation": evaluation.validation.get(name), "test": evaluation.test[name]}
            for name in evaluation.test
        },
        "buy_again": evaluation.buy_again,
        "splits": evaluation.splits,
    }
    if evaluation.oracle is not None:
        report["oracle"] = evaluation.oracle
    return {"recommend": report}


def data_digest(frames: dict[str, pd.DataFrame | None]) -> str:
    """Content hash of the canonical tables, so a run is traceable to its data."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(frames):
        df = frames[name]
        if df is None:
            continue
        h.update(name.encode())
        h.update(np.asarray(pd.util.hash_pandas_object(df, index=False)).tobytes())
    return h.hexdigest()[:16]
