//! What a connection owes its client, in order, not yet written: the [`OutputQueue`].
//!
//! Most packets are small, and for them one copy into a buffer beats any bookkeeping: the
//! connection coalesces them into `encoded` and writes it with one `send`. A large payload is
//! another matter. Fanned out to a thousand subscribers, copying it would write it a thousand
//! times into a thousand buffers (and keep those copies while the sockets are full), so it stays
//! where it is, shared by every queue that holds it, and the write gathers it from there with
//! `sendmsg`. Its header (fixed header, topic, packet id) is still encoded into `encoded`, and
//! the queue remembers at which position of `encoded` the payload goes.
//!
//! The queue hands out the next bytes as I/O slices and is told how many were written; its one
//! piece of I/O, [`OutputQueue::send_nonblocking`], gathers them into `sendmsg` calls until the
//! socket is full. Waiting for room in the socket is left to the caller (`wire`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads of at least this many bytes are shared rather than copied. Below it, a copy costs
/// no more than a slice of its own, and the buffer stays one `send`; from 16 KiB on, sharing
/// saves a fifth to a third of the write (`benches/fanout.rs`), and at any size the memory of
/// a copy per subscriber.
pub const SHARE_PAYLOADS_FROM: usize = 4096;

/// Slices per `sendmsg`: 64 large payloads and their headers are more than a socket buffer
/// takes at once, so more would only cost stack.
const MAX_SLICES: usize = 64;

/// Pending output: encoded bytes, with shared payloads spliced in at recorded positions.
pub struct OutputQueue(Repr);

/// Most connections never send a large payload, and every byte of an idle connection counts:
/// the bookkeeping for shared payloads is boxed and made on first use, and until then the
/// queue is its encoding buffer alone (the same size, thanks to the buffer's non-null pointer).
enum Repr {
    Encoded(BytesMut),
    Gathering(Box<Gathering>),
}

struct Gathering {
    /// Encoded packets (and the headers of shared payloads), oldest first.
    encoded: BytesMut,
    /// Bytes taken off the front of `encoded` (sent) since the queue last held no payload: the
    /// origin of every `at`.
    encoded_sent: usize,
    /// Payloads not yet fully sent, each with the position in `encoded` (counted from that
    /// origin) before which it goes. Sent bytes are advanced off the front of the `Bytes`.
    splices: VecDeque<Splice>,
    /// Unsent bytes in `splices`.
    bytes: usize,
}

struct Splice {
    at: usize,
    payload: Bytes,
}

impl Default for OutputQueue {
    fn default() -> Self {
        OutputQueue(Repr::Encoded(BytesMut::new()))
    }
}

impl OutputQueue {
    /// Where packets are encoded; what is appended goes after everything queued so far.
    pub fn encoded(&mut self) -> &mut BytesMut {
        match &mut self.0 {
            Repr::Encoded(buf) => buf,
            Repr::Gathering(g) => &mut g.encoded,
        }
    }

    fn encoded_ref(&self) -> &BytesMut {
        match &self.0 {
            Repr::Encoded(buf) => buf,
            Repr::Gathering(g) => &g.encoded,
        }
    }

