"""Quality that travels: every model kind on a catalogue wider than EASE's cap, fold-in that
leaves a shopper's list alone when nothing is new, and a test period that chooses nothing."""
import numpy as np
import pandas as pd
import pytest

from features.interactions import InteractionConfig, training_view
from training.config import Candidate, SearchSpace, TrainConfig, _trending
from training.bundle import ModelBundle
from training.pipeline import evaluate, fit_bundle, fit_candidate
from training.recommenders.als import ALSConfig
from training.recommenders.blend import BlendConfig, BlendPart
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.popular import PopularConfig
from training.recommenders.ranker import RankerConfig
from training.storefront import Storefront

BINARY = InteractionConfig(binary=True)
CAP = 40  # EASE models only the 40 most popular of ~300 items


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A shop whose catalogue (the 'wide' kind at its test size) is far wider than CAP."""
    from features.synthetic import ShopConfig, generate_shop

    paths = generate_shop(ShopConfig.preset("tiny", n_items=300, n_users=400), tmp_path_factory.mktemp("wide"))
    return pd.read_parquet(paths.orders), pd.read_parquet(paths.events)


def kinds() -> dict[str, Candidate]:
    ease = EASEConfig(l2=50.0, max_items=CAP)
    als = ALSConfig(factors=8, iterations=8)
    trend = BlendPart(interactions=_trending(7), model=PopularConfig(count="weight"))
    return {
        "popular": Candidate(name="popular", interactions=BINARY, model=PopularConfig()),
        "als": Candidate(name="als", interactions=BINARY, model=als),
        "itemknn": Candidate(name="itemknn", interactions=BINARY, model=ItemKNNConfig(neighbours=20)),
        "ease": Candidate(name="ease", interactions=BINARY, model=ease),
        "ease_trending": Candidate(name="ease_trending", model=BlendConfig(parts=[
            BlendPart(interactions=BINARY, model=ease), trend.model_copy(update={"weight": 2.0})])),
        "als_ease_trending": Candidate(name="als_ease_trending", model=BlendConfig(parts=[
            BlendPart(interactions=BINARY, model=als), BlendPart(interactions=BINARY, model=ease), trend])),
        "ranker": Candidate(name="ranker", model=RankerConfig(
            retrievers=[BlendPart(interactions=BINARY, model=ease), BlendPart(interactions=BINARY, model=als), trend],
            candidates=20, n_estimators=20, min_data_in_leaf=5, label_days=30)),
        "ranker_linear": Candidate(name="ranker_linear", model=RankerConfig(  # trees + linear member (linear_c)
            retrievers=[BlendPart(interactions=BINARY, model=ease), BlendPart(interactions=BINARY, model=als), trend],
            candidates=20, n_estimators=20, min_data_in_leaf=5, label_days=30, linear_c=0.1)),
    }


@pytest.mark.parametrize("kind", list(kinds()))
def test_every_kind_scores_a_catalogue_wider_than_the_cap_without_nan(shop, kind):
    orders, events = shop
    view = training_view(events, orders)
    assert len(view.items) > 5 * CAP
    model = fit_candidate(kinds()[kind], view)
    users = np.arange(min(50, len(view.users)))
    scores = model.scores(users)
    assert not np.isnan(scores).any(), f"{kind}: NaN scores"
    items, best = model.recommend(users, k=10, exclude=view.bought[users])
    assert (items[:, 0] >= 0).all() and np.isfinite(best[:, 0]).all(), f"{kind}: users without a recommendation"
    folded = model.score_rows(view.matrix(BINARY)[users], view.bought[users])
    assert not np.isnan(folded).any(), f"{kind}: NaN through fold-in"
    if kind == "ease_trending":  # items outside EASE's cap are still recommendable through trending
        assert np.isfinite(scores).all()


@pytest.mark.parametrize("kind", list(kinds()))
def test_fold_in_with_nothing_new_keeps_the_list(shop, kind):
    """Same history, no new information: the answer through fold-in (one event the model has
    already seen) matches the answer for the known shopper, top-10 overlap >= 0.9 on average."""
    orders, events = shop
    bundle = fit_bundle(kinds()[kind], TrainConfig(), events, orders, {"run_id": "r"})
    store = Storefront(bundle)
    last = orders.sort_values("ts").groupby("user_id").tail(1)
    overlaps = []
    for uid, item in list(zip(last["user_id"], last["item_id"]))[:60]:
        plain = store.recommend(str(uid), 10).item_ids
        folded = store.recommend(str(uid), 10, events=[(str(item), "purchase")]).item_ids
        assert store.recommend(str(uid), 10, events=[(str(item), "purchase")]).source.endswith("+events")
        overlaps.append(len(set(plain) & set(folded)) / 10)
    assert np.mean(overlaps) >= 0.9, f"{kind}: mean top-10 overlap {np.mean(overlaps):.3f}"


PURCHASES = InteractionConfig(view_weight=0.0, cart_weight=0.0, binary=True)


def mixed() -> dict[str, Candidate]:
    """Composite models whose parts read different rows, as the search builds them: ALS on every event
    weighted (the bundle's row config), EASE and item-kNN on purchases alone (a drawn shop's champion)."""
    parts = [BlendPart(interactions=InteractionConfig(), model=ALSConfig(factors=8, iterations=8)),
             BlendPart(interactions=PURCHASES, model=EASEConfig(l2=50.0, max_items=CAP)),
             BlendPart(interactions=PURCHASES, model=ItemKNNConfig(neighbours=20))]
    trend = BlendPart(interactions=_trending(7), model=PopularConfig(count="weight"))
    return {"blend": Candidate(name="blend", model=BlendConfig(parts=parts)),
            "ranker": Candidate(name="ranker", model=RankerConfig(retrievers=[*parts, trend], candidates=20,
                                                                  n_estimators=20, min_data_in_leaf=5, label_days=30)),
            "ranker_linear": Candidate(name="ranker_linear", model=RankerConfig(
                retrievers=[*parts, trend], candidates=20, n_estimators=20, min_data_in_leaf=5, label_days=30, linear_c=0.1))}


@pytest.mark.parametrize("kind", list(mixed()))
def test_fold_in_gives_each_part_the_row_it_was_trained_on(shop, kind, tmp_path):
    """A shopper's latest interaction replayed as a new event (a view, mostly: what training/served.py
    replays) leaves the list alone: the purchases-only parts do not read the view as a purchase. With
    one row for every part (before part rows) the overlap was 0.56 (blend) and 0.49 (ranker) here; what is
    left is ALS's fold-in of a row with the event counted twice."""
    orders, events = shop
    bundle = fit_bundle(mixed()[kind], TrainConfig(), events, orders, {"run_id": "r"})
    assert bundle.meta["row_interactions"]["view_weight"] > 0  # the bundle's rows count views
    store = Storefront(bundle)
    last = events[events["user_id"].notna()].sort_values("ts").groupby("user_id").tail(1)
    assert (last["event_type"] == "view").mean() > 0.5
    overlaps = []
    for uid, item, event_type in list(zip(last["user_id"], last["item_id"], last["event_type"]))[:60]:
        plain = store.recommend(str(uid), 10).item_ids
        folded = store.recommend(str(uid), 10, events=[(str(item), str(event_type))])
        assert folded.source.endswith("+events")
        overlaps.append(len(set(plain) & set(folded.item_ids)) / 10)
    assert np.mean(overlaps) >= 0.9, f"{kind}: mean top-10 overlap {np.mean(overlaps):.3f}"
    bundle.save(tmp_path / "bundle")  # what the service loads keeps each part's rows
    again = Storefront(ModelBundle.load(tmp_path / "bundle"))
    assert again.bundle.model.part_rows_ is not None
    for uid, item, event_type in list(zip(last["user_id"], last["item_id"], last["event_type"]))[:10]:
        new_event = [(str(item), str(event_type))]
        assert again.recommend(str(uid), 10, events=new_event) == store.recommend(str(uid), 10, events=new_event)


