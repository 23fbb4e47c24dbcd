//! `surgemq pub` and `surgemq sub` as users run them, next to Mosquitto's `mosquitto_pub` and
//! `mosquitto_sub`, in both directions, against Mosquitto and against our broker: QoS 0/1/2,
//! retained messages, `-l` lines, `-n`, `-f`, `-C`, `-W` and its exit status, `-v` output,
//! wills, persistent sessions, MQTT 3.1, and the one-line error of a refused connection;
//! MQTT 5 (`-V 5`): user properties with `-D` and `--properties`, session expiry with `-x`,
//! and the one-line errors of PUBACK / SUBACK refusals.
//!
//! Subscribers run with `-d` so the test knows when SUBACK has arrived before publishing.
//! Every child process is killed when its guard drops, also when a test fails.

mod client_util;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use client_util::mosquitto::Mosquitto;
use surgemq::broker::{self, BrokerConfig, BrokerHandle};

/// A child process whose stdout and stderr are read line by line on their own threads.
struct Running {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Running { child, out, err }
    }

    /// Waits for a line containing `needle` on stdout (`on_stdout`) or stderr.
    fn wait_for(&self, on_stdout: bool, needle: &str) {
        let rx = if on_stdout { &self.out } else { &self.err };
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} within 5 s");
    }

    /// Waits for the exit (at most `limit`) and returns the status with the remaining output.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let drain = |rx: &Receiver<String>| -> Vec<String> {
            std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(1)).ok()).collect()
        };
        (status, drain(&self.out), drain(&self.err))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn surgemq(addr: SocketAddr, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_surgemq"));
    c.args(args)
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()]);
    c
}

/// A Mosquitto command-line tool, under `stdbuf -oL`: piped, its stdout would otherwise be
/// block-buffered and the SUBACK line of `-d` would arrive only at exit.
fn mosquitto_tool(tool: &str, addr: SocketAddr, args: &[&str]) -> Command {
    let mut c = Command::new("stdbuf");
    c.args([
        "-oL",
        tool,
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
    ])
    .args(args);
    c
}

/// Runs a publisher to completion; it must succeed.
fn run_ok(cmd: &mut Command, stdin: Option<&[u8]>) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = Running {
        out: channel().1,
        err: lines_of(child.stderr.take().unwrap()),
        child,
    };
    let (status, _, err) = out.finish(Duration::from_secs(5));
    assert!(status.success(), "{cmd:?} failed: {err:?}");
}

/// The message lines of `mosquitto_sub -d -v`, without its debug lines.
fn messages_only(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed"))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

struct OurBroker(Option<BrokerHandle>);

impl OurBroker {
    fn start() -> OurBroker {
        OurBroker::start_with(BrokerConfig::default())
    }

    fn start_with(config: BrokerConfig) -> OurBroker {
        let handle = broker::start(BrokerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            shards: 2,
            ..config
        })
        .unwrap();
        OurBroker(Some(handle))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().unwrap().local_addrs()[0]
    }
}

