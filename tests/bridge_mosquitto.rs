//! Bridges against a real Mosquitto (the Debian package) as the remote broker, started per
//! test on a free loopback port: `out`, `in` and `both` topics with prefixes, QoS 0/1/2, the
//! remote killed and started again while QoS 1 messages flow, wrong credentials, and the
//! notification topic. Messages are checked with raw clients on both brokers.

mod common;
#[allow(dead_code)]
#[path = "client_util/mosquitto.rs"]
mod mosquitto;

use std::time::{Duration, Instant};

use common::*;
use mosquitto::Mosquitto;
use surgemq::broker::bridge::{BridgeConfig, BridgeTopic, Direction, RestartTimeout};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::QoS;

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

/// Waits until the bridge's link is up (its stats say so).
fn wait_connected(broker: &Broker, name: &str) {
    let started = Instant::now();
    loop {
        let board = broker.handle().bridges();
        let (_, stats) = board
            .iter()
            .find(|(n, _)| n == name)
            .expect("bridge exists");
        if stats.is_connected() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "bridge {name} did not connect"
        );
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
