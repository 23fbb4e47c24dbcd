#!/usr/bin/env bash
# Memory per idle MQTT connection: SurgeMQ (release build, 2 shards) and, for comparison,
# Mosquitto. A Python client opens 5,000 and then 15,000 connections in total (CONNECT with
# keepalive $KEEPALIVE (default 0), CONNACK 0 checked, then silence), spread over source addresses 127.0.0.2-9;
# the broker's RSS is read from /proc before and after each step.
#
# TRANSPORT=tls (or ws, wss; default tcp) does the same over MQTT over TLS (the clients complete
# the TLS handshake with Python's ssl module, then CONNECT), WebSockets (upgrade on /mqtt, then
# CONNECT in a binary frame) or both: each broker serves only that transport's listener, with an
# EC P-256 certificate for 127.0.0.1 signed by a CA made with openssl for the run.
#
# Writes perf/results/<date>-idle-memory.md (<date>-<transport>-idle-memory.md for the others;
# OUT overrides the path) and prints the same.
# Everything runs on 127.0.0.1 and stops by itself. Usage: scripts/idle-memory.sh
# Environment: STEPS (default "5000 15000"), OUT, SKIP_MOSQUITTO=1, KEEPALIVE (seconds the
# clients ask for in CONNECT, default 0; they stay silent either way, well within 1.5x of it),
# SURGEMQ_ARGS (more flags for `surgemq serve`, e.g. "--park-idle-after 0"), TRANSPORT,
# SURGEMQ_BIN (a surgemq binary to measure instead of building target/release/surgemq: for
# before/after runs of two builds, interleaved).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-"5000 15000"}
KEEPALIVE=${KEEPALIVE:-0}
SURGEMQ_ARGS=${SURGEMQ_ARGS:-}
TRANSPORT=${TRANSPORT:-tcp}
case $TRANSPORT in
  tcp) OUT=${OUT:-perf/results/$(date -u +%Y-%m-%d)-idle-memory.md} ;;
  tls | ws | wss) OUT=${OUT:-perf/results/$(date -u +%Y-%m-%d)-$TRANSPORT-idle-memory.md} ;;
  *) echo "TRANSPORT must be tcp, tls, ws or wss, not '$TRANSPORT'" >&2; exit 2 ;;
esac
WORK=$(mktemp -d)
BROKER_PID=""
CLIENT_PID=""

cleanup() {
  [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null || true
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Each process needs a descriptor per connection (15,000 and a few).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 16000 ]; then
  echo "open-file limit $(ulimit -n) is below 16000: cannot hold 15,000 connections" >&2
  exit 1
fi

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
if [ -n "${SURGEMQ_BIN:-}" ]; then
  BIN=$SURGEMQ_BIN
else
  cargo build --release --quiet
  BIN=target/release/surgemq
fi

# TLS: a CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a CA
# certificate as the server's own: basicConstraints CA:FALSE).
CA="$WORK/ca.pem" CERT="$WORK/server.pem" KEY="$WORK/server.key"
if [ "$TRANSPORT" = tls ] || [ "$TRANSPORT" = wss ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=SurgeMQ idle-memory CA" -keyout "$WORK/ca.key" -out "$CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$KEY" -out "$WORK/server.csr" 2>/dev/null
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' >"$WORK/server.ext"
  openssl x509 -req -in "$WORK/server.csr" -CA "$CA" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/server.ext" -out "$CERT" 2>/dev/null
fi
SURGEMQ_LISTEN=("127.0.0.1:@PORT@")
case $TRANSPORT in
  tls) SURGEMQ_LISTEN=("mqtts://127.0.0.1:@PORT@" --cert "$CERT" --key "$KEY") ;;
  ws) SURGEMQ_LISTEN=("ws://127.0.0.1:@PORT@/mqtt") ;;
  wss) SURGEMQ_LISTEN=("wss://127.0.0.1:@PORT@/mqtt" --cert "$CERT" --key "$KEY") ;;
esac

# The idle clients: connect `count` more clients whenever a line "count" arrives on stdin,
# answer "ready <total>" once every CONNACK 0 is in; exit on "quit" or end of input.
cat >"$WORK/idle_clients.py" <<'PY'
import base64, os, resource, socket, ssl, sys, time
from concurrent.futures import ThreadPoolExecutor

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port = int(sys.argv[1])
keepalive = int(sys.argv[2]).to_bytes(2, "big")
transport = sys.argv[3] if len(sys.argv) > 3 else "tcp"
cafile = sys.argv[4] if len(sys.argv) > 4 else None
tls = None
if transport in ("tls", "wss"):
    tls = ssl.create_default_context(cafile=cafile)
    tls.check_hostname = True
