"""Publish the champion propensity bundle into the BentoML model store, where the service
(and ``shoprec churn-list``) read it. MLflow stays out of the request path."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from training import tracking
from training.propensity.bundle import PropensityBundle
from training.propensity.train import MODEL_NAME
from training.publish import download_artifacts

BENTO_MODEL = "shoprec-propensity"


def publish_propensity(project_dir: Path, name: str = MODEL_NAME, shop: str | None = None):
    """Copy the champion bundle into the BentoML store (labels: registry version, shop); returns the
    stored model. Publishing the version that is already the store's latest returns it."""
    import bentoml
    from mlflow import MlflowClient

    tracking.setup(project_dir)
    champion = tracking.current_champion(name, shop)
    if champion is None:
        raise RuntimeError(f"no champion for shop {shop or '(latest)'!r} on registered model {name!r}: "
                           "run `shoprec train` with orders first")
    try:
        latest = bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        latest = None
    # already the store's latest (what the service loads): nothing to do. Otherwise a fresh copy, also of a
    # version stored earlier (another shop published since, or a rollback), so that it becomes the latest again
    if (latest is not None and latest.info.labels.get("registry_version") == champion.version
            and latest.info.labels.get("registered_model") == name):
        return latest
    mv = MlflowClient().get_model_version(name, champion.version)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(mv.source, tmp)
        meta = json.loads((local / "meta.json").read_text())
        meta["model_version"] = champion.version
        (local / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        PropensityBundle.load(local, with_models=True)  # refuse a broken bundle before it reaches the store
        return store_propensity_bundle(local, {"registered_model": name, "registry_version": champion.version,
                                               "alias": tracking.alias_for(champion.shop), "shop": champion.shop},
                                              {"run_id": mv.run_id, "source": mv.source})


def store_propensity_bundle(bundle_dir: Path, labels: dict[str, str], metadata: dict | None = None):
    """Copy a bundle folder into the BentoML store (``BENTOML_HOME``) as a new model version."""
    import bentoml

    with bentoml.models.create(BENTO_MODEL, labels=labels, metadata=metadata or {}) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return bentoml.models.get(model.tag)
