#!/usr/bin/env bash
# MQTT.js in a real browser against SurgeMQ's WebSocket listeners (issue 14).
#
# What it does:
#  1. installs what is missing: chromium, mosquitto-clients, openssl (and nodejs/npm, python3)
#     from Debian (apt-get update once, sudo when not root), and the `mqtt` npm package pinned in
#     tests/browser/package-lock.json (npm ci) when tests/browser/node_modules lacks that version;
#  2. builds the broker (debug) and starts it, 2 shards, with a plain TCP, a ws:// and a wss://
#     listener on free loopback ports; the wss certificate is a self-signed one made here with
#     openssl;
#  3. serves tests/browser over HTTP on 127.0.0.1 (python3 -m http.server): index.html and
#     browser-test.js, with MQTT.js's browser bundle from node_modules (no CDN);
#  4. for ws:// and then wss://: tests/browser/run-page.js starts headless Chromium and loads the
#     page with the broker's URL and a unique topic in the query string. The page connects with
#     MQTT.js (protocolVersion 4), subscribes, publishes QoS 0, 1, 2 and a 200,000-byte message
#     and waits for each, then publishes a token, retained, to TOPIC/ready. This script waits for
#     that token with mosquitto_sub on the plain TCP port and answers "echo TOKEN" on
#     TOPIC/external with mosquitto_pub, which the page must receive too. The page writes PASS or
#     FAIL and its reasons into its DOM (#result), which run-page.js reads.
#
# How Chromium is driven: through the DevTools protocol over --remote-debugging-pipe (file
# descriptors 3 and 4, NUL-ended JSON), from a small Node script with built-in modules only, which
# polls the DOM in real time until it says PASS or FAIL. `chromium --dump-dom` returns as soon as
# the page has loaded, before any broker answer; adding --virtual-time-budget fast-forwards the
# page's timers, so its own deadline fires before the real network has answered. A debugging
# port instead of the pipe would need a WebSocket client, which Node 20 does not have built in.
# wss:// runs with --ignore-certificate-errors, since the certificate is self-signed.
#
# Prints one PASS or FAIL line per scheme and a summary; exits non-zero on any failure. Each step
# is bounded in time (a page run at most 60 s), and everything it started is stopped on exit.
# Environment:
#   SCHEMES="ws wss"   which runs to do
#   PAGE_TIMEOUT_MS    the page's own deadline (default 20000)
#   BIG_BYTES          size of the page's large message (default 200000: over 64 KiB)
#   BROKER_LOG_LEVEL   the broker's --log-level (default debug; its tail is shown on a failure)
#   KEEP=1             keep the temporary directory (broker, HTTP server and Chromium logs, and a
#                      screenshot of each page) and print where it is
#   VERBOSE=1          print the page's step log on PASS too
#   BREAK=path|no-ws|no-echo   make it fail on purpose, to see that it can: point the page at a
#                      wrong WebSocket path, start the broker without its ws/wss listeners, or
#                      never answer the page's ready message
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PAGE_DIR=$ROOT/tests/browser
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/surgemq
SCHEMES=${SCHEMES:-ws wss}
PAGE_TIMEOUT_MS=${PAGE_TIMEOUT_MS:-20000}
BIG_BYTES=${BIG_BYTES:-200000}
BREAK=${BREAK:-}

log() { printf '== %s\n' "$*" >&2; }
t_start=$SECONDS

