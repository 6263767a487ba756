"""Users x items interaction matrices (CSR, float32) from canonical events and orders.

Rows and columns are owned by explicit ``IdVocab``s; ids outside them are ignored only when
the caller passes a vocabulary on purpose (evaluation), and the count is returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, Field

from features.errors import InputError
from features.vocab import IdVocab


class InteractionConfig(BaseModel):
    """How events and orders become interaction strengths."""

    view_weight: float = Field(1.0, ge=0, description="weight of one product view")
    cart_weight: float = Field(3.0, ge=0, description="weight of one cart add")
    purchase_weight: float = Field(10.0, ge=0, description="weight of one purchase (order line or event)")
    binary: bool = Field(
        False, description="1.0 per (user, item) with any interaction, ignoring weights and counts (decayed by its latest)"
    )
    half_life_days: float | None = Field(
        None, gt=0, description="time decay: an interaction half_life_days old counts half; None = no decay"
    )
    window_days: float | None = Field(
        None, gt=0, description="use only interactions of the last window_days before 'now'; None = all"
    )


@dataclass
class Interactions:
    matrix: sp.csr_matrix  # (n_users, n_items) float32
    users: IdVocab
    items: IdVocab


def event_weights(config: InteractionConfig) -> dict[str, float]:
    """The weight ``config`` gives one event of each type."""
    return {"view": config.view_weight, "cart": config.cart_weight, "purchase": config.purchase_weight}


def interaction_log(events: pd.DataFrame | None, orders: pd.DataFrame | None, config: InteractionConfig) -> pd.DataFrame:
    """One long table (user_id, item_id, ts, weight) of every positive signal.

    Purchases come from orders (quantity > 0); purchase events are used only when no orders
    are given, so a purchase is not counted twice. Anonymous events are skipped.
    """
    weights = event_weights(config)
    parts = []
    if events is not None and len(events):
        # one filter over the four columns used (each filter copies every column it keeps)
        keep = events["user_id"].notna().to_numpy(dtype=bool)
        if orders is not None:
            keep = keep & (events["event_type"] != "purchase").fillna(False).to_numpy(dtype=bool)
        ev = events[["user_id", "item_id", "ts", "event_type"]][keep]
        parts.append(
            pd.DataFrame(
                {
                    "user_id": _text(ev["user_id"]),
                    "item_id": _text(ev["item_id"]),
                    "ts": ev["ts"].to_numpy(),
                    "weight": _weights(ev["event_type"], weights),
                }
            )
        )
    if orders is not None and len(orders):
        od = orders[["user_id", "item_id", "ts"]][(orders["quantity"] > 0).to_numpy(dtype=bool)]
        parts.append(
            pd.DataFrame(
                {
                    "user_id": _text(od["user_id"]),
                    "item_id": _text(od["item_id"]),
                    "ts": od["ts"].to_numpy(),
                    "weight": np.full(len(od), config.purchase_weight),
                }
            )
        )
    if not parts:
        raise _no_interactions(events, orders)
    return pd.concat(parts, ignore_index=True)


def _no_interactions(events: pd.DataFrame | None, orders: pd.DataFrame | None) -> InputError:
    """What the data holds when no row is an interaction (no rows, every event anonymous, only returns)."""
    held = ["no events" if events is None else f"{len(events):,} events"
            + (f" ({int(events['user_id'].isna().sum()):,} anonymous)" if len(events) else ""),
            "no orders" if orders is None else f"{len(orders):,} order lines"
            + (f" ({int((orders['quantity'] <= 0).sum()):,} with quantity <= 0)" if len(orders) else "")]
    return InputError(f"no interactions to learn from: {' and '.join(held)}",
                      "give events with a user_id or order lines with a positive quantity")


def build_matrix(
    log: pd.DataFrame,
    config: InteractionConfig,
    users: IdVocab | None = None,
    items: IdVocab | None = None,
    now: pd.Timestamp | None = None,
) -> Interactions:
    """Sum the weights of ``log`` into a CSR matrix (duplicates add up).

    Ages are measured from ``now`` (default: the newest interaction). Without vocabularies
    they are built from the log (sorted ids). With them, rows whose
    user or item is outside the vocabulary are left out (used to score a fixed model space).
    """
    users, rows = _vocab_rows(log["user_id"], users)
    items, cols = _vocab_rows(log["item_id"], items)
    if config.window_days is not None or config.half_life_days is not None:
        now = now if now is not None else log["ts"].max()
        age_days = (now - log["ts"]).dt.total_seconds().to_numpy() / 86400.0
    if config.window_days is not None:
        inside = age_days <= config.window_days
        log, age_days, rows, cols = log[inside], age_days[inside], rows[inside], cols[inside]
    weight = log["weight"].to_numpy(dtype=np.float64)
    if config.half_life_days is not None:
        weight = weight * np.power(0.5, np.clip(age_days, 0, None) / config.half_life_days)
    keep = (rows >= 0) & (cols >= 0) & (weight > 0)
    rows, cols, weight = rows[keep], cols[keep], weight[keep]
    if config.binary:
        # one per (user, item), decayed by the age of the latest interaction
        decay = weight / log["weight"].to_numpy(dtype=np.float64)[keep]
        order = np.lexsort((-decay, cols, rows))
        first = np.ones(len(order), dtype=bool)
        first[1:] = (np.diff(rows[order]) != 0) | (np.diff(cols[order]) != 0)
        rows, cols, weight = rows[order][first], cols[order][first], decay[order][first]
    matrix = sp.csr_matrix((weight, (rows, cols)), shape=(len(users), len(items)), dtype=np.float64)
    matrix.sum_duplicates()
    matrix = matrix.astype(np.float32)
    check_shape(matrix, len(users), len(items))
    return Interactions(matrix, users, items)


def add_events(base: sp.csr_matrix | None, user_row: int, items: np.ndarray, kinds, config: InteractionConfig,
               n_items: int) -> sp.csr_matrix:
    """A shopper's (1, n_items) row as ``config`` builds rows: their row ``user_row`` of ``base`` (the
    training matrix under the same config; None or -1 for none) plus new events (item rows and event
    types), each weighted by the config as if it happened now (no decay, inside any window). An event
    type the config gives no weight adds nothing (a model trained on purchases does not read a view as
    one); binary: 1.0 per item."""
    weights = event_weights(config)
    cols = np.asarray(items, dtype=np.int64).reshape(-1)
    w = np.array([weights.get(kind, 0.0) for kind in kinds], dtype=np.float64)
    keep = (cols >= 0) & (w > 0)
    cols, w = cols[keep], (np.ones(int(keep.sum())) if config.binary else w[keep])
    if base is not None and user_row >= 0:  # the row's slice, without building a matrix per request
        start, end = base.indptr[user_row], base.indptr[user_row + 1]
        cols = np.concatenate([base.indices[start:end].astype(np.int64), cols])
        w = np.concatenate([base.data[start:end].astype(np.float64), w])
    unique, where = np.unique(cols, return_inverse=True)
    if config.binary:  # the latest interaction counts: a new event is 1.0, a decayed old one less
        data = np.zeros(len(unique))
        np.maximum.at(data, where, w)
    else:
        data = np.bincount(where, weights=w, minlength=len(unique))
    # int32 indices, scipy's own for a row this size: int64 ones make the constructor check them (~15 us a row)
    return sp.csr_matrix((data.astype(np.float32), unique.astype(np.int32), np.array([0, len(unique)], np.int32)),
                         shape=(1, n_items))


def _text(col: pd.Series) -> pd.api.extensions.ExtensionArray:
    """The ids as pandas text (``astype(str)``), without a round trip through Python objects."""
    return col.astype(str).array


def _weights(event_type: pd.Series, weights: dict[str, float]) -> np.ndarray:
    """float64 weight per event (NaN for a type without one), mapping the few distinct types once."""
    codes, kinds = pd.factorize(event_type)
    table = np.array([weights.get(kind, np.nan) for kind in kinds] + [np.nan], dtype=np.float64)
    return table[codes]  # code -1 (missing type) -> the trailing NaN


def _vocab_rows(ids: pd.Series, vocab: IdVocab | None) -> tuple[IdVocab, np.ndarray]:
    """The vocabulary (built from ``ids`` when None: sorted distinct values) and each id's row (-1: not in it).

    Looks up each distinct id once: the log has ~20 rows per user, and converting every row's id
    to a NumPy string for the lookup was most of ``build_matrix``'s time.
    """
    codes, distinct = pd.factorize(ids.astype(str))
    distinct = np.asarray(distinct, dtype=str)
    vocab = vocab or IdVocab(np.sort(distinct))  # an empty vocabulary counts as none, as before
    lookup = np.append(vocab.rows(distinct), -1)  # code -1 (missing id) -> -1
    return vocab, lookup[codes]


def check_shape(matrix: sp.spmatrix, n_users: int, n_items: int) -> None:
    if matrix.shape != (n_users, n_items):
        raise ValueError(
            f"interaction matrix has shape {matrix.shape}, expected (n_users, n_items) = ({n_users}, {n_items})"
        )


def purchases(events: pd.DataFrame | None, orders: pd.DataFrame | None) -> pd.DataFrame:
    """(user_id, item_id, ts) of every purchase: order lines with quantity > 0, else purchase events."""
    if orders is not None:
        od = orders[orders["quantity"] > 0]
        return pd.DataFrame({"user_id": od["user_id"].astype(str), "item_id": od["item_id"].astype(str), "ts": od["ts"]})
    if events is None:
        raise ValueError("no purchases: give orders or events")
    ev = events[(events["event_type"] == "purchase") & events["user_id"].notna()]
    return pd.DataFrame({"user_id": ev["user_id"].astype(str), "item_id": ev["item_id"].astype(str), "ts": ev["ts"]})


@dataclass
class TrainingView:
    """What a model may learn from: data up to ``now``, with fixed user and item vocabularies."""

    now: pd.Timestamp
    events: pd.DataFrame | None
    orders: pd.DataFrame | None
    users: IdVocab  # every user with an interaction up to ``now``
    items: IdVocab
    bought: sp.csr_matrix  # (n_users, n_items) float32 purchase counts up to ``now``
    engine: object = None  # features.relational.engine.Engine that builds the matrices' triplets; None: pandas

    def matrix(self, config: InteractionConfig) -> sp.csr_matrix:
        """The interaction matrix of this view, built as ``config`` says (built once per config)."""
        cache = self.__dict__.setdefault("_matrices", {})
        key = config.model_dump_json()
        if key not in cache:
            if self.engine is not None:
                from features.relational.frames import interaction_matrix

                cache[key] = interaction_matrix(self.engine, self.events, self.orders, config, self.users, self.items,
                                                now=self.now).matrix
            else:
                log = interaction_log(self.events, self.orders, config)
                cache[key] = build_matrix(log, config, self.users, self.items, now=self.now).matrix
        return cache[key]

    def until(self, now: pd.Timestamp) -> "TrainingView":
        """The same users and items, with only the data up to an earlier ``now`` (for stacked models).
        Built once per ``now``: rankers tried side by side share it and its fitted retrievers."""
        cache = self.__dict__.setdefault("_earlier_views", {})
        if now not in cache:
            cache[now] = self._until(now)
        return cache[now]

    def _until(self, now: pd.Timestamp) -> "TrainingView":
        events = None if self.events is None else self.events[self.events["ts"] <= now]
        orders = None if self.orders is None else self.orders[self.orders["ts"] <= now]
        bought_log = purchases(events, orders)
        bought = sp.csr_matrix(
            (np.ones(len(bought_log)), (self.users.rows(bought_log["user_id"]), self.items.rows(bought_log["item_id"]))),
            shape=(len(self.users), len(self.items)),
        )
        bought.sum_duplicates()
        return TrainingView(now, events, orders, self.users, self.items, bought.astype(np.float32).tocsr(), self.engine)


def training_view(events: pd.DataFrame | None, orders: pd.DataFrame | None, now: pd.Timestamp | None = None,
                  engine=None) -> TrainingView:
    """Restrict events and orders to ``ts <= now`` (default: everything) and index them; ``engine`` builds
    the view's interaction matrices (features/relational/), pandas when None."""
    if now is not None:
        events = None if events is None else events[events["ts"] <= now]
        orders = None if orders is None else orders[orders["ts"] <= now]
    log = interaction_log(events, orders, InteractionConfig())
    if log.empty:
        raise _no_interactions(events, orders)
    now = now if now is not None else log["ts"].max()
    users, items = IdVocab.from_values(log["user_id"]), IdVocab.from_values(log["item_id"])
    bought_log = purchases(events, orders)
    bought = sp.csr_matrix(
        (np.ones(len(bought_log)), (users.rows(bought_log["user_id"]), items.rows(bought_log["item_id"]))),
        shape=(len(users), len(items)),
    )
    bought.sum_duplicates()
    return TrainingView(now, events, orders, users, items, bought.astype(np.float32).tocsr(), engine)
