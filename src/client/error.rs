//! What can go wrong for a client, as one typed error. Every message says what happened in
//! words a user can act on (the CLI prints them as they are), and every variant is `Clone`
//! because one connection failure is reported to every request that was waiting on it.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{
    DecodeError, EncodeError, PacketId, PacketType, ProtocolLevel, ReasonCode, SubscribeReturnCode,
};
use crate::transport::{TransportError, WsError};

/// Why a client operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered CONNACK with a refusal: the reason, and the code as it was on the
    /// wire (a 3.1.1 return code, or the MQTT 5 reason code).
    #[error("connection refused: {} (CONNACK {})", refusal_reason(*.0), wire_code(*.0, *.1))]
    Refused(ReasonCode, ProtocolLevel),
    /// The server sent something the protocol does not allow; the connection was closed.
    #[error("protocol violation by the server: {0}")]
    Protocol(#[from] ProtocolError),
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// TLS failed: the server's certificate is not trusted or not valid for its name, the
    /// server refused the client's certificate (or its absence), no TLS version in common, or
    /// a broken record later on.
    #[error("TLS error: {0}")]
    Tls(rustls::Error),
    /// The server refused the WebSocket upgrade, or broke the WebSocket protocol.
    #[error(transparent)]
    WebSocket(WsError),
    /// Reading or writing the socket failed.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The server did not answer in time.
    #[error("timed out after {} waiting for {waiting_for}", seconds(*.after))]
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },
    /// The server closed the connection.
    #[error("connection closed by the server")]
    ConnectionClosed,
    /// The server ended an MQTT 5 connection with DISCONNECT: its reason code and, if it
    /// gave one, its Reason String.
    #[error("server sent DISCONNECT {reason}{}", detail(.reason_string))]
    ServerDisconnect {
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server refused a request with an MQTT 5 reason code of 0x80 or above: a PUBLISH
    /// (PUBACK, PUBREC or PUBCOMP) or a subscription (SUBACK). The connection stays up.
    #[error("{} {reason}{}", .ack.name(), detail(.reason_string))]
    Rejected {
        /// The acknowledgement that carried the refusal.
        ack: PacketType,
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    /// The client was disconnected (by `disconnect`, `abort`, or dropping every handle)
    /// before the operation completed.
    #[error("disconnected")]
    Disconnected,
    /// The arguments cannot be sent: an invalid topic, a field too long for the wire format,
    /// or an option out of range. Nothing was sent.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Every packet identifier (65535) is in use by unacknowledged requests.
    #[error("all 65535 packet identifiers are in use")]
    NoPacketId,
    /// The executor for [`block_on`](super::block_on) could not be started.
    #[error("cannot start the I/O executor: {0}")]
    Executor(String),
    /// MQTT 5 enhanced authentication: the client's responder gave up (it could not answer a
    /// challenge, or did not accept the server's final data). The client sent DISCONNECT
    /// 0x80 and closed the connection.
    #[error("enhanced authentication {method:?} abandoned by the client: {reason}")]
    AuthAborted { method: String, reason: String },
    /// MQTT 5: the publish waited longer than its Message Expiry Interval (for the
    /// connection, or for room under the server's Receive Maximum) and was dropped unsent.
    #[error("message expired before it could be sent (Message Expiry Interval {interval} s)")]
    MessageExpired { interval: u32 },
}

impl ClientError {
    pub(crate) fn io(e: std::io::Error) -> ClientError {
        ClientError::Io(Arc::new(e))
    }

    /// The error a SUBACK refusal stands for ("SUBACK 0x87 not authorized"); `None` for a
    /// granted QoS.
    pub fn refused_subscription(code: SubscribeReturnCode) -> Option<ClientError> {
        match code {
            SubscribeReturnCode::Success(_) => None,
            SubscribeReturnCode::Failure(reason) => Some(ClientError::Rejected {
                ack: PacketType::SubAck,
                reason,
                reason_string: None,
            }),
        }
    }

    /// The reason code of the DISCONNECT an MQTT 5 client sends before closing the
    /// connection for this error (4.13); `None` when it just closes.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            ClientError::Protocol(e) => Some(e.reason_code()),
            ClientError::AuthAborted { .. } => Some(ReasonCode::UNSPECIFIED_ERROR),
            _ => None,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl ToString) -> ClientError {
        ClientError::Invalid {
            what,
            reason: reason.to_string(),
        }
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> ClientError {
        match e {
            TransportError::Tls(e) => ClientError::Tls(e),
            TransportError::Ws(e) => ClientError::WebSocket(e),
            TransportError::Io(e) => ClientError::io(e),
        }
    }
}

impl From<EncodeError> for ClientError {
    fn from(e: EncodeError) -> ClientError {
        ClientError::invalid("packet", e)
    }
}

/// The rule the server broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes were not a valid MQTT packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The first packet was not CONNACK (MQTT-3.2.0-1).
    #[error("expected CONNACK, got {0:?} (MQTT-3.2.0-1)")]
    ExpectedConnAck(PacketType),
    /// A packet only clients send (CONNECT, SUBSCRIBE, ...), or a second CONNACK.
    #[error("unexpected {0:?} from a server")]
    UnexpectedPacket(PacketType),
    /// Session present while the client asked for a clean session (MQTT-3.2.2-1).
    #[error("CONNACK says session present although CleanSession was set (MQTT-3.2.2-1)")]
    SessionPresentWithCleanSession,
    /// A SUBACK whose return codes do not match the SUBSCRIBE's filters (MQTT-3.8.4-5).
    #[error("SUBACK {packet_id} has {got} return codes for {expected} filters (MQTT-3.8.4-5)")]
    SubAckCount {
        packet_id: PacketId,
        expected: usize,
        got: usize,
    },
    /// An UNSUBACK whose reason codes do not match the UNSUBSCRIBE's filters
    /// (MQTT-3.11.3-1).
    #[error("UNSUBACK {packet_id} has {got} reason codes for {expected} filters (MQTT-3.11.3-1)")]
    UnsubAckCount {
        packet_id: PacketId,
        expected: usize,
        got: usize,
    },
    /// An MQTT 5 PUBLISH with a Topic Alias the client did not allow or has not been told.
    #[error("PUBLISH with topic alias {alias}: {why} (MQTT-3.3.2-7, -8, -9)")]
    TopicAlias { alias: u16, why: &'static str },
    /// An acknowledgement of the wrong kind for the request, e.g. PUBACK for a QoS 2 PUBLISH.
    #[error("{ack:?} for packet {packet_id}, which is waiting for {expected:?}")]
    WrongAck {
        ack: PacketType,
        packet_id: PacketId,
        expected: PacketType,
    },
    /// More unacknowledged QoS 1/2 PUBLISHes from the server than the client's Receive
    /// Maximum allows; the client closes with DISCONNECT 0x93.
    #[error(
        "more than the client's Receive Maximum of {maximum} unacknowledged QoS 1/2 PUBLISHes \
         (MQTT-3.3.4-9)"
    )]
    ReceiveMaximumExceeded { maximum: u16 },
    /// An enhanced-authentication rule broken: AUTH without being asked for, with another
    /// method, or with a reason code out of place.
    #[error("{why}")]
    Auth { why: &'static str },
}

