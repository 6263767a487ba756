"""Point-in-time user features as relational expressions: the definitions of
``features.user_features`` (read its docstring for what each feature means), computed only from
rows with ``ts <= at``.

Times are compared as integer microseconds before ``at`` (``age_us``), so a window bound is exact
and no engine does interval arithmetic; days are ``age_us / 86,400,000,000``. Money and quantities
are summed with ``exact_sum``, so both engines give the same bits.
"""
from __future__ import annotations

import ibis

from features.relational.engine import US_PER_DAY, at_micros, exact_sum, f64, micros, ts_literal
from features.relational.labels import customers_at
from features.user_features import CATEGORY_FEATURES, EVENT_FEATURES, ORDER_FEATURES

F64 = "float64"


def clip_lower(x: ibis.Value, lo: float) -> ibis.Value:
    """max(x, lo), null stays null (GREATEST skips nulls on DuckDB and Spark, pandas' clip does not)."""
    return ibis.cases((x < lo, f64(lo)), else_=x)


def ratio(num: ibis.Value, den: ibis.Value) -> ibis.Value:
    """num / den, null where den is not positive (no division by zero on Spark's ANSI mode)."""
    return ibis.cases((den > 0, num / den), else_=ibis.null(F64))


def pct_change(now: ibis.Value, before: ibis.Value) -> ibis.Value:
    return ratio(now - before, before)


def count_if(rows: ibis.Table, cond: ibis.Value) -> ibis.Value:
    """The number of ``rows`` where ``cond`` holds, as float64 (COUNT(*) FILTER on DuckDB)."""
    return rows.count(where=cond).fill_null(0).cast(F64)


def sum_if(cond: ibis.Value, value: ibis.Value) -> ibis.Value:
    return exact_sum(ibis.cases((cond, value), else_=f64(0.0)))


def within(age_us: ibis.Value, lo_days: float, hi_days: float) -> ibis.Value:
    """ts in (at - hi, at - lo], with ``age_us`` = at - ts in microseconds."""
    return (age_us < int(hi_days * US_PER_DAY)) & (age_us >= int(lo_days * US_PER_DAY))


def order_features(orders: ibis.Table, at, items: ibis.Table | None = None) -> ibis.Table:
    """user_id + ORDER_FEATURES (+ CATEGORY_FEATURES with ``items``: give it only when the catalog has
    at least two categories) for every customer with a purchase up to ``at``."""
    now = at_micros(at)
    past = orders.filter(orders.ts <= ts_literal(at))
    buys = past.filter(past.quantity > 0).mutate(value=past.quantity * past.price)
    returns = past.filter(past.quantity < 0)
    returns = returns.mutate(value=-returns.quantity * returns.price)
    per_order = buys.group_by(["user_id", "order_id"]).aggregate(
        ts=buys.ts.min(), lines=buys.count().cast(F64), units=exact_sum(buys.quantity), value=exact_sum(buys.value))
    po = per_order.mutate(age_us=now - micros(per_order.ts), day=per_order.ts.truncate("D"))
    day = f64(US_PER_DAY)
    f = po.group_by("user_id").aggregate(
        recency_days=po.age_us.min() / day,
        frequency=po.count().cast(F64),
        monetary=exact_sum(po.value),
        tenure_days=po.age_us.max() / day,
        purchase_days=po.day.nunique().cast(F64),
        basket_lines=po.lines.mean(),
        basket_units=exact_sum(po.units) / po.count(),
        basket_value=exact_sum(po.value) / po.count(),
        orders_30d=count_if(po, within(po.age_us, 0, 30)),
        orders_prev_30d=count_if(po, within(po.age_us, 30, 60)),
        orders_90d=count_if(po, within(po.age_us, 0, 90)),
        orders_prev_90d=count_if(po, within(po.age_us, 90, 180)),
        spend_30d=sum_if(within(po.age_us, 0, 30), po.value),
        spend_90d=sum_if(within(po.age_us, 0, 90), po.value),
        spend_prev_90d=sum_if(within(po.age_us, 90, 180), po.value),
    )
    mean_gap = ibis.cases((f.purchase_days > 1, (f.tenure_days - f.recency_days) / (f.purchase_days - 1)),
                          else_=ibis.null(F64))
    f = f.mutate(mean_gap_days=mean_gap)
    f = f.mutate(
        gap_ratio=f.recency_days / clip_lower(f.mean_gap_days, 1.0),
        orders_trend_30d=pct_change(f.orders_30d, f.orders_prev_30d),
        spend_trend_90d=pct_change(f.spend_90d, f.spend_prev_90d),
        order_rate_30d=f.frequency / clip_lower(f.tenure_days, 30.0) * f64(30.0),
    )
    item_orders = buys.group_by(["user_id", "item_id"]).aggregate(n_orders=buys.order_id.nunique())
    breadth = item_orders.group_by("user_id").aggregate(
        distinct_items=item_orders.count().cast(F64),
        repeat_item_share=ibis.cases((item_orders.n_orders > 1, f64(1.0)), else_=f64(0.0)).mean())
    back = returns.group_by("user_id").aggregate(
        return_lines=returns.count().cast(F64), return_orders=returns.order_id.nunique().cast(F64),
        return_value=exact_sum(returns.value))
    f = f.left_join(breadth, "user_id").drop("user_id_right")
    f = f.left_join(back, "user_id").drop("user_id_right")
    f = f.mutate(return_lines=f.return_lines.fill_null(f64(0.0)), return_orders=f.return_orders.fill_null(f64(0.0)),
                 return_share=ratio(f.return_value.fill_null(f64(0.0)), f.monetary))
    columns = list(ORDER_FEATURES)
    if items is not None:
        cats = items.select("item_id", "category")
        labelled = buys.left_join(cats, "item_id")
        per_user = labelled.group_by("user_id").aggregate(distinct_categories=labelled.category.nunique().cast(F64))
        f = f.left_join(per_user, "user_id").drop("user_id_right")
        columns += CATEGORY_FEATURES
    return f.select("user_id", *[f[c].cast(F64).name(c) for c in columns])


