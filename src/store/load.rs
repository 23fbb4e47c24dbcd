//! Loading a data directory at start: every shard log read back ([`read_log`]), its records
//! added up into an [`Image`], and the sessions and retained messages handed to the shards that
//! own them now. The shard count may have changed since the logs were written (`--shards`), so
//! ownership is decided again, by client id for sessions and by topic for retained messages,
//! and sessions get new numbers on their new shard.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::image::Image;
use super::record::Record;
use super::{read_log, StoreError};

/// The log file of shard `index` in `dir`.
pub fn log_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("shard-{index}.log"))
}

/// The shard logs in `dir`, in shard order (whatever shard count wrote them).
fn log_files(dir: &Path) -> Result<Vec<(usize, PathBuf)>, StoreError> {
    let mut logs: Vec<(usize, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("shard-")?.strip_suffix(".log")?.parse().ok());
        if let Some(index) = index {
            logs.push((index, path));
        }
    }
    logs.sort();
    Ok(logs)
}

/// Reads one log into an image. A record that does not parse or does not fit is an error
/// naming the file and the record's offset (the frame was intact, so this is no torn tail).
pub fn load_log(path: &Path) -> Result<Image, StoreError> {
    let mut image = Image::default();
    let mut failed = None;
    read_log(path, |offset, kind, body| {
        if failed.is_some() {
            return;
        }
        let applied = Record::decode(kind, Bytes::copy_from_slice(body))
            .map_err(|e| e.to_string())
            .and_then(|record| image.apply(record).map_err(|e| e.to_string()));
        if let Err(why) = applied {
            failed = Some((offset, why));
        }
    })?;
    match failed {
        Some((offset, why)) => Err(StoreError::Record {
            path: path.to_path_buf(),
            offset,
            why,
        }),
        None => Ok(image),
    }
}

/// Finishes or undoes compactions a crash interrupted: a compacted log (`shard-N.log.next`)
/// replaces its predecessor when its snapshot is whole (its `SnapshotEnd` record is there;
/// anything acknowledged after the switch to it came after that record), and is removed
/// otherwise (then nothing after the switch was acknowledged, and the old log has it all).
pub fn settle_compactions(dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let is_next = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".log.next"));
        if !is_next {
            continue;
        }
        let mut whole = false;
        read_log(&path, |_, kind, _| {
            whole |= kind == super::record::kind::SNAPSHOT_END;
        })?;
        let settled = if whole {
            std::fs::rename(&path, path.with_extension(""))
        } else {
            std::fs::remove_file(&path)
        };
        settled.map_err(|e| StoreError::io(&path, e))?;
    }
    Ok(())
}

