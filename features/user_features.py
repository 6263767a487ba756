"""Point-in-time user features: one row per customer, computed only from data up to ``at``.

Orders give recency, frequency, monetary value, tenure, the inter-purchase interval (mean
and the current gap relative to it), trends (last 30/90 days against the period before),
basket size and value, breadth, and returns; a clickstream, where there is one, gives
sessions, views, cart adds, cart abandonment, days since the last visit, funnel ratios and
recent intensity. A purchase is an order line with quantity > 0; lines with quantity < 0
are returns or cancellations. Times are in days (float). Rows and columns are sorted, so
the same data always gives the same frame.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.labels import DAY, purchases
from features.money import exact_sums

ORDER_FEATURES = [
    "recency_days", "frequency", "monetary", "tenure_days", "purchase_days", "mean_gap_days", "gap_ratio",
    "orders_30d", "orders_prev_30d", "orders_90d", "orders_prev_90d", "spend_30d", "spend_90d", "spend_prev_90d",
    "orders_trend_30d", "spend_trend_90d", "order_rate_30d", "basket_lines", "basket_units", "basket_value",
    "distinct_items", "repeat_item_share", "return_lines", "return_orders", "return_share",
]
CATEGORY_FEATURES = ["distinct_categories"]
EVENT_FEATURES = [
    "sessions", "sessions_30d", "sessions_prev_30d", "views", "views_30d", "carts", "carts_30d",
    "days_since_visit", "mean_visit_gap_days", "visit_gap_ratio", "cart_abandonment", "view_to_cart",
    "cart_to_purchase", "intensity_30d",
]


def _days(delta: pd.Series) -> pd.Series:
    return delta / DAY


def _pct_change(now: pd.Series, before: pd.Series) -> pd.Series:
    """(now - before) / before; NaN where there was nothing before."""
    return ((now - before) / before.where(before > 0)).astype(float)


def _window_sum(df: pd.DataFrame, at: pd.Timestamp, lo_days: float, hi_days: float, value: str | None) -> pd.Series:
    """Per user: count (value None) or exact sum (features/money.py) of ``value`` over rows with ts in
    (at - hi, at - lo]."""
    inside = df[(df["ts"] > at - hi_days * DAY) & (df["ts"] <= at - lo_days * DAY)]
    if value is None:
        return inside.groupby("user_id", sort=False).size()
    return exact_sums(inside, [value], "user_id")[value]


def order_features(orders: pd.DataFrame, at: pd.Timestamp, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """ORDER_FEATURES (+ CATEGORY_FEATURES when the catalog has categories) for every
    customer with a purchase up to ``at``; index ``user_id``."""
    at = pd.Timestamp(at)
    past = orders[orders["ts"] <= at]
    buys = purchases(past).assign(value=lambda d: d["quantity"] * d["price"])
    returns = past[past["quantity"] < 0].assign(value=lambda d: -d["quantity"] * d["price"])
    order = ["user_id", "order_id"]
    per_order = (buys.groupby(order, sort=False).agg(ts=("ts", "min"), lines=("item_id", "size"))
                 .join(exact_sums(buys, ["quantity", "value"], order).rename(columns={"quantity": "units"})).reset_index())
    g = per_order.groupby("user_id", sort=True)
    totals = exact_sums(per_order, ["value", "units"], "user_id")
    monetary = totals["value"]
    f = pd.DataFrame({
        "recency_days": _days(at - g["ts"].max()),
        "frequency": g.size().astype(float),
        "monetary": monetary,
        "tenure_days": _days(at - g["ts"].min()),
        "purchase_days": per_order.assign(day=per_order["ts"].dt.floor("D")).groupby("user_id")["day"].nunique(),
        "basket_lines": g["lines"].mean(),
        "basket_units": totals["units"] / g.size(),
        "basket_value": monetary / g.size(),
    })
    f["purchase_days"] = f["purchase_days"].astype(float)
    f["mean_gap_days"] = ((f["tenure_days"] - f["recency_days"]) / (f["purchase_days"] - 1)).where(f["purchase_days"] > 1)
    f["gap_ratio"] = f["recency_days"] / f["mean_gap_days"].clip(lower=1.0)
    for name, lo, hi, value in (("orders_30d", 0, 30, None), ("orders_prev_30d", 30, 60, None),
                                ("orders_90d", 0, 90, None), ("orders_prev_90d", 90, 180, None),
                                ("spend_30d", 0, 30, "value"), ("spend_90d", 0, 90, "value"),
                                ("spend_prev_90d", 90, 180, "value")):
        f[name] = _window_sum(per_order, at, lo, hi, value).reindex(f.index, fill_value=0).astype(float)
    f["orders_trend_30d"] = _pct_change(f["orders_30d"], f["orders_prev_30d"])
    f["spend_trend_90d"] = _pct_change(f["spend_90d"], f["spend_prev_90d"])
    f["order_rate_30d"] = f["frequency"] / f["tenure_days"].clip(lower=30.0) * 30.0
    f["distinct_items"] = buys.groupby("user_id")["item_id"].nunique().reindex(f.index).astype(float)
    item_orders = buys.groupby(["user_id", "item_id"], sort=False)["order_id"].nunique()
    f["repeat_item_share"] = (item_orders > 1).groupby("user_id").mean().reindex(f.index).astype(float)
    rg = returns.groupby("user_id")
    f["return_lines"] = rg.size().reindex(f.index, fill_value=0).astype(float)
    f["return_orders"] = rg["order_id"].nunique().reindex(f.index, fill_value=0).astype(float)
    returned = exact_sums(returns, ["value"], "user_id")["value"].reindex(f.index, fill_value=0.0)
    f["return_share"] = (returned / f["monetary"].where(f["monetary"] > 0)).astype(float)
    if has_categories(items):
        cat = buys["item_id"].map(items.drop_duplicates("item_id").set_index("item_id")["category"])
        f["distinct_categories"] = buys.assign(cat=cat).groupby("user_id")["cat"].nunique().reindex(f.index).astype(float)
    f.index = f.index.astype("string").rename("user_id")
    return f[[c for c in ORDER_FEATURES + CATEGORY_FEATURES if c in f.columns]]


def event_features(events: pd.DataFrame, at: pd.Timestamp, users: pd.Index) -> pd.DataFrame:
    """EVENT_FEATURES for ``users`` from the identified clickstream up to ``at`` (counts are 0 and
    days since visit NaN for users with no events)."""
    at = pd.Timestamp(at)
    ev = events[(events["ts"] <= at) & events["user_id"].notna()]
    ev = ev[ev["user_id"].isin(users)]
    g = ev.groupby("user_id", sort=False)
    kind = ev["event_type"]
    sessions = (ev.assign(cart=kind == "cart", bought=kind == "purchase")
                .groupby(["user_id", "session_id"], sort=False)
                .agg(ts=("ts", "min"), cart=("cart", "max"), bought=("bought", "max")).reset_index())
    sg = sessions.groupby("user_id", sort=False)
    f = pd.DataFrame(index=users)
    count = lambda s: s.reindex(users, fill_value=0).astype(float)  # noqa: E731
    f["sessions"] = count(sg.size())
    f["sessions_30d"] = count(_window_sum(sessions, at, 0, 30, None))
    f["sessions_prev_30d"] = count(_window_sum(sessions, at, 30, 60, None))
    f["views"] = count(ev[kind == "view"].groupby("user_id").size())
    f["views_30d"] = count(ev[(kind == "view") & (ev["ts"] > at - 30 * DAY)].groupby("user_id").size())
    f["carts"] = count(ev[kind == "cart"].groupby("user_id").size())
    f["carts_30d"] = count(ev[(kind == "cart") & (ev["ts"] > at - 30 * DAY)].groupby("user_id").size())
    f["days_since_visit"] = _days(at - g["ts"].max()).reindex(users).astype(float)
    span = _days(sg["ts"].max() - sg["ts"].min()).reindex(users).astype(float)
    f["mean_visit_gap_days"] = (span / (f["sessions"] - 1)).where(f["sessions"] > 1)
    f["visit_gap_ratio"] = f["days_since_visit"] / f["mean_visit_gap_days"].clip(lower=1.0)
    carted = sessions[sessions["cart"]].groupby("user_id")
    f["cart_abandonment"] = (1.0 - carted["bought"].mean()).reindex(users).astype(float)
    f["view_to_cart"] = f["carts"] / f["views"].where(f["views"] > 0)
    f["cart_to_purchase"] = count(ev[kind == "purchase"].groupby("user_id").size()) / f["carts"].where(f["carts"] > 0)
    active_days = _days(at - g["ts"].min()).reindex(users).clip(lower=30.0)
    f["intensity_30d"] = f["sessions_30d"] / (f["sessions"] / active_days * 30.0).where(f["sessions"] > 0)
    return f[EVENT_FEATURES]


def user_features(orders: pd.DataFrame, at, events: pd.DataFrame | None = None,
                  items: pd.DataFrame | None = None) -> pd.DataFrame:
    """All features at ``at`` for every customer with a purchase up to ``at`` (index user_id, sorted).

    Event features are added when ``events`` has identified users; nothing after ``at`` is read.
    """
    f = order_features(orders, at, items)
    if events is not None and events["user_id"].notna().any():
        f = f.join(event_features(events, at, f.index))
    return f.astype("float64")


def has_categories(items: pd.DataFrame | None) -> bool:
    """Whether the catalog has at least two real categories (Online Retail has none)."""
    if items is None or "category" not in items.columns:
        return False
    return items["category"].dropna().nunique() >= 2


# RFM segments on (R score, F score), the widely used map of the RFM literature
SEGMENTS = [  # (name, R scores, F scores): each (R, F) cell in exactly one segment
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyalists", (4, 5), (2, 3)),
    ("new", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need_attention", (3,), (3,)),
    ("about_to_sleep", (3,), (1, 2)),
    ("cant_lose", (1, 2), (5,)),
    ("at_risk", (1, 2), (3, 4)),
    ("hibernating", (1, 2), (1, 2)),
]
SEGMENT_NAMES = [s[0] for s in SEGMENTS]


def quintile_score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """1..5 by percentile rank among the customers scored together (ties share a score)."""
    pct = (values if higher_is_better else -values).rank(method="average", pct=True)
    return np.ceil(pct * 5).clip(1, 5).astype(int)


def rfm_segments(features: pd.DataFrame) -> pd.DataFrame:
    """r_score, f_score, m_score (1..5, 5 best) and segment for each row of ``user_features``."""
    r = quintile_score(features["recency_days"], higher_is_better=False)
    f = quintile_score(features["frequency"])
    m = quintile_score(features["monetary"])
    segment = pd.Series(pd.NA, index=features.index, dtype="string")
    for name, rs, fs in SEGMENTS:
        segment = segment.mask(r.isin(rs) & f.isin(fs), name)
    return pd.DataFrame({"r_score": r, "f_score": f, "m_score": m, "segment": segment})
