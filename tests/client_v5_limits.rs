//! The client library's MQTT 5 flow control and packet limits, both ways, and its topic
//! aliases and Message Expiry handling. Against our broker (in process, two shards): the
//! server's Receive Maximum and Maximum Packet Size are kept to, and topic aliases the client
//! sends arrive as their topics. Against a scripted server (a std thread reading and writing
//! exact bytes): what a real broker never does, i.e. exceeding the client's Receive Maximum
//! (DISCONNECT 0x93) or Maximum Packet Size (DISCONNECT 0x95), and what only bytes show: the
//! aliases on the wire and the Message Expiry Interval of a message sent again after a
//! reconnect.

mod client_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use client_util::scripted::{read_packet, serve};
use client_util::{recv, run};
use surgemq::broker::{self, BrokerConfig, BrokerHandle};
use surgemq::client::{Client, ClientError, ClientOptions, ProtocolError};
use surgemq::protocol::{DecodeError, Properties, ProtocolLevel, QoS};

const LIMIT: Duration = Duration::from_secs(15);

struct Broker(Option<BrokerHandle>);

impl Broker {
    fn start_with(config: BrokerConfig) -> Broker {
        let handle = broker::start(BrokerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            shards: 2,
            ..config
        })
        .expect("broker starts");
        Broker(Some(handle))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().unwrap().local_addrs()[0]
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

fn v5(addr: SocketAddr, client_id: &str) -> ClientOptions {
    ClientOptions {
        protocol: ProtocolLevel::V5,
        ..client_util::options(addr, client_id)
    }
}

/// The broker takes 2 QoS 1/2 messages in flight per client and closes with 0x93 beyond:
/// 40 pipelined publishes at QoS 1 and 2 go out 2 at a time and all arrive, in order.
#[test]
fn the_servers_receive_maximum_is_kept_to() {
    let b = Broker::start_with(BrokerConfig {
        receive_maximum: 2,
        ..BrokerConfig::default()
    });
    run(LIMIT, async {
        let (sub, mut inbox) = Client::connect(v5(b.addr(), "rm-sub")).await.unwrap();
        sub.subscribe(&[("rm/t", QoS::ExactlyOnce)]).await.unwrap();
        let (publisher, _) = Client::connect(v5(b.addr(), "rm-pub")).await.unwrap();
        let rm = publisher.server_properties().unwrap().receive_maximum;
        assert_eq!(rm, Some(2));
        let acks: Vec<_> = (0..40)
            .map(|i| {
                let qos = if i % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                publisher.publish("rm/t", i.to_string(), qos, false)
            })
            .collect();
        assert!(publisher.inflight() <= 2, "{}", publisher.inflight());
        for ack in acks {
            ack.await.expect("acknowledged, connection up");
        }
        for i in 0..40 {
            assert_eq!(recv(&mut inbox).await.payload, i.to_string());
        }
        assert!(publisher.is_connected());
        publisher.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
    });
}

/// The broker's Maximum Packet Size is 1024: a larger PUBLISH is refused before it is sent,
/// naming the limit, and the connection stays up.
#[test]
fn the_servers_maximum_packet_size_is_kept_to() {
    let b = Broker::start_with(BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    });
    run(LIMIT, async {
        let (c, mut inbox) = Client::connect(v5(b.addr(), "mps")).await.unwrap();
        c.subscribe(&[("mps/t", QoS::AtLeastOnce)]).await.unwrap();
        let e = c
            .publish("mps/t", vec![b'x'; 1100], QoS::AtLeastOnce, false)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Invalid { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("exceeds the server's Maximum Packet Size 1024"),
            "{e}"
        );
        c.publish("mps/t", vec![b'x'; 900], QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(recv(&mut inbox).await.payload.len(), 900);
        assert!(c.is_connected());
        c.disconnect().await.unwrap();
    });
}

/// Two aliases for three topics, used in turns: every message arrives under its topic, at a
/// v5 and at a 3.1.1 subscriber, and the broker (which checks aliases, 0x94) stays content.
#[test]
fn topic_aliases_sent_by_the_client_arrive_as_their_topics() {
    let b = Broker::start_with(BrokerConfig::default());
    run(LIMIT, async {
        let (sub5, mut inbox5) = Client::connect(v5(b.addr(), "alias-sub5")).await.unwrap();
        sub5.subscribe(&[("alias/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        let (sub3, mut inbox3) = client_util::connect(b.addr(), "alias-sub3").await;
        sub3.subscribe(&[("alias/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        let options = ClientOptions {
            outgoing_topic_aliases: Some(2),
            ..v5(b.addr(), "alias-pub")
        };
        let (publisher, _) = Client::connect(options).await.unwrap();
        let topics = [
            "alias/a", "alias/b", "alias/a", "alias/c", "alias/a", "alias/b",
        ];
        let mut sent = Vec::new();
        for round in 0..3 {
            for (i, topic) in topics.iter().enumerate() {
                let qos = if i % 2 == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                let payload = format!("{round}-{i}");
                publisher
                    .publish(topic, payload.clone(), qos, false)
                    .await
                    .unwrap();
                sent.push((topic.to_string(), payload));
            }
        }
        for inbox in [&mut inbox5, &mut inbox3] {
            for (topic, payload) in &sent {
                let m = recv(inbox).await;
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..]),
                    (&topic[..], payload.as_bytes())
                );
            }
        }
        assert!(publisher.is_connected());
        publisher.disconnect().await.unwrap();
        sub5.disconnect().await.unwrap();
        sub3.disconnect().await.unwrap();
    });
}

// The scripted server.

/// The connection ends: EOF (or a reset) on the next read.
fn expect_closed(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "still open");
}

/// CONNACK accepted, with the session-present flag and these properties.
fn connack(session_present: bool, properties: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x20,
        (2 + 1 + properties.len()) as u8,
        u8::from(session_present),
        0x00,
        properties.len() as u8,
    ];
    out.extend_from_slice(properties);
    out
}

fn scripted(addr: SocketAddr) -> ClientOptions {
    ClientOptions {
        client_id: "scripted5".into(),
        protocol: ProtocolLevel::V5,
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::new("127.0.0.1", addr.port())
    }
}

/// Receive Maximum 2, and the server sends a third QoS 2 PUBLISH before releasing any: the
/// client answers the first two with PUBREC, then DISCONNECT 0x93, and closes.
#[test]
fn a_server_exceeding_the_clients_receive_maximum_gets_disconnect_0x93() {
    let (addr, server) = serve(vec![Box::new(|s| {
        assert_eq!(read_packet(s)[0], 0x10, "CONNECT");
        s.write_all(&connack(false, &[])).unwrap();
        for id in 1..=3u8 {
            s.write_all(&[0x34, 0x06, 0x00, 0x01, b't', 0x00, id, 0x00])
                .unwrap();
        }
        assert_eq!(read_packet(s), [0x50, 0x02, 0x00, 0x01], "PUBREC 1");
        assert_eq!(read_packet(s), [0x50, 0x02, 0x00, 0x02], "PUBREC 2");
        assert_eq!(read_packet(s), [0xe0, 0x01, 0x93], "DISCONNECT 0x93");
        expect_closed(s);
    })]);
    run(LIMIT, async {
        let options = ClientOptions {
            receive_maximum: Some(2),
            ..scripted(addr)
        };
        let (_c, mut inbox) = Client::connect(options).await.unwrap();
        recv(&mut inbox).await;
        recv(&mut inbox).await;
        let e = inbox.recv().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Protocol(ProtocolError::ReceiveMaximumExceeded { maximum: 2 })
            ),
            "{e}"
        );
    });
    server.join().unwrap();
}

