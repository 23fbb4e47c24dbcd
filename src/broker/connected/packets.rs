//! What each packet from a connected client does: publishes are authorised, routed and
//! acknowledged (with an MQTT 5 reason code where one says more than success),
//! acknowledgements are checked against what is in flight (one of the wrong kind closes the
//! connection), subscriptions go to the shard.

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::v5::{message_part, session_expiry};
use super::{CloseReason, ConnectedClient};
use crate::broker::durability::Ticket;
use crate::broker::mesh::Message;
use crate::broker::metrics::add;
use crate::broker::qos2_gate::Qos2Gate;
use crate::broker::session::Ack;
use crate::protocol::{
    self, encode_ack_reason, Packet, PacketId, PacketType, Publish, QoS, ReasonCode,
};
use crate::store::Record;

impl ConnectedClient {
    /// Closes the connection for an acknowledgement of the wrong kind; ignores one for an id
    /// not in flight (a late duplicate).
    fn acknowledged(&self, ack: Ack, what: &str, packet_id: u16) -> Result<(), CloseReason> {
        match ack {
            Ack::Done => Ok(()),
            Ack::NotInFlight => {
                debug!(client = %self.session.borrow().client_id, packet_id, "{what} for a packet id not in flight: ignored");
                Ok(())
            }
            Ack::WrongKind => Err(CloseReason::Violation(match what {
                "PUBACK" => "PUBACK for a packet id in flight that is not a QoS 1 delivery waiting for it (MQTT-4.3.2, MQTT-4.3.3)",
                "PUBREC" => "PUBREC for a packet id in flight that is not a QoS 2 delivery waiting for it (MQTT-4.3.2, MQTT-4.3.3)",
                _ => "PUBCOMP for a packet id in flight whose PUBREL was not sent (MQTT-4.3.2, MQTT-4.3.3)",
            })),
        }
    }

    /// Sends an acknowledgement once `ticket` is durable, after those already waiting. The
    /// reason code goes to MQTT 5 clients only (3.1.1 acks have none).
    fn ack_when_durable(
        &mut self,
        kind: PacketType,
        id: PacketId,
        reason: ReasonCode,
        ticket: Ticket,
    ) {
        self.ack_when_accepted(kind, id, reason, ticket, None)
    }

