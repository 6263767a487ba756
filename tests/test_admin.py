"""Model swaps and the admin key, on the real server: not ready until a model loads; a reload
swaps without dropping a request; missing, corrupt, pickled or failing models are refused
while the old one keeps serving; rollback is moving the registry alias back and publishing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.admin import redact
from serving.reload import ModelSlot, Refused
from tests.server import ADMIN, ADMIN_KEY, MARKETING_KEY, REPO, STOREFRONT, STOREFRONT_KEY, bentoml_server

H = ADMIN


def store(home: Path, *bundles: tuple[Path, str]) -> list[str]:
    """Copy (bundle folder, registry version) pairs into the BentoML store at ``home``, in order (the
    last is the latest); their tags. A subprocess: BENTOML_HOME is read when BentoML is imported."""
    code = ("import sys; from pathlib import Path; from training.publish import store_bundle\n"
            "for folder, version in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    print(store_bundle(Path(folder), {'registry_version': version}).tag)")
    args = [str(x) for pair in bundles for x in pair]
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, check=True,
                         env=dict(os.environ, BENTOML_HOME=str(home)), capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-len(bundles):]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A good bundle folder and broken variants of it: missing file, torn array, pickled array,
    scores that are not finite, an unknown model kind."""
    from tests.test_storefront import make_bundle

    root = tmp_path_factory.mktemp("bundles")
    good = root / "good"
    bundle = make_bundle({"trained_at": "2024-01-01T00:00:00Z"})
    bundle.save(good)
    variants = {}

    def variant(name, damage):
        path = root / name
        shutil.copytree(good, path)
        damage(path)
        variants[name] = path

    variant("missing-file", lambda p: (p / "users.npz").unlink())
    variant("torn-array", lambda p: (p / "interactions.npz").write_bytes((p / "interactions.npz").read_bytes()[:100]))
    variant("pickled-array", lambda p: np.savez(p / "users.npz", ids=np.array([object(), "u1"], dtype=object)))

    def nan_factors(p):
        for f in sorted((p / "model" / "arrays").glob("*.npy")):
            v = np.load(f)
            if v.dtype.kind == "f":
                np.save(f, np.full_like(v, np.nan))

    variant("nan-scores", nan_factors)
    variant("unknown-kind", lambda p: (p / "model" / "model.json").write_text('{"kind": "pickle-me"}'))
    return good, variants


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("admin_home")
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_CANONICAL_DIR": str(home / "canonical")}
    with bentoml_server(home, timeout=90, extra_env=env, ready="/livez") as url:  # up, maybe without a model
        yield url, home
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    assert ADMIN_KEY not in logs, "the admin key must never be logged"


def reload(url, body=None, headers=H):
    return httpx.post(f"{url}/admin/reload", json=body or {}, headers=headers, timeout=30)


def recommend(url, user="u1"):
    return httpx.post(f"{url}/recommend", json={"user_id": user, "k": 3}, headers=STOREFRONT, timeout=10)


def test_not_ready_until_a_model_loads(server, bundles):
    url, home = server
    assert httpx.get(f"{url}/livez").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 503
    r = recommend(url)
    assert r.status_code == 503 and "no model loaded" in r.json()["error"]
    r = reload(url)
    assert r.status_code == 409 and r.json()["status"] == "refused" and r.json()["serving"] is None

    store(home, (bundles[0], "1"))
    r = reload(url)
    assert r.status_code == 200 and r.json()["status"] == "loaded" and r.json()["model_version"] == "1"
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert recommend(url).json()["model_version"] == "1"
    assert reload(url).json()["status"] == "unchanged"


@pytest.mark.parametrize("headers, status", [
    ({}, 401), ({"X-Admin-Key": ""}, 401), ({"X-Admin-Key": "wrong"}, 401), ({"X-Admin-Key": ADMIN_KEY[:-1]}, 401),
    ({"Authorization": ADMIN_KEY}, 401), ({"Authorization": f"Basic {ADMIN_KEY}"}, 401),
    ({"Authorization": f"Bearer {STOREFRONT_KEY}"}, 403), ({"X-API-Key": MARKETING_KEY}, 403),
    ({"X-Admin-Key": ADMIN_KEY}, 200), ({"X-API-Key": ADMIN_KEY}, 200), ({"Authorization": f"bearer {ADMIN_KEY}"}, 200),
])
@pytest.mark.parametrize("path, body", [("/admin/reload", {"model": "not a tag!"}), ("/admin/forget", {"user_id": ""})])
def test_admin_endpoints_need_an_admin_key(server, headers, status, path, body):
    """The old X-Admin-Key header still works; any header carries any key; checked before the (invalid) body."""
    url, _ = server
    r = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10)
    expected = 400 if status == 200 else status  # a valid admin key reaches validation, which refuses the body
    assert r.status_code == expected, r.text
    if status in (401, 403):
        assert list(r.json()) == ["error"] and ("key" in r.json()["error"])


BROKEN = ["missing-file", "torn-array", "pickled-array", "nan-scores", "unknown-kind"]


@pytest.fixture(scope="module")
def broken_tags(server, bundles):
    """Every broken variant in the store; the last one stored (missing-file) is the store's latest."""
    _, home = server
    names = BROKEN[1:] + BROKEN[:1]
    return dict(zip(names, store(home, *((bundles[1][n], f"bad-{n}") for n in names))))


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_model_is_refused_and_the_old_one_keeps_serving(server, broken_tags, name):
    url, home = server
    before = recommend(url).json()
    tag = broken_tags[name]
    r = reload(url) if name == "missing-file" else reload(url, {"model": tag})  # the latest, or named
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["status"] == "refused" and (tag in body["detail"] or "smoke test" in body["detail"])
    assert body["model_version"] == before["model_version"]
    after = recommend(url)
    assert after.status_code == 200 and after.json()["model_version"] == before["model_version"]
    assert httpx.get(f"{url}/readyz").status_code == 200


