"""Second stage: candidates from several retrievers, re-ranked by a LightGBM lambdarank model.

Training makes its own labels in time: the retrievers are fitted on the data up to
``now - label_days``; the items each user newly bought in the last ``label_days`` are the
positives among their candidates. With ``label_periods`` > 1 the periods before are stacked the
same way (retrievers up to each period's start), so the model learns from several months rather
than one. The retrievers are then refitted on all the data of the view for scoring. Features per (user, item): each retriever's score and rank, the item's
popularity, and the user's activity (items in their row). With ``linear_c``, a logistic regression on the same
features is averaged with the trees on standardised scores (training/linear_member.py): trees cannot score
beyond the values of their training periods (a Christmas run-up's counts), a linear member can.

Known shoppers and folded-in rows go through the same candidate generation and features:
the caller's exclusions are left out before candidates are taken, every retriever sees the
row as it was trained (binary retrievers: 1.0 per item), and the activity comes from the row.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, Field

from features.interactions import TrainingView, purchases
from training.linear_member import LinearMember, blend_scale, blended
from training.recommenders.base import Recommender, as_trained, csr_arrays, csr_from, first_similarity, topk
from training.recommenders.blend import BlendPart
from training.recommenders.fitting import BASE_MODELS, fit_base
from training.recommenders.part_rows import PartRows


class RankerSettings(BaseModel):
    """How the second stage is trained, whatever its retrievers."""

    candidates: int = Field(50, ge=5, le=1000, description="candidates taken from each retriever per user")
    label_days: float = Field(30, gt=0, description="the period before 'now' whose purchases label the training rows")
    label_periods: int = Field(1, ge=1, le=6, description="label periods stacked, most recent first: each period's "
                               "rows come from the retrievers fitted up to its start (more rows, less of one month's luck)")
    max_train_users: int = Field(20_000, ge=10, description="users sampled to train the ranker")
    n_estimators: int = Field(150, ge=1, description="boosting rounds (few, small trees: a shop's label period is small)")
    learning_rate: float = Field(0.03, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(100, ge=1)
    linear_c: Optional[float] = Field(None, gt=0, description="with a value: a logistic regression on the same "
                                      "candidate features (inverse L2 strength), averaged with the trees on standardised "
                                      "scores (training/linear_member.py); null: the trees alone")
    seed: int = Field(42)


class RankerConfig(RankerSettings):
    kind: Literal["ranker"] = "ranker"
    item_time: bool = Field(
        True, description="item features in time: distinct buyers in the last 7 and 30 days, days since first and last sale")
    retrievers: list[BlendPart] = Field(min_length=1, description="candidate generators (their weights are unused)")


class RankerRecommender(Recommender):
    kind = "ranker"
    Config = RankerConfig
    part_rows_: PartRows | None = None  # each part's training rows (fit_view); None: one row for all
    linear_: LinearMember | None = None  # with ``linear_c``: the linear member (``_fit_linear``)
    blend_: dict | None = None

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, interactions: sp.csr_matrix) -> Self:
        raise TypeError("the ranker needs timestamps to make labels: fit it with fit_view(TrainingView)")

    def fit_view(self, view: TrainingView) -> Self:
        c = self.config
        x, y, groups = [], [], []
        self.label_groups_ = []  # users with a positive, per label period used (most recent first)
        end = view
        for period in range(c.label_periods):
            past = view.until(view.now - pd.Timedelta(days=c.label_days * (period + 1)))
            if period and past.bought.nnz == 0:  # the shop's history ends here
                break
            rng = np.random.default_rng(c.seed if period == 0 else [c.seed, period])  # period 0: as with one period
            before = len(groups)
            self._label_rows(past, end, rng, x, y, groups)
            self.label_groups_.append(len(groups) - before)
            end = past
        if not groups:
            raise ValueError("ranker: no user has a newly bought item among the candidates in the label period")
        self.booster_ = self._boost(x, y, groups)
        self._fit_linear(x, y)
        self._fit_retrievers(view)  # and the item statistics as of now
        self.part_rows_ = PartRows.of_view(view, self.config.retrievers)
        return self

    def _label_rows(self, past: TrainingView, end: TrainingView, rng, x: list, y: list, groups: list) -> None:
        """Training rows of one label period: candidates and features as of ``past``, labels from
        what each user newly bought by ``end``."""
        c = self.config
        self._fit_retrievers(past)
        label = (end.bought - past.bought).tocsr()
        label.data = (label.data > 0).astype(np.float32)
        label.eliminate_zeros()
        history = past.matrix(self.row_config)
        users = np.flatnonzero((np.diff(label.indptr) > 0) & (np.diff(past.bought.indptr) > 0))
        if len(users) > c.max_train_users:
            users = np.sort(rng.choice(users, c.max_train_users, replace=False))
        for start in range(0, len(users), 2000):
            rows = users[start : start + 2000]
            cand, feats = self._candidates(self._retriever_scores(rows), past.bought[rows], history[rows])
            truth = label[rows]
            hit = np.asarray(truth[np.repeat(np.arange(len(rows)), cand.shape[1]), cand.ravel()]).reshape(cand.shape) > 0
            for r in range(len(rows)):
                valid = cand[r] >= 0
                if hit[r][valid].any():
                    x.append(feats[r][valid]); y.append(hit[r][valid].astype(int)); groups.append(int(valid.sum()))

    def _boost(self, x: list[np.ndarray], y: list[np.ndarray], groups: list[int]):
        import lightgbm as lgb

        c = self.config
        return lgb.LGBMRanker(
            objective="lambdarank", n_estimators=c.n_estimators, learning_rate=c.learning_rate, num_leaves=c.num_leaves,
            min_child_samples=c.min_data_in_leaf, random_state=c.seed, deterministic=True, force_row_wise=True,
            n_jobs=2, verbose=-1,
        ).fit(np.vstack(x), np.concatenate(y), group=groups).booster_

    def _fit_linear(self, x: list[np.ndarray], y: list[np.ndarray]) -> None:
        """The linear member on (at most ``LINEAR_MAX_ROWS`` of) the trees' training rows, and each member's score
        mean and spread there, which put the two on one scale."""
        self.linear_, self.blend_ = None, None
        if self.config.linear_c is None:
            return
        X, Y = np.vstack(x), np.concatenate(y)
        if len(X) > LINEAR_MAX_ROWS:
            keep = np.sort(np.random.default_rng([self.config.seed, 1]).choice(len(X), LINEAR_MAX_ROWS, replace=False))
            X, Y = X[keep], Y[keep]
        self.linear_ = LinearMember.fit(X, Y, self.config.linear_c, self.config.seed)
        self.blend_ = blend_scale(self.booster_.predict(X, num_threads=1), self.linear_.decision(X))

    def _score_candidates(self, feats: np.ndarray) -> np.ndarray:
        """(rows,) the trees' score of each candidate's features, or with the linear member the sum of both
        members' standardised scores."""
        trees = self.booster_.predict(feats, num_threads=1)
        return trees if self.linear_ is None else blended(self.blend_, trees, self.linear_.decision(feats))

    @property
    def row_config(self):
        """How a shopper's row is built: the first personal retriever's interactions."""
        personal = [p for p in self.config.retrievers if p.model.kind != "popular"] or self.config.retrievers
        return personal[0].interactions

    def _fit_retrievers(self, view: TrainingView) -> None:
        self.retrievers_ = [fit_base(view, p.model, p.interactions) for p in self.config.retrievers]
        self._stats(view)

    def _stats(self, view: TrainingView) -> None:
        m = view.matrix(self.config.retrievers[0].interactions)
        self.item_popularity_ = np.log1p(np.diff(m.tocsc().indptr)).astype(np.float32)
        self.item_time_ = item_time_features(view) if self.config.item_time else None
        self.n_items_ = m.shape[1]
        self.bought_ = view.bought
        self.history_ = view.matrix(self.row_config)

    # -- scoring ---------------------------------------------------------------------------
    def _retriever_scores(self, user_rows: np.ndarray) -> list[np.ndarray]:
        return [r.scores(user_rows) for r in self.retrievers_]

    def _candidates(self, scores: list[np.ndarray], exclude: sp.csr_matrix, history: sp.csr_matrix,
                    include: np.ndarray | None = None):
        """Union of each retriever's top candidates (``exclude`` left out), then the item rows of ``include`` that
        are not among them (a caller's candidates, for every row), and their features: (n, m) item rows padded with
        -1, and (n, m, n_features) float32 (a retriever's missing score, e.g. an item outside EASE's cap, is NaN:
        missing to LightGBM). A retriever's rank feature is the item's rank among the row's own candidates (an
        included item's: how many of them score higher), so the own candidates' features, and scores, are the same
        with or without ``include``."""
        tops = [topk(s.astype(np.float32, copy=True), self.config.candidates, exclude)[0] for s in scores]
        cand, added = _unique_keep_order(np.concatenate(tops, axis=1)), None
        if include is not None and len(include):
            own = (cand >= 0).sum(axis=1)
            extra = np.broadcast_to(np.asarray(include, dtype=cand.dtype), (len(cand), len(include)))
            cand = _unique_keep_order(np.concatenate([cand, extra], axis=1))
            added = (np.arange(cand.shape[1])[None, :] >= own[:, None]) & (cand >= 0)
        safe = np.where(cand >= 0, cand, 0)
        cols = []
        for s in scores:
            val = np.take_along_axis(s, safe, axis=1)
            val = np.where(np.isfinite(val), val, np.nan)
            key = np.where((cand >= 0) & np.isfinite(val), val, -np.inf)
            if added is None:
                rank = np.argsort(np.argsort(-key, axis=1), axis=1)
            else:  # the own candidates ranked among themselves; an added one by how many of them score higher
                own_key = np.where(added, -np.inf, key)
                rank = np.where(added, (own_key[:, None, :] > key[:, :, None]).sum(axis=2),
                                np.argsort(np.argsort(-own_key, axis=1), axis=1))
            cols += [val, rank.astype(np.float32)]
        activity = np.log1p(np.diff(sp.csr_matrix(history).indptr)).astype(np.float32)
        cols += [self.item_popularity_[safe], np.repeat(activity[:, None], cand.shape[1], axis=1)]
        if self.config.item_time:
            cols += list(np.moveaxis(self.item_time_[safe], 2, 0))
        return cand, np.stack(cols, axis=2).astype(np.float32)

    def _rank(self, scores: list[np.ndarray], exclude: sp.csr_matrix, history: sp.csr_matrix,
              include: np.ndarray | None = None) -> np.ndarray:
        cand, feats = self._candidates(scores, exclude, history, include)
        n, m = cand.shape
        pred = self._score_candidates(feats.reshape(n * m, -1)).reshape(n, m)
        out = np.full((n, self.n_items_), -np.inf, dtype=np.float32)
        valid = cand >= 0
        rows = np.repeat(np.arange(n), m).reshape(n, m)
        out[rows[valid], cand[valid]] = pred[valid]
        return out

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        user_rows = np.asarray(user_rows, dtype=np.int64)
        return self._rank(self._retriever_scores(user_rows), self.bought_[user_rows], self.history_[user_rows])

    def score_rows(self, user_items: sp.csr_matrix, exclude: sp.csr_matrix | None = None,
                   include: np.ndarray | None = None) -> np.ndarray:
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        exclude = sp.csr_matrix(user_items.shape, dtype=np.float32) if exclude is None else sp.csr_matrix(exclude)
        scores = [r.score_rows(as_trained(user_items, p.interactions.binary), exclude)
                  for p, r in zip(self.config.retrievers, self.retrievers_)]
        return self._rank(scores, exclude, user_items, include)

    def score_events(self, row: sp.csr_matrix, user_row: int, items: np.ndarray, kinds,
                     exclude: sp.csr_matrix | None = None, include: np.ndarray | None = None) -> np.ndarray:
        """Each retriever reads the shopper's row as built by its own config (its training row plus the new
        events); the activity feature reads ``row``, as for known shoppers and ``score_rows``."""
        if self.part_rows_ is None:  # saved before the part rows were kept
            return self.score_rows(row, exclude, include)
        exclude = sp.csr_matrix(row.shape, dtype=np.float32) if exclude is None else sp.csr_matrix(exclude)
        scores = [r.score_rows(self.part_rows_.row(i, user_row, items, kinds, self.n_items_), exclude)
                  for i, r in enumerate(self.retrievers_)]
        return self._rank(scores, exclude, sp.csr_matrix(row, dtype=np.float32), include)

    def scores_of(self, item_rows: np.ndarray, user_row: int, events: tuple | None = None) -> np.ndarray:
        """The given items scored as candidates of the shopper's own (Recommender.scores_of): a caller's candidate
        that none of the retrievers put among the shopper's top candidates is scored too, not left at -inf.
        Bought items are scored as well (a caller may list them)."""
        item_rows = np.asarray(item_rows, dtype=np.int64)
        if events is not None:
            return self.score_events(events[0], user_row, *events[1:], include=item_rows)[0][item_rows]
        rows = np.array([user_row], dtype=np.int64)
        return self._rank(self._retriever_scores(rows), self.bought_[rows], self.history_[rows], item_rows)[0][item_rows]

    @property
    def n_items(self) -> int:
        return self.n_items_

    def item_similarity(self, item_rows: np.ndarray) -> np.ndarray:
        return first_similarity(self.retrievers_, item_rows)

    def similarity_between(self, item_rows: np.ndarray, among: np.ndarray) -> np.ndarray:
        return first_similarity(self.retrievers_, item_rows, among)

    def _arrays(self) -> dict[str, np.ndarray]:
        timed = {} if self.item_time_ is None else {"item_time": self.item_time_}
        parts = {} if self.part_rows_ is None else self.part_rows_.arrays()
        return ({"item_popularity": self.item_popularity_, "n_items": np.array(self.n_items_)} | timed | parts
                | csr_arrays("bought", self.bought_) | csr_arrays("history", self.history_))

    def _set_arrays(self, a: dict[str, np.ndarray]) -> None:
        self.item_popularity_, self.n_items_ = a["item_popularity"], int(a["n_items"])
        self.item_time_ = a.get("item_time")
        if self.item_time_ is None:  # trained without the items' time features (or saved before they existed)
            self.config = self.config.model_copy(update={"item_time": False})
        self.bought_ = csr_from(a, "bought")
        self.history_ = csr_from(a, "history") if "history_data" in a else self.bought_  # bundles saved before rows
        self.part_rows_ = PartRows.from_arrays(a, self.config.retrievers)

    def save(self, path: Path) -> None:
        super().save(path)
        for i, r in enumerate(self.retrievers_):
            r.save(Path(path) / f"retriever{i}")
        self.booster_.save_model(str(Path(path) / "ranker.txt"))
        if self.linear_ is not None:
            (Path(path) / "linear.json").write_text(json.dumps({"member": self.linear_.to_json(), "blend": self.blend_}))

    @classmethod
    def load(cls, path: Path) -> Self:
        import lightgbm as lgb

        model = super().load(path)
        model.retrievers_ = [BASE_MODELS[p.model.kind].load(Path(path) / f"retriever{i}")
                             for i, p in enumerate(model.config.retrievers)]
        model.booster_ = lgb.Booster(model_file=str(Path(path) / "ranker.txt"))
        model.linear_, model.blend_ = None, None
        if model.config.linear_c is not None:
            saved = json.loads((Path(path) / "linear.json").read_text())
            model.linear_, model.blend_ = LinearMember.from_json(saved["member"]), saved["blend"]
        return model


