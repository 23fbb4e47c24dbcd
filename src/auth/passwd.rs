//! Password files in Mosquitto's format, so users can bring the files `mosquitto_passwd` wrote.
//!
//! One `user:hash` entry per line. Hashes are `$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512,
//! what Mosquitto 2 writes) or `$6$SALT$HASH` (one round of SHA-512 over password then salt,
//! Mosquitto 1.6 and earlier); salt and hash in standard base64. Comparison is constant-time.

use std::fmt::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// What Mosquitto 2 uses; kept so files we write are indistinguishable from its own.
pub const PBKDF2_ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswdError {
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: &'static str,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("user names may not be empty or contain ':'")]
    BadUsername,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, &'static str> {
        let parts: Vec<&str> = s.split('$').collect();
        let b64 = |p: &str| {
            BASE64
                .decode(p)
                .map_err(|_| "salt or hash is not valid base64")
        };
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations.parse().map_err(|_| "bad iteration count")?;
                if iterations == 0 {
                    return Err("bad iteration count");
                }
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt: b64(salt)?,
                    hash: b64(hash)?,
                })
            }
            ["", "6", salt, hash] => Ok(Hash::Sha512 {
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            _ => Err("unknown hash format (expected $7$ or $6$)"),
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out
            }
            Hash::Sha512 { salt, .. } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().to_vec()
            }
        };
        let expected = match self {
            Hash::Pbkdf2 { hash, .. } | Hash::Sha512 { hash, .. } => hash,
        };
        computed.len() == expected.len() && bool::from(computed.ct_eq(expected))
    }

    fn new_pbkdf2(password: &[u8]) -> Hash {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).expect("the OS random source works");
        let mut hash = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, PBKDF2_ITERATIONS, &mut hash);
        Hash::Pbkdf2 {
            iterations: PBKDF2_ITERATIONS,
            salt,
            hash,
        }
    }

    fn encode(&self) -> String {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                BASE64.encode(salt),
                BASE64.encode(hash)
            ),
            Hash::Sha512 { salt, hash } => {
                format!("$6${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
        }
    }
}

/// The users of a password file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    entries: Vec<(String, Hash)>,
}

impl PasswordFile {
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswdError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a password file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, PasswdError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| PasswdError::Parse {
                path: origin.to_string(),
                line: i + 1,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            let hash = Hash::parse(hash).map_err(err)?;
            entries.push((user.to_string(), hash));
        }
        Ok(PasswordFile { entries })
    }

    /// Whether `user` exists and `password` is theirs. Unknown users cost a hash too, so that
    /// timing does not tell which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.entries.iter().find(|(u, _)| u == user) {
            Some((_, hash)) => hash.verify(password),
            None => {
                let mut sink = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(
                    password,
                    b"unknown-user",
                    PBKDF2_ITERATIONS,
                    &mut sink,
                );
                false
            }
        }
    }

    pub fn contains(&self, user: &str) -> bool {
        self.entries.iter().any(|(u, _)| u == user)
    }

    /// Adds `user` or replaces their password, hashing it as Mosquitto 2 does.
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswdError> {
        if user.is_empty() || user.contains(':') {
            return Err(PasswdError::BadUsername);
        }
        let hash = Hash::new_pbkdf2(password);
        match self.entries.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = hash,
            None => self.entries.push((user.to_string(), hash)),
        }
        Ok(())
    }

    /// Removes `user`; returns whether they existed.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        before != self.entries.len()
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (user, hash) in &self.entries {
            let _ = writeln!(out, "{user}:{}", hash.encode());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `mosquitto_passwd -b -c pw alice secret` (Mosquitto 2.0.11).
    const MOSQUITTO_LINE: &str = "alice:$7$101$0u8Ps6XiQgkLFM7c$+SXCeTw2apKMJPe9DtX9I4v8IeiWIJoKYciU1HNQPH6g/SLySygVDz/wdx1hn5JURiWIziCzK/my5a3SPipi3w==";

    #[test]
    fn verifies_a_mosquitto_pbkdf2_hash() {
        let file = PasswordFile::parse(MOSQUITTO_LINE, "pw").unwrap();
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("bob", b"secret"));
    }

    #[test]
    fn verifies_an_old_sha512_hash() {
        // $6$: SHA-512 over password then salt; salt "salt", password "pw".
        let mut h = Sha512::new();
        h.update(b"pw");
        h.update(b"salt");
        let line = format!(
            "u:$6${}${}",
            BASE64.encode(b"salt"),
            BASE64.encode(h.finalize())
        );
        let file = PasswordFile::parse(&line, "pw").unwrap();
        assert!(file.verify("u", b"pw"));
        assert!(!file.verify("u", b"px"));
    }

    #[test]
    fn set_writes_what_verify_accepts_and_round_trips() {
        let mut file = PasswordFile::default();
        file.set("bob", b"p@ss:w0rd").unwrap();
        file.set("carol", b"x").unwrap();
        file.set("bob", b"new").unwrap();
        let text = file.to_text();
        assert!(text.starts_with("bob:$7$101$"), "{text}");
        let mut again = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(again, file);
        assert!(again.verify("bob", b"new"));
        assert!(!again.verify("bob", b"p@ss:w0rd"));
        assert!(again.remove("carol"));
        assert!(!again.contains("carol"));
        assert_eq!(file.set("a:b", b"x"), Err(PasswdError::BadUsername));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = PasswordFile::parse("# comment\n\nalice:$5$x$y\n", "users.pw").unwrap_err();
        assert_eq!(
            err.to_string(),
            "users.pw:3: unknown hash format (expected $7$ or $6$)"
        );
        let err = PasswordFile::parse("nocolon\n", "f").unwrap_err();
        assert_eq!(err.to_string(), "f:1: expected user:hash");
        let err = PasswordFile::parse("a:$7$x$AAAA$AAAA\n", "f").unwrap_err();
        assert_eq!(err.to_string(), "f:1: bad iteration count");
    }
}
