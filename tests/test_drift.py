"""Drift of live traffic against the training data (serving/drift.py): a synthetic shop whose prices change or whose
new category takes over turns the gauges on within one window; an unchanged one does not, measured over 20
windows; the figures are PSI and scipy's Jensen-Shannon distance, exported as Prometheus gauges."""
import logging

import numpy as np
import pytest
from prometheus_client import REGISTRY

from serving.drift import FeatureDrift, js, psi

CATEGORIES = ["toys", "books", "garden", "kitchen"]


def shop(rng, n, price_factor=1.0, new_category_share=0.0):
    """n order lines: lognormal prices, four categories; optionally prices scaled and a new category taking over."""
    prices = rng.lognormal(3.0, 0.6, n) * price_factor
    categories = rng.choice(CATEGORIES, n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    categories[rng.random(n) < new_category_share] = "pet-food"
    return prices, categories


def gauge(name, feature):
    return REGISTRY.get_sample_value(name, {"feature": feature})


def monitors(rng, tag):
    prices, categories = shop(rng, 20_000)
    return (FeatureDrift(f"price-{tag}", prices, window=1000), FeatureDrift(f"category-{tag}", categories, categorical=True,
                                                                          window=1000))


def test_psi_and_js_agree_on_same_and_disjoint():
    p = np.array([0.5, 0.5, 0.0])
    assert psi(p, p) == pytest.approx(0) and js(p, p) == pytest.approx(0)
    assert js(p, np.array([0.0, 0.0, 1.0])) == pytest.approx(1)
    assert psi(p, np.array([0.0, 0.0, 1.0])) > 5


def test_changed_prices_and_a_new_category_turn_their_gauges_on_within_one_window(rng, caplog):
    price, category = monitors(rng, "shift")
    prices, categories = shop(rng, 1000, price_factor=1.5, new_category_share=0.5)
    for p, c in zip(prices, categories):
        price.observe(p)
        category.observe(c)
    with caplog.at_level(logging.WARNING, logger="shoprec.drift"):
        assert price.evaluate()["alert"] and category.evaluate()["alert"]
    assert gauge("shoprec_drift_alert", "price-shift") == 1 and gauge("shoprec_drift_alert", "category-shift") == 1
    assert gauge("shoprec_drift_psi", "price-shift") > 0.2
    assert sum("drift in" in r.getMessage() for r in caplog.records) == 2  # one line each when the alert starts


def test_an_unchanged_shop_raises_no_alarm_over_20_windows(rng):
    price, category = monitors(rng, "same")
    alarms, worst = 0, 0.0
    for _ in range(20):
        prices, categories = shop(rng, 1000)
        for p, c in zip(prices, categories):
            price.observe(p)
            category.observe(c)
        figures = [price.evaluate(), category.evaluate()]
        alarms += sum(f["alert"] for f in figures)
        worst = max(worst, *(f["psi"] for f in figures))
    print(f"unchanged shop: {alarms} alarms in 20 windows of 1,000 (2 features), worst PSI {worst:.3f}")
    assert alarms == 0 and gauge("shoprec_drift_alert", "price-same") == 0


def test_an_empty_reference_is_refused():
    with pytest.raises(ValueError, match="reference is empty"):
        FeatureDrift("nothing", [])


# -- wired in: references recorded at training, fed by the service, read back by `shoprec monitor` ------------
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pandas as pd  # noqa: E402

from serving.monitoring import LiveMonitor  # noqa: E402
from serving.reload import Served  # noqa: E402
from training.bundle import ModelBundle  # noqa: E402
from training.monitor import build_report, write_report  # noqa: E402
from training.reference import Reference  # noqa: E402
from training.storefront import Storefront  # noqa: E402

QUANTITIES = {"event_category", "event_price", "recommend_source", "recommend_score"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny synthetic shop, ingested and fitted as `shoprec train` fits its bundle (ALS recipe)."""
    from features.ingest import ingest, load_canonical
    from features.synthetic import ShopConfig, generate_shop
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig

    d = tmp_path_factory.mktemp("tiny")
    generate_shop(ShopConfig.preset("tiny"), d / "shop")
    ingest(d / "shop/orders.parquet", d / "shop/events.parquet", d / "shop/items.parquet", d / "canonical")
    canonical = load_canonical(d / "canonical")
    bundle = fit_bundle(Candidate(name="als", model=ALSConfig(factors=8, iterations=5)), TrainConfig(), canonical.events,
                        canonical.orders, {"run_id": "run-tiny"}, items=canonical.items)
    events = canonical.events
    recent = events[events["ts"] >= events["ts"].max() - pd.Timedelta(days=30)]
    days = recent.dropna(subset=["user_id"]).assign(day=lambda f: f["ts"].dt.floor("D"))
    shopper_days = days.drop_duplicates(["user_id", "day"])["user_id"].astype(str).to_numpy()
    return SimpleNamespace(bundle=bundle, recent=recent, shopper_days=shopper_days, served=Served(Storefront(bundle), "tiny/v1", "t:1", 0.0, "tiny"))


def test_reference_round_trip_and_refusals():
    ref = Reference.of([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], bins=3)
    assert Reference.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert ref.bin(1.0) == 0 and ref.bin(100.0) == ref.n_bins - 1 and ref.bin(float("nan")) is None
    cat = Reference.of(["a", "b", "b"], categorical=True)
    assert cat.bin("b") == 1 and cat.bin("new") == 2 and cat.labels() == ["a", "b", "other"]
    with pytest.raises(ValueError, match=r"reference.proportions: 2 values for 3 bins"):
        Reference.from_json(cat.to_json() | {"proportions": [0.5, 0.5]})
    with pytest.raises(ValueError, match=r"price.kind"):
        Reference.from_json({"kind": "text"}, "price")


def test_training_records_references_in_both_bundles(tiny, tmp_path):
    from training.propensity.bundle import SCORE_COLUMNS, PropensityBundle

    assert set(tiny.bundle.reference) == QUANTITIES
    tiny.bundle.save(tmp_path / "bundle")
    assert ModelBundle.load(tmp_path / "bundle").reference == tiny.bundle.reference
    assert json.loads((tmp_path / "bundle" / "reference.json").read_text())["event_category"]["kind"] == "categorical"
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({c: 0.0 for c in SCORE_COLUMNS}, index=range(50)).assign(
        user_id=[f"u{i}" for i in range(50)], churn_probability=rng.random(50), segment="x", reasons=[["r"]] * 50)
    PropensityBundle(scores[SCORE_COLUMNS]).save(tmp_path / "propensity")
    loaded = PropensityBundle.load(tmp_path / "propensity")
    assert Reference.from_json(loaded.reference["churn_probability"]).n == 50


def traffic(tiny, monitor, rng, n_events=1000, n_requests=250, price_factor=1.0, new_category_share=0.0,
            unknown_shoppers=0.0):
    """One window of live traffic: events resampled from the last 30 days of the training data (optionally
    with prices scaled and a share on a new category's items, which the catalogue does not have), and
    /recommend answers for shoppers as often as they were active then (one request per shopper and active day,
    as the reference counts them; optionally a share of never-seen shoppers)."""
    lines = tiny.recent.iloc[rng.integers(0, len(tiny.recent), n_events)]
    new = rng.random(n_events) < new_category_share
    events = [SimpleNamespace(item_id=f"pet-food-{rng.integers(50)}" if is_new else item,
                              price=None if pd.isna(price) else float(price) * price_factor)
              for item, price, is_new in zip(lines["item_id"], lines["price"], new)]
    monitor.events(tiny.served, events)
    shoppers = tiny.shopper_days
    for _ in range(n_requests):
        uid = f"new-{rng.integers(1e9)}" if rng.random() < unknown_shoppers else str(rng.choice(shoppers))
        monitor.recommend(tiny.served, tiny.served.store.recommend(uid, k=10))


def test_a_shifted_shop_alarms_in_gauges_log_and_report_an_unchanged_one_does_not(tiny, tmp_path, rng, caplog):
    same = LiveMonitor(tmp_path / "same", "r1", window=1000, min_observations=500)
    alarms, worst = 0, 0.0
    for _ in range(20):  # 20 unchanged windows
        traffic(tiny, same, rng)
        figures = same.tick()
        assert set(figures) == QUANTITIES
        alarms += sum(f["alert"] for f in figures.values())
        worst = max(worst, *(f["psi"] for f in figures.values() if f["psi"] is not None))
    print(f"unchanged tiny shop through the service's monitor: {alarms} alarms in 20 windows x 4 quantities, "
          f"worst PSI {worst:.3f}")
    assert alarms == 0
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    until = today + dt.timedelta(days=1)
    report = build_report(tmp_path / "same", today, until)
    assert report["alerts"] == [] and set(report["references"][0]["features"]) == QUANTITIES
    assert report["references"][0]["run_id"] == "run-tiny"

    shifted = LiveMonitor(tmp_path / "shifted", "r1", window=1000, min_observations=500)
    traffic(tiny, shifted, rng, n_requests=600, price_factor=1.5, new_category_share=0.5, unknown_shoppers=0.6)
    with caplog.at_level(logging.WARNING, logger="shoprec.drift"):
        figures = shifted.tick()
    drifting = {name for name, f in figures.items() if f["alert"]}
    assert drifting == {"event_category", "event_price", "recommend_source"}
    assert all(gauge("shoprec_drift_alert", name) == 1 for name in drifting)
    assert {r.getMessage().split(":")[0] for r in caplog.records} == {f"drift in {n}" for n in drifting}
    report = build_report(tmp_path / "shifted", today, until)
    assert {a.split()[2].rstrip(":") for a in report["alerts"]} == drifting
    category = report["references"][0]["features"]["event_category"]
    assert category["bins"][-1]["bin"] == "other" and category["bins"][-1]["live"] > 0.4
    assert category["unseen"] == {"(unknown item)": category["bins"][-1]["live_count"]}
    j, h = write_report(report, tmp_path / "out")
    assert json.loads(j.read_text())["alerts"] == report["alerts"] and "drifting" in h.read_text()


def test_monitor_command_refuses_a_bad_date_and_a_missing_folder(tmp_path):
    from tests.server import REPO

    def run(*args):
        return subprocess.run([sys.executable, "-m", "training.cli", "monitor", *args], cwd=REPO, capture_output=True,
                              text=True, env=dict(os.environ, SHOPREC_MONITOR_DIR=str(tmp_path / "none")))

    bad = run("--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday' is not a date" in bad.stderr
    missing = run("--since", "2026-01-01")
    assert missing.returncode == 2 and "no monitoring folder" in missing.stderr


def test_the_served_gauges_follow_real_traffic_and_shoprec_monitor_reports_it(tmp_path):
    """The real server: traffic over HTTP moves /metrics' drift gauges; `shoprec monitor` reads the log."""
    import httpx

    from tests.server import MARKETING, REPO, STOREFRONT, bentoml_server
    from tests.test_service import publish_test_bundle

    home = tmp_path / "home"
    home.mkdir()
    publish_test_bundle(home, tmp_path / "bundle")
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_DRIFT_EVERY_S": "0.5",
           "SHOPREC_DRIFT_MIN_OBSERVATIONS": "30", "SHOPREC_DRIFT_WINDOW": "200"}
    with bentoml_server(home, extra_env=env) as url, httpx.Client(base_url=url, timeout=10) as client:
        for i in range(80):  # half known shoppers, half never seen
            r = client.post("/recommend", json={"user_id": f"u{i % 30}" if i % 2 else f"stranger-{i}", "k": 3},
                            headers=STOREFRONT)
            assert r.status_code == 200
        for i in range(40):  # prices three times the training data's, and items the catalogue never had
            item = f"i{i % 12}" if i % 2 else f"pet-food-{i}"
            client.post("/events", json={"user_id": f"shopper-{i}", "events": [
                {"item_id": item, "event_type": "view", "price": 3.0}]}, headers=STOREFRONT)
        deadline = time.monotonic() + 10
        while True:
            metrics = client.get("/metrics").text
            everything_seen = ('shoprec_drift_window{feature="event_category"} 40.0' in metrics
                               and 'shoprec_drift_window{feature="recommend_source"} 80.0' in metrics)
            if everything_seen or time.monotonic() > deadline:  # evaluated (and logged) after the last request
                break
            time.sleep(0.3)
    assert 'shoprec_drift_alert{feature="event_price"} 1.0' in metrics
    assert 'shoprec_drift_alert{feature="event_category"} 1.0' in metrics
    for name in ("recommend_source", "recommend_score"):
        assert f'shoprec_drift_psi{{feature="{name}"}}' in metrics and f'shoprec_drift_js{{feature="{name}"}}' in metrics
    out = tmp_path / "report"
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    done = subprocess.run([sys.executable, "-m", "training.cli", "monitor", "--since", day, "--dir", str(home / "monitor"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, SHOPREC_DRIFT_MIN_OBSERVATIONS="30"))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / f"drift-{day}.json").read_text())
    features = report["references"][0]["features"]
    assert report["references"][0]["version"] == "7" and features["event_price"]["alert"]
    assert features["recommend_source"]["n"] == 80 and features["event_category"]["n"] == 40
    assert (out / f"drift-{day}.html").read_text().count("drifting") >= 2
    assert MARKETING  # the propensity endpoint needs a propensity bundle: covered in-process above
