//! The per-shard counters: what a broker reports about its traffic, drops and protocol errors.

mod common;

use common::*;
use surgemq::broker::{self, BrokerConfig, MetricsSnapshot};

fn total(snapshots: &[MetricsSnapshot], f: impl Fn(&MetricsSnapshot) -> u64) -> u64 {
    snapshots.iter().map(f).sum()
}

#[test]
fn counters_account_for_traffic_and_name_the_rules_broken() {
    let handle = broker::start(BrokerConfig {
        shards: 2,
        ..test_config()
    })
    .unwrap();
    let addr = handle.local_addrs()[0];

    let mut sub = RawClient::open(addr);
    sub.send(&ConnectBuilder::new(&id_on_shard("m-sub", 0, 2)).build());
    sub.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    sub.subscribe(1, &[("m/t", 1)]); // expects SUBACK 90 03 00 01 01

    let mut publisher = RawClient::open(addr);
    publisher.send(&ConnectBuilder::new(&id_on_shard("m-pub", 1, 2)).build());
    publisher.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    publisher.publish1("m/t", b"hello", false, 7); // expects PUBACK 40 02 00 07
    let (p, _) = sub.next_publish();
    assert_eq!(&p.payload[..], b"hello");
    sub.ack(&p);
    sub.ping();

    // SUBSCRIBE with reserved flags 0 instead of 0b0010 (MQTT-2.2.2-2): closed and counted.
    let mut bad = RawClient::open(addr);
    bad.send(&ConnectBuilder::new("m-bad").build());
    bad.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    bad.send(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'x', 0x00]);
    bad.expect_closed();
    drop((sub, publisher));

    let snapshots = handle.shutdown();
    assert_eq!(total(&snapshots, |s| s.protocol_errors), 1);
    let rules: Vec<&String> = snapshots
        .iter()
        .flat_map(|s| s.protocol_errors_by_rule.iter().map(|(rule, _)| rule))
        .collect();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].contains("MQTT-2.2.2-2"), "{rules:?}");
    assert_eq!(total(&snapshots, |s| s.connections_total), 3);
    assert_eq!(total(&snapshots, |s| s.messages_routed), 1);
    // In: 3 CONNECT, SUBSCRIBE, PUBLISH, PUBACK, PINGREQ (the malformed SUBSCRIBE is no packet).
    assert_eq!(total(&snapshots, |s| s.packets_in), 7);
    // Out: 3 CONNACK, SUBACK, PUBACK, PUBLISH, PINGRESP.
    assert_eq!(total(&snapshots, |s| s.packets_out), 7);
    assert!(total(&snapshots, |s| s.bytes_in) > 60);
    assert!(total(&snapshots, |s| s.bytes_out) > 20);
}
