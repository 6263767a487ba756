"""Customer value (issue 15): the protocol's metrics, lifecycle stages and flows, cohorts, funnel,
personas, the two-part model, /customer_value's answers and the Online Retail figures of README.md."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import lifecycle
from training.value.metrics import capture, normalised_gini, value_metrics
from training.value.model import ValueModel
from training.value.personas import Personas

ROOT = Path(__file__).resolve().parents[1]
RETAIL = ROOT.parent / "shared" / "data" / "online-retail" / "onlineretail.csv.gz"


def orders_frame(rows) -> pd.DataFrame:
    """(user, date, spend) -> canonical orders, one line each."""
    return pd.DataFrame({"order_id": [f"o{i}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
                         "item_id": "i1", "ts": pd.to_datetime([r[1] for r in rows]), "quantity": 1.0,
                         "price": [float(r[2]) for r in rows]}).astype({"user_id": "string", "order_id": "string"})


def test_metrics_perfect_reversed_and_ties():
    actual = np.array([0, 0, 10, 0, 50, 5, 0, 100, 0, 1], dtype=float)
    perfect = value_metrics(actual, actual)
    assert perfect["norm_gini"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
    assert perfect["top10_capture"] == pytest.approx(100 / 166) and perfect["top20_capture"] == pytest.approx(150 / 166)
    assert normalised_gini(actual, -actual) < 0
    # ties keep row order: a constant prediction takes the first rows
    assert capture(actual, np.zeros(10), 0.3) == pytest.approx(10 / 166)
    assert value_metrics(actual, actual * 2 + 1)["rmse"] == pytest.approx(np.sqrt(np.mean((actual + 1) ** 2)))
    with pytest.raises(ValueError, match="shape"):
        value_metrics(actual, actual[:5])


AT = pd.Timestamp("2024-06-30 12:00")
TOY = [("a", "2024-06-20", 10), ("b", "2024-01-01", 10), ("b", "2024-06-25", 30), ("c", "2024-05-25", 5),
       ("c", "2024-06-10", 5), ("c", "2024-06-20", 5), ("d", "2024-05-20", 8), ("d", "2024-06-25", 8),
       ("e", "2024-05-01", 20), ("f", "2024-02-01", 20), ("g", "2023-06-01", 20), ("h", "2024-07-05", 99),
       ("i", "2024-06-10", 4), ("i", "2024-06-15", 4)]


def test_stages_point_in_time_and_flows():
    orders = orders_frame(TOY)
    s = lifecycle.stages(orders, AT)
    assert s.to_dict() == {"a": "new", "b": "reactivated", "c": "repeat", "d": "active", "e": "cooling",
                           "f": "at_risk", "g": "lapsed", "i": "new"}  # h bought after AT: not a customer yet
    # i first bought 20 days ago and came back: still new ("first purchase in the last 30 days", as it says)
    strict = lifecycle.LifecycleConfig(stages=[lifecycle.StageRule(name="recent", max_recency_days=10),
                                               lifecycle.StageRule(name="other")])
    assert lifecycle.stages(orders, AT, strict)["b"] == "recent" and lifecycle.stages(orders, AT, strict)["e"] == "other"
    flows = lifecycle.transitions(orders, AT, months=1)  # end of May -> AT
    june = flows.set_index(["from_stage", "to_stage"])["customers"]
    assert june[("not_yet_customer", "new")] == 2 and june[("at_risk", "reactivated")] == 1  # a, i arrive; b comes back
    assert june[("new", "cooling")] == 1  # e bought once, on May 1: new at the end of May, cooling by AT
    m = lifecycle.transition_matrix(flows)
    assert np.allclose(m.sum(axis=1)[m.sum(axis=1) > 0], 1.0)


def test_cohorts_retention_and_repurchase():
    orders = orders_frame([("x", "2024-01-05", 1), ("x", "2024-02-10", 1), ("y", "2024-01-20", 1),
                           ("y", "2024-01-25", 1), ("z", "2024-02-03", 1)])
    c = lifecycle.cohorts(orders, pd.Timestamp("2024-04-01")).set_index(["cohort", "months_since_first"])
    assert c.loc[("2024-01", 0), "customers"] == 2 and c.loc[("2024-01", 1), "retention"] == 0.5
    assert c.loc[("2024-01", 0), "repurchase_rate"] == 0.5 and c.loc[("2024-01", 1), "repurchase_rate"] == 1.0
    assert c.loc[("2024-02", 1), "retention"] == 0.0 and ("2024-04", 0) not in c.index


def test_funnel_by_week_and_group():
    ev = pd.DataFrame({"ts": pd.to_datetime(["2024-06-03"] * 5 + ["2024-06-04"] * 2), "user_id": ["u1"] * 5 + ["u2"] * 2,
                       "session_id": ["s1", "s1", "s1", "s2", "s3", "s4", "s4"],
                       "event_type": ["view", "cart", "purchase", "view", "view", "view", "cart"], "item_id": "i1"})
    f = lifecycle.funnel(ev, pd.Timestamp("2024-06-30"), pd.Series({"u1": "loyal", "u2": "new"}))
    loyal = f[f["group"] == "loyal"].iloc[0]
    assert (loyal["week"], loyal["view"], loyal["cart"], loyal["purchase"]) == ("2024-06-03", 3, 1, 1)
    assert loyal["drop_off_view_cart"] == pytest.approx(2 / 3)
    assert f[f["group"] == "new"].iloc[0]["cart_to_purchase"] == 0.0
    assert lifecycle.funnel(None, pd.Timestamp("2024-06-30")).empty


def test_personas_find_separated_groups_and_describe_them():
    rng = np.random.default_rng(0)
    n = 150
    def group(recency, freq, money):
        return pd.DataFrame({"recency_days": rng.normal(recency, recency * 0.05, n), "frequency": rng.normal(freq, freq * 0.05, n),
                             "monetary": rng.normal(money, money * 0.05, n), "tenure_days": 300.0, "basket_value": money / freq,
                             "distinct_items": 10.0, "mean_gap_days": 30.0, "return_share": 0.0})
    f = pd.concat([group(5, 40, 20000), group(300, 1, 50), group(60, 5, 800)], ignore_index=True)
    p = Personas((2, 5), seed=1).fit(f)
    assert p.k_ == 3 and set(p.sizes_) == {n}
    words = {p.labels_[0]: p.words(p.labels_[0]), p.labels_[n]: p.words(p.labels_[n])}
    assert "recent" in words[p.labels_[0]] and "high spend" in words[p.labels_[0]]
    assert "lapsing" in words[p.labels_[n]] and "one-off" in words[p.labels_[n]]
    assert (p.assign(f) == p.labels_).all()


def test_value_model_two_parts_save_load(tmp_path):
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x": rng.normal(size=600), "noise": rng.normal(size=600)})
    spend = np.where(X["x"] > 0, np.exp(3 + X["x"] + rng.normal(0, 0.1, 600)), 0.0)
    model = ValueModel({"min_child_samples": 10}, seed=1, max_rounds=200).fit(X[:400], spend[:400], X[400:], spend[400:])
    pred = model.predict(X[400:])
    assert value_metrics(spend[400:], pred)["spearman"] > 0.8
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["buy.txt", "model.json", "spend.txt"]
    assert np.allclose(ValueModel.load(tmp_path / "m").predict(X[400:]), pred)
    with pytest.raises(ValueError, match=">= 0"):
        ValueModel().fit(X[:400], -spend[:400] - 1, X[400:], spend[400:])


def test_customer_value_answers_and_scope(tmp_path):
    from serving.auth import ROUTE_SCOPES
    from serving.customer_value import CustomerValueRequest, customer_value, missing_value
    from serving.propensity import PropensityApi
    from training.propensity.bundle import PropensityBundle, score_table
    from training.value.train import ValueResult, with_value

    assert ROUTE_SCOPES["/customer_value"] == "marketing"
    feats = pd.DataFrame({"recency_days": [1.0, 50.0], "frequency": [3.0, 1.0], "monetary": [90.0, 10.0],
                          "tenure_days": [100.0, 60.0], "return_share": [0.0, 0.0]}, index=pd.Index(["u1", "u2"], name="user_id"))
    seg = pd.DataFrame({"segment": ["champions", "hibernating"], "r_score": [5, 1], "f_score": [5, 1], "m_score": [5, 1]},
                       index=feats.index)
    bundle = PropensityBundle(score_table(feats, seg, np.array([0.1, 0.8]), np.array([0.7, 0.1]),
                                          pd.Series([["a"], ["b"]], index=feats.index), 90), {"scored_at": "2024-06-30"})
    api = PropensityApi(bundle, "shop/v1")
    assert "no customer value" in missing_value(api)
    value = pd.DataFrame({"clv_90d": [120.0, 4.0], "p_buy_90d": [0.9, 0.2], "stage": ["repeat", "cooling"],
                          "persona": [1, 0], "persona_description": ["frequent", "lapsing"]}, index=feats.index)
    with_value(bundle, ValueResult({}, value, {}, {"horizon_days": 90}, None), 90)
    assert bundle.lookup(["u2"])[0]["value_at_risk"] == pytest.approx(0.8 * 4.0)  # churn probability x CLV
    assert missing_value(api) == ""
    answer = customer_value(api, CustomerValueRequest(user_ids=["u1", "nobody", "u2"]))
    assert [c.known for c in answer.customers] == [True, False, True]
    assert (answer.customers[0].clv, answer.customers[0].stage, answer.customers[2].persona) == (120.0, "repeat", 0)
    api.hidden = lambda ids: [i == "u1" for i in ids]  # forgotten shoppers are unknown
    assert customer_value(api, CustomerValueRequest(user_ids=["u1"])).customers[0].known is False


def test_value_at_risk_counts_only_the_spend_a_customer_kept():
    """Online Retail's 16446 ordered 80,995 units and cancelled them: gross spend and CLV high, nothing at risk."""
    from training.propensity.bundle import PropensityBundle, kept_share, score_table
    from training.value.train import ValueResult, with_value

    feats = pd.DataFrame({"recency_days": [1.0, 50.0, 9.0], "frequency": [2.0, 3.0, 4.0], "monetary": [168472.5, 900.0, 400.0],
                          "tenure_days": [200.0, 60.0, 300.0], "return_share": [1.0, 0.25, np.nan]},
                         index=pd.Index(["16446", "u2", "u3"], name="user_id"))
    seg = pd.DataFrame({"segment": ["champions"] * 3, "r_score": [5] * 3, "f_score": [5] * 3, "m_score": [5] * 3}, index=feats.index)
    bundle = PropensityBundle(score_table(feats, seg, np.array([0.9, 0.5, 0.5]), np.array([0.1] * 3),
                                          pd.Series([["a"]] * 3, index=feats.index), 90), {"scored_at": "2011-12-09"})
    value = pd.DataFrame({"clv_90d": [3215.5, 400.0, 100.0], "p_buy_90d": [0.2, 0.5, 0.5], "stage": ["reactivated"] * 3,
                          "persona": [0] * 3, "persona_description": ["x"] * 3}, index=feats.index)
    with_value(bundle, ValueResult({}, value, {}, {"horizon_days": 90}, None), 90, kept_share(feats))
    rows = {r["user_id"]: r for r in bundle.lookup(["16446", "u2", "u3"])}
    assert rows["16446"]["value_at_risk"] == 0.0 and bundle.scores.set_index("user_id").loc["16446", "clv_90d"] == 3215.5
    assert rows["u2"]["expected_spend"] == pytest.approx(300.0) and rows["u2"]["value_at_risk"] == pytest.approx(150.0)
    assert rows["u3"]["expected_spend"] == pytest.approx(100.0)  # no returns: all of it
    assert bundle.at_risk()["user_id"].tolist() == ["u2", "u3", "16446"]
    # the list's total spend is what they kept: 16446's cancelled order is not spend
    assert bundle.scores.set_index("user_id").loc[["16446", "u2", "u3"], "monetary"].tolist() == [0.0, 675.0, 400.0]
    # "will they buy in 90 days" has one answer: 1 - churn probability (not the value model's own 0.2 / 0.5)
    np.testing.assert_allclose(bundle.scores.set_index("user_id").loc[["16446", "u2"], "p_buy_90d"], [0.1, 0.5])


