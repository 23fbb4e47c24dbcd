//! Shared subscriptions with `--data-dir`: a publisher's PUBACK waits until its message is
//! durable where it will be delivered from, also when the member first chosen cannot take it
//! and the message goes to another member on a third shard.
//!
//! Deterministic: the members are offline with room for one message, so the second message
//! for the first member is refused where it lives and goes to the other member, whose shard's
//! disk is full (the storage layer's fault hook, on that shard only). A crash at that moment is
//! taken as the data directory's bytes (a copy while the broker runs: what SIGKILL leaves, as
//! the log is written with direct I/O and a failing commit writes nothing) and started again.

mod common;
mod fault_util;

use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fault_util::{Dirs, FaultyBroker};

/// Long enough that a PUBACK sent without waiting would surely have arrived.
const MUST_WAIT: Duration = Duration::from_millis(800);
const SHARDS: usize = 3;
/// Where the second member lives, and whose disk fails.
const FULL_SHARD: usize = 2;

fn start(data: &Path, full: Option<Arc<AtomicU32>>) -> Broker {
    start_with(data, full, |_| {})
}

/// [`start`], with `tweak` applied to the configuration.
fn start_with(
    data: &Path,
    full: Option<Arc<AtomicU32>>,
    tweak: impl FnOnce(&mut surgemq::broker::BrokerConfig),
) -> Broker {
    let mut config = surgemq::broker::BrokerConfig {
        shards: SHARDS,
        data_dir: Some(data.to_path_buf()),
        // Room for one message per offline member: the next one is refused where it lives.
        max_queued_messages: 1,
        full_disk_fault: full,
        full_disk_fault_shard: Some(FULL_SHARD),
        ..test_config()
    };
    tweak(&mut config);
    Broker::with_config(config)
}

/// A new connection of a client whose home is `shard`, with `payload` published at QoS 1
/// (packet id 1) on `topic`.
fn publish_from(
    broker: &Broker,
    name: &str,
    shard: usize,
    topic: &str,
    payload: &[u8],
) -> RawClient {
    let mut p = broker.connect(&broker.id_on(name, shard));
    p.send(&publish(topic, payload, 1, false, false, 1));
    p
}

/// Whether the PUBACK of packet id 1 comes within [`MUST_WAIT`].
fn acked_soon(p: &mut RawClient) -> bool {
    match p.next_frame_within(MUST_WAIT) {
        None => false,
        Some(frame) => {
            assert_eq!(frame, puback(1), "not a PUBACK");
            true
        }
    }
}

/// Everything the session `id` finds queued when it comes back, acknowledged.
fn collect(broker: &Broker, id: &str, into: &mut Vec<Vec<u8>>) {
    let mut c = broker.resume(&ConnectBuilder::new(id).clean(false));
    while let Some(frame) = c.next_frame_within(Duration::from_millis(500)) {
        let Packet::Publish(p) = parse(&frame) else {
            panic!("{id}: expected PUBLISH, got {frame:02x?}");
        };
        c.ack(&p);
        into.push(p.payload.to_vec());
    }
    c.disconnect();
}

/// [`collect`] for a session that may be gone (then it finds nothing).
fn collect_if_kept(broker: &Broker, id: &str, into: &mut Vec<Vec<u8>>) {
    let mut c = broker.socket();
    c.send(&ConnectBuilder::new(id).clean(false).build());
    let connack = c.next_frame();
    assert!(
        connack == [0x20, 0x02, 0x01, 0x00] || connack == [0x20, 0x02, 0x00, 0x00],
        "{id}: expected CONNACK, got {connack:02x?}"
    );
    while let Some(frame) = c.next_frame_within(Duration::from_millis(500)) {
        let Packet::Publish(p) = parse(&frame) else {
            panic!("{id}: expected PUBLISH, got {frame:02x?}");
        };
        c.ack(&p);
        into.push(p.payload.to_vec());
    }
    c.disconnect();
}

use surgemq::protocol::Packet;

