"""Model swaps without dropping requests: load, smoke-test, then swap in one assignment.

The service reads ``ModelSlot.current`` once per request, so a request that started on the
old model finishes on it; the swap is a single attribute assignment, and reloads take a lock
so that two never interleave. A model that is missing, will not load (incomplete, corrupt,
or needing pickle) or fails the smoke test is refused, and the old one keeps serving.

Which model: the BentoML store's ``shoprec-recommender:latest`` (``SHOPREC_MODEL``), which
``shoprec publish`` keeps equal to the registry's champion, so rolling back is moving the
alias back and publishing again. The service picks it up on ``POST /admin/reload`` or, with
``SHOPREC_RELOAD_POLL_S`` > 0, by itself every that many seconds.
"""
from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from training.bundle import ModelBundle
from training.publish import NotInStore, stored_location
from training.storefront import Storefront

MODEL_TAG_ENV, DEFAULT_MODEL_TAG = "SHOPREC_MODEL", "shoprec-recommender:latest"
SHOP_ENV = "SHOPREC_SHOP"  # the lineage this service serves; unset: that of the first model it loads
POLL_ENV = "SHOPREC_RELOAD_POLL_S"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(:[A-Za-z0-9._-]{1,63})?$"
ANONYMOUS = ""  # never in a vocabulary (validation rejects empty ids): always the fallback
log = logging.getLogger("shoprec.reload")


@dataclass(frozen=True)
class Served:
    """One loaded model, as requests see it from start to end."""

    store: Storefront
    version: str  # "<shop>/v<registry version>" (just the version for a bundle without a lineage)
    tag: str  # the BentoML model tag
    loaded_at: float
    shop: str = ""


@dataclass(frozen=True)
class Outcome:
    status: Literal["loaded", "unchanged", "refused"]
    requested: str
    serving: str | None  # tag serving after the attempt
    version: str | None
    detail: str


class Refused(Exception):
    """The candidate model may not serve; the message says why."""


def smoke_test(store: Storefront) -> None:
    """The model scores a known shopper over every item, without NaN; a known shopper gets a model
    answer, an unknown one the fallback, an item its neighbours; answers non-empty, with known
    item ids and finite scores."""
    bundle = store.bundle
    if len(bundle.users) == 0 or len(bundle.items) == 0:
        raise Refused("the bundle has no users or no items")
    k = min(5, len(bundle.items))
    # a shopper the model knows: a non-empty row (a recipe on purchases alone leaves browsers' rows empty)
    rows_with_data = np.flatnonzero(np.diff(bundle.interactions.indptr) > 0)
    if len(rows_with_data) == 0:
        raise Refused("the bundle has no shopper with interactions")
    known = int(rows_with_data[0])
    raw = np.asarray(bundle.model.scores(np.array([known])))
    # -inf is "not recommendable" (a ranker's non-candidates, items outside EASE's cap); NaN is broken
    if raw.shape != (1, len(bundle.items)) or np.isnan(raw).any() or not np.isfinite(raw).any():
        raise Refused(f"smoke test: the model scores a known shopper with shape {raw.shape} "
                      f"(expected (1, {len(bundle.items)})), with NaN, or with no finite score")
    checks = {
        "known shopper": (store.recommend(str(bundle.users.ids[known]), k=k, exclude_bought=False), "model:"),
        "unknown shopper": (store.recommend(ANONYMOUS, k=k), "fallback:"),
        "similar items": (store.similar_items(str(bundle.items.ids[0]), k=k), ""),
    }
    for name, (answer, source) in checks.items():
        if not answer.source.startswith(source):
            raise Refused(f"smoke test: {name} answered from {answer.source!r}, expected {source}...")
        if not answer.item_ids and name != "similar items":
            raise Refused(f"smoke test: {name} got no items")
        scores = np.asarray(answer.scores, dtype=float)
        # -inf is an item the answer was topped up with (unscored, written as null); NaN is broken
        if np.isnan(scores).any() or np.isposinf(scores).any() or (len(scores) and not np.isfinite(scores[0])):
            raise Refused(f"smoke test: {name} got NaN or infinite scores, or an unscored first item")
        if (bundle.items.rows(answer.item_ids) < 0).any():
            raise Refused(f"smoke test: {name} got item ids the bundle does not know")


