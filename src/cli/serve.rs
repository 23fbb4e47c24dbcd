//! `surgemq serve`: run the broker until SIGINT or SIGTERM.
//!
//! Every setting is a flag and a key of the optional configuration file given with `-c` /
//! `--config`: a TOML file (a name ending in `.toml`; the key is the flag's name without dashes
//! in front, e.g. `max-inflight = 200`) or a Mosquitto configuration file (any other name; see
//! [`super::mosquitto_conf`]). Flags override the file. Any bad value ends start-up with one
//! line naming the flag, or the key, or the file and line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use surgemq::auth::{AclFile, FileAuthenticator, PasswordFile, ReloadableAuthenticator};
use surgemq::broker::bridge::BridgeConfig;
use surgemq::broker::config::ClusterConfig;
use surgemq::broker::shared::ShareStrategy;
use surgemq::broker::{self, BrokerConfig, MetricsSnapshot};
use surgemq::transport::{Listener, TlsFiles};
use tracing::level_filters::LevelFilter;
use tracing::{error, info, warn};

use super::config_file::ConfigFile;
use super::mosquitto_conf::log::{Logging, Redirect};
use super::mosquitto_conf::MosquittoConf;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Configuration file (flags override it): TOML with any of the settings below if its
    /// name ends in .toml, else Mosquitto's format (mosquitto.conf(5)).
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable): ADDR:PORT or mqtt://ADDR:PORT for MQTT,
    /// mqtts://ADDR:PORT for MQTT over TLS, ws://ADDR:PORT/PATH for WebSockets, wss://... for
    /// WebSockets over TLS (PATH defaults to /mqtt; /* takes any path) [default: 127.0.0.1:1883].
    #[arg(long = "listen", value_name = "URL")]
    listen: Vec<Listener>,
    /// PEM certificate chain of the mqtts:// and wss:// listeners (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key of that certificate (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates: a client may present one.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// With --ca-file: refuse TLS clients without a certificate it signed [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    require_certificate: Option<bool>,
    /// On TLS listeners, a client certificate's subject CN is the client's user name (for the
    /// ACL; no password is checked); clients without one are refused [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    use_identity_as_username: Option<bool>,
    /// Number of shards (executors, one per core) [default: the CPUs this process may use].
    #[arg(long)]
    shards: Option<usize>,
    /// Seconds a new connection may take to send CONNECT [default: 10].
    #[arg(long, value_name = "SECONDS")]
    connect_timeout: Option<u64>,
    /// Outgoing QoS 1/2 messages in flight (sent, not yet acknowledged) per session; their
    /// payloads count against --max-queued-bytes until acknowledged [default: 1000].
    #[arg(long)]
    max_inflight: Option<usize>,
    /// Largest packet accepted from a client, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_packet_size: Option<usize>,
    /// MQTT 5 Receive Maximum: QoS 1/2 publishes a client may have unacknowledged at once
    /// [default: 65535].
    #[arg(long, value_name = "N")]
    receive_maximum: Option<u16>,
    /// MQTT 5 Topic Alias Maximum: topic aliases each client may set; 0 allows none
    /// [default: 10].
    #[arg(long, value_name = "N")]
    max_topic_alias: Option<u16>,
    /// Longest keepalive a client may use, in seconds: an MQTT 5 client asking for more (or
    /// none) is told to use this (Server Keep Alive), a 3.1.1 client is refused with CONNACK 2,
    /// as Mosquitto's max_keepalive does; 0 allows any [default: 0].
    #[arg(long, value_name = "SECONDS")]
    max_keepalive: Option<u16>,
    /// Seconds between updates of the $SYS/broker/... topics (Mosquitto's names); 0 turns them
    /// off [default: 10].
    #[arg(long, value_name = "SECONDS")]
    sys_interval: Option<u64>,
    /// How a shared subscription ($share/GROUP/FILTER) picks the member for each message:
    /// round-robin over the whole group, random, local-first (members on the publishing core
    /// first) or hash-topic (one topic, one member) [default: round-robin].
    #[arg(long, value_name = "STRATEGY", value_parser = clap::builder::PossibleValuesParser::new(ShareStrategy::NAMES))]
    shared_strategy: Option<String>,
    /// When a shared subscription's member disconnects and its session is kept, give the
    /// messages it has not received to the other members now instead of keeping them for its
    /// return (QoS 2 messages already sent to it stay).
    #[arg(long)]
    shared_redispatch: bool,
    /// MQTT 5 Response Information for clients that request it; `%c` is replaced by the client
    /// id (e.g. "responses/%c/") [default: none].
    #[arg(long, value_name = "TEXT")]
    response_information: Option<String>,
    /// Messages queued per session; beyond it QoS 0 is dropped, and QoS 1/2 holds its
    /// publishers back while the subscriber reads (dropped when it is offline or stalled)
    /// [default: 1000; 1000000 with --data-dir].
    #[arg(long)]
    max_queued_messages: Option<usize>,
    /// Payload bytes a session holds, queued or in flight, with the same policy [default: 64 MiB; 1 GiB with
    /// --data-dir].
    #[arg(long, value_name = "BYTES")]
    max_queued_bytes: Option<usize>,
    /// Seconds a subscriber with a full queue may read and acknowledge nothing before it
    /// counts as stalled: its publishers go on and its new messages are dropped [default: 10].
    #[arg(long, value_name = "SECONDS")]
    stall_timeout: Option<u64>,
    /// Topic levels allowed in a topic name or filter, 0 for no limit [default: 0].
    #[arg(long)]
    max_topic_levels: Option<usize>,
    /// Open client connections accepted; more are refused with CONNACK 3 [default: 100000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Queue QoS 0 messages for disconnected persistent sessions too [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    queue_qos0: Option<bool>,
    /// Remove persistent sessions disconnected for this many seconds [default: never].
    #[arg(long, value_name = "SECONDS")]
    session_expiry: Option<u64>,
    /// Mosquitto password file (`mosquitto_passwd` or `surgemq passwd` writes it).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Allow clients without a user name [default: true unless a password file is given].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_anonymous: Option<bool>,
    /// Mosquitto ACL file.
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// Microseconds an idle shard spins before sleeping (lower cross-core latency under load,
    /// CPU burnt while traffic pauses) [default: 0].
    #[arg(long, value_name = "MICROSECONDS")]
    spin_us: Option<u64>,
    /// Seconds of silence after which a connection parks (up to twice that): it gives up its
    /// io_uring poll and waits in an epoll set, which saves memory per idle client; 0 never
    /// parks [default: 2].
    #[arg(long, value_name = "SECONDS")]
    park_idle_after: Option<u64>,
    /// Keep persistent sessions (CleanSession = 0), their subscriptions and queued QoS 1/2
    /// messages, and retained messages in this directory, across restarts and crashes. A QoS
    /// 1/2 publish is then acknowledged only once it is on disk. Raises the queue defaults to
    /// 1000000 messages and 1 GiB per session [default: keep everything in memory only].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: write and sync the log at most every N ms and acknowledge without
    /// waiting for the disk. Faster, but a crash (kill -9 included) may lose about what was
    /// acknowledged in the last N ms; 0 waits for the disk before every acknowledgement
    /// [default: 0].
    #[arg(long, value_name = "MS")]
    sync_interval_ms: Option<u64>,
    /// With --data-dir: compact a shard's log once it holds this many bytes (and twice what
    /// its last compaction kept). For tests that want compactions often [default: 64 MiB].
    #[arg(long, value_name = "BYTES", hide = true)]
    compact_after_bytes: Option<u64>,
    /// Serve HTTP on this address: /metrics (Prometheus), /healthz, /stats.json and a live
    /// page at / [default: none].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Join a cluster of SurgeMQ nodes over these NATS servers (comma-separated
    /// nats://host:port URLs): clients of every node see one broker [default: none].
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster, unique among its nodes [default: the host name].
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// Copy persistent sessions whose clients are away, with the messages queued for them, to
    /// JetStream, so that they resume with those messages on another node while this one is
    /// down (false: only their subscriptions are there) [default: true].
    #[arg(long, value_name = "BOOL")]
    cluster_queue_copies: Option<bool>,
    /// With --cluster-queue-copies: a PUBACK/PUBREC of a message queued for a session whose
    /// client is away waits until JetStream has stored its copy (false: it does not, and a
    /// node that dies loses the copies of what it acknowledged in the moments before)
    /// [default: true].
    #[arg(long, value_name = "BOOL")]
    cluster_queue_copies_wait: Option<bool>,
    /// With --cluster-queue-copies: copy persistent sessions while their clients are
    /// connected too, each change as it happens, so that a client whose node dies while it is
    /// connected resumes on another node with every message acknowledged into its session
    /// (false: such a session waits for its node to come back, with --data-dir) [default: true].
    #[arg(long, value_name = "BOOL")]
    cluster_online_copies: Option<bool>,
}

