"""The group-sequential test: bounds against published values and an independent integration, alpha spent
exactly, information when outcomes mature between looks, and how a report reads its looks."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from features.experiments import Experiment, parse_variants
from training.experiments.analysis import influence, look_correlation
from training.experiments.sequential import GroupSequential, alpha_spent, bounds, chained_information


def test_obrien_fleming_bounds_match_the_published_four_look_design():
    # two-sided alpha 0.05, four equally spaced looks (gsDesign, ldbounds): 4.3326, 2.9631, 2.3590, 2.0141
    looks = bounds([0.25, 0.5, 0.75, 1.0], [1, 2, 3, 4], 0.05, "obrien_fleming")
    assert [lk.bound for lk in looks] == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-4)
    assert looks[-1].spent == pytest.approx(0.05)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_uneven_looks_spend_exactly_alpha_by_an_independent_integration(spending):
    t = np.array([0.08, 0.2, 0.21, 0.45, 0.7, 0.9, 1.0])
    info = np.array([3.0, 9, 9.5, 20, 31, 38, 41])
    b = np.array([lk.bound for lk in bounds(t, info, 0.05, spending)])
    corr = np.sqrt(np.minimum.outer(info, info) / np.maximum.outer(info, info))
    for k in (3, 7):  # by look k the test has spent alpha(t_k): the canonical joint normal, by Genz's method
        stay = multivariate_normal(np.zeros(k), corr[:k, :k]).cdf(b[:k], lower_limit=-b[:k], rng=np.random.default_rng(0))
        assert 1 - stay == pytest.approx(float(alpha_spent(t[k - 1], 0.05, spending)), abs=3e-4)


def test_a_look_with_nothing_left_to_spend_cannot_reject_and_bad_looks_are_refused():
    gs = GroupSequential(0.05)
    gs.look(1.0, 10.0)
    assert gs.look(1.0, 12.0) == np.inf and gs.looks[-1].nominal_alpha == 0.0  # alpha all spent at the horizon
    with pytest.raises(ValueError, match="information"):
        gs.look(1.0, 12.0)
    with pytest.raises(ValueError, match="spending"):
        GroupSequential(0.05, "linear")


def test_units_with_final_outcomes_give_the_usual_information():
    rho = np.sqrt(np.array([100, 250, 400]) / np.array([250, 400, 1000]))
    assert chained_information(100, rho) == pytest.approx([100, 250, 400, 1000])


def test_a_maturing_conversion_is_less_correlated_than_its_units_say():
    # 100,000 shoppers in each arm from the start; by look 1 30% bought, by look 2 40%: a shopper's
    # "bought" can only turn on, so corr = sqrt(odds_1 / odds_2) (0.80), though the units are the same
    rng = np.random.default_rng(4)
    n = 200_000
    u = rng.random(n)
    first, second = (u < 0.3).astype(float), (u < 0.4).astype(float)
    arms = (np.arange(n) % 2 == 0, np.arange(n) % 2 == 1)
    pre = np.zeros(n)
    rho = look_correlation(influence("conversion", first, pre, *arms), influence("conversion", second, pre, *arms), arms, arms)
    assert rho == pytest.approx(np.sqrt((0.3 / 0.7) / (0.4 / 0.6)), abs=0.01)
    # and a second look with twice the units, outcomes final: sqrt(1/2)
    later = np.concatenate([first, rng.random(n) < 0.3]).astype(float)
    arms2 = (np.arange(2 * n) % 2 == 0, np.arange(2 * n) % 2 == 1)
    early = tuple(np.concatenate([a, np.zeros(n, bool)]) for a in arms)
    v_early = influence("conversion", np.concatenate([first, np.zeros(n)]), np.zeros(2 * n), *early)
    rho = look_correlation(v_early, influence("conversion", later, np.zeros(2 * n), *arms2), early, arms2)
    assert rho == pytest.approx(np.sqrt(0.5), abs=0.01)


def test_the_bound_is_tighter_than_a_fixed_test_early_and_close_to_it_at_the_end():
    looks = bounds(np.arange(1, 15) / 14, np.arange(1, 15) * 1000.0, 0.05)
    z = [lk.bound for lk in looks]
    assert z[0] > 8 and all(a > b for a, b in zip(z, z[1:])) and norm.isf(0.025) < z[-1] < 2.2


def test_the_plan_is_part_of_the_experiment_and_survives_a_round_trip():
    exp = Experiment(name="plan", variants=parse_variants(["control=champion", "treatment=popular"]), salt="s")
    assert exp.planned_days == 14 and exp.planned_users is None and exp.spending == "obrien_fleming" and not exp.open_ended
    back = Experiment.model_validate_json(exp.model_copy(update={"planned_users": 5000, "spending": "pocock"}).model_dump_json())
    assert back.planned_users == 5000 and back.spending == "pocock"
    assert Experiment.model_validate({**exp.model_dump(), "planned_days": None}).open_ended
    with pytest.raises(ValueError, match="planned_days"):
        Experiment.model_validate({**exp.model_dump(), "planned_days": 0})


def test_a_plan_in_shoppers_counts_every_variant_and_spends_all_alpha_at_the_horizon():
    import pandas as pd

    from training.experiments.analysis import analyse, sequential_horizon

    rng = np.random.default_rng(2)
    n = 3000
    exp = Experiment(name="three", variants=parse_variants(["control=champion", "a=popular", "b=trending"]), salt="s",
                     planned_users=2000)
    first = np.sort(rng.uniform(0, 10 * 86_400.0, n))
    table = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "variant": rng.choice(["control", "a", "b"], n),
                          "first_ts": first, "exposures": 1.0, "clicks": 0.0, "converted": (rng.random(n) < 0.3) * 1.0,
                          "revenue": rng.gamma(1.0, 20.0, n), "pre_spend": rng.gamma(1.0, 20.0, n)})
    horizon = sequential_horizon(exp, first)
    assert horizon == first[1999]
    upto = table[table["first_ts"] <= horizon]
    report = analyse(exp, upto, now=horizon)
    seq = [c["sequential"] for c in report.comparisons if c["metric"] == "conversion"]
    assert [s["information_fraction"] for s in seq] == [1.0, 1.0]  # 2,000 of every variant's shoppers, not one pair's
    assert all(s["alpha_spent"] == pytest.approx(0.05) for s in seq)
