"""Reference distributions: what the service should see if live traffic looks like the training data.

Recorded at training time into the bundles (``reference.json``: bins and proportions, no raw data) and
compared with live traffic by the service (serving/drift.py, serving/monitoring.py) and by ``shoprec monitor``
(training/monitor.py). A numeric quantity is binned on its deciles, ``(-inf, e0], (e0, e1], ..., (e_last, inf)``;
a categorical one on its categories plus ``other`` (a value the training data never had, e.g. a new category).

Recommender bundle (``recommender_reference``), over the last ``RECENT_DAYS`` of the data:
  event_category    catalogue category of the items shoppers acted on (events, else order lines)
  event_price       their price (the line's own price, else the catalogue's)
  recommend_source  model or fallback, per shopper and active day: a shopper the model knows and who was
                    active before that day gets the model, a new one the fallback
  recommend_score   top-1 score of /recommend through the storefront for a seeded sample of the shopper-days
                    of shoppers the model knows (one active on more days weighs more, as in live traffic)
Propensity bundle (``propensity_reference``): churn_probability, conversion_probability over every customer.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

EPS = 1e-4  # floor of a bin's proportion: an empty bin on one side keeps PSI finite
RECENT_DAYS = 30
SCORE_SAMPLE = 1000
UNKNOWN_ITEM = "(unknown item)"  # an item the catalogue does not have: never a reference category
NO_CATEGORY = "(none)"


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of two proportion vectors over the same bins: sum (q - p) ln(q / p)."""
    p, q = np.maximum(reference, EPS), np.maximum(live, EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def js(reference: np.ndarray, live: np.ndarray) -> float:
    """Jensen-Shannon distance (scipy, base 2): 0 same, 1 disjoint."""
    return float(jensenshannon(reference, live, base=2))


@dataclass(frozen=True)
class Reference:
    """One quantity's bins and its proportions in the training data (``n`` values)."""

    kind: str  # "numeric" | "categorical"
    proportions: tuple[float, ...]
    n: int
    edges: tuple[float, ...] = ()  # numeric: inner bin edges
    categories: tuple[str, ...] = ()  # categorical: the reference's categories; the last bin is "other"

    @classmethod
    def of(cls, values, categorical: bool = False, bins: int = 10, name: str = "values") -> "Reference":
        if categorical:
            values = pd.Series(values, dtype=object).dropna().astype(str).to_numpy()
        else:
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values)]
        if not len(values):
            raise ValueError(f"reference of {name!r}: no values (the reference is empty)")
        if categorical:
            ref = cls("categorical", (), len(values), categories=tuple(sorted(set(values.tolist()))))
        else:
            inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
            ref = cls("numeric", (), len(values), edges=tuple(float(e) for e in inner))
        counts = ref.counts(values)
        return cls(ref.kind, tuple(float(p) for p in counts / counts.sum()), len(values), ref.edges, ref.categories)

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1 if self.categorical else len(self.edges) + 1

    def bin(self, value) -> int | None:
        """The bin of one value (None: a missing or non-finite number, not counted)."""
        if self.categorical:
            return self._index.get(str(value), len(self.categories))
        if value is None:
            return None
        v = float(value)
        return bisect.bisect_left(self.edges, v) if v == v and abs(v) != float("inf") else None

    def counts(self, values) -> np.ndarray:
        """Bin counts of many values (missing and non-finite numbers not counted)."""
        if self.categorical:
            text = pd.Series(values, dtype=object).dropna().astype(str)
            idx = pd.Index(self.categories).get_indexer(text)
            idx[idx < 0] = len(self.categories)
        else:
            v = np.asarray(values, dtype=float)
            idx = np.searchsorted(np.asarray(self.edges), v[np.isfinite(v)], side="left")
        return np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.n_bins)

    def labels(self) -> list[str]:
        """A name per bin, for reports."""
        if self.categorical:
            return [*self.categories, "other"]
        e = [f"{x:.4g}" for x in self.edges]
        if not e:
            return ["all"]
        return [f"≤ {e[0]}", *(f"({a}, {b}]" for a, b in zip(e, e[1:])), f"> {e[-1]}"]

    @property
    def _index(self) -> dict:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = {c: i for i, c in enumerate(self.categories)}
            object.__setattr__(self, "_idx", idx)
        return idx

    def to_json(self) -> dict:
        out = {"kind": self.kind, "n": self.n, "proportions": list(self.proportions)}
        return out | ({"categories": list(self.categories)} if self.categorical else {"edges": list(self.edges)})

    @classmethod
    def from_json(cls, data: dict, name: str = "reference") -> "Reference":
        """Checked: a reference that cannot be right is a ValueError naming the field."""
        kind = data.get("kind")
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"{name}.kind: expected 'numeric' or 'categorical', got {kind!r}")
        ref = cls(kind, tuple(float(p) for p in data.get("proportions", [])), int(data.get("n", 0)),
                  tuple(float(e) for e in data.get("edges", [])), tuple(str(c) for c in data.get("categories", [])))
        if len(ref.proportions) != ref.n_bins:
            raise ValueError(f"{name}.proportions: {len(ref.proportions)} values for {ref.n_bins} bins")
        if not np.isfinite(ref.proportions).all() or min(ref.proportions) < 0 or abs(sum(ref.proportions) - 1) > 1e-6:
            raise ValueError(f"{name}.proportions: not a distribution (non-negative, summing to 1)")
        if list(ref.edges) != sorted(ref.edges) or not np.isfinite(ref.edges).all():
            raise ValueError(f"{name}.edges: not increasing finite numbers")
        return ref


