//! The fixed header (packet type and flags byte, variable-length Remaining Length) and the
//! primitive field codecs shared by every packet family: big-endian `u16`, length-prefixed
//! binary data and MQTT strings (whose contents `strings` checks). Everything here checks bounds itself and turns a field that
//! runs past the body into `MalformedPacket`, so hostile input cannot make a packet module panic.

use bytes::{BufMut, Bytes, BytesMut};

use super::strings::{check_string, check_topic_name};
use super::{ByteStr, DecodeError, EncodeError, PacketType, ProtocolLevel};

/// The largest value a length-prefixed field can have (1.5.2, 1.5.3).
pub(crate) const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// What the fixed header of a packet says, once all of it has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub packet_type: PacketType,
    /// The low nibble of the first byte, already checked against the packet type.
    pub flags: u8,
    /// 2 to 5: the type byte plus 1 to 4 Remaining Length bytes.
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FixedHeader {
    pub fn total_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Checks the first byte of a packet: type known, reserved flag bits as the spec fixes them.
/// Only PUBLISH has free flags, and even there QoS 3 and DUP at QoS 0 are malformed.
/// AUTH (15) is reserved before MQTT 5.
#[inline]
pub(crate) fn check_first_byte(
    byte: u8,
    level: ProtocolLevel,
) -> Result<(PacketType, u8), DecodeError> {
    let flags = byte & 0x0f;
    let packet_type = match byte >> 4 {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => {
            if flags & 0b0110 == 0b0110 {
                return Err(DecodeError::InvalidQoS);
            }
            // DUP says "this may be a resend of an unacknowledged PUBLISH", which a QoS 0
            // PUBLISH can never be.
            if flags & 0b1110 == 0b1000 {
                return Err(DecodeError::DupAtQoS0);
            }
            return Ok((PacketType::Publish, flags));
        }
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 if level.is_v5() => PacketType::Auth,
        t => return Err(DecodeError::ReservedPacketType(t)),
    };
    let expected = match packet_type {
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    Ok((packet_type, flags))
}

/// The Remaining Length a packet type must have when its size is fixed by the spec, so a
/// PINGREQ announcing a megabyte is refused before a single body byte is buffered. MQTT 5
/// gives the acknowledgements, CONNACK and DISCONNECT optional reason codes and properties,
/// so only the pings keep a fixed size there.
fn fixed_remaining_len(packet_type: PacketType, level: ProtocolLevel) -> Option<usize> {
    if level.is_v5() {
        return match packet_type {
            PacketType::PingReq | PacketType::PingResp => Some(0),
            _ => None,
        };
    }
    match packet_type {
        PacketType::ConnAck
        | PacketType::PubAck
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::UnsubAck => Some(2),
        PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect => Some(0),
        _ => None,
    }
}

/// Parses the fixed header at the front of `buf`. `Ok(None)` means more bytes are needed to
/// know the header; every check that the header alone allows is made as soon as the bytes it
/// needs are there, so an invalid or oversized packet is refused without waiting for its body.
#[inline]
pub(crate) fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
    level: ProtocolLevel,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (packet_type, flags) = check_first_byte(first, level)?;

    let mut remaining_len = 0usize;
    let mut header_len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            header_len = 2 + i;
            break;
        }
    }
    if header_len == 0 {
        // The fourth length byte still had its continuation bit set (2.2.3).
        return Err(DecodeError::MalformedRemainingLength);
    }

    let size = header_len + remaining_len;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if let Some(fixed) = fixed_remaining_len(packet_type, level) {
        if remaining_len != fixed {
            return Err(DecodeError::MalformedPacket {
                packet_type,
                detail: "remaining length does not match the fixed size of this packet type",
            });
        }
    }
    Ok(Some(FixedHeader {
        packet_type,
        flags,
        header_len,
        remaining_len,
    }))
}

