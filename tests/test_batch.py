"""training.batch.score_all: top-k of every user to Parquet, bought items left out."""
import numpy as np
import pandas as pd
import pytest

from tests.test_storefront import ORDERS, make_bundle
from training.batch import score_all


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


def test_every_user_gets_k_unbought_items_in_model_order(bundle, tmp_path):
    report = score_all(bundle, k=5, out_path=tmp_path / "top.parquet", block=7, threads=2)
    out = pd.read_parquet(tmp_path / "top.parquet")
    assert report.users == len(bundle.users) and report.rows == len(out) == 5 * len(bundle.users)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "source"]
    assert (out["source"] == "model").all()  # every user of this bundle has interactions
    assert list(out["user_id"].drop_duplicates()) == list(bundle.users.ids)  # user order kept across blocks
    bought = ORDERS.groupby("user_id")["item_id"].apply(set)
    for user, rows in out.groupby("user_id", sort=False):
        assert list(rows["rank"]) == [1, 2, 3, 4, 5]
        assert not set(rows["item_id"]) & bought[user]
        assert (np.diff(rows["score"].to_numpy()) <= 0).all()
    row = bundle.users.row("u3")
    items, _ = bundle.model.recommend(np.array([row]), 5, bundle.bought[[row]])
    assert list(out.loc[out["user_id"] == "u3", "item_id"]) == list(bundle.items.external(items[0]))


def test_short_lists_and_subsets(bundle, tmp_path):
    # 12 items, 4 bought each: at most 8 left, so k=10 gives 8 rows per user
    report = score_all(bundle, k=10, out_path=tmp_path / "top.parquet", users=np.array([0, 1]))
    out = pd.read_parquet(tmp_path / "top.parquet")
    assert report.users == 2 and len(out) == 16 and out["item_id"].notna().all()
    kept = score_all(bundle, k=12, out_path=tmp_path / "all.parquet", exclude_bought=False, users=np.array([0]))
    assert kept.rows == 12


def test_bad_arguments(bundle, tmp_path):
    with pytest.raises(ValueError):
        score_all(bundle, k=0, out_path=tmp_path / "x.parquet")
    with pytest.raises(ValueError):
        score_all(bundle, k=3, out_path=tmp_path / "x.parquet", block=0)


def test_users_without_interactions_get_the_fallback_list(bundle, tmp_path):
    import dataclasses

    import scipy.sparse as sp

    empty = bundle.interactions.tolil()
    cold = bundle.users.row("u3")
    empty[cold] = 0
    cold_bundle = dataclasses.replace(bundle, interactions=sp.csr_matrix(empty))
    score_all(cold_bundle, k=5, out_path=tmp_path / "top.parquet", exclude_bought=False)
    out = pd.read_parquet(tmp_path / "top.parquet")
    mine = out[out["user_id"] == "u3"]
    assert (mine["source"] == "fallback").all() and (out[out["user_id"] != "u3"]["source"] == "model").all()
    popular, _ = bundle.fallback.recommend(np.array([0]), 5)
    assert list(mine["item_id"]) == list(bundle.items.external(popular[0]))
