//! MQTT 5 enhanced authentication (MQTT 5.0 4.12) from the client's side: the method and
//! first data CONNECT carries, and the [`AuthResponder`] that answers each challenge of the
//! server (AUTH 0x18 Continue authentication) with the client's next data.
//!
//! The exchange at CONNECT ends with CONNACK (success, or a refusal such as 0x87 not
//! authorized); a re-authentication ([`Client::reauthenticate`](super::Client::reauthenticate),
//! AUTH 0x19) ends with the server's AUTH 0x00, or with its DISCONNECT when it refuses.
//!
//! ```
//! use bytes::Bytes;
//! use surgemq::client::{AuthChallenge, ClientOptions, EnhancedAuth};
//! use surgemq::protocol::ProtocolLevel;
//!
//! // A method whose server challenges with a nonce and wants it reversed.
//! let auth = EnhancedAuth::new("REVERSE", None, |challenge: &AuthChallenge| {
//!     let nonce = challenge.data.as_deref().ok_or("a challenge without data")?;
//!     Ok(Bytes::from(nonce.iter().rev().copied().collect::<Vec<u8>>()))
//! });
//! let options = ClientOptions {
//!     protocol: ProtocolLevel::V5,
//!     authentication: Some(auth),
//!     ..ClientOptions::new("127.0.0.1", 1883)
//! };
//! assert!(options.validate().is_ok());
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A step of the server in an enhanced-authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChallenge {
    /// The Authentication Method (the one the client announced).
    pub method: String,
    /// The server's Authentication Data, if it sent any.
    pub data: Option<Bytes>,
    /// The server's Reason String, if it gave one.
    pub reason_string: Option<String>,
    /// Whether this is part of a re-authentication (after CONNACK) rather than of CONNECT.
    pub reauthenticating: bool,
}

/// Answers the server's challenges. Closures `FnMut(&AuthChallenge) -> Result<Bytes, String>`
/// are responders.
///
/// An `Err` ends the exchange: the client sends DISCONNECT 0x80 (unspecified error), closes
/// the connection and fails with [`ClientError::AuthAborted`](super::ClientError::AuthAborted)
/// carrying the message.
pub trait AuthResponder: Send {
    /// The Authentication Data answering this AUTH 0x18 (sent in AUTH 0x18).
    fn respond(&mut self, challenge: &AuthChallenge) -> Result<Bytes, String>;

    /// The server accepted the client (CONNACK success, or AUTH 0x00 after a
    /// re-authentication) with this final Authentication Data. A method that authenticates
    /// the server too (SCRAM's server signature) checks it here; `Err` ends the connection as
    /// for [`respond`](Self::respond). By default anything is accepted.
    fn accepted(&mut self, _data: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }
}

impl<F> AuthResponder for F
where
    F: FnMut(&AuthChallenge) -> Result<Bytes, String> + Send,
{
    fn respond(&mut self, challenge: &AuthChallenge) -> Result<Bytes, String> {
        self(challenge)
    }
}

/// What [`ClientOptions::authentication`](super::ClientOptions::authentication) holds: the
/// Authentication Method, the Authentication Data of CONNECT and the responder. Clones share
/// the responder (a client calls it from its own executor only).
#[derive(Clone)]
pub struct EnhancedAuth {
    /// The Authentication Method CONNECT announces (and every AUTH repeats).
    pub method: String,
    /// The Authentication Data of CONNECT, if the method starts with the client's data.
    pub data: Option<Bytes>,
    responder: Arc<Mutex<dyn AuthResponder>>,
}

impl EnhancedAuth {
    pub fn new(
        method: impl Into<String>,
        data: Option<Bytes>,
        responder: impl AuthResponder + 'static,
    ) -> EnhancedAuth {
        EnhancedAuth {
            method: method.into(),
            data,
            responder: Arc::new(Mutex::new(responder)),
        }
    }

    /// Asks the responder for the answer to `challenge`.
    pub(crate) fn respond(&self, challenge: &AuthChallenge) -> Result<Bytes, String> {
        match self.responder.lock() {
            Ok(mut r) => r.respond(challenge),
            Err(_) => Err("the authentication responder panicked earlier".into()),
        }
    }

    /// Tells the responder the server accepted the client.
    pub(crate) fn accepted(&self, data: Option<&[u8]>) -> Result<(), String> {
        match self.responder.lock() {
            Ok(mut r) => r.accepted(data),
            Err(_) => Err("the authentication responder panicked earlier".into()),
        }
    }
}

impl fmt::Debug for EnhancedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnhancedAuth")
            .field("method", &self.method)
            .field(
                "data",
                &self.data.as_ref().map(|d| format!("{} bytes", d.len())),
            )
            .finish_non_exhaustive()
    }
}
