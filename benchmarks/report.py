"""The Markdown view of a results JSON (benchmarks/results/<mode>.md)."""
from __future__ import annotations

from benchmarks.common import fmt, fmt_spread, machine_markdown, verdict


def markdown(data: dict) -> str:
    s = data.get("sections", {})
    lines = [f"# shoprec benchmarks: {data.get('mode')} mode", "",
             machine_markdown(data["machine"]), "",
             "Every figure is a median of repeated runs in fresh child processes (min–max and n in brackets), "
             "next to its floor measured in the same run; *ratio* = ours / floor (lower is better for times, "
             "higher for throughput). The machine is shared: see the load averages per section.", ""]
    lines += _goals(s)
    if "pipeline" in s:
        lines += _pipeline(s["pipeline"])
    if "training" in s:
        lines += _training(s["training"])
    if "serving" in s:
        lines += _serving(s["serving"])
    if "batch" in s:
        lines += _batch(s["batch"])
    if "ease" in s:
        lines += _ease(s["ease"])
    if data.get("run_seconds"):
        lines += [f"Whole run: {data['run_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines) + "\n"


def _goals(s: dict) -> list[str]:
    rows = ["## Goals", "", "| goal | measured | floor / ratio | verdict |", "|---|---|---|---|"]
    p = s.get("pipeline", {}).get("goals")
    if p:
        rows.append(f"| pipeline {p['events']:,} events ≤ 60 s | {fmt(p['seconds'], 1)} s | "
                    f"DuckDB ratio {fmt(p['ratio'])} | {verdict(p['seconds_ok'])} |")
        rows.append(f"| pipeline peak RSS ≤ 6 GB | {fmt(p['peak_rss_gb'])} GB | | {verdict(p['peak_ok'])} |")
        rows.append(f"| pipeline within 1.5× DuckDB | {fmt(p['ratio'])}× | | {verdict(p['ratio_ok'])} |")
    t = s.get("training", {})
    if "als" in t:
        a = t["als"]
        rows.append(f"| ALS interface overhead ≤ 5% | {fmt(a['ours']['seconds']['median'], 1)} s | "
                    f"raw implicit {fmt(a['raw']['seconds']['median'], 1)} s: {fmt(a.get('overhead_pct'), 1)}% between runs, "
                    f"{fmt((a.get('direct_overhead_pct') or {}).get('median'), 2)}% measured inside the fit | "
                    f"{verdict(a.get('goal_ok'))} |")
    v = s.get("serving", {}).get("goals")
    if v:
        rows.append(f"| recommend p99 ≤ 15 ms at 100 req/s | {fmt(v['recommend_p99_at_100_ms'])} ms | | "
                    f"{verdict(v['recommend_p99_ok'])} |")
        for ep, r in v["saturation"].items():
            ok = None if r["ratio"] is None else r["ratio"] >= 0.7
            rows.append(f"| {ep} saturation ≥ 70% of floor | {fmt(r['service_rps'], 0)} req/s | "
                        f"floor {fmt(r['floor_rps'], 0)} req/s, ratio {fmt(r['ratio'])} | {verdict(ok)} |")
        rows.append(f"| service memory ≤ 2 GB (PSS, all processes) | {fmt(v['rss_gb'])} GB | RSS sum "
                    f"{fmt(v.get('rss_sum_gb'))} GB (shared pages once per process) | {verdict(v['rss_ok'])} |")
        rows.append(f"| zero errors | {v['errors']} | | {verdict(v['errors_ok'])} |")
    e = s.get("ease", {})
    if "ours" in e:
        rows.append(f"| EASE at its cap ({fmt(e.get('max_items'))} items): measured | {fmt(e['ours']['seconds']['median'], 1)} s, "
                    f"{fmt(e['ours']['peak_rss_gb'])} GB | Cholesky floor {fmt(e['floor']['seconds']['median'], 1)} s, "
                    f"ratio {fmt(e.get('ratio'))} | – |")
    b = s.get("batch", {})
    if "ours" in b:
        rows.append(f"| batch top-10 for {fmt(b.get('users'))} users ≤ 5 min | {fmt(b['ours']['seconds']['median'], 1)} s | "
                    f"implicit top-k {fmt(b['floor']['seconds']['median'], 1)} s, ratio {fmt(b.get('ratio'))} | "
                    f"{verdict(b.get('goal_ok'))} |")
    return rows + [""]


def _load(sec: dict) -> str:
    return "Load average during the section: " + ", ".join(f"{x['loadavg']} at {x['at']}" for x in sec.get("load", []))


def _pipeline(p: dict) -> list[str]:
    if "error" in p:
        return ["## Feature pipeline", "", f"Failed: {p['error']}", ""]
    lines = ["## Feature pipeline (ours: pandas/NumPy/Arrow; floor: DuckDB SQL, same files)", "",
             "| shop | events | stage | ours | ours peak RSS | DuckDB | DuckDB peak RSS | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in p["shops"].items():
        ev = r["shop"].get("events")
        for stage, row in r["stages"].items():
            fail = "; ".join(row["ours"]["failures"] + row["duck"]["failures"])
            lines.append(f"| {name} | {fmt(ev)} | {stage} | {fmt_spread(row['ours']['seconds'], 1, ' s')} | "
                         f"{fmt(row['ours']['peak_rss_gb'])} GB | {fmt_spread(row['duck']['seconds'], 1, ' s')} | "
                         f"{fmt(row['duck']['peak_rss_gb'])} GB | {fmt(row['ratio'])}{' ⚠ ' + fail if fail else ''} |")
        t = r["total"]
        lines.append(f"| {name} | {fmt(ev)} | **total** | **{fmt(t['ours']['seconds'], 1)} s** | "
                     f"**{fmt(t['ours']['peak_rss_gb'])} GB** | **{fmt(t['duck']['seconds'], 1)} s** | "
                     f"{fmt(t['duck']['peak_rss_gb'])} GB | **{fmt(t['ratio'])}** |")
    if p.get("note"):
        lines += ["", f"Note: {p['note']}"]
    lines += ["", "Checks (both sides produce the same result): "
              + "; ".join(f"{n}: {r['checks']}" for n, r in p["shops"].items()), "", _load(p), ""]
    return lines


def _training(t: dict) -> list[str]:
    if "error" in t:
        return ["## Training", "", f"Failed: {t['error']}", ""]
    a, f = t["als"], t["fit_bundle"]
    m = a.get("matrix", {})
    lines = ["## Training", "",
             f"Matrix: {m.get('shape')} users × items, {fmt(m.get('nnz'))} non-zeros (the serving model's).", "",
             "| what | ours | floor | ratio |", "|---|---|---|---|",
             f"| ALS fit (100 factors, 15 iterations) | {fmt_spread(a['ours']['seconds'], 1, ' s')} | raw implicit "
             f"{fmt_spread(a['raw']['seconds'], 1, ' s')} | {fmt(a['ratio'])} (overhead {fmt(a.get('overhead_pct'), 1)}%; "
             f"inside our fit: {fmt((a.get('direct_overhead_pct') or {}).get('median'), 2)}%) |",
             f"| fit_bundle (\"als\" recipe + fallback + rules + catalog) | {fmt_spread(f['seconds'], 1, ' s')}, "
             f"{fmt(f['peak_rss_gb'])} GB | raw ALS fit {fmt(a['raw']['seconds']['median'], 1)} s | "
             f"{fmt(f.get('ratio_to_raw_als'))} |", ""]
    fails = a["ours"]["failures"] + a["raw"]["failures"] + f["failures"]
    if fails:
        lines += ["Failures: " + "; ".join(fails), ""]
    return lines + [_load(t), ""]


def _ease(e: dict) -> list[str]:
    if "error" in e:
        return ["## EASE at its cap", "", f"Failed: {e['error']}", ""]
    lines = ["## EASE at its cap (same matrix)", "", "| what | ours | floor | ratio |", "|---|---|---|---|",
             f"| EASE fit, {fmt(e.get('max_items'))} items, {e.get('blas_threads')} BLAS threads | "
             f"{fmt_spread(e['ours']['seconds'], 1, ' s')}, {fmt(e['ours']['peak_rss_gb'])} GB | Cholesky inverse "
             f"{fmt_spread(e['floor']['seconds'], 1, ' s')}, {fmt(e['floor']['peak_rss_gb'])} GB | {fmt(e['ratio'])} |", ""]
    if e.get("same_weights") is not None:
        lines += [f"The floor gives the same weights as ours (sum of |B| within 1e-4): {e['same_weights']}.", ""]
    fails = e["ours"]["failures"] + e["floor"]["failures"]
    if fails:
        lines += ["Failures: " + "; ".join(fails), ""]
    return lines + [_load(e), ""]


def _ann_lines(a: dict) -> list[str]:
    """The approximate top-k's recall against exact search (training/ann.py), measured in-process."""
    if a.get("approximate") is False:
        return [f"Approximate top-k: {a['note']}.", ""]
    if "recommend" not in a:
        return [f"Approximate top-k: not measured ({a.get('error', 'no result')[-300:]}).", ""] if a else []
    shoppers = {"NormPrunedSearch": "shoppers by the length-pruned exact search"}.get(a.get("shopper_search"),
                                                                                     "shoppers from the same IVF index")
    rows = [f"Top-k searches ({shoppers}; similar items from a faiss IVF index, {a['n_lists']} lists, {a['nprobe']} "
            f"probed; built at load in {a['index_build_seconds']} s) against exact search, same shoppers and items as "
            "the load test, in-process:", "",
            "| answer | recall@10 vs exact | queries | exact ms | approximate ms |", "|---|---|---|---|---|"]
    for name in ("recommend", "similar_items"):
        r = a[name]
        rows.append(f"| `{name}` | {r['recall_at_10']} | {fmt(r['queries'])} | {r['exact_ms']} | {r['approximate_ms']} |")
    return rows + [""]


def _serving(v: dict) -> list[str]:
    if "error" in v:
        return ["## Serving", "", f"Failed: {v['error']}", ""]
    m = v["model"]
    lines = ["## Serving (BentoML service vs bare Starlette/uvicorn floor, same client)", "",
             f"Model: ALS, {fmt(m.get('users'))} users ({fmt(m.get('active_users'))} with interactions) × "
             f"{fmt(m.get('items'))} items × {m.get('factors')} factors. Endpoints: {', '.join(v['endpoints'])}"
             + ("" if v.get("propensity_endpoint") else " (no /propensity endpoint in the service yet)") + ". "
             f"Server: {v.get('workers', 1)} worker(s); start (bundle load) {v.get('server_start_seconds')} s. Memory of all its "
             f"processes: PSS idle {fmt(v.get('pss_idle_gb'))} GB, peak {fmt(v.get('pss_peak_total_gb'))} GB; RSS sum idle "
             f"{fmt(v.get('rss_idle_gb'))} GB, peak {fmt(v.get('rss_peak_total_gb'))} GB (largest process "
             f"{fmt(v.get('rss_peak_largest_gb'))} GB). The workers memory-map the model's arrays: PSS counts those "
             "shared pages once, the RSS sum once per worker.", "",
             *_ann_lines(v.get("ann") or {}),
             "Open loop (latency from the planned send time):", "",
             "| endpoint | rate | target | achieved req/s | p50 ms | p95 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for r in v["runs"]:
        lines.append(_run_row(r, f"{r.get('rate') or 0:g}/s"))
    lines += ["", "Closed loop, saturation:", "",
              "| endpoint | concurrency | target | req/s | p50 ms | p95 ms | p99 ms | errors |",
              "|---|---|---|---|---|---|---|---|"]
    for r in v["saturation"]:
        lines.append(_run_row(r, str(r.get("concurrency"))))
    samples = sorted({e.split(":")[0] + ": " + e.split(":", 1)[1].strip()[:60] for r in v["runs"] + v["saturation"]
                      for e in r.get("error_samples", []) if ":" in e})
    if samples:
        lines += ["", "Errors seen (samples): " + "; ".join(f"`{x}`" for x in samples)
                  + " — 429 is the service shedding load beyond its max_concurrency of requests in flight."]
    return lines + ["", _load(v), ""]


def _run_row(r: dict, how: str) -> str:
    if "failed" in r:
        return f"| {r['path']} | {how} | {r.get('target')} | failed: {r['failed'][-200:]} | | | | |"
    lat = r["latency_ms"]
    return (f"| {r['path']} | {how} | {r['target']} | {fmt(r['throughput_rps'], 1)} | {fmt(lat['p50'])} | "
            f"{fmt(lat['p95'])} | {fmt(lat['p99'])} | {r['errors']} |")


def _batch(b: dict) -> list[str]:
    if "error" in b:
        return ["## Batch scoring", "", f"Failed: {b['error']}", ""]
    return ["## Batch scoring (top-10 of every user, bought items excluded, to Parquet)", "",
            "| what | ours (training.batch.score_all) | floor (implicit C++ top-k) | ratio |", "|---|---|---|---|",
            f"| {fmt(b.get('users'))} users, {fmt(b.get('rows'))} rows | {fmt_spread(b['ours']['seconds'], 1, ' s')}, "
            f"{fmt(b['ours']['peak_rss_gb'])} GB | {fmt_spread(b['floor']['seconds'], 1, ' s')}, "
            f"{fmt(b['floor']['peak_rss_gb'])} GB | {fmt(b.get('ratio'))} |", "",
            f"Same top-1 item as the floor for {fmt(100 * b['rank1_agreement'], 1) if b.get('rank1_agreement') is not None else '–'}% "
            f"of sampled users; same row count: {b.get('rows_equal')}.", "", _load(b), ""]
