"""Reasons in words: each customer's top contributing features, as a marketer reads them.

Features that tell one story (recency, the usual gap and their ratio) form a group; a
group's weight is the sum of its features' contributions to the model's score (TreeSHAP for the
trees plus coefficient x value for the linear member, training/propensity/model.py),
and the groups pushing the score up most are phrased from the customer's own values, e.g.
"no order for 95 days, usually every 20" or "spend down 60% on the previous quarter".
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _n(x, digits: int = 0) -> str:
    return "?" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "?" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{abs(x):.0%}"


def _recency(r) -> str:
    if not math.isnan(r["mean_gap_days"]):
        return f"no order for {_n(r['recency_days'])} days, usually every {_n(r['mean_gap_days'])}"
    return f"only one day with orders so far, {_n(r['recency_days'])} days ago"


def _spend_trend(r) -> str:
    now, before = r["spend_90d"], r["spend_prev_90d"]
    if now == 0 and before == 0:
        return "nothing spent in the last 180 days"
    if now == 0:
        return f"no spend in the last 90 days, {_n(before)} the 90 before"
    if before == 0:
        return f"spent {_n(now)} in the last 90 days, nothing the 90 before"
    word = "down" if now < before else "up"
    return f"spend {word} {_pct((now - before) / before)} on the previous quarter ({_n(now)} vs {_n(before)})"


def _count(n, word: str) -> str:
    return f"{_n(n)} {word}" + ("" if n == 1 else "s")


def _orders_trend(r) -> str:
    if r["orders_90d"] == 0:
        return f"no order in the last 90 days against {_n(r['orders_prev_90d'])} the 90 before"
    return (f"{_count(r['orders_90d'], 'order')} in the last 90 days against {_n(r['orders_prev_90d'])} the 90 before; "
            f"{_n(r['orders_30d'])} in the last 30 against {_n(r['orders_prev_30d'])}")


def _breadth(r) -> str:
    if r["distinct_items"] == 1:  # "1 different item, 100% of them bought more than once" read oddly
        return "1 item only, " + ("bought once" if r["repeat_item_share"] == 0 else "bought more than once")
    return f"{_count(r['distinct_items'], 'different item')}, " + (
        "none bought twice" if r["repeat_item_share"] == 0 else f"{_pct(r['repeat_item_share'])} of them bought more than once")


def _visits(r) -> str:
    gap = r.get("mean_visit_gap_days", float("nan"))
    if math.isnan(r["days_since_visit"]):
        return "no visit recorded"
    if (r["sessions_30d"] == 0 and r["sessions_prev_30d"] == 0) or r["days_since_visit"] >= 30:
        usual = "" if math.isnan(gap) else f", usually every {_n(gap)}"
        return f"no visit for {_n(r['days_since_visit'])} days{usual}"
    return (f"{_count(r['sessions_30d'], 'visit')} in the last 30 days against {_n(r['sessions_prev_30d'])} the 30 before, "
            f"{_n(r['views_30d'])} product views, {_n(r['carts_30d'])} cart adds")


GROUPS: list[tuple[str, tuple[str, ...], callable]] = [
    ("recency", ("recency_days", "mean_gap_days", "gap_ratio"), _recency),
    ("frequency", ("frequency", "purchase_days", "order_rate_30d"),
     lambda r: f"{_count(r['frequency'], 'order')} in {_n(r['tenure_days'])} days as a customer"),
    ("monetary", ("monetary",), lambda r: f"{_n(r['monetary'])} spent in total"),
    ("tenure", ("tenure_days",), lambda r: f"first order {_n(r['tenure_days'])} days ago"),
    ("spend_trend", ("spend_90d", "spend_prev_90d", "spend_trend_90d", "spend_30d"), _spend_trend),
    ("order_trend", ("orders_30d", "orders_prev_30d", "orders_90d", "orders_prev_90d", "orders_trend_30d"), _orders_trend),
    ("basket", ("basket_lines", "basket_units", "basket_value"),
     lambda r: f"baskets of {_n(r['basket_lines'], 1)} lines worth {_n(r['basket_value'])} on average"),
    ("breadth", ("distinct_items", "distinct_categories", "repeat_item_share"),
     lambda r: _breadth(r)),
    ("returns", ("return_lines", "return_orders", "return_share"),
     lambda r: "no returns or cancellations so far" if r["return_lines"] == 0 else
     f"{_count(r['return_lines'], 'returned or cancelled line')} ({_pct(r['return_share'])} of spend)"),
    ("visits", ("days_since_visit", "mean_visit_gap_days", "visit_gap_ratio", "sessions", "sessions_30d",
                "sessions_prev_30d", "intensity_30d", "views", "views_30d", "carts", "carts_30d"), _visits),
    ("funnel", ("cart_abandonment", "view_to_cart", "cart_to_purchase"),
     lambda r: f"leaves {_pct(r['cart_abandonment'])} of carted sessions without buying"),
]


def group_contributions(contrib: pd.DataFrame) -> pd.DataFrame:
    """(n, n_groups) summed contributions of each reason group present in ``contrib``."""
    out = {}
    for name, features, _ in GROUPS:
        cols = [f for f in features if f in contrib.columns]
        if cols:
            out[name] = contrib[cols].sum(axis=1)
    return pd.DataFrame(out, index=contrib.index)


def reasons(contrib: pd.DataFrame, features: pd.DataFrame, top: int = 3) -> pd.Series:
    """Per row, up to ``top`` phrases for the groups that push the score up most (positive only)."""
    groups = group_contributions(contrib)
    phrase = {name: fn for name, _, fn in GROUPS}
    values = groups.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :top]
    names = np.asarray(groups.columns)
    out = []
    for i, (uid, row) in enumerate(features.iterrows()):
        picked = [names[j] for j in order[i] if values[i, j] > 0]
        out.append([phrase[g](row) for g in picked])
    return pd.Series(out, index=features.index, name="reasons")
