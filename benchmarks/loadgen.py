"""A bounded asyncio load generator for 127.0.0.1 (one process, one event loop), on aiohttp
(default) or httpx (``--client httpx``).

httpx's AsyncClient was measured here at ~11 ms per sequential request and ~60 req/s with 400
concurrent requests against the bare floor app (aiohttp: 0.9 ms and ~790 req/s; a raw socket
0.5 ms): with httpx the client, not the server, would be what is measured, so aiohttp (already
installed with BentoML) is the default. Both send the same bodies the same way.

open loop   requests are sent at fixed times (rate r for d seconds: exactly r*d requests), whatever
            the answers do; latency is measured from the planned send time, so a slow server
            cannot hide its queue (no coordinated omission). The time from actual send is kept
            as ``service_ms``. At most ``max_in_flight`` requests are open; a send that would
            exceed it is counted as ``dropped`` (an error), never queued without bound.
closed loop ``concurrency`` workers send back to back for d seconds: the saturation throughput.

    python -m benchmarks.loadgen --url http://127.0.0.1:N --path /recommend --bodies FILE.json \\
        (--rate R | --concurrency C) --duration D [--max-requests N] [--timeout T] [--warmup N] [--client aiohttp|httpx]

A bodies file is a JSON list of request bodies for ``--path``, or of ``{"path": ..., "body": ...}`` objects (a mix
of endpoints, e.g. /recommend and /session; ``--path`` is then only a label). A run ends after ``--duration``
seconds or ``--max-requests`` requests, whichever comes first.

Prints one JSON object. Only loopback URLs are accepted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlparse

import httpx
import numpy as np

MAX_REQUESTS = 200_000  # hard bound on what one run may send


def percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3),
            "mean": round(float(a.mean()), 3)}


class Recorder:
    def __init__(self):
        self.latency, self.service, self.errors, self.samples, self.ok, self.dropped = [], [], 0, [], 0, 0

    def error(self, what: str):
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


class Client:
    """POST JSON bytes; returns (status, text). One keep-alive pool of ``conns`` connections. ``keys``:
    the API key per scope (``{"storefront": ...}``), sent as ``Authorization: Bearer`` to the paths of that
    scope (serving/auth.py)."""

    def __init__(self, kind: str, url: str, conns: int, timeout: float, keys: dict[str, str] | None = None):
        self.kind, self.url, self.conns, self.timeout = kind, url, conns, timeout
        from serving.auth import ROUTE_SCOPES

        self._headers = {path: {"content-type": "application/json"}
                         | ({"authorization": f"Bearer {keys[scope]}"} if scope in (keys or {}) else {})
                         for path, scope in ROUTE_SCOPES.items()}

    async def __aenter__(self):
        if self.kind == "httpx":
            limits = httpx.Limits(max_connections=self.conns, max_keepalive_connections=self.conns)
            self._c = httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits)
        else:
            import aiohttp

            self._c = aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(limit=self.conns),
                                            timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc):
        await (self._c.aclose() if self.kind == "httpx" else self._c.close())

    async def post(self, path: str, body: bytes) -> tuple[int, str]:
        headers = self._headers.get(path, {"content-type": "application/json"})
        if self.kind == "httpx":
            r = await self._c.post(path, content=body, headers=headers)
            return r.status_code, r.text if r.status_code != 200 else ""
        async with self._c.post(path, data=body, headers=headers) as r:
            text = await r.text()
            return r.status, text if r.status != 200 else ""


async def _send(client: Client, path: str, body: bytes, rec: Recorder, planned: float | None,
                by_path: dict[str, list[float]] | None = None):
    sent = time.perf_counter()
    try:
        status, text = await client.post(path, body)
        done = time.perf_counter()
        if status != 200:
            rec.error(f"{path}: HTTP {status}: {text[:200]}")
            return
        rec.ok += 1
        rec.service.append((done - sent) * 1000)
        rec.latency.append((done - (planned if planned is not None else sent)) * 1000)
        if by_path is not None:
            by_path.setdefault(path, []).append(rec.latency[-1])
    except Exception as e:  # noqa: BLE001 - any failure of a request is an error of the run
        rec.error(f"{path}: {type(e).__name__}: {e}")


async def open_loop(client, bodies, rate, duration, max_in_flight, max_requests=MAX_REQUESTS,
                    by_path: dict[str, list[float]] | None = None) -> tuple[Recorder, float]:
    """Send ``bodies`` ((path, body) pairs, round-robin) at ``rate`` for ``duration`` seconds or ``max_requests``
    requests; with ``by_path``, each path's latencies are kept there too."""
    rec = Recorder()
    n = min(int(rate * duration), max_requests, MAX_REQUESTS)
    in_flight: set[asyncio.Task] = set()
    start = time.perf_counter() + 0.05
    for i in range(n):
        planned = start + i / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            rec.dropped += 1
            rec.error("dropped: too many requests in flight")
            continue
        task = asyncio.create_task(_send(client, *bodies[i % len(bodies)], rec, planned, by_path))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    return rec, time.perf_counter() - start


