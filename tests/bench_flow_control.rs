//! Flow control for QoS 1/2, end to end: the project's load generator against an in-process
//! broker, with publishers far ahead of their subscribers (a window of 4000 messages per
//! publisher against subscriber queues of `--max-queued-messages` 1000, and 100), so the queues
//! really go over their limits. A subscriber that keeps reading must still get every message,
//! once and in order: the broker holds its publishers back instead of dropping what it
//! acknowledged (see `src/broker/pressure.rs`). Pair, fan-out and mesh, QoS 1 and 2, with 1 and
//! 2 shards.
//!
//! Without the push-back the same runs lose most of their messages: against the broker of
//! commit 2c73a8a (release build, default limits) the pair loses 10 800 to 14 400 of its
//! 20 000 and the mesh about 360 000 of its 400 000. The small queues catch a publisher on
//! another shard that goes on sending until the pressure reaches it: what it sent meanwhile
//! must be queued beyond the limit, not dropped.
//!
//! What each run did (deliveries, pauses, drops) is printed with `--nocapture`:
//!
//! ```text
//! cargo test --test bench_flow_control -- --nocapture
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use surgemq::bench::{self, BenchConfig, BenchReport, Load, Scenario};
use surgemq::broker::{self, BrokerConfig, MetricsSnapshot};
use surgemq::protocol::QoS;

/// Messages each publisher may have outstanding: four times the default queue limit.
const WINDOW: usize = 4000;
/// The default `--max-queued-messages`, and a small one.
const DEFAULT_QUEUE: usize = 1000;
const SMALL_QUEUE: usize = 100;
/// Subscribers of fan-out, clients of mesh.
const CLIENTS: usize = 20;

/// The brokers pin their shards to the CPUs: one run at a time, whatever the test threads do.
static SERIAL: Mutex<()> = Mutex::new(());

/// Messages per publisher: several windows for the single publisher of pair and fan-out, so
/// its subscribers fall behind again and again; fewer for mesh, whose 20 publishers each
/// feed every subscriber (its queues overflow at once).
fn messages(scenario: Scenario) -> u64 {
    match scenario {
        Scenario::Pair => 20_000,
        Scenario::FanOut => 5_000,
        _ => 1_000,
    }
}

/// One run against a fresh broker: the generator's report and the broker's final counters,
/// summed over its shards.
fn run(shards: usize, queue: usize, scenario: Scenario, qos: QoS) -> (BenchReport, Totals) {
    let broker = broker::start(BrokerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards,
        max_queued_messages: queue,
        ..Default::default()
    })
    .expect("broker starts");
    let port = broker.local_addrs()[0].port();
    let started = Instant::now();
    let report = bench::run(BenchConfig {
        scenario,
        port,
        clients: (scenario != Scenario::Pair).then_some(CLIENTS),
        load: Load::Messages(messages(scenario)),
        qos,
        window: Some(WINDOW),
        threads: 2,
        drain: Duration::from_secs(3),
        ..Default::default()
    });
    let elapsed = started.elapsed();
    let totals = Totals::of(&broker.shutdown());
    let report = report.unwrap_or_else(|e| panic!("{scenario:?} QoS {qos:?}: {e}"));
    eprintln!(
        "{} shard(s), queues {queue}, {} QoS {}: {} of {} delivered in {:.2} s; {totals:?}",
        shards,
        report.scenario,
        report.qos,
        report.delivered,
        report.expected,
        elapsed.as_secs_f64()
    );
    (report, totals)
}

#[derive(Debug, Default)]
struct Totals {
    dropped_queue_full_qos12: u64,
    pressure_raised: u64,
    publishers_paused: u64,
    subscribers_stalled: u64,
}

impl Totals {
    fn of(shards: &[MetricsSnapshot]) -> Totals {
        let sum = |f: fn(&MetricsSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
        Totals {
            dropped_queue_full_qos12: sum(|m| m.dropped_queue_full_qos12),
            pressure_raised: sum(|m| m.pressure_raised),
            publishers_paused: sum(|m| m.publishers_paused),
            subscribers_stalled: sum(|m| m.subscribers_stalled),
        }
    }
}

fn check(shards: usize, queue: usize, scenario: Scenario, qos: QoS) {
    let (report, totals) = run(shards, queue, scenario, qos);
    let what = format!(
        "{shards} shard(s), {scenario:?} QoS {qos:?}, --max-queued-messages {queue}:\n{}{totals:?}",
        report.summary()
    );
    let (publishers, subscribers) = match scenario {
        Scenario::Pair => (1, 1),
        Scenario::FanOut => (1, CLIENTS as u64),
        _ => (CLIENTS as u64, CLIENTS as u64),
    };
    let sent = publishers * messages(scenario);
    assert!(report.errors.is_empty(), "{what}");
    assert_eq!(report.published, sent, "{what}");
    assert_eq!(report.acked, sent, "every publish acknowledged: {what}");
    assert_eq!(report.expected, sent * subscribers, "{what}");
    assert_eq!(report.missing, 0, "{what}");
    assert_eq!(report.delivered, report.expected, "{what}");
    assert_eq!(report.duplicated, 0, "{what}");
    assert_eq!(report.reordered, 0, "{what}");
    assert_eq!(report.foreign, 0, "{what}");
    assert!(!report.failed(), "{what}");
    assert_eq!(
        totals.dropped_queue_full_qos12, 0,
        "no QoS 1/2 message dropped for a subscriber that reads: {what}"
    );
    assert_eq!(totals.subscribers_stalled, 0, "nobody stalled: {what}");
    // What the test is about did happen. With 20 subscribers some share their publisher's
    // shard, and their queues go over the limit (without the push-back: drops). The pair's
    // publisher is held back again and again when its subscriber shares its shard (about
    // once per `queue` messages). When the two land on different shards (their client ids
    // decide), the pressure reaches the publisher's shard one flush later, and the subscriber
    // may have read its queue back under half the limit by then: the 4000-message window paces
    // the publisher more than the pressure does, and it may never be paused at all (0 to 6
    // pauses seen with 1000-message queues; with 100-message queues usually 3 to 6, but a CI
    // run saw 107 raises and no pause). Its queue did go over the limit, though.
    if scenario == Scenario::Pair && shards == 1 {
        assert!(totals.publishers_paused > 0, "publisher held back: {what}");
    } else if scenario != Scenario::Pair || queue < DEFAULT_QUEUE {
        assert!(totals.pressure_raised > 0, "a queue over its limit: {what}");
    }
}

fn every_scenario(shards: usize, queue: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for scenario in [Scenario::Pair, Scenario::FanOut, Scenario::Mesh] {
            check(shards, queue, scenario, qos);
        }
    }
}

#[test]
fn one_shard_loses_nothing_when_queues_overflow() {
    every_scenario(1, DEFAULT_QUEUE);
}

#[test]
fn two_shards_lose_nothing_when_queues_overflow() {
    every_scenario(2, DEFAULT_QUEUE);
}

#[test]
fn one_shard_loses_nothing_with_small_queues() {
    every_scenario(1, SMALL_QUEUE);
}

#[test]
fn two_shards_lose_nothing_with_small_queues() {
    every_scenario(2, SMALL_QUEUE);
}
