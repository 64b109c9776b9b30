"""How hard the fuzz tests try: a short budget in `make test`, more on request.

FORGEML_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz     # the longer run
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("FORGEML_FUZZ_EXAMPLES", "200"))

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared 2-core machine: time per case is not the property under test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same cases on every run, so a CI failure reproduces locally
)
