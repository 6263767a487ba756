"""The serving benchmark's summary (benchmarks/serving_floors.py): a saturation run in which one worker sat idle
(every connection on the other) is named, and the service / trivial ratio is given over the other runs too; the
goal stays judged on the medians of all runs."""
from __future__ import annotations

import gc

from benchmarks.serving_floors import TARGETS, one_worker_idle, summarise
from serving import collector


def run(target: str, rps: float, shares: list[float], rnd: int) -> dict:
    return {"target": target, "kind": "saturation", "round": rnd, "throughput_rps": rps, "requests": int(rps * 10),
            "errors": 0, "cpu_ms_per_request": {"server": 1.0, "client": 0.2}, "worker_cpu_shares": shares}


def rate(target: str, rnd: int) -> dict:
    return {"target": target, "kind": "rate", "round": rnd, "requests": 1500, "errors": 0,
            "latency_ms": {"p50": 2.0, "p99": 5.0}}


def test_one_worker_idle_needs_two_workers_and_a_share_under_a_tenth():
    assert one_worker_idle({"worker_cpu_shares": [0.02, 0.98]})
    assert not one_worker_idle({"worker_cpu_shares": [0.4, 0.6]})
    assert not one_worker_idle({"worker_cpu_shares": [1.0]})  # one worker: nothing to share out
    assert not one_worker_idle({})  # a run that recorded no shares (failed, or an older results file)


def test_summary_counts_idle_worker_runs_and_gives_the_ratio_over_the_others():
    runs = []
    rps = {"service": [800, 1300, 1350], "trivial": [1900, 1200, 2000], "starlette": [1700, 1750, 1800]}
    idle = {("service", 0), ("trivial", 1)}
    for target in TARGETS:
        for i, r in enumerate(rps[target]):
            runs += [run(target, r, [0.01, 0.99] if (target, i) in idle else [0.45, 0.55], i + 1), rate(target, i + 1)]
    s = summarise({"runs": runs})
    assert s["service"]["one_worker_idle_runs"] == 1 and s["trivial"]["one_worker_idle_runs"] == 1
    assert s["starlette"]["one_worker_idle_runs"] == 0
    assert s["service"]["saturation_rps_all_workers"]["values"] == [1300, 1350]
    assert s["ratios"]["all_workers_service_over_trivial"] == round(1325 / 1950, 2)
    assert s["ratios"]["service_over_trivial_3"] == round(1300 / 1900, 3)  # the goal: medians of all runs
    assert s["goals"]["saturation_ratio_ok"] is False


def test_collector_settings_are_applied():
    before = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == collector.THRESHOLDS
    finally:
        gc.set_threshold(*before)
