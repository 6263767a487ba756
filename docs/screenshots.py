"""Regenerate the README screenshots (docs/img/*.png) with headless Debian Chromium.

    .venv/bin/python docs/screenshots.py [--preset tiny|small]

Everything happens in a temporary folder: a synthetic shop, one training run (recommender +
propensity) into a fresh MLflow store, publish into a fresh BentoML store, the real service on
127.0.0.1 for the marketers' page and dashboard, and ``mlflow ui`` on 127.0.0.1 for the run page.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "img"
KEY = "screenshot-key"


@contextlib.contextmanager
def mlflow_ui(store: Path, port: int):
    """``mlflow ui`` on 127.0.0.1 against the SQLite store of ``store``; stopped by its process group."""
    from tests.server import local_server

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store / 'mlruns' / 'mlflow.db'}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with local_server(cmd, port, store / "mlflow-ui.log", ready="/health", timeout=90, cwd=store, env=None,
                      what="mlflow ui") as (url, _):
        yield url


def train_and_publish(work: Path, preset: str) -> str:
    """Shop -> one training run -> both champions published; returns the recommender run id."""
    from features.ingest import ingest, load_canonical
    from features.synthetic import ShopConfig, generate_shop
    from training.config import TrainConfig
    from training.propensity.publish import publish_propensity
    from training.publish import publish_champion
    from training.train import train

    paths = generate_shop(ShopConfig.preset(preset), work / "shop")
    ingest(paths.orders, paths.events, paths.items, work / "canonical")
    config = TrainConfig()  # the shipped search, as `shoprec train` runs it
    outcome = train(load_canonical(work / "canonical"), config, work, shop="screenshots", progress=print)
    publish_champion(work, shop="screenshots")
    publish_propensity(work, shop="screenshots")
    return outcome.run_id


def show_run_plot(page, ui: str, experiment: str, run_id: str) -> None:
    """The run's artifacts tab with the NDCG-by-activity plot open, in the UI's "Model training"
    mode with the assistant side panel closed (both remembered by the browser)."""
    page.goto(f"{ui}/")
    with contextlib.suppress(Exception):  # UI details that differ between MLflow versions: best effort
        page.get_by_text("Model training", exact=True).click(timeout=60_000)
        page.get_by_label("Close", exact=True).last.click(timeout=5000)
    page.goto(f"{ui}/#/experiments/{experiment}/runs/{run_id}/artifacts/plots/ndcg_by_activity.png")
    page.wait_for_selector("img[src^='blob:']", timeout=120_000)  # the plot, fetched by the UI
    page.wait_for_timeout(1500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="synthetic shop size (tiny is faster, small looks real)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from tests.server import bentoml_server, free_port
    from tests.test_marketing_page import CHROMIUM, CHROMIUM_ARGS

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["BENTOML_HOME"] = str(work / "bentoml_home")
        run_id = train_and_publish(work, args.preset)
        env = {"SHOPREC_EVENTS_URL": f"sqlite:///{work}/events.db", "SHOPREC_API_KEY": KEY}
        with sync_playwright() as p, bentoml_server(work / "bentoml_home", extra_env=env) as url:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/marketing/")
            page.fill("input[name=account]", "SHOPREC_API_KEY")  # a key from the environment is named after its variable
            page.fill("input[name=key]", KEY)
            page.click("button[type=submit]")
            page.select_option("#segment", "at_risk")
            page.fill("#min_probability", "0.3")
            page.click("#apply")
            page.wait_for_selector("#customers")
            page.screenshot(path=str(OUT / "marketing_page.png"))
            page.goto(f"{url}/marketing/dashboard?clv_by=stage")  # the same session: CLV, funnel, flows, cohorts
            page.wait_for_selector("#cohort-heatmap")
            page.screenshot(path=str(OUT / "marketing_dashboard.png"), full_page=True)
            with mlflow_ui(work, free_port()) as ui:
                import mlflow

                mlflow.set_tracking_uri(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
                experiment = mlflow.get_run(run_id).info.experiment_id
                show_run_plot(page, ui, experiment, run_id)
                page.screenshot(path=str(OUT / "mlflow_run.png"))
            browser.close()
    print(f"wrote {OUT / 'marketing_page.png'}, {OUT / 'marketing_dashboard.png'} and {OUT / 'mlflow_run.png'}")


if __name__ == "__main__":
    main()
