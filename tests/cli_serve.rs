//! The `surgemq serve` binary as a user meets it: bad flags, too little locked memory, and
//! stopping on SIGTERM/SIGINT.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn surgemq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_surgemq"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stderr_of(args: &[&str]) -> (bool, String) {
    let out = surgemq().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_values_give_one_line_naming_the_flag() {
    for (args, flag) in [
        (&["serve", "--shards", "0"][..], "--shards"),
        (&["serve", "--max-inflight", "0"][..], "--max-inflight"),
        (
            &["serve", "--max-packet-size", "3"][..],
            "--max-packet-size",
        ),
        (
            &["serve", "--connect-timeout", "0"][..],
            "--connect-timeout",
        ),
        (&["serve", "--node-id", "x"][..], "--node-id"),
        (
            &["serve", "--cluster-queue-copies", "false"][..],
            "--cluster-queue-copies",
        ),
        (
            &["serve", "--cluster-queue-copies-wait", "false"][..],
            "--cluster-queue-copies-wait",
        ),
        (
            &["serve", "--cluster-online-copies", "false"][..],
            "--cluster-online-copies",
        ),
        (&["serve", "--cluster", "bad url"][..], "--cluster"),
        (
            &[
                "serve",
                "--cluster",
                "nats://127.0.0.1:4",
                "--node-id",
                "a b",
            ][..],
            "--node-id",
        ),
    ] {
        let (ok, err) = stderr_of(args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    for (args, flag) in [
        (&["serve", "--listen", "not-an-address"][..], "--listen"),
        (&["serve", "--shards", "many"][..], "--shards"),
        (
            &["serve", "--park-idle-after", "soon"][..],
            "--park-idle-after",
        ),
        (&["serve", "--no-such-flag"][..], "--no-such-flag"),
        (&["passwd", "-b"][..], "<FILE>"),
    ] {
        let (ok, err) = stderr_of(args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn too_little_locked_memory_is_a_clear_error() {
    let port = free_port();
    let script = format!(
        "ulimit -l 64 && exec {} serve --listen 127.0.0.1:{port} --shards 1",
        env!("CARGO_BIN_EXE_surgemq")
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ulimit -l"), "names what to raise: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn wait_for_listener(addr: SocketAddr) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("broker did not start: {e}"),
        }
    }
}

/// A `surgemq serve` child that is killed when the test ends, failed or not, so that a
/// failing test leaves no broker behind.
struct Served(std::process::Child);

impl std::ops::Deref for Served {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `surgemq serve` on 127.0.0.1:`port` with `shards` shards and `extra` flags.
fn spawn_serve(port: u16, shards: &str, extra: &[&str], stderr: Stdio) -> Served {
    Served(
        surgemq()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shards",
                shards,
            ])
            .args(extra)
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// Stops the broker with SIGTERM and returns what it logged (its stderr, piped), once it
/// exited with success.
fn stop_and_read_log(child: &mut Served) -> String {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    log
}

/// Waits for the child to exit, failing the test after `limit`.
fn exit_within(child: &mut Served, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port another process holds makes the start fail at once with one line naming the
/// address, even when other shards and addresses came up first (it once hung forever,
/// waiting to stop a shard that had already given up).
#[test]
fn a_taken_port_is_a_one_line_error_not_a_hang() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for shards in ["1", "2"] {
        let free = free_port();
        let mut child = spawn_serve(free, shards, &["--listen", &taken_addr], Stdio::piped());
        let status = exit_within(&mut child, Duration::from_secs(5));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{shards} shards: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&taken_addr), "names the address: {err}");
    }
}

/// A connected MQTT 3.1.1 client (clean session), once the broker accepted it with CONNACK 0.
fn mqtt_connect(port: u16, client_id: &str, keepalive: u16) -> TcpStream {
    let mut c = wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port)));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&keepalive.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    c.write_all(&connect).unwrap();
    let mut connack = [0u8; 4];
    c.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    c
}

#[test]
fn serves_mqtt_and_stops_on_sigterm_and_sigint_within_a_second() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let port = free_port();
        let mut child = spawn_serve(port, "2", &[], Stdio::null());
        let mut client = mqtt_connect(port, "cli", 60);

        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "still running after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            status.success(),
            "exit status {status:?} after signal {signal}"
        );
        assert!(
            sent.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            sent.elapsed()
        );
        // The client's connection was closed.
        let mut buf = [0u8; 1];
        assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
    }
}

