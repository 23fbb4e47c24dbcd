//! Validation of untrusted topic names (PUBLISH, Will) and topic filters (SUBSCRIBE,
//! UNSUBSCRIBE) against the MQTT 3.1.1 rules, plus the broker's optional limit on the number of
//! levels. Everything downstream (the trie, the retained-message tree) trusts these checks, so
//! they are the only place the rules are enforced.
//!
//! A `&str` is already well-formed UTF-8, so MQTT-1.5.3-1 is the codec's job, not ours.

use super::{TopicError, MAX_TOPIC_LEN};

/// The number of levels in a name or filter: one more than the number of `/`. Empty levels
/// count (`"a//b"` has 3, `"/"` has 2) and so does a trailing `#` (`"a/#"` has 2).
pub fn count_levels(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

/// Checks a topic name from a PUBLISH or a Will: non-empty, at most 65535 bytes, no U+0000 and
/// no wildcard characters.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    validate_topic_name_with_max_levels(name, 0)
}

/// [`validate_topic_name`] plus a limit on the number of levels; `max_levels == 0` means no limit.
pub fn validate_topic_name_with_max_levels(
    name: &str,
    max_levels: usize,
) -> Result<(), TopicError> {
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    check_levels(name, max_levels)
}

/// Checks a topic filter from a SUBSCRIBE or UNSUBSCRIBE: the topic name rules, except that
/// `+` may fill a whole level and `#` may fill the whole last level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    validate_filter_with_max_levels(filter, 0)
}

/// [`validate_filter`] plus a limit on the number of levels; `max_levels == 0` means no limit.
pub fn validate_filter_with_max_levels(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    check_levels(filter, max_levels)
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

fn check_levels(s: &str, max: usize) -> Result<(), TopicError> {
    if max == 0 {
        return Ok(());
    }
    let levels = count_levels(s);
    if levels > max {
        return Err(TopicError::TooManyLevels { levels, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicError::*;

    #[test]
    fn count_levels_counts_empty_levels() {
        let table = [
            ("a", 1),
            ("a/b", 2),
            ("/", 2),
            ("/a", 2),
            ("a/", 2),
            ("a//b", 3),
            ("a/b/#", 3),
            ("#", 1),
            ("///", 4),
        ];
        for (s, n) in table {
            assert_eq!(count_levels(s), n, "{s:?}");
        }
    }

    #[test]
    fn topic_names() {
        let long_ok = "a".repeat(MAX_TOPIC_LEN);
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let table: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("a/b/c", Ok(())),
            ("/", Ok(())),
            ("/a", Ok(())),
            ("a/", Ok(())),
            ("a//b", Ok(())),
            ("$SYS/broker/load", Ok(())),
            ("caf\u{e9}/\u{1F600}", Ok(())),
            (" ", Ok(())),
            (&long_ok, Ok(())),
            ("", Err(Empty)),
            (&too_long, Err(TooLong)),
            ("a\0b", Err(NullCharacter)),
            ("+", Err(WildcardInName)),
            ("#", Err(WildcardInName)),
            ("a/+", Err(WildcardInName)),
            ("a/#", Err(WildcardInName)),
            ("a+b", Err(WildcardInName)),
            ("sport#", Err(WildcardInName)),
        ];
        for (name, want) in table {
            assert_eq!(validate_topic_name(name), *want, "{name:?}");
        }
    }

    #[test]
    fn filters() {
        let long_ok = "+/".repeat(MAX_TOPIC_LEN / 2) + "#";
        assert_eq!(long_ok.len(), MAX_TOPIC_LEN);
        // 65,536 empty levels, the deepest filter there is.
        let deepest = "/".repeat(MAX_TOPIC_LEN);
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let table: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("a/b", Ok(())),
            ("#", Ok(())),
            ("+", Ok(())),
            ("a/#", Ok(())),
            ("a/+", Ok(())),
            ("+/a", Ok(())),
            ("+/+", Ok(())),
            ("+/#", Ok(())),
            ("/#", Ok(())),
            ("/+", Ok(())),
            ("a//+/#", Ok(())),
            ("$SYS/#", Ok(())),
            ("/", Ok(())),
            (&long_ok, Ok(())),
            (&deepest, Ok(())),
            ("", Err(Empty)),
            (&too_long, Err(TooLong)),
            ("a/\0", Err(NullCharacter)),
            ("#/a", Err(MisplacedMultiLevelWildcard)),
            ("a/#/b", Err(MisplacedMultiLevelWildcard)),
            ("a#", Err(MisplacedMultiLevelWildcard)),
            ("a/b#", Err(MisplacedMultiLevelWildcard)),
            ("##", Err(MisplacedMultiLevelWildcard)),
            ("#/", Err(MisplacedMultiLevelWildcard)),
            ("+#", Err(MisplacedMultiLevelWildcard)),
            ("a+", Err(MisplacedSingleLevelWildcard)),
            ("a/+b", Err(MisplacedSingleLevelWildcard)),
            ("++", Err(MisplacedSingleLevelWildcard)),
            ("sport+/", Err(MisplacedSingleLevelWildcard)),
        ];
        for (filter, want) in table {
            assert_eq!(validate_filter(filter), *want, "{filter:?}");
        }
    }

    #[test]
    fn max_levels() {
        assert_eq!(validate_topic_name_with_max_levels("a/b/c", 0), Ok(()));
        assert_eq!(validate_topic_name_with_max_levels("a/b/c", 3), Ok(()));
        assert_eq!(
            validate_topic_name_with_max_levels("a/b/c/", 3),
            Err(TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(validate_filter_with_max_levels("a/+/#", 3), Ok(()));
        assert_eq!(
            validate_filter_with_max_levels("a/+/b/#", 3),
            Err(TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            validate_filter_with_max_levels("//", 2),
            Err(TooManyLevels { levels: 3, max: 2 })
        );
        // Structural errors win over the level limit: they say more about what is wrong.
        assert_eq!(
            validate_filter_with_max_levels("a/#/b/c", 2),
            Err(MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            validate_topic_name_with_max_levels("a/+/b", 1),
            Err(WildcardInName)
        );
    }
}
