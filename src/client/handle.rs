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

use super::connection::{open, run};
use super::dial::Dialer;
use super::error::ClientError;
use super::options::ClientOptions;
use super::shared::{Pending, Shared, Shutdown};
use super::signal::{oneshot, Receiver};
use super::state::{ClientState, StateConfig};
use crate::protocol::{
    publish_len, ByteStr, Publish, QoS, SubscribeReturnCode, MAX_REMAINING_LENGTH,
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
        let keep_alive = options.keep_alive_interval();
        let config = StateConfig {
            keep_alive,
            ping_timeout: options.ping_timeout.unwrap_or(keep_alive),
            connect_timeout: options.connect_timeout,
            max_inflight: usize::from(options.max_inflight),
            clean_session: options.clean_session,
        };
        let state = ClientState::new(config, options.connect_packet(), Instant::now());
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
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: ByteStr::from(topic),
            packet_id: 0,
            payload,
            properties: None,
        };
        let (tx, rx) = oneshot();
        inner.submit(publish, tx, Instant::now());
        Publishing(Stage::Waiting(rx))
    }

    /// Subscribes to topic filters with their maximum QoS; resolves on SUBACK with one return
    /// code per filter: the QoS granted, or `Failure`.
    pub async fn subscribe<S: AsRef<str>>(
        &self,
        filters: &[(S, QoS)],
    ) -> Result<Vec<SubscribeReturnCode>, ClientError> {
        if filters.is_empty() {
            return Err(ClientError::invalid("subscribe", "no topic filter"));
        }
        let mut list = Vec::with_capacity(filters.len());
        for (f, qos) in filters {
            let f = f.as_ref();
            validate_filter(f).map_err(|e| ClientError::invalid("topic filter", e))?;
            list.push((ByteStr::from(f), *qos));
        }
        let (tx, rx) = oneshot();
        self.request(|inner, now| {
            let id = inner.state.subscribe(list.clone(), now)?;
            Ok((id, Pending::Subscribe(tx, list)))
        })?;
        rx.await
    }

    /// Unsubscribes from topic filters; resolves on UNSUBACK.
    pub async fn unsubscribe<S: AsRef<str>>(&self, filters: &[S]) -> Result<(), ClientError> {
        if filters.is_empty() {
            return Err(ClientError::invalid("unsubscribe", "no topic filter"));
        }
        let mut list = Vec::with_capacity(filters.len());
        for f in filters {
            let f = f.as_ref();
            validate_filter(f).map_err(|e| ClientError::invalid("topic filter", e))?;
            list.push(ByteStr::from(f));
        }
        let (tx, rx) = oneshot();
        self.request(|inner, now| {
            let id = inner.state.unsubscribe(list.clone(), now)?;
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
