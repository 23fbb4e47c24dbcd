#!/usr/bin/env bash
# Shared by the load scripts (scripts/{pair,fan-in,fan-out,mesh,matrix}.sh) and perf/compare.sh:
# build the release binary, pick a free loopback port, start and stop a broker, run one bench
# scenario with the defaults every script uses. Everything here listens and connects on
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

build_release() {
  # cargo itself decides whether anything needs rebuilding; this is quick when nothing does.
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
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

# start_surgemq SHARDS PORT
start_surgemq() {
  log "surgemq serve --shards $1 on 127.0.0.1:$2"
  "$BIN" serve --listen "127.0.0.1:$2" --shards "$1" --log-level warn &
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
