"""Adapters: UCI Online Retail and OTTO map onto the data contract with counted rules; on the
real files they reproduce the numbers PRODUCT.md and the SOURCE.md files state."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.adapters import read_online_retail, read_otto
from features.ingest import detect_layout, ingest, load_canonical
from tests.conftest import shared_data

FIXTURES = Path(__file__).parent / "fixtures"


def test_online_retail_rules_on_a_small_file():
    result = read_online_retail(FIXTURES / "online_retail_small.csv")
    assert dict(zip(result.rejects["row"], result.rejects["reason"])) == {
        3: "missing customer id",
        6: "quantity <= 0 on a sale line",
        7: "price <= 0 on a sale line",
        8: "positive quantity on a cancellation",
        9: "bad ts 'not a date'",
        12: "bad quantity 'x'",
    }
    counts = result.counts
    assert counts["read"] == counts["accepted"] + counts["rejected"] == 12
    assert counts["notes"]["cancellations"] == 1 and counts["notes"]["duplicate_lines"] == 1
    assert counts["notes"]["non_product_lines"] == 2
    orders = result.tables["orders"]
    assert orders["user_id"].tolist()[:3] == ["17850", "17850", "14527"]  # no ".0"
    assert orders.set_index("order_id").loc["C536379", "quantity"] == -1.0  # return line kept
    items = result.tables["items"].set_index("item_id")
    assert items.loc["22139", "title"] == "RETROSPOT TEA SET CERAMIC 11 PC"  # most frequent description
    assert items.loc["22139", "price"] == 4.95  # median positive unit price
    assert items["category"].fillna("").to_dict() == {
        "22139": "", "22633": "", "85123A": "", "D": "non-product", "POST": "non-product"}
    assert json.loads(result.rejects.loc[0, "record"])["StockCode"] == "22633"


def test_otto_rules_on_a_small_file():
    result = read_otto(FIXTURES / "otto_small.jsonl")
    assert list(zip(result.rejects["row"], result.rejects["reason"])) == [
        (1, "duplicate of row 1"),
        (2, "unknown event_type 'likes' (expected view, cart, purchase)"),
        (2, "missing item_id"),
    ]
    events = result.tables["events"]
    assert events["event_type"].tolist() == ["view", "cart", "purchase", "view"]
    assert (events["user_id"] == events["session_id"]).all()
    orders = result.tables["orders"]
    assert orders[["order_id", "user_id", "item_id", "quantity", "price"]].values.tolist() == [
        ["1-1659305000000", "1", "11", 1.0, 0.0]]


@pytest.fixture(scope="module")
def retail_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retail")
    ingest(shared_data("online-retail/onlineretail.csv.gz"), shared_data("otto-sample/otto_train_sample.jsonl"),
           None, out)
    return out


def test_online_retail_reproduces_the_peer_input(retail_out):
    """PRODUCT.md: 397,884 positive lines, 4,338 customers, 3,665 items."""
    report = json.loads((retail_out / "ingest_report.json").read_text())["files"][0]
    assert report["layout"] == "online-retail"
    assert (report["read"], report["accepted"], report["rejected"]) == (541_909, 406_789, 135_120)
    assert report["by_reason"] == {"missing customer id": 135_080, "price <= 0 on a sale line": 40}
    assert report["notes"]["cancellations"] == 8_905
    assert report["notes"]["duplicate_lines"] == 5_225
    orders = load_canonical(retail_out).orders
    positive = orders[(orders["quantity"] > 0) & (orders["price"] > 0) & ~orders["order_id"].str.startswith("C")]
    assert (len(positive), positive["user_id"].nunique(), positive["item_id"].nunique()) == (397_884, 4_338, 3_665)
    assert orders["ts"].min() == pd.Timestamp("2010-12-01 08:26") and orders["ts"].max() == pd.Timestamp("2011-12-09 12:50")


def test_online_retail_items(retail_out):
    items = load_canonical(retail_out).items.set_index("item_id")
    assert len(items) == 4_070
    assert items.loc["POST", "category"] == "non-product" and items.loc["gift_0001_10", "category"] == "non-product"
    assert pd.isna(items.loc["85123A", "category"]) and pd.isna(items.loc["DCGSSBOY", "category"])
    assert items.loc["85123A", "title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert items["in_stock"].all()


def test_otto_sample_counts(retail_out):
    """SOURCE.md: 20 sessions, 862 events (800 clicks, 52 carts, 10 orders)."""
    report = json.loads((retail_out / "ingest_report.json").read_text())["files"][1]
    assert report["layout"] == "otto" and report["notes"]["sessions"] == 20
    events = load_canonical(retail_out).events
    assert len(events) == 862 and events["session_id"].nunique() == 20
    assert events["event_type"].value_counts().to_dict() == {"view": 800, "cart": 52, "purchase": 10}
    assert events["ts"].min() >= pd.Timestamp("2022-07-31 22:00") and events["ts"].max() <= pd.Timestamp("2022-08-28 22:00")


def test_layouts_are_detected():
    assert detect_layout(shared_data("online-retail/onlineretail.csv.gz")) == "online-retail"
    assert detect_layout(shared_data("otto-sample/otto_train_sample.jsonl")) == "otto"
    assert detect_layout(FIXTURES / "orders_bad.csv") == "contract"


def test_rerun_on_real_data_gives_identical_bytes(retail_out, tmp_path):
    ingest(shared_data("online-retail/onlineretail.csv.gz"), shared_data("otto-sample/otto_train_sample.jsonl"),
           None, tmp_path)
    for path in retail_out.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
