"""A/B tests in the running service: which arm answers a shopper, and the record of what was shown.

``ServiceExperiments`` re-reads the experiments from the event store every ``SHOPREC_EXPERIMENTS_REFRESH_S``
seconds (default 2) in a thread, loads the arms they need (a model tag beside the champion, the
popular and trending policies over the champion's catalogue) and publishes one immutable snapshot
that requests read. A unit (user id, or session id for anonymous shoppers) in a running experiment
of the endpoint gets its variant's arm; its answer carries ``request_id``, ``experiment`` and
``variant``, and the exposure is queued for the event store (features/exposures.py). Everyone else,
and everyone once an experiment stops, gets the champion and no experiment fields. An experiment
whose arm cannot load is left out (champion for all, no exposures) and the log says why.
"""
from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.event_store import Event
from features.experiments import Experiment, Variant, assign
from features.exposures import Exposure, ExposureWriter, Outcome, open_experiment_log
from serving.reload import Refused, Served, smoke_test
from training.experiments.policies import policy_store, popularity, trending_scores
from training.experiments.publish import ArmRefused, load_arm
from training.publish import NotInStore
from training.storefront import Storefront

log = logging.getLogger("shoprec.experiments")


class ExperimentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPREC_", extra="ignore", frozen=True)

    experiments_refresh_s: float = Field(2.0, gt=0, le=10, description="a running server re-reads experiments this often")
    trending_days: float = Field(7.0, gt=0, description="the trending policy: distinct buyers over this many days")
    trending_refresh_s: float = Field(60.0, gt=0, description="how often the trending policy's list is recounted")


@dataclass(frozen=True)
class Arm:
    """What answers a unit under an experiment."""

    experiment: Experiment
    variant: Variant
    store: Storefront | None  # None: the champion of the request
    version: str | None  # model version to report; None: the champion's


@dataclass(frozen=True)
class Snapshot:
    by_endpoint: dict[str, list[tuple[Experiment, dict[str, Arm]]]]
    champion_tag: str | None
    has_experiments: bool  # running or stopped within its attribution window: outcomes are worth logging


def resolve_arm(arm: str, shop: str = "") -> tuple:
    """(bundle, tag, registry version) of a model arm of the champion's shop (training/experiments/publish.py
    ``load_arm``); ``Refused`` when it is not in the store or cannot serve beside the champion."""
    try:
        return load_arm(arm, shop)
    except (NotInStore, ArmRefused) as e:
        raise Refused(str(e)) from e


