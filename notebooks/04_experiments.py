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
# # An A/B test of a recommendation policy, from create to decision
#
# Offline NDCG says which model ranks held-out purchases better; it does not say whether shoppers
# buy more. This notebook runs an experiment the way the service does (the same code as
# `shoprec experiment create / report` and the service's exposure log), on simulated traffic whose
# true effect is known, so that every step can be checked against the truth:
#
# 1. create the experiment (control = the champion, treatment = the popular policy);
# 2. who sees what: the sticky hash assignment;
# 3. traffic from the synthetic shop's own shoppers, logged as exposures and outcomes, and its report;
# 4. the same experiment at a bigger shop's traffic with a true +5% lift: a report every day, until
#    the sequential test says "ship";
# 5. why the sequential test: 100 A/A tests read every day;
# 6. CUPED and the sample-ratio check.
#
# **Data**: the shop of `SHOPREC_NOTEBOOK_SHOP`, else a tiny synthetic one generated here.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from features.experiments import Experiment, assign, parse_variants
from features.exposures import open_experiment_log
from shop_data import load_shop, work_dir
from training.experiments.analysis import analyse, unit_table
from training.experiments.report import build_report, render_text
from training.experiments.simulate import isolated, shoppers_from_shop, study, traffic

work = work_dir()
canonical, shop = load_shop(work)
store = open_experiment_log(f"sqlite:///{work}/events.db")  # the event store the service writes to

# %% [markdown]
# ## 1. Create the experiment
#
# `shoprec experiment create home-popular --variant control=champion --variant treatment=popular --split 50/50`
# (admin key) stores this definition in the event store; every replica reads it within 2 s.
#
# The definition carries the plan of the sequential test: `planned_days` (default 14, `--planned-days`)
# or `planned_users` (`--planned-users`), and the alpha-spending function (`--spending`, default
# O'Brien-Fleming). The report is meant to be read once a day; over the planned horizon it spends the 5%
# false-positive budget exactly, little in the first days, nearly all at the end. At the horizon the
# analysis is final. `--open-ended` drops the plan for an always-valid confidence sequence (valid
# however long it runs, but it finds fewer real effects at daily reads).

# %%
exp = Experiment(name="home-popular", variants=parse_variants(["control=champion", "treatment=popular"], "50/50"),
                 salt="home-popular", endpoint="recommend", metric="conversion", guardrails=("revenue_per_user",),
                 created_at=pd.Timestamp.now(tz="UTC").isoformat())
store.put_experiment(exp, new=True)
print(exp.model_dump_json(indent=1))

# %% [markdown]
# ## 2. Who sees what
#
# A shopper's variant is a hash of (salt, user id): the same on every replica and after a restart, and
# ramping the coverage up (10% -> 50% of shoppers) only adds shoppers, nobody changes variant.

# %%
ids = [f"u{i:06d}" for i in range(20_000)]
names = pd.Series([assign(exp, u).name for u in ids])
print(names.value_counts(normalize=True).round(3).to_dict())
ten = exp.model_copy(update={"coverage": 0.1})
half = exp.model_copy(update={"coverage": 0.5})
inside = {u: v.name for u in ids if (v := assign(ten, u)) is not None}
moved = sum(assign(half, u).name != v for u, v in inside.items())
print(f"coverage 10%: {len(inside):,} shoppers in; at 50%: {sum(assign(half, u) is not None for u in ids):,}; "
      f"changed variant: {moved}")

# %% [markdown]
# ## 3. Traffic from the synthetic shop's own shoppers
#
# Each shopper visits and buys at the rates of their own history in the shop (last 60 days); their
# purchases in the 30 days before the start are the pre-period spend (CUPED's covariate). The treatment
# raises the chance to buy from what is shown so that conversion rises by exactly 5%.

# %%
shoppers = shoppers_from_shop(canonical.events, canonical.orders)
exposures, outcomes = isolated(exp.name, *traffic(exp, days=14, lift=0.05, seed=1, shop=shoppers))
store.add_outcomes(outcomes)
store.add_exposures(exposures)
report = build_report(exp, store)  # what `shoprec experiment report home-popular` prints
print(f"{len(shoppers.ids):,} shoppers in the shop")
print(render_text(report.to_dict()))

