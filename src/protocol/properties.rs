//! MQTT 5 properties (section 2.2.2): the one table of property identifier -> name, value type
//! and the packets that may carry it, the [`Properties`] value every MQTT 5 packet holds, and
//! its decoding (with the "at most once" and range rules) and encoding.
//!
//! Packets hold `Option<Box<Properties>>`: `None` when a packet has no properties, which is
//! every 3.1.1 packet and most MQTT 5 ones, so a packet without properties costs one pointer
//! and no allocation.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::header::{
    check_field_len, put_field, put_varint, varint_len, Reader, MAX_FIELD_LEN, MAX_VARINT,
};
use super::{ByteStr, DecodeError, EncodeError, PacketType, QoS};

/// Where a property block sits: in a packet, or in the will of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    Packet(PacketType),
    Will,
}

impl PropertyContext {
    fn bit(self) -> u16 {
        match self {
            PropertyContext::Will => 1,
            PropertyContext::Packet(t) => 1 << (t as u8),
        }
    }
}

/// The wire type of a property's value (2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    TwoByteInt,
    FourByteInt,
    VarInt,
    String,
    Binary,
    StringPair,
}

const WILL: u16 = 1;
const fn p(t: PacketType) -> u16 {
    1 << (t as u8)
}
const CONNECT: u16 = p(PacketType::Connect);
const CONNACK: u16 = p(PacketType::ConnAck);
const PUBLISH: u16 = p(PacketType::Publish);
const ACKS: u16 =
    p(PacketType::PubAck) | p(PacketType::PubRec) | p(PacketType::PubRel) | p(PacketType::PubComp);
const SUBSCRIBE: u16 = p(PacketType::Subscribe);
const SUBACK: u16 = p(PacketType::SubAck);
const UNSUBSCRIBE: u16 = p(PacketType::Unsubscribe);
const UNSUBACK: u16 = p(PacketType::UnsubAck);
const DISCONNECT: u16 = p(PacketType::Disconnect);
const AUTH: u16 = p(PacketType::Auth);

/// The table of section 2.2.2.2: identifier, name, type, where it may appear.
const TABLE: [(u8, &str, Kind, u16); 27] = [
    (0x01, "Payload Format Indicator", Kind::Byte, PUBLISH | WILL),
    (
        0x02,
        "Message Expiry Interval",
        Kind::FourByteInt,
        PUBLISH | WILL,
    ),
    (0x03, "Content Type", Kind::String, PUBLISH | WILL),
    (0x08, "Response Topic", Kind::String, PUBLISH | WILL),
    (0x09, "Correlation Data", Kind::Binary, PUBLISH | WILL),
    (
        0x0B,
        "Subscription Identifier",
        Kind::VarInt,
        PUBLISH | SUBSCRIBE,
    ),
    (
        0x11,
        "Session Expiry Interval",
        Kind::FourByteInt,
        CONNECT | CONNACK | DISCONNECT,
    ),
    (0x12, "Assigned Client Identifier", Kind::String, CONNACK),
    (0x13, "Server Keep Alive", Kind::TwoByteInt, CONNACK),
    (
        0x15,
        "Authentication Method",
        Kind::String,
        CONNECT | CONNACK | AUTH,
    ),
    (
        0x16,
        "Authentication Data",
        Kind::Binary,
        CONNECT | CONNACK | AUTH,
    ),
    (0x17, "Request Problem Information", Kind::Byte, CONNECT),
    (0x18, "Will Delay Interval", Kind::FourByteInt, WILL),
    (0x19, "Request Response Information", Kind::Byte, CONNECT),
    (0x1A, "Response Information", Kind::String, CONNACK),
    (0x1C, "Server Reference", Kind::String, CONNACK | DISCONNECT),
    (
        0x1F,
        "Reason String",
        Kind::String,
        CONNACK | ACKS | SUBACK | UNSUBACK | DISCONNECT | AUTH,
    ),
    (0x21, "Receive Maximum", Kind::TwoByteInt, CONNECT | CONNACK),
    (
        0x22,
        "Topic Alias Maximum",
        Kind::TwoByteInt,
        CONNECT | CONNACK,
    ),
    (0x23, "Topic Alias", Kind::TwoByteInt, PUBLISH),
    (0x24, "Maximum QoS", Kind::Byte, CONNACK),
    (0x25, "Retain Available", Kind::Byte, CONNACK),
    (
        0x26,
        "User Property",
        Kind::StringPair,
        CONNECT
            | CONNACK
            | PUBLISH
            | WILL
            | ACKS
            | SUBSCRIBE
            | SUBACK
            | UNSUBSCRIBE
            | UNSUBACK
            | DISCONNECT
            | AUTH,
    ),
    (
        0x27,
        "Maximum Packet Size",
        Kind::FourByteInt,
        CONNECT | CONNACK,
    ),
    (0x28, "Wildcard Subscription Available", Kind::Byte, CONNACK),
    (
        0x29,
        "Subscription Identifier Available",
        Kind::Byte,
        CONNACK,
    ),
    (0x2A, "Shared Subscription Available", Kind::Byte, CONNACK),
];

