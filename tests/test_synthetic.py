"""The synthetic shop (features/synthetic): reproducible, in the contract, realistic, with a sane truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.contract import EVENT_TYPES, EVENTS, ITEMS, ORDERS
from features.synthetic import ShopConfig, generate_shop, load_truth
from features.validate import validate

FILES = ["events.parquet", "orders.parquet", "items.parquet", "config.json", "truth/users.parquet", "truth/truth.npz"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    config = ShopConfig.preset("tiny")
    paths = generate_shop(config, tmp_path_factory.mktemp("tiny"))
    return {
        "config": config,
        "paths": paths,
        "events": pd.read_parquet(paths.events),
        "orders": pd.read_parquet(paths.orders),
        "items": pd.read_parquet(paths.items),
        "truth": load_truth(paths.truth_dir),
    }


def _end(shop) -> pd.Timestamp:
    return pd.Timestamp(shop["config"].end) + pd.Timedelta(days=1)  # exclusive


def test_same_seed_gives_identical_bytes_and_another_seed_differs(shop, tmp_path):
    again = generate_shop(shop["config"], tmp_path / "again")
    for name in FILES:
        assert (shop["paths"].out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name
    other = generate_shop(shop["config"].model_copy(update={"seed": shop["config"].seed + 1}), tmp_path / "other")
    for name in ["events.parquet", "orders.parquet", "items.parquet", "truth/users.parquet"]:
        assert (shop["paths"].out_dir / name).read_bytes() != (other.out_dir / name).read_bytes(), name


def test_tables_follow_the_contract(shop):
    ev, od, it = shop["events"], shop["orders"], shop["items"]
    assert list(ev.columns) == EVENTS.names and list(od.columns) == ORDERS.names and list(it.columns) == ITEMS.names
    for frame, spec in ((ev, EVENTS), (od, ORDERS), (it, ITEMS)):
        result = validate(frame, spec, spec.name)
        assert result.counts["rejected"] == 0, result.by_reason
    assert set(ev["event_type"].unique()) == set(EVENT_TYPES)
    start = _end(shop) - pd.Timedelta(days=shop["config"].days)
    for ts in (ev["ts"], od["ts"]):
        assert pd.api.types.is_datetime64_dtype(ts) and ts.min() >= start and ts.max() < _end(shop)
    assert (ev["price"] >= 0).all() and (od["price"] >= 0).all() and (it["price"] > 0).all()
    assert ev["session_id"].notna().all() and ev["item_id"].notna().all()
    assert 0 < ev["user_id"].isna().mean() < 0.2  # some anonymous sessions, never the buyers
    assert ev.loc[ev["event_type"] == "view", "quantity"].isna().all()
    assert (ev.loc[ev["event_type"] != "view", "quantity"] >= 1).all()
    assert od["user_id"].notna().all() and (od["quantity"] != 0).all() and (od["quantity"] < 0).any()
    assert set(ev["item_id"]) <= set(it["item_id"]) and set(od["item_id"]) <= set(it["item_id"])
    assert ev["user_id"].dropna().str.fullmatch(r"u\d{6}").all() and it["item_id"].str.fullmatch(r"i\d{5}").all()
    assert ev["session_id"].str.startswith("s").all() and od["order_id"].str.startswith("o").all()
    assert it["in_stock"].dtype == bool and it["in_stock"].any() and not it["in_stock"].all()


def test_funnel_order_and_orders_match_purchases(shop):
    ev, od = shop["events"], shop["orders"]
    counts = ev["event_type"].value_counts()
    assert counts["view"] > 3 * counts["cart"] > 3 * counts["purchase"] > 0

    def pairs(kind):
        return set(map(tuple, ev.loc[ev["event_type"] == kind, ["session_id", "item_id"]].to_numpy()))

    assert pairs("purchase") <= pairs("cart") <= pairs("view")  # each bought item was carted and viewed
    bought = ev[ev["event_type"] == "purchase"]
    lines = od[od["quantity"] > 0]
    key = ["user_id", "item_id", "ts", "quantity"]
    assert len(lines) == len(bought)
    assert lines[key].sort_values(key).reset_index(drop=True).equals(bought[key].sort_values(key).reset_index(drop=True))
    per_session = bought.merge(lines, on=key)[["session_id", "order_id"]].drop_duplicates()
    assert per_session["session_id"].is_unique and per_session["order_id"].is_unique  # one order per session


def test_long_tail_repeats_and_browsers(shop):
    od, ev = shop["orders"], shop["events"]
    lines = od[od["quantity"] > 0]
    per_item = lines["item_id"].value_counts()
    top = per_item.iloc[: len(shop["items"]) // 10].sum() / per_item.sum()
    assert top > 0.35  # the top 10% of items take a large share
    again = lines.groupby(["user_id", "item_id"]).size()
    assert (again >= 2).sum() > 10  # repeat purchases (consumables)
    sessions = ev.dropna(subset=["user_id"]).groupby("user_id")["session_id"].nunique()
    browsers = set(sessions[sessions >= 5].index) - set(lines["user_id"])
    assert len(browsers) >= 5  # regulars who never buy
    truth = shop["truth"]
    assert not truth.world.user_buyer[pd.Index(truth.user_ids).get_indexer(sorted(browsers))].all()


def test_some_shoppers_stop_coming(shop):
    last = shop["events"].dropna(subset=["user_id"]).groupby("user_id")["ts"].max()
    gone = (_end(shop) - last) > pd.Timedelta(days=60)
    assert 0.15 < gone.mean() < 0.8


def test_weekly_and_yearly_cycles(shop):
    starts = shop["events"].groupby("session_id")["ts"].min()
    weekend = starts.dt.day_of_week >= 5
    assert weekend.sum() / 2 > (~weekend).sum() / 5 * 1.05
    month = starts.dt.month.value_counts()
    assert month[12] > 1.2 * month[[6, 7, 8]].mean()


def test_truth_files_and_shapes(shop):
    cfg, truth = shop["config"], shop["truth"]
    with np.load(shop["paths"].truth_dir / "truth.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    assert all(a.dtype.kind in "biufU" for a in arrays.values())
    assert arrays["user_factors"].shape == (cfg.n_users, cfg.n_factors)
    assert arrays["item_factors"].shape == (cfg.n_items, cfg.n_factors)
    assert arrays["user_ids"].shape == (cfg.n_users,) and arrays["item_ids"].shape == (cfg.n_items,)
    assert arrays["user_price_sens"].shape == (cfg.n_users,)
    users = truth.users
    assert list(users.columns) == ["user_id", "date", "p_buy_30", "p_churn_90", "alive"]
    assert len(users) == cfg.n_users * len(cfg.truth_days_before_end)
    end = pd.Timestamp(cfg.end)
    assert sorted(users["date"].unique()) == sorted(end - pd.Timedelta(days=b) for b in cfg.truth_days_before_end)
    assert users[["p_buy_30", "p_churn_90"]].apply(lambda c: c.between(0, 1)).all().all()
    rows = pd.Index(truth.user_ids).get_indexer(users["user_id"])
    joined = truth.world.user_join[rows] <= (users["date"] - truth.start).dt.days
    dead = users[~users["alive"] & joined]
    assert len(dead) and (dead["p_buy_30"] == 0).all() and (dead["p_churn_90"] == 1).all()
    assert ShopConfig.model_validate_json((shop["paths"].out_dir / "config.json").read_text()) == cfg
    assert json.loads((shop["paths"].truth_dir / "summary.json").read_text())["events"] == len(shop["events"])


def test_truth_probabilities_are_calibrated(shop):
    users, lines = shop["truth"].users, shop["orders"]
    lines = lines[lines["quantity"] > 0]
    date = pd.Timestamp(shop["config"].end) - pd.Timedelta(days=30)
    rows = users[users["date"] == date]
    after = lines[lines["ts"] >= date + pd.Timedelta(days=1)]
    bought = rows["user_id"].isin(set(after["user_id"])).to_numpy()
    p = rows["p_buy_30"].to_numpy()
    assert abs(p.mean() - bought.mean()) < 0.05
    assert np.mean((p - bought) ** 2) < 0.6 * np.mean((bought.mean() - bought) ** 2)  # far better than the base rate


def test_oracle_ranks_actual_purchases_far_above_random(shop):
    truth, lines = shop["truth"], shop["orders"]
    cutoff = pd.Timestamp(shop["config"].end) - pd.Timedelta(days=30)
    test = lines[(lines["quantity"] > 0) & (lines["ts"] >= cutoff + pd.Timedelta(days=1))]
    bought = test.groupby("user_id")["item_id"].apply(set)
    items = truth.item_ids
    scores = truth.preference(bought.index.to_numpy(), items, at=cutoff)
    top = items[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
    hit = np.mean([bool(set(t) & b) for t, b in zip(top, bought)])
    rng = np.random.default_rng(0)
    random_hit = np.mean([bool(set(rng.choice(items, 10, replace=False)) & b) for b in bought])
    assert len(bought) >= 30
    assert hit > 0.5 and hit > 2.5 * random_hit


def test_preference_handles_unknown_ids_and_availability(shop):
    truth = shop["truth"]
    w = truth.world
    day = w.config.days - 1
    off_sale = np.flatnonzero(~w.on_sale(np.arange(w.n_items), np.full(w.n_items, day)))
    buyer = truth.user_ids[np.flatnonzero(w.user_buyer)[0]]
    items = np.array([truth.item_ids[off_sale[0]], "i99999x", truth.item_ids[0]])
    s = truth.preference([buyer, "nobody"], items, at=pd.Timestamp(w.config.end) + pd.Timedelta(hours=12))
    assert s.shape == (2, 3)
    assert np.isneginf(s[1]).all() and np.isneginf(s[0, :2]).all()
    on = np.flatnonzero(w.on_sale(np.arange(w.n_items), np.full(w.n_items, day)))
    s = truth.preference([buyer], truth.item_ids[on], at=str(w.config.end))
    assert np.isfinite(s).all()
    s30 = truth.preference([buyer], truth.item_ids[on], at=str(w.config.end), horizon_days=30)
    # a period read from configs/train.yaml is a float (test_days: 30.0): the same horizon
    np.testing.assert_array_equal(truth.preference([buyer], truth.item_ids[on], at=str(w.config.end), horizon_days=30.0), s30)
    assert np.isfinite(s30).all() and (s30 > s - 1e-9).all()


def _preference_day_by_day(truth, users, items, at, days):
    """The oracle's formula read day by day in log space (how ``preference`` was first written): log of the
    expected purchases of each item per day, added up with logaddexp."""
    from features.synthetic.model import log_sigmoid
    from features.synthetic.truth import _logsumexp

    w, k = truth.world, truth.world.config.session_dispersion
    u, i = truth._user_index.get_indexer(users), truth._item_index.get_indexer(items)
    th = w.theta(u).astype(np.float64)
    x = w.residual_matrix(u, i, utility=True).astype(np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        static = (w.accept_log(w.residual_matrix(u, i)).astype(np.float64) + np.log(w.view_rate)
                  + log_sigmoid(w.cart_logit(x)) + log_sigmoid(w.buy_logit(x, u)))
        acc = np.full((len(u), len(i)), -np.inf)
        for d in range(w.day_of(at), w.day_of(at) + days):
            la = w.item_log_attr(np.array([d]))[0].astype(np.float64)
            log_q = np.log(np.bincount(w.item_cat, np.exp(la), minlength=w.n_categories))
            p_item = -np.expm1(-k * np.log1p(np.exp(static + (la[i] - log_q[w.item_cat[i]])[None, :]) / k))
            day = (np.log(w.user_rate[u])[:, None] + th[:, w.item_cat[i]] + log_q[w.item_cat[i]][None, :]
                   - _logsumexp(th + log_q[None, :])[:, None] + np.log(p_item) + np.log(w.shop_rate(np.array([d]))[0]))
            acc = np.logaddexp(acc, np.where(np.isnan(day), -np.inf, day))
    return acc


def test_preference_is_each_days_expected_purchases_added_up(shop):
    """``preference`` sums in linear space, a block of users at a time: the same figures as the formula read
    day by day, for more users than a block (float32 products differ by batch shape: 1e-5)."""
    from features.synthetic.truth import USER_BLOCK

    truth = shop["truth"]
    users, items = truth.user_ids[: 2 * USER_BLOCK + 5], truth.item_ids
    at = pd.Timestamp(shop["config"].end) - pd.Timedelta(days=30)
    got = truth.preference(users, items, at=at, horizon_days=7)
    want = _preference_day_by_day(truth, users, items, at, 7)
    assert np.array_equal(np.isneginf(got), np.isneginf(want)) and np.isfinite(got).sum() > 1000
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=0, atol=1e-5)


def test_presets_and_config_errors():
    sizes = {name: (ShopConfig.preset(name).n_users, ShopConfig.preset(name).n_items)
             for name in ("tiny", "small", "medium", "large")}
    assert sizes == {"tiny": (300, 100), "small": (5_000, 1_000), "medium": (100_000, 10_000),
                     "large": (1_000_000, 100_000)}
    assert ShopConfig.preset("tiny", seed=3).seed == 3
    with pytest.raises(ValueError, match="preset"):
        ShopConfig.preset("huge")
    with pytest.raises(ValueError, match="n_users"):
        ShopConfig(n_users=0)
    with pytest.raises(ValueError, match="truth_days_before_end"):
        ShopConfig(truth_days_before_end=(400,))
    with pytest.raises(ValueError):
        ShopConfig(unknown_knob=1)
    assert all(f.description for f in ShopConfig.model_fields.values())
