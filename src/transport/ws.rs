//! MQTT over WebSockets (RFC 6455), sans-IO: bytes from the peer in, MQTT bytes and bytes to
//! send back out. The opening handshake is an HTTP/1.1 upgrade on the configured path with the
//! `mqtt` subprotocol (`mqttv3.1` too, as older clients ask for it); then MQTT travels in binary
//! frames. A packet may span frames and a frame may hold several packets, so frame payloads
//! are streamed into the MQTT buffer as they arrive, never gathered whole. Pings are answered,
//! a close frame is answered and ends the connection; a text frame, an unmasked frame from a
//! client, reserved bits, an oversized control frame or a frame longer than 2^31 bytes are
//! protocol errors. Header parsing and the accept key come from `tungstenite`.

use std::io::Cursor;

use bytes::{Buf, BufMut, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The largest HTTP request (or response) head accepted during the handshake.
const MAX_HANDSHAKE: usize = 8 * 1024;
/// The longest frame accepted: MQTT's own packets are at most 256 MiB.
const MAX_FRAME: u64 = 1 << 31;
/// A server path that takes an upgrade on any request path, as Mosquitto (libwebsockets)
/// does: `ws://0.0.0.0:8080/*`, and every `protocol websockets` listener of a mosquitto.conf.
pub const ANY_PATH: &str = "/*";
/// Subprotocols we speak, in our order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a WebSocket connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The upgrade request was refused with this HTTP status (already queued for the peer).
    #[error("WebSocket handshake refused with HTTP {status}: {why}")]
    Refused { status: u16, why: &'static str },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(&'static str),
    /// The server answered the upgrade with another status (404 for a wrong path, ...).
    #[error(
        "WebSocket handshake failed: the server answered HTTP {0}, not 101 Switching Protocols"
    )]
    Status(u16),
    #[error("WebSocket protocol error: {0} (RFC 6455)")]
    Protocol(&'static str),
}

/// Which side of the connection we are.
#[derive(Debug, Clone)]
pub enum Role {
    /// Accept upgrades on `path` (any path: [`ANY_PATH`]).
    Server { path: String },
    /// Upgrade to `path` on `host`; `key` is the Sec-WebSocket-Key sent.
    Client { key: String },
}

#[derive(Debug)]
enum State {
    /// Reading the peer's HTTP head.
    Handshake(BytesMut),
    Open,
    Closed,
}

/// One connection's WebSocket state; see the module docs.
#[derive(Debug)]
pub struct WsCodec {
    role: Role,
    state: State,
    /// Payload bytes of the current frame still to come.
    frame_left: u64,
    /// The current frame's mask and how far into it the payload is.
    mask: Option<[u8; 4]>,
    mask_pos: usize,
    /// The current frame is a control frame: its payload is gathered here (at most 125 bytes).
    control: Option<(Control, BytesMut)>,
    /// Masks for frames a client sends: a xorshift seeded from the OS, not a syscall per frame.
    mask_seed: u64,
}

/// What reading some bytes led to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// The handshake finished with these bytes.
    pub opened: bool,
    /// The peer closed the WebSocket (a close frame, answered).
    pub closed: bool,
}

impl WsCodec {
    pub fn server(path: &str) -> WsCodec {
        WsCodec::new(Role::Server {
            path: path.to_string(),
        })
    }

