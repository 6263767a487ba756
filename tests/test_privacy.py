"""Forgetting a shopper (GDPR / PIPL): gone from the canonical data and the event store, refused
by every later ingest and training, answered with the fallback only and absent from the churn
list at once; logs carry keyed-hash pseudonyms, never raw ids."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.event_store import Event, SQLiteEventStore
from features.ingest import ingest, load_canonical
from features.privacy import KEY_FILE, LIST_FILE, ForgetList, PrivacyError, Pseudonymizer, forget_user
from serving.auth import ROUTE_SCOPES
from tests.conftest import REPO
from tests.server import STOREFRONT, bentoml_server
from tests.test_admin import store

FIXTURES = Path(__file__).parent / "fixtures"
ADMIN_KEY, API_KEY = "admin-key-for-privacy-tests", "marketer-key-for-privacy-tests"


def orders_csv(path: Path, users=("u1", "u2", "u3"), extra: str = "") -> Path:
    """Contract orders: each user buys two items on two days; ``extra`` lines appended as written."""
    lines = ["order_id,user_id,item_id,ts,quantity,price"]
    for n, u in enumerate(users):
        lines += [f"o{n}a,{u},i{n},2024-01-0{n + 1},1,2.5", f"o{n}b,{u},i{n + 1},2024-01-0{n + 2},2,1.5"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


# -- pseudonyms and the list ----------------------------------------------------------------
def test_pseudonyms_are_keyed_stable_and_reveal_nothing():
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a.short("alice") == a.short("alice") != b.short("alice")
    assert re.fullmatch(r"ps_[0-9a-f]{16}", a.short("alice")) and "alice" not in a.digest("alice")
    assert a.digest("alice") != a.digest("alice ")
    with pytest.raises(PrivacyError):
        Pseudonymizer(b"short")


def test_the_list_names_nobody_and_needs_its_own_key(tmp_path):
    fl = ForgetList.open(tmp_path, environ={})
    assert len(fl) == 0 and not fl.contains("alice") and not (tmp_path / KEY_FILE).exists()
    fl.add("alice")
    fl.add("alice")  # idempotent
    text = (tmp_path / LIST_FILE).read_text()
    assert "alice" not in text and len(text.splitlines()) == 2
    assert oct((tmp_path / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    again = ForgetList.open(tmp_path, environ={})
    assert again.contains("alice") and not again.contains("bob")
    assert again.mask(["bob", "alice", None, "alice"]).tolist() == [False, True, False, True]
    with pytest.raises(PrivacyError, match="another key"):
        ForgetList.open(tmp_path, environ={"SHOPREC_PSEUDO_KEY": "a-different-key-of-enough-length"})
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(PrivacyError, match="no key"):
        ForgetList.open(tmp_path, environ={})


def test_concurrent_forgets_keep_every_shopper(tmp_path):
    fl = ForgetList.open(tmp_path, environ={}, create_key=True)
    threads = [threading.Thread(target=lambda i=i: ForgetList.open(tmp_path, environ={}).add(f"user-{i}")) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fl.refresh()
    assert len(fl) == 16 and all(fl.contains(f"user-{i}") for i in range(16))


# -- ingest and the next training -----------------------------------------------------------
def test_ingest_rejects_forgotten_shoppers_and_keeps_nothing_of_them(tmp_path):
    privacy = tmp_path / "privacy"
    fl = ForgetList.open(privacy, environ={}, create_key=True)
    fl.add("u2")
    fl.add("12583")  # an Online Retail customer (CustomerID 12583.0 in the file)
    bad_row = "o9,u2,i9,not-a-time,1,1\n"  # their row that fails validation anyway: still redacted
    report = ingest(orders_csv(tmp_path / "orders.csv", extra=bad_row), None, None, tmp_path / "out", forgotten=fl)
    f = report.files[0]
    assert f.read == 7 == f.accepted + f.rejected and f.by_reason == {"forgotten user": 3}
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert rejects["record"].tolist() == ["{}"] * 3 and rejects["row"].tolist() == [3, 4, 7]
    assert "u2" not in set(load_canonical(tmp_path / "out").orders["user_id"])

    retail = ingest(FIXTURES / "online_retail_small.csv", None, None, tmp_path / "retail", forgotten=fl)
    f = retail.files[0]
    assert f.read == f.accepted + f.rejected and f.by_reason.get("forgotten user", 0) >= 1
    assert b"12583" not in (tmp_path / "retail" / "rejects.csv").read_bytes()
    assert "12583" not in set(load_canonical(tmp_path / "retail").orders["user_id"])


def test_the_next_training_has_no_trace_of_them(tmp_path):
    from tests.test_storefront import ORDERS
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig

    raw = tmp_path / "orders.csv"
    ORDERS.assign(ts=ORDERS["ts"].dt.strftime("%Y-%m-%d")).to_csv(raw, index=False)
    fl = ForgetList.open(tmp_path / "privacy", environ={}, create_key=True)
    forget_user("u5", fl)
    ingest(raw, None, None, tmp_path / "canonical", forgotten=fl)
    canonical = load_canonical(tmp_path / "canonical")
    als = Candidate(name="als", model=ALSConfig(factors=4, iterations=3, weighting="none"))
    bundle = fit_bundle(als, TrainConfig(), None, canonical.orders, {"run_id": "r"})
    assert "u5" not in bundle.users and bundle.users.row("u5") == -1
    assert len(bundle.users) == ORDERS["user_id"].nunique() - 1
    assert b"u5," not in (tmp_path / "canonical" / "rejects.csv").read_bytes()


# -- forgetting what is already stored ------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_forget_rewrites_canonical_tables_and_empties_the_event_store(tmp_path, backend):
    raw = orders_csv(tmp_path / "orders.csv", extra="o9,u2,i9,not-a-time,1,1\n")
    out = tmp_path / "canonical"
    ingest(raw, None, None, out, forgotten=ForgetList.open(tmp_path / "empty", environ={}))
    fl = ForgetList.open(tmp_path / "privacy", environ={}, create_key=True)
    with _event_store(tmp_path, backend) as events:
        events.append("u2", [Event("i1", "view", "2024-01-05T00:00:00")] * 3)
        events.append("u3", [Event("i1", "view", "2024-01-05T00:00:00")])
        report = forget_user("u2", fl, out, events)
        assert events.recent("u2") == [] and len(events.recent("u3")) == 1
        assert report.events == 3 and report.canonical_rows == {"orders.parquet": 2, "rejects.csv": 1}
        assert forget_user("u2", fl, out, events).canonical_rows == {}  # idempotent
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic: no temp files left
    saved = json.loads((out / "ingest_report.json").read_text())
    f = saved["files"][0]
    assert f["read"] == f["accepted"] + f["rejected"] and f["by_reason"]["forgotten user"] == 2
    assert saved["tables"]["orders"] == len(load_canonical(out).orders) == 4
    # the rewrite equals what a fresh ingest with the list gives: byte for byte
    fresh = tmp_path / "fresh"
    ingest(raw, None, None, fresh, forgotten=fl)
    assert (out / "orders.parquet").read_bytes() == (fresh / "orders.parquet").read_bytes()


class _event_store:
    def __init__(self, tmp_path, backend):
        self.tmp_path, self.backend, self.redis = tmp_path, backend, None

    def __enter__(self):
        if self.backend == "sqlite":
            self.store = SQLiteEventStore(self.tmp_path / "events.db")
        else:
            from features.event_store import RedisEventStore
            from tests.redis_server import redis_server

            self.redis = redis_server(self.tmp_path)
            self.store = RedisEventStore(self.redis.__enter__())
        return self.store

    def __exit__(self, *exc):
        self.store.close()
        if self.redis is not None:
            self.redis.__exit__(*exc)


def test_cli_forget_user(tmp_path):
    out = tmp_path / "canonical"
    ingest(orders_csv(tmp_path / "orders.csv"), None, None, out, forgotten=ForgetList.open(tmp_path / "e", environ={}))
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("u1", [Event("i1", "cart", "2024-01-05T00:00:00")])
    store.close()
    env = dict(os.environ, PYTHONPATH=str(REPO), SHOPREC_PRIVACY_DIR=str(tmp_path / "privacy"))
    cmd = [sys.executable, "-m", "training.cli", "forget-user", "u1", "--canonical", str(out),
           "--events-url", f"sqlite:///{tmp_path}/events.db"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    pseudonym = ForgetList.open(tmp_path / "privacy", environ={}).pseudonymizer.short("u1")
    assert f"forgot {pseudonym}: removed orders.parquet 2; 1 real-time events" in first.stdout
    assert "u1" not in first.stdout + first.stderr
    assert "u1" not in set(load_canonical(out).orders["user_id"])
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "removed no canonical rows; 0 real-time events" in again.stdout
    assert "nothing of this id was found" in again.stdout and "nothing of this id" not in first.stdout


# -- the running service --------------------------------------------------------------------
SCORES = pd.DataFrame({
    "user_id": ["u1", "u2", "u3", "u4"], "churn_probability": [0.9, 0.8, 0.7, 0.3],
    "conversion_probability": [0.1, 0.2, 0.3, 0.6], "expected_spend": [500.0, 100.0, 50.0, 10.0],
    "segment": ["at_risk"] * 4, "r_score": [2] * 4, "f_score": [3] * 4, "m_score": [3] * 4,
    "recency_days": [120.0] * 4, "frequency": [4.0] * 4, "monetary": [400.0] * 4,
    "reasons": [["no order for 120 days"]] * 4,
}).assign(value_at_risk=lambda d: d.churn_probability * d.expected_spend)  # ranks u1, u2, u3, u4


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from tests.test_storefront import make_bundle
    from training.propensity.bundle import PropensityBundle

    home = tmp_path_factory.mktemp("privacy_home")
    make_bundle({"trained_at": "2024-01-01T00:00:00Z"}).save(home / "bundle")
    store(home, (home / "bundle", "3"))
    PropensityBundle(SCORES, {"scored_at": "2024-12-31", "horizon_days": 90}).save(home / "propensity")
    code = ("import sys; from pathlib import Path; from training.propensity.publish import store_propensity_bundle; "
            "store_propensity_bundle(Path(sys.argv[1]), {'registry_version': '1'})")
    subprocess.run([sys.executable, "-c", code, str(home / "propensity")], cwd=REPO, check=True,
                   env=dict(os.environ, BENTOML_HOME=str(home)))
    ingest(orders_csv(home / "orders.csv", users=("u1", "u2", "u7")), None, None, home / "canonical",
           forgotten=ForgetList.open(home / "none", environ={}))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_ADMIN_KEY": ADMIN_KEY, "SHOPREC_API_KEY": API_KEY,
           "SHOPREC_CANONICAL_DIR": str(home / "canonical"), "SHOPREC_PRIVACY_DIR": str(home / "privacy")}
    with bentoml_server(home, timeout=90, extra_env=env) as url:
        yield url, home
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    for secret in ("alice@example.com", ADMIN_KEY, API_KEY):
        assert secret not in logs
    for raw_id in ("u1", "u2"):  # the forgotten shoppers appear only as pseudonyms
        assert not re.search(rf"\b{raw_id}\b", logs), raw_id
    assert re.search(r"shopper=ps_[0-9a-f]{16}", logs)
    # one line per request: the pseudonym rides on the request's access log line, never a line of its own
    assert re.search(r"path=/recommend,.*\(status=200,.*ms recommend shopper=ps_[0-9a-f]{16} source=\S+ items=\d+", logs)
    assert all("path=/" in line for line in logs.splitlines() if "shopper=ps_" in line)
    # the client's bad request (below) is one line naming the field, no traceback quoting the input
    assert re.search(r"client error on /recommend \[POST\]: 400 1 validation error\(s\): user_id: ", logs)
    assert "Traceback" not in logs


def call(url, path, body, headers=None):
    """POST with the key of the path's scope (marketing and admin as the old X-API-Key / X-Admin-Key headers)."""
    keys = {"storefront": STOREFRONT, "marketing": {"X-API-Key": API_KEY}, "admin": {"X-Admin-Key": ADMIN_KEY}}
    return httpx.post(f"{url}{path}", json=body, headers=headers or keys[ROUTE_SCOPES[path]], timeout=10)


