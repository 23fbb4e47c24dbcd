//! The reference matcher: does one topic filter match one topic name? It walks both strings
//! level by level with no shortcuts, so it is easy to check against the standard; the trie and
//! the retained-message tree are tested against it.

/// Whether `filter` matches the topic name `topic` (MQTT 3.1.1 section 4.7).
///
/// - Levels are separated by `/`, and empty levels are levels: `a//b` has three.
/// - `+` matches exactly one level, which may be empty.
/// - `#` matches its parent level and any number of levels below it: `a/#` matches `a`, `a/`
///   and `a/b/c`; `#` alone matches every topic.
/// - A filter starting with a wildcard does not match a topic starting with `$`
///   (MQTT-4.7.2-1), so `#` does not match `$SYS/x` but `$SYS/#` does.
///
/// Both arguments are assumed valid; for invalid input the answer is unspecified but the
/// function does not panic.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::filter_matches;

    #[test]
    fn table() {
        let table = [
            // Literal levels.
            ("a", "a", true),
            ("a", "b", false),
            ("a/b", "a/b", true),
            ("a/b", "a", false),
            ("a", "a/b", false),
            ("a/b", "a/c", false),
            ("A", "a", false),
            // Empty levels are real levels.
            ("a//b", "a//b", true),
            ("a//b", "a/b", false),
            ("a/", "a/", true),
            ("a/", "a", false),
            ("/a", "/a", true),
            ("/a", "a", false),
            ("/", "/", true),
            // `+` matches exactly one level, empty included.
            ("+", "a", true),
            ("+", "a/b", false),
            ("+", "/", false),
            ("a/+", "a/b", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("+/+", "/a", true),
            ("+/+", "a/", true),
            ("+/+", "/", true),
            ("+/+", "a", false),
            ("/+", "/a", true),
            ("/+", "a", false),
            ("+/b/+", "a/b/c", true),
            ("+/b/+", "a/x/c", false),
            ("a/+/c", "a//c", true),
            // `#` matches the parent level and everything below.
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("#", "/a", true),
            ("a/#", "a", true),
            ("a/#", "a/", true),
            ("a/#", "a/b", true),
            ("a/#", "a/b/c", true),
            ("a/#", "b", false),
            ("a/#", "ab", false),
            ("a/#", "b/a", false),
            ("a/b/#", "a", false),
            ("a/b/#", "a/b", true),
            ("+/#", "a", true),
            ("+/#", "/", true),
            ("/#", "/", true),
            ("/#", "/a/b", true),
            ("/#", "a", false),
            ("+/+/#", "a", false),
            ("+/+/#", "a/b", true),
            // `$` topics are invisible to filters starting with a wildcard (MQTT-4.7.2-1).
            ("#", "$SYS", false),
            ("#", "$SYS/x", false),
            ("+", "$SYS", false),
            ("+/x", "$SYS/x", false),
            ("+/#", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/#", "$SYS/a/b", true),
            ("$SYS/+", "$SYS/x", true),
            ("$SYS/+", "$SYS", false),
            ("$SYS", "$SYS", true),
            ("$SYS/x", "$SYS/x", true),
            // Only the first character decides: a `$` further in is an ordinary character.
            ("#", "a/$SYS", true),
            ("a/+", "a/$x", true),
            ("+/$SYS", "a/$SYS", true),
        ];
        for (filter, topic, want) in table {
            assert_eq!(
                filter_matches(filter, topic),
                want,
                "{filter:?} vs {topic:?}"
            );
        }
    }
}
