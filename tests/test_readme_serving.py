"""The README's serving figures next to the two floors are the committed benchmark's result
(benchmarks/results/serving-floors.json, written by `python -m benchmarks.serving_floors`)."""
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
