//! The client library against our broker, in process with two shards: QoS 0/1/2 both ways,
//! pipelining, will, retained, keepalive, persistent sessions, MQTT 3.1 and 3.1.1, and a
//! refused connection. The scenarios live in `client_util` and run against Mosquitto too.

mod client_util;

use std::net::SocketAddr;
use std::sync::Arc;

use surgemq::auth::FileAuthenticator;
use surgemq::broker::{self, BrokerConfig, BrokerHandle};

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

#[test]
fn qos_levels_both_ways() {
    let b = Broker::start();
    client_util::qos_levels_both_ways(b.addr(), "b");
}

#[test]
fn pipelined_publishes() {
    let b = Broker::start();
    client_util::pipelined_publishes(b.addr(), "b");
}

#[test]
fn will_on_abort_only() {
    let b = Broker::start();
    client_util::will_on_abort_only(b.addr(), "b");
}

#[test]
fn retained() {
    let b = Broker::start();
    client_util::retained(b.addr(), "b");
}

#[test]
fn keepalive_pings_when_idle() {
    let b = Broker::start();
    client_util::keepalive_pings_when_idle(b.addr(), "b");
}

#[test]
fn persistent_session_resumes() {
    let b = Broker::start();
    client_util::persistent_session_resumes(b.addr(), "b");
}

#[test]
fn protocol_31_and_311() {
    let b = Broker::start();
    client_util::protocol_31_and_311(b.addr(), "b");
}

#[test]
fn unsubscribe_and_end_of_messages() {
    let b = Broker::start();
    client_util::unsubscribe_and_end_of_messages(b.addr(), "b");
}

#[test]
fn refused_with_code() {
    let b = Broker::start_with(BrokerConfig {
        authenticator: Arc::new(FileAuthenticator {
            passwords: None,
            allow_anonymous: false,
            acl: None,
        }),
        ..BrokerConfig::default()
    });
    client_util::refused_with_code(b.addr());
}
