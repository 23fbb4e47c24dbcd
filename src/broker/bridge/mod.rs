//! Bridges to other brokers, as Mosquitto's `connection` sections make them: messages
//! published here on `out` topics are sent to the remote broker, messages the remote broker
//! has on `in` topics are published here, with topic prefixes rewritten ([`topics`]).
//!
//! A bridge is two MQTT clients in one task ([`link`]): one to the remote broker (TCP or TLS,
//! 3.1, 3.1.1 or 5, with Mosquitto's `try_private` bit), and one to this broker over a
//! `socketpair`, served like any client connection. So what the bridge brings in is routed
//! like any publish, and what it sends out waits in its local session like any subscriber's
//! messages: bounded by `--max-queued-messages`/`--max-queued-bytes`, kept on disk with
//! `--data-dir`, resent in order after a reconnect. The bridge's task runs on the home shard
//! of its local client id, so that session and task share a core and nothing crosses one.
//!
//! Nothing is acknowledged before the next hop has it: the local session's message gets its
//! PUBACK when the remote broker acknowledged the copy, and a remote message gets its PUBACK
//! when this broker acknowledged the local publish (manual acknowledgements of the client).
//! No loops: the local subscriptions are No Local (the bridge never gets back what it
//! published here), and the remote ones are too with MQTT 5, or with `try_private` on a
//! broker that honours it (Mosquitto, SurgeMQ).

mod link;
pub(crate) use link::run;
pub mod topics;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::TlsOptions;
use crate::protocol::ProtocolLevel;
pub use topics::{BridgeTopic, Direction, TopicMap};

/// When to try again after a failed or lost connection to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimeout {
    /// Always wait this long.
    Constant(Duration),
    /// "Decorrelated jitter" between `base` and `cap` (Mosquitto's default 5 s to 30 s):
    /// each wait is random between `base` and three times the last one, at most `cap`.
    Backoff { base: Duration, cap: Duration },
}

impl Default for RestartTimeout {
    fn default() -> Self {
        RestartTimeout::Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(30),
        }
    }
}

impl RestartTimeout {
    /// The wait after `last` (None: the first failure since the link was up).
    pub fn next(self, last: Option<Duration>, random: u64) -> Duration {
        match self {
            RestartTimeout::Constant(d) => d,
            RestartTimeout::Backoff { base, cap } => {
                let high = last.unwrap_or(base).saturating_mul(3).max(base);
                let span = (high - base).as_millis() as u64;
                let pick = base + Duration::from_millis(random % (span + 1));
                pick.min(cap)
            }
        }
    }
}

/// One bridge: where the remote broker is, what crosses, and as whom.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The `connection` name: in logs, metrics and `$SYS`.
    pub name: String,
    /// The remote broker's addresses, tried in order until one accepts.
    pub addresses: Vec<(String, u16)>,
    /// After a lost connection, go on with the next address (true) or start again from the
    /// first (false, Mosquitto's default: the first is the main broker).
    pub round_robin: bool,
    pub topics: Vec<BridgeTopic>,
    pub remote_client_id: String,
    /// This broker's client id for the bridge's session here.
    pub local_client_id: String,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// Who the bridge is here: with a password file and ACLs, the local session is checked
    /// like any client's.
    pub local_username: Option<String>,
    pub local_password: Option<String>,
    /// The remote session ends with the connection (CleanSession / Clean Start and expiry 0).
    pub clean_session: bool,
    /// The local session ends with the connection: messages for the remote broker published
    /// while it is unreachable are then not kept.
    pub local_clean_session: bool,
    pub keep_alive: u16,
    pub protocol: ProtocolLevel,
    /// Tell the remote broker it talks to a bridge (3.1/3.1.1; Mosquitto's `try_private`).
    /// A broker that refuses the level is tried again without.
    pub try_private: bool,
    /// Publish the link's state ("1" up, "0" down, retained) on `notification_topic`, here
    /// and (unless `notifications_local_only`) on the remote broker, where a will says "0".
    pub notifications: bool,
    pub notifications_local_only: bool,
    pub notification_topic: String,
    pub restart: RestartTimeout,
    /// Keep the retain flag of messages sent out (Mosquitto's `bridge_outgoing_retain`).
    pub outgoing_retain: bool,
    /// QoS 1/2 messages in flight on each side (and the local session's Receive Maximum).
    pub max_inflight: u16,
    /// TLS towards the remote broker (None: plain TCP).
    pub tls: Option<TlsOptions>,
}

