//! Large payloads survive partial writes: a subscriber that reads nothing while some 24 MiB is
//! queued for it (at QoS 0 and QoS 1), then reads slowly, gets every byte once and in order,
//! with its own PINGREQs and publishes answered in between; and a persistent session whose
//! connection is reset in the middle of a payload gets the messages in flight again, whole,
//! with DUP set. How partial writes are forced: see `large_payloads/mod.rs`.

mod common;
mod large_payloads;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::{BrokerConfig, MetricsSnapshot};

use large_payloads::*;

// ----- 1. partial writes to a subscriber that stalls, then reads slowly ----------------------

/// Payload bytes queued for the stalled subscriber before it reads anything: hundreds of times
/// what the broker's socket send buffer and the client's receive buffer hold together.
const STALLED_BYTES: usize = 24 << 20;
/// Reads of the stalled subscriber, once it starts, before it speeds up: a few hundred bytes
/// each, with a pause, so the broker's writes go out a little at a time. Then it reads as fast
/// as it can, through the same 4 KiB window.
const SLOW_READS: usize = 200;
const SLOW_READ: usize = 257;

/// Message sizes for the stalled subscriber, deterministic: about half small (under 100
/// bytes), some exactly on 4 KiB and 64 KiB boundaries, the rest 4 KiB to 900 KiB.
fn stalled_sizes(total: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut sum = 0;
    let mut i = 0u64;
    while sum < total {
        let r = mix(0x5ca1_ab1e ^ i);
        let x = (r >> 8) as usize;
        let size = match r % 16 {
            0..=6 => x % 100,
            7 => [4095, 4096, 4097, 65535, 65536, 65537][x % 6],
            8..=14 => 4096 + x % (252 * 1024),
            _ => 256 * 1024 + x % (644 * 1024),
        };
        sizes.push(size);
        sum += size;
        i += 1;
    }
    sizes
}

fn dropped(metrics: &[MetricsSnapshot]) -> u64 {
    metrics
        .iter()
        .map(|m| m.dropped_queue_full_qos0 + m.dropped_queue_full_qos12 + m.dropped_offline_qos0)
        .sum()
}

