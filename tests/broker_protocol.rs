//! End-to-end tests of the broker over raw sockets: the bytes a client sends and the exact
//! bytes the broker must answer, per MQTT 3.1.1 (rule ids in the comments). Almost every test
//! runs against a broker with 1 shard and one with 2, where client ids are chosen so that
//! publishers and subscribers live on different shards on purpose.

mod common;

use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::BrokerConfig;
use surgemq::protocol::{Packet, QoS};

// ----- CONNECT / CONNACK ----------------------------------------------------------------------

#[test]
fn connect_is_answered_with_connack_accepted() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for shard in 0..shards {
            let mut c = broker.socket();
            // 10 = CONNECT, remaining length 14; "MQTT", level 4, flags 02 (CleanSession),
            // keepalive 60, client id "c1".
            c.send(&[
                0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02,
                b'c', b'1',
            ]);
            // CONNACK: session present 0, return code 0.
            c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
            c.ping();
            // And with an id homed on each shard (the connection may have to move).
            let mut c = broker.connect(&broker.id_on("connack", shard));
            c.ping();
        }
    });
}

#[test]
fn mqtt31_mqisdp_level_3_is_accepted() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for shard in 0..shards {
            let id = broker.id_on("v31", shard);
            let mut c = broker.socket();
            c.send(&ConnectBuilder::new(&id).protocol(b"MQIsdp", 3).build());
            c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
            // The session works: subscribe and receive.
            c.subscribe(1, &[("v31/t", 1)]);
            let mut p = broker.connect(&broker.id_on("v31-pub", (shard + 1) % shards));
            p.publish1("v31/t", b"hello 3.1", false, 1);
            let (msg, frame) = c.next_publish();
            assert_eq!(frame[0], 0x32);
            assert_eq!(&msg.payload[..], b"hello 3.1");
        }
    });
}

#[test]
fn unsupported_protocol_level_gets_connack_1_then_close() {
    // MQTT-3.1.2-2: CONNACK 0x01 (unacceptable protocol level), then disconnect.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let cases: [(&[u8], u8); 5] = [
            (b"MQTT", 7),
            (b"MQTT", 3),
            (b"MQTT", 6),
            (b"MQTT", 0),
            (b"MQIsdp", 4),
        ];
        for (name, level) in cases {
            let mut c = broker.socket();
            c.send(&ConnectBuilder::new("lvl").protocol(name, level).build());
            c.expect_bytes(&[0x20, 0x02, 0x00, 0x01]);
            c.expect_closed();
        }
    });
}

#[test]
fn bad_protocol_name_closes_without_connack() {
    // MQTT-3.1.2-1: the server may disconnect; it must not go on as MQTT 3.1.1.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for name in [&b"MQTX"[..], b"mqtt", b"", b"MQIsdpX"] {
            let mut c = broker.socket();
            c.send(&ConnectBuilder::new("badname").protocol(name, 4).build());
            c.expect_closed();
        }
    });
}

#[test]
fn first_packet_not_connect_closes_without_reply() {
    // MQTT-3.1.0-1: the first packet from the client must be CONNECT.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let firsts = [
            vec![0xc0, 0x00], // PINGREQ
            subscribe(1, &[("a", 0)]),
            publish("a", b"x", 0, false, false, 0),
            vec![0xe0, 0x00], // DISCONNECT
        ];
        for first in firsts {
            let mut c = broker.socket();
            c.send(&first);
            c.expect_closed();
        }
    });
}

#[test]
fn second_connect_closes_the_connection() {
    // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for shard in 0..shards {
            let id = broker.id_on("twice", shard);
            let mut c = broker.connect(&id);
            c.send(&ConnectBuilder::new(&id).build());
            c.expect_closed();
        }
    });
}

#[test]
fn connect_with_reserved_flag_closes_without_connack() {
    // MQTT-3.1.2-3: the reserved connect flag must be 0, else disconnect.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut bytes = ConnectBuilder::new("reserved").build();
        bytes[9] |= 0x01; // connect flags byte: fixed header (2) + "MQTT" field (6) + level (1)
        let mut c = broker.socket();
        c.send(&bytes);
        c.expect_closed();
    });
}

#[test]
fn empty_client_id_without_clean_session_is_rejected() {
    // MQTT-3.1.3-8: CONNACK 0x02 (identifier rejected), then close.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.socket();
        c.send(&ConnectBuilder::new("").clean(false).build());
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x02]);
        c.expect_closed();
    });
}

#[test]
fn empty_client_id_with_clean_session_is_accepted() {
    // MQTT-3.1.3-6: the server assigns a unique id.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut a = broker.connect_with(&ConnectBuilder::new(""));
        let mut b = broker.connect_with(&ConnectBuilder::new(""));
        a.subscribe(1, &[("anon/t", 1)]);
        b.subscribe(1, &[("anon/t", 1)]);
        let mut p = broker.connect("anon-pub");
        p.publish1("anon/t", b"to both", false, 1);
        // Two sessions, not one taken over by the other: both receive the message.
        for c in [&mut a, &mut b] {
            let (msg, _) = c.next_publish();
            assert_eq!(&msg.payload[..], b"to both");
            c.ack(&msg);
            c.ping();
        }
    });
}

