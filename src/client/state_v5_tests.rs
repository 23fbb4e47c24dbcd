//! Unit tests of the MQTT 5 share of the state machine: enhanced authentication, the client's
//! own Receive Maximum, outgoing topic aliases, Message Expiry of late messages and the
//! DISCONNECT that names a violation. Packets are compared byte for byte.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::tests::{drain_v5, events, publish, v5, v5_connected, v5_options, v5_state};
use super::*;
use crate::client::options::ClientOptions;
use crate::client::state::Event;
use crate::protocol::{DecodeError, Properties, QoS};

/// AUTH with a reason code, method "REVERSE" and, if given, data (at most 100 bytes).
fn auth_bytes(reason: u8, data: Option<&[u8]>) -> Vec<u8> {
    let mut props = vec![0x15, 0x00, 0x07];
    props.extend_from_slice(b"REVERSE");
    if let Some(d) = data {
        props.extend_from_slice(&[0x16, 0x00, d.len() as u8]);
        props.extend_from_slice(d);
    }
    let mut out = vec![0xf0, (props.len() + 2) as u8, reason, props.len() as u8];
    out.extend(props);
    out
}

/// The method "REVERSE": the answer to a challenge is the challenge reversed. Every
/// challenge is recorded; "refuse" makes the responder give up.
fn reverse(seen: Arc<Mutex<Vec<AuthChallenge>>>) -> EnhancedAuth {
    EnhancedAuth::new("REVERSE", None, move |c: &AuthChallenge| {
        seen.lock().unwrap().push(c.clone());
        let data = c.data.clone().unwrap_or_default();
        if &data[..] == b"refuse" {
            return Err("cannot answer".to_string());
        }
        Ok(Bytes::from(data.iter().rev().copied().collect::<Vec<u8>>()))
    })
}

/// A v5 state with enhanced authentication, CONNECT sent (and checked to carry the method).
fn authenticating(t0: Instant) -> (ClientState, Arc<Mutex<Vec<AuthChallenge>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let options = ClientOptions {
        authentication: Some(reverse(seen.clone())),
        ..v5_options()
    };
    options.validate().unwrap();
    let mut s = v5_state(&options, t0).with_authentication(options.authentication.clone().unwrap());
    s.connect(t0);
    let connect = drain_v5(&mut s);
    let method = [0x15, 0x00, 0x07, b'R', b'E', b'V', b'E', b'R', b'S', b'E'];
    assert!(connect.windows(10).any(|w| w == method), "{connect:02x?}");
    (s, seen)
}

/// CONNACK success carrying the method and "ok".
fn connack_authenticated() -> Packet {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x12, 0x00, 0x00, 0x0f,
        0x15, 0x00, 0x07, b'R', b'E', b'V', b'E', b'R', b'S', b'E',
        0x16, 0x00, 0x02, b'o', b'k',
    ];
    v5(&bytes)
}

#[test]
fn a_challenge_is_answered_and_connack_completes_the_exchange() {
    let t0 = Instant::now();
    let (mut s, seen) = authenticating(t0);
    let t1 = t0 + Duration::from_secs(2);
    s.handle(v5(&auth_bytes(0x18, Some(b"nonce-1"))), t1)
        .unwrap();
    assert_eq!(drain_v5(&mut s), auth_bytes(0x18, Some(b"1-ecnon")));
    assert_eq!(
        seen.lock().unwrap()[0],
        AuthChallenge {
            method: "REVERSE".into(),
            data: Some(Bytes::from_static(b"nonce-1")),
            reason_string: None,
            reauthenticating: false,
        }
    );
    // Each step of the server gets the CONNACK deadline again.
    assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(3)));
    assert!(!s.is_connected());
    s.handle(connack_authenticated(), t1).unwrap();
    assert!(s.is_connected());
    assert_eq!(
        events(&mut s),
        [Event::Connected {
            session_present: false
        }]
    );
}

#[test]
fn a_responder_that_gives_up_sends_disconnect_0x80() {
    let t0 = Instant::now();
    let (mut s, _) = authenticating(t0);
    let e = s
        .handle(v5(&auth_bytes(0x18, Some(b"refuse"))), t0)
        .unwrap_err();
    assert!(matches!(&e, ClientError::AuthAborted { method, .. } if method == "REVERSE"));
    assert_eq!(
        e.to_string(),
        "enhanced authentication \"REVERSE\" abandoned by the client: cannot answer"
    );
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x80]);
    // Nothing afterwards is taken for anything.
    s.handle(connack_authenticated(), t0).unwrap();
    assert!(!s.is_connected());
}