fn stalled_subscriber_run(shards: usize, qos: u8) {
    // Queues large enough that nothing published here is legitimately dropped.
    let broker = Broker::with_config(BrokerConfig {
        shards,
        max_queued_messages: 100_000,
        max_queued_bytes: 1 << 30,
        ..test_config()
    });
    let sub_shard = 1 % shards;
    let topic = format!("large/stalled/{qos}");
    let mut sub = SmallWindowClient::connect(
        &broker,
        &broker.id_on("stalled-sub", sub_shard),
        4096,
        SLOW_READ,
    );
    assert_eq!(sub.subscribe(1, &[(&topic, qos)]), Vec::<Vec<u8>>::new());
    let mut witness = Witness::new(&broker, "stalled", sub_shard);
    let mut publisher = broker.connect(&broker.id_on("stalled-pub", 0));
    let sizes = stalled_sizes(STALLED_BYTES);
    let n = sizes.len();
    assert!(n < 60_000, "packet ids of the publisher must not wrap");

    // Phase 1: the subscriber reads nothing while everything is published, in writes of about
    // 1 MiB. After each write it sends small packets of its own (PINGREQ, and a QoS 1 PUBLISH
    // to a topic nobody reads): their answers are copied into its write buffer between the
    // large payloads owed to it, while the socket is full.
    let mut batch = Vec::new();
    let mut pings = 0usize;
    let mut own_publishes = 0u16;
    for (i, &size) in sizes.iter().enumerate() {
        let id = if qos == 0 { 0 } else { i as u16 + 1 };
        batch.extend(publish(&topic, &pattern(i, size), qos, false, false, id));
        if batch.len() >= 1 << 20 || i + 1 == n {
            publisher.send(&batch);
            batch.clear();
            own_publishes += 1;
            let mut own = PINGREQ.to_vec();
            own.extend(publish(
                "large/nobody",
                b"own",
                1,
                false,
                false,
                own_publishes,
            ));
            sub.send(&own);
            pings += 1;
        }
    }
    if qos == 1 {
        let acks: Vec<u8> = (1..=n as u16).flat_map(puback).collect();
        publisher.expect_bytes(&acks);
    }
    // Every message is queued for the subscriber (or in flight to it): tens of MiB, of which
    // the sockets hold a few at most, so the broker's writes have long met a full socket.
    witness.settle(&mut publisher);

    // Phase 2: the subscriber reads, slowly at first, then at full speed; every message must
    // come exactly once, in order, byte for byte, between the answers to its own packets.
    let mut next = 0;
    let mut pings_left = pings;
    let mut next_own_ack = 1u16;
    let mut inflight = HashSet::new();
    let mut reads = 0usize;
    loop {
        while let Some(frame) = sub.take_frame() {
            match frame[0] >> 4 {
                3 => {
                    assert!(next < n, "a PUBLISH after all {n}: {}", head(&frame));
                    let id = if qos == 0 { 0 } else { packet_id_of(&frame) };
                    if qos == 1 {
                        assert_ne!(id, 0, "message {next} with packet id 0");
                        assert!(
                            inflight.insert(id),
                            "message {next} has packet id {id}, still in flight"
                        );
                    }
                    let want = publish(&topic, &pattern(next, sizes[next]), qos, false, false, id);
                    check_frame(&frame, &want, || {
                        format!(
                            "stalled subscriber (QoS {qos}, {shards} shards, after {reads} \
                             reads): message {next} of {n} ({} byte payload)",
                            sizes[next]
                        )
                    });
                    if qos == 1 {
                        sub.send(&puback(id));
                        inflight.remove(&id);
                    }
                    next += 1;
                }
                4 => {
                    assert_eq!(
                        frame,
                        puback(next_own_ack),
                        "PUBACKs of the subscriber's own publishes, in order"
                    );
                    assert!(next_own_ack <= own_publishes, "an extra PUBACK");
                    next_own_ack += 1;
                }
                13 => {
                    assert_eq!(frame, PINGRESP);
                    assert!(pings_left > 0, "more PINGRESPs than PINGREQs");
                    pings_left -= 1;
                }
                _ => panic!("expected message {next} of {n}, got {}", head(&frame)),
            }
        }
        if next == n && pings_left == 0 && next_own_ack > own_publishes {
            break;
        }
        let max = if reads < SLOW_READS {
            std::thread::sleep(Duration::from_millis(1));
            SLOW_READ
        } else {
            64 * 1024
        };
        assert!(
            sub.read_once(max, Instant::now() + LIVENESS),
            "stalled subscriber (QoS {qos}, {shards} shards): nothing for {LIVENESS:?} at \
             message {next} of {n}, {pings_left} PINGRESPs and PUBACK {next_own_ack} owed"
        );
        reads += 1;
    }
    // Nothing more: a PINGREQ is answered with the PINGRESP alone.
    sub.send(&PINGREQ);
    assert_eq!(
        sub.frame(),
        PINGRESP,
        "only a PINGRESP after the last message"
    );
    assert!(
        sub.buf.is_empty(),
        "bytes after the PINGRESP: {}",
        head(&sub.buf)
    );
    drop(sub);
    let metrics = broker.shutdown();
    assert_eq!(dropped(&metrics), 0, "messages dropped: {metrics:?}");
}

/// QoS 0: about 24 MiB of mixed payloads queued for a subscriber that does not read, then read
/// a few hundred bytes at a time: every message exactly once, in order, byte-exact, and
/// every PINGRESP and PUBACK it asked for meanwhile, whole.
#[test]
fn stalled_subscriber_gets_every_qos0_byte_once_in_order_after_partial_writes() {
    with_shards(|shards| stalled_subscriber_run(shards, 0));
}

