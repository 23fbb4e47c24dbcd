//! `surgemq serve`: run the broker until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use surgemq::broker::{self, BrokerConfig};
use tracing::info;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (repeatable).
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:1883")]
    listen: Vec<SocketAddr>,
    /// Number of shards (executors, one per core). Default: the CPUs this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// Seconds a new connection may take to send CONNECT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    connect_timeout: u64,
    /// Outgoing QoS 1/2 messages in flight per session.
    #[arg(long, default_value_t = 100)]
    max_inflight: usize,
    /// Largest packet accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_packet_size: usize,
    /// Messages queued per session before new ones are dropped.
    #[arg(long, default_value_t = 1000)]
    max_queued_messages: usize,
    /// Payload bytes queued per session before new messages are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_queued_bytes: usize,
    /// Topic levels allowed in a topic name or filter (0: no limit).
    #[arg(long, default_value_t = 128)]
    max_topic_levels: usize,
}

impl ServeArgs {
    fn into_config(self) -> BrokerConfig {
        BrokerConfig {
            listen: self.listen,
            shards: self.shards.unwrap_or_else(broker::available_cpus),
            connect_timeout: Duration::from_secs(self.connect_timeout),
            max_inflight: self.max_inflight,
            max_packet_size: self.max_packet_size,
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            max_topic_levels: self.max_topic_levels,
        }
    }
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let config = args.into_config();
    // Block the stop signals before any shard thread exists, so every thread inherits the mask
    // and only `sigwait` below sees them.
    let signals = stop_signals();
    // SAFETY: pthread_sigmask with a valid, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    let handle = broker::start(config).map_err(|e| e.to_string())?;
    let mut signal = 0;
    // SAFETY: sigwait with a valid set and an out-pointer we own.
    unsafe { libc::sigwait(&signals, &mut signal) };
    info!(signal, "stopping");
    // Whatever happens, exit promptly: a stop must never hang.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(900));
        std::process::exit(0);
    });
    handle.shutdown();
    info!("stopped");
    Ok(())
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