impl ProtocolError {
    /// The reason code of the client's DISCONNECT for this violation (MQTT 5.0 4.13): 0x95
    /// for a packet above the client's Maximum Packet Size, 0x93 for its Receive Maximum
    /// exceeded, 0x94 for a bad topic alias, 0x81 for malformed bytes, 0x82 for the rest.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ProtocolError::Decode(e) => e.reason_code(),
            ProtocolError::ReceiveMaximumExceeded { .. } => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            ProtocolError::TopicAlias { .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            _ => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// The return code in words, as the spec describes it (3.2.2.3 for the five of 3.1.1, 2.4
/// for the rest of MQTT 5's).
pub fn refusal_reason(code: ReasonCode) -> &'static str {
    match code {
        ReasonCode::SUCCESS => "accepted",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => "unacceptable protocol version",
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => "identifier rejected",
        other => other.description(),
    }
}

/// The CONNACK code as the server sent it: a 3.1.1 return code in decimal, an MQTT 5 reason
/// code in hex.
fn wire_code(code: ReasonCode, level: ProtocolLevel) -> String {
    if level.is_v5() {
        format!("{:#04x}", code.0)
    } else {
        code.to_v3_connack().to_string()
    }
}

/// ": reason string" when the server gave one.
fn detail(reason_string: &Option<String>) -> String {
    match reason_string {
        Some(s) => format!(": {s}"),
        None => String::new(),
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened() {
        assert_eq!(
            ClientError::Refused(ReasonCode::NOT_AUTHORIZED, ProtocolLevel::V311).to_string(),
            "connection refused: not authorized (CONNACK 5)"
        );
        assert_eq!(
            ClientError::Timeout {
                waiting_for: "CONNACK",
                after: Duration::from_secs(10)
            }
            .to_string(),
            "timed out after 10 s waiting for CONNACK"
        );
        assert_eq!(
            ClientError::Timeout {
                waiting_for: "PINGRESP",
                after: Duration::from_millis(1500)
            }
            .to_string(),
            "timed out after 1.5 s waiting for PINGRESP"
        );
        assert_eq!(
            ClientError::from(ProtocolError::Decode(DecodeError::ZeroPacketId)).to_string(),
            "protocol violation by the server: packet identifier 0 (MQTT-2.3.1-1)"
        );
        assert_eq!(
            ClientError::from(ProtocolError::WrongAck {
                ack: PacketType::PubAck,
                packet_id: 7,
                expected: PacketType::PubRec
            })
            .to_string(),
            "protocol violation by the server: PubAck for packet 7, which is waiting for PubRec"
        );
        assert_eq!(
            ClientError::ServerDisconnect {
                reason: ReasonCode::SESSION_TAKEN_OVER,
                reason_string: None
            }
            .to_string(),
            "server sent DISCONNECT 0x8e session taken over"
        );
        assert_eq!(
            ClientError::Rejected {
                ack: PacketType::PubAck,
                reason: ReasonCode::NOT_AUTHORIZED,
                reason_string: Some("no".into())
            }
            .to_string(),
            "PUBACK 0x87 not authorized: no"
        );
        assert_eq!(
            ClientError::Refused(ReasonCode::BANNED, ProtocolLevel::V5).to_string(),
            "connection refused: banned (CONNACK 0x8a)"
        );
    }
}
