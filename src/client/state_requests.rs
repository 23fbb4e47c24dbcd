//! SUBSCRIBE and UNSUBSCRIBE in the client state machine ([`ClientState`]): requests made
//! only while connected (they are not part of the session), each with a packet identifier of
//! its own until SUBACK / UNSUBACK answers it with one code per filter (MQTT-3.8.4-5,
//! MQTT-3.11.3-1); a connection lost first abandons them ([`Event::Abandoned`]).

use std::time::Instant;

use super::{ClientState, Event, Phase, Request};
use crate::client::error::{ClientError, ProtocolError};
use crate::protocol::{
    ByteStr, Packet, PacketId, PacketType, Properties, QoS, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

impl ClientState {
    /// Sends SUBSCRIBE. Only while connected: a request is not part of the session.
    pub fn subscribe(
        &mut self,
        filters: Vec<(ByteStr, QoS)>,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        let filters = filters.into_iter().map(|(f, q)| (f, q.into())).collect();
        self.subscribe_with(filters, None, now)
    }

    /// Sends SUBSCRIBE with MQTT 5 subscription options and properties (Subscription
    /// Identifier, User Property); 3.1/3.1.1 send the QoS alone.
    pub fn subscribe_with(
        &mut self,
        filters: Vec<(ByteStr, SubscriptionOptions)>,
        properties: Option<Box<Properties>>,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        let id = self.request_id()?;
        self.requests.insert(id, Request::Subscribe(filters.len()));
        self.emit(
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters,
                properties,
            }),
            now,
        );
        Ok(id)
    }

    /// Sends UNSUBSCRIBE. Only while connected.
    pub fn unsubscribe(
        &mut self,
        filters: Vec<ByteStr>,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        self.unsubscribe_with(filters, None, now)
    }

    /// Sends UNSUBSCRIBE with MQTT 5 properties (User Property).
    pub fn unsubscribe_with(
        &mut self,
        filters: Vec<ByteStr>,
        properties: Option<Box<Properties>>,
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        let id = self.request_id()?;
        self.requests
            .insert(id, Request::Unsubscribe(filters.len()));
        self.emit(
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                filters,
                properties,
            }),
            now,
        );
        Ok(id)
    }

    fn request_id(&mut self) -> Result<PacketId, ClientError> {
        if self.phase != Phase::Connected {
            return Err(ClientError::Disconnected);
        }
        self.ids.allocate().ok_or(ClientError::NoPacketId)
    }

    pub(super) fn on_suback(&mut self, ack: SubAck) -> Result<(), ClientError> {
        let id = ack.packet_id;
        match self.requests.get(&id) {
            Some(&Request::Subscribe(expected)) => {
                if ack.return_codes.len() != expected {
                    return Err(ProtocolError::SubAckCount {
                        packet_id: id,
                        expected,
                        got: ack.return_codes.len(),
                    }
                    .into());
                }
                self.requests.remove(&id);
                self.ids.release(id);
                self.events.push_back(Event::Subscribed {
                    packet_id: id,
                    return_codes: ack.return_codes,
                });
                Ok(())
            }
            Some(Request::Unsubscribe(_)) => Err(ProtocolError::WrongAck {
                ack: PacketType::SubAck,
                packet_id: id,
                expected: PacketType::UnsubAck,
            }
            .into()),
            None => Ok(()),
        }
    }

    pub(super) fn on_unsuback(&mut self, ack: UnsubAck) -> Result<(), ClientError> {
        let UnsubAck {
            packet_id: id,
            reasons,
            ..
        } = ack;
        match self.requests.get(&id) {
            Some(&Request::Unsubscribe(expected)) => {
                let reasons = if self.level().is_v5() {
                    if reasons.len() != expected {
                        return Err(ProtocolError::UnsubAckCount {
                            packet_id: id,
                            expected,
                            got: reasons.len(),
                        }
                        .into());
                    }
                    reasons
                } else {
                    vec![ReasonCode::SUCCESS; expected]
                };
                self.requests.remove(&id);
                self.ids.release(id);
                self.events.push_back(Event::Unsubscribed {
                    packet_id: id,
                    reasons,
                });
                Ok(())
            }
            Some(Request::Subscribe(_)) => Err(ProtocolError::WrongAck {
                ack: PacketType::UnsubAck,
                packet_id: id,
                expected: PacketType::SubAck,
            }
            .into()),
            None => Ok(()),
        }
    }
}
