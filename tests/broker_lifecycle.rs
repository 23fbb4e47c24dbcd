//! Starting and stopping brokers. Kept in its own test binary: it starts and stops brokers
//! hundreds of times, which must not disturb the timing of the protocol tests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::BrokerConfig;

// ----- start and stop ---------------------------------------------------------------------------

/// Starts a broker, serves a few connections, stops it; the stop must finish within 5 s. When
/// it does not, a new TCP connection probes whether the stuck shard was merely asleep.
fn start_serve_stop(shards: usize) -> Result<(), String> {
    let handle = surgemq::broker::start(BrokerConfig {
        shards,
        ..test_config()
    })
    .map_err(|e| format!("start: {e}"))?;
    let addr = handle.local_addrs()[0];
    for level in [6u8, 3] {
        let mut c = RawClient::open(addr);
        c.send(&ConnectBuilder::new("lvl").protocol(b"MQTT", level).build());
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x01]);
        c.expect_closed();
    }
    let mut ok = RawClient::open(addr);
    ok.send(&ConnectBuilder::new(&id_on_shard("stop", shards - 1, shards)).build());
    ok.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    ok.ping();
    drop(ok);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.shutdown());
    });
    if rx.recv_timeout(Duration::from_secs(5)).is_ok() {
        return Ok(());
    }
    let probe = std::net::TcpStream::connect(addr).map(drop);
    let after = rx.recv_timeout(Duration::from_secs(5)).is_ok();
    Err(format!(
        "shutdown of a {shards}-shard broker hung for 5 s; a TCP connect to it then {:?}, \
         and the shutdown {} (completing after the probe means a shard slept through the \
         Shutdown message in its inbox)",
        probe.map_err(|e| e.to_string()),
        if after { "completed" } else { "still hung" }
    ))
}

#[test]
fn shutdown_completes_with_two_brokers_running_concurrently() {
    // Two brokers in one process, started and stopped over and over (as the tests do).
    let deadline = Instant::now() + Duration::from_secs(4);
    std::thread::scope(|s| {
        let runs: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|shards| {
                s.spawn(move || {
                    let mut rounds = 0;
                    while Instant::now() < deadline {
                        start_serve_stop(shards)?;
                        rounds += 1;
                    }
                    Ok::<usize, String>(rounds)
                })
            })
            .collect();
        for run in runs {
            let result = run.join().expect("no panic");
            assert!(result.is_ok(), "{}", result.unwrap_err());
        }
    });
}

// ----- placement ---------------------------------------------------------------------------------

/// `Cpus_allowed_list` in a `status` file of /proc.
fn cpus_allowed(status: &str) -> String {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Each shard's executor is pinned to its CPU, but the thread that does its blocking work (the
/// log's commits, `store::log_io`) may use every CPU: pinned beside its shard, a commit waited
/// for the busy shard to yield the CPU (3.5 ms instead of 0.13 ms per commit, measured).
#[test]
fn shard_executors_are_pinned_and_their_blocking_threads_are_not() {
    let all = cpus_allowed("/proc/self/status");
    let cpus = surgemq::sys::allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: one CPU allowed ({all}), nothing to pin apart");
        return;
    }
    let broker = Broker::start(2);
    let threads: Vec<(String, String)> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|tid| {
            let comm =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            let status = format!("/proc/self/task/{tid}/status");
            (comm.trim().to_string(), cpus_allowed(&status))
        })
        .filter(|(comm, _)| comm == "surgemq-shard-0" || comm == "surgemq-shard-1")
        .collect();
    for shard in ["surgemq-shard-0", "surgemq-shard-1"] {
        let masks: Vec<&str> = threads
            .iter()
            .filter(|(comm, _)| comm == shard)
            .map(|(_, mask)| mask.as_str())
            .collect();
        assert!(
            masks.iter().any(|m| !m.contains(['-', ','])),
            "{shard}: no thread pinned to one CPU: {masks:?}"
        );
        assert!(
            masks.contains(&all.as_str()),
            "{shard}: no thread free to use every CPU ({all}): {masks:?}"
        );
    }
    broker.shutdown();
}
