//! The MQTT 5 share of the client state machine ([`ClientState`]), still without I/O:
//! - the server's CONNACK limits (Receive Maximum, Maximum Packet Size, Topic Alias Maximum,
//!   Server Keep Alive, Assigned Client Identifier);
//! - topic aliases both ways: the server's resolved on incoming PUBLISHes, and the client's
//!   own on outgoing ones ([`OutgoingAliases`]: up to the smaller of the client's wish and
//!   the server's Topic Alias Maximum, least recently used first to go);
//! - the client's Receive Maximum: more unacknowledged QoS 1/2 PUBLISHes from the server than
//!   it allows is a protocol error, answered with DISCONNECT 0x93 (MQTT-3.3.4-9);
//! - enhanced authentication (4.12): the server's AUTH 0x18 challenges answered through the
//!   [`EnhancedAuth`] responder, at CONNECT and in a re-authentication (AUTH 0x19 ... 0x00);
//! - the Message Expiry Interval of a message sent late (after a reconnect, or held back by
//!   the server's Receive Maximum): lowered by the time it waited, or the message dropped;
//! - DISCONNECT with the reason code of a protocol violation before the connection closes
//!   (4.13).

use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;

use super::{ClientState, Event, Outgoing, Phase};
use crate::client::auth::{AuthChallenge, EnhancedAuth};
use crate::client::error::{ClientError, ProtocolError};
use crate::protocol::{
    Auth, ByteStr, ConnAck, Disconnect, Packet, PacketId, Properties, Publish, ReasonCode,
};

/// What the server's MQTT 5 CONNACK said about this connection; the defaults are the spec's
/// for a CONNACK without properties (and what a 3.1.1 server implies).
#[derive(Debug, Clone, Default)]
pub(super) struct ServerLimits {
    /// Receive Maximum: QoS 1/2 publishes the server takes in flight (65535 when absent).
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub properties: Option<Box<Properties>>,
}

/// The MQTT 5 state of a client; inert for 3.1/3.1.1.
#[derive(Debug)]
pub(super) struct V5 {
    pub server: ServerLimits,
    /// Set by an MQTT 5 CONNACK's Assigned Client Identifier.
    pub assigned_client_id: Option<ByteStr>,
    /// Topic Alias Maximum this client announced (0: none).
    pub alias_maximum: u16,
    /// Topic aliases the server has set on this connection.
    pub aliases: AHashMap<u16, ByteStr>,
    /// Topic aliases this client has set on this connection.
    pub outgoing_aliases: OutgoingAliases,
    /// Receive Maximum this client announced (65535 when it announced none).
    pub receive_maximum: u16,
    /// PUBACKs and PUBCOMPs for the server's messages still in the outbox: until they are
    /// sent, those messages count against the client's Receive Maximum.
    pub unsent_acks: usize,
    pub auth: Option<AuthState>,
}

impl V5 {
    pub fn new(properties: Option<&Properties>) -> V5 {
        V5 {
            server: ServerLimits::default(),
            assigned_client_id: None,
            alias_maximum: properties.and_then(|p| p.topic_alias_maximum).unwrap_or(0),
            aliases: AHashMap::new(),
            outgoing_aliases: OutgoingAliases::default(),
            receive_maximum: properties
                .and_then(|p| p.receive_maximum)
                .unwrap_or(u16::MAX),
            unsent_acks: 0,
            auth: None,
        }
    }
}

/// Enhanced authentication configured for this client.
#[derive(Debug)]
pub(super) struct AuthState {
    pub auth: EnhancedAuth,
    /// AUTH 0x19 sent, the server's AUTH 0x00 not yet received.
    pub reauthenticating: bool,
}

/// The topic aliases the client uses towards the server on one connection: a topic gets an
/// alias when it is first published (sent with its topic and the alias), and later
/// publishes to it send the alias with an empty topic. When every alias is taken, the least
/// recently used topic gives its alias up to the new one.
#[derive(Debug, Default)]
pub(crate) struct OutgoingAliases {
    /// How many aliases the client wants to use (its option).
    wish: u16,
    /// How many it may use on this connection: the wish within the server's maximum.
    maximum: u16,
    /// Topic → (alias, last use).
    by_topic: AHashMap<ByteStr, (u16, u64)>,
    uses: u64,
}

impl OutgoingAliases {
    pub fn new(wish: u16) -> OutgoingAliases {
        OutgoingAliases {
            wish,
            ..OutgoingAliases::default()
        }
    }

