"""The marketers' page: in-process checks of keys, sign-in sessions, CSRF, throttling, filters and the
CSV, then the real BentoML server driven by headless Debian Chromium (Playwright, no browser download)."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from html import unescape

import anyio
import httpx
import pandas as pd
import pytest

from features import lifecycle
from features.key_store import KeyStore
from features.settings import Settings
from serving.auth import AccessControl
from serving.marketing_page import COOKIE, CSRF_COOKIE, Backend, create_app
from serving.propensity import PropensityApi
from tests.server import REPO, STOREFRONT_KEY, bentoml_server
from tests.test_propensity_service import KEY, SCORES
from tests.test_service import publish_test_bundle
from training.propensity.bundle import PropensityBundle

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RANKED = ["c2", "c4", "c6", "c1", "c3", "c5"]  # by value at risk (see SCORES)
ACCOUNT = "SHOPREC_API_KEY"  # a key from the environment is named after its variable


STAGES = ["at_risk", "lapsed", "cooling", "repeat", "lapsed", "at_risk"]  # c1..c6
AT = pd.Timestamp("2024-04-30 23:59:59")


def _value_report() -> dict:
    """``meta["value"]`` as training/value/train.py writes it, from the real lifecycle functions on a tiny shop:
    cohort 2024-01 is c1, c2, c4 (c1 and c4 come back in February); the at-risk segment (c1, c3, c6) has
    4 sessions with a view, 2 with a cart add, 1 with a purchase, the others 2, 1 and 1."""
    buys = [("c1", "2024-01-05"), ("c1", "2024-02-10"), ("c2", "2024-01-20"), ("c3", "2024-02-03"), ("c3", "2024-03-01"),
            ("c4", "2024-01-02"), ("c4", "2024-02-02"), ("c4", "2024-03-03"), ("c5", "2024-03-10"), ("c6", "2024-02-15")]
    orders = pd.DataFrame({"order_id": [f"o{i}" for i in range(len(buys))], "user_id": [u for u, _ in buys], "item_id": "i1",
                           "ts": pd.to_datetime([t for _, t in buys]), "quantity": 1.0, "price": 10.0})
    steps = [("s1", "c1", "view"), ("s1", "c1", "cart"), ("s1", "c1", "purchase"), ("s2", "c3", "view"), ("s2", "c3", "cart"),
             ("s3", "c6", "view"), ("s4", "c6", "view"), ("s5", "c2", "view"), ("s5", "c2", "purchase"), ("s6", "c4", "view")]
    events = pd.DataFrame({"session_id": [x[0] for x in steps], "user_id": [x[1] for x in steps],
                           "event_type": [x[2] for x in steps], "item_id": "i1", "ts": pd.Timestamp("2024-04-02")})
    segments = SCORES.set_index("user_id")["segment"]
    flows = lifecycle.transitions(orders, AT)
    matrix = lifecycle.transition_matrix(flows)
    return {"scored_at": str(AT), "horizon_days": 90,
            "stages": [{"name": r.name, "description": r.description} for r in lifecycle.DEFAULT_STAGES],
            "transition_matrix": {"rows": list(matrix.index), "columns": list(matrix.columns),
                                  "share": matrix.round(4).to_numpy().tolist()},
            "cohorts": lifecycle.cohorts(orders, AT).round(4).to_dict("records"),
            "funnel": lifecycle.funnel(events, AT, segments).to_dict("records")}


def valued_bundle() -> PropensityBundle:
    """SCORES with customer value (CLV = the expected spend, so the ranking is unchanged), stages and personas."""
    scores = SCORES.assign(clv_90d=SCORES["expected_spend"], p_buy_90d=0.5, stage=STAGES,
                           persona=[0 if s == "at_risk" else 1 for s in SCORES["segment"]],
                           persona_description=["lapsing" if s == "at_risk" else "frequent" for s in SCORES["segment"]])
    return PropensityBundle(scores, {"scored_at": "2024-12-31 00:00:00", "horizon_days": 90, "window_days": 30,
                                     "value": _value_report()})


def _api(hidden=None, bundle=None) -> PropensityApi:
    return PropensityApi(bundle or valued_bundle(), "3", hidden=hidden)


@pytest.fixture
def access(tmp_path) -> AccessControl:
    """Keys (the marketing and storefront test keys from the environment, and a store), sessions,
    throttling and the access log of one page, in ``tmp_path``."""
    return AccessControl.from_settings(Settings(
        keys_file=tmp_path / "keys.json", access_log=tmp_path / "access.jsonl", sessions_file=tmp_path / "sessions.json",
        api_key=KEY, storefront_key=STOREFRONT_KEY, admin_key=None, keys_refresh_s=0.05))


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # a browser's navigation


def call(backend: Backend, method: str, path: str, client=("127.0.0.1", 5000), scheme="http", **kw) -> httpx.Response:
    """One request to the page app in-process, mounted at /marketing as the service mounts it; as a browser asks
    (Accept: text/html) unless ``headers`` say otherwise."""
    app = create_app(lambda: backend)
    kw["headers"] = BROWSER | kw.get("headers", {})

    async def go():
        transport = httpx.ASGITransport(app=app, root_path="/marketing", client=client)
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://shop.test") as c:
            return await c.request(method, f"/marketing{path}", **kw)

    return anyio.run(go)


def ids_on(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('data-customer="')[1:]]


def download_link(html: str) -> str:
    """The CSV link of a page, relative to the mount point."""
    return unescape(html.split('id="download" href="', 1)[1].split('"', 1)[0]).removeprefix("/marketing")


def csrf_of(response: httpx.Response) -> str:
    """The CSRF token in a page's forms (and the cookie it must match)."""
    token = response.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert f"{CSRF_COOKIE}={token}" in response.headers.get("set-cookie", f"{CSRF_COOKIE}={token}")
    return token


