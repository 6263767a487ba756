"""Every recommender passes the same behaviour tests (a mixin), plus model-specific ones."""
import numpy as np
import pytest
import scipy.sparse as sp

from features.interactions import InteractionConfig
from training.recommenders import load_model, make_model, topk
from training.recommenders.als import ALSConfig
from training.recommenders.blend import BlendConfig, BlendPart
from training.recommenders.popular import PopularConfig


class RecommenderContract:
    """Behaviour every recommender must show on the checkerboard shop."""

    def make(self):
        raise NotImplementedError

    def test_fit_returns_self_and_shapes(self, checkerboard):
        model = self.make()
        assert model.fit(checkerboard) is model
        items, scores = model.recommend(np.arange(5), k=4)
        assert items.shape == scores.shape == (5, 4)
        assert model.scores(np.array([0, 1])).shape == (2, checkerboard.shape[1])

    def test_excluded_items_never_recommended(self, checkerboard):
        model = self.make().fit(checkerboard)
        users = np.arange(checkerboard.shape[0])
        items, _ = model.recommend(users, k=10, exclude=checkerboard)
        for u in users:
            assert not set(items[u][items[u] >= 0]) & set(checkerboard[u].indices)



class TasteContract(RecommenderContract):
    """Personal models must also find each user's held-out item."""

    def test_held_out_diagonal_comes_first(self, checkerboard):
        model = self.make().fit(checkerboard)
        users = np.arange(checkerboard.shape[0])
        items, _ = model.recommend(users, k=1, exclude=checkerboard)
        assert (items[:, 0] == users % checkerboard.shape[1]).mean() >= 0.9

    def test_rows_alone_are_enough(self, checkerboard):
        """Fold-in: scoring users from their rows finds the held-out item too (new events, sessions)."""
        model = self.make().fit(checkerboard)
        users = np.arange(checkerboard.shape[0])
        items, _ = topk(model.score_rows(checkerboard), 1, checkerboard)
        assert (items[:, 0] == users % checkerboard.shape[1]).mean() >= 0.9

    def test_save_load_identical(self, checkerboard, tmp_path):
        model = self.make().fit(checkerboard)
        model.save(tmp_path / "m")
        again = load_model(tmp_path / "m")
        a = model.recommend(np.arange(10), k=5, exclude=checkerboard[:10])
        b = again.recommend(np.arange(10), k=5, exclude=checkerboard[:10])
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])
        assert again.config == model.config

    def test_same_seed_same_model(self, checkerboard):
        a = self.make().fit(checkerboard).scores(np.arange(5))
        b = self.make().fit(checkerboard).scores(np.arange(5))
        np.testing.assert_array_equal(a, b)

    def test_no_pickle_in_saved_arrays(self, checkerboard, tmp_path):
        self.make().fit(checkerboard).save(tmp_path / "m")
        files = sorted((tmp_path / "m").rglob("*.npy"))
        assert files and not list((tmp_path / "m").rglob("*.pkl"))
        for f in files:
            np.load(f, allow_pickle=False)  # raises if the array needs pickle


class TestPopular(RecommenderContract):
    def make(self):
        return make_model(PopularConfig())

    def test_ranks_by_distinct_users(self):
        x = sp.csr_matrix(np.array([[1, 5, 0], [1, 0, 0], [1, 0, 1]], dtype=np.float32))
        items, _ = self.make().fit(x).recommend(np.array([0]), k=3)
        assert items[0].tolist() == [0, 1, 2]


class TestALS(TasteContract):
    def make(self):
        return make_model(ALSConfig(factors=8, iterations=10, regularization=0.01, weighting="none", seed=7))

    def test_similar_items_same_parity(self, checkerboard):
        model = self.make().fit(checkerboard)
        items, _ = model.similar_items(np.array([0, 1]), k=3)
        assert 0 not in items[0] and all(i % 2 == 0 for i in items[0])
        assert all(i % 2 == 1 for i in items[1])


class TestBlend(TasteContract):
    def make(self):
        als = ALSConfig(factors=8, iterations=10, regularization=0.01, weighting="none", seed=7)
        return make_model(BlendConfig(parts=[
            BlendPart(weight=1.0, model=als),
            BlendPart(weight=0.1, interactions=InteractionConfig(binary=True), model=PopularConfig()),
        ]))


def test_topk_pads_when_everything_is_excluded():
    scores = np.array([[3.0, 2.0]], dtype=np.float32)
    items, best = topk(scores, 3, sp.csr_matrix(np.array([[1, 0]])))
    assert items.tolist() == [[1, -1, -1]]
    assert best[0, 0] == 2.0 and np.isneginf(best[0, 1:]).all()


def test_topk_rejects_misaligned_exclusions():
    with pytest.raises(ValueError, match="shape"):
        topk(np.zeros((2, 3), np.float32), 1, sp.csr_matrix((1, 3)))


def test_loading_the_wrong_kind_is_refused(checkerboard, tmp_path):
    make_model(PopularConfig()).fit(checkerboard).save(tmp_path / "m")
    from training.recommenders.als import ALSRecommender

    with pytest.raises(ValueError, match="popular"):
        ALSRecommender.load(tmp_path / "m")


class TestItemKNNBM25(TasteContract):
    def make(self):
        from training.recommenders.neighbours import ItemKNNConfig

        return make_model(ItemKNNConfig(similarity="bm25", neighbours=20))


class TestItemKNNCosine(TasteContract):
    def make(self):
        from training.recommenders.neighbours import ItemKNNConfig

        return make_model(ItemKNNConfig(similarity="cosine", neighbours=20))


class TestEASE(TasteContract):
    def make(self):
        from training.recommenders.neighbours import EASEConfig

        return make_model(EASEConfig(l2=1.0))


def test_ease_cap_leaves_unpopular_items_out(checkerboard):
    from training.recommenders.neighbours import EASEConfig

    model = make_model(EASEConfig(l2=1.0, max_items=5)).fit(checkerboard)
    scores = model.scores(np.arange(3))
    assert scores.shape == (3, checkerboard.shape[1]) and np.isfinite(scores).sum(axis=1).tolist() == [5, 5, 5]


def test_als_fold_in_solves_the_user_step_exactly_for_short_and_long_rows():
    """Short rows go through the low-rank (Woodbury) update of the shared Y'Y + reg I, long ones through the
    full system: both give the least-squares user step written out, confidences below 1 included."""
    from training.recommenders.als import ALSRecommender

    rng = np.random.default_rng(5)
    n_items, k = 400, 32
    model = ALSRecommender(ALSConfig(factors=k, regularization=0.1, alpha=0.7))
    model.item_factors_ = rng.normal(scale=0.3, size=(n_items, k)).astype(np.float32)
    model.user_factors_ = np.zeros((1, k), np.float32)
    y = model.item_factors_.astype(np.float64)
    for length in (1, 3, 16, k // 2 + 1, 120):  # k // 2 items or fewer: the low-rank path
        cols = np.sort(rng.choice(n_items, length, replace=False))
        values = rng.choice([0.5, 1.0, 3.0, 10.0], length).astype(np.float32)  # alpha * 0.5 < 1: weight below 1
        row = sp.csr_matrix((values, cols, [0, length]), shape=(1, n_items))
        conf = model.config.alpha * values.astype(np.float64)
        a = y.T @ y + model.config.regularization * np.eye(k) + (y[cols].T * (conf - 1.0)) @ y[cols]
        expected = np.linalg.solve(a, y[cols].T @ conf)
        np.testing.assert_allclose(model.fold_in(row)[0], expected, rtol=1e-4, atol=1e-5)
