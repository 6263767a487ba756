"""A/B tests over HTTP (serving/experiments_api.py): create and stop with an admin key, list and report with a
marketing key, refusals that name the field or the variant, and the storefront's answers following along."""
import httpx
import pytest

from tests.server import ADMIN, MARKETING, STOREFRONT, bentoml_server
from tests.test_experiments_http import wait_for
from tests.test_service import publish_test_bundle

PAGES = {"name": "pages", "variants": ["control=champion", "treatment=popular"], "endpoint": "similar_items"}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_EXPERIMENTS_REFRESH_S": "0.5"}
    with bentoml_server(home, extra_env=env) as url:
        yield url


def post(url, path, body, headers):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30)


def page(url, who):
    return post(url, "/similar_items", {"item_id": "i1", "k": 3, **who}, STOREFRONT).json()


def test_create_list_report_and_stop_over_http(url):
    for key in (STOREFRONT, MARKETING):  # creating needs the admin scope
        assert post(url, "/admin/experiments/create", PAGES, key).status_code == 403
    created = post(url, "/admin/experiments/create", PAGES, ADMIN)
    assert created.status_code == 200, created.text
    assert created.json()["experiment"]["endpoint"] == "similar_items"
    assert "created experiment pages on /similar_items: control=champion (50%), treatment=popular (50%)" in \
        created.json()["detail"]
    again = post(url, "/admin/experiments/create", PAGES, ADMIN)
    assert again.status_code == 409 and "exists already" in again.json()["error"]

    wait_for(lambda: page(url, {"user_id": "u1"})["experiment"] == "pages")
    shown = [page(url, {"user_id": f"u{i}"}) for i in range(12)] + [page(url, {"session_id": f"s{i}"}) for i in range(12)]
    assert {r["variant"] for r in shown} == {"control", "treatment"}
    assert page(url, {})["experiment"] is None

    assert post(url, "/experiments", {}, ADMIN).status_code == 403  # listing and reports: the marketing scope
    listed = post(url, "/experiments", {}, MARKETING).json()["experiments"]
    assert [(e["name"], e["status"]) for e in listed] == [("pages", "running")]
    report = post(url, "/experiments/report", {"name": "pages"}, MARKETING)
    assert report.status_code == 200 and report.headers["content-type"] == "application/json"
    rows = {v["variant"]: v for v in report.json()["variants"]}
    assert set(rows) == {"control", "treatment"} and sum(v["units"] for v in rows.values()) >= 24
    assert "srm" in report.json()
    missing = post(url, "/experiments/report", {"name": "nope"}, MARKETING)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]

    stopped = post(url, "/admin/experiments/stop", {"name": "pages"}, ADMIN)
    assert stopped.status_code == 200 and stopped.json()["experiment"]["status"] == "stopped"
    wait_for(lambda: page(url, {"user_id": "u1"})["experiment"] is None)
    assert "stopped already" in post(url, "/admin/experiments/stop", {"name": "pages"}, ADMIN).json()["detail"]
    assert post(url, "/admin/experiments/stop", {"name": "nope"}, ADMIN).status_code == 404


@pytest.mark.parametrize("change, status, words", [
    ({"variants": ["control", "t=popular"]}, 400, "variants"),
    ({"variants": ["control=champion", "t=popular"], "split": "0/100"}, 400, "split"),
    ({"variants": ["control=champion"]}, 400, "variants"),
    ({"variants": ["control=champion", "t=v99"]}, 400, "variant t"),  # not in the model store: refused now
    ({"variants": ["control=champion", "t=@challenger"]}, 400, "variants"),  # an alias: the CLI publishes it
    ({"variants": ["control=champion", "t=popular"], "split": "90"}, 400, "split"),
    ({"coverage": 2}, 400, "coverage"),
    ({"endpoint": "checkout"}, 400, "endpoint"),
    ({"planned_users": 100, "open_ended": True}, 400, "planned_users"),  # a horizon and none: was stored open-ended
])
def test_refusals_name_the_field_or_the_variant(url, change, status, words):
    answer = post(url, "/admin/experiments/create", PAGES | {"name": "refused"} | change, ADMIN)
    assert answer.status_code == status and words in answer.text, answer.text
    assert "refused" not in [e["name"] for e in post(url, "/experiments", {}, MARKETING).json()["experiments"]]
