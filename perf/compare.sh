#!/usr/bin/env bash
# Compares SurgeMQ (--shards 1 and --shards 2) with Mosquitto and rumqttd on this machine:
# pair, fan-in, fan-out and mesh at QoS 0 plus pair and fan-out at QoS 1, 20 clients, 64-byte
# payloads, closed loop (window 100), DURATION seconds per run, REPS repetitions. Brokers
# alternate within each repetition, in an order that rotates from one repetition to the next,
# so that a noisy neighbour hurts them all alike. Every broker
# gets the same generator settings. Writes perf/results/<date>-<host>.md (medians and ratios),
# the raw JSON lines next to it, and an SVG bar chart.
#
# Env: REPS (3), DURATION (10 s), THREADS (generator threads, 2), CLIENTS (20), SIZE (64),
# BROKERS ("surgemq-1 surgemq-2 mosquitto rumqttd", plus "flashmq" when FLASHMQ_BIN is set),
# CASES ("pair:0 fan-in:0 fan-out:0 mesh:0 pair:1 fan-out:1"), STAMP (output name, default
# <date>-<host>).
# TRANSPORTS ("tcp"): any of tcp, tls (mqtts), ws, wss; every case runs over each, every broker
# serving only that transport's listener (cases are named e.g. pair-q0-tls; tcp keeps the plain
# names). TLS uses a CA and an EC P-256 server certificate for IP:127.0.0.1 / DNS:localhost made
# with openssl for this run; WebSockets use the path /mqtt.
# FLASHMQ_BIN=path/to/flashmq adds broker "flashmq" (left out when unset; never built here).
# rumqttd over tls/ws/wss only when perf/.peers already has it (it is installed for tcp only).
# BASELINE_BIN=path/to/an/older/surgemq adds brokers "baseline-1"/"baseline-2" (that binary
# with 1 or 2 shards; name them in BROKERS): a before/after comparison in one interleaved run,
# reported as surgemq-N / baseline-N and kept out of the peer ratios.
# CASES may also name "shared:Q" (not in the default list until SurgeMQ has shared
# subscriptions): `surgemq bench shared`, CLIENTS publishers each on its own topic -> one group
# of MEMBERS (4) subscribers on $share/bench/<prefix>/+, every message to exactly one member;
# the report adds each member's share of the messages (min/max %).
# SURGEMQ_ARGS: more `surgemq serve` flags for surgemq-N (e.g. "--shared-strategy local-first");
# BASELINE_ARGS the same for baseline-N (with BASELINE_BIN=target/release/surgemq, an A/B of
# two settings of one binary).
# RESULTS (perf/results): where the report, raw lines and chart go (e.g. a temporary directory
# for a trial run).
# `perf/compare.sh --summarize RAW.jsonl` rebuilds the report and chart from a raw file.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

REPS=${REPS:-3}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
BROKERS=${BROKERS:-"surgemq-1 surgemq-2 mosquitto rumqttd${FLASHMQ_BIN:+ flashmq}"}
CASES=${CASES:-"pair:0 fan-in:0 fan-out:0 mesh:0 pair:1 fan-out:1"}
TRANSPORTS=${TRANSPORTS:-tcp}
MEMBERS=${MEMBERS:-4}
WS_PATH=/mqtt
PEERS="$ROOT/perf/.peers"
RESULTS=${RESULTS:-"$ROOT/perf/results"}