@pytest.mark.slow
def test_online_retail_customer_value_matches_readme(tmp_path):
    """PRODUCT.md's protocol on Online Retail: the peers reproduce its reference table where the recipe
    is the same, our model clears the Spearman goal and leads every peer on it, and README.md shows these numbers."""
    if not RETAIL.exists():
        pytest.fail(f"Online Retail data missing: {RETAIL}")
    from features.ingest import ingest, load_canonical
    from training.propensity.dataset import Snapshots
    from training.value.config import ValueConfig
    from training.value.train import evaluate_value, ValueRows

    ingest(orders=RETAIL, events=None, items=None, out_dir=tmp_path / "c")
    snaps = Snapshots(load_canonical(tmp_path / "c"))
    m = evaluate_value(ValueRows(snaps, ValueConfig()), ValueConfig(), 90).metrics()
    assert m["customers"] == 3370 and m["cutoff"] == "2011-09-10 12:50:00"
    last = m["peers"]["last_period"]
    assert (round(last["spearman"], 3), round(last["norm_gini"], 3), round(last["top10_capture"], 3)) == (0.446, 0.612, 0.493)
    assert m["spearman"] >= 0.52 and m["beats_best_peer"]["spearman"]
    readme = (ROOT / "README.md").read_text()
    rows = {name: m["peers"][name] for name in m["peers"]} | {"model": m}
    for name, got in rows.items():
        line = re.search(rf"^\| `{name}`[^\n]*", readme, re.M)
        assert line, f"README.md has no customer-value row for {name}"
        shown = [float(x) for x in re.findall(r"\b\d+\.\d{3}\b", line.group(0))[:4]]
        want = [got[k] for k in ("spearman", "norm_gini", "top10_capture", "top20_capture")]
        assert np.allclose(shown, want, atol=0.002), (name, shown, want)


