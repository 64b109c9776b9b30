#!/usr/bin/env bash
# Prints requirements.lock for the environment of the given python: every installed
# distribution pinned as NAME==VERSION (also those installed from a local wheel, such as
# the llama-cpp-python we build), forgeml itself and pip's own tools left out.
# `make lock` calls this.
set -euo pipefail
PY=${1:-.venv/bin/python}
echo "# forgeml's dependency lock: the exact versions \`make test\` passed with."
echo "# Installs use it as a pip constraints file (-c). Refresh: \`make lock\` (see Makefile)."
"$PY" - <<'PYTHON'
from importlib import metadata

skip = {"forgeml", "pip", "setuptools", "wheel"}
pins = {
    (dist.metadata["Name"], dist.version)
    for dist in metadata.distributions()
    if dist.metadata["Name"].lower() not in skip
}
for name, version in sorted(pins, key=lambda pin: pin[0].lower()):
    print(f"{name}=={version}")
PYTHON
