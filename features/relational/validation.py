"""The data contract's row rules as one relational expression: each row's first reason, or none.

``validate`` (features/validate.py) reads and parses the file at the edge (pandas, Arrow): each
column's canonical values, and for the rows whose value does not parse the raw text. The staged
table, one row per row read, then goes through ``reasons``, which gives every row the first rule
that rejects it, in the order the pandas validation applies them:

1. damage from a broken file and forgotten shoppers (decided at the edge: ``_pre``);
2. per column, in the spec's order: missing (non-nullable), does not parse, a NUL in an id,
   an unknown event type, a time more than a day ahead, an order quantity of zero, a negative price;
3. among the rows still open, a repeat of an earlier one: every column for events, the item_id
   for items ("duplicate of row N", N the first such row of the file), found by grouping the open
   rows and joining the repeated groups back (no window over the whole table).

Accepted rows are those without a reason, so read = accepted + rejected by construction.
"""
from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from features.contract import EVENT_TYPES, TableSpec
from features.validate import (FORGOTTEN, FUTURE_NOTE, TS_TEXT, ValidationResult, parse, quote, records, _absent,
                               Reasons, latest_ts)

POS, ROW, PRE = "_pos", "_row", "_pre"
DUPLICATE_KEYS = {"events": None, "items": ["item_id"]}  # None: every column


def bad_column(name: str) -> str:
    return f"_bad_{name}"


def reasons(t: ibis.Table, spec: TableSpec) -> ibis.Table:
    """``t`` (a staged table: the spec's columns, POS, ROW, PRE and ``_bad_<column>`` texts) with
    ``reason`` (the text written to rejects) and ``kind`` (the rule, counted in the report); both
    null for an accepted row."""
    rules = [(t[PRE].notnull(), t[PRE], t[PRE])]
    for c in spec.columns:
        v = t[c.name]
        bad = t[bad_column(c.name)] if bad_column(c.name) in t.columns else None
        if not c.nullable:
            missing = v.isnull() if bad is None else v.isnull() & bad.isnull()
            rules.append((missing, ibis.literal(f"missing {c.name}"), ibis.literal(f"missing {c.name}")))
        if bad is not None:
            rules.append((bad.notnull(), f"bad {c.name} " + bad, ibis.literal(f"bad {c.name}")))
        if c.kind == "str" and c.name.endswith("_id"):
            # an id vocabulary (numpy unicode) cannot keep a trailing NUL
            rules.append((v.contains("\x00").fill_null(False), ibis.literal(f"bad {c.name} (contains a NUL character)"),
                          ibis.literal(f"bad {c.name}")))
        if c.name == "event_type":
            expected = ", ".join(EVENT_TYPES)
            rules.append((v.notnull() & ~v.isin(EVENT_TYPES),
                          "unknown event_type '" + v.substr(0, 40) + f"' (expected {expected})",
                          ibis.literal("unknown event_type")))
        elif c.name == "ts":
            rules.append((v > ibis.literal(latest_ts().to_pydatetime()),
                          "ts in the future " + v.strftime(TS_TEXT) + FUTURE_NOTE, ibis.literal("ts in the future")))
        elif c.name == "quantity" and spec.name == "orders":
            rules.append((v == 0, ibis.literal("quantity is zero"), ibis.literal("quantity is zero")))
        elif c.name == "price":
            rules.append((v < 0, "negative price " + v.cast("string"), ibis.literal("negative price")))
    reason = ibis.cases(*[(cond, text) for cond, text, _ in rules], else_=ibis.null("string"))
    kind = ibis.cases(*[(cond, k) for cond, _, k in rules], else_=ibis.null("string"))
    t = t.mutate(reason=reason, kind=kind)
    if spec.name not in DUPLICATE_KEYS:
        return t
    keys = DUPLICATE_KEYS[spec.name] or spec.names
    # the groups of open rows seen more than once (a hash aggregate, not a sort of the whole table), joined
    # back on null-safe equality: a missing value repeats a missing value, as in pandas' duplicated()
    open_rows = t.filter(t.reason.isnull())
    if len(keys) > 1:  # events: only rows whose time repeats can repeat (few), so group those alone
        times = open_rows.group_by("ts").aggregate(_c=open_rows.count())
        open_rows = open_rows.semi_join(times.filter(times._c > 1).select("ts"), "ts")
    groups = open_rows.group_by(keys).aggregate(
        _n=open_rows.count(), _first_pos=open_rows[POS].min(), _first_row=open_rows[ROW].argmin(open_rows[POS]))
    groups = groups.filter(groups._n > 1).rename(**{f"_key_{k}": k for k in keys})
    joined = t.left_join(groups, [t[k].identical_to(groups[f"_key_{k}"]) for k in keys])
    dup = joined.reason.isnull() & joined._first_pos.notnull() & (joined[POS] != joined._first_pos)
    label = "duplicate event" if spec.name == "events" else "duplicate item_id"
    prefix = "duplicate of row " if spec.name == "events" else "duplicate item_id of row "
    return joined.select(
        *[joined[c] for c in t.columns if c not in ("reason", "kind")],
        reason=ibis.cases((dup, prefix + joined._first_row.cast("string")), else_=joined.reason),
        kind=ibis.cases((dup, ibis.literal(label)), else_=joined.kind),
    )


