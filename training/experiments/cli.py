"""``shoprec experiment ...``: create, list, stop, report and simulate A/B tests.

Registered in training/cli.py with ``app.add_typer(experiment_app, name="experiment")``. Experiments
live in the event store (``SHOPREC_EVENTS_URL``) that every replica reads; a running server picks a
new or stopped one up within ``SHOPREC_EXPERIMENTS_REFRESH_S`` (2 s). Access follows the API's scopes:
create and stop need an admin key, report a marketing key (``--key`` or ``SHOPREC_KEY``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from training.cli_errors import fail, load_settings

experiment_app = typer.Typer(help="A/B tests of recommendation policies: create, list, stop, report, simulate.",
                             no_args_is_help=True)
KEY_HELP = "an API key of the needed scope (default: $SHOPREC_KEY)"


@experiment_app.callback()
def _project_store() -> None:
    """Model arms are published into, and the champion read from, the project's model store (./bentoml_home) unless
    BENTOML_HOME says otherwise, as every other command and `shoprec serve` use it (not ~/bentoml)."""
    os.environ.setdefault("BENTOML_HOME", str(Path.cwd() / "bentoml_home"))


def _authorize(settings, key: str | None, scope: str) -> str:
    """The key's name when it is an active key of ``scope``; exit 2 otherwise (as the API's 401/403)."""
    from features.key_store import KeyRing, KeyStore, KeyStoreError, key_of
    from features.settings import ENV_KEY_SCOPES

    key = (key or os.environ.get("SHOPREC_KEY") or "").strip()
    if not key:
        fail(f"this command needs {key_of(scope)}: --key KEY or SHOPREC_KEY (create one: shoprec keys create --scope {scope})")
    env_keys = {f"SHOPREC_{f.upper()}": (s, k) for f, s in ENV_KEY_SCOPES.items() if (k := settings.env_key(f))}
    try:
        principal = KeyRing(KeyStore(settings.keys_file), env_keys).lookup(key)
    except KeyStoreError as e:
        fail(str(e))
    if principal is None:
        fail("unknown or revoked key")
    if principal.scope != scope:
        fail(f"key {principal.name!r} has scope {principal.scope}; this command needs {key_of(scope)}")
    return principal.name


def _log(settings):
    from features.exposures import open_experiment_log

    try:
        return open_experiment_log(settings.events_url)
    except Exception as e:
        fail(f"cannot open the event store {settings.events_url}: {type(e).__name__}: {e}")


def _find(store, name: str):
    from training.experiments.manage import find

    if (exp := find(store, name)) is None:
        fail(f"no experiment named {name!r} (see `shoprec experiment list`)")
    return exp


def _published(v):
    """A model arm given as a registry version or alias, as ``vN`` with that version in the BentoML store
    as a ``shoprec-variant`` (training/experiments/publish.py); other arms unchanged."""
    from training.experiments.publish import publish_version, resolve_version

    if v.kind != "model" or ":" in v.arm:
        return v
    try:
        version = resolve_version(Path.cwd(), v.arm)
        tag = publish_version(Path.cwd(), version)
    except ValueError as e:
        fail(f"--variant {v.name}={v.arm}: {e}")
    typer.echo(f"variant {v.name}: registry version {version} is in the BentoML store as {tag}")
    return v.model_copy(update={"arm": f"v{version}"})


@experiment_app.command("create")
def create(
    name: str = typer.Argument(..., help="the experiment's name (never reused)"),
    variant: list[str] = typer.Option(..., "--variant", help="NAME=ARM, the first is the control; ARM: champion, "
                                      "popular, trending, a registry version v3, a registry alias @NAME, or a BentoML tag NAME:VERSION"),
    split: Optional[str] = typer.Option(None, "--split", help="traffic shares, e.g. 50/50 [default: equal]"),
    salt: Optional[str] = typer.Option(None, "--salt", help="assignment salt [default: the name]"),
    endpoint: str = typer.Option("recommend", "--endpoint", help="recommend | rerank | session | similar_items | "
                                                                  "bought_together"),
    metric: str = typer.Option("conversion", "--metric", help="primary metric: conversion | revenue_per_user | ctr"),
    guardrail: list[str] = typer.Option(["revenue_per_user"], "--guardrail", help="guardrail metric (repeatable)"),
    coverage: float = typer.Option(1.0, "--coverage", help="share of shoppers in the experiment (0-1]"),
    attribution_days: float = typer.Option(7.0, "--attribution-days", help="outcomes count this long after an exposure"),
    planned_days: float = typer.Option(14.0, "--planned-days", help="the planned duration: the sequential test, read "
                                       "daily, spends its 5% over it, and the analysis stops there"),
    planned_users: Optional[int] = typer.Option(None, "--planned-users", help="plan in shoppers instead: the "
                                                "information fraction is shoppers so far / planned shoppers"),
    spending: str = typer.Option("obrien_fleming", "--spending", help="alpha spending: obrien_fleming (little early, "
                                 "full power at the end) | pocock (evenly)"),
    open_ended: bool = typer.Option(False, "--open-ended", help="no planned horizon: the always-valid confidence "
                                    "sequence (valid however long it runs; fewer detections at daily looks)"),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Create and start an experiment (admin key). Example:
    shoprec experiment create home-pop --variant control=champion --variant treatment=popular --split 50/50"""
    from features.experiments import ExperimentError
    from training.experiments.manage import define, start

    settings = load_settings()
    who = _authorize(settings, key, "admin")
    try:
        exp = define(name, variant, split, salt, endpoint, metric, guardrail, coverage, attribution_days, planned_days,
                     planned_users, spending, open_ended, arm=_published)
        started = start(_log(settings), exp)
    except ExperimentError as e:
        fail(str(e))
    typer.echo(f"created {started.summary()} by {who}; running servers pick it up within a few seconds "
               "(SHOPREC_EXPERIMENTS_REFRESH_S, default 2)")
    if (note := started.overlap_note()) is not None:
        typer.echo(f"note: {note}")


