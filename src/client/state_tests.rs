//! Unit tests of the client state machine: no sockets, hand-made instants, and the packets it
//! produces compared byte for byte with what the spec says goes on the wire.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{
    LastWill, ProtocolLevel, SubAck, SubscriptionOptions, UnsubAck, Unsubscribe,
};

pub(super) fn config() -> StateConfig {
    StateConfig {
        keep_alive: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        max_inflight: 10,
        clean_session: true,
    }
}

fn connect_packet(clean_session: bool) -> Connect {
    Connect {
        level: ProtocolLevel::V311,
        bridge: false,
        clean_session,
        keep_alive: 10,
        client_id: ByteStr::from("c"),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

fn state_with(config: StateConfig, t0: Instant) -> ClientState {
    ClientState::new(config, connect_packet(config.clean_session), t0)
}

/// A state that has connected at `t0` (CONNECT taken out of the outbox, event consumed).
fn connected(config: StateConfig, t0: Instant) -> ClientState {
    let mut s = state_with(config, t0);
    s.connect(t0);
    s.handle(connack(false), t0).unwrap();
    drain(&mut s);
    assert_eq!(
        s.pop_event(),
        Some(Event::Connected {
            session_present: false
        })
    );
    s
}

fn connack(session_present: bool) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code: ReasonCode::SUCCESS,
        properties: None,
    })
}

/// Everything in the outbox, encoded.
fn drain(s: &mut ClientState) -> Vec<u8> {
    let mut out = BytesMut::new();
    while let Some(p) = s.pop_packet() {
        p.encode(&mut out, ProtocolLevel::V311).unwrap();
    }
    assert_eq!(s.outbox_bytes(), 0);
    out.to_vec()
}

pub(super) fn events(s: &mut ClientState) -> Vec<Event> {
    std::iter::from_fn(|| s.pop_event()).collect()
}

pub(super) fn publish(topic: &str, payload: &'static [u8], qos: QoS) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: 0,
        payload: Bytes::from_static(payload),
        properties: None,
    }
}

fn incoming(qos: QoS, id: PacketId, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        packet_id: id,
        ..publish("t", b"x", qos)
    })
}

#[test]
fn handshake_sends_connect_and_accepts_connack() {
    let t0 = Instant::now();
    let mut s = ClientState::new(
        StateConfig {
            clean_session: false,
            ..config()
        },
        Connect {
            level: ProtocolLevel::V31,
            bridge: false,
            clean_session: false,
            keep_alive: 30,
            client_id: ByteStr::from("id"),
            will: Some(LastWill {
                topic: ByteStr::from("w"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            }),
            username: Some(ByteStr::from("u")),
            password: Some(Bytes::from_static(b"p")),
            properties: None,
        },
        t0,
    );
    assert!(!s.is_connected());
    s.connect(t0);
    #[rustfmt::skip]
    assert_eq!(drain(&mut s), [
        0x10, 0x1e,                                     // CONNECT, remaining length 30
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // "MQIsdp"
        0x03,                                           // level 3
        0xec,                                           // user, password, will retain, will QoS 1, will; persistent
        0x00, 0x1e,                                     // keepalive 30
        0x00, 0x02, b'i', b'd',                         // client id
        0x00, 0x01, b'w',                               // will topic
        0x00, 0x03, b'b', b'y', b'e',                   // will message
        0x00, 0x01, b'u',                               // user name
        0x00, 0x01, b'p',                               // password
    ]);
    s.handle(connack(true), t0).unwrap();
    assert!(s.is_connected() && s.session_present());
    assert_eq!(
        events(&mut s),
        [Event::Connected {
            session_present: true
        }]
    );
}

#[test]
fn refused_connack_is_an_error_with_its_code() {
    let t0 = Instant::now();
    let mut s = state_with(config(), t0);
    s.connect(t0);
    let refused = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::NOT_AUTHORIZED,
        properties: None,
    });
    let err = s.handle(refused, t0).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Refused(ReasonCode::NOT_AUTHORIZED, _)
    ));
    assert!(!s.is_connected());
}

#[test]
fn handshake_protocol_violations() {
    let t0 = Instant::now();
    let mut s = state_with(config(), t0);
    s.connect(t0);
    let err = s.handle(Packet::PingResp, t0).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Protocol(ProtocolError::ExpectedConnAck(PacketType::PingResp))
    ));

    let mut s = state_with(config(), t0);
    s.connect(t0);
    let err = s.handle(connack(true), t0).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Protocol(ProtocolError::SessionPresentWithCleanSession)
    ));

    let mut s = connected(config(), t0);
    for p in [
        connack(false),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::NORMAL),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: vec![ByteStr::from("a")],
            properties: None,
        }),
    ] {
        let t = p.packet_type();
        let err = s.handle(p, t0).unwrap_err();
        assert!(
            matches!(err, ClientError::Protocol(ProtocolError::UnexpectedPacket(u)) if u == t),
            "{t:?}"
        );
    }
}

#[test]
fn connack_deadline() {
    let t0 = Instant::now();
    let mut s = state_with(config(), t0);
    s.connect(t0);
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(3)));
    s.poll(t0 + Duration::from_millis(2999)).unwrap();
    let err = s.poll(t0 + Duration::from_secs(3)).unwrap_err();
    assert_eq!(err.to_string(), "timed out after 3 s waiting for CONNACK");
}

