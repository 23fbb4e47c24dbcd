#!/usr/bin/env bash
# Broker memory when large messages fan out to subscribers that have stopped reading.
#
# SUBSCRIBERS clients subscribe to one topic with a small receive buffer (SO_RCVBUF 4 KiB, set
# before connecting, so the kernel holds little for them) and then never read. A publisher sends
# MESSAGES QoS 0 messages of SIZE bytes to that topic and a PINGREQ, and waits for the PINGRESP
# (the broker has taken every message). The broker's RSS is read from /proc once it settles,
# before the subscribers connect and after the messages. A broker that copies each payload into
# every subscriber's write buffer holds up to a buffer's worth of copies per subscriber; one
# that shares payloads holds each message once. Binaries run one after the other, each with a
# fresh broker (`--shards 1`, default limits).
#
# Env: BINS ("name=path ..."; default: this tree's release build as "current"), SUBSCRIBERS
# (500), SIZE (65536), MESSAGES (32), OUT (file to write the table to as well).
#
#   BINS="new=target/release/surgemq old=perf/.peers/surgemq-fe3048d" scripts/stalled-fanout-memory.sh

set -euo pipefail
SUBSCRIBERS=${SUBSCRIBERS:-500}
SIZE=${SIZE:-65536}
MESSAGES=${MESSAGES:-32}
OUT=${OUT:-}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BINS=${BINS:-"current=$BIN"}

build_release
read -r -a entries <<<"$BINS"
WORK=$(mktemp -d)
CLIENT_PID=""
cleanup() {
  [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null || true
  stop_broker
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Subscribes SUBSCRIBERS stalled clients, publishes, prints "published", then holds every
# socket open until its standard input closes.
cat >"$WORK/stalled.py" <<'PY'
import socket, sys
port, subscribers, size, messages = map(int, sys.argv[1:])
TOPIC = b"big/t"

def remaining_length(n):
    out = b""
    while True:
        n, digit = n >> 7, n & 0x7F
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out

def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body

def connect(client_id, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    s.sendall(packet(0x10, body))
    expect(s, b"\x20\x02\x00\x00")
    return s

def expect(s, want):
    got = b""
    while len(got) < len(want):
        chunk = s.recv(len(want) - len(got))
        if not chunk:
            raise SystemExit("connection closed")
        got += chunk
    if got != want:
        raise SystemExit("expected %r, got %r" % (want, got))

subs = []
for i in range(subscribers):
    s = connect(b"stalled-%d" % i, rcvbuf=4096)
    s.sendall(packet(0x82, b"\x00\x01" + len(TOPIC).to_bytes(2, "big") + TOPIC + b"\x00"))
    expect(s, b"\x90\x03\x00\x01\x00")
    subs.append(s)
pub = connect(b"publisher")
payload = b"\x5a" * size
frame = packet(0x30, len(TOPIC).to_bytes(2, "big") + TOPIC + payload)
for _ in range(messages):
    pub.sendall(frame)
pub.sendall(b"\xc0\x00")
expect(pub, b"\xd0\x00")
print("published", flush=True)
sys.stdin.read()
PY

rows=()
for entry in "${entries[@]}"; do
  name=${entry%%=*}
  path=${entry#*=}
  port=$(free_port)
  BIN=$path start_surgemq 1 "$port"
  base=$(settled_rss_kib "$BROKER_PID" 20)
  coproc CLIENTS { python3 "$WORK/stalled.py" "$port" "$SUBSCRIBERS" "$SIZE" "$MESSAGES"; }
  CLIENT_PID=$CLIENTS_PID
  read -r -t 300 reply <&"${CLIENTS[0]}" || { log "$name: the clients did not report"; exit 1; }
  [ "$reply" = published ] || { log "$name: clients said: $reply"; exit 1; }
  after=$(settled_rss_kib "$BROKER_PID" 20)
  log "$name: RSS $base KiB before, $after KiB after"
  kill "$CLIENT_PID" 2>/dev/null || true
  wait "$CLIENT_PID" 2>/dev/null || true
  CLIENT_PID=""
  stop_broker
  rows+=("| $name | $base | $after | $(( (after - base) * 1024 / SUBSCRIBERS )) |")
done

{
  echo "$SUBSCRIBERS stalled subscribers, $MESSAGES QoS 0 messages of $SIZE bytes, --shards 1"
  echo
  echo "| binary | RSS before (KiB) | RSS after (KiB) | growth per subscriber (bytes) |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "${OUT:-/dev/null}"
