//! MQTT 5 state across a crash (`surgemq serve --data-dir`, SIGKILL, start again): a
//! session's own Session Expiry Interval, its subscriptions' options and Subscription
//! Identifiers, and the properties and expiry of its queued and retained messages come back as
//! they were, not as 3.1.1 defaults.

mod common;
mod persistence;

use std::time::Duration;

use common::*;
use persistence::*;
use surgemq::protocol::Packet;

/// Clean Start 0 with a Session Expiry Interval of `secs`.
fn v5_session(client_id: &str, secs: u32) -> ConnectBuilder {
    let mut props = vec![0x11]; // Session Expiry Interval
    props.extend_from_slice(&secs.to_be_bytes());
    ConnectBuilder::v5(client_id, &props).clean(false)
}

#[rustfmt::skip]
const MESSAGE_PROPERTIES: &[u8] = &[
    0x02, 0x00, 0x00, 0x0e, 0x10,             // Message Expiry Interval 3600 s
    0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // User Property a=1
];

#[test]
fn mqtt5_session_options_and_message_properties_survive_sigkill() {
    let dir = TestDir::new("v5-state");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let keeper = v5_session(&id_on_shard("k5", 0, 2), 3600);
    let pub_id = id_on_shard("p5", 1, 2);

    let mut k = server.connect_expecting(&keeper, &connack_v5(false));
    // Subscription Identifier 7; QoS 1, No Local, Retain As Published.
    k.send(&subscribe_v5(
        1,
        &[0x0b, 0x07],
        &[("v5/t", 0x01 | 0x04 | 0x08)],
    ));
    k.expect_bytes(&suback_v5(1, &[0x01]));
    k.disconnect();
    let mut p = server.connect_expecting(&ConnectBuilder::v5(&pub_id, &[]), &connack_v5(false));
    p.send(&publish_v5(
        "v5/t",
        b"queued",
        1,
        false,
        1,
        MESSAGE_PROPERTIES,
    ));
    p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]); // PUBACK: a subscriber (offline) matched
    p.send(&publish_v5("v5/r", b"kept", 1, true, 2, MESSAGE_PROPERTIES));
    p.expect_bytes(&[0x40, 0x03, 0x00, 0x02, 0x10]); // retained, no subscriber
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 2, Some(&data));
    let mut k = server.connect_expecting(&keeper, &connack_v5(true));
    let m = k.next_publish_v5();
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("v5/t", &b"queued"[..]));
    let props = m
        .properties
        .expect("the queued message kept its properties");
    assert_eq!(&props.subscription_identifiers[..], &[7]);
    assert_eq!(props.user_properties, vec![("a".into(), "1".into())]);
    let left = props.message_expiry_interval.expect("and its expiry");
    assert!((3500..=3600).contains(&left), "expiry left: {left}");
    k.send(&puback(m.packet_id));

    // No Local came back: its own message does not return to it; another client's does,
    // with the Subscription Identifier.
    k.send(&publish_v5("v5/t", b"own", 0, false, 0, &[]));
    k.expect_open_and_silent(Duration::from_millis(300));
    let mut p = server.connect_expecting(&ConnectBuilder::v5(&pub_id, &[]), &connack_v5(false));
    p.send(&publish_v5("v5/t", b"other", 0, false, 0, &[]));
    assert_eq!(
        k.next_frame(),
        publish_v5("v5/t", b"other", 0, false, 0, &[0x0b, 0x07])
    );

    // The retained message kept its properties (and what is left of its expiry).
    let mut r = server.connect_expecting(&ConnectBuilder::v5("r5", &[]), &connack_v5(false));
    r.send(&subscribe_v5(1, &[], &[("v5/r", 0x00)]));
    r.expect_bytes(&suback_v5(1, &[0x00]));
    let Packet::Publish(retained) = r.next_packet_v5() else {
        panic!("expected the retained PUBLISH")
    };
    assert!(retained.retain);
    let props = retained.properties.expect("retained properties");
    assert_eq!(props.user_properties, vec![("a".into(), "1".into())]);
    assert!(props.message_expiry_interval.is_some_and(|s| s <= 3600));
    k.disconnect();
    p.disconnect();
    r.disconnect();
    server.stop(Stop::Term);
}

