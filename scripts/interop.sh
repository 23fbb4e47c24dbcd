#!/usr/bin/env bash
# Interop tests: the surgemq binary (2 shards) against clients we did not write: Mosquitto's
# mosquitto_pub/mosquitto_sub and paho-mqtt (tests/interop/paho_check.py).
#
# Prints one PASS/FAIL line per check and ends with "N passed, M failed"; exits non-zero if
# anything failed. Installs nothing (scripts/test.sh does): it stops with a clear message when
# a tool is missing. Every client runs under `timeout`, and the broker is always stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  echo "interop: $1 is missing; install $2 (scripts/test.sh installs it)" >&2
  exit 2
}
command -v mosquitto_pub >/dev/null 2>&1 || missing mosquitto_pub "the Debian package mosquitto-clients"
command -v mosquitto_sub >/dev/null 2>&1 || missing mosquitto_sub "the Debian package mosquitto-clients"
command -v python3 >/dev/null 2>&1 || missing python3 "python3"
command -v timeout >/dev/null 2>&1 || missing timeout "coreutils"
command -v stdbuf >/dev/null 2>&1 || missing stdbuf "coreutils"
command -v ps >/dev/null 2>&1 || missing ps "procps"
python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || missing "the Python module paho.mqtt" "the PyPI package 'paho-mqtt>=2,<3'"

# Up to date already when `cargo test` ran before; then this is a no-op.
cargo build --quiet --bin surgemq
BIN=target/debug/surgemq
HOST=127.0.0.1

WORK=$(mktemp -d)
BROKER_PID=""
BG_PIDS=()
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$BROKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$BROKER_PID" 2>/dev/null || true
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

# The ACL paho's interop tests run against (Mosquitto's test configuration): everything is
# allowed but test/nosubscribe. Every check below runs under it.
printf 'topic readwrite #\ntopic deny test/nosubscribe\n' >"$WORK/acl"

# Start the broker; retry with another port if the chosen one was taken in between.
for attempt in 1 2 3; do
  PORT=$(free_port)
  "$BIN" serve --listen "$HOST:$PORT" --shards 2 --acl-file "$WORK/acl" >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do
    if accepts "$PORT"; then break 2; fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
  echo "interop: broker did not start on port $PORT (attempt $attempt):" >&2
  cat "$WORK/broker.log" >&2
done
if [ -z "$BROKER_PID" ]; then
  echo "interop: cannot start $BIN" >&2
  exit 1
fi
echo "broker: $BIN serve --listen $HOST:$PORT --shards 2 --acl-file (readwrite #, deny test/nosubscribe) (pid $BROKER_PID)"

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

check_eq() { # check_eq NAME GOT WANT
  if [ "$2" = "$3" ]; then
    report "$1" 0
  else
    report "$1" 1 "got '$2', want '$3'"
  fi
}

# Message lines of mosquitto_sub output: "MSG|topic|qos|retain|payload".
FORMAT='MSG|%t|%q|%r|%p'

# start_sub NAME ARGS...: mosquitto_sub under `timeout 30` in the background (debug output on,
# so that the SUBACK can be waited for), output in $WORK/NAME.out, the pid of `timeout` in
# PID_NAME. Waits until it is subscribed. Every caller passes -W or -C too.
start_sub() {
  local name=$1
  shift
  timeout 30 stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$PORT" -F "$FORMAT" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  BG_PIDS+=("$pid")
  eval "PID_$name=$pid"
  for _ in $(seq 100); do
    grep -q "received SUBACK" "$WORK/$name.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "mosquitto_sub $name did not subscribe: $(cat "$WORK/$name.out" "$WORK/$name.err")" >&2
  return 1
}

# wait_sub NAME: waits (at most 15 s) for the background mosquitto_sub NAME to exit; prints
# its messages.
wait_sub() {
  local pid_var="PID_$1"
  local pid=${!pid_var}
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep '^MSG|' "$WORK/$1.out" || true
}

pub() { # pub ARGS...: mosquitto_pub with a timeout
  timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" "$@"
}

# --- mosquitto clients: QoS 0, 1, 2 -----------------------------------------------------------
for qos in 0 1 2; do
  name="mosquitto pub/sub at QoS $qos"
  topic="interop/qos/$qos"
  payload="hello at QoS $qos, with spaces and ümlauts"
  if start_sub "sub$qos" -t "$topic" -q "$qos" -C 1 -W 10 &&
    pub -t "$topic" -q "$qos" -m "$payload"; then
    check_eq "$name" "$(wait_sub "sub$qos")" "MSG|$topic|$qos|0|$payload"
  else
    report "$name" 1 "client failed"
  fi
done

# --- MQTT 3.1 (MQIsdp) with mosquitto clients -------------------------------------------------
name="mosquitto pub/sub with MQTT 3.1"
if start_sub sub31 -V mqttv31 -t interop/v31 -q 1 -C 1 -W 10 &&
  pub -V mqttv31 -t interop/v31 -q 1 -m "old but gold"; then
  check_eq "$name" "$(wait_sub sub31)" "MSG|interop/v31|1|0|old but gold"
