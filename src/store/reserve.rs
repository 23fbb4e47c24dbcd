//! The zeros a log's file is extended with ahead of its records, so that a commit only
//! overwrites blocks the file already has (see `writer`: an O_DSYNC write that grows the file
//! is a file-system journal commit too).
//!
//! The file is kept up to a chunk (1/4 of its size, from 64 KiB up to 8 MiB) ahead of the
//! log, extended in the background: once less than half a chunk of zeros is left ahead of the
//! last commit, zeros up to a chunk beyond it are written while commits go on below them. A commit waits only when it would run past
//! the zeros (a log growing faster than the disk extends it, or one large snapshot commit).
//! Measured before this was done in the background: at 250k queued messages/s a commit
//! stopped for 25-60 ms once per 8 MiB, about every 200 ms.
//!
//! The zeros are written through a second descriptor of the file without O_DSYNC, 1 MiB per
//! write, then synced once: one cache flush per chunk instead of one per MiB. Zero writes
//! (at and beyond `reserved`) and commits (below it) never touch the same blocks; `reserved`
//! moves only once the zeros are durable.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

use tracing::warn;

use super::log_io::{pwrite_all, BlockBuf};

/// Bounds of the zeros written ahead of the log at a time.
const RESERVE_MIN: u64 = 64 * 1024;
const RESERVE_MAX: u64 = 8 << 20;
/// Largest single write of zeros.
const ZERO_WRITE: usize = 1 << 20;

/// How far a log's file holds zeros ahead of its records, and the extension under way.
pub struct Reservation {
    /// The file, opened O_DIRECT without O_DSYNC (see the module docs).
    fd: Arc<OwnedFd>,
    path: PathBuf,
    align: u64,
    /// The file's size known durable: the zeros reach this far.
    reserved: Cell<u64>,
    /// Whether an extension is being written.
    extending: Cell<bool>,
    /// The commit waiting for that extension.
    waiter: RefCell<Option<Waker>>,
    /// Whether the last extension in the background failed: none is tried again (nor its
    /// failure logged again after every commit) until one for a commit succeeds.
    failed: Cell<bool>,
}

