"""Shared fixtures: seeded RNG, the checkerboard shop, and the shared real data."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS (see PITFALLS.md)

from pathlib import Path  # noqa: E402

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path of a shared real data set; fails (never skips) with a clear message when absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.fail(f"shared data not found at {path}: these tests need ../shared/data next to the repository")
    return path


@pytest.fixture(scope="session", autouse=True)
def _own_privacy_dir(tmp_path_factory):
    """Tests (and the servers they start) never read or write the project's forgotten list or key."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOPREC_PRIVACY_DIR", str(tmp_path_factory.mktemp("privacy")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _own_key_store(tmp_path_factory):
    """Tests (and the servers they start) never read or write the project's keys, sessions or access log."""
    keys = tmp_path_factory.mktemp("keys")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOPREC_KEYS_FILE", str(keys / "keys.json"))
        mp.setenv("SHOPREC_ACCESS_LOG", str(keys / "access.jsonl"))
        mp.setenv("SHOPREC_SESSIONS_FILE", str(keys / "sessions.json"))
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def checkerboard() -> sp.csr_matrix:
    """40 users x 20 items: even users like even items, odd users odd items; the diagonal
    cell (u, u % 20) is held out, so a good model recommends it first."""
    n_users, n_items = 40, 20
    rows, cols = [], []
    for u in range(n_users):
        for i in range(u % 2, n_items, 2):
            if i != u % n_items:
                rows.append(u)
                cols.append(i)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))


def make_orders(rows: list[tuple]) -> pd.DataFrame:
    """Canonical orders from (user, item, 'YYYY-MM-DD') tuples."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    df["ts"] = pd.to_datetime(df["ts"])
    df["order_id"] = [f"o{i}" for i in range(len(df))]
    df["quantity"] = 1.0
    df["price"] = 1.0
    return df[["order_id", "user_id", "item_id", "ts", "quantity", "price"]]


# mlflow.set_tracking_uri / set_registry_uri export these for subprocesses
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(scope="module", autouse=True)
def _no_mlflow_uri_from_another_module():
    """A module fixture that trains in-process (tracking.setup) exports MLflow's store for the rest of the
    process: remove it before each module's own fixtures run and after the module. Otherwise a later module's
    training subprocesses would log into the first module's store; which module came first depends on how the
    files are shared out between the test workers."""
    for name in MLFLOW_URI_VARIABLES:
        os.environ.pop(name, None)
    yield
    for name in MLFLOW_URI_VARIABLES:
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri(monkeypatch):
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: keep one test's store out of the next
    test's subprocesses. Each test starts without it and the variable is removed again afterwards."""
    for name in MLFLOW_URI_VARIABLES:
        monkeypatch.setenv(name, "unset")  # records "absent" so teardown removes it again
        monkeypatch.delenv(name)
    yield


# The longest test files, started first: `make test` hands whole files to two workers in this order
# (--no-loadscope-reorder), so these run beside each other and the short files fill in around them.
LONGEST_FIRST = ("test_pipeline.py", "test_cluster.py", "test_experiments_http.py", "test_bento_build.py",
                 "test_notebooks.py", "test_spark_parity.py", "test_crash_safety.py", "test_fuzz.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
