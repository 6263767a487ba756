"""/propensity and /churn_risk on the real BentoML server: unknown users, marketing keys, filters, 503."""
import os
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from tests.server import MARKETING_KEY, REPO, STOREFRONT_KEY, bentoml_server
from tests.test_service import publish_test_bundle
from training.propensity.bundle import PropensityBundle

KEY = MARKETING_KEY  # the test servers' marketing key (tests/server.py)
# 6 customers with known scores; value_at_risk = p_churn * expected_spend
SCORES = pd.DataFrame({
    "user_id": ["c1", "c2", "c3", "c4", "c5", "c6"],
    "churn_probability": [0.9, 0.8, 0.7, 0.3, 0.95, 0.6],
    "conversion_probability": [0.05, 0.1, 0.2, 0.6, 0.01, 0.3],
    "expected_spend": [100.0, 500.0, 50.0, 1000.0, 10.0, 200.0],
    "segment": ["at_risk", "cant_lose", "at_risk", "champions", "hibernating", "at_risk"],
    "r_score": [2, 1, 2, 5, 1, 2], "f_score": [3, 5, 4, 5, 1, 3], "m_score": [3, 5, 2, 5, 1, 4],
    "recency_days": [120.0, 200.0, 90.0, 3.0, 300.0, 100.0], "frequency": [4.0, 20.0, 3.0, 30.0, 1.0, 5.0],
    "monetary": [400.0, 4000.0, 150.0, 9000.0, 10.0, 800.0],
    "reasons": [["no order for 120 days, usually every 30"]] * 6,
}).assign(value_at_risk=lambda d: d.churn_probability * d.expected_spend)
# value at risk: c2 400, c4 300, c6 120, c1 90, c3 35, c5 9.5


def _store(home, src):
    PropensityBundle(SCORES, {"scored_at": "2024-12-31 00:00:00", "horizon_days": 90, "window_days": 30}).save(src)
    code = ("import sys; from pathlib import Path; from training.propensity.publish import store_propensity_bundle; "
            "store_propensity_bundle(Path(sys.argv[1]), {'registry_version': '3', 'shop': 'acme'})")
    subprocess.run([sys.executable, "-c", code, str(src)], cwd=REPO, env=dict(os.environ, BENTOML_HOME=str(home)), check=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    _store(home, tmp_path_factory.mktemp("propensity"))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db"}
    with bentoml_server(home, extra_env=env) as url:
        yield url
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    assert KEY not in logs, "the API key must never be logged"


def post(url, path, body, key=KEY):
    """With the marketing key by default (as the old ``X-API-Key`` header: it still works); ``key=None``: none."""
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10)


def test_openapi_lists_the_endpoints(server):
    paths = httpx.get(f"{server}/docs.json").json()["paths"]
    assert "/propensity" in paths and "/churn_risk" in paths


def test_propensity_known_and_unknown_users(server):
    r = post(server, "/propensity", {"user_ids": ["c1", "nobody", "c4"]})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "acme/v3" and body["scored_at"] == "2024-12-31 00:00:00"
    c1, nobody, c4 = body["users"]
    assert c1 == {"user_id": "c1", "known": True, "churn_probability": 0.9, "conversion_probability": 0.05,
                  "value_at_risk": 90.0, "segment": "at_risk"}
    assert nobody == {"user_id": "nobody", "known": False, "churn_probability": None, "conversion_probability": None,
                      "value_at_risk": None, "segment": "unknown"}
    assert c4["known"] and c4["segment"] == "champions"


def test_propensity_rejects_an_empty_batch(server):
    r = post(server, "/propensity", {"user_ids": []})
    assert r.status_code == 400 and "user_ids" in r.text


@pytest.mark.parametrize("path", ["/churn_risk", "/propensity"])
@pytest.mark.parametrize("key, status", [(None, 401), ("", 401), ("wrong", 401), (KEY + "x", 401), (KEY[:-1], 401),
                                         (STOREFRONT_KEY, 403)])
def test_customer_data_needs_a_marketing_key(server, path, key, status):
    r = post(server, path, {"user_ids": ["c2"]} if path == "/propensity" else {}, key=key)
    assert r.status_code == status
    assert "key" in r.json()["error"] and "c2" not in r.text


def test_churn_risk_with_the_key_is_the_ranked_list(server):
    r = post(server, "/churn_risk", {}, key=KEY)
    assert r.status_code == 200
    body = r.json()
    assert [c["user_id"] for c in body["customers"]] == ["c2", "c4", "c6", "c1", "c3", "c5"]
    assert [c["rank"] for c in body["customers"]] == [1, 2, 3, 4, 5, 6]
    assert body["total"] == 6 and body["model_version"] == "acme/v3" and body["horizon_days"] == 90
    first = body["customers"][0]
    assert first["value_at_risk"] == 400.0 and first["days_since_last_order"] == 200.0 and first["reasons"]


