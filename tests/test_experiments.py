"""Experiments: definitions, sticky assignment, the event-store log, attribution and the analysis."""
import json
from dataclasses import astuple

import numpy as np
import pandas as pd
import pytest

from features.experiments import Experiment, ExperimentError, Variant, assign, parse_variants
from features.exposures import Exposure, ExposureWriter, Outcome, SQLiteExperimentLog, open_experiment_log
from training.experiments.analysis import analyse, confidence_sequence, daily_unit_tables, srm_check, unit_table

DAY = 86_400.0


def experiment(name="ab", split="50/50", coverage=1.0, **kw) -> Experiment:
    return Experiment(name=name, variants=parse_variants(["control=champion", "treatment=popular"], split),
                      salt=kw.pop("salt", name), coverage=coverage, **kw)


def test_assignment_is_a_pure_function_of_salt_and_unit():
    exp = experiment()
    first = [assign(exp, f"u{i}").name for i in range(2000)]
    assert first == [assign(experiment(), f"u{i}").name for i in range(2000)]  # another process, same answer
    share = first.count("treatment") / len(first)
    assert 0.46 < share < 0.54
    reshuffled = [assign(experiment(salt="other"), f"u{i}").name for i in range(2000)]
    assert 0.4 < np.mean([a != b for a, b in zip(first, reshuffled)]) < 0.6
    assert assign(exp, "") is None  # no unit id: champion, no experiment


def test_ramping_up_keeps_everyone_in_their_variant():
    small, big = experiment(coverage=0.2), experiment(coverage=0.6)
    inside = {u: assign(small, u) for u in (f"u{i}" for i in range(3000))}
    inside = {u: v.name for u, v in inside.items() if v is not None}
    assert 0.17 < len(inside) / 3000 < 0.23
    assert all(assign(big, u).name == v for u, v in inside.items())
    assert sum(assign(big, f"u{i}") is not None for i in range(3000)) / 3000 == pytest.approx(0.6, abs=0.03)


def test_a_90_10_split_is_honoured():
    exp = experiment(split="90/10")
    names = [assign(exp, f"s{i}").name for i in range(5000)]
    assert names.count("treatment") / 5000 == pytest.approx(0.1, abs=0.015)


@pytest.mark.parametrize("specs, split, message", [
    (["control=champion"], None, "at least two"),
    (["control=champion", "treatment"], None, "NAME=ARM"),
    (["control=champion", "treatment=popular"], "50/x", "--split"),
    (["control=champion", "treatment=popular"], "50/30/20", "2 positive numbers"),
    (["control=champion", "treatment=no such thing!"], None, "variant arm"),
])
def test_bad_definitions_name_the_field(specs, split, message):
    with pytest.raises(ExperimentError, match=message) as refused:
        parse_variants(specs, split)
    assert "validation error" not in str(refused.value) and "pydantic" not in str(refused.value)  # not its banner


def test_variant_arms():
    assert Variant(name="t", arm="v3", weight=1).kind == "model"
    assert Variant(name="t", arm="@challenger", weight=1).kind == "model"
    with pytest.raises(ValueError, match="variant arm"):
        Variant(name="t", arm="shoprec-recommender", weight=1)  # neither a policy, a version nor NAME:VERSION
    assert Variant(name="t", arm="trending", weight=1).kind == "policy"
    assert Variant(name="t", arm="champion", weight=1).kind == "champion"


@pytest.fixture(params=["sqlite", "redis"])
def log_store(request, tmp_path):
    if request.param == "sqlite":
        store = open_experiment_log(f"sqlite:///{tmp_path}/events.db")
        yield store
        store.close()
    else:
        from tests.redis_server import redis_server

        with redis_server(tmp_path) as url:
            store = open_experiment_log(url)
            yield store
            store.close()


def test_the_log_keeps_experiments_exposures_and_outcomes(log_store):
    exp = experiment(created_at="2026-01-01T00:00:00+00:00")
    log_store.put_experiment(exp, new=True)
    with pytest.raises(ExperimentError, match="exists already"):
        log_store.put_experiment(exp, new=True)
    log_store.put_experiment(exp.model_copy(update={"status": "stopped"}))
    assert [e.status for e in log_store.experiments()] == ["stopped"]
    writer = ExposureWriter(log_store)
    for i in range(25):
        writer.put(Exposure(f"r{i}", "ab", "control", f"u{i}", f"u{i}", "recommend", ("i1", "i2"), 1000.0 + i))
    writer.flush()
    log_store.add_outcomes([Outcome("r3", "u3", "purchase", "i1", 12.5, 1100.0), Outcome(None, "u4", "view", "i2", 0.0, 1200.0)])
    ex = log_store.exposures("ab")
    assert len(ex) == 25 and list(ex["request_id"][:2]) == ["r0", "r1"] and ex["items"][0] == '["i1", "i2"]'
    out = log_store.outcomes()
    assert out["value"].tolist() == [12.5, 0.0] and out["request_id"].tolist()[0] == "r3" and out["request_id"].isna().tolist()[1]
    assert log_store.purchase_counts(since=0) == {"i1": 1}
    # only the columns a report reads (the shown items are most of the bytes), in the log's order
    assert log_store.exposures("ab", columns=["ts", "request_id"]).equals(ex[["request_id", "ts"]])
    assert list(log_store.outcomes(since=1150.0, columns=["value", "ts"]).itertuples(index=False)) == [(0.0, 1200.0)]
    with pytest.raises(ValueError, match="no such column in the experiment log: \\['price'\\]"):
        log_store.outcomes(columns=["price", "ts"])
    assert log_store.forget("u3") == 2  # its exposure and its purchase
    writer.close()