def event_features(events: ibis.Table, at, users: ibis.Table) -> ibis.Table:
    """user_id + EVENT_FEATURES for each row of ``users`` (a table with user_id) from the identified
    clickstream up to ``at``: counts 0 and times null for users without events."""
    now = at_micros(at)
    day = f64(US_PER_DAY)
    ev = events.filter((events.ts <= ts_literal(at)) & events.user_id.notnull())
    ev = ev.semi_join(users.select("user_id"), "user_id")
    ev = ev.mutate(age_us=now - micros(ev.ts))
    per_user = ev.group_by("user_id").aggregate(
        views=count_if(ev, ev.event_type == "view"),
        views_30d=count_if(ev, (ev.event_type == "view") & (ev.age_us < 30 * US_PER_DAY)),
        carts=count_if(ev, ev.event_type == "cart"),
        carts_30d=count_if(ev, (ev.event_type == "cart") & (ev.age_us < 30 * US_PER_DAY)),
        purchases=count_if(ev, ev.event_type == "purchase"),
        days_since_visit=ev.age_us.min() / day,
        active_days=ev.age_us.max() / day,
    )
    sessions = ev.group_by(["user_id", "session_id"]).aggregate(
        age_us=ev.age_us.max(),  # the session's first event
        cart=(ev.event_type == "cart").max(),
        bought=(ev.event_type == "purchase").max(),
    )
    per_session = sessions.group_by("user_id").aggregate(
        sessions=sessions.count().cast(F64),
        sessions_30d=count_if(sessions, within(sessions.age_us, 0, 30)),
        sessions_prev_30d=count_if(sessions, within(sessions.age_us, 30, 60)),
        span_days=(sessions.age_us.max() - sessions.age_us.min()) / day,
        carted=count_if(sessions, sessions.cart),
        carted_bought=count_if(sessions, sessions.cart & sessions.bought),
    )
    f = users.select("user_id").left_join(per_user, "user_id").drop("user_id_right")
    f = f.left_join(per_session, "user_id").drop("user_id_right")
    zero = ["sessions", "sessions_30d", "sessions_prev_30d", "views", "views_30d", "carts", "carts_30d", "purchases"]
    f = f.mutate(**{c: f[c].fill_null(f64(0.0)) for c in zero})
    f = f.mutate(mean_visit_gap_days=ibis.cases((f.sessions > 1, f.span_days / (f.sessions - 1)), else_=ibis.null(F64)))
    f = f.mutate(
        visit_gap_ratio=f.days_since_visit / clip_lower(f.mean_visit_gap_days, 1.0),
        cart_abandonment=ibis.cases((f.carted > 0, f64(1.0) - f.carted_bought / f.carted), else_=ibis.null(F64)),
        view_to_cart=ratio(f.carts, f.views),
        cart_to_purchase=ratio(f.purchases, f.carts),
        intensity_30d=ibis.cases(
            (f.sessions > 0, f.sessions_30d / (f.sessions / clip_lower(f.active_days, 30.0) * f64(30.0))),
            else_=ibis.null(F64)),
    )
    return f.select("user_id", *[f[c].cast(F64).name(c) for c in EVENT_FEATURES])


def user_features(orders: ibis.Table, at, events: ibis.Table | None = None, items: ibis.Table | None = None) -> ibis.Table:
    """user_id + every feature at ``at`` for each customer with a purchase up to ``at``: the order
    features, and the event features when ``events`` is given (pass it only when it has identified
    users, ``items`` only when the catalog has at least two categories, as the pandas version decides)."""
    f = order_features(orders, at, items)
    if events is None:
        return f
    # the population by its definition (a purchase up to ``at``), not by the feature table: the engine
    # would otherwise compute the order features twice, once to filter the clickstream
    ef = event_features(events, at, customers_at(orders, at))
    return f.left_join(ef, "user_id").drop("user_id_right")
