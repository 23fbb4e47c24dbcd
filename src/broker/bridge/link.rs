//! One bridge's task: bring the link up (the remote broker first, then the local session),
//! move messages both ways until either side goes away, and start again after a back-off.
//!
//! Each direction is a pipeline of two halves joined by a bounded channel: the first takes a
//! message from one side and publishes it on the other at once (so publishes are pipelined
//! up to the window), the second awaits each publish's acknowledgement in order and only then
//! acknowledges the message to the side it came from. When the link drops, what was not
//! acknowledged stays with the side it came from (the local session, or the remote broker's
//! session) and comes again after the reconnect.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::or;
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use tracing::{info, warn};

use super::{BridgeConfig, BridgeStats, TopicMap};
use crate::broker::connection::serve_stream;
use crate::broker::listeners::ListenerSpec;
use crate::broker::mesh::Message;
use crate::broker::shard::Shard;
use crate::client::{Client, ClientError, ClientOptions, Messages, Will};
use crate::protocol::{
    ByteStr, Properties, ProtocolLevel, Publish, QoS, ReasonCode, RetainHandling,
    SubscribeReturnCode, SubscriptionOptions,
};
use crate::transport::Transport;

/// The address the bridge's local connection has in logs (it is a socketpair, not TCP).
const LOCAL_PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// Runs the bridge until `stop` ends (its sender dropped): then says "0" on the remote
/// notification topic and disconnects.
pub async fn run(
    shard: Rc<Shard>,
    config: Arc<BridgeConfig>,
    stats: Arc<BridgeStats>,
    stop: LocalReceiver<()>,
) {
    let bridge = Bridge {
        map: TopicMap::new(config.topics.clone()),
        shard,
        config,
        stats,
    };
    let stop = Rc::new(stop);
    let mut private = bridge.config.try_private;
    let mut address = 0;
    let mut last_wait = None;
    loop {
        let attempt = async { Some(bridge.connect(&mut address, &mut private).await) };
        let stopped = async {
            stop.recv().await;
            None
        };
        let outcome = match or(attempt, stopped).await {
            None => return,
            Some(outcome) => outcome,
        };
        let why = match outcome {
            Ok(mut link) => {
                last_wait = None;
                let why = or(bridge.serve(&mut link, address), async {
                    stop.recv().await;
                    None
                })
                .await;
                bridge.link_down();
                // Either way the remote broker hears "0" (a DISCONNECT would keep its will
                // from saying it) and both sessions end cleanly, kept for the next link.
                bridge.close(&link).await;
                match why {
                    None => {
                        info!(bridge = %bridge.config.name, "bridge stopped");
                        return;
                    }
                    Some(why) => {
                        if !bridge.config.round_robin {
                            address = 0;
                        }
                        why
                    }
                }
            }
            Err(why) => {
                BridgeStats::add(&bridge.stats.connect_failures, 1);
                why
            }
        };
        let wait = bridge.config.restart.next(last_wait, random());
        last_wait = Some(wait);
        warn!(bridge = %bridge.config.name, "{why}; trying again in {:.1} s", wait.as_secs_f64());
        let slept = or(
            async {
                glommio::timer::sleep(wait).await;
                true
            },
            async {
                stop.recv().await;
                false
            },
        )
        .await;
        if !slept {
            return;
        }
    }
}

/// Both clients of a link that is up.
struct Link {
    remote: (Client, Messages),
    local: (Client, Messages),
}

struct Bridge {
    shard: Rc<Shard>,
    config: Arc<BridgeConfig>,
    stats: Arc<BridgeStats>,
    map: TopicMap,
}

impl Bridge {
    /// The remote broker (each address in turn), then the local session. The subscriptions
    /// are made by [`serve`](Self::serve), while messages already flow: a resumed session may
    /// fill the in-flight window at once, and a broker may queue its SUBACK behind messages
    /// waiting for that window (this one does), so waiting for the SUBACK before reading and
    /// acknowledging would wait for ever.
    async fn connect(&self, address: &mut usize, private: &mut bool) -> Result<Link, String> {
        let remote = self.connect_remote(address, private).await?;
        let local = match self.connect_local().await {
            Ok(local) => local,
            Err(e) => {
                let _ = remote.0.disconnect().await;
                return Err(format!("cannot open the bridge's local session: {e}"));
            }
        };
        Ok(Link { remote, local })
    }

