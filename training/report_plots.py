"""What one NDCG number hides, for every recommender training run: quality by user activity,
catalog coverage and popularity bias, as numbers (``recommender_report.json``) and PNG plots.

Computed on the test split of the evaluation protocol (``training.evaluate``) for the chosen
recipe and the popularity baseline, each fitted on the data before the test cutoff:

- NDCG@k by activity bucket: test users grouped by how many distinct items they bought
  before the cutoff (1, 2-3, 4-7, 8-15, 16+); cold-ish users are where models usually lose.
- catalog coverage@k: share of the known items that appear in at least one top-k list.
- popularity bias: mean popularity percentile of the recommended items (0.5 = the catalog's
  median item, 1.0 = only the most bought item), and the Gini index of how often each item
  is recommended (0 = evenly, 1 = always the same item).
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import rankdata

from training.evaluate import Split
from training.metrics import hits_matrix

BUCKET_EDGES = [1, 2, 4, 8, 16]  # lower bounds of the activity buckets (distinct items bought)
BUCKET_LABELS = ["1", "2-3", "4-7", "8-15", "16+"]


def per_user_ndcg(recommended: np.ndarray, truth: list[set[int]], k: int) -> np.ndarray:
    """(n_users,) binary-gain NDCG@k of each user, as ``training.metrics.ndcg_at_k`` averages it."""
    if len(truth) == 0:
        return np.zeros(0)
    hits = hits_matrix(recommended[:, :k], truth)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.array([min(k, len(t)) for t in truth]) - 1]
    return (hits * discounts[: hits.shape[1]]).sum(axis=1) / ideal


def activity_buckets(split: Split) -> np.ndarray:
    """(n_test_users,) bucket label of each test user: distinct items bought before the cutoff."""
    bought = np.diff(split.view.bought[split.test_users].indptr)
    return np.asarray(BUCKET_LABELS)[np.searchsorted(BUCKET_EDGES, np.maximum(bought, 1), side="right") - 1]


def item_popularity(split: Split) -> np.ndarray:
    """(n_items,) distinct buyers of each item before the cutoff."""
    return np.diff(split.view.bought.tocsc().indptr).astype(np.float64)


def gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts (0: all equal, towards 1: concentrated on one)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def recommender_report(split: Split, ranked: dict[str, np.ndarray], k: int) -> dict:
    """Numbers of the report from each model's top-k item rows (n_test_users, k), -1 = padding."""
    buckets = activity_buckets(split)
    popularity = item_popularity(split)
    percentile = (rankdata(popularity) - 1) / max(len(popularity) - 1, 1)  # ties share their mean rank
    n_items = split.view.bought.shape[1]
    report = {"k": k, "test_users": int(len(split.test_users)), "catalog_items": int(n_items),
              "cutoff": str(split.cutoff), "models": list(ranked),
              "buckets": {b: {"users": int((buckets == b).sum())} for b in BUCKET_LABELS},
              "coverage": {}, "popularity_percentile": {}, "gini": {}, "ndcg": {}}
    for name, items in ranked.items():
        ndcg = per_user_ndcg(items, split.truth, k)
        report["ndcg"][name] = float(ndcg.mean()) if len(ndcg) else 0.0
        for b in BUCKET_LABELS:
            inside = buckets == b
            report["buckets"][b][name] = float(ndcg[inside].mean()) if inside.any() else None
        shown = items[items >= 0]
        counts = np.bincount(shown, minlength=n_items)
        report["coverage"][name] = float((counts > 0).sum() / max(n_items, 1))
        report["popularity_percentile"][name] = float(percentile[shown].mean()) if len(shown) else None
        report["gini"][name] = gini(counts)
    return report


