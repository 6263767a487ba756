"""Live traffic under an experiment, with a known true effect.

The shoppers: each has a daily visit probability (from a Gamma activity), a probability of buying on
a visit from what they are shown (Beta), a typical basket value (log-normal) and a click probability
per answer; their spend over the ``pre_days`` before the experiment comes from the same process
(the covariate CUPED uses). A visit is an exposure to the unit's variant; the treatment multiplies
the probability of buying from what is shown by ``m``, solved so that the *true* relative lift in
conversion (share of exposed shoppers who buy within the experiment) equals ``lift`` exactly over
the population (``multiplier_for_lift``).

``study`` simulates many runs at once (arrays runs x shoppers, one step per day, vectorised) and
analyses every day's aggregates with the same code as ``shoprec experiment report``
(training/experiments/analysis.py): the A/A false-positive rate with daily peeking, with and without
the sequential test; the power and coverage of an A/B test; CUPED's interval width; SRM flags of a
broken split. ``traffic`` draws one run as exposures and outcomes for the event store, with the real
hash assignment, so that ``report`` reads it like live traffic. Both check the analysis, not the arms;
training/experiments/shown.py has a generated shop's shoppers respond to the items each arm shows.
"""
from __future__ import annotations


import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from scipy.optimize import brentq

from features.experiments import Experiment, assign
from features.exposures import Exposure, Outcome
from tea_tasting.aggr import Aggregates

from training.experiments.analysis import (ALPHA, METRIC_INPUTS, TUNING_N, compare, influence, look_correlation,
                                           srm_check)
from training.experiments.sequential import GroupSequential, chained_information


class ShopperModel(BaseModel):
    """The simulated shoppers; defaults give ~45% conversion of exposed shoppers over 14 days."""

    activity_shape: float = Field(0.8, gt=0, description="Gamma shape of the daily visit rate")
    activity_scale: float = Field(0.35, gt=0, description="Gamma scale of the daily visit rate")
    buy_a: float = Field(2.0, gt=0, description="Beta a of the chance to buy from what is shown, per visit")
    buy_b: float = Field(6.0, gt=0, description="Beta b of the same")
    value_log_mean: float = Field(3.4, description="log of a typical basket value")
    value_log_sd_shoppers: float = Field(0.6, ge=0, description="spread of basket values between shoppers")
    value_log_sd: float = Field(0.4, ge=0, description="spread of one shopper's basket values")
    click: float = Field(0.12, gt=0, lt=1, description="chance to click a shown item, per answer")
    pre_days: int = Field(30, ge=0, description="days of pre-experiment spend (CUPED's covariate)")


@dataclass
class Population:
    visit: np.ndarray  # daily visit probability
    buy: np.ndarray  # per-visit chance to buy from the control's answer
    value_mu: np.ndarray  # log basket value


def draw_population(model: ShopperModel, shape, rng: np.random.Generator) -> Population:
    visit = 1 - np.exp(-rng.gamma(model.activity_shape, model.activity_scale, shape))
    buy = rng.beta(model.buy_a, model.buy_b, shape)
    mu = model.value_log_mean + model.value_log_sd_shoppers * rng.standard_normal(shape)
    return Population(visit, buy, mu)


@dataclass
class ShopShoppers:
    """A synthetic (or any contract) shop's shoppers as the simulator sees them: ids, daily visit and
    per-visit buying probabilities, basket values from their history, and their purchases in the
    ``pre_days`` before the end (the pre-period: (user_id, item_id, value, seconds before the end))."""

    ids: list[str]
    population: Population
    pre_purchases: pd.DataFrame


