//! Starting with `--data-dir`: the state the logs kept becomes live again before the first
//! client is accepted, and the logs are rewritten compacted.
//!
//! The directory holds `lock` (one broker at a time), `CURRENT` (the generation in use) and
//! `gen-G/shard-N.log`. At start the broker loads generation G with whatever shard count wrote
//! it ([`crate::store::load_dir`] deals sessions and retained topics out to the shards that own
//! them now), and each shard writes what it got as the first records of a fresh log in
//! generation G + 1, then keeps appending there. Once every shard's fresh log is durable,
//! `CURRENT` is switched (write, sync, rename, sync the directory) and G is removed. A crash
//! before the switch leaves G as it was; the half-written G + 1 is removed by the next start.
//!
//! The shards meet twice at a [`Barrier`], blocking their threads, which is fine because
//! nothing else runs yet: once when every fresh log is durable (then shard 0 switches
//! `CURRENT`), once more before any of them reads the others' restored subscriptions into its
//! trie replica. A shard that failed still meets the others, so none waits forever.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::journal::{restored_v5, unix_ms, Journal};
use super::mesh::{Grant, Message, SubscriberId, Subscription};
use super::session::Session;
use super::shard::{home_shard, Shard};
use crate::protocol::ByteStr;
use crate::store::{
    load_dir, log_path, DataDirLock, Image, LogWriter, Record, StoreError, StoredSession,
};

/// How long a stopping shard waits for its log to be durable.
const FINAL_SYNC: Duration = Duration::from_secs(5);

/// What the shards share while they restore; made by [`prepare`].
pub struct Startup {
    dir: PathBuf,
    new: u64,
    images: Mutex<Vec<Option<Image>>>,
    subscriptions: Mutex<Vec<Vec<(SubscriberId, ByteStr, Grant)>>>,
    barrier: Barrier,
    failed: AtomicBool,
    /// Held for the broker's life.
    _lock: DataDirLock,
}

/// Locks the data directory and loads it (on the caller's thread, before the shards start).
pub fn prepare(dir: &Path, shards: usize) -> Result<Arc<Startup>, StoreError> {
    let lock = DataDirLock::acquire(dir)?;
    let old = read_current(dir)?;
    let images = match old {
        Some(generation) => load_dir(&generation_dir(dir, generation), shards, |key| {
            home_shard(key, shards).index()
        })?,
        None => (0..shards).map(|_| Image::default()).collect(),
    };
    let new = old.map_or(1, |g| g + 1);
    // Left by a start that crashed before switching to it: nothing there was acknowledged.
    remove_generations_except(dir, old);
    let new_dir = generation_dir(dir, new);
    std::fs::create_dir_all(&new_dir).map_err(|e| StoreError::io(&new_dir, e))?;
    let (sessions, retained) = images.iter().fold((0, 0), |(s, r), i| {
        (s + i.sessions.len(), r + i.retained.len())
    });
    info!(dir = %dir.display(), generation = ?old, sessions, retained, "data directory loaded");
    Ok(Arc::new(Startup {
        dir: dir.to_path_buf(),
        new,
        images: Mutex::new(images.into_iter().map(Some).collect()),
        subscriptions: Mutex::new(vec![Vec::new(); shards]),
        barrier: Barrier::new(shards),
        failed: AtomicBool::new(false),
        _lock: lock,
    }))
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}"))
}

