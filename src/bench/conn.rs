//! The load generator's one place that touches a socket: a glommio `TcpStream` with a read
//! buffer and a write buffer, plus the CONNECT and SUBSCRIBE handshakes.
//!
//! Reads land directly in the spare capacity of `rbuf`, so decoded PUBLISH payloads are slices
//! of what the kernel wrote, never copies. That spare room is handed to `recv` as `&mut [u8]`,
//! which is only sound for initialised memory: a fresh read buffer is allocated zeroed and is
//! never grown any other way. Writes send everything the client encoded into `wbuf` (many
//! PUBLISHes and acks) with as few `send` calls as the socket allows.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::protocol::{
    decode, ByteStr, Connect, ConnectReturnCode, Packet, ProtocolLevel, QoS, Subscribe,
    SubscribeReturnCode,
};

/// Size of a fresh read buffer: big enough for hundreds of small PUBLISHes per `recv`.
const READ_CHUNK: usize = 64 * 1024;
/// Below this much spare room a read is not worth a syscall; start a fresh buffer.
const MIN_READ_SPACE: usize = 4 * 1024;
/// Largest packet accepted from the broker.
pub const MAX_PACKET: usize = 1 << 25;
/// Keepalive announced in CONNECT; the client pings at half of it.
pub const KEEPALIVE_SECS: u16 = 60;

pub struct Conn {
    stream: TcpStream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Whether `rbuf`'s spare capacity is known to be initialised (see the module docs).
    spare_initialised: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        Ok(Conn::from_stream(stream))
    }

    /// Wraps a connected socket (the sink's accepted ones).
    pub fn from_stream(stream: TcpStream) -> Conn {
        // Latency matters more than packet count: never let Nagle hold back a small batch.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            spare_initialised: false,
        }
    }

    /// Makes sure `rbuf` has initialised spare room: at least `MIN_READ_SPACE`, and all of a
    /// large packet whose header has arrived.
    fn reserve_read_space(&mut self) {
        let len = self.rbuf.len();
        let frame = match crate::protocol::frame_len(&self.rbuf, MAX_PACKET) {
            Ok(Some(total)) => total,
            _ => 0,
        };
        let want = MIN_READ_SPACE.max(frame.saturating_sub(len));
        if self.spare_initialised && self.rbuf.capacity() - len >= want {
            return;
        }
        let mut fresh = BytesMut::zeroed(READ_CHUNK.max(len + want));
        fresh.clear();
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
        self.spare_initialised = true;
    }

    /// Reads what the socket has into `rbuf`. `Ok(0)`: the broker closed the connection.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.reserve_read_space();
        let len = self.rbuf.len();
        let spare = self.rbuf.capacity() - len;
        // SAFETY: the spare capacity is initialised (see `reserve_read_space`) and belongs to
        // `rbuf`, which nothing else borrows during the call.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.rbuf.as_mut_ptr().add(len), spare) };
        match Pin::new(&mut self.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: `recv` wrote `n` bytes into the spare capacity.
                unsafe { self.rbuf.set_len(len + n) };
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    /// Writes `wbuf` until it is empty or the socket is full.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The next packet, reading as needed.
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            match decode(&mut self.rbuf, MAX_PACKET) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if poll_fn(|cx| self.poll_read(cx)).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// CONNECT with a clean session, then wait for an accepting CONNACK.
    pub async fn handshake(
        &mut self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(), String> {
        let connect = Packet::Connect(Box::new(Connect {
            level: ProtocolLevel::V311,
            clean_session: true,
            keep_alive: KEEPALIVE_SECS,
            client_id: ByteStr::from(client_id),
            will: None,
            username: username.map(ByteStr::from),
            password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        }));
        connect.encode(&mut self.wbuf).map_err(|e| e.to_string())?;
        self.flush().await.map_err(|e| format!("CONNECT: {e}"))?;
        match self.read_packet().await {
            Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Accepted => Ok(()),
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
            filters: vec![(ByteStr::from(filter), qos)],
        });
        subscribe
            .encode(&mut self.wbuf)
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
        let _ = Packet::Disconnect.encode(&mut self.wbuf);
        let _ = or(
            async {
                if self.flush().await.is_err() {
                    return;
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
                    self.rbuf.clear();
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
