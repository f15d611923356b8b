#!/usr/bin/env bash
# Runs every Fuzz* target in the module for $1 (default 20s) each. Targets
# are found, not listed: any func Fuzz... in a _test.go file is run. A
# failing target does not stop the others: every failure is reported at
# the end (with the command that reproduces it) and the exit status is 1
# if any target failed. FUZZ_ONLY=REGEXP runs only the targets whose
# "package.FuzzName" matches.
set -uo pipefail
t=${1:-20s}
only=${FUZZ_ONLY:-}
failed=()
ran=0
pkgs=$(go list ./...) || exit 1
for pkg in $pkgs; do
  dir=$(go list -f '{{.Dir}}' "$pkg") || { failed+=("$pkg (go list)"); continue; }
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    if [[ -n "$only" ]] && ! [[ "$pkg.$f" =~ $only ]]; then
      continue
    fi
    echo "fuzz: $pkg $f ($t)"
    ran=$((ran + 1))
    if ! go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$pkg"; then
      failed+=("$pkg $f: go test -run '^$' -fuzz '^$f\$' $pkg (crasher in $dir/testdata/fuzz/$f)")
    fi
  done
done
echo "fuzz: $ran targets run, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
