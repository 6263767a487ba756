"""Choosing and gating on validation evidence: ties go to the simpler recipe, the champion's
recipe stays unless beaten beyond noise, and the test period is never an input."""
import numpy as np

from features.interactions import InteractionConfig
from training.config import Candidate
from training.recommenders.als import ALSConfig
from training.recommenders.popular import PopularConfig
from training.selection import Trial, choose, gate, paired_bootstrap, same_recipe

rng = np.random.default_rng(0)
BASE = rng.random(2000)
POPULAR = Candidate(name="popular", model=PopularConfig())
TRENDING = Candidate(name="trending", interactions=InteractionConfig(half_life_days=7), model=PopularConfig(count="weight"))
ALS = Candidate(name="als", model=ALSConfig())


def trial(candidate, per_user):
    return Trial(candidate, {"ndcg@10": float(np.mean(per_user))}, np.asarray(per_user, float), "test")


def test_best_wins_when_clearly_better():
    chosen, detail = choose({"popular": trial(POPULAR, BASE), "als": trial(ALS, BASE + 0.05)})
    assert chosen == "als" and detail["best"] == "als"


def test_a_tie_within_the_noise_goes_to_the_simpler_recipe():
    noisy = BASE + rng.normal(0, 0.2, len(BASE)) + 0.001  # better by far less than one standard error
    chosen, detail = choose({"als": trial(ALS, noisy), "trending": trial(TRENDING, BASE)})
    assert detail["best"] == "als" and chosen == "trending" and "simpler" in detail["reason"]


def test_gate_keeps_the_champion_recipe_unless_beaten_beyond_noise():
    champion = trial(TRENDING.model_copy(update={"name": "champion.trending"}), BASE)
    slightly = trial(ALS, BASE + rng.normal(0, 0.2, len(BASE)) + 0.002)
    clearly = trial(ALS, BASE + 0.03)
    assert gate(slightly, champion)["keep_incumbent"]
    decision = gate(clearly, champion)
    assert not decision["keep_incumbent"] and decision["evidence"]["low"] > 0
    assert not gate(clearly, None)["keep_incumbent"]
    assert gate(trial(TRENDING, BASE), champion)["same_recipe"]  # same recipe under another name


def test_bootstrap_is_seeded_and_brackets_the_mean():
    a, b = BASE + 0.01, BASE
    first, second = paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=3)
    assert first == second and first["low"] <= first["diff"] <= first["high"]


def test_same_recipe_ignores_names():
    assert same_recipe(ALS, ALS.model_copy(update={"name": "other"}))
    assert not same_recipe(ALS, ALS.model_copy(update={"model": ALSConfig(factors=8)}))
