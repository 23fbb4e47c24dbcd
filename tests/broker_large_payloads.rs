//! Large PUBLISH payloads reach every subscriber byte for byte, exactly once and in order,
//! between the small packets around them: a stream of mixed sizes at QoS 0, 1 and 2 to several
//! subscribers, large retained messages (also replaced or cleared while still queued), and
//! overlapping subscriptions. Partial writes, the shared-payload bookkeeping and how they are
//! forced: see `large_payloads/mod.rs`; subscribers that stall for long: `broker_partial_writes.rs`.

mod common;
mod large_payloads;

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use bytes::BytesMut;
use common::*;
use surgemq::protocol::{encode_publish, QoS};

use large_payloads::*;

// ----- 1. mixed sizes in one stream, to several subscribers, at each QoS ----------------------

/// The sizes of the mixed-size test: small and large alternate, large ones also follow each
/// other, and sizes sit on both sides of 4 KiB, 16 KiB and 64 KiB.
const MIXED_SIZES: &[usize] = &[
    10,
    5 * 1024,
    20,
    64 * 1024,
    1,
    4095,
    4096,
    4097,
    200 * 1024,
    0,
    2,
    16 * 1024,
    16 * 1024 + 1,
    64 * 1024 - 1,
    64 * 1024 + 1,
    3,
    900 * 1024,
    100 * 1024,
    100 * 1024 + 7,
    7,
    8 * 1024,
    0,
    1,
    300 * 1024,
    5,
];

/// The mixed sizes make up a round this many times over, with different payloads (about
/// 1.9 MiB each time), published in a single write: more partial writes, ending at more
/// different places.
const MIXED_REPEAT: usize = 2;

/// A subscriber of the mixed-size test: which client, whether it sends PINGREQs while
/// messages arrive (their PINGRESPs are then copied into the write buffer between payloads),
/// and whether it waits for the whole round to be queued for it before it reads.
struct MixedSub {
    name: String,
    peer: Box<dyn Peer>,
    pings: bool,
    waits: bool,
}

/// Opened once every message of a round is queued for every subscriber.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    #[track_caller]
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (_open, timeout) = self
            .opened
            .wait_timeout_while(open, LIVENESS, |open| !*open)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "the round was not published within {LIVENESS:?}"
        );
    }
}

