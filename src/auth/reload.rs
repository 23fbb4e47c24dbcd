//! Password and ACL files that can be read again while the broker runs (SIGHUP, as Mosquitto
//! does): [`ReloadableAuthenticator`] answers from the files as last read; a file that no
//! longer reads or parses keeps the previous version in use, and the reload says why.
//! Connections already authenticated stay; after a reload,
//! [`crate::broker::BrokerHandle::reauthorize`] applies a changed ACL to the subscriptions
//! that exist.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::{
    AclFile, AuthDecision, AuthExchange, Authenticator, Credentials, FileAuthenticator,
    PasswordFile, SubscribeAccess,
};

/// A [`FileAuthenticator`] read from files, that [`ReloadableAuthenticator::reload`] reads again.
#[derive(Debug)]
pub struct ReloadableAuthenticator {
    current: RwLock<Arc<FileAuthenticator>>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    allow_anonymous: bool,
}

/// Why the files could not be read (the message names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

impl ReloadableAuthenticator {
    pub fn load(
        password_file: Option<PathBuf>,
        acl_file: Option<PathBuf>,
        allow_anonymous: bool,
    ) -> Result<ReloadableAuthenticator, ReloadError> {
        let auth = ReloadableAuthenticator {
            current: RwLock::new(Arc::new(FileAuthenticator::allow_all())),
            password_file,
            acl_file,
            allow_anonymous,
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Starts from `initial`, already read from these files (whose errors the caller reported
    /// its own way).
    pub fn new(
        initial: FileAuthenticator,
        password_file: Option<PathBuf>,
        acl_file: Option<PathBuf>,
    ) -> ReloadableAuthenticator {
        ReloadableAuthenticator {
            allow_anonymous: initial.allow_anonymous,
            current: RwLock::new(Arc::new(initial)),
            password_file,
            acl_file,
        }
    }

    /// Reads the files again; on an error the previous ones stay in use.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let passwords = self
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()
            .map_err(|e| ReloadError(format!("password file: {e}")))?;
        let acl = self
            .acl_file
            .as_deref()
            .map(AclFile::load)
            .transpose()
            .map_err(|e| ReloadError(format!("ACL file: {e}")))?;
        let next = FileAuthenticator {
            passwords,
            allow_anonymous: self.allow_anonymous,
            acl,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn current(&self) -> Arc<FileAuthenticator> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Authenticator for ReloadableAuthenticator {
    fn authenticate(&self, credentials: &Credentials<'_>) -> AuthDecision {
        self.current().authenticate(credentials)
    }

    fn start_exchange(
        &self,
        method: &str,
        credentials: &Credentials<'_>,
    ) -> Option<Box<dyn AuthExchange>> {
        self.current().start_exchange(method, credentials)
    }

    fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.current().can_publish(username, client_id, topic)
    }

    fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        self.current().can_subscribe(username, client_id, filter)
    }

    fn subscribe_access(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> SubscribeAccess {
        self.current().subscribe_access(username, client_id, filter)
    }

    fn can_read(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.current().can_read(username, client_id, topic)
    }

    fn checks_topics(&self) -> bool {
        // An ACL file may appear on a reload only if one was configured.
        self.acl_file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_the_new_files_and_a_bad_one_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("surgemq-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic readwrite a/#\n").unwrap();
        let auth = ReloadableAuthenticator::load(None, Some(acl.clone()), true).unwrap();
        assert!(auth.can_publish(None, "c", "a/x"));
        assert!(!auth.can_publish(None, "c", "b/x"));
        std::fs::write(&acl, "topic readwrite b/#\n").unwrap();
        auth.reload().unwrap();
        assert!(!auth.can_publish(None, "c", "a/x"));
        assert!(auth.can_publish(None, "c", "b/x"));
        std::fs::write(&acl, "topic readwrite b/#\nbroken line\n").unwrap();
        let err = auth.reload().unwrap_err();
        assert!(err.0.starts_with("ACL file: "), "{err}");
        assert!(err.0.contains(":2:"), "names the line: {err}");
        assert!(auth.can_publish(None, "c", "b/x"), "the previous ACL stays");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
