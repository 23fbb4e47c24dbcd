//! Bridge sections of a Mosquitto configuration file: `connection NAME` and the options after
//! it, read into [`Bridge`] with Mosquitto's defaults and checks, then turned into the
//! broker's [`BridgeConfig`] ([`Bridge::to_config`]): what SurgeMQ does not do is refused
//! when it would weaken security and warned about otherwise. The TOML file's `[[bridge]]`
//! tables use the same option names and go through the same parser ([`Bridge::from_toml`]).

use std::path::PathBuf;
use std::time::Duration;

pub use surgemq::broker::bridge::Direction;
use surgemq::broker::bridge::{self as lib, BridgeConfig};
use surgemq::client::{TlsOptions, TlsVersion};
use surgemq::protocol::{ProtocolLevel, QoS};
use surgemq::topic::validate_filter;

use super::line::{At, Line};

/// Options that belong to a bridge and are an error outside a `connection` section.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "address",
    "addresses",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "cleansession",
    "clientid",
    "idle_timeout",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "password",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
    "username",
];

/// One remote broker address (`address HOST[:PORT]`, port 1883 when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAddress {
    pub host: String,
    pub port: u16,
}

/// `topic PATTERN [DIRECTION [QOS [LOCAL_PREFIX [REMOTE_PREFIX]]]]`; an empty prefix (written
/// `""`) is None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// None for `""`: the prefixes alone name one topic on each side.
    pub pattern: Option<String>,
    pub direction: Direction,
    pub qos: QoS,
    pub local_prefix: Option<String>,
    pub remote_prefix: Option<String>,
    pub at: At,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartType {
    #[default]
    Automatic,
    Lazy,
    Once,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimeout {
    /// Always wait this many seconds.
    Constant(u32),
    /// "Decorrelated jitter" from `base` up to `cap` seconds (Mosquitto's default 5, 30).
    Backoff { base: u32, cap: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeProtocol {
    V31,
    #[default]
    V311,
    V5,
}

/// TLS (or TLS-PSK) towards the remote broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub insecure: bool,
    pub version: Option<String>,
    pub alpn: Option<String>,
    pub require_ocsp: bool,
    pub identity: Option<String>,
    pub psk: Option<String>,
}

/// A `connection` section, with Mosquitto's defaults for what it does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    /// The `connection` line.
    pub at: At,
    pub addresses: Vec<BridgeAddress>,
    pub round_robin: bool,
    pub topics: Vec<BridgeTopic>,
    /// Client id on the remote broker; Mosquitto's default is `NAME.HOSTNAME`.
    pub remote_clientid: Option<String>,
    /// Client id on the local broker; Mosquitto's default is `local.REMOTE_CLIENTID`.
    pub local_clientid: Option<String>,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    pub local_username: Option<String>,
    pub local_password: Option<String>,
    pub cleansession: bool,
    /// None: as `cleansession`.
    pub local_cleansession: Option<bool>,
    pub keepalive_interval: u16,
    pub idle_timeout: u32,
    pub threshold: u32,
    pub start_type: StartType,
    pub restart_timeout: RestartTimeout,
    pub notifications: bool,
    pub notifications_local_only: bool,
    /// None: `$SYS/broker/connection/REMOTE_CLIENTID/state`.
    pub notification_topic: Option<String>,
    pub protocol_version: BridgeProtocol,
    pub try_private: bool,
    pub attempt_unsubscribe: bool,
    pub outgoing_retain: bool,
    /// 0: no limit.
    pub max_packet_size: u32,
    pub bind_address: Option<String>,
    pub tls: BridgeTls,
}

impl Bridge {
    /// A new section from its `connection NAME` line.
    pub fn new(line: &Line<'_>) -> Result<Bridge, String> {
        Ok(Bridge {
            name: line.word()?.to_string(),
            at: line.at.clone(),
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            remote_clientid: None,
            local_clientid: None,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            cleansession: false,
            local_cleansession: None,
            keepalive_interval: 60,
            idle_timeout: 60,
            threshold: 10,
            start_type: StartType::Automatic,
            restart_timeout: RestartTimeout::Backoff { base: 5, cap: 30 },
            notifications: true,
            notifications_local_only: false,
            notification_topic: None,
            protocol_version: BridgeProtocol::V311,
            try_private: true,
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            bind_address: None,
            tls: BridgeTls::default(),
        })
    }

    /// Applies one of [`BRIDGE_OPTIONS`].
    pub fn set(&mut self, line: &Line<'_>) -> Result<(), String> {
        let text = || line.text().map(str::to_string);
        let u32_value = |min: i64| line.int(min, i64::from(u32::MAX)).map(|v| v as u32);
        match line.key {
            "address" | "addresses" => {
                if !self.addresses.is_empty() {
                    return Err(line
                        .err("a bridge takes one `address` line (list several addresses on it)"));
                }
                for word in line.words() {
                    self.addresses.push(address(line, word)?);
                }
                if self.addresses.is_empty() {
                    return Err(line.err(format_args!("`{}` needs a value", line.key)));
                }
            }
            "round_robin" => self.round_robin = line.bool()?,
            "topic" => self.topics.push(topic(line)?),
            "clientid" | "remote_clientid" => self.remote_clientid = Some(line.word()?.into()),
            "local_clientid" => self.local_clientid = Some(line.word()?.into()),
            "username" | "remote_username" => self.remote_username = Some(text()?),
            "password" | "remote_password" => self.remote_password = Some(text()?),
            "local_username" => self.local_username = Some(text()?),
            "local_password" => self.local_password = Some(text()?),
            "cleansession" => self.cleansession = line.bool()?,
            "local_cleansession" => self.local_cleansession = Some(line.bool()?),
            // Mosquitto raises lower values to its minimum (5 s, 1 s) with a notice.
            "keepalive_interval" => self.keepalive_interval = line.int(5, 65535)? as u16,
            "idle_timeout" => self.idle_timeout = u32_value(1)?,
            "threshold" => self.threshold = u32_value(1)?,
            "start_type" => {
                self.start_type = match line.choice(&["automatic", "lazy", "once"])? {
                    "lazy" => StartType::Lazy,
                    "once" => StartType::Once,
                    _ => StartType::Automatic,
                }
            }
            "restart_timeout" => self.restart_timeout = restart_timeout(line)?,
            "notifications" => self.notifications = line.bool()?,
            "notifications_local_only" => self.notifications_local_only = line.bool()?,
            "notification_topic" => self.notification_topic = Some(line.word()?.into()),
            "bridge_protocol_version" => {
                self.protocol_version = match line.choice(&["mqttv31", "mqttv311", "mqttv50"])? {
                    "mqttv31" => BridgeProtocol::V31,
                    "mqttv50" => BridgeProtocol::V5,
                    _ => BridgeProtocol::V311,
                }
            }
            "try_private" => self.try_private = line.bool()?,
            "bridge_attempt_unsubscribe" => self.attempt_unsubscribe = line.bool()?,
            "bridge_outgoing_retain" => self.outgoing_retain = line.bool()?,
            "bridge_max_packet_size" => self.max_packet_size = u32_value(0)?,
            "bridge_bind_address" => self.bind_address = Some(line.word()?.into()),
            "bridge_cafile" => self.tls.cafile = Some(line.path()?),
            "bridge_capath" => self.tls.capath = Some(line.path()?),
            "bridge_certfile" => self.tls.certfile = Some(line.path()?),
            "bridge_keyfile" => self.tls.keyfile = Some(line.path()?),
            "bridge_insecure" => self.tls.insecure = line.bool()?,
            "bridge_tls_version" => self.tls.version = Some(line.word()?.into()),
            "bridge_alpn" => self.tls.alpn = Some(line.word()?.into()),
            "bridge_require_ocsp" => self.tls.require_ocsp = line.bool()?,
            "bridge_identity" => self.tls.identity = Some(line.word()?.into()),
            "bridge_psk" => self.tls.psk = Some(line.word()?.into()),
            other => unreachable!("`{other}` is not in BRIDGE_OPTIONS"),
        }
        let certificates = self.tls.cafile.is_some() || self.tls.capath.is_some();
        if certificates && (self.tls.identity.is_some() || self.tls.psk.is_some()) {
            return Err(line.err("a bridge uses certificates or a PSK, not both"));
        }
        Ok(())
    }

    /// What Mosquitto checks once the section is complete.
    pub fn check(&self) -> Result<(), String> {
        let missing = if self.addresses.is_empty() {
            "no `address`"
        } else if self.topics.is_empty() {
            "no `topic`"
        } else if self.tls.psk.is_some() != self.tls.identity.is_some() {
            "`bridge_psk` and `bridge_identity` go together"
        } else {
            return Ok(());
        };
        Err(format!("{}: bridge `{}`: {missing}", self.at, self.name))
    }
}

impl Bridge {
    /// A `[[bridge]]` table of the TOML file: `name`, then Mosquitto's option names with
    /// their values (`topic` may be an array of `topic` lines' values). `origin` names the
    /// table in errors.
    pub fn from_toml(table: &toml::Table, origin: &str) -> Result<Bridge, String> {
        let at = At {
            file: origin.to_string(),
            line: 0,
        };
        let bad = |key: &str, what: &str| format!("{origin}: `{key}` must be {what}");
        let name = match table.get("name") {
            Some(toml::Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(bad("name", "the bridge's name, a string")),
        };
        let first = format!("connection {name}");
        let mut bridge = Bridge::new(&Line::parse(&first, at.clone()).expect("not blank"))?;
        for (key, value) in table {
            if key == "name" {
                continue;
            }
            if !BRIDGE_OPTIONS.contains(&key.as_str()) {
                return Err(format!("{origin}: unknown bridge option `{key}`"));
            }
            let values: Vec<&toml::Value> = match value {
                toml::Value::Array(items) if key == "topic" => items.iter().collect(),
                other => vec![other],
            };
            for value in values {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) if key == "address" || key == "addresses" => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad(key, "a string or an array of strings"))?
                        .join(" "),
                    _ => return Err(bad(key, "a string, a number or true/false")),
                };
                let line = format!("{key} {text}");
                bridge.set(&Line::parse(&line, at.clone()).expect("not blank"))?;
            }
        }
        bridge.check()?;
        Ok(bridge)
    }

    /// The broker's form of this section, and warnings for what it ignores. Refused: what
    /// would connect with less security than the file asks for (OCSP, TLS-PSK, a CA
    /// directory, `bridge_insecure`, which here would skip the whole certificate check and not
    /// only the host name).
    pub fn to_config(&self) -> Result<(BridgeConfig, Vec<String>), String> {
        let here = format!("{}: bridge `{}`", self.at, self.name);
        let refuse = |what: &str| Err(format!("{here}: {what}"));
        if self.tls.require_ocsp {
            return refuse("`bridge_require_ocsp` is not supported (no OCSP checks)");
        }
        if self.tls.psk.is_some() {
            return refuse("`bridge_psk` is not supported (TLS with certificates only)");
        }
        if self.tls.capath.is_some() {
            return refuse("`bridge_capath` is not supported: give the CAs in `bridge_cafile`");
        }
        if self.tls.insecure {
            return refuse("`bridge_insecure true` is not supported: it would accept any certificate here, not only one for another host name");
        }
        let mut warnings = Vec::new();
        let mut warn = |what: String| warnings.push(format!("{here}: {what}"));
        match self.start_type {
            StartType::Automatic => {}
            StartType::Lazy | StartType::Once => warn(
                "`start_type` is ignored: the bridge starts with the broker and reconnects (automatic)"
                    .into(),
            ),
        }
        if self.max_packet_size != 0 {
            warn("`bridge_max_packet_size` is ignored: the remote broker's limits apply".into());
        }
        if self.bind_address.is_some() {
            warn("`bridge_bind_address` is ignored: the system picks the source address".into());
        }
        if self.tls.alpn.is_some() {
            warn("`bridge_alpn` is ignored: no ALPN is offered".into());
        }
        let remote_client_id = self
            .remote_clientid
            .clone()
            .unwrap_or_else(|| BridgeConfig::new(&self.name, "", 0).remote_client_id);
        let local_client_id = self
            .local_clientid
            .clone()
            .unwrap_or_else(|| format!("local.{remote_client_id}"));
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        let tls = if self.tls.cafile.is_some() || self.tls.certfile.is_some() {
            let version = match self.tls.version.as_deref() {
                None => None,
                Some("tlsv1.2") => Some(TlsVersion::Tls12),
                Some("tlsv1.3") => Some(TlsVersion::Tls13),
                Some(other) => {
                    return refuse(&format!(
                        "`bridge_tls_version {other}` is not supported (tlsv1.2 or tlsv1.3)"
                    ))
                }
            };
            Some(TlsOptions {
                ca_file: self.tls.cafile.clone(),
                cert: self.tls.certfile.clone(),
                key: self.tls.keyfile.clone(),
                version,
                ..TlsOptions::default()
            })
        } else {
            None
        };
        let config = BridgeConfig {
            name: self.name.clone(),
            addresses: self
                .addresses
                .iter()
                .map(|a| (a.host.clone(), a.port))
                .collect(),
            round_robin: self.round_robin,
            topics: self
                .topics
                .iter()
                .map(|t| lib::BridgeTopic {
                    pattern: t.pattern.clone(),
                    direction: t.direction,
                    qos: t.qos,
                    local_prefix: t.local_prefix.clone().unwrap_or_default(),
                    remote_prefix: t.remote_prefix.clone().unwrap_or_default(),
                })
                .collect(),
            notification_topic: self
                .notification_topic
                .clone()
                .unwrap_or_else(|| lib::notification_topic(&remote_client_id)),
            remote_client_id,
            local_client_id,
            remote_username: self.remote_username.clone(),
            remote_password: self.remote_password.clone(),
            local_username: self.local_username.clone(),
            local_password: self.local_password.clone(),
            clean_session: self.cleansession,
            local_clean_session: self.local_cleansession.unwrap_or(self.cleansession),
            keep_alive: self.keepalive_interval,
            protocol: match self.protocol_version {
                BridgeProtocol::V31 => ProtocolLevel::V31,
                BridgeProtocol::V311 => ProtocolLevel::V311,
                BridgeProtocol::V5 => ProtocolLevel::V5,
            },
            try_private: self.try_private,
            notifications: self.notifications,
            notifications_local_only: self.notifications_local_only,
            restart: match self.restart_timeout {
                RestartTimeout::Constant(s) => lib::RestartTimeout::Constant(secs(s)),
                RestartTimeout::Backoff { base, cap } => lib::RestartTimeout::Backoff {
                    base: secs(base),
                    cap: secs(cap.max(base)),
                },
            },
            outgoing_retain: self.outgoing_retain,
            max_inflight: 1000,
            tls,
        };
        config.validate().map_err(|e| format!("{}: {e}", self.at))?;
        Ok((config, warnings))
    }
}

