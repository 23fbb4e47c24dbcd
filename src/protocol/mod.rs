//! The MQTT wire protocol, versions 3.1, 3.1.1 and 5.0: packet types, an incremental zero-copy
//! decoder and an encoder. This module owns the byte format and nothing else: it does no I/O,
//! knows no sockets or executors, and keeps no state between calls. Both the broker and the
//! client use it.
//!
//! One codec serves all three versions. MQTT 5 packets are the 3.1.1 packets plus properties
//! and reason codes, so the packet types carry both (`None` / success where a version has
//! none) and [`decode`] and [`Packet::encode`] take the [`ProtocolLevel`] of the connection:
//! the only thing that changes with it is which fields are on the wire.
//!
//! Decoding takes a `BytesMut` that holds what has been read so far and either returns
//! `Ok(None)` (need more bytes; nothing consumed), a complete packet (its bytes split off the
//! front of the buffer; topic and payload are `Bytes` slices of the same allocation, not copies),
//! or a [`DecodeError`] naming the rule the peer broke. Errors are final for the connection;
//! [`DecodeError::reason_code`] says which reason an MQTT 5 DISCONNECT gives for them.
//! [`frame_len`] reads only the fixed header, for callers that size their reads.
//!
//! Encoding appends to a `BytesMut`, reserving each packet's exact size once
//! ([`Packet::encode`], sized beforehand by [`Packet::encoded_len`]). The broker's fan-out path
//! writes PUBLISH and acknowledgements from slices with [`encode_publish`], [`publish_len`] and
//! [`encode_ack`], without building a packet value per subscriber.
//!
//! Layout: `header` (fixed header, Remaining Length, field readers and writers), `strings`
//! (the rules for string contents), `properties` (the MQTT 5 property table), `reason` (reason
//! codes), `connect` (CONNECT, CONNACK), `publish` (PUBLISH and its acks), `subscribe`
//! (SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK), `ping` (PINGREQ, PINGRESP), `disconnect`
//! (DISCONNECT, AUTH) and `codec` (the entry points).

mod bytestr;
mod codec;
mod connect;
mod disconnect;
mod error;
mod header;
mod ping;
mod properties;
mod publish;
mod reason;
mod strings;
mod subscribe;
#[cfg(test)]
mod testutil;

pub use bytestr::ByteStr;
pub use codec::{decode, frame_len};
pub use connect::declared_level;
pub use error::{DecodeError, EncodeError};
pub use properties::{property_name, Properties, PropertyContext};
pub use publish::{encode_ack, encode_ack_reason, encode_publish, publish_len, PublishHeader};
pub use reason::ReasonCode;

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
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolLevel {
    pub fn level(self) -> u8 {
        match self {
            ProtocolLevel::V31 => 3,
            ProtocolLevel::V311 => 4,
            ProtocolLevel::V5 => 5,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ProtocolLevel::V31 => "MQIsdp",
            ProtocolLevel::V311 | ProtocolLevel::V5 => "MQTT",
        }
    }
    /// True for MQTT 5: packets carry properties and reason codes.
    #[inline]
    pub fn is_v5(self) -> bool {
        self == ProtocolLevel::V5
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
    /// MQTT 5 will properties (Will Delay Interval, Message Expiry, ...).
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub level: ProtocolLevel,
    /// The level byte's top bit (3.1/3.1.1 only): the client is another broker's bridge
    /// (Mosquitto's `try_private`). Such a client gets No Local and Retain As Published on
    /// every subscription, as MQTT 5 clients can ask for.
    pub bridge: bool,
    /// CleanSession in 3.1/3.1.1, Clean Start in MQTT 5 (the same bit, different meanings:
    /// MQTT 5 sessions end by their Session Expiry Interval instead).
    pub clean_session: bool,
    pub keep_alive: u16,
    /// May be empty; what that means is the broker's decision (MQTT-3.1.3-6/-7/-8).
    pub client_id: ByteStr,
    pub will: Option<LastWill>,
    pub username: Option<ByteStr>,
    /// Binary data, not a string.
    pub password: Option<Bytes>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Always false on MQTT 3.1 (the byte is reserved there) and with a refusal.
    pub session_present: bool,
    /// 3.1.1 return codes are written as the MQTT 5 reason they stand for: 1 is
    /// `UNSUPPORTED_PROTOCOL_VERSION`, 2 `CLIENT_IDENTIFIER_NOT_VALID`, 3 `SERVER_UNAVAILABLE`,
    /// 4 `BAD_USER_NAME_OR_PASSWORD`, 5 `NOT_AUTHORIZED`. Encoding for 3.1.1 maps every MQTT 5
    /// reason to the closest of those.
    pub code: ReasonCode,
    pub properties: Option<Box<Properties>>,
}

impl ConnAck {
    pub fn new(session_present: bool, code: ReasonCode) -> ConnAck {
        ConnAck {
            session_present,
            code,
            properties: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// A valid topic name: no `+` or `#` (MQTT-3.3.2-2, MQTT-4.7.3-1). Non-empty, except in an
    /// MQTT 5 PUBLISH that carries a Topic Alias.
    pub topic: ByteStr,
    /// 0 for QoS 0 (no identifier on the wire); non-zero for QoS 1 and 2.
    pub packet_id: PacketId,
    pub payload: Bytes,
    pub properties: Option<Box<Properties>>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the identifier acknowledged and, in MQTT 5, a reason
/// and properties (3.1.1 has neither: success, `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: Option<Box<Properties>>,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`, without properties.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: None,
        }
    }
}

/// MQTT 5 Retain Handling (3.8.3.1): when a new subscription is sent retained messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// At every SUBSCRIBE (the only behaviour of 3.1.1).
    #[default]
    SendAtSubscribe = 0,
    /// Only when the subscription did not exist.
    SendIfNew = 1,
    /// Never.
    DoNotSend = 2,
}

