#!/usr/bin/env bash
# A SurgeMQ cluster over NATS on three separate hosts: network namespaces this script makes
# (`ip netns`), each with its own address on a private LAN (veth pairs into a bridge that lives
# in a fourth namespace, so the machine's own network is never touched), each running a
# nats-server (routed into one NATS cluster) and a surgemq node listening on its own address.
# Independent clients (mosquitto_pub/mosquitto_sub, run inside the namespaces) check:
#
#   qos1_in_order_across_hosts   100 QoS 1 messages published on host 1 reach a subscriber on
#                                host 3, all, once, in order
#   retained_across_hosts        a retained message set on host 2 reaches a new subscriber on
#                                host 3
#   shared_group_across_hosts    a $share group with a member on host 2 and one on host 3:
#                                100 QoS 1 messages from host 1 reach the group each once
#   qos1_through_nats_server_lost
#                                host 3's nats-server is killed while host 2 streams 5,000
#                                QoS 1 messages to host 3: every one arrives (sent again)
#   nats_server_lost             host 2's nats-server is killed: its node fails over to the
#                                other hosts' servers, and what it publishes still reaches host 3
#   node_lost                    host 1's node is SIGKILLed: hosts 2 and 3 go on
#
# Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) for the namespaces. Where they cannot be made
# (a container without the capabilities), it says so and exits 0 without checking anything;
# set NETNS_REQUIRED=1 to make that a failure. Installs nothing (scripts/test.sh installs the
# tools). Everything is bounded by `timeout`; every process and namespace is removed on exit.
#
# Usage: scripts/interop-cluster-netns.sh   (SURGEMQ_BIN=path picks the binary; default
# target/debug/surgemq, built here when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

require ip "the Debian package iproute2"
require nats-server "the Debian package nats-server"
require mosquitto_pub "the Debian package mosquitto-clients"
require timeout "coreutils"

BIN=${SURGEMQ_BIN:-$ROOT/target/debug/surgemq}
if [ -z "${SURGEMQ_BIN:-}" ]; then
  log "cargo build"
  cargo build --quiet --bin surgemq
fi

TAG="smq$$"
LAN="$TAG-lan"
NET=10.203.0
HOSTS=(1 2 3)
TMP=$(mktemp -d)
PIDS=()

