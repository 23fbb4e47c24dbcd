//! The shard's side of `--data-dir`: its journal, and whether what an acknowledgement waits
//! for (a [`Ticket`]) is durable yet, here and on the other shards (see `durability`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Context;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Shard;
use crate::broker::compaction::session_records;
use crate::broker::durability::{Remote, Ticket};
use crate::broker::journal::Journal;
use crate::broker::mesh::{ShardId, ShardMessage, Subscription};
use crate::broker::session::Session;
use crate::protocol::ByteStr;
use crate::store::{Position, Record};

impl Shard {
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    /// Whether everything `ticket` names is durable; when not, the task is woken once more of
    /// it may be.
    pub fn poll_ticket(&self, ticket: &Ticket, cx: &mut Context<'_>) -> bool {
        self.ticket_durable(ticket, Some(cx))
    }

    /// Whether everything `ticket` names is durable.
    pub fn ticket_ready(&self, ticket: &Ticket) -> bool {
        self.ticket_durable(ticket, None)
    }

    fn ticket_durable(&self, ticket: &Ticket, mut cx: Option<&mut Context<'_>>) -> bool {
        if ticket.local > 0 {
            if let Some(journal) = self.journal() {
                let durable = match cx.as_deref_mut() {
                    Some(cx) => journal.poll_durable(ticket.local, cx).is_ready(),
                    None => journal.is_durable(ticket.local),
                };
                if !durable {
                    return false;
                }
            }
        }
        if ticket.cluster > 0 {
            let acknowledged = match cx.as_deref_mut() {
                Some(cx) => self.durability.poll_cluster(ticket.cluster, cx).is_ready(),
                None => self.durability.is_cluster_confirmed(ticket.cluster),
            };
            if !acknowledged {
                return false;
            }
        }
        if ticket.copied > 0 {
            let stored = match cx.as_deref_mut() {
                Some(cx) => self.durability.poll_copied(ticket.copied, cx).is_ready(),
                None => self.durability.is_copied(ticket.copied),
            };
            if !stored {
                return false;
            }
        }
        for remote in &ticket.remote {
            let (shard, number) = (remote.shard, remote.number);
            let confirmed = match cx.as_deref_mut() {
                Some(cx) => self.durability.poll_confirmed(shard, number, cx).is_ready(),
                None => self.durability.is_confirmed(shard, number),
            };
            if !confirmed || !self.holds_released(remote, cx.as_deref_mut()) {
                return false;
            }
        }
        true
    }

    /// Whether what the confirmations `remote` waits for are held for is durable (see
    /// `durability`: shared deliveries their shard gave back).
    fn holds_released(&self, remote: &Remote, mut cx: Option<&mut Context<'_>>) -> bool {
        if !self.durability.has_holds() {
            return true;
        }
        for ticket in self.durability.held(remote) {
            if !self.ticket_durable(&ticket, cx.as_deref_mut()) {
                return false;
            }
        }
        self.durability.release_held(remote);
        true
    }

    /// Holds the confirmation of `number` by `from` until `ticket` is durable.
    pub(super) fn hold_confirmation(&self, from: ShardId, number: u64, ticket: Ticket) {
        if ticket.is_empty() {
            return;
        }
        // Holds nobody looked at since they became durable go now, oldest first.
        while let Some(oldest) = self.durability.oldest_held() {
            if !self.ticket_ready(&oldest) {
                break;
            }
            self.durability.forget_oldest_held();
        }
        self.durability.hold(from, number, ticket);
    }

    /// Appends `records` of the stored session `n`, which forget the shared messages it
    /// handed on to other members (its end, or their withdrawal): at once when `ticket`, what
    /// took them elsewhere, names no other shard (what this shard journalled for them is in
    /// its log before these), otherwise once `ticket` is durable, by the `hand_on` task, and
    /// always after records of `n` handed on before (see `durability`).
    pub(super) fn journal_handed_on(&self, n: u64, ticket: Ticket, records: Vec<Record>) {
        let Some(journal) = self.journal() else {
            return;
        };
        if ticket.remote.is_empty() && !self.durability.hands_on(n) {
            for record in &records {
                journal.append(record);
            }
            return;
        }
        self.durability.hand_on(ticket, n, records);
    }

