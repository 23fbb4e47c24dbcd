//! The strict answers the broker gives by default where the standard lets a server choose, or
//! where it was lenient before: control characters in strings (MQTT-1.5.3-2), zero-length and
//! ill-formed topic filters (MQTT-4.7.3-1, MQTT-4.7.1-2/-3), DUP on a QoS 0 PUBLISH
//! (MQTT-3.3.1-2), empty client ids by protocol level (MQTT-3.1.3-6/-8), and topics as deep as
//! the packet allows (65,535 `/`, with no `--max-topic-levels` by default).
//!
//! Every case sends the exact violating bytes and expects the exact answer, or the close of that
//! connection alone, within a second, with 1 and 2 shards. The per-shard counters returned at
//! shutdown must name the rule each closed connection broke.

mod common;

use std::time::Duration;

use common::*;
use surgemq::broker::MetricsSnapshot;

/// How long the broker has to answer or to close.
const WITHIN: Duration = Duration::from_secs(1);

// ----- helpers ------------------------------------------------------------------------------

/// Expects exactly one packet, `expected`, within [`WITHIN`].
#[track_caller]
fn expect_within(c: &mut RawClient, expected: &[u8]) {
    let got = c.next_frame_within(WITHIN).unwrap_or_else(|| {
        panic!(
            "nothing within {WITHIN:?}; expected {:02x?}",
            head(expected)
        )
    });
    assert!(
        got == expected,
        "expected {:02x?}, got {:02x?} ({} bytes, {} expected)",
        head(expected),
        head(&got),
        got.len(),
        expected.len()
    );
}

/// The start of a frame, for messages about frames of 64 KiB.
fn head(frame: &[u8]) -> &[u8] {
    &frame[..frame.len().min(16)]
}

/// `bad` as the first bytes of a connection: closed within [`WITHIN`], nothing sent back.
#[track_caller]
fn first_packet_closes(broker: &Broker, bad: &[u8]) {
    let mut c = broker.socket();
    c.send(bad);
    c.expect_closed_within(WITHIN);
}

/// `bad` after an accepted CONNECT: closed within [`WITHIN`], nothing sent back.
#[track_caller]
fn closes_after_connect(broker: &Broker, id: &str, bad: &[u8]) {
    let mut c = broker.connect(id);
    c.send(bad);
    c.expect_closed_within(WITHIN);
}

/// Asserts that exactly `n` protocol errors named a rule containing `needle`.
#[track_caller]
fn assert_rule(metrics: &[MetricsSnapshot], needle: &str, n: u64) {
    assert_eq!(
        protocol_errors_matching(metrics, needle),
        n,
        "protocol errors naming {needle:?}; all: {:#?}",
        protocol_errors_by_rule(metrics)
    );
}

#[track_caller]
fn assert_protocol_errors(metrics: &[MetricsSnapshot], n: u64) {
    let total: u64 = metrics.iter().map(|m| m.protocol_errors).sum();
    assert_eq!(
        total,
        n,
        "protocol errors in total; by rule: {:#?}",
        protocol_errors_by_rule(metrics)
    );
}

/// SUBSCRIBE id 1 with raw filters, each at QoS 0.
fn raw_subscribe(filters: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for f in filters {
        body.extend(field(f));
        body.push(0);
    }
    frame(0x82, &body)
}

/// UNSUBSCRIBE id 1 with raw filters.
fn raw_unsubscribe(filters: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for f in filters {
        body.extend(field(f));
    }
    frame(0xa2, &body)
}

/// QoS 0 PUBLISH with a raw topic.
fn raw_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

// ----- MQTT-1.5.3-2: control characters ----------------------------------------------------

/// U+0001..U+001F and U+007F..U+009F as UTF-8: the ends of both ranges and a few between.
const CONTROLS: [&[u8]; 9] = [
    b"\x01",
    b"\t",
    b"\n",
    b"\x1b",
    b"\x1f",
    b"\x7f",
    b"\xc2\x80",
    b"\xc2\x85", // NEXT LINE
    b"\xc2\x9f",
];