/// Receives one round: every PUBLISH must be exactly the next one expected (for QoS 1/2 with
/// the broker's packet id, non-zero and not in use by another message in flight), nothing may
/// be missing, repeated or extra. Every other message is acknowledged at once, the others only
/// at the end of the round, so several are in flight together; QoS 2 flows are completed.
/// Ends with a PINGREQ round trip once every flow is complete. A subscriber that `waits` reads
/// nothing before `gate` opens.
fn receive_round(
    sub: &mut MixedSub,
    gate: &Gate,
    topic: &str,
    payloads: &[Vec<u8>],
    qos: u8,
    round: usize,
) {
    let who = format!("{} (round {round}, QoS {qos})", sub.name);
    if sub.waits {
        gate.wait();
    }
    let peer = sub.peer.as_mut();
    let mut next = 0;
    // Packet ids of messages in flight from the broker: sent, and not yet PUBACKed (QoS 1) or
    // PUBCOMPed (QoS 2).
    let mut inflight = HashSet::new();
    // QoS 2 ids PUBRECed, waiting for the broker's PUBREL.
    let mut released = HashSet::new();
    let mut held = Vec::new();
    let mut pings_out = 0usize;
    let mut finished = false;
    loop {
        if next == payloads.len() && !finished {
            // The whole round arrived: the held acknowledgements, then a PINGREQ that comes
            // back once the broker handled them.
            let mut acks = Vec::new();
            for id in held.drain(..) {
                if qos == 1 {
                    acks.extend(puback(id));
                    inflight.remove(&id);
                } else {
                    acks.extend(pubrec(id));
                    released.insert(id);
                }
            }
            acks.extend(PINGREQ);
            pings_out += 1;
            peer.send_bytes(&acks);
            finished = true;
        }
        if finished && pings_out == 0 && released.is_empty() {
            assert!(
                inflight.is_empty(),
                "{who}: ids still in flight {inflight:?}"
            );
            return;
        }
        let frame = peer.next();
        match frame[0] >> 4 {
            3 => {
                assert!(
                    next < payloads.len(),
                    "{who}: a PUBLISH after all {} of the round: {}",
                    payloads.len(),
                    head(&frame)
                );
                let id = if qos == 0 { 0 } else { packet_id_of(&frame) };
                if qos > 0 {
                    assert_ne!(id, 0, "{who}: message {next} with packet id 0");
                    assert!(
                        inflight.insert(id),
                        "{who}: message {next} has packet id {id}, still in flight \
                         ({inflight:?})"
                    );
                }
                let want = publish(topic, &payloads[next], qos, false, false, id);
                check_frame(&frame, &want, || {
                    format!(
                        "{who}: message {next} of {} ({} byte payload)",
                        payloads.len(),
                        payloads[next].len()
                    )
                });
                match qos {
                    0 => {}
                    _ if next % 2 == 0 => held.push(id),
                    1 => {
                        peer.send_bytes(&puback(id));
                        inflight.remove(&id);
                    }
                    _ => {
                        peer.send_bytes(&pubrec(id));
                        released.insert(id);
                    }
                }
                if sub.pings && next % 3 == 0 {
                    peer.send_bytes(&PINGREQ);
                    pings_out += 1;
                }
                next += 1;
            }
            6 => {
                assert_eq!(frame.len(), 4, "{who}: PUBREL {}", head(&frame));
                let id = u16::from_be_bytes([frame[2], frame[3]]);
                assert_eq!(frame, pubrel(id), "{who}: PUBREL bytes");
                assert!(
                    released.remove(&id),
                    "{who}: PUBREL {id} for no PUBREC of ours"
                );
                inflight.remove(&id);
                peer.send_bytes(&pubcomp(id));
            }
            13 => {
                assert_eq!(frame, PINGRESP, "{who}: PINGRESP bytes");
                assert!(pings_out > 0, "{who}: a PINGRESP nobody asked for");
                pings_out -= 1;
            }
            _ => panic!(
                "{who}: expected message {next} (or PUBREL/PINGRESP), got {}",
                head(&frame)
            ),
        }
    }
}

