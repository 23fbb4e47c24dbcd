//! One benchmark client: a connection that publishes, subscribes, or (mesh) both, run as one
//! task on a generator thread.
//!
//! The task is a loop over one event wait, like the broker's connections: decode everything
//! that was read (count deliveries, queue acknowledgements), tell the board how far each
//! stream got, encode as many PUBLISHes as the window, the rate and the write buffer allow, and
//! then wait for whichever comes first: input, room in the socket, a wider window, the rate
//! timer, the keepalive timer or a phase change. Everything owed to the broker leaves in one
//! write per turn, so a busy client sends hundreds of messages per syscall and a quiet one
//! still answers at once.

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::Future;
use glommio::timer::Timer;

use super::config::{Load, Plan};
use super::conn::{Conn, Frame, KEEPALIVE_SECS};
use super::payload::{self, Header};
use super::shared::{Local, Phase, Shared};
use super::tracker::SubResult;
use super::window::{allowance, due, due_at_ns};
use crate::protocol::{
    encode_ack, encode_publish, publish_len, Packet, PacketType, PublishHeader, QoS,
};

/// Pending output above which a publisher stops encoding until the socket takes some.
const HIGH_WATER: usize = 64 * 1024;
/// Most messages encoded in one turn, so that one client cannot hog its thread.
const MAX_BATCH: u64 = 1024;
/// Open loop at QoS 1/2: packet identifiers limit what may be unacknowledged.
const MAX_UNACKED: u64 = 60_000;

/// Which roles a client plays, and where it sits on its thread.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec {
    /// Index over all clients of the run (names the client id).
    pub index: usize,
    /// Index among the clients of its thread.
    pub slot: usize,
    pub publisher: Option<usize>,
    pub subscriber: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct PubResult {
    pub index: usize,
    pub sent: u64,
    pub acked: u64,
    pub last_send_ns: u64,
    pub last_ack_ns: u64,
}

#[derive(Debug, Default)]
pub struct ClientResult {
    pub publisher: Option<PubResult>,
    pub subscriber: Option<SubResult>,
}

/// How often a publisher with a full window looks at the board even without a wake-up.
const WINDOW_RECHECK: Duration = Duration::from_millis(1);

struct Publisher {
    r: PubResult,
    topic: String,
    payload: Vec<u8>,
    limit: Option<u64>,
    window: Option<u64>,
    rate: Option<f64>,
    next_id: u16,
    done: bool,
    timer: Option<Timer>,
    /// Counts already added to the thread's stats.
    reported: (u64, u64),
}

struct Subscriber {
    r: SubResult,
    /// Publishers whose stream moved since the board was last told.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    delivered_unreported: u64,
}

enum Budget {
    Now(u64),
    /// Window (or unacknowledged limit) full: wait for progress.
    Full,
    /// Open loop: the next message is due at this time (ns since the clock base).
    At(u64),
    Done,
}

pub(super) struct Client {
    spec: ClientSpec,
    shared: Arc<Shared>,
    local: Rc<Local>,
    conn: Conn,
    qos: QoS,
    /// `--offline`: subscribers are away while publishers run, so the window counts only
    /// acknowledgements, and a message's age at arrival is no latency.
    offline: bool,
    start_ns: u64,
    publisher: Option<Publisher>,
    subscriber: Option<Subscriber>,
    ping: Timer,
}

