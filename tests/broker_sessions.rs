//! End-to-end tests of persistent sessions (CleanSession = 0): what a session keeps while its
//! client is away, what is re-sent when the client comes back, the bounds of the offline
//! queue, CleanSession = 1 discarding a session, session expiry, and takeover.
//!
//! Exact bytes where the protocol decides them (CONNACK with Session Present, DUP, PUBREL);
//! the packet ids of outgoing messages are the broker's choice, so they are read from the
//! first transmission and must then be reused exactly.
//!
//! Every test runs with 1 and with 2 shards. With 2, the session lives on one shard and its
//! publisher on the other, and every test reconnects several times: the kernel spreads
//! accepted connections over the shards (SO_REUSEPORT), so some reconnects are accepted by the
//! shard that does not own the session and have to be moved to it. Sessions without a
//! connection are synchronised with a [`Witness`] on their shard, never with sleeps.

mod common;

use std::time::Duration;

use common::*;
use surgemq::broker::{BrokerConfig, MetricsSnapshot};
use surgemq::protocol::{Packet, Publish};

/// Reconnect rounds: with 2 shards, each reconnect has about even odds of being accepted by
/// the shard that does not own the session, so 8 rounds all but surely include such moves.
fn rounds(shards: usize) -> u16 {
    if shards == 1 {
        2
    } else {
        8
    }
}

fn total(metrics: &[MetricsSnapshot], counter: impl Fn(&MetricsSnapshot) -> u64) -> u64 {
    metrics.iter().map(counter).sum()
}

/// First byte (type, DUP, QoS, RETAIN) and payload of each PUBLISH: what order checks compare.
fn headers_and_payloads(publishes: &[(Publish, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
    publishes
        .iter()
        .map(|(p, frame)| (frame[0], p.payload.to_vec()))
        .collect()
}

fn payloads(publishes: &[(Publish, Vec<u8>)]) -> Vec<Vec<u8>> {
    publishes.iter().map(|(p, _)| p.payload.to_vec()).collect()
}

// ----- messages for an absent client --------------------------------------------------------

/// A persistent subscriber (QoS 2 subscription) is away while QoS 1, 0, 2 and 1 messages are
/// published; on every reconnect it gets Session Present 1 and the stored messages in order.
fn offline_messages(shards: usize, queue_qos0: bool) {
    let broker = Broker::with_config(BrokerConfig {
        shards,
        queue_qos0,
        ..test_config()
    });
    let (sub_id, pub_id) = broker.ids_apart("offline", "offline-pub");
    let persistent = ConnectBuilder::new(&sub_id).clean(false);
    // No stored session yet: Session Present 0 (MQTT-3.2.2-3).
    let mut s = broker.connect_with(&persistent);
    s.subscribe(1, &[("offline/t", 2)]);
    s.disconnect();
    let mut p = broker.connect(&pub_id);
    let mut witness = Witness::new(&broker, "offline", 0);
    let mut id = 0;
    for round in 0..rounds(shards) {
        let tag = |what: &str| format!("round {round}: {what}").into_bytes();
        id += 1;
        p.publish1("offline/t", &tag("qos 1 a"), false, id);
        p.publish0("offline/t", &tag("qos 0"), false);
        id += 1;
        p.publish2("offline/t", &tag("qos 2"), false, id);
        id += 1;
        p.publish1("offline/t", &tag("qos 1 b"), false, id);
        witness.settle(&mut p);

        // MQTT-3.1.2-4/-5, MQTT-3.2.2-2: the session is resumed and its messages delivered.
        let mut s = broker.resume(&persistent);
        id += 1;
        p.publish1("offline/t", b"live marker", false, id);
        let got = s.publishes_until(b"live marker");
        // First transmissions: DUP 0 (MQTT-3.3.1-1), QoS as published (granted 2), RETAIN 0.
        let mut expected = vec![(0x32, tag("qos 1 a"))];
        if queue_qos0 {
            expected.push((0x30, tag("qos 0")));
        }
        expected.push((0x34, tag("qos 2")));
        expected.push((0x32, tag("qos 1 b")));
        assert_eq!(
            headers_and_payloads(&got),
            expected,
            "round {round}, queue_qos0 = {queue_qos0}"
        );
        s.disconnect();
    }
    let metrics = broker.shutdown();
    let dropped = total(&metrics, |m| m.dropped_offline_qos0);
    let expected = if queue_qos0 { 0 } else { rounds(shards) as u64 };
    assert_eq!(
        dropped, expected,
        "QoS 0 messages dropped for the absent client"
    );
}

#[test]
fn offline_qos1_and_qos2_messages_wait_for_the_session_and_qos0_is_dropped() {
    with_shards(|shards| offline_messages(shards, false));
}

#[test]
fn queue_qos0_keeps_offline_qos0_messages_too() {
    with_shards(|shards| offline_messages(shards, true));
}

#[test]
fn offline_queue_keeps_the_first_max_queued_messages() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_queued_messages: 5,
            ..test_config()
        });
        let (sub_id, pub_id) = broker.ids_apart("bound", "bound-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("bound/t", 1)]);
        s.disconnect();
        let mut p = broker.connect(&pub_id);
        let mut witness = Witness::new(&broker, "bound", 0);
        for i in 0..10u16 {
            p.publish1("bound/t", format!("m{i}").as_bytes(), false, i + 1);
        }
        witness.settle(&mut p);
        let mut s = broker.resume(&persistent);
        // The queue was full after the first 5; newer messages were dropped, not older ones.
        for i in 0..5 {
            let (m, frame) = s.next_publish();
            assert_eq!(frame[0], 0x32, "{frame:02x?}");
            assert_eq!(m.payload, format!("m{i}").as_bytes());
            s.ack(&m);
        }
        p.publish1("bound/t", b"marker", false, 11);
        assert_eq!(
            payloads(&s.publishes_until(b"marker")),
            Vec::<Vec<u8>>::new()
        );
        s.disconnect();
        let metrics = broker.shutdown();
        assert_eq!(
            total(&metrics, |m| m.dropped_queue_full_qos12),
            5,
            "dropped_queue_full_qos12 summed over shards: {metrics:?}"
        );
    });
}

