"""Does a flood from one key slow the others down? The real server (one worker, the test bundle),
``/recommend`` from the storefront key at a steady rate, first alone, then while a second storefront
key sends 1,000 events/s to ``/events`` (100 requests/s of 10 events; its limit is 300 events/s, so
most are answered 429). Reports both keys' statuses and the first key's latency percentiles.

    .venv/bin/python -m benchmarks.abuse [--seconds 20] [--rate 50] [--out benchmarks/results/abuse.md]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads (PITFALLS.md)


async def steady(client, path: str, bodies: list[bytes], rate: float, seconds: float, record: list, statuses: Counter):
    """Open loop: one request every 1/rate s (latency counted from the planned send time)."""
    start, n = time.perf_counter() + 0.05, int(rate * seconds)
    tasks = []

    async def one(body, planned):
        status, _ = await client.post(path, body)
        statuses[status] += 1
        if record is not None and status == 200:
            record.append((time.perf_counter() - planned) * 1000)

    for i in range(n):
        planned = start + i / rate
        await asyncio.sleep(max(0.0, planned - time.perf_counter()))
        tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], planned)))
    await asyncio.gather(*tasks)


async def phase(url: str, shop_key: str, flood_key: str | None, rate: float, seconds: float) -> dict:
    from benchmarks.loadgen import Client, percentiles

    recs = [json.dumps({"user_id": f"u{i % 30}", "k": 10}).encode() for i in range(30)]
    events = [json.dumps({"user_id": f"flood-{i}", "events": [{"item_id": f"i{j}", "event_type": "view"}
                                                             for j in range(10)]}).encode() for i in range(50)]
    latency, shop_status, flood_status = [], Counter(), Counter()
    async with Client("aiohttp", url, 64, 10.0, {"storefront": shop_key}) as shop:
        jobs = [steady(shop, "/recommend", recs, rate, seconds, latency, shop_status)]
        if flood_key:
            flooder = Client("aiohttp", url, 64, 10.0, {"storefront": flood_key})
            await flooder.__aenter__()
            jobs.append(steady(flooder, "/events", events, 100, seconds, None, flood_status))
        await asyncio.gather(*jobs)
        if flood_key:
            await flooder.__aexit__()
    return {"shop_statuses": dict(shop_status), "flood_statuses": dict(flood_status),
            "flood_events_per_s": round(sum(flood_status.values()) * 10 / seconds), "latency_ms": percentiles(latency)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rate", type=float, default=50, help="/recommend requests per second from the storefront key")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "abuse.md")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    from features.key_store import KeyStore
    from tests.server import STOREFRONT_KEY, bentoml_server
    from tests.test_service import publish_test_bundle

    with tempfile.TemporaryDirectory(prefix="shoprec-abuse-") as tmp:
        home = Path(tmp)
        publish_test_bundle(home, home / "bundle")
        _, flood_key = KeyStore(home / "keys" / "keys.json").create("storefront", "flood")
        with bentoml_server(home, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db"}) as url:
            asyncio.run(phase(url, STOREFRONT_KEY, None, a.rate, 3))  # warm-up
            alone = asyncio.run(phase(url, STOREFRONT_KEY, None, a.rate, a.seconds))
            flooded = asyncio.run(phase(url, STOREFRONT_KEY, flood_key, a.rate, a.seconds))
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "load": [round(x, 2) for x in os.getloadavg()], "rate": a.rate, "seconds": a.seconds,
              "alone": alone, "flooded": flooded}
    lines = ["# A flood from one key, and the others' latency (`python -m benchmarks.abuse`)", "",
             f"{result['date']}, {result['cpus']} cores, load {result['load']} at the end; one worker, the test "
             f"bundle; `/recommend` at {a.rate:g} req/s for {a.seconds:g} s from the storefront key.", "",
             "| run | storefront key: statuses | p50 ms | p99 ms | max ms | flooding key: statuses | its events/s sent |",
             "|---|---|---|---|---|---|---|"]
    for name, r in (("alone", alone), ("with a 1,000 events/s flood from another key", flooded)):
        lat = r["latency_ms"]
        lines.append(f"| {name} | {r['shop_statuses']} | {lat['p50']} | {lat['p99']} | {lat['max']} | "
                     f"{r['flood_statuses'] or '-'} | {r['flood_events_per_s'] or '-'} |")
    lines += ["", "```json", json.dumps(result, indent=1), "```", ""]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines))
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