/// Queue limits per session with --data-dir, where queued messages are kept on disk too and
/// a full queue means an acknowledged message is dropped.
const PERSISTENT_MAX_QUEUED_MESSAGES: usize = 1_000_000;
const PERSISTENT_MAX_QUEUED_BYTES: usize = 1 << 30;

/// What a Mosquitto configuration file says beyond the broker's settings: where the log goes,
/// and the warnings about options it ignores (logged once the log is where it should be).
#[derive(Default)]
struct FromMosquitto {
    logging: Logging,
    warnings: Vec<String>,
    bridges: Vec<BridgeConfig>,
}

/// Reads the configuration file: TOML when its name ends in `.toml`, else Mosquitto's format.
fn load_file(path: &std::path::Path) -> Result<(ConfigFile, Option<FromMosquitto>), String> {
    let toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if toml {
        return Ok((ConfigFile::load(path)?, None));
    }
    let conf = MosquittoConf::load(path)?;
    let (bridges, bridge_warnings) = conf.bridge_configs()?;
    let (table, mut warnings) = conf.settings()?;
    warnings.extend(bridge_warnings);
    let file = ConfigFile::from_table(table, &path.display().to_string(), PathBuf::new());
    Ok((
        file,
        Some(FromMosquitto {
            logging: conf.logging,
            warnings,
            bridges,
        }),
    ))
}

