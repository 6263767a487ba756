"""Explicit id vocabulary: external string ids <-> contiguous row numbers.

External ids are converted once, at the edge; inside, only row numbers are used.
Saved as ``.npz`` of unicode arrays (no pickle).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

FEW = 64  # up to this many ids are looked up one by one


class IdVocab:
    """Maps external ids (str) to rows 0..n-1, in the order given."""

    def __init__(self, ids: Iterable[str]):
        self.ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=str)
        self._index = pd.Index(self.ids)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][:5].tolist()
            raise ValueError(f"vocabulary ids must be unique; duplicated: {dup}")

    @classmethod
    def from_values(cls, values: Iterable[str]) -> "IdVocab":
        """Vocabulary of the distinct values, sorted, so that it is deterministic."""
        return cls(np.sort(pd.unique(pd.Series(values, dtype=str).to_numpy())))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: str) -> bool:
        return external_id in self._index

    def rows(self, external_ids: Iterable[str]) -> np.ndarray:
        """Row numbers of the ids; -1 for ids not in the vocabulary (never an IndexError)."""
        ids = external_ids if isinstance(external_ids, (list, tuple)) else list(external_ids)
        if len(ids) <= FEW:  # a request's few ids: hash lookups (building a pandas Index costs ~1 ms a call)
            return np.fromiter((self.row(str(i)) for i in ids), dtype=np.int64, count=len(ids))
        return self._index.get_indexer(pd.Index(np.asarray(ids, dtype=str))).astype(np.int64)

    def row(self, external_id: str) -> int:
        """Row of one id, -1 if unknown (a hash lookup: the per-request path of the service)."""
        try:
            return int(self._index.get_loc(external_id))  # the index is unique: one position
        except (KeyError, TypeError):
            return -1

    def external(self, rows: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(rows, dtype=np.int64)]

    def save(self, path: Path) -> None:
        np.savez(path, ids=self.ids)

    @classmethod
    def load(cls, path: Path) -> "IdVocab":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["ids"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdVocab) and np.array_equal(self.ids, other.ids)
