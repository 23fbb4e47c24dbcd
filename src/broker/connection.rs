//! A client connection's life on the broker: the CONNECT phase, the move to the client id's
//! home shard, the packet loop, and the end (will, session cleanup, one log line with the
//! reason).
//!
//! The loop waits for whichever comes first: input from the socket, messages the session wants
//! sent, room in the socket for pending output, the keepalive deadline, or a kick (takeover,
//! shutdown). Everything the connection owes the client is encoded into the wire's write buffer
//! and leaves in one write per loop turn.

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future::or;
use glommio::net::TcpStream;
use glommio::timer::Timer;
use tracing::debug;

use super::mesh::{Message, MovedConnection, ShardMessage};
use super::metrics::add;
use super::session::{Kick, Session};
use super::shard::{home_shard, ConnectionPermit, Shard};
use super::wire::Wire;
use crate::auth::{AuthDecision, Credentials};
use crate::protocol::{
    decode, encode_ack, ByteStr, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill,
    Packet, PacketType, ProtocolLevel, Publish, QoS,
};

/// Bytes of pending output above which the session stops filling the write buffer.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Pending output above which we stop reading: the client is not reading its acknowledgements.
const READ_PAUSE: usize = 4 * WRITE_HIGH_WATER;

/// Why a connection ended; logged once per connection.
#[derive(Debug)]
pub enum CloseReason {
    /// The client sent DISCONNECT: the will is discarded.
    Disconnect,
    /// The peer closed the socket without DISCONNECT.
    Eof,
    Io(io::Error),
    Malformed(DecodeError),
    /// A well-formed packet that breaks a protocol rule.
    Violation(&'static str),
    ConnectTimeout,
    KeepaliveTimeout,
    TakenOver,
    Shutdown,
    /// CONNACK with a non-zero return code was sent.
    Refused(ConnectReturnCode),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Disconnect => f.write_str("client sent DISCONNECT"),
            CloseReason::Eof => f.write_str("peer closed the connection without DISCONNECT"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Malformed(e) => write!(f, "malformed packet: {e}"),
            CloseReason::Violation(rule) => write!(f, "protocol violation: {rule}"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            CloseReason::KeepaliveTimeout => f.write_str(
                "keepalive timeout: nothing received for 1.5 x keepalive (MQTT-3.1.2-24)",
            ),
            CloseReason::TakenOver => {
                f.write_str("taken over by a new connection with the same client id (MQTT-3.1.4-2)")
            }
            CloseReason::Shutdown => f.write_str("broker shutting down"),
            CloseReason::Refused(code) => {
                write!(f, "connection refused with CONNACK {}", *code as u8)
            }
        }
    }
}

impl CloseReason {
    /// The will is published when the connection ends other than by DISCONNECT (MQTT-3.1.2-8).
    /// A broker shutdown is not the client's failure, so it does not publish wills either.
    fn publishes_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::Disconnect | CloseReason::Shutdown | CloseReason::Refused(_)
        )
    }

    fn counts_as_protocol_error(&self) -> bool {
        matches!(self, CloseReason::Malformed(_) | CloseReason::Violation(_))
    }
}