/// Turns flags (and the config file) into a validated broker configuration.
/// The configuration, what a Mosquitto file asked of the log, and the authenticator SIGHUP
/// reloads.
type Built = (
    BrokerConfig,
    Option<FromMosquitto>,
    Arc<ReloadableAuthenticator>,
);

fn build_config(args: ServeArgs) -> Result<Built, String> {
    let (file, mut mosquitto) = match &args.config {
        Some(path) => load_file(path)?,
        None => (ConfigFile::default(), None),
    };
    let bridges = match &mut mosquitto {
        Some(m) => std::mem::take(&mut m.bridges),
        None => file.bridges()?,
    };
    let defaults = BrokerConfig::default();
    let tls = tls_files(&args, &file)?;
    let listen = if !args.listen.is_empty() {
        args.listen
    } else {
        let mut listen = file.listen()?.unwrap_or_default();
        listen.extend(file.listeners()?);
        if listen.is_empty() {
            defaults.listen
        } else {
            listen
        }
    };
    let secs = |v: Option<u64>| v.map(Duration::from_secs);
    let data_dir = args.data_dir.or(file.path("data-dir")?);
    let (default_queued_messages, default_queued_bytes) = match data_dir {
        Some(_) => (PERSISTENT_MAX_QUEUED_MESSAGES, PERSISTENT_MAX_QUEUED_BYTES),
        None => (defaults.max_queued_messages, defaults.max_queued_bytes),
    };
    let password_file = args.password_file.or(file.path("password-file")?);
    let acl_file = args.acl_file.or(file.path("acl-file")?);
    let allow_anonymous = args
        .allow_anonymous
        .or(file.bool("allow-anonymous")?)
        .unwrap_or(password_file.is_none());
    let authenticator = FileAuthenticator {
        passwords: password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()
            .map_err(|e| format!("invalid --password-file: {e}"))?,
        allow_anonymous,
        acl: acl_file
            .as_deref()
            .map(AclFile::load)
            .transpose()
            .map_err(|e| format!("invalid --acl-file: {e}"))?,
    };
    // SIGHUP reads both files again (see `run`).
    let authenticator = Arc::new(ReloadableAuthenticator::new(
        authenticator,
        password_file,
        acl_file,
    ));
    let config = BrokerConfig {
        listen,
        tls,
        shards: pick(args.shards, file.usize("shards")?, defaults.shards),
        connect_timeout: secs(args.connect_timeout.or(file.u64("connect-timeout")?))
            .unwrap_or(defaults.connect_timeout),
        max_inflight: pick(
            args.max_inflight,
            file.usize("max-inflight")?,
            defaults.max_inflight,
        ),
        max_packet_size: pick(
            args.max_packet_size,
            file.usize("max-packet-size")?,
            defaults.max_packet_size,
        ),
        receive_maximum: pick(
            args.receive_maximum,
            file.u16("receive-maximum")?,
            defaults.receive_maximum,
        ),
        max_topic_alias: pick(
            args.max_topic_alias,
            file.u16("max-topic-alias")?,
            defaults.max_topic_alias,
        ),
        max_keepalive: pick(
            args.max_keepalive,
            file.u16("max-keepalive")?,
            defaults.max_keepalive,
        ),
        shared_strategy: args
            .shared_strategy
            .or(file.choice("shared-strategy", &ShareStrategy::NAMES)?)
            .and_then(|name| ShareStrategy::parse(&name))
            .unwrap_or(defaults.shared_strategy),
        sys_interval: args
            .sys_interval
            .or(file.u64("sys-interval")?)
            .map_or(defaults.sys_interval, Duration::from_secs),
        shared_redispatch: args.shared_redispatch
            || file
                .bool("shared-redispatch")?
                .unwrap_or(defaults.shared_redispatch),
        response_information: match args.response_information {
            Some(text) => Some(text),
            None => file.string("response-information")?,
        },
        max_queued_messages: pick(
            args.max_queued_messages,
            file.usize("max-queued-messages")?,
            default_queued_messages,
        ),
        max_queued_bytes: pick(
            args.max_queued_bytes,
            file.usize("max-queued-bytes")?,
            default_queued_bytes,
        ),
        stall_timeout: secs(args.stall_timeout.or(file.u64("stall-timeout")?))
            .unwrap_or(defaults.stall_timeout),
        max_topic_levels: pick(
            args.max_topic_levels,
            file.usize("max-topic-levels")?,
            defaults.max_topic_levels,
        ),
        max_connections: pick(
            args.max_connections,
            file.usize("max-connections")?,
            defaults.max_connections,
        ),
        queue_qos0: pick(
            args.queue_qos0,
            file.bool("queue-qos0")?,
            defaults.queue_qos0,
        ),
        session_expiry: secs(args.session_expiry.or(file.u64("session-expiry")?)),
        authenticator: authenticator.clone(),
        spin_before_sleep: Duration::from_micros(pick(args.spin_us, file.u64("spin-us")?, 0)),
        park_idle_after: match args.park_idle_after.or(file.u64("park-idle-after")?) {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => defaults.park_idle_after,
        },
        data_dir,
        sync_interval: Duration::from_millis(pick(
            args.sync_interval_ms,
            file.u64("sync-interval-ms")?,
            0,
        )),
        compact_after_bytes: args
            .compact_after_bytes
            .unwrap_or(defaults.compact_after_bytes),
        metrics_listen: match args.metrics_listen {
            Some(addr) => Some(addr),
            None => file
                .string("metrics-listen")?
                .map(|a| a.parse())
                .transpose()
                .map_err(|e| format!("invalid metrics-listen: {e}"))?,
        },
        bridges,
        cluster: cluster_config(
            &args.cluster,
            args.node_id,
            [
                args.cluster_queue_copies,
                args.cluster_queue_copies_wait,
                args.cluster_online_copies,
            ],
            &file,
        )?,
        ..defaults
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok((config, mosquitto, authenticator))
}

/// `--cluster` and `--node-id` (or the file's `cluster` list and `node-id`).
fn cluster_config(
    flag: &[String],
    node_id: Option<String>,
    [queue_copies, queue_copies_wait, online_copies]: [Option<bool>; 3],
    file: &ConfigFile,
) -> Result<Option<ClusterConfig>, String> {
    let servers = if flag.is_empty() {
        file.strings("cluster")?.unwrap_or_default()
    } else {
        flag.to_vec()
    };
    if servers.is_empty() {
        if node_id.is_some() {
            return Err("invalid --node-id: needs --cluster".into());
        }
        if queue_copies.is_some() {
            return Err("invalid --cluster-queue-copies: needs --cluster".into());
        }
        if queue_copies_wait.is_some() {
            return Err("invalid --cluster-queue-copies-wait: needs --cluster".into());
        }
        if online_copies.is_some() {
            return Err("invalid --cluster-online-copies: needs --cluster".into());
        }
        return Ok(None);
    }
    let node_id = match node_id.or(file.string("node-id")?) {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace('.', "-"))
            .unwrap_or_else(|_| "surgemq".into()),
    };
    Ok(Some(ClusterConfig {
        servers,
        node_id,
        queue_copies: pick(queue_copies, file.bool("cluster-queue-copies")?, true),
        queue_copies_wait: pick(
            queue_copies_wait,
            file.bool("cluster-queue-copies-wait")?,
            true,
        ),
        online_copies: pick(online_copies, file.bool("cluster-online-copies")?, true),
        clock_offset_us: 0,
    }))
}