TIME_WINDOWS_DAYS = (7.0, 30.0)
LINEAR_MAX_ROWS = 200_000  # a linear model of ~20 features needs few rows; the trees' can be millions


def item_time_features(view: TrainingView) -> np.ndarray:
    """(n_items, 2 + len(TIME_WINDOWS_DAYS)) float32, as of ``view.now``: log1p distinct buyers in each
    recent window, days since the item's first and last sale (NaN when never sold: missing to LightGBM)."""
    log = purchases(view.events, view.orders)
    rows = view.items.rows(log["item_id"])
    age = ((view.now - log["ts"]).dt.total_seconds() / 86400.0).to_numpy()
    users = view.users.rows(log["user_id"])
    out = np.full((len(view.items), len(TIME_WINDOWS_DAYS) + 2), np.nan, dtype=np.float32)
    for j, days in enumerate(TIME_WINDOWS_DAYS):
        recent = age <= days
        pairs = np.unique(np.stack([rows[recent], users[recent]]), axis=1)
        out[:, j] = np.log1p(np.bincount(pairs[0], minlength=len(view.items)))
    first = pd.Series(age).groupby(rows).max()
    last = pd.Series(age).groupby(rows).min()
    out[first.index.to_numpy(), -2] = first.to_numpy()
    out[last.index.to_numpy(), -1] = last.to_numpy()
    return out


def _unique_keep_order(rows: np.ndarray) -> np.ndarray:
    """Per row, distinct ids in first-seen order, moved left and padded with -1 (vectorised)."""
    order = np.argsort(rows, axis=1, kind="stable")
    srt = np.take_along_axis(rows, order, axis=1)
    dup = np.zeros_like(rows, dtype=bool)
    dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
    drop = np.zeros_like(dup)
    np.put_along_axis(drop, order, dup, axis=1)
    out = np.where(drop, -1, rows)
    left = np.argsort(out < 0, axis=1, kind="stable")
    return np.take_along_axis(out, left, axis=1)

