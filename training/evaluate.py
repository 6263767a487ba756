"""The fixed, leak-free evaluation protocol of PRODUCT.md for recommenders.

Next-period discovery: the last ``test_days`` of purchases are the test period; known users
and items have a purchase up to the cutoff; a user's truth is the known items bought in
the test period and never before; recommendations exclude items bought before the cutoff.
Buy-again (repeat purchases of items bought before) is scored as a second task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import TrainingView, purchases, training_view
from training.history import no_purchases, short_history
from training.metrics import ndcg_at_k, ndcg_per_user, recall_at_k
from training.recommenders import topk

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user rows -> dense (n, n_items) scores


@dataclass
class Split:
    """What models may see (``view``: data up to the cutoff) and the test-period truth."""

    view: TrainingView
    test_users: np.ndarray  # user rows with a non-empty discovery truth
    truth: list[set[int]]  # item rows per test user
    repeat_users: np.ndarray  # user rows with a non-empty buy-again truth
    repeat_truth: list[set[int]]

    @property
    def cutoff(self) -> pd.Timestamp:
        return self.view.now

    def sample(self, n: int, seed: int = 0) -> "Split":
        """The same split with at most ``n`` of its test users (a seeded sample), for costly scorers."""
        if len(self.test_users) <= n:
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self.test_users), n, replace=False))
        return Split(self.view, self.test_users[pick], [self.truth[i] for i in pick], self.repeat_users, self.repeat_truth)

    def summary(self) -> dict:
        return {
            "cutoff": str(self.cutoff),
            "n_users": len(self.view.users),
            "n_items": len(self.view.items),
            "test_users": len(self.test_users),
            "repeat_users": len(self.repeat_users),
        }


def time_split(events: pd.DataFrame | None, orders: pd.DataFrame | None, test_days: float, engine=None) -> Split:
    """Split at (last purchase - test_days); see the module docstring for the protocol.

    Raises ``ShortHistory`` (with the numbers and a --test-days that works) when no purchase
    precedes the cutoff or no shopper buys anything new after it, ``InputError`` without purchases."""
    bought_all = purchases(events, orders)
    if bought_all.empty:
        raise no_purchases(events, orders)
    cutoff = bought_all["ts"].max() - pd.Timedelta(days=test_days)
    if not (bought_all["ts"] <= cutoff).any():
        raise short_history(bought_all, test_days)
    view = training_view(events, orders, cutoff, engine=engine)
    users, items, bought = view.users, view.items, view.bought
    future = bought_all[bought_all["ts"] > cutoff]
    known_users = np.flatnonzero(np.diff(bought.indptr) > 0)
    known_items = np.flatnonzero(np.diff(bought.tocsc().indptr) > 0)
    fu, fi = users.rows(future["user_id"]), items.rows(future["item_id"])
    keep = np.isin(fu, known_users) & np.isin(fi, known_items)
    pairs = pd.DataFrame({"u": fu[keep], "i": fi[keep]}).drop_duplicates()
    if pairs.empty:  # no known shopper buys a known item after the cutoff
        raise short_history(bought_all, test_days)
    seen = np.asarray(bought[pairs["u"].to_numpy(), pairs["i"].to_numpy()]).ravel() > 0
    test_users, truth = _group(pairs[~seen])
    repeat_users, repeat_truth = _group(pairs[seen])
    if not len(test_users):  # nothing to score a recommender on
        raise short_history(bought_all, test_days)
    return Split(view, test_users, truth, repeat_users, repeat_truth)


def _group(pairs: pd.DataFrame) -> tuple[np.ndarray, list[set[int]]]:
    if pairs.empty:
        return np.empty(0, np.int64), []
    grouped = pairs.sort_values(["u", "i"]).groupby("u")["i"].agg(lambda s: set(s.tolist()))
    return grouped.index.to_numpy(np.int64), grouped.tolist()


def score_discovery(score_fn: ScoreFn, split: Split, k: int = 10) -> dict[str, float]:
    """NDCG@k and Recall@k of ``score_fn`` on the split's test users, bought items excluded."""
    return discovery_per_user(score_fn, split, k)[0]


def discovery_per_user(score_fn: ScoreFn, split: Split, k: int = 10) -> tuple[dict[str, float], np.ndarray]:
    """``score_discovery`` and each test user's NDCG@k (for paired comparisons)."""
    return ranked_metrics(_ranked(score_fn, split.test_users, split.view.bought, k, restrict=False), split.truth, k)


def ranked_metrics(items: np.ndarray, truth: list[set[int]], k: int = 10) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of ranked item rows (n_users, >= k; -1 pads) against each user's truth, and per-user NDCG."""
    per_user = ndcg_per_user(items, truth, k)
    return ({f"ndcg@{k}": float(per_user.mean()) if len(per_user) else 0.0,
             f"recall@{k}": recall_at_k(items, truth, k), "users": len(truth)}, per_user)


def score_buy_again(score_fn: ScoreFn, split: Split, k: int = 10) -> dict[str, float]:
    """NDCG@k and Recall@k ranking only the items each user bought before the cutoff (None, not 0, when no user
    bought again in the test period: there is nothing to measure)."""
    if len(split.repeat_users) == 0:
        return {f"ndcg@{k}": None, f"recall@{k}": None, "users": 0}
    items = _ranked(score_fn, split.repeat_users, split.view.bought, k, restrict=True)
    return {f"ndcg@{k}": ndcg_at_k(items, split.repeat_truth, k),
            f"recall@{k}": recall_at_k(items, split.repeat_truth, k), "users": len(split.repeat_users)}


def _ranked(score_fn: ScoreFn, user_rows: np.ndarray, bought: sp.csr_matrix, k: int, restrict: bool) -> np.ndarray:
    out = []
    block = max(1, 20_000_000 // max(1, bought.shape[1]))
    for start in range(0, len(user_rows), block):
        rows = user_rows[start : start + block]
        scores = np.asarray(score_fn(rows), dtype=np.float32).copy()
        mask = bought[rows]
        if restrict:  # keep only previously bought items: everything else to -inf
            allowed = np.full(scores.shape, -np.inf, dtype=np.float32)
            r = np.repeat(np.arange(len(rows)), np.diff(mask.indptr))
            allowed[r, mask.indices] = scores[r, mask.indices]
            out.append(topk(allowed, k)[0])
        else:
            out.append(topk(scores, k, mask)[0])
    return np.vstack(out) if out else np.empty((0, k), np.int64)


def personal_frequency(split: Split) -> ScoreFn:
    """Buy-again baseline: how often the user bought the item before the cutoff."""
    return lambda rows: split.view.bought[rows].toarray()
