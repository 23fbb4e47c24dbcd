//! The MQTT string rules, checked on every string the codec decodes: well-formed UTF-8 without
//! surrogates (MQTT-1.5.3-1), no U+0000 and no control characters (MQTT-1.5.3-2), and for topic
//! names no wildcards and at least one character (MQTT-3.3.2-2, MQTT-4.7.3-1). Every PUBLISH
//! topic goes through here, so the common case (nothing to report) is one UTF-8 pass plus one
//! vectorized byte scan.

use super::DecodeError;

/// Checks the MQTT string rules beyond what `ByteStr` guarantees: no U+0000 and no control
/// character U+0001..U+001F, U+007F..U+009F (MQTT-1.5.3-2), and for topic names no wildcard
/// characters (MQTT-3.3.2-2). `bytes` is well-formed UTF-8 already, so scanning bytes is enough:
/// an ASCII byte never occurs inside a multi-byte sequence, and U+0080..U+009F are exactly the
/// two-byte sequences 0xC2 0x80..0x9F.
#[inline]
fn check_special_chars(bytes: &[u8], topic_name: bool) -> Result<(), DecodeError> {
    // The scan is branch-free with byte accumulators so that it vectorizes: an early-exit
    // byte loop was most of the cost of decoding a PUBLISH. It flags every 0xC2 lead byte
    // (U+0080..U+00BF) rather than looking at the byte after it; only a string with a flagged
    // byte takes the second loop, which decides and names the first offending character.
    let found = if topic_name {
        scan_blocks(bytes, |b| {
            u8::from(b < 0x20)
                | u8::from(b == 0x7f)
                | u8::from(b == 0xc2)
                | u8::from(b == b'+')
                | u8::from(b == b'#')
        })
    } else {
        scan_blocks(bytes, |b| {
            u8::from(b < 0x20) | u8::from(b == 0x7f) | u8::from(b == 0xc2)
        })
    };
    if !found {
        return Ok(());
    }
    first_special_char(bytes, topic_name)
}

/// Whether `flag` is non-zero for some byte of `bytes`. Only whole 16-byte blocks are
/// scanned, lane by lane, which compiles to vector instructions: the last block overlaps the
/// one before it, and a string shorter than a block is padded with a byte no rule flags.
/// With the control-character checks added, a plain fold over the slice made the codec bench's
/// PUBLISH decode (46-byte topic) 7% slower: its vector loop takes wide steps and leaves a
/// typical topic mostly to a scalar tail. Blocks made it faster than before those checks.
#[inline(always)]
fn scan_blocks(bytes: &[u8], flag: impl Fn(u8) -> u8) -> bool {
    const BLOCK: usize = 16;
    let scan = |block: &[u8; BLOCK], lanes: &mut [u8; BLOCK]| {
        for (lane, &b) in lanes.iter_mut().zip(block) {
            *lane |= flag(b);
        }
    };
    let mut lanes = [0u8; BLOCK];
    if bytes.len() < BLOCK {
        let mut padded = [b'a'; BLOCK];
        padded[..bytes.len()].copy_from_slice(bytes);
        scan(&padded, &mut lanes);
    } else {
        let mut blocks = bytes.chunks_exact(BLOCK);
        for block in &mut blocks {
            scan(block.try_into().expect("a whole block"), &mut lanes);
        }
        if !blocks.remainder().is_empty() {
            let last = &bytes[bytes.len() - BLOCK..];
            scan(last.try_into().expect("a whole block"), &mut lanes);
        }
    }
    lanes.iter().fold(0, |acc, &l| acc | l) != 0
}

/// The slow half of [`check_special_chars`]: the error for the first offending character.
#[cold]
#[inline(never)]
fn first_special_char(bytes: &[u8], topic_name: bool) -> Result<(), DecodeError> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(DecodeError::NullCharacter),
            0x01..=0x1f | 0x7f => return Err(DecodeError::ControlCharacter(u32::from(b))),
            0xc2 => {
                // Valid UTF-8, so a continuation byte follows: U+0080 + its low 6 bits.
                if let Some(&next @ 0x80..=0x9f) = bytes.get(i + 1) {
                    return Err(DecodeError::ControlCharacter(u32::from(next)));
                }
            }
            b'+' | b'#' if topic_name => return Err(DecodeError::WildcardInTopicName),
            _ => {}
        }
    }
    Ok(())
}

/// Validates an MQTT string: well-formed UTF-8 (`from_utf8` rejects encoded surrogates and
/// overlong forms, MQTT-1.5.3-1) without U+0000 or control characters (MQTT-1.5.3-2).
#[inline]
pub(crate) fn check_string(bytes: &[u8]) -> Result<(), DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    check_special_chars(bytes, false)
}

