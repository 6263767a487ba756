"""The recommender report of every training run: per-user NDCG, activity buckets, coverage,
popularity bias, and what gets logged to MLflow."""
import io
import re

import numpy as np
import pytest

from tests.conftest import make_orders
from training.config import Candidate, TrainConfig
from training.evaluate import _ranked, time_split
from training.pipeline import fit_candidate
from training.metrics import ndcg_at_k
from training.recommenders.popular import PopularConfig
from training.report_plots import (BUCKET_LABELS, activity_buckets, flat_metrics, gini, log_recommender_report,
                                   per_user_ndcg, recommender_report)


def test_per_user_ndcg_averages_to_the_protocol_metric(rng):
    items = rng.integers(0, 30, size=(50, 10))
    truth = [set(rng.choice(30, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(50)]
    per_user = per_user_ndcg(items, truth, 10)
    assert per_user.shape == (50,) and ((0 <= per_user) & (per_user <= 1)).all()
    assert per_user.mean() == pytest.approx(ndcg_at_k(items, truth, 10))
    assert per_user_ndcg(np.array([[3, 1, -1]]), [{3}], 3)[0] == 1.0  # a hit first, padding ignored


def test_gini():
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 12])) == pytest.approx(0.75)  # (n - 1) / n: all on one item
    assert gini(np.zeros(3)) == 0.0 and gini(np.array([])) == 0.0


# before the cutoff (2024-01-10): u1 bought 1 item, u2 3, u3 8, u4 20; after it u1-u3 each buy i19, new to
# them, and u4 only buys again
ROWS = ([("u1", "i0", "2024-01-01")] + [("u2", f"i{j}", "2024-01-02") for j in range(3)]
        + [("u3", f"i{j}", "2024-01-03") for j in range(8)] + [("u4", f"i{j}", "2024-01-04") for j in range(20)]
        + [(u, "i19", "2024-01-25") for u in ("u1", "u2", "u3")] + [("u4", "i0", "2024-01-25"), ("u4", "i5", "2024-02-09")])


@pytest.fixture
def split():
    return time_split(None, make_orders(ROWS), test_days=30)


def test_activity_buckets_and_report(split):
    users = split.view.users.external(split.test_users).tolist()
    assert users == ["u1", "u2", "u3"]  # u4 only bought again: no discovery truth
    assert activity_buckets(split).tolist() == ["1", "2-3", "8-15"]
    i19 = split.view.items.row("i19")
    perfect = np.array([[i19, -1], [i19, -1], [i19, -1]])
    missing = split.view.items.rows([f"i{j}" for j in range(6)]).reshape(3, 2)  # the best sellers
    report = recommender_report(split, {"perfect": perfect, "missing": missing}, k=2)
    assert report["ndcg"] == {"perfect": 1.0, "missing": 0.0}
    assert report["buckets"]["1"] == {"users": 1, "perfect": 1.0, "missing": 0.0}
    assert report["buckets"]["16+"] == {"users": 0, "perfect": None, "missing": None}
    assert report["coverage"]["perfect"] == pytest.approx(1 / 20) and report["coverage"]["missing"] == pytest.approx(6 / 20)
    # i0..i5 are the most bought items before the cutoff, i19 among the least
    assert report["popularity_percentile"]["missing"] > report["popularity_percentile"]["perfect"]
    assert report["gini"]["perfect"] > report["gini"]["missing"]
    names = flat_metrics(report)
    assert "report.perfect.ndcg_at_2.bucket_1" in names and "report.perfect.ndcg_at_2.bucket_16plus" not in names
    assert all(re.fullmatch(r"[\w./\- ]+", n) for n in names)  # names MLflow accepts


class FakeMlflow:
    """Records what would be logged to the active run."""

    def __init__(self):
        self.dicts, self.metrics, self.figures = {}, {}, {}

    def log_dict(self, d, path):
        self.dicts[path] = d

    def log_metrics(self, m):
        self.metrics.update(m)

    def log_figure(self, fig, path):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        self.figures[path] = buf.getvalue()


def test_log_recommender_report_logs_the_json_metrics_and_two_pngs(split):
    mlflow = FakeMlflow()
    popular = Candidate(name="popular", model=PopularConfig())
    test = time_split(None, make_orders(ROWS), 30)
    ranked = {"popular": _ranked(fit_candidate(popular, test.view).scores, test.test_users, test.view.bought, 5, restrict=False)}
    report = log_recommender_report(mlflow, test, ranked, 5)
    assert mlflow.dicts["recommender_report.json"] == report and report["models"] == ["popular"]
    assert set(report["buckets"]) == set(BUCKET_LABELS)
    assert "report.popular.coverage_at_5" in mlflow.metrics
    assert set(mlflow.figures) == {"plots/ndcg_by_activity.png", "plots/coverage.png"}
    assert all(png.startswith(b"\x89PNG") and len(png) > 5000 for png in mlflow.figures.values())

