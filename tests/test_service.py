"""The real BentoML server on 127.0.0.1, real HTTP calls."""
import os
import subprocess
import sys

import httpx
import pytest

from tests.server import REPO, bentoml_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.test_bundle import ORDERS
    from training.config import Candidate, TrainConfig
    from training.pipeline import fit_bundle
    from training.recommenders.als import ALSConfig

    home = tmp_path_factory.mktemp("bentoml_home")
    src = tmp_path_factory.mktemp("bundle")
    fit_bundle(Candidate(name="als", model=ALSConfig(factors=4, iterations=5, weighting="none")),
               TrainConfig().fallback, None, ORDERS, {}).save(src)
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from training.publish import store_bundle; "
                    "store_bundle(Path(sys.argv[1]), {'registry_version': '7'})", str(src)],
                   cwd=REPO, env=dict(os.environ, BENTOML_HOME=str(home)), check=True)
    with bentoml_server(home) as url:
        yield url


def post(url, path, body):
    return httpx.post(f"{url}{path}", json=body, timeout=10)


def test_health_and_openapi(server):
    assert httpx.get(f"{server}/livez").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    spec = httpx.get(f"{server}/docs.json").json()
    assert "/recommend" in spec["paths"] and "/similar_items" in spec["paths"]
    assert "bentoml_service_request" in httpx.get(f"{server}/metrics").text


def test_known_user(server):
    r = post(server, "/recommend", {"user_id": "u1", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "model:als" and body["model_version"] == "7" and len(body["items"]) == 5
    bought = {"i1", "i2", "i3", "i4"}  # u1 bought i(1+j) for j < 4
    assert not bought & {it["item_id"] for it in body["items"]}


def test_extra_exclusions(server):
    first = post(server, "/recommend", {"user_id": "u1", "k": 3}).json()["items"][0]["item_id"]
    again = post(server, "/recommend", {"user_id": "u1", "k": 3, "exclude": [first]}).json()
    assert first not in {it["item_id"] for it in again["items"]}


def test_unknown_user_gets_fallback(server):
    body = post(server, "/recommend", {"user_id": "never-seen", "k": 4}).json()
    assert body["source"].startswith("fallback:") and len(body["items"]) == 4


def test_similar_items(server):
    assert post(server, "/similar_items", {"item_id": "i3", "k": 3}).json()["source"] == "model:als"
    assert post(server, "/similar_items", {"item_id": "zzz", "k": 3}).json()["source"].startswith("fallback:")


@pytest.mark.parametrize("body, field", [
    ({"user_id": "u1", "k": 0}, "k"),
    ({"user_id": "u1", "k": 101}, "k"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "x" * 200}, "user_id"),
    ({"k": 3}, "user_id"),
    ({"user_id": "u1", "exclude": ["a"] * 501}, "exclude"),
    ({"user_id": "u1", "surprise": 1}, "surprise"),
])
def test_bad_input_is_a_4xx_naming_the_field(server, body, field):
    r = post(server, "/recommend", body)
    assert 400 <= r.status_code < 500 and field in r.text


def test_oversized_body_is_refused(server):
    r = httpx.post(f"{server}/recommend", content=b'{"user_id": "' + b"x" * 100_000 + b'"}',
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413
