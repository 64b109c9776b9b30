#!/usr/bin/env bash
# Makes localhost/forgeml-base:bookworm, a Debian 12 minbase root filesystem imported as an
# image, for machines that cannot pull docker.io/library/debian:bookworm-slim (no registry).
# It stands in for that image: the Containerfile takes either (--build-arg BASE_IMAGE=...).
#
#   sudo deploy/make-base-image.sh            # once; ~1-2 min from a Debian mirror
#   MIRROR=http://deb.debian.org/debian deploy/make-base-image.sh
set -euo pipefail
IMAGE=${IMAGE:-localhost/forgeml-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if podman image exists "$IMAGE"; then
  echo "$IMAGE exists"
  exit 0
fi
rootfs=$(mktemp -d /var/tmp/forgeml-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
# What debian:bookworm-slim leaves out: documentation, manuals, apt's downloaded lists.
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE made"