#[test]
fn a_redispatched_shared_message_is_acknowledged_once_durable_where_it_went() {
    let dirs = Dirs::new("shared-redispatch");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(start(&data, Some(full.clone())), full);
    let broker = b.broker();
    // Two groups, each with a member on shard 1 and one on shard 2: every shard sees a group
    // in that order (by shard), so each shard's round robin starts with the member on 1.
    let members = |group: &str| {
        let first = broker.id_on(&format!("{group}-first"), 1);
        let second = broker.id_on(&format!("{group}-second"), FULL_SHARD);
        for id in [&first, &second] {
            let mut c = broker.connect_with(&ConnectBuilder::new(id).clean(false));
            c.subscribe(1, &[(&format!("$share/g/{group}/t"), 1)]);
            c.disconnect();
        }
        (first, second)
    };
    let (a_first, a_second) = members("a");
    let (b_first, b_second) = members("b");

    b.disk_full(true);
    // Group a: "1" from shard 1 fills the first member's room (its shard's disk is fine);
    // "2" from shard 0 goes to it too (shard 0's turn starts there), is refused on shard 1
    // and goes to the second member, on shard 2, whose disk is full.
    let mut p1 = publish_from(broker, "p1", 1, "a/t", b"1");
    p1.expect_bytes(&puback(1));
    let mut p2 = publish_from(broker, "p2", 0, "a/t", b"2");
    let acked2 = acked_soon(&mut p2);
    // Group b: "3" from shard 0 fills the first member's room; "4" from shard 1, where the
    // first member lives, is refused there and goes to the second member, on shard 2.
    let mut p3 = publish_from(broker, "p3", 0, "b/t", b"3");
    p3.expect_bytes(&puback(1));
    let mut p4 = publish_from(broker, "p4", 1, "b/t", b"4");
    let acked4 = acked_soon(&mut p4);

    // A crash now, and a start from what it left.
    let image = dirs.crash(&data);
    let acked: Vec<&[u8]> = [
        (&b"1"[..], true),
        (b"2", acked2),
        (b"3", true),
        (b"4", acked4),
    ]
    .into_iter()
    .filter(|(_, acked)| *acked)
    .map(|(payload, _)| payload)
    .collect();
    let mut delivered = Vec::new();
    {
        let restarted = start(&image, None);
        for id in [&a_first, &a_second, &b_first, &b_second] {
            collect(&restarted, id, &mut delivered);
        }
    }
    let lost: Vec<String> = acked
        .iter()
        .filter(|p| !delivered.iter().any(|d| d == *p))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?} (delivered after the restart: {delivered:?})"
    );
    assert!(
        !acked2 && !acked4,
        "PUBACK before the message was durable where it went (\"2\": {acked2}, \"4\": {acked4})"
    );

    // Once the disk takes writes again, the PUBACKs come and each member has its message.
    b.disk_full(false);
    p2.expect_bytes(&puback(1));
    p4.expect_bytes(&puback(1));
    for (id, payload) in [
        (&a_first, b"1"),
        (&a_second, b"2"),
        (&b_first, b"3"),
        (&b_second, b"4"),
    ] {
        let mut got = Vec::new();
        collect(broker, id, &mut got);
        assert_eq!(got, [payload.to_vec()], "{id}");
    }
}

// ----- messages a member hands on -------------------------------------------------------------
//
// A member's session that ends (or, with `--shared-redispatch`, whose client goes away) gives
// its group the messages it held, which were acknowledged to their publishers long ago. Its
// shard must not forget them (journal the end of the session, or their withdrawal) before the
// member that takes them has them durably: a crash in between would lose them.

/// Room per session in the hand-on tests.
const ROOM: usize = 2;

/// A persistent member of `$share/g/{group}/t` whose home is `shard`, subscribed and offline;
/// also subscribed to `also` (a normal subscription) when given.
fn offline_member(
    broker: &Broker,
    name: &str,
    shard: usize,
    group: &str,
    also: Option<&str>,
) -> String {
    let id = broker.id_on(name, shard);
    let mut c = broker.connect_with(&ConnectBuilder::new(&id).clean(false));
    let filter = format!("$share/g/{group}/t");
    c.subscribe(1, &[(&filter, 1)]);
    if let Some(topic) = also {
        c.subscribe(2, &[(topic, 1)]);
    }
    c.disconnect();
    id
}