/// What a SUBSCRIBE asks for one filter: the maximum QoS and, in MQTT 5, the options byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// Do not send the subscriber its own messages.
    pub no_local: bool,
    /// Forward the RETAIN flag as published instead of clearing it.
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl From<QoS> for SubscriptionOptions {
    fn from(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// At least one (MQTT-3.8.3-3). Each filter is a valid, non-empty topic filter
    /// (MQTT-4.7.3-1, MQTT-4.7.1-2/-3): the decoder refuses the packet otherwise.
    pub filters: Vec<(ByteStr, SubscriptionOptions)>,
    pub properties: Option<Box<Properties>>,
}

/// One entry of a SUBACK payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    Success(QoS),
    /// 0x80 and above. 3.1.1 has only 0x80 (`UNSPECIFIED_ERROR`): every refusal is written
    /// as 0x80 there.
    Failure(ReasonCode),
}

impl SubscribeReturnCode {
    /// The refusal without a more precise reason (0x80, the only one in 3.1.1).
    pub const FAILURE: SubscribeReturnCode = SubscribeReturnCode::Failure(ReasonCode(0x80));
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub return_codes: Vec<SubscribeReturnCode>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    /// At least one (MQTT-3.10.3-2), each a valid, non-empty topic filter as in SUBSCRIBE.
    pub filters: Vec<ByteStr>,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    /// MQTT 5: one per filter of the UNSUBSCRIBE, in order. Empty in 3.1.1, which has none.
    pub reasons: Vec<ReasonCode>,
    pub properties: Option<Box<Properties>>,
}

impl UnsubAck {
    /// A 3.1.1-shaped UNSUBACK: the identifier only.
    pub fn new(packet_id: PacketId) -> UnsubAck {
        UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: None,
        }
    }
}

/// DISCONNECT. 3.1.1 has no fields: normal disconnection, no properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: Option<Box<Properties>>,
}

impl Disconnect {
    /// Normal disconnection, no properties: all a 3.1.1 DISCONNECT says.
    pub const NORMAL: Disconnect = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: None,
    };

    pub fn with_reason(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: None,
        }
    }
}

/// AUTH (MQTT 5 only): a step of enhanced authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `SUCCESS`, `CONTINUE_AUTHENTICATION` or `RE_AUTHENTICATE`.
    pub reason: ReasonCode,
    pub properties: Option<Box<Properties>>,
}

/// The 15 MQTT control packets (AUTH is MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: CONNECT is large and rare, PUBLISH is small and hot.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
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
    Auth = 15,
}

impl PacketType {
    /// The packet's name as the standard writes it (PUBACK, SUBACK, ...).
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }
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
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}