#[test]
fn offline_queue_byte_bound_keeps_the_messages_that_fit() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_queued_bytes: 100,
            ..test_config()
        });
        let (sub_id, pub_id) = broker.ids_apart("bytes", "bytes-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("bytes/t", 1)]);
        s.disconnect();
        let mut p = broker.connect(&pub_id);
        let mut witness = Witness::new(&broker, "bytes", 0);
        // 40-byte payloads: two fit in 100 bytes, a third would make 120.
        let payload = |i: u16| format!("{i:040}").into_bytes();
        for i in 0..6u16 {
            p.publish1("bytes/t", &payload(i), false, i + 1);
        }
        witness.settle(&mut p);
        let mut s = broker.resume(&persistent);
        for i in 0..2 {
            let (m, _) = s.next_publish();
            assert_eq!(m.payload, payload(i));
            s.ack(&m);
        }
        p.publish1("bytes/t", b"marker", false, 100);
        assert_eq!(
            payloads(&s.publishes_until(b"marker")),
            Vec::<Vec<u8>>::new()
        );
        s.disconnect();
        let metrics = broker.shutdown();
        assert_eq!(total(&metrics, |m| m.dropped_queue_full_qos12), 4);
    });
}

#[test]
fn unsubscribe_is_remembered_by_the_stored_session() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("unsub-kept", "unsub-kept-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("kept/a", 1), ("kept/b", 1)]);
        s.send(&unsubscribe(2, &["kept/a"]));
        s.expect_bytes(&[0xb0, 0x02, 0x00, 0x02]);
        s.disconnect();
        let mut p = broker.connect(&pub_id);
        let mut witness = Witness::new(&broker, "unsub-kept", 0);
        p.publish1("kept/a", b"unsubscribed", false, 1);
        p.publish1("kept/b", b"subscribed", false, 2);
        witness.settle(&mut p);
        let mut s = broker.resume(&persistent);
        p.publish1("kept/b", b"marker", false, 3);
        assert_eq!(
            payloads(&s.publishes_until(b"marker")),
            vec![b"subscribed".to_vec()]
        );
        // Still unsubscribed after the resume, too.
        p.publish1("kept/a", b"unsubscribed", false, 4);
        p.publish1("kept/b", b"marker", false, 5);
        assert_eq!(
            payloads(&s.publishes_until(b"marker")),
            Vec::<Vec<u8>>::new()
        );
    });
}

