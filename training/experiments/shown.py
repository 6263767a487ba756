"""Shoppers of a synthetic shop who respond to the items they are shown, with the true effect known.

``simulate.traffic`` makes the treatment raise a chance to buy by a set multiplier: it proves the
analysis, not the arms. Here the arms decide. On each of ``days`` days after the shop's data end, a
shopper of a generated shop visits with the probability the generative model gives them a session that
day (``Truth.visit_probability``). A visit is an exposure to their variant's answer: the top-k that the
arm's storefront (the code the service runs; policies from training/experiments/policies.py) gives
them. Each item shown is bought with probability ``1 - exp(-boost_days * lambda_ui)``, ``lambda_ui``
the shopper's true expected purchases of that item per day over the experiment's days
(``Truth.preference``): showing an item brings forward ``boost_days`` of the shopper's own demand
for it. A variant that shows what its shoppers want sells more; nothing tells the simulator by how much.

The truth follows from the same quantities: a visit converts with ``q_u = 1 - exp(-boost_days *
sum over shown items of lambda_ui)``, a shopper converts over the days with ``1 - prod_d (1 - visit_ud
q_u)`` and is exposed with ``1 - prod_d (1 - visit_ud)``; a variant's true conversion is the population's
expected converters over its expected exposed shoppers had everyone been given that variant, and the
treatment's true lift is the ratio of two such conversions minus one, which a report's interval
should cover. Simplification, said where it shows: a shopper's answer is computed once for the
experiment (what they buy during it does not change what they are shown next).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from features.experiments import Experiment, assign
from features.exposures import Exposure, Outcome
from features.synthetic.truth import Truth
from training.experiments.analysis import DAY_S
from training.experiments.simulate import pre_outcomes, request_id
from training.storefront import Storefront


class ShownModel(BaseModel):
    """How simulated shoppers respond to an answer."""

    boost_days: float = Field(14.0, gt=0, description="days of a shopper's own expected demand for an item that "
                              "one showing of it brings forward (a shown item is bought with probability "
                              "1 - exp(-boost_days x its true expected purchases per day))")
    k: int = Field(10, ge=1, le=100, description="items in each answer")
    click: float = Field(0.12, ge=0, lt=1, description="chance to click a shown item, per answer")


@dataclass
class ShownTruth:
    """What the simulated experiment should find."""

    conversion: dict[str, float]  # per variant: true share of exposed shoppers who buy, everyone on that variant
    lift: float  # the treatment's true relative lift in conversion over the control
    control: str
    treatment: str
    shoppers: int
    first_day: str  # the shop calendar's first experiment day (the day after its data end)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Demand:
    """Each shopper's true expected purchases per day of every item any arm shows them."""

    items: list[str]  # columns
    per_day: np.ndarray  # (n_users, n_items) float64
    answers: dict[str, list[tuple[str, ...]]]  # per variant: each shopper's answer

    def shown(self, variant: str) -> np.ndarray:
        """(n_users, k) expected purchases per day of each item in the shopper's answer of ``variant`` (0 pads)."""
        col = {item: j for j, item in enumerate(self.items)}
        answers = self.answers[variant]
        k = max((len(a) for a in answers), default=0)
        out = np.zeros((len(answers), k))
        for u, answer in enumerate(answers):
            out[u, :len(answer)] = self.per_day[u, [col[i] for i in answer]]
        return out


def answers_of(store: Storefront, user_ids: list[str], k: int) -> list[tuple[str, ...]]:
    """Each shopper's answer from ``store``: ``recommend`` as the service calls it (bought items left out)."""
    return [tuple(store.recommend(u, k=k).item_ids) for u in user_ids]


def demand(truth: Truth, user_ids: list[str], answers: dict[str, list[tuple[str, ...]]], first_day: pd.Timestamp,
           days: int) -> Demand:
    """The shoppers' true expected purchases per day, averaged over the ``days`` from ``first_day``, of every item
    in any of ``answers`` (``Truth.preference`` summed over the days; an item a shopper never buys: 0)."""
    items = sorted({i for per_user in answers.values() for answer in per_user for i in answer})
    if not items:
        return Demand(items, np.zeros((len(user_ids), 0)), answers)
    with np.errstate(divide="ignore"):  # -inf (never bought, not a shopper of the shop): 0 per day
        per_day = np.exp(truth.preference(user_ids, items, first_day, horizon_days=days)) / days
    return Demand(items, per_day, answers)


def true_conversion(visit: np.ndarray, per_visit: np.ndarray) -> float:
    """Expected converters over expected exposed shoppers: ``visit`` (users, days), ``per_visit`` (users,)."""
    exposed = 1.0 - np.prod(1.0 - visit, axis=1)
    converted = 1.0 - np.prod(1.0 - visit * per_visit[:, None], axis=1)
    return float(converted.sum() / exposed.sum()) if exposed.sum() > 0 else 0.0


