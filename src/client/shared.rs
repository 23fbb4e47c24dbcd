//! What the [`Client`](super::Client) handles, the [`Messages`](super::Messages) receiver and
//! the connection task share on one executor: the protocol state machine plus the async
//! bookkeeping around it, i.e. publishes waiting for room, the futures waiting for
//! acknowledgements, the incoming message queue, and the wakers that connect them.
//!
//! Handles only queue work here and wake the connection task; the task alone touches the
//! socket. Nothing here blocks or awaits, and no method wakes a task synchronously into
//! re-entering the `RefCell`: wakers only schedule.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::Waker;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;

use super::error::ClientError;
use super::options::ClientOptions;
use super::signal::Sender;
use super::state::{remaining_expiry, ClientState, Event};
use crate::protocol::{
    ByteStr, PacketId, Properties, Publish, QoS, ReasonCode, SubscribeReturnCode,
    SubscriptionOptions,
};

/// Encoded bytes the outbox may hold before publishes wait: what "queued for writing" means
/// for QoS 0, and what keeps a publishing loop from outrunning the socket.
pub(crate) const OUTBOX_HIGH_WATER: usize = 64 * 1024;

/// How the application asked the connection to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    None,
    /// DISCONNECT, then close: the server discards the will.
    Graceful,
    /// Close without DISCONNECT, as a network failure would: the server publishes the will.
    Abort,
}

struct WaitingPublish {
    publish: Publish,
    done: Sender<()>,
    /// When it was submitted: its Message Expiry Interval runs from then.
    since: Instant,
}

pub(crate) enum Pending {
    Publish(Sender<()>),
    /// With the filters asked for and the SUBSCRIBE's properties, to remember the ones
    /// granted.
    Subscribe(Sender<Vec<SubscribeReturnCode>>, Subscription),
    Unsubscribe(Sender<Vec<ReasonCode>>, Vec<ByteStr>),
}

/// Filters subscribed together: the options of each, the properties (Subscription
/// Identifier, User Property) of their SUBSCRIBE.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub filters: Vec<(ByteStr, SubscriptionOptions)>,
    pub properties: Option<Box<Properties>>,
}

impl Pending {
    fn fail(self, reason: ClientError) {
        match self {
            Pending::Publish(tx) => tx.send(Err(reason)),
            Pending::Unsubscribe(tx, _) => tx.send(Err(reason)),
            Pending::Subscribe(tx, _) => tx.send(Err(reason)),
        }
    }
}

pub(crate) struct Inner {
    pub state: ClientState,
    pub options: ClientOptions,
    /// Publishes not yet in the state machine (window full, outbox full, or reconnecting),
    /// in call order.
    waiting: VecDeque<WaitingPublish>,
    /// Futures waiting for an acknowledgement, by packet id.
    pending: AHashMap<PacketId, Pending>,
    /// Filters the server granted (and that were not unsubscribed since), in order, with the
    /// properties of their SUBSCRIBE: sent again after a reconnect to a server that kept no
    /// session.
    subscriptions: Vec<(ByteStr, SubscriptionOptions, Option<Box<Properties>>)>,
    /// Resolves `Client::connect` on the first CONNACK (with session present).
    connected: Option<Sender<bool>>,
    messages: VecDeque<Publish>,
    messages_waker: Option<Waker>,
    /// False once `Messages` is dropped: incoming messages are then acknowledged and dropped.
    pub messages_alive: bool,
    /// Live `Client` handles.
    pub handles: usize,
    pub shutdown: Shutdown,
    /// The DISCONNECT a graceful shutdown sends (MQTT 5 `disconnect_with`); normal if None.
    pub goodbye: Option<crate::protocol::Disconnect>,
    /// Resolves `Client::reauthenticate` with the server's AUTH 0x00 data.
    pub reauth: Option<Sender<Option<Bytes>>>,
    io_waker: Option<Waker>,
    /// Set when the connection task has ended, with the reason.
    pub closed: Option<ClientError>,
    close_waiters: Vec<Waker>,
}

pub(crate) struct Shared {
    pub inner: RefCell<Inner>,
}

impl Shared {
    pub fn new(state: ClientState, options: ClientOptions, connected: Sender<bool>) -> Shared {
        Shared {
            inner: RefCell::new(Inner {
                state,
                options,
                waiting: VecDeque::new(),
                pending: AHashMap::new(),
                subscriptions: Vec::new(),
                connected: Some(connected),
                messages: VecDeque::new(),
                messages_waker: None,
                messages_alive: true,
                handles: 0,
                shutdown: Shutdown::None,
                goodbye: None,
                reauth: None,
                io_waker: None,
                closed: None,
                close_waiters: Vec::new(),
            }),
        }
    }
}