def shoppers_from_shop(events: pd.DataFrame, orders: pd.DataFrame, days: int = 60, pre_days: int = 30) -> ShopShoppers:
    """Shoppers with a user id seen in the last ``days`` of the shop: visit = days with a session / ``days``,
    buy = days with a purchase / days with a session, basket value = their mean order value."""
    end = max(pd.Timestamp(events["ts"].max()), pd.Timestamp(orders["ts"].max()))
    ev = events[events["user_id"].notna() & (events["ts"] > end - pd.Timedelta(days=days))]
    visit_days = ev.assign(day=ev["ts"].dt.floor("D")).groupby("user_id")["day"].nunique()
    od = orders[(orders["quantity"] > 0) & orders["user_id"].notna()].assign(value=lambda d: d["quantity"] * d["price"])
    recent = od[od["ts"] > end - pd.Timedelta(days=days)]
    buy_days = recent.assign(day=recent["ts"].dt.floor("D")).groupby("user_id")["day"].nunique()
    basket = od.groupby(["user_id", "order_id"])["value"].sum().groupby("user_id").mean()
    ids = sorted(visit_days.index)
    visit = np.clip(visit_days.reindex(ids).to_numpy(float) / days, 1e-3, 0.95)
    buy = np.clip(buy_days.reindex(ids).fillna(0).to_numpy(float) / visit_days.reindex(ids).to_numpy(float), 0.0, 0.95)
    typical = float(basket.median()) if len(basket) else 30.0
    mu = np.log(basket.reindex(ids).fillna(typical).clip(lower=0.01).to_numpy(float))
    pre = od[od["ts"] > end - pd.Timedelta(days=pre_days)]
    pre = pre.groupby(["user_id", "order_id"], as_index=False).agg(value=("value", "sum"), ts=("ts", "max"))
    pre = pre.assign(before_s=(end - pre["ts"]).dt.total_seconds() + 1.0)[["user_id", "value", "before_s"]]
    return ShopShoppers([str(i) for i in ids], Population(visit, buy, mu), pre[pre["user_id"].isin(set(ids))])


def multiplier_for_lift(model: ShopperModel, lift: float, days: int, n: int = 1_000_000, seed: int = 0,
                        population: Population | None = None) -> float:
    """``m`` such that conversion of exposed shoppers by ``days`` is (1 + lift) times the control's:
    E[1 - (1 - v b m)^days] / E[1 - (1 - v b)^days] = 1 + lift over a large population (exact given it;
    with ``population``, over exactly those shoppers)."""
    if lift == 0:
        return 1.0
    pop = population or draw_population(model, n, np.random.default_rng(seed))
    base = np.mean(1 - (1 - pop.visit * pop.buy) ** days)

    def gap(m: float) -> float:
        return np.mean(1 - (1 - pop.visit * np.minimum(pop.buy * m, 1.0)) ** days) / base - (1 + lift)

    return float(brentq(gap, 1e-3, 20.0, xtol=1e-10))


def _values(rng, mu: np.ndarray, count: np.ndarray, sd: float) -> np.ndarray:
    """Total value of ``count`` baskets (log-normal each; a sum of ``count`` of them, approximated by count x one)."""
    out = np.zeros(mu.shape)
    has = count > 0
    out[has] = count[has] * np.exp(mu[has] + sd * rng.standard_normal(int(has.sum())))
    return out




def batch_aggregates(cols: dict[str, np.ndarray], mask: np.ndarray) -> list[Aggregates]:
    """tea-tasting aggregates of each run (row) over the units in ``mask``: (runs, units) arrays in, one
    ``Aggregates`` per run out (count, means, sample variances and covariances), without a loop over units."""
    n = mask.sum(axis=1)
    dof = np.maximum(n - 1, 1)
    names = sorted(cols)
    means = {c: np.where(mask, cols[c], 0.0).sum(axis=1) / np.maximum(n, 1) for c in names}
    centred = {c: np.where(mask, cols[c] - means[c][:, None], 0.0) for c in names}
    var = {c: (centred[c] ** 2).sum(axis=1) / dof for c in names}
    cov = {(a, b): (centred[a] * centred[b]).sum(axis=1) / dof for i, a in enumerate(names) for b in names[i + 1:]}
    return [Aggregates(count_=int(n[r]), mean_={c: float(means[c][r]) for c in names},
                       var_={c: float(var[c][r]) for c in names}, cov_={k: float(v[r]) for k, v in cov.items()})
            for r in range(len(n))]


