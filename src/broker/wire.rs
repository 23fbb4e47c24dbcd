//! The one place where the broker touches a client socket: reading into and writing from the
//! connection's buffers.
//!
//! Idle connections hold no buffers: that is what keeps an idle connection near 1 KiB.
//! A connection without a partial packet reads into its shard's [`ReadArena`], a chunk shared
//! by all connections of the shard, and keeps only the slice it read; only a connection in
//! the middle of a packet owns a buffer (sized for that packet), until the packet is complete.
//! Either way the kernel writes straight into memory that decoded packets then slice (no copy).
//! Spare capacity handed to `recv` is always initialised memory: buffers are allocated zeroed
//! and never grown otherwise, which makes passing it as `&mut [u8]` sound.
//!
//! Writes send all of `wbuf` with as few syscalls as the socket allows: the connection
//! coalesces every packet it owes into `wbuf` before flushing, one `send` while it holds only
//! encoded bytes, gathering `sendmsg` calls while it also holds shared payloads (see
//! [`OutputQueue`]). Its encoding buffer comes from the shard's [`WritePool`] when there is
//! something to send and goes back once it is empty.
//!
//! A TLS or WebSocket connection has a [`Layered`] transport under `rbuf` and `wbuf` (see
//! `transport`): socket bytes are read into its own buffer and turned into MQTT bytes in
//! `rbuf`; `wbuf` is turned into socket bytes at most 16 KiB at a time, so what waits for a
//! slow socket stays bounded as with TCP. Nothing above this file knows the difference.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::output::OutputQueue;
use super::parking::ParkingLot;
use crate::protocol::{frame_len, ProtocolLevel};
use crate::transport::Layer;

/// Size of a connection's own read buffer. Packets larger than this get one of their own size.
const READ_CHUNK: usize = 16 * 1024;
/// Size of a shard's shared read chunk.
const ARENA_CHUNK: usize = 64 * 1024;
/// Below this much spare room, a read would be too small to be worth a syscall.
const MIN_READ_SPACE: usize = 1024;
/// Write buffers a shard keeps for reuse, and the largest one worth keeping.
const POOL_BUFFERS: usize = 256;
const POOL_MAX_CAPACITY: usize = 256 * 1024;

/// The shard's shared read chunk. Its spare capacity is always initialised.
#[derive(Default)]
pub struct ReadArena {
    chunk: BytesMut,
}

impl ReadArena {
    fn spare(&mut self) -> &mut BytesMut {
        if self.chunk.capacity() - self.chunk.len() < MIN_READ_SPACE {
            // The old chunk lives on as long as messages read into it do.
            self.chunk = BytesMut::zeroed(ARENA_CHUNK);
            self.chunk.clear();
        }
        &mut self.chunk
    }
}

/// Write buffers of a shard's idle connections, kept for the next connection that writes.
#[derive(Default)]
pub struct WritePool {
    free: Vec<BytesMut>,
}

impl WritePool {
    pub fn take(&mut self) -> BytesMut {
        self.free
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
    }

    pub fn give_back(&mut self, mut buf: BytesMut) {
        buf.clear();
        if self.free.len() < POOL_BUFFERS
            && buf.capacity() <= POOL_MAX_CAPACITY
            && buf.capacity() > 0
        {
            self.free.push(buf);
        }
    }
}

/// The socket: served by glommio, or parked (see [`super::parking`]).
enum Socket {
    Live(TcpStream),
    Parked(OwnedFd),
    /// Only for the moment between the two in [`Wire::unpark`].
    Moving,
}

/// How much of `wbuf` a layered transport wraps at a time.
const LAYER_CHUNK: usize = 16 * 1024;

/// A TLS or WebSocket transport with its socket-side buffers (see the module docs). It moves
/// with its connection to another shard.
pub struct Layered {
    layer: Layer,
    /// Bytes read from the socket (spare capacity initialised, as for `rbuf`).
    raw_in: BytesMut,
    /// Bytes for the socket.
    raw_out: BytesMut,
    /// Part of `wbuf` gathered into one piece to wrap.
    gather: BytesMut,
    /// The peer ended the transport: reported as the end of input.
    closed: bool,
}

