import numpy as np
import pandas as pd
import pytest

from features.interactions import InteractionConfig, build_matrix, check_shape, interaction_log, training_view
from features.vocab import IdVocab
from tests.conftest import make_orders


def _events():
    return pd.DataFrame({
        "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03", "2024-01-04"]),
        "user_id": ["a", "a", "b", None, "a"],
        "session_id": ["s1", "s1", "s2", "s3", "s4"],
        "event_type": ["view", "cart", "view", "view", "purchase"],
        "item_id": ["x", "x", "y", "x", "y"],
        "price": np.nan, "quantity": np.nan,
    })


def test_weights_sum_per_user_item_and_anonymous_skipped():
    cfg = InteractionConfig(view_weight=1, cart_weight=3, purchase_weight=10)
    inter = build_matrix(interaction_log(_events(), None, cfg), cfg)
    m = inter.matrix
    assert m.dtype == np.float32 and m.shape == (2, 2)
    a, b = inter.users.row("a"), inter.users.row("b")
    x, y = inter.items.row("x"), inter.items.row("y")
    assert m[a, x] == 4 and m[a, y] == 10 and m[b, y] == 1 and m[b, x] == 0


def test_orders_replace_purchase_events():
    cfg = InteractionConfig(purchase_weight=10)
    orders = make_orders([("a", "y", "2024-01-04"), ("b", "x", "2024-01-05")])
    log = interaction_log(_events(), orders, cfg)
    assert (log["weight"] == 10).sum() == 2  # the purchase event is not counted twice


def test_binary_and_decay():
    orders = make_orders([("a", "x", "2024-01-01"), ("a", "x", "2024-01-11"), ("a", "y", "2024-01-01")])
    cfg = InteractionConfig(binary=True, half_life_days=10)
    m = build_matrix(interaction_log(None, orders, cfg), cfg, now=pd.Timestamp("2024-01-11")).matrix
    assert m[0, 0] == pytest.approx(1.0)  # latest interaction is today
    assert m[0, 1] == pytest.approx(0.5)  # ten days old, half-life ten days


def test_window_keeps_recent_only():
    orders = make_orders([("a", "x", "2024-01-01"), ("a", "y", "2024-01-10")])
    cfg = InteractionConfig(binary=True, window_days=5)
    inter = build_matrix(interaction_log(None, orders, InteractionConfig()), InteractionConfig())
    m = build_matrix(interaction_log(None, orders, cfg), cfg, inter.users, inter.items,
                     now=pd.Timestamp("2024-01-10")).matrix
    assert m.toarray().tolist() == [[0.0, 1.0]]


def test_fixed_vocabulary_ignores_outsiders():
    orders = make_orders([("a", "x", "2024-01-01"), ("zz", "x", "2024-01-01")])
    cfg = InteractionConfig()
    m = build_matrix(interaction_log(None, orders, cfg), cfg, IdVocab(["a"]), IdVocab(["x"])).matrix
    assert m.shape == (1, 1) and m[0, 0] == 10


def test_shape_check_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        check_shape(np.zeros((2, 3)), 3, 2)


def test_training_view_cuts_at_now():
    orders = make_orders([("a", "x", "2024-01-01"), ("b", "y", "2024-02-01")])
    view = training_view(None, orders, pd.Timestamp("2024-01-15"))
    assert view.users.ids.tolist() == ["a"] and view.bought.sum() == 1


def test_vocab_roundtrip_and_unknown(tmp_path):
    v = IdVocab.from_values(["b", "a", "b"])
    assert v.rows(["a", "b", "nope"]).tolist() == [0, 1, -1]
    v.save(tmp_path / "v.npz")
    assert IdVocab.load(tmp_path / "v.npz") == v
    with pytest.raises(ValueError, match="unique"):
        IdVocab(["a", "a"])


def test_add_events_weighs_new_events_as_the_config_builds_rows():
    """A shopper's row plus new events: weights by type, types the config ignores add nothing, items
    outside the catalogue (-1) are left out; binary rows keep 1.0 per item (a decayed old one rises to 1)."""
    import scipy.sparse as sp

    from features.interactions import InteractionConfig, add_events

    base = sp.csr_matrix(np.array([[0.0, 2.0, 0.0, 0.25]], dtype=np.float32))
    weighted = add_events(base, 0, np.array([1, 2, -1, 3]), ["view", "purchase", "purchase", "cart"], InteractionConfig(), 4)
    assert weighted.toarray().tolist() == [[0.0, 3.0, 10.0, 3.25]]
    bought_only = InteractionConfig(view_weight=0.0, cart_weight=0.0, binary=True)
    decayed = sp.csr_matrix(np.array([[0.0, 1.0, 0.0, 0.25]], dtype=np.float32))
    row = add_events(decayed, 0, np.array([0, 2, 3]), ["view", "cart", "purchase"], bought_only, 4)
    assert row.toarray().tolist() == [[0.0, 1.0, 0.0, 1.0]] and row.nnz == 2  # no stored zeros
    assert add_events(base, -1, np.array([2, 2]), ["view", "view"], InteractionConfig(), 4).toarray().tolist() == [[0, 0, 2, 0]]
