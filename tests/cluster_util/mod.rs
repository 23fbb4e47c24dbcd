//! What the cluster tests share: a three-server NATS cluster (the Debian `nats-server`,
//! routed, on free loopback ports), SurgeMQ nodes in this process or as processes of their
//! own, and waiting for the nodes' interest to spread.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use surgemq::broker::config::ClusterConfig;
use surgemq::broker::BrokerConfig;

use crate::common::*;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three nats-server processes routed into one cluster, JetStream on (each storing under a
/// directory of its own); killed, and their directories removed, when dropped.
pub struct Nats {
    servers: Vec<Option<Child>>,
    ports: Vec<u16>,
    routes: Vec<u16>,
    store: std::path::PathBuf,
    /// The servers do not tell clients of each other (`--no_advertise`).
    unadvertised: bool,
}

/// Starts server `i` of the cluster.
fn spawn_server(nats: &Nats, i: usize) -> Child {
    let (ports, routes, store) = (&nats.ports, &nats.routes, &nats.store);
    let all_routes = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &ports[i].to_string()])
        .args(["--server_name", &format!("n{i}"), "-js", "--store_dir"])
        .arg(store.join(format!("n{i}")))
        .args(["--cluster_name", "surgemq-test"])
        .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
        .args(["--routes", &all_routes])
        .args(nats.unadvertised.then_some("--no_advertise=true"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (apt-get install nats-server)")
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(false)
    }

    /// Servers that do not tell their clients of the others: a node given one server's URL
    /// is cut off from NATS while that server is down, instead of failing over.
    pub fn start_unadvertised() -> Nats {
        Nats::start_with(true)
    }

    fn start_with(unadvertised: bool) -> Nats {
        // Ports are free when chosen, but another test (or test process) starting its own
        // cluster at the same moment may take one before nats-server binds it; then the
        // cluster does not form, and another set of ports is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut nats = Nats::spawn_all(unadvertised);
            match nats.listening().and_then(|()| nats.routed()) {
                Ok(()) => return nats,
                Err(e) => failures.push(e),
            }
        }
        panic!("no NATS cluster came up: {failures:?}");
    }

    fn spawn_all(unadvertised: bool) -> Nats {
        // Six distinct ports: held together, so the kernel cannot hand one out twice.
        let held: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let all: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let (ports, routes) = (all[..3].to_vec(), all[3..].to_vec());
        let store = std::env::temp_dir().join(format!(
            "surgemq-nats-js-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let mut nats = Nats {
            servers: Vec::new(),
            ports,
            routes,
            store,
            unadvertised,
        };
        nats.servers = (0..3).map(|i| Some(spawn_server(&nats, i))).collect();
        nats
    }

    /// Whether every server listens on its client port (within 15 s; one that exited, at
    /// once: its port was taken).
    fn listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        for i in 0..3 {
            while TcpStream::connect(("127.0.0.1", self.ports[i])).is_err() {
                let exited = self.servers[i]
                    .as_mut()
                    .is_none_or(|c| c.try_wait().ok().flatten().is_some());
                if exited || Instant::now() >= deadline {
                    return Err(format!("server {i} does not listen on {}", self.ports[i]));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Whether a message published on any server reaches every other one (within 10 s).
    fn routed(&self) -> Result<(), String> {
        run(async {
            let mut clients = Vec::new();
            for i in 0..3 {
                let client = async_nats::connect(self.url(i))
                    .await
                    .map_err(|e| format!("server {i}: {e}"))?;
                clients.push(client);
            }
            for to in 0..3 {
                let mut sub = clients[to]
                    .subscribe(format!("routes.ready.{to}"))
                    .await
                    .map_err(|e| e.to_string())?;
                clients[to].flush().await.map_err(|e| e.to_string())?;
                for from in (0..3).filter(|&f| f != to) {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        clients[from]
                            .publish(format!("routes.ready.{to}"), "?".into())
                            .await
                            .map_err(|e| e.to_string())?;
                        clients[from].flush().await.map_err(|e| e.to_string())?;
                        let got =
                            tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
                        if matches!(got, Ok(Some(_))) {
                            break;
                        }
                        if Instant::now() >= deadline {
                            return Err(format!("NATS servers {from} -> {to} not routed"));
                        }
                    }
                    // Drain the extra probes.
                    while let Ok(Some(_)) =
                        tokio::time::timeout(Duration::from_millis(50), sub.next()).await
                    {
                    }
                }
            }
            Ok(())
        })
    }

    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i])
    }

    /// Starts server `i` again after [`Nats::kill`], on its port and routes.
    pub fn restart(&mut self, i: usize) {
        if self.servers[i].is_none() {
            self.servers[i] = Some(spawn_server(self, i));
            wait_listening(self.ports[i]);
        }
    }

    /// Stops server `i` (SIGSTOP): its connections stay open, but it answers nothing.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: i32) {
        let child = self.servers[i].as_ref().expect("server running");
        // SAFETY: kill(2) on our own child's pid, which it keeps until waited for.
        assert_eq!(
            unsafe { libc::kill(child.id() as i32, signal) },
            0,
            "signal {signal}"
        );
    }

    /// Stops server `i` as an operator would (SIGTERM: it shuts down in order, its
    /// JetStream state written out), for [`Nats::restart`]; killed if it takes over 10 s.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            // SAFETY: kill(2) on our own child's pid, which it keeps until waited for.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// How long a process is given to listen on its port.
