//! The MQTT broker: thread-per-core shards on glommio.
//!
//! Each shard ([`shard`]) is one executor pinned to one core. It accepts connections on every
//! listen address (SO_REUSEPORT), owns the sessions of the client ids that hash to it, keeps a
//! replica of the subscription trie, and talks to the other shards only through bounded
//! channels ([`mesh`]). A publish is matched once, on the shard of its publisher, and travels to
//! other shards in batches. See `shared/design.md` in the project for the data flow.

pub mod bridge;
pub mod cluster_port;
mod compaction;
pub mod config;
mod connected;
mod connection;
mod durability;
mod journal;
/// The wall clock in Unix milliseconds, as the log and the cluster write it.
#[cfg(feature = "cluster")]
pub(crate) use journal::unix_ms;
mod keepalive;
mod listeners;
pub mod mesh;
pub mod metrics;
pub mod output;
mod parking;
mod pressure;
pub mod qos2_gate;
mod queue_copies;
mod replica;
mod restore;
mod runtime;
pub mod session;
mod session_table;
mod shard;
mod shard_tasks;
mod share_balance;
pub mod shared;
pub mod stats;
mod stop_barrier;
mod sys_topics;
mod wire;

pub use config::{available_cpus, BrokerConfig, ConfigError};
pub use metrics::MetricsSnapshot;
pub use runtime::{start, BrokerHandle, StartError};
pub use shard::home_shard;