/// The TLS files, when --cert or --key (or their keys) are given: both must be.
fn tls_files(args: &ServeArgs, file: &ConfigFile) -> Result<Option<TlsFiles>, String> {
    let cert = args.cert.clone().or(file.path("cert")?);
    let key = args.key.clone().or(file.path("key")?);
    let ca_file = args.ca_file.clone().or(file.path("ca-file")?);
    let require_certificate = pick(
        args.require_certificate,
        file.bool("require-certificate")?,
        false,
    );
    let use_identity_as_username = pick(
        args.use_identity_as_username,
        file.bool("use-identity-as-username")?,
        false,
    );
    match (cert, key) {
        (None, None) if ca_file.is_none() && !require_certificate && !use_identity_as_username => {
            Ok(None)
        }
        (Some(cert), Some(key)) => {
            if require_certificate && ca_file.is_none() {
                return Err("invalid --require-certificate: needs --ca-file".into());
            }
            if use_identity_as_username && ca_file.is_none() {
                return Err("invalid --use-identity-as-username: needs --ca-file".into());
            }
            Ok(Some(TlsFiles {
                cert,
                key,
                ca_file,
                require_certificate,
                use_identity_as_username,
            }))
        }
        (_, None) => Err("invalid --key: TLS needs both --cert and --key".into()),
        (None, _) => Err("invalid --cert: TLS needs both --cert and --key".into()),
    }
}

