"""Labelled rows for the time-based protocol: features at a scoring date, labels after it.

PRODUCT.md: to evaluate, training rows are scored at ``end - 2*days`` and test rows at
``end - days``; the production model trains on the latest complete window (rows at
``end - days``) and scores everyone at ``end``. Every training label ends by the date the
model is then applied at, so no label overlaps the period it is judged on.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.labels import DAY, churn_labels, conversion_labels
from features.user_features import user_features

LABELS = {"churn": churn_labels, "conversion": conversion_labels}


@dataclass
class Rows:
    """Feature rows (index user_id) at one or more scoring dates, with labels when known."""

    X: pd.DataFrame
    y: pd.Series | None
    at: list[pd.Timestamp]

    def __len__(self) -> int:
        return len(self.X)


class Snapshots:
    """Feature frames by scoring date, computed once and shared by both targets."""

    def __init__(self, canonical, end=None):
        self.orders, self.events, self.items = canonical.orders, canonical.events, canonical.items
        self.engine = getattr(canonical, "engine", None)  # None: the pandas pipeline
        if self.orders is None or self.orders.empty:
            raise ValueError("propensity models need orders: the canonical orders table is missing or empty")
        self.end = pd.Timestamp(end) if end is not None else self.orders["ts"].max()
        self._cache: dict[pd.Timestamp, pd.DataFrame] = {}

    def features(self, at) -> pd.DataFrame:
        at = pd.Timestamp(at)
        if at not in self._cache:
            if self.engine is not None:
                from features.relational.frames import user_features as on_engine

                self._cache[at] = on_engine(self.engine, self.orders, at, self.events, self.items)
            else:
                self._cache[at] = user_features(self.orders, at, self.events, self.items)
        return self._cache[at]

    def rows(self, at, target: str | None = None, days: int | None = None) -> Rows:
        """Rows at ``at``; with ``target`` and ``days``, labelled from the following ``days``."""
        at = pd.Timestamp(at)
        X = self.features(at)
        if X.empty:
            raise ValueError(f"no customer has a purchase up to {at}: the data starts {self.orders['ts'].min()}")
        if target and self.engine is not None:
            from features.relational import frames

            y = getattr(frames, f"{target}_labels")(self.engine, self.orders, X.index, at, days, self.end)
        else:
            y = LABELS[target](self.orders, X.index, at, days, self.end) if target else None
        return Rows(X, y, [at])

    def stacked(self, dates: list[pd.Timestamp], target: str, days: int) -> list[Rows]:
        return [self.rows(at, target, days) for at in dates]


def training_dates(last: pd.Timestamp, snapshots: int, step_days: int) -> list[pd.Timestamp]:
    """``last`` and the ``snapshots - 1`` earlier dates, ``step_days`` apart, latest first."""
    return [pd.Timestamp(last) - k * step_days * DAY for k in range(snapshots)]


def held_out(user_ids: pd.Index, share: float, seed: int) -> np.ndarray:
    """Deterministic customer split: True for about ``share`` of the ids (salted CRC32)."""
    salt = f"{seed}:".encode()
    codes = np.fromiter((zlib.crc32(salt + u.encode()) % 10_000 for u in user_ids.astype(str)), np.int64, len(user_ids))
    return codes < share * 10_000


def fit_split(dated: list[Rows], share: float, seed: int) -> tuple[Rows, Rows]:
    """Trees learn from every date's rows of the customers not held out; the held-out
    customers' rows at the latest date stop the boosting and fit the calibration.

    Holding out whole customers (not rows) keeps a customer's earlier rows, whose labels
    can overlap the latest date's, from leaking it to the model.
    """
    latest = dated[0]
    fit_X, fit_y = [], []
    for rows in dated:
        keep = ~held_out(rows.X.index, share, seed)
        fit_X.append(rows.X[keep])
        fit_y.append(rows.y[keep])
    mask = held_out(latest.X.index, share, seed)
    fit = Rows(pd.concat(fit_X), pd.concat(fit_y), [r.at[0] for r in dated])
    return fit, Rows(latest.X[mask], latest.y[mask], latest.at)
