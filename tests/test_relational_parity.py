"""The relational pipeline on DuckDB (the default engine) gives what the pandas pipeline gives:
canonical tables, rejects and reports byte for byte; user features and labels bit for bit (money and
quantities summed exactly on both, features/money.py); the same churn model
metrics; interaction matrices; bought-together rules. On the bad-row fixtures,
the synthetic shop and the real Online Retail file (../shared/data, required)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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
CONFIGS = [InteractionConfig(), InteractionConfig(binary=True), InteractionConfig(half_life_days=7),
           InteractionConfig(window_days=30, half_life_days=3), InteractionConfig(binary=True, half_life_days=14)]


@pytest.fixture(scope="module")
def duckdb():
    return connect("duckdb")


@pytest.fixture(scope="module")
def shops(tmp_path_factory):
    """name -> (pandas ingest dir, duckdb ingest dir) for the tiny synthetic shop and Online Retail."""
    from features.synthetic import ShopConfig, generate_shop

    root = tmp_path_factory.mktemp("parity")
    tiny = generate_shop(ShopConfig.preset("tiny"), root / "tiny")
    inputs = {"tiny": dict(orders=tiny.orders, events=tiny.events, items=tiny.items),
              "retail": dict(orders=shared_data("online-retail/onlineretail.csv.gz"), events=None, items=None)}
    out = {}
    for name, files in inputs.items():
        out[name] = tuple(root / f"{name}-{engine}" for engine in ("pandas", "duckdb"))
        for engine, path in zip(("pandas", "duckdb"), out[name]):
            ingest(**files, out_dir=path, engine=engine)
    return out


@pytest.mark.parametrize("slot,name", [("events", "events_bad.csv"), ("events", "events_bad.jsonl"),
                                       ("orders", "orders_bad.csv"), ("orders", "orders_bad.jsonl"),
                                       ("items", "items_bad.csv")])
def test_rejects_and_reasons_match_pandas_row_for_row(duckdb, slot, name):
    df = read_salvaged(FIXTURES / name)
    ref, out = validate(df, SPECS[slot], name), validate(df, SPECS[slot], name, engine=duckdb)
    assert len(ref.rejects) > 0
    pd.testing.assert_frame_equal(out.accepted, ref.accepted)
    pd.testing.assert_frame_equal(out.rejects, ref.rejects)
    assert out.counts == ref.counts
    assert out.read == len(out.accepted) + len(out.rejects)


@pytest.mark.parametrize("shop", ["tiny", "retail"])
def test_ingest_writes_identical_files(shops, shop):
    ref, out = shops[shop]
    names = sorted(p.name for p in ref.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize("shop", ["tiny", "retail"])
def test_user_features_and_labels_match_pandas(shops, duckdb, shop):
    c = load_canonical(shops[shop][0])
    od, ev, it = c.orders, c.events, c.items
    for at in (od.ts.max() - pd.Timedelta(days=90), od.ts.max() - pd.Timedelta(days=180)):
        ref = U.user_features(od, at, ev, it)
        out = R.user_features(duckdb, od, at, ev, it)
        assert len(ref) > 50
        pd.testing.assert_index_equal(out.index, ref.index)
        pd.testing.assert_frame_equal(out, ref, check_exact=True)  # money and quantities: features/money.py
        users = L.customers_at(od, at)
        pd.testing.assert_index_equal(R.customers_at(duckdb, od, at), users)
        pd.testing.assert_series_equal(R.churn_labels(duckdb, od, users, at, 90), L.churn_labels(od, users, at, 90))
        pd.testing.assert_series_equal(R.conversion_labels(duckdb, od, users, at, 30), L.conversion_labels(od, users, at, 30))
        from training.value.peers import future_spend

        spend = R.outcomes(duckdb, od, users, at, 90)["spend"].rename("spend")
        pd.testing.assert_series_equal(spend, future_spend(od, users, at, 90), check_exact=True)
        # any users: those who only bought later, and ids never seen, get their labels too (0 spend, churned)
        anyone = pd.Index(sorted(set(od["user_id"].astype(str))) + ["never-seen"], dtype="string", name="user_id")
        pd.testing.assert_series_equal(R.churn_labels(duckdb, od, anyone, at, 90), L.churn_labels(od, anyone, at, 90))


def test_churn_metrics_are_the_same_on_duckdb(shops, duckdb):
    """Online Retail's churn evaluation (features, labels, LightGBM, peers) from the engine's rows equals pandas'."""
    from training.propensity.config import PropensityConfig
    from training.propensity.dataset import Snapshots
    from training.propensity.evaluate import evaluate_target

    canonical = load_canonical(shops["retail"][0])
    ref = evaluate_target(Snapshots(canonical), "churn", PropensityConfig()).metrics()
    canonical.engine = duckdb
    assert evaluate_target(Snapshots(canonical), "churn", PropensityConfig()).metrics() == ref