def test_what_a_report_reads_changes_with_each_row_it_reads(log_store):
    """``rows_read_by`` (the page keeps a stopped experiment's report while it is unchanged): an exposure, an
    outcome in the range, a deletion each change it; SQLite reads outcomes by time, so one outside it does not."""
    log_store.add_exposures([Exposure("r1", "ab", "control", "u1", "u1", "recommend", ("i1",), 10_000.0)])
    seen = [log_store.rows_read_by("ab", 1_000.0, 20_000.0)]
    assert log_store.rows_read_by("ab", 1_000.0, 20_000.0) == seen[0]
    for change in (lambda: log_store.add_exposures([Exposure("r2", "ab", "treatment", "u2", "u2", "recommend", ("i1",), 10_001.0)]),
                   lambda: log_store.add_outcomes([Outcome(None, "u1", "purchase", "i1", 5.0, 9_500.0)]),
                   lambda: log_store.forget("u2")):
        change()
        seen.append(log_store.rows_read_by("ab", 1_000.0, 20_000.0))
        assert seen[-1] != seen[-2]
    log_store.add_outcomes([Outcome(None, "u1", "purchase", "i1", 5.0, 50_000.0)])  # after the range
    assert (log_store.rows_read_by("ab", 1_000.0, 20_000.0) == seen[-1]) == isinstance(log_store, SQLiteExperimentLog)
    assert log_store.rows_read_by("ab", 1_000.0, 20_000.0) != log_store.rows_read_by("other", 1_000.0, 20_000.0)


def test_kept_report_rows_equal_the_log_read_whole_and_read_only_what_is_new(log_store):
    """``ReportRows`` (a running experiment's rows, kept by the marketers' page between loads) equals reading the
    log whole after every change: exposures and outcomes added (one before the pre-period, left out), a shopper
    forgotten (everything read again), an earlier first exposure (the pre-period moves); and a read with nothing
    new asks the log for no rows. The report built from them is the report built from the log."""
    from training.experiments.analysis import EXPOSURE_USED, OUTCOME_USED
    from training.experiments.report import build_report, report_rows

    exp = experiment(planned_days=14)
    log_store.put_experiment(exp, new=True)
    pre = 30 * DAY
    rows, fetched = report_rows(exp), []

    def counted(read):  # the rows each read asks the log for
        def counting(*args):
            got = read(*args)
            fetched.append(len(got[0]))
            return got
        return counting

    log_store.exposures_after = counted(log_store.exposures_after)
    log_store.outcomes_after = counted(log_store.outcomes_after)

    def whole():
        ex = log_store.exposures("ab", columns=EXPOSURE_USED)
        return ex, log_store.outcomes(since=float(ex["ts"].min()) - pre, columns=OUTCOME_USED)

    def same():  # the kept rows equal the whole log's; returns the rows each of the read's two asks fetched
        fetched.clear()
        kept = rows.read(log_store)
        asked = list(fetched)
        for a, b in zip(kept, whole()):
            pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
        return asked

    t0 = 100 * DAY
    log_store.add_outcomes([Outcome(None, "u1", "purchase", "i1", 7.0, t0 - 2 * DAY),  # pre-period spend
                            Outcome(None, "u9", "purchase", "i1", 3.0, t0 - 40 * DAY)])  # before it: left out
    log_store.add_exposures([Exposure(f"r{i}", "ab", "control" if i % 2 else "treatment", f"u{i}", f"u{i}", "recommend",
                                      ("i1",), t0 + i * 3600.0) for i in range(1, 7)])
    assert same() == [6, 1]  # the purchase 40 days before is outside the pre-period
    assert same() == [0, 0]  # nothing new: no rows fetched
    log_store.add_exposures([Exposure("r7", "ab", "control", "u7", "u7", "recommend", ("i1",), t0 + 2 * DAY)])
    log_store.add_outcomes([Outcome("r7", "u7", "purchase", "i1", 11.0, t0 + 2 * DAY + 60),
                            Outcome(None, "u2", "purchase", "i1", 4.0, t0 + DAY)])
    assert same() == [1, 2]  # only the new rows
    log_store.forget("u1")  # the first exposure and the pre-period purchase go: read again, later start
    assert same() == [6, 2]

    def report(at, **kw):  # as JSON (an arm without units has NaN figures)
        return json.dumps(build_report(exp, log_store, as_of=at, **kw).to_dict(), sort_keys=True)

    running = report(t0 + 3 * DAY, rows=rows)
    assert running == report(t0 + 3 * DAY) and '"units": 3' in running  # both arms, a purchase each
    log_store.add_exposures([Exposure("r0", "ab", "treatment", "u0", "u0", "recommend", ("i1",), t0 - 35 * DAY)])
    same()  # an earlier first exposure: the pre-period reaches the purchase at t0 - 40 days
    assert 3.0 in rows.read(log_store)[1]["value"].tolist()
    at = t0 + 3 * DAY
    assert report(at, rows=rows) == report(at)
    with pytest.raises(ValueError, match="rows: kept for 'ab'"):
        build_report(experiment(name="other"), log_store, rows=rows)