@dataclass
class StudyResult:
    runs: int
    users: int
    days: int
    lift: float
    multiplier: float
    split: tuple[float, ...]
    expected_split: tuple[float, ...]
    false_or_true_positive_sequential: float  # share of runs significant on any day (group-sequential test)
    positive_naive_peeking: float  # share of runs with p < alpha on any day (fixed-horizon test, peeked daily)
    positive_final_fixed: float  # share of runs with p < alpha on the last day only
    coverage_final: float  # share of runs whose last-day lift interval (CUPED) covers the true lift
    coverage_final_sequential: float  # the group-sequential test's (repeated) interval on the last day
    mean_lift_estimate: float
    cuped_width_ratio: float  # mean over runs: CUPED interval width / plain
    srm_flagged: float  # share of runs flagged by the SRM check on the last day
    mean_conversion_control: float
    positive_confidence_sequence: float = 0.0  # share of runs significant on any day (confidence sequence)
    coverage_final_confidence_sequence: float = 0.0
    planned_days: int = 0  # the group-sequential horizon (alpha fully spent on that day)
    spending: str = "obrien_fleming"
    positive_sequential_by_day: tuple[float, ...] = ()  # share of runs significant by each day (group-sequential)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def study(runs: int = 200, users: int = 40_000, days: int = 14, lift: float = 0.0, seed: int = 0,
          split: tuple[float, float] = (0.5, 0.5), expected_split: tuple[float, float] | None = None,
          metric: str = "conversion", model: ShopperModel | None = None, alpha: float = ALPHA,
          tuning_n: float = TUNING_N, planned_days: int | None = None, spending: str = "obrien_fleming",
          on_look: Callable[[int, int, Any, Any, int], None] | None = None) -> StudyResult:
    """``runs`` experiments of ``users`` shoppers over ``days``, analysed after each day (the report's daily
    looks). ``split``: the real share of each variant; ``expected_split``: the configured one (a broken
    split when they differ). The sequential decisions: the group-sequential test over ``planned_days``
    (default ``days``) with ``spending``, as ``shoprec experiment report`` reads it, and the open-ended
    confidence sequence. ``on_look(run, day, comparison, look, units)``: called at every run's daily look with
    the group-sequential comparison and its look (benchmarks/experiments_aa.py records the statistics)."""
    import time

    t0 = time.perf_counter()
    model = model or ShopperModel()
    expected_split = expected_split or split
    rng = np.random.default_rng(seed)
    m = multiplier_for_lift(model, lift, days, seed=seed + 1)
    shape = (runs, users)
    pop = draw_population(model, shape, rng)
    treated = rng.random(shape) >= split[0]
    pre_count = rng.binomial(model.pre_days, pop.visit * pop.buy)
    pre_spend = _values(rng, pop.value_mu, pre_count, model.value_log_sd)
    buy = np.where(treated, np.minimum(pop.buy * m, 1.0), pop.buy)
    exposures = np.zeros(shape)
    clicks = np.zeros(shape)
    purchases = np.zeros(shape)
    revenue = np.zeros(shape)
    planned_days = planned_days or days
    tests = [GroupSequential(alpha, spending) for _ in range(runs)]
    previous = None  # the last look's influence values and arms
    seq_hit = np.zeros(runs, bool)
    seq_by_day = []
    cs_hit = np.zeros(runs, bool)
    naive_hit = np.zeros(runs, bool)
    final: list = []
    shares = {"control": expected_split[0], "treatment": expected_split[1]}
    for day in range(days):
        visits = rng.random(shape) < pop.visit
        bought = visits & (rng.random(shape) < buy)
        exposures += visits
        clicks += visits & (rng.random(shape) < model.click)
        purchases += bought
        revenue += _values(rng, pop.value_mu, bought.astype(int), model.value_log_sd)
        exposed = exposures > 0
        cols = {"exposures": exposures, "clicks": clicks, "converted": (purchases > 0).astype(float),
                "revenue": revenue, "pre_spend": pre_spend}
        cols = {k: cols[k] for k in METRIC_INPUTS[metric]}
        sel_c, sel_t = exposed & ~treated, exposed & treated
        t = min((day + 1) / planned_days, 1.0)
        # the group-sequential test's information, as the report computes it (analysis.sequential_looks)
        values = influence(metric, *(cols[k] for k in METRIC_INPUTS[metric]), sel_c, sel_t)
        rho = None if previous is None else look_correlation(previous[0], values, previous[1], (sel_c, sel_t))
        previous = (values, (sel_c, sel_t))
        for r, (ac, at) in enumerate(zip(batch_aggregates(cols, sel_c), batch_aggregates(cols, sel_t))):
            gs = tests[r]
            if gs.looks:
                gs.look(t, float(chained_information(gs.looks[-1].info, [rho[r]])[-1]))
            else:
                gs.look(t, float(ac.count() + at.count()))
            look = gs.looks[-1]
            c = compare(metric, ac, at, "treatment", alpha=alpha, tuning_n=tuning_n, look=look, spending=spending,
                        looks=len(gs.looks))
            if on_look is not None:
                on_look(r, day, c, look, ac.count() + at.count())
            cs = compare(metric, ac, at, "treatment", alpha=alpha, tuning_n=tuning_n)
            seq_hit[r] |= c.significant
            cs_hit[r] |= cs.significant
            naive_hit[r] |= c.pvalue < alpha
            if day == days - 1:
                srm = srm_check({"control": ac.count(), "treatment": at.count()}, shares)
                final.append((c, srm, cs))
        seq_by_day.append(float(seq_hit.mean()))
    true = lift
    def covers(ci) -> bool:
        return ci is not None and ci[0] <= true <= ci[1]

    covered = [covers(c.lift_ci) for c, _, _ in final]
    covered_seq = [covers(c.sequential_lift_ci) for c, _, _ in final]
    covered_cs = [covers(cs.sequential_lift_ci) for _, _, cs in final]
    ratios = [c.cuped_width_ratio for c, _, _ in final if c.cuped_width_ratio is not None]
    return StudyResult(
        runs, users, days, lift, m, tuple(split), tuple(expected_split),
        float(seq_hit.mean()), float(naive_hit.mean()), float(np.mean([c.pvalue < alpha for c, _, _ in final])),
        float(np.mean(covered)), float(np.mean(covered_seq)), float(np.mean([c.lift for c, _, _ in final])),
        float(np.mean(ratios)) if ratios else float("nan"), float(np.mean([s["flagged"] for _, s, _ in final])),
        float(np.mean([c.control_value for c, _, _ in final])), float(cs_hit.mean()), float(np.mean(covered_cs)),
        planned_days, spending, tuple(seq_by_day), time.perf_counter() - t0)