summarize() { # summarize RAW MD SVG
  python3 - "$@" <<'PY'
import json, statistics, sys, html
raw, md_path, svg_path = sys.argv[1:4]
rows = [json.loads(l) for l in open(raw) if l.strip()]
meta = next((r for r in rows if r.get("meta")), {})
runs = [r for r in rows if not r.get("meta")]
brokers = []
cases = []
for r in runs:
    if r["broker"] not in brokers: brokers.append(r["broker"])
    if r["case"] not in cases: cases.append(r["case"])
peers = [b for b in brokers if not b.startswith(("surgemq", "baseline"))]
ours = [b for b in brokers if b.startswith("surgemq")]

def cell(case, broker):
    rs = [r for r in runs if r["case"] == case and r["broker"] == broker]
    ok = [r["report"] for r in rs if r.get("report")]
    if not ok:
        return None
    mps = statistics.median([x["mps"] for x in ok])
    # Broker CPU (user + system) per delivered message: what the broker spends on each,
    # whoever of it and the generator (on the same cores) ran out of CPU first.
    cpus = [r["broker_cpu_s"] * 1e6 / r["report"]["delivered"] for r in rs
            if r.get("report") and r.get("broker_cpu_s") is not None and r["report"].get("delivered")]
    p99s = [x["latency_p99_us"] for x in ok if x.get("latency_p99_us") is not None]
    return {
        "mps": mps,
        "p99": statistics.median(p99s) if p99s else None,
        "cpu_us": statistics.median(cpus) if cpus else None,
        "missing": sum(x["missing"] for x in ok),
        "expected": sum(x["expected"] for x in ok),
        "runs": len(ok), "tried": len(rs),
        "failed": sum(1 for x in ok if x.get("failed")),
        # Shared runs: median min / max member share; None when no run's group received anything.
        "share": (lambda lo, hi: (statistics.median(lo), statistics.median(hi)) if lo else None)(
            [x["share_min_pct"] for x in ok if x.get("share_min_pct") is not None],
            [x["share_max_pct"] for x in ok if x.get("share_max_pct") is not None]),
        "shared": any("share_min_pct" in x for x in ok),
        "duplicated": sum(x.get("duplicated", 0) for x in ok),
        "errors": sorted({e for r in rs for e in (r.get("report") or {}).get("errors", [])} |
                         {r["error"] for r in rs if r.get("error")}),
    }

table = {(c, b): cell(c, b) for c in cases for b in brokers}
def fmt(v): return "-" if v is None else f"{v:,.0f}"
def ratio(a, b): return "-" if not a or not b else f"{a / b:.2f}x"

out = []
out.append(f"# SurgeMQ vs peers, {meta.get('date', '?')} on {meta.get('host', '?')}\n")
out.append("Generated by `perf/compare.sh`; method in `perf/README.md`.\n")
out.append("| setting | value |\n|---|---|")
for k in ["machine", "cpu", "kernel", "surgemq", "baseline", "mosquitto", "rumqttd", "flashmq", "generator", "duration_s", "reps", "clients", "members", "size", "window", "transports", "tls"]:
    if meta.get(k): out.append(f"| {k} | {meta[k]} |")
out.append("")
out.append("## Delivered messages per second (median of reps; MPS counted at subscribers)\n")
out.append("| case | " + " | ".join(brokers) + " | best SurgeMQ / best peer | " +
           " | ".join(f"{b} / best peer" for b in ours) + " |")
out.append("|---" * (len(brokers) + 2 + len(ours)) + "|")
for c in cases:
    vals = {b: (table[(c, b)] or {}).get("mps") for b in brokers}
    best_peer = max([vals[b] for b in peers if vals[b]] or [0]) or None
    best_ours = max([vals[b] for b in ours if vals[b]] or [0]) or None
    out.append(f"| {c} | " + " | ".join(fmt(vals[b]) for b in brokers) +
               f" | **{ratio(best_ours, best_peer)}** | " +
               " | ".join(ratio(vals[b], best_peer) for b in ours) + " |")
out.append("")
# Over several transports: one row per case, one column per transport.
TRANSPORT_NAMES = ["tcp", "tls", "ws", "wss"]
def split_case(c):
    for t in TRANSPORT_NAMES[1:]:
        if c.endswith("-" + t):
            return c[: -len(t) - 1], t
    return c, "tcp"
transports = [t for t in TRANSPORT_NAMES if any(split_case(c)[1] == t for c in cases)]
if len(transports) > 1 or transports != ["tcp"]:
    bases = []
    for c in cases:
        if split_case(c)[0] not in bases: bases.append(split_case(c)[0])
    def case_of(base, t): return base if t == "tcp" else f"{base}-{t}"
    def mps(base, t, b): return (table.get((case_of(base, t), b)) or {}).get("mps")
    out.append("## By transport: best SurgeMQ / best peer (median MPS)\n")
    out.append("| case | " + " | ".join(transports) + " |")
    out.append("|---" * (len(transports) + 1) + "|")
    for base in bases:
        cells = []
        for t in transports:
            best_peer = max([mps(base, t, b) or 0 for b in peers] or [0]) or None
            best_ours = max([mps(base, t, b) or 0 for b in ours] or [0]) or None
            cells.append(ratio(best_ours, best_peer))
        out.append(f"| {base} | " + " | ".join(cells) + " |")
    out.append("")
    others = [t for t in transports if t != "tcp"]
    if "tcp" in transports and others:
        out.append("## What a transport costs each broker: its median MPS over it / over tcp\n")
        out.append("| case | broker | " + " | ".join(f"{t} / tcp" for t in others) + " |")
        out.append("|---" * (len(others) + 2) + "|")
        for base in bases:
            for b in brokers:
                out.append(f"| {base} | {b} | " + " | ".join(
                    ratio(mps(base, t, b), mps(base, "tcp", b)) for t in others) + " |")
        out.append("")
pairs = [(b, "baseline" + b[len("surgemq"):]) for b in ours if "baseline" + b[len("surgemq"):] in brokers]
if pairs:
    out.append("## Against the baseline binary (same run, interleaved)\n")
    out.append("| case | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
    out.append("|---" * (len(pairs) + 1) + "|")
    for c in cases:
        vals = {b: (table[(c, b)] or {}).get("mps") for b in brokers}
        out.append(f"| {c} | " + " | ".join(ratio(vals[a], vals[b]) for a, b in pairs) + " |")
    out.append("")
out.append("## p99 latency, microseconds (median of reps)\n")
out.append("| case | " + " | ".join(brokers) + " |")
out.append("|---" * (len(brokers) + 1) + "|")
for c in cases:
    out.append(f"| {c} | " + " | ".join(
        "-" if not table[(c, b)] or table[(c, b)]["p99"] is None else f"{table[(c, b)]['p99']:,.0f}"
        for b in brokers) + " |")
out.append("")
if any((table[(c, b)] or {}).get("cpu_us") is not None for c in cases for b in brokers):
    out.append("## Broker CPU per delivered message, microseconds (median of reps)\n")
    out.append("The broker process's user + system time over the run / messages delivered: what "
               "each delivery costs the broker, apart from the generator it shares the cores with. "
               "Last column: the best peer's cost / the best SurgeMQ's (how many times less CPU).\n")
    out.append("| case | " + " | ".join(brokers) + " | best peer / best SurgeMQ |")
    out.append("|---" * (len(brokers) + 2) + "|")
    def cpu(c, b): return (table[(c, b)] or {}).get("cpu_us")
    for c in cases:
        ours_c = [cpu(c, b) for b in ours if cpu(c, b)]
        peers_c = [cpu(c, b) for b in peers if cpu(c, b)]
        best = ratio(min(peers_c), min(ours_c)) if ours_c and peers_c else "-"
        out.append(f"| {c} | " + " | ".join(
            "-" if cpu(c, b) is None else f"{cpu(c, b):.2f}" for b in brokers) + f" | **{best}** |")
    out.append("")
shared_cases = [c for c in cases if any((table[(c, b)] or {}).get("shared") for b in brokers)]
if shared_cases:
    out.append("## Shared subscriptions: each member's share of the messages, min / max % (median of reps)\n")
    out.append("Round-robin over the group gives every member the same share; duplicated counts "
               "messages that reached the group more than once (all reps).\n")
    out.append("| case | " + " | ".join(brokers) + " |")
    out.append("|---" * (len(brokers) + 1) + "|")
    for c in shared_cases:
        cells = []
        for b in brokers:
            t = table[(c, b)]
            if not t or not t["share"]:
                cells.append("-" if not t else "nothing received")
            else:
                cells.append(f"{t['share'][0]:.1f} / {t['share'][1]:.1f}" +
                             (f", {t['duplicated']:,} duplicated" if t["duplicated"] else ""))
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    out.append("")
out.append("## Completeness (all reps)\n")
out.append("A run fails when QoS 1/2 messages are missing, a client hits an error, or the run stalls "
           "(nothing published or delivered for 5 s). Missing QoS 0 messages are dropped messages, not failures.\n")
out.append("| case | broker | runs with a report | failed runs | expected | missing | errors |")
out.append("|---|---|---|---|---|---|---|")
for c in cases:
    for b in brokers:
        t = table[(c, b)]
        n_tried = len([r for r in runs if r["case"] == c and r["broker"] == b])
        if t is None:
            errs = sorted({r.get("error", "?") for r in runs if r["case"] == c and r["broker"] == b})
            out.append(f"| {c} | {b} | 0/{n_tried} | - | - | - | {'; '.join(errs)[:200]} |")
        else:
            out.append(f"| {c} | {b} | {t['runs']}/{t['tried']} | {t['failed']} | {t['expected']:,} | {t['missing']:,} | "
                       f"{'; '.join(t['errors'])[:200].replace('|', '/')} |")
notes = meta.get("notes", [])
if notes:
    out.append("\n## Notes\n")
    for n in notes: out.append(f"- {n}")
out.append(f"\nChart: `{svg_path.split('/')[-1]}`. Raw JSON lines: `{raw.split('/')[-1]}`.")
open(md_path, "w").write("\n".join(out) + "\n")

# Grouped bar chart, drawn by hand: one group per case, one bar per broker.
colors = ["#d9480f", "#f08c00", "#1971c2", "#2f9e44", "#7048e8", "#868e96"]
W, H, left, top, bottom = 900, 420, 80, 50, 70
plot_w, plot_h = W - left - 20, H - top - bottom
vmax = max([t["mps"] for t in table.values() if t] or [1])
step = 10 ** len(str(int(vmax))) / 10
while vmax / step > 8: step *= 2
while vmax / step < 4: step /= 2
ymax = step * (int(vmax / step) + 1)
s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
     f'<rect width="{W}" height="{H}" fill="white"/>',
     f'<text x="{W/2}" y="20" text-anchor="middle" font-size="15">Delivered msgs/s (median), 64 B, {meta.get("clients", "?")} clients, {html.escape(str(meta.get("host", "")))}</text>']
v = 0.0
while v <= ymax + 1e-9:
    y = top + plot_h - plot_h * v / ymax
    s.append(f'<line x1="{left}" y1="{y:.1f}" x2="{W-20}" y2="{y:.1f}" stroke="#e9ecef"/>')
    s.append(f'<text x="{left-6}" y="{y+4:.1f}" text-anchor="end">{v/1e6:.2f}M</text>')
    v += step
gw = plot_w / max(len(cases), 1)
bw = gw * 0.8 / max(len(brokers), 1)
for i, c in enumerate(cases):
    for j, b in enumerate(brokers):
        t = table[(c, b)]
        x = left + i * gw + gw * 0.1 + j * bw
        if t:
            h = plot_h * t["mps"] / ymax
            s.append(f'<rect x="{x:.1f}" y="{top+plot_h-h:.1f}" width="{bw-2:.1f}" height="{h:.1f}" fill="{colors[j % len(colors)]}"><title>{html.escape(b)} {html.escape(c)}: {t["mps"]:,.0f} msg/s</title></rect>')
        else:
            s.append(f'<text x="{x+bw/2:.1f}" y="{top+plot_h-4}" text-anchor="middle" font-size="10">n/a</text>')
    s.append(f'<text x="{left + i*gw + gw/2:.1f}" y="{top+plot_h+18}" text-anchor="middle">{html.escape(c)}</text>')
s.append(f'<line x1="{left}" y1="{top+plot_h}" x2="{W-20}" y2="{top+plot_h}" stroke="black"/>')
for j, b in enumerate(brokers):
    x = left + j * 170
    s.append(f'<rect x="{x}" y="{H-28}" width="12" height="12" fill="{colors[j % len(colors)]}"/>')
    s.append(f'<text x="{x+18}" y="{H-18}">{html.escape(b)}</text>')
s.append('</svg>')
open(svg_path, "w").write("\n".join(s) + "\n")
print(open(md_path).read())
PY
}