#[test]
fn a_control_character_in_any_string_closes() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut watcher = broker.connect(&broker.id_on("ctl-watch", 0));
        watcher.subscribe(1, &[("#", 0)]);
        let mut cases = 0;
        for (i, ctl) in CONTROLS.iter().enumerate() {
            let mut s = b"ctl/".to_vec();
            s.extend_from_slice(ctl);
            s.push(b'x');
            // CONNECT: client id, will topic, user name. Closed without a CONNACK.
            first_packet_closes(&broker, &raw_connect(&s, None, None, None));
            first_packet_closes(&broker, &raw_connect(b"ctl-will", Some(&s), None, None));
            first_packet_closes(&broker, &raw_connect(b"ctl-user", None, Some(&s), None));
            // After CONNECT: topic name, topic filter, UNSUBSCRIBE filter.
            let id = broker.id_on(&format!("ctl-{i}"), shards - 1);
            closes_after_connect(&broker, &id, &raw_publish(&s, b"never"));
            closes_after_connect(&broker, &id, &raw_subscribe(&[b"ok", &s]));
            closes_after_connect(&broker, &id, &raw_unsubscribe(&[&s]));
            cases += 6;
        }
        // A password is binary data (3.1.3.5), not a string: control bytes are fine there.
        let mut ok = broker.socket();
        ok.send(&raw_connect(
            b"ctl-password",
            None,
            Some(b"u"),
            Some(b"\x01\t\n\x7f\xc2\x85"),
        ));
        expect_within(&mut ok, &[0x20, 0x02, 0x00, 0x00]);
        // The neighbours of the ranges are ordinary characters: U+0020, U+007E, U+00A0, U+00B0.
        let topic = "ctl/ ~\u{a0}\u{b0}";
        ok.send(&publish(topic, b"fine", 0, false, false, 0));
        expect_within(&mut watcher, &qos0_delivery(topic, b"fine", false));
        // Nothing else reached the watcher: no will, no message on a refused topic.
        watcher.expect_nothing();
        let metrics = broker.shutdown();
        assert_rule(&metrics, "control character", cases);
        assert_rule(&metrics, "MQTT-1.5.3-2", cases);
        assert_protocol_errors(&metrics, cases);
    });
}

// ----- MQTT-4.7.3-1 and MQTT-4.7.1-2/-3: topic filters ----------------------------------------

#[test]
fn a_zero_length_filter_in_subscribe_or_unsubscribe_closes() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let id = broker.id_on("empty-filter", shards - 1);
        #[rustfmt::skip]
        let bad: [&[u8]; 4] = [
            // SUBSCRIBE id 1: "" QoS 0
            &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            // SUBSCRIBE id 1: "ok" QoS 1, "" QoS 0; no SUBACK for "ok" either
            &[0x82, 0x0a, 0x00, 0x01, 0x00, 0x02, b'o', b'k', 0x01, 0x00, 0x00, 0x00],
            // UNSUBSCRIBE id 1: ""
            &[0xa2, 0x04, 0x00, 0x01, 0x00, 0x00],
            // UNSUBSCRIBE id 1: "a/#", ""
            &[0xa2, 0x09, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00],
        ];
        for b in bad {
            closes_after_connect(&broker, &id, b);
        }
        // The smallest valid filters are one character long.
        let mut c = broker.connect(&id);
        c.send(&[0x82, 0x06, 0x00, 0x02, 0x00, 0x01, b'/', 0x01]);
        expect_within(&mut c, &[0x90, 0x03, 0x00, 0x02, 0x01]);
        c.send(&[0xa2, 0x05, 0x00, 0x03, 0x00, 0x01, b'/']);
        expect_within(&mut c, &[0xb0, 0x02, 0x00, 0x03]);
        let metrics = broker.shutdown();
        assert_rule(&metrics, "empty topic filter (MQTT-4.7.3-1)", 4);
        assert_protocol_errors(&metrics, 4);
    });
}

