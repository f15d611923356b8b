#!/usr/bin/env bash
# make bench: one table, each figure beside its baseline measured in the same
# run (these machines are shared and noisy: only same-run ratios mean much).
# Raw `go test -bench` output goes to $BENCH_OUT (default bin/bench.txt).
#
#   BULWARK_BENCH_HOSTS=10000   fleet size for the attestd rows
#   BENCH_QUICK=1               fewer iterations (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
out=${BENCH_OUT:-bin/bench.txt}
mkdir -p "$(dirname "$out")"
: >"$out"
n=3x
[ "${BENCH_QUICK:-0}" = 1 ] && n=1x

bench() { # PKG REGEX BENCHTIME
  echo "bench: $1 $2 ($3)" >&2
  go test -run '^$' -bench "$2" -benchtime "$3" -timeout 60m "$1" 2>&1 | tee -a "$out" | grep -E '^(Benchmark|--- (FAIL|SKIP)|FAIL|ok)' >&2 || true
}

bench ./measure 'BenchmarkMeasureFileVsOpenSSL|BenchmarkMeasureImageParallel' "$n"
bench ./internal/attestd 'BenchmarkVerifyAttestationInProcess' 2000x
bench ./internal/load 'BenchmarkAttestdEndToEnd' "$n"
bench ./kvm 'BenchmarkLaunchVsBareQEMU' "$n"

# The fleet through the real binaries, with key release, for LOAD_DURATION
# (default 60s), ending with the "nothing lost" audit check.
load_json=bin/bench-load.json
echo "bench: bulwark-load against the attestd binary (${LOAD_DURATION:-60s}, ${BULWARK_BENCH_HOSTS:-10000} hosts)" >&2
if HOSTS=${BULWARK_BENCH_HOSTS:-10000} DURATION=${LOAD_DURATION:-60s} ./scripts/load-run.sh >"$load_json"; then
  load_ok=1
else
  load_ok=0
fi

# metric BENCH_REGEX UNIT: the value reported with UNIT on the last line of a
# benchmark matching BENCH_REGEX ("-" when absent).
metric() {
  awk -v re="$1" -v unit="$2" '
    $1 ~ re { for (i = 3; i < NF; i++) if ($(i+1) == unit) v = $i }
    END { print (v == "" ? "-" : v) }' "$out"
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
accel=$(grep -m1 -o 'accelerator [a-z]*' "$out" | awk '{print $2}')
hosts=${BULWARK_BENCH_HOSTS:-10000}

printf '\nBulwark benchmarks — %s, %s cores, %s; sandbox accelerator: %s\n\n' "$cpu" "$(nproc)" "$(date -u +%F)" "${accel:-unknown}"
printf '| what | figure | baseline, same run | ratio |\n|---|---|---|---|\n'
printf '| measuring a large file | %s MB/s | openssl dgst -sha256: %s MB/s | %s (goal >= 0.9) |\n' \
  "$(metric MeasureFileVsOpenSSL MB/s)" "$(metric MeasureFileVsOpenSSL openssl-MB/s)" "$(metric MeasureFileVsOpenSSL ratio-vs-openssl)"
printf '| measuring a multi-layer image | %s MB/s | one core: %s MB/s | speed-up %s |\n' \
  "$(metric MeasureImageParallel parallel-MB/s)" "$(metric MeasureImageParallel serial-MB/s)" "$(metric MeasureImageParallel speedup)"
printf '| verifying one attestation in process | %s µs/op | — (the floor for the service) | |\n' \
  "$(metric 'VerifyAttestationInProcess/verify-only' µs/verify)"
printf '| attestd end to end, %s hosts, embedded store | %s attestations/s, p99 %s ms | in-process verify: %s/s | %s |\n' \
  "$hosts" "$(metric 'store=embedded' attestations/s)" "$(metric 'store=embedded' p99-ms)" "$(metric 'store=embedded' verify-baseline/s)" "$(metric 'store=embedded' e2e/verify)"
printf '| the same on PostgreSQL | %s attestations/s, p99 %s ms | embedded store: %s/s | |\n' \
  "$(metric 'store=postgres' attestations/s)" "$(metric 'store=postgres' p99-ms)" "$(metric 'store=embedded' attestations/s)"
j() { jq -r "$1 // \"-\"" "$load_json" 2>/dev/null || echo -; }
printf '| key release (binaries, %s s, %s hosts) | p50 %s ms, p99 %s ms | — | |\n' \
  "$(j .duration_seconds)" "$(j .hosts)" "$(j '.rpc_latency.release.p50_ms')" "$(j '.rpc_latency.release.p99_ms')"
printf '| fleet run through the binaries, with release | %s attestations/s, p99 %s ms, errors %s | nothing lost: %s | |\n' \
  "$(j '.attest.per_second | floor')" "$(j '.attest.latency.p99_ms')" "$(j '[.attest.errors[]?] | add // 0')" \
  "$(j 'if .audit then "\(.audit.found)/\(.audit.expected) verdicts in the audit log, chain verified: \(.audit.chain_verified)" else "not checked" end')"
printf '| launch to workload exit (sandbox) | %s ms | bare qemu-system-x86_64, same kernel+initramfs: %s ms | %s (goal <= 1.15) |\n' \
  "$(metric LaunchVsBareQEMU api-ms)" "$(metric LaunchVsBareQEMU bare-ms)" "$(metric LaunchVsBareQEMU overhead-ratio)"
printf '| memory per sandbox | %s MiB RSS (QEMU peak) | bare QEMU: %s MiB | |\n' \
  "$(metric LaunchVsBareQEMU rss-MiB)" "$(metric LaunchVsBareQEMU bare-rss-MiB)"
printf '\nRaw output: %s\n' "$out"
if [ "$load_ok" != 1 ]; then
  echo "bench: the fleet run through the binaries FAILED (errors or lost verdicts; see $load_json)" >&2
  exit 1
fi
if grep -qE '^(--- FAIL|FAIL)' "$out"; then
  echo "bench: some benchmarks FAILED (see $out)" >&2
  exit 1
fi
