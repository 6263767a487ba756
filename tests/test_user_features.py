"""Point-in-time user features, labels and RFM segments on hand-computed examples."""
import numpy as np
import pandas as pd
import pytest

from features.labels import churn_labels, conversion_labels, customers_at
from features.user_features import (CATEGORY_FEATURES, EVENT_FEATURES, ORDER_FEATURES, SEGMENT_NAMES, SEGMENTS,
                                    quintile_score, rfm_segments, user_features)

AT = pd.Timestamp("2024-07-01")


def _orders(rows):
    df = pd.DataFrame(rows, columns=["order_id", "user_id", "item_id", "ts", "quantity", "price"])
    df["ts"] = pd.to_datetime(df["ts"])
    return df.astype({"order_id": "string", "user_id": "string", "item_id": "string"})


ORDERS = _orders([
    ("o1", "a", "x", "2024-01-01", 2, 5.0),   # first order: 2 lines, 3 units, 30
    ("o1", "a", "y", "2024-01-01", 1, 20.0),
    ("o2", "a", "x", "2024-03-01", 1, 5.0),   # 5
    ("o3", "a", "z", "2024-05-11", 4, 2.5),   # 10, 51 days before AT
    ("r1", "a", "z", "2024-05-20", -1, 2.5),  # a return line
    ("o4", "b", "y", "2024-06-21", 1, 20.0),  # b: one order 10 days before AT
    ("o9", "a", "x", "2024-08-01", 1, 5.0),   # after AT
    ("o8", "c", "x", "2024-07-15", 1, 5.0),   # c's first order is after AT
])
ITEMS = pd.DataFrame({"item_id": ["x", "y", "z"], "category": ["cat1", "cat2", "cat1"]})
EVENTS = pd.DataFrame([
    ("2024-05-11 09:00", "a", "s1", "view", "z"), ("2024-05-11 09:01", "a", "s1", "cart", "z"),
    ("2024-05-11 09:02", "a", "s1", "purchase", "z"),
    ("2024-06-10 10:00", "a", "s2", "view", "x"), ("2024-06-10 10:01", "a", "s2", "view", "y"),
    ("2024-06-10 10:02", "a", "s2", "cart", "y"),  # carted, not bought: abandoned
    ("2024-06-25 12:00", "a", "s3", "view", "x"),
    ("2024-06-26 12:00", None, "s4", "view", "x"),  # anonymous
    ("2024-07-05 12:00", "a", "s5", "cart", "x"),  # after AT
], columns=["ts", "user_id", "session_id", "event_type", "item_id"]).assign(ts=lambda d: pd.to_datetime(d["ts"]))

EXPECTED = {
    "a": {
        "recency_days": 51, "frequency": 3, "monetary": 45, "tenure_days": 182, "purchase_days": 3,
        "mean_gap_days": (182 - 51) / 2, "gap_ratio": 51 / 65.5,
        "orders_30d": 0, "orders_prev_30d": 1, "orders_90d": 1, "orders_prev_90d": 1,  # o1 is 182 days back
        "spend_30d": 0, "spend_90d": 10, "spend_prev_90d": 5, "orders_trend_30d": -1.0, "spend_trend_90d": 1.0,
        "order_rate_30d": 3 / 182 * 30, "basket_lines": 4 / 3, "basket_units": 8 / 3, "basket_value": 15,
        "distinct_items": 3, "repeat_item_share": 1 / 3, "return_lines": 1, "return_orders": 1, "return_share": 2.5 / 45,
        "distinct_categories": 2,
        "sessions": 3, "sessions_30d": 2, "sessions_prev_30d": 1, "views": 4, "views_30d": 3, "carts": 2, "carts_30d": 1,
        "days_since_visit": 5.5, "mean_visit_gap_days": 45.125 / 2, "visit_gap_ratio": 5.5 / 22.5625,
        "cart_abandonment": 0.5, "view_to_cart": 0.5, "cart_to_purchase": 0.5,
        "intensity_30d": 2 / (3 / 50.625 * 30),  # 30 days vs the average 30 days since the first visit
    },
    "b": {
        "recency_days": 10, "frequency": 1, "monetary": 20, "tenure_days": 10, "purchase_days": 1,
        "mean_gap_days": np.nan, "gap_ratio": np.nan, "orders_30d": 1, "orders_prev_30d": 0, "orders_90d": 1,
        "orders_prev_90d": 0, "spend_30d": 20, "spend_90d": 20, "spend_prev_90d": 0, "orders_trend_30d": np.nan,
        "spend_trend_90d": np.nan, "order_rate_30d": 1.0, "basket_lines": 1, "basket_units": 1, "basket_value": 20,
        "distinct_items": 1, "repeat_item_share": 0, "return_lines": 0, "return_orders": 0, "return_share": 0,
        "distinct_categories": 1,
        "sessions": 0, "sessions_30d": 0, "sessions_prev_30d": 0, "views": 0, "views_30d": 0, "carts": 0, "carts_30d": 0,
        "days_since_visit": np.nan, "mean_visit_gap_days": np.nan, "visit_gap_ratio": np.nan, "cart_abandonment": np.nan,
        "view_to_cart": np.nan, "cart_to_purchase": np.nan, "intensity_30d": np.nan,
    },
}