#[test]
fn a_misplaced_wildcard_in_subscribe_or_unsubscribe_closes() {
    // A malformed filter is a protocol violation (4.8): the connection closes. SUBACK 0x80 is
    // left for what the broker refuses (ACL, level limit), see hostile_input.rs / broker_auth.rs.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let id = broker.id_on("wildcards", shards - 1);
        let multi = ["a/#/b", "#/", "a#", "x/y#", "##", "+#"];
        let single = ["a+", "a/+b", "++", "sport+/"];
        for f in multi.iter().chain(&single) {
            closes_after_connect(&broker, &id, &subscribe(1, &[("ok/1", 1), (f, 0)]));
            closes_after_connect(&broker, &id, &unsubscribe(1, &[f]));
        }
        // Valid wildcards are granted.
        let mut c = broker.connect(&id);
        c.subscribe(2, &[("+", 0), ("#", 1), ("+/+/#", 2), ("/+", 0)]);
        c.send(&unsubscribe(3, &["+", "#"]));
        expect_within(&mut c, &[0xb0, 0x02, 0x00, 0x03]);
        let metrics = broker.shutdown();
        assert_rule(&metrics, "MQTT-4.7.1-2", 2 * multi.len() as u64);
        assert_rule(&metrics, "MQTT-4.7.1-3", 2 * single.len() as u64);
        assert_protocol_errors(&metrics, 2 * (multi.len() + single.len()) as u64);
    });
}

// ----- MQTT-3.3.1-2: DUP on QoS 0 -----------------------------------------------------------

#[test]
fn a_qos0_publish_with_dup_closes() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("dup-sub", "dup-pub");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("dup/#", 0)]);
        // 38: PUBLISH DUP QoS 0; 39: the same, retained. Topic "dup/t", payload "x".
        let bad = [0x38, 0x08, 0x00, 0x05, b'd', b'u', b'p', b'/', b't', b'x'];
        closes_after_connect(&broker, &pub_id, &bad);
        let mut retained = bad;
        retained[0] = 0x39;
        closes_after_connect(&broker, &pub_id, &retained);
        // DUP is fine at QoS 1 and 2 (a resend): 3a = DUP QoS 1, 3c = DUP QoS 2, id 1.
        let mut p = broker.connect(&pub_id);
        p.send(&publish("dup/t", b"one", 1, false, true, 1));
        expect_within(&mut p, &puback(1));
        p.send(&publish("dup/t", b"two", 2, false, true, 2));
        expect_within(&mut p, &pubrec(2));
        p.send(&pubrel(2));
        expect_within(&mut p, &pubcomp(2));
        // The subscriber saw those two, and the refused ones neither live nor retained.
        expect_within(&mut s, &qos0_delivery("dup/t", b"one", false));
        expect_within(&mut s, &qos0_delivery("dup/t", b"two", false));
        let mut late = broker.connect(&broker.id_on("dup-late", 0));
        late.subscribe(1, &[("dup/#", 0)]);
        late.expect_nothing();
        let metrics = broker.shutdown();
        assert_rule(&metrics, "MQTT-3.3.1-2", 2);
        assert_protocol_errors(&metrics, 2);
    });
}

// ----- MQTT-3.1.3-6/-8: empty client ids ----------------------------------------------------

#[test]
fn empty_client_ids_by_protocol_level() {
    // MQTT 3.1.1: assigned with CleanSession = 1 (MQTT-3.1.3-6), CONNACK 2 with CleanSession
    // = 0 (MQTT-3.1.3-8). MQTT 3.1 requires 1 to 23 characters and answers CONNACK 2 for an
    // empty id whatever CleanSession says; Mosquitto does the same ("v3.1 CONNECT with zero
    // length clientid"), so 3.1 clients get no assigned id.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for (name, level) in [(&b"MQIsdp"[..], 3), (b"MQTT", 4)] {
            for clean in [true, false] {
                let connect = ConnectBuilder::new("")
                    .protocol(name, level)
                    .clean(clean)
                    .build();
                let mut c = broker.socket();
                c.send(&connect);
                if level == 4 && clean {
                    expect_within(&mut c, &[0x20, 0x02, 0x00, 0x00]);
                    c.send(&[0xc0, 0x00]);
                    expect_within(&mut c, &[0xd0, 0x00]);
                } else {
                    expect_within(&mut c, &[0x20, 0x02, 0x00, 0x02]);
                    c.expect_closed_within(WITHIN);
                }
            }
        }
    });
}

