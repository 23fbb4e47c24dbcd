//! The codec's entry points: [`decode`] and [`frame_len`] dispatch on the fixed header to the
//! packet-family modules, and [`Packet::encode`] / [`Packet::encoded_len`] do the same the
//! other way. Buffer ownership is decided here: a packet with a body is split off the read
//! buffer and frozen once, and every field is a slice of that one frame.

use bytes::{Buf, BytesMut};

use super::connect::{
    connect_remaining_len, decode_connack, decode_connect, encode_connack, encode_connect,
};
use super::header::{packet_len, parse_fixed_header};
use super::ping::encode_empty;
use super::publish::{decode_publish, encode_ack};
use super::subscribe::{
    decode_suback, decode_subscribe, decode_unsubscribe, encode_suback, encode_subscribe,
    encode_unsubscribe, suback_remaining_len, subscribe_remaining_len, unsubscribe_remaining_len,
};
use super::{DecodeError, EncodeError, Packet, PacketType};

/// Decodes the packet at the front of `buf`.
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
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(h) = parse_fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    let total = h.total_len();
    if buf.len() < total {
        return Ok(None);
    }
    let hl = h.header_len;
    // The fixed-size packets were checked to have exactly their size, so their bytes are read
    // in place and nothing is split or reference-counted for them.
    let packet = match h.packet_type {
        PacketType::PubAck
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::UnsubAck => {
            let id = u16::from_be_bytes([buf[hl], buf[hl + 1]]);
            buf.advance(total);
            if id == 0 {
                return Err(DecodeError::ZeroPacketId);
            }
            match h.packet_type {
                PacketType::PubAck => Packet::PubAck(id),
                PacketType::PubRec => Packet::PubRec(id),
                PacketType::PubRel => Packet::PubRel(id),
                PacketType::PubComp => Packet::PubComp(id),
                _ => Packet::UnsubAck(id),
            }
        }
        PacketType::ConnAck => {
            let ack = decode_connack(buf[hl], buf[hl + 1]);
            buf.advance(total);
            Packet::ConnAck(ack?)
        }
        PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect => {
            buf.advance(total);
            match h.packet_type {
                PacketType::PingReq => Packet::PingReq,
                PacketType::PingResp => Packet::PingResp,
                _ => Packet::Disconnect,
            }
        }
        PacketType::Publish
        | PacketType::Connect
        | PacketType::Subscribe
        | PacketType::SubAck
        | PacketType::Unsubscribe => {
            buf.advance(hl);
            let body = buf.split_to(h.remaining_len).freeze();
            match h.packet_type {
                PacketType::Publish => Packet::Publish(decode_publish(h.flags, body)?),
                PacketType::Connect => Packet::Connect(Box::new(decode_connect(body)?)),
                PacketType::Subscribe => Packet::Subscribe(decode_subscribe(body)?),
                PacketType::SubAck => Packet::SubAck(decode_suback(body)?),
                _ => Packet::Unsubscribe(decode_unsubscribe(body)?),
            }
        }
    };
    Ok(Some(packet))
}