#[test]
fn auth_rules_broken_by_the_server_are_protocol_errors() {
    let t0 = Instant::now();
    // AUTH to a client that announced no method: 0x82 once connected.
    let mut s = v5_connected(t0);
    let e = s.handle(v5(&auth_bytes(0x18, Some(b"x"))), t0).unwrap_err();
    assert!(e.to_string().contains("MQTT-4.12.0-6"), "{e}");
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x82]);
    // Another method.
    let (mut s, _) = authenticating(t0);
    let other = [
        0xf0, 0x0a, 0x18, 0x08, 0x15, 0x00, 0x05, b'O', b'T', b'H', b'E', b'R',
    ];
    let e = s.handle(v5(&other), t0).unwrap_err();
    assert!(e.to_string().contains("MQTT-4.12.0-5"), "{e}");
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x82]);
    // AUTH 0x00 before CONNACK, and AUTH while no re-authentication is in progress.
    let (mut s, _) = authenticating(t0);
    assert!(s.handle(v5(&auth_bytes(0x00, None)), t0).is_err());
    let (mut s, _) = authenticating(t0);
    s.handle(connack_authenticated(), t0).unwrap();
    let e = s.handle(v5(&auth_bytes(0x18, Some(b"x"))), t0).unwrap_err();
    assert!(e.to_string().contains("no re-authentication"), "{e}");
}

#[test]
fn reauthentication_sends_auth_0x19_and_ends_with_auth_0x00() {
    let t0 = Instant::now();
    let (mut s, seen) = authenticating(t0);
    s.handle(connack_authenticated(), t0).unwrap();
    events(&mut s);
    s.reauthenticate(Some(Bytes::from_static(b"again")), t0)
        .unwrap();
    assert!(s.is_reauthenticating());
    assert_eq!(drain_v5(&mut s), auth_bytes(0x19, Some(b"again")));
    // One at a time.
    let e = s.reauthenticate(None, t0).unwrap_err();
    assert!(e.to_string().contains("already in progress"), "{e}");
    // Traffic goes on meanwhile.
    let id = s.publish(publish("t", b"x", QoS::AtLeastOnce), t0).unwrap();
    assert_eq!(drain_v5(&mut s)[0], 0x32);
    s.handle(v5(&auth_bytes(0x18, Some(b"nonce-2"))), t0)
        .unwrap();
    assert_eq!(drain_v5(&mut s), auth_bytes(0x18, Some(b"2-ecnon")));
    assert!(seen.lock().unwrap()[0].reauthenticating);
    s.handle(v5(&[0x40, 0x02, 0x00, id as u8]), t0).unwrap();
    s.handle(v5(&auth_bytes(0x00, Some(b"fine"))), t0).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Published(id),
            Event::Reauthenticated(Some(Bytes::from_static(b"fine")))
        ]
    );
    assert!(!s.is_reauthenticating());
    // Without enhanced authentication there is nothing to re-authenticate.
    let mut plain = v5_connected(t0);
    let e = plain.reauthenticate(None, t0).unwrap_err();
    assert!(e.to_string().contains("MQTT-4.12.0-7"), "{e}");
}

#[test]
fn more_unacknowledged_publishes_than_the_receive_maximum_is_0x93() {
    let t0 = Instant::now();
    let options = ClientOptions {
        receive_maximum: Some(2),
        ..v5_options()
    };
    let connected = || {
        let mut s = v5_state(&options, t0);
        s.connect(t0);
        drain_v5(&mut s);
        s.handle(v5(&[0x20, 0x03, 0x00, 0x00, 0x00]), t0).unwrap();
        events(&mut s);
        s
    };
    let qos2 = |id: u8| v5(&[0x34, 0x06, 0x00, 0x01, b't', 0x00, id, 0x00]);
    let qos1 = |id: u8| v5(&[0x32, 0x06, 0x00, 0x01, b't', 0x00, id, 0x00]);

    // QoS 2: in flight from PUBLISH to PUBCOMP. A repeat of one awaiting PUBREL is no new one.
    let mut s = connected();
    s.handle(qos2(1), t0).unwrap();
    s.handle(qos2(2), t0).unwrap();
    s.handle(qos2(1), t0).unwrap();
    assert_eq!(drain_v5(&mut s).len(), 3 * 4, "three PUBRECs");
    let e = s.handle(qos2(3), t0).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Protocol(ProtocolError::ReceiveMaximumExceeded { maximum: 2 })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("Receive Maximum of 2"), "{e}");
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x93]);

    // PUBREL frees one once its PUBCOMP is sent.
    let mut s = connected();
    s.handle(qos2(1), t0).unwrap();
    s.handle(qos2(2), t0).unwrap();
    s.handle(v5(&[0x62, 0x02, 0x00, 0x01]), t0).unwrap();
    assert!(s.handle(qos2(3), t0).is_err(), "PUBCOMP 1 not sent yet");
    let mut s = connected();
    s.handle(qos2(1), t0).unwrap();
    s.handle(qos2(2), t0).unwrap();
    s.handle(v5(&[0x62, 0x02, 0x00, 0x01]), t0).unwrap();
    drain_v5(&mut s);
    s.handle(qos2(3), t0).unwrap();

    // QoS 1: in flight until its PUBACK is sent.
    let mut s = connected();
    s.handle(qos1(1), t0).unwrap();
    s.handle(qos1(2), t0).unwrap();
    assert!(s.handle(qos1(3), t0).is_err());
    let mut s = connected();
    for id in 1..=10 {
        s.handle(qos1(id), t0).unwrap();
        drain_v5(&mut s);
    }
    // QoS 0 does not count.
    s.handle(qos1(11), t0).unwrap();
    s.handle(qos1(12), t0).unwrap();
    s.handle(v5(&[0x30, 0x04, 0x00, 0x01, b't', 0x00]), t0)
        .unwrap();
}

