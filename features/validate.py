"""Validate a raw table against a ``TableSpec`` (features/contract.py).

Good rows become the canonical table; each bad row becomes one reject carrying the first
reason that applies; a file that cannot fit the contract at all (a missing column, no
rows, a column where no value parses) raises ``IngestError``. Every check is one
vectorised pass over a column, so tens of millions of rows are fine.

Canonical dtypes: text "string" (missing = <NA>); ``ts`` datetime64[ns], naive (aware
values converted to UTC; integer epoch seconds or milliseconds accepted); numbers float64;
``in_stock`` bool (missing = True: an item listed without stock data is taken as available).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import EVENT_TYPES, Column, TableSpec
from features.errors import EMPTY_REMEDY, IngestError

REJECT_COLUMNS = ["source", "row", "reason", "record"]
FORGOTTEN = "forgotten user"  # the reason for rows of shoppers on the forgotten list (features/privacy.py)
EXPECTED = {
    "str": "expected text",
    "datetime": "expected timestamps like 2011-12-09 12:50:00 or epoch ms",
    "float": "expected numbers like 2.55",
    "bool": "expected true/false",
}
_TRUE = ["true", "t", "yes", "y", "1", "1.0"]
_FALSE = ["false", "f", "no", "n", "0", "0.0"]
_EPOCH_MS_FROM = 1e11  # smaller magnitudes are epoch seconds (1e11 s is the year 5138)
_TS_MIN, _TS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


@dataclass
class ValidationResult:
    """``accepted`` has exactly the spec's columns; ``rejects`` has REJECT_COLUMNS."""

    accepted: pd.DataFrame
    rejects: pd.DataFrame
    read: int
    by_reason: dict[str, int]
    notes: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict:
        return {
            "read": self.read,
            "accepted": len(self.accepted),
            "rejected": len(self.rejects),
            "by_reason": dict(self.by_reason),
            "notes": dict(self.notes),
        }


class Reasons:
    """The first reason that applies, per row; later checks never overwrite earlier ones."""

    def __init__(self, n: int):
        self.open = np.ones(n, dtype=bool)
        self.kind = np.full(n, None, dtype=object)
        self.text = np.full(n, None, dtype=object)

    def add(self, mask, kind: str, detail: Callable[[np.ndarray], object] | None = None) -> None:
        """Reject the still-open rows of ``mask`` as ``kind``; ``detail(new)`` gives the
        reason texts of those rows when they carry the offending value."""
        new = np.asarray(mask, dtype=bool) & self.open
        if not new.any():
            return
        self.kind[new] = kind
        self.text[new] = kind if detail is None else np.asarray(detail(new), dtype=object)
        self.open &= ~new

    def by_reason(self) -> dict[str, int]:
        counts = pd.Series(self.kind[~self.open]).value_counts()
        return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def validate(
    df: pd.DataFrame,
    spec: TableSpec,
    source: str,
    rows: np.ndarray | None = None,
    raw: pd.DataFrame | None = None,
    forgotten=None,
    engine=None,
) -> ValidationResult:
    """Split ``df`` into the canonical table and rejects; read == accepted + rejected.

    ``rows`` are the 1-based file row numbers reported in rejects (default: position + 1)
    and ``raw`` the frame whose rows are quoted as the reject record (default: ``df``);
    adapters pass both so that rejects point at the original file. ``forgotten`` (a
    ``features.privacy.ForgetList``) rejects the rows of shoppers who asked to be forgotten,
    before any other check, with their records redacted. Rows that a damaged file could not
    give whole (``features.salvage``) are rejected first, with the damage as the reason.

    ``engine`` (a ``features.relational.engine.Engine``) runs the rules that decide each row's
    reason as one relational expression (features/relational/validation.py); without one they
    run here in pandas. Reading and parsing the values is the same either way.
    """
    n = len(df)
    if n == 0:
        raise IngestError(f"{source}: empty file (no rows)", EMPTY_REMEDY)
    damage = list((df.attrs.get("row_damage") or {}).items())
    damage_notes = dict(df.attrs.get("damage_notes") or {})
    df = _normalise_columns(df, source)
    absent = [c for c in spec.required if c not in df.columns]
    if absent:
        raise IngestError(
            f"{source}: missing required column {', '.join(map(repr, absent))} "
            f"(expected {', '.join(spec.names)}; found {', '.join(map(str, df.columns))})"
        )
    rows = np.arange(1, n + 1) if rows is None else np.asarray(rows, dtype=np.int64)
    reasons = Reasons(n)
    for reason, positions in damage:
        reasons.add(np.isin(np.arange(n), positions), reason)
    if forgotten is not None and len(forgotten) and "user_id" in df.columns:
        reasons.add(forgotten.mask(text(df["user_id"])), FORGOTTEN)
    if engine is not None:
        from features.relational.validation import judge

        return judge(engine, df, spec, source, rows, reasons, raw, damage_notes)
    canon = {c.name: _column(df[c.name] if c.name in df.columns else None, c, spec, n, reasons, source)
             for c in spec.columns}
    canon = pd.DataFrame(canon, index=pd.RangeIndex(n))
    _table_rules(canon, spec, reasons, rows)
    rejects = make_rejects(source, rows, reasons, df if raw is None else raw)
    rejects.loc[rejects["reason"] == FORGOTTEN, "record"] = "{}"  # nothing of theirs is kept
    return ValidationResult(
        # all rows accepted (the usual case): no filtered copy of the whole table
        accepted=(canon if reasons.open.all() else canon[reasons.open]).reset_index(drop=True),
        rejects=rejects,
        read=n,
        by_reason=reasons.by_reason(),
        notes={"ignored_columns": [c for c in df.columns if c not in spec.names]} | damage_notes,
    )