/// Parses only the fixed header at the front of `buf`: `Ok(Some(total_len))` (fixed header
/// plus Remaining Length) once the whole fixed header is there, so a reader can size its
/// buffer; `Ok(None)` before that. Returns the same header-level errors as [`decode`], as early.
pub fn frame_len(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, DecodeError> {
    Ok(parse_fixed_header(buf, max_packet_size)?.map(|h| h.total_len()))
}

impl Packet {
    /// Bytes [`Packet::encode`] will append, computed without writing. For a packet that
    /// `encode` refuses the value is meaningless but computing it does not panic.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Publish(p) => p.encoded_len(),
            Packet::Connect(c) => packet_len(connect_remaining_len(c)),
            Packet::ConnAck(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::UnsubAck(_) => 4,
            Packet::Subscribe(s) => packet_len(subscribe_remaining_len(s)),
            Packet::SubAck(s) => packet_len(suback_remaining_len(s)),
            Packet::Unsubscribe(u) => packet_len(unsubscribe_remaining_len(u)),
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => 2,
        }
    }

    /// Appends the packet to `dst`, reserving its exact size once. On error nothing is written.
    ///
    /// Refused: a string or binary field over 65535 bytes, a body over
    /// [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH), packet identifier 0 where one is
    /// sent, an empty SUBSCRIBE/UNSUBSCRIBE/SUBACK list, and a 3.1.1 CONNECT with a password
    /// but no user name: all things the peer would have to reject. String contents (topic
    /// syntax, U+0000) are not checked: `ByteStr` is UTF-8, the rest is the caller's business.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Publish(p) => p.encode(dst),
            Packet::Connect(c) => encode_connect(c, dst),
            Packet::ConnAck(a) => {
                encode_connack(a, dst);
                Ok(())
            }
            Packet::PubAck(id)
            | Packet::PubRec(id)
            | Packet::PubRel(id)
            | Packet::PubComp(id)
            | Packet::UnsubAck(id) => {
                if *id == 0 {
                    return Err(EncodeError::ZeroPacketId);
                }
                encode_ack(dst, self.packet_type(), *id);
                Ok(())
            }
            Packet::Subscribe(s) => encode_subscribe(s, dst),
            Packet::SubAck(s) => encode_suback(s, dst),
            Packet::Unsubscribe(u) => encode_unsubscribe(u, dst),
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => {
                encode_empty(dst, self.packet_type());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::encode_bytes;
    use super::super::{ByteStr, Publish, QoS};
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
        })
    }

    #[test]
    fn byte_at_a_time_returns_none_until_the_last_byte() {
        let mut buf = BytesMut::new();
        for (i, &b) in PUBLISH_QOS1.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let before = buf.len();
            let r = decode(&mut buf, 1024).unwrap();
            if i + 1 < PUBLISH_QOS1.len() {
                assert_eq!(r, None, "after {} bytes", i + 1);
                assert_eq!(buf.len(), before, "nothing consumed");
                let expect = if i == 0 {
                    None
                } else {
                    Some(PUBLISH_QOS1.len())
                };
                assert_eq!(frame_len(&buf, 1024), Ok(expect));
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
        assert_eq!(decode(&mut buf, 1024), Ok(Some(publish_qos1())));
        assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x05]);
        assert_eq!(decode(&mut buf, 1024), Ok(Some(Packet::PubAck(5))));
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, 1024), Ok(None));
    }

    #[test]
    fn huge_announced_length_is_refused_after_the_header_without_growing_the_buffer() {
        // PUBLISH, remaining length 268435455 (256 MiB - 1): 268435460 bytes in all
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
        let cap = buf.capacity();
        assert_eq!(
            decode(&mut buf, 1 << 20),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1 << 20
            })
        );
        assert_eq!(buf.capacity(), cap);
        assert_eq!(
            frame_len(&[0x30, 0xff, 0xff, 0xff, 0x7f], 1 << 20),
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
        assert_eq!(decode(&mut buf, 1 << 20), Ok(None));
        assert_eq!(frame_len(&buf, 1 << 20), Ok(Some(1003)));
        assert_eq!((buf.len(), buf.capacity()), (3, cap));
    }

    #[test]
    fn every_packet_type_round_trips_through_encode_and_decode() {
        let packets = [
            publish_qos1(),
            Packet::PubAck(1),
            Packet::PubRec(2),
            Packet::PubRel(3),
            Packet::PubComp(4),
            Packet::UnsubAck(5),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect,
        ];
        let mut buf = BytesMut::new();
        for p in &packets {
            buf.extend_from_slice(&encode_bytes(p));
        }
        for p in &packets {
            assert_eq!(decode(&mut buf, 1024).unwrap().as_ref(), Some(p));
        }
        assert!(buf.is_empty());
    }
}
