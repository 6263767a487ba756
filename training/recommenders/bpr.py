"""Bayesian Personalised Ranking (Rendle et al. 2009) through ``implicit``."""
from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.recommenders.als import ALSRecommender


class BPRConfig(BaseModel):
    kind: Literal["bpr"] = "bpr"
    factors: int = Field(64, ge=1, le=1024)
    learning_rate: float = Field(0.05, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1, le=2000)
    seed: int = Field(42)


class BPRRecommender(ALSRecommender):
    """Same factor storage and scoring as ALS; a pairwise ranking loss instead of least squares."""

    kind = "bpr"
    Config = BPRConfig

    def fit(self, interactions: sp.csr_matrix) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(factors=c.factors, learning_rate=c.learning_rate,
                                            regularization=c.regularization, iterations=c.iterations,
                                            random_state=c.seed, num_threads=1)
        model.fit(sp.csr_matrix(interactions, dtype=np.float32), show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self