def test_the_writer_sleeps_only_after_an_exposure_and_commits_within_every_s(log_store, monkeypatch):
    """Idle, the writer thread waits on the queue (no wake-up every 20 ms in a server without experiments);
    an exposure wakes it once, and what the next ``every_s`` brings joins that commit."""
    import time as real_time
    from types import SimpleNamespace

    import features.exposures as exposures

    naps = []
    monkeypatch.setattr(exposures, "time", SimpleNamespace(sleep=lambda s: (naps.append(s), real_time.sleep(s)),
                                                           time=real_time.time))
    writer = ExposureWriter(log_store, every_s=0.05)
    real_time.sleep(0.3)
    assert naps == []  # idle: no wake-ups
    for i in range(3):
        writer.put(Exposure(f"r{i}", "ab", "control", f"u{i}", f"u{i}", "recommend", ("i1",), 1000.0 + i))
    deadline = real_time.monotonic() + 5
    while len(log_store.exposures("ab")) < 3 and real_time.monotonic() < deadline:
        real_time.sleep(0.01)
    assert len(log_store.exposures("ab")) == 3 and naps == [0.05]  # one wake, one commit of all three
    writer.close()
    assert naps == [0.05]


def test_flushed_exposures_survive_a_killed_process_and_outcomes_keep_full_sync(tmp_path):
    """Exposures commit with synchronous=NORMAL under WAL (features/exposures.py): once the writer has
    committed them they survive the process being killed (SIGKILL: no atexit, no close); experiments and
    outcomes keep synchronous=FULL."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "events.db"
    child = (
        "import os, signal, sys\n"
        "from features.exposures import Exposure, ExposureWriter, Outcome, open_experiment_log\n"
        f"store = open_experiment_log('sqlite:///{db}')\n"
        "writer = ExposureWriter(store)\n"
        "for i in range(40):\n"
        "    writer.put(Exposure(f'r{i}', 'ab', 'control', f'u{i}', f'u{i}', 'recommend', ('i1',), 1000.0 + i))\n"
        "writer.flush()\n"
        "store.add_outcomes([Outcome('r1', 'u1', 'purchase', 'i1', 9.5, 1100.0)])\n"
        "sys.stdout.write(f'{store._db.execute(\"PRAGMA synchronous\").fetchone()[0]} '\n"
        "                 f'{store._exposure_db.execute(\"PRAGMA synchronous\").fetchone()[0]}\\n')\n"
        "sys.stdout.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert res.stdout.split() == ["2", "1"]  # FULL for outcomes and experiments, NORMAL for exposures
    store = open_experiment_log(f"sqlite:///{db}")
    try:
        ex = store.exposures("ab")
        assert ex["request_id"].tolist() == [f"r{i}" for i in range(40)] and ex["ts"].tolist()[-1] == 1039.0
        assert store.outcomes()["value"].tolist() == [9.5]
    finally:
        store.close()


def _frames(exposures, outcomes):
    ex = pd.DataFrame(exposures, columns=["request_id", "experiment", "variant", "unit_id", "user_id", "endpoint", "items", "ts"])
    out = pd.DataFrame(outcomes, columns=["request_id", "user_id", "event_type", "item_id", "value", "ts"])
    return ex, out


def test_attribution_by_request_id_then_by_user_within_the_window():
    exp = experiment(attribution_days=7)
    t0 = 100 * DAY
    ex, out = _frames(
        [("r1", "ab", "control", "a", "a", "recommend", "[]", t0), ("r2", "ab", "control", "a", "a", "recommend", "[]", t0 + DAY),
         ("r3", "ab", "treatment", "b", "b", "recommend", "[]", t0), ("rx", "other", "treatment", "c", "c", "recommend", "[]", t0)],
        [("r1", "a", "view", "i1", 0.0, t0 + 10),  # a click on r1
         ("r1", "a", "purchase", "i1", 10.0, t0 + 20),  # by request id
         (None, "a", "purchase", "i2", 5.0, t0 + 7.5 * DAY),  # by user: 6.5 days after r2
         ("r3", "b", "purchase", "i1", 99.0, t0 + 8 * DAY),  # its exposure was 8 days before: not counted
         (None, "b", "purchase", "i3", 3.0, t0 - DAY),  # before the experiment: pre-period spend
         ("rx", "c", "purchase", "i1", 7.0, t0 + 5),  # c was never in this experiment
         ("r3", "b", "view", "i9", 0.0, t0 + 20 * DAY)])  # a click after the window
    table = unit_table(exp, ex, out).set_index("unit_id")
    assert table.loc["a", ["exposures", "clicks", "converted", "revenue", "pre_spend"]].tolist() == [2, 1, 1, 15.0, 0.0]
    assert table.loc["b", ["exposures", "clicks", "converted", "revenue", "pre_spend"]].tolist() == [1, 0, 0, 0.0, 3.0]
    assert "c" not in table.index


def test_the_daily_looks_in_one_pass_are_the_unit_tables_cut_at_each_look(tmp_path):
    """``daily_unit_tables`` (one pass for all the looks of the sequential test) gives, look by look, what
    ``unit_table`` gives on the logs cut at that time: simulated traffic plus the awkward cases (an
    outcome logged before the exposure it names, credited by user until that exposure is logged; a
    request id logged twice, which counts once; no user id; no value; another experiment's request id; a
    click after the window)."""
    from training.experiments.simulate import traffic

    exp = experiment(attribution_days=3)
    t0 = 100 * DAY
    exposures, outcomes = traffic(exp, users=1_500, days=8, lift=0.05, seed=5, start=t0)
    store = open_experiment_log(f"sqlite:///{tmp_path}/events.db")
    try:
        store.add_exposures(exposures)
        store.add_outcomes(outcomes)
        extra_ex, extra_out = _frames(
            [("late", "ab", "control", "zz", "zz", "recommend", "[]", t0 + 4.5 * DAY),
             ("twice", "ab", "treatment", "yy", "yy", "recommend", "[]", t0 + 1.2 * DAY),
             ("twice", "ab", "treatment", "yy", "yy", "recommend", "[]", t0 + 2.7 * DAY),
             ("anon", "ab", "control", "s-1", "", "session", "[]", t0 + 0.3 * DAY),
             ("later", "ab", "treatment", "yy", "yy", "recommend", "[]", t0 + 3.5 * DAY)],
            [("late", "zz", "purchase", "i1", 4.0, t0 + 2.5 * DAY),  # before the exposure it names: by user until then
             ("nope", "zz", "purchase", "i1", 6.0, t0 + 1.1 * DAY),  # zz not exposed yet: no credit
             ("twice", "yy", "purchase", "i2", 8.0, t0 + 3.0 * DAY),
             ("twice", "yy", "view", "i2", 0.0, t0 + 1.5 * DAY),
             (None, "yy", "purchase", "i3", None, t0 + 2.0 * DAY),  # no value: converts, adds no revenue
             ("anon", "", "view", "i4", 0.0, t0 + 0.4 * DAY),
             (None, "", "purchase", "i4", 5.0, t0 + 0.5 * DAY),  # no user id: never credited by user
             ("rx", "yy", "purchase", "i5", 2.0, t0 + 2.2 * DAY),  # another experiment's request id: by user
             ("later", "yy", "purchase", "i6", 3.0, t0 + 2.0 * DAY + 60),  # by user until "later" is logged
             ("twice", "yy", "view", "i2", 0.0, t0 + 7.9 * DAY)])  # after the window of both exposures
        ex = pd.concat([store.exposures("ab"), extra_ex.astype(store.exposures("ab").dtypes)], ignore_index=True)
        out = pd.concat([store.outcomes(), extra_out.astype(store.outcomes().dtypes)], ignore_index=True)
    finally:
        store.close()
    assert t0 <= float(ex["ts"].min()) < t0 + DAY
    ends = t0 + DAY * np.arange(1, 9) - 1.0
    tables = daily_unit_tables(exp, ex, out, ends)
    assert len(tables) == len(ends) and tables[-1]["converted"].sum() > 20
    for end, table in zip(ends, tables):
        expected = unit_table(exp, ex[ex["ts"] <= end], out[out["ts"] <= end], until=end)
        pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9, atol=1e-9)
    by_unit = tables[3].set_index("unit_id")  # day 4: zz not exposed yet; yy: "twice" counts once, one click
    assert "zz" not in by_unit.index
    assert by_unit.loc["yy", ["exposures", "clicks", "converted", "revenue"]].tolist() == [2.0, 1.0, 1.0, 10.0]
    assert tables[-1].set_index("unit_id").loc["zz", ["exposures", "converted"]].tolist() == [1.0, 0.0]
    assert tables[2].set_index("unit_id").loc["yy", "revenue"] == pytest.approx(5.0)  # 2.0 + 3.0 by user, one without value


def test_the_sequential_looks_do_not_depend_on_the_order_of_a_looks_rows():
    """The looks' tables are prefixes of the current one (units in first-exposure order), which the
    sequential test reads as slices; tables in any other order are matched unit by unit, to the same result."""
    from training.experiments.analysis import sequential_looks
    from training.experiments.simulate import traffic

    exp = experiment()
    exposures, outcomes = traffic(exp, users=1_500, days=6, lift=0.2, seed=8, start=100 * DAY)
    ex, out = _frames([astuple(e) for e in exposures], [astuple(o) for o in outcomes])
    ends = 100 * DAY + DAY * np.arange(1, 7) - 1.0
    looks = list(zip(ends, daily_unit_tables(exp, ex, out, ends)))
    assert all(looks[i][1]["unit_id"].tolist() == looks[-1][1]["unit_id"].tolist()[: len(looks[i][1])] for i in range(6))
    rng = np.random.default_rng(0)
    shuffled = [(at, t.iloc[rng.permutation(len(t))]) for at, t in looks[:-1]] + [looks[-1]]
    for metric in ("conversion", "revenue_per_user"):
        in_order = sequential_looks(exp, metric, looks, "control", "treatment")
        assert len(in_order) == 6
        assert sequential_looks(exp, metric, shuffled, "control", "treatment") == in_order


def test_srm_flags_a_broken_split_and_passes_a_fair_one():
    rng = np.random.default_rng(3)
    n = 20_000
    broken = int(rng.binomial(n, 0.45))
    assert srm_check({"control": broken, "treatment": n - broken}, {"control": 0.5, "treatment": 0.5})["flagged"]
    fair = int(rng.binomial(n, 0.5))
    assert not srm_check({"control": fair, "treatment": n - fair}, {"control": 0.5, "treatment": 0.5})["flagged"]


def test_a_flagged_srm_comes_before_any_result():
    exp = experiment()
    rng = np.random.default_rng(1)
    n = 6000
    table = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "variant": np.where(rng.random(n) < 0.45, "treatment", "control"),
                          "exposures": 1.0, "clicks": 0.0, "converted": (rng.random(n) < 0.3).astype(float),
                          "revenue": rng.gamma(1, 10, n), "pre_spend": rng.gamma(1, 10, n)})
    report = analyse(exp, table)
    assert report.srm["flagged"] and report.decision == "invalid" and "sample ratio mismatch" in report.reason


def test_confidence_sequence_is_wider_than_the_fixed_interval_and_shrinks_with_n():
    lo, hi = confidence_sequence(0.0, 0.01, 10_000)
    assert hi - lo > 2 * 1.96 * 0.01
    se = 1 / np.sqrt(np.array([1e3, 1e4, 1e5]))
    lo, hi = confidence_sequence(np.zeros(3), se, np.array([1e3, 1e4, 1e5]))
    assert np.all(np.diff(hi - lo) < 0)


def test_cuped_narrows_the_interval_and_a_clear_win_ships():
    exp = experiment()
    rng = np.random.default_rng(7)
    n = 20_000
    treat = rng.random(n) < 0.5
    pre = rng.gamma(2, 20, n)
    revenue = 0.8 * pre + rng.normal(0, 10, n) + np.where(treat, 3.0, 0.0)
    converted = (rng.random(n) < np.where(treat, 0.36, 0.30)).astype(float)
    table = pd.DataFrame({"unit_id": np.arange(n).astype(str), "variant": np.where(treat, "treatment", "control"),
                          "exposures": 2.0, "clicks": rng.binomial(2, 0.1, n).astype(float), "converted": converted,
                          "revenue": revenue, "pre_spend": pre})
    report = analyse(exp, table)
    rev = next(c for c in report.comparisons if c["metric"] == "revenue_per_user")
    assert rev["cuped"] and rev["cuped_width_ratio"] < 0.5  # pre-spend explains most of the revenue's variance
    assert rev["effect_ci"][0] < 3.0 < rev["effect_ci"][1]
    conv = next(c for c in report.comparisons if c["metric"] == "conversion")
    assert conv["significant"] and report.decision == "ship"
    assert [v["units"] for v in report.variants] == [int((~treat).sum()), int(treat.sum())]


def test_no_difference_keeps_a_running_experiment_running_and_a_stopped_one_on_the_control():
    rng = np.random.default_rng(11)
    n = 2_000
    treat = rng.random(n) < 0.5
    table = pd.DataFrame({"unit_id": np.arange(n).astype(str), "variant": np.where(treat, "treatment", "control"),
                          "exposures": 1.0, "clicks": 0.0, "converted": (rng.random(n) < 0.2).astype(float),
                          "revenue": 0.0, "pre_spend": 0.0, "first_ts": 100 * DAY + np.sort(rng.uniform(0, 3 * DAY, n))})
    now = 100 * DAY + 3 * DAY  # day 3 of the planned 14
    running = analyse(experiment(), table, now=now)
    assert running.decision == "keep running" and "no significant difference in conversion yet" in running.reason
    stopped = analyse(experiment(status="stopped", stopped_at="2026-01-05T00:00:00+00:00"), table, now=now)
    assert stopped.decision == "stop" and stopped.reason.startswith("stopped before a decision: no significant")
    assert stopped.reason.endswith("keep the control")
    few = analyse(experiment(status="stopped", stopped_at="2026-01-05T00:00:00+00:00"), table.iloc[:1], now=now)
    assert (few.decision, few.reason) == ("stop", "stopped before a decision: not enough units yet; keep the control")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_forgetting_a_shopper_removes_their_exposures_and_outcomes(tmp_path, backend):
    import contextlib

    from features.event_store import Event, open_event_store
    from features.privacy import ForgetList, forget_user
    from tests.redis_server import redis_server

    with (redis_server(tmp_path) if backend == "redis" else contextlib.nullcontext(f"sqlite:///{tmp_path}/events.db")) as url:
        events, log_store = open_event_store(url), open_experiment_log(url)
        events.append("u1", [Event("i1", "purchase", "2026-01-01T00:00:00")])
        log_store.add_exposures([Exposure(f"r{u}", "ab", "control", u, u, "recommend", ("i1",), 1.0) for u in ("u1", "u2")])
        log_store.add_outcomes([Outcome(f"r{u}", u, "purchase", "i1", 5.0, 2.0) for u in ("u1", "u2")])
        report = forget_user("u1", ForgetList.open(tmp_path / "privacy", environ={}, create_key=True), None, events)
        assert report.events == 1 and report.experiment_rows == 2  # the real-time event; its exposure and outcome too:
        assert log_store.exposures("ab")["user_id"].tolist() == ["u2"] and log_store.outcomes()["user_id"].tolist() == ["u2"]
        events.close()
        log_store.close()


def _champion():
    import time

    from serving.reload import Served
    from tests.test_storefront import make_bundle
    from training.storefront import Storefront

    return Served(Storefront(make_bundle()), "7", "shoprec-recommender:test", time.time())


class _Slot:
    def __init__(self, served):
        self.current = served


def test_the_trending_arm_ranks_recent_buyers_first_and_a_missing_model_arm_leaves_the_experiment_out(tmp_path):
    from serving.experiments import ExperimentSettings, ServiceExperiments
    from serving.reload import Refused

    def resolve(arm, shop):
        raise Refused(f"no model {arm}")

    url = f"sqlite:///{tmp_path}/events.db"
    log_store = open_experiment_log(url)
    now = __import__("time").time()
    log_store.add_outcomes([Outcome(None, f"b{i}", "purchase", "i11", 1.0, now - 3600) for i in range(3)]
                           + [Outcome(None, "b9", "purchase", "i10", 1.0, now - 30 * DAY)])  # too old to trend
    log_store.put_experiment(Experiment(name="trend", variants=parse_variants(["control=champion", "t=trending"], "1/99"),
                                        salt="s"), new=True)
    log_store.put_experiment(Experiment(name="broken-arm", endpoint="rerank", salt="s",
                                        variants=parse_variants(["control=champion", "t=v99"])), new=True)
    champion = _champion()
    svc = ServiceExperiments(url, _Slot(champion), ExperimentSettings(experiments_refresh_s=10), resolve=resolve)
    try:
        assert list(svc.snapshot.by_endpoint) == ["recommend"]  # the experiment whose arm cannot load is left out
        arm = svc.arm("recommend", "stranger-1")
        assert arm.variant.name == "t"
        answer = svc.run("recommend", "stranger-1", "stranger-1", champion, lambda s: s.recommend("stranger-1", k=3))
        assert answer.item_ids[0] == "i11" and answer.source == "fallback:trending"
        assert svc.arm("rerank", "stranger-1") is None
    finally:
        svc.close()
        log_store.close()


def test_cli_create_simulate_report(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.server import REPO

    env = dict(os.environ, SHOPREC_EVENTS_URL=f"sqlite:///{tmp_path}/events.db", SHOPREC_KEYS_FILE=str(tmp_path / "keys.json"),
               SHOPREC_ADMIN_KEY="admin-key-cli-0123456789", SHOPREC_API_KEY="marketing-key-cli-0123456789")
    run = lambda *a: subprocess.run([sys.executable, "-m", "training.cli", "experiment", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    bad = run("create", "x", "--variant", "control=champion", "--key", "admin-key-cli-0123456789")
    assert bad.returncode == 2 and "at least two --variant" in bad.stderr
    assert run("create", "cli", "--variant", "control=champion", "--variant", "treatment=popular", "--planned-days", "0",
               "--key", "admin-key-cli-0123456789").stderr.count("planned_days") == 1  # must be > 0
    made = run("create", "cli", "--variant", "control=champion", "--variant", "treatment=popular", "--planned-days", "7",
               "--key", "admin-key-cli-0123456789")
    assert made.returncode == 0 and "planned 7 days" in made.stdout
    assert run("simulate", "cli", "--users", "4000", "--days", "7", "--lift", "0.3", "--key", "admin-key-cli-0123456789").returncode == 0
    out = run("report", "cli", "--json", "--no-mlflow", "--key", "marketing-key-cli-0123456789")
    report = json.loads(out.stdout)
    assert report["decision"] == "ship" and not report["srm"]["flagged"]
    assert sum(v["units"] for v in report["variants"]) > 1000
    # 7 days of traffic, read after the 7-day horizon: the group-sequential test's 7th (final) daily look
    seq = next(c for c in report["comparisons"] if c["metric"] == "conversion")["sequential"]
    assert seq["method"] == "group-sequential" and seq["look"] == 7 and seq["information_fraction"] == 1.0
    assert seq["alpha_spent"] == pytest.approx(0.05) and 1.96 < seq["bound_z"] < 2.3
    assert any("final analysis" in n for n in report["notes"])
    text = run("report", "cli", "--no-mlflow", "--key", "marketing-key-cli-0123456789").stdout
    assert "group-sequential (O'Brien-Fleming spending), look 7 at 100% of the horizon" in text


def test_anonymous_shoppers_are_assigned_by_session_and_their_exposure_is_logged(tmp_path):
    from serving.experiments import ServiceExperiments
    from serving.schemas import Recommendations, ScoredItem

    url = f"sqlite:///{tmp_path}/events.db"
    log_store = open_experiment_log(url)
    exp = Experiment(name="sess", endpoint="session", salt="s", variants=parse_variants(["control=champion", "t=popular"]))
    log_store.put_experiment(exp, new=True)
    champion = _champion()
    svc = ServiceExperiments(url, _Slot(champion))
    try:
        replies = {}
        for sid in ("s1", "s2", "s3", "s4"):
            answer = svc.run("session", sid, "", champion, lambda s: s.session(["i1"], k=3))
            reply = Recommendations(items=[ScoredItem(item_id=i, score=x) for i, x in zip(answer.item_ids, answer.scores)],
                                    source=answer.source, model_version=champion.version)
            replies[sid] = svc.label(reply, answer)
            assert replies[sid].variant == assign(exp, sid).name and replies[sid].experiment == "sess"
        no_session = svc.run("session", "", "", champion, lambda s: s.session(["i1"], k=3))
        assert getattr(no_session, "exposure", None) is None  # no session id: the champion, no experiment
        svc.writer.flush()
        logged = log_store.exposures("sess")
        assert logged["unit_id"].tolist() == ["s1", "s2", "s3", "s4"] and set(logged["user_id"]) == {""}
        assert logged["request_id"].tolist() == [replies[s].request_id for s in ("s1", "s2", "s3", "s4")]
    finally:
        svc.close()
        log_store.close()


def test_item_pages_are_assigned_by_user_then_session_and_a_policy_arm_answers_with_its_list(tmp_path):
    """/similar_items and /bought_together under an experiment: the unit is the user id when the request carries
    one, else the session id; neither: the champion. The popular arm answers both pages with its own list."""
    from serving.experiments import ServiceExperiments

    url = f"sqlite:///{tmp_path}/events.db"
    log_store = open_experiment_log(url)
    arms = parse_variants(["control=champion", "t=popular"])
    pages = {"similar_items": lambda s: s.similar_items("i4", k=3),
             "bought_together": lambda s: s.bought_together(["i4"], k=3)}
    experiments = {endpoint: Experiment(name=endpoint.replace("_", "-"), endpoint=endpoint, salt="p", variants=arms)
                   for endpoint in pages}
    for exp in experiments.values():
        log_store.put_experiment(exp, new=True)
    champion = _champion()
    from training.experiments.policies import policy_store, popularity

    policy = policy_store(champion.store.bundle, "popular", popularity(champion.store.bundle))
    popular_ids = policy.popular(k=3, exclude_ids=["i4"]).item_ids
    svc = ServiceExperiments(url, _Slot(champion))
    try:
        for endpoint, call in pages.items():
            exp, seen = experiments[endpoint], set()
            for user_id, unit in [(f"u{i}", f"u{i}") for i in range(8)] + [("", f"s{i}") for i in range(8)]:
                answer = svc.run(endpoint, user_id or unit, user_id, champion, call)
                arm = answer.exposure[0]
                assert arm.variant.name == assign(exp, unit).name
                seen.add(arm.variant.name)
                if arm.variant.name == "t":  # the policy's list on both pages, labelled as such
                    assert answer.item_ids == popular_ids and answer.source == "fallback:popular"
            assert seen == {"control", "t"}, endpoint
            assert getattr(svc.run(endpoint, "", "", champion, call), "exposure", None) is None
    finally:
        svc.close()
        log_store.close()


def test_create_publishes_a_registry_version_or_alias_beside_the_champion(tmp_path):
    """`--variant t=@challenger` resolves the alias in MLflow and copies that version into the BentoML store
    as a shoprec-variant (never as shoprec-recommender, whose latest is the champion)."""
    import os
    import subprocess
    import sys

    from tests.server import REPO
    from tests.test_storefront import make_bundle

    make_bundle({"trained_at": "2024-01-01T00:00:00Z", "shop": "demo"}).save(tmp_path / "bundle")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", BENTOML_HOME=str(tmp_path / "bentoml"),
               SHOPREC_EVENTS_URL=f"sqlite:///{tmp_path}/events.db", SHOPREC_KEYS_FILE=str(tmp_path / "keys.json"),
               SHOPREC_ADMIN_KEY="admin-key-cli-0123456789")
    register = ("import sys, mlflow; from pathlib import Path; from training import tracking; tracking.setup(Path(sys.argv[2]))\n"
                "with mlflow.start_run() as run: mlflow.log_artifacts(sys.argv[1], 'bundle')\n"
                "v = tracking.register(run.info.run_id, 'bundle', {'shop': 'demo'})\n"
                "mlflow.MlflowClient().set_registered_model_alias(tracking.MODEL_NAME, 'challenger', v); print(v)")
    version = subprocess.run([sys.executable, "-c", register, str(tmp_path / "bundle"), str(tmp_path)], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    done = subprocess.run([sys.executable, "-m", "training.cli", "experiment", "create", "model-ab", "--variant",
                           "control=champion", "--variant", "t=@challenger", "--key", "admin-key-cli-0123456789"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, "-c", "import bentoml, json; print(json.dumps([[str(m.tag), m.info.labels] "
                             "for m in bentoml.models.list()]))"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    models = __import__("json").loads(listed.stdout)
    assert [(tag.split(":")[0], labels["registry_version"], labels["shop"]) for tag, labels in models] == [
        ("shoprec-variant", version, "demo")]
    exp = open_experiment_log(env["SHOPREC_EVENTS_URL"]).experiments()[0]
    assert [v.arm for v in exp.variants] == ["champion", f"v{version}"]


def test_load_arm_refuses_a_missing_an_unreadable_and_another_shops_model(tmp_path):
    """One function loads a model arm for the service and `shoprec experiment simulate`: the champion's shop only."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_storefront import make_bundle

    src = tmp_path / "bundle"
    make_bundle({"shop": "shop-a"}).save(src)
    code = """
import shutil, sys
from pathlib import Path
import bentoml
from training.experiments.publish import ArmRefused, load_arm, store_variant
from training.publish import NotInStore
src = Path(sys.argv[1])
store_variant(src, {"registry_version": "3", "shop": "shop-a"})
with bentoml.models.create("shoprec-recommender") as m:
    shutil.copytree(src, m.path, dirs_exist_ok=True)
with bentoml.models.create("shoprec-recommender") as broken:
    pass
bundle, tag, version = load_arm("v3", "shop-a")
print("ok", bundle.meta["shop"], tag.split(":")[0], version)
for arm, shop in (("v3", "shop-b"), ("v4", "shop-a"), (str(m.tag), "shop-b"), (str(broken.tag), "shop-a")):
    try:
        load_arm(arm, shop)
        print("loaded", arm)
    except (NotInStore, ArmRefused) as e:
        print(type(e).__name__, str(e).replace(str(m.tag), "TAG").replace(str(broken.tag), "BROKEN"))
"""
    out = subprocess.run([sys.executable, "-c", code, str(src)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                         env=dict(os.environ, BENTOML_HOME=str(tmp_path / "home")))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "ok shop-a shoprec-variant 3"
    assert lines[1].startswith("NotInStore no shoprec-variant model of registry version 3 (shop shop-b)")
    assert lines[2].startswith("NotInStore no shoprec-variant model of registry version 4 (shop shop-a)")
    assert lines[3] == "ArmRefused TAG was trained on shop 'shop-a', the champion on 'shop-b'"
    assert lines[4].startswith("ArmRefused cannot load BROKEN: ")


def test_a_new_experiments_report_is_strict_json_and_readable():
    """A first look (no conversions in the control, one in the treatment, no revenue) has undefined lifts and
    p-values: the report holds null there, never NaN or Infinity (not JSON: a browser's JSON.parse and jq refuse
    the whole answer), and the text and page say n/a."""
    import json

    from serving.experiments_page import _experiment
    from training.experiments.report import render_text

    table = pd.DataFrame({"unit_id": [f"u{i}" for i in range(61)], "variant": ["control"] * 34 + ["treatment"] * 27,
                          "exposures": 1.0, "clicks": 0.0, "converted": [0.0] * 60 + [1.0],
                          "revenue": [0.0] * 60 + [12.5], "pre_spend": 0.0,
                          "first_ts": 100 * DAY + np.linspace(0, DAY / 2, 61)})
    report = analyse(experiment(), table, now=100 * DAY + DAY / 2).to_dict()

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    text = json.dumps(report)
    assert json.loads(text, parse_constant=refuse) == report
    conv = next(c for c in report["comparisons"] if c["metric"] == "conversion")
    assert conv["lift"] is None and conv["lift_ci"] is None  # relative to a control of 0
    assert "nan" not in render_text(report).lower() and "inf" not in render_text(report).lower()
    assert "no alpha left" not in render_text(report)  # the first look has spent none yet
    assert all(c["effect_ci_plain"] is None or None not in c["effect_ci_plain"] for c in report["comparisons"])
    page = _experiment(report | {"endpoint": "recommend"})
    assert "nan" not in page.lower() and "inf" not in page.lower() and "n/a" in page


def test_the_experiment_commands_use_the_projects_model_store(tmp_path, monkeypatch):
    """Model arms were published into ~/bentoml, where `shoprec serve` (./bentoml_home) never finds them."""
    import os

    from typer.testing import CliRunner

    from training.experiments.cli import experiment_app

    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPREC_EVENTS_URL", f"sqlite:///{tmp_path}/events.db")
    result = CliRunner().invoke(experiment_app, ["list"])
    assert result.exit_code == 0, result.output
    assert os.environ["BENTOML_HOME"] == str(tmp_path / "bentoml_home")


def test_two_simulations_in_one_store_do_not_count_each_others_outcomes(tmp_path):
    """Two simulations with the same seed wrote the same shoppers and request ids: each experiment then counted
    the other's purchases (an A/A read 'ship', a finished report changed afterwards). Stored traffic is now
    the experiment's own (training/experiments/simulate.py ``isolated``)."""
    from training.experiments.report import build_report
    from training.experiments.simulate import isolated, traffic

    store = open_experiment_log(f"sqlite:///{tmp_path}/events.db")
    try:
        start = 1_700_000_000.0
        first, second = experiment("first", planned_days=3), experiment("second", planned_days=3)
        for exp, lift in ((first, 0.5), (second, 0.0)):
            store.put_experiment(exp, new=True)
            exposures, outcomes = isolated(exp.name, *traffic(exp, users=400, days=3, lift=lift, seed=0, start=start))
            if exp is first:
                store.add_outcomes(outcomes)
                store.add_exposures(exposures)
                before = build_report(first, store).to_dict()
            else:
                store.add_outcomes(outcomes)
                store.add_exposures(exposures)
        after = build_report(first, store).to_dict()
        assert after["variants"] == before["variants"] and after["comparisons"] == before["comparisons"]
        alone = open_experiment_log(f"sqlite:///{tmp_path}/alone.db")
        alone.put_experiment(second, new=True)
        ex, out = isolated(second.name, *traffic(second, users=400, days=3, lift=0.0, seed=0, start=start))
        alone.add_outcomes(out)
        alone.add_exposures(ex)
        assert build_report(second, store).to_dict()["variants"] == build_report(second, alone).to_dict()["variants"]
        alone.close()
        ids = {e.user_id for e in ex}
        assert all(u.startswith("sim:second:") for u in ids) and not ids & {e.user_id for e in store.exposures("first").itertuples()}
    finally:
        store.close()


def test_a_purchase_sent_without_its_price_counts_the_catalogues(tmp_path):
    """/events purchases without `price` counted revenue 0 in every A/B report; the served catalogue's price is used
    (an explicit price wins)."""
    from types import SimpleNamespace

    from features.event_store import Event
    from serving.experiments import ServiceExperiments

    url = f"sqlite:///{tmp_path}/events.db"
    champion = _champion()
    svc = ServiceExperiments(url, _Slot(champion))
    try:
        price = float(champion.store.bundle.catalog["price"].iat[champion.store.items.row("i3")])
        sent = [Event("i3", "purchase", "2024-06-01T10:00:00"), Event("i3", "purchase", "2024-06-01T10:01:00"),
                Event("nope", "purchase", "2024-06-01T10:02:00")]
        svc.record_outcomes("u1", sent, [SimpleNamespace(request_id=None, price=None, quantity=2),
                                         SimpleNamespace(request_id=None, price=9.5, quantity=None),
                                         SimpleNamespace(request_id=None, price=None, quantity=None)])
        values = open_experiment_log(url).outcomes()["value"].tolist()
        assert price > 0 and values == [2 * price, 9.5, 0.0]
    finally:
        svc.close()
