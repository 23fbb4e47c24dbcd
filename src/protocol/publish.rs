//! PUBLISH and its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP; a 3.1.1 UNSUBACK shares
//! their two-byte shape). This is the per-message path of the broker, so it also owns the
//! hot-path helpers [`publish_len`] and [`encode_publish`], which write a PUBLISH straight from
//! a topic and payload slice without building a [`Publish`] per subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use super::disconnect::{put_reason_tail, read_reason_tail, reason_tail_len};
use super::header::{
    check_remaining_len, fixed_header_bytes, malformed, packet_len, put_fixed_header, put_varint,
    varint_len, Reader, MAX_FIELD_LEN,
};
use super::properties::{check_properties, decode_properties, properties_len, PropertyContext};
use super::strings::check_topic_name;
use super::{
    Ack, ByteStr, DecodeError, EncodeError, PacketId, PacketType, ProtocolLevel, Publish, QoS,
    ReasonCode,
};

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;
const QOS_SHIFT: u8 = 1;

/// Decodes the body of a PUBLISH whose first-byte `flags` are already checked (QoS is not 3).
/// Topic and payload are slices of `body`; the only work per byte is one UTF-8 pass and one
/// scan of the topic.
#[inline(always)]
pub(crate) fn decode_publish(
    flags: u8,
    body: Bytes,
    level: ProtocolLevel,
) -> Result<Publish, DecodeError> {
    if level.is_v5() {
        return decode_publish_v5(flags, body);
    }
    decode_publish_v3(flags, body)
}

fn qos_of(flags: u8) -> QoS {
    match (flags >> QOS_SHIFT) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// MQTT 5: topic (empty only with a Topic Alias), packet id, properties, payload.
#[inline(never)]
fn decode_publish_v5(flags: u8, body: Bytes) -> Result<Publish, DecodeError> {
    let qos = qos_of(flags);
    let mut r = Reader::new(PacketType::Publish, body);
    let (start, end) = r.field_slice("topic name runs past the remaining length")?;
    let topic_bytes = r.slice((start, end));
    if !topic_bytes.is_empty() {
        check_topic_name(topic_bytes)?;
    }
    let packet_id = if qos != QoS::AtMostOnce {
        r.packet_id()?
    } else {
        0
    };
    let properties = decode_properties(&mut r, PropertyContext::Packet(PacketType::Publish))?;
    if start == end && properties.as_ref().and_then(|p| p.topic_alias).is_none() {
        return Err(DecodeError::EmptyTopicWithoutAlias);
    }
    let topic_slice = r.whole_bytes().slice(start..end);
    // SAFETY: check_topic_name verified UTF-8 (or the topic is empty).
    let topic = unsafe { ByteStr::from_utf8_unchecked(topic_slice) };
    let payload = r.rest();
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        payload,
        properties,
    })
}

#[inline(always)]
fn decode_publish_v3(flags: u8, mut body: Bytes) -> Result<Publish, DecodeError> {
    let qos = qos_of(flags);
    let topic_len = match body.get(..2) {
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => return Err(malformed(PacketType::Publish, "topic name length missing")),
    };
    let topic_end = 2 + topic_len;
    let Some(topic) = body.get(2..topic_end) else {
        return Err(malformed(
            PacketType::Publish,
            "topic name runs past the remaining length",
        ));
    };
    check_topic_name(topic)?;
    let mut payload_start = topic_end;
    let mut packet_id = 0;
    if qos != QoS::AtMostOnce {
        let Some(b) = body.get(topic_end..topic_end + 2) else {
            return Err(malformed(
                PacketType::Publish,
                "packet identifier runs past the remaining length",
            ));
        };
        packet_id = u16::from_be_bytes([b[0], b[1]]);
        if packet_id == 0 {
            return Err(DecodeError::ZeroPacketId);
        }
        payload_start += 2;
    }
    // SAFETY: check_topic_name verified UTF-8.
    let topic = unsafe { ByteStr::from_utf8_unchecked(body.slice(2..topic_end)) };
    bytes::Buf::advance(&mut body, payload_start);
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        payload: body,
        properties: None,
    })
}

