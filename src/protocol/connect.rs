//! CONNECT and CONNACK: the session handshake. Owns the protocol name/level negotiation
//! (MQTT 3.1 "MQIsdp"/3, MQTT 3.1.1 "MQTT"/4 and MQTT 5 "MQTT"/5), the connect flags and their
//! consistency rules, and the payload fields that depend on them (will, user name, password),
//! with MQTT 5's connect and will properties.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{
    check_field_len, check_remaining_len, packet_len, put_field, put_fixed_header, Reader,
};
use super::properties::{
    check_properties, decode_properties, properties_len, put_properties, PropertyContext,
};
use super::reason;
use super::{
    ConnAck, Connect, DecodeError, EncodeError, LastWill, PacketType, ProtocolLevel, QoS,
    ReasonCode,
};

const USERNAME: u8 = 0x80;
/// The protocol level's top bit: a bridge between brokers (Mosquitto's `try_private`).
const BRIDGE: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_QOS_SHIFT: u8 = 3;
const WILL: u8 = 0x04;
const CLEAN_SESSION: u8 = 0x02;
const RESERVED: u8 = 0x01;

/// The protocol level a CONNECT at the start of `buf` declares ("MQTT" or "MQIsdp", then the
/// level byte), read without decoding the rest. A broker answers a CONNECT it cannot decode in
/// the client's own version: MQTT 5 clients hear CONNACK 0x81 or 0x82 (5.0 4.13.1).
pub fn declared_level(buf: &[u8]) -> Option<ProtocolLevel> {
    if buf.first()? >> 4 != PacketType::Connect as u8 {
        return None;
    }
    // Skip the remaining length (1 to 4 bytes, the last without its continuation bit).
    let len_bytes = buf[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = &buf[1 + len_bytes..];
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let name = rest.get(2..2 + name_len)?;
    match (name, *rest.get(2 + name_len)? & !BRIDGE) {
        (b"MQTT", 4) => Some(ProtocolLevel::V311),
        (b"MQTT", 5) => Some(ProtocolLevel::V5),
        (b"MQIsdp", 3) => Some(ProtocolLevel::V31),
        _ => None,
    }
}

/// Decodes the body of a CONNECT. The order of checks follows the wire order, so the first
/// rule broken is the one reported.
pub(crate) fn decode_connect(body: Bytes) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(PacketType::Connect, body);

    let name = r.field_slice("protocol name runs past the remaining length")?;
    // The name is compared as bytes: an unknown name is refused whatever its encoding.
    let mqtt = match r.slice(name) {
        b"MQTT" => true,
        b"MQIsdp" => false,
        other => {
            return Err(DecodeError::InvalidProtocolName(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    let level_byte = r.u8("protocol level missing")?;
    // Mosquitto's bridges set the top bit of a 3.1/3.1.1 level (`try_private`): the client is
    // a broker, which must not get its own messages back and wants retain flags as published.
    let bridge = level_byte & BRIDGE != 0;
    // A known name with another version's level is still a version we do not speak: the
    // broker answers it with CONNACK 0x01 (0x84 in MQTT 5) rather than dropping the connection.
    let level = match (mqtt, level_byte & !BRIDGE) {
        (true, 4) => ProtocolLevel::V311,
        (true, 5) if !bridge => ProtocolLevel::V5,
        (false, 3) => ProtocolLevel::V31,
        _ => return Err(DecodeError::UnsupportedProtocolLevel(level_byte)),
    };

    let flags = r.u8("connect flags missing")?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & WILL != 0;
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    let will_retain = flags & WILL_RETAIN != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
    let username_flag = flags & USERNAME != 0;
    let password_flag = flags & PASSWORD != 0;
    // MQTT 3.1 allowed a password alone; 3.1.1 forbids it.
    if password_flag && !username_flag && level == ProtocolLevel::V311 {
        return Err(DecodeError::PasswordWithoutUsername);
    }

    let keep_alive = r.u16("keep alive missing")?;
    let properties = if level.is_v5() {
        decode_properties(&mut r, PropertyContext::Packet(PacketType::Connect))?
    } else {
        None
    };
    let client_id = r.string("client identifier runs past the remaining length")?;
    let will = if will_flag {
        let properties = if level.is_v5() {
            decode_properties(&mut r, PropertyContext::Will)?
        } else {
            None
        };
        let topic = r.topic_name("will topic runs past the remaining length")?;
        let payload = r.binary("will message runs past the remaining length")?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name runs past the remaining length")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password runs past the remaining length")?)
    } else {
        None
    };
    r.finish("bytes left over after the last CONNECT field")?;

    Ok(Connect {
        level,
        bridge,
        clean_session: flags & CLEAN_SESSION != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Decodes the two body bytes of a 3.1/3.1.1 CONNACK.
pub(crate) fn decode_connack(flags: u8, code: u8) -> Result<ConnAck, DecodeError> {
    if flags & !0x01 != 0 {
        return Err(DecodeError::InvalidConnAckFlags(flags));
    }
    let code =
        ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidConnectReturnCode(code))?;
    Ok(ConnAck::new(flags & 0x01 != 0, code))
}

/// Decodes the body of an MQTT 5 CONNACK: flags, reason code, properties.
pub(crate) fn decode_connack_v5(body: Bytes) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(PacketType::ConnAck, body);
    let flags = r.u8("acknowledge flags missing")?;
    if flags & !0x01 != 0 {
        return Err(DecodeError::InvalidConnAckFlags(flags));
    }
    let code = r.u8("reason code missing")?;
    if !reason::allowed(PacketType::ConnAck, code) {
        return Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code,
        });
    }
    let properties = decode_properties(&mut r, PropertyContext::Packet(PacketType::ConnAck))?;
    r.finish("bytes left over after the CONNACK properties")?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        code: ReasonCode(code),
        properties,
    })
}

