"""Schemathesis against the real server's /docs.json on 127.0.0.1: generated requests, valid and
invalid, to every endpoint (admin and marketer ones with their keys), and no answer is a 5xx or
breaks the documented response schema; invalid requests are refused with a 4xx.

Bounded: SHOPREC_FUZZ_REQUESTS requests in all (default 300, the CI mode; 1000 or more for a full run).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from serving.admin import ADMIN_HEADER
from tests.test_admin import live_server, store

REQUESTS = int(os.environ.get("SHOPREC_FUZZ_REQUESTS", "300"))
ADMIN_KEY, API_KEY = "fuzz-admin-key-0123456789", "fuzz-api-key-0123456789"
HEADERS = {ADMIN_HEADER: ADMIN_KEY, "X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.test_propensity_service import SCORES
    from tests.test_storefront import make_bundle
    from training.propensity.bundle import PropensityBundle

    home = tmp_path_factory.mktemp("fuzz_home")
    make_bundle({"trained_at": "2024-01-01T00:00:00Z"}).save(home / "bundle")
    store(home, (home / "bundle", "1"))
    PropensityBundle(SCORES, {"scored_at": "2024-12-31", "horizon_days": 90}).save(home / "propensity")
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys; from pathlib import Path; from training.propensity.publish import store_propensity_bundle; "
            "store_propensity_bundle(Path(sys.argv[1]), {'registry_version': '1'})")
    subprocess.run([sys.executable, "-c", code, str(home / "propensity")], cwd=REPO, check=True,
                   env=dict(os.environ, BENTOML_HOME=str(home)))
    env = {"SHOPREC_EVENTS_URL": f"sqlite:///{home}/events.db", "SHOPREC_ADMIN_KEY": ADMIN_KEY, "SHOPREC_API_KEY": API_KEY,
           "SHOPREC_CANONICAL_DIR": str(home / "canonical"), "SHOPREC_PRIVACY_DIR": str(home / "privacy")}
    with live_server(home, env, wait_for="/readyz") as url:
        yield url, home


def test_generated_requests_get_no_5xx_and_no_schema_violation(server):
    url, home = server
    # an invalid request may also be refused as too large (413, body limit) or, if our generated burst
    # ever overloads the server, 429: both are refusals, not acceptance
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": [400, 401, 404, 405, 406, 409, 413, 415, 422, 429]}}})
    schema = schemathesis.openapi.from_url(f"{url}/docs.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    with_body = [op for op in operations if op.method.upper() == "POST"]
    assert len(with_body) >= 10, [op.path for op in operations]
    sent, statuses, failures = Counter(), Counter(), []

    def fuzz(op, mode: GenerationMode, examples: int) -> None:
        checks = [not_a_server_error, response_schema_conformance]
        if mode == GenerationMode.NEGATIVE:
            checks.append(negative_data_rejection)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(op.as_strategy(generation_mode=mode))
        def run(case):
            response = case.call(base_url=url, headers=HEADERS, timeout=30)
            sent[op.path] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks)
            except (Exception, BaseExceptionGroup) as e:  # keep going: collect every distinct failure
                failures.append(f"{mode.value} {op.method.upper()} {op.path}: {str(e)[:600]}")

        run()

    for op in operations:
        if op not in with_body:
            fuzz(op, GenerationMode.POSITIVE, 2)
    per_op = math.ceil(REQUESTS / len(with_body))
    for op in with_body:
        fuzz(op, GenerationMode.POSITIVE, math.ceil(per_op * 0.6))
        fuzz(op, GenerationMode.NEGATIVE, math.ceil(per_op * 0.4))
    while sum(sent.values()) < REQUESTS:  # negative generation can run dry on small schemas: top up
        for op in with_body:
            fuzz(op, GenerationMode.POSITIVE, per_op)

    total = sum(sent.values())
    summary = f"{total} requests, status codes {dict(sorted(statuses.items()))}, per endpoint {dict(sent)}"
    (home / "fuzz-summary.txt").write_text(summary + "\n" + "\n".join(failures))
    print(summary)
    assert total >= REQUESTS
    assert not [s for s in statuses if s >= 500], summary + "\n" + "\n".join(failures[:5])
    assert not failures, "\n\n".join(dict.fromkeys(failures))  # distinct ones
    logs = "".join(p.read_text() for p in Path(home).glob("serve-*.log"))
    assert ADMIN_KEY not in logs and API_KEY not in logs
