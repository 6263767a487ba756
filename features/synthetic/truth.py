"""The synthetic shop's truth: per-user purchase / churn probabilities and the oracle's
preference, computed from the generative model (features/synthetic/model.py).

p_buy and p_churn at date d are conditioned on the model's state at the end of day d: the
shopper's parameters, whether they are still active (their drawn lifetime), their tenure,
and the consumable purchases whose repeat purchase is still pending. They are exact for the
model (a day-level Weibull survival, Poisson sessions, a Gamma-Poisson session depth) except:
the per-session purchase probability is computed every ``truth_step_days`` and interpolated,
and above ``truth_max_items`` items its sums over items use a PPS sample (Horvitz-Thompson).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import gammainc

from features.synthetic.model import World, log_sigmoid

USER_BLOCK = 16  # users per block of the oracle's preference: (block, items) float64 arrays of ~8 MB on a 64k-item catalogue


@dataclass
class TruthItems:
    """Items (sorted by category, possibly a weighted sample) and their attractiveness on the anchor days."""

    anchors: np.ndarray  # (L,) days where session purchase probabilities are computed
    items: np.ndarray  # (m,) item rows, by category
    bounds: np.ndarray  # (n_cat + 1,) slices of ``items`` per category
    weighted_attr: np.ndarray  # (m, L) float32 a_j(t) / inclusion probability
    cat_attr: np.ndarray  # (n_cat, L) float64 Q_c(t) over all items


def window_days(world: World) -> np.ndarray:
    cfg = world.config
    last = cfg.days - 1
    horizon = max(cfg.buy_window_days, cfg.churn_horizon_days)
    dates = [last - b for b in cfg.truth_days_before_end]
    return np.unique(np.concatenate([np.arange(d + 1, d + horizon + 1) for d in dates]))


def truth_items(world: World, rng: np.random.Generator) -> TruthItems:
    cfg = world.config
    need = window_days(world)
    anchors = np.unique(np.concatenate([np.arange(need[0], need[-1] + 1, cfg.truth_step_days), need[-1:]]))
    n_cat, n = world.n_categories, world.n_items
    cat_attr = np.zeros((n_cat, len(anchors)))
    mean_attr = np.zeros(n)
    for b in range(0, n, 20_000):
        it = np.arange(b, min(n, b + 20_000))
        a = np.exp(world.item_log_attr(anchors, it).astype(np.float64))  # (L, block)
        for j in range(len(anchors)):
            cat_attr[:, j] += np.bincount(world.item_cat[it], a[j], minlength=n_cat)
        mean_attr[it] = a.mean(axis=0)
    if n <= cfg.truth_max_items:
        chosen, incl = np.arange(n), np.ones(n)
    else:  # Poisson PPS sample of ~truth_max_items items, proportional to mean attractiveness
        size = cfg.truth_max_items
        p = np.zeros(n)
        for _ in range(10):
            full = p >= 1.0
            rest = mean_attr * ~full
            p = np.where(full, 1.0, rest * (size - full.sum()) / max(rest.sum(), 1e-300))
            p = np.minimum(p, 1.0)
        chosen = np.flatnonzero(rng.random(n) < p)
        incl = p[chosen]
    order = np.lexsort((chosen, world.item_cat[chosen]))
    chosen, incl = chosen[order], incl[order]
    counts = np.bincount(world.item_cat[chosen], minlength=n_cat)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    attr = np.exp(world.item_log_attr(anchors, chosen).astype(np.float64)).T / incl[:, None]
    return TruthItems(anchors=anchors, items=chosen, bounds=bounds, weighted_attr=attr.astype(np.float32),
                      cat_attr=cat_attr)


def _sigmoid_(z: np.ndarray) -> np.ndarray:
    """In place: z <- 1 / (1 + exp(-z)) (float32, no temporaries)."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    return np.reciprocal(z, out=z)


def _neg_power_1p_(a: np.ndarray, k: float) -> np.ndarray:
    """In place: a <- (1 + a)^-k (a >= 0); squarings for k in {1, 2, 4}, log/exp otherwise."""
    a += 1.0
    np.reciprocal(a, out=a)
    if k in (1, 2, 4):
        for _ in range({1: 0, 2: 1, 4: 2}[k]):
            np.multiply(a, a, out=a)
        return a
    np.log(a, out=a)
    a *= np.float32(k)
    return np.exp(a, out=a)


