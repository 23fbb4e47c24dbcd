//! End-to-end tests of the broker's MQTT 5 support over raw sockets, part 2: what a message
//! carries to its subscribers (topic aliases resolved, properties forwarded, Message Expiry,
//! Subscription Identifiers), the subscription options (No Local, Retain As Published, Retain
//! Handling), the client's Maximum Packet Size, and MQTT 5 and 3.1.1 clients side by side.
//! Exact bytes where MQTT 5.0 decides them (rule ids in the comments).
//!
//! Most tests run against 1 and 2 shards; with 2, publishers and subscribers are placed on
//! different shards on purpose.

mod common;

use std::time::Duration;

use common::*;

/// Subscribes with MQTT 5 options and collects the SUBACK granting each filter the QoS of its
/// options byte and exactly `publishes` PUBLISHes (retained messages), in whatever order they
/// come (3.8.4 lets them precede the SUBACK); then a PINGREQ round trip shows nothing else
/// came. Returns the PUBLISH frames sorted, unacknowledged.
#[track_caller]
fn subscribe_collecting(
    c: &mut RawClient,
    packet_id: u16,
    properties: &[u8],
    filters: &[(&str, u8)],
    publishes: usize,
) -> Vec<Vec<u8>> {
    c.send(&subscribe_v5(packet_id, properties, filters));
    let codes: Vec<u8> = filters.iter().map(|&(_, options)| options & 0x03).collect();
    let suback = suback_v5(packet_id, &codes);
    let mut suback_seen = false;
    let mut frames = Vec::new();
    while !suback_seen || frames.len() < publishes {
        let frame = c.next_frame();
        if frame[0] >> 4 == 9 {
            assert!(!suback_seen, "second SUBACK {frame:02x?}");
            assert_eq!(frame, suback, "SUBACK bytes");
            suback_seen = true;
        } else {
            assert_eq!(frame[0] >> 4, 3, "expected PUBLISH or SUBACK: {frame:02x?}");
            assert!(
                frames.len() < publishes,
                "more than {publishes} PUBLISHes: {frame:02x?}"
            );
            frames.push(frame);
        }
    }
    c.ping();
    frames.sort();
    frames
}

fn v5(id: &str) -> ConnectBuilder {
    ConnectBuilder::v5(id, &[])
}

// ----- topic aliases --------------------------------------------------------------------------

#[test]
fn topic_alias_is_resolved_for_v311_and_v5_subscribers() {
    // MQTT 5.0 3.3.2.3.4: a Topic Alias set by the client stands for its topic on this
    // connection only; subscribers get the topic itself, and no Topic Alias (the broker sets
    // none of its own).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let pub_id = broker.id_on("alias-pub", 0);
        let old_id = broker.id_on("alias-old", shards - 1);
        let new_id = broker.id_on("alias-new", shards - 1);
        let mut old = broker.connect(&old_id);
        old.subscribe(1, &[("a/#", 0)]);
        let mut new = broker.connect_v5(&v5(&new_id));
        new.subscribe_v5(1, &[("a/#", 0)]);
        let mut p = broker.connect_v5(&v5(&pub_id));
        let alias1 = [0x23, 0x00, 0x01]; // Topic Alias 1
        p.send(&publish_v5("a/b", b"sets", 0, false, 0, &alias1));
        p.send(&publish_v5("", b"uses", 0, false, 0, &alias1));
        // Setting it again to another topic replaces it.
        p.send(&publish_v5("a/c", b"resets", 0, false, 0, &alias1));
        p.send(&publish_v5("", b"uses again", 0, false, 0, &alias1));
        // The highest alias, 10.
        p.send(&publish_v5("a/d", b"ten", 0, false, 0, &[0x23, 0x00, 0x0a]));
        p.send(&publish_v5(
            "",
            b"ten again",
            0,
            false,
            0,
            &[0x23, 0x00, 0x0a],
        ));
        p.ping();
        let expected = [
            ("a/b", &b"sets"[..]),
            ("a/b", b"uses"),
            ("a/c", b"resets"),
            ("a/c", b"uses again"),
            ("a/d", b"ten"),
            ("a/d", b"ten again"),
        ];
        for (topic, payload) in expected {
            old.expect_bytes(&qos0_delivery(topic, payload, false));
            // Property length 0: no Topic Alias forwarded.
            new.expect_bytes(&publish_v5(topic, payload, 0, false, 0, &[]));
        }
    });
}

