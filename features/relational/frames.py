"""The relational pipeline run on an engine, answered in the shapes the pandas pipeline gives, so
that training and serving take either: the same index, columns, dtypes and order.

Inputs are pandas frames (registered with the engine) or Ibis tables already on it (Parquet read by
Spark from a lakehouse, say).
"""
from __future__ import annotations

import contextlib

import ibis
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.cooccurrence import AssociationConfig, rules_from_counts
from features.interactions import InteractionConfig, Interactions, check_shape
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
    if events_t is not None and not scalar(engine, events_t.filter(events_t.user_id.notnull()).limit(1).count()):
        events_t = None  # (the first identified event ends the scan)
    f = engine.frame(uf.user_features(orders_t, at, events_t, items_t).order_by("user_id"))
    f = f.set_index(f["user_id"].rename("user_id")).drop(columns="user_id")
    if not f.index.is_monotonic_increasing:  # the engine sorted by bytes, which is Python's order of the text
        f = f.sort_index()
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
    # only the window's buyers come back (``users`` never go to the engine); everyone else bought nothing
    buyers = engine.frame(labels.buyers_after(orders_t, at, days)).set_index("user_id")
    out = buyers.reindex(pd.Index(users).astype("string"))
    return pd.DataFrame({"bought": (out["n"].fillna(0).to_numpy() > 0).astype(int),
                         "spend": out["spend"].fillna(0.0).astype(float).to_numpy()}, index=users)


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
    vocabularies not given are every id of the log (before any window), sorted, as there. The log is
    read from the inputs once and kept in the engine; the engine numbers the ids (or joins the given
    vocabularies) and sums the weights per (row, column), so only integers and weights come back."""
    log = interactions.interaction_log(table(engine, events), table(engine, orders), config)
    if not interactions.timed(config):
        log = log.drop("ts")
    with engine.materialized(log) as log:
        if now is None and interactions.timed(config):
            now = scalar(engine, log.ts.max())
        with _vocab_rows(engine, log, user_id=users, item_id=items) as ((users, u), (items, i)):
            keyed = log.join(u, "user_id").join(i, "item_id")
            pairs = interactions.triplets(keyed, config, now, keys=("user_id_row", "item_id_row"))
            cells = engine.arrow(pairs)
    # each (row, column) comes once, so building in float32 is the float64 sum cast, as build_matrix does
    m = sp.csr_matrix((cells["weight"].to_numpy().astype(np.float32),
                       (cells["user_id_row"].to_numpy(), cells["item_id_row"].to_numpy())),
                      shape=(len(users), len(items)), dtype=np.float32)
    m.sum_duplicates()
    check_shape(m, len(users), len(items))
    return Interactions(m, users, items)


@contextlib.contextmanager
def _vocab_rows(engine, log: ibis.Table, **vocabs: IdVocab | None):
    """Per column of ``log``: (vocabulary, table of <column>, <column>_row) for as long as the block runs.
    A vocabulary not given is every id of the column, sorted and numbered by the engine (byte order, which
    is NumPy's order of the same text; checked)."""
    with contextlib.ExitStack() as stack:
        out = []
        for column, vocab in vocabs.items():
            if vocab is None:
                ids = log.select(column).distinct()
                ids = ids.mutate(**{f"{column}_row": ibis.row_number().over(order_by=ids[column]).cast("int32")})
                numbered = stack.enter_context(engine.materialized(ids))
                text = engine.arrow(numbered.order_by(f"{column}_row").select(column))[column]
                vocab = IdVocab(np.asarray(text.to_numpy(zero_copy_only=False), dtype=str))
                if len(vocab) < 2 or (vocab.ids[1:] > vocab.ids[:-1]).all():
                    out.append((vocab, numbered))
                    continue
                vocab = IdVocab(np.sort(vocab.ids))  # an engine that collates text otherwise: NumPy's order
            (t,) = stack.enter_context(_vocab_tables(engine, **{column: vocab}))
            out.append((vocab, t))
        yield out


@contextlib.contextmanager
def _vocab_tables(engine, **vocabs: IdVocab):
    """Each vocabulary as a table (<column>, <column>_row) on the engine, for as long as the block runs."""
    frames = [pd.DataFrame({column: pd.Series(v.ids.astype(str), dtype="string"),
                            f"{column}_row": np.arange(len(v), dtype=np.int32)}) for column, v in vocabs.items()]
    try:
        yield [engine.table(f) for f in frames]
    finally:
        for f in frames:
            engine.forget(f)


def copurchase_counts(engine, orders) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(item_i, item_j, co) pairs, (item_id, baskets) per item and the number of baskets."""
    baskets = copurchase.basket_items(table(engine, orders))
    pairs = engine.frame(copurchase.pair_counts(baskets)).sort_values(["item_i", "item_j"], ignore_index=True)
    counts = engine.frame(copurchase.item_counts(baskets)).sort_values("item_id", ignore_index=True)
    return pairs, counts, int(scalar(engine, copurchase.n_baskets(baskets)))


def association_rules(engine, orders, items: IdVocab, config: AssociationConfig) -> sp.csr_matrix:
    """``association_rules(baskets(orders, items), config)`` with the counting done on ``engine`` (items
    outside the vocabulary left out; their baskets still count in the number of baskets)."""
    baskets = copurchase.basket_items(table(engine, orders))
    n = int(scalar(engine, copurchase.n_baskets(baskets)))
    with _vocab_tables(engine, item_id=items) as (v,):
        per_item = engine.arrow(copurchase.item_counts(baskets).join(v, "item_id").select("item_id_row", "baskets"))
        left = v.rename(item_i="item_id", row_i="item_id_row")
        right = v.rename(item_j="item_id", row_j="item_id_row")
        pairs = engine.arrow(copurchase.pair_counts(baskets).join(left, "item_i").join(right, "item_j")
                             .select("row_i", "row_j", "co"))
    counts = np.zeros(len(items), dtype=np.float32)
    counts[per_item["item_id_row"].to_numpy()] = per_item["baskets"].to_numpy()
    return rules_from_counts(pairs["row_i"].to_numpy(), pairs["row_j"].to_numpy(),
                             pairs["co"].to_numpy().astype(np.float32), counts, n, config)
