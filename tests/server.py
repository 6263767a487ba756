"""Start the real BentoML server on 127.0.0.1 for tests, and stop it by its PID."""
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
def bentoml_server(bentoml_home: Path, timeout: float = 60.0, extra_env: dict | None = None,
                   target: str = "serving.service:Shoprec", cwd: Path = REPO):
    """Yield the base URL of a running ``bentoml serve serving.service:Shoprec`` (or of ``target``,
    e.g. a bento tag from the store, started in ``cwd``)."""
    port = free_port()
    env = server_env(bentoml_home, extra_env)
    log = open(Path(bentoml_home) / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: the server and its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
