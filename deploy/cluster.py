"""``make cluster`` / ``make cluster-stop``: the production topology on one machine, from the project's files.

What runs (default ports; all on 127.0.0.1, state and logs under ``data/cluster/``):

- PostgreSQL (Debian's package, a data directory of our own, ``pg_ctl``; as the ``postgres`` user when we
  are root) on 5433, holding MLflow's runs and registry in the database ``mlflow``;
- the MLflow tracking server on 5000 (``--artifacts-destination``: artifacts served by the server);
- Redis on 6379 (append-only, fsync always): the real-time events and the rate-limit counters;
- the publisher (deploy/publisher.py): moves the shop's champion from the registry into the BentoML store
  that the replicas share, whenever the alias moves;
- two BentoML replicas on 3001 and 3002, polling the store for a new champion every 3 s;
- nginx (Debian's package) on 8080, balancing the replicas and routing around one that fails.

The first start generates a synthetic shop and trains it against the MLflow server
(``MLFLOW_TRACKING_URI=http://127.0.0.1:5000``), publishes it and creates a storefront and an admin key
(printed once). Every process started is recorded in ``<state>/pids/<name>.pid`` with its start time;
``stop`` ends exactly those (process groups by PID, PostgreSQL with ``pg_ctl stop``), nothing found by name.

    python -m deploy.cluster start [--state DIR] [--preset small] [--shop NAME] [--*-port N]
    python -m deploy.cluster stop [--state DIR]
    python -m deploy.cluster status [--state DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STATE = REPO / "data" / "cluster"
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf")
RELOAD_POLL_S = 3.0  # replicas look for a new champion in the store this often; the publisher likewise


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    postgres: int = 5433
    mlflow: int = 5000
    redis: int = 6379
    replicas: tuple[int, ...] = (3001, 3002)
    nginx: int = 8080

    def named(self) -> list[tuple[str, int]]:
        return [("postgres", self.postgres), ("mlflow", self.mlflow), ("redis", self.redis),
                *((f"replica-{n}", port) for n, port in enumerate(self.replicas, 1)), ("nginx", self.nginx)]


@dataclass
class Cluster:
    state: Path
    shop: str = "synthetic-small"
    ports: Ports = field(default_factory=Ports)

    # -- where things are -------------------------------------------------------------------------
    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    @property
    def postgres_uri(self) -> str:
        # the driver named: SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3, we install psycopg2
        return f"postgresql+psycopg2://shoprec@127.0.0.1:{self.ports.postgres}/mlflow"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.nginx}"

    def replica_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports.replicas[n - 1]}"

    def env(self) -> dict[str, str]:
        """The environment of every shoprec process of the cluster: what the replicas share."""
        s = self.state
        return dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", BENTOML_DO_NOT_TRACK="true",
                    MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="true",
                    MLFLOW_TRACKING_URI=self.mlflow_uri,  # training and the publisher; never the replicas' requests
                    BENTOML_HOME=str(s / "bentoml_home"),  # the store the publisher fills and the replicas read
                    SHOPREC_EVENTS_URL=self.redis_url,  # events; rate-limit counters follow the event store's Redis
                    SHOPREC_KEYS_FILE=str(s / "keys" / "keys.json"), SHOPREC_ACCESS_LOG=str(s / "keys" / "access.jsonl"),
                    SHOPREC_SESSIONS_FILE=str(s / "keys" / "sessions.json"),
                    SHOPREC_PRIVACY_DIR=str(s / "privacy"), SHOPREC_CANONICAL_DIR=str(s / "canonical"),
                    SHOPREC_MONITOR_DIR=str(s / "monitor"),  # drift observation log: `shoprec monitor --dir` reads it
                    SHOPREC_SHOP=self.shop, SHOPREC_RELOAD_POLL_S=str(RELOAD_POLL_S))

    def services(self) -> list[str]:
        """What ``start`` spawns, in order; ``stop`` ends them in the reverse order (PostgreSQL last, with pg_ctl)."""
        return ["redis", "mlflow", "publisher", *(f"replica-{n}" for n in range(1, len(self.ports.replicas) + 1)), "nginx"]

    def pidfile(self, name: str) -> Path:
        return self.state / "pids" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"


def say(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


# -- processes we start, and only those ---------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the PID, it names
    one process, so a PID reused by another process is never signalled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def spawn(c: Cluster, name: str, cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> int:
    """Start ``cmd`` in its own process group, output to ``logs/<name>.log``; record its PID."""
    c.log(name).parent.mkdir(parents=True, exist_ok=True)
    c.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(c.log(name), "ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd or c.state, env=env or c.env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    c.pidfile(name).write_text(json.dumps({"pid": proc.pid, "started": _start_time(proc.pid), "cmd": cmd[:3]}))
    return proc.pid


def remember_family(c: Cluster, name: str) -> None:
    """Add ``name``'s processes as they run now (a replica's workers, in sessions of their own) to its pidfile: a
    worker left behind by a parent that was killed outright is then still ours to find and end."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(c.pidfile(name).read_text())
        if (pid := recorded(c, name)) is not None:
            info["members"] = {str(p): t for p, t in family(pid).items()}
            c.pidfile(name).write_text(json.dumps(info))


