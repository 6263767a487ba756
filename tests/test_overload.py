"""Overload: beyond max_concurrency the real server answers 429 at once, keeps its health checks
and recovers; nothing piles up. A bounded burst against a server started with a tiny limit."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.server import STOREFRONT, STOREFRONT_KEY, bentoml_server
from tests.test_admin import store

BURST = 80  # requests sent at the same instant
LIMIT = 2  # max_concurrency of the test server (production: serving/service.py)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.test_storefront import make_bundle

    home = tmp_path_factory.mktemp("overload_home")
    make_bundle({"trained_at": "2024-01-01T00:00:00Z"}).save(home / "bundle")
    store(home, (home / "bundle", "1"))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db",
           "BENTOML_CONFIG_OPTIONS": f"services.shoprec.traffic.max_concurrency={LIMIT} services.shoprec.traffic.timeout=5"}
    with bentoml_server(home, timeout=90, extra_env=env) as url:
        yield url


def request_bytes(path: str, body: dict | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    method = "POST" if body is not None else "GET"
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {STOREFRONT_KEY}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


async def burst(port: int, requests: list[bytes]) -> list[tuple[int, float]]:
    """Open every connection first, then send all requests at once; (status, seconds) each."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in requests]

    async def one(conn, raw):
        reader, writer = conn
        start = time.perf_counter()
        writer.write(raw)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        await reader.read()  # the rest, until the server closes
        writer.close()
        return status, time.perf_counter() - start

    return await asyncio.gather(*(one(c, r) for c, r in zip(conns, requests)))


def test_production_limits_are_configured():
    from serving.service import Shoprec

    traffic = Shoprec.config["traffic"]
    assert 0 < traffic["max_concurrency"] <= 128 and 0 < traffic["timeout"] <= 30


def test_a_burst_beyond_the_limit_gets_fast_429s_and_the_server_recovers(server):
    port = int(server.rsplit(":", 1)[1])
    heavy = request_bytes("/rerank", {"user_id": "u1", "items": [f"i{j % 12}" for j in range(500)]})
    health = request_bytes("/readyz", None)
    requests = [health if i % 10 == 0 else heavy for i in range(BURST)]
    started = time.perf_counter()
    results = asyncio.run(burst(port, requests))
    wall = time.perf_counter() - started

    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 429}, statuses  # refused or answered: no 5xx, no dropped connection
    rejected = [t for s, t in results if s == 429]
    served = [t for (s, t), raw in zip(results, requests) if s == 200 and raw is heavy]
    assert len(rejected) >= BURST // 4 and len(served) >= LIMIT
    assert all(s == 200 for (s, _), raw in zip(results, requests) if raw is health)  # health checks bypass the limit
    assert max(rejected) < 3.0 and wall < 10  # refused at once, not queued behind the served ones
    # afterwards: back to normal
    r = httpx.post(f"{server}/recommend", json={"user_id": "u1", "k": 3}, headers=STOREFRONT, timeout=10)
    assert r.status_code == 200 and httpx.get(f"{server}/readyz").status_code == 200
