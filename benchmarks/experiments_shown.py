"""Experiments whose effect comes from what the arms show (issue 14): the report against the truth.

    python -m benchmarks.experiments_shown [--preset medium] [--runs 100] [--days 14] [--boost-days 14]

A synthetic shop (``shoprec generate --preset``, kept with its truth) and a champion fitted on all of it (ALS,
64 factors: a fixed recipe, so the figures do not move with the search); its shoppers seen in the last 60
days. Each scenario is an experiment of ``training/experiments/shown.py``: every shopper is shown their arm's
real answer (the champion's storefront, or the popular / trending policy as the service builds it) and buys
shown items at the rates of the shop's truth, so the true lift follows from the answers, not from a knob:

- A/A: control and treatment both the champion (true lift 0): false positives of the group-sequential test
  read at the end of every day (as a marketer reading the daily report would ship at the first crossing), and
  of the fixed test read once at the end;
- champion against the popular policy and against the trending policy (distinct buyers over the shop's last
  7 days): how often the test finds the true difference, and how often the final 95% interval of the lift
  (CUPED) covers the truth.

Each run has its own salt (a new assignment) and seed, its own SQLite event store, and is read by
``build_report`` exactly as ``shoprec experiment report`` reads it. Writes
benchmarks/results/experiments_shown.{json,md}.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from benchmarks.common import machine, machine_markdown, write_results

SCENARIOS = {"A/A": "champion", "popular": "popular", "trending": "trending"}


def shop_and_arms(preset: str, work: Path, factors: int = 64):
    """The generated shop, its truth, its active shoppers and a storefront per arm."""
    from features.synthetic.config import ShopConfig
    from features.synthetic.generate import generate_shop
    from features.synthetic.truth import load_truth
    from training.config import Candidate, TrainConfig
    from training.experiments.policies import policy_store, popularity, trending_counts, trending_scores
    from training.experiments.simulate import shoppers_from_shop
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig
    from training.storefront import Storefront

    out = work / preset
    generate_shop(ShopConfig.preset(preset), out)
    orders, events, items = (pd.read_parquet(out / f"{t}.parquet") for t in ("orders", "events", "items"))
    bundle = fit_bundle(Candidate(name="als", model=ALSConfig(factors=factors, iterations=15)), TrainConfig(), events,
                        orders, {"run_id": "benchmark"}, items=items)
    arms = {"champion": Storefront(bundle, approximate=True),
            "popular": policy_store(bundle, "popular", popularity(bundle)),
            "trending": policy_store(bundle, "trending", trending_scores(bundle, trending_counts(orders)))}
    return (load_truth(out / "truth"), shoppers_from_shop(events, orders), arms,
            dict(zip(items["item_id"], items["price"].astype(float))))


def one_run(exp, world, seed: int, shoppers, work: Path) -> dict:
    """One experiment's traffic in its own event store, read at the end of each day and at the horizon."""
    from features.exposures import open_experiment_log
    from training.experiments.analysis import DAY_S
    from training.experiments.report import build_report
    from training.experiments.shown import draw

    start = pd.Timestamp("2026-01-05", tz="UTC").timestamp()
    exposures, outcomes = draw(exp, world, seed=seed, start=start, pre_purchases=shoppers.pre_purchases)
    with tempfile.TemporaryDirectory(dir=work) as d:
        log = open_experiment_log(f"sqlite:///{d}/events.db")
        try:
            log.put_experiment(exp, new=True)
            log.add_outcomes(outcomes)
            log.add_exposures(exposures)
            first = min(e.ts for e in exposures)
            daily = []
            for day in range(1, world.days + 1):
                rep = build_report(exp, log, as_of=first + day * DAY_S)
                c = next((c for c in rep.comparisons if c["metric"] == "conversion"), None)
                daily.append(bool(c and c["significant"]))
            final = build_report(exp, log, as_of=first + world.days * DAY_S + 1)
        finally:
            log.close()
    c = next(c for c in final.comparisons if c["metric"] == "conversion")
    lo, hi = c["lift_ci"]
    return {"units": sum(v["units"] for v in final.variants), "lift": c["lift"], "lift_ci": [lo, hi],
            "covers": bool(lo <= world.truth.lift <= hi), "sequential_any_day": any(daily),
            "first_day_significant": (daily.index(True) + 1) if any(daily) else None,
            "fixed_final": bool(c["pvalue"] < 0.05), "cuped_width_ratio": c["cuped_width_ratio"],
            "decision": final.decision, "srm_flagged": bool(final.srm["flagged"])}


def rate(flags: list[bool]) -> dict:
    k, n = int(sum(flags)), len(flags)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact") if n else None
    return {"count": k, "runs": n, "rate": k / n if n else None, "ci95": [float(ci.low), float(ci.high)] if ci else None}


