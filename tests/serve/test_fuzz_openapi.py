"""Fuzzing every route from the server's own OpenAPI schema (schemathesis): bodies,
query strings and path parameters generated from the schema, valid and invalid, sent
with an admin key to a real server. Every answer is a status a client can act on, in the
API's error shape; none is a 500.

    FORGEML_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/serve/test_fuzz_openapi.py   # longer
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("FORGEML_FUZZ_EXAMPLES", "25"))
# Listing, creating or starting real work is not what this fuzzes (test_fine_tuning_api
# does): a generated body that validated would start a training job.
SKIPPED = {("POST", "/v1/fine_tuning/jobs/{job_id}/start")}


def operations(served):
    schema = schemathesis.openapi.from_dict(served.app.openapi())
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in SKIPPED:
            yield operation


@pytest.mark.slow
def test_every_route_answers_generated_requests_without_a_server_error(served):
    headers = {"Authorization": f"Bearer {served.admin_key}"}
    cases = {"count": 0}
    failures = []
    tested = []
    for operation in operations(served):
        tested.append(f"{operation.method.upper()} {operation.path}")

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case):
            cases["count"] += 1
            response = case.call(base_url=served.url, headers=headers, timeout=60)
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append((where, response.status_code, response.text[:300]))
            elif urlsplit(response.request.url).path.startswith("/ui"):
                # A path parameter of dot segments ("../../ui") that the client resolved out
                # of the API, onto the console: its refusals are pages, not JSON errors.
                assert response.status_code < 500
            elif response.status_code >= 400:
                error = response.json().get("error", {})
                if not (isinstance(error, dict) and error.get("message")):
                    failures.append((where, response.status_code, response.text[:300]))

        fuzz()
    print(f"fuzzed {cases['count']} cases over {len(tested)} operations")
    assert len(tested) >= 10, tested
    assert not failures, failures[:5]
