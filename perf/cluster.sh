#!/usr/bin/env bash
# The cost of crossing nodes (issue 19): `surgemq bench SCENARIO` (pair, or fan-out 1:20) with
# its publisher and subscribers on one node, against the publisher on node a and the
# subscribers on node b (two SurgeMQ nodes of one shard each on one nats-server, all on this
# machine with the generator), QoS 0 and 1, window 1000, 5 s per run, 3 repetitions
# interleaved. Needs nats-server (Debian package). Prints one line per run; record them in
# perf/results/. Env: SCENARIO (pair).
set -u
SCENARIO=${SCENARIO:-pair}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
build_release
B=$BIN
NP=$(free_port); A=$(free_port); BB=$(free_port)
nats-server -a 127.0.0.1 -p $NP >/dev/null 2>&1 & NPID=$!
wait_port $NP
$B serve --listen 127.0.0.1:$A --shards 1 --log-level warn --cluster nats://127.0.0.1:$NP --node-id a & APID=$!
$B serve --listen 127.0.0.1:$BB --shards 1 --log-level warn --cluster nats://127.0.0.1:$NP --node-id b & BPID=$!
wait_port $A && wait_port $BB
for rep in 1 2 3; do
  for q in 0 1; do
    one=$($B bench $SCENARIO --port $A --qos $q --duration 5 --window 1000 --json 2>/dev/null | bench_line)
    cross=$($B bench $SCENARIO --port $A --subscribe-port $BB --qos $q --duration 5 --window 1000 --drain 10s --settle 1s --json 2>/dev/null | bench_line)
    echo "$SCENARIO rep $rep qos $q one-node: $one | cross-node: $cross"
  done
done
kill $APID $BPID $NPID; wait 2>/dev/null