#[inline]
fn publish_remaining_len(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + topic_len + id_len + payload_len
}

/// Bytes an MQTT 5 property block of `body_len` bytes takes with its length: 0 for no block
/// (3.1.1).
#[inline]
fn property_block_len(properties: Option<&[u8]>) -> usize {
    properties.map_or(0, |p| varint_len(p.len()) + p.len())
}

/// Total bytes on the wire of a PUBLISH with this topic length, payload length and QoS:
/// what [`encode_publish`] will write, so a caller can size a batch buffer once. Meaningless
/// (but no panic) for sizes `encode_publish` refuses.
#[inline]
pub fn publish_len(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    packet_len(publish_remaining_len(topic_len, payload_len, qos))
}

/// Appends a PUBLISH to `dst`, reserving its exact size once. `packet_id` is written for QoS 1
/// and 2 only and must then be non-zero. The topic is written as given: it is the caller's job
/// to pass a valid topic name (the broker only forwards topics it has decoded).
///
/// Errors (nothing is written): topic longer than 65535 bytes, packet larger than the
/// Remaining Length can express, or QoS > 0 with packet identifier 0.
#[inline]
pub fn encode_publish(
    dst: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: PacketId,
) -> Result<(), EncodeError> {
    let header = PublishHeader {
        topic,
        payload_len: payload.len(),
        qos,
        retain,
        dup,
        packet_id,
        properties: None,
    };
    header.encode(dst, payload.len())?;
    dst.extend_from_slice(payload);
    Ok(())
}

/// Everything of a PUBLISH but its payload: for a writer that sends the payload from where it
/// already is (the broker's large-payload path), after these bytes.
#[derive(Debug, Clone, Copy)]
pub struct PublishHeader<'a> {
    pub topic: &'a str,
    pub payload_len: usize,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// Written for QoS 1 and 2 only, and must then be non-zero.
    pub packet_id: PacketId,
    /// MQTT 5: the encoded properties (without their length, which is written in front;
    /// empty for none). `None` for 3.1/3.1.1, which have no property block.
    pub properties: Option<&'a [u8]>,
}

impl PublishHeader<'_> {
    /// Appends the fixed header, topic and packet id, reserving room for them and `then` more
    /// bytes. Fails, writing nothing, as [`encode_publish`] does.
    #[inline]
    pub fn encode(&self, dst: &mut BytesMut, then: usize) -> Result<(), EncodeError> {
        let topic = self.topic;
        if topic.len() > MAX_FIELD_LEN {
            return Err(EncodeError::FieldTooLong(topic.len()));
        }
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId);
        }
        let props = self.properties;
        let remaining_len = publish_remaining_len(topic.len(), self.payload_len, self.qos)
            + property_block_len(props);
        super::header::check_remaining_len(remaining_len)?;

        let mut first = ((PacketType::Publish as u8) << 4) | ((self.qos as u8) << QOS_SHIFT);
        if self.dup {
            first |= DUP;
        }
        if self.retain {
            first |= RETAIN;
        }
        dst.reserve(packet_len(remaining_len) - self.payload_len + then);
        // The small fields are assembled on the stack and appended in one call: one append per
        // field costs a call and a bounds check each, which is most of the work for small
        // packets.
        let mut head = [0u8; 8];
        let n = fixed_header_bytes(&mut head, first, remaining_len);
        let head = &mut head[..n + 2];
        head[n..].copy_from_slice(&(topic.len() as u16).to_be_bytes());
        dst.extend_from_slice(head);
        dst.extend_from_slice(topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            dst.extend_from_slice(&self.packet_id.to_be_bytes());
        }
        if let Some(props) = props {
            put_varint(dst, props.len());
            dst.extend_from_slice(props);
        }
        Ok(())
    }

    /// Total bytes on the wire, payload included.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        packet_len(
            publish_remaining_len(self.topic.len(), self.payload_len, self.qos)
                + property_block_len(self.properties),
        )
    }
}

