"""Personas: k-means (scikit-learn) on scaled RFM + behaviour, k chosen by silhouette, each
cluster described in words from its centroid.

    p = Personas(k_range=(3, 8), seed=42).fit(features)     # features: user_features frame
    p.labels_ (Series user_id -> persona id), p.describe() (list of dicts), p.assign(features)

The inputs are log1p of the skewed counts and amounts, standardised; a feature missing for a
customer (no second purchase: no gap) takes the median. The words compare the centroid with the
whole population in the original units (e.g. "recent", "high spend").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

PERSONA_FEATURES = ["recency_days", "frequency", "monetary", "tenure_days", "basket_value", "distinct_items",
                    "mean_gap_days", "return_share"]
SILHOUETTE_SAMPLE = 3000
# feature -> (word when high, word when low), read against the population's quartiles
WORDS = {
    "recency_days": ("lapsing", "recent"), "frequency": ("frequent", "one-off"),
    "monetary": ("high spend", "low spend"), "tenure_days": ("long-standing", "newly acquired"),
    "basket_value": ("large baskets", "small baskets"), "distinct_items": ("broad range", "narrow range"),
    "mean_gap_days": ("long gaps between orders", "short gaps between orders"),
    "return_share": ("returns a lot", None),
}


class Personas:
    def __init__(self, k_range: tuple[int, int] = (3, 8), seed: int = 42):
        self.k_range = k_range
        self.seed = seed

    def _matrix(self, features: pd.DataFrame) -> np.ndarray:
        x = features[PERSONA_FEATURES].astype(float)
        x = np.log1p(x.clip(lower=0)).fillna(self.medians_)
        return ((x - self.mean_) / self.scale_).to_numpy()

    def fit(self, features: pd.DataFrame) -> "Personas":
        lo, hi = self.k_range
        if len(features) < hi + 1:
            raise ValueError(f"personas need more customers than clusters: {len(features)} customers, k up to {hi}")
        logged = np.log1p(features[PERSONA_FEATURES].astype(float).clip(lower=0))
        self.medians_ = logged.median().fillna(0.0)
        logged = logged.fillna(self.medians_)
        self.mean_, self.scale_ = logged.mean(), logged.std(ddof=0).replace(0, 1.0)
        X = self._matrix(features)
        self.silhouettes_ = {}
        best = None
        for k in range(lo, hi + 1):
            with threadpool_limits(1):
                km = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(X)
            s = float(silhouette_score(X, km.labels_, sample_size=min(SILHOUETTE_SAMPLE, len(X)), random_state=self.seed))
            self.silhouettes_[k] = s
            if best is None or s > best[0]:
                best = (s, k, km)
        self.silhouette_, self.k_, self.kmeans_ = best
        self.labels_ = pd.Series(self.kmeans_.labels_, index=features.index, name="persona")
        self.profile_ = features[PERSONA_FEATURES].astype(float).groupby(self.labels_.to_numpy()).median()
        self.population_ = features[PERSONA_FEATURES].astype(float).quantile([0.25, 0.5, 0.75])
        self.sizes_ = self.labels_.value_counts().sort_index()
        return self

    def assign(self, features: pd.DataFrame) -> pd.Series:
        """The nearest centroid's persona for each row."""
        return pd.Series(self.kmeans_.predict(self._matrix(features)), index=features.index, name="persona")

    def words(self, cluster: int) -> str:
        """A phrase from the cluster's median customer against the population's quartiles."""
        row, q = self.profile_.loc[cluster], self.population_
        said = []
        for f, (high, low) in WORDS.items():
            if pd.isna(row[f]):
                continue
            if high and row[f] > q.loc[0.75, f] and q.loc[0.75, f] > q.loc[0.25, f]:
                said.append(high)
            elif low and row[f] < q.loc[0.25, f]:
                said.append(low)
        return ", ".join(said) if said else "typical customers"

    def describe(self) -> list[dict]:
        """Per persona: id, size, share, phrase, and the median customer in the original units."""
        total = int(self.sizes_.sum())
        return [{"persona": int(c), "customers": int(n), "share": n / total, "description": self.words(c),
                 "median": {f: (None if pd.isna(v) else round(float(v), 2)) for f, v in self.profile_.loc[c].items()}}
                for c, n in self.sizes_.items()]
