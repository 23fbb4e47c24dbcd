#!/usr/bin/env bash
# What MQTT 5 costs: the same broker (release build, --shards SHARDS) loaded by the same
# generator speaking MQTT 3.1.1 and MQTT 5 (`surgemq bench -V 311|5`), pair and fan-out at
# QoS 0 and 1, the two versions alternating within each repetition so a noisy neighbour hurts
# both alike. Prints the median msgs/s and p99 latency of each and the v5/3.1.1 ratio, and
# writes them with the raw JSON lines to perf/results/<date>-v5-cost.md (STAMP overrides).
#
# Env: REPS (5), DURATION (10 s), SHARDS (2), CLIENTS (20), SIZE (64), THREADS (2),
# CASES ("pair:0 fan-out:0 pair:1 fan-out:1"). Loopback only; the broker is always stopped.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
SHARDS=${SHARDS:-2}
THREADS=${THREADS:-2}
CASES=${CASES:-"pair:0 fan-out:0 pair:1 fan-out:1"}
STAMP=${STAMP:-$(date +%Y-%m-%d)-v5-cost}
OUT="$ROOT/perf/results/$STAMP.md"
RAW="$ROOT/perf/results/$STAMP-raw.jsonl"

build_release
PORT=$(free_port)
trap stop_broker EXIT
trap 'exit 130' INT TERM
start_surgemq "$SHARDS" "$PORT"
: >"$RAW"
for rep in $(seq 1 "$REPS"); do
  for case in $CASES; do
    scenario=${case%%:*}
    qos=${case##*:}
    # Alternate which version goes first from one repetition to the next.
    versions="311 5"
    [ $((rep % 2)) -eq 0 ] && versions="5 311"
    for v in $versions; do
      log "rep $rep/$REPS: $scenario QoS $qos, MQTT $v"
      line=$(QOS=$qos run_bench "$scenario" "$PORT" -V "$v" --json 2>/dev/null | tail -1 || true)
      if [ -z "$line" ]; then
        log "run failed: $scenario QoS $qos -V $v"
        continue
      fi
      printf '{"rep":%d,"case":"%s-q%s","version":"%s","result":%s}\n' \
        "$rep" "$scenario" "$qos" "$v" "$line" >>"$RAW"
    done
  done
done
stop_broker

python3 - "$RAW" "$OUT" "$REPS" "$SHARDS" "$DURATION" <<'EOF'
import json, statistics, sys
raw, out, reps, shards, duration = sys.argv[1:]
runs = [json.loads(l) for l in open(raw) if l.strip()]
cases = []
for r in runs:
    if r["case"] not in cases:
        cases.append(r["case"])
def med(case, version, key):
    vals = [r["result"][key] for r in runs if r["case"] == case and r["version"] == version
            and r["result"].get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
def p99(case, version):
    return med(case, version, "latency_p99_us")
lines = [
    f"# What MQTT 5 costs: the same broker, the generator speaking 3.1.1 or 5",
    "",
    f"Command: `REPS={reps} SHARDS={shards} DURATION={duration} scripts/v5-cost.sh`",
    f"(surgemq --shards {shards}, release; versions alternate within each repetition; "
    f"medians of {reps} runs; raw lines in `{raw.split('/')[-1]}`).",
    "",
    "| case | 3.1.1 msgs/s | 5 msgs/s | 5 / 3.1.1 | 3.1.1 p99 µs | 5 p99 µs | missing (5) |",
    "|---|---|---|---|---|---|---|",
]
for c in cases:
    a, b = med(c, "311", "mps"), med(c, "5", "mps")
    missing = sum(r["result"].get("missing", 0) for r in runs if r["case"] == c and r["version"] == "5")
    lines.append(f"| {c} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {p99(c, '311'):,.0f} | {p99(c, '5'):,.0f} | {missing} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "wrote $OUT"
