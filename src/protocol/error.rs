//! Codec errors. Each decode error names the rule the peer broke, with the normative statement
//! id (3.1.1, or MQTT 5.0 where the rule is MQTT 5's) or the section where the standard has
//! none, so a log line says exactly why a connection closed; [`DecodeError::reason_code`] gives
//! the reason an MQTT 5 DISCONNECT names for it.

use super::{PacketType, PropertyContext, ReasonCode};

/// Why a byte stream is not a valid MQTT packet. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("remaining length uses more than 4 bytes (2.2.3)")]
    MalformedRemainingLength,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("reserved packet type {0} (2.2.1)")]
    ReservedPacketType(u8),
    #[error("invalid fixed header flags {flags:#06b} for {packet_type:?} (MQTT-2.2.2-2)")]
    InvalidFlags { packet_type: PacketType, flags: u8 },
    #[error("PUBLISH with QoS 3 (MQTT-3.3.1-4)")]
    InvalidQoS,
    #[error("PUBLISH with DUP set at QoS 0 (MQTT-3.3.1-2)")]
    DupAtQoS0,
    #[error("packet identifier 0 (MQTT-2.3.1-1)")]
    ZeroPacketId,
    #[error("protocol name {0:?} is neither \"MQTT\" nor \"MQIsdp\" (MQTT-3.1.2-1)")]
    InvalidProtocolName(String),
    #[error("unsupported protocol level {0} (MQTT-3.1.2-2)")]
    UnsupportedProtocolLevel(u8),
    #[error("CONNECT reserved flag is set (MQTT-3.1.2-3)")]
    ConnectReservedFlag,
    #[error("will QoS or will retain set without the will flag (MQTT-3.1.2-11, MQTT-3.1.2-13, MQTT-3.1.2-15)")]
    WillFlagsWithoutWill,
    #[error("will QoS 3 (MQTT-3.1.2-14)")]
    InvalidWillQoS,
    #[error("password flag set without the user name flag (MQTT-3.1.2-22)")]
    PasswordWithoutUsername,
    #[error("string is not well-formed UTF-8 (MQTT-1.5.3-1)")]
    InvalidUtf8,
    #[error("string contains U+0000 (MQTT-1.5.3-2)")]
    NullCharacter,
    /// U+0001..U+001F or U+007F..U+009F: the spec lets a receiver close on these, and we do,
    /// as Mosquitto does, so no control character reaches a log, a topic tree or a subscriber.
    #[error("string contains the control character U+{0:04X} (MQTT-1.5.3-2)")]
    ControlCharacter(u32),
    #[error("empty topic name (MQTT-4.7.3-1)")]
    EmptyTopic,
    #[error("wildcard in a topic name (MQTT-3.3.2-2)")]
    WildcardInTopicName,
    #[error("empty topic filter (MQTT-4.7.3-1)")]
    EmptyTopicFilter,
    /// A wildcard that is not alone in its level, or a `#` that is not the last level. The
    /// standard has the sender break a MUST here, and a protocol violation closes the
    /// connection (4.8) rather than earning a SUBACK 0x80 (which is left for refusals by the
    /// broker: ACL, level limit).
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(crate::topic::TopicError),
    #[error("SUBSCRIBE without a topic filter (MQTT-3.8.3-3)")]
    EmptySubscribe,
    #[error("UNSUBSCRIBE without a topic filter (MQTT-3.10.3-2)")]
    EmptyUnsubscribe,
    #[error("invalid requested QoS byte {0:#04x} in SUBSCRIBE (MQTT-3.8.3-4)")]
    InvalidSubscribeOptions(u8),
    #[error("invalid CONNACK acknowledge flags {0:#04x} (MQTT-3.2.2-1)")]
    InvalidConnAckFlags(u8),
    #[error("invalid CONNACK return code {0}")]
    InvalidConnectReturnCode(u8),
    #[error("invalid SUBACK return code {0:#04x} (MQTT-3.9.3-2)")]
    InvalidSubAckReturnCode(u8),
    #[error("{packet_type:?} with reason code {code:#04x}, which it may not carry (MQTT 5.0 2.4)")]
    InvalidReasonCode { packet_type: PacketType, code: u8 },
    #[error("variable byte integer in {0:?} uses more than 4 bytes (MQTT 5.0 1.5.5)")]
    MalformedVarInt(PacketType),
    #[error("unknown property identifier {0:#04x} (MQTT 5.0 2.2.2.2)")]
    UnknownProperty(u32),
    #[error("{} ({id:#04x}) is not allowed in {context:?} (MQTT 5.0 2.2.2.2)", super::property_name(*.id))]
    PropertyNotAllowed { id: u8, context: PropertyContext },
    #[error("{} ({:#04x}) included more than once (MQTT 5.0 2.2.2.2)", super::property_name(*.0), .0)]
    DuplicateProperty(u8),
    #[error("{} ({id:#04x}) has the invalid value {value} (MQTT 5.0 3)", super::property_name(*.id))]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error("Topic Alias 0 (MQTT-3.3.2-8)")]
    TopicAliasZero,
    #[error(
        "PUBLISH with an empty topic name and no Topic Alias (MQTT-3.3.2-1, MQTT 5.0 3.3.2.3.4)"
    )]
    EmptyTopicWithoutAlias,
    #[error("reserved bits set in subscription options {0:#04x} (MQTT-3.8.3-5)")]
    ReservedSubscriptionOptions(u8),
    #[error("Retain Handling 3 in subscription options (MQTT 5.0 3.8.3.1)")]
    InvalidRetainHandling,
    /// The fields of the variable header and payload need more bytes than the Remaining Length
    /// announced, or leave bytes over where the packet has no room for them.
    #[error("{packet_type:?} body does not match its remaining length: {detail}")]
    MalformedPacket {
        packet_type: PacketType,
        detail: &'static str,
    },
}

