"""A shop too small for the evaluation protocol still gets a model (the fallback recipe on all data,
no test figure, the metrics say why) that publishes and serves; a full run reports every long
stage as it goes when its output is not a terminal."""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, shared_data

LINE = re.compile(r"^\[shoprec +(\d+\.\d) s\] (\d+)/~(\d+) (.*)$")


def _env(**extra) -> dict:
    """The environment of a CLI run: the project's own MLflow store, whatever an earlier test left in
    MLFLOW_TRACKING_URI (module-scoped fixtures run before the per-test isolation of conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"PYTHONPATH": str(REPO)} | extra


def run_cli(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "training.cli", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, env=_env(BENTOML_HOME=str(cwd / "bentoml_home")), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def full_run(project):
    """A shop just big enough for the protocol: 8 shoppers, 10 items, 100 days (its own lineage, ``full``)."""
    rng = np.random.default_rng(7)
    ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 100, 80)), unit="D")
    pd.DataFrame({"order_id": [f"o{n}" for n in range(80)], "user_id": [f"u{u}" for u in rng.integers(0, 8, 80)],
                  "item_id": [f"i{i}" for i in rng.integers(0, 10, 80)], "ts": ts, "quantity": 1,
                  "price": 2.5}).to_csv(project / "orders.csv", index=False)
    return run_cli("train", "--orders", project / "orders.csv", "--shop", "full", "--metrics-out", project / "full.json",
                   "--work", project / "canonical-full", cwd=project)


def test_every_long_stage_reports_with_elapsed_and_steps(full_run, project):
    lines = [m.groups() for m in map(LINE.match, full_run.stderr.splitlines()) if m]
    messages = [msg for *_, msg in lines]
    for stage in ("ingest: reading orders.csv", "ingest: writing the canonical tables", "validating peer.popular",
                  "validating als-", "testing peer.popular", "replaying the test period", "on all data",
                  "propensity: evaluating churn and conversion"):
        assert any(msg.startswith(stage) or stage in msg for msg in messages), (stage, messages)
    elapsed = [float(s) for s, *_ in lines]
    steps = [int(n) for _, n, _, _ in lines]
    assert elapsed == sorted(elapsed) and steps == list(range(1, len(steps) + 1))
    assert all(int(total) >= 30 for _, _, total, _ in lines)  # an estimate of the whole run, never below the steps done
    rec = json.loads((project / "full.json").read_text())["recommend"]
    assert "small_shop" not in rec and rec["ndcg@10"] is not None and rec["chosen_on"] == "validation"


def test_a_long_step_says_it_still_runs(capsys):
    from training.cli import _progress_bar

    with _progress_bar(total=2, heartbeat_s=0.2) as step:
        step("fitting a slow model")
        time.sleep(0.7)
        step("done with it")
    lines = capsys.readouterr().err.splitlines()
    beats = [line for line in lines if line.endswith("] 1/~2 still fitting a slow model")]
    assert lines[0].endswith("] 1/~2 fitting a slow model") and lines[-1].endswith("] 2/~2 done with it")
    assert 2 <= len(beats) <= 4, lines  # about every 0.2 s of the 0.7 s step, none after it


def test_otto_sample_gets_a_fallback_that_publishes_and_serves(project):
    """The issue's case: OTTO's 20 sessions (10 purchases over 26 days) trained a traceback; now a model."""
    import httpx

    from tests.server import STOREFRONT, bentoml_server

    otto = shared_data("otto-sample/otto_train_sample.jsonl")
    out = run_cli("train", "--events", otto, "--metrics-out", project / "otto.json", "--work", project / "canonical-otto",
                  cwd=project)
    said = out.stderr[out.stderr.index("[shoprec] too little history"):]
    assert ("26.0 days of purchases (2022-07-31 to 2022-08-26: 10 by 3 shoppers); with --test-days 30, the test cutoff "
            "(2022-07-27 22:29) has 0 purchases before it") in said
    assert "trained the fallback trending-14d (popularity) on all data instead, with no test figure" in said
    assert "give more than 60 days of history, or a shorter --test-days" in said and "Traceback" not in out.stderr
    rec = json.loads((project / "otto.json").read_text())["recommend"]
    assert rec["shop"] == "otto-sample" and rec["model"] == "trending-14d"
    assert rec["ndcg@10"] is None and rec["validation_ndcg@10"] is None and rec["test_users"] == 0
    assert rec["small_shop"]["reason"].startswith("too little history") and rec["small_shop"]["minimum_days"] == 60
    assert [p["purchases_before"] for p in rec["small_shop"]["periods"]] == [0, 0]
    assert rec["champion"]["promoted"] and "champion-otto-sample moved to" in out.stdout

    published = run_cli("publish", "--shop", "otto-sample", cwd=project)
    assert "shop otto-sample" in published.stdout
    buyer = pd.read_parquet(project / "canonical-otto" / "orders.parquet")["user_id"].iloc[0]
    with bentoml_server(project / "bentoml_home") as url:
        known = httpx.post(f"{url}/recommend", json={"user_id": buyer, "k": 3}, headers=STOREFRONT, timeout=10)
        stranger = httpx.post(f"{url}/recommend", json={"user_id": "nobody", "k": 3}, headers=STOREFRONT, timeout=10)
    assert known.status_code == stranger.status_code == 200, known.text + stranger.text
    assert known.json()["model_version"].startswith("otto-sample/v") and len(known.json()["items"]) == 3
    assert stranger.json()["source"].startswith("fallback:") and len(stranger.json()["items"]) == 3


def test_a_fallback_never_replaces_a_champion_chosen_on_validation(full_run, project):
    otto = shared_data("otto-sample/otto_train_sample.jsonl")
    out = run_cli("train", "--events", otto, "--shop", "full", "--work", project / "canonical-otto2", cwd=project)
    assert "champion-full unchanged (champion v1 was chosen on validation; a fallback fitted without evidence " \
           "does not replace it)" in out.stdout
    listing = run_cli("champion", cwd=project).stdout
    full = listing[listing.index("full: champion v1"):]
    assert re.search(r"\* v1  val ndcg@10=0\.\d+  test ndcg@10=0\.\d+", full)
    assert re.search(r"  v\d+  fallback, too little history: no validation or test figure  trending-14d", full)
