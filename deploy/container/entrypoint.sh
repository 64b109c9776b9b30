#!/bin/sh
# The image's entrypoint: `forgeml ARGS...`, after making the workspace on first start
# (an empty volume) and bringing its registry up to date. Set FORGEML_INIT=0 where a
# separate step (a Kubernetes init container) does that.
set -e
if [ "${FORGEML_INIT:-1}" = "1" ] && [ ! -e "$FORGEML_WORKSPACE/forgeml.yaml" ]; then
  forgeml init >/dev/null
fi
exec forgeml "$@"
