"""Simulate one chunk of shoppers for the whole period, fully vectorised.

Loops run only over batches of sessions / proposals (memory) and over generations of
repeat purchases (a chain of consumables is at most ~days / cycle long), never over events.
Times are integers: microseconds since the first day's midnight.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.model import HOUR_CDF, World, sigmoid

US_PER_DAY = 86_400_000_000
US_PER_S = 1_000_000
VIEW, CART, PURCHASE = 0, 1, 2


@dataclass
class DayTables:
    """Per-day sampling tables shared by every chunk."""

    rate: np.ndarray  # (days,) shop-wide session multiplier w(t)
    rate_max: float
    log_q: np.ndarray  # (days, n_cat) float32 log Q_c(t), -inf for a category with nothing on sale
    cat_cum: np.ndarray  # (days, n_cat + 1) normalised cumulative attractiveness at category bounds
    cdf: np.ndarray  # (days * n_items,) 2 t + normalised cumulative attractiveness, items by category


def day_tables(world: World, block: int = 16) -> DayTables:
    days, n, n_cat = world.config.days, world.n_items, world.n_categories
    cdf = np.empty(days * n, dtype=np.float64)
    log_q = np.empty((days, n_cat))
    cat_cum = np.empty((days, n_cat + 1))
    for d0 in range(0, days, block):
        d = np.arange(d0, min(days, d0 + block))
        a = np.exp(world.item_log_attr(d, world.cat_order).astype(np.float64))
        cs = np.cumsum(a, axis=1)
        total = cs[:, -1:]
        if (total <= 0).any():
            bad = int(d[np.flatnonzero(total[:, 0] <= 0)[0]])
            raise ValueError(f"n_items: nothing on sale on day {bad}; raise n_items or prelaunched_share")
        at_bounds = np.concatenate([np.zeros((len(d), 1)), cs], axis=1)[:, world.cat_bounds]
        with np.errstate(divide="ignore"):
            log_q[d] = np.log(np.diff(at_bounds, axis=1))
        cat_cum[d] = at_bounds / total
        cdf[d0 * n:(d[-1] + 1) * n] = (cs / total + 2.0 * d[:, None]).ravel()
    rate = world.shop_rate(np.arange(days))
    return DayTables(rate=rate, rate_max=float(rate.max()), log_q=log_q.astype(np.float32), cat_cum=cat_cum, cdf=cdf)


@dataclass
class ChunkOut:
    events: dict[str, np.ndarray]  # ts, user, anon, session, etype, item, quantity (nan for views); by time
    orders: dict[str, np.ndarray]  # order, user, item, ts, quantity, line utility; by order then time
    n_sessions: int
    n_orders: int
    chains: dict[str, np.ndarray]  # consumable purchases: user, item, t0 (days), next_day, realized


def _first_of_runs(a: np.ndarray) -> np.ndarray:
    first = np.ones(len(a), dtype=bool)
    first[1:] = a[1:] != a[:-1]
    return first


def _rank_in_runs(a: np.ndarray) -> np.ndarray:
    """0, 1, 2... within each run of equal values of a sorted array."""
    idx = np.arange(len(a))
    return idx - np.maximum.accumulate(np.where(_first_of_runs(a), idx, 0))


def _sample_categories(theta, log_q, su, sday, rng):
    """One category per session, P(c) ~ exp(theta_ic + log Q_c(t)) (inverse CDF, float32)."""
    out = np.empty(len(su), dtype=np.int64)
    batch = max(1_000, 4_000_000 // theta.shape[1])
    for b in range(0, len(su), batch):
        s = slice(b, b + batch)
        cs = theta[su[s]]
        cs += log_q[sday[s]]
        cs -= cs.max(axis=1, keepdims=True)
        np.exp(cs, out=cs)
        np.cumsum(cs, axis=1, out=cs)
        u = rng.random(len(cs), dtype=np.float32) * cs[:, -1]
        out[s] = np.minimum((cs <= u[:, None]).sum(axis=1), cs.shape[1] - 1)
    return out


def _propose_views(world, tables, users, su, sday, scat, theta, nprop, rng, batch=1_000_000):
    """Poisson proposals from the category's popularity, kept with prob exp(min(r, cap) - cap)."""
    n = world.n_items
    uf, beta = world.user_factors[users], world.user_price_sens[users]  # this chunk's shoppers
    cat_lp = world.cat_log_price[world.item_cat]
    pu = np.repeat(np.arange(len(su)), nprop)
    keep_s, keep_i, keep_x = [], [], []
    for b in range(0, len(pu), batch):
        ps = pu[b:b + batch]
        d, c = sday[ps], scat[ps]
        lo, hi = tables.cat_cum[d, c], tables.cat_cum[d, c + 1]
        v = lo + rng.random(len(ps)) * (hi - lo) + 2.0 * d
        by_v = np.argsort(v)  # sorted needles: a much faster searchsorted in the (days x items) table
        pos = np.empty(len(ps), dtype=np.int64)
        pos[by_v] = np.searchsorted(tables.cdf, v[by_v], side="right")
        pos -= d * n
        pos = np.clip(pos, world.cat_bounds[c], world.cat_bounds[c + 1] - 1)
        item = world.cat_order[pos]
        lu = su[ps]
        r = np.einsum("ij,ij->i", uf[lu], world.item_delta[item])
        r -= beta[lu] * (world.item_log_price[item] - cat_lp[item])
        ok = world.on_sale(item, d) & (rng.random(len(ps)) < np.exp(world.accept_log(r)))
        keep_s.append(ps[ok])
        keep_i.append(item[ok])
        keep_x.append(r[ok] + theta[lu[ok], c[ok]])
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dt)  # noqa: E731
    return cat(keep_s, np.int64), cat(keep_i, np.int64), cat(keep_x, np.float32)


