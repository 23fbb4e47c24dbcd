//! Randomized hostile traffic against a live broker (2 shards): 16 threads open connection
//! after connection and send valid packets of every type (encoded with the crate's own
//! encoder), mutated ones (bits flipped, bytes replaced, lengths rewritten, flags changed,
//! truncated, spliced, duplicated) and plain garbage, in randomly split writes, and end each
//! connection differently (drop, reset, half-close, DISCONNECT, or just stop). Afterwards the
//! broker must still serve clients on every shard, shut down promptly, and no shard thread may
//! have panicked.
//!
//! `SURGEMQ_FUZZ_SEED` replays a seed (printed at the start; the interleaving of threads still
//! varies from run to run), `SURGEMQ_FUZZ_SECS` sets how long the traffic lasts (default 25).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use surgemq::broker::BrokerConfig;
use surgemq::protocol::{
    Ack, ByteStr, ConnAck, Connect, Disconnect, LastWill, Packet, ProtocolLevel, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscribeReturnCode, UnsubAck, Unsubscribe,
};

const THREADS: usize = 16;

/// xorshift64*: tiny, fast, good enough to pick mutations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never 0 (xorshift's fixed point); mix the seed so that nearby seeds diverge.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const TOPICS: [&str; 10] = [
    "a",
    "a/b",
    "a/b/c",
    "fuzz/x",
    "fuzz/y/z",
    "$SYS/fuzz",
    "/",
    "a//b",
    "ü/ñ",
    "x/y/z/w",
];
/// The last two are malformed (MQTT-4.7.1-2, MQTT-4.7.3-1) and close the connection.
const FILTERS: [&str; 12] = [
    "#", "a/#", "a/+", "+/+", "+", "fuzz/#", "$SYS/#", "a/b/c", "/#", "+/b/#", "a/#/b", "",
];

fn qos(rng: &mut Rng) -> QoS {
    *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id(rng: &mut Rng) -> u16 {
    // Mostly a few ids (so that acknowledgements meet their packets), sometimes any.
    if rng.chance(80) {
        1 + rng.below(8) as u16
    } else {
        1 + rng.below(65_535) as u16
    }
}

fn client_id(rng: &mut Rng) -> String {
    // A small pool: threads take over each other's sessions all the time.
    match rng.below(10) {
        0 => String::new(),
        _ => format!("fuzz-{}", rng.below(40)),
    }
}

/// A valid CONNECT, in any of the forms a client may send.
fn valid_connect(rng: &mut Rng) -> Packet {
    let level = if rng.chance(85) {
        ProtocolLevel::V311
    } else {
        ProtocolLevel::V31
    };
    let username = rng
        .chance(20)
        .then(|| ByteStr::from(format!("user{}", rng.below(3))));
    let password = (username.is_some() && rng.chance(50)).then(|| Bytes::from(rng.bytes(8)));
    let will = rng.chance(40).then(|| LastWill {
        topic: ByteStr::from(*rng.pick(&TOPICS)),
        payload: {
            let n = rng.below(40);
            Bytes::from(rng.bytes(n))
        },
        qos: qos(rng),
        retain: rng.chance(20),
        properties: None,
    });
    Packet::Connect(Box::new(Connect {
        level,
        bridge: false,
        clean_session: rng.chance(70),
        // Mostly no keepalive; sometimes one short enough to expire during the run.
        keep_alive: if rng.chance(80) {
            0
        } else {
            1 + rng.below(3) as u16
        },
        client_id: ByteStr::from(client_id(rng)),
        will,
        username,
        password,
        properties: None,
    }))
}

/// A valid packet of a random type: mostly what a client may send after CONNECT, sometimes a
/// second CONNECT or a packet only a server may send (each of which ends the connection), and
/// rarely a DISCONNECT (which ends it politely).
fn valid_packet(rng: &mut Rng) -> Packet {
    let roll = rng.below(100);
    if roll < 6 {
        return match rng.below(5) {
            0 => valid_connect(rng),
            1 => Packet::ConnAck(ConnAck {
                session_present: rng.chance(50),
                code: *rng.pick(&[
                    ReasonCode::SUCCESS,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    ReasonCode::NOT_AUTHORIZED,
                ]),
                properties: None,
            }),
            2 => Packet::SubAck(SubAck {
                packet_id: packet_id(rng),
                return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
                properties: None,
            }),
            3 => Packet::UnsubAck(UnsubAck::new(packet_id(rng))),
            _ => Packet::PingResp,
        };
    }
    if roll < 8 {
        return Packet::Disconnect(Disconnect::NORMAL);
    }
    match rng.below(10) {
        0..=3 => {
            let qos = qos(rng);
            let payload_len = if rng.chance(5) {
                rng.below(70_000)
            } else {
                rng.below(64)
            };
            Packet::Publish(Publish {
                dup: qos != QoS::AtMostOnce && rng.chance(20),
                qos,
                retain: rng.chance(25),
                topic: ByteStr::from(*rng.pick(&TOPICS)),
                packet_id: if qos == QoS::AtMostOnce {
                    0
                } else {
                    packet_id(rng)
                },
                payload: Bytes::from(rng.bytes(payload_len)),
                properties: None,
            })
        }
        4 => Packet::PubAck(Ack::new(packet_id(rng))),
        5 => Packet::PubRec(Ack::new(packet_id(rng))),
        6 => {
            if rng.chance(50) {
                Packet::PubRel(Ack::new(packet_id(rng)))
            } else {
                Packet::PubComp(Ack::new(packet_id(rng)))
            }
        }
        7 => Packet::Subscribe(Subscribe {
            packet_id: packet_id(rng),
            filters: (0..1 + rng.below(4))
                .map(|_| (ByteStr::from(*rng.pick(&FILTERS)), qos(rng).into()))
                .collect(),
            properties: None,
        }),
        8 => Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(rng),
            filters: (0..1 + rng.below(3))
                .map(|_| ByteStr::from(*rng.pick(&FILTERS)))
                .collect(),
            properties: None,
        }),
        _ => Packet::PingReq,
    }
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet
        .encode(&mut buf, ProtocolLevel::V311)
        .unwrap_or_else(|e| panic!("the encoder refused a valid packet {packet:?}: {e}"));
    buf.to_vec()
}

