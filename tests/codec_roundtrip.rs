//! Property tests: every valid packet of the 14 types of 3.1.1 and the 15 of MQTT 5 (with any
//! properties and reason codes its type allows) survives encode → decode unchanged at its
//! protocol level, `encoded_len` predicts exactly what `encode` writes, and a stream of several
//! packets decodes back in order with nothing left over.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use surgemq::protocol::{
    decode, encode_publish, frame_len, publish_len, Ack, Auth, ByteStr, ConnAck, Connect,
    Disconnect, LastWill, Packet, Properties, ProtocolLevel, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeReturnCode, SubscriptionOptions, UnsubAck,
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
            properties: None,
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
                    bridge: false,
                    clean_session,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: None,
                }))
            },
        )
}

fn connack() -> impl Strategy<Value = Packet> {
    let code = prop_oneof![
        Just(ReasonCode::SUCCESS),
        Just(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        Just(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        Just(ReasonCode::SERVER_UNAVAILABLE),
        Just(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        Just(ReasonCode::NOT_AUTHORIZED),
    ];
    (any::<bool>(), code).prop_map(|(session_present, code)| {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties: None,
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
            properties: None,
        })
}

fn return_code() -> impl Strategy<Value = SubscribeReturnCode> {
    prop_oneof![
        qos().prop_map(SubscribeReturnCode::Success),
        Just(SubscribeReturnCode::FAILURE)
    ]
}

/// The 3.1/3.1.1 packets: no properties, no reason codes.
fn packet_v3() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect(),
        connack(),
        publish().prop_map(Packet::Publish),
        packet_id().prop_map(|id| Packet::PubAck(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRec(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRel(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubComp(Ack::new(id))),
        (packet_id(), vec((topic_filter(), qos()), 1..8)).prop_map(|(packet_id, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters: filters.into_iter().map(|(f, q)| (f, q.into())).collect(),
                properties: None,
            })
        }),
        (packet_id(), vec(return_code(), 1..8)).prop_map(|(packet_id, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
                properties: None,
            })
        }),
        (packet_id(), vec(topic_filter(), 1..8)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties: None,
            })
        }),
        packet_id().prop_map(|id| Packet::UnsubAck(UnsubAck::new(id))),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect(Disconnect::NORMAL)),
    ]
}

// ---- MQTT 5 ----

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn user_properties() -> impl Strategy<Value = Vec<(ByteStr, ByteStr)>> {
    vec((any_string(), any_string()), 0..3)
}

/// `None` for a block with nothing set: that is how an empty block decodes.
fn boxed(p: Properties) -> Option<Box<Properties>> {
    (p != Properties::default()).then(|| Box::new(p))
}

/// A Reason String and User Properties: what acks, SUBACK and UNSUBACK may carry.
fn reason_properties() -> impl Strategy<Value = Option<Box<Properties>>> {
    (opt(any_string()), user_properties()).prop_map(|(reason_string, user_properties)| {
        boxed(Properties {
            reason_string,
            user_properties,
            ..Properties::default()
        })
    })
}

/// Every property a PUBLISH may carry, Subscription Identifiers included (a server's PUBLISH
/// has one per matching subscription).
fn publish_properties() -> impl Strategy<Value = Properties> {
    (
        opt(any::<bool>()),
        opt(any::<u32>()),
        opt(any_string()),
        opt(topic_name()),
        opt(binary(16)),
        vec(1..=268_435_455u32, 0..3),
        opt(1..=u16::MAX),
        user_properties(),
    )
        .prop_map(|(pfi, expiry, ct, rt, cd, ids, alias, user)| Properties {
            payload_format_utf8: pfi,
            message_expiry_interval: expiry,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            subscription_identifiers: ids.into_iter().collect(),
            topic_alias: alias,
            user_properties: user,
            ..Properties::default()
        })
}

fn will_v5() -> impl Strategy<Value = LastWill> {
    (
        topic_name(),
        binary(64),
        qos(),
        any::<bool>(),
        publish_properties(),
        opt(any::<u32>()),
    )
        .prop_map(|(topic, payload, qos, retain, mut p, delay)| {
            p.subscription_identifiers.clear();
            p.topic_alias = None;
            p.will_delay_interval = delay;
            LastWill {
                topic,
                payload,
                qos,
                retain,
                properties: boxed(p),
            }
        })
}

