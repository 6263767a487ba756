"""`shoprec doctor`: one OK/WARN/FAIL line per check, each failure saying what to do."""
import json
import os
import subprocess
import sys

import pytest

from tests.server import REPO
from tests.test_service import publish_test_bundle
from training import doctor


def run_doctor(cwd, home, *args):
    env = dict(os.environ, BENTOML_HOME=str(home), PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "training.cli", "doctor", "--no-test-tools", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def lines(out: str) -> dict[str, str]:
    """check name -> status, from the report."""
    found = {}
    for line in out.splitlines():
        if line[:4].strip() in ("OK", "WARN", "FAIL"):
            found[line[6:].split(":", 1)[0]] = line[:4].strip()
    return found


def test_on_an_empty_project_it_fails_and_says_what_to_do(tmp_path):
    result = run_doctor(tmp_path, tmp_path / "bentoml_home")
    assert result.returncode == 1, result.stdout + result.stderr
    status = lines(result.stdout)
    assert status["python"] == "OK" and status["packages"] == "OK"
    assert status["mlflow store"] == "FAIL" and status["published recommender"] == "FAIL"
    assert "-> train once: `shoprec train --orders FILE`" in result.stdout
    assert "-> `shoprec publish`" in result.stdout
    assert "checks passed" in result.stdout and "failed" in result.stdout
    assert not (tmp_path / "mlruns").exists()  # the doctor looks, it does not create stores


def test_with_a_champion_and_a_published_bundle(tmp_path):
    """Champion v1 registered, but the store holds v99: required checks pass, the stale bundle is a WARN."""
    import mlflow

    from training import tracking

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking.setup(tmp_path)
    with mlflow.start_run() as run:
        mlflow.log_dict({}, "bundle/meta.json")
        version = tracking.register(run.info.run_id, "bundle", {"eval_key": "k", "test_ndcg": "0.25", "validation_ndcg": "0.2", "shop": "north",
                                                                  "candidate": json.dumps({"name": "als"})})
        tracking.move_alias(version, "first", None, run.info.run_id, shop="north")
    home = tmp_path / "bentoml_home"
    publish_test_bundle(home, tmp_path / "bundle", version="99")
    result = run_doctor(tmp_path, home)
    assert result.returncode == 0, result.stdout + result.stderr  # WARNs do not fail
    status = lines(result.stdout)
    assert status["mlflow store"] == "OK" and status["champion shoprec-recommender"] == "OK"
    assert "version 1 (validation score 0.2000, test score 0.2500), shop north" in result.stdout
    assert status["published recommender"] == "WARN"
    assert "recommends 5 items) but is registry version 99, the champion is 1" in result.stdout
    assert "-> `shoprec publish`, then POST /admin/reload" in result.stdout
    assert status["champion shoprec-propensity"] == "WARN" and status["published propensity"] == "WARN"


def test_test_tools_check_names_the_apt_package(monkeypatch):
    monkeypatch.setattr(doctor, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    checks = {c.name: c for c in doctor.check_test_tools()}
    assert checks["chromium"].status == "FAIL" and "apt-get install -y chromium" in checks["chromium"].fix
    assert checks["redis-server"].status == "FAIL" and "apt-get install -y redis-server" in checks["redis-server"].fix


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://mlflow:s3cret@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
])
def test_store_uris_are_shown_without_passwords(uri, shown):
    assert doctor._redact(uri) == shown


def test_a_published_bundle_is_compared_with_its_own_shops_champion(tmp_path):
    """Shop north's v1 is published and is north's champion; shop south trained since (its champion v2): no WARN
    (it used to compare with the latest training's shop and warn that 'the champion is 2')."""
    import mlflow

    from training import tracking

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking.setup(tmp_path)
    for shop in ("north", "south"):
        with mlflow.start_run() as run:
            mlflow.log_dict({}, "bundle/meta.json")
            version = tracking.register(run.info.run_id, "bundle", {"eval_key": "k", "test_ndcg": "0.25", "shop": shop,
                                                                      "candidate": json.dumps({"name": "als"})})
            tracking.move_alias(version, "first", None, run.info.run_id, shop=shop)
    home = tmp_path / "bentoml_home"
    publish_test_bundle(home, tmp_path / "bundle", version="1", shop="north")
    status = lines(run_doctor(tmp_path, home).stdout)
    assert status["published recommender"] == "OK"
    publish_test_bundle(home, tmp_path / "bundle2", version="3", shop="north")
    result = run_doctor(tmp_path, home)
    assert lines(result.stdout)["published recommender"] == "WARN" and "the champion of shop north is 1" in result.stdout


def test_a_recommender_and_a_churn_bundle_of_two_shops_are_named_and_warned_about(tmp_path):
    """The latest recommender was shop4m's and the latest churn bundle shopwide's: both were reported OK, naming
    neither shop (and a service for shop4m answers churn only from shop4m's bundle now)."""
    from tests.test_propensity_service import _store

    home = tmp_path / "bentoml_home"
    publish_test_bundle(home, tmp_path / "bundle", version="1", shop="north")
    _store(home, tmp_path / "propensity")  # shop acme's
    result = run_doctor(tmp_path, home)
    status = lines(result.stdout)
    assert status["published shops"] == "WARN" and "shop north's" in result.stdout and "shop acme's" in result.stdout
    assert "registry version 1, shop north" in result.stdout and "registry version 3, shop acme" in result.stdout
