"""The generative model of the synthetic shop: its parameters (``World``) and the functions
of time that both the simulator and the truth use, so the two can never disagree.

Time is counted in days: day 0 is the first day, day ``days - 1`` is ``end``.

- An item j has a category c, a price p_j, factors v_j = C_c + d_j, a base popularity b_j
  and is on sale on days [launch_j, retire_j). Its log attractiveness on day t is
  ``b_j + novelty * exp(-age/novelty_days) - fade * age/lifetime_j + season_j(t)``, plus
  ``promo_boost`` in the weeks the item is on promotion (a share ``promo_share`` of item-weeks).
- A shopper i has taste u_i, price sensitivity beta_i, a session rate lambda_i (per day,
  lognormal: heavy-tailed), a buy propensity alpha_i, a browse-only flag (never buys), a
  repeat probability rho_i, a join day (or a tenure on day 0) and a Weibull lifetime from
  signup (churn: no session after it). The Weibull scale grows with activity and buy
  propensity, and shape < 1 makes the hazard fall with tenure.
- Utility x_ij = u_i . v_j - beta_i (log p_j - log price_median).
- Sessions: Poisson(lambda_i * w(t)) per active day, w = weekly x yearly cycle. A session
  picks one category with P(c) ~ Q_c(t) exp(theta_ic) (Q_c = sum of the category's
  attractiveness, theta_ic = u_i . C_c - beta_i (m_c - m)), then views item j of c
  Poisson(G nu a_j(t)/Q_c(t) exp(min(r_ij, cap) - cap)) times, G ~ Gamma(k, 1/k) the
  session depth and r_ij = x_ij - theta_ic. Every view is carted with
  sigmoid(c0 + c1 x_ij); every cart is bought with sigmoid(p0 + alpha_i + p1 x_ij).
  So, per shopper, views follow the softmax of popularity(t) + utility.
- An order line's quantity is 1 + Poisson units (more for consumables), times the item's pack
  size in a wholesale shop (``quantity_packs``).
- A purchase of a consumable is bought again with probability rho_i after
  Gamma(shape, cycle_j/shape) days (if the shopper is still active and the item on sale).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from features.synthetic.config import ShopConfig

# Sessions per hour of the day (relative), evenings busiest.
HOUR_WEIGHTS = np.array([1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.8, 3.0, 3.2,
                         3.4, 3.2, 3.0, 3.0, 3.1, 3.3, 3.8, 4.4, 4.8, 4.4, 3.2, 2.0])
HOUR_CDF = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()
CHRISTMAS_PEAK_DOY = 345.0  # ~ Dec 11 (0-based day of year)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def circular_days(doy, peak):
    """Signed distance in days on a 365-day circle."""
    return (doy - peak + 182.5) % 365.0 - 182.5


@dataclass
class World:
    """All latent parameters. Item arrays are in item-id order, user arrays in user-id order."""

    config: ShopConfig
    view_rate: float  # nu: proposal rate per session (calibrated to views_per_session)
    cat_factors: np.ndarray  # (n_cat, k) float32: category centres C_c
    cat_log_price: np.ndarray  # (n_cat,) float32: mean log price m_c of the category's items
    cat_consumable: np.ndarray  # (n_cat,) bool
    item_cat: np.ndarray  # (n_items,) int32
    item_price: np.ndarray  # (n_items,) float64
    item_log_price: np.ndarray  # (n_items,) float32
    item_delta: np.ndarray  # (n_items, k) float32: v_j - C_c
    item_pop: np.ndarray  # (n_items,) float32: base log popularity b_j
    item_launch: np.ndarray  # (n_items,) int64: first day on sale (may be < 0)
    item_retire: np.ndarray  # (n_items,) int64: first day off sale (retired or sold out)
    item_lifetime: np.ndarray  # (n_items,) float32: planned days on sale (sets the fade)
    item_season_amp: np.ndarray  # (n_items,) float32: 0 for non-seasonal items
    item_season_peak: np.ndarray  # (n_items,) float32: day of year of the peak
    item_consumable: np.ndarray  # (n_items,) bool
    item_cycle: np.ndarray  # (n_items,) float32: mean replenishment days
    item_out_of_stock: np.ndarray  # (n_items,) bool: sold out over the last days (retire moved to the stockout)
    user_factors: np.ndarray  # (n_users, k) float32: u_i
    user_rate: np.ndarray  # (n_users,) float64: sessions per day while active
    user_price_sens: np.ndarray  # (n_users,) float32: beta_i
    user_buy: np.ndarray  # (n_users,) float32: alpha_i
    user_buyer: np.ndarray  # (n_users,) bool: False = browse-only
    user_repeat: np.ndarray  # (n_users,) float32: rho_i
    user_join: np.ndarray  # (n_users,) int64: first active day
    user_age0: np.ndarray  # (n_users,) float64: tenure (days) on the join day
    user_churn_scale: np.ndarray  # (n_users,) float64: Weibull scale
    user_lifetime: np.ndarray  # (n_users,) float64: drawn lifetime T (tenure at churn)
    user_churn_day: np.ndarray  # (n_users,) int64: first day no longer active
    item_pack: np.ndarray | None = None  # (n_items,) float64: units per pack (quantity_packs; 1 when unset)

    # ---- derived -------------------------------------------------------------------
    def __post_init__(self):
        if self.item_pack is None:  # shops generated before quantity_packs existed
            self.item_pack = np.ones(len(self.item_cat))
        self.cat_order = np.argsort(self.item_cat, kind="stable")  # items sorted by category
        counts = np.bincount(self.item_cat, minlength=self.n_categories)
        self.cat_bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.log_price_ref = np.float32(np.log(self.config.price_median))

    @property
    def n_users(self) -> int:
        return len(self.user_rate)

    @property
    def n_items(self) -> int:
        return len(self.item_cat)

    @property
    def n_categories(self) -> int:
        return len(self.cat_factors)

    @property
    def start(self) -> np.datetime64:
        return np.datetime64(self.config.end, "D") - (self.config.days - 1)

    @property
    def item_factors(self) -> np.ndarray:
        return self.cat_factors[self.item_cat] + self.item_delta  # v_j

    # ---- time ----------------------------------------------------------------------
    def day_of(self, at) -> int:
        """Day index of the calendar day of a date, timestamp or ISO string (aware: UTC)."""
        import pandas as pd

        ts = pd.Timestamp(at)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return int((np.datetime64(ts.date(), "D") - self.start).astype(np.int64))

    def doy(self, days: np.ndarray) -> np.ndarray:
        d = self.start + np.asarray(days, dtype=np.int64).astype("timedelta64[D]")
        return (d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64).astype(np.float64)

    def dow(self, days: np.ndarray) -> np.ndarray:
        """Monday = 0."""
        d = self.start + np.asarray(days, dtype=np.int64).astype("timedelta64[D]")
        return (d.astype(np.int64) + 3) % 7

    def shop_rate(self, days: np.ndarray) -> np.ndarray:
        """w(t): weekly x yearly multiplier of every shopper's session rate (mean ~1)."""
        cfg = self.config
        weekend = self.dow(days) >= 5
        weekly = np.where(weekend, 1.0 + cfg.weekly_strength, 1.0) / (1.0 + 2.0 * cfg.weekly_strength / 7.0)
        return weekly * self._season(self.doy(days)) / self._season(np.arange(365.0)).mean()

    def _season(self, doy: np.ndarray) -> np.ndarray:
        def g(peak, width):
            return np.exp(-0.5 * (circular_days(doy, peak) / width) ** 2)

        s, width = self.config.seasonal_strength, self.config.season_width_days
        return np.exp(s * (1.0 * g(CHRISTMAS_PEAK_DOY, width) + 0.6 * g(331.0, 3.0) - 0.5 * g(200.0, 35.0)))

    def item_log_attr(self, days: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """(len(days), n) log attractiveness of the items on those days; -inf when not on sale."""
        cfg = self.config
        it = slice(None) if items is None else np.asarray(items, dtype=np.int64)
        days = np.asarray(days, dtype=np.int64)[:, None]
        launch, retire = self.item_launch[it][None, :], self.item_retire[it][None, :]
        age = (days - launch).astype(np.float32)
        doy = self.doy(days[:, 0]).astype(np.float32)[:, None]
        season = self.item_season_amp[it][None, :] * (
            np.exp(-0.5 * (circular_days(doy, self.item_season_peak[it][None, :]) / cfg.seasonal_item_width_days) ** 2) - 0.5
        )
        val = (self.item_pop[it][None, :] + cfg.novelty_boost * np.exp(-np.maximum(age, 0) / cfg.novelty_days)
               - cfg.fade * age / self.item_lifetime[it][None, :] + season).astype(np.float32)
        if cfg.promo_share > 0:
            ids = np.arange(self.n_items) if items is None else np.asarray(items, dtype=np.int64)
            val += np.float32(cfg.promo_boost) * self.promoted(days[:, 0], ids)
        return np.where((days >= launch) & (days < retire), val, np.float32(-np.inf))

    def promoted(self, days: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(days), len(items)) bool: the item is on promotion in that day's week (weeks start on
        Monday). A hash of (seed, week, item) with P = promo_share, so any day, past the end too,
        has an answer without a stored schedule."""
        week = (np.asarray(days, dtype=np.int64) + int(self.dow(np.zeros(1, dtype=np.int64))[0])) // 7
        x = (np.uint64((self.config.seed * 0x9E3779B97F4A7C15) % 2**64)
             ^ week.astype(np.uint64)[:, None] * np.uint64(0xBF58476D1CE4E5B9)
             ^ np.asarray(items, dtype=np.int64).astype(np.uint64)[None, :] * np.uint64(0x94D049BB133111EB))
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64's finaliser
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
        x ^= x >> np.uint64(31)
        return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53 < self.config.promo_share

    def on_sale(self, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        return (self.item_launch[items] <= days) & (days < self.item_retire[items])

    # ---- utility and funnel ---------------------------------------------------------
    def theta(self, users: np.ndarray) -> np.ndarray:
        """(n, n_cat) float32 category affinity u_i . C_c - beta_i (m_c - m)."""
        u = self.user_factors[users]
        return (u @ self.cat_factors.T - self.user_price_sens[users][:, None]
                * (self.cat_log_price - self.log_price_ref)[None, :]).astype(np.float32)

    def residual(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Element-wise r = u_i . d_j - beta_i (log p_j - m_c): utility within the category."""
        dot = np.einsum("ij,ij->i", self.user_factors[users], self.item_delta[items])
        return (dot - self.user_price_sens[users] * (self.item_log_price[items]
                                                      - self.cat_log_price[self.item_cat[items]])).astype(np.float32)

    def residual_matrix(self, users: np.ndarray, items: np.ndarray, utility: bool = False) -> np.ndarray:
        """(n_users, n_items) float32 r for every pair (``utility``: x = r + theta instead), one matmul."""
        lp = self.item_log_price[items] - (self.log_price_ref if utility else self.cat_log_price[self.item_cat[items]])
        v = self.item_delta[items] + (self.cat_factors[self.item_cat[items]] if utility else 0.0)
        left = np.concatenate([self.user_factors[users], -self.user_price_sens[users][:, None]], axis=1)
        right = np.concatenate([v, lp[:, None]], axis=1).astype(np.float32)
        return left @ right.T

    def cart_logit(self, x):
        return self.config.cart_intercept + self.config.cart_slope * x

    def buy_logit(self, x, users):
        """Cart -> purchase logit; -inf for browse-only shoppers."""
        cfg = self.config
        off = np.where(self.user_buyer[users], self.user_buy[users], -np.inf).astype(np.float32)
        if np.ndim(x) == 2:
            off = off[:, None]
        return cfg.purchase_intercept + off + cfg.purchase_slope * x

    def accept_log(self, r):
        cap = np.float32(self.config.acceptance_cap)
        return np.minimum(r, cap) - cap

    # ---- churn ---------------------------------------------------------------------
    def log_survival(self, users: np.ndarray, age: np.ndarray) -> np.ndarray:
        """log P(lifetime > age) (Weibull); ``age`` broadcasts against users[:, None]."""
        k = self.config.churn_shape
        with np.errstate(divide="ignore"):
            x = np.log(np.maximum(age, 0.0) / self.user_churn_scale[users][:, None])
        x *= k
        return -np.exp(x, out=x)

    # ---- persistence (npz of numeric and unicode arrays, no pickle) ------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("config", "view_rate")}
        out["view_rate"] = np.float64(self.view_rate)
        out["config_json"] = np.str_(self.config.model_dump_json())
        return {k: np.asarray(v) for k, v in out.items()}

    @classmethod
    def from_arrays(cls, arrays) -> "World":
        config = ShopConfig.model_validate_json(str(arrays["config_json"]))
        kw = {f.name: np.asarray(arrays[f.name]) for f in fields(cls)
              if f.name not in ("config", "view_rate") and f.name in arrays}
        return cls(config=config, view_rate=float(arrays["view_rate"]), **kw)


