//! Two SurgeMQ brokers in one process, A bridged to B `both` ways on `#` (one bridge,
//! configured on A), as MQTT 3.1.1 with try_private and as MQTT 5: every message published on
//! either side reaches a subscriber on each side exactly once (no echo, no loop). And with a
//! data directory on both, what is published on A while B is down reaches B's persistent
//! subscriber once B is back, also when A itself was restarted meanwhile.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::bridge::{BridgeConfig, BridgeStats, BridgeTopic, Direction, RestartTimeout};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::{Ack, Packet, ProtocolLevel, QoS};

#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stats(broker: &Broker) -> Arc<BridgeStats> {
    broker.handle().bridges()[0].1.clone()
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    BridgeStats::get(counter)
}

/// The bridge A -> B: `#` both ways at QoS 2, reconnecting every 100 ms.
fn bridge(b_port: u16, protocol: ProtocolLevel) -> BridgeConfig {
    BridgeConfig {
        topics: vec![BridgeTopic::new("#", Direction::Both, QoS::ExactlyOnce)],
        protocol,
        restart: RestartTimeout::Constant(Duration::from_millis(100)),
        ..BridgeConfig::new("ab", "127.0.0.1", b_port)
    }
}

/// Reads publishes (acknowledging them, QoS 2 flows included) until both markers came;
/// returns (topic, QoS) of the others, in arrival order. Then a PINGREQ round trip, answering
/// the PUBRELs before the PINGRESP, so the QoS 2 flows are finished.
#[track_caller]
fn until_markers(c: &mut RawClient, markers: [&[u8]; 2]) -> Vec<(String, QoS)> {
    let mut seen = Vec::new();
    let mut left: Vec<&[u8]> = markers.to_vec();
    while !left.is_empty() {
        match c.next_packet() {
            Packet::Publish(p) => {
                c.ack(&p);
                if let Some(i) = left.iter().position(|m| *m == &p.payload[..]) {
                    left.remove(i);
                } else {
                    seen.push((p.topic.to_string(), p.qos));
                }
            }
            Packet::PubRel(Ack { packet_id, .. }) => c.send(&pubcomp(packet_id)),
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
    c.send(&[0xc0, 0x00]);
    loop {
        match c.next_packet() {
            Packet::PingResp => return seen,
            Packet::PubRel(Ack { packet_id, .. }) => c.send(&pubcomp(packet_id)),
            other => panic!("expected PUBREL or PINGRESP, got {other:?}"),
        }
    }
}

fn qos_of(i: u16) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(i % 3)]
}

fn publish_at(c: &mut RawClient, topic: &str, qos: QoS, id: u16) {
    match qos {
        QoS::AtMostOnce => c.publish0(topic, b"m", false),
        QoS::AtLeastOnce => c.publish1(topic, b"m", false, id),
        QoS::ExactlyOnce => c.publish2(topic, b"m", false, id),
    }
}

/// Nine messages published on each broker at QoS 0, 1, 2 (the last at QoS 2, so once the
/// bridge counted it, everything before it was handled); then a marker on each. A subscriber
/// on each broker must get all eighteen exactly once, at their own QoS, before both markers:
/// an echo or a loop would bring a copy back through the bridge before the marker of the
/// broker it comes from (the bridge's queue on each side is FIFO).
fn each_message_once_on_each_side(a_shards: usize, protocol: ProtocolLevel) {
    let b = Broker::start(1);
    let a = Broker::with_config(BrokerConfig {
        shards: a_shards,
        bridges: vec![bridge(b.addr.port(), protocol)],
        ..test_config()
    });
    let stats = stats(&a);
    wait_until("the bridge is up", || stats.is_connected());
    let (sub_a_id, pub_a_id) = a.ids_apart("sub-a", "pub-a");
    let mut sub_a = a.connect(&sub_a_id);
    sub_a.subscribe(1, &[("t/#", 2)]);
    let mut sub_b = b.connect("sub-b");
    sub_b.subscribe(1, &[("t/#", 2)]);
    let mut pub_a = a.connect(&pub_a_id);
    let mut pub_b = b.connect("pub-b");
    let mut expected = BTreeMap::new();
    for i in 0..9u16 {
        for (c, side) in [(&mut pub_a, "a"), (&mut pub_b, "b")] {
            let topic = format!("t/{side}/{i}");
            publish_at(c, &topic, qos_of(i), i + 1);
            expected.insert(topic, qos_of(i));
        }
    }
    wait_until("nine each way", || {
        get(&stats.sent) >= 9 && get(&stats.received) >= 9
    });
    pub_a.publish1("t/a/mark", b"mark-a", false, 100);
    pub_b.publish1("t/b/mark", b"mark-b", false, 100);
    for (name, sub) in [("A", &mut sub_a), ("B", &mut sub_b)] {
        let seen = until_markers(sub, [b"mark-a", b"mark-b"]);
        let n = seen.len();
        let got: BTreeMap<_, _> = seen.into_iter().collect();
        assert_eq!(
            got.len(),
            n,
            "a message came twice to the subscriber on {name}"
        );
        assert_eq!(got, expected, "what the subscriber on {name} got");
    }
    // The markers crossed too; nothing else did.
    wait_until("the markers crossed", || {
        get(&stats.sent) >= 10 && get(&stats.received) >= 10
    });
    assert_eq!(
        (
            get(&stats.sent),
            get(&stats.received),
            get(&stats.dropped),
            get(&stats.connections)
        ),
        (10, 10, 0, 1)
    );
}

