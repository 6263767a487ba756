"""``shoprec doctor``: is this machine ready to train, serve and test shoprec?

One line per check, ``OK``, ``WARN`` (works, but something is missing or stale) or ``FAIL``,
each WARN/FAIL with what to do. Exit code 1 when anything FAILs. Checks, in the order of the
flow: Python and the packages shoprec declares, the MLflow store, the champion aliases, the
BentoML store and that the published bundles load and answer, then the tools the tests
start (redis-server, Debian's chromium, Playwright, the notebook runner).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

PYTHON = (3, 11)
TEST_PACKAGES = ("pytest", "playwright", "jupytext", "nbclient", "ipykernel")
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Check:
    name: str
    status: str  # OK | WARN | FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        out = f"{self.status:<4}  {self.name}: {self.detail}"
        return out + (f"\n      -> {self.fix}" if self.fix and self.status != "OK" else "")


def ok(name, detail) -> Check:
    return Check(name, "OK", detail)


def check_python() -> Check:
    v = sys.version_info
    if (v.major, v.minor) != PYTHON:
        return Check("python", "FAIL", f"{v.major}.{v.minor}.{v.micro}, shoprec needs {PYTHON[0]}.{PYTHON[1]}",
                     "make a venv with python3.11: `make venv` (PYTHON=python3.11)")
    return ok("python", f"{v.major}.{v.minor}.{v.micro} ({sys.executable})")


def check_packages() -> list[Check]:
    """Every dependency shoprec declares is installed at a version its specifier allows."""
    from packaging.requirements import Requirement

    try:
        declared = [Requirement(r) for r in md.requires("shoprec") or []]
    except md.PackageNotFoundError:
        return [Check("packages", "FAIL", "shoprec itself is not installed in this environment",
                      "`make venv` (pip install -r requirements.lock && pip install --no-deps -e .)")]
    out, bad = [], []
    for req in declared:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # optional extras (test)
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            bad.append(f"{req.name} missing")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req.name} {version} (wants {req.specifier})")
    if bad:
        out.append(Check("packages", "FAIL", "; ".join(bad), "`make venv` installs the tested pins of requirements.lock"))
    else:
        key = ", ".join(f"{n} {md.version(n)}" for n in ("numpy", "pandas", "implicit", "lightgbm", "mlflow", "bentoml"))
        out.append(ok("packages", f"{len(declared)} declared dependencies satisfied ({key})"))
    return out


def check_mlflow(project: Path) -> tuple[list[Check], dict[str, str]]:
    """The tracking store answers, and each registered model has its champion alias; also
    returns the champions' versions by kind ("recommender", "propensity")."""
    from training import tracking

    uri = os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        db = Path(project).resolve() / "mlruns" / "mlflow.db"
        if not db.exists():
            return [Check("mlflow store", "FAIL", f"no store at {db}",
                          "train once: `shoprec train --orders FILE` (or set MLFLOW_TRACKING_URI to your tracking server)")], {}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a dead server fails fast, not after minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        uri = tracking.setup(project)
        from mlflow import MlflowClient

        runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
                                          max_results=1)
    except Exception as e:  # any store error: report, do not crash the doctor
        return [Check("mlflow store", "FAIL", f"{_redact(uri)}: {type(e).__name__}: {str(e)[:200]}",
                      "check MLFLOW_TRACKING_URI and that the tracking server (and its database) is up")], {}
    out, champions = [ok("mlflow store", f"{_redact(uri)} ({'has runs' if runs else 'no runs yet'})")], {}
    from training.propensity.train import MODEL_NAME as PROPENSITY

    for kind, name, required in (("recommender", tracking.MODEL_NAME, True), ("propensity", PROPENSITY, False)):
        champ = tracking.current_champion(name)
        if champ is None:
            out.append(Check(f"champion {name}", "FAIL" if required else "WARN",
                             f"no '{tracking.ALIAS}-<shop>' alias for the shop of the latest training",
                             "`shoprec train --orders FILE` registers and promotes one" +
                             ("" if required else " (needs orders with two horizons of history)")))
        else:
            champions[kind] = champ.version
            scores = [f"{what} score {x:.4f}" for what, x in (("validation", champ.validation), ("test", champ.score))
                      if x == x]  # NaN: no such tag
            score = f" ({', '.join(scores)})" if scores else ""
            out.append(ok(f"champion {name}", f"version {champ.version}{score}, shop {champ.shop}"))
    return out, champions


