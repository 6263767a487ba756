"""The LightGBM second stage: labels made in time, deterministic, saved without pickle."""
import numpy as np
import pandas as pd
import pytest

from features.interactions import InteractionConfig, training_view
from tests.conftest import make_orders
from training.config import Candidate, _trending
from training.recommenders.blend import BlendPart
from training.recommenders.popular import PopularConfig
from training.recommenders.ranker import RankerConfig
from training.pipeline import fit_candidate
from training.recommenders import load_model
from training.recommenders.als import ALSConfig
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig

rng = np.random.default_rng(0)
# 120 shoppers in 4 taste groups of 20 items; 8 purchases each over 120 days
ORDERS = make_orders([(f"u{u}", f"i{(u % 4) * 20 + int(rng.integers(0, 20))}",
                       str(pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d))))
                      for u in range(120) for d in rng.integers(0, 120, size=8)])


@pytest.fixture(scope="module")
def view():
    return training_view(None, ORDERS)


def make(**settings):
    binary = InteractionConfig(binary=True)
    retrievers = [BlendPart(interactions=binary, model=ALSConfig(factors=8, iterations=5, weighting="none")),
                  BlendPart(interactions=binary, model=EASEConfig(l2=10.0)),
                  BlendPart(interactions=_trending(7), model=PopularConfig(count="weight")),
                  BlendPart(interactions=binary, model=ItemKNNConfig(neighbours=10)),
                  BlendPart(interactions=binary, model=PopularConfig())]
    return Candidate(name="ranker", model=RankerConfig(retrievers=retrievers, n_estimators=20, candidates=10,
                                                       min_data_in_leaf=5, **settings))


def test_fit_needs_time_not_a_bare_matrix(view):
    from training.recommenders import make_model

    with pytest.raises(TypeError, match="fit_view"):
        make_model(make().model).fit(view.matrix(InteractionConfig()))