if [ "${1:-}" = "--summarize" ]; then
  raw=$2
  summarize "$raw" "${raw%-raw.jsonl}.md" "${raw%-raw.jsonl}.svg"
  exit 0
fi

NOTES=()

ensure_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 && return 0
  [ -x /usr/sbin/mosquitto ] && return 0
  log "installing Debian package mosquitto"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
}

ensure_rumqttd() {
  [ -x "$PEERS/bin/rumqttd" ] && return 0
  log "installing rumqttd from crates.io into perf/.peers (compiles for a few minutes)"
  cargo install --quiet --root "$PEERS" rumqttd
}

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
TMP=$(mktemp -d)
cleanup() { stop_broker; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in $TRANSPORTS; do
  case $t in
    tcp | tls | ws | wss) ;;
    *) log "unknown transport '$t' in TRANSPORTS (tcp, tls, ws, wss)"; exit 2 ;;
  esac
done
uses_tls() { [ "$1" = tls ] || [ "$1" = wss ]; }
needs_tls=0
for t in $TRANSPORTS; do uses_tls "$t" && needs_tls=1; done
only_tcp=1
for t in $TRANSPORTS; do [ "$t" = tcp ] || only_tcp=0; done

# A CA and a server certificate signed by it, for this run only. rustls refuses a CA
# certificate as a server's own (basicConstraints CA:FALSE), and the generator checks the
# name it connects to (127.0.0.1: an IP SAN).
CA="$TMP/ca.pem" CERT="$TMP/server.pem" KEY="$TMP/server.key"
make_certs() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=SurgeMQ bench CA" -keyout "$TMP/ca.key" -out "$CA" 2>/dev/null &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$KEY" -out "$TMP/server.csr" 2>/dev/null &&
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' > "$TMP/server.ext" &&
  openssl x509 -req -in "$TMP/server.csr" -CA "$CA" -CAkey "$TMP/ca.key" -CAcreateserial \
    -days 2 -extfile "$TMP/server.ext" -out "$CERT" 2>/dev/null
}
if [ "$needs_tls" = 1 ]; then
  make_certs || { log "openssl could not make the test certificates"; exit 1; }
