//! Shared by `broker_large_payloads.rs` and `broker_partial_writes.rs`: payload patterns,
//! whole-frame checks, and a client whose small receive window forces partial writes.
//!
//! The broker may send a large payload without copying it into the subscriber's write buffer:
//! as an iovec of `writev`/`sendmsg` that points at the message every subscriber shares, next
//! to the small packets (PUBLISH headers, small PUBLISHes, PUBACK, PUBREL, PINGRESP, SUBACK)
//! that are still copied into the buffer. That bookkeeping can go wrong in ways no codec test
//! sees: after a partial write the next one must resume at the exact byte the kernel stopped
//! at, in the buffer or in the middle of a payload; a payload must leave once, right after the
//! header that announces it and before whatever was queued after it; a packet copied into the
//! buffer while a payload is pending must not land inside that payload. These tests check the
//! result over real sockets. Every payload is filled with a pattern that depends on the
//! message's index and each byte's offset, so a byte repeated, skipped, shifted or taken from
//! another message changes the frame, and every frame the broker sends is compared whole with
//! the one expected at its place in the stream (for QoS 1 and 2 once the broker's packet id is
//! read from it). Sizes sit on every boundary a splice could get wrong: 0 and 1 byte, around
//! 4 KiB, 16 KiB and 64 KiB (the write buffer's high-water mark), and up to 900 KiB.
//!
//! Partial writes are forced, not hoped for. On loopback Linux sizes a socket's send buffer
//! from the 64 KiB segment size and takes 3-4 MiB in one `send` before it reports a full
//! socket, which would hide the partial-write path entirely. So the subscribers that matter
//! here connect with a small SO_RCVBUF and a small TCP_MAXSEG, both set before connecting: the
//! broker's side then sees a 4 KiB window and 1 KiB segments, its send buffer stays near
//! 64 KiB, and its writes meet a full socket after about 50 KiB. On top of that most of them
//! start reading only once everything is queued for them (one of them after 24 MiB), then read
//! a few hundred bytes or a few KiB at a time. Only liveness has timeouts; nothing depends on
//! timing.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::BytesMut;
use surgemq::protocol::{frame_len, ProtocolLevel};

/// How long a reader may wait for the next packet the broker owes it: liveness only.
pub const LIVENESS: Duration = Duration::from_secs(20);
/// Largest frame the tests' own reader accepts.
pub const MAX_FRAME: usize = 2 << 20;
/// Maximum segment size of the small-window clients (see [`SmallWindowClient`]).
pub const SMALL_MSS: u32 = 1024;
/// PINGREQ and PINGRESP.
pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];

// ----- payloads and frames --------------------------------------------------------------------

/// splitmix64: a cheap hash whose outputs for neighbouring inputs share nothing.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The payload of message `index`: each 8-byte word is a hash of the index and the word's
/// offset, so no stretch of one payload appears elsewhere in it or in another payload.
pub fn pattern(index: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut word = 0u64;
    while out.len() < len {
        out.extend_from_slice(&mix(((index as u64) << 32) ^ word).to_le_bytes());
        word += 1;
    }
    out.truncate(len);
    out
}

/// Asserts `got` is exactly `want`; on a difference, says where, without printing 900 KiB.
#[track_caller]
pub fn check_frame(got: &[u8], want: &[u8], what: impl FnOnce() -> String) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |f: &[u8]| {
        let from = at.saturating_sub(8).min(f.len());
        format!("{:02x?}", &f[from..(at + 24).min(f.len())])
    };
    panic!(
        "{}: a frame of {} bytes where {} were expected, first difference at byte {at}\n  \
         got  ..{}\n  want ..{}\n  got starts {:02x?}\n  want starts {:02x?}",
        what(),
        got.len(),
        want.len(),
        around(got),
        around(want),
        &got[..got.len().min(16)],
        &want[..want.len().min(16)],
    );
}

/// The packet id of a QoS 1/2 PUBLISH frame, read from where it must be (0 if the frame is too
/// short to hold one): the comparison with the expected frame then checks everything else.
pub fn packet_id_of(frame: &[u8]) -> u16 {
    let mut pos = 1;
    while frame.get(pos).is_some_and(|b| b & 0x80 != 0) {
        pos += 1;
    }
    pos += 1;
    let Some(len) = frame.get(pos..pos + 2) else {
        return 0;
    };
    let at = pos + 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
    frame
        .get(at..at + 2)
        .map_or(0, |id| u16::from_be_bytes([id[0], id[1]]))
}

/// The first 32 bytes of a frame, for messages about unexpected ones.
pub fn head(frame: &[u8]) -> String {
    format!(
        "{:02x?} ({} bytes)",
        &frame[..frame.len().min(32)],
        frame.len()
    )
}

// ----- a client with a small receive window -----------------------------------------------

/// A client whose socket has a small receive buffer and a small maximum segment size, set
/// before connecting so that the broker sees a small window and small segments from the first
/// byte (and keeps a small send buffer for the connection), and which reads at most `chunk`
/// bytes at a time. The broker's writes to it meet a full socket after some 50 KiB.
pub struct SmallWindowClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub chunk: usize,
}

impl SmallWindowClient {
    /// Connected with CleanSession = 1.
    #[track_caller]
    pub fn connect(broker: &Broker, client_id: &str, rcvbuf: usize, chunk: usize) -> Self {
        let connect = ConnectBuilder::new(client_id);
        Self::connect_with(broker, &connect, &[0x20, 0x02, 0x00, 0x00], rcvbuf, chunk)
    }

