//! The broker's counters in the Prometheus text exposition format (version 0.0.4), written
//! from a [`StatsBoard`] read: one series per shard (`shard="N"`) for everything a shard
//! counts, broker-wide gauges for what is not per shard (subscriptions, which every shard's
//! replica holds in full; uptime; start time).
//!
//! The format is a few lines of text per family, and the board is already a snapshot, so it
//! is written here rather than through a client library's registry of live metric objects:
//! [`SERIES`] is the one list of what is exported, shared with `/stats.json`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::broker::bridge::BridgeStats;
use crate::broker::metrics::{Histogram, MetricsSnapshot};
use crate::broker::stats::StatsBoard;

/// Prefix of every metric name.
pub const PREFIX: &str = "surgemq_";

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many `rule` series per shard in `surgemq_protocol_errors_by_rule_total` (the
/// most frequent ones): a rule's text may quote what the client sent, so the set is open.
/// `surgemq_protocol_errors_total` counts them all.
pub const MAX_RULES_PER_SHARD: usize = 50;

/// Rule texts longer than this (in bytes) are cut, at a character boundary, in labels.
pub const MAX_RULE_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One per-shard series: its family, an optional label telling it from the family's other
/// series, and where its value is in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Family name after [`PREFIX`]; counters get `_total` appended.
    pub family: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub label: Option<(&'static str, &'static str)>,
    /// The key in `/stats.json`.
    pub key: &'static str,
    pub get: fn(&MetricsSnapshot) -> u64,
}

const fn counter(
    family: &'static str,
    help: &'static str,
    key: &'static str,
    get: fn(&MetricsSnapshot) -> u64,
) -> Series {
    Series {
        family,
        kind: Kind::Counter,
        help,
        label: None,
        key,
        get,
    }
}

const fn labelled(series: Series, name: &'static str, value: &'static str) -> Series {
    Series {
        label: Some((name, value)),
        ..series
    }
}

const fn gauge(
    family: &'static str,
    help: &'static str,
    key: &'static str,
    get: fn(&MetricsSnapshot) -> u64,
) -> Series {
    Series {
        kind: Kind::Gauge,
        ..counter(family, help, key, get)
    }
}

const DROPPED: &str = "Messages dropped, by reason.";
const REFUSED: &str = "Connections refused, by reason.";
const CONFIRMATIONS: &str = "Durability confirmations exchanged with other shards.";

