//! What a benchmark run is asked to do ([`BenchConfig`]), the checks that turn it into a
//! [`Plan`] the runner can trust, and the errors a run can end with.
//!
//! Every invalid value is reported as `invalid --flag: reason`, naming the command-line flag,
//! so that the CLI can pass library errors through unchanged.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::dial::Dialer;
use crate::client::{ClientError, TlsOptions};
use crate::protocol::QoS;
use crate::transport::Transport;

use super::conn::Dial;
use super::payload::HEADER_LEN;
pub use super::scenario::Scenario;
use super::scenario::{check_group, DEFAULT_GROUP};

/// How much each publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// This many messages per publisher.
    Messages(u64),
    /// As many as the window or rate allow for this long.
    Duration(Duration),
}

/// Clients in a scenario unless told otherwise (the project's standard 20-client runs).
pub const DEFAULT_CLIENTS: usize = 20;
/// Default closed-loop window per publisher.
pub const DEFAULT_WINDOW: usize = 100;
/// Publisher × subscriber streams allowed in one run (one cache line of shared state each).
pub const MAX_STREAMS: usize = 1_000_000;
/// Clients of one role allowed in one run.
pub const MAX_CLIENTS: usize = 10_000;
/// Largest `--size`: far beyond any benchmark, well below MQTT's 256 MB limit.
pub const MAX_SIZE: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub scenario: Scenario,
    pub host: String,
    pub port: u16,
    /// Subscribers connect to this port of `host` instead: the far side of a bridge, with
    /// publishers on the near side. Not with mesh (its clients both publish and subscribe).
    pub subscribe_port: Option<u16>,
    /// More ports of `host`: clients are dealt round robin over `port` and these.
    pub spread_ports: Vec<u16>,
    /// Wait this long after every subscription is acknowledged before publishing: time for
    /// a subscription to reach the other nodes of a cluster or the far side of a bridge.
    pub settle: Duration,
    /// What the clients speak under MQTT: TCP (the default), TLS, WebSockets or both.
    pub transport: Transport,
    /// With TLS: how the broker's certificate is checked (`ca_file`, `insecure`; the default
    /// is the operating system's CA certificates and the host's name).
    pub tls: TlsOptions,
    /// Publishers (fan-in, fan-out); `None`: the scenario's default.
    pub publishers: Option<usize>,
    /// Subscribers (fan-in, fan-out); `None`: the scenario's default.
    pub subscribers: Option<usize>,
    /// The scenario's N: publishers of fan-in and shared, subscribers of fan-out, clients of
    /// mesh.
    pub clients: Option<usize>,
    /// `shared`: the subscribers' group name (`$share/{group}/...`); `None`: "bench".
    pub group: Option<String>,
    /// No subscribers at all: measures how fast publishes are accepted.
    pub publish_only: bool,
    /// Subscribers use persistent sessions (CleanSession = 0), removed again at the end.
    pub persistent: bool,
    /// Publishers use persistent sessions too, removed again at the end.
    pub persistent_publishers: bool,
    /// Needs `persistent`: subscribers subscribe and disconnect before publishing starts,
    /// publishers run the whole load against their offline sessions (the window counts only
    /// acknowledgements), then subscribers reconnect and drain what the broker kept.
    pub offline: bool,
    pub load: Load,
    /// Payload bytes per message, header included.
    pub size: usize,
    pub qos: QoS,
    /// MQTT 3.1.1 (the default) or 5: every client's protocol level.
    pub protocol: crate::protocol::ProtocolLevel,
    /// Outstanding messages per publisher; `None`: [`DEFAULT_WINDOW`] in a closed loop,
    /// unlimited with `rate`.
    pub window: Option<usize>,
    /// Open loop: total messages per second over all publishers.
    pub rate: Option<f64>,
    /// Load generator threads (glommio executors).
    pub threads: usize,
    pub username: Option<String>,
    pub password: Option<String>,
    /// After publishing ends, how long to wait without progress before counting what is missing.
    pub drain: Duration,
    /// Time allowed for all clients to connect and subscribe.
    pub setup_timeout: Duration,
    /// Draw a live progress line on stderr.
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            scenario: Scenario::Pair,
            host: "127.0.0.1".into(),
            port: 1883,
            subscribe_port: None,
            spread_ports: Vec::new(),
            settle: Duration::ZERO,
            transport: Transport::Mqtt,
            tls: TlsOptions::default(),
            publishers: None,
            subscribers: None,
            clients: None,
            group: None,
            publish_only: false,
            persistent: false,
            persistent_publishers: false,
            offline: false,
            load: Load::Messages(100_000),
            size: 64,
            qos: QoS::AtMostOnce,
            protocol: crate::protocol::ProtocolLevel::V311,
            window: None,
            rate: None,
            threads: crate::broker::available_cpus(),
            username: None,
            password: None,
            drain: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid --{flag}: {reason}")]
    Config { flag: &'static str, reason: String },
    #[error("cannot resolve {host}:{port}: {reason}")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    #[error(
        "locked-memory limit (ulimit -l) is {have_kib} KiB but io_uring needs at least \
         {need_kib} KiB: raise it, e.g. `ulimit -l {need_kib}`"
    )]
    LockedMemory { have_kib: u64, need_kib: u64 },
    #[error("cannot start load generator thread: {0}")]
    Thread(String),
    #[error("setup failed: {0}")]
    Setup(String),
}