def test_recommends_within_the_taste_group_and_excludes_bought(view):
    model = fit_candidate(make(), view)
    users = np.arange(len(view.users))
    items, _ = model.recommend(users, k=3, exclude=view.bought)
    groups = np.array([int(u[1:]) % 4 for u in view.users.ids])
    item_groups = np.array([int(i[1:]) // 20 for i in view.items.ids])
    valid = items >= 0
    assert (item_groups[items[valid]] == np.repeat(groups, 3).reshape(-1, 3)[valid]).mean() > 0.8
    for u in users:
        assert not set(items[u][items[u] >= 0]) & set(view.bought[u].indices)


@pytest.mark.parametrize("linear_c", [None, 0.1])
def test_deterministic_and_save_load_identical(view, tmp_path, linear_c):
    a = fit_candidate(make(linear_c=linear_c), view)
    b = fit_candidate(make(linear_c=linear_c), view)
    np.testing.assert_array_equal(a.scores(np.arange(5)), b.scores(np.arange(5)))
    a.save(tmp_path / "r")
    assert (tmp_path / "r" / "ranker.txt").read_text().startswith("tree")
    assert (tmp_path / "r" / "linear.json").exists() == (linear_c is not None)
    again = load_model(tmp_path / "r")
    np.testing.assert_allclose(again.scores(np.arange(5)), a.scores(np.arange(5)), rtol=1e-6)
    rows = view.matrix(InteractionConfig(binary=True))[:3]
    assert np.isfinite(again.score_rows(rows)).any(axis=1).all()  # fold-in path works too


def test_stacked_label_periods_learn_from_earlier_months_where_the_history_allows(view):
    one = fit_candidate(make(), view)
    three = make().model.model_copy(update={"label_periods": 3})
    stacked = fit_candidate(Candidate(name="ranker-3", model=three), view)
    assert len(one.label_groups_) == 1 and len(stacked.label_groups_) == 3
    assert stacked.label_groups_[0] == one.label_groups_[0] and min(stacked.label_groups_) > 0
    assert not np.array_equal(stacked.scores(np.arange(5)), one.scores(np.arange(5)))
    again = fit_candidate(Candidate(name="ranker-3", model=three), view)
    np.testing.assert_array_equal(again.scores(np.arange(5)), stacked.scores(np.arange(5)))
    # 120 days of history: six 35-day periods asked, the fourth would start before the first order
    short = fit_candidate(Candidate(name="ranker-6", model=three.model_copy(update={"label_periods": 6, "label_days": 35})), view)
    assert len(short.label_groups_) == 3 and min(short.label_groups_) > 0


def test_the_linear_member_is_averaged_with_the_trees_on_every_path(view, monkeypatch):
    """With ``linear_c`` the candidates' scores are the two members' standardised scores summed, for known shoppers
    and for a folded-in row alike; without it, the trees' alone. Above ``LINEAR_MAX_ROWS`` training rows the
    linear member learns from a fixed sample."""
    import training.recommenders.ranker as ranker

    trees = fit_candidate(make(), view)
    both = fit_candidate(make(linear_c=0.1), view)
    assert trees.linear_ is None and both.linear_ is not None
    (mt, st), (ml, sl) = both.blend_["trees"], both.blend_["linear"]
    assert st > 0 and sl > 0
    users = np.arange(6)
    cand, feats = both._candidates(both._retriever_scores(users), both.bought_[users], both.history_[users])
    flat = feats.reshape(-1, feats.shape[2])
    want = ((both.booster_.predict(flat, num_threads=1) - mt) / st + (both.linear_.decision(flat) - ml) / sl).reshape(cand.shape)
    got = both.scores(users)
    valid = cand >= 0
    np.testing.assert_allclose(got[np.nonzero(valid)[0], cand[valid]], want[valid].astype(np.float32), rtol=1e-5)
    assert not np.array_equal(got, trees.scores(users))
    rows = view.matrix(InteractionConfig(binary=True))[users]
    folded = both.score_rows(rows, both.bought_[users])  # fold-in goes through the same average
    seen = []
    monkeypatch.setattr(ranker.LinearMember, "decision", lambda self, X, real=ranker.LinearMember.decision:
                        seen.append(len(X)) or real(self, X))
    np.testing.assert_array_equal(both.score_rows(rows, both.bought_[users]), folded)
    assert len(seen) == 1 and seen[0] >= len(users)  # one call over all the rows' candidates
    top = lambda s: [set(np.argsort(-r)[:5]) for r in s]  # noqa: E731
    assert np.mean([len(a & b) / 5 for a, b in zip(top(folded), top(got))]) >= 0.8
    monkeypatch.setattr(ranker, "LINEAR_MAX_ROWS", 50)
    sampled = fit_candidate(make(linear_c=0.1), view)
    again = fit_candidate(make(linear_c=0.1), view)
    assert not np.array_equal(sampled.linear_.coef, both.linear_.coef)
    np.testing.assert_array_equal(sampled.linear_.coef, again.linear_.coef)


def test_a_callers_candidates_are_all_scored_as_the_shoppers_candidates(view):
    """/rerank (Recommender.scores_of): every item a caller lists gets a score, also those that none of the retrievers
    put among the shopper's own candidates (which ``scores`` leaves at -inf); items already among them score as in
    ``scores``; the same with new events."""
    model = fit_candidate(make(), view)
    user = 3
    full = model.scores(np.array([user]))[0]
    own, outside = np.flatnonzero(np.isfinite(full)), np.flatnonzero(~np.isfinite(full))
    assert len(outside) > 0  # the shopper's candidates are a few of the catalogue (and bought items are left out)
    listed = np.concatenate([own[:5], outside[:10]])
    got = model.scores_of(listed, user)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[:5], full[own[:5]], rtol=1e-6)  # the own candidates score as in ``scores``
    bought = view.bought[user].indices[:2]
    assert np.isfinite(model.scores_of(bought, user)).all()  # a caller may list what the shopper bought
    row = view.matrix(InteractionConfig(binary=True))[user]
    items, kinds = np.array([outside[0]]), ["cart"]
    with_events = model.scores_of(listed, user, (row, items, kinds))
    assert np.isfinite(with_events).all()
    folded = model.score_events(row, user, items, kinds)[0]
    inside = np.isfinite(folded[listed])
    assert inside.any() and not inside.all()
    np.testing.assert_allclose(with_events[inside], folded[listed][inside], rtol=1e-6)  # own candidates: unchanged


def test_a_recipe_the_shop_cannot_teach_is_skipped_with_its_reason_not_a_crash(monkeypatch):
    """A 45-day shop with `--test-days 15.1` (the value train itself suggested) crashed in the search: the ranker had
    no label rows. A recipe that cannot be fitted on the shop's data is now skipped and named; a required one (a
    peer) still stops the run."""
    import types

    import training.search as search
    from training.config import Candidate
    from training.recommenders.popular import PopularConfig

    def cannot(*args):
        raise ValueError("ranker: no user has a newly bought item among the candidates in the label period")

    monkeypatch.setattr(search, "fit_model", cannot)
    said = []
    s = search._Searcher(split=types.SimpleNamespace(view=None), k=10, budget_s=60.0, progress=said.append)
    assert s.run(Candidate(name="ranker", model=PopularConfig()), "ranker") is None
    assert s.result.skipped == [{"name": "ranker", "stage": "ranker", "reason": "cannot be fitted here: ranker: no user "
                                 "has a newly bought item among the candidates in the label period"}]
    assert said[-1].startswith("skipped ranker: ")
    with pytest.raises(ValueError, match="no user has a newly bought item"):
        s.run(Candidate(name="popular", model=PopularConfig()), "peer", required=True)
