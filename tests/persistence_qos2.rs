//! QoS 2 with `--data-dir` is exactly once across a crash when the publisher's home shard and
//! the subscriber's are different shards, each with its own append-only log.
//!
//! A persistent publisher's shard keeps the packet ids of its incoming QoS 2 PUBLISHes
//! (between PUBLISH and PUBREL) in its log, so a PUBLISH re-sent with DUP after a restart is
//! not forwarded twice (MQTT-4.3.3); the subscriber's shard keeps the queued copy. The two
//! must not disagree after a crash: a message forwarded while the publisher's record of its id
//! is not durable comes again when the publisher re-sends it (a duplicate), and an id
//! remembered while the queued copy is not durable stops the re-sent PUBLISH (a loss, although
//! the publisher had PUBREC and PUBCOMP for it).
//!
//! Deterministic: the storage layer's fault hook makes one shard's log commits fail as on a
//! full disk (nothing it appends becomes durable) while the other shard's log works. A crash
//! at that moment is taken as the data directory's bytes (a copy while the broker runs: what
//! SIGKILL leaves, as the log is written with direct I/O and a failing commit writes nothing)
//! and a new broker is started on the copy, without the fault. Both clients are persistent
//! sessions (CleanSession 0) and act as real QoS 2 clients: the publisher re-sends its
//! PUBLISH with DUP after the restart, the subscriber completes every flow and counts a
//! message once per packet id it has not released yet (MQTT-4.3.3, method B). A PUBCOMP,
//! which frees the publisher's packet id, waits for that to be durable as well.

mod common;
mod fault_util;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fault_util::{Dirs, FaultyBroker};
use surgemq::protocol::{Ack, Packet, QoS};

/// How long nothing must arrive for what the broker must not send (a PUBREC before the
/// publish is durable, a delivery before it may be forwarded): any broker would have sent it
/// by then.
const MUST_WAIT: Duration = Duration::from_millis(800);
/// How long a packet the broker owes may take, on a slow, busy machine.
const MUST_COME: Duration = Duration::from_secs(20);
const SHARDS: usize = 2;
/// The publisher's home shard.
const P_SHARD: usize = 0;
/// The subscriber's home shard.
const Q_SHARD: usize = 1;
const TOPIC: &str = "qos2/t";
/// What the publisher sends last after the restart: the subscriber has everything before it
/// once it has this (messages from one shard to another keep their order).
const END: &[u8] = b"end";

// ----- brokers --------------------------------------------------------------------------------

/// A broker on `data`; with `fault`, `shard`'s log commits fail while the counter is above 0.
fn start(data: &Path, fault: Option<(Arc<AtomicU32>, usize)>) -> Broker {
    let (full_disk_fault, full_disk_fault_shard) = match fault {
        Some((full, shard)) => (Some(full), Some(shard)),
        None => (None, None),
    };
    Broker::with_config(surgemq::broker::BrokerConfig {
        shards: SHARDS,
        data_dir: Some(data.to_path_buf()),
        full_disk_fault,
        full_disk_fault_shard,
        ..test_config()
    })
}

/// A test's directory, its data directory, a broker on it whose shard `full_shard` can be
/// given a full disk, and the client ids of Q and P (at home on [`Q_SHARD`], [`P_SHARD`]).
fn setup(name: &str, full_shard: usize) -> (Dirs, PathBuf, FaultyBroker, String, String) {
    let dirs = Dirs::new(name);
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(start(&data, Some((full.clone(), full_shard))), full);
    let (q_id, p_id) = (
        b.broker().id_on("q", Q_SHARD),
        b.broker().id_on("p", P_SHARD),
    );
    (dirs, data, b, q_id, p_id)
}

// ----- clients --------------------------------------------------------------------------------

/// A new persistent session (CleanSession 0) of `id`, durable when this returns.
fn new_session(broker: &Broker, id: &str) -> RawClient {
    let mut c = broker.connect_with(&ConnectBuilder::new(id).clean(false));
    make_durable(&mut c, id, 100);
    c
}

