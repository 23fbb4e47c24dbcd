//! Starting and stopping the shards: locked-memory check, listen sockets, one pinned glommio
//! executor per shard, and the handle that stops them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{info, warn};

use super::bridge::{self, BridgeBoard, BridgeStats};
use super::cluster_port::{ClaimClock, ClusterPort, ClusterShared};
use super::config::BrokerConfig;
use super::keepalive::watch_keepalives;
use super::listeners::{accept_loop, ListenerSpec, TlsSettings};
use super::mesh::{InboxReceiver, Mesh, Refused, ShardId, ShardMessage};
use super::metrics::MetricsSnapshot;
use super::restore::{final_sync, prepare, restore, Startup};
use super::shard::{home_shard, Shard};
use super::shard_tasks::{
    confirm_durable, drain_inbox, expire_sessions, finish_handing_on, hand_on, report_from_cluster,
    retry_stalled, sweep_idle_connections, watch_stalls,
};
use super::stats::StatsBoard;
use super::sys_topics::{publish_sys, report_stats};
use crate::sys::{allowed_cpus, ensure_locked_memory, reserve_port};
use crate::transport::Transport;

/// Memory glommio registers with io_uring per executor. The broker does no file I/O through
/// glommio's DMA buffers, so the minimum glommio accepts is plenty.
const IO_MEMORY: usize = 64 * 1024;

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
    #[error("--data-dir: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::TlsError),
    #[error("--cluster: {0}")]
    Cluster(String),
}

/// A running broker. Dropping it does not stop it; call [`BrokerHandle::shutdown`].
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    mesh: Arc<Mesh>,
    executors: Vec<ExecutorJoinHandle<MetricsSnapshot>>,
    /// With `--data-dir`: holds the directory's lock until the broker is gone.
    _startup: Option<Arc<Startup>>,
    stats: Arc<StatsBoard>,
    tls: Vec<Option<Arc<TlsSettings>>>,
    bridges: BridgeBoard,
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterHandle>,
    /// What the shards and the cluster thread share (with `--cluster`).
    cluster_shared: Option<Arc<ClusterShared>>,
}

impl BrokerHandle {
    /// The addresses the broker listens on, with the ports the OS chose for port 0.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every shard's counters, refreshed once a second (see [`StatsBoard`]); readable from
    /// any thread while the broker runs.
    pub fn stats(&self) -> Arc<StatsBoard> {
        self.stats.clone()
    }

