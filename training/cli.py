"""The ``shoprec`` command line: one command per stage, each safe to rerun.

Heavy libraries are imported inside the commands so that ``--help`` stays fast.
"""
from __future__ import annotations

import os

# implicit and NumPy's OpenBLAS each start their own threads: one BLAS thread, set before NumPy loads
# (PITFALLS.md; implicit warns on every fit otherwise). An explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import typer  # noqa: E402

from features.errors import InputError  # noqa: E402

HEARTBEAT_S = 30.0  # without a terminal, a long step says it still runs at least this often


class ShoprecApp(typer.Typer):
    """The command line's one place where failures end. An ``InputError`` (the data or the settings
    cannot do what was asked) ends in its one or two lines and exit code 2; any other exception is
    a bug: its traceback, a line saying so, exit code 1."""

    def __call__(self, *args, **kwargs):
        if (repeated := repeated_option(typer.main.get_command(self), sys.argv[1:])) is not None:
            _error(repeated)  # click keeps only the last of a repeated option: the first file was dropped silently
            sys.exit(2)
        try:
            return super().__call__(*args, **kwargs)
        except InputError as e:
            _error(str(e))
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - not the input's fault: show where it broke
            traceback.print_exception(e, file=sys.stderr)
            typer.secho("shoprec: this is a bug in shoprec, not a problem with your data or settings; please "
                        "report it with the traceback above", fg="red", err=True)
            sys.exit(1)


def repeated_option(command, argv: list[str]) -> str | None:
    """Why ``argv`` is refused when it gives a one-value option of its subcommand twice (``--orders a.csv --orders
    b.csv``: click would keep b.csv alone), else None."""
    while isinstance(getattr(command, "commands", None), dict):  # a group (typer's own click: duck-typed)
        name = next((a for a in argv if not a.startswith("-")), None)
        if (sub := command.commands.get(name)) is None:
            return None
        argv, command = argv[argv.index(name) + 1:], sub
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or param.multiple or param.is_flag or param.count:
            continue
        given = [a for a in argv if a in param.opts or any(a.startswith(o + "=") for o in param.opts)]
        if len(given) > 1:
            files = " (one file per table: put the rows of several files into one first)" \
                if getattr(getattr(param, "type_descriptor", None), "annotation", None) is Path else ""
            return f"{param.opts[0]} is given {len(given)} times: it takes one value and would keep only the last{files}"
    return None