def check_bentoml_store(project: Path, champions: dict[str, str]) -> list[Check]:
    """The published bundles the service loads are there, load, answer, and match the champions."""
    os.environ.setdefault("BENTOML_HOME", str(Path(project).resolve() / "bentoml_home"))
    import bentoml
    import numpy as np

    from training.bundle import ModelBundle
    from training.propensity.bundle import PropensityBundle

    home = os.environ["BENTOML_HOME"]
    out = [ok("bentoml store", home) if Path(home).is_dir() else
           Check("bentoml store", "FAIL", f"{home} does not exist", "`shoprec publish` creates it (BENTOML_HOME picks another)")]
    targets = (("recommender", os.environ.get("SHOPREC_MODEL") or "shoprec-recommender:latest", True),
               ("propensity", os.environ.get("SHOPREC_PROPENSITY_MODEL") or "shoprec-propensity:latest", False))
    shops: dict[str, str] = {}
    for kind, tag, required in targets:
        name = f"published {kind}"
        try:
            ref = bentoml.models.get(tag)
        except Exception as e:
            out.append(Check(name, "FAIL" if required else "WARN", f"{tag}: {type(e).__name__}",
                             "`shoprec publish` copies the champion into the BentoML store"))
            continue
        try:
            if kind == "recommender":
                bundle = ModelBundle.load(ref.path)
                rows, _ = bundle.model.recommend(np.array([0]), k=min(5, len(bundle.items)))
                what = f"{len(bundle.users):,} users, {len(bundle.items):,} items, recommends {int((rows >= 0).sum())} items"
            else:
                scores = PropensityBundle.load(ref.path).scores
                what = f"{len(scores):,} customers scored"
        except Exception as e:
            out.append(Check(name, "FAIL", f"{ref.tag} does not load: {type(e).__name__}: {str(e)[:200]}",
                             "publish again: `shoprec publish` (or delete the broken store entry with `bentoml models delete`)"))
            continue
        version = ref.info.labels.get("registry_version", "?")
        champion, whose = _champion_of(kind, ref.info.labels.get("shop"), champions.get(kind))
        if champion and champion != version:
            out.append(Check(name, "WARN", f"{ref.tag} loads ({what}) but is registry version {version}, "
                             f"the champion{whose} is {champion}",
                             "`shoprec publish`, then POST /admin/reload (or restart the service)"))
        else:
            of = f", shop {ref.info.labels['shop']}" if ref.info.labels.get("shop") else ""
            out.append(ok(name, f"{ref.tag} (registry version {version}{of}): {what}"))
        shops[kind] = ref.info.labels.get("shop") or ""
    if len(shops) == 2 and all(shops.values()) and shops["recommender"] != shops["propensity"]:
        out.append(Check("published shops", "WARN", f"the latest recommender is shop {shops['recommender']}'s, the latest "
                         f"churn bundle shop {shops['propensity']}'s: a service answers churn only from its own shop's",
                         f"`shoprec publish --shop {shops['recommender']}` publishes both of one shop"))
    return out


def _champion_of(kind: str, shop: str | None, latest: str | None) -> tuple[str | None, str]:
    """The champion version of the published bundle's own shop (another shop trained since has its own lineage),
    and " of shop S" to say whose; the latest training's champion where the bundle names no shop."""
    if not shop:
        return latest, ""
    from training import tracking
    from training.propensity.train import MODEL_NAME as PROPENSITY

    try:
        champ = tracking.current_champion(tracking.MODEL_NAME if kind == "recommender" else PROPENSITY, shop=shop)
    except Exception:  # the store is checked (and reported) by check_mlflow
        return latest, ""
    return (champ.version if champ else None), f" of shop {shop}"


def check_test_tools() -> list[Check]:
    """What `make test` starts for real: redis-server and Debian's chromium, driven by Playwright."""
    out = []
    redis = shutil.which("redis-server")
    out.append(ok("redis-server", redis) if redis else
               Check("redis-server", "FAIL", "not found (the Redis event store tests start one)",
                     "`apt-get install -y redis-server` as root (or `make system-deps`)"))
    if not Path(CHROMIUM).exists():
        out.append(Check("chromium", "FAIL", f"{CHROMIUM} not found (the marketers' page is tested in it)",
                         "`apt-get install -y chromium` as root (or `make system-deps`); never `playwright install`"))
    else:
        try:
            version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            version = f"present, but --version failed ({type(e).__name__})"
        out.append(ok("chromium", version or CHROMIUM))
    missing = []
    for name in TEST_PACKAGES:
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    out.append(Check("test packages", "FAIL", f"missing: {', '.join(missing)}", "`make venv` (requirements.lock)")
               if missing else ok("test packages", ", ".join(f"{n} {md.version(n)}" for n in TEST_PACKAGES)))
    return out


def _redact(uri: str) -> str:
    """A store URI without its password (postgresql://user:secret@host -> postgresql://user:***@host)."""
    return re.sub(r"(//[^:/@]+:)[^@]+@", r"\1***@", uri)


def run_checks(project: Path, test_tools: bool = True) -> list[Check]:
    mlflow_checks, champions = check_mlflow(project)
    checks = [check_python(), *check_packages(), *mlflow_checks, *check_bentoml_store(project, champions)]
    if test_tools:
        checks += check_test_tools()
    return checks


def doctor(
    test_tools: bool = typer.Option(True, "--test-tools/--no-test-tools",
                                    help="also check what the tests need (redis-server, chromium, Playwright)"),
) -> None:
    """Check the environment, the MLflow store and champions, the BentoML store and the test tools.

    Prints one OK / WARN / FAIL line per check, with what to do; exits 1 if anything FAILs.

    Example: shoprec doctor --no-test-tools   (on a serving machine)
    """
    checks = run_checks(Path.cwd(), test_tools)
    for c in checks:
        typer.echo(c.line())
    failed = [c for c in checks if c.status == "FAIL"]
    typer.echo(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed" + (f", {len(failed)} failed" if failed else ""))
    raise typer.Exit(1 if failed else 0)
