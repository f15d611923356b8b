#!/usr/bin/env bash
# Installs the Debian packages Bulwark needs, when run as root and any is
# missing. Called by `make deps` (and so by `make test` and `make demo`).
# Every package the project uses is listed here and nowhere else.
set -euo pipefail

PACKAGES=(
  qemu-system-x86     # the micro-VM sandboxes (kvm/)
  linux-image-amd64   # the default guest kernel and its modules
  busybox-static      # test and demo images
  swtpm swtpm-tools   # the managed software TPM (tpm/)
  tpm2-tools          # an independent TPM client, used by tests to cross-check
  libssl-dev          # cgo: the in-process reference TPM simulator (go-tpm-tools)
  gcc libc6-dev       # cgo
  protobuf-compiler libprotobuf-dev  # make proto (protoc and the well-known types, e.g. timestamp.proto)
  postgresql          # the PostgreSQL store and its tests
  openssl             # certificates in tests; the measurement benchmark's baseline
  erofs-utils         # mkfs.erofs: the read-only image disk every sandbox boots with (kvm/)
  e2fsprogs           # mkfs.ext4: writable scratch disks (launcher run --scratch); debugfs in tests
  cpio xz-utils zstd  # initramfs handling in tests
  jq                  # make bench reads bulwark-load's JSON result
  python3-jsonschema  # an independent validator for docs/policy.schema.json in tests
  containernetworking-plugins  # CNI bridge/host-local/loopback: pods with their own network in the containerd e2e tests
  iproute2 procps ca-certificates git make
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run 'sudo make deps' (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
