"""Live drift monitoring inside the service: every answer feeds the served bundles' training references.

Per request (cheap: one bin lookup and a counter per value, serving/drift.py), from what the service has anyway:

  /recommend    recommend_source (model or fallback) and, for a model answer, recommend_score (its top-1 score)
  /events       event_category and event_price of every event (the price the storefront sent, else the
                catalogue's; an item the catalogue lacks counts as category "(unknown item)", i.e. "other")
  /propensity   churn_probability and conversion_probability of every known customer

Every ``drift_every_s`` a background thread evaluates each quantity's rolling window (``drift_window`` values,
at least ``drift_min_observations``) against its reference: Prometheus gauges ``shoprec_drift_psi``,
``shoprec_drift_js``, ``shoprec_drift_alert`` (1 over ``drift_psi_threshold`` or ``drift_js_threshold``, with a
WARNING line when it starts) on ``/metrics``. It also appends the bin counts observed since the last time to
``<monitor_dir>/observations-<UTC date>-<replica>-<pid>.jsonl`` (one line per quantity: counts over the
reference's bins, and values outside a categorical reference by name) and writes the reference once as
``reference-<id>.json``. Those files are the shared, offline-readable record of live traffic: one file per
worker process, no locking between writers; replicas on one host share the folder (``make cluster``), replicas
on several hosts a shared volume, as for the key store. ``shoprec monitor --since DATE`` reads them
(training/monitor.py). Bin counts, not raw values: a line is a few hundred bytes per quantity per interval
whatever the traffic, and nothing about a shopper is written.
"""
from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.drift import FeatureDrift
from training.reference import NO_CATEGORY, UNKNOWN_ITEM, Reference

log = logging.getLogger("shoprec.monitoring")


