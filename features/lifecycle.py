"""Lifecycle stages, their month-over-month flows, acquisition cohorts and the shopping funnel,
all point in time: nothing after ``at`` is read.

    stages(orders, at, cfg)          -> Series user_id -> stage (customers with a purchase up to ``at``)
    transitions(orders, at, cfg)     -> counts from stage at month-end m to stage at month-end m+1
    cohorts(orders, at)              -> per first-order month and months since: customers, retention, repurchase
    funnel(events, at, by=None)      -> sessions with a view / cart / purchase by week (and segment), drop-off

Stages are rules in ``LifecycleConfig`` (first match wins), on recency (days since the last
purchase day), purchase days and the gap before the last purchase day. A purchase is an order
line with quantity > 0.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.labels import DAY, purchases

NOT_YET = "not_yet_customer"


class StageRule(BaseModel):
    """A stage: a customer is in it when every given bound holds (None: no bound)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    max_recency_days: Optional[float] = Field(None, description="last purchase at most this many days ago")
    max_tenure_days: Optional[float] = Field(None, description="first purchase at most this many days ago")
    max_purchase_days: Optional[int] = Field(None, description="at most this many distinct purchase days")
    min_purchase_days: Optional[int] = Field(None, description="at least this many distinct purchase days")
    min_gap_before_last_days: Optional[float] = Field(None, description="the last purchase came after a gap of at "
                                                      "least this many days (a comeback)")
    description: str = ""


DEFAULT_STAGES = [
    StageRule(name="new", max_tenure_days=30, description="first purchase in the last 30 days"),
    StageRule(name="reactivated", max_recency_days=30, min_purchase_days=2, min_gap_before_last_days=90,
              description="bought in the last 30 days after more than 90 days away"),
    StageRule(name="repeat", max_recency_days=30, min_purchase_days=3,
              description="bought in the last 30 days, on 3 or more days so far"),
    StageRule(name="active", max_recency_days=30, description="bought in the last 30 days"),
    StageRule(name="cooling", max_recency_days=90, description="last purchase 31 to 90 days ago"),
    StageRule(name="at_risk", max_recency_days=180, description="last purchase 91 to 180 days ago"),
    StageRule(name="lapsed", description="no purchase for more than 180 days"),
]


class LifecycleConfig(BaseModel):
    """The lifecycle stages, in order of precedence (the last should have no bound: everyone lands somewhere)."""

    model_config = ConfigDict(extra="forbid")

    stages: list[StageRule] = Field(default_factory=lambda: [s.model_copy() for s in DEFAULT_STAGES])

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def purchase_days(orders: pd.DataFrame, at) -> pd.DataFrame:
    """Distinct (user_id, day) purchase days up to ``at``, sorted."""
    buys = purchases(orders)
    buys = buys[buys["ts"] <= pd.Timestamp(at)]
    days = buys.assign(day=buys["ts"].dt.floor("D"))[["user_id", "day"]].drop_duplicates()
    return days.sort_values(["user_id", "day"], ignore_index=True)


def stage_inputs(orders: pd.DataFrame, at) -> pd.DataFrame:
    """recency_days, tenure_days, purchase_days, gap_before_last_days per customer with a purchase up to ``at``
    (in whole days: purchase days against ``at``'s day)."""
    at = pd.Timestamp(at)
    days = purchase_days(orders, at)
    g = days.groupby("user_id", sort=True)["day"]
    last = g.max()
    gaps = g.diff() / DAY
    out = pd.DataFrame({"recency_days": (at.floor("D") - last) / DAY, "tenure_days": (at.floor("D") - g.min()) / DAY,
                        "purchase_days": g.size(),
                        "gap_before_last_days": gaps.groupby(days["user_id"]).last().reindex(last.index)})
    out.index = out.index.astype("string").rename("user_id")
    return out


def stages(orders: pd.DataFrame, at, cfg: LifecycleConfig | None = None) -> pd.Series:
    """Each customer's stage at ``at`` (the first rule of ``cfg`` that holds)."""
    cfg = cfg or LifecycleConfig()
    x = stage_inputs(orders, at)
    stage = pd.Series(pd.NA, index=x.index, dtype="string", name="stage")
    for rule in cfg.stages:
        hold = pd.Series(True, index=x.index)
        if rule.max_recency_days is not None:
            hold &= x["recency_days"] <= rule.max_recency_days
        if rule.max_tenure_days is not None:
            hold &= x["tenure_days"] <= rule.max_tenure_days
        if rule.max_purchase_days is not None:
            hold &= x["purchase_days"] <= rule.max_purchase_days
        if rule.min_purchase_days is not None:
            hold &= x["purchase_days"] >= rule.min_purchase_days
        if rule.min_gap_before_last_days is not None:
            hold &= x["gap_before_last_days"].fillna(0) >= rule.min_gap_before_last_days
        stage = stage.mask(stage.isna() & hold, rule.name)
    if stage.isna().any():
        raise ValueError(f"{int(stage.isna().sum())} customers match no lifecycle stage: the last rule should have no bound")
    return stage


def month_ends(orders: pd.DataFrame, at) -> list[pd.Timestamp]:
    """The ends of the calendar months from the first order's to ``at`` (``at`` itself last)."""
    start = purchases(orders)["ts"].min()
    at = pd.Timestamp(at)
    ends = [t for t in pd.date_range(start.to_period("M").to_timestamp(), at, freq="MS")[1:]]
    return [t - pd.Timedelta(microseconds=1) for t in ends] + [at]


