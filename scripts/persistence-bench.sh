#!/usr/bin/env bash
# What persistence costs: SurgeMQ in memory, SurgeMQ --data-dir (every PUBACK waits for
# fdatasync), SurgeMQ --data-dir --sync-interval-ms 10, Mosquitto with `persistence true`
# and, when FLASHMQ_BIN names a FlashMQ binary (never built here), FlashMQ with `storage_dir`,
# side by side in one interleaved run (brokers alternate within each repetition, in an order
# that rotates from one repetition to the next), REPS x DURATION seconds each:
#
#   online   pair (1:1) and fan-in (20:1), QoS 1, 64-byte payloads, --persistent subscribers
#            that stay connected: delivered msgs/s (MPS) and p99 latency
#   offline  the same with --offline: subscribers subscribe and leave, publishers run DURATION
#            seconds against the offline sessions (acknowledged msgs/s), then the subscribers
#            reconnect and drain everything (drained msgs/s)
#
# Every run gets a fresh broker and a fresh data directory under DATA_ROOT (default: this
# checkout's target/, on the project's disk), which must not be tmpfs: the point is the real
# disk's sync. Writes perf/results/<STAMP>.md (medians, ratios, the exact commands) and the raw
# JSON lines next to it (<STAMP>-raw.jsonl). Stops every broker it started and removes its
# temporary directory on exit, Ctrl-C and failures included.
#
# Env: REPS (3), DURATION (10 s), THREADS (generator threads, 2), SHARDS (SurgeMQ shards, 2),
# CLIENTS (fan-in publishers, 20), SIZE (64), QOS (1), BROKERS ("surgemq-mem surgemq-disk
# surgemq-disk-sync10 mosquitto-persist", plus flashmq-persist with FLASHMQ_BIN), CASES ("pair fan-in pair-offline fan-in-offline"),
# DATA_ROOT, STAMP (<date>-persistence), QUEUE_MESSAGES / QUEUE_BYTES (per-session queue
# limits for every SurgeMQ variant, default 100,000,000 / 16 GiB: an offline run queues
# everything it publishes, which would overflow --data-dir's default of 1,000,000 messages).
# BASELINE_BIN=path/to/another/surgemq adds brokers baseline-mem and baseline-disk (that binary,
# as surgemq-mem and surgemq-disk): an A/B of a change in one interleaved run, the load
# generator being this checkout's binary for every broker.
# `scripts/persistence-bench.sh --summarize RAW.jsonl` rebuilds the report from a raw file.
set -euo pipefail
cd "$(dirname "$0")/.."
# Before scripts/lib.sh, whose defaults differ (QoS 0, one thread and shard per core).
REPS=${REPS:-3}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
SHARDS=${SHARDS:-2}
QOS=${QOS:-1}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

BROKERS=${BROKERS:-"surgemq-mem surgemq-disk surgemq-disk-sync10 mosquitto-persist${FLASHMQ_BIN:+ flashmq-persist}"}
CASES=${CASES:-"pair fan-in pair-offline fan-in-offline"}
QUEUE_MESSAGES=${QUEUE_MESSAGES:-100000000}
QUEUE_BYTES=${QUEUE_BYTES:-17179869184}
DATA_ROOT=${DATA_ROOT:-"$ROOT/target"}
RESULTS="$ROOT/perf/results"
STAMP=${STAMP:-"$(date +%F)-persistence"}

