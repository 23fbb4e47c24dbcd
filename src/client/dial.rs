//! What a client needs to open its transport again and again: the TLS configuration (files
//! read once, so a reconnect neither rereads them nor fails on them, and TLS sessions resume)
//! and the WebSocket upgrade's host and path. Plain TCP needs nothing: no layer at all.
//! Cheap to clone and `Send`, so a load generator can build one and share it across threads.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;

use super::error::ClientError;
use super::options::ClientOptions;
use super::tls::TlsOptions;
use crate::transport::{Layer, Transport};

#[derive(Clone)]
pub(crate) struct Dialer {
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The Host header and the path of the WebSocket upgrade.
    ws: Option<(String, String)>,
}

impl Dialer {
    /// Reads the TLS files; errors name the option and the file.
    pub fn new(options: &ClientOptions) -> Result<Dialer, ClientError> {
        Dialer::for_target(
            &options.host,
            options.port,
            &options.transport,
            &options.tls,
        )
    }

    /// The same without the rest of a client's options.
    pub fn for_target(
        host: &str,
        port: u16,
        transport: &Transport,
        tls: &TlsOptions,
    ) -> Result<Dialer, ClientError> {
        let tls = if transport.uses_tls() {
            Some((tls.client_config()?, tls.server_name(host)?))
        } else {
            None
        };
        let ws = transport.ws_path().map(|path| {
            let host = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            (host, path.to_string())
        });
        Ok(Dialer { tls, ws })
    }

    /// Whether connections need a transport layer (anything but plain TCP).
    pub fn layered(&self) -> bool {
        self.tls.is_some() || self.ws.is_some()
    }

    /// A fresh layer for a new connection, and the first bytes to send on it: the TLS
    /// ClientHello, or the WebSocket upgrade request when there is no TLS (over TLS the
    /// upgrade request waits inside rustls until the handshake is done).
    pub fn layer(&self) -> Result<(Layer, BytesMut), ClientError> {
        let tls = match &self.tls {
            Some((config, name)) => {
                let mut tls = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(ClientError::Tls)?;
                // `Layer::emit` hands rustls a whole write buffer at once (up to the
                // connection's high-water mark plus one packet, which may be large) and drains
                // it right after; with rustls' default 64 KiB limit a bigger write is cut
                // short (WriteZero).
                tls.set_buffer_limit(None);
                Some(tls)
            }
            None => None,
        };
        let ws = self.ws.as_ref().map(|(h, p)| (h.as_str(), p.as_str()));
        Ok(Layer::client(tls, ws)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{TlsOptions, Transport};

    fn dialer(host: &str, transport: Transport) -> Dialer {
        let tls = TlsOptions {
            insecure: transport.uses_tls(),
            ..TlsOptions::default()
        };
        Dialer::new(&ClientOptions {
            transport,
            tls,
            ..ClientOptions::new(host, 1883)
        })
        .unwrap()
    }

    #[test]
    fn plain_tcp_has_no_layer() {
        assert!(!dialer("h", Transport::Mqtt).layered());
    }

    #[test]
    fn websocket_upgrade_goes_first_in_the_clear() {
        let path = "/ws/mqtt".to_string();
        let (layer, first) = dialer("broker.local", Transport::Ws { path })
            .layer()
            .unwrap();
        let head = std::str::from_utf8(&first).unwrap();
        assert!(head.starts_with("GET /ws/mqtt HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nHost: broker.local:1883\r\n"), "{head}");
        assert!(head.contains("Sec-WebSocket-Protocol: mqtt"), "{head}");
        assert!(layer.handshaking());
        let (_, first) = dialer("::1", Transport::Ws { path: "/".into() })
            .layer()
            .unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .contains("\r\nHost: [::1]:1883\r\n"));
    }

    #[test]
    fn over_tls_the_client_hello_goes_first_and_the_upgrade_waits() {
        for transport in [Transport::Mqtts, Transport::Wss { path: "/m".into() }] {
            let (layer, first) = dialer("localhost", transport.clone()).layer().unwrap();
            // A TLS handshake record: the ClientHello.
            assert_eq!(first[0], 0x16, "{transport:?}");
            assert!(
                !first.windows(4).any(|w| w == b"GET "),
                "{transport:?}: the upgrade request waits for the handshake"
            );
            assert!(layer.handshaking());
            assert!(layer.tls().is_some());
        }
    }
}
