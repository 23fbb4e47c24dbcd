//! SUBSCRIBE, SUBACK and UNSUBSCRIBE: the packets that carry lists. Their vectors are sized
//! by a first pass over the actual entries in the received body, never by a length the peer
//! announced, so memory follows bytes that really arrived. UNSUBACK has the two-byte ack
//! shape and lives with the other acks in `publish.rs`.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{
    check_field_len, check_remaining_len, malformed, packet_len, put_field, put_fixed_header,
    Reader,
};
use super::{
    ByteStr, DecodeError, EncodeError, PacketType, QoS, SubAck, Subscribe, SubscribeReturnCode,
    Unsubscribe,
};
use crate::topic::TopicError;

/// Counts the length-prefixed strings in `body` (after the packet id), each followed by
/// `trailer` bytes, checking only that they tile the body exactly.
fn count_entries(
    packet_type: PacketType,
    body: &[u8],
    trailer: usize,
) -> Result<usize, DecodeError> {
    let mut pos = 2;
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
/// level limit) are answered with SUBACK 0x80.
fn topic_filter(r: &mut Reader) -> Result<ByteStr, DecodeError> {
    let filter = r.string("topic filter runs past the remaining length")?;
    match crate::topic::validate_filter(&filter) {
        Ok(()) => Ok(filter),
        Err(TopicError::Empty) => Err(DecodeError::EmptyTopicFilter),
        Err(e) => Err(DecodeError::InvalidTopicFilter(e)),
    }
}

pub(crate) fn decode_subscribe(body: Bytes) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(PacketType::Subscribe, body);
    let packet_id = r.packet_id()?;
    let n = count_entries(PacketType::Subscribe, r.whole(), 1)?;
    if n == 0 {
        return Err(DecodeError::EmptySubscribe);
    }
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let filter = topic_filter(&mut r)?;
        let options = r.u8("requested QoS missing")?;
        let qos = match options {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(DecodeError::InvalidSubscribeOptions(options)),
        };
        filters.push((filter, qos));
    }
    Ok(Subscribe { packet_id, filters })
}

pub(crate) fn decode_unsubscribe(body: Bytes) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(PacketType::Unsubscribe, body);
    let packet_id = r.packet_id()?;
    let n = count_entries(PacketType::Unsubscribe, r.whole(), 0)?;
    if n == 0 {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        filters.push(topic_filter(&mut r)?);
    }
    Ok(Unsubscribe { packet_id, filters })
}

pub(crate) fn decode_suback(body: Bytes) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(PacketType::SubAck, body);
    let packet_id = r.packet_id()?;
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
            0x80 => SubscribeReturnCode::Failure,
            other => return Err(DecodeError::InvalidSubAckReturnCode(other)),
        });
    }
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}

pub(crate) fn subscribe_remaining_len(s: &Subscribe) -> usize {
    2 + s
        .filters
        .iter()
        .map(|(f, _)| 2 + f.len() + 1)
        .sum::<usize>()
}

pub(crate) fn unsubscribe_remaining_len(u: &Unsubscribe) -> usize {
    2 + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
}

pub(crate) fn suback_remaining_len(s: &SubAck) -> usize {
    2 + s.return_codes.len()
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

pub(crate) fn encode_subscribe(s: &Subscribe, dst: &mut BytesMut) -> Result<(), EncodeError> {
    for (f, _) in &s.filters {
        check_field_len(f.len())?;
    }
    let remaining_len = subscribe_remaining_len(s);
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
    for (f, qos) in &s.filters {
        put_field(dst, f.as_bytes());
        dst.put_u8(*qos as u8);
    }
    Ok(())
}

pub(crate) fn encode_unsubscribe(u: &Unsubscribe, dst: &mut BytesMut) -> Result<(), EncodeError> {
    for f in &u.filters {
        check_field_len(f.len())?;
    }
    let remaining_len = unsubscribe_remaining_len(u);
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
    for f in &u.filters {
        put_field(dst, f.as_bytes());
    }
    Ok(())
}

pub(crate) fn encode_suback(s: &SubAck, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining_len = suback_remaining_len(s);
    check_list(
        PacketType::SubAck,
        s.packet_id,
        s.return_codes.len(),
        remaining_len,
    )?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (PacketType::SubAck as u8) << 4, remaining_len);
    dst.put_u16(s.packet_id);
    for code in &s.return_codes {
        dst.put_u8(match code {
            SubscribeReturnCode::Success(qos) => *qos as u8,
            SubscribeReturnCode::Failure => 0x80,
        });
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
                (filter("a/+"), QoS::AtLeastOnce),
                (filter("#"), QoS::ExactlyOnce),
                (filter("é"), QoS::AtMostOnce),
            ],
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
                filters: vec![(ByteStr::from(filter.as_str()), QoS::ExactlyOnce)],
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
                SubscribeReturnCode::Failure,
            ],
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
        });
        assert_eq!(
            empty.encode(&mut dst),
            Err(EncodeError::EmptyList(PacketType::Subscribe))
        );
        let zero = Packet::Unsubscribe(Unsubscribe {
            packet_id: 0,
            filters: vec![filter("a")],
        });
        assert_eq!(zero.encode(&mut dst), Err(EncodeError::ZeroPacketId));
        let empty_ack = Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: vec![],
        });
        assert_eq!(
            empty_ack.encode(&mut dst),
            Err(EncodeError::EmptyList(PacketType::SubAck))
        );
        assert!(dst.is_empty());
    }
}
