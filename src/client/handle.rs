//! The application's side of a client: [`Client`] (cheap to clone, for requests) and
//! [`Messages`] (the incoming messages). Both only queue work in the shared state and wake the
//! connection task; neither touches the socket.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::Stream;

use super::connection::{open, run, Conn};
use super::dial::Dialer;
use super::error::ClientError;
use super::options::ClientOptions;
use super::shared::{Pending, Shared, Shutdown, Subscription};
use super::signal::{oneshot, Receiver};
use super::state::{ClientState, StateConfig};
use crate::protocol::{
    publish_len, ByteStr, Properties, ProtocolLevel, Publish, QoS, ReasonCode, SubscribeReturnCode,
    SubscriptionOptions, MAX_REMAINING_LENGTH,
};
use crate::topic::{validate_filter, validate_topic_name};

/// A connected MQTT client. Clones share one connection; the connection ends with
/// [`Client::disconnect`], or once every clone and the [`Messages`] are dropped.
///
/// Single-threaded: use it on the glommio executor that connected it.
pub struct Client {
    shared: Rc<Shared>,
}

impl Client {
    /// Opens the connection (TCP, then TLS and the WebSocket upgrade if the transport has
    /// them), sends CONNECT and waits for CONNACK. Must be called on a glommio executor (see
    /// [`block_on`](super::block_on)); the connection's task runs there.
    ///
    /// Errors: invalid options or TLS files ([`ClientError::Invalid`]), the TCP connection
    /// failing ([`ClientError::Connect`]), TLS failing ([`ClientError::Tls`], e.g. an untrusted
    /// server certificate), the WebSocket upgrade refused ([`ClientError::WebSocket`]), the
    /// server refusing ([`ClientError::Refused`] with the CONNACK code), or no handshake or
    /// CONNACK in `connect_timeout`.
    pub async fn connect(options: ClientOptions) -> Result<(Client, Messages), ClientError> {
        options.validate()?;
        let dialer = Dialer::new(&options)?;
        let conn = open(&options, &dialer).await?;
        Client::start(options, conn, dialer).await
    }

    /// [`connect`](Self::connect) over a stream socket opened by the caller (plain MQTT, no
    /// transport layer), e.g. one end of a `socketpair` whose other end a broker serves. No
    /// `reconnect_interval`: the caller owns how the socket is made.
    pub(crate) async fn connect_over(
        options: ClientOptions,
        stream: glommio::net::TcpStream,
    ) -> Result<(Client, Messages), ClientError> {
        debug_assert!(options.reconnect_interval.is_none());
        options.validate()?;
        let dialer = Dialer::new(&options)?;
        Client::start(options, Conn::new(stream, None), dialer).await
    }

    async fn start(
        options: ClientOptions,
        conn: Conn,
        dialer: Dialer,
    ) -> Result<(Client, Messages), ClientError> {
        let keep_alive = options.keep_alive_interval();
        let config = StateConfig {
            keep_alive,
            ping_timeout: options.ping_timeout.unwrap_or(keep_alive),
            connect_timeout: options.connect_timeout,
            max_inflight: usize::from(options.max_inflight),
            clean_session: !options.session_persists(),
        };
        let mut state = ClientState::new(config, options.connect_packet(), Instant::now());
        if options.protocol.is_v5() {
            state = state.with_outgoing_aliases(options.outgoing_topic_aliases.unwrap_or(0));
            if let Some(auth) = &options.authentication {
                state = state.with_authentication(auth.clone());
            }
        }
        if options.manual_acks {
            state = state.with_manual_acks();
        }
        let (connected_tx, connected_rx) = oneshot();
        let shared = Rc::new(Shared::new(state, options, connected_tx));
        // Made before waiting, so that dropping this future also ends the connection.
        let client = Client::from_shared(shared.clone());
        let messages = Messages {
            shared: shared.clone(),
        };
        glommio::spawn_local(run(shared, conn, dialer)).detach();
        connected_rx.await?;
        Ok((client, messages))
    }

    fn from_shared(shared: Rc<Shared>) -> Client {
        shared.inner.borrow_mut().handles += 1;
        Client { shared }
    }