def from_bentoml_store(tag: str) -> tuple[Path, str, str]:
    """(folder, full tag, registry version) of a model in our own BentoML store; no other source."""
    try:
        return stored_location(tag)
    except NotInStore as e:
        raise Refused(str(e)) from e


class ModelSlot:
    """The model now serving (``current``; None until one loads) and how it is replaced."""

    def __init__(self, tag: str = DEFAULT_MODEL_TAG, resolve: Callable[[str], tuple[Path, str, str]] = from_bentoml_store,
                 smoke: Callable[[Storefront], None] = smoke_test, shop: str | None = None):
        self.tag = tag
        self.shop = shop or None  # fixed by the first model loaded when not given
        self.current: Served | None = None
        self._resolve, self._smoke = resolve, smoke
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._last_refused: str | None = None

    @classmethod
    def from_env(cls, environ=os.environ) -> "ModelSlot":
        return cls(environ.get(MODEL_TAG_ENV) or DEFAULT_MODEL_TAG, shop=environ.get(SHOP_ENV))

    @property
    def ready(self) -> bool:
        return self.current is not None

    def reload(self, tag: str | None = None) -> Outcome:
        """Load ``tag`` (default: the configured one) and swap it in if it passes; never raises."""
        tag = tag or self.tag
        with self._lock:
            before = self.current
            try:
                if not re.match(TAG_PATTERN, tag):
                    raise Refused(f"not a model tag: {tag[:80]!r}")
                path, full_tag, version = self._resolve(tag)
                if before is not None and full_tag == before.tag:
                    return Outcome("unchanged", tag, before.tag, before.version, "already serving it")
                try:
                    store = Storefront(ModelBundle.load(path), approximate=True)
                except Exception as e:  # missing files, truncated arrays, object arrays (pickle refused), bad shapes
                    raise Refused(f"cannot load {full_tag}: {type(e).__name__}: {e}") from e
                shop = str(store.bundle.meta.get("shop", ""))
                if self.shop and shop != self.shop:
                    raise Refused(f"{full_tag} was trained on shop {shop or '(unknown)'!r}; this service serves "
                                  f"shop {self.shop!r} (publish that shop's champion: `shoprec publish --shop {self.shop}`)")
                try:
                    self._smoke(store)
                except Refused:
                    raise
                except Exception as e:
                    raise Refused(f"smoke test failed on {full_tag}: {type(e).__name__}: {e}") from e
            except Refused as e:
                if str(e) != self._last_refused:
                    log.warning("model refused, %s keeps serving: %s", before.tag if before else "nothing", e)
                self._last_refused = str(e)
                return Outcome("refused", tag, before.tag if before else None, before.version if before else None, str(e))
            self.shop = self.shop or shop or None
            self.current = Served(store, f"{shop}/v{version}" if shop else version, full_tag, time.time(), shop)
            gc.freeze()  # the new model's objects out of the collector's way (see serving/service.py)
            self._last_refused = None
            log.info("now serving %s (registry version %s); was %s", full_tag, version, before.tag if before else "nothing")
            return Outcome("loaded", tag, full_tag, self.current.version, f"was {before.tag if before else 'nothing'}")

    def start_polling(self, every_s: float) -> None:
        """Reload the configured tag every ``every_s`` seconds in a daemon thread."""
        if self._poller is not None or every_s <= 0:
            return

        def poll() -> None:
            while not self._stop.wait(every_s):
                self.reload()

        self._poller = threading.Thread(target=poll, name="shoprec-model-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
