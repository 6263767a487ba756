"""The policy arms of an experiment (``popular``, ``trending``) as storefronts over a champion's bundle.

The running service (serving/experiments.py) and the item-level simulator (training/experiments/shown.py)
build them here, so a simulated arm answers exactly as the served one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.bundle import ModelBundle
from training.recommenders.popular import PopularRecommender
from training.storefront import Storefront


def policy_store(bundle: ModelBundle, name: str, item_scores: np.ndarray) -> Storefront:
    """The champion's catalogue and bought items, with a same-for-everyone list as the model and the fallback
    (no bought-together rules: the policy's list answers every page)."""
    model = PopularRecommender()
    model.item_scores_ = item_scores.astype(np.float32)
    no_rules = sp.csr_matrix(bundle.together.shape, dtype=np.float32)
    return Storefront(dataclasses.replace(bundle, model=model, fallback=model, together=no_rules,
                                          meta={**bundle.meta, "name": name, "fallback": name}))


def popularity(bundle: ModelBundle) -> np.ndarray:
    return PopularRecommender().fit(bundle.interactions).item_scores_


def trending_scores(bundle: ModelBundle, counts: dict[str, int]) -> np.ndarray:
    """log1p(distinct recent buyers) per item, all-time popularity (scaled below one buyer) to break ties."""
    base = popularity(bundle)
    recent = np.zeros(len(bundle.items), dtype=np.float64)
    if counts:
        rows = bundle.items.rows(list(counts))
        keep = rows >= 0
        recent[rows[keep]] = np.array(list(counts.values()), dtype=np.float64)[keep]
    span = max(float(base.max() - base.min()), 1e-9)
    return np.log1p(recent) + 0.5 * np.log1p(1) * (base - base.min()) / span


def trending_counts(orders: pd.DataFrame, days: float = 7.0) -> dict[str, int]:
    """Distinct buyers per item over the last ``days`` of ``orders`` (quantity > 0): the trending policy's
    counts, as the service counts its event log over the last ``trending_days``."""
    recent = orders[(orders["quantity"] > 0) & (orders["ts"] > orders["ts"].max() - pd.Timedelta(days=days))]
    return recent.groupby("item_id")["user_id"].nunique().to_dict()
