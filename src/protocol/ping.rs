//! The packets without a body: PINGREQ, PINGRESP and DISCONNECT. Their decoding is entirely
//! the fixed header's (type, zero flags, Remaining Length 0, all checked in `header.rs`); this
//! module only writes them and holds their byte-level tests.

use bytes::{BufMut, BytesMut};

use super::PacketType;

/// Appends a PINGREQ, PINGRESP or DISCONNECT (type byte, Remaining Length 0).
pub(crate) fn encode_empty(dst: &mut BytesMut, packet_type: PacketType) {
    dst.reserve(2);
    dst.put_slice(&[(packet_type as u8) << 4, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all, decode_err, encode_bytes};
    use super::super::{DecodeError, Disconnect, Packet, ProtocolLevel};
    use super::*;

    #[test]
    fn empty_packets_both_directions() {
        #[rustfmt::skip]
        let cases: [(&[u8], Packet); 3] = [
            (&[0xc0, 0x00], Packet::PingReq),    // PINGREQ, remaining length 0
            (&[0xd0, 0x00], Packet::PingResp),   // PINGRESP, remaining length 0
            (&[0xe0, 0x00], Packet::Disconnect(Disconnect::NORMAL)), // DISCONNECT, remaining length 0
        ];
        for (bytes, p) in cases {
            assert_eq!(decode_all(bytes), vec![p.clone()]);
            assert_eq!(encode_bytes(&p), bytes);
            assert_eq!(p.encoded_len(ProtocolLevel::V311), 2);
        }
    }

    #[test]
    fn empty_packet_errors() {
        // PINGREQ with a body byte: refused from the header alone
        assert!(matches!(
            decode_err(&[0xc0, 0x01]),
            DecodeError::MalformedPacket {
                packet_type: PacketType::PingReq,
                ..
            }
        ));
        // DISCONNECT with flags 0b0001
        assert_eq!(
            decode_err(&[0xe1, 0x00]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::Disconnect,
                flags: 1
            }
        );
        // PINGRESP with flags 0b1000
        assert_eq!(
            decode_err(&[0xd8, 0x00]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::PingResp,
                flags: 8
            }
        );
    }
}
