"""What ``/events`` accepts: events that could have happened, about items the shop sells, at a rate a
storefront sends them. A request with any bad event stores nothing and is answered 400 with every bad
field named (``events.<i>.ts``, ``events.<i>.item_id``; event types outside the contract are refused
by the schema already); too many events from one key or for one shopper: 429 with ``Retry-After``.
Rejected events are counted (metric ``shoprec_events_rejected``, by reason).

- ``ts``: ISO 8601 (no zone = UTC); not more than ``clock_skew_s`` ahead of the server's clock, and not
  before the end of the served model's training data (``data_until`` in its bundle): older events are
  history the model has already learnt from, and letting anyone backdate them would rewrite it.
- ``item_id``: in the served model's catalogue.
"""
from __future__ import annotations

import datetime as dt
import logging

from prometheus_client import Counter
from starlette.responses import JSONResponse

from features.event_store import Event
from serving.rate_limits import RateLimits
from serving.schemas import EventsRequest

log = logging.getLogger("shoprec.events")
REJECTED = Counter("shoprec_events_rejected", "events refused by /events, by reason", ["reason"])  # on /metrics


def parse_ts(text: str) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 (``Z`` accepted; no zone means UTC); ValueError otherwise."""
    ts = dt.datetime.fromisoformat(text.strip())
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def _error(loc: tuple, msg: str, kind: str) -> dict:
    return {"loc": list(loc), "msg": msg, "type": kind}


def event_problems(req: EventsRequest, known, data_until: dt.datetime | None, now: dt.datetime,
                   skew_s: float) -> list[dict]:
    """Field errors (pydantic's shape: loc, msg, type) of the request's events; [] when all are fine.
    ``known(item_ids) -> list[bool]``: which items the catalogue has."""
    errors = []
    for i, (event, is_known) in enumerate(zip(req.events, known([e.item_id for e in req.events]))):
        if not is_known:
            errors.append(_error(("events", i, "item_id"), "unknown item: not in the served model's catalogue",
                                 "unknown_item"))
        if event.ts is None:
            continue
        try:
            ts = parse_ts(event.ts)
        except ValueError:
            errors.append(_error(("events", i, "ts"), "not an ISO 8601 time (e.g. 2025-03-01T12:00:00Z)", "ts_format"))
            continue
        if ts > now + dt.timedelta(seconds=skew_s):
            errors.append(_error(("events", i, "ts"), f"in the future: more than {skew_s:g} s after the server's "
                                                      f"clock ({now.isoformat(timespec='seconds')})", "ts_future"))
        elif data_until is not None and ts < min(data_until, now):
            errors.append(_error(("events", i, "ts"), "too old: before the end of the served model's training "
                                                      f"data ({data_until.isoformat()})", "ts_too_old"))
    return errors


def data_until(meta: dict) -> dt.datetime | None:
    text = meta.get("data_until")
    try:
        return parse_ts(str(text)) if text else None
    except ValueError:
        return None


class EventIntake:
    def __init__(self, limits: RateLimits, clock_skew_s: float):
        self.limits = limits
        self.clock_skew_s = clock_skew_s

    def accept(self, req: EventsRequest, store, key_name: str, shopper: str) -> list[Event] | JSONResponse:
        """The events to store, or the refusal to answer. ``store``: the served model's storefront;
        ``shopper``: the shopper's pseudonym (rate-limit counters hold no raw ids)."""
        now = dt.datetime.now(dt.timezone.utc)
        problems = event_problems(req, lambda ids: (store.items.rows(ids) >= 0).tolist(),
                                  data_until(store.bundle.meta), now, self.clock_skew_s)
        if problems:
            for p in problems:
                REJECTED.labels(reason=p["type"]).inc()
            log.info("400 /events: %d of %d events refused (%s): nothing stored", len({p["loc"][1] for p in problems}),
                     len(req.events), ", ".join(sorted({p["type"] for p in problems})))
            return JSONResponse({"error": f"{len(problems)} invalid event field(s): nothing stored",
                                 "detail": problems}, status_code=400)
        if (limited := self.limits.events(key_name, shopper, len(req.events))) is not None:
            which, wait = limited
            REJECTED.labels(reason="rate_limit").inc(len(req.events))
            return JSONResponse({"error": f"too many events ({which}): retry after {wait} s"}, status_code=429,
                                headers={"Retry-After": str(wait)})
        stamp = now.isoformat()
        return [Event(e.item_id, e.event_type, parse_ts(e.ts).isoformat() if e.ts else stamp, e.session_id)
                for e in req.events]