/// Bytes the Remaining Length field takes for `len`. Values past
/// [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH) count as 4: the encoder refuses them
/// anyway, and sizing must not panic.
#[inline]
pub(crate) const fn remaining_len_bytes(len: usize) -> usize {
    if len < 128 {
        1
    } else if len < 16_384 {
        2
    } else if len < 2_097_152 {
        3
    } else {
        4
    }
}

/// Total bytes on the wire for a packet whose body is `remaining_len` bytes.
#[inline]
pub(crate) const fn packet_len(remaining_len: usize) -> usize {
    1 + remaining_len_bytes(remaining_len) + remaining_len
}

/// Refuses a body the 4-byte Remaining Length cannot express.
#[inline]
pub(crate) fn check_remaining_len(remaining_len: usize) -> Result<(), EncodeError> {
    if remaining_len > super::MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining_len));
    }
    Ok(())
}

/// Refuses a string or binary field longer than its 2-byte length prefix can say.
#[inline]
pub(crate) fn check_field_len(len: usize) -> Result<(), EncodeError> {
    if len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong(len));
    }
    Ok(())
}

/// Encodes the type/flags byte and the Remaining Length into `out`, returning how many bytes
/// were used (2 to 5). The caller has checked `remaining_len <= MAX_REMAINING_LENGTH`.
#[inline]
pub(crate) fn fixed_header_bytes(out: &mut [u8; 8], first_byte: u8, remaining_len: usize) -> usize {
    out[0] = first_byte;
    let mut len = remaining_len;
    let mut i = 1;
    // Never more than 4 length bytes for a checked length; the bound keeps indexing in range.
    while i < 5 {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out[i] = b;
            return i + 1;
        }
        out[i] = b | 0x80;
        i += 1;
    }
    i
}

/// Writes the type/flags byte and the Remaining Length. The caller has checked
/// `remaining_len <= MAX_REMAINING_LENGTH`.
#[inline]
pub(crate) fn put_fixed_header(dst: &mut BytesMut, first_byte: u8, remaining_len: usize) {
    let mut head = [0u8; 8];
    let n = fixed_header_bytes(&mut head, first_byte, remaining_len);
    dst.extend_from_slice(&head[..n]);
}

/// The largest value a Variable Byte Integer can hold (MQTT 5.0 1.5.5).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Bytes a Variable Byte Integer takes for `v`.
#[inline]
pub(crate) const fn varint_len(v: usize) -> usize {
    remaining_len_bytes(v)
}

/// Writes a Variable Byte Integer. The caller has checked `v <= MAX_VARINT`.
#[inline]
pub(crate) fn put_varint(dst: &mut BytesMut, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            dst.put_u8(b);
            return;
        }
        dst.put_u8(b | 0x80);
    }
}

/// Writes a 2-byte length prefix and the bytes. The caller has checked the length.
#[inline]
pub(crate) fn put_field(dst: &mut BytesMut, data: &[u8]) {
    dst.put_u16(data.len() as u16);
    dst.put_slice(data);
}

#[cold]
#[inline(never)]
pub(crate) fn malformed(packet_type: PacketType, detail: &'static str) -> DecodeError {
    DecodeError::MalformedPacket {
        packet_type,
        detail,
    }
}

/// A bounds-checked cursor over the body (variable header and payload) of one packet. Fields
/// are handed out as `Bytes` slices of the body, so decoding never copies them.
pub(crate) struct Reader {
    body: Bytes,
    pos: usize,
    packet_type: PacketType,
}

impl Reader {
    pub fn new(packet_type: PacketType, body: Bytes) -> Reader {
        Reader {
            body,
            pos: 0,
            packet_type,
        }
    }