pub(crate) fn invalid(flag: &'static str, reason: impl Into<String>) -> BenchError {
    BenchError::Config {
        flag,
        reason: reason.into(),
    }
}

/// A validated configuration with everything derived from it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: BenchConfig,
    pub addr: SocketAddr,
    /// Where subscribers connect (`addr` unless `subscribe_port` says otherwise).
    pub subscriber_addr: SocketAddr,
    /// With `spread_ports`: `addr` and the others, over which clients are dealt (client `i`
    /// to `spread[i % len]`); empty otherwise.
    pub spread: Vec<SocketAddr>,
    pub publishers: usize,
    pub subscribers: usize,
    /// Mesh: publisher i and subscriber i share one connection.
    pub shared_connections: bool,
    /// Unique per run, so nothing from another run (or a retained message) is counted.
    pub run_id: String,
    /// Topic of each publisher.
    pub topics: Vec<String>,
    /// What every subscriber subscribes to.
    pub filter: String,
    pub window: Option<u64>,
    /// Messages per second per publisher (open loop).
    pub rate_per_publisher: Option<f64>,
    /// TLS and WebSocket settings, read once per run; None for plain TCP.
    pub(crate) dial: Option<Dial>,
}

impl BenchConfig {
    /// Checks every value and derives the run's shape. Errors name the flag.
    pub fn plan(&self) -> Result<Plan, BenchError> {
        let (publishers, subscribers) = self.shape()?;
        let subscribers = if self.publish_only { 0 } else { subscribers };
        self.check_offline()?;
        if publishers * subscribers > MAX_STREAMS {
            return Err(invalid(
                "clients",
                format!(
                    "{publishers} publishers x {subscribers} subscribers is more than \
                     {MAX_STREAMS} streams"
                ),
            ));
        }
        match self.load {
            Load::Messages(0) => return Err(invalid("messages", "must be above 0")),
            Load::Duration(d) if d.is_zero() || d > Duration::from_secs(86_400) => {
                return Err(invalid("duration", "must be above 0 and at most 24h"))
            }
            _ => {}
        }
        if self.size < HEADER_LEN || self.size > MAX_SIZE {
            return Err(invalid(
                "size",
                format!(
                    "must be between {HEADER_LEN} (the header: publisher, sequence, timestamp) \
                     and {MAX_SIZE} bytes, got {}",
                    self.size
                ),
            ));
        }
        if let Some(w) = self.window {
            if w == 0 || w > 65_535 {
                return Err(invalid(
                    "window",
                    format!("must be between 1 and 65535, got {w}"),
                ));
            }
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid("rate", format!("must be above 0, got {r}")));
            }
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid(
                "threads",
                format!("must be between 1 and 256, got {}", self.threads),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid(
                "password",
                "needs --username (MQTT 3.1.1 sends no password without a user name)",
            ));
        }
        if self.drain.is_zero() {
            return Err(invalid("drain", "must be above 0"));
        }
        if self.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .map_err(|reason| BenchError::Resolve {
                host: self.host.clone(),
                port: self.port,
                reason,
            })?;
        if self.subscribe_port.is_some() && self.scenario == Scenario::Mesh {
            return Err(invalid(
                "subscribe-port",
                "mesh clients publish and subscribe on one connection",
            ));
        }
        let mut subscriber_addr = addr;
        if let Some(port) = self.subscribe_port {
            subscriber_addr.set_port(port);
        }
        if self.subscribe_port.is_some() && !self.spread_ports.is_empty() {
            return Err(invalid(
                "spread-ports",
                "clients are dealt over the ports; --subscribe-port would say otherwise",
            ));
        }
        let spread = match self.spread_ports.is_empty() {
            true => Vec::new(),
            false => std::iter::once(addr)
                .chain(self.spread_ports.iter().map(|&port| {
                    let mut other = addr;
                    other.set_port(port);
                    other
                }))
                .collect(),
        };
        let dial = self.dial()?;
        let run_id = run_id();
        let prefix = format!("surgemq-bench/{run_id}");
        let group = self.group.as_deref().unwrap_or(DEFAULT_GROUP);
        check_group(group)?;
        let (topics, filter) = self.scenario.topics(&prefix, publishers, group);
        let window = match (self.window, self.rate) {
            (Some(w), _) => Some(w as u64),
            (None, None) => Some(DEFAULT_WINDOW as u64),
            (None, Some(_)) => None,
        };
        Ok(Plan {
            config: self.clone(),
            addr,
            subscriber_addr,
            spread,
            publishers,
            subscribers,
            shared_connections: self.scenario == Scenario::Mesh && subscribers > 0,
            run_id,
            topics,
            filter,
            window,
            rate_per_publisher: self.rate.map(|r| r / publishers as f64),
            dial,
        })
    }

    /// The dialer of a TLS or WebSocket run (the CA file is read here, once), None for TCP.
    fn dial(&self) -> Result<Option<Dial>, BenchError> {
        if !self.transport.uses_tls() && (self.tls.ca_file.is_some() || self.tls.insecure) {
            let flag = if self.tls.insecure {
                "insecure"
            } else {
                "cafile"
            };
            return Err(invalid(flag, "needs --tls"));
        }
        if let Some(path) = self.transport.ws_path() {
            if !path.starts_with('/') {
                return Err(invalid(
                    "ws",
                    format!("the path must start with '/', got {path:?}"),
                ));
            }
        }
        if self.transport == Transport::Mqtt {
            return Ok(None);
        }
        let dialer = Dialer::for_target(&self.host, self.port, &self.transport, &self.tls)
            .map_err(|e| {
                let flag = if self.tls.ca_file.is_some() {
                    "cafile"
                } else {
                    "tls"
                };
                match e {
                    ClientError::Invalid { reason, .. } => invalid(flag, reason),
                    other => invalid(flag, other.to_string()),
                }
            })?;
        Ok(Some(Dial(dialer)))
    }
}

