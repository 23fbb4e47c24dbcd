//! SurgeMQ: a thread-per-core MQTT 3.1/3.1.1 broker and client library.

pub mod auth;
pub mod bench;
pub mod broker;
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "http")]
pub mod http;
pub mod protocol;
pub mod store;
pub mod sys;
pub mod topic;
pub mod transport;