#[test]
fn a_packet_above_the_clients_maximum_size_is_0x95_and_a_bad_one_0x81() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let too_large = ClientError::from(ProtocolError::Decode(DecodeError::PacketTooLarge {
        size: 2000,
        max: 1024,
    }));
    assert!(s.fail(&too_large, t0));
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x95]);
    // Once only.
    assert!(!s.fail(&too_large, t0));
    let mut s = v5_connected(t0);
    let malformed = ClientError::from(ProtocolError::Decode(DecodeError::MalformedRemainingLength));
    assert!(s.fail(&malformed, t0));
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x81]);
    // Not for a server that already said goodbye, nor before CONNACK without enhanced
    // authentication, nor on errors that are not violations.
    let mut s = v5_connected(t0);
    assert!(s.handle(v5(&[0xe0, 0x01, 0x8e]), t0).is_err());
    assert!(!s.fail(&too_large, t0));
    let mut s = v5_state(&v5_options(), t0);
    s.connect(t0);
    drain_v5(&mut s);
    assert!(!s.fail(&too_large, t0));
    let mut s = v5_connected(t0);
    assert!(!s.fail(&ClientError::ConnectionClosed, t0));
}

/// A v5 state connected to a server with this Topic Alias Maximum, the client wishing for
/// `wish` aliases.
fn aliasing(wish: u16, server_maximum: Option<u8>, t0: Instant) -> ClientState {
    let options = ClientOptions {
        session_expiry: Some(60),
        outgoing_topic_aliases: Some(wish),
        ..v5_options()
    };
    let mut s = v5_state(&options, t0).with_outgoing_aliases(wish);
    s.connect(t0);
    drain_v5(&mut s);
    let connack = match server_maximum {
        Some(m) => v5(&[0x20, 0x06, 0x00, 0x00, 0x03, 0x22, 0x00, m]),
        None => v5(&[0x20, 0x03, 0x00, 0x00, 0x00]),
    };
    s.handle(connack, t0).unwrap();
    events(&mut s);
    s
}

/// A QoS 0 PUBLISH of "x" to `topic` (empty: alias alone) with Topic Alias `alias`.
fn aliased(topic: &str, alias: u8) -> Vec<u8> {
    let mut out = vec![
        0x30,
        (2 + topic.len() + 4 + 1) as u8,
        0x00,
        topic.len() as u8,
    ];
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&[0x03, 0x23, 0x00, alias, b'x']);
    out
}

#[test]
fn repeated_topics_go_out_as_aliases_least_recently_used_first_to_go() {
    let t0 = Instant::now();
    // The client wishes for 5, the server allows 2.
    let mut s = aliasing(5, Some(2), t0);
    let mut send = |topic: &str| {
        s.publish(publish(topic, b"x", QoS::AtMostOnce), t0)
            .unwrap();
        drain_v5(&mut s)
    };
    assert_eq!(send("a/1"), aliased("a/1", 1));
    assert_eq!(send("a/1"), aliased("", 1));
    assert_eq!(send("a/2"), aliased("a/2", 2));
    assert_eq!(send("a/1"), aliased("", 1));
    // Both taken: a/2 was used least recently and gives its alias to a/3.
    assert_eq!(send("a/3"), aliased("a/3", 2));
    assert_eq!(send("a/1"), aliased("", 1));
    assert_eq!(send("a/2"), aliased("a/2", 2));
}

