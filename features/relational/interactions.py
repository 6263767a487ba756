"""Interaction triplets (user_id, item_id, weight) as relational expressions.

The engine does the heavy part (filter, weight, decay, window, sum per pair); the CSR matrix and
its id vocabularies are then built from the triplets in Python (``features.relational.frames.
interaction_matrix``), as ``features.interactions.build_matrix`` builds them from the long log.
"""
from __future__ import annotations

import ibis

from features.interactions import InteractionConfig
from features.relational.engine import US_PER_DAY, at_micros, f64, micros


def interaction_log(events: ibis.Table | None, orders: ibis.Table | None, config: InteractionConfig) -> ibis.Table:
    """(user_id, item_id, ts, weight) of every positive signal, as ``features.interactions.interaction_log``:
    purchases from order lines with quantity > 0 (purchase events only without orders); anonymous
    events skipped."""
    parts = []
    if events is not None:
        ev = events.filter(events.user_id.notnull())
        if orders is not None:
            ev = ev.filter(ev.event_type != "purchase")
        weight = ibis.cases((ev.event_type == "view", f64(config.view_weight)), (ev.event_type == "cart", f64(config.cart_weight)),
                            (ev.event_type == "purchase", f64(config.purchase_weight)), else_=ibis.null("float64"))
        parts.append(ev.select(user_id=ev.user_id, item_id=ev.item_id, ts=ev.ts, weight=weight.cast("float64")))
    if orders is not None:
        od = orders.filter(orders.quantity > 0)
        parts.append(od.select(user_id=od.user_id, item_id=od.item_id, ts=od.ts,
                               weight=f64(config.purchase_weight)))
    if not parts:
        raise ValueError("give events or orders")
    return parts[0] if len(parts) == 1 else parts[0].union(parts[1], distinct=False)


def timed(config: InteractionConfig) -> bool:
    """Whether the weights depend on the time of each interaction (a window or a half-life)."""
    return config.window_days is not None or config.half_life_days is not None


def triplets(log: ibis.Table, config: InteractionConfig, now=None, keys=("user_id", "item_id")) -> ibis.Table:
    """(user_id, item_id, weight): the summed weights per pair, decayed by age from ``now`` (a timestamp;
    required with a half-life or window), only the last ``window_days``; binary: the decay of the
    pair's latest interaction. Pairs whose weight is not positive are left out. ``keys`` name the pair's
    columns (the matrix groups by row numbers, cheaper than by text ids)."""
    weight = log.weight
    if timed(config):
        if now is None:
            raise ValueError("a half-life or window needs 'now'")
        age_days = (ibis.literal(at_micros(now)) - micros(log.ts)) / f64(US_PER_DAY)
        log = log.mutate(age_days=age_days)
        if config.window_days is not None:
            log = log.filter(log.age_days <= config.window_days)
        decay = f64(1.0)
        if config.half_life_days is not None:
            decay = f64(0.5) ** (ibis.cases((log.age_days < 0, f64(0.0)), else_=log.age_days) / f64(config.half_life_days))
        log = log.mutate(decay=decay, weight=log.weight * decay)
    else:
        log = log.mutate(decay=f64(1.0))
    log = log.filter(log.weight > 0)
    if config.binary:
        return log.group_by(list(keys)).aggregate(weight=log.decay.max())
    return log.group_by(list(keys)).aggregate(weight=log.weight.sum())