impl Publish {
    /// Bytes this PUBLISH takes on the wire at protocol `level`.
    #[inline]
    pub fn encoded_len(&self, level: ProtocolLevel) -> usize {
        let base = publish_remaining_len(self.topic.len(), self.payload.len(), self.qos);
        if level.is_v5() {
            packet_len(base + properties_len(&self.properties))
        } else {
            packet_len(base)
        }
    }

    /// Appends this PUBLISH to `dst`; see [`encode_publish`]. For QoS 0 `packet_id` is ignored.
    /// The properties are written for MQTT 5 only.
    #[inline]
    pub fn encode(&self, dst: &mut BytesMut, level: ProtocolLevel) -> Result<(), EncodeError> {
        if !level.is_v5() {
            return encode_publish(
                dst,
                &self.topic,
                &self.payload,
                self.qos,
                self.retain,
                self.dup,
                self.packet_id,
            );
        }
        check_properties(&self.properties)?;
        let mut props = BytesMut::new();
        if let Some(p) = &self.properties {
            p.encode_body(&mut props);
        }
        let header = PublishHeader {
            topic: &self.topic,
            payload_len: self.payload.len(),
            qos: self.qos,
            retain: self.retain,
            dup: self.dup,
            packet_id: self.packet_id,
            properties: Some(&props),
        };
        header.encode(dst, self.payload.len())?;
        dst.extend_from_slice(&self.payload);
        Ok(())
    }
}

/// Decodes the body of an MQTT 5 PUBACK, PUBREC, PUBREL or PUBCOMP longer than its packet id:
/// reason code, then properties if any are left (3.4.2.1: a Remaining Length of 3 means no
/// properties).
pub(crate) fn decode_ack(packet_type: PacketType, body: Bytes) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(packet_type, body);
    let packet_id = r.packet_id()?;
    let (reason, properties) = read_reason_tail(&mut r)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// Body bytes of an ack: the shortest form that says everything (MQTT 5 leaves out a success
/// reason without properties, and empty properties).
pub(crate) fn ack_remaining_len(a: &Ack, v5: bool) -> usize {
    if v5 {
        2 + reason_tail_len(a.reason, &a.properties)
    } else {
        2
    }
}

pub(crate) fn encode_ack_packet(
    dst: &mut BytesMut,
    packet_type: PacketType,
    a: &Ack,
    v5: bool,
) -> Result<(), EncodeError> {
    if a.packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    let remaining_len = ack_remaining_len(a, v5);
    if remaining_len == 2 {
        encode_ack(dst, packet_type, a.packet_id);
        return Ok(());
    }
    check_properties(&a.properties)?;
    check_remaining_len(remaining_len)?;
    let first = ack_first_byte(packet_type)
        .unwrap_or_else(|| panic!("encode_ack_packet called with {packet_type:?}"));
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, first, remaining_len);
    dst.put_u16(a.packet_id);
    put_reason_tail(dst, a.reason, &a.properties);
    Ok(())
}

/// The first byte of a two-byte acknowledgement: PUBREL alone has flags 0b0010 (MQTT-3.6.1-1).
fn ack_first_byte(packet_type: PacketType) -> Option<u8> {
    match packet_type {
        PacketType::PubAck | PacketType::PubRec | PacketType::PubComp | PacketType::UnsubAck => {
            Some((packet_type as u8) << 4)
        }
        PacketType::PubRel => Some(((packet_type as u8) << 4) | 0b0010),
        _ => None,
    }
}

/// Appends a PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK (4 bytes) to `dst`. `packet_id`
/// should be the non-zero identifier being acknowledged; it is written as given.
///
/// # Panics
/// If `packet_type` is not one of those five: that is a bug in the caller, not in the input.
#[inline]
pub fn encode_ack(dst: &mut BytesMut, packet_type: PacketType, packet_id: PacketId) {
    let first = ack_first_byte(packet_type)
        .unwrap_or_else(|| panic!("encode_ack called with {packet_type:?}"));
    let id = packet_id.to_be_bytes();
    dst.put_slice(&[first, 0x02, id[0], id[1]]);
}

