//! The one place where the broker touches a client socket: reading into and writing from the
//! connection's buffers.
//!
//! Reads go straight into the spare capacity of `rbuf`, so decoded packets are slices of the
//! bytes the kernel wrote (no copy). That spare capacity is always initialised memory: a new
//! buffer is allocated zeroed and nothing else ever grows it, which makes handing it to `recv`
//! as `&mut [u8]` sound. Writes send all of `wbuf` with as few syscalls as the socket allows:
//! the connection coalesces every packet it owes into `wbuf` before flushing.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::protocol::frame_len;

/// Size of a fresh read buffer. Packets larger than this get a buffer of their own size.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much spare room, a read would be too small to be worth a syscall.
const MIN_READ_SPACE: usize = 1024;

pub struct Wire {
    stream: TcpStream,
    pub peer: SocketAddr,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Whether `rbuf`'s spare capacity is known to be initialised (see the module docs).
    spare_initialised: bool,
}

impl Wire {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Wire {
        Wire {
            stream,
            peer,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            spare_initialised: false,
        }
    }

    /// A socket that arrives from another shard, with the bytes read there after CONNECT.
    pub fn adopt(fd: OwnedFd, peer: SocketAddr, leftover: BytesMut) -> Wire {
        use std::os::fd::IntoRawFd;
        // SAFETY: the descriptor is an open, connected, non-blocking TCP socket that we own.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        Wire {
            stream,
            peer,
            rbuf: leftover,
            wbuf: BytesMut::new(),
            spare_initialised: false,
        }
    }

    /// A second descriptor for the socket, to hand it to another shard. The original closes
    /// when this `Wire` is dropped; the socket lives on through the duplicate.
    pub fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: fcntl on a descriptor we own; a non-negative result is a new descriptor.
        let fd = unsafe { libc::fcntl(self.stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn set_nodelay(&self) {
        let _ = self.stream.set_nodelay(true);
    }

    /// Makes sure `rbuf` has initialised spare room for the next read: at least
    /// `MIN_READ_SPACE`, and all of the packet being received when its header announces more.
    fn reserve_read_space(&mut self, max_packet_size: usize) {
        let len = self.rbuf.len();
        let frame = match frame_len(&self.rbuf, max_packet_size) {
            Ok(Some(total)) => total,
            _ => 0,
        };
        let want = MIN_READ_SPACE.max(frame.saturating_sub(len));
        if self.spare_initialised && self.rbuf.capacity() - len >= want {
            return;
        }
        let mut fresh = BytesMut::zeroed(READ_CHUNK.max(len + want));
        fresh.clear();
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
        self.spare_initialised = true;
    }

    /// Reads what the socket has into `rbuf`. `Ok(0)` means the peer closed its side.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max_packet_size: usize,
    ) -> Poll<io::Result<usize>> {
        self.reserve_read_space(max_packet_size);
        let len = self.rbuf.len();
        let spare = self.rbuf.capacity() - len;
        // SAFETY: the spare capacity is initialised (see `reserve_read_space`) and belongs to
        // `rbuf`, which nothing else borrows during the call.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.rbuf.as_mut_ptr().add(len), spare) };
        match Pin::new(&mut self.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: `recv` wrote `n` bytes into the spare capacity.
                unsafe { self.rbuf.set_len(len + n) };
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    pub async fn read(&mut self, max_packet_size: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, max_packet_size)).await
    }

    /// Writes `wbuf` until it is empty or the socket is full.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}