/// Serves a socket accepted on this shard: reads CONNECT, then either serves the client here
/// or hands the socket to the client id's home shard.
pub async fn serve_accepted(shard: Rc<Shard>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let mut wire = Wire::new(stream, peer);
    let Some(permit) = shard.admit() else {
        // Full: say so (CONNACK 3, server unavailable) without waiting for CONNECT, and close.
        let reason = CloseReason::Refused(ConnectReturnCode::ServerUnavailable);
        let _ = or(
            refuse(&shard, &mut wire, ConnectReturnCode::ServerUnavailable),
            async {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            },
        )
        .await;
        return log_close(&shard, None, &wire, reason);
    };
    wire.set_nodelay();
    let max = shard.config.max_packet_size;
    let timeout = shard.config.connect_timeout;
    let first = or(
        async { Some(read_packet(&shard, &mut wire, max).await) },
        async {
            glommio::timer::sleep(timeout).await;
            None
        },
    )
    .await;
    let connect = match first {
        None => return log_close(&shard, None, &wire, CloseReason::ConnectTimeout),
        Some(Ok(Packet::Connect(connect))) => connect,
        Some(Ok(_)) => {
            let reason = CloseReason::Violation("first packet is not CONNECT (MQTT-3.1.0-1)");
            return log_close(&shard, None, &wire, reason);
        }
        Some(Err(CloseReason::Malformed(DecodeError::UnsupportedProtocolLevel(level)))) => {
            // MQTT-3.1.2-2: answer CONNACK 1, then close.
            refuse(
                &shard,
                &mut wire,
                ConnectReturnCode::UnacceptableProtocolVersion,
            )
            .await;
            let reason = CloseReason::Malformed(DecodeError::UnsupportedProtocolLevel(level));
            return log_close(&shard, None, &wire, reason);
        }
        Some(Err(reason)) => return log_close(&shard, None, &wire, reason),
    };
    let mut connect = connect;
    if connect.client_id.is_empty() {
        // MQTT 3.1 requires 1 to 23 characters; 3.1.1 allows empty with CleanSession = 1.
        if !connect.clean_session || connect.level == ProtocolLevel::V31 {
            // MQTT-3.1.3-8: an empty client id needs CleanSession = 1.
            refuse(&shard, &mut wire, ConnectReturnCode::IdentifierRejected).await;
            let reason = CloseReason::Refused(ConnectReturnCode::IdentifierRejected);
            return log_close(&shard, None, &wire, reason);
        }
        connect.client_id = shard.assign_client_id();
    }
    if let Some(will) = &connect.will {
        if too_many_levels(&will.topic, shard.config.max_topic_levels) {
            let reason =
                CloseReason::Violation("will topic has more levels than --max-topic-levels");
            return log_close(&shard, Some(&connect.client_id), &wire, reason);
        }
    }
    if let Err(code) = authenticate(&shard, &connect, wire.peer) {
        refuse(&shard, &mut wire, code).await;
        let c = &shard.metrics.refused_auth;
        c.set(c.get() + 1);
        return log_close(
            &shard,
            Some(&connect.client_id),
            &wire,
            CloseReason::Refused(code),
        );
    }
    keep_only_what_lasts(&mut connect);
    let home = home_shard(&connect.client_id, shard.shards);
    if home != shard.id {
        let fd = match wire.duplicate_fd() {
            Ok(fd) => fd,
            Err(e) => {
                return log_close(&shard, Some(&connect.client_id), &wire, CloseReason::Io(e))
            }
        };
        let moved = MovedConnection {
            fd,
            permit,
            peer: wire.peer,
            connect,
            leftover: std::mem::take(&mut wire.rbuf),
        };
        shard.router_send(home, ShardMessage::Adopt(Box::new(moved)));
        shard.flush();
        return;
    }
    // A task of its own: the CONNECT phase's state is freed now instead of staying inside the
    // future of every connection for its whole life.
    let serve = serve_client(shard.clone(), wire, connect, permit);
    match glommio::spawn_local_into(serve, shard.connection_queue()) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => debug!("cannot serve a connection: {e}"),
    }
}

/// Whether a topic name has more levels than allowed (`max` 0: no limit).
fn too_many_levels(topic: &str, max: usize) -> bool {
    max > 0 && topic.bytes().filter(|&b| b == b'/').count() >= max
}

/// Copies the CONNECT fields that live as long as the connection (client id, user name, will)
/// out of the read buffer, which is shared by many connections and must not be pinned by a
/// few bytes each; the password is not needed after authentication at all.
fn keep_only_what_lasts(connect: &mut Connect) {
    connect.client_id = ByteStr::from(connect.client_id.as_str());
    connect.username = connect.username.as_deref().map(ByteStr::from);
    connect.password = None;
    if let Some(will) = &mut connect.will {
        will.topic = ByteStr::from(will.topic.as_str());
        will.payload = bytes::Bytes::copy_from_slice(&will.payload);
    }
}