def valued_bundle():
    """Three customers with customer value (one id a spreadsheet would read as a formula), as ``with_value`` leaves them."""
    from training.propensity.bundle import PropensityBundle, score_table
    from training.value.train import ValueResult, with_value

    ids = pd.Index(["u1", "=HYPERLINK(1)", "-u3"], name="user_id")
    feats = pd.DataFrame({"recency_days": [1.0, 50.0, 200.0], "frequency": [3.0, 1.0, 2.0], "monetary": [90.0, 10.0, 40.0],
                          "tenure_days": [100.0, 60.0, 300.0], "return_share": 0.0}, index=ids)
    seg = pd.DataFrame({"segment": ["champions", "hibernating", "at_risk"], "r_score": [5, 1, 2], "f_score": [5, 1, 2],
                        "m_score": [5, 1, 3]}, index=ids)
    bundle = PropensityBundle(score_table(feats, seg, np.array([0.1, 0.8, 0.6]), np.array([0.7, 0.1, 0.2]),
                                          pd.Series([["a"], ["b"], ["c"]], index=ids), 90),
                              {"scored_at": "2024-06-30", "horizon_days": 90, "window_days": 30})
    value = pd.DataFrame({"clv_90d": [120.0, 4.0, 30.0], "p_buy_90d": [0.9, 0.2, 0.4], "stage": ["repeat", "cooling", "lapsed"],
                          "persona": [1, 0, 0], "persona_description": ["frequent", "lapsing", "lapsing"]}, index=ids)
    stages = [{"name": s.name, "description": s.description} for s in lifecycle.DEFAULT_STAGES]
    with_value(bundle, ValueResult({}, value, {}, {"horizon_days": 90, "stages": stages}, None), 90)
    return bundle