/// Appends an MQTT 5 PUBACK, PUBREC, PUBREL or PUBCOMP with a reason code and no properties
/// (5 bytes), or the two-byte form for a success, which means the same.
///
/// # Panics
/// If `packet_type` is not one of those four or UNSUBACK, as [`encode_ack`].
#[inline]
pub fn encode_ack_reason(
    dst: &mut BytesMut,
    packet_type: PacketType,
    packet_id: PacketId,
    reason: ReasonCode,
) {
    if reason == ReasonCode::SUCCESS {
        return encode_ack(dst, packet_type, packet_id);
    }
    let first = ack_first_byte(packet_type)
        .unwrap_or_else(|| panic!("encode_ack_reason called with {packet_type:?}"));
    let id = packet_id.to_be_bytes();
    dst.put_slice(&[first, 0x03, id[0], id[1], reason.0]);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all, decode_err, encode_bytes};
    use super::super::{decode, Packet, UnsubAck};
    use super::*;

    #[rustfmt::skip]
    const PUBLISH_QOS0: &[u8] = &[
        0x30, 0x0a,                   // PUBLISH QoS 0, remaining length 10
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        b'h', b'e', b'l', b'l', b'o', // payload "hello" (no packet id at QoS 0)
    ];

    #[test]
    fn publish_qos0_both_directions() {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from("a/b"),
            packet_id: 0,
            payload: Bytes::from_static(b"hello"),
            properties: None,
        });
        assert_eq!(decode_all(PUBLISH_QOS0), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), PUBLISH_QOS0);
        assert_eq!(publish_len(3, 5, QoS::AtMostOnce), PUBLISH_QOS0.len());
    }

    #[test]
    fn publish_qos1_and_qos2_with_flags_both_directions() {
        #[rustfmt::skip]
        let qos1: &[u8] = &[
            0x33, 0x08,                   // PUBLISH QoS 1 + retain, remaining length 8
            0x00, 0x03, 0xc3, 0xa9, b'/', // topic "é/" (multi-byte UTF-8)
            0x12, 0x34,                   // packet id 0x1234
            0xff,                         // payload
        ];
        let p1 = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteStr::from("é/"),
            packet_id: 0x1234,
            payload: Bytes::from_static(&[0xff]),
            properties: None,
        });
        assert_eq!(decode_all(qos1), vec![p1.clone()]);
        assert_eq!(encode_bytes(&p1), qos1);

        #[rustfmt::skip]
        let qos2: &[u8] = &[
            0x3c, 0x05,             // PUBLISH dup + QoS 2, remaining length 5
            0x00, 0x01, b't',       // topic "t"
            0x00, 0x01,             // packet id 1, empty payload
        ];
        let p2 = Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: ByteStr::from("t"),
            packet_id: 1,
            payload: Bytes::new(),
            properties: None,
        });
        assert_eq!(decode_all(qos2), vec![p2.clone()]);
        assert_eq!(encode_bytes(&p2), qos2);
    }

    #[test]
    fn publish_topic_and_payload_are_slices_of_the_read_buffer() {
        let mut buf = BytesMut::from(PUBLISH_QOS0);
        let base = buf.as_ptr();
        let Some(Packet::Publish(p)) = decode(&mut buf, 1024, ProtocolLevel::V311).unwrap() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.topic.as_ptr(), base.wrapping_add(4));
        assert_eq!(p.payload.as_ptr(), base.wrapping_add(7));
    }

    #[test]
    fn publish_with_two_byte_remaining_length() {
        let payload = vec![0xab; 200];
        let mut bytes = vec![
            0x30, 0xcd, 0x01, // PUBLISH QoS 0, remaining length 205 = 0x4d + 1 * 128
            0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        ];
        bytes.extend_from_slice(&payload);
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from("a/b"),
            packet_id: 0,
            payload: Bytes::from(payload),
            properties: None,
        });
        assert_eq!(decode_all(&bytes), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), bytes);
        assert_eq!(p.encoded_len(ProtocolLevel::V311), 208);
    }

    #[test]
    fn publish_errors() {
        // empty topic
        assert_eq!(
            decode_err(&[0x30, 0x02, 0x00, 0x00]),
            DecodeError::EmptyTopic
        );
        // topic "a/+" and "#"
        assert_eq!(
            decode_err(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+']),
            DecodeError::WildcardInTopicName
        );
        assert_eq!(
            decode_err(&[0x30, 0x03, 0x00, 0x01, b'#']),
            DecodeError::WildcardInTopicName
        );
        // topic "a\0"
        assert_eq!(
            decode_err(&[0x30, 0x04, 0x00, 0x02, b'a', 0x00]),
            DecodeError::NullCharacter
        );
        // topic "a\r" and "a" U+009F: control characters (MQTT-1.5.3-2)
        assert_eq!(
            decode_err(&[0x30, 0x04, 0x00, 0x02, b'a', b'\r']),
            DecodeError::ControlCharacter(0x0d)
        );
        assert_eq!(
            decode_err(&[0x30, 0x05, 0x00, 0x03, b'a', 0xc2, 0x9f]),
            DecodeError::ControlCharacter(0x9f)
        );
        // DUP at QoS 0, topic "a/b", payload "x" (MQTT-3.3.1-2)
        assert_eq!(
            decode_err(&[0x38, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'x']),
            DecodeError::DupAtQoS0
        );
        // topic 0xc3 0x28: invalid continuation byte
        assert_eq!(
            decode_err(&[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28]),
            DecodeError::InvalidUtf8
        );
        // QoS 1, topic "t", packet id 0
        assert_eq!(
            decode_err(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
        // topic length 5 but remaining length 3
        assert!(matches!(
            decode_err(&[0x30, 0x03, 0x00, 0x05, b't']),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Publish,
                ..
            }
        ));
        // QoS 2, topic "t", one byte of packet id
        assert!(matches!(
            decode_err(&[0x34, 0x04, 0x00, 0x01, b't', 0x00]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Publish,
                ..
            }
        ));
        // remaining length 1: not even a topic length
        assert!(matches!(
            decode_err(&[0x30, 0x01, 0x00]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Publish,
                ..
            }
        ));
    }

    #[test]
    fn acks_both_directions() {
        #[rustfmt::skip]
        let cases: [(&[u8], Packet); 5] = [
            (&[0x40, 0x02, 0x00, 0x07], Packet::PubAck(Ack::new(7))),       // PUBACK, id 7
            (&[0x50, 0x02, 0x01, 0x00], Packet::PubRec(Ack::new(256))),     // PUBREC, id 256
            (&[0x62, 0x02, 0xff, 0xff], Packet::PubRel(Ack::new(65535))),   // PUBREL (flags 0b0010), id 65535
            (&[0x70, 0x02, 0x00, 0x01], Packet::PubComp(Ack::new(1))),      // PUBCOMP, id 1
            (&[0xb0, 0x02, 0x12, 0x34], Packet::UnsubAck(UnsubAck::new(0x1234))), // UNSUBACK, id 0x1234
        ];
        for (bytes, p) in cases {
            assert_eq!(decode_all(bytes), vec![p.clone()]);
            assert_eq!(encode_bytes(&p), bytes);
            let mut dst = BytesMut::new();
            let id = match &p {
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                    a.packet_id
                }
                Packet::UnsubAck(u) => u.packet_id,
                _ => unreachable!(),
            };
            encode_ack(&mut dst, p.packet_type(), id);
            assert_eq!(&dst[..], bytes);
        }
    }

    #[test]
    fn ack_errors() {
        // PUBACK with packet id 0
        assert_eq!(
            decode_err(&[0x40, 0x02, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
        // PUBREC with remaining length 3
        assert!(matches!(
            decode_err(&[0x50, 0x03, 0x00, 0x01, 0x00]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::PubRec,
                ..
            }
        ));
        // PUBCOMP with remaining length 1
        assert!(matches!(
            decode_err(&[0x70, 0x01, 0x01]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::PubComp,
                ..
            }
        ));
        // PUBREL with flags 0b0000 (must be 0b0010)
        assert_eq!(
            decode_err(&[0x60, 0x02, 0x00, 0x01]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::PubRel,
                flags: 0
            }
        );
        // encoding an ack with id 0 is refused by Packet::encode
        assert_eq!(
            Packet::PubAck(Ack::new(0)).encode(&mut BytesMut::new(), ProtocolLevel::V311),
            Err(EncodeError::ZeroPacketId)
        );
    }

    #[test]
    fn encode_publish_errors_write_nothing() {
        let mut dst = BytesMut::new();
        assert_eq!(
            encode_publish(&mut dst, "t", b"", QoS::AtLeastOnce, false, false, 0),
            Err(EncodeError::ZeroPacketId)
        );
        let long = "x".repeat(65_536);
        assert_eq!(
            encode_publish(&mut dst, &long, b"", QoS::AtMostOnce, false, false, 0),
            Err(EncodeError::FieldTooLong(65_536))
        );
        let huge = vec![0u8; crate::protocol::MAX_REMAINING_LENGTH];
        assert_eq!(
            encode_publish(&mut dst, "t", &huge, QoS::AtMostOnce, false, false, 0),
            Err(EncodeError::PacketTooLarge(
                crate::protocol::MAX_REMAINING_LENGTH + 3
            ))
        );
        assert!(dst.is_empty());
    }

    #[test]
    fn publish_header_is_the_packet_without_its_payload() {
        let header = PublishHeader {
            topic: "a/b",
            payload_len: 3,
            qos: QoS::AtLeastOnce,
            retain: true,
            dup: true,
            packet_id: 0x0102,
            properties: None,
        };
        let mut dst = BytesMut::new();
        header.encode(&mut dst, 3).unwrap();
        // PUBLISH, DUP, QoS 1, RETAIN; remaining length 2 + 3 + 2 + 3; topic; packet id
        assert_eq!(
            &dst[..],
            &[0x3b, 0x0a, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02]
        );
        assert!(dst.capacity() >= dst.len() + 3);
        let mut whole = BytesMut::new();
        encode_publish(
            &mut whole,
            "a/b",
            b"xyz",
            QoS::AtLeastOnce,
            true,
            true,
            0x0102,
        )
        .unwrap();
        dst.extend_from_slice(b"xyz");
        assert_eq!(dst, whole);
        // A payload too large for the Remaining Length fails the header, writing nothing.
        let huge = PublishHeader {
            payload_len: crate::protocol::MAX_REMAINING_LENGTH,
            qos: QoS::AtMostOnce,
            ..header
        };
        let mut dst = BytesMut::new();
        assert!(huge.encode(&mut dst, 0).is_err());
        assert!(dst.is_empty());
    }

    #[test]
    #[should_panic(expected = "encode_ack called with PingReq")]
    fn encode_ack_refuses_other_types() {
        encode_ack(&mut BytesMut::new(), PacketType::PingReq, 1);
    }

    #[rustfmt::skip]
    const PUBLISH_V5: &[u8] = &[
        0x33, 0x11,                   // PUBLISH QoS 1 retain, remaining length 17
        0x00, 0x01, b't',             // topic "t"
        0x00, 0x09,                   // packet id 9
        0x08,                         // properties: 8 bytes
        0x02, 0x00, 0x00, 0x00, 0x0a, // message expiry 10 s
        0x23, 0x00, 0x02,             // topic alias 2
        b'h', b'e', b'y',             // payload "hey"
    ];

    #[test]
    fn publish_v5_both_directions() {
        use super::super::testutil::{decode_all_v5, encode_bytes_v5};
        let mut p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteStr::from("t"),
            packet_id: 9,
            payload: Bytes::from_static(b"hey"),
            properties: Some(Box::new(crate::protocol::Properties {
                message_expiry_interval: Some(10),
                topic_alias: Some(2),
                ..Default::default()
            })),
        };
        assert_eq!(decode_all_v5(PUBLISH_V5), vec![Packet::Publish(p.clone())]);
        assert_eq!(encode_bytes_v5(&Packet::Publish(p.clone())), PUBLISH_V5);
        // The same PUBLISH to a 3.1.1 peer: no property block at all.
        assert_eq!(
            encode_bytes(&Packet::Publish(p.clone())),
            [0x33, 0x08, 0x00, 0x01, b't', 0x00, 0x09, b'h', b'e', b'y']
        );
        // No properties: one zero byte where they would be.
        p.properties = None;
        assert_eq!(
            encode_bytes_v5(&Packet::Publish(p)),
            [0x33, 0x09, 0x00, 0x01, b't', 0x00, 0x09, 0x00, b'h', b'e', b'y']
        );
    }

    #[test]
    fn publish_v5_empty_topic_needs_an_alias() {
        use super::super::testutil::{decode_all_v5, decode_err_v5};
        // QoS 0, empty topic, topic alias 3, payload "x"
        let with_alias = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x03, b'x'];
        let Packet::Publish(p) = &decode_all_v5(&with_alias)[0] else {
            panic!("not a PUBLISH")
        };
        assert!(p.topic.is_empty());
        assert_eq!(p.properties.as_ref().unwrap().topic_alias, Some(3));
        // QoS 0, empty topic, no properties
        assert_eq!(
            decode_err_v5(&[0x30, 0x04, 0x00, 0x00, 0x00, b'x']),
            DecodeError::EmptyTopicWithoutAlias
        );
        // Topic Alias 0 (MQTT-3.3.2-8)
        assert_eq!(
            decode_err_v5(&[0x30, 0x08, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00, b'x']),
            DecodeError::TopicAliasZero
        );
        assert_eq!(
            DecodeError::TopicAliasZero.reason_code(),
            crate::protocol::ReasonCode::TOPIC_ALIAS_INVALID
        );
    }

    #[test]
    fn acks_v5_both_directions() {
        use super::super::testutil::{decode_all_v5, decode_err_v5, encode_bytes_v5};
        use crate::protocol::{Properties, ReasonCode};
        #[rustfmt::skip]
        let cases: Vec<(&[u8], Packet)> = vec![
            // PUBACK id 7, success, nothing more: the 3.1.1 shape
            (&[0x40, 0x02, 0x00, 0x07], Packet::PubAck(Ack::new(7))),
            // PUBACK id 7, 0x10 no matching subscribers, no properties
            (&[0x40, 0x03, 0x00, 0x07, 0x10], Packet::PubAck(Ack {
                packet_id: 7, reason: ReasonCode::NO_MATCHING_SUBSCRIBERS, properties: None,
            })),
            // PUBREC id 1, 0x97 quota exceeded, reason string "full"
            (&[0x50, 0x0b, 0x00, 0x01, 0x97, 0x07, 0x1f, 0x00, 0x04, b'f', b'u', b'l', b'l'], Packet::PubRec(Ack {
                packet_id: 1,
                reason: ReasonCode::QUOTA_EXCEEDED,
                properties: Some(Box::new(Properties { reason_string: Some("full".into()), ..Default::default() })),
            })),
            // PUBREL id 2, 0x92 packet identifier not found
            (&[0x62, 0x03, 0x00, 0x02, 0x92], Packet::PubRel(Ack {
                packet_id: 2, reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, properties: None,
            })),
        ];
        for (bytes, p) in cases {
            assert_eq!(decode_all_v5(bytes), vec![p.clone()]);
            assert_eq!(encode_bytes_v5(&p), bytes);
        }
        // reason 0 with an empty property block decodes as the short form
        assert_eq!(
            decode_all_v5(&[0x70, 0x04, 0x00, 0x03, 0x00, 0x00]),
            vec![Packet::PubComp(Ack::new(3))]
        );
        // PUBCOMP may not say 0x10
        assert_eq!(
            decode_err_v5(&[0x70, 0x03, 0x00, 0x03, 0x10]),
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::PubComp,
                code: 0x10
            }
        );
        // A 3.1.1 PUBACK has exactly two bytes
        assert!(matches!(
            decode_err(&[0x40, 0x03, 0x00, 0x07, 0x10]),
            DecodeError::MalformedPacket { .. }
        ));
    }
}
