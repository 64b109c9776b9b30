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
# A build needs ~6 GB in podman's storage (two ~2 GB stages and the copy between them);
# podman's own error when the disk fills mid-build is a broken tar pipe, so say it first.
STORE=$(podman info --format '{{.Store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers)
mkdir -p "$STORE"
FREE_GB=$(df --output=avail -BG "$STORE" | tail -1 | tr -dc 0-9)
NEED_GB=${FORGEML_BUILD_NEEDS_GB:-6}
if (( FREE_GB < NEED_GB )); then
  echo "error: $STORE has ${FREE_GB} GB free; an image build needs about ${NEED_GB} GB." >&2
  echo "       Free space (podman image prune removes unused images) and build again." >&2
  exit 1
fi
IMAGE=$BASE deploy/make-base-image.sh
args=(--format docker --build-arg "BASE_IMAGE=$BASE" -f deploy/container/Containerfile -t "$TAG")
args+=(--build-arg PIP_CERT=/host-ca.crt -v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro)
if compgen -G "$WHEELS/torch-*+cpu-*.whl" >/dev/null; then
  # The CPU wheel is here: no need to reach download.pytorch.org.
  args+=(--build-arg TORCH_INDEX= -v "$WHEELS:/wheels:ro")
fi
PREVIOUS=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
podman build "${args[@]}" "$@" .
# The image this tag named before is now untagged (~2 GB each build): remove it unless a
# container still uses it.
if [[ -n $PREVIOUS && $PREVIOUS != $(podman image inspect --format '{{.Id}}' "$TAG") ]]; then
  podman rmi "$PREVIOUS" >/dev/null 2>&1 || true
fi
