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


# -- a file with malformed rows of every kind -------------------------------------------------
def _gzip_cut(complete: bytes, partial: bytes) -> bytes:
    """A gzip stream of ``complete`` + ``partial`` that breaks off right after ``partial``
    (no final block, no trailer): what a copy interrupted mid-file leaves."""
    import zlib

    c = zlib.compressobj(wbits=31)
    return c.compress(complete + partial) + c.flush(zlib.Z_SYNC_FLUSH)


EVENT_ROWS = [  # (raw CSV line, reason or None for a good row)
    ("2024-01-01 10:00:00,u1,s1,view,i1,2.5", None),
    ("2024-01-01 10:00:05,u1,s1,cart,i1,2.5", None),
    ("not a time,u1,s1,view,i2,1", "bad ts 'not a time'"),
    ("2024-13-45 25:00:00,u1,s1,view,i2,1", "bad ts '2024-13-45 25:00:00'"),
    ("1704103200000,u2,s2,view,i3,", None),  # epoch ms: good
    ("2024-01-01 11:00:00,u2,s2,like,i3,1", "unknown event_type 'like' (expected view, cart, purchase)"),
    ("2024-01-01 11:00:01,u2,s2,purchase,,1", "missing item_id"),
    ("2024-01-01 11:00:02,u2,,view,i4,1", "missing session_id"),
    ("2024-01-01 11:00:03,,s9,view,i4,1", None),  # anonymous shopper: good
    ("2024-01-01 11:00:04,u2,s2,view,i4,-3", "negative price -3.0"),
    ("2024-01-01 10:00:00,u1,s1,view,i1,2.5", "duplicate of row 1"),
    ("2024-01-01 11:00:05,u3,s3,view,i5,abc", "bad price 'abc'"),
    ("2024-01-01 11:00:06,u3,s3,,i5,1", "missing event_type"),
    ("2024-01-01 11:00:07,u3\x00,s3,view,i5,1", "bad user_id (contains a NUL character)"),
    ("2024-01-01 11:00:08,u4,s4,VIEW,i6,1", None),  # case: good
]


def test_a_file_with_every_kind_of_malformed_row_accounts_for_every_row(tmp_path):
    """Bad timestamps, unknown event types, empty ids, negative prices, duplicates, a NUL, bytes
    that are not UTF-8 and a gzip stream cut mid-row: every good row kept, every bad one rejected
    with its reason, read = accepted + rejected."""
    from features.ingest import ingest, load_canonical

    lines = [line for line, _ in EVENT_ROWS] + ["2024-01-01 11:00:09,u5,s5,view,caf\xe9-mug,1"]  # latin-1 byte below
    body = ("ts,user_id,session_id,event_type,item_id,price\n" + "\n".join(lines) + "\n").encode("utf-8")
    body = body.replace("caf\xe9".encode("utf-8"), b"caf\xe9")  # one row in another encoding
    path = tmp_path / "events.csv.gz"
    path.write_bytes(_gzip_cut(body, b"2024-01-01 11:00:10,u6,s6,vi"))  # the last row is cut mid-way
    expected = {i + 1: reason for i, (_, reason) in enumerate(EVENT_ROWS) if reason}
    expected[len(EVENT_ROWS) + 1] = "bad encoding"
    expected[len(EVENT_ROWS) + 2] = "truncated row"

    report = ingest(None, path, None, tmp_path / "out")
    f = report.files[0]
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv", keep_default_na=False)
    assert dict(zip(rejects["row"], rejects["reason"])) == expected
    good = sum(reason is None for _, reason in EVENT_ROWS)
    assert (f.read, f.accepted, f.rejected) == (len(EVENT_ROWS) + 2, good, len(expected))
    assert f.read == f.accepted + f.rejected == len(load_canonical(tmp_path / "out").events) + len(rejects)
    assert "rows after that point are lost" in f.notes["damaged"] and "1 rows not valid utf-8" in f.notes["bad_encoding"]
    assert all(isinstance(json.loads(r), dict) for r in rejects["record"])
    assert "caf\ufffd-mug" in rejects.loc[rejects["reason"] == "bad encoding", "record"].iloc[0]


def test_damaged_json_lines_are_rows_too(tmp_path):
    from features.ingest import ingest

    good = '{"order_id": "o1", "user_id": "u1", "item_id": "i1", "ts": "2024-01-01", "quantity": 1, "price": 2.0}'
    body = "\n".join([good, '{"order_id": "o2", "user_id": ', '[1, 2]',
                      good.replace("o1", "o3").replace("u1", "u\xe9")]).encode("utf-8") + b"\n"
    body = body.replace("u\xe9".encode("utf-8"), b"u\xe9")
    path = tmp_path / "orders.jsonl.gz"
    path.write_bytes(_gzip_cut(body, b'{"order_id": "o4", "user_'))
    f = ingest(path, None, None, tmp_path / "out").files[0]
    assert (f.read, f.accepted, f.rejected) == (5, 1, 4)
    assert f.by_reason == {"bad encoding": 1, "not a JSON object": 1, "not valid JSON": 1, "truncated row": 1}


def test_a_file_mostly_in_another_encoding_is_still_a_file_error(tmp_path):
    from features.ingest import ingest

    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\ni1,Caf\xe9\ni2,Cr\xe8me\ni3,plain\n".encode("latin-1"))
    with pytest.raises(IngestError, match="not valid utf-8 at byte offset"):
        ingest(None, None, path, tmp_path / "out")