/// Asks the authenticator about a CONNECT; a will topic the client may not publish to is
/// refused as not authorized, rather than accepted and silently dropped later.
fn authenticate(
    shard: &Shard,
    connect: &Connect,
    peer: std::net::SocketAddr,
) -> Result<(), ConnectReturnCode> {
    let auth = &shard.config.authenticator;
    let username = connect.username.as_deref();
    let decision = auth.authenticate(&Credentials {
        username,
        password: connect.password.as_deref(),
        client_id: &connect.client_id,
        peer,
    });
    match decision {
        AuthDecision::Allow => {}
        AuthDecision::BadCredentials => return Err(ConnectReturnCode::BadUsernameOrPassword),
        AuthDecision::NotAuthorized => return Err(ConnectReturnCode::NotAuthorized),
    }
    if let Some(will) = &connect.will {
        if auth.checks_topics() && !auth.can_publish(username, &connect.client_id, &will.topic) {
            return Err(ConnectReturnCode::NotAuthorized);
        }
    }
    Ok(())
}

/// Serves a socket that another shard accepted and handed over after CONNECT.
pub async fn serve_moved(shard: Rc<Shard>, moved: Box<MovedConnection>) {
    let MovedConnection {
        fd,
        permit,
        peer,
        connect,
        leftover,
    } = *moved;
    let wire = Wire::adopt(fd, peer, leftover);
    serve_client(shard, wire, connect, permit).await;
}

async fn read_packet(shard: &Shard, wire: &mut Wire, max: usize) -> Result<Packet, CloseReason> {
    loop {
        match decode(&mut wire.rbuf, max) {
            Ok(Some(p)) => {
                add(&shard.metrics.packets_in, 1);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(CloseReason::Malformed(e)),
        }
        match wire.read(&shard.read_arena, max).await {
            Ok(0) => return Err(CloseReason::Eof),
            Ok(n) => add(&shard.metrics.bytes_in, n as u64),
            Err(e) => return Err(CloseReason::Io(e)),
        }
    }
}

async fn refuse(shard: &Shard, wire: &mut Wire, code: ConnectReturnCode) {
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
    });
    let _ = ack.encode(&mut wire.wbuf);
    add(&shard.metrics.packets_out, 1);
    let _ = wire.flush().await;
}

fn log_close(shard: &Shard, client_id: Option<&str>, wire: &Wire, reason: CloseReason) {
    if reason.counts_as_protocol_error() {
        shard.metrics.count_protocol_error(reason.to_string());
    }
    debug!(client = client_id.unwrap_or(""), peer = %wire.peer, shard = shard.id.0, "connection closed: {reason}");
}

/// A connected client on its home shard.
struct Client {
    /// The connection's slot under --max-connections. First field, so it is dropped first:
    /// the slot is free again before the socket closes and the client can see it.
    _permit: ConnectionPermit,
    shard: Rc<Shard>,
    wire: Wire,
    session: Rc<RefCell<Session>>,
    conn: u64,
    client_id: ByteStr,
    username: Option<ByteStr>,
    will: Option<LastWill>,
    /// 1.5 × the keepalive the client asked for; None when it asked for 0.
    keepalive: Option<Duration>,
    last_input: Instant,
    keepalive_timer: Option<Timer>,
}

enum Event {
    Input,
    Output,
    Closed(CloseReason),
}