summarize() { # summarize RAW MD
  python3 - "$@" <<'PY'
import json, statistics, sys
raw, md_path = sys.argv[1:3]
rows = [json.loads(l) for l in open(raw) if l.strip()]
meta = next((r for r in rows if r.get("meta")), {})
runs = [r for r in rows if not r.get("meta")]
brokers, cases = [], []
for r in runs:
    if r["broker"] not in brokers: brokers.append(r["broker"])
    if r["case"] not in cases: cases.append(r["case"])

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def cell(case, broker):
    rs = [r for r in runs if r["case"] == case and r["broker"] == broker]
    ok = [r for r in rs if r.get("report")]
    if not ok:
        return None
    rep = [r["report"] for r in ok]
    return {
        "publish": med([x["publish_rate"] for x in rep]),
        "mps": med([x["mps"] for x in rep]),
        "p99": med([x.get("latency_p99_us") for x in rep]),
        "drain_secs": med([x["deliver_secs"] for x in rep]),
        "acked": med([x["acked"] for x in rep]),
        "bytes": med([r.get("data_bytes") for r in ok]),
        "stop": med([r.get("stop_secs") for r in ok]),
        "runs": len(ok), "tried": len(rs),
        "failed": sum(1 for x in rep if x.get("failed")),
        "expected": sum(x["expected"] for x in rep),
        "acked_all": sum(x["acked"] for x in rep),
        "missing": sum(x["missing"] for x in rep),
        "duplicated": sum(x["duplicated"] for x in rep),
        "errors": sorted({e for x in rep for e in x.get("errors", [])} |
                         {r["error"] for r in rs if r.get("error")}),
    }

table = {(c, b): cell(c, b) for c in cases for b in brokers}
def fmt(v, d=0): return "-" if v is None else f"{v:,.{d}f}"
def ratio(a, b): return "-" if not a or not b else f"{a / b:.2f}x"
def get(c, b, k): return (table[(c, b)] or {}).get(k)
mem = "surgemq-mem" if "surgemq-mem" in brokers else None
mosq = "mosquitto-persist" if "mosquitto-persist" in brokers else None
flash = "flashmq-persist" if "flashmq-persist" in brokers else None
ours = [b for b in brokers if b.startswith(("surgemq", "baseline"))]

out = [f"# What persistence costs, {meta.get('date', '?')} on {meta.get('host', '?')}\n",
       "Generated by `scripts/persistence-bench.sh`; one interleaved run, brokers alternating "
       "within each repetition in a rotating order. Medians of the repetitions.\n",
       "| setting | value |", "|---|---|"]
for k in ["machine", "cpu", "kernel", "surgemq", "mosquitto", "flashmq", "generator", "data_dir_fs",
          "duration_s", "reps", "clients", "size", "qos", "window", "queue_limits"]:
    if k in meta: out.append(f"| {k} | {meta[k]} |")
out.append("")
out.append("Brokers:\n")
for b, cmd in meta.get("broker_commands", {}).items():
    if b in brokers: out.append(f"- **{b}**: `{cmd}`")
out.append("\nLoad (`PORT` is a fresh free port per run):\n")
for c, cmd in meta.get("bench_commands", {}).items():
    if c in cases: out.append(f"- **{c}**: `{cmd}`")
out.append("")

def section(title, key, cs, note, d=0):
    if not cs: return
    out.append(f"## {title}\n")
    if note: out.append(note + "\n")
    cols = brokers + [f"{b} / surgemq-mem" for b in ours if mem and b != mem] + \
        ([f"{b} / mosquitto-persist" for b in ours] if mosq else []) + \
        ([f"{b} / flashmq-persist" for b in ours] if flash else [])
    out.append("| case | " + " | ".join(cols) + " |")
    out.append("|---" * (len(cols) + 1) + "|")
    for c in cs:
        vals = [fmt(get(c, b, key), d) for b in brokers]
        vals += [ratio(get(c, b, key), get(c, mem, key)) for b in ours if mem and b != mem]
        if mosq: vals += [ratio(get(c, b, key), get(c, mosq, key)) for b in ours]
        if flash: vals += [ratio(get(c, b, key), get(c, flash, key)) for b in ours]
        out.append(f"| {c} | " + " | ".join(vals) + " |")
    out.append("")

online = [c for c in cases if not c.endswith("-offline")]
offline = [c for c in cases if c.endswith("-offline")]
section("Online: delivered messages per second (MPS)", "mps", online,
        "Subscribers connected throughout (persistent sessions). Publisher window 100: a "
        "message is outstanding until it is both acknowledged and delivered.")
if online:
    out.append("p99 latency, microseconds (send to arrival at the subscriber):\n")
    out.append("| case | " + " | ".join(brokers) + " |")
    out.append("|---" * (len(brokers) + 1) + "|")
    for c in online:
        out.append(f"| {c} | " + " | ".join(fmt(get(c, b, "p99")) for b in brokers) + " |")
    out.append("")
section("Offline: acknowledged publishes per second", "publish", offline,
        "Subscribers away; publishers run DURATION seconds, window 100 counting only the "
        "broker's acknowledgements. Rate = acknowledged messages / time to the last acknowledgement.")
section("Offline: drained messages per second after reconnecting", "mps", offline,
        "From the call to reconnect to the last message received, everything the publishers "
        "had acknowledged (the amount differs per broker: it is what each accepted in DURATION s).")
if offline:
    out.append("Messages each subscriber drained (median), and how long that took:\n")
    out.append("| case | " + " | ".join(brokers) + " |")
    out.append("|---" * (len(brokers) + 1) + "|")
    for c in offline:
        out.append(f"| {c} | " + " | ".join(
            "-" if get(c, b, "acked") is None else
            f"{get(c, b, 'acked'):,.0f} in {get(c, b, 'drain_secs'):.2f} s" for b in brokers) + " |")
    out.append("")
out.append("## Disk and stop\n")
out.append("Size of the data directory after the broker stopped (median; the bench removes its "
           "sessions at the end, so this is what the log accumulated, not live state), and how "
           "long the broker took to exit after SIGTERM.\n")
out.append("| case | " + " | ".join(brokers) + " |")
out.append("|---" * (len(brokers) + 1) + "|")
for c in cases:
    out.append(f"| {c} | " + " | ".join(
        "-" if not table[(c, b)] else
        f"{(get(c, b, 'bytes') or 0) / 2**20:,.1f} MiB, {get(c, b, 'stop') or 0:.2f} s" for b in brokers) + " |")
out.append("")
out.append("## Completeness (all reps)\n")
out.append("A run fails when an acknowledged QoS 1/2 message is missing, a client hits an error, "
           "or the run stalls.\n")
out.append("| case | broker | runs with a report | failed runs | acknowledged | expected | missing | duplicated | errors |")
out.append("|---|---|---|---|---|---|---|---|---|")
for c in cases:
    for b in brokers:
        t = table[(c, b)]
        tried = len([r for r in runs if r["case"] == c and r["broker"] == b])
        if t is None:
            errs = sorted({r.get("error", "?") for r in runs if r["case"] == c and r["broker"] == b})
            out.append(f"| {c} | {b} | 0/{tried} | - | - | - | - | - | {'; '.join(errs)[:200]} |")
        else:
            out.append(f"| {c} | {b} | {t['runs']}/{t['tried']} | {t['failed']} | {t['acked_all']:,} | "
                       f"{t['expected']:,} | {t['missing']:,} | {t['duplicated']:,} | "
                       f"{'; '.join(t['errors'])[:200].replace('|', '/')} |")
notes = meta.get("notes", [])
if notes:
    out.append("\n## Notes\n")
    for n in notes: out.append(f"- {n}")
out.append(f"\nRaw JSON lines: `{raw.split('/')[-1]}`.")
open(md_path, "w").write("\n".join(out) + "\n")
print(open(md_path).read())
PY
}

