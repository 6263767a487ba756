"""The production topology of README "A cluster on one machine", for real: `python -m deploy.cluster start` (what
`make cluster` runs) on free ports brings up PostgreSQL, the MLflow server on it, Redis, the publisher, two
BentoML replicas and nginx; a tiny shop is trained against the MLflow server and published. Through nginx
and each replica: answers from both replicas (X-Served-By), events, forgets and keys crossing replicas, a new
champion rolled onto both under load without a failed request, a replica killed under load with nginx
routing around it, and `stop` ending exactly the processes it started."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from deploy.cluster import Cluster, Ports, family, recorded
from tests.server import REPO, bearer, free_port

SHOP = "tiny-shop"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    # under /tmp, not pytest's 0700 folder: PostgreSQL runs as the postgres user and must reach its data
    state = Path(tempfile.mkdtemp(prefix="shoprec-cluster-", dir="/tmp"))
    state.chmod(0o755)
    c = Cluster(state, SHOP, Ports(free_port(), free_port(), free_port(), (free_port(), free_port()), free_port()))
    p = c.ports
    started = subprocess.run(
        [sys.executable, "-m", "deploy.cluster", "start", "--state", str(state), "--preset", "tiny", "--shop", SHOP,
         "--budget-minutes", "0.2", "--postgres-port", str(p.postgres), "--mlflow-port", str(p.mlflow),
         "--redis-port", str(p.redis), "--replica-ports", ",".join(map(str, p.replicas)), "--nginx-port", str(p.nginx)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout[-4000:] + started.stderr[-4000:]
        keys = dict(re.findall(r"(\w+) key \(shown once\): (\S+)", started.stdout))
        assert set(keys) == {"storefront", "admin"}, started.stdout
        c.keys = {scope: bearer(key) for scope, key in keys.items()}
        orders = pd.read_parquet(state / "shop" / "orders.parquet")
        c.shoppers = orders["user_id"].value_counts().index[:10].tolist()  # the most active: model answers
        yield c
    finally:
        subprocess.run([sys.executable, "-m", "deploy.cluster", "stop", "--state", str(state)], cwd=REPO,
                       capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def recommend(url: str, c: Cluster, user_id: str, k: int = 5) -> httpx.Response:
    return httpx.post(f"{url}/recommend", json={"user_id": user_id, "k": k}, headers=c.keys["storefront"], timeout=10)


def until(check, timeout_s: float, every_s: float = 0.2):
    """The first truthy ``check()`` within ``timeout_s`` (else the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


class Load:
    """``threads`` clients calling /recommend through nginx in a loop; counts the status of every answer."""

    def __init__(self, c: Cluster, threads: int = 2):
        self.c, self.stop, self.statuses, self.served_by = c, threading.Event(), Counter(), Counter()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def _loop(self, i: int) -> None:
        with httpx.Client(timeout=20) as client:
            n = 0
            while not self.stop.is_set():
                user = self.c.shoppers[(i + n) % len(self.c.shoppers)]
                n += 1
                try:
                    r = client.post(f"{self.c.url}/recommend", json={"user_id": user, "k": 5},
                                    headers=self.c.keys["storefront"])
                    self.statuses[r.status_code] += 1
                    self.served_by[r.headers.get("x-served-by")] += 1
                except httpx.HTTPError as e:
                    self.statuses[type(e).__name__] += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


def test_mlflow_runs_and_registry_live_in_postgres(cluster):
    from mlflow import MlflowClient

    from training import tracking

    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)  # not this process's
    champion = client.get_model_version_by_alias(tracking.MODEL_NAME, tracking.alias_for(SHOP))
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED" and run.data.tags.get("shop") == SHOP
    artifacts = [a.path for a in client.list_artifacts(champion.run_id)]
    assert artifacts, "the server serves the run's artifacts"
    # the same rows, read from PostgreSQL itself
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=cluster.ports.postgres, user="shoprec", dbname="mlflow") as db:
        cur = db.cursor()
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (champion.run_id,))
        assert cur.fetchone() == ("FINISHED",)
        cur.execute("SELECT version FROM registered_model_aliases WHERE name = %s AND alias = %s",
                    (tracking.MODEL_NAME, tracking.alias_for(SHOP)))
        assert cur.fetchone() == (int(champion.version),)


