//! The optional TOML configuration file of `surgemq serve`. Keys are the flags' names; values
//! are checked for type and range here so a mistake is reported as one line naming the key.

use std::path::{Path, PathBuf};
use surgemq::transport::Listener;

const KNOWN_KEYS: &[&str] = &[
    "listen",
    "shards",
    "connect-timeout",
    "max-inflight",
    "max-packet-size",
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

    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(self.dir.join(s))),
            Some(_) => Err(self.bad(key, "a path string")),
        }
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
