//! Mosquitto 2's defaults, and the translation into the keys of SurgeMQ's TOML configuration
//! (the flags' names), so that flags override a Mosquitto file as they override a TOML one.
//!
//! - Listeners: without any `listener`, `port` or `bind_address`, Mosquitto 2 listens on the
//!   loopback interface only ("local only" mode) and lets anonymous clients in; so does
//!   SurgeMQ, on 127.0.0.1:1883 and [::1]:1883. Otherwise the default listener opens when `port`,
//!   `bind_address` or a listener option before the first `listener` line asks for it, and
//!   `allow_anonymous` defaults to false. An explicit `allow_anonymous` always counts (in
//!   local-only mode Mosquitto ignores `allow_anonymous false`; SurgeMQ keeps the stricter
//!   choice).
//! - Security: one password file, ACL file and `allow_anonymous` for all listeners.
//!   `per_listener_settings true` works when every listener ends up with the same ones; a
//!   difference is an error naming the listeners.
//! - `max_connections` and `max_topic_alias` are per listener in Mosquitto and global in
//!   SurgeMQ: one listener's values are used as they are; several listeners' connection
//!   limits add up (with a warning), and their topic alias limits must agree.
//! - `message_size_limit` (payload bytes, larger messages dropped) becomes a packet size limit
//!   with room for the topic (larger packets close the connection), with a warning.
//! - Mosquitto's other defaults that differ from SurgeMQ's (max_inflight_messages 20,
//!   max_queued_bytes unlimited, max_connections unlimited, max_keepalive 65535) are not
//!   copied: SurgeMQ's own defaults apply to what the file does not set.

use std::path::PathBuf;

use surgemq::auth::{AclFile, PasswordFile};
use surgemq::protocol::MAX_REMAINING_LENGTH;
use surgemq::transport::Listener;
use toml::Value;

use super::line::Set;
use super::listener::{ListenerSection, Security};
use super::MosquittoConf;

/// Room a PUBLISH needs besides its payload: fixed header (5), topic (2 + 65,535), packet id
/// (2).
pub const PUBLISH_OVERHEAD: i64 = 5 + 2 + 65_535 + 2;
const MAX_PACKET: i64 = MAX_REMAINING_LENGTH as i64 + 5;

/// The users and ACLs every listener shares.
#[derive(Debug, PartialEq, Eq)]
struct Effective {
    password_file: Option<Set<PathBuf>>,
    acl_file: Option<Set<PathBuf>>,
    allow_anonymous: bool,
}

impl Effective {
    fn of(s: &Security, default_anonymous: bool) -> Effective {
        Effective {
            password_file: s.password_file.clone(),
            acl_file: s.acl_file.clone(),
            allow_anonymous: s
                .allow_anonymous
                .as_ref()
                .map_or(default_anonymous, |a| a.value),
        }
    }

    fn same(&self, other: &Effective) -> bool {
        let path = |p: &Option<Set<PathBuf>>| p.as_ref().map(|s| s.value.clone());
        path(&self.password_file) == path(&other.password_file)
            && path(&self.acl_file) == path(&other.acl_file)
            && self.allow_anonymous == other.allow_anonymous
    }
}

