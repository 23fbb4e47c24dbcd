//! Connection options: everything CONNECT carries plus the client's own limits, checked once
//! by [`ClientOptions::validate`] so that nothing later has to fail on a bad option.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::error::ClientError;
use super::tls::TlsOptions;
use crate::protocol::{ByteStr, Connect, LastWill, ProtocolLevel, QoS};
use crate::topic::validate_topic_name;
use crate::transport::Transport;

fn invalid(what: &'static str, reason: impl ToString) -> ClientError {
    ClientError::invalid(what, reason)
}

/// The message the server publishes for this client if the connection ends without a
/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// How to connect and what to announce in CONNECT. Start from [`ClientOptions::new`] and
/// change fields with struct update syntax.
///
/// ```
/// use surgemq::client::ClientOptions;
///
/// let options = ClientOptions {
///     client_id: "sensor-7".into(),
///     keep_alive: 30,
///     ..ClientOptions::new("127.0.0.1", 1883)
/// };
/// assert!(options.validate().is_ok());
/// ```
///
/// TLS and WebSockets are a matter of `transport` and `tls`:
///
/// ```
/// use surgemq::client::{ClientOptions, TlsOptions, Transport};
///
/// let options = ClientOptions {
///     transport: Transport::Wss { path: "/mqtt".into() },
///     tls: TlsOptions {
///         ca_file: Some("ca.pem".into()),
///         ..TlsOptions::default()
///     },
///     ..ClientOptions::new("broker.example.com", 443)
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// What runs under MQTT: TCP (`Transport::Mqtt`, the default), TLS (`Mqtts`), WebSockets
    /// upgraded on a path (`Ws`) or WebSockets over TLS (`Wss`). The TLS handshake and the
    /// WebSocket upgrade happen before CONNECT, again on every reconnect.
    pub transport: Transport,
    /// How TLS checks the server and proves the client, for `Mqtts` and `Wss` (setting any of
    /// it for another transport is an error: it would silently go unencrypted).
    pub tls: TlsOptions,
    /// Up to 23 characters for MQTT 3.1. May be empty for 3.1.1 with a clean session; the
    /// server then assigns one. [`ClientOptions::new`] generates a unique one.
    pub client_id: String,
    /// Start a new session (true) or resume the one the server keeps for `client_id`.
    pub clean_session: bool,
    /// Seconds; the client sends PINGREQ when the connection has been idle this long.
    /// 0 turns keepalive off.
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Will>,
    /// MQTT 3.1 ("MQIsdp", level 3) or 3.1.1 ("MQTT", level 4).
    pub protocol: ProtocolLevel,
    /// QoS 1/2 publishes sent but not yet acknowledged; beyond it `publish` waits.
    pub max_inflight: u16,
    /// Time allowed for opening the connection (the TCP connect to each address, and the TLS
    /// handshake and WebSocket upgrade within the same time from the start), and again for
    /// the CONNACK.
    pub connect_timeout: Duration,
    /// How long to wait for PINGRESP before the server is considered gone. `None`: the
    /// keepalive interval.
    pub ping_timeout: Option<Duration>,
    /// Largest packet accepted from the server, fixed header included.
    pub max_packet_size: usize,
    /// Incoming messages buffered for [`Messages`](super::Messages); when it is full the
    /// client stops reading the socket until the application catches up (the messages of the
    /// read that filled it are kept, so it can be exceeded by one read's worth).
    pub message_buffer: usize,
    /// When set, a lost connection is opened again after this delay (and again after each
    /// failed attempt) instead of ending the client. Unacknowledged QoS 1/2 messages are sent
    /// again; if the server kept no session, the client subscribes again to what it had.
    /// Requests waiting when the connection drops fail, as do SUBSCRIBE and UNSUBSCRIBE made
    /// while it is down; publishes wait for the new connection. A refused CONNECT still ends
    /// the client.
    pub reconnect_interval: Option<Duration>,
}

impl ClientOptions {
    /// MQTT 3.1.1, clean session, keepalive 60 s, a generated client id, 100 in flight.
    pub fn new(host: impl Into<String>, port: u16) -> ClientOptions {
        ClientOptions {
            host: host.into(),
            port,
            transport: Transport::Mqtt,
            tls: TlsOptions::default(),
            client_id: generated_client_id(),
            clean_session: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            protocol: ProtocolLevel::V311,
            max_inflight: 100,
            connect_timeout: Duration::from_secs(10),
            ping_timeout: None,
            max_packet_size: 16 << 20,
            message_buffer: 1024,
            reconnect_interval: None,
        }
    }

