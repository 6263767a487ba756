"""Soak: the real server on 127.0.0.1 at a steady 100 req/s for 5 minutes, a storefront's mix of
calls (recommend for known and unknown shoppers, similar items, bought together, session,
rerank, real-time events); every answer must be a 200, and the server's memory must stay flat.

    python -m benchmarks.soak [--rate 100] [--duration 300] [--shop data/bench/shop-small]

The model: the "als" recipe of configs/train.yaml fitted on the shop (the small synthetic shop,
generated when absent), stored in a temporary BentoML home. Open loop (requests are sent at fixed
times whatever the answers do; latency counts from the planned send time), at most 256 in flight.
Memory: the RSS of the server's process tree every 5 s (psutil); growth is the last minute's
median over the first minute after warm-up. Writes benchmarks/results/soak.md (``--json FILE``: every
figure and memory sample as JSON too).
Not part of the test suite (it takes the duration plus about a minute).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, machine
from benchmarks.loadgen import MAX_REQUESTS, Client, percentiles
from benchmarks.loadgen import open_loop as loadgen_open_loop

MIX = {"recommend": 0.45, "recommend_unknown": 0.05, "similar_items": 0.15, "bought_together": 0.1,
       "session": 0.05, "rerank": 0.1, "events": 0.1}
SAMPLE_EVERY_S = 5.0
FLAT_LIMIT = 0.05  # memory "flat": the last minute within 5% of the first minute


def prepare_model(shop: Path, home: Path) -> Path:
    """Fit the "als" recipe on ``shop`` and store it in ``home``; returns the bundle folder."""
    if not (shop / "orders.parquet").exists():
        from features.synthetic import ShopConfig, generate_shop

        generate_shop(ShopConfig.preset("small"), shop)
    from features.ingest import ingest, load_canonical
    from features.interactions import InteractionConfig
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle

    work = home / "canonical"
    ingest(shop / "orders.parquet", shop / "events.parquet", shop / "items.parquet", work)
    canonical = load_canonical(work)
    config = TrainConfig.load(REPO / "configs" / "train.yaml")
    als = Candidate(name="als", interactions=InteractionConfig(binary=True), model=config.search.als[0])
    bundle = fit_bundle(als, config, canonical.events, canonical.orders,
                        {"run_id": "soak", "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                        items=canonical.items)
    bundle.save(home / "bundle")
    code = ("import sys; from pathlib import Path; from training.publish import store_bundle; "
            "store_bundle(Path(sys.argv[1]), {'registry_version': 'soak'})")
    subprocess.run([sys.executable, "-c", code, str(home / "bundle")], cwd=REPO, check=True,
                   env=dict(os.environ, BENTOML_HOME=str(home)))
    return home / "bundle"


def request_mix(bundle_dir: Path, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` (path, body) pairs drawn by MIX from the bundle's own shoppers and items."""
    from features.vocab import IdVocab

    rng = np.random.default_rng(seed)
    users = IdVocab.load(bundle_dir / "users.npz").ids
    items = IdVocab.load(bundle_dir / "items.npz").ids
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    out = []
    for i, kind in enumerate(kinds):
        user, some = str(rng.choice(users)), [str(x) for x in rng.choice(items, size=8, replace=False)]
        body = {
            "recommend": lambda: ("/recommend", {"user_id": user, "k": 10}),
            "recommend_unknown": lambda: ("/recommend", {"user_id": f"new-shopper-{i}", "k": 10}),
            "similar_items": lambda: ("/similar_items", {"item_id": some[0], "k": 10}),
            "bought_together": lambda: ("/bought_together", {"items": some[:3], "k": 5}),
            "session": lambda: ("/session", {"items": some[:5], "k": 10}),
            "rerank": lambda: ("/rerank", {"user_id": user, "items": [str(x) for x in rng.choice(items, size=100)]}),
            "events": lambda: ("/events", {"user_id": user, "events": [{"item_id": some[1], "event_type": "view"}]}),
        }[kind]()
        out.append((body[0], json.dumps(body[1]).encode()))
    return out