/// Publishes each of `payloads` at QoS 1 on `topic` from shard 0 and waits for its PUBACK.
fn publish_acked(broker: &Broker, name: &str, topic: &str, payloads: &[&[u8]]) {
    for (i, payload) in payloads.iter().enumerate() {
        let mut p = publish_from(broker, &format!("{name}{i}"), 0, topic, payload);
        p.expect_bytes(&puback(1));
        p.disconnect();
    }
}

/// Takes the crash image of `data` now, starts a broker on it and collects what the sessions
/// `ids` find; returns which of `acked` none of them got.
fn lost_in_a_crash(dirs: &Dirs, data: &Path, ids: &[&String], acked: &[&[u8]]) -> Vec<String> {
    let image = dirs.crash(data);
    let mut delivered = Vec::new();
    {
        let restarted = start_with(&image, None, |c| c.max_queued_messages = ROOM);
        for id in ids {
            collect_if_kept(&restarted, id, &mut delivered);
        }
    }
    acked
        .iter()
        .filter(|p| !delivered.iter().any(|d| d == *p))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[test]
fn messages_a_member_hands_on_as_its_session_ends_survive_a_crash() {
    let dirs = Dirs::new("shared-ended");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(
        start_with(&data, Some(full.clone()), |c| c.max_queued_messages = ROOM),
        full,
    );
    let broker = b.broker();
    // The member on shard 1 is the group's only one while "1" and "2" are acknowledged.
    let ending = offline_member(broker, "ending", 1, "e", None);
    publish_acked(broker, "p", "e/t", &[b"1", b"2"]);
    let taker = offline_member(broker, "taker", FULL_SHARD, "e", None);

    b.disk_full(true);
    // Its session ends (a clean start of its client id): "1" and "2" go to the member on
    // shard 2, which cannot make them durable.
    broker
        .connect_with(&ConnectBuilder::new(&ending).clean(true))
        .disconnect();
    // Long enough for the end of the session to be durable on shard 1.
    std::thread::sleep(MUST_WAIT);
    let lost = lost_in_a_crash(&dirs, &data, &[&ending, &taker], &[b"1", b"2"]);
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?}"
    );

    // Once the disk takes writes again, the other member has them, once.
    b.disk_full(false);
    let mut got = Vec::new();
    collect(broker, &taker, &mut got);
    assert_eq!(got, [b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn messages_a_member_withdraws_with_shared_redispatch_survive_a_crash() {
    let dirs = Dirs::new("shared-withdrawn");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(
        start_with(&data, Some(full.clone()), |c| {
            c.max_queued_messages = ROOM;
            c.shared_redispatch = true;
        }),
        full,
    );
    let broker = b.broker();
    // The member on shard 1 is online and the group's only one: it receives "1" and "2" and
    // does not acknowledge them.
    let leaving = broker.id_on("leaving", 1);
    let mut c = broker.connect_with(&ConnectBuilder::new(&leaving).clean(false));
    c.subscribe(1, &[("$share/g/w/t", 1)]);
    publish_acked(broker, "p", "w/t", &[b"1", b"2"]);
    for _ in 0..2 {
        let _ = c.next_publish();
    }
    let taker = offline_member(broker, "taker", FULL_SHARD, "w", None);

    b.disk_full(true);
    // Its client goes away (the session stays): "1" and "2" go to the member on shard 2,
    // which cannot make them durable.
    c.disconnect();
    std::thread::sleep(MUST_WAIT);
    let lost = lost_in_a_crash(&dirs, &data, &[&leaving, &taker], &[b"1", b"2"]);
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?}"
    );

    // Once the disk takes writes again, the other member has them, and the first none.
    b.disk_full(false);
    let mut got = Vec::new();
    collect(broker, &taker, &mut got);
    assert_eq!(got, [b"1".to_vec(), b"2".to_vec()]);
    let mut left = Vec::new();
    collect(broker, &leaving, &mut left);
    assert!(left.is_empty(), "withdrawn, yet still there: {left:?}");
}

