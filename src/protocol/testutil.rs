//! Helpers for the byte-literal tests of the packet modules.

use bytes::BytesMut;

use super::{decode, DecodeError, Packet};

const MAX: usize = 1 << 20;

/// Decodes every packet in `bytes`; fails the test on an error or on bytes left over.
pub(crate) fn decode_all(bytes: &[u8]) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(&mut buf, MAX) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => panic!("incomplete packet, {} bytes left", buf.len()),
            Err(e) => panic!("decode error: {e}"),
        }
    }
    out
}

/// The error `bytes` decode to; fails the test if they decode or are incomplete.
pub(crate) fn decode_err(bytes: &[u8]) -> DecodeError {
    match decode(&mut BytesMut::from(bytes), MAX) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Encodes `p`, checking that `encoded_len` announced exactly what was written.
pub(crate) fn encode_bytes(p: &Packet) -> Vec<u8> {
    let mut dst = BytesMut::new();
    p.encode(&mut dst).expect("encode");
    assert_eq!(dst.len(), p.encoded_len(), "encoded_len of {p:?}");
    dst.to_vec()
}
