"""Recommendation quality on every shop kind, on drawn shops and on Online Retail, through the real CLI.

    python -m benchmarks.quality [--quick] [--only grocery,wide,gift,drawn-1,online-retail] [--keep DIR]

For each synthetic kind (features/synthetic/config.py KINDS; full sizes, or with ``--quick`` the
"<kind>-test" sizes) and each drawn shop (``DRAWN``: shops whose traits are drawn at random
between the kinds', features/synthetic/config.py ``drawn``; seeds fixed before any was measured,
so no recipe was built while looking at them) it runs, in a temporary project folder, exactly what a user would:

    shoprec generate --preset KIND --out KIND
    shoprec train --orders KIND/orders.parquet --events KIND/events.parquet --items KIND/items.parquet \
        --metrics-out KIND.json --config <repo>/configs/train.yaml

and for UCI Online Retail (``../shared/data/online-retail/onlineretail.csv.gz``, reported as absent
when it is not there) ``shoprec train --orders FILE`` only. Each command's wall time and peak
memory are measured (the kernel's max RSS of the largest process in its tree, and the RSS of the
whole tree polled every 0.5 s); a watchdog kills a command past its time or memory limit. From
the metrics JSON: the champion (``recommend.model``), its validation and test NDCG@10, the
PRODUCT.md peers' test NDCG@10 (``recommend.peers``), the served and session NDCG@10, and
whether the champion is at least the best peer on test. Each shop's profile
(features/synthetic/describe.py) says what kind of shop it is.

Writes benchmarks/results/quality.json and quality.md (``--quick``: quality-quick.*), after each
shop, so an interrupted run keeps what it measured; ``--only`` reruns some shops and keeps the
others' last results.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import GB, REPO, RESULTS, Watchdog, child_env, fmt, machine, machine_markdown, verdict, write_results

RETAIL = REPO.parent / "shared" / "data" / "online-retail" / "onlineretail.csv.gz"
CONFIG = REPO / "configs" / "train.yaml"
K = 10
# The goals of issue 10 that this benchmark measures.
RETAIL_GOAL = 0.13  # Online Retail: champion test NDCG@10
SERVED_GAP = 0.02  # served_ndcg@10 within 2% of ndcg@10
WIDE_MINUTES, WIDE_GB = 20.0, 12.0  # the wide shop trains in <= 20 min, <= 12 GB


# held out: never change these to ones that score better. 1-3 fixed before any drawn shop was trained;
# 4-6 added (2026-12-02) before any of them was trained, after a fix that drawn-2 had prompted
DRAWN = ("drawn-1", "drawn-2", "drawn-3", "drawn-4", "drawn-5", "drawn-6")


def kinds() -> list[str]:
    from features.synthetic import KINDS

    return list(KINDS)


def shop_names() -> list[str]:
    return [*kinds(), *DRAWN, "online-retail"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shoprec() -> str:
    exe = Path(sys.executable).parent / "shoprec"
    return str(exe) if exe.exists() else (shutil.which("shoprec") or "shoprec")


def run_command(args: list[str], cwd: Path, log_path: Path, timeout: float, max_rss_gb: float) -> dict:
    """Run a command in ``cwd`` (output to ``log_path``): wall seconds, the kernel's max RSS of
    the largest process in its tree (``os.wait4``), the peak RSS of the whole tree (polled)."""
    env = child_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the project folder's own store
    env.update(SHOPREC_PRIVACY_DIR=str(cwd / "data" / "privacy"), BENTOML_HOME=str(cwd / "bentoml_home"))
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    guard = Watchdog(proc.pid, timeout, max_rss_gb, tree=True, every=0.5)
    _, status, usage = os.wait4(proc.pid, 0)
    guard.stop()
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    res = {"ok": code == 0 and not guard.killed, "seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 2),
           "peak_tree_rss_gb": round(guard.peak_tree_gb, 2), "command": " ".join(args)}
    if not res["ok"]:
        res["error"] = guard.killed[0] if guard.killed else f"exit {code}: {log_path.read_text(errors='replace')[-1500:]}"
    return res


def summarise(metrics: dict) -> dict:
    """The figures of one run's metrics JSON; what it does not report stays None."""
    rec = metrics.get("recommend", {})
    model = rec.get("model")
    candidates = rec.get("candidates") or {}
    validation = rec.get(f"validation_ndcg@{K}")
    if validation is None:
        validation = ((candidates.get(model) or {}).get("validation") or {}).get(f"ndcg@{K}")
    peers = rec.get("peers")
    peer_test = None if peers is None else {
        name: ((p or {}).get("test") or {}).get(f"ndcg@{K}") for name, p in sorted(peers.items())}
    test = rec.get(f"ndcg@{K}")
    scored = {n: v for n, v in (peer_test or {}).items() if v is not None}
    best = max(scored, key=scored.get) if scored else None
    served = rec.get(f"served_ndcg@{K}")
    # served vs measured on the same (possibly sampled) test users; the whole test set where not reported
    measured_same_users = (rec.get("served") or {}).get(f"batch_ndcg@{K}", test)
    return {
        "champion": model,
        "validation_ndcg@10": validation,
        "test_ndcg@10": test,
        "test_users": rec.get("test_users"),
        "peers_test_ndcg@10": peer_test,  # None: the metrics do not report peers
        "best_peer": best,
        "best_peer_test_ndcg@10": scored.get(best),
        "champion_ge_best_peer": None if best is None or test is None else bool(test >= scored[best]),
        "served_ndcg@10": served,
        "served_batch_ndcg@10": measured_same_users,
        "served_gap": (None if served is None or not measured_same_users
                       else round(abs(served - measured_same_users) / measured_same_users, 4)),
        "session_ndcg@10": rec.get(f"session_ndcg@{K}"),
        "baseline_popularity_ndcg@10": (rec.get("baseline_popularity") or {}).get(f"ndcg@{K}"),
        "oracle_ndcg@10": (rec.get("oracle") or {}).get(f"ndcg@{K}"),
    }