def sign_in(backend, account=ACCOUNT, key=KEY, client=("127.0.0.1", 5000), scheme="http") -> httpx.Response:
    form = call(backend, "GET", "/login", client=client, scheme=scheme)
    token = csrf_of(form)
    return call(backend, "POST", "/login", client=client, scheme=scheme, data={"account": account, "key": key, "csrf": token},
                headers={"Cookie": f"{CSRF_COOKIE}={token}"})


def session_of(response: httpx.Response) -> str:
    cookie = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")][0]
    return cookie.split(";")[0].split("=", 1)[1]


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_a_browser_without_a_session_goes_to_the_sign_in_form(access):
    backend = Backend(_api(), access)
    for path in ("/", "/churn_risk.csv", "/?segment=at_risk"):
        r = call(backend, "GET", path, headers={"Cookie": f"{COOKIE}=forged"})
        assert r.status_code == 303 and r.headers["location"] == "/marketing/login" and "c2" not in r.text


def test_a_script_gets_json_errors_not_a_sign_in_form_or_html(access):
    """curl or requests (Accept: */*) on the CSV: 401 without a key, a named bad filter as JSON, not a page."""
    backend = Backend(_api(), access)
    script = {"Accept": "*/*"}
    r = call(backend, "GET", "/churn_risk.csv", headers=script)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/json") and "c2" not in r.text
    bad = call(backend, "GET", "/churn_risk.csv?segment=bogus", headers=script | AUTH)
    assert bad.status_code == 400 and "segment" in bad.json()["error"]
    wrong = call(backend, "GET", "/churn_risk.csv", headers=script | {"Authorization": f"Bearer {STOREFRONT_KEY}"})
    assert wrong.status_code == 403 and "marketing key" in wrong.json()["error"]
    assert call(backend, "GET", "/churn_risk.csv", headers=script | AUTH).text.startswith("rank,")
    form = call(backend, "GET", "/login")
    assert form.status_code == 200 and 'name="key"' in form.text and 'name="account"' in form.text
    assert 'name="csrf"' in form.text and "HttpOnly" in form.headers["set-cookie"]
    assert "samesite=strict" in form.headers["set-cookie"].lower()


