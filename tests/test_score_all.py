"""shoprec score-all: every shopper's top-k and propensity scores, on this machine and on Spark's executors
(local[2], the test run's one SparkSession), with the same rows value for value."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from training.batch import score_all
from training.batch_spark import read_top, score_all_spark


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """An ALS bundle of the tiny synthetic shop, saved as a folder."""
    from features.ingest import ingest, load_canonical
    from features.synthetic import ShopConfig, generate_shop
    from training.config import Candidate, TrainConfig
    from training.recommenders.als import ALSConfig
    from training.pipeline import fit_bundle

    root = tmp_path_factory.mktemp("score-all")
    paths = generate_shop(ShopConfig.preset("tiny"), root / "shop")
    ingest(paths.orders, paths.events, paths.items, root / "canonical")
    canonical = load_canonical(root / "canonical")
    als = Candidate(name="als", model=ALSConfig(factors=8, iterations=5))
    bundle = fit_bundle(als, TrainConfig(), canonical.events, canonical.orders, {"run_id": "r1"}, items=canonical.items)
    bundle.save(root / "bundle")
    return root / "bundle"


def test_spark_writes_the_rows_the_single_machine_scorer_writes(bundle_dir, tmp_path):
    from training.bundle import ModelBundle

    bundle = ModelBundle.load(bundle_dir)
    here = score_all(bundle, k=10, out_path=tmp_path / "here.parquet", block=64, threads=2)
    spark = score_all_spark(bundle_dir, k=10, out_path=str(tmp_path / "spark"), block=64)
    assert spark.users == here.users == len(bundle.users) > 100 and spark.rows == here.rows > 0
    a, b = read_top(tmp_path / "here.parquet"), read_top(tmp_path / "spark")
    assert a.equals(b)  # same rows, same order, same float32 scores


def test_cli_both_engines_write_the_same_top_k_and_propensity(bundle_dir, tmp_path):
    from training.cli import app

    users = pd.read_parquet(bundle_dir.parent / "shop" / "orders.parquet", columns=["user_id"])["user_id"].unique()
    rng = np.random.default_rng(0)
    prop = tmp_path / "propensity"
    prop.mkdir()
    pd.DataFrame({"user_id": users, "churn_probability": rng.random(len(users)),
                  "conversion_probability": rng.random(len(users)), "expected_spend": rng.random(len(users)) * 100,
                  "value_at_risk": rng.random(len(users)) * 50, "segment": "loyal",
                  "reasons": "recency"}).to_parquet(prop / "scores.parquet", index=False)
    outs = {}
    for engine in ("duckdb", "spark"):
        outs[engine] = tmp_path / engine
        result = CliRunner().invoke(app, ["score-all", "--engine", engine, "--bundle", str(bundle_dir), "--propensity",
                                          str(prop), "--out", str(outs[engine]), "--k", "5"])
        assert result.exit_code == 0, result.output
        assert "wrote the top-5 of" in result.output
    assert read_top(outs["duckdb"] / "topk.parquet").equals(read_top(outs["spark"] / "topk.parquet"))
    here = pd.read_parquet(outs["duckdb"] / "propensity.parquet")
    there = pd.read_parquet(sorted((outs["spark"] / "propensity.parquet").glob("part-*.parquet")))
    pd.testing.assert_frame_equal(there.reset_index(drop=True), here, check_dtype=False)
    assert list(here.columns) == ["user_id", "churn_probability", "conversion_probability", "expected_spend",
                                  "value_at_risk", "segment"]


def test_unknown_engine_is_refused(bundle_dir, tmp_path):
    from training.cli import app

    result = CliRunner().invoke(app, ["score-all", "--engine", "dask", "--bundle", str(bundle_dir), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--engine dask" in result.output


def test_forgotten_shoppers_leave_the_export_on_both_engines(bundle_dir, tmp_path, monkeypatch):
    """`shoprec forget-user` erases a shopper; the published bundles still hold them until the next training, and
    score-all used to write their top-k and propensity rows all the same."""
    from features.privacy import ForgetList
    from training.bundle import ModelBundle
    from training.cli import app

    monkeypatch.setenv("SHOPREC_PRIVACY_DIR", str(tmp_path / "privacy"))
    users = ModelBundle.load(bundle_dir).users.ids
    gone = str(users[3])
    ForgetList.open(tmp_path / "privacy", create_key=True).add(gone)
    prop = tmp_path / "propensity"
    prop.mkdir()
    pd.DataFrame({"user_id": users, "churn_probability": 0.5, "conversion_probability": 0.5, "expected_spend": 10.0,
                  "value_at_risk": 5.0, "segment": "loyal"}).to_parquet(prop / "scores.parquet", index=False)
    for engine in ("duckdb", "spark"):
        out = tmp_path / engine
        result = CliRunner().invoke(app, ["score-all", "--engine", engine, "--bundle", str(bundle_dir), "--propensity",
                                          str(prop), "--out", str(out), "--k", "3"])
        assert result.exit_code == 0, result.output
        top = read_top(out / "topk.parquet").to_pandas()
        scored = pd.read_parquet(out / "propensity.parquet")
        assert gone not in set(top["user_id"]) and gone not in set(scored["user_id"])
        assert top["user_id"].nunique() == len(scored) == len(users) - 1
        assert f"of {len(users) - 1:,} shoppers" in result.output
    missing = CliRunner().invoke(app, ["score-all", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "not a recommender bundle" in missing.output  # was a traceback