cleanup() {
  local pid
  # TERM first: `timeout` passes it on to what it runs.
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for h in "${HOSTS[@]}"; do ip netns del "$TAG-$h" 2>/dev/null || true; done
  ip netns del "$LAN" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "$LAN" 2>"$TMP/netns.err"; then
  echo "interop-cluster-netns: cannot make network namespaces here ($(head -1 "$TMP/netns.err")): nothing checked"
  [ "${NETNS_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi

# on_host HOST CMD...: runs CMD on host HOST.
on_host() {
  local h=$1
  shift
  ip netns exec "$TAG-$h" "$@"
}

log "three hosts on $NET.0/24"
ip -n "$LAN" link add br0 type bridge
ip -n "$LAN" link set br0 up
for h in "${HOSTS[@]}"; do
  ip netns add "$TAG-$h"
  ip link add "$TAG-$h-a" type veth peer name "$TAG-$h-b"
  ip link set "$TAG-$h-a" netns "$TAG-$h"
  ip link set "$TAG-$h-b" netns "$LAN"
  ip -n "$TAG-$h" link set "$TAG-$h-a" name eth0
  ip -n "$TAG-$h" addr add "$NET.$h/24" dev eth0
  ip -n "$TAG-$h" link set eth0 up
  ip -n "$TAG-$h" link set lo up
  ip -n "$LAN" link set "$TAG-$h-b" master br0
  ip -n "$LAN" link set "$TAG-$h-b" up
done

# wait_listen HOST PORT: until HOST accepts on its address and PORT, seen from the next host
# over the LAN (at most 10 s).
wait_listen() {
  local from=$(($1 % 3 + 1))
  for _ in $(seq 1 200); do
    if on_host "$from" bash -c "exec 3<>/dev/tcp/$NET.$1/$2" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "host $from cannot reach host $1 port $2"
  return 1
}

ROUTES="nats://$NET.1:6222,nats://$NET.2:6222,nats://$NET.3:6222"
declare -A NATS_PID NODE_PID
for h in "${HOSTS[@]}"; do
  # Started directly (`ip netns exec` becomes the server), so its pid is the server's.
  ip netns exec "$TAG-$h" nats-server -a "$NET.$h" -p 4222 --cluster_name smq-netns \
    --cluster "nats://$NET.$h:6222" --routes "$ROUTES" >"$TMP/nats-$h.log" 2>&1 &
  NATS_PID[$h]=$!
  PIDS+=("$!")
done
for h in "${HOSTS[@]}"; do wait_listen "$h" 4222; done
for h in "${HOSTS[@]}"; do
  # Its own host's NATS server first, then the others (failover).
  servers="nats://$NET.$h:4222"
  for o in "${HOSTS[@]}"; do [ "$o" = "$h" ] || servers+=",nats://$NET.$o:4222"; done
  ip netns exec "$TAG-$h" "$BIN" serve --listen "$NET.$h:1883" --shards 1 --sys-interval 0 \
    --cluster "$servers" --node-id "host-$h" --log-level warn >"$TMP/node-$h.log" 2>&1 &
  NODE_PID[$h]=$!
  PIDS+=("$!")
done
for h in "${HOSTS[@]}"; do wait_listen "$h" 1883; done

# sub HOST OUT ARGS...: a mosquitto_sub on HOST (at most 60 s), its lines into OUT.
sub() {
  local h=$1 out=$2
  shift 2
  ip netns exec "$TAG-$h" timeout 60 mosquitto_sub -h "$NET.$h" -p 1883 "$@" >"$out" 2>"$out.err" &
  PIDS+=("$!")
}

# pub HOST ARGS...: one mosquitto_pub on HOST.
pub() {
  local h=$1
  shift
  on_host "$h" timeout 10 mosquitto_pub -h "$NET.$h" -p 1883 "$@"
}

# until_seen FROM FILE TOPIC: publishes probes on TOPIC from host FROM until FILE (a
# subscriber's output) shows one: interest has spread between the hosts (at most 20 s).
until_seen() {
  for _ in $(seq 1 100); do
    pub "$1" -t "$3" -m probe -q 0
    grep -q '^probe' "$2" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# lines_of FILE PREFIX N: waits (at most 20 s) until FILE has N lines starting with PREFIX.
lines_of() {
  for _ in $(seq 1 100); do
    [ "$(grep -c "^$2" "$1" 2>/dev/null || true)" -ge "$3" ] && return 0
    sleep 0.2
  done
  return 1
}

# reaches_host_3 FROM NAME: a new subscriber on host 3 gets a QoS 1 message published on host
# FROM (topic netns/NAME/data, once interest has spread).
reaches_host_3() {
  local out="$TMP/$2.out"
  sub 3 "$out" -i "$2-sub" -q 1 -t "netns/$2/#"
  until_seen "$1" "$out" "netns/$2/probe" || return 1
  pub "$1" -t "netns/$2/data" -m "$2-data" -q 1
  lines_of "$out" "$2-data" 1
}

# qos1_in_order_across_hosts
sub 3 "$TMP/q1.out" -i q1-sub -q 1 -t 'netns/q1/#'
ok=0
detail=""
if until_seen 1 "$TMP/q1.out" netns/q1/probe; then
  seq 1 100 | sed 's/^/m/' | pub 1 -t netns/q1/data -q 1 -l || true
  lines_of "$TMP/q1.out" m 100 || true
  got=$(grep '^m' "$TMP/q1.out" | tr '\n' ' ')
  want=$(seq 1 100 | sed 's/^/m/' | tr '\n' ' ')
  [ "$got" = "$want" ] || { ok=1; detail="got $(grep -c '^m' "$TMP/q1.out") messages: ${got:0:120}"; }
else
  ok=1
  detail="interest never spread from host 3 to host 1"
fi
report qos1_in_order_across_hosts "$ok" "$detail"

# retained_across_hosts
pub 2 -t netns/ret -m kept -r -q 1
ok=1
for _ in $(seq 1 25); do
  if on_host 3 timeout 5 mosquitto_sub -h "$NET.3" -p 1883 -t netns/ret -C 1 -W 1 2>/dev/null |
    grep -qx kept; then
    ok=0
    break
  fi
  sleep 0.2
done
report retained_across_hosts "$ok" "host 3 never got the retained message set on host 2"

# shared_group_across_hosts
# shellcheck disable=SC2016 # a literal topic filter, not an expansion
SHARE='$share/g/netns/sh/#'
sub 2 "$TMP/sh2.out" -i sh2 -q 1 -t "$SHARE"
sub 3 "$TMP/sh3.out" -i sh3 -q 1 -t "$SHARE"
ok=1
detail="the group's interest never reached host 1"
for _ in $(seq 1 100); do
  pub 1 -t netns/sh/probe -m probe -q 0
  if grep -qh '^probe' "$TMP/sh2.out" "$TMP/sh3.out" 2>/dev/null; then
    # One member's interest is there; give the other's a moment to join the NATS queue.
    sleep 1
    seq 1 100 | sed 's/^/s/' | pub 1 -t netns/sh/data -q 1 -l || true
    for _ in $(seq 1 100); do
      [ "$(cat "$TMP/sh2.out" "$TMP/sh3.out" | grep -c '^s')" -ge 100 ] && break
      sleep 0.2
    done
    sleep 0.5 # anything sent twice would be here by now
    got=$(cat "$TMP/sh2.out" "$TMP/sh3.out" | grep '^s' | sort -V | tr '\n' ' ')
    want=$(seq 1 100 | sed 's/^/s/' | tr '\n' ' ')
    on2=$(grep -c '^s' "$TMP/sh2.out" || true)
    on3=$(grep -c '^s' "$TMP/sh3.out" || true)
    detail="host 2 got $on2, host 3 got $on3: ${got:0:120}"
    [ "$got" = "$want" ] && ok=0
    echo "  shared group: host 2 took $on2 messages, host 3 took $on3"
    break
  fi
  sleep 0.2
done
report shared_group_across_hosts "$ok" "$detail"

# qos1_through_nats_server_lost: host 3's nats-server dies while host 2 streams QoS 1 messages
# to a subscriber on host 3: host 3's node fails over to another host's server, and what was
# lost on the way (in the dead server, or published while host 3 reconnected) is sent again
# by host 2's node, which host 3's had not acknowledged it to: all of them arrive.
sub 3 "$TMP/loss.out" -i loss-sub -q 1 -t 'netns/loss/#'
ok=1
detail="interest never spread from host 3 to host 2"
if until_seen 2 "$TMP/loss.out" netns/loss/probe; then
  seq 1 5000 | sed 's/^/l/' | pub 2 -t netns/loss/data -q 1 -l &
  STREAM=$!
  sleep 0.15
  kill -KILL "${NATS_PID[3]}"
  wait "${NATS_PID[3]}" 2>/dev/null || true
  wait "$STREAM" || true
  lines_of "$TMP/loss.out" l 5000 || true
  got=$(grep -c '^l' "$TMP/loss.out" || true)
  distinct=$(grep '^l' "$TMP/loss.out" | sort -u | wc -l)
  detail="host 3 got $distinct of 5000 distinct ($got lines)"
  [ "$distinct" = 5000 ] && ok=0
  echo "  stream through a dying server: $detail"
fi
report qos1_through_nats_server_lost "$ok" "$detail"

# nats_server_lost: host 2's node loses its NATS server and fails over to another host's.
kill -KILL "${NATS_PID[2]}"
wait "${NATS_PID[2]}" 2>/dev/null || true
! on_host 3 bash -c "exec 3<>/dev/tcp/$NET.2/4222" 2>/dev/null || {
  echo "interop-cluster-netns: host 2's nats-server survived SIGKILL"
  exit 1
}
ok=1
reaches_host_3 2 fo && ok=0
report nats_server_lost "$ok" "nothing from host 2 reached host 3 after host 2's nats-server died"

# node_lost: host 1's node dies; hosts 2 and 3 go on.
kill -KILL "${NODE_PID[1]}"
wait "${NODE_PID[1]}" 2>/dev/null || true
ok=1
reaches_host_3 2 nl && ok=0
report node_lost "$ok" "hosts 2 and 3 stopped talking once host 1's node died"

for h in 2 3; do
  if kill -0 "${NODE_PID[$h]}" 2>/dev/null; then
    report "node on host $h still running" 0
  else
    report "node on host $h still running" 1 "it exited"
  fi
done
if [ "$FAILED" -ne 0 ]; then
  for h in "${HOSTS[@]}"; do
    echo "node on host $h (last 20 lines):"
    tail -n 20 "$TMP/node-$h.log"
  done
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