#[test]
fn qos1_publish_completes_on_puback() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    assert_eq!(
        s.publish(publish("a/b", b"hi", QoS::AtLeastOnce), t0),
        Ok(1)
    );
    #[rustfmt::skip]
    assert_eq!(drain(&mut s), [
        0x32, 0x09,                   // PUBLISH QoS 1
        0x00, 0x03, b'a', b'/', b'b', // topic
        0x00, 0x01,                   // packet id 1
        b'h', b'i',
    ]);
    assert_eq!(s.inflight(), 1);
    s.handle(Packet::PubAck(Ack::new(1)), t0).unwrap();
    assert_eq!(events(&mut s), [Event::Published(1)]);
    assert_eq!(s.inflight(), 0);
    // A late duplicate PUBACK is ignored.
    s.handle(Packet::PubAck(Ack::new(1)), t0).unwrap();
    assert!(events(&mut s).is_empty());
    assert!(drain(&mut s).is_empty());
}

#[test]
fn qos2_publish_pubrec_pubrel_pubcomp() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    assert_eq!(s.publish(publish("t", b"", QoS::ExactlyOnce), t0), Ok(1));
    assert_eq!(drain(&mut s), [0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x01]);
    s.handle(Packet::PubRec(Ack::new(1)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x62, 0x02, 0x00, 0x01]); // PUBREL id 1
    assert!(events(&mut s).is_empty(), "not complete before PUBCOMP");
    // A repeated PUBREC gets PUBREL again.
    s.handle(Packet::PubRec(Ack::new(1)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x62, 0x02, 0x00, 0x01]);
    s.handle(Packet::PubComp(Ack::new(1)), t0).unwrap();
    assert_eq!(events(&mut s), [Event::Published(1)]);
    assert_eq!(s.inflight(), 0);
    // PUBREC for an id we do not know: PUBREL lets the server finish.
    s.handle(Packet::PubRec(Ack::new(9)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x62, 0x02, 0x00, 0x09]);
}

#[test]
fn acknowledgements_of_the_wrong_kind_are_protocol_violations() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.publish(publish("t", b"", QoS::ExactlyOnce), t0).unwrap();
    let err = s.handle(Packet::PubAck(Ack::new(1)), t0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol violation by the server: PubAck for packet 1, which is waiting for PubRec"
    );
    let mut s = connected(config(), t0);
    s.publish(publish("t", b"", QoS::AtLeastOnce), t0).unwrap();
    assert!(s.handle(Packet::PubRec(Ack::new(1)), t0).is_err());
    let mut s = connected(config(), t0);
    s.publish(publish("t", b"", QoS::AtLeastOnce), t0).unwrap();
    assert!(s.handle(Packet::PubComp(Ack::new(1)), t0).is_err());
}

#[test]
fn window_limits_qos1_and_qos2_but_not_qos0() {
    let t0 = Instant::now();
    let mut s = connected(
        StateConfig {
            max_inflight: 2,
            ..config()
        },
        t0,
    );
    assert_eq!(s.publish(publish("t", b"", QoS::AtLeastOnce), t0), Ok(1));
    assert_eq!(s.publish(publish("t", b"", QoS::ExactlyOnce), t0), Ok(2));
    assert!(!s.window_open());
    assert_eq!(
        s.publish(publish("t", b"", QoS::AtLeastOnce), t0),
        Err(WindowFull)
    );
    assert_eq!(s.publish(publish("t", b"x", QoS::AtMostOnce), t0), Ok(0));
    s.handle(Packet::PubAck(Ack::new(1)), t0).unwrap();
    assert!(s.window_open());
    assert_eq!(s.publish(publish("t", b"", QoS::AtLeastOnce), t0), Ok(3));
    #[rustfmt::skip]
    assert_eq!(drain(&mut s), [
        0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01, // QoS 1, id 1
        0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x02, // QoS 2, id 2
        0x30, 0x04, 0x00, 0x01, b't', b'x',       // QoS 0, no id
        0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x03, // QoS 1, id 3
    ]);
}

#[test]
fn ids_in_flight_are_never_reused_even_after_wrapping() {
    let t0 = Instant::now();
    let mut s = connected(
        StateConfig {
            max_inflight: 65_535,
            ..config()
        },
        t0,
    );
    // Id 1 stays in flight while 65534 others come and go, twice around.
    assert_eq!(s.publish(publish("t", b"", QoS::AtLeastOnce), t0), Ok(1));
    for round in 0..2 {
        for expected in 2..=u16::MAX {
            let id = s.publish(publish("t", b"", QoS::AtLeastOnce), t0).unwrap();
            assert_eq!(id, expected, "round {round}");
            s.handle(Packet::PubAck(Ack::new(id)), t0).unwrap();
        }
    }
    drain(&mut s);
    // Fill every id: the window is closed and SUBSCRIBE has no id either.
    for _ in 2..=u16::MAX {
        s.publish(publish("t", b"", QoS::AtLeastOnce), t0).unwrap();
    }
    assert_eq!(
        s.publish(publish("t", b"", QoS::AtLeastOnce), t0),
        Err(WindowFull)
    );
    assert!(matches!(
        s.subscribe(vec![(ByteStr::from("a"), QoS::AtMostOnce)], t0),
        Err(ClientError::NoPacketId)
    ));
    s.handle(Packet::PubAck(Ack::new(1000)), t0).unwrap();
    assert_eq!(
        s.subscribe(vec![(ByteStr::from("a"), QoS::AtMostOnce)], t0)
            .unwrap(),
        1000
    );
}

