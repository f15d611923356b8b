#!/usr/bin/env bash
# make bench: every figure beside its baseline, measured in the same run.
set -euo pipefail
go test -run '^$' -bench . -benchtime 3x ./... 2>&1 | tee /tmp/bulwark-bench.txt
