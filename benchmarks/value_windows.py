"""Customer value and churn on UCI Online Retail at PRODUCT.md's cutoff and at earlier ones.

    python -m benchmarks.value_windows [--windows 4] [--boot 300]

The protocol (PRODUCT.md "Customer value", cutoff = last order - 90 days) is one window; its
figures move with a few customers. This runs the same code as ``shoprec train``
(``training.value.train.evaluate_value`` and ``training.propensity.evaluate.evaluate_target``)
with the data cut at the last order, 30, 60, ... days before it, so each window has its own
cutoff, training snapshots and 90 days of actual spend after the cutoff. Per window: our model's and every peer's
Spearman, normalised Gini, top-10/20% capture; a bootstrap interval (customers resampled) of our
Gini minus the best peer's; churn ROC AUC with the RFM logistic regression peer. At the protocol's
window also: the customers whose removal moves the Gini gap most (leave one out, among the 200
largest spenders), and the figures with actual spend net of the window's cancellations and returns
(PRODUCT.md: "cleaning it further is welcome, reported as a separate figure").

Only the first window is PRODUCT.md's figure; the earlier ones' label periods overlap later
windows' and the protocol's test period, so they describe, they do not choose anything.
Writes benchmarks/results/value_windows.json and .md.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import REPO, machine, machine_markdown, write_results

RETAIL = REPO.parent / "shared" / "data" / "online-retail" / "onlineretail.csv.gz"
RANKING = ("spearman", "norm_gini", "top10_capture", "top20_capture")


def gini_gap_interval(actual: np.ndarray, ours: np.ndarray, peer: np.ndarray, boot: int, seed: int = 0) -> list[float]:
    """95% bootstrap interval of normalised Gini (ours) - normalised Gini (peer), customers resampled."""
    from training.value.metrics import normalised_gini

    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(boot):
        i = rng.integers(0, len(actual), len(actual))
        gaps.append(normalised_gini(actual[i], ours[i]) - normalised_gini(actual[i], peer[i]))
    return [round(float(x), 4) for x in np.percentile(gaps, [2.5, 97.5])]


def deciding_customers(users: pd.Index, actual, ours, peer, top: int = 200, keep: int = 5) -> list[dict]:
    """The customers (among the ``top`` largest spenders) whose removal moves our Gini gap to the peer most."""
    from training.value.metrics import normalised_gini

    gap = normalised_gini(actual, ours) - normalised_gini(actual, peer)
    out = []
    for i in np.argsort(-actual)[:top]:
        m = np.ones(len(actual), bool)
        m[i] = False
        moved = normalised_gini(actual[m], ours[m]) - normalised_gini(actual[m], peer[m]) - gap
        out.append({"user_id": str(users[i]), "actual": round(float(actual[i]), 2), "gap_without": round(gap + moved, 4),
                    "rank_ours": int((ours > ours[i]).sum() + 1), "rank_peer": int((peer > peer[i]).sum() + 1)})
    return sorted(out, key=lambda r: -abs(r["gap_without"] - gap))[:keep]


def net_spend(orders: pd.DataFrame, users: pd.Index, at: pd.Timestamp, days: int) -> np.ndarray:
    """Spend in (at, at + days] net of that period's negative lines (cancellations, returns), at least 0."""
    w = orders[(orders["ts"] > at) & (orders["ts"] <= at + pd.Timedelta(days=days))]
    net = (w["quantity"] * w["price"]).groupby(w["user_id"]).sum()
    return net.reindex(users, fill_value=0.0).clip(lower=0.0).to_numpy(dtype=float)


