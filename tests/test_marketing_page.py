"""The marketers' page: in-process checks of the key, the cookie, filters and the CSV, then the
real BentoML server driven by headless Debian Chromium (Playwright, no browser download)."""
import csv
import io
import shutil
import time
from html import unescape

import anyio
import httpx
import pytest

from serving.marketing_page import COOKIE, SESSION_SECONDS, Backend, create_app, session_token, session_valid
from serving.propensity import KEY_ENV, PropensityApi
from tests.server import bentoml_server
from tests.test_propensity_service import KEY, SCORES, _store
from tests.test_service import publish_test_bundle
from training.propensity.bundle import PropensityBundle

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RANKED = ["c2", "c4", "c6", "c1", "c3", "c5"]  # by value at risk (see SCORES)


def _api(hidden=None) -> PropensityApi:
    bundle = PropensityBundle(SCORES.copy(), {"scored_at": "2024-12-31 00:00:00", "horizon_days": 90, "window_days": 30})
    return PropensityApi(bundle, "3", hidden=hidden)


def call(backend: Backend, method: str, path: str, **kw) -> httpx.Response:
    """One request to the page app in-process, mounted at /marketing as the service mounts it."""
    app = create_app(lambda: backend)

    async def go():
        transport = httpx.ASGITransport(app=app, root_path="/marketing")
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            return await client.request(method, f"/marketing{path}", **kw)

    return anyio.run(go)


def ids_on(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('data-customer="')[1:]]


def download_link(html: str) -> str:
    """The CSV link of a page, relative to the mount point."""
    return unescape(html.split('id="download" href="', 1)[1].split('"', 1)[0]).removeprefix("/marketing")


AUTH = {"X-API-Key": KEY}


def test_without_the_key_the_page_is_the_sign_in_form():
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"Cookie": f"{COOKIE}=forged"}):
        r = call(Backend(_api(), KEY.encode()), "GET", "/", headers=headers)
        assert r.status_code == 401 and 'name="key"' in r.text and "c2" not in r.text
    r = call(Backend(_api(), KEY.encode()), "GET", "/churn_risk.csv")
    assert r.status_code == 401 and "customer_id" not in r.text


def test_with_the_key_the_ranked_list_with_reasons_and_chart():
    r = call(Backend(_api(), KEY.encode()), "GET", "/", headers=AUTH)
    assert r.status_code == 200
    assert ids_on(r.text) == RANKED
    assert "6 customers match" in r.text and "no order for 120 days, usually every 30" in r.text
    assert '<svg' in r.text and 'data-segment="at_risk">3 / 3<' in r.text  # segment sizes, server-side
    # nothing loaded from elsewhere, and the browser is told so
    assert "http://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in r.text
    assert "<script" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("query, expected", [
    ("segment=at_risk", ["c6", "c1", "c3"]),
    ("min_probability=0.75", ["c2", "c1", "c5"]),
    ("min_value=100", ["c2", "c4", "c6"]),
    ("segment=at_risk&min_probability=0.65", ["c1", "c3"]),
    ("page=2&page_size=2", ["c6", "c1"]),
    ("segment=&min_probability=&min_value=", RANKED),  # an empty form field is the default
])
def test_filters_and_the_csv_is_what_is_on_screen(query, expected):
    backend = Backend(_api(), KEY.encode())
    page = call(backend, "GET", f"/?{query}", headers=AUTH)
    assert ids_on(page.text) == expected
    download = call(backend, "GET", download_link(page.text), headers=AUTH)  # the page's own link
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["customer_id"] for r in rows] == expected


def test_bad_filters_say_which_field():
    backend = Backend(_api(), KEY.encode())
    for query, field in (("min_probability=2", "min_probability"), ("segment=vip", "segment"), ("page=0", "page"),
                         ("min_value=lots", "min_value")):
        r = call(backend, "GET", f"/?{query}", headers=AUTH)
        assert r.status_code == 400 and field in r.text