def members(c: Cluster, name: str) -> dict[int, str]:
    """The processes recorded for ``name`` (``remember_family``) that still run; with its main process gone, what
    is left of it (a replica whose ``bentoml serve`` was killed outright leaves its worker serving)."""
    try:
        info = json.loads(c.pidfile(name).read_text())
    except (OSError, ValueError):
        return {}
    return {int(p): t for p, t in info.get("members", {}).items() if _running(int(p), t)}


def recorded(c: Cluster, name: str) -> int | None:
    """The PID of ``name`` if it is the process we started and it still runs."""
    try:
        info = json.loads(c.pidfile(name).read_text())
    except (OSError, ValueError):
        return None
    pid = int(info["pid"])
    return pid if info.get("started") is not None and _running(pid, info["started"]) else None  # a zombie has ended


def family(pid: int) -> dict[int, str]:
    """``pid`` and its descendants, each with its start time. BentoML's workers run in sessions of their own
    (circus calls setsid), so the process group of ``bentoml serve`` is not all of a replica."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(proc.name))
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if (started := _start_time(p)) is not None:
            found[p] = started
            todo.extend(children.get(p, []))
    return found


def end(c: Cluster, name: str, timeout_s: float = 15.0) -> bool:
    """SIGTERM what we started as ``name`` (its process group and every descendant); SIGKILL whatever of it
    still runs after ``timeout_s``. True if it ran."""
    pid, recorded_members = recorded(c, name), members(c, name)
    c.pidfile(name).unlink(missing_ok=True)
    if pid is None and not recorded_members:
        return False
    found = (family(pid) if pid is not None else {}) | recorded_members
    signal_all(pid, found, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_running(p, t) for p, t in found.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_all(pid, {p: t for p, t in found.items() if _running(p, t)}, signal.SIGKILL)
    return True


def signal_all(pgid: int | None, procs: dict[int, str], sig: int) -> None:
    """``sig`` to the process group ``pgid`` (None: none left) and to each of ``procs`` that is still the
    process recorded."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for p, started in procs.items():
        if _start_time(p) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)