@experiment_app.command("list")
def list_experiments(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The experiments: status, endpoint, variants and split."""
    settings = load_settings()
    exps = _log(settings).experiments()
    if as_json:
        typer.echo(json.dumps([e.model_dump() for e in exps], indent=1))
        return
    if not exps:
        typer.echo("no experiments")
    for e in exps:
        typer.echo(f"{e.name:<24}{e.status:<9}/{e.endpoint:<16}{e.metric:<18}"
                   + ", ".join(f"{v.name}={v.arm} {s:.0%}" for v, s in zip(e.variants, e.shares().values()))
                   + f"  created {e.created_at}" + (f", stopped {e.stopped_at}" if e.stopped_at else ""))


@experiment_app.command("stop")
def stop(name: str = typer.Argument(...), key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP)) -> None:
    """Stop an experiment (admin key): its shoppers go back to the champion; reports keep reading it."""
    from training.experiments.manage import stop as stop_experiment

    settings = load_settings()
    who = _authorize(settings, key, "admin")
    store = _log(settings)
    exp = _find(store, name)
    if not exp.running:
        typer.echo(f"experiment {name} was stopped already ({exp.stopped_at})")
        return
    stop_experiment(store, exp)
    typer.echo(f"stopped experiment {name} (by {who}); its shoppers get the champion again within seconds")


@experiment_app.command("report")
def report(
    name: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    mlflow_run: bool = typer.Option(True, "--mlflow/--no-mlflow", help="log the report as an MLflow run"),
    pre_days: float = typer.Option(30.0, "--pre-days", help="days of spend before the start (CUPED's covariate)"),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Per variant units, exposures, CTR, conversion, revenue per user with intervals; the sample-ratio
    check first; lifts with CUPED; the sequential test (group-sequential over the planned horizon, read
    daily; the confidence sequence when open-ended); guardrails; a decision (marketing key)."""
    from training.experiments.report import build_report, log_to_mlflow, render_text

    settings = load_settings()
    _authorize(settings, key, "marketing")
    store = _log(settings)
    exp = _find(store, name)
    rep = build_report(exp, store, pre_days=pre_days).to_dict()
    if mlflow_run:
        rep["mlflow_run_id"] = log_to_mlflow(rep, Path.cwd())
    typer.echo(json.dumps(rep, indent=1, default=str) if as_json else render_text(rep))
    if mlflow_run and not as_json:
        typer.echo(f"MLflow run {rep['mlflow_run_id']}")


@experiment_app.command("simulate")
def simulate(
    name: Optional[str] = typer.Argument(None, help="an experiment to fill with simulated traffic (omit with --runs)"),
    lift: float = typer.Option(0.05, "--lift", help="the true relative lift in conversion of the treatment"),
    users: int = typer.Option(20_000, "--users", help="shoppers"),
    days: int = typer.Option(14, "--days", help="days of traffic"),
    runs: int = typer.Option(1, "--runs", help="with more than 1: the many-run study (A/A with --lift 0), no store"),
    split: Optional[str] = typer.Option(None, "--true-split", help="study: the real split when it differs from 50/50"),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="study: write the result as JSON here; with --shop: the truth"),
    shop: Optional[Path] = typer.Option(None, "--shop", help="a generated shop's folder (shoprec generate, with its "
                                        "truth/): its shoppers answer the arms' real answers; the lift follows from them"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="with --shop: the champion's bundle folder "
                                          "(default: the one the service serves)"),
    boost_days: float = typer.Option(14.0, "--boost-days", help="with --shop: days of a shopper's own demand for an "
                                     "item that one showing of it brings forward"),
    key: Optional[str] = typer.Option(None, "--key", help=KEY_HELP),
) -> None:
    """Simulated shoppers with a known true effect.

    With NAME (admin key): one run of traffic for that experiment, written to the event store as
    exposures and outcomes (then `shoprec experiment report NAME`). By default the treatment raises the
    chance to buy so that conversion rises by exactly --lift. With --shop, the shoppers of a generated
    shop are shown each arm's real answer (champion, popular, trending or a model version) and buy shown
    items at the rates the shop's truth gives: the arms decide the effect, printed as the true lift.
    With --runs N: N experiments analysed after every day (false-positive rate with daily peeking,
    power, coverage, CUPED, SRM)."""
    from training.experiments.simulate import isolated, study, traffic

    if runs > 1:
        true_split = (0.5, 0.5)
        if split:
            parts = [float(x) for x in split.split("/")]
            true_split = (parts[0] / sum(parts), parts[1] / sum(parts))
        res = study(runs=runs, users=users, days=days, lift=lift, seed=seed, split=true_split,
                    expected_split=(0.5, 0.5)).to_dict()
        text = json.dumps(res, indent=1)
        if out:
            out.write_text(text + "\n")
        typer.echo(text)
        return
    if name is None:
        fail("give an experiment NAME to simulate traffic for, or --runs N for the study")
    settings = load_settings()
    _authorize(settings, key, "admin")
    store = _log(settings)
    exp = _find(store, name)
    if shop is not None:
        _simulate_shown(store, exp, shop, bundle, days, seed, boost_days, out)
        return
    exposures, outcomes = isolated(exp.name, *traffic(exp, users=users, days=days, lift=lift, seed=seed))
    store.add_outcomes(outcomes)
    store.add_exposures(exposures)
    typer.echo(f"simulated {users} shoppers over {days} days for {name} (true lift {lift:+.1%} in conversion of "
               f"{exp.variants[1].name}): {len(exposures)} exposures, {len(outcomes)} outcomes written")


