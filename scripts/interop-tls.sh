#!/usr/bin/env bash
# Interop tests of the TLS and WebSocket listeners (2 shards) with clients we did not write:
# mosquitto_pub/mosquitto_sub over mqtts:// (with --cafile; with a client certificate against
# --require-certificate, and without one), paho-mqtt over ws:// and wss://, messages across
# transports, --use-identity-as-username with an ACL, and a SIGHUP certificate reload.
#
# Certificates are made here with openssl (a CA, a server certificate for localhost and
# 127.0.0.1, client certificates), never committed. Prints one PASS/FAIL line per check and
# "N passed, M failed"; exits non-zero on failure. Installs nothing (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in mosquitto_pub mosquitto_sub openssl python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "interop-tls: $tool is missing (scripts/test.sh installs it)" >&2
    exit 2
  }
done

cargo build --quiet --bin surgemq
BIN=target/debug/surgemq
HOST=127.0.0.1
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- certificates ---------------------------------------------------------------------------
mkcert() { # mkcert NAME SUBJECT [SAN]: a key and a certificate signed by the CA
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/$1.key" -out "$WORK/$1.csr" -subj "$2" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    [ -n "${3:-}" ] && echo "subjectAltName=$3"
  } >"$WORK/$1.ext"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/$CA.crt" -CAkey "$WORK/$CA.key" \
    -CAcreateserial -days 2 -out "$WORK/$1.crt" -extfile "$WORK/$1.ext" 2>/dev/null
}
mkca() { # mkca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/$1.key" -out "$WORK/$1.crt" -subj "/CN=$1" 2>/dev/null
}
mkca ca
CA=ca
mkcert server "/CN=localhost" "DNS:localhost,IP:127.0.0.1"
mkcert alice "/CN=alice"
mkca otherca
CA=otherca
mkcert server2 "/CN=localhost" "DNS:localhost,IP:127.0.0.1"
mkcert mallory "/CN=alice"
# The broker reads its certificate from these paths (replaced for the SIGHUP check).
cp "$WORK/server.crt" "$WORK/live.crt"
cp "$WORK/server.key" "$WORK/live.key"

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
accepts() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start_broker() { # start_broker NAME PORTVAR... -- ARGS: starts, waits for the first port
  local name=$1 port=$2
  shift 2
  "$BIN" serve --shards 2 "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_$name=$pid"
  for _ in $(seq 100); do
    accepts "$port" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "interop-tls: broker $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

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
  if [ "$2" = "$3" ]; then report "$1" 0; else report "$1" 1 "got '$2', want '$3'"; fi
}

PLAIN=$(free_port)
TLS=$(free_port)
WS=$(free_port)
WSS=$(free_port)
start_broker main "$PLAIN" --listen "$HOST:$PLAIN" --listen "mqtts://$HOST:$TLS" \
  --listen "ws://$HOST:$WS/mqtt" --listen "wss://$HOST:$WSS/mqtt" \
  --cert "$WORK/live.crt" --key "$WORK/live.key"
echo "broker: $BIN serve --shards 2 (mqtt $PLAIN, mqtts $TLS, ws $WS, wss $WSS)"

tsub() { timeout 15 mosquitto_sub -h "$HOST" "$@"; }
tpub() { timeout 10 mosquitto_pub -h "$HOST" "$@"; }

# --- mosquitto over mqtts -------------------------------------------------------------------
# A subscriber on TLS, publishers on TLS and on plain TCP.
tsub -p "$TLS" --cafile "$WORK/ca.crt" -t 'tls/#' -q 1 -C 2 -W 10 -v >"$WORK/tls.out" 2>&1 &
SUB=$!
sleep 0.5
tpub -p "$TLS" --cafile "$WORK/ca.crt" -t tls/a -q 1 -m "over tls" || true
tpub -p "$PLAIN" -t tls/b -q 1 -m "over tcp" || true
wait "$SUB" || true
check_eq "mosquitto over mqtts with --cafile" "$(sort "$WORK/tls.out" | tr '\n' ';')" "tls/a over tls;tls/b over tcp;"

if tpub -p "$TLS" --cafile "$WORK/otherca.crt" -t tls/x -m nope 2>/dev/null; then
  report "mosquitto refuses a broker certificate from an unknown CA" 1 "it connected"
else
  report "mosquitto refuses a broker certificate from an unknown CA" 0
fi

# --- paho over ws and wss, messages across transports -----------------------------------------
cat >"$WORK/paho_ws.py" <<'PY'
import sys, threading, time
import paho.mqtt.client as mqtt

host, ws, wss, plain, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def client(transport, port, tls):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport=transport)
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if tls:
        c.tls_set(ca_certs=ca)
    c.connect("localhost" if tls else host, port)
    c.loop_start()
    return c

got = []
ready = threading.Event()
sub = client("websockets", ws, False)
sub.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode()))
sub.on_subscribe = lambda *a: ready.set()
sub.subscribe("x/#", qos=1)
if not ready.wait(5):
    print("FAIL paho subscribe over ws: no SUBACK"); sys.exit(1)
for transport, port, tls, name in (("websockets", wss, True, "wss"), ("tcp", plain, False, "tcp"), ("websockets", ws, False, "ws")):
    p = client(transport, port, tls)
    info = p.publish("x/" + name, "from " + name, qos=1)
    info.wait_for_publish(5)
    print(("PASS" if info.is_published() else "FAIL") + " paho QoS 1 publish over " + name)
    p.disconnect(); p.loop_stop()
