//! End-to-end tests of the broker's limits: `max_connections` (CONNACK 3 for the extra client,
//! the others unaffected, room again once one leaves) and `max_packet_size` (the exact
//! boundary, and an oversize packet closing only its own connection).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use surgemq::auth::{AclFile, FileAuthenticator};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::Packet;

#[test]
fn max_connections_refuses_extra_clients_with_connack_3() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_connections: 3,
            ..test_config()
        });
        let (sub_id, pub_id) = broker.ids_apart("full-sub", "full-pub");
        let mut sub = broker.connect(&sub_id);
        sub.subscribe(1, &[("full/t", 1)]);
        let mut publisher = broker.connect(&pub_id);
        let mut third = broker.connect(&broker.id_on("full-third", shards - 1));
        third.subscribe(1, &[("full/t", 1)]);
        // Full: the 4th gets CONNACK 3 (server unavailable), then the connection is closed.
        // Repeated, so that with 2 shards both shards refuse some.
        let mut refused = 0;
        for attempt in 0..4 {
            let extra = ConnectBuilder::new(&format!("full-extra-{attempt}"));
            let mut c = broker.connect_expecting(&extra, &[0x20, 0x02, 0x00, 0x03]);
            c.expect_closed();
            refused += 1;
        }
        // The three keep publishing and receiving at QoS 1.
        for round in 1..=3u16 {
            let text = format!("round {round}");
            publisher.publish1("full/t", text.as_bytes(), false, round);
            for c in [&mut sub, &mut third] {
                let (m, frame) = c.next_publish();
                assert_eq!(frame[0], 0x32);
                assert_eq!(m.payload, text.as_bytes());
                c.ack(&m);
            }
        }
        // Once one has left, there is room for a new one (and only one).
        third.disconnect();
        let mut fourth = broker.connect(&broker.id_on("full-fourth", shards - 1));
        fourth.subscribe(1, &[("full/t", 1)]);
        let mut c = broker.connect_expecting(
            &ConnectBuilder::new("full-extra-again"),
            &[0x20, 0x02, 0x00, 0x03],
        );
        c.expect_closed();
        refused += 1;
        publisher.publish1("full/t", b"after the change", false, 10);
        for c in [&mut sub, &mut fourth] {
            let (m, _) = c.next_publish();
            assert_eq!(m.payload, &b"after the change"[..]);
            c.ack(&m);
            c.ping();
        }
        let metrics = broker.shutdown();
        assert_eq!(
            metrics
                .iter()
                .map(|m| m.refused_max_connections)
                .sum::<u64>(),
            refused
        );
    });
}

/// A QoS 1 PUBLISH to `topic` that is exactly `size` bytes long, fixed header included.
fn publish_of_size(topic: &str, size: usize, packet_id: u16) -> Vec<u8> {
    let overhead = publish(topic, b"", 1, false, false, packet_id).len();
    // The Remaining Length field grows with the payload; try the lengths it can have.
    (size.saturating_sub(overhead + 3)..=size - overhead)
        .map(|n| publish(topic, &vec![b'x'; n], 1, false, false, packet_id))
        .find(|p| p.len() == size)
        .expect("some payload length gives the size")
}

