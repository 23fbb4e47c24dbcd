//! The writes and syncs of a shard's log, done on the shard executor's blocking threads
//! (`spawn_blocking`), which may run on any CPU, instead of through the shard's io_uring.
//!
//! Why not io_uring: a write to a file opened O_DSYNC cannot finish without blocking (the data
//! and a cache flush must reach the disk), so io_uring hands it to an io-wq worker thread, and
//! such a worker is bound to the CPU of the thread that submitted it: the shard's own. When the
//! shard keeps that CPU busy (serving the very clients that wait for the commit), the worker
//! waits there for the scheduler to give it a turn. Measured on this 2-core machine with
//! `surgemq bench pair --qos 1 --persistent` and 2 pinned shards: a commit through io_uring
//! took 0.13 ms on one shard and 3.5 ms on the other, and the pair ran at 200k or 17k msgs/s
//! depending on which shard its log was on. Registering another CPU mask for the io-wq
//! (`IORING_REGISTER_IOWQ_AFF`) did not move the workers; a blocking thread, unpinned, goes
//! wherever a CPU is free, and the same pair runs at 170k-220k msgs/s on either shard
//! (perf/results/2026-11-30-log-commit-thread.md).
//!
//! The file stays the one glommio opened (O_DIRECT | O_DSYNC): writes go in whole blocks from
//! block-aligned memory, and one completed write is durable. The descriptor is duplicated and
//! shared (`Arc<OwnedFd>`) with each operation, so a write still running on the blocking
//! thread when its log is dropped never touches a closed (or reused) descriptor.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Alignment (and size) of the blocks a [`BlockBuf`] holds: a multiple of every logical block
/// size O_DIRECT asks for (512 or 4096 bytes).
pub const BLOCK: usize = 4096;

#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// Zeroed, block-aligned memory for an O_DIRECT write; `Send`, unlike glommio's DMA buffers.
pub struct BlockBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl BlockBuf {
    /// `len` zero bytes (`len` a multiple of the file's alignment), in whole blocks.
    pub fn zeroed(len: usize) -> BlockBuf {
        let mut blocks = Vec::with_capacity(len.div_ceil(BLOCK));
        blocks.resize_with(len.div_ceil(BLOCK), || Block([0; BLOCK]));
        BlockBuf { blocks, len }
    }

    /// `data` followed by zeros up to `len` (`len >= data.len()`, a multiple of the file's
    /// alignment), in this buffer's memory: a commit reuses the previous commit's buffer, so
    /// its pages are not faulted in and zeroed afresh each time (with hundreds of messages per
    /// commit, that was a tenth of a shard's time). Only the tail past `data` is zeroed.
    pub fn refill(&mut self, data: &[u8], len: usize) {
        debug_assert!(data.len() <= len);
        let blocks = len.div_ceil(BLOCK);
        if blocks > self.blocks.len() {
            self.blocks.resize_with(blocks, || Block([0; BLOCK]));
        } else {
            self.blocks.truncate(blocks);
        }
        self.len = len;
        let bytes = self.as_mut_slice();
        bytes[..data.len()].copy_from_slice(data);
        bytes[data.len()..].fill(0);
    }

    /// Bytes of memory this buffer holds.
    pub fn capacity(&self) -> usize {
        self.blocks.capacity() * BLOCK
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the blocks are `len.div_ceil(BLOCK) * BLOCK >= len` contiguous initialised
        // bytes (`Block` is a plain byte array), borrowed mutably with `self`.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), self.len) }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`, borrowed shared with `self`.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A log's descriptor for writing, shared with the blocking thread while it writes.
#[derive(Clone)]
pub struct LogFd(Arc<OwnedFd>);

impl LogFd {
    /// A duplicate of `fd` (same open file: same flags and offset-free writes).
    pub fn duplicate(fd: BorrowedFd<'_>) -> io::Result<LogFd> {
        Ok(LogFd(Arc::new(fd.try_clone_to_owned()?)))
    }

    /// Writes all of `buf` at `offset`, on the executor's blocking thread, and gives the
    /// buffer back for the next write. Must run on a glommio executor.
    pub async fn write_all_at(&self, buf: BlockBuf, offset: u64) -> (BlockBuf, io::Result<()>) {
        let fd = self.0.clone();
        glommio::executor()
            .spawn_blocking(move || {
                let written = pwrite_all(&fd, buf.as_slice(), offset);
                (buf, written)
            })
            .await
    }
}

pub(super) fn pwrite_all(fd: &OwnedFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: writes from a live buffer of `buf.len()` bytes to a descriptor we hold open.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        match n {
            n if n > 0 => {
                buf = &buf[n as usize..];
                offset += n as u64;
            }
            0 => return Err(io::Error::other("the disk took no bytes")),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_buffer_is_aligned_for_direct_io_and_zeroed() {
        let mut buf = BlockBuf::zeroed(3 * 512);
        assert_eq!(buf.as_mut_slice().len(), 1536);
        assert_eq!(buf.as_mut_slice().as_ptr() as usize % BLOCK, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        buf.as_mut_slice()[1535] = 7;
        assert_eq!(buf.as_slice()[1535], 7);
    }

    #[test]
    fn a_refilled_buffer_holds_only_the_new_data_then_zeros() {
        let mut buf = BlockBuf::zeroed(0);
        buf.refill(&[7; 600], 1024);
        assert_eq!(buf.as_slice().len(), 1024);
        // Shorter this time: what the last commit left beyond the new data must not reach
        // the disk as if it were records after the log's end.
        buf.refill(b"xy", 512);
        assert_eq!(buf.as_slice().len(), 512);
        assert_eq!(&buf.as_slice()[..2], b"xy");
        assert!(buf.as_slice()[2..].iter().all(|&b| b == 0));
        buf.refill(b"z", 1024);
        assert!(buf.as_slice()[1..].iter().all(|&b| b == 0));
        assert_eq!(buf.as_mut_slice().as_ptr() as usize % BLOCK, 0);
    }

    #[test]
    fn pwrite_all_writes_everything_at_its_offset() {
        let path = std::env::temp_dir().join(format!("surgemq-log-io-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = OwnedFd::from(file);
        pwrite_all(&fd, b"world", 6).unwrap();
        pwrite_all(&fd, b"hello ", 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        std::fs::remove_file(&path).unwrap();
    }
}
