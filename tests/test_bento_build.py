"""The quickstart and the deployable bento as README "Deploying a bento" makes it: in a copy of the repository
(its tracked files) with the BentoML store inside it (BENTOML_HOME=<copy>/bentoml_home), a tiny shop is
generated, trained (with its truth: the oracle bounds the champion) and published, `shoprec build` runs twice
in a row, and `bentoml serve shoprec:latest` answers every endpoint over HTTP from the bento's own code and
models (the recommender and the propensity bundle)."""
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest
import yaml

from features.lifecycle import DEFAULT_STAGES
from tests.server import ADMIN, MARKETING, MARKETING_KEY, REPO, bearer, bentoml_server

SHOP = "tiny-shop"
STAGE_NAMES = {s.name for s in DEFAULT_STAGES}  # the project trains with the default lifecycle stages
ALLOWED_TOP = {"features", "training", "serving", "configs", "requirements.lock", "bentofile.yaml"}


def tracked_copy(dst: Path) -> Path:
    """The repository's tracked files as they are in the working tree (what a fresh clone plus local edits holds)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():  # deleted but not yet committed: not there
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            (dst / name).write_bytes(src.read_bytes())
    return dst


def shoprec(project, *args, check=True):
    result = subprocess.run([sys.executable, "-m", "training.cli", *map(str, args)], cwd=project.root, env=project.env,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The copy after generate -> train -> keys create -> publish -> build -> build, as a user runs them."""
    root = tracked_copy(tmp_path_factory.mktemp("clone") / "shoprec")
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the copy's own mlruns/
    env.update(PYTHONPATH=str(root), BENTOML_HOME=str(root / "bentoml_home"), BENTOML_DO_NOT_TRACK="true",
               MLFLOW_ENABLE_TELEMETRY="false", OPENBLAS_NUM_THREADS="1",
               # the project's own key store and privacy folder, as `make run` writes them: inside the build context
               SHOPREC_KEYS_FILE=str(data / "keys" / "keys.json"), SHOPREC_ACCESS_LOG=str(data / "keys" / "access.jsonl"),
               SHOPREC_SESSIONS_FILE=str(data / "keys" / "sessions.json"), SHOPREC_PRIVACY_DIR=str(data / "privacy"))
    p = SimpleNamespace(root=root, env=env, home=root / "bentoml_home")
    shoprec(p, "generate", "--preset", "tiny", "--out", "data/shop")
    p.metrics = tmp_path_factory.mktemp("metrics") / "m.json"  # outside the build context
    shoprec(p, "train", "--orders", "data/shop/orders.parquet", "--events", "data/shop/events.parquet",
            "--items", "data/shop/items.parquet", "--truth", "data/shop/truth", "--shop", SHOP, "--budget-minutes", "0.2",
            "--metrics-out", p.metrics)
    p.storefront_key = shoprec(p, "keys", "create", "--scope", "storefront", "--name", "web-shop").stdout.splitlines()[-1]
    shoprec(p, "forget-user", "u-not-a-customer")  # writes the pseudonymisation key (a secret) into data/privacy
    p.published = shoprec(p, "publish")
    p.builds = [shoprec(p, "build"), shoprec(p, "build")]  # the second one failed while the store sat in the context
    p.tags = [b.stdout.split("built ", 1)[1].split()[0] for b in p.builds]
    return p


def bento_dir(project, tag: str) -> Path:
    name, version = tag.split(":")
    return project.home / "bentos" / name / version


def published_tags(project) -> dict[str, str]:
    """{model name: tag} from `shoprec publish`'s lines."""
    tags = [line.split()[1] for line in project.published.stdout.splitlines()]
    return {tag.split(":")[0]: tag for tag in tags}


def test_bentofile_settings():
    spec = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert spec["service"] == "serving.service:Shoprec"
    assert spec["python"] == {"requirements_txt": "./requirements.lock", "lock_packages": False}
    assert "models" not in spec  # computed from the store by `shoprec build`, never written by hand
    for output in ("/bentoml_home/", "/.venv/", "/mlruns/", "/data/", "/runs/", "keys/", "*.key"):
        assert output in spec["exclude"]


