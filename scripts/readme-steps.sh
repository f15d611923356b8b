#!/usr/bin/env bash
# make readme-steps: README.md's "Using it by hand" block, run as written.
#
# It takes the one ```sh block between the "## Using it by hand" heading and
# the next "## " heading and runs it with bash -euo pipefail, started in a
# scratch directory (not the checkout: the block must work from anywhere),
# with everything it writes inside that directory: BULWARK_STATE (a managed
# swtpm of its own), DATA (attestd's data), HOME (the admin certificate) and
# WORK. attestd listens on ADDR: yours if you export it, else a free loopback
# port; when attestd loses a race for that port the block is run again from
# scratch on another one, at most 3 times in all. /metrics is off (METRICS="").
#
# The block passes when it exits 0, the launch's run.json says exit code 0
# with the secret db released, and the workload printed the digest of db.txt.
# attestd, the swtpm and QEMU are stopped whatever happens; the scratch
# directory is removed on success unless READMESTEPS_KEEP=1.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"
for b in launcher attestd bulwark-agent; do
  [ -x "$repo/bin/$b" ] || { echo "readme-steps: $repo/bin/$b missing: run 'make build'" >&2; exit 1; }
done

# The block: exactly one ```sh fence in the section.
block=$(awk '
  /^## / { insec = ($0 == "## Using it by hand"); next }
  insec && /^```sh$/ { inblk = 1; n++; next }
  insec && inblk && /^```$/ { inblk = 0; next }
  insec && inblk { print }
  END { if (n != 1) { print "want exactly one ```sh block in \"## Using it by hand\", found " n > "/dev/stderr"; exit 1 } }
' "$repo/README.md")
[ -n "$block" ] || { echo "readme-steps: the README block is empty" >&2; exit 1; }

start=$SECONDS
scratch=$(mktemp -d /tmp/bulwark-readme.XXXXXX)
pgid=""    # the process group (session) the current attempt runs in
try=""     # the current attempt's directory

# session_pids SID prints the processes of session SID.
session_pids() { ps -eo pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'; }

# stop_attempt ends everything the current attempt started: its session
# (bash, attestd, launcher, and QEMU, which has a process group of its own
# but stays in the session and dies with the launcher: Pdeathsig), then its
# managed swtpm (a session of its own: 'launcher tpm stop'). Anything still
# running after that is reported, ended by pid, and fails the run.
stop_attempt() {
  [ -n "$try" ] || return 0
  local left=""
  if [ -n "$pgid" ]; then
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 100); do
      left=$(session_pids "$pgid")
      [ -n "$left" ] || break
      sleep 0.1
    done
  fi
  pgid=""
  BULWARK_STATE="$try/state" "$repo/bin/launcher" tpm stop >/dev/null 2>&1 || true
  # attestd --data and the swtpm's state name this attempt's directory.
  left="$left $(pgrep -f -- "$try/" || true)"
  try=""
  if [ -n "${left// /}" ]; then
    echo "readme-steps: still running after cleanup (now killed):" >&2
    ps -o pid=,args= -p "$(echo $left | tr " " ,)" >&2 || true
    kill -KILL $left 2>/dev/null || true
    return 1
  fi
}

cleanup() {
  rc=$?
  trap - EXIT
  stop_attempt || rc=1
  if [ "${READMESTEPS_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "readme-steps: files kept in $scratch"
  else
    rm -rf "$scratch"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for attempt in 1 2 3; do
  try="$scratch/try$attempt"
  mkdir -p "$try/home" "$try/elsewhere"
  printf '%s\n' "$block" >"$try/steps.sh"
  addr=${ADDR:-127.0.0.1:$(free_port)}
  echo "readme-steps: attempt $attempt: attestd on $addr, files in $try"
  # A session of its own (setsid) so that stop_attempt reaches every
  # process the block starts, however it ends.
  set +e
  (
    cd "$try/elsewhere"
    exec env HOME="$try/home" BULWARK="$repo" BULWARK_STATE="$try/state" DATA="$try/attestd" \
      WORK="$try/work" ADDR="$addr" METRICS="" COSIGN_PASSWORD=readme-steps \
      setsid bash -euo pipefail "$try/steps.sh"
  ) >"$try/out.log" 2>&1 </dev/null &
  pgid=$!
  wait "$pgid"
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    break
  fi
  if [ -z "${ADDR:-}" ] && [ "$attempt" -lt 3 ] && grep -q "address already in use" "$try/out.log"; then
    echo "readme-steps: $addr was taken before attestd bound it; again on another port"
    stop_attempt
    continue
  fi
  echo "readme-steps: FAILED: the README block exited $rc; its output:" >&2
  sed 's/^/    /' "$try/out.log" >&2
  exit 1
done

sed 's/^/    /' "$try/out.log"
report="$try/work/run.json"
if ! jq -e '.exit_code == 0 and ((.secrets // []) | index("db") != null)' "$report" >/dev/null; then
  echo "readme-steps: FAILED: $report does not say exit code 0 with the secret db released:" >&2
  cat "$report" >&2
  exit 1
fi
want=$(sha256sum "$try/work/db.txt" | cut -d' ' -f1)
if ! grep -q "^$want  /run/secrets/db" "$try/out.log"; then
  echo "readme-steps: FAILED: the workload did not print the digest of db.txt ($want)" >&2
  exit 1
fi
stop_attempt
echo "readme-steps: OK in $((SECONDS - start)) s (the launch released db; the workload read it)"
