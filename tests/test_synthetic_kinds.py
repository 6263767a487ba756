"""Shop kinds (features/synthetic/config.py KINDS): each test size shows the property that makes
its kind unlike the generic shop, measured by features/synthetic/describe.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.synthetic import KINDS, PRESETS, ShopConfig, generate_shop, load_truth
from features.synthetic.describe import global_list_ndcg, profile, read_shop
from features.synthetic.model import CHRISTMAS_PEAK_DOY, circular_days
from tests.conftest import shared_data

FILES = ["events.parquet", "orders.parquet", "items.parquet", "truth/users.parquet", "truth/truth.npz"]


@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    """The generic "small" shop and every kind at its test size: files, truth and profile."""
    out = {}
    for name in ["small", *(f"{kind}-test" for kind in KINDS)]:
        paths = generate_shop(ShopConfig.preset(name), tmp_path_factory.mktemp(name))
        orders, items = read_shop(paths.out_dir)
        out[name] = {"paths": paths, "orders": orders, "items": items, "profile": profile(orders, items),
                     "truth": load_truth(paths.truth_dir)}
    return out


def _sales(shop) -> pd.DataFrame:
    """Sale lines with the item's row and the day index in the shop's world."""
    world, truth = shop["truth"].world, shop["truth"]
    lines = shop["orders"][shop["orders"]["quantity"] > 0]
    day = ((lines["ts"].dt.floor("D") - pd.Timestamp(str(world.start))) / pd.Timedelta(days=1)).astype(int)
    item = pd.Index(truth.item_ids).get_indexer(lines["item_id"])
    return pd.DataFrame({"day": day.to_numpy(), "item": item, "user": lines["user_id"].to_numpy()})


def test_presets_name_kinds_at_two_sizes():
    assert set(KINDS) == {"grocery", "wide", "gift"}
    for kind in KINDS:
        test, full = ShopConfig.preset(f"{kind}-test"), ShopConfig.preset(kind)
        assert test.n_users < full.n_users and test.n_items <= full.n_items
    assert {"tiny", "small", "medium", "large"} <= set(PRESETS)
    wide = ShopConfig.preset("wide")
    assert wide.n_items >= 60_000  # above EASE's item cap
    assert ShopConfig.preset("wide-test").n_items >= 3_000
    assert ShopConfig.preset("gift").end.month == 12 and ShopConfig.preset("gift").end.day == 9
    with pytest.raises(ValueError, match="quantity_packs"):
        ShopConfig(quantity_packs=(0, 6))


@pytest.mark.parametrize("name", ["grocery-test", "gift-test"])
def test_a_kind_is_reproducible(shops, name, tmp_path):
    """Promotions (grocery) and packs / a wider season (gift) come from the seed too."""
    again = generate_shop(ShopConfig.preset(name), tmp_path / "again")
    for f in FILES:
        assert (shops[name]["paths"].out_dir / f).read_bytes() == (again.out_dir / f).read_bytes(), f


def test_grocery_repeats_weekly_and_a_month_of_sales_beats_three_days(shops):
    g, generic = shops["grocery-test"]["profile"], shops["small"]["profile"]
    assert g["repeat_30d_share"] > 0.5 and g["repeat_30d_share"] > 2 * generic["repeat_30d_share"]
    assert 7 <= g["median_repeat_days"] <= 14  # replenished every week or two
    assert g["median_days_between_buying_days"] <= 7 < generic["median_days_between_buying_days"]
    assert g["catalogue"] <= 500 and g["items_sold"] >= 0.95 * g["catalogue"]  # narrow: everything sells
    assert g["test_lines_on_new_items"] < 0.1  # a stable range: few launches
    # what sells next: a month of distinct buyers predicts it better than three days (item level)
    w = g["window_spearman"]
    assert w["30d"] > w["7d"] > w["3d"] and w["30d"] - w["3d"] > 0.03


def test_grocery_offers_lift_an_item_for_its_week(shops):
    shop = shops["grocery-test"]
    world, sales = shop["truth"].world, _sales(shops["grocery-test"])
    promo = world.promoted(np.arange(world.config.days), np.arange(world.n_items))
    assert abs(promo.mean() - world.config.promo_share) < 0.01
    assert (promo[1:] != promo[:-1]).any(axis=1).sum() <= world.config.days // 7 + 1  # changes weekly at most
    on_sale = world.on_sale(np.arange(world.n_items)[None, :], np.arange(world.config.days)[:, None])
    share_of_item_days = promo[on_sale].mean()
    first = sales[~sales.duplicated(["user", "item"])]  # discoveries (repeats follow the cycle, not offers)
    assert promo[first["day"], first["item"]].mean() > 3 * share_of_item_days


def test_wide_has_a_long_tail_above_a_small_cap_and_many_launches(shops):
    w, gift = shops["wide-test"]["profile"], shops["gift-test"]["profile"]
    assert w["catalogue"] >= 3_000 and w["items_sold"] > 1_500  # wider than a 1,000-item model cap
    assert w["top1pct_share"] > 0.2 and w["top1pct_share"] > 2 * gift["top1pct_share"]
    assert w["top10pct_share"] > 0.6
    assert w["test_lines_on_new_items"] > 0.3 and w["early_items_gone_last_90d"] > 0.6
    ndcg = w["global_list_ndcg@10"]
    assert ndcg["trending_7d"] > 1.5 * ndcg["popular"]


def test_gift_sells_bulk_packs_with_a_christmas_run_up(shops):
    g, generic = shops["gift-test"]["profile"], shops["small"]["profile"]
    assert g["median_quantity"] >= 6 > generic["median_quantity"] and g["quantity_ge_6_share"] > 0.4
    assert shops["gift-test"]["orders"]["ts"].max() < pd.Timestamp("2024-12-10")  # ends Dec 9, as Online Retail
    assert g["last_60d_lift"] > 1.5
    world, sales = shops["gift-test"]["truth"].world, _sales(shops["gift-test"])
    christmas = (world.item_season_amp > 0) & (np.abs(circular_days(world.item_season_peak, CHRISTMAS_PEAK_DOY)) < 30)
    last = sales["day"] >= world.config.days - 60
    spring = sales["day"].between(60, 240)  # February to early August (day 0 is 10 December)
    assert christmas[sales["item"][last]].mean() > 2 * christmas[sales["item"][spring]].mean()
    # "what sells this week" matters: the last 7 days predict far better than all time
    assert g["window_spearman"]["7d"] > g["window_spearman"]["all"] + 0.2
    assert g["global_list_ndcg@10"]["trending_7d"] > 1.5 * g["global_list_ndcg@10"]["popular"]


def test_global_list_ndcg_on_a_known_answer():
    day = pd.Timestamp("2024-01-01")
    rows = [("u1", "A", 1), ("u2", "A", 2), ("u1", "D", 3), ("u3", "B", 65), ("u4", "C", 68),  # up to the cutoff (70)
            ("u2", "B", 80), ("u2", "C", 90), ("u1", "A", 85), ("u5", "A", 95), ("u3", "B", 100)]
    lines = pd.DataFrame(rows, columns=["user_id", "item_id", "d"])
    lines = lines.assign(ts=day + pd.to_timedelta(lines["d"], unit="D"), quantity=1.0).sort_values("ts")
    # only u2 is a test user (truth {B, C}: u1 and u3 re-buy, u5 is unknown); A is excluded for u2.
    # all time: A (2 buyers), then D, B, C (1 each, first seen first) -> u2 sees D, B, C: hits at 2 and 3.
    # last 3 days before the cutoff: C, then all time -> u2 sees C, D, B: hits at 1 and 3.
    ideal = 1 + 1 / np.log2(3)
    got = global_list_ndcg(lines, test_days=30, windows=(None, 3))
    assert got["test_users"] == 1
    assert got["popular"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal, abs=1e-4)
    assert got["trending_3d"] == pytest.approx((1 + 1 / np.log2(4)) / ideal, abs=1e-4)
    assert global_list_ndcg(lines, test_days=30, windows=(None,), k=1)["popular"] == 0.0


def test_profile_of_online_retail_reproduces_the_product_peers():
    """The same numbers as PRODUCT.md's peers table (popular 0.034, trending 7 d 0.098, 1,271 test users)."""
    orders, items = read_shop(shared_data("online-retail/onlineretail.csv.gz"))
    p = profile(orders, items)
    assert p["order_lines"] == 397_884 and p["customers"] == 4_338 and p["items_sold"] == 3_665
    assert p["global_list_ndcg@10"]["test_users"] == 1_271
    assert p["global_list_ndcg@10"]["popular"] == pytest.approx(0.034, abs=0.001)
    assert p["global_list_ndcg@10"]["trending_7d"] == pytest.approx(0.098, abs=0.001)
    assert p["median_quantity"] >= 6 and p["last_60d_lift"] > 1.5  # what the gift kind imitates