    /// Publishes a message. The returned future resolves for QoS 0 once the message is queued
    /// for writing, for QoS 1 on PUBACK and for QoS 2 on PUBCOMP.
    ///
    /// The message is queued when `publish` is called, not when the future is first polled,
    /// so calling `publish` several times before awaiting pipelines them in call order. Up to
    /// `max_inflight` QoS 1/2 messages are in flight at once; later ones wait for room.
    /// Dropping the future does not cancel the publish.
    ///
    /// ```no_run
    /// # use surgemq::client::{block_on, Client, ClientOptions};
    /// # use surgemq::protocol::QoS;
    /// # block_on(async {
    /// # let (client, _) = Client::connect(ClientOptions::new("127.0.0.1", 1883)).await?;
    /// // A thousand messages in flight up to the window, acknowledged in the background.
    /// let acks: Vec<_> = (0..1000)
    ///     .map(|i| client.publish("metrics/load", i.to_string(), QoS::AtLeastOnce, false))
    ///     .collect();
    /// for ack in acks {
    ///     ack.await?;
    /// }
    /// # Ok::<(), surgemq::client::ClientError>(())
    /// # });
    /// ```
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Publishing {
        self.publish_with(topic, payload, qos, retain, Properties::default())
    }

    /// [`publish`](Self::publish) with MQTT 5 properties: Payload Format Indicator, Message
    /// Expiry Interval, Content Type, Response Topic, Correlation Data and User Property
    /// (others are refused: the server sets Subscription Identifiers, and Topic Aliases are
    /// the client's business, see [`ClientOptions::outgoing_topic_aliases`]). On a 3.1/3.1.1
    /// connection only empty properties are accepted.
    ///
    /// MQTT 5 limits of the server: a PUBLISH above its Maximum Packet Size is refused here
    /// ([`ClientError::Invalid`]) rather than sent; QoS 1/2 publishes beyond its Receive
    /// Maximum wait for acknowledgements to make room. A message that waits (for room, or for
    /// a reconnect) goes out with its Message Expiry Interval lowered by the time waited, or
    /// fails with [`ClientError::MessageExpired`] once that has run out.
    ///
    /// A QoS 1/2 publish the server refuses (PUBACK or PUBREC with a reason code of 0x80 or
    /// above) fails with [`ClientError::Rejected`]; 0x10 "no matching subscribers" is success.
    ///
    /// ```no_run
    /// # use surgemq::client::{block_on, Client, ClientOptions};
    /// use surgemq::protocol::{ByteStr, Properties, ProtocolLevel, QoS};
    /// # block_on(async {
    /// let options = ClientOptions {
    ///     protocol: ProtocolLevel::V5,
    ///     ..ClientOptions::new("127.0.0.1", 1883)
    /// };
    /// let (client, _) = Client::connect(options).await?;
    /// let properties = Properties {
    ///     content_type: Some(ByteStr::from("text/plain")),
    ///     user_properties: vec![(ByteStr::from("unit"), ByteStr::from("celsius"))],
    ///     ..Properties::default()
    /// };
    /// client
    ///     .publish_with("sensors/7/temp", "21.5", QoS::AtLeastOnce, false, properties)
    ///     .await?;
    /// # Ok::<(), surgemq::client::ClientError>(())
    /// # });
    /// ```
    pub fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Publishing {
        let payload = payload.into();
        if let Err(e) = validate_topic_name(topic) {
            return Publishing::done(Err(ClientError::invalid("topic", e)));
        }
        if publish_len(topic.len(), payload.len(), qos) > MAX_REMAINING_LENGTH + 5 {
            return Publishing::done(Err(ClientError::invalid(
                "payload",
                format!("{} bytes do not fit in an MQTT packet", payload.len()),
            )));
        }
        let mut inner = self.shared.inner.borrow_mut();
        if let Some(e) = &inner.closed {
            return Publishing::done(Err(e.clone()));
        }
        let level = inner.state.level();
        let properties = match publish_properties(properties, level) {
            Ok(p) => p,
            Err(e) => return Publishing::done(Err(e)),
        };
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: ByteStr::from(topic),
            packet_id: 0,
            payload,
            properties,
        };
        let len = publish.encoded_len(level);
        if len > MAX_REMAINING_LENGTH + 5 {
            return Publishing::done(Err(ClientError::invalid(
                "properties",
                "the PUBLISH does not fit in an MQTT packet",
            )));
        }
        if let Some(server) = inner.state.connack_properties() {
            // What the server said it cannot take would end the connection (MQTT-3.2.2-11,
            // -14): refused here instead, naming the limit.
            if let Some(max) = server.maximum_qos.filter(|&max| qos > max) {
                return Publishing::done(Err(ClientError::invalid(
                    "qos",
                    format!("the server's Maximum QoS is {}", max as u8),
                )));
            }
            if retain && server.retain_available == Some(false) {
                return Publishing::done(Err(ClientError::invalid(
                    "retain",
                    "the server does not keep retained messages (Retain Available 0)",
                )));
            }
        }
        if let Some(max) = inner.state.server_maximum_packet_size() {
            if len > max as usize {
                return Publishing::done(Err(ClientError::invalid(
                    "payload",
                    format!("a {len}-byte PUBLISH exceeds the server's Maximum Packet Size {max}"),
                )));
            }
        }
        let (tx, rx) = oneshot();
        inner.submit(publish, tx, Instant::now());
        Publishing(Stage::Waiting(rx))
    }

    /// Subscribes to topic filters with their maximum QoS; resolves on SUBACK with one return
    /// code per filter: the QoS granted, or `Failure` with the reason (always 0x80 in 3.1.1;
    /// [`ClientError::refused_subscription`] turns it into an error naming the reason).
    pub async fn subscribe<S: AsRef<str>>(
        &self,
        filters: &[(S, QoS)],
    ) -> Result<Vec<SubscribeReturnCode>, ClientError> {
        let filters: Vec<(&str, SubscriptionOptions)> = filters
            .iter()
            .map(|(f, q)| (f.as_ref(), SubscriptionOptions::from(*q)))
            .collect();
        self.subscribe_with(&filters, Properties::default()).await
    }

    /// [`subscribe`](Self::subscribe) with MQTT 5 subscription options (No Local, Retain As
    /// Published, Retain Handling) and SUBSCRIBE properties: a Subscription Identifier
    /// (`subscription_identifiers`, at most one, 1 to 268435455; messages matching these
    /// filters then carry it) and User Property. On a 3.1/3.1.1 connection only the QoS of
    /// the options may be set.
    pub async fn subscribe_with<S: AsRef<str>>(
        &self,
        filters: &[(S, SubscriptionOptions)],
        properties: Properties,
    ) -> Result<Vec<SubscribeReturnCode>, ClientError> {
        if filters.is_empty() {
            return Err(ClientError::invalid("subscribe", "no topic filter"));
        }
        let level = self.protocol();
        let mut list = Vec::with_capacity(filters.len());
        for (f, options) in filters {
            let f = f.as_ref();
            validate_filter(f).map_err(|e| ClientError::invalid("topic filter", e))?;
            if !level.is_v5() && *options != SubscriptionOptions::from(options.qos) {
                return Err(ClientError::invalid(
                    "subscription options",
                    "No Local, Retain As Published and Retain Handling need MQTT 5",
                ));
            }
            if options.no_local && f.starts_with("$share/") {
                return Err(ClientError::invalid(
                    "subscription options",
                    "No Local on a shared subscription (MQTT-3.8.3-4)",
                ));
            }
            list.push((ByteStr::from(f), *options));
        }
        let properties = request_properties(properties, level, true)?;
        let (tx, rx) = oneshot();
        self.request(|inner, now| {
            let id = inner
                .state
                .subscribe_with(list.clone(), properties.clone(), now)?;
            let asked = Subscription {
                filters: list,
                properties,
            };
            Ok((id, Pending::Subscribe(tx, asked)))
        })?;
        rx.await
    }

    /// Unsubscribes from topic filters; resolves on UNSUBACK.
    pub async fn unsubscribe<S: AsRef<str>>(&self, filters: &[S]) -> Result<(), ClientError> {
        self.unsubscribe_with(filters, Properties::default())
            .await
            .map(drop)
    }

    /// [`unsubscribe`](Self::unsubscribe) with MQTT 5 properties (User Property only);
    /// resolves on UNSUBACK with its reason code for each filter (MQTT 5: e.g. 0x11 "no
    /// subscription existed", 0x87 "not authorized"; 3.1/3.1.1: success for each).
    pub async fn unsubscribe_with<S: AsRef<str>>(
        &self,
        filters: &[S],
        properties: Properties,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        if filters.is_empty() {
            return Err(ClientError::invalid("unsubscribe", "no topic filter"));
        }
        let mut list = Vec::with_capacity(filters.len());
        for f in filters {
            let f = f.as_ref();
            validate_filter(f).map_err(|e| ClientError::invalid("topic filter", e))?;
            list.push(ByteStr::from(f));
        }
        let properties = request_properties(properties, self.protocol(), false)?;
        let (tx, rx) = oneshot();
        self.request(|inner, now| {
            let id = inner
                .state
                .unsubscribe_with(list.clone(), properties, now)?;
            Ok((id, Pending::Unsubscribe(tx, list)))
        })?;
        rx.await
    }

    fn request(
        &self,
        make: impl FnOnce(
            &mut super::shared::Inner,
            Instant,
        ) -> Result<(crate::protocol::PacketId, Pending), ClientError>,
    ) -> Result<(), ClientError> {
        let mut inner = self.shared.inner.borrow_mut();
        if let Some(e) = &inner.closed {
            return Err(e.clone());
        }
        let (id, pending) = make(&mut inner, Instant::now())?;
        inner.register(id, pending);
        inner.wake_io();
        Ok(())
    }

    /// Sends DISCONNECT and closes the connection; the server discards the will. Requests
    /// still waiting fail with [`ClientError::Disconnected`]. Resolves once the socket is
    /// closed; an error if the connection had already failed, with the reason.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        match self.stop(Shutdown::Graceful).await {
            ClientError::Disconnected => Ok(()),
            other => Err(other),
        }
    }

    /// MQTT 5: [`disconnect`](Self::disconnect) with a reason code and properties, e.g.
    /// `ReasonCode::DISCONNECT_WITH_WILL_MESSAGE` (0x04: the server publishes the will) or a
    /// Session Expiry Interval that replaces CONNECT's (not above 0 if CONNECT's was 0,
    /// MQTT-3.14.2-2). Properties: Session Expiry Interval, Reason String, User Property.
    pub async fn disconnect_with(
        &self,
        reason: ReasonCode,
        properties: Properties,
    ) -> Result<(), ClientError> {
        let allowed = Properties {
            session_expiry_interval: properties.session_expiry_interval,
            reason_string: properties.reason_string.clone(),
            user_properties: properties.user_properties.clone(),
            ..Properties::default()
        };
        let invalid = |why: &str| Err(ClientError::invalid("disconnect", why));
        {
            let inner = self.shared.inner.borrow();
            let level = inner.state.level();
            if !level.is_v5()
                && (reason != ReasonCode::NORMAL_DISCONNECTION
                    || properties != Properties::default())
            {
                return invalid("a reason code and properties need MQTT 5");
            }
            if allowed != properties {
                return invalid("DISCONNECT carries only Session Expiry Interval, Reason String and User Property");
            }
            if !matches!(reason.0, 0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2)
            {
                return invalid("not a reason code a client's DISCONNECT may carry");
            }
            let connected_without_expiry = inner.options.session_expiry.unwrap_or(0) == 0;
            if connected_without_expiry && properties.session_expiry_interval.is_some_and(|s| s > 0)
            {
                return invalid("a session expiry above 0 after CONNECT's 0 (MQTT-3.14.2-2)");
            }
            check_strings(&properties)?;
        }
        let properties = (properties != Properties::default()).then(|| Box::new(properties));
        self.shared.inner.borrow_mut().goodbye =
            Some(crate::protocol::Disconnect { reason, properties });
        self.disconnect().await
    }

    /// MQTT 5 re-authentication (4.12.1): sends AUTH 0x19 with the Authentication Method of
    /// [`ClientOptions::authentication`] and `data`, answers the server's challenges through
    /// its responder, and resolves with the server's Authentication Data on its AUTH 0x00.
    /// Other traffic goes on meanwhile. A server that refuses ends the connection: the error
    /// is then its DISCONNECT ([`ClientError::ServerDisconnect`], e.g. 0x87 not authorized).
    pub async fn reauthenticate(&self, data: Option<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let (tx, rx) = oneshot();
        {
            let mut inner = self.shared.inner.borrow_mut();
            if let Some(e) = &inner.closed {
                return Err(e.clone());
            }
            inner.state.reauthenticate(data, Instant::now())?;
            inner.reauth = Some(tx);
            inner.wake_io();
        }
        rx.await
    }

    /// Closes the connection without DISCONNECT, as a network failure would, so the server
    /// publishes the will. Resolves once the socket is closed.
    pub async fn abort(&self) {
        self.stop(Shutdown::Abort).await;
    }

    async fn stop(&self, how: Shutdown) -> ClientError {
        {
            let mut inner = self.shared.inner.borrow_mut();
            if inner.shutdown == Shutdown::None {
                inner.shutdown = how;
            }
            inner.wake_io();
        }
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.inner.borrow_mut();
            match &inner.closed {
                Some(reason) => Poll::Ready(reason.clone()),
                None => {
                    inner.add_close_waiter(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// With [`ClientOptions::manual_acks`]: acknowledges a QoS 1/2 message received (PUBACK,
    /// or PUBREC for QoS 2), so the server can forget it. False when there was nothing to
    /// acknowledge: QoS 0, acknowledged already, manual acknowledgements off, or the message
    /// came on a connection since lost (the server sends it again).
    pub fn ack(&self, message: &Publish) -> bool {
        let mut inner = self.shared.inner.borrow_mut();
        let done = inner
            .state
            .acknowledge(message.packet_id, message.qos, Instant::now());
        if done {
            inner.wake_io();
        }
        done
    }

    /// Whether the server had kept a session for this client id (last CONNACK).
    pub fn session_present(&self) -> bool {
        self.shared.inner.borrow().state.session_present()
    }

    /// Whether the connection is up (false while reconnecting and after the end).
    pub fn is_connected(&self) -> bool {
        self.shared.inner.borrow().state.is_connected()
    }

    /// QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.shared.inner.borrow().state.inflight()
    }

    /// The protocol version this client speaks.
    pub fn protocol(&self) -> ProtocolLevel {
        self.shared.inner.borrow().state.level()
    }

    /// The client identifier the server assigned (MQTT 5, when the client id was empty).
    pub fn assigned_client_id(&self) -> Option<String> {
        let inner = self.shared.inner.borrow();
        inner.state.assigned_client_id().map(str::to_string)
    }

    /// The properties of the server's last CONNACK (MQTT 5): its limits (Receive Maximum,
    /// Maximum Packet Size, Maximum QoS, Retain Available, ...), Server Keep Alive, Assigned
    /// Client Identifier, user properties. `None` for 3.1/3.1.1 or a CONNACK without any.
    pub fn server_properties(&self) -> Option<Properties> {
        let inner = self.shared.inner.borrow();
        inner.state.connack_properties().cloned()
    }

    /// The keepalive in force: `keep_alive`, or the server's Server Keep Alive (MQTT 5).
    pub fn keep_alive(&self) -> std::time::Duration {
        self.shared.inner.borrow().state.keep_alive()
    }
}

/// Whether `properties` has anything to send: false when empty, an error when it has but the
/// connection is not MQTT 5.
fn any_v5_properties(
    properties: &Properties,
    level: ProtocolLevel,
    what: &str,
) -> Result<bool, ClientError> {
    if *properties == Properties::default() {
        return Ok(false);
    }
    if !level.is_v5() {
        return Err(ClientError::invalid(
            "properties",
            format!("{what}properties need MQTT 5, not {}", version(level)),
        ));
    }
    Ok(true)
}

/// The properties a client may publish, checked; `None` when empty.
fn publish_properties(
    properties: Properties,
    level: ProtocolLevel,
) -> Result<Option<Box<Properties>>, ClientError> {
    if !any_v5_properties(&properties, level, "PUBLISH ")? {
        return Ok(None);
    }
    let allowed = Properties {
        payload_format_utf8: properties.payload_format_utf8,
        message_expiry_interval: properties.message_expiry_interval,
        content_type: properties.content_type.clone(),
        response_topic: properties.response_topic.clone(),
        correlation_data: properties.correlation_data.clone(),
        user_properties: properties.user_properties.clone(),
        ..Properties::default()
    };
    if allowed != properties {
        return Err(ClientError::invalid(
            "properties",
            "a client publishes only Payload Format Indicator, Message Expiry Interval, \
             Content Type, Response Topic, Correlation Data and User Property",
        ));
    }
    if let Some(t) = &properties.response_topic {
        validate_topic_name(t).map_err(|e| ClientError::invalid("response topic", e))?;
    }
    check_strings(&properties)?;
    Ok(Some(Box::new(properties)))
}

/// SUBSCRIBE (`subscribe`: Subscription Identifier allowed) or UNSUBSCRIBE properties,
/// checked; `None` when empty.
fn request_properties(
    properties: Properties,
    level: ProtocolLevel,
    subscribe: bool,
) -> Result<Option<Box<Properties>>, ClientError> {
    if !any_v5_properties(&properties, level, "")? {
        return Ok(None);
    }
    let ids = &properties.subscription_identifiers;
    let allowed = Properties {
        subscription_identifiers: if subscribe {
            ids.clone()
        } else {
            Default::default()
        },
        user_properties: properties.user_properties.clone(),
        ..Properties::default()
    };
    if allowed != properties {
        return Err(ClientError::invalid(
            "properties",
            if subscribe {
                "SUBSCRIBE carries only a Subscription Identifier and User Property"
            } else {
                "UNSUBSCRIBE carries only User Property"
            },
        ));
    }
    if ids.len() > 1 || ids.iter().any(|&id| id == 0 || id > 268_435_455) {
        return Err(ClientError::invalid(
            "subscription identifier",
            "one, from 1 to 268435455",
        ));
    }
    check_strings(&properties)?;
    Ok(Some(Box::new(properties)))
}

/// Strings and binary fields that fit their 2-byte length and hold no U+0000.
fn check_strings(p: &Properties) -> Result<(), ClientError> {
    let strings = p
        .user_properties
        .iter()
        .flat_map(|(k, v)| [k, v])
        .chain(&p.content_type)
        .chain(&p.response_topic)
        .chain(&p.reason_string);
    for s in strings {
        if s.len() > 65_535 || s.contains('\0') {
            return Err(ClientError::invalid(
                "properties",
                "a string longer than 65535 bytes or with U+0000",
            ));
        }
    }
    if p.correlation_data
        .as_ref()
        .is_some_and(|d| d.len() > 65_535)
    {
        return Err(ClientError::invalid(
            "correlation data",
            "longer than 65535 bytes",
        ));
    }
    Ok(())
}

fn version(level: ProtocolLevel) -> &'static str {
    match level {
        ProtocolLevel::V31 => "3.1",
        ProtocolLevel::V311 => "3.1.1",
        ProtocolLevel::V5 => "5",
    }
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client::from_shared(self.shared.clone())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut inner = self.shared.inner.borrow_mut();
        inner.handles -= 1;
        if inner.handles == 0 {
            inner.wake_io();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.shared.inner.borrow();
        f.debug_struct("Client")
            .field("client_id", &inner.options.client_id)
            .field("connected", &inner.state.is_connected())
            .finish()
    }
}

/// The outcome of [`Client::publish`].
#[must_use = "the message is sent either way; await this to know it was acknowledged"]
pub struct Publishing(Stage);

enum Stage {
    Done(Option<Result<(), ClientError>>),
    Waiting(Receiver<()>),
}

impl Publishing {
    fn done(result: Result<(), ClientError>) -> Publishing {
        Publishing(Stage::Done(Some(result)))
    }
}

impl Future for Publishing {
    type Output = Result<(), ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Stage::Done(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            Stage::Waiting(rx) => Pin::new(rx).poll(cx),
        }
    }
}