    /// Sends `connect` and expects exactly `connack`.
    #[track_caller]
    pub fn connect_with(
        broker: &Broker,
        connect: &ConnectBuilder,
        connack: &[u8],
        rcvbuf: usize,
        chunk: usize,
    ) -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(broker.addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        socket.set_mss(SMALL_MSS).expect("TCP_MAXSEG");
        socket.connect(&broker.addr.into()).expect("connect");
        socket.set_nodelay(true).expect("TCP_NODELAY");
        let mut c = SmallWindowClient {
            stream: socket.into(),
            buf: BytesMut::new(),
            chunk,
        };
        c.send(&connect.build());
        assert_eq!(c.frame(), connack, "CONNACK of {}", connect.client_id);
        c
    }

    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the broker");
    }

    /// Subscribes; returns the PUBLISHes that came before the SUBACK (the spec allows the
    /// retained messages to come first, 3.8.4), reading no further than the SUBACK.
    #[track_caller]
    pub fn subscribe(&mut self, packet_id: u16, filters: &[(&str, u8)]) -> Vec<Vec<u8>> {
        self.send(&subscribe(packet_id, filters));
        let mut ack = vec![0x90, 2 + filters.len() as u8];
        ack.extend_from_slice(&packet_id.to_be_bytes());
        ack.extend(filters.iter().map(|&(_, qos)| qos));
        let mut before = Vec::new();
        loop {
            let frame = self.frame();
            if frame[0] >> 4 == 3 {
                before.push(frame);
            } else {
                assert_eq!(frame, ack, "SUBACK");
                return before;
            }
        }
    }

    /// One read of at most `max` bytes; false when nothing came before `deadline`.
    #[track_caller]
    pub fn read_once(&mut self, max: usize, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        self.stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        let len = self.buf.len();
        self.buf.resize(len + max, 0);
        let result = self.stream.read(&mut self.buf[len..]);
        match result {
            Ok(0) => panic!(
                "the broker closed the connection; pending {}",
                head(&self.buf[..len])
            ),
            Ok(n) => {
                self.buf.truncate(len + n);
                true
            }
            Err(e) => {
                self.buf.truncate(len);
                match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => false,
                    ErrorKind::Interrupted => true,
                    _ => panic!("read from the broker: {e}"),
                }
            }
        }
    }

    /// The next complete frame already read, if any.
    #[track_caller]
    pub fn take_frame(&mut self) -> Option<Vec<u8>> {
        match frame_len(&self.buf, MAX_FRAME, ProtocolLevel::V311) {
            Ok(Some(len)) if self.buf.len() >= len => Some(self.buf.split_to(len).to_vec()),
            Ok(_) => None,
            Err(e) => panic!(
                "the broker sent a malformed packet ({e}): {}",
                head(&self.buf)
            ),
        }
    }

    #[track_caller]
    pub fn frame(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(frame) = self.take_frame() {
                return frame;
            }
            assert!(
                self.read_once(self.chunk, deadline),
                "no packet from the broker within {LIVENESS:?}; pending {}",
                head(&self.buf)
            );
        }
    }

    /// Asserts nothing more arrives for [`QUIET`].
    #[track_caller]
    pub fn quiet(&mut self) {
        let got_more = self.read_once(self.chunk, Instant::now() + QUIET);
        assert!(
            !got_more && self.buf.is_empty(),
            "expected silence, got {}",
            head(&self.buf)
        );
    }
}

/// What the tests need from a subscriber's connection, whichever kind.
pub trait Peer: Send {
    fn send_bytes(&mut self, bytes: &[u8]);
    fn next(&mut self) -> Vec<u8>;
    fn expect_quiet(&mut self);
}

impl Peer for RawClient {
    fn send_bytes(&mut self, bytes: &[u8]) {
        RawClient::send(self, bytes)
    }
    fn next(&mut self) -> Vec<u8> {
        RawClient::next_frame(self)
    }
    fn expect_quiet(&mut self) {
        RawClient::expect_nothing(self)
    }
}

impl Peer for SmallWindowClient {
    fn send_bytes(&mut self, bytes: &[u8]) {
        SmallWindowClient::send(self, bytes)
    }
    fn next(&mut self) -> Vec<u8> {
        SmallWindowClient::frame(self)
    }
    fn expect_quiet(&mut self) {
        SmallWindowClient::quiet(self)
    }
}

/// Publishes the round in one write (packet ids 1..) and completes the publisher's side of
/// each QoS flow, checking every acknowledgement's exact bytes and order.
#[track_caller]
pub fn publish_round(publisher: &mut RawClient, topic: &str, payloads: &[Vec<u8>], qos: u8) {
    let id = |i: usize| if qos == 0 { 0 } else { i as u16 + 1 };
    let mut all = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        all.extend(publish(topic, payload, qos, false, false, id(i)));
    }
    publisher.send(&all);
    let acks =
        |f: fn(u16) -> [u8; 4]| -> Vec<u8> { (0..payloads.len()).flat_map(|i| f(id(i))).collect() };
    match qos {
        0 => publisher.ping(),
        1 => publisher.expect_bytes(&acks(puback)),
        _ => {
            publisher.expect_bytes(&acks(pubrec));
            publisher.send(&acks(pubrel));
            publisher.expect_bytes(&acks(pubcomp));
        }
    }
}
