//! With `--data-dir`, acknowledged and replaced data is compacted away: under message,
//! retained and session churn the logs stay near the size of what is live, and what is live
//! survives the compactions and a restart. The compaction threshold is lowered to 64 KiB so a
//! few megabytes of traffic cross it many times.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::BrokerConfig;

const THRESHOLD: u64 = 64 << 10;

fn config(dir: &Path, shards: usize) -> BrokerConfig {
    BrokerConfig {
        shards,
        data_dir: Some(dir.to_path_buf()),
        compact_after_bytes: THRESHOLD,
        ..test_config()
    }
}

/// Every file under `dir` whose name has `.log` in it (`shard-N.log`, and `.log.next` during
/// a compaction), with its metadata.
fn logs(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(".log") {
                found.push((path, entry.metadata().unwrap()));
            }
        }
    }
    found
}

/// Bytes in the data directory's logs.
fn log_bytes(dir: &Path) -> u64 {
    logs(dir).iter().map(|(_, m)| m.len()).sum()
}

#[test]
fn logs_stay_bounded_under_churn_and_keep_what_is_live() {
    let dir = std::env::temp_dir().join(format!("surgemq-compaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Broker::with_config(config(&dir, 2));
    let (sub_id, pub_id) = broker.ids_apart("sub", "pub");
    let offline_id = broker.id_on("offline", 0);

    // A persistent subscriber that stays, one that goes offline and keeps a queue.
    let mut sub = broker.connect_with(&ConnectBuilder::new(&sub_id).clean(false));
    sub.subscribe(1, &[("churn/#", 1)]);
    let mut offline = broker.connect_with(&ConnectBuilder::new(&offline_id).clean(false));
    offline.subscribe(1, &[("kept/#", 1)]);
    offline.disconnect();
    let mut publisher = broker.connect(&pub_id);

    let payload = [b'x'; 200];
    let mut id = 0u16;
    let mut next_id = || {
        id = id % 60_000 + 1;
        id
    };
    for round in 0..40 {
        // 100 messages through the live subscriber, acknowledged: garbage once completed.
        for _ in 0..100 {
            let pid = next_id();
            publisher.send(&publish("churn/t", &payload, 1, false, false, pid));
            publisher.expect_bytes(&puback(pid));
        }
        for _ in 0..100 {
            let (p, _) = sub.next_publish();
            sub.ack(&p);
        }
        // Retained churn: ten topics replaced over and over, one cleared each round.
        for k in 0..10 {
            let body = format!("r{round}-{k}");
            publisher.publish1(&format!("ret/{k}"), body.as_bytes(), true, next_id());
        }
        publisher.publish1(&format!("ret/gone{round}"), b"x", true, next_id());
        publisher.publish1(&format!("ret/gone{round}"), b"", true, next_id());
        // Session churn: a persistent session begun, then taken over by a clean one.
        let churn_id = broker.id_on(&format!("churn{round}"), round % 2);
        let mut c = broker.connect_with(&ConnectBuilder::new(&churn_id).clean(false));
        c.subscribe(1, &[("churn/#", 1)]);
        c.disconnect();
        broker.connect(&churn_id).disconnect();
    }
    // What must survive: three messages queued for the offline session.
    for n in 0..3u8 {
        publisher.publish1("kept/t", &[b'k', n], false, next_id());
    }

    // Each shard compacts within a few checks of crossing its threshold.
    let written = 40 * 100 * (payload.len() as u64 + 40);
    let deadline = Instant::now() + Duration::from_secs(10);
    let bound = 4 * THRESHOLD;
    while log_bytes(&dir) > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let size = log_bytes(&dir);
    assert!(
        size <= bound,
        "logs hold {size} bytes after about {written} written (bound {bound})"
    );
    publisher.disconnect();
    sub.disconnect();
    let metrics = broker.shutdown();
    let compactions: u64 = metrics.iter().map(|m| m.compactions).sum();
    assert!(compactions >= 2, "only {compactions} compactions");

    // Restart (1 shard now): everything live is there, nothing that was dropped came back.
    let broker = Broker::with_config(config(&dir, 1));
    let mut offline = broker.resume(&ConnectBuilder::new(&offline_id).clean(false));
    for n in 0..3u8 {
        let (p, _) = offline.next_publish();
        assert_eq!(&p.payload[..], &[b'k', n]);
        offline.ack(&p);
    }
    let mut sub = broker.resume(&ConnectBuilder::new(&sub_id).clean(false));
    sub.expect_nothing();
    let mut reader = broker.connect("reader");
    let frames = reader.subscribe_expecting(1, &[("ret/#", 0)], 10);
    let mut got: Vec<String> = frames
        .iter()
        .map(|f| match parse(f) {
            surgemq::protocol::Packet::Publish(p) => {
                format!("{}={}", p.topic, String::from_utf8_lossy(&p.payload))
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect();
    got.sort();
    let want: Vec<String> = (0..10).map(|k| format!("ret/{k}=r39-{k}")).collect();
    assert_eq!(got, want);
    reader.expect_nothing();
    // The churned sessions ended: a persistent connect finds nothing (Session Present 0).
    for round in [3, 38] {
        let churned = id_on_shard(&format!("churn{round}"), round % 2, 2);
        broker.connect_with(&ConnectBuilder::new(&churned).clean(false));
    }
    drop(sub);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shard's log file (one shard) and its inode: a compaction renames its successor over it.
fn log_inode(dir: &Path) -> (PathBuf, u64) {
    use std::os::unix::fs::MetadataExt;
    logs(dir)
        .into_iter()
        .find(|(path, _)| path.extension().is_some_and(|e| e == "log"))
        .map(|(path, m)| (path, m.ino()))
        .unwrap_or_else(|| panic!("no log in {}", dir.display()))
}

/// A log that grows because a queue for an absent client grows is all live: a snapshot would
/// write it again and drop nothing, so it is not compacted however far it passes the
/// threshold. Once the client has taken and acknowledged the messages, it is.
#[test]
fn a_log_that_is_all_live_is_not_copied_again() {
    let dir = std::env::temp_dir().join(format!("surgemq-compaction-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Broker::with_config(config(&dir, 1));
    let mut away = broker.connect_with(&ConnectBuilder::new("away").clean(false));
    away.subscribe(1, &[("kept/#", 1)]);
    away.disconnect();
    let mut publisher = broker.connect("pub");
    let (path, inode) = log_inode(&dir);
    // As many as the queue takes (the tests' limit is 1,000 messages).
    let payload = [b'q'; 500];
    const MESSAGES: u16 = 1_000;
    for pid in 1..=MESSAGES {
        publisher.send(&publish("kept/t", &payload, 1, false, false, pid));
        publisher.expect_bytes(&puback(pid));
    }
    // Seven times the threshold, live; a few of the shard's checks (every 250 ms) later, the
    // log is still the one it started with.
    let size = log_bytes(&dir);
    assert!(size > 6 * THRESHOLD, "{size} bytes");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        log_inode(&dir),
        (path.clone(), inode),
        "compacted while all live"
    );

    // Taken and acknowledged: dead, and compacted away.
    let mut away = broker.resume(&ConnectBuilder::new("away").clean(false));
    for _ in 0..MESSAGES {
        let (p, _) = away.next_publish();
        away.ack(&p);
    }
    away.disconnect();
    // The compacted log: a few records, and the file's 64 KiB of zeros ahead of them.
    let small = THRESHOLD + 4096;
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_bytes(&dir) > small && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log_bytes(&dir) <= small, "{} bytes", log_bytes(&dir));
    assert_ne!(log_inode(&dir).1, inode, "not compacted once dead");
    publisher.disconnect();
    let compactions: u64 = broker.shutdown().iter().map(|m| m.compactions).sum();
    assert_eq!(compactions, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