/// Loads every shard log of `dir` and deals its state out to `shards` shards: `home` names
/// the shard that owns a client id or a topic.
pub fn load_dir(
    dir: &Path,
    shards: usize,
    home: impl Fn(&str) -> usize,
) -> Result<Vec<Image>, StoreError> {
    settle_compactions(dir)?;
    let mut images = Vec::new();
    for (index, path) in log_files(dir)? {
        images.push((index, load_log(&path)?));
    }
    // Before the shard indices the messages' origins name lose their meaning.
    let settled = super::qos2::settle(&mut images);
    if settled != Default::default() {
        tracing::info!(
            dropped = settled.dropped,
            forgotten = settled.forgotten,
            "incoming QoS 2 messages that were not yet accepted at the crash are dropped; their publishers send them again"
        );
    }
    let mut out: Vec<Image> = (0..shards).map(|_| Image::default()).collect();
    for (_, image) in images {
        for (_, session) in image.sessions {
            let to = &mut out[home(&session.client_id)];
            let number = to.next_session;
            to.next_session += 1;
            to.sessions.insert(number, session);
        }
        for (topic, retained) in image.retained {
            out[home(&topic)].retained.insert(topic, retained);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByteStr, QoS};
    use crate::store::frame::encode_frame;
    use bytes::BytesMut;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "surgemq-load-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_log(path: &Path, records: &[Record]) {
        let mut out = BytesMut::new();
        for r in records {
            let mut body = BytesMut::new();
            let kind = r.encode(&mut body);
            encode_frame(&mut out, kind, &body);
        }
        std::fs::write(path, &out).unwrap();
    }

    fn began(session: u64, client_id: &str) -> Record {
        Record::SessionBegan {
            session,
            client_id: ByteStr::from(client_id),
            username: None,
        }
    }

    fn retained(topic: &str) -> Record {
        Record::Retained {
            topic: ByteStr::from(topic),
            payload: Bytes::from_static(b"r"),
            qos: QoS::AtLeastOnce,
            extras: Default::default(),
        }
    }

    /// Which shard owns a name, for the tests: its first byte, modulo.
    fn by_first_byte(shards: usize) -> impl Fn(&str) -> usize {
        move |name: &str| name.as_bytes()[0] as usize % shards
    }

    #[test]
    fn logs_of_two_shards_are_dealt_out_to_three() {
        let dir = temp_dir("reshard");
        // Both old shards numbered their sessions from 0: the numbers collide on purpose.
        write_log(
            &log_path(&dir, 0),
            &[began(0, "a"), began(1, "b"), retained("x")],
        );
        write_log(&log_path(&dir, 1), &[began(0, "c"), retained("y")]);
        std::fs::write(dir.join("lock"), "1\n").unwrap(); // not a log: ignored
        let images = load_dir(&dir, 3, by_first_byte(3)).unwrap();
        let owners: Vec<Vec<String>> = images
            .iter()
            .map(|i| {
                i.sessions
                    .values()
                    .map(|s| s.client_id.to_string())
                    .collect()
            })
            .collect();
        // 'a' = 97 -> 1, 'b' = 98 -> 2, 'c' = 99 -> 0.
        assert_eq!(owners, [vec!["c"], vec!["a"], vec!["b"]]);
        assert!(images[0].retained.contains_key("x")); // 'x' = 120 -> 0
        assert!(images[1].retained.contains_key("y")); // 'y' = 121 -> 1
        for image in &images {
            assert_eq!(image.next_session, image.sessions.len() as u64);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_that_does_not_fit_names_file_and_offset() {
        let dir = temp_dir("misfit");
        let path = log_path(&dir, 0);
        write_log(
            &path,
            &[
                began(0, "a"),
                Record::Completed {
                    session: 0,
                    packet_id: 9,
                },
            ],
        );
        let err = load_dir(&dir, 1, |_| 0).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        // After the first frame: 8 header bytes, the kind, session (8), "a" (3), no user (1).
        assert!(err.contains("offset 21"), "{err}");
        assert!(err.contains("not in flight"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_directory_loads_empty_shards() {
        let dir = temp_dir("empty");
        let images = load_dir(&dir, 2, |_| 0).unwrap();
        assert_eq!(images.len(), 2);
        assert!(images
            .iter()
            .all(|i| i.sessions.is_empty() && i.retained.is_empty()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_compaction_cut_short_is_undone_and_a_whole_one_finished() {
        let clients = |images: &[Image]| -> Vec<String> {
            images[0]
                .sessions
                .values()
                .map(|s| s.client_id.to_string())
                .collect()
        };
        // The old log has "old"; the successor's snapshot has "kept", then "later" after it.
        let dir = temp_dir("compaction-whole");
        write_log(&log_path(&dir, 0), &[began(0, "old")]);
        let next = log_path(&dir, 0).with_extension("log.next");
        write_log(
            &next,
            &[began(0, "kept"), Record::SnapshotEnd, began(1, "later")],
        );
        assert_eq!(
            clients(&load_dir(&dir, 1, |_| 0).unwrap()),
            ["kept", "later"]
        );
        assert!(!next.exists(), "the successor took the old log's name");
        let _ = std::fs::remove_dir_all(&dir);

        // Without its SnapshotEnd the successor never counted: removed, the old log is used.
        let dir = temp_dir("compaction-cut");
        write_log(&log_path(&dir, 0), &[began(0, "old")]);
        let next = log_path(&dir, 0).with_extension("log.next");
        write_log(&next, &[began(0, "half")]);
        assert_eq!(clients(&load_dir(&dir, 1, |_| 0).unwrap()), ["old"]);
        assert!(!next.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
