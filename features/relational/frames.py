"""The relational pipeline run on an engine, answered in the shapes the pandas pipeline gives, so
that training and serving take either: the same index, columns, dtypes and order.

Inputs are pandas frames (registered with the engine) or Ibis tables already on it (Parquet read by
Spark from a lakehouse, say).
"""
from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.cooccurrence import AssociationConfig, rules_from_counts
from features.interactions import InteractionConfig, Interactions
from features.relational import copurchase, interactions, labels, user_features as uf
from features.vocab import IdVocab


def table(engine, data) -> ibis.Table | None:
    if data is None or isinstance(data, ibis.Table):
        return data
    return engine.table(data)


def scalar(engine, expr):
    return engine.con.execute(expr)


def user_features(engine, orders, at, events=None, items=None) -> pd.DataFrame:
    """``features.user_features.user_features`` on ``engine``: index user_id (sorted), float64 columns."""
    orders_t, events_t, items_t = table(engine, orders), table(engine, events), table(engine, items)
    if items_t is not None and not ("category" in items_t.columns and scalar(engine, items_t.category.nunique()) >= 2):
        items_t = None
    if events_t is not None and not scalar(engine, events_t.user_id.notnull().any()):
        events_t = None
    f = engine.frame(uf.user_features(orders_t, at, events_t, items_t))
    f = f.set_index(f["user_id"].astype("string").rename("user_id")).drop(columns="user_id").sort_index()
    return f.astype("float64")


def customers_at(engine, orders, at) -> pd.Index:
    ids = engine.frame(labels.customers_at(table(engine, orders), at))["user_id"]
    return pd.Index(sorted(ids), dtype="string", name="user_id")


def outcomes(engine, orders, users: pd.Index, at, days: float, end=None) -> pd.DataFrame:
    """bought (int) and spend (float) per user of ``users`` over (at, at + days], index ``users``; like
    ``features.labels.bought_within`` it refuses a window that runs past ``end`` (default: the last order)."""
    orders_t = table(engine, orders)
    at = pd.Timestamp(at)
    stop = at + days * pd.Timedelta(days=1)
    end = pd.Timestamp(end) if end is not None else pd.Timestamp(scalar(engine, orders_t.ts.max()))
    if stop > end:
        raise ValueError(f"label window ({at} + {days:g} days = {stop}) runs past the end of the data ({end})")
    who = pd.DataFrame({"user_id": pd.Series(pd.Index(users).astype(str), dtype="string")})
    out = engine.frame(labels.outcomes(orders_t, engine.table(who), at, days))
    engine.forget(who)
    out = out.set_index("user_id").reindex(pd.Index(users).astype("string"))
    return pd.DataFrame({"bought": out["bought"].astype(int).to_numpy(), "spend": out["spend"].astype(float).to_numpy()},
                        index=users)


def churn_labels(engine, orders, users, at, horizon_days: float = 90, end=None) -> pd.Series:
    return (1 - outcomes(engine, orders, users, at, horizon_days, end)["bought"]).rename("churn")


def conversion_labels(engine, orders, users, at, window_days: float = 30, end=None) -> pd.Series:
    return outcomes(engine, orders, users, at, window_days, end)["bought"].rename("conversion")


def interaction_pairs(engine, events, orders, config: InteractionConfig, now=None) -> pd.DataFrame:
    """(user_id, item_id, weight float64) per pair with a positive weight, sorted by user and item."""
    log = interactions.interaction_log(table(engine, events), table(engine, orders), config)
    if now is None and (config.window_days is not None or config.half_life_days is not None):
        now = scalar(engine, log.ts.max())
    pairs = engine.frame(interactions.triplets(log, config, now))
    return pairs.sort_values(["user_id", "item_id"], ignore_index=True)


def interaction_matrix(engine, events, orders, config: InteractionConfig, users: IdVocab | None = None,
                       items: IdVocab | None = None, now=None) -> Interactions:
    """``build_matrix(interaction_log(events, orders, config), config, users, items, now)`` on ``engine``:
    vocabularies not given are every id of the log (before any window), as there."""
    if users is None or items is None:
        log = interactions.interaction_log(table(engine, events), table(engine, orders), config)
        users = users or IdVocab(np.sort(engine.frame(log.select("user_id").distinct())["user_id"].astype(str).to_numpy()))
        items = items or IdVocab(np.sort(engine.frame(log.select("item_id").distinct())["item_id"].astype(str).to_numpy()))
    return interactions.matrix(interaction_pairs(engine, events, orders, config, now), users, items)


def copurchase_counts(engine, orders) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(item_i, item_j, co) pairs, (item_id, baskets) per item and the number of baskets."""
    baskets = copurchase.basket_items(table(engine, orders))
    pairs = engine.frame(copurchase.pair_counts(baskets)).sort_values(["item_i", "item_j"], ignore_index=True)
    counts = engine.frame(copurchase.item_counts(baskets)).sort_values("item_id", ignore_index=True)
    return pairs, counts, int(scalar(engine, copurchase.n_baskets(baskets)))


def association_rules(engine, orders, items: IdVocab, config: AssociationConfig) -> sp.csr_matrix:
    """``association_rules(baskets(orders, items), config)`` with the counting done on ``engine``."""
    pairs, counts, n = copurchase_counts(engine, orders)
    per_item = np.zeros(len(items), dtype=np.float32)
    rows = items.rows(counts["item_id"].astype(str).to_numpy())
    per_item[rows[rows >= 0]] = counts["baskets"].to_numpy()[rows >= 0]
    i, j = items.rows(pairs["item_i"].astype(str).to_numpy()), items.rows(pairs["item_j"].astype(str).to_numpy())
    keep = (i >= 0) & (j >= 0)
    return rules_from_counts(i[keep], j[keep], pairs["co"].to_numpy(dtype=np.float32)[keep], per_item, n, config)
