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
- the sequential test is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy
  and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (Ann. Statist.
  2024, Theorem 2.2), as GrowthBook's gbstats computes it (``sequential_interval_halfwidth``); gbstats
  itself pins numpy < 2 and pandas < 2, so the two lines are ported here (see ``confidence_sequence``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.stats
import tea_tasting as tt
from tea_tasting.aggr import Aggregates

from features.experiments import Experiment

SRM_ALPHA = 0.001
ALPHA = 0.05
TUNING_N = 5_000  # the confidence sequence is tightest near this many units (gbstats' default)
METRIC_COLUMNS = {"conversion": "converted", "revenue_per_user": "revenue"}
COLUMNS = ("exposures", "clicks", "converted", "revenue", "pre_spend")


# -- definitions: who was exposed, which outcome counts ---------------------------------------------
def unit_table(exp: Experiment, exposures: pd.DataFrame, outcomes: pd.DataFrame, until: float | None = None,
               pre_days: float = 30.0) -> pd.DataFrame:
    """One row per exposed unit: unit_id, user_id, variant, first_ts, exposures, clicks, converted (0/1),
    revenue, pre_spend. ``exposures``/``outcomes``: features/exposures.py columns; ``until``: epoch
    seconds (default: the experiment's stop, else everything)."""
    window = exp.attribution_days * 86_400.0
    if until is None and exp.stopped_at is not None:
        until = pd.Timestamp(exp.stopped_at).timestamp()
    ex = exposures[exposures["experiment"] == exp.name]
    if until is not None:
        ex = ex[ex["ts"] <= until]
    if ex.empty:
        return pd.DataFrame(columns=["unit_id", "user_id", "variant", "first_ts", *COLUMNS])
    ex = ex.sort_values("ts", kind="stable")
    units = ex.groupby("unit_id", sort=False).agg(user_id=("user_id", "first"), variant=("variant", "first"),
                                                  first_ts=("ts", "min"), exposures=("ts", "size"))
    start = float(units["first_ts"].min())
    out = outcomes.copy()
    out_until = None if until is None else until + window
    if out_until is not None:
        out = out[out["ts"] <= out_until]
    by_request = ex[["request_id", "unit_id", "ts"]].rename(columns={"ts": "ts_exposed"})
    has_rid = out["request_id"].notna() & out["request_id"].isin(by_request["request_id"])
    # 1. by request id: the exposure it names, within the window after it
    tagged = out[has_rid].merge(by_request, on="request_id", how="inner")
    tagged = tagged[(tagged["ts"] >= tagged["ts_exposed"]) & (tagged["ts"] <= tagged["ts_exposed"] + window)]
    # 2. purchases without one of this experiment's request ids: by user, after the user's latest exposure
    plain = out[~has_rid & (out["event_type"] == "purchase") & (out["user_id"] != "")]
    plain = plain[plain["ts"] >= start].sort_values("ts", kind="stable")
    user_ex = ex[ex["user_id"] != ""][["user_id", "unit_id", "ts"]].rename(columns={"ts": "ts_exposed"})
    user_ex = user_ex.sort_values("ts_exposed", kind="stable")
    if len(plain) and len(user_ex):
        plain = pd.merge_asof(plain, user_ex, left_on="ts", right_on="ts_exposed", by="user_id", direction="backward")
        plain = plain[plain["ts_exposed"].notna() & (plain["ts"] <= plain["ts_exposed"] + window)]
    else:
        plain = plain.assign(unit_id=pd.Series(dtype=object), ts_exposed=pd.Series(dtype=float))
    clicks = tagged[tagged["event_type"] == "view"].groupby("unit_id").size()
    bought = pd.concat([tagged[tagged["event_type"] == "purchase"][["unit_id", "value"]], plain[["unit_id", "value"]]])
    units["clicks"] = clicks.reindex(units.index, fill_value=0).astype(float)
    units["converted"] = bought.groupby("unit_id").size().reindex(units.index, fill_value=0).gt(0).astype(float)
    units["revenue"] = bought.groupby("unit_id")["value"].sum().reindex(units.index, fill_value=0.0).astype(float)
    # covariate: spend in the pre-period, before the experiment's first exposure (CUPED)
    pre = outcomes[(outcomes["event_type"] == "purchase") & (outcomes["ts"] < start)
                   & (outcomes["ts"] >= start - pre_days * 86_400.0)]
    units["pre_spend"] = units["user_id"].map(pre.groupby("user_id")["value"].sum()).fillna(0.0).astype(float)
    units["exposures"] = units["exposures"].astype(float)
    return units.reset_index()


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
    sequential_ci: tuple[float, float] | None = None  # always valid, absolute effect
    sequential_lift_ci: tuple[float, float] | None = None
    significant: bool = False  # the sequential interval excludes 0


def compare(metric: str, control: Aggregates, treatment: Aggregates, name: str, covariate: str | None = "pre_spend",
            alpha: float = ALPHA, tuning_n: float = TUNING_N) -> Comparison:
    """One metric, one treatment against the control: tea-tasting's estimate (CUPED with ``covariate``
    when it varies), plus the always-valid interval."""
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
    if np.isfinite(se) and se > 0:
        lo, hi = confidence_sequence(c.effect, se, n, alpha, tuning_n)
        c.sequential_ci = (float(lo), float(hi))
        base = c.control_value
        c.sequential_lift_ci = (float(lo / base), float(hi / base)) if base > 0 else None
        c.significant = bool(lo > 0 or hi < 0)
    return c


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
        return asdict(self)


def analyse(exp: Experiment, table: pd.DataFrame, alpha: float = ALPHA, tuning_n: float = TUNING_N) -> Report:
    """The report of an experiment from its unit table (``unit_table``)."""
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
        for metric in metrics:
            comparisons.append(compare(metric, control, aggr[v.name], v.name, alpha=alpha, tuning_n=tuning_n))
    decision, reason = decide(exp, srm, comparisons)
    return Report(exp.name, exp.status, exp.metric, list(exp.guardrails), variants, srm,
                  [asdict(c) for c in comparisons], decision, reason, notes)


def decide(exp: Experiment, srm: dict, comparisons: list[Comparison]) -> tuple[str, str]:
    """invalid (SRM) > stop (a guardrail or the primary metric significantly worse) > ship (primary
    significantly better, no guardrail harmed) > keep running. Significance: the always-valid interval."""
    if srm["flagged"]:
        return "invalid", (f"sample ratio mismatch (chi-square p = {srm['pvalue']:.2g} < {SRM_ALPHA}): units per "
                           f"variant {srm['observed']} against expected {srm['expected']}; fix the assignment, "
                           "do not read the results")
    if not comparisons:
        return "keep running", "not enough units yet"
    primary = [c for c in comparisons if c.metric == exp.metric]
    harmed = [c for c in comparisons if c.metric != exp.metric and c.sequential_ci and c.sequential_ci[1] < 0]
    if harmed:
        c = harmed[0]
        return "stop", f"guardrail {c.metric} is worse under {c.treatment} (always-valid interval {_fmt(c.sequential_ci)})"
    worse = [c for c in primary if c.significant and c.effect < 0]
    if worse:
        return "stop", f"{worse[0].treatment} lowers {exp.metric} (always-valid interval {_fmt(worse[0].sequential_ci)})"
    better = [c for c in primary if c.significant and c.effect > 0]
    if better:
        best = max(better, key=lambda c: c.lift)
        return "ship", (f"{best.treatment} raises {exp.metric} by {best.lift:+.1%} (always-valid lift interval "
                        f"{_fmt(best.sequential_lift_ci, pct=True)}), no guardrail harmed")
    return "keep running", f"no significant difference in {exp.metric} yet (always-valid interval contains 0)"


def _fmt(ci, pct: bool = False) -> str:
    if ci is None:
        return "n/a"
    return f"[{ci[0]:+.2%}, {ci[1]:+.2%}]" if pct else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"
