//! The connection task: the one place the client touches its socket. It opens the TCP
//! connection (for TLS and WebSockets, then runs the transport's handshake through a sans-IO
//! [`Layer`] before CONNECT), then loops: write what the state machine has queued (every
//! packet owed, coalesced into one buffer, one flush), read what the server sent (straight
//! into a `BytesMut` that decoded messages then slice, no copies), feed it to the state
//! machine, and sleep until the socket, a handle or the keepalive timer wakes it. When the
//! connection is lost it either ends the client or, with `reconnect_interval`, opens a new
//! one (handshake included) and resumes.
//!
//! Plain TCP has no layer: reads land in the packet buffer and packets are written from the
//! write buffer, as before. With a layer, socket bytes are read into a buffer of their own and
//! the layer appends the MQTT bytes to the packet buffer; the write buffer is wrapped (frames,
//! records) into the layer's output before it goes to the socket.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use tracing::{debug, warn};

use super::dial::Dialer;
use super::error::ClientError;
use super::options::ClientOptions;
use super::shared::{Shared, Shutdown};
use crate::protocol::{decode, frame_len, Disconnect, Packet, ProtocolLevel};
use crate::transport::Layer;

/// Read buffer allocation size; packets larger than this get a buffer of their own size.
const READ_CHUNK: usize = 64 * 1024;
/// Below this much spare room a read is not worth a syscall.
const MIN_READ_SPACE: usize = 2048;
/// Encoded bytes gathered into the write buffer before it is flushed.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Loop rounds with progress before the task yields to the others on its executor.
const ROUNDS_PER_YIELD: usize = 64;
/// Socket reads under a transport layer: a TLS record is at most 16 KiB and some.
const LAYER_READ: usize = 32 * 1024;
/// How long a TLS close_notify or WebSocket close frame may take to leave.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a TCP connection to the first address of `host:port` that accepts one.
pub(crate) async fn open_tcp(options: &ClientOptions) -> Result<TcpStream, ClientError> {
    let target = format!("{}:{}", options.host, options.port);
    let fail = |e: io::Error| ClientError::Connect {
        addr: target.clone(),
        source: std::sync::Arc::new(e),
    };
    // Name resolution blocks, but only for names; an address literal resolves at once.
    let addrs: Vec<SocketAddr> = (options.host.as_str(), options.port)
        .to_socket_addrs()
        .map_err(fail)?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, options.connect_timeout).await {
            Ok(stream) => {
                // Requests are small and latency matters more than packing them.
                let _ = stream.set_nodelay(true);
                debug!(%addr, "TCP connected");
                return Ok(stream);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(fail(last))
}

/// Opens a connection ready for CONNECT: TCP, then the transport's handshake (TLS, the
/// WebSocket upgrade) in what is left of `connect_timeout`.
pub(crate) async fn open(options: &ClientOptions, dialer: &Dialer) -> Result<Conn, ClientError> {
    let started = Instant::now();
    let stream = open_tcp(options).await?;
    if !dialer.layered() {
        return Ok(Conn::new(stream, None));
    }
    let (layer, first) = dialer.layer()?;
    let mut conn = Conn::new(
        stream,
        Some(Box::new(Layered {
            layer,
            raw: vec![0; LAYER_READ],
            out: first,
            closed: false,
        })),
    );
    let left = options.connect_timeout.saturating_sub(started.elapsed());
    let handshake = async {
        Some(
            conn.handshake(options.incoming_packet_limit() as usize)
                .await,
        )
    };
    let expired = async {
        glommio::timer::sleep(left).await;
        None
    };
    match handshake.or(expired).await {
        Some(Ok(())) => {
            debug!(
                transport = options.transport.scheme(),
                "transport handshake done"
            );
            Ok(conn)
        }
        Some(Err(e)) => Err(e),
        None => Err(ClientError::Timeout {
            waiting_for: conn.handshake_step(),
            after: options.connect_timeout,
        }),
    }
}

/// A transport layer and its socket-side buffers.
pub(crate) struct Layered {
    layer: Layer,
    /// Socket bytes read, before the layer takes them.
    raw: Vec<u8>,
    /// Bytes for the socket (handshake, records, frames), written before anything else.
    out: BytesMut,
    /// The server ended the transport (TLS close_notify or WebSocket close).
    closed: bool,
}

/// The socket and its two buffers.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Received bytes not yet decoded: empty, or the start of a packet. On plain TCP its spare
    /// capacity is always initialised memory (allocated zeroed, never grown otherwise), which
    /// is what makes handing it to `recv` as `&mut [u8]` sound; under a layer it is never
    /// handed to `recv`, only appended to.
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// TLS, WebSockets or both; None for plain TCP.
    layer: Option<Box<Layered>>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, layer: Option<Box<Layered>>) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::with_capacity(WRITE_HIGH_WATER),
            layer,
        }
    }

    /// Bytes queued and not yet written to the socket.
    fn unwritten(&self) -> usize {
        self.wbuf.len() + self.layer.as_ref().map_or(0, |l| l.out.len())
    }

    /// Whether the server ended the transport (with the MQTT bytes before it decoded).
    fn transport_closed(&self) -> bool {
        self.layer.as_ref().is_some_and(|l| l.closed)
    }

    /// Runs the transport's handshake until MQTT may flow.
    async fn handshake(&mut self, max_packet_size: usize) -> Result<(), ClientError> {
        std::future::poll_fn(|cx| loop {
            if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
            if !self.layer.as_ref().is_some_and(|l| l.layer.handshaking()) {
                return Poll::Ready(Ok(()));
            }
            match self.poll_read(cx, max_packet_size) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ClientError::io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed during the {}", self.handshake_step()),
                    ))))
                }
                Poll::Ready(Ok(_)) if self.transport_closed() => {
                    return Poll::Ready(Err(ClientError::ConnectionClosed))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// What the handshake is waiting for, for errors.
    fn handshake_step(&self) -> &'static str {
        match self.layer.as_ref().and_then(|l| l.layer.tls()) {
            Some(tls) if tls.is_handshaking() => "TLS handshake",
            _ => "WebSocket upgrade",
        }
    }

    /// Says goodbye the transport's way (TLS close_notify, WebSocket close frame), briefly.
    async fn goodbye(&mut self) {
        let Some(l) = &mut self.layer else {
            return;
        };
        l.layer.close(&mut l.out);
        let flush = async {
            let _ = std::future::poll_fn(|cx| self.poll_flush(cx)).await;
        };
        let expired = async {
            glommio::timer::sleep(GOODBYE_TIMEOUT).await;
        };
        flush.or(expired).await;
    }

    /// Makes room to read: at least `MIN_READ_SPACE`, and the whole packet once its header
    /// says how big it is. Only the start of one packet is ever copied, into a fresh buffer.
    fn reserve_read_space(&mut self, max_packet_size: usize) {
        let len = self.rbuf.len();
        // Only the size matters here; MQTT 5's header rules are the looser ones.
        let frame = frame_len(&self.rbuf, max_packet_size, ProtocolLevel::V5)
            .ok()
            .flatten()
            .unwrap_or(0);
        let want = MIN_READ_SPACE.max(frame.saturating_sub(len));
        if self.rbuf.capacity() - len >= want {
            return;
        }
        let mut fresh = BytesMut::zeroed(READ_CHUNK.max(len + want));
        fresh.clear();
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
    }

    /// Reads from the socket; the count is of socket bytes (0: the server closed it), the
    /// MQTT bytes are in `rbuf`.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        max_packet_size: usize,
    ) -> Poll<Result<usize, ClientError>> {
        if let Some(l) = &mut self.layer {
            return match Pin::new(&mut self.stream).poll_read(cx, &mut l.raw) {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => {
                    let got = l.layer.ingest(&l.raw[..n], &mut self.rbuf, &mut l.out)?;
                    l.closed |= got.closed;
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(ClientError::io(e))),
                Poll::Pending => Poll::Pending,
            };
        }
        self.reserve_read_space(max_packet_size);
        let len = self.rbuf.len();
        let spare = self.rbuf.capacity() - len;
        // SAFETY: the spare capacity is initialised (see `rbuf`), and nothing else borrows
        // `rbuf` during the call.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.rbuf.as_mut_ptr().add(len), spare) };
        match Pin::new(&mut self.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: `recv` wrote `n` bytes into the spare capacity.
                unsafe { self.rbuf.set_len(len + n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(ClientError::io(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes `wbuf` (through the layer, if any) until it is empty or the socket is full.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        if let Some(l) = &mut self.layer {
            if !self.wbuf.is_empty() {
                l.layer.emit(&self.wbuf, &mut l.out)?;
                self.wbuf.clear();
            }
            while !l.out.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, &l.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ClientError::io(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => l.out.advance(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ClientError::io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            l.out.clear();
            return Poll::Ready(Ok(()));
        }
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ClientError::io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ClientError::io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Fully written: start again at the front of the allocation.
        self.wbuf.clear();
        Poll::Ready(Ok(()))
    }
}

/// A timer that follows the state machine's next deadline.
#[derive(Default)]
struct Deadline {
    timer: Option<Timer>,
    at: Option<Instant>,
}

impl Deadline {
    /// Arms for `at` (or disarms) and reports whether that time has come.
    fn poll(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> bool {
        let Some(at) = at else {
            self.at = None;
            return false;
        };
        let now = Instant::now();
        if self.at != Some(at) {
            let wait = at.saturating_duration_since(now);
            match &mut self.timer {
                Some(t) => t.reset(wait),
                None => self.timer = Some(Timer::new(wait)),
            }
            self.at = Some(at);
        }
        let timer = self.timer.as_mut().expect("armed above");
        if Pin::new(timer).poll(cx).is_ready() {
            // Re-armed from scratch next time, even for the same deadline.
            self.at = None;
            return true;
        }
        false
    }
}

/// Runs the client until it is finished: disconnected, dropped, or the connection lost for
/// good. The state machine has not sent CONNECT yet.
pub(crate) async fn run(shared: Rc<Shared>, mut conn: Conn, dialer: Dialer) {
    shared.inner.borrow_mut().state.connect(Instant::now());
    let mut deadline = Deadline::default();
    loop {
        let result = std::future::poll_fn(|cx| drive(&shared, &mut conn, &mut deadline, cx)).await;
        let reason = match result {
            Ok(()) => {
                conn.goodbye().await;
                ClientError::Disconnected
            }
            Err(e) => {
                say_why(&shared, &mut conn, &e).await;
                e
            }
        };
        drop(conn);
        let Some(interval) = reconnect_interval(&shared, &reason) else {
            debug!(%reason, "client finished");
            shared.inner.borrow_mut().close(reason);
            return;
        };
        warn!(%reason, "connection lost; reconnecting in {interval:?}");
        shared.inner.borrow_mut().connection_lost(&reason);
        conn = loop {
            if !wait_or_stop(&shared, interval).await {
                shared.inner.borrow_mut().close(ClientError::Disconnected);
                return;
            }
            let options = shared.inner.borrow().options.clone();
            match open(&options, &dialer).await {
                Ok(conn) => break conn,
                Err(e) => warn!(error = %e, "reconnect failed; trying again in {interval:?}"),
            }
        };
        shared.inner.borrow_mut().state.connect(Instant::now());
    }
}

/// Before closing for `error`: an MQTT 5 DISCONNECT naming the violation (0x93, 0x95, ...)
/// when there is one to send, with whatever else was queued before it, written within
/// `GOODBYE_TIMEOUT`.
async fn say_why(shared: &Shared, conn: &mut Conn, error: &ClientError) {
    if error.disconnect_reason().is_none() || !shared.inner.borrow().state.level().is_v5() {
        return;
    }
    {
        let mut inner = shared.inner.borrow_mut();
        // Already done by the state machine for what it found wrong; not for the decoder.
        inner.state.fail(error, Instant::now());
        let level = inner.state.level();
        while let Some(packet) = inner.state.pop_packet() {
            debug!(packet = %Describe(&packet), "send");
            let _ = packet.encode(&mut conn.wbuf, level);
        }
    }
    if conn.unwritten() == 0 {
        return;
    }
    let flush = async {
        let _ = std::future::poll_fn(|cx| conn.poll_flush(cx)).await;
    };
    let expired = async {
        glommio::timer::sleep(GOODBYE_TIMEOUT).await;
    };
    flush.or(expired).await;
}

/// How long to wait before reconnecting, or None when the client should end: no reconnect
/// configured, never connected, refused, the session taken over by another connection, or
/// the application asked to stop.
fn reconnect_interval(shared: &Shared, reason: &ClientError) -> Option<Duration> {
    let inner = shared.inner.borrow();
    let interval = inner.options.reconnect_interval?;
    if inner.first_connack_pending()
        || matches!(reason, ClientError::Refused(..) | ClientError::Disconnected)
        // Another connection took the session over: taking it back would start a duel.
        || matches!(reason, ClientError::ServerDisconnect { reason, .. }
            if *reason == crate::protocol::ReasonCode::SESSION_TAKEN_OVER)
        || inner.shutdown != Shutdown::None
        || !inner.has_users()
    {
        return None;
    }
    Some(interval)
}

/// Sleeps `interval` unless the application stops the client first; false if it did.
async fn wait_or_stop(shared: &Shared, interval: Duration) -> bool {
    let mut timer = Timer::new(interval);
    std::future::poll_fn(|cx| {
        let mut inner = shared.inner.borrow_mut();
        if inner.shutdown != Shutdown::None || !inner.has_users() {
            return Poll::Ready(false);
        }
        inner.set_io_waker(cx.waker());
        drop(inner);
        Pin::new(&mut timer).poll(cx).map(|_| true)
    })
    .await
}

/// One connection's worth of work, as a poll function so that reading, writing, the handles'
/// wake-ups and the timer all drive the same loop without a second task near the socket.
/// `Ok(())`: the connection ended as the application asked.
fn drive(
    shared: &Shared,
    conn: &mut Conn,
    deadline: &mut Deadline,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ClientError>> {
    for _ in 0..ROUNDS_PER_YIELD {
        let now = Instant::now();
        let mut inner = shared.inner.borrow_mut();
        inner.set_io_waker(cx.waker());
        if !inner.has_users() && inner.shutdown == Shutdown::None {
            inner.shutdown = Shutdown::Graceful;
        }
        match inner.shutdown {
            Shutdown::Abort => return Poll::Ready(Ok(())),
            Shutdown::Graceful if !inner.state.is_disconnecting() => {
                let goodbye = inner.goodbye.take().unwrap_or(Disconnect::NORMAL);
                inner.state.disconnect_with(goodbye, now)
            }
            _ => {}
        }
        if !inner.can_read() && inner.messages_alive {
            inner.state.hold_ping_deadline(now);
        }
        if let Err(e) = inner.state.poll(now) {
            return Poll::Ready(Err(e));
        }
        inner.pump(now);
        while conn.unwritten() < WRITE_HIGH_WATER {
            let Some(packet) = inner.state.pop_packet() else {
                break;
            };
            debug!(packet = %Describe(&packet), "send");
            if let Err(e) = packet.encode(&mut conn.wbuf, inner.state.level()) {
                // Everything queued was checked by the handles; this is a bug, not input.
                return Poll::Ready(Err(e.into()));
            }
        }
        inner.dispatch_events(None);
        drop(inner);

        if let Poll::Ready(Err(e)) = conn.poll_flush(cx) {
            return Poll::Ready(Err(e));
        }
        let inner = shared.inner.borrow();
        let written = conn.unwritten() == 0 && inner.state.outbox_bytes() == 0;
        if inner.state.is_disconnecting() && written {
            return Poll::Ready(Ok(()));
        }
        let can_read = inner.can_read() || !inner.messages_alive;
        let max_packet_size = inner.options.incoming_packet_limit() as usize;
        drop(inner);

        let mut progress = false;
        if can_read {
            match conn.poll_read(cx, max_packet_size) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ClientError::ConnectionClosed)),
                Poll::Ready(Ok(_)) => {
                    let mut inner = shared.inner.borrow_mut();
                    loop {
                        match decode(&mut conn.rbuf, max_packet_size, inner.state.level()) {
                            Ok(Some(packet)) => {
                                debug!(packet = %Describe(&packet), "receive");
                                if let Err(e) = inner.state.handle(packet, now) {
                                    inner.dispatch_events(None);
                                    return Poll::Ready(Err(e));
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                return Poll::Ready(Err(super::ProtocolError::from(e).into()))
                            }
                        }
                    }
                    inner.dispatch_events(None);
                    if conn.transport_closed() {
                        return Poll::Ready(Err(ClientError::ConnectionClosed));
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        let inner = shared.inner.borrow();
        // Packets left over when the write buffer was full, or publishes the window or the
        // outbox now has room for: another round, without waiting for a wake-up.
        if (conn.unwritten() == 0 && inner.state.outbox_bytes() > 0) || inner.can_pump() {
            progress = true;
        }
        let next = inner.state.next_deadline();
        drop(inner);
        if !progress && !deadline.poll(next, cx) {
            return Poll::Pending;
        }
    }
    // Busy: let the other tasks of this executor run, then come back.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// A packet in one line for `-d` / debug logs, formatted only when the log line is enabled:
/// the type, identifiers and flags, never payload bytes.
struct Describe<'a>(&'a Packet);

impl std::fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Packet::Connect(c) if c.level.is_v5() => write!(
                f,
                "CONNECT (MQTT 5, client id {:?}, clean start {}, keepalive {} s, session expiry {} s)",
                c.client_id.as_str(),
                c.clean_session,
                c.keep_alive,
                c.properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                    .unwrap_or(0)
            ),
            Packet::Connect(c) => write!(
                f,
                "CONNECT (client id {:?}, clean session {}, keepalive {} s)",
                c.client_id.as_str(),
                c.clean_session,
                c.keep_alive
            ),
            Packet::ConnAck(a) => write!(
                f,
                "CONNACK (session present {}, code {}{})",
                a.session_present,
                a.code,
                Props(&a.properties)
            ),
            Packet::Publish(p) => write!(
                f,
                "PUBLISH (d{}, q{}, r{}, m{}, {:?}, {} bytes{})",
                u8::from(p.dup),
                p.qos as u8,
                u8::from(p.retain),
                p.packet_id,
                p.topic.as_str(),
                p.payload.len(),
                Props(&p.properties)
            ),
            Packet::PubAck(a) => write!(f, "PUBACK (m{}, {})", a.packet_id, a.reason),
            Packet::PubRec(a) => write!(f, "PUBREC (m{}, {})", a.packet_id, a.reason),
            Packet::PubRel(a) => write!(f, "PUBREL (m{}, {})", a.packet_id, a.reason),
            Packet::PubComp(a) => write!(f, "PUBCOMP (m{}, {})", a.packet_id, a.reason),
            Packet::Subscribe(s) => {
                write!(f, "SUBSCRIBE (m{}", s.packet_id)?;
                for (filter, options) in &s.filters {
                    write!(f, ", {:?} q{}", filter.as_str(), options.qos as u8)?;
                }
                f.write_str(")")
            }
            Packet::SubAck(s) => write!(f, "SUBACK (m{}, {:?})", s.packet_id, s.return_codes),
            Packet::Unsubscribe(u) => write!(f, "UNSUBSCRIBE (m{}, {:?})", u.packet_id, u.filters),
            Packet::UnsubAck(u) => write!(f, "UNSUBACK (m{}, {:?})", u.packet_id, u.reasons),
            Packet::PingReq => f.write_str("PINGREQ"),
            Packet::PingResp => f.write_str("PINGRESP"),
            Packet::Disconnect(d) => write!(f, "DISCONNECT ({}{})", d.reason, Props(&d.properties)),
            Packet::Auth(a) => write!(f, "AUTH ({})", a.reason),
        }
    }
}

/// ", N properties" after a packet that has some (MQTT 5), for debug lines.
struct Props<'a>(&'a Option<Box<crate::protocol::Properties>>);

impl std::fmt::Display for Props<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(p) = self.0 else {
            return Ok(());
        };
        if let Some(r) = &p.reason_string {
            write!(f, ", reason string {:?}", r.as_str())?;
        }
        if !p.user_properties.is_empty() {
            write!(f, ", {} user properties", p.user_properties.len())?;
        }
        Ok(())
    }
}
