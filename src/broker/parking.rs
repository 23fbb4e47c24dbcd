//! Parking idle connections: a connection that has been quiet for a while gives up its glommio
//! socket and waits in the shard's epoll set instead.
//!
//! A glommio socket keeps a poll request in io_uring for as long as it waits for input, and
//! glommio allocates about 500 bytes for each such request: a third of what an idle connection
//! costs, for clients that may stay silent for hours. A parked connection keeps only its file
//! descriptor, registered (one-shot) in an epoll set owned by its shard. One watcher thread per
//! shard sleeps in `epoll_wait` and, when parked sockets become readable, sends their tokens to
//! the shard's inbox like any other cross-core message; the shard wakes those connections,
//! which take up a glommio socket again and read as usual. The watcher uses no CPU while
//! nothing happens and never touches a connection itself.
//!
//! Which connections park is decided by epochs: the shard's sweep task starts a new epoch every
//! `--park-after` and wakes the unparked connections; a connection that saw no input or output
//! during the whole previous epoch parks. So a connection parks after one to two intervals of
//! silence, and the sweep only runs while some connection is unparked.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

use super::mesh::{Mesh, Refused, ShardId, ShardMessage, SubscriberId};

/// The epoll token of the watcher's stop signal; connection tokens are session slots and
/// generations (see [`token`]), and a slot of `u32::MAX` never exists.
const STOP_TOKEN: u64 = u64::MAX;
/// Readiness events taken from the kernel per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// The epoll token of a parked connection: its session's slot and generation, so a wake-up
/// that arrives after the session ended finds nothing.
pub fn token(id: SubscriberId) -> u64 {
    (u64::from(id.slot) << 32) | u64::from(id.generation)
}

/// The slot and generation a token names.
pub fn slot_of(token: u64) -> (u32, u32) {
    ((token >> 32) as u32, token as u32)
}

/// A shard's parking: the epoll set, its watcher thread, and the epochs of the sweep.
pub struct ParkingLot {
    epoll: OwnedFd,
    /// An eventfd in the epoll set that tells the watcher to exit.
    stop: OwnedFd,
    stopping: Arc<AtomicBool>,
    watcher: RefCell<Option<JoinHandle<()>>>,
    /// How long a connection stays quiet before it parks (one to two of these).
    pub after: Duration,
    epoch: Cell<u32>,
    /// Connections being served that are not parked; the sweep sleeps while there are none.
    unparked: Cell<usize>,
    sweep_waker: RefCell<Option<Waker>>,
}

impl ParkingLot {
    /// Creates the epoll set and starts the watcher thread of shard `shard`.
    pub fn new(shard: ShardId, mesh: Arc<Mesh>, after: Duration) -> io::Result<ParkingLot> {
        // SAFETY: plain syscalls; each result is checked before it is wrapped as an owned fd.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        let stop = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        epoll_ctl(
            &epoll,
            libc::EPOLL_CTL_ADD,
            stop.as_raw_fd(),
            STOP_TOKEN,
            libc::EPOLLIN as u32,
        )?;
        let stopping = Arc::new(AtomicBool::new(false));
        let watcher = {
            let epoll = epoll.try_clone()?;
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name(format!("surgemq-park-{}", shard.0))
                .spawn(move || watch(epoll, shard, mesh, stopping))?
        };
        Ok(ParkingLot {
            epoll,
            stop,
            stopping,
            watcher: RefCell::new(Some(watcher)),
            after,
            epoch: Cell::new(0),
            unparked: Cell::new(0),
            sweep_waker: RefCell::new(None),
        })
    }

    /// Registers a parked socket: its next readiness (input, end of input, error) is reported
    /// once, as `token`.
    pub fn park(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd, token, events as u32)?;
        self.unparked.set(self.unparked.get().saturating_sub(1));
        Ok(())
    }

    /// Takes a socket out of the epoll set before glommio serves it again.
    pub fn unpark(&self, fd: RawFd) {
        // Cannot fail for a registered descriptor; a failure would only leave a spurious wake.
        let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0, 0);
        self.connection_active();
    }

    /// A connection started (or resumed) being served by glommio.
    pub fn connection_active(&self) {
        self.unparked.set(self.unparked.get() + 1);
        if let Some(w) = self.sweep_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// A connection that was not parked ended.
    pub fn connection_ended(&self) {
        self.unparked.set(self.unparked.get().saturating_sub(1));
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.get()
    }

    /// Ready when there is an unparked connection, so the sweep can start an epoch.
    pub fn poll_sweep_needed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.unparked.get() > 0 {
            Poll::Ready(())
        } else {
            *self.sweep_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    pub fn next_epoch(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
    }

    /// Stops the watcher thread and waits for it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(watcher) = self.watcher.borrow_mut().take() {
            let _ = watcher.join();
        }
    }
}

impl Drop for ParkingLot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The watcher thread: reports readable parked sockets to the shard until told to stop.
fn watch(epoll: OwnedFd, shard: ShardId, mesh: Arc<Mesh>, stopping: Arc<AtomicBool>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    loop {
        // SAFETY: `events` has room for EVENTS_PER_WAIT entries.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS_PER_WAIT as i32,
                -1,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(shard = shard.0, "parked connections cannot be watched: {e}");
            return;
        }
        let tokens: Vec<u64> = events[..n as usize]
            .iter()
            .map(|e| e.u64)
            .filter(|&t| t != STOP_TOKEN)
            .collect();
        if stopping.load(Ordering::Acquire) {
            return;
        }
        if tokens.is_empty() {
            continue;
        }
        let mut msg = ShardMessage::Readable(tokens);
        // A full inbox drains within microseconds unless the shard is stopping.
        while let Err(refused) = mesh.try_send(shard, msg) {
            let Refused::Full(back) = refused else {
                return;
            };
            if stopping.load(Ordering::Acquire) {
                return;
            }
            msg = back;
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Wraps a syscall result that is a new descriptor.
///
/// # Safety
/// `fd`, when not negative, must be a descriptor nobody else owns.
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn epoll_ctl(epoll: &OwnedFd, op: i32, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_slot_and_generation() {
        let id = SubscriberId {
            durable: false,
            shard: ShardId(3),
            slot: 70_000,
            generation: 0xdead_beef,
        };
        assert_eq!(slot_of(token(id)), (70_000, 0xdead_beef));
        assert_ne!(token(id), STOP_TOKEN);
    }
}
