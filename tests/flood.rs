//! Connection floods against the broker binary (`surgemq serve --shards 2`), a process of its
//! own: this test process holds the client sockets, and each process has its own open-file
//! limit. 10,000 clients connect at once from 8 threads, each bound to its own source address
//! (127.0.0.2 to 127.0.0.9, so that no address runs short of ephemeral ports), and each sends
//! CONNECT. Meanwhile a client connected before the flood does a PINGREQ/PINGRESP round trip
//! every 50 ms, and its round-trip times must stay low.
//!
//! - `--max-connections 12000`: all 10,000 get CONNACK 0.
//! - `--max-connections 5000`: exactly 4,999 get CONNACK 0 (the pinger holds the 5,000th slot),
//!   the others CONNACK 3 or a closed connection, and none waits.
//!
//! `SURGEMQ_BIN` runs another build of the binary (e.g. the release one) instead of the one
//! cargo built for the tests.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 10_000;
const THREADS: usize = 8;
const PING_EVERY: Duration = Duration::from_millis(50);
const MAX_RTT: Duration = Duration::from_millis(100);

/// The broker binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
}

impl BrokerProcess {
    fn start(max_connections: usize) -> BrokerProcess {
        // A free port: bound, read, released. The broker binds it again at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let bin = std::env::var("SURGEMQ_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_surgemq").to_string());
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string(), "--shards", "2"])
            .args(["--max-connections", &max_connections.to_string()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start surgemq serve");
        let broker = BrokerProcess { child, addr };
        // Listening once a CONNECT is answered.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = TcpStream::connect(addr) {
                let mut c = RawClient::from_stream(stream);
                c.send(&ConnectBuilder::new("probe").build());
                c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
                c.disconnect();
                return broker;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the broker must exit promptly.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "broker exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker still running 5 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How each flooding client's CONNECT was answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcomes {
    accepted: usize,
    refused_3: usize,
    closed: usize,
    other: usize,
    connect_failed: usize,
    timed_out: usize,
}

impl Outcomes {
    fn add(&mut self, o: &Outcomes) {
        self.accepted += o.accepted;
        self.refused_3 += o.refused_3;
        self.closed += o.closed;
        self.other += o.other;
        self.connect_failed += o.connect_failed;
        self.timed_out += o.timed_out;
    }
}

fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(10))?;
    Ok(socket.into())
}

/// Reads the 4-byte answer to CONNECT, waiting at most until `deadline`.
fn read_connack(stream: &mut TcpStream, deadline: Instant, out: &mut Outcomes) {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            out.timed_out += 1;
            return;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                out.timed_out += 1;
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // reset: refused and closed before we read the CONNACK
        }
    }
    match (got, buf) {
        (4, [0x20, 0x02, 0x00, 0x00]) => out.accepted += 1,
        (4, [0x20, 0x02, 0x00, 0x03]) => out.refused_3 += 1,
        (0, _) => out.closed += 1,
        _ => {
            eprintln!("unexpected answer to CONNECT: {:02x?}", &buf[..got]);
            out.other += 1
        }
    }
}

