"""A shopper's row as each part of a composite model (blend, ranker) was trained on rows.

The parts of one model are often fitted on different interaction configs: ALS on every event
weighted, EASE and item-kNN on purchases alone, binary. A known shopper with new events must
reach each part as that part's training row for them plus the new events weighted by the same
config, or a purchases-only part reads a view as a purchase and the answer moves without any
new information. ``PartRows`` keeps the training rows once per distinct config (parts that
read no row, popularity lists, need none) and builds those rows.
"""
from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from features.interactions import InteractionConfig, TrainingView, add_events
from training.recommenders.base import csr_arrays, csr_from

PREFIX = "part_rows"


class PartRows:
    def __init__(self, configs: list[InteractionConfig], matrices: list[sp.csr_matrix], which: np.ndarray):
        self.configs, self.matrices, self.which = configs, matrices, np.asarray(which, dtype=np.int64)

    @classmethod
    def of_view(cls, view: TrainingView, parts) -> Self:
        """The training rows of ``view`` for each of ``parts`` (a blend's parts or a ranker's retrievers:
        ``interactions`` and ``model``) that reads rows, once per config."""
        keys, matrices, which = {}, [], []
        for part in parts:
            if part.model.kind == "popular":  # one list for everyone: reads no row
                which.append(-1)
                continue
            config = part.interactions
            key = config.model_dump_json()
            if key not in keys:
                keys[key] = len(matrices)
                matrices.append(view.matrix(config))
            which.append(keys[key])
        return cls([p.interactions for p in parts], matrices, np.array(which))

    def row(self, part: int, user_row: int, items: np.ndarray, kinds, n_items: int) -> sp.csr_matrix:
        """Part ``part``'s row for the shopper at ``user_row`` (-1: none in training) with new events."""
        j = self.which[part]
        return add_events(self.matrices[j] if j >= 0 else None, user_row, items, kinds, self.configs[part], n_items)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"{PREFIX}_which": self.which}
        for j, m in enumerate(self.matrices):
            out |= csr_arrays(f"{PREFIX}{j}", m)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], parts) -> Self | None:
        """None for a model saved before part rows were kept (it scores every part on one row)."""
        if f"{PREFIX}_which" not in arrays:
            return None
        which = arrays[f"{PREFIX}_which"]
        n = int(which.max()) + 1 if len(which) else 0
        return cls([p.interactions for p in parts], [csr_from(arrays, f"{PREFIX}{j}") for j in range(n)], which)