impl MosquittoConf {
    /// The configuration as TOML keys, and the warnings to log.
    pub fn settings(&self) -> Result<(toml::Table, Vec<String>), String> {
        let mut t = toml::Table::new();
        let mut warnings = self.warnings.clone();
        let d = &self.default_listener;
        let local_only = self.listeners.is_empty() && d.port.is_none() && d.address.is_none();
        let mut open: Vec<&ListenerSection> = Vec::new();
        if local_only || d.port.is_some() || d.address.is_some() || d.touched.is_some() {
            if let (false, None, None, Some(at)) = (local_only, &d.port, &d.address, &d.touched) {
                warnings.push(format!(
                    "{at}: listener options before the first `listener` line configure the default listener, which Mosquitto then opens on port 1883 of every interface; so does SurgeMQ"
                ));
            }
            open.push(d);
        }
        open.extend(&self.listeners);

        let ipv6 = self
            .ipv6
            .clone()
            .unwrap_or_else(|| super::listener::ipv6_support().clone());
        let mut tables = Vec::new();
        let mut seen: Vec<(Listener, String)> = Vec::new();
        for section in &open {
            for l in section.resolve(local_only, &ipv6, &mut warnings)? {
                if let Some((_, other)) = seen.iter().find(|(o, _)| o.addr == l.addr) {
                    return Err(format!(
                        "{}: {} listens on {}, as {other} does",
                        section
                            .at
                            .as_ref()
                            .or(section.touched.as_ref())
                            .map_or(String::new(), ToString::to_string),
                        section.place(),
                        l.addr
                    ));
                }
                tables.push(Value::Table(listener_table(&l)));
                seen.push((l, section.place()));
            }
        }
        t.insert("listener".into(), Value::Array(tables));

        let security = self.effective_security(&open, local_only)?;
        if let Some(p) = &security.password_file {
            PasswordFile::load(&p.value).map_err(|e| format!("{}: password_file: {e}", p.at))?;
            t.insert("password-file".into(), path_value(&p.value));
        }
        if let Some(a) = &security.acl_file {
            AclFile::load(&a.value).map_err(|e| format!("{}: acl_file: {e}", a.at))?;
            t.insert("acl-file".into(), path_value(&a.value));
        }
        t.insert(
            "allow-anonymous".into(),
            Value::Boolean(security.allow_anonymous),
        );

        if let Some(limit) = max_connections(&open, &mut warnings) {
            t.insert("max-connections".into(), Value::Integer(limit));
        }
        if let Some(aliases) = max_topic_alias(&open)? {
            t.insert("max-topic-alias".into(), Value::Integer(aliases));
        }
        if let Some(dir) = self.data_dir(&mut warnings) {
            t.insert("data-dir".into(), path_value(&dir));
        }
        if let Some(size) = self.packet_size(&mut warnings) {
            t.insert("max-packet-size".into(), Value::Integer(size));
        }
        for (key, set) in &self.keys {
            t.insert(key.to_string(), set.value.clone());
        }
        Ok((t, warnings))
    }

    fn effective_security(
        &self,
        open: &[&ListenerSection],
        local_only: bool,
    ) -> Result<Effective, String> {
        let per_listener = match &self.per_listener_settings {
            Some(p) if p.value => p,
            _ => return Ok(Effective::of(&self.security, local_only)),
        };
        let default_open = open
            .iter()
            .any(|s| std::ptr::eq(*s, &self.default_listener));
        if let (false, Some(at)) = (default_open, self.default_listener.security.first_at()) {
            return Err(format!(
                "{at}: with per_listener_settings true this applies to the default listener (port, bind_address), which is not opened; put it after a `listener` line"
            ));
        }
        let mut each = open
            .iter()
            .map(|s| (s, Effective::of(&s.security, local_only)));
        let Some((first_section, first)) = each.next() else {
            return Ok(Effective::of(&self.security, local_only));
        };
        for (section, e) in each {
            if !e.same(&first) {
                return Err(format!(
                    "{}: per_listener_settings true with different password_file, acl_file or allow_anonymous for {} and {} is not supported: SurgeMQ applies one set of users and ACLs to every listener",
                    per_listener.at,
                    first_section.place(),
                    section.place()
                ));
            }
        }
        Ok(first)
    }

    fn data_dir(&self, warnings: &mut Vec<String>) -> Option<PathBuf> {
        match (&self.persistence, &self.persistence_location) {
            (Some(p), location) if p.value => {
                let dir = match location {
                    Some(l) => l.value.clone(),
                    None => {
                        warnings.push(format!(
                            "{}: `persistence true` without `persistence_location`: SurgeMQ keeps its files in the working directory, where Mosquitto keeps mosquitto.db",
                            p.at
                        ));
                        PathBuf::from(".")
                    }
                };
                let theirs = dir.join("mosquitto.db");
                if theirs.exists() {
                    warnings.push(format!(
                        "{}: {} is Mosquitto's: SurgeMQ does not read it (the sessions and retained messages in it do not carry over) and keeps its own files next to it",
                        location.as_ref().map_or(&p.at, |l| &l.at),
                        theirs.display()
                    ));
                }
                Some(dir)
            }
            (_, Some(l)) => {
                warnings.push(format!(
                    "{}: `persistence_location` is ignored: `persistence` is not true, so everything is kept in memory only",
                    l.at
                ));
                None
            }
            _ => None,
        }
    }

