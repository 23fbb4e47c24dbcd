//! Accepting incoming QoS 2 PUBLISHes of persistent sessions (with `--data-dir`), so that a
//! crash at any moment delivers each one exactly once (see `qos2_gate` and `store::qos2`).
//!
//! The publisher's shard numbers each such PUBLISH (its registration), routes its message
//! behind a closed gate and files it here with the ticket of everything it wrote. The
//! `accept_qos2` task waits for the tickets in order, writes `Qos2Accepted` for those whose
//! sessions still wait for them, in one batch, waits for that to be durable, then opens the
//! gates (a PUBLISH that wrote to this shard's log only has its acceptance written at once,
//! behind its copies, and costs one commit, as any QoS 2 PUBLISH does): the PUBREC goes (the publisher's connection waits on the gate) and the sessions that
//! stopped at a closed gate, here and on every other shard, are woken.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::Shard;
use crate::broker::durability::Ticket;
use crate::broker::mesh::{ShardMessage, SubscriberId};
use crate::broker::qos2_gate::Qos2Gate;
use crate::protocol::PacketId;
use crate::store::{Qos2Origin, Record};

/// One incoming QoS 2 PUBLISH waiting for acceptance.
struct Pending {
    ticket: Ticket,
    publisher: SubscriberId,
    packet_id: PacketId,
    gate: Arc<Qos2Gate>,
    /// Its `Qos2Accepted` is written already (in `ticket`): see [`Shard::file_qos2`].
    accepted: bool,
}

/// The shard's registrations waiting for acceptance, and who waits for their gates.
#[derive(Default)]
pub struct Qos2Gates {
    /// The number the next registration gets; above every one this log gave.
    next_reg: Cell<u64>,
    pending: RefCell<VecDeque<Pending>>,
    /// The `accept_qos2` task, waiting for something to be filed.
    task: RefCell<Option<Waker>>,
    /// Publishers' connections waiting to send a PUBREC behind a gate.
    waiters: RefCell<Vec<Waker>>,
    /// Sessions of this shard whose `fill` stopped at a closed gate.
    blocked: RefCell<Vec<SubscriberId>>,
}

impl Shard {
    /// The registration number the next incoming QoS 2 PUBLISH gets (1 for the first).
    pub(in crate::broker) fn next_qos2_reg(&self) -> u64 {
        self.qos2.next_reg.get().max(1)
    }

    /// A new gate for an incoming QoS 2 PUBLISH of the persistent session `publisher`,
    /// registered in the log as its `packet_id`'s record; None without a log or for a session
    /// not written there (nothing survives a crash to be settled then).
    pub(in crate::broker) fn register_qos2(
        &self,
        publisher: &crate::broker::session::Session,
        packet_id: PacketId,
    ) -> Option<Arc<Qos2Gate>> {
        let session = publisher.stored_as()?;
        let journal = self.journal()?;
        let reg = self.next_qos2_reg();
        self.qos2.next_reg.set(reg + 1);
        journal.append(&Record::IncomingQos2 {
            session,
            packet_id,
            reg,
        });
        Some(Arc::new(Qos2Gate::new(Qos2Origin {
            shard: self.id.0,
            reg,
        })))
    }

    /// Files a registered PUBLISH, routed with `ticket` (what it wrote so far): its gate opens
    /// once that and its acceptance are durable. When it wrote to this shard's log only, its
    /// acceptance is written now, behind its copies: the log becomes durable in order, so
    /// once the acceptance is, they are, and one commit does for both. Returns what the
    /// PUBREC then waits for.
    pub(in crate::broker) fn file_qos2(
        &self,
        mut ticket: Ticket,
        publisher: &crate::broker::session::Session,
        packet_id: PacketId,
        gate: Arc<Qos2Gate>,
    ) -> Ticket {
        let mut accepted = false;
        if let (true, Some(journal), Some(number)) = (
            ticket.remote.is_empty(),
            self.journal(),
            publisher.stored_as(),
        ) {
            ticket.local = journal.append(&Record::Qos2Accepted {
                session: number,
                packet_id,
            });
            accepted = true;
        }
        self.qos2.pending.borrow_mut().push_back(Pending {
            ticket: ticket.clone(),
            publisher: publisher.id,
            packet_id,
            gate,
            accepted,
        });
        if let Some(w) = self.qos2.task.borrow_mut().take() {
            w.wake();
        }
        ticket
    }

    /// Whether `gate` is open; if not, `cx` is woken when gates next open here.
    pub(in crate::broker) fn poll_gate(&self, gate: &Qos2Gate, cx: &mut Context<'_>) -> bool {
        if gate.is_open() {
            return true;
        }
        let mut waiters = self.qos2.waiters.borrow_mut();
        // A connection polled again waits once, not once per poll (a disk that fails for long
        // must not grow this without bound).
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        false
    }

    /// The session's next message waits behind a closed gate: it is woken when gates open
    /// (filed once until then).
    pub(in crate::broker) fn blocked_at_gate(&self, session: &mut crate::broker::session::Session) {
        if !std::mem::replace(&mut session.filed_at_gate, true) {
            self.qos2.blocked.borrow_mut().push(session.id);
        }
    }

    /// Gates opened (here or on another shard): the sessions that stopped at one look again.
    pub(in crate::broker) fn gates_opened(&self) {
        let blocked = std::mem::take(&mut *self.qos2.blocked.borrow_mut());
        let sessions = self.sessions.borrow();
        for id in blocked {
            if let Some(session) = sessions.get(id.slot, id.generation) {
                let mut s = session.borrow_mut();
                s.filed_at_gate = false;
                s.wake();
            }
        }
    }
}

/// The shard task that accepts registered PUBLISHes; see the module docs.
pub async fn accept_qos2(shard: Rc<Shard>) {
    let Some(journal) = shard.journal() else {
        return;
    };
    loop {
        // The oldest filed PUBLISH whose ticket is durable (they become so in order).
        std::future::poll_fn(|cx| {
            let pending = shard.qos2.pending.borrow();
            match pending.front() {
                None => {
                    *shard.qos2.task.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(p) if shard.poll_ticket(&p.ticket, cx) => Poll::Ready(()),
                Some(_) => Poll::Pending,
            }
        })
        .await;
        let mut ready = Vec::new();
        {
            let mut pending = shard.qos2.pending.borrow_mut();
            while let Some(p) = pending.front() {
                if !shard.ticket_ready(&p.ticket) {
                    break;
                }
                ready.push(pending.pop_front().expect("front exists"));
            }
        }
        let mut end = 0;
        {
            let sessions = shard.sessions.borrow();
            for p in ready.iter().filter(|p| !p.accepted) {
                let Some(session) = sessions.get(p.publisher.slot, p.publisher.generation) else {
                    // The session ended: its registration went with it.
                    continue;
                };
                let s = session.borrow();
                let waiting = s
                    .incoming_gate(p.packet_id)
                    .is_some_and(|g| Arc::ptr_eq(&g, &p.gate));
                if let (true, Some(number)) = (waiting, s.stored_as()) {
                    end = journal.append(&Record::Qos2Accepted {
                        session: number,
                        packet_id: p.packet_id,
                    });
                }
            }
        }
        if end > 0 {
            journal.durable(end).await;
        }
        for p in &ready {
            p.gate.open();
        }
        for w in shard.qos2.waiters.borrow_mut().drain(..) {
            w.wake();
        }
        shard.gates_opened();
        if shard.shards > 1 {
            shard
                .router
                .borrow_mut()
                .broadcast(|| ShardMessage::GatesOpened);
            shard.flush();
        }
    }
}