/// Returns once everything the client's home shard logged before is durable: a SUBACK waits
/// until the SUBSCRIBE's record is, and a shard's log positions only grow. (The filter is the
/// client's own; nothing is published to it.)
fn make_durable(c: &mut RawClient, id: &str, packet_id: u16) {
    c.subscribe(packet_id, &[(&format!("sync/{id}"), 0)]);
}

/// Reads the next packet, which must be `expected`, waiting at most [`MUST_COME`].
#[track_caller]
fn expect(c: &mut RawClient, expected: &[u8], what: &str) {
    let frame = c
        .next_frame_within(MUST_COME)
        .unwrap_or_else(|| panic!("{what}: nothing within {MUST_COME:?}"));
    assert_eq!(frame, expected, "{what}");
}

/// Whether a PUBREC for packet id 1 comes within [`MUST_WAIT`].
#[track_caller]
fn pubrec_soon(p: &mut RawClient) -> bool {
    match p.next_frame_within(MUST_WAIT) {
        None => false,
        Some(frame) => {
            assert_eq!(frame, pubrec(1), "not a PUBREC for packet id 1");
            true
        }
    }
}

/// The publisher after the restart: resumes its session, re-sends its unacknowledged PUBLISH
/// (packet id 1, DUP) and completes it, then publishes [`END`] (packet id 2).
fn publisher_finishes(broker: &Broker, id: &str, payload: &[u8]) {
    let mut p = resume(broker, id);
    p.send(&publish(TOPIC, payload, 2, false, true, 1));
    expect(&mut p, &pubrec(1), "P: PUBREC for the re-sent PUBLISH");
    p.send(&pubrel(1));
    expect(&mut p, &pubcomp(1), "P: PUBCOMP for the re-sent PUBLISH");
    publish_exactly_once(&mut p, END, 2);
    p.disconnect();
}

/// A QoS 2 PUBLISH on [`TOPIC`], and its flow completed.
fn publish_exactly_once(p: &mut RawClient, payload: &[u8], packet_id: u16) {
    p.send(&publish(TOPIC, payload, 2, false, false, packet_id));
    expect(p, &pubrec(packet_id), "P: PUBREC");
    p.send(&pubrel(packet_id));
    expect(p, &pubcomp(packet_id), "P: PUBCOMP");
}

/// The subscriber's side of QoS 2, as a real client keeps it across its connections: every
/// PUBLISH is answered with PUBREC and every PUBREL with PUBCOMP, and a message counts as
/// received once per packet id until that id is released (a PUBLISH for an id still
/// unreleased is the same message again; MQTT-4.3.3, method B).
#[derive(Default)]
struct Subscriber {
    /// Payloads received, in order.
    received: Vec<Vec<u8>>,
    /// Packet ids answered with PUBREC whose PUBREL has not come yet.
    unreleased: HashSet<u16>,
}

impl Subscriber {
    /// Handles one packet from the broker; returns the payload of a message received now.
    #[track_caller]
    fn handle(&mut self, c: &mut RawClient, frame: &[u8]) -> Option<Vec<u8>> {
        match parse(frame) {
            Packet::Publish(p) => {
                assert_eq!(p.topic.as_str(), TOPIC, "Q: the topic of {frame:02x?}");
                assert_eq!(p.qos, QoS::ExactlyOnce, "Q: the QoS of {frame:02x?}");
                c.send(&pubrec(p.packet_id));
                self.unreleased.insert(p.packet_id).then(|| {
                    self.received.push(p.payload.to_vec());
                    p.payload.to_vec()
                })
            }
            Packet::PubRel(Ack { packet_id, .. }) => {
                self.unreleased.remove(&packet_id);
                c.send(&pubcomp(packet_id));
                None
            }
            other => panic!("Q: expected PUBLISH or PUBREL, got {other:?} ({frame:02x?})"),
        }
    }

    /// Handles what comes until nothing has come for `quiet`.
    fn drain(&mut self, c: &mut RawClient, quiet: Duration) {
        while let Some(frame) = c.next_frame_within(quiet) {
            self.handle(c, &frame);
        }
    }

