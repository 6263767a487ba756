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
import threading
from collections import Counter, deque
from typing import Iterable

import numpy as np
from prometheus_client import Gauge

from training.reference import Reference, drift, js, psi  # noqa: F401 - psi and js are this module's API too

log = logging.getLogger("shoprec.drift")
UNSEEN_NAMES = 20  # values outside a categorical reference kept by name per flush (the rest only counted)

PSI = Gauge("shoprec_drift_psi", "population stability index, live window vs training data", ["feature"],
            multiprocess_mode="max")
JS = Gauge("shoprec_drift_js", "Jensen-Shannon distance (base 2), live window vs training data", ["feature"],
           multiprocess_mode="max")
ALERT = Gauge("shoprec_drift_alert", "1 while the feature's drift is over a threshold", ["feature"],
              multiprocess_mode="max")
WINDOW = Gauge("shoprec_drift_window", "live values in the window the drift figures were computed on", ["feature"],
               multiprocess_mode="max")


class FeatureDrift:
    """One quantity: its reference (``Reference``, or raw training values to bin), the bins of the last
    ``window`` live values, and the bin counts since the last ``take_counts`` (for the observation log).

    ``observe`` is the per-request part: one bin lookup (bisect over ~10 edges, or a dict), a deque append and
    a counter increment. ``evaluate`` (periodic) computes the figures; below ``min_observations`` live values
    it sets nothing."""

    def __init__(self, name: str, reference: Iterable | Reference, categorical: bool = False, bins: int = 10,
                 window: int = 1000, psi_threshold: float = 0.2, js_threshold: float = 0.1, min_observations: int = 1):
        if not isinstance(reference, Reference):
            values = list(reference)
            if not values:
                raise ValueError(f"drift of {name!r}: the reference is empty")
            reference = Reference.of(values, categorical=categorical, bins=bins, name=name)
        self.name, self.ref = name, reference
        self.categorical = reference.categorical
        self.psi_threshold, self.js_threshold = psi_threshold, js_threshold
        self.min_observations = max(1, min_observations)
        self.reference = np.asarray(reference.proportions)
        self.live: deque = deque(maxlen=window)  # bin numbers
        self._lock = threading.Lock()
        self._counts = [0] * reference.n_bins
        self._unseen: Counter = Counter()
        self.alert = False

    def observe(self, value) -> None:
        b = self.ref.bin(value)
        if b is None:
            return
        self.live.append(b)
        with self._lock:
            self._counts[b] += 1
            if self.categorical and b == len(self.ref.categories):
                key = str(value)
                if key in self._unseen or len(self._unseen) < UNSEEN_NAMES:
                    self._unseen[key] += 1

    def take_counts(self) -> tuple[list[int], dict[str, int]]:
        """Bin counts (and values outside a categorical reference, by name) since the last call."""
        with self._lock:
            counts, unseen = self._counts, dict(self._unseen)
            self._counts, self._unseen = [0] * self.ref.n_bins, Counter()
        return counts, unseen

    def evaluate(self) -> dict:
        """PSI and JS of the window against the reference; updates the gauges, logs when an alert starts."""
        window = list(self.live)
        if len(window) < self.min_observations:
            return {"psi": None, "js": None, "n": len(window), "alert": False}
        figures = drift(self.ref, np.bincount(np.asarray(window, dtype=np.int64), minlength=self.ref.n_bins))
        alert = figures["psi"] > self.psi_threshold or figures["js"] > self.js_threshold
        if alert and not self.alert:
            log.warning("drift in %s: PSI %.3f (threshold %.2f), JS %.3f (threshold %.2f) over the last %d values",
                        self.name, figures["psi"], self.psi_threshold, figures["js"], self.js_threshold, len(window))
        self.alert = alert
        PSI.labels(self.name).set(figures["psi"])
        JS.labels(self.name).set(figures["js"])
        ALERT.labels(self.name).set(int(alert))
        WINDOW.labels(self.name).set(len(window))
        return figures | {"alert": alert}