def make_rejects(source: str, rows: np.ndarray, reasons: Reasons, raw: pd.DataFrame) -> pd.DataFrame:
    """One row per rejected row: source, 1-based row number, reason, raw row as JSON."""
    idx = np.flatnonzero(~reasons.open)
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(idx), dtype="string"),
            "row": np.asarray(rows)[idx].astype(np.int64),
            "reason": pd.Series(reasons.text[idx], dtype="string"),
            "record": pd.Series(records(raw, idx), dtype="string"),
        }
    )


def records(raw: pd.DataFrame, positions: np.ndarray) -> list[str]:
    """The rows at ``positions`` as JSON objects (one string each)."""
    if len(positions) == 0:
        return []
    lines = raw.iloc[positions].to_json(
        orient="records", lines=True, date_format="iso", force_ascii=False, default_handler=str
    )
    return lines.rstrip("\n").split("\n")


def text(col: pd.Series) -> pd.Series:
    """Values as stripped "string" with empty as <NA>; integral floats (an id column that
    Parquet or JSON stored as float because of a null) lose their ".0"."""
    if pd.api.types.is_float_dtype(col):
        present = col.dropna()
        if len(present) and (present == np.floor(present)).all() and present.abs().max() < 2**53:
            col = col.astype("Int64")
    values = col.astype("string")
    stripped = values.str.strip()
    if stripped.equals(values) and not values.eq("").any():
        # clean text (the usual case): keep the input's buffers instead of a stripped copy, so the
        # canonical table shares memory with the raw one (one copy fewer of every text column)
        return values
    return stripped.replace("", pd.NA)


def timestamps(col: pd.Series) -> pd.Series:
    """datetime64[ns] naive UTC from datetimes, epoch numbers or ISO 8601 text; NaT where
    a value is missing or does not parse."""
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = col if col.dt.tz is None else col.dt.tz_convert("UTC").dt.tz_localize(None)
        return ts.astype("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return _from_epoch(pd.Series(col.to_numpy(dtype="float64", na_value=np.nan), index=col.index))
    values = text(col)
    epoch = values.str.fullmatch(r"[+-]?[0-9]+(\.[0-9]*)?").fillna(False).to_numpy(dtype=bool)  # ASCII: "２" is no epoch
    out = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns]")
    if epoch.any():
        out[epoch] = _from_epoch(pd.to_numeric(values[epoch], errors="coerce").astype("float64"))
    other = ~epoch & values.notna().to_numpy()
    if other.any():
        parsed = pd.to_datetime(values[other], format="ISO8601", utc=True, errors="coerce")
        parsed = parsed.where((parsed >= _TS_MIN) & (parsed <= _TS_MAX))
        out[other] = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    return out


def _from_epoch(num: pd.Series) -> pd.Series:
    ms = num.where(num.abs() >= _EPOCH_MS_FROM, num * 1000.0)
    ms = ms.where(ms.abs() < 9.2e12)  # datetime64[ns] spans +-9.22e12 ms (years 1677-2262)
    return pd.to_datetime(ms, unit="ms").astype("datetime64[ns]")