#[test]
fn connect_timeout_closes_a_silent_socket() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            connect_timeout: Duration::from_secs(1),
            ..test_config()
        });
        let mut c = broker.socket();
        let took = c.expect_closed_within(Duration::from_secs(3));
        assert!(
            took >= Duration::from_millis(900),
            "closed after {took:?}, before the 1 s connect timeout"
        );
    });
}

#[test]
fn keepalive_timeout_closes_a_silent_client() {
    // MQTT-3.1.2-24: nothing received for 1.5 x keepalive (1 s) -> disconnect.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let start = Instant::now();
        let mut c = broker.connect_with(&ConnectBuilder::new("ka").keep_alive(1));
        c.expect_open_and_silent(Duration::from_secs(1).saturating_sub(start.elapsed()));
        let total = start.elapsed() + c.expect_closed_within(Duration::from_secs(2));
        assert!(
            total <= Duration::from_secs(3),
            "closed after {total:?}, expected about 1.5 s"
        );
    });
}

#[test]
fn pings_keep_a_keepalive_connection_open() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.connect_with(&ConnectBuilder::new("pinger").keep_alive(1));
        // 2.4 s of pings every 0.6 s: well past 1.5 x keepalive in total, never between pings.
        for _ in 0..4 {
            c.expect_open_and_silent(Duration::from_millis(600));
            c.ping();
        }
    });
}

#[test]
fn pingreq_gets_pingresp() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.connect("ping");
        for _ in 0..3 {
            c.send(&[0xc0, 0x00]);
            c.expect_bytes(&[0xd0, 0x00]);
        }
    });
}

#[test]
fn packets_sent_together_with_connect_are_processed() {
    // CONNECT and SUBSCRIBE in one write: the SUBSCRIBE must not be lost when the connection
    // moves to its home shard. CONNACK comes first (MQTT-3.2.0-1).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut p = broker.connect("pipe-pub");
        for round in 0..6u16 {
            let id = broker.id_on(&format!("pipe{round}"), round as usize % shards);
            let topic = format!("pipe/{round}");
            let mut c = broker.socket();
            let mut bytes = ConnectBuilder::new(&id).build();
            bytes.extend(subscribe(3, &[(&topic, 1)]));
            c.send(&bytes);
            c.expect_bytes(&[
                0x20, 0x02, 0x00, 0x00, // CONNACK
                0x90, 0x03, 0x00, 0x03, 0x01, // SUBACK id 3, QoS 1 granted
            ]);
            p.publish1(&topic, b"piped", false, round + 1);
            let (msg, _) = c.next_publish();
            assert_eq!(msg.topic.as_str(), topic);
            assert_eq!(&msg.payload[..], b"piped");
        }
    });
}

// ----- malformed packets and protocol violations ----------------------------------------------

/// Connects a client (homed on the last shard, so it usually moves), sends `bad` after the
/// CONNACK and expects the broker to close the connection without answering, while a healthy
/// publisher/subscriber pair connected before keeps working.
fn violation_closes(shards: usize, name: &str, bad: &[u8]) {
    violation_closes_on(&Broker::start(shards), name, bad);
}

fn violation_closes_on(broker: &Broker, name: &str, bad: &[u8]) {
    let shards = broker.shards;
    let mut healthy = Healthy::new(broker);
    healthy.check();
    let mut c = broker.connect(&broker.id_on("bad", shards - 1));
    c.send(bad);
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.expect_closed()));
    assert!(
        closed.is_ok(),
        "{name}: {bad:02x?} did not close the connection"
    );
    healthy.check();
    // A new client can still connect and work too.
    let mut after = broker.connect("after-bad");
    after.ping();
}

#[test]
fn subscribe_with_reserved_flags_0_closes() {
    // MQTT-3.8.1-1: SUBSCRIBE flags must be 0010.
    with_shards(|shards| {
        let mut bad = subscribe(1, &[("a/b", 0)]);
        bad[0] = 0x80;
        violation_closes(shards, "SUBSCRIBE flags 0", &bad);
    });
}

#[test]
fn unsubscribe_with_reserved_flags_0_closes() {
    // MQTT-3.10.1-1.
    with_shards(|shards| {
        let mut bad = unsubscribe(1, &["a/b"]);
        bad[0] = 0xa0;
        violation_closes(shards, "UNSUBSCRIBE flags 0", &bad);
    });
}

#[test]
fn pubrel_with_reserved_flags_0_closes() {
    // MQTT-3.6.1-1: PUBREL flags must be 0010.
    with_shards(|shards| violation_closes(shards, "PUBREL flags 0", &[0x60, 0x02, 0x00, 0x01]));
}

