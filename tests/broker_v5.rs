//! End-to-end tests of the broker's MQTT 5 support over raw sockets, part 1: CONNECT and
//! CONNACK, session expiry, reason codes in acknowledgements, the broker's DISCONNECT before it
//! closes a connection, Receive Maximum, Payload Format Indicator and wills. The exact bytes
//! are what MQTT 5.0 demands (rule ids in the comments); the subscription options and message
//! properties are in broker_v5_options.rs.
//!
//! Most tests run against 1 and 2 shards; with 2, publishers and subscribers are placed on
//! different shards on purpose.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use surgemq::auth::{AclFile, FileAuthenticator};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::{Packet, ProtocolLevel};

/// A 3.1.1 client on `shard` subscribed to a topic of its own: once it has the QoS 0 message an
/// MQTT 5 `publisher` sent it, that shard has handled everything the publisher sent before
/// (what common's `Witness` does for a 3.1.1 publisher).
struct Witness5 {
    client: RawClient,
    topic: String,
}

impl Witness5 {
    fn new(broker: &Broker, name: &str, shard: usize) -> Witness5 {
        let mut client = broker.connect(&broker.id_on(&format!("witness5-{name}"), shard));
        let topic = format!("witness5/{name}");
        client.subscribe(1, &[(&topic, 0)]);
        Witness5 { client, topic }
    }

    #[track_caller]
    fn settle(&mut self, publisher: &mut RawClient) {
        publisher.send(&publish_v5(&self.topic, b"settled", 0, false, 0, &[]));
        self.client
            .expect_bytes(&qos0_delivery(&self.topic, b"settled", false));
    }
}

// ----- CONNECT / CONNACK ----------------------------------------------------------------------

#[test]
fn v5_connack_announces_the_broker_limits() {
    // MQTT 5.0 3.2.2.3: what the server supports, in CONNACK properties.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.socket();
        // 10 = CONNECT, remaining length 15; "MQTT", level 5, flags 02 (Clean Start),
        // keepalive 60, property length 0, client id "c1".
        c.send(&[
            0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00,
            0x02, b'c', b'1',
        ]);
        c.expect_bytes(&[
            0x20, 0x12, // CONNACK, remaining length 18
            0x00, // Session Present 0
            0x00, // reason 0x00 Success
            0x0f, // property length 15
            0x21, 0xff, 0xff, // Receive Maximum 65535
            0x22, 0x00, 0x0a, // Topic Alias Maximum 10
            0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1048576
            0x29, 0x01, // Subscription Identifier Available 1
            0x2a, 0x01, // Shared Subscription Available 1
        ]);
        c.ping();
        // The same from the home shard of every client id (the connection may move).
        for shard in 0..shards {
            let mut c = broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5c", shard), &[]));
            c.ping();
        }
    });
}

#[test]
fn v5_empty_client_id_gets_an_assigned_client_identifier() {
    // MQTT-3.1.3-6/-7 of 5.0: the server assigns an id and returns it in CONNACK (0x12), also
    // with Clean Start 0, which 3.1.1 refuses.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut ids = Vec::new();
        for clean in [true, false] {
            let mut c = broker.socket();
            c.send(&ConnectBuilder::v5("", &[]).clean(clean).build());
            let got = c.next_frame();
            let Packet::ConnAck(ack) = parse_at(&got, ProtocolLevel::V5) else {
                panic!("expected CONNACK, got {got:02x?}");
            };
            let props = ack.properties.expect("CONNACK properties");
            let id = props
                .assigned_client_identifier
                .expect("Assigned Client Identifier")
                .to_string();
            assert!(!id.is_empty());
            // 0x12 comes first (lowest id), then the usual block.
            let mut body = vec![0x00, 0x00]; // Session Present 0, reason 0x00 Success
            let mut properties = vec![0x12]; // Assigned Client Identifier
            properties.extend(field(id.as_bytes()));
            properties.extend_from_slice(&CONNACK_V5_PROPERTIES);
            body.extend(remaining_length(properties.len()));
            body.extend(properties);
            assert_eq!(got, frame(0x20, &body), "CONNACK bytes");
            c.subscribe_v5(1, &[("assigned/t", 0)]);
            ids.push((id, c));
        }
        assert_ne!(ids[0].0, ids[1].0, "two clients, two assigned ids");
        // Two sessions: both receive.
        let mut p = broker.connect("assigned-pub");
        p.publish0("assigned/t", b"to both", false);
        for (_, c) in &mut ids {
            c.expect_bytes(&publish_v5("assigned/t", b"to both", 0, false, 0, &[]));
        }
    });
}

