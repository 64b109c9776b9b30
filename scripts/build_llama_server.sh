#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` from the llama.cpp source inside the cached
# llama-cpp-python sdist (the one scripts/install_gguf_toolchain.sh builds its wheel from),
# with the wheel's CMake flags, for benchmarks/edge_bundle.py's baseline. Offline: no web UI
# download, no curl. Prints the binary's path; a later run reuses it.
#
#   scripts/build_llama_server.sh    # ~/.cache/forgeml/llama-server-0.3.36/bin/llama-server
set -euo pipefail
VERSION=0.3.36
CACHE=${FORGEML_WHEEL_CACHE:-$HOME/.cache/forgeml-wheels}
SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
ROOT=$HOME/.cache/forgeml/llama-server-$VERSION
BINARY=$ROOT/bin/llama-server
if [ -x "$BINARY" ]; then echo "$BINARY"; exit 0; fi
[ -f "$SDIST" ] || { echo "error: $SDIST is missing: run scripts/install_gguf_toolchain.sh first" >&2; exit 1; }
mkdir -p "$ROOT"
if [ ! -d "$ROOT/src" ]; then
  tar -xzf "$SDIST" -C "$ROOT" "llama_cpp_python-$VERSION/vendor/llama.cpp"
  mv "$ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp" "$ROOT/src"
  rm -rf "$ROOT/llama_cpp_python-$VERSION"
fi
started=$(date +%s)
cmake -S "$ROOT/src" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$ROOT/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" >&2
mkdir -p "$ROOT/bin"
cp "$ROOT/build/bin/llama-server" "$BINARY"
echo "built llama-server in $(( $(date +%s) - started )) s" >&2
echo "$BINARY"