@pytest.mark.parametrize("model, status", [("../../etc/passwd", 400), ("/tmp/bundle", 400),
                                           ("shoprec-recommender:doesnotexist", 409), ("other-model:latest", 409)])
def test_only_models_of_our_own_store_load(server, model, status):
    url, _ = server
    assert reload(url, {"model": model}).status_code == status


def test_swap_and_rollback_under_load_drop_no_request(server, bundles):
    """Shoppers keep calling while v2 is swapped in and then rolled back to v1 by tag."""
    url, home = server
    v1_tag = reload(url, {"model": _tag_of(home, "1")}).json()["serving"]
    store(home, (bundles[0], "2"))
    seen, failures, stop = [], [], threading.Event()

    def shopper(i):
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{url}/recommend", json={"user_id": f"u{i}", "k": 3}, headers=STOREFRONT)
                    (seen if r.status_code == 200 else failures).append(r.json().get("model_version", r.status_code))
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    swapped = reload(url).json()
    time.sleep(0.5)
    rolled_back = reload(url, {"model": v1_tag}).json()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert swapped["status"] == "loaded" and swapped["model_version"] == "2"
    assert rolled_back["status"] == "loaded" and rolled_back["serving"] == v1_tag
    assert failures == [] and len(seen) > 30
    assert set(seen) == {"1", "2"} and seen[-1] == "1"


def _tag_of(home: Path, version: str) -> str:
    import yaml

    for model_yaml in (home / "models" / "shoprec-recommender").glob("*/model.yaml"):
        info = yaml.safe_load(model_yaml.read_text())
        if info.get("labels", {}).get("registry_version") == version:
            return f"{info['name']}:{info['version']}"
    raise AssertionError(f"no stored model with registry version {version}")


ROLLBACK = """
import json, tempfile
from pathlib import Path
import mlflow
from training import tracking
from training.bundle import ModelBundle
from training.publish import publish_champion

project, bundle = Path.cwd(), Path(__import__("sys").argv[1])
tracking.setup(project)
versions = []
for i in range(2):
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(bundle), artifact_path="bundle")
        versions.append(tracking.register(run.info.run_id, "bundle", {"eval_key": "k", "test_ndcg": "0.1", "shop": "north"}))
out = {}
tracking.move_alias(versions[0], "first", None, run.info.run_id, shop="north")
out["v1"] = publish_champion(project).info.labels["registry_version"]
tracking.move_alias(versions[1], "better", None, run.info.run_id, shop="north")
out["v2"] = publish_champion(project).info.labels["registry_version"]
tracking.move_alias(versions[0], "rollback", None, run.info.run_id, shop="north")  # the alias moves back
back = publish_champion(project)
again = publish_champion(project)  # idempotent: no further copy
out["rollback"], out["same"] = back.info.labels["registry_version"], str(back.tag) == str(again.tag)
print(json.dumps(out))
"""


def test_rollback_is_moving_the_alias_back_and_publishing(server, bundles, tmp_path):
    """The registry's champion alias goes v1 -> v2 -> v1; each publish makes it the store's latest,
    which the service loads on reload (MLflow stays out of the service)."""
    url, home = server
    env = dict(os.environ, BENTOML_HOME=str(home), PYTHONPATH=str(REPO), MLFLOW_ENABLE_TELEMETRY="false")
    out = subprocess.run([sys.executable, "-c", ROLLBACK, str(bundles[0])], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"v1": "1", "v2": "2", "rollback": "1", "same": True}
    r = reload(url)
    assert r.json()["status"] in ("loaded", "unchanged") and r.json()["model_version"] == "1"
    assert recommend(url).json()["model_version"] == "1"


# -- in-process: the slot's rules, polling, log redaction --------------------
def test_polling_picks_up_a_new_model_and_ignores_a_broken_one(bundles):
    good, variants = bundles
    published = {"now": ("good", good)}

    def resolve(tag):
        name, path = published["now"]
        return path, f"shoprec-recommender:{name}", name

    slot = ModelSlot(resolve=resolve)
    assert not slot.ready and slot.reload().status == "loaded"
    slot.start_polling(0.05)
    try:
        published["now"] = ("broken", variants["torn-array"])
        time.sleep(0.4)
        assert slot.current.tag == "shoprec-recommender:good"
        published["now"] = ("newer", good)
        deadline = time.monotonic() + 5
        while slot.current.tag != "shoprec-recommender:newer" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slot.current.tag == "shoprec-recommender:newer"
    finally:
        slot.stop()


def test_a_smoke_test_failure_is_a_refusal(bundles):
    def failing(store):
        raise Refused("smoke test: no")

    slot = ModelSlot(resolve=lambda tag: (bundles[0], "shoprec-recommender:x", "1"), smoke=failing)
    outcome = slot.reload()
    assert outcome.status == "refused" and "smoke test" in outcome.detail and slot.current is None


def test_validation_errors_are_logged_without_their_input_values():
    text = ("user_id\n  String should have at most 128 characters [type=string_too_long, "
            "input_value='alice@example.com', input_type=str]")
    assert "alice" not in redact(text) and "input_value=<redacted>" in redact(text)
    missing = "events\n  Field required [type=missing, input_value={'user_id': 'alice', 'k': [1, 2]}, input_type=dict]"
    assert "alice" not in redact(missing) and redact(missing).endswith("input_value=<redacted>, input_type=dict]")
    assert "alice" not in redact("odd [input_value='alice'")