@dataclass
class ShownWorld:
    """Everything a run draws from, computed once: each shopper's answer per arm, visit probabilities per day,
    the chance to buy each shown item on a visit, prices, and the truth."""

    user_ids: list[str]
    answers: dict[str, list[tuple[str, ...]]]
    visit: np.ndarray  # (users, days)
    item_p: dict[str, np.ndarray]  # per arm: (users, k) chance to buy each shown item on a visit
    prices: dict[str, float]
    click: float
    truth: ShownTruth

    @property
    def days(self) -> int:
        return self.visit.shape[1]


def prepare(truth: Truth, user_ids: list[str], arms: dict[str, Storefront], prices: dict[str, float],
            control: str, treatment: str, days: int = 14, model: ShownModel | None = None) -> ShownWorld:
    """The arms' answers for ``user_ids`` (shoppers of the shop whose ``truth`` is given) and the truth of an
    experiment between ``control`` and ``treatment`` (names of ``arms``) over ``days`` days after the data end."""
    model = model or ShownModel()
    missing = [name for name in (control, treatment) if name not in arms]
    if missing:
        raise ValueError(f"arms: no storefront for variant(s) {', '.join(missing)}")
    first_day = pd.Timestamp(truth.config.end) + pd.Timedelta(days=1)
    visit = truth.visit_probability(user_ids, truth.world.day_of(first_day) + np.arange(days))
    answers = {name: answers_of(store, user_ids, model.k) for name, store in arms.items()}
    dem = demand(truth, user_ids, answers, first_day, days)
    shown = {name: dem.shown(name) for name in arms}
    item_p = {name: -np.expm1(-model.boost_days * s) for name, s in shown.items()}
    conversion = {name: round(true_conversion(visit, -np.expm1(-model.boost_days * s.sum(axis=1))), 6)
                  for name, s in shown.items()}
    lift = conversion[treatment] / conversion[control] - 1.0 if conversion[control] > 0 else float("nan")
    return ShownWorld(list(user_ids), answers, visit, item_p, dict(prices), model.click,
                      ShownTruth(conversion, round(lift, 6), control, treatment, len(user_ids), str(first_day.date())))


def draw(exp: Experiment, world: ShownWorld, seed: int = 0, start: float | None = None,
         pre_purchases: pd.DataFrame | None = None) -> tuple[list[Exposure], list[Outcome]]:
    """One run of ``exp`` (its variants named as ``world``'s arms): exposures holding the items each arm showed,
    purchases of items among them (value: the item's price; half carry the request id, half only the user) and
    clicks. Times: epoch seconds from ``start`` (default: ``days`` before now); ``pre_purchases`` (user_id, value,
    before_s): the shop's own purchases before the start (``simulate.shoppers_from_shop``), CUPED's covariate."""
    missing = [v.name for v in exp.variants if v.name not in world.answers]
    if missing:
        raise ValueError(f"arms: no storefront for variant(s) {', '.join(missing)} of experiment {exp.name!r}")
    rng = np.random.default_rng(seed)
    days, ids = world.days, world.user_ids
    start = float(start if start is not None else pd.Timestamp.now(tz="UTC").floor("D").timestamp() - days * DAY_S)
    fallback_price = float(np.median(list(world.prices.values()))) if world.prices else 1.0
    variant = [assign(exp, u) for u in ids]
    exposures: list[Exposure] = []
    outcomes: list[Outcome] = []
    if pre_purchases is not None:
        outcomes += pre_outcomes(pre_purchases, start)
    for day in range(days):
        visits = rng.random(len(ids)) < world.visit[:, day]
        for u in np.flatnonzero(visits):
            v = variant[u]
            if v is None:
                continue
            shown = world.answers[v.name][u]
            ts = start + day * DAY_S + rng.uniform(0, 80_000)
            rid = request_id(rng)
            exposures.append(Exposure(rid, exp.name, v.name, ids[u], ids[u], exp.endpoint, shown, ts))
            if shown and rng.random() < world.click:
                outcomes.append(Outcome(rid, ids[u], "view", shown[int(rng.integers(len(shown)))], 0.0, ts + 30))
            bought = rng.random(len(shown)) < world.item_p[v.name][u, :len(shown)]
            for j in np.flatnonzero(bought):
                outcomes.append(Outcome(rid if rng.random() < 0.5 else None, ids[u], "purchase", shown[j],
                                        float(world.prices.get(shown[j], fallback_price)), ts + 600 + j))
    return exposures, outcomes


def shown_traffic(exp: Experiment, truth: Truth, user_ids: list[str], arms: dict[str, Storefront],
                  prices: dict[str, float], days: int = 14, seed: int = 0, start: float | None = None,
                  model: ShownModel | None = None, treatment: str | None = None,
                  pre_purchases: pd.DataFrame | None = None) -> tuple[list[Exposure], list[Outcome], ShownTruth]:
    """``prepare`` then ``draw`` for one experiment: ``arms`` holds a storefront per variant name; the truth is of
    ``treatment`` (default: the second variant) against the first."""
    world = prepare(truth, user_ids, arms, prices, exp.variants[0].name, treatment or exp.variants[1].name, days, model)
    exposures, outcomes = draw(exp, world, seed, start, pre_purchases)
    return exposures, outcomes, world.truth