    /// A client codec; its upgrade request for `host` and `path` is appended to `out`.
    pub fn client(host: &str, path: &str, out: &mut BytesMut) -> WsCodec {
        let mut seed = [0u8; 16];
        let _ = getrandom::getrandom(&mut seed);
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed);
        out.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: mqtt\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut codec = WsCodec::new(Role::Client { key });
        codec.mask_seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) | 1;
        codec
    }

    fn new(role: Role) -> WsCodec {
        WsCodec {
            role,
            state: State::Handshake(BytesMut::new()),
            frame_left: 0,
            mask: None,
            mask_pos: 0,
            control: None,
            mask_seed: 1,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether nothing is half-read (a partial handshake, frame header or control frame).
    pub fn is_idle(&self) -> bool {
        match &self.state {
            State::Handshake(head) => head.is_empty(),
            State::Open => self.control.is_none(),
            State::Closed => true,
        }
    }

    /// Consumes `input` (bytes from the peer): MQTT bytes go to `app`, what must be sent back
    /// (handshake answer, pong, close) to `out`. Bytes that do not yet form a whole frame
    /// header stay in `input`.
    pub fn ingest(
        &mut self,
        input: &mut BytesMut,
        app: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Ingested, WsError> {
        let mut result = Ingested::default();
        if let State::Handshake(head) = &mut self.state {
            head.extend_from_slice(input);
            input.clear();
            let Some(used) = (match &self.role {
                Role::Server { path } => accept(head, path, out)?,
                Role::Client { key } => check_answer(head, key)?,
            }) else {
                if head.len() > MAX_HANDSHAKE {
                    return Err(refuse(out, 431, "HTTP head too large"));
                }
                return Ok(result);
            };
            // Frames the peer sent right behind its head.
            let rest = head.split_off(used);
            *input = rest;
            self.state = State::Open;
            result.opened = true;
        }
        while matches!(self.state, State::Open) {
            if self.frame_left == 0 && self.control.is_none() {
                if input.is_empty() || !self.next_header(input)? {
                    break;
                }
            } else if input.is_empty() && self.frame_left > 0 {
                break;
            }
            let take = (self.frame_left.min(input.len() as u64)) as usize;
            let mut chunk = input.split_to(take);
            self.frame_left -= take as u64;
            if let Some(mask) = self.mask {
                for b in chunk.iter_mut() {
                    *b ^= mask[self.mask_pos & 3];
                    self.mask_pos += 1;
                }
            }
            match &mut self.control {
                None => app.extend_from_slice(&chunk),
                Some((_, payload)) => payload.extend_from_slice(&chunk),
            }
            if self.frame_left == 0 {
                if let Some((kind, payload)) = self.control.take() {
                    if self.control_frame(kind, payload, out) {
                        result.closed = true;
                        self.state = State::Closed;
                    }
                }
            }
        }
        Ok(result)
    }

    /// Reads the next frame header from `input`; false when it is not all there yet.
    fn next_header(&mut self, input: &mut BytesMut) -> Result<bool, WsError> {
        let mut cursor = Cursor::new(&input[..]);
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|_| WsError::Protocol("malformed frame header"))?;
        let Some((header, len)) = parsed else {
            return Ok(false);
        };
        let used = cursor.position() as usize;
        input.advance(used);
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        let server = matches!(self.role, Role::Server { .. });
        if server && header.mask.is_none() {
            return Err(WsError::Protocol("unmasked frame from a client"));
        }
        if !server && header.mask.is_some() {
            return Err(WsError::Protocol("masked frame from a server"));
        }
        if len > MAX_FRAME {
            return Err(WsError::Protocol("frame longer than 2^31 bytes"));
        }
        self.mask = header.mask;
        self.mask_pos = 0;
        self.frame_left = len;
        match header.opcode {
            OpCode::Data(Data::Binary | Data::Continue) => {}
            OpCode::Data(Data::Text) => {
                return Err(WsError::Protocol("text frame: MQTT needs binary frames"))
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(WsError::Protocol("reserved opcode"))
            }
            OpCode::Control(kind) => {
                if len > 125 || !header.is_final {
                    return Err(WsError::Protocol(
                        "control frame over 125 bytes or fragmented",
                    ));
                }
                // Gathered, then answered by `ingest` (at once when it is empty).
                self.control = Some((kind, BytesMut::with_capacity(len as usize)));
            }
        }
        Ok(true)
    }

    /// Answers a complete control frame; true when it closed the connection.
    fn control_frame(&mut self, kind: Control, payload: BytesMut, out: &mut BytesMut) -> bool {
        match kind {
            Control::Ping => {
                self.frame(OpCode::Control(Control::Pong), &payload, out);
                false
            }
            Control::Pong => false,
            Control::Close => {
                // Echo the status code (if any), as RFC 6455 5.5.1 asks.
                let code = &payload[..payload.len().min(2)];
                self.frame(OpCode::Control(Control::Close), code, out);
                true
            }
            Control::Reserved(_) => false,
        }
    }

    /// Frames MQTT bytes for the peer.
    pub fn emit(&mut self, app: &[u8], out: &mut BytesMut) {
        self.frame(OpCode::Data(Data::Binary), app, out);
    }

    /// A close frame (1000, normal closure) for the peer.
    pub fn close(&mut self, out: &mut BytesMut) {
        if let State::Open = self.state {
            self.frame(OpCode::Control(Control::Close), &1000u16.to_be_bytes(), out);
            self.state = State::Closed;
        }
    }

    fn frame(&mut self, opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
        let mask = match self.role {
            Role::Server { .. } => None,
            Role::Client { .. } => Some(self.next_mask()),
        };
        let header = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
        };
        out.reserve(header.len(payload.len() as u64) + payload.len());
        // Writing into memory cannot fail.
        let _ = header.format(payload.len() as u64, &mut out.writer());
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            for (i, b) in out[start..].iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_seed = x;
        (x as u32).to_le_bytes()
    }
}