@pytest.mark.parametrize("filters, expected", [
    ({"min_probability": 0.75}, ["c2", "c1", "c5"]),
    ({"min_value": 100}, ["c2", "c4", "c6"]),
    ({"segment": "at_risk"}, ["c6", "c1", "c3"]),
    ({"segment": "at_risk", "min_probability": 0.65}, ["c1", "c3"]),
    ({"top_n": 2}, ["c2", "c4"]),
    ({"page": 2, "page_size": 2}, ["c6", "c1"]),
    ({"page": 4, "page_size": 2}, []),
])
def test_churn_risk_filters(server, filters, expected):
    body = post(server, "/churn_risk", filters, key=KEY).json()
    assert [c["user_id"] for c in body["customers"]] == expected


def test_churn_risk_bad_filter_names_the_field(server):
    r = post(server, "/churn_risk", {"segment": "vip"}, key=KEY)
    assert r.status_code == 400 and "segment" in r.text
    r = post(server, "/churn_risk", {"min_probability": 2}, key=KEY)
    assert r.status_code == 400 and "min_probability" in r.text
    r = post(server, "/churn_risk", {"stage": "lapsed"}, key=KEY)  # this bundle was trained without customer value
    assert r.status_code == 400 and "stage" in r.json()["error"] and "no lifecycle stages" in r.json()["error"]
    first = post(server, "/churn_risk", {}, key=KEY).json()["customers"][0]
    assert first["clv"] is None and first["stage"] is None


def test_without_a_propensity_bundle_the_service_starts_and_answers_503(tmp_path):
    publish_test_bundle(tmp_path, tmp_path / "bundle")
    with bentoml_server(tmp_path, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{tmp_path}/events.db"}) as url:
        assert post(url, "/recommend", {"user_id": "u1", "k": 3}, key=STOREFRONT_KEY).status_code == 200
        r = post(url, "/propensity", {"user_ids": ["c1"]})
        assert r.status_code == 503 and "no propensity bundle" in r.json()["error"]
        r = post(url, "/churn_risk", {}, key=KEY)
        assert r.status_code == 503 and "shoprec publish" in r.json()["error"]
        assert post(url, "/churn_risk", {}, key="wrong").status_code == 401


def test_the_csv_never_holds_a_live_spreadsheet_formula(tmp_path):
    scores = SCORES.assign(user_id=["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "c5", "\tc6"])
    bundle = PropensityBundle(scores, {"horizon_days": 90, "window_days": 30})
    bundle.to_csv(bundle.at_risk(), tmp_path / "list.csv")
    ids = pd.read_csv(tmp_path / "list.csv", dtype=str, keep_default_na=False)["customer_id"]
    assert sorted(ids) == sorted(["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "c5", "'\tc6"])
    assert not [i for i in ids if i[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_a_service_answers_only_from_its_own_shops_bundle(tmp_path):
    """A service for shop B whose churn model was never trained (too short a history) answered /propensity and
    /churn_risk from shop A's newer bundle, A's customers included. Now: its own shop's newest, or 503 saying why."""
    import json

    code = r"""
import json, sys
from pathlib import Path
from training.propensity.bundle import PropensityBundle
from training.propensity.publish import store_propensity_bundle
from tests.test_propensity_service import SCORES
src = Path(sys.argv[1])
for shop, version, ids in (("acme", "3", ["a1"]), ("acme", "4", ["a2"]), ("bolt", "1", ["b1"])):
    PropensityBundle(SCORES.head(1).assign(user_id=ids), {"scored_at": "2024-12-31", "horizon_days": 90,
                     "window_days": 30}).save(src / shop / version)
    store_propensity_bundle(src / shop / version, {"registry_version": version, "shop": shop})
from serving.propensity import PropensityApi
out = {}
for shop in ("acme", "bolt", "nobody", None):
    api = PropensityApi.from_store(shop)
    out[str(shop)] = [api.version, None if api.bundle is None else api.bundle.scores["user_id"].tolist(), api.missing]
import os
os.environ["SHOPREC_PROPENSITY_MODEL"] = "shoprec-propensity:latest"
api = PropensityApi.from_store("acme")
out["pinned"] = [api.version, api.bundle, api.missing]
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "src")], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, BENTOML_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO)), check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["acme"][:2] == ["acme/v4", ["a2"]] and out["bolt"][:2] == ["bolt/v1", ["b1"]]
    assert out["None"][:2] == ["bolt/v1", ["b1"]]  # a service with no shop yet: the newest
    assert out["nobody"][1] is None and "no churn and conversion bundle of shop 'nobody'" in out["nobody"][2]
    assert "`shoprec publish --shop nobody`" in out["nobody"][2]
    assert out["pinned"][1] is None and "trained on shop 'bolt'; this service serves shop 'acme'" in out["pinned"][2]
