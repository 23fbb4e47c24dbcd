//! An MQTT 3.1 / 3.1.1 / 5 client on glommio.
//!
//! Two layers. [`state`] is the protocol without I/O: a state machine that takes packets,
//! requests and the time and returns packets to send and events (handshake, packet ids,
//! QoS 1/2 flows in both directions, keepalive, resuming a persistent session). The async
//! layer around it is a [`Client`] handle (cheap `Clone`, single-threaded, for requests), a
//! [`Messages`] receiver (incoming PUBLISHes) and one connection task per client that alone
//! owns the socket, so reads, coalesced writes and timers all happen in one place.
//!
//! MQTT 5 with `protocol: ProtocolLevel::V5`: the CONNECT properties are fields of
//! [`ClientOptions`] (session expiry, receive maximum, ...), PUBLISH properties go out with
//! [`Client::publish_with`] and come in on each message (`Publish::properties`), subscription
//! options and identifiers with [`Client::subscribe_with`], and the server's refusals are
//! errors naming their reason code ([`ClientError::Rejected`],
//! [`ClientError::ServerDisconnect`]). Enhanced authentication is an [`EnhancedAuth`] in the
//! options (and [`Client::reauthenticate`]); the client keeps to the server's Receive Maximum
//! and Maximum Packet Size, holds the server to its own (DISCONNECT 0x93 / 0x95), and can
//! send repeated topics as topic aliases ([`ClientOptions::outgoing_topic_aliases`]).
//!
//! ```no_run
//! use surgemq::client::{block_on, Client, ClientOptions};
//! use surgemq::protocol::{ByteStr, Properties, ProtocolLevel, QoS};
//!
//! block_on(async {
//!     let options = ClientOptions {
//!         protocol: ProtocolLevel::V5,
//!         session_expiry: Some(3600),
//!         ..ClientOptions::new("127.0.0.1", 1883)
//!     };
//!     let (client, mut messages) = Client::connect(options).await?;
//!     client.subscribe(&[("sensors/#", QoS::AtLeastOnce)]).await?;
//!     let properties = Properties {
//!         user_properties: vec![(ByteStr::from("unit"), ByteStr::from("celsius"))],
//!         ..Properties::default()
//!     };
//!     client
//!         .publish_with("sensors/7/temp", "21.5", QoS::AtLeastOnce, false, properties)
//!         .await?;
//!     let message = messages.recv().await?;
//!     let user = message.properties.map(|p| p.user_properties).unwrap_or_default();
//!     println!("{} {:?} {user:?}", message.topic, message.payload);
//!     client.disconnect().await
//! })??;
//! # Ok::<(), surgemq::client::ClientError>(())
//! ```
//!
//! Under MQTT: TCP by default, or TLS, WebSockets or WebSockets over TLS
//! ([`ClientOptions::transport`], [`TlsOptions`]), through the sans-IO
//! [`transport`](crate::transport) layer.
//!
//! ```no_run
//! use surgemq::client::{block_on, Client, ClientOptions};
//! use surgemq::protocol::QoS;
//!
//! block_on(async {
//!     let (client, mut messages) = Client::connect(ClientOptions::new("127.0.0.1", 1883)).await?;
//!     client.subscribe(&[("sensors/+/temp", QoS::AtLeastOnce)]).await?;
//!     client.publish("sensors/7/temp", "21.5", QoS::AtLeastOnce, false).await?;
//!     let message = messages.recv().await?;
//!     println!("{} {:?}", message.topic, message.payload);
//!     client.disconnect().await
//! })??;
//! # Ok::<(), surgemq::client::ClientError>(())
//! ```

mod auth;
mod connection;
pub(crate) mod dial;
mod error;
mod handle;
mod ids;
mod options;
mod shared;
mod signal;
pub mod state;
mod tls;

use std::future::Future;

pub use crate::transport::Transport;
pub use auth::{AuthChallenge, AuthResponder, EnhancedAuth};
pub use error::{refusal_reason, ClientError, ProtocolError};
pub use handle::{Client, Messages, Publishing};
pub use options::{generated_client_id, ClientOptions, Will, WillProperties};
pub use tls::{TlsOptions, TlsVersion};

/// Memory glommio registers with io_uring for the executor: a client does no file I/O, so
/// glommio's minimum is plenty.
const IO_MEMORY: usize = 64 * 1024;

/// Runs `future` to completion on a new glommio executor on this thread, for programs that
/// are not already inside one (tools, tests, examples). The executor is not pinned to a CPU.
///
/// Fails if the executor cannot start, usually because the locked-memory limit
/// (`ulimit -l`) is below what io_uring needs (512 KiB).
pub fn block_on<F: Future>(future: F) -> Result<F::Output, ClientError> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(IO_MEMORY)
        .make()
        .map_err(|e| ClientError::Executor(e.to_string()))?;
    Ok(executor.run(future))
}
