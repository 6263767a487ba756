"""Top-k by inner product on wide catalogues without reading every item per request.

Scoring a shopper against every item of a 100k-item catalogue reads all item factors (40 MB
at 100 factors) per request: ~3 ms, most of the work behind ``/recommend``. Two searches spare it:

* ``NormPrunedSearch`` (shoppers: known, with new events folded in, anonymous sessions): exact.
  A factor model's item vectors differ in length by orders of magnitude (a popular item's is
  long, the long tail's nearly zero), and a score ``q·x`` can never exceed ``|q|·|x|``
  (Cauchy-Schwarz). With the items sorted by length, the n-th best score of the longest block
  says how short a vector can be and still make the top n; blocks of shorter items are read (each
  raising that score) until the rest are too short, and are never read. Typically a few thousand of
  100k items: ~0.06 ms on average, p99 ~0.3 ms, the same answers as scoring them all (the
  length bound of Ram & Gray, KDD 2012, and LEMP, Teflioudi et al., SIGMOD 2015; no maintained
  Python library offers it, faiss's inner-product indexes are approximate).
* ``FactorIndex`` (``similar_items``: cosine, every vector of length 1, so lengths prune nothing):
  a faiss IVF index, approximate, clustered once at load: only the items of the ``nprobe`` lists
  nearest the query are scored (1/8 of the lists by default; recall@10 against exact search
  ~0.999 on the benchmark model, ``benchmarks/results/full.md``).

Exact search over every item stays in charge where these cannot answer exactly what was asked:
filters and exclusion lists leaving out most of the catalogue, models without factors, and
catalogues under ``MIN_ITEMS`` (where scoring them all is already cheap).

``SHOPREC_ANN=off`` turns both off; ``SHOPREC_ANN_NPROBE`` trades speed for recall in the IVF index.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

ANN_ENV, NPROBE_ENV = "SHOPREC_ANN", "SHOPREC_ANN_NPROBE"
MIN_ITEMS = 20_000
SEED = 42
log = logging.getLogger("shoprec.ann")


def enabled(environ=os.environ) -> bool:
    return (environ.get(ANN_ENV) or "auto").lower() not in ("off", "0", "false", "no")


def _item_factors(model) -> np.ndarray | None:
    """The model's item factors if it is a factor model on a catalogue wide enough to need a search."""
    try:
        _, items = model.factors()
    except NotImplementedError:
        return None
    return items if items.shape[0] >= MIN_ITEMS else None


class NormPrunedSearch:
    """Exact top-n items by inner product, reading only the items whose length lets them reach the top n."""

    FIRST_BLOCK = 2048  # the longest vectors, always scored: their n-th best score sets the bound

    def __init__(self, item_factors: np.ndarray):
        vectors = np.asarray(item_factors, dtype=np.float32)
        lengths = np.linalg.norm(vectors, axis=1)
        self.order = np.argsort(-lengths, kind="stable")  # item rows, longest vector first
        self.vectors = np.ascontiguousarray(vectors[self.order])
        self._minus_lengths = -lengths[self.order]  # ascending, for searchsorted

    @classmethod
    def for_model(cls, model, environ=os.environ) -> "NormPrunedSearch | None":
        if not enabled(environ) or (items := _item_factors(model)) is None:
            return None
        search = cls(items)
        log.info("top-k by inner product: %d items, pruned by vector length", len(search.order))
        return search

    def _needed(self, nth: float, query_length: float) -> int:
        """How many of the longest items can score at least ``nth`` (all of them when ``nth`` ≤ 0: an item of
        length zero scores 0, a negative score has no length bound)."""
        if nth <= 0:
            return len(self.order)
        # |x| >= nth / |q| is needed for q·x >= nth; a relative margin keeps float32 rounding on the safe side
        shortest = nth / query_length * (1.0 - 1e-4) if query_length > 0 else np.inf
        # the bound as float32, the lengths' type: a Python float would make searchsorted copy all of them
        return int(np.searchsorted(self._minus_lengths, np.float32(-shortest), side="right"))

    def search(self, user_vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``n`` (item rows, scores), best first (equal scores by item row)."""
        v = np.asarray(user_vector, dtype=np.float32).ravel()
        total = len(self.order)
        n = min(int(n), total)
        if n <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        read = min(total, max(self.FIRST_BLOCK, 4 * n))
        scores, length = self.vectors[:read] @ v, float(np.linalg.norm(v))
        while read < total:  # each block raises the n-th best score, which shortens what is still needed
            nth = float(np.partition(scores, len(scores) - n)[len(scores) - n])
            if (needed := self._needed(nth, length)) <= read:
                break
            end = min(needed, 2 * read)
            scores = np.concatenate([scores, self.vectors[read:end] @ v])
            read = end
        best = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        rows = self.order[best]
        ranked = np.lexsort((rows, -scores[best]))
        return rows[ranked].astype(np.int64), scores[best][ranked]


class FactorIndex:
    """Top-n items by inner product with a query vector, approximately (faiss IVF)."""

    def __init__(self, item_factors: np.ndarray, n_lists: int | None = None, nprobe: int | None = None):
        import faiss

        faiss.omp_set_num_threads(1)  # one worker per core: no threads inside a request
        vectors = np.ascontiguousarray(item_factors, dtype=np.float32)
        n, d = vectors.shape
        self.n_lists = n_lists or max(1, int(0.8 * math.sqrt(n)))
        self.nprobe = min(self.n_lists, nprobe or max(1, self.n_lists // 8))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, self.n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = SEED  # the same clusters on every load
        index.train(vectors)
        index.add(vectors)
        index.nprobe = self.nprobe
        self._quantizer, self._index = quantizer, index  # the quantizer must outlive the index

    @classmethod
    def for_vectors(cls, vectors: np.ndarray, environ=os.environ) -> "FactorIndex | None":
        """An index over ``vectors`` (e.g. a factor model's unit item vectors) if the catalogue is wide enough."""
        if not enabled(environ) or vectors.shape[0] < MIN_ITEMS:
            return None
        index = cls(vectors, nprobe=int(environ[NPROBE_ENV]) if environ.get(NPROBE_ENV) else None)
        log.info("approximate top-k: %d items in %d lists, %d probed per request", vectors.shape[0], index.n_lists,
                 index.nprobe)
        return index

    def search(self, user_vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` (item rows, scores), best first; fewer if the probed lists hold fewer."""
        scores, rows = self._index.search(np.ascontiguousarray(user_vector, dtype=np.float32).reshape(1, -1), n)
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep]