#[test]
fn v5_session_expiry_above_the_broker_cap_is_answered_with_the_cap() {
    // MQTT 5.0 3.2.2.3.2: a server that uses another Session Expiry Interval says which.
    let broker = Broker::with_config(BrokerConfig {
        session_expiry: Some(Duration::from_secs(60)),
        ..test_config()
    });
    let mut expected = vec![
        0x20, 0x17, // CONNACK, remaining length 23
        0x00, // Session Present 0
        0x00, // reason 0x00 Success
        0x14, // property length 20
        0x11, 0x00, 0x00, 0x00, 0x3c, // Session Expiry Interval 60
    ];
    expected.extend_from_slice(&CONNACK_V5_PROPERTIES);
    // 0xFFFFFFFF (never expires) and 120 are both capped to 60.
    for asked in [[0xff, 0xff, 0xff, 0xff], [0x00, 0x00, 0x00, 0x78]] {
        let props = [0x11, asked[0], asked[1], asked[2], asked[3]]; // Session Expiry Interval
        broker
            .connect_expecting(&ConnectBuilder::v5("capped", &props), &expected)
            .ping();
    }
    // 30 is within the cap, and 0 is the default: granted as asked, so not mentioned.
    let within = ConnectBuilder::v5("within", &[0x11, 0x00, 0x00, 0x00, 0x1e]);
    broker.connect_v5(&within).ping();
    broker.connect_v5(&ConnectBuilder::v5("none", &[])).ping();
}

#[test]
fn v5_authentication_method_is_refused_with_0x8c() {
    // MQTT 5.0 4.12: no enhanced authentication; CONNACK 0x8C Bad authentication method.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut props = vec![0x15]; // Authentication Method "SCRAM-SHA-1"
        props.extend(field(b"SCRAM-SHA-1"));
        let mut c = broker.socket();
        c.send(&ConnectBuilder::v5("auth", &props).build());
        c.expect_bytes(&[
            0x20, 0x03, // CONNACK, remaining length 3
            0x00, // Session Present 0
            0x8c, // reason 0x8C Bad authentication method
            0x00, // property length 0
        ]);
        c.expect_closed();
    });
}

// ----- session expiry -------------------------------------------------------------------------

#[test]
fn v5_session_expiry_keeps_the_session_and_its_messages() {
    // MQTT-3.1.2-4/-5 and 3.1.2.11.2 of 5.0: Clean Start 0 with a Session Expiry Interval
    // resumes the session (Session Present 1) with the messages published meanwhile.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("v5-keep", "v5-keep-pub");
        let keep = ConnectBuilder::v5(&sub_id, &[0x11, 0x00, 0x00, 0x00, 0x3c]).clean(false);
        let mut s = broker.connect_v5(&keep);
        s.subscribe_v5(1, &[("keep/t", 1)]);
        s.disconnect();
        let mut p = broker.connect_v5(&ConnectBuilder::v5(&pub_id, &[]));
        p.send(&publish_v5("keep/t", b"while away", 1, false, 1, &[]));
        // A subscription matched (the session is away): plain PUBACK.
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
        let mut witness = Witness5::new(&broker, "keep", 0);
        witness.settle(&mut p);
        let mut s = broker.resume_v5(&keep);
        s.expect_bytes(&publish_v5("keep/t", b"while away", 1, false, 1, &[]));
        s.send(&puback(1));
        s.ping();
    });
}

#[test]
fn v5_session_without_expiry_ends_with_the_connection() {
    // MQTT 5.0 3.1.2.11.2: an absent Session Expiry Interval is 0, the session ends with the
    // connection even with Clean Start 0.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("v5-gone", "v5-gone-pub");
        let no_expiry = ConnectBuilder::v5(&sub_id, &[]).clean(false);
        let mut s = broker.connect_v5(&no_expiry);
        s.subscribe_v5(1, &[("gone/t", 1)]);
        s.disconnect();
        // Session Present 0, and the subscription went with the session.
        let mut s = broker.connect_v5(&no_expiry);
        let mut p = broker.connect_v5(&ConnectBuilder::v5(&pub_id, &[]));
        p.send(&publish_v5("gone/t", b"nobody", 1, false, 1, &[]));
        p.expect_bytes(&[
            0x40, 0x03, // PUBACK, remaining length 3
            0x00, 0x01, // packet id 1
            0x10, // reason 0x10 No matching subscribers
        ]);
        s.expect_nothing();
    });
}

