//! A bridge's `topic` lines as Mosquitto reads them: which filter to subscribe to on each
//! side, and how a topic is rewritten on its way across. Pure: no I/O, tested with strings.
//!
//! `topic PATTERN DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX` subscribes to
//! `LOCAL_PREFIX + PATTERN` locally (for `out`) and to `REMOTE_PREFIX + PATTERN` remotely (for
//! `in`); a message crossing keeps what follows its side's prefix and gets the other side's
//! prefix instead. An empty pattern (`""`) makes the prefixes whole topics: one topic maps to
//! one topic.

use crate::protocol::QoS;
use crate::topic::{filter_matches, validate_filter};

/// Which way a bridge topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Local messages are sent to the remote broker (Mosquitto's default).
    #[default]
    Out,
    /// Remote messages are brought in.
    In,
    Both,
}

impl Direction {
    pub fn outgoing(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
    pub fn incoming(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One `topic` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// None for `""`: the prefixes alone name one topic on each side.
    pub pattern: Option<String>,
    pub direction: Direction,
    /// The QoS subscribed with on the side messages come from (a message crosses at the
    /// lower of its own QoS and this).
    pub qos: QoS,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// `PATTERN out 0` without prefixes.
    pub fn new(pattern: &str, direction: Direction, qos: QoS) -> BridgeTopic {
        BridgeTopic {
            pattern: Some(pattern.to_string()),
            direction,
            qos,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        }
    }

    /// What the bridge subscribes to on the local broker.
    pub fn local_filter(&self) -> String {
        format!(
            "{}{}",
            self.local_prefix,
            self.pattern.as_deref().unwrap_or("")
        )
    }

    /// What the bridge subscribes to on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!(
            "{}{}",
            self.remote_prefix,
            self.pattern.as_deref().unwrap_or("")
        )
    }

    /// Checks both filters (a prefix plus the pattern must be a valid filter, and an empty
    /// pattern needs a prefix: it is the whole topic then).
    pub fn validate(&self) -> Result<(), String> {
        if self.pattern.is_none() && (self.local_prefix.is_empty() || self.remote_prefix.is_empty())
        {
            return Err("a topic with an empty pattern needs both prefixes".into());
        }
        for (side, filter) in [
            ("local", self.local_filter()),
            ("remote", self.remote_filter()),
        ] {
            validate_filter(&filter)
                .map_err(|e| format!("the {side} filter `{filter}` is not valid: {e}"))?;
        }
        for (side, prefix) in [
            ("local", &self.local_prefix),
            ("remote", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#']) {
                return Err(format!("the {side} prefix `{prefix}` has a wildcard"));
            }
        }
        Ok(())
    }
}

/// All `topic` lines of one bridge, in the order written: the first line that matches a
/// message decides its new topic, as in Mosquitto.
#[derive(Debug, Clone, Default)]
pub struct TopicMap {
    lines: Vec<Line>,
}

/// A topic line with its two filters made once, not per message.
#[derive(Debug, Clone)]
struct Line {
    topic: BridgeTopic,
    local_filter: String,
    remote_filter: String,
}

impl Line {
    /// `topic` (which matched `from_filter`, its side's filter) with its side's prefix `from`
    /// replaced by `to`; None if it does not match.
    fn rewrite(&self, topic: &str, from_filter: &str, from: &str, to: &str) -> Option<String> {
        if !filter_matches(from_filter, topic) {
            return None;
        }
        match &self.topic.pattern {
            None => Some(to.to_string()),
            Some(_) => Some(format!("{to}{}", &topic[from.len()..])),
        }
    }
}

impl TopicMap {
    pub fn new(topics: Vec<BridgeTopic>) -> TopicMap {
        let lines = topics
            .into_iter()
            .map(|topic| Line {
                local_filter: topic.local_filter(),
                remote_filter: topic.remote_filter(),
                topic,
            })
            .collect();
        TopicMap { lines }
    }

    /// (filter, QoS) to subscribe to locally: the `out` and `both` lines.
    pub fn local_subscriptions(&self) -> Vec<(String, QoS)> {
        self.lines
            .iter()
            .filter(|l| l.topic.direction.outgoing())
            .map(|l| (l.local_filter.clone(), l.topic.qos))
            .collect()
    }

    /// (filter, QoS) to subscribe to on the remote broker: the `in` and `both` lines.
    pub fn remote_subscriptions(&self) -> Vec<(String, QoS)> {
        self.lines
            .iter()
            .filter(|l| l.topic.direction.incoming())
            .map(|l| (l.remote_filter.clone(), l.topic.qos))
            .collect()
    }

