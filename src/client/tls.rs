//! TLS settings of a client ([`TlsOptions`]) and the rustls configuration they make. Built here
//! rather than by `transport::tls::client_config` because a client may pin the TLS version
//! (`--tls-version`) and fall back to the operating system's CA certificates; the PEM loading
//! is the transport layer's, so a bad file is reported the same way everywhere.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::error::ClientError;
use crate::transport::tls::{load_certs, load_key, AcceptAnyServer};

/// A TLS protocol version a client can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// How a client checks the server and proves itself, for `mqtts://` and `wss://`
/// ([`ClientOptions::transport`](super::ClientOptions::transport)). The default checks the
/// server's certificate against the operating system's CA certificates and the host name.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA certificates that sign the server's certificate. `None`: the
    /// operating system's CA certificates (or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain (the client's own first) for servers that ask for one; needs
    /// `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (a DNS name or an IP address).
    /// `None`: the host connected to.
    pub server_name: Option<String>,
    /// Only this TLS version. `None`: 1.2 or 1.3, 1.3 preferred.
    pub version: Option<TlsVersion>,
    /// Accept any server certificate, for any name. Only for tests: it defeats the point of
    /// TLS.
    pub insecure: bool,
    /// A configuration the application built itself (its own verifier, ALPN, key logging...).
    /// When set it is used as it is: `ca_file`, `cert`, `key`, `version` and `insecure` are
    /// not looked at.
    pub config: Option<Arc<ClientConfig>>,
}

impl TlsOptions {
    /// Whether anything differs from the default (for `validate`: TLS settings on a
    /// connection without TLS are a mistake worth reporting).
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some()
            || self.version.is_some()
            || self.insecure
            || self.config.is_some()
    }

    /// The rustls configuration these options describe: the files are read now, and a file
    /// that cannot be read or holds nothing usable is an [`ClientError::Invalid`] naming the
    /// option (`tls ca_file`, `tls cert`, `tls key`) and the file. `Client::connect` calls
    /// it once per client; reconnects reuse the result (and its TLS session cache).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.version {
            None => rustls::DEFAULT_VERSIONS,
            Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| ClientError::invalid("tls", e))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let certs = load_certs(cert).map_err(|e| ClientError::invalid("tls cert", e))?;
                let key_der = load_key(key).map_err(|e| ClientError::invalid("tls key", e))?;
                builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                    ClientError::invalid(
                        "tls key",
                        format!("{}: does not fit the certificate: {e}", key.display()),
                    )
                })?
            }
            (Some(_), None) => return Err(ClientError::invalid("tls key", "cert needs a key")),
            (None, Some(_)) => return Err(ClientError::invalid("tls cert", "key needs a cert")),
            (None, None) => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, ClientError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(ca) => {
                let invalid = |e: &dyn std::fmt::Display| ClientError::invalid("tls ca_file", e);
                for cert in load_certs(ca).map_err(|e| invalid(&e))? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid(&format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                // Certificates rustls cannot use are skipped, as browsers skip them.
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(ClientError::invalid(
                        "tls ca_file",
                        format!("none given and no CA certificate found on this system{why}"),
                    ));
                }
            }
        }
        Ok(roots)
    }

    /// The name to check the server's certificate against: `server_name`, or `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, ClientError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string()).map_err(|e| {
            let what = if self.server_name.is_some() {
                "tls server_name"
            } else {
                "host"
            };
            ClientError::invalid(
                what,
                format!("{name:?} is not a valid TLS server name: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for "localhost" and its key, as PEM files.
    fn test_cert(name: &str) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("surgemq-client-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn configs_for_each_version_and_mode() {
        let (cert, key) = test_cert("modes");
        for version in [None, Some(TlsVersion::Tls12), Some(TlsVersion::Tls13)] {
            for insecure in [false, true] {
                let options = TlsOptions {
                    ca_file: Some(cert.clone()),
                    cert: Some(cert.clone()),
                    key: Some(key.clone()),
                    version,
                    insecure,
                    ..TlsOptions::default()
                };
                options.client_config().unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(cert.parent().unwrap());
    }

    #[test]
    fn bad_files_name_the_option_and_the_file() {
        let (cert, key) = test_cert("bad");
        let junk = cert.with_file_name("junk.pem");
        std::fs::write(&junk, "junk\n").unwrap();
        let cases = [
            (
                TlsOptions {
                    ca_file: Some(junk.clone()),
                    ..TlsOptions::default()
                },
                "tls ca_file",
            ),
            (
                TlsOptions {
                    ca_file: Some(cert.clone()),
                    cert: Some(junk.clone()),
                    key: Some(key.clone()),
                    ..TlsOptions::default()
                },
                "tls cert",
            ),
            (
                TlsOptions {
                    ca_file: Some(cert.clone()),
                    cert: Some(cert.clone()),
                    key: Some(junk.clone()),
                    ..TlsOptions::default()
                },
                "tls key",
            ),
        ];
        for (options, option) in cases {
            match options.client_config().unwrap_err() {
                ClientError::Invalid { what, reason } => {
                    assert_eq!(what, option);
                    assert!(reason.starts_with(&junk.display().to_string()), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(cert.parent().unwrap());
    }

    #[test]
    fn an_application_config_is_used_as_it_is() {
        let (cert, _) = test_cert("own");
        let own = TlsOptions {
            ca_file: Some(cert.clone()),
            ..TlsOptions::default()
        }
        .client_config()
        .unwrap();
        let _ = std::fs::remove_dir_all(cert.parent().unwrap());
        let options = TlsOptions {
            // Not read: the configuration is there already.
            ca_file: Some("/nonexistent.pem".into()),
            config: Some(own.clone()),
            ..TlsOptions::default()
        };
        assert!(Arc::ptr_eq(&options.client_config().unwrap(), &own));
    }

    #[test]
    fn server_name_defaults_to_the_host() {
        let o = TlsOptions::default();
        assert_eq!(
            o.server_name("127.0.0.1").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        let o = TlsOptions {
            server_name: Some("broker.example".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            o.server_name("10.0.0.1").unwrap(),
            ServerName::try_from("broker.example").unwrap()
        );
    }
}