def session_buy_prob(world: World, ti: TruthItems, users: np.ndarray, block: int = 0) -> np.ndarray:
    """(n_users, L) P(a session on anchor day t ends with at least one purchase).

    Per category c: P(no purchase | c) = (1 + R_c / k)^-k, with R_c = nu sum_{j in c} q(j|c,t)
    exp(min(r, cap) - cap) P(cart) P(buy | cart) the expected purchase-views and k the depth shape.
    """
    cfg = world.config
    k, cap = cfg.session_dispersion, np.float32(cfg.acceptance_cap)
    it = ti.items
    block = block or int(np.clip(2_000_000 // max(len(it), 1), 16, 4096))  # ~8 MB float32 blocks
    buy_ok = world.user_buyer[users]
    q = ti.cat_attr  # (n_cat, L)
    q_pos = q > 0
    q_safe = np.where(q_pos, q, 1.0)
    nonempty = np.flatnonzero(np.diff(ti.bounds) > 0)
    scale = (world.view_rate / k / q_safe).astype(np.float32)  # (n_cat, L)
    q32 = q.astype(np.float32)
    empty = np.flatnonzero(np.diff(ti.bounds) == 0)
    buf = np.zeros((world.n_categories, min(block, len(users)), len(ti.anchors)), dtype=np.float32)
    out = np.empty((len(users), len(ti.anchors)))
    for b in range(0, len(users), block):
        u = users[b:b + block]
        kern = world.residual_matrix(u, it)  # r
        np.minimum(kern, cap, out=kern)
        kern -= cap
        np.exp(kern, out=kern)
        x = world.residual_matrix(u, it, utility=True)
        z = x * np.float32(cfg.cart_slope)
        z += np.float32(cfg.cart_intercept)
        kern *= _sigmoid_(z)
        np.multiply(x, np.float32(cfg.purchase_slope), out=z)
        z += (cfg.purchase_intercept + world.user_buy[u]).astype(np.float32)[:, None]
        kern *= _sigmoid_(z)
        kern[~buy_ok[b:b + block]] = 0.0
        th = world.theta(u).astype(np.float64)
        th -= th.max(axis=1, keepdims=True)
        eth = np.exp(th)  # (n, n_cat)
        rate = buf[:, :len(u)]
        rate[empty] = 0.0
        for c in nonempty:
            lo, hi = ti.bounds[c], ti.bounds[c + 1]
            np.matmul(kern[:, lo:hi], ti.weighted_attr[lo:hi], out=rate[c])
        rate *= scale[:, None, :]  # -> R_c / k
        _neg_power_1p_(rate, k)  # P(no purchase | category c) = (1 + R_c / k)^-k
        rate *= eth.T.astype(np.float32)[:, :, None]
        rate *= q32[:, None, :]
        num = rate.sum(axis=0, dtype=np.float64)
        den = eth @ q
        out[b:b + block] = 1.0 - num / np.maximum(den, 1e-300)
    return out


def user_truth(world: World, ti: TruthItems, users: np.ndarray, chains: dict[str, np.ndarray],
               block: int = 4096, workers: int | None = None) -> dict[str, np.ndarray]:
    """Long-form rows (user row, day, p_buy, p_churn, alive) for every truth date, date-major.

    Blocks of users run on a few threads (numpy releases the GIL); the result does not depend
    on the number of threads.
    """
    users = np.asarray(users)
    if (np.diff(users) <= 0).any():
        raise ValueError("users: expected increasing user rows")
    order = np.argsort(chains["user"], kind="stable")
    chain_user = chains["user"][order]
    workers = workers or min(4, os.cpu_count() or 1)

    def run(lo: int) -> list[dict]:
        u = users[lo:lo + block]
        j = order[np.searchsorted(chain_user, u[0]):np.searchsorted(chain_user, u[-1], side="right")]
        return _block_truth(world, ti, u, {k: v[j] for k, v in chains.items()})

    starts = range(0, len(users), block)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, starts))
    n_dates = len(world.config.truth_days_before_end)
    return {k: np.concatenate([p[i][k] for i in range(n_dates) for p in parts]) if parts else np.empty(0)
            for k in ("user", "day", "p_buy", "p_churn", "alive")}


