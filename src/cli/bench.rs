//! `surgemq bench`: flags in, a validated [`BenchConfig`] out, one call to
//! [`surgemq::bench::run`], the report printed. `surgemq bench sink` runs the do-nothing
//! server that measures the generator itself.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use surgemq::bench::{self, BenchConfig, Load, Scenario, SinkConfig};
use surgemq::client::{TlsOptions, Transport};
use surgemq::protocol::QoS;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// One publisher, one subscriber, one topic.
    Pair(LoadArgs),
    /// N publishers (--clients/--publishers, default 20) each on its own topic; subscribers
    /// (default 1) on a wildcard.
    FanIn(LoadArgs),
    /// Publishers (default 1) on one topic; N subscribers (--clients/--subscribers, default 20).
    FanOut(LoadArgs),
    /// N clients (--clients, default 20), each publishing on its own topic and subscribed to all.
    Mesh(LoadArgs),
    /// N publishers (--clients/--publishers, default 4) each on its own topic; M subscribers
    /// (--subscribers, default 4) in one shared-subscription group on a wildcard over them all
    /// ($share/GROUP/surgemq-bench/RUN/+): each message must reach exactly one member. Reports
    /// missing and duplicated messages across the group and each member's share.
    Shared(LoadArgs),
    /// A minimal MQTT server that acknowledges everything and discards publishes: run a
    /// --publish-only bench against it to see what the generator can produce.
    Sink(SinkArgs),
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Publishers (fan-in, fan-out, shared).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers (fan-in, fan-out), members of the group (shared).
    #[arg(long)]
    subscribers: Option<usize>,
    /// The scenario's N: publishers of fan-in and shared, subscribers of fan-out, clients of
    /// mesh.
    #[arg(long)]
    clients: Option<usize>,
    /// Shared: the group's name, as in $share/GROUP/... (no '/', '+' or '#') [default: bench].
    #[arg(long)]
    group: Option<String>,
    /// Messages per publisher [default: 100000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Publish for this long instead of a message count (e.g. 10, 10s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Payload bytes per message, including the 24-byte header.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// MQTT version every client speaks: 311 (also mqttv311) or 5 (also mqttv5).
    #[arg(short = 'V', long = "protocol-version", default_value = "311", value_parser = parse_version)]
    protocol_version: surgemq::protocol::ProtocolLevel,
    /// Messages each publisher may have outstanding [default: 100; none with --rate].
    #[arg(long)]
    window: Option<usize>,
    /// Open loop: total messages per second over all publishers.
    #[arg(long, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Load generator threads [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Subscribers connect to this port of --host instead (e.g. the far side of a bridge,
    /// publishers on the near side); not with mesh.
    #[arg(long)]
    subscribe_port: Option<u16>,
    /// More ports of --host (the other nodes of a cluster, say): clients are dealt round
    /// robin over --port and these, publishers and subscribers alike; not with
    /// --subscribe-port.
    #[arg(long, value_delimiter = ',', conflicts_with = "subscribe_port")]
    spread_ports: Vec<u16>,
    /// Wait this long after every subscription is acknowledged before publishing (e.g. 1s:
    /// time for subscriptions to reach the other nodes of a cluster) [default: 0].
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// MQTT over TLS (mqtts://), or with --ws WebSockets over TLS (wss://). The broker's
    /// certificate must be valid for --host (an IP address needs an IP SAN).
    #[arg(long)]
    tls: bool,
    /// With --tls: PEM CA certificates that sign the broker's certificate [default: the
    /// system's CA certificates].
    #[arg(long, value_name = "FILE", requires = "tls")]
    cafile: Option<PathBuf>,
    /// With --tls: accept any certificate (measuring only: no protection at all).
    #[arg(long, requires = "tls", conflicts_with = "cafile")]
    insecure: bool,
    /// MQTT over WebSockets (ws://, or wss:// with --tls), upgrading on this path (e.g. /mqtt).
    #[arg(long, value_name = "PATH")]
    ws: Option<String>,
    /// Only publishers: measures how fast publishes are accepted (e.g. against `bench sink`).
    #[arg(long)]
    publish_only: bool,
    /// Subscribers connect with persistent sessions (CleanSession = 0), as devices that must
    /// not miss messages do; their sessions are removed at the end (a clean reconnect).
    #[arg(long)]
    persistent: bool,
    /// With --persistent: subscribers subscribe and disconnect, publishers run the whole load
    /// (the window counts the broker's acknowledgements), then subscribers reconnect and drain
    /// what was kept. Reports the acknowledged publish rate and the drain rate.
    #[arg(long, requires = "persistent")]
    offline: bool,
    /// Publishers connect with persistent sessions too (CleanSession = 0), removed at the
    /// end. Against a broker with a data directory this measures what keeping their incoming
    /// QoS 2 ids across a crash costs.
    #[arg(long)]
    persistent_publishers: bool,
    /// After publishing, wait at most this long without progress before counting missing.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    drain: Duration,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Threads [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Stop by itself after this long (default: run until Ctrl-C / SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

