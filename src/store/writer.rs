//! Appending to a shard's log with group commit: records are appended to memory at once and
//! get a position; one commit task writes whatever has gathered and makes it durable in one go,
//! and everyone waiting for a position at or below the durable end is woken. So the disk sees
//! one sync per batch, not one per record. The file is opened and read through glommio (DMA
//! file, io_uring); the writes run on the executor's blocking threads, which may use any CPU
//! (see `log_io` for why, with measurements), so nothing blocks the executor either way.
//!
//! O_DIRECT writes go in whole aligned blocks. The last block is usually only partly filled:
//! it stays in memory and is written again, with what was added since, by the next commit.
//! Rewriting it puts the same bytes over its durable part, so a torn rewrite can only hurt
//! the new records after them, which `scan` then cuts off as a torn tail. The zeros that pad
//! a block read back as the end of the log.
//!
//! The file is opened with O_DSYNC, so a write is durable when it completes: one write per
//! commit, no separate `fdatasync`. Writes that grow the file would still make
//! every commit a journal commit of the file system (its size changes), so the file is
//! extended ahead of the log with zeros, in the background (see `reserve`): then a commit
//! only overwrites blocks the file already has, and costs one data write. The zeros read back
//! as the end of the log.
//!
//! A failed write or sync (a full disk, an I/O error) keeps everything in memory, is logged
//! once, and is retried; positions after it are not reported durable meanwhile, so whoever
//! waits for them (a publisher's acknowledgement) waits, and nothing is lost or reported
//! falsely as on disk.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use glommio::io::{DmaFile, OpenOptions};
use tracing::{error, info};

use super::frame::encode_frame;
use super::log_io::{BlockBuf, LogFd, BLOCK};
use super::reserve::Reservation;
use super::StoreError;

/// How long a failed commit waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// A position in a shard's journal: the byte offset just past a record, counted from the
/// `origin` of the file it is in (0 for a log opened at start; where the previous log ended for
/// one begun by compaction, so positions keep growing across files). A record is durable once
/// the log's durable position reaches its own.
pub type Position = u64;

/// A log open for appending. Shared by the shard's tasks (`Rc`); see the module docs.
pub struct LogWriter {
    /// Opened by glommio (O_DIRECT | O_DSYNC), read through it at start.
    file: DmaFile,
    /// The same file, written on the executor's blocking thread (see `log_io`).
    fd: LogFd,
    path: PathBuf,
    align: u64,
    /// Bytes from `base` to the end of what was appended: the partial block already on disk,
    /// then everything not yet written.
    pending: RefCell<BytesMut>,
    /// Offset of `pending[0]` in the file, a multiple of `align`.
    base: Cell<u64>,
    /// The position of the file's first byte (see [`Position`]).
    origin: Cell<Position>,
    /// Set by [`LogWriter::retire`]: the commit task ends once everything is durable.
    retired: Cell<bool>,
    /// End of everything appended, and of everything known to be on disk.
    appended: Cell<Position>,
    durable: Cell<Position>,
    /// Tasks waiting for a position to become durable.
    waiters: RefCell<Vec<(Position, Waker)>>,
    /// The commit task, asleep while nothing waits to be written.
    committer: RefCell<Option<Waker>>,
    /// Whether the last commit failed (its error is logged once, not per retry).
    failing: Cell<bool>,
    commits: Cell<u64>,
    /// Commits still to fail with ENOSPC before writing (see [`LogWriter::inject_full_disk`]).
    injected_failures: RefCell<Arc<AtomicU32>>,
    /// Pause after each commit (see [`LogWriter::set_commit_interval`]).
    commit_interval: Cell<Duration>,
    /// Zeros beyond the log, written ahead (see `reserve`).
    reservation: Rc<Reservation>,
    /// The last commit's write buffer, kept for the next (see [`BlockBuf::refill`]).
    spare: RefCell<Option<BlockBuf>>,
}

/// A pending buffer with more room than this, and mostly empty, is replaced by a small one.
const SHRINK_ABOVE: usize = 4 << 20;