#[test]
fn publish_with_qos_3_closes() {
    // MQTT-3.3.1-4.
    with_shards(|shards| {
        // 36 = PUBLISH QoS 3; topic "a/b", packet id 1, payload "x".
        let bad = [0x36, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'x'];
        violation_closes(shards, "PUBLISH QoS 3", &bad);
    });
}

#[test]
fn packet_id_0_closes() {
    // MQTT-2.3.1-1: QoS 1/2 PUBLISH, SUBSCRIBE and UNSUBSCRIBE need a non-zero packet id.
    with_shards(|shards| {
        violation_closes(
            shards,
            "PUBLISH QoS 1 id 0",
            &[0x32, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00],
        );
        violation_closes(
            shards,
            "PUBLISH QoS 2 id 0",
            &[0x34, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x00],
        );
        violation_closes(shards, "SUBSCRIBE id 0", &subscribe(0, &[("a/b", 0)]));
        violation_closes(shards, "UNSUBSCRIBE id 0", &unsubscribe(0, &["a/b"]));
    });
}

#[test]
fn client_sending_server_packets_closes() {
    with_shards(|shards| {
        violation_closes(shards, "CONNACK", &[0x20, 0x02, 0x00, 0x00]);
        violation_closes(shards, "SUBACK", &[0x90, 0x03, 0x00, 0x01, 0x00]);
        violation_closes(shards, "UNSUBACK", &[0xb0, 0x02, 0x00, 0x01]);
        violation_closes(shards, "PINGRESP", &[0xd0, 0x00]);
    });
}

#[test]
fn reserved_packet_types_close() {
    // 2.2.1: types 0 and 15 are reserved.
    with_shards(|shards| {
        violation_closes(shards, "type 0", &[0x00, 0x00]);
        violation_closes(shards, "type 15", &[0xf0, 0x00]);
    });
}

#[test]
fn remaining_length_of_5_bytes_closes() {
    // 2.2.3: at most 4 bytes of Remaining Length.
    with_shards(|shards| {
        violation_closes(
            shards,
            "5-byte remaining length",
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
    });
}

#[test]
fn subscribe_with_invalid_requested_qos_closes() {
    // MQTT-3.8.3-4: requested QoS 3 (or reserved bits set) is malformed.
    with_shards(|shards| {
        violation_closes(shards, "requested QoS 3", &subscribe(1, &[("a/b", 3)]));
        violation_closes(shards, "reserved bits", &subscribe(1, &[("a/b", 0x81)]));
    });
}

#[test]
fn subscribe_without_filters_closes() {
    // MQTT-3.8.3-3 and MQTT-3.10.3-2.
    with_shards(|shards| {
        violation_closes(shards, "empty SUBSCRIBE", &[0x82, 0x02, 0x00, 0x01]);
        violation_closes(shards, "empty UNSUBSCRIBE", &[0xa2, 0x02, 0x00, 0x01]);
    });
}

#[test]
fn publish_to_invalid_topic_name_closes() {
    with_shards(|shards| {
        // MQTT-3.3.2-2: no wildcards in a topic name.
        violation_closes(
            shards,
            "wildcard +",
            &publish("a/+", b"x", 0, false, false, 0),
        );
        violation_closes(
            shards,
            "wildcard #",
            &publish("a/#", b"x", 1, false, false, 1),
        );
        // MQTT-4.7.3-1: a topic name is at least one character long.
        violation_closes(
            shards,
            "empty topic",
            &publish("", b"x", 0, false, false, 0),
        );
        // MQTT-1.5.3-1: topic names are well-formed UTF-8.
        violation_closes(
            shards,
            "invalid UTF-8",
            &[0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x'],
        );
    });
}

#[test]
fn packet_larger_than_max_packet_size_closes() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_packet_size: 128,
            ..test_config()
        });
        // 2 + 2 + 3 + 200 bytes: above the limit, although well-formed.
        let big = publish("a/b", &[b'x'; 200], 0, false, false, 0);
        violation_closes_on(&broker, "PUBLISH of 207 bytes", &big);
        // The limit itself is fine: 2 + 126 bytes.
        let mut c = broker.connect("at-limit");
        c.send(&publish("a/b", &[b'y'; 121], 0, false, false, 0));
        c.ping();
    });
}

// ----- SUBSCRIBE / SUBACK ---------------------------------------------------------------------

#[test]
fn an_invalid_filter_closes_without_a_suback_even_next_to_valid_ones() {
    // MQTT-4.7.1-2/-3: wildcards alone in their level, `#` last. A filter breaking that is a
    // malformed SUBSCRIBE (4.8): the connection closes, and none of its filters is applied.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("filters", "filters-pub");
        let mut c = broker.connect(&sub_id);
        c.send(&subscribe(10, &[("f/ok", 1), ("a/#/b", 1), ("g/#", 2)]));
        c.expect_closed();
        // The same client id connects again and subscribes normally.
        let mut c = broker.connect(&sub_id);
        c.subscribe(1, &[("f/#", 0)]);
        let mut p = broker.connect(&pub_id);
        p.publish0("f/ok", b"one", false);
        c.expect_bytes(&qos0_delivery("f/ok", b"one", false));
    });
}

