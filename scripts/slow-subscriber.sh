#!/usr/bin/env bash
# A subscriber that never reads, beside a healthy one, with independent clients: the QoS 1
# slow-consumer case of the flow control (see src/broker/pressure.rs).
#
# Starts `surgemq serve` (SHARDS, default 2; --stall-timeout STALL, default 10 s) on a free
# loopback port, subscribes a `mosquitto_sub -q 1` to every pair bench topic
# (surgemq-bench/+/t) and freezes it with SIGSTOP, then runs `surgemq bench pair --qos 1`
# (MESSAGES of SIZE bytes, WINDOW outstanding): its own subscriber is the healthy one. The
# frozen subscriber's queue fills and holds the publisher back until it counts as stalled
# (no progress for STALL seconds); from then on its messages are dropped and the publisher
# goes on. The broker's RSS is sampled every 100 ms from /proc during the run.
#
# Checks (exit status 1 if one fails):
# - the healthy subscriber got every message (missing 0, delivered = published);
# - the run took at most STALL + SLACK seconds (default SLACK 5): the publisher was held
#   back about the stall timeout, not for good;
# - the broker's peak RSS stayed under MAX_RSS_MIB (default 150);
# - its totals at stop count drops for the frozen subscriber (dropped_qos12_queue_full > 0)
#   and subscribers_stalled >= 1; nothing panicked in its log.
#
# Env: BIN (default: this tree's release build, built if needed), SHARDS (2), STALL (10),
# MESSAGES (200000), SIZE (1024), WINDOW (4000), SLACK (5), MAX_RSS_MIB (150), THREADS.
# Everything runs on 127.0.0.1 and stops by itself.
#
#   SHARDS=1 scripts/slow-subscriber.sh

set -euo pipefail
SHARDS=${SHARDS:-2}
STALL=${STALL:-10}
MESSAGES=${MESSAGES:-200000}
SIZE=${SIZE:-1024}
WINDOW=${WINDOW:-4000}
SLACK=${SLACK:-5}
MAX_RSS_MIB=${MAX_RSS_MIB:-150}
GIVEN_BIN=${BIN:-}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v mosquitto_sub >/dev/null || {
  log "mosquitto_sub is needed: apt-get install -y mosquitto-clients"
  exit 1
}
if [ -n "$GIVEN_BIN" ]; then
  BIN=$GIVEN_BIN
else
  build_release
fi

