//! The header every benchmark payload starts with: who sent it, its place in the sender's
//! stream, and when it was sent. Subscribers read it back to find missing and duplicated
//! messages and to measure latency; the rest of the payload is filler up to `--size`.
//!
//! The layout is fixed and big-endian so that a capture is readable by eye:
//! `magic (4) | publisher (4) | sequence (8) | sent_ns (8)`. The magic lets a subscriber tell
//! our messages from anything else that happens to arrive on the topic (a stale retained
//! message, another tool), which are counted as foreign instead of corrupting the counts.

/// Bytes the header takes; the smallest `--size` possible.
pub const HEADER_LEN: usize = 24;

/// "SMQB": SurgeMQ bench.
const MAGIC: u32 = 0x534D_5142;

/// What a publisher stamps on each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Index of the publisher within the run (0-based).
    pub publisher: u32,
    /// 0 for the publisher's first message, then +1 per message.
    pub seq: u64,
    /// Send time in nanoseconds since the run's clock base (shared by all threads).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
    ///
    /// # Panics
    /// If `payload` is shorter than [`HEADER_LEN`]; the configuration never allows that.
    #[inline]
    pub fn write(&self, payload: &mut [u8]) {
        let h = &mut payload[..HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        h[8..16].copy_from_slice(&self.seq.to_be_bytes());
        h[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads the header of a received payload; `None` if it is too short or not ours.
    #[inline]
    pub fn read(payload: &[u8]) -> Option<Header> {
        let h = payload.get(..HEADER_LEN)?;
        let word = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[r]);
            b
        };
        if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != MAGIC {
            return None;
        }
        Some(Header {
            publisher: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            seq: u64::from_be_bytes(word(8..16)),
            sent_ns: u64::from_be_bytes(word(16..24)),
        })
    }
}

/// A payload of `size` bytes whose filler is a recognisable pattern (not zeros, so that any
/// compression along the way cannot flatter the numbers).
pub fn template(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut p = template(64);
        let h = Header {
            publisher: 7,
            seq: u64::MAX - 3,
            sent_ns: 123_456_789_012,
        };
        h.write(&mut p);
        assert_eq!(Header::read(&p), Some(h));
        // The filler after the header is untouched.
        assert_eq!(&p[HEADER_LEN..], &template(64)[HEADER_LEN..]);
    }

    #[test]
    fn exact_bytes() {
        let mut p = [0u8; HEADER_LEN];
        Header {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .write(&mut p);
        #[rustfmt::skip]
        let want = [
            b'S', b'M', b'Q', b'B',
            0, 0, 0, 1,
            0, 0, 0, 0, 0, 0, 0, 2,
            0, 0, 0, 0, 0, 0, 0, 3,
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn foreign_or_short_payloads_are_rejected() {
        assert_eq!(Header::read(b"hello"), None);
        assert_eq!(Header::read(&[0u8; 64]), None);
        let mut p = [0u8; HEADER_LEN];
        Header {
            publisher: 0,
            seq: 0,
            sent_ns: 0,
        }
        .write(&mut p);
        assert!(Header::read(&p).is_some());
        assert_eq!(Header::read(&p[..HEADER_LEN - 1]), None);
    }
}