#[test]
fn no_aliases_without_the_servers_maximum_or_the_clients_wish_and_none_kept_on_reconnect() {
    let t0 = Instant::now();
    let plain = |topic: &str| {
        let mut out = vec![
            0x30,
            (2 + topic.len() + 1 + 1) as u8,
            0x00,
            topic.len() as u8,
        ];
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&[0x00, b'x']);
        out
    };
    for mut s in [aliasing(5, None, t0), aliasing(0, Some(10), t0)] {
        for _ in 0..2 {
            s.publish(publish("a/1", b"x", QoS::AtMostOnce), t0)
                .unwrap();
            assert_eq!(drain_v5(&mut s), plain("a/1"));
        }
    }
    // A message in flight goes out again with its whole topic and a fresh alias.
    let mut s = aliasing(5, Some(2), t0);
    s.publish(publish("a/1", b"x", QoS::AtMostOnce), t0)
        .unwrap();
    let id = s
        .publish(publish("a/1", b"x", QoS::AtLeastOnce), t0)
        .unwrap();
    drain_v5(&mut s);
    s.connection_lost();
    s.connect(t0);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x06, 0x01, 0x00, 0x03, 0x22, 0x00, 0x02]), t0)
        .unwrap();
    let mut expected = vec![0x3a, 0x0c, 0x00, 0x03, b'a', b'/', b'1', 0x00, id as u8];
    expected.extend_from_slice(&[0x03, 0x23, 0x00, 0x01, b'x']);
    assert_eq!(drain_v5(&mut s), expected);
}

fn expiring(interval: u32) -> Publish {
    Publish {
        properties: Some(Box::new(Properties {
            message_expiry_interval: Some(interval),
            ..Properties::default()
        })),
        ..publish("t", b"x", QoS::AtLeastOnce)
    }
}

/// A QoS 1 PUBLISH of "x" to "t", DUP set, with Message Expiry Interval `left`.
fn dup_with_expiry(id: PacketId, left: u8) -> Vec<u8> {
    vec![
        0x3a, 0x0c, 0x00, 0x01, b't', 0x00, id as u8, 0x05, 0x02, 0x00, 0x00, 0x00, left, b'x',
    ]
}

#[test]
fn a_message_sent_again_has_the_time_it_waited_taken_off_its_expiry_or_is_dropped() {
    let t0 = Instant::now();
    let options = ClientOptions {
        session_expiry: Some(60),
        ..v5_options()
    };
    let mut s = v5_state(&options, t0);
    s.connect(t0);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x03, 0x00, 0x00, 0x00]), t0).unwrap();
    events(&mut s);
    let long = s.publish(expiring(10), t0).unwrap();
    let short = s.publish(expiring(3), t0).unwrap();
    let forever = s.publish(publish("t", b"x", QoS::AtLeastOnce), t0).unwrap();
    drain_v5(&mut s);
    s.connection_lost();
    // Back 3.5 s later: 6.5 s left of 10 (rounded up to 7), none of 3.
    let t1 = t0 + Duration::from_millis(3500);
    s.connect(t1);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x03, 0x01, 0x00, 0x00]), t1).unwrap();
    let plain_dup = [
        0x3a,
        0x07,
        0x00,
        0x01,
        b't',
        0x00,
        forever as u8,
        0x00,
        b'x',
    ];
    assert_eq!(
        drain_v5(&mut s),
        [dup_with_expiry(long, 7), plain_dup.to_vec()].concat()
    );
    assert_eq!(
        events(&mut s),
        [
            Event::Expired {
                packet_id: short,
                interval: 3
            },
            Event::Connected {
                session_present: true
            }
        ]
    );
    assert_eq!(s.inflight(), 2);
    assert!(s.window_open());
}

#[test]
fn a_message_held_back_by_the_servers_receive_maximum_ages_until_it_goes_out() {
    let t0 = Instant::now();
    let options = ClientOptions {
        session_expiry: Some(60),
        ..v5_options()
    };
    let mut s = v5_state(&options, t0);
    s.connect(t0);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x03, 0x00, 0x00, 0x00]), t0).unwrap();
    events(&mut s);
    let first = s.publish(expiring(20), t0).unwrap();
    let second = s.publish(expiring(20), t0).unwrap();
    drain_v5(&mut s);
    s.connection_lost();
    // Back 1 s later with Receive Maximum 1: the second waits for the first's PUBACK.
    let t1 = t0 + Duration::from_secs(1);
    s.connect(t1);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x06, 0x01, 0x00, 0x03, 0x21, 0x00, 0x01]), t1)
        .unwrap();
    assert_eq!(drain_v5(&mut s), dup_with_expiry(first, 19));
    let t2 = t0 + Duration::from_secs(6);
    s.handle(v5(&[0x40, 0x02, 0x00, first as u8]), t2).unwrap();
    assert_eq!(drain_v5(&mut s), dup_with_expiry(second, 14));
}
