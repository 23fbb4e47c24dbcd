//! What nodes put on NATS besides MQTT payloads: the subjects of the cluster's own traffic,
//! the headers a message carries between nodes (its origin, number, QoS, order key, and the
//! MQTT 5 part), and how they read back. Pure: no NATS client here.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::broker::mesh::V5Message;
use crate::protocol::QoS;

/// The origin node (`node/start-time`) of an interest snapshot.
pub(super) const NODE: &str = "Smq-Node";
/// A message's metadata in one header (one to build and parse per message, not five):
/// `ORIGIN SEQ QOS KEY RETAIN`, see [`Meta`].
pub(super) const META: &str = "Smq";
/// On `$SMQ.retained`: the message's MQTT topic.
pub(super) const TOPIC: &str = "Smq-Topic";
/// An MQTT 5 message's forwarded properties (encoded as in the PUBLISH, base64).
pub(super) const PROPS: &str = "Smq-Props";
/// What is left of an MQTT 5 Message Expiry Interval, in seconds.
pub(super) const EXPIRY: &str = "Smq-Expiry";
pub(super) const EPOCH: &str = "Smq-Epoch";
pub(super) const PART: &str = "Smq-Part";
pub(super) const INTEREST: &str = "$SMQ.interest";
pub(super) const HELLO: &str = "$SMQ.hello";
pub(super) const RETAINED: &str = "$SMQ.retained";
/// A node that joins asks one other node (a queue group) for the retained messages.
pub(super) const SYNC: &str = "$SMQ.sync";
/// The last message of a retained-message sync.
pub(super) const END: &str = "Smq-End";
/// A client id that connected to the node in the header, at the time in [`AT`].
pub(super) const CLAIM: &str = "$SMQ.claim";
pub(super) const AT: &str = "Smq-At";
/// `$SMQ.ack.<node>`: another node acknowledges QoS 1/2 messages `<node>` sent it (see
/// `confirm`): its name in [`NODE`], the incarnation acknowledged and the sequence ranges in
/// the payload (`node/start-time\n1-5,7`).
pub(super) const ACK: &str = "$SMQ.ack";
/// The shared subscription groups (`$share/G/F`, one value each) the origin node delivered a
/// message to itself while NATS was away: a node NATS picks for one of them drops its copy.
pub(super) const SERVED: &str = "Smq-Served";
/// On a message sent again to one node for a shared subscription group: the group
/// (`$share/G/F`), which the node hands the message to as NATS had picked it.
pub(super) const GROUP: &str = "Smq-Group";
/// `$SMQ.to.<node>`: a message sent again to that node alone, its topic in [`TOPIC`].
pub(super) const TO: &str = "$SMQ.to";
/// `$SMQ.alive.<node>`: a request the node answers (empty); "no responders" tells the asking
/// node that its connection is gone (see `confirm::PROBE_AFTER`).
pub(super) const ALIVE: &str = "$SMQ.alive";

/// Asks NATS whether node `name` is there (a request to [`ALIVE`]): true when no one
/// listens on its subject, so its connection is gone; false when it answers, or when no
/// answer comes within `wait` (a node cut off in a way NATS has not noticed yet).
pub(super) async fn gone_from_nats(
    client: &async_nats::Client,
    name: &str,
    wait: Duration,
) -> bool {
    let asked = client.request(format!("{ALIVE}.{name}"), Bytes::new());
    matches!(
        tokio::time::timeout(wait, asked).await,
        Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders
    )
}

/// The MQTT 5 part of a message from another node, if it had one.
pub(super) fn v5_part(headers: Option<&HeaderMap>) -> Option<Box<V5Message>> {
    use base64::Engine as _;
    let headers = headers?;
    let properties = headers
        .get(PROPS)
        .and_then(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p.as_str())
                .ok()
        })
        .map(Bytes::from)
        .unwrap_or_default();
    let expires_at = headers
        .get(EXPIRY)
        .and_then(|e| e.as_str().parse::<u64>().ok())
        .map(|secs| std::time::Instant::now() + Duration::from_secs(secs));
    if properties.is_empty() && expires_at.is_none() {
        return None;
    }
    Some(Box::new(V5Message {
        properties,
        expires_at,
    }))
}

/// What a node says about a message it sends: where from (`node/start-time`), its number in
/// that node's stream, its QoS, its publisher's order key, and whether it is retained.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Meta<'a> {
    pub origin: &'a str,
    pub seq: u64,
    pub qos: QoS,
    pub key: u64,
    pub retain: bool,
}

impl std::fmt::Display for Meta<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let retain = if self.retain { " r" } else { "" };
        write!(
            f,
            "{} {} {} {}{retain}",
            self.origin, self.seq, self.qos as u8, self.key
        )
    }
}

impl<'a> Meta<'a> {
    pub fn parse(text: &'a str) -> Option<Meta<'a>> {
        let mut words = text.split(' ');
        let origin = words.next()?;
        let seq = words.next()?.parse().ok()?;
        let qos = QoS::from_u8(words.next()?.parse().ok()?)?;
        let key = words.next()?.parse().ok()?;
        let retain = words.next() == Some("r");
        Some(Meta {
            origin,
            seq,
            qos,
            key,
            retain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_back_what_was_written() {
        let meta = Meta {
            origin: "edge-1/1764460800000",
            seq: 42,
            qos: QoS::ExactlyOnce,
            key: 7,
            retain: true,
        };
        let text = meta.to_string();
        assert_eq!(text, "edge-1/1764460800000 42 2 7 r");
        assert_eq!(Meta::parse(&text), Some(meta));
        let plain = Meta::parse("a/1 1 0 0").unwrap();
        assert!(!plain.retain && plain.qos == QoS::AtMostOnce);
        assert_eq!(Meta::parse("a/1 x 0 0"), None);
    }
}
