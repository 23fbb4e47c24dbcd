#!/usr/bin/env bash
# The metrics endpoint end to end, with the real tools (issue 17, "Prometheus and a live page"):
# a (debug) broker started with `surgemq serve --shards 2 --metrics-listen 127.0.0.1:PORT`, then
#  (a) promtool: `promtool check metrics` passes on /metrics, taken after traffic and after a
#      protocol error whose rule text (a client-chosen protocol name) has quotes and backslashes;
#  (b) Prometheus: a server started here on a free port, with a generated configuration that
#      scrapes the broker every second; after N QoS 1 messages from mosquitto_pub, its query API
#      (/api/v1/query) returns the broker's own value of sum(surgemq_publish_received_total)
#      (checked to have moved by N), one surgemq_connections series per shard, the rule series,
#      one series per shard of each histogram (delivery batch sizes, session queue depths)
#      and up == 1;
#  (c) the live page: headless Chromium (scripts/metrics-page.js, the DevTools protocol over a
#      pipe, as tests/browser/run-page.js) opens / while `surgemq bench fan-in` sends a steady
#      2,000 messages/s, and the DOM must show every chart with data points, a message rate
#      above 0, connections, and one per-shard line per shard. A screenshot is kept.
#
# Installs what is missing from Debian (prometheus for promtool and the server, chromium,
# nodejs, mosquitto-clients, curl, python3). Prints one PASS/FAIL line per check and a summary;
# exits non-zero on any failure. Every process it starts is bounded in time and stopped on exit.
# Environment:
#   MESSAGES=137         messages mosquitto_pub sends for (b)
#   ARTIFACTS=DIR        where metrics.txt, the page's DOM and screenshot are kept
#                        [default: target/metrics-test]
#   KEEP=1               keep the temporary directory (broker and Prometheus logs, TSDB)
#   BREAK=no-traffic     send no traffic, to see the checks fail
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"
MESSAGES=${MESSAGES:-137}
ARTIFACTS=${ARTIFACTS:-$ROOT/target/metrics-test}
BREAK=${BREAK:-}
SHARDS=2

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
  sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need_deb promtool prometheus
need_deb prometheus prometheus
need_deb "${CHROMIUM:-chromium}" chromium
need_deb node nodejs
need_deb mosquitto_pub mosquitto-clients
need_deb curl curl
need_deb python3 python3
# A debug build is enough for a few thousand messages, and `cargo test` made it already.
log "cargo build --bin surgemq"
(cd "$ROOT" && cargo build --quiet --bin surgemq)
BIN="$ROOT/target/debug/surgemq"

