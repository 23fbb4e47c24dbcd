//! Mosquitto's configuration format (mosquitto.conf(5)) for `surgemq serve -c FILE`: an
//! existing Mosquitto configuration, `include_dir` and all, runs as it is or is refused with
//! one line naming the file, the line and the reason.
//!
//! Reading follows Mosquitto 2: one option per line, `#` starts a comment line, string values
//! (paths) run to the end of the line, paths are relative to the working directory, files in
//! an `include_dir` that end in `.conf` are read in Mosquitto's order (case-insensitive, upper
//! case first on a tie) and each starts again in the default listener, and numbers and
//! booleans may be set again (the last one wins) while paths may not. The options read here
//! end up as the keys of the TOML configuration (see [`settings`]), so command-line flags
//! override them exactly as they override a TOML file.
//!
//! Modules: [`line`] (values and errors), [`listener`] (listener sections), [`catalogue`]
//! (options SurgeMQ ignores or refuses), [`bridge`] (bridge sections, turned into the
//! broker's bridges), [`log`] (`log_dest`, `log_type`), [`settings`] (Mosquitto's defaults and the
//! translation).

pub mod bridge;
mod catalogue;
pub mod line;
pub mod listener;
pub mod log;
mod settings;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bridge::{Bridge, BRIDGE_OPTIONS};
use line::{set, At, Line, Set};
use listener::{ListenerSection, Security};
use surgemq::broker::bridge::BridgeConfig;

/// A Mosquitto configuration as read, before Mosquitto's defaults are applied.
#[derive(Debug, Default)]
pub struct MosquittoConf {
    /// Options before the first `listener` line (of each file), `port` and `bind_address`.
    pub default_listener: ListenerSection,
    /// `listener` sections, in the order read.
    pub listeners: Vec<ListenerSection>,
    pub per_listener_settings: Option<Set<bool>>,
    /// Security options with `per_listener_settings false` (the default).
    pub security: Security,
    /// The first security option read, which `per_listener_settings true` must precede.
    first_security: Option<(String, At)>,
    pub persistence: Option<Set<bool>>,
    pub persistence_location: Option<Set<PathBuf>>,
    /// Options that map to one key of the TOML file each, by that key.
    pub keys: BTreeMap<&'static str, Set<toml::Value>>,
    pub max_packet_size: Option<Set<i64>>,
    pub message_size_limit: Option<Set<i64>>,
    pub logging: log::Logging,
    pub bridges: Vec<Bridge>,
    /// Options read and ignored, one line each, naming the place.
    pub warnings: Vec<String>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
    /// What IPv6 the listeners without an address may use; None: this host's
    /// ([`listener::ipv6_support`]). Tests set it.
    pub ipv6: Option<listener::Ipv6Support>,
}

/// Where options of a file go: the listener and bridge sections it opened last.
#[derive(Default)]
struct Cursor {
    listener: Option<usize>,
    bridge: Option<usize>,
}

