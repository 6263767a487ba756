"""From exposures and outcomes to a decision.

Our code holds the definitions: who was exposed (a unit's variant is that of its exposures), which
outcome counts (a click: a view carrying the request id of one of the unit's answers; a purchase: by
request id when it carries one, otherwise by user, within ``attribution_days`` after an exposure),
the covariate (the unit's spend in the ``pre_days`` before the experiment started) and the decision
rule. The statistics come from libraries:

- tea-tasting (``Mean`` with a covariate is CUPED; ``RatioOfMeans`` is CTR per exposure with the delta
  method; relative lifts with their intervals), fed per-variant aggregates (count, means, variances,
  covariances), so that the simulator can pass aggregates of many runs without building frames;
- scipy: the sample-ratio-mismatch chi-square (``scipy.stats.chisquare``), per-variant t intervals;
- the sequential test, when the experiment has a planned horizon (``planned_days``, default 14, or
  ``planned_users``), is a group-sequential design with a Lan-DeMets alpha-spending function
  (training/experiments/sequential.py, on gsdesign's integration): read once a day, it spends exactly
  alpha over the horizon. The looks are every 24 h since the first exposure and the report's own time;
  the information is the units exposed by each look. After the horizon the analysis stays at it (the final
  look). An open-ended experiment (no horizon) gets the asymptotic confidence sequence of Waudby-Smith,
  Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence
  sequences" (Ann. Statist. 2024, Theorem 2.2), as GrowthBook's gbstats computes it
  (``sequential_interval_halfwidth``; gbstats pins numpy < 2 and pandas < 2, so the two lines are ported:
  ``confidence_sequence``): valid however often it is read, but conservative at daily looks.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.stats
import tea_tasting as tt
from tea_tasting.aggr import Aggregates

from features.experiments import Experiment
from training.experiments.sequential import Look, bounds, chained_information

SRM_ALPHA = 0.001
ALPHA = 0.05
TUNING_N = 5_000  # the confidence sequence is tightest near this many units (gbstats' default)
DAY_S = 86_400.0
METRIC_COLUMNS = {"conversion": "converted", "revenue_per_user": "revenue"}
COLUMNS = ("exposures", "clicks", "converted", "revenue", "pre_spend")
EXPOSURE_USED = ["request_id", "unit_id", "user_id", "variant", "ts"]  # what unit_table reads of each log
OUTCOME_USED = ["request_id", "user_id", "event_type", "value", "ts"]


# -- definitions: who was exposed, which outcome counts ---------------------------------------------
def unit_table(exp: Experiment, exposures: pd.DataFrame, outcomes: pd.DataFrame, until: float | None = None,
               pre_days: float = 30.0) -> pd.DataFrame:
    """One row per exposed unit: unit_id, user_id, variant, first_ts, exposures, clicks, converted (0/1),
    revenue, pre_spend. ``exposures``/``outcomes``: features/exposures.py columns; ``until``: epoch
    seconds (default: the experiment's stop, else everything)."""
    if until is None and exp.stopped_at is not None:
        until = pd.Timestamp(exp.stopped_at).timestamp()
    return _unit_table(exp, *_used(exp, exposures, outcomes), until, pre_days)


def _unit_table(exp: Experiment, ex: pd.DataFrame, outcomes: pd.DataFrame, until: float | None,
                pre_days: float) -> pd.DataFrame:
    """``unit_table`` on logs ``_used`` has prepared (in time order)."""
    window = exp.attribution_days * 86_400.0
    if until is not None:
        ex = ex[ex["ts"] <= until]
    if ex.empty:
        return pd.DataFrame(columns=["unit_id", "user_id", "variant", "first_ts", *COLUMNS])
    units = ex.groupby("unit_id", sort=False).agg(user_id=("user_id", "first"), variant=("variant", "first"),
                                                  first_ts=("ts", "min"), exposures=("ts", "size"))
    start = float(units["first_ts"].min())
    out = outcomes.copy()
    out_until = None if until is None else until + window
    if out_until is not None:
        out = out[out["ts"] <= out_until]
    by_request = ex[["request_id", "unit_id", "ts"]].rename(columns={"ts": "ts_exposed"})
    # (object dtype: pandas' isin on Arrow strings loops in Python, 10x slower on 50k outcomes)
    has_rid = out["request_id"].notna() & out["request_id"].astype(object).isin(by_request["request_id"].astype(object))
    tagged = _by_request(out[has_rid], by_request, window)
    plain = _by_user(out[~has_rid], ex, start, window)
    clicks = tagged[tagged["event_type"] == "view"].groupby("unit_id").size()
    bought = pd.concat([tagged[tagged["event_type"] == "purchase"][["unit_id", "value"]], plain[["unit_id", "value"]]])
    units["clicks"] = clicks.reindex(units.index, fill_value=0).astype(float)
    units["converted"] = bought.groupby("unit_id").size().reindex(units.index, fill_value=0).gt(0).astype(float)
    units["revenue"] = bought.groupby("unit_id")["value"].sum().reindex(units.index, fill_value=0.0).astype(float)
    units["pre_spend"] = _pre_spend(outcomes, units["user_id"], start, pre_days)
    units["exposures"] = units["exposures"].astype(float)
    return units.reset_index()


# The attribution rules, shared by unit_table and daily_unit_tables.
def _by_request(out: pd.DataFrame, by_request: pd.DataFrame, window: float) -> pd.DataFrame:
    """1. Outcomes carrying a request id: credited to the exposure it names (``by_request``: request_id,
    unit_id, ts_exposed), when they come within the window after it."""
    tagged = out.merge(by_request, on="request_id", how="inner")
    return tagged[(tagged["ts"] >= tagged["ts_exposed"]) & (tagged["ts"] <= tagged["ts_exposed"] + window)]


def _by_user(out: pd.DataFrame, ex: pd.DataFrame, start: float, window: float) -> pd.DataFrame:
    """2. Purchases without one of the experiment's request ids: by user (never an empty one), to the user's
    latest exposure before the purchase, within the window after it; with unit_id and ts_exposed."""
    plain = out[(out["event_type"] == "purchase") & (out["user_id"] != "")]
    plain = plain[plain["ts"] >= start].sort_values("ts", kind="stable")
    user_ex = ex[ex["user_id"] != ""][["user_id", "unit_id", "ts"]].rename(columns={"ts": "ts_exposed"})
    user_ex = user_ex.sort_values("ts_exposed", kind="stable")
    if not (len(plain) and len(user_ex)):
        return plain.iloc[:0].assign(unit_id=pd.Series(dtype=object), ts_exposed=pd.Series(dtype=float))
    plain = pd.merge_asof(plain, user_ex, left_on="ts", right_on="ts_exposed", by="user_id", direction="backward")
    return plain[plain["ts_exposed"].notna() & (plain["ts"] <= plain["ts_exposed"] + window)]


def _pre_spend(outcomes: pd.DataFrame, user_ids: pd.Series, start: float, pre_days: float) -> pd.Series:
    """The covariate (CUPED): each user's spend in the ``pre_days`` before the experiment's first exposure."""
    pre = outcomes[(outcomes["event_type"] == "purchase") & (outcomes["ts"] < start)
                   & (outcomes["ts"] >= start - pre_days * 86_400.0)]
    return user_ids.map(pre.groupby("user_id")["value"].sum()).fillna(0.0).astype(float)


def _used(exp: Experiment, exposures: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The experiment's exposures and the outcomes, with only the columns ``unit_table`` reads (the shown
    items and the item bought are long strings that every filter, sort and merge would otherwise carry).
    An answer has one request id: a request id logged again (a re-sent batch) counts once, at its earliest
    time (so a cut in time keeps the same one), and neither its exposure nor a purchase naming it counts twice."""
    ex = exposures[EXPOSURE_USED] if "experiment" not in exposures else \
        exposures.loc[exposures["experiment"] == exp.name, EXPOSURE_USED]
    return ex.sort_values("ts", kind="stable").drop_duplicates("request_id"), outcomes[OUTCOME_USED]  # in time order


def aggregates(values: dict[str, np.ndarray]) -> Aggregates:
    """tea-tasting's per-variant aggregates of unit-level columns (count, means, variances, covariances)."""
    cols = sorted(values)
    n = len(values[cols[0]])
    mean = {c: float(np.mean(values[c])) if n else 0.0 for c in cols}
    var = {c: float(np.var(values[c], ddof=1)) if n > 1 else 0.0 for c in cols}
    cov = {}
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            cov[(a, b)] = float(np.cov(values[a], values[b], ddof=1)[0, 1]) if n > 1 else 0.0
    return Aggregates(count_=n, mean_=mean, var_=var, cov_=cov)


# -- statistics ---------------------------------------------------------------------------------------
def srm_check(counts: dict[str, int], shares: dict[str, float]) -> dict:
    """Chi-square of the units per variant against the configured split; flagged at p < 0.001."""
    observed = np.array([counts.get(v, 0) for v in shares], dtype=float)
    total = observed.sum()
    if total == 0:
        return {"observed": counts, "expected": {v: 0.0 for v in shares}, "chi2": 0.0, "pvalue": 1.0, "flagged": False}
    expected = np.array(list(shares.values())) * total
    chi2, p = scipy.stats.chisquare(observed, expected)
    return {"observed": {v: int(c) for v, c in zip(shares, observed)},
            "expected": {v: round(float(e), 1) for v, e in zip(shares, expected)},
            "chi2": float(chi2), "pvalue": float(p), "flagged": bool(p < SRM_ALPHA)}


def sequential_rho(alpha: float = ALPHA, tuning_n: float = TUNING_N) -> float:
    """The mixture parameter that makes the confidence sequence tightest at ``tuning_n`` units (gbstats)."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning_n)


def confidence_sequence(effect, se, n, alpha: float = ALPHA, tuning_n: float = TUNING_N):
    """Always-valid (lower, upper) for an effect with standard error ``se`` after ``n`` units: the
    asymptotic confidence sequence (Waudby-Smith et al. 2024, Thm 2.2; gbstats' halfwidth). Arrays work."""
    effect, se, n = np.asarray(effect, float), np.asarray(se, float), np.asarray(n, float)
    rho2 = sequential_rho(alpha, tuning_n) ** 2
    sigma = se * np.sqrt(n)  # per-unit standard deviation of the effect's estimator
    half = sigma * np.sqrt(2 * (n * rho2 + 1) / (n ** 2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / alpha))
    return effect - half, effect + half


def _se_from_ci(lower: float, upper: float, n: int, alpha: float = ALPHA) -> float:
    q = scipy.stats.t.ppf(1 - alpha / 2, max(n - 2, 1))
    return (upper - lower) / (2 * q)


def variant_interval(a: Aggregates, col: str, alpha: float = ALPHA) -> tuple[float, float]:
    n = a.count()
    if n < 2:
        return (float("nan"), float("nan"))
    if a.var(col) <= 0:
        return (float(a.mean(col)), float(a.mean(col)))
    lo, hi = scipy.stats.t.interval(1 - alpha, n - 1, loc=a.mean(col), scale=math.sqrt(a.var(col) / n))
    return float(lo), float(hi)


@dataclass
class Comparison:
    metric: str
    treatment: str
    control_value: float
    treatment_value: float
    effect: float
    effect_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    pvalue: float
    cuped: bool = False
    effect_ci_plain: tuple[float, float] | None = None  # without CUPED (the width ratio)
    cuped_width_ratio: float | None = None
    sequential_ci: tuple[float, float] | None = None  # the sequential test's interval, absolute effect
    sequential_lift_ci: tuple[float, float] | None = None
    significant: bool = False  # the sequential interval excludes 0
    sequential: dict | None = None  # the test: method, look, information fraction, bound, alpha spent


def compare(metric: str, control: Aggregates, treatment: Aggregates, name: str, covariate: str | None = "pre_spend",
            alpha: float = ALPHA, tuning_n: float = TUNING_N, look: Look | None = None,
            spending: str = "obrien_fleming", looks: int = 1) -> Comparison:
    """One metric, one treatment against the control: tea-tasting's estimate (CUPED with ``covariate``
    when it varies), plus the sequential interval: with ``look`` (the group-sequential bound at this
    look, ``looks`` so far) the repeated confidence interval effect +/- bound x se; without, the
    always-valid confidence sequence."""
    if metric == "ctr":
        res = tt.RatioOfMeans("clicks", "exposures").analyze_aggregates(control, treatment)
        plain = None
    else:
        col = METRIC_COLUMNS[metric]
        use_cov = covariate is not None and (control.var(covariate) > 0 or treatment.var(covariate) > 0)
        plain = tt.Mean(col).analyze_aggregates(control, treatment)
        res = tt.Mean(col, covariate=covariate).analyze_aggregates(control, treatment) if use_cov else plain
    n = control.count() + treatment.count()
    c = Comparison(metric, name, float(res.control), float(res.treatment), float(res.effect_size),
                   (float(res.effect_size_ci_lower), float(res.effect_size_ci_upper)), float(res.rel_effect_size),
                   (float(res.rel_effect_size_ci_lower), float(res.rel_effect_size_ci_upper)), float(res.pvalue),
                   cuped=plain is not None and res is not plain)
    if plain is not None and c.cuped:
        c.effect_ci_plain = (float(plain.effect_size_ci_lower), float(plain.effect_size_ci_upper))
        width = plain.effect_size_ci_upper - plain.effect_size_ci_lower
        c.cuped_width_ratio = float((c.effect_ci[1] - c.effect_ci[0]) / width) if width > 0 else None
    se = _se_from_ci(*c.effect_ci, n, alpha)
    if look is not None:
        c.sequential = {"method": "group-sequential", "spending": spending, "look": looks,
                        "information_fraction": round(look.t, 4), "bound_z": look.bound,
                        "nominal_alpha": look.nominal_alpha, "alpha_spent": look.spent, "alpha": alpha}
    else:
        c.sequential = {"method": "confidence sequence", "tuning_n": tuning_n, "alpha": alpha}
    if np.isfinite(se) and se > 0:
        if look is None:
            lo, hi = confidence_sequence(c.effect, se, n, alpha, tuning_n)
        elif np.isfinite(look.bound):
            lo, hi = c.effect - look.bound * se, c.effect + look.bound * se
        else:  # no alpha to spend at this look: no decision
            return c
        c.sequential_ci = (float(lo), float(hi))
        c.sequential_lift_ci = _widened_lift_ci(c.lift_ci, (hi - lo) / (c.effect_ci[1] - c.effect_ci[0]))
        c.significant = bool(lo > 0 or hi < 0)
    return c


def _widened_lift_ci(lift_ci: tuple[float, float], factor: float) -> tuple[float, float] | None:
    """The relative lift's interval widened as the absolute one was: tea-tasting's is symmetric in the log
    of the means' ratio, so its log half-width is scaled by ``factor``."""
    lo, hi = lift_ci
    if not (np.isfinite(lo) and np.isfinite(hi) and lo > -1 and factor > 0):
        return None
    centre, half = (math.log1p(hi) + math.log1p(lo)) / 2, (math.log1p(hi) - math.log1p(lo)) / 2
    return (float(math.expm1(centre - factor * half)), float(math.expm1(centre + factor * half)))


METRIC_INPUTS = {"conversion": ("converted", "pre_spend"), "revenue_per_user": ("revenue", "pre_spend"),
                 "ctr": ("clicks", "exposures")}


def _masked_mean(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.where(m, a, 0.0).sum(axis=-1) / np.maximum(m.sum(axis=-1), 1)


def _masked_cov(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> np.ndarray:
    ca = a - _masked_mean(a, m)[..., None]
    cb = b - _masked_mean(b, m)[..., None]
    return np.where(m, ca * cb, 0.0).sum(axis=-1) / np.maximum(m.sum(axis=-1) - 1, 1)


def influence(metric: str, y: np.ndarray, x: np.ndarray, in_control: np.ndarray, in_treatment: np.ndarray) -> np.ndarray:
    """Per unit, the value whose difference of arm means is (to first order) the effect's estimate:
    the outcome ``y`` less theta x the covariate ``x`` (CUPED, theta pooled over both arms; none when
    ``x`` does not vary), or for CTR (``y`` clicks, ``x`` exposures) the ratio's linearisation
    (clicks - ctr x exposures) / mean exposures in each arm. Arrays (units,) or (runs, units)."""
    y, x = np.asarray(y, float), np.asarray(x, float)
    if metric == "ctr":
        out = np.zeros(np.broadcast_shapes(y.shape, x.shape))
        for m in (in_control, in_treatment):
            ex = _masked_mean(x, m)[..., None]
            ratio = _masked_mean(y, m)[..., None] / np.where(ex > 0, ex, 1.0)
            out = np.where(m, (y - ratio * x) / np.where(ex > 0, ex, 1.0), out)
        return out
    both = in_control | in_treatment
    var_x = _masked_cov(x, x, both)
    theta = np.where(var_x > 0, _masked_cov(y, x, both) / np.where(var_x > 0, var_x, 1.0), 0.0)
    return y - theta[..., None] * x


def look_correlation(prev: np.ndarray, cur: np.ndarray, prev_arms: tuple, cur_arms: tuple) -> np.ndarray:
    """corr(the effect's estimate at the previous look, at this one) from the units' ``influence`` values
    at both looks (aligned by unit; a unit's arm masks at each look, control then treatment): the
    covariance of the two estimates is, per arm, the units' covariance over those present at the
    previous look / the units now."""
    var_prev = sum(_masked_cov(prev, prev, m) / np.maximum(m.sum(axis=-1), 1) for m in prev_arms)
    var_cur = sum(_masked_cov(cur, cur, m) / np.maximum(m.sum(axis=-1), 1) for m in cur_arms)
    cov = sum(_masked_cov(prev, cur, mp) / np.maximum(mc.sum(axis=-1), 1) for mp, mc in zip(prev_arms, cur_arms))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = cov / np.sqrt(var_prev * var_cur)
    return np.where(np.isfinite(rho), rho, 1.0)


def sequential_horizon(exp: Experiment, first_ts) -> float | None:
    """When the experiment reaches its planned horizon (epoch seconds): ``planned_users`` units after the
    first exposure's, or ``planned_days`` after the first exposure; None when open-ended, or when the
    planned units have not come yet. ``first_ts``: each unit's first exposure."""
    first = np.sort(np.asarray(first_ts, dtype=float))
    if not len(first) or exp.open_ended:
        return None
    if exp.planned_users is not None:
        return float(first[exp.planned_users - 1]) if len(first) >= exp.planned_users else None
    return float(first[0] + exp.planned_days * DAY_S)


def daily_looks(exp: Experiment, exposures: pd.DataFrame, outcomes: pd.DataFrame, at: float,
                until: float | None = None, pre_days: float = 30.0) -> list[tuple[float, pd.DataFrame]]:
    """The looks the group-sequential test counts, as (time, unit table as of then), oldest first: one every
    24 h since the first exposure before ``at``, then the report's own (``unit_table`` with ``until``)."""
    ex, outcomes = _used(exp, exposures, outcomes)  # once, not per look
    looks = []
    if len(ex):
        start = float(ex["ts"].min())
        ends = start + DAY_S * np.arange(1, max(int(np.ceil((at - start) / DAY_S)), 1))
        ends = ends[ends < at]
        looks += list(zip(ends.tolist(), _daily_unit_tables(exp, ex, outcomes, ends, pre_days)))
    if until is None and exp.stopped_at is not None:
        until = pd.Timestamp(exp.stopped_at).timestamp()
    looks.append((float(at), _unit_table(exp, ex, outcomes, until, pre_days)))
    return looks


def daily_unit_tables(exp: Experiment, exposures: pd.DataFrame, outcomes: pd.DataFrame, ends: np.ndarray,
                      pre_days: float = 30.0) -> list[pd.DataFrame]:
    """For each of ``ends`` (ascending, all after the first exposure), the unit table as the report read it
    then: ``unit_table(exp, exposures[ts <= end], outcomes[ts <= end], until=end)``, in one pass over the
    logs instead of one per look (a report on day 28 of a 100k-shopper test took ~1 s per look).

    When exposures and outcomes are cut at the same time, what an outcome is credited to does not depend
    on the cut, only from when (and until when) it counts: an exposure from its time on; an outcome
    tagged with the request id of an exposure it follows within the window, from the outcome's time on; a
    purchase credited by user (the user's latest exposure before it, within the window), from its time
    on, and only until an exposure with the request id it carries is logged (from then on that exposure
    decides, as in ``unit_table``). tests/test_experiments.py checks the tables equal ``unit_table``'s."""
    return _daily_unit_tables(exp, *_used(exp, exposures, outcomes), ends, pre_days)


def _daily_unit_tables(exp: Experiment, ex: pd.DataFrame, outcomes: pd.DataFrame, ends: np.ndarray,
                       pre_days: float) -> list[pd.DataFrame]:
    """``daily_unit_tables`` on logs ``_used`` has prepared (in time order)."""
    window = exp.attribution_days * DAY_S
    ends = np.asarray(ends, dtype=float)
    units = ex.groupby("unit_id", sort=False).agg(user_id=("user_id", "first"), variant=("variant", "first"),
                                                  first_ts=("ts", "min"))
    position = units.index
    start = float(units["first_ts"].min())
    out = outcomes[outcomes["ts"] <= ends[-1]] if len(ends) else outcomes.iloc[:0]
    # every credit: unit position, counts from / until (epoch s), and what it adds
    credits = [pd.DataFrame({"unit": position.get_indexer(ex["unit_id"]), "since": ex["ts"].to_numpy(float),
                             "exposures": 1.0})]
    rid = out["request_id"].notna()
    by_request = ex[["request_id", "unit_id", "ts"]].rename(columns={"ts": "ts_exposed"})
    tagged = _by_request(out[rid], by_request, window)
    is_view, is_buy = tagged["event_type"] == "view", tagged["event_type"] == "purchase"
    credits.append(pd.DataFrame({"unit": position.get_indexer(tagged["unit_id"]), "since": tagged["ts"].to_numpy(float),
                                 "clicks": is_view.to_numpy(float), "buys": is_buy.to_numpy(float),
                                 "revenue": tagged["value"].where(is_buy, 0.0).fillna(0.0).to_numpy(float)}))
    # by user: until an exposure with the outcome's own request id exists (never, for most)
    exposed_at = by_request.set_index("request_id")["ts_exposed"]  # one exposure per request id (``_used``)
    out = out.assign(until=out["request_id"].map(exposed_at).fillna(np.inf).to_numpy(float))
    plain = _by_user(out[out["until"] > out["ts"]], ex, start, window)
    if len(plain):
        credits.append(pd.DataFrame({"unit": position.get_indexer(plain["unit_id"]), "since": plain["ts"].to_numpy(float),
                                     "until": plain["until"].to_numpy(float), "buys": 1.0,
                                     "revenue": plain["value"].fillna(0.0).to_numpy(float)}))
    credit = pd.concat(credits, ignore_index=True)
    fields = ["exposures", "clicks", "buys", "revenue"]
    credit[fields] = credit[fields].fillna(0.0)
    credit["until"] = credit["until"].fillna(np.inf) if "until" in credit else np.inf
    first_look = np.searchsorted(ends, credit["since"].to_numpy(float), side="left")  # counts from this look ...
    last_look = np.searchsorted(ends, credit["until"].to_numpy(float), side="left")  # ... to before this one
    unit, values = credit["unit"].to_numpy(), credit[fields].to_numpy(float)
    base = units.reset_index()
    pre_spend = _pre_spend(outcomes, base["user_id"], start, pre_days).to_numpy(float)
    n_units = np.searchsorted(base["first_ts"].to_numpy(float), ends, side="right")  # units are in first-exposure order
    total = np.zeros((len(base), len(fields)))
    tables = []
    for look in range(len(ends)):
        np.add.at(total, unit[first_look == look], values[first_look == look])
        np.subtract.at(total, unit[last_look == look], values[last_look == look])
        n = int(n_units[look])
        table = base.iloc[:n].copy()
        table["exposures"] = total[:n, 0].copy()
        table["clicks"] = total[:n, 1].copy()
        table["converted"] = (np.round(total[:n, 2]) > 0).astype(float)
        table["revenue"] = total[:n, 3].copy()
        table["pre_spend"] = pre_spend[:n]
        tables.append(table)
    return tables


class _Units:
    """The units compared at the current look, in its table's order, and where each row of a look's table
    goes among them. The looks' tables list the units in first-exposure order, each a prefix of the current
    one (``daily_looks``): then the rows' places are a slice, not a lookup of every unit id per look."""

    def __init__(self, current: pd.DataFrame, compared: np.ndarray):
        self.ids = current["unit_id"].reset_index(drop=True)
        self.compared = compared
        self.slot = np.where(compared, np.cumsum(compared) - 1, -1)  # each current row's place among the compared

    @functools.cached_property
    def index(self) -> pd.Index:
        """The compared units' ids, for a table that is not a prefix (Python strings: hashed far faster than Arrow's)."""
        return pd.Index(self.ids.to_numpy(object)[self.compared])

    def __len__(self) -> int:
        return int(self.compared.sum())

    def places(self, table: pd.DataFrame) -> np.ndarray:
        """Each row's place among the compared units, -1 for a unit that is not one of them."""
        ids = table["unit_id"].reset_index(drop=True)
        if len(ids) <= len(self.ids) and ids.equals(self.ids.iloc[: len(ids)]):  # compared as stored (Arrow), not as objects
            return self.slot[: len(ids)]
        return self.index.get_indexer(ids.to_numpy(object))


def _aligned(table: pd.DataFrame, units: _Units, arms: tuple[str, str],
             columns: list[str]) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
    """Whether each compared unit is in each of ``arms`` (variant names) at ``table``'s look (False where missing)
    and ``columns`` (0.0 where missing), for the compared units in their order:
    ``table.set_index("unit_id").reindex(units.index)`` without moving every column."""
    where = units.places(table)
    found = where >= 0
    members = []
    for arm in arms:
        member = np.zeros(len(units), dtype=bool)
        member[where[found]] = (table["variant"] == arm).to_numpy(bool)[found]
        members.append(member)
    out = {}
    for c in dict.fromkeys(columns):
        values = np.zeros(len(units))
        values[where[found]] = table[c].fillna(0.0).to_numpy(float)[found]
        out[c] = values
    return tuple(members), out


def sequential_looks(exp: Experiment, metric: str, looks: list[tuple[float, pd.DataFrame]], control: str,
                     treatment: str, alpha: float = ALPHA) -> list[Look] | None:
    """The group-sequential test of one metric and treatment over ``looks`` ((time, unit table), oldest
    first, the last the current one; see ``daily_looks``). Spending time: days since the first exposure
    / planned days, or units / planned units, at most 1. Information: the units at the first look, then
    chained through the correlation of consecutive looks' estimates (``look_correlation``,
    ``sequential.chained_information``). A look with fewer than 2 units in an arm is left out (its alpha
    rolls over). None for an open-ended experiment; [] when no look has enough units."""
    if exp.open_ended:
        return None
    current = looks[-1][1]
    compared = current["variant"].isin([control, treatment]).to_numpy()
    if not compared.any():
        return []
    start = float(current.loc[compared, "first_ts"].min()) if "first_ts" in current else None
    y_col, x_col = METRIC_INPUTS[metric]
    kept = []  # (spending time, units, influence values, arm masks)
    units = _Units(current, compared)
    for at, table in looks:
        arms, sub = _aligned(table, units, (control, treatment), [y_col, x_col])
        if min(int(a.sum()) for a in arms) < 2:
            continue
        n = int(arms[0].sum() + arms[1].sum())
        if exp.planned_users is not None:  # the experiment's units, every variant
            t = len(table) / exp.planned_users
        elif start is None:  # a table without times: the final look
            t = 1.0
        else:
            t = (at - start) / (exp.planned_days * DAY_S)
        values = influence(metric, sub[y_col], sub[x_col], *arms)
        kept.append((min(t, 1.0), n, values, arms))
    if not kept:
        return []
    rhos = [look_correlation(a[2], b[2], a[3], b[3]) for a, b in zip(kept, kept[1:])]
    infos = chained_information(kept[0][1], rhos)
    return bounds([k[0] for k in kept], infos, alpha, exp.spending)


@dataclass
class Report:
    experiment: str
    status: str
    primary: str
    guardrails: list[str]
    variants: list[dict]
    srm: dict
    comparisons: list[dict]
    decision: str
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON values: a number that is not finite (a lift over a control of 0, a first look's p-value, a
        bound with no alpha left) is None, and so is an interval (``*_ci``) with such an end."""
        return _json_ready(asdict(self))


def _json_ready(x):
    if isinstance(x, dict):
        return {k: None if ("_ci_" in k or k.endswith("_ci")) and x[k] is not None and not all(map(_finite, x[k]))
                else _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def analyse(exp: Experiment, table: pd.DataFrame, alpha: float = ALPHA, tuning_n: float = TUNING_N,
            now: float | None = None, history: list[tuple[float, pd.DataFrame]] | None = None) -> Report:
    """The report of an experiment from its unit table (``unit_table``) read at ``now`` (epoch seconds;
    default: the last unit's first exposure), after the earlier looks ``history`` ((time, unit table), as
    ``daily_looks`` makes them; none: this is the first look). A table without ``first_ts`` is read as the
    final look."""
    shares = exp.shares()
    counts = table.groupby("variant").size().to_dict() if len(table) else {}
    srm = srm_check(counts, shares)
    aggr = {v: aggregates({c: table.loc[table["variant"] == v, c].to_numpy(float) for c in COLUMNS}) for v in shares}
    variants = []
    for v in exp.variants:
        a = aggr[v.name]
        n = a.count()
        row = {"variant": v.name, "arm": v.arm, "share": round(shares[v.name], 4), "units": int(n),
               "exposures": int(round(a.mean("exposures") * n)) if n else 0,
               "clicks": int(round(a.mean("clicks") * n)) if n else 0,
               "ctr": float(a.mean("clicks") / a.mean("exposures")) if n and a.mean("exposures") > 0 else None}
        for metric, col in METRIC_COLUMNS.items():
            row[metric] = float(a.mean(col)) if n else None
            row[f"{metric}_ci"] = variant_interval(a, col, alpha) if n else None
        variants.append(row)
    notes = []
    metrics = [exp.metric] + [g for g in exp.guardrails if g != exp.metric]
    comparisons: list[Comparison] = []
    control = aggr[exp.control.name]
    for v in exp.variants[1:]:
        if control.count() < 2 or aggr[v.name].count() < 2:
            notes.append(f"{v.name}: fewer than 2 units in it or in the control, no comparison yet")
            continue
        if now is None:
            now = float(table["first_ts"].max()) if "first_ts" in table and len(table) else 0.0
        for metric in metrics:
            looks = sequential_looks(exp, metric, [*(history or []), (now, table)], exp.control.name, v.name, alpha)
            comparisons.append(compare(metric, control, aggr[v.name], v.name, alpha=alpha, tuning_n=tuning_n,
                                       look=looks[-1] if looks else None, spending=exp.spending,
                                       looks=len(looks or ())))
    decision, reason = decide(exp, srm, comparisons)
    return Report(exp.name, exp.status, exp.metric, list(exp.guardrails), variants, srm,
                  [asdict(c) for c in comparisons], decision, reason, notes)


def decide(exp: Experiment, srm: dict, comparisons: list[Comparison]) -> tuple[str, str]:
    """invalid (SRM) > stop (a guardrail or the primary metric significantly worse) > ship (primary
    significantly better, no guardrail harmed) > stop (the planned horizon reached without a difference)
    > keep running, or for an experiment already stopped, stop (keep the control: it cannot keep running).
    Significance: the sequential interval (group-sequential at a planned horizon, else the confidence sequence)."""
    if srm["flagged"]:
        return "invalid", (f"sample ratio mismatch (chi-square p = {srm['pvalue']:.2g} < {SRM_ALPHA}): units per "
                           f"variant {srm['observed']} against expected {srm['expected']}; fix the assignment, "
                           "do not read the results")
    if not comparisons:
        return _undecided(exp, "not enough units yet")
    primary = [c for c in comparisons if c.metric == exp.metric]
    harmed = [c for c in comparisons if c.metric != exp.metric and c.sequential_ci and c.sequential_ci[1] < 0]
    if harmed:
        c = harmed[0]
        return "stop", f"guardrail {c.metric} is worse under {c.treatment} (sequential interval {_fmt(c.sequential_ci)})"
    worse = [c for c in primary if c.significant and c.effect < 0]
    if worse:
        return "stop", f"{worse[0].treatment} lowers {exp.metric} (sequential interval {_fmt(worse[0].sequential_ci)})"
    better = [c for c in primary if c.significant and c.effect > 0]
    if better:
        best = max(better, key=lambda c: c.lift)
        return "ship", (f"{best.treatment} raises {exp.metric} by {best.lift:+.1%} (sequential lift interval "
                        f"{_fmt(best.sequential_lift_ci, pct=True)}), no guardrail harmed")
    if primary and all(c.sequential and c.sequential["method"] == "group-sequential"
                       and c.sequential["information_fraction"] >= 1 for c in primary):
        return "stop", (f"the planned horizon is reached with no significant difference in {exp.metric} (final look, "
                        "the sequential interval contains 0): keep the control")
    return _undecided(exp, f"no significant difference in {exp.metric} yet (the sequential interval contains 0)")


def _undecided(exp: Experiment, why: str) -> tuple[str, str]:
    """Nothing decided yet: keep running, unless the experiment was stopped before a difference showed."""
    if exp.running:
        return "keep running", why
    return "stop", f"stopped before a decision: {why}; keep the control"


def _fmt(ci, pct: bool = False) -> str:
    if ci is None:
        return "n/a"
    return f"[{ci[0]:+.2%}, {ci[1]:+.2%}]" if pct else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"