fi

available=()
for b in $BROKERS; do
  case $b in
    mosquitto)
      if ensure_mosquitto; then available+=("$b"); else NOTES+=("mosquitto could not be installed; left out"); fi ;;
    rumqttd)
      if [ "$only_tcp" = 1 ]; then
        if ensure_rumqttd; then available+=("$b"); else NOTES+=("rumqttd could not be installed; left out"); fi
      elif [ -x "$PEERS/bin/rumqttd" ]; then
        available+=("$b")
      else
        log "rumqttd is not in perf/.peers: left out of this run over $TRANSPORTS"
      fi ;;
    flashmq)
      if [ -x "${FLASHMQ_BIN:-}" ]; then available+=("$b")
      else log "FLASHMQ_BIN is not set to an executable: flashmq left out"; fi ;;
    *) available+=("$b") ;;
  esac
done
build_release

# listen_url TRANSPORT PORT: SurgeMQ's --listen for one transport.
listen_url() {
  case $1 in
    tcp) echo "127.0.0.1:$2" ;;
    tls) echo "mqtts://127.0.0.1:$2" ;;
    ws) echo "ws://127.0.0.1:$2$WS_PATH" ;;
    wss) echo "wss://127.0.0.1:$2$WS_PATH" ;;
  esac
}

# transport_args TRANSPORT: the generator's flags for it, one per line.
transport_args() {
  if uses_tls "$1"; then printf '%s\n' --tls --cafile "$CA"; fi
  case $1 in ws | wss) printf '%s\n' --ws "$WS_PATH" ;; esac
  return 0
}