impl MosquittoConf {
    /// Reads `path` and the files it includes; the first mistake is the error.
    pub fn load(path: &Path) -> Result<MosquittoConf, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("invalid --config: cannot read {}: {e}", path.display()))?;
        MosquittoConf::parse(&text, path)
    }

    /// Reads configuration text as if from `path` (tests give text directly).
    pub fn parse(text: &str, path: &Path) -> Result<MosquittoConf, String> {
        let mut conf = MosquittoConf::default();
        conf.read(path, text, true)?;
        for bridge in &conf.bridges {
            bridge.check()?;
        }
        Ok(conf)
    }

    /// The `connection` sections as the broker's bridges, and warnings about what they
    /// ask for and SurgeMQ ignores.
    pub fn bridge_configs(&self) -> Result<(Vec<BridgeConfig>, Vec<String>), String> {
        let mut configs = Vec::with_capacity(self.bridges.len());
        let mut warnings = Vec::new();
        for bridge in &self.bridges {
            let (config, more) = bridge.to_config()?;
            configs.push(config);
            warnings.extend(more);
        }
        Ok((configs, warnings))
    }

    fn read(&mut self, path: &Path, text: &str, main: bool) -> Result<(), String> {
        self.files.push(path.to_path_buf());
        let file = path.display().to_string();
        let mut cursor = Cursor::default();
        for (i, raw) in text.lines().enumerate() {
            let at = At {
                file: file.clone(),
                line: i + 1,
            };
            if let Some(line) = Line::parse(raw, at) {
                self.option(&line, &mut cursor, main)?;
            }
        }
        Ok(())
    }

    fn section(&mut self, cursor: &Cursor) -> &mut ListenerSection {
        match cursor.listener {
            Some(i) => &mut self.listeners[i],
            None => &mut self.default_listener,
        }
    }

    fn option(&mut self, line: &Line<'_>, cursor: &mut Cursor, main: bool) -> Result<(), String> {
        let key = line.key;
        if BRIDGE_OPTIONS.contains(&key) {
            return match cursor.bridge {
                Some(b) => self.bridges[b].set(line),
                None => Err(line.err(format_args!(
                    "`{key}` is a bridge option: it belongs after a `connection` line"
                ))),
            };
        }
        match key {
            "connection" => {
                let bridge = Bridge::new(line)?;
                if let Some(other) = self.bridges.iter().find(|b| b.name == bridge.name) {
                    return Err(line.err(format_args!(
                        "bridge `{}` is already defined at {}",
                        bridge.name, other.at
                    )));
                }
                self.bridges.push(bridge);
                cursor.bridge = Some(self.bridges.len() - 1);
            }
            "include_dir" if main => self.include_dir(line)?,
            "include_dir" => self.warnings.push(
                line.ignored("Mosquitto reads `include_dir` only in the main configuration file"),
            ),
            "listener" => {
                self.listeners.push(ListenerSection::from_line(line)?);
                cursor.listener = Some(self.listeners.len() - 1);
            }
            "port" => {
                let port = line.int(1, 65535)? as u16;
                set(&mut self.default_listener.port, line, port);
            }
            "bind_address" => {
                let address = line.word()?.to_string();
                set(&mut self.default_listener.address, line, address);
            }
            "per_listener_settings" => {
                let on = line.bool()?;
                if let (true, Some((option, at))) = (on, &self.first_security) {
                    return Err(line.err(format_args!(
                        "`per_listener_settings true` must come before `{option}` ({at})"
                    )));
                }
                set(&mut self.per_listener_settings, line, on);
            }
            "password_file" | "acl_file" | "allow_anonymous" => {
                self.first_security
                    .get_or_insert_with(|| (key.to_string(), line.at.clone()));
                let per_listener = self.per_listener_settings.as_ref().is_some_and(|p| p.value);
                let security = if per_listener {
                    &mut self.section(cursor).security
                } else {
                    &mut self.security
                };
                match key {
                    "password_file" => {
                        line::set_once(&mut security.password_file, line, line.path()?)?
                    }
                    "acl_file" => line::set_once(&mut security.acl_file, line, line.path()?)?,
                    _ => set(&mut security.allow_anonymous, line, line.bool()?),
                }
            }
            "persistence" | "retained_persistence" => {
                set(&mut self.persistence, line, line.bool()?)
            }
            "persistence_location" => {
                line::set_once(&mut self.persistence_location, line, line.path()?)?
            }
            "persistent_client_expiration" => {
                let seconds = expiration(line)?;
                self.key("session-expiry", line, seconds);
            }
            "max_inflight_messages" => {
                // 0 (and Mosquitto's 65535) mean no limit: SurgeMQ's largest window.
                let n = match line.int(-1, 65535)? {
                    n if n <= 0 => 65535,
                    n => n,
                };
                self.key("max-inflight", line, n);
            }
            "max_queued_messages" | "max_queued_bytes" => {
                let n = line.int(i64::MIN, i64::MAX)?;
                if n <= 0 {
                    self.warnings.push(line.err(format_args!(
                        "`{key} {n}` (no limit) is ignored: SurgeMQ keeps every queue bounded, so its default applies (see --max-queued-messages and --max-queued-bytes)"
                    )));
                } else {
                    let toml_key = if key == "max_queued_messages" {
                        "max-queued-messages"
                    } else {
                        "max-queued-bytes"
                    };
                    self.key(toml_key, line, n);
                }
            }
            "max_packet_size" => {
                let max = surgemq::protocol::MAX_REMAINING_LENGTH as i64 + 5;
                set(&mut self.max_packet_size, line, line.int(64, max)?)
            }
            "message_size_limit" => set(
                &mut self.message_size_limit,
                line,
                line.int(0, surgemq::protocol::MAX_REMAINING_LENGTH as i64)?,
            ),
            "max_keepalive" => {
                let seconds = line.int(10, 65535)?;
                self.key("max-keepalive", line, seconds);
            }
            "sys_interval" => {
                let seconds = line.int(0, 65535)?;
                self.key("sys-interval", line, seconds);
            }
            "queue_qos0_messages" => {
                let on = line.bool()?;
                self.key("queue-qos0", line, on);
            }
            "log_dest" => {
                if let Some(warning) = self.logging.dest(line)? {
                    self.warnings.push(warning);
                }
            }
            "log_type" => self.logging.log_type(line)?,
            _ => {
                if !self.section(cursor).set(line)? {
                    if let Some(warning) = catalogue::unimplemented(line)? {
                        self.warnings.push(warning);
                    }
                }
            }
        }
        Ok(())
    }

    fn key(&mut self, key: &'static str, line: &Line<'_>, value: impl Into<toml::Value>) {
        self.keys.insert(
            key,
            Set {
                value: value.into(),
                at: line.at.clone(),
            },
        );
    }

    /// `include_dir DIR`: its files ending in `.conf`, in Mosquitto's order.
    fn include_dir(&mut self, line: &Line<'_>) -> Result<(), String> {
        let dir = line.path()?;
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            line.err(format_args!(
                "cannot read include_dir {}: {e}",
                dir.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() > ".conf".len() && n.ends_with(".conf"))
            .collect();
        names.sort_by(|a, b| mosquitto_order(a, b));
        let main = self.files.first().and_then(|f| f.canonicalize().ok());
        for name in names {
            let path = dir.join(&name);
            if main.is_some() && path.canonicalize().ok() == main {
                return Err(line.err(format_args!(
                    "include_dir {} holds the main configuration file",
                    dir.display()
                )));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| line.err(format_args!("cannot read {}: {e}", path.display())))?;
            self.read(&path, &text, false)?;
        }
        Ok(())
    }
}

/// Mosquitto's include_dir order: letters compared without case, and on a tie the upper case
/// first (`00.conf`, `01.conf`, `A.conf`, `a.conf`, `B.conf`, `b.conf`).
pub fn mosquitto_order(a: &str, b: &str) -> Ordering {
    for (x, y) in a.bytes().zip(b.bytes()) {
        let by_letter = x.to_ascii_uppercase().cmp(&y.to_ascii_uppercase());
        if by_letter != Ordering::Equal {
            return by_letter;
        }
        if x != y {
            return x.cmp(&y);
        }
    }
    a.len().cmp(&b.len())
}

/// `persistent_client_expiration`: a number and h, d, w, m (30 days) or y (365 days).
fn expiration(line: &Line<'_>) -> Result<i64, String> {
    let word = line.word()?;
    let bad = || {
        line.err(format_args!(
            "`persistent_client_expiration` must be a number above 0 followed by h, d, w, m or y (e.g. 14d), got `{word}`"
        ))
    };
    let (number, unit) = word.split_at(word.len().saturating_sub(1));
    let unit = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    match number.parse::<i64>() {
        Ok(n) if n > 0 => n.checked_mul(unit).ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
