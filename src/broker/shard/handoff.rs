//! Sessions moving between the nodes of a cluster (`crate::cluster`): a client that resumes
//! its session on another node takes it over from this one (subscriptions, messages in flight
//! and queued, incoming QoS 2 ids), and one that resumes here gets it from the node that held
//! it.
//!
//! The session travels as the records a snapshot of its shard's log would hold for it
//! (`compaction::session_records`, framed as in a log), read back into a `StoredSession` the
//! way a start reads a log, and made live the way a start makes a stored session live. So a
//! moved session is exactly what a restart would have restored, with no second encoding.
//!
//! A node that was down and came back with `--data-dir` holds the copy it had, while the
//! client may have gone on with a new session elsewhere: the copies then meet at the client's
//! next resume and are merged ([`merge`]), so neither loses what was acknowledged into it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::Shard;
use crate::broker::cluster_port::{
    superseded_by, HandOver, HandedOver, HandedSession, Taken, HANDED_SESSION,
};
use crate::broker::compaction::session_records;
use crate::broker::journal::unix_ms;
use crate::broker::mesh::{ShardMessage, Subscription};
use crate::broker::session::{Kick, Session};
use crate::store::{encode_frame, scan, Image, Record, StoredSession};

/// The token of a subscription applied on the other shards for a session that arrived from
/// another node: no SUBACK waits for it, so nobody is told when it is applied.
const NO_REQUEST: u64 = u64::MAX;

impl Shard {
    /// The client connected to another node at `at` (Unix µs): its session here ends, as a
    /// local takeover would end it. With `hand_over` (the client resumes its session there),
    /// a persistent session of the same user goes over to that node instead of being lost,
    /// and its connection here ends without its will (the session continues).
    pub(in crate::broker) fn claimed_elsewhere(
        &self,
        client_id: &str,
        at: u64,
        hand_over: Option<Box<HandOver>>,
    ) {
        if self
            .cluster
            .get()
            .is_some_and(|p| !p.claim_wins(client_id, at))
        {
            // A claim of an earlier connect: the client is here now.
            return;
        }
        let Some(existing) = self.sessions.borrow().find(client_id) else {
            return;
        };
        let handed = hand_over.and_then(|h| {
            let s = existing.borrow();
            let same_user = s.username.as_deref() == h.username.as_deref();
            if s.clean || !same_user {
                // Not resumable there: a session that ends with its connection, or another
                // user's, whose subscriptions were authorized for that user.
                return None;
            }
            let records = encode_session(&s);
            // A copy restored at start goes only if no node took it from JetStream meanwhile:
            // the cluster thread asks (`cluster::handoff::hand_over`).
            h.answer.send(Some(HandedOver {
                records: records.clone(),
                restored_gone_ms: s.restored_gone_ms(),
            }));
            Some(records)
        });
        let kick = match handed {
            Some(records) => {
                // The cluster thread hands it over (or drops a superseded copy), and says so.
                debug!(client = %client_id, bytes = records.len(), "session given to the cluster thread to hand over");
                self.cancel_delayed_will(&existing.borrow());
                Kick::Continued
            }
            None => {
                debug!(client = %client_id, "taken over on another node");
                Kick::TakenOver
            }
        };
        existing.borrow_mut().kick(kick);
        self.remove_session(&existing);
    }

    /// Makes the sessions that other nodes handed over live here as one, waiting until it is
    /// durable (with `--data-dir`). Normally there is one. More (this node's own copy
    /// included) when a node that was down came back with the copy it held when it went
    /// down, while the client had gone on with a new session elsewhere: see [`merge`].
    pub(in crate::broker) async fn take_in(&self, client_id: &str, taken: Taken) {
        let handed = taken.sessions;
        let mut sessions: Vec<StoredSession> = Vec::with_capacity(handed.len() + 1);
        let local = self.sessions.borrow().find(client_id);
        let superseded = |l: &Rc<RefCell<Session>>| {
            superseded_by(l.borrow().restored_gone_ms(), taken.superseded)
        };
        if let Some(local) = local.filter(superseded) {
            info!(client = %client_id, "the session restored here was resumed on another node from its copy in JetStream while this node was down; dropped");
            local.borrow_mut().kick(Kick::TakenOver);
            self.remove_session(&local);
        }
        for records in &handed {
            match decode_session(records) {
                Ok(stored) => sessions.push(stored),
                Err(why) => {
                    warn!(client = %client_id, "a session handed over by another node is not usable ({why}); it is lost")
                }
            }
        }
        if sessions.is_empty() {
            return;
        }
        let local = self.sessions.borrow().find(client_id);
        if let Some(local) = local {
            let own = decode_session(&encode_session(&local.borrow()));
            if let (Ok(own), false) = (own, local.borrow().clean) {
                sessions.push(own);
            }
            // Its connection here, if any, is taken over by the one being opened; what it held
            // goes on in the merged copy, so ending it hands nothing on (shared messages to
            // their groups) a second time.
            let mut s = local.borrow_mut();
            s.kick(Kick::Continued);
            s.clear_delivery_state();
            drop(s);
            self.remove_session(&local);
        }
        if sessions.len() > 1 {
            info!(client = %client_id, copies = sessions.len(), "sessions of one client from several nodes are merged");
        }
        if self.install_stored(merge(sessions)).is_some() {
            if let Some(journal) = self.journal() {
                journal.durable(journal.appended()).await;
            }
        }
    }