// ----- QoS ------------------------------------------------------------------------------------

#[test]
fn delivery_qos_is_the_minimum_of_published_and_granted() {
    // MQTT-3.3.5 / MQTT-3.8.4-6: a subscriber never gets a higher QoS than it was granted.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (s1, s0) = broker.ids_apart("min-q1", "min-q0");
        let mut q1 = broker.connect(&s1);
        q1.subscribe(1, &[("min/t", 1)]);
        let mut q0 = broker.connect(&s0);
        q0.subscribe(1, &[("min/t", 0)]);
        let s2 = broker.id_on("min-q2", 0);
        let mut q2 = broker.connect(&s2);
        q2.subscribe(1, &[("min/t", 2)]);
        let mut p = broker.connect(&broker.id_on("min-pub", 1 % shards));

        p.publish2("min/t", b"published at 2", false, 1);
        let (m, frame) = q1.next_publish();
        assert_eq!(
            frame[0], 0x32,
            "QoS 2 publish to a QoS 1 subscriber: {frame:02x?}"
        );
        assert_eq!(&m.payload[..], b"published at 2");
        q1.ack(&m);
        q0.expect_bytes(&qos0_delivery("min/t", b"published at 2", false));
        let (m, frame) = q2.next_publish();
        assert_eq!(
            frame[0], 0x34,
            "QoS 2 publish to a QoS 2 subscriber: {frame:02x?}"
        );
        q2.ack(&m);
        q2.expect_bytes(&pubrel(m.packet_id));
        q2.send(&pubcomp(m.packet_id));

        // A QoS 0 publish stays QoS 0 for everybody.
        p.publish0("min/t", b"published at 0", false);
        for c in [&mut q0, &mut q1, &mut q2] {
            c.expect_bytes(&qos0_delivery("min/t", b"published at 0", false));
        }
    });
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // MQTT-3.3.5-1.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("overlap", "overlap-pub");
        let mut c = broker.connect(&sub_id);
        c.subscribe(1, &[("ov/+", 0), ("ov/#", 2)]);
        let mut p = broker.connect(&pub_id);
        p.publish2("ov/x", b"both match", false, 1);
        let (m, frame) = c.next_publish();
        assert_eq!(frame[0], 0x34, "one copy at QoS 2: {frame:02x?}");
        assert_eq!(&m.payload[..], b"both match");
        c.ack(&m);
        c.expect_bytes(&pubrel(m.packet_id));
        c.send(&pubcomp(m.packet_id));
        // A marker on the same topic: nothing may come between (topics are ordered, 4.6).
        p.publish0("ov/x", b"marker", false);
        assert_eq!(c.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        c.expect_nothing();

        // Same with two separate SUBSCRIBEs, the higher QoS first, published at QoS 1.
        c.subscribe(2, &[("ow/+/z", 2)]);
        c.subscribe(3, &[("ow/#", 0)]);
        p.publish1("ow/y/z", b"twice subscribed", false, 2);
        let (m, frame) = c.next_publish();
        assert_eq!(frame[0], 0x32, "one copy at QoS 1: {frame:02x?}");
        c.ack(&m);
        p.publish0("ow/y/z", b"marker", false);
        assert_eq!(c.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        c.expect_nothing();
    });
}

#[test]
fn qos2_inbound_duplicate_before_pubrel_is_delivered_once() {
    // MQTT-4.3.3-2: a QoS 2 message is delivered exactly once, whatever the DUP resends.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("eo-sub", "eo-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("eo/t", 1)]);
        let mut p = broker.connect(&pub_id);
        // PUBLISH QoS 2, remaining length 12, topic "eo/t", packet id 7, payload "once".
        p.send(&[
            0x34, 0x0c, 0x00, 0x04, b'e', b'o', b'/', b't', 0x00, 0x07, b'o', b'n', b'c', b'e',
        ]);
        p.expect_bytes(&[0x50, 0x02, 0x00, 0x07]); // PUBREC 7
                                                   // The same PUBLISH again, DUP set, before PUBREL.
        p.send(&[
            0x3c, 0x0c, 0x00, 0x04, b'e', b'o', b'/', b't', 0x00, 0x07, b'o', b'n', b'c', b'e',
        ]);
        p.expect_bytes(&[0x50, 0x02, 0x00, 0x07]); // PUBREC 7 again
        p.send(&[0x62, 0x02, 0x00, 0x07]); // PUBREL 7
        p.expect_bytes(&[0x70, 0x02, 0x00, 0x07]); // PUBCOMP 7
        p.publish0("eo/t", b"marker", false);
        assert_eq!(s.payloads_until(b"marker"), vec![b"once".to_vec()]);
        // After PUBREL, id 7 is free: a new message with it is a new message.
        p.publish2("eo/t", b"again", false, 7);
        p.publish0("eo/t", b"marker", false);
        assert_eq!(s.payloads_until(b"marker"), vec![b"again".to_vec()]);
        s.expect_nothing();
    });
}