async fn serve_client(
    shard: Rc<Shard>,
    wire: Wire,
    connect: Box<Connect>,
    permit: ConnectionPermit,
) {
    let conn = shard.next_connection_id();
    let (session, resumed) = shard.open_session(&connect, conn);
    let metrics = &shard.metrics;
    metrics.connections.set(metrics.connections.get() + 1);
    metrics
        .connections_total
        .set(metrics.connections_total.get() + 1);
    let Connect {
        level,
        keep_alive,
        client_id,
        will,
        username,
        ..
    } = *connect;
    debug!(client = %client_id, peer = %wire.peer, shard = shard.id.0, resumed, "client connected");
    let keepalive = (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500));
    let mut client = Client {
        keepalive_timer: keepalive.map(Timer::new),
        shard,
        wire,
        session,
        conn,
        client_id,
        username,
        will,
        keepalive,
        last_input: Instant::now(),
        _permit: permit,
    };
    let ack = Packet::ConnAck(ConnAck {
        // MQTT 3.1 has no Session Present flag: the byte is reserved there.
        session_present: resumed && level == ProtocolLevel::V311,
        code: ConnectReturnCode::Accepted,
    });
    let _ = ack.encode(&mut client.wire.wbuf);
    add(&client.shard.metrics.packets_out, 1);
    let reason = client.run().await;
    client.finish(reason).await;
}