/// A short id unique to this process and moment: topic prefix and client id stem.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:x}{:x}{seq:x}",
        std::process::id(),
        (nanos as u64) & 0xffff_ffff
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::bench) fn config(scenario: Scenario) -> BenchConfig {
        BenchConfig {
            scenario,
            ..Default::default()
        }
    }

    /// The flag a config error names; panics when the config is accepted.
    pub(in crate::bench) fn flag_of(c: BenchConfig) -> &'static str {
        match c.plan() {
            Err(BenchError::Config { flag, .. }) => flag,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn scenario_shapes_and_topics() {
        let p = config(Scenario::Pair).plan().unwrap();
        assert_eq!((p.publishers, p.subscribers), (1, 1));
        assert_eq!(p.topics[0], p.filter);
        let p = config(Scenario::FanIn).plan().unwrap();
        assert_eq!((p.publishers, p.subscribers), (20, 1));
        assert!(p.filter.ends_with("/+"));
        assert_ne!(p.topics[0], p.topics[1]);
        let p = BenchConfig {
            clients: Some(5),
            ..config(Scenario::FanOut)
        }
        .plan()
        .unwrap();
        assert_eq!((p.publishers, p.subscribers), (1, 5));
        let p = config(Scenario::Mesh).plan().unwrap();
        assert_eq!((p.publishers, p.subscribers), (20, 20));
        assert!(p.shared_connections);
        let p = BenchConfig {
            publish_only: true,
            ..config(Scenario::Mesh)
        }
        .plan()
        .unwrap();
        assert_eq!((p.publishers, p.subscribers), (20, 0));
        assert!(!p.shared_connections);
    }

    #[test]
    fn spread_ports_deal_clients_over_every_port() {
        let p = BenchConfig {
            spread_ports: vec![2001, 2002],
            ..config(Scenario::Mesh)
        }
        .plan()
        .unwrap();
        let ports: Vec<u16> = p.spread.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [p.addr.port(), 2001, 2002]);
        let both = BenchConfig {
            spread_ports: vec![2001],
            subscribe_port: Some(2002),
            ..config(Scenario::FanOut)
        };
        assert_eq!(flag_of(both), "spread-ports");
        assert!(config(Scenario::Pair).plan().unwrap().spread.is_empty());
    }

    #[test]
    fn runs_get_distinct_topic_prefixes() {
        let a = config(Scenario::Pair).plan().unwrap();
        let b = config(Scenario::Pair).plan().unwrap();
        assert_ne!(a.filter, b.filter);
    }

    #[test]
    fn window_and_rate() {
        let p = config(Scenario::Pair).plan().unwrap();
        assert_eq!(p.window, Some(DEFAULT_WINDOW as u64));
        assert_eq!(p.rate_per_publisher, None);
        let p = BenchConfig {
            rate: Some(1000.0),
            clients: Some(4),
            ..config(Scenario::FanIn)
        }
        .plan()
        .unwrap();
        assert_eq!(p.window, None, "open loop");
        assert_eq!(p.rate_per_publisher, Some(250.0));
    }

    #[test]
    fn invalid_values_name_their_flag() {
        let base = config(Scenario::FanIn);
        let cases: Vec<(BenchConfig, &str)> = vec![
            (
                BenchConfig {
                    clients: Some(2),
                    ..config(Scenario::Pair)
                },
                "clients",
            ),
            (
                BenchConfig {
                    subscribers: Some(2),
                    ..config(Scenario::Mesh)
                },
                "subscribers",
            ),
            (
                BenchConfig {
                    clients: Some(0),
                    ..base.clone()
                },
                "clients",
            ),
            (
                BenchConfig {
                    publishers: Some(0),
                    ..base.clone()
                },
                "publishers",
            ),
            (
                BenchConfig {
                    load: Load::Messages(0),
                    ..base.clone()
                },
                "messages",
            ),
            (
                BenchConfig {
                    load: Load::Duration(Duration::ZERO),
                    ..base.clone()
                },
                "duration",
            ),
            (
                BenchConfig {
                    size: HEADER_LEN - 1,
                    ..base.clone()
                },
                "size",
            ),
            (
                BenchConfig {
                    window: Some(0),
                    ..base.clone()
                },
                "window",
            ),
            (
                BenchConfig {
                    rate: Some(-1.0),
                    ..base.clone()
                },
                "rate",
            ),
            (
                BenchConfig {
                    threads: 0,
                    ..base.clone()
                },
                "threads",
            ),
            (
                BenchConfig {
                    password: Some("x".into()),
                    ..base.clone()
                },
                "password",
            ),
            (
                BenchConfig {
                    clients: Some(2000),
                    ..config(Scenario::Mesh)
                },
                "clients",
            ),
        ];
        for (c, flag) in cases {
            assert_eq!(flag_of(c), flag);
        }
        let err = BenchConfig { size: 3, ..base }.plan().unwrap_err();
        assert!(err.to_string().starts_with("invalid --size: "), "{err}");
    }

    #[test]
    fn offline_needs_persistent_sessions_of_their_own() {
        let offline = |c: BenchConfig| BenchConfig { offline: true, ..c };
        let persistent = |s| BenchConfig {
            persistent: true,
            ..config(s)
        };
        assert_eq!(flag_of(offline(config(Scenario::Pair))), "offline");
        assert_eq!(flag_of(offline(persistent(Scenario::Mesh))), "offline");
        let publish_only = BenchConfig {
            publish_only: true,
            ..persistent(Scenario::FanIn)
        };
        assert_eq!(flag_of(offline(publish_only)), "offline");
        for s in [Scenario::Pair, Scenario::FanIn, Scenario::FanOut] {
            offline(persistent(s)).plan().unwrap();
        }
    }
}
