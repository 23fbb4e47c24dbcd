//! Feeds arbitrary bytes to the MQTT decoder as one connection's stream: decode packets until
//! the decoder asks for more or reports an error. The decoder must not panic, must not grow
//! the buffer, and every packet it returns must re-encode to bytes that decode back to it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use surgemq::protocol::{decode, frame_len};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the maximum packet size, so the size limit is fuzzed too.
    let (max, data) = match data.split_first() {
        Some((&b, rest)) if b < 0x40 => (usize::from(b) * 16, rest),
        _ => (1 << 20, data),
    };
    let mut buf = BytesMut::with_capacity(data.len());
    buf.extend_from_slice(data);
    let capacity = buf.capacity();
    loop {
        let before = buf.len();
        let header = frame_len(&buf, max);
        match decode(&mut buf, max) {
            Ok(Some(packet)) => {
                assert_eq!(header, Ok(Some(before - buf.len())));
                let mut out = BytesMut::new();
                packet
                    .encode(&mut out)
                    .expect("a decoded packet must encode");
                assert_eq!(out.len(), packet.encoded_len());
                let again = decode(&mut out, usize::MAX).expect("re-encoded packet must decode");
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