/// Queues an HTTP error answer and returns the error that closes the connection.
fn refuse(out: &mut BytesMut, status: u16, why: &'static str) -> WsError {
    let reason = match status {
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        426 => "Upgrade Required",
        _ => "Bad Request",
    };
    out.extend_from_slice(
        format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    WsError::Refused { status, why }
}

fn header<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Server: checks the upgrade request in `head`; queues the 101 (or an error) in `out`.
/// Returns the length of the request head once it is complete.
fn accept(head: &[u8], path: &str, out: &mut BytesMut) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(head) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(out, 431, "too many headers")),
        Err(_) => return Err(refuse(out, 400, "not an HTTP request")),
    };
    if request.method != Some("GET") {
        return Err(refuse(out, 400, "not a GET request"));
    }
    let asked = request.path.unwrap_or("");
    let asked = asked.split('?').next().unwrap_or(asked);
    if path != ANY_PATH && asked != path {
        return Err(refuse(out, 404, "wrong path"));
    }
    let h = request.headers;
    if !has_token(header(h, "upgrade"), "websocket")
        || !has_token(header(h, "connection"), "upgrade")
    {
        return Err(refuse(out, 426, "not a WebSocket upgrade"));
    }
    if header(h, "sec-websocket-version") != Some(b"13") {
        return Err(refuse(out, 400, "unsupported Sec-WebSocket-Version"));
    }
    let Some(key) = header(h, "sec-websocket-key") else {
        return Err(refuse(out, 400, "no Sec-WebSocket-Key"));
    };
    let protocol = match header(h, "sec-websocket-protocol") {
        // Clients that ask for no subprotocol still speak MQTT.
        None => None,
        Some(offered) => {
            let offered = std::str::from_utf8(offered).unwrap_or("");
            let chosen = offered
                .split(',')
                .map(str::trim)
                .find(|p| SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)));
            match chosen {
                Some(p) => Some(p.to_string()),
                None => return Err(refuse(out, 400, "no mqtt subprotocol offered")),
            }
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n"
        )
        .as_bytes(),
    );
    if let Some(p) = protocol {
        out.extend_from_slice(format!("Sec-WebSocket-Protocol: {p}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(used))
}

/// Client: checks the server's answer to our upgrade request.
fn check_answer(head: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(head) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WsError::Handshake("the answer is not HTTP")),
    };
    match response.code {
        Some(101) => {}
        Some(code) => return Err(WsError::Status(code)),
        None => return Err(WsError::Handshake("the answer has no status")),
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header(response.headers, "sec-websocket-accept") != Some(expected.as_bytes()) {
        return Err(WsError::Handshake("wrong Sec-WebSocket-Accept"));
    }
    Ok(Some(used))
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
