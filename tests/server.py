"""Start the real BentoML server (or any other local server: benchmarks' floors, nginx, ``mlflow ui``) on
127.0.0.1 for tests, benchmarks and screenshots, and stop it by its process group."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# one key of each scope, given to every test server through the environment (features/settings.py)
STOREFRONT_KEY, MARKETING_KEY, ADMIN_KEY = ("storefront-key-for-tests-0123456789", "marketing-key-for-tests-0123456789",
                                            "admin-key-for-tests-0123456789")
KEY_ENV = {"SHOPREC_STOREFRONT_KEY": STOREFRONT_KEY, "SHOPREC_API_KEY": MARKETING_KEY, "SHOPREC_ADMIN_KEY": ADMIN_KEY}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


STOREFRONT, MARKETING, ADMIN = bearer(STOREFRONT_KEY), bearer(MARKETING_KEY), bearer(ADMIN_KEY)


def server_env(bentoml_home: Path, extra_env: dict | None = None) -> dict:
    """The environment of a test server: its own BentoML store, key store, access log, sessions and drift
    observation log (under ``bentoml_home``), the three test keys; ``extra_env`` wins."""
    home = Path(bentoml_home)
    return dict(os.environ, BENTOML_HOME=str(home), OPENBLAS_NUM_THREADS="1", BENTOML_DO_NOT_TRACK="true",
                SHOPREC_KEYS_FILE=str(home / "keys" / "keys.json"), SHOPREC_ACCESS_LOG=str(home / "keys" / "access.jsonl"),
                SHOPREC_SESSIONS_FILE=str(home / "keys" / "sessions.json"), SHOPREC_MONITOR_DIR=str(home / "monitor"),
                **KEY_ENV) | (extra_env or {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(args: list[str], port: int, log_path: Path | None = None, *, ready: str = "/readyz",
                 timeout: float = 60.0, cwd: Path = REPO, env: dict | None = None, what: str = "server"):
    """Run ``args``, a server listening on 127.0.0.1:``port``, in a process group of its own (output to
    ``log_path``; None: this process's); yield ``(base URL, process)`` once GET ``ready`` answers 200.
    Raises with the log's tail if it exits or is not ready within ``timeout`` s. Stopped by its group
    (the server and its workers): SIGTERM, SIGKILL after 15 s."""
    log = open(log_path, "w") if log_path is not None else None
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return Path(log_path).read_text()[-3000:] if log_path is not None else ""

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{ready}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout}s: {tail()}")
            time.sleep(0.3)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: the server and its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log is not None:
            log.close()


START_ATTEMPTS = 3  # bentoml_server: starts that lost a port race before giving up


@contextlib.contextmanager
def bentoml_server(bentoml_home: Path, timeout: float = 60.0, extra_env: dict | None = None,
                   target: str = "serving.service:Shoprec", cwd: Path = REPO, ready: str = "/readyz"):
    """Yield the base URL of a running ``bentoml serve serving.service:Shoprec`` (or of ``target``,
    e.g. a bento tag from the store, started in ``cwd``) once ``ready`` answers 200 (``/livez``: up,
    maybe without a model)."""
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        args = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
        stack = contextlib.ExitStack()
        try:
            url, _ = stack.enter_context(local_server(
                args, port, Path(bentoml_home) / f"serve-{port}.log", ready=ready, timeout=timeout, cwd=cwd,
                env=server_env(bentoml_home, extra_env)))
        except RuntimeError as e:
            # our port and BentoML's own (circus' ZMQ endpoints) are found free, released, then bound: another
            # process can take one in between (an outgoing connection's ephemeral port). Start again on new ports.
            if "Address already in use" in str(e) and attempt + 1 < START_ATTEMPTS:
                continue
            raise
        with stack:
            yield url
        return