@pytest.mark.parametrize("headers, status", [
    ({"X-API-Key": "wrong"}, 401), ({"X-API-Key": KEY + "x"}, 401), ({"Authorization": "Basic abc"}, 401),
    ({"Authorization": f"Bearer {STOREFRONT_KEY}"}, 403), ({"X-API-Key": STOREFRONT_KEY}, 403),
    ({"Authorization": f"Bearer {KEY}"}, 200), ({"X-API-Key": KEY}, 200),
])
def test_scripts_need_a_marketing_key(access, headers, status):
    for path in ("/", "/churn_risk.csv"):
        r = call(Backend(_api(), access), "GET", path, headers=headers)
        assert r.status_code == status
        assert ("c2" in r.text) == (status == 200)


def test_with_the_key_the_ranked_list_with_reasons_and_chart(access):
    r = call(Backend(_api(), access), "GET", "/", headers=AUTH)
    assert r.status_code == 200
    assert ids_on(r.text) == RANKED
    assert "6 customers match" in r.text and "no order for 120 days, usually every 30" in r.text
    assert '<svg' in r.text and 'data-segment="at_risk">3 / 3<' in r.text  # segment sizes, server-side
    # nothing loaded from elsewhere, and the browser is told so
    assert "http://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in r.text
    assert "<script" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    assert "form-action 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize("query, expected", [
    ("segment=at_risk", ["c6", "c1", "c3"]),
    ("min_probability=0.75", ["c2", "c1", "c5"]),
    ("min_value=100", ["c2", "c4", "c6"]),
    ("segment=at_risk&min_probability=0.65", ["c1", "c3"]),
    ("page=2&page_size=2", ["c6", "c1"]),
    ("segment=&min_probability=&min_value=", RANKED),  # an empty form field is the default
])
def test_filters_and_the_csv_is_what_is_on_screen(access, query, expected):
    backend = Backend(_api(), access)
    page = call(backend, "GET", f"/?{query}", headers=AUTH)
    assert ids_on(page.text) == expected
    download = call(backend, "GET", download_link(page.text), headers=AUTH)  # the page's own link
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["customer_id"] for r in rows] == expected


def test_bad_filters_say_which_field(access):
    backend = Backend(_api(), access)
    for query, field in (("min_probability=2", "min_probability"), ("segment=vip", "segment"), ("page=0", "page"),
                         ("min_value=lots", "min_value")):
        r = call(backend, "GET", f"/?{query}", headers=AUTH)
        assert r.status_code == 400 and field in r.text
    typo = call(backend, "GET", "/?min_prob=1", headers=AUTH)  # the CLI's --min-prob: it showed all 6 customers
    assert typo.status_code == 400 and "unknown filter min_prob: the filters are segment, stage" in typo.text
    assert call(backend, "GET", "/churn_risk.csv?min_prob=1", headers=AUTH).status_code == 400


def test_sign_in_makes_a_server_side_session_and_sign_out_ends_it(access):
    backend = Backend(_api(), access)
    for account, key in ((ACCOUNT, "wrong"), ("someone-else", KEY), ("SHOPREC_STOREFRONT_KEY", STOREFRONT_KEY)):
        r = sign_in(backend, account, key)
        assert r.status_code == 401 and "do not match" in r.text and f"{COOKIE}=" not in r.headers.get("set-cookie", "")
    r = sign_in(backend)
    assert r.status_code == 303 and r.headers["location"] == "/marketing/"
    cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}=")][0]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/marketing" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure (below)
    session = session_of(r)
    assert KEY not in session and KEY not in (access.sessions.path.read_text())  # the store holds hashes only
    page = call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session}"})
    assert ids_on(page.text) == RANKED
    assert call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session[:-1]}x"}).status_code == 303

    token = csrf_of(page)
    out = call(backend, "POST", "/logout", data={"csrf": token}, headers={"Cookie": f"{COOKIE}={session}; {CSRF_COOKIE}={token}"})
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
    # the old cookie, replayed after signing out, is refused: the server ended the session
    again = call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session}"})
    assert again.status_code == 303 and again.headers["location"] == "/marketing/login"