fn mixed_sizes_run(shards: usize) {
    let broker = Broker::start(shards);
    let topic = "large/mixed";
    let near = 0;
    let far = 1 % shards;
    let mut subs = Vec::new();
    // Subscribed at QoS 2, so each message arrives at the QoS it was published with.
    // Default sockets that read as fast as they can.
    for (i, shard, pings) in [(0, far, true), (1, far, false), (2, near, false)] {
        let name = format!("raw-sub-{i}");
        let mut c = broker.connect(&broker.id_on(&name, shard));
        c.subscribe(1, &[(topic, 2)]);
        subs.push(MixedSub {
            name,
            peer: Box::new(c),
            pings,
            waits: false,
        });
    }
    // Small windows, reads of sizes that never line up with a packet, and a late start: the
    // broker's writes to these are partial.
    for (i, shard, rcvbuf, chunk) in [(3, far, 4096, 1000), (4, near, 16384, 7919)] {
        let name = format!("small-window-sub-{i}");
        let mut c = SmallWindowClient::connect(&broker, &broker.id_on(&name, shard), rcvbuf, chunk);
        assert_eq!(c.subscribe(1, &[(topic, 2)]), Vec::<Vec<u8>>::new());
        subs.push(MixedSub {
            name,
            peer: Box::new(c),
            pings: true,
            waits: true,
        });
    }
    let mut witnesses: Vec<Witness> = (0..shards)
        .map(|shard| Witness::new(&broker, &format!("mixed-{shard}"), shard))
        .collect();
    let mut publisher = broker.connect(&broker.id_on("mixed-pub", near));
    for (round, qos) in [0u8, 1, 2].into_iter().enumerate() {
        // Payloads differ from round to round: a leftover of one round cannot pass in the next.
        let payloads: Vec<Vec<u8>> = MIXED_SIZES
            .iter()
            .cycle()
            .take(MIXED_SIZES.len() * MIXED_REPEAT)
            .enumerate()
            .map(|(i, &len)| pattern(round * 1000 + i, len))
            .collect();
        if round == 0 {
            // The test's frame builder agrees with the crate's encoder.
            for (i, payload) in payloads.iter().enumerate() {
                let mut encoded = BytesMut::new();
                encode_publish(
                    &mut encoded,
                    topic,
                    payload,
                    QoS::ExactlyOnce,
                    false,
                    false,
                    9,
                )
                .unwrap();
                check_frame(
                    &encoded,
                    &publish(topic, payload, 2, false, false, 9),
                    || format!("encode_publish of message {i}"),
                );
            }
        }
        let payloads = &payloads;
        let gate = &Gate::default();
        std::thread::scope(|s| {
            let readers: Vec<_> = subs
                .iter_mut()
                .map(|sub| s.spawn(move || receive_round(sub, gate, topic, payloads, qos, round)))
                .collect();
            publish_round(&mut publisher, topic, payloads, qos);
            // Every shard has queued the whole round for its subscribers.
            for witness in &mut witnesses {
                witness.settle(&mut publisher);
            }
            gate.open();
            for reader in readers {
                if let Err(panic) = reader.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
    }
    // Nothing after the last round: no late duplicate, no stray bytes.
    std::thread::scope(|s| {
        for sub in subs.iter_mut() {
            s.spawn(move || sub.peer.expect_quiet());
        }
    });
}

/// Mixed small and large payloads in one stream, at QoS 0, 1 and 2, to five subscribers on
/// both shards (three with default sockets, two with small windows and odd read sizes, some
/// sending PINGREQs meanwhile): each gets every frame exactly, in publish order.
#[test]
fn mixed_sizes_reach_every_subscriber_byte_exact_in_order_at_each_qos() {
    with_shards(mixed_sizes_run);
}

// ----- 2. retained and overlapping subscriptions ----------------------------------------------

/// The PUBLISH frames in `frames`, matched with `want` (topic, payload, QoS, retain) in any
/// order; QoS 1 ones are acknowledged. Each expected frame must be matched exactly once.
#[track_caller]
fn check_unordered(
    c: &mut dyn Peer,
    frames: &[Vec<u8>],
    want: &[(&str, &[u8], u8, bool)],
    what: &str,
) {
    assert_eq!(frames.len(), want.len(), "{what}: number of PUBLISHes");
    let mut matched = vec![false; want.len()];
    for frame in frames {
        let id = packet_id_of(frame);
        let expected = |i: usize| {
            let (t, p, q, r) = want[i];
            publish(t, p, q, r, false, if q == 0 { 0 } else { id })
        };
        let found = (0..want.len()).find(|&i| !matched[i] && *frame == expected(i));
        let Some(i) = found else {
            // Described against an expected frame of the same length and header byte, if any.
            if let Some(i) = (0..want.len()).find(|&i| {
                let e = expected(i);
                !matched[i] && e.len() == frame.len() && e[0] == frame[0]
            }) {
                check_frame(frame, &expected(i), || format!("{what}: frame {i}"));
            }
            panic!(
                "{what}: a frame that is none of those expected (or one twice): {}",
                head(frame)
            );
        };
        matched[i] = true;
        if want[i].2 == 1 {
            assert_ne!(id, 0, "{what}: packet id 0");
            c.send_bytes(&puback(id));
        }
    }
}

fn retained_run(shards: usize) {
    let broker = Broker::start(shards);
    let far = 1 % shards;
    let mut publisher = broker.connect(&broker.id_on("retained-pub", 0));
    // One retained topic stored on the publisher's shard, one on the other.
    let far_topic = topic_on_shard("large/ret/far", far, shards);
    let near_topic = topic_on_shard("large/ret/near", 0, shards);
    let far_payload = pattern(1, 100 * 1024);
    let near_payload = pattern(2, 300 * 1024 + 3);
    publisher.publish1(&far_topic, &far_payload, true, 1);
    publisher.publish1(&near_topic, &near_payload, true, 2);
    // Both owner shards have stored them.
    for shard in 0..shards {
        Witness::new(&broker, &format!("retained-{shard}"), shard).settle(&mut publisher);
    }

    // A new subscriber to the exact topic gets the 100 KiB retained message with RETAIN = 1,
    // byte-exact, then a live small message with RETAIN = 0.
    let mut exact = broker.connect(&broker.id_on("retained-exact", 0));
    let frames = exact.subscribe_expecting(1, &[(&far_topic, 0)], 1);
    check_frame(
        &frames[0],
        &qos0_delivery(&far_topic, &far_payload, true),
        || "retained 100 KiB to a new QoS 0 subscriber".into(),
    );
    publisher.publish0(&far_topic, b"live after retained", false);
    exact.expect_bytes(&qos0_delivery(&far_topic, b"live after retained", false));

    // Through a wildcard at QoS 1: both retained messages (any order: they are stored on
    // different shards), QoS 1 with RETAIN = 1, then a live one.
    let mut wild = broker.connect(&broker.id_on("retained-wild", far));
    let frames = wild.subscribe_expecting(1, &[("large/ret/#", 1)], 2);
    check_unordered(
        &mut wild,
        &frames,
        &[
            (far_topic.as_str(), far_payload.as_slice(), 1, true),
            (near_topic.as_str(), near_payload.as_slice(), 1, true),
        ],
        "retained through a wildcard",
    );
    publisher.publish1(&near_topic, b"live", false, 3);
    let (m, frame) = wild.next_publish();
    assert_eq!(
        frame,
        publish(&near_topic, b"live", 1, false, false, m.packet_id)
    );
    wild.ack(&m);
    wild.ping();

    // Overlapping filters in one SUBSCRIBE: handled as one SUBSCRIBE per filter (MQTT-3.8.4-4),
    // each new subscription gets the matching retained messages (MQTT-3.3.1-6), so the same
    // shared 100 KiB payload goes out twice in one stream, at each filter's QoS.
    // Through a small window: the broker's writes of the copies are partial.
    let overlap_id = broker.id_on("retained-overlap", far);
    let mut overlap = SmallWindowClient::connect(&broker, &overlap_id, 4096, 1000);
    let mut frames = overlap.subscribe(1, &[("large/ret/#", 1), (&far_topic, 0)]);
    while frames.len() < 3 {
        frames.push(overlap.frame());
    }
    check_unordered(
        &mut overlap,
        &frames,
        &[
            (far_topic.as_str(), far_payload.as_slice(), 1, true),
            (near_topic.as_str(), near_payload.as_slice(), 1, true),
            (far_topic.as_str(), far_payload.as_slice(), 0, true),
        ],
        "retained through overlapping filters",
    );
    overlap.send(&PINGREQ);
    assert_eq!(
        overlap.frame(),
        PINGRESP,
        "nothing more after the retained copies"
    );
    // A live large message reaches it once, at the highest granted QoS (MQTT-3.3.5-1), and the
    // small one published right behind it (one write) follows it.
    let live_large = pattern(3, 200 * 1024 + 1);
    let mut both = publish(&far_topic, &live_large, 2, false, false, 4);
    both.extend(publish(&far_topic, b"right behind", 0, false, false, 0));
    publisher.send(&both);
    publisher.expect_bytes(&pubrec(4));
    publisher.send(&pubrel(4));
    publisher.expect_bytes(&pubcomp(4));
    let frame = overlap.frame();
    let id = packet_id_of(&frame);
    assert_ne!(id, 0);
    check_frame(
        &frame,
        &publish(&far_topic, &live_large, 1, false, false, id),
        || "live 200 KiB to overlapping subscriptions".into(),
    );
    overlap.send(&puback(id));
    let frame = overlap.frame();
    assert_eq!(frame, qos0_delivery(&far_topic, b"right behind", false));
    overlap.send(&PINGREQ);
    assert_eq!(overlap.frame(), PINGRESP, "one copy of each live message");
    // The other subscribers of the topic got the same two, whole.
    let frame = wild.next_frame();
    let id = packet_id_of(&frame);
    assert_ne!(id, 0);
    check_frame(
        &frame,
        &publish(&far_topic, &live_large, 1, false, false, id),
        || "live 200 KiB through a wildcard".into(),
    );
    wild.send(&puback(id));
    wild.expect_bytes(&qos0_delivery(&far_topic, b"right behind", false));
    wild.ping();
    exact.expect_bytes(&qos0_delivery(&far_topic, &live_large, false));
    exact.expect_bytes(&qos0_delivery(&far_topic, b"right behind", false));
    exact.ping();
}

/// A 100 KiB (and a 300 KiB) retained message reaches new subscribers with RETAIN = 1
/// byte-exact, before the live messages that follow; overlapping filters get one retained
/// copy per filter and one live copy per message.
#[test]
fn large_retained_messages_reach_new_subscribers_byte_exact() {
    with_shards(retained_run);
}

/// Retained messages of the replaced-while-queued test, and the size of each: together far
/// more than the broker's socket send buffer holds, so most of them wait behind a full socket.
const REPLACED_TOPICS: usize = 8;
const REPLACED_SIZE: usize = 300 * 1024;

fn retained_replaced_while_queued_run(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = broker.connect(&broker.id_on("replaced-pub", 0));
    // Retained topics stored on every shard.
    let topics: Vec<String> = (0..REPLACED_TOPICS)
        .map(|i| topic_on_shard(&format!("large/replaced/{i}"), i % shards, shards))
        .collect();
    let old: Vec<Vec<u8>> = (0..REPLACED_TOPICS)
        .map(|i| pattern(10 + i, REPLACED_SIZE + i))
        .collect();
    for (i, topic) in topics.iter().enumerate() {
        publisher.publish1(topic, &old[i], true, i as u16 + 1);
    }
    let mut witnesses: Vec<Witness> = (0..shards)
        .map(|shard| Witness::new(&broker, &format!("replaced-{shard}"), shard))
        .collect();
    for witness in &mut witnesses {
        witness.settle(&mut publisher);
    }

    // The subscriber reads as far as the SUBACK, and then nothing: the retained messages are
    // queued for it, some in the kernel, the rest waiting in the broker behind a full socket.
    let sub_id = broker.id_on("replaced-sub", 1 % shards);
    let mut sub = SmallWindowClient::connect(&broker, &sub_id, 4096, 64);
    let mut frames = sub.subscribe(1, &[("large/replaced/#", 0)]);
    // Meanwhile every retained message is replaced, then cleared, and other large messages
    // come and go, so that memory an old payload was copied from or pointed into is reused.
    let new: Vec<Vec<u8>> = (0..REPLACED_TOPICS)
        .map(|i| pattern(20 + i, 150 * 1024 + i))
        .collect();
    for (i, topic) in topics.iter().enumerate() {
        publisher.publish1(topic, &new[i], true, 100 + i as u16);
        publisher.publish1(topic, b"", true, 200 + i as u16);
    }
    for i in 0..16 {
        publisher.publish0("large/churn", &pattern(100 + i, 256 * 1024), false);
    }
    for witness in &mut witnesses {
        witness.settle(&mut publisher);
    }

    // First the old retained messages, whole, with RETAIN = 1 (in any order: they come from
    // different shards), then the live replacements and clearings in publish order, RETAIN = 0.
    sub.chunk = 64 * 1024;
    while frames.len() < 3 * REPLACED_TOPICS {
        frames.push(sub.frame());
    }
    let (retained, live) = frames.split_at(REPLACED_TOPICS);
    let mut seen = [false; REPLACED_TOPICS];
    for frame in retained {
        let Some(i) = (0..REPLACED_TOPICS)
            .find(|&i| !seen[i] && *frame == qos0_delivery(&topics[i], &old[i], true))
        else {
            let expected = |i: usize| qos0_delivery(&topics[i], &old[i], true);
            if let Some(i) = (0..REPLACED_TOPICS).find(|&i| *frame == expected(i)) {
                panic!("old retained message {i} came twice");
            }
            // None of them: described against the one of the same length, if any.
            let i = (0..REPLACED_TOPICS)
                .find(|&i| frame.len() == expected(i).len())
                .unwrap_or(0);
            check_frame(frame, &expected(i), || {
                format!("old retained message {i}, replaced while queued")
            });
            unreachable!("check_frame panics on a difference");
        };
        seen[i] = true;
    }
    for (i, topic) in topics.iter().enumerate() {
        check_frame(&live[2 * i], &qos0_delivery(topic, &new[i], false), || {
            format!("the live 150 KiB that replaced retained message {i}")
        });
        check_frame(&live[2 * i + 1], &qos0_delivery(topic, b"", false), || {
            format!("the live empty message that cleared retained message {i}")
        });
    }
    sub.send(&PINGREQ);
    assert_eq!(sub.frame(), PINGRESP);
    sub.quiet();
}

/// Large retained messages queued for a subscriber whose socket is full stay intact while the
/// retained store replaces and clears them and other large messages churn memory.
#[test]
fn large_retained_payloads_stay_intact_when_replaced_while_queued() {
    with_shards(retained_replaced_while_queued_run);
}