@pytest.mark.parametrize("shop", ["tiny", "retail"])
def test_interaction_matrices_and_rules_match_pandas(shops, duckdb, shop):
    c = load_canonical(shops[shop][0])
    for config in CONFIGS:
        ref = build_matrix(interaction_log(c.events, c.orders, config), config)
        out = R.interaction_matrix(duckdb, c.events, c.orders, config)
        assert out.users == ref.users and out.items == ref.items
        assert ref.matrix.nnz > 0 and (out.matrix != ref.matrix).nnz == 0, config
        # vocabularies given (a model's space): ids outside them left out, rows in the given order
        users = IdVocab(np.concatenate([ref.users.ids[::2][::-1], ["never-seen"]]))
        log = interaction_log(c.events, c.orders, config)
        ref = build_matrix(log, config, users=users, items=ref.items, now=log["ts"].max())
        out = R.interaction_matrix(duckdb, c.events, c.orders, config, users=users, items=ref.items)
        assert (out.matrix != ref.matrix).nnz == 0 and out.matrix.shape == ref.matrix.shape, config
    items = IdVocab.from_values(c.orders["item_id"].astype(str))
    ref = association_rules(baskets(c.orders, items), AssociationConfig())
    out = R.association_rules(duckdb, c.orders, items, AssociationConfig())
    assert ref.nnz > 0 and (out != ref).nnz == 0


def test_a_rule_is_reported_once_per_row_and_counts_reconcile(duckdb):
    """Each rejected row carries its first reason only; read = accepted + rejected."""
    df = pd.DataFrame({"order_id": ["o1", "o2", None, "o4", "o5"], "user_id": ["u", "u", "u", "u", "u"],
                       "item_id": ["a", "b", "c", "d", "e"],
                       "ts": ["2024-01-01", "not a date", "2024-01-02", "2024-01-03", "2024-01-04"],
                       "quantity": [1, 1, 0, 0, 2], "price": [1.0, -1.0, 1.0, 1.0, -2.5]})
    out = validate(df, SPECS["orders"], "orders.csv", engine=duckdb)
    assert out.rejects["reason"].tolist() == ["bad ts 'not a date'", "missing order_id", "quantity is zero",
                                              "negative price -2.5"]
    assert out.rejects["row"].tolist() == [2, 3, 4, 5]
    assert out.read == len(out.accepted) + len(out.rejects) == 5
    assert np.array_equal(out.accepted["order_id"].to_numpy(dtype=object), np.array(["o1"], dtype=object))