def test_login_sets_an_httponly_cookie_that_is_not_the_key():
    backend = Backend(_api(), KEY.encode())
    r = call(backend, "POST", "/login", data={"key": "wrong"})
    assert r.status_code == 401 and "not the API key" in r.text and "set-cookie" not in r.headers
    r = call(backend, "POST", "/login", data={"key": KEY})
    assert r.status_code == 303 and r.headers["location"] == "/marketing/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/marketing" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert KEY not in token
    assert ids_on(call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={token}"}).text) == RANKED
    # a token made with another key, or too old, or altered, is refused
    now = int(time.time())
    for bad in (session_token(b"other", now), session_token(KEY.encode(), now - SESSION_SECONDS - 5), token[:-1] + "0",
                f"{now}.", "x.y"):
        assert call(backend, "GET", "/", headers={"Cookie": f"{COOKIE}={bad}"}).status_code == 401
    assert session_valid(KEY.encode(), token, time.time()) and not session_valid(None, token, time.time())
    out = call(backend, "POST", "/logout")
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


def test_without_a_key_or_scores_the_page_says_why():
    r = call(Backend(_api(), None), "GET", "/", headers=AUTH)
    assert r.status_code == 503 and "SHOPREC_API_KEY" in r.text
    assert call(Backend(_api(), None), "POST", "/login", data={"key": ""}).status_code == 503
    r = call(Backend(PropensityApi(None, "", "no propensity bundle: run `shoprec publish`"), KEY.encode()), "GET", "/",
             headers=AUTH)
    assert r.status_code == 503 and "shoprec publish" in r.text


def test_forgotten_shoppers_leave_the_page_and_the_chart():
    backend = Backend(_api(hidden=lambda ids: [i == "c6" for i in ids]), KEY.encode())
    r = call(backend, "GET", "/?segment=at_risk", headers=AUTH)
    assert ids_on(r.text) == ["c1", "c3"] and 'data-segment="at_risk">2 / 2<' in r.text
    assert "c6" not in call(backend, "GET", "/churn_risk.csv", headers=AUTH).text


# --- the real server in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    publish_test_bundle(home, tmp_path_factory.mktemp("bundle"))
    _store(home, tmp_path_factory.mktemp("propensity"))
    with bentoml_server(home, extra_env={"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", KEY_ENV: KEY}) as url:
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
        rank, customer, p_churn, var, spend, p_buy, segment, days, orders, total, why = cells
        money = lambda s: float(s.replace(",", ""))  # noqa: E731
        assert (row["rank"], row["customer_id"], row["segment"]) == (rank, customer, segment)
        assert f"{float(row['churn_probability_90d']):.1%}" == p_churn
        assert f"{float(row['purchase_probability_30d']):.1%}" == p_buy
        assert float(row["value_at_risk_90d"]) == money(var) and float(row["expected_spend_90d"]) == money(spend)
        assert float(row["total_spend"]) == money(total) and int(row["orders"]) == money(orders)
        assert round(float(row["days_since_last_order"])) == money(days)
        assert row["reasons"] == "; ".join(line.strip() for line in why.splitlines() if line.strip())


def test_in_a_browser_sign_in_filter_and_download(server, browser, tmp_path):
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(60_000)  # a shared 2-core machine under load
    page = context.new_page()
    page.goto(f"{server}/marketing/")
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("#customers")
    assert [r[1] for r in screen_rows(page)] == RANKED  # the table loads
    assert page.inner_text("#total") == "6 customers match"
    assert page.locator("#segment-chart rect").count() == 20  # two bars per segment
    (cookie,) = [c for c in context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] and KEY not in cookie["value"]

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

    page.click("text=Sign out")
    page.wait_for_selector("input[name=key]")
    context.close()


def test_the_page_needs_the_key_on_the_real_server(server):
    r = httpx.get(f"{server}/marketing/", timeout=30)
    assert r.status_code == 401 and "c2" not in r.text
    r = httpx.get(f"{server}/marketing/churn_risk.csv?min_value=100", headers=AUTH, timeout=30)
    assert r.status_code == 200 and [row["customer_id"] for row in csv.DictReader(io.StringIO(r.text))] == ["c2", "c4", "c6"]