impl Inner {
    /// Queues a publish behind those already waiting and lets through what fits.
    pub fn submit(&mut self, publish: Publish, done: Sender<()>, now: Instant) {
        self.waiting.push_back(WaitingPublish {
            publish,
            done,
            since: now,
        });
        self.pump(now);
        self.wake_io();
    }

    /// Remembers who waits for the acknowledgement of request `id`.
    pub fn register(&mut self, id: PacketId, pending: Pending) {
        self.pending.insert(id, pending);
    }

    /// Moves waiting publishes into the state machine, in order, while connected and while
    /// there is room: the outbox under its high-water mark and, for QoS 1/2, the window open.
    pub fn pump(&mut self, now: Instant) {
        while let Some(front) = self.waiting.front() {
            if !self.state.is_connected()
                || self.state.outbox_bytes() >= OUTBOX_HIGH_WATER
                || (front.publish.qos != QoS::AtMostOnce && !self.state.window_open())
            {
                break;
            }
            let mut w = self.waiting.pop_front().expect("front exists");
            if let Some(p) = &mut w.publish.properties {
                if let Some(interval) = p.message_expiry_interval {
                    match remaining_expiry(interval, now.saturating_duration_since(w.since)) {
                        Some(left) => p.message_expiry_interval = Some(left),
                        None => {
                            w.done.send(Err(ClientError::MessageExpired { interval }));
                            continue;
                        }
                    }
                }
            }
            match self.state.publish(w.publish, now) {
                Ok(0) => w.done.send(Ok(())),
                Ok(id) => {
                    self.pending.insert(id, Pending::Publish(w.done));
                }
                Err(_) => unreachable!("the window was checked above"),
            }
        }
    }

    /// Whether `pump` would move something now.
    pub fn can_pump(&self) -> bool {
        match self.waiting.front() {
            None => false,
            Some(front) => {
                self.state.is_connected()
                    && self.state.outbox_bytes() < OUTBOX_HIGH_WATER
                    && (front.publish.qos == QoS::AtMostOnce || self.state.window_open())
            }
        }
    }