def test_nginx_spreads_answers_over_both_replicas(cluster):
    names = Counter()
    for i in range(12):
        r = recommend(cluster.url, cluster, cluster.shoppers[i % 10])
        assert r.status_code == 200 and r.json()["source"].startswith("model:"), r.text
        names[r.headers["x-served-by"]] += 1
    assert set(names) == {"replica-1", "replica-2"} and min(names.values()) >= 3, names
    for n in (1, 2):  # refusals name the replica too (the header is our outermost middleware)
        r = httpx.post(f"{cluster.replica_url(n)}/recommend", json={"user_id": "u1", "k": 1}, timeout=10)
        assert r.status_code == 401 and r.headers["x-served-by"] == f"replica-{n}"


def test_an_event_posted_to_one_replica_changes_the_others_answer(cluster):
    user = cluster.shoppers[0]
    before = recommend(cluster.replica_url(2), cluster, user).json()
    top = before["items"][0]["item_id"]
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    r = httpx.post(f"{cluster.replica_url(1)}/events", headers=cluster.keys["storefront"], timeout=10,
                   json={"user_id": user, "events": [{"item_id": top, "event_type": "purchase", "ts": now}]})
    assert r.status_code == 200 and r.json() == {"stored": 1}, r.text
    after = recommend(cluster.replica_url(2), cluster, user).json()
    assert after["source"].endswith("+events") and top not in [i["item_id"] for i in after["items"]], (before, after)


def test_a_forget_on_one_replica_holds_on_the_other(cluster):
    user = cluster.shoppers[1]
    assert recommend(cluster.replica_url(2), cluster, user).json()["source"].startswith("model:")
    r = httpx.post(f"{cluster.replica_url(1)}/admin/forget", json={"user_id": user}, headers=cluster.keys["admin"],
                   timeout=30)
    assert r.status_code == 200, r.text
    forgotten = until(lambda: recommend(cluster.replica_url(2), cluster, user).json()["source"].startswith("fallback:"), 3)
    assert forgotten, "replica-2 still personalises a shopper forgotten through replica-1"


def test_a_key_created_once_works_on_both_replicas_and_its_revocation_too(cluster):
    def keys(*args):
        out = subprocess.run([sys.executable, "-m", "training.cli", "keys", *args], cwd=cluster.state, env=cluster.env(),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    key = bearer(keys("create", "--scope", "storefront", "--name", "web-shop"))

    def status(n):
        return httpx.post(f"{cluster.replica_url(n)}/recommend", json={"user_id": cluster.shoppers[2], "k": 3},
                          headers=key, timeout=10).status_code

    assert until(lambda: status(1) == 200 and status(2) == 200, 6), "a new key is not accepted by both replicas"
    keys("revoke", "web-shop")
    assert until(lambda: status(1) == 401 and status(2) == 401, 6), "a revoked key still works on a replica"


def test_a_new_champion_rolls_onto_every_replica_without_a_failed_request(cluster):
    from mlflow import MlflowClient

    from training import tracking

    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)  # not this process's
    alias = tracking.alias_for(SHOP)
    old = client.get_model_version_by_alias(tracking.MODEL_NAME, alias)
    new = client.create_model_version(tracking.MODEL_NAME, old.source, run_id=old.run_id, tags=old.tags)
    served = f"{SHOP}/v{new.version}"

    def versions():
        return {recommend(cluster.replica_url(n), cluster, cluster.shoppers[3]).json()["model_version"] for n in (1, 2)}

    assert versions() == {f"{SHOP}/v{old.version}"}
    with Load(cluster) as load:
        time.sleep(1)
        client.set_registered_model_alias(tracking.MODEL_NAME, alias, new.version)  # what a promotion does
        moved = time.monotonic()
        rolled = until(lambda: versions() == {served}, 15, every_s=0.5)
        took = time.monotonic() - moved
        time.sleep(1)
    assert rolled, f"not every replica serves {served} 15 s after the alias moved: {versions()}"
    assert load.failed == 0 and load.statuses[200] > 20, load.statuses
    print(f"new champion on both replicas {took:.1f} s after the alias moved; {load.statuses[200]} answers, none failed")