def transitions(orders: pd.DataFrame, at, cfg: LifecycleConfig | None = None, months: int | None = None) -> pd.DataFrame:
    """Long table (month, from_stage, to_stage, customers): each customer's stage at one month-end
    and at the next; customers acquired in between come from ``not_yet_customer``. ``months``
    keeps the latest ones."""
    ends = month_ends(orders, at)
    rows = []
    pairs = list(zip(ends[:-1], ends[1:]))
    for before, after in pairs[-months:] if months else pairs:
        a, b = stages(orders, before, cfg), stages(orders, after, cfg)
        frm = a.reindex(b.index).fillna(NOT_YET)
        counts = pd.crosstab(frm, b).stack()
        for (f, t), n in counts[counts > 0].items():
            rows.append({"month": after.strftime("%Y-%m"), "from_stage": f, "to_stage": t, "customers": int(n)})
    return pd.DataFrame(rows, columns=["month", "from_stage", "to_stage", "customers"])


def transition_matrix(flows: pd.DataFrame, cfg: LifecycleConfig | None = None) -> pd.DataFrame:
    """Row-normalised share of customers moving from each stage (rows) to each stage (columns),
    over all months of ``flows``."""
    names = (cfg or LifecycleConfig()).names
    m = flows.pivot_table(index="from_stage", columns="to_stage", values="customers", aggfunc="sum", fill_value=0)
    m = m.reindex(index=[NOT_YET] + names, columns=names, fill_value=0)
    return m.div(m.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0.0)


def cohorts(orders: pd.DataFrame, at) -> pd.DataFrame:
    """Monthly acquisition cohorts: (cohort month, months since the first order) -> cohort size,
    retention (share who bought in that month) and repurchase rate (share who have bought on a
    second day by the end of that month). Months not complete by ``at`` are left out."""
    at = pd.Timestamp(at)
    days = purchase_days(orders, at)
    month = days["day"].dt.to_period("M")
    first = month.groupby(days["user_id"]).transform("min")
    days = days.assign(cohort=first, age=(month - first).map(lambda d: d.n))
    size = days.drop_duplicates("user_id").groupby("cohort").size()
    second_day = days.groupby("user_id")["day"].nth(1)
    second = (pd.DataFrame({"user_id": days.loc[second_day.index, "user_id"], "second": second_day.dt.to_period("M")})
              .set_index("user_id")["second"])
    cohort_of = days.drop_duplicates("user_id").set_index("user_id")["cohort"]
    last_full = (at + pd.Timedelta(microseconds=1)).to_period("M") - 1 if at != at.to_period("M").end_time else at.to_period("M")
    rows = []
    for c, n in size.items():
        for age in range(0, (last_full - c).n + 1 if last_full >= c else 0):
            m = c + age
            bought = days[(days["cohort"] == c) & (days["age"] == age)]["user_id"].nunique()
            members = cohort_of[cohort_of == c].index
            repeat = int((second.reindex(members).dropna() <= m).sum())
            rows.append({"cohort": str(c), "months_since_first": age, "customers": int(n),
                         "retention": bought / n, "repurchase_rate": repeat / n})
    return pd.DataFrame(rows, columns=["cohort", "months_since_first", "customers", "retention", "repurchase_rate"])


FUNNEL_STEPS = ("view", "cart", "purchase")


def funnel(events: pd.DataFrame | None, at, by: pd.Series | None = None) -> pd.DataFrame:
    """Sessions up to ``at`` that reached each step of view -> cart -> purchase, by week (Monday) and,
    with ``by`` (user_id -> group, e.g. RFM segment), by group; drop-off is the share lost from one
    step to the next. Empty without a clickstream."""
    cols = ["week", "group", "sessions", "view", "cart", "purchase", "view_to_cart", "cart_to_purchase",
            "drop_off_view_cart", "drop_off_cart_purchase"]
    if events is None or events.empty:
        return pd.DataFrame(columns=cols)
    ev = events[events["ts"] <= pd.Timestamp(at)]
    ev = ev.assign(group=ev["user_id"].map(by).fillna("unknown").astype(str) if by is not None else "all")
    s = (ev.assign(**{k: ev["event_type"] == k for k in FUNNEL_STEPS})
         .groupby(["session_id", "group"], sort=False)
         .agg(ts=("ts", "min"), view=("view", "max"), cart=("cart", "max"), purchase=("purchase", "max")).reset_index())
    s["cart"] |= s["purchase"]  # a purchase went through a cart, whether or not the cart add was logged
    s["view"] |= s["cart"]
    s["week"] = s["ts"].dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    f = s.groupby(["week", "group"], sort=True).agg(sessions=("view", "size"), view=("view", "sum"), cart=("cart", "sum"),
                                                    purchase=("purchase", "sum")).reset_index()
    f["view_to_cart"] = f["cart"] / f["view"].where(f["view"] > 0)
    f["cart_to_purchase"] = f["purchase"] / f["cart"].where(f["cart"] > 0)
    f["drop_off_view_cart"] = 1.0 - f["view_to_cart"]
    f["drop_off_cart_purchase"] = 1.0 - f["cart_to_purchase"]
    for c in ("sessions", "view", "cart", "purchase"):
        f[c] = f[c].astype(int)
    return f[cols].replace({np.nan: None})