@pytest.mark.parametrize("suffix", [".csv.gz", ".parquet", ".jsonl"])
def test_segments_follow_the_file_name(tmp_path, suffix):
    """``shoprec segments --out`` writes the format its name says; only the spreadsheet's CSV guards formulas."""
    import typer
    from typer.testing import CliRunner

    from features.errors import InputError
    from features.readers import read_raw
    from training.cli_value import segments

    app = typer.Typer()
    app.command("segments")(segments)
    app.callback()(lambda: None)
    valued_bundle().save(tmp_path / "b")
    args = ["segments", "--bundle", str(tmp_path / "b"), "--out"]
    assert CliRunner().invoke(app, [*args, str(tmp_path / "s.csv")]).exit_code == 0
    result = CliRunner().invoke(app, [*args, str(tmp_path / f"s{suffix}")])
    assert result.exit_code == 0, result.output
    spreadsheet, other = read_raw(tmp_path / "s.csv"), read_raw(tmp_path / f"s{suffix}")
    assert spreadsheet["customer_id"].tolist() == ["u1", "'-u3", "'=HYPERLINK(1)"]  # highest CLV first, formulas inert
    assert list(other.columns) == list(spreadsheet.columns) == [
        "customer_id", "stage", "persona", "persona_description", "clv_90d", "p_buy_90d", "rfm_segment", "churn_probability"]
    raw = ["u1", "-u3", "=HYPERLINK(1)"]  # ids as they are, outside a CSV (gzipped CSV is still a spreadsheet's)
    assert other["customer_id"].astype(str).tolist() == (spreadsheet["customer_id"].tolist() if suffix == ".csv.gz" else raw)
    assert other["clv_90d"].astype(float).tolist() == [120.0, 30.0, 4.0]
    one = CliRunner().invoke(app, [*args, str(tmp_path / f"lapsed{suffix}"), "--stage", "lapsed"])
    assert one.exit_code == 0 and read_raw(tmp_path / f"lapsed{suffix}")["stage"].tolist() == ["lapsed"]
    refused = CliRunner().invoke(app, [*args, str(tmp_path / "s.xlsx")])
    assert isinstance(refused.exception, InputError) and "cannot tell the table format" in str(refused.exception)
    assert not (tmp_path / "s.xlsx").exists()


