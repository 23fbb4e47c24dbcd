//! Access control lists in Mosquitto's format.
//!
//! `topic [read|write|readwrite|deny] TOPIC` lines before any `user` line apply to anonymous
//! clients; after `user NAME` they apply to that user; `pattern [...] TOPIC` lines apply to
//! everyone, with `%c` replaced by the client id and `%u` by the user name. No access word
//! means readwrite. Anything not granted is denied, and a matching `deny` wins over grants.
//!
//! Reads mean what they mean in Mosquitto: a subscription is refused only when nothing it
//! could match may be read (no read rule overlaps it, or a deny rule covers all of it), and
//! otherwise granted; a message on a topic the client may not read is not delivered to it. So
//! that the common case costs nothing per message, SUBSCRIBE sorts filters into those every
//! topic of which may be read (a read rule covers the filter, no deny rule overlaps it:
//! [`SubscribeAccess::Granted`], never checked again) and those only partly readable
//! ([`SubscribeAccess::GrantedChecked`]: each message checked with [`AclFile::can_read`]).

use std::path::Path;

use crate::topic::filter_matches;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    topic: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// What an ACL says of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeAccess {
    /// Nothing it could match may be read: SUBACK 0x80 (MQTT 5: 0x87).
    Refused,
    /// Every topic it can match may be read.
    Granted,
    /// Some topics it can match may be read, some not: each message is checked.
    GrantedChecked,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: Vec<(String, Vec<Rule>)>,
    patterns: Vec<Rule>,
}

impl AclFile {
    pub fn load(path: &Path) -> Result<AclFile, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        AclFile::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<AclFile, AclError> {
        let mut acl = AclFile::default();
        let mut current_user: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AclError::Parse {
                path: origin.to_string(),
                line: i + 1,
                reason,
            };
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim_start();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a user name".into()));
                    }
                    acl.users.push((rest.to_string(), Vec::new()));
                    current_user = Some(acl.users.len() - 1);
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(|r| err(format!("{keyword}: {r}")))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match current_user {
                            Some(u) => acl.users[u].1.push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => return Err(err(format!("unknown keyword `{other}`"))),
            }
        }
        Ok(acl)
    }

    /// The rules that apply to a client, with patterns substituted.
    fn rules_for(&self, username: Option<&str>, client_id: &str) -> Vec<Rule> {
        let mut rules: Vec<Rule> = match username {
            None => self.anonymous.clone(),
            Some(u) => self
                .users
                .iter()
                .filter(|(name, _)| name == u)
                .flat_map(|(_, r)| r.iter().cloned())
                .collect(),
        };
        for p in &self.patterns {
            if let Some(topic) = substitute(&p.topic, username, client_id) {
                rules.push(Rule {
                    access: p.access,
                    topic,
                });
            }
        }
        rules
    }

    /// Whether the client may publish to `topic`.
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let rules = self.rules_for(username, client_id);
        let denied = rules
            .iter()
            .any(|r| r.access == Access::Deny && filter_matches(&r.topic, topic));
        !denied
            && rules
                .iter()
                .any(|r| r.access.writes() && filter_matches(&r.topic, topic))
    }

    /// What the client may read through a subscription to `filter` (see the module docs).
    pub fn subscribe_access(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> SubscribeAccess {
        let rules = self.rules_for(username, client_id);
        let deny = |f: fn(&str, &str) -> bool| {
            rules
                .iter()
                .any(|r| r.access == Access::Deny && f(&r.topic, filter))
        };
        let read = |f: fn(&str, &str) -> bool| {
            rules
                .iter()
                .any(|r| r.access.reads() && f(&r.topic, filter))
        };
        if deny(filter_covers) || !read(filters_overlap) {
            SubscribeAccess::Refused
        } else if read(filter_covers) && !deny(filters_overlap) {
            SubscribeAccess::Granted
        } else {
            SubscribeAccess::GrantedChecked
        }
    }

    /// Whether the client may be sent a message on `topic`: a read rule matches it and no
    /// deny rule does.
    pub fn can_read(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        let rules = self.rules_for(username, client_id);
        let denied = rules
            .iter()
            .any(|r| r.access == Access::Deny && filter_matches(&r.topic, topic));
        !denied
            && rules
                .iter()
                .any(|r| r.access.reads() && filter_matches(&r.topic, topic))
    }
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let (access, topic) = match first {
        "read" => (Access::Read, after.trim_start()),
        "write" => (Access::Write, after.trim_start()),
        "readwrite" => (Access::ReadWrite, after.trim_start()),
        "deny" => (Access::Deny, after.trim_start()),
        _ => (Access::ReadWrite, rest),
    };
    if topic.is_empty() {
        return Err("needs a topic".into());
    }
    crate::topic::validate_filter(topic).map_err(|e| format!("invalid topic `{topic}`: {e}"))?;
    Ok(Rule {
        access,
        topic: topic.to_string(),
    })
}

