//! A client connection's arrival: the CONNECT phase (timeout, authentication, refusals), and
//! the move to the client id's home shard, where [`ConnectedClient`] serves it. Also the reasons
//! a connection ends and the one log line each end gets.

use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use futures_lite::future::or;
use glommio::net::TcpStream;
use tracing::{debug, info};

use super::cluster_port::Taken;
use super::connected::ConnectedClient;
use super::listeners::ListenerSpec;
use super::mesh::{MovedConnection, ShardMessage};
use super::metrics::add;
use super::shard::{home_shard, ConnectionPermit, Shard};
use super::wire::Wire;
use crate::auth::{AuthDecision, AuthStep, Credentials};
use crate::protocol::{
    declared_level, decode, Auth, ByteStr, ConnAck, Connect, DecodeError, Packet, Properties,
    ProtocolLevel, ReasonCode,
};

/// Why a connection ended; logged once per connection.
#[derive(Debug)]
pub enum CloseReason {
    /// The client sent DISCONNECT (MQTT 5: with reason 0x00): the will is discarded.
    Disconnect,
    /// An MQTT 5 client sent DISCONNECT with another reason (0x04 asks for the will): the
    /// will is published.
    DisconnectWithWill(ReasonCode),
    /// The peer closed the socket without DISCONNECT.
    Eof,
    Io(io::Error),
    Malformed(DecodeError),
    /// A well-formed packet that breaks a protocol rule.
    Violation(&'static str),
    /// A well-formed MQTT 5 packet that breaks a rule with a reason code of its own (topic
    /// alias invalid, receive maximum exceeded, ...), sent in the broker's DISCONNECT.
    Violation5(ReasonCode, &'static str),
    ConnectTimeout,
    KeepaliveTimeout,
    TakenOver,
    Shutdown,
    /// CONNACK with a non-zero return code was sent.
    Refused(ReasonCode),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Disconnect => f.write_str("client sent DISCONNECT"),
            CloseReason::DisconnectWithWill(code) => {
                write!(f, "client sent DISCONNECT {code}: the will is published")
            }
            CloseReason::Eof => f.write_str("peer closed the connection without DISCONNECT"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Malformed(e) => write!(f, "malformed packet: {e}"),
            CloseReason::Violation(rule) => write!(f, "protocol violation: {rule}"),
            CloseReason::Violation5(code, rule) => {
                write!(f, "protocol violation ({code}): {rule}")
            }
            CloseReason::ConnectTimeout => f.write_str("no CONNECT within the connect timeout"),
            CloseReason::KeepaliveTimeout => f.write_str(
                "keepalive timeout: nothing received for 1.5 x keepalive (MQTT-3.1.2-24)",
            ),
            CloseReason::TakenOver => {
                f.write_str("taken over by a new connection with the same client id (MQTT-3.1.4-2)")
            }
            CloseReason::Shutdown => f.write_str("broker shutting down"),
            CloseReason::Refused(code) => {
                write!(f, "connection refused with CONNACK {code}")
            }
        }
    }
}

impl CloseReason {
    /// The will is published when the connection ends other than by DISCONNECT (MQTT-3.1.2-8).
    /// A broker shutdown is not the client's failure, so it does not publish wills either.
    pub(super) fn publishes_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::Disconnect | CloseReason::Shutdown | CloseReason::Refused(_)
        )
    }

    fn counts_as_protocol_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Malformed(_) | CloseReason::Violation(_) | CloseReason::Violation5(..)
        )
    }
}

/// Serves a socket accepted on this shard: reads CONNECT, then either serves the client here
/// or hands the socket to the client id's home shard.
pub async fn serve_accepted(shard: Rc<Shard>, stream: TcpStream, spec: Rc<ListenerSpec>) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    serve_stream(shard, stream, peer, spec).await
}