def request_id(rng: np.random.Generator) -> str:
    """A request id drawn from ``rng`` (uuid hex, reproducible with the seed)."""
    return uuid.UUID(int=int(rng.integers(0, 2 ** 63)) << 64 | int(rng.integers(0, 2 ** 63))).hex


def isolated(experiment: str, exposures: list[Exposure], outcomes: list[Outcome]) -> tuple[list[Exposure], list[Outcome]]:
    """Simulated traffic as it is stored: shoppers ``sim:<experiment>:<id>`` and request ids drawn for this
    experiment alone. The analysis attributes a purchase to every exposure of its shopper (by user) or of its
    request id, as it must for live traffic; two simulations with the same seed (or of the same shop's
    shoppers) wrote the same ids, and each experiment then counted the other's purchases, a finished report
    included. Nor does a simulated purchase ever carry a real shopper's id into the live store."""
    def user(u: str) -> str:
        return f"sim:{experiment}:{u}" if u else u

    def request(r: str | None) -> str | None:
        return uuid.uuid5(uuid.NAMESPACE_OID, f"{experiment}/{r}").hex if r else r

    return ([replace(e, request_id=request(e.request_id), unit_id=user(e.unit_id), user_id=user(e.user_id))
             for e in exposures],
            [replace(o, request_id=request(o.request_id), user_id=user(o.user_id)) for o in outcomes])