ws = transport in ("ws", "wss")
socks = []

def connect_packet(client_id):
    body = b"\x00\x04MQTT\x04\x02" + keepalive + len(client_id).to_bytes(2, "big") + client_id
    return b"\x10" + bytes([len(body)]) + body

def ws_frame(payload):
    # A masked binary frame (clients must mask, RFC 6455 5.3); payloads here are < 126 bytes.
    mask = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def read_exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise SystemExit("connection closed before CONNACK")
        got += chunk
    return got

def open_one(i):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (2 + i % 8), 0))
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    if ws:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: mqtt\r\n\r\n" % (port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                raise SystemExit("connection closed during the WebSocket upgrade")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit("upgrade refused: %r" % head[:80])
        s.sendall(ws_frame(connect_packet(b"idle-%d" % i)))
    else:
        s.sendall(connect_packet(b"idle-%d" % i))
    return s

def check_connack(s):
    if ws:
        head = read_exactly(s, 2)
        if head != b"\x82\x04":
            raise SystemExit("unexpected WebSocket frame %r" % head)
    ack = read_exactly(s, 4)
    if ack != b"\x20\x02\x00\x00":
        raise SystemExit("unexpected CONNACK %r" % ack)

# Connections open 32 at a time: Mosquitto (2.0.11) serves a new WebSocket connection only
# every 100-200 ms when it is otherwise idle, which one at a time would take most of an hour.
pool = ThreadPoolExecutor(32)

def add(count):
    # In batches of 500, each answered before the next: a burst of thousands of connects can
    # overflow the listen backlog, and the kernel then takes seconds to retry the handshakes.
    while count > 0:
        batch = min(count, 500)
        start = len(socks)
        fresh = list(pool.map(open_one, range(start, start + batch)))
        for s in fresh:
            check_connack(s)
        socks.extend(fresh)
        count -= batch

for line in sys.stdin:
    line = line.strip()
    if line == "quit":
        break
    t = time.time()
    add(int(line))
    print("ready %d %.1f" % (len(socks), time.time() - t), flush=True)
pool.shutdown()
PY

# measure NAME PID PORT: prints "NAME base_kib step:kib ..." into $WORK/NAME.txt
measure() {
  local name=$1 pid=$2 port=$3 total=0 target reply
  local base
  base=$(settled_rss_kib "$pid")
  echo "$name baseline RSS: $base KiB" >&2
  coproc CLIENTS { python3 "$WORK/idle_clients.py" "$port" "$KEEPALIVE" "$TRANSPORT" "$CA"; }
  CLIENT_PID=$CLIENTS_PID
  local line="$base"
  for target in $STEPS; do
    echo $((target - total)) >&"${CLIENTS[1]}"
    read -r -t 300 reply <&"${CLIENTS[0]}" || { echo "$name: clients did not report" >&2; exit 1; }
    total=$target
    local rss
    rss=$(settled_rss_kib "$pid")
    echo "$name with $total idle clients ($reply): RSS $rss KiB" >&2
    line="$line $total:$rss"
  done
  echo quit >&"${CLIENTS[1]}"
  wait "$CLIENT_PID" 2>/dev/null || true
  CLIENT_PID=""
  echo "$line" >"$WORK/$name.txt"
}

# --- SurgeMQ ---
PORT=$(free_port)
# shellcheck disable=SC2086 # SURGEMQ_ARGS is a list of flags
"$BIN" serve --listen "${SURGEMQ_LISTEN[@]/@PORT@/$PORT}" --shards 2 --max-connections 100000 --log-level warn $SURGEMQ_ARGS &
BROKER_PID=$!
wait_port "$PORT"
measure surgemq "$BROKER_PID" "$PORT"
kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""

# --- Mosquitto ---
MOSQ_VERSION="not measured"
if [ "${SKIP_MOSQUITTO:-0}" != 1 ]; then
  if ! command -v mosquitto >/dev/null; then
    [ "$(id -u)" -eq 0 ] || { echo "mosquitto missing (apt-get install mosquitto)" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  fi
  MPORT=$(free_port)
  {
    # 2.0.11 exits when its only listener speaks websockets: an unused plain one beside it.
    case $TRANSPORT in ws | wss) echo "listener $(free_port) 127.0.0.1" ;; esac
    echo "listener $MPORT 127.0.0.1"
    case $TRANSPORT in ws | wss) echo "protocol websockets" ;; esac
    case $TRANSPORT in tls | wss) echo "certfile $CERT"; echo "keyfile $KEY" ;; esac
    echo "allow_anonymous true"
    echo "max_connections -1"
    echo "persistence false"
    echo "log_dest none"
    [ "$(id -u)" -eq 0 ] && echo "user root"
  } >"$WORK/mosquitto.conf"
  MOSQ_VERSION=$(mosquitto -h 2>/dev/null | head -1 || true)
  mosquitto -c "$WORK/mosquitto.conf" &
  BROKER_PID=$!
  wait_port "$MPORT"
  measure mosquitto "$BROKER_PID" "$MPORT"
  kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
