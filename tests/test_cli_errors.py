"""What a newcomer sees when the input or the settings cannot work: one or two lines that say
what is wrong, with the numbers, and what to do; exit code 2; no traceback. A traceback only
for a real bug, with a line saying so (exit code 1)."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

ORDERS_HEADER = "order_id,user_id,item_id,ts,quantity,price\n"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "training.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)


def orders_file(path, rows):
    """A contract orders CSV from (user, item, day, quantity) rows."""
    path.write_text(ORDERS_HEADER + "".join(f"o{n},{u},{i},{day},{q},2.5\n" for n, (u, i, day, q) in enumerate(rows)))
    return path


def assert_input_error(result, *expected):
    """Exit code 2; the message (from ``error:`` on) is one or two lines holding every ``expected`` text."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "bug in shoprec" not in result.stderr, result.stderr
    message = result.stderr[result.stderr.index("error: "):].rstrip("\n").split("\n")
    assert 1 <= len(message) <= 2, message
    for text in expected:
        assert text in " ".join(message), (text, message)
    return message


SPREAD = [("u1", "i1", "2024-01-05", 1), ("u2", "i2", "2024-02-10", 1), ("u3", "i3", "2024-03-20", 1)]


@pytest.mark.parametrize("name, rows, expected", [
    ("no purchases at all", [("u1", "i1", "2024-01-01", -1), ("u2", "i2", "2024-03-01", -2)],
     ["no purchases", "2 lines, none with quantity > 0", "2 returns or cancellations", "positive quantity"]),
    ("one user", [("u1", "i1", "2024-01-01", 1), ("u1", "i2", "2024-03-01", 1), ("u1", "i3", "2024-05-01", 1)],
     ["all 3 purchases are by one shopper (u1)", "at least 2 shoppers"]),
    ("one item", [("u1", "i1", "2024-01-01", 1), ("u2", "i1", "2024-03-01", 1), ("u3", "i1", "2024-05-01", 1)],
     ["all 3 purchases are of one item (i1)", "at least 2 items"]),
])
def test_orders_no_model_can_learn_from(tmp_path, name, rows, expected):
    result = run_cli("train", "--orders", orders_file(tmp_path / "orders.csv", rows), "--shop", "t", cwd=tmp_path)
    assert_input_error(result, *expected)