/// Everything exported per shard. Series of one family are next to each other.
#[rustfmt::skip]
pub const SERIES: &[Series] = &[
    counter("connections_accepted", "Client connections that completed CONNECT.", "connections_total", |m| m.connections_total),
    counter("packets_received", "MQTT packets received from clients.", "packets_in", |m| m.packets_in),
    counter("packets_sent", "MQTT packets sent to clients.", "packets_out", |m| m.packets_out),
    counter("bytes_received", "Bytes received from clients.", "bytes_in", |m| m.bytes_in),
    counter("bytes_sent", "Bytes sent to clients.", "bytes_out", |m| m.bytes_out),
    counter("publish_received", "PUBLISH messages received from clients and routed.", "messages_routed", |m| m.messages_routed),
    counter("publish_sent", "PUBLISH packets sent to clients.", "publishes_out", |m| m.publishes_out),
    labelled(counter("messages_dropped", DROPPED, "dropped_queue_full_qos0", |m| m.dropped_queue_full_qos0), "reason", "queue_full_qos0"),
    labelled(counter("messages_dropped", DROPPED, "dropped_queue_full_qos12", |m| m.dropped_queue_full_qos12), "reason", "queue_full_qos12"),
    labelled(counter("messages_dropped", DROPPED, "dropped_offline_qos0", |m| m.dropped_offline_qos0), "reason", "offline_qos0"),
    labelled(counter("messages_dropped", DROPPED, "dropped_too_large", |m| m.dropped_too_large), "reason", "too_large"),
    labelled(counter("messages_dropped", DROPPED, "dropped_expired", |m| m.dropped_expired), "reason", "expired"),
    labelled(counter("messages_dropped", DROPPED, "dropped_shared", |m| m.dropped_shared), "reason", "shared_no_member"),
    counter("shared_delivered", "Messages given to a shared subscription's member.", "shared_delivered", |m| m.shared_delivered),
    counter("shared_redispatched", "Shared-subscription messages given to another member.", "shared_redispatched", |m| m.shared_redispatched),
    counter("shared_cross_shard", "Shared-subscription messages given to a member on another shard (core).", "shared_cross_shard", |m| m.shared_cross_shard),
    counter("protocol_errors", "Connections closed for a protocol error.", "protocol_errors", |m| m.protocol_errors),
    labelled(counter("connections_refused", REFUSED, "refused_max_connections", |m| m.refused_max_connections), "reason", "max_connections"),
    labelled(counter("connections_refused", REFUSED, "refused_auth", |m| m.refused_auth), "reason", "auth"),
    counter("publishes_denied", "PUBLISH messages the ACL refused.", "publishes_denied", |m| m.publishes_denied),
    counter("acl_withheld", "Messages withheld from a subscriber the ACL does not let read their topic.", "acl_withheld", |m| m.acl_withheld),
    counter("connections_parked", "Idle connections parked.", "parks", |m| m.parks),
    counter("connections_unparked", "Parked connections taken back.", "unparks", |m| m.unparks),
    counter("pressure_raised", "Times a full subscriber queue held QoS 1/2 publishers back.", "pressure_raised", |m| m.pressure_raised),
    counter("publishers_paused", "Times a publisher was paused for a full subscriber queue.", "publishers_paused", |m| m.publishers_paused),
    counter("subscribers_stalled", "Subscribers found stalled with a full queue.", "subscribers_stalled", |m| m.subscribers_stalled),
    counter("log_compactions", "Compactions of the shard's log.", "compactions", |m| m.compactions),
    counter("log_commits", "Log commits made durable.", "log_commits", |m| m.log_commits),
    labelled(counter("durability_confirmations", CONFIRMATIONS, "confirmations_sent", |m| m.confirmations_sent), "direction", "sent"),
    labelled(counter("durability_confirmations", CONFIRMATIONS, "confirmations_received", |m| m.confirmations_received), "direction", "received"),
    counter("mesh_stalls", "Times the shard waited for room in another shard's inbox.", "mesh_stalls", |m| m.mesh_stalls),
    counter("cross_shard_batches", "Batches and retained messages sent to other shards.", "cross_shard_batches", |m| m.cross_shard_batches),
    counter("sessions_expired", "Sessions removed because they expired.", "sessions_expired", |m| m.sessions_expired),
    gauge("connections", "Open client connections.", "connections", |m| m.connections),
    gauge("sessions", "Sessions, connected or not.", "sessions", |m| m.sessions),
    gauge("retained_messages", "Retained messages held.", "retained", |m| m.retained),
    gauge("queued_messages", "QoS 1/2 messages sessions hold, queued or in flight.", "queued_messages", |m| m.queued_messages),
    gauge("queued_bytes", "Payload bytes sessions hold, queued or in flight.", "queued_bytes", |m| m.queued_bytes),
    gauge("held_bytes", "Bytes of packets held back from publishers waiting for a full subscriber queue.", "held_bytes", |m| m.held_bytes),
];

/// The sum of every drop reason.
pub fn dropped(m: &MetricsSnapshot) -> u64 {
    SERIES
        .iter()
        .filter(|s| s.family == "messages_dropped")
        .map(|s| (s.get)(m))
        .sum()
}

/// A label value with `\`, `"` and line feeds escaped.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text with `\` and line feeds escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn full_name(family: &str, kind: Kind) -> String {
    match kind {
        Kind::Counter => format!("{PREFIX}{family}_total"),
        Kind::Gauge => format!("{PREFIX}{family}"),
    }
}

/// The whole `/metrics` page from the board as it is now.
pub fn render(board: &StatsBoard) -> String {
    let mut out = render_shards(
        &board.shards(),
        board.uptime().as_secs_f64(),
        board.started_unix_s(),
    );
    bridges(&mut out, board.bridges());
    if let Some(counts) = board.cluster() {
        cluster(&mut out, counts);
    }
    out
}

