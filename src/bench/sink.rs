//! A trivial MQTT server for measuring the load generator itself: it accepts every CONNECT,
//! grants every SUBSCRIBE, acknowledges every PUBLISH as its QoS requires, and throws the
//! messages away. Whatever rate a publish-only run reaches against it is what the generator
//! can produce, so a broker measured below that rate is the bottleneck, not the generator.
//!
//! It runs one glommio executor per thread, each listening on the same port (SO_REUSEPORT), and
//! does as little per packet as the protocol allows: decode, maybe a 4-byte ack, next.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Duration;

use futures_lite::StreamExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::config::{invalid, BenchError};
use super::conn::{Conn, Frame};
use crate::protocol::{
    encode_ack, ConnAck, Packet, PacketType, QoS, ReasonCode, SubAck, SubscribeReturnCode,
};

#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Port 0 picks a free one; see [`SinkHandle::local_addr`].
    pub listen: SocketAddr,
    pub threads: usize,
}

/// What the sink saw, summed over its threads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub connections: u64,
    pub publishes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    publishes: AtomicU64,
}

/// A running sink; [`SinkHandle::shutdown`] stops it.
pub struct SinkHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl SinkHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            publishes: self.counters.publishes.load(Ordering::Relaxed),
        }
    }

    /// Stops listening, drops every connection and returns the final counts.
    pub fn shutdown(self) -> SinkStats {
        self.stop.store(true, Ordering::Release);
        for e in self.executors {
            let _ = e.join();
        }
        SinkStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            publishes: self.counters.publishes.load(Ordering::Relaxed),
        }
    }
}

/// Starts the sink and returns once every thread listens.
pub fn start_sink(config: SinkConfig) -> Result<SinkHandle, BenchError> {
    if config.threads == 0 || config.threads > 256 {
        return Err(invalid(
            "threads",
            format!("must be between 1 and 256, got {}", config.threads),
        ));
    }
    // Port 0: reserve a concrete port that every thread can bind with SO_REUSEPORT. The
    // reservation never listens, so the kernel hands it no connections.
    let (addr, _reservation) = crate::sys::reserve_port(config.listen)
        .map_err(|e| invalid("port", format!("cannot bind {}: {e}", config.listen)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut executors = Vec::new();
    for t in 0..config.threads {
        let (thread_stop, counters, ready) = (stop.clone(), counters.clone(), ready_tx.clone());
        let spawned = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("surgemq-sink-{t}"))
            .io_memory(64 * 1024)
            .spawn(move || async move { sink_thread(addr, thread_stop, counters, ready).await });
        match spawned {
            Ok(h) => executors.push(h),
            Err(e) => {
                stop.store(true, Ordering::Release);
                return Err(BenchError::Thread(e.to_string()));
            }
        }
    }
    drop(ready_tx);
    let handle = SinkHandle {
        addr,
        stop,
        counters,
        executors,
    };
    for _ in 0..config.threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                handle.shutdown();
                return Err(invalid("port", format!("cannot listen on {addr}: {e}")));
            }
            Err(_) => {
                handle.shutdown();
                return Err(BenchError::Thread("a sink thread stopped at start".into()));
            }
        }
    }
    Ok(handle)
}

async fn sink_thread(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let accept = glommio::spawn_local(async move {
        let mut incoming = listener.incoming();
        while let Some(stream) = incoming.next().await {
            if let Ok(stream) = stream {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                glommio::spawn_local(serve(stream, counters.clone())).detach();
            }
        }
    });
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the accept task closes the listener; connection tasks are dropped, and their
    // sockets closed, when this executor ends.
    drop(accept);
}

async fn serve(stream: TcpStream, counters: Arc<Counters>) {
    let mut conn = Conn::from_stream(stream);
    loop {
        let mut publishes = 0;
        loop {
            let packet = match conn.rbuf.next_frame() {
                Ok(Some(Frame::Publish { qos, packet_id, .. })) => {
                    publishes += 1;
                    match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            encode_ack(&mut conn.wbuf, PacketType::PubAck, packet_id)
                        }
                        QoS::ExactlyOnce => {
                            encode_ack(&mut conn.wbuf, PacketType::PubRec, packet_id)
                        }
                    }
                    continue;
                }
                Ok(Some(Frame::Other(p))) => p,
                Ok(None) => break,
                Err(_) => return,
            };
            match packet {
                Packet::PubRel(rel) => {
                    encode_ack(&mut conn.wbuf, PacketType::PubComp, rel.packet_id)
                }
                Packet::Connect(c) => {
                    conn.rbuf.level = c.level;
                    let ack = Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS));
                    let _ = ack.encode(&mut conn.wbuf, conn.rbuf.level);
                }
                Packet::Subscribe(s) => {
                    let ack = Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        return_codes: s
                            .filters
                            .iter()
                            .map(|(_, options)| SubscribeReturnCode::Success(options.qos))
                            .collect(),
                        properties: None,
                    });
                    let _ = ack.encode(&mut conn.wbuf, conn.rbuf.level);
                }
                Packet::Unsubscribe(u) => {
                    encode_ack(&mut conn.wbuf, PacketType::UnsubAck, u.packet_id)
                }
                Packet::PingReq => {
                    let _ = Packet::PingResp.encode(&mut conn.wbuf, conn.rbuf.level);
                }
                Packet::Disconnect(_) => {
                    counters.publishes.fetch_add(publishes, Ordering::Relaxed);
                    let _ = conn.flush().await;
                    return;
                }
                _ => {}
            }
        }
        if publishes > 0 {
            counters.publishes.fetch_add(publishes, Ordering::Relaxed);
        }
        let event = poll_fn(|cx| {
            if let Poll::Ready(Err(_)) = conn.poll_flush(cx) {
                return Poll::Ready(false);
            }
            match conn.poll_read(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Ready(Ok(_)) => Poll::Ready(true),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if !event {
            return;
        }
        glommio::yield_if_needed().await;
    }
}
