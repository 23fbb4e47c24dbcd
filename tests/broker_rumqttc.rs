//! End-to-end tests of the broker with an independent client, rumqttc (sync API): round trips
//! at every QoS, ordering and completeness between shards under load, many clients, retained
//! messages and wills.

mod common;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{test_config, Broker};
use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, Publish, QoS};
use surgemq::broker::BrokerConfig;

/// How long a test waits for one event it is owed.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A rumqttc client whose event loop runs in its own thread; events arrive on `events`.
struct Mq {
    id: String,
    client: Client,
    events: Receiver<Result<Event, String>>,
}

impl Mq {
    /// Connects and waits for the CONNACK.
    fn connect(broker: &Broker, id: &str) -> Mq {
        Mq::connect_with(broker, id, |_| {})
    }

    fn connect_with(broker: &Broker, id: &str, configure: impl FnOnce(&mut MqttOptions)) -> Mq {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        configure(&mut options);
        let (client, mut connection) = Client::new(options, 100);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                // Stop at the first error: rumqttc would reconnect, which no test wants.
                let stop = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || stop {
                    break;
                }
            }
        });
        let mut mq = Mq {
            id: id.to_string(),
            client,
            events,
        };
        mq.wait_for("CONNACK", |p| match p {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
                Some(())
            }
            _ => None,
        });
        mq
    }

    /// Skips events until `pick` accepts an incoming packet.
    #[track_caller]
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(p))) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(e)) => panic!(
                    "{}: connection error while waiting for {what}: {e}",
                    self.id
                ),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {what} within {EVENT_TIMEOUT:?}", self.id)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: event loop ended waiting for {what}", self.id)
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK granting `qos`.
    #[track_caller]
    fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).unwrap();
        let codes = self.wait_for("SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        });
        assert_eq!(
            codes,
            vec![rumqttc::SubscribeReasonCode::Success(qos)],
            "{}: SUBACK for {filter}",
            self.id
        );
    }

    #[track_caller]
    fn next_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
    }

    /// Publishes and waits until the broker acknowledged it (PUBACK, PUBCOMP; for QoS 0 a
    /// PINGREQ round trip is not available through rumqttc, so nothing).
    #[track_caller]
    fn publish_acked(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
            }
        }
    }

    /// Asserts no PUBLISH arrives for a short while.
    #[track_caller]
    fn expect_no_publish(&mut self) {
        let deadline = Instant::now() + common::QUIET;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    panic!("{}: unexpected PUBLISH {p:?}", self.id)
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{}: connection error: {e}", self.id),
                Err(_) => return,
            }
        }
    }
}

fn both_shard_counts(test: impl Fn(usize) + Sync) {
    common::with_shards(test)
}

/// A sequence number payload, padded so that messages have a realistic size.
fn seq_payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend_from_slice(&[b'.'; 28]);
    p
}

fn seq_of(p: &Publish) -> u32 {
    u32::from_be_bytes(p.payload[..4].try_into().expect("4-byte sequence number"))
}

#[test]
fn round_trip_at_each_qos() {
    both_shard_counts(|shards| {
        let broker = Broker::start(shards);
        let (sub_id, pub_id) = broker.ids_apart("rq-sub", "rq-pub");
        let mut sub = Mq::connect(&broker, &sub_id);
        sub.subscribe("rt/#", QoS::ExactlyOnce);
        let mut publisher = Mq::connect(&broker, &pub_id);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("rt/{qos:?}");
            let payload = format!("payload at {qos:?}");
            publisher.publish_acked(&topic, qos, false, payload.as_bytes());
            let got = sub.next_publish();
            assert_eq!(got.topic, topic);
            assert_eq!(&got.payload[..], payload.as_bytes());
            assert_eq!(got.qos, qos, "delivered at the published QoS (granted 2)");
            assert!(!got.retain && !got.dup);
        }
        sub.expect_no_publish();
        // Granted QoS 1 caps a QoS 2 publish.
        let mut capped = Mq::connect(&broker, &broker.id_on("rq-capped", 1 % shards));
        capped.subscribe("rt/capped", QoS::AtLeastOnce);
        publisher.publish_acked("rt/capped", QoS::ExactlyOnce, false, b"capped");
        assert_eq!(capped.next_publish().qos, QoS::AtLeastOnce);
    });
}

#[test]
fn qos1_ordering_between_shards_5000_messages() {
    // A queue limit above the total: the broker may not drop anything, whatever the pace.
    let broker = Broker::with_config(BrokerConfig {
        shards: 2,
        max_queued_messages: 10_000,
        ..test_config()
    });
    let (sub_id, pub_id) = broker.ids_apart("order1-sub", "order1-pub");
    let mut sub = Mq::connect(&broker, &sub_id);
    sub.subscribe("order/q1", QoS::AtLeastOnce);
    let publisher = Mq::connect(&broker, &pub_id);
    const N: u32 = 5_000;
    let client = publisher.client.clone();
    let sender = std::thread::spawn(move || {
        for seq in 0..N {
            client
                .publish("order/q1", QoS::AtLeastOnce, false, seq_payload(seq))
                .unwrap();
        }
    });
    for expected in 0..N {
        let p = sub.next_publish();
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(seq_of(&p), expected, "out of order or missing");
    }
    sender.join().unwrap();
    sub.expect_no_publish();
}