# start_broker NAME PORT TRANSPORT: the broker with one listener on PORT for TRANSPORT.
start_broker() {
  local tls_flags=()
  if uses_tls "$3"; then tls_flags=(--cert "$CERT" --key "$KEY"); fi
  case $1 in
    surgemq-*)
      if [ "$3" = tcp ]; then
        start_surgemq "${1#surgemq-}" "$2"
      else
        # shellcheck disable=SC2086 # SURGEMQ_ARGS is a list of flags
        "$BIN" serve --listen "$(listen_url "$3" "$2")" "${tls_flags[@]}" --shards "${1#surgemq-}" --log-level warn ${SURGEMQ_ARGS:-} &
        BROKER_PID=$!
        wait_port "$2"
      fi ;;
    baseline-*)
      [ -x "${BASELINE_BIN:-}" ] || { log "BASELINE_BIN is not an executable"; return 1; }
      # shellcheck disable=SC2086 # BASELINE_ARGS is a list of flags
      "$BASELINE_BIN" serve --listen "$(listen_url "$3" "$2")" "${tls_flags[@]}" --shards "${1#baseline-}" --log-level warn ${BASELINE_ARGS:-} &
      BROKER_PID=$!
      wait_port "$2" ;;
    mosquitto)
      # Unlimited queues and a QoS 1/2 window like SurgeMQ's default (1000), so that no
      # message is dropped for a limit the other brokers do not have. As root, `user root`:
      # otherwise it becomes user mosquitto, who cannot read the certificate in $TMP.
      # Mosquitto 2.0.11 exits ("Unable to start any listening sockets") when its only
      # listener speaks websockets, so those get an unused plain listener beside them.
      {
        case $3 in ws | wss) echo "listener $(free_port) 127.0.0.1" ;; esac
        echo "listener $2 127.0.0.1"
        case $3 in ws | wss) echo "protocol websockets" ;; esac
        if uses_tls "$3"; then echo "certfile $CERT"; echo "keyfile $KEY"; fi
        echo "allow_anonymous true"
        echo "persistence false"
        echo "max_queued_messages 0"
        echo "max_queued_bytes 0"
        echo "max_inflight_messages 1000"
        echo "set_tcp_nodelay true"
        echo "log_dest stderr"
        echo "log_type error"
        if [ "$(id -u)" -eq 0 ]; then echo "user root"; fi
      } > "$TMP/mosquitto.conf"
      "$MOSQUITTO" -c "$TMP/mosquitto.conf" &
      BROKER_PID=$!
      wait_port "$2" ;;
    flashmq)
      # Its defaults (a thread per CPU), anonymous clients, no persistence (no storage_dir).
      # tcp_nodelay: FlashMQ leaves Nagle on by default (Mosquitto gets set_tcp_nodelay,
      # SurgeMQ always sets it); without it FlashMQ's p99 sits near 40 ms (delayed ACKs).
      # Like Mosquitto's, its QoS 1/2 queue per client gets no limit below what a run keeps
      # outstanding: by default (512 messages, 64 KiB) it drops QoS 1 messages for an online
      # client ("Dropping QoS message(s)"), seen in shared:1 (20 publishers x window 100 into
      # 4 members: 2,027 of 1.9 million missing).
      {
        echo "allow_anonymous true"
        echo "max_qos_msg_pending_per_client 65535"
        echo "max_qos_bytes_pending_per_client 1073741824"
        echo "log_file $TMP/flashmq.log"
        echo "quiet true"
        echo "listen {"
        case $3 in ws | wss) echo "  protocol websockets" ;; *) echo "  protocol mqtt" ;; esac
        echo "  inet_protocol ip4"
        echo "  inet4_bind_address 127.0.0.1"
        echo "  port $2"
        echo "  tcp_nodelay true"
        if uses_tls "$3"; then echo "  fullchain $CERT"; echo "  privkey $KEY"; fi
        echo "}"
      } > "$TMP/flashmq.conf"
      "$FLASHMQ_BIN" --config-file "$TMP/flashmq.conf" >"$TMP/flashmq.out" 2>&1 &
      BROKER_PID=$!
      wait_port "$2" ;;
    rumqttd)
      # Generous limits: many connections, a large in-memory log, 500 in flight per client.
      # WebSockets need rumqttd built with its "websocket" feature.
      local section=v4.1 tls_section=""
      case $3 in ws | wss) section=ws.1 ;; esac
      if uses_tls "$3"; then
        tls_section="    [$section.tls]
    certpath = \"$CERT\"
    keypath = \"$KEY\""
      fi
      cat > "$TMP/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[$section]
