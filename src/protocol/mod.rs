//! The MQTT 3.1 / 3.1.1 wire protocol: packet types, an incremental zero-copy decoder and an
//! encoder. This module owns the byte format and nothing else: it does no I/O, knows no sockets
//! or executors, and keeps no state between calls. Both the broker and the client use it.
//!
//! Decoding takes a `BytesMut` that holds what has been read so far and either returns
//! `Ok(None)` (need more bytes; nothing consumed), a complete packet (its bytes split off the
//! front of the buffer; topic and payload are `Bytes` slices of the same allocation, not copies),
//! or a [`DecodeError`] naming the rule the peer broke. Errors are final for the connection.
//! [`frame_len`] reads only the fixed header, for callers that size their reads.
//!
//! Encoding appends to a `BytesMut`, reserving each packet's exact size once
//! ([`Packet::encode`], sized beforehand by [`Packet::encoded_len`]). The broker's fan-out path
//! writes PUBLISH and acknowledgements from slices with [`encode_publish`], [`publish_len`] and
//! [`encode_ack`], without building a packet value per subscriber.
//!
//! Layout: `header` (fixed header, Remaining Length, field readers and writers), `strings`
//! (the rules for string contents), `connect` (CONNECT, CONNACK), `publish` (PUBLISH and the
//! two-byte acks), `subscribe` (SUBSCRIBE, SUBACK, UNSUBSCRIBE), `ping` (PINGREQ, PINGRESP,
//! DISCONNECT) and `codec` (the entry points).

mod bytestr;
mod codec;
mod connect;
mod error;
mod header;
mod ping;
mod publish;
mod strings;
mod subscribe;
#[cfg(test)]
mod testutil;

pub use bytestr::ByteStr;
pub use codec::{decode, frame_len};
pub use error::{DecodeError, EncodeError};
pub use publish::{encode_ack, encode_publish, publish_len, PublishHeader};

use bytes::Bytes;

/// The largest Remaining Length the 4-byte variable length encoding can express (spec 2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Protocol name and level announced in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolLevel {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V311,
}

impl ProtocolLevel {
    pub fn level(self) -> u8 {
        match self {
            ProtocolLevel::V31 => 3,
            ProtocolLevel::V311 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ProtocolLevel::V31 => "MQIsdp",
            ProtocolLevel::V311 => "MQTT",
        }
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3 and above (MQTT-3.3.1-4: QoS 3 is malformed).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier. Never 0 on the wire for packets that carry one (MQTT-2.3.1-1).
pub type PacketId = u16;

/// The Will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// A valid topic name: non-empty, no wildcards.
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub level: ProtocolLevel,
    pub clean_session: bool,
    pub keep_alive: u16,
    /// May be empty; what that means is the broker's decision (MQTT-3.1.3-6/-7/-8).
    pub client_id: ByteStr,
    pub will: Option<LastWill>,
    pub username: Option<ByteStr>,
    /// Binary data, not a string.
    pub password: Option<Bytes>,
}

/// CONNACK return codes (3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUsernameOrPassword = 4,
    NotAuthorized = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// Always false on MQTT 3.1 (the byte is reserved there) and with a non-zero code.
    pub session_present: bool,
    pub code: ConnectReturnCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// A valid topic name: non-empty, no `+` or `#` (MQTT-3.3.2-2, MQTT-4.7.3-1).
    pub topic: ByteStr,
    /// 0 for QoS 0 (no identifier on the wire); non-zero for QoS 1 and 2.
    pub packet_id: PacketId,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// At least one (MQTT-3.8.3-3). Each filter is a valid, non-empty topic filter
    /// (MQTT-4.7.3-1, MQTT-4.7.1-2/-3): the decoder refuses the packet otherwise.
    pub filters: Vec<(ByteStr, QoS)>,
}

/// One entry of a SUBACK payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    Success(QoS),
    /// 0x80.
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub return_codes: Vec<SubscribeReturnCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    /// At least one (MQTT-3.10.3-2), each a valid, non-empty topic filter as in SUBSCRIBE.
    pub filters: Vec<ByteStr>,
}

/// The 14 MQTT control packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: CONNECT is large and rare, PUBLISH is small and hot.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PacketId),
    PubRec(PacketId),
    PubRel(PacketId),
    PubComp(PacketId),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(PacketId),
    PingReq,
    PingResp,
    Disconnect,
}

/// Control packet types as numbered in the fixed header (2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}
