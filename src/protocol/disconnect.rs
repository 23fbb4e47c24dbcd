//! DISCONNECT and AUTH: the packets that are only a reason code and properties. A 3.1.1
//! DISCONNECT has neither (Remaining Length 0, read in place by `codec.rs`); in MQTT 5 both
//! fields are optional: Remaining Length 0 means reason 0x00 and no properties, 1 means a
//! reason without properties (3.14.2.1, 3.15.2.1). MQTT 5's PUBACK, PUBREC, PUBREL and
//! PUBCOMP end with the same optional tail after their packet id, so `publish.rs` reads and
//! writes it with [`read_reason_tail`], [`reason_tail_len`] and [`put_reason_tail`].

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{check_remaining_len, packet_len, put_fixed_header, Reader};
use super::properties::{
    check_properties, decode_properties, properties_len, put_properties, PropertyContext,
};
use super::reason;
use super::{DecodeError, EncodeError, PacketType, Properties, ReasonCode};

/// Decodes the body (at least one byte) of an MQTT 5 DISCONNECT or AUTH.
pub(crate) fn decode_reason_packet(
    packet_type: PacketType,
    body: Bytes,
) -> Result<(ReasonCode, Option<Box<Properties>>), DecodeError> {
    read_reason_tail(&mut Reader::new(packet_type, body))
}

/// Reads the rest of a body as a reason code (one the packet type allows), then properties if
/// any bytes are left.
pub(crate) fn read_reason_tail(
    r: &mut Reader,
) -> Result<(ReasonCode, Option<Box<Properties>>), DecodeError> {
    let packet_type = r.packet_type();
    let code = r.u8("reason code missing")?;
    if !reason::allowed(packet_type, code) {
        return Err(DecodeError::InvalidReasonCode { packet_type, code });
    }
    let properties = if r.is_empty() {
        None
    } else {
        decode_properties(r, PropertyContext::Packet(packet_type))?
    };
    r.finish("bytes left over after the properties")?;
    Ok((ReasonCode(code), properties))
}

/// The shortest body that says everything: nothing for a success without properties (and
/// always nothing in 3.1.1), the reason alone without properties.
pub(crate) fn reason_packet_remaining_len(
    reason: ReasonCode,
    properties: &Option<Box<Properties>>,
    v5: bool,
) -> usize {
    if v5 {
        reason_tail_len(reason, properties)
    } else {
        0
    }
}

/// Bytes of the optional reason code and properties: none for a success without properties,
/// the reason alone without properties.
pub(crate) fn reason_tail_len(reason: ReasonCode, properties: &Option<Box<Properties>>) -> usize {
    match (reason == ReasonCode::SUCCESS, properties.is_some()) {
        (true, false) => 0,
        (false, false) => 1,
        (_, true) => 1 + properties_len(properties),
    }
}

/// Writes the tail [`reason_tail_len`] sized. The caller has run `check_properties`.
pub(crate) fn put_reason_tail(
    dst: &mut BytesMut,
    reason: ReasonCode,
    properties: &Option<Box<Properties>>,
) {
    if reason_tail_len(reason, properties) > 0 {
        dst.put_u8(reason.0);
        if properties.is_some() {
            put_properties(dst, properties);
        }
    }
}

pub(crate) fn encode_reason_packet(
    dst: &mut BytesMut,
    packet_type: PacketType,
    reason: ReasonCode,
    properties: &Option<Box<Properties>>,
    v5: bool,
) -> Result<(), EncodeError> {
    if v5 {
        check_properties(properties)?;
    }
    let remaining_len = reason_packet_remaining_len(reason, properties, v5);
    check_remaining_len(remaining_len)?;
    dst.reserve(packet_len(remaining_len));
    put_fixed_header(dst, (packet_type as u8) << 4, remaining_len);
    if v5 {
        put_reason_tail(dst, reason, properties);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all_v5, decode_err_v5, encode_bytes_v5};
    use super::super::{Auth, Disconnect, Packet};
    use super::*;

    #[test]
    fn disconnect_v5_both_directions() {
        #[rustfmt::skip]
        let cases: Vec<(&[u8], Packet)> = vec![
            // DISCONNECT, remaining length 0: normal disconnection
            (&[0xe0, 0x00], Packet::Disconnect(Disconnect::NORMAL)),
            // DISCONNECT 0x8e session taken over, no properties
            (&[0xe0, 0x01, 0x8e], Packet::Disconnect(Disconnect::with_reason(ReasonCode::SESSION_TAKEN_OVER))),
            // DISCONNECT 0x04 with will, session expiry 120 s
            (&[0xe0, 0x07, 0x04, 0x05, 0x11, 0x00, 0x00, 0x00, 0x78], Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: Some(Box::new(Properties {
                    session_expiry_interval: Some(120),
                    ..Properties::default()
                })),
            })),
        ];
        for (bytes, p) in cases {
            assert_eq!(decode_all_v5(bytes), vec![p.clone()]);
            assert_eq!(encode_bytes_v5(&p), bytes);
        }
        // DISCONNECT 0x00 then an empty property block: decodes, encodes in the short form
        assert_eq!(
            decode_all_v5(&[0xe0, 0x02, 0x00, 0x00]),
            vec![Packet::Disconnect(Disconnect::NORMAL)]
        );
    }

    #[test]
    fn auth_both_directions() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0xf0, 0x0a,                   // AUTH, remaining length 10
            0x18,                         // continue authentication
            0x08,                         // property length 8
            0x15, 0x00, 0x01, b'x',       // authentication method "x"
            0x16, 0x00, 0x01, 0x07,       // authentication data
        ];
        let p = Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Some(Box::new(Properties {
                authentication_method: Some("x".into()),
                authentication_data: Some(Bytes::from_static(&[7])),
                ..Properties::default()
            })),
        });
        assert_eq!(decode_all_v5(bytes), vec![p.clone()]);
        assert_eq!(encode_bytes_v5(&p), bytes);
    }

    #[test]
    fn reason_packet_errors() {
        // DISCONNECT with reason 0x10, which only acks may carry
        assert_eq!(
            decode_err_v5(&[0xe0, 0x01, 0x10]),
            DecodeError::InvalidReasonCode {
                packet_type: PacketType::Disconnect,
                code: 0x10
            }
        );
        // AUTH with a Session Expiry Interval
        assert_eq!(
            decode_err_v5(&[0xf0, 0x07, 0x18, 0x05, 0x11, 0, 0, 0, 1]),
            DecodeError::PropertyNotAllowed {
                id: 0x11,
                context: PropertyContext::Packet(PacketType::Auth)
            }
        );
        // AUTH flags must be 0
        assert_eq!(
            decode_err_v5(&[0xf1, 0x00]),
            DecodeError::InvalidFlags {
                packet_type: PacketType::Auth,
                flags: 1
            }
        );
        // A 3.1.1 DISCONNECT cannot carry a reason
        assert!(matches!(
            super::super::testutil::decode_err(&[0xe0, 0x01, 0x8e]),
            DecodeError::MalformedPacket { .. }
        ));
    }
}