#[test]
fn resuming_does_not_send_retained_messages_again() {
    // Retained messages go to a subscriber when it subscribes (MQTT-3.3.1-6); a resumed
    // session has not subscribed again.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("ret-resume", "ret-resume-pub");
        let mut p = broker.connect(&pub_id);
        p.publish1("retres/t", b"retained", true, 1);
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        let frames = s.subscribe_expecting(1, &[("retres/t", 1)], 1);
        assert_eq!(frames[0][0], 0x33, "retained delivery: {:02x?}", frames[0]);
        let Packet::Publish(m) = parse(&frames[0]) else {
            unreachable!("a PUBLISH")
        };
        s.ack(&m);
        s.disconnect();
        let mut pid = 1;
        for _ in 0..rounds(shards) {
            let mut s = broker.resume(&persistent);
            pid += 1;
            p.publish1("retres/t", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new()
            );
            s.disconnect();
        }
    });
}

#[test]
fn mqtt31_client_resumes_its_session_without_a_session_present_flag() {
    // MQTT 3.1 (MQIsdp, level 3) has no Session Present flag: that CONNACK byte is reserved
    // and 0, yet the session is resumed.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("v31-persist", "v31-persist-pub");
        let persistent = ConnectBuilder::new(&sub_id)
            .protocol(b"MQIsdp", 3)
            .clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("v31p/t", 1)]);
        s.disconnect();
        let mut p = broker.connect(&pub_id);
        let mut witness = Witness::new(&broker, "v31-persist", 0);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let text = format!("round {round}: while away");
            pid += 1;
            p.publish1("v31p/t", text.as_bytes(), false, pid);
            witness.settle(&mut p);
            let mut s = broker.connect_with(&persistent); // 20 02 00 00
            pid += 1;
            p.publish1("v31p/t", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                vec![text.into_bytes()]
            );
            s.disconnect();
        }
    });
}

// ----- redelivery of unacknowledged messages -------------------------------------------------

#[test]
fn resent_and_stored_messages_respect_the_inflight_window() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            max_inflight: 2,
            ..test_config()
        });
        let (sub_id, pub_id) = broker.ids_apart("window", "window-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut s = broker.connect_with(&persistent);
        s.subscribe(1, &[("window/t", 1)]);
        s.disconnect();
        let mut p = broker.connect(&pub_id);
        let mut witness = Witness::new(&broker, "window", 0);
        for i in 0..5u16 {
            p.publish1("window/t", format!("m{i}").as_bytes(), false, i + 1);
        }
        witness.settle(&mut p);
        // Two of the five stored messages fill the window; the client goes away unacknowledged.
        let mut s = broker.resume(&persistent);
        let first: Vec<_> = (0..2).map(|_| s.next_publish()).collect();
        for (i, (m, frame)) in first.iter().enumerate() {
            let text = format!("m{i}");
            assert_eq!(
                *frame,
                publish("window/t", text.as_bytes(), 1, false, false, m.packet_id)
            );
        }
        s.expect_nothing();
        s.crash_and_wait();
        // Both are re-sent first, with DUP; the rest follow one per PUBACK.
        let mut s = broker.resume(&persistent);
        for (i, (m, _)) in first.iter().enumerate() {
            let text = format!("m{i}");
            s.expect_bytes(&publish(
                "window/t",
                text.as_bytes(),
                1,
                false,
                true,
                m.packet_id,
            ));
        }
        s.expect_nothing();
        for (i, (m, _)) in first.iter().enumerate() {
            s.send(&puback(m.packet_id));
            let (next, frame) = s.next_publish();
            let text = format!("m{}", i + 2);
            assert_eq!(
                frame,
                publish("window/t", text.as_bytes(), 1, false, false, next.packet_id)
            );
            s.ack(&next);
        }
        let (last, _) = s.next_publish();
        assert_eq!(last.payload, &b"m4"[..]);
        s.ack(&last);
        p.publish1("window/t", b"marker", false, 6);
        assert_eq!(
            payloads(&s.publishes_until(b"marker")),
            Vec::<Vec<u8>>::new()
        );
    });
}

