//! MQTT topics and filters as NATS subjects, the way nats-server's own MQTT support maps them,
//! so that NATS applications and MQTT clients of any node see the same messages: `a/b` is
//! `a.b`; an empty level keeps a `/` beside the dot (`/a` is `/.a`, `a/` is `a./`, `a//b` is
//! `a./.b`); a `.` inside a level is `//`; `+` is `*`; `a/#` is `a.>` plus `a` itself (`#`
//! also matches its parent level in MQTT); `#` alone is `>`. Topics with characters a NATS
//! subject cannot hold (white space, control characters) have no subject. Pure functions.

/// The NATS subject of an MQTT topic name; None if it cannot be one.
pub fn topic_to_subject(topic: &str) -> Option<String> {
    convert(topic, false)
}

/// The NATS subjects that together match what an MQTT filter matches: one, or two for a
/// filter ending in `/#` (the parent level and everything below it).
pub fn filter_to_subjects(filter: &str) -> Option<Vec<String>> {
    if filter == "#" {
        return Some(vec![">".to_string()]);
    }
    if let Some(parent) = filter.strip_suffix("/#") {
        let below = convert(&format!("{parent}/#"), true)?;
        let mut subjects = vec![below];
        // `a/#` matches `a` itself; `+/#` matches any one level.
        if !parent.is_empty() {
            subjects.push(convert(parent, true)?);
        }
        return Some(subjects);
    }
    Some(vec![convert(filter, true)?])
}

/// Level by level: levels joined by `.`, an empty level written `/`, a `.` written `//`.
fn convert(mqtt: &str, wildcards: bool) -> Option<String> {
    if mqtt.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(mqtt.len() + 4);
    for (i, level) in mqtt.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('/');
            continue;
        }
        for c in level.chars() {
            match c {
                '.' => out.push_str("//"),
                '+' if wildcards => out.push('*'),
                '#' if wildcards => out.push('>'),
                '+' | '#' => return None,
                c if c.is_whitespace() || c.is_control() => return None,
                c => out.push(c),
            }
        }
    }
    Some(out)
}

/// The MQTT topic of a NATS subject (the inverse of [`topic_to_subject`]).
pub fn subject_to_topic(subject: &str) -> String {
    let mut topic = String::with_capacity(subject.len());
    for (i, token) in subject.split('.').enumerate() {
        if i > 0 {
            topic.push('/');
        }
        if token == "/" {
            // An empty level.
            continue;
        }
        topic.push_str(&token.replace("//", "."));
    }
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_as_nats_server_maps_them() {
        for (topic, subject) in [
            ("a/b/c", "a.b.c"),
            ("a", "a"),
            ("/a", "/.a"),
            ("a/", "a./"),
            ("a//b", "a./.b"),
            ("v1.2/x", "v1//2.x"),
            ("münchen/temp", "münchen.temp"),
        ] {
            assert_eq!(topic_to_subject(topic).as_deref(), Some(subject), "{topic}");
            assert_eq!(subject_to_topic(subject), topic, "{subject}");
        }
        assert_eq!(topic_to_subject("a b"), None);
        assert_eq!(topic_to_subject("a/+"), None);
    }

    #[test]
    fn filters_map_to_the_subjects_that_match_the_same_topics() {
        assert_eq!(filter_to_subjects("#").unwrap(), [">"]);
        assert_eq!(filter_to_subjects("a/+/c").unwrap(), ["a.*.c"]);
        assert_eq!(filter_to_subjects("a/#").unwrap(), ["a.>", "a"]);
        assert_eq!(filter_to_subjects("+/#").unwrap(), ["*.>", "*"]);
        assert_eq!(filter_to_subjects("a/b").unwrap(), ["a.b"]);
        assert_eq!(filter_to_subjects("a b/#"), None);
    }
}