# --- what it needs ------------------------------------------------------------------------------
apt_updated=0
sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_deb() { # need_deb COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  shift
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    sudo_cmd apt-get update -qq
    apt_updated=1
  fi
  log "installing Debian package(s) $*"
  sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

CHROMIUM=${CHROMIUM:-chromium}
need_deb "$CHROMIUM" chromium
need_deb mosquitto_pub mosquitto-clients
need_deb mosquitto_sub mosquitto-clients
need_deb openssl openssl
need_deb python3 python3
need_deb node nodejs
need_deb npm npm

# node_modules is there and holds the pinned mqtt version, or npm ci makes it so.
pinned=$(node -p 'require(process.argv[1]).packages["node_modules/mqtt"].version' \
  "$PAGE_DIR/package-lock.json")
have=$(node -p 'try { require(process.argv[1]).version } catch { "" }' \
  "$PAGE_DIR/node_modules/mqtt/package.json" 2>/dev/null || true)
if [ "$have" != "$pinned" ] || [ ! -f "$PAGE_DIR/node_modules/mqtt/dist/mqtt.min.js" ]; then
  log "npm ci in tests/browser (mqtt $pinned)"
  (cd "$PAGE_DIR" && timeout 600 npm ci --no-audit --no-fund --loglevel=error) >&2
fi

log "cargo build --bin surgemq"
cargo build --quiet --bin surgemq
t_ready=$SECONDS

# --- processes, cleanup -------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/surgemq-browser.XXXXXX")
PIDS=()
cleanup() {
  local pid
  # Chromium leads its own process group (run-page.js kills it, but not if it was killed first).
  for f in "$TMP"/chromium-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then log "logs and screenshots kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
wait_port() { # wait_port PORT WHAT: until something accepts on 127.0.0.1:PORT (10 s at most)
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "FAIL: $2 does not listen on 127.0.0.1:$1 after 10 s"
  return 1
}

# --- broker -------------------------------------------------------------------------------------
PLAIN=$(free_port)
WS=$(free_port)
WSS=$(free_port)
HTTP=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
listen=(--listen "127.0.0.1:$PLAIN")
if [ "$BREAK" != no-ws ]; then
  listen+=(--listen "ws://127.0.0.1:$WS/mqtt" --listen "wss://127.0.0.1:$WSS/mqtt"
    --cert "$TMP/cert.pem" --key "$TMP/key.pem")
fi
log "surgemq serve --shards 2: mqtt 127.0.0.1:$PLAIN, ws :$WS, wss :$WSS${BREAK:+ (BREAK=$BREAK)}"
"$BIN" serve "${listen[@]}" --shards 2 --log-level "${BROKER_LOG_LEVEL:-debug}" >"$TMP/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
wait_port "$PLAIN" broker
if [ "$BREAK" != no-ws ]; then
  wait_port "$WS" "broker (ws)"
  wait_port "$WSS" "broker (wss)"
fi

# --- HTTP server for the page -------------------------------------------------------------------
python3 -m http.server "$HTTP" --bind 127.0.0.1 --directory "$PAGE_DIR" >"$TMP/http.log" 2>&1 &
PIDS+=("$!")
wait_port "$HTTP" "python3 -m http.server"

# --- one page run -------------------------------------------------------------------------------
# run_page SCHEME PORT [chromium flags...]: 0 on PASS.
run_page() {
  local scheme=$1 port=$2
  shift 2
  local path=/mqtt
  [ "$BREAK" != path ] || path=/wrong
  local topic="surgemq-browser-test/$scheme-$$-$RANDOM$RANDOM"
  local ws_url="$scheme://127.0.0.1:$port$path"
  local page="http://127.0.0.1:$HTTP/index.html?url=$ws_url&topic=$topic&timeout=$PAGE_TIMEOUT_MS&big=$BIG_BYTES"
  local flags=()
  for f in "$@"; do flags+=(--flag="$f"); done
  log "$scheme: Chromium loads $page"

  # The page's token arrives here (retained, so it cannot come too early) ...
  local ready=$TMP/ready-$scheme
  : >"$ready"
  timeout 60 mosquitto_sub -h 127.0.0.1 -p "$PLAIN" -i "browser-test-sub-$$-$scheme" \
    -t "$topic/ready" -C 1 -W 50 >"$ready" 2>"$TMP/mosquitto_sub-$scheme.log" &
  local sub=$!
  PIDS+=("$sub")
  TMPDIR=$TMP timeout -k 5 60 node "$PAGE_DIR/run-page.js" "$page" --timeout 50000 \
    --pidfile "$TMP/chromium-$scheme.pid" --log "$TMP/chromium-$scheme.log" \
    --screenshot "$TMP/page-$scheme.png" ${flags[@]+"${flags[@]}"} >"$TMP/page-$scheme.out" 2>&1 &
  local driver=$!
  PIDS+=("$driver")

  # ... and is answered from outside the browser, over plain TCP, while the page waits.
  local answered=0 token
  while kill -0 "$driver" 2>/dev/null; do
    # (a whole line: wc -l counts newlines)
    if [ "$answered" -eq 0 ] && [ "$(wc -l <"$ready")" -ge 1 ] && [ "$BREAK" != no-echo ]; then
      token=$(head -n 1 "$ready")
      if [ -n "$token" ]; then
        timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PLAIN" -i "browser-test-pub-$$-$scheme" \
          -q 1 -t "$topic/external" -m "echo $token" ||
          log "$scheme: mosquitto_pub failed"
        answered=1
      fi
    fi
    sleep 0.1
  done
  local status=0
  wait "$driver" || status=$?
  kill "$sub" 2>/dev/null || true
  wait "$sub" 2>/dev/null || true
  sed "s/^/   /" "$TMP/page-$scheme.out" >&2
  if [ "$status" -eq 0 ]; then
    echo "PASS: browser $scheme"
  else
    echo "FAIL: browser $scheme (run-page.js exit $status)"
    [ ! -s "$TMP/broker.log" ] ||
      { log "broker log (tail)"; grep -v rustls "$TMP/broker.log" | tail -n 12 >&2; }
    # (less the D-Bus complaints of a browser without a desktop session)
    if grep -q -v -e dbus/ -e '^$' "$TMP/chromium-$scheme.log" 2>/dev/null; then
      log "chromium log (tail)"
      grep -v -e dbus/ -e '^$' "$TMP/chromium-$scheme.log" | tail -n 12 >&2
    fi
  fi
  return "$status"
}

passed=0
failed=0
for scheme in $SCHEMES; do
  case $scheme in
    ws) port=$WS; flags=() ;;
    wss) port=$WSS; flags=(--ignore-certificate-errors) ;;
    *) log "unknown scheme $scheme"; exit 2 ;;
  esac
  if run_page "$scheme" "$port" ${flags[@]+"${flags[@]}"}; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

kill -0 "$BROKER" 2>/dev/null || { echo "FAIL: the broker died"; failed=$((failed + 1)); }
log "browser test: $((t_ready - t_start)) s installing and building, $((SECONDS - t_ready)) s testing"
echo "browser: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
