"""The one recommender interface, shared top-k selection, and model (de)serialisation.

Every model works on row numbers of a users x items CSR matrix (float32) and exposes
``fit`` / ``scores`` / ``recommend`` / ``similar_items`` / ``save`` / ``load``, so that
evaluation, tracking and serving treat them alike.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

# Users scored at once; bounds the dense (block, n_items) float32 score matrix.
_SCORE_BUDGET = 32_000_000


def topk(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of ``scores`` (n, m), best first, skipping excluded cells.

    ``exclude`` is a CSR (n, m) aligned with the rows of ``scores``. Rows with fewer than k
    allowed columns are padded with item -1 and score -inf. Changes ``scores`` in place.
    """
    n, m = scores.shape
    if exclude is not None:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores have shape {scores.shape}")
        rows = np.repeat(np.arange(n), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    k_eff = min(k, m)
    if k_eff < m:
        part = _top_columns(scores, k_eff)
    else:
        part = np.tile(np.arange(m), (n, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    items[~np.isfinite(best)] = -1
    if k_eff < k:
        items = np.pad(items, ((0, 0), (0, k - k_eff)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return items, best


# Below this many columns per wanted item, a plain argpartition is as fast as the two-stage search.
_TWO_STAGE_MIN_RATIO = 256


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest values of each row (k < m), in no particular order.

    Exact, in two stages, for wide rows (a 100k-item catalogue): view each row as G strided
    groups of W = m // G columns and take the element-wise max over the groups (one
    SIMD-friendly pass over the scores, no copy). Each of the row's top k values lies in a
    column j whose group-max is at least the k-th largest value, and at most k columns j have
    such a max, so the top k are among the G * k columns {j + g W} of the k best j (plus the
    m - G W columns left over). A plain argpartition of the whole row costs ~10x more.
    NaN scores are ignored by the group max (fmax) and rank last, as in argpartition.
    """
    n, m = scores.shape
    if m < _TWO_STAGE_MIN_RATIO * k:
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    groups = max(2, int(np.sqrt(m / k)))
    width = m // groups
    main = scores[:, : groups * width].reshape(n, groups, width)  # a view: rows are contiguous
    group_max = np.fmax.reduce(main, axis=1)  # (n, width)
    best_cols = np.argpartition(-group_max, k - 1, axis=1)[:, :k]  # (n, k)
    cand = (best_cols[:, None, :] + (np.arange(groups, dtype=np.int64) * width)[None, :, None]).reshape(n, groups * k)
    if groups * width < m:
        rest = np.arange(groups * width, m, dtype=np.int64)
        cand = np.concatenate([cand, np.broadcast_to(rest, (n, len(rest)))], axis=1)
    cand_scores = np.take_along_axis(scores, cand, axis=1)
    pick = np.argpartition(-cand_scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(cand, pick, axis=1)


def csr_arrays(name: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """A sparse matrix as named plain arrays (``{name}_data``, ``_indices``, ``_indptr``, ``_shape``)."""
    m = sp.csr_matrix(m)
    return {f"{name}_data": m.data.astype(np.float32), f"{name}_indices": m.indices, f"{name}_indptr": m.indptr,
            f"{name}_shape": np.array(m.shape)}


def csr_from(arrays: dict[str, np.ndarray], name: str) -> sp.csr_matrix:
    """The inverse of ``csr_arrays``."""
    return sp.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                         shape=tuple(arrays[f"{name}_shape"]))


def as_trained(user_items: sp.csr_matrix, binary: bool) -> sp.csr_matrix:
    """A shopper's row as a part trained on ``binary`` interactions saw rows: 1.0 per item."""
    rows = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
    if binary:
        rows.data[:] = 1.0
    return rows


def first_similarity(models: list["Recommender"], item_rows: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """Item similarities from the first of ``models`` that has them (for composite models);
    to every item, or to the items ``among`` only."""
    for model in models:
        try:
            return model.item_similarity(item_rows) if among is None else model.similarity_between(item_rows, among)
        except NotImplementedError:
            continue
    raise NotImplementedError("no part of this model has item similarities")


class Recommender(ABC):
    """Base class: subclasses implement ``fit``, ``scores``, ``item_vectors`` and array I/O."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel | None = None):
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def fit(self, interactions: sp.csr_matrix) -> Self:
        """Learn from a users x items CSR matrix; returns self."""

    @abstractmethod
    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Dense float32 scores (len(user_rows), n_items); higher is better."""

    @abstractmethod
    def score_rows(self, user_items: sp.csr_matrix, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """Dense scores (n, n_items) for users given only their interaction rows (n, n_items).

        Used for shoppers the model has not seen as they are now: a user with new events
        (fold-in) or an anonymous session's viewed items. ``exclude`` (CSR aligned with the
        rows) marks items the caller will leave out: models that pick candidates (the ranker)
        skip them, as they do when scoring known users; the others may ignore it.
        """

    def score_events(self, row: sp.csr_matrix, user_row: int, items: np.ndarray, kinds,
                     exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """(1, n_items) scores for one shopper with new events (item rows, event types): ``row`` is their
        training row (``user_row``; -1 for none) with the events added, as the model's own interaction
        config builds rows. A single model reads ``row``; composite models rebuild each part's row from
        the part's config (training/recommenders/part_rows.py)."""
        return self.score_rows(row, exclude)

    def scores_of(self, item_rows: np.ndarray, user_row: int, events: tuple | None = None) -> np.ndarray:
        """(len(item_rows),) one shopper's scores of the given items (a caller's candidates to rerank): a known
        shopper by ``user_row``, or with new events ``(row, items, kinds)`` as ``score_events`` takes them. Models
        that score every item take them from their scores; a model that scores only candidates of its own (the
        ranker) scores these as candidates too."""
        item_rows = np.asarray(item_rows, dtype=np.int64)
        full = self.scores(np.array([user_row]))[0] if events is None else self.score_events(events[0], user_row,
                                                                                            *events[1:])[0]
        return full[item_rows]

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """Learned state as named numeric arrays."""

    @abstractmethod
    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        ...

    @property
    @abstractmethod
    def n_items(self) -> int:
        ...

    def recommend(
        self, user_rows: np.ndarray, k: int = 10, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows and scores, each (len(user_rows), k); ``exclude`` rows align with users."""
        user_rows = np.asarray(user_rows, dtype=np.int64)
        block = max(1, _SCORE_BUDGET // max(1, self.n_items))
        out_items, out_scores = [], []
        for start in range(0, len(user_rows), block):
            rows = user_rows[start : start + block]
            ex = exclude[start : start + block] if exclude is not None else None
            items, scores = topk(self.scores(rows), k, ex)
            out_items.append(items)
            out_scores.append(scores)
        if not out_items:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        return np.vstack(out_items), np.vstack(out_scores)

    def item_similarity(self, item_rows: np.ndarray) -> np.ndarray:
        """Similarity (len(item_rows), n_items) float32 of each item to every item; higher is closer.

        Default: cosine of ``item_vectors``; neighbourhood models use their own weights.
        """
        unit = self.cosine_item_vectors()
        return (unit[np.asarray(item_rows, dtype=np.int64)] @ unit.T).astype(np.float32)

    def similarity_between(self, item_rows: np.ndarray, among: np.ndarray) -> np.ndarray:
        """``item_similarity(item_rows)[:, among]``, without scoring the whole catalogue where the
        model can (vector models: only len(item_rows) x len(among) dot products)."""
        item_rows, among = np.asarray(item_rows, dtype=np.int64), np.asarray(among, dtype=np.int64)
        if (unit := self.cosine_item_vectors()) is not None:
            return (unit[item_rows] @ unit[among].T).astype(np.float32)
        return self.item_similarity(item_rows)[:, among]

    def cosine_item_vectors(self) -> np.ndarray | None:
        """``item_vectors`` scaled to unit length (zero vectors stay zero) when ``item_similarity``
        is their cosine, else None (models with their own similarity weights). Computed once per
        vectors array: normalising 100k x 100 vectors on every request was ~40 MB of work per call."""
        if type(self).item_similarity is not Recommender.item_similarity:
            return None

        def unit(vectors):
            norms = np.linalg.norm(vectors, axis=1)
            norms[norms == 0] = 1.0
            return vectors / norms[:, None]

        return self._derived("_unit_cache", self.item_vectors(), unit)

    def _derived(self, name: str, source: np.ndarray, compute) -> np.ndarray:
        """``compute(source)``, kept until ``source`` is replaced (a refit or a reload makes new arrays)."""
        cached = self.__dict__.get(name)
        if cached is None or cached[0] is not source:
            cached = (source, compute(source))
            self.__dict__[name] = cached
        return cached[1]

    def similar_items(self, item_rows: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Most similar items, the item itself left out."""
        item_rows = np.asarray(item_rows, dtype=np.int64)
        sims = self.item_similarity(item_rows)
        itself = sp.csr_matrix((np.ones(len(item_rows)), (np.arange(len(item_rows)), item_rows)), shape=sims.shape)
        return topk(sims, k, itself)

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(user factors, item factors) of a factor model whose ``scores`` are their inner products
        (for approximate top-k, training/ann.py); other models raise NotImplementedError."""
        raise NotImplementedError(f"{self.kind} is not a factor model")

    def item_vectors(self) -> np.ndarray:
        """Item representation used by ``item_similarity`` (n_items, d)."""
        raise NotImplementedError(f"{self.kind} has no item vectors")

    def save(self, path: Path) -> None:
        """``model.json`` (kind, config, array names) and one ``.npy`` per learned array under
        ``arrays/``: plain NumPy files, no pickle, loaded memory-mapped (see ``load``)."""
        path = Path(path)
        (path / "arrays").mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        for name, array in arrays.items():
            np.save(path / "arrays" / f"{name}.npy", np.asarray(array), allow_pickle=False)
        (path / "model.json").write_text(json.dumps(
            {"kind": self.kind, "config": self.config.model_dump(mode="json"), "arrays": sorted(arrays)},
            indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Arrays are memory-mapped read-only: the service's workers share one copy of the
        factors through the page cache instead of each holding its own (400 MB for 1M users
        x 100 factors), and loading is quick. A model that wrote into its arrays fails loudly."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta["kind"] != cls.kind:
            raise ValueError(f"{path} holds a {meta['kind']!r} model, not {cls.kind!r}")
        model = cls(cls.Config.model_validate(meta["config"]))
        if "arrays" not in meta and (path / "model.npz").is_file():  # bundles saved before the .npy layout
            with np.load(path / "model.npz", allow_pickle=False) as f:
                model._set_arrays({name: f[name] for name in f.files})
            return model
        missing = [n for n in meta.get("arrays", []) if not (path / "arrays" / f"{n}.npy").is_file()]
        if missing:
            raise FileNotFoundError(f"{path}/arrays lacks {', '.join(missing)}.npy")
        model._set_arrays({name: np.load(path / "arrays" / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                           for name in meta.get("arrays", [])})
        return model