@pytest.fixture(scope="module")
def features():
    return user_features(ORDERS, AT, EVENTS, ITEMS)


def test_population_is_customers_with_a_purchase_up_to_the_date(features):
    assert list(features.index) == ["a", "b"]
    assert list(customers_at(ORDERS, AT)) == ["a", "b"]
    assert list(customers_at(ORDERS, "2024-07-15")) == ["a", "b", "c"]


def test_every_feature_is_covered_by_the_hand_computed_example(features):
    assert set(features.columns) == set(ORDER_FEATURES + CATEGORY_FEATURES + EVENT_FEATURES) == set(EXPECTED["a"])
    assert (features.dtypes == "float64").all()


@pytest.mark.parametrize("user", ["a", "b"])
@pytest.mark.parametrize("feature", ORDER_FEATURES + CATEGORY_FEATURES + EVENT_FEATURES)
def test_feature_value(features, user, feature):
    expected, got = EXPECTED[user][feature], features.loc[user, feature]
    if np.isnan(expected):
        assert np.isnan(got), f"{user}.{feature}: expected NaN, got {got}"
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), f"{user}.{feature}"


def test_without_events_or_categories_only_order_features():
    f = user_features(ORDERS, AT)
    assert list(f.columns) == ORDER_FEATURES
    no_cats = ITEMS.assign(category=None)
    assert list(user_features(ORDERS, AT, None, no_cats).columns) == ORDER_FEATURES


def test_a_future_event_cannot_change_a_past_feature_row(features):
    """Leakage: whatever happens after AT (orders, returns, events, new customers) leaves the row alone."""
    rng = np.random.default_rng(0)
    n = 200
    future_ts = AT + pd.to_timedelta(rng.uniform(1e-6, 200, n), unit="D")
    more_orders = _orders([(f"f{i}", rng.choice(["a", "b", "z"]), rng.choice(["x", "y", "z"]), future_ts[i],
                            float(rng.choice([-2, 1, 3])), float(rng.uniform(1, 50))) for i in range(n)])
    more_events = pd.DataFrame({"ts": future_ts, "user_id": rng.choice(["a", "b", "z"], n), "session_id": [f"fs{i}" for i in range(n)],
                                "event_type": rng.choice(["view", "cart", "purchase"], n), "item_id": "x"})
    later = user_features(pd.concat([ORDERS, more_orders]), AT, pd.concat([EVENTS, more_events]), ITEMS)
    pd.testing.assert_frame_equal(later, features)
    truncated = user_features(ORDERS[ORDERS.ts <= AT], AT, EVENTS[EVENTS.ts <= AT], ITEMS)
    pd.testing.assert_frame_equal(truncated, features)


def test_no_leakage_on_a_synthetic_shop(tmp_path):
    """Features at a date from the full shop equal those from the shop cut at that date."""
    from features.synthetic import ShopConfig, generate_shop

    paths = generate_shop(ShopConfig.preset("tiny"), tmp_path)
    orders, events, items = (pd.read_parquet(p) for p in (paths.orders, paths.events, paths.items))
    at = orders["ts"].min() + (orders["ts"].max() - orders["ts"].min()) * 0.6
    full = user_features(orders, at, events, items)
    cut = user_features(orders[orders.ts <= at], at, events[events.ts <= at], items)
    assert len(full) > 50
    pd.testing.assert_frame_equal(full, cut)


