"""Choose, test and fit the recommender: validation chooses, the test period only reports.

    data ──► validation split (cutoff = test cutoff - test_days)
         │     └─► peers, the shop's champion recipe, the search (training/search.py), each scored per user
         ├─► earlier split (the period before validation): the finalists scored again
         │           └─► choice on both periods: best, or the simplest within the noise (training/selection.py)
         │                 └─► gate: the champion's recipe stays unless beaten beyond noise
         └─► test split (cutoff = last purchase - test_days): the chosen recipe, the peers, the
               runners-up and the baseline reported; the chosen one also through the served paths
         └─► all data ──► chosen recipe + fallback fitted ──► ModelBundle
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from features.cooccurrence import association_rules, baskets
from features.errors import ShortHistory
from features.interactions import TrainingView, training_view
from training.bundle import ModelBundle
from training.config import Candidate, TrainConfig
from training.evaluate import ScoreFn, Split, _ranked, personal_frequency, score_buy_again, score_discovery, time_split
from training.peers import is_peer, peer_candidates
from training.recommenders import Recommender, fit_model
from training.reference import recommender_reference
from training.top_lists import TopLists
from training.search import backtest, search
from training.selection import Trial, choose, gate, recipe_key
from training.served import served_discovery, session_discovery

OracleFactory = Callable[[Split], ScoreFn]  # builds an oracle scorer for a split's users and items
ORACLE_USERS = 2000  # test users the oracle scores (a seeded sample beyond this)
RUNNERS_UP = 3  # best recipes on validation (besides the chosen one) also reported on test
INCUMBENT = "champion"  # name prefix of the shop's champion recipe among the trials


def fit_candidate(candidate: Candidate, view: TrainingView) -> Recommender:
    return fit_model(candidate.model, candidate.interactions, view)


@dataclass
class Evaluation:
    validation: dict[str, dict] = field(default_factory=dict)  # recipe -> metrics on the validation split
    test: dict[str, dict] = field(default_factory=dict)  # recipe -> metrics on the test split (reported only)
    recipes: dict[str, Candidate] = field(default_factory=dict)
    buy_again: dict[str, dict] = field(default_factory=dict)
    splits: dict[str, dict] = field(default_factory=dict)
    chosen: str = ""
    selection: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    backtest: dict = field(default_factory=dict)
    served: dict = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    oracle: dict | None = None
    test_split: Split | None = None
    test_ranked: dict[str, np.ndarray] = field(default_factory=dict)  # chosen and baseline top-k on test (plots)

    def score(self, name: str, k: int = 10) -> float:
        return self.test[name][f"ndcg@{k}"]

    @property
    def recipe(self) -> Candidate:
        return self.recipes[self.chosen]


# One BLAS thread while choosing and fitting, whatever the caller's environment: a matrix product summed over
# two threads adds its floats in another order, and on a near tie that alone changed the chosen recipe (a
# notebook with OpenBLAS on two threads chose otherwise than `shoprec train`). The same data and config give
# the same choice and the same model.
@threadpool_limits.wrap(limits=1, user_api="blas")
def evaluate(
    config: TrainConfig,
    events: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    incumbent: Candidate | None = None,
    oracle: OracleFactory | None = None,
    progress: Callable[[str], None] = lambda msg: None,
    engine=None,
) -> Evaluation:
    """Search and choose on validation; gate against the shop's champion recipe; report on test.
    ``engine`` (features/relational/) builds the interaction matrices; pandas when None."""
    k = config.k
    test_split = time_split(events, orders, config.test_days, engine=engine)
    val_split = time_split(test_split.view.events, test_split.view.orders, config.test_days, engine=engine)
    result = Evaluation(splits={"validation": val_split.summary(), "test": test_split.summary()}, test_split=test_split)
    fixed = (peer_candidates() if config.peers else []) + list(config.candidates)
    if incumbent is not None:
        fixed.append(incumbent.model_copy(update={"name": f"{INCUMBENT}.{incumbent.name}"}))
    found = search(config.search, val_split, k, fixed, has_events=events is not None and len(events) > 0,
                   progress=progress)
    trials = found.trials
    result.search = found.summary()
    result.validation = {name: t.metrics for name, t in trials.items()}
    result.recipes = {name: t.candidate for name, t in trials.items()}
    contenders = {n: t for n, t in trials.items() if not n.startswith(f"{INCUMBENT}.")}
    incumbent_name = f"{INCUMBENT}.{incumbent.name}" if incumbent is not None else None
    finalists = _finalists(contenders, incumbent_name if incumbent_name in trials else None,
                           config.search.finalists if config.search is not None else 0)
    judged, basis = trials, "validation"  # what choice and gate compare: validation alone, or with the period before it
    if finalists:
        try:
            earlier = time_split(val_split.view.events, val_split.view.orders, config.test_days, engine=engine)
        except ShortHistory as e:  # too little history before validation for another period
            result.backtest = {"skipped": str(e)}
        else:
            budget = max(found.budget_seconds - found.seconds, 0.0)
            back = backtest(trials, finalists, earlier, k, budget, always=(incumbent_name,), progress=progress)
            result.backtest = back.summary(trials, k)
            judged, basis = back.trials, "validation and the period before it"
            del earlier
    result.chosen, result.selection = choose({n: t for n, t in judged.items() if n != incumbent_name}, basis)
    champion_trial = judged.get(incumbent_name) if incumbent_name is not None else None
    result.gate = gate(judged[result.chosen], champion_trial, basis=basis)
    if result.gate["keep_incumbent"]:
        result.chosen = champion_trial.candidate.name
    ranked = sorted(contenders, key=lambda n: -trials[n].mean)
    report = [n for n in trials if is_peer(n)] + [result.chosen, config.baseline] + ranked[:RUNNERS_UP]
    for name in dict.fromkeys(n for n in report if n in trials):
        progress(f"testing {name}")
        model = fit_candidate(trials[name].candidate, test_split.view)
        result.test[name] = score_discovery(model.scores, test_split, k)
        if name in (result.chosen, config.baseline):
            result.buy_again[name] = score_buy_again(model.scores, test_split, k)
            result.test_ranked[name] = _ranked(model.scores, test_split.test_users, test_split.view.bought, k, restrict=False)
        if name == result.chosen:
            progress("replaying the test period through the storefront")
            bundle = fit_bundle(trials[name].candidate, config, None, None, {}, view=test_split.view, model=model)
            result.served = served_discovery(bundle, test_split, k)
            result.session = session_discovery(bundle, events, test_split.cutoff, k)
    result.buy_again["personal_frequency"] = score_buy_again(personal_frequency(test_split), test_split, k)
    if oracle is not None:  # the synthetic shop's truth: costly per user on a wide catalogue, so a sample
        progress("scoring the oracle")
        sampled = test_split.sample(ORACLE_USERS)
        result.oracle = score_discovery(oracle(sampled), sampled, k)
    return result


def _finalists(contenders: dict[str, Trial], incumbent: str | None, n: int) -> list[str]:
    """Backtested recipes, best on validation first: the ``n`` best, the best peer, the shop's champion recipe.
    A recipe found under two names (a peer the search also tries, e.g. trending over 7 days) counts once,
    under the name that ranks first, so it neither takes two places nor is fitted twice."""
    if n <= 0:
        return []
    first_name = {}  # recipe -> its best-ranked name
    for name in sorted(contenders, key=lambda name: (-contenders[name].mean, name)):
        first_name.setdefault(recipe_key(contenders[name].candidate), name)
    ranked = list(first_name.values())
    peers = [name for name in ranked if is_peer(name)]
    return list(dict.fromkeys(ranked[:n] + peers[:1] + ([incumbent] if incumbent else [])))


@threadpool_limits.wrap(limits=1, user_api="blas")
def fit_bundle(
    candidate: Candidate,
    config: TrainConfig,
    events: pd.DataFrame | None,
    orders: pd.DataFrame | None,
    meta: dict,
    items: pd.DataFrame | None = None,
    view: TrainingView | None = None,
    model: Recommender | None = None,
    engine=None,
) -> ModelBundle:
    """Fit the chosen recipe, the fallback and the bought-together rules on all data, as served
    (or on ``view``, e.g. a split's data up to its cutoff, reusing a ``model`` fitted on it); ``engine``
    counts the matrices and co-purchases (features/relational/), pandas when None."""
    view = view if view is not None else training_view(events, orders, engine=engine)
    model = model if model is not None else fit_candidate(candidate, view)
    fallback_model = fit_candidate(config.fallback, view)
    rows = candidate.row_interactions()
    lines = _basket_lines(view.events, view.orders)
    if view.engine is not None:
        from features.relational.frames import association_rules as rules_on_engine

        together = rules_on_engine(view.engine, lines, view.items, config.together)
    else:
        together = association_rules(baskets(lines, view.items), config.together)
    meta = meta | {"name": candidate.name, "kind": candidate.model.kind, "fallback": config.fallback.name,
                   "data_until": str(view.now), "n_users": len(view.users), "n_items": len(view.items),
                   "row_interactions": rows.model_dump(mode="json"), "never_recommend": list(config.never_recommend)}
    bundle = ModelBundle(model, fallback_model, view.users, view.items, view.bought, view.matrix(rows), together,
                         catalog(items, view.items), meta, candidate.model_dump(mode="json"))
    bundle.reference = recommender_reference(bundle, view.events, view.orders)  # what live traffic is compared with
    bundle.top_lists = TopLists.build(bundle)  # known shoppers' answers, read by the service (wide catalogues)
    return bundle


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
    """The metrics file: the chosen recipe's test scores next to the peers', the served paths,
    how the choice was made, and every recipe's validation score."""
    k = config.k
    chosen, base = evaluation.test[evaluation.chosen], evaluation.test[config.baseline]
    peers = {name: {"validation": evaluation.validation[name], "test": evaluation.test[name]}
             for name in evaluation.test if is_peer(name)}
    best_peer = max(peers, key=lambda n: peers[n]["test"][f"ndcg@{k}"]) if peers else None
    report = {
        f"ndcg@{k}": chosen[f"ndcg@{k}"],
        f"recall@{k}": chosen[f"recall@{k}"],
        f"validation_ndcg@{k}": evaluation.validation[evaluation.chosen][f"ndcg@{k}"],
        f"served_ndcg@{k}": evaluation.served.get(f"ndcg@{k}"),
        f"session_ndcg@{k}": evaluation.session.get(f"ndcg@{k}"),
        "served": evaluation.served,
        "session": evaluation.session,
        "model": evaluation.chosen,
        "recipe": evaluation.recipe.model_dump(mode="json"),
        "chosen_on": "validation",
        "selection": evaluation.selection,
        "gate": evaluation.gate,
        "search": evaluation.search,
        "backtest": evaluation.backtest,
        "test_users": chosen["users"],
        "baseline_popularity": {f"ndcg@{k}": base[f"ndcg@{k}"], f"recall@{k}": base[f"recall@{k}"]},
        "peers": peers,
        "best_peer": best_peer and {"name": best_peer, f"ndcg@{k}": peers[best_peer]["test"][f"ndcg@{k}"]},
        "candidates": {name: {"validation": evaluation.validation.get(name), "test": evaluation.test.get(name)}
                       for name in evaluation.validation},
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
