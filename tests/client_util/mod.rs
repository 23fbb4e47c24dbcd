//! Scenarios for the client library, written once and run against two servers: our broker
//! (`client_broker.rs`) and Mosquitto (`client_mosquitto.rs`). Each scenario takes the
//! server's address and runs on its own glommio executor with a deadline, so a hang fails the
//! test instead of stalling the suite. Everything the scenarios check is MQTT 3.1.1 behaviour
//! that any conforming server shows.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use surgemq::client::{block_on, Client, ClientError, ClientOptions, Messages, Will};
use surgemq::protocol::{ProtocolLevel, Publish, QoS, SubscribeReturnCode};

pub mod mosquitto;
pub mod scripted;

/// Runs `test` on a fresh executor; panics if it takes longer than `limit`.
pub fn run<F: Future<Output = ()>>(limit: Duration, test: F) {
    block_on(async move {
        let deadline = async {
            glommio::timer::sleep(limit).await;
            panic!("test did not finish within {limit:?}");
        };
        test.or(deadline).await
    })
    .expect("glommio executor");
}

pub fn options(addr: SocketAddr, client_id: &str) -> ClientOptions {
    ClientOptions {
        client_id: client_id.to_string(),
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::new(addr.ip().to_string(), addr.port())
    }
}

pub async fn connect(addr: SocketAddr, client_id: &str) -> (Client, Messages) {
    Client::connect(options(addr, client_id))
        .await
        .unwrap_or_else(|e| panic!("{client_id} cannot connect: {e}"))
}

/// The next message, or None if none arrives within `wait`.
pub async fn recv_within(messages: &mut Messages, wait: Duration) -> Option<Publish> {
    let timeout = async {
        glommio::timer::sleep(wait).await;
        None
    };
    async { Some(messages.recv().await.expect("connection alive")) }
        .or(timeout)
        .await
}

pub async fn recv(messages: &mut Messages) -> Publish {
    recv_within(messages, Duration::from_secs(5))
        .await
        .expect("a message within 5 s")
}

const LIMIT: Duration = Duration::from_secs(15);

/// QoS 0, 1 and 2 from one of our clients to another; each arrives with the QoS of the
/// subscription and the publish (both the same here), once.
pub fn qos_levels_both_ways(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let (sub, mut inbox) = connect(addr, &format!("{tag}-qsub")).await;
        let base = format!("{tag}/qos");
        let filters: Vec<(String, QoS)> = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .iter()
            .map(|&q| (format!("{base}/{}", q as u8), q))
            .collect();
        let granted = sub.subscribe(&filters).await.unwrap();
        assert_eq!(
            granted,
            filters
                .iter()
                .map(|(_, q)| SubscribeReturnCode::Success(*q))
                .collect::<Vec<_>>()
        );
        let (publisher, _) = connect(addr, &format!("{tag}-qpub")).await;
        for (topic, qos) in &filters {
            let payload = format!("payload at {}", *qos as u8);
            publisher
                .publish(topic, payload, *qos, false)
                .await
                .unwrap();
            let m = recv(&mut inbox).await;
            assert_eq!((&*m.topic, m.qos), (topic.as_str(), *qos));
            assert_eq!(m.payload, format!("payload at {}", *qos as u8));
            assert!(!m.retain && !m.dup);
        }
        // The same the other way round: the subscriber publishes, the publisher receives.
        let (echo, mut echo_inbox) = connect(addr, &format!("{tag}-qecho")).await;
        echo.subscribe(&[(format!("{base}/back"), QoS::ExactlyOnce)])
            .await
            .unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            sub.publish(&format!("{base}/back"), vec![qos as u8], qos, false)
                .await
                .unwrap();
            let m = recv(&mut echo_inbox).await;
            assert_eq!((m.qos, &m.payload[..]), (qos, &[qos as u8][..]));
        }
        assert!(recv_within(&mut echo_inbox, Duration::from_millis(200))
            .await
            .is_none());
        for c in [sub, publisher, echo] {
            c.disconnect().await.unwrap();
        }
    });
}

