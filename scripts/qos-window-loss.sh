#!/usr/bin/env bash
# QoS 1/2 messages lost to subscribers that keep reading: pair, fan-out 1:20, mesh 20, fan-in
# 20:1 and a shared group of 4 at QoS 1 and 2 with a deep publisher window (default 4000 in
# flight, deeper than a session's queue of 1000), then fan-in, shared and mesh overloaded
# (publishers open-loop at a rate far above what the subscribers can read, 20 and 100 of them,
# for OVERLOAD_SECS; in the mesh every client is held back and owes acknowledgements), for one
# or more SurgeMQ binaries side by side. Before push-back the broker dropped what did not fit a
# subscriber's queue ("missing"); with it, nothing may be missing.
# Prints a markdown table (missing, duplicated, messages per second) and each broker's totals
# line at stop (drops, publishers paused, subscribers stalled).
#
# Env: BINS ("name=path ..."; default: this tree's release build as "current"), SHARDS (2),
# WINDOW (4000), OVERLOAD_SECS (5; 0: no overload cases), REPS (1), OUT (file to write the
# table to as well).
#
#   BINS="new=target/release/surgemq old=perf/.peers/surgemq-2c73a8a" scripts/qos-window-loss.sh

set -euo pipefail
SHARDS=${SHARDS:-2}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WINDOW=${WINDOW:-4000}
REPS=${REPS:-1}
BINS=${BINS:-"current=$BIN"}
OUT=${OUT:-}
OVERLOAD_SECS=${OVERLOAD_SECS:-5}
# scenario and its load: every subscriber's queue overflows many times over.
W="--window $WINDOW"
CASES=("pair --messages 200000 $W" "fan-out --messages 20000 $W" "mesh --messages 5000 $W"
  "fan-in --messages 20000 $W" "shared --subscribers 4 --messages 50000 $W")
if [ "$OVERLOAD_SECS" != 0 ]; then
  O="--duration $OVERLOAD_SECS --size 64"
  CASES+=("fan-in --rate 1500000 $O" "fan-in --clients 100 --rate 3000000 $O"
    "shared --subscribers 4 --rate 2000000 $O" "shared --subscribers 4 --clients 100 --rate 3000000 $O"
    "mesh --rate 300000 $O")
fi

build_release
trap stop_broker EXIT
trap 'exit 130' INT TERM

table="| binary | case | QoS | expected | missing | duplicated | msgs/s |
|---|---|---|---|---|---|---|"
totals=""
for rep in $(seq 1 "$REPS"); do
  for entry in $BINS; do
    name=${entry%%=*}
    path=${entry#*=}
    port=$(free_port)
    log_file=$(mktemp)
    log "$name (rep $rep): $path serve --shards $SHARDS"
    "$path" serve --listen "127.0.0.1:$port" --shards "$SHARDS" --log-level info 2>"$log_file" &
    BROKER_PID=$!
    wait_port "$port"
    for c in "${CASES[@]}"; do
      read -r scenario load <<<"$c"
      for qos in 1 2; do
        # The generator exits non-zero when messages are missing: the JSON still says how many.
        # shellcheck disable=SC2086 # $load is a list of arguments
        json=$(timeout --kill-after=5 300 "$BIN" bench "$scenario" --qos "$qos" \
          $load --port "$port" --json 2>/dev/null | tail -1 || true)
        row=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1] or "{}")
if "expected" not in r:
    print("| failed | | | |")
else:
    cells = [r["expected"], r["missing"], r["duplicated"], int(r["mps"])]
    print("| " + " | ".join(f"{c:,}" for c in cells) + " |")
' "$json")
        table+=$'\n'"| $name | $scenario $load | $qos $row"
        log "$name $scenario QoS $qos $row"
      done
    done
    stop_broker
    totals+="$name: $(grep -o 'stopped .*' "$log_file" || echo 'no totals line')"$'\n'
    rm -f "$log_file"
  done
done

report="Window $WINDOW (overload: open loop, OVERLOAD_SECS $OVERLOAD_SECS), $SHARDS shards, 64 B payloads, default queue limits (1000 messages).

$table

Broker totals at stop:

\`\`\`
$totals\`\`\`"
echo "$report"
[ -z "$OUT" ] || echo "$report" >"$OUT"