#[test]
fn incoming_qos0_and_qos1() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.handle(incoming(QoS::AtMostOnce, 0, false), t0).unwrap();
    s.handle(incoming(QoS::AtLeastOnce, 7, false), t0).unwrap();
    assert_eq!(drain(&mut s), [0x40, 0x02, 0x00, 0x07]); // PUBACK 7 only
    let got = events(&mut s);
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[1], Event::Message(p) if p.packet_id == 7 && p.qos == QoS::AtLeastOnce));
}

#[test]
fn incoming_qos2_is_delivered_exactly_once() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.handle(incoming(QoS::ExactlyOnce, 5, false), t0).unwrap();
    assert_eq!(drain(&mut s), [0x50, 0x02, 0x00, 0x05]); // PUBREC 5
    assert_eq!(events(&mut s).len(), 1);
    // The server did not see our PUBREC and sends the PUBLISH again: PUBREC, no delivery.
    s.handle(incoming(QoS::ExactlyOnce, 5, true), t0).unwrap();
    assert_eq!(drain(&mut s), [0x50, 0x02, 0x00, 0x05]);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.incoming_unreleased(), 1);
    s.handle(Packet::PubRel(Ack::new(5)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x70, 0x02, 0x00, 0x05]); // PUBCOMP 5
    assert_eq!(s.incoming_unreleased(), 0);
    // A repeated PUBREL is answered again; after release the id carries a new message.
    s.handle(Packet::PubRel(Ack::new(5)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x70, 0x02, 0x00, 0x05]);
    s.handle(incoming(QoS::ExactlyOnce, 5, false), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
}

#[test]
fn subscribe_and_unsubscribe_resolve_on_their_acks() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    let filters = vec![
        (ByteStr::from("a/+"), QoS::AtLeastOnce),
        (ByteStr::from("#"), QoS::ExactlyOnce),
    ];
    assert_eq!(s.subscribe(filters, t0).unwrap(), 1);
    #[rustfmt::skip]
    assert_eq!(drain(&mut s), [
        0x82, 0x0c, 0x00, 0x01,
        0x00, 0x03, b'a', b'/', b'+', 0x01,
        0x00, 0x01, b'#', 0x02,
    ]);
    let codes = vec![
        SubscribeReturnCode::Success(QoS::AtLeastOnce),
        SubscribeReturnCode::FAILURE,
    ];
    s.handle(
        Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: codes.clone(),
            properties: None,
        }),
        t0,
    )
    .unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Subscribed {
            packet_id: 1,
            return_codes: codes
        }]
    );
    assert_eq!(s.unsubscribe(vec![ByteStr::from("a/+")], t0).unwrap(), 2);
    assert_eq!(
        drain(&mut s),
        [0xa2, 0x07, 0x00, 0x02, 0x00, 0x03, b'a', b'/', b'+']
    );
    // SUBACK for the UNSUBSCRIBE's id is wrong; UNSUBACK is right.
    let wrong = Packet::SubAck(SubAck {
        packet_id: 2,
        return_codes: vec![SubscribeReturnCode::FAILURE],
        properties: None,
    });
    assert!(s.handle(wrong, t0).is_err());
    s.handle(Packet::UnsubAck(UnsubAck::new(2)), t0).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Unsubscribed {
            packet_id: 2,
            reasons: vec![ReasonCode::SUCCESS]
        }]
    );
}

#[test]
fn suback_with_the_wrong_number_of_codes_is_a_violation() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.subscribe(vec![(ByteStr::from("a"), QoS::AtMostOnce)], t0)
        .unwrap();
    let ack = Packet::SubAck(SubAck {
        packet_id: 1,
        return_codes: vec![SubscribeReturnCode::FAILURE; 2],
        properties: None,
    });
    let err = s.handle(ack, t0).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Protocol(ProtocolError::SubAckCount {
            expected: 1,
            got: 2,
            ..
        })
    ));
}

#[test]
fn keepalive_pings_when_idle_and_gives_up_without_pingresp() {
    let t0 = Instant::now();
    let s_ = |secs: u64| t0 + Duration::from_secs(secs);
    let mut s = connected(config(), t0);
    assert_eq!(s.next_deadline(), Some(s_(10)));
    s.poll(s_(9)).unwrap();
    assert!(drain(&mut s).is_empty());
    s.poll(s_(10)).unwrap();
    assert_eq!(drain(&mut s), [0xc0, 0x00]); // PINGREQ
                                             // One ping at a time; the deadline is now the PINGRESP's.
    s.poll(s_(12)).unwrap();
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.next_deadline(), Some(s_(15)));
    s.handle(Packet::PingResp, s_(12)).unwrap();
    // Sent at 10, received at 12: the next ping is due at 20.
    assert_eq!(s.next_deadline(), Some(s_(20)));
    s.poll(s_(20)).unwrap();
    assert_eq!(drain(&mut s), [0xc0, 0x00]);
    let err = s.poll(s_(25)).unwrap_err();
    assert_eq!(err.to_string(), "timed out after 5 s waiting for PINGRESP");
}