def test_forgetting_stops_everything_personal_at_once(service):
    url, home = service
    call(url, "/events", {"user_id": "u1", "events": [{"item_id": "i7", "event_type": "purchase"}]})
    before = call(url, "/recommend", {"user_id": "u1", "k": 3}).json()
    assert before["source"].startswith("model:") and before["items"][0]["reason"]
    assert call(url, "/propensity", {"user_ids": ["u1"]}).json()["users"][0]["known"]
    assert call(url, "/recommend", {"user_id": "alice@example.com\x01"}).status_code == 400  # logged in one line, no input

    r = call(url, "/admin/forget", {"user_id": "u1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["events_removed"] == 1 and body["canonical_rows_removed"] == {"orders.parquet": 2}
    assert body["experiment_rows_removed"] == 1  # the purchase, kept as an outcome (a next A/B test's pre-period)
    assert re.fullmatch(r"ps_[0-9a-f]{16}", body["pseudonym"])

    after = call(url, "/recommend", {"user_id": "u1", "k": 3}).json()
    assert after["source"].startswith("fallback:") and all(it["reason"] is None for it in after["items"])
    assert call(url, "/rerank", {"user_id": "u1", "items": ["i1", "i2"]}).json()["source"].startswith("fallback:")
    assert call(url, "/events", {"user_id": "u1", "events": [{"item_id": "i2", "event_type": "view"}]}).json() == {"stored": 0}
    assert call(url, "/propensity", {"user_ids": ["u1", "u2"]}).json()["users"][0] == {
        "user_id": "u1", "known": False, "churn_probability": None, "conversion_probability": None,
        "value_at_risk": None, "segment": "unknown"}
    churn = call(url, "/churn_risk", {}, {"X-API-Key": API_KEY}).json()
    assert [(c["rank"], c["user_id"]) for c in churn["customers"]] == [(1, "u2"), (2, "u3"), (3, "u4")]
    assert churn["total"] == 3
    assert call(url, "/churn_risk", {"top_n": 1}, {"X-API-Key": API_KEY}).json()["customers"][0]["user_id"] == "u2"
    with sqlite3.connect(home / "events.db") as db:
        assert db.execute("SELECT count(*) FROM events WHERE user_id = 'u1'").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM outcomes WHERE user_id = 'u1'").fetchone() == (0,)
    assert "u1" not in set(load_canonical(home / "canonical").orders["user_id"])


def test_the_cli_reaches_a_running_service_within_a_second(service):
    url, home = service
    assert call(url, "/recommend", {"user_id": "u2", "k": 3}).json()["source"].startswith("model:")
    env = dict(os.environ, PYTHONPATH=str(REPO), SHOPREC_PRIVACY_DIR=str(home / "privacy"))
    done = subprocess.run([sys.executable, "-m", "training.cli", "forget-user", "u2", "--canonical", str(home / "canonical"),
                           "--events-url", f"sqlite:///{home}/events.db"], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    deadline = time.monotonic() + 5
    while call(url, "/recommend", {"user_id": "u2", "k": 3}).json()["source"].startswith("model:"):
        assert time.monotonic() < deadline, "the service did not pick up the CLI's forget"
        time.sleep(0.2)
    customers = call(url, "/churn_risk", {}, {"X-API-Key": API_KEY}).json()["customers"]
    assert [c["user_id"] for c in customers] == ["u3", "u4"]
    assert call(url, "/recommend", {"user_id": "u3", "k": 3}).json()["source"].startswith("model:")  # others unaffected


def test_the_privacy_note_goes_on_the_access_line_else_on_a_line_of_its_own(caplog, tmp_path):
    """Inside ``request_notes`` (the keys middleware, around each storefront request) the note waits for the
    request's access log line; with none (access log off, no answer sent) it is logged alone at the end."""
    import logging

    from serving.admin import ACCESS_LOGGER, NotesOnAccessLine, ServicePrivacy, request_notes

    privacy = ServicePrivacy(ForgetList(tmp_path, Pseudonymizer(b"k" * 32)), None)
    access = logging.getLogger(ACCESS_LOGGER)
    access.addFilter(f := NotesOnAccessLine())
    try:
        with caplog.at_level(logging.INFO):
            with request_notes():
                privacy.log_request("recommend", "alice@example.com", "model:als", 10)
                access.info("%s (%s) %.3fms", "127.0.0.1:1", "path=/recommend", 0.5)
            with request_notes():  # no access line in this request
                privacy.log_request("rerank", "bob", "fallback:popular", 3)
            privacy.log_request("recommend", "carol", "model:als", 5)  # outside any request: at once
    finally:
        access.removeFilter(f)
    lines = [(r.name, r.getMessage()) for r in caplog.records if "shopper=" in r.getMessage()]
    ps = privacy.pseudonym
    assert lines == [(ACCESS_LOGGER, f"127.0.0.1:1 (path=/recommend) 0.500ms recommend shopper={ps('alice@example.com')} "
                                     f"source=model:als items=10"),
                     ("shoprec.requests", f"rerank shopper={ps('bob')} source=fallback:popular items=3"),
                     ("shoprec.requests", f"recommend shopper={ps('carol')} source=model:als items=5")]
    assert "alice" not in caplog.text and "bob" not in caplog.text