#[test]
fn messages_handed_on_to_a_member_that_cannot_take_them_survive_a_crash() {
    let dirs = Dirs::new("shared-refused");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(
        start_with(&data, Some(full.clone()), |c| c.max_queued_messages = ROOM),
        full,
    );
    let broker = b.broker();
    let ending = offline_member(broker, "ending", 1, "r", None);
    publish_acked(broker, "p", "r/t", &[b"1", b"2"]);
    // A member on shard 0 whose queue is full (through a normal subscription), and one on
    // shard 2, whose disk will be full.
    let refusing = offline_member(broker, "refusing", 0, "r", Some("fill"));
    publish_acked(broker, "f", "fill", &[b"f1", b"f2"]);
    let taker = offline_member(broker, "taker", FULL_SHARD, "r", None);

    b.disk_full(true);
    // The session ends: "1" and "2" go to the two others in turn; the one on shard 0 cannot
    // take its message, which comes back to shard 1 and goes to the one on shard 2 as well.
    broker
        .connect_with(&ConnectBuilder::new(&ending).clean(true))
        .disconnect();
    std::thread::sleep(MUST_WAIT);
    let lost = lost_in_a_crash(&dirs, &data, &[&ending, &refusing, &taker], &[b"1", b"2"]);
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?}"
    );

    b.disk_full(false);
    let mut got = Vec::new();
    collect(broker, &taker, &mut got);
    got.sort();
    assert_eq!(got, [b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn messages_of_a_session_replaced_before_a_crash_go_to_the_group_after_it() {
    let dirs = Dirs::new("shared-replaced");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let b = FaultyBroker::new(
        start_with(&data, Some(full.clone()), |c| c.max_queued_messages = ROOM),
        full,
    );
    let broker = b.broker();
    let ending = broker.id_on("ending", 1);
    let mut c = broker.connect_with(&ConnectBuilder::new(&ending).clean(false).username("u1"));
    c.subscribe(1, &[("$share/g/x/t", 1)]);
    c.disconnect();
    publish_acked(broker, "p", "x/t", &[b"1", b"2"]);
    let taker = offline_member(broker, "taker", FULL_SHARD, "x", None);

    b.disk_full(true);
    // Another user's client takes the client id over with a persistent session of its own:
    // the first session ends, and a new one of the same client id is journalled at once.
    broker
        .connect_with(&ConnectBuilder::new(&ending).clean(false).username("u2"))
        .disconnect();
    std::thread::sleep(MUST_WAIT);
    // The log holds both sessions of that client id: the one that ended gives its messages
    // to the group at the start.
    let lost = lost_in_a_crash(&dirs, &data, &[&taker], &[b"1", b"2"]);
    assert!(
        lost.is_empty(),
        "acknowledged, then lost in a crash: {lost:?}"
    );
}

#[test]
fn messages_a_member_hands_on_as_the_broker_stops_are_kept_once() {
    let dirs = Dirs::new("shared-stop");
    let data = dirs.data();
    let full = Arc::new(AtomicU32::new(0));
    let broker = start_with(&data, Some(full.clone()), |c| c.max_queued_messages = ROOM);
    let ending = offline_member(&broker, "ending", 1, "s", None);
    publish_acked(&broker, "p", "s/t", &[b"1", b"2"]);
    let taker = offline_member(&broker, "taker", FULL_SHARD, "s", None);
    // The member's session ends while the taker's shard cannot make "1" and "2" durable, so
    // its shard keeps the end of the session handed on when the stop begins; the disk works
    // again during the stop.
    full.store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
    broker
        .connect_with(&ConnectBuilder::new(&ending).clean(true))
        .disconnect();
    std::thread::sleep(Duration::from_millis(100));
    let thaw = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        full.store(0, std::sync::atomic::Ordering::Relaxed);
    });
    drop(broker);
    thaw.join().unwrap();

    let restarted = start_with(&data, None, |c| c.max_queued_messages = ROOM);
    let mut got = Vec::new();
    collect_if_kept(&restarted, &ending, &mut got);
    collect_if_kept(&restarted, &taker, &mut got);
    got.sort();
    assert_eq!(
        got,
        [b"1".to_vec(), b"2".to_vec()],
        "each message once, from the member that took it"
    );
}
