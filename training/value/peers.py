"""The peers of the customer-value model (PRODUCT.md "Customer value"), each a function of the
orders up to ``at`` that returns the spend it expects in the next ``days``:

- ``last_period``: spend in the ``days`` before ``at``;
- ``historical_rate``: spend per day since the first order × ``days``;
- ``bgnbd_gg``: BG/NBD (Fader, Hardie & Lee 2005) expected purchase days × Gamma-Gamma
  (Fader, Hardie & Lee 2005b) expected spend per purchase day, fitted with ``lifetimes`` on
  daily purchases, both with the penalizer of PRODUCT.md (0.1); ``bgnbd_gg_free_spend`` is the
  same with the Gamma-Gamma fit unpenalized (lifetimes' default), which ranks better here.

``buy_till_you_die`` also returns the BG/NBD and Gamma-Gamma quantities per customer, which the
LightGBM value model uses as features. Everything is computed from purchases (quantity > 0) up
to ``at`` only.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd

from features.labels import DAY, purchases
from features.money import exact_sums

BTYD_FEATURES = ["bg_purchases", "bg_alive", "gg_spend", "bg_value", "spend_per_day_bought"]
PEERS = ("last_period", "historical_rate", "bgnbd_gg", "bgnbd_gg_free_spend")


def spend_lines(orders: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines with their value (quantity × price)."""
    return purchases(orders).assign(value=lambda d: d["quantity"] * d["price"])


def future_spend(orders: pd.DataFrame, users: pd.Index, at, days: int) -> pd.Series:
    """Actual spend in (at, at + days] per user of ``users`` (0 for those who did not buy)."""
    at = pd.Timestamp(at)
    lines = spend_lines(orders)
    lines = lines[(lines["ts"] > at) & (lines["ts"] <= at + days * DAY)]
    return exact_sums(lines, ["value"], "user_id")["value"].reindex(users, fill_value=0.0).astype(float).rename("spend")


def last_period(orders: pd.DataFrame, users: pd.Index, at, days: int) -> pd.Series:
    at = pd.Timestamp(at)
    lines = spend_lines(orders)
    lines = lines[(lines["ts"] > at - days * DAY) & (lines["ts"] <= at)]
    return lines.groupby("user_id")["value"].sum().reindex(users, fill_value=0.0).astype(float)


def historical_rate(orders: pd.DataFrame, users: pd.Index, at, days: int) -> pd.Series:
    at = pd.Timestamp(at)
    lines = spend_lines(orders)
    g = lines[lines["ts"] <= at].groupby("user_id")
    tenure = ((at - g["ts"].min()) / DAY).clip(lower=1.0)
    return (g["value"].sum() / tenure * days).reindex(users).astype(float)


def rfm_summary(orders: pd.DataFrame, at) -> pd.DataFrame:
    """lifetimes' summary on daily purchases: ``frequency`` (repeat purchase days), ``recency``
    (days from the first to the last purchase day), ``T`` (days from the first purchase day to
    ``at``'s day), ``monetary_value`` (mean spend per repeat purchase day, 0 without one)."""
    at = pd.Timestamp(at)
    lines = spend_lines(orders)
    lines = lines[lines["ts"] <= at]
    daily = (lines.assign(day=lines["ts"].dt.floor("D")).groupby(["user_id", "day"], sort=True)["value"].sum()
             .reset_index())
    g = daily.groupby("user_id", sort=True)
    first = g["day"].min()
    s = pd.DataFrame({"frequency": (g.size() - 1).astype(float), "recency": (g["day"].max() - first) / DAY,
                      "T": (at.floor("D") - first) / DAY, "spend_per_day_bought": g["value"].mean()})
    repeat = daily[daily["day"] > daily["user_id"].map(first)]
    s["monetary_value"] = repeat.groupby("user_id")["value"].mean().reindex(s.index).fillna(0.0)
    s.index = s.index.astype("string").rename("user_id")
    return s


@contextlib.contextmanager
def _quiet():
    """lifetimes/autograd print optimiser diagnostics and warn on log(0) while searching."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def buy_till_you_die(orders: pd.DataFrame, at, days: int, penalizer: float = 0.1,
                     spend_penalizer: float = 0.1) -> pd.DataFrame:
    """BTYD_FEATURES per customer with a purchase up to ``at`` (index user_id): expected purchase
    days in the next ``days`` (BG/NBD), probability alive, expected spend per purchase day
    (Gamma-Gamma; the mean spend of all repeat customers where there are too few), their product."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import ConvergenceError

    s = rfm_summary(orders, at)
    f, r, t = (s[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    with _quiet():
        bg = None
        for pen in (penalizer, max(penalizer, 0.01) * 10):  # a fit that does not converge gets a stronger penalty
            try:
                bg = BetaGeoFitter(penalizer_coef=pen).fit(f, r, t)
                break
            except ConvergenceError:
                continue
        if bg is None:
            raise ValueError(f"BG/NBD did not converge at {at} ({len(s)} customers)")
        n = np.asarray(bg.conditional_expected_number_of_purchases_up_to_time(days, f, r, t), dtype=float)
        alive = np.asarray(bg.conditional_probability_alive(f, r, t), dtype=float)
        rep = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
        spend = np.full(len(s), rep["monetary_value"].mean() if len(rep) else s["spend_per_day_bought"].mean())
        if len(rep) >= 20:
            try:
                gg = GammaGammaFitter(penalizer_coef=spend_penalizer).fit(rep["frequency"], rep["monetary_value"])
                spend = np.asarray(gg.conditional_expected_average_profit(s["frequency"], s["monetary_value"]), dtype=float)
            except ConvergenceError:
                pass
    out = pd.DataFrame({"bg_purchases": n, "bg_alive": alive, "gg_spend": spend, "bg_value": n * spend,
                        "spend_per_day_bought": s["spend_per_day_bought"].to_numpy()}, index=s.index)
    return out.replace([np.inf, -np.inf], np.nan).fillna(0.0)


def peer_predictions(orders: pd.DataFrame, users: pd.Index, at, days: int, penalizer: float = 0.1) -> dict[str, np.ndarray]:
    """Every peer's expected spend for ``users`` at ``at`` over the next ``days``."""
    out = {"last_period": last_period(orders, users, at, days).to_numpy(),
           "historical_rate": historical_rate(orders, users, at, days).fillna(0.0).to_numpy()}
    for name, spend_pen in (("bgnbd_gg", penalizer), ("bgnbd_gg_free_spend", 0.0)):
        out[name] = buy_till_you_die(orders, at, days, penalizer, spend_pen)["bg_value"].reindex(users).fillna(0.0).to_numpy()
    return out
