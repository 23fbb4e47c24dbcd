//! What the in-process crash tests share: a directory per test, a broker whose log commits
//! can be made to fail on one shard as on a full disk (the storage layer's fault hook), and a
//! crash taken as the data directory's bytes (a copy while the broker runs: what SIGKILL
//! leaves, since the log is written with direct I/O and a failing commit writes nothing), to
//! start another broker from.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::common::Broker;

/// A test's directory under the system's temporary one, removed at the end.
pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    /// `name` is unique among the tests of one binary (binaries differ by process id).
    pub fn new(name: &str) -> Dirs {
        let root =
            std::env::temp_dir().join(format!("surgemq-fault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the test directory");
        Dirs { root }
    }

    /// Where the broker under test keeps its data.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A crash now: the bytes of `data` as SIGKILL would leave them, in a directory of their
    /// own to start again from.
    pub fn crash(&self, data: &Path) -> PathBuf {
        let image = self.root.join("image");
        copy_dir(data, &image);
        image
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A broker started with `full` as its fault counter (`BrokerConfig::full_disk_fault`); the
/// fault is cleared before it stops, so it can stop.
pub struct FaultyBroker {
    broker: Option<Broker>,
    full: Arc<AtomicU32>,
}

impl FaultyBroker {
    pub fn new(broker: Broker, full: Arc<AtomicU32>) -> FaultyBroker {
        FaultyBroker {
            broker: Some(broker),
            full,
        }
    }

    pub fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("running")
    }

    /// While full, the faulty shard's log commits fail (nothing it appends becomes durable).
    pub fn disk_full(&self, full: bool) {
        self.full
            .store(if full { u32::MAX } else { 0 }, Ordering::Relaxed);
    }
}

impl Drop for FaultyBroker {
    fn drop(&mut self) {
        self.disk_full(false);
        drop(self.broker.take());
    }
}
