"""Bought-together associations: item -> item rules from co-purchases in the same basket.

For a rule i -> j over N baskets: support = co(i, j) / N, confidence = co(i, j) / count(i),
lift = confidence / (count(j) / N). Rules below the thresholds are dropped; each item keeps
its ``max_per_item`` most confident rules.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, Field

from features.vocab import IdVocab


class AssociationConfig(BaseModel):
    min_count: int = Field(3, ge=1, description="baskets holding both items, at least")
    min_confidence: float = Field(0.02, ge=0, le=1, description="P(j in basket | i in basket), at least")
    min_lift: float = Field(1.5, ge=0, description="confidence over j's base rate, at least")
    max_per_item: int = Field(50, ge=1, description="rules kept per item (most confident first)")


def baskets(orders: pd.DataFrame, items: IdVocab) -> sp.csr_matrix:
    """Binary baskets x items matrix from order lines with quantity > 0 (items outside the vocabulary left out)."""
    od = orders[orders["quantity"] > 0]
    cols = items.rows(od["item_id"].astype(str).to_numpy())
    codes, _ = pd.factorize(od["order_id"].astype(str), sort=True)
    keep = cols >= 0
    m = sp.csr_matrix((np.ones(keep.sum(), np.float32), (codes[keep], cols[keep])),
                      shape=(int(codes.max()) + 1 if len(codes) else 0, len(items)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def association_rules(basket_items: sp.csr_matrix, config: AssociationConfig) -> sp.csr_matrix:
    """Items x items CSR of rule confidences (row i: what goes with i), thresholds applied."""
    n_baskets = basket_items.shape[0]
    counts = np.asarray(basket_items.sum(axis=0)).ravel()
    co = (basket_items.T @ basket_items).tocoo()
    off = co.row != co.col
    return rules_from_counts(co.row[off], co.col[off], co.data[off], counts, n_baskets, config)


def rules_from_counts(i: np.ndarray, j: np.ndarray, c: np.ndarray, counts: np.ndarray, n_baskets: int,
                      config: AssociationConfig) -> sp.csr_matrix:
    """The rules of ``association_rules`` from co-purchase counts: ``c[k]`` baskets hold items ``i[k]``
    and ``j[k]`` (i != j, item rows), ``counts`` (n_items,) baskets per item, ``n_baskets`` in all.
    Equal confidences are ordered by j, so the rules kept do not depend on the order of the pairs."""
    i, j, c, counts = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(c), np.asarray(counts)
    confidence = c / counts[i]
    lift = confidence / (counts[j] / max(n_baskets, 1))
    keep = (c >= config.min_count) & (confidence >= config.min_confidence) & (lift >= config.min_lift)
    i, j, confidence = i[keep], j[keep], confidence[keep]
    order = np.lexsort((j, -confidence, i))
    i, j, confidence = i[order], j[order], confidence[order]
    rank = np.arange(len(i)) - np.searchsorted(i, i)  # position within each item's rules
    keep = rank < config.max_per_item
    n = len(counts)
    return sp.csr_matrix((confidence[keep].astype(np.float32), (i[keep], j[keep])), shape=(n, n))
