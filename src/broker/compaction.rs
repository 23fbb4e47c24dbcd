//! Keeping a shard's log from growing without bound (with `--data-dir`): once the log holds
//! at least `compact_after_bytes`, twice what its last snapshot held and twice what the shard
//! estimates a snapshot would hold now (so at least half of it is dead; a log that grows
//! because a queue grows is not copied again for nothing), and no client is draining much of
//! what is live, the shard writes its
//! live durable state (persistent sessions with their subscriptions, messages in flight and
//! queued, incoming QoS 2 ids; retained messages) as the first records of a successor log,
//! `shard-N.log.next`, ends it with `SnapshotEnd`, and from that moment appends there. Nothing
//! awaits between taking the snapshot and the switch, so the snapshot is exactly the state the
//! old log adds up to at its end; positions go on growing in the new log, so nobody waiting
//! for one notices the switch (see `journal`).
//!
//! Once the snapshot is durable, the successor is renamed over the old log (and the directory
//! synced). A crash before that leaves both files: a start uses the successor if its
//! `SnapshotEnd` made it to disk (everything acknowledged after the switch lies behind it) and
//! removes it otherwise (see `store::load::settle_compactions`).
//!
//! The snapshot is encoded in one go on the shard's thread: a pause proportional to the
//! state kept (about 100 ms per 1,000,000 queued messages), once per doubling of the log
//! and only when half of it is dead.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::journal::{message_extras, unix_ms, Journal};
use super::session::{Session, StoredItem};
use super::shard::Shard;
use crate::store::{LogWriter, Record, StoreError};

