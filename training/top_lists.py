"""Top lists: each known shopper's best items, computed once with the bundle, read by the storefront.

A known shopper without new events gets the same answer until the next model: the model's best items, the
ones they bought left out. On a wide catalogue that answer costs a search per request (a 100k-item catalogue:
~0.15 ms through the length-pruned search, ~3 ms scoring every item, more under a filter that leaves out half of it), and a
storefront asks for it on most page views. The lists hold it, computed exactly when the bundle is made:

    bundle/top_lists/
      meta.json        {"length": n, "exclude_bought": true, "users": count}
      user_rows.npy    int64 (users,), sorted: the user rows that have a list (a non-empty interaction row)
      items.npy        int32 (users, n): item rows, best first (-1 pads a catalogue with fewer allowed items)
      scores.npy       float32 (users, n): the model's scores of those items
      reasons.npy      int32 (users, n): the bought item most similar to each ("because you bought"), -1: none

The lists are the batch path's answer (``Recommender.recommend`` with the bought items excluded, the top-k
that evaluation and ``shoprec score-all`` run) and the reasons the storefront's own rule
(``Storefront._reason_rows``). A request for k <= n items, with filters or exclusions, takes the first k allowed
items of the list: that is the top k of the allowed items exactly (an item missing from the list scores at
most as much as its last), whenever the list holds k allowed items; otherwise the storefront computes as
before. The scores are the batch product's: a BLAS computes a block of shoppers in another order than one
shopper, so a score can differ from the one computed per request in float32's last bit (the items, their order
and the reasons are the same; checked in tests/test_top_lists.py and on the benchmark model by
``benchmarks.serving_floors``). Arrays are memory-mapped: the service's workers share one copy.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

LENGTH = 50  # k up to 50 from the list; a filter letting a share p of the items through leaves ~50p of them
MIN_ITEMS = 20_000  # narrower catalogues are scored exactly per request in well under a millisecond: no lists
FILES = ("user_rows", "items", "scores", "reasons")


@dataclass
class TopLists:
    user_rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray
    model: object | None = field(default=None, repr=False, compare=False)  # the model they were computed from

    def __post_init__(self):
        n = len(self.user_rows)
        for name in ("items", "scores", "reasons"):
            if getattr(self, name).shape != (n, self.length):
                raise ValueError(f"top lists: {name} has shape {getattr(self, name).shape}, expected ({n}, {self.length})")

    @property
    def length(self) -> int:
        return self.items.shape[1] if self.items.ndim == 2 else 0

    def of(self, user_row: int) -> int:
        """The position of ``user_row``'s list, -1 when it has none."""
        at = int(np.searchsorted(self.user_rows, user_row))
        return at if at < len(self.user_rows) and self.user_rows[at] == user_row else -1

    @classmethod
    def build(cls, bundle, length: int = LENGTH, min_items: int = MIN_ITEMS, block: int = 512,
              threads: int | None = None) -> "TopLists | None":
        """The lists of every user row with interactions; None for catalogues under ``min_items``."""
        from training.storefront import Storefront

        if len(bundle.items) < min_items:
            return None
        store = Storefront(bundle)  # exact: its reason rule
        rows = np.flatnonzero(np.diff(bundle.interactions.indptr) > 0).astype(np.int64)
        n = min(length, len(bundle.items))
        items = np.full((len(rows), n), -1, np.int32)
        scores = np.full((len(rows), n), -np.inf, np.float32)
        reasons = np.full((len(rows), n), -1, np.int32)
        def one(lo: int) -> None:
            part = rows[lo : lo + block]
            with threadpool_limits(1, "blas"):
                top, best = bundle.model.recommend(part, n, bundle.left_out(part))  # bought and never-recommended
                for i, row in enumerate(part):
                    keep = (top[i] >= 0) & np.isfinite(best[i])
                    got = top[i][keep]
                    items[lo + i, : len(got)], scores[lo + i, : len(got)] = got, best[i][keep]
                    reasons[lo + i, : len(got)] = store._reason_rows(got, np.unique(store._bought(row)))

        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            list(pool.map(one, range(0, len(rows), block)))
        return cls(rows, items, scores, reasons, model=bundle.model)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in FILES:  # each file replaced whole: a reader's memory map keeps the old one
            tmp = path / f".{name}.{os.getpid()}.tmp.npy"
            np.save(tmp, np.asarray(getattr(self, name)), allow_pickle=False)
            tmp.replace(path / f"{name}.npy")
        (path / "meta.json").write_text(json.dumps({"length": self.length, "exclude_bought": True,
                                                    "users": len(self.user_rows)}, indent=2))

    @classmethod
    def load(cls, path: Path, model=None) -> "TopLists":
        path = Path(path)
        # plain arrays over the memory maps: a request indexes them a few times, np.memmap's wrapping costs more
        arrays = {name: np.asarray(np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)) for name in FILES}
        return cls(**arrays, model=model)
