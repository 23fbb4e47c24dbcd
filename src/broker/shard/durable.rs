//! The shard's side of `--data-dir`: its journal, and whether what an acknowledgement waits
//! for (a [`Ticket`]) is durable yet, here and on the other shards (see `durability`).

use std::task::Context;

use super::Shard;
use crate::broker::durability::Ticket;
use crate::broker::journal::Journal;
use crate::broker::session::Session;
use crate::store::{Position, Record};

impl Shard {
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.get()
    }

    /// Whether everything `ticket` names is durable; when not, the task is woken once more of
    /// it may be.
    pub fn poll_ticket(&self, ticket: &Ticket, cx: &mut Context<'_>) -> bool {
        if ticket.local > 0 {
            if let Some(journal) = self.journal() {
                if journal.poll_durable(ticket.local, cx).is_pending() {
                    return false;
                }
            }
        }
        ticket
            .remote
            .iter()
            .all(|&(shard, number)| self.durability.poll_confirmed(shard, number, cx).is_ready())
    }

    /// Whether everything `ticket` names is durable.
    pub fn ticket_ready(&self, ticket: &Ticket) -> bool {
        let local = ticket.local == 0 || self.journal().is_none_or(|j| j.is_durable(ticket.local));
        local
            && ticket
                .remote
                .iter()
                .all(|&(shard, number)| self.durability.is_confirmed(shard, number))
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

    /// Appends `record` when `session` is journalled; returns the position an answer to it
    /// must wait for (0 when none must).
    pub fn journal_session(
        &self,
        session: &Session,
        record: impl FnOnce(u64) -> Record,
    ) -> Position {
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
}