/// A Remaining Length field of 1 to 5 bytes with random content (5 bytes is malformed).
fn random_length_field(rng: &mut Rng) -> Vec<u8> {
    let n = 1 + rng.below(5);
    let mut out: Vec<u8> = (0..n).map(|_| rng.next() as u8 | 0x80).collect();
    if rng.chance(80) {
        out[n - 1] &= 0x7f;
    }
    out
}

/// Where a packet's body starts (after the type byte and its Remaining Length bytes).
fn body_start(packet: &[u8]) -> usize {
    let mut i = 1;
    while i < packet.len() && i < 5 && packet[i] & 0x80 != 0 {
        i += 1;
    }
    (i + 1).min(packet.len())
}

/// Damages a valid packet in one to three random ways.
fn mutate(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        if p.is_empty() {
            p.push(rng.next() as u8);
        }
        let len = p.len();
        match rng.below(11) {
            0 => {
                let i = rng.below(len);
                p[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len);
                p[i] = rng.next() as u8;
            }
            // Another type, or other flags, in the first byte.
            2 => p[0] = (p[0] & 0x0f) | ((rng.below(16) as u8) << 4),
            3 => p[0] = (p[0] & 0xf0) | rng.below(16) as u8,
            // A Remaining Length that lies.
            4 => {
                let start = body_start(&p);
                let mut out = vec![p[0]];
                out.extend(random_length_field(rng));
                out.extend_from_slice(&p[start..]);
                p = out;
            }
            5 => p.truncate(rng.below(len)),
            6 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                p.splice(i..i, extra);
            }
            7 => {
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                p.drain(i..i + n);
            }
            // A string length prefix in the body that lies.
            8 => {
                let start = body_start(&p);
                if start + 2 <= len {
                    let i = start + rng.below(len - start - 1);
                    p[i] = rng.next() as u8;
                    p[i + 1] = rng.next() as u8;
                }
            }
            // U+0000, a surrogate or a wildcard somewhere in the body.
            9 => {
                let start = body_start(&p);
                if start < len {
                    let i = start + rng.below(len - start);
                    let evils: [&[u8]; 5] = [b"\0", b"\xed\xa0\x80", b"+", b"#", b"\xff"];
                    let evil = *rng.pick(&evils);
                    p.splice(i..i, evil.iter().copied());
                }
            }
            _ => {
                let dup = p.clone();
                p.extend_from_slice(&dup[..rng.below(len + 1)]);
            }
        }
    }
    p
}

