//! Raw-socket tests of two rules about what a client owes and what it leaves behind:
//! acknowledgements of the wrong kind for a packet id in flight close the connection (the
//! message stays owed to a persistent session), and a session takeover publishes the old
//! connection's will only when the session does not simply continue (MQTT-3.1.4-2,
//! MQTT-3.1.2-8). Each test runs with 1 and 2 shards.

mod common;

use std::time::Duration;

use common::*;

/// `32 09 00 04 "wk/t" 00 01 "x"` with the given first byte (QoS and DUP bits).
fn delivery(first: u8) -> Vec<u8> {
    vec![
        first, 0x09, 0x00, 0x04, b'w', b'k', b'/', b't', 0x00, 0x01, b'x',
    ]
}

/// A persistent subscriber of "wk/t" at `qos` that has received (not acknowledged) one
/// message, `delivery(first)`, id 1. Returns the subscriber and its CONNECT.
fn one_in_flight(broker: &Broker, qos: u8, first: u8) -> (RawClient, ConnectBuilder) {
    let (sub_id, pub_id) = broker.ids_apart("wk-sub", "wk-pub");
    let connect = ConnectBuilder::new(&sub_id).clean(false);
    let mut sub = broker.connect_with(&connect);
    sub.subscribe(1, &[("wk/t", qos)]);
    let mut publisher = broker.connect(&pub_id);
    match qos {
        1 => publisher.publish1("wk/t", b"x", false, 1),
        _ => publisher.publish2("wk/t", b"x", false, 1),
    }
    sub.expect_bytes(&delivery(first));
    (sub, connect)
}

#[test]
fn pubrec_or_pubcomp_for_a_qos1_delivery_closes_and_the_message_stays_owed() {
    for wrong in [pubrec(1), pubcomp(1)] {
        with_shards(|shards| {
            let broker = Broker::start(shards);
            let (mut sub, connect) = one_in_flight(&broker, 1, 0x32);
            sub.send(&wrong);
            sub.expect_closed_within(Duration::from_secs(1));
            // Resumed: the PUBLISH again, DUP set (0x3a), same id; now acknowledged properly.
            let mut sub = broker.resume(&connect);
            sub.expect_bytes(&delivery(0x3a));
            sub.send(&puback(1));
            sub.ping();
        });
    }
}

#[test]
fn puback_for_a_qos2_delivery_closes_and_the_message_stays_owed() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (mut sub, connect) = one_in_flight(&broker, 2, 0x34);
        sub.send(&puback(1));
        sub.expect_closed_within(Duration::from_secs(1));
        let mut sub = broker.resume(&connect);
        sub.expect_bytes(&delivery(0x3c)); // PUBLISH QoS 2, DUP
        sub.send(&pubrec(1));
        sub.expect_bytes(&pubrel(1));
        sub.send(&pubcomp(1));
        sub.ping();
    });
}

#[test]
fn puback_or_pubrec_where_pubcomp_is_due_closes_and_the_pubrel_stays_owed() {
    for wrong in [puback(1), pubrec(1)] {
        with_shards(|shards| {
            let broker = Broker::start(shards);
            let (mut sub, connect) = one_in_flight(&broker, 2, 0x34);
            sub.send(&pubrec(1));
            sub.expect_bytes(&pubrel(1));
            sub.send(&wrong);
            sub.expect_closed_within(Duration::from_secs(1));
            // Resumed: the PUBREL again (MQTT-4.4.0-1), then PUBCOMP completes it.
            let mut sub = broker.resume(&connect);
            sub.expect_bytes(&pubrel(1));
            sub.send(&pubcomp(1));
            sub.ping();
        });
    }
}

#[test]
fn acknowledgements_for_ids_not_in_flight_are_harmless() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (mut sub, _) = one_in_flight(&broker, 1, 0x32);
        // Id 77 is not in flight: ignored; a PUBREC still gets its PUBREL so the client can
        // finish its side.
        sub.send(&puback(77));
        sub.send(&pubcomp(77));
        sub.send(&pubrec(77));
        sub.expect_bytes(&pubrel(77));
        sub.ping();
        // And the message in flight is still acknowledged normally.
        sub.send(&puback(1));
        sub.ping();
        // A duplicate PUBACK for it, now completed, is harmless too.
        sub.send(&puback(1));
        sub.ping();
    });
}

// ----- the will on takeover -----------------------------------------------------------------

/// Connects `id` with a will on "wk/will" (CleanSession `old_clean`), takes it over with a new
/// connection (CleanSession `new_clean`), and returns whether the will was published.
fn will_published_on_takeover(broker: &Broker, old_clean: bool, new_clean: bool) -> bool {
    let id = broker.id_on(&format!("wk-will-{old_clean}-{new_clean}"), 0);
    let mut witness = broker.connect(&broker.id_on("wk-witness", 1 % broker.shards));
    witness.subscribe(1, &[("wk/will", 0)]);
    let mut old = broker.connect_with(&ConnectBuilder::new(&id).clean(old_clean).will(
        "wk/will",
        b"old is gone",
        0,
        false,
    ));
    old.ping();
    // Session Present is 1 only when a stored session continues (both persistent).
    let connack = if !old_clean && !new_clean {
        [0x20, 0x02, 0x01, 0x00]
    } else {
        [0x20, 0x02, 0x00, 0x00]
    };
    let mut new = broker.connect_expecting(&ConnectBuilder::new(&id).clean(new_clean), &connack);
    old.expect_closed_within(Duration::from_secs(1));
    new.ping();
    let published = witness
        .next_frame_within(Duration::from_millis(500))
        .map(|frame| {
            assert_eq!(frame, qos0_delivery("wk/will", b"old is gone", false));
        })
        .is_some();
    if !new_clean {
        // Leave no persistent session behind for the next case.
        drop(new);
        let mut clean = broker.connect_with(&ConnectBuilder::new(&id).clean(true));
        clean.ping();
    }
    published
}

#[test]
fn a_takeover_that_continues_a_persistent_session_publishes_no_will() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        assert!(
            !will_published_on_takeover(&broker, false, false),
            "both persistent: the session continues, the will is not published"
        );
    });
}

#[test]
fn a_takeover_with_a_clean_session_on_either_side_publishes_the_will() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for (old_clean, new_clean) in [(false, true), (true, false), (true, true)] {
            assert!(
                will_published_on_takeover(&broker, old_clean, new_clean),
                "old clean {old_clean}, new clean {new_clean}: the will must be published"
            );
        }
    });
}