impl Client {
    async fn run(&mut self) -> CloseReason {
        loop {
            if self.wire.wbuf.capacity() == 0 {
                self.wire.wbuf = self.shard.write_pool.borrow_mut().take();
            }
            if let Err(reason) = self.process_input() {
                return reason;
            }
            self.shard.flush();
            if self.shard.congested() {
                self.shard.uncongested().await;
            }
            {
                let mut session = self.session.borrow_mut();
                if let Some(kick) = session.kicked(self.conn) {
                    return match kick {
                        Kick::TakenOver => CloseReason::TakenOver,
                        Kick::Shutdown => CloseReason::Shutdown,
                    };
                }
                if self.wire.wbuf.len() < WRITE_HIGH_WATER {
                    let packets = session.fill(&mut self.wire.wbuf, WRITE_HIGH_WATER);
                    add(&self.shard.metrics.packets_out, packets as u64);
                }
            }
            match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Input | Event::Output => {}
                Event::Closed(reason) => return reason,
            }
            // glommio only switches tasks at await points that are pending: a client that
            // always has input must still let the others run.
            glommio::yield_if_needed().await;
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
            if session.kicked(self.conn).is_some()
                || (self.wire.wbuf.len() < WRITE_HIGH_WATER && session.has_sendable())
            {
                return Poll::Ready(Event::Output);
            }
            session.set_waker(cx.waker());
        }
        if self.wire.wbuf.len() < READ_PAUSE {
            let mut arena = self.shard.read_arena.borrow_mut();
            match self
                .wire
                .poll_read(cx, &mut arena, self.shard.config.max_packet_size)
            {
                Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed(CloseReason::Eof)),
                Poll::Ready(Ok(n)) => {
                    add(&self.shard.metrics.bytes_in, n as u64);
                    self.last_input = Instant::now();
                    return Poll::Ready(Event::Input);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Closed(CloseReason::Io(e))),
                Poll::Pending => {}
            }
        }
        if let (Some(timer), Some(limit)) = (self.keepalive_timer.as_mut(), self.keepalive) {
            // The timer is re-armed only when it fires, not per packet: on expiry, check how
            // long it has really been since the last input.
            while Pin::new(&mut *timer).poll(cx).is_ready() {
                let idle = self.last_input.elapsed();
                if idle >= limit {
                    return Poll::Ready(Event::Closed(CloseReason::KeepaliveTimeout));
                }
                timer.reset(limit - idle);
            }
        }
        self.wire
            .release_idle_buffers(&mut self.shard.write_pool.borrow_mut());
        Poll::Pending
    }

    /// Handles every complete packet in the read buffer.
    fn process_input(&mut self) -> Result<(), CloseReason> {
        let max = self.shard.config.max_packet_size;
        loop {
            match decode(&mut self.wire.rbuf, max) {
                Ok(Some(packet)) => {
                    add(&self.shard.metrics.packets_in, 1);
                    self.handle(packet)?
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(CloseReason::Malformed(e)),
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<(), CloseReason> {
        let answers = matches!(
            packet,
            Packet::PubRec(_)
                | Packet::PubRel(_)
                | Packet::PingReq
                | Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce | QoS::ExactlyOnce,
                    ..
                })
        );
        if answers {
            add(&self.shard.metrics.packets_out, 1);
        }
        let out = &mut self.wire.wbuf;
        match packet {
            Packet::Publish(publish) => self.publish(publish)?,
            Packet::PubAck(id) => {
                self.session.borrow_mut().on_puback(id);
            }
            Packet::PubRec(id) => {
                self.session.borrow_mut().on_pubrec(id);
                encode_ack(out, PacketType::PubRel, id);
            }
            Packet::PubRel(id) => {
                self.session.borrow_mut().on_pubrel(id);
                encode_ack(out, PacketType::PubComp, id);
            }
            Packet::PubComp(id) => {
                self.session.borrow_mut().on_pubcomp(id);
            }
            Packet::Subscribe(request) => {
                self.shard
                    .subscribe(&self.session, request, self.username.as_deref())
            }
            Packet::Unsubscribe(request) => self.shard.unsubscribe(&self.session, request),
            Packet::PingReq => {
                let _ = Packet::PingResp.encode(out);
            }
            Packet::Disconnect => return Err(CloseReason::Disconnect),
            Packet::Connect(_) => {
                return Err(CloseReason::Violation("second CONNECT (MQTT-3.1.0-2)"))
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(CloseReason::Violation(
                    "client sent a packet only a server may send",
                ));
            }
        }
        Ok(())
    }

    fn publish(&mut self, publish: Publish) -> Result<(), CloseReason> {
        if too_many_levels(&publish.topic, self.shard.config.max_topic_levels) {
            return Err(CloseReason::Violation(
                "topic name has more levels than --max-topic-levels",
            ));
        }
        let Publish {
            qos,
            retain,
            topic,
            packet_id,
            payload,
            ..
        } = publish;
        let auth = &self.shard.config.authenticator;
        let allowed = !auth.checks_topics()
            || auth.can_publish(self.username.as_deref(), &self.client_id, &topic);
        if !allowed {
            // Acknowledged as the protocol requires, but not forwarded.
            debug!(client = %self.client_id, topic = %topic, "publish denied by the ACL");
            let c = &self.shard.metrics.publishes_denied;
            c.set(c.get() + 1);
        }
        let forward = allowed
            && match qos {
                QoS::AtMostOnce | QoS::AtLeastOnce => true,
                // MQTT-4.3.3: a repeated PUBLISH before PUBREL is acknowledged, not forwarded again.
                QoS::ExactlyOnce => self.session.borrow_mut().on_incoming_qos2(packet_id),
            };
        if forward {
            self.shard.route(Arc::new(Message {
                topic,
                payload,
                qos,
                retain,
            }));
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => encode_ack(&mut self.wire.wbuf, PacketType::PubAck, packet_id),
            QoS::ExactlyOnce => encode_ack(&mut self.wire.wbuf, PacketType::PubRec, packet_id),
        }
        Ok(())
    }

    async fn finish(mut self, reason: CloseReason) {
        if reason.publishes_will() {
            if let Some(will) = self.will.take() {
                self.shard.route(Arc::new(Message {
                    topic: will.topic,
                    payload: will.payload,
                    qos: will.qos,
                    retain: will.retain,
                }));
                self.shard.flush();
            }
        }
        let detached = self.session.borrow_mut().detach(self.conn);
        if detached && self.session.borrow().clean {
            self.shard.remove_session(&self.session);
            self.shard.flush();
        }
        let metrics = &self.shard.metrics;
        metrics.connections.set(metrics.connections.get() - 1);
        log_close(&self.shard, Some(&self.client_id), &self.wire, reason);
        // Best effort: acknowledgements already encoded still reach a client that is leaving.
        if !self.wire.wbuf.is_empty() {
            let _ = or(self.wire.flush(), async {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                Ok(())
            })
            .await;
        }
    }
}

use std::future::Future;
use std::pin::Pin;