#[test]
fn v5_disconnect_may_lower_the_session_expiry_to_zero() {
    // MQTT 5.0 3.14.2.2.2: DISCONNECT's Session Expiry Interval replaces CONNECT's.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let id = broker.id_on("v5-lower", shards - 1);
        let keep = ConnectBuilder::v5(&id, &[0x11, 0x00, 0x00, 0x00, 0x3c]).clean(false);
        let mut c = broker.connect_v5(&keep);
        c.subscribe_v5(1, &[("lower/t", 1)]);
        c.send(&[
            0xe0, 0x07, // DISCONNECT, remaining length 7
            0x00, // reason 0x00 Normal disconnection
            0x05, // property length 5
            0x11, 0x00, 0x00, 0x00, 0x00, // Session Expiry Interval 0
        ]);
        c.expect_closed();
        // The session ended: Session Present 0.
        broker.connect_v5(&keep).ping();
    });
}

#[test]
fn v5_disconnect_may_not_raise_the_session_expiry_from_zero() {
    // MQTT-3.14.2-2: Session Expiry 0 in CONNECT, non-zero in DISCONNECT is a Protocol Error:
    // the broker answers DISCONNECT 0x82 and closes.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for shard in 0..shards {
            let id = broker.id_on("v5-raise", shard);
            let mut c = broker.connect_v5(&ConnectBuilder::v5(&id, &[]).clean(false));
            c.send(&[
                0xe0, 0x07, // DISCONNECT, remaining length 7
                0x00, // reason 0x00 Normal disconnection
                0x05, // property length 5
                0x11, 0x00, 0x00, 0x00, 0x0a, // Session Expiry Interval 10
            ]);
            // DISCONNECT 0x82 Protocol Error, saying which rule.
            let text = c.expect_disconnect_v5(0x82).expect("a Reason String");
            assert!(text.contains("MQTT-3.14.2-2"), "{text}");
            // And the session did end with the connection.
            broker
                .connect_v5(&ConnectBuilder::v5(&id, &[0x11, 0x00, 0x00, 0x00, 0x0a]).clean(false))
                .ping();
        }
    });
}

#[test]
fn v5_session_expires_after_its_own_interval() {
    // MQTT 5.0 3.1.2.11.2: each session expires after the interval its client asked for; here
    // 1 s beside 60 s, with no broker-wide --session-expiry.
    let broker = Broker::start(1);
    let short = ConnectBuilder::v5("v5-short", &[0x11, 0x00, 0x00, 0x00, 0x01]).clean(false);
    let long = ConnectBuilder::v5("v5-long", &[0x11, 0x00, 0x00, 0x00, 0x3c]).clean(false);
    for connect in [&short, &long] {
        let mut c = broker.connect_v5(connect);
        c.subscribe_v5(1, &[("expiry/t", 1)]);
        c.disconnect();
    }
    // The expiry task looks once a second: gone after at most about 2 s.
    std::thread::sleep(Duration::from_millis(2300));
    broker.connect_v5(&short).disconnect();
    broker.resume_v5(&long).disconnect();
}

// ----- acknowledgements with reason codes -----------------------------------------------------