name = "${section/./-}"
listen = "127.0.0.1:$2"
next_connection_delay_ms = 0
$tls_section
    [$section.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 500
    dynamic_filters = true
EOF
      "$PEERS/bin/rumqttd" -q -c "$TMP/rumqttd.toml" >"$TMP/rumqttd.log" 2>&1 &
      BROKER_PID=$!
      wait_port "$2" ;;
  esac
}

# cpu_seconds PID: the CPU time (user + system, all threads) the process has used so far;
# empty once it is gone.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{print ($14 + $15) / tck}' "/proc/$1/stat" 2>/dev/null || true
}

stamp=${STAMP:-"$(date +%F)-$(hostname -s)"}
mkdir -p "$RESULTS"
RAW="$RESULTS/$stamp-raw.jsonl"
mosq_version=$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)
rumq_version=$("$PEERS/bin/rumqttd" --version 2>/dev/null || true)
python3 - "$RAW" <<PY
import json, sys
meta = {"meta": True, "date": "$(date -u +'%F %H:%M UTC')", "host": "$(hostname -s)",
        "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, shared with other builds",
        "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
        "kernel": "$(uname -r)", "surgemq": "$(git rev-parse --short HEAD), release build${SURGEMQ_ARGS:+, serve $SURGEMQ_ARGS}",
        "baseline": "${BASELINE_BIN:-}${BASELINE_ARGS:+, serve $BASELINE_ARGS}",
        "mosquitto": "$mosq_version", "rumqttd": "$rumq_version", "flashmq": "${FLASHMQ_BIN:-}",
        "transports": "$TRANSPORTS",
        "tls": "$([ "$needs_tls" = 1 ] && echo "EC P-256 server certificate signed by a CA made for the run; the generator checks it with --cafile (rustls, TLS 1.3 when the broker offers it)")",
        "generator": "surgemq bench, --threads $THREADS (sharing the cores with the broker)",
        "duration_s": "$DURATION", "reps": "$REPS", "clients": "$CLIENTS", "size": "$SIZE",
        "members": "$(case " $CASES " in *" shared:"*) echo "$MEMBERS (shared: one \$share group)" ;; esac)",
        "window": "100 (closed loop)", "notes": sys.argv[2:]}
