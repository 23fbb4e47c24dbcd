//! Byte-level tests of the log's records (`super`): every kind round-trips, bodies written
//! by earlier versions still read, and a body that does not parse is an error, not a panic.

use super::*;

fn s(v: &str) -> ByteStr {
    ByteStr::from(v)
}

fn every_kind() -> Vec<Record> {
    vec![
        Record::Subscribed {
            session: 7,
            filter: s("v5/#"),
            qos: QoS::AtLeastOnce,
            extras: SubscriptionExtras {
                no_local: true,
                retain_as_published: false,
                subscription_id: 268_435_455,
            },
        },
        Record::Queued {
            session: 7,
            seq: 3,
            topic: s("v5/t"),
            payload: Bytes::from_static(b"p"),
            qos: QoS::ExactlyOnce,
            retain: false,
            extras: Some(Box::new(MessageExtras {
                properties: Bytes::from_static(&[0x26, 0, 1, b'k', 0, 1, b'v']),
                expires_at_ms: Some(1_700_000_000_000),
                subscription_id: 9,
                share: Some(s("$share/g/v5/#")),
                origin: None,
            })),
        },
        Record::Queued {
            session: 7,
            seq: 4,
            topic: s("q2/t"),
            payload: Bytes::from_static(b"p"),
            qos: QoS::ExactlyOnce,
            retain: false,
            extras: Some(Box::new(MessageExtras {
                origin: Some(Qos2Origin { shard: 3, reg: 12 }),
                ..MessageExtras::default()
            })),
        },
        Record::Retained {
            topic: s("v5/r"),
            payload: Bytes::from_static(b"r"),
            qos: QoS::AtMostOnce,
            extras: Some(Box::new(MessageExtras {
                properties: Bytes::new(),
                expires_at_ms: Some(5),
                subscription_id: 0,
                share: None,
                origin: None,
            })),
        },
        Record::SessionExpiry {
            session: 7,
            secs: 3600,
        },
        Record::Withdrawn { session: 7, seq: 3 },
        Record::DelayedWill {
            session: 7,
            due_ms: 1_700_000_000_000,
            topic: s("wills/7"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            extras: Some(Box::new(MessageExtras {
                properties: Bytes::from_static(&[0x01, 0x01]),
                ..MessageExtras::default()
            })),
        },
        Record::WillDone { session: 7 },
        Record::SessionBegan {
            session: 7,
            client_id: s("sensor-1"),
            username: Some(s("alice")),
        },
        Record::SessionBegan {
            session: 8,
            client_id: s(""),
            username: None,
        },
        Record::SessionEnded { session: 7 },
        Record::Subscribed {
            session: 7,
            filter: s("a/+/#"),
            qos: QoS::ExactlyOnce,
            extras: Default::default(),
        },
        Record::Unsubscribed {
            session: 7,
            filter: s("a/+/#"),
        },
        Record::Queued {
            session: 7,
            seq: 1 << 40,
            topic: s("a/b"),
            payload: Bytes::from_static(b"\x00payload\xff"),
            qos: QoS::AtLeastOnce,
            retain: true,
            extras: Default::default(),
        },
        Record::Sent {
            session: 7,
            seq: 3,
            packet_id: 65535,
        },
        Record::Received {
            session: 7,
            packet_id: 1,
        },
        Record::Completed {
            session: 7,
            packet_id: 2,
        },
        Record::IncomingQos2 {
            session: 7,
            packet_id: 3,
            reg: 0,
        },
        Record::IncomingQos2 {
            session: 7,
            packet_id: 4,
            reg: 99,
        },
        Record::Qos2Accepted {
            session: 7,
            packet_id: 4,
        },
        Record::Qos2Counter { next: 100 },
        Record::Released {
            session: 7,
            packet_id: 4,
        },
        Record::Detached {
            session: 7,
            at_ms: 1_764_480_000_000,
        },
        Record::Attached {
            session: 7,
            at_ms: 1_764_480_001_000,
        },
        Record::Retained {
            topic: s("r/t"),
            payload: Bytes::from_static(b"on"),
            qos: QoS::AtMostOnce,
            extras: Default::default(),
        },
        Record::RetainCleared { topic: s("r/t") },
        Record::SnapshotEnd,
        Record::LastPacketId {
            session: 7,
            packet_id: 65535,
        },
    ]
}

#[test]
fn every_kind_round_trips() {
    for record in every_kind() {
        let mut body = BytesMut::new();
        let kind = record.encode(&mut body);
        assert_eq!(Record::decode(kind, body.freeze()), Ok(record));
    }
}

#[test]
fn a_qos2_origin_rides_after_an_empty_share_and_a_registration_after_the_id() {
    let mut body = BytesMut::new();
    Record::Queued {
        session: 1,
        seq: 2,
        topic: s("t"),
        payload: Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        extras: Some(Box::new(MessageExtras {
            origin: Some(Qos2Origin { shard: 1, reg: 5 }),
            ..MessageExtras::default()
        })),
    }
    .encode(&mut body);
    #[rustfmt::skip]
    let tail = [
        0, 0, 0, 0,             // subscription id 0
        0, 0, 0, 0, 0, 0, 0, 0, // no expiry
        0, 0, 0, 0,             // no properties
        0, 0,                   // share: empty (none)
        1, 0,                   // origin shard 1
        5, 0, 0, 0, 0, 0, 0, 0, // registration 5
    ];
    assert!(body.ends_with(&tail), "{body:02x?}");
    let mut body = BytesMut::new();
    let kind = Record::IncomingQos2 {
        session: 1,
        packet_id: 2,
        reg: 7,
    }
    .encode(&mut body);
    assert_eq!(kind, 9);
    assert_eq!(
        &body[..],
        &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 7, 0, 0, 0, 0, 0, 0, 0]
    );
    // Written before registrations: no number, accepted.
    let old = Record::decode(9, Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0]));
    assert_eq!(
        old,
        Ok(Record::IncomingQos2 {
            session: 1,
            packet_id: 2,
            reg: 0
        })
    );
}

