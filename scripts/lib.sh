# Shell helpers shared by scripts/demo.sh and scripts/load-run.sh (sourced).

# free_port prints a loopback TCP port nothing listens on.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

# wait_attestd LOG PID: waits up to 20 s for the attestd started as PID to
# say it is serving; on failure prints its log and returns 1.
wait_attestd() {
  local log=$1 pid=$2
  for _ in $(seq 1 200); do
    grep -q "serving on" "$log" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "attestd exited:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "attestd did not start within 20 s:" >&2
  cat "$log" >&2
  return 1
}
