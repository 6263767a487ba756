"""Rate limits with the ``limits`` library: requests per key, events per key and per shopper, and failed
sign-ins per account and per client address on the marketers' page.

Counters live in memory (one worker: ``WorkerWindows`` below) or in Redis (``SHOPREC_LIMITS_URL``, by default the
event store's Redis when there is one), so that replicas share them. A limit answers with the seconds to wait
(``Retry-After``). When the counter store cannot be reached the request is served (the storefront must
keep answering) and the error is logged, at most once a minute.
"""
from __future__ import annotations

import logging
import math
import threading
import time

from limits import RateLimitItem, WindowStats, parse
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
        # two counters per key: cheap at 1000s per second; in one worker's memory without limits' memory store,
        # whose expiry timer is a thread started again whenever the last one has ended (WorkerWindows)
        self._counter = WorkerWindows() if url.startswith("memory:") else SlidingWindowCounterRateLimiter(storage)
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
        counter store is asked once per batch, not per request (Redis costs a round trip). A key over its
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


class WorkerWindows:
    """Sliding window counters in one worker's memory: ``limits``' sliding window counter strategy on its memory
    store, the same windows and the same answers (``hit``, ``get_window_stats``; tests/test_keys.py replays both
    side by side), without the store's expiry thread. ``MemoryStorage`` starts a ``threading.Timer`` (10 ms)
    on every count when the previous one has ended, i.e. a new thread per counted batch on a busy worker, and
    waits for it to start. Here a key's two windows roll over when the key is next counted, and each count
    also looks at the oldest key and drops it if both its windows have passed (else moves it to the back), so
    keys nobody counts any more leave at the pace new ones come. A lock, not the event loop, guards the
    counts: /events counts from the server's thread pool."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._windows: dict[str, tuple[int, int, int, int]] = {}  # key -> (window number, previous, current, period s)
        self._lock = threading.Lock()

    def _counts(self, key: str, period: int, now: float) -> tuple[int, int, int]:
        """(window number now, previous window's count, current window's count)."""
        window = int(now / period)
        at, previous, current, _ = self._windows.get(key, (window, 0, 0, period))
        if at == window:
            return window, previous, current
        return window, (current if at == window - 1 else 0), 0

    @staticmethod
    def _previous_ttl(previous: int, period: int, now: float) -> float:
        """How much of the previous window the sliding window still covers, in seconds (as limits computes it)."""
        return (1 - (((now - period) / period) % 1)) * period if previous else 0.0

    def _weighted(self, previous: int, current: int, period: int, now: float) -> float:
        return previous * self._previous_ttl(previous, period, now) / period + current

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key, period, now = item.key_for(*identifiers), item.get_expiry(), self._clock()
        if cost > item.amount:
            return False
        with self._lock:
            self._expire_oldest(now)
            window, previous, current = self._counts(key, period, now)
            if math.floor(self._weighted(previous, current, period, now)) + cost > item.amount:
                return False
            self._windows[key] = (window, previous, current + cost, period)
            return True

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        """(when the next count frees up, counts left): limits' ``get_window_stats`` of this strategy."""
        key, period, now = item.key_for(*identifiers), item.get_expiry(), self._clock()
        with self._lock:
            _, previous, current = self._counts(key, period, now)
        remaining = max(0, item.amount - math.floor(self._weighted(previous, current, period, now)))
        if not (previous or current):
            return WindowStats(now, remaining)
        previous_reset = current_reset = math.inf
        if previous:
            previous_reset = self._previous_ttl(previous, period, now) % (period / previous)
        if current:
            current_reset = ((1 - ((now / period) % 1)) * period + period) % period
        return WindowStats(now + min(previous_reset, current_reset), remaining)

    def _expire_oldest(self, now: float) -> None:
        if not self._windows:
            return
        key = next(iter(self._windows))
        entry = self._windows.pop(key)
        if int(now / entry[3]) <= entry[0] + 1:  # the current or the previous window: still counts
            self._windows[key] = entry

    def __len__(self) -> int:
        return len(self._windows)