def _hour_us(rng, n):
    hour = np.minimum(np.searchsorted(HOUR_CDF, rng.random(n), side="right"), 23)
    return ((hour + rng.random(n)) * 3_600 * US_PER_S).astype(np.int64)


def _quantity(world, items, rng):
    cfg = world.config
    lam = cfg.quantity_extra + cfg.consumable_quantity_extra * world.item_consumable[items]
    units = 1.0 + rng.poisson(lam).astype(np.float64)
    return units * world.item_pack[items] if cfg.quantity_packs else units


def simulate_chunk(world: World, tables: DayTables, users: np.ndarray, rng: np.random.Generator) -> ChunkOut:
    cfg = world.config
    last_day, n_items = cfg.days - 1, world.n_items
    end_us = cfg.days * US_PER_DAY - 1

    # 1. sessions: Poisson(lambda_i w(t)) on each active day, by thinning
    join = world.user_join[users]
    span = np.clip(np.minimum(world.user_churn_day[users], last_day + 1) - join, 0, None)
    ncand = rng.poisson(world.user_rate[users] * tables.rate_max * span)
    su = np.repeat(np.arange(len(users)), ncand)
    sday = join[su] + np.floor(rng.random(len(su)) * span[su]).astype(np.int64)
    keep = rng.random(len(su)) * tables.rate_max < tables.rate[sday]
    su, sday = su[keep], sday[keep]
    ns = len(su)
    sstart = sday * US_PER_DAY + _hour_us(rng, ns)
    depth = rng.gamma(cfg.session_dispersion, 1.0 / cfg.session_dispersion, ns)
    theta = world.theta(users)
    scat = _sample_categories(theta, tables.log_q, su, sday, rng)

    # 2. views (grouped by session, in order) and the funnel on each view
    nprop = rng.poisson(depth * world.view_rate)
    vs, vi, vx = _propose_views(world, tables, users, su, sday, scat, theta, nprop, rng)
    nv = len(vs)
    vuser = users[su[vs]]
    cart = rng.random(nv) < sigmoid(world.cart_logit(vx))
    with np.errstate(over="ignore"):
        buy = cart & (rng.random(nv) < sigmoid(world.buy_logit(vx, vuser)))
    gaps = rng.exponential(cfg.view_gap_seconds, nv)
    csum = np.cumsum(gaps)
    first = _first_of_runs(vs)
    start_idx = np.maximum.accumulate(np.where(first, np.arange(nv), 0))
    view_ts = sstart[vs] + ((csum - csum[start_idx]) * US_PER_S).astype(np.int64)
    cart_ts = view_ts + (np.minimum(rng.exponential(20.0, nv), 90.0) * US_PER_S).astype(np.int64)
    last = np.ones(nv, dtype=bool)
    last[:-1] = vs[1:] != vs[:-1]
    checkout = np.zeros(ns, dtype=np.int64)
    checkout[vs[last]] = view_ts[last] + ((100.0 + rng.exponential(60.0, int(last.sum()))) * US_PER_S).astype(np.int64)

    key = vs * n_items + vi  # one cart / purchase event per (session, item)
    ci = np.flatnonzero(cart)
    ci = ci[np.unique(key[ci], return_index=True)[1]]
    cart_key, cart_qty = key[ci], _quantity(world, vi[ci], rng)
    bi = np.flatnonzero(buy)
    bi = bi[np.unique(key[bi], return_index=True)[1]]
    b_sess, b_item, b_x = vs[bi], vi[bi], vx[bi]
    b_qty = cart_qty[np.searchsorted(cart_key, key[bi])]
    b_ts = checkout[b_sess] + _rank_in_runs(b_sess) * US_PER_S
    has_buy = np.zeros(ns, dtype=bool)
    has_buy[b_sess] = True
    anon = (rng.random(ns) < cfg.anonymous_share) & ~has_buy

    # 3. repeat purchases of consumables, generation by generation
    cons = world.item_consumable[b_item]
    cur_u, cur_i, cur_t, cur_q = su[b_sess[cons]], b_item[cons], b_ts[cons] / US_PER_DAY, b_qty[cons]
    ch_u, ch_i, ch_t, ch_next, ch_real = [], [], [], [], []
    r_u, r_i, r_ts, r_q = [], [], [], []
    while len(cur_u):
        gu = users[cur_u]
        sched = rng.random(len(cur_u)) < world.user_repeat[gu]
        gap = rng.gamma(cfg.replenish_shape, world.item_cycle[cur_i] / cfg.replenish_shape)
        nday = np.where(sched, np.floor(cur_t + gap), -1).astype(np.int64)
        real = sched & (nday <= last_day) & (nday < world.user_churn_day[gu]) & world.on_sale(cur_i, nday)
        ch_u.append(gu), ch_i.append(cur_i), ch_t.append(cur_t), ch_next.append(nday), ch_real.append(real)
        ts = nday[real] * US_PER_DAY + _hour_us(rng, int(real.sum()))
        r_u.append(cur_u[real]), r_i.append(cur_i[real]), r_ts.append(ts), r_q.append(cur_q[real])
        cur_u, cur_i, cur_t, cur_q = cur_u[real], cur_i[real], ts / US_PER_DAY, cur_q[real]
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.empty(0, dt)  # noqa: E731
    r_u, r_i, r_ts, r_q = cat(r_u, np.int64), cat(r_i, np.int64), cat(r_ts, np.int64), cat(r_q, np.float64)
    nr = len(r_u)
    r_x = world.residual(users[r_u], r_i) + theta[r_u, world.item_cat[r_i]]
    chains = dict(user=cat(ch_u, np.int64), item=cat(ch_i, np.int64), t0=cat(ch_t, np.float64),
                  next_day=cat(ch_next, np.int64), realized=cat(ch_real, bool))

    # 4. sessions numbered by start time: organic sessions with a view, then repeat-purchase ones
    rec = np.flatnonzero(np.bincount(vs, minlength=ns) > 0)
    s_start = np.concatenate([sstart[rec], r_ts])
    s_order = np.lexsort((np.arange(len(s_start)), s_start))
    s_num = np.empty(len(s_start), dtype=np.int64)
    s_num[s_order] = np.arange(len(s_start))
    org_num = np.full(ns, -1, dtype=np.int64)
    org_num[rec] = s_num[: len(rec)]
    rep_num = s_num[len(rec):]

    # 5. events
    r_cart = r_ts + (rng.uniform(10, 60, nr) * US_PER_S).astype(np.int64)
    r_buy = r_cart + (rng.uniform(60, 180, nr) * US_PER_S).astype(np.int64)
    ev_ts = np.concatenate([view_ts, cart_ts[ci], b_ts, r_ts, r_cart, r_buy])
    ev_sess = np.concatenate([org_num[vs], org_num[vs[ci]], org_num[b_sess], np.tile(rep_num, 3)])
    ev_user = np.concatenate([vuser, vuser[ci], users[su[b_sess]], np.tile(users[r_u], 3)])
    ev_anon = np.concatenate([anon[vs], anon[vs[ci]], np.zeros(len(bi) + 3 * nr, dtype=bool)])
    ev_type = np.concatenate([np.full(nv, VIEW), np.full(len(ci), CART), np.full(len(bi), PURCHASE),
                              np.repeat([VIEW, CART, PURCHASE], nr)]).astype(np.int8)
    ev_item = np.concatenate([vi, vi[ci], b_item, np.tile(r_i, 3)])
    ev_qty = np.concatenate([np.full(nv, np.nan), cart_qty, b_qty, np.full(nr, np.nan), r_q, r_q])
    o = np.lexsort((np.arange(len(ev_ts)), ev_sess, ev_ts))
    o = o[ev_ts[o] <= end_us]  # the data stops at the end: a session running past midnight is cut
    events = dict(ts=ev_ts[o], user=ev_user[o], anon=ev_anon[o], session=ev_sess[o], etype=ev_type[o],
                  item=ev_item[o], quantity=ev_qty[o])

    # 6. orders: one per purchasing session, one per repeat purchase, one per return
    line_user = np.concatenate([users[su[b_sess]], users[r_u]])
    line_item = np.concatenate([b_item, r_i])
    line_ts = np.concatenate([b_ts, r_buy])
    in_data = line_ts <= end_us
    line_user, line_item, line_ts = line_user[in_data], line_item[in_data], line_ts[in_data]
    line_qty = np.concatenate([b_qty, r_q])[in_data]
    line_x = np.concatenate([b_x, r_x]).astype(np.float64)[in_data]
    line_key = np.concatenate([b_sess, ns + np.arange(nr)])[in_data]
    c = world.config
    returned = rng.random(len(line_x)) < sigmoid(c.return_intercept - c.return_slope * line_x)
    ret_ts = line_ts[returned] + (rng.uniform(1, 21, int(returned.sum())) * US_PER_DAY).astype(np.int64)
    ok = ret_ts <= end_us
    ret = np.flatnonzero(returned)[ok]
    o_user = np.concatenate([line_user, line_user[ret]])
    o_item = np.concatenate([line_item, line_item[ret]])
    o_ts = np.concatenate([line_ts, ret_ts[ok]])
    o_qty = np.concatenate([line_qty, -line_qty[ret]])
    o_key = np.concatenate([line_key, ns + nr + np.arange(len(ret))])
    o_first = np.full(ns + nr + len(ret), np.iinfo(np.int64).max)
    np.minimum.at(o_first, o_key, o_ts)
    o = np.lexsort((o_ts, o_key, o_first[o_key]))
    o_num = np.cumsum(_first_of_runs(o_key[o])) - 1
    orders = dict(order=o_num, user=o_user[o], item=o_item[o], ts=o_ts[o], quantity=o_qty[o])
    n_orders = int(o_num[-1] + 1) if len(o_num) else 0
    return ChunkOut(events=events, orders=orders, n_sessions=len(s_start), n_orders=n_orders, chains=chains)
