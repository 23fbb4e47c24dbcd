//! The codec's entry points: [`decode`] and [`frame_len`] dispatch on the fixed header to the
//! packet-family modules, and [`Packet::encode`] / [`Packet::encoded_len`] do the same the
//! other way. Buffer ownership is decided here: a packet with a body is split off the read
//! buffer and frozen once, and every field is a slice of that one frame.

use bytes::{Buf, BytesMut};

use super::connect::{
    connack_remaining_len, connect_remaining_len, decode_connack, decode_connect, encode_connack,
    encode_connect,
};
use super::disconnect::{decode_reason_packet, encode_reason_packet, reason_packet_remaining_len};
use super::header::{packet_len, parse_fixed_header};
use super::ping::encode_empty;
use super::publish::{ack_remaining_len, decode_ack, decode_publish, encode_ack_packet};
use super::subscribe::{
    decode_suback, decode_subscribe, decode_unsuback, decode_unsubscribe, encode_suback,
    encode_subscribe, encode_unsuback, encode_unsubscribe, suback_remaining_len,
    subscribe_remaining_len, unsuback_remaining_len, unsubscribe_remaining_len,
};
use super::{Ack, DecodeError, Disconnect, EncodeError, Packet, PacketType, ProtocolLevel};

/// Decodes the packet at the front of `buf`, as sent on a connection of protocol `level` (the
/// level only matters after CONNECT: CONNECT says its own).
///
/// - `Ok(None)`: the packet is not complete yet; nothing was consumed. Read more and call again.
/// - `Ok(Some(packet))`: exactly that packet's bytes were split off the front of `buf`; its
///   strings and binary fields are slices of those bytes, not copies.
/// - `Err(_)`: the peer broke a rule; the connection must be closed. What is left in `buf` is
///   unspecified.
///
/// Header-level errors (reserved type, flags, malformed Remaining Length, a total size above
/// `max_packet_size`, a wrong size for a fixed-size packet) are reported as soon as the bytes
/// that show them are there, without waiting for the body. `decode` never reserves memory in
/// `buf`, whatever length the peer announces.
pub fn decode(
    buf: &mut BytesMut,
    max_packet_size: usize,
    level: ProtocolLevel,
) -> Result<Option<Packet>, DecodeError> {
    let Some(h) = parse_fixed_header(buf, max_packet_size, level)? else {
        return Ok(None);
    };
    let total = h.total_len();
    if buf.len() < total {
        return Ok(None);
    }
    let hl = h.header_len;
    let v5 = level.is_v5();
    // The short fixed-size packets are read in place, so nothing is split or
    // reference-counted for them: every 3.1.1 ack, and MQTT 5 acks without reason or
    // properties (the common case).
    let packet = match h.packet_type {
        PacketType::PubAck
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::UnsubAck
            if h.remaining_len == 2 && !(v5 && h.packet_type == PacketType::UnsubAck) =>
        {
            let id = u16::from_be_bytes([buf[hl], buf[hl + 1]]);
            buf.advance(total);
            if id == 0 {
                return Err(DecodeError::ZeroPacketId);
            }
            let ack = Ack::new(id);
            match h.packet_type {
                PacketType::PubAck => Packet::PubAck(ack),
                PacketType::PubRec => Packet::PubRec(ack),
                PacketType::PubRel => Packet::PubRel(ack),
                PacketType::PubComp => Packet::PubComp(ack),
                _ => Packet::UnsubAck(super::UnsubAck::new(id)),
            }
        }
        PacketType::ConnAck if !v5 => {
            let ack = decode_connack(buf[hl], buf[hl + 1]);
            buf.advance(total);
            Packet::ConnAck(ack?)
        }
        PacketType::PingReq | PacketType::PingResp => {
            buf.advance(total);
            match h.packet_type {
                PacketType::PingReq => Packet::PingReq,
                _ => Packet::PingResp,
            }
        }
        PacketType::Disconnect if h.remaining_len == 0 => {
            buf.advance(total);
            Packet::Disconnect(Disconnect::NORMAL)
        }
        // 3.15.2.1: no reason code means 0x00 success.
        PacketType::Auth if h.remaining_len == 0 => {
            buf.advance(total);
            Packet::Auth(super::Auth {
                reason: super::ReasonCode::SUCCESS,
                properties: None,
            })
        }
        _ => {
            buf.advance(hl);
            let body = buf.split_to(h.remaining_len).freeze();
            let t = h.packet_type;
            match t {
                PacketType::Publish => Packet::Publish(decode_publish(h.flags, body, level)?),
                PacketType::Connect => Packet::Connect(Box::new(decode_connect(body)?)),
                PacketType::ConnAck => Packet::ConnAck(super::connect::decode_connack_v5(body)?),
                PacketType::PubAck => Packet::PubAck(decode_ack(t, body)?),
                PacketType::PubRec => Packet::PubRec(decode_ack(t, body)?),
                PacketType::PubRel => Packet::PubRel(decode_ack(t, body)?),
                PacketType::PubComp => Packet::PubComp(decode_ack(t, body)?),
                PacketType::Subscribe => Packet::Subscribe(decode_subscribe(body, level)?),
                PacketType::SubAck => Packet::SubAck(decode_suback(body, level)?),
                PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(body, level)?),
                PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(body)?),
                PacketType::Disconnect => {
                    let (reason, properties) = decode_reason_packet(t, body)?;
                    Packet::Disconnect(Disconnect { reason, properties })
                }
                PacketType::Auth => {
                    let (reason, properties) = decode_reason_packet(t, body)?;
                    Packet::Auth(super::Auth { reason, properties })
                }
                // Handled above: fixed size, in place.
                PacketType::PingReq | PacketType::PingResp => unreachable!(),
            }
        }
    };
    Ok(Some(packet))
}