#[test]
fn qos2_outbound_flow_to_a_raw_subscriber() {
    // 4.3.3: PUBLISH -> PUBREC -> PUBREL (62 02 id, MQTT-3.6.1-1) -> PUBCOMP.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("q2out-sub", "q2out-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("q2/out", 2)]);
        let mut p = broker.connect(&pub_id);
        for (i, payload) in [&b"first"[..], b"second"].into_iter().enumerate() {
            p.publish2("q2/out", payload, false, i as u16 + 1);
            let (m, frame) = s.next_publish();
            assert_ne!(m.packet_id, 0);
            // Exact bytes once the broker's packet id is known: QoS 2, no DUP, no RETAIN.
            assert_eq!(
                frame,
                publish("q2/out", payload, 2, false, false, m.packet_id)
            );
            s.send(&pubrec(m.packet_id));
            s.expect_bytes(&pubrel(m.packet_id));
            s.send(&pubcomp(m.packet_id));
        }
        // Completed messages are not sent again.
        s.expect_nothing();
    });
}

#[test]
fn qos1_outbound_acknowledged_messages_are_not_resent() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("q1out-sub", "q1out-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("q1/out", 1)]);
        let mut p = broker.connect(&pub_id);
        let mut ids = Vec::new();
        for i in 1..=3u16 {
            p.publish1("q1/out", format!("m{i}").as_bytes(), false, i);
            let (m, frame) = s.next_publish();
            assert_eq!(
                frame,
                publish(
                    "q1/out",
                    format!("m{i}").as_bytes(),
                    1,
                    false,
                    false,
                    m.packet_id
                )
            );
            s.send(&puback(m.packet_id));
            ids.push(m.packet_id);
        }
        // Distinct packet ids (2.3.1 requires it only while in flight; here they never were
        // reused within three messages either).
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 3, "packet ids {ids:?}");
        p.publish0("q1/out", b"marker", false);
        assert_eq!(s.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        s.expect_nothing();
    });
}

#[test]
fn inflight_window_holds_back_qos1_until_puback() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_inflight: 2,
            ..test_config()
        });
        let (sub_id, pub_id) = broker.ids_apart("window-sub", "window-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("win/t", 1)]);
        let mut p = broker.connect(&pub_id);
        for i in 1..=3u16 {
            p.publish1("win/t", format!("w{i}").as_bytes(), false, i);
        }
        let (first, _) = s.next_publish();
        let (second, _) = s.next_publish();
        assert_eq!(&first.payload[..], b"w1");
        assert_eq!(&second.payload[..], b"w2");
        // Two unacknowledged: the third must wait.
        s.expect_nothing();
        s.send(&puback(first.packet_id));
        let (third, frame) = s.next_publish();
        assert_eq!(&third.payload[..], b"w3");
        assert_eq!(frame[0], 0x32, "no DUP on a first send: {frame:02x?}");
        assert_ne!(third.packet_id, second.packet_id);
        s.expect_nothing();
        s.send(&puback(second.packet_id));
        s.send(&puback(third.packet_id));
        s.ping();
    });
}

// ----- retained messages ----------------------------------------------------------------------

#[test]
fn retained_message_reaches_a_new_subscriber_with_retain_1() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut p = broker.connect(&broker.id_on("ret-pub", 0));
        p.publish1("ret/a", b"kept", true, 1);
        // New subscriber at QoS 0: exact bytes, RETAIN set (MQTT-3.3.1-8).
        let mut s0 = broker.connect(&broker.id_on("ret-s0", 1 % shards));
        let frames = s0.subscribe_expecting(1, &[("ret/a", 0)], 1);
        assert_eq!(frames[0], qos0_delivery("ret/a", b"kept", true));
        // At QoS 1 through a wildcard: 33 = PUBLISH QoS 1 RETAIN.
        let mut s1 = broker.connect(&broker.id_on("ret-s1", 0));
        let frames = s1.subscribe_expecting(1, &[("ret/+", 1)], 1);
        assert_eq!(frames[0][0], 0x33, "{:02x?}", frames[0]);
        let m = match parse(&frames[0]) {
            Packet::Publish(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("ret/a", &b"kept"[..]));
        s1.ack(&m);
        // A newer retained message replaces it.
        p.publish1("ret/a", b"newer", true, 2);
        let mut s2 = broker.connect(&broker.id_on("ret-s2", 1 % shards));
        let frames = s2.subscribe_expecting(1, &[("ret/a", 0)], 1);
        assert_eq!(frames[0], qos0_delivery("ret/a", b"newer", true));
        s2.expect_nothing();
    });
}