/// The same at QoS 1: the in-flight window fills while the socket is full, and each PUBACK
/// of the subscriber lets the broker add another message behind the partial write.
#[test]
fn stalled_subscriber_gets_every_qos1_byte_once_in_order_after_partial_writes() {
    with_shards(|shards| stalled_subscriber_run(shards, 1));
}

// ----- 2. a session resumed after its connection died in the middle of a payload ---------------

fn resumed_run(shards: usize) {
    let broker = Broker::start(shards);
    let topic = "large/resumed";
    let id = broker.id_on("resumed-sub", 1 % shards);
    let persistent = ConnectBuilder::new(&id).clean(false);
    let mut sub = SmallWindowClient::connect_with(
        &broker,
        &persistent,
        &[0x20, 0x02, 0x00, 0x00],
        4096,
        4096,
    );
    assert_eq!(sub.subscribe(1, &[(topic, 1)]), Vec::<Vec<u8>>::new());
    // About 2.5 MiB: far more than the broker's socket send buffer holds, so that the reset
    // comes while the broker still has payloads to write.
    let sizes = [
        100 * 1024,
        10,
        64 * 1024 + 1,
        4096,
        5,
        900 * 1024,
        4095,
        300 * 1024,
        1,
        8 * 1024,
        200 * 1024,
        3,
        400 * 1024,
        4097,
        500 * 1024,
        20,
    ];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(500 + i, len))
        .collect();
    let mut publisher = broker.connect(&broker.id_on("resumed-pub", 0));
    publish_round(&mut publisher, topic, &payloads, 1);

    // The subscriber reads the first four messages, acknowledges none, and its connection dies
    // (RST) with the broker in the middle of writing the rest to a full socket.
    let mut first_ids = Vec::new();
    for (i, payload) in payloads.iter().enumerate().take(4) {
        let frame = sub.frame();
        let pid = packet_id_of(&frame);
        assert_ne!(pid, 0);
        check_frame(
            &frame,
            &publish(topic, payload, 1, false, false, pid),
            || format!("first delivery of message {i}"),
        );
        first_ids.push(pid);
    }
    socket2::SockRef::from(&sub.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(sub);

    // Resumed (Session Present = 1): the messages in flight come again first, with DUP = 1
    // and their original packet ids (MQTT-4.4.0-1), then the ones still queued, DUP = 0; all of
    // them whole, in order, once.
    let mut sub = SmallWindowClient::connect_with(
        &broker,
        &persistent,
        &[0x20, 0x02, 0x01, 0x00],
        4096,
        1000,
    );
    let mut dup_seen = true;
    let mut ids = HashSet::new();
    for (i, payload) in payloads.iter().enumerate() {
        let frame = sub.frame();
        let pid = packet_id_of(&frame);
        assert_ne!(pid, 0, "message {i} with packet id 0");
        assert!(ids.insert(pid), "message {i}: packet id {pid} used twice");
        let dup = frame[0] & 0x08 != 0;
        assert!(
            dup_seen || !dup,
            "message {i}: DUP = 1 after a message with DUP = 0"
        );
        dup_seen = dup;
        if let Some(&first) = first_ids.get(i) {
            assert!(
                dup,
                "message {i} was sent before the reconnect: DUP must be 1"
            );
            assert_eq!(pid, first, "message {i}: the original packet id");
        }
        check_frame(&frame, &publish(topic, payload, 1, false, dup, pid), || {
            format!("message {i} after the reconnect")
        });
        sub.send(&puback(pid));
    }
    sub.send(&PINGREQ);
    assert_eq!(
        sub.frame(),
        PINGRESP,
        "only a PINGRESP after the last message"
    );
    sub.quiet();
}

/// A persistent session whose connection is reset while large QoS 1 payloads are half
/// written: on resuming, the messages in flight come again whole with DUP = 1 and their
/// original packet ids, then the queued ones, each exactly once, in order.
#[test]
fn resumed_session_resends_large_payloads_whole_after_a_reset_mid_write() {
    with_shards(resumed_run);
}
