"""Churn and conversion models: the PRODUCT.md protocol on Online Retail, the oracle on the
synthetic shop, determinism, save/load, reasons, MLflow + registry, publish, and the CSV export."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.ingest import ingest, load_canonical
from tests.conftest import REPO, shared_data
from training.propensity.bundle import PropensityBundle
from training.propensity.config import PropensityConfig
from training.propensity.dataset import Snapshots, fit_split, held_out
from training.propensity.evaluate import classification_metrics, evaluate_target, lift
from training.propensity.model import PropensityModel
from training.propensity.reasons import reasons

# the tiny shop has ~100 customers per date: let the trees split
SMALL_DATA = PropensityConfig(lgbm={"min_child_samples": 5, "num_leaves": 4, "early_stopping_rounds": 30})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from features.synthetic import ShopConfig, generate_shop

    out = tmp_path_factory.mktemp("tiny")
    paths = generate_shop(ShopConfig.preset("tiny"), out)
    ingest(paths.orders, paths.events, paths.items, out / "canonical")
    return load_canonical(out / "canonical"), paths.truth_dir


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    out = tmp_path_factory.mktemp("retail")
    ingest(shared_data("online-retail/onlineretail.csv.gz"), None, None, out)
    return load_canonical(out)


def test_online_retail_churn_protocol_and_peers(retail):
    """PRODUCT.md: test rows at end - 90 days (3,370 customers, 43% churn), peers 0.683 and 0.735."""
    ev = evaluate_target(Snapshots(retail), "churn", PropensityConfig())
    m = ev.metrics()
    assert m["test_at"] == "2011-09-10 12:50:00" and m["train_at"] == ["2011-06-12 12:50:00"]
    assert m["rows"] == 3370 and m["positive_rate"] == pytest.approx(0.43, abs=0.005)
    assert m["baseline_recency"]["roc_auc"] == pytest.approx(0.683, abs=0.001)
    assert m["baseline_rfm_logreg"]["roc_auc"] == pytest.approx(0.735, abs=0.001)
    assert m["roc_auc"] > 0.735, f"LightGBM churn ROC AUC {m['roc_auc']:.4f} does not beat the RFM logreg peer"
    assert m["brier"] < m["baseline_recency"]["brier"] and m["lift@10%"] > 1.3
    assert m["label_lengths"] == [30, 60, 90] and m["roc_auc"] == pytest.approx(0.746, abs=0.002)  # README's figure
    conversion = evaluate_target(Snapshots(retail), "conversion", PropensityConfig()).metrics()
    assert conversion["roc_auc"] == pytest.approx(0.752, abs=0.002)


def test_online_retail_validation_ends_before_the_test_periods(retail):
    """The champion gate's validation (README "How a model is chosen"): rows one label length before churn's test."""
    from training.propensity import gate

    v = gate.validate(Snapshots(retail), PropensityConfig())
    assert {t: str(at) for t, at in v.at.items()} == {"churn": "2011-06-12 12:50:00", "conversion": "2011-08-11 12:50:00"}
    assert {t: len(y) for t, y in v.y.items()} == {"churn": 2815, "conversion": 3212}
    auc = v.roc_auc()
    assert auc["churn"] == pytest.approx(0.763, abs=0.002) and auc["conversion"] == pytest.approx(0.760, abs=0.002)


def test_synthetic_shop_against_the_oracle(tiny):
    canonical, truth = tiny
    for target in ("churn", "conversion"):
        m = evaluate_target(Snapshots(canonical), target, SMALL_DATA, truth).metrics()
        assert "oracle" in m, m.get("oracle_note")
        assert m["oracle"]["roc_auc"] > 0.8  # the truth is informative
        assert 0.6 < m["roc_auc"] <= m["oracle"]["roc_auc"] + 0.02, (target, m["roc_auc"], m["oracle"]["roc_auc"])


def test_metrics_on_a_hand_example():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.6])
    assert lift(y, p, 0.1) == pytest.approx(1 / 0.3)  # top 1 of 10 is a positive; base rate 0.3
    assert lift(y, p, 0.2) == pytest.approx(0.5 / 0.3)
    m = classification_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(19 / 21)  # 0.9 beats all 7 negatives, 0.7 and 0.6 beat 6 and m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert np.isnan(classification_metrics(np.zeros(4), np.full(4, 0.5))["roc_auc"])


def _xy(seed, n=600):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"recency_days": rng.exponential(60, n), "frequency": rng.integers(1, 20, n).astype(float),
                      "noise": rng.normal(size=n)}, index=[f"u{i}" for i in range(n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X.recency_days - 60) / 20 + 0.1 * X.frequency))).astype(int)
    return X, y


@pytest.mark.parametrize("calibration, linear_c", [("platt", None), ("isotonic", None), ("platt", 0.1), ("isotonic", 0.1)])
def test_model_is_deterministic_and_survives_save_load(tmp_path, calibration, linear_c):
    X, y = _xy(0)
    Xh, yh = _xy(1, 200)
    X.iloc[::7, 1] = np.nan  # the linear member fills a missing value with the median (and says it was missing)
    fit = lambda: PropensityModel({"num_leaves": 4, "min_child_samples": 10}, calibration, seed=3,  # noqa: E731
                                  linear_c=linear_c).fit(X, y, Xh, yh)
    a, b = fit(), fit()
    np.testing.assert_array_equal(a.predict_proba(Xh), b.predict_proba(Xh))
    assert roc(yh, a.predict_proba(Xh)) > 0.75
    a.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["calibration"]["method"] == calibration and (tmp_path / "m" / "model.txt").read_text().startswith("tree")
    assert (meta["linear"] is None) == (linear_c is None) and (meta["blend"] is None) == (linear_c is None)
    loaded = PropensityModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(Xh), a.predict_proba(Xh), rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded.contributions(Xh).to_numpy(), a.contributions(Xh).to_numpy(), atol=1e-12)
    assert 0.0 <= a.predict_proba(Xh).min() and a.predict_proba(Xh).max() <= 1.0


def roc(y, p):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, p)


def test_model_refuses_one_class_and_tiny_holdouts_keep_the_raw_sigmoid():
    X, y = _xy(0)
    with pytest.raises(ValueError, match="one class"):
        PropensityModel().fit(X, np.zeros(len(X)), X, y)
    m = PropensityModel({"min_child_samples": 10}).fit(X, y, X.head(5), y[:5])
    assert m.calibration_["method"] == "identity"


@pytest.mark.parametrize("linear_c", [None, 0.1])
def test_contributions_sum_to_the_raw_score(linear_c):
    X, y = _xy(0)
    X.iloc[::5, 0] = np.nan
    m = PropensityModel({"num_leaves": 4, "min_child_samples": 10}, linear_c=linear_c).fit(X, y, *_xy(1, 200))
    np.testing.assert_allclose(m.contributions(X).sum(axis=1) + m.base_score(X), m.raw_score(X), atol=1e-9)
    if linear_c is None:  # the trees alone: TreeSHAP as LightGBM gives it
        full = m.booster_.predict(X, num_iteration=m.best_iteration_, pred_contrib=True)
        np.testing.assert_allclose(m.contributions(X).to_numpy(), full[:, :-1], atol=1e-12)
    else:  # the noise column matters little to either member; recency most
        c = m.contributions(X).abs().mean()
        assert c.idxmax() == "recency_days" and c["noise"] < c["recency_days"] / 3


def test_linear_member_as_scikit_learn_fits_it_and_saved_as_numbers():
    """The hand-written design (signed log, median fill with a missing flag, standardising) is what a
    scikit-learn pipeline does; the saved member answers the same."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from training.linear_member import LinearMember

    X, y = _xy(0)
    X.iloc[::4, 1] = np.nan
    X["never"] = np.nan  # a feature with no value at all: filled with 0, flagged, no weight
    member = LinearMember.fit(X, y, c=0.5, seed=1)
    ref = make_pipeline(FunctionTransformer(lambda a: np.sign(a) * np.log1p(np.abs(a))),
                        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                        StandardScaler(), LogisticRegression(C=0.5, max_iter=5000)).fit(X.to_numpy(), y)
    Xh, _ = _xy(1, 50)
    Xh["never"] = np.nan
    np.testing.assert_allclose(member.decision(Xh), ref.decision_function(Xh.to_numpy()), atol=1e-6)
    back = LinearMember.from_json(json.loads(json.dumps(member.to_json())))
    np.testing.assert_array_equal(back.decision(Xh), member.decision(Xh))
    np.testing.assert_allclose(member.contributions(Xh).sum(axis=1) + member.intercept, member.decision(Xh), atol=1e-12)
    assert member.flagged == [1, 3] and member.contributions(Xh)[:, 3].tolist() == [0.0] * 50