def build_world(cfg: ShopConfig) -> World:
    """Draw every latent parameter from the config's seed (stream 0)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    k, n_cat, n_items, n_users, days = cfg.n_factors, cfg.n_categories, cfg.n_items, cfg.n_users, cfg.days

    # categories
    cat_w = rng.lognormal(0.0, cfg.category_size_sigma, n_cat)
    cat_factors = rng.normal(0.0, cfg.category_factor_scale, (n_cat, k)).astype(np.float32)
    cat_mean_lp = np.log(cfg.price_median) + rng.normal(0.0, cfg.price_category_sigma, n_cat)
    cat_consumable = rng.random(n_cat) < cfg.consumable_category_share

    # items
    first = np.arange(min(n_cat, n_items))
    rest = rng.choice(n_cat, size=n_items - len(first), p=cat_w / cat_w.sum())
    item_cat = rng.permutation(np.concatenate([first, rest])).astype(np.int32)
    raw = np.exp(cat_mean_lp[item_cat] + rng.normal(0.0, cfg.price_item_sigma, n_items))
    price = np.where(raw >= 5, np.floor(raw) + 0.99, np.maximum(np.round(raw, 1) - 0.01, 0.19))
    delta = rng.normal(0.0, cfg.item_factor_scale, (n_items, k)).astype(np.float32)
    pop = rng.normal(0.0, cfg.popularity_sigma, n_items).astype(np.float32)
    lifetime = np.ceil(rng.lognormal(np.log(cfg.lifetime_median_days), cfg.lifetime_sigma, n_items))
    seasonal = rng.random(n_items) < cfg.seasonal_item_share
    christmas = rng.random(n_items) < cfg.christmas_item_share
    peak = np.where(christmas, rng.normal(CHRISTMAS_PEAK_DOY - 5, 7.0, n_items), rng.uniform(0, 365, n_items)) % 365
    lifetime = np.where(seasonal, lifetime * 3, lifetime)  # seasonal lines come back every year
    pre = rng.random(n_items) < cfg.prelaunched_share
    launch = np.where(pre, -np.floor(rng.random(n_items) * 0.9 * lifetime), rng.integers(0, days, n_items))
    consumable = rng.random(n_items) < np.where(cat_consumable[item_cat], cfg.consumable_share_in, cfg.consumable_share_out)
    cycle = rng.lognormal(np.log(cfg.replenish_days_median), cfg.replenish_days_sigma, n_items)
    oos = rng.random(n_items) < cfg.out_of_stock_share
    stockout = days - 1 - rng.integers(0, 21, n_items)  # sold out from this day to the end (and after)
    by_launch = np.argsort(launch, kind="stable")  # item ids in launch order, like SKU numbers
    item_cat, price, delta, pop, lifetime, seasonal, peak, launch, consumable, cycle, oos, stockout = (
        a[by_launch] for a in (item_cat, price, delta, pop, lifetime, seasonal, peak, launch, consumable, cycle, oos,
                               stockout))
    retire = launch + lifetime
    oos &= (retire > days - 1) & (launch < stockout)  # only items still listed at the end
    retire = np.where(oos, stockout, retire)
    log_price = np.log(price).astype(np.float32)
    counts = np.bincount(item_cat, minlength=n_cat)
    cat_log_price = np.where(counts > 0, np.bincount(item_cat, log_price, n_cat) / np.maximum(counts, 1),
                             cat_mean_lp).astype(np.float32)

    # users
    u = rng.normal(0.0, cfg.taste_scale / np.sqrt(k), (n_users, k)).astype(np.float32)
    log_rate0 = np.log(cfg.sessions_per_week_median / 7.0)
    log_rate = log_rate0 + rng.normal(0.0, cfg.sessions_per_week_sigma, n_users)
    rate = np.minimum(np.exp(log_rate), cfg.max_sessions_per_day)
    beta = rng.lognormal(np.log(max(cfg.price_sensitivity_median, 1e-9)), cfg.price_sensitivity_sigma, n_users)
    beta = (beta if cfg.price_sensitivity_median > 0 else np.zeros(n_users)).astype(np.float32)
    alpha = rng.normal(0.0, cfg.buy_propensity_sigma, n_users).astype(np.float32)
    buyer = rng.random(n_users) >= cfg.browse_only_share
    m, c = cfg.repeat_prob_mean, cfg.repeat_prob_concentration
    rho = rng.beta(m * c, (1 - m) * c, n_users).astype(np.float32)
    existing = rng.random(n_users) < cfg.existing_share
    join = np.where(existing, 0, rng.integers(0, days, n_users)).astype(np.int64)
    age0 = np.where(existing, rng.random(n_users) * cfg.existing_max_age_days, 0.0)
    scale = cfg.churn_scale_days * np.exp(cfg.churn_activity_effect * (log_rate - log_rate0)
                                          + cfg.churn_buy_effect * alpha / max(cfg.buy_propensity_sigma, 1e-9)
                                          + rng.normal(0.0, cfg.churn_noise_sigma, n_users))
    kw = cfg.churn_shape  # lifetime T | T > age0 by inverting the conditional survival
    life = scale * np.power(np.power(age0 / scale, kw) - np.log(1.0 - rng.random(n_users)), 1.0 / kw)
    churn_day = join + np.ceil(np.maximum(life - age0, 1e-9)).astype(np.int64)
    by_join = np.lexsort((-age0, join))  # user ids in signup order
    u, rate, beta, alpha, buyer, rho, join, age0, scale, life, churn_day = (
        a[by_join] for a in (u, rate, beta, alpha, buyer, rho, join, age0, scale, life, churn_day))

    world = World(
        config=cfg, view_rate=1.0, cat_factors=cat_factors, cat_log_price=cat_log_price, cat_consumable=cat_consumable,
        item_cat=item_cat, item_price=price, item_log_price=log_price, item_delta=delta, item_pop=pop,
        item_launch=launch.astype(np.int64), item_retire=retire.astype(np.int64),
        item_lifetime=lifetime.astype(np.float32),
        item_season_amp=np.where(seasonal, cfg.seasonal_item_amplitude, 0.0).astype(np.float32),
        item_season_peak=peak.astype(np.float32), item_consumable=consumable, item_cycle=cycle.astype(np.float32),
        item_out_of_stock=oos, user_factors=u, user_rate=rate, user_price_sens=beta, user_buy=alpha, user_buyer=buyer,
        user_repeat=rho, user_join=join, user_age0=age0, user_churn_scale=scale, user_lifetime=life,
        user_churn_day=churn_day, item_pack=_packs(cfg),
    )
    # nu: views per session ~ views_per_session, from the mean acceptance over random pairs
    cal = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    pu, pi = cal.integers(0, n_users, 20_000), cal.integers(0, n_items, 20_000)
    acceptance = float(np.exp(world.accept_log(world.residual(pu, pi))).mean())
    world.view_rate = cfg.views_per_session / acceptance
    return world


def _packs(cfg: ShopConfig) -> np.ndarray:
    """Units per pack of each item, drawn from ``quantity_packs`` on a stream of its own (5), so a
    shop without packs draws exactly what it drew before the knob existed."""
    if not cfg.quantity_packs:
        return np.ones(cfg.n_items)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 5]))
    return rng.choice(np.asarray(cfg.quantity_packs, dtype=np.float64), cfg.n_items)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez without pickle and with fixed zip timestamps, so the bytes are reproducible."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            arr = np.asarray(arrays[name])
            if arr.dtype == object:
                raise TypeError(f"{name}: object arrays are not allowed in truth.npz")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def config_dump(cfg: ShopConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
