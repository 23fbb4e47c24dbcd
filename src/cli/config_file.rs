//! The optional TOML configuration file of `surgemq serve`. Keys are the flags' names; values
//! are checked for type and range here so a mistake is reported as one line naming the key.

use std::path::{Path, PathBuf};
use surgemq::broker::bridge::BridgeConfig;
use surgemq::transport::{Listener, TlsFiles};

use super::mosquitto_conf::bridge::Bridge;

const KNOWN_KEYS: &[&str] = &[
    "listen",
    "shards",
    "connect-timeout",
    "max-inflight",
    "max-packet-size",
    "receive-maximum",
    "max-topic-alias",
    "max-keepalive",
    "shared-strategy",
    "sys-interval",
    "shared-redispatch",
    "response-information",
    "max-queued-messages",
    "max-queued-bytes",
    "stall-timeout",
    "max-topic-levels",
    "max-connections",
    "queue-qos0",
    "session-expiry",
    "password-file",
    "allow-anonymous",
    "acl-file",
    "spin-us",
    "park-idle-after",
    "data-dir",
    "sync-interval-ms",
    "cert",
    "key",
    "ca-file",
    "require-certificate",
    "use-identity-as-username",
    "listener",
    "metrics-listen",
    "bridge",
    "cluster",
    "node-id",
    "cluster-queue-copies",
    "cluster-queue-copies-wait",
    "cluster-online-copies",
];

/// Keys of a `[[listener]]` table: its URL and its own TLS settings.
const LISTENER_KEYS: &[&str] = &[
    "url",
    "cert",
    "key",
    "ca-file",
    "require-certificate",
    "use-identity-as-username",
];

#[derive(Debug, Default)]
pub struct ConfigFile {
    origin: String,
    table: toml::Table,
    /// Relative paths in the file are relative to the file's directory.
    dir: PathBuf,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("invalid --config: cannot read {}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        ConfigFile::parse(&text, &path.display().to_string(), dir)
    }