# %% [markdown]
# The 14 planned days are over, so this is the final analysis. A small shop cannot see a 5% lift: unless
# the sequential interval excludes 0, the decision is to stop and keep the control (a fixed-horizon
# p-value read every day would invite reading noise). How much traffic would it take? At the traffic of a
# shop with 20,000 active shoppers (the simulator's population), the same experiment, with the report
# read as it stood at the end of each day (`as_of`):

# %%
big = Experiment(name="home-popular-big", variants=exp.variants, salt="home-popular-big",
                 created_at=pd.Timestamp.now(tz="UTC").isoformat())
store.put_experiment(big, new=True)
start = pd.Timestamp("2026-01-05", tz="UTC").timestamp()
exposures, outcomes = isolated(big.name, *traffic(big, users=20_000, days=14, lift=0.05, seed=7, start=start))
store.add_outcomes(outcomes)
store.add_exposures(exposures)
ex_all, out_all = store.exposures(big.name), store.outcomes()
first_exposure = float(ex_all["ts"].min())

daily = []
for day in range(1, 15):
    rep = build_report(big, store, as_of=first_exposure + day * 86_400)
    c = next(c for c in rep.comparisons if c["metric"] == "conversion")
    seq = c["sequential"]
    daily.append({"day": day, "units": sum(v["units"] for v in rep.variants), "lift": c["lift"],
                  "fixed_lo": c["lift_ci"][0], "fixed_hi": c["lift_ci"][1],
                  "seq_lo": (c["sequential_lift_ci"] or (np.nan,))[0], "seq_hi": (c["sequential_lift_ci"] or (np.nan, np.nan))[1],
                  "horizon": seq["information_fraction"], "bound_z": seq["bound_z"], "alpha_spent": seq["alpha_spent"],
                  "decision": rep.decision})
daily = pd.DataFrame(daily)
daily.round(4)

# %%
fig, ax = plt.subplots(figsize=(8, 4))
ax.fill_between(daily["day"], daily["seq_lo"], daily["seq_hi"], alpha=0.25, label="group-sequential interval")
ax.fill_between(daily["day"], daily["fixed_lo"], daily["fixed_hi"], alpha=0.35, label="95% fixed-horizon interval")
ax.plot(daily["day"], daily["lift"], "o-", label="estimated lift")
ax.axhline(0.05, color="green", ls="--", label="true lift +5%")
ax.axhline(0, color="black", lw=0.8)
ax.set_xlabel("day of the experiment")
ax.set_ylabel("relative lift in conversion")
ax.set_ylim(-0.2, 0.25)  # day 1's sequential interval is far wider (almost no alpha is spent there)
ax.set_title("Reading the experiment every day")
ax.legend(loc="upper right")
plt.show()
first = daily.loc[daily["decision"] == "ship", "day"]
print(f"first day the decision is 'ship': {int(first.iloc[0]) if len(first) else 'not within 14 days'}")

# %%
final = build_report(big, store)  # after the horizon: the final look
print(render_text(final.to_dict()))

# %% [markdown]
# ## 5. Why the sequential test: 100 A/A tests read every day
#
# No true difference. A fixed-horizon test read once at the end is wrong 5% of the time; read every
# day and stopped at the first "significant", it is wrong far more often. The group-sequential test
# (Lan-DeMets O'Brien-Fleming spending over the 14 planned days, bounds from gsdesign's integration) is
# built to be read daily and is wrong 5% of the time; the open-ended confidence sequence (Waudby-Smith
# et al. 2024) stays far below 5% at daily reads, which costs it detections.
# (`python -m benchmarks.experiments` runs 200 runs of 20,000 shoppers; here a smaller version.)

# %%
aa = study(runs=100, users=10_000, days=14, lift=0.0, seed=3)
rates = {"fixed horizon,\nread once": aa.positive_final_fixed, "fixed horizon,\nread daily": aa.positive_naive_peeking,
         "group-sequential,\nread daily": aa.false_or_true_positive_sequential,
         "confidence seq.,\nread daily": aa.positive_confidence_sequence}