/// The next chunk of bytes a fuzzing client sends: a valid packet, or with probability
/// `hostile` percent a damaged one, garbage, or a header that announces more than follows.
fn next_item(rng: &mut Rng, hostile: usize) -> Vec<u8> {
    if !rng.chance(hostile) {
        return encode(&valid_packet(rng));
    }
    match rng.below(10) {
        0..=6 => {
            let valid = encode(&valid_packet(rng));
            mutate(rng, valid)
        }
        7 => {
            let n = 1 + rng.below(64);
            rng.bytes(n)
        }
        8 => {
            let mut out = vec![(rng.below(16) as u8) << 4 | rng.below(16) as u8];
            out.extend(random_length_field(rng));
            out
        }
        _ => {
            // Two valid packets glued together, the second damaged.
            let mut out = encode(&valid_packet(rng));
            let damaged = encode(&valid_packet(rng));
            out.extend(mutate(rng, damaged));
            out
        }
    }
}

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    items: AtomicU64,
    resets: AtomicU64,
    connect_failures: AtomicU64,
}

/// Reads whatever the broker sent so far (without waiting); false once the connection is over.
fn drain(stream: &mut TcpStream, stats: &Stats) -> bool {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A connection from `source` (an address of 127.0.0.0/8: each has its own ephemeral ports,
/// and thousands of short connections leave thousands of TIME_WAIT entries behind).
fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// One hostile connection, bounded in packets and time.
fn fuzz_connection(
    source: IpAddr,
    addr: SocketAddr,
    rng: &mut Rng,
    stats: &Stats,
    deadline: Instant,
) {
    let Ok(mut stream) = connect_from(source, addr) else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        return;
    };
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(rng.chance(70));
    // A broker that stops reading must not block this thread for long.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let mut items = Vec::new();
    if rng.chance(80) {
        items.push(encode(&valid_connect(rng)));
    }
    // Some connections are mostly well-behaved (and get deep into sessions and QoS flows),
    // others are hostile from the start.
    let hostile = *rng.pick(&[2, 10, 40]);
    for _ in 0..rng.below(60) {
        items.push(next_item(rng, hostile));
    }
    let mut open = true;
    'items: for item in items {
        if Instant::now() >= deadline {
            break;
        }
        stats.items.fetch_add(1, Ordering::Relaxed);
        // Split the item into random pieces, sometimes with a pause between them.
        let mut rest = &item[..];
        while !rest.is_empty() {
            let n = if rng.chance(60) {
                rest.len()
            } else {
                1 + rng.below(rest.len())
            };
            if stream.write_all(&rest[..n]).is_err() {
                open = false;
                break 'items;
            }
            stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            rest = &rest[n..];
            if rng.chance(5) {
                std::thread::sleep(Duration::from_millis(1 + rng.below(3) as u64));
            }
        }
        if !drain(&mut stream, stats) {
            open = false;
            break;
        }
    }
    if !open {
        return;
    }
    match rng.below(5) {
        0 => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            stats.resets.fetch_add(1, Ordering::Relaxed);
        }
        1 => {
            // Half-close, then wait (bounded) for the broker to close its side.
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until && drain(&mut stream, stats) {}
        }
        2 => {
            let _ = stream.write_all(&[0xe0, 0x00]);
        }
        _ => {}
    }
}

/// Counts panics on the broker's shard threads (their names start with "surgemq-shard").
static SHARD_PANICS: AtomicU64 = AtomicU64::new(0);