fn lookup(id: u32) -> Option<&'static (u8, &'static str, Kind, u16)> {
    TABLE.iter().find(|e| u32::from(e.0) == id)
}

/// The standard's name of property `id`, for errors and logs.
pub fn property_name(id: u8) -> &'static str {
    lookup(u32::from(id)).map_or("unknown property", |e| e.1)
}

/// Every MQTT 5 property a packet can carry. Each field is `None` (or empty) when absent; the
/// 0/1 bytes are booleans. Which fields a packet may hold is the table's business: the decoder
/// refuses the others, the encoder writes whatever is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01: the payload is UTF-8 (true) or unspecified bytes (false).
    pub payload_format_utf8: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<ByteStr>,
    /// 0x08: a topic name (no wildcards).
    pub response_topic: Option<ByteStr>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, 1 to 268,435,455: at most one in SUBSCRIBE, one per matching subscription in a
    /// PUBLISH to a client.
    pub subscription_identifiers: SmallVec<[u32; 1]>,
    /// 0x11, seconds; 0xFFFFFFFF is "never expires".
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<ByteStr>,
    /// 0x13, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<ByteStr>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17 (default true).
    pub request_problem_information: Option<bool>,
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 (default false).
    pub request_response_information: Option<bool>,
    /// 0x1A.
    pub response_information: Option<ByteStr>,
    /// 0x1C.
    pub server_reference: Option<ByteStr>,
    /// 0x1F.
    pub reason_string: Option<ByteStr>,
    /// 0x21, never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, never 0.
    pub topic_alias: Option<u16>,
    /// 0x24: 0 or 1 (a server supporting QoS 2 leaves it out).
    pub maximum_qos: Option<QoS>,
    /// 0x25.
    pub retain_available: Option<bool>,
    /// 0x26, in the order they came: a broker forwards them in that order.
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    /// 0x27, bytes, never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A.
    pub shared_subscription_available: Option<bool>,
}

