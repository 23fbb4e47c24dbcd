//! Hostile input against a live broker, the packet-rule half: every checklist rule that
//! `broker_protocol.rs` does not already cover, sent as the exact violating bytes. Each case
//! asserts the broker's answer and then that a healthy QoS 1 publisher/subscriber pair on the
//! same broker still works, with nothing lost. The per-shard counters returned at shutdown must
//! name the rule each closed connection broke. The transport half (segmentation, huge
//! lengths, silence, deep topics, sockets that end badly) is `hostile_transport.rs`; the
//! harness is in `hostile/`.

mod common;
mod hostile;

use common::*;
use hostile::*;
use surgemq::broker::BrokerConfig;

// ----- fixed header flags (MQTT-2.2.2-1/-2) -------------------------------------------------

#[test]
fn reserved_flags_of_every_other_packet_type_close() {
    // broker_protocol.rs covers SUBSCRIBE/UNSUBSCRIBE/PUBREL with flags 0000. Here: every other
    // way to get the reserved nibble wrong, including on packets that have no flags at all.
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let mut errors = 0;
        // CONNECT with flags, as the first packet: closed without CONNACK.
        for first in [0x11u8, 0x12, 0x18, 0x1f] {
            let mut bad = ConnectBuilder::new("flags").build();
            bad[0] = first;
            scene.first_packet_closes("CONNECT flags", &bad);
            errors += 1;
        }
        let after: [(&str, Vec<u8>); 11] = [
            ("PUBACK 0001", vec![0x41, 0x02, 0x00, 0x01]),
            ("PUBREC 0010", vec![0x52, 0x02, 0x00, 0x01]),
            ("PUBCOMP 1000", vec![0x78, 0x02, 0x00, 0x01]),
            ("PUBREL 0011", vec![0x63, 0x02, 0x00, 0x01]),
            ("PUBREL 1010", vec![0x6a, 0x02, 0x00, 0x01]),
            ("SUBSCRIBE 0011", {
                let mut b = subscribe(1, &[("a/b", 0)]);
                b[0] = 0x83;
                b
            }),
            ("SUBSCRIBE 1010", {
                let mut b = subscribe(1, &[("a/b", 0)]);
                b[0] = 0x8a;
                b
            }),
            ("UNSUBSCRIBE 0110", {
                let mut b = unsubscribe(1, &["a/b"]);
                b[0] = 0xa6;
                b
            }),
            ("PINGREQ 0001", vec![0xc1, 0x00]),
            ("PINGREQ 1000", vec![0xc8, 0x00]),
            ("CONNECT 0001 (second CONNECT)", {
                let mut b = ConnectBuilder::new("again").build();
                b[0] = 0x11;
                b
            }),
        ];
        for (name, bad) in after {
            scene.closes_after_connect(name, &bad);
            errors += 1;
        }
        // A DISCONNECT with flags is not a DISCONNECT: the connection ends by a protocol error,
        // so the will is published (MQTT-3.1.2-8), unlike after a real DISCONNECT.
        for first in [0xe1u8, 0xe2] {
            let id = scene.next_id("flagged-disconnect");
            let mut c = scene.broker.connect_with(&ConnectBuilder::new(&id).will(
                "watch/dc",
                &[first],
                1,
                false,
            ));
            c.send(&[first, 0x00]);
            c.expect_closed();
            let (m, _) = scene.watcher.next_publish();
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                ("watch/dc", &[first][..]),
                "will of a connection closed by DISCONNECT with flags {first:#04x}"
            );
            scene.watcher.ack(&m);
            scene.healthy.check();
            errors += 1;
        }
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-2.2.2-2", errors);
        assert_protocol_errors(&metrics, errors);
    });
}

// ----- CONNECT flags and fields ---------------------------------------------------------------

