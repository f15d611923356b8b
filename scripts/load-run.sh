#!/usr/bin/env bash
# A fleet run through the real binaries: attestd (TLS, vault sealed to a
# managed swtpm, embedded store or PostgreSQL with DB=postgres://...) driven by
# bulwark-load for DURATION with --release, ending with the "nothing lost"
# audit check. Prints bulwark-load's JSON result on stdout; everything else
# on stderr. Used by scripts/bench.sh; runnable alone after `make build`.
#
#   HOSTS=10000 DURATION=60s CONCURRENCY=64 scripts/load-run.sh > result.json
#   RATE=2000     start attestations at this rate (default 0: flat out)
#   SWEEP=1000,1500,2000  instead, one step of DURATION at each rate, and the
#                 highest whose cycle p99 stays within SLO (default 20ms)
#   RELEASE=0     leave out ReleaseSecrets (default 1: Challenge → Attest → Release)
#   TOKENS=1      ask for a signed token with every verdict (default 0: omit_token,
#                 as the launcher does)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
bin=$PWD/bin
HOSTS=${HOSTS:-10000}
DURATION=${DURATION:-60s}
CONCURRENCY=${CONCURRENCY:-64}
RATE=${RATE:-0}
RELEASE=${RELEASE:-1}
TOKENS=${TOKENS:-0}
DB=${DB:-}
SWEEP=${SWEEP:-}
SLO=${SLO:-20ms}

w=$(mktemp -d /tmp/bulwark-load.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  BULWARK_STATE=$w/state "$bin/launcher" tpm stop >/dev/null 2>&1 || true
  rm -rf "$w"
}
trap cleanup EXIT

mkdir -p "$w/policies"
"$bin/bulwark-load" --write-policy "$w/policies/bulwark-load.yaml" --ek-ca "$w/ekca" >&2
# attestd's own TPM for its vault: a managed swtpm of this run.
BULWARK_STATE=$w/state "$bin/launcher" tpm info >/dev/null
port=$(free_port)
# --peer-rate 0: every simulated host calls from this one address.
args=(serve --data "$w/data" --listen "127.0.0.1:$port" --metrics-addr "" --log-level warn
  --tpm "swtpm:$w/state/swtpm" --policies "$w/policies" --ek-ca "$w/ekca/ek-ca.pem" --peer-rate 0)
[ -n "$DB" ] && args+=(--db "$DB")
"$bin/attestd" "${args[@]}" >"$w/attestd.log" 2>&1 &
pid=$!
wait_attestd "$w/attestd.log" "$pid"
"$bin/attestd" admin-cert --data "$w/data" --name load -o "$w/certs" >/dev/null
rate=(--rate "$RATE")
[ -n "$SWEEP" ] && rate=(--sweep "$SWEEP" --slo "$SLO")
"$bin/bulwark-load" --addr "127.0.0.1:$port" --ca "$w/certs/ca.crt" --cert "$w/certs/load.crt" \
  --key "$w/certs/load.key" --ek-ca "$w/ekca" --hosts "$HOSTS" --duration "$DURATION" \
  --concurrency "$CONCURRENCY" "${rate[@]}" --release="$([ "$RELEASE" = 0 ] && echo false || echo true)" \
  --tokens="$([ "$TOKENS" = 1 ] && echo true || echo false)" --json