def reference_id(model: str, version: str, features: dict) -> str:
    """Names a reference by its content (two bundles with the same version label still differ)."""
    text = json.dumps({"model": model, "version": version, "features": features}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class MonitorSet:
    """The quantities of one served bundle (a recommender or a propensity bundle)."""

    id: str
    model: str  # "recommender" | "propensity"
    version: str
    features: dict[str, FeatureDrift]
    since: float
    category_of_row: np.ndarray | None = None  # recommender: catalogue category and price per item row
    price_of_row: np.ndarray | None = None
    run_id: str = ""  # the MLflow run that trained the bundle, for the report
    owner: object = field(default=None, repr=False)  # the Served / bundle object this set was built for


class LiveMonitor:
    def __init__(self, folder: Path, replica: str, psi_threshold: float = 0.2, js_threshold: float = 0.1,
                 window: int = 1000, min_observations: int = 500, every_s: float = 30.0, enabled: bool = True):
        self.folder, self.enabled = Path(folder), enabled
        self.replica = re.sub(r"[^A-Za-z0-9._-]", "_", replica)[:64] or "replica"
        self.limits = {"psi_threshold": psi_threshold, "js_threshold": js_threshold, "window": window,
                       "min_observations": min_observations}
        self.every_s = every_s
        self._sets: dict[str, MonitorSet] = {}  # "recommender" / "propensity" -> the set now fed
        self._retired: list[MonitorSet] = []  # replaced by a new model: flushed once more, then dropped
        self._build_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings) -> "LiveMonitor":
        return cls(settings.monitor_dir, settings.replica or socket.gethostname(), settings.drift_psi_threshold,
                   settings.drift_js_threshold, settings.drift_window, settings.drift_min_observations,
                   settings.drift_every_s, settings.monitor)

    # -- which set: rebuilt when the served bundle changes ------------------------------------------------
    def _set(self, model: str, owner, version: str, reference: dict, catalog=None, run_id: str = "") -> MonitorSet:
        current = self._sets.get(model)
        if current is not None and current.owner is owner:
            return current
        with self._build_lock:
            current = self._sets.get(model)
            if current is not None and current.owner is owner:
                return current
            new = self._build(model, owner, version, reference, catalog, run_id)
            if current is not None:
                self._retired.append(current)
            self._sets[model] = new
            return new

    def _build(self, model, owner, version, reference, catalog, run_id) -> MonitorSet:
        features = {}
        for name, data in sorted((reference or {}).items()):
            try:
                features[name] = FeatureDrift(name, Reference.from_json(data, f"reference.{name}"), **self.limits)
            except ValueError as e:
                log.error("%s %s: drift of %s not monitored: %s", model, version, name, e)
        ref_id = reference_id(model, version, {n: f.ref.to_json() for n, f in features.items()})
        found = MonitorSet(ref_id, model, version, features, time.time(), run_id=run_id or "", owner=owner)
        if catalog is not None:
            found.category_of_row = catalog["category"].astype(object).where(catalog["category"].notna(),
                                                                             NO_CATEGORY).to_numpy()
            found.price_of_row = catalog["price"].to_numpy(np.float64)
        if not features:
            log.info("%s %s has no training reference (trained before monitoring): its drift is not monitored",
                     model, version)
        elif self.enabled:
            self._write_reference(found)
        return found

    def _write_reference(self, s: MonitorSet) -> None:
        path = self.folder / f"reference-{s.id}.json"
        if path.exists():
            return
        payload = {"id": s.id, "model": s.model, "version": s.version, "run_id": s.run_id,
                   "features": {n: f.ref.to_json() for n, f in s.features.items()}}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".reference-")
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as e:
            log.error("cannot write the drift reference to %s: %s", path, e)

    def _recommender(self, served) -> MonitorSet:
        bundle = served.store.bundle
        return self._set("recommender", served, served.version, bundle.reference, bundle.catalog, bundle.meta.get("run_id"))

    # -- per request ---------------------------------------------------------------------------------------
    def recommend(self, served, answer) -> None:
        """A /recommend answer of ``served`` (serving/reload.py Served)."""
        if not self.enabled:
            return
        s = self._recommender(served)
        f = s.features
        model = answer.source.startswith("model:")
        if (src := f.get("recommend_source")) is not None:
            src.observe("model" if model else "fallback")
        if model and answer.scores and math.isfinite(answer.scores[0]) and (score := f.get("recommend_score")) is not None:
            score.observe(answer.scores[0])

    def events(self, served, events) -> None:
        """The events of a /events request (``EventIn``: item_id, optional price), accepted or not."""
        if not self.enabled:
            return
        s = self._recommender(served)
        category, price = s.features.get("event_category"), s.features.get("event_price")
        if category is None and price is None:
            return
        rows = served.store.items.rows([e.item_id for e in events])
        for e, row in zip(events, rows.tolist()):
            if category is not None and s.category_of_row is not None:
                category.observe(s.category_of_row[row] if row >= 0 else UNKNOWN_ITEM)
            if price is not None:
                given = getattr(e, "price", None)
                if given is None and row >= 0 and s.price_of_row is not None:
                    given = s.price_of_row[row]
                if given is not None:
                    price.observe(given)

    def propensity(self, api, answer) -> None:
        """A /propensity answer of ``api`` (serving/propensity.py PropensityApi)."""
        if not self.enabled or api.bundle is None:
            return
        s = self._set("propensity", api.bundle, api.version, api.bundle.reference, run_id=api.bundle.meta.get("run_id"))
        churn, conversion = s.features.get("churn_probability"), s.features.get("conversion_probability")
        for u in answer.users:
            if u.known:
                if churn is not None:
                    churn.observe(u.churn_probability)
                if conversion is not None:
                    conversion.observe(u.conversion_probability)

    # -- periodic ------------------------------------------------------------------------------------------
    def tick(self) -> dict[str, dict]:
        """Evaluate every quantity of the served bundles and append what was observed to the log."""
        figures = {}
        for s in list(self._sets.values()):
            for name, f in s.features.items():
                figures[name] = f.evaluate()
        self.flush()
        return figures

    def flush(self) -> int:
        """Append the bin counts since the last flush; returns the lines written."""
        with self._flush_lock:
            with self._build_lock:
                sets, self._retired = list(self._sets.values()) + self._retired, []
            now = time.time()
            lines = []
            for s in sets:
                for name, f in s.features.items():
                    counts, unseen = f.take_counts()
                    if sum(counts):
                        lines.append(json.dumps({"t0": round(s.since, 3), "t1": round(now, 3), "replica": self.replica,
                                                 "pid": os.getpid(), "reference": s.id, "model": s.model,
                                                 "version": s.version, "feature": name, "counts": counts,
                                                 "unseen": unseen}, sort_keys=True))
                s.since = now
            if lines and self.enabled:
                day = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")
                path = self.folder / f"observations-{day}-{self.replica}-{os.getpid()}.jsonl"
                try:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    with open(path, "a", encoding="utf-8") as out:
                        out.write("\n".join(lines) + "\n")
                except OSError as e:
                    log.error("cannot append drift observations to %s: %s", path, e)
            return len(lines)

    def start(self) -> None:
        """Evaluate and flush every ``every_s`` seconds in a daemon thread, and once more at exit."""
        if not self.enabled or self._thread is not None or self.every_s <= 0:
            return

        def run() -> None:
            while not self._stop.wait(self.every_s):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - monitoring must never take the service down
                    log.exception("drift evaluation failed")

        self._thread = threading.Thread(target=run, name="shoprec-drift", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
