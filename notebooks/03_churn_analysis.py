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
# # Churn analysis
#
# Are the churn probabilities trustworthy (calibration), is the ranking useful for a campaign
# (lift and gains), why does the model flag a customer (reasons), and where do the customers at
# risk sit (RFM segment sizes)? The same evaluation as `shoprec train` (PRODUCT.md protocol:
# scored at end − 90 days, labelled by the following 90 days) and the same plots it logs to MLflow
# (`training/propensity/plots.py`).
#
# **Data**: the shop of `SHOPREC_NOTEBOOK_SHOP`, else a tiny synthetic one generated here.

# %%
import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from features.user_features import SEGMENT_NAMES
from shop_data import load_shop
from training.propensity import plots
from training.propensity.config import PropensityConfig
from training.propensity.dataset import Snapshots
from training.propensity.reasons import group_contributions
from training.propensity.train import evaluate, production_bundle

canonical, shop = load_shop()
snaps = Snapshots(canonical)
customers = canonical.orders["user_id"].nunique()
# a small shop has ~100 customers per scoring date: let the trees split (the tests use the same settings)
cfg = PropensityConfig() if customers >= 2000 else PropensityConfig(
    lgbm={"min_child_samples": 5, "num_leaves": 4, "early_stopping_rounds": 30})
evals = evaluate(snaps, cfg)
print(f"{customers:,} customers, data until {snaps.end}")


def show(fig) -> Image:
    """The training run's figures are plain Agg figures (no pyplot): shown as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image(buf.getvalue())

# %% [markdown]
# ## Test metrics against the baselines
#
# ROC AUC and PR AUC rank; Brier scores the probabilities; lift@10% is the churn rate among the
# top 10% by score over the overall rate.

# %%
rows = []
for target, ev in evals.items():
    m = ev.metrics()
    for scorer in ev.scores:
        mm = m if scorer == "model" else m[scorer]
        rows.append({"target": target, "scorer": plots.LABELS.get(scorer, scorer), "ROC AUC": mm["roc_auc"],
                     "PR AUC": mm["pr_auc"], "Brier": mm["brier"], "lift@10%": mm["lift@10%"],
                     "positive rate": mm["positive_rate"], "rows": mm["rows"]})
pd.DataFrame(rows).set_index(["target", "scorer"]).round(3)

# %% [markdown]
# ## Calibration
#
# Mean predicted probability against the observed rate, per decile of the prediction. On the
# diagonal, "70%" means seven in ten of those customers really stop buying.

# %%
show(plots.calibration_curve(list(evals.values())))

# %% [markdown]
# ## Lift and gains
#
# Share of the churners caught when contacting the top x% of customers by score: the curve a
# campaign budget is read from.

# %%
show(plots.gains_chart(list(evals.values())))

# %%
show(plots.importance_chart(list(evals.values())))

# %% [markdown]
# ## Reasons
#
# Every scored customer carries up to three reasons in words: the feature groups (recency,
# spend trend, visits, ...) that push their churn score up most (TreeSHAP contributions). Which
# groups dominate among the customers with the most value at risk?

# %%
bundle = production_bundle(snaps, cfg, {"source": "notebook"})
scores = bundle.scores
X = snaps.features(snaps.end)
groups = group_contributions(bundle.models["churn"].contributions(X))
top = scores.head(max(10, len(scores) // 10))  # the top decile by value at risk (at least 10)
leading = groups.loc[top["user_id"]].idxmax(axis=1).value_counts()
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(leading.index[::-1], leading.to_numpy()[::-1])
ax.set(title=f"main reason group of the top {len(top)} customers by value at risk", xlabel="customers")
plt.show()
display(top[["user_id", "churn_probability", "value_at_risk", "segment", "reasons"]].head(10)
        .assign(reasons=lambda d: d["reasons"].map("; ".join)))

# %% [markdown]
# ## Segment sizes
#
# Customers per RFM segment, with their mean churn probability and the value at risk they hold:
# the same bars as the marketers' page (`/marketing/`).

# %%
by_segment = (scores.groupby("segment").agg(customers=("user_id", "size"), churn=("churn_probability", "mean"),
                                             value_at_risk=("value_at_risk", "sum"))
              .reindex(SEGMENT_NAMES).fillna(0))
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
y = np.arange(len(by_segment))
left.barh(y, by_segment["customers"])
left.set_yticks(y, [s.replace("_", " ") for s in by_segment.index])
left.invert_yaxis()
left.set(title="customers per segment", xlabel="customers")
right.barh(y, by_segment["value_at_risk"], color="C3")
right.set_yticks(y, [f"{p:.0%}" for p in by_segment["churn"]])
right.invert_yaxis()
right.set(title="value at risk per segment (labels: mean churn probability)", xlabel="value at risk")
plt.show()
by_segment.round(3)