/// Parses only the fixed header at the front of `buf`: `Ok(Some(total_len))` (fixed header
/// plus Remaining Length) once the whole fixed header is there, so a reader can size its
/// buffer; `Ok(None)` before that. Returns the same header-level errors as [`decode`], as early.
pub fn frame_len(
    buf: &[u8],
    max_packet_size: usize,
    level: ProtocolLevel,
) -> Result<Option<usize>, DecodeError> {
    Ok(parse_fixed_header(buf, max_packet_size, level)?.map(|h| h.total_len()))
}

impl Packet {
    /// Bytes [`Packet::encode`] will append for protocol `level`, computed without writing.
    /// For a packet that `encode` refuses the value is meaningless but computing it does not
    /// panic.
    pub fn encoded_len(&self, level: ProtocolLevel) -> usize {
        let v5 = level.is_v5();
        match self {
            Packet::Publish(p) => p.encoded_len(level),
            Packet::Connect(c) => packet_len(connect_remaining_len(c)),
            Packet::ConnAck(a) => packet_len(connack_remaining_len(a, v5)),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                packet_len(ack_remaining_len(a, v5))
            }
            Packet::UnsubAck(u) => packet_len(unsuback_remaining_len(u, v5)),
            Packet::Subscribe(s) => packet_len(subscribe_remaining_len(s, v5)),
            Packet::SubAck(s) => packet_len(suback_remaining_len(s, v5)),
            Packet::Unsubscribe(u) => packet_len(unsubscribe_remaining_len(u, v5)),
            Packet::PingReq | Packet::PingResp => 2,
            Packet::Disconnect(d) => {
                packet_len(reason_packet_remaining_len(d.reason, &d.properties, v5))
            }
            Packet::Auth(a) => packet_len(reason_packet_remaining_len(a.reason, &a.properties, v5)),
        }
    }

    /// Appends the packet to `dst` as protocol `level` has it, reserving its exact size once.
    /// On error nothing is written. (CONNECT is written as its own `level` says.)
    ///
    /// For 3.1/3.1.1 the MQTT 5 fields are left out: properties, the reason codes of acks and
    /// DISCONNECT; a CONNACK or SUBACK refusal becomes the closest 3.1.1 return code. AUTH
    /// cannot be sent to a 3.1.1 peer at all.
    ///
    /// Refused: a string or binary field over 65535 bytes, a body over
    /// [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH), packet identifier 0 where one is
    /// sent, an empty SUBSCRIBE/UNSUBSCRIBE/SUBACK list, and a 3.1.1 CONNECT with a password
    /// but no user name: all things the peer would have to reject. String contents (topic
    /// syntax, U+0000) are not checked: `ByteStr` is UTF-8, the rest is the caller's business.
    pub fn encode(&self, dst: &mut BytesMut, level: ProtocolLevel) -> Result<(), EncodeError> {
        let v5 = level.is_v5();
        match self {
            Packet::Publish(p) => p.encode(dst, level),
            Packet::Connect(c) => encode_connect(c, dst),
            Packet::ConnAck(a) => encode_connack(a, dst, v5),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                encode_ack_packet(dst, self.packet_type(), a, v5)
            }
            Packet::UnsubAck(u) => encode_unsuback(u, dst, v5),
            Packet::Subscribe(s) => encode_subscribe(s, dst, v5),
            Packet::SubAck(s) => encode_suback(s, dst, v5),
            Packet::Unsubscribe(u) => encode_unsubscribe(u, dst, v5),
            Packet::PingReq | Packet::PingResp => {
                encode_empty(dst, self.packet_type());
                Ok(())
            }
            Packet::Disconnect(d) => {
                encode_reason_packet(dst, PacketType::Disconnect, d.reason, &d.properties, v5)
            }
            Packet::Auth(a) => {
                if !v5 {
                    return Err(EncodeError::NotInV3(PacketType::Auth));
                }
                encode_reason_packet(dst, PacketType::Auth, a.reason, &a.properties, v5)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::encode_bytes;
    use super::super::{ByteStr, Publish, QoS, UnsubAck};
    use super::*;
    use bytes::Bytes;

    #[rustfmt::skip]
    const PUBLISH_QOS1: &[u8] = &[
        0x32, 0x09,             // PUBLISH QoS 1, remaining length 9
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        0x00, 0x05,             // packet id 5
        b'h', b'i',             // payload "hi"
    ];

    fn publish_qos1() -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from("a/b"),
            packet_id: 5,
            payload: Bytes::from_static(b"hi"),
            properties: None,
        })
    }

    #[test]
    fn byte_at_a_time_returns_none_until_the_last_byte() {
        let mut buf = BytesMut::new();
        for (i, &b) in PUBLISH_QOS1.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let before = buf.len();
            let r = decode(&mut buf, 1024, ProtocolLevel::V311).unwrap();
            if i + 1 < PUBLISH_QOS1.len() {
                assert_eq!(r, None, "after {} bytes", i + 1);
                assert_eq!(buf.len(), before, "nothing consumed");
                let expect = if i == 0 {
                    None
                } else {
                    Some(PUBLISH_QOS1.len())
                };
                assert_eq!(frame_len(&buf, 1024, ProtocolLevel::V311), Ok(expect));
            } else {
                assert_eq!(r, Some(publish_qos1()));
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn two_packets_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::from(PUBLISH_QOS1);
        buf.extend_from_slice(&[
            0x40, 0x02, 0x00, 0x05, // PUBACK, packet id 5
        ]);
        assert_eq!(
            decode(&mut buf, 1024, ProtocolLevel::V311),
            Ok(Some(publish_qos1()))
        );
        assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x05]);
        assert_eq!(
            decode(&mut buf, 1024, ProtocolLevel::V311),
            Ok(Some(Packet::PubAck(Ack::new(5))))
        );
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, 1024, ProtocolLevel::V311), Ok(None));
    }

    #[test]
    fn huge_announced_length_is_refused_after_the_header_without_growing_the_buffer() {
        // PUBLISH, remaining length 268435455 (256 MiB - 1): 268435460 bytes in all
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
        let cap = buf.capacity();
        assert_eq!(
            decode(&mut buf, 1 << 20, ProtocolLevel::V311),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1 << 20
            })
        );
        assert_eq!(buf.capacity(), cap);
        assert_eq!(
            frame_len(
                &[0x30, 0xff, 0xff, 0xff, 0x7f],
                1 << 20,
                ProtocolLevel::V311
            ),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn within_limit_waits_for_the_body_without_reserving() {
        // PUBLISH, remaining length 1000, only the header buffered
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&[0x30, 0xe8, 0x07]);
        let cap = buf.capacity();
        assert_eq!(decode(&mut buf, 1 << 20, ProtocolLevel::V311), Ok(None));
        assert_eq!(
            frame_len(&buf, 1 << 20, ProtocolLevel::V311),
            Ok(Some(1003))
        );
        assert_eq!((buf.len(), buf.capacity()), (3, cap));
    }

    #[test]
    fn every_packet_type_round_trips_through_encode_and_decode() {
        let packets = [
            publish_qos1(),
            Packet::PubAck(Ack::new(1)),
            Packet::PubRec(Ack::new(2)),
            Packet::PubRel(Ack::new(3)),
            Packet::PubComp(Ack::new(4)),
            Packet::UnsubAck(UnsubAck::new(5)),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::NORMAL),
        ];
        let mut buf = BytesMut::new();
        for p in &packets {
            buf.extend_from_slice(&encode_bytes(p));
        }
        for p in &packets {
            assert_eq!(
                decode(&mut buf, 1024, ProtocolLevel::V311)
                    .unwrap()
                    .as_ref(),
                Some(p)
            );
        }
        assert!(buf.is_empty());
    }
}