impl DecodeError {
    /// The reason code an MQTT 5 receiver sends in its DISCONNECT for this error (MQTT 5.0
    /// 4.13): 0x95 for a packet over the maximum size, 0x94 for Topic Alias 0, 0x82 for a rule
    /// about what a well-formed packet may say (a repeated property, a forbidden value), 0x81
    /// for everything about the bytes themselves.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue { .. }
            | DecodeError::EmptyTopicWithoutAlias
            | DecodeError::InvalidRetainHandling
            | DecodeError::ZeroPacketId
            | DecodeError::UnsupportedProtocolLevel(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::WildcardInTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::EmptyTopicFilter | DecodeError::InvalidTopicFilter(_) => {
                ReasonCode::TOPIC_FILTER_INVALID
            }
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded. Only possible for values that the wire format cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet body of {0} bytes exceeds the maximum remaining length (2.2.3)")]
    PacketTooLarge(usize),
    #[error("string or binary field of {0} bytes exceeds 65535 bytes (1.5.3)")]
    FieldTooLong(usize),
    /// A QoS 1/2 PUBLISH, an acknowledgement, SUBSCRIBE, SUBACK or UNSUBSCRIBE with packet
    /// identifier 0.
    #[error("packet identifier 0 (MQTT-2.3.1-1)")]
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE without a topic filter, or SUBACK without a return code.
    #[error("{0:?} without any entry (MQTT-3.8.3-3, MQTT-3.10.3-2)")]
    EmptyList(PacketType),
    /// A 3.1.1 CONNECT with a password but no user name.
    #[error("password without a user name (MQTT-3.1.2-22)")]
    PasswordWithoutUsername,
    #[error("subscription identifier {0} outside 1 to 268,435,455 (MQTT 5.0 3.8.2.1.2)")]
    InvalidSubscriptionIdentifier(u32),
    /// Properties, reason codes or AUTH where the protocol level has no place for them.
    #[error("{0:?} cannot be sent to an MQTT 3.1/3.1.1 peer")]
    NotInV3(PacketType),
}