#[test]
fn keepalive_counts_both_directions() {
    let t0 = Instant::now();
    let s_ = |secs: u64| t0 + Duration::from_secs(secs);
    let mut s = connected(config(), t0);
    // Sending alone does not postpone the ping: the server has been silent since t0.
    s.publish(publish("t", b"", QoS::AtMostOnce), s_(6))
        .unwrap();
    assert_eq!(s.next_deadline(), Some(s_(10)));
    // Traffic both ways does.
    s.handle(incoming(QoS::AtMostOnce, 0, false), s_(7))
        .unwrap();
    assert_eq!(s.next_deadline(), Some(s_(16)));
    // Receiving alone does not either (MQTT-3.1.2-23 is about what the client sends).
    s.handle(incoming(QoS::AtMostOnce, 0, false), s_(15))
        .unwrap();
    assert_eq!(s.next_deadline(), Some(s_(16)));
    // Keepalive 0: never.
    let mut s = connected(
        StateConfig {
            keep_alive: Duration::ZERO,
            ..config()
        },
        t0,
    );
    assert_eq!(s.next_deadline(), None);
    s.poll(s_(100_000)).unwrap();
    assert!(drain(&mut s).is_empty());
}

#[test]
fn persistent_session_resends_in_order_after_reconnect() {
    let t0 = Instant::now();
    let persistent = StateConfig {
        clean_session: false,
        ..config()
    };
    let mut s = connected(persistent, t0);
    s.publish(publish("a", b"1", QoS::AtLeastOnce), t0).unwrap(); // id 1: unacked
    s.publish(publish("b", b"2", QoS::ExactlyOnce), t0).unwrap(); // id 2: PUBREC received
    s.publish(publish("c", b"3", QoS::ExactlyOnce), t0).unwrap(); // id 3: unacked
    s.publish(publish("d", b"4", QoS::AtLeastOnce), t0).unwrap(); // id 4: acked
    s.handle(Packet::PubRec(Ack::new(2)), t0).unwrap();
    s.handle(Packet::PubAck(Ack::new(4)), t0).unwrap();
    s.subscribe(vec![(ByteStr::from("x"), QoS::AtMostOnce)], t0)
        .unwrap(); // id 5
    s.handle(incoming(QoS::ExactlyOnce, 9, false), t0).unwrap();
    drain(&mut s);
    events(&mut s);

    s.connection_lost();
    // Only the request is abandoned; the session keeps the messages.
    assert_eq!(events(&mut s), [Event::Abandoned(5)]);
    // Published while away: queued, not sent, and without DUP when it goes out.
    s.publish(publish("e", b"5", QoS::AtLeastOnce), t0).unwrap();
    assert!(s
        .publish(publish("f", b"", QoS::AtMostOnce), t0)
        .is_ok_and(|id| id == 0));
    assert!(drain(&mut s).is_empty());

    s.connect(t0);
    assert_eq!(drain(&mut s)[0], 0x10);
    s.handle(connack(true), t0).unwrap();
    #[rustfmt::skip]
    assert_eq!(drain(&mut s), [
        0x3a, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // PUBLISH DUP QoS 1, id 1
        0x62, 0x02, 0x00, 0x02,                         // PUBREL id 2
        0x3c, 0x06, 0x00, 0x01, b'c', 0x00, 0x03, b'3', // PUBLISH DUP QoS 2, id 3
        0x32, 0x06, 0x00, 0x01, b'e', 0x00, 0x06, b'5', // PUBLISH QoS 1, id 6 (first send)
    ]);
    // The server kept the session: its QoS 2 message 9 is still a duplicate.
    s.handle(incoming(QoS::ExactlyOnce, 9, true), t0).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Connected {
            session_present: true
        }]
    );
}

#[test]
fn lost_server_session_forgets_incoming_qos2_ids() {
    let t0 = Instant::now();
    let persistent = StateConfig {
        clean_session: false,
        ..config()
    };
    let mut s = connected(persistent, t0);
    s.handle(incoming(QoS::ExactlyOnce, 9, false), t0).unwrap();
    s.connection_lost();
    s.connect(t0);
    s.handle(connack(false), t0).unwrap();
    events(&mut s);
    // Id 9 is a new message now: the server no longer knows the old one.
    s.handle(incoming(QoS::ExactlyOnce, 9, false), t0).unwrap();
    assert!(matches!(events(&mut s)[..], [Event::Message(_)]));
}

#[test]
fn clean_session_abandons_everything_on_loss() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.publish(publish("a", b"", QoS::AtLeastOnce), t0).unwrap();
    s.subscribe(vec![(ByteStr::from("x"), QoS::AtMostOnce)], t0)
        .unwrap();
    s.publish(publish("a", b"", QoS::ExactlyOnce), t0).unwrap();
    s.handle(incoming(QoS::ExactlyOnce, 4, false), t0).unwrap();
    events(&mut s);
    s.connection_lost();
    assert_eq!(
        events(&mut s),
        [
            Event::Abandoned(1),
            Event::Abandoned(2),
            Event::Abandoned(3)
        ]
    );
    assert_eq!((s.inflight(), s.incoming_unreleased()), (0, 0));
    assert!(drain(&mut s).is_empty());
    assert!(matches!(
        s.subscribe(vec![(ByteStr::from("x"), QoS::AtMostOnce)], t0),
        Err(ClientError::Disconnected)
    ));
    s.connect(t0);
    s.handle(connack(false), t0).unwrap();
    assert_eq!(drain(&mut s).len(), 15, "only CONNECT: nothing to resend");
}