/// "10", "10s", "1.5s", "500ms", "2m".
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}' (use ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is not a valid duration"))
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let (scenario, load) = match args.command {
        BenchCommand::Pair(a) => (Scenario::Pair, a),
        BenchCommand::FanIn(a) => (Scenario::FanIn, a),
        BenchCommand::FanOut(a) => (Scenario::FanOut, a),
        BenchCommand::Mesh(a) => (Scenario::Mesh, a),
        BenchCommand::Shared(a) => (Scenario::Shared, a),
        BenchCommand::Sink(a) => return run_sink(a),
    };
    let json = load.json;
    let config = load.into_config(scenario);
    let report = bench::run(config).map_err(|e| e.to_string())?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
    }
    if let Some(why) = report.failure() {
        return Err(format!("bench failed: {why}"));
    }
    Ok(())
}

impl LoadArgs {
    fn into_config(self, scenario: Scenario) -> BenchConfig {
        let load = match (self.messages, self.duration) {
            (_, Some(d)) => Load::Duration(d),
            (Some(n), None) => Load::Messages(n),
            (None, None) => Load::Messages(100_000),
        };
        let transport = match (self.tls, self.ws) {
            (false, None) => Transport::Mqtt,
            (true, None) => Transport::Mqtts,
            (false, Some(path)) => Transport::Ws { path },
            (true, Some(path)) => Transport::Wss { path },
        };
        BenchConfig {
            scenario,
            host: self.host,
            port: self.port,
            subscribe_port: self.subscribe_port,
            spread_ports: self.spread_ports.clone(),
            settle: self.settle.unwrap_or_default(),
            transport,
            tls: TlsOptions {
                ca_file: self.cafile,
                insecure: self.insecure,
                ..TlsOptions::default()
            },
            publishers: self.publishers,
            subscribers: self.subscribers,
            clients: self.clients,
            group: self.group,
            publish_only: self.publish_only,
            persistent: self.persistent,
            persistent_publishers: self.persistent_publishers,
            offline: self.offline,
            load,
            size: self.size,
            qos: QoS::from_u8(self.qos).unwrap_or_default(),
            protocol: self.protocol_version,
            window: self.window,
            rate: self.rate,
            threads: self.threads.unwrap_or_else(surgemq::broker::available_cpus),
            username: self.username,
            password: self.password,
            drain: self.drain,
            progress: !self.json && std::io::stderr().is_terminal(),
            ..Default::default()
        }
    }
}

fn run_sink(args: SinkArgs) -> Result<(), String> {
    let config = SinkConfig {
        listen: SocketAddr::new(args.host, args.port),
        threads: args.threads.unwrap_or_else(surgemq::broker::available_cpus),
    };
    // Block the stop signals before the sink's threads exist so that they inherit the mask
    // and only the wait below sees them.
    let signals = stop_signals();
    // SAFETY: pthread_sigmask with a valid, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    let sink = bench::start_sink(config).map_err(|e| e.to_string())?;
    eprintln!("sink listening on {}", sink.local_addr());
    match args.duration {
        Some(d) => wait_signal_or(&signals, d),
        None => {
            let mut signal = 0;
            // SAFETY: sigwait with a valid set and an out-pointer we own.
            unsafe { libc::sigwait(&signals, &mut signal) };
        }
    }
    let stats = sink.shutdown();
    eprintln!(
        "sink stopped: {} connection(s), {} publish(es) received",
        stats.connections, stats.publishes
    );
    Ok(())
}

/// Waits for a stop signal, at most `limit`.
fn wait_signal_or(signals: &libc::sigset_t, limit: Duration) {
    let timeout = libc::timespec {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_nsec: limit.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait with a valid set, no info out-pointer, and a timeout we own.
    unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &timeout) };
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// `-V`: 311 / mqttv311 or 5 / mqttv5 (mosquitto_pub's spellings).
fn parse_version(s: &str) -> Result<surgemq::protocol::ProtocolLevel, String> {
    match s {
        "311" | "mqttv311" => Ok(surgemq::protocol::ProtocolLevel::V311),
        "5" | "mqttv5" => Ok(surgemq::protocol::ProtocolLevel::V5),
        other => Err(format!("{other:?} is not 311 or 5")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