app = ShoprecApp(
    help="shoprec: recommendations and propensity scores for online shops.\n\n"
    "Typical flow: generate (or bring your files) -> train -> publish -> serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

PROJECT = Path.cwd()
CONFIG_DEFAULT = Path("configs/train.yaml")


def _say(msg: str) -> None:
    typer.echo(f"[shoprec] {msg}", err=True)


def _error(msg: str) -> None:
    """``error: <what is wrong>`` and, on a second line, what to do."""
    problem, _, remedy = msg.partition("\n")
    typer.secho(f"error: {problem}", fg="red", err=True)
    if remedy:
        typer.echo(f"  {remedy}", err=True)


def _fail(msg: str) -> None:
    _error(msg)
    raise typer.Exit(2)


@app.command()
def generate(
    out: Path = typer.Option(Path("data/shop"), help="folder for events/orders/items Parquet and truth/"),
    preset: str = typer.Option("small", help="tiny | small | medium | large (generic shop), or a shop kind: grocery | "
                               "wide | gift (full size) or grocery-test | wide-test | gift-test (test size), or "
                               "drawn-<seed>[-test]: traits drawn at random between the kinds'"),
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
    engine: str = typer.Option("duckdb", help="engine of the feature pipeline: duckdb (embedded) or spark"),
    spark_master: Optional[str] = typer.Option(None, envvar="SHOPREC_SPARK_MASTER",
                                               help="Spark master with --engine spark (default local[2])"),
) -> None:
    """Validate raw files into canonical tables; every rejected row goes to rejects.csv with its reason.

    Example: shoprec ingest --orders ../shared/data/online-retail/onlineretail.csv.gz --out data/retail
    """
    if not any((orders, events)):
        _fail("give --orders and/or --events")
    conn = _engine(engine, spark_master)
    with _progress_bar(total=_ingest_steps(orders, events, items)) as step:
        report = _ingest(orders, events, items, out, step, conn)
    typer.echo(report.summary())
    _refuse_all_rejected(report)


def _ingest(orders, events, items, out, progress=lambda msg: None, engine="duckdb"):
    from features.ingest import ingest as run_ingest

    return run_ingest(orders=orders, events=events, items=items, out_dir=out, progress=progress, engine=engine)


def _engine(name: str, master: str | None):
    """The feature pipeline's engine (features/relational/engine.py), connected once here."""
    from features.relational.engine import ENGINES, connect

    if name not in ENGINES:
        _fail(f"--engine {name}: choose one of {', '.join(ENGINES)}")
    return connect(name, master)


def _ingest_steps(*paths) -> int:
    return sum(p is not None for p in paths) + 1  # one per file, then the writing


def _refuse_all_rejected(report) -> None:
    """Stop (exit 2) when every row of a file was rejected: nothing of it can be used."""
    from features.ingest import REJECTS_FILE

    for f in report.files:
        if f.read and not f.accepted:
            reasons = "; ".join(f"{reason}: {n:,}" for reason, n in f.by_reason.items())
            _fail(f"{f.table} {Path(f.path).name}: all {f.read:,} rows rejected ({reasons})\n"
                  f"each row and its reason is in {report.out_dir / REJECTS_FILE}: fix the file or its columns "
                  "(the data contract: README, PRODUCT.md) and rerun")


@app.command()
def train(
    orders: Optional[Path] = typer.Option(None, help="orders file"),
    events: Optional[Path] = typer.Option(None, help="events file"),
    items: Optional[Path] = typer.Option(None, help="item catalog file"),
    test_days: Optional[float] = typer.Option(None, help="test period in days (default from the config: 30)"),
    config: Optional[Path] = typer.Option(None, help=f"training config YAML: the search space (default: {CONFIG_DEFAULT})"),
    truth: Optional[Path] = typer.Option(None, help="synthetic shop truth/ folder: also score the oracle"),
    metrics_out: Optional[Path] = typer.Option(None, help="write the metrics JSON here"),
    work: Path = typer.Option(Path("data/canonical"), help="folder for the canonical tables of this run"),
    shop: Optional[str] = typer.Option(None, help="the shop (lineage) this data comes from; its champion is the only one "
                                       "compared and replaced (default: the input file's folder name)"),
    budget_minutes: Optional[float] = typer.Option(None, help="time for the recipe search on validation "
                                                   "(default from the config: 10)"),
    engine: str = typer.Option("duckdb", help="engine of the feature pipeline (validation, user features and "
                               "labels): duckdb (embedded) or spark"),
    spark_master: Optional[str] = typer.Option(None, envvar="SHOPREC_SPARK_MASTER",
                                               help="Spark master with --engine spark (default local[2])"),
) -> None:
    """Ingest, search recipes on the shop's validation period (peers included), report on test, fit,
    log to MLflow, register in the shop's lineage and move its champion on validation evidence.

    Example: shoprec train --orders ../shared/data/online-retail/onlineretail.csv.gz --metrics-out runs/retail.json
    """
    from features.ingest import load_canonical
    from features.interactions import purchases
    from training.history import require_trainable
    from training.tracking import check_shop, shop_name
    from training.train import train as run_train

    if not any((orders, events)):
        _fail("give --orders and/or --events")
    for name, value in (("--test-days", test_days), ("--budget-minutes", budget_minutes)):
        if value is not None and value <= 0:
            _fail(f"{name} {value:g}: must be more than 0")
    cfg = _train_config(config, test_days, budget_minutes)
    shop = shop or shop_name(Path(orders or events).resolve().parent.name)
    try:
        check_shop(shop)
    except ValueError as e:
        _fail(str(e))
    if truth is None and orders is not None and (Path(orders).parent / "truth").is_dir():
        truth = Path(orders).parent / "truth"
    conn = _engine(engine, spark_master)
    with _progress_bar(total=_train_steps(cfg, orders, events, items, truth)) as step:
        report = _ingest(orders, events, items, work, step, conn)
        _say(report.summary())
        _refuse_all_rejected(report)
        canonical = load_canonical(work)
        canonical.engine = conn
        require_trainable(purchases(canonical.events, canonical.orders), canonical.events, canonical.orders)
        outcome = run_train(canonical, cfg, PROJECT, shop, truth_dir=truth, metrics_out=metrics_out,
                            ingest_report=json.loads((work / "ingest_report.json").read_text()), progress=step)
    rec = outcome.metrics["recommend"]
    if "small_shop" in rec:  # too little history for the protocol: a fallback, with no test figure
        _say(f"{rec['small_shop']['reason']}\n  trained the fallback {rec['model']} (popularity) on all data instead, "
             f"with no test figure; for the full protocol: {rec['small_shop']['remedy']}")
    keys = ("shop", "model", "validation_ndcg@10", "ndcg@10", "recall@10", "served_ndcg@10", "session_ndcg@10",
            "best_peer", "baseline_popularity", "model_version")
    typer.echo(json.dumps({k: rec.get(k) for k in keys} | ({"oracle": rec["oracle"]} if "oracle" in rec else {}), indent=2))
    moved = f"champion-{shop} moved to v{outcome.version}" if outcome.promoted else f"champion-{shop} unchanged"
    typer.echo(f"{moved} ({outcome.reason})")
    bundle = outcome.metrics.get("propensity") or {}
    if "champion" in bundle:  # the churn and conversion bundle's own gate (training/propensity/gate.py)
        decided = bundle["champion"]
        moved = (f"moved to v{bundle['model_version']}" if decided["promoted"] else
                 f"unchanged (v{bundle['model_version']} registered)")
        typer.echo(f"churn and conversion: champion-{shop} of {bundle['registered_model']} {moved} ({decided['reason']})")


def _train_config(path: Path | None, test_days: float | None, budget_minutes: float | None):
    """The training config (``--config`` or the default file) with the command line's overrides,
    validated; a file that is missing or does not fit ``TrainConfig`` stops with what is wrong."""
    import yaml
    from pydantic import ValidationError

    from training.config import TrainConfig, strictly

    path = path or _default_config()
    try:
        raw = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        if not isinstance(raw, dict):
            raise InputError(f"--config {path}: a YAML mapping of TrainConfig's fields expected, got {type(raw).__name__}")
        if test_days is not None:
            raw["test_days"] = test_days
        if budget_minutes is not None and raw.get("search", {}) is not None:
            raw["search"] = (raw.get("search") or {}) | {"budget_minutes": budget_minutes}
        return strictly(TrainConfig, raw)
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror or e})", "give an existing YAML file") from e
    except yaml.YAMLError as e:
        raise InputError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from e
    except ValidationError as e:
        wrong = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise InputError(f"--config {path}: {wrong}", "see configs/train.yaml and training/config.py for the fields") from e
    except ValueError as e:  # a key no setting has
        raise InputError(f"--config {path}: {e}", "see configs/train.yaml and training/config.py for the fields") from e