def test_over_tls_the_cookies_are_secure(access):
    r = sign_in(Backend(_api(), access), scheme="https")
    assert r.status_code == 303 and all("Secure" in c for c in r.headers.get_list("set-cookie"))


def test_every_form_needs_its_csrf_token(access):
    backend = Backend(_api(), access)
    session = session_of(sign_in(backend))
    token = csrf_of(call(backend, "GET", "/login"))
    cases = [({"account": ACCOUNT, "key": KEY}, {"Cookie": f"{CSRF_COOKIE}={token}"}),  # no field
             ({"account": ACCOUNT, "key": KEY, "csrf": token}, {}),  # no cookie
             ({"account": ACCOUNT, "key": KEY, "csrf": token + "x"}, {"Cookie": f"{CSRF_COOKIE}={token}"})]
    for data, headers in cases:
        r = call(backend, "POST", "/login", data=data, headers=headers)
        assert r.status_code == 403 and "reload the page" in r.text and f"{COOKIE}=" not in r.headers.get("set-cookie", "")
    r = call(backend, "POST", "/logout", headers={"Cookie": f"{COOKIE}={session}"})  # a forged sign-out
    assert r.status_code == 403
    assert ids_on(call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session}"}).text) == RANKED  # still signed in


def test_sign_in_is_throttled_per_account_and_per_address(access):
    backend = Backend(_api(), access)
    here, there, elsewhere = ("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)
    for _ in range(5):
        assert sign_in(backend, ACCOUNT, "wrong", client=here).status_code == 401
    sixth = sign_in(backend, ACCOUNT, "wrong", client=here)
    assert sixth.status_code == 429 and 0 < int(sixth.headers["retry-after"]) <= 15 * 60
    assert "Too many failed sign-ins" in sixth.text
    assert sign_in(backend, ACCOUNT, "wrong", client=there).status_code == 429  # the account, from anywhere
    assert sign_in(backend, "other-account", "wrong", client=here).status_code == 429  # the address, for any account
    assert sign_in(backend, "other-account", "wrong", client=elsewhere).status_code == 401  # others are not affected
    # whoever failed with the account's name, its owner's right key still signs in, from anywhere
    assert sign_in(backend, ACCOUNT, KEY, client=there).status_code == 303
    assert sign_in(backend, ACCOUNT, KEY, client=here).status_code == 303


def test_a_key_typed_as_the_account_name_never_reaches_the_log(access, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="shoprec"):
        assert sign_in(Backend(_api(), access), KEY, "wrong").status_code == 401
        assert sign_in(Backend(_api(), access), "x" * 70, "wrong").status_code == 401  # a name: cut to 64, shown
    assert KEY not in caplog.text and KEY[:20] not in caplog.text
    assert "failed sign-in for account '<not a key name>'" in caplog.text and "account '" + "x" * 64 + "'" in caplog.text


def test_revoking_a_key_ends_its_sessions(access):
    backend = Backend(_api(), access)
    record, key = KeyStore(access.keys.store.path).create("marketing", "campaigns")
    time.sleep(0.1)  # the key ring re-reads the store every 0.05 s here (2 s by default)
    session = session_of(sign_in(backend, "campaigns", key))
    assert ids_on(call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session}"}).text) == RANKED
    KeyStore(access.keys.store.path).revoke("campaigns")
    time.sleep(0.1)
    assert call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={session}"}).status_code == 303


def test_views_and_downloads_are_in_the_access_log(access):
    backend = Backend(_api(), access)
    call(backend, "GET", "/?segment=at_risk", headers=AUTH)
    call(backend, "GET", "/churn_risk.csv?page_size=25", headers=AUTH)
    call(backend, "GET", "/", headers={"X-API-Key": "wrong"})
    entries = [json.loads(line) for line in access.log.path.read_text().splitlines()]
    assert [(e["key"], e["endpoint"], e["customers"]) for e in entries] == [
        (ACCOUNT, "/marketing/", 3), (ACCOUNT, "/marketing/churn_risk.csv", 6)]
    assert KEY not in access.log.path.read_text()


def test_without_scores_the_page_says_why(access):
    r = call(Backend(PropensityApi(None, "", "no propensity bundle: run `shoprec publish`"), access), "GET", "/",
             headers=AUTH)
    assert r.status_code == 503 and "shoprec publish" in r.text


def test_forgotten_shoppers_leave_the_page_and_the_chart(access):
    backend = Backend(_api(hidden=lambda ids: [i == "c6" for i in ids]), access)
    r = call(backend, "GET", "/?segment=at_risk", headers=AUTH)
    assert ids_on(r.text) == ["c1", "c3"] and 'data-segment="at_risk">2 / 2<' in r.text
    assert "c6" not in call(backend, "GET", "/churn_risk.csv", headers=AUTH).text


def test_filters_nobody_passes_give_an_empty_list_and_pages_beyond_the_end_lead_back(access):
    """A realistic filter (£5,000 at risk, probability 0.99) left nobody and crashed the page (500) while forgotten
    shoppers were being left out; a page beyond the end led to the page before it, also empty."""
    backend = Backend(_api(hidden=lambda ids: [i == "c6" for i in ids]), access)
    for query in ("min_value=99999999", "min_probability=1", "segment=at_risk&min_probability=0.99"):
        r = call(backend, "GET", f"/?{query}", headers=AUTH)
        assert r.status_code == 200 and "0 customers match" in r.text and "No customer matches these filters." in r.text
        assert ids_on(r.text) == [] and 'id="download"' not in r.text and '<svg' in r.text
    far = call(backend, "GET", "/?page=99&page_size=2", headers=AUTH)
    assert far.status_code == 200 and "No rows on this page: the list has 5 customers on 3 pages." in far.text
    assert 'href="/marketing/?page=3&amp;page_size=2" id="prev"' in far.text
    bad = call(backend, "GET", "/?min_probability=2", headers=AUTH)
    assert bad.status_code == 400 and "<a href='/marketing/' id='back'>Back to the list</a>" in bad.text


def test_no_record_no_page(access, tmp_path):
    (tmp_path / "access.jsonl").mkdir()  # the access log cannot be written
    for path in ("/", "/churn_risk.csv"):
        r = call(Backend(_api(), access), "GET", path, headers=AUTH)
        assert r.status_code == 503 and ids_on(r.text) == [] and "c1" not in r.text, path


def test_the_segment_chart_follows_the_stage_filter(access):
    r = call(Backend(_api(), access), "GET", "/?stage=at_risk", headers=AUTH)
    assert ids_on(r.text) == ["c6", "c1"] and 'data-segment="at_risk">2 / 3<' in r.text


def test_the_list_shows_clv_and_stage_and_filters_by_stage(access):
    backend = Backend(_api(), access)
    page = call(backend, "GET", "/?stage=at_risk", headers=AUTH)
    assert ids_on(page.text) == ["c6", "c1"] and 'id="stage"' in page.text
    rows = list(csv.DictReader(io.StringIO(call(backend, "GET", download_link(page.text), headers=AUTH).text)))
    assert [(r["customer_id"], r["clv_90d"], r["lifecycle_stage"]) for r in rows] == [("c6", "200.0", "at_risk"),
                                                                                     ("c1", "100.0", "at_risk")]
    assert ids_on(call(backend, "GET", "/?stage=lapsed&min_probability=0.9", headers=AUTH).text) == ["c5"]
    bad = call(backend, "GET", "/?stage=vip", headers=AUTH)
    assert bad.status_code == 400 and "unknown lifecycle stage" in bad.text and "lapsed" in bad.text
    old = Backend(_api(bundle=PropensityBundle(SCORES.copy(), {"horizon_days": 90, "window_days": 30})), access)
    page = call(old, "GET", "/", headers=AUTH)  # a bundle trained before customer value: no stage filter, empty cells
    assert ids_on(page.text) == RANKED and 'id="stage"' not in page.text
    assert call(old, "GET", "/?stage=lapsed", headers=AUTH).status_code == 400


def clv_groups_on(html: str) -> dict[str, tuple[int, float]]:
    """The CLV chart's groups: name -> (customers, mean)."""
    out = {}
    for part in html.split('class="clv-group" data-group="')[1:]:
        name, rest = part.split('"', 1)
        customers = int(rest.split('data-customers="', 1)[1].split('"', 1)[0])
        out[unescape(name)] = (customers, float(rest.split('data-mean="', 1)[1].split('"', 1)[0]))
    return out


def funnel_on(html: str) -> dict[str, int]:
    return {p.split('"', 1)[0]: int(p.split('data-sessions="', 1)[1].split('"', 1)[0])
            for p in html.split('class="funnel-step" data-step="')[1:]}


def test_dashboard_cohorts_funnel_flows_and_clv(access):
    backend = Backend(_api(), access)
    r = call(backend, "GET", "/dashboard", headers=AUTH)
    assert r.status_code == 200 and "<script" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    for chart in ("cohort-heatmap", "funnel", "transitions", "clv-chart"):
        assert f'id="{chart}"' in r.text
    assert 'data-cohort="2024-01" data-age="1" data-retention="0.6667"' in r.text  # c1 and c4 of c1, c2, c4
    assert r.text.count('class="flow-cell"') == 8 * 7  # not_yet_customer + 7 stages, to 7 stages
    assert funnel_on(r.text) == {"view": 6, "cart": 3, "purchase": 2}
    assert clv_groups_on(r.text) == {"champions": (1, 1000.0), "cant_lose": (1, 500.0), "at_risk": (3, 116.67),
                                     "hibernating": (1, 10.0)}
    r = call(backend, "GET", "/dashboard?segment=at_risk&clv_by=stage", headers=AUTH)
    assert funnel_on(r.text) == {"view": 4, "cart": 2, "purchase": 1} and "(50.0% drop-off)" in r.text
    assert clv_groups_on(r.text) == {"at_risk": (2, 150.0), "cooling": (1, 50.0)}
    r = call(backend, "GET", "/dashboard?clv_by=persona", headers=AUTH)
    assert set(clv_groups_on(r.text)) == {"0: lapsing", "1: frequent"}
    for query in ("segment=vip", "clv_by=colour"):
        bad = call(backend, "GET", f"/dashboard?{query}", headers=AUTH)
        assert bad.status_code == 400 and query.split("=")[0] in bad.text


def test_dashboard_needs_a_marketing_sign_in_and_customer_value(access):
    backend = Backend(_api(hidden=lambda ids: [i == "c6" for i in ids]), access)
    r = call(backend, "GET", "/dashboard")
    assert r.status_code == 303 and r.headers["location"] == "/marketing/login"
    assert call(backend, "GET", "/dashboard", headers={"Authorization": f"Bearer {STOREFRONT_KEY}"}).status_code == 403
    r = call(backend, "GET", "/dashboard?segment=at_risk", headers=AUTH)
    assert clv_groups_on(r.text) == {"at_risk": (2, 75.0)}  # the forgotten c6 leaves the CLV chart
    entries = [json.loads(line) for line in access.log.path.read_text().splitlines()]
    assert [(e["endpoint"], e["customers"]) for e in entries] == [("/marketing/dashboard", 0)]
    old = Backend(_api(bundle=PropensityBundle(SCORES.copy(), {"horizon_days": 90, "window_days": 30})), access)
    r = call(old, "GET", "/dashboard", headers=AUTH)
    assert r.status_code == 503 and "no customer value" in r.text


# --- the real server in a real browser ---------------------------------------------------------------------------


def start_server(home_dir, propensity_dir, bundle_dir):
    publish_test_bundle(home_dir, bundle_dir)
    valued_bundle().save(propensity_dir)
    code = ("import sys; from pathlib import Path; from training.propensity.publish import store_propensity_bundle; "
            "store_propensity_bundle(Path(sys.argv[1]), {'registry_version': '3'})")
    subprocess.run([sys.executable, "-c", code, str(propensity_dir)], cwd=REPO, env=dict(os.environ, BENTOML_HOME=str(home_dir)),
                   check=True)
    return bentoml_server(home_dir, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{home_dir}/events.db"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    with start_server(home, tmp_path_factory.mktemp("propensity"), tmp_path_factory.mktemp("bundle")) as url:
        yield url
    logs = "".join(p.read_text() for p in home.glob("serve-*.log"))
    assert KEY not in logs, "the API key must never be logged"


def launch_chromium(playwright):
    """Debian's chromium (apt-get install -y chromium); Playwright never downloads a browser here."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (`apt-get install -y chromium`, "
                    "or `make system-deps` as root)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install playwright (no `playwright install` needed)")
    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def screen_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#customers tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def same_as_screen(csv_rows: list[dict], screen: list[list[str]]) -> None:
    """Every CSV row is the row on screen: ids, ranks, segments and reasons exactly; numbers as displayed."""
    assert len(csv_rows) == len(screen)
    for row, cells in zip(csv_rows, screen):
        rank, customer, p_churn, var, spend, p_buy, segment, stage, days, orders, total, why = cells
        money = lambda s: float(s.replace(",", ""))  # noqa: E731
        assert (row["rank"], row["customer_id"], row["segment"]) == (rank, customer, segment)
        assert f"{float(row['churn_probability_90d']):.1%}" == p_churn
        assert f"{float(row['purchase_probability_30d']):.1%}" == p_buy
        assert float(row["value_at_risk_90d"]) == money(var) and float(row["expected_spend_90d"]) == money(spend)
        assert float(row["clv_90d"]) == money(spend) and row["lifecycle_stage"].replace("_", " ") == stage
        assert float(row["total_spend"]) == money(total) and int(row["orders"]) == money(orders)
        assert round(float(row["days_since_last_order"])) == money(days)
        assert row["reasons"] == "; ".join(line.strip() for line in why.splitlines() if line.strip())


def browser_sign_in(page, server, account=ACCOUNT, key=KEY):
    page.goto(f"{server}/marketing/")
    page.wait_for_url("**/marketing/login")  # not signed in: sent to the form
    page.fill("input[name=account]", account)
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")


def test_in_a_browser_sign_in_filter_download_and_sign_out(server, browser, tmp_path):
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(60_000)  # a shared 2-core machine under load
    page = context.new_page()
    browser_sign_in(page, server)
    page.wait_for_selector("#customers")
    assert [r[1] for r in screen_rows(page)] == RANKED  # the table loads
    assert page.inner_text("#total") == "6 customers match"
    assert page.locator("#segment-chart rect").count() == 20  # two bars per segment
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies[COOKIE]["httpOnly"] and cookies[COOKIE]["sameSite"] == "Strict" and KEY not in cookies[COOKIE]["value"]
    assert cookies[CSRF_COOKIE]["httpOnly"] and cookies[CSRF_COOKIE]["sameSite"] == "Strict"

    page.select_option("#segment", "at_risk")
    page.fill("#min_probability", "0.65")
    page.click("#apply")
    page.wait_for_url("**segment=at_risk**")
    screen = screen_rows(page)
    assert [r[1] for r in screen] == ["c1", "c3"]  # a filter changes it
    assert page.text_content("[data-segment=at_risk]") == "2 / 3"

    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "download.csv"
    info.value.save_as(saved)
    with open(saved, newline="") as f:
        same_as_screen(list(csv.DictReader(f)), screen)  # the download is what is on screen

    # a form POST without the CSRF token (the browser's own cookies, signed in): refused
    forged = context.request.post(f"{server}/marketing/logout", form={"nothing": "here"}, max_redirects=0)
    assert forged.status == 403
    page.reload()
    page.wait_for_selector("#customers")  # still signed in

    session = cookies[COOKIE]["value"]
    page.click("text=Sign out")
    page.wait_for_selector("input[name=key]")
    context.close()

    # the session cookie replayed after signing out, in a fresh browser: sent to the sign-in form
    replay = browser.new_context()
    replay.add_cookies([{"name": COOKIE, "value": session, "url": f"{server}/marketing/"}])
    page = replay.new_page()
    page.goto(f"{server}/marketing/")
    assert page.url.endswith("/marketing/login") and page.locator("input[name=key]").count() == 1
    assert page.locator("#customers").count() == 0
    replay.close()


def test_in_a_browser_the_dashboard_draws_its_figures_and_filters(server, browser):
    context = browser.new_context()
    context.set_default_timeout(60_000)
    page = context.new_page()
    blocked = []  # anything the Content-Security-Policy refused
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    browser_sign_in(page, server)
    page.wait_for_selector("#customers")
    page.select_option("#stage", "at_risk")  # the list's stage filter
    page.click("#apply")
    page.wait_for_url("**stage=at_risk**")
    assert [r[1] for r in screen_rows(page)] == ["c6", "c1"] and {r[7] for r in screen_rows(page)} == {"at risk"}
    page.click("#to-dashboard")
    page.wait_for_selector("#clv-chart")
    for chart, mark in (("#cohort-heatmap", "rect"), ("#funnel", "rect"), ("#transitions", "rect"), ("#clv-chart", "rect")):
        box = page.locator(chart).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, chart  # drawn, not an empty element
        drawn = page.eval_on_selector_all(f"{chart} {mark}", "els => els.filter(e => e.getBBox().width > 0).length")
        assert drawn > 0, chart
    assert page.locator("#transitions .flow-cell").count() == 56 and page.locator("#funnel .funnel-step").count() == 3
    groups = lambda: page.eval_on_selector_all("#clv-chart .clv-group", "gs => gs.map(g => g.dataset.group)")  # noqa: E731
    assert groups() == ["champions", "cant_lose", "at_risk", "hibernating"]  # highest mean CLV first

    page.select_option("#segment", "at_risk")
    page.select_option("#clv_by", "persona")
    page.click("#apply")
    page.wait_for_url("**clv_by=persona**")
    assert groups() == ["0: lapsing"]  # a filter changes the figures
    assert page.get_attribute("#funnel [data-step=view]", "data-sessions") == "4"
    assert page.get_attribute("#funnel [data-step=purchase]", "data-sessions") == "1"
    assert blocked == [] and page.locator("script").count() == 0
    context.close()


def test_in_a_browser_the_sixth_wrong_key_in_15_minutes_is_429(tmp_path_factory, browser):
    """Its own server: the throttle counts this address (127.0.0.1) and would lock the other browser tests out."""
    home = tmp_path_factory.mktemp("throttle_home")
    with start_server(home, tmp_path_factory.mktemp("propensity"), tmp_path_factory.mktemp("bundle")) as url:
        context = browser.new_context()
        context.set_default_timeout(60_000)
        page = context.new_page()
        statuses = []
        page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/marketing/login") and
                r.request.method == "POST" else None)
        for attempt in range(6):
            browser_sign_in(page, url, key=f"wrong-{attempt}")
            page.wait_for_selector("p.error")
        assert statuses == [401] * 5 + [429]
        assert "Too many failed sign-ins" in page.inner_text("p.error")
        browser_sign_in(page, url)  # the right key, now: its owner is not locked out by the failures
        page.wait_for_selector("#customers")
        assert statuses[-1] == 303
        context.close()


def test_the_page_needs_a_marketing_key_on_the_real_server(server):
    r = httpx.get(f"{server}/marketing/", headers=BROWSER, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/marketing/login" and "c2" not in r.text
    script = httpx.get(f"{server}/marketing/churn_risk.csv", timeout=30)  # curl's Accept: */*
    assert script.status_code == 401 and "Authorization: Bearer" in script.json()["error"]
    assert httpx.get(f"{server}/marketing/", headers={"Authorization": f"Bearer {STOREFRONT_KEY}"}, timeout=30).status_code == 403
    r = httpx.get(f"{server}/marketing/churn_risk.csv?min_value=100", headers=AUTH, timeout=30)
    assert r.status_code == 200 and [row["customer_id"] for row in csv.DictReader(io.StringIO(r.text))] == ["c2", "c4", "c6"]
