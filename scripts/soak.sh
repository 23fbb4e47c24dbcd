#!/usr/bin/env bash
# Soak test: DURATION seconds (default 600) of mixed load against a release broker (2 shards),
# with the broker's RSS reported every INTERVAL seconds (default 30) and, at the end, whether
# it plateaued (the last third's highest RSS within 10 % of the middle third's).
#
# The load (Python, paho-mqtt) runs at once:
# - a mesh: 6 publishers (QoS 0, 1 and 2, two each) publishing to soak/mesh/<p>/<k>, and 6
#   subscribers of soak/mesh/# (granted QoS 0, 1 and 2, two each) that check every message
#   for gaps, duplicates and reordering per publisher;
# - churn: clients connecting and leaving all the time, from a pool of 50 ids (so persistent
#   sessions are bounded), clean or persistent, with wills, some leaving without DISCONNECT;
# - retained churn: 2,000 retained topics set and cleared at random, and a client that
#   subscribes to all of them and unsubscribes again, over and over.
#
# With PERSIST=1 the broker runs with --data-dir (in the temporary directory), the report also
# samples the data directory's size, and the plateau check covers it too: persistent sessions
# and retained topics churn, so the logs only stay bounded if compaction keeps up.
# COMPACT_AFTER=BYTES (default 64 MiB, the broker's own) compacts sooner, to see several
# compactions in a short soak.
#
# Everything runs on 127.0.0.1 and stops by itself. Not part of CI.
# Usage: DURATION=120 scripts/soak.sh     OUT=file also writes the report there.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
INTERVAL=${INTERVAL:-30}
OUT=${OUT:-}
WORK=$(mktemp -d)
BROKER_PID=""

cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q "paho-mqtt>=2,<3"
cargo build --release --quiet
BIN=target/release/surgemq

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=""
PERSIST_ARGS=()
if [ "${PERSIST:-0}" = 1 ]; then
  DATA="$WORK/data"
  PERSIST_ARGS=(--data-dir "$DATA")
  [ -n "${COMPACT_AFTER:-}" ] && PERSIST_ARGS+=(--compact-after-bytes "$COMPACT_AFTER")
fi
"$BIN" serve --listen "127.0.0.1:$PORT" --shards 2 --log-level warn "${PERSIST_ARGS[@]}" &
BROKER_PID=$!
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),1)" 2>/dev/null && break
  sleep 0.1
done

cat >"$WORK/soak.py" <<'PY'
import os, random, sys, threading, time
import paho.mqtt.client as mqtt

port, broker_pid, duration, interval = (int(a) for a in sys.argv[1:5])
data_dir = sys.argv[5] if len(sys.argv) > 5 else ""

def disk_kib():
    """KiB in the broker's data directory (0 without one)."""
    total = 0
    for root, _, files in os.walk(data_dir or "/nonexistent"):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass  # a compaction renamed it meanwhile
    return total // 1024
stop = threading.Event()
lock = threading.Lock()
stats = {
    "published": 0, "received": 0, "gaps": 0, "dupes": 0, "reordered": 0,
    "churn_connects": 0, "churn_crashes": 0, "wills_seen": 0, "connect_errors": 0,
    "retained_set": 0, "retained_cleared": 0, "retained_sweeps": 0, "retained_got": 0,
}

def bump(key, n=1):
    with lock:
        stats[key] += n

def client(cid, clean=True):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean,
                    protocol=mqtt.MQTTv311)
    c.max_queued_messages_set(0)
    return c

def connect(c, **kw):
    for _ in range(50):
        try:
            c.connect("127.0.0.1", port, keepalive=30, **kw)
            return True
        except OSError:
            bump("connect_errors")
            time.sleep(0.1)
    return False