fig, ax = plt.subplots(figsize=(7.5, 3.5))
ax.bar(list(rates), list(rates.values()), color=["#888", "#c0392b", "#27ae60", "#2980b9"])
ax.axhline(0.05, color="black", ls="--", label="5%")
ax.set_ylabel("false-positive rate")
ax.set_title(f"A/A tests ({aa.runs} runs, {aa.users:,} shoppers, {aa.days} days)")
ax.legend()
plt.show()
print({k.replace("\n", " "): round(v, 3) for k, v in rates.items()})

# %% [markdown]
# ## 6. CUPED and the sample-ratio check
#
# CUPED subtracts what the pre-period spend predicts: the same estimate, a narrower interval (ratio
# of widths below). The sample-ratio check comes before any result: if 45% of the shoppers land in
# the control of a 50/50 test, something drops exposures or assigns wrongly, and no lift can be trusted.

# %%
for c in final.comparisons:
    if c["cuped"]:
        print(f"{c['metric']}: CUPED interval width / plain width = {c['cuped_width_ratio']:.3f}")
table = unit_table(big, ex_all, out_all)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.scatter(table["pre_spend"], table["revenue"], s=3, alpha=0.3)
ax.set_xlabel("spend in the 30 days before")
ax.set_ylabel("attributed revenue during the test")
ax.set_title("The covariate CUPED uses")
plt.show()

broken = table[~((table["variant"] == "treatment") & (table.index % 10 == 0))]  # 10% of the treatment's exposures lost
print(render_text(analyse(big, broken).to_dict()).split("\n\n")[0])

# %% [markdown]
# ## 7. Shoppers who respond to what each arm shows
#
# Sections 3 and 4 set the treatment's effect by hand, to check the analysis. Here the arms decide it:
# each shopper of the generated shop is shown their variant's real answer (the champion's storefront,
# or the popular policy, built as the service builds its arms) and buys shown items at the rates the
# shop's truth gives them (`training/experiments/shown.py`; `shoprec experiment simulate NAME --shop DIR`
# does the same against the published champion). The true lift follows from those rates, before any
# traffic is drawn, and the report's interval should cover it. (A shop of your own has no truth: this
# section needs a generated one.)

# %%
from features.synthetic.truth import load_truth
from training.config import Candidate, TrainConfig
from training.experiments.policies import policy_store, popularity
from training.experiments.shown import shown_traffic
from training.pipeline import fit_bundle
from training.recommenders.als import ALSConfig
from training.storefront import Storefront

if (shop / "truth" / "truth.npz").exists():
    bundle = fit_bundle(Candidate(name="als", model=ALSConfig(factors=16, iterations=10)), TrainConfig(),
                        canonical.events, canonical.orders, {"run_id": "notebook"}, items=canonical.items)
    arms = {"control": Storefront(bundle), "treatment": policy_store(bundle, "popular", popularity(bundle))}
    shown_exp = Experiment(name="home-popular-shown", variants=exp.variants, salt="home-popular-shown",
                           created_at=pd.Timestamp.now(tz="UTC").isoformat())
    store.put_experiment(shown_exp, new=True)
    prices = dict(zip(canonical.items["item_id"], canonical.items["price"].astype(float)))
    exposures, outcomes, truth = shown_traffic(shown_exp, load_truth(shop / "truth"), shoppers.ids, arms, prices,
                                               days=14, seed=2, pre_purchases=shoppers.pre_purchases)
    exposures, outcomes = isolated(shown_exp.name, exposures, outcomes)  # each simulation's shoppers its own
    store.add_outcomes(outcomes)
    store.add_exposures(exposures)
    shown_report = build_report(shown_exp, store)
    c = next(c for c in shown_report.comparisons if c["metric"] == "conversion")
    print(f"true conversion: {truth.conversion}, true lift of the popular policy {truth.lift:+.1%}")
    print(f"reported lift {c['lift']:+.1%}, 95% interval [{c['lift_ci'][0]:+.1%}, {c['lift_ci'][1]:+.1%}]: "
          f"{'covers' if c['lift_ci'][0] <= truth.lift <= c['lift_ci'][1] else 'misses'} the truth")
else:
    print(f"{shop} has no truth/ folder: the item-level simulation needs a shop from `shoprec generate`")
