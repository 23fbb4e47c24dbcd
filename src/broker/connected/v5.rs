//! What an MQTT 5 connection adds to a connected client: the CONNACK's announcements, the
//! topic aliases the client sets, the properties its PUBLISHes carry on to subscribers, its
//! DISCONNECT's session expiry, and the reason code of the DISCONNECT the broker sends before
//! it closes the connection. A 3.1.1 connection has none of this and pays one pointer for it.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::broker::config::BrokerConfig;
use crate::broker::connection::CloseReason;
use crate::broker::mesh::V5Message;
use crate::protocol::{ByteStr, Connect, Properties, Publish, ReasonCode};

/// The MQTT 5 state of one connection.
pub(super) struct V5Connection {
    /// Topic Alias → topic name, as the client set them (alias 1 at index 0). Grows to the
    /// highest alias used, at most `--max-topic-alias`.
    aliases: Vec<Option<ByteStr>>,
    max_alias: u16,
    /// The Session Expiry Interval of CONNECT: a DISCONNECT may not raise it from 0
    /// (MQTT-3.14.2-2).
    pub connect_session_expiry: u32,
    /// The broker's Receive Maximum: incoming QoS 1/2 PUBLISHes not yet acknowledged.
    pub receive_maximum: usize,
    /// The Authentication Method the client authenticated with, if enhanced authentication:
    /// a re-authentication must use the same (MQTT-4.12.1-1 of 5.0).
    pub auth_method: Option<ByteStr>,
    /// A re-authentication in progress.
    pub reauth: Option<Box<dyn crate::auth::AuthExchange>>,
    /// The client did not turn Request Problem Information off (3.1.2.11.7).
    problem_information: bool,
}

impl V5Connection {
    pub fn new(config: &BrokerConfig, connect: &Connect) -> V5Connection {
        V5Connection {
            aliases: Vec::new(),
            max_alias: config.max_topic_alias,
            connect_session_expiry: requested_session_expiry(connect),
            receive_maximum: usize::from(config.receive_maximum),
            auth_method: connect
                .properties
                .as_ref()
                .and_then(|p| p.authentication_method.as_ref())
                .map(|m| ByteStr::from(m.as_str())),
            reauth: None,
            problem_information: connect
                .properties
                .as_ref()
                .and_then(|p| p.request_problem_information)
                .unwrap_or(true),
        }
    }

    /// A Reason String for the broker's DISCONNECT when the client broke a rule: which one, as
    /// the broker's log says it. Only for a client that wants problem information, and only
    /// when it keeps the packet within the client's Maximum Packet Size (MQTT-3.14.2-3).
    pub fn problem_text(
        &self,
        reason: &CloseReason,
        max_packet_size: u32,
    ) -> Option<Box<Properties>> {
        let is_problem = matches!(
            reason,
            CloseReason::Malformed(_) | CloseReason::Violation(_) | CloseReason::Violation5(..)
        );
        if !self.problem_information || !is_problem {
            return None;
        }
        let text = reason.to_string();
        // Fixed header (up to 5), reason code, property length (up to 4), the string.
        let size = 5 + 1 + 4 + 3 + text.len();
        if size > max_packet_size as usize {
            return None;
        }
        Some(Box::new(Properties {
            reason_string: Some(ByteStr::from(text.as_str())),
            ..Properties::default()
        }))
    }

    /// Gives an aliased PUBLISH its topic, or records the alias a PUBLISH sets
    /// (MQTT 5.0 3.3.2.3.4).
    pub fn resolve_topic(&mut self, publish: &mut Publish) -> Result<(), CloseReason> {
        let Some(alias) = publish.properties.as_ref().and_then(|p| p.topic_alias) else {
            return Ok(());
        };
        if alias > self.max_alias {
            return Err(CloseReason::Violation5(
                ReasonCode::TOPIC_ALIAS_INVALID,
                "Topic Alias above the Topic Alias Maximum the broker announced (MQTT-3.3.2-9)",
            ));
        }
        let i = usize::from(alias) - 1;
        if publish.topic.is_empty() {
            match self.aliases.get(i).and_then(|t| t.as_ref()) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(CloseReason::Violation5(
                        ReasonCode::PROTOCOL_ERROR,
                        "PUBLISH with an empty topic and a Topic Alias never set (MQTT 5.0 3.3.4)",
                    ))
                }
            }
        } else {
            if self.aliases.len() <= i {
                self.aliases.resize(i + 1, None);
            }
            // Kept for the connection's life: its own bytes, not a slice of the read buffer.
            self.aliases[i] = Some(ByteStr::from(publish.topic.as_str()));
        }
        Ok(())
    }
}

/// The Session Expiry Interval a CONNECT asks for, in seconds (0 when absent).
pub(super) fn requested_session_expiry(connect: &Connect) -> u32 {
    connect
        .properties
        .as_ref()
        .and_then(|p| p.session_expiry_interval)
        .unwrap_or(0)
}

