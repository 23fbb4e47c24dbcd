#!/usr/bin/env bash
# Bridge interop checks with independent programs only: a real Mosquitto as the remote broker,
# `surgemq serve -c FILE` as the local broker configured by a Mosquitto `connection` section
# (and once by a TOML [[bridge]] table), mosquitto_pub / mosquitto_sub as the clients.
# With --mosquitto the local broker is Mosquitto too (the same file), to validate the checks.
#
# Usage: scripts/interop-bridge.sh [--mosquitto]
#
# The checks: (a) notification: "1" retained at $SYS/broker/connection/<clientid>/state on the
# local and the remote broker; (b) out_with_prefixes: 500 QoS 1 messages published locally on
# edge/data reach a remote subscriber as site1/data, all of them, in order; (c)
# in_with_prefixes: a remote message on site1/cmd/reboot reaches a local subscriber as
# from-cloud/cmd/reboot at QoS 2; (d) both_no_echo: on a `both` topic, a local message arrives
# once at a local subscriber and once at a remote one, and a remote message once on each side;
# (e) retained_crosses: a retained local message is retained on the remote broker; (f)
# tls_bridge_checks_the_certificate: over TLS (bridge_cafile) to the remote broker's TLS
# listener messages cross, and a bridge trusting another CA never connects; (g) sys_counters
# and metrics_counters (SurgeMQ only): $SYS/broker/bridges/NAME/... and /metrics
# (promtool-clean when promtool is installed) count what crossed; (h) toml_bridge (SurgeMQ
# only): the same `out` topic from a TOML file. Ends with
# "N passed, M failed"; exits non-zero if anything failed. Installs nothing (scripts/test.sh
# does); everything runs under `timeout` and every broker is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

MODE=surgemq
case "${1:-}" in
  --mosquitto) MODE=mosquitto ;;
  "") ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "interop-bridge: unknown argument '$1'" >&2
    exit 2
    ;;
esac
require mosquitto "the Debian package mosquitto"
require mosquitto_pub "the Debian package mosquitto-clients"
require timeout "coreutils"
require python3 "python3"
require openssl "the Debian package openssl"
if [ "$MODE" = surgemq ]; then
  require cargo "a Rust toolchain"
  cargo build --quiet --bin surgemq
  BIN="$ROOT/target/debug/surgemq"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/interop-bridge.XXXXXX")
