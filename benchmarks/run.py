"""Run the benchmarks and write benchmarks/results/<mode>.json and <mode>.md.

    python -m benchmarks.run --mode quick|full [--only pipeline,training,serving,batch]

Every figure is measured next to its floor in the same run, in fresh child processes, repeated
(medians, min-max spread, ratio ours/floor). ``--only`` reruns some sections and keeps the
others' last results in the files. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import shops
from benchmarks.common import (DATA, GB, REPO, RESULTS, child_env, exact_ratio, load_brief, machine, ratio, run_child,
                               run_loadgen, summary, write_results)
from benchmarks.report import markdown

SECTIONS = ("pipeline", "training", "serving", "batch", "ease")  # EASE last: at its cap it is the longest


@dataclass
class Mode:
    name: str
    pipeline_shops: list[tuple[str, int]]  # (shop, repeats)
    model_shop: str  # the shop the training / serving / batch bundle is built from
    als_repeats: int
    ease_max_items: int | None  # None: EASEConfig's default cap
    ease_repeats: int
    fit_bundle_repeats: int
    rates: list[float]
    rate_seconds: float
    saturation_seconds: float
    saturation_concurrency: int
    batch_repeats: int
    goals_at: str  # the pipeline shop the goals apply to
    timeouts: dict = field(default_factory=dict)


MODES = {
    "quick": Mode("quick", [("small", 3), ("q1m", 3)], "q1m", als_repeats=3, ease_max_items=2000, ease_repeats=2,
                  fit_bundle_repeats=1, rates=[50, 100, 200], rate_seconds=4, saturation_seconds=4,
                  saturation_concurrency=16, batch_repeats=2, goals_at="q1m"),
    "full": Mode("full", [("1m", 3), ("large", 2), ("50m", 1)], "large", als_repeats=2, ease_max_items=None,
                 ease_repeats=1, fit_bundle_repeats=1, rates=[50, 100, 200], rate_seconds=15, saturation_seconds=10,
                 saturation_concurrency=16, batch_repeats=1, goals_at="large"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_stamp() -> dict:
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "at": time.strftime("%H:%M:%S")}


# ----------------------------------------------------------------------------------- pipeline
def section_pipeline(mode: Mode, previous: dict | None = None, only_shops: list[str] | None = None) -> dict:
    """``only_shops``: measure just these and keep the other shops of ``previous`` (the last run)."""
    from benchmarks.pipeline import STAGES

    out = {"shops": {}, "load": [load_stamp()]}
    if only_shops and previous and "shops" in previous:
        out["shops"] = {k: v for k, v in previous["shops"].items() if k not in only_shops}
    for shop, repeats in mode.pipeline_shops:
        if only_shops and shop not in only_shops:
            continue
        shop_path = shops.ensure(shop, log)
        work = DATA / "work" / shop
        res = {"shop": shops.info(shop), "repeats": repeats, "stages": {}}
        raw = {s: {"ours": [], "duck": []} for s in STAGES}
        for rep in range(repeats):
            for stage in STAGES:
                sides = ("ours", "duck") if rep % 2 == 0 else ("duck", "ours")  # alternate who goes first
                for side in sides:
                    r = run_child(["benchmarks.pipeline", "task", f"{side}_{stage}", str(shop_path), str(work)],
                                  timeout=1200, max_rss_gb=20)
                    log(f"pipeline {shop} {stage} {side} #{rep + 1}: "
                        + (f"{r.seconds:.1f} s, {r.peak_rss_gb:.2f} GB" if r.ok else f"FAILED {r.error}"))
                    raw[stage][side].append(r)
                if not raw[stage]["ours"][-1].ok and stage == "canonical":
                    break
        checks = {}
        for stage in STAGES:
            row = {}
            for side in ("ours", "duck"):
                runs = raw[stage][side]
                row[side] = {"seconds": summary([r.seconds for r in runs if r.ok]),
                             "peak_rss_gb": round(max((r.peak_rss_gb for r in runs), default=0), 3),
                             "process_seconds": summary([r.process_seconds for r in runs]),
                             "failures": [r.error for r in runs if not r.ok],
                             "payload": next((r.payload for r in runs if r.ok), {})}
            row["ratio"] = ratio(row["ours"]["seconds"]["median"], row["duck"]["seconds"]["median"])
            res["stages"][stage] = row
            po, pd_ = row["ours"]["payload"], row["duck"]["payload"]
            if stage == "canonical":
                checks["canonical_rows_equal"] = bool(po and pd_ and po.get("tables") == pd_.get("tables"))
            elif stage == "matrix":
                checks["matrix_equal"] = bool(po and pd_ and all(po.get(k) == pd_.get(k) for k in ("shape", "nnz"))
                                              and abs(po.get("sum", 0) - pd_.get("sum", 1)) < 1e-6 * max(1, po.get("sum", 1)))
            else:
                checks["aggregates_equal"] = _aggregates_equal(work)
        res["checks"] = checks
        tot = {}
        for side in ("ours", "duck"):
            meds = [res["stages"][s][side]["seconds"]["median"] for s in STAGES]
            tot[side] = {"seconds": None if None in meds else round(sum(meds), 3),
                         "peak_rss_gb": max(res["stages"][s][side]["peak_rss_gb"] for s in STAGES)}
        tot["ratio"] = ratio(tot["ours"]["seconds"], tot["duck"]["seconds"])
        res["total"] = tot
        out["shops"][shop] = res
        out["load"].append(load_stamp())
    g = out["shops"].get(mode.goals_at)
    if g:
        t = g["total"]
        out["goals"] = {"shop": mode.goals_at, "events": g["shop"]["events"],
                        "seconds": t["ours"]["seconds"], "seconds_ok": _le(t["ours"]["seconds"], 60),
                        "peak_rss_gb": t["ours"]["peak_rss_gb"], "peak_ok": _le(t["ours"]["peak_rss_gb"], 6),
                        "ratio": t["ratio"], "ratio_ok": _le(exact_ratio(t["ours"]["seconds"], t["duck"]["seconds"]), 1.5)}
    return out


def _le(value, limit) -> bool | None:
    return None if value is None else bool(value <= limit)


def _aggregates_equal(work: Path) -> bool | None:
    import pandas as pd

    a, b = work / "aggregates_ours.parquet", work / "aggregates_duck.parquet"
    if not (a.exists() and b.exists()):
        return None
    x, y = pd.read_parquet(a), pd.read_parquet(b)
    if len(x) != len(y) or list(x["user_id"]) != list(y["user_id"]):
        return False
    same = all((x[c].to_numpy() == y[c].to_numpy()).all() for c in ("views", "carts", "purchases", "distinct_items"))
    return bool(same and (pd.to_datetime(x["last_ts"]).to_numpy() == pd.to_datetime(y["last_ts"]).to_numpy()).all())


# ----------------------------------------------------------------------------------- model
def bundle_dir(mode: Mode) -> Path:
    return DATA / "work" / f"bundle-{mode.model_shop}"


def ensure_bundle(mode: Mode, force_fit: bool = False) -> dict:
    """The serving / batch bundle: prepared, then ALS fitted into it (by the training section
    when it runs, else here)."""
    shop = shops.ensure(mode.model_shop, log)
    work = DATA / "work" / mode.model_shop
    b = bundle_dir(mode)
    info = {}
    if not (work / "canonical" / "events.parquet").exists():
        r = run_child(["benchmarks.pipeline", "task", "ours_canonical", str(shop), str(work)], timeout=1800)
        if not r.ok:
            raise RuntimeError(f"ingest failed: {r.error}")
    if not (b / "meta.json").exists():
        r = run_child(["benchmarks.model", "prepare", str(shop), str(work / "canonical"), str(b)], timeout=1800)
        if not r.ok:
            raise RuntimeError(f"bundle prepare failed: {r.error}")
        info["prepare"] = {"seconds": round(r.seconds, 1), "peak_rss_gb": round(r.peak_rss_gb, 2), **r.payload}
        log(f"bundle prepared: {info['prepare']}")
        (b / "bench_prepare.json").write_text(json.dumps(info["prepare"]))
    elif (b / "bench_prepare.json").exists():
        info["prepare"] = json.loads((b / "bench_prepare.json").read_text())
    kind = json.loads((b / "model" / "model.json").read_text())["kind"]
    if kind != "als" or force_fit:
        r = run_child(["benchmarks.training", "task", "als_ours", str(b / "interactions.npz"), str(b / "model")],
                      timeout=3600)
        if not r.ok:
            raise RuntimeError(f"ALS fit failed: {r.error}")
        info["als_fit_seconds"] = round(r.seconds, 1)
        shutil.rmtree(b / "top_lists", ignore_errors=True)  # the previous model's (benchmarks/serving_floors.py remakes them)
    return info


# ----------------------------------------------------------------------------------- training
def section_training(mode: Mode) -> dict:
    info = ensure_bundle(mode)
    b = bundle_dir(mode)
    matrix = str(b / "interactions.npz")
    out = {"bundle": info, "load": [load_stamp()]}
    als = {"ours": [], "raw": []}
    for rep in range(mode.als_repeats):
        for side in (("ours", "raw") if rep % 2 == 0 else ("raw", "ours")):
            args = ["benchmarks.training", "task", f"als_{side}", matrix]
            if side == "ours" and rep == 0:
                args.append(str(b / "model"))  # the first fit through our interface is the served model
            r = run_child(args, timeout=3600)
            log(f"training als {side} #{rep + 1}: " + (f"{r.seconds:.1f} s" if r.ok else f"FAILED {r.error}"))
            als[side].append(r)
    out["als"] = _pair(als, "ours", "raw")
    payload = next((r.payload for r in als["ours"] if r.ok), {})
    out["als"]["matrix"] = {"shape": payload.get("shape"), "nnz": payload.get("nnz")}
    o, f = out["als"]["ours"]["seconds"]["median"], out["als"]["raw"]["seconds"]["median"]
    out["als"]["overhead_pct"] = None if not (o and f) else round(100 * (o / f - 1), 1)
    direct = [r.payload["interface_seconds"] / r.payload["library_seconds"] * 100 for r in als["ours"]
              if r.ok and r.payload.get("library_seconds")]
    out["als"]["direct_overhead_pct"] = summary(direct)  # interface time / library time, same process
    d = out["als"]["direct_overhead_pct"]["median"]
    out["als"]["goal_ok"] = None if out["als"]["overhead_pct"] is None else (
        out["als"]["overhead_pct"] <= 5 or (d is not None and d <= 5))

    shop_work = DATA / "work" / mode.model_shop
    fb = []
    for rep in range(mode.fit_bundle_repeats):
        r = run_child(["benchmarks.training", "task", "fit_bundle_ours", str(shop_work / "canonical")], timeout=3600)
        log(f"training fit_bundle #{rep + 1}: " + (f"{r.seconds:.1f} s" if r.ok else f"FAILED {r.error}"))
        fb.append(r)
    out["fit_bundle"] = {"seconds": summary([r.seconds for r in fb if r.ok]),
                         "peak_rss_gb": round(max((r.peak_rss_gb for r in fb), default=0), 3),
                         "payload": next((r.payload for r in fb if r.ok), {}),
                         "failures": [r.error for r in fb if not r.ok]}
    out["fit_bundle"]["ratio_to_raw_als"] = ratio(out["fit_bundle"]["seconds"]["median"], f)
    out["load"].append(load_stamp())
    return out


def section_ease(mode: Mode) -> dict:
    ensure_bundle(mode)
    matrix = str(bundle_dir(mode) / "interactions.npz")
    out = {"load": [load_stamp()]}
    ease = {"ours": [], "floor": []}
    extra = [] if mode.ease_max_items is None else [str(mode.ease_max_items)]
    env = {"OPENBLAS_NUM_THREADS": str(os.cpu_count() or 1)}  # a training job may use every core
    for rep in range(mode.ease_repeats):
        for side in (("ours", "floor") if rep % 2 == 0 else ("floor", "ours")):
            r = run_child(["benchmarks.training", "task", f"ease_{side}", matrix, *extra], timeout=3600,
                          max_rss_gb=20, env=env)
            log(f"training ease {side} #{rep + 1}: " + (f"{r.seconds:.1f} s, {r.peak_rss_gb:.1f} GB" if r.ok
                                                        else f"FAILED {r.error}"))
            ease[side].append(r)
    res = _pair(ease, "ours", "floor")
    po = next((r.payload for r in ease["ours"] if r.ok), {})
    pf = next((r.payload for r in ease["floor"] if r.ok), {})
    res["max_items"] = po.get("max_items") or pf.get("max_items")
    res["blas_threads"] = env["OPENBLAS_NUM_THREADS"]
    if po and pf:
        res["same_weights"] = bool(abs(po["check"] - pf["check"]) <= 1e-4 * abs(pf["check"]))

    out.update(res)
    out["load"].append(load_stamp())
    return out


def _pair(runs: dict, a: str, b: str) -> dict:
    res = {}
    for side in (a, b):
        rs = runs[side]
        res[side] = {"seconds": summary([r.seconds for r in rs if r.ok]),
                     "peak_rss_gb": round(max((r.peak_rss_gb for r in rs), default=0), 3),
                     "failures": [r.error for r in rs if not r.ok]}
    res["ratio"] = ratio(res[a]["seconds"]["median"], res[b]["seconds"]["median"])
    return res


# ----------------------------------------------------------------------------------- serving
class TreeRSS:
    """Polls the memory of a process and its descendants: peak of the RSS sum, of the largest RSS,
    and of the PSS sum (proportional set size: a page shared by the workers, such as the
    memory-mapped model factors, counted once in total rather than once per worker)."""

    def __init__(self, pid: int):
        self.pid, self.peak_total, self.peak_largest, self._stop = pid, 0, 0, threading.Event()
        self.peak_pss_total = 0
        self._t = threading.Thread(target=self._run, daemon=True)

    def pss(self) -> int:
        import psutil

        total = 0
        try:
            root = psutil.Process(self.pid)
            for p in [root] + root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += p.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
        return total

    def sample(self) -> tuple[int, int]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0, 0
        rss = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss.append(p.memory_info().rss)
        return sum(rss), max(rss, default=0)

    def _run(self):
        n = 0
        while not self._stop.wait(0.25):
            total, largest = self.sample()
            self.peak_total, self.peak_largest = max(self.peak_total, total), max(self.peak_largest, largest)
            if n % 4 == 0:  # PSS reads every mapping of every process: once a second
                self.peak_pss_total = max(self.peak_pss_total, self.pss())
            n += 1

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


@contextlib.contextmanager
def floor_server():
    from tests.server import free_port, local_server

    port = free_port()
    with local_server([sys.executable, "-m", "benchmarks.floor_app", "--port", str(port)], port,
                      DATA / "work" / f"floor-{port}.log", timeout=30, env=child_env(), what="floor app") as (url, _):
        yield url


def _load(url: str, path: str, bodies: Path, rate: float | None, concurrency: int | None, seconds: float) -> dict:
    return run_loadgen(url, path, bodies, seconds, rate, concurrency,
                       extra=("--client", os.environ.get("BENCH_CLIENT", "aiohttp")))


def section_serving(mode: Mode) -> dict:
    import httpx

    sys.path.insert(0, str(REPO))
    from tests.server import bentoml_server

    info = ensure_bundle(mode)
    b = bundle_dir(mode)
    home = DATA / "work" / f"bentoml_home-{mode.model_shop}"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    r = run_child(["benchmarks.model", "publish", str(b), str(home)], timeout=600)
    if not r.ok:
        raise RuntimeError(f"publish failed: {r.error}")
    bodies_dir = DATA / "work" / f"bodies-{mode.model_shop}"
    r = run_child(["benchmarks.model", "bodies", str(b), str(bodies_dir)], timeout=600)
    if not r.ok:
        raise RuntimeError(f"bodies failed: {r.error}")
    r = run_child(["benchmarks.model", "recall", str(b), str(bodies_dir)], timeout=900)
    ann = r.payload if r.ok else {"error": r.error}
    prepare = info.get("prepare", {})
    out = {"model": {"users": prepare.get("users"), "items": prepare.get("items"),
                     "active_users": prepare.get("active_users"), "factors": 100},
           "load": [load_stamp()], "runs": [], "saturation": [], "ann": ann}
    workers = os.environ.get("BENCH_WORKERS", "2")  # one per core: the production setting on this machine
    out["workers"] = int(workers)
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "OPENBLAS_NUM_THREADS": "1", "SHOPREC_WORKERS": workers,
           "SHOPREC_RATE_PER_KEY": "1000000/second"}  # saturation runs measure the server, not the per-key limit
    started = time.perf_counter()
    with bentoml_server(home, timeout=300, extra_env=env) as url, floor_server() as floor_url:
        out["server_start_seconds"] = round(time.perf_counter() - started, 1)
        server_pid = _server_pid(home)
        paths = httpx.get(f"{url}/docs.json", timeout=10).json()["paths"]
        endpoints = ["/recommend", "/similar_items", "/rerank"]
        if "/propensity" in paths:
            endpoints.append("/propensity")
        out["propensity_endpoint"] = "/propensity" in paths
        out["endpoints"] = endpoints
        with TreeRSS(server_pid) as rss:
            out["rss_idle_gb"] = round(rss.sample()[0] / GB, 3)
            out["pss_idle_gb"] = round(rss.pss() / GB, 3)
            for ep in endpoints:
                body = bodies_dir / f"{ep.strip('/')}.json"
                for rate in mode.rates:
                    for target, base in (("service", url), ("floor", floor_url)):
                        res = _load(base, ep, body, rate, None, mode.rate_seconds)
                        res["target"] = target
                        out["runs"].append(res)
                        log(f"serving {target} {ep} @{rate:g}/s: " + load_brief(res))
                for target, base in (("service", url), ("floor", floor_url)):
                    res = _load(base, ep, body, None, mode.saturation_concurrency, mode.saturation_seconds)
                    res["target"] = target
                    out["saturation"].append(res)
                    log(f"serving {target} {ep} saturation: " + load_brief(res))
            out["rss_peak_total_gb"] = round(rss.peak_total / GB, 3)
            out["rss_peak_largest_gb"] = round(rss.peak_largest / GB, 3)
            out["pss_peak_total_gb"] = round(rss.peak_pss_total / GB, 3)
    out["load"].append(load_stamp())
    out["goals"] = _serving_goals(out, mode)
    return out


def _server_pid(home: Path) -> int:
    """The pid of the `bentoml serve` we started (tests.server keeps it to itself): the newest
    process whose command line serves our module with this BENTOML_HOME."""
    import psutil

    best = None
    for p in psutil.process_iter(["pid", "cmdline", "create_time", "environ"]):
        with contextlib.suppress(psutil.Error, TypeError):
            cmd = " ".join(p.info["cmdline"] or [])
            if "bentoml serve serving.service:Shoprec" in cmd and (p.info["environ"] or {}).get("BENTOML_HOME") == str(home):
                if best is None or p.info["create_time"] > best.info["create_time"]:
                    best = p
    if best is None:
        raise RuntimeError("cannot find the bentoml server process")
    return best.pid


def _serving_goals(out: dict, mode: Mode) -> dict:
    def find(runs, target, path, rate=None):
        for r in runs:
            if r.get("target") == target and r.get("path") == path and (rate is None or r.get("rate") == rate):
                return r
        return {}

    rec100 = find(out["runs"], "service", "/recommend", 100.0)
    p99 = (rec100.get("latency_ms") or {}).get("p99")
    sat = {}
    for ep in out["endpoints"]:
        s, f = find(out["saturation"], "service", ep), find(out["saturation"], "floor", ep)
        sat[ep] = {"service_rps": s.get("throughput_rps"), "floor_rps": f.get("throughput_rps"),
                   "ratio": ratio(s.get("throughput_rps"), f.get("throughput_rps"))}
    errors = sum(r.get("errors", 0) for r in out["runs"] + out["saturation"] if r.get("target") == "service")
    failed = [r["path"] for r in out["runs"] + out["saturation"] if "failed" in r]
    rec = sat.get("/recommend", {})
    rec_sat = exact_ratio(rec.get("service_rps"), rec.get("floor_rps"))
    return {"recommend_p99_at_100_ms": p99, "recommend_p99_ok": _le(p99, 15),
            "saturation": sat, "recommend_saturation_ok": None if rec_sat is None else rec_sat >= 0.7,
            "rss_gb": out.get("pss_peak_total_gb"), "rss_ok": _le(out.get("pss_peak_total_gb"), 2),
            "rss_sum_gb": out.get("rss_peak_total_gb"),
            "errors": errors, "errors_ok": errors == 0 and not failed, "failed_runs": failed}


# ----------------------------------------------------------------------------------- batch
def section_batch(mode: Mode) -> dict:
    ensure_bundle(mode)
    b = bundle_dir(mode)
    work = DATA / "work"
    runs = {"ours": [], "floor": []}
    for rep in range(mode.batch_repeats):
        for side in (("ours", "floor") if rep % 2 == 0 else ("floor", "ours")):
            r = run_child(["benchmarks.batch", "task", side, str(b), str(work / f"top10-{side}.parquet")],
                          timeout=3600, max_rss_gb=16)
            log(f"batch {side} #{rep + 1}: " + (f"{r.seconds:.1f} s, {r.peak_rss_gb:.2f} GB" if r.ok
                                                 else f"FAILED {r.error}"))
            runs[side].append(r)
    out = _pair(runs, "ours", "floor")
    po = next((r.payload for r in runs["ours"] if r.ok), {})
    pf = next((r.payload for r in runs["floor"] if r.ok), {})
    out["users"], out["rows"] = po.get("users"), po.get("rows")
    if po and pf:
        a, c = po["check"]["rank1"], pf["check"]["rank1"]
        common = set(a) & set(c)
        out["rank1_agreement"] = round(sum(a[u] == c[u] for u in common) / max(1, len(common)), 4)
        out["rows_equal"] = po.get("rows") == pf.get("rows")
    med = out["ours"]["seconds"]["median"]
    out["goal_ok"] = _le(med, 300)
    out["load"] = [load_stamp()]
    return out


# ----------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--shops", default="", help="pipeline: only these shops (comma-separated); the others' last results stay")
    args = p.parse_args(argv)
    mode = MODES[args.mode]
    wanted = [s for s in args.only.split(",") if s]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {sorted(unknown)}")
    (DATA / "work").mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{mode.name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["mode"] = mode.name
    data.setdefault("sections", {})
    data["machine"] = machine()
    started = time.perf_counter()
    for name in SECTIONS:
        if name not in wanted:
            continue
        log(f"== {name} ({mode.name})")
        t0 = time.perf_counter()
        try:
            if name == "pipeline" and args.shops:
                result = section_pipeline(mode, data["sections"].get("pipeline"), args.shops.split(","))
            else:
                result = globals()[f"section_{name}"](mode)
        except Exception as e:  # noqa: BLE001 - record it, go on with the other sections
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}"}
        result["section_seconds"] = round(time.perf_counter() - t0, 1)
        result["machine"] = machine()
        data["sections"][name] = result
        write_results(mode.name, data, markdown(data))  # after each section: partial results survive
    data["run_seconds"] = round(time.perf_counter() - started, 1)
    j, m = write_results(mode.name, data, markdown(data))
    log(f"wrote {j.relative_to(REPO)} and {m.relative_to(REPO)} in {data['run_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
