//! Transports under MQTT: TLS ([`tls`]), WebSockets ([`ws`]) and WebSockets over TLS, as one
//! sans-IO [`Layer`] per connection: bytes from the socket in, MQTT bytes and bytes for the
//! socket out; MQTT bytes in, bytes for the socket out. The broker's `Wire` and the client's
//! connection drive it; nothing above them knows which transport a connection uses. Plain TCP
//! has no layer at all, so it keeps its zero-copy paths.

pub mod tls;
pub mod ws;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};

pub use tls::{ClientTls, TlsError, TlsFiles};
pub use ws::{WsCodec, WsError, ANY_PATH};

/// What a listener (or a client) speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP (`mqtt://`, or a bare address).
    Mqtt,
    /// MQTT over TLS (`mqtts://`).
    Mqtts,
    /// MQTT over WebSockets on `path` (`ws://host:port/path`); a listener whose path is
    /// [`ANY_PATH`] (`ws://host:port/*`) takes an upgrade on any path.
    Ws { path: String },
    /// MQTT over WebSockets over TLS (`wss://`).
    Wss { path: String },
}

impl Transport {
    pub fn uses_tls(&self) -> bool {
        matches!(self, Transport::Mqtts | Transport::Wss { .. })
    }

    pub fn ws_path(&self) -> Option<&str> {
        match self {
            Transport::Ws { path } | Transport::Wss { path } => Some(path),
            _ => None,
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Mqtts => "mqtts",
            Transport::Ws { .. } => "ws",
            Transport::Wss { .. } => "wss",
        }
    }
}

/// An address to listen on and what to speak there: `127.0.0.1:1883`, `mqtt://127.0.0.1:1883`,
/// `mqtts://0.0.0.0:8883`, `ws://0.0.0.0:8080/mqtt`, `wss://[::]:8081/mqtt` (WebSocket path
/// `/mqtt` when none is given; `/*` takes any path, as Mosquitto's WebSocket listeners do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// This listener's own TLS settings (a `[[listener]]` table of the config file); None
    /// uses the broker's (`--cert`, `--key`, ...).
    pub tls: Option<TlsFiles>,
}

impl From<SocketAddr> for Listener {
    fn from(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            transport: Transport::Mqtt,
            tls: None,
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.transport.scheme(),
            self.addr,
            self.transport.ws_path().unwrap_or("")
        )
    }
}

impl FromStr for Listener {
    type Err = String;

    fn from_str(s: &str) -> Result<Listener, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("mqtt", s),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let addr: SocketAddr = host.parse().map_err(|_| {
            format!("{s:?}: expected ADDR:PORT or mqtt://, mqtts://, ws://, wss:// with an IP address and port")
        })?;
        let ws_path = || path.unwrap_or("/mqtt").to_string();
        let transport = match scheme {
            "mqtt" | "tcp" => Transport::Mqtt,
            "mqtts" | "ssl" | "tls" => Transport::Mqtts,
            "ws" => Transport::Ws { path: ws_path() },
            "wss" => Transport::Wss { path: ws_path() },
            other => {
                return Err(format!(
                    "{s:?}: unknown scheme {other:?} (mqtt, mqtts, ws, wss)"
                ))
            }
        };
        if path.is_some() && transport.ws_path().is_none() {
            return Err(format!(
                "{s:?}: only ws:// and wss:// listeners have a path"
            ));
        }
        Ok(Listener {
            addr,
            transport,
            tls: None,
        })
    }
}

/// Why a connection's transport cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("TLS: {0}")]
    Io(#[from] std::io::Error),
}

/// What reading some socket bytes led to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// The peer ended the transport (a TLS close_notify or a WebSocket close frame).
    pub closed: bool,
}

/// One connection's transport state; see the module docs.
pub struct Layer {
    /// Boxed: rustls' connection is over 1 KiB inline, which a WebSocket-only connection would
    /// otherwise carry empty for as long as it lives.
    tls: Option<Box<rustls::Connection>>,
    ws: Option<WsCodec>,
    /// TLS plaintext the WebSocket codec has not taken yet (wss), or socket bytes (ws).
    between: BytesMut,
    /// WebSocket frames being built for TLS to encrypt (wss).
    framed: BytesMut,
}

impl Layer {
    pub fn new(tls: Option<rustls::Connection>, ws: Option<WsCodec>) -> Layer {
        Layer {
            tls: tls.map(Box::new),
            ws,
            between: BytesMut::new(),
            framed: BytesMut::new(),
        }
    }

