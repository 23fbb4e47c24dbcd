//! Persistent sessions copied to JetStream while their clients are connected
//! (`--cluster-online-copies`, `broker::shard::session_copies`; real nats-server cluster,
//! nodes as their own processes, killed with SIGKILL, no `--data-dir`): a client connected
//! to a node that dies resumes on another node with every message acknowledged into its
//! session that it had not acknowledged itself, in order, and with its QoS 2 exchanges where
//! they stood (a PUBREL owed is sent again, not the PUBLISH it followed).
#![cfg(feature = "cluster")]

mod cluster_util;
mod common;

use std::time::Duration;

use surgemq::protocol::{Packet, QoS};

use cluster_util::*;
use common::*;

fn payload(i: u16) -> Vec<u8> {
    format!("m{i:05}").into_bytes()
}

/// The PUBLISHes a client gets until nothing comes for a second: (payload, DUP), each
/// acknowledged.
fn drain(client: &mut RawClient) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    while let Some(frame) = client.next_frame_within(Duration::from_secs(1)) {
        let Packet::Publish(p) = parse(&frame) else {
            panic!("not a PUBLISH: {frame:02x?}");
        };
        got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
        client.ack(&p);
    }
    got
}

/// A subscriber connected to node a acknowledges the first 1,000 of 1,300 QoS 1 messages
/// that a publisher on node b sends it (its copy gets new snapshots on the way: three
/// changes per message); node a is killed the moment the publisher has its last PUBACK. The
/// subscriber resumes on b with messages 1,001 to 1,300, in order, those a had sent it
/// marked DUP, and nothing it had acknowledged.
#[test]
fn a_connected_session_whose_node_died_resumes_elsewhere_with_what_it_was_owed() {
    const ACKED: u16 = 1000;
    const MESSAGES: u16 = 1300;
    let nats = Nats::start();
    let mut a = NodeProcess::start("a", &nats.url(0));
    let b = NodeProcess::start("b", &nats.url(1));
    let mut worker = resume(&a, "worker", false);
    worker.subscribe(1, &[("jobs/#", 1)]);
    until_stored(&nats, "worker", true);
    let mut publisher = connect_to(b.addr(), "publisher");
    until_connected(&mut publisher, &mut worker, "jobs/probe");
    for i in 1..=ACKED {
        publisher.publish1("jobs/x", &payload(i), false, i);
    }
    for i in 1..=ACKED {
        let (p, _) = worker.next_publish();
        assert_eq!(p.payload[..], payload(i)[..]);
        worker.ack(&p);
    }
    // The worker reads the rest without acknowledging: some are in flight, the rest queued.
    // Each PUBACK waits for node a, which has the worker, and for the copy a makes of the
    // message in the worker's session.
    for i in ACKED + 1..=MESSAGES {
        publisher.publish1("jobs/x", &payload(i), false, i);
    }
    a.kill();

    let mut worker = resume(&b, "worker", true);
    let got = drain(&mut worker);
    let payloads: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    let expected: Vec<String> = (ACKED + 1..=MESSAGES)
        .map(|i| String::from_utf8(payload(i)).unwrap())
        .collect();
    assert_eq!(payloads, expected, "every message owed, once, in order");
    assert!(got[0].1, "the first was sent before: DUP");
}

/// A QoS 2 subscriber on node a got a message and sent its PUBREC; the PUBREL came back
/// (it waited for the copy of the PUBREC) and the subscriber had not completed it when a was
/// killed. Resumed on b, it is sent the PUBREL again, not the PUBLISH: a client that had
/// completed the message would take a PUBLISH as a new one.
#[test]
fn a_pubrel_owed_by_a_dead_node_is_sent_again_from_the_copy() {
    let nats = Nats::start();
    let mut a = NodeProcess::start("a", &nats.url(0));
    let b = NodeProcess::start("b", &nats.url(1));
    let mut worker = resume(&a, "worker2", false);
    worker.subscribe(1, &[("jobs/#", 2)]);
    until_stored(&nats, "worker2", true);
    let mut publisher = connect_to(a.addr(), "publisher2");
    publisher.publish2("jobs/x", b"once", false, 1);
    let (p, _) = worker.next_publish();
    assert_eq!((&p.payload[..], p.qos), (&b"once"[..], QoS::ExactlyOnce));
    worker.send(&pubrec(p.packet_id));
    worker.expect_bytes(&pubrel(p.packet_id));
    a.kill();

    let mut worker = resume(&b, "worker2", true);
    worker.expect_bytes(&pubrel(p.packet_id));
    worker.send(&pubcomp(p.packet_id));
    worker.expect_nothing();
}

/// Node a (with `--data-dir`) dies while a subscriber is connected with a message in flight;
/// the subscriber resumes on b from a's copy in JetStream and acknowledges it. When a comes
/// back with its own copy from disk (which says the client was connected when the log ended),
/// the client resuming on a does not get the message again: a drops its copy as the one b
/// took, and takes b's.
#[test]
fn a_node_back_with_a_connected_sessions_copy_another_node_took_does_not_deliver_it_again() {
    let nats = Nats::start();
    let dir = std::env::temp_dir().join(format!("surgemq-online-copies-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = ["--data-dir", dir.to_str().unwrap()];
    let mut a = NodeProcess::start_with("a", &nats.url(0), &data);
    let b = NodeProcess::start("b", &nats.url(1));
    let mut worker = resume(&a, "worker3", false);
    worker.subscribe(1, &[("jobs/#", 1)]);
    until_stored(&nats, "worker3", true);
    let mut publisher = connect_to(a.addr(), "publisher3");
    publisher.publish1("jobs/x", b"in flight", false, 1);
    let (p, _) = worker.next_publish();
    assert_eq!(&p.payload[..], b"in flight");
    // That it was sent is copied behind it (nothing waits for that alone): a second message,
    // whose PUBACK waits for its own copy, makes sure it is there.
    publisher.publish1("jobs/x", b"second", false, 2);
    let (second, _) = worker.next_publish();
    assert_eq!(&second.payload[..], b"second");
    a.kill();

    let mut worker = resume(&b, "worker3", true);
    expect_owed(&mut worker, p.packet_id, 0);
    let (second, _) = worker.next_publish();
    assert_eq!(&second.payload[..], b"second");
    worker.ack(&second);
    worker.disconnect();

    let a = NodeProcess::start_with("a", &nats.url(0), &data);
    // Once each node knows the other, so each waits for the other's answer to a claim.
    until_nodes_know_each_other(a.addr(), b.addr());
    let mut worker = resume(&a, "worker3", true);
    worker.expect_nothing();
    // It kept its subscription.
    let mut publisher = connect_to(b.addr(), "publisher3b");
    until_connected(&mut publisher, &mut worker, "jobs/probe");
    let _ = std::fs::remove_dir_all(&dir);
}
