//! The client library speaking MQTT 5, against our broker (in process, two shards) and against
//! Mosquitto: user properties and other PUBLISH properties end to end, PUBACK 0x10 as a
//! success, session expiry and resuming, assigned client identifiers, No Local,
//! subscription identifiers, a session taken over (server DISCONNECT 0x8e), refusals by an ACL
//! (PUBACK / SUBACK 0x87), a will with properties sent by DISCONNECT 0x04, the session
//! expiry DISCONNECT sets, and Mosquitto's
//! Server Keep Alive, Maximum QoS, Retain Available and Receive Maximum.

mod client_util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use client_util::mosquitto::Mosquitto;
use client_util::{recv, recv_within, run};
use surgemq::auth::{AclFile, FileAuthenticator};
use surgemq::broker::{self, BrokerConfig, BrokerHandle};
use surgemq::client::{Client, ClientError, ClientOptions, Messages, Will, WillProperties};
use surgemq::protocol::{
    ByteStr, PacketType, Properties, ProtocolLevel, QoS, ReasonCode, RetainHandling,
    SubscribeReturnCode, SubscriptionOptions,
};

const LIMIT: Duration = Duration::from_secs(15);

struct Broker(Option<BrokerHandle>);

impl Broker {
    fn start() -> Broker {
        Broker::start_with(BrokerConfig::default())
    }

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

async fn connect(options: ClientOptions) -> (Client, Messages) {
    let id = options.client_id.clone();
    Client::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
}

fn s(v: &str) -> ByteStr {
    ByteStr::from(v)
}

/// User properties (in order, repeated keys kept), content type, response topic,
/// correlation data and payload format from one v5 client to another, at QoS 0, 1 and 2.
fn properties_end_to_end(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/props");
        let (sub, mut inbox) = connect(v5(addr, &format!("{tag}-psub"))).await;
        sub.subscribe(&[(topic.as_str(), QoS::ExactlyOnce)])
            .await
            .unwrap();
        let (publisher, _) = connect(v5(addr, &format!("{tag}-ppub"))).await;
        let sent = Properties {
            payload_format_utf8: Some(true),
            content_type: Some(s("text/plain")),
            response_topic: Some(s("reply/here")),
            correlation_data: Some("id-42".into()),
            user_properties: vec![(s("k"), s("v")), (s("a"), s("1")), (s("k"), s("v2"))],
            ..Properties::default()
        };
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publisher
                .publish_with(&topic, "hello", qos, false, sent.clone())
                .await
                .unwrap();
            let m = recv(&mut inbox).await;
            assert_eq!(
                (m.topic.as_str(), &m.payload[..], m.qos),
                (&*topic, &b"hello"[..], qos)
            );
            let got = m.properties.expect("properties forwarded");
            assert_eq!(got.user_properties, sent.user_properties);
            assert_eq!(got.content_type, sent.content_type);
            assert_eq!(got.response_topic, sent.response_topic);
            assert_eq!(got.correlation_data, sent.correlation_data);
            assert_eq!(got.payload_format_utf8, Some(true));
        }
        // A subscription identifier comes back on the messages it matched.
        let tagged = format!("{tag}/tagged");
        let with_id = Properties {
            subscription_identifiers: [5].into_iter().collect(),
            ..Properties::default()
        };
        sub.subscribe_with(&[(tagged.as_str(), QoS::AtLeastOnce.into())], with_id)
            .await
            .unwrap();
        publisher
            .publish(&tagged, "x", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!(
            m.properties.unwrap().subscription_identifiers.as_slice(),
            [5]
        );
        // 3.1.1 has no properties to send.
        let (old, _) = connect(client_util::options(addr, &format!("{tag}-old"))).await;
        let e = old
            .publish_with(&topic, "x", QoS::AtMostOnce, false, sent.clone())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("need MQTT 5"), "{e}");
        for c in [sub, publisher, old] {
            c.disconnect().await.unwrap();
        }
    });
}