/// How long the session of an MQTT 5 client outlives its connection: what it asked for,
/// within `--session-expiry` when that is set; None is "never expires" (0xFFFFFFFF).
pub fn session_expiry(config: &BrokerConfig, seconds: u32) -> Option<Duration> {
    let asked = (seconds != u32::MAX).then(|| Duration::from_secs(u64::from(seconds)));
    match (asked, config.session_expiry) {
        (Some(a), Some(max)) => Some(a.min(max)),
        (None, max) => max,
        (a, None) => a,
    }
}

/// The CONNACK properties: what the broker supports and its limits (MQTT 5.0 3.2.2.3).
pub(super) fn connack_properties(
    config: &BrokerConfig,
    connect: &Connect,
    assigned_client_id: Option<&ByteStr>,
) -> Box<Properties> {
    let asked = requested_session_expiry(connect);
    let granted = session_expiry(config, asked);
    let granted_secs = granted.map_or(u32::MAX, |d| d.as_secs().min(u64::from(u32::MAX)) as u32);
    Box::new(Properties {
        // Said only when the broker changed what the client asked for.
        session_expiry_interval: (asked != 0 && granted_secs != asked).then_some(granted_secs),
        assigned_client_identifier: assigned_client_id.cloned(),
        // Enhanced authentication: the method, and the authenticator's last word.
        authentication_method: connect
            .properties
            .as_ref()
            .and_then(|p| p.authentication_method.clone()),
        authentication_data: connect
            .properties
            .as_ref()
            .and_then(|p| p.authentication_data.clone()),
        receive_maximum: Some(config.receive_maximum),
        topic_alias_maximum: Some(config.max_topic_alias),
        maximum_packet_size: u32::try_from(config.max_packet_size).ok(),
        // Retain, QoS 2 and wildcards are available: left out, as the defaults say so.
        subscription_identifier_available: Some(true),
        // Said although 1 is the default: clients and people reading a capture see it.
        shared_subscription_available: Some(true),
        server_keep_alive: server_keep_alive(config, connect.keep_alive),
        response_information: response_information(config, connect),
        ..Properties::default()
    })
}

/// The keepalive the broker makes an MQTT 5 client use instead of its own (Server Keep Alive,
/// MQTT-3.2.2-21), when `--max-keepalive` is below what it asked for or it asked for none.
pub(super) fn server_keep_alive(config: &BrokerConfig, asked: u16) -> Option<u16> {
    let max = config.max_keepalive;
    (max > 0 && (asked == 0 || asked > max)).then_some(max)
}

/// Response Information for a client that asked for it (3.1.2.11.7), when the broker has one.
fn response_information(config: &BrokerConfig, connect: &Connect) -> Option<ByteStr> {
    let asked = connect
        .properties
        .as_ref()
        .and_then(|p| p.request_response_information)
        .unwrap_or(false);
    let text = config.response_information.as_deref().filter(|_| asked)?;
    Some(ByteStr::from(
        text.replace("%c", connect.client_id.as_str()).as_str(),
    ))
}

/// The MQTT 5 part of a message published with `props`: the properties its subscribers are
/// sent, encoded once, and when it expires. None when there is nothing to forward.
pub(super) fn message_part(props: Option<&Properties>, now: Instant) -> Option<Box<V5Message>> {
    let p = props?;
    let forwarded = Properties {
        payload_format_utf8: p.payload_format_utf8,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    };
    let expires_at = p
        .message_expiry_interval
        .map(|secs| now + Duration::from_secs(u64::from(secs)));
    if forwarded == Properties::default() && expires_at.is_none() {
        return None;
    }
    let mut encoded = BytesMut::with_capacity(forwarded.body_len());
    forwarded.encode_body(&mut encoded);
    Some(Box::new(V5Message {
        // Its own allocation, not a slice of the read buffer: a queued or retained message
        // must not pin it.
        properties: encoded.freeze(),
        expires_at,
    }))
}

/// The reason an MQTT 5 client is given in the broker's DISCONNECT before the connection
/// closes, or None when the broker sends none (the client left, or the socket failed).
pub(super) fn disconnect_reason(reason: &CloseReason) -> Option<ReasonCode> {
    match reason {
        CloseReason::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
        CloseReason::KeepaliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
        CloseReason::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
        CloseReason::Malformed(e) => Some(e.reason_code()),
        CloseReason::Violation(_) => Some(ReasonCode::PROTOCOL_ERROR),
        CloseReason::Violation5(code, _) => Some(*code),
        CloseReason::Disconnect
        | CloseReason::DisconnectWithWill(_)
        | CloseReason::Eof
        | CloseReason::Io(_)
        | CloseReason::ConnectTimeout
        | CloseReason::Refused(_) => None,
    }
}
