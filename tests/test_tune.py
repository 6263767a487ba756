"""Tuning sees only the validation split: the test period cannot change its result."""
import numpy as np
import pandas as pd

from tests.conftest import make_orders
from training.config import TrainConfig
from training.tune import tune

rng = np.random.default_rng(0)
ORDERS = make_orders([(f"u{u}", f"i{(u * 3 + int(rng.integers(0, 6))) % 15}",
                       str(pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d))))
                      for u in range(60) for d in rng.integers(0, 90, size=6)])


def _run(orders):
    return tune(None, orders, TrainConfig(test_days=15), trials=2, seed=1)


def test_tuned_config_has_every_family_and_blends():
    config, best = _run(ORDERS)
    names = [c.name for c in config.candidates]
    assert {"popular", "als", "ease", "itemknn"} <= set(names)
    assert any(n.startswith("als-trending") for n in names) and any(n.startswith("ease-trending") for n in names)
    assert all(0.0 <= b["score"] <= 1.0 for b in best.values())


def test_test_period_does_not_leak_into_tuning():
    test_start = ORDERS["ts"].max() - pd.Timedelta(days=15)
    shuffled = ORDERS.copy()
    later = shuffled["ts"] > test_start
    shuffled.loc[later, "item_id"] = shuffled.loc[later, "item_id"].sample(frac=1, random_state=3).to_numpy()
    _, best_a = _run(ORDERS)
    _, best_b = _run(shuffled)
    assert best_a == best_b