/// Validates a topic name as it appears in PUBLISH or as a will topic: a valid string,
/// non-empty (MQTT-4.7.3-1) and free of `+` and `#`.
#[inline]
pub(crate) fn check_topic_name(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    check_special_chars(bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_checks() {
        assert_eq!(check_string(b""), Ok(()));
        assert_eq!(check_string("a/+/#/é€😀".as_bytes()), Ok(()));
        assert_eq!(check_string(b"a\0"), Err(DecodeError::NullCharacter));
        // U+DFFF encoded as UTF-8 (a surrogate), and an overlong '/'
        assert_eq!(
            check_string(&[0xed, 0xbf, 0xbf]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(check_string(&[0xc0, 0xaf]), Err(DecodeError::InvalidUtf8));
        assert_eq!(check_topic_name(b""), Err(DecodeError::EmptyTopic));
        assert_eq!(check_topic_name("é/€".as_bytes()), Ok(()));
        assert_eq!(
            check_topic_name(b"a/#"),
            Err(DecodeError::WildcardInTopicName)
        );
    }

    #[test]
    fn control_characters_close_in_strings_and_topic_names() {
        use DecodeError::ControlCharacter;
        // MQTT-1.5.3-2: U+0001..U+001F and U+007F are single bytes; U+0080..U+009F are
        // 0xC2 0x80..0xC2 0x9F. Each is refused wherever it sits, in both kinds of field.
        #[rustfmt::skip]
        let bad: [(&[u8], u32); 10] = [
            (b"\x01", 0x01),
            (b"a\tb", 0x09),                // TAB
            (b"a/b\n", 0x0a),               // LF at the end
            (b"\x1b[31m", 0x1b),            // an ANSI escape
            (b"\x1f", 0x1f),
            (b"a\x7f", 0x7f),               // DEL
            (&[b'a', 0xc2, 0x80], 0x80),     // U+0080
            (&[0xc2, 0x85, b'z'], 0x85),     // U+0085 NEXT LINE
            (&[0xc3, 0xa9, 0xc2, 0x9b], 0x9b), // "é" then U+009B
            (&[0xc2, 0x9f], 0x9f),           // U+009F, the last one
        ];
        for (bytes, cp) in bad {
            assert_eq!(
                check_string(bytes),
                Err(ControlCharacter(cp)),
                "{bytes:02x?}"
            );
            assert_eq!(
                check_topic_name(bytes),
                Err(ControlCharacter(cp)),
                "{bytes:02x?}"
            );
        }
        // The neighbours pass: space, '~', U+00A0, U+00BF (0xC2 lead bytes that are not
        // controls), and multi-byte characters whose continuation bytes lie in 0x80..0x9F.
        #[rustfmt::skip]
        let good: [&[u8]; 6] = [
            b" ~",
            &[0xc2, 0xa0],                   // U+00A0 NO-BREAK SPACE
            &[0xc2, 0xbf, b'/', 0xc2, 0xb0], // U+00BF, '/', U+00B0 DEGREE SIGN
            &[0xe2, 0x82, 0xac],             // U+20AC EURO SIGN: 0x82 is a continuation
            &[0xc4, 0x80],                   // U+0100: continuation 0x80 after another lead
            &[0xf0, 0x9f, 0x98, 0x80],       // U+1F600
        ];
        for bytes in good {
            assert_eq!(check_string(bytes), Ok(()), "{bytes:02x?}");
            assert_eq!(check_topic_name(bytes), Ok(()), "{bytes:02x?}");
        }
        // The first offending character is the one named.
        assert_eq!(check_string(b"\x02\0"), Err(ControlCharacter(2)));
        assert_eq!(check_string(b"\0\x02"), Err(DecodeError::NullCharacter));
        assert_eq!(
            check_topic_name(b"+\x02"),
            Err(DecodeError::WildcardInTopicName)
        );
    }

    #[test]
    fn every_byte_of_every_length_is_scanned() {
        // The scan works in 16-byte blocks, the last one overlapping and a short string
        // padded: a control character or wildcard anywhere in any length is still found.
        for len in 1..=50 {
            let clean = vec![b'a'; len];
            assert_eq!(check_topic_name(&clean), Ok(()));
            for at in 0..len {
                let mut s = clean.clone();
                s[at] = 0x1f;
                assert_eq!(check_string(&s), Err(DecodeError::ControlCharacter(0x1f)));
                s[at] = b'#';
                assert_eq!(check_string(&s), Ok(()));
                assert_eq!(check_topic_name(&s), Err(DecodeError::WildcardInTopicName));
            }
        }
    }
}