if [ "${1:-}" = "--summarize" ]; then
  summarize "$2" "${2%-raw.jsonl}.md"
  exit 0
fi

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
case " $BROKERS " in
  *" mosquitto-persist "*)
    [ -x "$MOSQUITTO" ] || { log "mosquitto is missing: apt-get install -y mosquitto"; exit 2; } ;;
esac
case " $BROKERS " in
  *" flashmq-persist "*)
    [ -x "${FLASHMQ_BIN:-}" ] || { log "flashmq-persist needs FLASHMQ_BIN, a FlashMQ binary"; exit 2; } ;;
esac

# The data directories must be on a real disk: on tmpfs fdatasync costs nothing.
mkdir -p "$DATA_ROOT"
fs_type=$(stat -f -c %T "$DATA_ROOT")
fs_mount=$(findmnt -n -o FSTYPE,SOURCE,TARGET -T "$DATA_ROOT" 2>/dev/null | xargs || true)
case "$fs_type $fs_mount" in
  *tmpfs* | *ramfs*)
    log "DATA_ROOT=$DATA_ROOT is on $fs_type ($fs_mount): choose a directory on a disk"
    exit 2 ;;
esac
log "data directories under $DATA_ROOT: $fs_mount (stat -f: $fs_type)"

build_release
TMP=$(mktemp -d "$DATA_ROOT/surgemq-persistence-bench.XXXXXX")
cleanup() { stop_broker; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

QUEUE_FLAGS="--max-queued-messages $QUEUE_MESSAGES --max-queued-bytes $QUEUE_BYTES"

# broker_command NAME PORT DIR: the command line of a broker (DIR: its fresh data directory).
broker_command() {
  local serve="$BIN serve --listen 127.0.0.1:$2 --shards $SHARDS --log-level warn $QUEUE_FLAGS"
  case $1 in
    surgemq-mem) echo "$serve" ;;
    surgemq-disk) echo "$serve --data-dir $3" ;;
    surgemq-disk-sync10) echo "$serve --data-dir $3 --sync-interval-ms 10" ;;
    baseline-mem) echo "${BASELINE_BIN:?baseline-mem needs BASELINE_BIN}${serve#"$BIN"}" ;;
    baseline-disk) echo "${BASELINE_BIN:?baseline-disk needs BASELINE_BIN}${serve#"$BIN"} --data-dir $3" ;;
    mosquitto-persist) echo "$MOSQUITTO -c $3/mosquitto.conf" ;;
    flashmq-persist) echo "$FLASHMQ_BIN --config-file $3/flashmq.conf" ;;
    *) log "unknown broker $1"; return 1 ;;
  esac
}

