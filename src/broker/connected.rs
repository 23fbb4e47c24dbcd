//! A connected client on its home shard: the packet loop, written out as one future by hand.
//!
//! Every connection of a shard is one glommio task, and an idle broker with many clients is
//! mostly these tasks, so their size is the broker's memory per connection. An `async fn`
//! loop kept the connection state twice (the loop's `&mut self` future and the closing phase's
//! own copy) next to every nested future it ever awaited: about 2 KiB. Written as a struct with
//! an explicit [`Phase`], the task is the connection's fields and nothing else.
//!
//! Each poll does what the loop turn did: decode and handle every complete packet, flush the
//! router, let the session fill the write buffer, then wait for whichever comes first: input,
//! messages the session wants sent, room in the socket, the keepalive deadline, or a kick
//! (takeover, shutdown). Everything owed to the client leaves in one write per turn.
//!
//! A client whose QoS 1/2 publish reached a subscriber under pressure (see `pressure`) is held
//! back: until that subscriber is relieved, its PUBLISH (and every packet whose order matters
//! relative to them) waits in [`Held`], while its acknowledgements and pings are still read and
//! handled. A client that both publishes and subscribes must keep draining its own queue while
//! its publishing waits, or two such clients feeding each other would wait for each other.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use tracing::debug;

use super::connection::{log_close, CloseReason};
use super::mesh::Message;
use super::metrics::add;
use super::session::{Kick, Session};
use super::shard::{ConnectionPermit, Shard};
use super::wire::Wire;
use crate::protocol::{
    decode, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolLevel, ReasonCode,
};
use crate::store::Record;

/// Bytes of pending output above which the session stops filling the write buffer.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Pending output above which we stop reading: the client is not reading its acknowledgements.
const READ_PAUSE: usize = 4 * WRITE_HIGH_WATER;
/// How long a closing connection may take to deliver the acknowledgements already encoded.
const CLOSING_FLUSH: Duration = Duration::from_millis(100);

mod acks;
mod held;
mod packets;
mod v5;

use acks::DurableAcks;
use held::Held;
pub(crate) use held::ShardHeldBytes;
pub use v5::session_expiry;
use v5::V5Connection;

/// Where a connection is in its life.
enum Phase {
    /// At the top of a loop turn: handle the input read so far, flush the router, fill.
    Serving,
    /// Waiting for an event (input, output, room in the socket, a deadline, a kick). A wake
    /// resumes here, so a turn's work is done once per event, not once per wake.
    Waiting,
    /// The shard's router is congested: stop reading until it drains.
    WaitingForRouter,
    /// Ended; the output already encoded gets until the timer to leave.
    Closing(Timer),
    Done,
}

/// The task serving one connected client; see the module docs.
pub struct ConnectedClient {
    /// The connection's slot under --max-connections. First field, so it is dropped first:
    /// the slot is free again before the socket closes and the client can see it.
    _permit: ConnectionPermit,
    shard: Rc<Shard>,
    wire: Wire,
    session: Rc<RefCell<Session>>,
    conn: u64,
    /// The client's protocol level: how its packets are read and ours written.
    level: ProtocolLevel,
    /// Another broker's bridge (the CONNECT level's top bit): its subscriptions are No Local
    /// and Retain As Published, so its own messages never come back to it.
    bridge: bool,
    /// What an MQTT 5 connection adds (topic aliases, limits); None for 3.1/3.1.1.
    v5: Option<Box<V5Connection>>,
    /// Boxed: most clients have no will, and those that do should not make every task bigger.
    will: Option<Box<LastWill>>,
    keepalive: Option<Keepalive>,
    /// The parking epoch in which the connection last had input or output (see `parking`).
    active_epoch: u32,
    phase: Phase,
    /// Set while the client's publishing is held back; boxed, as it is rare.
    held: Option<Box<Held>>,
    /// Acknowledgements waiting for the disk (with `--data-dir`).
    acks: Option<Box<DurableAcks>>,
}

/// The keepalive of a client that asked for one (MQTT-3.1.2-24). The deadline itself waits in
/// the shard's [`super::keepalive::KeepaliveQueue`], filed once per period, not per packet.
struct Keepalive {
    /// 1.5 × the keepalive the client asked for.
    limit: Duration,
    last_input: Instant,
}

enum Event {
    Input,
    Output,
    Closed(CloseReason),
}

