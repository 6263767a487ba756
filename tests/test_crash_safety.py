"""Crash safety: a stage killed mid-run and rerun gives byte-identical outputs and the same
scores as an uninterrupted run; a write that fails half-way never leaves a half-written file
under a final name; a publish cut short is ignored, never served."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

KILL_AT = (0.3, 0.6)  # fractions of an uninterrupted run's duration
VOLATILE = {"fit_seconds", "seconds", "model_version", "champion", "run_id"}  # timings and registry bookkeeping, not scores


def shoprec(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "training.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            env=_env(env), timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _env(extra=None) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", MLFLOW_ENABLE_TELEMETRY="false",
                DO_NOT_TRACK="true", BENTOML_DO_NOT_TRACK="true", **(extra or {}))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The tiny synthetic shop (no truth/ beside it: no oracle) and a two-candidate config."""
    from features.synthetic import ShopConfig, generate_shop
    from training.config import TrainConfig

    root = tmp_path_factory.mktemp("shop")
    paths = generate_shop(ShopConfig.preset("tiny"), root / "generated")
    raw = root / "raw"
    raw.mkdir()
    for name in ("orders", "events", "items"):
        shutil.copy(getattr(paths, name), raw / f"{name}.parquet")
    from training.config import Candidate
    from training.recommenders.als import ALSConfig

    full = TrainConfig.load(REPO / "configs" / "train.yaml")  # the search off: a two-recipe config (+ the peers)
    als = Candidate.model_validate({"name": "als", "interactions": {"binary": True}, "model": ALSConfig().model_dump()})
    config = full.model_copy(update={"search": None, "candidates": [als]})
    config.dump(root / "train.yaml")
    return raw, root / "train.yaml"


@pytest.fixture(scope="module")
def clean(shop, tmp_path_factory):
    """An uninterrupted `shoprec train` (its project folder, and how long it took)."""
    raw, config = shop
    project = tmp_path_factory.mktemp("clean")
    started = time.monotonic()
    shoprec(*train_args(raw, config, project), cwd=project)
    return project, time.monotonic() - started


def train_args(raw: Path, config: Path, project: Path) -> list:
    """Events and items (purchases are events): the recommender path, without the propensity models'
    extra minute of LightGBM per run on two cores (their determinism is tested below, in-process)."""
    return ["train", "--events", raw / "events.parquet", "--items", raw / "items.parquet",
            "--config", config, "--metrics-out", project / "runs" / "metrics.json"]


def scores(metrics: dict):
    """The metrics without timings and registry bookkeeping."""
    if isinstance(metrics, dict):
        return {k: scores(v) for k, v in metrics.items() if k not in VOLATILE}
    return metrics


def outputs(project: Path) -> dict[str, bytes]:
    canonical = project / "data" / "canonical"
    return {p.name: p.read_bytes() for p in sorted(canonical.iterdir()) if not p.name.startswith(".")}


def assert_no_half_written_file(project: Path) -> None:
    """Whatever a kill left: every file under a final name is whole (readers raise on a torn file)."""
    canonical = project / "data" / "canonical"
    for p in canonical.glob("*.parquet") if canonical.exists() else ():
        pd.read_parquet(p)
    for p in list(canonical.glob("*.json")) + list((project / "runs").glob("*.json")):
        json.loads(p.read_text())
    for p in canonical.glob("*.csv"):
        pd.read_csv(p)


