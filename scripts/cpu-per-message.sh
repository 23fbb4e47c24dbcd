#!/usr/bin/env bash
# Broker CPU time per delivered message, for two or more SurgeMQ binaries side by side.
#
# With large payloads the load generator, which shares the two cores and must read every
# delivered byte, runs out of CPU before the broker does, so messages per second says little
# about the broker. The CPU time the broker process used (utime + stime from /proc) divided by
# the messages delivered does: it is what the broker spends per delivery whoever is the
# bottleneck. Binaries alternate within each repetition, in an order that rotates per
# repetition (see perf/README.md on order bias). Prints a markdown table of medians.
#
# Env: BINS ("name=path ..."; default: this tree's release build as "current"), SCENARIO
# (fan-out), SHARDS (1), SIZE (16384), QOS (0), CLIENTS (20), DURATION (10), REPS (5),
# OUT (file to write the table to as well). Arguments go to `surgemq bench`: a fixed load such as
# `--rate 100000` compares binaries at the same message rate, so that one that is faster does
# not also change how much each wake-up batches.
#
#   BINS="new=target/release/surgemq old=perf/.peers/surgemq-fe3048d" scripts/cpu-per-message.sh
#   SIZE=64 scripts/cpu-per-message.sh --rate 100000

set -euo pipefail
# Set before lib.sh, whose defaults differ.
SHARDS=${SHARDS:-1}
SIZE=${SIZE:-16384}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIO=${SCENARIO:-fan-out}
REPS=${REPS:-5}
BINS=${BINS:-"current=$BIN"}
OUT=${OUT:-}

build_release
read -r -a entries <<<"$BINS"
TMP=$(mktemp -d)
trap 'stop_broker; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# cpu_ticks PID: utime + stime of the process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for rep in $(seq 1 "$REPS"); do
  n=${#entries[@]}
  for i in $(seq 0 $((n - 1))); do
    entry=${entries[$(( (i + rep - 1) % n ))]}
    name=${entry%%=*}
    path=${entry#*=}
    port=$(free_port)
    log "rep $rep/$REPS  $name"
    BIN=$path start_surgemq "$SHARDS" "$port"
    before=$(cpu_ticks "$BROKER_PID")
    report=$(run_bench "$SCENARIO" "$port" --json "$@" 2>"$TMP/bench.err" || true)
    after=$(cpu_ticks "$BROKER_PID")
    stop_broker
    printf '%s\t%s\t%s\n' "$name" "$((after - before))" "$report" >>"$TMP/runs.tsv"
  done
done

python3 - "$TMP/runs.tsv" "$(getconf CLK_TCK)" "$SCENARIO" "$SHARDS" "$SIZE" "$QOS" <<'PY' | tee "${OUT:-/dev/null}"
import json, statistics, sys
path, tck, scenario, shards, size, qos = sys.argv[1:]
tck = int(tck)
runs = {}
for line in open(path):
    name, ticks, report = line.rstrip("\n").split("\t", 2)
    try:
        r = json.loads(report)
    except ValueError:
        r = {"delivered": 0, "mps": 0, "failed": True}
    runs.setdefault(name, []).append((int(ticks) / tck, r))
print(f"{scenario}, --shards {shards}, {size}-byte payloads, QoS {qos}; medians of {len(next(iter(runs.values())))} runs\n")
print("| binary | broker CPU µs per delivery | delivered msgs/s | failed runs |")
print("|---|---|---|---|")
med = {}
for name, rs in runs.items():
    per = [cpu * 1e6 / r["delivered"] for cpu, r in rs if r.get("delivered")]
    mps = [r["mps"] for _, r in rs if r.get("delivered")]
    failed = sum(1 for _, r in rs if r.get("failed"))
    med[name] = statistics.median(per) if per else float("nan")
    print(f"| {name} | {med[name]:.3f} | {statistics.median(mps) if mps else 0:,.0f} | {failed} |")
for name, rs in runs.items():
    for i, (_, r) in enumerate(rs):
        if r.get("failed"):
            why = {k: r.get(k) for k in ("missing", "duplicated", "reordered", "errors") if r.get(k)}
            print(f"\n{name} run {i + 1} failed: {why or 'no report'}")
names = list(runs)
if len(names) > 1:
    base = med[names[-1]]
    print()
    for name in names[:-1]:
        print(f"{name} / {names[-1]} CPU per delivery: {med[name] / base:.2f}x")
PY