def test_killing_a_replica_under_load_keeps_nginx_answering(cluster):
    pid = recorded(cluster, "replica-2")
    assert pid is not None
    with Load(cluster, threads=2) as load:
        time.sleep(2)
        before = sum(load.statuses.values())
        for member in family(pid):  # the replica and its worker (in a session of its own) die at once
            os.kill(member, signal.SIGKILL)
        killed = time.monotonic()
        until(lambda: time.monotonic() - killed > 4, 5)
        after_kill = load.served_by.copy()
    assert before > 10 and load.statuses[200] > before + 20, load.statuses
    assert load.failed <= 2, f"more failures than requests in flight on the killed replica (2 clients): {load.statuses}"
    for _ in range(6):  # afterwards every answer comes from the survivor
        r = recommend(cluster.url, cluster, cluster.shoppers[4])
        assert r.status_code == 200 and r.headers["x-served-by"] == "replica-1"
    assert after_kill["replica-1"] > 0
    print(f"replica-2 killed under load through nginx: {dict(load.statuses)}")


def test_stop_ends_exactly_what_start_started(cluster):
    pids = {name: recorded(cluster, name) for name in cluster.services()}
    assert pids.pop("replica-2") is None  # killed by the test before
    assert all(pids.values()), pids
    members = {name: family(pid) for name, pid in pids.items()}  # a replica's worker is not in its process group
    assert len(members["replica-1"]) >= 2
    # replica-1's `bentoml serve` killed outright (not its worker, in a session of its own): the worker serves on,
    # unmanaged; status says so and stop ends it (it used to be lost: stop said nothing of it, start then failed)
    os.kill(pids["replica-1"], signal.SIGKILL)
    assert until(lambda: not _running_pid(pids["replica-1"]), 5)
    shown = subprocess.run([sys.executable, "-m", "deploy.cluster", "status", "--state", str(cluster.state)], cwd=REPO,
                           capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"replica-1 +broken: its main process is gone", shown), shown
    bystander = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(free_port()),
                                  "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)  # same program, not ours
    try:
        out = subprocess.run([sys.executable, "-m", "deploy.cluster", "stop", "--state", str(cluster.state)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "postgres" in out.stdout and "replica-1" in out.stdout and "replica-2" not in out.stdout
        for name, found in members.items():
            running = [pid for pid in found if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            assert not running, f"{name}: {running} still run"
        assert not (cluster.state / "postgres" / "data" / "postmaster.pid").exists()
        assert bystander.poll() is None, "stop ended a process it did not start"
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{cluster.url}/nginx-health", timeout=1)
            pytest.fail("nginx still answers")
    finally:
        bystander.terminate()
        bystander.wait(timeout=10)


def _running_pid(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def test_start_refuses_a_port_something_else_listens_on(tmp_path):
    """A leftover worker on a replica's port answered the readiness check in the new replica's place (which had died
    on 'address in use'), and start said ready; now start names the port before starting anything."""
    import socket

    from deploy.cluster import ClusterError, start

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        c = Cluster(tmp_path / "state", SHOP, Ports(free_port(), free_port(), free_port(), (port, free_port()), free_port()))
        with pytest.raises(ClusterError, match=rf"ports in use on 127.0.0.1: {port} \(replica-1\)"):
            start(c)
    assert not (tmp_path / "state" / "pids").exists()  # nothing was started
