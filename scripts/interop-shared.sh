#!/usr/bin/env bash
# Shared-subscription interop checks ($share/{group}/{filter}, MQTT 5 section 4.8.2, from MQTT 5
# and 3.1.1 clients) with independent clients (tests/interop/shared_check.py: paho-mqtt, a
# raw-socket client, mosquitto_pub) against the surgemq binary (2 shards), or, with
# --mosquitto, against Mosquitto, to validate the checks themselves.
#
# Usage: scripts/interop-shared.sh [--mosquitto] [--only NAME[,NAME...]] [--list]
#   --mosquitto  run the checks against `mosquitto -c CONF` (generated config) instead of SurgeMQ
#   --only       run only these checks (names as printed by --list)
#
# The checks: (a) groups_and_plain_subscriber: two groups (4 v5 members, 2 v3.1.1 members) and
# a plain subscriber on one filter, 2,000 QoS 1 messages from mosquitto_pub: each group gets
# every message exactly once, the plain subscriber all; (b) even_share: each member of 4 gets
# 15-35%; (c) retained_not_on_shared; (d) invalid_share_names: $share//a, $share/g+/a,
# $share/g#/a, $share/g get SUBACK 0x80 (3.1.1) / 0x8F (v5); (e) no_local_on_shared: DISCONNECT
# 0x82; (f) unsubscribe_one_member; (g) killed_member_messages_go_to_others: a member that
# leaves with unacknowledged QoS 1 messages, whose session ends: the others get them.
#
# Against SurgeMQ every check must PASS exactly as the spec says (--strict). Against Mosquitto
# a check where it departs from the spec prints DIFF (recorded, not a failure; Mosquitto 2.0.11
# does so in c, d and e), and (g) is skipped: SurgeMQ only, Mosquitto drops those messages.
# Ends with "N passed, M failed" (and the DIFF and SKIP counts); exits non-zero if anything
# failed. Installs nothing (scripts/test.sh installs the tools): it stops with a clear message
# when a tool is missing. Everything runs under `timeout`; the broker is always stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

CHECKS=tests/interop/shared_check.py
MODE=surgemq
ONLY=all
usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit "$1"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --mosquitto) MODE=mosquitto ;;
    --only)
      [ $# -ge 2 ] || usage 2
      ONLY=$2
      shift
      ;;
    --only=*) ONLY=${1#--only=} ;;
    --list) exec python3 "$CHECKS" --list ;;
    -h | --help) usage 0 ;;
    *)
      echo "interop-shared: unknown argument '$1'" >&2
      usage 2
      ;;
  esac
  shift
done

require python3 "python3"
require timeout "coreutils"
require mosquitto_pub "the Debian package mosquitto-clients"
if ! python3 -c 'import paho.mqtt.client, paho.mqtt.properties' >/dev/null 2>&1; then
  echo "interop-shared: the Python module paho.mqtt is missing; install the PyPI package" \
    "'paho-mqtt>=2,<3' (scripts/test.sh installs it)" >&2
  exit 2
fi
if [ "$MODE" = mosquitto ]; then
  require mosquitto "the Debian package mosquitto"
else
  require cargo "a Rust toolchain"
fi

# Reject unknown check names before starting anything.
check_names "$CHECKS" "$ONLY"

if [ "$MODE" = surgemq ]; then
  # Up to date already when `cargo test` ran before; then this is a no-op.
  cargo build --quiet --bin surgemq
  BIN="$ROOT/target/debug/surgemq"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/interop-shared.XXXXXX")
cleanup() {
  # BROKER_PID is the broker's `timeout`; its TERM reaches the broker (a stopped `timeout`
  # kills its child).
  stop_broker
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_broker() { # start_broker PORT: the broker in the background, BROKER_PID set
  if [ "$MODE" = mosquitto ]; then
    # No per-client queue limit (its default, 1000, would drop QoS 1 messages queued for the
    # plain subscriber of check a: a limit, not what is checked). No persistence.
    cat >"$WORK/mosquitto.conf" <<EOF
listener $1 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
log_dest stderr
log_type error
log_type warning
EOF
    timeout 300 mosquitto -c "$WORK/mosquitto.conf" >"$WORK/broker.log" 2>&1 &
  else
    timeout 300 "$BIN" serve --listen "127.0.0.1:$1" --shards 2 >"$WORK/broker.log" 2>&1 &
  fi
  BROKER_PID=$!
}

if ! start_on_free_port start_broker "$WORK/broker.log"; then
  echo "interop-shared: cannot start the $MODE broker" >&2
  exit 1
fi

args=(--host 127.0.0.1 --port "$PORT")
if [ "$MODE" = mosquitto ]; then
  echo "broker: $(mosquitto -h 2>/dev/null | head -n 1 || true) on 127.0.0.1:$PORT (pid $BROKER_PID)"
  # Measured with 2.0.11: the member's 100 unacknowledged messages are dropped with its
  # session, the other members get 200 of 300.
  args+=(--skip "killed_member_messages_go_to_others=SurgeMQ only: Mosquitto drops a departed member's unacknowledged messages instead of sending them to the other members (MQTT 5 4.8.2 allows either)")
else
  echo "broker: $BIN serve --listen 127.0.0.1:$PORT --shards 2 (pid $BROKER_PID)"
  args+=(--strict)
fi
echo "checks: $ONLY ($([ "$MODE" = surgemq ] && echo "strict: the spec's answers" || echo "departures from the spec recorded as DIFF"))"

# All 7 take about 15 s against a working broker; every wait inside has its own timeout.
run_checker 150 "$WORK/checks.out" "$CHECKS" "${args[@]}" "$ONLY"
finish_checks "$WORK/broker.log"
