//! Validated broker configuration. The binary turns flags into a [`BrokerConfig`]; the library
//! only ever sees values that passed [`BrokerConfig::validate`], so the runtime needs no
//! defensive checks of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::shared::ShareStrategy;
use crate::auth::{Authenticator, FileAuthenticator};
use crate::transport::{Listener, TlsFiles};

/// Everything `surgemq serve` can be told.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Addresses every shard listens on (SO_REUSEPORT spreads connections over the shards),
    /// each with its transport: MQTT, MQTT over TLS, WebSockets, WebSockets over TLS.
    pub listen: Vec<Listener>,
    /// Certificate and key of the TLS listeners (`mqtts://`, `wss://`), and the CAs of client
    /// certificates.
    pub tls: Option<TlsFiles>,
    /// Number of shards (executors), each pinned to a CPU.
    pub shards: usize,
    /// How long a new socket may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Outgoing QoS 1/2 messages in flight (sent, not yet acknowledged) per session.
    pub max_inflight: usize,
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_size: usize,
    /// MQTT 5 Receive Maximum announced to clients: QoS 1/2 PUBLISHes a client may have
    /// unacknowledged at once; more closes its connection with 0x93.
    pub receive_maximum: u16,
    /// MQTT 5 Topic Alias Maximum announced to clients: the aliases each may set; 0 allows none.
    pub max_topic_alias: u16,
    /// The longest keepalive a client may use, in seconds; 0: any, including none. As in
    /// Mosquitto's `max_keepalive`: an MQTT 5 client asking for more (or for none) is told to
    /// use this one (Server Keep Alive), a 3.1/3.1.1 client is refused (CONNACK 2).
    pub max_keepalive: u16,
    /// How often `$SYS/broker/...` is published; zero: never.
    pub sys_interval: Duration,
    /// How a shared subscription's member is chosen for each message.
    pub shared_strategy: ShareStrategy,
    /// A member whose client goes away (its session kept) gives its group the messages the
    /// client does not have yet, instead of keeping them for its return.
    pub shared_redispatch: bool,
    /// MQTT 5 Response Information sent to a client that requests it, with `%c` replaced by
    /// its client id (a topic prefix for its responses, say); None sends none.
    pub response_information: Option<String>,
    /// Messages waiting in one session's outbound queue; beyond it new messages are dropped.
    pub max_queued_messages: usize,
    /// Payload bytes waiting in one session's outbound queue; beyond it new messages are dropped.
    /// (Payloads in flight count too, until acknowledged.)
    pub max_queued_bytes: usize,
    /// A connected subscriber whose queue is full holds its QoS 1/2 publishers back unless it
    /// read or acknowledged nothing for this long: then it is stalled and its messages are
    /// dropped (see `pressure`).
    pub stall_timeout: Duration,
    /// Topic levels allowed in a topic name or filter; 0 (the default) means no limit, so the
    /// depth is bounded only by the 65,535-byte string (65,536 levels): every walk over levels
    /// is a loop, so depth costs memory in proportion to the packet, never stack.
    pub max_topic_levels: usize,
    /// Open client sockets the broker accepts; beyond it new ones are refused.
    pub max_connections: usize,
    /// Queue QoS 0 messages for disconnected persistent sessions too (Mosquitto's
    /// `queue_qos0_messages`).
    pub queue_qos0: bool,
    /// Persistent sessions disconnected this long are removed; None keeps them forever.
    pub session_expiry: Option<Duration>,
    /// Who may connect, publish and subscribe.
    pub authenticator: Arc<dyn Authenticator>,
    /// How long an idle shard spins before it sleeps in the kernel. Spinning saves the
    /// wake-up of a sleeping shard (a syscall and a context switch per cross-shard batch) at
    /// the price of CPU while traffic pauses; 0 sleeps at once (an idle broker costs nothing).
    pub spin_before_sleep: Duration,
    /// Connections silent this long (up to twice as long) park: they give up their glommio
    /// socket and wait in an epoll set, which saves memory per idle client. None never parks.
    pub park_idle_after: Option<Duration>,
    /// Where persistent sessions, their messages and retained messages are kept across
    /// restarts and crashes; None keeps everything in memory only.
    pub data_dir: Option<std::path::PathBuf>,
    /// With a data directory: 0 acknowledges only what is on disk; more syncs at most this
    /// often and acknowledges at once, so a crash may lose the last interval.
    pub sync_interval: Duration,
    /// Fault injection for tests: while above 0, log commits fail as on a full disk (ENOSPC),
    /// each failure counting it down. None in normal use.
    #[doc(hidden)]
    pub full_disk_fault: Option<Arc<std::sync::atomic::AtomicU32>>,
    /// With `full_disk_fault`: only this shard's log fails (None: every shard's).
    #[doc(hidden)]
    pub full_disk_fault_shard: Option<usize>,
    /// A shard's log is compacted once it holds this many bytes and at least twice what its
    /// last compaction kept (see `compaction`). Tests lower it.
    #[doc(hidden)]
    pub compact_after_bytes: u64,
    /// Where the metrics endpoint (`surgemq::http`: /metrics, /healthz, the live page)
    /// listens; None serves none. The binary starts it beside the broker.
    pub metrics_listen: Option<SocketAddr>,
    /// Bridges to other brokers (Mosquitto's `connection` sections, TOML `[[bridge]]`).
    pub bridges: Vec<super::bridge::BridgeConfig>,
    /// One broker over several nodes sharing a NATS cluster (feature `cluster`).
    pub cluster: Option<ClusterConfig>,
}

