"""The experiments panel of the marketers' page, in-process: marketing scope, SRM first, the decision."""
import json
import re

import anyio
import pandas as pd
import httpx
import pytest

from features.experiments import Experiment, parse_variants
from features.exposures import open_experiment_log
from features.settings import Settings
from serving.auth import AccessControl
from serving.marketing_page import Backend, create_app
from serving.propensity import PropensityApi
from training.experiments.simulate import traffic

KEY, STOREFRONT_KEY = "marketing-key-for-page-tests-0123456789", "storefront-key-for-page-tests-0123456789"


@pytest.fixture(scope="module")
def log_store(tmp_path_factory):
    store = open_experiment_log(f"sqlite:///{tmp_path_factory.mktemp('events')}/events.db")
    fair = Experiment(name="fair", variants=parse_variants(["control=champion", "treatment=trending"]), salt="fair",
                      created_at="2026-01-02T00:00:00+00:00")
    store.put_experiment(fair, new=True)
    exposures, outcomes = traffic(fair, users=3000, days=7, lift=0.3, seed=4)
    store.add_outcomes(outcomes)
    store.add_exposures(exposures)
    # a broken split: the configured 50/50, but the treatment's exposures of a third of its shoppers were lost
    broken = Experiment(name="broken", variants=parse_variants(["control=champion", "treatment=popular"]), salt="broken",
                        created_at="2026-01-01T00:00:00+00:00", status="stopped", stopped_at="2099-01-01T00:00:00+00:00")
    store.put_experiment(broken, new=True)
    exposures, outcomes = traffic(broken, users=3000, days=7, lift=0.0, seed=5)
    lost = {e.unit_id for e in exposures if e.variant == "treatment" and hash(e.unit_id) % 3 == 0}
    store.add_exposures([e for e in exposures if e.unit_id not in lost])
    store.add_outcomes(outcomes)
    yield store
    store.close()


@pytest.fixture
def access(tmp_path) -> AccessControl:
    return AccessControl.from_settings(Settings(
        keys_file=tmp_path / "keys.json", access_log=tmp_path / "access.jsonl", sessions_file=tmp_path / "sessions.json",
        api_key=KEY, storefront_key=STOREFRONT_KEY, admin_key=None, keys_refresh_s=0.05))


def call(access, log_store, path, headers) -> httpx.Response:
    backend = Backend(PropensityApi(None, "", "no propensity bundle"), access)  # the panel needs no scores
    app = create_app(lambda: backend, experiment_log=lambda: log_store)

    async def go():
        transport = httpx.ASGITransport(app=app, root_path="/marketing", client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            return await c.get(f"/marketing{path}", headers=headers)

    return anyio.run(go)


def test_the_panel_needs_a_marketing_key(access, log_store):
    assert call(access, log_store, "/experiments", {"Authorization": f"Bearer {STOREFRONT_KEY}"}).status_code == 403
    assert call(access, log_store, "/experiments", {"Authorization": "Bearer wrong"}).status_code == 401


def test_the_panel_shows_srm_first_the_variants_and_the_decision(access, log_store, tmp_path):
    r = call(access, log_store, "/experiments", {"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "script" not in r.text.lower()
    html = r.text
    fair, broken = html.index("id='experiment-fair'"), html.index("id='experiment-broken'")
    assert fair < broken  # running experiments first
    section = html[fair:broken]
    assert section.index("Sample ratio check") < section.index("<table class='variants'")  # SRM before any result
    assert "(ok)" in section and "trending" in section and "Decision: ship" in section  # a 30% lift in 3,000 shoppers
    # 7 days of traffic up to today, read now, of the planned 14: the group-sequential test's 8th daily look
    # (7 full days and today's), at 50-57% of its horizon (by the clock)
    assert re.search(r"Sequential test: group-sequential \(O&#x27;Brien-Fleming spending\), look [78] at 5[0-7]% of the "
                     r"horizon: \|z\| &gt;= (2\.[7-9]|3\.[01])", section)
    assert "mismatch: the split is broken" in html[broken:] and "Decision: invalid" in html[broken:]
    log = [json.loads(line) for line in (tmp_path / "access.jsonl").read_text().splitlines()]
    assert log[-1]["endpoint"] == "/marketing/experiments" and log[-1]["customers"] == 0


def test_a_stopped_experiments_report_is_kept_until_the_rows_it_read_change(tmp_path, monkeypatch):
    """The page builds a stopped experiment's report again only when what it reads changes (its exposures, the
    outcomes from its pre-period to the end of its attribution window); a running one on every load, from the
    rows kept since the last one."""
    import training.experiments.report as report_module
    from features.exposures import Outcome
    from serving.experiments_page import Reports

    store = open_experiment_log(f"sqlite:///{tmp_path}/events.db")
    start = 1_760_000_000.0  # 2025-10-09
    live = Experiment(name="live", variants=parse_variants(["control=champion", "treatment=trending"]), salt="live",
                      created_at="2025-10-09T00:00:00+00:00")
    done = Experiment(name="done", variants=parse_variants(["control=champion", "treatment=popular"]), salt="done",
                      created_at="2025-10-08T00:00:00+00:00", status="stopped", stopped_at="2025-10-16T00:00:00+00:00")
    for exp, seed in ((live, 1), (done, 2)):
        store.put_experiment(exp, new=True)
        exposures, outcomes = traffic(exp, users=400, days=7, lift=0.0, seed=seed, start=start)
        store.add_exposures(exposures)
        store.add_outcomes(outcomes)
    builds, kept_rows = [], []
    build = report_module.build_report

    def counted(e, s, **kw):
        builds.append(e.name)
        kept_rows.append((e.name, kw.get("rows")))
        return build(e, s, **kw)

    monkeypatch.setattr(report_module, "build_report", counted)
    reports = Reports()

    def load() -> dict:
        builds.clear()
        return {r["experiment"]: r for r in reports(store)}

    first = load()
    assert sorted(builds) == ["done", "live"]
    assert load()["done"] is first["done"] and builds == ["live"]
    stop = pd.Timestamp(done.stopped_at).timestamp()
    store.add_outcomes([Outcome(None, "sim-2-000001", "purchase", "i1", 5.0, stop + 30 * 86_400.0)])  # after its window
    assert load()["done"] is first["done"] and builds == ["live"]
    buyer = store.exposures("done")["user_id"].iloc[0]
    revenue = sum(v["revenue_per_user"] * v["units"] for v in first["done"]["variants"])
    store.add_outcomes([Outcome(None, buyer, "purchase", "i1", 1000.0, stop - 3600.0)])  # inside it: counted
    again = load()
    assert builds == ["live", "done"]
    assert sum(v["revenue_per_user"] * v["units"] for v in again["done"]["variants"]) == pytest.approx(revenue + 1000.0)
    assert load()["done"] is again["done"]
    store.forget(buyer)  # a forgotten shopper leaves the report at once
    load()
    assert builds == ["live", "done"]
    # the running one from the rows kept between loads (only the new ones read each time), the stopped one from the log
    live_rows = {id(rows) for name, rows in kept_rows if name == "live"}
    assert len(live_rows) == 1 and None not in {rows for name, rows in kept_rows if name == "live"}
    assert {rows for name, rows in kept_rows if name == "done"} == {None}
    store.close()

