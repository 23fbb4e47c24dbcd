//! The load generator's one place that touches a socket: a glommio `TcpStream` with a read
//! buffer and a write buffer, plus the CONNECT and SUBSCRIBE handshakes.
//!
//! Under TLS and WebSockets (`--tls`, `--ws`) a connection also has a [`Layer`] from the
//! client library's [`Dialer`] (the same sans-IO layer the broker and the client use): the
//! transport's handshake runs before CONNECT, socket bytes are read into a buffer of their own
//! and the MQTT bytes the layer yields are copied into the read buffer, and the write buffer
//! is wrapped (frames, records) into the layer's output before it goes to the socket. Plain TCP
//! has no layer and keeps the paths below as they are: `recv` straight into the read buffer,
//! `send` straight from the write buffer.
//!
//! Subscribers receive far more than they send (a fan-out subscriber sees every message), so
//! the receive path is the generator's hot path. The read buffer ([`ReadBuf`]) is one plain,
//! initialised allocation that `recv` fills directly; frames are found with the codec's
//! [`frame_len`], and a PUBLISH is read in place (QoS, packet id, payload slice) without
//! splitting it off into a reference-counted `Bytes` or validating its topic as UTF-8: the
//! generator only needs the payload header. Any other packet (acks, SUBACK, PINGRESP; a few
//! bytes each) goes through the full decoder. Writes send everything the client encoded into
//! `wbuf` (many PUBLISHes and acks) with as few `send` calls as the socket allows.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::AsyncRead;
use glommio::net::TcpStream;

use crate::client::dial::Dialer;
use crate::protocol::{
    decode, frame_len, ByteStr, Connect, Disconnect, Packet, ProtocolLevel, QoS, ReasonCode,
    Subscribe, SubscribeReturnCode,
};
use crate::transport::Layer;

/// Size of the read buffer: room for hundreds of small PUBLISHes per `recv`.
const READ_CHUNK: usize = 64 * 1024;
/// Below this much free room at the end, move the unread bytes to the front first.
const MIN_READ_SPACE: usize = 4 * 1024;
/// Largest packet accepted from the broker.
pub const MAX_PACKET: usize = 1 << 25;
/// Keepalive announced in CONNECT; the client pings at half of it.
pub const KEEPALIVE_SECS: u16 = 60;
/// Socket reads under a transport layer: room for a few TLS records (16 KiB and some each).
const LAYER_READ: usize = 64 * 1024;

/// One complete packet at the front of the read buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A PUBLISH, read in place.
    Publish {
        qos: QoS,
        packet_id: u16,
        payload: &'a [u8],
    },
    /// Anything else, fully decoded.
    Other(Packet),
}

/// Bytes read but not yet parsed: `buf[start..end]`. All of `buf` is initialised (it starts
/// zeroed and only ever grows with zeroes), so handing `buf[end..]` to `recv` is sound.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How packets are read: an MQTT 5 PUBLISH has a property block before its payload.
    pub level: ProtocolLevel,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            level: ProtocolLevel::V311,
        }
    }
}

impl ReadBuf {
    /// Free room for the next read: moves a partial frame to the front when the tail is short,
    /// and grows the buffer when a frame announced in its header would not fit.
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = &self.buf[self.start..self.end];
        let frame = match frame_len(pending, MAX_PACKET, self.level) {
            Ok(Some(total)) => total,
            _ => 0,
        };
        let need = MIN_READ_SPACE.max(frame.saturating_sub(pending.len()));
        if self.buf.len() - self.end < need {
            // Only an incomplete frame is ever left behind, so this copies little.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < need {
                self.buf.resize(self.end + need, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Appends bytes a transport layer decoded (TLS, WebSockets), compacting or growing as
    /// needed.
    fn append(&mut self, data: &[u8]) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < data.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < data.len() {
                self.buf.resize(self.end + data.len(), 0);
            }
        }
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// The next complete packet, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, String> {
        let data = &self.buf[self.start..self.end];
        let total = match frame_len(data, MAX_PACKET, self.level) {
            Ok(Some(total)) if total <= data.len() => total,
            Ok(_) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let first = data[0];
        let frame_start = self.start;
        self.start += total;
        if first >> 4 != 3 {
            let mut packet = BytesMut::from(&self.buf[frame_start..frame_start + total]);
            return match decode(&mut packet, MAX_PACKET, self.level) {
                Ok(Some(p)) => Ok(Some(Frame::Other(p))),
                Ok(None) => Err("frame_len and decode disagree".into()),
                Err(e) => Err(e.to_string()),
            };
        }
        let frame = &self.buf[frame_start..frame_start + total];
        // Skip the fixed header: type byte plus 1-4 bytes of Remaining Length.
        let header_len = 1 + frame[1..].iter().position(|b| b & 0x80 == 0).unwrap_or(0) + 1;
        let body = &frame[header_len..];
        let malformed = || "malformed PUBLISH from broker".to_string();
        let qos = QoS::from_u8((first >> 1) & 0b11).ok_or_else(malformed)?;
        let topic_len = usize::from(u16::from_be_bytes([
            *body.first().ok_or_else(malformed)?,
            *body.get(1).ok_or_else(malformed)?,
        ]));
        let mut at = 2 + topic_len;
        let mut packet_id = 0;
        if qos != QoS::AtMostOnce {
            let id = body.get(at..at + 2).ok_or_else(malformed)?;
            packet_id = u16::from_be_bytes([id[0], id[1]]);
            at += 2;
        }
        if self.level.is_v5() {
            // Skip the property block: its Variable Byte Integer length, then the properties.
            let mut len = 0usize;
            for i in 0..4 {
                let b = *body.get(at).ok_or_else(malformed)?;
                at += 1;
                len |= usize::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    break;
                }
            }
            at += len;
        }
        let payload = body.get(at..).ok_or_else(malformed)?;
        Ok(Some(Frame::Publish {
            qos,
            packet_id,
            payload,
        }))
    }
}