def numbers(col: pd.Series) -> np.ndarray:
    """float64 values; NaN where missing or not a finite number."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        num = col.to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = text(col)
        try:  # Arrow's cast is much faster and succeeds on clean columns
            num = pc.cast(pa.array(values), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            num = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isfinite(num), num, np.nan)


def _column(col: pd.Series | None, column: Column, spec: TableSpec, n: int, reasons: Reasons, source: str):
    """The canonical values of one column; its bad rows go to ``reasons``."""
    if col is None:
        return _absent(column.kind, n)
    col = col.reset_index(drop=True)
    values, missing, bad = parse(col, column, n, source)
    if not column.nullable:
        reasons.add(missing, f"missing {column.name}")
    reasons.add(bad, f"bad {column.name}", lambda m: f"bad {column.name} " + quote(col[m]))
    _value_rules(values, column, spec, reasons, source)
    return values


def parse(col: pd.Series, column: Column, n: int, source: str) -> tuple[object, np.ndarray, np.ndarray]:
    """The canonical values of one present column (index reset), which rows are missing and which
    hold a value that does not parse; ``IngestError`` when no value of the column is usable."""
    if column.kind in ("datetime", "float") and _typed(col):
        # already typed (Parquet, JSON): missing is NA; formatting every value as text to find
        # the empty ones was the slowest step of an ingest (3 s per million timestamps)
        txt, missing = None, col.isna().to_numpy()
    else:
        txt = text(col)
        missing = txt.isna().to_numpy()
    if column.kind == "str":
        values = txt
        if column.name == "event_type":
            values = values.str.lower()
        bad = np.zeros(n, dtype=bool)
    elif column.kind == "datetime":
        values = timestamps(col)
        bad = values.isna().to_numpy() & ~missing
    elif column.kind == "float":
        values = numbers(col)
        bad = np.isnan(values) & ~missing
    else:
        lowered = txt.str.lower()
        values = (lowered.isin(_TRUE) | lowered.isna()).to_numpy(dtype=bool)
        bad = ~missing & ~lowered.isin(_TRUE + _FALSE).to_numpy(dtype=bool)
    _whole_column(col, column, missing, bad, source)
    if column.name == "event_type":
        check_event_types(values, source)
    return values, missing, bad


def _typed(col: pd.Series) -> bool:
    """Numbers or datetimes (not bool): a value is missing exactly when it is NA."""
    kind = col.dtype
    return pd.api.types.is_datetime64_any_dtype(kind) or (
        pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind))


FUTURE_TOLERANCE = pd.Timedelta(days=1)  # naive local times of a shop east of UTC are up to 14 h ahead
FUTURE_NOTE, TS_TEXT = " (after now + 1 day)", "%Y-%m-%d %H:%M:%S"


def latest_ts() -> pd.Timestamp:
    """The latest timestamp a row may carry: now (UTC, naive as the canonical ``ts``) + FUTURE_TOLERANCE."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None) + FUTURE_TOLERANCE


def _value_rules(values, column: Column, spec: TableSpec, reasons: Reasons, source: str) -> None:
    if column.kind == "str" and column.name.endswith("_id"):
        # an id vocabulary (numpy unicode) cannot keep a trailing NUL: "a\0" would become "a"
        nul = values.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        reasons.add(nul, f"bad {column.name}", lambda m: f"bad {column.name} (contains a NUL character)")
    if column.name == "event_type":
        present = values.notna().to_numpy()
        unknown = present & ~values.isin(EVENT_TYPES).to_numpy(dtype=bool)
        expected = ", ".join(EVENT_TYPES)
        reasons.add(unknown, "unknown event_type",
                    lambda m: "unknown event_type " + quote(values[m]) + f" (expected {expected})")
    elif column.name == "quantity" and spec.name == "orders":
        reasons.add(values == 0, "quantity is zero")
    elif column.name == "price":
        reasons.add(values < 0, "negative price", lambda m: "negative price " + pd.Series(values[m]).astype(str))
    elif column.name == "ts":
        # a date typo (2031 for 2021) would move the whole evaluation (its cutoff is the last purchase) years ahead
        future = (values > latest_ts()).fillna(False).to_numpy(dtype=bool)
        reasons.add(future, "ts in the future", lambda m: "ts in the future " + pd.Series(values[m]).dt.strftime(TS_TEXT)
                    + FUTURE_NOTE)


