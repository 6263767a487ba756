"""Approximate top-k (training/ann.py): recall against exact search, exclusions, and where exact
search stays in charge."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from training.ann import MIN_ITEMS, FactorIndex
from training.storefront import Filters, Storefront
from training.recommenders.als import ALSRecommender
from tests.test_storefront import make_bundle

N_ITEMS, N_USERS, D = MIN_ITEMS + 5_000, 300, 16


@pytest.fixture(scope="module")
def wide():
    """A bundle whose ALS model has a 25k-item catalogue of clustered factors (as trained factors are)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, D))
    items = (centres[rng.integers(0, 40, N_ITEMS)] + 0.3 * rng.normal(size=(N_ITEMS, D))).astype(np.float32)
    users = (centres[rng.integers(0, 40, N_USERS)] + 0.3 * rng.normal(size=(N_USERS, D))).astype(np.float32)
    model = ALSRecommender()
    model.user_factors_, model.item_factors_ = users, items
    small = make_bundle()
    from features.vocab import IdVocab

    bought = sp.random(N_USERS, N_ITEMS, density=5 / N_ITEMS, format="csr", random_state=1, dtype=np.float32)
    bought.data[:] = 1
    catalog = pd.DataFrame({"category": np.where(np.arange(N_ITEMS) % 2 == 0, "even", "odd"),
                            "price": np.ones(N_ITEMS), "in_stock": np.ones(N_ITEMS, bool)})
    from training.recommenders.popular import PopularConfig, PopularRecommender

    fallback = PopularRecommender(PopularConfig()).fit(bought)
    return dataclasses.replace(small, model=model, fallback=fallback, users=IdVocab([f"u{i}" for i in range(N_USERS)]),
                               items=IdVocab([f"i{i}" for i in range(N_ITEMS)]), bought=bought, interactions=bought,
                               together=sp.csr_matrix((N_ITEMS, N_ITEMS), dtype=np.float32), catalog=catalog)


def overlap(a, b):
    return len(set(a.item_ids) & set(b.item_ids)) / max(1, len(b.item_ids))


def test_approximate_answers_agree_with_exact_ones(wide):
    fast, exact = Storefront(wide, approximate=True), Storefront(wide)
    assert fast._user_index is not None and exact._user_index is None
    users = [f"u{i}" for i in range(0, N_USERS, 3)]
    recall = np.mean([overlap(fast.recommend(u, 10), exact.recommend(u, 10)) for u in users])
    similar = np.mean([overlap(fast.similar_items(f"i{i}", 10), exact.similar_items(f"i{i}", 10)) for i in range(0, 3000, 30)])
    assert recall >= 0.9 and similar >= 0.9, (recall, similar)
    for u in users[:20]:  # the exclusions hold on the approximate path too
        bought = set(wide.items.external(wide.bought[wide.users.row(u)].indices))
        answer = fast.recommend(u, 10, exclude_ids=["i1", "i2"])
        assert len(answer.item_ids) == 10 and not (set(answer.item_ids) & (bought | {"i1", "i2"}))
        assert answer.scores == sorted(answer.scores, reverse=True)


def test_filters_and_small_catalogues_use_exact_search(wide):
    fast, exact = Storefront(wide, approximate=True), Storefront(wide)
    even = Filters(category="even")
    assert fast.recommend("u1", 10, filters=even) == exact.recommend("u1", 10, filters=even)
    assert fast.similar_items("i4", 10, filters=even) == exact.similar_items("i4", 10, filters=even)
    assert Storefront(make_bundle(), approximate=True)._user_index is None  # 12 items: exact is cheap


def test_rerank_scores_only_the_candidates_and_matches_full_scoring(wide):
    store = Storefront(wide, approximate=True)
    candidates = [f"i{i}" for i in range(0, 2000, 7)] + ["unknown-item"]
    answer = store.rerank("u5", candidates)
    full = wide.model.scores(np.array([5]))[0]
    known = [c for c in candidates if c != "unknown-item"]
    expected = sorted(known, key=lambda c: -full[int(c[1:])])
    assert answer.item_ids[:-1] == expected and answer.item_ids[-1] == "unknown-item"


def test_the_index_can_be_turned_off_and_is_deterministic(wide):
    assert FactorIndex.for_model(wide.model, {"SHOPREC_ANN": "off"}) is None
    a, b = FactorIndex.for_model(wide.model, {}), FactorIndex.for_model(wide.model, {})
    vector = wide.model.user_factors_[7]
    assert np.array_equal(a.search(vector, 20)[0], b.search(vector, 20)[0])