    /// A new connection, whose server allows `server_maximum` aliases: none are set.
    pub fn reset(&mut self, server_maximum: u16) {
        self.maximum = self.wish.min(server_maximum);
        self.by_topic.clear();
        self.uses = 0;
    }

    /// The alias for `topic`, and whether the server already knows it; `None` when the client
    /// uses no aliases on this connection.
    pub fn alias(&mut self, topic: &ByteStr) -> Option<(u16, bool)> {
        if self.maximum == 0 {
            return None;
        }
        self.uses += 1;
        if let Some((alias, used)) = self.by_topic.get_mut(topic) {
            *used = self.uses;
            return Some((*alias, true));
        }
        let alias = if self.by_topic.len() < usize::from(self.maximum) {
            self.by_topic.len() as u16 + 1
        } else {
            let (victim, alias) = self
                .by_topic
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(t, (a, _))| (t.clone(), *a))?;
            self.by_topic.remove(&victim);
            alias
        };
        self.by_topic.insert(topic.clone(), (alias, self.uses));
        Some((alias, false))
    }
}

/// What is left of a Message Expiry Interval of `interval` seconds after `waited`, rounded
/// up to whole seconds; `None` once it has run out.
pub fn remaining_expiry(interval: u32, waited: Duration) -> Option<u32> {
    let left = Duration::from_secs(u64::from(interval)).checked_sub(waited)?;
    if left.is_zero() {
        return None;
    }
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Some(secs as u32)
}

impl ClientState {
    /// Enhanced authentication: the method and first data must be in the CONNECT this state
    /// announces (see [`ClientOptions::connect_packet`](crate::client::ClientOptions)); the
    /// responder answers the server's challenges.
    pub fn with_authentication(mut self, auth: EnhancedAuth) -> ClientState {
        self.v5.auth = Some(AuthState {
            auth,
            reauthenticating: false,
        });
        self
    }

    /// Up to `wish` topic aliases towards the server, where its CONNACK allows them.
    pub fn with_outgoing_aliases(mut self, wish: u16) -> ClientState {
        self.v5.outgoing_aliases = OutgoingAliases::new(wish);
        self
    }

    /// What an MQTT 5 CONNACK says about the connection.
    pub(super) fn apply_connack_properties(&mut self, properties: Option<Box<Properties>>) {
        if let Some(p) = &properties {
            self.v5.server.receive_maximum = p.receive_maximum;
            self.v5.server.maximum_packet_size = p.maximum_packet_size;
            self.v5.server.topic_alias_maximum = p.topic_alias_maximum;
            if let Some(id) = &p.assigned_client_identifier {
                // Resuming the session later needs the identifier it belongs to.
                self.v5.assigned_client_id = Some(id.clone());
                self.connect.client_id = id.clone();
            }
            if let Some(secs) = p.server_keep_alive {
                // 3.2.2.3.14: the client MUST use the server's value instead of its own.
                let keep_alive = Duration::from_secs(u64::from(secs));
                self.config.keep_alive = keep_alive;
                if !keep_alive.is_zero() {
                    self.config.ping_timeout = self.config.ping_timeout.min(keep_alive);
                }
            }
        }
        let server_aliases = self.v5.server.topic_alias_maximum.unwrap_or(0);
        self.v5.outgoing_aliases.reset(server_aliases);
        self.v5.server.properties = properties;
        // A session that outlives the connection is resumed, not started again, when the
        // connection is opened again.
        if !self.config.clean_session {
            self.connect.clean_session = false;
        }
    }

    /// The enhanced-authentication checks of a successful CONNACK: the same method
    /// (MQTT-4.12.0-5), and the responder's approval of the server's final data.
    pub(super) fn check_connack_auth(&mut self, ack: &ConnAck) -> Result<(), ClientError> {
        let props = ack.properties.as_deref();
        let method = props.and_then(|p| p.authentication_method.as_ref());
        let Some(state) = &self.v5.auth else {
            if method.is_some() {
                return Err(ProtocolError::Auth {
                    why: "CONNACK with an Authentication Method the client did not ask for \
                          (MQTT-4.12.0-6)",
                }
                .into());
            }
            return Ok(());
        };
        if method.is_some_and(|m| m.as_str() != state.auth.method) {
            return Err(ProtocolError::Auth {
                why: "CONNACK with another Authentication Method than CONNECT's (MQTT-4.12.0-5)",
            }
            .into());
        }
        let data = props.and_then(|p| p.authentication_data.as_deref());
        state
            .auth
            .accepted(data)
            .map_err(|reason| aborted(&state.auth, reason))
    }