def window(canonical, end: pd.Timestamp, boot: int, first: bool) -> dict:
    from training.propensity.config import PropensityConfig
    from training.propensity.dataset import Snapshots
    from training.propensity.evaluate import evaluate_target
    from training.value.config import ValueConfig
    from training.value.metrics import value_metrics
    from training.value.train import ValueRows, evaluate_value

    snaps = Snapshots(canonical, end)
    cfg = ValueConfig()
    ev = evaluate_value(ValueRows(snaps, cfg), cfg, cfg.horizon_days)
    m = ev.metrics()
    best = m["best_peer"]
    users = snaps.features(ev.test_at).index
    out = {"cutoff": m["cutoff"], "customers": m["customers"], "zero_share": round(m["zero_share"], 4),
           "train_at": m["train_at"], "model": {k: round(m[k], 4) for k in RANKING},
           "peers": {n: {k: round(p[k], 4) for k in RANKING} for n, p in m["peers"].items()}, "best_peer": best,
           "beats_best_peer": m["beats_best_peer"],
           "gini_gap_to_best_peer": round(m["norm_gini"] - m["peers"][best]["norm_gini"], 4),
           "gini_gap_95": gini_gap_interval(ev.actual, ev.predictions["model"], ev.predictions[best], boot)}
    churn = evaluate_target(snaps, "churn", PropensityConfig(end=end.to_pydatetime())).metrics()
    out["churn"] = {"roc_auc": round(churn["roc_auc"], 4), "rfm_logreg": round(churn["baseline_rfm_logreg"]["roc_auc"], 4),
                    "recency": round(churn["baseline_recency"]["roc_auc"], 4), "test_at": churn["test_at"]}
    if first:
        out["deciding_customers"] = deciding_customers(users, ev.actual, ev.predictions["model"], ev.predictions[best])
        net = net_spend(snaps.orders, users, ev.test_at, cfg.horizon_days)
        out["net_of_cancellations"] = {name: {k: round(value_metrics(net, p)[k], 4) for k in RANKING}
                                       for name, p in ev.predictions.items()}
    return out


def markdown(data: dict) -> str:
    lines = ["# Customer value and churn on Online Retail, window by window", "",
             "`python -m benchmarks.value_windows` (see its docstring). The first row is PRODUCT.md's protocol "
             "(cutoff = last order − 90 days); the others cut the data 30, 60, ... days earlier and describe how "
             "much the figures move; nothing is chosen on them.", "",
             "| cutoff | customers | model Spearman / Gini / top10 / top20 | best peer (its figures) | "
             "Gini gap, 95% interval | churn ROC AUC (RFM logreg) |", "|---|---|---|---|---|---|"]
    for w in data["windows"]:
        f = lambda d: " / ".join(f"{d[k]:.3f}" for k in RANKING)  # noqa: E731
        lines.append(f"| {w['cutoff'][:10]} | {w['customers']:,} | {f(w['model'])} | `{w['best_peer']}` {f(w['peers'][w['best_peer']])} "
                     f"| {w['gini_gap_to_best_peer']:+.3f} [{w['gini_gap_95'][0]:+.3f}, {w['gini_gap_95'][1]:+.3f}] "
                     f"| {w['churn']['roc_auc']:.3f} ({w['churn']['rfm_logreg']:.3f}) |")
    first = data["windows"][0]
    lines += ["", f"At the protocol's cutoff ({first['cutoff']}), the customers that decide the Gini gap to "
              f"`{first['best_peer']}` (leave one out among the 200 largest spenders):", "",
              "| customer | actual spend | gap without them | our rank | peer's rank |", "|---|---|---|---|---|"]
    for c in first["deciding_customers"]:
        lines.append(f"| {c['user_id']} | {c['actual']:,.0f} | {c['gap_without']:+.3f} | {c['rank_ours']:,} | {c['rank_peer']:,} |")
    lines += ["", "Same window, actual spend net of the period's cancellations and returns (a separate figure, "
              "not PRODUCT.md's):", "", "| scorer | Spearman | Gini | top10 | top20 |", "|---|---|---|---|---|"]
    for name, d in first["net_of_cancellations"].items():
        lines.append(f"| `{name}` | " + " | ".join(f"{d[k]:.3f}" for k in RANKING) + " |")
    lines += ["", f"{data['seconds']:.0f} s. " + machine_markdown(data["machine"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4, help="the protocol's window and this many minus one earlier ones")
    parser.add_argument("--boot", type=int, default=300, help="bootstrap resamples for the Gini gap interval")
    args = parser.parse_args()
    if not RETAIL.exists():
        raise SystemExit(f"error: Online Retail is not at {RETAIL}")
    from features.ingest import ingest, load_canonical

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ingest(orders=RETAIL, events=None, items=None, out_dir=Path(tmp) / "c")
        canonical = load_canonical(Path(tmp) / "c")
    last = canonical.orders["ts"].max()
    windows = []
    for k in range(args.windows):
        windows.append(window(canonical, last - pd.Timedelta(days=30 * k), args.boot, k == 0))
        print(windows[-1]["cutoff"], windows[-1]["model"], windows[-1]["gini_gap_95"], windows[-1]["churn"], flush=True)
    data = {"windows": windows, "seconds": time.perf_counter() - started, "machine": machine()}
    j, m = write_results("value_windows", data, markdown(data))
    print(f"wrote {j} and {m}")


if __name__ == "__main__":
    main()
