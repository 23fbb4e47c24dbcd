//! Connection options: everything CONNECT carries plus the client's own limits, checked once
//! by [`ClientOptions::validate`] so that nothing later has to fail on a bad option.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::auth::EnhancedAuth;
use super::error::ClientError;
use super::tls::TlsOptions;
use crate::protocol::{ByteStr, Connect, LastWill, Properties, ProtocolLevel, QoS};
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
    /// MQTT 5 will properties; ignored by 3.1 and 3.1.1.
    pub properties: WillProperties,
}

impl Will {
    /// A will without MQTT 5 properties.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Will {
        Will {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: WillProperties::default(),
        }
    }
}

/// The MQTT 5 properties of a will (3.1.3.2). All optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds the server waits after the connection ends before publishing the will.
    pub delay_interval: Option<u32>,
    /// Seconds the will message lives once published.
    pub message_expiry_interval: Option<u32>,
    /// The payload is UTF-8 text (true) or unspecified bytes (false).
    pub payload_format_utf8: Option<bool>,
    pub content_type: Option<String>,
    /// A topic name (no wildcards).
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

impl WillProperties {
    fn to_properties(&self) -> Option<Box<Properties>> {
        let p = Properties {
            will_delay_interval: self.delay_interval,
            message_expiry_interval: self.message_expiry_interval,
            payload_format_utf8: self.payload_format_utf8,
            content_type: self.content_type.as_deref().map(ByteStr::from),
            response_topic: self.response_topic.as_deref().map(ByteStr::from),
            correlation_data: self.correlation_data.clone(),
            user_properties: pairs(&self.user_properties),
            ..Properties::default()
        };
        (p != Properties::default()).then(|| Box::new(p))
    }
}

fn pairs(list: &[(String, String)]) -> Vec<(ByteStr, ByteStr)> {
    list.iter()
        .map(|(k, v)| (ByteStr::from(k.as_str()), ByteStr::from(v.as_str())))
        .collect()
}

/// A UTF-8 string field: at most 65535 bytes, no U+0000.
fn check_string(what: &'static str, s: &str) -> Result<(), ClientError> {
    if s.len() > 65_535 || s.contains('\0') {
        return Err(invalid(what, "longer than 65535 bytes or contains U+0000"));
    }
    Ok(())
}

