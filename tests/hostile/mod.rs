//! What the hostile-input test binaries share: a broker scene with a healthy pair checked
//! after every case, byte builders for fields the common builders cannot express, and the
//! assertions on protocol-error counters by rule.

// Each binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::common::*;
use surgemq::broker::{BrokerConfig, MetricsSnapshot};

static MEASURING: RwLock<()> = RwLock::new(());

/// For tests that run beside others.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    MEASURING.read().unwrap_or_else(|e| e.into_inner())
}

/// For tests that measure the process (CPU time, memory): nothing else of this binary runs.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MEASURING.write().unwrap_or_else(|e| e.into_inner())
}

// ----- byte builders for fields the common builders cannot express ---------------------------

/// QoS 0 PUBLISH with a raw topic.
pub fn raw_publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// SUBSCRIBE id 1 with one raw filter at QoS 0.
pub fn raw_subscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(field(filter));
    body.push(0);
    frame(0x82, &body)
}

/// UNSUBSCRIBE id 1 with one raw filter.
pub fn raw_unsubscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(field(filter));
    frame(0xa2, &body)
}

/// A topic of `levels` levels, each `level`.
pub fn deep_topic(level: &str, levels: usize) -> String {
    vec![level; levels].join("/")
}

/// The CONNECT flags byte of a [`ConnectBuilder`] packet shorter than 128 bytes.
pub const CONNECT_FLAGS_AT: usize = 9;

// ----- harness ----------------------------------------------------------------------------

/// A broker, a healthy pair checked after every case, and a watcher of `watch/#` for wills.
pub struct Scene {
    pub broker: Broker,
    pub healthy: Healthy,
    pub watcher: RawClient,
    pub cases: usize,
}

impl Scene {
    pub fn new(config: BrokerConfig) -> Scene {
        let broker = Broker::with_config(config);
        let mut healthy = Healthy::new(&broker);
        healthy.check();
        let mut watcher = broker.connect(&broker.id_on("watcher", 0));
        watcher.subscribe(1, &[("watch/#", 1)]);
        Scene {
            broker,
            healthy,
            watcher,
            cases: 0,
        }
    }

    pub fn start(shards: usize) -> Scene {
        Scene::new(BrokerConfig {
            shards,
            ..test_config()
        })
    }

    /// A new client id homed on the last shard (so that its connection usually moves).
    pub fn next_id(&mut self, name: &str) -> String {
        self.cases += 1;
        let shards = self.broker.shards;
        self.broker
            .id_on(&format!("{name}-{}", self.cases), shards - 1)
    }

    /// `bad` as the very first bytes of a connection: closed without any answer.
    #[track_caller]
    pub fn first_packet_closes(&mut self, name: &str, bad: &[u8]) {
        let mut c = self.broker.socket();
        c.send(bad);
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.expect_closed()));
        assert!(
            closed.is_ok(),
            "{name}: first packet {bad:02x?} was not answered by a silent close"
        );
        self.healthy.check();
    }

    /// `bad` after a successful CONNECT: the connection is closed without an answer.
    #[track_caller]
    pub fn closes_after_connect(&mut self, name: &str, bad: &[u8]) {
        let id = self.next_id("bad");
        let mut c = self.broker.connect(&id);
        c.send(bad);
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.expect_closed()));
        assert!(
            closed.is_ok(),
            "{name}: {bad:02x?} did not close the connection"
        );
        self.healthy.check();
    }

    /// Closes the scene's clients and the broker; returns the counters.
    pub fn finish(mut self) -> Vec<MetricsSnapshot> {
        self.healthy.check();
        self.watcher.ping();
        drop(self.healthy);
        drop(self.watcher);
        self.broker.shutdown()
    }
}

/// Asserts that exactly `n` protocol errors named a rule containing `needle`.
#[track_caller]
pub fn assert_rule(metrics: &[MetricsSnapshot], needle: &str, n: u64) {
    let got = protocol_errors_matching(metrics, needle);
    assert_eq!(
        got,
        n,
        "protocol errors naming {needle:?}; all: {:#?}",
        protocol_errors_by_rule(metrics)
    );
}

#[track_caller]
pub fn assert_protocol_errors(metrics: &[MetricsSnapshot], n: u64) {
    let total: u64 = metrics.iter().map(|m| m.protocol_errors).sum();
    assert_eq!(
        total,
        n,
        "protocol errors in total; by rule: {:#?}",
        protocol_errors_by_rule(metrics)
    );
}