def _train_steps(cfg, orders, events, items, truth) -> int:
    """About how many progress steps ``shoprec train`` makes (the search may skip trials for its budget)."""
    space = cfg.search
    steps = _ingest_steps(orders, events, items) + (6 if cfg.peers else 0) + len(cfg.candidates) + 1 + 1  # + popular, champion
    if space is not None:
        steps += (len(space.trending_half_life_days) + len(space.trending_window_days) + len(space.als) + len(space.ease_l2) + len(space.itemknn_neighbours)
                  + 2 * len(space.blend_weights) + 1 + int(space.ranker.enabled) + (2 if events is not None else 0))
    steps += 10 + 1 + (1 if truth is not None else 0) + 1  # testing (peers, chosen, baseline, runners-up), replay, oracle, fit
    from training.propensity.train import PROGRESS_STEPS

    return steps + (PROGRESS_STEPS if orders is not None else 0)  # propensity


@app.command("export-events")
def export_events(
    url: str = typer.Option("sqlite:///data/events.db", envvar="SHOPREC_EVENTS_URL",
                            help="the service's event store (sqlite:///PATH or redis://HOST:PORT/DB)"),
    out: Path = typer.Option(Path("data/realtime_events.parquet"), help="contract events file for the next training: "
                             ".csv, .csv.gz, .parquet or .jsonl, as its name says"),
) -> None:
    """Write the real-time events the service received as a contract events file, for the next `shoprec train --events`,
    in the format its name says (.csv, .csv.gz, .parquet, .jsonl)."""
    from features.event_store import open_event_store
    from features.writers import check_table_path, write_table

    check_table_path(out)  # a name it cannot honour is refused before any work
    store = open_event_store(url)
    df = store.export()
    write_table(df, out)
    typer.echo(f"wrote {len(df):,} events from {url} to {out}")