/// Decodes a property block (its Variable Byte Integer length, then the properties) at the
/// reader's position. `None` for an empty block.
pub(crate) fn decode_properties(
    r: &mut Reader,
    context: PropertyContext,
) -> Result<Option<Box<Properties>>, DecodeError> {
    let len = r.varint("property length runs past the remaining length")? as usize;
    if len == 0 {
        return Ok(None);
    }
    let mut b = r.sub(len, "properties run past the remaining length")?;
    let mut props = Box::<Properties>::default();
    // Ids are below 64, so one bit each says whether the property was seen.
    let mut seen = 0u64;
    while !b.is_empty() {
        let id = b.varint("property identifier missing")?;
        let Some(&(id, _, kind, mask)) = lookup(id) else {
            return Err(DecodeError::UnknownProperty(id));
        };
        if mask & context.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed { id, context });
        }
        let repeatable = id == 0x26 || (id == 0x0B && context.bit() == PUBLISH);
        if seen & (1 << id) != 0 && !repeatable {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= 1 << id;
        let what = "property value runs past the property length";
        let invalid = |value: u32| DecodeError::InvalidPropertyValue { id, value };
        match kind {
            Kind::Byte => {
                let v = b.u8(what)?;
                let flag = match v {
                    0 => false,
                    1 => true,
                    _ => return Err(invalid(u32::from(v))),
                };
                match id {
                    0x01 => props.payload_format_utf8 = Some(flag),
                    0x17 => props.request_problem_information = Some(flag),
                    0x19 => props.request_response_information = Some(flag),
                    0x24 => {
                        props.maximum_qos = Some(if flag {
                            QoS::AtLeastOnce
                        } else {
                            QoS::AtMostOnce
                        })
                    }
                    0x25 => props.retain_available = Some(flag),
                    0x28 => props.wildcard_subscription_available = Some(flag),
                    0x29 => props.subscription_identifier_available = Some(flag),
                    _ => props.shared_subscription_available = Some(flag),
                }
            }
            Kind::TwoByteInt => {
                let v = b.u16(what)?;
                if v == 0 && matches!(id, 0x21 | 0x23) {
                    return Err(if id == 0x23 {
                        DecodeError::TopicAliasZero
                    } else {
                        invalid(0)
                    });
                }
                match id {
                    0x13 => props.server_keep_alive = Some(v),
                    0x21 => props.receive_maximum = Some(v),
                    0x22 => props.topic_alias_maximum = Some(v),
                    _ => props.topic_alias = Some(v),
                }
            }
            Kind::FourByteInt => {
                let hi = b.u16(what)?;
                let lo = b.u16(what)?;
                let v = (u32::from(hi) << 16) | u32::from(lo);
                match id {
                    0x02 => props.message_expiry_interval = Some(v),
                    0x11 => props.session_expiry_interval = Some(v),
                    0x18 => props.will_delay_interval = Some(v),
                    _ => {
                        if v == 0 {
                            return Err(invalid(0));
                        }
                        props.maximum_packet_size = Some(v)
                    }
                }
            }
            Kind::VarInt => {
                let v = b.varint(what)?;
                if v == 0 {
                    return Err(invalid(0));
                }
                props.subscription_identifiers.push(v);
            }
            Kind::String => {
                let v = if id == 0x08 {
                    b.topic_name(what)?
                } else {
                    b.string(what)?
                };
                let slot = match id {
                    0x03 => &mut props.content_type,
                    0x08 => &mut props.response_topic,
                    0x12 => &mut props.assigned_client_identifier,
                    0x15 => &mut props.authentication_method,
                    0x1A => &mut props.response_information,
                    0x1C => &mut props.server_reference,
                    _ => &mut props.reason_string,
                };
                *slot = Some(v);
            }
            Kind::Binary => {
                let v = b.binary(what)?;
                if id == 0x09 {
                    props.correlation_data = Some(v);
                } else {
                    props.authentication_data = Some(v);
                }
            }
            Kind::StringPair => {
                let name = b.string(what)?;
                let value = b.string(what)?;
                props.user_properties.push((name, value));
            }
        }
    }
    Ok(Some(props))
}

fn string_len(s: &Option<ByteStr>) -> usize {
    s.as_ref().map_or(0, |s| 1 + 2 + s.len())
}

fn binary_len(b: &Option<Bytes>) -> usize {
    b.as_ref().map_or(0, |b| 1 + 2 + b.len())
}

fn opt_len<T>(v: &Option<T>, size: usize) -> usize {
    v.as_ref().map_or(0, |_| 1 + size)
}