    /// [`Self::ack_when_durable`], and for a PUBREC behind a gate, once it is open.
    fn ack_when_accepted(
        &mut self,
        kind: PacketType,
        id: PacketId,
        reason: ReasonCode,
        ticket: Ticket,
        gate: Option<Arc<Qos2Gate>>,
    ) {
        let reason = if self.v5.is_some() {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        let waiting = self.acks.as_ref().is_some_and(|a| !a.is_empty());
        if !waiting && self.shard.ticket_ready(&ticket) && gate.as_ref().is_none_or(|g| g.is_open())
        {
            encode_ack_reason(self.wire.wbuf.encoded(), kind, id, reason);
            add(&self.shard.metrics.packets_out, 1);
        } else {
            self.acks
                .get_or_insert_with(Box::default)
                .push((kind, id, reason, ticket, gate));
        }
    }

    /// Journals `record` for a persistent session (with `--data-dir`); returns its position.
    fn journal(&self, record: impl Fn(u64) -> Record) -> u64 {
        self.shard.journal_session(&self.session.borrow(), record)
    }

    pub(super) fn handle(&mut self, packet: Packet) -> Result<(), CloseReason> {
        // PUBACK/PUBREC/PUBREL/PUBCOMP are counted as they leave (they may wait for the disk).
        let answers = matches!(packet, Packet::PingReq);
        if answers {
            add(&self.shard.metrics.packets_out, 1);
        }
        match packet {
            Packet::Publish(publish) => self.publish(publish)?,
            Packet::PubAck(protocol::Ack { packet_id: id, .. }) => {
                let ack = self.session.borrow_mut().on_puback(id);
                self.acknowledged(ack, "PUBACK", id)?;
                if ack == Ack::Done {
                    self.journal(|session| Record::Completed {
                        session,
                        packet_id: id,
                    });
                }
            }
            Packet::PubRec(rec) if !rec.reason.is_success() => {
                // MQTT 5: a PUBREC refusal ends the exchange; no PUBREL (MQTT 5.0 4.3.3).
                let id = rec.packet_id;
                let ack = self.session.borrow_mut().on_pubrec(id);
                self.acknowledged(ack, "PUBREC", id)?;
                if ack == Ack::Done {
                    self.session.borrow_mut().on_pubcomp(id);
                    self.journal(|session| Record::Received {
                        session,
                        packet_id: id,
                    });
                    self.journal(|session| Record::Completed {
                        session,
                        packet_id: id,
                    });
                }
            }
            Packet::PubRec(protocol::Ack { packet_id: id, .. }) => {
                let ack = self.session.borrow_mut().on_pubrec(id);
                self.acknowledged(ack, "PUBREC", id)?;
                // The PUBREL waits until the delivery is on disk: a restart must not send the
                // PUBLISH again to a client that may have completed it.
                let mut ticket = Ticket::default();
                if ack == Ack::Done {
                    let copies_before = self.shard.copies_made();
                    ticket.local = self.journal(|session| Record::Received {
                        session,
                        packet_id: id,
                    });
                    // In a cluster, its copy too (`shard::session_copies`).
                    ticket.copied = self.shard.copied_since(copies_before);
                }
                self.ack_when_durable(PacketType::PubRel, id, ReasonCode::SUCCESS, ticket);
            }
            Packet::PubRel(protocol::Ack { packet_id: id, .. }) => {
                let mut released = 0;
                let copies_before = self.shard.copies_made();
                if self.session.borrow_mut().on_pubrel(id) {
                    released = self.journal(|session| Record::Released {
                        session,
                        packet_id: id,
                    });
                }
                // After PUBCOMP the id is new again (MQTT-4.3.3): not before a restart knows
                // (nor the session's copy in a cluster).
                let ticket = Ticket {
                    local: released,
                    copied: self.shard.copied_since(copies_before),
                    ..Ticket::default()
                };
                self.ack_when_durable(PacketType::PubComp, id, ReasonCode::SUCCESS, ticket);
            }
            Packet::PubComp(protocol::Ack { packet_id: id, .. }) => {
                let ack = self.session.borrow_mut().on_pubcomp(id);
                self.acknowledged(ack, "PUBCOMP", id)?;
                if ack == Ack::Done {
                    self.journal(|session| Record::Completed {
                        session,
                        packet_id: id,
                    });
                }
            }
            Packet::Subscribe(mut request) => {
                if self.bridge {
                    // Mosquitto's bridge convention: what a bridge published is not sent back
                    // to it, and retained messages stay retained on the other broker.
                    for (filter, options) in request.filters.iter_mut() {
                        if !crate::topic::is_shared(filter) {
                            options.no_local = true;
                            options.retain_as_published = true;
                        }
                    }
                }
                let no_local_shared = request
                    .filters
                    .iter()
                    .any(|(f, o)| o.no_local && crate::topic::is_shared(f));
                if no_local_shared {
                    return Err(CloseReason::Violation(
                        "No Local on a shared subscription (MQTT-3.8.3-4)",
                    ));
                }
                let username = self.session.borrow().username.clone();
                self.shard
                    .subscribe(&self.session, request, username.as_deref())
            }
            Packet::Unsubscribe(request) => self.shard.unsubscribe(&self.session, request),
            Packet::PingReq => {
                let _ = Packet::PingResp.encode(self.wire.wbuf.encoded(), self.level);
            }
            Packet::Disconnect(d) => {
                if let Some(v5) = &self.v5 {
                    let expiry = d
                        .properties
                        .as_ref()
                        .and_then(|p| p.session_expiry_interval);
                    if let Some(expiry) = expiry {
                        if v5.connect_session_expiry == 0 && expiry != 0 {
                            return Err(CloseReason::Violation(
                                "DISCONNECT sets a Session Expiry Interval where CONNECT's was 0 (MQTT-3.14.2-2)",
                            ));
                        }
                        {
                            let mut s = self.session.borrow_mut();
                            s.set_expiry(session_expiry(&self.shard.config, expiry));
                            s.clean = expiry == 0;
                        }
                        if expiry != 0 {
                            self.shard.journal_expiry(&self.session.borrow());
                        }
                    }
                    if d.reason != ReasonCode::NORMAL_DISCONNECTION {
                        // Every reason but 0x00 keeps the will (MQTT-3.14.4-3).
                        return Err(CloseReason::DisconnectWithWill(d.reason));
                    }
                }
                return Err(CloseReason::Disconnect);
            }
            Packet::Auth(a) => self.reauthenticate(a)?,
            Packet::Connect(_) => {
                return Err(CloseReason::Violation("second CONNECT (MQTT-3.1.0-2)"))
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(CloseReason::Violation(
                    "client sent a packet only a server may send",
                ));
            }
        }
        Ok(())
    }

    /// MQTT 5 re-authentication (MQTT 5.0 4.12.1): AUTH 0x19 starts an exchange with the
    /// method the client connected with, AUTH 0x18 answers the broker's challenge; the broker
    /// ends it with AUTH 0x00, or DISCONNECT 0x87 when the authenticator says no.
    fn reauthenticate(&mut self, a: protocol::Auth) -> Result<(), CloseReason> {
        let Some(v5) = &mut self.v5 else {
            return Err(CloseReason::Violation("AUTH on an MQTT 3.1.1 connection"));
        };
        let Some(method) = v5.auth_method.clone() else {
            return Err(CloseReason::Violation(
                "AUTH without an Authentication Method in CONNECT (MQTT-4.12.0-7)",
            ));
        };
        let props = a.properties.as_deref();
        if props.and_then(|p| p.authentication_method.as_ref()) != Some(&method) {
            return Err(CloseReason::Violation(
                "AUTH with another Authentication Method than CONNECT's (MQTT-4.12.1-1)",
            ));
        }
        let data = props.and_then(|p| p.authentication_data.as_deref());
        let step = match (a.reason, v5.reauth.as_mut()) {
            (ReasonCode::RE_AUTHENTICATE, None) => {
                let session = self.session.borrow();
                let credentials = crate::auth::Credentials {
                    username: session.username.as_deref(),
                    password: None,
                    client_id: &session.client_id,
                    peer: self.wire.peer,
                    certified: false,
                };
                let exchange = self
                    .shard
                    .config
                    .authenticator
                    .start_exchange(&method, &credentials);
                drop(session);
                let Some(exchange) = exchange else {
                    return Err(CloseReason::Violation5(
                        ReasonCode::BAD_AUTHENTICATION_METHOD,
                        "re-authentication with a method the authenticator no longer offers",
                    ));
                };
                v5.reauth.insert(exchange).step(data)
            }
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(exchange)) => exchange.step(data),
            _ => {
                return Err(CloseReason::Violation(
                    "AUTH out of turn: 0x19 starts a re-authentication, 0x18 continues one (MQTT 5.0 4.12)",
                ))
            }
        };
        let (reason, data) = match step {
            crate::auth::AuthStep::Continue(challenge) => {
                (ReasonCode::CONTINUE_AUTHENTICATION, Some(challenge))
            }
            crate::auth::AuthStep::Success(data) => {
                v5.reauth = None;
                (ReasonCode::SUCCESS, data)
            }
            crate::auth::AuthStep::Fail => {
                return Err(CloseReason::Violation5(
                    ReasonCode::NOT_AUTHORIZED,
                    "re-authentication refused by the authenticator",
                ))
            }
        };
        let reply = Packet::Auth(protocol::Auth {
            reason,
            properties: Some(Box::new(protocol::Properties {
                authentication_method: Some(method),
                authentication_data: data.map(bytes::Bytes::from),
                ..Default::default()
            })),
        });
        let _ = reply.encode(self.wire.wbuf.encoded(), self.level);
        add(&self.shard.metrics.packets_out, 1);
        Ok(())
    }

