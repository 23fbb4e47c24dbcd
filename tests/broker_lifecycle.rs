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