impl Properties {
    /// Bytes of the properties themselves, without the length in front.
    pub fn body_len(&self) -> usize {
        opt_len(&self.payload_format_utf8, 1)
            + opt_len(&self.message_expiry_interval, 4)
            + string_len(&self.content_type)
            + string_len(&self.response_topic)
            + binary_len(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|&v| 1 + varint_len(v as usize))
                .sum::<usize>()
            + opt_len(&self.session_expiry_interval, 4)
            + string_len(&self.assigned_client_identifier)
            + opt_len(&self.server_keep_alive, 2)
            + string_len(&self.authentication_method)
            + binary_len(&self.authentication_data)
            + opt_len(&self.request_problem_information, 1)
            + opt_len(&self.will_delay_interval, 4)
            + opt_len(&self.request_response_information, 1)
            + string_len(&self.response_information)
            + string_len(&self.server_reference)
            + string_len(&self.reason_string)
            + opt_len(&self.receive_maximum, 2)
            + opt_len(&self.topic_alias_maximum, 2)
            + opt_len(&self.topic_alias, 2)
            + opt_len(&self.maximum_qos, 1)
            + opt_len(&self.retain_available, 1)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + 2 + k.len() + 2 + v.len())
                .sum::<usize>()
            + opt_len(&self.maximum_packet_size, 4)
            + opt_len(&self.wildcard_subscription_available, 1)
            + opt_len(&self.subscription_identifier_available, 1)
            + opt_len(&self.shared_subscription_available, 1)
    }

    /// A copy that owns its bytes: decoded properties are slices of the packet they came in,
    /// and one kept for long (a will's) must not pin the buffer that packet was read into.
    pub fn detached(&self) -> Properties {
        fn string(s: &Option<ByteStr>) -> Option<ByteStr> {
            s.as_ref().map(|s| ByteStr::from(s.as_str()))
        }
        fn binary(b: &Option<Bytes>) -> Option<Bytes> {
            b.as_ref().map(|b| Bytes::copy_from_slice(b))
        }
        Properties {
            content_type: string(&self.content_type),
            response_topic: string(&self.response_topic),
            correlation_data: binary(&self.correlation_data),
            assigned_client_identifier: string(&self.assigned_client_identifier),
            authentication_method: string(&self.authentication_method),
            authentication_data: binary(&self.authentication_data),
            response_information: string(&self.response_information),
            server_reference: string(&self.server_reference),
            reason_string: string(&self.reason_string),
            user_properties: self
                .user_properties
                .iter()
                .map(|(k, v)| (ByteStr::from(k.as_str()), ByteStr::from(v.as_str())))
                .collect(),
            ..self.clone()
        }
    }

    /// Refuses what the wire cannot carry: a string over 65,535 bytes, a subscription
    /// identifier of 0 or over 268,435,455, a property block the length cannot express.
    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        for s in [
            &self.content_type,
            &self.response_topic,
            &self.assigned_client_identifier,
            &self.authentication_method,
            &self.response_information,
            &self.server_reference,
            &self.reason_string,
        ]
        .into_iter()
        .flatten()
        {
            check_field_len(s.len())?;
        }
        for b in [&self.correlation_data, &self.authentication_data]
            .into_iter()
            .flatten()
        {
            check_field_len(b.len())?;
        }
        for (k, v) in &self.user_properties {
            check_field_len(k.len())?;
            check_field_len(v.len())?;
        }
        if let Some(&id) = self
            .subscription_identifiers
            .iter()
            .find(|&&v| v == 0 || v > MAX_VARINT)
        {
            return Err(EncodeError::InvalidSubscriptionIdentifier(id));
        }
        if self.body_len() > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(self.body_len()));
        }
        Ok(())
    }

    /// Writes the properties in identifier order (user properties in their own order), without
    /// the length in front. The caller has run [`Properties::check`].
    pub fn encode_body(&self, dst: &mut BytesMut) {
        fn flag(dst: &mut BytesMut, id: u8, v: Option<bool>) {
            if let Some(v) = v {
                dst.put_slice(&[id, u8::from(v)]);
            }
        }
        fn u16p(dst: &mut BytesMut, id: u8, v: Option<u16>) {
            if let Some(v) = v {
                dst.put_u8(id);
                dst.put_u16(v);
            }
        }
        fn u32p(dst: &mut BytesMut, id: u8, v: Option<u32>) {
            if let Some(v) = v {
                dst.put_u8(id);
                dst.put_u32(v);
            }
        }
        fn field(dst: &mut BytesMut, id: u8, v: Option<&[u8]>) {
            if let Some(v) = v {
                dst.put_u8(id);
                put_field(dst, v);
            }
        }
        fn s(v: &Option<ByteStr>) -> Option<&[u8]> {
            v.as_ref().map(|s| &s.as_bytes()[..])
        }
        flag(dst, 0x01, self.payload_format_utf8);
        u32p(dst, 0x02, self.message_expiry_interval);
        field(dst, 0x03, s(&self.content_type));
        field(dst, 0x08, s(&self.response_topic));
        field(dst, 0x09, self.correlation_data.as_deref());
        for &id in &self.subscription_identifiers {
            dst.put_u8(0x0B);
            put_varint(dst, id as usize);
        }
        u32p(dst, 0x11, self.session_expiry_interval);
        field(dst, 0x12, s(&self.assigned_client_identifier));
        u16p(dst, 0x13, self.server_keep_alive);
        field(dst, 0x15, s(&self.authentication_method));
        field(dst, 0x16, self.authentication_data.as_deref());
        flag(dst, 0x17, self.request_problem_information);
        u32p(dst, 0x18, self.will_delay_interval);
        flag(dst, 0x19, self.request_response_information);
        field(dst, 0x1A, s(&self.response_information));
        field(dst, 0x1C, s(&self.server_reference));
        field(dst, 0x1F, s(&self.reason_string));
        u16p(dst, 0x21, self.receive_maximum);
        u16p(dst, 0x22, self.topic_alias_maximum);
        u16p(dst, 0x23, self.topic_alias);
        flag(dst, 0x24, self.maximum_qos.map(|q| q != QoS::AtMostOnce));
        flag(dst, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            dst.put_u8(0x26);
            put_field(dst, k.as_bytes());
            put_field(dst, v.as_bytes());
        }
        u32p(dst, 0x27, self.maximum_packet_size);
        flag(dst, 0x28, self.wildcard_subscription_available);
        flag(dst, 0x29, self.subscription_identifier_available);
        flag(dst, 0x2A, self.shared_subscription_available);
    }
}

