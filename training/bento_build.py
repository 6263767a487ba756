"""The deployable bento of one shop: code and environment from bentofile.yaml, models from the store.

``bentofile.yaml`` says what code, requirements and settings a bento carries; which models it carries
is computed here from what ``shoprec publish`` put in the BentoML store (``BENTOML_HOME``): the shop's
last published recommender and, when there is one, its propensity bundle. Each is pinned under the
tag the service asks for (``shoprec-recommender:latest``, ``shoprec-propensity:latest``) as a BentoML
model alias, so a served bento answers from its own models even when the store has newer ones.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from training.propensity.publish import BENTO_MODEL as PROPENSITY
from training.publish import BENTO_MODEL as RECOMMENDER
from training.publish import _complete, _stored

# the tags serving/service.py loads (SHOPREC_MODEL, SHOPREC_PROPENSITY_MODEL defaults)
SERVED_AS = {RECOMMENDER: f"{RECOMMENDER}:latest", PROPENSITY: f"{PROPENSITY}:latest"}


def published_models(shop: str | None = None) -> tuple[str, list]:
    """(shop, stored models) for a shop's bento: its newest complete recommender, then its newest
    propensity bundle if any. ``shop`` defaults to that of the store's latest recommender (the last
    ``shoprec publish``). Raises ``RuntimeError`` naming the shops there are when nothing fits."""
    import bentoml

    recommenders = [m for m in _stored() if _complete(m.path)]
    if shop is None:
        try:
            shop = bentoml.models.get(f"{RECOMMENDER}:latest").info.labels.get("shop")
        except Exception:  # none yet, or a cut-short entry
            shop = None
        if shop is None and recommenders:
            shop = _newest(recommenders).info.labels.get("shop")
    mine = [m for m in recommenders if shop is not None and m.info.labels.get("shop") == shop]
    if not mine:
        shops = sorted({m.info.labels.get("shop", "?") for m in recommenders}) or ["none"]
        wanted = f"for shop {shop!r} " if shop else ""
        raise RuntimeError(f"no published recommender {wanted}in the BentoML store; shops published: "
                           f"{', '.join(shops)} (run `shoprec publish [--shop NAME]` first)")
    try:
        propensity = [m for m in bentoml.models.list(PROPENSITY) if m.info.labels.get("shop") == shop]
    except bentoml.exceptions.NotFound:
        propensity = []
    return shop, [_newest(mine)] + ([_newest(propensity)] if propensity else [])


def _newest(models: list):
    return max(models, key=lambda m: m.info.creation_time)


def build_bento(project_dir: Path, shop: str | None = None, bentofile: Path = Path("bentofile.yaml")):
    """Build the bento of ``shop`` from ``project_dir`` (the build context) into the BentoML store;
    returns (bento, its models). ``bentofile`` (relative to ``project_dir``) gives everything but the
    models and the ``shop`` label, which come from the store."""
    import bentoml
    import yaml

    shop, models = published_models(shop)
    project_dir = Path(project_dir).resolve()
    spec = yaml.safe_load((project_dir / bentofile).read_text(encoding="utf-8"))
    spec["labels"] = {**(spec.get("labels") or {}), "shop": shop}
    spec["models"] = [{"tag": str(m.tag), "alias": SERVED_AS[m.tag.name]} for m in models]
    with tempfile.TemporaryDirectory() as tmp:  # outside the build context: nothing of it lands in the bento
        generated = Path(tmp) / "bentofile.yaml"
        generated.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        bento = bentoml.bentos.build_bentofile(str(generated), build_ctx=str(project_dir))
    return bento, models