    /// Makes a session handed over by another node live here (offline: the caller attaches
    /// it), journalled like any persistent session when there is a `--data-dir`, its
    /// subscriptions in every replica.
    fn install_stored(&self, stored: StoredSession) -> Option<Rc<RefCell<Session>>> {
        let now = Instant::now();
        let now_ms = unix_ms();
        let detached_at = stored
            .detached_at_ms
            .and_then(|at| now.checked_sub(Duration::from_millis(now_ms.saturating_sub(at))))
            .unwrap_or(now);
        let number = self.journal().map(|journal| {
            let n = journal.new_session();
            crate::broker::restore::write_session(journal, n, &stored, now_ms);
            n
        });
        let session = self.restore_session(number, stored, detached_at);
        let subscriptions: Vec<Subscription> = {
            let mut s = session.borrow_mut();
            let (username, client_id) = (s.username.clone(), s.client_id.clone());
            let mut list = Vec::with_capacity(s.subscriptions.len());
            for (filter, grant) in s.subscriptions.iter_mut() {
                // Whether each message needs an ACL check is decided by this node's ACL.
                *grant = self.with_acl(username.as_deref(), &client_id, filter, *grant);
                list.push(Subscription {
                    filter: filter.clone(),
                    grant: *grant,
                    send_retained: false,
                });
            }
            list
        };
        let id = session.borrow().id;
        self.apply_subscribe(id, &subscriptions);
        if self.shards > 1 && !subscriptions.is_empty() {
            let filters: std::sync::Arc<[Subscription]> = subscriptions.into();
            self.router
                .borrow_mut()
                .broadcast(|| ShardMessage::Subscribe {
                    subscriber: id,
                    filters: filters.clone(),
                    token: NO_REQUEST,
                });
        }
        if let Some(port) = self.cluster.get() {
            port.shared().sessions_in.fetch_add(1, Ordering::Relaxed);
        }
        Some(session)
    }
}

impl Shard {
    /// In a cluster: a persistent session's subscriptions changed, or its client came or went
    /// (`offline_since_ms`: when it went, Unix ms; 0 while connected); its entry in the
    /// cluster's session directory is written again (a session that ends with its connection
    /// has none).
    pub(in crate::broker) fn save_to_directory(
        &self,
        session: &Rc<RefCell<Session>>,
        offline_since_ms: u64,
    ) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        let s = session.borrow();
        if s.clean || s.own_expiry_secs() == Some(0) {
            return;
        }
        port.tell(crate::broker::cluster_port::ClusterEvent::SessionSaved {
            client_id: s.client_id.to_string(),
            username: s.username.as_ref().map(|u| u.to_string()),
            records: directory_entry(&s),
            offline_since_ms,
            expiry_secs: s.expiry().map_or(u32::MAX, |d| {
                d.as_secs().min(u64::from(u32::MAX - 1)) as u32
            }),
        });
    }
}

impl Shard {
    /// In a cluster: a persistent session expired here; its directory entry goes too.
    pub(in crate::broker) fn expired_in_directory(&self, session: &Session) {
        if let (Some(port), false) = (self.cluster.get(), session.clean) {
            port.tell(crate::broker::cluster_port::ClusterEvent::SessionExpired(
                session.client_id.to_string(),
            ));
        }
    }
}