WORK=$(mktemp -d)
SUB_PID=""
SAMPLER_PID=""
BENCH_PID=""
# Lets the frozen subscriber go and ends it. mosquitto_sub (2.0.11) can deadlock in its own
# SIGTERM handler when the signal lands while it is handling messages (it did, once, just
# after SIGCONT): so SIGKILL after a second.
stop_subscriber() {
  [ -n "$SUB_PID" ] || return 0
  kill -CONT "$SUB_PID" 2>/dev/null || true
  stop_pid "$SUB_PID" 10
  SUB_PID=""
}
cleanup() {
  if [ -n "$BENCH_PID" ]; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
    BENCH_PID=""
  fi
  stop_subscriber
  if [ -n "$SAMPLER_PID" ]; then
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
  fi
  stop_broker
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(free_port)
log "surgemq serve --shards $SHARDS --stall-timeout $STALL on 127.0.0.1:$port"
"$BIN" serve --listen "127.0.0.1:$port" --shards "$SHARDS" --stall-timeout "$STALL" \
  --log-level info >"$WORK/serve.log" 2>&1 &
BROKER_PID=$!
wait_port "$port" || {
  log "the broker did not start:"
  cat "$WORK/serve.log" >&2
  exit 1
}

# The frozen subscriber: every pair bench topic is surgemq-bench/<run id>/t. Line-buffered
# (stdbuf execs it: same pid), so its SUBACK shows in the log at once.
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -i "slow-subscriber-$$" -t 'surgemq-bench/+/t' -d \
  >"$WORK/sub.log" 2>&1 &
SUB_PID=$!
for _ in $(seq 1 100); do
  grep -q SUBACK "$WORK/sub.log" && break
  sleep 0.05
done
grep -q SUBACK "$WORK/sub.log" || {
  log "mosquitto_sub did not subscribe:"
  cat "$WORK/sub.log" >&2
  exit 1
}
kill -STOP "$SUB_PID"
log "mosquitto_sub (pid $SUB_PID) subscribed to surgemq-bench/+/t at QoS 1 and frozen"

# The broker's RSS every 100 ms, one sample per line, until it is stopped.
(
  while kill -0 "$BROKER_PID" 2>/dev/null; do
    rss_kib "$BROKER_PID" 2>/dev/null || true
    sleep 0.1
  done
) >"$WORK/rss" &
SAMPLER_PID=$!

log "surgemq bench pair --qos 1 --messages $MESSAGES --size $SIZE --window $WINDOW"
started=$(date +%s.%N)
bench_status=0
# The drain must outlast the stall timeout: nothing moves while the publisher is held back.
# In the background, so that an interrupt ends the script at once (timeout puts the bench in
# a process group of its own, which a terminal's ^C does not reach).
timeout --kill-after=5 $((STALL + 300)) "$BIN" bench pair --port "$port" --qos 1 \
  --messages "$MESSAGES" --size "$SIZE" --window "$WINDOW" --threads "$THREADS" \
  --drain "$((STALL + 10))s" --json >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH_PID=$!
wait "$BENCH_PID" || bench_status=$?
BENCH_PID=""
ended=$(date +%s.%N)

kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
peak_kib=$(sort -n "$WORK/rss" | tail -n 1)
samples=$(wc -l <"$WORK/rss")

# The frozen subscriber goes first, as it would in cleanup; then the broker logs its totals.
stop_subscriber
stop_broker

totals=$(grep -a 'stopped connections=' "$WORK/serve.log" | tail -n 1 || true)
total() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$totals"; }
dropped=$(total dropped_qos12_queue_full)
paused=$(total publishers_paused)
stalled=$(total subscribers_stalled)
panics=$(grep -ac 'panicked' "$WORK/serve.log" || true)

read -r published acked delivered missing duplicated reordered deliver_secs errors < <(
  python3 - "$WORK/bench.json" <<'PY' || echo "- - - - - - - unreadable"
import json, sys
text = open(sys.argv[1]).read().strip()
d = json.loads(text.splitlines()[-1])
errors = "; ".join(d["errors"]).replace(" ", "_") or "none"
print(*(int(d[k]) for k in ("published", "acked", "delivered", "missing", "duplicated",
                            "reordered")), "%.2f" % d["deliver_secs"], errors)
PY
)
elapsed=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.2f", b - a }')
peak_mib=$(awk -v k="${peak_kib:-0}" 'BEGIN { printf "%.1f", k / 1024 }')

failed=0
# row NAME VALUE WANT CONDITION: one line of the table; CONDITION is evaluated.
row() {
  local verdict=FAIL
  if eval "$4"; then verdict=ok; fi
  printf '| %-42s | %-22s | %-22s | %-4s |\n' "$1" "$2" "$3" "$verdict"
  [ "$verdict" = ok ] || failed=1
}
num() { [[ $1 =~ ^[0-9]+$ ]]; }

echo
echo "slow subscriber: $SHARDS shard(s), --stall-timeout $STALL, pair QoS 1, $MESSAGES x $SIZE B," \
  "window $WINDOW, beside one frozen mosquitto_sub -q 1"
echo
printf '| %-42s | %-22s | %-22s | %-4s |\n' check value want ""
echo "|$(printf -- '-%.0s' {1..44})|$(printf -- '-%.0s' {1..24})|$(printf -- '-%.0s' {1..24})|------|"
row "bench exit status" "$bench_status" 0 '[ "$bench_status" = 0 ]'
row "published / acked" "$published / $acked" "$MESSAGES / $MESSAGES" \
  '[ "$published" = "$MESSAGES" ] && [ "$acked" = "$MESSAGES" ]'
row "healthy subscriber: delivered" "$delivered" "$MESSAGES" '[ "$delivered" = "$MESSAGES" ]'
row "healthy subscriber: missing / dup / reord" "$missing / $duplicated / $reordered" \
  "0 / 0 / 0" '[ "$missing/$duplicated/$reordered" = 0/0/0 ]'
row "bench errors" "$errors" none '[ "$errors" = none ]'
row "elapsed s (wall / to last delivery)" "$elapsed / $deliver_secs" "<= $((STALL + SLACK))" \
  'awk -v e="$elapsed" -v m="$((STALL + SLACK))" "BEGIN { exit !(e <= m) }"'
row "broker peak RSS MiB ($samples samples)" "$peak_mib" "< $MAX_RSS_MIB" \
  'num "${peak_kib:-x}" && [ "$peak_kib" -lt $((MAX_RSS_MIB * 1024)) ]'
row "dropped_qos12_queue_full" "${dropped:-?}" "> 0 (the frozen one)" \
  'num "${dropped:-x}" && [ "$dropped" -gt 0 ]'
row "subscribers_stalled" "${stalled:-?}" ">= 1" 'num "${stalled:-x}" && [ "$stalled" -ge 1 ]'
row "publishers_paused" "${paused:-?}" "(reported)" true
row "panics in the serve log" "$panics" 0 '[ "$panics" = 0 ]'
echo
echo "broker totals at stop: ${totals#*INFO }"
if [ "$failed" != 0 ]; then
  echo
  echo "FAILED. bench stderr:"
  cat "$WORK/bench.err"
  echo "serve log (last 20 lines):"
  tail -n 20 "$WORK/serve.log"
  exit 1
fi
