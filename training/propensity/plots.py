"""PNG figures of a propensity run: calibration curves, lift/gains charts, feature importances.

Plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state, no display).
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.propensity.evaluate import TargetEvaluation

LABELS = {"model": "LightGBM + logistic regression (calibrated)", "baseline_recency": "recency alone",
          "baseline_rfm_logreg": "logistic regression RFM + tenure", "oracle": "oracle (true probability)"}


def _figure(n: int, left: float = 0.08) -> tuple[Figure, list]:
    fig = Figure(figsize=(6 * n, 5), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / n * 1.5, right=0.98, bottom=0.11, top=0.92, wspace=0.25 + left)  # fixed: tight_layout is slow
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def calibration_curve(evals: list[TargetEvaluation], bins: int = 10) -> Figure:
    """Mean predicted vs observed rate per decile of the prediction, per target and scorer."""
    fig, axes = _figure(len(evals))
    for ax, ev in zip(axes, evals):
        y = ev.y.to_numpy(dtype=float)
        for name, p in ev.scores.items():
            order = np.argsort(p, kind="stable")
            groups = np.array_split(order, bins)
            ax.plot([p[g].mean() for g in groups], [y[g].mean() for g in groups], marker="o", label=LABELS.get(name, name))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set(title=f"{ev.target}: calibration on the test rows ({ev.test_at.date()})",
               xlabel="mean predicted probability (decile)", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
    return fig


def gains_chart(evals: list[TargetEvaluation]) -> Figure:
    """Cumulative gains: share of all positives caught in the top x% of customers by score."""
    fig, axes = _figure(len(evals))
    for ax, ev in zip(axes, evals):
        y = ev.y.to_numpy(dtype=float)
        share = np.arange(1, len(y) + 1) / len(y)
        for name, p in ev.scores.items():
            caught = np.cumsum(y[np.argsort(-p, kind="stable")]) / max(y.sum(), 1)
            top = caught[max(0, int(np.ceil(0.1 * len(y))) - 1)] / 0.1
            ax.plot(share, caught, label=f"{LABELS.get(name, name)} (lift@10% {top:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
        ax.axvline(0.1, color="grey", linewidth=0.5)
        ax.set(title=f"{ev.target}: cumulative gains", xlabel="share of customers contacted (by score)",
               ylabel="share of positives caught", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8, loc="lower right")
    return fig


def importance_chart(evals: list[TargetEvaluation], top: int = 20) -> Figure:
    """Total gain of the top features of each target's model."""
    fig, axes = _figure(len(evals), left=0.25)
    for ax, ev in zip(axes, evals):
        imp = ev.model.importance().head(top)[::-1]
        ax.barh(imp.index, imp.to_numpy())
        ax.set(title=f"{ev.target}: feature importance (gain)", xlabel="total gain")
        ax.tick_params(axis="y", labelsize=8)
    return fig
