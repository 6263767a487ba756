"""Simulated shoppers who respond to the items each arm shows them (training/experiments/shown.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from features.experiments import Experiment, parse_variants
from features.synthetic.config import ShopConfig
from features.synthetic.generate import generate_shop
from features.synthetic.truth import load_truth
from training.config import Candidate, TrainConfig
from training.experiments.policies import policy_store, popularity
from training.experiments.shown import ShownModel, answers_of, draw, prepare, shown_traffic
from training.experiments.simulate import shoppers_from_shop
from training.pipeline import fit_bundle
from training.recommenders.als import ALSConfig
from training.storefront import Storefront


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shown") / "tiny"
    generate_shop(ShopConfig.preset("tiny"), out)
    orders, events, items = (pd.read_parquet(out / f"{t}.parquet") for t in ("orders", "events", "items"))
    bundle = fit_bundle(Candidate(name="als", model=ALSConfig(factors=8, iterations=8)), TrainConfig(), events, orders,
                        {"run_id": "shown-test"}, items=items)
    return {"dir": out, "orders": orders, "events": events, "items": items, "bundle": bundle,
            "truth": load_truth(out / "truth"), "shoppers": shoppers_from_shop(events, orders)}


def _arms(bundle):
    pop = popularity(bundle)
    return {"control": Storefront(bundle), "treatment": policy_store(bundle, "popular", pop),
            "worst": policy_store(bundle, "least-popular", -pop)}


def _experiment(salt: str, arms=("control=champion", "treatment=popular")) -> Experiment:
    return Experiment(name="shown", variants=parse_variants(list(arms)), salt=salt)


def test_each_exposure_shows_the_arms_answer_and_purchases_come_from_it(shop):
    arms = _arms(shop["bundle"])
    ids = shop["shoppers"].ids
    prices = dict(zip(shop["items"]["item_id"], shop["items"]["price"].astype(float)))
    exp = _experiment("s0")
    exposures, outcomes, truth = shown_traffic(exp, shop["truth"], ids, arms, prices, days=10, seed=3,
                                               pre_purchases=shop["shoppers"].pre_purchases)
    answers = {v: dict(zip(ids, answers_of(arms[v], ids, 10))) for v in ("control", "treatment")}
    assert exposures and {e.variant for e in exposures} == {"control", "treatment"}
    for e in exposures:
        assert e.items == answers[e.variant][e.user_id] and len(e.items) == 10
    shown_to = {}
    for e in exposures:
        shown_to.setdefault(e.user_id, set()).update(e.items)
    by_request = {e.request_id: set(e.items) for e in exposures}
    bought = [o for o in outcomes if o.event_type == "purchase" and o.item_id != "i-pre"]
    assert bought, "nobody bought anything: the test shows nothing"
    for o in bought:
        assert o.item_id in (by_request[o.request_id] if o.request_id else shown_to[o.user_id])
        assert o.value == pytest.approx(prices[o.item_id])
    assert sum(o.request_id is not None for o in bought) not in (0, len(bought))  # some by request id, some by user
    pre = [o for o in outcomes if o.item_id == "i-pre"]
    assert len(pre) == len(shop["shoppers"].pre_purchases) and all(o.ts < min(e.ts for e in exposures) for o in pre)
    assert truth.control == "control" and truth.treatment == "treatment" and truth.shoppers == len(ids)
    assert truth.lift == pytest.approx(truth.conversion["treatment"] / truth.conversion["control"] - 1, abs=1e-5)


def test_what_is_shown_decides_conversion_and_the_truth_is_what_the_traffic_gives(shop):
    """Over many runs (a new salt each, so every shopper meets every arm), the share of exposed shoppers who buy
    is each arm's true conversion; an arm that shows the least popular items sells far less."""
    arms = _arms(shop["bundle"])
    ids = shop["shoppers"].ids
    prices = dict(zip(shop["items"]["item_id"], shop["items"]["price"].astype(float)))
    observed = {"control": [], "worst": []}
    world = prepare(shop["truth"], ids, arms, prices, "control", "worst", days=14, model=ShownModel(boost_days=30))
    truth = world.truth
    for run in range(60):
        exposures, outcomes = draw(_experiment(f"salt-{run}", ("control=champion", "worst=popular")), world, seed=run)
        buyers = {o.user_id for o in outcomes if o.event_type == "purchase"}
        for v in observed:
            units = {e.user_id for e in exposures if e.variant == v}
            observed[v].append(len(units & buyers) / len(units))
    for v, values in observed.items():
        se = np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(np.mean(values) - truth.conversion[v]) < 4 * se + 0.003, (v, np.mean(values), truth.conversion[v], se)
    assert truth.conversion["worst"] < 0.5 * truth.conversion["control"] and truth.lift < -0.5


def test_cli_simulates_a_shop_against_the_champions_bundle_and_reports_it(shop, tmp_path):
    from tests.server import REPO

    bundle_dir = tmp_path / "bundle"
    shop["bundle"].save(bundle_dir)
    admin, marketing = "admin-key-shown-0123456789", "marketing-key-shown-0123456789"
    env = dict(os.environ, SHOPREC_EVENTS_URL=f"sqlite:///{tmp_path}/events.db", SHOPREC_KEYS_FILE=str(tmp_path / "keys.json"),
               SHOPREC_ADMIN_KEY=admin, SHOPREC_API_KEY=marketing)
    run = lambda *a: subprocess.run([sys.executable, "-m", "training.cli", "experiment", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=180)
    assert run("create", "home", "--variant", "control=champion", "--variant", "treatment=popular", "--planned-days", "7",
               "--key", admin).returncode == 0
    no_shop = run("simulate", "home", "--shop", str(tmp_path), "--bundle", str(bundle_dir), "--key", admin)
    assert no_shop.returncode == 2 and "not a generated shop folder" in no_shop.stderr
    from tests.test_storefront import make_bundle

    make_bundle().save(tmp_path / "other-shop")
    other = run("simulate", "home", "--shop", str(shop["dir"]), "--bundle", str(tmp_path / "other-shop"), "--key", admin)
    assert other.returncode == 2 and "is known to the arms' models" in other.stderr
    done = run("simulate", "home", "--shop", str(shop["dir"]), "--bundle", str(bundle_dir), "--days", "7",
               "--out", str(tmp_path / "truth.json"), "--key", admin)
    assert done.returncode == 0, done.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert f"true lift of treatment: {truth['lift']:+.2%}" in done.stdout
    report = json.loads(run("report", "home", "--json", "--no-mlflow", "--key", marketing).stdout)
    assert sum(v["units"] for v in report["variants"]) > 50 and not report["srm"]["flagged"]
    catalogue = set(shop["items"]["item_id"])
    from features.exposures import open_experiment_log

    log = open_experiment_log(env["SHOPREC_EVENTS_URL"])
    try:
        shown = log.exposures("home")
        assert len(shown) and all(set(json.loads(items)) <= catalogue for items in shown["items"])
    finally:
        log.close()
