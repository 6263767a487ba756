"""The fixed protocol of PRODUCT.md on a hand-made shop whose truth is known."""
import numpy as np
import pandas as pd
import pytest

from training.evaluate import personal_frequency, score_buy_again, score_discovery, time_split
from tests.conftest import make_orders

ORDERS = make_orders([
    ("a", "x", "2024-01-01"), ("a", "y", "2024-01-02"),
    ("b", "y", "2024-01-03"),
    ("c", "z", "2024-01-04"),
    # test period: after 2024-01-31 - 10 days = 2024-01-21
    ("a", "z", "2024-01-25"),  # new known item for a -> discovery truth
    ("a", "x", "2024-01-26"),  # bought before -> buy-again truth, not discovery
    ("b", "new", "2024-01-27"),  # item unknown before the cutoff -> ignored
    ("d", "x", "2024-01-28"),  # user unknown before the cutoff -> ignored
    ("c", "y", "2024-01-31"),
])


def test_split_follows_the_protocol():
    split = time_split(None, ORDERS, test_days=10)
    assert split.cutoff == pd.Timestamp("2024-01-21")
    users, items = split.view.users, split.view.items
    truth = {users.ids[u]: {items.ids[i] for i in t} for u, t in zip(split.test_users, split.truth)}
    assert truth == {"a": {"z"}, "c": {"y"}}
    again = {users.ids[u]: {items.ids[i] for i in t} for u, t in zip(split.repeat_users, split.repeat_truth)}
    assert again == {"a": {"x"}}


def test_nothing_after_the_cutoff_is_visible():
    split = time_split(None, ORDERS, test_days=10)
    assert split.view.orders["ts"].max() <= split.cutoff
    assert "new" not in split.view.items and "d" not in split.view.users


def test_discovery_excludes_bought_items_and_scores_hits():
    split = time_split(None, ORDERS, test_days=10)
    items = split.view.items

    def prefers(item_id):  # the same ranking for everyone: item_id first, then the rest
        def score(rows):
            s = np.zeros((len(rows), len(items)), np.float32)
            s[:, items.row(item_id)] = 1.0
            return s
        return score

    # "z": a's truth, but c bought it before -> excluded for c, so c's list starts elsewhere
    result = score_discovery(prefers("z"), split, k=1)
    assert result["users"] == 2
    assert result["recall@1"] == pytest.approx(0.5)  # a hits z; c cannot get z (already bought)


def test_buy_again_ranks_only_previous_purchases():
    split = time_split(None, ORDERS, test_days=10)
    result = score_buy_again(personal_frequency(split), split, k=1)
    assert result["users"] == 1 and 0.0 <= result["ndcg@1"] <= 1.0
    nobody_again = time_split(None, ORDERS[~((ORDERS["user_id"] == "a") & (ORDERS["item_id"] == "x")
                                              & (ORDERS["ts"] > "2024-01-21"))], test_days=10)
    assert score_buy_again(personal_frequency(nobody_again), nobody_again, k=1) == {"ndcg@1": None, "recall@1": None,
                                                                                     "users": 0}  # not 0.0


def test_no_purchases_is_an_error():
    with pytest.raises(ValueError, match="no purchases"):
        time_split(None, ORDERS.iloc[0:0], test_days=10)