def test_train_killed_mid_run_then_rerun_matches_an_uninterrupted_run(shop, clean, tmp_path):
    raw, config = shop
    clean, duration = clean
    crashed = tmp_path / "crashed"
    crashed.mkdir()

    killed = 0
    for fraction in KILL_AT:
        proc = subprocess.Popen([sys.executable, "-m", "training.cli", *map(str, train_args(raw, config, crashed))],
                                cwd=crashed, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(fraction * duration)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: no cleanup, no finally blocks
            killed += 1
        proc.wait()
        assert_no_half_written_file(crashed)
    assert killed >= 1, "no kill landed mid-run"
    shoprec(*train_args(raw, config, crashed), cwd=crashed)

    assert outputs(crashed) == outputs(clean)  # canonical tables, rejects, report: byte for byte
    a = json.loads((clean / "runs" / "metrics.json").read_text())
    b = json.loads((crashed / "runs" / "metrics.json").read_text())
    if b["recommend"]["champion"]["previous"] is not None:
        # a kill landed after a run had registered and promoted the same model (the machine ran the killed
        # runs faster than the clean one): the rerun re-scores that champion's recipe and keeps it
        assert b["recommend"]["champion"]["reason"].endswith("nothing new to serve"), b["recommend"]["champion"]
        for m in (a, b):
            m["recommend"] = {k: v for k, v in m["recommend"].items() if k not in ("gate", "search")}
            m["recommend"]["candidates"] = {k: v for k, v in m["recommend"]["candidates"].items()
                                            if not k.startswith("champion.")}
    assert scores(b) == scores(a)
    assert a["recommend"]["candidates"]["als"]["validation"]["ndcg@10"] > 0 and a["recommend"]["ndcg@10"] > 0


def test_a_write_that_fails_half_way_leaves_the_previous_file(tmp_path, monkeypatch):
    """Faults injected into the writers of ingest and of the metrics file."""
    from features.ingest import ingest
    from training.train import atomic_write_json

    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,user_id,item_id,ts,quantity,price\no1,u1,i1,2024-01-01,1,2.5\no2,u2,i2,2024-01-02,1,3\n")
    out = tmp_path / "out"
    ingest(orders, None, None, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real_to_parquet = pd.DataFrame.to_parquet

    def torn(self, path, *args, **kwargs):  # writes half a file, then the process "dies"
        real_to_parquet(self, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:50])
        raise OSError("disk full")

    orders.write_text(orders.read_text() + "o3,u3,i3,2024-01-03,1,4\n")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn)
    with pytest.raises(OSError, match="disk full"):
        ingest(orders, None, None, out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old tables whole, no temp files left

    metrics = tmp_path / "runs" / "metrics.json"
    atomic_write_json(metrics, {"ndcg@10": 0.5})

    def torn_dump(obj, f, **kwargs):
        f.write('{"ndcg@10": 0.')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", torn_dump)
    with pytest.raises(OSError):
        atomic_write_json(metrics, {"ndcg@10": 0.9})
    monkeypatch.undo()
    assert json.loads(metrics.read_text()) == {"ndcg@10": 0.5}
    assert [p.name for p in metrics.parent.iterdir()] == ["metrics.json"]


def test_lightgbm_ranker_is_deterministic(shop):
    """Same data, same seed: the same scores and the same saved model bytes (deterministic LightGBM)."""
    from features.ingest import ingest, load_canonical
    from features.interactions import training_view
    from training.recommenders import fit_model

    raw, _ = shop
    out = raw.parent / "canonical-for-ranker"
    ingest(raw / "orders.parquet", raw / "events.parquet", None, out)
    canonical = load_canonical(out)
    view = training_view(canonical.events, canonical.orders)
    from features.interactions import InteractionConfig
    from training.config import _trending
    from training.recommenders.blend import BlendPart
    from training.recommenders.popular import PopularConfig
    from training.recommenders.ranker import RankerConfig

    small = RankerConfig(retrievers=[BlendPart(interactions=_trending(3), model=PopularConfig(count="weight")),
                                     BlendPart(interactions=InteractionConfig(binary=True), model=PopularConfig())],
                         n_estimators=10, candidates=10, max_train_users=200)
    first, second = (fit_model(small, InteractionConfig(), view) for _ in range(2))
    users = np.arange(min(50, len(view.users)))
    np.testing.assert_array_equal(first.scores(users), second.scores(users))
    first.save(out / "a")
    second.save(out / "b")
    for f in sorted((out / "a").iterdir()):
        if f.is_file():
            assert f.read_bytes() == (out / "b" / f.name).read_bytes(), f.name


PUBLISH_CUT_SHORT = """
import shutil, sys
from pathlib import Path
import bentoml
from training.publish import publish_champion
from serving.reload import ModelSlot

first = publish_champion(Path.cwd())
good = Path(first.path)
for name, damage in (("nomodelyaml", "model.yaml"), ("nousers", "users.npz"), ("torn", "items.npz")):
    broken = good.parent / name  # what a kill during BentoML's copy into the store leaves
    shutil.copytree(good, broken)
    if name == "torn":
        (broken / damage).write_bytes((broken / damage).read_bytes()[:40])
    else:
        (broken / damage).unlink()
    if (broken / "model.yaml").exists():
        (broken / "model.yaml").write_text((broken / "model.yaml").read_text().replace(good.name, name))
again = publish_champion(Path.cwd())
slot = ModelSlot()
print(first.tag, again.tag, bentoml.models.get("shoprec-recommender:latest").tag)
print(slot.reload().status, slot.current.tag)
print(*(slot.reload(f"shoprec-recommender:{t}").status for t in ("nomodelyaml", "nousers", "torn")), slot.current.tag)
"""


def test_publish_cut_short_is_ignored_and_never_served(clean, tmp_path):
    """A copy into the BentoML store that a crash cut short (no model.yaml; a missing or torn bundle
    file) neither breaks the next publish nor becomes what the service loads."""
    project, _ = clean
    env = {"BENTOML_HOME": str(tmp_path / "bentoml_home")}
    out = subprocess.run([sys.executable, "-c", PUBLISH_CUT_SHORT], cwd=project, env=_env(env), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tags, first_load, refusals = out.stdout.splitlines()[:3]
    tag = tags.split()[0]
    assert tags == f"{tag} {tag} {tag}"  # already published: the broken copies neither count nor break the listing
    assert first_load == f"loaded {tag}"
    assert refusals == f"refused refused refused {tag}"  # and the one serving stays
