"""Storefront answers from a model bundle: the model for known shoppers, the fallback for the rest.

Composition lives here, once. Every answer says where it came from (``source``):
``model:<recipe>``, ``model:<recipe>+events`` (folded in with new events), ``session:<recipe>``
or ``fallback:<name>``. Ids are converted at this edge; the models only see rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionConfig, add_events, event_weights
from training.ann import FactorIndex, NormPrunedSearch
from training.bundle import ModelBundle
from training.recommenders import topk

EVENT_TYPES = ("view", "cart", "purchase")


@dataclass
class Answer:
    item_ids: list[str]
    scores: list[float]
    source: str
    reasons: list[str | None] = field(default_factory=list)


@dataclass
class Filters:
    """Business filters; None means no restriction."""

    category: str | None = None
    in_stock: bool | None = None
    min_price: float | None = None
    max_price: float | None = None

    def active(self) -> bool:
        return any(v is not None for v in (self.category, self.in_stock, self.min_price, self.max_price))


# Beyond this many excluded items (bought, excluded, filtered out), the search fetches candidates in proportion
# to the share left out (at most ANN_MAX_CANDIDATES), not k + each of them.
ANN_MAX_EXCLUDED = 200
FILTER_CACHE = 1024  # filter combinations whose left-out items are kept (category pages repeat)
FEW_LEFT = 0.75  # a filter leaving out more than this share of the catalogue: only the rest is scored
ANN_MAX_LEFT_OUT = 0.5  # approximate search while at most this share of the catalogue is left out
ANN_MAX_CANDIDATES = 1000
SCORE_ALLOWED_MAX = 5000  # a known shopper's list short of k: the allowed items scored one by one, up to this many


class Storefront:
    def __init__(self, bundle: ModelBundle, approximate: bool = False):
        """``approximate``: on wide catalogues, search factor models as the service does (training/ann.py):
        shoppers by the length-pruned exact search, similar items from a faiss IVF index (approximate); the
        service turns it on."""
        self.bundle = bundle
        self.items = bundle.items
        self.n_items = len(bundle.items)
        ranked, best = bundle.fallback.recommend(np.array([0]), k=self.n_items)  # same list for all: rank once
        self._fallback_rows = ranked[0][ranked[0] >= 0]
        self._fallback_scores = best[0][ranked[0] >= 0].astype(np.float32)  # the fallback's own scores, in that order
        self._never = bundle.never_rows()  # categories no answer recommends (postage, fees); /rerank keeps them
        self._row_config = InteractionConfig(**bundle.meta.get("row_interactions", {}))  # how the rows were built
        self.name = bundle.meta.get("name", bundle.model.kind)
        self.fallback_name = bundle.meta.get("fallback", bundle.fallback.kind)
        try:
            bundle.model.item_similarity(np.array([0]))
            self._has_similarity = True
        except NotImplementedError:  # e.g. a popularity model
            self._has_similarity = False
        self._filter_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        if bundle.catalog is not None:  # the filters' columns as arrays, once: a request compares numbers
            codes, names = pd.factorize(bundle.catalog["category"])
            self._category_codes, self._category_code = codes, {str(c): i for i, c in enumerate(names)}
            self._in_stock = bundle.catalog["in_stock"].to_numpy(bool)
            self._price = bundle.catalog["price"].to_numpy(np.float64)
        lists = bundle.top_lists  # only the lists of this very model (an experiment arm swaps the model)
        self._lists = lists if lists is not None and lists.model is bundle.model else None
        self._user_index = self._item_index = None
        if approximate and (search := NormPrunedSearch.for_model(bundle.model)) is not None:
            self._user_index = search  # inner product of the factors = the model's score; exact
            self._user_vectors = bundle.model.factors()[0]
            if (unit := bundle.model.cosine_item_vectors()) is not None:  # similar items by cosine
                self._unit_items = unit
                self._item_index = FactorIndex.for_vectors(unit)

    def _similarity(self, item_rows: np.ndarray) -> np.ndarray:
        """Model similarities (len(item_rows), n_items), each row scaled to a maximum of 1, negatives to 0."""
        sims = np.nan_to_num(self.bundle.model.item_similarity(item_rows), neginf=0.0)
        sims = np.clip(sims, 0, None)
        return sims / np.maximum(sims.max(axis=1, keepdims=True), 1e-12)

    # -- building blocks -------------------------------------------------------------------
    def _rows_of(self, item_ids) -> np.ndarray:
        rows = self.items.rows(list(item_ids)) if len(item_ids) else np.empty(0, np.int64)
        return rows[rows >= 0]

    def _knows(self, user_row: int) -> bool:
        """The model has something personal for this shopper: a vocabulary row that is not empty
        (a registered shopper with no interactions in the training window is scored as unknown)."""
        indptr = self.bundle.interactions.indptr
        return user_row >= 0 and indptr[user_row + 1] > indptr[user_row]

    def _bought(self, user_row: int) -> np.ndarray:
        b = self.bundle.bought
        return b.indices[b.indptr[user_row] : b.indptr[user_row + 1]] if user_row >= 0 else np.empty(0, np.int64)

    def _filter_out(self, filters: Filters | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The items the filters leave out, as a read-only mask over the catalogue and as sorted rows; None when
        they leave nothing out (no filter, or no catalog: filters cannot apply, documented). Cached per filter."""
        if filters is None or not filters.active() or self.bundle.catalog is None:
            return None
        key = (filters.category, filters.in_stock, filters.min_price, filters.max_price)
        found = self._filter_cache.get(key)
        if found is None:
            keep = np.ones(self.n_items, dtype=bool)
            if filters.category is not None:
                keep &= self._category_codes == self._category_code.get(filters.category, -2)  # -1 is "no category"
            if filters.in_stock is not None:
                keep &= self._in_stock == filters.in_stock
            if filters.min_price is not None:
                keep &= self._price >= filters.min_price
            if filters.max_price is not None:
                keep &= self._price <= filters.max_price
            mask = ~keep
            mask.setflags(write=False)
            found = (mask, np.flatnonzero(mask))
            if len(self._filter_cache) >= FILTER_CACHE:
                self._filter_cache.clear()
            self._filter_cache[key] = found
        return found

    def _exclusions(self, filters: Filters | None, *parts: np.ndarray) -> np.ndarray:
        """Sorted unique item rows to leave out: what the filters leave out plus ``parts``. A filter can leave
        out most of the catalogue (a category page): a mask then, not a sort of that many rows per request."""
        parts = [p for p in (*parts, self._never) if len(p)]
        out = self._filter_out(filters)
        if out is None:
            return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
        if not parts:
            return out[1]
        mask = out[0].copy()
        for p in parts:
            mask[p] = True
        return np.flatnonzero(mask)

    def _new_events(self, events: list[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
        """New (item_id, event_type) events as item rows (-1: not in the catalogue) and types."""
        cols = self.items.rows([item for item, _ in events]) if events else np.empty(0, np.int64)
        return cols, [kind for _, kind in events]

    def _event_row(self, user_row: int, cols: np.ndarray, kinds: list[str]) -> sp.csr_matrix:
        """The shopper's row as the model saw it, plus new events, both as the bundle's row config builds rows."""
        return add_events(self.bundle.interactions, user_row, cols, kinds, self._row_config, self.n_items)

    def _session_row(self, viewed: np.ndarray) -> sp.csr_matrix:
        """An anonymous session's viewed items standing in for what the model reads: each counts as one event
        of the first type the row config weighs (a view, where views count)."""
        kind = next((kind for kind, w in event_weights(self._row_config).items() if w > 0), "view")
        return add_events(None, -1, viewed, [kind] * len(viewed), self._row_config, self.n_items)

    def _exclusion_row(self, excluded: np.ndarray) -> sp.csr_matrix:
        """The items to leave out as a (1, n_items) CSR row: models that pick candidates skip them."""
        return sp.csr_matrix((np.ones(len(excluded), np.float32), (np.zeros(len(excluded), np.int64), excluded)),
                             shape=(1, self.n_items))

    def _pick(self, scores: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = scores.astype(np.float32, copy=True)
        scores[excluded] = -np.inf
        rows, best = topk(scores[None, :], k)
        keep = (rows[0] >= 0) & np.isfinite(best[0])
        return rows[0][keep], best[0][keep]

    def _fill(self, rows: np.ndarray, scores: np.ndarray, k: int, excluded: np.ndarray):
        """Up to k: the answer's rows, then the fallback's first allowed items, which the model did not score
        (-inf, written as null: they follow every scored item, whatever its sign)."""
        if len(rows) >= k:
            return rows, scores
        extra, _ = self._popular_rows(k - len(rows), np.concatenate([excluded, rows]))
        return np.concatenate([rows, extra]), np.concatenate([scores, np.full(len(extra), -np.inf, np.float32)])

    def _popular_rows(self, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fallback's first k items outside ``excluded`` and their scores."""
        rows, scores = self._fallback_rows, self._fallback_scores
        if len(excluded) > ANN_MAX_EXCLUDED:  # many: one pass over a mask
            out = np.zeros(self.n_items, dtype=bool)
            out[excluded] = True
            keep = ~out[rows]
        elif len(excluded):  # few: at most len(excluded) of the first k + len(excluded) are left out
            rows, scores = rows[: k + len(excluded)], scores[: k + len(excluded)]
            keep = ~np.isin(rows, excluded)
        else:
            return rows[:k], scores[:k]
        return rows[keep][:k], scores[keep][:k]

    def _answer(self, rows, scores, source, reasons=None) -> Answer:
        return Answer(self.items.external(rows).tolist(), [round(float(s), 6) for s in scores], source,
                      reasons if reasons is not None else [None] * len(rows))

    def _reasons(self, rows: np.ndarray, history: np.ndarray) -> list[str | None]:
        """'because you bought X': the shopper's past item most similar to each recommended item."""
        return self._reason_text(self._reason_rows(rows, history), rows)

    def _reason_rows(self, rows: np.ndarray, history: np.ndarray) -> np.ndarray:
        """The row of the reason's item X per recommended row (never a never-recommended one: "because you bought
        POSTAGE" says nothing); -1 where there is none."""
        if len(self._never):
            history = history[~np.isin(history, self._never)]
        if not self._has_similarity or len(history) == 0 or len(rows) == 0:
            return np.full(len(rows), -1, np.int64)
        sims = np.nan_to_num(self.bundle.model.similarity_between(history, rows), nan=-np.inf)  # (history, recommended)
        return history[np.argmax(sims, axis=0)]

    def _reason_text(self, reason_rows, rows=None) -> list[str | None]:
        """'because you bought X' per reason row; 'you bought this before' where X is the item itself."""
        rows = np.full(len(reason_rows), -1) if rows is None else rows
        return ["you bought this before" if b >= 0 and b == r else f"because you bought {self.items.ids[b]}" if b >= 0
                else None for b, r in zip(reason_rows, rows)]

    def _listed(self, user_row: int, k: int, exclude_ids, filters: Filters | None) -> Answer | None:
        """A known shopper's answer from the top lists (training/top_lists.py, bought items left out): the first
        k items of the list that the filters and ``exclude_ids`` allow, when it holds k of them; else None."""
        lists = self._lists
        if lists is None or k > lists.length or not self._knows(user_row) or (at := lists.of(user_row)) < 0:
            return None
        items = lists.items[at].astype(np.int64)
        allowed = items >= 0
        if (out := self._filter_out(filters)) is not None:
            allowed &= ~out[0][items]
        if len(exclude_ids):  # never-recommended items are not in the lists (TopLists.build: bundle.left_out)
            allowed &= ~np.isin(items, self._rows_of(exclude_ids))
        pick = np.flatnonzero(allowed)[:k]
        if len(pick) < k:
            return None
        return self._answer(items[pick], lists.scores[at][pick], f"model:{self.name}", self._reason_text(lists.reasons[at][pick]))

    def _top_among(self, user_row: int, excluded: np.ndarray, k: int):
        """A known shopper's top-k among the items outside ``excluded`` (sorted rows), each scored for the shopper:
        a factor model scores just those items (no catalogue-wide array), other models through ``scores_of`` (a
        ranker scores them as candidates of its own, which a narrow filter may leave none of)."""
        allowed = np.ones(self.n_items, dtype=bool)
        allowed[excluded] = False
        rows = np.flatnonzero(allowed)
        try:
            users, items = self.bundle.model.factors()
            scores = items[rows] @ users[user_row]
        except NotImplementedError:
            scores = self.bundle.model.scores_of(rows, user_row)
        top, best = topk(np.asarray(scores, dtype=np.float32)[None, :], k)
        keep = (top[0] >= 0) & np.isfinite(best[0])
        return rows[top[0][keep]], best[0][keep]

    def _with_bought(self, user_row: int, rows: np.ndarray, best: np.ndarray, history: np.ndarray,
                     excluded: np.ndarray, k: int):
        """With bought items allowed: the shopper's past items (those not left out) scored and ranked with the
        answer. A ranker never proposes them as candidates of its own (it learns what is bought anew), so
        ``scores_of`` scores them; other models' scores are the same as in the answer."""
        past = np.setdiff1d(history, np.concatenate([excluded, rows]))
        if len(past) == 0:
            return rows, best
        scores = np.asarray(self.bundle.model.scores_of(past, user_row), dtype=np.float32)
        rows, best = np.concatenate([rows, past]), np.concatenate([best, scores])
        order = np.argsort(-best, kind="stable")[:k]
        keep = np.isfinite(best[order])
        return rows[order][keep], best[order][keep]

    def _searched(self, index: FactorIndex | NormPrunedSearch, vector, k: int, excluded: np.ndarray):
        """Top-k from ``index`` (training/ann.py), or None where scoring the whole catalogue must answer (more than ``ANN_MAX_LEFT_OUT`` of the
        catalogue left out, or fewer than k allowed items among the candidates). Up to ``ANN_MAX_EXCLUDED`` left
        out: k + that many candidates; more (a broad filter, a long purchase history): enough candidates for k
        allowed ones at that share, four times over, at most ``ANN_MAX_CANDIDATES``."""
        if len(excluded) <= ANN_MAX_EXCLUDED:
            rows, scores = index.search(vector, k + len(excluded))
            keep = ~np.isin(rows, excluded)
        else:
            share = len(excluded) / self.n_items
            if share > ANN_MAX_LEFT_OUT:
                return None
            rows, scores = index.search(vector, min(ANN_MAX_CANDIDATES, int(np.ceil(4 * k / (1 - share)))))
            out = np.zeros(self.n_items, dtype=bool)
            out[excluded] = True
            keep = ~out[rows]
        if keep.sum() < k:
            return None
        return rows[keep][:k], scores[keep][:k]

    def _top_of_row(self, row: sp.csr_matrix, k: int, excluded: np.ndarray,
                    events: tuple[int, np.ndarray, list[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for an interaction row the model has not seen (fold-in, a session): from the length-pruned
        search where the model folds a row into a user vector (ALS; the exact least-squares step), which spares
        scoring the whole catalogue per request; else, or where the search cannot answer, all the scores."""
        if self._user_index is not None and (fold_in := getattr(self.bundle.model, "fold_in", None)) is not None:
            found = self._searched(self._user_index, fold_in(row)[0], k, excluded)
            if found is not None:
                return found
        model, exclusion = self.bundle.model, self._exclusion_row(excluded)
        scores = model.score_rows(row, exclusion) if events is None else model.score_events(row, *events, exclusion)
        return self._pick(scores[0], k, excluded)

    # -- endpoints -------------------------------------------------------------------------
    def popular(self, k: int = 10, exclude_ids=(), filters: Filters | None = None, rows_given: bool = False) -> Answer:
        """The fallback list; ``exclude_ids`` are external ids, or item rows with ``rows_given``."""
        given = np.asarray(exclude_ids, dtype=np.int64) if rows_given else self._rows_of(exclude_ids)
        excluded = self._exclusions(filters, given)
        return self._answer(*self._popular_rows(k, excluded), f"fallback:{self.fallback_name}")

    def recommend(self, user_id: str, k: int = 10, exclude_bought: bool = True, exclude_ids=(),
                  filters: Filters | None = None, events: list[tuple[str, str]] = ()) -> Answer:
        """Top-k for a shopper. New events (item_id, event_type) are folded in; purchases among
        them are excluded at once when ``exclude_bought``."""
        row = self.bundle.users.row(user_id)
        events = list(events)
        if exclude_bought and not events and (listed := self._listed(row, k, exclude_ids, filters)) is not None:
            return listed  # read, not computed: the same answer
        bought_now = self._rows_of([item for item, kind in events if kind == "purchase"])
        history = np.concatenate([self._bought(row), bought_now])
        left_out = np.concatenate([self._rows_of(exclude_ids), history if exclude_bought else np.empty(0, np.int64)])
        excluded = self._exclusions(filters, left_out)
        if events and len(self._rows_of([item for item, _ in events])):
            source = f"model:{self.name}+events"
            cols, kinds = self._new_events(events)
            rows, best = self._top_of_row(self._event_row(row, cols, kinds), k, excluded, (row, cols, kinds))
        elif self._knows(row):
            source = f"model:{self.name}"
            found = self._user_index and self._searched(self._user_index, self._user_vectors[row], k, excluded)
            narrow = len(excluded) > FEW_LEFT * self.n_items  # a category page: just its items are scored
            if not found and narrow:
                found = self._top_among(row, excluded, k)
            rows, best = found or self._pick(self.bundle.model.scores(np.array([row]))[0], k, excluded)
            if len(rows) < k and not narrow and self.n_items - len(excluded) <= SCORE_ALLOWED_MAX:
                rows, best = self._top_among(row, excluded, k)  # the model's own candidates ran out under the filters
            if not exclude_bought:
                rows, best = self._with_bought(row, rows, best, np.unique(history), excluded, k)
        else:
            return self.popular(k, excluded, rows_given=True)  # excluded holds the filters' rows already
        reasons = self._reasons(rows, np.unique(history)) + [None] * k
        rows, best = self._fill(rows, best, k, excluded)
        return self._answer(rows, best, source, reasons[: len(rows)])

    def similar_items(self, item_id: str, k: int = 10, filters: Filters | None = None) -> Answer:
        """Items like ``item_id``; unknown items (or a model without similarities) get the fallback. Under filters,
        every item they let through is compared with it (not just its nearest neighbours, which a price or
        category filter can leave out almost all of); the list is topped up from the fallback, unscored."""
        row = self.items.row(item_id)
        if row < 0 or not self._has_similarity:
            return self.popular(k, [item_id], filters)
        excluded = self._exclusions(filters, np.array([row]))
        if filters is None or not filters.active():
            if self._item_index is not None:
                found = self._searched(self._item_index, self._unit_items[row], k, excluded)
                if found is not None:
                    return self._answer(*found, f"model:{self.name}")
            rows, scores = self.bundle.model.similar_items(np.array([row]), min(self.n_items, k + len(excluded)))
            keep = (rows[0] >= 0) & ~np.isin(rows[0], excluded)
            return self._answer(rows[0][keep][:k], scores[0][keep][:k], f"model:{self.name}")
        sims = np.asarray(self.bundle.model.item_similarity(np.array([row]))[0], dtype=np.float32).copy()
        sims[sims == 0] = -np.inf  # no link at all (a neighbourhood model's non-neighbours)
        rows, best = self._pick(sims, k, excluded)
        if len(rows) == 0:
            return self.popular(k, excluded, rows_given=True)
        return self._answer(*self._fill(rows, best, k, excluded), f"model:{self.name}")

    def session(self, viewed_ids, k: int = 10, filters: Filters | None = None) -> Answer:
        """Anonymous shopper: recommend from the items viewed in the session (viewed items left out)."""
        viewed = self._rows_of(viewed_ids)
        if len(viewed) == 0:
            return self.popular(k, viewed_ids, filters)
        excluded = self._exclusions(filters, viewed)
        rows, best = self._top_of_row(self._session_row(viewed), k, excluded)
        rows, best = self._fill(rows, best, k, excluded)
        return self._answer(rows, best, f"session:{self.name}")

    def bought_together(self, basket_ids, k: int = 10, similarity_weight: float = 0.2,
                        filters: Filters | None = None) -> Answer:
        """Complements for a basket: rule confidences summed over basket items, plus a little
        item similarity so items without rules still get neighbours; basket items left out."""
        basket = np.unique(self._rows_of(basket_ids))  # an item named twice counts once
        if len(basket) == 0:
            return self.popular(k, basket_ids, filters)
        scores = np.asarray(self.bundle.together[basket].sum(axis=0)).ravel().astype(np.float32)
        source = "rules"
        if self._has_similarity and similarity_weight > 0:
            scores = scores + similarity_weight * self._similarity(basket).mean(axis=0)
            source = "rules+similarity"
        excluded = self._exclusions(filters, basket)
        scores[scores <= 0] = -np.inf
        rows, best = self._pick(scores, k, excluded)
        if len(rows) == 0:  # no rule or neighbour for this basket: the fallback, labelled as one
            return self.popular(k, excluded, rows_given=True)
        rows, best = self._fill(rows, best, k, excluded)
        return self._answer(rows, best, f"together:{source}")

    def rerank(self, user_id: str, candidate_ids: list[str], events: list[tuple[str, str]] = ()) -> Answer:
        """The caller's candidates in personal order; ids we do not know keep their order, at the end."""
        rows = self.items.rows(candidate_ids)
        known_pos = np.flatnonzero(rows >= 0)
        listed, user_row = rows[known_pos], self.bundle.users.row(user_id)
        if events and len(self._rows_of([i for i, _ in events])):  # each listed item scored for this shopper
            cols, kinds = self._new_events(list(events))
            event_row = self._event_row(user_row, cols, kinds)
            scores = self.bundle.model.scores_of(listed, user_row, (event_row, cols, kinds))
            source = f"model:{self.name}+events"
        elif self._knows(user_row):
            scores, source = self.bundle.model.scores_of(listed, user_row), f"model:{self.name}"
        else:
            scores, source = self.bundle.fallback.scores(np.array([0]))[0][listed], f"fallback:{self.fallback_name}"
        ranked = np.argsort(-scores, kind="stable")
        ids = [candidate_ids[i] for i in known_pos[ranked]] + [c for c, r in zip(candidate_ids, rows) if r < 0]
        vals = [round(float(v), 6) for v in scores[ranked]] + [-np.inf] * (len(candidate_ids) - len(known_pos))
        return Answer(ids, vals, source, [None] * len(ids))
