"""Publish the registered champion into the BentoML model store, where the service loads it.

MLflow stays out of the request path: the service only reads the BentoML store.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from training import tracking

BENTO_MODEL = "shoprec-recommender"


def publish_champion(project_dir: Path, name: str = tracking.MODEL_NAME, shop: str | None = None):
    """Copy a lineage's champion bundle into the BentoML store (labels: shop, registry version);
    returns the model. ``shop`` defaults to the lineage of the latest training."""
    from mlflow import MlflowClient

    from training.bundle import ModelBundle

    tracking.setup(project_dir)
    shop = shop or tracking.latest_shop(name)
    if shop is None:
        raise RuntimeError(f"registered model {name!r} has no version with a shop: run `shoprec train` first")
    champion = tracking.current_champion(name, shop)
    if champion is None:
        known = ", ".join(sorted(s for s in tracking.lineages(name) if s != "?")) or "none"
        raise RuntimeError(f"no champion for shop {shop!r} (alias '{tracking.alias_for(shop)}' on {name!r}); "
                           f"shops with models: {known}")
    mv = MlflowClient().get_model_version(name, champion.version)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(mv.source, tmp)
        ModelBundle.load(local)  # refuse a broken bundle before it reaches the store
        existing = [m for m in _stored() if m.info.labels.get("registry_version") == champion.version
                    and m.info.labels.get("registered_model") == name and _complete(m.path)]
        latest = _latest()
        # already published and the store's latest (what the service loads): nothing to do. Otherwise a
        # fresh copy: the first publish, one interrupted mid-copy (incomplete copies do not count), or a
        # rollback (the alias moved back to a version stored earlier, which must become the latest again)
        if latest is not None and any(m.tag == latest.tag for m in existing):
            return latest
        return store_bundle(local, labels={"registered_model": name, "registry_version": champion.version,
                                           "alias": tracking.alias_for(shop), "shop": shop},
                            metadata={"run_id": mv.run_id, "source": mv.source})


def download_artifacts(artifact_uri: str, dst: str) -> Path:
    """A registered bundle copied from MLflow into ``dst``, without MLflow's per-file progress bars
    (``shoprec publish`` prints one line per model instead); ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``
    set in the environment wins."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    with _env_default(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false"):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))


@contextlib.contextmanager
def _env_default(name: str, value: str):
    """``name=value`` in the environment for the block, unless it is already set."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _complete(path) -> bool:
    from training.bundle import ModelBundle

    try:
        ModelBundle.load(path)
        return True
    except Exception:
        return False


def _stored() -> list:
    """Our models in the store; an entry a crash cut short (no model.yaml) is skipped, not fatal."""
    import bentoml

    try:
        return bentoml.models.list(BENTO_MODEL)
    except bentoml.exceptions.NotFound:
        return []
    except bentoml.exceptions.BentoMLException:
        latest = _latest()
        if latest is None:
            return []
        found = []
        for entry in sorted(Path(latest.path).parent.iterdir()):
            if entry.is_dir():
                try:
                    found.append(bentoml.models.get(f"{BENTO_MODEL}:{entry.name}"))
                except Exception:
                    pass
        return found


class NotInStore(LookupError):
    """A model that is not in the BentoML store, or cannot be read from it."""


def stored_location(tag: str) -> tuple[Path, str, str]:
    """(folder, full tag, registry version) of a model in our own BentoML store; no other source."""
    import bentoml

    try:
        ref = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as e:
        raise NotInStore(f"no model {tag!r} in the BentoML store") from e
    except Exception as e:  # a half-written store entry (no model.yaml), a bad tag
        raise NotInStore(f"cannot read {tag!r} from the BentoML store: {type(e).__name__}: {e}") from e
    return Path(ref.path), str(ref.tag), str(ref.info.labels.get("registry_version", ref.tag.version))


def served_bundle_dir() -> Path | None:
    """The bundle the service loads: the store's latest recommender (None before the first publish)."""
    latest = _latest()
    return Path(latest.path) if latest is not None else None


def _latest():
    import bentoml

    try:
        return bentoml.models.get(f"{BENTO_MODEL}:latest")
    except Exception:  # none yet, or an unreadable entry
        return None


def store_bundle(bundle_dir: Path, labels: dict[str, str], metadata: dict | None = None):
    """Copy a bundle folder into the BentoML store (``BENTOML_HOME``) as a new model version."""
    import bentoml

    with bentoml.models.create(BENTO_MODEL, labels=labels, metadata=metadata or {}) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return bentoml.models.get(model.tag)
