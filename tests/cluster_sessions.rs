//! Persistent sessions moving between the nodes of a cluster (real nats-server cluster, see
//! `cluster_util`): a client that resumes its session on another node finds it there with
//! Session Present 1, its subscriptions, the message it had not acknowledged (sent again with
//! DUP) and everything queued for it, in order, even when that is more than one NATS message
//! holds; a live connection taken over that way ends without its will; another user's session
//! does not move; with `--data-dir` the moved session survives a SIGKILL of its new node; and
//! a session whose node died resumes elsewhere with its subscriptions, from JetStream (with
//! its queued messages too: `cluster_queues.rs`).
#![cfg(feature = "cluster")]

mod cluster_util;
mod common;
mod fault_util;

use std::time::Duration;

use cluster_util::*;
use common::*;

/// Nodes `a` and `b` on different NATS servers, each knowing the other (interest has spread
/// both ways).
fn two_nodes(nats: &Nats) -> (Broker, Broker) {
    let a = node("a", 2, vec![nats.url(0)]);
    let b = node("b", 1, vec![nats.url(1)]);
    for (from, to, topic) in [(&a, &b, "probe/ab"), (&b, &a, "probe/ba")] {
        let mut publisher = from.connect("probe-pub");
        let mut subscriber = to.connect("probe-sub");
        subscriber.subscribe(1, &[(topic, 0)]);
        until_connected(&mut publisher, &mut subscriber, topic);
    }
    (a, b)
}

#[test]
fn a_session_resumed_on_another_node_brings_what_it_was_owed() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let roamer = ConnectBuilder::new("roamer").clean(false);
    let mut client = a.connect_with(&roamer);
    client.subscribe(1, &[("jobs/#", 1)]);
    let mut publisher = a.connect("publisher");
    publisher.publish1("jobs/first", b"in flight", false, 1);
    let (unacked, _) = client.next_publish();
    assert_eq!(&unacked.payload[..], b"in flight");
    // Gone without acknowledging it; then 600 more are acknowledged to the publisher and
    // queued for the session on a.
    client.crash_and_wait();
    for i in 1..=600u16 {
        publisher.publish1("jobs/queued", &queued_payload(i), false, i + 1);
    }

    // Resumed on b: Session Present, the unacknowledged one again with DUP and its packet id
    // (MQTT-4.4.0-1), then the queue in order.
    let mut client = b.resume(&roamer);
    expect_owed(&mut client, unacked.packet_id, 600);
    // Its subscription moved too: what a's publisher sends now reaches it on b, once.
    until_connected(&mut publisher, &mut client, "jobs/probe");
    publisher.publish1("jobs/after", b"after", false, 700);
    assert_eq!(client.payloads_until(b"after"), Vec::<Vec<u8>>::new());
    client.expect_nothing();
    let (out, into) = (
        a.handle().stats().cluster().unwrap(),
        b.handle().stats().cluster().unwrap(),
    );
    assert_eq!((out.sessions_out, into.sessions_in), (1, 1));
    assert_eq!(into.sessions_missed, 0);
}

#[test]
fn a_connection_taken_over_by_its_resuming_client_ends_without_its_will() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut witness = b.connect("witness");
    witness.subscribe(1, &[("wills/#", 0), ("probe/w", 0)]);
    let mut probe = a.connect("probe-w");
    until_connected(&mut probe, &mut witness, "probe/w");
    let roamer = ConnectBuilder::new("roamer")
        .clean(false)
        .will("wills/roamer", b"gone", 0, false);
    let mut first = a.connect_with(&roamer);
    first.subscribe(1, &[("news/#", 1)]);
    // The same client, resuming on b: a closes its connection, the session continues on b
    // (Session Present), so the will is not published (as a local takeover of a continuing
    // session does not publish it).
    let mut second = b.resume(&ConnectBuilder::new("roamer").clean(false));
    first.expect_closed_within(Duration::from_secs(10));
    witness.expect_open_and_silent(Duration::from_millis(1500));
    second.ping();
    second.expect_nothing();
}