#[test]
fn disconnect_sends_disconnect_and_ignores_what_follows() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.disconnect(t0);
    assert_eq!(drain(&mut s), [0xe0, 0x00]);
    assert!(!s.is_connected());
    s.handle(incoming(QoS::AtLeastOnce, 1, false), t0).unwrap();
    assert!(drain(&mut s).is_empty() && events(&mut s).is_empty());
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn ping_deadline_waits_while_the_caller_is_not_reading() {
    let t0 = Instant::now();
    let s_ = |secs: u64| t0 + Duration::from_secs(secs);
    let mut s = connected(config(), t0);
    s.poll(s_(10)).unwrap();
    assert_eq!(drain(&mut s), [0xc0, 0x00]);
    // Not reading from 12 on: the PINGRESP may be unread, so its deadline moves along.
    s.hold_ping_deadline(s_(14));
    s.poll(s_(18)).unwrap();
    assert_eq!(s.next_deadline(), Some(s_(19)));
    assert!(s.poll(s_(19)).is_err());
    // Without a ping outstanding there is nothing to hold.
    let mut s = connected(config(), t0);
    s.hold_ping_deadline(s_(5));
    assert_eq!(s.next_deadline(), Some(s_(10)));
}

// MQTT 5: the same state machine, packets encoded and decoded at level 5.

use crate::client::options::{ClientOptions, Will, WillProperties};
use crate::protocol::decode;

/// Everything in the outbox, encoded at MQTT 5.
pub(super) fn drain_v5(s: &mut ClientState) -> Vec<u8> {
    let mut out = BytesMut::new();
    while let Some(p) = s.pop_packet() {
        p.encode(&mut out, ProtocolLevel::V5).unwrap();
    }
    assert_eq!(s.outbox_bytes(), 0);
    out.to_vec()
}

/// One packet from the server, decoded from its wire bytes at MQTT 5.
pub(super) fn v5(bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, 1 << 20, ProtocolLevel::V5)
        .unwrap()
        .expect("a whole packet");
    assert!(buf.is_empty(), "one packet: {bytes:02x?}");
    p
}

pub(super) fn v5_options() -> ClientOptions {
    ClientOptions {
        client_id: "c".into(),
        keep_alive: 10,
        protocol: ProtocolLevel::V5,
        max_packet_size: 1024,
        ..ClientOptions::new("h", 1)
    }
}

pub(super) fn v5_state(options: &ClientOptions, t0: Instant) -> ClientState {
    let config = StateConfig {
        clean_session: !options.session_persists(),
        ..config()
    };
    ClientState::new(config, options.connect_packet(), t0)
}

/// A v5 state connected by a CONNACK without properties.
pub(super) fn v5_connected(t0: Instant) -> ClientState {
    let mut s = v5_state(&v5_options(), t0);
    s.connect(t0);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x03, 0x00, 0x00, 0x00]), t0).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Connected {
            session_present: false
        }]
    );
    s
}

#[test]
fn v5_options_are_valid_and_v3_ignores_them() {
    let o = ClientOptions {
        session_expiry: Some(60),
        ..v5_options()
    };
    o.validate().unwrap();
    assert!(o.session_persists());
    assert!(!ClientOptions {
        session_expiry: Some(0),
        ..v5_options()
    }
    .session_persists());
    // 3.1.1: no properties on the wire whatever the v5 fields say.
    let v3 = ClientOptions {
        protocol: ProtocolLevel::V311,
        user_properties: vec![("k".into(), "v".into())],
        ..o
    };
    assert!(v3.connect_packet().properties.is_none());
    let bad = ClientOptions {
        receive_maximum: Some(0),
        ..v5_options()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("invalid receive maximum:"));
}

#[test]
fn v5_connect_carries_its_properties_and_the_will_properties() {
    let t0 = Instant::now();
    let options = ClientOptions {
        session_expiry: Some(60),
        receive_maximum: Some(5),
        topic_alias_maximum: Some(4),
        user_properties: vec![("k".into(), "v".into())],
        will: Some(Will {
            properties: WillProperties {
                delay_interval: Some(5),
                payload_format_utf8: Some(true),
                ..WillProperties::default()
            },
            ..Will::new("w", "bye", QoS::AtMostOnce, false)
        }),
        ..v5_options()
    };
    options.validate().unwrap();
    let mut s = v5_state(&options, t0);
    s.connect(t0);
    #[rustfmt::skip]
    assert_eq!(drain_v5(&mut s), [
        0x10, 0x35,                                 // CONNECT, remaining length 53
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,   // "MQTT" level 5
        0x06,                                       // will, clean start
        0x00, 0x0a,                                 // keepalive 10
        0x17,                                       // properties, 23 bytes:
        0x11, 0x00, 0x00, 0x00, 0x3c,               //   session expiry 60
        0x21, 0x00, 0x05,                           //   receive maximum 5
        0x22, 0x00, 0x04,                           //   topic alias maximum 4
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',   //   user property k=v
        0x27, 0x00, 0x00, 0x04, 0x00,               //   maximum packet size 1024
        0x00, 0x01, b'c',                           // client id
        0x07,                                       // will properties, 7 bytes:
        0x01, 0x01,                                 //   payload format: UTF-8
        0x18, 0x00, 0x00, 0x00, 0x05,               //   will delay 5
        0x00, 0x01, b'w',                           // will topic
        0x00, 0x03, b'b', b'y', b'e',               // will payload
    ]);
}