/// The flag if given, else the file's value, else the default.
fn pick<T>(flag: Option<T>, from_file: Option<T>, default: T) -> T {
    flag.or(from_file).unwrap_or(default)
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let (config, mosquitto, authenticator) = build_config(args)?;
    let log = match mosquitto {
        Some(m) => redirect_log(m)?,
        None => None,
    };
    // Block the stop signals before any shard thread exists, so every thread inherits the mask
    // and only `sigwait` below sees them.
    let signals = stop_signals();
    // SAFETY: pthread_sigmask with a valid, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    let metrics_listen = config.metrics_listen;
    let handle = match broker::start(config) {
        Ok(handle) => handle,
        Err(e) => {
            // The log may be in a file: the reason goes there and to the original stderr.
            if let Some(log) = &log {
                error!("{e}");
                log.restore();
            }
            return Err(e.to_string());
        }
    };
    #[cfg(feature = "http")]
    let _metrics =
        match metrics_listen.map(|addr| surgemq::http::serve_metrics(addr, handle.stats())) {
            None => None,
            Some(Ok(server)) => Some(server),
            Some(Err(e)) => {
                handle.shutdown();
                return Err(format!("invalid --metrics-listen: {e}"));
            }
        };
    #[cfg(not(feature = "http"))]
    if metrics_listen.is_some() {
        handle.shutdown();
        return Err("invalid --metrics-listen: built without the `http` feature".into());
    }
    // After the start, whose errors must stay the only line a failed start prints.
    info!(
        allocator = crate::allocator_in_use(),
        "heap allocator in use"
    );
    let mut signal = 0;
    loop {
        // SAFETY: sigwait with a valid set and an out-pointer we own.
        unsafe { libc::sigwait(&signals, &mut signal) };
        if signal != libc::SIGHUP {
            break;
        }
        // New TLS connections get the files as they are now; a bad file keeps the old ones.
        if let Err(e) = handle.reload_tls() {
            warn!("SIGHUP: TLS files not reloaded, the previous ones stay in use: {e}");
        }
        // Password and ACL files too; a changed ACL applies to the subscriptions there.
        match authenticator.reload() {
            Ok(()) => handle.reauthorize(),
            Err(e) => warn!("SIGHUP: {e}; the previous files stay in use"),
        }
        // A `log_dest file` is opened again, for logrotate.
        if let Some(log) = log.as_ref().filter(|l| l.is_file()) {
            if let Err(e) = log.point() {
                warn!("SIGHUP: the log file was not opened again: {e}");
            }
        }
    }
    info!(signal, "stopping");
    // Whatever happens, exit promptly: a stop must never hang.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(900));
        std::process::exit(0);
    });
    log_totals(&handle.shutdown());
    Ok(())
}

