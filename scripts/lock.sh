#!/usr/bin/env bash
# Prints requirements.lock for the environment of the given python: every installed
# distribution pinned, forgeml itself (editable) left out. `make lock` calls this.
set -euo pipefail
PY=${1:-.venv/bin/python}
echo "# forgeml's dependency lock: the exact versions \`make test\` passed with."
echo "# Installs use it as a pip constraints file (-c). Refresh: \`make lock\` (see Makefile)."
"$PY" -m pip freeze --disable-pip-version-check --exclude-editable --all \
  | grep -v -E '^(pip|setuptools|wheel)==' | LC_ALL=C sort -f