/// The cluster's counters (with `--cluster`).
fn cluster(out: &mut String, c: crate::broker::cluster_port::ClusterCounts) {
    for (family, kind, help, value) in [
        ("cluster_messages_forwarded", Kind::Counter, "Messages handed to NATS for other nodes.", c.forwarded),
        ("cluster_messages_dropped", Kind::Counter, "Messages other nodes wanted that were dropped (the outbox to NATS was full, or the topic has no NATS subject).", c.dropped),
        ("cluster_messages_received", Kind::Counter, "Messages from other nodes and NATS applications handed to this node's shards.", c.received),
        ("cluster_nodes", Kind::Gauge, "Other nodes this node knows of.", c.nodes),
        ("cluster_connected", Kind::Gauge, "1 while this node is connected to NATS (else its shared subscription groups get its messages here).", c.connected),
        ("cluster_sessions_in", Kind::Counter, "Persistent sessions other nodes handed over to this one with their clients.", c.sessions_in),
        ("cluster_sessions_out", Kind::Counter, "Persistent sessions handed over to other nodes.", c.sessions_out),
        ("cluster_sessions_missed", Kind::Counter, "Clients resuming a session here that no node handed over in time (they got a new one).", c.sessions_missed),
        ("cluster_sessions_refused", Kind::Counter, "Clients resuming a session here refused (server unavailable): the cluster could not say what it holds of it.", c.sessions_refused),
        ("cluster_sessions_stored", Kind::Counter, "Clients resuming a session no node handed over, given the copy kept in JetStream (its subscriptions, and its queued messages when its node copied them).", c.sessions_stored),
        ("cluster_queues_copied", Kind::Counter, "Copies of offline persistent sessions (their state when the client went, and each QoS 1/2 message queued since) stored in JetStream.", c.queues_copied),
        ("cluster_queues_not_copied", Kind::Counter, "Copies of offline persistent sessions not stored in JetStream (it was away or failed, or too many waited).", c.queues_not_copied),
        ("cluster_queues_taken", Kind::Counter, "Clients resuming a session whose node did not answer, given the session with its queued messages from JetStream.", c.queues_taken),
        ("cluster_messages_resent", Kind::Counter, "QoS 1/2 messages sent again to a node that had not acknowledged them.", c.resent),
        ("cluster_messages_unconfirmed", Kind::Counter, "QoS 1/2 messages given up on before every node that wanted them acknowledged them (more were waiting than a node keeps).", c.unconfirmed),
        ("cluster_publishes_waiting", Kind::Gauge, "QoS 1/2 messages whose publishers wait for other nodes to acknowledge them.", c.publishes_waiting),
        ("cluster_publishes_released", Kind::Counter, "QoS 1/2 messages acknowledged to their publishers before a node that wanted them had them, because it was silent too long (or a shared group's copy took too long).", c.publishes_released),
    ] {
        let name = full_name(family, kind);
        header(out, &name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// One series per bridge (label `bridge`) in each bridge family; nothing without bridges.
fn bridges(out: &mut String, board: &[(String, Arc<BridgeStats>)]) {
    if board.is_empty() {
        return;
    }
    fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
        BridgeStats::get(c)
    }
    type Family = (&'static str, Kind, &'static str, fn(&BridgeStats) -> u64);
    let families: [Family; 7] = [
        ("bridge_connected", Kind::Gauge, "1 while the bridge's link to its remote broker is up.", |s| u64::from(s.is_connected())),
        ("bridge_messages_sent", Kind::Counter, "Messages the bridge sent to its remote broker (acknowledged by it for QoS 1/2).", |s| get(&s.sent)),
        ("bridge_messages_received", Kind::Counter, "Messages the bridge brought in from its remote broker.", |s| get(&s.received)),
        ("bridge_messages_queued", Kind::Gauge, "Messages waiting for the remote broker: in the bridge's local session or in flight.", |s| get(&s.queued) + get(&s.inflight)),
        ("bridge_messages_dropped", Kind::Counter, "Messages that could not cross (refused by the other broker, or matching no topic line).", |s| get(&s.dropped)),
        ("bridge_connections", Kind::Counter, "Times the bridge's link came up.", |s| get(&s.connections)),
        ("bridge_connect_failures", Kind::Counter, "Failed attempts to bring the bridge's link up.", |s| get(&s.connect_failures)),
    ];
    for (family, kind, help, value) in families {
        let name = full_name(family, kind);
        header(out, &name, kind, help);
        for (bridge, stats) in board {
            let bridge = escape_label_value(bridge);
            let _ = writeln!(out, "{name}{{bridge=\"{bridge}\"}} {}", value(stats));
        }
    }
}

/// The `/metrics` page from the shards' counters.
pub fn render_shards(shards: &[MetricsSnapshot], uptime_s: f64, started_unix_s: u64) -> String {
    let mut out = String::with_capacity(4096 + 2048 * shards.len());
    let total = MetricsSnapshot::sum(shards);
    let broker_wide: [(&str, &str, String); 4] = [
        (
            "subscriptions",
            "Subscriptions (every shard holds them all; counted once).",
            total.subscriptions.to_string(),
        ),
        (
            "shards",
            "Shards (executors) the broker runs.",
            shards.len().to_string(),
        ),
        (
            "uptime_seconds",
            "Seconds since the broker started.",
            format!("{uptime_s:.3}"),
        ),
        (
            "start_time_seconds",
            "When the broker started, in seconds since the Unix epoch.",
            started_unix_s.to_string(),
        ),
    ];
    for (family, help, value) in broker_wide {
        let name = full_name(family, Kind::Gauge);
        header(&mut out, &name, Kind::Gauge, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = full_name("build_info", Kind::Gauge);
    header(
        &mut out,
        &name,
        Kind::Gauge,
        "The broker's version, as a label.",
    );
    let version = escape_label_value(env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "{name}{{version=\"{version}\"}} 1");

    let mut i = 0;
    while i < SERIES.len() {
        let first = &SERIES[i];
        let family_len = SERIES[i..]
            .iter()
            .take_while(|s| s.family == first.family)
            .count();
        let name = full_name(first.family, first.kind);
        header(&mut out, &name, first.kind, first.help);
        for series in &SERIES[i..i + family_len] {
            for (shard, m) in shards.iter().enumerate() {
                let _ = match series.label {
                    Some((label, value)) => writeln!(
                        out,
                        "{name}{{shard=\"{shard}\",{label}=\"{value}\"}} {}",
                        (series.get)(m)
                    ),
                    None => writeln!(out, "{name}{{shard=\"{shard}\"}} {}", (series.get)(m)),
                };
            }
        }
        i += family_len;
    }
    rules(&mut out, shards);
    shared_groups(&mut out, shards);
    histograms(&mut out, shards);
    out
}

/// The histograms, one per shard each: messages per batch a shard sent another (how well the
/// cross-core fan-out batches), and how many messages the shard's sessions have waiting.
fn histograms(out: &mut String, shards: &[MetricsSnapshot]) {
    histogram(
        out,
        "delivery_batch_size",
        "Messages per delivery batch sent to another shard.",
        shards,
        |m| &m.delivery_batch_sizes,
    );
    histogram(
        out,
        "session_queue_depth",
        "Messages waiting in each session's outbound queue (connected or not), sampled every second.",
        shards,
        |m| &m.session_queue_depths,
    );
}

/// One Prometheus histogram family with a `shard` label.
fn histogram(
    out: &mut String,
    family: &str,
    help: &str,
    shards: &[MetricsSnapshot],
    get: fn(&MetricsSnapshot) -> &Histogram,
) {
    let name = format!("{PREFIX}{family}");
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (shard, m) in shards.iter().enumerate() {
        let h = get(m);
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = Histogram::bound(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {}", h.count);
    }
}

/// Messages given to each shared subscription group's members, per shard.
fn shared_groups(out: &mut String, shards: &[MetricsSnapshot]) {
    let name = full_name("shared_group_delivered", Kind::Counter);
    header(
        out,
        &name,
        Kind::Counter,
        "Messages given to a member of the shared subscription group, by group name.",
    );
    for (shard, m) in shards.iter().enumerate() {
        for (group, n) in &m.shared_groups {
            let group = escape_label_value(group);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",group=\"{group}\"}} {n}");
        }
    }
}

/// Protocol errors by the rule broken: the most frequent [`MAX_RULES_PER_SHARD`] per shard.
fn rules(out: &mut String, shards: &[MetricsSnapshot]) {
    let name = full_name("protocol_errors_by_rule", Kind::Counter);
    header(
        out,
        &name,
        Kind::Counter,
        "Connections closed for a protocol error, by the rule broken (the most frequent rules).",
    );
    for (shard, m) in shards.iter().enumerate() {
        let mut by_count: Vec<&(String, u64)> = m.protocol_errors_by_rule.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // Two long rules cut to the same text must stay one series.
        let mut seen = std::collections::BTreeMap::<&str, u64>::new();
        for (rule, n) in by_count {
            let cut = truncate(rule, MAX_RULE_LEN);
            if seen.len() < MAX_RULES_PER_SHARD || seen.contains_key(cut) {
                *seen.entry(cut).or_default() += n;
            }
        }
        for (rule, n) in seen {
            let rule = escape_label_value(rule);
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",rule=\"{rule}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_batch_sizes_are_a_cumulative_histogram() {
        let board = StatsBoard::new(1);
        let mut h = Histogram::default();
        for v in [1, 3, 3, 600] {
            h.record(v);
        }
        board.publish(
            0,
            MetricsSnapshot {
                delivery_batch_sizes: h,
                ..MetricsSnapshot::default()
            },
        );
        let page = render(&board);
        for line in [
            "surgemq_delivery_batch_size_bucket{shard=\"0\",le=\"1\"} 1",
            "surgemq_delivery_batch_size_bucket{shard=\"0\",le=\"2\"} 1",
            "surgemq_delivery_batch_size_bucket{shard=\"0\",le=\"4\"} 3",
            "surgemq_delivery_batch_size_bucket{shard=\"0\",le=\"512\"} 3",
            "surgemq_delivery_batch_size_bucket{shard=\"0\",le=\"+Inf\"} 4",
            "surgemq_delivery_batch_size_sum{shard=\"0\"} 607",
            "surgemq_delivery_batch_size_count{shard=\"0\"} 4",
        ] {
            assert!(page.contains(line), "{line} in {page}");
        }
    }

    #[test]
    fn session_queue_depths_are_a_histogram_per_shard() {
        let depths = |values: &[u64]| {
            let mut h = Histogram::default();
            for v in values {
                h.record(*v);
            }
            MetricsSnapshot {
                session_queue_depths: h,
                ..MetricsSnapshot::default()
            }
        };
        // Shard 0: two idle sessions, one with 3 waiting, one with a full default queue;
        // shard 1: none.
        let page = render_shards(&[depths(&[0, 0, 3, 1000]), depths(&[])], 1.0, 0);
        let lines: Vec<&str> = page
            .lines()
            .filter(|l| l.contains("surgemq_session_queue_depth"))
            .collect();
        let mut expected = vec![
            "# HELP surgemq_session_queue_depth Messages waiting in each session's outbound queue (connected or not), sampled every second.",
            "# TYPE surgemq_session_queue_depth histogram",
        ];
        let shard0 = [2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4];
        let les = [
            "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "+Inf",
        ];
        let bucket = |shard: usize, le: &str, n: u64| {
            format!("surgemq_session_queue_depth_bucket{{shard=\"{shard}\",le=\"{le}\"}} {n}")
        };
        let mut owned = Vec::new();
        for (le, n) in les.iter().zip(shard0) {
            owned.push(bucket(0, le, n));
        }
        owned.push("surgemq_session_queue_depth_sum{shard=\"0\"} 1003".into());
        owned.push("surgemq_session_queue_depth_count{shard=\"0\"} 4".into());
        for le in les {
            owned.push(bucket(1, le, 0));
        }
        owned.push("surgemq_session_queue_depth_sum{shard=\"1\"} 0".into());
        owned.push("surgemq_session_queue_depth_count{shard=\"1\"} 0".into());
        expected.extend(owned.iter().map(String::as_str));
        assert_eq!(lines, expected);
        // The broker-wide sum merges the shards' histograms.
        let total = MetricsSnapshot::sum(&[depths(&[1, 2]), depths(&[600])]);
        assert_eq!(
            (
                total.session_queue_depths.count,
                total.session_queue_depths.sum
            ),
            (3, 603)
        );
    }

    #[test]
    fn shared_groups_and_acl_withholding_are_series() {
        let board = StatsBoard::new(1);
        board.publish(
            0,
            MetricsSnapshot {
                shared_groups: vec![("workers".into(), 5)],
                acl_withheld: 3,
                ..MetricsSnapshot::default()
            },
        );
        let page = render(&board);
        assert!(
            page.contains("surgemq_shared_group_delivered_total{shard=\"0\",group=\"workers\"} 5"),
            "{page}"
        );
        assert!(
            page.contains("surgemq_acl_withheld_total{shard=\"0\"} 3"),
            "{page}"
        );
    }

    fn shard(routed: u64, rules: &[(&str, u64)]) -> MetricsSnapshot {
        MetricsSnapshot {
            messages_routed: routed,
            subscriptions: 4,
            dropped_expired: 2,
            dropped_shared: 1,
            protocol_errors: rules.iter().map(|r| r.1).sum(),
            protocol_errors_by_rule: rules.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("line\nnext"), "line\\nnext");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
    }

    #[test]
    fn every_family_has_one_header_and_per_shard_series() {
        let text = render_shards(&[shard(10, &[]), shard(5, &[])], 1.5, 1_700_000_000);
        assert!(text.contains("surgemq_publish_received_total{shard=\"0\"} 10\n"));
        assert!(text.contains("surgemq_publish_received_total{shard=\"1\"} 5\n"));
        assert!(text.contains("surgemq_messages_dropped_total{shard=\"1\",reason=\"expired\"} 2\n"));
        // Replicated: once, not summed.
        assert!(text.contains("\nsurgemq_subscriptions 4\n"));
        assert!(text.contains("\nsurgemq_uptime_seconds 1.500\n"));
        assert!(text.contains("\nsurgemq_start_time_seconds 1700000000\n"));
        let mut types = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(types.insert(name.to_string()), "two TYPE lines for {name}");
            if line.ends_with(" counter") {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
        // Every sample belongs to a family declared above it (a histogram's samples carry
        // the suffixes _bucket, _sum and _count).
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| types.contains(*f))
                .unwrap_or(name);
            assert!(types.contains(family), "{line}");
        }
        assert_eq!(dropped(&shard(0, &[])), 3);
    }

    #[test]
    fn rules_are_escaped_capped_and_cut() {
        let nasty = "protocol name \"M\\QTT\"\nx (MQTT-3.1.2-1)";
        let long = "é".repeat(MAX_RULE_LEN);
        let mut rules: Vec<(String, u64)> = (0..MAX_RULES_PER_SHARD + 10)
            .map(|i| (format!("rule {i:03}"), 1))
            .collect();
        rules.push((nasty.to_string(), 7));
        rules.push((long.clone(), 3));
        rules.push((format!("{long}tail"), 2));
        let m = MetricsSnapshot {
            protocol_errors_by_rule: rules,
            ..MetricsSnapshot::default()
        };
        let text = render_shards(&[m], 0.0, 0);
        assert!(text.contains(
            "surgemq_protocol_errors_by_rule_total{shard=\"0\",rule=\"protocol name \\\"M\\\\QTT\\\"\\nx (MQTT-3.1.2-1)\"} 7\n"
        ));
        let cut = truncate(&long, MAX_RULE_LEN);
        assert!(cut.len() <= MAX_RULE_LEN && cut.len() > MAX_RULE_LEN - 2);
        assert!(text.contains(&format!("rule=\"{cut}\"}} 5\n")));
        let series = text
            .lines()
            .filter(|l| l.starts_with("surgemq_protocol_errors_by_rule_total{"))
            .count();
        assert_eq!(series, MAX_RULES_PER_SHARD);
    }

    #[test]
    fn each_bridge_has_a_series_in_each_bridge_family() {
        use std::sync::atomic::Ordering;
        let cloud = Arc::new(BridgeStats::default());
        cloud.connected.store(true, Ordering::Relaxed);
        cloud.sent.store(7, Ordering::Relaxed);
        cloud.queued.store(3, Ordering::Relaxed);
        cloud.inflight.store(2, Ordering::Relaxed);
        let board = StatsBoard::with_bridges(
            1,
            Arc::new(vec![
                ("cloud".to_string(), cloud),
                ("site\"2".to_string(), Arc::new(BridgeStats::default())),
            ]),
        );
        let text = render(&board);
        for line in [
            "# TYPE surgemq_bridge_connected gauge",
            "surgemq_bridge_connected{bridge=\"cloud\"} 1",
            "surgemq_bridge_connected{bridge=\"site\\\"2\"} 0",
            "# TYPE surgemq_bridge_messages_sent_total counter",
            "surgemq_bridge_messages_sent_total{bridge=\"cloud\"} 7",
            "surgemq_bridge_messages_queued{bridge=\"cloud\"} 5",
            "surgemq_bridge_connect_failures_total{bridge=\"cloud\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        // Without bridges, no bridge family at all.
        assert!(!render(&StatsBoard::new(1)).contains("bridge"));
    }

    #[test]
    fn the_cluster_counters_are_exposed_with_a_cluster_only() {
        let board = StatsBoard::new(1);
        assert!(!render(&board).contains("surgemq_cluster"));
        let shared = crate::broker::cluster_port::ClusterShared::new();
        shared
            .forwarded
            .store(12, std::sync::atomic::Ordering::Relaxed);
        shared.nodes.store(2, std::sync::atomic::Ordering::Relaxed);
        board.set_cluster(shared);
        let text = render(&board);
        for line in [
            "# TYPE surgemq_cluster_messages_forwarded_total counter",
            "surgemq_cluster_messages_forwarded_total 12",
            "surgemq_cluster_messages_dropped_total 0",
            "surgemq_cluster_nodes 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
    }
}
