//! End-to-end tests of shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 4.8.2, also
//! from 3.1.1 clients) over raw sockets: every message reaches one member of each group,
//! spread over members on every shard; members that go away give their messages to the
//! others; offline members are skipped; retained messages, No Local, bad group names and
//! UNSUBSCRIBE follow the spec.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use surgemq::protocol::{decode, Packet, ProtocolLevel};

/// A member of a shared subscription (or a plain subscriber) reading on its own thread.
struct Reader {
    client: RawClient,
    level: ProtocolLevel,
}

impl Reader {
    /// Reads and acknowledges PUBLISHes until `total` (shared by all readers of one group)
    /// reaches `expected` or 20 s pass; returns the payloads this reader got.
    fn drain(mut self, total: &AtomicUsize, expected: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while total.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
            let Some(frame) = self.client.next_frame_within(Duration::from_millis(50)) else {
                continue;
            };
            let mut buf = BytesMut::from(&frame[..]);
            let Ok(Some(Packet::Publish(p))) = decode(&mut buf, 1 << 20, self.level) else {
                panic!("expected PUBLISH, got {frame:02x?}");
            };
            if p.packet_id != 0 {
                self.client.send(&puback(p.packet_id));
            }
            got.push(p.payload.to_vec());
            total.fetch_add(1, Ordering::SeqCst);
        }
        got
    }
}

fn member(broker: &Broker, name: &str, shard: usize, v5: bool, filter: &str) -> Reader {
    let id = broker.id_on(name, shard);
    let (client, level) = if v5 {
        let mut c = broker.connect_v5(&ConnectBuilder::v5(&id, &[]));
        c.subscribe_v5(1, &[(filter, 0x01)]);
        (c, ProtocolLevel::V5)
    } else {
        let mut c = broker.connect(&id);
        c.subscribe(1, &[(filter, 1)]);
        (c, ProtocolLevel::V311)
    };
    Reader { client, level }
}

#[test]
fn each_message_goes_to_one_member_of_each_group_spread_over_shards() {
    // 4 members of group "work" over 2 shards, 3.1.1 and MQTT 5 mixed; a second group of 2
    // and a plain subscriber on the same filter; 10,000 QoS 1 messages from publishers on
    // both shards. Each group gets every message once; each "work" member 15% to 35% of
    // them (round robin); the plain subscriber gets them all.
    const N: usize = 10_000;
    let broker = Broker::start(2);
    let work: Vec<Reader> = (0..4)
        .map(|i| {
            member(
                &broker,
                &format!("w{i}"),
                i % 2,
                i >= 2,
                "$share/work/jobs/#",
            )
        })
        .collect();
    let other: Vec<Reader> = (0..2)
        .map(|i| member(&broker, &format!("o{i}"), i, i == 0, "$share/other/jobs/+"))
        .collect();
    let plain = member(&broker, "plain", 1, false, "jobs/#");
    let publishers: Vec<RawClient> = (0..2)
        .map(|shard| broker.connect(&broker.id_on("pub", shard)))
        .collect();

    let (work_total, other_total, plain_total) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let (work_got, other_got, plain_got) = std::thread::scope(|s| {
        let work: Vec<_> = work
            .into_iter()
            .map(|r| s.spawn(|| r.drain(&work_total, N)))
            .collect();
        let other: Vec<_> = other
            .into_iter()
            .map(|r| s.spawn(|| r.drain(&other_total, N)))
            .collect();
        let plain = s.spawn(|| plain.drain(&plain_total, N));
        for (k, mut p) in publishers.into_iter().enumerate() {
            s.spawn(move || {
                for i in 0..N / 2 {
                    let id = (i % 60_000 + 1) as u16;
                    p.publish1(
                        &format!("jobs/{k}"),
                        format!("{k}-{i}").as_bytes(),
                        false,
                        id,
                    );
                }
            });
        }
        let join = |v: Vec<std::thread::ScopedJoinHandle<'_, Vec<Vec<u8>>>>| -> Vec<Vec<Vec<u8>>> {
            v.into_iter().map(|h| h.join().unwrap()).collect()
        };
        (join(work), join(other), plain.join().unwrap())
    });

    let expected: Vec<Vec<u8>> = (0..2)
        .flat_map(|k| (0..N / 2).map(move |i| format!("{k}-{i}").into_bytes()))
        .collect();
    let once = |name: &str, got: Vec<Vec<u8>>| {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for p in got {
            *counts.entry(p).or_default() += 1;
        }
        let missing = expected.iter().filter(|p| !counts.contains_key(*p)).count();
        let twice = counts.values().filter(|&&n| n > 1).count();
        assert_eq!((missing, twice), (0, 0), "{name}: missing, duplicated");
    };
    for (i, got) in work_got.iter().enumerate() {
        let share = got.len() * 100 / N;
        assert!((15..=35).contains(&share), "work member {i} got {share}%");
    }
    once("group work", work_got.concat());
    once("group other", other_got.concat());
    once("plain subscriber", plain_got);
}