// ----- properties -----------------------------------------------------------------------------

/// Payload Format Indicator, Content Type, Response Topic, Correlation Data and User Properties
/// a=1, b=2, a=3 (a repeated name, and not sorted: their order must be kept).
fn message_properties() -> Vec<u8> {
    let mut p = vec![0x01, 0x01]; // Payload Format Indicator 1 (UTF-8)
    p.push(0x03); // Content Type "application/json"
    p.extend(field(b"application/json"));
    p.push(0x08); // Response Topic "reply/t"
    p.extend(field(b"reply/t"));
    p.push(0x09); // Correlation Data 00 ff 01
    p.extend(field(&[0x00, 0xff, 0x01]));
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        p.push(0x26); // User Property
        p.extend(field(k.as_bytes()));
        p.extend(field(v.as_bytes()));
    }
    p
}

#[test]
fn properties_are_forwarded_to_v5_subscribers_only() {
    // MQTT-3.3.2-17/-18/-20 of 5.0: the server forwards Payload Format Indicator, Content
    // Type, Response Topic, Correlation Data and every User Property in order. A 3.1.1
    // subscriber gets the plain 3.1.1 PUBLISH.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("props-pub", "props-sub");
        let mut old = broker.connect(&broker.id_on("props-old", shards - 1));
        old.subscribe(1, &[("props/t", 1)]);
        let mut new = broker.connect_v5(&v5(&sub_id));
        new.subscribe_v5(1, &[("props/t", 1)]);
        let mut p = broker.connect_v5(&v5(&pub_id));
        let props = message_properties();
        p.send(&publish_v5("props/t", b"{}", 1, false, 1, &props));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
        new.expect_bytes(&publish_v5("props/t", b"{}", 1, false, 1, &props));
        new.send(&puback(1));
        old.expect_bytes(&publish("props/t", b"{}", 1, false, false, 1));
        old.send(&puback(1));
        // QoS 0 too (3.1.1 subscribers of a QoS 0 message may share one encoded frame).
        p.send(&publish_v5("props/t", b"[]", 0, false, 0, &props));
        new.expect_bytes(&publish_v5("props/t", b"[]", 0, false, 0, &props));
        old.expect_bytes(&qos0_delivery("props/t", b"[]", false));
    });
}

#[test]
fn v311_publisher_reaches_v5_subscribers_with_an_empty_property_block() {
    // A message without properties: the MQTT 5 PUBLISH has property length 0 (5.0 3.3.2.3).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("mixed-pub", "mixed-sub");
        let mut s = broker.connect_v5(&v5(&sub_id));
        s.subscribe_v5(1, &[("mixed/t", 2)]);
        let mut p = broker.connect(&pub_id);
        p.publish1("mixed/t", b"from 3.1.1", false, 1);
        s.expect_bytes(&[
            0x32, 0x16, // PUBLISH QoS 1, remaining length 22
            0x00, 0x07, b'm', b'i', b'x', b'e', b'd', b'/', b't', // topic "mixed/t"
            0x00, 0x01, // packet id 1
            0x00, // property length 0
            b'f', b'r', b'o', b'm', b' ', b'3', // payload "from 3.1.1"
            b'.', b'1', b'.', b'1',
        ]);
        s.send(&puback(1));
        p.publish0("mixed/t", b"qos 0", false);
        s.expect_bytes(&publish_v5("mixed/t", b"qos 0", 0, false, 0, &[]));
    });
}

// ----- Message Expiry -------------------------------------------------------------------------