/// What the session directory keeps of `session`: the records that begin it, its expiry and
/// its subscriptions, no messages; and that it went away at time 0, so that in a merge any
/// copy a node hands over is newer (see [`merge`]).
fn directory_entry(session: &Session) -> HandedSession {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    let mut put = |record: Record| {
        if matches!(
            record,
            Record::SessionBegan { .. }
                | Record::SessionExpiry { .. }
                | Record::Subscribed { .. }
                | Record::Detached { .. }
        ) {
            body.clear();
            let kind = record.encode(&mut body);
            encode_frame(&mut out, kind, &body);
        }
    };
    session_records(session, HANDED_SESSION, Instant::now(), unix_ms(), &mut put);
    put(Record::Detached {
        session: HANDED_SESSION,
        at_ms: 0,
    });
    out.freeze()
}

/// Several copies of one client's session as one: the most recently connected copy (the
/// latest `detached_at_ms`; a connected one counts as latest) gives the subscriptions, the
/// messages in flight, the incoming QoS 2 ids and the expiry. The others' messages, in flight
/// or queued, were acknowledged to their publishers and never reached the client (it went
/// on with another copy): they are queued first, oldest copy first, and get new packet ids
/// (the client dropped the old ones with the session it left), then the latest copy's queue.
fn merge(mut copies: Vec<StoredSession>) -> StoredSession {
    copies.sort_by_key(|s| s.detached_at_ms.unwrap_or(u64::MAX));
    let mut latest = copies.pop().expect("at least one copy");
    if latest.detached_at_ms == Some(0) {
        // Only an old copy's mark (see `encode_session`): it went away now, as far as known.
        latest.detached_at_ms = None;
    }
    let mut queue: std::collections::VecDeque<_> = copies
        .into_iter()
        .flat_map(|old| old.inflight.into_iter().map(|f| f.message).chain(old.queue))
        .collect();
    queue.append(&mut latest.queue);
    // Message numbers go on from the latest copy's messages in flight, in the new order.
    let first = latest
        .inflight
        .iter()
        .map(|f| f.message.seq)
        .max()
        .unwrap_or(0)
        + 1;
    for (seq, m) in (first..).zip(&mut queue) {
        m.seq = seq;
    }
    latest.queue = queue;
    latest
}

/// The records that rebuild `session` as session [`HANDED_SESSION`], framed. A copy restored
/// at start and not claimed since says it went away at time 0: older than any copy the client
/// used meanwhile (see [`merge`]).
pub(super) fn encode_session(session: &Session) -> HandedSession {
    let mut out = BytesMut::new();
    let mut body = BytesMut::new();
    let mut put = |record: Record| {
        body.clear();
        let kind = record.encode(&mut body);
        encode_frame(&mut out, kind, &body);
    };
    session_records(session, HANDED_SESSION, Instant::now(), unix_ms(), &mut put);
    if session.restored_unclaimed() {
        put(Record::Detached {
            session: HANDED_SESSION,
            at_ms: 0,
        });
    }
    out.freeze()
}