fi

# --- report ---
table() { # table NAME
  local f="$WORK/$1.txt"
  [ -f "$f" ] || return 0
  python3 - "$1" "$(cat "$f")" <<'PY'
import sys
name, line = sys.argv[1], sys.argv[2].split()
base = int(line[0])
print("| %s | baseline | %d KiB | | |" % (name, base))
prev_n, prev_rss = 0, base
for step in line[1:]:
    n, rss = map(int, step.split(":"))
    per = (rss - base) * 1024 / n
    marginal = (rss - prev_rss) * 1024 / (n - prev_n)
    print("| %s | %d idle | %d KiB | %.0f B | %.0f B |" % (name, n, rss, per, marginal))
    prev_n, prev_rss = n, rss
PY
}

{
  echo "# Idle connection memory$( [ "$TRANSPORT" != tcp ] && printf ' over %s' "$TRANSPORT"), $(date -u +%Y-%m-%d)"
  echo
  echo "Branch \`$(git rev-parse --abbrev-ref HEAD)\`, commit \`$(git rev-parse --short HEAD)\`."
  echo
  echo "## Command"
  echo
  echo "    $( [ "$KEEPALIVE" != 0 ] && printf 'KEEPALIVE=%s ' "$KEEPALIVE")$( [ -n "$SURGEMQ_ARGS" ] && printf 'SURGEMQ_ARGS="%s" ' "$SURGEMQ_ARGS")$( [ "${SKIP_MOSQUITTO:-0}" = 1 ] && printf 'SKIP_MOSQUITTO=1 ')$( [ "$TRANSPORT" != tcp ] && printf 'TRANSPORT=%s ' "$TRANSPORT")$( [ -n "${SURGEMQ_BIN:-}" ] && printf 'SURGEMQ_BIN=%s ' "$SURGEMQ_BIN")scripts/idle-memory.sh"
  echo
  shown=${SURGEMQ_LISTEN[*]//$WORK\//}
  echo "SurgeMQ: \`$BIN serve --listen ${shown//@PORT@/PORT} --shards 2 --max-connections 100000 $SURGEMQ_ARGS\` (release profile)."
  echo "Mosquitto: $MOSQ_VERSION, config \`listener PORT 127.0.0.1\`, \`allow_anonymous true\`,"
  echo "\`max_connections -1\`, \`persistence false\`, \`log_dest none\` (and \`user root\` as root)."
  case $TRANSPORT in
    tls) echo "Transport: MQTT over TLS; Mosquitto's listener has \`certfile\`/\`keyfile\`. Certificate: EC P-256 for IP:127.0.0.1, signed by a CA made for the run; the clients (Python \`ssl\`, OpenSSL) check it and negotiate TLS 1.3." ;;
    ws) echo "Transport: MQTT over WebSockets on /mqtt; Mosquitto's listener has \`protocol websockets\` (and an unused plain listener beside it, which 2.0.11 needs to start)." ;;
    wss) echo "Transport: MQTT over WebSockets over TLS on /mqtt; Mosquitto's listener has \`protocol websockets\`, \`certfile\`/\`keyfile\` (and an unused plain listener beside it). Certificate as for tls: EC P-256, TLS 1.3." ;;
  esac
  echo "Clients: one Python process (32 threads open each batch of 500), raw sockets bound to 127.0.0.2-9, MQTT 3.1.1 CONNECT with"
  echo "CleanSession 1 and keepalive $KEEPALIVE, CONNACK 0 checked, then idle. RSS is the broker's VmRSS"
  echo "once two samples 0.5 s apart agree."
  echo
  echo "## Machine"
  echo
  echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
  echo
  echo "## Results"
  echo
  echo "| broker | clients | RSS | per connection (from baseline) | per connection (this step) |"
  echo "|---|---|---|---|---|"
  table surgemq
  table mosquitto
  echo
  echo "Goal (issue \"Robustness: hostile input, floods and long runs\"): at most 1 KiB per idle"
  echo "connection for SurgeMQ."
} >"$OUT"
cat "$OUT"
echo
echo "written to $OUT"