/// Messages the server sends this client, in the order received. Each is delivered once
/// (QoS 2 duplicates are filtered out) and acknowledged as it is received.
///
/// Also a [`Stream`] of [`Publish`] that ends with the connection.
///
/// ```no_run
/// # use surgemq::client::{block_on, Client, ClientOptions};
/// # use surgemq::protocol::QoS;
/// use futures_lite::StreamExt;
/// # block_on(async {
/// let (client, messages) = Client::connect(ClientOptions::new("127.0.0.1", 1883)).await?;
/// client.subscribe(&[("alerts/#", QoS::AtLeastOnce)]).await?;
/// let mut urgent = messages.filter(|m| m.topic.ends_with("/urgent"));
/// while let Some(m) = urgent.next().await {
///     println!("{}: {} bytes", m.topic, m.payload.len());
/// }
/// # Ok::<(), surgemq::client::ClientError>(())
/// # });
/// ```
pub struct Messages {
    shared: Rc<Shared>,
}

impl Messages {
    /// The next message; once the connection has ended and every message received before
    /// was taken, the reason it ended ([`ClientError::Disconnected`] after `disconnect`).
    pub async fn recv(&mut self) -> Result<Publish, ClientError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message if one is already here.
    pub fn try_recv(&mut self) -> Option<Publish> {
        self.shared.inner.borrow_mut().pop_message()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Publish, ClientError>> {
        let mut inner = self.shared.inner.borrow_mut();
        if let Some(p) = inner.pop_message() {
            return Poll::Ready(Ok(p));
        }
        if let Some(e) = &inner.closed {
            return Poll::Ready(Err(e.clone()));
        }
        inner.set_messages_waker(cx.waker());
        Poll::Pending
    }
}

impl Stream for Messages {
    type Item = Publish;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Publish>> {
        self.get_mut().poll_recv(cx).map(Result::ok)
    }
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.shared.inner.borrow();
        f.debug_struct("Messages")
            .field("closed", &inner.closed)
            .finish_non_exhaustive()
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.shared.inner.borrow_mut().drop_messages();
    }
}