def test_the_champion_sits_between_popularity_and_the_shops_truth(project):
    """The quickstart's promise on the tiny shop: above the popularity baseline, never above the oracle
    that knows the simulated tastes (``--truth``)."""
    rec = json.loads(project.metrics.read_text())["recommend"]
    assert rec["oracle"]["ndcg@10"] >= rec["ndcg@10"] > rec["baseline_popularity"]["ndcg@10"]
    assert rec["chosen_on"] == "validation" and rec["champion"]["promoted"]


def test_publish_prints_one_line_per_model(project):
    lines = project.published.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["published", line.split()[1]] for line in lines]
    assert sorted(published_tags(project)) == ["shoprec-propensity", "shoprec-recommender"] and len(lines) == 2
    assert "Downloading artifacts" not in project.published.stderr and "it/s" not in project.published.stderr


def test_two_builds_in_a_row_carry_the_code_and_the_shops_models(project):
    first, second = (bento_dir(project, tag) for tag in project.tags)
    assert first != second and first.is_dir() and second.is_dir()
    for bento in (first, second):
        src = bento / "src"
        assert {p.name for p in src.iterdir()} == ALLOWED_TOP, "only the service's code, configs and pins travel"
        for package in ("features", "training", "serving"):
            assert (src / package / "__init__.py").exists(), f"{package}/ missing from the bento"
        assert (src / "serving" / "service.py").exists() and (src / "serving" / "marketing_page.py").exists()
        assert not list(src.rglob("test_*.py")) and not list(src.rglob("*.pyc")) and not list(src.rglob("*.parquet"))
        requirements = (bento / "env" / "python" / "requirements.txt").read_text()
        pins = {line.strip() for line in (REPO / "requirements.lock").read_text().splitlines() if line.strip()}
        assert pins <= {line.strip() for line in requirements.splitlines()}
        assert "index-url" not in requirements  # not re-locked against an index at build time
        info = yaml.safe_load((bento / "bento.yaml").read_text())
        assert info["labels"]["shop"] == SHOP
        tags = published_tags(project)
        assert [(m["tag"], m["alias"]) for m in info["models"]] == [
            (tags["shoprec-recommender"], "shoprec-recommender:latest"),
            (tags["shoprec-propensity"], "shoprec-propensity:latest")]
        assert all(line in project.builds[0].stdout for line in tags.values())


def test_the_bento_carries_no_secrets(project):
    """The key store, the pseudonymisation key and the data sit in the build context; none of it travels."""
    secrets = [project.root / "data" / "keys" / "keys.json", project.root / "data" / "privacy" / "pseudonym.key"]
    assert all(path.exists() for path in secrets)
    key_hash = hashlib.sha256(project.storefront_key.encode()).hexdigest()
    pseudonym_key = secrets[1].read_text().strip()
    for tag in project.tags:
        for path in bento_dir(project, tag).rglob("*"):
            assert path.name not in {"keys.json", "pseudonym.key", "sessions.json", "access.jsonl", "mlflow.db"}
            if path.is_file():
                text = path.read_bytes()
                assert key_hash.encode() not in text and pseudonym_key.encode() not in text
                assert project.storefront_key.encode() not in text, path


def test_a_shop_without_published_models_gets_no_bento(project):
    r = shoprec(project, "build", "--shop", "another-shop", check=False)
    assert r.returncode == 2 and "no published recommender for shop 'another-shop'" in r.stderr and SHOP in r.stderr