    fn packet_size(&self, warnings: &mut Vec<String>) -> Option<i64> {
        let packet = self.max_packet_size.as_ref().map(|p| p.value);
        let from_payload = match &self.message_size_limit {
            Some(m) if m.value > 0 => {
                let size = (m.value + PUBLISH_OVERHEAD).min(MAX_PACKET);
                warnings.push(format!(
                    "{}: `message_size_limit {}`: SurgeMQ limits whole packets, so a packet over {size} bytes (the payload and room for the topic) closes the connection where Mosquitto would drop the message",
                    m.at, m.value
                ));
                Some(size)
            }
            _ => None,
        };
        match (packet, from_payload) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One `[[listener]]` table of the TOML configuration.
fn listener_table(l: &Listener) -> toml::Table {
    let mut t = toml::Table::new();
    let url = Listener {
        tls: None,
        ..l.clone()
    }
    .to_string();
    t.insert("url".into(), Value::String(url));
    if let Some(tls) = &l.tls {
        t.insert("cert".into(), path_value(&tls.cert));
        t.insert("key".into(), path_value(&tls.key));
        if let Some(ca) = &tls.ca_file {
            t.insert("ca-file".into(), path_value(ca));
        }
        t.insert(
            "require-certificate".into(),
            Value::Boolean(tls.require_certificate),
        );
        t.insert(
            "use-identity-as-username".into(),
            Value::Boolean(tls.use_identity_as_username),
        );
    }
    t
}

fn path_value(p: &std::path::Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

/// One limit for all listeners: a single listener's as it is (-1: none), several listeners'
/// added up, or none when one of them has none.
fn max_connections(open: &[&ListenerSection], warnings: &mut Vec<String>) -> Option<i64> {
    let first = open.iter().find_map(|s| s.max_connections.as_ref())?;
    let unlimited = i64::MAX;
    if open.len() == 1 {
        return Some(if first.value < 0 {
            unlimited
        } else {
            first.value
        });
    }
    let limits: Option<Vec<i64>> = open
        .iter()
        .map(|s| {
            s.max_connections
                .as_ref()
                .map(|m| m.value)
                .filter(|v| *v > 0)
        })
        .collect();
    let (limit, said) = match limits {
        Some(limits) => {
            let sum = limits.iter().sum::<i64>();
            (sum, format!("{sum}, the sum of the listeners' limits"))
        }
        None => (
            unlimited,
            "none, since some listeners have none".to_string(),
        ),
    };
    warnings.push(format!(
        "{}: `max_connections` is per listener in Mosquitto; SurgeMQ has one limit for all listeners: {said}",
        first.at
    ));
    Some(limit)
}

/// The listeners' topic alias limit, which must be the same for all (Mosquitto's default is
/// 10, as SurgeMQ's).
fn max_topic_alias(open: &[&ListenerSection]) -> Result<Option<i64>, String> {
    let mut set: Option<(&ListenerSection, &Set<u16>)> = None;
    for s in open {
        let Some(value) = &s.max_topic_alias else {
            continue;
        };
        if let Some((other, first)) = set {
            if first.value != value.value {
                return Err(format!(
                    "{}: `max_topic_alias` is {} for {} and {} for {}: SurgeMQ has one value for all listeners",
                    value.at,
                    first.value,
                    other.place(),
                    value.value,
                    s.place()
                ));
            }
        }
        set = Some((s, value));
    }
    if let Some((_, first)) = set {
        if let Some(unset) = open.iter().find(|s| s.max_topic_alias.is_none()) {
            if first.value != 10 {
                return Err(format!(
                    "{}: `max_topic_alias` is {} here but 10 (the default) for {}: SurgeMQ has one value for all listeners",
                    first.at,
                    first.value,
                    unset.place()
                ));
            }
        }
    }
    Ok(set.map(|(_, v)| i64::from(v.value)))
}
