//! Operating-system facilities shared by the broker and the load generator: the locked-memory
//! limit glommio needs, reserving a port for port 0, the CPUs this process may use, writing a
//! whole buffer to a glommio socket, and gathering writes (`sendmsg`) that glommio lacks.

use std::io;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_lite::AsyncWrite;
use glommio::net::TcpStream;

/// glommio refuses to start an executor below this locked-memory limit.
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// The locked-memory limit is below what glommio needs and cannot be raised by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedMemoryTooLow {
    pub have_kib: u64,
    pub need_kib: u64,
}

/// glommio needs locked memory for io_uring. Raises the soft limit to the hard one if that is
/// enough; otherwise reports what there is and what is needed.
pub fn ensure_locked_memory() -> Result<(), LockedMemoryTooLow> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell; let glommio decide
    }
    if lim.rlim_cur >= GLOMMIO_MIN_MEMLOCK {
        return Ok(());
    }
    if lim.rlim_max >= GLOMMIO_MIN_MEMLOCK {
        let raised = libc::rlimit {
            rlim_cur: GLOMMIO_MIN_MEMLOCK,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(LockedMemoryTooLow {
        have_kib: lim.rlim_cur / 1024,
        need_kib: GLOMMIO_MIN_MEMLOCK / 1024,
    })
}

/// Resolves port 0 to a concrete port that every executor can then bind with SO_REUSEPORT.
/// The returned socket is bound but never listens, so the kernel sends it no connections;
/// drop it once the executors listen. A non-zero port is returned as is, with no socket.
pub fn reserve_port(addr: SocketAddr) -> std::io::Result<(SocketAddr, Option<socket2::Socket>)> {
    if addr.port() != 0 {
        return Ok((addr, None));
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    Ok((local, Some(socket)))
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we own; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Writes `buf` to `stream` until it is empty or the socket is full; what was written leaves
/// `buf`. Each call is one `send` per chunk the socket takes: callers coalesce packets first.
pub fn poll_write_all(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

/// One non-blocking `sendmsg` of `slices`, in order; returns how many bytes the socket took.
/// A full socket is `ErrorKind::WouldBlock`. glommio's streams write one slice per call, so
/// slices that live in different places (shared payloads) go out through this instead.
pub fn send_gathered(fd: BorrowedFd<'_>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed to have the layout of iovec on Unix.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    loop {
        // SAFETY: `msg` points at `slices`, which outlive the call; the kernel only reads them.
        let n = unsafe {
            libc::sendmsg(
                fd.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
