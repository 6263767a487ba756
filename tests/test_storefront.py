"""Composition of model, fallback, rules, filters and events in the storefront answers."""
import numpy as np
import pandas as pd
import pytest

from training.storefront import Filters, Storefront
from tests.conftest import make_orders
from training.bundle import ModelBundle
from training.config import Candidate, TrainConfig
from training.pipeline import fit_bundle
from training.recommenders.als import ALSConfig

# 30 shoppers, 12 items; u bought i(u), i(u+1), i(u+2), i(u+3) (mod 12), one basket per shopper
ORDERS = make_orders(
    [(f"u{u}", f"i{(u + j) % 12}", f"2024-01-{1 + u % 28:02d}") for u in range(30) for j in range(4)]
)
ORDERS["order_id"] = ORDERS["user_id"]
ITEMS = pd.DataFrame({"item_id": [f"i{i}" for i in range(12)], "category": ["even" if i % 2 == 0 else "odd" for i in range(12)],
                      "price": [float(i) for i in range(12)], "title": None, "in_stock": [i != 6 for i in range(12)]})


def make_bundle(meta=None):
    als = Candidate(name="als", model=ALSConfig(factors=4, iterations=5, weighting="none"))
    return fit_bundle(als, TrainConfig(), None, ORDERS, meta or {"run_id": "r1"}, items=ITEMS)


@pytest.fixture(scope="module")
def store():
    return Storefront(make_bundle())


def bought(user):
    return set(ORDERS.loc[ORDERS.user_id == user, "item_id"])


def test_known_user_gets_model_answer_without_bought_items(store):
    answer = store.recommend("u1", k=5)
    assert answer.source == "model:als" and len(answer.item_ids) == 5
    assert not bought("u1") & set(answer.item_ids)
    assert all(r.startswith("because you bought i") for r in answer.reasons[:1])


def test_bought_items_can_be_kept_and_extra_items_excluded(store):
    assert bought("u1") <= set(store.recommend("u1", k=12, exclude_bought=False).item_ids)
    assert "i7" not in store.recommend("u1", k=8, exclude_ids=["i7", "not-an-item"]).item_ids


def test_unknown_user_gets_labelled_fallback(store):
    answer = store.recommend("stranger", k=3, exclude_ids=["i0"])
    assert answer.source == "fallback:trending-14d" and len(answer.item_ids) == 3 and "i0" not in answer.item_ids


def test_registered_shopper_without_interactions_gets_the_fallback():
    import dataclasses

    import scipy.sparse as sp

    bundle = make_bundle()
    rows = bundle.interactions.tolil()
    rows[bundle.users.row("u2")] = 0  # registered, nothing in the training window
    cold = Storefront(dataclasses.replace(bundle, interactions=sp.csr_matrix(rows)))
    answer = cold.recommend("u2", k=3, filters=Filters(category="even"))
    assert answer.source == "fallback:trending-14d" and len(answer.item_ids) == 3
    assert all(int(i[1:]) % 2 == 0 for i in answer.item_ids) and not bought("u2") & set(answer.item_ids)
    assert cold.recommend("u1", k=3).source == "model:als"


def test_short_lists_are_filled_from_the_fallback(store):
    answer = store.recommend("u1", k=12)  # 12 items, 4 bought: 8 left
    assert len(answer.item_ids) == 8 and len(set(answer.item_ids)) == 8


def test_filters(store):
    assert all(int(i[1:]) % 2 == 0 for i in store.recommend("u1", k=5, filters=Filters(category="even")).item_ids)
    assert "i6" not in store.recommend("u9", k=12, filters=Filters(in_stock=True)).item_ids
    cheap = store.recommend("u1", k=12, filters=Filters(min_price=5, max_price=8)).item_ids
    assert cheap and all(5 <= int(i[1:]) <= 8 for i in cheap)
    assert all(int(i[1:]) % 2 == 1 for i in store.popular(k=4, filters=Filters(category="odd")).item_ids)


def test_similar_items_known_and_unknown(store):
    answer = store.similar_items("i3", k=4)
    assert answer.source == "model:als" and "i3" not in answer.item_ids
    assert store.similar_items("nope", k=4).source.startswith("fallback:")


def test_events_fold_in_and_purchases_disappear_at_once(store):
    before = store.recommend("u1", k=3)
    top = before.item_ids[0]
    after = store.recommend("u1", k=3, events=[(top, "purchase")])
    assert after.source == "model:als+events" and top not in after.item_ids
    # a brand-new shopper with events gets personal answers, not the fallback
    fresh = store.recommend("new-shopper", k=3, events=[("i2", "view"), ("i3", "cart")])
    assert fresh.source == "model:als+events"


def test_session_recommendations(store):
    answer = store.session(["i4", "i5"], k=3)
    assert answer.source == "session:als" and not {"i4", "i5"} & set(answer.item_ids)
    assert store.session(["unknown"], k=3).source.startswith("fallback:")