impl Reservation {
    /// For the log file at `path`, whose size is `size` (blocks of `align` bytes).
    pub fn open(path: &Path, size: u64, align: u64) -> io::Result<Rc<Reservation>> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        Ok(Rc::new(Reservation {
            fd: Arc::new(OwnedFd::from(file)),
            path: path.to_path_buf(),
            align,
            reserved: Cell::new(size - size % align),
            extending: Cell::new(false),
            waiter: RefCell::new(None),
            failed: Cell::new(false),
        }))
    }

    pub fn reserved(&self) -> u64 {
        self.reserved.get()
    }

    fn chunk(&self) -> u64 {
        (self.reserved.get() / 4).clamp(RESERVE_MIN, RESERVE_MAX)
    }

    fn align_up(&self, v: u64) -> u64 {
        v.div_ceil(self.align) * self.align
    }

    /// Makes sure the file holds durable zeros up to `end` (aligned), where the commit about
    /// to be written ends: at once if it does, else once the extension under way is done,
    /// else by extending it a chunk beyond `end` now. Zeros go only beyond `end`: the blocks
    /// the commit covers get their data directly (a snapshot is not written twice).
    pub async fn cover(&self, end: u64) -> io::Result<()> {
        while end > self.reserved.get() && self.extending.get() {
            std::future::poll_fn(|cx| {
                if self.extending.get() {
                    *self.waiter.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
        if end <= self.reserved.get() {
            return Ok(());
        }
        let target = self.align_up(end + self.chunk());
        self.extending.set(true);
        let extended = write_zeros(self.fd.clone(), end, target).await;
        self.extending.set(false);
        extended?;
        self.reserved.set(target);
        self.failed.set(false);
        Ok(())
    }

    /// Whether an extension is being written.
    pub fn is_extending(&self) -> bool {
        self.extending.get()
    }

    /// Resolves once no extension is being written. A retired log's commit task waits for
    /// this before it ends, so that its executor never stops with zeros still being written
    /// on the blocking thread (glommio's thread panics when its answer has nowhere to go).
    pub async fn settled(&self) {
        std::future::poll_fn(|cx| {
            if self.extending.get() {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// After a commit that ended at `end`: once less than half a chunk of zeros is left
    /// beyond it, starts writing zeros up to a chunk beyond it in the background (as far as
    /// `cover` would: the file is never more than a chunk ahead of the log). Must run on a
    /// glommio executor.
    pub fn extend_ahead(self: &Rc<Self>, end: u64) {
        let reserved = self.reserved.get();
        if self.extending.get()
            || self.failed.get()
            || reserved.saturating_sub(end) >= self.chunk() / 2
        {
            return;
        }
        let target = self.align_up(end + self.chunk());
        self.extending.set(true);
        let this = self.clone();
        glommio::spawn_local(async move {
            match write_zeros(this.fd.clone(), reserved.max(end), target).await {
                Ok(()) => this.reserved.set(target),
                // The commit that runs into the end of the zeros extends the file itself,
                // and reports a lasting failure as its own.
                Err(e) => {
                    this.failed.set(true);
                    warn!(log = %this.path.display(), "cannot extend the log file ahead of its records: {e}");
                }
            }
            this.extending.set(false);
            if let Some(waker) = this.waiter.take() {
                waker.wake();
            }
        })
        .detach();
    }
}

/// Zeros from `from` to `to` (both aligned), then one sync, on the executor's blocking thread.
async fn write_zeros(fd: Arc<OwnedFd>, from: u64, to: u64) -> io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            static ZEROS: OnceLock<BlockBuf> = OnceLock::new();
            let zeros = ZEROS.get_or_init(|| BlockBuf::zeroed(ZERO_WRITE));
            let mut at = from;
            while at < to {
                let len = ((to - at) as usize).min(ZERO_WRITE);
                pwrite_all(&fd, &zeros.as_slice()[..len], at)?;
                at += len as u64;
            }
            // SAFETY: fdatasync on a descriptor this closure keeps open.
            if unsafe { libc::fdatasync(fd.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    fn temp_file(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("surgemq-reserve-{name}-{}", std::process::id()));
        std::fs::File::create(&path).unwrap();
        path
    }

    fn on_executor<Fut: std::future::Future<Output = ()> + 'static>(
        f: impl FnOnce() -> Fut + Send + 'static,
    ) {
        LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn a_commit_past_the_zeros_extends_the_file_a_chunk_beyond_it() {
        let path = temp_file("inline");
        let p = path.clone();
        on_executor(move || async move {
            let r = Reservation::open(&p, 0, 512).unwrap();
            r.cover(4096).await.unwrap();
            assert_eq!(r.reserved(), 4096 + RESERVE_MIN);
            assert_eq!(size(&p), 4096 + RESERVE_MIN);
            // Within the zeros: nothing written.
            r.cover(8192).await.unwrap();
            assert_eq!(size(&p), 4096 + RESERVE_MIN);
        });
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn zeros_are_written_ahead_once_less_than_half_a_chunk_is_left() {
        let path = temp_file("ahead");
        let p = path.clone();
        on_executor(move || async move {
            let r = Reservation::open(&p, 0, 512).unwrap();
            r.cover(512).await.unwrap();
            let first = r.reserved();
            // Half a chunk left: nothing to do.
            r.extend_ahead(first - RESERVE_MIN / 2);
            assert!(!r.extending.get());
            // Less: zeros up to a chunk beyond the commit, written in the background.
            let end = first - 1024;
            r.extend_ahead(end);
            assert!(r.extending.get());
            r.settled().await;
            assert!(!r.extending.get());
            assert_eq!(r.reserved(), end + RESERVE_MIN);
            assert_eq!(size(&p), end + RESERVE_MIN);
        });
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_commit_past_the_zeros_waits_for_the_extension_under_way() {
        let path = temp_file("wait");
        let p = path.clone();
        on_executor(move || async move {
            let r = Reservation::open(&p, 0, 512).unwrap();
            r.cover(512).await.unwrap();
            let first = r.reserved();
            r.extend_ahead(first);
            // Past the zeros, within the extension under way: covered by it, not by one of
            // its own (which would end a chunk beyond this commit instead).
            r.cover(first + 4096).await.unwrap();
            assert!(!r.extending.get());
            assert_eq!(r.reserved(), first + RESERVE_MIN);
            assert_eq!(size(&p), first + RESERVE_MIN);
        });
        let _ = std::fs::remove_file(&path);
    }
}
