//! The pingmq example, driven in process against our broker: one round of probes publishes
//! `up` for a listening port and `down` for a closed one, retained, and `--failures-only`
//! shows only the latter.

#[allow(dead_code)]
#[path = "../examples/pingmq.rs"]
mod pingmq;

mod client_util;

use std::net::TcpListener;
use std::time::Duration;

use surgemq::broker::{self, BrokerConfig};
use surgemq::client::Client;
use surgemq::protocol::QoS;

#[test]
fn one_round_reports_up_and_down_retained() {
    let broker = broker::start(BrokerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 2,
        ..Default::default()
    })
    .unwrap();
    let addr = broker.local_addrs()[0];
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = open.local_addr().unwrap();
    let down = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed again
    let targets = pingmq::resolve_targets(&[up.to_string(), down.to_string()]).unwrap();
    assert_eq!(targets[0].topic, format!("pingmq/127.0.0.1/{}", up.port()));
    assert!(pingmq::resolve_targets(&["no-port".into()]).is_err());

    client_util::run(Duration::from_secs(10), async move {
        let (server, _) = client_util::connect(addr, "pingmq-test-server").await;
        pingmq::serve(
            &server,
            &targets,
            Duration::from_millis(10),
            Duration::from_secs(1),
            Some(1),
        )
        .await
        .unwrap();

        // Retained: a watcher that subscribes afterwards still gets both results.
        let (watcher, mut messages) = client_util::connect(addr, "pingmq-test-all").await;
        watcher
            .subscribe(&[("pingmq/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        let mut out = Vec::new();
        pingmq::watch(&mut messages, false, Some(2), &mut out)
            .await
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let up_line = format!("pingmq/127.0.0.1/{} up ", up.port());
        let down_line = format!("pingmq/127.0.0.1/{} down connection refused", down.port());
        assert!(out.contains(&up_line) && out.contains(&down_line), "{out}");

        let (failures, mut messages) =
            Client::connect(client_util::options(addr, "pingmq-test-down"))
                .await
                .unwrap();
        failures
            .subscribe(&[("pingmq/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        let mut out = Vec::new();
        pingmq::watch(&mut messages, true, Some(1), &mut out)
            .await
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(&down_line) && !out.contains(" up "), "{out}");
        for c in [server, watcher, failures] {
            c.disconnect().await.unwrap();
        }
    });
    drop(open);
    broker.shutdown();
}