PROFILE_KEYS = ("order_lines", "customers", "items_sold", "catalogue", "top1pct_share", "repeat_30d_share",
                "median_quantity", "last_60d_lift", "test_lines_on_new_items")


def shop_profile(orders: Path, items: Path | None) -> dict:
    from features.synthetic.describe import profile, read_shop

    frame, catalogue = read_shop(orders.parent if items else orders)
    p = profile(frame, catalogue)
    return {**{k: p[k] for k in PROFILE_KEYS}, "global_list_ndcg@10": p["global_list_ndcg@10"],
            "window_spearman": p["window_spearman"]}


def measure_shop(name: str, preset: str | None, project: Path, quick: bool, budget: float | None) -> dict:
    """Generate (synthetic) and train one shop in ``project``; the shop's lineage is its folder's name."""
    train_limit = 900 if quick else 3 * 3600
    out: dict = {"shop": name, "preset": preset}
    if preset is None:
        if not RETAIL.exists():
            out["status"] = f"absent: {RETAIL} not found (see PRODUCT.md: ../shared/data/online-retail)"
            log(f"{name}: {out['status']}")
            return out
        orders, items = RETAIL, None  # its lineage: the folder's name, "online-retail"
        inputs = ["--orders", str(orders)]
    else:
        data = project / name
        gen = run_command([shoprec(), "generate", "--preset", preset, "--out", str(data)], project,
                          project / f"{name}-generate.log", timeout=1800, max_rss_gb=16)
        out["generate"] = gen
        log(f"{name}: generate {gen['seconds']} s, {gen['peak_rss_gb']} GB" + ("" if gen["ok"] else f" FAILED {gen['error']}"))
        if not gen["ok"]:
            out["status"] = "generate failed"
            return out
        orders, items = data / "orders.parquet", data / "items.parquet"
        inputs = ["--orders", str(orders), "--events", str(data / "events.parquet"), "--items", str(items)]
    metrics = project / f"{name}-metrics.json"
    args = [shoprec(), "train", *inputs, "--metrics-out", str(metrics), "--config", str(CONFIG)]
    if budget is not None:
        args += ["--budget-minutes", str(budget)]
    out["profile"] = shop_profile(orders, items)
    train = run_command(args, project, project / f"{name}-train.log", timeout=train_limit, max_rss_gb=16)
    out["train"] = train
    log(f"{name}: train {train['seconds']} s, {train['peak_rss_gb']} GB" + ("" if train["ok"] else f" FAILED {train['error'][-300:]}"))
    if not train["ok"]:
        out["status"] = "train failed"
        return out
    out["status"] = "measured"
    out["metrics"] = summarise(json.loads(metrics.read_text()))
    log(f"{name}: champion {out['metrics']['champion']} test NDCG@10 {out['metrics']['test_ndcg@10']}, "
        f"best peer {out['metrics']['best_peer']} {out['metrics']['best_peer_test_ndcg@10']}")
    return out


