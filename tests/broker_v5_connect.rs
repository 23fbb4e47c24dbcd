//! End-to-end tests of the broker's MQTT 5 CONNECT handling over raw sockets: what an MQTT 5
//! client hears when its CONNECT is refused before a session exists (5.0 4.13.1), and the
//! CONNACK properties the broker adds on request or when it overrides the client.

mod common;

use std::time::Duration;

use common::*;
use surgemq::broker::BrokerConfig;

#[test]
fn v5_connect_with_a_protocol_error_gets_connack_0x82() {
    // 3.1.2.11: a property given twice is a Protocol Error; 4.13.1: the server MAY say so
    // in CONNACK before closing, and SurgeMQ does.
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.socket();
        #[rustfmt::skip]
        let props = [
            0x11, 0x00, 0x00, 0x00, 0x05, // Session Expiry Interval 5
            0x11, 0x00, 0x00, 0x00, 0x06, // and again
        ];
        c.send(&ConnectBuilder::v5("dup", &props).build());
        c.expect_bytes(&[0x20, 0x03, 0x00, 0x82, 0x00]);
        c.expect_closed();
    });
}

#[test]
fn v5_malformed_connect_gets_connack_0x81() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let mut c = broker.socket();
        // The client id is not UTF-8 (1.5.4): a Malformed Packet.
        c.send(&[
            0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00,
            0x02, 0xff, 0xfe,
        ]);
        c.expect_bytes(&[0x20, 0x03, 0x00, 0x81, 0x00]);
        c.expect_closed();
        // The same from a 3.1.1 client is closed without a word (MQTT-4.8.0-1 of 3.1.1).
        let mut c = broker.socket();
        c.send(&[
            0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02,
            0xff, 0xfe,
        ]);
        c.expect_closed();
        // Nothing else was hurt.
        broker
            .connect_v5(&ConnectBuilder::v5("after", &[]))
            .expect_open_and_silent(Duration::from_millis(50));
    });
}

/// A CONNACK accepting an MQTT 5 client with `extra` properties before the default ones
/// (properties are written in identifier order).
fn connack_v5_with(extra: &[u8]) -> Vec<u8> {
    let mut props = extra.to_vec();
    props.extend_from_slice(&CONNACK_V5_PROPERTIES);
    let mut body = vec![0x00, 0x00];
    body.extend(remaining_length(props.len()));
    body.extend(props);
    frame(0x20, &body)
}

fn broker_with(shards: usize, configure: impl FnOnce(&mut BrokerConfig)) -> Broker {
    let mut config = BrokerConfig {
        shards,
        ..test_config()
    };
    configure(&mut config);
    Broker::with_config(config)
}

#[test]
fn v5_keepalive_above_max_keepalive_is_overridden_with_server_keep_alive() {
    // MQTT-3.2.2-21: the client must use the Server Keep Alive the CONNACK says.
    let broker = broker_with(1, |c| c.max_keepalive = 2);
    let mut c = broker.socket();
    c.send(&ConnectBuilder::v5("ka", &[]).keep_alive(60).build());
    c.expect_bytes(&connack_v5_with(&[0x13, 0x00, 0x02])); // Server Keep Alive 2
                                                           // And the broker holds it to 2 s (closed after 1.5 x 2 s of silence, 0x8D), not 60.
    let start = std::time::Instant::now();
    c.expect_bytes(&[0xe0, 0x01, 0x8d]);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(2500), "closed after {took:?}");
    c.expect_closed();
    // No keepalive at all is overridden too; within the maximum, nothing is said.
    let mut c = broker.socket();
    c.send(&ConnectBuilder::v5("ka0", &[]).keep_alive(0).build());
    c.expect_bytes(&connack_v5_with(&[0x13, 0x00, 0x02]));
    let mut c = broker.socket();
    c.send(&ConnectBuilder::v5("ka1", &[]).keep_alive(1).build());
    c.expect_bytes(&connack_v5(false));
}

#[test]
fn v311_keepalive_above_max_keepalive_is_refused() {
    // 3.1.1 has no Server Keep Alive: refused with CONNACK 2, as Mosquitto does.
    let broker = broker_with(1, |c| c.max_keepalive = 30);
    let mut c = broker.socket();
    c.send(&ConnectBuilder::new("ka3").keep_alive(31).build());
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x02]);
    c.expect_closed();
    let mut c = broker.socket();
    c.send(&ConnectBuilder::new("ka3").keep_alive(30).build());
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn v5_response_information_is_sent_only_on_request() {
    let broker = broker_with(1, |c| c.response_information = Some("replies/%c/".into()));
    let mut c = broker.socket();
    // Request Response Information 1.
    c.send(&ConnectBuilder::v5("asker", &[0x19, 0x01]).build());
    let mut info = vec![0x1a];
    info.extend(field(b"replies/asker/"));
    c.expect_bytes(&connack_v5_with(&info));
    let mut c = broker.socket();
    c.send(&ConnectBuilder::v5("quiet", &[]).build());
    c.expect_bytes(&connack_v5(false));
}

#[test]
fn v5_a_session_past_its_expiry_is_not_resumed_even_before_the_sweep() {
    // The sweep that removes expired sessions runs once a second; a CONNECT that comes after
    // the deadline but before the sweep must not find the session either (MQTT-3.1.2-23).
    let broker = Broker::start(1);
    let expiry = [0x11, 0x00, 0x00, 0x00, 0x01]; // Session Expiry Interval 1 s
    for round in 0..3 {
        let id = format!("brief-{round}");
        let mut c = broker.connect_v5(&ConnectBuilder::v5(&id, &expiry).clean(false));
        c.subscribe_v5(1, &[("brief/t", 0x01)]);
        c.disconnect();
        std::thread::sleep(Duration::from_millis(1100));
        broker
            .connect_v5(&ConnectBuilder::v5(&id, &expiry).clean(false))
            .disconnect();
    }
}
