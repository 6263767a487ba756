"""Approximate top-k for factor models on wide catalogues: a faiss IVF index, built at load.

Scoring a shopper against every item of a 100k-item catalogue reads all item factors (40 MB
at 100 factors) per request: ~3 ms, most of the work behind ``/recommend``. An inverted-file
index (faiss ``IndexIVFFlat``, inner product, the model's own score) clusters the items once
at load and scores only the items of the ``nprobe`` clusters nearest the shopper: 1/8 of the
lists by default, ~0.5 ms, recall@10 against exact search ~0.96 on the benchmark model
(``benchmarks/results/full.md`` measures it each run). Exact search stays in charge wherever
the index cannot answer exactly what was asked: filters, long exclusion lists, models without
factors, and catalogues under ``MIN_ITEMS`` (where exact search is already cheap).

``SHOPREC_ANN=off`` turns it off; ``SHOPREC_ANN_NPROBE`` trades speed for recall.
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


class FactorIndex:
    """Top-n items by inner product with a user vector, approximately (faiss IVF)."""

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
    def for_model(cls, model, environ=os.environ) -> "FactorIndex | None":
        """An index for ``model`` if it is a factor model on a catalogue wide enough to need one."""
        if (environ.get(ANN_ENV) or "auto").lower() in ("off", "0", "false", "no"):
            return None
        try:
            _, items = model.factors()
        except NotImplementedError:
            return None
        if items.shape[0] < MIN_ITEMS:
            return None
        index = cls(items, nprobe=int(environ[NPROBE_ENV]) if environ.get(NPROBE_ENV) else None)
        log.info("approximate top-k: %d items in %d lists, %d probed per request", items.shape[0], index.n_lists, index.nprobe)
        return index

    def search(self, user_vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` (item rows, scores), best first; fewer if the probed lists hold fewer."""
        scores, rows = self._index.search(np.ascontiguousarray(user_vector, dtype=np.float32).reshape(1, -1), n)
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep]
