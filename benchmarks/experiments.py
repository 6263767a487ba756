"""Experiments (issue 14): the statistics on simulated traffic with a known truth, and the cost of
logging exposures in the real server.

    python -m benchmarks.experiments [--runs 200] [--users 20000] [--days 14] [--only study,latency,report]
        [--rounds 3] [--seconds 20] [--profile-seconds 15]

study    200 simulated A/A tests (daily peeking: false positives with the group-sequential test over the
         14 planned days, with the open-ended confidence sequence, with a fixed-horizon test read every
         day, and read once at the end), 200 A/B tests with a true +5%
         relative lift in conversion (power, coverage of the lift's interval, CUPED's width ratio), and
         200 broken splits (45/55 configured as 50/50: SRM flags). training/experiments/simulate.py.
latency  the real BentoML server (one worker, SQLite event store) answering /recommend at 100 req/s
         open loop, in rounds of a run without an experiment then one with an experiment covering every
         shopper (every answer logs an exposure); p50/p99 from the planned send time, the exposures
         counted in the store, `uptime` before and after, and a py-spy profile of the worker.
report   a running 28-day experiment of 100k shoppers in SQLite: its report from the log read whole and from
         the rows the marketers' page keeps between loads, side by side in rounds, compared whole.

Writes benchmarks/results/experiments.json and .md (``--only`` keeps the other part's last result).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, load_brief, machine, machine_markdown, run_loadgen, summary, write_results


def section_study(runs: int, users: int, days: int, replicates: int = 4) -> dict:
    from training.experiments.simulate import study

    out = {}
    for name, kw in (("aa", {"lift": 0.0}), ("ab_5pct", {"lift": 0.05}),
                     ("broken_split_45_55", {"lift": 0.0, "split": (0.45, 0.55), "expected_split": (0.5, 0.5)})):
        res = study(runs=runs, users=users, days=days, seed=2026, **kw).to_dict()
        out[name] = res
        print(f"[experiments] {name}: {json.dumps({k: v for k, v in res.items() if isinstance(v, float)})}", flush=True)
    # the A/A again with other seeds: a rate from 200 runs has a standard error of 1.5 points at 5%
    reps = [out["aa"]] + [study(runs=runs, users=users, days=days, seed=seed, lift=0.0).to_dict()
                          for seed in range(2027, 2027 + replicates)]
    out["aa_replicates"] = {
        "seeds": list(range(2026, 2027 + replicates)),
        "group_sequential": [r["false_or_true_positive_sequential"] for r in reps],
        "fixed_once": [r["positive_final_fixed"] for r in reps],
        "fixed_daily": [r["positive_naive_peeking"] for r in reps],
        "confidence_sequence": [r["positive_confidence_sequence"] for r in reps],
        "runs": runs * len(reps)}
    print(f"[experiments] aa replicates: {json.dumps(out['aa_replicates'])}", flush=True)
    return out


def _bodies(path: Path, n: int = 200) -> Path:
    users = [f"u{i % 30}" for i in range(n // 2)] + [f"shopper-{i}" for i in range(n // 2)]
    path.write_text(json.dumps([{"user_id": u, "k": 10} for u in users]))
    return path


def _load(url: str, bodies: Path, rate: float, seconds: float) -> dict:
    res = run_loadgen(url, "/recommend", bodies, seconds, rate, extra=("--warmup", "50"))
    if "failed" in res:
        raise RuntimeError(res["failed"])
    return res


def writer_cost(n: int = 20_000) -> dict:
    """What one exposure costs the request (a request id, the record, a queue put) and how fast the writer
    thread commits them to SQLite (batches; exposures commit with synchronous=NORMAL under WAL)."""
    import uuid

    from features.exposures import Exposure, ExposureWriter, open_experiment_log

    with tempfile.TemporaryDirectory() as tmp:
        store = open_experiment_log(f"sqlite:///{tmp}/events.db")
        writer = ExposureWriter(store)
        items = tuple(f"i{i}" for i in range(10))
        t0 = time.perf_counter()
        for i in range(n):
            writer.put(Exposure(uuid.uuid4().hex, "bench", "treatment", f"u{i}", f"u{i}", "recommend", items, time.time()))
        t1 = time.perf_counter()
        writer.flush(timeout=120)
        t2 = time.perf_counter()
        stored = len(store.exposures("bench"))
        writer.close()
        store.close()
    return {"exposures": n, "request_side_us": round((t1 - t0) / n * 1e6, 2),
            "committed_per_s": round(n / (t2 - t0)), "stored": stored}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _profile_worker(home: Path, url: str, bodies: Path, rate: float, seconds: float, out_dir: Path) -> dict:
    """py-spy samples the service worker while it answers under the experiment (serving_floors' summary)."""
    from benchmarks.serving_floors import summarise_profile, worker_pids

    pids = worker_pids(home)
    if not pids:
        return {"error": "no service worker found"}
    raw = out_dir / "profile.txt"
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pids[-1]), "--duration",
                            str(int(seconds)), "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    run = _load(url, bodies, rate, seconds - 2)
    out, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {out[-800:]}"}
    summary = summarise_profile(raw, top=15)
    return {"run": run, "samples": summary["samples"], "top_ours": summary["top_ours"], "top_self": summary["top_self"]}