else
  report "$name" 1 "client failed"
fi

# --- retained ----------------------------------------------------------------------------------
name="mosquitto retained message"
if pub -t interop/retained -q 1 -r -m "kept for later"; then
  got=$(timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -F "$FORMAT" -t interop/retained -q 1 -C 1 -W 5 2>&1 || true)
  check_eq "$name" "$got" "MSG|interop/retained|1|1|kept for later"
else
  report "$name" 1 "mosquitto_pub failed"
fi

name="mosquitto retained message cleared by an empty one"
if pub -t interop/retained -q 1 -r -n; then
  # -W 2: nothing may arrive; mosquitto_sub exits with status 27 on that timeout.
  got=$(timeout 10 mosquitto_sub -h "$HOST" -p "$PORT" -F "$FORMAT" -t interop/retained -q 1 -C 1 -W 2 2>/dev/null || true)
  check_eq "$name" "$got" ""
else
  report "$name" 1 "mosquitto_pub failed"
fi

# --- will -----------------------------------------------------------------------------------------
name="mosquitto will on SIGKILL"
if start_sub willwatch -t interop/will -q 1 -C 1 -W 10 &&
  start_sub willclient -t interop/unused -W 25 --will-topic interop/will --will-payload "client died" --will-qos 1; then
  # SIGKILL the client itself (the child of its `timeout`): no DISCONNECT, the socket just
  # closes.
  client_pid=$(ps -o pid= --ppid "$PID_willclient" | tr -d ' ')
  [ -n "$client_pid" ] && kill -9 "$client_pid"
  wait "$PID_willclient" 2>/dev/null || true
  check_eq "$name" "$(wait_sub willwatch)" "MSG|interop/will|1|0|client died"
else
  report "$name" 1 "client failed"
fi

name="mosquitto no will after DISCONNECT"
# A clean exit of mosquitto_sub (-C 1 reached) sends DISCONNECT: no will may be published.
if start_sub nowillwatch -t interop/nowill -q 1 -C 1 -W 3 &&
  start_sub nowillclient -t interop/trigger -C 1 -W 10 --will-topic interop/nowill --will-payload "must not" --will-qos 1 &&
  pub -t interop/trigger -m "exit now"; then
  wait_sub nowillclient >/dev/null
  check_eq "$name" "$(wait_sub nowillwatch)" ""
else
  report "$name" 1 "client failed"
fi

# --- the ACL, as Mosquitto means it --------------------------------------------------------------
name="ACL: a subscription to the denied topic alone is refused (SUBACK 0x80)"
got=$(timeout 10 mosquitto_sub -d -h "$HOST" -p "$PORT" -t test/nosubscribe -q 1 -C 1 -W 2 2>&1 || true)
if grep -q "All subscription requests were denied" <<<"$got"; then
  report "$name" 0
else
  report "$name" 1 "mosquitto_sub said: $(tr '\n' ' ' <<<"$got")"
fi

name="ACL: # overlapping the deny is granted; only the denied topic is withheld"
# The publisher may not write the denied topic either (a deny rule denies both ways), so
# what # would get from it is nothing; the other topic arrives.
if start_sub aclhash -t '#' -q 1 -C 1 -W 10; then
  pub -t test/nosubscribe -q 1 -m "must not arrive" 2>/dev/null || true
  pub -t test/allowed -q 1 -m "arrives"
  check_eq "$name" "$(wait_sub aclhash)" "MSG|test/allowed|1|0|arrives"
else
  report "$name" 1 "mosquitto_sub could not subscribe to #"
fi

# --- paho-mqtt -------------------------------------------------------------------------------------
paho_out="$WORK/paho.out"
paho_status=0
timeout 90 python3 tests/interop/paho_check.py "$HOST" "$PORT" >"$paho_out" 2>&1 || paho_status=$?
while IFS= read -r line; do
  case "$line" in
    "PASS "*) report "${line#PASS }" 0 ;;
    "FAIL "*) report "${line#FAIL }" 1 ;;
    *) echo "  paho: $line" ;;
  esac
done <"$paho_out"
if [ "$paho_status" -ne 0 ] && ! grep -q '^FAIL ' "$paho_out"; then
  report "paho-mqtt script" 1 "exited with status $paho_status"
fi

# --- the broker survived all of it -----------------------------------------------------------------
if kill -0 "$BROKER_PID" 2>/dev/null; then
  report "broker still running" 0
else
  report "broker still running" 1 "it exited: see the log below"
fi

# --- a clean stop: exit status 0 on SIGTERM, within 5 s ------------------------------------------
kill -TERM "$BROKER_PID" 2>/dev/null || true
for _ in $(seq 50); do
  kill -0 "$BROKER_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$BROKER_PID" 2>/dev/null; then
  report "broker exits on SIGTERM" 1 "still running after 5 s"
else
  status=0
  wait "$BROKER_PID" || status=$?
  BROKER_PID=""
  check_eq "broker exits with status 0 on SIGTERM" "$status" 0
fi

if [ "$FAILED" -ne 0 ]; then
  echo "broker log (last 40 lines):"
  tail -n 40 "$WORK/broker.log"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
