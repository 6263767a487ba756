"""An A/B test over real HTTP: two replicas sharing Redis, a restart, known traffic counted exactly."""
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.server import ADMIN_KEY, KEY_ENV, MARKETING_KEY, REPO, STOREFRONT, bentoml_server, server_env
from tests.test_service import publish_test_bundle

USERS = [f"u{i}" for i in range(30)] + [f"new-{i}" for i in range(30)]  # known and unknown shoppers


def shoprec(home, env, *args, check=True):
    """The CLI as an operator runs it (python -m training.cli), against the same stores as the servers."""
    result = subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True,
                            env=server_env(home, env), timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"shoprec {' '.join(args)} -> {result.returncode}: {result.stdout}{result.stderr}")
    return result


def post(url, path, body):
    return httpx.post(f"{url}{path}", json=body, headers=STOREFRONT, timeout=10)


def answers(url, users):
    return {u: post(url, "/recommend", {"user_id": u, "k": 4}).json() for u in users}


class Probe:
    """Polls a server with its own shopper until the experiment shows; counts the exposures it caused."""

    def __init__(self):
        self.exposures, self.variant = 0, None

    def sees(self, url, experiment):
        r = post(url, "/recommend", {"user_id": "probe"}).json()
        self.exposures += r["experiment"] is not None
        self.variant = r["variant"] or self.variant
        return r["experiment"] == experiment


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The champion (registry version 7) and a challenger (version 8) published as an experiment arm."""
    home = tmp_path_factory.mktemp("bentoml_home")
    src = tmp_path_factory.mktemp("bundle")
    publish_test_bundle(home, src)
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from training.experiments.publish import "
                    "store_variant; store_variant(Path(sys.argv[1]), {'registry_version': '8'})",
                    str(src)], cwd=REPO, env=server_env(home), check=True)
    return home


def test_ab_test_end_to_end_over_http(home, tmp_path):
    from tests.redis_server import redis_server

    with redis_server(tmp_path) as redis_url:
        env = {"SHOPREC_EVENTS_URL": redis_url, "SHOPREC_EXPERIMENTS_REFRESH_S": "0.5", "MLFLOW_TRACKING_URI":
               f"sqlite:///{tmp_path}/mlflow.db"}
        # access: creating needs the admin scope
        refused = shoprec(home, env, "experiment", "create", "home", "--variant", "control=champion",
                          "--variant", "treatment=popular", "--key", MARKETING_KEY, check=False)
        assert refused.returncode == 2 and "needs an admin key" in refused.stderr
        with bentoml_server(home, extra_env=env) as a, bentoml_server(home, extra_env=env) as b:
            before = answers(a, USERS[:3])
            assert all(r["experiment"] is None and r["request_id"] is None for r in before.values())
            shoprec(home, env, "experiment", "create", "home", "--variant", "control=champion",
                    "--variant", "treatment=popular", "--split", "50/50", "--key", ADMIN_KEY)
            shoprec(home, env, "experiment", "create", "rerank-model", "--endpoint", "rerank", "--variant",
                    "control=champion", "--variant", "challenger=v8", "--key", ADMIN_KEY)  # a model arm
            probe = Probe()
            wait_for(lambda: probe.sees(a, "home") and probe.sees(b, "home"))
            from_a, from_b = answers(a, USERS), answers(b, USERS)
            variant = {u: r["variant"] for u, r in from_a.items()}
            assert variant == {u: r["variant"] for u, r in from_b.items()}  # the same on both replicas
            assert set(variant.values()) == {"control", "treatment"}
            for u, r in from_a.items():
                assert r["experiment"] == "home" and len(r["request_id"]) == 32
                if r["variant"] == "treatment":
                    assert r["source"] in ("model:popular", "fallback:popular") and r["model_version"].endswith("+policy:popular")
            # the model arm on /rerank: version 8 loaded beside the champion (version 7), the same split on a and b
            wait_for(lambda: post(a, "/rerank", {"user_id": "u1", "items": ["i1", "i2"]}).json()["experiment"] == "rerank-model"
                     and post(b, "/rerank", {"user_id": "u1", "items": ["i1", "i2"]}).json()["experiment"] == "rerank-model")
            reranked = {u: (post(a, "/rerank", {"user_id": u, "items": ["i1", "i2", "i3"]}).json(),
                            post(b, "/rerank", {"user_id": u, "items": ["i1", "i2", "i3"]}).json()) for u in USERS[:30]}
            assert all(x["variant"] == y["variant"] for x, y in reranked.values())
            assert {x["variant"]: x["model_version"] for x, _ in reranked.values()} == {"control": "7", "challenger": "8"}
            # the product page: by user id when the request has one, else by session id; neither: no experiment
            shoprec(home, env, "experiment", "create", "product-page", "--endpoint", "similar_items", "--variant",
                    "control=champion", "--variant", "treatment=popular", "--key", ADMIN_KEY)
            page = lambda url, who: post(url, "/similar_items", {"item_id": "i1", "k": 3, **who}).json()  # noqa: E731
            wait_for(lambda: page(a, {"session_id": "probe"})["experiment"] == "product-page"
                     and page(b, {"session_id": "probe"})["experiment"] == "product-page")
            viewers = [{"user_id": u} for u in USERS[:12]] + [{"session_id": f"s-{i}"} for i in range(12)]
            shown = [(page(a, who), page(b, who)) for who in viewers]
            assert all(x["experiment"] == "product-page" and x["variant"] == y["variant"] for x, y in shown)
            assert {x["variant"] for x, _ in shown} == {"control", "treatment"}
            assert all(x["source"] == "fallback:popular" for x, _ in shown if x["variant"] == "treatment")
            assert page(a, {})["experiment"] is None and page(b, {})["request_id"] is None
            # known traffic: every user 2 answers (a and b); clicks, purchases with and without request id
            clicked = USERS[0:40:2]
            for u in clicked:
                r = from_a[u]
                assert post(b, "/events", {"user_id": u, "events": [
                    {"item_id": r["items"][0]["item_id"], "event_type": "view", "request_id": r["request_id"]}]}).status_code == 200
            by_request = USERS[0:30:3]
            for u in by_request:
                r = from_b[u]
                post(a, "/events", {"user_id": u, "events": [{"item_id": r["items"][1]["item_id"], "event_type": "purchase",
                                                            "request_id": r["request_id"], "price": 10.0, "quantity": 2}]})
            by_user = USERS[31:60:4]
            for u in by_user:
                post(b, "/events", {"user_id": u, "events": [{"item_id": "i3", "event_type": "purchase", "price": 4.5}]})
        # a restart: the same variant again
        with bentoml_server(home, extra_env=env) as c:
            wait_for(lambda: probe.sees(c, "home"))
            assert {u: r["variant"] for u, r in answers(c, USERS[:20]).items()} == {u: variant[u] for u in USERS[:20]}
            report = json.loads(shoprec(home, env, "experiment", "report", "home", "--json", "--key", MARKETING_KEY).stdout)
            stopped = shoprec(home, env, "experiment", "report", "home", "--key", ADMIN_KEY, check=False)
            assert stopped.returncode == 2 and "needs a marketing key" in stopped.stderr
            shoprec(home, env, "experiment", "stop", "home", "--key", ADMIN_KEY)
            wait_for(lambda: post(c, "/recommend", {"user_id": "u0"}).json()["experiment"] is None)  # not counted: after the report
            assert all(r["experiment"] is None and r["variant"] is None for r in answers(c, USERS[:10]).values())
    rows = {v["variant"]: v for v in report["variants"]}
    for name in ("control", "treatment"):
        members = [u for u in USERS if variant[u] == name]
        probed = probe.variant == name
        assert rows[name]["units"] == len(members) + probed
        # 2 answers per user from a and b, 20 more from the restarted server for the first 20 users, the probe's
        assert rows[name]["exposures"] == 2 * len(members) + sum(u in USERS[:20] for u in members) + probed * probe.exposures
        assert rows[name]["clicks"] == sum(u in clicked for u in members)
        buyers = [u for u in members if u in by_request or u in by_user]
        assert rows[name]["conversion"] == pytest.approx(len(buyers) / (len(members) + probed))
        revenue = 20.0 * sum(u in by_request for u in members) + 4.5 * sum(u in by_user for u in members)
        assert rows[name]["revenue_per_user"] == pytest.approx(revenue / (len(members) + probed))
    assert report["srm"]["flagged"] is False and report["decision"] in ("keep running", "ship", "stop")
    assert report["mlflow_run_id"]