/// Where the NATS cluster is, and this node's name in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); the client fails over between them.
    pub servers: Vec<String>,
    /// This node's name: unique in the cluster (letters, digits, `-` and `_`).
    pub node_id: String,
    /// Whether persistent sessions whose clients are away are copied to JetStream with the
    /// messages queued for them, so that they resume with those messages on another node
    /// while this one is down (`cluster::node::queues`; on by default).
    pub queue_copies: bool,
    /// Whether a publisher's acknowledgement of a message queued for such a session waits
    /// until JetStream has stored its copy (`broker::queue_copies`; on by default): off, a
    /// node that dies loses the copies of what it acknowledged in the moments before, and
    /// a publisher with a small window is not slowed down by JetStream's round trip.
    pub queue_copies_wait: bool,
    /// Whether, with `queue_copies`, a persistent session is also copied while its client is
    /// connected (`--cluster-online-copies`; on by default): each change to it (a message
    /// queued or sent, an acknowledgement, a subscription) is appended to its copy, and what
    /// a publisher's acknowledgement waits for includes the copy of its message. So a client
    /// whose node dies while it is connected resumes elsewhere with every message
    /// acknowledged into its session. Off: such a session waits for its node to come back.
    pub online_copies: bool,
    /// Moves this node's clock for client id claims by this many microseconds: tests use it
    /// to stand for a host whose clock is off (0 otherwise).
    #[doc(hidden)]
    pub clock_offset_us: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883)).into()],
            tls: None,
            shards: available_cpus(),
            connect_timeout: Duration::from_secs(10),
            max_inflight: 1000,
            max_packet_size: 1 << 20,
            receive_maximum: 65_535,
            max_topic_alias: 10,
            max_keepalive: 0,
            response_information: None,
            sys_interval: super::sys_topics::DEFAULT_SYS_INTERVAL,
            shared_strategy: ShareStrategy::RoundRobin,
            shared_redispatch: false,
            max_queued_messages: 1000,
            max_queued_bytes: 64 << 20,
            stall_timeout: Duration::from_secs(10),
            max_topic_levels: 0,
            max_connections: 100_000,
            queue_qos0: false,
            session_expiry: None,
            authenticator: Arc::new(FileAuthenticator::allow_all()),
            spin_before_sleep: Duration::ZERO,
            park_idle_after: Some(Duration::from_secs(2)),
            data_dir: None,
            sync_interval: Duration::ZERO,
            full_disk_fault: None,
            full_disk_fault_shard: None,
            compact_after_bytes: 64 << 20,
            metrics_listen: None,
            bridges: Vec::new(),
            cluster: None,
        }
    }
}

/// A configuration value that cannot work, named by its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            flag,
            reason: reason.into(),
        }
    }
}

/// Upper bound on shards: far above any sensible core count, low enough to catch typos.
pub const MAX_SHARDS: usize = 1024;

