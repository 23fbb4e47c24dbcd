//! Feeds arbitrary bytes to the MQTT decoder as one connection's stream: decode packets until
//! the decoder asks for more or reports an error. The decoder must not panic, must not grow
//! the buffer, and every packet it returns must re-encode to bytes that decode back to it.
//! The first byte's top bit picks the protocol level (3.1.1 or MQTT 5).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use surgemq::protocol::{decode, frame_len, ProtocolLevel};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the level and the maximum packet size, so both are fuzzed too.
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let level = if first & 0x80 != 0 {
        ProtocolLevel::V5
    } else {
        ProtocolLevel::V311
    };
    let max = match first & 0x7f {
        b if b < 0x40 => usize::from(b) * 16,
        _ => 1 << 20,
    };
    let mut buf = BytesMut::with_capacity(data.len());
    buf.extend_from_slice(data);
    let capacity = buf.capacity();
    loop {
        let before = buf.len();
        let header = frame_len(&buf, max, level);
        match decode(&mut buf, max, level) {
            Ok(Some(packet)) => {
                assert_eq!(header, Ok(Some(before - buf.len())));
                let mut out = BytesMut::new();
                packet
                    .encode(&mut out, level)
                    .expect("a decoded packet must encode");
                assert_eq!(out.len(), packet.encoded_len(level));
                let again = decode(&mut out, usize::MAX, level).expect("re-encoded packet must decode");
                assert_eq!(again.as_ref(), Some(&packet));
                assert!(out.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(e) => {
                if let Err(h) = header {
                    assert_eq!(h, e);
                }
                break;
            }
        }
        assert!(buf.capacity() <= capacity);
    }
});