#[test]
fn retained_publish_reaches_live_subscribers_with_retain_0() {
    // MQTT-3.3.1-9: RETAIN is cleared when forwarding to an existing subscription.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("live", "live-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("live/0", 0), ("live/1", 1)]);
        let mut p = broker.connect(&pub_id);
        p.publish1("live/0", b"now", true, 1);
        s.expect_bytes(&qos0_delivery("live/0", b"now", false));
        p.publish1("live/1", b"now", true, 2);
        let (m, frame) = s.next_publish();
        assert_eq!(
            frame,
            publish("live/1", b"now", 1, false, false, m.packet_id)
        );
        s.ack(&m);
    });
}

#[test]
fn retained_publish_with_empty_payload_clears_the_topic() {
    // MQTT-3.3.1-10/-11.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("clear", "clear-pub");
        let mut p = broker.connect(&pub_id);
        p.publish1("clr/a", b"kept", true, 1);
        let mut live = broker.connect(&sub_id);
        let frames = live.subscribe_expecting(1, &[("clr/a", 0)], 1);
        assert_eq!(frames[0], qos0_delivery("clr/a", b"kept", true));
        p.publish1("clr/a", b"", true, 2);
        // A current subscriber receives the empty message like any other.
        live.expect_bytes(&qos0_delivery("clr/a", b"", false));
        let mut fresh = broker.connect(&broker.id_on("clear-new", 0));
        fresh.subscribe(1, &[("clr/a", 0), ("clr/#", 1)]);
        fresh.expect_nothing();
    });
}

#[test]
fn resubscribing_resends_retained_messages() {
    // MQTT-3.8.4-3: a SUBSCRIBE that replaces a subscription re-sends the retained messages.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("resub", "resub-pub");
        let mut p = broker.connect(&pub_id);
        p.publish1("rs/a", b"kept", true, 1);
        let mut s = broker.connect(&sub_id);
        for packet_id in 1..=3 {
            let frames = s.subscribe_expecting(packet_id, &[("rs/a", 0)], 1);
            assert_eq!(frames[0], qos0_delivery("rs/a", b"kept", true));
        }
        s.expect_nothing();
    });
}

#[test]
fn retained_messages_across_shards() {
    // Publisher, new subscriber and the retained topic's owner shard in every combination.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for pub_shard in 0..shards {
            for sub_shard in 0..shards {
                let prefix = format!("rx{pub_shard}{sub_shard}");
                let mut topics = Vec::new();
                for owner in 0..shards {
                    for k in 0..3 {
                        topics.push(topic_on_shard(&format!("{prefix}/k{k}"), owner, shards));
                    }
                }
                let mut p = broker.connect(&broker.id_on(&format!("{prefix}-pub"), pub_shard));
                for (i, topic) in topics.iter().enumerate() {
                    p.publish1(topic, topic.as_bytes(), true, i as u16 + 1);
                }
                // Through one wildcard: every retained topic, each with RETAIN set.
                let mut s = broker.connect(&broker.id_on(&format!("{prefix}-sub"), sub_shard));
                let wildcard = format!("{prefix}/#");
                let mut got = s.subscribe_expecting(1, &[(&wildcard, 0)], topics.len());
                got.sort();
                let mut want: Vec<_> = topics
                    .iter()
                    .map(|t| qos0_delivery(t, t.as_bytes(), true))
                    .collect();
                want.sort();
                assert_eq!(got, want, "pub shard {pub_shard}, sub shard {sub_shard}");
                // Each exact topic from a second new subscriber on the same shard.
                let mut e = broker.connect(&broker.id_on(&format!("{prefix}-one"), sub_shard));
                for (i, topic) in topics.iter().enumerate() {
                    let got = e.subscribe_expecting(i as u16 + 1, &[(topic, 0)], 1);
                    assert_eq!(got[0], qos0_delivery(topic, topic.as_bytes(), true));
                }
                s.expect_nothing();
            }
        }
    });
}

