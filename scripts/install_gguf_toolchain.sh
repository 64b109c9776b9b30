#!/usr/bin/env bash
# Installs llama.cpp's GGUF toolchain into the venv: the llama-cpp-python library (built
# once from its source package and cached as a wheel) and llama.cpp's converter (unpacked
# from the same source package). Used by `make gguf`, which `make test` runs.
#
# The build takes ~10 minutes on 2 idle cores the first time; later runs reuse the cached
# wheel in ~/.cache/forgeml-wheels. A failed build fails the install (and so `make test`):
# the GGUF tests never skip quietly for want of it.
set -uo pipefail
VERSION=0.3.36
PY=${1:-.venv/bin/python}
CACHE=${FORGEML_WHEEL_CACHE:-$HOME/.cache/forgeml-wheels}
SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
mkdir -p "$CACHE"
LOCK=$(cd "$(dirname "$0")/.." && pwd)/requirements.lock
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

if [ ! -f "$SDIST" ]; then
  pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$CACHE" || exit 1
fi
if ! ls "$CACHE"/llama_cpp_python-$VERSION-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION once (about 10 minutes on 2 cores)..."
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF} \
    pip wheel --no-deps "$SDIST" -w "$CACHE" || { echo "error: llama-cpp-python $VERSION failed to build (see above); the GGUF export and the llama.cpp engine need it" >&2; exit 1; }
fi
pip install -c "$LOCK" "$CACHE"/llama_cpp_python-$VERSION-*.whl || exit 1
"$PY" -m forgeml.export.toolchain install "$SDIST"
