"""A shop's purchase history measured against what the evaluation protocol needs.

The protocol (PRODUCT.md, training/pipeline.py) cuts twice: the test cutoff is the last purchase
minus ``test_days``, the validation cutoff the last purchase before it minus ``test_days``. Each
cut needs purchases before it and at least one *discovery shopper* after it: a shopper known
before the cutoff who then buys a known item they had not bought. So a shop needs more than
2 x ``test_days`` of purchases; below that ``shoprec train`` fits a popularity fallback
(training/small_shop.py). Any model at all needs purchases from 2 shoppers of 2 items.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.errors import InputError, ShortHistory

PERIODS = ("test", "validation")  # cut in this order: validation is cut from the data before the test cutoff


@dataclass
class Period:
    """One cut: purchases before the cutoff, and discovery shoppers after it (None: no cutoff at all)."""

    name: str
    cutoff: pd.Timestamp | None
    purchases_before: int
    shoppers_after: int

    @property
    def usable(self) -> bool:
        return self.purchases_before > 0 and self.shoppers_after > 0

    def describe(self) -> str:
        if self.cutoff is None:
            return f"there is no {self.name} cutoff (no purchase before the previous one)"
        return (f"the {self.name} cutoff ({self.cutoff:%Y-%m-%d %H:%M}) has {self.purchases_before:,} purchases before "
                f"it and {self.shoppers_after:,} shoppers buying something new after it")


@dataclass
class History:
    """Span and counts of the purchases, and each cut of the protocol at ``test_days``."""

    first: pd.Timestamp
    last: pd.Timestamp
    purchases: int
    shoppers: int
    items: int
    test_days: float
    periods: list[Period]

    @property
    def days(self) -> float:
        return (self.last - self.first).total_seconds() / 86400.0

    @property
    def full_protocol(self) -> bool:
        return all(p.usable for p in self.periods)

    def describe(self) -> str:
        """One line: the history and each cut, with the minimum the protocol needs."""
        cuts = ", ".join(p.describe() for p in self.periods)
        return (f"{self.days:.1f} days of purchases ({self.first:%Y-%m-%d} to {self.last:%Y-%m-%d}: {self.purchases:,} "
                f"by {self.shoppers:,} shoppers); with --test-days {self.test_days:g}, {cuts}; the protocol needs more "
                f"than {2 * self.test_days:g} days (2 x test days), with purchases before each cutoff and a shopper "
                "buying something new after it")


def measure(bought: pd.DataFrame, test_days: float) -> History:
    """``bought``: (user_id, item_id, ts) of every purchase, as ``features.interactions.purchases`` gives."""
    data, periods = bought, []
    for name in PERIODS:
        if data.empty:
            periods.append(Period(name, None, 0, 0))
            continue
        cutoff = data["ts"].max() - pd.Timedelta(days=test_days)
        earlier = (data["ts"] <= cutoff).to_numpy()
        before, after = data[earlier], data[~earlier]
        periods.append(Period(name, cutoff, len(before), discovery_shoppers(before, after)))
        data = before
    return History(bought["ts"].min(), bought["ts"].max(), len(bought), bought["user_id"].nunique(),
                   bought["item_id"].nunique(), test_days, periods)


def discovery_shoppers(before: pd.DataFrame, after: pd.DataFrame) -> int:
    """Shoppers known before a cutoff who buy, after it, a known item they had not bought (the
    test users of training/evaluate.py ``time_split``)."""
    known = after[after["user_id"].isin(before["user_id"]) & after["item_id"].isin(before["item_id"])]
    if known.empty:
        return 0
    pairs = known[["user_id", "item_id"]].drop_duplicates()
    seen = pairs.merge(before[["user_id", "item_id"]].drop_duplicates(), how="left", indicator=True)["_merge"] == "both"
    return int(pairs.loc[~seen.to_numpy(), "user_id"].nunique())


def workable_test_days(bought: pd.DataFrame, test_days: float) -> float | None:
    """The longest test period shorter than ``test_days`` at which the protocol runs on these
    purchases (tried: a third, a quarter, a sixth of the history, 14, 7, 3, 1 days), or None."""
    days = (bought["ts"].max() - bought["ts"].min()).total_seconds() / 86400.0
    tried = sorted({round(d, 1) for d in (days / 3, days / 4, days / 6, 14, 7, 3, 1) if 1 <= d < test_days},
                   reverse=True)
    return next((d for d in tried if measure(bought, d).full_protocol), None)


def short_history(bought: pd.DataFrame, test_days: float) -> ShortHistory:
    """The error for purchases too few or too short for the protocol, naming a --test-days that works."""
    history = measure(bought, test_days)
    return ShortHistory(f"too little history for the evaluation protocol: {history.describe()}",
                        _remedy(bought, test_days))


def _remedy(bought: pd.DataFrame, test_days: float) -> str:
    works = workable_test_days(bought, test_days)
    shorter = f"{works:g} works on this data" if works is not None else "none down to 1 day works on this data"
    return f"give more than {2 * test_days:g} days of history, or a shorter --test-days ({shorter})"


def require_trainable(bought: pd.DataFrame, events: pd.DataFrame | None, orders: pd.DataFrame | None) -> None:
    """Raise ``InputError`` unless some model can learn from these purchases: at least one, from
    2 shoppers, of 2 items. ``bought`` is ``purchases(events, orders)``."""
    if bought.empty:
        raise no_purchases(events, orders)
    if bought["user_id"].nunique() < 2:
        raise InputError(f"all {len(bought):,} purchases are by one shopper ({bought['user_id'].iloc[0]}): "
                         "a recommender learns from what other shoppers bought",
                         "give the purchases of at least 2 shoppers (all the shop's orders, not one customer's)")
    if bought["item_id"].nunique() < 2:
        raise InputError(f"all {len(bought):,} purchases are of one item ({bought['item_id'].iloc[0]}): "
                         "there is nothing to rank", "give the purchases of at least 2 items")


def no_purchases(events: pd.DataFrame | None, orders: pd.DataFrame | None) -> InputError:
    """The error for data without a single purchase, saying what the data holds instead."""
    if orders is not None:
        returns = int((orders["quantity"] <= 0).sum()) if len(orders) else 0
        what = (f"the orders have {len(orders):,} lines, none with quantity > 0"
                + (f" ({returns:,} returns or cancellations)" if returns else ""))
        return InputError(f"no purchases: {what}", "give order lines with a positive quantity")
    if events is None:
        return InputError("no purchases: no orders and no events given", "give --orders and/or --events")
    types = events["event_type"].value_counts()
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in types.items()) or "none"
    anonymous = int(((events["event_type"] == "purchase") & events["user_id"].isna()).sum())
    what = (f"all {anonymous:,} purchase events are anonymous (no user_id)" if anonymous else
            f"the {len(events):,} events have no purchase (by type: {kinds})")
    return InputError(f"no purchases: {what}; recommendations are trained and evaluated on purchases",
                      "give --orders, or events with event_type purchase and a user_id")