#[test]
fn a_queued_message_in_bytes() {
    let mut body = BytesMut::new();
    let kind = Record::Queued {
        session: 1,
        seq: 2,
        topic: s("t"),
        payload: Bytes::from_static(b"hi"),
        qos: QoS::ExactlyOnce,
        retain: true,
        extras: Default::default(),
    }
    .encode(&mut body);
    assert_eq!(kind, 5);
    #[rustfmt::skip]
    let expected = [
        1, 0, 0, 0, 0, 0, 0, 0, // session 1
        2, 0, 0, 0, 0, 0, 0, 0, // seq 2
        1, 0, b't',             // topic "t"
        0x12,                   // QoS 2, retain
        2, 0, 0, 0, b'h', b'i', // payload "hi"
    ];
    assert_eq!(&body[..], &expected);
}

/// The record as a log from before MQTT 5's trailers has it.
fn without_extras(r: &Record) -> Record {
    let mut r = r.clone();
    match &mut r {
        Record::Subscribed { extras, .. } => *extras = SubscriptionExtras::default(),
        Record::Queued { extras, .. }
        | Record::Retained { extras, .. }
        | Record::DelayedWill { extras, .. } => *extras = None,
        _ => {}
    }
    r
}

/// The record as a log from before shared subscriptions has it.
fn without_share(r: &Record) -> Record {
    let mut r = r.clone();
    if let Record::Queued {
        extras: Some(e), ..
    } = &mut r
    {
        e.share = None;
        e.origin = None;
    }
    r
}

/// `r` as logs written before incoming QoS 2 registrations would have it.
fn without_qos2(r: &Record) -> Record {
    let mut r = r.clone();
    match &mut r {
        Record::Queued {
            extras: Some(e), ..
        } => e.origin = None,
        Record::IncomingQos2 { reg, .. } => *reg = 0,
        // (Nor the time of an attach.)
        Record::Attached { at_ms, .. } => *at_ms = 0,
        _ => {}
    }
    r
}

#[test]
fn every_cut_body_is_an_error_not_a_panic() {
    for record in every_kind() {
        let mut body = BytesMut::new();
        let kind = record.encode(&mut body);
        for cut in 0..body.len() {
            let short = Bytes::copy_from_slice(&body[..cut]);
            match Record::decode(kind, short) {
                Err(_) => {}
                // Cut exactly before the MQTT 5 trailer, or before the shared
                // subscription or the QoS 2 origin after it, or before a registration
                // number or an attach's time: a record as older logs wrote it.
                Ok(r) => assert!(
                    r == without_extras(&record)
                        || r == without_share(&record)
                        || r == without_qos2(&record),
                    "{record:?} cut at {cut}: {r:?}"
                ),
            }
        }
        let mut long = body.to_vec();
        long.push(0);
        assert!(
            Record::decode(kind, Bytes::from(long)).is_err(),
            "{record:?} with a byte more"
        );
    }
}

#[test]
fn bad_kinds_qos_and_strings_are_errors() {
    assert_eq!(
        Record::decode(99, Bytes::new()),
        Err(RecordError::UnknownKind(99))
    );
    let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 0, b'f', 3];
    assert_eq!(
        Record::decode(3, Bytes::from(body.clone())),
        Err(RecordError::BadQoS(3, 3))
    );
    body[10] = 0xff;
    body[11] = 1;
    assert_eq!(
        Record::decode(3, Bytes::from(body)),
        Err(RecordError::NotUtf8(3))
    );
}
