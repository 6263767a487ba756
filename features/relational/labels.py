"""The population at a date and what happened next, as relational expressions (the definitions of
``features.labels`` and the customer-value protocol): a purchase is an order line with quantity > 0."""
from __future__ import annotations

import ibis

from features.relational.engine import exact_sum, f64, ts_literal
from features.labels import DAY

import pandas as pd


def purchases(orders: ibis.Table) -> ibis.Table:
    return orders.filter(orders.quantity > 0)


def customers_at(orders: ibis.Table, at) -> ibis.Table:
    """user_id of every customer with a purchase up to ``at`` (inclusive)."""
    buys = purchases(orders)
    return buys.filter(buys.ts <= ts_literal(at)).select("user_id").distinct()


def _after(orders: ibis.Table, at, days: float) -> ibis.Table:
    """Purchase lines in (at, at + days]; the bound is computed here, not by the engine."""
    buys = purchases(orders)
    stop = pd.Timestamp(at) + days * DAY
    return buys.filter((buys.ts > ts_literal(at)) & (buys.ts <= ts_literal(stop)))


def buyers_after(orders: ibis.Table, at, days: float) -> ibis.Table:
    """user_id, ``spend`` (quantity × price) and ``n`` (purchase lines) of every user who bought in
    (at, at + days]: the outcomes of those users; every other user bought nothing."""
    window = _after(orders, at, days)
    window = window.mutate(value=window.quantity * window.price)
    return window.group_by("user_id").aggregate(spend=exact_sum(window.value), n=window.count())


def outcomes(orders: ibis.Table, users: ibis.Table, at, days: float) -> ibis.Table:
    """user_id, ``bought`` (1 when the user bought in (at, at + days], else 0) and ``spend`` (quantity ×
    price of those purchases, 0.0 when none) for every row of ``users``: the churn (1 - bought over the
    horizon), conversion (bought over the window) and customer-value (spend) labels."""
    per_user = buyers_after(orders, at, days)
    t = users.select("user_id").left_join(per_user, "user_id").drop("user_id_right")
    return t.select("user_id", bought=ibis.cases((t.n > 0, 1), else_=0).cast("int64"),
                    spend=t.spend.fill_null(f64(0.0)))
