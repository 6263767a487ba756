"""Keeps the BentoML store on the registry's champion: ``shoprec publish`` whenever the alias moves.

Every ``--every`` seconds it asks the MLflow server (``MLFLOW_TRACKING_URI``) which version the shop's alias
``champion-<shop>`` points at; when the store's ``shoprec-recommender:latest`` holds another one, it publishes
the champion (a promotion or a rollback alike). The replicas poll that store (``SHOPREC_RELOAD_POLL_S``) and
swap the new model in without dropping a request (serving/reload.py), so a new champion serves on every
replica within a few polls of the alias moving. It runs next to the replicas, never inside them: MLflow stays
out of the request path.

    python -m deploy.publisher --shop NAME [--every 3]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger("shoprec.publisher")


def published_version(shop: str) -> str | None:
    """The registry version behind the store's latest recommender, if it is ``shop``'s."""
    import bentoml

    from training.publish import BENTO_MODEL

    try:
        labels = bentoml.models.get(f"{BENTO_MODEL}:latest").info.labels
    except Exception:  # nothing published yet, or an entry being written
        return None
    return labels.get("registry_version") if labels.get("shop") == shop else None


def publish_if_moved(shop: str, project_dir: Path) -> str | None:
    """Publish ``shop``'s champion when the store is not on it; returns the version published, else None."""
    from training import tracking
    from training.publish import publish_champion

    champion = tracking.current_champion(shop=shop)
    if champion is None or champion.version == published_version(shop):
        return None
    model = publish_champion(project_dir, shop=shop)
    return model.info.labels.get("registry_version")


def run(shop: str, every_s: float, project_dir: Path) -> None:
    from training import tracking

    tracking.setup(project_dir)
    last_error = None
    while True:
        try:
            version = publish_if_moved(shop, project_dir)
            if version is not None:
                log.info("published champion-%s v%s into the store: replicas swap it in at their next poll", shop, version)
            last_error = None
        except Exception as e:  # the server restarting, a version being written: try again at the next tick
            if str(e) != last_error:
                log.warning("could not publish champion-%s: %s: %s", shop, type(e).__name__, e)
            last_error = str(e)
        time.sleep(every_s)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m deploy.publisher", description=__doc__.split("\n\n")[0])
    p.add_argument("--shop", required=True, help="the lineage to follow")
    p.add_argument("--every", type=float, default=3.0, help="seconds between looks at the alias")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(a.shop, a.every, Path.cwd())


if __name__ == "__main__":
    main()
