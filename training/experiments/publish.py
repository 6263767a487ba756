"""A model arm of an experiment in the BentoML store, beside the champion but never instead of it.

The service serves ``shoprec-recommender:latest``; a challenger copied there would become the
champion at the next reload. Arms are therefore stored as ``shoprec-variant`` models, labelled
with their registry version and shop, and the service looks them up by those labels
(serving/experiments.py ``resolve_arm``).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from training.publish import NotInStore, stored_location

VARIANT_MODEL = "shoprec-variant"


def stored_variants(version: str | None = None, shop: str | None = None) -> list:
    """Complete ``shoprec-variant`` models (newest first), of that registry version and shop when given."""
    import bentoml

    try:
        models = bentoml.models.list(VARIANT_MODEL)
    except bentoml.exceptions.NotFound:
        return []
    found = [m for m in models if (version is None or m.info.labels.get("registry_version") == str(version))
             and (not shop or m.info.labels.get("shop", shop) == shop)]
    return sorted(found, key=lambda m: m.info.creation_time, reverse=True)


def arm_location(arm: str, shop: str = "") -> tuple[Path, str, str]:
    """(folder, tag, registry version) of a model arm: ``vN`` is the ``shoprec-variant`` of that registry
    version (and shop) that ``shoprec experiment create`` published; anything else a BentoML tag. Raises
    ``NotInStore``. The service (serving/experiments.py) and ``shoprec experiment simulate`` find arms here."""
    if m := re.match(r"^v(\d+)$", arm):
        found = stored_variants(m.group(1), shop)
        if not found:
            raise NotInStore(f"no {VARIANT_MODEL} model of registry version {m.group(1)}{f' (shop {shop})' if shop else ''} "
                             "in the BentoML store: `shoprec experiment create` publishes it")
        return Path(found[0].path), str(found[0].tag), m.group(1)
    return stored_location(arm)


class ArmRefused(ValueError):
    """A model arm that is in the store but cannot serve beside this champion (unreadable, another shop's)."""


def load_arm(arm: str, shop: str = ""):
    """(bundle, tag, registry version) of a model arm found by ``arm_location`` and checked to be of the champion's
    ``shop``. Raises ``NotInStore`` or ``ArmRefused``. The service (serving/experiments.py) and ``shoprec experiment
    simulate`` load arms here."""
    from training.bundle import ModelBundle

    path, tag, version = arm_location(arm, shop)
    try:
        bundle = ModelBundle.load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable arm is refused, the champion keeps serving
        raise ArmRefused(f"cannot load {tag}: {type(e).__name__}: {e}") from e
    arm_shop = str(bundle.meta.get("shop", ""))
    if shop and arm_shop != shop:
        raise ArmRefused(f"{tag} was trained on shop {arm_shop!r}, the champion on {shop!r}")
    return bundle, tag, version


def store_variant(bundle_dir: Path, labels: dict[str, str]):
    import shutil

    import bentoml

    with bentoml.models.create(VARIANT_MODEL, labels=labels) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return bentoml.models.get(model.tag)


def resolve_version(project_dir: Path, arm: str) -> str:
    """``vN`` -> ``N``; ``@alias`` -> the registry version the alias points at now (MLflow)."""
    if m := re.match(r"^v(\d+)$", arm):
        return m.group(1)
    from mlflow import MlflowClient

    from training import tracking

    tracking.setup(project_dir)
    try:
        return str(MlflowClient().get_model_version_by_alias(tracking.MODEL_NAME, arm[1:]).version)
    except Exception as e:  # noqa: BLE001 - MLflow's errors differ by store
        raise ValueError(f"registry alias {arm[1:]!r} of {tracking.MODEL_NAME}: {type(e).__name__}: {e}") from None


def publish_version(project_dir: Path, version: str) -> str:
    """Copy registry version ``version`` into the BentoML store as a ``shoprec-variant`` (unless a complete
    copy is there already); returns its tag."""
    if existing := stored_variants(version):
        return str(existing[0].tag)
    from mlflow import MlflowClient

    from training import tracking
    from training.bundle import ModelBundle
    from training.publish import download_artifacts

    tracking.setup(project_dir)
    try:
        mv = MlflowClient().get_model_version(tracking.MODEL_NAME, version)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"registry version {version} of {tracking.MODEL_NAME}: {type(e).__name__}: {e}") from None
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(mv.source, tmp)
        bundle = ModelBundle.load(local)  # refuse a broken bundle before it reaches the store
        model = store_variant(local, {"registered_model": tracking.MODEL_NAME, "registry_version": str(version),
                                      "shop": str(bundle.meta.get("shop", ""))})
    return str(model.tag)