/// The Message Expiry Interval left in a PUBLISH to an MQTT 5 client whose property block
/// starts with it, asserted within `range`; the frame must then be exactly `expected(left)`.
#[track_caller]
fn expiry_left(
    frame: &[u8],
    range: std::ops::RangeInclusive<u32>,
    expected: impl Fn(u32) -> Vec<u8>,
) {
    let at = frame
        .windows(2)
        .position(|w| w == [0x05, 0x02])
        .expect("property length 5, then Message Expiry Interval (0x02)");
    let left = u32::from_be_bytes(frame[at + 2..at + 6].try_into().unwrap());
    assert!(range.contains(&left), "{left} s left, expected {range:?}");
    assert_eq!(frame, expected(left), "PUBLISH bytes");
}

#[test]
fn message_expiry_counts_down_and_expired_messages_are_not_sent() {
    // MQTT-3.3.2-5/-6 of 5.0: a message whose Message Expiry Interval has passed is not sent
    // (retained or queued); one that is sent carries what is left of the interval.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("exp-pub", "exp-sub");
        let short = [0x02, 0x00, 0x00, 0x00, 0x01]; // Message Expiry Interval 1
        let long = [0x02, 0x00, 0x00, 0x00, 0x3c]; // Message Expiry Interval 60
                                                   // A session that is away while two messages are queued for it.
        let away = ConnectBuilder::v5(&sub_id, &[0x11, 0x00, 0x00, 0x00, 0x3c]).clean(false);
        let mut s = broker.connect_v5(&away);
        s.subscribe_v5(1, &[("exp/q", 1)]);
        s.disconnect();
        let mut p = broker.connect_v5(&v5(&pub_id));
        p.send(&publish_v5("exp/r/short", b"short", 0, true, 0, &short));
        p.send(&publish_v5("exp/r/long", b"long", 0, true, 0, &long));
        p.send(&publish_v5("exp/q", b"short", 1, false, 1, &short));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
        p.send(&publish_v5("exp/q", b"long", 1, false, 2, &long));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x02]);
        // At once: both retained messages, with 1 s and 60 s left (rounded up).
        let mut early = broker.connect_v5(&v5(&broker.id_on("exp-early", 0)));
        let got = subscribe_collecting(&mut early, 1, &[], &[("exp/r/#", 0)], 2);
        assert_eq!(
            got,
            vec![
                publish_v5("exp/r/long", b"long", 0, true, 0, &long),
                publish_v5("exp/r/short", b"short", 0, true, 0, &short),
            ]
        );
        std::thread::sleep(Duration::from_millis(1500));
        // Later: the short ones are gone, the long ones have 59 s left.
        let mut late = broker.connect_v5(&v5(&broker.id_on("exp-late", shards - 1)));
        let got = subscribe_collecting(&mut late, 1, &[], &[("exp/r/#", 0)], 1);
        expiry_left(&got[0], 58..=59, |left| {
            let mut props = vec![0x02]; // Message Expiry Interval, what is left
            props.extend(left.to_be_bytes());
            publish_v5("exp/r/long", b"long", 0, true, 0, &props)
        });
        let mut s = broker.resume_v5(&away);
        let frame = s.next_frame();
        expiry_left(&frame, 58..=59, |left| {
            let mut props = vec![0x02]; // Message Expiry Interval, what is left
            props.extend(left.to_be_bytes());
            publish_v5("exp/q", b"long", 1, false, 1, &props)
        });
        s.send(&puback(1));
        s.ping();
        drop((s, p, early, late));
        let metrics = broker.shutdown();
        let expired: u64 = metrics.iter().map(|m| m.dropped_expired).sum();
        assert_eq!(expired, 1, "the queued message that expired is counted");
    });
}

// ----- Subscription Identifiers ---------------------------------------------------------------