def section_latency(rate: float = 100.0, seconds: float = 20.0, rounds: int = 3, profile_seconds: float = 15.0) -> dict:
    """``rounds`` pairs of open-loop runs, without then with the experiment (toggled in the store; the server
    re-reads it every 0.5 s), so that both see the same machine; then a py-spy profile under the experiment."""
    from features.experiments import Experiment, parse_variants
    from features.exposures import open_experiment_log
    from tests.server import bentoml_server
    from tests.test_service import publish_test_bundle

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        publish_test_bundle(home, Path(tmp) / "bundle")
        url_db = f"sqlite:///{home}/events.db"
        env = {"SHOPREC_EVENTS_URL": url_db, "SHOPREC_EXPERIMENTS_REFRESH_S": "0.5", "SHOPREC_RATE_PER_KEY": "1000000/second"}
        bodies = _bodies(Path(tmp) / "bodies.json")
        out = {"uptime_before": _uptime(), "writer": writer_cost(), "rate": rate, "seconds": seconds, "rounds": [],
               "model": "the tests' ALS bundle (30 shoppers, 12 items): the model's own cost is small, so the "
                        "logging's share is visible"}
        exp = Experiment(name="bench", variants=parse_variants(["control=champion", "treatment=popular"]), salt="bench")
        with bentoml_server(home, extra_env=env, timeout=120) as url:
            store = open_experiment_log(url_db)
            answered = 0
            for i in range(rounds):
                row = {"load_before": [round(x, 2) for x in os.getloadavg()]}
                if i:
                    store.put_experiment(exp.model_copy(update={"status": "stopped"}))
                    time.sleep(1.5)
                row["without_experiment"] = _load(url, bodies, rate, seconds)
                store.put_experiment(exp, new=(i == 0))
                time.sleep(1.5)
                row["with_experiment"] = _load(url, bodies, rate, seconds)
                answered += row["with_experiment"]["ok"] + 50  # + the warm-up requests
                row["load_after"] = [round(x, 2) for x in os.getloadavg()]
                out["rounds"].append(row)
                print(f"[experiments] latency round {i + 1}: without {load_brief(row['without_experiment'])}; "
                      f"with {load_brief(row['with_experiment'])}; load {row['load_after']}", flush=True)
            time.sleep(1.0)  # the writer commits within 20 ms
            out["exposures_logged"] = int(len(store.exposures("bench")))
            out["requests_with_experiment"] = answered
            if profile_seconds > 0:
                out["profile"] = _profile_worker(home, url, bodies, rate, profile_seconds, Path(tmp))
            store.close()
        for kind in ("without_experiment", "with_experiment"):
            out[f"{kind}_p99"] = summary([r[kind]["latency_ms"]["p99"] for r in out["rounds"]])
            out[f"{kind}_p50"] = summary([r[kind]["latency_ms"]["p50"] for r in out["rounds"]])
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        out["uptime_after"] = _uptime()
    return out