def test_typed_parquet_is_validated_in_the_engine_with_the_same_files(tmp_path):
    """Typed Parquet inputs never enter pandas on DuckDB (features/relational/parquet.py): bad rows of every
    kind give the files the pandas rules give, byte for byte; a file the engine path does not cover (text
    timestamps) still goes through pandas."""
    from features.relational import parquet as P

    ts = pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:00", "2024-01-02", "2024-01-03", "2024-01-04",
                         "2024-01-05", "2024-01-06", "2024-01-07", "2024-01-01 10:00", "2024-01-08"], format="ISO8601").as_unit("us")
    events = pd.DataFrame({
        "TS": ts, "user_id": ["u1", "u1", " u2\u3000", "", None, "u3", "u4", "\tu5\u3000", "u1", ""],
        "session_id": ["s1", "s1", "s2", "s3", "s4", " ", "s\x00", "s7", "s1", "s8"],
        "event_type": ["view", "view", "CART", "purchase", "teleport", "view", "view", "view", "view", "view"],
        "item_id": ["i1", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i1", "i1"],
        "price": [1.5, 1.5, float("inf"), -2.0, np.nan, 1.0, 1.0, 1.0, 1.5, 2.0], "extra": range(10)})
    orders = pd.DataFrame({"order_id": ["o1", "o2", "o3", "o4"], "user_id": ["u1", "u2", "u3", "u4"],
                           "item_id": ["i1", "i2", "i9", "i3"], "ts": ts[:4], "quantity": [1, 0, 2, -1],
                           "price": [1.0, 2.0, -float("inf"), 3.0]})
    items = pd.DataFrame({"item_id": ["i1", "i2", "i1", "i3"], "price": [1.0, np.nan, 2.0, 3.0],
                          "in_stock": [True, None, False, True]})
    for name, df in (("events", events), ("orders", orders), ("items", items)):
        df.to_parquet(tmp_path / f"{name}.parquet", index=False)
    duck = connect("duckdb")
    assert P.read_contract_parquet(duck, tmp_path / "events.parquet", SPECS["events"], "events.parquet") is not None
    events.assign(TS=events["TS"].astype(str)).to_parquet(tmp_path / "text_ts.parquet", index=False)
    assert P.read_contract_parquet(duck, tmp_path / "text_ts.parquet", SPECS["events"], "x") is None
    for events_file in ("events.parquet", "text_ts.parquet"):
        files = {t: tmp_path / f"{t}.parquet" for t in ("orders", "items")} | {"events": tmp_path / events_file}
        out = {engine: tmp_path / f"{events_file}-{engine}" for engine in ("pandas", "duckdb")}
        for engine, path in out.items():
            ingest(**files, out_dir=path, engine=engine if engine == "pandas" else duck, forgotten=[])
        rejects = pd.read_csv(out["pandas"] / "rejects.csv")
        assert len(rejects) >= 10 and rejects["reason"].str.contains("bad price 'inf'").any()
        for name in sorted(p.name for p in out["pandas"].iterdir()):
            assert (out["pandas"] / name).read_bytes() == (out["duckdb"] / name).read_bytes(), (events_file, name)
    # files the pandas rules refuse are refused alike: no usable price (nullable, but only infinities), no known type
    from features.errors import IngestError

    for bad in (events.assign(price=float("inf")), events.assign(event_type="teleport")):
        bad.to_parquet(tmp_path / "refused.parquet", index=False)
        errors = []
        for engine in ("pandas", duck):
            with pytest.raises(IngestError) as e:
                ingest(events=tmp_path / "refused.parquet", orders=None, items=None, out_dir=tmp_path / "refused",
                       engine=engine, forgotten=[])
            errors.append(str(e.value))
        assert errors[0] == errors[1]


def test_duckdb_memory_limit_spill_directory_and_materialized_tables(monkeypatch, tmp_path):
    """SHOPREC_DUCKDB_MEMORY caps DuckDB (it spills beyond, to SHOPREC_DUCKDB_TEMP); a bad size is refused by
    name; a table kept for a block is gone after it."""
    monkeypatch.setenv("SHOPREC_DUCKDB_MEMORY", "1GB")
    monkeypatch.setenv("SHOPREC_DUCKDB_TEMP", str(tmp_path))
    engine = connect("duckdb")
    settings = dict(engine.con.con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'temp_directory')").fetchall())
    assert settings == {"memory_limit": "953.6 MiB", "temp_directory": str(tmp_path)}
    t = engine.table(pd.DataFrame({"x": [1, 2, 3]}))
    with engine.materialized(t.filter(t.x > 1)) as kept:
        assert kept.count().execute() == 2
        name = kept.get_name().split(".")[-1]
    assert not engine.con.con.execute(f"SELECT 1 FROM duckdb_tables() WHERE table_name = '{name}'").fetchall()
    monkeypatch.setenv("SHOPREC_DUCKDB_MEMORY", "lots")
    with pytest.raises(ValueError, match="SHOPREC_DUCKDB_MEMORY='lots'"):
        connect("duckdb")