/// PUBACK / PUBREC 0x10 "no matching subscribers" is a success, not an error.
fn no_subscribers_is_success(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let (c, _) = connect(v5(addr, &format!("{tag}-lonely"))).await;
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            c.publish(&format!("{tag}/nobody/listens"), "x", qos, false)
                .await
                .unwrap_or_else(|e| panic!("QoS {qos:?}: {e}"));
        }
        assert_eq!(c.inflight(), 0);
        c.disconnect().await.unwrap();
    });
}

/// A session with an expiry outlives its connection: messages published meanwhile arrive
/// on resuming. Without an expiry, the session ends with the connection (MQTT 5 3.1.2.11.2).
fn session_expiry_resumes(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/kept");
        let id = format!("{tag}-keeper");
        let keeper = |clean_session, session_expiry| ClientOptions {
            clean_session,
            session_expiry,
            ..v5(addr, &id)
        };
        let (c, _) = connect(keeper(true, Some(60))).await;
        assert!(!c.session_present());
        c.subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        c.disconnect().await.unwrap();

        let (publisher, _) = connect(v5(addr, &format!("{tag}-kpub"))).await;
        publisher
            .publish(&topic, "while away", QoS::AtLeastOnce, false)
            .await
            .unwrap();

        let (c, mut inbox) = connect(keeper(false, Some(60))).await;
        assert!(c.session_present(), "the session outlived the connection");
        let m = recv(&mut inbox).await;
        assert_eq!(&m.payload[..], b"while away");
        // Leave with a session that ends with the connection...
        c.disconnect().await.unwrap();
        let (c, _) = connect(keeper(false, None)).await;
        assert!(
            c.session_present(),
            "expiry 60 still held when this connected"
        );
        c.disconnect().await.unwrap();
        // ... so nothing is left to resume. Our broker may see the new CONNECT (on another
        // shard) before it has ended the old connection's session: the client closed the
        // socket after DISCONNECT without waiting, so give the broker a moment.
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let (c, _) = connect(keeper(false, None)).await;
        assert!(
            !c.session_present(),
            "expiry 0: the session ended with the connection"
        );
        c.disconnect().await.unwrap();
        publisher.disconnect().await.unwrap();
    });
}

/// An empty client id gets one from the server (Assigned Client Identifier).
fn assigned_client_id(addr: SocketAddr) {
    run(LIMIT, async {
        let (c, _) = connect(ClientOptions {
            client_id: String::new(),
            ..v5(addr, "")
        })
        .await;
        let id = c.assigned_client_id().expect("an assigned client id");
        assert!(!id.is_empty());
        let props = c.server_properties().expect("CONNACK properties");
        assert_eq!(
            props.assigned_client_identifier.as_deref(),
            Some(id.as_str())
        );
        c.disconnect().await.unwrap();
    });
}

/// No Local: a client does not get back what it publishes itself; others' messages arrive.
/// Retain Handling 2: no retained message at subscribe.
fn no_local_and_retain_handling(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/nl");
        let (c, mut inbox) = connect(v5(addr, &format!("{tag}-nl"))).await;
        let (other, _) = connect(v5(addr, &format!("{tag}-nl-other"))).await;
        other
            .publish(&topic, "retained", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let options = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        };
        let granted = c
            .subscribe_with(&[(topic.as_str(), options)], Properties::default())
            .await
            .unwrap();
        assert_eq!(granted, [SubscribeReturnCode::Success(QoS::AtLeastOnce)]);
        c.publish(&topic, "mine", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        other
            .publish(&topic, "theirs", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!(&m.payload[..], b"theirs");
        assert!(recv_within(&mut inbox, Duration::from_millis(300))
            .await
            .is_none());
        // Clear the retained message for the next runs.
        other
            .publish(&topic, "", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        c.disconnect().await.unwrap();
        other.disconnect().await.unwrap();
    });
}

/// MQTT 5 will: DISCONNECT 0x04 "with will message" publishes it, with its properties; a
/// normal DISCONNECT does not.
fn will_on_disconnect_with_will(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/will5");
        let (watcher, mut inbox) = connect(v5(addr, &format!("{tag}-watch5"))).await;
        watcher
            .subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        let with_will = |id: &str| {
            let mut will = Will::new(topic.clone(), format!("{id} left"), QoS::AtLeastOnce, false);
            will.properties = WillProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("why".into(), "test".into())],
                ..WillProperties::default()
            };
            ClientOptions {
                will: Some(will),
                ..v5(addr, id)
            }
        };
        let (polite, _) = connect(with_will(&format!("{tag}-polite5"))).await;
        polite.disconnect().await.unwrap();
        let (leaving, _) = connect(with_will(&format!("{tag}-leaving5"))).await;
        leaving
            .disconnect_with(
                ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                Properties::default(),
            )
            .await
            .unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!(m.payload, format!("{tag}-leaving5 left"));
        let p = m.properties.expect("will properties");
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.user_properties, [(s("why"), s("test"))]);
        assert!(recv_within(&mut inbox, Duration::from_millis(300))
            .await
            .is_none());
        watcher.disconnect().await.unwrap();
    });
}