/// A session's own Session Expiry Interval (2 s) holds after a crash: the restarted broker
/// removes it 2 s after its client left, where the broker's default (no `--session-expiry`)
/// would keep it forever.
#[test]
fn mqtt5_session_expiry_survives_sigkill() {
    let dir = TestDir::new("v5-expiry");
    let data = dir.data();
    let server = Server::start(&dir, 1, Some(&data));
    let short = v5_session("short5", 2);
    let long = v5_session("long5", 3600);
    let mut s = server.connect_expecting(&short, &connack_v5(false));
    s.subscribe_v5(1, &[("x/#", 0x01)]);
    s.disconnect();
    let mut l = server.connect_expecting(&long, &connack_v5(false));
    l.subscribe_v5(1, &[("y/#", 0x01)]);
    l.disconnect();
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 1, Some(&data));
    std::thread::sleep(Duration::from_millis(3500));
    // Gone: Session Present 0.
    server
        .connect_expecting(&short, &connack_v5(false))
        .disconnect();
    // Still there.
    server
        .connect_expecting(&long, &connack_v5(true))
        .disconnect();
    server.stop(Stop::Term);
}

/// A session that was to end with its connection (Session Expiry Interval 0), resumed by a
/// connection that asks it to outlive the connection, becomes persistent from then on: its
/// subscription, its unacknowledged message and what is queued while it is away survive a
/// crash. (Before, it stayed unjournalled and a restart forgot it.)
#[test]
fn a_session_resumed_to_outlive_its_connection_becomes_persistent() {
    let dir = TestDir::new("v5-promoted");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let id = id_on_shard("promoted5", 0, 2);
    let pub_id = id_on_shard("pub5", 1, 2);

    let mut first = server.connect_expecting(&ConnectBuilder::v5(&id, &[]), &connack_v5(false));
    first.send(&subscribe_v5(1, &[], &[("race/t", 0x01)]));
    first.expect_bytes(&suback_v5(1, &[0x01]));
    let mut p = server.connect_expecting(&ConnectBuilder::v5(&pub_id, &[]), &connack_v5(false));
    p.send(&publish_v5("race/t", b"unacked", 1, false, 1, &[]));
    p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
    let m = first.next_publish_v5();
    assert_eq!(&m.payload[..], b"unacked"); // and never acknowledged

    // Taken over (no DISCONNECT from the first): the session is resumed, now to outlive
    // its connection by an hour.
    let keeper = v5_session(&id, 3600);
    let mut second = server.connect_expecting(&keeper, &connack_v5(true));
    let m = second.next_publish_v5();
    assert_eq!((&m.payload[..], m.dup), (&b"unacked"[..], true));
    second.disconnect();
    drop(first);
    p.send(&publish_v5("race/t", b"queued", 1, false, 2, &[]));
    p.expect_bytes(&[0x40, 0x02, 0x00, 0x02]);
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 2, Some(&data));
    let mut back = server.connect_expecting(&keeper, &connack_v5(true));
    let m = back.next_publish_v5();
    assert_eq!((&m.payload[..], m.dup), (&b"unacked"[..], true));
    back.send(&puback(m.packet_id));
    let m = back.next_publish_v5();
    assert_eq!(&m.payload[..], b"queued");
    back.send(&puback(m.packet_id));
    // And the subscription itself came back.
    let mut p = server.connect_expecting(&ConnectBuilder::v5(&pub_id, &[]), &connack_v5(false));
    p.send(&publish_v5("race/t", b"live", 1, false, 3, &[]));
    p.expect_bytes(&[0x40, 0x02, 0x00, 0x03]);
    assert_eq!(&back.next_publish_v5().payload[..], b"live");
    back.disconnect();
    p.disconnect();
    server.stop(Stop::Term);
}