    /// Checks what the server would refuse or the wire format cannot carry, naming the
    /// option. [`Client::connect`](super::Client::connect) calls it first.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.host.is_empty() {
            return Err(invalid("host", "empty"));
        }
        self.validate_transport()?;
        if self.client_id.contains('\0') {
            return Err(invalid("client id", "contains U+0000"));
        }
        match self.protocol {
            // The codec speaks MQTT 5; the client's session logic does not yet.
            ProtocolLevel::V5 => {
                return Err(invalid(
                    "protocol",
                    "MQTT 5 is not supported by the client yet",
                ));
            }
            // 3.1 (section 3.1, Client Identifier): 1 to 23 characters.
            ProtocolLevel::V31 if self.client_id.is_empty() => {
                return Err(invalid("client id", "MQTT 3.1 needs a non-empty client id"));
            }
            ProtocolLevel::V31 if self.client_id.chars().count() > 23 => {
                return Err(invalid(
                    "client id",
                    "MQTT 3.1 allows at most 23 characters",
                ));
            }
            ProtocolLevel::V311 if self.client_id.is_empty() && !self.clean_session => {
                return Err(invalid(
                    "client id",
                    "an empty client id needs a clean session (MQTT-3.1.3-7)",
                ));
            }
            _ => {}
        }
        if self.client_id.len() > 65_535 {
            return Err(invalid("client id", "longer than 65535 bytes"));
        }
        if let Some(u) = &self.username {
            if u.len() > 65_535 || u.contains('\0') {
                return Err(invalid(
                    "user name",
                    "longer than 65535 bytes or contains U+0000",
                ));
            }
        }
        if let Some(p) = &self.password {
            if p.len() > 65_535 {
                return Err(invalid("password", "longer than 65535 bytes"));
            }
            if self.username.is_none() && self.protocol == ProtocolLevel::V311 {
                return Err(invalid(
                    "password",
                    "MQTT 3.1.1 needs a user name with a password (MQTT-3.1.2-22)",
                ));
            }
        }
        if let Some(w) = &self.will {
            validate_topic_name(&w.topic).map_err(|e| invalid("will topic", e))?;
            if w.payload.len() > 65_535 {
                return Err(invalid("will payload", "longer than 65535 bytes"));
            }
        }
        if self.max_inflight == 0 {
            return Err(invalid("max inflight", "must be at least 1"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect timeout", "must be above 0"));
        }
        if self.ping_timeout == Some(Duration::ZERO) {
            return Err(invalid("ping timeout", "must be above 0"));
        }
        if self.max_packet_size < 64 {
            return Err(invalid("max packet size", "must be at least 64 bytes"));
        }
        if self.message_buffer == 0 {
            return Err(invalid("message buffer", "must be at least 1"));
        }
        if self.reconnect_interval == Some(Duration::ZERO) {
            return Err(invalid("reconnect interval", "must be above 0"));
        }
        Ok(())
    }

    /// The transport's share of `validate`: names that go into an HTTP head or a TLS
    /// ClientHello, and TLS settings that only make sense with TLS.
    fn validate_transport(&self) -> Result<(), ClientError> {
        if let Some(path) = self.transport.ws_path() {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "websocket path",
                    format!("{path:?}: must start with / and hold no spaces or control characters"),
                ));
            }
            if self
                .host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid("host", "contains spaces or control characters"));
            }
        }
        if !self.transport.uses_tls() {
            if self.tls.is_set() {
                return Err(invalid(
                    "tls",
                    format!(
                        "TLS options set for a {}:// connection, which does not use TLS",
                        self.transport.scheme()
                    ),
                ));
            }
            return Ok(());
        }
        if self.tls.config.is_none() {
            match (&self.tls.cert, &self.tls.key) {
                (Some(_), None) => {
                    return Err(invalid("tls key", "a client certificate needs its key"))
                }
                (None, Some(_)) => return Err(invalid("tls cert", "a key needs its certificate")),
                _ => {}
            }
        }
        self.tls.server_name(&self.host)?;
        Ok(())
    }

    /// The CONNECT packet these options describe.
    pub fn connect_packet(&self) -> Connect {
        Connect {
            level: self.protocol,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            client_id: ByteStr::from(self.client_id.as_str()),
            will: self.will.as_ref().map(|w| LastWill {
                topic: ByteStr::from(w.topic.as_str()),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                properties: None,
            }),
            username: self.username.as_deref().map(ByteStr::from),
            password: self.password.clone(),
            properties: None,
        }
    }

    /// `keep_alive` as a duration.
    pub fn keep_alive_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.keep_alive))
    }
}

