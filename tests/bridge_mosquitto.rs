//! Bridges against a real Mosquitto (the Debian package) as the remote broker, started per
//! test on a free loopback port: `out`, `in` and `both` topics with prefixes, QoS 0/1/2, the
//! remote killed and started again while QoS 1 messages flow, wrong credentials, and the
//! notification topic. Messages are checked with raw clients on both brokers.
//!
//! "Nothing more arrives" is checked with markers, not with quiet periods where the order is
//! known: a message that would be echoed back takes the same FIFO path as a marker sent after
//! it, so reading up to the marker sees the echo if there is one.

mod common;
#[allow(dead_code)]
#[path = "client_util/mosquitto.rs"]
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use mosquitto::Mosquitto;
use surgemq::broker::bridge::{BridgeConfig, BridgeStats, BridgeTopic, Direction, RestartTimeout};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::{decode, Ack, ByteStr, Packet, ProtocolLevel, Publish, QoS, ReasonCode};

fn bridge_to(m: &Mosquitto, topics: Vec<BridgeTopic>) -> BridgeConfig {
    BridgeConfig {
        topics,
        restart: RestartTimeout::Constant(Duration::from_millis(200)),
        ..BridgeConfig::new("test", "127.0.0.1", m.addr.port())
    }
}

fn topic(pattern: &str, d: Direction, qos: QoS, local: &str, remote: &str) -> BridgeTopic {
    BridgeTopic {
        local_prefix: local.into(),
        remote_prefix: remote.into(),
        ..BridgeTopic::new(pattern, d, qos)
    }
}

fn start_with_bridges(shards: usize, bridges: Vec<BridgeConfig>) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        bridges,
        ..test_config()
    })
}

/// Polls `done` every few milliseconds; fails naming `what` after 10 s.
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The counters of bridge `name`.
fn stats(broker: &Broker, name: &str) -> Arc<BridgeStats> {
    let board = broker.handle().bridges();
    let (_, stats) = board
        .iter()
        .find(|(n, _)| n == name)
        .expect("bridge exists");
    stats.clone()
}

/// Waits until the bridge's link is up (its stats say so).
#[track_caller]
fn wait_connected(broker: &Broker, name: &str) {
    let stats = stats(broker, name);
    wait_until(&format!("bridge {name} is connected"), || {
        stats.is_connected()
    });
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    BridgeStats::get(counter)
}

/// (sent, received, dropped, connections, connect_failures).
fn counters(s: &BridgeStats) -> (u64, u64, u64, u64, u64) {
    (
        get(&s.sent),
        get(&s.received),
        get(&s.dropped),
        get(&s.connections),
        get(&s.connect_failures),
    )
}

/// Waits until `sent` and `received` reach the traffic the test made, then checks they stay
/// exactly there and that nothing was dropped or reconnected.
#[track_caller]
fn expect_counters(s: &BridgeStats, sent: u64, received: u64, connections: u64) {
    wait_until(&format!("sent {sent}, received {received}"), || {
        get(&s.sent) >= sent && get(&s.received) >= received
    });
    assert_eq!(counters(s), (sent, received, 0, connections, 0));
}

/// A 3.1.1 client of Mosquitto (CleanSession 1).
#[track_caller]
fn remote_client(m: &Mosquitto, id: &str) -> RawClient {
    let mut c = RawClient::open(m.addr);
    c.send(&ConnectBuilder::new(id).build());
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    c
}

/// (topic, payload, QoS, retain) of a message received.
type Seen = (String, Vec<u8>, QoS, bool);