#[test]
fn v5_connack_limits_assigned_id_and_server_keep_alive() {
    let t0 = Instant::now();
    let options = ClientOptions {
        client_id: String::new(),
        session_expiry: Some(60),
        ..v5_options()
    };
    options.validate().unwrap();
    let mut s = v5_state(&options, t0);
    s.connect(t0);
    drain_v5(&mut s);
    #[rustfmt::skip]
    let connack = v5(&[
        0x20, 0x19, 0x00, 0x00, 0x16,
        0x12, 0x00, 0x05, b's', b'r', b'v', b'-', b'1', // assigned client id
        0x13, 0x00, 0x05,                               // server keep alive 5
        0x21, 0x00, 0x02,                               // receive maximum 2
        0x22, 0x00, 0x03,                               // topic alias maximum 3
        0x27, 0x00, 0x00, 0x00, 0x64,                   // maximum packet size 100
    ]);
    s.handle(connack, t0).unwrap();
    assert_eq!(s.assigned_client_id(), Some("srv-1"));
    assert_eq!(s.keep_alive(), Duration::from_secs(5));
    assert_eq!(s.server_maximum_packet_size(), Some(100));
    assert_eq!(s.server_topic_alias_maximum(), 3);
    assert_eq!(s.connack_properties().unwrap().receive_maximum, Some(2));
    // The server's keepalive, not the client's 10 s.
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
    // Receive Maximum 2 caps the window of 10.
    assert_eq!(s.window(), 2);
    s.publish(publish("t", b"1", QoS::AtLeastOnce), t0).unwrap();
    s.publish(publish("t", b"2", QoS::ExactlyOnce), t0).unwrap();
    assert!(!s.window_open());
    assert_eq!(
        s.publish(publish("t", b"3", QoS::AtLeastOnce), t0),
        Err(WindowFull)
    );
    // The next connection resumes the session under the assigned id, without Clean Start.
    s.connection_lost();
    s.connect(t0);
    let connect = drain_v5(&mut s);
    assert_eq!(
        &connect[8..11],
        [0x05, 0x00, 0x00],
        "level 5, no Clean Start"
    );
    let id = [0x00, 0x05, b's', b'r', b'v', b'-', b'1'];
    assert!(connect.windows(id.len()).any(|w| w == id), "{connect:02x?}");
    // A CONNACK without properties restores the client's own keepalive and window.
    s.handle(v5(&[0x20, 0x03, 0x01, 0x00, 0x00]), t0).unwrap();
    assert_eq!(s.keep_alive(), Duration::from_secs(10));
    assert_eq!(s.window(), 10);
}

#[test]
fn v5_refused_connack_keeps_its_reason_code() {
    let t0 = Instant::now();
    let mut s = v5_state(&v5_options(), t0);
    s.connect(t0);
    let e = s
        .handle(v5(&[0x20, 0x03, 0x00, 0x8a, 0x00]), t0)
        .unwrap_err();
    assert!(matches!(
        e,
        ClientError::Refused(ReasonCode::BANNED, ProtocolLevel::V5)
    ));
    assert_eq!(e.to_string(), "connection refused: banned (CONNACK 0x8a)");
}

#[test]
fn v5_puback_failure_completes_the_publish_with_its_reason() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let id = s.publish(publish("t", b"x", QoS::AtLeastOnce), t0).unwrap();
    drain_v5(&mut s);
    // PUBACK 0x87 with Reason String "no".
    #[rustfmt::skip]
    let puback = v5(&[0x40, 0x09, 0x00, id as u8, 0x87, 0x05, 0x1f, 0x00, 0x02, b'n', b'o']);
    s.handle(puback, t0).unwrap();
    let rejected = Event::Rejected {
        packet_id: id,
        ack: PacketType::PubAck,
        reason: ReasonCode::NOT_AUTHORIZED,
        reason_string: Some("no".into()),
    };
    assert_eq!(events(&mut s), [rejected]);
    assert_eq!(s.inflight(), 0);
    // 0x10 "no matching subscribers" is a success.
    let id = s.publish(publish("t", b"y", QoS::AtLeastOnce), t0).unwrap();
    drain_v5(&mut s);
    s.handle(v5(&[0x40, 0x03, 0x00, id as u8, 0x10]), t0)
        .unwrap();
    assert_eq!(events(&mut s), [Event::Published(id)]);
    assert!(s.is_connected());
}

#[test]
fn v5_pubrec_failure_ends_the_qos2_flow_without_pubrel() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let id = s.publish(publish("t", b"x", QoS::ExactlyOnce), t0).unwrap();
    drain_v5(&mut s);
    s.handle(v5(&[0x50, 0x03, 0x00, id as u8, 0x97]), t0)
        .unwrap();
    assert_eq!(
        drain_v5(&mut s),
        [] as [u8; 0],
        "no PUBREL after a refusing PUBREC"
    );
    assert_eq!(
        events(&mut s),
        [Event::Rejected {
            packet_id: id,
            ack: PacketType::PubRec,
            reason: ReasonCode::QUOTA_EXCEEDED,
            reason_string: None,
        }]
    );
    // A successful PUBREC still gets its PUBREL (at level 5: id only, reason 0 implied).
    let id = s.publish(publish("t", b"y", QoS::ExactlyOnce), t0).unwrap();
    drain_v5(&mut s);
    s.handle(v5(&[0x50, 0x02, 0x00, id as u8]), t0).unwrap();
    assert_eq!(drain_v5(&mut s), [0x62, 0x02, 0x00, id as u8]);
    s.handle(v5(&[0x70, 0x02, 0x00, id as u8]), t0).unwrap();
    assert_eq!(events(&mut s), [Event::Published(id)]);
}

