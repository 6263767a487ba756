"""The README's serving figures are the committed benchmarks' results: next to the two floors
(benchmarks/results/serving-floors.json, `python -m benchmarks.serving_floors`) and the marketers' page's
running-experiment report (benchmarks/results/experiments.json, `python -m benchmarks.experiments --only report`), and
experiments decided by what the arms show (benchmarks/results/experiments_shown.json, `python -m benchmarks.experiments_shown`)."""
import json

from tests.conftest import REPO


def test_readme_serving_floors_paragraph_is_the_benchmark_result():
    summary = json.loads(REPO.joinpath("benchmarks/results/serving-floors.json").read_text())["summary"]
    text = " ".join(REPO.joinpath("README.md").read_text().split("**Next to its two floors**", 1)[1]
                    .split("\n\n", 1)[0].split())
    for target in ("service", "trivial", "starlette"):
        sat = summary[target]["saturation_rps"]
        assert f"{sat['median']:,.0f}" in text and f"({sat['min']:,.0f}–{sat['max']:,.0f})" in text, target
    ratios, goals = summary["ratios"], summary["goals"]
    verdict = "met" if goals["saturation_ratio_ok"] else "missed"
    assert f"**{ratios['service_over_trivial_3']:.3f}** of the trivial endpoint, the goal of 0.70 **{verdict}**" in text
    assert f"CPU-bound {ratios['cpu_bound_service_over_trivial']:.2f}" in text
    p99 = summary["service"]["p99_ms"]
    assert f"p99 at 100 req/s {p99['min']:.1f}–{p99['max']:.1f} ms" in text
    assert ("≤ 15 ms in every round: met" in text) == goals["p99_at_rate_ok"]
    work = json.loads(REPO.joinpath("benchmarks/results/serving-floors.json").read_text())["work"]["all"]
    assert f"p99 {work['p99']:.2f} ms, max {work['max']:.2f} ms in that run" in text  # the service's own work per request


def test_readme_inproc_figures_are_the_benchmark_result():
    """What grouping the work by loop turn saves (README, "Next to its two floors"): the committed result of
    `python -m benchmarks.serving_inproc` (8 requests at a time)."""
    data = json.loads(REPO.joinpath("benchmarks/results/serving-inproc.json").read_text())
    text = " ".join(REPO.joinpath("README.md").read_text().split("**Next to its two floors**", 1)[1]
                    .split("\n\n", 1)[0].split())
    assert data["concurrency"] == 8 and "the whole mix 8 requests at a time" in text
    cpu = {v: data["cpu_ms"][v]["median"] for v in ("service", "service-one-by-one", "service-constant", "trivial")}
    assert (f"the service {cpu['service']:.3f} ms of CPU a request, the same service with each request's work run at "
            f"once {cpu['service-one-by-one']:.3f}, with its endpoints answering a constant "
            f"{cpu['service-constant']:.3f}, the trivial endpoint {cpu['trivial']:.3f}") in text
    work = {v: data["endpoint_ms"][v]["median"] for v in ("service", "service-one-by-one")}
    assert f"our work itself {work['service']:.3f} ms grouped against {work['service-one-by-one']:.3f} one by one" in text
    rest = {v: data["outside_endpoint_ms"][v]["median"] for v in ("service", "service-one-by-one", "service-constant",
                                                                  "service-work", "service-constant-walk")}
    assert (f"the framework's code around it {rest['service']:.3f} ms a request against "
            f"{rest['service-one-by-one']:.3f} one by one and {rest['service-constant']:.3f} beside a constant") in text
    assert f"a search reads first: {rest['service-constant-walk']:.3f}" in text
    assert f"the service's work then a constant answer: {rest['service-work']:.3f}" in text
    assert f"{data['rounds']} rounds" in text
    alone = json.loads(REPO.joinpath("benchmarks/results/serving-inproc-c1.json").read_text())
    assert alone["concurrency"] == 1
    assert (f"`benchmarks/results/serving-inproc-c1.md`: {alone['cpu_ms']['service']['median']:.3f} ms against "
            f"{alone['cpu_ms']['service-one-by-one']['median']:.3f} one by one") in text
    before = json.loads(REPO.joinpath("benchmarks/results/serving-floors-before-turns.json").read_text())["summary"]
    assert f"gave {before['ratios']['service_over_trivial_3']:.3f}" in text