/// [`serve_accepted`] for a stream socket that did not come from a listener (a bridge's end
/// of a `socketpair`), with the address its logs name.
pub async fn serve_stream(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    spec: Rc<ListenerSpec>,
) {
    let layered = match spec.layer() {
        Ok(layered) => layered,
        Err(e) => {
            debug!(%peer, "cannot start TLS for a connection: {e}");
            return;
        }
    };
    let mut wire = Wire::new(stream, peer, layered);
    let Some(permit) = shard.admit() else {
        // Full: say so (CONNACK 3, server unavailable) without waiting for CONNECT, and close.
        let reason = CloseReason::Refused(ReasonCode::SERVER_UNAVAILABLE);
        let _ = or(
            refuse(
                &shard,
                &mut wire,
                ReasonCode::SERVER_UNAVAILABLE,
                ProtocolLevel::V311,
            ),
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
    let mut declared = None;
    let first = or(
        async { Some(read_packet(&shard, &mut wire, max, &mut declared).await) },
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
            let code = ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
            refuse(&shard, &mut wire, code, ProtocolLevel::V311).await;
            let reason = CloseReason::Malformed(DecodeError::UnsupportedProtocolLevel(level));
            return log_close(&shard, None, &wire, reason);
        }
        Some(Err(reason)) => {
            // An MQTT 5 client hears why its CONNECT was refused (5.0 4.13.1).
            if let Some(code) = connect_refusal_v5(&reason, declared) {
                refuse(&shard, &mut wire, code, ProtocolLevel::V5).await;
            }
            return log_close(&shard, None, &wire, reason);
        }
    };
    let mut connect = connect;
    let level = connect.level;
    let mut assigned = false;
    if connect.client_id.is_empty() {
        // MQTT 3.1 requires 1 to 23 characters; 3.1.1 allows empty with CleanSession = 1;
        // MQTT 5 always allows it and says the id it assigned (MQTT-3.1.3-7 of 5.0).
        if !level.is_v5() && (!connect.clean_session || level == ProtocolLevel::V31) {
            // MQTT-3.1.3-8: an empty client id needs CleanSession = 1.
            refuse(
                &shard,
                &mut wire,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                level,
            )
            .await;
            let reason = CloseReason::Refused(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            return log_close(&shard, None, &wire, reason);
        }
        connect.client_id = shard.assign_client_id();
        assigned = true;
    }
    let max_keepalive = shard.config.max_keepalive;
    if !level.is_v5()
        && max_keepalive > 0
        && (connect.keep_alive == 0 || connect.keep_alive > max_keepalive)
    {
        // 3.1.1 has no way to tell the client another keepalive: refused as Mosquitto's
        // max_keepalive does (an MQTT 5 client is told the Server Keep Alive instead).
        debug!(client = %connect.client_id, keep_alive = connect.keep_alive, max_keepalive, "refused: keepalive 0 or above --max-keepalive");
        let code = ReasonCode::CLIENT_IDENTIFIER_NOT_VALID;
        refuse(&shard, &mut wire, code, level).await;
        let reason = CloseReason::Refused(code);
        return log_close(&shard, Some(&connect.client_id), &wire, reason);
    }
    if let Some(will) = &connect.will {
        if too_many_levels(&will.topic, shard.config.max_topic_levels) {
            let reason =
                CloseReason::Violation("will topic has more levels than --max-topic-levels");
            return log_close(&shard, Some(&connect.client_id), &wire, reason);
        }
    }
    let mut certified = false;
    if spec.identity_as_username {
        // Mosquitto's rule: the certificate's CN is the user name, whatever CONNECT said; a
        // client without one is not authorized.
        match wire.peer_identity() {
            Some(cn) => {
                connect.username = Some(ByteStr::from(cn));
                connect.password = None;
                certified = true;
            }
            None => {
                refuse(&shard, &mut wire, ReasonCode::NOT_AUTHORIZED, level).await;
                let reason = CloseReason::Refused(ReasonCode::NOT_AUTHORIZED);
                return log_close(&shard, Some(&connect.client_id), &wire, reason);
            }
        }
    }
    let method = connect
        .properties
        .as_ref()
        .and_then(|p| p.authentication_method.clone());
    let decided = match method {
        Some(method) => enhanced_auth(&shard, &mut wire, &mut connect, &method, certified).await,
        None => authenticate(&shard, &connect, wire.peer, certified),
    };
    if let Err(code) = decided {
        refuse(&shard, &mut wire, code, level).await;
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
            transport: wire.take_layered(),
        };
        shard.router_send(home, ShardMessage::Adopt(Box::new(moved)));
        shard.flush();
        return;
    }
    // A task of its own: the CONNECT phase's state is freed now instead of staying inside the
    // future of every connection for its whole life.
    start_serving(shard, wire, connect, permit, assigned);
}

/// How long a client resuming its session waits at most for the cluster to answer whether
/// another node holds it (the cluster thread itself waits less, and answers at once while
/// cut off from NATS; this covers a cluster thread that cannot get an answer from NATS).
/// Without an answer, a client whose session this node does not hold is refused (server
/// unavailable), as when JetStream cannot say what it holds of the session.
const TAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves a connected client on its home shard in a task of its own: at once, or, in a
/// cluster, for a client resuming a session this node does not hold, once the node that held
/// it has handed it over and it is durable here (or no node answered; see
/// [`Shard::cluster_take`]), so Session Present is never said of a session a crash could
/// still take away; and once a delayed will the resume cancels is durably cancelled.
fn start_serving(
    shard: Rc<Shard>,
    wire: Wire,
    connect: Box<Connect>,
    permit: ConnectionPermit,
    assigned: bool,
) {
    let queue = shard.connection_queue();
    // A will this resume cancels must be durably cancelled before the CONNACK tells the
    // client it is back (see `Shard::cancel_will_on_resume`).
    let will_cancelled = shard.cancel_will_on_resume(&connect);
    let spawned = match shard.cluster_take(&connect) {
        None if will_cancelled == 0 => {
            let serve = ConnectedClient::new(shard, wire, connect, permit, assigned, false);
            glommio::spawn_local_into(serve, queue).map(|t| t.detach())
        }
        take => glommio::spawn_local_into(
            async move {
                let claimed = take.is_some();
                if let Some(wait) = take {
                    let answered = glommio::timer::timeout(TAKE_TIMEOUT, async { Ok(wait.await) });
                    let handed = answered.await.ok().flatten().unwrap_or(Taken {
                        unavailable: true,
                        ..Taken::default()
                    });
                    if handed.unavailable && !shard.holds_session(&connect.client_id) {
                        // A new session would tell the client (Session Present 0) that its
                        // subscriptions and queued messages are gone, when the cluster only
                        // cannot say right now: it is to come back instead.
                        return refuse_resume(&shard, wire, &connect).await;
                    }
                    if !handed.sessions.is_empty() || handed.superseded.is_some() {
                        shard.take_in(&connect.client_id, handed).await;
                    }
                }
                if let Some(journal) = shard.journal() {
                    journal.durable(will_cancelled).await;
                }
                ConnectedClient::new(shard, wire, connect, permit, assigned, claimed).await
            },
            queue,
        )
        .map(|t| t.detach()),
    };
    if let Err(e) = spawned {
        debug!("cannot serve a connection: {e}");
    }
}

/// Refuses a client resuming its session (CONNACK server unavailable: 0x88, or 3 before
/// MQTT 5) when the cluster cannot say what it holds of it; counted.
async fn refuse_resume(shard: &Shard, mut wire: Wire, connect: &Connect) {
    if let Some(port) = shard.cluster.get() {
        port.refused();
    }
    info!(client = %connect.client_id, "refused a client resuming its session: the cluster cannot say what it holds of it (server unavailable)");
    let code = ReasonCode::SERVER_UNAVAILABLE;
    refuse(shard, &mut wire, code, connect.level).await;
    log_close(
        shard,
        Some(&connect.client_id),
        &wire,
        CloseReason::Refused(code),
    );
}

/// Whether a topic name has more levels than allowed (`max` 0: no limit).
pub(super) fn too_many_levels(topic: &str, max: usize) -> bool {
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
        if let Some(p) = &mut will.properties {
            **p = p.detached();
        }
    }
}

