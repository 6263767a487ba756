"""Access control on the real server: every operation in /docs.json needs a key of its scope (401 without
one, 403 with another scope, both before the body is read or validated); content types; keys created
and revoked while the server runs; the access log of customer data; /events refusals; rate limits
(per key, per shopper, and shared by two replicas through Redis)."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from features.key_store import KeyStore
from tests.server import (ADMIN, ADMIN_KEY, MARKETING, MARKETING_KEY, REPO, STOREFRONT, STOREFRONT_KEY, bearer,
                          bentoml_server)
from tests.test_propensity_service import _store
from tests.test_service import publish_test_bundle

# PRODUCT.md, "Access": written out here, not read from the code, so that the test checks the code
EXPECTED_SCOPES = {
    "/recommend": "storefront", "/similar_items": "storefront", "/bought_together": "storefront",
    "/session": "storefront", "/rerank": "storefront", "/events": "storefront",
    "/propensity": "marketing", "/churn_risk": "marketing", "/customer_value": "marketing",
    "/admin/reload": "admin", "/admin/forget": "admin",
    "/admin/experiments/create": "admin", "/admin/experiments/stop": "admin",
    "/experiments": "marketing", "/experiments/report": "marketing",
}
PUBLIC = {"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/"}
KEYS = {"storefront": STOREFRONT, "marketing": MARKETING, "admin": ADMIN}
FLOOD_KEY = "storefront-flood-key-0123456789"
LIMITS = {"SHOPREC_RATE_EVENTS_PER_KEY": "100/second", "SHOPREC_RATE_EVENTS_PER_SHOPPER": "30/minute"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("access_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    _store(home, tmp_path_factory.mktemp("propensity"))
    flood = KeyStore(home / "keys" / "keys.json")
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_CANONICAL_DIR": str(home / "canonical"),
           "SHOPREC_PRIVACY_DIR": str(home / "privacy"), **LIMITS}
    with bentoml_server(home, extra_env=env) as url:
        yield url, home, flood
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    for key in (STOREFRONT_KEY, MARKETING_KEY, ADMIN_KEY, FLOOD_KEY):
        assert key not in logs, "a key was logged"
    assert "Traceback" not in logs, "a client error was logged with a traceback"


def operations(url) -> list[tuple[str, str]]:
    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    return [(path, method.upper()) for path, item in spec["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")]


def test_every_operation_in_the_docs_needs_a_key_of_its_scope_before_validation(server):
    url, _, _ = server
    ops = operations(url)
    assert {p for p, _ in ops} - PUBLIC == set(EXPECTED_SCOPES), "an operation without a documented scope"
    invalid = b'{"no such field": [1, 2, 3'  # not even JSON: the body is never looked at before the key
    for path, method in ops:
        if path in PUBLIC:
            r = httpx.request(method, f"{url}{path}", timeout=30)
            assert r.status_code == 200, (path, r.status_code)
            continue
        scope = EXPECTED_SCOPES[path]
        send = lambda headers: httpx.request(method, f"{url}{path}", content=invalid, timeout=30,  # noqa: E731
                                             headers={"content-type": "application/json", **headers})
        r = send({})
        assert r.status_code == 401 and r.json() == {"error": "missing or invalid API key: send Authorization: Bearer <key>"}
        assert r.headers["www-authenticate"].startswith("Bearer")
        for other, headers in KEYS.items():
            r = send(headers)
            if other == scope:
                assert r.status_code == 400, (path, r.text)  # through to validation, which refuses the body
            else:
                assert r.status_code == 403, (path, other, r.text)
                assert r.json() == {"error": f"this key may not call {path}: it needs {'an' if scope == 'admin' else 'a'} {scope} key"}


def test_the_key_is_checked_before_the_body_is_read(server):
    url, _, _ = server
    big = b'{"user_id": "' + b"x" * 100_000 + b'"}'  # over the 64 KB body limit
    headers = {"content-type": "application/json"}
    assert httpx.post(f"{url}/recommend", content=big, headers=headers, timeout=30).status_code == 401
    assert httpx.post(f"{url}/recommend", content=big, headers=headers | MARKETING, timeout=30).status_code == 403
    assert httpx.post(f"{url}/recommend", content=big, headers=headers | STOREFRONT, timeout=30).status_code == 413


@pytest.mark.parametrize("header, keys", [
    ({"Authorization": f"Bearer {STOREFRONT_KEY}"}, 200), ({"authorization": f"bearer  {STOREFRONT_KEY}"}, 200),
    ({"X-API-Key": STOREFRONT_KEY}, 200), ({"X-Admin-Key": STOREFRONT_KEY}, 200),  # the old headers carry any key
    ({"Authorization": STOREFRONT_KEY}, 401), ({"Authorization": f"Token {STOREFRONT_KEY}"}, 401),
    ({"Authorization": "Bearer"}, 401), ({"Authorization": f"Bearer {STOREFRONT_KEY[:-1]}"}, 401),
])
def test_how_a_key_is_sent(server, header, keys):
    url, _, _ = server
    r = httpx.post(f"{url}/recommend", json={"user_id": "u1", "k": 2}, headers=header, timeout=30)
    assert r.status_code == keys


@pytest.mark.parametrize("content_type, status", [
    ("multipart/form-data", 415), ("multipart/form-data; boundary=x", 415), ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415), ("application/xml", 415), ("application/json; charset=latin-1", 415),
    ("application/vnd.bentoml+pickle", 415), ("application/json;;", 400), ("json", 400), ("application/json; x", 400),
    ("application/json", 200), ("Application/JSON; charset=UTF-8", 200), (None, 200),
])
def test_json_endpoints_take_json_only(server, content_type, status):
    url, _, _ = server
    headers = STOREFRONT | ({"content-type": content_type} if content_type else {})
    r = httpx.post(f"{url}/recommend", content=b'{"user_id": "u1", "k": 2}', headers=headers, timeout=30)
    assert r.status_code == status, r.text
    if status != 200:
        assert "Content-Type" in r.json()["error"] or "charset" in r.json()["error"]


def test_a_key_created_or_revoked_with_the_cli_works_or_stops_within_10_s(server):
    url, home, _ = server
    env = dict(os.environ, PYTHONPATH=str(REPO), SHOPREC_KEYS_FILE=str(home / "keys" / "keys.json"))
    shoprec = [sys.executable, "-m", "training.cli", "keys"]
    made = subprocess.run([*shoprec, "create", "--scope", "marketing", "--name", "crm-export"], env=env, cwd=home,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # printed once, last
    assert key.startswith("sk_marketing_") and key not in (home / "keys" / "keys.json").read_text()

    def status():
        return httpx.post(f"{url}/churn_risk", json={"top_n": 1}, headers=bearer(key), timeout=30).status_code

    start = time.monotonic()
    while status() != 200:
        assert time.monotonic() - start < 10, "the new key was not accepted within 10 s"
        time.sleep(0.2)
    listed = subprocess.run([*shoprec, "list"], env=env, cwd=home, capture_output=True, text=True, timeout=120)
    assert "crm-export" in listed.stdout and "marketing" in listed.stdout and key not in listed.stdout
    gone = subprocess.run([*shoprec, "revoke", "crm-export"], env=env, cwd=home, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0, gone.stderr
    start = time.monotonic()
    while status() != 401:
        assert time.monotonic() - start < 10, "the revoked key still worked after 10 s"
        time.sleep(0.2)


def test_customer_data_access_is_recorded_and_audited(server):
    url, home, _ = server
    since = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    assert httpx.post(f"{url}/recommend", json={"user_id": "u1"}, headers=STOREFRONT, timeout=30).status_code == 200
    assert httpx.post(f"{url}/churn_risk", json={"page_size": 4}, headers=MARKETING, timeout=30).status_code == 200
    r = httpx.post(f"{url}/propensity", json={"user_ids": ["c1", "c2", "nobody"]}, headers=MARKETING, timeout=30)
    assert r.status_code == 200
    assert httpx.post(f"{url}/churn_risk", json={"page": 0}, headers=MARKETING, timeout=30).status_code == 400
    assert httpx.post(f"{url}/admin/reload", json={}, headers=ADMIN, timeout=30).status_code == 200
    entries = [json.loads(line) for line in (home / "keys" / "access.jsonl").read_text().splitlines()]
    recent = [(e["key"], e["scope"], e["endpoint"], e["status"], e["customers"]) for e in entries
              if dt.datetime.fromisoformat(e["at"]) >= since]
    assert recent == [("SHOPREC_API_KEY", "marketing", "/churn_risk", 200, 4),
                      ("SHOPREC_API_KEY", "marketing", "/propensity", 200, 2),
                      ("SHOPREC_API_KEY", "marketing", "/churn_risk", 400, 0),
                      ("SHOPREC_ADMIN_KEY", "admin", "/admin/reload", 200, 0)]  # storefront calls are not recorded
    text = (home / "keys" / "access.jsonl").read_text()
    assert MARKETING_KEY not in text and ADMIN_KEY not in text
    env = dict(os.environ, PYTHONPATH=str(REPO), SHOPREC_ACCESS_LOG=str(home / "keys" / "access.jsonl"))
    audit = subprocess.run([sys.executable, "-m", "training.cli", "keys", "audit", "--since", since.isoformat()],
                           env=env, cwd=home, capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0, audit.stderr
    assert "total SHOPREC_API_KEY: 3 calls, 6 customer records returned" in audit.stdout
    assert "/admin/reload" in audit.stdout and "/recommend" not in audit.stdout


def count_events(home, user) -> int:
    with sqlite3.connect(home / "events.db") as db:
        return db.execute("SELECT count(*) FROM events WHERE user_id = ?", (user,)).fetchone()[0]


@pytest.mark.parametrize("event, field, words", [
    ({"item_id": "i1", "event_type": "purchase", "ts": "2099-01-01T00:00:00Z"}, "events.1.ts", "in the future"),
    ({"item_id": "i1", "event_type": "view", "ts": "2023-06-01T00:00:00"}, "events.1.ts", "too old"),
    ({"item_id": "i1", "event_type": "view", "ts": "next tuesday"}, "events.1.ts", "ISO 8601"),
    ({"item_id": "no-such-item", "event_type": "purchase"}, "events.1.item_id", "unknown item"),
    ({"item_id": "i1", "event_type": "like"}, "events.1.event_type", "'view', 'cart' or 'purchase'"),
])
def test_events_that_could_poison_the_model_are_refused_and_nothing_is_stored(server, event, field, words):
    url, home, _ = server
    user = f"poison-{abs(hash(field + words)) % 10_000}"
    fine = {"item_id": "i2", "event_type": "view"}
    r = httpx.post(f"{url}/events", json={"user_id": user, "events": [fine, event]}, headers=STOREFRONT, timeout=30)
    assert r.status_code == 400
    fields = {".".join(map(str, d["loc"])): d["msg"] for d in r.json()["detail"]}
    assert field in fields and words in fields[field], r.text
    assert count_events(home, user) == 0  # not even the fine one
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60)).isoformat()  # within the clock skew
    r = httpx.post(f"{url}/events", json={"user_id": user, "events": [fine, {**fine, "ts": soon}]}, headers=STOREFRONT,
                   timeout=30)
    assert r.status_code == 200 and r.json() == {"stored": 2} and count_events(home, user) == 2


def test_refused_events_are_counted(server):
    url, _, _ = server
    httpx.post(f"{url}/events", json={"user_id": "m1", "events": [{"item_id": "nope", "event_type": "view"}]},
               headers=STOREFRONT, timeout=30)
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'shoprec_events_rejected_total{reason="unknown_item"}' in metrics


def test_too_many_events_for_one_shopper_get_429(server):
    url, home, _ = server
    batch = {"user_id": "busy-shopper", "events": [{"item_id": f"i{j}", "event_type": "view"} for j in range(12)]}
    answers = [httpx.post(f"{url}/events", json=batch, headers=STOREFRONT, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]  # 30 events a minute
    assert "per shopper" in answers[2].json()["error"] and 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert count_events(home, "busy-shopper") == 24
    other = httpx.post(f"{url}/events", json={**batch, "user_id": "calm-shopper"}, headers=STOREFRONT, timeout=30)
    assert other.status_code == 200


def test_1000_events_a_second_from_one_key_get_429s_and_other_keys_are_served(server):
    """One key floods /events (100 requests/s of 10 events: 1,000 events/s, its limit is 100/s) while
    another key keeps asking for recommendations. Latency figures: benchmarks/abuse.py."""
    url, home, store = server
    if not any(k.name == "flood" and k.active for k in store.read()):
        _, key = store.create("storefront", "flood")
        (home / "flood.key").write_text(key)
    key = (home / "flood.key").read_text()
    time.sleep(2.5)  # the server re-reads the key store every 2 s

    async def run():
        statuses, served = Counter(), []
        waits = set()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async def flood():
                for i in range(200):  # 2 s at 100 requests/s
                    body = {"user_id": f"flood-{i}", "events": [{"item_id": f"i{j}", "event_type": "view"} for j in range(10)]}
                    started = time.perf_counter()
                    r = await client.post("/events", json=body, headers=bearer(key))
                    statuses[r.status_code] += 1
                    if r.status_code == 429:
                        waits.add(r.headers["retry-after"])
                    await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - started)))

            async def shop():
                for i in range(40):
                    r = await client.post("/recommend", json={"user_id": f"u{i % 30}", "k": 5}, headers=STOREFRONT)
                    served.append(r.status_code)
                    await asyncio.sleep(0.03)

            await asyncio.gather(flood(), shop())
        return statuses, served, waits

    statuses, served, waits = asyncio.run(run())
    assert statuses[429] >= 50 and statuses[200] >= 10, statuses  # the key gets its share, and no more
    assert set(statuses) <= {200, 429}, statuses
    assert all(w.isdigit() and int(w) >= 1 for w in waits)
    assert served == [200] * 40  # the other key is not held up


def test_replicas_share_the_rate_limits_through_redis(tmp_path):
    """Two servers on one Redis (events and counters): a shopper's allowance is one, not one per replica."""
    from tests.redis_server import redis_server

    home = tmp_path / "home"
    home.mkdir()
    publish_test_bundle(home, tmp_path / "bundle")
    with redis_server(tmp_path) as redis_url:
        env = {"SHOPREC_EVENTS_URL": redis_url, "SHOPREC_RATE_EVENTS_PER_SHOPPER": "10/minute"}
        with bentoml_server(home, extra_env=env) as a, bentoml_server(home, extra_env=env) as b:
            batch = {"user_id": "shared", "events": [{"item_id": f"i{j}", "event_type": "view"} for j in range(6)]}
            first = httpx.post(f"{a}/events", json=batch, headers=STOREFRONT, timeout=30)
            second = httpx.post(f"{b}/events", json=batch, headers=STOREFRONT, timeout=30)
    assert first.status_code == 200 and second.status_code == 429, (first.text, second.text)