    fn publish(&mut self, mut publish: Publish) -> Result<(), CloseReason> {
        let mut v5_part = None;
        if let Some(v5) = &mut self.v5 {
            v5.resolve_topic(&mut publish)?;
            let receive_maximum = v5.receive_maximum;
            let props = publish.properties.as_deref();
            if props.is_some_and(|p| !p.subscription_identifiers.is_empty()) {
                return Err(CloseReason::Violation(
                    "PUBLISH from a client with a Subscription Identifier (MQTT-3.3.4-6)",
                ));
            }
            if publish.qos != QoS::AtMostOnce {
                let (unacknowledged, known) = self.unacknowledged_in(publish.packet_id);
                if unacknowledged >= receive_maximum && !known {
                    return Err(CloseReason::Violation5(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum (MQTT-3.3.4-9)",
                    ));
                }
            }
            if props.is_some_and(|p| p.payload_format_utf8 == Some(true))
                && std::str::from_utf8(&publish.payload).is_err()
            {
                // MQTT 5.0 3.3.2.3.2: refused with 0x99, not forwarded.
                let code = ReasonCode::PAYLOAD_FORMAT_INVALID;
                let rule = "Payload Format Indicator 1 with a payload that is not UTF-8";
                let kind = match publish.qos {
                    QoS::AtMostOnce => return Err(CloseReason::Violation5(code, rule)),
                    QoS::AtLeastOnce => PacketType::PubAck,
                    QoS::ExactlyOnce => PacketType::PubRec,
                };
                self.ack_when_durable(kind, publish.packet_id, code, Ticket::default());
                return Ok(());
            }
            v5_part = message_part(props, Instant::now());
        }
        if crate::broker::connection::too_many_levels(
            &publish.topic,
            self.shard.config.max_topic_levels,
        ) {
            return Err(CloseReason::Violation(
                "topic name has more levels than --max-topic-levels",
            ));
        }
        let Publish {
            qos,
            retain,
            topic,
            packet_id,
            payload,
            ..
        } = publish;
        let auth = &self.shard.config.authenticator;
        let allowed = !auth.checks_topics() || {
            let session = self.session.borrow();
            auth.can_publish(session.username.as_deref(), &session.client_id, &topic)
        };
        if !allowed {
            // Acknowledged as the protocol requires, but not forwarded.
            debug!(client = %self.session.borrow().client_id, topic = %topic, "publish denied by the ACL");
            let c = &self.shard.metrics.publishes_denied;
            c.set(c.get() + 1);
        }
        let before = self.shard.journal_end();
        let copies_before = self.shard.copies_made();
        // A persistent session's new QoS 2 message waits behind this gate until accepted
        // (with `--data-dir`, see `qos2_gate`); a repeat's PUBREC waits for the first's gate
        // and for what else the first's PUBREC waited for (`first`).
        let mut gate = None;
        let mut first = None;
        let forward = match qos {
            QoS::AtMostOnce | QoS::AtLeastOnce => allowed,
            // MQTT-4.3.3: a repeated PUBLISH before PUBREL is acknowledged, not forwarded again.
            QoS::ExactlyOnce => {
                let mut session = self.session.borrow_mut();
                let new = session.on_incoming_qos2(packet_id);
                if !new {
                    let (first_gate, first_ticket) = session.incoming_repeat(packet_id);
                    gate = first_gate;
                    first = Some(first_ticket);
                } else if allowed {
                    gate = self.shard.register_qos2(&session, packet_id);
                    if let Some(gate) = &gate {
                        session.set_incoming_gate(packet_id, gate.clone());
                    }
                    // In a cluster, the session's copy has the id before the PUBREC goes (a
                    // repeat on another node is then not forwarded again).
                    self.shard
                        .copy_change(&session, |session| Record::IncomingQos2 {
                            session,
                            packet_id,
                            reg: 0,
                        });
                } else {
                    // Not forwarded: nothing to settle after a crash.
                    drop(session);
                    self.journal(|session| Record::IncomingQos2 {
                        session,
                        packet_id,
                        reg: 0,
                    });
                }
                new && allowed
            }
        };
        let mut ticket = Ticket::default();
        let mut cluster = 0;
        let mut reason = if allowed {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NOT_AUTHORIZED
        };
        if forward {
            let mut message = Message::new(topic, payload, qos, retain).with_v5(v5_part);
            if let Some(gate) = &gate {
                message = message.with_gate(gate.clone());
            }
            let publisher = self.session.borrow().id;
            let routed = self
                .shard
                .route_published(Arc::new(message), Some(publisher));
            if let Some(subscriber) = routed.pressured {
                self.wait_for(subscriber);
            }
            ticket = routed.ticket;
            cluster = routed.cluster;
            if routed.matched == 0 {
                reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
            } else if routed.quota_exceeded {
                // A subscriber's queue was full: the promise could not be kept for it.
                reason = ReasonCode::QUOTA_EXCEEDED;
            }
        }
        // Everything this publish wrote here, the incoming QoS 2 id included (and copied).
        ticket.local = self.shard.appended_since(before);
        ticket.copied = ticket.copied.max(self.shard.copied_since(copies_before));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                // With a cluster, also once the other nodes that want it have it (see
                // `crate::cluster::marks`): a node that dies after this PUBACK loses nothing.
                ticket.cluster = cluster;
                self.ack_when_durable(PacketType::PubAck, packet_id, reason, ticket)
            }
            QoS::ExactlyOnce => {
                if let (true, Some(gate)) = (forward, &gate) {
                    // Its gate opens once all of `ticket` and its acceptance are durable.
                    let publisher = self.session.borrow();
                    ticket = self
                        .shard
                        .file_qos2(ticket, &publisher, packet_id, gate.clone());
                }
                // Not part of the gate's ticket: the message leaves for the other nodes only
                // once its gate is open, so the gate cannot wait for their acknowledgement.
                ticket.cluster = cluster;
                match &first {
                    Some(first) => ticket.join(first),
                    // Kept for a repeat that may come on a later connection, before this
                    // PUBREC went out.
                    None if forward && !self.shard.ticket_ready(&ticket) => self
                        .session
                        .borrow_mut()
                        .set_incoming_ticket(packet_id, ticket.clone()),
                    None => {}
                }
                self.ack_when_accepted(PacketType::PubRec, packet_id, reason, ticket, gate)
            }
        }
        Ok(())
    }
}