#[test]
fn v5_server_disconnect_is_an_error_naming_the_reason() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let e = s.handle(v5(&[0xe0, 0x01, 0x8e]), t0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "server sent DISCONNECT 0x8e session taken over"
    );
    assert!(!s.is_connected());
    // With a Reason String.
    let mut s = v5_connected(t0);
    #[rustfmt::skip]
    let d = v5(&[0xe0, 0x08, 0x8b, 0x06, 0x1f, 0x00, 0x03, b'b', b'y', b'e']);
    let e = s.handle(d, t0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "server sent DISCONNECT 0x8b server shutting down: bye"
    );
    // 3.1.1 servers never send DISCONNECT.
    let mut s = connected(config(), t0);
    let e = s
        .handle(Packet::Disconnect(Disconnect::NORMAL), t0)
        .unwrap_err();
    assert!(matches!(
        e,
        ClientError::Protocol(ProtocolError::UnexpectedPacket(PacketType::Disconnect))
    ));
}

#[test]
fn v5_subscribe_options_and_suback_and_unsuback_reasons() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: crate::protocol::RetainHandling::DoNotSend,
    };
    let properties = Properties {
        subscription_identifiers: [7].into_iter().collect(),
        ..Properties::default()
    };
    let id = s
        .subscribe_with(
            vec![
                (ByteStr::from("a"), options),
                (ByteStr::from("b"), QoS::AtMostOnce.into()),
            ],
            Some(Box::new(properties)),
            t0,
        )
        .unwrap();
    #[rustfmt::skip]
    assert_eq!(drain_v5(&mut s), [
        0x82, 0x0d, 0x00, id as u8,
        0x02, 0x0b, 0x07,           // subscription identifier 7
        0x00, 0x01, b'a', 0x2d,     // QoS 1, No Local, Retain As Published, Retain Handling 2
        0x00, 0x01, b'b', 0x00,
    ]);
    s.handle(v5(&[0x90, 0x05, 0x00, id as u8, 0x00, 0x01, 0x87]), t0)
        .unwrap();
    let codes = vec![
        SubscribeReturnCode::Success(QoS::AtLeastOnce),
        SubscribeReturnCode::Failure(ReasonCode::NOT_AUTHORIZED),
    ];
    assert_eq!(
        events(&mut s),
        [Event::Subscribed {
            packet_id: id,
            return_codes: codes.clone()
        }]
    );
    assert!(ClientError::refused_subscription(codes[0]).is_none());
    assert_eq!(
        ClientError::refused_subscription(codes[1])
            .unwrap()
            .to_string(),
        "SUBACK 0x87 not authorized"
    );

    let id = s
        .unsubscribe(vec![ByteStr::from("a"), ByteStr::from("c")], t0)
        .unwrap();
    assert_eq!(
        drain_v5(&mut s),
        [0xa2, 0x09, 0x00, id as u8, 0x00, 0x00, 0x01, b'a', 0x00, 0x01, b'c']
    );
    s.handle(v5(&[0xb0, 0x05, 0x00, id as u8, 0x00, 0x00, 0x11]), t0)
        .unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Unsubscribed {
            packet_id: id,
            reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        }]
    );
    // One reason for two filters is a protocol violation.
    let id = s
        .unsubscribe(vec![ByteStr::from("a"), ByteStr::from("c")], t0)
        .unwrap();
    let e = s
        .handle(v5(&[0xb0, 0x04, 0x00, id as u8, 0x00, 0x00]), t0)
        .unwrap_err();
    assert!(
        e.to_string().contains("1 reason codes for 2 filters"),
        "{e}"
    );
}

#[test]
fn v5_publish_properties_go_out_and_come_in() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    let out = Publish {
        properties: Some(Box::new(Properties {
            user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
            ..Properties::default()
        })),
        ..publish("t", b"x", QoS::AtMostOnce)
    };
    s.publish(out, t0).unwrap();
    #[rustfmt::skip]
    assert_eq!(drain_v5(&mut s), [
        0x30, 0x0c, 0x00, 0x01, b't',
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        b'x',
    ]);
    #[rustfmt::skip]
    let incoming = v5(&[
        0x30, 0x0e, 0x00, 0x01, b't',
        0x09, 0x03, 0x00, 0x06, b't', b'e', b'x', b't', b'/', b'p',
        b'x',
    ]);
    s.handle(incoming, t0).unwrap();
    let [Event::Message(m)] = &events(&mut s)[..] else {
        panic!("one message")
    };
    assert_eq!(
        m.properties.as_ref().unwrap().content_type.as_deref(),
        Some("text/p")
    );
}

#[test]
fn v5_incoming_topic_aliases_are_resolved() {
    let t0 = Instant::now();
    let options = ClientOptions {
        topic_alias_maximum: Some(2),
        ..v5_options()
    };
    let mut s = v5_state(&options, t0);
    s.connect(t0);
    drain_v5(&mut s);
    s.handle(v5(&[0x20, 0x03, 0x00, 0x00, 0x00]), t0).unwrap();
    events(&mut s);
    // Alias 2 set with topic "a/b", then used with an empty topic.
    s.handle(
        v5(&[
            0x30, 0x0a, 0x00, 0x03, b'a', b'/', b'b', 0x03, 0x23, 0x00, 0x02, b'1',
        ]),
        t0,
    )
    .unwrap();
    s.handle(
        v5(&[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x02, b'2']),
        t0,
    )
    .unwrap();
    let topics: Vec<String> = events(&mut s)
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => format!("{} {:?}", m.topic.as_str(), m.payload),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(topics, ["a/b b\"1\"", "a/b b\"2\""]);
    // Unknown alias, and an alias above the maximum the client announced.
    let e = s
        .handle(
            v5(&[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'3']),
            t0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("not set on this connection"), "{e}");
    let mut s = v5_connected(t0);
    let e = s
        .handle(
            v5(&[0x30, 0x08, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x01, b'1']),
            t0,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("above the Topic Alias Maximum"),
        "{e}"
    );
}