deadline = time.time() + 5
while len(got) < 3 and time.time() < deadline:
    time.sleep(0.05)
want = sorted([("x/wss", "from wss"), ("x/tcp", "from tcp"), ("x/ws", "from ws")])
print(("PASS" if sorted(got) == want else "FAIL") + " paho over ws receives from wss, tcp and ws%s" % ("" if sorted(got) == want else ": %r" % got))
sub.disconnect(); sub.loop_stop()
PY
while IFS= read -r line; do
  case "$line" in
    "PASS "*) report "${line#PASS }" 0 ;;
    "FAIL "*) report "${line#FAIL }" 1 ;;
    *) echo "  paho: $line" ;;
  esac
done < <(timeout 60 python3 "$WORK/paho_ws.py" "$HOST" "$WS" "$WSS" "$PLAIN" "$WORK/ca.crt" 2>&1 || true)

# --- SIGHUP: a new certificate for new connections, the old connections go on -----------------
tsub -p "$TLS" --cafile "$WORK/ca.crt" -t hup/t -q 1 -C 1 -W 12 -v >"$WORK/hup.out" 2>&1 &
OLD=$!
sleep 0.5
cp "$WORK/server2.crt" "$WORK/live.crt"
cp "$WORK/server2.key" "$WORK/live.key"
kill -HUP "$PID_main"
sleep 0.5
if tpub -p "$TLS" --cafile "$WORK/otherca.crt" -t hup/t -q 1 -m "after reload"; then
  report "SIGHUP: new connections get the new certificate" 0
else
  report "SIGHUP: new connections get the new certificate" 1 "the new CA is not accepted"
fi
wait "$OLD" || true
check_eq "SIGHUP: a connection opened before it goes on" "$(cat "$WORK/hup.out")" "hup/t after reload"
if tpub -p "$TLS" --cafile "$WORK/ca.crt" -t hup/t -m x 2>/dev/null; then
  report "SIGHUP: the old certificate is no longer served" 1
else
  report "SIGHUP: the old certificate is no longer served" 0
fi

# --- client certificates: --require-certificate, --use-identity-as-username with an ACL -------
MTLS=$(free_port)
printf 'user alice\ntopic readwrite alice/#\n' >"$WORK/acl"
start_broker mtls "$MTLS" --listen "mqtts://$HOST:$MTLS" --cert "$WORK/server.crt" \
  --key "$WORK/server.key" --ca-file "$WORK/ca.crt" --require-certificate \
  --use-identity-as-username --acl-file "$WORK/acl"
CLIENT=(--cafile "$WORK/ca.crt" --cert "$WORK/alice.crt" --key "$WORK/alice.key")
tsub -p "$MTLS" "${CLIENT[@]}" -t 'alice/#' -t 'bob/#' -q 1 -C 1 -W 10 -v >"$WORK/mtls.out" 2>&1 &
SUB=$!
sleep 0.5
# The ACL lets the user named by the certificate (alice) use alice/# only.
tpub -p "$MTLS" "${CLIENT[@]}" -t bob/x -q 1 -m "denied by the ACL" || true
tpub -p "$MTLS" "${CLIENT[@]}" -t alice/x -q 1 -m "alice by certificate" || true
wait "$SUB" || true
check_eq "client certificate accepted; its CN is the user name for the ACL" "$(cat "$WORK/mtls.out")" "alice/x alice by certificate"
if tpub -p "$MTLS" --cafile "$WORK/ca.crt" -t alice/x -m nope 2>/dev/null; then
  report "--require-certificate refuses a client without one" 1 "it connected"
else
  report "--require-certificate refuses a client without one" 0
fi
if tpub -p "$MTLS" --cafile "$WORK/ca.crt" --cert "$WORK/mallory.crt" --key "$WORK/mallory.key" -t alice/x -m nope 2>/dev/null; then
  report "a client certificate from another CA is refused" 1 "it connected"
else
  report "a client certificate from another CA is refused" 0
fi

# --- [[listener]] tables in the config file: each TLS listener with its own certificate ------
L1=$(free_port)
L2=$(free_port)
cat >"$WORK/listeners.toml" <<TOML
[[listener]]
url = "mqtts://$HOST:$L1"
cert = "server.crt"
key = "server.key"

[[listener]]
url = "mqtts://$HOST:$L2"
cert = "server2.crt"
key = "server2.key"
TOML
start_broker files "$L1" --config "$WORK/listeners.toml"
if tpub -p "$L1" --cafile "$WORK/ca.crt" -t f/1 -m a && tpub -p "$L2" --cafile "$WORK/otherca.crt" -t f/2 -m b &&
  ! tpub -p "$L2" --cafile "$WORK/ca.crt" -t f/3 -m c 2>/dev/null; then
  report "config file: each [[listener]] serves its own certificate" 0
else
  report "config file: each [[listener]] serves its own certificate" 1
fi

for name in main mtls files; do
  pid_var="PID_$name"
  if kill -0 "${!pid_var}" 2>/dev/null; then
    report "broker $name still running" 0
  else
    report "broker $name still running" 1 "see $name.log"
  fi
done
if [ "$FAILED" -ne 0 ]; then
  for name in main mtls files; do
    echo "--- $name.log (last 20 lines)"
    tail -n 20 "$WORK/$name.log"
  done
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