/// DISCONNECT's Session Expiry Interval replaces CONNECT's: a session announced for 60 s
/// ends with the connection when DISCONNECT says 0. A client that connected with 0 may not
/// raise it at DISCONNECT (MQTT-3.14.2-2): refused before anything is sent.
fn session_expiry_set_by_disconnect(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let id = format!("{tag}-shortened");
        let options = |clean_session| ClientOptions {
            clean_session,
            session_expiry: Some(60),
            ..v5(addr, &id)
        };
        let (c, _) = connect(options(true)).await;
        c.subscribe(&[(format!("{tag}/shortened").as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        c.disconnect_with(
            ReasonCode::NORMAL_DISCONNECTION,
            Properties {
                session_expiry_interval: Some(0),
                ..Properties::default()
            },
        )
        .await
        .unwrap();
        // Our broker may see the new CONNECT (on another shard) before it has ended the old
        // connection's session.
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let (c, _) = connect(options(false)).await;
        assert!(!c.session_present(), "DISCONNECT's expiry 0 ended it");
        // Kept this time, with the expiry of CONNECT.
        c.disconnect().await.unwrap();
        let (c, _) = connect(options(false)).await;
        assert!(c.session_present());
        c.disconnect_with(
            ReasonCode::NORMAL_DISCONNECTION,
            Properties {
                session_expiry_interval: Some(0),
                ..Properties::default()
            },
        )
        .await
        .unwrap();

        let (c, _) = connect(v5(addr, &format!("{tag}-no-expiry"))).await;
        let raise = Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        };
        let e = c
            .disconnect_with(ReasonCode::NORMAL_DISCONNECTION, raise)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("MQTT-3.14.2-2"), "{e}");
        assert!(c.is_connected());
        c.disconnect().await.unwrap();
    });
}

