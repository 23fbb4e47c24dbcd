//! Fan-out write path: one QoS 0 message to 1,000 subscribers, each a `Session` with its own
//! `OutputQueue` and loopback TCP socket, as a shard does it: enqueue, `fill`, and the
//! non-blocking write. Two strategies per payload size: `copy` encodes the whole PUBLISH into
//! every subscriber's buffer, `share` encodes only the header and sends the payload from the
//! one shared message (`sendmsg` with two or three slices). Where `share` starts to win is
//! the broker's `SHARE_PAYLOADS_FROM`.
//!
//! Only the sending side is timed: each iteration's bytes are read off the receiving sockets
//! afterwards, untimed. The kernel still copies every payload into every socket (loopback TCP
//! pays for the receive path too); what differs is the copy in user space and the memory it
//! touches. Throughput is reported in deliveries per second.
//!
//! ```text
//! cargo bench --bench fanout
//! ```

use std::hint::black_box;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use surgemq::broker::mesh::{Message, ShardId, SubscriberId};
use surgemq::broker::output::OutputQueue;
use surgemq::broker::session::{Session, SessionLimits};
use surgemq::protocol::{ByteStr, QoS};

const SUBSCRIBERS: usize = 1000;
const SIZES: [usize; 6] = [64, 1024, 2048, 4096, 16 * 1024, 64 * 1024];
/// Socket buffers large enough for one message of the largest size, so no send is partial.
const SOCKET_BUFFER: usize = 256 * 1024;

struct Subscriber {
    session: Session,
    out: OutputQueue,
    tx: TcpStream,
    rx: TcpStream,
}

fn subscribers(share_payloads_from: usize) -> Vec<Subscriber> {
    let limits = Rc::new(SessionLimits {
        max_inflight: 100,
        max_queued_messages: 1000,
        max_queued_bytes: 64 << 20,
        queue_qos0: false,
        share_payloads_from,
        stall_timeout: std::time::Duration::from_secs(10),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (0..SUBSCRIBERS)
        .map(|i| {
            let tx = TcpStream::connect(addr).unwrap();
            let (rx, _) = listener.accept().unwrap();
            for s in [&tx, &rx] {
                let s = socket2::SockRef::from(s);
                s.set_send_buffer_size(SOCKET_BUFFER).unwrap();
                s.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
            }
            tx.set_nonblocking(true).unwrap();
            tx.set_nodelay(true).unwrap();
            rx.set_nonblocking(true).unwrap();
            let id = SubscriberId {
                durable: false,
                shard: ShardId(0),
                slot: i as u32,
                generation: 1,
            };
            let mut session =
                Session::new(ByteStr::from(format!("sub-{i}")), id, true, limits.clone());
            session.attach(1);
            Subscriber {
                session,
                out: OutputQueue::default(),
                tx,
                rx,
            }
        })
        .collect()
}

/// Reads everything the subscribers' sockets hold (untimed).
fn drain(subs: &mut [Subscriber], buf: &mut [u8]) {
    for s in subs {
        loop {
            match s.rx.read(buf) {
                Ok(0) => panic!("sender closed"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_1000");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let mut scratch = vec![0u8; 1 << 20];
    for size in SIZES {
        let message = Arc::new(Message::new(
            ByteStr::from("sensors/building-7/floor-3/room-12/camera"),
            Bytes::from(vec![0x5a; size]),
            QoS::AtMostOnce,
            false,
        ));
        for (strategy, share_from) in [("copy", usize::MAX), ("share", 0)] {
            let mut subs = subscribers(share_from);
            g.bench_function(BenchmarkId::new(strategy, size), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for s in subs.iter_mut() {
                            s.session
                                .enqueue(message.clone(), QoS::AtMostOnce, false)
                                .unwrap();
                            black_box(s.session.fill(&mut s.out, 64 * 1024));
                            s.out.send_nonblocking(s.tx.as_fd()).unwrap();
                        }
                        timed += start.elapsed();
                        drain(&mut subs, &mut scratch);
                    }
                    timed
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