class ServiceExperiments:
    def __init__(self, events_url: str, models, settings: ExperimentSettings | None = None,
                 resolve: Callable = resolve_arm):
        self.settings = settings or ExperimentSettings()
        self.log = open_experiment_log(events_url)
        self.writer = ExposureWriter(self.log)
        atexit.register(self.writer.close)  # a worker that exits commits the exposures still queued
        self.models = models  # serving/reload.py ModelSlot: the champion now serving
        self._resolve = resolve
        self._loaded: dict[str, tuple[Storefront, str]] = {}  # model tag -> (store, version)
        self._refused: dict[str, str] = {}
        self._trending: tuple[float, str | None, Storefront | None] = (0.0, None, None)
        self._popular: tuple[str | None, Storefront | None] = (None, None)
        self.snapshot = Snapshot({}, None, False)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="shoprec-experiments", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------------------
    def arm(self, endpoint: str, unit_id: str) -> Arm | None:
        """The arm of the first running experiment of ``endpoint`` that the unit is in; None: champion."""
        if not unit_id:
            return None
        for exp, arms in self.snapshot.by_endpoint.get(endpoint, ()):
            variant = assign(exp, unit_id)
            if variant is not None:
                return arms[variant.name]
        return None

    def run(self, endpoint: str, unit_id: str, user_id: str, champion: Served, call: Callable[[Storefront], object]):
        """``call`` on the unit's arm (the champion's store when not under experiment); the answer remembers
        the arm so that ``label`` can mark the reply and record the exposure."""
        arm = self.arm(endpoint, unit_id)
        answer = call(arm.store if arm is not None and arm.store is not None else champion.store)
        if arm is not None:
            answer.exposure = (arm, endpoint, unit_id, user_id)
        return answer

    def label(self, reply, answer):
        """The reply with ``request_id``, ``experiment``, ``variant`` (and the arm's model version) when the
        answer came from an experiment's arm; its exposure is queued for the event store."""
        if (exposure := getattr(answer, "exposure", None)) is None:
            return reply
        arm, endpoint, unit_id, user_id = exposure
        request_id = uuid.uuid4().hex
        reply.request_id, reply.experiment, reply.variant = request_id, arm.experiment.name, arm.variant.name
        if arm.version is not None:
            reply.model_version = arm.version
        self.writer.put(Exposure(request_id, arm.experiment.name, arm.variant.name, unit_id, user_id, endpoint,
                                 tuple(answer.item_ids), time.time()))
        return reply

    def record_outcomes(self, user_id: str, events: list[Event], requests: list) -> None:
        """Every purchase (the next experiment's pre-period spend too), and views/carts that carry a request
        id (durable: committed before /events answers). ``requests``: the request's EventIn, same order."""
        from serving.event_intake import parse_ts

        rows = []
        for e, r in zip(events, requests):
            if e.event_type != "purchase" and not r.request_id:
                continue
            price = r.price if r.price is not None else self._catalogue_price(e.item_id)
            value = float(price or 0.0) * float(r.quantity if r.quantity is not None else 1) if e.event_type == "purchase" else 0.0
            rows.append(Outcome(r.request_id, user_id, e.event_type, e.item_id, value, parse_ts(e.ts).timestamp()))
        if rows:
            self.log.add_outcomes(rows)

    def _catalogue_price(self, item_id: str) -> float | None:
        """The served catalogue's price of ``item_id``: a purchase sent without its price still counts its revenue
        (it counted 0); None where the catalogue has none."""
        served = self.models.current
        catalog = served.store.bundle.catalog if served is not None else None
        if catalog is None or (row := served.store.items.row(item_id)) < 0:
            return None
        price = float(catalog["price"].iat[row])
        return price if math.isfinite(price) else None

    # -- the refresher ----------------------------------------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.wait(self.settings.experiments_refresh_s):
            try:
                self.refresh()
            except Exception:  # a store that is briefly down: keep the last snapshot
                log.exception("could not refresh the experiments; keeping the last ones")

    def refresh(self) -> None:
        with self._lock:
            try:
                experiments = self.log.experiments()
            except Exception:
                log.exception("could not read the experiments; keeping the last ones")
                return
            champion: Served | None = self.models.current
            now = time.time()
            recent = [e for e in experiments if e.running or _stopped_within(e, now)]
            by_endpoint: dict[str, list] = {}
            if champion is not None:
                for exp in (e for e in experiments if e.running):
                    try:
                        arms = {v.name: self._arm(exp, v, champion) for v in exp.variants}
                    except Refused as e:
                        if self._refused.get(exp.name) != str(e):
                            log.error("experiment %s left out (champion for everyone): %s", exp.name, e)
                        self._refused[exp.name] = str(e)
                        continue
                    self._refused.pop(exp.name, None)
                    by_endpoint.setdefault(exp.endpoint, []).append((exp, arms))
            self.snapshot = Snapshot(by_endpoint, champion.tag if champion else None, bool(recent))

    def check_arm(self, exp: Experiment, v: Variant, champion: Served) -> None:
        """Load ``v``'s arm beside ``champion`` now (kept for the next snapshot); ``Refused`` with the reason when
        it cannot serve (serving/experiments_api.py checks a new experiment's arms before storing it)."""
        with self._lock:
            self._arm(exp, v, champion)

    def _arm(self, exp: Experiment, v: Variant, champion: Served) -> Arm:
        if v.kind == "champion":
            return Arm(exp, v, None, None)
        if v.arm == "popular":
            if self._popular[0] != champion.tag:
                self._popular = (champion.tag, policy_store(champion.store.bundle, "popular",
                                                            popularity(champion.store.bundle)))
            return Arm(exp, v, self._popular[1], f"{champion.version}+policy:popular")
        if v.arm == "trending":
            at, tag, store = self._trending
            if tag != champion.tag or time.monotonic() - at >= self.settings.trending_refresh_s:
                counts = self.log.purchase_counts(time.time() - self.settings.trending_days * 86_400)
                store = policy_store(champion.store.bundle, "trending", trending_scores(champion.store.bundle, counts))
                self._trending = (time.monotonic(), champion.tag, store)
            return Arm(exp, v, store, f"{champion.version}+policy:trending")
        tag = v.arm
        if tag not in self._loaded:
            try:
                bundle, full_tag, version = self._resolve(tag, champion.shop)
            except Refused as e:
                raise Refused(f"variant {v.name}: {e}") from e
            try:
                store = Storefront(bundle, approximate=True)
            except Exception as e:
                raise Refused(f"variant {v.name}: cannot serve {full_tag}: {type(e).__name__}: {e}") from e
            shop = str(bundle.meta.get("shop", ""))
            smoke_test(store)
            self._loaded[tag] = (store, f"{shop}/v{version}" if shop else version)
            log.info("experiment %s: variant %s loaded %s beside the champion", exp.name, v.name, full_tag)
        store, version = self._loaded[tag]
        return Arm(exp, v, store, version)

    def close(self) -> None:
        self._stop.set()
        self.writer.close()


def _stopped_within(exp: Experiment, now: float) -> bool:
    if exp.stopped_at is None:
        return False
    import datetime as dt

    stopped = dt.datetime.fromisoformat(exp.stopped_at).timestamp()
    return now - stopped <= exp.attribution_days * 86_400
