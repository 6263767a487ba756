"""Keys, settings, the access log, rate limits and the request checks, in-process."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import stat
import threading
import time
from types import SimpleNamespace

import anyio
import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from features.access_log import AccessLog
from features.key_store import KeyRing, KeyStore, KeyStoreError, Principal, digest
from features.settings import Settings
from serving.admin import OneLineClientErrors
from serving.auth import AccessControl, ScopedKeys, given_key, media_type_problem, required_scope
from serving.event_intake import event_problems
from serving.rate_limits import RateLimits, WorkerWindows
from serving.schemas import EventsRequest
from training.cli import app


def test_a_key_is_stored_only_as_a_hash_with_name_scope_and_time(tmp_path):
    store = KeyStore(tmp_path / "keys" / "keys.json")
    record, key = store.create("storefront", "web-shop")
    assert key.startswith("sk_storefront_") and len(key) > 40
    text = store.path.read_text()
    assert key not in text and digest(key) in text
    assert (record.name, record.scope, record.active) == ("web-shop", "storefront", True)
    assert dt.datetime.fromisoformat(record.created_at).tzinfo is not None
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.create("admin")[0].name.startswith("admin-")  # a name is made up when none is given


@pytest.mark.parametrize("scope, name, words", [
    ("root", None, "scope 'root'"), ("storefront", "has space", "name 'has space'"),
    ("storefront", "SHOPREC_API_KEY", "SHOPREC_"), ("storefront", "x" * 65, "1-64"),
])
def test_bad_scopes_and_names_are_refused(tmp_path, scope, name, words):
    with pytest.raises(KeyStoreError, match=words):
        KeyStore(tmp_path / "keys.json").create(scope, name)


def test_names_are_unique_among_active_keys_and_revoking_keeps_the_record(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    store.create("marketing", "crm")
    with pytest.raises(KeyStoreError, match="already named 'crm'"):
        store.create("marketing", "crm")
    gone = store.revoke("crm")
    assert gone.revoked_at is not None and not gone.active
    store.create("marketing", "crm")  # the name is free again (key rotation under the same name)
    assert [k.active for k in store.read()] == [False, True]
    with pytest.raises(KeyStoreError, match="no active key named 'nobody'"):
        store.revoke("nobody")


def test_the_key_ring_sees_new_and_revoked_keys_and_the_environment_keys(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    ring = KeyRing(store, {"SHOPREC_API_KEY": ("marketing", "env-secret")}, refresh_s=0.05)
    assert ring.lookup("env-secret") == Principal("SHOPREC_API_KEY", "marketing")
    _, key = store.create("storefront", "web")
    time.sleep(0.1)
    assert ring.lookup(key) == Principal("web", "storefront") and ring.by_digest(digest(key)).name == "web"
    store.revoke("web")
    time.sleep(0.1)
    assert ring.lookup(key) is None and ring.lookup("") is None and ring.lookup(None) is None
    store.path.write_text("{not json")  # a damaged store: the ring keeps what it had, and says so
    time.sleep(0.1)
    assert ring.lookup("env-secret") is not None


def test_settings_from_the_environment_and_key_files(tmp_path, monkeypatch):
    (tmp_path / "admin.key").write_text(" from-a-file \n")
    monkeypatch.setenv("SHOPREC_ADMIN_KEY_FILE", str(tmp_path / "admin.key"))
    monkeypatch.setenv("SHOPREC_API_KEY", "  marketing-env  ")
    monkeypatch.setenv("SHOPREC_EVENTS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SHOPREC_WORKERS", "2")
    s = Settings()
    assert s.env_key("admin_key") == "from-a-file" and s.env_key("api_key") == "marketing-env"
    assert s.env_key("storefront_key") is None and s.workers == 2
    assert s.rate_storage_url() == "redis://127.0.0.1:1/0"  # the counters follow the event store to Redis
    assert "marketing-env" not in repr(s)  # keys are secrets, never printed
    monkeypatch.setenv("SHOPREC_ADMIN_KEY_FILE", str(tmp_path / "absent"))
    assert Settings().env_key("admin_key") is None
    assert Settings(events_url="sqlite:///x.db").rate_storage_url() == "memory://"


@pytest.mark.parametrize("env, field", [("SHOPREC_RATE_PER_KEY", "rate_per_key"), ("SHOPREC_WORKERS", "workers"),
                                        ("SHOPREC_CLOCK_SKEW_S", "clock_skew_s")])
def test_a_bad_setting_names_its_field(monkeypatch, env, field):
    monkeypatch.setenv(env, "lots")
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_the_access_log_reads_back_since_a_time(tmp_path):
    log = AccessLog(tmp_path / "a" / "access.jsonl")
    first = log.record("crm", "marketing", "/churn_risk", 200, 25)
    time.sleep(0.01)
    cut = dt.datetime.now(dt.timezone.utc)
    log.record("ops", "admin", "/admin/forget", 200, 0)
    with open(log.path, "a") as f:
        f.write('{"torn')  # a line cut short by a crash is skipped
    assert [e.key for e in log.read()] == ["crm", "ops"] and log.read()[0] == first
    assert [e.key for e in log.read(cut)] == ["ops"]
    assert [e.key for e in log.read(cut.replace(tzinfo=None))] == ["ops"]  # naive = UTC


def test_the_cli_prints_the_key_last_and_audits(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPREC_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("SHOPREC_ACCESS_LOG", str(tmp_path / "access.jsonl"))
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--scope", "marketing", "--name", "crm"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert KeyRing(KeyStore(tmp_path / "keys.json")).lookup(key) == Principal("crm", "marketing")
    bad = runner.invoke(app, ["keys", "create", "--scope", "everything"])
    assert bad.exit_code == 2 and "scope 'everything'" in bad.output
    AccessLog(tmp_path / "access.jsonl").record("crm", "marketing", "/propensity", 200, 7)
    audit = runner.invoke(app, ["keys", "audit", "--since", "2020-01-01"])
    assert audit.exit_code == 0 and "/propensity" in audit.stdout and "crm: 1 calls, 7 customer records" in audit.stdout
    assert runner.invoke(app, ["keys", "audit", "--since", "last week"]).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", "crm"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "crm"]).exit_code == 2


def test_make_run_creates_a_storefront_and_a_marketing_key_once(tmp_path, monkeypatch):
    from training.cli_keys import example_calls

    monkeypatch.setenv("SHOPREC_KEYS_FILE", str(tmp_path / "keys.json"))
    first = example_calls("127.0.0.1", 3000)
    keys = [k for k in KeyStore(tmp_path / "keys.json").read()]
    assert sorted(k.scope for k in keys) == ["marketing", "storefront"]
    shop_key = [line.split()[-1] for line in first.splitlines() if line.strip().startswith("storefront")][0]
    assert f'-H "Authorization: Bearer {shop_key}"' in first
    second = example_calls("127.0.0.1", 3000)
    assert len(KeyStore(tmp_path / "keys.json").read()) == 2 and "$STOREFRONT_KEY" in second and shop_key not in second


@pytest.mark.parametrize("headers, expected", [
    ([(b"authorization", b"Bearer abc")], ("abc", False)), ([(b"Authorization", b"BEARER  abc")], ("abc", False)),
    ([(b"authorization", b"Basic abc")], (None, True)), ([(b"authorization", b"Bearer a b")], (None, True)),
    ([(b"x-api-key", b" abc ")], ("abc", False)), ([(b"x-admin-key", b"abc")], ("abc", False)),
    ([(b"authorization", b"Bearer abc"), (b"x-api-key", b"other")], ("abc", False)), ([], (None, False)),
    # the same header twice: refused, whichever order (the first one used to win)
    ([(b"authorization", b"Bearer abc"), (b"Authorization", b"Bearer other")], (None, True)),
    ([(b"x-api-key", b"abc"), (b"x-api-key", b"abc")], (None, True)),
])
def test_where_the_key_comes_from(headers, expected):
    assert given_key(headers) == expected


def test_every_path_but_health_docs_and_the_page_needs_a_scope():
    assert required_scope("/recommend") == "storefront" and required_scope("/churn_risk") == "marketing"
    assert required_scope("/admin/forget") == "admin"
    assert required_scope("/something/new") == "admin"  # closed unless classified
    for public in ("/livez", "/readyz", "/metrics", "/docs.json", "/", "/static_content/x.css", "/marketing/login"):
        assert required_scope(public) is None


@pytest.mark.parametrize("value, status", [
    (None, None), ("application/json", None), ('application/json; charset="utf-8"', None),
    ("multipart/form-data", 415), ("text/json", 415), ("application/json; charset=utf-16", 415),
    ("", 400), ("application/", 400), ("application/json; charset", 400), ("\u00e9/json", 400),
])
def test_media_types(value, status):
    problem = media_type_problem(value)
    assert (problem[0] if problem else None) == status


def _control(tmp_path, **limits) -> AccessControl:
    return AccessControl.from_settings(Settings(
        keys_file=tmp_path / "keys.json", access_log=tmp_path / "access.jsonl", sessions_file=tmp_path / "s.json",
        storefront_key="shop", api_key=None, admin_key=None, **limits))


def test_the_middleware_limits_requests_per_key_with_retry_after(tmp_path):
    control = _control(tmp_path, rate_per_key="3/minute")
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def go():
        transport = httpx.ASGITransport(app=ScopedKeys(app, control=lambda: control))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return [await c.post("/recommend", json={}, headers={"Authorization": "Bearer shop"}) for _ in range(4)]

    answers = anyio.run(go)
    assert [a.status_code for a in answers] == [200, 200, 200, 429] and len(reached) == 3
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60 and "this key" in answers[3].json()["error"]


def test_a_recorded_call_is_in_the_access_log_before_its_caller_has_the_answer(tmp_path):
    """The line is written before the last body message goes out (a caller that reads the log at once
    finds its call, and a call answered earlier cannot land after a later reader's start); a call that
    fails before answering is recorded once, as a 500."""
    control = AccessControl.from_settings(Settings(
        keys_file=tmp_path / "keys.json", access_log=tmp_path / "access.jsonl", sessions_file=tmp_path / "s.json",
        storefront_key=None, api_key="mkt", admin_key=None))
    lines = lambda: [json.loads(x) for x in control.log.path.read_text().splitlines()] if control.log.path.exists() else []
    seen_at_answer = []

    async def app(scope, receive, send):
        from serving.auth import count_customers
        from types import SimpleNamespace

        count_customers(SimpleNamespace(state=SimpleNamespace(**scope["state"])), 2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        await send({"type": "http.response.body", "body": b"}"})
        await anyio.sleep(0.05)  # the framework's own work after the answer went out

    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_answer.append([(e["endpoint"], e["status"], e["customers"]) for e in lines()])

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/customer_value", "headers": [(b"authorization", b"Bearer mkt")]}
    anyio.run(ScopedKeys(app, control=lambda: control), dict(scope), receive, send)
    assert seen_at_answer == [[("/customer_value", 200, 2)]]
    with pytest.raises(RuntimeError):
        anyio.run(ScopedKeys(broken, control=lambda: control), dict(scope), receive, send)
    assert [(e["endpoint"], e["status"], e["customers"]) for e in lines()] == [("/customer_value", 200, 2),
                                                                              ("/customer_value", 500, 0)]


def test_no_record_no_customer_data(tmp_path):
    """The access log could not be written (a full disk, a directory in its place): the marketing call still answered
    200 with the customers, logging an error. Now it is a 503 and no data leaves; a storefront call is not held."""
    control = AccessControl.from_settings(Settings(
        keys_file=tmp_path / "keys.json", access_log=tmp_path / "access.jsonl", sessions_file=tmp_path / "s.json",
        storefront_key="shop", api_key="mkt", admin_key=None))
    (tmp_path / "access.jsonl").mkdir()  # cannot be appended to

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"customers": ["c1"]}'})

    async def go():
        transport = httpx.ASGITransport(app=ScopedKeys(app, control=lambda: control))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.post("/churn_risk", json={}, headers={"Authorization": "Bearer mkt"}),
                    await c.post("/recommend", json={}, headers={"Authorization": "Bearer shop"}))

    marketing, storefront = anyio.run(go)
    assert marketing.status_code == 503 and "c1" not in marketing.text and "cannot be put on record" in marketing.text
    assert storefront.status_code == 200 and "c1" in storefront.text


def test_sign_in_failures_are_counted_per_account_and_address(tmp_path):
    limits = RateLimits(Settings(login_failures="2/15 minutes"))
    assert limits.login_blocked("crm", "1.2.3.4") is None
    limits.login_failed("crm", "1.2.3.4")
    limits.login_failed("crm", "1.2.3.4")
    assert 0 < limits.login_blocked("crm", "5.6.7.8") <= 900  # the account
    assert limits.login_blocked("other", "1.2.3.4") is not None  # the address
    assert limits.login_blocked("other", "5.6.7.8") is None


def test_unreachable_counters_do_not_stop_the_storefront(caplog):
    limits = RateLimits(Settings(limits_url="redis://127.0.0.1:9/0"))  # nothing listens on port 9
    with caplog.at_level(logging.ERROR, logger="shoprec.limits"):
        assert limits.key_request("web") is None and limits.events("web", "ps_x", 5) is None
    assert "not limited" in caplog.text


NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
UNTIL = dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("ts, kind", [
    (None, None), ("2025-03-01T12:04:00Z", None), ("2025-03-01T12:06:00Z", "ts_future"), ("2025-03-01T13:00:00+01:00", None),
    ("2025-02-01", None), ("2025-01-31T23:59:59", "ts_too_old"), ("2030-01-01", "ts_future"), ("01/03/2025", "ts_format"),
])
def test_event_times(ts, kind):
    req = EventsRequest(user_id="u", events=[{"item_id": "i1", "event_type": "view", "ts": ts}])
    problems = event_problems(req, lambda ids: [True] * len(ids), UNTIL, NOW, 300)
    assert [p["type"] for p in problems] == ([kind] if kind else [])
    assert all(p["loc"] == ["events", 0, "ts"] for p in problems)


def test_unknown_items_are_named_by_position():
    req = EventsRequest(user_id="u", events=[{"item_id": i, "event_type": "view"} for i in ("a", "zz", "b", "yy")])
    problems = event_problems(req, lambda ids: [i in ("a", "b") for i in ids], None, NOW, 300)
    assert [(p["loc"], p["type"]) for p in problems] == [(["events", 1, "item_id"], "unknown_item"),
                                                         (["events", 3, "item_id"], "unknown_item")]


def test_a_client_error_is_logged_in_one_line():
    from pydantic import BaseModel

    class Body(BaseModel):
        k: int

    try:
        Body(k="alice@example.com")
    except ValidationError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/recommend", "POST"),
                                   __import__("sys").exc_info())
    assert OneLineClientErrors().filter(record)
    text = logging.Formatter().format(record)
    assert "\n" not in text and "Traceback" not in text and "alice" not in text
    assert text == "client error on /recommend [POST]: 400 1 validation error(s): k: Input should be a valid integer, " \
                   "unable to parse string as an integer"
    assert record.levelno == logging.WARNING
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        bug = logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/x", "POST"),
                                __import__("sys").exc_info())
    assert OneLineClientErrors().filter(bug) and "Traceback" in logging.Formatter().format(bug)  # server errors keep it


def test_access_log_lines_are_json_with_no_key(tmp_path):
    log = AccessLog(tmp_path / "access.jsonl")
    log.record("crm", "marketing", "/churn_risk", 200, 3)
    assert json.loads(log.path.read_text()) .keys() == {"at", "key", "scope", "endpoint", "status", "customers"}


def test_requests_per_key_are_counted_in_batches_and_refused_past_the_limit():
    """The counter store is asked once per batch (1% of the limit): 200 a minute -> batches of 2; at most one
    request past the limit gets through, then the key waits for the window."""
    limits = RateLimits(Settings(rate_per_key="200/minute"))
    asked = []
    real_hit = limits.hit
    limits.hit = lambda *a, **kw: asked.append(kw.get("cost")) or real_hit(*a, **kw)
    answers = [limits.key_request("web") for _ in range(300)]
    allowed = sum(a is None for a in answers)
    assert 200 <= allowed <= 201 and all(a is not None and 1 <= a <= 60 for a in answers[allowed:])
    assert set(asked) == {2} and len(asked) == 101  # 100 batches allowed, the 101st refused; then no more asking
    assert limits.key_request("other") is None  # another key has its own count


def test_worker_windows_answer_as_the_limits_memory_store(monkeypatch):
    """The per-worker counters give the answers of limits' sliding window counter on its memory store (the
    allowed hits and the reset time behind Retry-After), replayed side by side over random costs and clock steps
    across window boundaries."""
    import limits.storage.memory
    import limits.strategies
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    clock = [1_764_000_000.25]
    fake_time = SimpleNamespace(time=lambda: clock[0])
    monkeypatch.setattr(limits.storage.memory, "time", fake_time)
    monkeypatch.setattr(limits.strategies, "time", fake_time)
    reference, ours = SlidingWindowCounterRateLimiter(MemoryStorage()), WorkerWindows(clock=lambda: clock[0])
    rng = random.Random(13)
    items = [parse("50/10 seconds"), parse("7/minute"), parse("300/second")]
    allowed = refused = 0
    for _ in range(4000):
        clock[0] += rng.choice([0.0, 0.0007, 0.05, 0.4, 3.0, 11.0, 61.0])
        item, ids, cost = rng.choice(items), ("key", rng.choice("abc")), rng.choice([1, 1, 1, 2, 5, 40])
        answer = ours.hit(item, *ids, cost=cost)
        assert answer == reference.hit(item, *ids, cost=cost)
        allowed, refused = allowed + answer, refused + (not answer)
        if rng.random() < 0.3:
            assert ours.get_window_stats(item, *ids) == reference.get_window_stats(item, *ids)
    assert allowed > 1000 and refused > 200  # both sides of the limits were reached


def test_worker_windows_forget_keys_nobody_counts():
    clock = [1000.0]
    windows, item = WorkerWindows(clock=lambda: clock[0]), __import__("limits").parse("5/second")
    for i in range(100):
        assert windows.hit(item, "shopper", str(i))
    clock[0] += 1.0  # the previous window still counts
    assert windows.hit(item, "shopper", "new") and len(windows) == 101
    clock[0] += 1.5  # both windows of the first 100 have passed: each count drops one of them
    for i in range(100):
        windows.hit(item, "shopper", f"later-{i}")
    assert len(windows) == 101 - 100 + 100


def test_counting_requests_and_events_in_memory_starts_no_thread(monkeypatch):
    limits = RateLimits(Settings(rate_per_key="100/second", rate_events_per_shopper="50/second"))
    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name) or real_start(self))
    answers = [(limits.key_request("web"), limits.events("web", f"ps_{i % 3}", 1)) for i in range(300)]
    assert started == []
    assert answers[0] == (None, None) and any(r is not None for _, r in answers)  # counted: the limits were reached