# start_broker NAME PORT DIR
start_broker() {
  mkdir -p "$3"
  if [ "$1" = mosquitto-persist ]; then
    # Unlimited queues and a window like SurgeMQ's (as perf/compare.sh), plus persistence with
    # Mosquitto's defaults: the whole state is written to mosquitto.db every autosave_interval
    # (1800 s) and at exit, nothing per message.
    cat > "$3/mosquitto.conf" <<EOF
listener $2 127.0.0.1
allow_anonymous true
persistence true
persistence_location $3/
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 100
set_tcp_nodelay true
log_dest stderr
log_type error
EOF
  fi
  if [ "$1" = flashmq-persist ]; then
    # As perf/compare.sh runs it (Nagle off, QoS queues at their largest: 65,535 messages per
    # client is FlashMQ's ceiling, so an offline run that queues more loses the rest, and the
    # completeness table says so), plus persistence with FlashMQ's defaults: sessions,
    # subscriptions and retained messages saved to storage_dir every save_state_interval
    # (3,623 s) and at exit, nothing per message.
    cat > "$3/flashmq.conf" <<EOF
allow_anonymous true
storage_dir $3
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 1073741824
log_file $3/flashmq.log
quiet true
listen {
  protocol mqtt
  inet_protocol ip4
  inet4_bind_address 127.0.0.1
  port $2
  tcp_nodelay true
}
EOF
  fi
  local cmd
  cmd=$(broker_command "$1" "$2" "$3")
  # shellcheck disable=SC2086 # the command line is split on purpose
  $cmd &
  BROKER_PID=$!
  wait_port "$2"
}

# bench_command CASE PORT
bench_command() {
  local scenario=${1%-offline} extra=""
  [ "$scenario" = "$1" ] || extra=" --offline"
  local clients=""
  [ "$scenario" = pair ] || clients=" --clients $CLIENTS"
  echo "$BIN bench $scenario --port $2 --size $SIZE --qos $QOS --threads $THREADS$clients --duration $DURATION --persistent$extra --json"
}

mosq_version=$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)
mkdir -p "$RESULTS"
RAW="$RESULTS/$STAMP-raw.jsonl"
python3 - "$RAW" <<PY
import json, sys
meta = {"meta": True, "date": "$(date -u +'%F %H:%M UTC')", "host": "$(hostname -s)",
        "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, shared with other builds; broker and generator on the same cores",
        "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
        "kernel": "$(uname -r)", "surgemq": "$(git rev-parse --short HEAD), release build, --shards $SHARDS${BASELINE_BIN:+; baseline-*: $BASELINE_BIN}",
        "mosquitto": "$mosq_version",
        "flashmq": "$([ -n "${FLASHMQ_BIN:-}" ] && "$FLASHMQ_BIN" --version 2>/dev/null | head -1 || true)",
        "generator": "surgemq bench, --threads $THREADS (sharing the cores with the broker)",
        "data_dir_fs": "$DATA_ROOT: $fs_mount (stat -f: $fs_type)",
        "duration_s": "$DURATION", "reps": "$REPS", "clients": "pair 1:1, fan-in $CLIENTS:1",
        "size": "$SIZE", "qos": "$QOS", "window": "100 (closed loop)",
        "queue_limits": "SurgeMQ, every variant: $QUEUE_FLAGS; Mosquitto: max_queued_messages 0, max_queued_bytes 0 (unlimited)",
        "notes": []}