/// A second connection with the same client id takes the session over: the first learns
/// it from the server's DISCONNECT 0x8e. Mosquitto 2.0.11 closes the old connection without
/// a DISCONNECT (`disconnect_sent: false`): then it is only the end of the connection.
fn session_taken_over(addr: SocketAddr, tag: &str, disconnect_sent: bool) {
    run(LIMIT, async {
        let id = format!("{tag}-twin");
        let (first, mut inbox) = connect(v5(addr, &id)).await;
        let (second, _) = connect(v5(addr, &id)).await;
        let e = inbox.recv().await.unwrap_err();
        if !disconnect_sent {
            assert!(matches!(e, ClientError::ConnectionClosed), "{e}");
            assert!(!first.is_connected());
            second.disconnect().await.unwrap();
            return;
        }
        assert!(
            matches!(
                e,
                ClientError::ServerDisconnect {
                    reason: ReasonCode::SESSION_TAKEN_OVER,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("server sent DISCONNECT 0x8e session taken over"),
            "{e}"
        );
        assert!(!first.is_connected());
        second.disconnect().await.unwrap();
    });
}

/// Anonymous clients may use `open/#` only: PUBACK and PUBREC 0x87 refuse the rest, and
/// SUBACK 0x87 a subscription outside it (`suback_refusal`; Mosquitto 2.0.11 grants the
/// subscription and checks the ACL on delivery instead).
const ACL: &str = "topic readwrite open/#\n";

fn acl_refusals(addr: SocketAddr, suback_refusal: bool) {
    run(LIMIT, async {
        let (c, _) = connect(v5(addr, "acl-client")).await;
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let e = c
                .publish("closed/x", "x", qos, false)
                .await
                .expect_err("publish outside the ACL");
            match &e {
                ClientError::Rejected { ack, reason, .. } => {
                    assert_eq!(*reason, ReasonCode::NOT_AUTHORIZED, "{e}");
                    let expected = if qos == QoS::AtLeastOnce {
                        PacketType::PubAck
                    } else {
                        PacketType::PubRec
                    };
                    assert_eq!(*ack, expected);
                }
                other => panic!("{other}"),
            }
            let name = if qos == QoS::AtLeastOnce {
                "PUBACK"
            } else {
                "PUBREC"
            };
            assert!(
                e.to_string()
                    .starts_with(&format!("{name} 0x87 not authorized")),
                "{e}"
            );
        }
        c.publish("open/x", "x", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let granted = c
            .subscribe(&[("open/#", QoS::AtLeastOnce), ("closed/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        assert_eq!(granted[0], SubscribeReturnCode::Success(QoS::AtLeastOnce));
        assert_eq!(
            granted[1] != SubscribeReturnCode::Success(QoS::AtLeastOnce),
            suback_refusal,
            "{granted:?}"
        );
        if suback_refusal {
            assert_eq!(
                granted[1],
                SubscribeReturnCode::Failure(ReasonCode::NOT_AUTHORIZED)
            );
            assert_eq!(
                ClientError::refused_subscription(granted[1])
                    .unwrap()
                    .to_string(),
                "SUBACK 0x87 not authorized"
            );
        }
        let reasons = c
            .unsubscribe_with(&["open/#", "never/subscribed"], Properties::default())
            .await
            .unwrap();
        assert_eq!(reasons[0], ReasonCode::SUCCESS);
        assert!(reasons[1] == ReasonCode::NO_SUBSCRIPTION_EXISTED || reasons[1].0 >= 0x80);
        assert!(c.is_connected());
        c.disconnect().await.unwrap();
    });
}

#[test]
fn properties_end_to_end_on_our_broker() {
    let b = Broker::start();
    properties_end_to_end(b.addr(), "b");
}

#[test]
fn properties_end_to_end_on_mosquitto() {
    let m = Mosquitto::start();
    properties_end_to_end(m.addr, "m");
}

#[test]
fn no_subscribers_is_success_on_our_broker() {
    let b = Broker::start();
    no_subscribers_is_success(b.addr(), "b");
}

#[test]
fn no_subscribers_is_success_on_mosquitto() {
    let m = Mosquitto::start();
    no_subscribers_is_success(m.addr, "m");
}

#[test]
fn session_expiry_resumes_on_our_broker() {
    let b = Broker::start();
    session_expiry_resumes(b.addr(), "b");
}

#[test]
fn session_expiry_resumes_on_mosquitto() {
    let m = Mosquitto::start();
    session_expiry_resumes(m.addr, "m");
}

#[test]
fn assigned_client_id_on_our_broker() {
    let b = Broker::start();
    assigned_client_id(b.addr());
}

#[test]
fn assigned_client_id_on_mosquitto() {
    let m = Mosquitto::start();
    assigned_client_id(m.addr);
}

#[test]
fn no_local_and_retain_handling_on_our_broker() {
    let b = Broker::start();
    no_local_and_retain_handling(b.addr(), "b");
}

#[test]
fn no_local_and_retain_handling_on_mosquitto() {
    let m = Mosquitto::start();
    no_local_and_retain_handling(m.addr, "m");
}

#[test]
fn will_on_disconnect_with_will_on_our_broker() {
    let b = Broker::start();
    will_on_disconnect_with_will(b.addr(), "b");
}

#[test]
fn will_on_disconnect_with_will_on_mosquitto() {
    let m = Mosquitto::start();
    will_on_disconnect_with_will(m.addr, "m");
}

#[test]
fn session_expiry_set_by_disconnect_on_our_broker() {
    let b = Broker::start();
    session_expiry_set_by_disconnect(b.addr(), "b");
}

#[test]
fn session_expiry_set_by_disconnect_on_mosquitto() {
    let m = Mosquitto::start();
    session_expiry_set_by_disconnect(m.addr, "m");
}

#[test]
fn session_taken_over_on_our_broker() {
    let b = Broker::start();
    session_taken_over(b.addr(), "b", true);
}

#[test]
fn session_taken_over_on_mosquitto() {
    let m = Mosquitto::start();
    session_taken_over(m.addr, "m", false);
}

#[test]
fn acl_refusals_on_our_broker() {
    let b = Broker::start_with(BrokerConfig {
        authenticator: Arc::new(FileAuthenticator {
            passwords: None,
            allow_anonymous: true,
            acl: Some(AclFile::parse(ACL, "test acl").unwrap()),
        }),
        ..BrokerConfig::default()
    });
    acl_refusals(b.addr(), true);
}

#[test]
fn acl_refusals_on_mosquitto() {
    let dir = std::env::temp_dir().join(format!("surgemq-v5-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let m = Mosquitto::start_with(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    acl_refusals(m.addr, false);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mosquitto's max_keepalive reaches the client as Server Keep Alive, which it then uses.
#[test]
fn server_keep_alive_from_mosquitto() {
    let m = Mosquitto::start_with("allow_anonymous true\nmax_keepalive 10\n");
    run(LIMIT, async {
        let (c, _) = connect(ClientOptions {
            keep_alive: 60,
            ..v5(m.addr, "ka")
        })
        .await;
        assert_eq!(c.keep_alive(), Duration::from_secs(10));
        assert_eq!(
            c.server_properties().and_then(|p| p.server_keep_alive),
            Some(10)
        );
        c.disconnect().await.unwrap();
    });
}

/// Mosquitto's limits reach the client in CONNACK: Maximum QoS and Retain Available make
/// publish_with refuse what the server would disconnect for, and Receive Maximum
/// (max_inflight_messages) caps the window of a pipelined burst.
#[test]
fn server_limits_from_mosquitto() {
    let m = Mosquitto::start_with(
        "allow_anonymous true\nmax_qos 1\nretain_available false\nmax_inflight_messages 2\n",
    );
    run(LIMIT, async {
        let (c, mut inbox) = connect(v5(m.addr, "limits")).await;
        let server = c.server_properties().expect("CONNACK properties");
        assert_eq!(server.maximum_qos, Some(QoS::AtLeastOnce));
        assert_eq!(server.retain_available, Some(false));
        assert_eq!(server.receive_maximum, Some(2));
        let e = c
            .publish("t", "x", QoS::ExactlyOnce, false)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid qos: the server's Maximum QoS is 1");
        let e = c
            .publish("t", "x", QoS::AtMostOnce, true)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid retain:"), "{e}");
        c.subscribe(&[("burst", QoS::AtLeastOnce)]).await.unwrap();
        let acks: Vec<_> = (0..50)
            .map(|i| c.publish("burst", i.to_string(), QoS::AtLeastOnce, false))
            .collect();
        assert!(c.inflight() <= 2, "{}", c.inflight());
        for ack in acks {
            ack.await.unwrap();
        }
        for i in 0..50 {
            assert_eq!(recv(&mut inbox).await.payload, i.to_string());
        }
        assert!(c.is_connected());
        c.disconnect().await.unwrap();
    });
}