def pre_outcomes(pre_purchases: pd.DataFrame, start: float) -> list[Outcome]:
    """A shop's purchases before an experiment (user_id, value, before_s: seconds before ``start``) as outcomes."""
    return [Outcome(None, str(u), "purchase", "i-pre", float(v), start - b)
            for u, v, b in pre_purchases[["user_id", "value", "before_s"]].itertuples(index=False)]


def traffic(exp: Experiment, users: int = 20_000, days: int = 14, lift: float = 0.05, seed: int = 0,
            start: float | None = None, model: ShopperModel | None = None, treatment: str | None = None,
            shop: ShopShoppers | None = None) -> tuple[list[Exposure], list[Outcome]]:
    """One run of live traffic for ``exp`` as exposures and outcomes (the real hash assignment, request
    ids, clicks and purchases carrying them, pre-period purchases before ``start``, epoch seconds).
    ``treatment``: the variant that gets the lift (default: the second); the others behave as the control.
    ``shop``: the shoppers of a shop (``shoppers_from_shop``) instead of ``users`` drawn from ``model``."""
    model = model or ShopperModel()
    rng = np.random.default_rng(seed)
    start = float(start if start is not None else pd.Timestamp.now(tz="UTC").floor("D").timestamp() - days * 86_400)
    treatment = treatment or exp.variants[1].name
    if shop is not None:
        pop, ids, users = shop.population, shop.ids, len(shop.ids)
    else:
        pop = draw_population(model, users, rng)
        ids = [f"sim-{seed}-{i:06d}" for i in range(users)]
    m = multiplier_for_lift(model, lift, days, seed=seed + 1, population=pop if shop is not None else None)
    variant = [assign(exp, u) for u in ids]
    in_exp = np.array([v is not None for v in variant])
    is_t = np.array([v is not None and v.name == treatment for v in variant])
    buy = np.where(is_t, np.minimum(pop.buy * m, 1.0), pop.buy)
    exposures, outcomes = [], []
    pre_count = rng.binomial(model.pre_days, pop.visit * pop.buy) if shop is None else np.zeros(users, int)
    if shop is not None:  # the shop's own purchases before the start
        outcomes += pre_outcomes(shop.pre_purchases, start)
    for i in np.flatnonzero(pre_count):
        for _ in range(pre_count[i]):
            ts = start - rng.uniform(1, model.pre_days * 86_400)
            outcomes.append(Outcome(None, ids[i], "purchase", "i-pre", float(np.exp(pop.value_mu[i] + model.value_log_sd
                                                                                   * rng.standard_normal())), ts))
    for day in range(days):
        visits = np.flatnonzero(in_exp & (rng.random(users) < pop.visit))
        for i in visits:
            ts = start + day * 86_400 + rng.uniform(0, 80_000)
            rid = request_id(rng)
            exposures.append(Exposure(rid, exp.name, variant[i].name, ids[i], ids[i], exp.endpoint, ("i-shown",), ts))
            if rng.random() < model.click:
                outcomes.append(Outcome(rid, ids[i], "view", "i-shown", 0.0, ts + 30))
            if rng.random() < buy[i]:
                value = float(np.exp(pop.value_mu[i] + model.value_log_sd * rng.standard_normal()))
                # half the purchases come back with the request id, half only with the user (attributed by user)
                outcomes.append(Outcome(rid if rng.random() < 0.5 else None, ids[i], "purchase", "i-shown", value, ts + 600))
    return exposures, outcomes