fn read_current(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join("CURRENT");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Record {
                path,
                offset: 0,
                why: format!("{:?} is not a generation number", text.trim()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Points `CURRENT` at `generation`, crash-safely: a new file synced, renamed over the old
/// one, and the rename synced with the directory.
fn write_current(dir: &Path, generation: u64) -> Result<(), StoreError> {
    let tmp = dir.join("CURRENT.tmp");
    let path = dir.join("CURRENT");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, format!("{generation}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(&path, e))
}

/// Removes every `gen-*` directory but `keep`'s (best effort: what is left is only disk use).
fn remove_generations_except(dir: &Path, keep: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok());
        if generation.is_some() && generation != keep {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warn!(path = %entry.path().display(), "cannot remove an old generation: {e}");
            }
        }
    }
}

/// Restores this shard's part of the data directory and starts its journal; see the module
/// docs. Every shard must call it, also after something failed.
pub async fn restore(shard: &Rc<Shard>, startup: &Startup) -> Result<(), StoreError> {
    let result = restore_own(shard, startup).await;
    let (result, wills) = match result {
        Ok(wills) => (Ok(()), wills),
        Err(e) => (Err(e), Vec::new()),
    };
    if result.is_err() {
        startup.failed.store(true, Ordering::SeqCst);
    }
    startup.barrier.wait();
    let mut switched = Ok(());
    if shard.id.index() == 0 && !startup.failed.load(Ordering::SeqCst) {
        switched = write_current(&startup.dir, startup.new);
        match &switched {
            Ok(()) => remove_generations_except(&startup.dir, Some(startup.new)),
            Err(_) => startup.failed.store(true, Ordering::SeqCst),
        }
    }
    startup.barrier.wait();
    result?;
    switched?;
    if startup.failed.load(Ordering::SeqCst) {
        // Another shard said why; this one just does not start.
        return Ok(());
    }
    let all = startup.subscriptions.lock().expect("not poisoned").clone();
    for list in all {
        for (id, filter, grant) in list {
            let subscription = Subscription {
                filter,
                grant,
                send_retained: false,
            };
            shard.apply_subscribe(id, std::slice::from_ref(&subscription));
            if crate::topic::is_shared(&subscription.filter) {
                // Restored sessions are offline until their clients come back.
                shard.presence(id, false);
            }
        }
    }
    for (id, message, delay) in wills {
        shard.file_delayed_will(id, 0, message, delay);
    }
    end_replaced_sessions(shard);
    Ok(())
}

/// A session whose end waited for the shared messages it handed on to be durable elsewhere
/// (see `durability`) may share its client id with a later one in the log, when the crash
/// came first: the later one is the client's, and the earlier one ends now, handing its
/// messages on again.
fn end_replaced_sessions(shard: &Shard) {
    let replaced: Vec<_> = {
        let sessions = shard.sessions.borrow();
        sessions
            .all()
            .filter(|s| {
                sessions
                    .find(&s.borrow().client_id)
                    .is_none_or(|found| !Rc::ptr_eq(&found, s))
            })
            .cloned()
            .collect()
    };
    for session in replaced {
        info!(client = %session.borrow().client_id, "a session that ended before the crash ends again: its shared messages go to its groups");
        shard.remove_session(&session);
    }
}

/// Whether the start failed on some shard (see [`restore`]).
pub fn failed(startup: &Startup) -> bool {
    startup.failed.load(Ordering::SeqCst)
}

/// Restores this shard's own part; returns the wills still waiting for their delay, to be
/// filed once every replica has its subscriptions back.
async fn restore_own(
    shard: &Rc<Shard>,
    startup: &Startup,
) -> Result<Vec<(SubscriberId, Message, Duration)>, StoreError> {
    let i = shard.id.index();
    let image = startup.images.lock().expect("not poisoned")[i]
        .take()
        .unwrap_or_default();
    let path = log_path(&generation_dir(&startup.dir, startup.new), i);
    let writer = LogWriter::open(&path, 0).await?;
    writer.set_commit_interval(shard.config.sync_interval);
    glommio::spawn_local(writer.clone().run()).detach();
    let journal = Journal::new(writer.clone(), path.clone(), 0);
    let now_ms = unix_ms();
    let now = Instant::now();
    let mut subscriptions = Vec::new();
    let mut wills = Vec::new();
    for (_, stored) in image.sessions {
        let n = journal.new_session();
        write_session(&journal, n, &stored, now_ms);
        let detached_at = stored
            .detached_at_ms
            .and_then(|at| now.checked_sub(Duration::from_millis(now_ms.saturating_sub(at))))
            .unwrap_or(now);
        let will = stored.delayed_will.clone();
        let session = shard.restore_session(Some(n), stored, detached_at);
        if let Some((due_ms, w)) = will {
            // Due when it was due: at once if that passed while the broker was down.
            let delay = Duration::from_millis(due_ms.saturating_sub(now_ms));
            let (v5, _) = restored_v5(w.extras.as_deref());
            let message = Message::new(w.topic, w.payload, w.qos, w.retain).with_v5(v5);
            wills.push((session.borrow().id, message, delay));
        }
        let mut s = session.borrow_mut();
        let (username, client_id, id) = (s.username.clone(), s.client_id.clone(), s.id);
        for (filter, grant) in s.subscriptions.iter_mut() {
            // Whether each message needs an ACL check is decided by today's ACL.
            *grant = shard.with_acl(username.as_deref(), &client_id, filter, *grant);
            subscriptions.push((id, filter.clone(), *grant));
        }
    }
    for (topic, (payload, qos, extras)) in image.retained {
        let (v5, _) = restored_v5(extras.as_deref());
        let message = Message::new(topic, payload, qos, true).with_v5(v5);
        if message.expired(now) {
            continue;
        }
        journal.append(&Record::Retained {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos,
            extras,
        });
        shard.restore_retained(message);
    }
    writer.durable(journal.appended()).await;
    if let Some(counter) = shard.config.disk_fault_for(shard.id.index()) {
        writer.use_fault_counter(counter.clone());
    }
    let _ = shard.journal.set(journal);
    startup.subscriptions.lock().expect("not poisoned")[i] = subscriptions;
    Ok(wills)
}

/// The records that make a fresh log hold `stored` as session `n`.
pub(super) fn write_session(journal: &Journal, n: u64, stored: &StoredSession, now_ms: u64) {
    journal.append(&Record::SessionBegan {
        session: n,
        client_id: stored.client_id.clone(),
        username: stored.username.clone(),
    });
    if let Some(secs) = stored.expiry_secs {
        journal.append(&Record::SessionExpiry { session: n, secs });
    }
    for (filter, (qos, extras)) in &stored.subscriptions {
        journal.append(&Record::Subscribed {
            session: n,
            filter: filter.clone(),
            qos: *qos,
            extras: *extras,
        });
    }
    let queued = |m: &crate::store::StoredMessage| Record::Queued {
        session: n,
        seq: m.seq,
        topic: m.topic.clone(),
        payload: Bytes::clone(&m.payload),
        qos: m.qos,
        retain: m.retain,
        extras: m.extras.clone(),
    };
    for f in &stored.inflight {
        journal.append(&queued(&f.message));
        journal.append(&Record::Sent {
            session: n,
            seq: f.message.seq,
            packet_id: f.packet_id,
        });
        if f.received {
            journal.append(&Record::Received {
                session: n,
                packet_id: f.packet_id,
            });
        }
    }
    if stored.last_packet_id != 0 {
        journal.append(&Record::LastPacketId {
            session: n,
            packet_id: stored.last_packet_id,
        });
    }
    for m in &stored.queue {
        journal.append(&queued(m));
    }
    for id in &stored.incoming_qos2 {
        journal.append(&Record::IncomingQos2 {
            session: n,
            packet_id: *id,
            reg: 0,
        });
    }
    journal.append(&Record::Detached {
        session: n,
        at_ms: stored.detached_at_ms.unwrap_or(now_ms),
    });
    if let Some((due_ms, w)) = &stored.delayed_will {
        journal.append(&Record::DelayedWill {
            session: n,
            due_ms: *due_ms,
            topic: w.topic.clone(),
            payload: Bytes::clone(&w.payload),
            qos: w.qos,
            retain: w.retain,
            extras: w.extras.clone(),
        });
    }
}

/// At stop: waits (bounded) for everything the journal was given to be on disk.
pub async fn final_sync(shard: &Shard) {
    let Some(journal) = shard.journal() else {
        return;
    };
    let end = journal.appended();
    let synced = glommio::timer::timeout(FINAL_SYNC, async {
        journal.durable(end).await;
        Ok(())
    })
    .await;
    if synced.is_err() {
        warn!(
            shard = shard.id.0,
            "the log could not be synced before stopping"
        );
    }
    shard.metrics.log_commits.set(journal.commits());
}

impl Shard {
    /// Makes a stored session live again (offline), numbered `n` in the journal (None: the
    /// broker keeps no journal, for a session handed over by another node).
    pub(super) fn restore_session(
        &self,
        n: Option<u64>,
        stored: StoredSession,
        detached_at: Instant,
    ) -> std::rc::Rc<std::cell::RefCell<Session>> {
        let limits = self.session_limits();
        let shard = self.id;
        let client_id = stored.client_id.clone();
        let session = self
            .sessions
            .borrow_mut()
            .insert(client_id, |slot, generation| {
                let id = SubscriberId {
                    shard,
                    durable: n.is_some(),
                    slot,
                    generation,
                };
                let own = stored.expiry_secs;
                let mut s = Session::restore(id, limits, n, stored, detached_at);
                // An MQTT 5 session's own expiry, or the broker's.
                match own {
                    Some(secs) => s.set_expiry(Some(Duration::from_secs(u64::from(secs)))),
                    None => s.set_expiry(self.config.session_expiry),
                }
                s
            });
        self.metrics.sessions.set(self.metrics.sessions.get() + 1);
        session
    }
}