/// Sends the log where `log_dest` says, then logs the warnings about the file.
fn redirect_log(m: FromMosquitto) -> Result<Option<Redirect>, String> {
    let (target, mut warnings) = m.logging.target();
    let redirect = target.map(Redirect::apply).transpose()?;
    warnings.splice(0..0, m.warnings);
    warnings.extend(m.logging.unmapped_warning());
    let (level, overridden) = m
        .logging
        .level_to_apply(super::log_level_set_by(), LevelFilter::current());
    warnings.extend(overridden);
    for warning in warnings {
        warn!("{warning}");
    }
    // `log_type`'s level, once the file's warnings are out.
    if let Some(level) = level {
        super::set_log_level(level)?;
    }
    Ok(redirect)
}

/// The run's totals over all shards. Drops are the bounded queues doing their job, but a QoS
/// 1/2 message dropped is one a client was promised, so that gets a warning naming the limits.
fn log_totals(shards: &[MetricsSnapshot]) {
    let sum = |f: fn(&MetricsSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
    let dropped_qos12 = sum(|m| m.dropped_queue_full_qos12);
    info!(
        connections = sum(|m| m.connections_total),
        messages_routed = sum(|m| m.messages_routed),
        dropped_qos0_queue_full = sum(|m| m.dropped_queue_full_qos0),
        dropped_qos0_offline = sum(|m| m.dropped_offline_qos0),
        dropped_qos12_queue_full = dropped_qos12,
        dropped_too_large = sum(|m| m.dropped_too_large),
        dropped_expired = sum(|m| m.dropped_expired),
        shared_delivered = sum(|m| m.shared_delivered),
        shared_redispatched = sum(|m| m.shared_redispatched),
        dropped_shared = sum(|m| m.dropped_shared),
        shared_cross_shard = sum(|m| m.shared_cross_shard),
        publishers_paused = sum(|m| m.publishers_paused),
        subscribers_stalled = sum(|m| m.subscribers_stalled),
        log_compactions = sum(|m| m.compactions),
        log_commits = sum(|m| m.log_commits),
        confirmations = sum(|m| m.confirmations_sent),
        protocol_errors = sum(|m| m.protocol_errors),
        "stopped"
    );
    if dropped_qos12 > 0 {
        warn!(
            dropped_qos12,
            "QoS 1/2 messages were dropped because a session queue was full while its client \
             was offline or stalled; raise --max-queued-messages / --max-queued-bytes / \
             --stall-timeout if subscribers fall behind"
        );
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}