/// Reads publishes (acknowledging them, QoS 2 flows included) until one with payload
/// `marker`; returns (topic, payload, QoS, retain) of those before it and the marker itself.
#[track_caller]
fn until(c: &mut RawClient, marker: &[u8]) -> (Vec<Seen>, Publish) {
    let mut seen = Vec::new();
    loop {
        match c.next_packet() {
            Packet::Publish(p) => {
                c.ack(&p);
                if &p.payload[..] == marker {
                    // Finish the QoS 2 flows still open: PUBRELs may follow the marker.
                    c.send(&[0xc0, 0x00]);
                    loop {
                        match c.next_packet() {
                            Packet::PingResp => return (seen, p),
                            Packet::PubRel(Ack { packet_id, .. }) => c.send(&pubcomp(packet_id)),
                            other => panic!("expected PUBREL or PINGRESP, got {other:?}"),
                        }
                    }
                }
                seen.push((p.topic.to_string(), p.payload.to_vec(), p.qos, p.retain));
            }
            Packet::PubRel(Ack { packet_id, .. }) => c.send(&pubcomp(packet_id)),
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
}

/// (topic, payload) of each.
fn topics_and_payloads(seen: &[Seen]) -> Vec<(&str, &[u8])> {
    seen.iter()
        .map(|(t, p, _, _)| (t.as_str(), p.as_slice()))
        .collect()
}

/// A fresh client subscribes to `topic` on `addr` until the retained message it gets is
/// `payload` (a retained message may be replaced a moment after a subscriber saw it live).
#[track_caller]
fn wait_retained(addr: SocketAddr, topic: &str, payload: &[u8]) {
    let started = Instant::now();
    let mut last = None;
    for round in 0u16.. {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no retained {:?} at {topic} on {addr}; last seen {last:?}",
            String::from_utf8_lossy(payload)
        );
        let mut c = RawClient::open(addr);
        c.send(&ConnectBuilder::new(&format!("retained-check-{round}")).build());
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
        c.send(&subscribe(1, &[(topic, 1)]));
        let mut got = None;
        while let Some(frame) = c.next_frame_within(Duration::from_millis(200)) {
            if let Packet::Publish(p) = parse(&frame) {
                c.ack(&p);
                got = Some(p);
                break;
            }
        }
        // A live publish can race the SUBSCRIBE (the state changing meanwhile): it is sent
        // without RETAIN (MQTT-3.3.1-9) and says nothing about what is retained; look again.
        if let Some(p) = got.filter(|p| p.retain) {
            if &p.payload[..] == payload {
                c.disconnect();
                return;
            }
            last = Some(String::from_utf8_lossy(&p.payload).into_owned());
        }
        c.disconnect();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn out_and_in_with_prefixes_at_qos_1() {
    with_shards(|shards| {
        let m = Mosquitto::start();
        let broker = start_with_bridges(
            shards,
            vec![bridge_to(
                &m,
                vec![
                    topic("#", Direction::Out, QoS::AtLeastOnce, "edge/", "site1/"),
                    topic(
                        "cmd/#",
                        Direction::In,
                        QoS::AtLeastOnce,
                        "from-cloud/",
                        "site1/",
                    ),
                ],
            )],
        );
        wait_connected(&broker, "test");
        let mut remote_sub = RawClient::open(m.addr);
        remote_sub.send(&ConnectBuilder::new("remote-sub").build());
        remote_sub.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
        remote_sub.subscribe(1, &[("site1/#", 1)]);
        let mut local_sub = broker.connect("local-sub");
        local_sub.subscribe(1, &[("from-cloud/#", 1)]);
        // Out: edge/temp here is site1/temp there.
        let mut local_pub = broker.connect("local-pub");
        local_pub.publish1("edge/temp", b"21.5", false, 1);
        let (p, _) = remote_sub.next_publish();
        assert_eq!((&p.topic[..], &p.payload[..]), ("site1/temp", &b"21.5"[..]));
        remote_sub.ack(&p);
        // In: site1/cmd/reboot there is from-cloud/cmd/reboot here.
        let mut remote_pub = RawClient::open(m.addr);
        remote_pub.send(&ConnectBuilder::new("remote-pub").build());
        remote_pub.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
        remote_pub.publish1("site1/cmd/reboot", b"now", false, 1);
        let (p, _) = local_sub.next_publish();
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            ("from-cloud/cmd/reboot", &b"now"[..])
        );
        local_sub.ack(&p);
        // The message that came in is not sent back out (No Local on the local side): the
        // remote subscriber on site1/# saw only the one it was sent... except the one it
        // published itself, which Mosquitto sends it as to any subscriber.
        let (p, _) = remote_sub.next_publish();
        assert_eq!(&p.topic[..], "site1/cmd/reboot");
        remote_sub.ack(&p);
        remote_sub.expect_nothing();
    });
}

/// A `both` line with prefixes on one link carries messages each way, and neither comes back:
/// what went out is not brought back in (Mosquitto honours try_private and does not send a
/// bridge its own messages), what came in is not sent back out (the local subscription is
/// No Local). Each check reads up to a marker that takes the echo's path after it.
#[test]
fn both_ways_with_prefixes_and_no_echo() {
    with_shards(|shards| {
        let m = Mosquitto::start();
        let broker = start_with_bridges(
            shards,
            vec![bridge_to(
                &m,
                vec![topic(
                    "#",
                    Direction::Both,
                    QoS::AtLeastOnce,
                    "edge/",
                    "site1/",
                )],
            )],
        );
        wait_connected(&broker, "test");
        let (sub_id, pub_id) = broker.ids_apart("local-sub", "local-pub");
        let mut local_sub = broker.connect(&sub_id);
        local_sub.subscribe(1, &[("edge/#", 1)]);
        let mut local_pub = broker.connect(&pub_id);
        let mut remote_sub = remote_client(&m, "remote-sub");
        remote_sub.subscribe(1, &[("site1/#", 1)]);
        let mut remote_pub = remote_client(&m, "remote-pub");

        // Out: edge/x here is site1/x there.
        local_pub.publish1("edge/x", b"out", false, 1);
        let (p, _) = remote_sub.next_publish();
        assert_eq!((&p.topic[..], &p.payload[..]), ("site1/x", &b"out"[..]));
        remote_sub.ack(&p);
        // In: site1/y there is edge/y here. Mosquitto sent site1/x to its subscribers at once,
        // so an echo of it to the bridge would be queued before site1/y.
        remote_pub.publish1("site1/y", b"in", false, 1);
        let (before, marker) = until(&mut local_sub, b"in");
        assert_eq!(&marker.topic[..], "edge/y");
        assert_eq!(
            topics_and_payloads(&before),
            [("edge/x", &b"out"[..])],
            "edge/x once (from the local publisher), not again from the remote broker"
        );
        // The message that came in was routed here before local_sub saw it, so an echo of it
        // would be in the bridge's local queue before this marker.
        local_pub.publish1("edge/z", b"mark", false, 2);
        let (before, marker) = until(&mut remote_sub, b"mark");
        assert_eq!(&marker.topic[..], "site1/z");
        assert_eq!(
            topics_and_payloads(&before),
            [("site1/y", &b"in"[..])],
            "site1/y once (from the remote publisher), not again from the bridge"
        );
        expect_counters(&stats(&broker, "test"), 2, 1, 1);
    });
}

/// `bridge_protocol_version mqttv31`: MQTT 3.1 ("MQIsdp", level 3, with the bridge bit 0x83)
/// towards Mosquitto, both ways, and no echo.
#[test]
fn an_mqtt_31_bridge_carries_both_ways_without_echo() {
    let m = Mosquitto::start();
    let broker = start_with_bridges(
        1,
        vec![BridgeConfig {
            protocol: surgemq::protocol::ProtocolLevel::V31,
            ..bridge_to(
                &m,
                vec![topic(
                    "#",
                    Direction::Both,
                    QoS::AtLeastOnce,
                    "edge/",
                    "site1/",
                )],
            )
        }],
    );
    wait_connected(&broker, "test");
    let mut local_sub = broker.connect("local-sub");
    local_sub.subscribe(1, &[("edge/#", 1)]);
    let mut local_pub = broker.connect("local-pub");
    let mut remote_sub = remote_client(&m, "remote-sub");
    remote_sub.subscribe(1, &[("site1/#", 1)]);
    let mut remote_pub = remote_client(&m, "remote-pub");
    local_pub.publish1("edge/x", b"out", false, 1);
    let (p, _) = remote_sub.next_publish();
    assert_eq!((&p.topic[..], &p.payload[..]), ("site1/x", &b"out"[..]));
    remote_sub.ack(&p);
    remote_pub.publish1("site1/y", b"in", false, 1);
    let (before, marker) = until(&mut local_sub, b"in");
    assert_eq!(&marker.topic[..], "edge/y");
    assert_eq!(topics_and_payloads(&before), [("edge/x", &b"out"[..])]);
    expect_counters(&stats(&broker, "test"), 1, 1, 1);
}

/// The control for the echo check above: without try_private, Mosquitto treats the bridge as
/// an ordinary 3.1.1 subscriber and sends it back what it published, and the check sees it.
#[test]
fn without_try_private_mosquitto_echoes_what_went_out() {
    let m = Mosquitto::start();
    let broker = start_with_bridges(
        1,
        vec![BridgeConfig {
            try_private: false,
            ..bridge_to(
                &m,
                vec![topic(
                    "#",
                    Direction::Both,
                    QoS::AtLeastOnce,
                    "edge/",
                    "site1/",
                )],
            )
        }],
    );
    wait_connected(&broker, "test");
    let mut local_sub = broker.connect("local-sub");
    local_sub.subscribe(1, &[("edge/#", 1)]);
    let mut local_pub = broker.connect("local-pub");
    let mut remote_sub = remote_client(&m, "remote-sub");
    remote_sub.subscribe(1, &[("site1/#", 1)]);
    let mut remote_pub = remote_client(&m, "remote-pub");
    local_pub.publish1("edge/x", b"out", false, 1);
    let (p, _) = remote_sub.next_publish();
    remote_sub.ack(&p);
    remote_pub.publish1("site1/y", b"in", false, 1);
    let (before, _) = until(&mut local_sub, b"in");
    assert_eq!(
        topics_and_payloads(&before),
        [("edge/x", &b"out"[..]), ("edge/x", &b"out"[..])],
        "the echo is seen"
    );
}

/// Three `both` lines at QoS 0, 1 and 2; a message at each QoS on each line, each way. A
/// subscriber at QoS 2 on the other side gets it at the lower of the publish's and the line's
/// QoS, once; the counters count the 9 + 1 messages each way.
#[test]
fn qos_0_1_2_each_way_is_the_lower_of_publish_and_topic_line() {
    let m = Mosquitto::start();
    let lines = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .iter()
        .map(|&q| topic(&format!("q{}/#", q as u8), Direction::Both, q, "l/", "r/"))
        .collect();
    let broker = start_with_bridges(2, vec![bridge_to(&m, lines)]);
    wait_connected(&broker, "test");
    let stats = stats(&broker, "test");
    let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let expected = |prefix: &str| -> BTreeMap<String, QoS> {
        let mut e = BTreeMap::new();
        for line in levels {
            for publish in levels {
                let t = format!("{prefix}q{}/p{}", line as u8, publish as u8);
                e.insert(t, line.min(publish));
            }
        }
        e
    };
    let received = |seen: Vec<Seen>| -> BTreeMap<String, QoS> {
        let n = seen.len();
        let map: BTreeMap<_, _> = seen.into_iter().map(|(t, _, q, _)| (t, q)).collect();
        assert_eq!(map.len(), n, "a message arrived twice");
        map
    };
    let publish = |c: &mut RawClient, topic: &str, qos: QoS, id: u16| match qos {
        QoS::AtMostOnce => c.publish0(topic, b"m", false),
        QoS::AtLeastOnce => c.publish1(topic, b"m", false, id),
        QoS::ExactlyOnce => c.publish2(topic, b"m", false, id),
    };

    // Out.
    let mut remote_sub = remote_client(&m, "remote-sub");
    remote_sub.subscribe(1, &[("r/#", 2)]);
    let mut local_pub = broker.connect("local-pub");
    let mut id = 0;
    for line in levels {
        for qos in levels {
            id += 1;
            let t = format!("l/q{}/p{}", line as u8, qos as u8);
            publish(&mut local_pub, &t, qos, id);
        }
    }
    // All nine were acknowledged by Mosquitto (QoS 2 ones released) before the marker.
    wait_until("nine sent", || get(&stats.sent) == 9);
    local_pub.publish1("l/q1/mark", b"mark", false, 100);
    let (before, _) = until(&mut remote_sub, b"mark");
    assert_eq!(received(before), expected("r/"));
    remote_sub.disconnect();

    // In.
    let mut local_sub = broker.connect("local-sub");
    local_sub.subscribe(1, &[("l/#", 2)]);
    let mut remote_pub = remote_client(&m, "remote-pub");
    let mut id = 0;
    for line in levels {
        for qos in levels {
            id += 1;
            let t = format!("r/q{}/p{}", line as u8, qos as u8);
            publish(&mut remote_pub, &t, qos, id);
        }
    }
    wait_until("nine received", || get(&stats.received) == 9);
    remote_pub.publish1("r/q1/mark", b"mark", false, 100);
    let (before, _) = until(&mut local_sub, b"mark");
    assert_eq!(received(before), expected("l/"));
    expect_counters(&stats, 10, 10, 1);
}

/// A retained message crossing stays retained: a subscriber that comes later on the other
/// side gets it at SUBSCRIBE, with RETAIN set. Both ways.
#[test]
fn retained_messages_stay_retained_across() {
    let m = Mosquitto::start();
    let broker = start_with_bridges(
        1,
        vec![bridge_to(
            &m,
            vec![topic(
                "#",
                Direction::Both,
                QoS::AtLeastOnce,
                "edge/",
                "site1/",
            )],
        )],
    );
    wait_connected(&broker, "test");
    let stats = stats(&broker, "test");
    let mut local_pub = broker.connect("local-pub");
    local_pub.publish1("edge/ret/out", b"kept here", true, 1);
    wait_until("sent", || get(&stats.sent) == 1);
    let mut late = remote_client(&m, "late-remote");
    let frames = late.subscribe_expecting(1, &[("site1/ret/#", 1)], 1);
    let Packet::Publish(p) = parse(&frames[0]) else {
        panic!("{:02x?}", frames[0])
    };
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.retain),
        ("site1/ret/out", &b"kept here"[..], true)
    );
    late.ack(&p);

    let mut remote_pub = remote_client(&m, "remote-pub");
    remote_pub.publish1("site1/ret/in", b"kept there", true, 1);
    wait_until("received", || get(&stats.received) == 1);
    let mut late = broker.connect("late-local");
    let frames = late.subscribe_expecting(1, &[("edge/ret/in", 1)], 1);
    let Packet::Publish(p) = parse(&frames[0]) else {
        panic!("{:02x?}", frames[0])
    };
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.retain),
        ("edge/ret/in", &b"kept there"[..], true)
    );
    expect_counters(&stats, 1, 1, 1);
}