def section_report(users: int = 100_000, days: int = 28, rounds: int = 3, new_per_round: int = 500) -> dict:
    """A running experiment's report as the marketers' page builds it on each load: from the log read whole
    (``build_report``) and from the rows kept since the last load (``report_rows``), side by side each round
    after ``new_per_round`` more exposures, the two reports compared whole (JSON)."""
    from features.experiments import Experiment, parse_variants
    from features.exposures import Exposure, open_experiment_log
    from training.experiments.report import build_report, report_rows
    from training.experiments.simulate import traffic

    exp = Experiment(name="big", variants=parse_variants(["control=champion", "treatment=popular"], None), salt="big",
                     planned_days=days + 7)
    with tempfile.TemporaryDirectory(prefix="shoprec-report-") as tmp:
        log = open_experiment_log(f"sqlite:///{tmp}/events.db")
        log.put_experiment(exp, new=True)
        start = time.time() - days * 86_400.0
        t = time.perf_counter()
        ex, out = traffic(exp, users=users, days=days, lift=0.05, seed=1, start=start)
        log.add_exposures(ex)
        log.add_outcomes(out)
        made = time.perf_counter() - t
        rows = report_rows(exp)
        t = time.perf_counter()
        build_report(exp, log, rows=rows)
        first = time.perf_counter() - t
        out_rounds = []
        for r in range(rounds):
            log.add_exposures([Exposure(f"new{r}-{i}", exp.name, "control", f"sim-1-{i:06d}", f"sim-1-{i:06d}", "recommend",
                                        ("i",), time.time()) for i in range(new_per_round)])
            at = time.time()
            timed = {}
            for kind in (("whole", "kept") if r % 2 == 0 else ("kept", "whole")):
                t = time.perf_counter()
                rep = build_report(exp, log, as_of=at, **({"rows": rows} if kind == "kept" else {}))
                timed[kind] = (time.perf_counter() - t, json.dumps(rep.to_dict(), sort_keys=True, default=str))
            out_rounds.append({"whole_s": round(timed["whole"][0], 2), "kept_s": round(timed["kept"][0], 2),
                               "same_report": timed["whole"][1] == timed["kept"][1], "load_after": _uptime()})
        log.close()
    return {"users": users, "days": days, "exposures": len(ex), "outcomes": len(out), "made_s": round(made, 1),
            "first_load_s": round(first, 2), "new_per_round": new_per_round, "rounds": out_rounds}


def _binomial_ci(rate: float, runs: int) -> str:
    """The exact (Clopper-Pearson) 95% interval of a rate measured on ``runs`` runs."""
    from scipy.stats import binomtest

    ci = binomtest(int(round(rate * runs)), int(runs)).proportion_ci(confidence_level=0.95, method="exact")
    return f"{ci.low:.1%}-{ci.high:.1%}"