def test_bought_together(store):
    answer = store.bought_together(["i4"], k=3)
    assert answer.source.startswith("together:") and "i4" not in answer.item_ids
    # i4 is always bought with i5 (and i3): they lead the complements
    assert set(answer.item_ids[:2]) & {"i3", "i5"}


def test_a_basket_without_rules_or_neighbours_gets_the_labelled_fallback():
    import dataclasses

    import scipy.sparse as sp

    bundle = make_bundle()
    no_rules = Storefront(dataclasses.replace(bundle, together=sp.csr_matrix(bundle.together.shape, dtype=np.float32)))
    no_rules._has_similarity = False  # rules alone, and none for this basket
    answer = no_rules.bought_together(["i4"], k=3, filters=Filters(category="even"))
    assert answer.source == "fallback:trending-14d" and answer.scores == sorted(answer.scores, reverse=True)
    assert all(np.isfinite(answer.scores)) and answer.scores[0] > 0  # the fallback's own scores
    assert "i4" not in answer.item_ids and all(int(i[1:]) % 2 == 0 for i in answer.item_ids)


def test_rerank_orders_known_and_keeps_unknown_at_the_end(store):
    cands = ["zz1", "i2", "i9", "zz2", "i5"]
    answer = store.rerank("u1", cands)
    assert sorted(answer.item_ids) == sorted(cands) and answer.item_ids[-2:] == ["zz1", "zz2"]
    scores = answer.scores[:3]
    assert scores == sorted(scores, reverse=True) and answer.scores[3:] == [-np.inf, -np.inf]  # unscored: null
    assert store.rerank("stranger", cands).source.startswith("fallback:")


def test_a_basket_item_named_twice_counts_once(store):
    once, twice = store.bought_together(["i4"], k=4), store.bought_together(["i4", "i4", "nope"], k=4)
    assert (twice.item_ids, twice.scores) == (once.item_ids, once.scores)


def test_save_load_same_answers(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path / "b")
    again = ModelBundle.load(tmp_path / "b")
    assert Storefront(again).recommend("u2", k=5) == Storefront(bundle).recommend("u2", k=5)
    assert again.meta["run_id"] == "r1"


def test_incomplete_bundle_is_refused(tmp_path):
    make_bundle().save(tmp_path / "b")
    (tmp_path / "b" / "bought.npz").unlink()
    with pytest.raises(FileNotFoundError, match="bought.npz"):
        ModelBundle.load(tmp_path / "b")


def test_models_without_vectors_still_give_similar_items_and_reasons():
    """An EASE blend has item weights, not vectors: similar items and reasons come from its weights."""
    from training.recommenders.blend import BlendConfig, BlendPart
    from training.recommenders.neighbours import EASEConfig
    from training.recommenders.popular import PopularConfig

    blend = Candidate(name="ease-blend", model=BlendConfig(parts=[BlendPart(model=EASEConfig(l2=1.0)),
                                                                  BlendPart(weight=0.5, model=PopularConfig())]))
    store = Storefront(fit_bundle(blend, TrainConfig(), None, ORDERS, {}, items=ITEMS))
    assert store.similar_items("i3", k=3).source == "model:ease-blend"
    assert store.recommend("u1", k=3).reasons[0].startswith("because you bought")


def _scored_then_unscored(answer) -> bool:
    """Scores never rise down the list; unscored items (-inf, written as null) only after every scored one."""
    s = np.asarray(answer.scores, dtype=float)
    return bool(np.all(np.diff(s[np.isfinite(s)]) <= 0) and np.all(np.isfinite(s[: np.isfinite(s).sum()])))


@pytest.fixture(scope="module")
def ranker_store():
    """A ranker champion on 4 taste groups of 20 items (category g0..g3, prices 1..20 within each group)."""
    from tests.test_ranker import ORDERS as GROUPS, make

    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(80)], "category": [f"g{i // 20}" for i in range(80)],
                          "price": [float(1 + i % 20) for i in range(80)], "title": None, "in_stock": True})
    return Storefront(fit_bundle(make(), TrainConfig(), None, GROUPS, {"run_id": "r1"}, items=items))


