//! Starting and stopping the shards: locked-memory check, listen sockets, one pinned glommio
//! executor per shard, and the handle that stops them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use super::config::BrokerConfig;
use super::mesh::{InboxReceiver, Mesh, ShardId, ShardMessage};
use super::metrics::MetricsSnapshot;
use super::shard::Shard;
use super::shard_tasks::{drain_inbox, expire_sessions, retry_stalled};

/// Memory glommio registers with io_uring per executor. The broker does no file I/O through
/// glommio's DMA buffers, so the minimum glommio accepts is plenty.
const IO_MEMORY: usize = 64 * 1024;
/// glommio refuses to start an executor below this locked-memory limit.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(
        "locked-memory limit (ulimit -l) is {have_kib} KiB but io_uring needs at least {need_kib} KiB: \
         raise it, e.g. `ulimit -l {need_kib}` in the shell or LimitMEMLOCK={need_kib}K for systemd"
    )]
    LockedMemory { have_kib: u64, need_kib: u64 },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {reason}")]
    Executor { shard: usize, reason: String },
}

/// A running broker. Dropping it does not stop it; call [`BrokerHandle::shutdown`].
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    mesh: Arc<Mesh>,
    executors: Vec<ExecutorJoinHandle<MetricsSnapshot>>,
}

impl BrokerHandle {
    /// The addresses the broker listens on, with the ports the OS chose for port 0.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, closes every connection, waits for the shards to finish and returns
    /// their final counters.
    pub fn shutdown(self) -> Vec<MetricsSnapshot> {
        for i in 0..self.mesh.shards() {
            let mut msg = ShardMessage::Shutdown;
            // A full inbox drains within microseconds; the broker is stopping, so just wait.
            while let Err(back) = self.mesh.try_send(ShardId(i as u16), msg) {
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.executors
            .into_iter()
            .map(|e| e.join().unwrap_or_default())
            .collect()
    }
}

/// Starts the broker's shards and returns once every shard listens on every address.
pub fn start(config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    config.validate()?;
    check_locked_memory()?;
    let (addrs, _reservations) = resolve_listen_addrs(&config.listen)?;
    let config = Arc::new(config);
    let shards = config.shards;
    let (mesh, inboxes) = Mesh::new(shards).map_err(|e| StartError::Executor {
        shard: 0,
        reason: format!("cannot create the shard doorbells: {e}"),
    })?;
    let cpus = allowed_cpus();
    let open_sockets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let mut executors = Vec::with_capacity(shards);
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let shard_config = config.clone();
        let shard_mesh = mesh.clone();
        let shard_addrs = addrs.clone();
        let ready = ready_tx.clone();
        let shard_sockets = open_sockets.clone();
        let placement = match cpus.get(i % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("surgemq-shard-{i}"))
            .io_memory(IO_MEMORY)
            .spin_before_park(config.spin_before_sleep)
            .spawn(move || async move {
                let shard = Rc::new(Shard::new(
                    ShardId(i as u16),
                    shard_config,
                    shard_mesh,
                    shard_sockets,
                ));
                run_shard(shard, inbox, &shard_addrs, ready).await
            });
        match spawned {
            Ok(handle) => executors.push(handle),
            Err(e) => {
                let handle = BrokerHandle {
                    addrs,
                    mesh,
                    executors,
                };
                handle.shutdown();
                return Err(StartError::Executor {
                    shard: i,
                    reason: e.to_string(),
                });
            }
        }
    }
    drop(ready_tx);
    let handle = BrokerHandle {
        addrs,
        mesh,
        executors,
    };
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                handle.shutdown();
                return Err(e);
            }
            Err(_) => {
                handle.shutdown();
                return Err(StartError::Executor {
                    shard: 0,
                    reason: "a shard stopped during start-up".into(),
                });
            }
        }
    }
    info!(
        shards,
        listen = ?handle.addrs,
        max_packet_size = config.max_packet_size,
        max_inflight = config.max_inflight,
        max_queued_messages = config.max_queued_messages,
        "surgemq broker started"
    );
    Ok(handle)
}

async fn run_shard(
    shard: Rc<Shard>,
    inbox: InboxReceiver,
    addrs: &[SocketAddr],
    ready: mpsc::Sender<Result<(), StartError>>,
) -> MetricsSnapshot {
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let _ = ready.send(Err(StartError::Listen {
                    addr,
                    source: std::io::Error::other(e.to_string()),
                }));
                return MetricsSnapshot::default();
            }
        }
    }
    // The drain task shares the default task queue with the connections. In a task queue of
    // its own (Latency::Matters, as first designed) it was seen to sleep through its wake-up
    // about one run in four of tests/broker_lifecycle.rs; in the default queue, never in 24.
    let drain = glommio::spawn_local(drain_inbox(shard.clone(), inbox));
    let stall = glommio::spawn_local(retry_stalled(shard.clone()));
    let expiry = glommio::spawn_local(expire_sessions(shard.clone()));
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|listener| glommio::spawn_local(accept_loop(shard.clone(), listener)))
        .collect();
    let _ = ready.send(Ok(()));
    drop(ready);

    shard.stopped().await;
    drop(accepts);
    // Give connections a moment to see their kick and close cleanly.
    for _ in 0..50 {
        if shard.metrics.connections.get() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(expiry);
    drop(stall);
    drop(drain);
    shard.metrics.snapshot(shard.stalls())
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        match stream {
            Ok(stream) => {
                glommio::spawn_local(super::connection::serve_accepted(shard.clone(), stream))
                    .detach();
            }
            Err(e) => {
                // EMFILE and friends: keep accepting once resources free up.
                warn!(shard = shard.id.0, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// glommio needs locked memory for its io_uring buffers. Raise the soft limit to the hard one
/// if that helps; otherwise fail with a message that says what to raise.
fn check_locked_memory() -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell; let glommio decide
    }
    if lim.rlim_cur >= GLOMMIO_MIN_MEMLOCK {
        return Ok(());
    }
    if lim.rlim_max >= GLOMMIO_MIN_MEMLOCK {
        let raised = libc::rlimit {
            rlim_cur: GLOMMIO_MIN_MEMLOCK.max(lim.rlim_cur),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(StartError::LockedMemory {
        have_kib: lim.rlim_cur / 1024,
        need_kib: GLOMMIO_MIN_MEMLOCK / 1024,
    })
}

/// Resolves port 0 to a concrete port that every shard can bind with SO_REUSEPORT. The
/// reservation sockets are bound but never listen, so the kernel sends them no connections;
/// they are dropped once the shards listen.
fn resolve_listen_addrs(
    listen: &[SocketAddr],
) -> Result<(Vec<SocketAddr>, Vec<socket2::Socket>), StartError> {
    let mut addrs = Vec::with_capacity(listen.len());
    let mut reservations = Vec::new();
    for &addr in listen {
        if addr.port() != 0 {
            addrs.push(addr);
            continue;
        }
        let reserve = || -> std::io::Result<(SocketAddr, socket2::Socket)> {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            socket.set_reuse_port(true)?;
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            let local = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
            Ok((local, socket))
        };
        let (local, socket) = reserve().map_err(|source| StartError::Listen { addr, source })?;
        addrs.push(local);
        reservations.push(socket);
    }
    Ok((addrs, reservations))
}

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we own; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}
