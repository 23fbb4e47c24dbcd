//! Helpers for the byte-literal tests of the packet modules: each decodes or encodes at one
//! protocol level (3.1.1 without a suffix, MQTT 5 with `_v5`).

use bytes::BytesMut;

use super::{decode, DecodeError, Packet, ProtocolLevel};

const MAX: usize = 1 << 20;

/// Decodes every packet in `bytes` at `level`; fails the test on an error or on bytes left over.
pub(crate) fn decode_all_at(bytes: &[u8], level: ProtocolLevel) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(&mut buf, MAX, level) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => panic!("incomplete packet, {} bytes left", buf.len()),
            Err(e) => panic!("decode error: {e}"),
        }
    }
    out
}

/// The error `bytes` decode to at `level`; fails the test if they decode or are incomplete.
pub(crate) fn decode_err_at(bytes: &[u8], level: ProtocolLevel) -> DecodeError {
    match decode(&mut BytesMut::from(bytes), MAX, level) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Encodes `p` at `level`, checking that `encoded_len` announced exactly what was written.
pub(crate) fn encode_bytes_at(p: &Packet, level: ProtocolLevel) -> Vec<u8> {
    let mut dst = BytesMut::new();
    p.encode(&mut dst, level).expect("encode");
    assert_eq!(dst.len(), p.encoded_len(level), "encoded_len of {p:?}");
    dst.to_vec()
}

pub(crate) fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    decode_all_at(bytes, ProtocolLevel::V311)
}

pub(crate) fn decode_err(bytes: &[u8]) -> DecodeError {
    decode_err_at(bytes, ProtocolLevel::V311)
}

pub(crate) fn encode_bytes(p: &Packet) -> Vec<u8> {
    encode_bytes_at(p, ProtocolLevel::V311)
}

pub(crate) fn decode_all_v5(bytes: &[u8]) -> Vec<Packet> {
    decode_all_at(bytes, ProtocolLevel::V5)
}

pub(crate) fn decode_err_v5(bytes: &[u8]) -> DecodeError {
    decode_err_at(bytes, ProtocolLevel::V5)
}

pub(crate) fn encode_bytes_v5(p: &Packet) -> Vec<u8> {
    encode_bytes_at(p, ProtocolLevel::V5)
}
