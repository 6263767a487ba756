"""The README's table of shops nobody tuned for is the committed quality benchmark's result
(benchmarks/results/quality.json, written by `make bench-quality`), figure for figure."""
import json
import re

import pytest

from tests.conftest import REPO

ROWS = {"grocery": "| grocery (", "wide": "| wide (", "gift": "| gift (", "online-retail": "| Online Retail |",
        "drawn-1": "| drawn-1 (", "drawn-2": "| drawn-2 (", "drawn-3": "| drawn-3 (",
        "drawn-4": "| drawn-4 (", "drawn-5": "| drawn-5 (", "drawn-6": "| drawn-6 ("}


def readme_row(prefix: str) -> list[str]:
    table = REPO.joinpath("README.md").read_text().split("Shops nobody tuned for", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, f"README: one row starting {prefix!r} in the shops table, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def number(cell: str) -> float:
    return float(re.findall(r"\d+\.\d+", cell)[-1])


@pytest.mark.parametrize("shop", sorted(ROWS))
def test_readme_shop_row_is_the_benchmark_result(shop):
    result = json.loads(REPO.joinpath("benchmarks/results/quality.json").read_text())["shops"][shop]
    m = result["metrics"]
    _, champion, validation, test, best_peer, served, cost = readme_row(ROWS[shop])
    digits = lambda cell: len(cell.split(".")[-1])  # noqa: E731  the README rounds to what it prints
    assert number(validation) == round(m["validation_ndcg@10"], digits(validation))
    assert number(test) == round(m["test_ndcg@10"], digits(test))
    assert number(best_peer) == round(m["best_peer_test_ndcg@10"], digits(best_peer.split()[-1]))
    assert number(served) == round(m["served_ndcg@10"], digits(served))
    minutes, gb = (float(x) for x in re.findall(r"\d+\.\d+", cost))
    assert minutes == round(result["train"]["seconds"] / 60, 1) and gb == round(result["train"]["peak_rss_gb"], 1)
    peer = m["champion"].startswith("peer.")
    assert champion.startswith("peer:") == peer, f"{shop}: README says {champion!r}, the benchmark {m['champion']!r}"
    if not peer:
        assert ("ranker" in champion.lower()) == m["champion"].startswith("ranker")


def test_readme_rerank_figures_are_the_benchmark_result():
    """/rerank against the test period (README, "Service"): the committed result of
    `python -m benchmarks.rerank_quality`; scoring every candidate beats leaving the ranker's non-candidates
    unscored wherever the champion left some unscored, and changes nothing where it scores every item."""
    data = json.loads(REPO.joinpath("benchmarks/results/rerank-quality.json").read_text())
    text = " ".join(REPO.joinpath("README.md").read_text().split())
    assert {r["shop"] for r in data["shops"]} >= {"online-retail", "synthetic small", "synthetic gift-test"}
    assert any(r["unscored_share_before"] > 0.5 for r in data["shops"])
    for r in data["shops"]:
        n = r["ndcg@10"]
        assert n["before"] > n["caller"], r["shop"]
        assert n["now"] > n["before"] if r["unscored_share_before"] > 0 else n["now"] == n["before"], r["shop"]
        assert (f"{r['shop']} ({r['recipe']}) {n['now']:.3f} (before {n['before']:.3f}, the caller's order "
                f"{n['caller']:.3f}; {r['unscored_share_before']:.0%} of the candidates unscored before)") in text
