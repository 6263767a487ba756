"""The model bundle the serving and batch benchmarks use, built from a shop's canonical tables.

Every shopper id the shop has (the large shop: 1,000,000, of whom ~517k have interactions; the
others are registered shoppers with an empty row) x every catalogue item (100,000), with the
"als" recipe's binary interactions. ``prepare`` writes the bundle with every part but the
model (a placeholder popularity model stands in); the ALS benchmark's first "ours" fit then
saves the real model into ``bundle/model`` (one fit serves both); ``publish`` checks the bundle
loads and puts it into a BentoML store.

    python -m benchmarks.model prepare <shop_dir> <canonical_dir> <bundle_dir>
    python -m benchmarks.model publish <bundle_dir> <bentoml_home>
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit


def _all_user_ids(shop: Path, seen: np.ndarray) -> np.ndarray:
    """u000000 .. u{n-1} for a synthetic shop (its config says n), else the ids seen."""
    cfg = shop / "config.json"
    if not cfg.exists():
        return np.sort(seen)
    from features.synthetic.generate import id_width

    n = json.loads(cfg.read_text())["n_users"]
    width = id_width(n, 6)
    ids = np.char.add("u", np.char.zfill(np.arange(n).astype(str), width))
    extra = np.setdiff1d(seen, ids)  # e.g. renamed copies: keep whatever the data has too
    return np.sort(np.concatenate([ids, extra]))


def prepare(shop: str, canonical: str, bundle_dir: str) -> None:
    import pandas as pd
    import scipy.sparse as sp

    from features.cooccurrence import AssociationConfig, association_rules, baskets
    from features.ingest import load_canonical
    from features.interactions import InteractionConfig, build_matrix, interaction_log, purchases
    from features.vocab import IdVocab
    from training.bundle import ModelBundle
    from training.pipeline import catalog
    from training.recommenders.popular import PopularConfig, PopularRecommender

    start = time.perf_counter()
    canon = load_canonical(Path(canonical))
    ev, od, it = canon.events, canon.orders, canon.items
    binary = InteractionConfig(binary=True)
    log = interaction_log(ev, od, binary)
    users = IdVocab(_all_user_ids(Path(shop), pd.unique(log["user_id"].astype(str).to_numpy()).astype(str)))
    items = IdVocab(np.sort(np.union1d(it["item_id"].astype(str).to_numpy().astype(str),
                                       pd.unique(log["item_id"].astype(str).to_numpy()).astype(str))))
    now = log["ts"].max()
    matrix = build_matrix(log, binary, users, items, now=now).matrix
    trending = InteractionConfig(binary=True, half_life_days=14, window_days=112)
    fallback = PopularRecommender(PopularConfig(count="weight")).fit(
        build_matrix(interaction_log(ev, od, trending), trending, users, items, now=now).matrix)
    bought_log = purchases(ev, od)
    bought = sp.csr_matrix((np.ones(len(bought_log)), (users.rows(bought_log["user_id"].to_numpy()),
                                                        items.rows(bought_log["item_id"].to_numpy()))),
                           shape=(len(users), len(items)))
    bought.sum_duplicates()
    together = association_rules(baskets(od, items), AssociationConfig())
    meta = {"name": "als", "kind": "als", "fallback": "trending-14d", "data_until": str(now),
            "trained_at": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "n_users": len(users), "n_items": len(items), "row_interactions": binary.model_dump(mode="json"),
            "note": "benchmark bundle (benchmarks/model.py)"}
    bundle = ModelBundle(PopularRecommender().fit(matrix), fallback, users, items, bought.astype(np.float32).tocsr(),
                         matrix, together, catalog(it, items), meta, {"name": "als"})
    bundle.save(Path(bundle_dir))
    active = np.flatnonzero(np.diff(matrix.indptr) > 0)
    customers = propensity_standin(users.ids[np.flatnonzero(np.diff(bundle.bought.indptr) > 0)], Path(bundle_dir))
    emit(time.perf_counter() - start, users=len(users), items=len(items), active_users=len(active), nnz=int(matrix.nnz),
         bought_nnz=int(bought.nnz), rules=int(together.nnz), propensity_customers=customers)


def propensity_standin(customers: np.ndarray, bundle_dir: Path) -> int | None:
    """A propensity bundle with the real layout for these customers and placeholder scores, so
    that /propensity (a lookup in its score table) can be load-tested at shop scale without
    training the churn model. None when the propensity package is not there."""
    try:
        import pandas as pd

        from training.propensity.bundle import SCORE_COLUMNS, PropensityBundle
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    n = len(customers)
    p = rng.random(n)
    scores = pd.DataFrame({"user_id": customers.astype(str), "churn_probability": p, "conversion_probability": 1 - p,
                           "expected_spend": rng.gamma(2.0, 20.0, n), "value_at_risk": 0.0, "segment": "hibernating",
                           "r_score": 1, "f_score": 1, "m_score": 1, "recency_days": rng.random(n) * 300,
                           "frequency": 1.0, "monetary": 30.0, "reasons": [["benchmark placeholder"]] * n})
    scores["value_at_risk"] = scores["churn_probability"] * scores["expected_spend"]
    PropensityBundle(scores[SCORE_COLUMNS], {"scored_at": "benchmark", "note": "placeholder scores"}).save(
        bundle_dir / "propensity")
    return n


def publish(bundle_dir: str, home: str) -> None:
    import os

    os.environ["BENTOML_HOME"] = home
    from training.bundle import ModelBundle
    from training.publish import store_bundle

    start = time.perf_counter()
    bundle = ModelBundle.load(Path(bundle_dir))
    assert bundle.model.kind == "als", f"the bundle's model is {bundle.model.kind!r}: fit ALS into it first"
    model = store_bundle(Path(bundle_dir), labels={"registry_version": "bench"})
    tags = [str(model.tag)]
    if (Path(bundle_dir) / "propensity").exists():
        from training.propensity.publish import store_propensity_bundle

        tags.append(str(store_propensity_bundle(Path(bundle_dir) / "propensity", {"registry_version": "bench"}).tag))
    emit(time.perf_counter() - start, tags=tags)


def bodies(bundle_dir: str, out_dir: str, n: int = 4000, seed: int = 0) -> None:
    """Request bodies for the load test: known active shoppers, items, 100-candidate reranks."""
    import scipy.sparse as sp

    from features.vocab import IdVocab

    rng = np.random.default_rng(seed)
    b = Path(bundle_dir)
    users, items = IdVocab.load(b / "users.npz"), IdVocab.load(b / "items.npz")
    inter = sp.load_npz(b / "interactions.npz").tocsr()
    active = np.flatnonzero(np.diff(inter.indptr) > 0)
    u = users.ids[rng.choice(active, size=n, replace=len(active) < n)]
    popular = np.argsort(-np.diff(inter.tocsc().indptr))[: max(1000, len(items) // 10)]
    i = items.ids[rng.choice(popular, size=n)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recommend.json").write_text(json.dumps([{"user_id": str(x), "k": 10} for x in u]))
    (out / "similar_items.json").write_text(json.dumps([{"item_id": str(x), "k": 10} for x in i]))
    (out / "rerank.json").write_text(json.dumps(
        [{"user_id": str(x), "items": [str(y) for y in items.ids[rng.choice(len(items), 100, replace=False)]]}
         for x in u[: n // 4]]))
    (out / "propensity.json").write_text(json.dumps([{"user_ids": [str(x)]} for x in u]))
    emit(0.0, users=len(u))


def recall(bundle_dir: str, bodies_dir: str, n: int = 1000) -> None:
    """Recall@10 of the service's approximate answers (training/ann.py) against exact search,
    for the load test's shoppers (/recommend) and items (/similar_items), and the time of each."""
    import json

    from training.storefront import Storefront
    from training.bundle import ModelBundle

    bundle = ModelBundle.load(Path(bundle_dir))
    start = time.perf_counter()
    fast = Storefront(bundle, approximate=True)
    build = time.perf_counter() - start
    if fast._user_index is None:
        emit(build, approximate=False, items=len(bundle.items),
             note=f"no approximate index: {len(bundle.items):,} items, under training.ann.MIN_ITEMS; exact search only")
        return
    exact = Storefront(bundle)
    users = [b["user_id"] for b in json.loads((Path(bodies_dir) / "recommend.json").read_text())][: int(n)]
    items = [b["item_id"] for b in json.loads((Path(bodies_dir) / "similar_items.json").read_text())][: int(n)]
    item_index = fast._item_index  # similar items: faiss IVF; shoppers: the length-pruned exact search
    out = {"index_build_seconds": round(build, 2), "shopper_search": type(fast._user_index).__name__,
           "n_lists": item_index.n_lists if item_index else None, "nprobe": item_index.nprobe if item_index else None}
    for name, ask, keys in (("recommend", lambda s, x: s.recommend(x, 10), users),
                            ("similar_items", lambda s, x: s.similar_items(x, 10), items)):
        timing, found = {}, []
        for label, store in (("exact", exact), ("approximate", fast)):
            t = time.perf_counter()
            found.append([set(ask(store, x).item_ids) for x in keys])
            timing[label] = round((time.perf_counter() - t) / len(keys) * 1000, 3)
        hits = [len(a & e) / max(1, len(e)) for e, a in zip(*found)]
        out[name] = {"recall_at_10": round(float(np.mean(hits)), 4), "queries": len(keys),
                     "exact_ms": timing["exact"], "approximate_ms": timing["approximate"]}
    emit(time.perf_counter() - start, **out)


if __name__ == "__main__":
    commands = {"prepare": prepare, "publish": publish, "bodies": bodies, "recall": recall}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m benchmarks.model {{{'|'.join(commands)}}} ARGS...")
    commands[sys.argv[1]](*sys.argv[2:])