/// "surgemq-" and 15 hex digits (23 characters: the MQTT 3.1 limit), different for every
/// call in a process and, with high probability, across processes.
pub fn generated_client_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    // Mixing pid, time and a counter; uniqueness, not secrecy, is what matters here.
    let mixed =
        (u64::from(std::process::id()) << 40) ^ nanos ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("surgemq-{:015x}", mixed & 0x0fff_ffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ids_fit_mqtt_31() {
        let o = ClientOptions::new("localhost", 1883);
        o.validate().unwrap();
        assert_eq!(o.client_id.len(), 23);
        assert_ne!(generated_client_id(), generated_client_id());
        let v31 = ClientOptions {
            protocol: ProtocolLevel::V31,
            ..o
        };
        v31.validate().unwrap();
    }

    #[test]
    fn invalid_options_name_the_option() {
        let base = ClientOptions::new("localhost", 1883);
        let cases = [
            (
                ClientOptions {
                    client_id: String::new(),
                    clean_session: false,
                    ..base.clone()
                },
                "client id",
            ),
            (
                ClientOptions {
                    protocol: ProtocolLevel::V31,
                    client_id: "x".repeat(24),
                    ..base.clone()
                },
                "client id",
            ),
            (
                ClientOptions {
                    password: Some(Bytes::from_static(b"p")),
                    ..base.clone()
                },
                "password",
            ),
            (
                ClientOptions {
                    will: Some(Will {
                        topic: "a/#".into(),
                        payload: Bytes::new(),
                        qos: QoS::AtMostOnce,
                        retain: false,
                    }),
                    ..base.clone()
                },
                "will topic",
            ),
            (
                ClientOptions {
                    max_inflight: 0,
                    ..base.clone()
                },
                "max inflight",
            ),
            (
                ClientOptions {
                    host: String::new(),
                    ..base.clone()
                },
                "host",
            ),
        ];
        for (options, what) in cases {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid {what}:")), "{err}");
        }
    }

    #[test]
    fn v31_allows_a_password_alone() {
        let o = ClientOptions {
            protocol: ProtocolLevel::V31,
            password: Some(Bytes::from_static(b"p")),
            ..ClientOptions::new("h", 1)
        };
        o.validate().unwrap();
        assert_eq!(o.connect_packet().password.as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn transport_options_are_checked() {
        use super::super::tls::TlsVersion;
        let base = ClientOptions::new("localhost", 8883);
        let ca = TlsOptions {
            ca_file: Some("ca.pem".into()),
            ..TlsOptions::default()
        };
        let ws = |path: &str| Transport::Ws { path: path.into() };
        let ok = [
            ClientOptions {
                transport: Transport::Mqtts,
                ..base.clone()
            },
            ClientOptions {
                transport: Transport::Wss {
                    path: "/mqtt".into(),
                },
                tls: ca.clone(),
                ..base.clone()
            },
            ClientOptions {
                transport: ws("/a/b?x=1"),
                ..base.clone()
            },
            ClientOptions {
                host: "::1".into(),
                transport: Transport::Mqtts,
                tls: TlsOptions {
                    version: Some(TlsVersion::Tls13),
                    ..TlsOptions::default()
                },
                ..base.clone()
            },
        ];
        for o in ok {
            o.validate().unwrap_or_else(|e| panic!("{o:?}: {e}"));
        }
        let bad = [
            // TLS settings where there is no TLS: it would go unencrypted.
            (
                ClientOptions {
                    tls: ca.clone(),
                    ..base.clone()
                },
                "tls",
            ),
            (
                ClientOptions {
                    transport: ws("/mqtt"),
                    tls: TlsOptions {
                        insecure: true,
                        ..TlsOptions::default()
                    },
                    ..base.clone()
                },
                "tls",
            ),
            (
                ClientOptions {
                    transport: Transport::Mqtts,
                    tls: TlsOptions {
                        cert: Some("c.pem".into()),
                        ..TlsOptions::default()
                    },
                    ..base.clone()
                },
                "tls key",
            ),
            (
                ClientOptions {
                    transport: Transport::Mqtts,
                    tls: TlsOptions {
                        key: Some("k.pem".into()),
                        ..TlsOptions::default()
                    },
                    ..base.clone()
                },
                "tls cert",
            ),
            (
                ClientOptions {
                    transport: Transport::Mqtts,
                    tls: TlsOptions {
                        server_name: Some("not a name".into()),
                        ..TlsOptions::default()
                    },
                    ..base.clone()
                },
                "tls server_name",
            ),
            (
                ClientOptions {
                    host: "bad host".into(),
                    transport: Transport::Mqtts,
                    ..base.clone()
                },
                "host",
            ),
            (
                ClientOptions {
                    transport: ws("mqtt"),
                    ..base.clone()
                },
                "websocket path",
            ),
            (
                ClientOptions {
                    transport: ws("/mqtt\r\nX-Injected: 1"),
                    ..base.clone()
                },
                "websocket path",
            ),
            (
                ClientOptions {
                    host: "evil\r\nX: 1".into(),
                    transport: ws("/mqtt"),
                    ..base.clone()
                },
                "host",
            ),
        ];
        for (options, what) in bad {
            let err = options.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid {what}:")),
                "{what}: {err}"
            );
        }
    }
}