def test_labels():
    users = customers_at(ORDERS, AT)
    # a buys again on 2024-08-01 (31 days later), b never does
    assert churn_labels(ORDERS, users, AT, 90, end="2024-12-31").to_dict() == {"a": 0, "b": 1}
    assert conversion_labels(ORDERS, users, AT, 30, end="2024-12-31").to_dict() == {"a": 0, "b": 0}
    assert conversion_labels(ORDERS, users, AT, 31, end="2024-12-31").to_dict() == {"a": 1, "b": 0}
    with pytest.raises(ValueError, match="runs past the end of the data"):
        churn_labels(ORDERS, users, AT, 90)  # the data ends 2024-08-01: the window is incomplete


def test_returns_are_not_purchases():
    only_return = _orders([("o1", "a", "x", "2024-01-01", 1, 5.0), ("r1", "a", "x", "2024-02-01", -1, 5.0)])
    assert conversion_labels(only_return, pd.Index(["a"]), "2024-01-15", 30, end="2024-03-01").to_dict() == {"a": 0}


def test_quintile_scores():
    s = pd.Series([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert quintile_score(s).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quintile_score(s, higher_is_better=False).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert quintile_score(pd.Series([1.0] * 6 + [2.0] * 4)).tolist() == [2] * 6 + [5] * 4  # ties share a score


def test_every_rf_cell_has_exactly_one_segment():
    for r in range(1, 6):
        for f in range(1, 6):
            assert sum(r in rs and f in fs for _, rs, fs in SEGMENTS) == 1, (r, f)


def test_rfm_segments():
    n = 10
    feats = pd.DataFrame({"recency_days": np.arange(n, dtype=float), "frequency": np.arange(n, 0, -1, dtype=float),
                          "monetary": np.arange(n, dtype=float)}, index=[f"u{i}" for i in range(n)])
    seg = rfm_segments(feats)
    # u0: most recent and most frequent -> champions; u9: least recent, least frequent -> hibernating
    assert seg.loc["u0"].to_dict() == {"r_score": 5, "f_score": 5, "m_score": 1, "segment": "champions"}
    assert seg.loc["u9", "segment"] == "hibernating"
    assert set(seg["segment"]) <= set(SEGMENT_NAMES)
    rows = pd.DataFrame({"recency_days": [1.0, 300, 2, 250], "frequency": [1.0, 20, 2, 1], "monetary": [5.0, 900, 8, 3]},
                        index=["new", "lapsed_vip", "x", "gone"])
    assert rfm_segments(rows)["segment"].to_dict()["lapsed_vip"] in {"cant_lose", "at_risk"}


def test_money_is_summed_to_the_same_bits_in_any_order_of_the_rows():
    """Spend features sum millionths as integers (features/money.py), as the DuckDB and Spark engines do: these
    four order lines make exactly 619.6 in every row order, where pandas' sum of doubles makes 619.5999999999999
    (and a logistic regression on it then differs between engines in the last digit, on some machines)."""
    from features.money import micro_units

    assert micro_units([2.5e-7 * 2, -0.5e-6, 2.95, -2.95, 0.0, float("nan")]).tolist() == \
        [1, -1, 2_950_000, -2_950_000, 0, 0]  # half away from 0; NaN adds nothing
    lines = [(13, 8.29), (15, 14.05), (24, 12.29), (18, 0.34)]
    assert pd.DataFrame({"u": "a", "v": [q * p for q, p in lines]}).groupby("u")["v"].sum().iloc[0] != 619.6
    rows = [(f"o{i}", "a", "x", f"2024-06-{i + 10}", q, p) for i, (q, p) in enumerate(lines)] + \
           [(f"p{i}", "b", "x", f"2024-06-{i + 1:02d}", 3, 0.7 + i / 3) for i in range(10)]
    seen = set()
    for seed in range(5):
        f = user_features(_orders(rows).sample(frac=1.0, random_state=seed), AT)
        seen.add(tuple(f[["monetary", "spend_30d", "spend_90d", "basket_value"]].to_numpy().ravel().tolist()))
        assert f.loc["a", "monetary"] == f.loc["a", "spend_30d"] == 619.6
    assert len(seen) == 1