def drift(reference: Reference, counts) -> dict:
    """PSI and JS of live bin counts against the reference; ``n`` live values."""
    counts = np.asarray(counts, dtype=float)
    n = int(counts.sum())
    if n == 0:
        return {"psi": None, "js": None, "n": 0}
    live, ref = counts / n, np.asarray(reference.proportions)
    return {"psi": psi(ref, live), "js": js(ref, live), "n": n}


# -- at training time ------------------------------------------------------------------------------------
def _recent_lines(events: pd.DataFrame | None, orders: pd.DataFrame | None, days: float) -> pd.DataFrame:
    """user_id, item_id, ts, price of the shoppers' actions (events, else order lines) in the last ``days``."""
    table = events if events is not None and len(events) else orders
    if table is None or not len(table):
        return pd.DataFrame({"user_id": [], "item_id": [], "ts": [], "price": []})
    ts = pd.to_datetime(table["ts"])
    keep = (ts >= ts.max() - pd.Timedelta(days=days)).to_numpy()
    price = table["price"] if "price" in table else pd.Series(np.nan, index=table.index)
    return pd.DataFrame({"user_id": table["user_id"].to_numpy()[keep], "item_id": table["item_id"].astype(str).to_numpy()[keep],
                         "ts": ts.to_numpy()[keep], "price": pd.to_numeric(price, errors="coerce").to_numpy()[keep]})


def recommender_reference(bundle, events: pd.DataFrame | None, orders: pd.DataFrame | None,
                          days: float = RECENT_DAYS, sample: int = SCORE_SAMPLE, seed: int = 0) -> dict:
    """``{quantity: Reference.to_json()}`` for a fitted ``ModelBundle`` and the data it was fitted on."""
    from training.storefront import Storefront

    out: dict[str, dict] = {}
    lines = _recent_lines(events, orders, days)
    rows = bundle.items.rows(lines["item_id"].tolist()) if len(lines) else np.empty(0, np.int64)
    if bundle.catalog is not None and len(lines):
        category = bundle.catalog["category"].astype(object).where(bundle.catalog["category"].notna(), NO_CATEGORY)
        cats = np.where(rows >= 0, category.to_numpy()[np.maximum(rows, 0)], UNKNOWN_ITEM)
        out["event_category"] = Reference.of(cats, categorical=True, name="event_category").to_json()
        listed = bundle.catalog["price"].to_numpy(np.float64)[np.maximum(rows, 0)]
        price = np.where(np.isfinite(lines["price"].to_numpy(float)), lines["price"].to_numpy(float),
                         np.where(rows >= 0, listed, np.nan))
    else:
        price = lines["price"].to_numpy(float)
    if np.isfinite(price).any():
        out["event_price"] = Reference.of(price[np.isfinite(price)], name="event_price").to_json()

    known_rows = np.flatnonzero(np.diff(bundle.interactions.indptr) > 0)
    shoppers = lines[lines["user_id"].notna() & (lines["user_id"].astype(str) != "")]
    if not len(shoppers):
        return out
    first = pd.concat([t[["user_id", "ts"]] for t in (events, orders) if t is not None and len(t)])
    first = first[first["user_id"].notna()].assign(user_id=lambda f: f["user_id"].astype(str)).groupby("user_id")["ts"].min()
    active = pd.DataFrame({"user_id": shoppers["user_id"].astype(str).to_numpy(),
                           "day": pd.to_datetime(shoppers["ts"]).dt.floor("D").to_numpy()}).drop_duplicates()
    row = bundle.users.rows(active["user_id"].tolist())
    before = pd.to_datetime(first.reindex(active["user_id"]).to_numpy()) < active["day"].to_numpy()
    model = (row >= 0) & np.isin(row, known_rows) & before
    out["recommend_source"] = Reference.of(np.where(model, "model", "fallback"), categorical=True,
                                           name="recommend_source").to_json()
    known = (row >= 0) & np.isin(row, known_rows)
    if known.any():  # the top score of the shoppers the served model knows, as often as they are active
        rng = np.random.default_rng(seed)
        picked = rng.choice(row[known], size=min(sample, int(known.sum())), replace=False)
        store = Storefront(bundle)
        scores = []
        for r in picked:
            answer = store.recommend(str(bundle.users.ids[r]), k=10)
            if answer.source.startswith("model:") and answer.scores:
                scores.append(answer.scores[0])
        if scores:
            out["recommend_score"] = Reference.of(scores, name="recommend_score").to_json()
    return out


def propensity_reference(scores: pd.DataFrame) -> dict:
    """``{quantity: Reference.to_json()}`` of a propensity score table (every scored customer)."""
    return {col: Reference.of(scores[col].to_numpy(float), name=col).to_json()
            for col in ("churn_probability", "conversion_probability") if col in scores and len(scores)}