impl ConnectedClient {
    /// Opens (or resumes) the client's session and queues the CONNACK; the returned future
    /// serves the client until the connection ends.
    /// `assigned`: the broker chose the client id (the client sent none); an MQTT 5 client
    /// is told which. `claimed`: in a cluster, the client's claim went out already.
    pub fn new(
        shard: Rc<Shard>,
        mut wire: Wire,
        connect: Box<Connect>,
        permit: ConnectionPermit,
        assigned: bool,
        claimed: bool,
    ) -> ConnectedClient {
        let conn = shard.next_connection_id();
        let (session, resumed) = shard.open_session(&connect, conn, claimed);
        let v5 = connect
            .level
            .is_v5()
            .then(|| Box::new(V5Connection::new(&shard.config, &connect)));
        let connack_properties = connect.level.is_v5().then(|| {
            let assigned = assigned.then_some(&connect.client_id);
            v5::connack_properties(&shard.config, &connect, assigned)
        });
        let metrics = &shard.metrics;
        metrics.connections.set(metrics.connections.get() + 1);
        metrics
            .connections_total
            .set(metrics.connections_total.get() + 1);
        // Moved out whole, so the box (and what is left in it) is freed now, not kept for the
        // connection's life.
        let Connect {
            level,
            bridge,
            keep_alive,
            will,
            ..
        } = *connect;
        debug!(client = %session.borrow().client_id, peer = %wire.peer, shard = shard.id.0, resumed, "client connected");
        // MQTT 3.1 has no Session Present flag: the byte is reserved there.
        let ack = Packet::ConnAck(ConnAck {
            session_present: resumed && level != ProtocolLevel::V31,
            code: ReasonCode::SUCCESS,
            properties: connack_properties,
        });
        let _ = ack.encode(wire.wbuf.encoded(), level);
        add(&shard.metrics.packets_out, 1);
        // MQTT 5: the client now uses the Server Keep Alive the CONNACK told it (MQTT-3.2.2-21).
        let keep_alive = match level.is_v5() {
            true => v5::server_keep_alive(&shard.config, keep_alive).unwrap_or(keep_alive),
            false => keep_alive,
        };
        let keepalive = (keep_alive > 0).then(|| {
            let limit = Duration::from_millis(keep_alive as u64 * 1500);
            let last_input = Instant::now();
            shard
                .keepalives
                .connection_started(session.borrow().id, conn, last_input + limit);
            Keepalive { limit, last_input }
        });
        // A new connection counts as long idle, so it parks as soon as it has nothing to do
        // (usually right after the CONNACK): in a flood of connects, each socket's poll request
        // is freed before the next socket needs one, and the heap never holds them all at once.
        let active_epoch = match &shard.parking {
            Some(lot) => {
                lot.connection_active();
                lot.epoch().wrapping_sub(2)
            }
            None => 0,
        };
        ConnectedClient {
            active_epoch,
            _permit: permit,
            shard,
            wire,
            session,
            conn,
            level,
            bridge,
            v5,
            will: will.map(Box::new),
            keepalive,
            phase: Phase::Serving,
            held: None,
            acks: None,
        }
    }

