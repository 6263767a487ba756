"""The statistics on simulated traffic with a known truth: a smaller version of benchmarks/experiments.py
(100 runs of 5,000 shoppers over 7 days instead of 200 x 20,000 x 14), seeded."""
import numpy as np
import pytest

from training.experiments.simulate import ShopperModel, draw_population, multiplier_for_lift, study


def test_the_solved_multiplier_gives_the_true_lift_on_a_fresh_population():
    model = ShopperModel()
    m = multiplier_for_lift(model, 0.05, days=14, seed=1)
    pop = draw_population(model, 2_000_000, np.random.default_rng(99))
    conv = lambda mult: np.mean(1 - (1 - pop.visit * np.minimum(pop.buy * mult, 1)) ** 14)  # noqa: E731
    assert conv(m) / conv(1.0) - 1 == pytest.approx(0.05, abs=0.002)


def test_aa_daily_peeking_inflates_a_fixed_test_but_not_the_sequential_ones():
    aa = study(runs=100, users=5_000, days=7, lift=0.0, seed=5)
    # group-sequential over the 7 planned days: about 5% (100 runs: a binomial's spread), never more
    # than a fixed test read every day; the open-ended confidence sequence: well below
    assert aa.false_or_true_positive_sequential <= 0.10 and aa.positive_confidence_sequence <= 0.05
    assert aa.positive_naive_peeking >= 0.10 and aa.positive_naive_peeking > 2 * max(aa.false_or_true_positive_sequential, 0.01)
    by_day = aa.positive_sequential_by_day
    assert len(by_day) == 7 and list(by_day) == sorted(by_day) and by_day[0] == 0.0  # little is spent on day 1
    assert aa.srm_flagged <= 0.02 and 0.88 <= aa.coverage_final


def test_ab_a_true_lift_is_found_and_covered():
    ab = study(runs=100, users=5_000, days=7, lift=0.2, seed=6)
    assert ab.false_or_true_positive_sequential >= 0.8
    assert ab.false_or_true_positive_sequential >= ab.positive_confidence_sequence  # spends its alpha where it matters
    assert 0.88 <= ab.coverage_final <= 1.0 and ab.coverage_final_sequential >= ab.coverage_final
    assert ab.mean_lift_estimate == pytest.approx(0.2, abs=0.02)
    assert ab.cuped_width_ratio < 1.0  # the pre-period spend narrows the interval


def test_a_broken_45_55_split_is_flagged():
    broken = study(runs=100, users=5_000, days=7, lift=0.0, seed=7, split=(0.45, 0.55), expected_split=(0.5, 0.5))
    assert broken.srm_flagged >= 0.95


def test_the_aa_diagnostics_replay_the_study_and_its_decisions():
    """benchmarks/experiments_aa.py draws exactly what ``study`` draws for a seed and records the statistic the
    test compares with its bound: the same false positives (sequential, fixed once, fixed daily), significant
    exactly when |z| >= the look's bound, and a design whose own law spends about alpha."""
    from benchmarks.experiments_aa import analyse, simulate

    aa = study(runs=20, users=2_000, days=4, lift=0.0, seed=8)
    d = simulate(8, runs=20, users=2_000, days=4)
    assert d["significant"].any(axis=1).mean() == aa.false_or_true_positive_sequential
    assert (d["pvalue"][:, -1] < 0.05).mean() == aa.positive_final_fixed
    assert (d["pvalue"] < 0.05).any(axis=1).mean() == aa.positive_naive_peeking
    res = analyse(d, draws=100_000)
    assert res["significant_is_abs_z_over_bound"] and res["runs"] == 20
    assert abs(res["type1_designed_law"] - 0.05) < 0.004  # the bounds under the correlations they assume
    assert 0 <= res["fixed_once"]["ci95"][0] <= res["fixed_once"]["rate"] <= res["fixed_once"]["ci95"][1] <= 1