// ----- topics starting with $ -----------------------------------------------------------------

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // MQTT-4.7.2-1: # and +/... do not match topics starting with $. (The broker's own
    // $SYS topics are off: this test publishes its own.)
    with_shards(|shards| {
        let broker = Broker::with_config(surgemq::broker::BrokerConfig {
            shards,
            sys_interval: std::time::Duration::ZERO,
            ..test_config()
        });
        let mut all = broker.connect(&broker.id_on("dollar-all", 0));
        all.subscribe(1, &[("#", 0)]);
        let mut plus = broker.connect(&broker.id_on("dollar-plus", 1 % shards));
        plus.subscribe(1, &[("+/x", 0)]);
        let mut sys = broker.connect(&broker.id_on("dollar-sys", 1 % shards));
        sys.subscribe(1, &[("$SYS/#", 0)]);
        let mut p = broker.connect(&broker.id_on("dollar-pub", 0));
        // A client may publish to a $ topic; only the $SYS/# subscriber gets it.
        p.publish1("$SYS/x", b"sys", false, 1);
        sys.expect_bytes(&qos0_delivery("$SYS/x", b"sys", false));
        p.publish1("m/x", b"marker", false, 2);
        assert_eq!(all.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        assert_eq!(plus.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        all.expect_nothing();
        plus.expect_nothing();
        sys.expect_nothing();

        // Retained $ messages neither.
        p.publish1("$SYS/r", b"kept", true, 3);
        let mut late_all = broker.connect(&broker.id_on("dollar-late-all", 0));
        late_all.subscribe(1, &[("#", 0), ("+/r", 0)]);
        late_all.expect_nothing();
        let mut late_sys = broker.connect(&broker.id_on("dollar-late-sys", 1 % shards));
        let got = late_sys.subscribe_expecting(1, &[("$SYS/+", 0)], 1);
        assert_eq!(got[0], qos0_delivery("$SYS/r", b"kept", true));
    });
}

// ----- will messages --------------------------------------------------------------------------

fn will_connect(id: &str, topic: &str, payload: &[u8], qos: u8, retain: bool) -> ConnectBuilder {
    ConnectBuilder::new(id).will(topic, payload, qos, retain)
}

#[test]
fn will_is_published_when_the_socket_drops() {
    // MQTT-3.1.2-8, with the will's QoS (MQTT-3.1.2-14 ff.).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut s = broker.connect(&broker.id_on("will-sub", 0));
        s.subscribe(1, &[("will/#", 2)]);
        for qos in 0..=2u8 {
            let id = broker.id_on(&format!("will-q{qos}"), 1 % shards);
            let topic = format!("will/q{qos}");
            let w = broker.connect_with(&will_connect(&id, &topic, b"gone", qos, false));
            w.drop_connection();
            let (m, frame) = s.next_publish();
            assert_eq!(frame[0], 0x30 | (qos << 1), "will QoS {qos}: {frame:02x?}");
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                (&topic[..], &b"gone"[..])
            );
            s.ack(&m);
            if m.qos == QoS::ExactlyOnce {
                s.expect_bytes(&pubrel(m.packet_id));
                s.send(&pubcomp(m.packet_id));
            }
        }
    });
}

#[test]
fn retained_will_is_kept_for_later_subscribers() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut live = broker.connect(&broker.id_on("rwill-live", 0));
        live.subscribe(1, &[("rwill/t", 1)]);
        let id = broker.id_on("rwill", 1 % shards);
        let w = broker.connect_with(&will_connect(&id, "rwill/t", b"bye", 1, true));
        w.drop_connection();
        // Live: RETAIN cleared (MQTT-3.3.1-9).
        let (m, frame) = live.next_publish();
        assert_eq!(
            frame,
            publish("rwill/t", b"bye", 1, false, false, m.packet_id)
        );
        live.ack(&m);
        // Later: RETAIN set.
        for shard in 0..shards {
            let mut late = broker.connect(&broker.id_on("rwill-late", shard));
            let got = late.subscribe_expecting(1, &[("rwill/t", 1)], 1);
            let m = match parse(&got[0]) {
                Packet::Publish(m) => m,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                got[0],
                publish("rwill/t", b"bye", 1, true, false, m.packet_id)
            );
            late.ack(&m);
        }
    });
}

#[test]
fn no_will_after_disconnect() {
    // MQTT-3.1.2-10 / MQTT-3.14.4-3: DISCONNECT discards the will.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut s = broker.connect(&broker.id_on("nowill-sub", 0));
        s.subscribe(1, &[("nowill/#", 1)]);
        let id = broker.id_on("nowill", 1 % shards);
        let mut polite = broker.connect_with(&will_connect(&id, "nowill/a", b"not this", 1, false));
        polite.send(&[0xe0, 0x00]); // DISCONNECT
        polite.drop_connection();
        // A control client without DISCONNECT on the same shard: its will does arrive.
        let id = broker.id_on("rude", 1 % shards);
        let rude = broker.connect_with(&will_connect(&id, "nowill/b", b"this one", 1, false));
        rude.drop_connection();
        let (m, _) = s.next_publish();
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("nowill/b", &b"this one"[..])
        );
        s.ack(&m);
        s.expect_nothing();
    });
}

#[test]
fn will_is_published_on_keepalive_timeout() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut s = broker.connect(&broker.id_on("kawill-sub", 0));
        s.subscribe(1, &[("kawill/t", 1)]);
        let id = broker.id_on("kawill", 1 % shards);
        let mut w = broker
            .connect_with(&will_connect(&id, "kawill/t", b"timed out", 1, false).keep_alive(1));
        let (m, _) = s.next_publish();
        assert_eq!(&m.payload[..], b"timed out");
        s.ack(&m);
        w.expect_closed();
    });
}

#[test]
fn will_is_published_on_protocol_error() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut s = broker.connect(&broker.id_on("errwill-sub", 0));
        s.subscribe(1, &[("errwill/t", 1)]);
        let id = broker.id_on("errwill", 1 % shards);
        let mut w = broker.connect_with(&will_connect(&id, "errwill/t", b"broken", 1, false));
        w.send(&[0xf0, 0x00, 0xde, 0xad]); // reserved packet type 15, then garbage
        let (m, _) = s.next_publish();
        assert_eq!(&m.payload[..], b"broken");
        s.ack(&m);
        w.expect_closed();
    });
}

