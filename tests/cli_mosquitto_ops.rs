//! `surgemq serve -c mosquitto.conf` where Mosquitto's meaning reaches past the option
//! parser, checked on the binary with raw sockets: a `listener PORT` without an address
//! listens on every IPv4 and IPv6 address; a `protocol websockets` listener takes an upgrade
//! on any path; `log_type` lines choose the log level unless `--log-level` does.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory for one test's files, removed when it ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("surgemq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `surgemq serve` child, killed when the test ends, failed or not.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Served {
    fn start(args: &[&str]) -> Served {
        Served(
            Command::new(env!("CARGO_BIN_EXE_surgemq"))
                .arg("serve")
                .args(args)
                .env_remove("RUST_LOG")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Stops it with SIGTERM and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let mut err = String::new();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(self.0.wait().unwrap().success(), "{err}");
        err
    }
}

fn wait_for(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this machine has an IPv6 loopback address to connect to.
fn has_ipv6_loopback() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// An MQTT 3.1.1 CONNECT (clean session, keepalive 60) for `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Connects over plain MQTT to `addr` and expects CONNACK 0.
fn mqtt_connects(addr: SocketAddr, id: &str) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(&connect_packet(id)).unwrap();
    assert_eq!(read_exact(&mut s, 4), CONNACK, "CONNACK on {addr}");
}

/// Upgrades to a WebSocket on `path` at `addr` with raw bytes, sends CONNECT in a masked
/// binary frame and expects 101 and then CONNACK 0 in a binary frame.
fn ws_connects(addr: SocketAddr, path: &str, id: &str) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes();
    let connect = connect_packet(id);
    let mask = [7u8, 1, 2, 3];
    request.extend_from_slice(&[0x82, 0x80 | connect.len() as u8]);
    request.extend_from_slice(&mask);
    request.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    s.write_all(&request).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_exact(&mut s, 1));
        assert!(head.len() < 4096, "{}", String::from_utf8_lossy(&head));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{path} on {addr}: {head}"
    );
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    let frame = read_exact(&mut s, 6);
    assert_eq!(frame[..2], [0x82, 0x04], "a binary frame of 4 bytes");
    assert_eq!(frame[2..], CONNACK, "CONNACK over {path} on {addr}");
}

#[test]
fn a_listener_without_an_address_takes_ipv4_and_ipv6_and_websockets_any_path() {
    let dir = Dir::new("mosqconf-any");
    let (mqtt, websockets) = (free_port(), free_port());
    let conf = dir.write(
        "mosquitto.conf",
        &format!(
            "allow_anonymous true\n\
             listener {mqtt}\n\
             \n\
             listener {websockets}\n\
             protocol websockets\n"
        ),
    );
    let broker = Served::start(&["-c", &conf, "--shards", "1"]);
    let v4 = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    wait_for(v4(mqtt));
    wait_for(v4(websockets));
    mqtt_connects(v4(mqtt), "v4");
    for path in ["/", "/foo", "/mqtt"] {
        ws_connects(v4(websockets), path, "ws-v4");
    }
    if has_ipv6_loopback() {
        mqtt_connects(v6(mqtt), "v6");
        ws_connects(v6(websockets), "/", "ws-v6");
    } else {
        println!("note: this machine has no IPv6 loopback (::1): the IPv6 half is skipped");
    }
    let log = broker.stop();
    assert!(!log.contains(" WARN "), "{log}");
}

/// Runs the broker on `conf_lines` (plus an MQTT listener) with `flags`, connects a client,
/// and returns its log.
fn log_with(name: &str, conf_lines: &str, flags: &[&str]) -> String {
    let dir = Dir::new(name);
    let port = free_port();
    let conf = dir.write(
        "mosquitto.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\n{conf_lines}"),
    );
    let mut args = vec!["-c", &conf, "--shards", "1"];
    args.extend_from_slice(flags);
    let broker = Served::start(&args);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr);
    mqtt_connects(addr, "logged");
    broker.stop()
}

fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!(" {level} ")))
        .collect()
}

#[test]
fn log_type_lines_choose_the_level_unless_the_command_line_does() {
    // Only errors: the start, the connection and the stop are not logged.
    let log = log_with("mosqconf-log-error", "log_type error\n", &[]);
    assert_eq!(log, "", "error level only");

    // Debug (and `all`): a client's connection is logged.
    for types in ["log_type debug\n", "log_type all\n"] {
        let log = log_with("mosqconf-log-debug", types, &[]);
        assert!(
            lines_at(&log, "DEBUG")
                .iter()
                .any(|l| l.contains("client connected")),
            "{types}: {log}"
        );
        assert!(log.contains("surgemq broker started"), "{log}");
    }

    // Information: the start, not the connection.
    let log = log_with(
        "mosqconf-log-info",
        "log_type error\nlog_type information\n",
        &[],
    );
    assert!(log.contains("surgemq broker started"), "{log}");
    assert!(lines_at(&log, "DEBUG").is_empty(), "{log}");

    // `none`: nothing at all.
    let log = log_with("mosqconf-log-none", "log_type none\n", &[]);
    assert_eq!(log, "");

    // --log-level wins over the file, with a warning naming the line.
    let log = log_with(
        "mosqconf-log-flag",
        "log_type error\n",
        &["--log-level", "debug"],
    );
    assert!(
        lines_at(&log, "DEBUG")
            .iter()
            .any(|l| l.contains("client connected")),
        "{log}"
    );
    let warnings = lines_at(&log, "WARN");
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].ends_with(
            ":3: `log_type` asks for the error level, but --log-level sets debug and wins"
        ),
        "{log}"
    );

    // Types a level cannot carry: one warning for all of them.
    let log = log_with(
        "mosqconf-log-subscribe",
        "log_type information\nlog_type subscribe\nlog_type unsubscribe\n",
        &[],
    );
    let warnings = lines_at(&log, "WARN");
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(":4: `log_type subscribe`, `log_type unsubscribe` add nothing"),
        "{log}"
    );
    assert!(log.contains("surgemq broker started"), "{log}");
}