#[test]
fn max_packet_size_closes_only_the_offending_connection() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_packet_size: 1024,
            ..test_config()
        });
        let mut healthy = Healthy::new(&broker);
        let mut sub = broker.connect(&broker.id_on("mps-sub", 0));
        sub.subscribe(1, &[("mps/t", 1)]);
        let mut marker_id = 100;
        for shard in 0..shards {
            let id = broker.id_on("mps", shard);
            let mut c = broker.connect(&id);
            // The limit counts the whole packet: 1024 bytes pass...
            let exact = publish_of_size("mps/t", 1024, 1);
            assert_eq!(exact.len(), 1024);
            c.send(&exact);
            c.expect_bytes(&puback(1));
            let (m, _) = sub.next_publish();
            let Packet::Publish(sent) = parse(&exact) else {
                unreachable!("a PUBLISH")
            };
            assert_eq!(m.payload, sent.payload);
            sub.ack(&m);
            // ...1025 bytes close the connection without an answer.
            c.try_send(&publish_of_size("mps/t", 1025, 2));
            c.expect_closed();
            // So does a 2 KiB PUBLISH.
            let mut c = broker.connect(&id);
            c.try_send(&publish_of_size("mps/t", 2048, 3));
            c.expect_closed();
            // The others are unaffected, and neither oversize message was forwarded.
            healthy.check();
            let mut p = broker.connect(&broker.id_on("mps-pub", shard));
            marker_id += 1;
            p.publish1("mps/t", b"marker", false, marker_id);
            assert_eq!(sub.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        }
    });
}

#[test]
fn connection_slots_come_back_however_a_connection_ends() {
    // Every way a connection can end must give its slot back: after each of them has happened
    // on every shard, two clients still fit in max_connections = 2, and a third does not.
    with_shards(|shards| {
        let acl = AclFile::parse("topic readwrite ok/#\n", "test.acl").unwrap();
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_connections: 2,
            connect_timeout: Duration::from_millis(300),
            authenticator: Arc::new(FileAuthenticator {
                passwords: None,
                allow_anonymous: true,
                acl: Some(acl),
            }),
            ..test_config()
        });
        for shard in 0..shards {
            let id = broker.id_on("slots", shard);
            // DISCONNECT.
            broker.connect(&id).disconnect();
            // The socket drops.
            broker.connect(&id).crash_and_wait();
            // Taken over (both slots in use for a moment).
            let old = broker.connect(&id);
            let new = broker.connect(&id);
            let mut old = old;
            old.expect_closed();
            new.disconnect();
            // Refused by the authenticator: a will to a topic it may not publish to.
            let refused = ConnectBuilder::new(&id).will("no/x", b"w", 0, false);
            broker
                .connect_expecting(&refused, &[0x20, 0x02, 0x00, 0x05])
                .expect_closed();
            // Unsupported protocol level: CONNACK 1.
            let old_level = ConnectBuilder::new(&id).protocol(b"MQTT", 6);
            broker
                .connect_expecting(&old_level, &[0x20, 0x02, 0x00, 0x01])
                .expect_closed();
            // Protocol violation after CONNECT.
            let mut c = broker.connect(&id);
            c.send(&[0x60, 0x02, 0x00, 0x01]); // PUBREL with reserved flags 0000 (MQTT-3.6.1-1)
            c.expect_closed();
            // First packet not CONNECT.
            let mut c = broker.socket();
            c.send(&[0xc0, 0x00]);
            c.expect_closed();
            // No CONNECT within the connect timeout.
            broker.socket().expect_closed();
        }
        let mut a = broker.connect(&broker.id_on("slots-a", 0));
        let mut b = broker.connect(&broker.id_on("slots-b", shards - 1));
        let mut c =
            broker.connect_expecting(&ConnectBuilder::new("slots-c"), &[0x20, 0x02, 0x00, 0x03]);
        c.expect_closed();
        a.ping();
        b.ping();
    });
}

#[test]
fn the_slot_is_free_once_the_client_sees_its_connection_closed() {
    // With max_connections = 1, a client that has seen its connection closed (after
    // DISCONNECT, or after the socket dropped) leaves room for the next one at once: the
    // broker must not close the socket first and give the slot back later. Repeated, as the
    // next connection may be accepted by either shard, and the race is narrow (a few hundred
    // rounds are needed to see it reliably).
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_connections: 1,
            ..test_config()
        });
        for round in 0..600 {
            let id = broker.id_on(&format!("one-slot-{round}"), round % shards);
            let c = broker.connect(&id);
            if round % 2 == 0 {
                c.disconnect();
            } else {
                c.crash_and_wait();
            }
        }
    });
}