/// MQTT 5 enhanced authentication at CONNECT (MQTT 5.0 4.12): the authenticator's challenges
/// go out as AUTH 0x18 and the client's answers come back the same way, within the connect
/// timeout, until it says yes or no. On success the CONNECT's Authentication Data is replaced
/// by the authenticator's last word, which the CONNACK carries. The will topic is checked as
/// for any client.
async fn enhanced_auth(
    shard: &Shard,
    wire: &mut Wire,
    connect: &mut Connect,
    method: &ByteStr,
    certified: bool,
) -> Result<(), ReasonCode> {
    let auth = &shard.config.authenticator;
    let credentials = Credentials {
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        client_id: &connect.client_id,
        peer: wire.peer,
        certified,
    };
    let Some(mut exchange) = auth.start_exchange(method, &credentials) else {
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    };
    let mut data = connect
        .properties
        .as_ref()
        .and_then(|p| p.authentication_data.clone());
    let deadline = Instant::now() + shard.config.connect_timeout;
    let server_data = loop {
        match exchange.step(data.as_deref()) {
            AuthStep::Success(server_data) => break server_data,
            AuthStep::Fail => return Err(ReasonCode::NOT_AUTHORIZED),
            AuthStep::Continue(challenge) => {
                let ask = Packet::Auth(Auth {
                    reason: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: Some(Box::new(Properties {
                        authentication_method: Some(method.clone()),
                        authentication_data: Some(Bytes::from(challenge)),
                        ..Properties::default()
                    })),
                });
                let _ = ask.encode(wire.wbuf.encoded(), ProtocolLevel::V5);
                add(&shard.metrics.packets_out, 1);
                if wire.flush().await.is_err() {
                    return Err(ReasonCode::UNSPECIFIED_ERROR);
                }
                let max = shard.config.max_packet_size;
                let left = deadline.saturating_duration_since(Instant::now());
                let answer = or(
                    async { Some(read_packet_at(shard, wire, max, ProtocolLevel::V5).await) },
                    async {
                        glommio::timer::sleep(left).await;
                        None
                    },
                )
                .await;
                data = match answer {
                    Some(Ok(Packet::Auth(a)))
                        if a.reason == ReasonCode::CONTINUE_AUTHENTICATION
                            && a.properties
                                .as_ref()
                                .and_then(|p| p.authentication_method.as_ref())
                                == Some(method) =>
                    {
                        a.properties.and_then(|p| p.authentication_data)
                    }
                    // Anything else in the middle of the exchange, or nothing in time.
                    _ => return Err(ReasonCode::PROTOCOL_ERROR),
                };
            }
        }
    };
    if let Some(p) = &mut connect.properties {
        p.authentication_data = server_data.map(Bytes::from);
    }
    if let Some(will) = &connect.will {
        let username = connect.username.as_deref();
        if auth.checks_topics() && !auth.can_publish(username, &connect.client_id, &will.topic) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(())
}

/// Asks the authenticator about a CONNECT; a will topic the client may not publish to is
/// refused as not authorized, rather than accepted and silently dropped later.
fn authenticate(
    shard: &Shard,
    connect: &Connect,
    peer: std::net::SocketAddr,
    certified: bool,
) -> Result<(), ReasonCode> {
    let auth = &shard.config.authenticator;
    let username = connect.username.as_deref();
    let decision = auth.authenticate(&Credentials {
        username,
        password: connect.password.as_deref(),
        client_id: &connect.client_id,
        peer,
        certified,
    });
    match decision {
        AuthDecision::Allow => {}
        AuthDecision::BadCredentials => return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        AuthDecision::NotAuthorized => return Err(ReasonCode::NOT_AUTHORIZED),
    }
    if let Some(will) = &connect.will {
        if auth.checks_topics() && !auth.can_publish(username, &connect.client_id, &will.topic) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(())
}

/// Serves a socket that another shard accepted and handed over after CONNECT.
pub fn serve_moved(shard: Rc<Shard>, moved: MovedConnection) {
    let MovedConnection {
        fd,
        permit,
        peer,
        connect,
        leftover,
        transport,
    } = moved;
    let wire = Wire::adopt(fd, peer, leftover, transport);
    start_serving(shard, wire, connect, permit, false);
}

/// Reads the first packet. When it cannot be decoded, `declared` says which protocol level the
/// CONNECT in it declared, so an MQTT 5 client can be told why in its own version.
async fn read_packet(
    shard: &Shard,
    wire: &mut Wire,
    max: usize,
    declared: &mut Option<ProtocolLevel>,
) -> Result<Packet, CloseReason> {
    loop {
        *declared = declared_level(&wire.rbuf);
        match decode(&mut wire.rbuf, max, ProtocolLevel::V311) {
            Ok(Some(p)) => {
                add(&shard.metrics.packets_in, 1);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(CloseReason::Malformed(e)),
        }
        read_more(shard, wire, max).await?;
    }
}

async fn read_packet_at(
    shard: &Shard,
    wire: &mut Wire,
    max: usize,
    level: ProtocolLevel,
) -> Result<Packet, CloseReason> {
    loop {
        match decode(&mut wire.rbuf, max, level) {
            Ok(Some(p)) => {
                add(&shard.metrics.packets_in, 1);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(CloseReason::Malformed(e)),
        }
        read_more(shard, wire, max).await?;
    }
}

async fn read_more(shard: &Shard, wire: &mut Wire, max: usize) -> Result<(), CloseReason> {
    match wire.read(&shard.read_arena, max).await {
        Ok(0) => Err(CloseReason::Eof),
        Ok(n) => {
            add(&shard.metrics.bytes_in, n as u64);
            Ok(())
        }
        Err(e) => Err(CloseReason::Io(e)),
    }
}

/// The CONNACK reason for an MQTT 5 CONNECT that could not be decoded, or None when the client did not declare MQTT 5. CONNACK has room for fewer codes
/// than DISCONNECT: what it has no code for is 0x81 Malformed Packet or 0x82 Protocol Error.
fn connect_refusal_v5(reason: &CloseReason, declared: Option<ProtocolLevel>) -> Option<ReasonCode> {
    let CloseReason::Malformed(e) = reason else {
        return None;
    };
    if declared != Some(ProtocolLevel::V5) {
        return None;
    }
    Some(match e.reason_code() {
        code @ (ReasonCode::PACKET_TOO_LARGE
        | ReasonCode::TOPIC_NAME_INVALID
        | ReasonCode::PROTOCOL_ERROR) => code,
        _ => ReasonCode::MALFORMED_PACKET,
    })
}

/// CONNACK with a refusal, in the client's protocol level, then the close.
async fn refuse(shard: &Shard, wire: &mut Wire, code: ReasonCode, level: ProtocolLevel) {
    let ack = Packet::ConnAck(ConnAck::new(false, code));
    let _ = ack.encode(wire.wbuf.encoded(), level);
    add(&shard.metrics.packets_out, 1);
    let _ = wire.flush().await;
}

pub(super) fn log_close(shard: &Shard, client_id: Option<&str>, wire: &Wire, reason: CloseReason) {
    if reason.counts_as_protocol_error() {
        shard.metrics.count_protocol_error(reason.to_string());
    }
    debug!(client = client_id.unwrap_or(""), peer = %wire.peer, shard = shard.id.0, "connection closed: {reason}");
}
