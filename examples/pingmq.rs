//! pingmq: a small uptime monitor on MQTT, after the tool of the same name that shipped with
//! SurgeMQ (Go).
//!
//! `pingmq server` probes a list of `host:port` targets every `--interval` seconds with a TCP
//! connect (with a timeout; no raw sockets, so no privileges needed) and publishes each result,
//! retained, to `pingmq/<host>/<port>`: `up 0.21 ms` or `down connection refused`.
//! `pingmq client` subscribes to the topics it is told and prints the results as they come,
//! only the `down` ones with `--failures-only`. Retained results mean a client started later
//! sees the last state of every target at once.
//!
//!     cargo run --release -- serve
//!     cargo run --example pingmq -- server --broker 127.0.0.1:1883 \
//!         --targets 127.0.0.1:22,127.0.0.1:1883 --interval 1
//!     cargo run --example pingmq -- client --broker 127.0.0.1:1883 --topic 'pingmq/#'

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use surgemq::client::{block_on, Client, ClientError, ClientOptions, Messages};
use surgemq::protocol::{Publish, QoS};

#[derive(Parser)]
#[command(name = "pingmq", about = "Uptime monitor on MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe targets periodically and publish the results.
    Server {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Comma-separated host:port targets.
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Seconds between rounds of probes.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Milliseconds a TCP connect may take before the target counts as down.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Print the results published for some targets.
    Client {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Topic filter to watch (repeatable), e.g. 'pingmq/#' or 'pingmq/10.0.0.1/+'.
        #[arg(long, default_value = "pingmq/#")]
        topic: Vec<String>,
        /// Print only targets that are down.
        #[arg(long)]
        failures_only: bool,
    },
}

fn main() {
    // Warnings (a lost broker connection, reconnect attempts) on stderr; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Server {
            broker,
            targets,
            interval,
            timeout_ms,
        } => resolve_targets(&targets).and_then(|targets| {
            let options = broker_options(&broker, "pingmq-server")?;
            let every = Duration::from_secs(interval.max(1));
            let timeout = Duration::from_millis(timeout_ms.max(1));
            run(async move {
                let (client, _) = Client::connect(options).await?;
                serve(&client, &targets, every, timeout, None).await
            })
        }),
        Command::Client {
            broker,
            topic,
            failures_only,
        } => broker_options(&broker, "pingmq-client").and_then(|options| {
            run(async move {
                let (client, mut messages) = Client::connect(options).await?;
                let filters: Vec<(&str, QoS)> = topic
                    .iter()
                    .map(|t| (t.as_str(), QoS::AtLeastOnce))
                    .collect();
                client.subscribe(&filters).await?;
                watch(&mut messages, failures_only, None, &mut std::io::stdout()).await
            })
        }),
    };
    if let Err(e) = result {
        eprintln!("pingmq: {e}");
        std::process::exit(1);
    }
}

fn run(work: impl std::future::Future<Output = Result<(), ClientError>>) -> Result<(), String> {
    block_on(work)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Options for `host:port`, reconnecting every second if the broker goes away.
fn broker_options(broker: &str, role: &str) -> Result<ClientOptions, String> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid --broker {broker:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("invalid --broker {broker:?}: bad port"))?;
    Ok(ClientOptions {
        client_id: format!("{role}-{}", std::process::id()),
        reconnect_interval: Some(Duration::from_secs(1)),
        ..ClientOptions::new(host, port)
    })
}

/// A target as given (`host:port`), where to connect, and where its results go.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub topic: String,
}

/// Resolves each `host:port` once, at start, so a typo fails at once instead of every round.
pub fn resolve_targets(specs: &[String]) -> Result<Vec<Target>, String> {
    specs
        .iter()
        .map(|spec| {
            let (host, port) = spec
                .rsplit_once(':')
                .ok_or_else(|| format!("invalid target {spec:?}: expected HOST:PORT"))?;
            let addr = spec
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("invalid target {spec:?}: cannot resolve"))?;
            // '/' would add topic levels, '+' and '#' are not allowed in topic names.
            let host = host.trim_matches(['[', ']']).replace(['/', '+', '#'], "_");
            Ok(Target {
                name: spec.clone(),
                addr,
                topic: format!("pingmq/{host}/{port}"),
            })
        })
        .collect()
}

/// One probe: a TCP connect with a timeout, and how long it took.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> String {
    let started = Instant::now();
    match glommio::net::TcpStream::connect_timeout(addr, timeout).await {
        Ok(_) => format!("up {:.2} ms", started.elapsed().as_secs_f64() * 1000.0),
        Err(e) => {
            let e = std::io::Error::from(e);
            let why = match e.kind() {
                std::io::ErrorKind::TimedOut => format!("timed out after {timeout:?}"),
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => e.to_string(),
            };
            format!("down {why}")
        }
    }
}

/// Probes every target each `interval` (all targets of a round at once) and publishes the
/// results retained; runs forever, or for `rounds` rounds.
pub async fn serve(
    client: &Client,
    targets: &[Target],
    interval: Duration,
    timeout: Duration,
    rounds: Option<u64>,
) -> Result<(), ClientError> {
    let mut round = 0;
    loop {
        let started = Instant::now();
        let probes: Vec<_> = targets
            .iter()
            .map(|t| glommio::spawn_local(probe(t.addr, timeout)))
            .collect();
        let mut acks = Vec::with_capacity(probes.len());
        for (target, probe) in targets.iter().zip(probes) {
            let result = probe.await;
            acks.push(client.publish(&target.topic, result, QoS::AtLeastOnce, true));
        }
        for ack in acks {
            ack.await?;
        }
        round += 1;
        if rounds.is_some_and(|n| round >= n) {
            return Ok(());
        }
        glommio::timer::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

/// Prints results as "HH:MM:SS topic result" (UTC), skipping `up` ones with `failures_only`;
/// runs until the connection ends, or for `count` printed lines.
pub async fn watch(
    messages: &mut Messages,
    failures_only: bool,
    count: Option<usize>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut printed = 0;
    while count != Some(printed) {
        let m = messages.recv().await?;
        if failures_only && !is_down(&m) {
            continue;
        }
        let text = String::from_utf8_lossy(&m.payload);
        writeln!(out, "{} {} {}", clock(), m.topic, text).map_err(|e| ClientError::Io(e.into()))?;
        printed += 1;
    }
    Ok(())
}

pub fn is_down(m: &Publish) -> bool {
    m.payload.starts_with(b"down")
}

/// The time of day, UTC, without a date-time dependency.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