const WAIT: Duration = Duration::from_secs(15);

pub fn wait_listening(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < WAIT, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A SurgeMQ node on the given NATS servers (the first is the one it prefers).
pub fn node(name: &str, shards: usize, servers: Vec<String>) -> Broker {
    let first = servers[0].clone();
    let broker = Broker::with_config(BrokerConfig {
        shards,
        sys_interval: Duration::ZERO,
        cluster: Some(ClusterConfig {
            servers,
            node_id: name.to_string(),
            queue_copies: true,
            queue_copies_wait: true,
            online_copies: true,
            clock_offset_us: 0,
        }),
        ..test_config()
    });
    until_sessions_bucket(&first);
    broker
}

/// Publishes `probe` on `publisher` (QoS 0) until `subscriber`, subscribed to it, gets one:
/// the nodes' interest has spread. Reads the probes that follow, so nothing is left over.
pub fn until_connected(publisher: &mut RawClient, subscriber: &mut RawClient, probe: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        publisher.publish0(probe, b"probe", false);
        if subscriber
            .next_frame_within(Duration::from_millis(100))
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "{probe} never crossed nodes");
    }
    while subscriber
        .next_frame_within(Duration::from_millis(300))
        .is_some()
    {}
}

/// Waits until each of two nodes has heard the other (a probe published on each reaches a
/// subscriber on the other), so each waits for the other's answer to a claim.
pub fn until_nodes_know_each_other(a: std::net::SocketAddr, b: std::net::SocketAddr) {
    for (from, to, topic) in [(a, b, "probe/ab"), (b, a, "probe/ba")] {
        let mut publisher = connect_to(from, "probe-pub");
        let mut subscriber = connect_to(to, "probe-sub");
        subscriber.subscribe(1, &[(topic, 0)]);
        until_connected(&mut publisher, &mut subscriber, topic);
    }
}

/// Whether the session directory in JetStream has an entry for `client_id`, waited for
/// until it is `present` (the bucket is made as the nodes start, and written in the
/// background).
pub fn until_stored(nats: &Nats, client_id: &str, present: bool) {
    until_entry(nats, client_id, &format!("present={present}"), |entry| {
        entry.is_some() == present
    });
}