async def closed_loop(client, bodies, concurrency, duration, max_requests=MAX_REQUESTS) -> tuple[Recorder, float]:
    rec = Recorder()
    start = time.perf_counter()
    stop = start + duration
    sent = [0]

    async def worker(w: int):
        i = w
        while time.perf_counter() < stop and sent[0] < min(max_requests, MAX_REQUESTS):
            sent[0] += 1
            await _send(client, *bodies[i % len(bodies)], rec, None)
            i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return rec, time.perf_counter() - start


async def main(args) -> dict:
    host = urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {args.url}: loopback only")
    raw = json.load(open(args.bodies))
    mixed = bool(raw) and isinstance(raw[0], dict) and set(raw[0]) == {"path", "body"}
    bodies = [(b["path"], json.dumps(b["body"]).encode()) if mixed else (args.path, json.dumps(b).encode()) for b in raw]
    random.Random(0).shuffle(bodies)
    conns = max(args.concurrency or 0, args.max_in_flight)
    keys = {scope: key for scope, key in (("storefront", args.key), ("marketing", args.marketing_key)) if key}
    async with Client(args.client, args.url, conns, args.timeout, keys) as client:
        for i in range(args.warmup):  # connections, caches, lazy imports
            await _send(client, *bodies[-1 - i % len(bodies)], Recorder(), None)
        if args.rate:
            rec, elapsed = await open_loop(client, bodies, args.rate, args.duration, args.max_in_flight, args.max_requests)
        else:
            rec, elapsed = await closed_loop(client, bodies, args.concurrency, args.duration, args.max_requests)
    return {
        "path": args.path, "client": args.client, "mode": "open" if args.rate else "closed", "rate": args.rate,
        "concurrency": args.concurrency, "duration_s": round(elapsed, 3), "requests": rec.ok + rec.errors,
        "ok": rec.ok, "errors": rec.errors, "dropped": rec.dropped, "error_samples": rec.samples,
        "throughput_rps": round(rec.ok / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": percentiles(rec.latency), "service_ms": percentiles(rec.service),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--bodies", required=True, help="JSON list of request bodies, used round-robin")
    p.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    p.add_argument("--concurrency", type=int, default=None, help="closed loop: workers")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS, help="end the run after this many requests")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    p.add_argument("--key", default=None, help="storefront key (Authorization: Bearer) for the storefront paths")
    p.add_argument("--marketing-key", default=None, help="marketing key for /propensity and /churn_risk")
    a = p.parse_args()
    if (a.rate is None) == (a.concurrency is None):
        sys.exit("give exactly one of --rate and --concurrency")
    if a.duration <= 0 or a.duration > 300:
        sys.exit("--duration must be in (0, 300] seconds")
    print(json.dumps(asyncio.run(main(a))))
