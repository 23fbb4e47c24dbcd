//! Parked connections (`--park-idle-after`): a client that stays silent gives up its glommio
//! socket and waits in its shard's epoll set. Everything a connected client can meet must still
//! reach it while parked: a message to deliver, its own next packet, the end of its socket, its
//! keepalive deadline, a takeover, the broker's shutdown. The shard counters prove that the
//! connections did park and were taken back.

mod common;

use std::time::Duration;

use common::*;
use surgemq::broker::{BrokerConfig, MetricsSnapshot};

/// Connections park after 50 to 100 ms of silence.
const PARK_AFTER: Duration = Duration::from_millis(50);
/// Long enough for any silent connection to have parked, with room for a loaded machine.
const PARKED: Duration = Duration::from_millis(600);

fn parking_broker(shards: usize) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        park_idle_after: Some(PARK_AFTER),
        ..test_config()
    })
}

fn total(snapshots: &[MetricsSnapshot], field: fn(&MetricsSnapshot) -> u64) -> u64 {
    snapshots.iter().map(field).sum()
}

#[test]
fn a_parked_subscriber_still_gets_messages_and_answers_pings() {
    with_shards(|shards| {
        let broker = parking_broker(shards);
        let (sub_id, pub_id) = broker.ids_apart("parked-sub", "parked-pub");
        let mut sub = broker.connect(&sub_id);
        sub.subscribe(1, &[("parked/t", 1)]);
        let mut publisher = broker.connect(&pub_id);
        std::thread::sleep(PARKED);

        // Output for a parked client: the session wakes it, it takes its socket back and sends.
        publisher.publish1("parked/t", b"to a parked client", false, 1);
        let (p, frame) = sub.next_publish();
        assert_eq!(frame[0], 0x32, "QoS 1 delivery: {frame:02x?}");
        assert_eq!(&p.payload[..], b"to a parked client");
        sub.ack(&p);
        std::thread::sleep(PARKED);

        // Input from a parked client: epoll reports it, the shard wakes the connection.
        sub.ping();
        publisher.ping();
        let metrics = broker.shutdown();
        // Both parked twice (before the publish and before the pings) and came back each time.
        assert!(total(&metrics, |m| m.parks) >= 4, "{metrics:#?}");
        assert!(total(&metrics, |m| m.unparks) >= 4, "{metrics:#?}");
    });
}

#[test]
fn a_subscriber_that_only_receives_does_not_park() {
    // Epochs of 200 ms: only a gap of 400 ms between messages could let the subscriber park.
    let broker = Broker::with_config(BrokerConfig {
        park_idle_after: Some(Duration::from_millis(200)),
        ..test_config()
    });
    let mut sub = broker.connect("receiver");
    sub.subscribe(1, &[("stream/t", 0)]);
    let mut publisher = broker.connect("streamer");
    std::thread::sleep(Duration::from_millis(1000));
    // Parked by now: the subscriber twice (right after CONNACK, then after SUBACK), the
    // publisher once (right after CONNACK).
    for i in 0..75u32 {
        publisher.publish0("stream/t", &i.to_be_bytes(), false);
        sub.expect_bytes(&qos0_delivery("stream/t", &i.to_be_bytes(), false));
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = broker.shutdown();
    // 1.5 s of receiving would have parked (and unparked) it every 400 to 600 ms.
    assert!(total(&metrics, |m| m.parks) <= 4, "{metrics:#?}");
}

#[test]
fn a_parked_client_that_drops_its_socket_publishes_its_will() {
    with_shards(|shards| {
        let broker = parking_broker(shards);
        let (watcher_id, client_id) = broker.ids_apart("will-watcher", "will-parked");
        let mut watcher = broker.connect(&watcher_id);
        watcher.subscribe(1, &[("wills/#", 0)]);
        let client = broker
            .connect_with(&ConnectBuilder::new(&client_id).will("wills/a", b"gone", 0, false));
        std::thread::sleep(PARKED);
        client.drop_connection();
        watcher.expect_bytes(&qos0_delivery("wills/a", b"gone", false));
        let metrics = broker.shutdown();
        assert!(total(&metrics, |m| m.parks) >= 2, "{metrics:#?}");
    });
}

#[test]
fn a_parked_client_is_still_closed_by_its_keepalive() {
    let broker = parking_broker(1);
    let mut client = broker.connect_with(&ConnectBuilder::new("parked-ka").keep_alive(1));
    // Nothing sent: parked after at most 100 ms, closed 1.5 s after the CONNECT.
    let waited = client.expect_closed_within(Duration::from_secs(4));
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}, before 1.5 x keepalive"
    );
    let metrics = broker.shutdown();
    assert!(total(&metrics, |m| m.parks) >= 1, "{metrics:#?}");
}

#[test]
fn a_parked_connection_is_taken_over() {
    with_shards(|shards| {
        let broker = parking_broker(shards);
        let mut first = broker.connect("parked-takeover");
        std::thread::sleep(PARKED);
        let mut second = broker.connect("parked-takeover");
        first.expect_closed();
        second.ping();
        let metrics = broker.shutdown();
        assert!(total(&metrics, |m| m.parks) >= 1, "{metrics:#?}");
    });
}

#[test]
fn shutdown_closes_parked_connections() {
    with_shards(|shards| {
        let broker = parking_broker(shards);
        let mut clients: Vec<_> = (0..20)
            .map(|i| broker.connect(&format!("parked-stop-{i}")))
            .collect();
        std::thread::sleep(PARKED);
        // Broker::shutdown fails the test unless every shard stops within 10 s.
        let metrics = broker.shutdown();
        // Each parked exactly once: a parked connection stays parked until something happens
        // (a spurious wake from glommio must not take its socket back and park it again).
        assert_eq!(total(&metrics, |m| m.parks), 20, "{metrics:#?}");
        for c in &mut clients {
            c.expect_closed();
        }
    });
}

#[test]
fn without_parking_nothing_parks() {
    let broker = Broker::with_config(BrokerConfig {
        park_idle_after: None,
        ..test_config()
    });
    let mut client = broker.connect("never-parks");
    std::thread::sleep(PARKED);
    client.ping();
    let metrics = broker.shutdown();
    assert_eq!(total(&metrics, |m| m.parks), 0, "{metrics:#?}");
}