def test_events_without_purchases(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("ts,user_id,session_id,event_type,item_id\n2024-01-01,u1,s1,view,i1\n"
                      "2024-02-01,u2,s2,view,i2\n2024-03-01,u1,s3,cart,i2\n")
    result = run_cli("train", "--events", events, "--shop", "t", cwd=tmp_path)
    assert_input_error(result, "no purchases: the 3 events have no purchase (by type: view 2, cart 1)",
                       "give --orders, or events with event_type purchase")


def test_catalogue_without_any_ordered_item(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,category,price,title,in_stock\nX1,a,1,t,true\nX2,b,2,t,true\n")
    result = run_cli("train", "--orders", orders_file(tmp_path / "orders.csv", SPREAD), "--items", items, cwd=tmp_path)
    assert_input_error(result, "items.csv: none of the 3 items in the orders/events (e.g. i1, i2, i3)",
                       "catalogue's 2 items (e.g. X1, X2)", "same item_id values")


@pytest.mark.parametrize("content, expected", [
    ("", "orders.csv: empty file"),
    (ORDERS_HEADER, "orders.csv: empty file (no rows)"),
])
def test_empty_file(tmp_path, content, expected):
    (tmp_path / "orders.csv").write_text(content)
    result = run_cli("ingest", "--orders", tmp_path / "orders.csv", "--out", tmp_path / "canonical", cwd=tmp_path)
    assert_input_error(result, expected, "at least one row")


def test_every_row_rejected(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS_HEADER + "o1,u1,i1,not-a-date,1,2.0\no2,,i2,2024-03-02,1,3.0\n")
    result = run_cli("train", "--orders", path, "--work", tmp_path / "canonical", cwd=tmp_path)
    assert_input_error(result, "orders.csv: all 2 rows rejected (bad ts: 1; missing user_id: 1)",
                       str(tmp_path / "canonical" / "failed" / "rejects.csv"))
    assert (tmp_path / "canonical" / "failed" / "rejects.csv").read_text().count("\n") == 3  # header + both rows


def test_a_failed_ingest_leaves_the_last_good_tables_alone(tmp_path):
    """A run that exits 2 (every row of a file rejected) used to write a 0-row orders table over the last good one
    and delete its events; now it writes only its rejects and report, to failed/, which the next good run clears."""
    good = orders_file(tmp_path / "good.csv", SPREAD)
    out = tmp_path / "canonical"
    assert run_cli("ingest", "--orders", good, "--out", out, cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = tmp_path / "bad.csv"
    bad.write_text(ORDERS_HEADER + "o1,u1,i1,not-a-date,1,2.0\no2,,i2,2024-03-02,1,3.0\n")
    assert run_cli("ingest", "--orders", bad, "--out", out, cwd=tmp_path).returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert "not-a-date" in (out / "failed" / "rejects.csv").read_text()
    assert run_cli("ingest", "--orders", good, "--out", out, cwd=tmp_path).returncode == 0
    assert not (out / "failed").exists()


@pytest.mark.parametrize("yaml_text, args, expected", [
    ("search:\n  budget_minutes: -1\n", [], "search.budget_minutes: Input should be greater than 0"),
    ("test_days: [\n", [], "not valid YAML"),
    ("propensity:\n  horizon_days: 0\n", [], "propensity.horizon_days: Input should be greater than or equal to 1"),
    # a typo used to run the default silently (here: a 10-minute search)
    ("search:\n  budget_minute: 0.01\n", [], "search.budget_minute: not a setting (did you mean search.budget_minutes?)"),
    ("candidates:\n  - name: a\n    model: {kind: als, factor: 8}\n", [],
     "candidates.0.model.factor: not a setting (did you mean candidates.0.model.factors?)"),
    (None, ["--test-days", "0"], "--test-days 0: must be more than 0"),
])
def test_bad_settings(tmp_path, yaml_text, args, expected):
    orders = orders_file(tmp_path / "orders.csv", SPREAD)
    config = []
    if yaml_text is not None:
        (tmp_path / "train.yaml").write_text(yaml_text)
        config = ["--config", tmp_path / "train.yaml"]
    assert_input_error(run_cli("train", "--orders", orders, *config, *args, cwd=tmp_path), expected)


def test_too_little_history_for_the_split_is_an_error_outside_train():
    """``time_split`` itself (used by notebooks and benchmarks) names the shortfall and a --test-days that works."""
    from features.errors import ShortHistory
    from features.interactions import purchases
    from tests.conftest import make_orders
    from training.evaluate import time_split
    from training.history import short_history

    orders = make_orders([("a", "x", "2024-01-01"), ("b", "y", "2024-01-10"), ("a", "y", "2024-01-20"),
                          ("c", "x", "2024-01-25"), ("c", "y", "2024-01-30")])
    with pytest.raises(ShortHistory) as e:
        time_split(None, orders, test_days=30)
    assert ("29.0 days of purchases (2024-01-01 to 2024-01-30: 5 by 3 shoppers); with --test-days 30, the test cutoff "
            "(2023-12-31 00:00) has 0 purchases before it") in e.value.problem
    assert "more than 60 days (2 x test days)" in e.value.problem
    assert e.value.remedy == "give more than 60 days of history, or a shorter --test-days (none down to 1 day works on this data)"
    split = time_split(None, orders, test_days=12)  # a enters the test period knowing x, buys y: one test user
    assert len(split.test_users) == 1

    orders = make_orders([("a", "x", "2024-01-01"), ("b", "y", "2024-01-02"), ("a", "y", "2024-01-20"),
                          ("b", "x", "2024-01-30")])
    test = time_split(None, orders, test_days=14)
    with pytest.raises(ShortHistory):  # the test cut works, the validation cut before it has no purchase
        time_split(test.view.events, test.view.orders, test_days=14)
    both_cuts = short_history(purchases(None, orders), test_days=14)  # what `shoprec train` says (both cuts)
    assert "the validation cutoff (2023-12-19 00:00) has 0 purchases before it" in both_cuts.problem
    assert both_cuts.remedy.endswith("a shorter --test-days (9.7 works on this data)")
    test = time_split(None, orders, test_days=9.7)
    validation = time_split(test.view.events, test.view.orders, test_days=9.7)  # as training/pipeline.py cuts
    assert len(test.test_users) == len(validation.test_users) == 1


def test_a_real_bug_keeps_its_traceback_and_says_so(capsys):
    from features.errors import InputError
    from training.cli import ShoprecApp

    app = ShoprecApp()

    @app.command()
    def broken():
        raise KeyError("something the code got wrong")

    @app.command()
    def refused():
        raise InputError("what is wrong, with 3 numbers", "what to do")

    with pytest.raises(SystemExit) as exit_:
        app(["broken"], prog_name="shoprec")
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "Traceback" in err and "KeyError: 'something the code got wrong'" in err
    assert err.rstrip().endswith("please report it with the traceback above") and "bug in shoprec" in err

    with pytest.raises(SystemExit) as exit_:
        app(["refused"], prog_name="shoprec")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: what is wrong, with 3 numbers\n  what to do\n"


@pytest.mark.parametrize("args, expected", [
    (["ingest", "--orders", "part1.csv", "--orders=part2.csv", "--out", "x"],
     "--orders is given 2 times: it takes one value and would keep only the last (one file per table"),
    (["keys", "create", "--name", "a", "--scope", "marketing", "--scope", "admin"],
     "--scope is given 2 times: it takes one value and would keep only the last"),
])
def test_a_one_value_option_given_twice_is_refused_not_cut_to_its_last(tmp_path, args, expected):
    """`ingest --orders part1.csv --orders part2.csv` read part 2 alone and said nothing (click keeps the last);
    `keys create --scope marketing --scope admin` made an admin key."""
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()  # nothing done