def test_a_model_saved_before_the_linear_member_loads_as_trees_alone(tmp_path):
    X, y = _xy(0)
    m = PropensityModel({"num_leaves": 4, "min_child_samples": 10}).fit(X, y, *_xy(1, 200))
    m.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    for key in ("linear_c", "linear", "blend"):
        del meta[key]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    old = PropensityModel.load(tmp_path / "m")
    assert old.linear_ is None
    np.testing.assert_array_equal(old.predict_proba(X), m.predict_proba(X))


def test_reasons_in_words():
    feats = pd.DataFrame({"recency_days": [95.0], "mean_gap_days": [20.0], "gap_ratio": [4.75], "spend_90d": [40.0],
                          "spend_prev_90d": [100.0], "spend_trend_90d": [-0.6], "monetary": [500.0]}, index=["u1"])
    contrib = pd.DataFrame({"recency_days": [0.5], "mean_gap_days": [0.1], "gap_ratio": [0.3], "spend_90d": [0.2],
                            "spend_prev_90d": [0.1], "spend_trend_90d": [0.0], "monetary": [-0.4]}, index=["u1"])
    assert reasons(contrib, feats, top=3)["u1"] == ["no order for 95 days, usually every 20",
                                                    "spend down 60% on the previous quarter (40 vs 100)"]
    assert reasons(contrib, feats, top=1)["u1"] == ["no order for 95 days, usually every 20"]
    visits = pd.DataFrame({"days_since_visit": [40.0], "mean_visit_gap_days": [7.0], "sessions_30d": [0.0],
                           "sessions_prev_30d": [2.0], "return_lines": [0.0], "return_share": [0.0]}, index=["u2"])
    contrib = pd.DataFrame({"days_since_visit": [0.9], "sessions_30d": [0.2], "return_lines": [0.1]}, index=["u2"])
    assert reasons(contrib, visits)["u2"] == ["no visit for 40 days, usually every 7", "no returns or cancellations so far"]