def markdown(data: dict) -> str:
    lines = ["# Experiments (issue 14)", "", machine_markdown(data["machine"]), ""]
    if s := data.get("study"):
        aa, ab, srm = s["aa"], s["ab_5pct"], s["broken_split_45_55"]
        ok = 0.03 <= aa["false_or_true_positive_sequential"] <= 0.07
        lines += [
            f"## Simulated traffic ({aa['runs']} runs of {aa['users']:,} shoppers, {aa['days']} days, analysed every day)", "",
            f"The sequential test is the report's: group-sequential, {aa.get('spending', 'obrien_fleming')} alpha spending over "
            f"the {aa.get('planned_days', aa['days'])} planned days, one look a day (training/experiments/sequential.py); "
            "the confidence sequence is the open-ended mode (no planned horizon).", "",
            "| scenario | figure | value |", "|---|---|---|",
            f"| A/A | false positives, group-sequential test, peeking daily (goal 3-7%) | "
            f"{aa['false_or_true_positive_sequential']:.1%} ({'met' if ok else 'NOT met'}; exact 95% binomial interval "
            f"{_binomial_ci(aa['false_or_true_positive_sequential'], aa['runs'])}) |",
            f"| A/A | false positives, confidence sequence (open-ended), peeking daily | {aa['positive_confidence_sequence']:.1%} |",
            f"| A/A | false positives, fixed-horizon test read daily | {aa['positive_naive_peeking']:.1%} |",
            f"| A/A | false positives, fixed-horizon test read once at the end | {aa['positive_final_fixed']:.1%} |",
            *([f"| A/A, {rep['runs']:,} runs ({len(rep['seeds'])} seeds x {aa['runs']}) | false positives: group-sequential / "
               f"fixed horizon read once / read daily / confidence sequence | "
               f"{np.mean(rep['group_sequential']):.1%} / {np.mean(rep['fixed_once']):.1%} / {np.mean(rep['fixed_daily']):.1%} / "
               f"{np.mean(rep['confidence_sequence']):.1%} (group-sequential exact 95% binomial interval "
               f"{_binomial_ci(np.mean(rep['group_sequential']), rep['runs'])}, "
               f"{'within' if 0.03 <= np.mean(rep['group_sequential']) <= 0.07 else 'outside'} 3-7%; per seed: "
               f"{', '.join(f'{x:.1%}' for x in rep['group_sequential'])}; fixed once: "
               f"{', '.join(f'{x:.1%}' for x in rep['fixed_once'])}) |"] if (rep := s.get("aa_replicates")) else []),
            f"| A/A | group-sequential false positives by day | "
            f"{', '.join(f'{x:.1%}' for x in aa['positive_sequential_by_day'])} |",
            f"| A/B +5% | detected by the group-sequential test (any day; goal >= 80%) | {ab['false_or_true_positive_sequential']:.1%} |",
            f"| A/B +5% | detected by the confidence sequence (any day) | {ab['positive_confidence_sequence']:.1%} |",
            f"| A/B +5% | detected at the end, fixed horizon | {ab['positive_final_fixed']:.1%} |",
            f"| A/B +5% | group-sequential detections by day | "
            f"{', '.join(f'{x:.0%}' for x in ab['positive_sequential_by_day'])} |",
            f"| A/B +5% | 95% lift interval covers the true +5% (last day) | {ab['coverage_final']:.1%} |",
            f"| A/B +5% | group-sequential lift interval covers it (last day) | {ab['coverage_final_sequential']:.1%} |",
            f"| A/B +5% | confidence-sequence lift interval covers it | {ab['coverage_final_confidence_sequence']:.1%} |",
            f"| A/B +5% | mean estimated lift | {ab['mean_lift_estimate']:+.2%} |",
            f"| A/B +5% | CUPED interval width / plain width | {ab['cuped_width_ratio']:.3f} |",
            f"| 45/55 split configured as 50/50 | runs flagged by the SRM check (p < 0.001) | {srm['srm_flagged']:.1%} |",
            f"| A/A | runs flagged by the SRM check | {aa['srm_flagged']:.1%} |", "",
            f"Control conversion {aa['mean_conversion_control']:.3f}; the treatment's per-visit purchase multiplier "
            f"solved for a true +5% is {ab['multiplier']:.4f}. Seconds per {aa['runs']}-run study: "
            f"{aa['seconds']:.1f} / {ab['seconds']:.1f} / {srm['seconds']:.1f}. With {aa['runs']} runs a rate's "
            f"standard error is about {(0.05 * 0.95 / aa['runs']) ** 0.5:.1%} at 5%. Where an A/A rate above 5% comes "
            "from (the statistic's variance and the looks' correlations against the design, over many more runs): "
            "`python -m benchmarks.experiments_aa`, benchmarks/results/experiments_aa.md.", ""]
    if lat := data.get("latency"):
        if "rounds" in lat:
            p99 = lat["with_experiment_p99"]
            lines += [f"## Exposure logging in the server ({lat['rate']:g} req/s open loop, /recommend, "
                      f"{len(lat['rounds'])} rounds of {lat['seconds']:g} s without then with the experiment)", "",
                      f"`uptime` before: {lat['uptime_before']}; after: {lat['uptime_after']}.", "",
                      "| round | experiment | ok | errors | p50 ms | p99 ms | max ms | load average (1, 5, 15 min) after |",
                      "|---|---|---|---|---|---|---|---|"]
            for i, r in enumerate(lat["rounds"], 1):
                for kind, label in (("without_experiment", "no"), ("with_experiment", "every answer")):
                    m = r[kind]
                    lines.append(f"| {i} | {label} | {m['ok']} | {m['errors']} | {m['latency_ms']['p50']} | "
                                 f"{m['latency_ms']['p99']} | {m['latency_ms']['max']} | {r['load_after']} |")
            lines += ["", f"Median p99 over the rounds: {lat['without_experiment_p99']['median']} ms without, "
                      f"{p99['median']} ms with the experiment (p50 {lat['without_experiment_p50']['median']} / "
                      f"{lat['with_experiment_p50']['median']} ms). Exposures in the store: {lat['exposures_logged']} for "
                      f"{lat['requests_with_experiment']} answers under the experiment. In-process: an exposure costs the "
                      f"request {lat['writer']['request_side_us']} µs (request id, record, queue put); the writer thread "
                      f"commits {lat['writer']['committed_per_s']:,} exposures/s to SQLite ({lat['writer']['stored']:,} of "
                      f"{lat['writer']['exposures']:,} stored). Goal: p99 <= 15 ms with the experiment (median of the "
                      f"rounds): {'met' if p99['median'] <= 15 else 'NOT met'}.", ""]
            if prof := lat.get("profile"):
                if "error" in prof:
                    lines += [f"Profile: {prof['error']}", ""]
                else:
                    lines += [f"Where the worker's time goes under the experiment (py-spy, {prof['samples']:,} samples at "
                              f"200 Hz over {lat['rate']:g} req/s; the run: {load_brief(prof['run'])}):", "",
                              "| our function (inclusive) | share of samples |", "|---|---|"]
                    lines += [f"| `{r['frame']}` | {r['share']:.1%} |" for r in prof["top_ours"][:10]]
                    lines += ["", "| own time (self) | share |", "|---|---|"]
                    lines += [f"| `{r['frame']}` | {r['share']:.1%} |" for r in prof["top_self"][:8]]
                    lines.append("")
        else:  # the single-round format of earlier runs
            a, b = lat["without_experiment"], lat["with_experiment"]
            lines += [f"## Exposure logging in the server ({lat['rate']:g} req/s open loop, {lat['seconds']:g} s)", "",
                      f"p99 {a['latency_ms']['p99']} ms without, {b['latency_ms']['p99']} ms with the experiment; "
                      f"exposures {lat['exposures_logged']} for {lat['requests_with_experiment']} answers; load average "
                      f"{lat.get('load_average', 'n/a')} (one round, before the rounds and the profile were added).", ""]
    if rep := data.get("report"):
        whole, kept = [r["whole_s"] for r in rep["rounds"]], [r["kept_s"] for r in rep["rounds"]]
        lines += [f"## A running experiment's report, as the marketers' page builds it on each load ({rep['users']:,} "
                  f"shoppers, {rep['days']} days: {rep['exposures']:,} exposures, {rep['outcomes']:,} outcomes in SQLite)", "",
                  "Each round logs " + f"{rep['new_per_round']} more exposures, then builds the report from the log read "
                  "whole and from the rows the page kept since the last load (`report_rows`), in alternating order, "
                  f"and compares the two reports whole. First load (everything read): {rep['first_load_s']} s.", "",
                  "| round | read whole, s | kept rows + new ones, s | same report | load average after |", "|---|---|---|---|---|"]
        lines += [f"| {i} | {r['whole_s']} | {r['kept_s']} | {r['same_report']} | {r['load_after']} |"
                  for i, r in enumerate(rep["rounds"], 1)]
        lines += ["", f"Median {np.median(whole):.2f} s read whole, {np.median(kept):.2f} s from kept rows.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--only", default="study,latency,report", help="study, latency, report (comma-separated)")
    p.add_argument("--replicates", type=int, default=4, help="study: the A/A again with this many other seeds")
    p.add_argument("--rounds", type=int, default=3, help="latency: pairs of runs without/with the experiment")
    p.add_argument("--seconds", type=float, default=20.0, help="latency: seconds per run")
    p.add_argument("--profile-seconds", type=float, default=15.0, help="latency: py-spy the worker this long (0: no)")
    a = p.parse_args()
    previous = RESULTS / "experiments.json"
    data = json.loads(previous.read_text()) if previous.exists() else {}
    data["machine"] = machine()
    only = set(a.only.split(","))
    if "study" in only:
        data["study"] = section_study(a.runs, a.users, a.days, a.replicates)
    if "latency" in only:
        data["latency"] = section_latency(seconds=a.seconds, rounds=a.rounds, profile_seconds=a.profile_seconds)
    if "report" in only:
        data["report"] = section_report(rounds=a.rounds)
    j, m = write_results("experiments", data, markdown(data))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