def test_a_narrow_filter_scores_its_items_for_each_shopper_with_a_ranker(ranker_store):
    """A category page of a taste group the shopper never bought from: the ranker's own candidates hold none of
    its items, so the list used to be the fallback's, the same for everyone, at score 0 under the model's name."""
    answers = {(u, g): ranker_store.recommend(u, k=5, filters=Filters(category=f"g{g}"))
               for u in ("u0", "u1", "u2") for g in (0, 3)}  # shoppers of groups 0, 1, 2
    for (user, group), answer in answers.items():
        assert answer.source == "model:ranker" and len(answer.item_ids) == 5
        assert all(int(i[1:]) // 20 == group for i in answer.item_ids)
        assert np.isfinite(answer.scores).all() and answer.scores == sorted(answer.scores, reverse=True)
        row = ranker_store.bundle.users.row(user)
        listed = ranker_store.items.rows(answer.item_ids)
        assert np.allclose(ranker_store.bundle.model.scores_of(listed, row), answer.scores, atol=1e-5)
    assert answers["u0", 0].scores != answers["u1", 0].scores  # personal, not one list for all


def test_bought_items_come_back_when_asked_for_with_a_ranker(ranker_store):
    """The ranker never proposes what a shopper bought (it learns what is bought anew): exclude_bought=false
    used to change nothing."""
    row = ranker_store.bundle.users.row("u5")
    mine = set(ranker_store.items.external(ranker_store._bought(row)))
    kept = ranker_store.recommend("u5", k=40, exclude_bought=False)
    left = ranker_store.recommend("u5", k=40)
    assert not mine & set(left.item_ids)
    again = mine & set(kept.item_ids)
    assert again and np.isfinite(kept.scores).all() and kept.scores == sorted(kept.scores, reverse=True)
    reasons = dict(zip(kept.item_ids, kept.reasons))
    assert all(reasons[i] == "you bought this before" for i in again)


def test_every_answer_lists_scored_items_first_and_unscored_ones_after(ranker_store, store):
    cheap = Filters(max_price=3.0)
    answers = [ranker_store.session(["i1", "i2"], k=12, filters=cheap), ranker_store.recommend("u3", k=12, filters=cheap),
               ranker_store.recommend("u3", k=12, filters=cheap, events=[("i30", "view")]),
               ranker_store.similar_items("i3", k=12, filters=cheap), ranker_store.bought_together(["i3"], k=12, filters=cheap),
               store.recommend("u1", k=12, filters=Filters(category="non-existent")),
               store.recommend("u1", k=12), store.rerank("u1", ["zz", "i2", "i9"])]
    for answer in answers:
        assert _scored_then_unscored(answer), answer
    assert any(not np.isfinite(a.scores).all() for a in answers)  # some were topped up: the check has something to check


def test_similar_items_under_a_filter_compare_every_item_it_lets_through():
    """Neighbours first, filter after: a price filter kept 2 of a wide catalogue's nearest items where 35 passed."""
    rng = np.random.default_rng(5)
    orders = make_orders([(f"u{u}", f"w{int(i)}", f"2024-02-{1 + u % 28:02d}")
                          for u in range(300) for i in rng.choice(400, size=6, replace=False)])
    orders["order_id"] = orders["user_id"]
    items = pd.DataFrame({"item_id": [f"w{i}" for i in range(400)], "category": "all", "price": [float(i) for i in range(400)],
                          "title": None, "in_stock": True})
    wide = Storefront(fit_bundle(Candidate(name="als", model=ALSConfig(factors=4, iterations=5, weighting="none")),
                                 TrainConfig(), None, orders, {"run_id": "r1"}, items=items))
    dear = wide.similar_items("w7", k=15, filters=Filters(min_price=380.0))  # 20 items pass
    assert len(dear.item_ids) == 15 and all(int(i[1:]) >= 380 for i in dear.item_ids)
    assert np.isfinite(dear.scores).all() and dear.scores == sorted(dear.scores, reverse=True)
    assert dear.source == "model:als"


def test_never_recommended_categories_stay_out_of_every_answer_but_rerank(tmp_path):
    """Online Retail's postage and fees (POST, DOT, BANK CHARGES: category 'non-product') topped price-filtered
    lists and 'because you bought' reasons. They stay in the data and the models; no answer recommends them."""
    import pyarrow.parquet as pq

    from training.batch import score_all

    items = ITEMS.assign(category=["non-product"] + ITEMS["category"].tolist()[1:])
    als = Candidate(name="als", model=ALSConfig(factors=4, iterations=5, weighting="none"))
    keep_all = Storefront(fit_bundle(als, TrainConfig(never_recommend=[]), None, ORDERS, {"run_id": "r"}, items=items))
    bundle = fit_bundle(als, TrainConfig(), None, ORDERS, {"run_id": "r"}, items=items)
    store = Storefront(bundle)
    users = [f"u{u}" for u in range(30)]
    assert any("i0" in keep_all.recommend(u, k=8).item_ids for u in users)  # the model would recommend it
    answers = [store.recommend(u, k=8) for u in users] + [store.recommend(u, k=12, exclude_bought=False) for u in users]
    answers += [store.recommend("u3", k=8, events=[("i1", "view")]), store.recommend("stranger", k=11),
                store.similar_items("i1", k=11), store.similar_items("i1", k=11, filters=Filters(max_price=5.0)),
                store.session(["i1", "i2"], k=11), store.bought_together(["i1"], k=11), store.popular(k=11)]
    assert not any("i0" in a.item_ids for a in answers)
    assert not any(r and r.endswith(" i0") for a in answers for r in a.reasons)  # nor "because you bought i0"
    assert any(r and r.endswith(" i0") for u in users for r in keep_all.recommend(u, k=8).reasons)
    assert "i0" in store.rerank("u1", ["i0", "i5"]).item_ids  # the caller's own list
    assert bundle.meta["never_recommend"] == ["non-product"] and bundle.never_rows().tolist() == [0]
    score_all(bundle, k=11, out_path=tmp_path / "top.parquet")
    assert "i0" not in set(pq.read_table(tmp_path / "top.parquet").column("item_id").to_pylist())