def test_held_out_customers_never_reach_the_trees(tiny):
    canonical, _ = tiny
    snaps = Snapshots(canonical)
    cfg = SMALL_DATA.model_copy(update={"snapshots": 3})
    dated = snaps.stacked([snaps.end - pd.Timedelta(days=d) for d in (90, 120, 150)], "churn", 90)
    fit, held = fit_split(dated, cfg.holdout_share, cfg.seed)
    assert len(held) > 0 and not set(held.X.index) & set(fit.X.index)
    np.testing.assert_array_equal(held_out(held.X.index, 0.2, 42), held_out(held.X.index, 0.2, 42))
    share = held_out(pd.Index([f"u{i}" for i in range(5000)]), 0.2, 42).mean()
    assert share == pytest.approx(0.2, abs=0.02)


def test_config_round_trip(tmp_path):
    cfg = PropensityConfig(horizon_days=60, window_days=14, calibration="isotonic", lgbm={"num_leaves": 5})
    cfg.dump(tmp_path / "p.yaml")
    assert PropensityConfig.load(tmp_path / "p.yaml") == cfg


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory, request):
    """Two identical runs of ``train_propensity`` into one MLflow store."""
    from training.propensity.train import train_propensity

    canonical, truth = tiny
    project = tmp_path_factory.mktemp("project")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        first = train_propensity(canonical, project, SMALL_DATA, truth, progress=lambda m: None, bundle_out=project / "b1")
        second = train_propensity(canonical, project, SMALL_DATA, truth, progress=lambda m: None, bundle_out=project / "b2")
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return project, first, second