/// Many publishes in flight at once through a small window; all complete, in order.
pub fn pipelined_publishes(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let (sub, mut inbox) = connect(addr, &format!("{tag}-psub")).await;
        let topic = format!("{tag}/pipe");
        sub.subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        let (publisher, _) = Client::connect(ClientOptions {
            max_inflight: 8,
            ..options(addr, &format!("{tag}-ppub"))
        })
        .await
        .unwrap();
        const N: usize = 300;
        let acks: Vec<_> = (0..N)
            .map(|i| {
                let qos = if i % 3 == 0 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                publisher.publish(&topic, i.to_string(), qos, false)
            })
            .collect();
        assert!(publisher.inflight() <= 8);
        for ack in acks {
            ack.await.unwrap();
        }
        assert_eq!(publisher.inflight(), 0);
        // Order holds among messages of one QoS (4.6); a server may release QoS 2 messages
        // on PUBREL, after QoS 1 messages sent later.
        let (mut last_q1, mut last_q2) = (None, None);
        for _ in 0..N {
            let m = recv(&mut inbox).await;
            let i: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            let last = if i % 3 == 0 {
                &mut last_q2
            } else {
                &mut last_q1
            };
            assert!(*last < Some(i), "{i} after {last:?}: out of order");
            *last = Some(i);
        }
        publisher.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
    });
}

/// The will is published when the connection dies without DISCONNECT, not after one.
pub fn will_on_abort_only(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let (watcher, mut inbox) = connect(addr, &format!("{tag}-watch")).await;
        let topic = format!("{tag}/will");
        watcher
            .subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        let with_will = |id: &str| ClientOptions {
            will: Some(Will::new(
                topic.clone(),
                Bytes::from(format!("{id} is gone")),
                QoS::AtLeastOnce,
                false,
            )),
            ..options(addr, id)
        };
        let (polite, _) = Client::connect(with_will(&format!("{tag}-polite")))
            .await
            .unwrap();
        polite.disconnect().await.unwrap();
        let (rude, _) = Client::connect(with_will(&format!("{tag}-rude")))
            .await
            .unwrap();
        rude.abort().await;
        let m = recv(&mut inbox).await;
        assert_eq!(
            m.payload,
            format!("{tag}-rude is gone"),
            "only the aborted one"
        );
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert!(recv_within(&mut inbox, Duration::from_millis(300))
            .await
            .is_none());
        watcher.disconnect().await.unwrap();
    });
}

/// A retained message reaches later subscribers with RETAIN set; an empty one clears it.
pub fn retained(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/retained");
        let (publisher, _) = connect(addr, &format!("{tag}-rpub")).await;
        publisher
            .publish(&topic, "kept", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let (late, mut inbox) = connect(addr, &format!("{tag}-rsub")).await;
        late.subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        let m = recv(&mut inbox).await;
        assert!(m.retain, "retained copy has RETAIN set (MQTT-3.3.1-8)");
        assert_eq!(m.payload, "kept");
        // Live messages go to existing subscribers without RETAIN (MQTT-3.3.1-9).
        publisher
            .publish(&topic, "live", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let m = recv(&mut inbox).await;
        assert!(!m.retain);
        publisher
            .publish(&topic, Bytes::new(), QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let _ = recv(&mut inbox).await; // the clearing message itself
        let (later, mut later_inbox) = connect(addr, &format!("{tag}-rsub2")).await;
        later
            .subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        assert!(recv_within(&mut later_inbox, Duration::from_millis(300))
            .await
            .is_none());
        for c in [publisher, late, later] {
            c.disconnect().await.unwrap();
        }
    });
}

/// Keepalive 1 s and three idle seconds: the server would drop a silent client after 1.5 s
/// (MQTT-3.1.2-24), so still being connected and served means PINGREQs went out.
pub fn keepalive_pings_when_idle(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let (client, mut inbox) = Client::connect(ClientOptions {
            keep_alive: 1,
            ..options(addr, &format!("{tag}-idle"))
        })
        .await
        .unwrap();
        let topic = format!("{tag}/idle");
        client
            .subscribe(&[(topic.as_str(), QoS::AtMostOnce)])
            .await
            .unwrap();
        glommio::timer::sleep(Duration::from_secs(3)).await;
        assert!(client.is_connected());
        client
            .publish(&topic, "still here", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(recv(&mut inbox).await.payload, "still here");
        client.disconnect().await.unwrap();
    });
}