    /// Both sides subscribed: the link is up.
    fn link_up(&self, remote: &Client, address: usize) {
        self.stats.connected.store(true, Ordering::Relaxed);
        BridgeStats::add(&self.stats.connections, 1);
        self.notify_local("1");
        if self.config.notifications && !self.config.notifications_local_only {
            // Retained; the will says "0" if the link dies without a DISCONNECT.
            let topic = &self.config.notification_topic;
            // Queued at once; its acknowledgement is not waited for.
            drop(remote.publish(topic, "1", QoS::AtLeastOnce, true));
        }
        info!(bridge = %self.config.name, remote = %self.describe(address), "bridge connected");
    }

    fn describe(&self, address: usize) -> String {
        let (host, port) = &self.config.addresses[address % self.config.addresses.len()];
        format!("{host}:{port}")
    }

    async fn connect_remote(
        &self,
        address: &mut usize,
        private: &mut bool,
    ) -> Result<(Client, Messages), String> {
        let n = self.config.addresses.len();
        let mut errors = Vec::new();
        for _ in 0..n {
            let (host, port) = &self.config.addresses[*address % n];
            match Client::connect(self.remote_options(host, *port, *private)).await {
                Ok(client) => return Ok(client),
                Err(ClientError::Refused(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, _))
                    if *private =>
                {
                    // A broker that does not know Mosquitto's bridge bit: as Mosquitto does,
                    // go on without it (at the risk of echoes on `both` topics).
                    warn!(bridge = %self.config.name, "{host}:{port} refused the bridge protocol level (try_private); connecting as a plain client");
                    *private = false;
                    match Client::connect(self.remote_options(host, *port, false)).await {
                        Ok(client) => return Ok(client),
                        Err(e) => errors.push(format!("{host}:{port}: {e}")),
                    }
                }
                Err(e) => errors.push(format!("{host}:{port}: {e}")),
            }
            *address = (*address + 1) % n;
        }
        Err(format!(
            "cannot connect to the remote broker ({})",
            errors.join("; ")
        ))
    }