/// Waits until the session directory's entry for `client_id` (None: none) passes `check`;
/// fails after 45 s, saying `what` it never was.
pub fn until_entry(
    nats: &Nats,
    client_id: &str,
    what: &str,
    check: impl Fn(Option<&[u8]>) -> bool,
) {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::URL_SAFE.encode(client_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    run(async {
        let client = async_nats::connect(nats.url(2)).await.unwrap();
        let js = async_nats::jetstream::new(client);
        loop {
            let entry = match js.get_key_value("SMQ_SESSIONS").await {
                Ok(kv) => kv.get(&key).await.ok().flatten(),
                Err(_) => None,
            };
            if check(entry.as_deref()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the session directory's entry for {client_id} was never {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A node as its own `surgemq serve` process, killed with SIGKILL when dropped. Its log
/// (warnings and errors, and the cluster's debug lines) goes to a file, printed when a
/// failing test drops the node: what the node said is often what explains a cluster test
/// that failed once under load.
pub struct NodeProcess {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl NodeProcess {
    pub fn start(name: &str, nats: &str) -> NodeProcess {
        NodeProcess::start_with(name, nats, &[])
    }

    /// With more `surgemq serve` arguments (a `--data-dir`, say; one shard unless they say
    /// `--shards`).
    pub fn start_with(name: &str, nats: &str, more: &[&str]) -> NodeProcess {
        let node = NodeProcess::spawn(name, nats, more);
        until_sessions_bucket(nats);
        node
    }

    /// Started without waiting for the session bucket to have a leader: for a node that
    /// starts while JetStream cannot answer.
    pub fn start_while_jetstream_is_down(name: &str, nats: &str) -> NodeProcess {
        NodeProcess::spawn(name, nats, &[])
    }

    fn spawn(name: &str, nats: &str, more: &[&str]) -> NodeProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "surgemq-node-{name}-{port}-{}.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log).expect("the node's log file");
        let shards: &[&str] = if more.contains(&"--shards") {
            &[]
        } else {
            &["--shards", "1"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(shards)
            .args(["--cluster", nats, "--node-id", name])
            .args(more)
            // Warnings, and what a resume found in JetStream: a failing test prints the
            // last lines (see Drop).
            .env("RUST_LOG", "warn,surgemq::cluster=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the surgemq binary");
        wait_listening(port);
        NodeProcess { child, port, log }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP): its sockets stay open, but it does nothing.
    pub fn pause(&mut self) {
        assert!(self.signal(libc::SIGSTOP), "SIGSTOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&mut self) {
        assert!(self.signal(libc::SIGCONT), "SIGCONT");
    }

    /// Whether `signal` was sent (no `kill` program needed: a slim machine may lack one).
    fn signal(&self, signal: i32) -> bool {
        // SAFETY: kill(2) on our own child's pid, which it keeps until waited for.
        unsafe { libc::kill(self.child.id() as i32, signal) == 0 }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- the last {} lines of the log of the node on port {} ---\n{}",
                tail.len(),
                self.port,
                tail.join("\n")
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A 3.1.1 client resuming `client_id` (CleanSession 0) on `node`, whose CONNACK must say
/// Session Present `present`, tried again while the node refuses it (see
/// [`connect_past_refusals`]).
#[track_caller]
pub fn resume(node: &NodeProcess, client_id: &str, present: bool) -> RawClient {
    let connect = ConnectBuilder::new(client_id).clean(false);
    connect_past_refusals(
        node.addr(),
        &connect,
        &[0x20, 0x02, u8::from(present), 0x00],
    )
}

pub fn connect_to(addr: std::net::SocketAddr, id: &str) -> RawClient {
    let mut c = RawClient::open(addr);
    c.send(&ConnectBuilder::new(id).build());
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
    c
}

/// Payload `i` of a queued run: about 2 KiB, its number first, so 600 of them are more than
/// NATS's default 1 MB max payload.
pub fn queued_payload(i: u16) -> Vec<u8> {
    let mut p = format!("{i:05}").into_bytes();
    p.resize(2048, b'x');
    p
}

/// What a resumed session owes its client: the message it had not acknowledged (`unacked`,
/// payload "in flight") again with DUP and its packet id (MQTT-4.4.0-1), then `queued`
/// messages of [`queued_payload`] in order; each acknowledged.
pub fn expect_owed(client: &mut RawClient, unacked: u16, queued: u16) {
    let (again, frame) = client.next_publish();
    assert_eq!(
        frame[0],
        0x3a,
        "PUBLISH QoS 1 with DUP: {:02x?}",
        &frame[..4]
    );
    assert_eq!(
        (&again.payload[..], again.packet_id),
        (&b"in flight"[..], unacked)
    );
    client.ack(&again);
    for i in 1..=queued {
        let (p, _) = client.next_publish();
        assert_eq!(&p.payload[..5], &queued_payload(i)[..5], "message {i}");
        assert_eq!(p.payload.len(), 2048);
        client.ack(&p);
    }
}

/// The leader of JetStream stream `name`, as `js` tells it (None: no leader, or no answer
/// within 2 s).
async fn leader_of(js: &async_nats::jetstream::Context, name: &str) -> Option<String> {
    let asked = tokio::time::timeout(Duration::from_secs(2), async {
        let mut stream = js.get_stream(name).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref().and_then(|c| c.leader.clone())
    });
    asked.await.ok().flatten()
}

/// Waits until the leaders of the session directory's and the queue copies' streams, as NATS
/// server `via` tells them, pass `check`; fails after 45 s, saying `what` they never were.
pub fn until_leaders(nats: &Nats, via: usize, what: &str, check: impl Fn(Option<&str>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    run(async {
        let client = async_nats::connect(nats.url(via)).await.unwrap();
        let js = async_nats::jetstream::new(client);
        for name in ["KV_SMQ_SESSIONS", "SMQ_QUEUES"] {
            while !check(leader_of(&js, name).await.as_deref()) {
                assert!(Instant::now() < deadline, "{name} was never {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
}

/// Waits until the session directory's bucket, which a node makes when it starts, has a
/// leader (as the NATS server at `url` tells; no server there, or no JetStream: no wait):
/// until then a node cannot say whether a client has a session, and refuses its resume.
pub fn until_sessions_bucket(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    run(async {
        let Ok(client) = async_nats::connect(url).await else {
            return;
        };
        // Nor without JetStream (nobody answers its API).
        let info = client.request("$JS.API.INFO", "".into()).await;
        if info.is_err_and(|e| e.kind() == async_nats::client::RequestErrorKind::NoResponders) {
            return;
        }
        let js = async_nats::jetstream::new(client);
        while leader_of(&js, "KV_SMQ_SESSIONS").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the session bucket never had a leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