    /// Hands the state machine's events to whoever waits for them. `lost` is the reason for
    /// requests abandoned by a lost connection.
    pub fn dispatch_events(&mut self, lost: Option<&ClientError>) {
        while let Some(event) = self.state.pop_event() {
            match event {
                Event::Connected { session_present } => match self.connected.take() {
                    Some(tx) => tx.send(Ok(session_present)),
                    None => self.resubscribe(session_present),
                },
                Event::Message(p) => {
                    if self.messages_alive {
                        self.messages.push_back(p);
                        if let Some(w) = self.messages_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Published(id) => {
                    if let Some(Pending::Publish(tx)) = self.pending.remove(&id) {
                        tx.send(Ok(()));
                    }
                }
                Event::Rejected {
                    packet_id,
                    ack,
                    reason,
                    reason_string,
                } => {
                    if let Some(Pending::Publish(tx)) = self.pending.remove(&packet_id) {
                        tx.send(Err(ClientError::Rejected {
                            ack,
                            reason,
                            reason_string,
                        }));
                    }
                }
                Event::Unsubscribed { packet_id, reasons } => {
                    if let Some(Pending::Unsubscribe(tx, filters)) = self.pending.remove(&packet_id)
                    {
                        for (filter, reason) in filters.iter().zip(&reasons) {
                            if reason.is_success() {
                                self.subscriptions.retain(|(f, _, _)| f != filter);
                            }
                        }
                        tx.send(Ok(reasons));
                    }
                }
                Event::Subscribed {
                    packet_id,
                    return_codes,
                } => {
                    if let Some(Pending::Subscribe(tx, asked)) = self.pending.remove(&packet_id) {
                        for ((filter, options), code) in
                            asked.filters.into_iter().zip(&return_codes)
                        {
                            if let SubscribeReturnCode::Success(_) = code {
                                self.subscriptions.retain(|(f, _, _)| *f != filter);
                                self.subscriptions.push((
                                    filter,
                                    options,
                                    asked.properties.clone(),
                                ));
                            }
                        }
                        tx.send(Ok(return_codes));
                    }
                }
                Event::Expired {
                    packet_id,
                    interval,
                } => {
                    if let Some(p) = self.pending.remove(&packet_id) {
                        p.fail(ClientError::MessageExpired { interval });
                    }
                }
                Event::Reauthenticated(data) => {
                    if let Some(tx) = self.reauth.take() {
                        tx.send(Ok(data));
                    }
                }
                Event::Abandoned(id) => {
                    let reason = lost.cloned().unwrap_or(ClientError::Disconnected);
                    if let Some(p) = self.pending.remove(&id) {
                        p.fail(reason);
                    }
                }
            }
        }
    }

    /// After a reconnect to a server that kept no session, subscribes again to what the
    /// application had subscribed to, so a reconnecting client keeps receiving. Nobody waits
    /// for this SUBACK.
    fn resubscribe(&mut self, session_present: bool) {
        if session_present || self.subscriptions.is_empty() {
            return;
        }
        // One SUBSCRIBE for the filters subscribed without properties, one for each of the
        // others (a Subscription Identifier belongs to its SUBSCRIBE).
        let mut plain = Vec::new();
        let mut with_properties = Vec::new();
        for (filter, options, properties) in &self.subscriptions {
            match properties {
                None => plain.push((filter.clone(), *options)),
                Some(p) => {
                    with_properties.push((vec![(filter.clone(), *options)], Some(p.clone())))
                }
            }
        }
        let requests = (!plain.is_empty())
            .then_some((plain, None))
            .into_iter()
            .chain(with_properties);
        for (filters, properties) in requests {
            if let Err(e) = self
                .state
                .subscribe_with(filters, properties, Instant::now())
            {
                tracing::warn!(error = %e, "cannot subscribe again after reconnecting");
            }
        }
    }

    /// The connection is gone but the client will try again.
    pub fn connection_lost(&mut self, reason: &ClientError) {
        self.state.connection_lost();
        self.dispatch_events(Some(reason));
        if let Some(tx) = self.reauth.take() {
            tx.send(Err(reason.clone()));
        }
    }

    /// The client is finished: every waiter learns why, and so does `Messages` once it has
    /// taken what was already received.
    pub fn close(&mut self, reason: ClientError) {
        self.state.connection_lost();
        self.dispatch_events(Some(&reason));
        for (_, p) in self.pending.drain() {
            p.fail(reason.clone());
        }
        for w in self.waiting.drain(..) {
            w.done.send(Err(reason.clone()));
        }
        if let Some(tx) = self.connected.take() {
            tx.send(Err(reason.clone()));
        }
        if let Some(tx) = self.reauth.take() {
            tx.send(Err(reason.clone()));
        }
        self.closed = Some(reason);
        if let Some(w) = self.messages_waker.take() {
            w.wake();
        }
        for w in self.close_waiters.drain(..) {
            w.wake();
        }
    }

    /// Whether `Client::connect` is still waiting for its CONNACK: a failure then ends the
    /// client instead of starting a reconnect.
    pub fn first_connack_pending(&self) -> bool {
        self.connected.is_some()
    }

    /// Whether the application still holds anything that could use the connection.
    pub fn has_users(&self) -> bool {
        self.handles > 0 || self.messages_alive
    }

    /// Whether the connection task may read: not while the message queue is full, so a slow
    /// application slows the server down through TCP instead of growing the queue.
    pub fn can_read(&self) -> bool {
        self.messages.len() < self.options.message_buffer
    }

    pub fn set_io_waker(&mut self, waker: &Waker) {
        match &self.io_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.io_waker = Some(waker.clone()),
        }
    }

    pub fn wake_io(&mut self) {
        if let Some(w) = self.io_waker.take() {
            w.wake();
        }
    }

    /// The next received message, waking the connection task if it had stopped reading.
    pub fn pop_message(&mut self) -> Option<Publish> {
        let full = !self.can_read();
        let p = self.messages.pop_front()?;
        if full {
            self.wake_io();
        }
        Some(p)
    }

    pub fn set_messages_waker(&mut self, waker: &Waker) {
        match &self.messages_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.messages_waker = Some(waker.clone()),
        }
    }

    pub fn drop_messages(&mut self) {
        self.messages_alive = false;
        self.messages.clear();
        self.messages_waker = None;
        self.wake_io();
    }

    pub fn add_close_waiter(&mut self, waker: &Waker) {
        self.close_waiters.push(waker.clone());
    }
}