def _block_truth(world: World, ti: TruthItems, users: np.ndarray, chains: dict[str, np.ndarray]) -> list[dict]:
    cfg = world.config
    last = cfg.days - 1
    hb, hc = cfg.buy_window_days, cfg.churn_horizon_days
    H = max(hb, hc)
    dates = [last - b for b in sorted(cfg.truth_days_before_end, reverse=True)]
    prob = session_buy_prob(world, ti, users)
    local = np.searchsorted(users, chains["user"])
    join, age0 = world.user_join[users], world.user_age0[users][:, None]
    out = []
    for d in dates:
        days = d + 1 + np.arange(H)
        # organic purchase sessions per day: lambda w(t) P(session buys), from the join day on
        if len(ti.anchors) > 1:
            i1 = np.clip(np.searchsorted(ti.anchors, days), 1, len(ti.anchors) - 1)
            i0 = i1 - 1
            f = np.clip((days - ti.anchors[i0]) / (ti.anchors[i1] - ti.anchors[i0]), 0.0, 1.0)
        else:
            i0 = i1 = np.zeros(H, dtype=np.int64)
            f = np.zeros(H)
        o = prob[:, i0] * (1.0 - f)
        o += prob[:, i1] * f
        o *= world.user_rate[users][:, None] * world.shop_rate(days)[None, :]
        o *= days[None, :] >= join[:, None]
        log_term = np.zeros((len(users), H + 1))
        np.cumsum(o, axis=1, out=log_term[:, 1:])
        np.negative(log_term, out=log_term)  # -expected purchase sessions by day d + m
        # pending repeat purchases (consumables whose next purchase has not happened by d)
        log_term += _pending_repeats(world, chains, local, d, H, len(users))
        term = np.exp(log_term)
        # survival: active on day d + m given the state at d
        ages = np.maximum(d + np.arange(H + 1)[None, :] - join[:, None], 0) + age0
        log_s = world.log_survival(users, ages)
        surv = np.exp(log_s - log_s[:, :1])
        alive = (join <= d) & (world.user_churn_day[users] > d)
        dead = (join <= d) & ~alive

        def p_none(h):
            return ((surv[:, :h] - surv[:, 1:h + 1]) * term[:, :h]).sum(axis=1) + surv[:, h] * term[:, h]

        p_buy, p_churn = 1.0 - p_none(hb), p_none(hc)
        p_buy[dead], p_churn[dead] = 0.0, 1.0
        out.append(dict(user=users, day=np.full(len(users), d), p_buy=np.clip(p_buy, 0.0, 1.0),
                        p_churn=np.clip(p_churn, 0.0, 1.0), alive=alive))
    return out


def _pending_repeats(world, chains, local, d, H, n_users, block=200_000):
    """(n_users, H + 1) log P(no pending repeat purchase lands on days d+1..d+m)."""
    cfg = world.config
    out = np.zeros((n_users, H + 1))
    pend = (chains["t0"] < d + 1) & ~(chains["realized"] & (chains["next_day"] <= d))
    pend &= world.user_churn_day[chains["user"]] > d
    idx = np.flatnonzero(pend)
    shape = cfg.replenish_shape
    for b in range(0, len(idx), block):
        j = idx[b:b + block]
        u, it, t0 = chains["user"][j], chains["item"][j], chains["t0"][j]
        rho = world.user_repeat[u].astype(np.float64)
        scale = world.item_cycle[it].astype(np.float64) / shape
        retire = world.item_retire[it]

        def cdf(day_bound):  # P(next purchase lands before day_bound), as long as the item is on sale
            x = np.minimum(day_bound, retire[:, None]) - t0[:, None]
            return gammainc(shape, np.maximum(x, 0.0) / scale[:, None])

        f0 = cdf(np.full(1, d + 1))[:, :1]
        post = rho[:, None] / np.maximum(1.0 - rho[:, None] * f0, 1e-12)
        g = post * (cdf(d + 1 + np.arange(H + 1)[None, :]) - f0)
        lg = np.log1p(-np.clip(g, 0.0, 1.0 - 1e-12))
        rows = local[j]
        order = np.argsort(rows, kind="stable")
        rows, lg = rows[order], lg[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[starts]] += np.add.reduceat(lg, starts, axis=0)
    return out


