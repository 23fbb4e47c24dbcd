#!/usr/bin/env bash
# Three nodes as one broker (issue 19): `surgemq bench` fan-out 1:20 and mesh of 20 with the
# clients dealt over three SurgeMQ nodes (`--spread-ports`, one shard each, on one
# nats-server), against the same load on one node alone; QoS 0 and 1, window 1000, 5 s per
# run, REPS repetitions interleaved. Everything (three nodes, NATS, the generator) shares this
# machine's cores, so the numbers say what crossing nodes costs here, not what three hosts
# would do. Needs nats-server (Debian package). Prints one line per run; record them in
# perf/results/. Env: REPS (3), SCENARIOS ("fan-out mesh"), SURGEMQ_BIN.
set -u
REPS=${REPS:-3}
SCENARIOS=${SCENARIOS:-"fan-out mesh"}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# SURGEMQ_BIN=path runs that binary instead of building this tree (to compare two builds).
if [ -n "${SURGEMQ_BIN:-}" ]; then
  B=$SURGEMQ_BIN
else
  build_release
  B=$BIN
fi
NP=$(free_port)
nats-server -a 127.0.0.1 -p "$NP" >/dev/null 2>&1 & NPID=$!
wait_port "$NP"
PORTS=()
PIDS=()
for node in a b c; do
  P=$(free_port)
  $B serve --listen 127.0.0.1:"$P" --shards 1 --log-level warn \
    --cluster nats://127.0.0.1:"$NP" --node-id $node & PIDS+=($!)
  PORTS+=("$P")
done
ALONE=$(free_port)
$B serve --listen 127.0.0.1:"$ALONE" --shards 1 --log-level warn & PIDS+=($!)
for p in "${PORTS[@]}" "$ALONE"; do wait_port "$p"; done
OTHERS="${PORTS[1]},${PORTS[2]}"
for rep in $(seq 1 "$REPS"); do
  for s in $SCENARIOS; do
    for q in 0 1; do
      one=$($B bench "$s" --port "$ALONE" --qos "$q" --duration 5 --window 1000 --json 2>/dev/null | bench_line)
      three=$($B bench "$s" --port "${PORTS[0]}" --spread-ports "$OTHERS" --qos "$q" --duration 5 --window 1000 --drain 10s --settle 1s --json 2>/dev/null | bench_line)
      echo "$s rep $rep qos $q one-node: $one | three-nodes: $three"
    done
  done
done
kill "${PIDS[@]}" "$NPID"; wait 2>/dev/null