def test_a_part_reads_its_training_row_plus_only_the_events_its_config_weighs(shop):
    """Row-reading parts (EASE, item-kNN on purchases) score a known shopper with nothing new exactly as
    they score them known; a view adds nothing to them, a purchase adds the item, for every part."""
    from training.recommenders.blend import BlendRecommender

    orders, events = shop
    view = training_view(events, orders)
    parts = mixed()["blend"].model.parts[1:]
    model = BlendRecommender(BlendConfig(parts=parts)).fit_view(view)
    user = int(np.flatnonzero(np.diff(view.bought.indptr) > 1)[0])
    row = view.matrix(InteractionConfig())[user]
    none = np.empty(0, np.int64)
    assert np.allclose(model.score_events(row, user, none, []), model.scores(np.array([user])), atol=1e-5)
    popular = np.argsort(-np.diff(view.bought.tocsc().indptr), kind="stable")
    item = int(next(i for i in popular if i not in set(view.bought[user].indices)))  # in EASE's cap, with neighbours
    viewed = model.score_events(row, user, np.array([item]), ["view"])
    assert np.allclose(viewed, model.scores(np.array([user])), atol=1e-5)
    bought = model.score_events(row, user, np.array([item]), ["purchase"])
    assert not np.allclose(bought, viewed)
    assert model.part_rows_.row(0, user, np.array([item]), ["purchase"], len(view.items))[0, item] == 1.0


