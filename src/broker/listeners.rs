//! What each listen address speaks (`transport::Listener`), the TLS settings shared by the
//! TLS listeners (re-read on demand, e.g. on SIGHUP, without touching open connections), and
//! the accept loop that gives every new socket its transport layer.

use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_lite::StreamExt;
use glommio::net::TcpListener;
use rustls::ServerConfig;
use tracing::{info, warn};

use super::shard::Shard;
use super::wire::Layered;
use crate::transport::tls::server_config;
use crate::transport::{Layer, TlsError, TlsFiles, Transport, WsCodec};

/// The TLS settings of the broker's TLS listeners: loaded at start, replaced by [`reload`].
/// New connections use the current settings; open ones keep theirs.
///
/// [`reload`]: TlsSettings::reload
#[derive(Debug)]
pub struct TlsSettings {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsSettings {
    pub fn load(files: &TlsFiles) -> Result<TlsSettings, TlsError> {
        Ok(TlsSettings {
            files: files.clone(),
            current: RwLock::new(server_config(files)?),
        })
    }

    /// Reads the certificate, key and CA files again. On an error the old settings stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.files)?;
        *self.current.write().expect("not poisoned") = fresh;
        info!(cert = %self.files.cert.display(), "TLS certificate and key reloaded");
        Ok(())
    }

    pub fn identity_as_username(&self) -> bool {
        self.files.use_identity_as_username
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("not poisoned").clone()
    }
}

/// One listen address's transport, with what it needs to serve a new socket.
pub struct ListenerSpec {
    pub transport: Transport,
    pub tls: Option<Arc<TlsSettings>>,
    /// The CN of a TLS client's certificate is its user name (`--use-identity-as-username`).
    pub identity_as_username: bool,
}

impl ListenerSpec {
    /// The transport layer for a new socket (None: plain MQTT over TCP).
    pub fn layer(&self) -> Result<Option<Box<Layered>>, rustls::Error> {
        let tls = match (&self.tls, self.transport.uses_tls()) {
            (Some(settings), true) => {
                Some(rustls::ServerConnection::new(settings.current())?.into())
            }
            _ => None,
        };
        let ws = self.transport.ws_path().map(WsCodec::server);
        if tls.is_none() && ws.is_none() {
            return Ok(None);
        }
        Ok(Some(Layered::new(Layer::new(tls, ws))))
    }
}

/// Accepts sockets on one listener for as long as the shard runs.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, spec: Rc<ListenerSpec>) {
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        match stream {
            Ok(stream) => {
                let serve = super::connection::serve_accepted(shard.clone(), stream, spec.clone());
                glommio::spawn_local(serve).detach();
            }
            Err(e) => {
                // EMFILE and friends: keep accepting once resources free up.
                warn!(shard = shard.id.0, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
