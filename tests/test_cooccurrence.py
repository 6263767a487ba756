import numpy as np
import pandas as pd
import pytest

from features.cooccurrence import AssociationConfig, association_rules, baskets
from features.vocab import IdVocab


def _orders(lines):
    return pd.DataFrame({"order_id": [o for o, _ in lines], "item_id": [i for _, i in lines], "quantity": 1.0})


def test_rules_hand_computed():
    # 4 baskets: a+b, a+b, a+c, d
    orders = _orders([("1", "a"), ("1", "b"), ("2", "a"), ("2", "b"), ("3", "a"), ("3", "c"), ("4", "d")])
    items = IdVocab(["a", "b", "c", "d"])
    rules = association_rules(baskets(orders, items), AssociationConfig(min_count=1, min_confidence=0, min_lift=0))
    # a -> b: co 2, count(a) 3 -> confidence 2/3 ; b -> a: 2/2 = 1
    assert rules[0, 1] == pytest.approx(2 / 3) and rules[1, 0] == pytest.approx(1.0)
    assert rules[0, 3] == 0 and rules[0, 0] == 0  # no rule with d, no self rule


def test_thresholds_and_cap():
    orders = _orders([("1", "a"), ("1", "b"), ("2", "a"), ("2", "b"), ("3", "a"), ("3", "c"), ("4", "d")])
    items = IdVocab(["a", "b", "c", "d"])
    strict = association_rules(baskets(orders, items), AssociationConfig(min_count=2, min_confidence=0, min_lift=0))
    assert strict.nnz == 2  # only a<->b appear in two baskets
    capped = association_rules(baskets(orders, items), AssociationConfig(min_count=1, min_confidence=0, min_lift=0,
                                                                         max_per_item=1))
    assert np.diff(capped.indptr).max() == 1 and capped[0, 1] > 0  # a keeps its most confident rule (b)


def test_returns_do_not_count():
    orders = _orders([("1", "a"), ("1", "b")])
    orders.loc[1, "quantity"] = -1.0
    assert baskets(orders, IdVocab(["a", "b"])).toarray().tolist() == [[1.0, 0.0]]