    /// With a cluster: messages handed to the cluster thread for other nodes, and those
    /// dropped because its outbox was full.
    pub fn cluster_counts(&self) -> Option<(u64, u64)> {
        self.cluster_shared.as_ref().map(|c| {
            (
                c.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                c.dropped.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// Every bridge's counters (see [`crate::broker::bridge`]), readable from any thread.
    pub fn bridges(&self) -> BridgeBoard {
        self.bridges.clone()
    }

    /// Reads the TLS certificate, key and CA files again (SIGHUP): new connections use them,
    /// open ones are not touched. On an error the old ones stay in use.
    pub fn reload_tls(&self) -> Result<(), crate::transport::TlsError> {
        for tls in self.tls.iter().flatten() {
            tls.reload()?;
        }
        Ok(())
    }

    /// Applies the authenticator's current ACL to the subscriptions that exist (call it after
    /// reloading the ACL, e.g. [`crate::auth::ReloadableAuthenticator::reload`]): which of them
    /// need each message checked is decided again. New connections and subscriptions use
    /// the current files anyway.
    pub fn reauthorize(&self) {
        for i in 0..self.mesh.shards() {
            let mut msg = ShardMessage::Reauthorize;
            while let Err(Refused::Full(back)) = self.mesh.try_send(ShardId(i as u16), msg) {
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Stops accepting, closes every connection, waits for the shards to finish and returns
    /// their final counters.
    pub fn shutdown(self) -> Vec<MetricsSnapshot> {
        for i in 0..self.mesh.shards() {
            let mut msg = ShardMessage::Shutdown;
            // A full inbox drains within microseconds; the broker is stopping, so just wait. A
            // shard that already stopped (it failed at start) needs no message.
            while let Err(Refused::Full(back)) = self.mesh.try_send(ShardId(i as u16), msg) {
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let last = self
            .executors
            .into_iter()
            .map(|e| e.join().unwrap_or_default())
            .collect();
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster {
            cluster.stop();
        }
        last
    }
}

/// How often a start picks its port 0 listeners' ports again when a shard could not bind one.
const PORT_PICKS: usize = 3;

/// Starts the broker's shards and returns once every shard listens on every address.
pub fn start(config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    // A port picked for a port 0 listener can be taken between the pick and the shards' own
    // binds (seen in CI: "Address already in use" from a shard). The port was ours to choose,
    // so choose again; a port the configuration names is never changed.
    let mut picks = 1;
    loop {
        match start_once(config.clone()) {
            Err(StartError::Listen { addr, .. })
                if picks < PORT_PICKS && port_was_picked(&config, addr) =>
            {
                warn!(%addr, "a shard could not listen on the port picked for it; picking another");
                picks += 1;
            }
            started => return started,
        }
    }
}

/// Whether `addr`'s port was picked by the broker (the configuration asks for port 0 there).
fn port_was_picked(config: &BrokerConfig, addr: SocketAddr) -> bool {
    let named = config.listen.iter().any(|l| l.addr.port() == addr.port());
    !named
        && config
            .listen
            .iter()
            .any(|l| l.addr.port() == 0 && l.addr.ip() == addr.ip())
}

fn start_once(config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    config.validate()?;
    ensure_locked_memory().map_err(|e| StartError::LockedMemory {
        have_kib: e.have_kib,
        need_kib: e.need_kib,
    })?;
    let listen: Vec<SocketAddr> = config.listen.iter().map(|l| l.addr).collect();
    let (addrs, _reservations) = resolve_listen_addrs(&listen)?;
    // One set of TLS settings per TLS listener: its own, or the broker's.
    let mut tls = Vec::with_capacity(config.listen.len());
    for l in &config.listen {
        tls.push(match l.tls.as_ref().or(config.tls.as_ref()) {
            Some(files) if l.transport.uses_tls() => Some(Arc::new(TlsSettings::load(files)?)),
            _ => None,
        });
    }
    let config = Arc::new(config);
    let shards = config.shards;
    let startup = match &config.data_dir {
        Some(dir) => Some(prepare(dir, shards)?),
        None => None,
    };
    let (mesh, inboxes) = Mesh::new(shards).map_err(|e| StartError::Executor {
        shard: 0,
        reason: format!("cannot create the shard doorbells: {e}"),
    })?;
    let bridges: BridgeBoard = Arc::new(
        config
            .bridges
            .iter()
            .map(|b| (b.name.clone(), Arc::new(BridgeStats::default())))
            .collect(),
    );
    let stats = StatsBoard::with_bridges(shards, bridges.clone());
    let cluster_shared = config
        .cluster
        .as_ref()
        .map(|c| ClusterShared::with_clock(ClaimClock::new(c.clock_offset_us), shards));
    if let Some(shared) = &cluster_shared {
        stats.set_cluster(shared.clone());
    }
    #[cfg(not(feature = "cluster"))]
    if config.cluster.is_some() {
        return Err(StartError::Cluster(
            "this build has no cluster support (cargo feature `cluster`)".into(),
        ));
    }
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
        let shard_startup = startup.clone();
        let shard_stats = stats.clone();
        let shard_bridges = bridges.clone();
        let shard_cluster = cluster_shared.clone();
        let shard_listeners: Vec<(SocketAddr, Transport, Option<Arc<TlsSettings>>)> = shard_addrs
            .iter()
            .zip(&config.listen)
            .zip(&tls)
            .map(|((addr, l), tls)| (*addr, l.transport.clone(), tls.clone()))
            .collect();
        let placement = match cpus.get(i % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("surgemq-shard-{i}"))
            .io_memory(IO_MEMORY)
            .spin_before_park(config.spin_before_sleep)
            // The log's commits run on these threads (`store::log_io`): pinned to the shard's
            // CPU, they would wait behind the shard whenever it is busy. Two, so that during a
            // compaction the old log's last commits need not wait behind the snapshot's write.
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(2))
            .spawn(move || async move {
                let shard = Rc::new(Shard::new(
                    ShardId(i as u16),
                    shard_config,
                    shard_mesh,
                    shard_sockets,
                ));
                if let Some(shared) = shard_cluster {
                    let _ = shard
                        .cluster
                        .set(ClusterPort::new(shared, ShardId(i as u16)));
                }
                let listeners = shard_listeners
                    .into_iter()
                    .map(|(addr, transport, tls)| {
                        let identity_as_username =
                            tls.as_ref().is_some_and(|t| t.identity_as_username());
                        let spec = ListenerSpec {
                            transport,
                            tls,
                            identity_as_username,
                        };
                        (addr, Rc::new(spec))
                    })
                    .collect();
                let tasks = ShardTasks {
                    startup: shard_startup,
                    stats: shard_stats,
                    bridges: shard_bridges,
                };
                run_shard(shard, inbox, listeners, tasks, ready).await
            });
        match spawned {
            Ok(handle) => executors.push(handle),
            Err(e) => {
                let handle = BrokerHandle {
                    addrs,
                    mesh,
                    executors,
                    _startup: None,
                    stats,
                    tls: Vec::new(),
                    bridges,
                    #[cfg(feature = "cluster")]
                    cluster: None,
                    cluster_shared: None,
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
    #[cfg(feature = "cluster")]
    let (cluster, cluster_failed) = match (&config.cluster, &cluster_shared) {
        (Some(c), Some(shared)) => {
            // With --data-dir the node's retained messages come from its own disk, whose copy
            // is the acknowledged one; the JetStream bucket may lag it (see `retained_kv`).
            let load_retained = config.data_dir.is_none();
            match crate::cluster::start(c, shared.clone(), mesh.clone(), shards, load_retained) {
                Ok(handle) => (Some(handle), None),
                Err(e) => (None, Some(StartError::Cluster(e.to_string()))),
            }
        }
        _ => (None, None),
    };
    let handle = BrokerHandle {
        addrs,
        mesh,
        executors,
        _startup: startup,
        stats,
        tls,
        bridges,
        #[cfg(feature = "cluster")]
        cluster,
        cluster_shared,
    };
    #[cfg(feature = "cluster")]
    if let Some(e) = cluster_failed {
        handle.shutdown();
        return Err(e);
    }
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
    if handle._startup.is_some() {
        // Loading a data directory built its image next to the live sessions; what it freed
        // stays in the allocator's arenas unless handed back. (glibc only, as is the broker.)
        // SAFETY: malloc_trim has no preconditions.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0);
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

/// What a shard runs beside its connections, handed over at start.
struct ShardTasks {
    startup: Option<Arc<Startup>>,
    stats: Arc<StatsBoard>,
    bridges: BridgeBoard,
}

async fn run_shard(
    shard: Rc<Shard>,
    inbox: InboxReceiver,
    addrs: Vec<(SocketAddr, Rc<ListenerSpec>)>,
    tasks: ShardTasks,
    ready: mpsc::Sender<Result<(), StartError>>,
) -> MetricsSnapshot {
    let ShardTasks {
        startup,
        stats,
        bridges,
    } = tasks;
    if let Some(startup) = &startup {
        if let Err(e) = restore(&shard, startup).await {
            let _ = ready.send(Err(e.into()));
            return MetricsSnapshot::default();
        }
        if super::restore::failed(startup) {
            let _ = ready.send(Err(StartError::Executor {
                shard: shard.id.index(),
                reason: "another shard could not restore its part of --data-dir".into(),
            }));
            return MetricsSnapshot::default();
        }
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for (addr, spec) in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push((l, spec)),
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
    let sweep = glommio::spawn_local(sweep_idle_connections(shard.clone()));
    let keepalives = glommio::spawn_local(watch_keepalives(shard.clone()));
    let stalls = glommio::spawn_local(watch_stalls(shard.clone()));
    let durable = glommio::spawn_local(confirm_durable(shard.clone()));
    let handed_on = glommio::spawn_local(hand_on(shard.clone()));
    let from_cluster = glommio::spawn_local(report_from_cluster(shard.clone()));
    let qos2 = glommio::spawn_local(super::shard::gates::accept_qos2(shard.clone()));
    let compaction = glommio::spawn_local(super::compaction::compact_journal(shard.clone()));
    let reports = glommio::spawn_local(report_stats(shard.clone(), stats.clone()));
    let sys = glommio::spawn_local(publish_sys(shard.clone(), stats.clone()));
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|(listener, spec)| glommio::spawn_local(accept_loop(shard.clone(), listener, spec)))
        .collect();
    shard.mesh().stop_barrier().join();
    let _ = ready.send(Ok(()));
    drop(ready);
    let bridges = start_bridges(&shard, &bridges);

    shard.stopped().await;
    drop(accepts);
    stop_bridges(bridges).await;
    // Give connections a moment to see their kick and close cleanly.
    for _ in 0..50 {
        if shard.metrics.connections.get() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(sys);
    drop(reports);
    drop(compaction);
    if shard.journal().is_some() {
        finish_handing_on(&shard).await;
    }
    drop(handed_on);
    drop(from_cluster);
    drop(qos2);
    final_sync(&shard).await;
    drop(durable);
    drop(stalls);
    drop(keepalives);
    drop(sweep);
    drop(expiry);
    drop(stall);
    drop(drain);
    if let Some(lot) = &shard.parking {
        // The watcher thread must not outlive the shard, even if something still holds it.
        lot.stop();
    }
    let last = shard.metrics.snapshot(shard.stalls());
    stats.publish(shard.id.index(), last.clone());
    last
}

/// Starts the bridges whose local session lives on this shard (the home shard of the local
/// client id): bridge task and session share a core. Each gets a channel whose closing
/// stops it.
fn start_bridges(
    shard: &Rc<Shard>,
    board: &BridgeBoard,
) -> Vec<(LocalSender<()>, glommio::task::JoinHandle<()>)> {
    let mut running = Vec::new();
    for (config, (_, stats)) in shard.config.bridges.iter().zip(board.iter()) {
        if home_shard(&config.local_client_id, shard.shards) != shard.id {
            continue;
        }
        let (stop, stopped) = local_channel::new_bounded(1);
        let task = glommio::spawn_local(bridge::run(
            shard.clone(),
            Arc::new(config.clone()),
            stats.clone(),
            stopped,
        ))
        .detach();
        running.push((stop, task));
    }
    running
}

/// Lets each bridge say goodbye to its remote broker (at most about a second).
async fn stop_bridges(running: Vec<(LocalSender<()>, glommio::task::JoinHandle<()>)>) {
    let (stops, tasks): (Vec<_>, Vec<_>) = running.into_iter().unzip();
    drop(stops);
    for task in tasks {
        let _ = futures_lite::future::or(
            async {
                task.await;
            },
            glommio::timer::sleep(Duration::from_millis(1500)),
        )
        .await;
    }
}

/// Resolves port 0 to concrete ports (see [`crate::sys::reserve_port`]); the reservations
/// must live until the shards listen.
fn resolve_listen_addrs(
    listen: &[SocketAddr],
) -> Result<(Vec<SocketAddr>, Vec<socket2::Socket>), StartError> {
    let mut addrs = Vec::with_capacity(listen.len());
    let mut reservations = Vec::new();
    for &addr in listen {
        let (local, socket) =
            reserve_port(addr).map_err(|source| StartError::Listen { addr, source })?;
        addrs.push(local);
        reservations.extend(socket);
    }
    Ok((addrs, reservations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &[&str]) -> BrokerConfig {
        BrokerConfig {
            listen: listen
                .iter()
                .map(|a| a.parse::<SocketAddr>().unwrap().into())
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_port_the_broker_picked_is_picked_again() {
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
        let picked = config(&["127.0.0.1:0", "127.0.0.1:1883"]);
        assert!(port_was_picked(&picked, addr("127.0.0.1:42829")));
        assert!(!port_was_picked(&picked, addr("127.0.0.1:1883")));
        assert!(!port_was_picked(&picked, addr("10.0.0.1:42829")));
        assert!(!port_was_picked(
            &config(&["127.0.0.1:1883"]),
            addr("127.0.0.1:1883")
        ));
    }
}