/// A persistent session keeps the subscription and queues QoS 1 messages while the client
/// is away; reconnecting reports the session and delivers them.
pub fn persistent_session_resumes(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let id = format!("{tag}-persist");
        let topic = format!("{tag}/persist");
        let persistent = || ClientOptions {
            clean_session: false,
            ..options(addr, &id)
        };
        // Start from a clean slate whatever an earlier run left.
        let (c, _) = connect(addr, &id).await;
        c.disconnect().await.unwrap();

        let (c, _) = Client::connect(persistent()).await.unwrap();
        assert!(!c.session_present());
        c.subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        c.disconnect().await.unwrap();

        let (publisher, _) = connect(addr, &format!("{tag}-ppub2")).await;
        publisher
            .publish(&topic, "while you were away", QoS::AtLeastOnce, false)
            .await
            .unwrap();

        let (c, mut inbox) = Client::connect(persistent()).await.unwrap();
        assert!(c.session_present(), "CONNACK session present");
        let m = recv(&mut inbox).await;
        assert_eq!(m.payload, "while you were away");
        assert_eq!(m.qos, QoS::AtLeastOnce);
        c.disconnect().await.unwrap();
        // Clean up the session on the server.
        let (c, _) = connect(addr, &id).await;
        c.disconnect().await.unwrap();
        publisher.disconnect().await.unwrap();
    });
}

/// MQTT 3.1 ("MQIsdp", level 3) clients talk to 3.1.1 clients.
pub fn protocol_31_and_311(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/v31");
        let (old, mut old_inbox) = Client::connect(ClientOptions {
            protocol: ProtocolLevel::V31,
            ..options(addr, &format!("{tag}-v31"))
        })
        .await
        .unwrap();
        old.subscribe(&[(topic.as_str(), QoS::ExactlyOnce)])
            .await
            .unwrap();
        let (new, mut new_inbox) = connect(addr, &format!("{tag}-v311")).await;
        new.subscribe(&[(topic.as_str(), QoS::ExactlyOnce)])
            .await
            .unwrap();
        new.publish(&topic, "from 3.1.1", QoS::ExactlyOnce, false)
            .await
            .unwrap();
        old.publish(&topic, "from 3.1", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        for inbox in [&mut old_inbox, &mut new_inbox] {
            assert_eq!(recv(inbox).await.payload, "from 3.1.1");
            assert_eq!(recv(inbox).await.payload, "from 3.1");
        }
        old.disconnect().await.unwrap();
        new.disconnect().await.unwrap();
    });
}

/// After UNSUBACK nothing more arrives; after `disconnect` the receiver says so.
pub fn unsubscribe_and_end_of_messages(addr: SocketAddr, tag: &str) {
    run(LIMIT, async {
        let topic = format!("{tag}/unsub");
        let (c, mut inbox) = connect(addr, &format!("{tag}-unsub")).await;
        c.subscribe(&[(topic.as_str(), QoS::AtLeastOnce)])
            .await
            .unwrap();
        c.publish(&topic, "one", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(recv(&mut inbox).await.payload, "one");
        c.unsubscribe(&[topic.as_str()]).await.unwrap();
        c.publish(&topic, "two", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert!(recv_within(&mut inbox, Duration::from_millis(300))
            .await
            .is_none());
        c.disconnect().await.unwrap();
        assert!(matches!(inbox.recv().await, Err(ClientError::Disconnected)));
        let late = c.publish(&topic, "three", QoS::AtMostOnce, false).await;
        assert!(matches!(late, Err(ClientError::Disconnected)));
    });
}

/// A server that refuses anonymous clients: the error carries the CONNACK code.
pub fn refused_with_code(addr: SocketAddr) {
    run(LIMIT, async {
        let err = Client::connect(options(addr, "refused")).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Refused(..)),
            "refused, not {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "connection refused: not authorized (CONNACK 5)"
        );
    });
}
