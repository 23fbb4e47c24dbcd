//! Group commit of the store's log (`surgemq::store::LogWriter`) on this machine's disk: a
//! batch of records appended at once, then awaited until durable (write + fdatasync). One
//! record per batch measures the sync latency; larger batches show how far one sync carries,
//! which is what bounds acknowledged QoS 1/2 messages per second with persistence.
//!
//! `store_frame_encode`: framing one record (its checksum included), per record.
//!
//! Run: `cargo bench --bench store` (the log goes to `$TMPDIR`, or `SURGEMQ_BENCH_DIR` to
//! measure another disk). Throughput is in records per second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::LocalExecutorBuilder;
use surgemq::store::frame::encode_frame;
use surgemq::store::LogWriter;

/// A QoS 1 message record's size, about: a topic, a 64-byte payload and a few ids.
const RECORD: usize = 100;

fn bench_dir() -> PathBuf {
    std::env::var_os("SURGEMQ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Appends `iters` batches of `batch` records, each awaited until durable; the time taken.
fn run(batch: usize, iters: u64) -> Duration {
    let path = bench_dir().join(format!("surgemq-bench-store-{}", std::process::id()));
    let p = path.clone();
    let elapsed = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = LogWriter::open(&p, 0).await.expect("log opens");
            let task = glommio::spawn_local(log.clone().run());
            let body = vec![0x5au8; RECORD];
            let start = Instant::now();
            for _ in 0..iters {
                let mut last = 0;
                for _ in 0..batch {
                    last = log.append(1, &body);
                }
                log.durable(last).await;
            }
            let elapsed = start.elapsed();
            // Ends once all is durable and no zeros are being written ahead of the log.
            log.retire();
            task.await;
            elapsed
        })
        .expect("executor starts")
        .join()
        .expect("executor ends");
    let _ = std::fs::remove_file(&path);
    elapsed
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_group_commit");
    group.sample_size(10);
    for batch in [1usize, 64, 1024, 8192] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| run(batch, iters))
        });
    }
    group.finish();
}

/// One record framed (length, CRC-32C, kind, body) into the pending buffer, as every journaled
/// QoS 1/2 delivery, send and acknowledgement is: a short body (a Sent or Completed record) and
/// a QoS 1 message's.
fn frame_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_frame_encode");
    for size in [20usize, 120] {
        let body = vec![0x5au8; size];
        let mut out = bytes::BytesMut::with_capacity(1 << 20);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                if out.len() > (1 << 20) - 256 {
                    out.clear();
                }
                encode_frame(&mut out, 1, std::hint::black_box(body));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit, frame_encode);
criterion_main!(benches);
