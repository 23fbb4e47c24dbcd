//! The load generator behind `surgemq bench`: MQTT clients that publish and subscribe in the
//! shapes SurgeMQ is measured with (pair, fan-in, fan-out, mesh, shared), speaking the protocol with
//! our own codec over glommio sockets, and a report of throughput, completeness and latency.
//!
//! The generator is thread-per-core like the broker, so that with fewer than 100 clients it is
//! not what limits a run: clients are spread over `--threads` executors, each encodes many
//! PUBLISHes per write and decodes many per read, and threads share only a few counters. By
//! default the loop is closed (each publisher keeps at most `--window` messages outstanding),
//! which measures sustained throughput; `--rate` gives an open loop for latency at a fixed load.
//! [`sink`] is a do-nothing server to measure the generator itself against.
//!
//! ```no_run
//! use surgemq::bench::{run, BenchConfig, Load, Scenario};
//! let report = run(BenchConfig {
//!     scenario: Scenario::FanIn,
//!     clients: Some(20),
//!     load: Load::Messages(10_000),
//!     ..Default::default()
//! })?;
//! println!("{}", report.summary());
//! # Ok::<(), surgemq::bench::BenchError>(())
//! ```

mod client;
mod config;
mod conn;
pub mod group;
mod json;
mod offline;
pub mod payload;
pub mod report;
mod runner;
mod scenario;
mod shared;
pub mod sink;
pub mod tracker;
pub mod window;

pub use config::{BenchConfig, BenchError, Load, Plan, Scenario, DEFAULT_CLIENTS, DEFAULT_WINDOW};
pub use report::{BenchReport, Latency};
pub use runner::run;
pub use scenario::{DEFAULT_GROUP, DEFAULT_SHARED};
pub use sink::{start_sink, SinkConfig, SinkHandle, SinkStats};
