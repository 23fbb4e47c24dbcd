//! Topic names, topic filters and the structures that match one against the other. This module
//! owns the MQTT 3.1.1 topic rules (section 4.7) and nothing else: it does no I/O, knows nothing
//! about packets or sessions, and does not depend on `crate::protocol`, so the codec and the
//! broker can both use it and it can be tested on its own.
//!
//! - [`validate_topic_name`] / [`validate_filter`] check untrusted strings once, at the edge; the
//!   matching structures below assume their inputs already passed these checks.
//! - [`filter_matches`] is the plain, obviously-correct matcher. The tests use it as the oracle
//!   for the faster matching structures.
//! - [`SubscriptionTrie`] answers "who is subscribed to this topic?" for every PUBLISH, so it is
//!   built for matching speed.
//! - [`TopicTree`] answers "which retained messages does this new filter match?".
//! - [`parse_shared`] takes a shared subscription (`$share/{group}/{filter}`) apart.

mod children;
mod matching;
mod shared;
mod subscribers;
mod tree;
mod trie;
mod validate;

pub use matching::filter_matches;
pub use shared::{is_shared, parse_shared, validate_any_filter, SharedFilter, SHARE_PREFIX};
pub use tree::TopicTree;
pub use trie::SubscriptionTrie;
pub use validate::{
    count_levels, validate_filter, validate_filter_with_max_levels, validate_topic_name,
    validate_topic_name_with_max_levels,
};

/// The longest topic name or filter the 2-byte length prefix of an MQTT string can carry.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a string is not an acceptable topic name or topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("empty topic name or filter (MQTT-4.7.3-1)")]
    Empty,
    #[error("topic name or filter longer than 65535 bytes (MQTT-4.7.3-3)")]
    TooLong,
    #[error("topic name or filter contains U+0000 (MQTT-4.7.3-2)")]
    NullCharacter,
    #[error("wildcard character in a topic name (MQTT-3.3.2-2, MQTT-4.7.1-1)")]
    WildcardInName,
    #[error("'#' is not the last level or not alone in its level (MQTT-4.7.1-2)")]
    MisplacedMultiLevelWildcard,
    #[error("'+' is not alone in its level (MQTT-4.7.1-3)")]
    MisplacedSingleLevelWildcard,
    #[error("shared subscription without a group name of its own, one holding '+' or '#', or without a filter after it (MQTT-4.8.2-1, MQTT-4.8.2-2)")]
    InvalidShareName,
    #[error("{levels} topic levels exceed the limit of {max}")]
    TooManyLevels { levels: usize, max: usize },
}

/// Splits a filter into the levels that lead to its node and whether it ends in `#`.
///
/// A trailing `#` is not a node of its own in either structure: it matches "this level and
/// everything below", so it is kept as a property of its parent. That is why `"#"` has an empty
/// path (the root) while `"/#"` has one empty level.
pub(crate) fn split_multi_level(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), true)
    } else {
        (Some(filter), false)
    }
}