#[test]
fn takeover_closes_the_old_connection_and_publishes_its_will() {
    // MQTT-3.1.4-2: the existing client is disconnected; it did not send DISCONNECT, so its
    // will is published.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut s = broker.connect(&broker.id_on("tkwill-sub", 0));
        s.subscribe(1, &[("tkwill/t", 1)]);
        for shard in 0..shards {
            let id = broker.id_on("tkwill", shard);
            let mut old = broker.connect_with(&will_connect(&id, "tkwill/t", b"old", 1, false));
            let mut new = broker.connect(&id);
            old.expect_closed();
            let (m, _) = s.next_publish();
            assert_eq!(&m.payload[..], b"old");
            s.ack(&m);
            new.ping();
            new.send(&[0xe0, 0x00]);
        }
        s.expect_nothing();
    });
}

// ----- sessions -------------------------------------------------------------------------------

#[test]
fn takeover_repeated_across_shards() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut p = broker.connect("tk-pub");
        for round in 0..10u16 {
            let id = broker.id_on(&format!("tk{round}"), round as usize % shards);
            let topic = format!("tk/{round}");
            let mut first = broker.connect(&id);
            first.subscribe(1, &[(&topic, 1)]);
            let mut second = broker.connect(&id);
            first.expect_closed();
            // Clean session: the new connection starts without the old subscription.
            second.subscribe(1, &[(&topic, 1)]);
            p.publish1(&topic, b"to the new one", false, round + 1);
            let (m, _) = second.next_publish();
            assert_eq!(&m.payload[..], b"to the new one");
            second.ack(&m);
            second.ping();
        }
    });
}

#[test]
fn persistent_session_keeps_subscriptions_and_qos1_messages() {
    // MQTT-3.1.2-4/-5, MQTT-3.2.2-2: session present; stored QoS 1 messages are delivered.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("persist", "persist-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("persist/t", 1)]);
        s.send(&[0xe0, 0x00]);
        s.drop_connection();
        let mut p = broker.connect(&pub_id);
        p.publish1("persist/t", b"while away", false, 1);
        let mut s = broker.socket();
        s.send(&persistent.build());
        s.expect_bytes(&[0x20, 0x02, 0x01, 0x00]); // session present
        let (m, frame) = s.next_publish();
        assert_eq!(&m.payload[..], b"while away");
        assert_eq!(frame[0] & 0xf6, 0x32, "QoS 1: {frame:02x?}");
        s.ack(&m);
        // The subscription survived too.
        p.publish1("persist/t", b"back", false, 2);
        let (m, _) = s.next_publish();
        assert_eq!(&m.payload[..], b"back");
        s.ack(&m);
        s.send(&[0xe0, 0x00]);
        s.drop_connection();
        // CleanSession = 1 discards it (MQTT-3.1.2-6): no session present, nothing delivered.
        let mut s = broker.connect(&sub_id);
        p.publish1("persist/t", b"nobody", false, 3);
        s.expect_nothing();
    });
}

#[test]
fn unacknowledged_qos1_is_resent_with_dup_on_resume() {
    // MQTT-4.4.0-1 and MQTT-3.3.1-1: re-sent with DUP = 1 and the original packet id.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("resend", "resend-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("resend/t", 1)]);
        let mut p = broker.connect(&pub_id);
        p.publish1("resend/t", b"unacked", false, 1);
        let (m, frame) = s.next_publish();
        assert_eq!(
            frame,
            publish("resend/t", b"unacked", 1, false, false, m.packet_id)
        );
        s.drop_connection();
        let mut s = broker.socket();
        s.send(&persistent.build());
        s.expect_bytes(&[0x20, 0x02, 0x01, 0x00]);
        s.expect_bytes(&publish(
            "resend/t",
            b"unacked",
            1,
            false,
            true,
            m.packet_id,
        ));
        s.send(&puback(m.packet_id));
        s.expect_nothing();
    });
}

// ----- UNSUBSCRIBE ----------------------------------------------------------------------------

#[test]
fn unsubscribe_stops_delivery() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("unsub", "unsub-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("u/1", 1), ("v/1", 1)]);
        let mut p = broker.connect(&pub_id);
        p.publish1("u/1", b"before", false, 1);
        let (m, _) = s.next_publish();
        assert_eq!(&m.payload[..], b"before");
        s.ack(&m);
        s.send(&unsubscribe(5, &["u/1"]));
        s.expect_bytes(&[0xb0, 0x02, 0x00, 0x05]); // UNSUBACK 5
        p.publish1("u/1", b"after", false, 2);
        p.publish1("v/1", b"marker", false, 3);
        assert_eq!(s.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        s.expect_nothing();
        // A filter that was never subscribed still gets its UNSUBACK (MQTT-3.10.4-5).
        s.send(&unsubscribe(6, &["never/subscribed"]));
        s.expect_bytes(&[0xb0, 0x02, 0x00, 0x06]);
    });
}
