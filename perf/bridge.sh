#!/usr/bin/env bash
# Bridge throughput: a publisher on a local broker, a bridge to a remote broker, a subscriber
# there (`surgemq bench pair --port LOCAL --subscribe-port REMOTE`), at QoS 0 and 1, for
#   surgemq   SurgeMQ -> SurgeMQ (1 shard each; the bridge from a mosquitto.conf section),
#   mosquitto Mosquitto -> Mosquitto (the same section),
#   mixed     SurgeMQ -> Mosquitto (what an edge SurgeMQ bridging to a Mosquitto hub gets),
# interleaved within each repetition so a noisy neighbour hurts all alike. Both brokers and the
# generator share this machine's cores. Every message must arrive (the bench reports missing
# ones); medians of REPS runs and the SurgeMQ/Mosquitto ratio go to perf/results/STAMP.md,
# raw JSON lines next to it.
#
# Env: REPS (3), DURATION (10), WINDOW (publisher window, 1000), SIZE (64), QOS_LEVELS ("0 1"),
# PAIRS ("surgemq mosquitto mixed"), STAMP (<date>-bridge), RESULTS (perf/results).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

REPS=${REPS:-3}
DURATION=${DURATION:-10}
WINDOW=${WINDOW:-1000}
SIZE=${SIZE:-64}
QOS_LEVELS=${QOS_LEVELS:-"0 1"}
PAIRS=${PAIRS:-"surgemq mosquitto mixed"}
STAMP=${STAMP:-"$(date +%F)-bridge"}
RESULTS=${RESULTS:-"$ROOT/perf/results"}
require mosquitto "the Debian package mosquitto"
require python3 "python3"
build_release

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bridge-perf.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ROOT_USER=""
[ "$(id -u)" -ne 0 ] || ROOT_USER="user root"
RAW="$RESULTS/$STAMP-raw.jsonl"
mkdir -p "$RESULTS"
: >"$RAW"

start() { # start KIND PORT [BRIDGE_TO_PORT QOS]: a broker in the background, its pid in PIDS
  local kind=$1 port=$2 conf="$WORK/$1-$2.conf"
  {
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 100000\n%s\n' "$port" "$ROOT_USER"
    if [ -n "${3:-}" ]; then
      printf 'connection perf\naddress 127.0.0.1:%s\nremote_clientid perf-%s\ncleansession true\ntopic surgemq-bench/# out %s\n' "$3" "$port" "$4"
    fi
  } >"$conf"
  if [ "$kind" = surgemq ]; then
    "$BIN" serve -c "$conf" --shards 1 --log-level warn >"$WORK/$port.log" 2>&1 &
  else
    mosquitto -c "$conf" >"$WORK/$port.log" 2>&1 &
  fi
  PIDS+=("$!")
  wait_port "$port"
}

one() { # one PAIR QOS REP
  local pair=$1 qos=$2 local_kind remote_kind
  case "$pair" in
    surgemq) local_kind=surgemq remote_kind=surgemq ;;
    mosquitto) local_kind=mosquitto remote_kind=mosquitto ;;
    mixed) local_kind=surgemq remote_kind=mosquitto ;;
  esac
  local remote local_port
  remote=$(free_port)
  start "$remote_kind" "$remote"
  local_port=$(free_port)
  start "$local_kind" "$local_port" "$remote" "$qos"
  # The bridge is up once its notification is retained on the remote broker.
  timeout 10 mosquitto_sub -p "$remote" -t '$SYS/broker/connection/+/state' -C 1 -W 9 >/dev/null 2>&1 || true
  log "$pair qos $qos rep $3"
  "$BIN" bench pair --port "$local_port" --subscribe-port "$remote" --qos "$qos" --size "$SIZE" \
    --window "$WINDOW" --duration "$DURATION" --drain 10s --json 2>/dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin); r.update(pair='$pair', rep=$3); print(json.dumps(r))" >>"$RAW" ||
    log "$pair qos $qos rep $3: the bench failed"
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
}

read -ra pairs <<<"$PAIRS"
for rep in $(seq 1 "$REPS"); do
  for qos in $QOS_LEVELS; do
    # Rotate the order each repetition.
    n=${#pairs[@]}
    for i in $(seq 0 $((n - 1))); do
      one "${pairs[$(((i + rep) % n))]}" "$qos" "$rep"
    done
  done
done

COMMAND="REPS=$REPS DURATION=$DURATION WINDOW=$WINDOW SIZE=$SIZE QOS_LEVELS=\"$QOS_LEVELS\" PAIRS=\"$PAIRS\" STAMP=$STAMP perf/bridge.sh"
python3 - "$RAW" "$RESULTS/$STAMP.md" "$REPS" "$DURATION" "$WINDOW" "$SIZE" "$COMMAND" "$(git rev-parse --short HEAD)" <<'PY'
import json, statistics, sys
raw, md, reps, duration, window, size, command, commit = sys.argv[1:9]
rows = [json.loads(l) for l in open(raw) if l.strip()]
out = [f"# Bridge throughput ({reps} reps, {duration} s each, window {window}, {size}-byte payloads)", "",
       "Publisher on the local broker, subscriber on the remote one, one bridge `topic surgemq-bench/# out QOS`,",
       "1 shard per SurgeMQ; medians of delivered messages/s; missing must be 0.", "",
       f"Command: `{command}` at {commit}, on this 2-core machine (brokers and generator share it).", "",
       "| pair | QoS | median msgs/s | runs | missing (max) | p50 latency µs (median) |", "|---|---|---|---|---|---|"]
med = {}
for pair in ["surgemq", "mosquitto", "mixed"]:
    for qos in [0, 1, 2]:
        rs = [r for r in rows if r["pair"] == pair and r["qos"] == qos]
        if not rs: continue
        m = statistics.median(r["mps"] for r in rs)
        med[(pair, qos)] = m
        lat = statistics.median(r["latency_p50_us"] for r in rs)
        out.append(f"| {pair} | {qos} | {m:,.0f} | {len(rs)} | {max(r['missing'] for r in rs)} | {lat:,.0f} |")
out.append("")
for qos in [0, 1, 2]:
    if ("surgemq", qos) in med and ("mosquitto", qos) in med and med[("mosquitto", qos)] > 0:
        out.append(f"- QoS {qos}: SurgeMQ -> SurgeMQ / Mosquitto -> Mosquitto = **{med[('surgemq', qos)] / med[('mosquitto', qos)]:.2f}x**")
open(md, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