    /// One loop turn after another until the client must wait or the connection ends.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            if let Phase::Waiting = self.phase {
                match self.poll_event(cx) {
                    Poll::Ready(Event::Input | Event::Output) => {
                        self.mark_active();
                        self.phase = Phase::Serving;
                        // glommio switches tasks only when one returns Pending: a client that
                        // always has input must still let the others run.
                        if glommio::executor().need_preempt() {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        continue;
                    }
                    Poll::Ready(Event::Closed(reason)) => return Poll::Ready(reason),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Phase::WaitingForRouter = self.phase {
                if self.shard.poll_uncongested(cx).is_pending() {
                    return Poll::Pending;
                }
            } else {
                if !self.wire.wbuf.has_buffer() {
                    let buf = self.shard.write_pool.borrow_mut().take();
                    self.wire.wbuf.set_buffer(buf);
                }
                if let Err(reason) = self.process_input() {
                    return Poll::Ready(reason);
                }
                self.release_acks(None);
                self.shard.flush();
                if self.shard.congested() {
                    self.phase = Phase::WaitingForRouter;
                    continue;
                }
            }
            {
                let mut session = self.session.borrow_mut();
                if let Some(kick) = session.kicked(self.conn) {
                    return Poll::Ready(match kick {
                        Kick::TakenOver => CloseReason::TakenOver,
                        Kick::Continued => {
                            // The session goes on in the new connection: no will.
                            self.will = None;
                            CloseReason::TakenOver
                        }
                        Kick::Shutdown => CloseReason::Shutdown,
                    });
                }
                if self.wire.wbuf.len() < WRITE_HIGH_WATER {
                    let packets = session.fill(&mut self.wire.wbuf, WRITE_HIGH_WATER);
                    if let Some(n) = session.stored_as() {
                        let journal = self.shard.journal();
                        if self.shard.copies_changes(&session) {
                            // Copied too (`shard::session_copies`): taken first, as the copy
                            // reads the session.
                            let sent: smallvec::SmallVec<[(u64, u16); 16]> =
                                session.take_sent().collect();
                            for (seq, packet_id) in sent {
                                if let Some(journal) = journal {
                                    journal.sent(n, seq, packet_id);
                                }
                                self.shard.copy_change(&session, |session| Record::Sent {
                                    session,
                                    seq,
                                    packet_id,
                                });
                            }
                        } else {
                            for (seq, packet_id) in session.take_sent() {
                                if let Some(journal) = journal {
                                    journal.sent(n, seq, packet_id);
                                }
                            }
                        }
                    }
                    add(&self.shard.metrics.packets_out, packets as u64);
                    let counts = session.take_fill_counts();
                    if counts != Default::default() {
                        let m = &self.shard.metrics;
                        add(&m.publishes_out, u64::from(counts.publishes));
                        add(&m.dropped_too_large, u64::from(counts.too_large));
                        add(&m.dropped_expired, u64::from(counts.expired));
                    }
                    let under_pressure = session.under_pressure();
                    drop(session);
                    if under_pressure {
                        self.shard.relieve(&self.session);
                    }
                    if packets > 0 {
                        // A subscriber that only receives is busy too: it must not park.
                        self.mark_active();
                    }
                }
            }
            self.phase = Phase::Waiting;
        }
    }

    /// Moves the acknowledgements whose data is durable into the write buffer; returns how
    /// many. With `cx`, the task is woken when more may be.
    fn release_acks(&mut self, cx: Option<&mut Context<'_>>) -> usize {
        let Some(acks) = &mut self.acks else {
            return 0;
        };
        let released = acks.release(&self.shard, self.wire.wbuf.encoded(), cx);
        add(&self.shard.metrics.packets_out, released as u64);
        released
    }

    fn mark_active(&mut self) {
        if let Some(lot) = &self.shard.parking {
            self.active_epoch = lot.epoch();
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let pending_output = self.wire.wbuf.len();
        let flushed = self.wire.poll_flush(cx);
        add(
            &self.shard.metrics.bytes_out,
            (pending_output - self.wire.wbuf.len()) as u64,
        );
        if let Poll::Ready(Err(e)) = flushed {
            return Poll::Ready(Event::Closed(CloseReason::Io(e)));
        }
        {
            let mut session = self.session.borrow_mut();
            if self.wire.wbuf.len() < pending_output {
                // The client reads: a subscriber that stalled is live again.
                session.note_progress();
            }
            if session.kicked(self.conn).is_some()
                || (self.wire.wbuf.len() < WRITE_HIGH_WATER && session.has_sendable())
            {
                return Poll::Ready(Event::Output);
            }
            if session.at_closed_gate() {
                self.shard.blocked_at_gate(&mut session);
            }
            session.set_waker(cx.waker());
        }
        if let Some(id) = self.held.as_ref().and_then(|h| h.waiting_for()) {
            if self.shard.pressure.poll_relieved(&id, cx).is_ready() {
                return Poll::Ready(Event::Input);
            }
        }
        if self.release_acks(Some(cx)) > 0 {
            return Poll::Ready(Event::Output);
        }
        if self.wire.wbuf.len() < READ_PAUSE
            && self
                .held
                .as_ref()
                .is_none_or(|h| h.reads_more(self.session.borrow().inflight() > 0))
            && self
                .acks
                .as_ref()
                .is_none_or(|a| a.len() < acks::MAX_WAITING)
        {
            let mut arena = self.shard.read_arena.borrow_mut();
            match self
                .wire
                .poll_read(cx, &mut arena, self.shard.config.max_packet_size)
            {
                Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed(CloseReason::Eof)),
                Poll::Ready(Ok(n)) => {
                    add(&self.shard.metrics.bytes_in, n as u64);
                    if let Some(keepalive) = &mut self.keepalive {
                        keepalive.last_input = Instant::now();
                    }
                    return Poll::Ready(Event::Input);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Closed(CloseReason::Io(e))),
                Poll::Pending => {}
            }
        }
        if self.keepalive_expired() {
            return Poll::Ready(Event::Closed(CloseReason::KeepaliveTimeout));
        }
        self.wire
            .release_idle_buffers(&mut self.shard.write_pool.borrow_mut());
        self.park_if_quiet();
        Poll::Pending
    }