/// Replaces `%c` and `%u`. A value that would widen the rule (wildcards, level separators) or a
/// missing user name makes the rule not apply to this client at all.
fn substitute(pattern: &str, username: Option<&str>, client_id: &str) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
    let mut out = pattern.to_string();
    if out.contains("%c") {
        if unsafe_value(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    if out.contains("%u") {
        let user = username?;
        if unsafe_value(user) {
            return None;
        }
        out = out.replace("%u", user);
    }
    Some(out)
}

fn starts_with_wildcard(f: &str) -> bool {
    f.starts_with('+') || f.starts_with('#')
}

/// Whether every topic `requested` can match is also matched by `rule` (MQTT-4.7.2-1 included:
/// a rule starting with a wildcard does not cover `$` topics).
fn filter_covers(rule: &str, requested: &str) -> bool {
    if requested.starts_with('$') && starts_with_wildcard(rule) {
        return false;
    }
    let mut a = rule.split('/');
    let mut r = requested.split('/');
    loop {
        match (a.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) => {
                if level == "#" {
                    return false;
                }
            }
            (Some(lit), Some(level)) => {
                if lit != level || level == "+" || level == "#" {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic name is matched by both filters.
fn filters_overlap(a: &str, b: &str) -> bool {
    let dollar = |x: &str, y: &str| x.starts_with('$') && starts_with_wildcard(y);
    if dollar(a, b) || dollar(b, a) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(p), Some(q)) => {
                if p != "+" && q != "+" && p != q {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/in

user bob
topic sensors/+/temp

pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

    fn acl() -> AclFile {
        AclFile::parse(ACL, "acl").unwrap()
    }

    use SubscribeAccess::{Granted, GrantedChecked, Refused};

    #[test]
    fn anonymous_rules_apply_only_without_a_user_name() {
        let acl = acl();
        assert_eq!(acl.subscribe_access(None, "c", "public/news"), Granted);
        assert!(!acl.can_publish(None, "c", "public/news"), "read only");
        assert_eq!(
            acl.subscribe_access(Some("alice"), "c", "public/news"),
            Refused
        );
    }

    #[test]
    fn user_rules_and_deny() {
        let acl = acl();
        assert!(acl.can_publish(Some("alice"), "c", "alice/x/y"));
        assert!(!acl.can_publish(Some("alice"), "c", "alice/secret"));
        assert_eq!(
            acl.subscribe_access(Some("alice"), "c", "alice/x/#"),
            Granted
        );
        // Overlapping the denied topic: granted, and each message checked (as Mosquitto
        // withholds only the denied topic's messages).
        for filter in ["alice/#", "alice/+"] {
            assert_eq!(
                acl.subscribe_access(Some("alice"), "c", filter),
                GrantedChecked,
                "{filter}"
            );
        }
        assert!(acl.can_read(Some("alice"), "c", "alice/x"));
        assert!(!acl.can_read(Some("alice"), "c", "alice/secret"));
        // The denied topic alone: nothing to read.
        assert_eq!(
            acl.subscribe_access(Some("alice"), "c", "alice/secret"),
            Refused
        );
        assert!(acl.can_publish(Some("alice"), "c", "shared/in"));
        assert_eq!(
            acl.subscribe_access(Some("alice"), "c", "shared/in"),
            Refused,
            "write only"
        );
        assert!(
            !acl.can_publish(Some("mallory"), "c", "alice/x"),
            "unknown user has no rules"
        );
    }

    #[test]
    fn a_filter_wider_than_the_read_rules_is_checked_per_message() {
        let acl = acl();
        assert_eq!(
            acl.subscribe_access(Some("bob"), "c", "sensors/+/temp"),
            Granted
        );
        assert_eq!(
            acl.subscribe_access(Some("bob"), "c", "sensors/kitchen/temp"),
            Granted
        );
        for filter in ["sensors/#", "sensors/+/+", "#"] {
            assert_eq!(
                acl.subscribe_access(Some("bob"), "c", filter),
                GrantedChecked,
                "{filter}"
            );
        }
        assert!(acl.can_read(Some("bob"), "c", "sensors/k/temp"));
        assert!(!acl.can_read(Some("bob"), "c", "sensors/k/humidity"));
        assert_eq!(acl.subscribe_access(Some("bob"), "c", "other/#"), Refused);
        assert!(acl.can_publish(Some("bob"), "c", "sensors/k/temp"));
    }

    #[test]
    fn mosquittos_test_acl_grants_hash_and_refuses_the_denied_topic_alone() {
        // What paho's interop tests run against: everything but one topic.
        let acl =
            AclFile::parse("topic readwrite #\ntopic deny test/nosubscribe\n", "acl").unwrap();
        assert_eq!(acl.subscribe_access(None, "c", "#"), GrantedChecked);
        assert_eq!(acl.subscribe_access(None, "c", "test/nosubscribe"), Refused);
        assert_eq!(acl.subscribe_access(None, "c", "test/other"), Granted);
        assert!(!acl.can_read(None, "c", "test/nosubscribe"));
        assert!(acl.can_read(None, "c", "test/other"));
    }

    #[test]
    fn patterns_substitute_client_id_and_user_name_safely() {
        let acl = acl();
        assert!(acl.can_publish(Some("bob"), "dev1", "clients/dev1/status"));
        assert!(!acl.can_publish(Some("bob"), "dev1", "clients/dev2/status"));
        assert_eq!(
            acl.subscribe_access(Some("bob"), "x", "users/bob/inbox"),
            Granted
        );
        assert_eq!(
            acl.subscribe_access(None, "x", "users/bob/inbox"),
            Refused,
            "%u needs a user name"
        );
        // A client id with wildcards must not turn the pattern into a wildcard.
        assert!(!acl.can_read(Some("bob"), "#", "clients/x/y"));
        assert!(!acl.can_publish(Some("bob"), "a/b", "clients/a/b/x"));
        // A per-client pattern: `clients/#` reaches only this client's part.
        assert_eq!(
            acl.subscribe_access(Some("bob"), "dev1", "clients/#"),
            GrantedChecked
        );
        assert!(acl.can_read(Some("bob"), "dev1", "clients/dev1/cmd"));
        assert!(!acl.can_read(Some("bob"), "dev1", "clients/dev2/cmd"));
    }

    #[test]
    fn wildcard_rules_do_not_cover_dollar_topics() {
        let acl = AclFile::parse("topic #\n", "acl").unwrap();
        assert!(acl.can_publish(None, "c", "a/b"));
        assert!(!acl.can_publish(None, "c", "$SYS/x"));
        assert_eq!(acl.subscribe_access(None, "c", "$SYS/#"), Refused);
        assert_eq!(acl.subscribe_access(None, "c", "#"), Granted);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = AclFile::parse("user alice\ntopic read a/#/b\n", "my.acl").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("my.acl:2: topic: invalid topic `a/#/b`"),
            "{err}"
        );
        let err = AclFile::parse("allow all\n", "my.acl").unwrap_err();
        assert_eq!(err.to_string(), "my.acl:1: unknown keyword `allow`");
    }

    #[test]
    fn covers_and_overlap() {
        assert!(filter_covers("a/#", "a"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("+/b", "+/b"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(filters_overlap("a/+", "+/b"));
        assert!(filters_overlap("a/#", "a"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("#", "$SYS/x"));
        assert!(filters_overlap("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn the_deepest_filters_and_topics_are_checked_without_recursion() {
        // 65,535 '/' (65,536 empty levels) as topic and filter, against rules that make every
        // check walk all the levels; on a small stack, so recursion over levels would fail.
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                let deepest = "/".repeat(65_535);
                let read = format!("{}#", "+/".repeat(32_767));
                let deny = format!("{}x", "/".repeat(65_534));
                let text = format!("topic read {read}\ntopic write {deepest}\ntopic deny {deny}\n");
                let acl = AclFile::parse(&text, "deep.acl").expect("a valid ACL");
                assert!(acl.can_publish(None, "c", &deepest));
                assert!(!acl.can_publish(None, "c", &deny));
                assert_eq!(acl.subscribe_access(None, "c", &deepest), Granted);
                let overlapping = format!("{}+", "/".repeat(65_534));
                assert_eq!(
                    acl.subscribe_access(None, "c", &overlapping),
                    GrantedChecked,
                    "overlaps the deny"
                );
                assert!(!acl.can_read(None, "c", &deny));
                assert!(acl.can_read(None, "c", &deepest));
                assert_eq!(
                    acl.subscribe_access(None, "c", "a"),
                    Refused,
                    "too shallow for the read rule"
                );
                assert!(filters_overlap(&deepest, &read));
                assert!(filter_covers(&read, &deepest));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
