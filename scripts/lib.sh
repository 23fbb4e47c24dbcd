#!/usr/bin/env bash
# Shared by the load scripts (scripts/{pair,fan-in,fan-out,mesh,matrix}.sh), perf/compare.sh and
# scripts/interop-shared.sh: build the release binary, pick a free loopback port, start and stop
# a broker, run one bench scenario with the defaults every script uses; for checks, stop when a
# tool is missing and count PASS/FAIL lines. Everything here listens and connects on
# 127.0.0.1 only, and every process it starts is bounded in time and killed on exit.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release/surgemq"

# Defaults, overridable from the environment.
CLIENTS=${CLIENTS:-20}
SIZE=${SIZE:-64}
QOS=${QOS:-0}
THREADS=${THREADS:-$(nproc)}
SHARDS=${SHARDS:-$(nproc)}
# MESSAGES (per publisher) wins over DURATION when set.
DURATION=${DURATION:-10}
MESSAGES=${MESSAGES:-}

log() { printf '== %s\n' "$*" >&2; }

# require CMD WHAT: stops the script (status 2) with a clear message when CMD is not installed;
# WHAT says what to install.
require() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$(basename "$0" .sh): $1 is missing; install $2 (scripts/test.sh installs it)" >&2
  exit 2
}

PASSED=0
FAILED=0
# report NAME STATUS [DETAIL]: one "PASS NAME" or "FAIL NAME: DETAIL" line (STATUS 0 passes),
# counted in PASSED and FAILED.
report() {
  if [ "$2" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    echo "PASS $1"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $1${3:+: $3}"
  fi
}

build_release() {
  # cargo itself decides whether anything needs rebuilding; this is quick when nothing does.
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
}

free_port() {
  # A random free port below the ephemeral range: two calls in a row cannot get the same one
  # back, as they can from bind(0), which hands out a port just freed again.
  python3 -c 'import random, socket
for _ in range(1000):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break'
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (at most 10 s).
wait_port() {
  local i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  log "nothing listens on 127.0.0.1:$1 after 10 s"
  return 1
}

# rss_kib PID: resident memory of a process (VmRSS), in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# settled_rss_kib PID [SAMPLES]: RSS once two samples 0.5 s apart agree, after at most
# SAMPLES samples (default 10: 5 s).
settled_rss_kib() {
  local last now
  last=$(rss_kib "$1")
  now=$last
  for _ in $(seq 1 "${2:-10}"); do
    sleep 0.5
    now=$(rss_kib "$1")
    [ "$now" = "$last" ] && break
    last=$now
  done
  echo "$now"
}

BROKER_PID=""

# start_surgemq SHARDS PORT (SURGEMQ_ARGS: more serve flags, e.g. "--shared-strategy local-first")
start_surgemq() {
  log "surgemq serve --shards $1 on 127.0.0.1:$2 ${SURGEMQ_ARGS:-}"
  # shellcheck disable=SC2086 # SURGEMQ_ARGS is a list of flags
  "$BIN" serve --listen "127.0.0.1:$2" --shards "$1" --log-level warn ${SURGEMQ_ARGS:-} &
  BROKER_PID=$!
  wait_port "$2"
}

# stop_pid PID [TENTHS]: SIGTERM, then SIGKILL if it is still there after TENTHS tenths of a
# second (default 50), and reap it.
stop_pid() {
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    local i
    for i in $(seq 1 "${2:-50}"); do
      kill -0 "$1" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}

stop_broker() {
  [ -n "$BROKER_PID" ] || return 0
  stop_pid "$BROKER_PID"
  BROKER_PID=""
}

# bench_args SCENARIO: the generator flags for a scenario from the environment.
bench_args() {
  local args=(--size "$SIZE" --qos "$QOS" --threads "$THREADS")
  [ "$1" = pair ] || args+=(--clients "$CLIENTS")
  if [ -n "$MESSAGES" ]; then
    args+=(--messages "$MESSAGES")
  else
    args+=(--duration "$DURATION")
  fi
  printf '%s\n' "${args[@]}"
}

# run_bench SCENARIO PORT [extra bench args...]: one run, bounded by `timeout` whatever happens.
run_bench() {
  local scenario=$1 port=$2
  shift 2
  local args
  mapfile -t args < <(bench_args "$scenario")
  # Setup (10 s) + publishing + drain (5 s) + margin; a message-count run gets 10 minutes.
  local limit=600
  [ -n "$MESSAGES" ] || limit=$(( ${DURATION%%[!0-9]*} + 60 ))
  timeout --kill-after=5 "$limit" "$BIN" bench "$scenario" --port "$port" "${args[@]}" "$@"
}

# scenario_main SCENARIO [extra bench args...]: what each scenario script does.
scenario_main() {
  local scenario=$1
  shift
  build_release
  local port
  port=$(free_port)
  trap stop_broker EXIT
  trap 'exit 130' INT TERM
  start_surgemq "$SHARDS" "$port"
  local status=0
  run_bench "$scenario" "$port" "$@" || status=$?
  stop_broker
  return "$status"
}

# --- interop checks: a Python checker against a broker ----------------------------------------

# check_names CHECKER ONLY: stops (status 2), listing the known checks, when ONLY (NAME[,NAME...]
# or "all") names one that the Python CHECKER's --list does not.
check_names() {
  [ "$2" != all ] || return 0
  local known name
  known=$(python3 "$1" --list)
  for name in ${2//,/ }; do
    if ! grep -qx -- "$name" <<<"$known"; then
      echo "$(basename "$0" .sh): unknown check '$name'; known checks:" >&2
      echo "$known" >&2
      exit 2
    fi
  done
}

# start_on_free_port START LOG: calls START PORT (which starts a broker in the background and
# sets BROKER_PID) on a free port until something listens there, trying another port (taken in
# between) up to 3 times; sets PORT. Prints LOG after a failed attempt. False if all failed.
start_on_free_port() {
  local attempt
  for attempt in 1 2 3; do
    PORT=$(free_port)
    "$1" "$PORT"
    if wait_port "$PORT" && kill -0 "$BROKER_PID" 2>/dev/null; then return 0; fi
    stop_broker
    log "the broker did not start on port $PORT (attempt $attempt):"
    cat "$2" >&2
  done
  return 1
}

DIFFS=0
SKIPPED=0
# run_checker LIMIT OUT CHECKER ARGS...: runs the Python checker under `timeout LIMIT`, its
# output in OUT, and reports its lines: PASS/FAIL counted with report(), DIFF (differs from the
# spec, recorded) and SKIP counted in DIFFS and SKIPPED, anything else indented. A checker that
# failed without a FAIL line (crashed, timed out) is a failure of its own.
run_checker() {
  local limit=$1 out=$2 checker=$3 status=0 line
  shift 3
  timeout "$limit" python3 "$checker" "$@" >"$out" 2>&1 || status=$?
  while IFS= read -r line; do
    case "$line" in
      "PASS "*) report "${line#PASS }" 0 ;;
      "FAIL "*) report "${line#FAIL }" 1 ;;
      "DIFF "*) DIFFS=$((DIFFS + 1)) && echo "$line" ;;
      "SKIP "*) SKIPPED=$((SKIPPED + 1)) && echo "$line" ;;
      *) echo "  $line" ;;
    esac
  done <"$out"
  if [ "$status" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
    report "$checker" 1 "exited with status $status$([ "$status" -eq 124 ] && echo ' (timeout)')"
  fi
}

# finish_checks LOG: reports whether the broker (BROKER_PID) survived, shows the end of its LOG
# if anything failed, prints the totals; false if anything failed.
finish_checks() {
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    report "broker still running" 0
  else
    report "broker still running" 1 "it exited: see the log below"
  fi
  if [ "$FAILED" -ne 0 ]; then
    echo "broker log (last 40 lines):"
    tail -n 40 "$1"
  fi
  local extra=""
  [ "$DIFFS" -eq 0 ] || extra+=", $DIFFS differ from the spec (recorded)"
  [ "$SKIPPED" -eq 0 ] || extra+=", $SKIPPED skipped"
  echo "$PASSED passed, $FAILED failed$extra"
  [ "$FAILED" -eq 0 ]
}

# One line from `surgemq bench --json` on stdin: deliveries per second, missing, p50 latency.
bench_line() {
  python3 -c 'import json, sys
r = json.load(sys.stdin)
print("%.0f missing=%s p50=%.0fus" % (r["mps"], r["missing"], r["latency_p50_us"]))'
}
