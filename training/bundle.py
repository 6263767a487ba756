"""A model bundle: everything the service needs to answer, in one folder without pickle.

    bundle/
      meta.json          model name, kind, trained_at, data digest, metrics
      candidate.json     the recipe (interaction config + model config)
      users.npz          user vocabulary (external id <-> row)
      items.npz          item vocabulary
      bought.npz         users x items purchase counts (CSR): "exclude already bought"
      interactions.npz   users x items rows as the model saw them (CSR): fold-in of new events
      together.npz       items x items bought-together rule confidences (CSR)
      catalog.parquet    per item row: category, price, in_stock (for filters); optional
      reference.json     training-time distributions that live traffic is compared with (training/reference.py); optional
      top_lists/         each known shopper's best items, computed once (training/top_lists.py); optional
      model/             the recommender (model.json + arrays)
      fallback/          popularity recommender for unknown users and to fill short lists
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.vocab import IdVocab
from training.recommenders import Recommender, load_model
from training.top_lists import TopLists

REQUIRED = ("meta.json", "users.npz", "items.npz", "bought.npz", "interactions.npz", "together.npz", "model", "fallback")


@dataclass
class ModelBundle:
    model: Recommender
    fallback: Recommender
    users: IdVocab
    items: IdVocab
    bought: sp.csr_matrix
    interactions: sp.csr_matrix
    together: sp.csr_matrix
    catalog: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)
    candidate: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # quantity -> Reference.to_json() (training/reference.py)
    top_lists: TopLists | None = None  # known shoppers' answers, precomputed (training/top_lists.py)

    def __post_init__(self):
        shape = (len(self.users), len(self.items))
        for name in ("bought", "interactions"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} matrix has shape {getattr(self, name).shape}, expected (users, items) {shape}")
        if self.together.shape != (len(self.items), len(self.items)):
            raise ValueError(f"together matrix has shape {self.together.shape}, expected (items, items)")
        if self.catalog is not None and len(self.catalog) != len(self.items):
            raise ValueError(f"catalog has {len(self.catalog)} rows, expected one per item ({len(self.items)})")

    def never_rows(self) -> np.ndarray:
        """Sorted item rows of the catalogue categories no answer recommends (``meta["never_recommend"]``, from
        TrainConfig.never_recommend; none for a bundle without a catalogue or saved before the setting)."""
        categories = self.meta.get("never_recommend") or []
        if self.catalog is None or not categories:
            return np.empty(0, np.int64)
        return np.flatnonzero(self.catalog["category"].isin(categories).fillna(False).to_numpy(dtype=bool))

    def left_out(self, rows: np.ndarray, bought: bool = True) -> sp.csr_matrix | None:
        """What ``rows`` (user rows) leave out of their lists, a CSR aligned with them: their purchases (with
        ``bought``) and the never-recommended items (``never_rows``); None for nothing."""
        rows = np.asarray(rows, dtype=np.int64)
        own = self.bought.tocsr()[rows] if bought else None
        never = self.never_rows()
        if not len(never):
            return own
        n, m = len(rows), len(never)
        everyone = sp.csr_matrix((np.ones(n * m, np.float32), np.tile(never, n), np.arange(n + 1) * m),
                                 shape=(n, len(self.items)))
        return everyone if own is None else (own + everyone).tocsr()

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model")
        self.fallback.save(path / "fallback")
        self.users.save(path / "users.npz")
        self.items.save(path / "items.npz")
        for name in ("bought", "interactions", "together"):
            sp.save_npz(path / f"{name}.npz", getattr(self, name).tocsr(), compressed=False)
        if self.catalog is not None:
            self.catalog.to_parquet(path / "catalog.parquet", index=False)
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        (path / "candidate.json").write_text(json.dumps(self.candidate, indent=2, sort_keys=True))
        if self.reference:
            (path / "reference.json").write_text(json.dumps(self.reference, indent=2, sort_keys=True))
        if self.top_lists is not None:
            self.top_lists.save(path / "top_lists")
        elif (path / "top_lists").exists():  # another model's lists must not stay beside this one
            shutil.rmtree(path / "top_lists")

    @classmethod
    def load(cls, path: Path) -> "ModelBundle":
        path = Path(path)
        missing = [name for name in REQUIRED if not (path / name).exists()]
        if missing:
            raise FileNotFoundError(f"model bundle {path} is incomplete: {', '.join(missing)} missing")
        model = load_model(path / "model")
        return cls(
            model=model,
            fallback=load_model(path / "fallback"),
            users=IdVocab.load(path / "users.npz"),
            items=IdVocab.load(path / "items.npz"),
            bought=sp.load_npz(path / "bought.npz").tocsr(),
            interactions=sp.load_npz(path / "interactions.npz").tocsr(),
            together=sp.load_npz(path / "together.npz").tocsr(),
            catalog=pd.read_parquet(path / "catalog.parquet") if (path / "catalog.parquet").exists() else None,
            meta=json.loads((path / "meta.json").read_text()),
            candidate=json.loads((path / "candidate.json").read_text()) if (path / "candidate.json").exists() else {},
            reference=json.loads((path / "reference.json").read_text()) if (path / "reference.json").exists() else {},
            top_lists=TopLists.load(path / "top_lists", model) if (path / "top_lists" / "meta.json").exists() else None,
        )
