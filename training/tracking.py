"""MLflow tracking and the model registry, with the champion rule.

Embedded default: a SQLite store and an artifact folder inside the project (``mlruns/``);
``MLFLOW_TRACKING_URI`` points it at a tracking server instead. The champion alias moves
only when a challenger beats the champion on the same evaluation.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "shoprec-recommender"
EXPERIMENT = "shoprec"
ALIAS = "champion"


def tracking_uri(project_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file under ``project_dir/mlruns``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path(project_dir).resolve() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def setup(project_dir: Path) -> str:
    """Point MLflow at the store and make sure the experiment exists (artifacts inside the project)."""
    import mlflow

    uri = tracking_uri(project_dir)
    if uri.startswith("sqlite:///"):
        create_sqlite_store(Path(uri[len("sqlite:///"):]))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(project_dir).resolve() / "mlruns" / "artifacts").as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def create_sqlite_store(db: Path) -> None:
    """Create a new SQLite store whole or not at all. MLflow creates its tables and then migrates
    them step by step: a run killed in between leaves a store no later run can open. So the
    store is built under a temporary name and renamed into place (a no-op when it exists)."""
    if db.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", (db.parent / "artifacts").as_uri())
        store.engine.dispose()
        if not db.exists():  # another process may have won the race: keep theirs
            os.replace(tmp, db)
    finally:
        for leftover in db.parent.glob(f"{tmp.name}*"):
            leftover.unlink()


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Champion:
    version: str
    eval_key: str
    score: float
    candidate: dict


def current_champion(name: str = MODEL_NAME) -> Champion | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None
    tags = mv.tags or {}
    return Champion(
        version=str(mv.version),
        eval_key=tags.get("eval_key", ""),
        score=float(tags.get("test_ndcg", "nan")),
        candidate=json.loads(tags.get("candidate", "{}")),
    )


def register(run_id: str, artifact_path: str, tags: dict[str, str], name: str = MODEL_NAME) -> str:
    """Register the run's bundle folder as a new version of ``name``; returns the version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="shoprec recommender bundles (npz + JSON, no pickle)")
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    return str(mv.version)


def decide(challenger: float, eval_key: str, champion: Champion | None, champion_rescored: float | None) -> tuple[bool, str]:
    """The champion rule: (promote?, reason).

    Same evaluation (same data and protocol): the challenger must score strictly higher.
    New data: the champion's recipe is re-scored on this evaluation and the challenger must
    score at least as well (on a tie the model trained on fresher data wins).
    """
    if champion is None:
        return True, "no champion yet"
    if champion.eval_key == eval_key:
        if challenger > champion.score:
            return True, f"beats champion v{champion.version} on the same evaluation ({challenger:.4f} > {champion.score:.4f})"
        return False, f"does not beat champion v{champion.version} ({challenger:.4f} <= {champion.score:.4f})"
    if champion_rescored is None:
        return True, f"champion v{champion.version}'s recipe could not be re-scored on the new data"
    if challenger >= champion_rescored:
        return True, (f"new data: at least as good as champion v{champion.version}'s recipe re-scored "
                      f"({challenger:.4f} >= {champion_rescored:.4f})")
    return False, f"new data: worse than champion v{champion.version}'s recipe re-scored ({challenger:.4f} < {champion_rescored:.4f})"


def move_alias(version: str, reason: str, previous: Champion | None, run_id: str, name: str = MODEL_NAME) -> None:
    """Point ``champion`` at ``version`` and record the move on the run and the registered model."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(name, ALIAS, version)
    move = {"alias": ALIAS, "from": previous.version if previous else None, "to": version, "reason": reason, "run_id": run_id}
    client.set_tag(run_id, "champion_move", json.dumps(move))
    client.set_registered_model_tag(name, f"alias_move_v{version}", json.dumps(move))
