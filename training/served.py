"""What is served is what is measured: the test period answered by the storefront's own code.

The bundle is fitted on the data up to the test cutoff and answered through ``Storefront``,
the class the service runs (fallbacks, exclusions, fill, the searches of training/ann.py where
the service uses them):

- **known path**: each test user asks ``recommend`` with no new events;
- ``batch_ndcg@k``: the measured path (``model.scores``) on the same users, so that the served
  figures compare like for like when the test users are sampled;
- **fold-in path** (``served_ndcg@k``): the same user with one real-time event, their latest
  interaction before the cutoff: no new information, but the answer now comes through
  fold-in (``score_rows``), as it does for every shopper active since the last training;
  the top-k overlap of the two answers says how far fold-in moves a list by itself;
- **session path** (``session_ndcg@k``): anonymous sessions of the test period with views
  and purchases: the first half of the items viewed (in order) is the input, the items
  bought in the session and not among them are the truth.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from training.bundle import ModelBundle
from training.evaluate import Split, discovery_per_user, ranked_metrics
from training.storefront import Storefront

MAX_USERS = 2000  # users (and sessions) replayed per run; a seeded sample beyond this


def _rows(store: Storefront, answers: list[list[str]], k: int) -> np.ndarray:
    out = np.full((len(answers), k), -1, dtype=np.int64)
    for i, ids in enumerate(answers):
        rows = store.items.rows(ids[:k]) if ids else np.empty(0, np.int64)
        out[i, : len(rows)] = rows
    return out


def _sample(n: int, seed: int) -> np.ndarray:
    return np.arange(n) if n <= MAX_USERS else np.sort(np.random.default_rng(seed).choice(n, MAX_USERS, replace=False))


def served_discovery(bundle: ModelBundle, split: Split, k: int = 10, approximate: bool = True, seed: int = 0) -> dict:
    """The test users answered by the storefront (known and fold-in paths); see the module docstring."""
    store = Storefront(bundle, approximate=approximate)
    sampled = split.sample(MAX_USERS, seed)
    truth = sampled.truth
    user_ids = split.view.users.ids[sampled.test_users]
    last = _latest_interaction(split)
    known, folded = [], []
    for uid in user_ids:
        known.append(store.recommend(str(uid), k).item_ids)
        event = last.get(str(uid))
        folded.append(store.recommend(str(uid), k, events=[event] if event else []).item_ids)
    known_rows, folded_rows = _rows(store, known, k), _rows(store, folded, k)
    known_m, _ = ranked_metrics(known_rows, truth, k)
    folded_m, per_user = ranked_metrics(folded_rows, truth, k)
    batch_m = discovery_per_user(bundle.model.scores, sampled, k)[0]  # the measured path, on the same users
    overlap = [len(set(a[:k]) & set(b[:k])) / max(1, min(k, len(a))) for a, b in zip(known, folded)]
    return {f"ndcg@{k}": folded_m[f"ndcg@{k}"], f"recall@{k}": folded_m[f"recall@{k}"],
            f"known_ndcg@{k}": known_m[f"ndcg@{k}"], f"batch_ndcg@{k}": batch_m[f"ndcg@{k}"],
            f"fold_in_overlap@{k}": round(float(np.mean(overlap)), 4),
            "users": len(truth), "approximate_index": store._user_index is not None}


def _latest_interaction(split: Split) -> dict[str, tuple[str, str]]:
    """Each user's latest (item_id, event_type) up to the cutoff."""
    parts = []
    if split.view.events is not None and len(split.view.events):
        ev = split.view.events[split.view.events["user_id"].notna()]
        parts.append(pd.DataFrame({"user_id": ev["user_id"].astype(str), "item_id": ev["item_id"].astype(str),
                                   "kind": ev["event_type"].astype(str), "ts": ev["ts"]}))
    if split.view.orders is not None and len(split.view.orders):
        od = split.view.orders[split.view.orders["quantity"] > 0]
        parts.append(pd.DataFrame({"user_id": od["user_id"].astype(str), "item_id": od["item_id"].astype(str),
                                   "kind": "purchase", "ts": od["ts"]}))
    if not parts:
        return {}
    log = pd.concat(parts, ignore_index=True).sort_values(["user_id", "ts", "item_id"], kind="stable")
    last = log.groupby("user_id", sort=False).tail(1)
    return {u: (i, kind) for u, i, kind in zip(last["user_id"], last["item_id"], last["kind"])}


def session_discovery(bundle: ModelBundle, events: pd.DataFrame | None, cutoff: pd.Timestamp, k: int = 10,
                      seed: int = 0) -> dict:
    """Anonymous-session answers on the test period's sessions (see the module docstring);
    ``{"skipped": reason}`` when the shop has no clickstream sessions with purchases."""
    if events is None or not len(events):
        return {"skipped": "no clickstream: sessions need view and purchase events"}
    store = Storefront(bundle, approximate=True)  # as the service answers /session (the index, where it builds one)
    ev = events[(events["ts"] > cutoff) & events["session_id"].notna()]
    ev = ev[ev["session_id"].isin(ev.loc[ev["event_type"] == "purchase", "session_id"].unique())]
    ev = ev.sort_values(["session_id", "ts"], kind="stable")
    known = set(store.items.ids.tolist())
    inputs, truths = [], []
    for _, s in ev.groupby("session_id", sort=True):
        viewed = list(dict.fromkeys(s.loc[s["event_type"] == "view", "item_id"].astype(str)))
        viewed = [i for i in viewed if i in known]
        given = viewed[: (len(viewed) + 1) // 2]
        bought = set(s.loc[s["event_type"] == "purchase", "item_id"].astype(str)) & known
        truth = bought - set(given)
        if given and truth:
            inputs.append(given)
            truths.append(truth)
    if not inputs:
        return {"skipped": "no test-period session has views followed by a purchase of another known item"}
    pick = _sample(len(inputs), seed)
    answers = [store.session(inputs[i], k).item_ids for i in pick]
    truth_rows = [set(store.items.rows(sorted(truths[i])).tolist()) for i in pick]
    metrics, _ = ranked_metrics(_rows(store, answers, k), truth_rows, k)
    return metrics | {"sessions": len(pick)}

