//! Codec throughput: decode and encode of QoS 0 PUBLISH packets with a 64-byte and a 1 KiB
//! payload, the broker's per-message work. Each iteration handles a batch of 1000 packets:
//! decode splits them one by one off a buffer holding all of them (the split/freeze path a
//! connection's read buffer takes), encode appends them to a reused write buffer, both through
//! `Packet::encode` and through the broker's slice-based `encode_publish`. Results are reported
//! twice, as packets/s (`codec_packets`) and as bytes/s (`codec_bytes`).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use surgemq::protocol::{decode, encode_publish, ByteStr, Packet, ProtocolLevel, Publish, QoS};

const BATCH: usize = 1000;
const MAX_PACKET_SIZE: usize = 1 << 20;

fn publish(payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from_static("sensors/building-7/floor-3/room-12/temperature"),
        packet_id: 0,
        payload: Bytes::from(vec![0x5a; payload_len]),
        properties: None,
    })
}

fn codec(c: &mut Criterion) {
    // The same PUBLISH (no properties) as 3.1.1 and as MQTT 5 (one more byte: the empty
    // property block): what MQTT 5 costs the codec.
    for (size_name, payload_len, level) in [
        ("64B", 64, ProtocolLevel::V311),
        ("1KiB", 1024, ProtocolLevel::V311),
        ("64B-v5", 64, ProtocolLevel::V5),
        ("1KiB-v5", 1024, ProtocolLevel::V5),
    ] {
        let packet = publish(payload_len);
        let Packet::Publish(p) = &packet else {
            unreachable!()
        };
        let mut stream = BytesMut::with_capacity(packet.encoded_len(level) * BATCH);
        for _ in 0..BATCH {
            packet.encode(&mut stream, level).unwrap();
        }
        let stream_len = stream.len();

        for (group, throughput) in [
            ("codec_packets", Throughput::Elements(BATCH as u64)),
            ("codec_bytes", Throughput::Bytes(stream_len as u64)),
        ] {
            let mut g = c.benchmark_group(group);
            g.throughput(throughput);

            g.bench_function(BenchmarkId::new("decode", size_name), |b| {
                b.iter_batched(
                    || stream.clone(),
                    |mut buf| {
                        while let Some(p) = decode(&mut buf, MAX_PACKET_SIZE, level).unwrap() {
                            black_box(p);
                        }
                        buf
                    },
                    BatchSize::LargeInput,
                )
            });

            g.bench_function(BenchmarkId::new("encode", size_name), |b| {
                let mut dst = BytesMut::with_capacity(stream_len);
                b.iter(|| {
                    dst.clear();
                    for _ in 0..BATCH {
                        black_box(&packet).encode(&mut dst, level).unwrap();
                    }
                    black_box(dst.len())
                })
            });

            g.bench_function(BenchmarkId::new("encode_publish", size_name), |b| {
                let topic: &str = &p.topic;
                let payload: &[u8] = &p.payload;
                let mut dst = BytesMut::with_capacity(stream_len);
                b.iter(|| {
                    dst.clear();
                    for _ in 0..BATCH {
                        encode_publish(
                            &mut dst,
                            black_box(topic),
                            black_box(payload),
                            QoS::AtMostOnce,
                            false,
                            false,
                            0,
                        )
                        .unwrap();
                    }
                    black_box(dst.len())
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