def goals(shops: dict, quick: bool) -> list[dict]:
    rows = []
    for name, s in shops.items():
        name = s.get("shop") or name
        m = s.get("metrics")
        if m is None:
            continue
        rows.append({"goal": f"{name}: champion test NDCG@10 ≥ best peer's", "measured": m["test_ndcg@10"],
                     "against": m["best_peer_test_ndcg@10"], "ok": m["champion_ge_best_peer"]})
        if m["served_gap"] is not None:
            rows.append({"goal": f"{name}: served NDCG@10 within {SERVED_GAP:.0%} of NDCG@10 (same users)",
                         "measured": m["served_ndcg@10"], "against": m.get("served_batch_ndcg@10", m["test_ndcg@10"]),
                         "ok": m["served_gap"] <= SERVED_GAP})
    retail = shops.get("online-retail", {}).get("metrics")
    if retail:
        rows.append({"goal": f"online-retail: champion test NDCG@10 ≥ {RETAIL_GOAL}", "measured": retail["test_ndcg@10"],
                     "against": RETAIL_GOAL, "ok": retail["test_ndcg@10"] is not None and retail["test_ndcg@10"] >= RETAIL_GOAL})
    wide = shops.get("wide", {}).get("train")
    if wide and not quick:
        rows.append({"goal": f"wide: trains in ≤ {WIDE_MINUTES:.0f} min", "measured": round(wide["seconds"] / 60, 1),
                     "against": WIDE_MINUTES, "ok": wide["ok"] and wide["seconds"] <= WIDE_MINUTES * 60})
        rows.append({"goal": f"wide: trains in ≤ {WIDE_GB:.0f} GB", "measured": wide["peak_tree_rss_gb"],
                     "against": WIDE_GB, "ok": wide["ok"] and max(wide["peak_rss_gb"], wide["peak_tree_rss_gb"]) <= WIDE_GB})
    return rows