/// Maximum Packet Size 128, and the server sends a 200-byte PUBLISH: DISCONNECT 0x95.
#[test]
fn a_packet_above_the_clients_maximum_packet_size_gets_disconnect_0x95() {
    let (addr, server) = serve(vec![Box::new(|s| {
        let connect = read_packet(s);
        // Maximum Packet Size 128 announced.
        let announced = [0x27, 0x00, 0x00, 0x00, 0x80];
        assert!(connect.windows(5).any(|w| w == announced), "{connect:02x?}");
        s.write_all(&connack(false, &[])).unwrap();
        let mut publish = vec![0x30, 0xc5, 0x01, 0x00, 0x01, b't', 0x00];
        publish.resize(200, b'x');
        s.write_all(&publish).unwrap();
        assert_eq!(read_packet(s), [0xe0, 0x01, 0x95], "DISCONNECT 0x95");
        expect_closed(s);
    })]);
    run(LIMIT, async {
        let options = ClientOptions {
            maximum_packet_size: Some(128),
            ..scripted(addr)
        };
        let (_c, mut inbox) = Client::connect(options).await.unwrap();
        let e = inbox.recv().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Protocol(ProtocolError::Decode(DecodeError::PacketTooLarge { .. }))
            ),
            "{e}"
        );
    });
    server.join().unwrap();
}

/// The bytes of outgoing aliases: the topic with its alias first, the alias alone after.
#[test]
fn outgoing_topic_aliases_on_the_wire() {
    let (addr, server) = serve(vec![Box::new(|s| {
        assert_eq!(read_packet(s)[0], 0x10, "CONNECT");
        // Topic Alias Maximum 5.
        s.write_all(&connack(false, &[0x22, 0x00, 0x05])).unwrap();
        #[rustfmt::skip]
        let first = [
            0x30, 0x0a, 0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
            0x03, 0x23, 0x00, 0x01, b'1',             // Topic Alias 1
        ];
        assert_eq!(read_packet(s), first);
        let again = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'2'];
        assert_eq!(read_packet(s), again);
        assert_eq!(read_packet(s), [0xe0, 0x00], "DISCONNECT");
    })]);
    run(LIMIT, async {
        let options = ClientOptions {
            outgoing_topic_aliases: Some(10),
            ..scripted(addr)
        };
        let (c, _) = Client::connect(options).await.unwrap();
        c.publish("a/b", "1", QoS::AtMostOnce, false).await.unwrap();
        c.publish("a/b", "2", QoS::AtMostOnce, false).await.unwrap();
        c.disconnect().await.unwrap();
    });
    server.join().unwrap();
}

