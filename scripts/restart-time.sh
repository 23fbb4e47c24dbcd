#!/usr/bin/env bash
# How long a broker takes to start from a full data directory: builds the release binary and
# examples/fill_data_dir, writes a data directory with SESSIONS persistent sessions (10,000)
# each holding MESSAGES queued QoS 1 messages of SIZE bytes (100 x 64 B: 1,000,000 messages),
# then REPS times (3) runs `surgemq serve --data-dir DIR --shards SHARDS` and times it from exec
# until its port accepts a TCP connection (the broker listens only once everything is
# restored), and stops it with SIGTERM. Each start loads generation G and rewrites it, compacted,
# as G + 1 before it listens, so every start reads and writes the whole data set. While the
# last start runs, three sessions (first, middle, last) connect with mosquitto_sub -c and must
# get exactly their MESSAGES messages, in order. Prints a summary (median start time, the
# broker's own log timestamps for "loaded" and "started", RSS after the start) and exits
# non-zero if a check fails.
#
# Env: SESSIONS (10000), MESSAGES (100), SIZE (64), SHARDS (2), REPS (3), DATA_ROOT (this
# checkout's target/, which must not be tmpfs), COLD=1 (drop the page cache before each start:
# needs root, and slows everything else on the machine for a moment), OUT (also write the
# summary to this file). Cleans up its data directory and stops its broker on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
MESSAGES=${MESSAGES:-100}
SIZE=${SIZE:-64}
SHARDS=${SHARDS:-2}
REPS=${REPS:-3}
COLD=${COLD:-0}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
DATA_ROOT=${DATA_ROOT:-"$ROOT/target"}

command -v mosquitto_sub >/dev/null 2>&1 || {
  log "mosquitto_sub is missing: apt-get install -y mosquitto-clients"
  exit 2
}
mkdir -p "$DATA_ROOT"
fs_type=$(stat -f -c %T "$DATA_ROOT")
fs_mount=$(findmnt -n -o FSTYPE,SOURCE,TARGET -T "$DATA_ROOT" 2>/dev/null | xargs || true)
case "$fs_type $fs_mount" in
  *tmpfs* | *ramfs*)
    log "DATA_ROOT=$DATA_ROOT is on $fs_type ($fs_mount): choose a directory on a disk"
    exit 2 ;;
esac

build_release
log "cargo build --release --example fill_data_dir"
(cd "$ROOT" && cargo build --release --quiet --example fill_data_dir)
FILL="$ROOT/target/release/examples/fill_data_dir"

TMP=$(mktemp -d "$DATA_ROOT/surgemq-restart-time.XXXXXX")
cleanup() { stop_broker; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
DIR="$TMP/data"

SUMMARY="$TMP/summary"
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

say "# restart time: $SESSIONS sessions x $MESSAGES queued QoS 1 messages of $SIZE B, --shards $SHARDS"
say ""
say "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
say "- surgemq: $(git rev-parse --short HEAD), release build"
say "- data directory: $DIR on $fs_mount (stat -f: $fs_type)"
say "- page cache: $([ "$COLD" = 1 ] && echo "dropped before each start (COLD=1)" || echo "warm (the data was just written or rewritten)")"
say "- fill: $("$FILL" --dir "$DIR" --sessions "$SESSIONS" --messages "$MESSAGES" --size "$SIZE" --logs "$SHARDS")"
say ""
say "| start | generation loaded | exec to port accepting | exec to 'data directory loaded' (log) | exec to 'broker started' (log) | RSS after start | stop (SIGTERM to exit) | data dir after |"
say "|---|---|---|---|---|---|---|---|"

failed=0
CHECKS=""
times=()
for rep in $(seq 1 "$REPS"); do
  port=$(free_port)
  generation=$(cat "$DIR/CURRENT")
  if [ "$COLD" = 1 ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
  fi
  t0=$EPOCHREALTIME
  "$BIN" serve --listen "127.0.0.1:$port" --shards "$SHARDS" --data-dir "$DIR" --log-level info \
    2> "$TMP/broker-$rep.log" &
  BROKER_PID=$!
  # Poll every 5 ms for at most 120 s.
  ready=0
  for _ in $(seq 1 24000); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      ready=1
      break
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.005
  done
  t1=$EPOCHREALTIME
  if [ "$ready" != 1 ]; then
    log "start $rep: the broker did not listen; its log:"
    cat "$TMP/broker-$rep.log" >&2
    exit 1
  fi
  elapsed=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  times+=("$elapsed")
  rss=$(settled_rss_kib "$BROKER_PID" 4)
  if [ "$rep" = "$REPS" ]; then
    for i in 0 $((SESSIONS / 2)) $((SESSIONS - 1)); do
      # Everything it gets within 3 s: must be exactly messages 1..MESSAGES, in order.
      got=$(timeout 10 mosquitto_sub -p "$port" -c -i "fill-$i" -q 1 -t "fill/$i/#" -W 3 2>/dev/null || true)
      want=$(seq 1 "$MESSAGES" | sed "s|^|$i/|; s|\$|/|")
      have=$(printf '%s\n' "$got" | sed '/^$/d' | sed 's|\.*$||')
      count=$(printf '%s\n' "$got" | sed '/^$/d' | wc -l)
      if [ "$have" = "$want" ]; then
        CHECKS+="- session fill-$i (mosquitto_sub -c -i fill-$i -q 1 -t 'fill/$i/#' -W 3): $count messages, 1..$MESSAGES in order: OK"$'\n'
      else
        CHECKS+="- session fill-$i: $count messages, not 1..$MESSAGES in order: FAILED"$'\n'
        failed=1
      fi
    done
  fi
  t2=$EPOCHREALTIME
  stop_broker
  t3=$EPOCHREALTIME
  stop=$(python3 -c "print(f'{$t3 - $t2:.2f}')")
  phases=$(python3 - "$TMP/broker-$rep.log" "$t0" <<'PY'
import sys, re, datetime
log, t0 = sys.argv[1], float(sys.argv[2])
def at(text):
    for line in open(log):
        if text in line:
            stamp = line.split()[0].rstrip("Z")
            t = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()
            return f"{t - t0:.3f} s"
    return "-"
print(at("data directory loaded") + "|" + at("surgemq broker started"))
PY
)
  size=$(du -sh "$DIR" | cut -f1)
  say "| $rep | $generation | **$elapsed s** | ${phases%%|*} | ${phases##*|} | $((rss / 1024)) MiB | $stop s | $size, now generation $(cat "$DIR/CURRENT") |"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
say ""
say "Median exec to port accepting: **$median s** over $REPS starts (aim: under 3 s)."
say ""
say "After the last start:"
say ""
printf '%s' "${CHECKS:-}" | tee -a "$SUMMARY"
[ -z "${OUT:-}" ] || cp "$SUMMARY" "$OUT"
exit "$failed"