impl BridgeConfig {
    /// A bridge `name` to `host:port` with Mosquitto's defaults: remote client id
    /// `NAME.HOSTNAME`, local client id `local.REMOTE_ID`, persistent sessions, keepalive
    /// 60 s, MQTT 3.1.1 with `try_private`, notifications on
    /// `$SYS/broker/connection/REMOTE_ID/state`, back-off 5 to 30 s.
    pub fn new(name: &str, host: &str, port: u16) -> BridgeConfig {
        let remote_client_id = format!("{name}.{}", hostname());
        BridgeConfig {
            name: name.to_string(),
            addresses: vec![(host.to_string(), port)],
            round_robin: false,
            topics: Vec::new(),
            local_client_id: format!("local.{remote_client_id}"),
            notification_topic: notification_topic(&remote_client_id),
            remote_client_id,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            clean_session: false,
            local_clean_session: false,
            keep_alive: 60,
            protocol: ProtocolLevel::V311,
            try_private: true,
            notifications: true,
            notifications_local_only: false,
            restart: RestartTimeout::default(),
            outgoing_retain: true,
            max_inflight: 1000,
            tls: None,
        }
    }

    /// Checks what a broker start should refuse, naming the bridge.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |why: String| Err(format!("bridge {}: {why}", self.name));
        if self.addresses.is_empty() {
            return fail("no address".into());
        }
        if self.topics.is_empty() {
            return fail("no topic".into());
        }
        for t in &self.topics {
            if let Err(e) = t.validate() {
                return fail(e);
            }
        }
        if self.remote_client_id.is_empty() || self.local_client_id.is_empty() {
            return fail("an empty client id".into());
        }
        if self.max_inflight == 0 {
            return fail("max_inflight must be above 0".into());
        }
        Ok(())
    }
}

/// Mosquitto's notification topic for a bridge whose remote client id is `id`.
pub fn notification_topic(id: &str) -> String {
    format!("$SYS/broker/connection/{id}/state")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "surgemq".to_string())
}

/// A bridge's counters, written by its task and read by `$SYS`, `/metrics` and tests.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// The link to the remote broker is up.
    pub connected: AtomicBool,
    /// Messages sent to the remote broker (acknowledged by it, for QoS 1/2).
    pub sent: AtomicU64,
    /// Messages brought in from the remote broker (acknowledged here, for QoS 1/2).
    pub received: AtomicU64,
    /// Messages taken from the local session and not yet acknowledged by the remote broker;
    /// the rest of the bridge's queue is its local session's queue.
    pub inflight: AtomicU64,
    /// Messages waiting in the bridge's local session for the remote broker (sampled every
    /// second): what piles up while the remote broker is unreachable.
    pub queued: AtomicU64,
    /// Messages that could not cross: refused by the broker they were sent to (a reason code
    /// of 0x80 or above) or matching no topic line.
    pub dropped: AtomicU64,
    /// Times the link to the remote broker came up.
    pub connections: AtomicU64,
    /// Failed attempts to bring it up.
    pub connect_failures: AtomicU64,
}

impl BridgeStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Every bridge's counters, by name, in configuration order.
pub type BridgeBoard = Arc<Vec<(String, Arc<BridgeStats>)>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_base_and_cap() {
        let r = RestartTimeout::default();
        let (base, cap) = (Duration::from_secs(5), Duration::from_secs(30));
        let mut last = None;
        for random in [0, 7, 123_456, u64::MAX, 42, 99_999_999] {
            let d = r.next(last, random);
            assert!(d >= base && d <= cap, "{d:?}");
            last = Some(d);
        }
        // The largest pick after a wait of 20 s is the cap, not 60 s.
        assert_eq!(r.next(Some(Duration::from_secs(20)), 55_000), cap);
        let c = RestartTimeout::Constant(Duration::from_secs(2));
        assert_eq!(
            c.next(Some(Duration::from_secs(9)), 5),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn defaults_follow_mosquitto() {
        let b = BridgeConfig::new("edge", "10.0.0.1", 1883);
        assert!(b.remote_client_id.starts_with("edge."));
        assert_eq!(b.local_client_id, format!("local.{}", b.remote_client_id));
        assert_eq!(
            b.notification_topic,
            format!("$SYS/broker/connection/{}/state", b.remote_client_id)
        );
        assert!(!b.clean_session && b.try_private && b.notifications);
        assert_eq!(b.validate().unwrap_err(), "bridge edge: no topic");
    }
}
