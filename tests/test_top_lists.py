"""Top lists (training/top_lists.py): known shoppers' answers read from the bundle are the answers computed:
the same items, in the same order, with the same reasons; scores equal to the float32 rounding of the product."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_orders
from training.bundle import ModelBundle
from training.config import Candidate, TrainConfig
from training.pipeline import fit_bundle
from training.recommenders.als import ALSConfig
from training.storefront import Filters, Storefront
from training.top_lists import TopLists

N_USERS, N_ITEMS = 120, 90


@pytest.fixture(scope="module")
def bundle():
    rng = np.random.default_rng(7)
    lines = [(f"u{u}", f"i{int(i)}", f"2024-01-{1 + u % 28:02d}") for u in range(N_USERS)
             for i in rng.choice(N_ITEMS, size=int(rng.integers(2, 9)), replace=False, p=np.r_[[3.0] * 10, [1.0] * 80] / 110)]
    orders = make_orders(lines)
    orders["order_id"] = orders["user_id"]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "category": [f"c{i % 4}" for i in range(N_ITEMS)],
                          "price": [float(i) for i in range(N_ITEMS)], "title": None, "in_stock": [i % 3 != 0 for i in range(N_ITEMS)]})
    b = fit_bundle(Candidate(name="als", model=ALSConfig(factors=6, iterations=4)), TrainConfig(), None, orders,
                   {"run_id": "r1"}, items=items)
    assert b.top_lists is None  # a narrow catalogue: scored per request, no lists
    b.top_lists = TopLists.build(b, length=20, min_items=0, block=16, threads=2)
    return b


def test_answers_from_the_lists_are_the_computed_answers(bundle):
    listed, exact = Storefront(bundle), Storefront(dataclasses.replace(bundle, top_lists=None))
    used = total = 0
    filters = [None, Filters(category="c1"), Filters(in_stock=True), Filters(max_price=45.0), Filters(category="c2", in_stock=False)]
    for u in range(N_USERS):
        for k in (1, 5, 10, 20, 25):
            for f in filters:
                for exclude in ((), (exact.recommend(f"u{u}", 3).item_ids[0], "not-an-item")):
                    got = listed.recommend(f"u{u}", k, exclude_ids=exclude, filters=f)
                    want = exact.recommend(f"u{u}", k, exclude_ids=exclude, filters=f)
                    assert (got.item_ids, got.reasons, got.source) == (want.item_ids, want.reasons, want.source)
                    # the batch product's float32 scores may differ from one row's in the last bit (BLAS order)
                    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=2e-6)
                    used += listed._listed(bundle.users.row(f"u{u}"), k, exclude, f) is not None
                    total += 1
    assert 0.3 * total < used < total  # most answers read, the rest (k > 20, narrow filters) computed
    assert listed.recommend("u1", 5, exclude_bought=False).item_ids == exact.recommend("u1", 5, exclude_bought=False).item_ids


def test_lists_leave_out_bought_items_and_carry_reasons(bundle):
    lists = bundle.top_lists
    assert lists.length == 20 and np.all(np.diff(lists.user_rows) > 0)
    for at, row in enumerate(lists.user_rows[:30]):
        bought = set(bundle.bought.indices[bundle.bought.indptr[row] : bundle.bought.indptr[row + 1]])
        assert not bought & set(lists.items[at].tolist())
        assert np.all(np.diff(lists.scores[at]) <= 0)  # best first
        assert set(lists.reasons[at].tolist()) <= bought


def test_lists_round_trip_memory_mapped_and_belong_to_their_model(bundle, tmp_path):
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    for name in ("user_rows", "items", "scores", "reasons"):
        assert isinstance(getattr(loaded.top_lists, name).base, np.memmap)  # read from the file as needed, not copied
        np.testing.assert_array_equal(getattr(loaded.top_lists, name), getattr(bundle.top_lists, name))
    assert loaded.top_lists.model is loaded.model and Storefront(loaded)._lists is loaded.top_lists
    other = dataclasses.replace(loaded, model=bundle.fallback)  # an experiment arm's model over the same bundle
    assert Storefront(other)._lists is None
    dataclasses.replace(loaded, top_lists=None).save(tmp_path / "b")  # re-saved without lists: none left behind
    assert ModelBundle.load(tmp_path / "b").top_lists is None


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="scores has shape"):
        TopLists(np.arange(3), np.zeros((3, 4), np.int32), np.zeros((2, 4), np.float32), np.zeros((3, 4), np.int32))