#[test]
fn v5_puback_and_pubrec_say_no_matching_subscribers() {
    // MQTT 5.0 3.4.2.1 / 3.5.2.1: 0x10 No matching subscribers; success is the 2-byte form
    // (3.4.2.1: reason and properties may be left out for 0x00).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("v5-ack-pub", "v5-ack-sub");
        let mut p = broker.connect_v5(&ConnectBuilder::v5(&pub_id, &[]));
        p.send(&publish_v5("ack/t", b"none", 1, false, 1, &[]));
        p.expect_bytes(&[
            0x40, 0x03, // PUBACK, remaining length 3
            0x00, 0x01, // packet id 1
            0x10, // reason 0x10 No matching subscribers
        ]);
        p.send(&publish_v5("ack/t", b"none", 2, false, 2, &[]));
        p.expect_bytes(&[
            0x50, 0x03, // PUBREC, remaining length 3
            0x00, 0x02, // packet id 2
            0x10, // reason 0x10 No matching subscribers
        ]);
        // 0x10 is below 0x80: the QoS 2 flow goes on (MQTT 5.0 4.3.3).
        p.send(&pubrel(2));
        p.expect_bytes(&pubcomp(2));
        // With a subscriber on the other shard: plain success.
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("ack/t", 0)]);
        p.send(&publish_v5("ack/t", b"one", 1, false, 3, &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x03]); // PUBACK 3, success
        p.send(&publish_v5("ack/t", b"two", 2, false, 4, &[]));
        p.expect_bytes(&[0x50, 0x02, 0x00, 0x04]); // PUBREC 4, success
        p.send(&pubrel(4));
        p.expect_bytes(&pubcomp(4));
        s.expect_bytes(&publish_v5("ack/t", b"one", 0, false, 0, &[]));
        s.expect_bytes(&publish_v5("ack/t", b"two", 0, false, 0, &[]));
        // A 3.1.1 publisher never gets a reason code.
        let mut old = broker.connect(&broker.id_on("v311-ack-pub", 0));
        old.publish1("nobody/t", b"x", false, 1); // PUBACK 40 02 00 01
        old.publish2("nobody/t", b"x", false, 2); // PUBREC 50 02 00 02
    });
}

#[test]
fn v5_unsuback_says_which_subscriptions_existed() {
    // MQTT 5.0 3.11.3: one reason per filter, 0x00 Success or 0x11 No subscription existed.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5-unsub", 0), &[]));
        c.subscribe_v5(1, &[("u/a", 1)]);
        c.send(&unsubscribe_v5(2, &["u/a", "u/b"]));
        c.expect_bytes(&[
            0xb0, 0x05, // UNSUBACK, remaining length 5
            0x00, 0x02, // packet id 2
            0x00, // property length 0
            0x00, // u/a: 0x00 Success
            0x11, // u/b: 0x11 No subscription existed
        ]);
        // The same again: now neither existed.
        c.send(&unsubscribe_v5(3, &["u/a", "u/b"]));
        c.expect_bytes(&[0xb0, 0x05, 0x00, 0x03, 0x00, 0x11, 0x11]);
        // 3.1.1 UNSUBACK has no reasons (MQTT-3.11.2).
        let mut old = broker.connect(&broker.id_on("v311-unsub", shards - 1));
        old.send(&unsubscribe(4, &["u/a", "u/b"]));
        old.expect_bytes(&[0xb0, 0x02, 0x00, 0x04]);
    });
}

/// A broker whose ACL lets anonymous clients read and write `ok/#` only, and that allows at
/// most 3 topic levels.
fn acl_broker(shards: usize) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        max_topic_levels: 3,
        authenticator: Arc::new(FileAuthenticator {
            passwords: None,
            allow_anonymous: true,
            acl: Some(AclFile::parse("topic readwrite ok/#\n", "test.acl").unwrap()),
        }),
        ..test_config()
    })
}