/// Body length of a CONNECT, computed from the field lengths as they are (unchecked).
pub(crate) fn connect_remaining_len(c: &Connect) -> usize {
    let mut len = 2 + c.level.name().len() + 1 + 1 + 2 + 2 + c.client_id.len();
    if c.level.is_v5() {
        len += properties_len(&c.properties);
    }
    if let Some(w) = &c.will {
        len += 2 + w.topic.len() + 2 + w.payload.len();
        if c.level.is_v5() {
            len += properties_len(&w.properties);
        }
    }
    if let Some(u) = &c.username {
        len += 2 + u.len();
    }
    if let Some(p) = &c.password {
        len += 2 + p.len();
    }
    len
}

pub(crate) fn encode_connect(c: &Connect, dst: &mut BytesMut) -> Result<(), EncodeError> {
    check_field_len(c.client_id.len())?;
    if let Some(w) = &c.will {
        check_field_len(w.topic.len())?;
        check_field_len(w.payload.len())?;
    }
    if let Some(u) = &c.username {
        check_field_len(u.len())?;
    }
    if let Some(p) = &c.password {
        check_field_len(p.len())?;
    }
    if c.password.is_some() && c.username.is_none() && c.level == ProtocolLevel::V311 {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    let v5 = c.level.is_v5();
    if v5 {
        check_properties(&c.properties)?;
        if let Some(w) = &c.will {
            check_properties(&w.properties)?;
        }
    }
    let remaining_len = connect_remaining_len(c);
    check_remaining_len(remaining_len)?;

    let mut flags = 0u8;
    if c.clean_session {
        flags |= CLEAN_SESSION;
    }
    if let Some(w) = &c.will {
        flags |= WILL | ((w.qos as u8) << WILL_QOS_SHIFT);
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }

    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (PacketType::Connect as u8) << 4, remaining_len);
    put_field(dst, c.level.name().as_bytes());
    let bridge = if c.bridge && !v5 { BRIDGE } else { 0 };
    dst.put_u8(c.level.level() | bridge);
    dst.put_u8(flags);
    dst.put_u16(c.keep_alive);
    if v5 {
        put_properties(dst, &c.properties);
    }
    put_field(dst, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_properties(dst, &w.properties);
        }
        put_field(dst, w.topic.as_bytes());
        put_field(dst, &w.payload);
    }
    if let Some(u) = &c.username {
        put_field(dst, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_field(dst, p);
    }
    Ok(())
}

pub(crate) fn connack_remaining_len(ack: &ConnAck, v5: bool) -> usize {
    if v5 {
        2 + properties_len(&ack.properties)
    } else {
        2
    }
}

