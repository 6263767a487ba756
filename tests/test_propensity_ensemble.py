"""The label-length ensemble of the churn and conversion models (training/propensity/ensemble.py): members trained
on their own latest complete windows, reasons that still add up, saved as numbers, and recipes registered before it."""
import json

import numpy as np
import pandas as pd
import pytest

from tests.test_propensity import SMALL_DATA, _xy, tiny  # noqa: F401  (the module's tiny-shop fixture)
from training.propensity.config import PropensityConfig
from training.propensity.dataset import Snapshots
from training.propensity.ensemble import LabelEnsemble, load_propensity_model
from training.propensity.evaluate import evaluate_target, fit_model
from training.propensity.model import PropensityModel


def _members():
    X, y = _xy(0)
    held, y_held = _xy(1, 200)
    members = {}
    for days, seed in ((90, 0), (30, 2), (60, 3)):
        Xm, ym = _xy(seed)
        members[days] = PropensityModel({"num_leaves": 4, "min_child_samples": 10}, linear_c=0.1).fit(Xm, ym, held, y_held)
    return members, held, y_held, X


def test_the_average_is_calibrated_its_reasons_add_up_and_it_reloads_from_numbers(tmp_path):
    members, held, y_held, X = _members()
    model = LabelEnsemble.fit(members, 90, held, y_held, "platt")
    raw = model.raw_score(X)
    parts = [(m.raw_score(X) - model.scale[d][0]) / model.scale[d][1] for d, m in members.items()]
    np.testing.assert_allclose(raw, np.mean(parts, axis=0), atol=1e-12)
    for d, m in members.items():  # standardised on the held-out customers
        assert model.scale[d][0] == pytest.approx(m.raw_score(held).mean())
    np.testing.assert_allclose(model.contributions(X).sum(axis=1) + model.base_score(X), raw, atol=1e-9)
    assert model.calibration_["method"] == "platt" and model.label_lengths == [30, 60, 90]
    assert model.importance().sum() == pytest.approx(1.0) and model.importance().index[0] == "recency_days"

    model.save(tmp_path / "churn")
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["30d", "60d", "90d", "ensemble.json"]
    assert not list((tmp_path / "churn").rglob("*.pkl"))
    back = load_propensity_model(tmp_path / "churn")
    assert isinstance(back, LabelEnsemble) and back.own_days == 90
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(back.contributions(X).to_numpy(), model.contributions(X).to_numpy())

    (tmp_path / "single").mkdir()
    members[90].save(tmp_path / "single")  # a bundle saved before the ensemble: one model
    assert isinstance(load_propensity_model(tmp_path / "single"), PropensityModel)
    import shutil
    shutil.rmtree(tmp_path / "churn" / "60d")
    with pytest.raises(FileNotFoundError, match="60d is missing"):
        load_propensity_model(tmp_path / "churn")


def test_each_member_learns_from_its_own_latest_complete_window(tiny):
    canonical, _ = tiny
    snaps = Snapshots(canonical)
    at = snaps.end - pd.Timedelta(days=90)
    model, fit = fit_model(snaps, "churn", SMALL_DATA, at)
    assert isinstance(model, LabelEnsemble) and model.label_lengths == [30, 60, 90] and model.own_days == 90
    assert fit.at == [at - pd.Timedelta(days=90)]  # the target's own rows, as the protocol fixes them
    alone, _ = fit_model(snaps, "churn", SMALL_DATA.model_copy(update={"label_lengths": []}), at)
    assert isinstance(alone, PropensityModel)
    np.testing.assert_array_equal(model.own.booster_.predict(fit.X), alone.booster_.predict(fit.X))  # the same own member
    # conversion (30 days) is joined by its 60- and 90-day questions, "a purchase in the next 60 / 90 days"
    conversion, _ = fit_model(snaps, "conversion", SMALL_DATA, at)
    assert conversion.label_lengths == [30, 60, 90] and conversion.own_days == 30
    m = evaluate_target(snaps, "churn", SMALL_DATA).metrics()
    assert m["label_lengths"] == [30, 60, 90] and set(m["best_iteration_by_length"]) == {"30d", "60d", "90d"}
    assert m["best_iteration"] == m["best_iteration_by_length"]["90d"]  # an int, as a single model's


def test_a_length_the_history_cannot_hold_is_left_out_and_named(tiny):
    canonical, _ = tiny
    snaps = Snapshots(canonical)
    span = (snaps.end - canonical.orders["ts"].min()).days
    cfg = SMALL_DATA.model_copy(update={"label_lengths": [30, span]})
    model, _ = fit_model(snaps, "churn", cfg, snaps.end - pd.Timedelta(days=90))
    assert model.label_lengths == [30, 90]
    assert list(model.skipped) == [f"{span}d"] and "no customer has a purchase up to" in model.skipped[f"{span}d"]
    m = evaluate_target(snaps, "churn", cfg).metrics()
    assert f"{span}d" in m["label_lengths_skipped"]


def test_label_lengths_are_checked_and_old_recipes_read_as_one_model():
    with pytest.raises(ValueError, match="at least 1 day"):
        PropensityConfig(label_lengths=[0, 30])
    assert PropensityConfig(label_lengths=[90, 30, 30]).label_lengths == [30, 90]
    old = {k: v for k, v in PropensityConfig().model_dump(mode="json").items() if k != "label_lengths"}
    assert PropensityConfig.from_recipe(old).label_lengths == []
    assert PropensityConfig.from_recipe(json.loads(json.dumps(PropensityConfig().model_dump(mode="json")))) == PropensityConfig()


def test_the_gate_compares_with_a_champion_registered_before_the_ensemble(tiny, monkeypatch):
    """A champion whose recipe has no label_lengths had one model per target: the ensemble is another recipe, so it
    replaces it only beyond noise on validation (not 'the champion's recipe again')."""
    from training.propensity import gate
    from training.tracking import Champion

    canonical, _ = tiny
    snaps = Snapshots(canonical)
    old = {k: v for k, v in SMALL_DATA.model_dump(mode="json").items() if k != "label_lengths"}
    champion = Champion(version="2", eval_key="k1", score=float("nan"), candidate=old)
    seen = []
    ours = gate.validate(snaps, SMALL_DATA)
    monkeypatch.setattr(gate, "validate", lambda s, cfg: seen.append(cfg.label_lengths) or ours)
    decision = gate.decide(snaps, SMALL_DATA, "k1", champion, ours)
    assert seen == [[]] and "evidence" in decision and not decision["promoted"]
