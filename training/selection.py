"""Choosing a recipe and gating the champion on validation evidence only.

Both rules compare recipes user by user on the same validation users (paired), and for the
finalists on the users of the period before validation too (``Trial.per_user`` then holds both,
validation's first; ``basis`` names what was compared in the reasons):
- **choice**: the best mean NDCG@k wins, unless a simpler, cheaper recipe is within one
  standard error of the paired difference (a tie within the noise goes to the simpler one);
- **gate**: a challenger replaces the champion's recipe only when a paired bootstrap over
  users puts the whole 95% interval of the difference above zero (better beyond noise).
The test period is never an input here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.config import Candidate, complexity

BOOTSTRAP_ROUNDS = 2000


@dataclass
class Trial:
    """One recipe scored on the validation split."""

    candidate: Candidate
    metrics: dict  # ndcg@k, recall@k, users, seconds
    per_user: np.ndarray  # NDCG@k of each validation user, in the split's user order (then the earlier period's)
    stage: str

    @property
    def mean(self) -> float:
        return float(self.per_user.mean()) if len(self.per_user) else 0.0


def recipe_key(candidate: Candidate) -> str:
    """What the recipe is, whatever its name: equal keys, equal recipes."""
    return candidate.model_dump_json(exclude={"name"})


def same_recipe(a: Candidate, b: Candidate) -> bool:
    """Equal recipes whatever their names."""
    return recipe_key(a) == recipe_key(b)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict:
    """Mean of a - b over users with a percentile 95% interval from resampling users (seeded)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        return {"diff": 0.0, "low": 0.0, "high": 0.0, "users": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(rounds)
    for start in range(0, rounds, 200):  # bounded memory: 200 resamples of every user at a time
        idx = rng.integers(0, len(d), size=(min(200, rounds - start), len(d)))
        means[start : start + len(idx)] = d[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": round(float(d.mean()), 6), "low": round(float(low), 6), "high": round(float(high), 6),
            "users": int(len(d))}


def choose(trials: dict[str, Trial], basis: str = "validation") -> tuple[str, dict]:
    """The recipe to serve: best on validation, or the simplest within one standard error of it."""
    best = max(trials, key=lambda n: (trials[n].mean, -complexity(trials[n].candidate), n))
    top = trials[best]
    tied = {}
    for name, t in trials.items():
        d = top.per_user - t.per_user
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        if top.mean - t.mean <= se:
            tied[name] = {"ndcg": round(t.mean, 6), "gap": round(top.mean - t.mean, 6), "se": round(se, 6),
                          "complexity": complexity(t.candidate)}
    chosen = min(tied, key=lambda n: (tied[n]["complexity"], -trials[n].mean, n))
    reason = (f"best on {basis} ({top.mean:.4f})" if chosen == best else
              f"within the noise of the best, {best} ({trials[chosen].mean:.4f} vs {top.mean:.4f}, "
              f"gap <= one standard error {tied[chosen]['se']:.4f}), and simpler")
    return chosen, {"chosen": chosen, "best": best, "reason": reason, "ties": tied, "basis": basis}


def gate(challenger: Trial, incumbent: Trial | None, seed: int = 0, basis: str = "validation") -> dict:
    """Whether the challenger's recipe replaces the champion's (``keep_incumbent``), and why."""
    if incumbent is None:
        return {"keep_incumbent": False, "reason": "no champion for this shop yet"}
    if same_recipe(challenger.candidate, incumbent.candidate):
        return {"keep_incumbent": False, "same_recipe": True,
                "reason": f"the champion's recipe is still the choice on {basis}"}
    evidence = paired_bootstrap(challenger.per_user, incumbent.per_user, seed=seed)
    if evidence["low"] > 0:
        return {"keep_incumbent": False, "evidence": evidence,
                "reason": (f"beats the champion's recipe beyond noise on {basis} (+{evidence['diff']:.4f}, "
                           f"95% interval [{evidence['low']:.4f}, {evidence['high']:.4f}] over {evidence['users']} users)")}
    return {"keep_incumbent": True, "evidence": evidence,
            "reason": (f"not better than the champion's recipe beyond noise on {basis} ({evidence['diff']:+.4f}, "
                       f"95% interval [{evidence['low']:.4f}, {evidence['high']:.4f}]): the champion's recipe is kept")}