def test_train_propensity_metrics_and_registry(trained):
    project, first, second = trained
    for target in ("churn", "conversion"):
        m = first[target]
        assert {"roc_auc", "pr_auc", "brier", "lift@10%", "baseline_recency", "baseline_rfm_logreg", "oracle"} <= set(m)
        assert set(m["baseline_rfm_logreg"]) >= {"roc_auc", "pr_auc", "brier", "lift@10%"}
    json.dumps(first)  # JSON-ready for the metrics file
    assert first["propensity"]["model_version"] == "1" and first["propensity"]["champion"]["promoted"]
    assert first["propensity"]["champion"]["reason"] == "no champion for this shop yet"
    # same data, same recipe: nothing new, so the champion stays
    assert second["propensity"]["model_version"] == "2" and not second["propensity"]["champion"]["promoted"]
    assert "same recipe and data" in second["propensity"]["champion"]["reason"]
    assert second["propensity"]["champion"]["chosen_on"] == "validation"
    assert set(second["propensity"]["champion"]["validation_roc_auc"]) == {"churn", "conversion"}
    assert second["churn"] == first["churn"] and first["churn"]["linear_c"] == 0.1  # LightGBM + logistic regression
    plots = {p.name for p in (project / "mlruns").rglob("*.png")}
    assert {"calibration.png", "gains.png", "feature_importance.png"} <= plots


