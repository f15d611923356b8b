#!/usr/bin/env bash
# Installs containerd and ctr (v2.4.2) and crictl (v1.37.0), built from the
# Go module proxy, into $(go env GOPATH)/bin when missing, for the
# containerd shim's end-to-end test (e2e/containerd_test.go, which skips
# without them). Idempotent: does nothing when they are there. The builds
# take about 1-2 min with a warm module cache, 4-5 min cold, on 2 cores. Debian's own containerd (1.6)
# works with the shim too, but puts every shim socket under /run/containerd.
#
#   scripts/install-containerd.sh
#   CONTAINERD_VERSION=v2.x.y CONTAINERD_FORCE_VERSION=1 scripts/install-containerd.sh
set -euo pipefail

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}"
GO="${GO:-go}"

gobin="$("$GO" env GOBIN)"
if [ -z "$gobin" ]; then
  gobin="$("$GO" env GOPATH)/bin"
fi

if [ ! -x "$gobin/crictl" ]; then
  echo "install-containerd: building crictl $CRICTL_VERSION into $gobin"
  CGO_ENABLED=0 GOBIN="$gobin" "$GO" install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi

if [ -x "$gobin/containerd" ] && [ -x "$gobin/ctr" ]; then
  have="$("$gobin/containerd" --version 2>/dev/null | awk '{print $3}')" || true
  have="v${have#v}"; have="${have%%+*}"   # "2.4.2+unknown" -> "v2.4.2"
  if [ "$have" = "$CONTAINERD_VERSION" ] || [ -z "${CONTAINERD_FORCE_VERSION:-}" ]; then
    echo "install-containerd: $gobin/containerd present (${have:-unknown version})"
    exit 0
  fi
fi

echo "install-containerd: building containerd and ctr $CONTAINERD_VERSION into $gobin (takes minutes)"
CGO_ENABLED=0 GOBIN="$gobin" "$GO" install \
  "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
"$gobin/containerd" --version >/dev/null
echo "install-containerd: installed $gobin/containerd and $gobin/ctr"