@pytest.mark.parametrize("kind", list(kinds()))
def test_every_kind_passes_the_services_smoke_test(shop, kind):
    """What the search may choose, the service must load: the reload smoke test accepts every kind,
    including recipes on purchases alone (browsers have empty rows) and models that leave items -inf."""
    from serving.reload import smoke_test

    orders, events = shop
    candidate = kinds()[kind]
    bought_only = InteractionConfig(view_weight=0.0, cart_weight=0.0, binary=True)
    if kind in ("als", "ease", "itemknn", "popular"):
        candidate = candidate.model_copy(update={"interactions": bought_only})
    bundle = fit_bundle(candidate, TrainConfig(), events, orders, {"run_id": "r"})
    if kind in ("als", "ease", "itemknn", "popular"):  # shoppers who only browse have empty rows
        assert (np.diff(bundle.interactions.indptr) == 0).any()
    smoke_test(Storefront(bundle))


def test_the_test_period_chooses_nothing(shop):
    """Scrambling what was bought in the test period changes the test figures, never the search,
    the validation scores or the choice."""
    orders, events = shop
    space = SearchSpace(trending_half_life_days=[3.0, 14.0], als=[ALSConfig(factors=8, iterations=5)], ease_l2=[50.0],
                        ease_max_items=CAP, itemknn_neighbours=[20], blend_weights=[1.0, 4.0], weighted_rows=False,
                        ranker={"enabled": False})
    config = TrainConfig(search=space)
    first = evaluate(config, events, orders)
    cutoff = pd.Timestamp(first.splits["test"]["cutoff"])
    scrambled = orders.copy()
    later = scrambled["ts"] > cutoff
    scrambled.loc[later, "item_id"] = scrambled.loc[later, "item_id"].sample(frac=1, random_state=3).to_numpy()
    ev = events.copy()
    ev.loc[ev["ts"] > cutoff, "item_id"] = ev.loc[ev["ts"] > cutoff, "item_id"].sample(frac=1, random_state=4).to_numpy()
    second = evaluate(config, ev, scrambled)
    strip = lambda v: {n: {k: x for k, x in m.items() if k != "seconds"} for n, m in v.items()}  # noqa: E731
    assert strip(second.validation) == strip(first.validation)
    assert second.chosen == first.chosen and second.selection == first.selection
    assert second.test != first.test  # the scramble did reach the test period


def test_the_finalists_are_chosen_on_validation_and_the_period_before_it(shop):
    """The best few recipes, the best peer and the shop's champion recipe are scored again on the
    period before validation; the choice and the gate compare them on both periods' users."""
    orders, events = shop
    space = SearchSpace(trending_half_life_days=[3.0, 14.0], trending_window_days=[30.0], als=[ALSConfig(factors=8, iterations=5)],
                        ease_l2=[50.0], ease_max_items=CAP, itemknn_neighbours=[20], blend_weights=[1.0, 4.0],
                        weighted_rows=False, ranker={"enabled": False}, finalists=2)
    incumbent = Candidate(name="trending-14d", interactions=_trending(14), model=PopularConfig(count="weight"))
    result = evaluate(TrainConfig(search=space), events, orders, incumbent=incumbent)
    back = result.backtest
    finalists = back["finalists"]
    contenders = {n: m["ndcg@10"] for n, m in result.validation.items() if not n.startswith("champion.")}
    top_two = sorted(contenders, key=lambda n: (-contenders[n], n))[:2]
    best_peer = max((n for n in contenders if n.startswith("peer.")), key=lambda n: (contenders[n], n))
    assert set(finalists) == {*top_two, best_peer, "champion.trending-14d"}
    users = result.splits["validation"]["test_users"] + back["split"]["test_users"]
    assert back["split"]["cutoff"] < result.splits["validation"]["cutoff"]
    for name, f in finalists.items():
        assert f["users"] == users
        assert f["validation"] == pytest.approx(result.validation[name]["ndcg@10"], abs=1e-6)
        share = result.splits["validation"]["test_users"] / users  # both periods' users together
        assert f["both"] == pytest.approx(share * f["validation"] + (1 - share) * f["earlier"], abs=1e-5)
    assert result.chosen in finalists or result.chosen == "trending-14d"
    assert result.selection["basis"] == "validation and the period before it"
    assert result.selection["best"] == max((n for n in finalists if not n.startswith("champion.")),
                                           key=lambda n: finalists[n]["both"])
    assert "validation and the period before it" in result.gate["reason"]