#[test]
fn both_ways_on_hash_with_try_private_each_message_once_on_each_side() {
    with_shards(|shards| each_message_once_on_each_side(shards, ProtocolLevel::V311));
}

#[test]
fn both_ways_on_hash_with_mqtt5_each_message_once_on_each_side() {
    with_shards(|shards| each_message_once_on_each_side(shards, ProtocolLevel::V5));
}

/// The control for the tests above: a 3.1.1 bridge without try_private is an ordinary client
/// to B, which sends it back what it published (no No Local in 3.1.1); A's subscriber then
/// gets A's message twice.
#[test]
fn without_try_private_a_message_from_a_comes_back_to_a() {
    let b = Broker::start(1);
    let a = Broker::with_config(BrokerConfig {
        bridges: vec![BridgeConfig {
            try_private: false,
            ..bridge(b.addr.port(), ProtocolLevel::V311)
        }],
        ..test_config()
    });
    let stats = stats(&a);
    wait_until("the bridge is up", || stats.is_connected());
    let mut sub_a = a.connect("sub-a");
    sub_a.subscribe(1, &[("t/#", 2)]);
    let mut pub_a = a.connect("pub-a");
    pub_a.publish1("t/a/0", b"m", false, 1);
    // Without the echo, the second copy never comes and the read times out.
    let mut copies = 0;
    while copies < 2 {
        let (p, _) = sub_a.next_publish();
        sub_a.ack(&p);
        assert_eq!(&p.topic[..], "t/a/0");
        copies += 1;
    }
    if std::env::var("FORCE_PANIC").is_ok() {
        panic!("forced");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("surgemq-bridge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Publishes `range` at QoS 1 on A's `t/n`.
fn publish_range(a: &Broker, range: std::ops::Range<u32>) {
    let mut p = a.connect("pub-a");
    for i in range {
        p.publish1(
            "t/n",
            i.to_string().as_bytes(),
            false,
            (i % 60_000 + 1) as u16,
        );
    }
    p.disconnect();
}

/// B's persistent subscriber resumes its session and must get exactly `range`, in order.
#[track_caller]
fn resume_and_expect(b: &Broker, range: std::ops::Range<u32>) {
    let mut sub = b.resume(&ConnectBuilder::new("sub-b").clean(false));
    for i in range {
        let (p, _) = sub.next_publish();
        sub.ack(&p);
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            ("t/n", i.to_string().as_bytes()),
            "message {i}"
        );
    }
    sub.disconnect();
}

fn config_on(addr: SocketAddr, data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        listen: vec![addr.into()],
        data_dir: Some(data_dir.to_path_buf()),
        ..test_config()
    }
}

/// With data directories: B shuts down; what A publishes meanwhile waits in the bridge's
/// session on A and reaches B's persistent subscriber when B is back on its port. Then again,
/// with A also shut down and started on its data directory while B is down: the bridge's
/// queue was on A's disk.
#[test]
fn messages_published_while_the_remote_is_down_wait_on_disk_and_arrive_after() {
    let (dir_a, dir_b) = (temp_dir("a"), temp_dir("b"));
    let b_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config_b = config_on(b_addr, &dir_b);
    let config_a = BrokerConfig {
        bridges: vec![BridgeConfig {
            topics: vec![BridgeTopic::new("t/#", Direction::Out, QoS::AtLeastOnce)],
            ..bridge(b_addr.port(), ProtocolLevel::V311)
        }],
        ..config_on("127.0.0.1:0".parse().unwrap(), &dir_a)
    };
    let b = Broker::with_config(config_b.clone());
    let a = Broker::with_config(config_a.clone());
    let s = stats(&a);
    wait_until("the bridge is up", || s.is_connected());
    let mut sub = b.connect_with(&ConnectBuilder::new("sub-b").clean(false));
    sub.subscribe(1, &[("t/#", 1)]);
    sub.disconnect();

    // B down, A up.
    b.shutdown();
    wait_until("the bridge saw B go", || !s.is_connected());
    publish_range(&a, 0..100);
    let b = Broker::with_config(config_b.clone());
    resume_and_expect(&b, 0..100);
    wait_until("sent 100", || get(&s.sent) == 100);
    // Counted once both sides subscribed, which may come after the queued messages flowed.
    wait_until("connected twice", || get(&s.connections) == 2);

    // B down, A restarted on its data directory, then B.
    b.shutdown();
    wait_until("the bridge saw B go", || !s.is_connected());
    publish_range(&a, 100..200);
    a.shutdown();
    let a = Broker::with_config(config_a);
    let s = stats(&a);
    let b = Broker::with_config(config_b);
    wait_until("the bridge is up", || s.is_connected());
    resume_and_expect(&b, 100..200);
    wait_until("sent 100 since A's start", || get(&s.sent) == 100);
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}
