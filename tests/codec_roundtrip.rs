//! Property tests: every valid packet of the 14 types survives encode → decode unchanged,
//! `encoded_len` predicts exactly what `encode` writes, and a stream of several packets
//! decodes back in order with nothing left over.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use surgemq::protocol::{
    decode, encode_publish, frame_len, publish_len, ByteStr, ConnAck, Connect, ConnectReturnCode,
    LastWill, Packet, ProtocolLevel, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode,
    Unsubscribe,
};

/// Large enough for anything the strategies build.
const MAX: usize = 1 << 20;

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Any MQTT string: any char but U+0000 and the control characters (MQTT-1.5.3-2), ASCII and
/// multi-byte (2, 3 and 4-byte) mixed.
fn any_string() -> impl Strategy<Value = ByteStr> {
    "[^\u{0}-\u{1f}\u{7f}-\u{9f}]{0,24}".prop_map(ByteStr::from)
}

/// A valid topic name: non-empty, no wildcards, no U+0000; with levels and multi-byte chars.
fn topic_name() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9_ é€😀/-]{1,40}".prop_map(ByteStr::from)
}

/// A topic filter as the decoder accepts it (MQTT-4.7.1-2/-3, MQTT-4.7.3-1): levels that are
/// `+` or free of wildcards, then maybe a last `#` level.
fn topic_filter() -> impl Strategy<Value = ByteStr> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9é€😀 ]{0,4}"];
    (vec(level, 0..6), any::<bool>()).prop_filter_map("empty filter", |(mut levels, multi)| {
        if multi {
            levels.push("#".to_string());
        }
        let filter = levels.join("/");
        (!filter.is_empty()).then(|| ByteStr::from(filter))
    })
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn connect() -> impl Strategy<Value = Packet> {
    let will = (topic_name(), binary(300), qos(), any::<bool>()).prop_map(
        |(topic, payload, qos, retain)| LastWill {
            topic,
            payload,
            qos,
            retain,
        },
    );
    (
        prop_oneof![Just(ProtocolLevel::V31), Just(ProtocolLevel::V311)],
        any::<bool>(),
        any::<u16>(),
        any_string(),
        proptest::option::of(will),
        proptest::option::of(any_string()),
        proptest::option::of(binary(64)),
    )
        .prop_map(
            |(level, clean_session, keep_alive, client_id, will, username, mut password)| {
                // 3.1.1 forbids a password without a user name; 3.1 allows it.
                if level == ProtocolLevel::V311 && username.is_none() {
                    password = None;
                }
                Packet::Connect(Box::new(Connect {
                    level,
                    clean_session,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack() -> impl Strategy<Value = Packet> {
    let code = prop_oneof![
        Just(ConnectReturnCode::Accepted),
        Just(ConnectReturnCode::UnacceptableProtocolVersion),
        Just(ConnectReturnCode::IdentifierRejected),
        Just(ConnectReturnCode::ServerUnavailable),
        Just(ConnectReturnCode::BadUsernameOrPassword),
        Just(ConnectReturnCode::NotAuthorized),
    ];
    (any::<bool>(), code).prop_map(|(session_present, code)| {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
        })
    })
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        binary(4096),
    )
        .prop_map(|(dup, qos, retain, topic, id, payload)| Publish {
            // DUP at QoS 0 is malformed (MQTT-3.3.1-2).
            dup: dup && qos != QoS::AtMostOnce,
            qos,
            retain,
            topic,
            // QoS 0 carries no identifier on the wire, so it decodes as 0.
            packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
            payload,
        })
}

fn return_code() -> impl Strategy<Value = SubscribeReturnCode> {
    prop_oneof![
        qos().prop_map(SubscribeReturnCode::Success),
        Just(SubscribeReturnCode::Failure)
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(),
        connack(),
        publish().prop_map(Packet::Publish),
        packet_id().prop_map(Packet::PubAck),
        packet_id().prop_map(Packet::PubRec),
        packet_id().prop_map(Packet::PubRel),
        packet_id().prop_map(Packet::PubComp),
        (packet_id(), vec((topic_filter(), qos()), 1..8))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (packet_id(), vec(return_code(), 1..8)).prop_map(|(packet_id, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
            })
        }),
        (packet_id(), vec(topic_filter(), 1..8)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        }),
        packet_id().prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity(p in packet()) {
        let mut buf = BytesMut::new();
        p.encode(&mut buf).unwrap();
        prop_assert_eq!(buf.len(), p.encoded_len());
        prop_assert_eq!(frame_len(&buf, MAX), Ok(Some(buf.len())));
        let decoded = decode(&mut buf, MAX).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_of_packets_decodes_in_order(packets in vec(packet(), 1..10)) {
        let mut buf = BytesMut::new();
        let mut total = 0;
        for p in &packets {
            p.encode(&mut buf).unwrap();
            total += p.encoded_len();
        }
        prop_assert_eq!(buf.len(), total);
        for p in &packets {
            let decoded = decode(&mut buf, MAX).unwrap();
            prop_assert_eq!(decoded.as_ref(), Some(p));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode(&mut buf, MAX), Ok(None));
    }

    #[test]
    fn encode_publish_matches_publish_encode(p in publish()) {
        let mut a = BytesMut::new();
        Packet::Publish(p.clone()).encode(&mut a).unwrap();
        let mut b = BytesMut::new();
        encode_publish(&mut b, &p.topic, &p.payload, p.qos, p.retain, p.dup, p.packet_id).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(b.len(), publish_len(p.topic.len(), p.payload.len(), p.qos));
    }
}
