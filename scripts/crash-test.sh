#!/usr/bin/env bash
# Crash test: kill -9 the broker mid-burst five times, restart it from its data directory, and
# check that nothing it acknowledged is lost and no QoS 2 message arrives twice
# (tests/interop/crash_check.py says what exactly; it starts, kills and restarts the broker).
#
# Usage: scripts/crash-test.sh [--mosquitto] [--gentle] [--seed N] [--rounds N]
#   default      target/debug/surgemq (built here; SURGEMQ_BIN=path uses that binary instead,
#                unbuilt) serve --listen 127.0.0.1:PORT --shards S --data-dir DIR
#   --mosquitto  the same checks against Mosquitto with `persistence true`, which saves only
#                on autosave and shutdown: it is expected to FAIL, which shows the test catches
#                loss. MOSQUITTO_AUTOSAVE=SECONDS adds an autosave_interval.
#   --gentle     SIGTERM instead of kill -9: a control run, which a broker that saves its state
#                on shutdown (Mosquitto too) passes
#   --seed N     replay a run (every run prints its seed)
#   --rounds N   number of kills (default 5)
#
# Prints PASS/FAIL lines and a summary; exits non-zero on any failure. Bounded in time (the
# driver runs under `timeout`), and the broker and the driver are killed on exit whatever
# happens. KEEP_WORK=1 keeps the temporary directory (data dir, broker log).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,19s/^# \{0,1\}//p' "$0"; }

TARGET=surgemq
DRIVER_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mosquitto) TARGET=mosquitto ;;
    --gentle) DRIVER_ARGS+=(--gentle) ;;
    --seed | --rounds)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      DRIVER_ARGS+=("$1" "$2")
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "crash-test: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

missing() {
  echo "crash-test: $1 is missing; install $2" >&2
  exit 2
}
command -v python3 >/dev/null 2>&1 || missing python3 "python3"
command -v timeout >/dev/null 2>&1 || missing timeout "coreutils"
python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || missing "the Python module paho.mqtt" "the PyPI package 'paho-mqtt>=2,<3'"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/surgemq-crash.XXXXXX")
DATA="$WORK/data"
PID_FILE="$WORK/broker.pid"
LOG="$WORK/broker.log"
DRIVER_PID=""

# kill_pid PID: SIGTERM, SIGKILL after 5 s, reap.
kill_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cleanup() {
  local pid
  if [ -n "$DRIVER_PID" ]; then
    kill_pid "$DRIVER_PID" # the driver kills its broker on SIGTERM...
  fi
  pid=$(cat "$PID_FILE" 2>/dev/null || true) # ...and this one whatever happened to the driver
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    echo "crash-test: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

if [ "$TARGET" = mosquitto ]; then
  MOSQUITTO=$(command -v mosquitto || true)
  [ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
  [ -n "$MOSQUITTO" ] || missing mosquitto "the Debian package mosquitto"
  mkdir -p "$DATA"
  cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DATA/
max_queued_messages 1000000
max_inflight_messages 20
# Run as root, Mosquitto would switch to the user "mosquitto", which cannot write to $DATA.
user $(id -un)
EOF
  if [ -n "${MOSQUITTO_AUTOSAVE:-}" ]; then
    echo "autosave_interval $MOSQUITTO_AUTOSAVE" >>"$WORK/mosquitto.conf"
  fi
  BROKER="$MOSQUITTO -c $WORK/mosquitto.conf"
  # Mosquitto counts a v3.1.1 client's incoming QoS 2 messages against max_inflight_messages
  # too, and beyond it drops them, PUBREC or not: a window of 20 keeps that loss out of the test.
  DRIVER_ARGS+=(--window 20)
else
  if [ -z "${SURGEMQ_BIN:-}" ]; then
    cargo build --quiet --bin surgemq
  fi
  BIN=${SURGEMQ_BIN:-target/debug/surgemq}
  [ -x "$BIN" ] || { echo "crash-test: $BIN is not an executable" >&2; exit 2; }
  # Fail fast and say why when the binary has no persistence to test.
  help=$("$BIN" serve --help 2>&1 || true)
  if ! grep -q -- '--data-dir' <<<"$help"; then
    echo "FAIL crash test ran: $BIN serve has no --data-dir option (no persistence in this binary)"
    exit 1
  fi
  # The data directory does not exist yet: the first start creates it. The offline queue must
  # hold every message of the run (the default limit, 1000, would drop them, acknowledged).
  BROKER="$BIN serve --listen 127.0.0.1:$PORT --shards {shards} --data-dir $DATA --max-queued-messages 1000000 --compact-after-bytes 262144"
fi
echo "crash-test: $BROKER"

# A run takes 10-20 s; every wait in the driver has its own timeout, and this one bounds the
# whole run even if they all expired.
timeout --kill-after=10 120 python3 -u tests/interop/crash_check.py \
  --broker "$BROKER" --port "$PORT" --log "$LOG" --pid-file "$PID_FILE" \
  ${DRIVER_ARGS[@]+"${DRIVER_ARGS[@]}"} &
DRIVER_PID=$!
status=0
wait "$DRIVER_PID" || status=$?
DRIVER_PID=""
if [ "$status" -eq 124 ]; then
  echo "FAIL crash test ran: timed out after 120 s"
fi
exit "$status"