    /// Handles what comes until the message `last` is received and every flow completed, then
    /// until nothing has come for [`MUST_WAIT`].
    fn until(&mut self, c: &mut RawClient, last: &[u8]) {
        let mut done = false;
        while !done || !self.unreleased.is_empty() {
            let frame = c.next_frame_within(MUST_COME).unwrap_or_else(|| {
                panic!(
                    "Q: nothing within {MUST_COME:?}, waiting for {:?} (received: {:?})",
                    String::from_utf8_lossy(last),
                    self.payloads()
                )
            });
            done |= self.handle(c, &frame).as_deref() == Some(last);
        }
        self.drain(c, MUST_WAIT);
    }

    /// How many times `payload` was received.
    fn count(&self, payload: &[u8]) -> usize {
        self.received.iter().filter(|p| *p == payload).count()
    }

    fn payloads(&self) -> Vec<String> {
        self.received
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

/// The subscriber's persistent session of `id`, subscribed to [`TOPIC`] at QoS 2; durable
/// when this returns (the SUBACK waits for it).
fn subscribed(broker: &Broker, id: &str) -> RawClient {
    let mut q = broker.connect_with(&ConnectBuilder::new(id).clean(false));
    q.subscribe(1, &[(TOPIC, 2)]);
    q
}

/// The persistent session of `id` resumed (Session Present 1).
fn resume(broker: &Broker, id: &str) -> RawClient {
    broker.resume(&ConnectBuilder::new(id).clean(false))
}

// ----- tests ----------------------------------------------------------------------------------

/// The publisher's shard cannot make its record of packet id 1 durable; the subscriber is
/// online. The message must not be forwarded before that record is durable: a crash would
/// forget the id, and the publisher's re-sent PUBLISH would be forwarded again.
#[test]
fn qos2_is_exactly_once_across_a_crash_when_the_publishers_disk_is_full() {
    let (dirs, data, b, q_id, p_id) = setup("qos2-publisher-full", P_SHARD);
    let broker = b.broker();
    let mut q = subscribed(broker, &q_id);
    let mut p = new_session(broker, &p_id);

    b.disk_full(true);
    p.send(&publish(TOPIC, b"m", 2, false, false, 1));
    let early_pubrec = pubrec_soon(&mut p);
    let mut before = Subscriber::default();
    before.drain(&mut q, MUST_WAIT);

    let image = dirs.crash(&data);
    let after = {
        let restarted = start(&image, None);
        let mut q = resume(&restarted, &q_id);
        let mut after = Subscriber::default();
        publisher_finishes(&restarted, &p_id, b"m");
        after.until(&mut q, END);
        q.disconnect();
        after
    };

    let times = before.count(b"m") + after.count(b"m");
    assert_eq!(
        times,
        1,
        "Q received \"m\" {times} times: {:?} before the crash, {:?} after it",
        before.payloads(),
        after.payloads()
    );
    assert!(
        !early_pubrec,
        "PUBREC while P's shard could not make its record of packet id 1 durable"
    );
    assert!(
        before.received.is_empty(),
        "Q received {:?} while P's shard could not make its record of packet id 1 durable",
        before.payloads()
    );
    assert_eq!(after.payloads(), ["m", "end"], "Q after the restart");
}

/// The subscriber's shard cannot make the queued message durable; the subscriber is offline.
/// The publisher's shard must not keep packet id 1 (which stops a re-sent PUBLISH) where a
/// crash keeps it but not the queued copy: the message would be lost, although the publisher
/// had PUBREC and PUBCOMP for its re-sent PUBLISH.
#[test]
fn qos2_is_exactly_once_across_a_crash_when_the_subscribers_disk_is_full() {
    let (dirs, data, b, q_id, p_id) = setup("qos2-subscriber-full", Q_SHARD);
    let broker = b.broker();
    subscribed(broker, &q_id).disconnect();
    let mut p = new_session(broker, &p_id);

    b.disk_full(true);
    p.send(&publish(TOPIC, b"m", 2, false, false, 1));
    let early_pubrec = pubrec_soon(&mut p);

    let image = dirs.crash(&data);
    let after = {
        let restarted = start(&image, None);
        let mut q = resume(&restarted, &q_id);
        let mut after = Subscriber::default();
        publisher_finishes(&restarted, &p_id, b"m");
        after.until(&mut q, END);
        q.disconnect();
        after
    };

    let times = after.count(b"m");
    assert_eq!(
        times,
        1,
        "Q received \"m\" {times} times after the crash (P had PUBREC and PUBCOMP for it): {:?}",
        after.payloads()
    );
    assert!(
        !early_pubrec,
        "PUBREC while Q's shard could not make the queued message durable"
    );
    assert_eq!(after.payloads(), ["m", "end"], "Q after the restart");
}

/// Without faults: completed QoS 2 flows stay completed across a crash. Nothing is delivered
/// again, and the publisher's packet ids are free (a new PUBLISH with one is forwarded).
#[test]
fn completed_qos2_flows_stay_completed_across_a_crash() {
    const MESSAGES: u16 = 20;
    let dirs = Dirs::new("qos2-completed");
    let data = dirs.data();
    let broker = start(&data, None);
    let q_id = broker.id_on("q", Q_SHARD);
    let p_id = broker.id_on("p", P_SHARD);
    let mut q = subscribed(&broker, &q_id);
    let mut p = new_session(&broker, &p_id);

    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    for (packet_id, payload) in (1..).zip(&sent) {
        publish_exactly_once(&mut p, payload.as_bytes(), packet_id);
    }
    let mut before = Subscriber::default();
    before.until(&mut q, sent.last().expect("messages").as_bytes());
    assert_eq!(before.payloads(), sent, "Q before the crash");

    let image = dirs.crash(&data);
    drop((p, q));
    let restarted = start(&image, None);
    let mut q = resume(&restarted, &q_id);
    let mut p = resume(&restarted, &p_id);
    let mut after = Subscriber::default();
    publish_exactly_once(&mut p, b"n", 1);
    publish_exactly_once(&mut p, END, 2);
    after.until(&mut q, END);
    assert_eq!(after.payloads(), ["n", "end"], "Q after the restart");
    p.disconnect();
    q.disconnect();
}

/// A PUBCOMP frees the packet id (MQTT-4.3.3): it must not go before the record of that is
/// durable, or a crash would bring the id back, and the next PUBLISH with it would be taken
/// for a repeat and not forwarded, although the publisher got PUBREC and PUBCOMP for it.
#[test]
fn pubcomp_waits_until_the_freed_packet_id_is_durable() {
    let (dirs, data, b, q_id, p_id) = setup("qos2-pubcomp", P_SHARD);
    let broker = b.broker();
    let mut q = subscribed(broker, &q_id);
    let mut p = new_session(broker, &p_id);
    p.send(&publish(TOPIC, b"a", 2, false, false, 1));
    expect(&mut p, &pubrec(1), "P: PUBREC");
    let mut before = Subscriber::default();
    before.until(&mut q, b"a");

    b.disk_full(true);
    p.send(&pubrel(1));
    let early_pubcomp = p.next_frame_within(MUST_WAIT);

    let image = dirs.crash(&data);
    let restarted = start(&image, None);
    let mut q = resume(&restarted, &q_id);
    let mut p = resume(&restarted, &p_id);
    // No PUBCOMP came: P sends its PUBREL again (MQTT-4.4.0-1), then a new message with id 1.
    p.send(&pubrel(1));
    expect(&mut p, &pubcomp(1), "P: PUBCOMP for the re-sent PUBREL");
    publish_exactly_once(&mut p, b"b", 1);
    publish_exactly_once(&mut p, END, 2);
    let mut after = Subscriber::default();
    after.until(&mut q, END);

    assert_eq!(
        early_pubcomp, None,
        "PUBCOMP while P's shard could not make the release of packet id 1 durable"
    );
    assert_eq!(before.payloads(), ["a"], "Q before the crash");
    assert_eq!(after.payloads(), ["b", "end"], "Q after the restart");
    p.disconnect();
    q.disconnect();
}