impl Drop for OurBroker {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

/// mosquitto_pub → surgemq sub, at each QoS, with -l and -n.
fn surgemq_sub_from_mosquitto_pub(addr: SocketAddr) {
    let sub = Running::spawn(&mut surgemq(
        addr,
        &["sub", "-t", "cli/#", "-v", "-q", "2", "-C", "6", "-d"],
    ));
    sub.wait_for(false, "SUBACK");
    for (qos, payload) in [("0", "zero"), ("1", "one"), ("2", "two")] {
        run_ok(
            &mut mosquitto_tool(
                "mosquitto_pub",
                addr,
                &["-t", &format!("cli/q{qos}"), "-q", qos, "-m", payload],
            ),
            None,
        );
    }
    run_ok(
        &mut mosquitto_tool("mosquitto_pub", addr, &["-t", "cli/l", "-q", "1", "-l"]),
        Some(b"first line\nsecond line\n"),
    );
    run_ok(
        &mut mosquitto_tool("mosquitto_pub", addr, &["-t", "cli/n", "-n"]),
        None,
    );
    let (status, out, err) = sub.finish(Duration::from_secs(5));
    assert!(status.success(), "{err:?}");
    // One publisher's lines keep their order; separate publishers need not (4.6).
    let lines: Vec<&String> = out.iter().filter(|l| l.starts_with("cli/l")).collect();
    assert_eq!(lines, ["cli/l first line", "cli/l second line"]);
    assert_eq!(
        sorted(out),
        [
            "cli/l first line",
            "cli/l second line",
            "cli/n (null)",
            "cli/q0 zero",
            "cli/q1 one",
            "cli/q2 two"
        ]
    );
}

/// surgemq pub → mosquitto_sub, at each QoS, with -l, -n and -f.
fn mosquitto_sub_from_surgemq_pub(addr: SocketAddr) {
    let sub = Running::spawn(&mut mosquitto_tool(
        "mosquitto_sub",
        addr,
        &["-t", "cli/#", "-v", "-q", "2", "-C", "7", "-d"],
    ));
    sub.wait_for(true, "received SUBACK");
    for (qos, payload) in [("0", "zero"), ("1", "one"), ("2", "two")] {
        run_ok(
            &mut surgemq(
                addr,
                &[
                    "pub",
                    "-t",
                    &format!("cli/q{qos}"),
                    "-q",
                    qos,
                    "-m",
                    payload,
                ],
            ),
            None,
        );
    }
    run_ok(
        &mut surgemq(addr, &["pub", "-t", "cli/l", "-q", "2", "-l"]),
        Some(b"first line\nsecond line"),
    );
    run_ok(&mut surgemq(addr, &["pub", "-t", "cli/n", "-n"]), None);
    let file = std::env::temp_dir().join(format!("surgemq-cli-{}.txt", std::process::id()));
    std::fs::write(&file, "from a file").unwrap();
    run_ok(
        &mut surgemq(
            addr,
            &[
                "pub",
                "-t",
                "cli/f",
                "-q",
                "1",
                "-f",
                file.to_str().unwrap(),
            ],
        ),
        None,
    );
    let _ = std::fs::remove_file(&file);
    let (status, out, err) = sub.finish(Duration::from_secs(5));
    assert!(status.success(), "{err:?}");
    assert_eq!(
        sorted(messages_only(out)),
        [
            "cli/f from a file",
            "cli/l first line",
            "cli/l second line",
            "cli/n (null)",
            "cli/q0 zero",
            "cli/q1 one",
            "cli/q2 two"
        ]
    );
}

/// Retained messages both ways, and `-R` leaving them out.
fn retained_both_ways(addr: SocketAddr) {
    run_ok(
        &mut surgemq(
            addr,
            &["pub", "-t", "cli/r1", "-m", "kept1", "-r", "-q", "1"],
        ),
        None,
    );
    let got = Running::spawn(&mut mosquitto_tool(
        "mosquitto_sub",
        addr,
        &["-t", "cli/r1", "-v", "-C", "1"],
    ));
    let (status, out, _) = got.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(out, ["cli/r1 kept1"]);

    run_ok(
        &mut mosquitto_tool(
            "mosquitto_pub",
            addr,
            &["-t", "cli/r2", "-m", "kept2", "-r"],
        ),
        None,
    );
    let got = Running::spawn(&mut surgemq(
        addr,
        &["sub", "-t", "cli/r2", "-v", "-C", "1"],
    ));
    let (status, out, _) = got.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(out, ["cli/r2 kept2"]);

    let skip = Running::spawn(&mut surgemq(
        addr,
        &["sub", "-t", "cli/r2", "-R", "-W", "1"],
    ));
    let (status, out, _) = skip.finish(Duration::from_secs(5));
    assert_eq!(status.code(), Some(27));
    assert!(out.is_empty(), "retained message printed with -R: {out:?}");
}

#[test]
fn sub_from_mosquitto_pub_on_mosquitto() {
    let m = Mosquitto::start();
    surgemq_sub_from_mosquitto_pub(m.addr);
}

#[test]
fn sub_from_mosquitto_pub_on_our_broker() {
    let b = OurBroker::start();
    surgemq_sub_from_mosquitto_pub(b.addr());
}

#[test]
fn pub_to_mosquitto_sub_on_mosquitto() {
    let m = Mosquitto::start();
    mosquitto_sub_from_surgemq_pub(m.addr);
}

#[test]
fn pub_to_mosquitto_sub_on_our_broker() {
    let b = OurBroker::start();
    mosquitto_sub_from_surgemq_pub(b.addr());
}

#[test]
fn retained_on_mosquitto() {
    let m = Mosquitto::start();
    retained_both_ways(m.addr);
}

#[test]
fn retained_on_our_broker() {
    let b = OurBroker::start();
    retained_both_ways(b.addr());
}

#[test]
fn timeout_exits_27_and_count_exits_0() {
    let m = Mosquitto::start();
    let started = Instant::now();
    let idle = Running::spawn(&mut surgemq(m.addr, &["sub", "-t", "cli/idle", "-W", "1"]));
    let (status, out, err) = idle.finish(Duration::from_secs(5));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(27), "mosquitto_sub's timeout status");
    assert!(out.is_empty());
    assert_eq!(err, ["surgemq: timed out after 1 s"]);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let sub = Running::spawn(&mut surgemq(
        m.addr,
        &["sub", "-t", "cli/busy", "-C", "1", "-W", "5", "-d"],
    ));
    sub.wait_for(false, "SUBACK");
    run_ok(
        &mut mosquitto_tool("mosquitto_pub", m.addr, &["-t", "cli/busy", "-m", "x"]),
        None,
    );
    let (status, out, _) = sub.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(out, ["x"], "payload alone without -v");
}