#[test]
fn v5_resends_only_what_the_servers_receive_maximum_allows() {
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
    let ids: Vec<PacketId> = (0..3)
        .map(|_| s.publish(publish("t", b"x", QoS::AtLeastOnce), t0).unwrap())
        .collect();
    drain_v5(&mut s);
    s.connection_lost();
    s.connect(t0);
    drain_v5(&mut s);
    // Receive Maximum 2 this time: two go out again, the third once one is acknowledged.
    s.handle(v5(&[0x20, 0x06, 0x01, 0x00, 0x03, 0x21, 0x00, 0x02]), t0)
        .unwrap();
    let dup = |id: PacketId| [0x3a, 0x07, 0x00, 0x01, b't', 0x00, id as u8, 0x00, b'x'];
    let again = drain_v5(&mut s);
    assert_eq!(again, [dup(ids[0]), dup(ids[1])].concat());
    assert!(!s.window_open());
    s.handle(v5(&[0x40, 0x02, 0x00, ids[0] as u8]), t0).unwrap();
    // The third, DUP set: it was sent on the old connection.
    assert_eq!(drain_v5(&mut s), dup(ids[2]));
    s.handle(v5(&[0x40, 0x02, 0x00, ids[1] as u8]), t0).unwrap();
    s.handle(v5(&[0x40, 0x02, 0x00, ids[2] as u8]), t0).unwrap();
    assert_eq!(drain_v5(&mut s), [] as [u8; 0]);
    assert_eq!(
        events(&mut s)
            .into_iter()
            .filter(|e| matches!(e, Event::Published(_)))
            .count(),
        3
    );
    assert!(s.window_open());
}

#[test]
fn v5_disconnect_with_a_reason() {
    let t0 = Instant::now();
    let mut s = v5_connected(t0);
    s.disconnect_with(
        Disconnect::with_reason(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE),
        t0,
    );
    assert_eq!(drain_v5(&mut s), [0xe0, 0x01, 0x04]);
    assert!(s.is_disconnecting());
}

#[test]
fn manual_acks_wait_for_the_application() {
    let t0 = Instant::now();
    let persistent = StateConfig {
        clean_session: false,
        ..config()
    };
    let mut s = connected(persistent, t0).with_manual_acks();
    // QoS 1: delivered, no PUBACK until acknowledged, then exactly one.
    s.handle(incoming(QoS::AtLeastOnce, 3, false), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    assert!(drain(&mut s).is_empty());
    assert!(s.acknowledge(3, QoS::AtLeastOnce, t0));
    assert_eq!(drain(&mut s), [0x40, 0x02, 0x00, 0x03]); // PUBACK 3
    assert!(
        !s.acknowledge(3, QoS::AtLeastOnce, t0),
        "acknowledged twice"
    );
    assert!(drain(&mut s).is_empty());
    // QoS 2: no PUBREC before the acknowledgement; a repeat meanwhile is not delivered again.
    s.handle(incoming(QoS::ExactlyOnce, 4, false), t0).unwrap();
    s.handle(incoming(QoS::ExactlyOnce, 4, true), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    assert!(drain(&mut s).is_empty());
    assert!(s.acknowledge(4, QoS::ExactlyOnce, t0));
    assert_eq!(drain(&mut s), [0x50, 0x02, 0x00, 0x04]); // PUBREC 4
                                                         // After PUBREC the usual QoS 2 rules: a repeat gets PUBREC again, no delivery.
    s.handle(incoming(QoS::ExactlyOnce, 4, true), t0).unwrap();
    assert!(events(&mut s).is_empty());
    assert_eq!(drain(&mut s), [0x50, 0x02, 0x00, 0x04]);
    s.handle(Packet::PubRel(Ack::new(4)), t0).unwrap();
    assert_eq!(drain(&mut s), [0x70, 0x02, 0x00, 0x04]); // PUBCOMP 4
                                                         // QoS 0 needs nothing.
    s.handle(incoming(QoS::AtMostOnce, 0, false), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    assert!(!s.acknowledge(0, QoS::AtMostOnce, t0));
    // A message of a lost connection is not acknowledged on the next one: the server sends
    // it again, and that copy is acknowledged.
    s.handle(incoming(QoS::AtLeastOnce, 9, false), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    s.connection_lost();
    s.connect(t0);
    s.handle(connack(true), t0).unwrap();
    drain(&mut s);
    events(&mut s);
    assert!(!s.acknowledge(9, QoS::AtLeastOnce, t0));
    s.handle(incoming(QoS::AtLeastOnce, 9, true), t0).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    assert!(s.acknowledge(9, QoS::AtLeastOnce, t0));
    assert_eq!(drain(&mut s), [0x40, 0x02, 0x00, 0x09]);
}

#[test]
fn without_manual_acks_the_client_acknowledges_on_arrival() {
    let t0 = Instant::now();
    let mut s = connected(config(), t0);
    s.handle(incoming(QoS::AtLeastOnce, 3, false), t0).unwrap();
    assert_eq!(drain(&mut s), [0x40, 0x02, 0x00, 0x03]);
    assert!(!s.acknowledge(3, QoS::AtLeastOnce, t0));
}