fn connect_v5() -> impl Strategy<Value = Packet> {
    let props = (
        opt(any::<u32>()),
        opt(1..=u16::MAX),
        opt(1..=u32::MAX),
        opt(any::<u16>()),
        opt(any::<bool>()),
        opt(any::<bool>()),
        opt(any_string()),
        opt(binary(16)),
        user_properties(),
    )
        .prop_map(|(sei, rm, mps, tam, rri, rpi, am, ad, user)| {
            boxed(Properties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: user,
                ..Properties::default()
            })
        });
    (
        any::<bool>(),
        any::<u16>(),
        any_string(),
        opt(will_v5()),
        opt(any_string()),
        opt(binary(16)),
        props,
    )
        .prop_map(
            // MQTT 5 allows a password without a user name.
            |(clean_session, keep_alive, client_id, will, username, password, properties)| {
                Packet::Connect(Box::new(Connect {
                    level: ProtocolLevel::V5,
                    bridge: false,
                    clean_session,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack_v5() -> impl Strategy<Value = Packet> {
    let code = prop_oneof![
        Just(0x00u8),
        0x80..=0x8au8,
        Just(0x8c),
        Just(0x90),
        Just(0x95),
        Just(0x97),
        0x99..=0x9du8,
        Just(0x9f)
    ];
    let props = (
        (
            opt(any::<u32>()),
            opt(any_string()),
            opt(any::<u16>()),
            opt(1..=u16::MAX),
            opt(any::<u16>()),
            opt(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        ),
        (
            opt(any::<bool>()),
            opt(1..=u32::MAX),
            opt(any::<bool>()),
            opt(any::<bool>()),
            opt(any::<bool>()),
            opt(any_string()),
            user_properties(),
        ),
    )
        .prop_map(
            |((sei, aci, ska, rm, tam, mq), (ra, mps, wsa, sia, ssa, rs, user))| {
                boxed(Properties {
                    session_expiry_interval: sei,
                    assigned_client_identifier: aci,
                    server_keep_alive: ska,
                    receive_maximum: rm,
                    topic_alias_maximum: tam,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    wildcard_subscription_available: wsa,
                    subscription_identifier_available: sia,
                    shared_subscription_available: ssa,
                    reason_string: rs,
                    user_properties: user,
                    ..Properties::default()
                })
            },
        );
    (any::<bool>(), code, props).prop_map(|(session_present, code, properties)| {
        Packet::ConnAck(ConnAck {
            session_present,
            code: ReasonCode(code),
            properties,
        })
    })
}

fn publish_v5() -> impl Strategy<Value = Publish> {
    (publish(), publish_properties(), any::<bool>()).prop_map(|(mut p, props, empty_topic)| {
        // An empty topic is allowed only with a Topic Alias.
        if empty_topic && props.topic_alias.is_some() {
            p.topic = ByteStr::from("");
        }
        p.properties = boxed(props);
        p
    })
}

fn ack_v5(codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    (
        packet_id(),
        proptest::sample::select(codes),
        reason_properties(),
    )
        .prop_map(|(packet_id, code, properties)| Ack {
            packet_id,
            reason: ReasonCode(code),
            properties,
        })
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_FAILURES: &[u8] = &[0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn subscription_options() -> impl Strategy<Value = SubscriptionOptions> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(|(qos, no_local, retain_as_published, retain_handling)| {
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            }
        })
}

fn disconnect_v5() -> impl Strategy<Value = Packet> {
    let props = (
        opt(any::<u32>()),
        opt(any_string()),
        opt(any_string()),
        user_properties(),
    )
        .prop_map(|(sei, sr, rs, user)| {
            boxed(Properties {
                session_expiry_interval: sei,
                server_reference: sr,
                reason_string: rs,
                user_properties: user,
                ..Properties::default()
            })
        });
    (proptest::sample::select(DISCONNECT_CODES), props).prop_map(|(code, properties)| {
        Packet::Disconnect(Disconnect {
            reason: ReasonCode(code),
            properties,
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    let props = (
        opt(any_string()),
        opt(binary(16)),
        opt(any_string()),
        user_properties(),
    )
        .prop_map(|(am, ad, rs, user)| {
            boxed(Properties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: user,
                ..Properties::default()
            })
        });
    (proptest::sample::select(&[0x00u8, 0x18, 0x19][..]), props).prop_map(|(code, properties)| {
        Packet::Auth(Auth {
            reason: ReasonCode(code),
            properties,
        })
    })
}

/// Every MQTT 5 packet, with any properties its type allows and any reason code it may carry.
fn packet_v5() -> impl Strategy<Value = Packet> {
    let sub_props = (opt(1..=268_435_455u32), user_properties()).prop_map(|(id, user)| {
        boxed(Properties {
            subscription_identifiers: id.into_iter().collect(),
            user_properties: user,
            ..Properties::default()
        })
    });
    let unsub_props = user_properties().prop_map(|user| {
        boxed(Properties {
            user_properties: user,
            ..Properties::default()
        })
    });
    let suback_code = prop_oneof![
        qos().prop_map(SubscribeReturnCode::Success),
        proptest::sample::select(SUBACK_FAILURES)
            .prop_map(|c| SubscribeReturnCode::Failure(ReasonCode(c))),
    ];
    prop_oneof![
        connect_v5(),
        connack_v5(),
        publish_v5().prop_map(Packet::Publish),
        ack_v5(PUBACK_CODES).prop_map(Packet::PubAck),
        ack_v5(PUBACK_CODES).prop_map(Packet::PubRec),
        ack_v5(PUBREL_CODES).prop_map(Packet::PubRel),
        ack_v5(PUBREL_CODES).prop_map(Packet::PubComp),
        (
            packet_id(),
            vec((topic_filter(), subscription_options()), 1..8),
            sub_props
        )
            .prop_map(
                |(packet_id, filters, properties)| Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            ),
        (packet_id(), vec(suback_code, 1..8), reason_properties()).prop_map(
            |(packet_id, return_codes, properties)| Packet::SubAck(SubAck {
                packet_id,
                return_codes,
                properties,
            })
        ),
        (packet_id(), vec(topic_filter(), 1..8), unsub_props).prop_map(
            |(packet_id, filters, properties)| Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        ),
        (
            packet_id(),
            vec(proptest::sample::select(UNSUBACK_CODES), 1..8),
            reason_properties()
        )
            .prop_map(
                |(packet_id, reasons, properties)| Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons: reasons.into_iter().map(ReasonCode).collect(),
                    properties,
                })
            ),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect_v5(),
        auth(),
    ]
}

/// A packet and the level it is sent at: every 3.1/3.1.1 packet and every MQTT 5 one.
fn packet() -> impl Strategy<Value = (ProtocolLevel, Packet)> {
    prop_oneof![
        packet_v3().prop_map(|p| (ProtocolLevel::V311, p)),
        packet_v5().prop_map(|p| (ProtocolLevel::V5, p)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_of_encode_is_identity((level, p) in packet()) {
        let mut buf = BytesMut::new();
        p.encode(&mut buf, level).unwrap();
        prop_assert_eq!(buf.len(), p.encoded_len(level));
        prop_assert_eq!(frame_len(&buf, MAX, level), Ok(Some(buf.len())));
        let decoded = decode(&mut buf, MAX, level).unwrap();
        prop_assert_eq!(decoded.as_ref(), Some(&p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_of_packets_decodes_in_order(
        v5 in any::<bool>(),
        v3_packets in vec(packet_v3(), 1..10),
        v5_packets in vec(packet_v5(), 1..10),
    ) {
        let (level, packets) = if v5 {
            (ProtocolLevel::V5, v5_packets)
        } else {
            (ProtocolLevel::V311, v3_packets)
        };
        let mut buf = BytesMut::new();
        let mut total = 0;
        for p in &packets {
            p.encode(&mut buf, level).unwrap();
            total += p.encoded_len(level);
        }
        prop_assert_eq!(buf.len(), total);
        for p in &packets {
            let decoded = decode(&mut buf, MAX, level).unwrap();
            prop_assert_eq!(decoded.as_ref(), Some(p));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode(&mut buf, MAX, level), Ok(None));
    }

    #[test]
    fn encode_publish_matches_publish_encode(p in publish()) {
        let mut a = BytesMut::new();
        Packet::Publish(p.clone()).encode(&mut a, ProtocolLevel::V311).unwrap();
        let mut b = BytesMut::new();
        encode_publish(&mut b, &p.topic, &p.payload, p.qos, p.retain, p.dup, p.packet_id).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(b.len(), publish_len(p.topic.len(), p.payload.len(), p.qos));
    }

    /// A v5 packet written for a 3.1.1 peer loses its properties and reason codes and reads
    /// back as the 3.1.1 packet it stands for.
    #[test]
    fn a_v5_publish_sent_to_a_v3_peer_has_no_properties(p in publish_v5()) {
        prop_assume!(!p.topic.is_empty());
        let mut buf = BytesMut::new();
        Packet::Publish(p.clone()).encode(&mut buf, ProtocolLevel::V311).unwrap();
        let Some(Packet::Publish(decoded)) = decode(&mut buf, MAX, ProtocolLevel::V311).unwrap() else {
            panic!("not a PUBLISH");
        };
        prop_assert_eq!(decoded, Publish { properties: None, ..p });
    }
}