def _running(pid: int, started: str) -> bool:
    """Still the process we recorded, and not a zombie waiting for init to reap it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def wait_for(what: str, check, timeout_s: float, c: Cluster | None = None, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if c is not None and name is not None and recorded(c, name) is None:
            raise ClusterError(f"{what}: the process exited; last lines of {c.log(name)}:\n{_tail(c.log(name))}")
        time.sleep(0.25)
    tail = f"; last lines of {c.log(name)}:\n{_tail(c.log(name))}" if c and name else ""
    raise ClusterError(f"{what}: not ready after {timeout_s:.0f} s{tail}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


# -- PostgreSQL --------------------------------------------------------------------------------------
def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise ClusterError("PostgreSQL server not found under /usr/lib/postgresql: `make system-deps` installs "
                           "Debian's postgresql (or: sudo apt-get install -y postgresql)")
    return found[-1].parent


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(c: Cluster) -> None:
    bin_dir, root = postgres_bin(), c.state / "postgres"
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        say(f"initdb {data}")
        _run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "shoprec", "--auth=trust",
                           "--encoding=UTF8", "--no-instructions"]), "initdb")
    if _postgres_running(c):
        say(f"PostgreSQL already running on {c.ports.postgres}")
    else:
        opts = f"-p {c.ports.postgres} -k {root} -c listen_addresses=127.0.0.1"
        _run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "postgres.log"),
                           "-w", "-t", "60", "start"]), "pg_ctl start")
        say(f"PostgreSQL on 127.0.0.1:{c.ports.postgres} (data {data})")
    exists = _psql(c, "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
    if exists.strip() != "1":
        _psql(c, "CREATE DATABASE mlflow")


def _psql(c: Cluster, sql: str, db: str = "postgres") -> str:
    out = _run(["psql", "-h", "127.0.0.1", "-p", str(c.ports.postgres), "-U", "shoprec", "-d", db, "-tAc", sql], "psql")
    return out


def _postgres_running(c: Cluster) -> bool:
    result = subprocess.run(_as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(c.state / "postgres" / "data"),
                                          "status"]), capture_output=True, text=True)
    return result.returncode == 0


def stop_postgres(c: Cluster) -> bool:
    data = c.state / "postgres" / "data"
    if not (data / "PG_VERSION").exists() or not _postgres_running(c):
        return False
    _run(_as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    return True


def _run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 900) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if result.returncode != 0:
        raise ClusterError(f"{what} failed ({result.returncode}): {(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


# -- the services ------------------------------------------------------------------------------------
def start_redis(c: Cluster) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClusterError("redis-server not found: `make system-deps` installs Debian's redis-server")
    (c.state / "redis").mkdir(parents=True, exist_ok=True)
    spawn(c, "redis", [binary, "--bind", "127.0.0.1", "--port", str(c.ports.redis), "--dir", str(c.state / "redis"),
                       "--appendonly", "yes", "--appendfsync", "always", "--save", ""])

    def pong() -> bool:
        import redis

        with contextlib.suppress(redis.RedisError), redis.Redis.from_url(c.redis_url, socket_timeout=1) as r:
            return bool(r.ping())
        return False

    wait_for("Redis", pong, 20, c, "redis")
    say(f"Redis on {c.redis_url} (events, rate-limit counters)")


def start_mlflow(c: Cluster) -> None:
    artifacts = c.state / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    spawn(c, "mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", c.postgres_uri,
                        "--artifacts-destination", str(artifacts), "--serve-artifacts",
                        "--host", "127.0.0.1", "--port", str(c.ports.mlflow), "--workers", "1",
                        "--uvicorn-opts", "--timeout-graceful-shutdown 3"])  # else stop waits ~15 s on idle clients
    wait_for("MLflow server", lambda: http_ok(f"{c.mlflow_uri}/health"), 120, c, "mlflow")
    say(f"MLflow server on {c.mlflow_uri} (runs and registry in PostgreSQL, artifacts in {artifacts})")


def shoprec(c: Cluster, *args: str, timeout: float = 1800) -> str:
    """A shoprec command as an operator runs it against the cluster (in the state folder)."""
    return _run([sys.executable, "-m", "training.cli", *args], f"shoprec {args[0]}", env=c.env(), cwd=c.state,
                timeout=timeout)


def has_champion(c: Cluster) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training import tracking

    try:
        MlflowClient(tracking_uri=c.mlflow_uri).get_model_version_by_alias(tracking.MODEL_NAME, tracking.alias_for(c.shop))
        return True
    except MlflowException:
        return False


def ensure_champion(c: Cluster, preset: str, budget_minutes: float | None) -> None:
    """Train the synthetic shop against the MLflow server unless its lineage has a champion there; publish."""
    if has_champion(c):
        say(f"champion-{c.shop} already on the MLflow server")
    else:
        shop_dir = c.state / "shop"
        if not (shop_dir / "orders.parquet").exists():
            say(f"generating the '{preset}' synthetic shop into {shop_dir}")
            shoprec(c, "generate", "--preset", preset, "--out", str(shop_dir))
        say(f"training {c.shop} against {c.mlflow_uri} (a few minutes for the small shop)")
        budget = ["--budget-minutes", str(budget_minutes)] if budget_minutes is not None else []
        out = shoprec(c, "train", "--orders", str(shop_dir / "orders.parquet"), "--events", str(shop_dir / "events.parquet"),
                      "--items", str(shop_dir / "items.parquet"), "--shop", c.shop, "--work", str(c.state / "canonical"),
                      *budget)
        say(out.strip().splitlines()[-1])
    for line in shoprec(c, "publish", "--shop", c.shop).strip().splitlines():
        say(line)


def first_keys(c: Cluster) -> list[str]:
    """A storefront and an admin key on the first start (printed once; only their hashes are stored)."""
    from features.key_store import KeyStore

    store = c.state / "keys" / "keys.json"
    if any(k.active for k in KeyStore(store).read()):
        return []
    lines = []
    for scope in ("storefront", "admin"):
        key = shoprec(c, "keys", "create", "--scope", scope, "--name", f"cluster-{scope}").strip().splitlines()[-1]
        lines.append(f"{scope} key (shown once): {key}")
    return lines


def start_publisher(c: Cluster) -> None:
    spawn(c, "publisher", [sys.executable, "-m", "deploy.publisher", "--shop", c.shop, "--every", str(RELOAD_POLL_S)])


def start_replica(c: Cluster, n: int) -> None:
    env = c.env() | {"SHOPREC_REPLICA": f"replica-{n}"}
    spawn(c, f"replica-{n}", [sys.executable, "-m", "bentoml", "serve", "serving.service:Shoprec", "--host", "127.0.0.1",
                              "--port", str(c.ports.replicas[n - 1])], cwd=REPO, env=env)


def nginx_conf(c: Cluster) -> Path:
    root = c.state / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in c.ports.replicas)
    text = (NGINX_TEMPLATE.read_text().replace("{{dir}}", str(root)).replace("{{servers}}", servers)
            .replace("{{port}}", str(c.ports.nginx)))
    conf = root / "nginx.conf"
    conf.write_text(text)
    return conf


def start_nginx(c: Cluster) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise ClusterError("nginx not found: `make system-deps` installs Debian's nginx")
    conf = nginx_conf(c)
    _run([binary, "-t", "-q", "-c", str(conf), "-p", str(conf.parent)], "nginx -t")
    spawn(c, "nginx", [binary, "-c", str(conf), "-p", str(conf.parent)])
    wait_for("nginx", lambda: http_ok(f"{c.url}/nginx-health"), 20, c, "nginx")


# -- start, stop, status -----------------------------------------------------------------------------
def start(c: Cluster, preset: str = "small", budget_minutes: float | None = None) -> None:
    c.state.mkdir(parents=True, exist_ok=True)
    running = [name for name in c.services() if recorded(c, name) or members(c, name)]
    if running:
        raise ClusterError(f"already running in {c.state}: {', '.join(running)} (make cluster-stop first)")
    ours = {"postgres"} if _our_postgres_up(c) else set()
    taken = [f"{port} ({what})" for what, port in c.ports.named() if what not in ours and not port_free(port)]
    if taken:  # a process we did not start (or lost track of) would answer in our place
        raise ClusterError(f"ports in use on 127.0.0.1: {', '.join(taken)}; stop what listens there or choose "
                           "other ports (--*-port)")
    started = time.monotonic()
    try:
        start_postgres(c)
        start_redis(c)
        start_mlflow(c)
        ensure_champion(c, preset, budget_minutes)
        keys = first_keys(c)
        start_publisher(c)
        for n in range(1, len(c.ports.replicas) + 1):
            start_replica(c, n)
        for n in range(1, len(c.ports.replicas) + 1):
            wait_for(f"replica-{n}", lambda n=n: http_ok(f"{c.replica_url(n)}/readyz"), 180, c, f"replica-{n}")
            remember_family(c, f"replica-{n}")
            say(f"replica-{n} on {c.replica_url(n)} serving")
        start_nginx(c)
        wait_for("nginx -> replicas", lambda: http_ok(f"{c.url}/readyz"), 30)
    except BaseException:
        say("start failed: stopping what was started")
        stop(c)
        raise
    say(f"ready in {time.monotonic() - started:.0f} s: {c.url} (nginx) -> replicas on "
        f"{', '.join(str(p) for p in c.ports.replicas)}; MLflow {c.mlflow_uri}; state and logs in {c.state}")
    for line in keys:
        say(line)


def stop(c: Cluster) -> list[str]:
    """End what ``start`` recorded (newest first), then PostgreSQL; returns the names stopped."""
    stopped = []
    for name in [*reversed(c.services()), "postgres"]:
        t0 = time.monotonic()
        if stop_postgres(c) if name == "postgres" else end(c, name):
            stopped.append(f"{name} ({time.monotonic() - t0:.1f} s)")
    say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return stopped


def status(c: Cluster) -> dict[str, str]:
    """Per component: "running", "stopped", or "broken: ..." where its main process is gone but processes of it
    still run (a replica's worker still answering on its port)."""
    out = {}
    for name in c.services():
        if recorded(c, name) is not None:
            out[name] = "running"
        elif left := members(c, name):
            out[name] = (f"broken: its main process is gone, {len(left)} of its processes still run (PIDs "
                         f"{', '.join(map(str, sorted(left)))}); make cluster-stop ends them")
        else:
            out[name] = "stopped"
    out["postgres"] = "running" if _our_postgres_up(c) else "stopped"
    return out


def _our_postgres_up(c: Cluster) -> bool:
    return (c.state / "postgres" / "data" / "PG_VERSION").exists() and _postgres_running(c)


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port``."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state and logs (default: data/cluster)")
    p.add_argument("--preset", default="small", help="synthetic shop preset trained on the first start")
    p.add_argument("--shop", default=None, help="the lineage served (default: synthetic-<preset>)")
    p.add_argument("--budget-minutes", type=float, default=None, help="recipe search budget of the first training")
    d = Ports()
    p.add_argument("--postgres-port", type=int, default=d.postgres)
    p.add_argument("--mlflow-port", type=int, default=d.mlflow)
    p.add_argument("--redis-port", type=int, default=d.redis)
    p.add_argument("--replica-ports", default=",".join(map(str, d.replicas)), help="comma-separated")
    p.add_argument("--nginx-port", type=int, default=d.nginx)
    a = p.parse_args(argv)
    ports = Ports(a.postgres_port, a.mlflow_port, a.redis_port, tuple(int(x) for x in a.replica_ports.split(",")),
                  a.nginx_port)
    c = Cluster(a.state.resolve(), a.shop or f"synthetic-{a.preset}", ports)
    try:
        if a.action == "start":
            start(c, a.preset, a.budget_minutes)
        elif a.action == "stop":
            stop(c)
        else:
            for name, state in status(c).items():
                print(f"{name:10s} {state}")
    except ClusterError as e:
        print(f"[cluster] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