#[test]
fn v5_suback_reason_codes_for_refused_filters() {
    // MQTT 5.0 3.9.3: 0x87 Not authorized, 0x8F Topic Filter invalid; 3.1.1 has only 0x80.
    // A shared subscription's ACL is the filter's after `$share/{group}/`, and a group name
    // that is empty or holds a wildcard makes the filter invalid (MQTT-4.8.2-1, -2).
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let filters = [
            ("ok/t", 0x01),           // allowed: granted QoS 1
            ("no/t", 0x01),           // not in the ACL
            ("ok/a/b/c", 0x00),       // 4 levels, above max_topic_levels 3
            ("$share/g/ok/t", 0x01),  // shared subscription, allowed
            ("$share/g/no/t", 0x01),  // shared, not in the ACL
            ("$share//ok/t", 0x01),   // empty group name
            ("$share/g+/ok/t", 0x01), // wildcard in the group name
        ];
        let mut c = broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5-suback", 0), &[]));
        c.send(&subscribe_v5(1, &[], &filters));
        c.expect_bytes(&[
            0x90, 0x0a, // SUBACK, remaining length 10
            0x00, 0x01, // packet id 1
            0x00, // property length 0
            0x01, // ok/t: granted QoS 1
            0x87, // no/t: 0x87 Not authorized
            0x8f, // ok/a/b/c: 0x8F Topic Filter invalid
            0x01, // $share/g/ok/t: granted QoS 1
            0x87, // $share/g/no/t: 0x87 Not authorized
            0x8f, // $share//ok/t: 0x8F Topic Filter invalid
            0x8f, // $share/g+/ok/t: 0x8F
        ]);
        c.ping();
        let mut old = broker.connect(&broker.id_on("v311-suback", shards - 1));
        old.send(&subscribe(1, &[("ok/t", 1), ("no/t", 1), ("ok/a/b/c", 0)]));
        old.expect_bytes(&[
            0x90, 0x05, // SUBACK, remaining length 5
            0x00, 0x01, // packet id 1
            0x01, // ok/t: granted QoS 1
            0x80, // no/t: failure
            0x80, // ok/a/b/c: failure
        ]);
        old.ping();
    });
}

#[test]
fn v5_puback_says_not_authorized_for_a_denied_publish() {
    // MQTT 5.0 3.4.2.1: 0x87 Not authorized; 3.1.1 can only acknowledge (MQTT-3.3.5-2).
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let (pub_id, sub_id) = broker.ids_apart("v5-deny-pub", "v5-deny-sub");
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("ok/#", 1)]);
        let mut p = broker.connect_v5(&ConnectBuilder::v5(&pub_id, &[]));
        p.send(&publish_v5("no/t", b"denied", 1, false, 1, &[]));
        p.expect_bytes(&[
            0x40, 0x03, // PUBACK, remaining length 3
            0x00, 0x01, // packet id 1
            0x87, // reason 0x87 Not authorized
        ]);
        p.send(&publish_v5("no/t", b"denied", 2, false, 2, &[]));
        p.expect_bytes(&[
            0x50, 0x03, // PUBREC, remaining length 3
            0x00, 0x02, // packet id 2
            0x87, // reason 0x87 Not authorized
        ]);
        // A PUBREC of 0x80 or more ends the flow (MQTT 5.0 4.3.3): the id is free again.
        p.send(&publish_v5("ok/t", b"allowed", 1, false, 2, &[]));
        p.expect_bytes(&[0x40, 0x02, 0x00, 0x02]); // PUBACK 2, success
        s.expect_bytes(&publish_v5("ok/t", b"allowed", 1, false, 1, &[]));
        s.send(&puback(1));
        let mut old = broker.connect(&broker.id_on("v311-deny-pub", 0));
        old.publish1("no/t", b"denied", false, 1); // PUBACK 40 02 00 01
        s.expect_nothing();
    });
}

// ----- the broker's DISCONNECT ----------------------------------------------------------------

#[test]
fn v5_takeover_sends_disconnect_0x8e_to_the_old_connection() {
    // MQTT-3.1.4-3 and 3.14.2.1 of 5.0: 0x8E Session taken over; a 3.1.1 connection is just
    // closed (3.1.1 has no server DISCONNECT).
    with_shards(|shards| {
        let broker = Broker::start(shards);
        for shard in 0..shards {
            let id = broker.id_on("v5-takeover", shard);
            let mut old = broker.connect_v5(&ConnectBuilder::v5(&id, &[]));
            let mut new = broker.connect_v5(&ConnectBuilder::v5(&id, &[]));
            old.expect_bytes(&[0xe0, 0x01, 0x8e]); // DISCONNECT 0x8E Session taken over
            old.expect_closed();
            new.ping();
            // Taken over by a 3.1.1 connection: the old one is MQTT 5 and is told so.
            let mut newer = broker.connect(&id);
            new.expect_bytes(&[0xe0, 0x01, 0x8e]);
            new.expect_closed();
            newer.ping();
            // A 3.1.1 connection taken over (by MQTT 5) gets no DISCONNECT.
            let mut newest = broker.connect_v5(&ConnectBuilder::v5(&id, &[]));
            newer.expect_closed();
            newest.ping();
        }
    });
}