#[test]
fn subscription_identifier_comes_with_every_matching_message() {
    // MQTT-3.3.4-3/-4/-5 of 5.0: a message is sent with the Subscription Identifier of the
    // subscription it matched; overlapping subscriptions with identifiers 7 and 9 give one
    // copy each, with its identifier and at its QoS.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("sid-pub", "sid-sub");
        let mut s = broker.connect_v5(&v5(&sub_id));
        s.subscribe_v5_with(1, &[0x0b, 0x07], &[("sid/#", 0)]); // Subscription Identifier 7
        s.subscribe_v5_with(2, &[0x0b, 0x09], &[("sid/t", 1)]); // Subscription Identifier 9
                                                                // 200 takes two bytes as a Variable Byte Integer.
        s.subscribe_v5_with(3, &[0x0b, 0xc8, 0x01], &[("big/t", 0)]);
        let mut p = broker.connect_v5(&v5(&pub_id));
        p.send(&publish_v5("sid/x", b"one", 0, false, 0, &[]));
        s.expect_bytes(&publish_v5("sid/x", b"one", 0, false, 0, &[0x0b, 0x07]));
        p.send(&publish_v5("big/t", b"big", 0, false, 0, &[]));
        s.expect_bytes(&publish_v5(
            "big/t",
            b"big",
            0,
            false,
            0,
            &[0x0b, 0xc8, 0x01],
        ));
        p.send(&publish_v5("sid/t", b"two", 1, false, 1, &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
        let mut got = vec![s.next_frame(), s.next_frame()];
        got.sort();
        assert_eq!(
            got,
            vec![
                publish_v5("sid/t", b"two", 0, false, 0, &[0x0b, 0x07]),
                publish_v5("sid/t", b"two", 1, false, 1, &[0x0b, 0x09]),
            ]
        );
        s.send(&puback(1));
        // A retained message sent at SUBSCRIBE carries the identifier too. (Its topic lives
        // on the publisher's shard: stored before the PINGRESP.)
        let ret = topic_on_shard("ret", 0, shards);
        p.send(&publish_v5(&ret, b"kept", 0, true, 0, &[]));
        p.ping();
        let got = subscribe_collecting(&mut s, 4, &[0x0b, 0x05], &[("ret/#", 0)], 1);
        assert_eq!(
            got,
            vec![publish_v5(&ret, b"kept", 0, true, 0, &[0x0b, 0x05])]
        );
        // Without an identifier, nothing is added: overlapping subscriptions give one copy.
        let mut plain = broker.connect_v5(&v5(&broker.id_on("sid-plain", shards - 1)));
        plain.subscribe_v5(1, &[("sid/#", 0), ("sid/t", 1)]);
        p.send(&publish_v5("sid/t", b"three", 1, false, 2, &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x02]);
        plain.expect_bytes(&publish_v5("sid/t", b"three", 1, false, 1, &[]));
        plain.send(&puback(1));
        plain.ping();
    });
}

// ----- subscription options -------------------------------------------------------------------

#[test]
fn no_local_keeps_a_clients_own_messages_from_it() {
    // MQTT-3.8.3-3 of 5.0: with No Local, the client's own PUBLISHes are not sent back to it.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (me_id, other_id) = broker.ids_apart("nl-me", "nl-other");
        let mut me = broker.connect_v5(&v5(&me_id));
        me.subscribe_v5(1, &[("nl/t", 0x05)]); // QoS 1, No Local
        let mut other = broker.connect_v5(&v5(&other_id));
        other.subscribe_v5(1, &[("nl/t", 0x01)]); // QoS 1
        me.send(&publish_v5("nl/t", b"mine", 1, false, 1, &[]));
        me.expect_bytes(&[0x40, 0x02, 0x00, 0x01]); // other matched
        other.expect_bytes(&publish_v5("nl/t", b"mine", 1, false, 1, &[]));
        other.send(&puback(1));
        // No Local is about a subscription's own client: me gets other's message, and other
        // (without No Local) gets its own back.
        other.send(&publish_v5("nl/t", b"theirs", 1, false, 1, &[]));
        let mut got = vec![other.next_frame(), other.next_frame()];
        got.sort();
        assert_eq!(
            got,
            vec![
                publish_v5("nl/t", b"theirs", 1, false, 2, &[]),
                vec![0x40, 0x02, 0x00, 0x01], // PUBACK 1, success
            ]
        );
        other.send(&puback(2));
        me.expect_bytes(&publish_v5("nl/t", b"theirs", 1, false, 1, &[]));
        me.send(&puback(1));
        // Its own subscription only: nobody else matched.
        other.send(&unsubscribe_v5(2, &["nl/t"]));
        other.expect_bytes(&[0xb0, 0x04, 0x00, 0x02, 0x00, 0x00]); // UNSUBACK, 0x00 Success
        me.send(&publish_v5("nl/t", b"alone", 1, false, 2, &[]));
        me.expect_bytes(&[0x40, 0x03, 0x00, 0x02, 0x10]); // 0x10 No matching subscribers
        me.expect_nothing();
    });
}