#[test]
fn will_flag_rules_close_without_connack() {
    // MQTT-3.1.2-11/-13/-15: will QoS and will retain must be 0 without the will flag.
    // MQTT-3.1.2-14: will QoS 3 is invalid. Each is answered by closing, without CONNACK.
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        for (name, set) in [
            ("will QoS 1 without will flag", 0x08u8),
            ("will QoS 2 without will flag", 0x10),
            ("will QoS 3 without will flag", 0x18),
            ("will retain without will flag", 0x20),
            ("will retain and QoS 1 without will flag", 0x28),
        ] {
            let mut bad = ConnectBuilder::new("willflags").build();
            assert_eq!(bad[CONNECT_FLAGS_AT], 0x02, "flags byte located");
            bad[CONNECT_FLAGS_AT] |= set;
            scene.first_packet_closes(name, &bad);
        }
        for retain in [false, true] {
            let mut bad = ConnectBuilder::new("willqos3")
                .will("watch/q3", b"never", 0, retain)
                .build();
            bad[CONNECT_FLAGS_AT] |= 0x18;
            scene.first_packet_closes("will QoS 3", &bad);
        }
        // The will topic is a topic name: not empty (MQTT-4.7.3-1), no wildcards
        // (MQTT-3.3.2-2).
        for topic in ["", "watch/+", "watch/#", "#"] {
            let bad = ConnectBuilder::new("willtopic")
                .will(topic, b"never", 1, false)
                .build();
            scene.first_packet_closes(&format!("will topic {topic:?}"), &bad);
        }
        // None of these clients got far enough to have a will published.
        scene.watcher.expect_nothing();
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-3.1.2-11", 5);
        assert_rule(&metrics, "MQTT-3.1.2-14", 2);
        assert_rule(&metrics, "MQTT-4.7.3-1", 1);
        assert_rule(&metrics, "MQTT-3.3.2-2", 3);
        assert_protocol_errors(&metrics, 11);
    });
}

#[test]
fn password_without_username_closes_on_3_1_1_only() {
    // MQTT-3.1.2-22 (3.1.1): the password flag needs the user name flag. MQTT 3.1 had no such
    // rule, and the broker accepts a password alone there (it allows anonymous clients).
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let bad = ConnectBuilder::new("pw-only").password(b"secret").build();
        assert_eq!(bad[CONNECT_FLAGS_AT], 0x42);
        scene.first_packet_closes("password without user name", &bad);
        let id = scene.next_id("pw-only-31");
        let mut ok = scene.broker.connect_with(
            &ConnectBuilder::new(&id)
                .protocol(b"MQIsdp", 3)
                .password(b"x"),
        );
        ok.ping();
        // The password is binary data (3.1.3.5), not a string: bytes that would be invalid
        // UTF-8 or U+0000 in a string are fine there.
        let id = scene.next_id("pw-binary");
        let mut ok = scene.broker.connect_with(
            &ConnectBuilder::new(&id)
                .username("u")
                .password(&[0xff, 0x00, 0xed, 0xa0, 0x80, 0xc0, 0xaf]),
        );
        ok.ping();
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-3.1.2-22", 1);
        assert_protocol_errors(&metrics, 1);
    });
}

// ----- strings (MQTT-1.5.3-1/-2) ------------------------------------------------------------

/// Byte sequences that are not well-formed UTF-8 (MQTT-1.5.3-1): encoded surrogates (which
/// UTF-8 forbids), overlong forms, a truncated sequence, bytes that never occur in UTF-8.
const BAD_UTF8: [&[u8]; 6] = [
    b"a\xed\xa0\x80",        // U+D800
    b"a\xed\xbf\xbfz",       // U+DFFF
    b"\xc0\xaf",             // overlong '/'
    b"\xe0\x80\xaf",         // overlong '/', 3 bytes
    b"a\xe2\x82",            // truncated euro sign
    b"\xf8\x88\x80\x80\x80", // 5-byte form
];

/// Every string field a client sends, with `bad` in it: as the client id, will topic and user
/// name of a CONNECT (first packet), and as the topic of a PUBLISH and the filter of a
/// SUBSCRIBE and an UNSUBSCRIBE (after CONNECT). Returns how many cases were sent.
fn bad_string_everywhere(scene: &mut Scene, what: &str, bad: &[u8]) -> u64 {
    let mut prefixed = b"watch/".to_vec();
    prefixed.extend_from_slice(bad);
    scene.first_packet_closes(
        &format!("{what} client id"),
        &raw_connect(bad, None, None, None),
    );
    scene.first_packet_closes(
        &format!("{what} will topic"),
        &raw_connect(b"willutf", Some(&prefixed), None, None),
    );
    scene.first_packet_closes(
        &format!("{what} user name"),
        &raw_connect(b"userutf", None, Some(bad), None),
    );
    scene.closes_after_connect(&format!("{what} topic"), &raw_publish(&prefixed, b"x"));
    scene.closes_after_connect(&format!("{what} filter"), &raw_subscribe(&prefixed));
    scene.closes_after_connect(&format!("{what} unsubscribe"), &raw_unsubscribe(&prefixed));
    6
}

