"""PRODUCT.md "Customer value" metrics: how well a prediction orders and sizes future spend.

    value_metrics(actual, predicted) -> {"spearman", "norm_gini", "top10_capture", "top20_capture", "rmse", ...}

Ties in the prediction are broken by row order (stable), so a prediction that ties many
customers (e.g. last-period spend, 0 for everyone who did not buy) is scored as the
protocol's reference figures were.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

KEYS = ("spearman", "norm_gini", "top10_capture", "top20_capture", "rmse")


def _order(predicted: np.ndarray) -> np.ndarray:
    """Row numbers from the highest prediction down, ties in row order."""
    return np.lexsort((np.arange(len(predicted)), -predicted))


def gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of ``actual`` ordered by ``predicted`` (the area between the cumulative share of
    spend and the diagonal, as in the Kaggle/Allstate normalised Gini)."""
    a = np.asarray(actual, dtype=float)[_order(np.asarray(predicted, dtype=float))]
    n = len(a)
    return float(np.sum(np.cumsum(a) / a.sum()) / n - (n + 1) / (2 * n))


def normalised_gini(actual, predicted) -> float:
    """Gini ordered by the prediction over the Gini ordered by actual spend itself (1 = perfect order)."""
    a = np.asarray(actual, dtype=float)
    if len(a) == 0 or a.sum() <= 0:
        return float("nan")
    return gini(a, predicted) / gini(a, a)


def capture(actual, predicted, share: float) -> float:
    """Share of total actual spend held by the ``share`` of customers predicted highest."""
    a = np.asarray(actual, dtype=float)
    if a.sum() <= 0:
        return float("nan")
    top = _order(np.asarray(predicted, dtype=float))[: max(1, int(math.ceil(share * len(a))))]
    return float(a[top].sum() / a.sum())


def value_metrics(actual, predicted) -> dict:
    """The protocol's metrics over one population (arrays of equal length)."""
    a, p = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    if a.shape != p.shape:
        raise ValueError(f"actual and predicted spend differ in shape: {a.shape} vs {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"predicted spend has {int((~np.isfinite(p)).sum())} non-finite values")
    constant = len(a) < 2 or np.ptp(a) == 0 or np.ptp(p) == 0
    return {
        "spearman": float("nan") if constant else float(spearmanr(p, a).statistic),
        "norm_gini": normalised_gini(a, p),
        "top10_capture": capture(a, p, 0.10),
        "top20_capture": capture(a, p, 0.20),
        "rmse": float(np.sqrt(np.mean((p - a) ** 2))) if len(a) else float("nan"),
        "mean_predicted": float(p.mean()) if len(p) else float("nan"),
        "mean_actual": float(a.mean()) if len(a) else float("nan"),
    }
