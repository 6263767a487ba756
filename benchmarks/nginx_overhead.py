"""What nginx in front of two replicas adds to a request, against one replica reached directly.

    python -m benchmarks.nginx_overhead [--rounds 5] [--pairs 1000]

Two shoprec replicas (``bentoml serve serving.service:Shoprec``, one worker each, one model store and event
store, as ``make cluster`` runs them) serving the tiny synthetic shop's bundle, and nginx with the cluster's own
configuration (deploy/nginx.conf, rendered by deploy/cluster.py: upstream keep-alive, passive health checks).
Per round, ``--pairs`` pairs of sequential /recommend requests (known shoppers, aiohttp, keep-alive, one
connection per target), each pair one request to replica-1 directly and the same one through nginx, the order
alternating: both sides see the same moments of a shared, noisy machine. The figure is nginx's p50 minus the
direct p50 per round, then the median over rounds (and the median of the paired differences). The model is small
on purpose: what is measured is the hop, not the model. Writes
benchmarks/results/nginx-overhead.{json,md}. Needs Debian's nginx (`make system-deps`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.common import DATA, REPO, RESULTS, child_env, machine, machine_markdown, summary

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads (PITFALLS.md)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tiny_bundle(home: Path, work: Path) -> list[str]:
    """The tiny synthetic shop fitted as `shoprec train` fits a bundle, published into ``home``; its shoppers."""
    from features.ingest import ingest, load_canonical
    from features.synthetic import ShopConfig, generate_shop
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig

    generate_shop(ShopConfig.preset("tiny"), work / "shop")
    ingest(work / "shop/orders.parquet", work / "shop/events.parquet", work / "shop/items.parquet", work / "canonical")
    canonical = load_canonical(work / "canonical")
    bundle = fit_bundle(Candidate(name="als", model=ALSConfig(factors=16, iterations=5)), TrainConfig(), canonical.events,
                        canonical.orders, {"run_id": "bench-nginx", "trained_at": "2024-01-01T00:00:00Z"},
                        items=canonical.items)
    bundle.save(work / "bundle")
    subprocess.run([sys.executable, "-m", "benchmarks.model", "publish", str(work / "bundle"), str(home)], cwd=REPO,
                   env=child_env(), check=True, capture_output=True)
    return [str(u) for u in bundle.users.ids[:2000]]


@contextlib.contextmanager
def nginx(state: Path, replicas: list[int], port: int):
    from deploy.cluster import nginx_conf
    from tests.server import local_server

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx not found: `make system-deps` installs Debian's nginx")
    conf = nginx_conf(SimpleNamespace(state=state, ports=SimpleNamespace(replicas=replicas, nginx=port)))
    subprocess.run([binary, "-t", "-q", "-c", str(conf), "-p", str(conf.parent)], check=True)
    with local_server([binary, "-c", str(conf), "-p", str(conf.parent)], port, timeout=30, env=None,
                      what="nginx in front of the replicas") as (url, _):
        yield url


async def _pairs(direct: str, balanced: str, bodies: list[bytes], n: int) -> dict:
    import aiohttp

    from tests.server import STOREFRONT_KEY

    headers = {"content-type": "application/json", "authorization": f"Bearer {STOREFRONT_KEY}"}
    times = {"direct": [], "nginx": []}
    errors = 0
    async with aiohttp.ClientSession(direct) as a, aiohttp.ClientSession(balanced) as b:
        sides = {"direct": a, "nginx": b}

        async def one(side: str, body: bytes) -> None:
            nonlocal errors
            start = time.perf_counter()
            async with sides[side].post("/recommend", data=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200
            times[side].append((time.perf_counter() - start) * 1000)

        for i in range(50):  # warm-up: connections, nginx's upstream keep-alive to both replicas
            await one("direct", bodies[i % len(bodies)])
            await one("nginx", bodies[i % len(bodies)])
        times = {"direct": [], "nginx": []}
        for i in range(n):
            order = ("direct", "nginx") if i % 2 == 0 else ("nginx", "direct")
            for side in order:
                await one(side, bodies[i % len(bodies)])
    return {"times": times, "errors": errors}


def paired_round(direct: str, balanced: str, bodies: list[bytes], n: int) -> dict:
    import asyncio

    import numpy as np

    res = asyncio.run(_pairs(direct, balanced, bodies, n))
    d, g = np.asarray(res["times"]["direct"]), np.asarray(res["times"]["nginx"])
    return {"direct": {"p50_ms": round(float(np.median(d)), 3), "p99_ms": round(float(np.percentile(d, 99)), 3)},
            "nginx": {"p50_ms": round(float(np.median(g)), 3), "p99_ms": round(float(np.percentile(g, 99)), 3)},
            "paired_median_diff_ms": round(float(np.median(g - d)), 3), "pairs": n, "errors": res["errors"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pairs", type=int, default=1000, help="pairs of requests per round (the bound of a round)")
    args = p.parse_args(argv)
    from tests.server import bentoml_server, free_port

    work = Path(tempfile.mkdtemp(prefix="nginx-overhead-", dir=DATA / "work" if (DATA / "work").exists() else None))
    home = work / "home"
    home.mkdir(parents=True)
    shoppers = tiny_bundle(home, work)
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_WORKERS": "1",
           "SHOPREC_RATE_PER_KEY": "1000000/second"}
    out = {"machine": machine(), "args": vars(args), "rounds": [], "load": []}
    try:
        with contextlib.ExitStack() as stack:
            direct = stack.enter_context(bentoml_server(home, extra_env=env | {"SHOPREC_REPLICA": "replica-1"}))
            second = stack.enter_context(bentoml_server(home, extra_env=env | {"SHOPREC_REPLICA": "replica-2"}))
            ports = [int(u.rsplit(":", 1)[1]) for u in (direct, second)]
            balanced = stack.enter_context(nginx(work / "nginx-state", ports, free_port()))
            payloads = [json.dumps({"user_id": u, "k": 10}).encode() for u in shoppers]
            for n in range(args.rounds):
                row = {"round": n + 1, "loadavg": [round(x, 2) for x in os.getloadavg()]}
                row |= paired_round(direct, balanced, payloads, args.pairs)
                row["overhead_p50_ms"] = round(row["nginx"]["p50_ms"] - row["direct"]["p50_ms"], 3)
                out["rounds"].append(row)
                log(f"round {n + 1}: direct p50 {row['direct']['p50_ms']} ms, nginx p50 {row['nginx']['p50_ms']} ms, "
                    f"overhead {row['overhead_p50_ms']} ms, paired median {row['paired_median_diff_ms']} ms "
                    f"(load {row['loadavg']})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rounds = out["rounds"]
    out["overhead_p50_ms"] = summary([r["overhead_p50_ms"] for r in rounds])
    out["direct_p50_ms"] = summary([r["direct"]["p50_ms"] for r in rounds])
    out["nginx_p50_ms"] = summary([r["nginx"]["p50_ms"] for r in rounds])
    out["paired_median_diff_ms"] = summary([r["paired_median_diff_ms"] for r in rounds])
    out["errors"] = sum(r["errors"] for r in rounds)
    out["goal_ok"] = out["overhead_p50_ms"]["median"] is not None and out["overhead_p50_ms"]["median"] <= 1.0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "nginx-overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "nginx-overhead.md").write_text(markdown(out))
    log(f"overhead p50 median {out['overhead_p50_ms']['median']} ms; wrote benchmarks/results/nginx-overhead.md")
    return 0


def markdown(out: dict) -> str:
    a, o = out["args"], out["overhead_p50_ms"]
    lines = ["# nginx in front of two replicas vs one replica directly (`python -m benchmarks.nginx_overhead`)", "",
             machine_markdown(out["machine"]), "",
             f"Two replicas (1 worker each) of the tiny shop's ALS bundle, nginx with deploy/nginx.conf (upstream keep-alive); "
             f"per round {a['pairs']:,} pairs of sequential /recommend requests, each pair one to replica-1 directly and the "
             "same through nginx, the order alternating (aiohttp, keep-alive). The machine is shared with other sessions' "
             "work (load average per round below): pairing puts both sides on the same moments of it.", "",
             "| round | load average | direct p50 ms | nginx p50 ms | nginx − direct (p50s) ms | median paired difference ms | direct p99 ms | nginx p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in out["rounds"]:
        lines.append(f"| {r['round']} | {r['loadavg']} | {r['direct']['p50_ms']} | {r['nginx']['p50_ms']} | "
                     f"{r['overhead_p50_ms']} | {r['paired_median_diff_ms']} | {r['direct']['p99_ms']} | {r['nginx']['p99_ms']} |")
    p = out["paired_median_diff_ms"]
    lines += ["", f"nginx adds **{o['median']} ms** to p50 (median over {o['n']} rounds; min {o['min']}, max {o['max']}); "
              f"median paired difference {p['median']} ms ({p['min']}–{p['max']}). Goal ≤ 1 ms: "
              f"{'met' if out['goal_ok'] else 'missed'}. Errors: {out['errors']}. Medians of the p50s: direct "
              f"{out['direct_p50_ms']['median']} ms, nginx {out['nginx_p50_ms']['median']} ms.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