#[test]
fn qos0_ordering_between_shards_2000_messages() {
    let broker = Broker::start(2);
    let (sub_id, pub_id) = broker.ids_apart("order0-sub", "order0-pub");
    let mut sub = Mq::connect(&broker, &sub_id);
    sub.subscribe("order/q0", QoS::AtMostOnce);
    let publisher = Mq::connect(&broker, &pub_id);
    const N: u32 = 2_000;
    const WINDOW: u32 = 100;
    // Windows of 100 messages, each fully received before the next is sent: far below the
    // session queue limit (1000), so a QoS 0 message has no reason to be dropped.
    for window in 0..N / WINDOW {
        for seq in window * WINDOW..(window + 1) * WINDOW {
            publisher
                .client
                .publish("order/q0", QoS::AtMostOnce, false, seq_payload(seq))
                .unwrap();
        }
        for expected in window * WINDOW..(window + 1) * WINDOW {
            let p = sub.next_publish();
            assert_eq!(p.qos, QoS::AtMostOnce);
            assert_eq!(seq_of(&p), expected, "out of order or missing");
        }
    }
    sub.expect_no_publish();
}

#[test]
fn many_publishers_and_subscribers_receive_everything() {
    const CLIENTS: usize = 10;
    const PER_PUBLISHER: u32 = 50;
    let broker = Broker::start(2);
    let mut subs: Vec<Mq> = (0..CLIENTS)
        .map(|i| {
            let mut s = Mq::connect(&broker, &broker.id_on(&format!("many-sub{i}"), i % 2));
            s.subscribe("many/+/data", QoS::AtLeastOnce);
            s
        })
        .collect();
    let publishers: Vec<Mq> = (0..CLIENTS)
        .map(|i| Mq::connect(&broker, &broker.id_on(&format!("many-pub{i}"), (i + 1) % 2)))
        .collect();
    let senders: Vec<_> = publishers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let client = p.client.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_PUBLISHER {
                    client
                        .publish(
                            format!("many/{i}/data"),
                            QoS::AtLeastOnce,
                            false,
                            seq_payload(seq),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for s in &mut subs {
        // Per publisher, in order and complete (MQTT 4.6: per topic order).
        let mut next = [0u32; CLIENTS];
        for _ in 0..CLIENTS as u32 * PER_PUBLISHER {
            let p = s.next_publish();
            let publisher: usize = p.topic.split('/').nth(1).unwrap().parse().unwrap();
            assert_eq!(
                seq_of(&p),
                next[publisher],
                "{}: from publisher {publisher}",
                s.id
            );
            next[publisher] += 1;
        }
        assert!(
            next.iter().all(|&n| n == PER_PUBLISHER),
            "{}: {next:?}",
            s.id
        );
    }
    for s in senders {
        s.join().unwrap();
    }
    for s in &mut subs {
        s.expect_no_publish();
    }
    drop(publishers);
}

#[test]
fn retained_message_through_rumqttc() {
    both_shard_counts(|shards| {
        let broker = Broker::start(shards);
        let mut publisher = Mq::connect(&broker, &broker.id_on("rret-pub", 0));
        publisher.publish_acked("rret/t", QoS::AtLeastOnce, true, b"kept");
        for shard in 0..shards {
            let mut late = Mq::connect(&broker, &broker.id_on("rret-late", shard));
            late.subscribe("rret/#", QoS::AtLeastOnce);
            let p = late.next_publish();
            assert_eq!((p.topic.as_str(), &p.payload[..]), ("rret/t", &b"kept"[..]));
            assert!(
                p.retain,
                "a retained message to a new subscriber has RETAIN = 1"
            );
            assert_eq!(p.qos, QoS::AtLeastOnce);
            late.expect_no_publish();
        }
        // Cleared by an empty retained message.
        publisher.publish_acked("rret/t", QoS::AtLeastOnce, true, b"");
        let mut later = Mq::connect(&broker, &broker.id_on("rret-later", 1 % shards));
        later.subscribe("rret/#", QoS::AtLeastOnce);
        later.expect_no_publish();
    });
}

#[test]
fn will_through_rumqttc() {
    both_shard_counts(|shards| {
        let broker = Broker::start(shards);
        let mut sub = Mq::connect(&broker, &broker.id_on("rwill-sub", 0));
        sub.subscribe("rwill/#", QoS::ExactlyOnce);
        let mut options = MqttOptions::new(
            broker.id_on("rwill-client", 1 % shards),
            "127.0.0.1",
            broker.addr.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_last_will(LastWill::new(
            "rwill/status",
            "lost",
            QoS::AtLeastOnce,
            false,
        ));
        let (client, mut connection) = Client::new(options, 10);
        // Drive the connection until CONNACK, then drop it: the socket closes without
        // DISCONNECT.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no CONNACK for the will client");
            match connection.recv_timeout(EVENT_TIMEOUT) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                other => panic!("will client: {other:?}"),
            }
        }
        drop(connection);
        drop(client);
        let p = sub.next_publish();
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("rwill/status", &b"lost"[..])
        );
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(!p.retain);
        // A clean DISCONNECT through rumqttc publishes no will.
        let polite = Mq::connect_with(&broker, &broker.id_on("rwill-polite", 0), |o| {
            o.set_last_will(LastWill::new(
                "rwill/status",
                "not this",
                QoS::AtLeastOnce,
                false,
            ));
        });
        polite.client.disconnect().unwrap();
        loop {
            match polite.events.recv_timeout(EVENT_TIMEOUT) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => break,
                Ok(_) => {}
                Err(e) => panic!("polite client sent no DISCONNECT: {e:?}"),
            }
        }
        sub.expect_no_publish();
    });
}