/// Runs one client from connect to disconnect and returns what it counted.
pub async fn run(
    spec: ClientSpec,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    local: Rc<Local>,
) -> ClientResult {
    if plan.config.offline && spec.subscriber.is_some() {
        return super::offline::run_subscriber(spec, plan, shared, local).await;
    }
    let timeout = plan.config.setup_timeout;
    let setup = or(async { Some(setup(spec, &plan).await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await;
    let conn = match setup {
        Some(Ok(conn)) => conn,
        Some(Err(e)) => return failed_setup(spec, &plan, &shared, e).await,
        None => {
            let e = format!("no SUBACK/CONNACK within {timeout:?}");
            return failed_setup(spec, &plan, &shared, e).await;
        }
    };
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let mut client = Client::new(spec, &plan, shared, local, conn);
    if let Err(e) = client.run().await {
        client.shared.error(format!("client {}: {e}", spec.index));
    }
    let result = client.finish().await;
    remove_session(&plan, spec).await;
    result
}

pub(super) async fn setup(spec: ClientSpec, plan: &Plan) -> Result<Conn, String> {
    let c = &plan.config;
    let addr = addr_of(plan, spec);
    let mut conn = Conn::connect(addr, c.setup_timeout, plan.dial.as_ref())
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    conn.rbuf.level = c.protocol;
    let id = client_id(plan, spec);
    let clean = !persistent_session(plan, spec);
    conn.handshake(&id, clean, c.username.as_deref(), c.password.as_deref())
        .await?;
    if spec.subscriber.is_some() {
        conn.subscribe(&plan.filter, c.qos).await?;
    }
    Ok(conn)
}

/// Where a client connects: with `--spread-ports`, its turn of the ports; otherwise
/// subscribers to `subscriber_addr` (the far side of a bridge, when it differs), everyone else
/// to `addr`.
pub(super) fn addr_of(plan: &Plan, spec: ClientSpec) -> std::net::SocketAddr {
    if !plan.spread.is_empty() {
        return plan.spread[spec.index % plan.spread.len()];
    }
    match spec.subscriber {
        Some(_) if spec.publisher.is_none() => plan.subscriber_addr,
        _ => plan.addr,
    }
}

pub(super) fn client_id(plan: &Plan, spec: ClientSpec) -> String {
    format!("smqb-{}-{}", plan.run_id, spec.index)
}

/// Subscribers of a `--persistent` run keep a session on the broker, publishers of a
/// `--persistent-publishers` run too.
fn persistent_session(plan: &Plan, spec: ClientSpec) -> bool {
    (plan.config.persistent && spec.subscriber.is_some())
        || (plan.config.persistent_publishers && spec.publisher.is_some())
}

/// Removes a persistent session the run left on the broker: a clean CONNECT takes it over and
/// ends it (MQTT-3.1.2-6), then DISCONNECT. Best effort, within 2 s: the counts are taken.
pub(super) async fn remove_session(plan: &Plan, spec: ClientSpec) {
    if !persistent_session(plan, spec) {
        return;
    }
    let c = &plan.config;
    let id = client_id(plan, spec);
    let remove = async {
        let addr = addr_of(plan, spec);
        let Ok(mut conn) = Conn::connect(addr, c.setup_timeout, plan.dial.as_ref()).await else {
            return;
        };
        conn.rbuf.level = c.protocol;
        let clean = conn
            .handshake(&id, true, c.username.as_deref(), c.password.as_deref())
            .await;
        if clean.is_ok() {
            conn.close(Duration::from_secs(1)).await;
        }
    };
    or(remove, glommio::timer::sleep(Duration::from_secs(2))).await;
}

pub(super) async fn failed_setup(
    spec: ClientSpec,
    plan: &Plan,
    shared: &Shared,
    e: String,
) -> ClientResult {
    shared.error(format!("client {}: {e}", spec.index));
    shared.failed.fetch_add(1, Ordering::AcqRel);
    if spec.publisher.is_some() {
        shared.publishers_done.fetch_add(1, Ordering::AcqRel);
    }
    remove_session(plan, spec).await;
    ClientResult::default()
}

impl Client {
    pub(super) fn new(
        spec: ClientSpec,
        plan: &Plan,
        shared: Arc<Shared>,
        local: Rc<Local>,
        conn: Conn,
    ) -> Client {
        let c = &plan.config;
        let publisher = spec.publisher.map(|index| Publisher {
            r: PubResult {
                index,
                ..Default::default()
            },
            topic: plan.topics[index].clone(),
            payload: payload::template(c.size),
            limit: match c.load {
                Load::Messages(n) => Some(n),
                Load::Duration(_) => None,
            },
            window: plan.window,
            rate: plan.rate_per_publisher,
            next_id: 0,
            done: false,
            timer: None,
            reported: (0, 0),
        });
        let subscriber = spec.subscriber.map(|index| Subscriber {
            r: SubResult::new(index, plan),
            dirty: Vec::new(),
            is_dirty: vec![false; plan.publishers],
            delivered_unreported: 0,
        });
        Client {
            spec,
            qos: c.qos,
            offline: c.offline,
            shared,
            local,
            conn,
            start_ns: 0,
            publisher,
            subscriber,
            ping: Timer::new(Duration::from_secs(KEEPALIVE_SECS as u64 / 2)),
        }
    }

    pub(super) async fn run(&mut self) -> Result<(), String> {
        loop {
            let phase = self.local.control.phase();
            if phase == Phase::Finished {
                return Ok(());
            }
            let now = self.shared.now_ns();
            self.process_input(now)?;
            self.report_deliveries();
            match phase {
                Phase::Running => {
                    if self.start_ns == 0 {
                        self.start_ns = self.shared.start_ns.load(Ordering::Acquire);
                    }
                    self.publish(now);
                }
                Phase::Draining | Phase::Reconnecting => self.stop_publishing(),
                _ => {}
            }
            self.report_publishes();
            poll_fn(|cx| self.poll_event(cx, phase)).await?;
            // A client that always has work must still let the others on its thread run.
            glommio::yield_if_needed().await;
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<Result<(), String>> {
        if let Poll::Ready(Err(e)) = self.conn.poll_flush(cx) {
            return Poll::Ready(Err(format!("write: {e}")));
        }
        if self.local.control.phase() != phase {
            return Poll::Ready(Ok(()));
        }
        self.local.control.register(self.spec.slot, cx.waker());
        if phase == Phase::Running && self.conn.pending() < HIGH_WATER {
            let now = self.shared.now_ns();
            match self.budget(now) {
                Budget::Now(_) => return Poll::Ready(Ok(())),
                Budget::Full => {
                    let p = self.publisher.as_ref().map(|p| p.r.index).unwrap_or(0);
                    self.shared.board.wait(p, cx.waker());
                    // Progress that came before the registration woke nobody: look again.
                    if let Budget::Now(_) = self.budget(now) {
                        return Poll::Ready(Ok(()));
                    }
                    // Safety net: a wake-up from a subscriber thread (through glommio's
                    // cross-thread waker) was seen to get lost, leaving a publisher waiting
                    // with every message delivered (perf/results/2026-11-22-vm.md). Look
                    // again after WINDOW_RECHECK whatever happens; in a load generator that
                    // costs nothing that matters.
                    if let Some(publisher) = self.publisher.as_mut() {
                        let timer = publisher
                            .timer
                            .get_or_insert_with(|| Timer::new(WINDOW_RECHECK));
                        timer.reset(WINDOW_RECHECK);
                        if Pin::new(timer).poll(cx).is_ready() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                Budget::At(at) => {
                    let publisher = self
                        .publisher
                        .as_mut()
                        .expect("only publishers have a rate");
                    let wait = Duration::from_nanos(at.saturating_sub(now));
                    let timer = publisher.timer.get_or_insert_with(|| Timer::new(wait));
                    timer.reset(wait);
                    if Pin::new(timer).poll(cx).is_ready() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Budget::Done => {}
            }
        }
        match self.conn.poll_read(cx) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err("broker closed the connection".into())),
            Poll::Ready(Ok(_)) => return Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(format!("read: {e}"))),
            Poll::Pending => {}
        }
        if Pin::new(&mut self.ping).poll(cx).is_ready() {
            // Subscribers send nothing else; without this the broker's keepalive would end
            // a long run.
            let _ = Packet::PingReq.encode(&mut self.conn.wbuf, self.conn.rbuf.level);
            self.ping
                .reset(Duration::from_secs(KEEPALIVE_SECS as u64 / 2));
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// How many messages the publisher may send now, or what it waits for.
    fn budget(&self, now: u64) -> Budget {
        let Some(p) = &self.publisher else {
            return Budget::Done;
        };
        if p.done {
            return Budget::Done;
        }
        let mut n = match p.limit {
            Some(limit) if p.r.sent >= limit => return Budget::Done,
            Some(limit) => limit - p.r.sent,
            None => u64::MAX,
        };
        let acked = (self.qos != QoS::AtMostOnce).then_some(p.r.acked);
        if let Some(w) = p.window {
            let delivered = match self.offline {
                true => None,
                false => self.shared.board.delivered(p.r.index),
            };
            n = n.min(allowance(p.r.sent, acked, delivered, w));
        } else if let Some(acked) = acked {
            n = n.min(MAX_UNACKED.saturating_sub(p.r.sent - acked));
        }
        if n == 0 {
            return Budget::Full;
        }
        if let Some(rate) = p.rate {
            let elapsed = now.saturating_sub(self.start_ns);
            let behind = due(elapsed, rate).saturating_sub(p.r.sent);
            if behind == 0 {
                return Budget::At(self.start_ns + due_at_ns(p.r.sent, rate));
            }
            n = n.min(behind);
        }
        Budget::Now(n)
    }

    fn publish(&mut self, now: u64) {
        let Budget::Now(n) = self.budget(now) else {
            self.check_done();
            return;
        };
        let Some(p) = self.publisher.as_mut() else {
            return;
        };
        let v5 = self.conn.rbuf.level.is_v5();
        // MQTT 5: one more byte, the empty property block.
        let len = publish_len(p.topic.len(), p.payload.len(), self.qos) + usize::from(v5);
        let room = (HIGH_WATER.saturating_sub(self.conn.pending()) / len) as u64 + 1;
        let n = n.min(room).min(MAX_BATCH);
        self.conn.wbuf.reserve(n as usize * len);
        for _ in 0..n {
            let seq = p.r.sent;
            // Open loop: latency counts from when the message was due, so a generator or
            // broker that falls behind cannot hide it (no coordinated omission).
            let sent_ns = match p.rate {
                Some(rate) => (self.start_ns + due_at_ns(seq, rate)).min(now),
                None => now,
            };
            Header {
                publisher: p.r.index as u32,
                seq,
                sent_ns,
            }
            .write(&mut p.payload);
            let id = if self.qos == QoS::AtMostOnce {
                0
            } else {
                p.next_id = p.next_id.checked_add(1).unwrap_or(1);
                p.next_id
            };
            if v5 {
                PublishHeader {
                    topic: &p.topic,
                    payload_len: p.payload.len(),
                    qos: self.qos,
                    retain: false,
                    dup: false,
                    packet_id: id,
                    properties: Some(&[]),
                }
                .encode(&mut self.conn.wbuf, p.payload.len())
                .expect("topic and size were validated");
                self.conn.wbuf.extend_from_slice(&p.payload);
            } else {
                encode_publish(
                    &mut self.conn.wbuf,
                    &p.topic,
                    &p.payload,
                    self.qos,
                    false,
                    false,
                    id,
                )
                .expect("topic and size were validated");
            }
            p.r.sent += 1;
        }
        p.r.last_send_ns = now;
        self.check_done();
    }

    fn check_done(&mut self) {
        if let Some(p) = &self.publisher {
            if !p.done && p.limit.is_some_and(|l| p.r.sent >= l) {
                self.stop_publishing();
            }
        }
    }

    fn stop_publishing(&mut self) {
        if let Some(p) = self.publisher.as_mut() {
            if !p.done {
                p.done = true;
                self.shared.publishers_done.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Handles every complete packet in the read buffer.
    fn process_input(&mut self, now: u64) -> Result<(), String> {
        let mut histogram = self.local.histogram.borrow_mut();
        let wbuf = &mut self.conn.wbuf;
        loop {
            let frame = match self.conn.rbuf.next_frame()? {
                Some(frame) => frame,
                None => return Ok(()),
            };
            let packet = match frame {
                Frame::Publish {
                    qos,
                    packet_id,
                    payload,
                } => {
                    match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => encode_ack(wbuf, PacketType::PubAck, packet_id),
                        QoS::ExactlyOnce => encode_ack(wbuf, PacketType::PubRec, packet_id),
                    }
                    let Some(s) = self.subscriber.as_mut() else {
                        return Err("received a PUBLISH without subscribing".into());
                    };
                    let header =
                        Header::read(payload).filter(|h| (h.publisher as usize) < s.r.publishers());
                    let Some(h) = header else {
                        s.r.foreign += 1;
                        continue;
                    };
                    let p = h.publisher as usize;
                    if s.r.record(p, h.seq) {
                        s.delivered_unreported += 1;
                    }
                    if !s.is_dirty[p] {
                        s.is_dirty[p] = true;
                        s.dirty.push(p);
                    }
                    if !self.offline {
                        histogram.saturating_record(now.saturating_sub(h.sent_ns));
                    }
                    s.r.last_recv_ns = now;
                    continue;
                }
                Frame::Other(packet) => packet,
            };
            match packet {
                Packet::PubAck(_) | Packet::PubComp(_) => {
                    if let Some(p) = self.publisher.as_mut() {
                        p.r.acked += 1;
                        p.r.last_ack_ns = now;
                    }
                }
                Packet::PubRec(rec) => encode_ack(wbuf, PacketType::PubRel, rec.packet_id),
                Packet::PubRel(rel) => encode_ack(wbuf, PacketType::PubComp, rel.packet_id),
                Packet::PingResp => {}
                other => return Err(format!("unexpected {:?} from broker", other.packet_type())),
            }
        }
    }

    /// Tells the board how far each stream that moved got (waking its publisher if it
    /// waits), and the thread's counters how much was delivered.
    fn report_deliveries(&mut self) {
        let Some(s) = self.subscriber.as_mut() else {
            return;
        };
        for p in s.dirty.drain(..) {
            s.is_dirty[p] = false;
            let (progress, received) = s.r.progress(p);
            self.shared.board.advance(p, s.r.index, progress, received);
        }
        if s.delivered_unreported > 0 {
            self.shared.threads[self.local.thread]
                .0
                .delivered
                .fetch_add(s.delivered_unreported, Ordering::Relaxed);
            s.delivered_unreported = 0;
        }
    }

    fn report_publishes(&mut self) {
        let Some(p) = self.publisher.as_mut() else {
            return;
        };
        let (sent, acked) = (p.r.sent, p.r.acked);
        if (sent, acked) == p.reported {
            return;
        }
        let slot = self.shared.board.slot(p.r.index);
        slot.sent.store(sent, Ordering::Relaxed);
        slot.acked.store(acked, Ordering::Relaxed);
        let stats = &self.shared.threads[self.local.thread].0;
        stats
            .published
            .fetch_add(sent - p.reported.0, Ordering::Relaxed);
        stats
            .acked
            .fetch_add(acked - p.reported.1, Ordering::Relaxed);
        p.reported = (sent, acked);
    }

    pub(super) async fn finish(mut self) -> ClientResult {
        // Whatever arrived with the last read still counts.
        let now = self.shared.now_ns();
        let _ = self.process_input(now);
        self.report_deliveries();
        self.stop_publishing();
        self.report_publishes();
        let result = ClientResult {
            publisher: self.publisher.take().map(|p| p.r),
            subscriber: self.subscriber.take().map(|s| s.r),
        };
        self.conn.close(Duration::from_secs(1)).await;
        result
    }
}