/// The session that [`encode_session`]'s records rebuild (and, from a copy in JetStream,
/// the changes appended to it). A record that does not fit the state before it is skipped,
/// and said: a copy's change can miss the one before it (given up on under load, or written
/// after a snapshot that already holds it), and the rest of the session is worth more than
/// refusing it all. A damaged record refuses the copy.
fn decode_session(records: &Bytes) -> Result<StoredSession, String> {
    let mut image = Image::default();
    let mut failed = None;
    let mut skipped = (0, None);
    let scanned = scan(records, |offset, kind, body| {
        if failed.is_some() {
            return;
        }
        match Record::decode(kind, records.slice_ref(body)) {
            Ok(record) => {
                if let Err(e) = image.apply(record) {
                    skipped.0 += 1;
                    skipped.1.get_or_insert(e);
                }
            }
            Err(e) => failed = Some(format!("record at offset {offset}: {e}")),
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let (n @ 1.., Some(first)) = skipped {
        debug!(
            skipped = n,
            "records of a session copy that do not fit it were skipped (the first: {first})"
        );
    }
    if scanned.torn.is_some() {
        return Err("cut short".into());
    }
    let mut session = image
        .sessions
        .remove(&HANDED_SESSION)
        .ok_or_else(|| "no session in it".to_string())?;
    // A copy waiting for its QoS 2 acceptance names a registration of the node it came from
    // (see `store::qos2`); here that origin means nothing, and at this node's next start it
    // would be read as one of this node's registrations, and the message dropped.
    let messages = session.inflight.iter_mut().map(|f| &mut f.message);
    for m in messages.chain(session.queue.iter_mut()) {
        if let Some(extras) = &mut m.extras {
            extras.origin = None;
        }
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ByteStr;

    fn message(seq: u64, payload: &'static str) -> crate::store::StoredMessage {
        crate::store::StoredMessage {
            seq,
            topic: ByteStr::from("t"),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: false,
            extras: None,
        }
    }

    #[test]
    fn merged_copies_keep_the_latest_state_and_every_message_oldest_first() {
        // The copy a node brought back after it was down (marked gone at 0), with one message
        // in flight and one queued; the copy the client used meanwhile, with its own.
        let mut old = StoredSession {
            detached_at_ms: Some(0),
            ..StoredSession::default()
        };
        old.subscriptions
            .insert(ByteStr::from("old/#"), Default::default());
        old.inflight.push_back(crate::store::StoredInflight {
            packet_id: 7,
            message: message(1, "a"),
            received: false,
        });
        old.queue.push_back(message(2, "b"));
        let mut latest = StoredSession {
            detached_at_ms: Some(1_000),
            ..StoredSession::default()
        };
        latest
            .subscriptions
            .insert(ByteStr::from("new/#"), Default::default());
        latest.inflight.push_back(crate::store::StoredInflight {
            packet_id: 3,
            message: message(1, "c"),
            received: false,
        });
        latest.queue.push_back(message(2, "d"));
        let merged = merge(vec![latest, old]);
        let subscriptions: Vec<&str> = merged.subscriptions.keys().map(|f| f.as_str()).collect();
        assert_eq!(subscriptions, ["new/#"]);
        let inflight: Vec<_> = merged.inflight.iter().map(|f| f.packet_id).collect();
        assert_eq!(
            inflight,
            [3],
            "only the latest copy's ids mean something to the client"
        );
        let queue: Vec<(u64, &[u8])> = merged
            .queue
            .iter()
            .map(|m| (m.seq, &m.payload[..]))
            .collect();
        assert_eq!(queue, [(2, &b"a"[..]), (3, b"b"), (4, b"d")]);
        assert_eq!(merged.detached_at_ms, Some(1_000));
        // A lone old copy is not gone since 1970 once it is live again.
        let alone = merge(vec![StoredSession {
            detached_at_ms: Some(0),
            ..StoredSession::default()
        }]);
        assert_eq!(alone.detached_at_ms, None);
    }

    #[test]
    fn a_copy_taken_in_names_no_registration_of_its_old_node() {
        let mut out = BytesMut::new();
        let mut body = BytesMut::new();
        for record in [
            Record::SessionBegan {
                session: HANDED_SESSION,
                client_id: ByteStr::from("c"),
                username: None,
            },
            Record::Queued {
                session: HANDED_SESSION,
                seq: 1,
                topic: ByteStr::from("t"),
                payload: Bytes::from_static(b"m"),
                qos: crate::protocol::QoS::ExactlyOnce,
                retain: false,
                extras: Some(Box::new(crate::store::MessageExtras {
                    origin: Some(crate::store::Qos2Origin { shard: 1, reg: 9 }),
                    ..Default::default()
                })),
            },
        ] {
            body.clear();
            let kind = record.encode(&mut body);
            encode_frame(&mut out, kind, &body);
        }
        let session = decode_session(&out.freeze()).unwrap();
        let extras = session.queue[0].extras.as_ref().unwrap();
        assert_eq!(extras.origin, None);
    }

    #[test]
    fn damaged_records_are_refused_not_half_restored() {
        let mut out = BytesMut::new();
        let mut body = BytesMut::new();
        let kind = Record::SessionBegan {
            session: HANDED_SESSION,
            client_id: ByteStr::from("c"),
            username: None,
        }
        .encode(&mut body);
        encode_frame(&mut out, kind, &body);
        let whole = out.clone().freeze();
        assert_eq!(decode_session(&whole).unwrap().client_id.as_str(), "c");
        let cut = whole.slice(..whole.len() - 1);
        assert!(decode_session(&cut).is_err());
        let mut flipped = out.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(decode_session(&Bytes::from(flipped)).is_err());
        assert!(decode_session(&Bytes::new()).is_err(), "no session");
    }
}