    /// Whether acknowledgements wait for the disk: with `--data-dir`, unless
    /// `--sync-interval-ms` traded that away.
    pub fn acks_wait_for_disk(&self) -> bool {
        self.journal().is_some() && self.config.sync_interval.is_zero()
    }

    /// The log position an acknowledgement must wait for after what was just appended: 0 when
    /// nothing was appended since `before` (or acknowledgements do not wait).
    pub fn appended_since(&self, before: Position) -> Position {
        match self.journal() {
            Some(j) if j.appended() > before && self.acks_wait_for_disk() => j.appended(),
            _ => 0,
        }
    }

    /// The end of the journal now (0 without one).
    pub fn journal_end(&self) -> Position {
        self.journal().map_or(0, |j| j.appended())
    }

    /// Appends `record` when `session` is journalled, and to its copy in JetStream when it is
    /// copied as it changes (see `session_copies`); returns the position an answer to it
    /// must wait for (0 when none must; the copy's number is `copied_since` what was made).
    pub fn journal_session(&self, session: &Session, record: impl Fn(u64) -> Record) -> Position {
        self.copy_change(session, &record);
        match (self.journal(), session.stored_as()) {
            (Some(j), Some(n)) => {
                let at = j.append(&record(n));
                if self.acks_wait_for_disk() {
                    at
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// With `--data-dir`, a live session that was not journalled (an MQTT 5 session that was
    /// to end with its connection) becomes persistent: a connection resumed it asking it to
    /// outlive the connection (MQTT-3.1.2-5 of 5.0). It is written to the journal as a fresh
    /// log would hold it, and takes the durable form of its id on every replica, so publishers
    /// on other shards wait for its disk as they do for any persistent session.
    pub(super) fn make_durable(&self, session: &Rc<RefCell<Session>>) {
        let Some(journal) = self.journal() else {
            return;
        };
        if session.borrow().stored_as().is_some() {
            return;
        }
        let number = journal.new_session();
        let (old, grants) = {
            let mut s = session.borrow_mut();
            s.begin_storing(number);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            session_records(&s, number, Instant::now(), now_ms, |record| {
                journal.append(&record);
            });
            let old = s.id;
            s.id.durable = true;
            let grants: Vec<Subscription> = s
                .subscriptions
                .iter()
                .map(|(filter, grant)| Subscription {
                    filter: filter.clone(),
                    grant: *grant,
                    send_retained: false,
                })
                .collect();
            (old, grants)
        };
        let new = session.borrow().id;
        if session.borrow().under_pressure() {
            self.release_pressure(old);
            self.raise_pressure(new);
        }
        if grants.is_empty() {
            return;
        }
        let filters: Arc<[ByteStr]> = grants.iter().map(|g| g.filter.clone()).collect();
        self.apply_unsubscribe(old, &filters);
        self.apply_subscribe(new, &grants);
        if self.shards > 1 {
            // One channel per shard keeps the two in order: nothing on another shard sees
            // the session without a subscription in between.
            let grants: Arc<[Subscription]> = grants.into();
            let token = self.next_token.get();
            self.next_token.set(token + 1);
            let mut router = self.router.borrow_mut();
            router.broadcast(|| ShardMessage::Unsubscribe {
                subscriber: old,
                filters: filters.clone(),
                token: None,
            });
            // Nobody waits for this token: its answers find no pending request.
            router.broadcast(|| ShardMessage::Subscribe {
                subscriber: new,
                filters: grants.clone(),
                token,
            });
        }
    }
}