#[test]
fn another_users_session_does_not_move() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut alice = a.connect_with(
        &ConnectBuilder::new("shared-id")
            .clean(false)
            .username("alice"),
    );
    alice.subscribe(1, &[("private/#", 1)]);
    let mut publisher = a.connect("publisher");
    alice.crash_and_wait();
    publisher.publish1("private/x", b"for alice", false, 1);
    // Bob with the same client id on b: a new session (Session Present 0), nothing of
    // alice's, and alice's connection-less session on a ends (one client id, one session).
    let mut bob = b.connect_with(
        &ConnectBuilder::new("shared-id")
            .clean(false)
            .username("bob"),
    );
    bob.expect_open_and_silent(Duration::from_millis(500));
    let counts = a.handle().stats().cluster().unwrap();
    assert_eq!(counts.sessions_out, 0);
}

#[test]
fn a_moved_session_is_durable_on_its_new_node() {
    let nats = Nats::start();
    let dir = std::env::temp_dir().join(format!("surgemq-cluster-move-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = ["--data-dir", dir.to_str().unwrap()];
    let a = NodeProcess::start("a", &nats.url(0));
    let mut b = NodeProcess::start_with("b", &nats.url(1), &data);
    until_nodes_know_each_other(a.addr(), b.addr());
    let roamer = ConnectBuilder::new("roamer").clean(false);
    let connect_b = |b: &NodeProcess| {
        let mut c = RawClient::open(b.addr());
        c.send(&roamer.build());
        c.expect_bytes(&[0x20, 0x02, 0x01, 0x00]);
        c
    };
    let mut client = RawClient::open(a.addr());
    client.send(&roamer.build());
    client.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    client.subscribe(1, &[("jobs/#", 1)]);
    client.crash_and_wait();
    let mut publisher = connect_to(a.addr(), "publisher");
    for i in 1..=20u16 {
        publisher.publish1("jobs/x", format!("{i}").as_bytes(), false, i);
    }
    // Moved to b, not read there, then b is killed.
    let mut client = connect_b(&b);
    let (first, _) = client.next_publish();
    assert_eq!(&first.payload[..], b"1");
    b.kill();
    let b = NodeProcess::start_with("b", &nats.url(1), &data);
    let mut client = connect_b(&b);
    let got: Vec<Vec<u8>> = (0..20)
        .map(|_| {
            let (p, _) = client.next_publish();
            client.ack(&p);
            p.payload.to_vec()
        })
        .collect();
    let want: Vec<Vec<u8>> = (1..=20).map(|i: u16| format!("{i}").into_bytes()).collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node that was down comes back with `--data-dir` and the session it held, while its
/// client went on with a new session on another node: when the client resumes, the copies
/// are merged. Nothing either node acknowledged is lost: the old copy's messages come first,
/// then the new one's, and the client keeps the subscriptions it made last.
#[test]
fn a_session_left_on_a_node_that_was_down_is_merged_when_its_client_resumes() {
    let nats = Nats::start();
    let dir = std::env::temp_dir().join(format!("surgemq-cluster-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Without copies of connected sessions (`tests/cluster_online_copies.rs` has them): a's
    // copy is then the only one of what it held.
    let online = ["--cluster-online-copies", "false"];
    let data = ["--data-dir", dir.to_str().unwrap(), online[0], online[1]];
    let mut a = NodeProcess::start_with("a", &nats.url(0), &data);
    let b = NodeProcess::start_with("b", &nats.url(1), &online);
    let roamer = ConnectBuilder::new("roamer").clean(false);
    let connect = |node: &NodeProcess, connack: [u8; 4]| {
        let mut c = RawClient::open(node.addr());
        c.send(&roamer.build());
        c.expect_bytes(&connack);
        c
    };
    // On a: subscribed, sent two messages it does not acknowledge (acknowledged to their
    // publisher, on a's disk); a dies while the client is still connected, so no copy of
    // the session's queue is in JetStream (one is made when a client goes away).
    let mut client = connect(&a, [0x20, 0x02, 0x00, 0x00]);
    client.subscribe(1, &[("old/#", 1)]);
    let mut publisher = connect_to(a.addr(), "publisher-a");
    publisher.publish1("old/1", b"before 1", false, 1);
    publisher.publish1("old/2", b"before 2", false, 2);
    for _ in 0..2 {
        client.next_publish();
    }
    until_stored(&nats, "roamer", true);
    a.kill();
    client.expect_closed_within(Duration::from_secs(5));
    // The client goes to b: a cannot answer, so b takes the session directory's copy from
    // JetStream (Session Present 1, old/#, none of a's messages); the client subscribes to
    // new/# and leaves old/#.
    let mut client = connect(&b, [0x20, 0x02, 0x01, 0x00]);
    client.subscribe(1, &[("new/#", 1)]);
    client.send(&unsubscribe(2, &["old/#"]));
    client.expect_bytes(&[0xb0, 0x02, 0x00, 0x02]);
    client.crash_and_wait();
    let mut publisher = connect_to(b.addr(), "publisher-b");
    publisher.publish1("new/1", b"after 1", false, 1);
    // a comes back with its copy; the client resumes there: both copies, merged.
    let a = NodeProcess::start_with("a", &nats.url(0), &data);
    // Once a knows b again (b's interest has reached it), so a waits for b's answer.
    let mut probe_sub = connect_to(b.addr(), "probe-sub");
    probe_sub.subscribe(1, &[("probe/m", 0)]);
    let mut probe_pub = connect_to(a.addr(), "probe-pub");
    until_connected(&mut probe_pub, &mut probe_sub, "probe/m");
    let mut client = connect(&a, [0x20, 0x02, 0x01, 0x00]);
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let (p, _) = client.next_publish();
            client.ack(&p);
            p.payload.to_vec()
        })
        .collect();
    assert_eq!(got, [&b"before 1"[..], b"before 2", b"after 1"]);
    client.expect_nothing();
    // The subscriptions are the ones made last (on b): new/# only.
    let mut publisher = connect_to(a.addr(), "publisher-a2");
    publisher.publish1("old/3", b"not any more", false, 1);
    publisher.publish1("new/2", b"after 2", false, 2);
    let (p, _) = client.next_publish();
    assert_eq!(&p.payload[..], b"after 2");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The session directory's entry for `client_id`, if it has one.
fn stored_entry(nats: &Nats, client_id: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::URL_SAFE.encode(client_id);
    run(async {
        let client = async_nats::connect(nats.url(2)).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("SMQ_SESSIONS").await.ok()?;
        kv.get(&key).await.ok()?.map(|v| v.to_vec())
    })
}

/// A session on a node that dies and does not come back: its client resumes it on another
/// node with its subscriptions, from the session directory in JetStream (Session Present 1),
/// and gets what is published from then on without subscribing again. A clean connect then
/// ends the session everywhere: its entry goes, and the next resume is a new session.
#[test]
fn a_session_whose_node_died_resumes_elsewhere_with_its_subscriptions() {
    let nats = Nats::start();
    let mut a = NodeProcess::start("a", &nats.url(0));
    let b = NodeProcess::start("b", &nats.url(1));
    // A third node, which answers b's take (so NATS does not say at once that no one
    // listens, as it does when the node that died was the only other one).
    let c = NodeProcess::start("c", &nats.url(2));
    until_nodes_know_each_other(b.addr(), c.addr());
    let roamer = ConnectBuilder::new("roamer").clean(false);
    let resume = |node: &NodeProcess, connack: [u8; 4]| {
        let mut c = RawClient::open(node.addr());
        c.send(&roamer.build());
        c.expect_bytes(&connack);
        c
    };
    let mut client = resume(&a, [0x20, 0x02, 0x00, 0x00]);
    client.subscribe(1, &[("feed/#", 1)]);
    until_stored(&nats, "roamer", true);
    a.kill();
    client.expect_closed_within(Duration::from_secs(5));

    // Node b still counts a among the nodes that answer a take (it remembers a node for
    // 10 s), but NATS says no one is there for a: the resume does not wait out the 1 s
    // for a's answer (`handoff::TAKE_WAIT`; c answered at once).
    let asked = std::time::Instant::now();
    let mut client = resume(&b, [0x20, 0x02, 0x01, 0x00]);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "the resume waited {took:?} for a node that is gone"
    );
    let mut publisher = connect_to(b.addr(), "publisher");
    publisher.publish1("feed/x", b"kept", false, 1);
    let (p, _) = client.next_publish();
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("feed/x", &b"kept"[..]));
    client.ack(&p);
    client.disconnect();

    connect_to(b.addr(), "roamer").disconnect();
    until_stored(&nats, "roamer", false);
    let mut client = resume(&b, [0x20, 0x02, 0x00, 0x00]);
    publisher.publish1("feed/x", b"gone", false, 2);
    client.expect_nothing();
}

/// A session's directory copy expires with the session: the client went away (the entry
/// says when), its node died, and it comes back after `--session-expiry` ran out: it gets a
/// new session, not the stored subscriptions.
#[test]
fn a_stored_session_that_expired_while_its_node_was_down_is_not_taken() {
    let nats = Nats::start();
    let expiry = ["--session-expiry", "2"];
    let mut a = NodeProcess::start_with("a", &nats.url(0), &expiry);
    let b = NodeProcess::start_with("b", &nats.url(1), &expiry);
    let roamer = ConnectBuilder::new("roamer").clean(false);
    let mut client = RawClient::open(a.addr());
    client.send(&roamer.build());
    client.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    client.subscribe(1, &[("feed/#", 1)]);
    until_stored(&nats, "roamer", true);
    client.disconnect();
    // The entry says when the client went (bytes 1..9 of the entry, not 0 any more).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stored_entry(&nats, "roamer").is_none_or(|e| e[1..9] == [0; 8]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the entry never said the client went"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill();
    std::thread::sleep(Duration::from_millis(2500));
    let mut client = RawClient::open(b.addr());
    client.send(&roamer.build());
    client.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    until_stored(&nats, "roamer", false);
}

/// A node acknowledges another node's QoS 1 message only once it has handled it, durably with
/// `--data-dir` (`cluster::node::handled`), and the publisher's PUBACK waits for that: while
/// node b's disk is full, a message for a persistent session on b is not PUBACKed on node a;
/// once the disk works again it is, and the session's client gets the message. (Acknowledged
/// from b's inbox, as before, the PUBACK came at once.)
#[test]
fn a_publish_for_a_session_on_another_node_is_acknowledged_once_durable_there() {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    let nats = Nats::start();
    let dirs = fault_util::Dirs::new("cluster-durable-ack");
    let full = Arc::new(AtomicU32::new(0));
    let b = fault_util::FaultyBroker::new(
        Broker::with_config(surgemq::broker::BrokerConfig {
            shards: 1,
            sys_interval: Duration::ZERO,
            cluster: Some(surgemq::broker::config::ClusterConfig {
                servers: vec![nats.url(1)],
                node_id: "b".to_string(),
                queue_copies: true,
                queue_copies_wait: true,
                online_copies: true,
                clock_offset_us: 0,
            }),
            data_dir: Some(dirs.data()),
            full_disk_fault: Some(full.clone()),
            ..test_config()
        }),
        full,
    );
    let a = node("a", 1, vec![nats.url(0)]);
    let keeper = ConnectBuilder::new("keeper").clean(false);
    let mut away = b.broker().connect_with(&keeper);
    away.subscribe(1, &[("durable/#", 1)]);
    away.disconnect();
    let mut probe = b.broker().connect("probe");
    probe.subscribe(1, &[("probe/d", 0)]);
    let mut publisher = a.connect("pub");
    until_connected(&mut publisher, &mut probe, "probe/d");

    b.disk_full(true);
    publisher.send(&publish("durable/x", b"kept", 1, false, false, 1));
    assert_eq!(
        publisher.next_frame_within(Duration::from_millis(1500)),
        None,
        "PUBACK before node b had the message on disk"
    );
    b.disk_full(false);
    publisher.expect_bytes(&[0x40, 0x02, 0x00, 0x01]);
    let mut back = b.broker().resume(&keeper);
    let frame = back
        .next_frame_within(Duration::from_secs(5))
        .expect("the queued message");
    let surgemq::protocol::Packet::Publish(p) = parse(&frame) else {
        panic!("expected PUBLISH, got {frame:02x?}");
    };
    assert_eq!(&p.payload[..], b"kept");
}

/// A node cut off from NATS (every NATS server killed under it) answers a resuming connect at
/// once with what it holds, instead of stalling it until the shard gives up on the other
/// nodes (3 s); and a PUBACK for a message queued for an away session does not wait for a
/// JetStream that cannot be reached. The session resumes here with the message.
#[test]
fn a_node_cut_off_from_nats_resumes_sessions_at_once() {
    let mut nats = Nats::start();
    let a = NodeProcess::start("a", &nats.url(0));
    let resume = |present: u8| {
        let mut c = RawClient::open(a.addr());
        let started = std::time::Instant::now();
        c.send(&ConnectBuilder::new("cut-off").clean(false).build());
        c.expect_bytes(&[0x20, 0x02, present, 0x00]);
        (c, started.elapsed())
    };
    // While NATS is there, a resume JetStream cannot answer yet (its first leaders are still
    // being elected) is refused: tried again, as a client library would.
    let mut client = cluster_util::resume(&a, "cut-off", false);
    client.subscribe(1, &[("jobs/#", 1)]);
    client.crash_and_wait();
    // Past the node's start (it asks the other nodes for retained messages first).
    std::thread::sleep(Duration::from_millis(1000));
    for i in 0..3 {
        nats.kill(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut publisher = connect_to(a.addr(), "publisher");
    publisher.publish1("jobs/x", b"queued", false, 1);
    let (mut client, took) = resume(1);
    assert!(took < Duration::from_millis(1500), "CONNACK after {took:?}");
    let (p, _) = client.next_publish();
    assert_eq!(&p.payload[..], b"queued");
}

/// A node that starts while no NATS server can be reached answers resuming connects at once,
/// from its first moment (its cluster thread used to wait 5 s for retained messages from
/// other nodes before anything else, so each resume then waited the shard's 3 s for an
/// answer from it).
#[test]
fn a_node_that_starts_cut_off_from_nats_resumes_sessions_at_once() {
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let a = NodeProcess::start("a", &nowhere);
    for present in [0, 1] {
        let mut c = RawClient::open(a.addr());
        let started = std::time::Instant::now();
        c.send(&ConnectBuilder::new("cut-off").clean(false).build());
        c.expect_bytes(&[0x20, 0x02, present, 0x00]);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "CONNACK after {took:?}");
        c.crash_and_wait();
    }
}

/// Without JetStream (a NATS server run without `-js`) nothing but the nodes can say what a
/// session holds: a resume is answered at once, not refused as when JetStream is there but
/// cannot answer (`cluster_queues`), with Session Present 0 and then 1.
#[test]
fn without_jetstream_a_resume_is_answered_not_refused() {
    /// Killed however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let _server = Server(
        std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (apt-get install nats-server)"),
    );
    wait_listening(port);
    let a = NodeProcess::start("a", &format!("nats://127.0.0.1:{port}"));
    for present in [0, 1] {
        let mut c = RawClient::open(a.addr());
        c.send(&ConnectBuilder::new("no-jetstream").clean(false).build());
        c.expect_bytes(&[0x20, 0x02, present, 0x00]);
        c.crash_and_wait();
    }
}
