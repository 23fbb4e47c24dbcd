#!/usr/bin/env bash
# QoS 1/2 messages lost to subscribers that keep reading: pair, fan-out 1:20 and mesh 20 at
# QoS 1 and 2 with a deep publisher window (default 4000 in flight, deeper than a session's
# queue of 1000), for one or more SurgeMQ binaries side by side. Before push-back the broker
# dropped what did not fit a subscriber's queue ("missing"); with it, nothing may be missing.
# Prints a markdown table (missing, duplicated, messages per second) and each broker's totals
# line at stop (drops, publishers paused, subscribers stalled).
#
# Env: BINS ("name=path ..."; default: this tree's release build as "current"), SHARDS (2),
# WINDOW (4000), REPS (1), OUT (file to write the table to as well).
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
# scenario and messages per publisher: every subscriber's queue overflows many times over.
CASES=("pair 200000" "fan-out 20000" "mesh 5000")

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
      scenario=${c% *}
      messages=${c#* }
      for qos in 1 2; do
        # The generator exits non-zero when messages are missing: the JSON still says how many.
        json=$(timeout --kill-after=5 300 "$BIN" bench "$scenario" --qos "$qos" \
          --messages "$messages" --window "$WINDOW" --port "$port" --json 2>/dev/null | tail -1 ||
          true)
        row=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1] or "{}")
if "expected" not in r:
    print("| failed | | | |")
else:
    cells = [r["expected"], r["missing"], r["duplicated"], int(r["mps"])]
    print("| " + " | ".join(f"{c:,}" for c in cells) + " |")
' "$json")
        table+=$'\n'"| $name | $scenario | $qos $row"
        log "$name $scenario QoS $qos $row"
      done
    done
    stop_broker
    totals+="$name: $(grep -o 'stopped .*' "$log_file" || echo 'no totals line')"$'\n'
    rm -f "$log_file"
  done
done

report="Window $WINDOW, $SHARDS shards, 64 B payloads, default queue limits (1000 messages).

$table

Broker totals at stop:

\`\`\`
$totals\`\`\`"
echo "$report"
[ -z "$OUT" ] || echo "$report" >"$OUT"