    pub fn parse(text: &str, origin: &str, dir: PathBuf) -> Result<ConfigFile, String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{origin}: {}", e.message()))?;
        if let Some(key) = table.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(format!("{origin}: unknown key `{key}`"));
        }
        Ok(ConfigFile {
            origin: origin.to_string(),
            table,
            dir,
        })
    }

    /// Settings read from another format (a Mosquitto configuration file) as TOML keys.
    pub fn from_table(table: toml::Table, origin: &str, dir: PathBuf) -> ConfigFile {
        ConfigFile {
            origin: origin.to_string(),
            table,
            dir,
        }
    }

    fn bad(&self, key: &str, expected: &str) -> String {
        format!("{}: key `{key}` must be {expected}", self.origin)
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(_) => Err(self.bad(key, "a non-negative integer")),
        }
    }

    pub fn u16(&self, key: &str) -> Result<Option<u16>, String> {
        match self.u64(key)? {
            Some(v) if v > u64::from(u16::MAX) => Err(self.bad(key, "an integer up to 65535")),
            v => Ok(v.map(|v| v as u16)),
        }
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>, String> {
        Ok(self.u64(key)?.map(|v| v as usize))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "true or false")),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, String> {
        match self.string(key)? {
            Some(s) if !allowed.contains(&s.as_str()) => {
                Err(self.bad(key, &format!("one of {}", allowed.join(", "))))
            }
            s => Ok(s),
        }
    }

    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(self.dir.join(s))),
            Some(_) => Err(self.bad(key, "a path string")),
        }
    }

    /// A string or an array of strings (e.g. `cluster = ["nats://a:4222", "nats://b:4222"]`).
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a string or an array of strings")),
            Some(_) => Err(self.bad(key, "a string or an array of strings")),
        }
    }

    /// The `[[bridge]]` tables: `name` and Mosquitto's bridge options (see
    /// `mosquitto_conf::bridge`), e.g. `address = "10.0.0.1:1883"`, `topic = ["# out 1"]`.
    pub fn bridges(&self) -> Result<Vec<BridgeConfig>, String> {
        let Some(value) = self.table.get("bridge") else {
            return Ok(Vec::new());
        };
        let Some(tables) = value.as_array() else {
            return Err(self.bad("bridge", "an array of tables ([[bridge]])"));
        };
        let mut out = Vec::with_capacity(tables.len());
        for (i, table) in tables.iter().enumerate() {
            let Some(table) = table.as_table() else {
                return Err(self.bad("bridge", "an array of tables ([[bridge]])"));
            };
            let origin = format!("{} [[bridge]] #{}", self.origin, i + 1);
            let (config, warnings) = Bridge::from_toml(table, &origin)?.to_config()?;
            if let Some(w) = warnings.first() {
                // A TOML file is SurgeMQ's own: what it cannot do is a mistake, not a warning.
                return Err(w.clone());
            }
            out.push(config);
        }
        Ok(out)
    }

    /// The `[[listener]]` tables: each a URL with, optionally, its own TLS settings.
    pub fn listeners(&self) -> Result<Vec<Listener>, String> {
        let Some(value) = self.table.get("listener") else {
            return Ok(Vec::new());
        };
        let Some(tables) = value.as_array() else {
            return Err(self.bad("listener", "an array of tables ([[listener]])"));
        };
        let mut out = Vec::with_capacity(tables.len());
        for (i, t) in tables.iter().enumerate() {
            let Some(table) = t.as_table() else {
                return Err(self.bad("listener", "an array of tables ([[listener]])"));
            };
            let one = ConfigFile {
                origin: format!("{} [[listener]] #{}", self.origin, i + 1),
                table: table.clone(),
                dir: self.dir.clone(),
            };
            if let Some(key) = table.keys().find(|k| !LISTENER_KEYS.contains(&k.as_str())) {
                return Err(format!("{}: unknown key `{key}`", one.origin));
            }
            let mut listener: Listener = match table.get("url").and_then(|v| v.as_str()) {
                Some(url) => url
                    .parse()
                    .map_err(|e| format!("{}: key `url`: {e}", one.origin))?,
                None => return Err(one.bad("url", "a listener URL like \"mqtts://0.0.0.0:8883\"")),
            };
            let cert = one.path("cert")?;
            let key = one.path("key")?;
            listener.tls = match (cert, key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    ca_file: one.path("ca-file")?,
                    require_certificate: one.bool("require-certificate")?.unwrap_or(false),
                    use_identity_as_username: one
                        .bool("use-identity-as-username")?
                        .unwrap_or(false),
                }),
                _ => return Err(one.bad("cert", "given with `key` (both or neither)")),
            };
            out.push(listener);
        }
        Ok(out)
    }

    pub fn listen(&self) -> Result<Option<Vec<Listener>>, String> {
        let expected = "an address string or a list of them, like \"127.0.0.1:1883\" or \"wss://0.0.0.0:8081/mqtt\"";
        let one = |v: &toml::Value| -> Result<Listener, String> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad("listen", expected))
        };
        match self.table.get("listen") {
            None => Ok(None),
            Some(toml::Value::Array(items)) => {
                items.iter().map(one).collect::<Result<_, _>>().map(Some)
            }
            Some(v) => Ok(Some(vec![one(v)?])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_tables_have_their_own_tls() {
        let f = parse(
            "[[listener]]\nurl = \"mqtts://0.0.0.0:8883\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             ca-file = \"ca.pem\"\nrequire-certificate = true\n\
             [[listener]]\nurl = \"ws://0.0.0.0:8080/mqtt\"\n",
        )
        .unwrap();
        let l = f.listeners().unwrap();
        assert_eq!(l.len(), 2);
        let tls = l[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/surgemq/a.pem"));
        assert!(tls.require_certificate && !tls.use_identity_as_username);
        assert_eq!(l[1].tls, None);
        let err = parse("[[listener]]\nurl = \"mqtts://1.2.3.4:1\"\ncert = \"a\"\n")
            .unwrap()
            .listeners()
            .unwrap_err();
        assert!(
            err.contains("[[listener]] #1") && err.contains("`cert`"),
            "{err}"
        );
        let err = parse("[[listener]]\nurl = \"mqtt://1.2.3.4:1\"\nport = 3\n")
            .unwrap()
            .listeners()
            .unwrap_err();
        assert!(err.contains("unknown key `port`"), "{err}");
    }

    fn parse(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(text, "broker.toml", PathBuf::from("/etc/surgemq"))
    }

    #[test]
    fn reads_every_kind_of_value() {
        let f = parse(
            r#"
listen = ["127.0.0.1:1884", "[::1]:1884"]
shards = 2
queue-qos0 = true
password-file = "users.pw"
"#,
        )
        .unwrap();
        assert_eq!(f.listen().unwrap().unwrap().len(), 2);
        assert_eq!(f.usize("shards").unwrap(), Some(2));
        assert_eq!(f.usize("max-inflight").unwrap(), None);
        assert_eq!(f.bool("queue-qos0").unwrap(), Some(true));
        assert_eq!(
            f.path("password-file").unwrap(),
            Some(PathBuf::from("/etc/surgemq/users.pw"))
        );
    }

    #[test]
    fn strings_and_choices() {
        let f = parse("response-information = \"r/%c/\"\nshared-strategy = \"fastest\"\n").unwrap();
        assert_eq!(
            f.string("response-information").unwrap().as_deref(),
            Some("r/%c/")
        );
        let err = f
            .choice("shared-strategy", &["round-robin", "random"])
            .unwrap_err();
        assert_eq!(
            err,
            "broker.toml: key `shared-strategy` must be one of round-robin, random"
        );
        assert!(f.string("shards").unwrap().is_none());
        assert!(parse("shards = 2\n").unwrap().string("shards").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            parse("shards = \"two\"")
                .unwrap()
                .usize("shards")
                .unwrap_err(),
            "broker.toml: key `shards` must be a non-negative integer"
        );
        assert_eq!(
            parse("max-inflite = 3").unwrap_err(),
            "broker.toml: unknown key `max-inflite`"
        );
        assert!(parse("listen = \"nowhere\"")
            .unwrap()
            .listen()
            .unwrap_err()
            .contains("`listen`"));
        assert!(parse("shards = ").unwrap_err().starts_with("broker.toml: "));
    }
}
