"""Drift between a reference (training data) and a rolling window of live traffic, per feature or score.

Each monitored quantity is binned on its reference: a numeric one by the reference's deciles, a categorical one
by the reference's categories plus "other" (a category the reference never saw, e.g. a new one taking over).
Two figures compare the reference's proportions with the window's: the population stability index (PSI,
sum (q - p) ln(q / p)) and the Jensen-Shannon distance (scipy, base 2: 0 same, 1 disjoint). Over a threshold
(``psi_threshold`` or ``js_threshold``) the quantity is drifting: a WARNING log line when it starts, and the
Prometheus gauge ``shoprec_drift_alert{feature=...}`` at 1 (``shoprec_drift_psi`` and ``shoprec_drift_js``
carry the figures; all on ``/metrics``).
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Iterable

import numpy as np
from prometheus_client import Gauge
from scipy.spatial.distance import jensenshannon

log = logging.getLogger("shoprec.drift")
EPS = 1e-4  # floor of a bin's proportion: an empty bin on one side keeps PSI finite

PSI = Gauge("shoprec_drift_psi", "population stability index, live window vs training data", ["feature"],
            multiprocess_mode="max")
JS = Gauge("shoprec_drift_js", "Jensen-Shannon distance (base 2), live window vs training data", ["feature"],
           multiprocess_mode="max")
ALERT = Gauge("shoprec_drift_alert", "1 while the feature's drift is over a threshold", ["feature"],
              multiprocess_mode="max")


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI of two proportion vectors over the same bins."""
    p, q = np.maximum(reference, EPS), np.maximum(live, EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def js(reference: np.ndarray, live: np.ndarray) -> float:
    return float(jensenshannon(reference, live, base=2))


class FeatureDrift:
    """One quantity: its reference bins and proportions, the last ``window`` live values."""

    def __init__(self, name: str, reference: Iterable, categorical: bool = False, bins: int = 10, window: int = 1000,
                 psi_threshold: float = 0.2, js_threshold: float = 0.1):
        values = list(reference)
        if not values:
            raise ValueError(f"drift of {name!r}: the reference is empty")
        self.name, self.categorical = name, categorical
        self.psi_threshold, self.js_threshold = psi_threshold, js_threshold
        self.live: deque = deque(maxlen=window)
        if categorical:
            self.categories = sorted({str(v) for v in values})
            self._index = {c: i for i, c in enumerate(self.categories)}
        else:
            inner = np.unique(np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, bins + 1)[1:-1]))
            self.edges = inner  # bins: (-inf, e0], (e0, e1], ..., (e_last, inf)
        self.reference = self._proportions(values)
        self.alert = False

    def _proportions(self, values) -> np.ndarray:
        if self.categorical:
            other = len(self.categories)
            idx = np.array([self._index.get(str(v), other) for v in values], dtype=int)
            counts = np.bincount(idx, minlength=other + 1)
        else:
            idx = np.searchsorted(self.edges, np.asarray(values, dtype=float), side="left")
            counts = np.bincount(idx, minlength=len(self.edges) + 1)
        return counts / max(1, counts.sum())

    def observe(self, value) -> None:
        self.live.append(value)

    def evaluate(self) -> dict:
        """PSI and JS of the window against the reference; updates the gauges, logs when an alert starts."""
        live = self._proportions(list(self.live))
        figures = {"psi": psi(self.reference, live), "js": js(self.reference, live), "n": len(self.live)}
        alert = figures["psi"] > self.psi_threshold or figures["js"] > self.js_threshold
        if alert and not self.alert:
            log.warning("drift in %s: PSI %.3f (threshold %.2f), JS %.3f (threshold %.2f) over the last %d values",
                        self.name, figures["psi"], self.psi_threshold, figures["js"], self.js_threshold, len(self.live))
        self.alert = alert
        PSI.labels(self.name).set(figures["psi"])
        JS.labels(self.name).set(figures["js"])
        ALERT.labels(self.name).set(int(alert))
        return figures | {"alert": alert}