    pub fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.body.len()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.body.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(malformed(self.packet_type, what)),
        }
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        match self.body.get(self.pos..self.pos + 2) {
            Some(b) => {
                self.pos += 2;
                Ok(u16::from_be_bytes([b[0], b[1]]))
            }
            None => Err(malformed(self.packet_type, what)),
        }
    }

    /// A packet identifier, which is never 0 (MQTT-2.3.1-1).
    pub fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier runs past the remaining length")? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// The raw bytes of a length-prefixed field, without copying. `what` names the field in
    /// the error when the field runs past the body.
    pub fn field_slice(&mut self, what: &'static str) -> Result<(usize, usize), DecodeError> {
        let len = usize::from(self.u16(what)?);
        let start = self.pos;
        if len > self.remaining() {
            return Err(malformed(self.packet_type, what));
        }
        self.pos += len;
        Ok((start, start + len))
    }

    /// The whole body, including what has been read already.
    pub fn whole(&self) -> &[u8] {
        &self.body
    }

    /// The whole body as `Bytes`, to slice fields out of without copying.
    pub fn whole_bytes(&self) -> &Bytes {
        &self.body
    }

    /// The bytes of a range returned by [`Reader::field_slice`].
    pub fn slice(&self, (start, end): (usize, usize)) -> &[u8] {
        &self.body[start..end]
    }

    /// Length-prefixed binary data (passwords, will payloads).
    pub fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let (start, end) = self.field_slice(what)?;
        Ok(self.body.slice(start..end))
    }

    /// A length-prefixed MQTT string, validated in one UTF-8 pass plus one byte scan.
    pub fn string(&mut self, what: &'static str) -> Result<ByteStr, DecodeError> {
        let (start, end) = self.field_slice(what)?;
        check_string(&self.body[start..end])?;
        // SAFETY: check_string verified UTF-8.
        Ok(unsafe { ByteStr::from_utf8_unchecked(self.body.slice(start..end)) })
    }

    /// A length-prefixed topic name (PUBLISH, will topic).
    pub fn topic_name(&mut self, what: &'static str) -> Result<ByteStr, DecodeError> {
        let (start, end) = self.field_slice(what)?;
        check_topic_name(&self.body[start..end])?;
        // SAFETY: check_topic_name verified UTF-8.
        Ok(unsafe { ByteStr::from_utf8_unchecked(self.body.slice(start..end)) })
    }

    /// A Variable Byte Integer (MQTT 5.0 1.5.5): 1 to 4 bytes, 7 bits each.
    pub fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVarInt(self.packet_type))
    }

    /// The next `len` bytes as a reader of their own (a property block), for a decoder that
    /// must not read past them.
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader, DecodeError> {
        if len > self.remaining() {
            return Err(malformed(self.packet_type, what));
        }
        let start = self.pos;
        self.pos += len;
        Ok(Reader::new(
            self.packet_type,
            self.body.slice(start..start + len),
        ))
    }

    /// The rest of the body, consumed (a PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        let rest = self.body.slice(self.pos..);
        self.pos = self.body.len();
        rest
    }

    pub fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    /// Fails if bytes are left over after the last field of a packet that has no room for them.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.packet_type, what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::decode_err;
    use super::super::{decode, frame_len};
    use super::*;

    #[test]
    fn reserved_packet_types_fail_on_the_first_byte() {
        // type 0 and type 15, nothing else buffered
        assert_eq!(decode_err(&[0x00]), DecodeError::ReservedPacketType(0));
        assert_eq!(decode_err(&[0xf0]), DecodeError::ReservedPacketType(15));
        assert_eq!(
            frame_len(&[0xf0], 100, ProtocolLevel::V311),
            Err(DecodeError::ReservedPacketType(15))
        );
    }

    #[test]
    fn flags_fail_on_the_first_byte() {
        // CONNECT with flags 0b0001
        assert_eq!(
            decode_err(&[0x11]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::Connect,
                flags: 1
            }
        );
        // SUBSCRIBE with flags 0b0000
        assert_eq!(
            frame_len(&[0x80], 100, ProtocolLevel::V311),
            Err(DecodeError::InvalidFlags {
                packet_type: PacketType::Subscribe,
                flags: 0
            })
        );
        // PUBLISH with QoS bits 0b11
        assert_eq!(decode_err(&[0x36]), DecodeError::InvalidQoS);
        // PUBLISH with DUP at QoS 0, with and without RETAIN (MQTT-3.3.1-2)
        assert_eq!(decode_err(&[0x38]), DecodeError::DupAtQoS0);
        assert_eq!(decode_err(&[0x39]), DecodeError::DupAtQoS0);
        assert_eq!(
            frame_len(&[0x38], 100, ProtocolLevel::V311),
            Err(DecodeError::DupAtQoS0)
        );
        // PUBLISH with every other flag combination is accepted at the header level
        for flags in [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0xa, 0xb, 0xc, 0xd] {
            assert_eq!(
                frame_len(&[0x30 | flags, 0x05], 100, ProtocolLevel::V311),
                Ok(Some(7))
            );
        }
    }

    #[test]
    fn remaining_length_encodings() {
        #[rustfmt::skip]
        let cases: [(&[u8], usize); 8] = [
            (&[0x30, 0x00], 0),                               // 1 byte, minimum
            (&[0x30, 0x7f], 127),                             // 1 byte, maximum
            (&[0x30, 0x80, 0x01], 128),                       // 2 bytes, minimum
            (&[0x30, 0xff, 0x7f], 16_383),                    // 2 bytes, maximum
            (&[0x30, 0x80, 0x80, 0x01], 16_384),              // 3 bytes, minimum
            (&[0x30, 0xff, 0xff, 0x7f], 2_097_151),           // 3 bytes, maximum
            (&[0x30, 0x80, 0x80, 0x80, 0x01], 2_097_152),     // 4 bytes, minimum
            (&[0x30, 0xff, 0xff, 0xff, 0x7f], 268_435_455),   // 4 bytes, maximum
        ];
        for (bytes, len) in cases {
            let h = parse_fixed_header(bytes, usize::MAX, ProtocolLevel::V311)
                .unwrap()
                .unwrap();
            assert_eq!((h.header_len, h.remaining_len), (bytes.len(), len));
            assert_eq!(remaining_len_bytes(len), bytes.len() - 1);
            let mut out = BytesMut::new();
            put_fixed_header(&mut out, 0x30, len);
            assert_eq!(&out[..], bytes);
            // every proper prefix needs more bytes
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_fixed_header(&bytes[..cut], usize::MAX, ProtocolLevel::V311),
                    Ok(None)
                );
            }
        }
    }

    #[test]
    fn fifth_remaining_length_byte_is_refused_without_waiting_for_it() {
        // PUBLISH, four length bytes all with the continuation bit
        let bytes = [0x30, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_err(&bytes), DecodeError::MalformedRemainingLength);
        assert_eq!(
            frame_len(&bytes, usize::MAX, ProtocolLevel::V311),
            Err(DecodeError::MalformedRemainingLength)
        );
        // three continuation bytes: still waiting
        assert_eq!(
            frame_len(&bytes[..4], usize::MAX, ProtocolLevel::V311),
            Ok(None)
        );
    }

    #[test]
    fn packet_too_large_counts_the_fixed_header() {
        // PUBLISH, remaining length 9: 11 bytes in all
        assert_eq!(
            frame_len(&[0x30, 0x09], 11, ProtocolLevel::V311),
            Ok(Some(11))
        );
        assert_eq!(
            frame_len(&[0x30, 0x09], 10, ProtocolLevel::V311),
            Err(DecodeError::PacketTooLarge { size: 11, max: 10 })
        );
        let mut buf = BytesMut::from(&[0x30u8, 0x09][..]);
        assert_eq!(
            decode(&mut buf, 10, ProtocolLevel::V311),
            Err(DecodeError::PacketTooLarge { size: 11, max: 10 })
        );
    }
}