pub(crate) fn encode_connack(
    ack: &ConnAck,
    dst: &mut BytesMut,
    v5: bool,
) -> Result<(), EncodeError> {
    if v5 {
        check_properties(&ack.properties)?;
    }
    let remaining_len = connack_remaining_len(ack, v5);
    check_remaining_len(remaining_len)?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (PacketType::ConnAck as u8) << 4, remaining_len);
    dst.put_u8(u8::from(ack.session_present));
    if v5 {
        dst.put_u8(ack.code.0);
        put_properties(dst, &ack.properties);
    } else {
        dst.put_u8(ack.code.to_v3_connack());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all, decode_err, encode_bytes};
    use super::super::{ByteStr, Packet};
    use super::*;

    #[test]
    fn declared_level_reads_only_the_name_and_level() {
        // An MQTT 5 CONNECT cut off right after the level byte: still recognised.
        assert_eq!(
            declared_level(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]),
            Some(ProtocolLevel::V5)
        );
        // A two-byte remaining length.
        assert_eq!(
            declared_level(&[0x10, 0x80, 0x01, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]),
            Some(ProtocolLevel::V311)
        );
        assert_eq!(
            declared_level(&[0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03]),
            Some(ProtocolLevel::V31)
        );
        // Not a CONNECT; unknown level; cut short.
        assert_eq!(declared_level(&[0x30, 0x02, 0x00, 0x00]), None);
        assert_eq!(
            declared_level(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06]),
            None
        );
        assert_eq!(declared_level(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q']), None);
        assert_eq!(declared_level(&[0x10, 0x80, 0x80, 0x80, 0x80]), None);
    }

    fn connect_v311_full() -> Connect {
        Connect {
            level: ProtocolLevel::V311,
            bridge: false,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteStr::from("cid"),
            will: Some(LastWill {
                topic: ByteStr::from("w/t"),
                payload: Bytes::from_static(&[0xde, 0xad]),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            }),
            username: Some(ByteStr::from("user")),
            password: Some(Bytes::from_static(&[0x01, 0x02])),
            properties: None,
        }
    }

    #[rustfmt::skip]
    const CONNECT_V311_FULL: &[u8] = &[
        0x10, 0x22,                     // CONNECT, remaining length 34
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04,                           // protocol level 4 (3.1.1)
        0xee,                           // flags: user, password, will retain, will QoS 1, will, clean session
        0x00, 0x3c,                     // keep alive 60 s
        0x00, 0x03, b'c', b'i', b'd',   // client id "cid"
        0x00, 0x03, b'w', b'/', b't',   // will topic "w/t"
        0x00, 0x02, 0xde, 0xad,         // will message (binary)
        0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
        0x00, 0x02, 0x01, 0x02,         // password (binary)
    ];

    #[test]
    fn connect_v311_both_directions() {
        let p = Packet::Connect(Box::new(connect_v311_full()));
        assert_eq!(decode_all(CONNECT_V311_FULL), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), CONNECT_V311_FULL);
        assert_eq!(p.encoded_len(ProtocolLevel::V311), CONNECT_V311_FULL.len());
    }

    #[rustfmt::skip]
    const CONNECT_V31_MINIMAL: &[u8] = &[
        0x10, 0x10,                     // CONNECT, remaining length 16
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                           // protocol level 3 (3.1)
        0x02,                           // flags: clean session
        0x00, 0x0a,                     // keep alive 10 s
        0x00, 0x02, b'a', b'b',         // client id "ab"
    ];

    #[test]
    fn connect_v31_both_directions() {
        let p = Packet::Connect(Box::new(Connect {
            level: ProtocolLevel::V31,
            bridge: false,
            clean_session: true,
            keep_alive: 10,
            client_id: ByteStr::from("ab"),
            will: None,
            username: None,
            password: None,
            properties: None,
        }));
        assert_eq!(decode_all(CONNECT_V31_MINIMAL), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), CONNECT_V31_MINIMAL);
    }

    #[rustfmt::skip]
    const CONNECT_V31_PASSWORD_ONLY: &[u8] = &[
        0x10, 0x13,                     // CONNECT, remaining length 19
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                           // protocol level 3 (3.1)
        0x40,                           // flags: password only (allowed by 3.1), persistent session
        0x00, 0x00,                     // keep alive off
        0x00, 0x00,                     // empty client id
        0x00, 0x03, b'p', b'w', b'd',   // password "pwd"
    ];

    #[test]
    fn connect_v31_password_without_username_is_allowed() {
        let p = Packet::Connect(Box::new(Connect {
            level: ProtocolLevel::V31,
            bridge: false,
            clean_session: false,
            keep_alive: 0,
            client_id: ByteStr::from(""),
            will: None,
            username: None,
            password: Some(Bytes::from_static(b"pwd")),
            properties: None,
        }));
        assert_eq!(decode_all(CONNECT_V31_PASSWORD_ONLY), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), CONNECT_V31_PASSWORD_ONLY);
    }

    #[test]
    fn connect_decoded_fields_share_the_frame() {
        let mut buf = BytesMut::from(CONNECT_V311_FULL);
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let Some(Packet::Connect(c)) =
            super::super::decode(&mut buf, 1024, ProtocolLevel::V311).unwrap()
        else {
            panic!("not a CONNECT");
        };
        let inside = |p: *const u8| (start..end).contains(&(p as usize));
        assert!(inside(c.client_id.as_ptr()));
        assert!(inside(c.password.as_ref().unwrap().as_ptr()));
        assert!(inside(c.will.as_ref().unwrap().payload.as_ptr()));
    }

    /// A CONNECT with the given protocol name, level and flags, keep alive 60, client id "a",
    /// then `tail` (the fields the flags announce).
    fn connect_with(name: &[u8], level: u8, flags: u8, tail: &[u8]) -> Vec<u8> {
        let mut body = vec![0x00, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0x00, 0x3c, 0x00, 0x01, b'a']);
        body.extend_from_slice(tail);
        let mut out = vec![0x10, body.len() as u8];
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_bridge_sets_the_levels_top_bit() {
        let connect = |bytes: &[u8]| match decode_all(bytes).pop() {
            Some(Packet::Connect(c)) => c,
            other => panic!("not a CONNECT: {other:?}"),
        };
        // Mosquitto's `try_private`: level 0x84 is 3.1.1 from a bridge, 0x83 3.1 from one.
        let bytes = connect_with(b"MQTT", 0x84, 0x02, &[]);
        let c = connect(&bytes);
        assert!(c.bridge);
        assert_eq!(c.level, ProtocolLevel::V311);
        assert_eq!(encode_bytes(&Packet::Connect(c)), bytes);
        assert_eq!(declared_level(&bytes), Some(ProtocolLevel::V311));
        let c = connect(&connect_with(b"MQIsdp", 0x83, 0x02, &[]));
        assert!(c.bridge && c.level == ProtocolLevel::V31);
        // MQTT 5 has subscription options for that: 0x85 is no level we speak.
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 0x85, 0x02, &[0x00])),
            DecodeError::UnsupportedProtocolLevel(0x85)
        );
        // An ordinary client's CONNECT says nothing of the kind.
        assert!(!connect(&connect_with(b"MQTT", 4, 0x02, &[])).bridge);
    }

    #[test]
    fn connect_errors() {
        // name "MQTX"
        assert_eq!(
            decode_err(&connect_with(b"MQTX", 4, 0x02, &[])),
            DecodeError::InvalidProtocolName("MQTX".into())
        );
        // "MQTT" with level 6, 3, and "MQIsdp" with level 4
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 6, 0x02, &[])),
            DecodeError::UnsupportedProtocolLevel(6)
        );
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 3, 0x02, &[])),
            DecodeError::UnsupportedProtocolLevel(3)
        );
        assert_eq!(
            decode_err(&connect_with(b"MQIsdp", 4, 0x02, &[])),
            DecodeError::UnsupportedProtocolLevel(4)
        );
        // flags 0x03: clean session plus reserved bit 0
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x03, &[])),
            DecodeError::ConnectReservedFlag
        );
        // flags 0x0a: will QoS 1 without will flag; 0x22: will retain without will flag
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x0a, &[])),
            DecodeError::WillFlagsWithoutWill
        );
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x22, &[])),
            DecodeError::WillFlagsWithoutWill
        );
        // flags 0x1e: will flag with will QoS 3
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x1e, &[])),
            DecodeError::InvalidWillQoS
        );
        // flags 0x42: password without user name on 3.1.1
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x42, &[0x00, 0x01, b'p'])),
            DecodeError::PasswordWithoutUsername
        );
        // will topic "a+" and "" are invalid topic names
        assert_eq!(
            decode_err(&connect_with(
                b"MQTT",
                4,
                0x06,
                &[0x00, 0x02, b'a', b'+', 0x00, 0x00]
            )),
            DecodeError::WildcardInTopicName
        );
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x06, &[0x00, 0x00, 0x00, 0x00])),
            DecodeError::EmptyTopic
        );
        // user name with U+0000, user name with a lone continuation byte
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x82, &[0x00, 0x02, b'u', 0x00])),
            DecodeError::NullCharacter
        );
        assert_eq!(
            decode_err(&connect_with(b"MQTT", 4, 0x82, &[0x00, 0x02, b'u', 0x80])),
            DecodeError::InvalidUtf8
        );
        // a byte after the client id, and a user name flag with no user name
        assert!(matches!(
            decode_err(&connect_with(b"MQTT", 4, 0x02, &[0x00])),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Connect,
                ..
            }
        ));
        assert!(matches!(
            decode_err(&connect_with(b"MQTT", 4, 0x82, &[])),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Connect,
                ..
            }
        ));
    }

    #[rustfmt::skip]
    #[test]
    fn client_id_with_encoded_surrogate_is_invalid_utf8() {
        let bytes = connect_with(b"MQTT", 4, 0x02, &[]);
        let mut bad = bytes[..bytes.len() - 3].to_vec();
        bad[1] += 2;
        bad.extend_from_slice(&[
            0x00, 0x03, 0xed, 0xa0, 0x80, // client id: U+D800 encoded as UTF-8
        ]);
        assert_eq!(decode_err(&bad), DecodeError::InvalidUtf8);
    }

    #[test]
    fn connack_both_directions() {
        #[rustfmt::skip]
        let cases: [(&[u8], ConnAck); 3] = [
            (&[
                0x20, 0x02, // CONNACK, remaining length 2
                0x01,       // session present
                0x00,       // accepted
            ], ConnAck { session_present: true, code: ReasonCode::SUCCESS, properties: None }),
            (&[
                0x20, 0x02, // CONNACK, remaining length 2
                0x00,       // no session
                0x01,       // unacceptable protocol version
            ], ConnAck { session_present: false, code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, properties: None }),
            (&[
                0x20, 0x02, // CONNACK, remaining length 2
                0x00,       // no session
                0x05,       // not authorized
            ], ConnAck { session_present: false, code: ReasonCode::NOT_AUTHORIZED, properties: None }),
        ];
        for (bytes, ack) in cases {
            assert_eq!(decode_all(bytes), vec![Packet::ConnAck(ack.clone())]);
            assert_eq!(encode_bytes(&Packet::ConnAck(ack)), bytes);
        }
    }

    #[test]
    fn connack_errors() {
        // acknowledge flags 0x02: a reserved bit
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x02, 0x00]),
            DecodeError::InvalidConnAckFlags(0x02)
        );
        // return code 6
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x00, 0x06]),
            DecodeError::InvalidConnectReturnCode(6)
        );
        // remaining length 3
        assert!(matches!(
            decode_err(&[0x20, 0x03, 0x00, 0x00, 0x00]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::ConnAck,
                ..
            }
        ));
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let mut c = connect_v311_full();
        c.username = None;
        let mut dst = BytesMut::new();
        assert_eq!(
            Packet::Connect(Box::new(c.clone())).encode(&mut dst, ProtocolLevel::V311),
            Err(EncodeError::PasswordWithoutUsername)
        );
        c.username = Some(ByteStr::from("x".repeat(65_536)));
        assert_eq!(
            Packet::Connect(Box::new(c)).encode(&mut dst, ProtocolLevel::V311),
            Err(EncodeError::FieldTooLong(65_536))
        );
        assert!(dst.is_empty());
    }

    #[rustfmt::skip]
    const CONNECT_V5: &[u8] = &[
        0x10, 0x29,                     // CONNECT, remaining length 41
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x05,                           // protocol level 5
        0x46,                           // flags: password (no user name: allowed in 5), will QoS 0, will, clean start
        0x00, 0x1e,                     // keep alive 30 s
        0x08,                           // properties: 8 bytes
        0x11, 0x00, 0x00, 0x0e, 0x10,   // session expiry 3600 s
        0x21, 0x00, 0x0a,               // receive maximum 10
        0x00, 0x01, b'c',               // client id "c"
        0x07,                           // will properties: 7 bytes
        0x01, 0x01,                     // payload format: UTF-8
        0x18, 0x00, 0x00, 0x00, 0x05,   // will delay 5 s
        0x00, 0x01, b'w',               // will topic "w"
        0x00, 0x02, b'h', b'i',         // will payload "hi"
        0x00, 0x02, b'p', b'w',         // password "pw"
    ];

    #[test]
    fn connect_v5_both_directions() {
        let p = Packet::Connect(Box::new(Connect {
            level: ProtocolLevel::V5,
            bridge: false,
            clean_session: true,
            keep_alive: 30,
            client_id: ByteStr::from("c"),
            will: Some(LastWill {
                topic: ByteStr::from("w"),
                payload: Bytes::from_static(b"hi"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Some(Box::new(crate::protocol::Properties {
                    will_delay_interval: Some(5),
                    payload_format_utf8: Some(true),
                    ..Default::default()
                })),
            }),
            username: None,
            password: Some(Bytes::from_static(b"pw")),
            properties: Some(Box::new(crate::protocol::Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(10),
                ..Default::default()
            })),
        }));
        // CONNECT says its own level, whatever the connection's is so far.
        assert_eq!(decode_all(CONNECT_V5), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), CONNECT_V5);
    }

    #[test]
    fn connect_v5_errors() {
        // level 5, clean start, keep alive 60, then a property block with Topic Alias (a
        // PUBLISH property) before client id "a"
        let body = [0x03, 0x23, 0x00, 0x01, 0x00, 0x01, b'a'];
        let mut bytes = vec![
            0x10,
            10 + body.len() as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x02,
            0,
            60,
        ];
        bytes.extend_from_slice(&body);
        assert_eq!(
            decode_err(&bytes),
            DecodeError::PropertyNotAllowed {
                id: 0x23,
                context: crate::protocol::PropertyContext::Packet(PacketType::Connect)
            }
        );
        // The same with a property length that runs past the packet
        let mut short = bytes.clone();
        short[12] = 0x40;
        assert!(matches!(
            decode_err(&short),
            DecodeError::MalformedPacket { .. }
        ));
    }

    #[test]
    fn connack_v5_both_directions() {
        use super::super::testutil::{decode_all_v5, decode_err_v5, encode_bytes_v5};
        #[rustfmt::skip]
        let cases: [(&[u8], ConnAck); 2] = [
            // CONNACK, session present, success, properties: receive maximum 20, topic alias maximum 10
            (&[0x20, 0x09, 0x01, 0x00, 0x06, 0x21, 0x00, 0x14, 0x22, 0x00, 0x0a], ConnAck {
                session_present: true,
                code: ReasonCode::SUCCESS,
                properties: Some(Box::new(crate::protocol::Properties {
                    receive_maximum: Some(20),
                    topic_alias_maximum: Some(10),
                    ..Default::default()
                })),
            }),
            // CONNACK, 0x8c bad authentication method, no properties
            (&[0x20, 0x03, 0x00, 0x8c, 0x00], ConnAck::new(false, ReasonCode::BAD_AUTHENTICATION_METHOD)),
        ];
        for (bytes, ack) in cases {
            assert_eq!(decode_all_v5(bytes), vec![Packet::ConnAck(ack.clone())]);
            assert_eq!(encode_bytes_v5(&Packet::ConnAck(ack)), bytes);
        }
        // The same refusal for a 3.1.1 client is return code 4 (bad user name or password).
        assert_eq!(
            encode_bytes(&Packet::ConnAck(ConnAck::new(
                false,
                ReasonCode::BAD_AUTHENTICATION_METHOD
            ))),
            [0x20, 0x02, 0x00, 0x04]
        );
        // 0x10 is no CONNACK reason code
        assert_eq!(
            decode_err_v5(&[0x20, 0x03, 0x00, 0x10, 0x00]),
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::ConnAck,
                code: 0x10
            }
        );
    }
}
