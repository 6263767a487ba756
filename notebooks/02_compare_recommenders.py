# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing recommender runs from MLflow
#
# One NDCG@10 per run hides who the model serves well. Every `shoprec train` run logs a
# `recommender_report.json` (`training/report_plots.py`): NDCG@10 by user activity bucket,
# catalog coverage and popularity bias, for the chosen recipe and the popularity baseline, on the
# test period. This notebook puts runs side by side.
#
# **Runs**: the MLflow store named by `SHOPREC_NOTEBOOK_MLFLOW` (a tracking URI, e.g.
# `sqlite:///mlruns/mlflow.db` or `http://mlflow.internal:5000`), else two runs trained here on
# the shop of `SHOPREC_NOTEBOOK_SHOP` or a tiny synthetic one: baselines only, and ALS blends.

# %%
import os

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from shop_data import load_shop, work_dir
from training import tracking
from training.report_plots import BUCKET_LABELS

TRACKING = os.environ.get("SHOPREC_NOTEBOOK_MLFLOW")
if TRACKING:
    mlflow.set_tracking_uri(TRACKING)
else:
    from training.config import SearchSpace, TrainConfig
    from training.recommenders.als import ALSConfig
    from training.train import train

    work = work_dir()
    canonical, shop = load_shop(work)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a fresh SQLite store inside the work folder
    small_search = SearchSpace(trending_half_life_days=[7.0], als=[ALSConfig(factors=32)], ease_l2=[], itemknn_neighbours=[],
                               blend_weights=[4.0], weighted_rows=False, ranker={"enabled": False})
    configs = {"baselines": TrainConfig(search=None), "als + trending search": TrainConfig(search=small_search)}
    for label, config in configs.items():
        outcome = train(canonical, config, work, shop="notebook", progress=lambda msg: None)
        print(f"{label}: run {outcome.run_id}, chose {outcome.metrics['recommend']['model']}")
    tracking.setup(work)
print("tracking URI:", mlflow.get_tracking_uri())

# %% [markdown]
# ## The runs and their reports

# %%
experiment = MlflowClient().get_experiment_by_name(tracking.EXPERIMENT)
runs = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
runs = runs[runs.get("tags.chosen", pd.Series(index=runs.index, dtype=object)).notna()]  # recommender runs only
reports, names = {}, {}
for _, run in runs.iterrows():
    try:
        reports[run["run_id"]] = mlflow.artifacts.load_dict(f"runs:/{run['run_id']}/recommender_report.json")
        names[run["run_id"]] = run.get("tags.mlflow.runName", "")
    except Exception as e:  # runs from before the report existed
        print(f"run {run['run_id']}: no recommender_report.json ({type(e).__name__})")
assert reports, "no recommender run with a recommender_report.json in this store"

rows = []
for run_id, r in reports.items():
    chosen, baseline = r["models"][0], (r["models"] + [None])[1]
    rows.append({"run": run_id[:8], "name": names[run_id], "chosen": chosen, "test users": r["test_users"],
                 "NDCG@10": r["ndcg"][chosen], "coverage@10": r["coverage"][chosen],
                 "popularity pct": r["popularity_percentile"][chosen], "Gini": r["gini"][chosen],
                 "baseline NDCG@10": r["ndcg"].get(baseline) if baseline else None})
table = pd.DataFrame(rows).set_index("run")
table.round(3)

# %% [markdown]
# ## NDCG@10 by user activity
#
# Users bucketed by how many distinct items they bought before the test cutoff. A model that
# only wins on heavy users leaves the many light users to the fallback's quality.

# %%
fig, ax = plt.subplots(figsize=(8, 4))
x = np.arange(len(BUCKET_LABELS))
for run_id, r in reports.items():
    chosen = r["models"][0]
    ax.plot(x, [r["buckets"][b][chosen] or np.nan for b in BUCKET_LABELS], marker="o", label=f"{run_id[:8]} {chosen}")
last = reports[list(reports)[-1]]
if len(last["models"]) > 1:
    base = last["models"][1]
    ax.plot(x, [last["buckets"][b][base] or np.nan for b in BUCKET_LABELS], color="grey", linestyle="--",
            label=f"{base} (baseline)")
ax.set_xticks(x, [f"{b}\n{last['buckets'][b]['users']:,} users" for b in BUCKET_LABELS])
ax.set(xlabel="distinct items bought before the cutoff", ylabel="NDCG@10", title="NDCG@10 by user activity, per run")
ax.legend(fontsize=8)
plt.show()
by_bucket = pd.DataFrame({f"{k[:8]} {r['models'][0]}": {b: r["buckets"][b][r["models"][0]] for b in BUCKET_LABELS}
                          for k, r in reports.items()})
by_bucket.round(3)

# %% [markdown]
# ## Coverage and popularity bias
#
# Coverage@10: share of the catalog that appears in at least one top-10 list. Popularity
# percentile: where the recommended items sit in the sales ranking (1.0 = only best sellers).
# Good runs sit high on NDCG without collapsing onto the best sellers.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, (run_id, r) in enumerate(reports.items()):
    for j, model in enumerate(r["models"]):
        label = f"{run_id[:8]} {model}"
        marker = "o" if j == 0 else "x"
        left.scatter(r["coverage"][model], r["ndcg"][model], marker=marker, color=f"C{i}", label=label)
        right.scatter(r["popularity_percentile"][model] or np.nan, r["ndcg"][model], marker=marker, color=f"C{i}")
left.set(xlabel="catalog coverage@10", ylabel="NDCG@10", title="accuracy vs coverage", xlim=(0, 1))
right.set(xlabel="mean popularity percentile of recommended items", ylabel="NDCG@10",
          title="accuracy vs popularity bias", xlim=(0, 1))
left.legend(fontsize=7)
plt.show()