def test_weighted_auc_is_sklearns_under_resample_weights():
    from sklearn.metrics import roc_auc_score

    from training.propensity.gate import weighted_auc

    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.4
    p = np.round(rng.random(500) + 0.3 * y, 2)  # many ties
    counts = rng.multinomial(500, np.full(500, 1 / 500), size=4)
    want = [roc_auc_score(y, p, sample_weight=w) for w in counts]
    np.testing.assert_allclose(weighted_auc(y, p, counts), want, rtol=0, atol=1e-12)
    assert weighted_auc(y, p, np.ones((1, 500)))[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def _shifted(canonical, after):
    """The same shop with every order and event after ``after`` changed (bought by other customers, doubled quantities,
    no events), its last order kept where it was so that the end of the data does not move."""
    from features.ingest import Canonical

    rng = np.random.default_rng(0)
    orders, events = canonical.orders.copy(), canonical.events.copy()
    late = orders["ts"] > after
    late.iloc[orders["ts"].argmax()] = False
    orders.loc[late, "user_id"] = rng.choice(orders["user_id"].unique(), int(late.sum()))
    orders.loc[late, "quantity"] = orders.loc[late, "quantity"] * 2
    events = events[events["ts"] <= after]
    return Canonical(events=events, orders=orders, items=canonical.items)


def test_the_champion_gate_never_reads_the_test_periods(tiny):
    """Validation ends where the earliest test period begins: changing every label after it changes nothing."""
    from training.propensity import gate

    canonical, _ = tiny
    snaps = Snapshots(canonical)
    cut = gate.validation_end(snaps, SMALL_DATA)
    assert cut == snaps.end - pd.Timedelta(days=90)  # churn's test labels start there; conversion's 60 days later
    before = gate.validate(snaps, SMALL_DATA)
    changed = Snapshots(_shifted(canonical, cut))
    assert changed.end == snaps.end
    after = gate.validate(changed, SMALL_DATA)
    for t in ("churn", "conversion"):
        np.testing.assert_array_equal(before.y[t], after.y[t])
        np.testing.assert_array_equal(before.p[t], after.p[t])
        assert before.at[t] + pd.Timedelta(days=SMALL_DATA.days(t)) == cut
    # while the test period does see the change
    assert evaluate_target(snaps, "churn", SMALL_DATA).y.tolist() != evaluate_target(changed, "churn", SMALL_DATA).y.tolist()


def test_the_champion_gate_rule(tiny, monkeypatch):
    """First bundle: champion; the champion's recipe again: nothing new on the same data, fresher on newer data;
    another recipe: only when better beyond noise on validation (paired bootstrap over customers)."""
    from training.propensity import gate
    from training.tracking import Champion

    canonical, _ = tiny
    snaps = Snapshots(canonical)
    ours = gate.validate(snaps, SMALL_DATA)
    rng = np.random.default_rng(1)
    noise = gate.Validation(ours.y, {t: rng.random(len(ours.y[t])) for t in ours.y}, ours.at)  # no skill at all
    other = SMALL_DATA.model_copy(update={"seed": 7})
    champion = Champion(version="4", eval_key="k1", score=float("nan"), candidate=SMALL_DATA.model_dump(mode="json"))

    assert gate.decide(snaps, SMALL_DATA, "k1", None, ours) | {"chosen_on": "validation"} == {
        "promoted": True, "reason": "no champion for this shop yet", "chosen_on": "validation"}
    assert not gate.decide(snaps, SMALL_DATA, "k1", champion, ours)["promoted"]
    assert gate.data_end("propensity-v1:abc:end=2011-12-09 12:50:00:h=90:w=30") == pd.Timestamp("2011-12-09 12:50")
    later = Champion(version="4", eval_key=f"p:d:end={snaps.end + pd.Timedelta(days=1)}:h=90:w=30", score=float("nan"),
                     candidate=champion.candidate)
    assert not gate.decide(snaps, SMALL_DATA, "k2", later, ours)["promoted"]  # the champion saw more: it stays
    earlier = Champion(version="4", eval_key=f"p:d:end={snaps.end - pd.Timedelta(days=1)}:h=90:w=30", score=float("nan"),
                       candidate=champion.candidate)
    assert gate.decide(snaps, SMALL_DATA.model_copy(update={"end": snaps.end}), "k2", earlier, ours)["promoted"]
    same_end = Champion(version="4", eval_key=f"p:other-digest:end={snaps.end}:h=90:w=30", score=float("nan"),
                        candidate=champion.candidate)
    corrected = gate.decide(snaps, SMALL_DATA, "k2", same_end, ours)
    assert corrected["promoted"] and "(a correction)" in corrected["reason"]

    monkeypatch.setattr(gate, "validate", lambda s, cfg: noise)  # the champion's recipe, as validated
    won = gate.decide(snaps, other, "k1", champion, ours)
    assert won["promoted"] and won["evidence"]["low"] > 0 and "beyond noise" in won["reason"]
    monkeypatch.setattr(gate, "validate", lambda s, cfg: ours)
    lost = gate.decide(snaps, other, "k1", champion, noise)
    assert not lost["promoted"] and lost["evidence"]["high"] < 0 and "champion stays" in lost["reason"]
    same = gate.decide(snaps, other, "k1", champion, ours)  # as good, not better: the champion stays
    assert not same["promoted"] and same["evidence"]["diff"] == 0
    short = gate.decide(snaps, other, "k1", champion, "no customer has a purchase up to ...")
    assert not short["promoted"] and "no validation period" in short["reason"]
    reasons = gate.decide(snaps, SMALL_DATA.model_copy(update={"top_reasons": 5}), "k1", champion, ours)
    assert reasons["promoted"] and "with 5 reasons per customer instead of 3" in reasons["reason"]
    shorter = gate.decide(snaps, other.model_copy(update={"horizon_days": 60}), "k3", champion, ours)  # not validated again
    assert shorter["promoted"] and "a new question: churn over 60 days" in shorter["reason"]


def test_shoprec_champion_lists_the_propensity_bundles(trained):
    """``shoprec champion`` in the project: each shop's churn and conversion versions, champion marked, both scores."""
    project, first, _ = trained
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "training.cli", "champion"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    head = lines.index("shop (churn and conversion, shoprec-propensity): champion v1")
    val = f"{np.mean(list(first['propensity']['champion']['validation_roc_auc'].values())):.6f}"
    assert lines[head + 1].split() == ["*", "v1", "val", f"roc_auc={val}", "test", f"roc_auc={first['propensity']['score']:.6f}"]
    assert lines[head + 2].split()[0] == "v2"


def test_shoprec_train_trains_the_configs_propensity_recipe(tiny, tmp_path, monkeypatch):
    """``configs/train.yaml``'s ``propensity`` section is the recipe ``shoprec train`` hands to the churn and
    conversion training (after the recommender, or after a small shop's fallback)."""
    import training.propensity.train as propensity_train
    from training.config import TrainConfig
    from training.train import TrainOutcome, finish

    seen = []
    monkeypatch.setattr(propensity_train, "train_propensity",
                        lambda canonical, project, config, **kw: seen.append(config) or {"propensity": {"ok": True}})
    recipe = TrainConfig.model_validate({"propensity": {"snapshots": 3, "calibration": "isotonic"}}).propensity
    out = finish(tiny[0], tmp_path, "shop", None, None, lambda m: None, TrainOutcome({}, "r", "1", True, ""), recipe)
    assert seen == [recipe] and out.metrics["propensity"] == {"ok": True}


def test_same_data_gives_the_same_scores(trained):
    project, _, _ = trained
    a, b = (PropensityBundle.load(project / name, with_models=True) for name in ("b1", "b2"))
    pd.testing.assert_frame_equal(a.scores, b.scores)
    assert (project / "b1" / "churn" / "90d" / "model.txt").read_text() == (project / "b2" / "churn" / "90d" / "model.txt").read_text()
    s = a.scores
    assert s["user_id"].is_unique and s["churn_probability"].between(0, 1).all()
    np.testing.assert_allclose(s["value_at_risk"], s["churn_probability"] * s["expected_spend"])
    assert s["value_at_risk"].is_monotonic_decreasing and s["reasons"].map(len).max() <= 3


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_churn_list_csv(trained, tmp_path):
    from training.cli_propensity import churn_list

    import typer

    app = typer.Typer()
    app.command("churn-list")(churn_list)
    app.callback()(lambda: None)
    project, _, _ = trained
    bundle = PropensityBundle.load(project / "b1")
    segment = bundle.scores["segment"].value_counts().index[0]
    out = tmp_path / "list.csv"
    result = CliRunner().invoke(app, ["churn-list", "--bundle", str(project / "b1"), "--top", "5", "--min-prob", "0.3",
                                      "--segment", segment, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _read_csv(out)
    assert list(rows[0]) == ["rank", "customer_id", "churn_probability_90d", "value_at_risk_90d", "expected_spend_90d",
                             "clv_90d", "purchase_probability_30d", "segment", "lifecycle_stage", "days_since_last_order",
                             "orders", "total_spend", "reasons"]
    expected = bundle.scores[(bundle.scores.churn_probability >= 0.3) & (bundle.scores.segment == segment)].head(5)
    assert [r["customer_id"] for r in rows] == expected["user_id"].tolist() and 0 < len(rows) <= 5
    assert all(r["segment"] == segment and float(r["churn_probability_90d"]) >= 0.3 for r in rows)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    values = [float(r["value_at_risk_90d"]) for r in rows]
    assert values == sorted(values, reverse=True) and all(r["reasons"] for r in rows)
    bad = CliRunner().invoke(app, ["churn-list", "--bundle", str(project / "b1"), "--segment", "vip", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown segment 'vip'" in bad.output


@pytest.mark.parametrize("suffix", [".csv.gz", ".parquet", ".jsonl"])
def test_churn_list_follows_the_file_name(trained, tmp_path, suffix):
    """The same list in each format the name says; only the spreadsheet's CSV guards cells against formulas."""
    from features.errors import InputError
    from features.readers import read_raw
    from training.cli_propensity import churn_list

    import typer

    app = typer.Typer()
    app.command("churn-list")(churn_list)
    app.callback()(lambda: None)
    project, _, _ = trained
    args = ["churn-list", "--bundle", str(project / "b1"), "--top", "7", "--out"]
    assert CliRunner().invoke(app, [*args, str(tmp_path / "list.csv")]).exit_code == 0
    result = CliRunner().invoke(app, [*args, str(tmp_path / f"list{suffix}")])
    assert result.exit_code == 0, result.output
    spreadsheet, other = read_raw(tmp_path / "list.csv"), read_raw(tmp_path / f"list{suffix}")
    assert list(other.columns) == list(spreadsheet.columns) and len(other) == 7
    assert other["customer_id"].astype(str).tolist() == [c.lstrip("'") for c in spreadsheet["customer_id"]]
    if suffix == ".parquet":
        assert other["churn_probability_90d"].dtype == "float64"
    refused = CliRunner().invoke(app, [*args, str(tmp_path / "list.xlsx")])
    assert isinstance(refused.exception, InputError) and "cannot tell the table format" in str(refused.exception)
    assert not (tmp_path / "list.xlsx").exists()


PUBLISH_AND_LIST = """
import sys
from pathlib import Path
from typer.testing import CliRunner
from training.cli import app
from training.propensity.publish import publish_propensity
first, again = publish_propensity(Path(sys.argv[1])), publish_propensity(Path(sys.argv[1]))
assert first.tag == again.tag, "publishing the same version twice stores it once"
import bentoml
from training.propensity.publish import store_propensity_bundle
store_propensity_bundle(Path(first.path), {"registry_version": "99"})  # another shop's bundle published since
back = publish_propensity(Path(sys.argv[1]))
assert back.tag != first.tag and bentoml.models.get("shoprec-propensity:latest").tag == back.tag, "the champion is the latest again"
print("published", first.info.labels["registry_version"])
result = CliRunner().invoke(app, ["churn-list", "--top", "3", "--out", sys.argv[2]])
print(result.output)
sys.exit(result.exit_code)
"""


def test_publish_then_churn_list_from_the_store(trained, tmp_path):
    """``shoprec publish`` stores the champion; ``shoprec churn-list`` reads it from the store."""
    project, _, _ = trained
    env = dict(os.environ, BENTOML_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-c", PUBLISH_AND_LIST, str(project), str(tmp_path / "top.csv")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "published 1" in out.stdout  # the champion (v1), not the newest version (v2)
    import re

    assert re.search(r"model version \S+/v1,", out.stdout), out.stdout  # named as the service names it: <shop>/v1
    assert len(_read_csv(tmp_path / "top.csv")) == 3


def test_a_shop_too_short_for_churn_is_told_how_much_history_it_needs(tiny, tmp_path):
    """The skip said only "no customer has a purchase up to <date>": now also what the models need and what the
    shop has."""
    from training.train import TrainOutcome, finish

    canonical, _ = tiny
    short = canonical.orders[canonical.orders["ts"] > canonical.orders["ts"].max() - pd.Timedelta(days=60)]
    said = []
    out = finish(type(canonical)(canonical.events, short, canonical.items), tmp_path, "shop", None, None, said.append,
                 TrainOutcome({}, "r", "1", True, ""))
    skipped = out.metrics["propensity"]["skipped"]
    assert skipped.startswith("they learn from customers scored two churn horizons (180 days) before the end, and the "
                              "orders span 59 days: ") and any(m.startswith("churn and conversion models skipped: they")
                                                               for m in said)


def test_one_item_reads_as_one_item():
    from training.propensity.reasons import _breadth

    assert _breadth({"distinct_items": 1.0, "repeat_item_share": 1.0}) == "1 item only, bought more than once"
    assert _breadth({"distinct_items": 1.0, "repeat_item_share": 0.0}) == "1 item only, bought once"
    assert _breadth({"distinct_items": 4.0, "repeat_item_share": 0.5}) == "4 different items, 50% of them bought more than once"