#[test]
fn a_member_that_leaves_gives_its_unacknowledged_messages_to_the_others() {
    // MQTT 5.0 4.8.2: a member whose session ends with messages it did not acknowledge; the
    // others get them. 3.1.1 (CleanSession 1) and MQTT 5 (Session Expiry 0) alike.
    with_shards(|shards| {
        for v5 in [false, true] {
            let broker = Broker::start(shards);
            let filter = "$share/g/leave/t";
            let mut quitter = member(&broker, "quitter", 0, v5, filter).client;
            let stayer = member(&broker, "stayer", shards - 1, !v5, filter);
            let mut p = broker.connect(&broker.id_on("pub", shards - 1));
            for i in 0..200u16 {
                p.publish1("leave/t", format!("{i}").as_bytes(), false, i + 1);
            }
            // The quitter has its turns in flight or queued, unacknowledged.
            let first = quitter.next_frame();
            assert_eq!(first[0] >> 4, 3, "a PUBLISH for the quitter");
            quitter.drop_connection();
            let total = AtomicUsize::new(0);
            let got = stayer.drain(&total, 200);
            let mut got: Vec<u16> = got
                .iter()
                .map(|p| std::str::from_utf8(p).unwrap().parse().unwrap())
                .collect();
            got.sort_unstable();
            assert_eq!(got, (0..200).collect::<Vec<u16>>(), "v5 quitter: {v5}");
        }
    });
}

#[test]
fn an_offline_persistent_member_is_skipped_while_others_are_online() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let filter = "$share/g/off/t";
        let away_id = broker.id_on("away", 0);
        let mut away = broker.connect_with(&ConnectBuilder::new(&away_id).clean(false));
        away.subscribe(1, &[(filter, 1)]);
        away.disconnect();
        let here = member(&broker, "here", shards - 1, true, filter);
        let mut p = broker.connect(&broker.id_on("pub", 0));
        for i in 0..20u16 {
            p.publish1("off/t", b"x", false, i + 1);
        }
        let total = AtomicUsize::new(0);
        assert_eq!(here.drain(&total, 20).len(), 20);
        // Nothing was queued for the absent member.
        let mut away = broker.resume(&ConnectBuilder::new(&away_id).clean(false));
        away.ping();
        away.expect_nothing();
    });
}

#[test]
fn retained_messages_are_not_sent_on_a_shared_subscription() {
    // MQTT 5.0 4.8.2: "The Server ... does not send Retained Messages" on a shared one.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut p = broker.connect(&broker.id_on("pub", 0));
        p.publish1("kept/t", b"retained", true, 1);
        let mut shared = broker.connect(&broker.id_on("shared", shards - 1));
        shared.subscribe(1, &[("$share/g/kept/t", 1)]);
        shared.ping();
        shared.expect_nothing();
        let mut plain = broker.connect(&broker.id_on("plain", shards - 1));
        let frames = plain.subscribe_expecting(1, &[("kept/t", 1)], 1);
        let Packet::Publish(r) = parse(&frames[0]) else {
            panic!("expected the retained PUBLISH");
        };
        assert_eq!(&r.payload[..], b"retained");
        // A live message still reaches the member.
        p.publish1("kept/t", b"live", false, 2);
        let (m, _) = shared.next_publish();
        assert_eq!(&m.payload[..], b"live");
    });
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // MQTT-3.8.3-4: DISCONNECT 0x82.
    let broker = Broker::start(1);
    let mut c = broker.connect_v5(&ConnectBuilder::v5("nl", &[]));
    c.send(&subscribe_v5(1, &[], &[("$share/g/t", 0x01 | 0x04)]));
    let text = c.expect_disconnect_v5(0x82).expect("a Reason String");
    assert!(text.contains("MQTT-3.8.3-4"), "{text}");
}

#[test]
fn bad_group_names_are_refused_in_suback() {
    // MQTT-4.8.2-1, -2: an empty group name, one with a wildcard, or no filter after it.
    // 3.1.1: 0x80; 5: 0x8F.
    let broker = Broker::start(1);
    let bad = [
        ("$share//t", 1),
        ("$share/g", 1),
        ("$share/g/", 1),
        ("$share/g+/t", 1),
        ("$share/#/t", 1),
    ];
    let mut old = broker.connect("bad311");
    old.send(&subscribe(1, &bad));
    old.expect_bytes(&[0x90, 0x07, 0x00, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80]);
    let mut new = broker.connect_v5(&ConnectBuilder::v5("bad5", &[]));
    new.send(&subscribe_v5(1, &[], &bad));
    new.expect_bytes(&suback_v5(1, &[0x8f; 5]));
    // The connections stay usable.
    old.ping();
    new.ping();
}

#[test]
fn unsubscribe_removes_only_that_member() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let filter = "$share/g/u/t";
        let mut a = member(&broker, "a", 0, true, filter).client;
        let b = member(&broker, "b", shards - 1, false, filter);
        a.send(&unsubscribe_v5(2, &[filter]));
        a.expect_bytes(&[0xb0, 0x04, 0x00, 0x02, 0x00, 0x00]); // UNSUBACK 0x00
        let mut p = broker.connect(&broker.id_on("pub", 0));
        for i in 0..10u16 {
            p.publish1("u/t", b"x", false, i + 1);
        }
        let total = AtomicUsize::new(0);
        assert_eq!(b.drain(&total, 10).len(), 10);
        a.expect_nothing();
    });
}