def main() -> None:
    from features.experiments import Experiment, parse_variants
    from training.experiments.shown import ShownModel, prepare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="medium")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--boost-days", type=float, default=14.0)
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    a = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shoprec-shown-") as tmp:
        work = Path(tmp)
        truth, shoppers, arms, prices = shop_and_arms(a.preset, work)
        setup_s = time.perf_counter() - t0
        print(f"shop {a.preset}: {len(shoppers.ids):,} shoppers, setup {setup_s:.0f} s", flush=True)
        results = {}
        for name in a.only:
            treatment = SCENARIOS[name]
            world = prepare(truth, shoppers.ids, {"control": arms["champion"], "treatment": arms[treatment]}, prices,
                            "control", "treatment", a.days, ShownModel(boost_days=a.boost_days))
            runs = []
            t = time.perf_counter()
            for r in range(a.runs):
                exp = Experiment(name=f"shown-{r}", salt=f"shown-{name}-{r}", planned_days=a.days,
                                 variants=parse_variants(["control=champion", f"treatment={treatment}"]))
                runs.append(one_run(exp, world, seed=1000 + r, shoppers=shoppers, work=work))
            results[name] = {
                "treatment_arm": treatment, "truth": world.truth.to_dict(),
                "units_median": float(np.median([x["units"] for x in runs])),
                "sequential_any_day": rate([x["sequential_any_day"] for x in runs]),
                "fixed_final": rate([x["fixed_final"] for x in runs]),
                "covers": rate([x["covers"] for x in runs]),
                "mean_lift": float(np.mean([x["lift"] for x in runs])),
                "cuped_width_ratio": float(np.mean([x["cuped_width_ratio"] for x in runs if x["cuped_width_ratio"]])),
                "srm_flagged": rate([x["srm_flagged"] for x in runs]),
                "decisions": pd.Series([x["decision"] for x in runs]).value_counts().to_dict(),
                "seconds": round(time.perf_counter() - t, 1), "runs": runs}
            s = results[name]
            print(f"{name}: true lift {s['truth']['lift']:+.3f}, detected {s['sequential_any_day']['rate']:.2f}, "
                  f"covers {s['covers']['rate']:.2f}, mean lift {s['mean_lift']:+.3f}, {s['seconds']} s", flush=True)
    data = {"machine": machine(), "preset": a.preset, "runs": a.runs, "days": a.days, "boost_days": a.boost_days,
            "shoppers": len(shoppers.ids), "champion": "ALS, 64 factors, 15 iterations (fixed recipe)",
            "setup_seconds": round(setup_s, 1), "scenarios": results, "seconds": round(time.perf_counter() - t0, 1)}
    j, m = write_results("experiments_shown", data, markdown(data))
    print(f"wrote {j} and {m}")


def pct(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f}% ({r['count']} of {r['runs']}; 95% {100 * lo:.1f}-{100 * hi:.1f}%)"


def markdown(data: dict) -> str:
    lines = ["# Experiments decided by what the arms show (`python -m benchmarks.experiments_shown`)", "",
             machine_markdown(data["machine"]), "",
             f"Shop: `{data['preset']}` preset, {data['shoppers']:,} shoppers seen in its last 60 days; champion: "
             f"{data['champion']}. {data['runs']} runs per scenario of {data['days']} days (a new salt and seed each, "
             f"its own event store, read by `build_report` at the end of every day and at the horizon); a shown item "
             f"is bought with probability 1 - exp(-{data['boost_days']:g} x the shopper's true expected purchases of it "
             f"per day). Whole run {data['seconds'] / 60:.1f} min (setup {data['setup_seconds']:.0f} s).", "",
             "| scenario | true conversion control / treatment | true lift | units per run (median) | "
             "group-sequential, any daily look | fixed test at the end | 95% lift interval covers the truth | "
             "mean reported lift | CUPED width ratio | SRM flagged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in data["scenarios"].items():
        t = s["truth"]
        lines.append(f"| {name} (control = champion, treatment = {s['treatment_arm']}) | "
                     f"{100 * t['conversion']['control']:.2f}% / {100 * t['conversion']['treatment']:.2f}% | "
                     f"{100 * t['lift']:+.1f}% | {s['units_median']:,.0f} | {pct(s['sequential_any_day'])} | "
                     f"{pct(s['fixed_final'])} | {pct(s['covers'])} | {100 * s['mean_lift']:+.1f}% | "
                     f"{s['cuped_width_ratio']:.3f} | {pct(s['srm_flagged'])} |")
    lines += ["", "A/A: the share of runs in which a test finds a difference is its false-positive rate (goal 5%); "
              "otherwise its power at this traffic. Decisions at the horizon per scenario: "
              + "; ".join(f"{n}: {s['decisions']}" for n, s in data["scenarios"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