/// A connected persistent subscriber of `topic` at `qos` (the first connection: no session yet)
/// with its publisher on the other shard and a witness on the subscriber's shard.
fn persistent_subscriber(
    broker: &Broker,
    name: &str,
    topic: &str,
    qos: u8,
) -> (ConnectBuilder, RawClient, RawClient, Witness) {
    let (sub_id, pub_id) = broker.ids_apart(name, &format!("{name}-pub"));
    let persistent = ConnectBuilder::new(&sub_id).clean(false);
    let mut s = broker.connect_with(&persistent);
    s.subscribe(1, &[(topic, qos)]);
    let p = broker.connect(&pub_id);
    let witness = Witness::new(broker, name, 0);
    (persistent, s, p, witness)
}

#[test]
fn unacknowledged_qos1_is_resent_with_dup_before_newer_messages() {
    // MQTT-4.4.0-1: unacknowledged PUBLISH packets are re-sent on resume, with DUP = 1
    // (MQTT-3.3.1-1) and their original packet id, before anything newer (4.6 ordering).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (persistent, mut s, mut p, mut witness) =
            persistent_subscriber(&broker, "redeliver", "redeliver/t", 1);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let first = format!("round {round}: never acknowledged");
            let second = format!("round {round}: published while away");
            pid += 1;
            p.publish1("redeliver/t", first.as_bytes(), false, pid);
            let (m, frame) = s.next_publish();
            assert_eq!(
                frame,
                publish(
                    "redeliver/t",
                    first.as_bytes(),
                    1,
                    false,
                    false,
                    m.packet_id
                )
            );
            // No PUBACK: the client goes away.
            s.crash_and_wait();
            pid += 1;
            p.publish1("redeliver/t", second.as_bytes(), false, pid);
            witness.settle(&mut p);

            s = broker.resume(&persistent);
            // 3a: PUBLISH, DUP 1, QoS 1; the same packet id.
            let resent = publish("redeliver/t", first.as_bytes(), 1, false, true, m.packet_id);
            assert_eq!(resent[0], 0x3a);
            s.expect_bytes(&resent);
            let (m2, frame2) = s.next_publish();
            assert_eq!(
                frame2,
                publish(
                    "redeliver/t",
                    second.as_bytes(),
                    1,
                    false,
                    false,
                    m2.packet_id
                ),
                "the newer message, sent for the first time"
            );
            assert_ne!(m2.packet_id, m.packet_id, "two messages in flight, one id");
            s.send(&puback(m.packet_id));
            s.send(&puback(m2.packet_id));
            // Acknowledged now: neither is sent again.
            pid += 1;
            p.publish1("redeliver/t", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new()
            );
        }
    });
}

#[test]
fn qos2_publish_without_pubrec_is_resent_with_dup() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (persistent, mut s, mut p, _witness) =
            persistent_subscriber(&broker, "q2dup", "q2dup/t", 2);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let text = format!("round {round}: exactly once");
            pid += 1;
            p.publish2("q2dup/t", text.as_bytes(), false, pid);
            let (m, frame) = s.next_publish();
            assert_eq!(
                frame,
                publish("q2dup/t", text.as_bytes(), 2, false, false, m.packet_id)
            );
            // No PUBREC: the client goes away.
            s.crash_and_wait();
            s = broker.resume(&persistent);
            // 3c: PUBLISH, DUP 1, QoS 2; the same packet id.
            s.expect_bytes(&publish(
                "q2dup/t",
                text.as_bytes(),
                2,
                false,
                true,
                m.packet_id,
            ));
            s.send(&pubrec(m.packet_id));
            s.expect_bytes(&pubrel(m.packet_id));
            s.send(&pubcomp(m.packet_id));
            pid += 1;
            p.publish1("q2dup/t", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new()
            );
        }
    });
}

#[test]
fn qos2_interrupted_after_pubrec_resumes_with_pubrel_not_publish() {
    // MQTT-4.4.0-1 with 4.3.3: once PUBREC was received, the sender re-sends PUBREL, and must
    // not send the PUBLISH again.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (persistent, mut s, mut p, _witness) =
            persistent_subscriber(&broker, "q2rel", "q2rel/t", 2);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let text = format!("round {round}: exactly once");
            pid += 1;
            p.publish2("q2rel/t", text.as_bytes(), false, pid);
            let (m, frame) = s.next_publish();
            assert_eq!(frame[0], 0x34, "{frame:02x?}");
            s.send(&pubrec(m.packet_id));
            s.expect_bytes(&pubrel(m.packet_id));
            // No PUBCOMP: the client goes away.
            s.crash_and_wait();
            s = broker.resume(&persistent);
            s.expect_bytes(&pubrel(m.packet_id)); // 62 02 id
            s.send(&pubcomp(m.packet_id));
            pid += 1;
            p.publish1("q2rel/t", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new(),
                "the message must not be delivered a second time"
            );
        }
    });
}

