"""Deployable: `bentoml build` from bentofile.yaml into a fresh store, then `bentoml serve <tag>`
runs the bento from that store (its own copy of the code) and answers /readyz and /recommend."""
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.server import REPO, STOREFRONT, bentoml_server
from tests.test_service import publish_test_bundle


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(BENTOML_HOME, bento tag): the test recommender published, then the bento built next to it."""
    home = tmp_path_factory.mktemp("bentoml_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "--output", "tag"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tag = next(line.split("__tag__:", 1)[1].strip() for line in result.stdout.splitlines() if "__tag__:" in line)
    return home, tag


def test_bentofile_settings():
    spec = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert spec["service"] == "serving.service:Shoprec"
    assert spec["python"] == {"requirements_txt": "./requirements.lock", "lock_packages": False}


def test_the_bento_holds_the_packages_and_the_pinned_requirements(built):
    home, tag = built
    name, version = tag.split(":")
    bento = home / "bentos" / name / version
    src = bento / "src"
    for package in ("features", "training", "serving"):
        assert (src / package / "__init__.py").exists(), f"{package}/ missing from the bento"
    assert (src / "serving" / "service.py").exists() and (src / "serving" / "marketing_page.py").exists()
    assert not list(src.rglob("test_*.py")) and not (src / "notebooks").exists() and not list(src.rglob("*.pyc"))
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    pins = {line.strip() for line in (REPO / "requirements.lock").read_text().splitlines() if line.strip()}
    assert pins <= {line.strip() for line in requirements.splitlines()}
    assert "index-url" not in requirements  # not re-locked against an index at build time
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [m["tag"].split(":")[0] for m in info["models"]] == ["shoprec-recommender"]


def test_serve_the_bento_from_the_store(built, tmp_path):
    home, tag = built
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{tmp_path}/events.db"}
    with bentoml_server(home, extra_env=env, target=tag, cwd=tmp_path) as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        r = httpx.post(f"{url}/recommend", json={"user_id": "u1", "k": 3}, headers=STOREFRONT, timeout=10)
        assert r.status_code == 200
        body = r.json()
        assert body["source"] == "model:als" and body["model_version"] == "7" and len(body["items"]) == 3
        # the worker runs the bento's own copy of the code, not the working tree
        port = url.rsplit(":", 1)[1]
        (serve,) = [p for p in psutil.process_iter(["cmdline"])
                    if p.info["cmdline"] and tag in p.info["cmdline"] and port in p.info["cmdline"]]
        name, version = tag.split(":")
        assert Path(home / "bentos" / name / version / "src") in {Path(c.cwd()) for c in serve.children(recursive=True)}