/// Two QoS 1 messages, Message Expiry Interval 30 and 1 s, are sent and not acknowledged;
/// the connection drops and the client is back about 1.2 s later: the first goes out again
/// (DUP) with about 1.2 s taken off its 30, the second has expired and fails.
#[test]
fn a_message_sent_again_after_a_reconnect_has_its_expiry_lowered_or_is_dropped() {
    let expiry = |secs: u8| [0x05, 0x02, 0x00, 0x00, 0x00, secs];
    let (addr, server) = serve(vec![
        Box::new(move |s| {
            assert_eq!(read_packet(s)[0], 0x10, "CONNECT");
            s.write_all(&connack(false, &[])).unwrap();
            for (id, secs) in [(1u8, 30u8), (2, 1)] {
                let p = read_packet(s);
                assert_eq!(p[0], 0x32, "QoS 1 PUBLISH");
                assert_eq!(p[5..7], [0x00, id]);
                assert_eq!(p[7..13], expiry(secs));
            }
            // Dropped without acknowledging either.
        }),
        Box::new(move |s| {
            assert_eq!(read_packet(s)[0], 0x10, "CONNECT again");
            s.write_all(&connack(true, &[])).unwrap();
            let p = read_packet(s);
            assert_eq!(p[0], 0x3a, "QoS 1 PUBLISH, DUP");
            assert_eq!(p[5..7], [0x00, 0x01]);
            assert_eq!(p[7..11], [0x05, 0x02, 0x00, 0x00]);
            assert!((27..=29).contains(&p[12]), "{} s left of 30", p[12]);
            s.write_all(&[0x40, 0x02, 0x00, 0x01]).unwrap();
            assert_eq!(read_packet(s), [0xe0, 0x00], "DISCONNECT");
        }),
    ]);
    run(LIMIT, async {
        let options = ClientOptions {
            session_expiry: Some(60),
            reconnect_interval: Some(Duration::from_millis(1200)),
            ..scripted(addr)
        };
        let (c, _inbox) = Client::connect(options).await.unwrap();
        let with_expiry = |secs| Properties {
            message_expiry_interval: Some(secs),
            ..Properties::default()
        };
        let long = c.publish_with("t", "x", QoS::AtLeastOnce, false, with_expiry(30));
        let short = c.publish_with("t", "x", QoS::AtLeastOnce, false, with_expiry(1));
        let e = short.await.unwrap_err();
        assert!(
            matches!(e, ClientError::MessageExpired { interval: 1 }),
            "{e}"
        );
        long.await.expect("sent again and acknowledged");
        c.disconnect().await.unwrap();
    });
    server.join().unwrap();
}

/// Publishes made while the connection is down wait for the next one: there, one with
/// Message Expiry Interval 30 goes out with the time it waited (about 1.2 s) taken off, and
/// one with 1 s has expired and fails without being sent.
#[test]
fn a_message_waiting_for_the_connection_has_its_expiry_lowered_or_is_dropped() {
    let (addr, server) = serve(vec![
        Box::new(|s| {
            assert_eq!(read_packet(s)[0], 0x10, "CONNECT");
            s.write_all(&connack(false, &[])).unwrap();
            // Closed at once.
        }),
        Box::new(|s| {
            assert_eq!(read_packet(s)[0], 0x10, "CONNECT again");
            s.write_all(&connack(false, &[])).unwrap();
            let p = read_packet(s);
            assert_eq!(p[0], 0x32, "QoS 1 PUBLISH");
            assert_eq!(&p[2..5], [0x00, 0x01, b'l']);
            assert_eq!(p[7..11], [0x05, 0x02, 0x00, 0x00]);
            assert!((28..=29).contains(&p[12]), "{} s left of 30", p[12]);
            let id = [p[5], p[6]];
            s.write_all(&[0x40, 0x02, id[0], id[1]]).unwrap();
            assert_eq!(
                read_packet(s),
                [0xe0, 0x00],
                "DISCONNECT, nothing before it"
            );
        }),
    ]);
    run(LIMIT, async {
        let options = ClientOptions {
            reconnect_interval: Some(Duration::from_millis(1200)),
            ..scripted(addr)
        };
        let (c, _inbox) = Client::connect(options).await.unwrap();
        while c.is_connected() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        let with_expiry = |secs| Properties {
            message_expiry_interval: Some(secs),
            ..Properties::default()
        };
        let long = c.publish_with("l", "x", QoS::AtLeastOnce, false, with_expiry(30));
        let short = c.publish_with("s", "x", QoS::AtLeastOnce, false, with_expiry(1));
        long.await.expect("sent on the new connection");
        let e = short.await.unwrap_err();
        assert!(
            matches!(e, ClientError::MessageExpired { interval: 1 }),
            "{e}"
        );
        c.disconnect().await.unwrap();
    });
    server.join().unwrap();
}