/// How a run's clients open their connections: plain TCP (no dialer), or TLS and/or
/// WebSockets through the client library's [`Dialer`] (TLS settings read once per run).
#[derive(Clone)]
pub struct Dial(pub(crate) Dialer);

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dial(..)")
    }
}

/// A TLS or WebSocket transport under a connection, with its socket-side buffers.
struct Layered {
    layer: Layer,
    /// Socket bytes read, before the layer takes them.
    raw: Vec<u8>,
    /// MQTT bytes the layer yielded, on their way into the read buffer.
    plain: BytesMut,
    /// Bytes for the socket (handshake, records, frames), written before anything else.
    out: BytesMut,
}

fn layer_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub struct Conn {
    stream: TcpStream,
    pub rbuf: ReadBuf,
    pub wbuf: BytesMut,
    /// TLS, WebSockets or both; None for plain TCP.
    layer: Option<Box<Layered>>,
}

impl Conn {
    /// TCP, then (with a layered `dial`) the transport's handshake: ready for CONNECT.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        dial: Option<&Dial>,
    ) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        let mut conn = Conn::from_stream(stream);
        if let Some(Dial(dialer)) = dial {
            if dialer.layered() {
                let (layer, first) = dialer.layer().map_err(layer_error)?;
                conn.layer = Some(Box::new(Layered {
                    layer,
                    raw: vec![0; LAYER_READ],
                    plain: BytesMut::new(),
                    out: first,
                }));
                conn.transport_handshake().await?;
            }
        }
        Ok(conn)
    }

    /// Wraps a connected socket (the sink's accepted ones).
    pub fn from_stream(stream: TcpStream) -> Conn {
        // Latency matters more than packet count: never let Nagle hold back a small batch.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            rbuf: ReadBuf::default(),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            layer: None,
        }
    }

    /// Sends the layer's first bytes and reads until its handshake (TLS, WebSocket upgrade)
    /// is done.
    async fn transport_handshake(&mut self) -> io::Result<()> {
        loop {
            self.flush().await?;
            let Some(l) = &self.layer else {
                return Ok(());
            };
            if !l.layer.handshaking() {
                return Ok(());
            }
            let step = match l.layer.tls() {
                Some(tls) if tls.is_handshaking() => "TLS handshake",
                _ => "WebSocket upgrade",
            };
            if poll_fn(|cx| self.poll_read(cx)).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed during the {step}"),
                ));
            }
        }
    }

    /// Bytes encoded or wrapped and not yet written to the socket.
    pub fn pending(&self) -> usize {
        self.wbuf.len() + self.layer.as_ref().map_or(0, |l| l.out.len())
    }

    /// Reads what the socket has into the read buffer. `Ok(0)`: the peer closed (for a
    /// layered transport also: it ended the transport, a TLS close_notify or a WebSocket
    /// close frame; the MQTT bytes before it are in the read buffer).
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if let Some(l) = &mut self.layer {
            return match Pin::new(&mut self.stream).poll_read(cx, &mut l.raw) {
                Poll::Ready(Ok(0)) => Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => {
                    let got = l.layer.ingest(&l.raw[..n], &mut l.plain, &mut l.out);
                    self.rbuf.append(&l.plain);
                    l.plain.clear();
                    match got {
                        Ok(got) if got.closed => Poll::Ready(Ok(0)),
                        Ok(_) => Poll::Ready(Ok(n)),
                        Err(e) => Poll::Ready(Err(layer_error(e))),
                    }
                }
                other => other,
            };
        }
        let dst = self.rbuf.spare();
        match Pin::new(&mut self.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                self.rbuf.end += n;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    /// Writes `wbuf` (wrapped by the layer, if any) until it is empty or the socket is full.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(l) = &mut self.layer else {
            return crate::sys::poll_write_all(&mut self.stream, &mut self.wbuf, cx);
        };
        if !self.wbuf.is_empty() {
            l.layer.emit(&self.wbuf, &mut l.out).map_err(layer_error)?;
            self.wbuf.clear();
        }
        crate::sys::poll_write_all(&mut self.stream, &mut l.out, cx)
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The next packet other than a PUBLISH (there should be none during handshakes).
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            match self.rbuf.next_frame() {
                Ok(Some(Frame::Other(p))) => return Ok(p),
                Ok(Some(Frame::Publish { .. })) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "PUBLISH before the subscription was acknowledged",
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if poll_fn(|cx| self.poll_read(cx)).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// CONNECT (CleanSession as `clean`; in MQTT 5 Clean Start, and a session that never
    /// expires unless `clean`), then wait for an accepting CONNACK; `Ok(true)` when it says
    /// the broker had a session for this client id (Session Present).
    pub async fn handshake(
        &mut self,
        client_id: &str,
        clean: bool,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<bool, String> {
        let level = self.rbuf.level;
        let properties = (level.is_v5() && !clean).then(|| {
            Box::new(crate::protocol::Properties {
                session_expiry_interval: Some(u32::MAX),
                ..Default::default()
            })
        });
        let connect = Packet::Connect(Box::new(Connect {
            level,
            bridge: false,
            clean_session: clean,
            keep_alive: KEEPALIVE_SECS,
            client_id: ByteStr::from(client_id),
            will: None,
            username: username.map(ByteStr::from),
            password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
            properties,
        }));
        connect
            .encode(&mut self.wbuf, self.rbuf.level)
            .map_err(|e| e.to_string())?;
        self.flush().await.map_err(|e| format!("CONNECT: {e}"))?;
        match self.read_packet().await {
            Ok(Packet::ConnAck(ack)) if ack.code == ReasonCode::SUCCESS => Ok(ack.session_present),
            Ok(Packet::ConnAck(ack)) => Err(format!("CONNACK refused: {:?}", ack.code)),
            Ok(other) => Err(format!("expected CONNACK, got {:?}", other.packet_type())),
            Err(e) => Err(format!("waiting for CONNACK: {e}")),
        }
    }

    /// SUBSCRIBE to one filter and wait for its SUBACK. Anything else arriving first (there
    /// should be nothing: the topics are new) is an error.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), String> {
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), qos.into())],
            properties: None,
        });
        subscribe
            .encode(&mut self.wbuf, self.rbuf.level)
            .map_err(|e| e.to_string())?;
        self.flush().await.map_err(|e| format!("SUBSCRIBE: {e}"))?;
        match self.read_packet().await {
            Ok(Packet::SubAck(ack)) => match ack.return_codes.first() {
                Some(SubscribeReturnCode::Success(granted)) if *granted >= qos => Ok(()),
                Some(SubscribeReturnCode::Success(granted)) => Err(format!(
                    "SUBACK granted QoS {} instead of {}",
                    *granted as u8, qos as u8
                )),
                _ => Err(format!("SUBACK refused the subscription to {filter}")),
            },
            Ok(other) => Err(format!("expected SUBACK, got {:?}", other.packet_type())),
            Err(e) => Err(format!("waiting for SUBACK: {e}")),
        }
    }

    /// Sends DISCONNECT and whatever is still buffered, then closes gracefully, giving up
    /// after `timeout`.
    ///
    /// Closing a socket with unread input makes the kernel send RST instead of FIN, and an RST
    /// can make the peer discard what it has received but not yet read: the last messages of a
    /// run would be lost. So: flush, shut down our side, and read until the peer closes.
    pub async fn close(mut self, timeout: Duration) {
        let _ = Packet::Disconnect(Disconnect::NORMAL).encode(&mut self.wbuf, self.rbuf.level);
        let _ = or(
            async {
                if self.flush().await.is_err() {
                    return;
                }
                // The transport's goodbye: a WebSocket close frame, a TLS close_notify.
                if let Some(l) = &mut self.layer {
                    l.layer.close(&mut l.out);
                    if self.flush().await.is_err() {
                        return;
                    }
                }
                if self
                    .stream
                    .shutdown(std::net::Shutdown::Write)
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    self.rbuf.start = self.rbuf.end;
                    match poll_fn(|cx| self.poll_read(cx)).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            },
            glommio::timer::sleep(timeout),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_ack, encode_publish, PacketType};

    fn feed(rb: &mut ReadBuf, bytes: &[u8]) {
        let spare = rb.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        rb.end += bytes.len();
    }

    #[test]
    fn publishes_are_read_in_place_and_other_packets_decoded() {
        let mut wire = BytesMut::new();
        encode_publish(&mut wire, "a/b", b"zero", QoS::AtMostOnce, false, false, 0).unwrap();
        encode_publish(&mut wire, "a/b", b"two", QoS::ExactlyOnce, false, false, 7).unwrap();
        encode_ack(&mut wire, PacketType::PubAck, 9);
        // A payload big enough for a two-byte Remaining Length.
        let big = vec![b'x'; 300];
        encode_publish(&mut wire, "t", &big, QoS::AtLeastOnce, false, false, 3).unwrap();
        let mut rb = ReadBuf::default();
        // Deliver the bytes in awkward pieces: frames must only appear once complete.
        let mut got = Vec::new();
        for chunk in wire.chunks(5) {
            feed(&mut rb, chunk);
            while let Some(frame) = rb.next_frame().unwrap() {
                got.push(match frame {
                    Frame::Publish {
                        qos,
                        packet_id,
                        payload,
                    } => format!("publish {qos:?} {packet_id} {}", payload.len()),
                    Frame::Other(p) => format!("{p:?}"),
                });
            }
        }
        assert_eq!(
            got,
            [
                "publish AtMostOnce 0 4",
                "publish ExactlyOnce 7 3",
                "PubAck(Ack { packet_id: 9, reason: ReasonCode(0x00 success), properties: None })",
                "publish AtLeastOnce 3 300",
            ]
        );
        assert_eq!(rb.start, rb.end, "everything consumed");
    }

    #[test]
    fn appended_bytes_come_out_as_the_same_frames() {
        // What a transport layer hands over: arbitrary slices, sometimes larger than the buffer.
        let mut wire = BytesMut::new();
        for i in 0..2_000u16 {
            encode_publish(
                &mut wire,
                "t/x",
                &[7; 40],
                QoS::AtLeastOnce,
                false,
                false,
                i + 1,
            )
            .unwrap();
        }
        let big = vec![b'z'; 2 * READ_CHUNK];
        encode_publish(&mut wire, "t", &big, QoS::AtMostOnce, false, false, 0).unwrap();
        let mut rb = ReadBuf::default();
        let (mut ids, mut sizes) = (Vec::new(), Vec::new());
        for chunk in wire.chunks(40_000) {
            rb.append(chunk);
            while let Some(Frame::Publish {
                packet_id, payload, ..
            }) = rb.next_frame().unwrap()
            {
                ids.push(packet_id);
                sizes.push(payload.len());
            }
        }
        assert_eq!(ids.len(), 2_001);
        assert!(ids[..2_000].iter().copied().eq(1..=2_000));
        assert_eq!(sizes[2_000], big.len());
        assert_eq!(rb.start, rb.end, "everything consumed");
    }

    #[test]
    fn buffer_compacts_and_grows_for_large_frames() {
        let mut rb = ReadBuf::default();
        let big = vec![b'y'; 3 * READ_CHUNK];
        let mut wire = BytesMut::new();
        encode_publish(&mut wire, "t", b"small", QoS::AtMostOnce, false, false, 0).unwrap();
        encode_publish(&mut wire, "t", &big, QoS::AtMostOnce, false, false, 0).unwrap();
        let mut sizes = Vec::new();
        let mut offset = 0;
        while offset < wire.len() {
            let spare = rb.spare();
            let n = spare.len().min(wire.len() - offset).min(1000);
            spare[..n].copy_from_slice(&wire[offset..offset + n]);
            rb.end += n;
            offset += n;
            while let Some(Frame::Publish { payload, .. }) = rb.next_frame().unwrap() {
                sizes.push(payload.len());
            }
        }
        assert_eq!(sizes, [5, 3 * READ_CHUNK]);
    }

    #[test]
    fn malformed_publish_is_an_error() {
        let mut rb = ReadBuf::default();
        // PUBLISH QoS 1, remaining length 3: topic length 1, topic "a", no room for the id.
        feed(&mut rb, &[0x32, 0x03, 0x00, 0x01, b'a']);
        assert!(rb.next_frame().is_err());
    }
}