    /// An AUTH from the server: a challenge to answer (0x18), or the end of a
    /// re-authentication (0x00).
    pub(super) fn on_auth(&mut self, a: Auth, now: Instant) -> Result<(), ClientError> {
        let connected = self.phase == Phase::Connected;
        let Some(state) = &mut self.v5.auth else {
            return Err(ProtocolError::Auth {
                why: "AUTH to a client that announced no Authentication Method (MQTT-4.12.0-6)",
            }
            .into());
        };
        if connected && !state.reauthenticating {
            return Err(ProtocolError::Auth {
                why: "AUTH while no re-authentication is in progress",
            }
            .into());
        }
        let props = a.properties.as_deref();
        let method = props.and_then(|p| p.authentication_method.as_ref());
        if method.map(ByteStr::as_str) != Some(state.auth.method.as_str()) {
            return Err(ProtocolError::Auth {
                why: "AUTH without the Authentication Method of CONNECT (MQTT-4.12.0-5)",
            }
            .into());
        }
        let data = props.and_then(|p| p.authentication_data.clone());
        match a.reason {
            ReasonCode::CONTINUE_AUTHENTICATION => {
                let challenge = AuthChallenge {
                    method: state.auth.method.clone(),
                    data,
                    reason_string: props
                        .and_then(|p| p.reason_string.as_ref())
                        .map(|s| s.to_string()),
                    reauthenticating: connected,
                };
                let answer = state
                    .auth
                    .respond(&challenge)
                    .map_err(|reason| aborted(&state.auth, reason))?;
                let packet = auth_packet(
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &state.auth.method,
                    Some(answer),
                );
                if !connected {
                    // Each step of the server has the CONNACK deadline again.
                    self.phase = Phase::Connecting(now);
                }
                self.emit(packet, now);
                Ok(())
            }
            ReasonCode::SUCCESS if connected => {
                state
                    .auth
                    .accepted(data.as_deref())
                    .map_err(|reason| aborted(&state.auth, reason))?;
                state.reauthenticating = false;
                self.events.push_back(Event::Reauthenticated(data));
                Ok(())
            }
            _ => Err(ProtocolError::Auth {
                why: "AUTH with a reason code a server may not send at this point (4.12)",
            }
            .into()),
        }
    }

    /// Starts a re-authentication (MQTT 5.0 4.12.1): AUTH 0x19 with the method and `data`.
    /// [`Event::Reauthenticated`] reports the server's AUTH 0x00; a refusal comes as the
    /// server's DISCONNECT.
    pub fn reauthenticate(&mut self, data: Option<Bytes>, now: Instant) -> Result<(), ClientError> {
        if self.phase != Phase::Connected {
            return Err(ClientError::Disconnected);
        }
        let Some(state) = &mut self.v5.auth else {
            return Err(ClientError::invalid(
                "reauthenticate",
                "the client connected without enhanced authentication (MQTT-4.12.0-7)",
            ));
        };
        if state.reauthenticating {
            return Err(ClientError::invalid(
                "reauthenticate",
                "a re-authentication is already in progress",
            ));
        }
        if data.as_ref().is_some_and(|d| d.len() > 65_535) {
            return Err(ClientError::invalid(
                "authentication data",
                "longer than 65535 bytes",
            ));
        }
        state.reauthenticating = true;
        let packet = auth_packet(ReasonCode::RE_AUTHENTICATE, &state.auth.method, data);
        self.emit(packet, now);
        Ok(())
    }

    /// Whether a re-authentication is in progress.
    pub fn is_reauthenticating(&self) -> bool {
        self.v5.auth.as_ref().is_some_and(|a| a.reauthenticating)
    }