impl std::fmt::Debug for Layered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered")
            .field("handshaking", &self.layer.handshaking())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Layered {
    pub fn new(layer: Layer) -> Box<Layered> {
        Box::new(Layered {
            layer,
            raw_in: BytesMut::new(),
            raw_out: BytesMut::new(),
            gather: BytesMut::new(),
            closed: false,
        })
    }
}

pub struct Wire {
    socket: Socket,
    pub peer: SocketAddr,
    /// Input not yet decoded: empty, or the start of a packet.
    pub rbuf: BytesMut,
    pub wbuf: OutputQueue,
    /// Whether `rbuf`'s spare capacity is known to be initialised (see the module docs).
    spare_initialised: bool,
    /// TLS or WebSockets; None for plain TCP.
    layered: Option<Box<Layered>>,
}

impl Wire {
    pub fn new(stream: TcpStream, peer: SocketAddr, layered: Option<Box<Layered>>) -> Wire {
        Wire {
            socket: Socket::Live(stream),
            peer,
            rbuf: BytesMut::new(),
            wbuf: OutputQueue::default(),
            spare_initialised: false,
            layered,
        }
    }

    /// A socket that arrives from another shard, with the bytes read there after CONNECT and
    /// its transport's state.
    pub fn adopt(
        fd: OwnedFd,
        peer: SocketAddr,
        leftover: BytesMut,
        layered: Option<Box<Layered>>,
    ) -> Wire {
        // SAFETY: the descriptor is an open, connected, non-blocking TCP socket that we own.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        Wire {
            socket: Socket::Live(stream),
            peer,
            rbuf: leftover,
            wbuf: OutputQueue::default(),
            spare_initialised: false,
            layered,
        }
    }

    /// The subject CN of the client's TLS certificate, if it presented one.
    pub fn peer_identity(&self) -> Option<String> {
        self.layered.as_ref()?.layer.peer_identity()
    }

    /// The transport's state, to move the connection to another shard.
    pub fn take_layered(&mut self) -> Option<Box<Layered>> {
        self.layered.take()
    }

    /// Whether nothing is buffered either way, the transport's own state included: the
    /// connection may park.
    pub fn holds_nothing(&self) -> bool {
        self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && self
                .layered
                .as_ref()
                .is_none_or(|l| l.raw_out.is_empty() && !l.closed && l.layer.is_idle())
    }

    /// Whether anything still waits to be written.
    pub fn has_output(&self) -> bool {
        !self.wbuf.is_empty() || self.layered.as_ref().is_some_and(|l| !l.raw_out.is_empty())
    }

    /// Ends the transport its own way (a WebSocket close frame, a TLS close_notify), queued
    /// behind what is already owed.
    pub fn say_goodbye(&mut self) {
        if let Some(l) = &mut self.layered {
            if !l.closed {
                // MQTT bytes still owed go first.
                while !self.wbuf.is_empty() {
                    if wrap_some(l, &mut self.wbuf).is_err() {
                        break;
                    }
                }
                l.layer.close(&mut l.raw_out);
            }
        }
    }

    /// A second descriptor for the socket, to hand it to another shard. The original closes
    /// when this `Wire` is dropped; the socket lives on through the duplicate.
    pub fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        let raw = match &self.socket {
            Socket::Live(stream) => stream.as_raw_fd(),
            Socket::Parked(fd) => fd.as_raw_fd(),
            Socket::Moving => return Err(not_live()),
        };
        // SAFETY: fcntl on a descriptor we own; a non-negative result is a new descriptor.
        let fd = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn set_nodelay(&self) {
        if let Socket::Live(stream) = &self.socket {
            let _ = stream.set_nodelay(true);
        }
    }

    pub fn is_parked(&self) -> bool {
        matches!(self.socket, Socket::Parked(_))
    }

    /// Parks an idle connection: glommio lets go of the socket (and its poll request), and the
    /// descriptor waits in the shard's epoll set, reported as `token` once readable. Only for a
    /// connection with nothing buffered either way. On failure the socket stays live.
    pub fn park(&mut self, lot: &ParkingLot, token: u64) -> io::Result<()> {
        debug_assert!(self.rbuf.is_empty() && self.wbuf.is_empty());
        let Socket::Live(_) = &self.socket else {
            return Ok(());
        };
        let fd = self.duplicate_fd()?;
        lot.park(fd.as_raw_fd(), token)?;
        // Dropping the glommio stream closes the original descriptor; the duplicate lives on.
        self.socket = Socket::Parked(fd);
        Ok(())
    }

    /// Serves a parked socket through glommio again.
    pub fn unpark(&mut self, lot: &ParkingLot) {
        match std::mem::replace(&mut self.socket, Socket::Moving) {
            Socket::Parked(fd) => {
                lot.unpark(fd.as_raw_fd());
                // SAFETY: an open, connected, non-blocking TCP socket that we own.
                let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                self.socket = Socket::Live(stream);
            }
            live => self.socket = live,
        }
    }

    /// Makes sure `rbuf` has initialised spare room to go on with the packet it holds. Room
    /// grows with what actually arrived (at most doubling), never to what the header merely
    /// announces: a peer that announces 256 MiB and sends nothing costs a small buffer.
    fn reserve_read_space(&mut self, max_packet_size: usize) {
        let len = self.rbuf.len();
        // Only the size matters here, and MQTT 5's rules are the looser ones: the decoder
        // checks the connection's own level.
        let frame = match frame_len(&self.rbuf, max_packet_size, ProtocolLevel::V5) {
            Ok(Some(total)) => total,
            _ => 0,
        };
        let rest_of_frame = frame.saturating_sub(len);
        let want = MIN_READ_SPACE.max(rest_of_frame.min(READ_CHUNK.max(len)));
        if self.spare_initialised && self.rbuf.capacity() - len >= MIN_READ_SPACE.min(want) {
            return;
        }
        let mut fresh = BytesMut::zeroed(READ_CHUNK.max(len + want));
        fresh.clear();
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
        self.spare_initialised = true;
    }

    /// Reads what the socket has into `rbuf` (through the arena when `rbuf` holds nothing).
    /// `Ok(0)` means the peer closed its side.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        arena: &mut ReadArena,
        max_packet_size: usize,
    ) -> Poll<io::Result<usize>> {
        if self.layered.is_some() {
            return self.poll_read_layered(cx);
        }
        if self.rbuf.is_empty() {
            let Socket::Live(stream) = &mut self.socket else {
                return Poll::Ready(Err(not_live()));
            };
            let chunk = arena.spare();
            let result = recv_into(stream, cx, chunk);
            if let Poll::Ready(Ok(n)) = result {
                self.rbuf = chunk.split_to(n);
                self.spare_initialised = false;
            }
            return result;
        }
        self.reserve_read_space(max_packet_size);
        let Socket::Live(stream) = &mut self.socket else {
            return Poll::Ready(Err(not_live()));
        };
        recv_into(stream, cx, &mut self.rbuf)
    }

    /// Reads through the transport layer until it yields MQTT bytes (a read may carry only
    /// handshake records, or a ping). What the layer owes the peer is written on the way.
    fn poll_read_layered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Wire {
            socket,
            rbuf,
            layered,
            spare_initialised,
            ..
        } = self;
        let Socket::Live(stream) = socket else {
            return Poll::Ready(Err(not_live()));
        };
        let l = layered.as_mut().expect("called for a layered wire");
        loop {
            if l.closed {
                return Poll::Ready(Ok(0));
            }
            // A full socket wakes this task once it has room; meanwhile reading goes on.
            if let Poll::Ready(Err(e)) = write_out(stream, cx, &mut l.raw_out) {
                return Poll::Ready(Err(e));
            }
            if l.raw_in.capacity() == 0 {
                l.raw_in = BytesMut::zeroed(READ_CHUNK);
                l.raw_in.clear();
            }
            match recv_into(stream, cx, &mut l.raw_in) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {}
                other => return other,
            }
            let before = rbuf.len();
            let got = l.layer.ingest(&l.raw_in, rbuf, &mut l.raw_out);
            // Cleared, not freed: the spare capacity stays initialised for the next read.
            l.raw_in.clear();
            *spare_initialised = false;
            match got {
                Ok(got) => l.closed = got.closed,
                Err(e) => {
                    // The peer's last words (an alert, an HTTP error), if the socket takes them.
                    let _ = write_out(stream, cx, &mut l.raw_out);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
            let produced = rbuf.len() - before;
            if produced > 0 {
                return Poll::Ready(Ok(produced));
            }
        }
    }

    /// Lets go of what an idle connection need not hold: an empty read buffer (the memory stays
    /// only while decoded messages use it) and an empty write buffer (back to the pool).
    pub fn release_idle_buffers(&mut self, pool: &mut WritePool) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
            self.spare_initialised = false;
        }
        if let Some(l) = &mut self.layered {
            if l.raw_out.is_empty() {
                l.raw_out = BytesMut::new();
            }
            l.raw_in = BytesMut::new();
            l.gather = BytesMut::new();
            l.layer.release_buffers();
        }
        if let Some(buf) = self.wbuf.take_buffer_if_idle() {
            pool.give_back(buf);
        }
    }

    pub async fn read(
        &mut self,
        arena: &std::cell::RefCell<ReadArena>,
        max_packet_size: usize,
    ) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, &mut arena.borrow_mut(), max_packet_size))
            .await
    }

    /// Writes `wbuf` until it is empty or the socket is full.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(l) = &mut self.layered {
            let Socket::Live(stream) = &mut self.socket else {
                return Poll::Ready(Err(not_live()));
            };
            loop {
                if l.raw_out.is_empty() {
                    if self.wbuf.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    if let Err(e) = wrap_some(l, &mut self.wbuf) {
                        return Poll::Ready(Err(e));
                    }
                }
                match write_out(stream, cx, &mut l.raw_out) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
            }
        }
        if self.wbuf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let Socket::Live(stream) = &mut self.socket else {
            return Poll::Ready(Err(not_live()));
        };
        loop {
            if !self.wbuf.has_shared() {
                return crate::sys::poll_write_all(stream, self.wbuf.encoded(), cx);
            }
            // SAFETY: the descriptor is open for as long as `stream` is, which outlives the call.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            match self.wbuf.send_nonblocking(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            // The socket is full. glommio's own write of the first slice registers interest
            // in room (or, should room have appeared since, writes it).
            let written = {
                let mut first = [io::IoSlice::new(&[])];
                self.wbuf.io_slices(&mut first);
                match Pin::new(&mut *stream).poll_write(cx, &first[0]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            self.wbuf.advance(written);
        }
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

/// The connection parks and unparks its socket around reads and writes, so meeting a parked
/// one here is a bug in the broker; it closes that connection instead of panicking.
fn not_live() -> io::Error {
    io::Error::other("socket used while parked")
}

/// Wraps up to [`LAYER_CHUNK`] bytes of `wbuf` (at least one whole piece of it) for the
/// socket, into `raw_out`.
fn wrap_some(l: &mut Layered, wbuf: &mut OutputQueue) -> io::Result<()> {
    let mut slices = [io::IoSlice::new(&[]); 64];
    let n = wbuf.io_slices(&mut slices);
    l.gather.clear();
    for slice in &slices[..n] {
        if !l.gather.is_empty() && l.gather.len() + slice.len() > LAYER_CHUNK {
            break;
        }
        l.gather.extend_from_slice(slice);
    }
    let taken = l.gather.len();
    let wrapped = l.layer.emit(&l.gather, &mut l.raw_out);
    wbuf.advance(taken);
    wrapped.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `out` to the socket until it is empty (Ready) or the socket is full (Pending).
fn write_out(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    out: &mut BytesMut,
) -> Poll<io::Result<()>> {
    use bytes::Buf;
    while !out.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => out.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

/// One `recv` into the initialised spare capacity of `buf`.
fn recv_into(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let len = buf.len();
    let spare = buf.capacity() - len;
    // SAFETY: callers only pass buffers whose spare capacity is initialised (see the module
    // docs), and nothing else borrows `buf` during the call.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().add(len), spare) };
    match Pin::new(stream).poll_read(cx, dst) {
        Poll::Ready(Ok(n)) => {
            // SAFETY: `recv` wrote `n` bytes into the spare capacity.
            unsafe { buf.set_len(len + n) };
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}
