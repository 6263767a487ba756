"""Who is scored at a date, and what happened next: the churn and conversion labels.

PRODUCT.md fixes the protocol: the population at ``at`` is every customer with at least
one purchase up to ``at`` (inclusive); churn = no purchase in (at, at + horizon]; conversion
= at least one purchase in (at, at + window]. A purchase is an order line with quantity > 0
(returns and cancellations are negative lines).
"""
from __future__ import annotations

import pandas as pd

DAY = pd.Timedelta(days=1)


def purchases(orders: pd.DataFrame) -> pd.DataFrame:
    """The purchase lines of canonical orders (quantity > 0)."""
    return orders[orders["quantity"] > 0]


def customers_at(orders: pd.DataFrame, at) -> pd.Index:
    """Sorted ids of the customers with at least one purchase up to ``at``."""
    buys = purchases(orders)
    ids = buys.loc[buys["ts"] <= pd.Timestamp(at), "user_id"].unique()
    return pd.Index(sorted(ids), dtype="string", name="user_id")


def bought_within(orders: pd.DataFrame, users: pd.Index, at, days: float, end=None) -> pd.Series:
    """1 where the user bought in (at, at + days], else 0; index ``users``.

    ``end`` (default: the last order) guards against an incomplete window: the label
    would silently read "no purchase" for days the data does not cover.
    """
    at = pd.Timestamp(at)
    stop = at + days * DAY
    end = pd.Timestamp(end) if end is not None else orders["ts"].max()
    if stop > end:
        raise ValueError(f"label window ({at} + {days:g} days = {stop}) runs past the end of the data ({end})")
    buys = purchases(orders)
    buyers = buys.loc[(buys["ts"] > at) & (buys["ts"] <= stop), "user_id"].unique()
    return pd.Series(pd.Index(users).isin(buyers).astype(int), index=users, name="bought")


def churn_labels(orders: pd.DataFrame, users: pd.Index, at, horizon_days: float = 90, end=None) -> pd.Series:
    """1 = churned: no purchase in the ``horizon_days`` after ``at``."""
    return (1 - bought_within(orders, users, at, horizon_days, end)).rename("churn")


def conversion_labels(orders: pd.DataFrame, users: pd.Index, at, window_days: float = 30, end=None) -> pd.Series:
    """1 = converted: at least one purchase in the ``window_days`` after ``at``."""
    return bought_within(orders, users, at, window_days, end).rename("conversion")