    /// Parks the socket of a connection that had no input or output for a whole parking epoch
    /// and holds nothing to read or write.
    fn park_if_quiet(&mut self) {
        let Some(lot) = &self.shard.parking else {
            return;
        };
        if lot.epoch().wrapping_sub(self.active_epoch) < 2
            || self.held.is_some()
            || self.acks.as_ref().is_some_and(|a| !a.is_empty())
            || !self.wire.holds_nothing()
            || self.wire.is_parked()
        {
            return;
        }
        let mut session = self.session.borrow_mut();
        match self.wire.park(lot, super::parking::token(session.id)) {
            Ok(()) => {
                session.parked = true;
                add(&self.shard.metrics.parks, 1);
            }
            Err(e) => debug!(client = %session.client_id, "connection cannot park: {e}"),
        }
    }

    /// Whether a parked connection has a reason to take its socket back: input (or the end of
    /// it), something to send, a kick, or a passed keepalive deadline. A parked task can also be
    /// woken for nothing (glommio completing the cancelled poll of the socket it let go);
    /// then it stays parked, ready to be woken again.
    fn must_unpark(&mut self, cx: &mut Context<'_>) -> bool {
        {
            let mut session = self.session.borrow_mut();
            if std::mem::take(&mut session.readable)
                || session.has_sendable()
                || session.kicked(self.conn).is_some()
            {
                return true;
            }
            if session.at_closed_gate() {
                self.shard.blocked_at_gate(&mut session);
            }
            session.set_waker(cx.waker());
        }
        if self.keepalive_expired() {
            // Unparked to close: the loop must see the deadline again.
            self.session.borrow_mut().keepalive_due = true;
            return true;
        }
        false
    }

    /// Whether the keepalive deadline the shard reported has really passed: input since it
    /// was filed moves it, and the next deadline is filed instead.
    fn keepalive_expired(&mut self) -> bool {
        let Some(keepalive) = &self.keepalive else {
            return false;
        };
        let mut session = self.session.borrow_mut();
        if !std::mem::take(&mut session.keepalive_due) {
            return false;
        }
        // A client held back may be blocked on the broker not reading it: not its silence.
        if keepalive.last_input.elapsed() >= keepalive.limit && self.held.is_none() {
            return true;
        }
        self.shard.keepalives.file(
            session.id,
            self.conn,
            keepalive.last_input + keepalive.limit,
        );
        false
    }

    /// Takes a parked socket back into glommio; the normal loop then handles whatever woke it.
    fn unpark(&mut self) {
        if let Some(lot) = &self.shard.parking {
            self.wire.unpark(lot);
            let mut session = self.session.borrow_mut();
            session.parked = false;
            session.readable = false;
            self.active_epoch = lot.epoch();
            add(&self.shard.metrics.unparks, 1);
        }
    }

