"""Ranking metrics of the fixed evaluation protocol (PRODUCT.md): Recall@k and NDCG@k."""
from __future__ import annotations

import numpy as np


def hits_matrix(recommended: np.ndarray, truth: list[set[int]]) -> np.ndarray:
    """Boolean (n_users, k): whether each recommended item row is in that user's truth."""
    return np.array(
        [[item in t for item in row] for row, t in zip(recommended.tolist(), truth)], dtype=bool
    ).reshape(recommended.shape)


def recall_at_k(recommended: np.ndarray, truth: list[set[int]], k: int = 10) -> float:
    """Mean of hits / min(k, |truth|) over users (users with empty truth are not allowed)."""
    hits = hits_matrix(recommended[:, :k], truth)
    denom = np.array([min(k, len(t)) for t in truth], dtype=np.float64)
    if (denom == 0).any():
        raise ValueError("every evaluated user needs a non-empty truth")
    return float(np.mean(hits.sum(axis=1) / denom)) if len(truth) else 0.0


def ndcg_per_user(recommended: np.ndarray, truth: list[set[int]], k: int = 10) -> np.ndarray:
    """Binary-gain NDCG@k of each user (float64, one per row); the ideal DCG places min(k, |truth|)
    hits at the top. Per user, so that two models can be compared user by user (paired bootstrap)."""
    if not len(truth):
        return np.empty(0, np.float64)
    hits = hits_matrix(recommended[:, :k], truth)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts[: hits.shape[1]]).sum(axis=1)
    ideal_n = np.array([min(k, len(t)) for t in truth])
    if (ideal_n == 0).any():
        raise ValueError("every evaluated user needs a non-empty truth")
    return dcg / np.cumsum(discounts)[ideal_n - 1]


def ndcg_at_k(recommended: np.ndarray, truth: list[set[int]], k: int = 10) -> float:
    """Mean of ``ndcg_per_user`` (0.0 without users)."""
    per_user = ndcg_per_user(recommended, truth, k)
    return float(per_user.mean()) if len(per_user) else 0.0
