//! Harness of the end-to-end persistence tests: the real `surgemq serve` binary in a child
//! process that is always killed (a guard sends SIGKILL when a test fails halfway), a temporary
//! directory per test, the data directory's fixed layout (`CURRENT`, `gen-G/shard-N.log`,
//! `lock`), and an independent reader of the log frames (`[len u32le][crc32c u32le][kind][body]`)
//! for tests that tear or damage a log on purpose.
//!
//! Nothing here sleeps to synchronise except the bounded polls for a child's listener and for
//! a child's exit.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ConnectBuilder, RawClient};

/// How long a broker may take to listen after it was spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker may take to exit: after SIGTERM, or when it must refuse to start.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// CONNACK accepted, Session Present 0.
pub const CONNACK_NEW: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// CONNACK accepted, Session Present 1 (MQTT-3.2.2-2).
pub const CONNACK_RESUMED: [u8; 4] = [0x20, 0x02, 0x01, 0x00];

// ----- temporary directories ----------------------------------------------------------------

/// A directory of its own for one test, removed when dropped. Its path is canonical, so it is
/// the same string the broker prints for paths under it.
pub struct TestDir {
    pub root: PathBuf,
    spawned: AtomicUsize,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let base = fs::canonicalize(std::env::temp_dir()).expect("canonical temp dir");
        let root = base.join(format!(
            "surgemq-persistence-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the test directory");
        TestDir {
            root,
            spawned: AtomicUsize::new(0),
        }
    }

    /// The data directory the tests give to `--data-dir` (not created: the broker does that).
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A new file for the stderr of the next child process.
    fn stderr_file(&self) -> PathBuf {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("stderr-{n}.txt"))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A port of 127.0.0.1 that was free a moment ago. Every start uses a new one, so a restart
/// never waits for the previous broker's sockets.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port of 127.0.0.1, kept bound (SO_REUSEPORT, not listening) by the returned socket.
/// The broker binds it too (it sets SO_REUSEPORT), while no other test can be handed it: with
/// a port that was merely free a moment ago, two brokers of tests running side by side could
/// both bind it, and the kernel would spread one test's connections over both.
pub fn reserved_port() -> (u16, socket2::Socket) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("an IP socket")
        .port();
    (port, socket)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

// ----- child processes ----------------------------------------------------------------------

/// A child process, SIGKILLed and reaped when dropped unless it has exited already: a test
/// that fails halfway leaves no broker behind.
pub struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
    stderr: PathBuf,
}

impl Proc {
    /// `surgemq serve ARGS`, stdout discarded, stderr into a file of `dir`.
    pub fn serve(dir: &TestDir, args: &[String], configure: impl FnOnce(&mut Command)) -> Proc {
        let stderr = dir.stderr_file();
        let file = fs::File::create(&stderr).expect("create the stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_surgemq"));
        cmd.arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawn surgemq serve");
        Proc {
            child,
            exited: None,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if the process has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits (polling) at most `within` for the process to exit.
    pub fn wait_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, signal: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on our own child, which has not been reaped (its pid is ours).
            unsafe { libc::kill(self.child.id() as i32, signal) };
        }
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the killed child");
        self.exited = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How a test stops a broker.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGTERM: it must exit 0 within [`EXIT_TIMEOUT`].
    Term,
    /// SIGKILL: a crash, nothing flushed at the end.
    Kill,
}

/// A running `surgemq serve` that listens on `addr`.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// Holds the port for this broker alone (see [`reserved_port`]).
    _port: socket2::Socket,
}

/// `--shards N` and, when given, `--data-dir DIR`.
pub fn serve_args(shards: usize, data_dir: Option<&Path>) -> Vec<String> {
    let mut args = vec!["--shards".to_string(), shards.to_string()];
    if let Some(dir) = data_dir {
        args.push("--data-dir".to_string());
        args.push(path_str(dir).to_string());
    }
    args
}

impl Server {
    /// `surgemq serve --listen 127.0.0.1:PORT --shards N [--data-dir DIR]`, once it listens.
    #[track_caller]
    pub fn start(dir: &TestDir, shards: usize, data_dir: Option<&Path>) -> Server {
        Server::start_with(dir, &serve_args(shards, data_dir), |_| {})
    }