#[test]
fn v5_keepalive_timeout_sends_disconnect_0x8d() {
    // MQTT 5.0 3.1.2.10 and 4.13.2: 0x8D Keep Alive timeout, after 1.5 x 1 s of silence.
    let broker = Broker::start(1);
    let start = Instant::now();
    let mut c = broker.connect_v5(&ConnectBuilder::v5("v5-ka", &[]).keep_alive(1));
    let frame = c.next_frame_within(Duration::from_secs(3));
    assert_eq!(frame, Some(vec![0xe0, 0x01, 0x8d]), "DISCONNECT 0x8D");
    c.expect_closed();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took <= Duration::from_secs(3),
        "closed after {took:?}, expected about 1.5 s"
    );
}

#[test]
fn v5_shutdown_sends_disconnect_0x8b() {
    // MQTT 5.0 3.14.2.1: 0x8B Server shutting down; a 3.1.1 client is just closed.
    let broker = Broker::start(2);
    let mut c = broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5-bye", 1), &[]));
    let mut old = broker.connect(&broker.id_on("v311-bye", 0));
    broker.shutdown();
    c.expect_bytes(&[0xe0, 0x01, 0x8b]); // DISCONNECT 0x8B Server shutting down
    c.expect_closed();
    old.expect_closed();
}

#[test]
fn v5_malformed_and_invalid_publishes_get_disconnect_with_their_reason() {
    // MQTT 5.0 4.13: the server sends DISCONNECT with the reason, then closes.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let cases: [(&str, Vec<u8>, u8); 6] = [
            (
                // Property id 0x7F does not exist: 0x81 Malformed Packet.
                "unknown property",
                publish_v5("m/t", b"x", 0, false, 0, &[0x7f, 0x00]),
                0x81,
            ),
            (
                // MQTT-3.3.2-8: Topic Alias 0 is not allowed: 0x94 Topic Alias invalid.
                "topic alias 0",
                publish_v5("m/t", b"x", 0, false, 0, &[0x23, 0x00, 0x00]),
                0x94,
            ),
            (
                // MQTT-3.3.2-9: above the Topic Alias Maximum 10 of CONNACK: 0x94.
                "topic alias 11",
                publish_v5("m/t", b"x", 0, false, 0, &[0x23, 0x00, 0x0b]),
                0x94,
            ),
            (
                // 3.3.4: empty topic with an alias never set: 0x82 Protocol Error.
                "unset alias",
                publish_v5("", b"x", 0, false, 0, &[0x23, 0x00, 0x01]),
                0x82,
            ),
            (
                // MQTT 5.0 3.3.2.1: empty topic without an alias: 0x82 Protocol Error.
                "empty topic, no alias",
                publish_v5("", b"x", 0, false, 0, &[]),
                0x82,
            ),
            (
                // MQTT-3.3.4-6: a client's PUBLISH with a Subscription Identifier: 0x82.
                "subscription identifier",
                publish_v5("m/t", b"x", 0, false, 0, &[0x0b, 0x01]),
                0x82,
            ),
        ];
        for shard in 0..shards {
            for (what, bytes, reason) in &cases {
                let mut c =
                    broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5-bad", shard), &[]));
                c.send(bytes);
                let text = c.expect_disconnect_v5(*reason);
                // Says which rule, as the broker's log does.
                let text = text.unwrap_or_else(|| panic!("{what}: no Reason String"));
                assert!(
                    text.contains("MQTT") || text.contains("malformed"),
                    "{what}: {text}"
                );
            }
        }
    });
}

// ----- Receive Maximum and Payload Format Indicator -------------------------------------------