/// Bytes a property block takes with its length in front: 1 for none.
pub(crate) fn properties_len(props: &Option<Box<Properties>>) -> usize {
    let body = props.as_ref().map_or(0, |p| p.body_len());
    varint_len(body) + body
}

pub(crate) fn check_properties(props: &Option<Box<Properties>>) -> Result<(), EncodeError> {
    props.as_ref().map_or(Ok(()), |p| p.check())
}

/// Writes a property block with its length in front. The caller has run [`check_properties`].
pub(crate) fn put_properties(dst: &mut BytesMut, props: &Option<Box<Properties>>) {
    match props {
        None => dst.put_u8(0),
        Some(p) => {
            put_varint(dst, p.body_len());
            p.encode_body(dst);
        }
    }
}

// Keeps the 2-byte length limit visible next to the string writers above.
const _: () = assert!(MAX_FIELD_LEN == 65_535);

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        bytes: &[u8],
        context: PropertyContext,
    ) -> Result<Option<Box<Properties>>, DecodeError> {
        let mut r = Reader::new(PacketType::Publish, Bytes::copy_from_slice(bytes));
        let p = decode_properties(&mut r, context)?;
        assert!(r.is_empty(), "the whole block was read");
        Ok(p)
    }

    fn encode(p: &Properties) -> Vec<u8> {
        let mut dst = BytesMut::new();
        put_properties(&mut dst, &Some(Box::new(p.clone())));
        assert_eq!(dst.len(), properties_len(&Some(Box::new(p.clone()))));
        dst.to_vec()
    }

    const PUBLISH_CTX: PropertyContext = PropertyContext::Packet(PacketType::Publish);

    #[rustfmt::skip]
    const EVERY_PUBLISH_PROPERTY: &[u8] = &[
        0x2f,                               // property length 47
        0x01, 0x01,                         // payload format: UTF-8
        0x02, 0x00, 0x00, 0x00, 0x3c,       // message expiry 60 s
        0x03, 0x00, 0x04, b't', b'e', b'x', b't', // content type "text"
        0x08, 0x00, 0x03, b'r', b'/', b't', // response topic "r/t"
        0x09, 0x00, 0x02, 0xca, 0xfe,       // correlation data
        0x0b, 0x80, 0x01,                   // subscription identifier 128 (two-byte varint)
        0x0b, 0x05,                         // subscription identifier 5
        0x23, 0x00, 0x07,                   // topic alias 7
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // user property a=1
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'2', // user property a=2 (repeats allowed, order kept)
    ];

    fn every_publish_property() -> Properties {
        Properties {
            payload_format_utf8: Some(true),
            message_expiry_interval: Some(60),
            content_type: Some("text".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(&[0xca, 0xfe])),
            subscription_identifiers: SmallVec::from_slice(&[128, 5]),
            topic_alias: Some(7),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        }
    }

    #[test]
    fn publish_properties_both_directions() {
        let p = decode(EVERY_PUBLISH_PROPERTY, PUBLISH_CTX)
            .unwrap()
            .unwrap();
        assert_eq!(*p, every_publish_property());
        assert_eq!(encode(&p), EVERY_PUBLISH_PROPERTY);
    }

    #[rustfmt::skip]
    const EVERY_CONNACK_PROPERTY: &[u8] = &[
        0x37,                               // property length 55
        0x11, 0xff, 0xff, 0xff, 0xff,       // session expiry: never
        0x12, 0x00, 0x02, b'i', b'd',       // assigned client identifier "id"
        0x13, 0x00, 0x1e,                   // server keep alive 30 s
        0x15, 0x00, 0x01, b'm',             // authentication method "m"
        0x16, 0x00, 0x01, 0x00,             // authentication data
        0x1a, 0x00, 0x01, b'r',             // response information "r"
        0x1c, 0x00, 0x01, b's',             // server reference "s"
        0x1f, 0x00, 0x02, b'o', b'k',       // reason string "ok"
        0x21, 0x00, 0x0a,                   // receive maximum 10
        0x22, 0x00, 0x05,                   // topic alias maximum 5
        0x24, 0x01,                         // maximum QoS 1
        0x25, 0x00,                         // retain not available
        0x27, 0x00, 0x01, 0x00, 0x00,       // maximum packet size 65536
        0x28, 0x01,                         // wildcard subscriptions available
        0x29, 0x00,                         // subscription identifiers not available
        0x2a, 0x01,                         // shared subscriptions available
    ];

    #[test]
    fn connack_properties_both_directions() {
        let expect = Properties {
            session_expiry_interval: Some(u32::MAX),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(&[0])),
            response_information: Some("r".into()),
            server_reference: Some("s".into()),
            reason_string: Some("ok".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(65536),
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(false),
            shared_subscription_available: Some(true),
            ..Properties::default()
        };
        let ctx = PropertyContext::Packet(PacketType::ConnAck);
        assert_eq!(
            *decode(EVERY_CONNACK_PROPERTY, ctx).unwrap().unwrap(),
            expect
        );
        assert_eq!(encode(&expect), EVERY_CONNACK_PROPERTY);
    }

    #[test]
    fn connect_and_will_properties_decode_in_their_context() {
        // CONNECT: request problem 0, request response 1, receive maximum 20, max packet 1000
        let connect = [
            0x0f, 0x17, 0x00, 0x19, 0x01, 0x21, 0x00, 0x14, 0x27, 0x00, 0x00, 0x03, 0xe8, 0x11,
            0x00, 0x00, 0x00, 0x00,
        ];
        let p = decode(&connect[..14], PropertyContext::Packet(PacketType::Connect));
        // The length says 15 but only 13 bytes follow.
        assert!(matches!(p, Err(DecodeError::MalformedPacket { .. })));
        let mut fixed = connect;
        fixed[0] = 0x11;
        let p = decode(&fixed, PropertyContext::Packet(PacketType::Connect))
            .unwrap()
            .unwrap();
        assert_eq!(p.request_problem_information, Some(false));
        assert_eq!(p.request_response_information, Some(true));
        assert_eq!(p.receive_maximum, Some(20));
        assert_eq!(p.maximum_packet_size, Some(1000));
        assert_eq!(p.session_expiry_interval, Some(0));
        // Will Delay Interval is a will property, not a CONNECT one.
        let will_delay = [0x05, 0x18, 0x00, 0x00, 0x00, 0x0a];
        assert_eq!(
            decode(&will_delay, PropertyContext::Will)
                .unwrap()
                .unwrap()
                .will_delay_interval,
            Some(10)
        );
        assert_eq!(
            decode(&will_delay, PropertyContext::Packet(PacketType::Connect)),
            Err(DecodeError::PropertyNotAllowed {
                id: 0x18,
                context: PropertyContext::Packet(PacketType::Connect)
            })
        );
    }

    #[test]
    fn an_empty_block_is_none_and_encodes_as_one_zero_byte() {
        assert_eq!(decode(&[0x00], PUBLISH_CTX), Ok(None));
        let mut dst = BytesMut::new();
        put_properties(&mut dst, &None);
        assert_eq!(&dst[..], &[0x00]);
        assert_eq!(properties_len(&None), 1);
    }

    #[test]
    fn property_errors() {
        let ctx = PUBLISH_CTX;
        // unknown identifier 0x04
        assert_eq!(
            decode(&[0x02, 0x04, 0x00], ctx),
            Err(DecodeError::UnknownProperty(4))
        );
        // Session Expiry Interval in a PUBLISH
        assert_eq!(
            decode(&[0x05, 0x11, 0, 0, 0, 1], ctx),
            Err(DecodeError::PropertyNotAllowed {
                id: 0x11,
                context: ctx
            })
        );
        // Message Expiry Interval twice
        assert_eq!(
            decode(&[0x0a, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2], ctx),
            Err(DecodeError::DuplicateProperty(0x02))
        );
        // Subscription Identifier twice in SUBSCRIBE (allowed in PUBLISH, above)
        assert_eq!(
            decode(
                &[0x04, 0x0b, 0x01, 0x0b, 0x02],
                PropertyContext::Packet(PacketType::Subscribe)
            ),
            Err(DecodeError::DuplicateProperty(0x0b))
        );
        // Payload Format Indicator 2
        assert_eq!(
            decode(&[0x02, 0x01, 0x02], ctx),
            Err(DecodeError::InvalidPropertyValue { id: 0x01, value: 2 })
        );
        // Topic Alias 0
        assert_eq!(
            decode(&[0x03, 0x23, 0, 0], ctx),
            Err(DecodeError::TopicAliasZero)
        );
        // Subscription Identifier 0
        assert_eq!(
            decode(&[0x02, 0x0b, 0x00], ctx),
            Err(DecodeError::InvalidPropertyValue { id: 0x0b, value: 0 })
        );
        // Receive Maximum 0 and Maximum Packet Size 0 in CONNECT
        let connect = PropertyContext::Packet(PacketType::Connect);
        assert_eq!(
            decode(&[0x03, 0x21, 0, 0], connect),
            Err(DecodeError::InvalidPropertyValue { id: 0x21, value: 0 })
        );
        assert_eq!(
            decode(&[0x05, 0x27, 0, 0, 0, 0], connect),
            Err(DecodeError::InvalidPropertyValue { id: 0x27, value: 0 })
        );
        // a value running past the block: Message Expiry with 2 of its 4 bytes
        assert!(matches!(
            decode(&[0x03, 0x02, 0, 0], ctx),
            Err(DecodeError::MalformedPacket { .. })
        ));
        // a five-byte property length
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x01], ctx),
            Err(DecodeError::MalformedVarInt(PacketType::Publish))
        );
        // Response Topic with a wildcard
        assert_eq!(
            decode(&[0x04, 0x08, 0x00, 0x01, b'#'], ctx),
            Err(DecodeError::WildcardInTopicName)
        );
        // a user property whose value is not UTF-8
        assert_eq!(
            decode(&[0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0xff], ctx),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let mut p = Properties::default();
        p.subscription_identifiers.push(0);
        assert_eq!(
            p.check(),
            Err(EncodeError::InvalidSubscriptionIdentifier(0))
        );
        let p = Properties {
            reason_string: Some(ByteStr::from("x".repeat(70_000).as_str())),
            ..Properties::default()
        };
        assert_eq!(p.check(), Err(EncodeError::FieldTooLong(70_000)));
    }

    #[test]
    fn every_table_entry_is_reachable_and_unique() {
        let mut ids: Vec<u8> = TABLE.iter().map(|e| e.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), TABLE.len());
        assert!(ids.iter().all(|&id| id < 64));
        assert_eq!(property_name(0x26), "User Property");
    }
}
