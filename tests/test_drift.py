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
