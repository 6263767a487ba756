"""The ``shoprec`` command line: one command per stage, each safe to rerun.

Heavy libraries are imported inside the commands so that ``--help`` stays fast.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="shoprec: recommendations and propensity scores for online shops.\n\n"
    "Typical flow: generate (or bring your files) -> train -> publish -> serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

PROJECT = Path.cwd()
CONFIG_DEFAULT = Path("configs/train.yaml")


def _say(msg: str) -> None:
    typer.echo(f"[shoprec] {msg}", err=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def generate(
    out: Path = typer.Option(Path("data/shop"), help="folder for events/orders/items Parquet and truth/"),
    preset: str = typer.Option("small", help="tiny | small | medium | large"),
    seed: Optional[int] = typer.Option(None, help="override the preset's seed"),
) -> None:
    """Generate a synthetic shop with known truth.

    Example: shoprec generate --preset tiny --out data/tiny
    """
    from features.synthetic import ShopConfig, generate_shop

    config = ShopConfig.preset(preset)
    if seed is not None:
        config = config.model_copy(update={"seed": seed})
    _say(f"generating the {preset!r} shop into {out}")
    paths = generate_shop(config, out)
    _say(f"done: {paths}")


@app.command()
def ingest(
    orders: Optional[Path] = typer.Option(None, help="orders file (CSV, CSV.gz, Parquet, JSON Lines) or the UCI Online Retail file"),
    events: Optional[Path] = typer.Option(None, help="clickstream events file, or OTTO JSON Lines"),
    items: Optional[Path] = typer.Option(None, help="item catalog file"),
    out: Path = typer.Option(Path("data/canonical"), help="folder for the canonical Parquet tables and rejects.csv"),
) -> None:
    """Validate raw files into canonical tables; every rejected row goes to rejects.csv with its reason.

    Example: shoprec ingest --orders ../shared/data/online-retail/onlineretail.csv.gz --out data/retail
    """
    report = _ingest(orders, events, items, out)
    typer.echo(report.summary())


def _ingest(orders, events, items, out):
    from features.ingest import IngestError, ingest as run_ingest

    if not any((orders, events)):
        _fail("give --orders and/or --events")
    try:
        return run_ingest(orders=orders, events=events, items=items, out_dir=out)
    except IngestError as e:
        _fail(str(e))


@app.command()
def train(
    orders: Optional[Path] = typer.Option(None, help="orders file"),
    events: Optional[Path] = typer.Option(None, help="events file"),
    items: Optional[Path] = typer.Option(None, help="item catalog file"),
    test_days: Optional[float] = typer.Option(None, help="test period in days (default from the config: 30)"),
    config: Optional[Path] = typer.Option(None, help=f"training config YAML (default: {CONFIG_DEFAULT} if present)"),
    truth: Optional[Path] = typer.Option(None, help="synthetic shop truth/ folder: also score the oracle"),
    metrics_out: Optional[Path] = typer.Option(None, help="write the metrics JSON here"),
    work: Path = typer.Option(Path("data/canonical"), help="folder for the canonical tables of this run"),
) -> None:
    """Ingest, evaluate every candidate (chosen on validation, reported on test), fit, log to MLflow, register.

    Example: shoprec train --orders ../shared/data/online-retail/onlineretail.csv.gz --metrics-out runs/retail.json
    """
    from features.ingest import load_canonical
    from training.config import TrainConfig
    from training.train import train as run_train

    cfg_path = config or (CONFIG_DEFAULT if CONFIG_DEFAULT.exists() else None)
    cfg = TrainConfig.load(cfg_path) if cfg_path else TrainConfig()
    if test_days is not None:
        cfg = cfg.model_copy(update={"test_days": test_days})
    report = _ingest(orders, events, items, work)
    _say(report.summary())
    canonical = load_canonical(work)
    if truth is None and orders is not None and (Path(orders).parent / "truth").is_dir():
        truth = Path(orders).parent / "truth"
    with _progress_bar(total=2 * len(cfg.candidates) + 8) as step:
        outcome = run_train(canonical, cfg, PROJECT, truth_dir=truth, metrics_out=metrics_out,
                            ingest_report=json.loads((work / "ingest_report.json").read_text()), progress=step)
    rec = outcome.metrics["recommend"]
    typer.echo(json.dumps({k: rec[k] for k in ("model", "ndcg@10", "recall@10", "baseline_popularity", "model_version")}
                          | ({"oracle": rec["oracle"]} if "oracle" in rec else {}), indent=2))
    typer.echo(f"champion: {'moved to v' + outcome.version if outcome.promoted else 'unchanged'} ({outcome.reason})")


@app.command()
def tune(
    orders: Optional[Path] = typer.Option(None, help="orders file"),
    events: Optional[Path] = typer.Option(None, help="events file"),
    trials: int = typer.Option(12, help="random-search trials per model family"),
    seed: int = typer.Option(42, help="seed of the search"),
    out: Path = typer.Option(CONFIG_DEFAULT, help="where to write the tuned config (read by `shoprec train` by default)"),
    work: Path = typer.Option(Path("data/canonical"), help="folder for the canonical tables of this run"),
) -> None:
    """Search hyper-parameters on the validation split only (never the test period); every trial a nested MLflow run.

    Example: shoprec tune --orders ../shared/data/online-retail/onlineretail.csv.gz --trials 8
    """
    import mlflow

    from features.ingest import load_canonical
    from training import tracking
    from training.config import TrainConfig
    from training.tune import SPACES, tune as run_tune

    report = _ingest(orders, events, None, work)
    _say(report.summary())
    canonical = load_canonical(work)
    base = TrainConfig.load(out) if out.exists() else TrainConfig()
    tracking.setup(PROJECT)
    with mlflow.start_run(run_name="tune") as parent, _progress_bar(total=len(SPACES) * trials + 24) as step:
        def log_trial(family: str, params: dict, score: float) -> None:
            step(f"{family} {score:.4f}")
            with mlflow.start_run(run_name=f"trial-{family}", nested=True, parent_run_id=parent.info.run_id):
                mlflow.log_params({"family": family, **params})
                mlflow.log_metric("val_ndcg_at_10", score)

        tuned, best = run_tune(canonical.events, canonical.orders, base, trials=trials, seed=seed, log_trial=log_trial)
        mlflow.log_dict({f: b for f, b in best.items()}, "best.json")
        for family, b in best.items():
            mlflow.log_metric(f"best.{family}.val_ndcg_at_10", b["score"])
    tuned.dump(out)
    typer.echo(json.dumps(best, indent=2, default=str))
    typer.echo(f"wrote {out}: `shoprec train` uses it by default")


@app.command("export-events")
def export_events(
    url: str = typer.Option("sqlite:///data/events.db", envvar="SHOPREC_EVENTS_URL",
                            help="the service's event store (sqlite:///PATH or redis://HOST:PORT/DB)"),
    out: Path = typer.Option(Path("data/realtime_events.parquet"), help="contract events file for the next training"),
) -> None:
    """Write the real-time events the service received as a contract events file, for the next `shoprec train --events`."""
    from features.event_store import open_event_store

    store = open_event_store(url)
    df = store.export()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    typer.echo(f"wrote {len(df):,} events from {url} to {out}")


@app.command()
def publish() -> None:
    """Copy the registered champion into the BentoML model store for the service."""
    from training.publish import publish_champion

    _bentoml_home()
    try:
        model = publish_champion(PROJECT)
    except RuntimeError as e:
        _fail(str(e))
    typer.echo(f"published {model.tag} (registry version {model.info.labels['registry_version']})")
    from training.propensity.publish import publish_propensity

    try:
        pm = publish_propensity(PROJECT)
        typer.echo(f"published {pm.tag} (registry version {pm.info.labels['registry_version']})")
    except RuntimeError as e:
        _say(f"no propensity bundle published: {e}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(3000, help="port"),
) -> None:
    """Publish the champion and start the BentoML service (prints example curl calls)."""
    publish()
    typer.echo(
        f"\nExample calls:\n"
        f"  curl -s -X POST http://{host}:{port}/recommend -H 'content-type: application/json' -d '{{\"user_id\": \"u000001\", \"k\": 5}}'\n"
        f"  curl -s -X POST http://{host}:{port}/recommend -H 'content-type: application/json' -d '{{\"user_id\": \"someone-new\"}}'\n"
        f"  curl -s -X POST http://{host}:{port}/similar_items -H 'content-type: application/json' -d '{{\"item_id\": \"i00001\", \"k\": 5}}'\n"
        f"  curl -s http://{host}:{port}/readyz ; open http://{host}:{port}/ for the API docs\n"
    )
    env = _bentoml_home()
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Shoprec", "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def champion() -> None:
    """Show the registered versions, their test NDCG@10 and which one is the champion."""
    from mlflow import MlflowClient

    from training import tracking

    tracking.setup(PROJECT)
    champ = tracking.current_champion()
    for mv in sorted(MlflowClient().search_model_versions(f"name='{tracking.MODEL_NAME}'"), key=lambda v: int(v.version)):
        mark = "*" if champ and champ.version == str(mv.version) else " "
        typer.echo(f"{mark} v{mv.version}  ndcg@10={mv.tags.get('test_ndcg', '?')}  "
                   f"{json.loads(mv.tags.get('candidate', '{}')).get('name', '?')}  {mv.tags.get('eval_key', '')}")


@contextlib.contextmanager
def _progress_bar(total: int):
    """A progress bar on stderr; yields a callback that advances it with a message."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("starting", total=total)
        yield lambda msg: bar.update(task, advance=1, description=msg)
        bar.update(task, completed=total, description="done")


def _bentoml_home() -> dict:
    """Use the project's model store unless BENTOML_HOME is set; returns the environment."""
    os.environ.setdefault("BENTOML_HOME", str(PROJECT / "bentoml_home"))
    return dict(os.environ)


from training.cli_propensity import churn_list  # noqa: E402

app.command("churn-list")(churn_list)

from training.doctor import doctor  # noqa: E402

app.command()(doctor)

from training.cli_privacy import forget_user_command  # noqa: E402

app.command("forget-user")(forget_user_command)


if __name__ == "__main__":
    app()