impl LogWriter {
    /// Opens (or creates) the log at `path` for appending after its first `valid_len` bytes:
    /// what [`super::read_log`] found intact. Must run on a glommio executor.
    pub async fn open(path: &Path, valid_len: u64) -> Result<Rc<LogWriter>, StoreError> {
        let io = |e: glommio::GlommioError<()>| StoreError::io(path, std::io::Error::from(e));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(path)
            .await
            .map_err(io)?;
        let size = file.file_size().await.map_err(io)?;
        let align = file.alignment();
        if align > BLOCK as u64 || BLOCK as u64 % align != 0 {
            let e = std::io::Error::other(format!("unsupported block size {align} for O_DIRECT"));
            return Err(StoreError::io(path, e));
        }
        // SAFETY: `file` owns the descriptor and outlives this borrow; the duplicate is ours.
        let fd = LogFd::duplicate(unsafe { BorrowedFd::borrow_raw(file.as_raw_fd()) })
            .map_err(|e| StoreError::io(path, e))?;
        let base = file.align_down(valid_len);
        let mut pending = BytesMut::new();
        if valid_len > base {
            let block = file
                .read_at_aligned(base, align as usize)
                .await
                .map_err(io)?;
            pending.extend_from_slice(&block[..(valid_len - base) as usize]);
        }
        Ok(Rc::new(LogWriter {
            file,
            fd,
            path: path.to_path_buf(),
            align,
            pending: RefCell::new(pending),
            base: Cell::new(base),
            origin: Cell::new(0),
            retired: Cell::new(false),
            appended: Cell::new(valid_len),
            durable: Cell::new(valid_len),
            waiters: RefCell::new(Vec::new()),
            committer: RefCell::new(None),
            failing: Cell::new(false),
            commits: Cell::new(0),
            injected_failures: RefCell::new(Arc::new(AtomicU32::new(0))),
            commit_interval: Cell::new(Duration::ZERO),
            reservation: Reservation::open(path, size, align)
                .map_err(|e| StoreError::io(path, e))?,
            spare: RefCell::new(None),
        }))
    }

    /// Makes the positions of a log that has nothing in it yet start at `origin`.
    pub fn set_origin(&self, origin: Position) {
        assert_eq!(self.appended.get(), 0, "the log is not empty");
        assert!(self.pending.borrow().is_empty(), "the log is not empty");
        self.origin.set(origin);
        self.appended.set(origin);
        self.durable.set(origin);
    }

