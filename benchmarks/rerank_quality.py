"""/rerank's order against the test period: does a caller's candidate list come back in the shopper's order?

    python -m benchmarks.rerank_quality [--users 500]

For UCI Online Retail and three synthetic shops (small, gift, grocery): the recipe ``shoprec train`` chooses (``training.pipeline.evaluate``
on ``configs/train.yaml``: search on validation, nothing chosen on test), fitted on the data up to the test cutoff and
served by the storefront (``Storefront.rerank``, the code path of ``POST /rerank``). Per sampled test user a caller's
list of 20 candidates: the known items they bought in the test period (up to 3) and random catalogue items they had
not bought, shuffled. NDCG@10 of three orders of the same lists, side by side: the caller's (shuffled), the model's
own full scores with every candidate outside its own candidate set left at -inf in the caller's order (what /rerank
answered before ``Recommender.scores_of``: a ranker scores only the candidates of its retrievers), and /rerank now.
Writes benchmarks/results/rerank-quality.json and .md.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `shoprec train` (training/cli.py): its models, float for float

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import REPO, machine, machine_markdown, write_results  # noqa: E402

RETAIL = REPO.parent / "shared" / "data" / "online-retail" / "onlineretail.csv.gz"
LIST, TRUTH_MAX, K = 20, 3, 10
SYNTHETIC = ("small", "gift-test", "grocery-test")  # the make-run shop and two other kinds


def _ndcg(order: list[str], relevant: set[str], k: int = K) -> float:
    gain = sum(1 / np.log2(i + 2) for i, item in enumerate(order[:k]) if item in relevant)
    return gain / sum(1 / np.log2(i + 2) for i in range(min(k, len(relevant))))


def measure(name: str, canonical: Path, users: int, seed: int = 0) -> dict:
    from features.ingest import load_canonical
    from training.config import TrainConfig
    from training.pipeline import evaluate, fit_bundle, fit_candidate
    from training.storefront import Storefront

    start = time.perf_counter()
    from features.relational.engine import connect

    data = load_canonical(canonical)
    engine = connect("duckdb")  # as `shoprec train` counts the matrices (its default engine)
    config = TrainConfig.load(REPO / "configs" / "train.yaml")
    result = evaluate(config, data.events, data.orders, engine=engine)
    split, candidate = result.test_split, result.recipes[result.chosen]
    model = fit_candidate(candidate, split.view)
    bundle = fit_bundle(candidate, config, None, None, {}, view=split.view, model=model, engine=engine)
    store = Storefront(bundle, approximate=True)
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(split.test_users))[:users]
    orders = {"caller": [], "before": [], "now": []}
    unscored = []
    for at in picked:
        user, truth = split.test_users[at], list(split.truth[at])[:TRUTH_MAX]
        seen = set(split.view.bought[user].indices) | set(truth)
        pool = np.setdiff1d(np.arange(bundle.model.n_items), np.fromiter(seen, dtype=np.int64))
        rows = np.concatenate([np.asarray(truth, dtype=np.int64), rng.choice(pool, LIST - len(truth), replace=False)])
        rng.shuffle(rows)
        ids = [str(bundle.items.ids[r]) for r in rows]
        relevant = {str(bundle.items.ids[r]) for r in truth}
        shopper = str(split.view.users.ids[user])
        full = bundle.model.scores(np.array([bundle.users.row(shopper)]))[0][rows]
        unscored.append(float(np.mean(~np.isfinite(full))))
        orders["caller"].append(_ndcg(ids, relevant))
        orders["before"].append(_ndcg([ids[i] for i in np.argsort(-full, kind="stable")], relevant))
        orders["now"].append(_ndcg(store.rerank(shopper, ids).item_ids, relevant))
    return {"shop": name, "recipe": result.chosen, "users": len(picked), "cutoff": str(split.cutoff),
            "ndcg@10": {k: round(float(np.mean(v)), 4) for k, v in orders.items()},
            "unscored_share_before": round(float(np.mean(unscored)), 4),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=500)
    args = p.parse_args(argv)
    from features.ingest import ingest
    from features.synthetic import ShopConfig, generate_shop

    shops = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if RETAIL.exists():
            ingest(orders=RETAIL, events=None, items=None, out_dir=tmp / "retail")
            shops.append(("online-retail", tmp / "retail"))
        else:
            print(f"{RETAIL} is absent: Online Retail left out")
        for preset in SYNTHETIC:
            raw = tmp / f"{preset}-raw"
            generate_shop(ShopConfig.preset(preset), raw)
            ingest(orders=raw / "orders.parquet", events=raw / "events.parquet", items=raw / "items.parquet",
                   out_dir=tmp / preset)
            shops.append((f"synthetic {preset}", tmp / preset))
        results = [measure(name, path, args.users) for name, path in shops]
    for r in results:
        print(r, flush=True)
    out = {"machine": machine(), "list": LIST, "truth_max": TRUTH_MAX, "shops": results}
    lines = ["# /rerank against the test period (`python -m benchmarks.rerank_quality`)", "",
             machine_markdown(out["machine"]), "",
             f"Per sampled test user, a caller's list of {LIST} candidates: the known items they bought in the test "
             f"period (up to {TRUTH_MAX}) and random catalogue items they had not bought, shuffled; the recipe "
             "`shoprec train` chooses (search on validation), fitted on the data up to the test cutoff, served by "
             "`Storefront.rerank`. NDCG@10 of the same lists in three orders, side by side.", "",
             "| shop | recipe | users | caller's order | before (candidates outside the model's own at -inf) | "
             "/rerank now | share of candidates the model left unscored before |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['shop']} | {r['recipe']} | {r['users']} | {r['ndcg@10']['caller']:.4f} | "
              f"{r['ndcg@10']['before']:.4f} | **{r['ndcg@10']['now']:.4f}** | {r['unscored_share_before']:.0%} |"
              for r in results]
    write_results("rerank-quality", out, "\n".join(lines) + "\n")
    print("wrote benchmarks/results/rerank-quality.json and .md")


if __name__ == "__main__":
    main()