def test_shoprec_serve_prints_the_example_calls_last(project, tmp_path):
    """`make run`'s last step: one line per published model, the server's start-up, then the example calls
    (with the marketers' page) once the server answers."""
    import signal
    import time

    from tests.server import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    env = project.env | {"SHOPREC_EVENTS_URL": f"sqlite:///{tmp_path}/events.db"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--port", str(port)], cwd=project.root,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "marketers' page" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        text = log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200, text[-3000:]
        example = next(line for line in text.splitlines() if "/recommend" in line and "someone-new" not in line)
        body = json.loads(example.split(" -d '", 1)[1].rstrip("'"))  # the example's request, as a user pastes it
        answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {project.storefront_key}"}).json()
        assert answer["source"].startswith("model:"), answer  # a buyer of the served shop, not the fallback
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we started: shoprec serve, the server and its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = text.splitlines()
    published = [i for i, line in enumerate(lines) if line.startswith("published ")]
    assert len(published) == 2 and "Downloading artifacts" not in text, text[-3000:]
    started = next(i for i, line in enumerate(lines) if "Starting production HTTP BentoServer" in line)
    ready = next(i for i, line in enumerate(lines) if "Service shoprec initialized" in line)
    calls = lines.index("Example calls:")
    page = next(i for i, line in enumerate(lines) if f"http://127.0.0.1:{port}/marketing/" in line)
    assert published[-1] < started < ready < calls < page, text[-3000:]
    assert any(f"http://127.0.0.1:{port}/recommend" in line for line in lines[calls:page])


NEWER_COPIES = """
import sys
from pathlib import Path
import bentoml
from training.propensity.publish import store_propensity_bundle
from training.publish import store_bundle

labels = {"registry_version": "99", "shop": sys.argv[1]}
store_bundle(Path(bentoml.models.get("shoprec-recommender:latest").path), labels)
store_propensity_bundle(Path(bentoml.models.get("shoprec-propensity:latest").path), labels)
"""


def test_serve_the_bento_and_call_every_endpoint(project, tmp_path):
    """`bentoml serve shoprec:latest` answers every /docs.json operation and the marketers' page, from the
    bento's own models: newer copies published to the store afterwards are not what it serves."""
    # newer entries in the store under the same names (registry version 99): a served bento must not pick them up
    subprocess.run([sys.executable, "-c", NEWER_COPIES, SHOP], cwd=project.root, env=project.env, check=True, timeout=120)

    import pandas as pd

    orders = pd.read_parquet(project.root / "data" / "shop" / "orders.parquet")
    user, item = str(orders["user_id"].iloc[0]), str(orders["item_id"].iloc[0])
    other_item = str(orders.loc[orders["item_id"] != item, "item_id"].iloc[0])
    storefront = bearer(project.storefront_key)  # the key `shoprec keys create` put in the project's key store
    env = {k: project.env[k] for k in ("SHOPREC_KEYS_FILE", "SHOPREC_PRIVACY_DIR")} | {
        "SHOPREC_EVENTS_URL": f"sqlite:///{tmp_path}/events.db", "SHOPREC_ACCESS_LOG": str(tmp_path / "access.jsonl"),
        "SHOPREC_CANONICAL_DIR": str(project.root / "data" / "canonical"), "SHOPREC_SESSIONS_FILE": str(tmp_path / "sessions.json")}
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    calls = {  # path: (scope headers, body, check of the answer)
        "/recommend": (storefront, {"user_id": user, "k": 5},
                       lambda b: b["source"].startswith("model:") and len(b["items"]) == 5
                       and b["model_version"] == f"{SHOP}/v1"),
        "/similar_items": (storefront, {"item_id": item, "k": 5}, lambda b: len(b["items"]) == 5),
        "/bought_together": (storefront, {"items": [item], "k": 5}, lambda b: len(b["items"]) > 0),
        "/session": (storefront, {"items": [item, other_item], "k": 5}, lambda b: len(b["items"]) == 5),
        "/rerank": (storefront, {"user_id": user, "items": [other_item, item]},
                    lambda b: {i["item_id"] for i in b["items"]} == {item, other_item}),
        "/events": (storefront, {"user_id": user, "events": [{"item_id": item, "event_type": "view", "ts": now}]},
                    lambda b: b["stored"] == 1),
        "/propensity": (MARKETING, {"user_ids": [user, "nobody"]},
                        lambda b: b["model_version"] == f"{SHOP}/v1" and [u["known"] for u in b["users"]] == [True, False]),
        "/churn_risk": (MARKETING, {"top_n": 5}, lambda b: 0 < len(b["customers"]) <= 5),
        "/customer_value": (MARKETING, {"user_ids": [user, "nobody"]},
                            lambda b: b["model_version"] == f"{SHOP}/v1" and b["horizon_days"] > 0
                            and [c["known"] for c in b["customers"]] == [True, False]
                            and b["customers"][0]["clv"] >= 0 and 0 <= b["customers"][0]["purchase_probability"] <= 1
                            and b["customers"][0]["stage"] in STAGE_NAMES and b["customers"][1]["clv"] is None),
        "/admin/reload": (ADMIN, {}, lambda b: b["status"] == "unchanged" and b["model_version"] == f"{SHOP}/v1"),
        "/admin/forget": (ADMIN, {"user_id": "u-not-a-customer"}, lambda b: "pseudonym" in b),
        "/admin/experiments/create": (ADMIN, {"name": "bento", "variants": ["control=champion", "t=popular"]},
                                      lambda b: b["experiment"]["status"] == "running"),
        "/experiments": (MARKETING, {}, lambda b: [e["name"] for e in b["experiments"]] == ["bento"]),
        "/experiments/report": (MARKETING, {"name": "bento"}, lambda b: {v["variant"] for v in b["variants"]}
                                == {"control", "t"}),
        "/admin/experiments/stop": (ADMIN, {"name": "bento"}, lambda b: b["experiment"]["status"] == "stopped"),
    }
    with bentoml_server(project.home, extra_env=env, target="shoprec:latest", cwd=tmp_path) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            spec = http.get("/docs.json").json()
            public = {p for p, ops in spec["paths"].items() if "get" in ops}
            assert set(spec["paths"]) == public | set(calls), "an endpoint this test does not call"
            for path in sorted(public):
                r = http.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            for path, (headers, body, ok) in calls.items():
                assert http.post(path, json=body).status_code == 401  # no key
                r = http.post(path, json=body, headers=headers)
                assert r.status_code == 200 and ok(r.json()), (path, r.status_code, r.text[:500])
            r = http.post("/recommend", json={"user_id": user, "k": 3}, headers=storefront)
            assert r.json()["model_version"] == f"{SHOP}/v1" and r.json()["source"].endswith("+events")
            stranger = http.post("/recommend", json={"user_id": "nobody", "k": 5}, headers=storefront).json()
            assert stranger["source"].startswith("fallback:") and len(stranger["items"]) == 5
            # the marketers' page: a script with a marketing key, then a browser signing in
            page = http.get("/marketing/", headers=MARKETING)
            assert page.status_code == 200 and "churn" in page.text.lower()
            csv = http.get("/marketing/churn_risk.csv", headers=MARKETING)
            assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
            browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
            assert http.get("/marketing/", headers=browser).status_code == 303  # a browser: to the sign-in form
            assert http.get("/marketing/").status_code == 401  # a script: its JSON error
            form = http.get("/marketing/login")
            token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            signed = http.post("/marketing/login",
                               data={"account": "SHOPREC_API_KEY", "key": MARKETING_KEY, "csrf": token})
            assert signed.status_code == 303, signed.text[:300]
            assert http.get("/marketing/", headers=browser).status_code == 200  # the session cookie
        # the worker runs the bento's own copy of the code, not the copy of the repository
        port = url.rsplit(":", 1)[1]
        (serve,) = [p for p in psutil.process_iter(["cmdline"])
                    if p.info["cmdline"] and "shoprec:latest" in p.info["cmdline"] and port in p.info["cmdline"]]
        assert bento_dir(project, project.tags[-1]) / "src" in {Path(c.cwd()) for c in serve.children(recursive=True)}
