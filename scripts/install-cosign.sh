#!/usr/bin/env bash
# Installs the cosign CLI into $(go env GOPATH)/bin when it is missing, so the
# signing/ interoperability tests can check Bulwark's keys and signatures
# against cosign itself. Idempotent: does nothing when a cosign binary is
# already there (it says which version). The build is large (several minutes
# on 2 cores); v2.6.5 builds with Go 1.26 (GOTOOLCHAIN=local).
#
#   scripts/install-cosign.sh                          # install if missing
#   COSIGN_VERSION=v2.x.y COSIGN_FORCE_VERSION=1 scripts/install-cosign.sh
#                                                      # replace another version
set -euo pipefail

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
COSIGN_VERSION="${COSIGN_VERSION:-v2.6.5}"
GO="${GO:-go}"

gobin="$("$GO" env GOBIN)"
if [ -z "$gobin" ]; then
  gobin="$("$GO" env GOPATH)/bin"
fi
cosign="$gobin/cosign"

if [ -x "$cosign" ]; then
  have="$("$cosign" version 2>/dev/null | awk '/^GitVersion:/ {print $2}')" || true
  if [ "$have" = "$COSIGN_VERSION" ] || [ -z "${COSIGN_FORCE_VERSION:-}" ]; then
    echo "install-cosign: $cosign present (${have:-unknown version})"
    exit 0
  fi
fi

echo "install-cosign: building cosign $COSIGN_VERSION into $gobin (takes minutes)"
GOBIN="$gobin" "$GO" install \
  -ldflags "-X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
  "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
"$cosign" version >/dev/null
echo "install-cosign: installed $cosign"