    fn remote_options(&self, host: &str, port: u16, private: bool) -> ClientOptions {
        let c = &self.config;
        let v5 = c.protocol.is_v5();
        let will = (c.notifications && !c.notifications_local_only).then(|| Will {
            topic: c.notification_topic.clone(),
            payload: Bytes::from_static(b"0"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        });
        let mut options = ClientOptions {
            protocol: c.protocol,
            bridge: private && !v5,
            client_id: c.remote_client_id.clone(),
            clean_session: c.clean_session,
            session_expiry: (v5 && !c.clean_session).then_some(u32::MAX),
            keep_alive: c.keep_alive,
            username: c.remote_username.clone(),
            password: c.remote_password.clone().map(Bytes::from),
            will,
            manual_acks: true,
            max_inflight: c.max_inflight,
            receive_maximum: v5.then_some(c.max_inflight),
            ..ClientOptions::new(host, port)
        };
        if let Some(tls) = &c.tls {
            options.transport = Transport::Mqtts;
            options.tls = tls.clone();
        }
        options
    }

    /// The bridge's session on this broker, over a socketpair whose other end this shard
    /// serves as a client connection (authenticated, ACL-checked and limited like any).
    async fn connect_local(&self) -> Result<(Client, Messages), ClientError> {
        let c = &self.config;
        let (ours, theirs) = socketpair().map_err(|e| ClientError::Io(Arc::new(e)))?;
        let spec = Rc::new(ListenerSpec {
            transport: Transport::Mqtt,
            tls: None,
            identity_as_username: false,
        });
        let peer = std::net::SocketAddr::from(LOCAL_PEER);
        glommio::spawn_local(serve_stream(self.shard.clone(), theirs, peer, spec)).detach();
        let options = ClientOptions {
            protocol: ProtocolLevel::V5,
            client_id: c.local_client_id.clone(),
            clean_session: c.local_clean_session,
            session_expiry: (!c.local_clean_session).then_some(u32::MAX),
            keep_alive: 0,
            username: c.local_username.clone(),
            password: c.local_password.clone().map(Bytes::from),
            manual_acks: true,
            max_inflight: c.max_inflight,
            receive_maximum: Some(c.max_inflight),
            ..ClientOptions::new("127.0.0.1", 1883)
        };
        Client::connect_over(options, ours).await
    }

    async fn subscribe(&self, remote: &Client, local: &Client) -> Result<(), String> {
        // No Local: what the bridge publishes here is not sent back out. Retain As
        // Published: retained messages stay retained on the other side. Retained messages
        // already here go out when the subscription is new, not at every reconnect.
        let options = |qos| SubscriptionOptions {
            qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        let filters: Vec<_> = self
            .map
            .local_subscriptions()
            .into_iter()
            .map(|(f, q)| (f, options(q)))
            .collect();
        if !filters.is_empty() {
            let codes = local
                .subscribe_with(&filters, Properties::default())
                .await
                .map_err(|e| format!("local SUBSCRIBE failed: {e}"))?;
            self.report_refusals("local", &filters, &codes);
        }
        let filters = self.map.remote_subscriptions();
        if !filters.is_empty() {
            let codes = if remote.protocol().is_v5() {
                let with: Vec<_> = filters.iter().map(|(f, q)| (f, options(*q))).collect();
                remote.subscribe_with(&with, Properties::default()).await
            } else {
                remote.subscribe(&filters).await
            }
            .map_err(|e| format!("remote SUBSCRIBE failed: {e}"))?;
            self.report_refusals("remote", &filters, &codes);
        }
        Ok(())
    }

    fn report_refusals<T>(
        &self,
        side: &str,
        filters: &[(String, T)],
        codes: &[SubscribeReturnCode],
    ) {
        for ((filter, _), code) in filters.iter().zip(codes) {
            if let SubscribeReturnCode::Failure(reason) = code {
                warn!(bridge = %self.config.name, "the {side} broker refused the subscription to {filter}: {reason}");
            }
        }
    }

    /// Subscribes on both sides and moves messages both ways (from the start: see
    /// [`connect`](Self::connect)) until a side goes away; returns why.
    async fn serve(&self, link: &mut Link, address: usize) -> Option<String> {
        let (remote, local) = (&link.remote.0, &link.local.0);
        let subscribing = async {
            if let Err(why) = self.subscribe(remote, local).await {
                return why;
            }
            self.link_up(remote, address);
            std::future::pending().await
        };
        let outgoing = self.forward(&mut link.local.1, local, remote, true);
        let incoming = self.forward(&mut link.remote.1, remote, local, false);
        Some(or(subscribing, or(outgoing, incoming)).await)
    }

    /// One direction: `from`'s messages published on `to`, each acknowledged to `from` once
    /// `to` acknowledged it.
    async fn forward(
        &self,
        messages: &mut Messages,
        from: &Client,
        to: &Client,
        out: bool,
    ) -> String {
        let (source, target) = if out {
            ("local", "remote")
        } else {
            ("remote", "local")
        };
        let (tx, rx) = local_channel::new_bounded(usize::from(self.config.max_inflight));
        let taking = async {
            loop {
                let message = match messages.recv().await {
                    Ok(m) => m,
                    Err(e) => return format!("the {source} connection ended: {e}"),
                };
                let topic = if out {
                    self.map.outgoing(&message.topic)
                } else {
                    self.map.incoming(&message.topic)
                };
                let Some(topic) = topic else {
                    BridgeStats::add(&self.stats.dropped, 1);
                    from.ack(&message);
                    continue;
                };
                let retain = message.retain && (!out || self.config.outgoing_retain);
                let publishing = to.publish_with(
                    &topic,
                    message.payload.clone(),
                    message.qos,
                    retain,
                    forwarded_properties(&message, to.protocol()),
                );
                if out {
                    BridgeStats::add(&self.stats.inflight, 1);
                }
                if tx.send((publishing, message)).await.is_err() {
                    return format!("the {target} side stopped");
                }
            }
        };
        let settling = async {
            while let Some((publishing, message)) = rx.recv().await {
                let result = publishing.await;
                if out {
                    self.stats.inflight.fetch_sub(1, Ordering::Relaxed);
                }
                match result {
                    Ok(()) => {
                        let counter = if out {
                            &self.stats.sent
                        } else {
                            &self.stats.received
                        };
                        BridgeStats::add(counter, 1);
                        from.ack(&message);
                    }
                    Err(ClientError::Rejected { reason, .. }) => {
                        // Refused for good (not authorized, quota...): sending it again
                        // would be refused again.
                        warn!(bridge = %self.config.name, topic = %message.topic, "the {target} broker refused a message: {reason}");
                        BridgeStats::add(&self.stats.dropped, 1);
                        from.ack(&message);
                    }
                    Err(e) => return format!("the {target} connection ended: {e}"),
                }
            }
            format!("the {source} side stopped")
        };
        or(taking, settling).await
    }

    fn link_down(&self) {
        let was_up = self.stats.connected.swap(false, Ordering::Relaxed);
        self.stats.inflight.store(0, Ordering::Relaxed);
        if was_up {
            self.notify_local("0");
        }
    }

    /// The end of a link (the broker stops, or one side went away): "0" on the remote
    /// notification topic if the remote connection is still there, as its will would have
    /// said, then DISCONNECT on both sides. Bounded in time.
    async fn close(&self, link: &Link) {
        let c = &self.config;
        let goodbye = async {
            if c.notifications && !c.notifications_local_only && link.remote.0.is_connected() {
                let _ = link
                    .remote
                    .0
                    .publish(&c.notification_topic, "0", QoS::AtLeastOnce, true)
                    .await;
            }
            let _ = link.remote.0.disconnect().await;
        };
        let _ = or(
            async {
                goodbye.await;
            },
            glommio::timer::sleep(Duration::from_secs(1)),
        )
        .await;
        let _ = or(
            async {
                let _ = link.local.0.disconnect().await;
            },
            glommio::timer::sleep(Duration::from_millis(200)),
        )
        .await;
    }

    /// The link's state, retained on this broker's notification topic.
    fn notify_local(&self, state: &'static str) {
        if !self.config.notifications {
            return;
        }
        let message = Message::new(
            ByteStr::from(self.config.notification_topic.as_str()),
            Bytes::from_static(state.as_bytes()),
            QoS::AtMostOnce,
            true,
        );
        let _ = self.shard.route(Arc::new(message), None);
        let routed = &self.shard.metrics.messages_routed;
        routed.set(routed.get() - 1);
        self.shard.flush();
    }
}

/// The properties a message keeps when it crosses: those a publisher may set (MQTT 5 on
/// both sides), not the receiving side's subscription identifiers or topic alias.
fn forwarded_properties(message: &Publish, to: ProtocolLevel) -> Properties {
    match (&message.properties, to.is_v5()) {
        (Some(p), true) => Properties {
            payload_format_utf8: p.payload_format_utf8,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            ..Properties::default()
        },
        _ => Properties::default(),
    }
}

/// A connected pair of Unix stream sockets, non-blocking, as glommio streams.
fn socketpair() -> std::io::Result<(TcpStream, TcpStream)> {
    let (a, b) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    // SAFETY: each fd is a fresh socket owned by nothing else; glommio's stream takes it over.
    unsafe {
        Ok((
            TcpStream::from_raw_fd(a.into_raw_fd()),
            TcpStream::from_raw_fd(b.into_raw_fd()),
        ))
    }
}

fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}