def rss_kib():
    with open("/proc/%d/status" % broker_pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def cpu_s():
    with open("/proc/%d/stat" % broker_pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")

# --- mesh -----------------------------------------------------------------------------------
QOS = [0, 0, 1, 1, 2, 2]

class Subscriber:
    def __init__(self, i, qos):
        self.last = {}  # (publisher, qos) -> last sequence number seen
        self.qos = qos
        self.c = client("soak-sub-%d" % i)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("soak/mesh/#", qos)
        self.c.on_message = self.on_message
        connect(self.c)
        self.c.loop_start()

    def on_message(self, c, u, m):
        bump("received")
        pub, pub_qos, seq = m.payload.decode().split(":")[:3]
        key, seq = (pub, pub_qos), int(seq)
        last = self.last.get(key)
        # QoS 0 on either side may lose messages; at QoS 1 and 2 end to end nothing may
        # be missing, QoS 1 may repeat one.
        effective = min(self.qos, int(pub_qos))
        if last is not None:
            if seq == last:
                if effective != 1:
                    bump("dupes")
                return
            if seq < last:
                bump("reordered")
            elif seq > last + 1 and effective > 0:
                bump("gaps")
        self.last[key] = max(seq, last or 0)

def publisher(i, qos):
    c = client("soak-pub-%d" % i)
    connect(c)
    c.loop_start()
    seq = 0
    while not stop.is_set():
        seq += 1
        topic = "soak/mesh/%d/%d" % (i, seq % 7)
        info = c.publish(topic, "%d:%d:%d:%s" % (i, qos, seq, "x" * (seq % 200)), qos)
        if qos > 0:
            # One at a time in flight keeps the rate steady without paho queueing forever.
            info.wait_for_publish(timeout=5)
        bump("published")
        time.sleep(0.02)
    c.disconnect()
    c.loop_stop()

# --- churn ----------------------------------------------------------------------------------
def on_will(c, u, m):
    bump("wills_seen")

def churn(t):
    rnd = random.Random(t)
    while not stop.is_set():
        cid = "soak-churn-%d" % rnd.randrange(50)
        c = client(cid, clean=rnd.random() < 0.6)
        if rnd.random() < 0.5:
            c.will_set("soak/churn/will/%s" % cid, b"gone", rnd.randrange(3), rnd.random() < 0.2)
        if not connect(c):
            continue
        c.loop_start()
        bump("churn_connects")
        c.subscribe([("soak/churn/#", rnd.randrange(3)), ("soak/mesh/%d/+" % rnd.randrange(6), 0)])
        for k in range(rnd.randrange(5)):
            c.publish("soak/churn/%s/%d" % (cid, k), b"hello", rnd.randrange(3))
        time.sleep(rnd.random() * 0.5)
        if rnd.random() < 0.3:
            # Leave without DISCONNECT: the will goes out.
            c.loop_stop()
            sock = c.socket()  # None when a takeover already closed it
            if sock is not None:
                sock.close()
            bump("churn_crashes")
        else:
            c.disconnect()
            c.loop_stop()

# --- retained churn -------------------------------------------------------------------------
def retained_setter():
    rnd = random.Random(99)
    c = client("soak-retainer")
    connect(c)
    c.loop_start()
    while not stop.is_set():
        topic = "soak/retained/%d" % rnd.randrange(2000)
        if rnd.random() < 0.3:
            c.publish(topic, b"", 1, retain=True)
            bump("retained_cleared")
        else:
            c.publish(topic, b"r" * rnd.randrange(1, 300), rnd.randrange(2), retain=True)
            bump("retained_set")
        time.sleep(0.005)
    c.disconnect()
    c.loop_stop()

def retained_sweeper():
    c = client("soak-sweeper")
    c.on_message = lambda c, u, m: bump("retained_got")
    connect(c)
    c.loop_start()
    while not stop.is_set():
        c.subscribe("soak/retained/#", 1)
        time.sleep(2)
        c.unsubscribe("soak/retained/#")
        bump("retained_sweeps")
        time.sleep(0.5)
    c.disconnect()
    c.loop_stop()

watcher = client("soak-will-watcher")
watcher.on_message = on_will
connect(watcher)
watcher.subscribe("soak/churn/will/#", 0)
watcher.loop_start()

subscribers = [Subscriber(i, q) for i, q in enumerate(QOS)]
threads = [threading.Thread(target=publisher, args=(i, q)) for i, q in enumerate(QOS)]
threads += [threading.Thread(target=churn, args=(t,)) for t in range(4)]
threads += [threading.Thread(target=retained_setter), threading.Thread(target=retained_sweeper)]
for t in threads:
    t.daemon = True
    t.start()

samples = []
start = time.time()
disk = []
print("%6s %10s %8s %10s %10s %8s %6s %6s %8s %8s %9s" % (
    "time_s", "rss_kib", "cpu_s", "published", "received", "gaps", "dupes", "reord",
    "churn", "retained", "disk_kib"), flush=True)
def sample():
    t = time.time() - start
    rss = rss_kib()
    samples.append((t, rss))
    disk.append(disk_kib())
    with lock:
        s = dict(stats)
    print("%6.0f %10d %8.1f %10d %10d %8d %6d %6d %8d %8d %9d" % (
        t, rss, cpu_s(), s["published"], s["received"], s["gaps"], s["dupes"],
        s["reordered"], s["churn_connects"], s["retained_set"] + s["retained_cleared"],
        disk[-1]), flush=True)

sample()
while time.time() - start < duration:
    time.sleep(min(interval, max(0.0, duration - (time.time() - start))))
    sample()
stop.set()
for t in threads:
    t.join(timeout=10)

with lock:
    s = dict(stats)
print()
print("totals: " + ", ".join("%s %d" % kv for kv in s.items()))
n = len(samples)
middle = [r for _, r in samples[n // 3: 2 * n // 3]] or [samples[0][1]]
last = [r for _, r in samples[2 * n // 3:]]
ok = max(last) <= 1.10 * max(middle)
print("RSS: start %d KiB, peak %d KiB, end %d KiB; middle third max %d KiB, last third max %d KiB"
      % (samples[0][1], max(r for _, r in samples), samples[-1][1], max(middle), max(last)))
print("plateau: %s (last third's max %s 10 %% of the middle third's)"
      % ("yes" if ok else "NO", "within" if ok else "more than"))
if data_dir:
    d_middle = disk[n // 3: 2 * n // 3] or [disk[0]]
    d_last = disk[2 * n // 3:]
    # Compaction is a sawtooth: compare peaks, with room for one more tooth.
    d_ok = max(d_last) <= 1.5 * max(d_middle) + 1024
    print("disk: peak %d KiB, end %d KiB; middle third max %d KiB, last third max %d KiB; "
          "plateau: %s" % (max(disk), disk[-1], max(d_middle), max(d_last),
                           "yes" if d_ok else "NO"))
    ok = ok and d_ok
problems = s["gaps"] + s["reordered"] + s["dupes"]
print("delivery: %s" % ("no gaps, duplicates or reordering at QoS 1/2" if problems == 0 else
      "%d gaps, %d duplicates, %d reordered" % (s["gaps"], s["dupes"], s["reordered"])))
sys.exit(0 if ok else 3)
PY

REPORT="$WORK/report.txt"
{
  echo "soak: DURATION=$DURATION INTERVAL=$INTERVAL, broker $BIN serve --shards 2 ${PERSIST_ARGS[*]} (pid $BROKER_PID), port $PORT"
  echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
} | tee "$REPORT"
set +e
python3 -u "$WORK/soak.py" "$PORT" "$BROKER_PID" "$DURATION" "$INTERVAL" "$DATA" 2>&1 | tee -a "$REPORT"
status=${PIPESTATUS[0]}
set -e

# The broker must still be alive, and stop promptly on SIGTERM.
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
  echo "broker died during the soak" | tee -a "$REPORT"
  status=1
else
  kill -TERM "$BROKER_PID"
  for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "broker still running 5 s after SIGTERM" | tee -a "$REPORT"
    status=1
  else
    wait "$BROKER_PID"; echo "broker stopped on SIGTERM, exit status $?" | tee -a "$REPORT"
  fi
fi
BROKER_PID=""
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end" | tee -a "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT" && echo "report written to $OUT"
exit "$status"