/// A subscriber that reads until its broker goes away (a killed broker may leave half a
/// packet behind), acknowledging QoS 1 messages; `index` parses payloads.
struct Reader {
    stream: TcpStream,
    buf: BytesMut,
}

impl Reader {
    fn new(c: TcpStream) -> Reader {
        Reader {
            stream: c,
            buf: BytesMut::new(),
        }
    }

    /// The next packet, or None when the connection closed or `deadline` passed.
    fn next(&mut self, deadline: Instant) -> Option<Packet> {
        loop {
            match decode(&mut self.buf, 1 << 20, ProtocolLevel::V311) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("Mosquitto sent a malformed packet: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads QoS 1 publishes (payload: a decimal index) into `seen` until the connection
    /// closes, `deadline` passes or `done(seen)`.
    fn collect(
        &mut self,
        seen: &mut Vec<u32>,
        deadline: Instant,
        mut done: impl FnMut(&[u32]) -> bool,
    ) {
        while !done(seen) {
            match self.next(deadline) {
                Some(Packet::Publish(p)) => {
                    let _ = self.stream.write_all(&puback(p.packet_id));
                    seen.push(std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
                }
                Some(other) => panic!("expected PUBLISH, got {other:?}"),
                None => return,
            }
        }
    }
}

/// Mosquitto is SIGKILLed while a local publisher sends QoS 1 messages out through the bridge,
/// and started again on its port. Mosquitto keeps sessions in memory only, so the remote
/// subscriber's persistent session is written to Mosquitto's persistence file (SIGUSR1)
/// before the traffic starts: the restarted Mosquitto has it and queues for it what the bridge
/// sends before the subscriber is back.
///
/// What "none lost" means here: the bridge acknowledges a message to its local session only
/// once Mosquitto acknowledged it, in order, so the messages after the first `sent` (read once
/// the bridge saw the link drop) were never Mosquitto's: those in flight at the kill and those
/// published while Mosquitto was down. Every one of them must reach the subscriber (duplicates
/// allowed, QoS 1). The ones before were acknowledged by the killed Mosquitto, and it may have
/// lost those it had not delivered yet; that is Mosquitto's loss, not the bridge's.
#[test]
fn remote_killed_and_restarted_while_qos1_flows_loses_nothing_the_bridge_held() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("surgemq=info")
        .with_test_writer()
        .try_init();
    let persist = std::env::temp_dir().join(format!("surgemq-bridge-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&persist);
    std::fs::create_dir_all(&persist).unwrap();
    let conf = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n\
         autosave_interval 3600\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
         set_tcp_nodelay true\n",
        persist.display()
    );
    let m = Mosquitto::start_with(&conf);
    let port = m.addr.port();
    let broker = Broker::with_config(BrokerConfig {
        shards: 2,
        max_queued_messages: 100_000,
        bridges: vec![BridgeConfig {
            restart: RestartTimeout::Constant(Duration::from_millis(100)),
            ..bridge_to(
                &m,
                vec![topic(
                    "#",
                    Direction::Out,
                    QoS::AtLeastOnce,
                    "edge/",
                    "site1/",
                )],
            )
        }],
        ..test_config()
    });
    wait_connected(&broker, "test");
    let stats = stats(&broker, "test");
    let persistent = ConnectBuilder::new("remote-sub").clean(false);
    let mut sub = RawClient::open(m.addr);
    sub.send(&persistent.build());
    sub.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    sub.subscribe(1, &[("site1/#", 1)]);
    m.signal(libc::SIGUSR1);
    let db = persist.join("mosquitto.db");
    wait_until("mosquitto wrote its persistence file", || db.exists());
    drop(sub);
    // A fresh connection for the reader thread (RawClient panics on a close).
    let stream = TcpStream::connect(m.addr).unwrap();
    let mut reader = Reader::new(stream);
    reader.stream.write_all(&persistent.build()).unwrap();
    match reader.next(Instant::now() + READ_TIMEOUT) {
        Some(Packet::ConnAck(c)) => assert!(c.session_present && c.code == ReasonCode::SUCCESS),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    let got_before = Arc::new(AtomicUsize::new(0));
    let before_kill = {
        let got = got_before.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            // Until the connection dies with Mosquitto.
            reader.collect(&mut seen, deadline, |s| {
                got.store(s.len(), Ordering::Relaxed);
                false
            });
            seen
        })
    };

    // The publisher sends until told Mosquitto is down, then 1000 more (and at least 2000).
    let down = Arc::new(AtomicBool::new(false));
    let addr = broker.addr;
    let publisher = {
        let down = down.clone();
        std::thread::spawn(move || {
            let mut c = RawClient::open(addr);
            c.send(&ConnectBuilder::new("local-pub").build());
            c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
            let mut stop_at = u32::MAX;
            let mut down_at = 0;
            let mut i = 0u32;
            while i < stop_at {
                c.publish1(
                    "edge/flow",
                    i.to_string().as_bytes(),
                    false,
                    (i % 60_000 + 1) as u16,
                );
                i += 1;
                if stop_at == u32::MAX && down.load(Ordering::Relaxed) {
                    down_at = i;
                    stop_at = (i + 1000).max(2000);
                }
                if stop_at == u32::MAX {
                    // Paced while Mosquitto is up, so it is killed mid-flow, not after it.
                    std::thread::sleep(Duration::from_micros(200));
                }
                assert!(i < 50_000, "Mosquitto was never reported down");
            }
            (down_at, i)
        })
    };
    wait_until("300 messages reached the remote subscriber", || {
        got_before.load(Ordering::Relaxed) >= 300
    });
    m.kill();
    wait_until("the bridge saw the link drop", || !stats.is_connected());
    let acknowledged = get(&stats.sent) as u32;
    down.store(true, Ordering::Relaxed);
    let (published_at_kill, total) = publisher.join().expect("publisher");
    let seen_before = before_kill.join().expect("reader");

    let m = Mosquitto::start_on(port, &conf);
    let stream = TcpStream::connect(m.addr).unwrap();
    let mut reader = Reader::new(stream);
    reader.stream.write_all(&persistent.build()).unwrap();
    match reader.next(Instant::now() + READ_TIMEOUT) {
        Some(Packet::ConnAck(c)) => assert!(
            c.session_present,
            "the subscriber's session came back from the persistence file"
        ),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    let must_arrive: BTreeSet<u32> = (acknowledged..total).collect();
    let mut missing = must_arrive.clone();
    for i in &seen_before {
        missing.remove(i);
    }
    let mut seen_after = Vec::new();
    reader.collect(
        &mut seen_after,
        Instant::now() + Duration::from_secs(10),
        |s| {
            if let Some(i) = s.last() {
                missing.remove(i);
            }
            missing.is_empty()
        },
    );
    assert!(
        missing.is_empty(),
        "{} of the {} messages the bridge held at the kill never arrived (first {:?}); \
         acknowledged before the kill {acknowledged}, published {total}; received after the \
         restart {}; bridge counters (sent, received, dropped, connections, failures) {:?}",
        missing.len(),
        must_arrive.len(),
        missing.iter().next(),
        seen_after.len(),
        counters(&stats)
    );
    // Every message was acknowledged once, by one Mosquitto or the other.
    // (The link counts as up again once its SUBACKs came, which may be after the queue
    // drained: this broker queues a SUBACK behind the messages waiting for the window.)
    wait_until("all sent, link up again", || {
        get(&stats.sent) >= u64::from(total) && get(&stats.connections) >= 2
    });
    assert_eq!(
        counters(&stats),
        (u64::from(total), 0, 0, 2, get(&stats.connect_failures))
    );
    let lost_by_mosquitto = (0..acknowledged)
        .filter(|i| !seen_before.contains(i) && !seen_after.contains(i))
        .count();
    eprintln!(
        "published {total} ({published_at_kill} before Mosquitto was seen down); acknowledged by \
         the killed Mosquitto {acknowledged}; received before the kill {}, after {}; lost by \
         Mosquitto after acknowledging {lost_by_mosquitto}",
        seen_before.len(),
        seen_after.len()
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&persist);
}

/// Adds a user to a Mosquitto password file with Mosquitto's own tool.
fn mosquitto_passwd(file: &std::path::Path, user: &str, password: &str) {
    let out = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(file)
        .arg(user)
        .arg(password)
        .output()
        .expect("mosquitto_passwd (Debian package mosquitto) is installed");
    assert!(
        out.status.success(),
        "mosquitto_passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two bridges to a Mosquitto that wants a password: "good" has the right one and carries a
/// message (so credentials do reach Mosquitto), "bad" has a wrong one. The bad one is refused
/// again and again with back-off (at least `base` between attempts, so the failures cannot
/// pile up faster), never comes up, and the broker goes on serving its clients.
#[test]
fn wrong_credentials_are_retried_with_backoff_and_the_broker_keeps_serving() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("surgemq-bridge-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("users.pw");
    mosquitto_passwd(&passwords, "edge", "right");
    let m = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwords.display()
    ));
    let base = Duration::from_millis(50);
    let with = |name: &str, password: &str| BridgeConfig {
        remote_username: Some("edge".into()),
        remote_password: Some(password.into()),
        restart: RestartTimeout::Backoff {
            base,
            cap: Duration::from_millis(400),
        },
        ..BridgeConfig::new(name, "127.0.0.1", m.addr.port())
    };
    let out = vec![topic(
        "#",
        Direction::Out,
        QoS::AtLeastOnce,
        "edge/",
        "site1/",
    )];
    let broker = start_with_bridges(
        2,
        vec![
            BridgeConfig {
                topics: out.clone(),
                ..with("good", "right")
            },
            BridgeConfig {
                topics: out,
                ..with("bad", "wrong")
            },
        ],
    );
    let (good, bad) = (stats(&broker, "good"), stats(&broker, "bad"));
    wait_until("a first refusal", || get(&bad.connect_failures) >= 1);
    let first = Instant::now();
    wait_until("five refusals", || get(&bad.connect_failures) >= 5);
    let elapsed = first.elapsed();
    assert!(
        elapsed >= base * 4,
        "four more attempts in {elapsed:?}: no back-off of at least {base:?}"
    );
    assert!(!bad.is_connected());
    assert_eq!(get(&bad.connections), 0);
    wait_connected(&broker, "good");

    // The broker serves its clients, and the good bridge carries a message out.
    let mut remote_sub = RawClient::open(m.addr);
    remote_sub.send(
        &ConnectBuilder::new("remote-sub")
            .username("edge")
            .password(b"right")
            .build(),
    );
    remote_sub.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    remote_sub.subscribe(1, &[("site1/#", 1)]);
    let (sub_id, pub_id) = broker.ids_apart("local-sub", "local-pub");
    let mut local_sub = broker.connect(&sub_id);
    local_sub.subscribe(1, &[("edge/#", 1)]);
    let mut local_pub = broker.connect(&pub_id);
    local_pub.publish1("edge/still", b"serving", false, 1);
    let (p, _) = local_sub.next_publish();
    assert_eq!(&p.payload[..], b"serving");
    local_sub.ack(&p);
    let (p, _) = remote_sub.next_publish();
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        ("site1/still", &b"serving"[..])
    );
    remote_sub.ack(&p);
    remote_sub.expect_nothing();
    expect_counters(&good, 1, 0, 1);
    // Still refused, still trying.
    let failures = get(&bad.connect_failures);
    wait_until("another refusal", || get(&bad.connect_failures) > failures);
    assert_eq!(get(&bad.connections), 0);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP relay between the bridge and Mosquitto whose connections the test can cut: Mosquitto
/// then sees the bridge's connection end without DISCONNECT, as when a link dies.
struct Relay {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let sockets = open.clone();
        // The accepting thread outlives the test's use of it; it only ever blocks in accept.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut all = sockets.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, open }
    }

    /// Ends every relayed connection at once (FIN both ways, no MQTT packet).
    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// The next PUBLISH on a client subscribed to the notification topic: its payload (a SUBACK
/// before it is skipped: the retained message and the SUBACK may come in either order).
#[track_caller]
fn next_state(c: &mut RawClient) -> String {
    loop {
        match c.next_packet() {
            Packet::SubAck(_) => {}
            Packet::Publish(p) => {
                c.ack(&p);
                return String::from_utf8(p.payload.to_vec()).unwrap();
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// The link's state, retained at `$SYS/broker/connection/<remote client id>/state` on both
/// brokers: "1" while up. When the link dies uncleanly (the relay cuts it), Mosquitto
/// publishes the bridge's will, "0", and the local broker says "0" too; both say "1" again
/// when the bridge is back. When Mosquitto dies, the local broker says "0". When our broker
/// shuts down cleanly, Mosquitto has "0".
#[test]
fn notifications_on_both_brokers_up_cut_remote_dead_and_clean_shutdown() {
    let m = Mosquitto::start();
    let port = m.addr.port();
    let relay = Relay::to(m.addr);
    let state = "$SYS/broker/connection/edge-1/state";
    let broker = start_with_bridges(
        1,
        vec![BridgeConfig {
            remote_client_id: "edge-1".into(),
            local_client_id: "local.edge-1".into(),
            notification_topic: state.into(),
            restart: RestartTimeout::Constant(Duration::from_millis(300)),
            topics: vec![topic("#", Direction::Out, QoS::AtLeastOnce, "", "")],
            ..BridgeConfig::new("test", "127.0.0.1", relay.addr.port())
        }],
    );
    let stats = stats(&broker, "test");
    // Up: "1" on both (a watcher gets it live or retained; a later subscriber retained).
    let mut remote_watch = remote_client(&m, "remote-watch");
    remote_watch.send(&subscribe(1, &[(state, 1)]));
    let mut local_watch = broker.connect("local-watch");
    local_watch.send(&subscribe(1, &[(state, 1)]));
    assert_eq!(next_state(&mut remote_watch), "1");
    assert_eq!(next_state(&mut local_watch), "1");
    wait_retained(m.addr, state, b"1");
    wait_retained(broker.addr, state, b"1");

    // Cut: Mosquitto publishes the will, then the bridge is back.
    relay.cut();
    assert_eq!(next_state(&mut remote_watch), "0", "the will");
    assert_eq!(next_state(&mut local_watch), "0");
    assert_eq!(next_state(&mut remote_watch), "1");
    assert_eq!(next_state(&mut local_watch), "1");
    wait_until("reconnected", || get(&stats.connections) == 2);

    // Mosquitto dies: "0" here, retained.
    m.kill();
    assert_eq!(next_state(&mut local_watch), "0");
    wait_retained(broker.addr, state, b"0");
    let m = Mosquitto::start_on(port, "allow_anonymous true\n");
    assert_eq!(next_state(&mut local_watch), "1");
    wait_connected(&broker, "test");
    wait_retained(m.addr, state, b"1");

    // A clean shutdown: "0" on Mosquitto.
    let mut remote_watch = remote_client(&m, "remote-watch");
    remote_watch.send(&subscribe(1, &[(state, 1)]));
    assert_eq!(next_state(&mut remote_watch), "1");
    broker.shutdown();
    assert_eq!(next_state(&mut remote_watch), "0");
    wait_retained(m.addr, state, b"0");
}

/// MQTT 5 property bytes: User Properties (0x26) and a Content Type (0x03).
fn v5_properties(user: &[(&str, &str)], content_type: Option<&str>) -> Vec<u8> {
    let mut p = Vec::new();
    if let Some(ct) = content_type {
        p.push(0x03);
        p.extend(field(ct.as_bytes()));
    }
    for (k, v) in user {
        p.push(0x26);
        p.extend(field(k.as_bytes()));
        p.extend(field(v.as_bytes()));
    }
    p
}

/// An MQTT 5 client (Clean Start) on either broker; the CONNACK's properties differ between
/// them, so only its reason is checked.
#[track_caller]
fn v5_client(addr: SocketAddr, id: &str) -> RawClient {
    let mut c = RawClient::open(addr);
    c.send(&ConnectBuilder::v5(id, &[]).build());
    match c.next_packet_v5() {
        Packet::ConnAck(a) => assert_eq!(a.code, ReasonCode::SUCCESS),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    c
}

#[track_caller]
fn v5_subscribe(c: &mut RawClient, filter: &str) {
    c.send(&subscribe_v5(1, &[], &[(filter, 1)]));
    match c.next_packet_v5() {
        Packet::SubAck(a) => assert_eq!(a.return_codes.len(), 1),
        other => panic!("SUBACK expected, got {other:?}"),
    }
}

#[track_caller]
fn v5_publish1(c: &mut RawClient, topic: &str, payload: &[u8], id: u16, properties: &[u8]) {
    c.send(&publish_v5(topic, payload, 1, false, id, properties));
    match c.next_packet_v5() {
        Packet::PubAck(a) => assert_eq!(a.packet_id, id),
        other => panic!("PUBACK expected, got {other:?}"),
    }
}

/// Reads MQTT 5 publishes until the one with payload `marker`; returns those before it.
#[track_caller]
fn v5_until(c: &mut RawClient, marker: &[u8]) -> (Vec<Publish>, Publish) {
    let mut seen = Vec::new();
    loop {
        let p = c.next_publish_v5();
        c.ack(&p);
        if &p.payload[..] == marker {
            return (seen, p);
        }
        seen.push(p);
    }
}

fn user_properties(p: &Publish) -> Vec<(String, String)> {
    p.properties
        .as_ref()
        .map(|p| {
            p.user_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn content_type(p: &Publish) -> Option<ByteStr> {
    p.properties.as_ref().and_then(|p| p.content_type.clone())
}

/// MQTT 5 as the bridge's protocol: user properties (in order, a key twice) and the content
/// type cross both ways; no echo either way (No Local on both sides now, not try_private).
#[test]
fn mqtt5_bridge_forwards_user_properties_and_does_not_echo() {
    with_shards(|shards| {
        let m = Mosquitto::start();
        let broker = start_with_bridges(
            shards,
            vec![BridgeConfig {
                protocol: ProtocolLevel::V5,
                ..bridge_to(
                    &m,
                    vec![topic(
                        "#",
                        Direction::Both,
                        QoS::AtLeastOnce,
                        "edge/",
                        "site1/",
                    )],
                )
            }],
        );
        wait_connected(&broker, "test");
        let (sub_id, pub_id) = broker.ids_apart("local-sub", "local-pub");
        let mut local_sub = v5_client(broker.addr, &sub_id);
        v5_subscribe(&mut local_sub, "edge/#");
        let mut local_pub = v5_client(broker.addr, &pub_id);
        let mut remote_sub = v5_client(m.addr, "remote-sub");
        v5_subscribe(&mut remote_sub, "site1/#");
        let mut remote_pub = v5_client(m.addr, "remote-pub");

        let out_props = [("origin", "edge"), ("k", "1"), ("k", "2")];
        v5_publish1(
            &mut local_pub,
            "edge/x",
            b"out",
            1,
            &v5_properties(&out_props, Some("text/plain")),
        );
        let p = remote_sub.next_publish_v5();
        remote_sub.ack(&p);
        assert_eq!((&p.topic[..], &p.payload[..]), ("site1/x", &b"out"[..]));
        let expected: Vec<_> = out_props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(user_properties(&p), expected);
        assert_eq!(content_type(&p).as_deref(), Some("text/plain"));

        v5_publish1(
            &mut remote_pub,
            "site1/y",
            b"in",
            1,
            &v5_properties(&[("origin", "cloud")], None),
        );
        let (before, p) = v5_until(&mut local_sub, b"in");
        assert_eq!(&p.topic[..], "edge/y");
        assert_eq!(
            user_properties(&p),
            [("origin".to_string(), "cloud".to_string())]
        );
        assert_eq!(
            before
                .iter()
                .map(|p| (&p.topic[..], &p.payload[..]))
                .collect::<Vec<_>>(),
            [("edge/x", &b"out"[..])],
            "no echo of what went out"
        );
        v5_publish1(&mut local_pub, "edge/z", b"mark", 2, &[]);
        let (before, _) = v5_until(&mut remote_sub, b"mark");
        assert_eq!(
            before
                .iter()
                .map(|p| (&p.topic[..], &p.payload[..]))
                .collect::<Vec<_>>(),
            [("site1/y", &b"in"[..])],
            "no echo of what came in"
        );
        expect_counters(&stats(&broker, "test"), 2, 1, 1);
    });
}
