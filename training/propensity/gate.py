"""Which propensity bundle is a shop's champion: decided on a validation period, never on the test period.

Validation is the protocol moved back before the earliest test period: with ``cut = end - max(horizon_days,
window_days)`` (where the churn test's labels start), each target's rows are scored at ``cut - days`` with labels
up to ``cut``, from a model fitted on rows at ``cut - 2*days``. Nothing after ``cut`` is read, so no test label
(churn's or conversion's) chooses anything.

The rule, within one shop's lineage (as the recommender's, training/selection.py):
- the first bundle of a shop becomes its champion;
- the champion's recipe again: on the same data nothing is new (the alias stays); on newer data the fresher
  model replaces it; a recipe that asks another question (other label lengths) or keeps another number of
  reasons per customer (the same models) replaces it too;
- another recipe replaces the champion's only when it is better beyond noise on validation: both recipes are
  fitted and scored on the same validation rows, and a paired bootstrap over customers (the same resample for
  both) of the mean ROC AUC difference over the two targets puts the whole 95% interval above zero.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import roc_auc_score

from features.labels import DAY
from training.propensity.config import TARGETS, PropensityConfig
from training.propensity.dataset import Snapshots

BOOTSTRAP_ROUNDS = 2000
_CHUNK = 250  # resamples at a time: bounded memory


@dataclass
class Validation:
    """One recipe's probabilities on the validation rows of each target (labels in ``y``)."""

    y: dict[str, np.ndarray]
    p: dict[str, np.ndarray]
    at: dict[str, pd.Timestamp]

    def roc_auc(self) -> dict[str, float]:
        return {t: float(roc_auc_score(self.y[t], self.p[t])) for t in TARGETS}

    def score(self) -> float:
        """Mean validation ROC AUC of the two targets."""
        return round(float(np.mean(list(self.roc_auc().values()))), 6)


def validate(snaps: Snapshots, cfg: PropensityConfig) -> Validation:
    """``cfg``'s models fitted and scored on the validation period of ``snaps`` (from its ``end``, whatever ``cfg.end``
    says, so that two recipes are compared on the same rows). ValueError when the history is too short."""
    from training.propensity.evaluate import fit_model

    y, p, at = {}, {}, {}
    cut = validation_end(snaps, cfg)
    for target in TARGETS:
        days = cfg.days(target)
        at[target] = cut - days * DAY
        rows = snaps.rows(at[target], target, days)
        model, _ = fit_model(snaps, target, cfg, at[target])
        y[target], p[target] = rows.y.to_numpy(dtype=float), model.predict_proba(rows.X)
        if len(np.unique(y[target])) < 2:
            raise ValueError(f"the {target} validation rows at {at[target]} have one class only")
    return Validation(y, p, at)


def eval_key(protocol: str, digest: str, end: pd.Timestamp, cfg: PropensityConfig) -> str:
    """What a bundle was evaluated on (registry tag ``eval_key``): equal keys, the same data and question."""
    return f"{protocol}:{digest}:end={end}:h={cfg.horizon_days}:w={cfg.window_days}"


def data_end(eval_key: str) -> pd.Timestamp | None:
    """The end of the data a registered bundle was evaluated on (its ``eval_key`` tag), if it says."""
    found = re.search(r":end=(.+?):h=\d+:w=\d+$", eval_key or "")
    return pd.Timestamp(found.group(1)) if found else None


def validation_end(snaps: Snapshots, cfg: PropensityConfig) -> pd.Timestamp:
    """The last moment validation reads: where the earliest test period (churn's, usually) begins."""
    return snaps.end - max(cfg.days(t) for t in TARGETS) * DAY


def weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of scores ``p`` for labels ``y`` under each row of ``weights`` (resample counts, shape
    (rounds, len(y))); ties count one half, as ``sklearn.metrics.roc_auc_score`` with ``sample_weight``."""
    y = np.asarray(y, dtype=bool)
    _, group = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True)
    members = sparse.csr_matrix((np.ones(len(y)), (np.arange(len(y)), group)))  # rows -> tied-score groups, ascending
    w = np.asarray(weights, dtype=np.float64)
    pos = (members.T @ (w * y).T).T  # weight of positives per score group
    neg = (members.T @ (w * ~y).T).T
    below = np.cumsum(neg, axis=1) - neg  # negatives scored lower than the group
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / pairs


def paired_auc_bootstrap(challenger: Validation, incumbent: Validation, rounds: int = BOOTSTRAP_ROUNDS,
                         seed: int = 0) -> dict:
    """Mean over targets of the challenger's ROC AUC minus the incumbent's, with a percentile 95% interval from
    resampling each target's customers (the same resample for both recipes)."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(rounds)
    for target in TARGETS:
        y = challenger.y[target]
        if not np.array_equal(y, incumbent.y[target]):
            raise ValueError(f"{target}: the two recipes were not validated on the same rows")
        n = len(y)
        for start in range(0, rounds, _CHUNK):
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, rounds - start))
            diffs[start : start + len(counts)] += (weighted_auc(y, challenger.p[target], counts)
                                                   - weighted_auc(y, incumbent.p[target], counts)) / len(TARGETS)
    diffs = diffs[~np.isnan(diffs)]  # a resample with one class only has no AUC
    point = challenger.score() - incumbent.score()
    low, high = np.percentile(diffs, [2.5, 97.5]) if len(diffs) else (np.nan, np.nan)
    return {"diff": round(float(point), 6), "low": round(float(low), 6), "high": round(float(high), 6),
            "customers": {t: int(len(challenger.y[t])) for t in TARGETS}, "rounds": int(len(diffs))}


def same_recipe(a: PropensityConfig, b: PropensityConfig, explanations: bool = True) -> bool:
    """Equal recipes, whatever end of data each was trained to (and, with ``explanations=False``, however many
    reasons each keeps per customer: the same models)."""
    ignored = {"end": None} | ({} if explanations else {"top_reasons": 0})
    return a.model_copy(update=ignored) == b.model_copy(update=ignored)


def decide(snaps: Snapshots, cfg: PropensityConfig, eval_key: str, champion, challenger: Validation | str) -> dict:
    """Whether this run's bundle becomes the shop's champion: ``{"promoted", "reason", "chosen_on", ...}``.
    ``champion``: training.tracking.Champion or None; ``challenger``: this recipe's validation, or why there is none."""
    out = {"chosen_on": "validation"}
    if champion is None:
        return out | {"promoted": True, "reason": "no champion for this shop yet"}
    recipe = PropensityConfig.from_recipe(champion.candidate) if champion.candidate else None
    if recipe is not None and same_recipe(recipe, cfg):
        if champion.eval_key == eval_key:
            return out | {"promoted": False, "reason": f"the same recipe and data as champion v{champion.version}: nothing new"}
        if (ended := data_end(champion.eval_key)) is not None and snaps.end < ended:
            return out | {"promoted": False, "reason": (f"champion v{champion.version}'s recipe on data that ends earlier "
                                                         f"({snaps.end} < {ended}): champion v{champion.version} stays")}
        data = "newer data" if ended is None or snaps.end > ended else "other data ending at the same time (a correction)"
        return out | {"promoted": True, "reason": f"champion v{champion.version}'s recipe, trained on {data}"}
    if recipe is None:
        return out | {"promoted": True, "reason": f"champion v{champion.version} has no recipe to compare with"}
    if same_recipe(recipe, cfg, explanations=False):
        return out | {"promoted": True, "reason": (f"champion v{champion.version}'s models with {cfg.top_reasons} "
                                                    f"reasons per customer instead of {recipe.top_reasons}")}
    if (recipe.horizon_days, recipe.window_days) != (cfg.horizon_days, cfg.window_days):
        return out | {"promoted": True, "reason": (
            f"a new question: churn over {cfg.horizon_days} days and conversion over {cfg.window_days} (champion "
            f"v{champion.version}: {recipe.horizon_days} and {recipe.window_days}), not comparable on the same rows")}
    if isinstance(challenger, str):
        return out | {"promoted": False, "reason": f"no validation period to compare recipes on ({challenger}): "
                                                    f"champion v{champion.version} stays"}
    incumbent = validate(snaps, recipe)
    evidence = paired_auc_bootstrap(challenger, incumbent)
    interval = f"{evidence['diff']:+.4f}, 95% interval [{evidence['low']:.4f}, {evidence['high']:.4f}]"
    out |= {"evidence": evidence, "champion_validation_roc_auc": incumbent.roc_auc()}
    if evidence["low"] > 0:
        return out | {"promoted": True, "reason": f"beats champion v{champion.version}'s recipe beyond noise on "
                                                   f"validation (mean ROC AUC {interval})"}
    return out | {"promoted": False, "reason": f"not better than champion v{champion.version}'s recipe beyond noise "
                                                f"on validation (mean ROC AUC {interval}): the champion stays"}
