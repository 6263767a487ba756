"""Per-shop recipe search on the validation split, within a wall-clock budget.

Stages (``SearchSpace`` in training/config.py holds the values):

    popularity ─► popular, trending at each half-life                 (always; + on purchases alone with a clickstream)
                  distinct buyers in each window
    personal   ─► ALS starting points, EASE penalties, BM25 item-kNN   (+ purchases alone, + weighted rows with a clickstream)
    blends     ─► best ALS / best EASE + best trending, each weight; best ALS + best EASE + trending
    ranker     ─► LightGBM over the best ALS, EASE, item-kNN, trending and popular; the better
                  one again learning from several label periods stacked; the best one again with
                  the last days' best sellers (distinct buyers) as one more retriever
    backtest   ─► the finalists (best few, best peer, the shop's champion recipe) on the period
                  before validation too: ``backtest`` (called by training/pipeline.py)

Fixed recipes (the PRODUCT.md peers, the shop's champion recipe, the config's own candidates)
are always scored. Before each trial its cost is estimated from what its family took so far;
a trial that would overrun the budget is skipped and listed. Only the validation split is
ever seen here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from features.interactions import InteractionConfig
from training.config import Candidate, SearchSpace, _trending
from training.evaluate import Split, discovery_per_user
from training.recommenders import fit_model
from training.recommenders.fitting import forget_fits
from training.recommenders.blend import BlendConfig, BlendPart
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.popular import PopularConfig
from training.recommenders.ranker import RankerConfig, RankerSettings
from training.selection import Trial

BINARY = InteractionConfig(binary=True)
WEIGHTED = InteractionConfig()
BOUGHT = InteractionConfig(view_weight=0.0, cart_weight=0.0, binary=True)  # purchases alone


def _bought_within(days: float) -> InteractionConfig:
    return BOUGHT.model_copy(update={"window_days": days})


@dataclass
class SearchResult:
    trials: dict[str, Trial] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    budget_seconds: float = 0.0

    def best(self, prefix: str) -> Trial | None:
        found = [t for n, t in self.trials.items() if n.startswith(prefix)]
        return max(found, key=lambda t: (t.mean, t.candidate.name)) if found else None

    def summary(self) -> dict:
        return {"trials": len(self.trials), "skipped": self.skipped, "seconds": round(self.seconds, 1),
                "budget_seconds": round(self.budget_seconds, 1)}


class _Searcher:
    def __init__(self, split: Split, k: int, budget_s: float, progress: Callable[[str], None], forget: bool = True):
        self.split, self.k, self.budget_s, self.progress, self.forget = split, k, budget_s, progress, forget
        self.started = time.perf_counter()
        self.result = SearchResult(budget_seconds=budget_s)
        self.cost: dict[str, float] = {}  # stage -> seconds of its slowest trial so far

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run(self, candidate: Candidate, stage: str, required: bool = False, estimate: float | None = None) -> Trial | None:
        if candidate.name in self.result.trials:
            return self.result.trials[candidate.name]
        estimate = self.cost.get(stage, 0.0) if estimate is None else estimate
        if not required and self.elapsed() + estimate > self.budget_s:
            self.result.skipped.append({"name": candidate.name, "stage": stage,
                                        "reason": f"budget: {self.elapsed():.0f} s used, ~{estimate:.0f} s more needed, "
                                                  f"{self.budget_s:.0f} s allowed"})
            return None
        self.progress(f"validating {candidate.name}")
        start = time.perf_counter()
        try:
            model = fit_model(candidate.model, candidate.interactions, self.split.view)
        except ValueError as e:  # the shop's data cannot teach this recipe (a ranker without label rows): say so
            if required:
                raise
            self.result.skipped.append({"name": candidate.name, "stage": stage, "reason": f"cannot be fitted here: {e}"})
            self.progress(f"skipped {candidate.name}: {e}")
            return None
        metrics, per_user = discovery_per_user(model.scores, self.split, self.k)
        seconds = time.perf_counter() - start
        self.cost[stage] = max(self.cost.get(stage, 0.0), seconds)
        trial = Trial(candidate, metrics | {"seconds": round(seconds, 3)}, per_user, stage)
        self.result.trials[candidate.name] = trial
        if self.forget:
            self._keep_only_the_best()
        return trial

    def _keep_only_the_best(self) -> None:
        """Only the best model of each family is built on later (blends, the ranker): free the
        others at once (an EASE on a wide catalogue holds ~1 GB)."""
        best = [self.result.best(prefix) for prefix in ("trending-", "als-", "ease-", "itemknn-")]
        keep = [t for t in (*best, self.result.trials.get("popular")) if t is not None]
        forget_fits(self.split.view, [(t.candidate.model, t.candidate.interactions) for t in keep])


def search(space: SearchSpace | None, split: Split, k: int, fixed: list[Candidate], has_events: bool,
           progress: Callable[[str], None] = lambda msg: None) -> SearchResult:
    """Score the fixed recipes and search ``space`` on the validation ``split``."""
    budget = space.budget_minutes * 60 if space is not None else 0.0
    s = _Searcher(split, k, budget, progress)
    for candidate in fixed:
        s.run(candidate, "fixed", required=True)
    s.run(Candidate(name="popular", interactions=BINARY, model=PopularConfig()), "popularity", required=True)
    if space is None:
        s.result.seconds = s.elapsed()
        return s.result
    purchases_too = has_events and space.purchase_rows  # what sells, not what is looked at
    for days in space.trending_half_life_days:
        s.run(Candidate(name=f"trending-{days:g}d", interactions=_trending(days), model=PopularConfig(count="weight")),
              "popularity")
        if purchases_too:
            bought = _trending(days).model_copy(update={"view_weight": 0.0, "cart_weight": 0.0})
            s.run(Candidate(name=f"trending-bought-{days:g}d", interactions=bought, model=PopularConfig(count="weight")),
                  "popularity")
    for days in space.trending_window_days:  # distinct buyers in the window, as PRODUCT.md's trending peers count
        s.run(Candidate(name=f"trending-buyers-{days:g}d", interactions=_bought_within(days), model=PopularConfig(count="users")),
              "popularity")
    for als in space.als:
        s.run(Candidate(name=f"als-f{als.factors}-r{als.regularization:g}-a{als.alpha:g}", interactions=BINARY,
                        model=als), "als")
    for l2 in space.ease_l2:
        s.run(Candidate(name=f"ease-l{l2:g}", interactions=BINARY, model=EASEConfig(l2=l2, max_items=space.ease_max_items)),
              "ease")
    for neighbours in space.itemknn_neighbours:
        s.run(Candidate(name=f"itemknn-k{neighbours}", interactions=BINARY, model=ItemKNNConfig(neighbours=neighbours)),
              "itemknn")
    if purchases_too:
        for family in ("als", "ease", "itemknn"):
            if (best := s.result.best(f"{family}-")) is not None:
                s.run(Candidate(name=f"{best.candidate.name}-bought", interactions=BOUGHT, model=best.candidate.model),
                      family)
    if has_events and space.weighted_rows:  # views and carts count, weighted against purchases
        for family in ("als", "ease"):
            if (best := s.result.best(f"{family}-")) is not None:
                model = best.candidate.model
                if family == "als":
                    model = model.model_copy(update={"weighting": "log"})
                s.run(Candidate(name=f"{best.candidate.name}-weighted", interactions=WEIGHTED, model=model), family)
    trend = s.result.best("trending-")
    personal = {family: s.result.best(f"{family}-") for family in ("als", "ease")}
    best_weight = {}
    for family, p in personal.items():
        if p is None or trend is None:
            continue
        for w in space.blend_weights:
            t = s.run(_blend(f"{p.candidate.name}_{trend.candidate.name}_w{w:g}", [(1.0, p), (w, trend)]), "blend")
            if t is not None and t.mean >= best_weight.get(family, (None, -1.0))[1]:
                best_weight[family] = (w, t.mean)
    if personal["als"] and personal["ease"] and trend and "ease" in best_weight:
        w = best_weight["ease"][0]
        s.run(_blend(f"{personal['als'].candidate.name}_{personal['ease'].candidate.name}_{trend.candidate.name}_w{w:g}",
                     [(1.0, personal["als"]), (1.0, personal["ease"]), (w, trend)]), "blend")
    if space.ranker.enabled:
        retrievers = [t for t in (personal["als"], personal["ease"], trend, s.result.best("itemknn-"),
                                  s.result.trials.get("popular")) if t is not None]
        if len(retrievers) >= 2:
            settings = space.ranker.model_dump(include=set(RankerSettings.model_fields))  # not the search-only fields
            parts = [BlendPart(interactions=t.candidate.interactions, model=t.candidate.model) for t in retrievers]
            estimate = 2 * sum(t.metrics["seconds"] for t in retrievers) + 10.0
            for item_time in space.ranker.item_time:
                ranker = RankerConfig(retrievers=parts, item_time=item_time, **settings)
                s.run(Candidate(name="ranker" if item_time else "ranker-scores-only", interactions=WEIGHTED, model=ranker),
                      "ranker", estimate=estimate)
            periods = space.ranker.stacked_label_periods
            if (best := s.result.best("ranker")) is not None and periods > space.ranker.label_periods:
                stacked = best.candidate.model.model_copy(update={"label_periods": periods})
                s.run(Candidate(name=f"{best.candidate.name}-{periods}-periods", interactions=WEIGHTED, model=stacked),
                      "ranker", estimate=best.metrics["seconds"] * periods / space.ranker.label_periods)
            if (days := space.ranker.fresh_buyers_days) and (best := s.result.best("ranker")) is not None:
                fresh = BlendPart(interactions=_bought_within(days), model=PopularConfig(count="users"))
                if fresh not in best.candidate.model.retrievers:
                    model = best.candidate.model.model_copy(update={"retrievers": [*best.candidate.model.retrievers, fresh]})
                    s.run(Candidate(name=f"{best.candidate.name}-fresh-{days:g}d", interactions=WEIGHTED, model=model),
                          "ranker", estimate=best.metrics["seconds"])
    s.result.seconds = s.elapsed()
    return s.result


def _blend(name: str, parts: list[tuple[float, Trial]]) -> Candidate:
    return Candidate(name=name, model=BlendConfig(parts=[
        BlendPart(weight=w, interactions=t.candidate.interactions, model=t.candidate.model) for w, t in parts]))


@dataclass
class Backtest:
    trials: dict[str, Trial] = field(default_factory=dict)  # finalists, per_user = validation's users then the earlier period's
    earlier: dict[str, dict] = field(default_factory=dict)  # finalist -> metrics on the earlier period alone
    skipped: list[dict] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self, validation: dict[str, Trial], k: int) -> dict:
        return {"split": self.split, "seconds": round(self.seconds, 1), "skipped": self.skipped,
                "finalists": {n: {"validation": round(validation[n].mean, 6), "earlier": round(self.earlier[n][f"ndcg@{k}"], 6),
                                  "both": round(t.mean, 6), "users": int(len(t.per_user))}
                              for n, t in self.trials.items()}}


def backtest(trials: dict[str, Trial], finalists: list[str], earlier: Split, k: int, budget_s: float,
             required: int = 2, always: tuple[str, ...] = (),
             progress: Callable[[str], None] = lambda msg: None) -> Backtest:
    """Score the ``finalists`` (best first) on the ``earlier`` period as well. Each returned trial
    holds the validation users' NDCG and then the earlier period's, so ``choose`` and ``gate``
    compare recipes on both periods, paired user by user. The first ``required`` finalists and
    those in ``always`` always run; the others while ``budget_s`` lasts (those left out are listed
    and cannot be chosen)."""
    s = _Searcher(earlier, k, budget_s, lambda msg: progress(f"{msg} (earlier period)"), forget=False)
    out = Backtest(split=earlier.summary())
    for i, name in enumerate(finalists):
        estimate = trials[name].metrics["seconds"]
        t = s.run(trials[name].candidate, f"backtest-{name}", required=i < required or name in always,
                  estimate=estimate)
        if t is None:
            continue
        out.earlier[name] = t.metrics
        out.trials[name] = Trial(trials[name].candidate, trials[name].metrics,
                                 np.concatenate([trials[name].per_user, t.per_user]), trials[name].stage)
    out.skipped, out.seconds = s.result.skipped, s.elapsed()
    return out
