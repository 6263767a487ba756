"""Property tests (hypothesis): the data contract accounts for every row of arbitrary messy
input, and the id vocabulary round-trips every id validation can let through."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import EVENT_TYPES, EVENTS, ITEMS, ORDERS
from features.errors import IngestError
from features.validate import validate
from features.vocab import IdVocab

# examples per property; SHOPREC_PROPERTY_EXAMPLES=1000 for a long run (pandas costs ~50 ms an example)
EXAMPLES = int(os.environ.get("SHOPREC_PROPERTY_EXAMPLES", "50"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CANONICAL_DTYPES = {"str": "string", "datetime": "datetime64[ns]", "float": "float64", "bool": "bool"}

# what a shop's tracking actually sends: mostly plausible values, some garbage, blanks and padding
junk = st.one_of(st.just(""), st.just(" "), st.text(max_size=12), st.sampled_from(
    ["NaN", "inf", "-inf", "null", "None", "1e309", "0x10", "２", "\x00", "a\x00", "−1", "1,5", "🛒"]))
ids = st.one_of(st.from_regex(r"[a-z]{1,3}[0-9]{0,3}", fullmatch=True), junk)
stamps = st.one_of(
    st.datetimes(min_value=pd.Timestamp("1990-01-01").to_pydatetime(), max_value=pd.Timestamp("2030-12-31").to_pydatetime())
    .map(lambda d: d.isoformat(sep=" ")),
    st.integers(-(10**13), 10**13).map(str),  # epoch seconds or ms, some absurd
    st.sampled_from(["2011-12-09T12:50:00+01:00", "2011-13-45 25:61:00", "12/09/2011 12:50", "yesterday", "9999-12-31"]),
    junk)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str), junk)
kinds = st.one_of(st.sampled_from(EVENT_TYPES + ("VIEW", " cart ", "clicks", "purchase ")), junk)
bools = st.one_of(st.sampled_from(["true", "False", "1", "0", "yes", "n", "maybe"]), junk)
VALUES = {"ts": stamps, "event_type": kinds, "price": numbers, "quantity": numbers, "in_stock": bools}


def messy_rows(spec, max_rows: int = 25):
    """A text frame with the spec's columns (CSV as read), values drawn per column, some rows repeated."""
    row = st.fixed_dictionaries({c.name: VALUES.get(c.name, ids) for c in spec.columns})
    return st.lists(row, min_size=1, max_size=max_rows).flatmap(
        lambda rows: st.lists(st.sampled_from(rows), max_size=5).map(lambda dup: pd.DataFrame(rows + dup, dtype=str)))


def check_partition(df: pd.DataFrame, spec) -> None:
    """read == accepted + rejected; every reject has a row and a reason; accepted rows obey the contract."""
    try:
        result = validate(df, spec, "messy.csv")
    except IngestError as e:  # a whole-file problem (no value of a column parses): named, not a crash
        assert "messy.csv" in str(e)
        return
    n = len(df)
    assert result.read == n == len(result.accepted) + len(result.rejects)
    assert sum(result.by_reason.values()) == len(result.rejects)
    rows = result.rejects["row"].to_numpy()
    assert len(set(rows)) == len(rows) and ((rows >= 1) & (rows <= n)).all()
    assert result.rejects["reason"].notna().all() and (result.rejects["reason"].str.len() > 0).all()
    assert all(isinstance(json.loads(r), dict) for r in result.rejects["record"])
    acc = result.accepted
    assert list(acc.columns) == spec.names
    for column in spec.columns:
        assert str(acc[column.name].dtype) == CANONICAL_DTYPES[column.kind]
        if not column.nullable:
            assert acc[column.name].notna().all(), column.name
        if column.kind == "str":
            present = acc[column.name].dropna()
            if column.name.endswith("_id"):
                assert not present.str.contains("\x00", regex=False).any()
            assert (present == present.str.strip()).all() and (present.str.len() > 0).all()
    if "price" in acc:
        assert not (acc["price"] < 0).any()
    if spec is EVENTS:
        assert acc["event_type"].isin(EVENT_TYPES).all()
        assert not acc.duplicated().any()
    if spec is ORDERS:
        assert (acc["quantity"] != 0).all() and np.isfinite(acc["quantity"]).all()
    if spec is ITEMS:
        assert acc["item_id"].is_unique


@SETTINGS
@given(messy_rows(ORDERS))
def test_orders_every_row_is_accounted_for(df):
    check_partition(df, ORDERS)


@SETTINGS
@given(messy_rows(EVENTS))
def test_events_every_row_is_accounted_for(df):
    check_partition(df, EVENTS)


@SETTINGS
@given(messy_rows(ITEMS))
def test_items_every_row_is_accounted_for(df):
    check_partition(df, ITEMS)


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-(10**15), 10**15),
                          st.text(max_size=8), st.booleans()), min_size=1, max_size=20))
def test_typed_and_mixed_columns_are_accounted_for(values):
    """JSON Lines and Parquet give typed or mixed columns, not text: the same partition holds."""
    n = len(values)
    df = pd.DataFrame({"order_id": pd.Series(values, dtype=object), "user_id": [f"u{i % 3}" for i in range(n)],
                       "item_id": pd.Series(values[::-1], dtype=object), "ts": pd.Series(values, dtype=object),
                       "quantity": pd.Series(values, dtype=object), "price": pd.Series(values[::-1], dtype=object)})
    check_partition(df, ORDERS)


# ids as validation lets them through: stripped, non-empty, no NUL (any other unicode)
valid_ids = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20) \
    .map(str.strip).filter(bool)


@settings(max_examples=4 * EXAMPLES, deadline=None, database=None)
@given(st.lists(valid_ids, min_size=1, max_size=60, unique=True), st.lists(valid_ids, max_size=20))
def test_vocab_round_trip_and_unknown_ids(known, probes):
    vocab = IdVocab(known)
    rows = vocab.rows(known)
    assert rows.tolist() == list(range(len(known)))
    assert vocab.external(rows).tolist() == known
    unknown = [p for p in probes if p not in set(known)]
    assert (vocab.rows(unknown) == -1).all() and all(p not in vocab for p in unknown)
    assert all(vocab.row(k) == i for i, k in enumerate(known))


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(values=st.lists(valid_ids, min_size=1, max_size=40))
def test_vocab_from_values_is_sorted_distinct_and_survives_save_load(tmp_path_factory, values):
    vocab = IdVocab.from_values(values)
    assert vocab.ids.tolist() == sorted(set(values))
    path = tmp_path_factory.mktemp("vocab") / "ids.npz"
    vocab.save(path)
    assert IdVocab.load(path) == vocab
    assert IdVocab.from_values(list(reversed(values))) == vocab  # order-free: deterministic


def test_an_id_with_a_nul_is_rejected_at_the_edge_not_merged_in_the_vocabulary():
    """numpy unicode drops a trailing NUL, so "u1\\0" would silently become "u1": validation rejects it."""
    df = pd.DataFrame({"order_id": ["o1", "o2"], "user_id": ["u1", "u1\x00"], "item_id": ["i1", "i1"],
                       "ts": ["2024-01-01", "2024-01-01"], "quantity": ["1", "1"], "price": ["1", "1"]})
    result = validate(df, ORDERS, "o.csv")
    assert result.accepted["user_id"].tolist() == ["u1"]
    assert result.rejects["reason"].tolist() == ["bad user_id (contains a NUL character)"]


@pytest.mark.parametrize("probe", ["", " ", "nope", "u1 ", "U1"])
def test_vocab_missing_ids_are_minus_one(probe):
    assert IdVocab(["u1", "u2"]).row(probe) == -1
