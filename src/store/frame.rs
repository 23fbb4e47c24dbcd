//! How one record sits in a shard's log: a frame with its length and a checksum, so that a
//! record torn by a crash in the middle of a write is recognised and never loaded as data.
//!
//! ```text
//! +------------+-------------+------+----------------+
//! | len: u32le | crc32c: u32le | kind | body (len - 1) |
//! +------------+-------------+------+----------------+
//! ```
//!
//! `len` counts the kind byte and the body; the checksum (CRC-32C, Castagnoli) covers the
//! length bytes too, so a length that a torn write left half old, half new fails the check
//! instead of sending the reader astray. A zero length cannot be written (every record has a
//! kind), so zero-filled space after the last record, which a preallocated file or a crash
//! during an extending write leaves, reads as "nothing more" rather than as a record.
//! Pure: bytes in, bytes out, no I/O.

use bytes::{BufMut, BytesMut};

/// Bytes before the kind: length and checksum.
pub const HEADER: usize = 8;
/// Largest kind + body a frame may carry: far above any record (a PUBLISH is at most
/// 256 MiB), low enough that a corrupt length cannot make the reader allocate gigabytes.
pub const MAX_FRAME_BODY: usize = 300 << 20;

/// The frame's checksum: CRC-32C over the length's 4 bytes (little-endian), the kind and the
/// body.
fn checksum(len: u32, kind: u8, body: &[u8]) -> u32 {
    crc32c::crc32c_append(head_checksum(len, kind), body)
}

/// CRC-32C of the length's bytes and the kind. Each call into the crate has a fixed cost
/// larger than the checksum of a short record's body; with SSE 4.2 these 5 bytes take two
/// instructions instead of two calls (`cargo bench --bench store -- store_frame_encode`:
/// framing a 20-byte body 86 -> 24 ns, a 120-byte one 68 -> 31 ns; the same checksums).
#[inline]
fn head_checksum(len: u32, kind: u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u8};
        // SAFETY: the CPU has SSE 4.2, just checked. The instructions compute CRC-32C (the
        // Castagnoli polynomial) over the 4 bytes of `len` in little-endian order, then `kind`,
        // as the crate does, with its initial and final inversion.
        return unsafe { !_mm_crc32_u8(_mm_crc32_u32(!0, len), kind) };
    }
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &[kind])
}

/// Appends one frame holding `kind` and `body` to `out`.
pub fn encode_frame(out: &mut BytesMut, kind: u8, body: &[u8]) {
    let len = (body.len() + 1) as u32;
    debug_assert!(body.len() < MAX_FRAME_BODY);
    let len_bytes = len.to_le_bytes();
    let crc = checksum(len, kind, body);
    out.reserve(HEADER + 1 + body.len());
    out.put_slice(&len_bytes);
    out.put_u32_le(crc);
    out.put_u8(kind);
    out.put_slice(body);
}

/// What the bytes at some offset of a log hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, intact record; `size` is the frame's length in the log.
    Record {
        kind: u8,
        body: &'a [u8],
        size: usize,
    },
    /// No record starts here: the end of the data, or zeros after it.
    End,
    /// A frame that is cut short or fails its checksum (why, for the error message).
    Bad(&'static str),
}

/// Reads the frame at the start of `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Frame<'_> {
    if bytes.len() < HEADER {
        return if bytes.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Bad("a frame header cut short")
        };
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 {
            Frame::End
        } else {
            Frame::Bad("a zero length with a checksum")
        };
    }
    if len > MAX_FRAME_BODY {
        return Frame::Bad("a length beyond any record");
    }
    let Some(rest) = bytes.get(HEADER..HEADER + len) else {
        return Frame::Bad("a frame cut short");
    };
    let expected = checksum(len as u32, rest[0], &rest[1..]);
    if expected != crc {
        return Frame::Bad("a checksum mismatch");
    }
    Frame::Record {
        kind: rest[0],
        body: &rest[1..],
        size: HEADER + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(&mut out, kind, body);
        out.to_vec()
    }

    #[test]
    fn a_frame_is_length_checksum_kind_body() {
        let f = frame(7, b"hi");
        // Length 3 (kind + 2 body bytes), little-endian.
        assert_eq!(&f[0..4], &[3, 0, 0, 0]);
        // CRC-32C over the length bytes, the kind and the body.
        let crc = crc32c::crc32c(&[3, 0, 0, 0, 7, b'h', b'i']);
        assert_eq!(&f[4..8], &crc.to_le_bytes());
        assert_eq!(&f[8..], &[7, b'h', b'i']);
        assert_eq!(
            decode_frame(&f),
            Frame::Record {
                kind: 7,
                body: b"hi",
                size: 11
            }
        );
    }

    #[test]
    fn the_checksum_is_the_crates_crc32c_of_length_kind_and_body() {
        for size in [0usize, 1, 7, 8, 9, 63, 64, 120, 1000, 5000] {
            let body: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let len = (size + 1) as u32;
            let mut all = len.to_le_bytes().to_vec();
            all.push(0xa5);
            all.extend_from_slice(&body);
            assert_eq!(
                checksum(len, 0xa5, &body),
                crc32c::crc32c(&all),
                "{size} bytes"
            );
        }
    }

    #[test]
    fn the_known_crc32c_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720): the right polynomial.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn every_cut_of_a_frame_is_bad_never_a_record() {
        let f = frame(1, b"some body bytes");
        for cut in 1..f.len() {
            assert!(
                matches!(decode_frame(&f[..cut]), Frame::Bad(_)),
                "cut at {cut}: {:?}",
                decode_frame(&f[..cut])
            );
        }
        assert_eq!(decode_frame(&[]), Frame::End);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let f = frame(2, b"payload");
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&g), Frame::Record { .. }),
                    "bit {bit} of byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_are_the_end_not_a_record() {
        assert_eq!(decode_frame(&[0; 8]), Frame::End);
        assert_eq!(decode_frame(&[0; 100]), Frame::End);
        assert_eq!(decode_frame(&[0; 3]), Frame::End);
        assert!(matches!(
            decode_frame(&[0, 0, 0, 0, 1, 0, 0, 0]),
            Frame::Bad(_)
        ));
    }

    #[test]
    fn a_huge_length_is_refused_before_anything_is_read() {
        let mut f = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        f.extend_from_slice(&[0; 16]);
        assert_eq!(decode_frame(&f), Frame::Bad("a length beyond any record"));
    }
}