def test_a_recipe_under_two_names_is_one_finalist():
    """The search's trending-buyers-7d is PRODUCT.md's trending peer: it takes one finalist place,
    under the name that ranks first, and the next distinct recipe takes the other."""
    from training.pipeline import _finalists
    from training.search import _bought_within
    from training.selection import Trial

    def trial(name, model, score, interactions=_bought_within(7)):
        return Trial(Candidate(name=name, interactions=interactions, model=model), {}, np.full(4, score), "test")

    buyers = PopularConfig(count="users")
    contenders = {t.candidate.name: t for t in (
        trial("peer.trending-7d", buyers, 0.30), trial("trending-buyers-7d", buyers, 0.30),
        trial("trending-buyers-30d", buyers, 0.20, _bought_within(30)), trial("popular", PopularConfig(), 0.10, _trending(14)),
        trial("peer.popular", PopularConfig(count="users"), 0.05, InteractionConfig(binary=True)))}
    assert _finalists(contenders, None, 2) == ["peer.trending-7d", "trending-buyers-30d"]
    assert _finalists(contenders, "champion.x", 3) == ["peer.trending-7d", "trending-buyers-30d", "popular", "champion.x"]


def test_the_best_ranker_is_tried_again_with_the_last_days_best_sellers(shop):
    """The ranker stage's last trial is the best ranker with one more retriever, the items with the most
    distinct buyers in the last ``fresh_buyers_days`` (a seasonal shop's rising items reach the candidates);
    its other retrievers and settings are the best ranker's. Not tried when that list is already a retriever."""
    from training.evaluate import time_split
    from training.search import _bought_within, search

    orders, events = shop
    test = time_split(events, orders, 30)
    split = time_split(test.view.events, test.view.orders, 30)
    ranker = {"item_time": [True], "stacked_label_periods": 1, "candidates": 20, "n_estimators": 20, "min_data_in_leaf": 5}
    space = SearchSpace(trending_half_life_days=[14.0], trending_window_days=[30.0], als=[ALSConfig(factors=8, iterations=5)],
                        ease_l2=[50.0], ease_max_items=CAP, itemknn_neighbours=[20], blend_weights=[1.0], weighted_rows=False,
                        ranker=ranker | {"fresh_buyers_days": 5.0}, budget_minutes=60)
    found = search(space, split, 10, [], has_events=True)
    best = found.trials["ranker"].candidate.model
    fresh = found.trials["ranker-fresh-5d"]
    assert fresh.candidate.model.retrievers == [*best.retrievers, BlendPart(interactions=_bought_within(5.0),
                                                                            model=PopularConfig(count="users"))]
    assert fresh.candidate.model.model_dump(exclude={"retrievers"}) == best.model_dump(exclude={"retrievers"})
    assert np.isfinite(fresh.per_user).all() and len(fresh.per_user) == len(split.truth)
    # the list is already a retriever (here: the best trending recipe) -> not tried again
    only = space.model_copy(update={"trending_half_life_days": [], "trending_window_days": [5.0]})
    assert not any("fresh" in n for n in search(only, split, 10, [], has_events=True).trials)
    # switched off
    off = space.model_copy(update={"ranker": space.ranker.model_copy(update={"fresh_buyers_days": None})})
    assert not any("fresh" in n for n in search(off, split, 10, [], has_events=True).trials)


_BLAS_PROBE = """
import json, sys
from threadpoolctl import threadpool_info
import pandas as pd
import training.pipeline as pipeline
seen = []
real_search = pipeline.search
def search(*args, **kwargs):
    seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
    return real_search(*args, **kwargs)
pipeline.search = search
from training.config import TrainConfig
outside = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
orders, events = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
pipeline.evaluate(TrainConfig(search=None, peers=False), events, orders)
print(json.dumps({"outside": outside, "inside": seen}))
"""


def test_choosing_runs_blas_on_one_thread_whatever_the_callers_environment(tmp_path):
    """A notebook with OpenBLAS on two threads chooses as `shoprec train` does (one thread): float sums in
    another order once changed the choice on a near tie."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from features.synthetic import ShopConfig, generate_shop

    paths = generate_shop(ShopConfig.preset("tiny"), tmp_path / "shop")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run = subprocess.run([sys.executable, "-c", _BLAS_PROBE, str(paths.orders), str(paths.events)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["outside"] == 2  # the caller's setting is in force outside
    assert seen["inside"] == [1]