def _simulate_shown(store, exp, shop: Path, bundle: Optional[Path], days: int, seed: int, boost_days: float,
                    out: Optional[Path]) -> None:
    """``simulate NAME --shop DIR``: the shop's shoppers answered by each arm (training/experiments/shown.py)."""
    import pandas as pd

    from features.synthetic.truth import load_truth
    from training.experiments.shown import ShownModel, shown_traffic
    from training.experiments.simulate import isolated, shoppers_from_shop

    missing = [f for f in ("orders.parquet", "events.parquet", "items.parquet", "truth/truth.npz") if not (shop / f).exists()]
    if missing:
        fail(f"--shop {shop}: not a generated shop folder (missing {', '.join(missing)}; make one with shoprec generate)")
    orders, events, items = (pd.read_parquet(shop / f"{t}.parquet") for t in ("orders", "events", "items"))
    arms = _arm_stores(exp, bundle, orders)
    shoppers = shoppers_from_shop(events, orders)
    known = {v: int((store.bundle.users.rows(shoppers.ids) >= 0).sum()) for v, store in arms.items()}
    if not any(known.values()):
        fail(f"--shop {shop}: none of its {len(shoppers.ids):,} recent shoppers is known to the arms' models: "
             "train on this shop (or give its --bundle)")
    exposures, outcomes, truth = shown_traffic(
        exp, load_truth(shop / "truth"), shoppers.ids, arms, dict(zip(items["item_id"], items["price"].astype(float))),
        days=days, seed=seed, model=ShownModel(boost_days=boost_days), pre_purchases=shoppers.pre_purchases)
    exposures, outcomes = isolated(exp.name, exposures, outcomes)  # not the shop's real shoppers in the live store
    store.add_outcomes(outcomes)
    store.add_exposures(exposures)
    if out:
        out.write_text(json.dumps(truth.to_dict(), indent=1) + "\n")
    conversions = ", ".join(f"{v} {c:.2%}" for v, c in truth.conversion.items())
    typer.echo(f"simulated {truth.shoppers:,} shoppers of {shop} over its {days} days from {truth.first_day} (stored as "
               f"the last {days} days, shoppers sim:{exp.name}:<id>) for {exp.name}: {len(exposures):,} exposures, "
               f"{len(outcomes):,} outcomes written")
    typer.echo(f"true conversion (everyone on the arm): {conversions}; true lift of {truth.treatment}: {truth.lift:+.2%}")