def test_at_risk_list_has_clv_and_stage_and_filters_by_stage(tmp_path):
    """``/churn_risk``'s answer and ``shoprec churn-list`` carry CLV and the lifecycle stage, and keep one stage."""
    import typer
    from typer.testing import CliRunner

    from serving.propensity import ChurnRiskRequest, PropensityApi
    from training.cli_propensity import churn_list

    bundle = valued_bundle()
    api = PropensityApi(bundle, "shop/v1")
    everyone = api.churn_risk(ChurnRiskRequest())
    assert [(c.user_id, c.clv, c.stage) for c in everyone.customers] == [
        ("-u3", 30.0, "lapsed"), ("u1", 120.0, "repeat"), ("=HYPERLINK(1)", 4.0, "cooling")]  # value at risk 18, 12, 3.2
    assert [c.user_id for c in api.churn_risk(ChurnRiskRequest(stage="cooling")).customers] == ["=HYPERLINK(1)"]
    assert api.churn_risk(ChurnRiskRequest(stage="new")).total == 0 and api.stage_problem("new") == ""
    assert "unknown lifecycle stage 'vip'" in api.stage_problem("vip") and "lapsed" in api.stage_problem("vip")

    app = typer.Typer()
    app.command("churn-list")(churn_list)
    app.callback()(lambda: None)
    bundle.save(tmp_path / "b")
    out = tmp_path / "list.csv"
    result = CliRunner().invoke(app, ["churn-list", "--bundle", str(tmp_path / "b"), "--stage", "repeat", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out, keep_default_na=False).to_dict("records")
    assert [(r["customer_id"], r["clv_90d"], r["lifecycle_stage"]) for r in rows] == [("u1", 120.0, "repeat")]
    bad = CliRunner().invoke(app, ["churn-list", "--bundle", str(tmp_path / "b"), "--stage", "vip", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown lifecycle stage 'vip'" in bad.output

    plain = PropensityApi(type(bundle)(bundle.scores[[c for c in bundle.scores if c not in bundle.meta["value_columns"]]],
                                       {"horizon_days": 90, "window_days": 30}), "old")  # trained before customer value
    old = plain.churn_risk(ChurnRiskRequest()).customers
    assert [(c.clv, c.stage) for c in old] == [(None, None)] * 3
    assert "no lifecycle stages" in plain.stage_problem("lapsed")
    plain.bundle.save(tmp_path / "old")
    CliRunner().invoke(app, ["churn-list", "--bundle", str(tmp_path / "old"), "--out", str(out)])
    assert [(r["clv_90d"], r["lifecycle_stage"]) for r in pd.read_csv(out, keep_default_na=False).to_dict("records")] == [("", "")] * 3


def test_forgotten_shoppers_leave_churn_list_and_segments(tmp_path, monkeypatch):
    """The published bundle still holds an erased shopper until the next training: the exports leave them out
    (the service already did), and the ranks close up."""
    import typer
    from typer.testing import CliRunner

    from features.privacy import ForgetList
    from training.cli_propensity import churn_list
    from training.cli_value import segments

    app = typer.Typer()
    app.command("churn-list")(churn_list)
    app.command("segments")(segments)
    monkeypatch.setenv("SHOPREC_PRIVACY_DIR", str(tmp_path / "privacy"))
    valued_bundle().save(tmp_path / "b")
    ForgetList.open(tmp_path / "privacy", create_key=True).add("-u3")
    out = tmp_path / "list.parquet"
    assert CliRunner().invoke(app, ["churn-list", "--bundle", str(tmp_path / "b"), "--out", str(out)]).exit_code == 0
    listed = pd.read_parquet(out)
    assert listed["customer_id"].astype(str).tolist() == ["u1", "=HYPERLINK(1)"] and listed["rank"].tolist() == [1, 2]
    top = tmp_path / "top.parquet"
    CliRunner().invoke(app, ["churn-list", "--bundle", str(tmp_path / "b"), "--top", "1", "--out", str(top)])
    assert pd.read_parquet(top)["customer_id"].astype(str).tolist() == ["u1"]
    seg = tmp_path / "seg.parquet"
    assert CliRunner().invoke(app, ["segments", "--bundle", str(tmp_path / "b"), "--out", str(seg)]).exit_code == 0
    assert pd.read_parquet(seg)["customer_id"].astype(str).tolist() == ["u1", "=HYPERLINK(1)"]


def test_the_clv_averages_its_question_over_30_60_and_90_days(tmp_path):
    """Each length's model learns from its own latest complete window; the CLV is the geometric mean of (1 + spend),
    each scaled to 90 days; P(buys) stays the 90-day model's; a length the history cannot hold is named."""
    from features.ingest import ingest, load_canonical
    from features.synthetic import ShopConfig, generate_shop
    from training.propensity.dataset import Snapshots
    from training.value.config import ValueConfig
    from training.value.train import ValuePrediction, ValueRows, evaluate_value

    paths = generate_shop(ShopConfig.preset("tiny"), tmp_path / "shop")
    ingest(paths.orders, paths.events, paths.items, tmp_path / "c")
    snaps = Snapshots(load_canonical(tmp_path / "c"))
    cfg = ValueConfig(lgbm={"min_child_samples": 5, "num_leaves": 4, "early_stopping_rounds": 30})
    rows = ValueRows(snaps, cfg)
    at = snaps.end - pd.Timedelta(days=90)
    ours = ValuePrediction.fit(rows, cfg, at, 90)
    assert sorted(ours.members) == [30, 60, 90] and ours.own is ours.members[90] and ours.skipped == {}
    X = rows.features(at, 90)
    logs = [np.log1p(m.predict(rows.features(at, d).reindex(X.index)) * 90 / d) for d, m in ours.members.items()]
    np.testing.assert_allclose(ours.spend, np.expm1(np.mean(logs, axis=0)), rtol=1e-12)
    alone = ValuePrediction.fit(rows, cfg.model_copy(update={"label_lengths": []}), at, 90)
    assert list(alone.members) == [90] and np.allclose(alone.spend, ours.own.predict(X))
    span = (snaps.end - snaps.orders["ts"].min()).days
    far = ValuePrediction.fit(rows, cfg.model_copy(update={"label_lengths": [30, span]}), at, 90)
    assert sorted(far.members) == [30, 90] and list(far.skipped) == [f"{span}d"]
    m = evaluate_value(rows, cfg, 90).metrics()
    assert m["label_lengths"] == [30, 60, 90]
