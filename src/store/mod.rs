//! Durable state (`--data-dir`): the on-disk format and its pieces, free of broker types so
//! each is tested on its own. Each shard owns one append-only log of framed records
//! ([`frame`]) saying what changed ([`record`]), appended with group commit ([`writer`]), read
//! back at start by [`scan`] (torn tails cut off, damage refused with its offset), added up
//! into what to restore ([`image`]) and dealt out to the shards that own it now ([`load`]), in
//! a data directory one broker at a time may use ([`lock`]). The broker side is
//! `broker::journal` (what is written when), `broker::durability` (acknowledgements that wait
//! for it) and `broker::restore` (start-up).

pub mod frame;
pub mod image;
pub mod load;
pub mod lock;
pub mod log_io;
pub mod qos2;
pub mod record;
pub mod reserve;
pub mod scan;
pub mod writer;

use std::path::{Path, PathBuf};

pub use frame::{decode_frame, encode_frame, Frame};
pub use image::{Image, Inconsistent, StoredInflight, StoredMessage, StoredSession};
pub use load::{load_dir, load_log, log_path};
pub use lock::DataDirLock;
pub use record::{MessageExtras, Qos2Origin, Record, RecordError, SubscriptionExtras};
pub use scan::{scan, Damaged, Scanned, TornTail};
pub use writer::{LogWriter, Position};

/// Why the store cannot go on, naming the file (and the offset) concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {damage}; move the file away (or truncate it at that offset) to start without what follows")]
    Damaged { path: PathBuf, damage: Damaged },
    #[error("{path}: record at offset {offset}: {why}; move the file away (or truncate it at that offset) to start without what follows")]
    Record {
        path: PathBuf,
        offset: usize,
        why: String,
    },
    #[error("data directory {dir} is in use by another broker{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads the log at `path`: hands every intact record to `each` and cuts a torn tail off the
/// file, so the next record is appended right after the last intact one. Damage before intact
/// records stops with an error naming the file and offset.
pub fn read_log(path: &Path, each: impl FnMut(usize, u8, &[u8])) -> Result<Scanned, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let scanned = scan(&bytes, each).map_err(|damage| StoreError::Damaged {
        path: path.to_path_buf(),
        damage,
    })?;
    if scanned.valid_len < bytes.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        file.set_len(scanned.valid_len as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io(path, e))?;
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "surgemq-log-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_torn_tail_is_cut_off_the_file() {
        let mut log = BytesMut::new();
        encode_frame(&mut log, 1, b"kept");
        let whole = log.len();
        encode_frame(&mut log, 2, b"torn by the crash");
        let path = temp_file("torn", &log[..log.len() - 3]);
        let mut kinds = Vec::new();
        let scanned = read_log(&path, |_, kind, _| kinds.push(kind)).unwrap();
        assert_eq!(kinds, [1]);
        assert_eq!(scanned.valid_len, whole);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        // Read again: intact now, nothing to cut.
        assert_eq!(read_log(&path, |_, _, _| {}).unwrap().torn, None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn damage_is_a_one_line_error_naming_file_and_offset() {
        let mut log = BytesMut::new();
        encode_frame(&mut log, 1, b"first");
        encode_frame(&mut log, 2, b"second");
        encode_frame(&mut log, 3, b"third");
        let mut bytes = log.to_vec();
        bytes[16] ^= 1; // the second record starts at 14
        let path = temp_file("damaged", &bytes);
        let err = read_log(&path, |_, _, _| {}).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("offset 14"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // Nothing was cut: the file is left for the operator.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
        let _ = std::fs::remove_file(&path);
    }
}