REMOTE_PID=""
cleanup() {
  stop_broker
  [ -z "$REMOTE_PID" ] || stop_pid "$REMOTE_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT
ROOT_USER=""
[ "$(id -u)" -ne 0 ] || ROOT_USER="user root"

# A CA and a certificate for 127.0.0.1 for the remote broker's TLS listener; another CA that
# signed nothing there.
mkca() { # mkca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/$1.key" -out "$WORK/$1.crt" -subj "/CN=$1" 2>/dev/null
}
mkca ca
mkca otherca
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/server.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 2 -out "$WORK/server.crt" -extfile "$WORK/server.ext" 2>/dev/null

REMOTE=$(free_port)
REMOTE_TLS=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n%s\nlistener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n' \
  "$REMOTE" "$ROOT_USER" "$REMOTE_TLS" "$WORK/ca.crt" "$WORK/server.crt" "$WORK/server.key" >"$WORK/remote.conf"
mosquitto -c "$WORK/remote.conf" >"$WORK/remote.log" 2>&1 &
REMOTE_PID=$!
wait_port "$REMOTE"

ID=interop-bridge
BRIDGE="connection cloud
address 127.0.0.1:$REMOTE
remote_clientid $ID
cleansession false
restart_timeout 1
topic data out 1 edge/ site1/
topic cmd/# in 2 from-cloud/ site1/
topic chat/# both 1
topic status out 1 edge/ site1/

connection secure
address 127.0.0.1:$REMOTE_TLS
remote_clientid $ID-tls
bridge_cafile $WORK/ca.crt
restart_timeout 1
topic secure/# out 1

connection untrusted
address 127.0.0.1:$REMOTE_TLS
remote_clientid $ID-untrusted
bridge_cafile $WORK/otherca.crt
restart_timeout 1
topic untrusted/# out 1"

start_local() { # start_local PORT CONF
  if [ "$MODE" = mosquitto ]; then
    mosquitto -c "$2" >"$WORK/local.log" 2>&1 &
  else
    METRICS=$(free_port)
    "$BIN" serve -c "$2" --shards 2 --metrics-listen "127.0.0.1:$METRICS" >"$WORK/local.log" 2>&1 &
  fi
  BROKER_PID=$!
  wait_port "$1"
}

LOCAL=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nsys_interval 1\n%s\n\n%s\n' "$LOCAL" "$ROOT_USER" "$BRIDGE" >"$WORK/local.conf"
start_local "$LOCAL" "$WORK/local.conf"

sub() { # sub PORT COUNT SECONDS ARGS...: prints "topic payload" lines
  local port=$1 count=$2 secs=$3
  shift 3
  timeout $((secs + 2)) mosquitto_sub -p "$port" -h 127.0.0.1 -C "$count" -W "$secs" -v "$@" 2>/dev/null || true
}
pub() { timeout 10 mosquitto_pub -p "$1" -h 127.0.0.1 "${@:2}"; }

# (a) The link comes up: "1" retained on both sides.
got_local=$(sub "$LOCAL" 1 10 -t "\$SYS/broker/connection/$ID/state")
got_remote=$(sub "$REMOTE" 1 10 -t "\$SYS/broker/connection/$ID/state")
[ "$got_local" = "\$SYS/broker/connection/$ID/state 1" ] && [ "$got_remote" = "\$SYS/broker/connection/$ID/state 1" ]
report notification $? "local: '$got_local', remote: '$got_remote'"

# (b) out with prefixes, QoS 1, all and in order.
N=500
sub "$REMOTE" "$N" 15 -q 1 -t site1/data >"$WORK/out.txt" &
SUB=$!
sleep 0.5
seq 1 "$N" | sed 's/^/m/' >"$WORK/lines.txt"
pub "$LOCAL" -q 1 -t edge/data -l <"$WORK/lines.txt"
wait "$SUB"
sed 's/^site1\/data //' "$WORK/out.txt" | cmp -s - "$WORK/lines.txt"
report out_with_prefixes $? "$(wc -l <"$WORK/out.txt") of $N arrived as site1/data in order"

# (c) in with prefixes, QoS 2.
sub "$LOCAL" 1 10 -q 2 -t 'from-cloud/#' >"$WORK/in.txt" &
SUB=$!
sleep 0.5
pub "$REMOTE" -q 2 -t site1/cmd/reboot -m now
wait "$SUB"
[ "$(cat "$WORK/in.txt")" = "from-cloud/cmd/reboot now" ]
report in_with_prefixes $? "got '$(cat "$WORK/in.txt")'"

# (d) both, no echo: each side's subscriber gets each message exactly once.
sub "$LOCAL" 3 3 -q 1 -t 'chat/#' >"$WORK/chat-local.txt" &
SUB1=$!
sub "$REMOTE" 3 3 -q 1 -t 'chat/#' >"$WORK/chat-remote.txt" &
SUB2=$!
sleep 0.5
pub "$LOCAL" -q 1 -t chat/a -m from-local
pub "$REMOTE" -q 1 -t chat/b -m from-remote
wait "$SUB1" "$SUB2"
expected=$'chat/a from-local\nchat/b from-remote'
[ "$(sort "$WORK/chat-local.txt")" = "$expected" ] && [ "$(sort "$WORK/chat-remote.txt")" = "$expected" ]
report both_no_echo $? "local: $(tr '\n' '|' <"$WORK/chat-local.txt") remote: $(tr '\n' '|' <"$WORK/chat-remote.txt")"

# (e) A retained message stays retained across.
pub "$LOCAL" -q 1 -r -t edge/status -m online
sleep 0.5
got=$(sub "$REMOTE" 1 5 -t site1/status)
[ "$got" = "site1/status online" ]
report retained_crosses $? "a new remote subscriber got '$got'"

# (f) TLS: a bridge that trusts the remote broker's CA carries messages; one that trusts
# another CA never connects, and nothing it would carry crosses.
sub "$REMOTE" 2 4 -q 1 -t 'secure/#' -t 'untrusted/#' >"$WORK/tls.txt" &
SUB=$!
sleep 0.5
pub "$LOCAL" -q 1 -t secure/a -m over-tls
pub "$LOCAL" -q 1 -t untrusted/a -m must-not-cross
wait "$SUB"
untrusted=$(sub "$LOCAL" 1 1 -t "\$SYS/broker/connection/$ID-untrusted/state")
[ "$(cat "$WORK/tls.txt")" = "secure/a over-tls" ] && [ "$untrusted" != "\$SYS/broker/connection/$ID-untrusted/state 1" ]
report tls_bridge_checks_the_certificate $? "remote got '$(tr '\n' '|' <"$WORK/tls.txt")', untrusted bridge state '$untrusted'"

# (g) SurgeMQ's own counters: $SYS/broker/bridges/cloud/... (sent counts (b), (d) and (e)).
if [ "$MODE" = surgemq ]; then
  sleep 1.5
  sub "$LOCAL" 3 5 -t '$SYS/broker/bridges/cloud/connected' -t '$SYS/broker/bridges/cloud/messages/sent' \
    -t '$SYS/broker/bridges/cloud/messages/received' | sort >"$WORK/sys.txt"
  printf '%s\n' '$SYS/broker/bridges/cloud/connected 1' "\$SYS/broker/bridges/cloud/messages/received 2" \
    "\$SYS/broker/bridges/cloud/messages/sent $((N + 2))" | sort | cmp -s - "$WORK/sys.txt"
  report sys_counters $? "got $(tr '\n' '|' <"$WORK/sys.txt")"
  python3 -c "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$METRICS/metrics', timeout=5).read().decode())" >"$WORK/metrics.txt"
  grep -qx "surgemq_bridge_messages_sent_total{bridge=\"cloud\"} $((N + 2))" "$WORK/metrics.txt" &&
    grep -qx 'surgemq_bridge_connected{bridge="cloud"} 1' "$WORK/metrics.txt" &&
    { ! command -v promtool >/dev/null || promtool check metrics <"$WORK/metrics.txt" >/dev/null 2>&1; }
  report metrics_counters $? "$(grep '^surgemq_bridge' "$WORK/metrics.txt" | tr '\n' '|')"
fi

# (h) The same bridge from a TOML file.
if [ "$MODE" = surgemq ]; then
  stop_broker
  LOCAL=$(free_port)
  cat >"$WORK/local.toml" <<TOML
listen = ["127.0.0.1:$LOCAL"]
[[bridge]]
name = "cloud"
address = "127.0.0.1:$REMOTE"
remote_clientid = "$ID-toml"
restart_timeout = 1
topic = ["data out 1 edge/ toml/"]
TOML
  start_local "$LOCAL" "$WORK/local.toml"
  sub "$LOCAL" 1 10 -t "\$SYS/broker/connection/$ID-toml/state" >/dev/null
  sub "$REMOTE" 1 10 -q 1 -t toml/data >"$WORK/toml.txt" &
  SUB=$!
  sleep 0.5
  pub "$LOCAL" -q 1 -t edge/data -m via-toml
  wait "$SUB"
  [ "$(cat "$WORK/toml.txt")" = "toml/data via-toml" ]
  report toml_bridge $? "got '$(cat "$WORK/toml.txt")'"
fi

finish_checks "$WORK/local.log"