@app.command()
def publish(shop: Optional[str] = typer.Option(None, help="the lineage to publish (default: that of the latest training)")) -> str:
    """Copy a shop's champion into the BentoML model store for the service."""
    from training.publish import publish_champion

    _bentoml_home()
    try:
        model = publish_champion(PROJECT, shop=shop)
    except (RuntimeError, ValueError) as e:
        _fail(str(e))
    shop = model.info.labels.get("shop", "")
    typer.echo(f"published {model.tag} (shop {shop}, registry version {model.info.labels['registry_version']})")
    from training.propensity.publish import publish_propensity

    try:
        pm = publish_propensity(PROJECT, shop=shop)
        typer.echo(f"published {pm.tag} (registry version {pm.info.labels['registry_version']})")
    except RuntimeError as e:
        _say(f"no propensity bundle published: {e}")
    return shop


@app.command()
def build(
    shop: Optional[str] = typer.Option(None, help="the shop whose published models the bento carries "
                                       "(default: that of the last `shoprec publish`)"),
    bentofile: Path = typer.Option(Path("bentofile.yaml"), help="code, requirements and settings of the bento"),
) -> None:
    """Build the deployable bento of a shop into the BentoML store: the code and settings of bentofile.yaml,
    and the models `shoprec publish` put in the store (the recommender and, if published, the propensity bundle).

    Example: shoprec publish && shoprec build && bentoml serve shoprec:latest
    """
    from training.bento_build import PROPENSITY, build_bento

    _bentoml_home()
    try:
        bento, models = build_bento(PROJECT, shop=shop, bentofile=bentofile)
    except RuntimeError as e:
        _fail(str(e))
    carried = ", ".join(f"{m.tag} (registry version {m.info.labels.get('registry_version', '?')})" for m in models)
    shop = bento.info.labels["shop"]
    if not any(m.tag.name == PROPENSITY for m in models):
        _say(f"no propensity bundle of shop {shop} in the store: this bento's /propensity, /churn_risk and "
             "marketers' page answer 503 (`shoprec train` with orders, then `shoprec publish`)")
    typer.echo(f"built {bento.tag} (shop {shop}) with {carried}")
    typer.echo(f"run it: bentoml serve {bento.tag} --host 127.0.0.1 --port 3000")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(3000, help="port"),
    shop: Optional[str] = typer.Option(None, help="the lineage to serve (default: that of the latest training)"),
) -> None:
    """Publish a shop's champion and start the BentoML service for that shop (prints example curl calls
    once it answers)."""
    shop = publish(shop)
    os.environ["SHOPREC_SHOP"] = shop  # the service refuses a model of another lineage
    from training.cli_keys import example_calls, example_ids
    from training.publish import served_bundle_dir

    served = served_bundle_dir()
    ids = example_ids(served) if served is not None else ()  # a buyer and an item of the served shop
    calls = example_calls(host, port, *ids)  # first run: a storefront and a marketing key, valid before the server starts
    env = _bentoml_home()
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Shoprec", "--host", host, "--port", str(port)]
    server = subprocess.Popen(cmd, env=env)
    try:
        if _wait_until_live(server, host, port):
            typer.echo(calls)  # last, after the server's start-up lines
        raise typer.Exit(server.wait())
    except KeyboardInterrupt:  # Ctrl-C reached the server too (same process group): let it finish
        raise typer.Exit(server.wait())


def _wait_until_live(server: subprocess.Popen, host: str, port: int, timeout_s: float = 120.0) -> bool:
    """True once the server answers /livez; False if it exited or did not answer in time."""
    import time
    import urllib.error
    import urllib.request

    here = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = f"http://{'[' + here + ']' if ':' in here else here}:{port}/livez"
    deadline = time.monotonic() + timeout_s
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