    /// Where a local message goes on the remote broker; None if no `out` line matches it.
    pub fn outgoing(&self, local: &str) -> Option<String> {
        self.lines
            .iter()
            .filter(|l| l.topic.direction.outgoing())
            .find_map(|l| {
                let t = &l.topic;
                l.rewrite(local, &l.local_filter, &t.local_prefix, &t.remote_prefix)
            })
    }

    /// Where a remote message goes locally; None if no `in` line matches it.
    pub fn incoming(&self, remote: &str) -> Option<String> {
        self.lines
            .iter()
            .filter(|l| l.topic.direction.incoming())
            .find_map(|l| {
                let t = &l.topic;
                l.rewrite(remote, &l.remote_filter, &t.remote_prefix, &t.local_prefix)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pattern: Option<&str>, d: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.map(str::to_string),
            direction: d,
            qos: QoS::AtLeastOnce,
            local_prefix: local.to_string(),
            remote_prefix: remote.to_string(),
        }
    }

    #[test]
    fn prefixes_are_swapped_on_the_way_across() {
        // Mosquitto's documented example: `topic # out 0 local/topic/ remote/topic/`.
        let map = TopicMap::new(vec![line(
            Some("#"),
            Direction::Out,
            "local/topic/",
            "remote/topic/",
        )]);
        assert_eq!(
            map.local_subscriptions(),
            [("local/topic/#".to_string(), QoS::AtLeastOnce)]
        );
        assert!(map.remote_subscriptions().is_empty());
        assert_eq!(
            map.outgoing("local/topic/foo/bar").as_deref(),
            Some("remote/topic/foo/bar")
        );
        assert_eq!(map.outgoing("elsewhere/foo"), None);
        // An `out` line brings nothing in.
        assert_eq!(map.incoming("remote/topic/foo"), None);
    }

    #[test]
    fn both_ways_and_in_only() {
        let map = TopicMap::new(vec![
            line(Some("sensors/+/temp"), Direction::In, "edge/", ""),
            line(Some("cmd/#"), Direction::Both, "", "site1/"),
        ]);
        assert_eq!(
            map.remote_subscriptions(),
            [
                ("sensors/+/temp".to_string(), QoS::AtLeastOnce),
                ("site1/cmd/#".to_string(), QoS::AtLeastOnce)
            ]
        );
        assert_eq!(
            map.local_subscriptions(),
            [("cmd/#".to_string(), QoS::AtLeastOnce)]
        );
        assert_eq!(
            map.incoming("sensors/7/temp").as_deref(),
            Some("edge/sensors/7/temp")
        );
        assert_eq!(
            map.incoming("site1/cmd/reboot").as_deref(),
            Some("cmd/reboot")
        );
        assert_eq!(
            map.outgoing("cmd/reboot").as_deref(),
            Some("site1/cmd/reboot")
        );
        assert_eq!(map.outgoing("edge/sensors/7/temp"), None);
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_one_topic() {
        let t = line(None, Direction::Both, "local/status", "remote/status");
        t.validate().unwrap();
        let map = TopicMap::new(vec![t]);
        assert_eq!(
            map.outgoing("local/status").as_deref(),
            Some("remote/status")
        );
        assert_eq!(
            map.incoming("remote/status").as_deref(),
            Some("local/status")
        );
        assert_eq!(map.outgoing("local/status/x"), None);
    }

    #[test]
    fn the_first_matching_line_decides() {
        let map = TopicMap::new(vec![
            line(Some("a/#"), Direction::Out, "", "first/"),
            line(Some("#"), Direction::Out, "", "second/"),
        ]);
        assert_eq!(map.outgoing("a/b").as_deref(), Some("first/a/b"));
        assert_eq!(map.outgoing("b").as_deref(), Some("second/b"));
    }

    #[test]
    fn invalid_lines_are_explained() {
        let err = |t: BridgeTopic| t.validate().unwrap_err();
        assert!(err(line(Some("a/#/b"), Direction::Out, "", "")).contains("local filter `a/#/b`"));
        assert!(err(line(None, Direction::Out, "x", "")).contains("needs both prefixes"));
        assert!(err(line(Some("#"), Direction::Out, "+/", "r/")).contains("wildcard"));
        line(Some("#"), Direction::In, "l/", "r/")
            .validate()
            .unwrap();
    }
}