#[test]
fn refused_and_unreachable_give_one_line() {
    let m = Mosquitto::start_with("allow_anonymous false\n");
    for args in [&["pub", "-t", "a", "-m", "b"][..], &["sub", "-t", "a"][..]] {
        let (status, out, err) =
            Running::spawn(&mut surgemq(m.addr, args)).finish(Duration::from_secs(5));
        assert_eq!(status.code(), Some(1), "{args:?}");
        assert!(out.is_empty());
        assert_eq!(
            err,
            ["surgemq: connection refused: not authorized (CONNACK 5)"]
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, err) = Running::spawn(&mut surgemq(closed, &["pub", "-t", "a", "-m", "b"]))
        .finish(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err,
        [format!(
            "surgemq: cannot connect to 127.0.0.1:{port}: Connection refused (os error 111)"
        )]
    );
}

#[test]
fn will_of_a_killed_sub_reaches_mosquitto_sub() {
    let b = OurBroker::start();
    let watcher = Running::spawn(&mut mosquitto_tool(
        "mosquitto_sub",
        b.addr(),
        &["-t", "cli/will", "-v", "-C", "1", "-q", "1", "-d"],
    ));
    watcher.wait_for(true, "received SUBACK");
    let mut doomed = Running::spawn(&mut surgemq(
        b.addr(),
        &[
            "sub",
            "-t",
            "cli/nothing",
            "-d",
            "--will-topic",
            "cli/will",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
    ));
    doomed.wait_for(false, "SUBACK");
    doomed.child.kill().unwrap(); // SIGKILL: no DISCONNECT
    let (status, out, _) = watcher.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(messages_only(out), ["cli/will gone"]);
}

#[test]
fn persistent_session_and_mqtt_31() {
    let m = Mosquitto::start();
    let persistent = [
        "sub",
        "-c",
        "-i",
        "cli-persist",
        "-q",
        "1",
        "-t",
        "cli/p",
        "-v",
    ];
    // Subscribes, then leaves (after -W) with the session kept on the broker.
    let first = Running::spawn(&mut surgemq(
        m.addr,
        &[&persistent[..], &["-W", "1"]].concat(),
    ));
    let (status, _, err) = first.finish(Duration::from_secs(5));
    assert_eq!(status.code(), Some(27), "surgemq sub -W 1 said: {err:?}");
    run_ok(
        &mut mosquitto_tool(
            "mosquitto_pub",
            m.addr,
            &["-t", "cli/p", "-q", "1", "-m", "queued"],
        ),
        None,
    );
    let back = Running::spawn(&mut surgemq(
        m.addr,
        &[&persistent[..], &["-C", "1"]].concat(),
    ));
    let (status, out, _) = back.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(out, ["cli/p queued"]);

    let old = Running::spawn(&mut surgemq(
        m.addr,
        &[
            "sub", "-V", "mqttv31", "-t", "cli/31", "-v", "-C", "1", "-d",
        ],
    ));
    old.wait_for(false, "SUBACK");
    run_ok(
        &mut surgemq(
            m.addr,
            &[
                "pub", "-V", "mqttv31", "-t", "cli/31", "-m", "old", "-q", "2",
            ],
        ),
        None,
    );
    let (status, out, _) = old.finish(Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(out, ["cli/31 old"]);
}

/// MQTT 5 user properties through the CLI: `surgemq pub -V 5 -D publish user-property` to
/// `surgemq sub -V 5 --properties` (printed as mosquitto_sub's %P prints them, key:value
/// pairs after the payload) and to `mosquitto_sub -F '%t %p %P'`, and `mosquitto_pub -V 5 -D`
/// to `surgemq sub`.
fn user_properties_v5(addr: SocketAddr) {
    let sub = Running::spawn(&mut surgemq(
        addr,
        &[
            "sub",
            "-V",
            "5",
            "-t",
            "cli5/#",
            "-v",
            "--properties",
            "-q",
            "1",
            "-C",
            "3",
            "-d",
        ],
    ));
    sub.wait_for(false, "SUBACK");
    let theirs = Running::spawn(&mut mosquitto_tool(
        "mosquitto_sub",
        addr,
        &["-V", "5", "-t", "cli5/a", "-C", "1", "-F", "%t %p %P", "-d"],
    ));
    theirs.wait_for(true, "received SUBACK");
    run_ok(
        &mut surgemq(
            addr,
            &[
                "pub",
                "-V",
                "5",
                "-t",
                "cli5/a",
                "-m",
                "hi",
                "-q",
                "1",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
                "-D",
                "publish",
                "user-property",
                "k2",
                "v 2",
                "-D",
                "publish",
                "content-type",
                "text/plain",
            ],
        ),
        None,
    );
    run_ok(
        &mut surgemq(
            addr,
            &["pub", "-V", "mqttv5", "-t", "cli5/b", "-m", "plain"],
        ),
        None,
    );
    run_ok(
        &mut mosquitto_tool(
            "mosquitto_pub",
            addr,
            &[
                "-V",
                "5",
                "-t",
                "cli5/c",
                "-m",
                "from mosquitto",
                "-q",
                "1",
                "-D",
                "publish",
                "user-property",
                "who",
                "them",
            ],
        ),
        None,
    );
    let (status, out, err) = sub.finish(Duration::from_secs(5));
    assert!(status.success(), "{err:?}");
    assert_eq!(
        sorted(out),
        [
            "cli5/a hi k:v k2:v 2",
            "cli5/b plain",
            "cli5/c from mosquitto who:them"
        ]
    );
    let (status, out, err) = theirs.finish(Duration::from_secs(5));
    assert!(status.success(), "{err:?}");
    assert_eq!(messages_only(out), ["cli5/a hi k:v k2:v 2"]);
}

#[test]
fn user_properties_v5_on_our_broker() {
    let b = OurBroker::start();
    user_properties_v5(b.addr());
}

#[test]
fn user_properties_v5_on_mosquitto() {
    let m = Mosquitto::start();
    user_properties_v5(m.addr);
}

/// `-V 5 -c -x 60`: the session outlives the subscriber, and what was published meanwhile
/// arrives when it comes back.
#[test]
fn session_expiry_v5() {
    let b = OurBroker::start();
    let persistent = [
        "sub",
        "-V",
        "5",
        "-c",
        "-i",
        "cli5-persist",
        "-x",
        "60",
        "-q",
        "1",
        "-t",
        "cli5/p",
        "-v",
    ];
    let first = Running::spawn(&mut surgemq(
        b.addr(),
        &[&persistent[..], &["-W", "1"]].concat(),
    ));
    let (status, _, err) = first.finish(Duration::from_secs(5));
    assert_eq!(status.code(), Some(27), "surgemq sub -W 1 said: {err:?}");
    run_ok(
        &mut surgemq(
            b.addr(),
            &["pub", "-V", "5", "-t", "cli5/p", "-q", "1", "-m", "queued"],
        ),
        None,
    );
    let back = Running::spawn(&mut surgemq(
        b.addr(),
        &[&persistent[..], &["-C", "1"]].concat(),
    ));
    let (status, out, err) = back.finish(Duration::from_secs(5));
    assert!(status.success(), "{err:?}");
    assert_eq!(out, ["cli5/p queued"]);
}

/// A broker's MQTT 5 refusals come out as one line naming the reason code.
#[test]
fn v5_refusals_give_one_line() {
    use std::sync::Arc;
    use surgemq::auth::{AclFile, FileAuthenticator};
    let b = OurBroker::start_with(BrokerConfig {
        authenticator: Arc::new(FileAuthenticator {
            passwords: None,
            allow_anonymous: true,
            acl: Some(AclFile::parse("topic readwrite open/#\n", "test acl").unwrap()),
        }),
        ..BrokerConfig::default()
    });
    let refusals: [(&[&str], &str); 3] = [
        (
            &["pub", "-V", "5", "-q", "1", "-t", "closed/x", "-m", "x"],
            "surgemq: PUBACK 0x87 not authorized",
        ),
        (
            &["pub", "-V", "5", "-q", "2", "-t", "closed/x", "-m", "x"],
            "surgemq: PUBREC 0x87 not authorized",
        ),
        (
            &["sub", "-V", "5", "-t", "closed/#"],
            "surgemq: the broker refused every subscription (SUBACK 0x87 not authorized)",
        ),
    ];
    for (args, expected) in refusals {
        let (status, out, err) =
            Running::spawn(&mut surgemq(b.addr(), args)).finish(Duration::from_secs(5));
        assert_eq!(status.code(), Some(1), "{args:?}: {err:?}");
        assert!(out.is_empty());
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with(expected), "{args:?}: {err:?}");
    }
    // Unknown -D commands and identifiers are refused before connecting, in one line.
    let (status, _, err) = Running::spawn(&mut surgemq(
        b.addr(),
        &[
            "pub", "-V", "5", "-t", "open/x", "-m", "x", "-D", "publish", "colour", "red",
        ],
    ))
    .finish(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err,
        ["surgemq: invalid -D publish colour red: unknown property identifier"]
    );
}