/// A client that pings every 50 ms until told to stop; returns the round-trip times.
fn pinger(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut c = RawClient::open(addr);
    c.send(&ConnectBuilder::new("flood-pinger").build());
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    let mut rtts = Vec::new();
    // Bounded even if nobody says stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let start = Instant::now();
        c.ping();
        rtts.push(start.elapsed());
        std::thread::sleep(PING_EVERY.saturating_sub(start.elapsed()));
    }
    rtts
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Floods `broker` with 10,000 CONNECTs while the pinger runs; returns how they were answered
/// and the pinger's round-trip times. The flood's sockets stay open until this returns.
fn flood(broker: &BrokerProcess, run: &str) -> (Outcomes, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = broker.addr;
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || pinger(addr, stop))
    };
    // Let the pinger connect and take a few samples of a quiet broker first.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(THREADS));
    let answers_by = start + Duration::from_secs(20);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let source = IpAddr::from([127, 0, 0, 2 + t as u8]);
                // The flooders yield the CPU to the broker and the pinger (this is a 2-core
                // machine): the round trips should measure the broker, not this process.
                // SAFETY: setpriority on this thread's own id.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 19);
                }
                let mut out = Outcomes::default();
                let mut streams = Vec::with_capacity(CLIENTS / THREADS);
                barrier.wait();
                for i in 0..CLIENTS / THREADS {
                    match connect_from(source, addr) {
                        Ok(mut s) => {
                            let _ = s.set_nodelay(true);
                            let connect = ConnectBuilder::new(&format!("flood-{t}-{i}")).build();
                            // A refused client may be closed before its CONNECT is out.
                            let _ = s.write_all(&connect);
                            streams.push(s);
                        }
                        Err(_) => out.connect_failed += 1,
                    }
                }
                for s in &mut streams {
                    read_connack(s, answers_by, &mut out);
                }
                (out, streams)
            })
        })
        .collect();
    let mut total = Outcomes::default();
    let mut sockets = Vec::new();
    for w in workers {
        let (out, streams) = w.join().expect("flood thread");
        total.add(&out);
        sockets.push(streams);
    }
    let took = start.elapsed();
    // A few more pings with all the connections open.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rtts = pinger.join().expect("pinger");
    let mut sorted = rtts.clone();
    sorted.sort();
    println!(
        "{run}: {CLIENTS} CONNECTs answered in {took:?}: {total:?}\n{run}: {} pings, RTT p50 {:?} p90 {:?} p99 {:?} max {:?}",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        sorted.last().unwrap()
    );
    drop(sockets);
    (total, rtts)
}

/// Both floods; with `strict_rtt`, the pinger's worst round trip must stay under 100 ms.
fn two_floods(strict_rtt: bool) {
    // One flood at a time in this process: 10,000 sockets each, and a 20,000-file limit.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_open_files_limit();
    assert!(
        limit as usize > CLIENTS + 1000,
        "open-file limit {limit} is too low for {CLIENTS} client sockets"
    );
    let started = Instant::now();

    // Room for everybody.
    let broker = BrokerProcess::start(12_000);
    let (out, rtts) = flood(&broker, "max 12000");
    broker.stop();
    assert_eq!(
        out,
        Outcomes {
            accepted: CLIENTS,
            ..Default::default()
        },
        "with room for all, every client is accepted"
    );
    let worst_full = *rtts.iter().max().unwrap();

    // Room for half: the pinger plus 4,999 flooders; the rest are turned away, quickly.
    let broker = BrokerProcess::start(5_000);
    let (out, rtts) = flood(&broker, "max 5000");
    broker.stop();
    assert_eq!(out.accepted, 4_999, "{out:?}");
    assert_eq!(out.refused_3 + out.closed, CLIENTS - 4_999, "{out:?}");
    assert_eq!((out.other, out.connect_failed, out.timed_out), (0, 0, 0));
    let worst_half = *rtts.iter().max().unwrap();

    println!("whole test: {:?}", started.elapsed());
    if strict_rtt {
        assert!(
            worst_full < MAX_RTT && worst_half < MAX_RTT,
            "PINGREQ round trips during the flood reached {worst_full:?} (room for all) and \
             {worst_half:?} (room for half); the limit is {MAX_RTT:?}"
        );
    }
}

/// The outcomes, in CI. The pinger's round trips are printed and bounded only by its read
/// timeout (5 s): on this 2-core machine they depend on what else runs on it. Measured worst
/// round trips: 13 to 70 ms with the machine otherwise quiet (load average below 1, debug or
/// release broker alike), 100 to 850 ms while other builds ran (load average 6 to 8).
#[test]
fn ten_thousand_clients_at_once_with_room_for_all_then_for_half() {
    two_floods(false);
}

/// The same with the round-trip limit. Run it on a quiet machine against a release build:
///
/// ```text
/// cargo build --release
/// SURGEMQ_BIN=$PWD/target/release/surgemq cargo test --test flood -- --ignored --nocapture
/// ```
#[test]
#[ignore = "timing: needs a quiet machine and a release broker (see the doc comment)"]
fn ten_thousand_clients_at_once_keep_ping_round_trips_under_100_ms() {
    two_floods(true);
}
