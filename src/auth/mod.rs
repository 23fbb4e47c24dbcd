//! Who may connect, and what they may publish and subscribe to.
//!
//! [`Authenticator`] decides at CONNECT (user name, password, client id, peer address → allow,
//! CONNACK 4 or CONNACK 5) and, once connected, which topics a client may publish to and which
//! filters it may subscribe to. Embedders plug in their own; [`FileAuthenticator`] is the
//! built-in one, reading Mosquitto's password and ACL files. An authenticator may also offer
//! MQTT 5 enhanced authentication ([`Authenticator::start_exchange`]): challenge and response
//! steps over AUTH packets, at CONNECT and again whenever the client re-authenticates.

pub mod acl;
pub mod passwd;
mod reload;

use std::fmt::Debug;
use std::net::SocketAddr;

pub use acl::{AclError, AclFile, SubscribeAccess};
pub use passwd::{PasswdError, PasswordFile};
pub use reload::{ReloadError, ReloadableAuthenticator};

/// What a client presents in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub client_id: &'a str,
    pub peer: SocketAddr,
    /// The user name is the subject of a client certificate the TLS handshake verified
    /// (`--use-identity-as-username`): there is no password to check.
    pub certified: bool,
}

/// The answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    Allow,
    /// CONNACK 4: bad user name or password.
    BadCredentials,
    /// CONNACK 5: not authorized.
    NotAuthorized,
}

/// One step of MQTT 5 enhanced authentication (MQTT 5.0 4.12), as the authenticator answers
/// the client's Authentication Data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send the client this Authentication Data (AUTH 0x18 Continue authentication) and hand
    /// its answer to the next step.
    Continue(Vec<u8>),
    /// Authenticated, with Authentication Data for the client (in CONNACK, or AUTH 0x00 after
    /// a re-authentication) if any.
    Success(Option<Vec<u8>>),
    /// Refused: CONNACK 0x87 (or, re-authenticating, DISCONNECT 0x87) not authorized.
    Fail,
}

/// One client's enhanced-authentication exchange in progress.
pub trait AuthExchange: Debug {
    /// The client's Authentication Data (None when it sent none); the answer says what next.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// Decides who may connect and what they may do. Called on the shard that serves the client;
/// implementations are shared by all shards, hence `Send + Sync`.
pub trait Authenticator: Send + Sync + Debug {
    fn authenticate(&self, credentials: &Credentials<'_>) -> AuthDecision;

    /// Starts MQTT 5 enhanced authentication with `method`, the Authentication Method of
    /// CONNECT (or of an AUTH 0x19 re-authentication). None: the method is not offered, and
    /// the client gets CONNACK 0x8C bad authentication method. A client that completes the
    /// exchange is authenticated: [`Authenticator::authenticate`] is not asked.
    fn start_exchange(
        &self,
        _method: &str,
        _credentials: &Credentials<'_>,
    ) -> Option<Box<dyn AuthExchange>> {
        None
    }

    /// Whether a PUBLISH to `topic` is accepted. A refused one is acknowledged and dropped.
    fn can_publish(&self, _username: Option<&str>, _client_id: &str, _topic: &str) -> bool {
        true
    }

    /// Whether a subscription to `filter` is granted. A refused one gets 0x80 in SUBACK.
    fn can_subscribe(&self, _username: Option<&str>, _client_id: &str, _filter: &str) -> bool {
        true
    }

    /// What a subscription to `filter` may read: refused, granted, or granted with every
    /// message checked with [`Authenticator::can_read`] (for a filter only partly readable).
    /// By default [`Authenticator::can_subscribe`] decides, and nothing is checked later.
    fn subscribe_access(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> SubscribeAccess {
        if self.can_subscribe(username, client_id, filter) {
            SubscribeAccess::Granted
        } else {
            SubscribeAccess::Refused
        }
    }

    /// For a subscription granted as [`SubscribeAccess::GrantedChecked`]: whether a message on
    /// `topic` may be sent to the client.
    fn can_read(&self, _username: Option<&str>, _client_id: &str, _topic: &str) -> bool {
        true
    }

    /// Whether the per-topic checks do anything; lets the broker skip them on the hot path.
    fn checks_topics(&self) -> bool {
        false
    }
}

/// Mosquitto-style access control: an optional password file, anonymous access on or off, and
/// an optional ACL file.
#[derive(Debug, Clone, Default)]
pub struct FileAuthenticator {
    pub passwords: Option<PasswordFile>,
    pub allow_anonymous: bool,
    pub acl: Option<AclFile>,
}

impl FileAuthenticator {
    /// Anyone may connect and do anything: what a broker without configuration does.
    pub fn allow_all() -> FileAuthenticator {
        FileAuthenticator {
            passwords: None,
            allow_anonymous: true,
            acl: None,
        }
    }
}

impl Authenticator for FileAuthenticator {
    fn authenticate(&self, c: &Credentials<'_>) -> AuthDecision {
        match (c.username, &self.passwords) {
            (Some(_), _) if c.certified => AuthDecision::Allow,
            (None, _) if self.allow_anonymous => AuthDecision::Allow,
            (None, _) => AuthDecision::NotAuthorized,
            (Some(user), Some(file)) => {
                if file.verify(user, c.password.unwrap_or_default()) {
                    AuthDecision::Allow
                } else {
                    AuthDecision::BadCredentials
                }
            }
            // Without a password file, user names are labels (for ACLs), not checked.
            (Some(_), None) => AuthDecision::Allow,
        }
    }

    fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_publish(username, client_id, topic))
    }

    fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        self.subscribe_access(username, client_id, filter) != SubscribeAccess::Refused
    }

    fn subscribe_access(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> SubscribeAccess {
        self.acl.as_ref().map_or(SubscribeAccess::Granted, |acl| {
            acl.subscribe_access(username, client_id, filter)
        })
    }

    fn can_read(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.can_read(username, client_id, topic))
    }

    fn checks_topics(&self) -> bool {
        self.acl.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds<'a>(user: Option<&'a str>, pass: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            username: user,
            password: pass,
            client_id: "c",
            peer: "127.0.0.1:1".parse().unwrap(),
            certified: false,
        }
    }

    #[test]
    fn password_file_decides_connack_codes() {
        let mut file = PasswordFile::default();
        file.set("alice", b"secret").unwrap();
        let auth = FileAuthenticator {
            passwords: Some(file),
            allow_anonymous: false,
            acl: None,
        };
        assert_eq!(
            auth.authenticate(&creds(Some("alice"), Some(b"secret"))),
            AuthDecision::Allow
        );
        assert_eq!(
            auth.authenticate(&creds(Some("alice"), Some(b"wrong"))),
            AuthDecision::BadCredentials
        );
        assert_eq!(
            auth.authenticate(&creds(Some("alice"), None)),
            AuthDecision::BadCredentials
        );
        assert_eq!(
            auth.authenticate(&creds(Some("eve"), Some(b"x"))),
            AuthDecision::BadCredentials
        );
        assert_eq!(
            auth.authenticate(&creds(None, None)),
            AuthDecision::NotAuthorized
        );
    }

    #[test]
    fn allow_all_allows_all() {
        let auth = FileAuthenticator::allow_all();
        assert_eq!(auth.authenticate(&creds(None, None)), AuthDecision::Allow);
        assert_eq!(
            auth.authenticate(&creds(Some("x"), Some(b"y"))),
            AuthDecision::Allow
        );
        assert!(auth.can_publish(None, "c", "any/topic"));
        assert!(!auth.checks_topics());
    }
}