def test_readme_running_report_figures_are_the_benchmark_result():
    """The marketers' page's running-experiment report times (README, "Experiments") are the committed result of
    `python -m benchmarks.experiments --only report`, where kept rows gave the same report as the log read whole."""
    import numpy as np

    rep = json.loads(REPO.joinpath("benchmarks/results/experiments.json").read_text())["report"]
    text = " ".join(REPO.joinpath("README.md").read_text().split())
    assert all(r["same_report"] for r in rep["rounds"])
    assert f"{rep['exposures']:,} exposures, {rep['outcomes']:,} outcomes in SQLite" in text
    whole, kept = (np.median([r[k] for r in rep["rounds"]]) for k in ("whole_s", "kept_s"))
    assert f"{whole:.2f} s per load read whole, {kept:.2f} s from kept rows (medians of {len(rep['rounds'])} rounds" in text


def test_readme_exposure_logging_figures_are_the_benchmark_result():
    """The p99 with and without exposure logging (README, "Experiments"): the committed result of
    `python -m benchmarks.experiments --only latency --rounds 5`."""
    lat = json.loads(REPO.joinpath("benchmarks/results/experiments.json").read_text())["latency"]
    text = " ".join(REPO.joinpath("README.md").read_text().split())
    for arm, words in (("with_experiment", "ms with the experiment"), ("without_experiment", "ms without it")):
        p99 = [f"{r[arm]['latency_ms']['p99']:.2f}" for r in lat["rounds"]]
        assert f"{', '.join(p99[:-1])} and {p99[-1]} {words}" in text, (arm, p99)
    assert f"every answer under the experiment was stored ({lat['exposures_logged']:,} of " in text
    assert ("is **met** in every round" in text) == all(r["with_experiment"]["latency_ms"]["p99"] <= 15
                                                         for r in lat["rounds"])


def test_readme_shown_experiment_figures_are_the_benchmark_result():
    """The figures of experiments decided by what the arms show (README, "Experiments") are the committed result of
    `python -m benchmarks.experiments_shown`."""
    data = json.loads(REPO.joinpath("benchmarks/results/experiments_shown.json").read_text())
    text = " ".join(REPO.joinpath("README.md").read_text().split())
    s = data["scenarios"]
    assert f"{data['runs']} runs per scenario on the `{data['preset']}` shop ({data['shoppers']:,} shoppers" in text
    aa = s["A/A"]["sequential_any_day"]
    assert (f"A/A (both arms the champion, true lift 0): the group-sequential test read daily found a difference in "
            f"{100 * aa['rate']:.1f}% of runs ({aa['count']} of {aa['runs']};") in text
    for name in ("popular", "trending"):
        sc = s[name]
        assert (f"champion against {name}: true lift {100 * sc['truth']['lift']:+.1f}%, detected in "
                f"{100 * sc['sequential_any_day']['rate']:.0f}% of runs, the final 95% interval covers the truth in "
                f"{100 * sc['covers']['rate']:.0f}%") in text


def test_readme_nginx_overhead_is_the_benchmark_result():
    """nginx in front of two replicas against one replica directly (README, twice): the committed result of
    `python -m benchmarks.nginx_overhead`."""
    data = json.loads(REPO.joinpath("benchmarks/results/nginx-overhead.json").read_text())
    text = " ".join(REPO.joinpath("README.md").read_text().split())
    o = data["overhead_p50_ms"]
    assert data["goal_ok"] and o["median"] <= 1.0
    assert (f"adds {o['median']:.2f} ms to p50 against one replica directly (median of {len(data['rounds'])} rounds of "
            f"1,000 paired requests, {o['min']:.2f}–{o['max']:.2f}") in text
    assert f"the committed benchmark, with paired requests, measures {o['median']:.2f} ms" in text