    /// A client's layer: TLS (if given) under a WebSocket upgrade to `ws = (host, path)` (if
    /// given). Returns the layer and the first bytes to send (the TLS ClientHello, or the
    /// upgrade request); MQTT bytes may be emitted at once, they follow the handshakes.
    pub fn client(
        tls: Option<rustls::ClientConnection>,
        ws: Option<(&str, &str)>,
    ) -> Result<(Layer, BytesMut), TransportError> {
        let mut request = BytesMut::new();
        let codec = ws.map(|(host, path)| WsCodec::client(host, path, &mut request));
        let mut layer = Layer::new(tls.map(Into::into), codec);
        let mut first = BytesMut::new();
        match &mut layer.tls {
            Some(tls) => {
                tls.writer().write_all(&request)?;
                while tls.wants_write() {
                    tls.write_tls(&mut (&mut first).writer())?;
                }
            }
            None => first = request,
        }
        Ok((layer, first))
    }

    pub fn tls(&self) -> Option<&rustls::Connection> {
        self.tls.as_deref()
    }

    /// The subject CN of the certificate the peer presented (and TLS verified), if any.
    pub fn peer_identity(&self) -> Option<String> {
        let cert = self.tls.as_ref()?.peer_certificates()?.first()?;
        tls::common_name(cert)
    }

    /// Whether the transport's own handshake (TLS, WebSocket upgrade) is still going on.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
            || self.ws.as_ref().is_some_and(|w| !w.is_open())
    }

    /// Whether the layer holds nothing half-done: a connection may then park and let its
    /// buffers go.
    pub fn is_idle(&self) -> bool {
        self.between.is_empty()
            && self.ws.as_ref().is_none_or(WsCodec::is_idle)
            && self.tls.as_ref().is_none_or(|t| !t.wants_write())
    }

    /// Lets go of empty buffers (an idle connection keeps none).
    pub fn release_buffers(&mut self) {
        if self.between.is_empty() {
            self.between = BytesMut::new();
        }
        self.framed = BytesMut::new();
    }

    /// Takes `input` (bytes read from the socket): MQTT bytes are appended to `app`, bytes
    /// owed to the peer (handshake, pong, alerts) to `out`. On an error, `out` may hold the
    /// peer's last words (a TLS alert, an HTTP error) worth sending before closing.
    pub fn ingest(
        &mut self,
        mut input: &[u8],
        app: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Ingested, TransportError> {
        let mut result = Ingested::default();
        let Some(tls) = &mut self.tls else {
            if let Some(ws) = &mut self.ws {
                self.between.extend_from_slice(input);
                result.closed = ws.ingest(&mut self.between, app, out)?.closed;
            } else {
                app.extend_from_slice(input);
            }
            return Ok(result);
        };
        let mut plain = [0u8; 8192];
        while !input.is_empty() {
            tls.read_tls(&mut input)?;
            if let Err(e) = tls.process_new_packets() {
                // The alert rustls queued tells the peer why.
                let _ = tls.write_tls(&mut out.writer());
                return Err(e.into());
            }
            loop {
                match tls.reader().read(&mut plain) {
                    Ok(0) => {
                        result.closed = true;
                        break;
                    }
                    Ok(n) => match &self.ws {
                        Some(_) => self.between.extend_from_slice(&plain[..n]),
                        None => app.extend_from_slice(&plain[..n]),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(ws) = &mut self.ws {
            self.framed.clear();
            let got = ws.ingest(&mut self.between, app, &mut self.framed);
            if !self.framed.is_empty() {
                tls.writer().write_all(&self.framed)?;
            }
            result.closed |= got?.closed;
        }
        while tls.wants_write() {
            tls.write_tls(&mut out.writer())?;
        }
        Ok(result)
    }

    /// Wraps MQTT bytes for the socket: WebSocket frames, then TLS records.
    pub fn emit(&mut self, app: &[u8], out: &mut BytesMut) -> Result<(), TransportError> {
        let framed: &[u8] = match &mut self.ws {
            Some(ws) => {
                self.framed.clear();
                ws.emit(app, &mut self.framed);
                &self.framed
            }
            None => app,
        };
        match &mut self.tls {
            // rustls takes at most its buffer limit (64 KiB) at a time: encrypt piece by piece.
            Some(tls) => {
                let mut rest = framed;
                while !rest.is_empty() {
                    let taken = tls.writer().write(rest)?;
                    rest = &rest[taken..];
                    let drained = tls.wants_write();
                    while tls.wants_write() {
                        tls.write_tls(&mut out.writer())?;
                    }
                    if taken == 0 && !drained {
                        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                    }
                }
            }
            None => out.extend_from_slice(framed),
        }
        Ok(())
    }

    /// Says goodbye the transport's way (a WebSocket close frame, a TLS close_notify).
    pub fn close(&mut self, out: &mut BytesMut) {
        if let Some(ws) = &mut self.ws {
            self.framed.clear();
            ws.close(&mut self.framed);
            let framed = std::mem::take(&mut self.framed);
            match &mut self.tls {
                Some(tls) => {
                    let _ = tls.writer().write_all(&framed);
                }
                None => out.extend_from_slice(&framed),
            }
        }
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut out.writer()).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