#[test]
fn ill_formed_utf8_in_any_string_closes() {
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let mut cases = 0;
        for bad in BAD_UTF8 {
            cases += bad_string_everywhere(&mut scene, &format!("{bad:02x?}"), bad);
        }
        // Nothing reached the watcher: no will, no message on a mangled topic.
        scene.watcher.expect_nothing();
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-1.5.3-1", cases);
        assert_protocol_errors(&metrics, cases);
    });
}

#[test]
fn null_character_in_any_string_closes() {
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let mut cases = 0;
        for bad in [&b"a\0b"[..], b"\0", b"ab\0"] {
            cases += bad_string_everywhere(&mut scene, "U+0000", bad);
        }
        scene.watcher.expect_nothing();
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-1.5.3-2", cases);
        assert_protocol_errors(&metrics, cases);
    });
}

#[test]
fn payloads_are_binary_and_pass_unchanged() {
    // Payloads (PUBLISH, will message) are not strings: any bytes go, byte for byte.
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let odd: &[u8] = b"\0\xed\xa0\x80\xff\xfe\xc0\xaf\0";
        let id = scene.next_id("binary");
        let mut c = scene.broker.connect_with(&ConnectBuilder::new(&id).will(
            "watch/bin-will",
            odd,
            0,
            false,
        ));
        c.publish1("watch/bin", odd, false, 1);
        let (m, _) = scene.watcher.next_publish();
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("watch/bin", odd));
        scene.watcher.ack(&m);
        c.drop_connection();
        let (m, _) = scene.watcher.next_publish();
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("watch/bin-will", odd));
        scene.watcher.ack(&m);
        let metrics = scene.finish();
        assert_protocol_errors(&metrics, 0);
    });
}

// ----- topic filters -----------------------------------------------------------------------

#[test]
fn too_deep_filters_get_0x80_and_odd_unsubscribes_are_answered() {
    // With --max-topic-levels 128, deeper filters are refused with 0x80 for that filter alone,
    // next to granted ones. (Empty and ill-formed filters close the connection instead: see
    // broker_strict.rs.)
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::new(BrokerConfig {
            shards,
            max_topic_levels: 128,
            ..test_config()
        });
        let id = scene.next_id("filters");
        let mut c = scene.broker.connect(&id);
        let at_limit = deep_topic("d", 128);
        let beyond = deep_topic("d", 129);
        c.send(&subscribe(7, &[("ok/x", 1), (&beyond, 0), (&at_limit, 2)]));
        c.expect_bytes(&[0x90, 0x05, 0x00, 0x07, 0x01, 0x80, 0x02]);
        // The granted ones work, the 128-level one included.
        let mut p = scene.broker.connect(&scene.broker.id_on("filters-pub", 0));
        p.publish1(&at_limit, b"deep", false, 1);
        let (m, frame) = c.next_publish();
        assert_eq!(frame[0], 0x32, "QoS 1 delivery: {frame:02x?}");
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            (&at_limit[..], &b"deep"[..])
        );
        c.ack(&m);
        // UNSUBSCRIBE of filters that could never have been subscribed: a malformed one
        // closes (MQTT-4.7.3-1, MQTT-4.7.1-2/-3), a valid one is answered with UNSUBACK.
        let malformed = ["", "#/a", "a+", "a/#/b"];
        let valid: Vec<String> = ["/", "//", "+", "#", "+/#"]
            .iter()
            .map(|s| s.to_string())
            .chain([beyond.clone(), deep_topic("+", 5000)])
            .collect();
        for filter in malformed {
            scene.closes_after_connect(filter, &raw_unsubscribe(filter.as_bytes()));
        }
        for filter in &valid {
            let id = scene.next_id("odd-unsub");
            let mut u = scene.broker.connect(&id);
            u.send(&raw_unsubscribe(filter.as_bytes()));
            u.expect_bytes(&[0xb0, 0x02, 0x00, 0x01]);
            u.ping();
            scene.healthy.check();
        }
        // The subscriptions of `c` are untouched by all that.
        p.publish1("ok/x", b"still", false, 2);
        let (m, _) = c.next_publish();
        assert_eq!(&m.payload[..], b"still");
        c.ack(&m);
        let metrics = scene.finish();
        assert_rule(&metrics, "topic filter", malformed.len() as u64);
        assert_protocol_errors(&metrics, malformed.len() as u64);
    });
}