fn watch_for_shard_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if thread
            .name()
            .is_some_and(|n| n.starts_with("surgemq-shard"))
        {
            SHARD_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default(info);
    }));
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

#[test]
fn random_and_mutated_packets_from_16_connections_at_once() {
    watch_for_shard_panics();
    let seed = env_u64("SURGEMQ_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let secs = env_u64("SURGEMQ_FUZZ_SECS").unwrap_or(25);
    println!("live fuzz: seed {seed} (SURGEMQ_FUZZ_SEED={seed} to replay), {secs} s");

    let broker = Broker::with_config(BrokerConfig {
        shards: 2,
        // Stuck half-connections give their slot back soon.
        connect_timeout: Duration::from_secs(2),
        ..test_config()
    });
    let mut healthy = Healthy::new(&broker);
    healthy.check();

    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let stats = stats.clone();
            let addr = broker.addr;
            let mut rng = Rng::new(seed.wrapping_add(t as u64 * 0x1000_0000_0001));
            let source = IpAddr::from([127, 0, 0, 2 + t as u8]);
            s.spawn(move || {
                while Instant::now() < deadline {
                    fuzz_connection(source, addr, &mut rng, &stats, deadline);
                }
            });
        }
        // The healthy pair keeps working while the fuzzing goes on.
        while Instant::now() < deadline {
            healthy.check();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    println!(
        "{} connections ({} failed to connect), {} items, {} bytes sent, {} received, {} resets in {:?}",
        stats.connections.load(Ordering::Relaxed),
        stats.connect_failures.load(Ordering::Relaxed),
        stats.items.load(Ordering::Relaxed),
        stats.bytes_sent.load(Ordering::Relaxed),
        stats.bytes_received.load(Ordering::Relaxed),
        stats.resets.load(Ordering::Relaxed),
        start.elapsed()
    );
    assert_eq!(
        SHARD_PANICS.load(Ordering::SeqCst),
        0,
        "a shard panicked (seed {seed})"
    );

    // Every shard still serves: on each, a client subscribes, receives from a publisher on the
    // other shard at QoS 1 and 2, unsubscribes and then receives nothing.
    healthy.check();
    for shard in 0..broker.shards {
        let mut sub = broker.connect(&broker.id_on("after-sub", shard));
        let topic = format!("after/{shard}");
        sub.subscribe(1, &[(&topic, 2)]);
        let other = (shard + 1) % broker.shards;
        let mut publisher = broker.connect(&broker.id_on("after-pub", other));
        publisher.publish1(&topic, b"one", false, 1);
        publisher.publish2(&topic, b"two", false, 2);
        assert_eq!(
            sub.publishes_until(b"two")
                .iter()
                .map(|(p, _)| p.payload.to_vec())
                .collect::<Vec<_>>(),
            vec![b"one".to_vec()],
            "shard {shard} after fuzzing (seed {seed})"
        );
        sub.send(&unsubscribe(2, &[&topic]));
        sub.expect_bytes(&[0xb0, 0x02, 0x00, 0x02]);
        publisher.publish1(&topic, b"gone", false, 3);
        sub.expect_nothing();
        sub.disconnect();
    }
    healthy.check();
    drop(healthy);

    let stop = Instant::now();
    let metrics = broker.shutdown();
    let took = stop.elapsed();
    println!("shutdown took {took:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // A shard whose thread died answers with empty counters.
    for (i, m) in metrics.iter().enumerate() {
        assert!(
            m.connections_total > 0 && m.packets_in > 0,
            "shard {i} reported no connections: it died during the run (seed {seed}): {m:?}"
        );
    }
    let rules = protocol_errors_by_rule(&metrics);
    let total: u64 = rules.values().sum();
    let mut top: Vec<_> = rules.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    println!("{total} protocol errors; most frequent:");
    for (rule, n) in top.iter().take(12) {
        println!("  {n:>7}  {rule}");
    }
    assert!(total > 0, "the fuzzing produced no protocol error at all");
    assert_eq!(
        SHARD_PANICS.load(Ordering::SeqCst),
        0,
        "a shard panicked (seed {seed})"
    );
}