class MemorySampler:
    """RSS of a process and its children every ``every`` seconds, in a thread."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY_S):
        import psutil

        self.root, self.every, self.samples = psutil.Process(pid), every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for p in [self.root] + self.root.children(recursive=True):
            try:
                total += p.memory_info().rss
            except Exception:  # a child that just exited
                pass
        return total

    def _run(self):
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - start, 1), self._rss()))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def open_loop(url: str, requests: list[tuple[str, bytes]], rate: float, max_in_flight: int = 256):
    """Each of ``requests`` once, at ``rate`` (benchmarks/loadgen.py's open loop), after a warm-up of 50."""
    from tests.server import STOREFRONT_KEY  # the key bentoml_server gives the service

    by_path: dict[str, list[float]] = {}
    async with Client("aiohttp", url, max_in_flight, 10.0, {"storefront": STOREFRONT_KEY}) as client:
        for path, body in requests[:50]:  # warm-up: connections, caches
            await client.post(path, body)
        rec, elapsed = await loadgen_open_loop(client, requests, rate, len(requests) / rate + 1.0, max_in_flight,
                                               max_requests=len(requests), by_path=by_path)
    return rec, elapsed, by_path


def memory_summary(samples: list[tuple[float, int]], duration: float) -> dict:
    """First and last window's median RSS after a warm-up (30 s and 60 s windows; a quarter of a
    short run), their difference and the linear trend."""
    warmup, window = min(30.0, duration / 4), min(60.0, duration / 4)
    after = [(t, rss) for t, rss in samples if t >= warmup] or samples
    first = [rss for t, rss in after if t < after[0][0] + window] or [after[0][1]]
    last = [rss for t, rss in after if t >= after[-1][0] - window] or [after[-1][1]]
    start, end = statistics.median(first), statistics.median(last)
    slope = np.polyfit([t for t, _ in after], [rss for _, rss in after], 1)[0] if len(after) > 2 else 0.0
    mb = 1024**2
    return {"samples": len(samples), "first_minute_mb": round(start / mb, 1), "last_minute_mb": round(end / mb, 1),
            "max_mb": round(max(rss for _, rss in samples) / mb, 1), "growth_mb": round((end - start) / mb, 2),
            "growth_pct": round(100 * (end - start) / start, 2), "slope_mb_per_min": round(slope * 60 / mb, 3),
            "flat": abs(end - start) <= FLAT_LIMIT * start}


def report(result: dict) -> str:
    m, lat, mem = result["machine"], result["latency_ms"], result["memory"]
    verdict = "PASS" if result["errors"] == 0 and mem["flat"] else "FAIL"
    rows = "\n".join(f"| `{p}` | {v['n']:,} | {v['p50']} | {v['p99']} |" for p, v in sorted(result["by_path"].items()))
    return f"""# Soak: {result['rate']:g} req/s for {result['duration_s']:.0f} s on 127.0.0.1 — {verdict}

Written by `python -m benchmarks.soak` on {result['date']} ({m.get('cpu_model', '?')}, {m.get('nproc', '?')} cores, {m.get('memory_gb', '?')} GB;
load average at the start {result['load_start']}, at the end {result['load_end']}: the machine is shared).

| | |
|---|---|
| requests sent | {result['requests']:,} ({result['achieved_rps']} req/s achieved) |
| errors (non-200, failed, dropped) | **{result['errors']}** (dropped {result['dropped']}) |
| latency from planned send, ms | p50 {lat['p50']}, p95 {lat['p95']}, p99 {lat['p99']}, max {lat['max']} |
| server memory (RSS, process tree) | first minute {mem['first_minute_mb']} MB, last minute {mem['last_minute_mb']} MB, max {mem['max_mb']} MB |
| memory growth | **{mem['growth_mb']} MB ({mem['growth_pct']} %)**, trend {mem['slope_mb_per_min']} MB/min, {mem['samples']} samples every {SAMPLE_EVERY_S:g} s |

Mix: {', '.join(f'{k} {v:.0%}' for k, v in MIX.items())}; model: the "als" recipe on the
{result['shop']} shop ({result['users']:,} shoppers, {result['items']:,} items); server: `serving.service:Shoprec`,
one worker, production traffic limits.

| endpoint | answered | p50 ms | p99 ms |
|---|---|---|---|
{rows}

Pass: zero errors and memory flat (last minute within {FLAT_LIMIT:.0%} of the first minute after
a 30 s warm-up).{' Error samples: ' + '; '.join(result['error_samples']) if result['error_samples'] else ''}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--shop", type=Path, default=REPO / "data" / "bench" / "shop-small")
    p.add_argument("--out", type=Path, default=RESULTS / "soak.md")
    p.add_argument("--json", type=Path, default=None, help="also write every figure and memory sample here")
    a = p.parse_args()
    if not 0 < a.rate * a.duration <= 200_000:
        sys.exit("rate x duration must be in (0, 200000]")
    sys.path.insert(0, str(REPO))
    from tests.server import bentoml_server

    with tempfile.TemporaryDirectory(prefix="shoprec-soak-") as tmp:
        home = Path(tmp)
        bundle = prepare_model(a.shop, home)
        if int(a.rate * a.duration) > MAX_REQUESTS:
            sys.exit(f"--rate x --duration is {int(a.rate * a.duration):,} requests: at most {MAX_REQUESTS:,} a run")
        requests = request_mix(bundle, int(a.rate * a.duration))
        env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_PRIVACY_DIR": str(home / "privacy"),
               "SHOPREC_CANONICAL_DIR": str(home / "canonical")}
        load_start = os.getloadavg()
        with bentoml_server(home, extra_env=env) as url:
            pid = _server_pid(url)
            with MemorySampler(pid) as mem:
                rec, elapsed, by_path = asyncio.run(open_loop(url, requests, a.rate))
        from features.vocab import IdVocab

        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(),
            "rate": a.rate, "duration_s": round(elapsed, 1), "requests": rec.ok + rec.errors, "ok": rec.ok,
            "errors": rec.errors, "dropped": rec.dropped, "error_samples": rec.samples,
            "achieved_rps": round((rec.ok + rec.errors) / elapsed, 1),
            "latency_ms": percentiles(rec.latency), "service_ms": percentiles(rec.service),
            "by_path": {path: {"n": len(v), **{k: percentiles(v)[k] for k in ("p50", "p99")}} for path, v in by_path.items()},
            "memory": memory_summary(mem.samples, elapsed), "memory_samples": mem.samples,
            "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
            "shop": a.shop.name, "users": len(IdVocab.load(bundle / "users.npz")),
            "items": len(IdVocab.load(bundle / "items.npz")),
        }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(report(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("requests", "errors", "achieved_rps", "latency_ms", "memory")}, indent=2))
    return 0 if result["errors"] == 0 and result["memory"]["flat"] else 1


def _server_pid(url: str) -> int:
    """The pid of the `bentoml serve` listening on ``url``'s port (the process tree we sample)."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            proc = psutil.Process(conn.pid)
            while proc.parent() is not None and "bentoml" in " ".join(proc.parent().cmdline()):
                proc = proc.parent()
            return proc.pid
    raise RuntimeError(f"no process listens on port {port}")


def _machine() -> dict:
    return {k: v for k, v in machine().items() if k in ("nproc", "memory_gb", "cpu_model", "python", "libraries")}


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