    /// An MQTT 5 PUBLISH's topic alias: set (topic given) or used (topic empty).
    pub(super) fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), ClientError> {
        let Some(alias) = p.properties.as_ref().and_then(|pr| pr.topic_alias) else {
            return Ok(());
        };
        if alias == 0 || alias > self.v5.alias_maximum {
            let why = "above the Topic Alias Maximum the client announced";
            return Err(ProtocolError::TopicAlias { alias, why }.into());
        }
        if p.topic.is_empty() {
            match self.v5.aliases.get(&alias) {
                Some(topic) => p.topic = topic.clone(),
                None => {
                    let why = "not set on this connection";
                    return Err(ProtocolError::TopicAlias { alias, why }.into());
                }
            }
        } else {
            self.v5.aliases.insert(alias, p.topic.clone());
        }
        Ok(())
    }

    /// Whether one more QoS 1/2 PUBLISH from the server (`packet_id`, not a repeat of a QoS
    /// 2 one awaiting PUBREL) keeps within the client's Receive Maximum: counted are those
    /// whose PUBACK or PUBCOMP has not been sent (MQTT-3.3.4-9).
    pub(super) fn check_receive_maximum(&self, packet_id: PacketId) -> Result<(), ClientError> {
        if self.incoming_qos2.contains(&packet_id) {
            return Ok(());
        }
        let unacknowledged = self.incoming_qos2.len()
            + self.v5.unsent_acks
            + self.manual_acks.as_ref().map_or(0, |w| w.len());
        if unacknowledged >= usize::from(self.v5.receive_maximum) {
            return Err(ProtocolError::ReceiveMaximumExceeded {
                maximum: self.v5.receive_maximum,
            }
            .into());
        }
        Ok(())
    }

    /// Queues a PUBLISH, with a topic alias when the client uses them: the alias alone (empty
    /// topic) for a topic the server knows by its alias.
    pub(super) fn emit_publish(&mut self, mut p: Publish, now: Instant) {
        if self.level().is_v5() {
            if let Some((alias, known)) = self.v5.outgoing_aliases.alias(&p.topic) {
                p.properties.get_or_insert_with(Box::default).topic_alias = Some(alias);
                if known {
                    p.topic = ByteStr::from("");
                }
            }
        }
        self.emit(Packet::Publish(p), now);
    }

    /// The copy of a message in flight to send (again) now: its Message Expiry Interval
    /// lowered by the time since `publish` took it. `None`: it has expired, and is dropped
    /// ([`Event::Expired`]) instead of sent.
    pub(super) fn fresh_copy(&mut self, id: PacketId, now: Instant) -> Option<Publish> {
        let o = self.outgoing.get(&id)?;
        let mut p = o.publish.clone();
        let Some(interval) = p
            .properties
            .as_ref()
            .and_then(|pr| pr.message_expiry_interval)
        else {
            return Some(p);
        };
        match remaining_expiry(interval, now.saturating_duration_since(o.queued_at)) {
            Some(left) => {
                if let Some(pr) = &mut p.properties {
                    pr.message_expiry_interval = Some(left);
                }
                Some(p)
            }
            None => {
                let Outgoing { on_wire, .. } = self.outgoing.remove(&id)?;
                if on_wire {
                    self.on_wire -= 1;
                }
                self.ids.release(id);
                self.events.push_back(Event::Expired {
                    packet_id: id,
                    interval,
                });
                None
            }
        }
    }

    /// Accounting for what goes into and out of the outbox: acknowledgements of the server's
    /// messages count against the client's Receive Maximum until they are sent.
    pub(super) fn count_ack(&mut self, packet: &Packet, queued: bool) {
        if matches!(packet, Packet::PubAck(_) | Packet::PubComp(_)) {
            if queued {
                self.v5.unsent_acks += 1;
            } else {
                self.v5.unsent_acks -= 1;
            }
        }
    }

    /// The connection is failing with `error`: for MQTT 5, a DISCONNECT with the reason code
    /// of the violation goes out first (4.13) when the connection is up, or during an
    /// enhanced-authentication exchange. Returns whether it queued one; if it did, nothing
    /// the server sends is handled afterwards.
    pub fn fail(&mut self, error: &ClientError, now: Instant) -> bool {
        let may_send = match self.phase {
            Phase::Connected => true,
            Phase::Connecting(_) => self.v5.auth.is_some(),
            Phase::Idle | Phase::Disconnecting => false,
        };
        match error.disconnect_reason() {
            Some(reason) if may_send && self.level().is_v5() => {
                self.phase = Phase::Idle;
                self.emit(Packet::Disconnect(Disconnect::with_reason(reason)), now);
                true
            }
            _ => false,
        }
    }
}

fn aborted(auth: &EnhancedAuth, reason: String) -> ClientError {
    ClientError::AuthAborted {
        method: auth.method.clone(),
        reason,
    }
}

fn auth_packet(reason: ReasonCode, method: &str, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Some(Box::new(Properties {
            authentication_method: Some(ByteStr::from(method)),
            authentication_data: data,
            ..Properties::default()
        })),
    })
}

#[cfg(test)]
#[path = "state_v5_tests.rs"]
mod tests;