    /// Handles every complete packet in the read buffer (while the client's publishing is
    /// held back, only those that bypass the hold; the rest wait in [`Held`]).
    fn process_input(&mut self) -> Result<(), CloseReason> {
        if self.held.is_some() {
            self.handle_held()?;
        }
        let max = self.shard.config.max_packet_size;
        loop {
            match decode(&mut self.wire.rbuf, max, self.level) {
                Ok(Some(packet)) => {
                    add(&self.shard.metrics.packets_in, 1);
                    let packet = match &mut self.held {
                        Some(held) => {
                            let packet = held.hold(packet);
                            if packet.is_none() {
                                self.check_receive_maximum()?;
                            }
                            packet
                        }
                        None => Some(packet),
                    };
                    if let Some(packet) = packet {
                        self.handle(packet)?
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(CloseReason::Malformed(e)),
            }
        }
    }

    /// MQTT 5 Will Delay Interval: the will goes out once `delay` has passed, or the session
    /// expired if that comes first, unless the client connected again to this session
    /// meanwhile (MQTT-3.1.3-9 of 5.0).
    /// The will waits in the shard's `delayed_wills`: a resumed session takes it out, an
    /// ended one sends it at once, and otherwise this connection's timer sends it.
    fn publish_will_later(&self, message: Message, delay: Duration) {
        let id = self.session.borrow().id;
        self.shard.file_delayed_will(id, self.conn, message, delay);
    }

    /// Ends the connection: the will (unless the client said DISCONNECT), the session (if
    /// clean), the counters and the log line. Output already encoded still gets a moment.
    fn finish(&mut self, reason: CloseReason) {
        let reason = self.handle_held_at_close(reason);
        self.held = None;
        if self.v5.is_some() {
            if let Some(code) = v5::disconnect_reason(&reason) {
                // MQTT 5: say why before closing (MQTT-4.13.1-1).
                let mut goodbye = Disconnect::with_reason(code);
                let v5 = self.v5.as_deref().expect("checked above");
                let max_size = self.session.borrow().peer.max_packet_size;
                goodbye.properties = v5.problem_text(&reason, max_size);
                let _ = Packet::Disconnect(goodbye).encode(self.wire.wbuf.encoded(), self.level);
            }
        }
        let mut delayed_will = None;
        if reason.publishes_will() {
            if let Some(will) = self.will.take() {
                let LastWill {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties,
                } = *will;
                let delay = properties
                    .as_ref()
                    .and_then(|p| p.will_delay_interval)
                    .unwrap_or(0);
                let message = Message::new(topic, payload, qos, retain)
                    .with_v5(v5::message_part(properties.as_deref(), Instant::now()));
                // A session that ends now (clean, or taken over by a Clean Start) sends its
                // will now: the delay lasts at most as long as the session.
                let id = self.session.borrow().id;
                let session_lives = !self.session.borrow().clean
                    && self
                        .shard
                        .sessions
                        .borrow()
                        .get(id.slot, id.generation)
                        .is_some();
                if delay > 0 && session_lives {
                    delayed_will = Some((message, Duration::from_secs(u64::from(delay))));
                } else {
                    // Nobody to hold back and nobody to acknowledge: the connection is gone.
                    let publisher = self.session.borrow().id;
                    let _ = self
                        .shard
                        .route_published(Arc::new(message), Some(publisher));
                    self.shard.flush();
                }
            }
        }
        let detached = self.session.borrow_mut().detach(self.conn);
        if let (true, Some((message, delay))) = (detached, delayed_will) {
            self.publish_will_later(message, delay);
        }
        if detached {
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.shard
                .journal_session(&self.session.borrow(), |session| {
                    crate::store::Record::Detached { session, at_ms }
                });
            // An offline session holds nobody back: its queue drops at the limit.
            self.shard.relieve(&self.session);
            if !self.session.borrow().clean {
                // When it went, for the directory's copy to expire with it (cluster).
                self.shard.save_to_directory(&self.session, at_ms);
                // Kept for its client: its groups' messages go to members that are online.
                self.shard.announce_presence(&self.session, false);
                if self.shard.config.shared_redispatch {
                    self.shard.redispatch_shared(&self.session);
                }
                // As it now stands, for another node if this one goes down (cluster).
                self.shard.copy_when_gone(&self.session.borrow(), at_ms);
            }
        }
        if detached && self.session.borrow().clean {
            self.shard.remove_session(&self.session);
            self.shard.flush();
        }
        let metrics = &self.shard.metrics;
        metrics.connections.set(metrics.connections.get() - 1);
        if let Some(lot) = &self.shard.parking {
            lot.connection_ended();
        }
        if self.keepalive.is_some() {
            self.shard.keepalives.connection_ended();
        }
        let client_id = self.session.borrow().client_id.clone();
        log_close(&self.shard, Some(&client_id), &self.wire, reason);
        self.wire.say_goodbye();
        self.phase = if !self.wire.has_output() {
            Phase::Done
        } else {
            Phase::Closing(Timer::new(CLOSING_FLUSH))
        };
    }
}

impl Future for ConnectedClient {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Serving | Phase::Waiting | Phase::WaitingForRouter => {
                    if this.wire.is_parked() {
                        if !this.must_unpark(cx) {
                            return Poll::Pending;
                        }
                        this.unpark();
                    }
                    match this.poll_serve(cx) {
                        Poll::Ready(reason) => this.finish(reason),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Phase::Closing(deadline) => {
                    // Best effort: acknowledgements already encoded still reach a client that
                    // is leaving, unless it stops reading.
                    let flushed = this.wire.poll_flush(cx).is_ready();
                    if !flushed && Pin::new(deadline).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.phase = Phase::Done;
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task is what an idle connection costs (with glommio's task header and poll source,
    /// the session, and no buffers): keep it small. 384 bytes leaves room for a field or two;
    /// the `async fn` loop this replaced was about 2,000.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let size = std::mem::size_of::<ConnectedClient>();
        assert!(size <= 384, "ConnectedClient is {size} bytes");
    }
}
