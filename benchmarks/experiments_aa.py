"""Why A/A false positives of the group-sequential test come out above 5% on some seeds (issue 14).

    python -m benchmarks.experiments_aa [--seeds 3001-3014] [--runs 200] [--users 20000] [--days 14] [--cache DIR]

Simulates A/A studies exactly as ``training.experiments.simulate.study`` does (same draws for the same seed,
the report's code path: CUPED through tea-tasting, the chained information, gsdesign bounds, one look a day)
and keeps, for every run and look, the statistic z = effect / se that the test compares with its bound,
the bound and the information. Then it separates the possible causes of a rate above 5%:

- the test's own bookkeeping: is "significant" exactly |z| >= bound at some look;
- the marginal law of z at each look (mean 0 and variance 1 if the standard errors are right: the
  normal approximation, variance from the early looks' units, CUPED's coefficient estimated on the
  same data); the same for the fixed-horizon p-value read once at the end;
- the joint law: the correlations between looks that the design assumes (sqrt(I_j / I_k) from the
  chained information) against the correlations of z across runs;
- the type I error the runs' own bounds have under the designed law and under the empirical law (a
  multivariate normal with the empirical correlations and variances, Monte Carlo), so that a flaw of
  the design shows as a rate above 5% that sampling cannot explain;
- the observed rates over all runs with exact (Clopper-Pearson) 95% intervals.

``--cache DIR`` keeps one .npz per seed and reuses it. Writes benchmarks/results/experiments_aa.{json,md}.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, chi2

from benchmarks.common import machine, machine_markdown, write_results

ALPHA = 0.05
COMMITTED_SEED = 2026  # benchmarks/experiments.py's study


def simulate(seed: int, runs: int = 200, users: int = 20_000, days: int = 14) -> dict[str, np.ndarray]:
    """One A/A study (``simulate.study`` with lift 0, the same random draws), recording every look."""
    from training.experiments.analysis import _se_from_ci
    from training.experiments.simulate import study

    out = {k: np.zeros((runs, days)) for k in ("z", "z_plain", "bound", "info", "pvalue", "units")}
    out["significant"] = np.zeros((runs, days), bool)

    def record(r: int, day: int, c, look, n: int) -> None:
        out["z"][r, day] = c.effect / _se_from_ci(*c.effect_ci, n)
        if c.effect_ci_plain is not None:
            lo, hi = c.effect_ci_plain
            out["z_plain"][r, day] = (lo + hi) / 2 / _se_from_ci(lo, hi, n)
        out["bound"][r, day], out["info"][r, day] = look.bound, look.info
        out["pvalue"][r, day], out["units"][r, day], out["significant"][r, day] = c.pvalue, n, c.significant

    study(runs=runs, users=users, days=days, lift=0.0, seed=seed, alpha=ALPHA, on_look=record)
    return out


def interval(k: int, n: int) -> dict:
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
    return {"count": int(k), "runs": int(n), "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def crossing_rate(corr: np.ndarray, bounds: np.ndarray, var: np.ndarray | None = None, draws: int = 400_000,
                  seed: int = 1) -> float:
    """P(|Z_k| >= bound_k at some look) for Z multivariate normal with ``corr`` (and variances ``var``)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(corr + 1e-12 * np.eye(len(corr)))
    scale = np.sqrt(var) if var is not None else 1.0
    hits = 0
    for _ in range(draws // 50_000):
        z = rng.standard_normal((50_000, len(corr))) @ chol.T * scale
        hits += int((np.abs(z) >= bounds).any(axis=1).sum())
    return hits / draws


def analyse(d: dict[str, np.ndarray], draws: int = 400_000) -> dict:
    z, bound, info, sig, p = d["z"], d["bound"], d["info"], d["significant"], d["pvalue"]
    n, days = z.shape
    var = z.var(axis=0, ddof=1)
    last = z[:, -1]
    # the design's correlation of looks j < k: sqrt(I_j / I_k), per run, averaged
    lo, hi = np.minimum(info[:, :, None], info[:, None, :]), np.maximum(info[:, :, None], info[:, None, :])
    designed = np.sqrt(lo / hi).mean(axis=0)
    empirical = np.corrcoef(z.T)
    median_bounds = np.median(bound, axis=0)
    first = np.argmax(sig, axis=1)[sig.any(axis=1)]
    return {
        "runs": n,
        "group_sequential": interval(sig.any(axis=1).sum(), n),
        "fixed_once": interval((p[:, -1] < ALPHA).sum(), n),
        "fixed_daily": interval((p < ALPHA).any(axis=1).sum(), n),
        "significant_is_abs_z_over_bound": bool(np.array_equal(np.abs(z) >= bound, sig)),
        "first_rejection_by_look": np.bincount(first, minlength=days).tolist(),
        "z_mean_by_look": z.mean(axis=0).round(4).tolist(),
        "z_var_by_look": var.round(4).tolist(),
        "z_var_se": float(np.sqrt(2 / (n - 1))),
        # variance of the last look's z, with a chi-square 95% interval (a var of 1 means right standard errors)
        "z_var_last": float(var[-1]),
        "z_var_last_ci95": [float((n - 1) * var[-1] / chi2.ppf(0.975, n - 1)), float((n - 1) * var[-1] / chi2.ppf(0.025, n - 1))],
        "z_plain_var_last": float(d["z_plain"][:, -1].var(ddof=1)),
        "share_abs_z_last_over_1_96": float((np.abs(last) >= 1.959964).mean()),
        "median_bounds": median_bounds.round(4).tolist(),
        "corr_consecutive_designed": np.diag(designed, 1).round(4).tolist(),
        "corr_consecutive_empirical": np.diag(empirical, 1).round(4).tolist(),
        "corr_first_to_k_designed": designed[0].round(4).tolist(),
        "corr_first_to_k_empirical": empirical[0].round(4).tolist(),
        "type1_designed_law": crossing_rate(designed, median_bounds, draws=draws),
        "type1_empirical_corr": crossing_rate(empirical, median_bounds, draws=draws),
        "type1_empirical_corr_and_var": crossing_rate(empirical, median_bounds, var, draws=draws),
        "units_first_look_mean": float(d["units"][:, 0].mean()),
    }


def seeds_arg(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def pct(x: float) -> str:
    return f"{x:.1%}"


def markdown(data: dict) -> str:
    all_, committed = data["all"], data["committed_seed"]

    def rate(r):
        return f"{pct(r['rate'])} ({r['count']}/{r['runs']}; 95% CI {pct(r['ci95'][0])}-{pct(r['ci95'][1])})"

    lines = ["# A/A false positives of the group-sequential test: where they come from (issue 14)", "",
             machine_markdown(data["machine"]), "",
             f"`python -m benchmarks.experiments_aa --seeds {data['seeds_arg']}` plus the committed seed "
             f"{COMMITTED_SEED}: {data['runs_per_seed']} A/A runs per seed of {data['users']:,} shoppers over "
             f"{data['days']} days, read every day (the same draws and code path as `simulate.study`; seed 2026 "
             f"gives the committed study's figures). Simulated in this run: {data.get('simulated', [])} "
             f"({data['seconds']:.0f} s); the other seeds were read from `--cache`, written by an earlier run of "
             "the same simulation.", "",
             "| | committed seed 2026 | other seeds | all |", "|---|---|---|---|"]
    other = data["other_seeds"]
    for key, label in (("group_sequential", "false positives, group-sequential, read daily"),
                       ("fixed_once", "false positives, fixed test read once at the end"),
                       ("fixed_daily", "false positives, fixed test read daily")):
        lines.append(f"| {label} | {rate(committed[key])} | {rate(other[key])} | {rate(all_[key])} |")
    lines.append(f"| variance of z at the last look (1 if the standard errors are right) | "
                 f"{committed['z_var_last']:.3f} ({committed['z_var_last_ci95'][0]:.3f}-{committed['z_var_last_ci95'][1]:.3f}) | "
                 f"{other['z_var_last']:.3f} ({other['z_var_last_ci95'][0]:.3f}-{other['z_var_last_ci95'][1]:.3f}) | "
                 f"{all_['z_var_last']:.3f} ({all_['z_var_last_ci95'][0]:.3f}-{all_['z_var_last_ci95'][1]:.3f}) |")
    lines.append(f"| type I error of the runs' bounds under the designed law / the empirical correlations / "
                 f"the empirical correlations and variances (Monte Carlo, 400k draws) | "
                 f"{pct(committed['type1_designed_law'])} / {pct(committed['type1_empirical_corr'])} / "
                 f"{pct(committed['type1_empirical_corr_and_var'])} | {pct(other['type1_designed_law'])} / "
                 f"{pct(other['type1_empirical_corr'])} / {pct(other['type1_empirical_corr_and_var'])} | "
                 f"{pct(all_['type1_designed_law'])} / {pct(all_['type1_empirical_corr'])} / "
                 f"{pct(all_['type1_empirical_corr_and_var'])} |")
    lines += ["", f"All {all_['runs']:,} runs:", "",
              f"- significant exactly when |z| >= the look's bound: {all_['significant_is_abs_z_over_bound']};",
              f"- first rejection by look: {all_['first_rejection_by_look']};",
              f"- mean z by look: {all_['z_mean_by_look']};",
              f"- variance of z by look (standard error of each {all_['z_var_se']:.3f}): {all_['z_var_by_look']};",
              f"- variance of z without CUPED at the last look: {all_['z_plain_var_last']:.3f};",
              f"- median bounds by look: {all_['median_bounds']};",
              f"- correlation of consecutive looks, designed (chained information): {all_['corr_consecutive_designed']};",
              f"- the same across runs: {all_['corr_consecutive_empirical']};",
              f"- correlation of look 1 with look k, designed: {all_['corr_first_to_k_designed']};",
              f"- the same across runs: {all_['corr_first_to_k_empirical']};",
              f"- units (both arms) at the first look: {all_['units_first_look_mean']:,.0f} on average.", ""]
    lines += ["Per seed (group-sequential / fixed once): " + ", ".join(
        f"{s}: {pct(r['group_sequential']['rate'])} / {pct(r['fixed_once']['rate'])}" for s, r in data["per_seed"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="3001-3014", help="seeds besides the committed 2026, e.g. 3001-3014 or 1,5,9")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--cache", type=Path, default=None, help="keep/reuse one .npz per seed here")
    a = p.parse_args()
    seeds = [COMMITTED_SEED] + [s for s in seeds_arg(a.seeds) if s != COMMITTED_SEED]
    per, t0, simulated = {}, time.perf_counter(), []
    for seed in seeds:
        path = a.cache / f"aa_{seed}_{a.runs}x{a.users}x{a.days}.npz" if a.cache else None
        if path is not None and path.exists():
            per[seed] = dict(np.load(path))
        else:
            per[seed] = simulate(seed, a.runs, a.users, a.days)
            simulated.append(seed)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **per[seed])
        print(f"[experiments_aa] seed {seed}: group-sequential {per[seed]['significant'].any(axis=1).mean():.1%}, "
              f"fixed once {(per[seed]['pvalue'][:, -1] < ALPHA).mean():.1%}", flush=True)

    def pooled(keys):
        return {k: np.concatenate([per[s][k] for s in keys]) for k in per[seeds[0]]}

    data = {"machine": machine(), "seeds_arg": a.seeds, "seeds": seeds, "runs_per_seed": a.runs, "users": a.users,
            "days": a.days, "seconds": time.perf_counter() - t0, "simulated": simulated,
            "committed_seed": analyse(per[COMMITTED_SEED]), "other_seeds": analyse(pooled(seeds[1:])),
            "all": analyse(pooled(seeds)),
            "per_seed": {str(s): {"group_sequential": interval(per[s]["significant"].any(axis=1).sum(), a.runs),
                                  "fixed_once": interval((per[s]["pvalue"][:, -1] < ALPHA).sum(), a.runs)}
                         for s in seeds}}
    j, m = write_results("experiments_aa", data, markdown(data))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