def _arm_stores(exp, bundle: Optional[Path], orders) -> dict:
    """A storefront per variant, as the service builds its arms (serving/experiments.py): model arms loaded as the
    service loads them (``load_arm``: in the store, readable, of the champion's shop)."""
    from training.bundle import ModelBundle
    from training.experiments.policies import policy_store, popularity, trending_counts, trending_scores
    from training.experiments.publish import ArmRefused, load_arm
    from training.publish import NotInStore, served_bundle_dir
    from training.storefront import Storefront

    path = bundle or served_bundle_dir()
    if path is None:
        fail(f"no champion to simulate in the model store ({os.environ.get('BENTOML_HOME')}): publish one "
             "(shoprec publish, after shoprec train) or give --bundle FOLDER")
    champion = ModelBundle.load(Path(path))
    shop = str(champion.meta.get("shop", ""))
    stores = {}
    for v in exp.variants:
        if v.kind == "champion":
            stores[v.name] = Storefront(champion, approximate=True)
        elif v.arm == "popular":
            stores[v.name] = policy_store(champion, "popular", popularity(champion))
        elif v.arm == "trending":
            stores[v.name] = policy_store(champion, "trending", trending_scores(champion, trending_counts(orders)))
        else:
            try:
                arm = load_arm(v.arm, shop)[0]
            except (NotInStore, ArmRefused) as e:
                fail(f"variant {v.name}: {e}")
            stores[v.name] = Storefront(arm, approximate=True)
    return stores
