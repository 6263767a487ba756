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
# # Exploring a shop's data
#
# The questions to ask before training anything: how shoppers move through the funnel, whether
# customers come back (cohorts and retention), who the customers are (RFM segments) and how
# concentrated sales are on a few items (the long tail).
#
# **Data**: the folder named by `SHOPREC_NOTEBOOK_SHOP` (orders / events / items files, e.g.
# `data/shop` after `make run`), else a tiny synthetic shop generated here. Both go through the
# same validation as `shoprec ingest`. Open as a notebook with `jupytext --to ipynb` or run as is.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shop_data import load_shop

canonical, shop = load_shop()
orders, events, items = canonical.orders, canonical.events, canonical.items
print(f"shop: {shop}")
summary = pd.Series({
    "order lines": len(orders) if orders is not None else 0,
    "customers": orders["user_id"].nunique() if orders is not None else 0,
    "items sold": orders["item_id"].nunique() if orders is not None else 0,
    "events": len(events) if events is not None else 0,
    "from": (orders if orders is not None else events)["ts"].min(),
    "to": (orders if orders is not None else events)["ts"].max(),
})
summary

# %% [markdown]
# ## Funnel: view → cart → purchase
#
# Per session: did it view, add to cart, buy? The drop between steps is where recommendations
# (product page) and reminders (cart) can help.

# %%
if events is not None and len(events):
    steps = ["view", "cart", "purchase"]
    reached = (events.assign(one=1).pivot_table(index="session_id", columns="event_type", values="one", aggfunc="max")
               .reindex(columns=steps).fillna(0).astype(bool))
    # a session that bought also passed the earlier steps, even if its view was not logged
    reached["cart"] |= reached["purchase"]
    reached["view"] |= reached["cart"]
    funnel = pd.DataFrame({"sessions": reached.sum()})
    funnel["share of sessions"] = funnel["sessions"] / len(reached)
    funnel["from previous step"] = funnel["sessions"] / funnel["sessions"].shift(1)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(steps[::-1], funnel["sessions"][::-1])
    for y, (n, share) in enumerate(zip(funnel["sessions"][::-1], funnel["share of sessions"][::-1])):
        ax.annotate(f"{n:,} ({share:.1%})", (n, y), va="center", xytext=(4, 0), textcoords="offset points")
    ax.set(title="sessions reaching each step", xlabel="sessions")
    plt.show()
else:
    funnel = pd.DataFrame()
    print("no clickstream events in this shop: no funnel")
funnel

# %% [markdown]
# ## Cohorts and retention
#
# Customers grouped by the month of their first order; each cell is the share of the cohort
# that ordered again *n* months later. Falling rows are normal; a cohort that falls faster than
# the others is worth a look (a campaign that brought one-off buyers, a stock-out, ...).

# %%
from features.interactions import purchases

bought = purchases(events, orders)  # order lines with quantity > 0 (purchase events for an events-only shop)
month = bought["ts"].dt.to_period("M")
first = month.groupby(bought["user_id"]).transform("min")
offset = (month - first).map(lambda d: d.n)
active = pd.DataFrame({"cohort": first, "offset": offset, "user_id": bought["user_id"]}).drop_duplicates()
counts = active.pivot_table(index="cohort", columns="offset", values="user_id", aggfunc="nunique").fillna(0)
retention = counts.div(counts[0], axis=0)
# months after the end of the data are unknown, not zero
observable = np.array([(month.max() - c).n for c in retention.index])[:, None] >= retention.columns.to_numpy()[None, :]
retention = retention.where(observable)

fig, ax = plt.subplots(figsize=(8, 0.35 * len(retention) + 1.5))
later = retention.iloc[:, 1:].max().max()  # the colour scale follows the months after the first
vmax = min(1.0, later * 1.5) if later == later and later > 0 else 1.0
im = ax.imshow(np.ma.masked_invalid(retention.to_numpy(dtype=float)), cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
ax.set_yticks(range(len(retention)), [f"{c} ({int(n):,})" for c, n in zip(retention.index, counts[0])])
ax.set(title="share of each cohort ordering n months after its first month", xlabel="months since the first order")
fig.colorbar(im, ax=ax)
plt.show()
retention.round(3)

# %% [markdown]
# ## RFM segments
#
# Recency, frequency and monetary scores (1–5 quintiles) at the last order date, mapped to the
# segments the churn list and the marketers' page use (`features.user_features.rfm_segments`).

# %%
from features.user_features import SEGMENT_NAMES, rfm_segments, user_features

if orders is None:  # an events-only shop has no spend
    print("no orders: no RFM segments")
    rfm = pd.DataFrame()
else:
    at = orders["ts"].max()
    features = user_features(orders, at, events, items)
    segments = rfm_segments(features).join(features[["recency_days", "frequency", "monetary"]])
    rfm = (segments.groupby("segment", observed=True)
           .agg(customers=("r_score", "size"), recency_days=("recency_days", "median"),
                orders=("frequency", "median"), spend=("monetary", "median"), total_spend=("monetary", "sum"))
           .reindex(SEGMENT_NAMES).dropna(how="all"))
    rfm["share of customers"] = rfm["customers"] / rfm["customers"].sum()
    rfm["share of spend"] = rfm["total_spend"] / rfm["total_spend"].sum()

    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(rfm))
    ax.bar(x - 0.2, rfm["share of customers"], 0.4, label="customers")
    ax.bar(x + 0.2, rfm["share of spend"], 0.4, label="spend")
    ax.set_xticks(x, [s.replace("_", "\n") for s in rfm.index], fontsize=8)
    ax.set(title=f"RFM segments at {at.date()}", ylabel="share")
    ax.legend()
    plt.show()
rfm.round(2)

# %% [markdown]
# ## The long tail
#
# Items ordered by sales; the curve is the cumulative share of purchases. A steep start means a
# popularity baseline is hard to beat, and a model that covers the tail is worth its cost.

# %%
sales = bought.groupby("item_id").size().sort_values(ascending=False)
share_items = np.arange(1, len(sales) + 1) / len(sales)
cumulative = sales.cumsum().to_numpy() / sales.sum()
top20 = cumulative[max(int(np.ceil(0.2 * len(sales))) - 1, 0)]
catalog = len(items) if items is not None else len(sales)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
left.plot(share_items, cumulative)
left.axvline(0.2, color="grey", linewidth=0.5)
left.set(title=f"top 20% of sold items: {top20:.0%} of purchases", xlabel="share of sold items, best first",
         ylabel="cumulative share of purchases")
left.set_xlim(0, 1)
left.set_ylim(0, 1.02)
right.loglog(np.arange(1, len(sales) + 1), sales.to_numpy(), marker=".", linestyle="none")
right.set(title="sales by rank (log-log)", xlabel="rank", ylabel="purchase lines")
plt.show()
pd.Series({"items in catalog": catalog, "items sold": len(sales), "never sold": max(catalog - len(sales), 0),
           "top 20% share of purchases": round(float(top20), 3),
           "items with one sale": int((sales == 1).sum())})
