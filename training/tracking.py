"""MLflow tracking and the model registry, with the champion rule.

Embedded default: a SQLite store and an artifact folder inside the project (``mlruns/``);
``MLFLOW_TRACKING_URI`` points it at a tracking server instead.

Every version belongs to a **lineage**: the shop (data source) it was trained on, a tag
``shop`` on the run and the version. Each lineage has its own champion alias
(``champion-<shop>``); a challenger is only ever compared with its own lineage's champion,
and the first model of a lineage becomes its champion.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "shoprec-recommender"
EXPERIMENT = "shoprec"
ALIAS = "champion"  # prefix: the alias of a lineage is champion-<shop>
SHOP_PATTERN = r"^[a-z0-9][a-z0-9-]{0,47}$"


def shop_name(text: str) -> str:
    """A lineage name from free text (a folder name): lower case, runs of other characters to '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-")
    return slug or "shop"


def check_shop(shop: str) -> str:
    if not re.match(SHOP_PATTERN, shop):
        raise ValueError(f"shop {shop!r}: use 1-48 lower-case letters, digits and '-', starting with a letter or digit")
    return shop


def alias_for(shop: str) -> str:
    return f"{ALIAS}-{check_shop(shop)}"


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
    shop: str = ""
    validation: float = float("nan")  # the score the gate chose it on (tag validation_ndcg / validation_score)


def current_champion(name: str = MODEL_NAME, shop: str | None = None) -> Champion | None:
    """The champion of ``shop``'s lineage (alias ``champion-<shop>``), or None.
    Without ``shop``: the lineage of the newest version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    shop = shop or latest_shop(name)
    if shop is None:
        return None
    try:
        mv = client.get_model_version_by_alias(name, alias_for(shop))
    except MlflowException:
        return None
    tags = mv.tags or {}
    return Champion(
        version=str(mv.version),
        eval_key=tags.get("eval_key", ""),
        score=float(tags.get("test_ndcg", tags.get("test_score", "nan"))),
        candidate=json.loads(tags.get("candidate", "{}")),
        shop=tags.get("shop", shop),
        validation=float(tags.get("validation_ndcg", tags.get("validation_score", "nan"))),
    )


def versions(name: str = MODEL_NAME) -> list:
    """Every registered version of ``name``, oldest first."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient().search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def latest_shop(name: str = MODEL_NAME) -> str | None:
    """The lineage of the newest registered version (None when there is none)."""
    found = [v for v in versions(name) if (v.tags or {}).get("shop")]
    return found[-1].tags["shop"] if found else None


def lineages(name: str = MODEL_NAME) -> dict[str, list]:
    """Versions grouped by lineage, each group oldest first."""
    out: dict[str, list] = {}
    for v in versions(name):
        out.setdefault((v.tags or {}).get("shop", "?"), []).append(v)
    return out


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


def move_alias(version: str, reason: str, previous: Champion | None, run_id: str, name: str = MODEL_NAME,
               shop: str = "") -> None:
    """Point ``champion-<shop>`` at ``version`` and record the move on the run and the registered model."""
    from mlflow import MlflowClient

    client = MlflowClient()
    alias = alias_for(shop)
    client.set_registered_model_alias(name, alias, version)
    move = {"alias": alias, "shop": shop, "from": previous.version if previous else None, "to": version, "reason": reason, "run_id": run_id}
    client.set_tag(run_id, "champion_move", json.dumps(move))
    client.set_registered_model_tag(name, f"alias_move_v{version}", json.dumps(move))