open(sys.argv[1], "w").write(json.dumps(meta) + "\n")
PY

for rep in $(seq 1 "$REPS"); do
  for case in $CASES; do
    scenario=${case%%:*}
    qos=${case##*:}
    for transport in $TRANSPORTS; do
      # Plain TCP keeps the names of earlier results (pair-q0); the others are pair-q0-tls...
      name="$scenario-q$qos"
      [ "$transport" = tcp ] || name="$name-$transport"
      mapfile -t targs < <(transport_args "$transport")
      # The order rotates with each repetition: on this machine the run right after another
      # is often slower, and a fixed order would always hand that to the same broker.
      order=()
      for ((k = 0; k < ${#available[@]}; k++)); do
        order+=("${available[$(( (k + rep - 1) % ${#available[@]} ))]}")
      done
      for broker in "${order[@]}"; do
        port=$(free_port)
        log "rep $rep/$REPS  $scenario qos $qos over $transport  $broker"
        if ! start_broker "$broker" "$port" "$transport"; then
          printf '{"broker":"%s","case":"%s","transport":"%s","rep":%s,"error":"broker did not start"}\n' \
            "$broker" "$name" "$transport" "$rep" >> "$RAW"
          stop_broker
          continue
        fi
        sargs=()
        [ "$scenario" = shared ] && sargs=(--subscribers "$MEMBERS")
        cpu_before=$(cpu_seconds "$BROKER_PID")
        out=$(QOS=$qos run_bench "$scenario" "$port" "${targs[@]}" "${sargs[@]}" --json 2>"$TMP/bench.err" || true)
        cpu_after=$(cpu_seconds "$BROKER_PID")
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
          NOTES+=("$broker exited during $scenario qos $qos over $transport rep $rep")
        fi
        stop_broker
        if [ -n "$out" ]; then
          cpu=$(python3 -c "import sys; a, b = sys.argv[1:]; print(round(float(b) - float(a), 3) if a and b else 'null')" "$cpu_before" "$cpu_after")
          printf '{"broker":"%s","case":"%s","transport":"%s","rep":%s,"broker_cpu_s":%s,"report":%s}\n' \
            "$broker" "$name" "$transport" "$rep" "$cpu" "$out" >> "$RAW"
        else
          err=$(tr -d '"\\' < "$TMP/bench.err" | tr '\n' ' ' | cut -c1-200)
          printf '{"broker":"%s","case":"%s","transport":"%s","rep":%s,"error":"%s"}\n' \
            "$broker" "$name" "$transport" "$rep" "$err" >> "$RAW"
        fi
      done
    done
  done
done

if [ ${#NOTES[@]} -gt 0 ]; then
  # Append the notes to the meta line (first line of the raw file).
  python3 - "$RAW" "${NOTES[@]}" <<'PY'
import json, sys
path, notes = sys.argv[1], sys.argv[2:]
lines = open(path).read().splitlines()
meta = json.loads(lines[0]); meta["notes"] = meta.get("notes", []) + notes
lines[0] = json.dumps(meta)
open(path, "w").write("\n".join(lines) + "\n")
PY
fi
summarize "$RAW" "$RESULTS/$stamp.md" "$RESULTS/$stamp.svg"
