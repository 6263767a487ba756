"""``ShopConfig``: every knob of the synthetic shop, with a default and a sentence each.

The defaults are the "small" shop; ``ShopConfig.preset(name)`` gives the generic sizes tiny /
small / medium / large and the shop kinds (``KINDS``: grocery, wide, gift) at full size or, as
"<kind>-test", at a size for tests, and shops nobody tuned for, "drawn-<seed>" (``drawn``: every
knob that makes a kind drawn at random between the kinds' values). Knobs added for the kinds
default to values that leave the generic shops' data byte for byte as they were. The same config (seed included) always
produces byte-identical files on one platform; ``user_chunk`` is part of the config because the
random streams are drawn per chunk of users.
"""
from __future__ import annotations

import math
import re
from datetime import date

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


def _f(default, description: str, **kw):
    return Field(default, description=description, **kw)


class ShopConfig(BaseModel):
    """Parameters of the synthetic shop (defaults: the "small" preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- size and time -------------------------------------------------------------------
    seed: int = _f(7, "seed of every random stream; same config + seed -> identical files", ge=0)
    n_users: int = _f(5_000, "shoppers (ids u000000...), including those who never come back", ge=1)
    n_items: int = _f(1_000, "items in the catalogue over the year (ids i00000...), launched and retired", ge=1)
    n_categories: int = _f(40, "item categories (cat000...); sizes vary (lognormal weights)", ge=1)
    n_factors: int = _f(12, "dimension of the latent taste / item factors", ge=1)
    days: int = _f(365, "length of the simulated period in days, ending on `end` (inclusive)", ge=30)
    end: date = _f(date(2024, 12, 31), "last day of the data (events up to 23:59:59 that day)")

    # --- catalogue ---------------------------------------------------------------------
    price_median: float = _f(15.0, "median item price (lognormal prices)", gt=0)
    price_category_sigma: float = _f(0.8, "sd of the categories' mean log price", ge=0)
    price_item_sigma: float = _f(0.45, "sd of an item's log price around its category mean", ge=0)
    category_size_sigma: float = _f(0.7, "sd of the lognormal weights that size the categories", ge=0)
    category_factor_scale: float = _f(1.0, "scale of category centres in factor space (taste across categories)", ge=0)
    item_factor_scale: float = _f(0.7, "scale of an item's factors around its category centre (taste within)", ge=0)
    popularity_sigma: float = _f(1.3, "sd of the items' base log popularity (the long tail)", ge=0)
    prelaunched_share: float = _f(0.6, "share of items already on sale before the first day", ge=0, le=1)
    lifetime_median_days: float = _f(300.0, "median days an item stays on sale (lognormal)", gt=0)
    lifetime_sigma: float = _f(0.6, "sd of the log lifetime", ge=0)
    novelty_boost: float = _f(1.5, "extra log popularity at launch, decaying with `novelty_days`", ge=0)
    novelty_days: float = _f(30.0, "e-folding time of the launch boost (days)", gt=0)
    fade: float = _f(2.5, "log popularity lost linearly over an item's lifetime", ge=0)
    seasonal_item_share: float = _f(0.2, "share of seasonal items (popularity peaks once a year)", ge=0, le=1)
    christmas_item_share: float = _f(0.7, "share of seasonal items peaking before Christmas (others: any time)", ge=0, le=1)
    seasonal_item_amplitude: float = _f(2.5, "peak-to-off-season log popularity of a seasonal item", ge=0)
    seasonal_item_width_days: float = _f(20.0, "sd (days) of a seasonal item's peak", gt=0)
    consumable_category_share: float = _f(0.25, "share of categories that are mostly consumables", ge=0, le=1)
    consumable_share_in: float = _f(0.8, "share of consumable items in consumable categories", ge=0, le=1)
    consumable_share_out: float = _f(0.05, "share of consumable items in other categories", ge=0, le=1)
    promo_share: float = _f(0.0, "share of items on promotion in any week (a grocer's weekly offers); 0: none",
                            ge=0, le=1)
    promo_boost: float = _f(1.5, "extra log popularity of an item during its promotion week", ge=0)
    out_of_stock_share: float = _f(0.05, "share of items still listed at the end that sell out in its last 3 weeks "
                                   "(in_stock False)", ge=0, le=1)

    # --- shoppers ----------------------------------------------------------------------
    taste_scale: float = _f(1.0, "sd of taste . factor products (how much taste matters)", ge=0)
    sessions_per_week_median: float = _f(0.24, "median sessions per week of an active shopper (lognormal)", gt=0)
    sessions_per_week_sigma: float = _f(1.0, "sd of log activity: heavy-tailed sessions per week", ge=0)
    max_sessions_per_day: float = _f(3.0, "cap on a shopper's session rate", gt=0)
    price_sensitivity_median: float = _f(0.8, "median coefficient on -log(price) in utility (lognormal)", ge=0)
    price_sensitivity_sigma: float = _f(0.5, "sd of log price sensitivity", ge=0)
    buy_propensity_sigma: float = _f(0.7, "sd of a shopper's offset on the cart->purchase logit", ge=0)
    browse_only_share: float = _f(0.25, "share of shoppers who view and cart but never buy", ge=0, le=1)
    existing_share: float = _f(0.5, "share of shoppers already active on the first day; others join uniformly", ge=0, le=1)
    existing_max_age_days: float = _f(730.0, "existing shoppers' tenure on the first day ~ U(0, this)", ge=0)
    anonymous_share: float = _f(0.1, "share of sessions without a purchase logged without user_id", ge=0, le=1)

    # --- churn (Weibull lifetime from signup; hazard falls with tenure when shape < 1) ----
    churn_shape: float = _f(0.7, "Weibull shape of a shopper's lifetime (< 1: new shoppers churn faster)", gt=0)
    churn_scale_days: float = _f(420.0, "Weibull scale (days) of a median-activity shopper", gt=0)
    churn_activity_effect: float = _f(0.4, "log scale change per unit log activity: active shoppers stay longer")
    churn_buy_effect: float = _f(0.4, "log scale change per sd of buy propensity: shoppers who convert stay longer")
    churn_noise_sigma: float = _f(0.5, "sd of the per-shopper log scale noise", ge=0)

    # --- cycles ------------------------------------------------------------------------
    weekly_strength: float = _f(0.3, "extra session rate on Saturday and Sunday (0.3 = +30%)", ge=0)
    seasonal_strength: float = _f(0.6, "strength of the yearly cycle (Christmas and Black Friday up, summer down)", ge=0)
    season_width_days: float = _f(15.0, "sd (days) of the Christmas bump in the session rate (wider: a longer run-up)",
                                  gt=0)

    # --- sessions and funnel -------------------------------------------------------------
    views_per_session: float = _f(4.0, "mean product views per session (about; sets the proposal rate)", gt=0)
    session_dispersion: float = _f(2.0, "gamma shape of a session's depth (smaller: more dispersed)", gt=0)
    acceptance_cap: float = _f(1.75, "item affinity above this counts as this (bounds the view sampler)", gt=0)
    view_gap_seconds: float = _f(45.0, "mean seconds between views in a session", gt=0)
    cart_intercept: float = _f(-3.6, "logit of view->cart at zero utility", le=20, ge=-20)
    cart_slope: float = _f(0.8, "view->cart logit per unit utility", ge=0)
    purchase_intercept: float = _f(-1.4, "logit of cart->purchase at zero utility", le=20, ge=-20)
    purchase_slope: float = _f(0.5, "cart->purchase logit per unit utility", ge=0)
    quantity_extra: float = _f(0.3, "mean extra units per order line (1 + Poisson)", ge=0)
    consumable_quantity_extra: float = _f(1.0, "additional mean extra units for consumables", ge=0)
    quantity_packs: tuple[int, ...] = _f((), "pack sizes (wholesale): each item is sold in one, drawn from these "
                                         "(repeat a size to weight it), and a line's quantity is packs x units; "
                                         "empty: single units")
    return_intercept: float = _f(-2.3, "logit of returning an order line at zero utility", le=20, ge=-20)
    return_slope: float = _f(0.5, "return logit decrease per unit utility", ge=0)

    # --- repeat purchases of consumables -----------------------------------------------------
    repeat_prob_mean: float = _f(0.6, "mean chance that a consumable purchase is bought again (Beta per shopper)", gt=0, lt=1)
    repeat_prob_concentration: float = _f(5.0, "Beta concentration of that chance", gt=0)
    replenish_days_median: float = _f(45.0, "median replenishment cycle of a consumable (days, lognormal per item)", gt=0)
    replenish_days_sigma: float = _f(0.4, "sd of the log cycle", ge=0)
    replenish_shape: float = _f(6.0, "gamma shape of the time to the next purchase (larger: more regular)", gt=0)

    # --- truth ---------------------------------------------------------------------------
    truth_days_before_end: tuple[int, ...] = _f((90, 30, 0), "truth dates: `end` minus these days")
    buy_window_days: int = _f(30, "p_buy: at least one purchase in this many days after the date", ge=1)
    churn_horizon_days: int = _f(90, "p_churn: no purchase in this many days after the date", ge=1)
    truth_step_days: int = _f(1, "session purchase probabilities computed every this many days, interpolated", ge=1)
    truth_max_items: int = _f(20_000, "above this many items, those sums use a PPS sample of this size", ge=100)

    # --- engineering -------------------------------------------------------------------------
    user_chunk: int = _f(100_000, "shoppers simulated and written per chunk (memory bound; part of the seed)", ge=100)

    @model_validator(mode="after")
    def _check(self) -> "ShopConfig":
        if any(d < 0 or d >= self.days for d in self.truth_days_before_end):
            raise ValueError(f"truth_days_before_end: each value must be in [0, days={self.days})")
        if any(size < 1 for size in self.quantity_packs):
            raise ValueError(f"quantity_packs: every pack size must be >= 1, got {self.quantity_packs}")
        return self

    @classmethod
    def preset(cls, name: str, **overrides) -> "ShopConfig":
        """A named shop (``PRESETS``): a generic size (tiny for tests, small for `make run`, medium,
        large) or a kind (``KINDS``: "grocery", "wide", "gift") at its full size, or "<kind>-test"
        at a size for tests, or "drawn-<seed>" (``drawn``; "drawn-<seed>-test" at a quarter of its
        shoppers); ``overrides`` win."""
        if (m := DRAWN_NAME.fullmatch(name)) is not None:
            return cls(**(drawn(int(m[1]), test=bool(m[2])) | overrides))
        if name not in PRESETS:
            raise ValueError(f"preset: unknown name {name!r}; choose one of {', '.join(PRESETS)}, "
                             "or drawn-<seed> / drawn-<seed>-test")
        return cls(**(PRESETS[name] | overrides))


# Generic shops by size (the defaults are "small").
SIZES: dict[str, dict] = {
    # ~300 users, 100 items: well under 2 s, for tests
    "tiny": dict(n_users=300, n_items=100, n_categories=8, n_factors=8, sessions_per_week_median=1.0),
    # ~5k users, 1k items, ~250k events: `make run`
    "small": dict(),
    # ~100k users, 10k items, ~2-3M events
    "medium": dict(n_users=100_000, n_items=10_000, n_categories=120, n_factors=16,
                   sessions_per_week_median=0.1, truth_step_days=3),
    # 1M users, 100k items, 10M+ events: chunked, a few minutes on 2 cores
    "large": dict(n_users=1_000_000, n_items=100_000, n_categories=100, n_factors=16,
                  sessions_per_week_median=0.042, truth_step_days=14, truth_max_items=4_000),
}

# Shop kinds: what makes each one unlike the generic shop (and unlike each other).
KINDS: dict[str, dict] = {
    # Weekly-repeat consumables from a narrow, stable catalogue (no seasonal lines); shoppers come
    # every week or two. Weekly offers lift a few items for a week and then end, so a month of
    # sales ranks what sells next better than the last three days do.
    "grocery": dict(
        consumable_category_share=0.85, consumable_share_in=0.95, consumable_share_out=0.3,
        replenish_days_median=12.0, replenish_days_sigma=0.3, replenish_shape=8.0,
        repeat_prob_mean=0.7, repeat_prob_concentration=8.0,
        sessions_per_week_median=0.5, sessions_per_week_sigma=0.6, weekly_strength=0.5,
        price_median=4.0, price_category_sigma=0.5, popularity_sigma=1.0,
        prelaunched_share=0.95, lifetime_median_days=2_000.0, novelty_boost=0.3, fade=0.3,
        seasonal_item_share=0.0, seasonal_strength=0.15, promo_share=0.05, promo_boost=2.0,
        views_per_session=6.0, cart_intercept=-1.0, purchase_intercept=0.5, browse_only_share=0.1,
        churn_scale_days=900.0, quantity_extra=0.5,
    ),
    # A wide long-tail catalogue (above EASE's item cap at full size): a steep popularity curve,
    # many launches, short item lives; conversion is high, so that ~1.5M order lines come with
    # ~7M events rather than ~30M (and generate in well under a minute).
    "wide": dict(
        popularity_sigma=1.9, prelaunched_share=0.35, lifetime_median_days=200.0, novelty_boost=1.5,
        novelty_days=25.0, fade=2.0, views_per_session=3.0, cart_intercept=-0.5, purchase_intercept=1.0,
        browse_only_share=0.1, anonymous_share=0.05, consumable_category_share=0.1,
    ),
    # A gift wholesaler like UCI Online Retail: bulk quantities in packs, big baskets from a few
    # thousand trade customers, items launching and fading, and a strong Christmas run-up in
    # the last months (the data end on December 9th, as Online Retail's do).
    "gift": dict(
        end=date(2024, 12, 9), quantity_packs=(1, 2, 3, 4, 6, 6, 6, 12, 12, 24), quantity_extra=0.3,
        consumable_category_share=0.0, consumable_share_out=0.02,
        seasonal_strength=1.0, season_width_days=45.0, seasonal_item_share=0.4, christmas_item_share=0.85,
        seasonal_item_amplitude=3.0, seasonal_item_width_days=30.0,
        prelaunched_share=0.7, lifetime_median_days=400.0, novelty_boost=1.5, novelty_days=20.0, fade=2.0,
        popularity_sigma=1.0, sessions_per_week_median=0.07, sessions_per_week_sigma=1.1,
        views_per_session=60.0, cart_intercept=1.0, purchase_intercept=1.5, browse_only_share=0.05,
        anonymous_share=0.02, price_median=3.0,
    ),
}

# Each kind at a size for tests (seconds to generate, well under a minute to train) and its
# full size for the quality benchmark (benchmarks/quality.py).
KIND_SIZES: dict[str, dict[str, dict]] = {
    "grocery": {
        "test": dict(n_users=1_500, n_items=400, n_categories=20, n_factors=8),
        "full": dict(n_users=10_000, n_items=3_000, n_categories=60, n_factors=12),
    },
    "wide": {
        "test": dict(n_users=3_000, n_items=3_000, n_categories=60, n_factors=12),
        "full": dict(n_users=100_000, n_items=64_000, n_categories=300, n_factors=16, truth_step_days=7,
                     truth_max_items=4_000),
    },
    "gift": {
        "test": dict(n_users=900, n_items=800, n_categories=20, n_factors=8),
        "full": dict(n_users=6_000, n_items=4_000, n_categories=60, n_factors=12),
    },
}

PRESETS: dict[str, dict] = dict(SIZES)
for _kind, _sizes in KIND_SIZES.items():
    PRESETS[f"{_kind}-test"] = KINDS[_kind] | _sizes["test"]
    PRESETS[_kind] = KINDS[_kind] | _sizes["full"]


# Shops nobody tuned for: the kinds show what we looked at while building the recipes; a drawn
# shop mixes their traits at random, so the quality benchmark also judges shops seen for the
# first time (benchmarks/quality.py scores ``DRAWN``, seeds fixed before any was measured).
DRAWN_NAME = re.compile(r"drawn-(\d+)(-test)?")
DRAWN_EVENTS = 4_000_000  # about this many views at most (shoppers cut to fit): minutes to generate and train


def drawn(seed: int, test: bool = False) -> dict:
    """The config of the drawn shop ``seed``: each knob that makes a kind (a key of any ``KINDS``
    entry) drawn between the lowest and the highest value that the generic shop and the kinds give
    it (log-uniform where the range spans 4x or more of positive values, uniform otherwise, rounded
    for whole numbers), one of those values for the others (end date, pack sizes); 3k-12k shoppers
    (fewer where their sessions would exceed ``DRAWN_EVENTS`` views) and 1k-5k items. The same seed
    always gives the same config; ``test``: a quarter of the shoppers."""
    rng = np.random.default_rng([seed, 20_261_202])
    generic = ShopConfig().model_dump()
    out: dict = {}
    for key in sorted(set().union(*KINDS.values())):
        values = [generic[key], *(kind[key] for kind in KINDS.values() if key in kind)]
        if isinstance(generic[key], bool) or not isinstance(generic[key], (int, float)):
            out[key] = values[int(rng.integers(len(values)))]
            continue
        lo, hi = min(values), max(values)
        draw = (math.exp(rng.uniform(math.log(lo), math.log(hi))) if lo > 0 and hi >= 4 * lo
                else rng.uniform(lo, hi))
        out[key] = round(draw) if isinstance(generic[key], int) else float(draw)
    n_items = int(rng.integers(1_000, 5_001))
    sessions = out["sessions_per_week_median"] * math.exp(out["sessions_per_week_sigma"] ** 2 / 2)  # mean of a lognormal
    n_users = min(int(rng.integers(3_000, 12_001)), int(DRAWN_EVENTS / (sessions * 52 * out["views_per_session"])))
    n_users = max(500, n_users // 4 if test else n_users)
    return out | dict(seed=seed, n_users=n_users, n_items=n_items, n_categories=max(10, n_items // 60),
                      n_factors=int(rng.choice([8, 12, 16])))