def _table_rules(canon: pd.DataFrame, spec: TableSpec, reasons: Reasons, rows: np.ndarray) -> None:
    """Duplicates: an exact repeat of an event, or a second row for an item_id."""
    if spec.name == "events":
        dup, first = _duplicates(canon, reasons.open)
        reasons.add(dup, "duplicate event", lambda m: "duplicate of row " + pd.Series(rows[first[m]]).astype(str))
    elif spec.name == "items":
        dup, first = _duplicates(canon[["item_id"]], reasons.open)
        reasons.add(dup, "duplicate item_id", lambda m: "duplicate item_id of row " + pd.Series(rows[first[m]]).astype(str))


def _duplicates(frame: pd.DataFrame, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among ``candidates``, rows equal to an earlier one, and the position of that first one."""
    positions = np.flatnonzero(candidates)
    dup = np.zeros(len(frame), dtype=bool)
    first = np.full(len(frame), -1, dtype=np.int64)
    # A row can only repeat another if its values in the first j columns, taken together, repeat:
    # narrow the candidates by a growing key, one column at a time (numbers and times first, they
    # hash fastest; the key stays an int64 code), before grouping on every column. On event data
    # the first one or two columns leave almost nothing to group, and no column set is copied.
    if len(frame.columns) > 1:
        key = None
        for name in sorted(frame.columns, key=lambda c: not _typed(frame[c])):
            if len(positions) < 2:
                break
            col = frame[name]
            values = col if len(positions) == len(frame) else col.iloc[positions]
            codes, uniques = pd.factorize(values, use_na_sentinel=False)  # NA is a value, as in the groupby
            codes = codes.astype(np.int64)
            if key is not None:
                codes, _ = pd.factorize(key * (len(uniques) + 1) + codes)
            repeated = pd.Series(codes).duplicated(keep=False).to_numpy()
            positions, key = positions[repeated], codes[repeated].astype(np.int64)
    if len(positions) < 2:
        return dup, first
    group = frame.iloc[positions].groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy()
    _, first_index = np.unique(group, return_index=True)
    first[positions] = positions[first_index[group]]
    dup[positions] = first[positions] != positions
    return dup, first


def check_event_types(values: pd.Series, source: str) -> None:
    """A column where no event type is known means another vocabulary, not bad rows."""
    present = values.notna().to_numpy()
    unknown = present & ~values.isin(EVENT_TYPES).to_numpy(dtype=bool)
    if unknown.any() and not (present & ~unknown).any():
        found = ", ".join(map(repr, pd.unique(values[unknown])[:5]))
        raise IngestError(f"{source}: column event_type: expected one of {', '.join(EVENT_TYPES)}; found {found}")


def _whole_column(col: pd.Series, column: Column, missing: np.ndarray, bad: np.ndarray, source: str) -> None:
    """A column where no value is usable means the wrong file or layout, not bad rows."""
    if (~missing & ~bad).any() or (column.nullable and not bad.any()):
        return
    if bad.any():
        example = quote(col[bad].iloc[:1]).iloc[0]
        hint = ""
        if column.kind == "float" and col[bad].astype(str).str.fullmatch(r"-?\d+,\d+").mean() > 0.5:
            hint = "; the values look like decimal commas ('2,55'): write decimals with a point ('2.55')"
        raise IngestError(f"{source}: column {column.name}: {EXPECTED[column.kind]}; no value parses (first: {example})"
                          f"{hint}")
    raise IngestError(f"{source}: column {column.name}: every value is empty ({EXPECTED[column.kind]})")


def _absent(kind: str, n: int):
    """An optional column the file does not have."""
    if kind == "float":
        return np.full(n, np.nan)
    if kind == "bool":
        return np.ones(n, dtype=bool)
    return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype="string")


def _normalise_columns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    names = [str(c).strip().lower() for c in df.columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise IngestError(f"{source}: column {', '.join(map(repr, repeated))} appears more than once")
    return df.set_axis(names, axis=1).reset_index(drop=True)


def quote(values: pd.Series) -> pd.Series:
    """Values in single quotes, cut at 40 characters, for reason texts."""
    return "'" + pd.Series(values).astype("string").fillna("").str.slice(0, 40) + "'"
