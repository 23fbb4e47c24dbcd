//! Reading a log back after a stop or a crash: every intact record in order, a torn tail
//! recognised and cut off, damage anywhere else refused with its offset.
//!
//! Logs are only ever appended to, so a crash can only tear the end: the records of the last
//! group commit that had not reached the disk whole. A bad frame with nothing intact after it
//! is such a tail. A bad frame with an intact record somewhere after it cannot come from a
//! crash (the later record was written after it, so the earlier one had been written whole):
//! that is damage, and loading past it would silently lose what the bad frame held, so the
//! start stops there with the offset. Pure: bytes in, decisions out.

use super::frame::{decode_frame, Frame};

/// How a log ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of intact records from the start: where the next record is to be appended.
    pub valid_len: usize,
    /// A torn last write, to be cut off: its offset, why it is not a record, and its size.
    pub torn: Option<TornTail>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: usize,
    pub why: &'static str,
    pub bytes: usize,
}

/// A bad frame with intact records after it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("damaged record at offset {offset} ({why}), with intact records after it")]
pub struct Damaged {
    pub offset: usize,
    pub why: &'static str,
}

/// Hands every intact record (its offset, kind and body) to `each`, in order.
pub fn scan(bytes: &[u8], mut each: impl FnMut(usize, u8, &[u8])) -> Result<Scanned, Damaged> {
    let mut at = 0;
    loop {
        match decode_frame(&bytes[at..]) {
            Frame::Record { kind, body, size } => {
                each(at, kind, body);
                at += size;
            }
            Frame::End => {
                // Zeros where a record would start: room for the next one (a preallocated
                // file, or an extending write the crash cut), unless an intact record follows.
                if next_intact(bytes, at).is_some() {
                    return Err(Damaged {
                        offset: at,
                        why: "zeros where a record should be",
                    });
                }
                let rest = &bytes[at..];
                return Ok(Scanned {
                    valid_len: at,
                    torn: rest.iter().any(|&b| b != 0).then_some(TornTail {
                        offset: at,
                        why: "bytes after zeros that are no record",
                        bytes: rest.len(),
                    }),
                });
            }
            Frame::Bad(why) => {
                if next_intact(bytes, at).is_some() {
                    return Err(Damaged { offset: at, why });
                }
                return Ok(Scanned {
                    valid_len: at,
                    torn: Some(TornTail {
                        offset: at,
                        why,
                        bytes: bytes.len() - at,
                    }),
                });
            }
        }
    }
}

/// The offset of the first intact record that starts after `from`, if any. Only run on the
/// rare path (a bad frame): most candidate offsets fail at once on their length.
fn next_intact(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len()).find(|&i| matches!(decode_frame(&bytes[i..]), Frame::Record { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::frame::encode_frame;
    use bytes::BytesMut;

    fn log(records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for (kind, body) in records {
            encode_frame(&mut out, *kind, body);
        }
        out.to_vec()
    }

    type Records = Vec<(u8, Vec<u8>)>;

    fn all(bytes: &[u8]) -> (Records, Result<Scanned, Damaged>) {
        let mut got = Vec::new();
        let result = scan(bytes, |_, kind, body| got.push((kind, body.to_vec())));
        (got, result)
    }

    const RECORDS: [(u8, &[u8]); 3] = [(1, b"first"), (2, b"second record"), (3, b"")];

    #[test]
    fn an_intact_log_reads_whole() {
        let bytes = log(&RECORDS);
        let (got, result) = all(&bytes);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (2, b"second record".to_vec()));
        assert_eq!(
            result,
            Ok(Scanned {
                valid_len: bytes.len(),
                torn: None
            })
        );
    }

    #[test]
    fn a_log_cut_anywhere_keeps_every_whole_record_and_cuts_the_rest() {
        let bytes = log(&RECORDS);
        let ends: Vec<usize> = {
            let mut ends = vec![0];
            scan(&bytes, |at, _, body| ends.push(at + 9 + body.len())).unwrap();
            ends
        };
        for cut in 0..=bytes.len() {
            let (got, result) = all(&bytes[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(got.len(), whole, "cut at {cut}");
            let scanned = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(scanned.valid_len, ends[whole], "cut at {cut}");
            assert_eq!(scanned.torn.is_some(), cut != ends[whole], "cut at {cut}");
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_room_not_damage() {
        let mut bytes = log(&RECORDS);
        let len = bytes.len();
        bytes.resize(len + 4096, 0);
        let (got, result) = all(&bytes);
        assert_eq!(got.len(), 3);
        assert_eq!(
            result,
            Ok(Scanned {
                valid_len: len,
                torn: None
            })
        );
    }

    #[test]
    fn a_torn_last_write_over_zeros_is_cut() {
        let mut bytes = log(&RECORDS);
        let len = bytes.len();
        let mut last = log(&[(4, b"the torn one")]);
        last.truncate(10);
        bytes.extend_from_slice(&last);
        bytes.resize(len + 4096, 0);
        let (got, result) = all(&bytes);
        assert_eq!(got.len(), 3);
        let scanned = result.unwrap();
        assert_eq!(scanned.valid_len, len);
        assert_eq!(scanned.torn.unwrap().offset, len);
    }

    #[test]
    fn damage_before_intact_records_is_refused_with_its_offset() {
        let mut bytes = log(&RECORDS);
        let second = 9 + b"first".len();
        bytes[second + 10] ^= 0x40; // inside the second record's body
        let (got, result) = all(&bytes);
        assert_eq!(got.len(), 1, "only what comes before the damage");
        assert_eq!(
            result,
            Err(Damaged {
                offset: second,
                why: "a checksum mismatch"
            })
        );
    }

    #[test]
    fn a_hole_of_zeros_before_intact_records_is_damage() {
        let mut bytes = log(&RECORDS);
        let second = 9 + b"first".len();
        for b in &mut bytes[second..second + 22] {
            *b = 0;
        }
        let (_, result) = all(&bytes);
        assert_eq!(result.unwrap_err().offset, second);
    }
}