#[test]
fn retain_as_published_keeps_the_retain_flag_of_live_messages() {
    // MQTT-3.3.1-12/-13 of 5.0: a live forward has RETAIN 0 unless the subscription says
    // Retain As Published.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("rap-pub", "rap-sub");
        let mut rap = broker.connect_v5(&v5(&sub_id));
        rap.subscribe_v5(1, &[("rap/t", 0x08)]); // QoS 0, Retain As Published
        let mut plain = broker.connect_v5(&v5(&broker.id_on("rap-plain", 0)));
        plain.subscribe_v5(1, &[("rap/t", 0x00)]); // QoS 0
        let mut p = broker.connect_v5(&v5(&pub_id));
        p.send(&publish_v5("rap/t", b"retained", 0, true, 0, &[]));
        p.send(&publish_v5("rap/t", b"not retained", 0, false, 0, &[]));
        rap.expect_bytes(&publish_v5("rap/t", b"retained", 0, true, 0, &[]));
        rap.expect_bytes(&publish_v5("rap/t", b"not retained", 0, false, 0, &[]));
        plain.expect_bytes(&publish_v5("rap/t", b"retained", 0, false, 0, &[]));
        plain.expect_bytes(&publish_v5("rap/t", b"not retained", 0, false, 0, &[]));
    });
}

#[test]
fn retain_handling_decides_the_retained_messages_sent_at_subscribe() {
    // MQTT 5.0 3.8.3.1: Retain Handling 0 sends the retained messages at every SUBSCRIBE,
    // 1 only if the subscription is new (MQTT-3.3.1-10), 2 never (MQTT-3.3.1-11).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("rh-pub", "rh-sub");
        let mut p = broker.connect_v5(&v5(&pub_id));
        // On the publisher's shard: stored before the PINGRESP.
        let topic = topic_on_shard("rh", 0, shards);
        p.send(&publish_v5(&topic, b"kept", 0, true, 0, &[]));
        p.ping();
        let retained = publish_v5(&topic, b"kept", 0, true, 0, &[]);
        let mut s = broker.connect_v5(&v5(&sub_id));
        // Handling 0 (options 00): at every SUBSCRIBE, new or not.
        for packet_id in [1, 2] {
            let got = subscribe_collecting(&mut s, packet_id, &[], &[(topic.as_str(), 0x00)], 1);
            assert_eq!(got, vec![retained.clone()], "Retain Handling 0");
        }
        // Handling 1 (options 10): not for the existing subscription, but for a new one.
        let got = subscribe_collecting(&mut s, 3, &[], &[(topic.as_str(), 0x10)], 0);
        assert_eq!(got, Vec::<Vec<u8>>::new(), "Retain Handling 1, existing");
        let got = subscribe_collecting(&mut s, 4, &[], &[("rh/#", 0x10)], 1);
        assert_eq!(got, vec![retained.clone()], "Retain Handling 1, new");
        // Handling 2 (options 20): never.
        let got = subscribe_collecting(&mut s, 5, &[], &[("rh/+", 0x20)], 0);
        assert_eq!(got, Vec::<Vec<u8>>::new(), "Retain Handling 2, new");
        let got = subscribe_collecting(&mut s, 6, &[], &[(topic.as_str(), 0x20)], 0);
        assert_eq!(got, Vec::<Vec<u8>>::new(), "Retain Handling 2, existing");
        // Live messages are not affected: one copy (three overlapping subscriptions).
        p.send(&publish_v5(topic.as_str(), b"live", 0, false, 0, &[]));
        s.expect_bytes(&publish_v5(topic.as_str(), b"live", 0, false, 0, &[]));
        s.expect_nothing();
    });
}

