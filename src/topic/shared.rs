//! Shared subscription filters, `$share/{ShareName}/{filter}` (MQTT 5.0 4.8.2, accepted from
//! 3.1.1 clients too, as Mosquitto, EMQX, HiveMQ and FlashMQ do): recognising one and splitting
//! it into its group name and the filter that does the matching.

use super::{validate_filter_with_max_levels, TopicError};

/// The prefix that makes a filter a shared subscription.
pub const SHARE_PREFIX: &str = "$share/";

/// A shared subscription filter taken apart: messages matching `filter` go to one member of
/// the group `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

/// Whether `filter` names a shared subscription.
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with(SHARE_PREFIX)
}

/// Splits a `$share/{group}/{filter}` filter. None when `filter` is not a shared subscription;
/// an error when it is one but its group name is empty or holds `+` or `#`
/// (MQTT-4.8.2-1, MQTT-4.8.2-2), or there is no filter after it.
pub fn parse_shared(filter: &str) -> Option<Result<SharedFilter<'_>, TopicError>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(Err(TopicError::InvalidShareName));
    };
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Some(Err(TopicError::InvalidShareName));
    }
    Some(Ok(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Checks a filter from SUBSCRIBE or UNSUBSCRIBE, shared or not: for a shared one, the group
/// name and then the filter after it (where the level limit applies).
pub fn validate_any_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    match parse_shared(filter) {
        None => validate_filter_with_max_levels(filter, max_levels),
        Some(shared) => validate_filter_with_max_levels(shared?.filter, max_levels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters_split_into_group_and_filter() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$SYS/x"), None);
        assert_eq!(
            parse_shared("$share/g/a/+/#"),
            Some(Ok(SharedFilter {
                group: "g",
                filter: "a/+/#"
            }))
        );
        assert_eq!(
            parse_shared("$share/g//"),
            Some(Ok(SharedFilter {
                group: "g",
                filter: "/"
            }))
        );
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/",
        ] {
            assert_eq!(
                parse_shared(bad),
                Some(Err(TopicError::InvalidShareName)),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_filter_after_the_group_follows_the_filter_rules() {
        assert_eq!(validate_any_filter("$share/g/a/#", 0), Ok(()));
        assert_eq!(
            validate_any_filter("$share/g/a#", 0),
            Err(TopicError::MisplacedMultiLevelWildcard)
        );
        // The level limit counts the filter, not the prefix.
        assert_eq!(validate_any_filter("$share/g/a/b", 2), Ok(()));
        assert!(validate_any_filter("$share/g/a/b/c", 2).is_err());
        assert_eq!(
            validate_any_filter("$share/g", 0),
            Err(TopicError::InvalidShareName)
        );
    }
}