#[test]
fn qos2_inbound_publish_repeated_after_reconnect_is_forwarded_once() {
    // 4.3.3, method B: the receiver forwards on PUBLISH and, until PUBREL, answers a repeated
    // PUBLISH with the same id with PUBREC only. The session keeps that state across the
    // reconnect (MQTT-3.1.2-4: QoS 2 messages received but not completely acknowledged).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("in2-pub", "in2-sub");
        let publisher = ConnectBuilder::new(&pub_id).clean(false);
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("in2/t", 2)]);
        let mut p = broker.connect_with(&publisher);
        for round in 0..rounds(shards) {
            let pid = 100 + round;
            let text = format!("round {round}: once");
            p.send(&publish("in2/t", text.as_bytes(), 2, false, false, pid));
            p.expect_bytes(&pubrec(pid));
            // The PUBREC is lost with the connection; the client sends the PUBLISH again.
            p.crash_and_wait();
            p = broker.resume(&publisher);
            p.send(&publish("in2/t", text.as_bytes(), 2, false, true, pid));
            p.expect_bytes(&pubrec(pid));
            p.send(&pubrel(pid));
            p.expect_bytes(&pubcomp(pid));
            // Released: the id now carries a new message, which is forwarded.
            let again = format!("round {round}: new message, same id");
            p.publish2("in2/t", again.as_bytes(), false, pid);
            p.publish1("in2/t", b"marker", false, 1);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                vec![text.into_bytes(), again.into_bytes()],
                "round {round}"
            );
        }
    });
}

#[test]
fn qos2_inbound_pubrel_repeated_after_reconnect_gets_pubcomp() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("rel2-pub", "rel2-sub");
        let publisher = ConnectBuilder::new(&pub_id).clean(false);
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("rel2/t", 2)]);
        let mut p = broker.connect_with(&publisher);
        for round in 0..rounds(shards) {
            let pid = 200 + round;
            let text = format!("round {round}: once");
            p.send(&publish("rel2/t", text.as_bytes(), 2, false, false, pid));
            p.expect_bytes(&pubrec(pid));
            p.send(&pubrel(pid));
            // The PUBCOMP is lost with the connection; the client sends the PUBREL again.
            p.crash_and_wait();
            p = broker.resume(&publisher);
            p.send(&pubrel(pid));
            p.expect_bytes(&pubcomp(pid));
            p.publish1("rel2/t", b"marker", false, 1);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                vec![text.into_bytes()],
                "round {round}"
            );
        }
    });
}

// ----- discarding sessions --------------------------------------------------------------------

#[test]
fn clean_session_1_discards_the_stored_session() {
    // MQTT-3.1.2-6: CleanSession = 1 discards any previous session; MQTT-3.2.2-1: Session
    // Present 0. The old subscription must be gone for every later session too.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("discard", "discard-pub");
        let mut p = broker.connect(&pub_id);
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let topic = format!("discard/{round}");
            let mut s = broker.connect_with(&persistent);
            s.subscribe(1, &[(&topic, 1)]);
            s.disconnect();
            // The session really is stored...
            broker.resume(&persistent).disconnect();
            // ...until a clean connection discards it.
            broker
                .connect_with(&ConnectBuilder::new(&sub_id))
                .disconnect();
            pid += 1;
            p.publish1(&topic, b"for the discarded subscription", false, pid);
            let mut s = broker.connect_with(&persistent); // 20 02 00 00: nothing stored
            s.subscribe(2, &[("discard/marker", 1)]);
            pid += 1;
            p.publish1(&topic, b"after the new session started", false, pid);
            pid += 1;
            p.publish1("discard/marker", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new()
            );
            // Leave no session behind for the next round.
            s.disconnect();
            broker
                .connect_with(&ConnectBuilder::new(&sub_id))
                .disconnect();
        }
    });
}

