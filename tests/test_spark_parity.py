"""The same relational expressions on Apache Spark (local[2], one SparkSession for the whole test run):
rejects and canonical files identical to pandas', user features and labels equal to DuckDB's and pandas'
bit for bit, interaction matrices and bought-together rules identical. The tiny
synthetic shop and the bad-row fixtures fully; Online Retail's features and labels at the churn test
date (its full ingest on Spark takes about a minute on 2 cores: measured in the notes, not here)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import labels as L
from features import user_features as U
from features.contract import SPECS
from features.cooccurrence import AssociationConfig, association_rules, baskets
from features.ingest import ingest, load_canonical
from features.interactions import InteractionConfig, build_matrix, interaction_log
from features.relational import frames as R
from features.relational.engine import connect
from features.salvage import read_salvaged
from features.validate import validate
from features.vocab import IdVocab
from tests.conftest import shared_data

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def spark():
    engine = connect("spark", "local[2]")
    engine.con._session.conf.set("spark.sql.shuffle.partitions", "2")  # small data: few tasks
    return engine


@pytest.fixture(scope="module")
def duckdb():
    return connect("duckdb")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from features.synthetic import ShopConfig, generate_shop

    root = tmp_path_factory.mktemp("spark-tiny")
    paths = generate_shop(ShopConfig.preset("tiny"), root / "shop")
    ingest(paths.orders, paths.events, paths.items, root / "pandas", engine="pandas")
    return paths, root


def test_session_runs_in_utc(spark):
    assert spark.con._session.conf.get("spark.sql.session.timeZone") == "UTC"


@pytest.mark.parametrize("slot,name", [("events", "events_bad.csv"), ("orders", "orders_bad.jsonl"), ("items", "items_bad.csv")])
def test_rejects_match_pandas_row_for_row(spark, slot, name):
    df = read_salvaged(FIXTURES / name)
    ref, out = validate(df, SPECS[slot], name), validate(df, SPECS[slot], name, engine=spark)
    assert len(ref.rejects) > 0
    pd.testing.assert_frame_equal(out.accepted, ref.accepted)
    pd.testing.assert_frame_equal(out.rejects, ref.rejects)
    assert out.counts == ref.counts


def test_ingest_writes_the_same_files_as_pandas(spark, tiny):
    paths, root = tiny
    ingest(paths.orders, paths.events, paths.items, root / "spark", engine=spark)
    names = sorted(p.name for p in (root / "pandas").iterdir())
    assert names == sorted(p.name for p in (root / "spark").iterdir())
    for name in names:
        assert (root / "pandas" / name).read_bytes() == (root / "spark" / name).read_bytes(), name


def _features_and_labels(spark, duckdb, canonical, at):
    od, ev, it = canonical.orders, canonical.events, canonical.items
    ref = U.user_features(od, at, ev, it)
    on_spark = R.user_features(spark, od, at, ev, it)
    pd.testing.assert_frame_equal(on_spark, R.user_features(duckdb, od, at, ev, it), check_exact=True)
    pd.testing.assert_frame_equal(on_spark, ref, check_exact=True)
    users = L.customers_at(od, at)
    pd.testing.assert_index_equal(R.customers_at(spark, od, at), users)
    pd.testing.assert_series_equal(R.churn_labels(spark, od, users, at, 90), L.churn_labels(od, users, at, 90))
    pd.testing.assert_series_equal(R.conversion_labels(spark, od, users, at, 30), L.conversion_labels(od, users, at, 30))
    pd.testing.assert_frame_equal(R.outcomes(spark, od, users, at, 90), R.outcomes(duckdb, od, users, at, 90),
                                  check_exact=True)
    return ref


def test_tiny_shop_features_labels_matrices_and_rules(spark, duckdb, tiny):
    canonical = load_canonical(tiny[1] / "pandas")
    at = canonical.orders["ts"].max() - pd.Timedelta(days=90)
    assert len(_features_and_labels(spark, duckdb, canonical, at)) > 50
    # the lakehouse path: Spark reads the canonical Parquet itself (naive timestamps come in as TIMESTAMP_NTZ)
    orders, events, items = (spark.read_parquet(tiny[1] / "pandas" / f"{t}.parquet") for t in ("orders", "events", "items"))
    from_files = R.user_features(spark, orders, at, events, items)
    pd.testing.assert_frame_equal(from_files, R.user_features(duckdb, canonical.orders, at, canonical.events, canonical.items),
                                  check_exact=True)
    for config in (InteractionConfig(), InteractionConfig(window_days=30, half_life_days=3)):
        ref = build_matrix(interaction_log(canonical.events, canonical.orders, config), config)
        out = R.interaction_matrix(spark, canonical.events, canonical.orders, config)
        assert out.users == ref.users and out.items == ref.items
        assert ref.matrix.nnz > 0 and (out.matrix != ref.matrix).nnz == 0, config
    items = IdVocab.from_values(canonical.orders["item_id"].astype(str))
    config = AssociationConfig(min_count=2)
    ref = association_rules(baskets(canonical.orders, items), config)
    assert ref.nnz > 0 and (R.association_rules(spark, canonical.orders, items, config) != ref).nnz == 0


def test_online_retail_features_and_labels_at_the_churn_test_date(spark, duckdb, tmp_path_factory):
    out = tmp_path_factory.mktemp("spark-retail")
    ingest(shared_data("online-retail/onlineretail.csv.gz"), None, None, out, engine="duckdb")
    canonical = load_canonical(out)
    features = _features_and_labels(spark, duckdb, canonical, pd.Timestamp("2011-09-10 12:50"))
    assert len(features) == 3370  # PRODUCT.md's churn population