/// At the stop, the totals go to the log, and QoS 1/2 messages that a full queue dropped get
/// a warning naming the limits to raise. A subscriber that reads nothing first holds its
/// publisher back for `--stall-timeout`, then counts as stalled and loses what does not fit.
#[test]
fn dropped_qos1_messages_are_reported_when_the_broker_stops() {
    let port = free_port();
    let limits = [
        "--max-inflight",
        "1",
        "--max-queued-messages",
        "1",
        "--stall-timeout",
        "1",
        "--log-level",
        "info",
    ];
    let mut child = spawn_serve(port, "1", &limits, Stdio::piped());
    let mut sub = mqtt_connect(port, "s", 0);
    // SUBSCRIBE id 1 to "t" at QoS 1; SUBACK granting 1. The subscriber never acknowledges.
    sub.write_all(&[0x82, 0x06, 0, 1, 0, 1, b't', 1]).unwrap();
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 0x03, 0, 1, 1]);
    let mut publisher = mqtt_connect(port, "p", 0);
    // Five QoS 1 PUBLISHes to "t" (ids 1-5, payload "x"), all read at once, and their five
    // PUBACKs: the first fills the queue, the second goes over the limit and holds the
    // publisher back (the first then goes in flight, the second waits in the queue); after
    // the stall timeout the last three find the queue full and are dropped.
    let mut publishes = Vec::new();
    for id in 1..=5u8 {
        publishes.extend_from_slice(&[0x32, 0x06, 0, 1, b't', 0, id, b'x']);
    }
    let sent = Instant::now();
    publisher.write_all(&publishes).unwrap();
    let mut pubacks = [0u8; 20];
    publisher.read_exact(&mut pubacks).unwrap();
    let held = sent.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(3),
        "publisher held back {held:?}, expected about the 1 s stall timeout"
    );

    let log = stop_and_read_log(&mut child);
    let dropped: u64 = log
        .split("dropped_qos12_queue_full=")
        .nth(1)
        .unwrap_or_else(|| panic!("no totals in the log:\n{log}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    assert_eq!(dropped, 3, "{log}");
    assert!(log.contains("subscribers_stalled=1"), "{log}");
    assert!(
        log.contains("QoS 1/2 messages were dropped") && log.contains("--max-queued-messages"),
        "{log}"
    );
    // The session that lost them is named once, when the first was dropped.
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("messages for this session are dropped"))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(named[0].contains("client=s"), "{log}");
}

/// A client that connected with a user name (no password file: names are ACL labels).
fn mqtt_connect_as(port: u16, client_id: &str, user: &str) -> TcpStream {
    let mut c = wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port)));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60];
    for field in [client_id, user] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut connect = vec![0x10, body.len() as u8];
    connect.extend_from_slice(&body);
    c.write_all(&connect).unwrap();
    let mut connack = [0u8; 4];
    c.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    c
}

fn qos0_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x30,
        (2 + topic.len() + payload.len()) as u8,
        0,
        topic.len() as u8,
    ];
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(payload);
    p
}

/// Reads QoS 0 PUBLISHes until one carries `marker`; returns the payloads before it.
fn payloads_until(c: &mut TcpStream, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let mut head = [0u8; 2];
        c.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; usize::from(head[1])];
        c.read_exact(&mut body).unwrap();
        assert_eq!(head[0] >> 4, 3, "a PUBLISH: {head:02x?} {body:02x?}");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let payload = body[2 + topic_len..].to_vec();
        if payload == marker {
            return got;
        }
        got.push(payload);
    }
}

/// SIGHUP reads the ACL file again and applies it to the subscriptions that exist: `a/#`,
/// wholly readable before, no longer gets a/secret. The connections stay.
#[test]
fn sighup_reloads_the_acl_for_existing_subscriptions() {
    let dir = std::env::temp_dir().join(format!("surgemq-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = dir.join("broker.acl");
    std::fs::write(&acl, "topic readwrite #\nuser w\ntopic write #\n").unwrap();
    let port = free_port();
    let child = spawn_serve(
        port,
        "2",
        &[
            "--acl-file",
            acl.to_str().unwrap(),
            "--allow-anonymous",
            "true",
        ],
        Stdio::null(),
    );
    let mut reader = mqtt_connect(port, "reader", 60);
    // SUBSCRIBE id 1, a/# at QoS 0; SUBACK granting it.
    reader
        .write_all(&[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'#', 0x00])
        .unwrap();
    let mut suback = [0u8; 5];
    reader.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 0x03, 0x00, 0x01, 0x00]);
    let mut writer = mqtt_connect_as(port, "writer", "w");
    writer
        .write_all(&qos0_publish("a/secret", b"before"))
        .unwrap();
    writer.write_all(&qos0_publish("a/x", b"m0")).unwrap();
    assert_eq!(payloads_until(&mut reader, b"m0"), vec![b"before".to_vec()]);

    std::fs::write(
        &acl,
        "topic readwrite #\ntopic deny a/secret\nuser w\ntopic write #\n",
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let mut withheld = false;
    for i in 1..100 {
        writer
            .write_all(&qos0_publish("a/secret", b"after"))
            .unwrap();
        let marker = format!("m{i}");
        writer
            .write_all(&qos0_publish("a/x", marker.as_bytes()))
            .unwrap();
        if payloads_until(&mut reader, marker.as_bytes()).is_empty() {
            withheld = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(withheld, "a/secret still delivered after SIGHUP");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker says at start which allocator its heap comes from, asked of mimalloc itself:
/// with the default feature `mimalloc` it must be mimalloc (a build that lost the
/// `#[global_allocator]` line would say "system", and lose 20-30% at 2 shards).
#[test]
fn the_broker_names_the_allocator_its_heap_really_comes_from() {
    let port = free_port();
    let mut child = spawn_serve(port, "1", &["--log-level", "info"], Stdio::piped());
    drop(wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port))));
    let log = stop_and_read_log(&mut child);
    let expected = if cfg!(feature = "mimalloc") {
        "allocator=\"mimalloc\""
    } else {
        "allocator=\"system\""
    };
    assert!(log.contains(expected), "{expected} missing from:\n{log}");
}
