//! Shared subscriptions with `--data-dir`: a publisher's PUBACK waits until its message is
//! durable where it will be delivered from, also when the member first chosen cannot take it
//! and the message goes to another member on a third shard.
//!
//! Deterministic: the members are offline with room for one message, so the second message
//! for the first member is refused where it lives and goes to the other member, whose shard's
//! disk is full (the storage layer's fault hook, on that shard only). A crash at that moment is
//! taken as the data directory's bytes (a copy while the broker runs: what SIGKILL leaves, as
//! the log is written with direct I/O and a failing commit writes nothing) and started again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Long enough that a PUBACK sent without waiting would surely have arrived.
const MUST_WAIT: Duration = Duration::from_millis(800);
const SHARDS: usize = 3;
/// Where the second member lives, and whose disk fails.
const FULL_SHARD: usize = 2;

struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = std::env::temp_dir().join(format!(
            "surgemq-persistence-shared-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the test directory");
        Dirs { root }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The broker with the fault hook; the fault is cleared before it stops, so it can stop.
struct FaultyBroker {
    broker: Option<Broker>,
    full: Arc<AtomicU32>,
}

impl FaultyBroker {
    fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("running")
    }

    fn disk_full(&self, full: bool) {
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

fn start(data: &Path, full: Option<Arc<AtomicU32>>) -> Broker {
    Broker::with_config(surgemq::broker::BrokerConfig {
        shards: SHARDS,
        data_dir: Some(data.to_path_buf()),
        // Room for one message per offline member: the next one is refused where it lives.
        max_queued_messages: 1,
        full_disk_fault: full,
        full_disk_fault_shard: Some(FULL_SHARD),
        ..test_config()
    })
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

/// A new connection of a client whose home is `shard`, with `payload` published at QoS 1
/// (packet id 1) on `topic`.
fn publish_from(
    broker: &Broker,
    name: &str,
    shard: usize,
    topic: &str,
    payload: &[u8],
) -> RawClient {
    let mut p = broker.connect(&broker.id_on(name, shard));
    p.send(&publish(topic, payload, 1, false, false, 1));
    p
}

/// Whether the PUBACK of packet id 1 comes within [`MUST_WAIT`].
fn acked_soon(p: &mut RawClient) -> bool {
    match p.next_frame_within(MUST_WAIT) {
        None => false,
        Some(frame) => {
            assert_eq!(frame, puback(1), "not a PUBACK");
            true
        }
    }
}

/// Everything the session `id` finds queued when it comes back, acknowledged.
fn collect(broker: &Broker, id: &str, into: &mut Vec<Vec<u8>>) {
    let mut c = broker.resume(&ConnectBuilder::new(id).clean(false));
    while let Some(frame) = c.next_frame_within(Duration::from_millis(500)) {
        let Packet::Publish(p) = parse(&frame) else {
            panic!("{id}: expected PUBLISH, got {frame:02x?}");
        };
        c.ack(&p);
        into.push(p.payload.to_vec());
    }
    c.disconnect();
}

use surgemq::protocol::Packet;

#[test]
fn a_redispatched_shared_message_is_acknowledged_once_durable_where_it_went() {
    let dirs = Dirs::new("redispatch");
    let data = dirs.root.join("data");
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker {
        broker: Some(start(&data, Some(full.clone()))),
        full,
    };
    let broker = b.broker();
    // Two groups, each with a member on shard 1 and one on shard 2: every shard sees a group
    // in that order (by shard), so each shard's round robin starts with the member on 1.
    let members = |group: &str| {
        let first = broker.id_on(&format!("{group}-first"), 1);
        let second = broker.id_on(&format!("{group}-second"), FULL_SHARD);
        for id in [&first, &second] {
            let mut c = broker.connect_with(&ConnectBuilder::new(id).clean(false));
            c.subscribe(1, &[(&format!("$share/g/{group}/t"), 1)]);
            c.disconnect();
        }
        (first, second)
    };
    let (a_first, a_second) = members("a");
    let (b_first, b_second) = members("b");

    b.disk_full(true);
    // Group a: "1" from shard 1 fills the first member's room (its shard's disk is fine);
    // "2" from shard 0 goes to it too (shard 0's turn starts there), is refused on shard 1
    // and goes to the second member, on shard 2, whose disk is full.
    let mut p1 = publish_from(broker, "p1", 1, "a/t", b"1");
    p1.expect_bytes(&puback(1));
    let mut p2 = publish_from(broker, "p2", 0, "a/t", b"2");
    let acked2 = acked_soon(&mut p2);
    // Group b: "3" from shard 0 fills the first member's room; "4" from shard 1, where the
    // first member lives, is refused there and goes to the second member, on shard 2.
    let mut p3 = publish_from(broker, "p3", 0, "b/t", b"3");
    p3.expect_bytes(&puback(1));
    let mut p4 = publish_from(broker, "p4", 1, "b/t", b"4");
    let acked4 = acked_soon(&mut p4);

    // A crash now, and a start from what it left.
    let image = dirs.root.join("image");
    copy_dir(&data, &image);
    let acked: Vec<&[u8]> = [
        (&b"1"[..], true),
        (b"2", acked2),
        (b"3", true),
        (b"4", acked4),
    ]
    .into_iter()
    .filter(|(_, acked)| *acked)
    .map(|(payload, _)| payload)
    .collect();
    let mut delivered = Vec::new();
    {
        let restarted = start(&image, None);
        for id in [&a_first, &a_second, &b_first, &b_second] {
            collect(&restarted, id, &mut delivered);
        }
    }
    let lost: Vec<String> = acked
        .iter()
        .filter(|p| !delivered.iter().any(|d| d == *p))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?} (delivered after the restart: {delivered:?})"
    );
    assert!(
        !acked2 && !acked4,
        "PUBACK before the message was durable where it went (\"2\": {acked2}, \"4\": {acked4})"
    );

    // Once the disk takes writes again, the PUBACKs come and each member has its message.
    b.disk_full(false);
    p2.expect_bytes(&puback(1));
    p4.expect_bytes(&puback(1));
    for (id, payload) in [
        (&a_first, b"1"),
        (&a_second, b"2"),
        (&b_first, b"3"),
        (&b_second, b"4"),
    ] {
        let mut got = Vec::new();
        collect(broker, id, &mut got);
        assert_eq!(got, [payload.to_vec()], "{id}");
    }
}