/// How often a shard looks at the size of its log.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How many times as long as the last live estimate took to wait before the next.
const ESTIMATE_SPACING: u32 = 50;
/// How long to wait after a compaction failed before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The shard task that compacts its log when it has grown enough; see the module docs.
pub async fn compact_journal(shard: Rc<Shard>) {
    let Some(journal) = shard.journal() else {
        return;
    };
    let min = shard.config.compact_after_bytes;
    // The current log: where its positions start and what its snapshot held.
    let mut start = 0;
    let mut kept = journal.appended();
    // The live estimate at the last check that made one, and when the next may be made.
    let mut live_before = None;
    let mut estimate_after = Instant::now();
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
        let grown = journal.appended() - start;
        if grown < min.max(2 * kept) {
            live_before = None;
            continue;
        }
        if Instant::now() < estimate_after {
            continue;
        }
        let began = Instant::now();
        let live = live_estimate(&shard);
        // The estimate visits every session of the shard (likely a cache miss each), and a
        // log that stays mostly live would ask for it at every check: at most 2% of the
        // shard's time, however many sessions it has.
        estimate_after = Instant::now() + began.elapsed() * ESTIMATE_SPACING;
        if !mostly_dead(grown, live, live_before.replace(live)) {
            continue;
        }
        if shard.durability.has_handed_on() {
            // The snapshot would forget messages sessions handed on before the members that
            // took them have them durably (see `durability`): later.
            continue;
        }
        let began = Instant::now();
        match compact(&shard, journal).await {
            Ok((origin, size)) => {
                debug!(shard = shard.id.0, log = %journal.path().display(), kept = size, replaced = origin - start, took = ?began.elapsed(), "log compacted");
                start = origin;
                kept = size;
                shard
                    .metrics
                    .compactions
                    .set(shard.metrics.compactions.get() + 1);
            }
            Err(e) => {
                warn!(
                    shard = shard.id.0,
                    "log compaction failed, the log keeps growing until it works: {e}"
                );
                glommio::timer::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// Whether a log of `grown` bytes (past the size that makes a compaction due: `min` and
/// twice what the last snapshot held) is worth compacting now, with `live` bytes of it live
/// as estimated now and `before` at the previous check: at least half of it must be dead.
/// With every byte live (a queue for an absent client that only grows), a snapshot would
/// write the whole log again and drop nothing; before this rule it did, once per doubling, a
/// third of the shard's time with `bench pair --persistent --offline`.
///
/// And not while what is live falls (a client draining its queue) and is still more than an
/// eighth of the log: the snapshot would copy what is about to be acknowledged. The log grows
/// meanwhile by less than the drain's records, and once the fall stops, or what is left is
/// small, the snapshot is cheap.
fn mostly_dead(grown: u64, live: u64, before: Option<u64>) -> bool {
    let draining = before.is_some_and(|before| live < before) && live >= grown / 8;
    grown >= 2 * live && !draining
}

/// Record bytes, past topic and payload, of a message a snapshot keeps (a `Queued` record in
/// its frame), and of a retained message (a `Retained` record).
const QUEUED_RECORD_FIXED: u64 = 32;
const RETAINED_RECORD_FIXED: u64 = 16;

/// A snapshot's size now, estimated from counters without walking the messages: the
/// payloads the persistent sessions hold and a record's fixed part for each message held,
/// and that fixed part for each retained message. Topics, subscriptions and the retained
/// payloads are left out, so the estimate stays below the truth, and a low estimate only
/// compacts sooner (as without it). What it counts but a snapshot does not keep, QoS 0
/// messages queued with `queue_qos0`, is bounded by the queue limits.
fn live_estimate(shard: &Shard) -> u64 {
    let mut live = 0u64;
    for session in shard.sessions.borrow().all() {
        let s = session.borrow();
        if s.stored_as().is_some() {
            let held = (s.queued() + s.inflight()) as u64;
            live += s.held_bytes() as u64 + held * QUEUED_RECORD_FIXED;
        }
    }
    live + shard.retained.borrow().len() as u64 * RETAINED_RECORD_FIXED
}

/// Switches the journal to a compacted successor log; returns where its positions start and
/// how many bytes its snapshot took.
async fn compact(shard: &Shard, journal: &Journal) -> Result<(u64, u64), StoreError> {
    let path = journal.path().to_path_buf();
    let next_path = path.with_extension("log.next");
    // Left by a compaction that failed: never switched to, nothing in it counts.
    let _ = std::fs::remove_file(&next_path);
    let next = LogWriter::open(&next_path, 0).await?;
    // From here to the switch nothing awaits: the snapshot is the state at this very point.
    let origin = journal.appended();
    next.set_origin(origin);
    next.set_commit_interval(shard.config.sync_interval);
    if let Some(counter) = shard.config.disk_fault_for(shard.id.index()) {
        next.use_fault_counter(counter.clone());
    }
    shard.write_snapshot(journal, &next);
    let end = journal.append_to(&next, &Record::SnapshotEnd);
    journal.switch_to(next.clone());
    glommio::spawn_local(next.clone().run()).detach();

    next.durable(end).await;
    // A rename and a directory sync block until the disk has them: on the blocking threads,
    // not on the shard (see `store::log_io`).
    let renamed = {
        let (next_path, path) = (next_path.clone(), path.clone());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::rename(&next_path, &path).and_then(|()| match path.parent() {
                    Some(dir) => std::fs::File::open(dir)?.sync_all(),
                    None => Ok(()),
                })
            })
            .await
    };
    // Not renamed, the successor is still used by the next start (its snapshot is whole).
    renamed.map_err(|e| StoreError::io(&path, e))?;
    journal.durable(origin).await;
    journal.drop_previous();
    Ok((origin, end - origin))
}

impl Shard {
    /// Appends this shard's durable state to `to`, as records a fresh log begins with.
    fn write_snapshot(&self, journal: &Journal, to: &LogWriter) {
        let put = |record: Record| {
            journal.append_to(to, &record);
        };
        let now = Instant::now();
        let now_ms = unix_ms();
        // The numbers given so far, also those no record keeps any more (see `store::qos2`).
        put(Record::Qos2Counter {
            next: self.next_qos2_reg(),
        });
        for session in self.sessions.borrow().all() {
            let s = session.borrow();
            if let Some(n) = s.stored_as() {
                session_records(&s, n, now, now_ms, put);
            }
        }
        self.delayed_will_records(put);
        self.retained.borrow().for_each(|m| {
            put(Record::Retained {
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos,
                extras: message_extras(m, 0, None),
            })
        });
    }
}

/// The records that rebuild stored session `n` as it is now: what a snapshot holds for it, and
/// what a session begins its journaling with when it becomes persistent while live.
pub(super) fn session_records(
    s: &Session,
    n: u64,
    now: Instant,
    now_ms: u64,
    mut put: impl FnMut(Record),
) {
    put(Record::SessionBegan {
        session: n,
        client_id: s.client_id.clone(),
        username: s.username.clone(),
    });
    if let Some(secs) = s.own_expiry_secs() {
        put(Record::SessionExpiry { session: n, secs });
    }
    for (filter, grant) in &s.subscriptions {
        put(Record::Subscribed {
            session: n,
            filter: filter.clone(),
            qos: grant.qos,
            extras: grant.stored_extras(),
        });
    }
    s.for_each_stored(|item| match item {
        StoredItem::Inflight {
            message,
            qos,
            retain,
            seq,
            packet_id,
            received,
            subscription_id,
            share,
        } => {
            put(Record::Queued {
                session: n,
                seq,
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos,
                retain,
                extras: message_extras(message, subscription_id, share.as_deref()),
            });
            put(Record::Sent {
                session: n,
                seq,
                packet_id,
            });
            if received {
                put(Record::Received {
                    session: n,
                    packet_id,
                });
            }
        }
        StoredItem::Queued {
            message,
            qos,
            retain,
            seq,
            subscription_id,
            share,
        } => put(Record::Queued {
            session: n,
            seq,
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos,
            retain,
            extras: message_extras(message, subscription_id, share.as_deref()),
        }),
        StoredItem::IncomingQos2(packet_id, reg) => put(Record::IncomingQos2 {
            session: n,
            packet_id,
            reg,
        }),
    });
    if s.last_packet_id() != 0 {
        put(Record::LastPacketId {
            session: n,
            packet_id: s.last_packet_id(),
        });
    }
    if let Some(away) = s.disconnected_for(now) {
        put(Record::Detached {
            session: n,
            at_ms: now_ms.saturating_sub(away.as_millis() as u64),
        });
    } else if let (true, Some(at_ms)) = (s.is_connected(), s.attached_ms()) {
        put(Record::Attached { session: n, at_ms });
    }
}

#[cfg(test)]
mod tests {
    use super::mostly_dead;

    #[test]
    fn a_log_is_compacted_once_half_of_it_is_dead_and_no_drain_is_under_way() {
        const MIB: u64 = 1 << 20;
        // Mostly dead: compacted.
        assert!(mostly_dead(64 * MIB, MIB, None));
        assert!(mostly_dead(120 * MIB, 60 * MIB, Some(60 * MIB)));
        // Mostly live (a queue that only grows): not copied again.
        assert!(!mostly_dead(128 * MIB, 100 * MIB, Some(90 * MIB)));
        assert!(!mostly_dead(128 * MIB, 64 * MIB + 1, None));
        // Draining (live fell since the last check) with much left to copy: later. Once it
        // stops falling, or little is left, compacted.
        assert!(!mostly_dead(128 * MIB, 40 * MIB, Some(60 * MIB)));
        assert!(!mostly_dead(128 * MIB, 16 * MIB, Some(17 * MIB)));
        assert!(mostly_dead(128 * MIB, 40 * MIB, Some(40 * MIB)));
        assert!(mostly_dead(128 * MIB, 16 * MIB - 1, Some(17 * MIB)));
        assert!(mostly_dead(128 * MIB, 0, Some(0)));
    }
}