@app.command()
def champion() -> None:
    """Registered versions grouped by shop (lineage), champion marked (*): the recommenders (validation and test
    NDCG@10, recipe), then the churn and conversion bundles (mean validation and test ROC AUC)."""
    from training import tracking
    from training.propensity.train import MODEL_NAME as PROPENSITY

    tracking.setup(PROJECT)
    for shop, found in tracking.lineages().items():
        champ = tracking.current_champion(shop=shop) if shop != "?" else None
        typer.echo(f"{shop}: champion {'v' + champ.version if champ else 'none'}")
        for mv in found:
            mark = "*" if champ and champ.version == str(mv.version) else " "
            scores = ("fallback, too little history: no validation or test figure" if "small_shop" in mv.tags else
                      f"val ndcg@10={mv.tags.get('validation_ndcg', '?')}  test ndcg@10={mv.tags.get('test_ndcg', '?')}")
            typer.echo(f"  {mark} v{mv.version}  {scores}  {json.loads(mv.tags.get('candidate', '{}')).get('name', '?')}")
    for shop, found in tracking.lineages(PROPENSITY).items():
        champ = tracking.current_champion(PROPENSITY, shop=shop) if shop != "?" else None
        typer.echo(f"{shop} (churn and conversion, {PROPENSITY}): champion {'v' + champ.version if champ else 'none'}")
        for mv in found:
            mark = "*" if champ and champ.version == str(mv.version) else " "
            typer.echo(f"  {mark} v{mv.version}  val roc_auc={mv.tags.get('validation_score', '-')}  "
                       f"test roc_auc={mv.tags.get('test_score', '?')}")


def _default_config() -> Path | None:
    """configs/train.yaml of the working directory, else the one shipped with the code."""
    for path in (CONFIG_DEFAULT, Path(__file__).resolve().parents[1] / CONFIG_DEFAULT):
        if path.exists():
            return path
    return None


@contextlib.contextmanager
def _progress_bar(total: int, heartbeat_s: float = HEARTBEAT_S):
    """A progress bar on stderr when it is a terminal; otherwise (logs, CI, cron) one line per step,
    ``[shoprec   12.3 s] 5/~60 validating als-...`` (elapsed, steps done / about how many), and,
    within a long step, a line that it still runs at least every ``heartbeat_s`` seconds.
    Yields a callback that advances it with a message."""
    if not sys.stderr.isatty():
        lines = _StepLines(total, heartbeat_s)
        try:
            yield lines.step
        finally:
            lines.close()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("starting", total=total)

        def step(msg: str) -> None:
            done = bar.tasks[0].completed + 1
            bar.update(task, advance=1, description=msg, total=max(total, done))

        yield step
        bar.update(task, completed=bar.tasks[0].total, description="done")


class _StepLines:
    """Progress as log lines: one per step, and a heartbeat (``still <step>``) from a daemon thread
    whenever ``heartbeat_s`` pass without a line."""

    def __init__(self, total: int, heartbeat_s: float):
        self.total, self.done, self.heartbeat_s = total, 0, heartbeat_s
        self.started = self.last = time.perf_counter()
        self.message = "starting"
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._beat, name="shoprec-progress", daemon=True)
        self.thread.start()

    def step(self, msg: str) -> None:
        with self.lock:
            self.done += 1
            self.message = msg
            self._line(msg)

    def _line(self, msg: str) -> None:
        self.last = time.perf_counter()
        typer.echo(f"[shoprec {self.last - self.started:7.1f} s] {self.done}/~{max(self.total, self.done)} {msg}",
                   err=True)

    def _beat(self) -> None:
        while not self.stopped.wait(max(0.01, self.last + self.heartbeat_s - time.perf_counter())):
            with self.lock:
                if time.perf_counter() - self.last >= self.heartbeat_s:
                    self._line(f"still {self.message}")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


def _bentoml_home() -> dict:
    """Use the project's model store unless BENTOML_HOME is set; returns the environment."""
    os.environ.setdefault("BENTOML_HOME", str(PROJECT / "bentoml_home"))
    return dict(os.environ)


from training.cli_propensity import churn_list  # noqa: E402

app.command("churn-list")(churn_list)

from training.cli_batch import score_all_command  # noqa: E402

app.command("score-all")(score_all_command)

from training.cli_value import segments  # noqa: E402

app.command("segments")(segments)

from training.doctor import doctor  # noqa: E402

app.command()(doctor)

from training.cli_privacy import forget_user_command  # noqa: E402

app.command("forget-user")(forget_user_command)

from training.monitor import monitor_command  # noqa: E402

app.command("monitor")(monitor_command)

from training.cli_keys import keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")

from training.experiments.cli import experiment_app  # noqa: E402

app.add_typer(experiment_app, name="experiment")


if __name__ == "__main__":
    app()