def markdown(data: dict) -> str:
    quick = data["quick"]
    shops = data["shops"]
    lines = [f"# shoprec recommendation quality{' (quick: test-size shops)' if quick else ''}", "",
             machine_markdown(data["machine"]), "",
             "Each shop runs through the real CLI in a fresh project folder (`shoprec generate`, then `shoprec train "
             "--config configs/train.yaml`); NDCG@10 under the PRODUCT.md protocol (last 30 days = test). The champion is "
             "chosen on validation; *test* only reports. Peers are PRODUCT.md's, scored in the same run "
             "(`recommend.peers`). `python -m benchmarks.quality" + (" --quick" if quick else "") + "` reproduces it.", "",
             "## Goals", "", "| goal | measured | against | verdict |", "|---|---|---|---|"]
    for g in data["goals"]:
        lines.append(f"| {g['goal']} | {fmt(g['measured'], 4)} | {fmt(g['against'], 4)} | {verdict(g['ok'])} |")
    lines += ["", "## Champion and peers (NDCG@10)", "",
              "| shop | champion | validation | test | best peer (test) | champion ≥ best peer | served | session | oracle | test users |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in shops.items():
        name = s.get("shop") or name
        m = s.get("metrics")
        if m is None:
            lines.append(f"| {name} | {s.get('status')} | | | | | | | | |")
            continue
        best = "not reported" if m["peers_test_ndcg@10"] is None else f"{m['best_peer']} {fmt(m['best_peer_test_ndcg@10'], 4)}"
        ge = "–" if m["champion_ge_best_peer"] is None else ("yes" if m["champion_ge_best_peer"] else "**no**")
        lines.append(f"| {name} | {m['champion']} | {fmt(m['validation_ndcg@10'], 4)} | {fmt(m['test_ndcg@10'], 4)} | "
                     f"{best} | {ge} | {_nr(m['served_ndcg@10'])} | {_nr(m['session_ndcg@10'])} | "
                     f"{fmt(m['oracle_ndcg@10'], 4)} | {fmt(m['test_users'])} |")
    peer_names = sorted({p for s in shops.values() for p in ((s.get("metrics") or {}).get("peers_test_ndcg@10") or {})})
    lines += ["", "Peers' test NDCG@10" + ("" if peer_names else ": not reported by these runs' metrics "
                                              "(`recommend.peers` absent)") + ".", ""]
    if peer_names:
        lines += ["| shop | " + " | ".join(peer_names) + " |", "|---|" + "---|" * len(peer_names)]
        for name, s in shops.items():
            name = s.get("shop") or name
            pt = (s.get("metrics") or {}).get("peers_test_ndcg@10")
            if pt is not None:
                lines.append(f"| {name} | " + " | ".join(fmt(pt.get(p), 4) for p in peer_names) + " |")
        lines.append("")
    lines += ["## Time and memory", "",
              "| shop | generate | generate peak RSS | train | train peak RSS (largest process) | train peak RSS (tree) |",
              "|---|---|---|---|---|---|"]
    for name, s in shops.items():
        name = s.get("shop") or name
        g, t = s.get("generate") or {}, s.get("train") or {}
        lines.append(f"| {name} | {_secs(g)} | {_gb(g, 'peak_rss_gb')} | {_secs(t)} | {_gb(t, 'peak_rss_gb')} | "
                     f"{_gb(t, 'peak_tree_rss_gb')} |")
    lines += ["", "## The shops", "", "What each shop shows (features/synthetic/describe.py; the global lists are one list "
              "for everyone under the same protocol).", "",
              "| shop | order lines | customers | items sold / catalogue | top 1% items' share | repeat within 30 d | "
              "median qty | last 60 d lift | new items in test | popular | trending 7 d | trending 30 d |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in shops.items():
        name = s.get("shop") or name
        p = s.get("profile")
        if not p:
            lines.append(f"| {name} | {s.get('status')} |" + " |" * 11)
            continue
        gl = p["global_list_ndcg@10"]
        lines.append(f"| {name} | {fmt(p['order_lines'])} | {fmt(p['customers'])} | {fmt(p['items_sold'])} / "
                     f"{fmt(p['catalogue'])} | {fmt(p['top1pct_share'], 3)} | {fmt(p['repeat_30d_share'], 3)} | "
                     f"{fmt(p['median_quantity'], 0)} | {fmt(p['last_60d_lift'])} | {fmt(p['test_lines_on_new_items'], 3)} | "
                     f"{fmt(gl.get('popular'), 4)} | {fmt(gl.get('trending_7d'), 4)} | {fmt(gl.get('trending_30d'), 4)} |")
    failed = [(n, s) for n, s in shops.items() if s.get("status") not in ("measured",)]
    if failed:
        lines += ["", "## Not measured", ""]
        for name, s in failed:
            err = (s.get("train") or s.get("generate") or {}).get("error", "")
            lines.append(f"- {name}: {s.get('status')}" + (f" ({err.strip().splitlines()[-1][:300]})" if err else ""))
    lines += ["", f"Whole run: {data['run_seconds'] / 60:.1f} min." if data.get("run_seconds") else ""]
    return "\n".join(lines).rstrip() + "\n"


def _nr(value) -> str:
    return "not reported" if value is None else fmt(value, 4)


def _secs(r: dict) -> str:
    return "–" if not r else f"{r['seconds']:,.1f} s" + ("" if r["ok"] else " (failed)")


def _gb(r: dict, key: str) -> str:
    return "–" if not r else f"{r[key]:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the test sizes of the kinds (minutes, not an hour)")
    ap.add_argument("--only", default=None, help="comma-separated shops to (re)measure: "
                    + ", ".join(shop_names()) + "; the others keep their last results")
    ap.add_argument("--keep", type=Path, default=None, help="keep the project folders here (default: a temporary folder)")
    ap.add_argument("--budget-minutes", type=float, default=None, help="passed to shoprec train (default: the config's)")
    args = ap.parse_args(argv)
    names = shop_names()
    only = None if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only or []) - set(names)
    if unknown:
        ap.error(f"--only: unknown shop(s) {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    result = "quality-quick" if args.quick else "quality"
    previous = RESULTS / f"{result}.json"
    data = {"quick": args.quick, "machine": machine(), "config": str(CONFIG.relative_to(REPO)), "shops": {}, "goals": []}
    if only and previous.exists():
        data["shops"] = {k: v for k, v in json.loads(previous.read_text()).get("shops", {}).items() if k not in only}
    started = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="shoprec-quality-"))
    try:
        for name in names:
            if only and name not in only:
                continue
            preset = None if name == "online-retail" else (f"{name}-test" if args.quick else name)
            project = root / name
            if project.exists():
                shutil.rmtree(project)
            project.mkdir(parents=True)
            log(f"{name}: project {project}")
            data["shops"][name] = measure_shop(name if preset is None else preset, preset, project, args.quick,
                                               args.budget_minutes)
            data["shops"] = {n: data["shops"][n] for n in names if n in data["shops"]}
            data["goals"] = goals(data["shops"], args.quick)
            data["run_seconds"] = round(time.perf_counter() - started, 1)
            write_results(result, data, markdown(data))  # after each shop: partial results survive
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    j, m = RESULTS / f"{result}.json", RESULTS / f"{result}.md"
    log(f"wrote {j.relative_to(REPO)} and {m.relative_to(REPO)} in {data['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
