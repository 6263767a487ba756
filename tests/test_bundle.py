"""Composition of model and fallback in the bundle the service loads."""
import numpy as np
import pytest

from tests.conftest import make_orders
from training.config import Candidate, TrainConfig
from training.bundle import ModelBundle
from training.pipeline import fit_bundle
from training.recommenders.als import ALSConfig

ORDERS = make_orders(
    [(f"u{u}", f"i{(u + j) % 12}", f"2024-01-{1 + (u + j) % 28:02d}") for u in range(30) for j in range(4)]
)


@pytest.fixture(scope="module")
def bundle():
    als = Candidate(name="als", model=ALSConfig(factors=4, iterations=5, weighting="none"))
    return fit_bundle(als, TrainConfig().fallback, None, ORDERS, {"run_id": "r1"})


def test_known_user_gets_model_answer_without_bought_items(bundle):
    answer = bundle.recommend("u1", k=5)
    assert answer.source == "model:als"
    bought = set(ORDERS.loc[ORDERS.user_id == "u1", "item_id"])
    assert not bought & set(answer.item_ids) and len(answer.item_ids) == 5


def test_bought_items_can_be_kept_and_extra_items_excluded(bundle):
    kept = bundle.recommend("u1", k=12, exclude_bought=False)
    assert set(ORDERS.loc[ORDERS.user_id == "u1", "item_id"]) <= set(kept.item_ids)
    assert "i7" not in bundle.recommend("u1", k=8, exclude_ids=["i7", "not-an-item"]).item_ids


def test_unknown_user_gets_labelled_fallback(bundle):
    answer = bundle.recommend("stranger", k=3, exclude_ids=["i0"])
    assert answer.source == "fallback:trending-14d" and len(answer.item_ids) == 3 and "i0" not in answer.item_ids


def test_short_lists_are_filled_from_the_fallback(bundle):
    answer = bundle.recommend("u1", k=12)  # 12 items, 4 bought: 8 left
    assert len(answer.item_ids) == 8 and len(set(answer.item_ids)) == 8


def test_similar_items_known_and_unknown(bundle):
    assert bundle.similar_items("i3", k=4).source == "model:als"
    assert "i3" not in bundle.similar_items("i3", k=4).item_ids
    assert bundle.similar_items("nope", k=4).source.startswith("fallback:")


def test_save_load_same_answers(bundle, tmp_path):
    bundle.save(tmp_path / "b")
    again = ModelBundle.load(tmp_path / "b")
    assert again.recommend("u2", k=5) == bundle.recommend("u2", k=5)
    assert again.meta["run_id"] == "r1"


def test_incomplete_bundle_is_refused(bundle, tmp_path):
    bundle.save(tmp_path / "b")
    (tmp_path / "b" / "bought.npz").unlink()
    with pytest.raises(FileNotFoundError, match="bought.npz"):
        ModelBundle.load(tmp_path / "b")
