#!/usr/bin/env bash
# Builds forgeml's CPU image on a machine with no image registry (what the tests do):
# the base is made locally (deploy/make-base-image.sh), torch's CPU wheel is taken from a
# local folder when there is one, and pip trusts the host's CA bundle (a TLS-inspecting
# proxy). Where docker.io is reachable, plain `podman build` (see the Containerfile) is all.
#
#   deploy/container/build-local.sh [TAG [PODMAN-BUILD-OPTIONS...]]   # default localhost/forgeml:cpu
#   WHEELS=/opt/wheels deploy/container/build-local.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-localhost/forgeml:cpu}
shift || true
BASE=localhost/forgeml-base:bookworm
WHEELS=${WHEELS:-/opt/wheels}
IMAGE=$BASE deploy/make-base-image.sh
args=(--format docker --build-arg "BASE_IMAGE=$BASE" -f deploy/container/Containerfile -t "$TAG")
args+=(--build-arg PIP_CERT=/host-ca.crt -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro)
if compgen -G "$WHEELS/torch-*+cpu-*.whl" >/dev/null; then
  # The CPU wheel is here: no need to reach download.pytorch.org.
  args+=(--build-arg TORCH_INDEX= -v "$WHEELS:/wheels:ro")
fi
exec podman build "${args[@]}" "$@" .