    /// `surgemq serve --listen 127.0.0.1:PORT ARGS`, once it listens. If the process exits
    /// first, the test fails with its stderr (today: the unknown `--data-dir` flag).
    #[track_caller]
    pub fn start_with(
        dir: &TestDir,
        args: &[String],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let (port, reservation) = reserved_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut all = vec!["--listen".to_string(), addr.to_string()];
        all.extend_from_slice(args);
        let mut proc = Proc::serve(dir, &all, configure);
        let started = Instant::now();
        loop {
            if let Some(status) = proc.try_exited() {
                panic!(
                    "surgemq serve {all:?} exited ({status}) instead of listening; stderr:\n{}",
                    proc.stderr()
                );
            }
            if TcpStream::connect(addr).is_ok() {
                return Server {
                    proc,
                    addr,
                    _port: reservation,
                };
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "surgemq serve {all:?} did not listen within {START_TIMEOUT:?}; stderr:\n{}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `connect` on a new connection and expects exactly `connack`.
    #[track_caller]
    pub fn connect_expecting(&self, connect: &ConnectBuilder, connack: &[u8]) -> RawClient {
        let mut c = RawClient::open(self.addr);
        c.send(&connect.build());
        c.expect_bytes(connack);
        c
    }

    /// A client (any CleanSession) that must find no stored session: CONNACK `20 02 00 00`.
    #[track_caller]
    pub fn connect_new(&self, connect: &ConnectBuilder) -> RawClient {
        self.connect_expecting(connect, &CONNACK_NEW)
    }

    /// A CleanSession = 0 client that must find its session: CONNACK `20 02 01 00`.
    #[track_caller]
    pub fn resume(&self, connect: &ConnectBuilder) -> RawClient {
        self.connect_expecting(connect, &CONNACK_RESUMED)
    }

    /// A CleanSession = 1 client.
    #[track_caller]
    pub fn clean(&self, client_id: &str) -> RawClient {
        self.connect_new(&ConnectBuilder::new(client_id))
    }

    /// Stops the broker as `how` says and waits for the process to end.
    #[track_caller]
    pub fn stop(mut self, how: Stop) {
        match how {
            Stop::Kill => {
                self.proc.kill9();
            }
            Stop::Term => {
                self.proc.signal(libc::SIGTERM);
                match self.proc.wait_within(EXIT_TIMEOUT) {
                    Some(status) => assert!(
                        status.success(),
                        "exit status {status} after SIGTERM; stderr:\n{}",
                        self.proc.stderr()
                    ),
                    None => panic!(
                        "still running {EXIT_TIMEOUT:?} after SIGTERM; stderr:\n{}",
                        self.proc.stderr()
                    ),
                }
            }
        }
    }
}

/// Runs `surgemq serve --listen 127.0.0.1:PORT ARGS`, which must exit non-zero within
/// [`EXIT_TIMEOUT`] (it is killed otherwise); returns its stderr.
#[track_caller]
pub fn serve_must_fail(dir: &TestDir, args: &[String]) -> String {
    let mut all = vec!["--listen".to_string(), format!("127.0.0.1:{}", free_port())];
    all.extend_from_slice(args);
    let mut proc = Proc::serve(dir, &all, |_| {});
    let Some(status) = proc.wait_within(EXIT_TIMEOUT) else {
        panic!(
            "surgemq serve {all:?} still running after {EXIT_TIMEOUT:?}; it should have refused \
             to start; stderr:\n{}",
            proc.stderr()
        );
    };
    let stderr = proc.stderr();
    assert!(
        !status.success(),
        "surgemq serve {all:?} exited successfully; stderr:\n{stderr}"
    );
    stderr
}

/// The one line of an error on stderr (trailing newline removed); fails on more or none.
#[track_caller]
pub fn one_line(stderr: &str) -> &str {
    let text = stderr.trim_end();
    assert_eq!(
        text.lines().count(),
        1,
        "expected exactly one line on stderr, got:\n{stderr}"
    );
    text
}

/// Whether `text` says `offset N` (and not `offset N0...`).
pub fn mentions_offset(text: &str, offset: usize) -> bool {
    let needle = format!("offset {offset}");
    text.match_indices(&needle)
        .any(|(at, m)| !text[at + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

// ----- the data directory's layout -----------------------------------------------------------

/// The generation `DIR/CURRENT` names: decimal, with an optional trailing newline.
#[track_caller]
pub fn current_generation(data: &Path) -> u64 {
    let path = data.join("CURRENT");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let digits = text.strip_suffix('\n').unwrap_or(&text);
    digits
        .parse()
        .unwrap_or_else(|e| panic!("{} holds {text:?}, not a generation: {e}", path.display()))
}

/// The `gen-*` entries of the data directory, sorted.
pub fn generation_dirs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", data.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    names.sort();
    names
}

pub fn generation_dir(data: &Path, generation: u64) -> PathBuf {
    data.join(format!("gen-{generation}"))
}

/// `DIR/gen-G/shard-N.log`.
pub fn log_file(data: &Path, generation: u64, shard: usize) -> PathBuf {
    generation_dir(data, generation).join(format!("shard-{shard}.log"))
}

/// Checks the layout a stopped broker with `shards` shards leaves: `CURRENT` names G, `gen-G`
/// is the only generation left, and it holds exactly `shard-0.log` .. `shard-{shards-1}.log`
/// (other files are not looked at). Returns G.
#[track_caller]
pub fn assert_layout(data: &Path, shards: usize) -> u64 {
    let generation = current_generation(data);
    assert_eq!(
        generation_dirs(data),
        vec![format!("gen-{generation}")],
        "CURRENT names generation {generation}: the only generation directory left in {}",
        data.display()
    );
    let dir = generation_dir(data, generation);
    let mut logs: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shard-") && n.ends_with(".log"))
        .collect();
    logs.sort_by_key(|n| {
        n["shard-".len()..n.len() - ".log".len()]
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    let expected: Vec<String> = (0..shards).map(|n| format!("shard-{n}.log")).collect();
    assert_eq!(logs, expected, "one log per shard in {}", dir.display());
    generation
}

// ----- log frames ---------------------------------------------------------------------------

/// Bytes of a frame before its kind: length and checksum.
pub const FRAME_HEADER: usize = 8;

/// The size of the intact frame that starts at `at`, if one does: a non-zero length that fits
/// in `bytes`, and a CRC-32C over the length bytes, the kind and the body that matches.
pub fn intact_frame_at(bytes: &[u8], at: usize) -> Option<usize> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if len == 0 {
        return None;
    }
    let rest = bytes.get(at + FRAME_HEADER..(at + FRAME_HEADER).checked_add(len)?)?;
    let expected = crc32c::crc32c_append(crc32c::crc32c(&header[0..4]), rest);
    (expected == crc).then_some(FRAME_HEADER + len)
}

/// The intact frames from the start of a log, and the offset where they end.
pub fn frames(bytes: &[u8]) -> (Vec<Range<usize>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(size) = intact_frame_at(bytes, at) {
        out.push(at..at + size);
        at += size;
    }
    (out, at)
}

/// Reads a log and checks it is intact frames only, then nothing or zeros; returns its bytes
/// and its frames.
#[track_caller]
pub fn read_clean_log(path: &Path) -> (Vec<u8>, Vec<Range<usize>>) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (frames, end) = frames(&bytes);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "{}: {} bytes after the last intact frame (offset {end}) that are not zeros",
        path.display(),
        bytes.len() - end
    );
    (bytes, frames)
}

/// Whether an intact frame starts anywhere at or after `from`.
pub fn any_intact_frame_from(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| intact_frame_at(bytes, at).is_some())
}

/// `n` bytes of a fixed xorshift sequence, none of them zero: garbage that reads neither as
/// zeros (the end of a log) nor, with overwhelming odds, as a frame.
pub fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = (seed >> 24) as u8;
        if b != 0 {
            out.push(b);
        }
    }
    out
}