class Truth:
    """The truth of a generated shop: ``load_truth(out_dir / "truth")``.

    ``users``: long form (user_id, date, p_buy_30, p_churn_90, alive) per truth date.
    ``preference(user_ids, item_ids, at)``: what an oracle recommender ranks by.
    """

    def __init__(self, world: World, users: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray):
        self.world = world
        self.config = world.config
        self.users = users
        self.user_ids = np.asarray(user_ids, dtype=str)
        self.item_ids = np.asarray(item_ids, dtype=str)
        self._user_index = pd.Index(self.user_ids)
        self._item_index = pd.Index(self.item_ids)

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(str(self.world.start))

    def user_rows(self, user_ids) -> np.ndarray:
        """The world's row of each user id (-1: not a shopper of this shop)."""
        return self._user_index.get_indexer(pd.Index(np.asarray(user_ids, dtype=str)))

    def visit_probability(self, user_ids, days: np.ndarray) -> np.ndarray:
        """(n_users, len(days)) P(at least one session) of each user on each day index: 1 - exp(-rate_u w(t))
        while the user is active (joined, not churned), else 0; unknown ids 0."""
        w, rows = self.world, self.user_rows(user_ids)
        days = np.asarray(days, dtype=np.int64)
        known = np.maximum(rows, 0)
        rate = w.user_rate[known][:, None] * w.shop_rate(days)[None, :]
        active = (w.user_join[known][:, None] <= days[None, :]) & (days[None, :] < w.user_churn_day[known][:, None])
        return np.where(active & (rows >= 0)[:, None], -np.expm1(-rate), 0.0)

    def preference(self, user_ids, item_ids, at, horizon_days: float = 0) -> np.ndarray:
        """(n_users, n_items) float64: log of the true expected number of purchases (order lines)
        of each item by each user per day, on the day of ``at``, given the user is active then
        (so churned users still rank). This is what an oracle recommender ranks by.

        It is exact for the model: sessions per day x P(the session's category) x P(the item is
        bought at least once in that session), which holds the item's popularity, season and
        availability on that day (not on sale: -inf), the softmax of utility (taste, price) and
        the view -> cart -> purchase funnel. It leaves out repeat purchases of consumables
        (they depend on the purchase history). Browse-only users and unknown ids get -inf.
        ``horizon_days`` > 0: the expected purchases summed over that many days from ``at``
        (a fraction of a day counts as a whole day: a 30.0-day test period from a config file is 30).
        """
        w = self.world
        k = w.config.session_dispersion
        ur = self.user_rows(user_ids)
        ir = self._item_index.get_indexer(pd.Index(np.asarray(item_ids, dtype=str)))
        out = np.full((len(ur), len(ir)), -np.inf)
        ku, ki = np.flatnonzero(ur >= 0), np.flatnonzero(ir >= 0)
        if not len(ku) or not len(ki):
            return out
        items = ir[ki]
        days = w.day_of(at) + np.arange(max(math.ceil(horizon_days), 1))
        la = w.item_log_attr(days).astype(np.float64)  # (days, all items): Q_c(t) needs them all
        with np.errstate(divide="ignore"):
            q = np.stack([np.bincount(w.item_cat, np.exp(row), minlength=w.n_categories) for row in la])  # Q_c(t)
            log_q = np.log(q)
        cat = w.item_cat[items]
        # per day and item: q(j|c, t) / k, the item's share of its category that day (0: not on sale)
        with np.errstate(invalid="ignore"):
            share = np.where(q[:, cat] > 0, np.exp(la[:, items] - log_q[:, cat]), 0.0) / k
        for lo in range(0, len(ku), USER_BLOCK):  # a block of users at a time: (block, items) arrays stay small
            rows = ku[lo:lo + USER_BLOCK]
            out[rows[:, None], ki[None, :]] = self._preference_block(ur[rows], items, cat, q, log_q, share, days, k)
        return out

    def _preference_block(self, users, items, cat, q, log_q, share, days, k) -> np.ndarray:
        """log of the expected purchases summed over ``days`` (see ``preference``), summed in linear space: per
        day, rate(user, item) = w(t) exp(theta_uc) / sum_c' Q_c'(t) exp(theta_uc') x Q_c(t) x P(bought | session of c),
        with P(bought) = 1 - (1 + E q(j|c, t) / k)^-k and E = exp(the day-free part of the log purchase-views)."""
        w = self.world
        th_all = w.theta(users).astype(np.float64)
        x = w.residual_matrix(users, items, utility=True).astype(np.float64)
        with np.errstate(divide="ignore", over="ignore"):
            e = np.exp(w.accept_log(w.residual_matrix(users, items)).astype(np.float64) + np.log(w.view_rate)
                       + log_sigmoid(w.cart_logit(x)) + log_sigmoid(w.buy_logit(x, users)))
            base = np.log(w.user_rate[users])[:, None] + th_all[:, cat]  # log of the day-free part of the rate
            lse = np.stack([_logsumexp(th_all + lq[None, :]) for lq in log_q], axis=1)  # (users, days)
        with np.errstate(over="ignore"):  # no category on sale that day (lse -inf): nothing is bought
            per_user = np.where(np.isfinite(lse), np.exp(-lse), 0.0) * w.shop_rate(days)[None, :]
        acc = np.zeros_like(e)
        p = np.empty_like(e)
        for d in range(len(days)):
            np.multiply(e, share[d][None, :], out=p)
            np.log1p(p, out=p)
            p *= -k
            np.expm1(p, out=p)  # -P(bought at least once | a session of its category)
            p *= -q[d, cat][None, :]
            p *= per_user[:, d][:, None]
            acc += p
        with np.errstate(divide="ignore"):
            return np.log(acc) + base


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return m + np.log(np.exp(a - m[:, None]).sum(axis=1))


def load_truth(truth_dir) -> Truth:
    """Read ``truth.npz`` (no pickle) and ``users.parquet`` from a generated shop's truth/ folder."""
    truth_dir = Path(truth_dir)
    with np.load(truth_dir / "truth.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    world = World.from_arrays(arrays)
    users = pd.read_parquet(truth_dir / "users.parquet")
    return Truth(world, users, arrays["user_ids"], arrays["item_ids"])
