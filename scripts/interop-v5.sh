#!/usr/bin/env bash
# MQTT 5 interop checks (tests/interop/paho_v5_check.py: paho-mqtt, a raw-socket client,
# mosquitto_pub/mosquitto_sub -V 5) against the surgemq binary (2 shards), or, with
# --mosquitto, against Mosquitto, to validate the checks themselves.
#
# Usage: scripts/interop-v5.sh [--mosquitto] [--strict|--lenient] [--only NAME[,NAME...]] [--list]
#   --mosquitto  run the checks against `mosquitto -c CONF` (generated config) instead of SurgeMQ
#   --strict     also require what the MQTT 5.0 spec only recommends but SurgeMQ promises
#                (PUBREC 0x10 without subscribers, DISCONNECT 0x8E on takeover); the default
#                for SurgeMQ. --lenient: accept everything the spec allows; the default for
#                Mosquitto, which uses that latitude (the script prints a "note:" line then).
#   --only       run only these checks (names as printed by --list)
#
# Prints one PASS/FAIL line per check and ends with "N passed, M failed"; exits non-zero if
# anything failed. Installs nothing (scripts/test.sh installs the tools): it stops with a clear
# message when a tool is missing. Everything runs under `timeout`; the broker is always stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKS=tests/interop/paho_v5_check.py
MODE=surgemq
STRICT=""
ONLY=all
usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit "$1"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --mosquitto) MODE=mosquitto ;;
    --strict) STRICT=yes ;;
    --lenient) STRICT=no ;;
    --only)
      [ $# -ge 2 ] || usage 2
      ONLY=$2
      shift
      ;;
    --only=*) ONLY=${1#--only=} ;;
    --list) exec python3 "$CHECKS" --list ;;
    -h | --help) usage 0 ;;
    *)
      echo "interop-v5: unknown argument '$1'" >&2
      usage 2
      ;;
  esac
  shift
done
if [ -z "$STRICT" ]; then
  if [ "$MODE" = surgemq ]; then STRICT=yes; else STRICT=no; fi
fi

missing() {
  echo "interop-v5: $1 is missing; install $2 (scripts/test.sh installs it)" >&2
  exit 2
}
command -v python3 >/dev/null 2>&1 || missing python3 "python3"
command -v timeout >/dev/null 2>&1 || missing timeout "coreutils"
command -v stdbuf >/dev/null 2>&1 || missing stdbuf "coreutils"
command -v ps >/dev/null 2>&1 || missing ps "procps"
command -v mosquitto_pub >/dev/null 2>&1 || missing mosquitto_pub "the Debian package mosquitto-clients"
command -v mosquitto_sub >/dev/null 2>&1 || missing mosquitto_sub "the Debian package mosquitto-clients"
python3 -c 'import paho.mqtt.client, paho.mqtt.properties' >/dev/null 2>&1 ||
  missing "the Python module paho.mqtt" "the PyPI package 'paho-mqtt>=2,<3'"
if [ "$MODE" = mosquitto ]; then
  command -v mosquitto >/dev/null 2>&1 || missing mosquitto "the Debian package mosquitto"
else
  command -v cargo >/dev/null 2>&1 || missing cargo "a Rust toolchain"
fi

# Reject unknown check names before starting anything.
if [ "$ONLY" != all ]; then
  known=$(python3 "$CHECKS" --list)
  for name in ${ONLY//,/ }; do
    if ! grep -qx -- "$name" <<<"$known"; then
      echo "interop-v5: unknown check '$name'; known checks:" >&2
      echo "$known" >&2
      exit 2
    fi
  done
fi

HOST=127.0.0.1
if [ "$MODE" = surgemq ]; then
  # Up to date already when `cargo test` ran before; then this is a no-op.
  cargo build --quiet --bin surgemq
  BIN=target/debug/surgemq
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/interop-v5.XXXXXX")
BROKER_PID=""
cleanup() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
      # BROKER_PID is the broker's `timeout`: kill the broker itself too, not only `timeout`.
      for pid in $(ps -o pid= --ppid "$BROKER_PID" 2>/dev/null || true); do
        kill -9 "$pid" 2>/dev/null || true
      done
      kill -9 "$BROKER_PID" 2>/dev/null || true
    fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

accepts() { # accepts PORT: true when something accepts TCP connections on it
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

start_broker() { # start_broker PORT: starts the broker in the background, sets BROKER_PID
  if [ "$MODE" = mosquitto ]; then
    # Defaults cover every check: max_topic_alias 10, no session expiry limit, will delay and
    # message expiry honoured. No persistence, so nothing is left behind.
    cat >"$WORK/mosquitto.conf" <<EOF
listener $1 $HOST
allow_anonymous true
persistence false
log_dest stderr
log_type all
EOF
    timeout 300 mosquitto -c "$WORK/mosquitto.conf" >"$WORK/broker.log" 2>&1 &
  else
    timeout 300 "$BIN" serve --listen "$HOST:$1" --shards 2 >"$WORK/broker.log" 2>&1 &
  fi
  BROKER_PID=$!
}

# Start the broker; retry with another port if the chosen one was taken in between.
for attempt in 1 2 3; do
  PORT=$(free_port)
  start_broker "$PORT"
  for _ in $(seq 100); do
    if accepts "$PORT"; then break 2; fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
  echo "interop-v5: broker did not start on port $PORT (attempt $attempt):" >&2
  cat "$WORK/broker.log" >&2
done
if [ -z "$BROKER_PID" ]; then
  echo "interop-v5: cannot start the $MODE broker" >&2
  exit 1
fi
if [ "$MODE" = mosquitto ]; then
  echo "broker: $(mosquitto -h 2>/dev/null | head -n 1 || true) on $HOST:$PORT (pid $BROKER_PID)"
else
  echo "broker: $BIN serve --listen $HOST:$PORT --shards 2 (pid $BROKER_PID)"
fi
echo "checks: $ONLY ($([ "$STRICT" = yes ] && echo strict || echo lenient))"

PASSED=0
FAILED=0
report() { # report NAME STATUS [DETAIL]
  if [ "$2" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    echo "PASS $1"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $1${3:+: $3}"
  fi
}

# --- the checks -------------------------------------------------------------------------------
# All 20 take about 30 s against a working broker; every wait inside has its own timeout.
out="$WORK/checks.out"
status=0
strict_arg=()
[ "$STRICT" = yes ] && strict_arg=(--strict)
timeout 100 python3 "$CHECKS" --host "$HOST" --port "$PORT" "${strict_arg[@]}" "$ONLY" >"$out" 2>&1 ||
  status=$?
while IFS= read -r line; do
  case "$line" in
    "PASS "*) report "${line#PASS }" 0 ;;
    "FAIL "*) report "${line#FAIL }" 1 ;;
    *) echo "  $line" ;;
  esac
done <"$out"
if [ "$status" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
  report "$CHECKS" 1 "exited with status $status$([ "$status" -eq 124 ] && echo ' (timeout)')"
fi

# --- the broker survived all of it -----------------------------------------------------------
if kill -0 "$BROKER_PID" 2>/dev/null; then
  report "broker still running" 0
else
  report "broker still running" 1 "it exited: see the log below"
fi

if [ "$FAILED" -ne 0 ]; then
  echo "broker log (last 40 lines):"
  tail -n 40 "$WORK/broker.log"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