/// `HOST[:PORT]`; an IPv6 address needs its port (the last `:` separates it, as in Mosquitto).
fn address(line: &Line<'_>, word: &str) -> Result<BridgeAddress, String> {
    let (host, port) = match word.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 => (host, p),
            _ => {
                return Err(line.err(format_args!(
                    "bad bridge address `{word}`: port from 1 to 65535 expected after the last `:`"
                )))
            }
        },
        None => (word, 1883),
    };
    Ok(BridgeAddress {
        host: host.to_string(),
        port,
    })
}

fn restart_timeout(line: &Line<'_>) -> Result<RestartTimeout, String> {
    let seconds = |w: &str| {
        w.parse::<u32>().map_err(|_| {
            line.err(format_args!(
                "`restart_timeout` takes seconds (`CONSTANT` or `BASE CAP`), got `{}`",
                line.rest
            ))
        })
    };
    match line.words()[..] {
        [constant] => Ok(RestartTimeout::Constant(seconds(constant)?)),
        [base, cap] => Ok(RestartTimeout::Backoff {
            base: seconds(base)?,
            cap: seconds(cap)?,
        }),
        _ => Err(line.err("`restart_timeout` takes seconds (`CONSTANT` or `BASE CAP`)")),
    }
}

fn topic(line: &Line<'_>) -> Result<BridgeTopic, String> {
    // The pattern may be `#`; a comment can only start after it.
    let mut all = line.rest.split_whitespace();
    let words: Vec<&str> = all
        .next()
        .into_iter()
        .chain(all.take_while(|w| !w.starts_with('#')))
        .collect();
    let prefix = |i: usize| -> Result<Option<String>, String> {
        match words.get(i) {
            None | Some(&"\"\"") => Ok(None),
            Some(p) if p.contains(['+', '#']) => Err(line.err(format_args!(
                "bridge topic prefix `{p}` must not hold wildcards"
            ))),
            Some(p) => Ok(Some(p.to_string())),
        }
    };
    let Some(&pattern) = words.first() else {
        return Err(line.err("`topic` needs a value"));
    };
    let direction = match words.get(1).map(|d| d.to_ascii_lowercase()).as_deref() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(other) => {
            return Err(line.err(format_args!(
                "bridge topic direction must be in, out or both, got `{other}`"
            )))
        }
    };
    let qos = match words.get(2) {
        None => QoS::AtMostOnce,
        Some(q) => q.parse::<u8>().ok().and_then(QoS::from_u8).ok_or_else(|| {
            line.err(format_args!(
                "bridge topic QoS must be 0, 1 or 2, got `{q}`"
            ))
        })?,
    };
    if words.len() > 5 {
        return Err(line.err(format_args!(
            "`topic` takes at most five words, got `{}`",
            line.rest
        )));
    }
    let topic = BridgeTopic {
        pattern: (pattern != "\"\"").then(|| pattern.to_string()),
        direction,
        qos,
        local_prefix: prefix(3)?,
        remote_prefix: prefix(4)?,
        at: line.at.clone(),
    };
    match &topic.pattern {
        Some(p) => {
            validate_filter(p)
                .map_err(|e| line.err(format_args!("bad bridge topic `{p}`: {e}")))?;
        }
        None if topic.local_prefix.is_none() || topic.remote_prefix.is_none() => {
            return Err(line.err(
                "bridge topic `\"\"` needs both a local and a remote prefix (they name the topic)",
            ))
        }
        None => {}
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> At {
        At {
            file: "b.conf".into(),
            line,
        }
    }

    fn bridge(lines: &[&str]) -> Result<Bridge, String> {
        let first = Line::parse(lines[0], at(1)).unwrap();
        let mut b = Bridge::new(&first)?;
        for (i, text) in lines[1..].iter().enumerate() {
            b.set(&Line::parse(text, at(i + 2)).unwrap())?;
        }
        b.check()?;
        Ok(b)
    }

    #[test]
    fn the_manual_example_reads_with_mosquittos_defaults() {
        let b = bridge(&[
            "connection test-mosquitto-org",
            "address test.mosquitto.org",
            "cleansession true",
            "topic clients/total in 0 test/mosquitto/org/ $SYS/broker/",
        ])
        .unwrap();
        assert_eq!(b.name, "test-mosquitto-org");
        assert_eq!(
            b.addresses,
            [BridgeAddress {
                host: "test.mosquitto.org".into(),
                port: 1883
            }]
        );
        assert!(b.cleansession && b.notifications && b.try_private);
        assert_eq!(b.keepalive_interval, 60);
        assert_eq!(
            b.restart_timeout,
            RestartTimeout::Backoff { base: 5, cap: 30 }
        );
        let t = &b.topics[0];
        assert_eq!(t.pattern.as_deref(), Some("clients/total"));
        assert_eq!((t.direction, t.qos), (Direction::In, QoS::AtMostOnce));
        assert_eq!(t.local_prefix.as_deref(), Some("test/mosquitto/org/"));
        assert_eq!(t.remote_prefix.as_deref(), Some("$SYS/broker/"));
        assert_eq!(t.at, at(4));
    }

    #[test]
    fn every_option_lands_in_its_field() {
        let b = bridge(&[
            "connection cloud",
            "addresses 10.0.0.1:8883 ::1:1884 backup",
            "round_robin true",
            "topic # both 2 \"\" remote/",
            "topic \"\" out 1 local/one remote/one",
            "remote_clientid edge-1",
            "local_clientid local-edge-1",
            "remote_username edge",
            "remote_password s3cret words",
            "local_username bridge",
            "local_password pw",
            "local_cleansession true",
            "keepalive_interval 30",
            "idle_timeout 120",
            "threshold 5",
            "start_type lazy",
            "restart_timeout 20",
            "notifications false",
            "notifications_local_only true",
            "notification_topic bridges/cloud",
            "bridge_protocol_version mqttv50",
            "try_private false",
            "bridge_attempt_unsubscribe false",
            "bridge_outgoing_retain false",
            "bridge_max_packet_size 1000",
            "bridge_bind_address 10.0.0.2",
            "bridge_cafile /etc/ca.pem",
            "bridge_certfile /etc/c.pem",
            "bridge_keyfile /etc/c.key",
            "bridge_insecure true",
            "bridge_tls_version tlsv1.3",
            "bridge_alpn mqtt",
            "bridge_require_ocsp true",
        ])
        .unwrap();
        assert_eq!(b.addresses.len(), 3);
        assert_eq!(
            b.addresses[1],
            BridgeAddress {
                host: "::1".into(),
                port: 1884
            }
        );
        assert_eq!(b.addresses[2].port, 1883);
        assert!(b.round_robin);
        assert_eq!(b.topics[0].pattern.as_deref(), Some("#"));
        assert_eq!(b.topics[0].local_prefix, None);
        assert_eq!(b.topics[1].pattern, None);
        assert_eq!(b.topics[1].qos, QoS::AtLeastOnce);
        assert_eq!(b.remote_password.as_deref(), Some("s3cret words"));
        assert_eq!(b.local_cleansession, Some(true));
        assert_eq!(
            (b.keepalive_interval, b.idle_timeout, b.threshold),
            (30, 120, 5)
        );
        assert_eq!(b.start_type, StartType::Lazy);
        assert_eq!(b.restart_timeout, RestartTimeout::Constant(20));
        assert!(!b.notifications && b.notifications_local_only);
        assert_eq!(b.protocol_version, BridgeProtocol::V5);
        assert!(!b.try_private && !b.attempt_unsubscribe && !b.outgoing_retain);
        assert_eq!(b.max_packet_size, 1000);
        assert!(b.tls.insecure && b.tls.require_ocsp);
        assert_eq!(b.tls.keyfile, Some(PathBuf::from("/etc/c.key")));
    }

    #[test]
    fn mistakes_name_the_line() {
        for (lines, expected) in [
            (&["connection c", "topic a/#"][..], "b.conf:1: bridge `c`: no `address`"),
            (&["connection c", "address h"][..], "b.conf:1: bridge `c`: no `topic`"),
            (
                &["connection c", "address h:0"][..],
                "b.conf:2: bad bridge address `h:0`: port from 1 to 65535 expected after the last `:`",
            ),
            (
                &["connection c", "address h", "topic a sideways"][..],
                "b.conf:3: bridge topic direction must be in, out or both, got `sideways`",
            ),
            (
                &["connection c", "address h", "topic a in 3"][..],
                "b.conf:3: bridge topic QoS must be 0, 1 or 2, got `3`",
            ),
            (
                &["connection c", "address h", "topic \"\" in 0 l/"][..],
                "b.conf:3: bridge topic `\"\"` needs both a local and a remote prefix (they name the topic)",
            ),
            (
                &["connection c", "address h", "topic a/#/b"][..],
                "b.conf:3: bad bridge topic `a/#/b`: ",
            ),
            (
                &["connection c", "bridge_cafile ca.pem", "bridge_psk 0a0b"][..],
                "b.conf:3: a bridge uses certificates or a PSK, not both",
            ),
        ] {
            let err = bridge(lines).unwrap_err();
            assert!(err.starts_with(expected), "{lines:?}: {err}");
        }
    }
}
