"""The simple peers of PRODUCT.md, as recipes: scored in every training run on the same split.

They are what a shop gets without shoprec (or from a library's defaults); the champion is
never worse than the best of them on validation, because they are candidates like any other.
"""
from __future__ import annotations

from features.interactions import InteractionConfig
from training.config import Candidate
from training.recommenders.als import ALSConfig
from training.recommenders.neighbours import EASEConfig, ItemKNNConfig
from training.recommenders.popular import PopularConfig

PREFIX = "peer."


def _bought(window_days: float | None = None) -> InteractionConfig:
    """The binary purchase matrix (views and carts weigh nothing), optionally the last days only."""
    return InteractionConfig(view_weight=0.0, cart_weight=0.0, binary=True, window_days=window_days)


def peer_candidates() -> list[Candidate]:
    """Most popular (all time), trending (distinct buyers in the last 7 and 30 days), implicit ALS
    with the library's defaults, BM25 item-kNN (K=100) and EASE (lambda=500, the 10k most popular
    items), each on the binary purchase matrix, as PRODUCT.md measured them."""
    return [
        Candidate(name=f"{PREFIX}popular", interactions=_bought(), model=PopularConfig(count="users")),
        Candidate(name=f"{PREFIX}trending-7d", interactions=_bought(7.0), model=PopularConfig(count="users")),
        Candidate(name=f"{PREFIX}trending-30d", interactions=_bought(30.0), model=PopularConfig(count="users")),
        Candidate(name=f"{PREFIX}als-defaults", interactions=_bought(),
                  model=ALSConfig(factors=100, regularization=0.01, alpha=1.0, iterations=15, weighting="none", seed=42)),
        Candidate(name=f"{PREFIX}itemknn-bm25-k100", interactions=_bought(), model=ItemKNNConfig(neighbours=100)),
        Candidate(name=f"{PREFIX}ease-500-10k", interactions=_bought(), model=EASEConfig(l2=500.0, max_items=10_000)),
    ]


def is_peer(name: str) -> bool:
    return name.startswith(PREFIX)
