//! `$SYS/broker/...` (Mosquitto's names and meanings): published retained every
//! `--sys-interval`, from the shards' own counters, and moving with known traffic.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::BrokerConfig;

fn sys_broker(shards: usize) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        sys_interval: Duration::from_secs(1),
        ..test_config()
    })
}

/// A `$SYS` watcher: the latest value of every topic it heard.
struct Watcher {
    client: RawClient,
    latest: HashMap<String, String>,
}

impl Watcher {
    /// Reads `$SYS` publishes until `topic` says `want` (or already did last); fails after
    /// 6 s.
    #[track_caller]
    fn wait_for(&mut self, topic: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(6);
        while self.latest.get(topic).map(String::as_str) != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{topic} never said {want}; last values: {:?}",
                self.latest
            );
            let Some(frame) = self.client.next_frame_within(Duration::from_millis(200)) else {
                continue;
            };
            let surgemq::protocol::Packet::Publish(p) = parse(&frame) else {
                panic!("expected PUBLISH, got {frame:02x?}");
            };
            let value = String::from_utf8_lossy(&p.payload).into_owned();
            self.latest.insert(p.topic.as_str().to_string(), value);
        }
    }
}

#[test]
fn sys_counters_move_with_the_traffic() {
    with_shards(|shards| {
        let broker = sys_broker(shards);
        let mut client = broker.connect(&broker.id_on("watcher", 0));
        client.subscribe(
            1,
            &[
                ("$SYS/broker/publish/messages/received", 0),
                ("$SYS/broker/clients/connected", 0),
                ("$SYS/broker/subscriptions/count", 0),
            ],
        );
        let mut watcher = Watcher {
            client,
            latest: HashMap::new(),
        };
        watcher.wait_for("$SYS/broker/publish/messages/received", "0");
        let mut publisher = broker.connect(&broker.id_on("publisher", shards - 1));
        for _ in 0..50 {
            publisher.send(&publish("sys/test", b"x", 0, false, false, 0));
        }
        publisher.ping();
        watcher.wait_for("$SYS/broker/publish/messages/received", "50");
        watcher.wait_for("$SYS/broker/clients/connected", "2");
        watcher.wait_for("$SYS/broker/subscriptions/count", "3");
    });
}

#[test]
fn sys_topics_are_retained_and_off_with_a_zero_interval() {
    let broker = sys_broker(1);
    std::thread::sleep(Duration::from_millis(1500));
    let mut late = broker.connect("late");
    let frames = late.subscribe_expecting(1, &[("$SYS/broker/version", 0)], 1);
    let surgemq::protocol::Packet::Publish(p) = parse(&frames[0]) else {
        panic!("expected the retained version");
    };
    assert!(p.retain);
    assert!(String::from_utf8_lossy(&p.payload).starts_with("surgemq version "));

    let quiet = Broker::with_config(BrokerConfig {
        sys_interval: Duration::ZERO,
        ..test_config()
    });
    let mut c = quiet.connect("quiet");
    c.subscribe(1, &[("$SYS/#", 0)]);
    c.expect_open_and_silent(Duration::from_millis(1500));
}

#[test]
fn sys_counts_deliveries_per_shared_subscription_group() {
    with_shards(|shards| {
        let broker = sys_broker(shards);
        let members: Vec<RawClient> = (0..2)
            .map(|i| {
                let mut m = broker.connect(&broker.id_on(&format!("member{i}"), i % shards));
                m.subscribe(1, &[("$share/workers/jobs/#", 0)]);
                m
            })
            .collect();
        let mut client = broker.connect(&broker.id_on("group-watcher", 0));
        client.subscribe(1, &[("$SYS/broker/shared/#", 0)]);
        let mut watcher = Watcher {
            client,
            latest: HashMap::new(),
        };
        let mut publisher = broker.connect(&broker.id_on("jobs-pub", shards - 1));
        for _ in 0..20 {
            publisher.send(&publish("jobs/1", b"x", 0, false, false, 0));
        }
        publisher.ping();
        watcher.wait_for("$SYS/broker/shared/workers/messages/sent", "20");
        drop(members);
    });
}
