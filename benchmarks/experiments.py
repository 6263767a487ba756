"""Experiments (issue 14): the statistics on simulated traffic with a known truth, and the cost of
logging exposures in the real server.

    python -m benchmarks.experiments [--runs 200] [--users 20000] [--days 14] [--only study,latency]

study    200 simulated A/A tests (daily peeking: false positives with the always-valid test, with a
         fixed-horizon test read every day, and read once at the end), 200 A/B tests with a true +5%
         relative lift in conversion (power, coverage of the lift's interval, CUPED's width ratio), and
         200 broken splits (45/55 configured as 50/50: SRM flags). training/experiments/simulate.py.
latency  the real BentoML server (one worker, SQLite event store) answering /recommend at 100 req/s
         open loop for 30 s, without an experiment and with one covering every shopper (every answer
         logs an exposure); p50/p99 from the planned send time, and the exposures counted in the store.

Writes benchmarks/results/experiments.json and .md (``--only`` keeps the other part's last result).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine, machine_markdown, run_loadgen, write_results


def section_study(runs: int, users: int, days: int) -> dict:
    from training.experiments.simulate import study

    out = {}
    for name, kw in (("aa", {"lift": 0.0}), ("ab_5pct", {"lift": 0.05}),
                     ("broken_split_45_55", {"lift": 0.0, "split": (0.45, 0.55), "expected_split": (0.5, 0.5)})):
        res = study(runs=runs, users=users, days=days, seed=2026, **kw).to_dict()
        out[name] = res
        print(f"[experiments] {name}: {json.dumps({k: v for k, v in res.items() if isinstance(v, float)})}", flush=True)
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
    thread commits them to SQLite (synchronous=FULL, batches)."""
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


def section_latency(rate: float = 100.0, seconds: float = 30.0) -> dict:
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
        out = {"writer": writer_cost(), "rate": rate, "seconds": seconds, "model": "the tests' ALS bundle (30 shoppers, 12 items): the model's own cost "
                                                         "is small, so the logging's share is visible"}
        with bentoml_server(home, extra_env=env, timeout=120) as url:
            out["without_experiment"] = _load(url, bodies, rate, seconds)
            store = open_experiment_log(url_db)
            store.put_experiment(Experiment(name="bench", variants=parse_variants(["control=champion", "treatment=popular"]),
                                            salt="bench"), new=True)
            time.sleep(2.0)  # the server re-reads experiments every 0.5 s here
            out["with_experiment"] = _load(url, bodies, rate, seconds)
            time.sleep(1.0)  # the writer commits within 20 ms
            out["exposures_logged"] = int(len(store.exposures("bench")))
            out["requests_with_experiment"] = out["with_experiment"]["ok"] + 50  # + the warm-up requests
            out["load_average"] = [round(x, 2) for x in __import__("os").getloadavg()]  # other work on the machine
            store.close()
    return out


def markdown(data: dict) -> str:
    lines = ["# Experiments (issue 14)", "", machine_markdown(data["machine"]), ""]
    if s := data.get("study"):
        aa, ab, srm = s["aa"], s["ab_5pct"], s["broken_split_45_55"]
        lines += [
            f"## Simulated traffic ({aa['runs']} runs of {aa['users']:,} shoppers, {aa['days']} days, analysed every day)", "",
            "| scenario | figure | value |", "|---|---|---|",
            f"| A/A | false positives, always-valid test, peeking daily | {aa['false_or_true_positive_sequential']:.1%} |",
            f"| A/A | false positives, fixed-horizon test read daily | {aa['positive_naive_peeking']:.1%} |",
            f"| A/A | false positives, fixed-horizon test read once at the end | {aa['positive_final_fixed']:.1%} |",
            f"| A/B +5% | detected by the always-valid test (any day) | {ab['false_or_true_positive_sequential']:.1%} |",
            f"| A/B +5% | detected at the end, fixed horizon | {ab['positive_final_fixed']:.1%} |",
            f"| A/B +5% | 95% lift interval covers the true +5% (last day) | {ab['coverage_final']:.1%} |",
            f"| A/B +5% | always-valid lift interval covers it | {ab['coverage_final_sequential']:.1%} |",
            f"| A/B +5% | mean estimated lift | {ab['mean_lift_estimate']:+.2%} |",
            f"| A/B +5% | CUPED interval width / plain width | {ab['cuped_width_ratio']:.3f} |",
            f"| 45/55 split configured as 50/50 | runs flagged by the SRM check (p < 0.001) | {srm['srm_flagged']:.1%} |",
            f"| A/A | runs flagged by the SRM check | {aa['srm_flagged']:.1%} |", "",
            f"Control conversion {aa['mean_conversion_control']:.3f}; the treatment's per-visit purchase multiplier "
            f"solved for a true +5% is {ab['multiplier']:.4f}. Seconds per 200-run study: "
            f"{aa['seconds']:.1f} / {ab['seconds']:.1f} / {srm['seconds']:.1f}.", ""]
    if lat := data.get("latency"):
        a, b = lat["without_experiment"], lat["with_experiment"]
        lines += [f"## Exposure logging in the server ({lat['rate']:g} req/s open loop, {lat['seconds']:g} s, /recommend)", "",
                  "| | ok | errors | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|",
                  f"| no experiment | {a['ok']} | {a['errors']} | {a['latency_ms']['p50']} | {a['latency_ms']['p99']} | {a['latency_ms']['max']} |",
                  f"| every answer under an experiment | {b['ok']} | {b['errors']} | {b['latency_ms']['p50']} | "
                  f"{b['latency_ms']['p99']} | {b['latency_ms']['max']} |", "",
                  f"Exposures in the store: {lat['exposures_logged']} for {lat['requests_with_experiment']} answers. "
                  + (f"In-process: an exposure costs the request {lat['writer']['request_side_us']} µs (request id, "
                     f"record, queue put); the writer thread commits {lat['writer']['committed_per_s']:,} exposures/s "
                     f"to SQLite ({lat['writer']['stored']:,} of {lat['writer']['exposures']:,} stored). "
                     if "writer" in lat else "")
                  + f"Load average during the run: {lat.get('load_average', 'n/a')}. "
                  f"Goal: p99 <= 15 ms with the experiment: {'met' if b['latency_ms']['p99'] <= 15 else 'NOT met'}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--only", default="study,latency")
    a = p.parse_args()
    previous = RESULTS / "experiments.json"
    data = json.loads(previous.read_text()) if previous.exists() else {}
    data["machine"] = machine()
    only = set(a.only.split(","))
    if "study" in only:
        data["study"] = section_study(a.runs, a.users, a.days)
    if "latency" in only:
        data["latency"] = section_latency()
    j, m = write_results("experiments", data, markdown(data))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
