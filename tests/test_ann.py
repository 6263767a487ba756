"""Top-k searches (training/ann.py): the length-pruned search gives exact answers, the IVF index's recall
against exact search, exclusions, and where scoring every item stays in charge."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from training.ann import MIN_ITEMS, FactorIndex, NormPrunedSearch
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


def test_searched_answers_agree_with_exact_ones(wide):
    fast, exact = Storefront(wide, approximate=True), Storefront(wide)
    assert fast._user_index is not None and exact._user_index is None
    users = [f"u{i}" for i in range(0, N_USERS, 3)]
    for u in users:  # shoppers: the length-pruned search is exact
        assert fast.recommend(u, 10).item_ids == exact.recommend(u, 10).item_ids
        assert fast.session([f"i{j}" for j in (3 * int(u[1:]), 7)], 10).item_ids == \
            exact.session([f"i{j}" for j in (3 * int(u[1:]), 7)], 10).item_ids
    similar = np.mean([overlap(fast.similar_items(f"i{i}", 10), exact.similar_items(f"i{i}", 10)) for i in range(0, 3000, 30)])
    assert similar >= 0.9, similar  # the IVF index for similar items is approximate
    for u in users[:20]:  # the exclusions hold on the searched path too
        bought = set(wide.items.external(wide.bought[wide.users.row(u)].indices))
        answer = fast.recommend(u, 10, exclude_ids=["i1", "i2"])
        assert len(answer.item_ids) == 10 and not (set(answer.item_ids) & (bought | {"i1", "i2"}))
        assert answer.scores == sorted(answer.scores, reverse=True)


def test_the_length_pruned_search_is_exact_and_reads_only_the_long_vectors():
    """Item vectors whose lengths span orders of magnitude, as trained factors' do (popular items long, the
    long tail near zero): the same top n as scoring every item, for any n, a zero query and a query every
    item scores negatively on."""
    rng = np.random.default_rng(3)
    n_items, d = 30_000, 24
    items = (rng.normal(size=(n_items, d)) * np.exp(rng.normal(-3.0, 1.5, size=(n_items, 1)))).astype(np.float32)
    items[:50] = 0.0  # never sold: zero vectors
    search, positive = NormPrunedSearch(items), NormPrunedSearch(np.abs(items))
    cases = [(search, items, items[123] * 50), (search, items, rng.normal(size=d).astype(np.float32)),
             (search, items, np.zeros(d, np.float32)),
             (positive, np.abs(items), -np.abs(rng.normal(size=d)).astype(np.float32))]  # every score <= 0
    for s, vectors, q in cases:
        full = vectors @ q
        for n in (1, 10, 300, 5_000, n_items + 7):
            rows, scores = s.search(q, n)
            assert len(rows) == min(n, n_items)
            expected = np.sort(full)[::-1][: len(rows)]
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(full[rows], scores, rtol=1e-5, atol=1e-7)  # the rows carry those scores
            assert len(set(rows.tolist())) == len(rows)
    queries = [q for *_, q in cases]
    # the bound reads a small share of the catalogue for a typical query
    first = items[search.order[: search.FIRST_BLOCK]] @ queries[1]
    nth = float(np.sort(first)[-10])
    assert search._needed(nth, float(np.linalg.norm(queries[1]))) < n_items // 3


def test_filters_and_small_catalogues_use_exact_search(wide):
    fast, exact = Storefront(wide, approximate=True), Storefront(wide)
    even = Filters(category="even")
    assert fast.recommend("u1", 10, filters=even) == exact.recommend("u1", 10, filters=even)
    assert fast.similar_items("i4", 10, filters=even) == exact.similar_items("i4", 10, filters=even)
    assert Storefront(make_bundle(), approximate=True)._user_index is None  # 12 items: exact is cheap


def test_a_narrow_filter_scores_only_its_items_and_gives_the_exact_top_k(wide):
    """A category of a tenth of the catalogue (a category page): the answer is the top k of every item's score
    among that category's items, bought and excluded ones left out, with or without the length-pruned search."""
    tenth = np.where(np.arange(N_ITEMS) % 10 == 3, "rare", "common")
    bundle = dataclasses.replace(wide, catalog=wide.catalog.assign(category=tenth))
    rare = Filters(category="rare")
    for store in (Storefront(bundle, approximate=True), Storefront(bundle)):
        for user in (1, 7, 42):
            bought = set(bundle.bought[user].indices.tolist())
            excluded = [int(i) for i in np.flatnonzero(tenth == "rare")[:5]]
            full = bundle.model.scores(np.array([user]))[0]
            allowed = [i for i in np.flatnonzero(tenth == "rare") if i not in bought and i not in excluded]
            expected = sorted(allowed, key=lambda i: -full[i])[:10]
            answer = store.recommend(f"u{user}", 10, exclude_ids=[f"i{i}" for i in excluded], filters=rare)
            assert answer.item_ids == [f"i{i}" for i in expected] and answer.source == "model:als"
            np.testing.assert_allclose(answer.scores, np.round(full[expected], 6), atol=2e-6)


def test_rerank_scores_only_the_candidates_and_matches_full_scoring(wide):
    store = Storefront(wide, approximate=True)
    candidates = [f"i{i}" for i in range(0, 2000, 7)] + ["unknown-item"]
    answer = store.rerank("u5", candidates)
    full = wide.model.scores(np.array([5]))[0]
    known = [c for c in candidates if c != "unknown-item"]
    expected = sorted(known, key=lambda c: -full[int(c[1:])])
    assert answer.item_ids[:-1] == expected and answer.item_ids[-1] == "unknown-item"


def test_the_searches_can_be_turned_off_and_are_deterministic(wide):
    off = {"SHOPREC_ANN": "off"}
    assert NormPrunedSearch.for_model(wide.model, off) is None
    assert FactorIndex.for_vectors(wide.model.cosine_item_vectors(), off) is None
    a, b = (FactorIndex.for_vectors(wide.model.cosine_item_vectors(), {}) for _ in range(2))
    vector = wide.model.user_factors_[7]
    assert np.array_equal(a.search(vector, 20)[0], b.search(vector, 20)[0])
    s = NormPrunedSearch.for_model(wide.model, {})
    assert np.array_equal(s.search(vector, 20)[0], s.search(vector, 20)[0])