// ----- packets a client must never send --------------------------------------------------------

#[test]
fn server_packets_and_reserved_types_are_closed_and_counted_by_rule() {
    // broker_protocol.rs covers the four server packets and types 0/15 after CONNECT. Here they
    // also come first (before CONNECT), with flags and malformed, and the counters must tell
    // which rule each connection broke.
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let server_packets: [&[u8]; 4] = [
            &[0x20, 0x02, 0x00, 0x00],       // CONNACK
            &[0x90, 0x03, 0x00, 0x01, 0x00], // SUBACK
            &[0xb0, 0x02, 0x00, 0x01],       // UNSUBACK
            &[0xd0, 0x00],                   // PINGRESP
        ];
        let reserved: [&[u8]; 6] = [
            &[0x00, 0x00],
            &[0x0f, 0x00],
            &[0x00, 0x02, 0x00, 0x01],
            &[0xf0, 0x00],
            &[0xff, 0x00],
            &[0xf0, 0x7f],
        ];
        for bad in server_packets {
            scene.first_packet_closes("server packet first", bad);
            scene.closes_after_connect("server packet", bad);
        }
        for bad in reserved {
            scene.first_packet_closes("reserved type first", bad);
            scene.closes_after_connect("reserved type", bad);
        }
        let malformed: [(&str, &[u8]); 5] = [
            ("CONNACK return code 9", &[0x20, 0x02, 0x00, 0x09]),
            ("CONNACK flags 02", &[0x20, 0x02, 0x02, 0x00]),
            ("SUBACK return code 03", &[0x90, 0x03, 0x00, 0x01, 0x03]),
            ("PINGRESP with a body", &[0xd0, 0x01, 0x00]),
            ("UNSUBACK of 3 bytes", &[0xb0, 0x03, 0x00, 0x01, 0x00]),
        ];
        for (name, bad) in malformed {
            scene.closes_after_connect(name, bad);
        }
        let metrics = scene.finish();
        assert_rule(&metrics, "MQTT-3.1.0-1", 4);
        assert_rule(&metrics, "only a server may send", 4);
        assert_rule(&metrics, "reserved packet type 0 ", 6);
        assert_rule(&metrics, "reserved packet type 15 ", 6);
        assert_rule(&metrics, "CONNACK return code 9", 1);
        assert_rule(&metrics, "MQTT-3.2.2-1", 1);
        assert_rule(&metrics, "MQTT-3.9.3-2", 1);
        assert_rule(&metrics, "fixed size", 2);
        assert_protocol_errors(&metrics, 25);
    });
}

// ----- MQTT 3.1 client identifiers ----------------------------------------------------------

#[test]
fn mqtt_3_1_client_ids_longer_than_23_bytes_are_accepted() {
    // MQTT 3.1 limited client ids to 23 bytes; the checklist lets a broker that also speaks
    // 3.1.1 accept more, and this one does, on both protocol levels alike.
    let _guard = shared();
    with_shards(|shards| {
        let mut scene = Scene::start(shards);
        let long = format!("{}-{}", "x".repeat(100), scene.next_id("long"));
        let mut c = scene
            .broker
            .connect_with(&ConnectBuilder::new(&long).protocol(b"MQIsdp", 3));
        c.subscribe(1, &[("long/t", 0)]);
        let mut p = scene.broker.connect(&scene.broker.id_on("long-pub", 0));
        p.publish0("long/t", b"hi", false);
        c.expect_bytes(&qos0_delivery("long/t", b"hi", false));
        scene.finish();
    });
}

#[test]
fn mqtt_3_1_empty_client_id_is_rejected() {
    // MQTT 3.1 (3.1 spec, CONNECT payload): the client id is 1 to 23 characters, and the
    // server answers CONNACK 2 (identifier rejected) otherwise. Assigning an id to an empty
    // one (MQTT-3.1.3-6) is a 3.1.1 rule.
    let _guard = shared();
    with_shards(|shards| {
        let scene = Scene::start(shards);
        for clean in [true, false] {
            let mut c = scene.broker.socket();
            c.send(
                &ConnectBuilder::new("")
                    .protocol(b"MQIsdp", 3)
                    .clean(clean)
                    .build(),
            );
            c.expect_bytes(&[0x20, 0x02, 0x00, 0x02]);
            c.expect_closed();
        }
        scene.finish();
    });
}