    /// Nothing more will be appended: the commit task ends once all is durable and no zeros
    /// are being written ahead of the log.
    pub fn retire(&self) {
        self.retired.set(true);
        if let Some(w) = self.committer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Appends a record; returns the position it is durable at (see [`LogWriter::poll_durable`]).
    pub fn append(&self, kind: u8, body: &[u8]) -> Position {
        let mut pending = self.pending.borrow_mut();
        let before = pending.len();
        encode_frame(&mut pending, kind, body);
        let end = self.appended.get() + (pending.len() - before) as u64;
        self.appended.set(end);
        if let Some(w) = self.committer.borrow_mut().take() {
            w.wake();
        }
        end
    }

    /// Ready once everything up to `position` is on disk.
    pub fn poll_durable(&self, position: Position, cx: &mut Context<'_>) -> Poll<()> {
        if self.durable.get() >= position {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        // A task polled again for the same position waits once, not once per poll.
        if !waiters
            .iter()
            .any(|(p, w)| *p == position && w.will_wake(cx.waker()))
        {
            waiters.push((position, cx.waker().clone()));
        }
        Poll::Pending
    }

    /// Resolves once everything up to `position` is on disk.
    pub async fn durable(&self, position: Position) {
        std::future::poll_fn(|cx| self.poll_durable(position, cx)).await
    }

    pub fn durable_position(&self) -> Position {
        self.durable.get()
    }

    /// The end of everything appended so far.
    pub fn appended_position(&self) -> Position {
        self.appended.get()
    }

    /// Makes the commit task wait this long after each commit, so more gathers per sync
    /// (`--sync-interval-ms`: acknowledgements then do not wait for the disk at all).
    pub fn set_commit_interval(&self, interval: Duration) {
        self.commit_interval.set(interval);
    }

    /// Commits (write + sync) so far.
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    /// The commit task: writes and syncs whatever gathered, one batch at a time, until the
    /// log is retired and all of it is durable.
    pub async fn run(self: Rc<Self>) {
        loop {
            let more = std::future::poll_fn(|cx| {
                if self.appended.get() > self.durable.get() {
                    Poll::Ready(true)
                } else if self.retired.get() {
                    Poll::Ready(false)
                } else {
                    *self.committer.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !more {
                self.reservation.settled().await;
                return;
            }
            match self.commit().await {
                Ok(()) => {
                    if self.failing.replace(false) {
                        info!(log = %self.path.display(), "log writes succeed again");
                    }
                    let pause = self.commit_interval.get();
                    if !pause.is_zero() {
                        glommio::timer::sleep(pause).await;
                    }
                }
                Err(e) => {
                    if !self.failing.replace(true) {
                        error!(log = %self.path.display(), "cannot write the log, acknowledgements wait until it works again: {e}");
                    }
                    glommio::timer::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Fault injection: the next `commits` commits fail as on a full disk (ENOSPC), before
    /// anything is written; the commit task then retries as it would for a real one.
    pub fn inject_full_disk(&self, commits: u32) {
        self.injected_failures
            .borrow()
            .store(commits, Ordering::Relaxed);
    }

    /// Fault injection from another thread (a test driving a whole broker): commits fail as
    /// on a full disk while `counter` is above 0, each failure counting it down.
    pub fn use_fault_counter(&self, counter: Arc<AtomicU32>) {
        *self.injected_failures.borrow_mut() = counter;
    }

    /// Whether the last commit failed and the log is waiting to retry.
    pub fn is_failing(&self) -> bool {
        self.failing.get()
    }

    /// Writes everything appended so far (in whole blocks) and syncs it.
    async fn commit(&self) -> std::io::Result<()> {
        let injected = self.injected_failures.borrow().clone();
        if let Some(left) = injected.load(Ordering::Relaxed).checked_sub(1) {
            injected.store(left, Ordering::Relaxed);
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let end = self.appended.get();
        let end_offset = end - self.origin.get();
        let base = self.base.get();
        let len = (end_offset - base) as usize;
        self.reservation
            .cover(self.file.align_up(end_offset))
            .await?;
        let mut buf = self.spare.take().unwrap_or_else(|| BlockBuf::zeroed(0));
        buf.refill(
            &self.pending.borrow()[..len],
            self.file.align_up(len as u64) as usize,
        );
        let (buf, written) = self.fd.write_all_at(buf, base).await;
        // A bulk commit's buffer (a compaction's snapshot) is not kept.
        if buf.capacity() <= SHRINK_ABOVE {
            *self.spare.borrow_mut() = Some(buf);
        }
        written?;
        self.reservation
            .extend_ahead(self.file.align_up(end_offset));
        // O_DSYNC: the write completed, so it is durable.
        self.commits.set(self.commits.get() + 1);
        // Whole blocks are done; the partial last one stays to be written again.
        let done = self.file.align_down(end_offset) - base;
        {
            let mut pending = self.pending.borrow_mut();
            // Measured before `advance`, after which `capacity` counts only what lies beyond.
            let room = pending.capacity();
            pending.advance(done as usize);
            // A bulk commit (a compaction's snapshot: the whole state at once) leaves a buffer
            // as large as the state behind; `advance` keeps all of it. Give it back.
            if room > SHRINK_ABOVE && pending.len() < room / 4 {
                *pending = BytesMut::from(&pending[..]);
            }
        }
        self.base.set(base + done);
        self.durable.set(end);
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|(position, waker)| {
            if *position <= end {
                waker.wake_by_ref();
                false
            } else {
                true
            }
        });
        Ok(())
    }

    pub fn alignment(&self) -> u64 {
        self.align
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read_log;
    use glommio::LocalExecutorBuilder;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "surgemq-writer-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ))
    }

    /// Runs `f` on a glommio executor of its own.
    fn on_executor<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor starts")
            .join()
            .expect("executor ends");
    }

    fn records(path: &Path) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        read_log(path, |_, kind, body| got.push((kind, body.to_vec()))).unwrap();
        got
    }

    #[test]
    fn records_are_durable_in_few_commits_and_read_back_in_order() {
        let path = temp_path("group");
        let p = path.clone();
        on_executor(move || async move {
            let log = LogWriter::open(&p, 0).await.unwrap();
            let task = glommio::spawn_local(log.clone().run());
            let mut last = 0;
            for i in 0..1000u32 {
                last = log.append((i % 7) as u8, format!("record {i}").as_bytes());
            }
            log.durable(last).await;
            assert_eq!(log.durable_position(), last);
            // A thousand records, appended in one go: a handful of commits, not one each.
            assert!(log.commits() <= 3, "{} commits", log.commits());
            log.retire();
            task.await;
        });
        let got = records(&path);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], ((999 % 7) as u8, b"record 999".to_vec()));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_bulk_commit_gives_its_buffer_back() {
        let path = temp_path("bulk");
        let p = path.clone();
        on_executor(move || async move {
            let log = LogWriter::open(&p, 0).await.unwrap();
            let task = glommio::spawn_local(log.clone().run());
            // 16 MiB appended at once, as a compaction's snapshot is.
            let record = vec![7u8; 4096];
            let mut last = 0;
            for _ in 0..4096 {
                last = log.append(1, &record);
            }
            log.durable(last).await;
            // And it goes on from the partial block it kept. (`capacity` counts from where the
            // buffer starts now: only a new append shows how much it still holds.)
            let after = log.append(2, b"after");
            let kept = log.pending.borrow().capacity();
            assert!(kept < 1 << 20, "{kept} bytes kept after the commit");
            log.durable(after).await;
            log.retire();
            task.await;
        });
        let got = records(&path);
        assert_eq!(got.len(), 4097);
        assert_eq!(got[4096], (2, b"after".to_vec()));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_reopened_log_goes_on_after_its_last_record_inside_a_partial_block() {
        let path = temp_path("reopen");
        for round in 0..3u8 {
            let p = path.clone();
            let valid = if round == 0 {
                0
            } else {
                read_log(&path, |_, _, _| {}).unwrap().valid_len as u64
            };
            on_executor(move || async move {
                let log = LogWriter::open(&p, valid).await.unwrap();
                let task = glommio::spawn_local(log.clone().run());
                let mut last = 0;
                for i in 0..10u8 {
                    last = log.append(round, &[i; 100]);
                    // One commit per record here: the partial block is written again each time.
                    log.durable(last).await;
                }
                assert_eq!(log.durable_position(), last);
                log.retire();
                task.await;
            });
        }
        let got = records(&path);
        assert_eq!(got.len(), 30);
        for (n, (kind, body)) in got.iter().enumerate() {
            assert_eq!(*kind as usize, n / 10);
            assert_eq!(body, &vec![(n % 10) as u8; 100]);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_full_disk_holds_durability_back_loses_nothing_and_recovers_by_itself() {
        let path = temp_path("enospc");
        let p = path.clone();
        on_executor(move || async move {
            let log = LogWriter::open(&p, 0).await.unwrap();
            let task = glommio::spawn_local(log.clone().run());
            let first = log.append(1, b"before");
            log.durable(first).await;
            log.inject_full_disk(3);
            let second = log.append(2, b"while the disk is full");
            // Three failed commits, 100 ms apart: not durable for a while, and says so.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert!(log.is_failing());
            assert_eq!(log.durable_position(), first);
            let third = log.append(3, b"appended meanwhile");
            let start = std::time::Instant::now();
            log.durable(third).await;
            assert!(
                start.elapsed() >= Duration::from_millis(150),
                "{:?}",
                start.elapsed()
            );
            assert!(!log.is_failing(), "recovered");
            assert!(log.durable_position() >= second);
            log.retire();
            task.await;
        });
        let kinds: Vec<u8> = records(&path).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [1, 2, 3]);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_retired_logs_commit_task_ends_only_once_the_zeros_ahead_are_written() {
        let path = temp_path("settle");
        let p = path.clone();
        on_executor(move || async move {
            let log = LogWriter::open(&p, 0).await.unwrap();
            let task = glommio::spawn_local(log.clone().run());
            let last = log.append(1, b"record");
            log.durable(last).await;
            // Zeros written ahead in the background, as after a commit near their end. An
            // executor that stopped now would leave them on its blocking thread, which
            // panics when its answer has nowhere to go.
            let reservation = log.reservation.clone();
            reservation.extend_ahead(reservation.reserved());
            assert!(reservation.is_extending());
            log.retire();
            task.await;
            assert!(!reservation.is_extending());
        });
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn nothing_is_durable_before_its_commit() {
        let path = temp_path("order");
        let p = path.clone();
        on_executor(move || async move {
            let log = LogWriter::open(&p, 0).await.unwrap();
            let position = log.append(1, b"not yet");
            assert_eq!(log.durable_position(), 0, "no commit task has run");
            let task = glommio::spawn_local(log.clone().run());
            log.durable(position).await;
            assert_eq!(log.commits(), 1);
            log.retire();
            task.await;
        });
        let _ = std::fs::remove_file(&path);
    }
}
