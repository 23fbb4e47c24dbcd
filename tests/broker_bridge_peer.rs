//! The broker as the remote end of another broker's bridge: a 3.1/3.1.1 CONNECT whose
//! protocol level has its top bit set (Mosquitto's `try_private`, level 0x84 or 0x83) is a
//! bridge. It never gets its own messages back (as if every subscription were No Local) and
//! live messages keep their retain flag (Retain As Published), so two brokers bridged both
//! ways do not echo each other's messages and retained messages stay retained across.
//! Exact bytes, 1 and 2 shards.

mod common;

use common::*;

#[test]
fn a_bridge_does_not_get_its_own_messages_back_and_keeps_retain_flags() {
    with_shards(|shards| {
        let broker = Broker::start(shards);
        let (bridge_id, other_id) = broker.ids_apart("peer-bridge", "peer-other");
        let mut bridge =
            broker.connect_with(&ConnectBuilder::new(&bridge_id).protocol(b"MQTT", 0x84));
        bridge.subscribe(1, &[("b/#", 1)]);
        let mut other = broker.connect(&other_id);
        other.subscribe(1, &[("b/#", 1)]);
        // The bridge's own message reaches the other subscriber only (PUBACK: matched).
        bridge.publish1("b/1", b"from the bridge", false, 1);
        other.expect_bytes(&publish("b/1", b"from the bridge", 1, false, false, 1));
        other.send(&puback(1));
        // Another client's message reaches the bridge, and a live retained one stays retained
        // for it (an ordinary 3.1.1 subscriber sees RETAIN 0, MQTT-3.3.1-9).
        other.send(&publish("b/2", b"retained", 1, true, false, 2));
        let mut got = vec![other.next_frame(), other.next_frame()];
        got.sort();
        assert_eq!(
            got,
            vec![
                publish("b/2", b"retained", 1, false, false, 2),
                puback(2).to_vec(),
            ]
        );
        bridge.expect_bytes(&publish("b/2", b"retained", 1, true, false, 1));
        bridge.send(&puback(1));
        other.send(&puback(2));
        bridge.expect_nothing();
        other.expect_nothing();
    });
}

#[test]
fn an_ordinary_client_gets_its_own_messages_back() {
    // The control: without the bit, 3.1.1's rule (no No Local) applies.
    let broker = Broker::start(1);
    let mut c = broker.connect("peer-plain");
    c.subscribe(1, &[("b/#", 0)]);
    c.publish0("b/1", b"echo", false);
    c.expect_bytes(&publish("b/1", b"echo", 0, false, false, 0));
}