#[test]
fn shared_subscription_available_is_announced() {
    let broker = Broker::start(1);
    // connack_v5 holds the default properties, 0x2A Shared Subscription Available 1 among them.
    broker.connect_v5(&ConnectBuilder::v5("ssa", &[]));
    assert!(CONNACK_V5_PROPERTIES.windows(2).any(|w| w == [0x2a, 0x01]));
}

#[test]
fn a_persistent_member_keeps_its_messages_unless_shared_redispatch_says_so() {
    // MQTT 5.0 4.8.2 lets a member's messages wait for it while its session lasts; with
    // --shared-redispatch they go to the others as soon as its client leaves.
    for redispatch in [false, true] {
        let broker = Broker::with_config(surgemq::broker::BrokerConfig {
            shards: 2,
            shared_redispatch: redispatch,
            ..test_config()
        });
        let filter = "$share/g/rd/t";
        let away_id = broker.id_on("away", 0);
        let mut away = broker.connect_with(&ConnectBuilder::new(&away_id).clean(false));
        away.subscribe(1, &[(filter, 1)]);
        let stays = member(&broker, "stays", 1, true, filter);
        let mut p = broker.connect(&broker.id_on("pub", 1));
        for i in 0..20u16 {
            p.publish1("rd/t", format!("{i}").as_bytes(), false, i + 1);
        }
        // Its ten, unacknowledged, then it goes away with its session kept.
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(away.next_publish().0.payload.to_vec());
        }
        away.drop_connection();
        let total = AtomicUsize::new(0);
        let expected = if redispatch { 20 } else { 10 };
        let got = stays.drain(&total, expected);
        assert_eq!(got.len(), expected, "redispatch {redispatch}");
        let mut away = broker.resume(&ConnectBuilder::new(&away_id).clean(false));
        if redispatch {
            away.ping();
            away.expect_nothing();
        } else {
            // Sent again on its return, with DUP.
            for payload in &held {
                let (m, _) = away.next_publish();
                assert_eq!((&m.payload.to_vec(), m.dup), (payload, true));
                away.send(&puback(m.packet_id));
            }
        }
    }
}

/// Runs `publish` against a group of 4 QoS 1 members, 2 on each of 2 shards, until they got
/// `n` messages; returns what each member got and how many messages crossed to the other
/// shard (`shared_cross_shard`).
fn members_on_two_shards(n: usize, publish: impl FnOnce(&Broker) + Send) -> (Vec<usize>, u64) {
    let broker = Broker::start(2);
    let members: Vec<Reader> = (0..4)
        .map(|i| member(&broker, &format!("m{i}"), i % 2, false, "$share/g/jobs/#"))
        .collect();
    let total = AtomicUsize::new(0);
    let got: Vec<usize> = std::thread::scope(|s| {
        let readers: Vec<_> = members
            .into_iter()
            .map(|r| s.spawn(|| r.drain(&total, n).len()))
            .collect();
        publish(&broker);
        readers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        got.iter().sum::<usize>(),
        n,
        "every message reached one member"
    );
    let crossed = broker.shutdown().iter().map(|s| s.shared_cross_shard).sum();
    (got, crossed)
}

#[test]
fn publishers_on_every_shard_keep_a_groups_messages_on_their_shard() {
    // Publishers on both shards, taking turns: each shard's members can take that shard's
    // messages and still get equal shares, so (almost) none crosses to the other core.
    // Taking turns over the whole group from each shard, as before `share_balance`, sent
    // half of them across.
    const N: usize = 2_000;
    let (got, crossed) = members_on_two_shards(N, |broker| {
        let mut publishers: Vec<RawClient> = (0..2)
            .map(|shard| broker.connect(&broker.id_on("pub", shard)))
            .collect();
        for i in 0..N {
            let id = (i / 2 + 1) as u16;
            publishers[i % 2].publish1("jobs/a", format!("{i}").as_bytes(), false, id);
        }
    });
    for (i, n) in got.iter().enumerate() {
        let share = n * 100 / N;
        assert!(
            (20..=30).contains(&share),
            "member {i} got {share}%: {got:?}"
        );
    }
    assert!(
        crossed <= (N / 50) as u64,
        "{crossed} of {N} crossed shards"
    );

    // A publisher alone on one shard still gives the other shard's members their half.
    let (got, crossed) = members_on_two_shards(N, |broker| {
        let mut publisher = broker.connect(&broker.id_on("lone", 0));
        for i in 0..N {
            publisher.publish1("jobs/b", format!("{i}").as_bytes(), false, (i + 1) as u16);
        }
    });
    for (i, n) in got.iter().enumerate() {
        let share = n * 100 / N;
        assert!(
            (20..=30).contains(&share),
            "member {i} got {share}%: {got:?}"
        );
    }
    let half = (N / 2) as u64;
    assert!(
        (half - 200..=half).contains(&crossed),
        "{crossed} of {N} crossed shards, from one"
    );
}