fn check_pairs(what: &'static str, list: &[(String, String)]) -> Result<(), ClientError> {
    for (k, v) in list {
        check_string(what, k)?;
        check_string(what, v)?;
    }
    Ok(())
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
    /// MQTT 3.1 ("MQIsdp", level 3), 3.1.1 ("MQTT", level 4) or 5 ("MQTT", level 5).
    pub protocol: ProtocolLevel,
    /// MQTT 5 Session Expiry Interval, seconds (0xFFFFFFFF: never). In MQTT 5
    /// `clean_session` is Clean Start: a session that outlives the connection needs an
    /// expiry above 0, with `clean_session: false` to resume it. `None` (or 0): the session
    /// ends with the connection. Ignored by 3.1 and 3.1.1.
    pub session_expiry: Option<u32>,
    /// MQTT 5 Receive Maximum: QoS 1/2 messages the server may have in flight towards this
    /// client (1 to 65535; the server's default is 65535). Ignored by 3.1 and 3.1.1.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 Maximum Packet Size announced to the server, which then does not send larger
    /// packets; it also lowers `max_packet_size`. `None`: `max_packet_size` is announced.
    /// Ignored by 3.1 and 3.1.1.
    pub maximum_packet_size: Option<u32>,
    /// MQTT 5 Topic Alias Maximum: how many topic aliases the server may use towards this
    /// client (the client resolves them). `None` or 0: none. Ignored by 3.1 and 3.1.1.
    pub topic_alias_maximum: Option<u16>,
    /// MQTT 5 topic aliases the client may use towards the server, to send repeated topics
    /// as a 2-byte alias: at most this many, and no more than the server's Topic Alias
    /// Maximum (none if its CONNACK has none). The least recently used topic gives up its
    /// alias when a new topic needs one. `None` or 0: the client sends whole topics.
    /// Ignored by 3.1 and 3.1.1.
    pub outgoing_topic_aliases: Option<u16>,
    /// MQTT 5 user properties of CONNECT, in order. Ignored by 3.1 and 3.1.1.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 Request Problem Information (server default: true). Ignored by 3.1 and 3.1.1.
    pub request_problem_information: Option<bool>,
    /// MQTT 5 Request Response Information (server default: false). Ignored by 3.1 and 3.1.1.
    pub request_response_information: Option<bool>,
    /// MQTT 5 enhanced authentication: the Authentication Method and Data of CONNECT and the
    /// responder answering the server's challenges (see [`EnhancedAuth`]). MQTT 5 only.
    pub authentication: Option<EnhancedAuth>,
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
    /// QoS 1/2 messages received are acknowledged by the application
    /// ([`Client::ack`](super::Client::ack)), not on arrival: until then the server keeps them
    /// and sends them again after a reconnect. For a receiver that passes messages on (a
    /// bridge) and may acknowledge only what the next hop has taken over.
    pub manual_acks: bool,
    /// Sets the top bit of the 3.1/3.1.1 protocol level (Mosquitto's `try_private`): tells a
    /// broker that this client is another broker's bridge, so that it does not send the
    /// client's own messages back and keeps retain flags as published. Ignored with MQTT 5,
    /// where subscription options say it.
    pub bridge: bool,
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
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            outgoing_topic_aliases: None,
            user_properties: Vec::new(),
            request_problem_information: None,
            request_response_information: None,
            authentication: None,
            max_inflight: 100,
            connect_timeout: Duration::from_secs(10),
            ping_timeout: None,
            max_packet_size: 16 << 20,
            message_buffer: 1024,
            reconnect_interval: None,
            manual_acks: false,
            bridge: false,
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
            if self.protocol.is_v5() {
                let p = &w.properties;
                if let Some(t) = &p.response_topic {
                    validate_topic_name(t).map_err(|e| invalid("will response topic", e))?;
                }
                if let Some(t) = &p.content_type {
                    check_string("will content type", t)?;
                }
                if p.correlation_data
                    .as_ref()
                    .is_some_and(|d| d.len() > 65_535)
                {
                    return Err(invalid("will correlation data", "longer than 65535 bytes"));
                }
                check_pairs("will user property", &p.user_properties)?;
            }
        }
        if self.protocol.is_v5() {
            if self.receive_maximum == Some(0) {
                return Err(invalid("receive maximum", "must be at least 1"));
            }
            if self.maximum_packet_size == Some(0) {
                return Err(invalid("maximum packet size", "must be at least 1"));
            }
            check_pairs("user property", &self.user_properties)?;
            if let Some(auth) = &self.authentication {
                if auth.method.is_empty() {
                    return Err(invalid("authentication method", "empty"));
                }
                check_string("authentication method", &auth.method)?;
                if auth.data.as_ref().is_some_and(|d| d.len() > 65_535) {
                    return Err(invalid("authentication data", "longer than 65535 bytes"));
                }
            }
        } else if self.authentication.is_some() {
            return Err(invalid(
                "authentication",
                "enhanced authentication needs MQTT 5",
            ));
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
        let v5 = self.protocol.is_v5();
        Connect {
            level: self.protocol,
            bridge: self.bridge && !v5,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            client_id: ByteStr::from(self.client_id.as_str()),
            will: self.will.as_ref().map(|w| LastWill {
                topic: ByteStr::from(w.topic.as_str()),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                properties: if v5 {
                    w.properties.to_properties()
                } else {
                    None
                },
            }),
            username: self.username.as_deref().map(ByteStr::from),
            password: self.password.clone(),
            properties: if v5 { self.connect_properties() } else { None },
        }
    }

    /// The MQTT 5 properties of CONNECT; `None` when there are none.
    fn connect_properties(&self) -> Option<Box<Properties>> {
        let p = Properties {
            session_expiry_interval: self.session_expiry.filter(|&s| s > 0),
            receive_maximum: self.receive_maximum,
            maximum_packet_size: Some(self.incoming_packet_limit()),
            topic_alias_maximum: self.topic_alias_maximum.filter(|&m| m > 0),
            user_properties: pairs(&self.user_properties),
            request_problem_information: self.request_problem_information,
            request_response_information: self.request_response_information,
            authentication_method: self
                .authentication
                .as_ref()
                .map(|a| ByteStr::from(a.method.as_str())),
            authentication_data: self.authentication.as_ref().and_then(|a| a.data.clone()),
            ..Properties::default()
        };
        Some(Box::new(p))
    }

    /// The largest packet the client accepts from the server: `max_packet_size`, lowered by
    /// `maximum_packet_size` for MQTT 5.
    pub fn incoming_packet_limit(&self) -> u32 {
        let limit = u32::try_from(self.max_packet_size).unwrap_or(u32::MAX);
        match self.maximum_packet_size {
            Some(m) if self.protocol.is_v5() => limit.min(m),
            _ => limit,
        }
    }

    /// Whether the session outlives the connection: not CleanSession for 3.1/3.1.1, a
    /// Session Expiry Interval above 0 for MQTT 5.
    pub fn session_persists(&self) -> bool {
        if self.protocol.is_v5() {
            self.session_expiry.unwrap_or(0) > 0
        } else {
            !self.clean_session
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
                    will: Some(Will::new("a/#", Bytes::new(), QoS::AtMostOnce, false)),
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
    fn enhanced_authentication_is_mqtt_5_and_goes_into_connect() {
        use crate::client::auth::{AuthChallenge, EnhancedAuth};
        let auth = |method: &str| {
            EnhancedAuth::new(
                method,
                Some(Bytes::from_static(b"first")),
                |_: &AuthChallenge| Ok(Bytes::new()),
            )
        };
        let v5 = ClientOptions {
            protocol: ProtocolLevel::V5,
            authentication: Some(auth("SCRAM-SHA-256")),
            ..ClientOptions::new("h", 1)
        };
        v5.validate().unwrap();
        let p = v5.connect_packet().properties.unwrap();
        assert_eq!(p.authentication_method.as_deref(), Some("SCRAM-SHA-256"));
        assert_eq!(p.authentication_data.as_deref(), Some(&b"first"[..]));
        let cases = [
            (
                ClientOptions {
                    protocol: ProtocolLevel::V311,
                    ..v5.clone()
                },
                "authentication",
            ),
            (
                ClientOptions {
                    authentication: Some(auth("")),
                    ..v5.clone()
                },
                "authentication method",
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