// ----- topic depth: 65,535 `/` (no --max-topic-levels by default) --------------------------

#[test]
fn the_deepest_filter_is_granted_delivers_retains_and_unsubscribes() {
    // 65,535 '/' is a valid topic name and filter of 65,536 empty levels: every walk over its
    // levels (validation, both tries, retained lookup, removal) must be a loop, or it overflows
    // an executor's stack and takes the whole broker down.
    let deepest = "/".repeat(65_535);
    let deepest_multi = "+/".repeat(32_767) + "#";
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("deep-sub", "deep-pub");
        let mut s = broker.connect(&sub_id);
        // SUBSCRIBE id 1: the deepest filter at QoS 2, then "deep/marker" at QoS 0. Remaining
        // length 2 + (2 + 65,535 + 1) + (2 + 11 + 1) = 65,554: 92 80 04.
        let packet = subscribe(1, &[(&deepest, 2), ("deep/marker", 0)]);
        assert_eq!(
            &packet[..8],
            &[0x82, 0x92, 0x80, 0x04, 0x00, 0x01, 0xff, 0xff]
        );
        s.send(&packet);
        expect_within(&mut s, &[0x90, 0x04, 0x00, 0x01, 0x02, 0x00]);

        // A QoS 0 PUBLISH to the deepest topic reaches the subscriber, byte for byte.
        let mut p = broker.connect(&pub_id);
        let live = publish(&deepest, b"deep", 0, false, false, 0);
        assert_eq!(&live[..6], &[0x30, 0x85, 0x80, 0x04, 0xff, 0xff]);
        p.send(&live);
        expect_within(&mut s, &live);

        // Retained at QoS 1: PUBACK, the live copy (QoS 1, RETAIN clear), then a new subscriber
        // of the deepest filter and one of a 32,768-level wildcard filter get it retained.
        p.send(&publish(&deepest, b"kept", 1, true, false, 7));
        expect_within(&mut p, &puback(7));
        let (m, frame) = s.next_publish();
        assert_eq!(frame[0], 0x32, "QoS 1, not retained: {:02x?}", head(&frame));
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            (&deepest[..], &b"kept"[..])
        );
        s.ack(&m);
        let mut late = broker.connect(&broker.id_on("deep-late", shards - 1));
        let got = late.subscribe_expecting(1, &[(&deepest, 0), (&deepest_multi, 0)], 2);
        let retained = qos0_delivery(&deepest, b"kept", true);
        assert!(got.iter().all(|f| f == &retained), "retained copies differ");

        // UNSUBSCRIBE of the deepest filter: UNSUBACK, and nothing more arrives on it.
        s.send(&unsubscribe(2, &[&deepest]));
        expect_within(&mut s, &[0xb0, 0x02, 0x00, 0x02]);
        p.publish0(&deepest, b"after", false);
        p.publish0("deep/marker", b"marker", false);
        assert_eq!(s.payloads_until(b"marker"), Vec::<Vec<u8>>::new());

        // An empty retained message clears the deep topic.
        p.publish1(&deepest, b"", true, 8);
        let mut later = broker.connect(&broker.id_on("deep-later", 0));
        later.subscribe(1, &[(&deepest, 1)]);
        later.expect_nothing();
        let metrics = broker.shutdown();
        assert_protocol_errors(&metrics, 0);
    });
}

#[test]
fn a_will_on_the_deepest_topic_is_published() {
    let deepest = "/".repeat(65_535);
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, will_id) = broker.ids_apart("deepwill-sub", "deepwill");
        let mut s = broker.connect(&sub_id);
        s.subscribe(1, &[("#", 0)]);
        let c = broker.connect_with(&ConnectBuilder::new(&will_id).will(&deepest, b"w", 0, false));
        c.drop_connection();
        expect_within(&mut s, &qos0_delivery(&deepest, b"w", false));
        let metrics = broker.shutdown();
        assert_protocol_errors(&metrics, 0);
    });
}