def flat_metrics(report: dict) -> dict[str, float]:
    """MLflow metric names: ``report.<model>.coverage_at_10``, ``report.<model>.ndcg_at_10.bucket_16plus``, ..."""
    k, out = report["k"], {}
    for name in report["models"]:
        out[f"report.{name}.coverage_at_{k}"] = report["coverage"][name]
        out[f"report.{name}.gini_at_{k}"] = report["gini"][name]
        if report["popularity_percentile"][name] is not None:
            out[f"report.{name}.popularity_percentile"] = report["popularity_percentile"][name]
        for b in BUCKET_LABELS:
            if report["buckets"][b][name] is not None:
                out[f"report.{name}.ndcg_at_{k}.bucket_{b.replace('+', 'plus')}"] = report["buckets"][b][name]
    return out


def _figure(n: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(6 * n, 4.5), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08 if n > 1 else 0.12, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def ndcg_by_activity_chart(report: dict) -> Figure:
    """Grouped bars: NDCG@k per activity bucket and model, with the users in each bucket."""
    fig, (ax,) = _figure(1)
    names, k = report["models"], report["k"]
    x = np.arange(len(BUCKET_LABELS))
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        values = [report["buckets"][b][name] or 0.0 for b in BUCKET_LABELS]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, values, width, label=f"{name} (all: {report['ndcg'][name]:.3f})")
    ax.set_xticks(x, [f"{b}\n{report['buckets'][b]['users']:,} users" for b in BUCKET_LABELS])
    ax.set(title=f"NDCG@{k} by user activity (test period after {report['cutoff'][:10]})",
           xlabel="distinct items bought before the cutoff", ylabel=f"NDCG@{k}")
    ax.legend(fontsize=8)
    return fig


def coverage_chart(report: dict, split: Split, ranked: dict[str, np.ndarray]) -> Figure:
    """Left: catalog coverage@k per model. Right: where the recommendations land along the
    popularity curve (items by buyers before the cutoff, most bought first), against the
    purchases themselves: a curve far above the purchases' is a popularity bias."""
    fig, (left, right) = _figure(2)
    names, k = report["models"], report["k"]
    left.bar(names, [report["coverage"][n] for n in names], color=[f"C{j}" for j in range(len(names))])
    for j, n in enumerate(names):
        left.annotate(f"{report['coverage'][n]:.1%}", (j, report["coverage"][n]), ha="center", va="bottom")
    left.set(title=f"catalog coverage@{k} ({report['catalog_items']:,} items)", ylabel="share of items recommended", ylim=(0, 1))
    popularity = item_popularity(split)
    order = np.argsort(-popularity, kind="stable")
    share = np.arange(1, len(order) + 1) / max(len(order), 1)
    right.plot(share, np.cumsum(popularity[order]) / max(popularity.sum(), 1), color="grey", linestyle="--",
               label="purchases before the cutoff")
    for j, n in enumerate(names):
        shown = ranked[n][ranked[n] >= 0]
        counts = np.bincount(shown, minlength=len(popularity))[order]
        right.plot(share, np.cumsum(counts) / max(counts.sum(), 1), color=f"C{j}",
                   label=f"{n} (popularity pct {report['popularity_percentile'][n] or 0:.2f}, Gini {report['gini'][n]:.2f})")
    right.set(title="popularity bias", xlabel="share of items, most bought first", ylabel="cumulative share",
              xlim=(0, 1), ylim=(0, 1.02))
    right.legend(fontsize=8, loc="lower right")
    return fig


def log_recommender_report(mlflow, split, ranked: dict[str, np.ndarray], k: int) -> dict:
    """Log the report of ranked test-split lists (the chosen recipe first, then the baseline) to
    the active MLflow run: ``recommender_report.json``, ``report.*`` metrics and
    ``plots/ndcg_by_activity.png``, ``plots/coverage.png``. Returns the report."""
    report = recommender_report(split, ranked, k)
    mlflow.log_dict(report, "recommender_report.json")
    mlflow.log_metrics(flat_metrics(report))
    mlflow.log_figure(ndcg_by_activity_chart(report), "plots/ndcg_by_activity.png")
    mlflow.log_figure(coverage_chart(report, split, ranked), "plots/coverage.png")
    return report