    /// Queues `payload` after what is encoded so far, without copying it.
    pub fn push_shared(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        if let Repr::Encoded(buf) = &mut self.0 {
            let encoded = std::mem::take(buf);
            self.0 = Repr::Gathering(Box::new(Gathering {
                encoded,
                encoded_sent: 0,
                splices: VecDeque::new(),
                bytes: 0,
            }));
        }
        if let Repr::Gathering(g) = &mut self.0 {
            g.bytes += payload.len();
            g.splices.push_back(Splice {
                at: g.encoded_sent + g.encoded.len(),
                payload,
            });
        }
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Encoded(buf) => buf.len(),
            Repr::Gathering(g) => g.encoded.len() + g.bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any shared payload is queued: then only a gathering write sends it in order.
    pub fn has_shared(&self) -> bool {
        matches!(&self.0, Repr::Gathering(g) if g.bytes > 0)
    }

    /// Whether the encoding buffer has memory (one from the pool, or one it grew).
    pub fn has_buffer(&self) -> bool {
        self.encoded_ref().capacity() > 0
    }

    /// Gives the encoding buffer the memory of `buf` (empty), keeping what is queued.
    pub fn set_buffer(&mut self, mut buf: BytesMut) {
        let encoded = self.encoded();
        buf.clear();
        buf.extend_from_slice(encoded);
        *encoded = buf;
    }

    /// Takes the memory of an empty queue, to keep for another connection; `None` if there is
    /// something queued or no memory to take. The queue is back to its small form.
    pub fn take_buffer_if_idle(&mut self) -> Option<BytesMut> {
        if !self.is_empty() {
            return None;
        }
        let buf = std::mem::take(self.encoded());
        self.0 = Repr::Encoded(BytesMut::new());
        (buf.capacity() > 0).then_some(buf)
    }

    /// The next bytes to write, in order, as many as fit in `slices`; returns how many slices
    /// it filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let g = match &self.0 {
            Repr::Encoded(buf) => {
                if buf.is_empty() || slices.is_empty() {
                    return 0;
                }
                slices[0] = IoSlice::new(buf);
                return 1;
            }
            Repr::Gathering(g) => g,
        };
        let mut filled = 0;
        let mut from = 0; // position in `encoded`
        for splice in &g.splices {
            let at = splice.at - g.encoded_sent;
            if at > from {
                if filled == slices.len() {
                    return filled;
                }
                slices[filled] = IoSlice::new(&g.encoded[from..at]);
                filled += 1;
                from = at;
            }
            if filled == slices.len() {
                return filled;
            }
            slices[filled] = IoSlice::new(&splice.payload);
            filled += 1;
        }
        if from < g.encoded.len() && filled < slices.len() {
            slices[filled] = IoSlice::new(&g.encoded[from..]);
            filled += 1;
        }
        filled
    }

    /// Writes what is queued to `fd` with non-blocking gathering writes, until the queue is
    /// empty (`Ok`) or the socket is full (`ErrorKind::WouldBlock`).
    pub fn send_nonblocking(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        while !self.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.io_slices(&mut slices);
                crate::sys::send_gathered(fd, &slices[..n])?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        Ok(())
    }

    /// The first `n` bytes were written.
    pub fn advance(&mut self, n: usize) {
        // A socket never reports more than it was given; should it, the queue just empties.
        let mut n = n.min(self.len());
        let g = match &mut self.0 {
            Repr::Encoded(buf) => return buf.advance(n),
            Repr::Gathering(g) => g,
        };
        while n > 0 {
            let encoded_before_next = match g.splices.front() {
                Some(splice) => splice.at - g.encoded_sent,
                None => g.encoded.len(),
            };
            if encoded_before_next > 0 {
                let k = n.min(encoded_before_next);
                g.encoded.advance(k);
                g.encoded_sent += k;
                n -= k;
                continue;
            }
            let splice = g.splices.front_mut().expect("n is within the queue");
            let k = n.min(splice.payload.len());
            splice.payload.advance(k);
            g.bytes -= k;
            n -= k;
            if splice.payload.is_empty() {
                g.splices.pop_front();
            }
        }
        if g.splices.is_empty() {
            g.encoded_sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the queue would write, gathered through `io_slices` `max` slices at a time
    /// and advanced `step` bytes at a time (partial writes).
    fn drain(q: &mut OutputQueue, max: usize, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut slices = vec![IoSlice::new(&[]); max];
            let n = q.io_slices(&mut slices);
            assert!(n > 0);
            let mut written: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();
            written.truncate(step);
            let len = written.len();
            out.extend(written);
            q.advance(len);
        }
        out
    }

    fn mixed() -> OutputQueue {
        let mut q = OutputQueue::default();
        q.encoded().extend_from_slice(b"ab");
        q.push_shared(Bytes::from_static(b"PAYLOAD1"));
        q.push_shared(Bytes::from_static(b"P2"));
        q.encoded().extend_from_slice(b"cd");
        q.push_shared(Bytes::new());
        q.encoded().extend_from_slice(b"e");
        q.push_shared(Bytes::from_static(b"P3"));
        q
    }

    #[test]
    fn shared_payloads_go_where_they_were_queued() {
        let q = mixed();
        assert_eq!(q.len(), 2 + 8 + 2 + 2 + 1 + 2);
        assert!(q.has_shared());
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.io_slices(&mut slices);
        let parts: Vec<&[u8]> = slices[..n].iter().map(|s| &s[..]).collect();
        assert_eq!(
            parts,
            // The empty payload leaves no trace: "cd" and "e" stay one slice.
            [&b"ab"[..], b"PAYLOAD1", b"P2", b"cde", b"P3"].to_vec()
        );
    }

    #[test]
    fn partial_writes_resume_mid_slice() {
        let whole = b"abPAYLOAD1P2cdeP3".to_vec();
        for max in 1..=7 {
            for step in 1..=whole.len() {
                let mut q = mixed();
                assert_eq!(drain(&mut q, max, step), whole, "max {max} step {step}");
                assert!(!q.has_shared());
            }
        }
    }

    #[test]
    fn appending_while_partly_sent_keeps_the_order() {
        let mut q = OutputQueue::default();
        q.encoded().extend_from_slice(b"h1");
        q.push_shared(Bytes::from_static(b"AAAA"));
        q.advance(3); // "h1" and one payload byte
        q.encoded().extend_from_slice(b"h2");
        q.push_shared(Bytes::from_static(b"BB"));
        q.encoded().extend_from_slice(b"t");
        assert_eq!(drain(&mut q, 16, 2), b"AAAh2BBt");
        // Once empty, positions start over: a new splice still lands right.
        q.encoded().extend_from_slice(b"x");
        q.push_shared(Bytes::from_static(b"Y"));
        assert_eq!(drain(&mut q, 16, 1), b"xY");
    }

    #[test]
    fn buffers_are_handed_back_only_when_idle() {
        let mut q = mixed();
        assert!(q.take_buffer_if_idle().is_none());
        drain(&mut q, 4, 100);
        let buf = q
            .take_buffer_if_idle()
            .expect("an idle queue gives its buffer back");
        assert!(buf.capacity() > 0);
        assert!(!q.has_buffer() && matches!(q.0, Repr::Encoded(_)));
        let mut q = OutputQueue::default();
        q.encoded().extend_from_slice(b"kept");
        q.set_buffer(BytesMut::with_capacity(64));
        assert_eq!(&q.encoded()[..], b"kept");
        assert!(q.encoded().capacity() >= 64);
    }

    #[test]
    fn a_full_socket_stops_the_send_and_it_resumes_where_it_stopped() {
        use std::io::Read;
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&tx)
            .set_send_buffer_size(4096)
            .unwrap();
        let mut q = OutputQueue::default();
        let mut expected = Vec::new();
        for i in 0..20u8 {
            let header = [b'h', i];
            let payload: Vec<u8> = (0..20_000u32).map(|j| (j % 251) as u8 ^ i).collect();
            q.encoded().extend_from_slice(&header);
            expected.extend_from_slice(&header);
            expected.extend_from_slice(&payload);
            q.push_shared(Bytes::from(payload));
        }
        q.encoded().extend_from_slice(b"end");
        expected.extend_from_slice(b"end");

        let mut received = Vec::new();
        let mut full = 0;
        loop {
            match q.send_nonblocking(tx.as_fd()) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => full += 1,
                Err(e) => panic!("{e}"),
            }
            let mut chunk = [0u8; 7_000];
            let n = rx.read(&mut chunk).unwrap();
            received.extend_from_slice(&chunk[..n]);
        }
        drop(tx);
        rx.read_to_end(&mut received).unwrap();
        assert!(full > 10, "the socket was full {full} times");
        assert!(received == expected, "bytes differ");
        assert!(q.is_empty());
    }
}