#[test]
fn session_expiry_removes_sessions_disconnected_too_long() {
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            session_expiry: Some(Duration::from_secs(1)),
            ..test_config()
        });
        let (early_id, pub_id) = broker.ids_apart("expiry-early", "expiry-pub");
        let late_id = broker.id_on("expiry-late", shards - 1);
        let early = ConnectBuilder::new(&early_id).clean(false);
        let late = ConnectBuilder::new(&late_id).clean(false);
        for c in [&early, &late] {
            let mut s = broker.connect_with(c);
            s.subscribe(1, &[("expiry/t", 1)]);
            s.disconnect();
        }
        // Time is the feature here: sleeps, not reads.
        std::thread::sleep(Duration::from_millis(300));
        // Back well within the expiry: still there. Connected sessions do not expire.
        let mut back_early = broker.resume(&early);
        std::thread::sleep(Duration::from_millis(2200));
        // Away for 2.5 s with a 1 s expiry: a new session, without the old subscription.
        let mut back_late = broker.connect_with(&late); // 20 02 00 00
        back_late.subscribe(1, &[("expiry/marker", 1)]);
        let mut p = broker.connect(&pub_id);
        p.publish1("expiry/t", b"to the subscription", false, 1);
        p.publish1("expiry/marker", b"marker", false, 2);
        assert_eq!(
            payloads(&back_late.publishes_until(b"marker")),
            Vec::<Vec<u8>>::new(),
            "the expired session's subscription is gone"
        );
        let (m, _) = back_early.next_publish();
        assert_eq!(m.payload, &b"to the subscription"[..]);
        back_early.ack(&m);
        back_early.ping();
    });
}

// ----- takeover -------------------------------------------------------------------------------

#[test]
fn takeover_of_a_persistent_session_keeps_it() {
    // MQTT-3.1.4-2: the existing connection is closed; with CleanSession = 0 on both, the
    // session carries over: Session Present 1, its subscription, and its message in flight
    // (re-sent with DUP, MQTT-4.4.0-1).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("tko", "tko-pub");
        let persistent = ConnectBuilder::new(&sub_id).clean(false);
        let mut a = broker.connect_with(&persistent);
        a.subscribe(1, &[("tko/t", 1)]);
        let mut p = broker.connect(&pub_id);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let inflight = format!("round {round}: in flight");
            pid += 1;
            p.publish1("tko/t", inflight.as_bytes(), false, pid);
            let (m, _) = a.next_publish(); // not acknowledged
            let mut b = broker.resume(&persistent);
            a.expect_closed();
            b.expect_bytes(&publish(
                "tko/t",
                inflight.as_bytes(),
                1,
                false,
                true,
                m.packet_id,
            ));
            b.send(&puback(m.packet_id));
            let live = format!("round {round}: to the new connection");
            pid += 1;
            p.publish1("tko/t", live.as_bytes(), false, pid);
            let (m, frame) = b.next_publish();
            assert_eq!(
                frame,
                publish("tko/t", live.as_bytes(), 1, false, false, m.packet_id)
            );
            b.ack(&m);
            b.ping();
            a = b;
        }
    });
}

#[test]
fn persistent_connection_taking_over_a_clean_one_starts_a_new_session() {
    // The session of a CleanSession = 1 connection is not kept (MQTT-3.1.2-6), so a
    // CleanSession = 0 connection taking it over finds no session: Session Present 0 and no
    // subscription; the session it starts is kept from then on.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (id, pub_id) = broker.ids_apart("clean-to-persist", "clean-to-persist-pub");
        let mut p = broker.connect(&pub_id);
        let persistent = ConnectBuilder::new(&id).clean(false);
        let mut pid = 0;
        for round in 0..rounds(shards) {
            let mut clean = broker.connect(&id);
            clean.subscribe(1, &[("ctp/old", 1)]);
            let mut s = broker.connect_with(&persistent); // 20 02 00 00
            clean.expect_closed();
            s.subscribe(2, &[("ctp/new", 1)]);
            pid += 1;
            p.publish1("ctp/old", b"to the clean session", false, pid);
            pid += 1;
            p.publish1("ctp/new", b"marker", false, pid);
            assert_eq!(
                payloads(&s.publishes_until(b"marker")),
                Vec::<Vec<u8>>::new(),
                "round {round}"
            );
            s.disconnect();
            let s = broker.resume(&persistent);
            s.disconnect();
            // Discard it for the next round.
            broker.connect(&id).disconnect();
        }
    });
}
