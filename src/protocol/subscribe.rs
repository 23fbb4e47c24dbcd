//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK: the packets that carry lists. Their vectors
//! are sized by a first pass over the actual entries in the received body, never by a length
//! the peer announced, so memory follows bytes that really arrived. In MQTT 5 each has a
//! property block after its packet id, SUBSCRIBE an options byte per filter, and SUBACK and
//! UNSUBACK a reason code per filter. A 3.1.1 UNSUBACK has the two-byte ack shape and is read
//! in place by `codec.rs`.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{
    check_field_len, check_remaining_len, malformed, packet_len, put_field, put_fixed_header,
    Reader,
};
use super::properties::{
    check_properties, decode_properties, properties_len, put_properties, PropertyContext,
};
use super::reason;
use super::{
    ByteStr, DecodeError, EncodeError, PacketType, ProtocolLevel, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, SubscribeReturnCode, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::topic::TopicError;

/// Counts the length-prefixed strings in `body` from `pos`, each followed by `trailer` bytes,
/// checking only that they tile the body exactly.
fn count_entries(
    packet_type: PacketType,
    body: &[u8],
    mut pos: usize,
    trailer: usize,
) -> Result<usize, DecodeError> {
    let mut n = 0;
    while pos < body.len() {
        let Some(len) = body.get(pos..pos + 2) else {
            return Err(malformed(
                packet_type,
                "topic filter length runs past the remaining length",
            ));
        };
        pos += 2 + usize::from(u16::from_be_bytes([len[0], len[1]])) + trailer;
        if pos > body.len() {
            return Err(malformed(
                packet_type,
                "topic filter runs past the remaining length",
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// A length-prefixed topic filter of SUBSCRIBE or UNSUBSCRIBE: a valid string, non-empty
/// (MQTT-4.7.3-1) and with its wildcards where MQTT-4.7.1-2/-3 allow them. A filter breaking
/// these is a malformed packet, so the connection closes; only the broker's own refusals (ACL,
/// level limit) are answered with SUBACK 0x80. A shared subscription's filter is the part after
/// `$share/{group}/`; a bad group name is also the broker's to refuse in SUBACK (0x80 / 0x8F),
/// as MQTT 5.0 4.8.2 has brokers do.
fn topic_filter(r: &mut Reader) -> Result<ByteStr, DecodeError> {
    let filter = r.string("topic filter runs past the remaining length")?;
    let checked = match crate::topic::parse_shared(&filter) {
        Some(Ok(shared)) => shared.filter,
        Some(Err(_)) => return Ok(filter),
        None => &filter,
    };
    match crate::topic::validate_filter(checked) {
        Ok(()) => Ok(filter),
        Err(TopicError::Empty) => Err(DecodeError::EmptyTopicFilter),
        Err(e) => Err(DecodeError::InvalidTopicFilter(e)),
    }
}

/// The property block after the packet id, for MQTT 5 only.
fn properties_of(
    r: &mut Reader,
    level: ProtocolLevel,
) -> Result<Option<Box<super::Properties>>, DecodeError> {
    if level.is_v5() {
        let t = r.packet_type();
        decode_properties(r, PropertyContext::Packet(t))
    } else {
        Ok(None)
    }
}

/// The options byte of a SUBSCRIBE entry: 3.1.1 allows only the QoS (MQTT-3.8.3-4); MQTT 5
/// adds No Local, Retain As Published and Retain Handling and reserves bits 6-7 (MQTT-3.8.3-5).
fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let qos = match byte & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return Err(DecodeError::InvalidSubscribeOptions(byte)),
    };
    if !v5 {
        if byte & !0b11 != 0 {
            return Err(DecodeError::InvalidSubscribeOptions(byte));
        }
        return Ok(qos.into());
    }
    if byte & 0xc0 != 0 {
        return Err(DecodeError::ReservedSubscriptionOptions(byte));
    }
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn options_byte(o: &SubscriptionOptions, v5: bool) -> u8 {
    let mut b = o.qos as u8;
    if v5 {
        if o.no_local {
            b |= 0b0100;
        }
        if o.retain_as_published {
            b |= 0b1000;
        }
        b |= (o.retain_handling as u8) << 4;
    }
    b
}

pub(crate) fn decode_subscribe(
    body: Bytes,
    level: ProtocolLevel,
) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(PacketType::Subscribe, body);
    let packet_id = r.packet_id()?;
    let properties = properties_of(&mut r, level)?;
    let n = count_entries(PacketType::Subscribe, r.whole(), r.position(), 1)?;
    if n == 0 {
        return Err(DecodeError::EmptySubscribe);
    }
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let filter = topic_filter(&mut r)?;
        let options = subscription_options(r.u8("subscription options missing")?, level.is_v5())?;
        filters.push((filter, options));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn decode_unsubscribe(
    body: Bytes,
    level: ProtocolLevel,
) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(PacketType::Unsubscribe, body);
    let packet_id = r.packet_id()?;
    let properties = properties_of(&mut r, level)?;
    let n = count_entries(PacketType::Unsubscribe, r.whole(), r.position(), 0)?;
    if n == 0 {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        filters.push(topic_filter(&mut r)?);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

pub(crate) fn decode_suback(body: Bytes, level: ProtocolLevel) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(PacketType::SubAck, body);
    let packet_id = r.packet_id()?;
    let properties = properties_of(&mut r, level)?;
    if r.is_empty() {
        return Err(malformed(PacketType::SubAck, "no return codes"));
    }
    let mut return_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("return code missing")?;
        return_codes.push(match code {
            0 => SubscribeReturnCode::Success(QoS::AtMostOnce),
            1 => SubscribeReturnCode::Success(QoS::AtLeastOnce),
            2 => SubscribeReturnCode::Success(QoS::ExactlyOnce),
            0x80 => SubscribeReturnCode::FAILURE,
            other if level.is_v5() && reason::allowed(PacketType::SubAck, other) => {
                SubscribeReturnCode::Failure(ReasonCode(other))
            }
            other => return Err(DecodeError::InvalidSubAckReturnCode(other)),
        });
    }
    Ok(SubAck {
        packet_id,
        return_codes,
        properties,
    })
}

/// MQTT 5 UNSUBACK: packet id, properties, one reason code per filter.
pub(crate) fn decode_unsuback(body: Bytes) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(PacketType::UnsubAck, body);
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, PropertyContext::Packet(PacketType::UnsubAck))?;
    if r.is_empty() {
        return Err(malformed(PacketType::UnsubAck, "no reason codes"));
    }
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("reason code missing")?;
        if !reason::allowed(PacketType::UnsubAck, code) {
            return Err(DecodeError::InvalidReasonCode {
                packet_type: PacketType::UnsubAck,
                code,
            });
        }
        reasons.push(ReasonCode(code));
    }
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn v5_properties_len(props: &Option<Box<super::Properties>>, v5: bool) -> usize {
    if v5 {
        properties_len(props)
    } else {
        0
    }
}

pub(crate) fn subscribe_remaining_len(s: &Subscribe, v5: bool) -> usize {
    2 + v5_properties_len(&s.properties, v5)
        + s.filters
            .iter()
            .map(|(f, _)| 2 + f.len() + 1)
            .sum::<usize>()
}

pub(crate) fn unsubscribe_remaining_len(u: &Unsubscribe, v5: bool) -> usize {
    2 + v5_properties_len(&u.properties, v5) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
}

pub(crate) fn suback_remaining_len(s: &SubAck, v5: bool) -> usize {
    2 + v5_properties_len(&s.properties, v5) + s.return_codes.len()
}

pub(crate) fn unsuback_remaining_len(u: &UnsubAck, v5: bool) -> usize {
    if v5 {
        2 + properties_len(&u.properties) + u.reasons.len()
    } else {
        2
    }
}

/// Checks what every list packet needs before anything is written.
fn check_list(
    packet_type: PacketType,
    packet_id: u16,
    entries: usize,
    remaining_len: usize,
) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    if entries == 0 {
        return Err(EncodeError::EmptyList(packet_type));
    }
    check_remaining_len(remaining_len)
}

fn put_v5_properties(dst: &mut BytesMut, props: &Option<Box<super::Properties>>, v5: bool) {
    if v5 {
        put_properties(dst, props);
    }
}

fn check_v5_properties(
    props: &Option<Box<super::Properties>>,
    v5: bool,
) -> Result<(), EncodeError> {
    if v5 {
        check_properties(props)
    } else {
        Ok(())
    }
}

pub(crate) fn encode_subscribe(
    s: &Subscribe,
    dst: &mut BytesMut,
    v5: bool,
) -> Result<(), EncodeError> {
    for (f, _) in &s.filters {
        check_field_len(f.len())?;
    }
    check_v5_properties(&s.properties, v5)?;
    let remaining_len = subscribe_remaining_len(s, v5);
    check_list(
        PacketType::Subscribe,
        s.packet_id,
        s.filters.len(),
        remaining_len,
    )?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(
        dst,
        ((PacketType::Subscribe as u8) << 4) | 0b0010,
        remaining_len,
    );
    dst.put_u16(s.packet_id);
    put_v5_properties(dst, &s.properties, v5);
    for (f, options) in &s.filters {
        put_field(dst, f.as_bytes());
        dst.put_u8(options_byte(options, v5));
    }
    Ok(())
}

pub(crate) fn encode_unsubscribe(
    u: &Unsubscribe,
    dst: &mut BytesMut,
    v5: bool,
) -> Result<(), EncodeError> {
    for f in &u.filters {
        check_field_len(f.len())?;
    }
    check_v5_properties(&u.properties, v5)?;
    let remaining_len = unsubscribe_remaining_len(u, v5);
    check_list(
        PacketType::Unsubscribe,
        u.packet_id,
        u.filters.len(),
        remaining_len,
    )?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(
        dst,
        ((PacketType::Unsubscribe as u8) << 4) | 0b0010,
        remaining_len,
    );
    dst.put_u16(u.packet_id);
    put_v5_properties(dst, &u.properties, v5);
    for f in &u.filters {
        put_field(dst, f.as_bytes());
    }
    Ok(())
}

pub(crate) fn encode_suback(s: &SubAck, dst: &mut BytesMut, v5: bool) -> Result<(), EncodeError> {
    check_v5_properties(&s.properties, v5)?;
    let remaining_len = suback_remaining_len(s, v5);
    check_list(
        PacketType::SubAck,
        s.packet_id,
        s.return_codes.len(),
        remaining_len,
    )?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (PacketType::SubAck as u8) << 4, remaining_len);
    dst.put_u16(s.packet_id);
    put_v5_properties(dst, &s.properties, v5);
    for code in &s.return_codes {
        dst.put_u8(match code {
            SubscribeReturnCode::Success(qos) => *qos as u8,
            SubscribeReturnCode::Failure(reason) if v5 => reason.0,
            SubscribeReturnCode::Failure(_) => 0x80,
        });
    }
    Ok(())
}