open(sys.argv[1], "w").write(json.dumps(meta) + "\n")
PY
# The exact command lines, with placeholders for the per-run port and directory.
python3 - "$RAW" "$(for b in $BROKERS; do printf '%s\t%s\n' "$b" "$(broker_command "$b" PORT DIR | sed "s|$BIN|surgemq|")"; done)" \
  "$(for c in $CASES; do printf '%s\t%s\n' "$c" "$(bench_command "$c" PORT | sed "s|$BIN|surgemq|")"; done)" <<'PY'
import json, sys
path, brokers, cases = sys.argv[1:4]
lines = open(path).read().splitlines()
meta = json.loads(lines[0])
meta["broker_commands"] = dict(l.split("\t", 1) for l in brokers.splitlines() if l)
meta["bench_commands"] = dict(l.split("\t", 1) for l in cases.splitlines() if l)
lines[0] = json.dumps(meta)
open(path, "w").write("\n".join(lines) + "\n")
PY

read -r -a available <<< "$BROKERS"
NOTES=()
for rep in $(seq 1 "$REPS"); do
  for case in $CASES; do
    order=()
    for ((k = 0; k < ${#available[@]}; k++)); do
      order+=("${available[$(( (k + rep - 1) % ${#available[@]} ))]}")
    done
    for broker in "${order[@]}"; do
      port=$(free_port)
      dir="$TMP/$broker-$case-$rep"
      log "rep $rep/$REPS  $case  $broker"
      if ! start_broker "$broker" "$port" "$dir"; then
        printf '{"broker":"%s","case":"%s","rep":%s,"error":"broker did not start"}\n' \
          "$broker" "$case" "$rep" >> "$RAW"
        stop_broker
        rm -rf "$dir"
        continue
      fi
      # Setup, DURATION of publishing, then (offline) the reconnect and drain of everything:
      # bounded generously, a slow broker may take minutes to drain.
      # shellcheck disable=SC2046 # the command line is split on purpose
      out=$(timeout --kill-after=5 $(( DURATION + 300 )) $(bench_command "$case" "$port") \
        2>"$TMP/bench.err" || true)
      if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        NOTES+=("$broker exited during $case rep $rep")
      fi
      t0=$(date +%s.%N)
      stop_broker
      stop_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
      data_bytes=$(du -sb "$dir" | cut -f1)
      rm -rf "$dir"
      if [ -n "$out" ]; then
        printf '{"broker":"%s","case":"%s","rep":%s,"data_bytes":%s,"stop_secs":%s,"report":%s}\n' \
          "$broker" "$case" "$rep" "$data_bytes" "$stop_secs" "$out" >> "$RAW"
      else
        err=$(tr -d '"\\' < "$TMP/bench.err" | tr '\n' ' ' | cut -c1-200)
        printf '{"broker":"%s","case":"%s","rep":%s,"error":"%s"}\n' \
          "$broker" "$case" "$rep" "$err" >> "$RAW"
      fi
    done
  done
done

if [ ${#NOTES[@]} -gt 0 ]; then
  python3 - "$RAW" "${NOTES[@]}" <<'PY'
import json, sys
path, notes = sys.argv[1], sys.argv[2:]
lines = open(path).read().splitlines()
meta = json.loads(lines[0]); meta["notes"] = meta.get("notes", []) + notes
lines[0] = json.dumps(meta)
open(path, "w").write("\n".join(lines) + "\n")
PY
fi
summarize "$RAW" "$RESULTS/$STAMP.md"