/// A shared subscription survives a crash with its member's session, and so does the group a
/// queued message came through: when the member's session expires after the restart without
/// its client coming back, the messages it held go to another member of the group.
#[test]
fn shared_subscription_members_and_their_messages_survive_sigkill() {
    let dir = TestDir::new("v5-shared");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let brief = v5_session(&id_on_shard("brief", 0, 2), 2);
    let steady = v5_session(&id_on_shard("steady", 1, 2), 3600);
    let mut a = server.connect_expecting(&brief, &connack_v5(false));
    a.send(&subscribe_v5(1, &[], &[("$share/g/ps/t", 0x01)]));
    a.expect_bytes(&suback_v5(1, &[0x01]));
    let mut b = server.connect_expecting(&steady, &connack_v5(false));
    b.send(&subscribe_v5(1, &[], &[("$share/g/ps/t", 0x01)]));
    b.expect_bytes(&suback_v5(1, &[0x01]));
    let mut p = server.connect_expecting(&ConnectBuilder::v5("pub-ps", &[]), &connack_v5(false));
    for i in 1..=10u16 {
        p.send(&publish_v5(
            "ps/t",
            format!("{i}").as_bytes(),
            1,
            false,
            i,
            &[],
        ));
        p.expect_bytes(&[0x40, 0x02, 0x00, i as u8]);
    }
    // Round robin: five each. B acknowledges its own; A holds its five unacknowledged.
    let mut held_by_a = Vec::new();
    for _ in 0..5 {
        held_by_a.push(a.next_publish_v5().payload.to_vec());
        let m = b.next_publish_v5();
        b.send(&puback(m.packet_id));
    }
    b.ping();
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 2, Some(&data));
    // B comes back (its session and subscription with it); A never does, and its session
    // expires 2 s after the restart: its five go to B.
    // (B's own five may come back first, with DUP: its acknowledgements need not have
    // reached the disk before the kill, and QoS 1 allows the repeat.)
    let mut b = server.connect_expecting(&steady, &connack_v5(true));
    let mut got = Vec::new();
    while !held_by_a.iter().all(|p| got.contains(p)) {
        assert!(got.len() < 10, "A's messages never came: {got:?}");
        let m = b.next_publish_v5();
        b.send(&puback(m.packet_id));
        got.push(m.payload.to_vec());
    }
    // And the group still works: a new message reaches B, the only member left.
    let mut p = server.connect_expecting(&ConnectBuilder::v5("pub-ps", &[]), &connack_v5(false));
    p.send(&publish_v5("ps/t", b"after", 1, false, 1, &[]));
    p.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
    let mut left = 10;
    loop {
        let m = b.next_publish_v5();
        b.send(&puback(m.packet_id));
        if &m.payload[..] == b"after" {
            break;
        }
        left -= 1;
        assert!(left > 0, "\"after\" never came");
    }
    server.stop(Stop::Term);
}

/// A will waiting for its Will Delay Interval survives a crash: the restarted broker
/// publishes it when it is due; one whose client came back before the crash stays cancelled.
#[test]
fn a_delayed_will_survives_sigkill() {
    let dir = TestDir::new("v5-will");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let delay = [0x18, 0x00, 0x00, 0x00, 0x02]; // Will Delay Interval 2 s
    let client = |name: &str, topic: &str| {
        v5_session(&id_on_shard(name, 0, 2), 3600)
            .will(topic, b"late", 1, false)
            .will_properties(&delay)
    };
    let gone = client("gone", "wills/gone");
    let back = client("back", "wills/back");
    // The watcher's subscription is made, durably, before anything else: the will may come
    // due while the broker is still restarting (a slow machine), and it must then wait in
    // the watcher's session instead of going to nobody.
    let watcher_id = id_on_shard("will-watch", 1, 2);
    let mut watcher = server.connect_expecting(&v5_session(&watcher_id, 3600), &connack_v5(false));
    watcher.send(&subscribe_v5(1, &[], &[("wills/#", 0x01)]));
    watcher.expect_bytes(&suback_v5(1, &[0x01]));
    watcher.crash_and_wait();
    server
        .connect_expecting(&gone, &connack_v5(false))
        .crash_and_wait();
    server
        .connect_expecting(&back, &connack_v5(false))
        .crash_and_wait();
    let left = std::time::Instant::now();
    // "back" returns before its delay runs out: its will is cancelled.
    let resumed = server.connect_expecting(
        &v5_session(&id_on_shard("back", 0, 2), 3600),
        &connack_v5(true),
    );
    resumed.crash_and_wait();
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 2, Some(&data));
    let mut watcher = server.connect_expecting(&v5_session(&watcher_id, 3600), &connack_v5(true));
    let m = watcher.next_publish_v5();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("wills/gone", &b"late"[..])
    );
    assert!(
        left.elapsed() >= Duration::from_millis(1900),
        "published after {:?}, before its delay",
        left.elapsed()
    );
    watcher.send(&puback(m.packet_id));
    // "back"'s will was cancelled by its return before the crash (the connection that
    // returned had no will): it never comes.
    watcher.expect_open_and_silent(Duration::from_millis(2500));
    server.stop(Stop::Term);
}