#[test]
fn v5_receive_maximum_exceeded_gets_disconnect_0x93() {
    // MQTT-3.3.4-9 of 5.0: more unacknowledged QoS 2 PUBLISHes than the server's Receive
    // Maximum is a Protocol Error with 0x93 Receive Maximum exceeded.
    with_shards(|shards| {
        let broker = Broker::with_config(BrokerConfig {
            shards,
            receive_maximum: 1,
            ..test_config()
        });
        let connack = [
            0x20, 0x12, // CONNACK, remaining length 18
            0x00, // Session Present 0
            0x00, // reason 0x00 Success
            0x0f, // property length 15
            0x21, 0x00, 0x01, // Receive Maximum 1
            0x22, 0x00, 0x0a, // Topic Alias Maximum 10
            0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1048576
            0x29, 0x01, // Subscription Identifier Available 1
            0x2a, 0x01, // Shared Subscription Available 1
        ];
        let id = broker.id_on("v5-rm", shards - 1);
        // Request Problem Information 0: the DISCONNECT says no more than its reason code.
        let mut c = broker.connect_expecting(&ConnectBuilder::v5(&id, &[0x17, 0x00]), &connack);
        // One at a time is fine, however many.
        for packet_id in 1..=3 {
            c.send(&publish_v5("rm/t", b"x", 2, false, packet_id, &[]));
            c.expect_bytes(&[0x50, 0x03, 0x00, packet_id as u8, 0x10]); // PUBREC, 0x10
            c.send(&pubrel(packet_id));
            c.expect_bytes(&pubcomp(packet_id));
        }
        c.send(&publish_v5("rm/t", b"x", 2, false, 4, &[]));
        c.expect_bytes(&[0x50, 0x03, 0x00, 0x04, 0x10]); // PUBREC 4, no PUBREL yet
        c.send(&publish_v5("rm/t", b"x", 2, false, 5, &[]));
        c.expect_bytes(&[0xe0, 0x01, 0x93]); // DISCONNECT 0x93 Receive Maximum exceeded
        c.expect_closed();
    });
}

#[test]
fn v5_payload_format_utf8_with_invalid_payload_is_refused_with_0x99() {
    // MQTT 5.0 3.3.2.3.2: a payload that is not UTF-8 despite Payload Format Indicator 1 gets
    // 0x99 Payload format invalid (PUBACK/PUBREC, or DISCONNECT for QoS 0), not forwarded.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (pub_id, sub_id) = broker.ids_apart("v5-pf-pub", "v5-pf-sub");
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("pf/t", 1)]);
        let mut p = broker.connect_v5(&ConnectBuilder::v5(&pub_id, &[]));
        let utf8 = [0x01, 0x01]; // Payload Format Indicator 1 (UTF-8)
        p.send(&publish_v5("pf/t", &[0xff, 0xfe], 1, false, 1, &utf8));
        p.expect_bytes(&[
            0x40, 0x03, // PUBACK, remaining length 3
            0x00, 0x01, // packet id 1
            0x99, // reason 0x99 Payload format invalid
        ]);
        p.send(&publish_v5("pf/t", &[0xc3, 0x28], 2, false, 2, &utf8));
        p.expect_bytes(&[
            0x50, 0x03, // PUBREC, remaining length 3
            0x00, 0x02, // packet id 2
            0x99, // reason 0x99 Payload format invalid
        ]);
        // Valid UTF-8 goes through, with its indicator; the refused ones did not.
        p.send(&publish_v5("pf/t", "grüß".as_bytes(), 0, false, 0, &utf8));
        s.expect_bytes(&publish_v5("pf/t", "grüß".as_bytes(), 0, false, 0, &utf8));
        p.send(&publish_v5("pf/t", &[0xff], 0, false, 0, &utf8));
        // DISCONNECT 0x99 Payload format invalid.
        let text = p.expect_disconnect_v5(0x99).expect("a Reason String");
        assert!(text.contains("UTF-8"), "{text}");
        s.expect_nothing();
    });
}

// ----- wills ----------------------------------------------------------------------------------

#[test]
fn v5_disconnect_with_will_message_publishes_the_will() {
    // MQTT-3.14.4-3 of 5.0: DISCONNECT 0x04 Disconnect with Will Message publishes the will
    // (with its properties); 0x00 (2-byte form or explicit) discards it.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (will_id, sub_id) = broker.ids_apart("v5-will", "v5-will-sub");
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("will/t", 0)]);
        let mut will_props = vec![0x03]; // Content Type "text/plain"
        will_props.extend(field(b"text/plain"));
        will_props.push(0x26); // User Property k=v
        will_props.extend(field(b"k"));
        will_props.extend(field(b"v"));
        let with_will = ConnectBuilder::v5(&will_id, &[])
            .will("will/t", b"gone", 0, false)
            .will_properties(&will_props);
        let mut c = broker.connect_v5(&with_will);
        c.send(&[0xe0, 0x01, 0x04]); // DISCONNECT 0x04 Disconnect with Will Message
        c.expect_closed();
        s.expect_bytes(&publish_v5("will/t", b"gone", 0, false, 0, &will_props));
        // Normal disconnections: no will. A marker from the same shard comes next.
        let mut marker = broker.connect_v5(&ConnectBuilder::v5(&broker.id_on("v5-will-m", 0), &[]));
        for goodbye in [&[0xe0, 0x00][..], &[0xe0, 0x01, 0x00]] {
            let mut c = broker.connect_v5(&with_will);
            c.send(goodbye);
            c.expect_closed();
        }
        marker.send(&publish_v5("will/t", b"marker", 0, false, 0, &[]));
        s.expect_bytes(&publish_v5("will/t", b"marker", 0, false, 0, &[]));
    });
}