impl BrokerConfig {
    /// The full-disk fault counter shard `shard`'s log uses (tests only).
    pub(crate) fn disk_fault_for(
        &self,
        shard: usize,
    ) -> Option<&Arc<std::sync::atomic::AtomicU32>> {
        self.full_disk_fault
            .as_ref()
            .filter(|_| self.full_disk_fault_shard.is_none_or(|s| s == shard))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::new("listen", "at least one address is needed"));
        }
        let without = self
            .listen
            .iter()
            .find(|l| l.transport.uses_tls() && l.tls.is_none() && self.tls.is_none());
        if let Some(l) = without {
            return Err(ConfigError::new(
                "cert",
                format!("the TLS listener {l} needs --cert and --key"),
            ));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "shards",
                format!("must be between 1 and {MAX_SHARDS}, got {}", self.shards),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new("connect-timeout", "must be above 0"));
        }
        if self.receive_maximum == 0 {
            return Err(ConfigError::new(
                "receive-maximum",
                "must be between 1 and 65535, got 0",
            ));
        }
        if self.max_inflight == 0 || self.max_inflight > 65_535 {
            return Err(ConfigError::new(
                "max-inflight",
                format!("must be between 1 and 65535, got {}", self.max_inflight),
            ));
        }
        if self.max_packet_size < 64
            || self.max_packet_size > crate::protocol::MAX_REMAINING_LENGTH + 5
        {
            return Err(ConfigError::new(
                "max-packet-size",
                format!(
                    "must be between 64 and {} bytes, got {}",
                    crate::protocol::MAX_REMAINING_LENGTH + 5,
                    self.max_packet_size
                ),
            ));
        }
        if self.max_queued_messages == 0 {
            return Err(ConfigError::new("max-queued-messages", "must be above 0"));
        }
        if self.stall_timeout.is_zero() {
            return Err(ConfigError::new("stall-timeout", "must be above 0"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("max-connections", "must be above 0"));
        }
        if self.session_expiry == Some(Duration::ZERO) {
            return Err(ConfigError::new("session-expiry", "must be above 0"));
        }
        if self.park_idle_after == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "park-idle-after",
                "must be more than 0 (None never parks)",
            ));
        }
        if self.spin_before_sleep > Duration::from_secs(1) {
            return Err(ConfigError::new("spin-us", "must be at most 1000000 (1 s)"));
        }
        if self.max_queued_bytes == 0 {
            return Err(ConfigError::new("max-queued-bytes", "must be above 0"));
        }
        if let Some(dir) = &self.data_dir {
            if dir.exists() && !dir.is_dir() {
                return Err(ConfigError::new(
                    "data-dir",
                    format!("{} exists and is not a directory", dir.display()),
                ));
            }
        }
        if self.sync_interval > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "sync-interval-ms",
                "must be at most 60000 (60 s)",
            ));
        }
        if let Some(c) = &self.cluster {
            if c.servers.is_empty() {
                return Err(ConfigError::new(
                    "cluster",
                    "at least one nats:// URL is needed",
                ));
            }
            #[cfg(feature = "cluster")]
            for url in &c.servers {
                if let Err(e) = url.parse::<async_nats::ServerAddr>() {
                    return Err(ConfigError::new(
                        "cluster",
                        format!("`{url}` is not a NATS URL: {e}"),
                    ));
                }
            }
            let valid = |ch: char| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_';
            if c.node_id.is_empty() || !c.node_id.chars().all(valid) {
                return Err(ConfigError::new(
                    "node-id",
                    format!("must be letters, digits, '-' and '_', got `{}`", c.node_id),
                ));
            }
        }
        let mut seen = ahash::AHashSet::new();
        for b in &self.bridges {
            b.validate().map_err(|e| ConfigError::new("bridge", e))?;
            if !seen.insert(b.local_client_id.as_str()) {
                return Err(ConfigError::new(
                    "bridge",
                    format!(
                        "bridge {}: local client id {} is another bridge's too",
                        b.name, b.local_client_id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// CPUs this process may run on (its affinity mask), at least 1.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: Vec<(BrokerConfig, &str)> = vec![
            (
                BrokerConfig {
                    shards: 0,
                    ..Default::default()
                },
                "shards",
            ),
            (
                BrokerConfig {
                    listen: vec![],
                    ..Default::default()
                },
                "listen",
            ),
            (
                BrokerConfig {
                    max_inflight: 0,
                    ..Default::default()
                },
                "max-inflight",
            ),
            (
                BrokerConfig {
                    max_inflight: 70_000,
                    ..Default::default()
                },
                "max-inflight",
            ),
            (
                BrokerConfig {
                    max_packet_size: 10,
                    ..Default::default()
                },
                "max-packet-size",
            ),
            (
                BrokerConfig {
                    connect_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "connect-timeout",
            ),
            (
                BrokerConfig {
                    max_queued_messages: 0,
                    ..Default::default()
                },
                "max-queued-messages",
            ),
        ];
        for (config, flag) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.flag, flag);
            assert!(
                err.to_string().starts_with(&format!("invalid --{flag}: ")),
                "{err}"
            );
        }
    }
}