def stage(df: pd.DataFrame, spec: TableSpec, source: str, rows: np.ndarray, pre: Reasons) -> pd.DataFrame:
    """The staged table of ``reasons``: parsed values, positions, file rows, edge reasons, bad texts."""
    n = len(df)
    staged = {POS: np.arange(n, dtype=np.int64), ROW: np.asarray(rows, dtype=np.int64)}
    for c in spec.columns:
        if c.name not in df.columns:
            staged[c.name] = _absent(c.kind, n)
            continue
        col = df[c.name].reset_index(drop=True)
        values, _, bad = parse(col, c, n, source)
        staged[c.name] = values
        if bad.any():
            texts = pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="string")
            texts[bad] = quote(col[bad]).to_numpy()
            staged[bad_column(c.name)] = texts
    staged[PRE] = pd.Series(np.where(pre.open, None, pre.text), dtype="string")
    return pd.DataFrame(staged)


def judge(engine, df: pd.DataFrame, spec: TableSpec, source: str, rows: np.ndarray, pre: Reasons,
          raw: pd.DataFrame | None, damage_notes: dict) -> ValidationResult:
    """``validate`` with the row rules run by ``engine``; same result as the pandas rules."""
    staged = stage(df, spec, source, rows, pre)
    # only the rejected rows come back (position, reason, rule): the accepted ones are the staged values left
    expr = reasons(engine.table(staged), spec)
    expr = expr.filter(expr.reason.notnull()).select(POS, "reason", "kind").order_by(POS)
    try:
        out = engine.frame(expr)
    finally:
        engine.forget(staged)
    canon = staged[spec.names]
    if len(out):
        keep = np.ones(len(staged), dtype=bool)
        keep[out[POS].to_numpy()] = False
        canon = canon[keep]
    accepted = canon.reset_index(drop=True)
    for c in spec.columns:  # the dtypes the pandas rules give
        if c.kind == "bool":
            accepted[c.name] = accepted[c.name].astype(bool)
    positions = out[POS].to_numpy()
    rejects = pd.DataFrame({
        "source": pd.Series([source] * len(positions), dtype="string"),
        "row": np.asarray(rows)[positions].astype(np.int64),
        "reason": out["reason"].astype("string"),
        "record": pd.Series(records(df if raw is None else raw, positions), dtype="string"),
    })
    rejects.loc[rejects["reason"] == FORGOTTEN, "record"] = "{}"
    counts = out["kind"].value_counts()
    by_reason = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    return ValidationResult(
        accepted=accepted, rejects=rejects, read=len(df), by_reason=by_reason,
        notes={"ignored_columns": [c for c in df.columns if c not in spec.names]} | damage_notes,
    )
