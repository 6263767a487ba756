"""Gains chart of the customer-value model and its peers (logged to MLflow as plots/clv_gains.png)."""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def gains_chart(evaluation):
    """Cumulative share of actual spend against the share of customers taken in predicted order,
    for the model, every peer and the perfect order. A plain Figure on the Agg canvas: no pyplot
    state, and no global backend switch (which turned a notebook's inline plots off)."""
    a = np.asarray(evaluation.actual, dtype=float)
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(1, len(a) + 1) / len(a)
    curves = {"perfect order": a, **evaluation.predictions}
    for name, p in curves.items():
        order = np.lexsort((np.arange(len(p)), -np.asarray(p, dtype=float)))
        ax.plot(x, np.cumsum(a[order]) / a.sum(), label=name, lw=2 if name == "model" else 1,
                ls=":" if name == "perfect order" else "-")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="random")
    ax.set_xlabel("share of customers, highest predicted value first")
    ax.set_ylabel(f"share of actual spend in the next {evaluation.days} days")
    ax.set_title(f"Customer value gains (cutoff {evaluation.test_at:%Y-%m-%d})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
