"""The real BentoML server on 127.0.0.1, real HTTP calls."""
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.server import REPO, STOREFRONT, bentoml_server


def publish_test_bundle(home, src, version="7", shop=None):
    from tests.test_storefront import make_bundle

    make_bundle({"trained_at": "2024-01-01T00:00:00Z"}).save(src)
    labels = {"registry_version": version} | ({"shop": shop} if shop else {})
    subprocess.run([sys.executable, "-c", "import json, sys; from pathlib import Path; from training.publish import store_bundle; "
                    "store_bundle(Path(sys.argv[1]), json.loads(sys.argv[2]))", str(src), json.dumps(labels)],
                   cwd=REPO, env=dict(os.environ, BENTOML_HOME=str(home)), check=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    return home


@pytest.fixture(scope="module")
def server(home):
    with bentoml_server(home, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db"}) as url:
        yield url


def post(url, path, body, headers=STOREFRONT):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10)


def test_health_and_openapi(server):
    assert httpx.get(f"{server}/livez").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    spec = httpx.get(f"{server}/docs.json").json()
    for path in ("/recommend", "/similar_items", "/bought_together", "/rerank", "/session", "/events"):
        assert path in spec["paths"]
    assert spec["info"]["version"] not in (None, "None", "")  # BentoML writes "None" outside a built Bento
    index = httpx.get(f"{server}/")  # BentoML's API page, without the Google Tag Manager it ships
    assert index.status_code == 200 and "swagger-ui" in index.text and "googletagmanager" not in index.text.lower()
    assert index.headers["content-security-policy"].startswith("default-src 'self'")
    assert "bentoml_service_request" in httpx.get(f"{server}/metrics").text


def test_known_user(server):
    r = post(server, "/recommend", {"user_id": "u1", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "model:als" and body["model_version"] == "7" and len(body["items"]) == 5
    bought = {"i1", "i2", "i3", "i4"}  # u1 bought i(1+j) for j < 4
    assert body["items"][0]["reason"].startswith("because you bought")
    assert not bought & {it["item_id"] for it in body["items"]}


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON (RFC 8259): a browser's JSON.parse refuses it")


def test_answers_are_the_documented_recommendations_json(server):
    """The endpoints write Recommendations JSON themselves (serving/schemas.py recommendations_json): byte for
    byte the pydantic model's own serialisation, with an experiment's labels too; over HTTP in one body."""
    from serving.schemas import Recommendations, ReplyLabels, ScoredItem, recommendations_json
    from training.storefront import Answer

    answer = Answer(["i1", "é✓\u2028\"x", "i2"], [0.123456, 1e-07, 0.0], "model:als", ["because you bought i9", None, None])
    for labels in (ReplyLabels("7"), ReplyLabels("7+policy:popular", "ab12", "exp", "t")):
        model = Recommendations(items=[ScoredItem(item_id=i, score=s, reason=r)
                                       for i, s, r in zip(answer.item_ids, answer.scores, answer.reasons)],
                                source=answer.source, model_version=labels.model_version, request_id=labels.request_id,
                                experiment=labels.experiment, variant=labels.variant)
        assert recommendations_json(answer, labels) == model.model_dump_json().encode()
    unscored = Answer(["i1", "i2", "i3"], [0.5, float("-inf"), float("nan")], "model:ranker", [None] * 3)
    written = recommendations_json(unscored, ReplyLabels("7"))  # a rerank's candidates the model does not score
    assert written == Recommendations(items=[ScoredItem(item_id=i, score=s) for i, s in
                                             zip(unscored.item_ids, unscored.scores)],
                                      source="model:ranker", model_version="7").model_dump_json().encode()
    assert [it["score"] for it in json.loads(written, parse_constant=_not_json)["items"]] == [0.5, None, None]
    r = post(server, "/recommend", {"user_id": "u1", "k": 3})
    assert r.headers["content-type"] == "application/json" and int(r.headers["content-length"]) == len(r.content)
    assert Recommendations.model_validate_json(r.content).model_dump_json().encode() == r.content


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
                   headers={"content-type": "application/json"} | STOREFRONT, timeout=10)
    assert r.status_code == 413


def test_a_chunked_body_over_the_limit_is_a_413_not_a_server_error(server, home):
    """Without a Content-Length the limit used to be found inside the app: a 500 and a traceback per request, even on
    the sign-in form, which needs no key."""
    def chunks():
        for _ in range(20):
            yield b"a=" + b"x" * 5_000

    for path, headers in (("/recommend", {"content-type": "application/json"} | STOREFRONT),
                          ("/marketing/login", {"content-type": "application/x-www-form-urlencoded"})):
        r = httpx.post(f"{server}{path}", content=chunks(), headers=headers, timeout=10)
        assert r.status_code == 413 and "larger than 65536 bytes" in r.text, (path, r.status_code, r.text[:200])
    small = httpx.post(f"{server}/recommend", content=iter([b'{"user_id": ', b'"u1", "k": 2}']),
                       headers={"content-type": "application/json"} | STOREFRONT, timeout=10)
    assert small.status_code == 200 and len(small.json()["items"]) == 2  # a chunked body within the limit is read whole
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    assert "Traceback" not in logs and "_TooLarge" not in logs


def test_a_bad_body_is_answered_in_the_fields_words(server):
    """BentoML's own 400 named an internal class ("2 validation error for RecommendRequestIODescriptor") and linked to
    pydantic's site; the headline now names the fields and reasons."""
    r = post(server, "/recommend", {"user_id": 5, "k": "x"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == ("invalid request: user_id: Input should be a valid string; "
                             "k: Input should be a valid integer")
    assert [e["loc"] for e in body["detail"]] == [["user_id"], ["k"]] and "IODescriptor" not in r.text
    assert "pydantic.dev" not in r.text and int(r.headers["content-length"]) == len(r.content)
    whole = post(server, "/recommend", [1])
    assert whole.status_code == 400 and whole.json()["error"] == "invalid request: body: Input should be an object"
    ours = post(server, "/recommend", {"user_id": "u1", "min_price": 9, "max_price": 2})  # the model's own check
    assert ours.status_code == 400 and ours.json()["error"] == "invalid request: body: min_price 9.0 is above max_price 2.0"


def test_made_up_paths_cannot_grow_the_metrics_or_the_log(server, home):
    """Each path a caller makes up (refused with 401) used to add ~20 series to /metrics for good, and a 60 KB path
    was written whole into two log lines: /metrics labels only served paths, logs keep a path's start and length."""
    import re

    for i in range(30):
        assert httpx.get(f"{server}/made-up-{i}", timeout=10).status_code == 401
    long = "/x" + "A" * 20_000
    assert httpx.get(f"{server}{long}", timeout=10).status_code == 401
    assert post(server, "/recommend", {"user_id": "u1", "k": 3}).status_code == 200
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    assert "made-up" not in metrics and "AAAA" not in metrics
    unmatched = re.search(r'request_total\{endpoint="/\{unmatched\}",http_response_code="401"[^}]*\} (\d+)\.0', metrics)
    assert unmatched and int(unmatched.group(1)) >= 31  # (before the tests below start servers on this home,
    # whose start empties its metrics folder)
    assert re.search(r'request_total\{endpoint="/recommend",http_response_code="200"', metrics)
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    assert "A" * 300 not in logs and "(20,002 characters)" in logs


def test_filters_over_http(server):
    body = post(server, "/recommend", {"user_id": "u1", "k": 5, "category": "even", "max_price": 8}).json()
    assert body["items"] and all(int(it["item_id"][1:]) % 2 == 0 and int(it["item_id"][1:]) <= 8 for it in body["items"])
    assert post(server, "/recommend", {"user_id": "u1", "min_price": 9, "max_price": 2}).status_code == 400


def test_bought_together_session_rerank(server):
    together = post(server, "/bought_together", {"items": ["i4"], "k": 3}).json()
    assert together["source"].startswith("together:") and "i4" not in [it["item_id"] for it in together["items"]]
    session = post(server, "/session", {"items": ["i4", "i5"], "k": 3}).json()
    assert session["source"] == "session:als"
    rerank = post(server, "/rerank", {"user_id": "u1", "items": ["nope", "i2", "i9"]}).json()
    assert [it["item_id"] for it in rerank["items"]][-1] == "nope"
    assert post(server, "/rerank", {"user_id": "u1", "items": ["a"] * 501}).status_code == 400


def test_an_event_changes_the_next_answer_and_purchases_disappear(server):
    before = post(server, "/recommend", {"user_id": "u20", "k": 3}).json()
    top = before["items"][0]["item_id"]
    ack = post(server, "/events", {"user_id": "u20", "events": [{"item_id": top, "event_type": "purchase"}]})
    assert ack.status_code == 200 and ack.json() == {"stored": 1}
    after = post(server, "/recommend", {"user_id": "u20", "k": 3}).json()
    assert after["source"] == "model:als+events" and top not in [it["item_id"] for it in after["items"]]
    assert post(server, "/events", {"user_id": "u20", "events": [{"item_id": "i1", "event_type": "like"}]}).status_code == 400


def test_acknowledged_events_survive_a_restart(home, server):
    post(server, "/events", {"user_id": "u21", "events": [{"item_id": "i0", "event_type": "purchase"}]})
    with bentoml_server(home, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db"}) as second:
        body = post(second, "/recommend", {"user_id": "u21", "k": 5}).json()
    assert body["source"] == "model:als+events" and "i0" not in [it["item_id"] for it in body["items"]]


def test_two_replicas_share_events_through_redis(home, tmp_path):
    """Several service replicas: an event sent to one changes the next answer of the other."""
    from tests.redis_server import redis_server

    with redis_server(tmp_path) as redis_url:
        env = {"SHOPREC_EVENTS_URL": redis_url}
        with bentoml_server(home, extra_env=env) as a, bentoml_server(home, extra_env=env) as b:
            top = post(b, "/recommend", {"user_id": "u22", "k": 3}).json()["items"][0]["item_id"]
            assert post(a, "/events", {"user_id": "u22", "events": [{"item_id": top, "event_type": "purchase"}]}).status_code == 200
            after = post(b, "/recommend", {"user_id": "u22", "k": 3}).json()
    assert after["source"] == "model:als+events" and top not in [it["item_id"] for it in after["items"]]



def test_filters_on_a_model_without_a_catalogue_are_refused_not_dropped():
    """A shop trained without --items has no category, stock or price: its filters were dropped silently (the
    'category' page got the unfiltered list, postage included)."""
    from types import SimpleNamespace

    from serving.schemas import RecommendRequest, SimilarItemsRequest
    from serving.service import _unfilterable

    bare = SimpleNamespace(store=SimpleNamespace(bundle=SimpleNamespace(catalog=None)))
    listed = SimpleNamespace(store=SimpleNamespace(bundle=SimpleNamespace(catalog=object())))
    why = _unfilterable(bare, RecommendRequest(user_id="u1", category="x", min_price=100))
    assert why == ("category, min_price: this shop's model was trained without an item catalogue, so there is no "
                   "category, stock or price to filter on (train with --items FILE)")
    assert "in_stock" in _unfilterable(bare, SimilarItemsRequest(item_id="i1", in_stock=True))
    assert _unfilterable(bare, RecommendRequest(user_id="u1")) == ""  # no filter: fine
    assert _unfilterable(listed, RecommendRequest(user_id="u1", category="x")) == ""