def test_drawn_shops_mix_the_kinds_traits_at_random_and_repeat_from_their_seed():
    """A drawn shop (quality benchmark: shops nobody tuned for) takes each kind knob between the values
    the generic shop and the kinds give it; the same seed gives the same shop, another seed another."""
    from features.synthetic.config import drawn

    generic = ShopConfig().model_dump()
    one, again, two = drawn(1), drawn(1), drawn(2)
    assert one == again and one != two
    for key in set().union(*KINDS.values()):
        values = [generic[key], *(k[key] for k in KINDS.values() if key in k)]
        if isinstance(generic[key], (int, float)) and not isinstance(generic[key], bool):
            assert min(values) <= one[key] <= max(values), key
        else:
            assert one[key] in values, key
    config = ShopConfig.preset("drawn-1")
    assert config.seed == 1 and config.n_users == one["n_users"] and 1_000 <= config.n_items <= 5_000
    assert ShopConfig.preset("drawn-1-test").n_users == max(500, one["n_users"] // 4)
    with pytest.raises(ValueError, match="drawn-<seed>"):
        ShopConfig.preset("drawn-one")


def test_a_drawn_shop_generates_sales_for_the_quality_benchmark(tmp_path):
    from benchmarks.quality import DRAWN, shop_names

    assert set(DRAWN) <= set(shop_names())
    paths = generate_shop(ShopConfig.preset("drawn-1-test"), tmp_path / "drawn")
    orders, items = read_shop(paths.out_dir)
    p = profile(orders, items)
    assert p["order_lines"] > 10_000 and p["customers"] > 300
