//! One broker per data directory: an exclusive `flock` on `DIR/lock`, which holds the pid of
//! the broker that has it. The kernel drops the lock when that process ends, however it ends
//! (kill -9 included), so a stale lock file never keeps the next broker out; a second broker
//! started while the first runs is refused with the first one's pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock, or says which process has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(StoreError::io(&path, err));
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write_pid(&mut file).map_err(|e| StoreError::io(&path, e))?;
        Ok(DataDirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "surgemq-lock-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = temp_dir("twice");
        let first = DataDirLock::acquire(&dir).expect("first lock");
        let text = std::fs::read_to_string(dir.join("lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock is per open file: a second open in the same process is refused like
        // another process would be.
        match DataDirLock::acquire(&dir) {
            Err(StoreError::Locked { pid, dir: d }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(d, dir);
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let message = DataDirLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(message.contains(&dir.display().to_string()), "{message}");
        drop(first);
        DataDirLock::acquire(&dir).expect("free again once dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_lock_file_does_not_keep_a_broker_out() {
        let dir = temp_dir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        // What a broker killed with -9 leaves: the file with its pid, but no lock.
        std::fs::write(dir.join("lock"), "999999\n").unwrap();
        let _lock = DataDirLock::acquire(&dir).expect("a stale file is no lock");
        let text = std::fs::read_to_string(dir.join("lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