// ----- the client's Maximum Packet Size -------------------------------------------------------

#[test]
fn messages_above_the_clients_maximum_packet_size_are_dropped() {
    // MQTT-3.1.2-24/-25 of 5.0: the server does not send a packet larger than the client's
    // Maximum Packet Size (30 here); it drops the message (counted in dropped_too_large).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("mps-pub", "mps-sub");
        let max30 = [0x27, 0x00, 0x00, 0x00, 0x1e]; // Maximum Packet Size 30
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &max30));
        s.subscribe_v5(1, &[("mps/t", 1)]);
        let mut p = broker.connect_v5(&v5(&pub_id));
        // PUBLISH QoS 0 to "mps/t" is 10 bytes + payload: 50 bytes (QoS 1: 52).
        p.send(&publish_v5("mps/t", &[b'L'; 40], 0, false, 0, &[]));
        p.send(&publish_v5("mps/t", &[b'L'; 40], 1, false, 1, &[]));
        // Acknowledged as delivered: it matched a subscription.
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
        p.send(&publish_v5("mps/t", b"small", 1, false, 2, &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x02]);
        // The next thing the subscriber sees is the small one (17 bytes), as packet id 1.
        s.expect_bytes(&publish_v5("mps/t", b"small", 1, false, 1, &[]));
        s.send(&puback(1));
        s.ping();
        drop((s, p));
        let metrics = broker.shutdown();
        let too_large: u64 = metrics.iter().map(|m| m.dropped_too_large).sum();
        assert_eq!(too_large, 2, "both large messages counted");
    });
}

#[test]
fn a_message_of_exactly_the_clients_maximum_packet_size_is_delivered() {
    // MQTT-3.1.2-24 of 5.0 forbids packets *exceeding* the Maximum Packet Size: one of
    // exactly 30 bytes must be sent.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("mps30-pub", "mps30-sub");
        let max30 = [0x27, 0x00, 0x00, 0x00, 0x1e]; // Maximum Packet Size 30
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &max30));
        s.subscribe_v5(1, &[("mps/t", 0)]);
        let mut p = broker.connect_v5(&v5(&pub_id));
        // 10 bytes + 20 bytes of payload = 30, then 29, 28 and 27: all within the maximum.
        let sizes = [30, 29, 28, 27];
        for size in sizes {
            p.send(&publish_v5(
                "mps/t",
                &vec![b'x'; size - 10],
                0,
                false,
                0,
                &[],
            ));
        }
        p.send(&publish_v5("mps/t", b"end", 0, false, 0, &[]));
        let mut got = Vec::new();
        loop {
            let frame = s.next_frame();
            if frame == publish_v5("mps/t", b"end", 0, false, 0, &[]) {
                break;
            }
            got.push(frame.len());
        }
        assert_eq!(
            got, sizes,
            "sizes of the PUBLISHes delivered before the marker"
        );
    });
}

#[test]
fn v5_puback_says_quota_exceeded_when_a_subscribers_queue_is_full() {
    // MQTT 5.0 3.4.2.1: 0x97 Quota exceeded. An offline persistent subscriber with room for
    // two messages: the third QoS 1 message is dropped for it, and the publisher hears so.
    let broker = Broker::with_config(surgemq::broker::BrokerConfig {
        max_queued_messages: 2,
        ..test_config()
    });
    let mut sub = broker.connect_with(&ConnectBuilder::new("quota-sub").clean(false));
    sub.subscribe(1, &[("quota/t", 1)]);
    sub.disconnect();
    let mut p = broker.connect_v5(&ConnectBuilder::v5("quota-pub", &[]));
    for id in 1..=2u8 {
        p.send(&publish_v5("quota/t", b"x", 1, false, u16::from(id), &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, id]);
    }
    p.send(&publish_v5("quota/t", b"x", 1, false, 3, &[]));
    p.expect_bytes(&[0x40, 0x03, 0x00, 0x03, 0x97]);
}