#[test]
fn v5_will_delay_interval_delays_the_will_and_a_reconnect_cancels_it() {
    // MQTT-3.1.3-9 of 5.0: the will waits the Will Delay Interval (1 s here) and is not sent
    // when the client connects to its session again before that.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (a_id, sub_id) = broker.ids_apart("v5-delay-a", "v5-delay-sub");
        let b_id = broker.id_on("v5-delay-b", 0);
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("delay/#", 0)]);
        let delay = [0x18, 0x00, 0x00, 0x00, 0x01]; // Will Delay Interval 1
        let expiry = [0x11, 0x00, 0x00, 0x00, 0x0a]; // Session Expiry Interval 10
        let client = |id: &str, topic: &str| {
            ConnectBuilder::v5(id, &expiry)
                .clean(false)
                .will(topic, b"late", 0, false)
                .will_properties(&delay)
        };
        let a = broker.connect_v5(&client(&a_id, "delay/a"));
        let b = broker.connect_v5(&client(&b_id, "delay/b"));
        a.crash_and_wait();
        let gone = Instant::now();
        b.crash_and_wait();
        // b comes back at once (no will this time): its will must never come.
        let b = broker.resume_v5(&ConnectBuilder::v5(&b_id, &expiry).clean(false));
        let frame = s
            .next_frame_within(Duration::from_secs(3))
            .expect("a's will within 3 s");
        let took = gone.elapsed();
        assert_eq!(frame, publish_v5("delay/a", b"late", 0, false, 0, &[]));
        assert!(
            took >= Duration::from_millis(900),
            "will after {took:?}, before the 1 s Will Delay Interval"
        );
        s.expect_open_and_silent(Duration::from_millis(600));
        b.disconnect();
    });
}

#[test]
fn v5_delayed_will_is_sent_when_clean_start_ends_the_session() {
    // MQTT 5.0 3.1.3.2.2 and 3.1.4 (non-normative): Clean Start 1 ends the old session, so
    // its delayed will goes out then, not at the end of the delay.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (id, sub_id) = broker.ids_apart("v5-ended", "v5-ended-sub");
        let mut s = broker.connect_v5(&ConnectBuilder::v5(&sub_id, &[]));
        s.subscribe_v5(1, &[("ended/#", 0)]);
        let client = ConnectBuilder::v5(&id, &[0x11, 0x00, 0x00, 0x00, 0x0a]) // Session Expiry 10
            .clean(false)
            .will("ended/t", b"ended", 0, false)
            .will_properties(&[0x18, 0x00, 0x00, 0x00, 0x02]); // Will Delay Interval 2
        let will = publish_v5("ended/t", b"ended", 0, false, 0, &[]);
        // After a crash.
        broker.connect_v5(&client).crash_and_wait();
        let fresh = broker.connect_v5(&ConnectBuilder::v5(&id, &[])); // Clean Start 1
        assert_eq!(
            s.next_frame_within(Duration::from_millis(1000)),
            Some(will.clone()),
            "the will, well before the 2 s delay"
        );
        // Its session (expiry 0) ends with it; with it still connected, Clean Start 0 would
        // resume it (Session Present 1).
        fresh.disconnect();
        // By takeover.
        let mut old = broker.connect_v5(&client);
        let _fresh = broker.connect_v5(&ConnectBuilder::v5(&id, &[]));
        old.expect_bytes(&[0xe0, 0x01, 0x8e]); // DISCONNECT 0x8E Session taken over
        assert_eq!(
            s.next_frame_within(Duration::from_millis(1000)),
            Some(will),
            "the will, well before the 2 s delay"
        );
    });
}