# --- processes, cleanup -------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/surgemq-metrics.XXXXXX")
mkdir -p "$ARTIFACTS"
PIDS=()
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do stop_pid "$pid" 30; done
  if [ -n "${KEEP:-}" ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- broker ---------------------------------------------------------------------------------------
# free_port may hand out the same port twice (the OS reuses one just freed): keep them apart.
MQTT=$(free_port)
HTTP=$(free_port)
while [ "$HTTP" = "$MQTT" ]; do HTTP=$(free_port); done
log "surgemq serve --shards $SHARDS --listen 127.0.0.1:$MQTT --metrics-listen 127.0.0.1:$HTTP"
"$BIN" serve --listen "127.0.0.1:$MQTT" --shards "$SHARDS" --metrics-listen "127.0.0.1:$HTTP" \
  --log-level warn >"$TMP/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
if ! wait_port "$MQTT" || ! wait_port "$HTTP"; then cat "$TMP/broker.log" >&2; exit 1; fi
URL=http://127.0.0.1:$HTTP

# metric NAME: the broker's own sum of NAME's samples over its series (empty when none).
metric() {
  curl -sf --max-time 5 "$URL/metrics" |
    awk -v name="$1" '!/^#/ { split($0, f, /[{ ]/); if (f[1] == name) { s += $NF; n++ } }
      END { if (n) printf "%d\n", s }'
}
# wait_until SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
# ok COMMAND...: prints 0 when COMMAND succeeds, 1 when not (for report under set -e).
ok() { if "$@"; then echo 0; else echo 1; fi; }
wait_until() {
  local limit=$(( SECONDS + $1 ))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$limit" ] || return 1
    sleep 0.3
  done
}

# --- (b) part 1: Prometheus scraping every second -------------------------------------------------
PROM=$(free_port)
while [ "$PROM" = "$MQTT" ] || [ "$PROM" = "$HTTP" ]; do PROM=$(free_port); done
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: surgemq
    static_configs:
      - targets: ['127.0.0.1:$HTTP']
EOF
log "prometheus on 127.0.0.1:$PROM scraping $URL/metrics every second"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=("$!")
wait_port "$PROM" || { cat "$TMP/prometheus.log" >&2; exit 1; }

# query EXPR: the value of EXPR's first result from Prometheus's HTTP API (empty when none),
# or with COUNT=1 the number of series.
query() {
  curl -sf --max-time 5 -G "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" |
    python3 -c '
import json, os, sys
r = json.load(sys.stdin)["data"]["result"]
if os.environ.get("COUNT"): print(len(r))
elif r: print(r[0]["value"][1])'
}
query_is() { [ "$(query "$1")" = "$2" ]; }
count_is() { [ "$(COUNT=1 query "$1")" = "$2" ]; }

report "prometheus scrapes the broker (up == 1)" "$(ok wait_until 20 query_is 'up{job="surgemq"}' 1)" \
  "up = '$(query 'up{job="surgemq"}')'"

# --- traffic: N QoS 1 messages, and a protocol error --------------------------------------------
before=$(metric surgemq_publish_received_total)
if [ "$BREAK" != no-traffic ]; then
  log "mosquitto_pub: $MESSAGES QoS 1 messages"
  seq 1 "$MESSAGES" | timeout 30 mosquitto_pub -h 127.0.0.1 -p "$MQTT" -q 1 -t metrics-test/a -l
  # CONNECT with the protocol name MQ"T\T: closed, counted by rule.
  python3 - "$MQTT" <<'EOF'
import socket, sys
name = b'MQ"T\\T'
body = len(name).to_bytes(2, "big") + name + bytes([4, 2, 0, 0]) + b"\x00\x03bad"
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(bytes([0x10, len(body)]) + body)
try:
    s.recv(16)
except OSError:
    pass
EOF
fi
expected=$(( before + MESSAGES ))
moved() { [ "$(metric surgemq_publish_received_total)" = "$expected" ]; }
report "the broker's publish counter moved by $MESSAGES" "$(ok wait_until 10 moved)" \
  "before $before, now $(metric surgemq_publish_received_total), expected $expected"

# --- (a) promtool -------------------------------------------------------------------------------
curl -sf --max-time 5 "$URL/metrics" >"$ARTIFACTS/metrics.txt"
promtool_check() { promtool check metrics <"$ARTIFACTS/metrics.txt" >"$TMP/promtool.out" 2>&1; }
report "promtool check metrics ($(wc -l <"$ARTIFACTS/metrics.txt") lines)" "$(ok promtool_check)" \
  "$(cat "$TMP/promtool.out")"
# The error may have happened on another shard than the publishes, whose counters reach the
# board up to a second later: wait for its series too.
rule_seen() {
  curl -sf --max-time 5 "$URL/metrics" >"$TMP/rules.txt" &&
    grep -q '^surgemq_protocol_errors_by_rule_total{.*MQ\\\\\\"T' "$TMP/rules.txt"
}
report "the protocol error's rule is a series, escaped" "$(ok wait_until 10 rule_seen)"

# --- (b) part 2: Prometheus has the broker's values ---------------------------------------------
report "Prometheus: sum(surgemq_publish_received_total) = $expected" \
  "$(ok wait_until 15 query_is 'sum(surgemq_publish_received_total)' "$expected")" \
  "Prometheus says '$(query 'sum(surgemq_publish_received_total)')'"
report "Prometheus: one surgemq_connections series per shard" \
  "$(ok count_is 'surgemq_connections' "$SHARDS")" \
  "$(COUNT=1 query surgemq_connections) series"
# The histograms: one per shard each, with their buckets up to +Inf.
for family in surgemq_delivery_batch_size surgemq_session_queue_depth; do
  report "Prometheus: one $family histogram per shard" \
    "$(ok wait_until 15 count_is "${family}_bucket{le=\"+Inf\"}" "$SHARDS")" \
    "$(COUNT=1 query "${family}_bucket{le=\"+Inf\"}") series"
done
report "Prometheus: surgemq_protocol_errors_by_rule_total = 1" \
  "$(ok wait_until 15 query_is 'sum(surgemq_protocol_errors_by_rule_total)' 1)" \
  "'$(query 'sum(surgemq_protocol_errors_by_rule_total)')'"

# --- (c) the live page in headless Chromium ------------------------------------------------------
if [ "$BREAK" != no-traffic ]; then
  log "surgemq bench fan-in: 4 publishers, 2000 messages/s for 25 s (in the background)"
  timeout 60 "$BIN" bench fan-in --port "$MQTT" --clients 4 --rate 2000 --duration 25 \
    --threads 1 >"$TMP/bench.log" 2>&1 &
  PIDS+=("$!")
  sleep 2
fi
log "Chromium opens $URL/"
page_status=0
timeout -k 5 70 node scripts/metrics-page.js "$URL/" --shards "$SHARDS" --min-points 12 \
  --timeout 40000 --screenshot "$ARTIFACTS/page.png" --log "$TMP/chromium.log" \
  >"$ARTIFACTS/page-dom.txt" 2>&1 || page_status=$?
sed 's/^/   /' "$ARTIFACTS/page-dom.txt" | tail -n 60 >&2
report "the live page draws non-empty charts (screenshot $ARTIFACTS/page.png)" "$page_status"

report "broker still running" "$(ok kill -0 "$BROKER")"
if [ "$FAILED" -ne 0 ]; then
  log "broker log (tail)"; tail -n 20 "$TMP/broker.log" >&2
  log "prometheus log (tail)"; tail -n 20 "$TMP/prometheus.log" >&2
fi
echo "metrics: $PASSED passed, $FAILED failed (artifacts in $ARTIFACTS)"
[ "$FAILED" -eq 0 ]
