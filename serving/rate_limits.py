"""Rate limits with the ``limits`` library: requests per key, events per key and per shopper, and failed
sign-ins per account and per client address on the marketers' page.

Counters live in memory (one worker) or in Redis (``SHOPREC_LIMITS_URL``, by default the event store's
Redis when there is one), so that replicas share them. A limit answers with the seconds to wait
(``Retry-After``). When the counter store cannot be reached the request is served (the storefront must
keep answering) and the error is logged, at most once a minute.
"""
from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from features.settings import Settings

log = logging.getLogger("shoprec.limits")
KEY_BATCH = 20  # at most this many of a key's requests are counted at once (see key_request)


class RateLimits:
    def __init__(self, settings: Settings):
        url = settings.rate_storage_url()
        options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5} if url.startswith(("redis", "unix")) else {}
        storage = storage_from_string(url, **options)
        self._counter = SlidingWindowCounterRateLimiter(storage)  # two counters per key: cheap at 1000s per second
        self._exact = MovingWindowRateLimiter(storage)  # sign-in failures: few, counted exactly
        self.per_key = parse(settings.rate_per_key)
        self.events_per_key = parse(settings.rate_events_per_key)
        self.events_per_shopper = parse(settings.rate_events_per_shopper)
        self.login_failures = parse(settings.login_failures)
        self._last_error = 0.0
        self._key_batches: dict[str, tuple[int, float]] = {}  # key -> (requests not yet counted, refused until)

    def hit(self, item: RateLimitItem, *ids: str, cost: int = 1) -> int | None:
        """Take ``cost`` from the limit: None when allowed, else the seconds to wait (at least 1)."""
        try:
            if self._counter.hit(item, *ids, cost=cost):
                return None
            reset = self._counter.get_window_stats(item, *ids).reset_time
        except Exception as e:
            self._storage_error(e)
            return None
        return max(1, math.ceil(reset - time.time()))

    def key_request(self, key_name: str) -> int | None:
        """Requests per key, counted in batches of up to 1% of the limit (at most ``KEY_BATCH``) per worker: the
        counter store is asked once per batch, not per request (``limits``' memory store starts a timer thread
        when one is not running, Redis costs a round trip; py-spy put it at ~6% of a busy worker). A key over its
        limit is refused from the batch that crosses it until the window lets it in again."""
        now = time.monotonic()
        pending, refused_until = self._key_batches.get(key_name, (0, 0.0))
        if refused_until > now:
            return max(1, math.ceil(refused_until - now))
        pending += 1
        if pending < max(1, min(KEY_BATCH, self.per_key.amount // 100)):
            self._key_batches[key_name] = (pending, 0.0)
            return None
        wait = self.hit(self.per_key, "key", key_name, cost=pending)
        self._key_batches[key_name] = (0, 0.0 if wait is None else now + wait)
        return wait

    def events(self, key_name: str, shopper: str, n: int) -> tuple[str, int] | None:
        """(which limit, seconds to wait) when ``n`` more events from this key for this shopper are too many."""
        if (wait := self.hit(self.events_per_key, "events-key", key_name, cost=n)) is not None:
            return "events per key", wait
        if (wait := self.hit(self.events_per_shopper, "events-shopper", shopper, cost=n)) is not None:
            return "events per shopper", wait
        return None

    # -- sign-in throttling: check before the attempt, count only failures ------------------------
    def login_blocked(self, account: str, address: str) -> int | None:
        """Seconds to wait when this account or this address has used up its failed sign-ins."""
        try:
            for ids in (("login-account", account), ("login-address", address)):
                if not self._exact.test(self.login_failures, *ids):
                    reset = self._exact.get_window_stats(self.login_failures, *ids).reset_time
                    return max(1, math.ceil(reset - time.time()))
        except Exception as e:
            self._storage_error(e)
        return None

    def login_failed(self, account: str, address: str) -> None:
        try:
            self._exact.hit(self.login_failures, "login-account", account)
            self._exact.hit(self.login_failures, "login-address", address)
        except Exception as e:
            self._storage_error(e)

    def _storage_error(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error > 60:
            self._last_error = now
            log.error("rate-limit counters unreachable, requests are not limited: %s: %s", type(e).__name__, e)
