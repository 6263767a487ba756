"""Sums of money and quantities that give the same bits on every engine and in any row order.

A plain sum of doubles depends on the order in which the rows meet (pandas' compensated groupby sum,
DuckDB's and Spark's partitions), so its last bits differ between engines, between runs on Spark and,
through a model that reads them (a logistic regression), between machines. Every engine instead rounds
each value to a millionth (half away from zero, as SQL's ROUND), sums exact integers and divides back:
``exact_sum`` in features/relational/engine.py, ``exact_sums`` here for pandas.
Money and quantities have far fewer than six decimals."""
from __future__ import annotations

import numpy as np
import pandas as pd

MICRO_UNITS = 1_000_000.0  # the resolution: a millionth


def micro_units(values) -> np.ndarray:
    """Each value as a whole number of millionths (int64), rounded half away from zero; a missing value (NaN)
    adds nothing, as SQL's SUM skips NULL."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0) * MICRO_UNITS
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def from_micro_units(units):
    """A sum of ``micro_units`` back in units (float64): the exact integer, divided once."""
    return units.astype(np.float64) / MICRO_UNITS


def exact_sums(df: pd.DataFrame, columns: list[str], by) -> pd.DataFrame:
    """``df.groupby(by)[columns].sum()`` as every engine sums money and quantities, in one grouping (groups sorted)."""
    units = pd.DataFrame({c: micro_units(df[c]) for c in columns}, index=df.index)
    keys = [by] if isinstance(by, str) else list(by)
    return from_micro_units(units.join(df[keys]).groupby(keys, sort=True)[columns].sum())
