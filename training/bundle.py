"""A model bundle: everything the service needs to answer, in one folder without pickle.

    bundle/
      meta.json        model name, kind, trained_at, data digest, metrics
      candidate.json   the recipe (interaction config + model config)
      users.npz        user vocabulary (external id <-> row)
      items.npz        item vocabulary
      bought.npz       users x items purchase counts (CSR), for "exclude already bought"
      model/           the recommender (model.json + arrays)
      fallback/        popularity recommender for unknown users and to fill short lists

Composition lives here, once: the model answers known users, the fallback the rest, and
the answer says which (``source``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from features.vocab import IdVocab
from training.recommenders import Recommender, load_model, topk


@dataclass
class Answer:
    item_ids: list[str]
    scores: list[float]
    source: str  # "model:<name>" or "fallback:<name>"


@dataclass
class ModelBundle:
    model: Recommender
    fallback: Recommender
    users: IdVocab
    items: IdVocab
    bought: sp.csr_matrix
    meta: dict = field(default_factory=dict)
    candidate: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.bought.shape != (len(self.users), len(self.items)):
            raise ValueError(f"bought matrix {self.bought.shape} != (users, items) ({len(self.users)}, {len(self.items)})")
        # the fallback list is the same for everyone: rank it once, at load time
        self._fallback_rows, _ = self.fallback.recommend(np.array([0]), k=len(self.items))
        self._fallback_rows = self._fallback_rows[0][self._fallback_rows[0] >= 0]

    @property
    def name(self) -> str:
        return self.meta.get("name", self.model.kind)

    @property
    def fallback_name(self) -> str:
        return self.meta.get("fallback", self.fallback.kind)

    def _exclusions(self, row: int, exclude_bought: bool, exclude_ids: list[str]) -> np.ndarray:
        rows = self.items.rows(exclude_ids) if exclude_ids else np.empty(0, np.int64)
        rows = rows[rows >= 0]
        if exclude_bought and row >= 0:
            rows = np.concatenate([rows, self.bought.indices[self.bought.indptr[row] : self.bought.indptr[row + 1]]])
        return np.unique(rows)

    def _popular(self, k: int, excluded: np.ndarray) -> np.ndarray:
        rows = self._fallback_rows
        if len(excluded):
            rows = rows[~np.isin(rows, excluded)]
        return rows[:k]

    def recommend(self, user_id: str, k: int = 10, exclude_bought: bool = True, exclude_ids: list[str] = ()) -> Answer:
        """Top-k for a user; unknown users get the fallback, short lists are filled from it."""
        row = self.users.row(user_id)
        excluded = self._exclusions(row, exclude_bought, list(exclude_ids))
        if row < 0:
            return self.popular(k, list(exclude_ids))
        mask = sp.csr_matrix((np.ones(len(excluded)), (np.zeros(len(excluded), int), excluded)), shape=(1, len(self.items)))
        rows, scores = topk(self.model.scores(np.array([row])), k, mask)
        keep = rows[0] >= 0
        rows, scores = rows[0][keep], scores[0][keep]
        if len(rows) < k:
            extra = self._popular(k - len(rows), np.concatenate([excluded, rows]))
            rows, scores = np.concatenate([rows, extra]), np.concatenate([scores, np.zeros(len(extra), np.float32)])
        return Answer(self.items.external(rows).tolist(), [round(float(s), 6) for s in scores], f"model:{self.name}")

    def popular(self, k: int = 10, exclude_ids: list[str] = ()) -> Answer:
        """The fallback list, with ``exclude_ids`` left out."""
        rows = self._popular(k, self._exclusions(-1, False, list(exclude_ids)))
        return Answer(self.items.external(rows).tolist(), [0.0] * len(rows), f"fallback:{self.fallback_name}")

    def similar_items(self, item_id: str, k: int = 10) -> Answer:
        """Items like ``item_id``; unknown items (or a model without item vectors) get the fallback."""
        row = self.items.row(item_id)
        if row < 0:
            return self.popular(k, [item_id])
        try:
            rows, scores = self.model.similar_items(np.array([row]), k)
        except NotImplementedError:
            return self.popular(k, [item_id])
        keep = rows[0] >= 0
        return Answer(self.items.external(rows[0][keep]).tolist(), [round(float(s), 6) for s in scores[0][keep]],
                      f"model:{self.name}")

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model")
        self.fallback.save(path / "fallback")
        self.users.save(path / "users.npz")
        self.items.save(path / "items.npz")
        sp.save_npz(path / "bought.npz", self.bought.tocsr(), compressed=True)
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        (path / "candidate.json").write_text(json.dumps(self.candidate, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "ModelBundle":
        path = Path(path)
        for name in ("meta.json", "users.npz", "items.npz", "bought.npz", "model", "fallback"):
            if not (path / name).exists():
                raise FileNotFoundError(f"model bundle {path} is incomplete: {name} is missing")
        return cls(
            model=load_model(path / "model"),
            fallback=load_model(path / "fallback"),
            users=IdVocab.load(path / "users.npz"),
            items=IdVocab.load(path / "items.npz"),
            bought=sp.load_npz(path / "bought.npz").tocsr(),
            meta=json.loads((path / "meta.json").read_text()),
            candidate=json.loads((path / "candidate.json").read_text()) if (path / "candidate.json").exists() else {},
        )