/// A 3.1.1 UNSUBACK is the identifier alone; an MQTT 5 one has properties and a reason per
/// filter (at least one).
pub(crate) fn encode_unsuback(
    u: &UnsubAck,
    dst: &mut BytesMut,
    v5: bool,
) -> Result<(), EncodeError> {
    if u.packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    if !v5 {
        super::publish::encode_ack(dst, PacketType::UnsubAck, u.packet_id);
        return Ok(());
    }
    check_properties(&u.properties)?;
    let remaining_len = unsuback_remaining_len(u, v5);
    check_list(
        PacketType::UnsubAck,
        u.packet_id,
        u.reasons.len(),
        remaining_len,
    )?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (PacketType::UnsubAck as u8) << 4, remaining_len);
    dst.put_u16(u.packet_id);
    put_properties(dst, &u.properties);
    for r in &u.reasons {
        dst.put_u8(r.0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all, decode_err, encode_bytes};
    use super::super::Packet;
    use super::*;

    fn filter(s: &str) -> ByteStr {
        ByteStr::from(s)
    }

    #[test]
    fn subscribe_both_directions() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x82, 0x11,                         // SUBSCRIBE (flags 0b0010), remaining length 17
            0x00, 0x0a,                         // packet id 10
            0x00, 0x03, b'a', b'/', b'+', 0x01, // filter "a/+", QoS 1
            0x00, 0x01, b'#', 0x02,             // filter "#", QoS 2
            0x00, 0x02, 0xc3, 0xa9, 0x00,       // filter "é", QoS 0
        ];
        let p = Packet::Subscribe(Subscribe {
            packet_id: 10,
            filters: vec![
                (filter("a/+"), QoS::AtLeastOnce.into()),
                (filter("#"), QoS::ExactlyOnce.into()),
                (filter("é"), QoS::AtMostOnce.into()),
            ],
            properties: None,
        });
        assert_eq!(decode_all(bytes), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), bytes);
    }

    #[test]
    fn malformed_filters_close_in_subscribe_and_unsubscribe() {
        use TopicError::*;
        #[rustfmt::skip]
        let subscribes: [(&[u8], DecodeError); 6] = [
            // SUBSCRIBE id 1: empty filter, QoS 0 (MQTT-4.7.3-1)
            (&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], DecodeError::EmptyTopicFilter),
            // "ok" QoS 1, then an empty filter QoS 0: one bad filter spoils the packet
            (&[0x82, 0x0a, 0x00, 0x01, 0x00, 0x02, b'o', b'k', 0x01, 0x00, 0x00, 0x00],
             DecodeError::EmptyTopicFilter),
            // "a#" (MQTT-4.7.1-2)
            (&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x01],
             DecodeError::InvalidTopicFilter(MisplacedMultiLevelWildcard)),
            // "#/a"
            (&[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'#', b'/', b'a', 0x00],
             DecodeError::InvalidTopicFilter(MisplacedMultiLevelWildcard)),
            // "a+" (MQTT-4.7.1-3)
            (&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'+', 0x00],
             DecodeError::InvalidTopicFilter(MisplacedSingleLevelWildcard)),
            // "a\n" (MQTT-1.5.3-2)
            (&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'\n', 0x00],
             DecodeError::ControlCharacter(0x0a)),
        ];
        for (bytes, want) in subscribes {
            assert_eq!(decode_err(bytes), want, "{bytes:02x?}");
        }
        // A shared subscription: the filter after the group follows the rules...
        let subscribe_one = |filter: &[u8]| {
            let mut b = vec![
                0x82,
                5 + filter.len() as u8,
                0x00,
                0x01,
                0x00,
                filter.len() as u8,
            ];
            b.extend_from_slice(filter);
            b.push(0x00);
            b
        };
        assert_eq!(
            decode_err(&subscribe_one(b"$share/g/a#")),
            DecodeError::InvalidTopicFilter(MisplacedMultiLevelWildcard)
        );
        // ...while a bad group name ("g+") is the broker's to refuse in SUBACK.
        assert!(matches!(
            &decode_all(&subscribe_one(b"$share/g+/a"))[..],
            [Packet::Subscribe(_)]
        ));
        #[rustfmt::skip]
        let unsubscribes: [(&[u8], DecodeError); 4] = [
            // UNSUBSCRIBE id 1: empty filter
            (&[0xa2, 0x04, 0x00, 0x01, 0x00, 0x00], DecodeError::EmptyTopicFilter),
            // "a/#", then an empty filter
            (&[0xa2, 0x09, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00],
             DecodeError::EmptyTopicFilter),
            // "a/#/b"
            (&[0xa2, 0x09, 0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b'],
             DecodeError::InvalidTopicFilter(MisplacedMultiLevelWildcard)),
            // U+0085 (0xC2 0x85)
            (&[0xa2, 0x06, 0x00, 0x01, 0x00, 0x02, 0xc2, 0x85],
             DecodeError::ControlCharacter(0x85)),
        ];
        for (bytes, want) in unsubscribes {
            assert_eq!(decode_err(bytes), want, "{bytes:02x?}");
        }
    }

    #[test]
    fn the_deepest_filters_decode() {
        // 65,535 '/' is a valid filter of 65,536 empty levels, and so is 32,767 "+/" and a
        // "#": the codec has no opinion on depth.
        for filter in ["/".repeat(65_535), "+/".repeat(32_767) + "#"] {
            let p = Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(ByteStr::from(filter.as_str()), QoS::ExactlyOnce.into())],
                properties: None,
            });
            let bytes = encode_bytes(&p);
            assert_eq!(
                &bytes[..8],
                &[0x82, 0x84, 0x80, 0x04, 0x00, 0x01, 0xff, 0xff]
            );
            assert_eq!(decode_all(&bytes), vec![p]);
            let u = Packet::Unsubscribe(Unsubscribe {
                packet_id: 1,
                filters: vec![ByteStr::from(filter.as_str())],
                properties: None,
            });
            assert_eq!(decode_all(&encode_bytes(&u)), vec![u]);
        }
    }

    #[test]
    fn subscribe_errors() {
        // packet id only
        assert_eq!(
            decode_err(&[0x82, 0x02, 0x00, 0x01]),
            DecodeError::EmptySubscribe
        );
        // packet id 0
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
            DecodeError::ZeroPacketId
        );
        // requested QoS 3, and a reserved upper bit
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
            DecodeError::InvalidSubscribeOptions(0x03)
        );
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x41]),
            DecodeError::InvalidSubscribeOptions(0x41)
        );
        // filter "\0"
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]),
            DecodeError::NullCharacter
        );
        // filter 0xff
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0xff, 0x00]),
            DecodeError::InvalidUtf8
        );
        // filter without its QoS byte
        assert!(matches!(
            decode_err(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Subscribe,
                ..
            }
        ));
        // a lone byte after the packet id
        assert!(matches!(
            decode_err(&[0x82, 0x03, 0x00, 0x01, 0x00]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Subscribe,
                ..
            }
        ));
        // flags 0b0000
        assert_eq!(
            decode_err(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::Subscribe,
                flags: 0
            }
        );
    }

    #[test]
    fn suback_both_directions() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x90, 0x06,             // SUBACK, remaining length 6
            0x00, 0x0a,             // packet id 10
            0x00, 0x01, 0x02, 0x80, // granted QoS 0, 1, 2, failure
        ];
        let p = Packet::SubAck(SubAck {
            packet_id: 10,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Success(QoS::ExactlyOnce),
                SubscribeReturnCode::FAILURE,
            ],
            properties: None,
        });
        assert_eq!(decode_all(bytes), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), bytes);
    }

    #[test]
    fn suback_errors() {
        // return code 0x03
        assert_eq!(
            decode_err(&[0x90, 0x03, 0x00, 0x01, 0x03]),
            DecodeError::InvalidSubAckReturnCode(0x03)
        );
        // no return codes
        assert!(matches!(
            decode_err(&[0x90, 0x02, 0x00, 0x01]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::SubAck,
                ..
            }
        ));
        // packet id 0
        assert_eq!(
            decode_err(&[0x90, 0x03, 0x00, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
    }

    #[test]
    fn unsubscribe_both_directions() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0xa2, 0x0d,                         // UNSUBSCRIBE (flags 0b0010), remaining length 13
            0x00, 0x02,                         // packet id 2
            0x00, 0x03, b'a', b'/', b'#',       // filter "a/#"
            0x00, 0x01, b'+',                   // filter "+"
            0x00, 0x01, b'/',                   // filter "/"
        ];
        let p = Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![filter("a/#"), filter("+"), filter("/")],
            properties: None,
        });
        assert_eq!(decode_all(bytes), vec![p.clone()]);
        assert_eq!(encode_bytes(&p), bytes);
    }

    #[test]
    fn unsubscribe_errors() {
        // packet id only
        assert_eq!(
            decode_err(&[0xa2, 0x02, 0x00, 0x01]),
            DecodeError::EmptyUnsubscribe
        );
        // packet id 0
        assert_eq!(
            decode_err(&[0xa2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a']),
            DecodeError::ZeroPacketId
        );
        // filter length 2, one byte present
        assert!(matches!(
            decode_err(&[0xa2, 0x05, 0x00, 0x01, 0x00, 0x02, b'a']),
            DecodeError::MalformedPacket {
                packet_type: PacketType::Unsubscribe,
                ..
            }
        ));
        // flags 0b0011
        assert_eq!(
            decode_err(&[0xa3, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
            DecodeError::InvalidFlags {
                packet_type: PacketType::Unsubscribe,
                flags: 0b0011
            }
        );
    }

    #[test]
    fn encode_refuses_empty_lists_and_zero_ids() {
        let mut dst = BytesMut::new();
        let empty = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![],
            properties: None,
        });
        assert_eq!(
            empty.encode(&mut dst, ProtocolLevel::V311),
            Err(EncodeError::EmptyList(PacketType::Subscribe))
        );
        let zero = Packet::Unsubscribe(Unsubscribe {
            packet_id: 0,
            filters: vec![filter("a")],
            properties: None,
        });
        assert_eq!(
            zero.encode(&mut dst, ProtocolLevel::V311),
            Err(EncodeError::ZeroPacketId)
        );
        let empty_ack = Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: vec![],
            properties: None,
        });
        assert_eq!(
            empty_ack.encode(&mut dst, ProtocolLevel::V311),
            Err(EncodeError::EmptyList(PacketType::SubAck))
        );
        assert!(dst.is_empty());
    }

    #[test]
    fn subscribe_v5_both_directions() {
        use super::super::testutil::{decode_all_v5, decode_err_v5, encode_bytes_v5};
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x82, 0x0d,                   // SUBSCRIBE, remaining length 13
            0x00, 0x05,                   // packet id 5
            0x02, 0x0b, 0x07,             // properties: subscription identifier 7
            0x00, 0x01, b'a', 0x2e,       // "a": QoS 2, no local, retain as published, retain handling 2
            0x00, 0x01, b'#', 0x11,       // "#": QoS 1, retain handling 1
        ];
        let p = Packet::Subscribe(Subscribe {
            packet_id: 5,
            filters: vec![
                (
                    filter("a"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                ),
                (
                    filter("#"),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        retain_handling: RetainHandling::SendIfNew,
                        ..SubscriptionOptions::default()
                    },
                ),
            ],
            properties: Some(Box::new(crate::protocol::Properties {
                subscription_identifiers: smallvec::smallvec![7],
                ..Default::default()
            })),
        });
        assert_eq!(decode_all_v5(bytes), vec![p.clone()]);
        assert_eq!(encode_bytes_v5(&p), bytes);
        // The options byte of 3.1.1 is the QoS alone: 0x2e there is malformed.
        assert_eq!(
            decode_err(&[0x82, 0x06, 0x00, 0x05, 0x00, 0x01, b'a', 0x2e]),
            DecodeError::InvalidSubscribeOptions(0x2e)
        );
        // MQTT 5: reserved bits 6-7 (MQTT-3.8.3-5) and Retain Handling 3
        assert_eq!(
            decode_err_v5(&[0x82, 0x07, 0x00, 0x05, 0x00, 0x00, 0x01, b'a', 0x41]),
            DecodeError::ReservedSubscriptionOptions(0x41)
        );
        assert_eq!(
            decode_err_v5(&[0x82, 0x07, 0x00, 0x05, 0x00, 0x00, 0x01, b'a', 0x30]),
            DecodeError::InvalidRetainHandling
        );
    }

    #[test]
    fn suback_and_unsuback_v5_both_directions() {
        use super::super::testutil::{decode_all_v5, decode_err_v5, encode_bytes_v5};
        #[rustfmt::skip]
        let suback: &[u8] = &[
            0x90, 0x06,             // SUBACK, remaining length 6
            0x00, 0x05,             // packet id 5
            0x00,                   // no properties
            0x01, 0x87, 0xa2,       // granted 1, not authorized, wildcards not supported
        ];
        let p = Packet::SubAck(SubAck {
            packet_id: 5,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Failure(ReasonCode::NOT_AUTHORIZED),
                SubscribeReturnCode::Failure(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
            ],
            properties: None,
        });
        assert_eq!(decode_all_v5(suback), vec![p.clone()]);
        assert_eq!(encode_bytes_v5(&p), suback);
        // To a 3.1.1 client every refusal is 0x80.
        assert_eq!(encode_bytes(&p), [0x90, 0x05, 0x00, 0x05, 0x01, 0x80, 0x80]);
        // 0x87 is no 3.1.1 SUBACK code
        assert_eq!(
            decode_err(&[0x90, 0x03, 0x00, 0x05, 0x87]),
            DecodeError::InvalidSubAckReturnCode(0x87)
        );

        #[rustfmt::skip]
        let unsuback: &[u8] = &[
            0xb0, 0x05,             // UNSUBACK, remaining length 5
            0x00, 0x06,             // packet id 6
            0x00,                   // no properties
            0x00, 0x11,             // success, no subscription existed
        ];
        let p = Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
            properties: None,
        });
        assert_eq!(decode_all_v5(unsuback), vec![p.clone()]);
        assert_eq!(encode_bytes_v5(&p), unsuback);
        // To a 3.1.1 client: the identifier alone.
        assert_eq!(encode_bytes(&p), [0xb0, 0x02, 0x00, 0x06]);
        // An MQTT 5 UNSUBACK needs its reason codes.
        assert!(matches!(
            decode_err_v5(&[0xb0, 0x02, 0x00, 0x06]),
            DecodeError::MalformedPacket { .. }
        ));
    }
}
