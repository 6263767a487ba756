"""Schemathesis (its command line, every phase: examples, coverage, fuzzing, stateful) against the real
server's /docs.json on 127.0.0.1.

With a valid key per operation (storefront, marketing, admin): at least SHOPREC_FUZZ_REQUESTS requests
(default 1000), valid and invalid, including other content types; no answer is a 5xx, breaks the
documented schema, status codes or headers, and invalid requests are refused with a 4xx. Without keys:
every protected operation answers 401, whatever was sent. Each run is recorded as a HAR file
(every request and answer), which the assertions read.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from serving.auth import ROUTE_SCOPES
from tests.server import ADMIN_KEY, MARKETING_KEY, REPO, STOREFRONT_KEY, bentoml_server
from tests.test_admin import store

REQUESTS = int(os.environ.get("SHOPREC_FUZZ_REQUESTS", "1000"))
EXAMPLES = max(10, REQUESTS // 20)  # per operation and phase; 50 gave ~1,250 requests over the 14 operations
KEYS = {"storefront": STOREFRONT_KEY, "marketing": MARKETING_KEY, "admin": ADMIN_KEY}
# schema-valid requests that the service refuses on purpose are not failures: a price range upside down,
# events in the future or of items it does not sell (rules beyond the schema)
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import pandas as pd

    from features.lifecycle import DEFAULT_STAGES
    from tests.test_propensity_service import SCORES
    from tests.test_storefront import make_bundle
    from training.propensity.bundle import PropensityBundle
    from training.value.train import ValueResult, with_value

    home = tmp_path_factory.mktemp("fuzz_home")
    make_bundle({"trained_at": "2024-01-01T00:00:00Z"}).save(home / "bundle")
    store(home, (home / "bundle", "1"))
    propensity = PropensityBundle(SCORES, {"scored_at": "2024-12-31", "horizon_days": 90})
    # with customer value, as `shoprec train` publishes it: /customer_value and the stage filter answer for real
    value = pd.DataFrame({"clv_90d": [120.0, 900.0, 40.0, 1500.0, 0.0, 260.0],
                          "p_buy_90d": [0.3, 0.5, 0.2, 0.95, 0.01, 0.4],
                          "stage": ["at_risk", "lapsed", "cooling", "repeat", "lapsed", "at_risk"],
                          "persona": [0, 1, 0, 2, 1, 0],
                          "persona_description": ["occasional", "big spenders, gone quiet", "occasional", "loyal",
                                                  "big spenders, gone quiet", "occasional"]},
                         index=pd.Index(SCORES["user_id"], name="user_id"))
    stages = [{"name": s.name, "description": s.description} for s in DEFAULT_STAGES]
    with_value(propensity, ValueResult({}, value, {}, {"horizon_days": 90, "stages": stages}, None), 90)
    propensity.save(home / "propensity")
    code = ("import sys; from pathlib import Path; from training.propensity.publish import store_propensity_bundle; "
            "store_propensity_bundle(Path(sys.argv[1]), {'registry_version': '1'})")
    subprocess.run([sys.executable, "-c", code, str(home / "propensity")], cwd=REPO, check=True,
                   env=dict(os.environ, BENTOML_HOME=str(home)))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_CANONICAL_DIR": str(home / "canonical"),
           "SHOPREC_PRIVACY_DIR": str(home / "privacy"), "SHOPREC_RATE_EVENTS_PER_SHOPPER": "100000/minute"}
    with bentoml_server(home, timeout=90, extra_env=env) as url:
        yield url, home
    logs = "".join(p.read_text() for p in Path(home).glob("serve-*.log"))
    assert not [key for key in KEYS.values() if key in logs], "a key was logged"
    assert "Traceback" not in logs, "a request was logged with a traceback"


def schemathesis(url: str, out: Path, with_keys: bool, extra: list[str]) -> tuple[subprocess.CompletedProcess, list]:
    """Run ``schemathesis run`` on the server's /docs.json; (the process, the HAR entries)."""
    config = out / "schemathesis.toml"
    sections = []
    if with_keys:
        for scope, key in KEYS.items():
            paths = "|".join(p.strip("/") for p, s in ROUTE_SCOPES.items() if s == scope)
            sections.append(f'[[operations]]\ninclude-path-regex = "^/({paths})$"\n'
                            f'headers = {{ Authorization = "Bearer {key}" }}\n')
    config.write_text("\n".join(sections) or "# no keys\n")
    har = out / "run.har"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/docs.json",
           "--phases", "examples,coverage,fuzzing,stateful", "--seed", "1", "--workers", "1",
           "--report", "har", "--report-har-path", str(har), "--request-timeout", "30", *extra]
    done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, NO_COLOR="1"))
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    return done, entries


def _path(entry) -> str:
    return "/" + entry["request"]["url"].split("/", 3)[3].split("?", 1)[0]


def test_with_valid_keys_no_server_error_and_no_check_fails(server, tmp_path):
    url, home = server
    done, entries = schemathesis(url, tmp_path, True, ["--max-examples", str(EXAMPLES), *CHECKS])
    statuses = Counter(e["response"]["status"] for e in entries)
    summary = f"{len(entries)} requests, status codes {dict(sorted(statuses.items()))}"
    (home / "fuzz-summary.txt").write_text(summary + "\n" + done.stdout[-20000:])
    print(summary)
    assert len(entries) >= REQUESTS, summary
    assert not [s for s in statuses if s >= 500], summary + done.stdout[-5000:]
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert statuses[415] > 0  # other content types were sent, and refused as such
    assert {_path(e) for e in entries} >= set(ROUTE_SCOPES)  # every protected operation was called


def test_without_keys_every_protected_operation_answers_401(server, tmp_path):
    url, _ = server
    done, entries = schemathesis(url, tmp_path, False, ["--max-examples", "10", "--checks", "not_a_server_error"])
    protected = [e for e in entries if _path(e) in ROUTE_SCOPES]
    statuses = Counter(e["response"]["status"] for e in protected)
    assert len(protected) >= 100 and {_path(e) for e in protected} == set(ROUTE_SCOPES), statuses
    assert set(statuses) == {401}, statuses
    assert done.returncode == 0, done.stdout[-5000:]
