//! `surgemq serve -c mosquitto.conf`, the binary as a Mosquitto user meets it: a file with an
//! MQTT and a WebSocket listener, a password file and an ACL file serves both with the users
//! and ACLs applied; Debian's file runs as installed; warnings and errors are one line naming
//! the file and line; `log_dest file` gets the log (and is opened again on SIGHUP); flags
//! override the file. The option-by-option tests are the unit tests in
//! src/cli/mosquitto_conf/.

mod client_util;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_util::{recv, recv_within, run};
use surgemq::auth::PasswordFile;
use surgemq::client::{Client, ClientError, ClientOptions, Messages, Transport};
use surgemq::protocol::{QoS, ReasonCode, SubscribeReturnCode};

const LIMIT: Duration = Duration::from_secs(30);

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

/// A directory for one test's files, removed when it ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("surgemq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
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
            surgemq()
                .arg("serve")
                .args(args)
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

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `surgemq serve ARGS` expecting it to fail; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = surgemq().arg("serve").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err.trim().to_string()
}

fn options(port: u16, id: &str, transport: Transport, user: Option<(&str, &str)>) -> ClientOptions {
    ClientOptions {
        client_id: id.to_string(),
        connect_timeout: Duration::from_secs(5),
        transport,
        username: user.map(|(u, _)| u.to_string()),
        password: user.map(|(_, p)| p.as_bytes().to_vec().into()),
        ..ClientOptions::new("127.0.0.1", port)
    }
}

async fn connect(options: ClientOptions) -> (Client, Messages) {
    let id = options.client_id.clone();
    Client::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
}

async fn refusal(options: ClientOptions) -> ReasonCode {
    match Client::connect(options).await {
        Err(ClientError::Refused(code, _)) => code,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

fn ws() -> Transport {
    Transport::Ws {
        path: "/mqtt".into(),
    }
}

fn password_file(dir: &Dir) -> PathBuf {
    let mut users = PasswordFile::default();
    users.set("alice", b"alice-pw").unwrap();
    users.set("bob", b"bob-pw").unwrap();
    dir.write("passwd", &users.to_text())
}

#[test]
fn two_listeners_with_passwords_and_acls_as_mosquitto_writes_them() {
    let dir = Dir::new("mosqconf-e2e");
    let (mqtt, websockets) = (free_port(), free_port());
    let passwd = password_file(&dir);
    let acl = dir.write(
        "acl",
        "# alice reads and writes sensors, bob only reads them\nuser alice\ntopic readwrite sensors/#\n\nuser bob\ntopic read sensors/#\n",
    );
    let conf = dir.write(
        "mosquitto.conf",
        &format!(
            "# Config file for mosquitto\n\
             per_listener_settings false\n\
             user mosquitto\n\
             \n\
             listener {mqtt} 127.0.0.1\n\
             protocol mqtt\n\
             \n\
             listener {websockets} 127.0.0.1\n\
             protocol websockets\n\
             \n\
             password_file {}\n\
             acl_file {}\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n",
            passwd.display(),
            acl.display()
        ),
    );
    let broker = Served::start(&["-c", conf.to_str().unwrap(), "--shards", "1"]);
    wait_for_port(mqtt);
    wait_for_port(websockets);
    run(LIMIT, async move {
        // Listeners are configured and allow_anonymous is not set: Mosquitto 2 refuses
        // anonymous clients, on either listener.
        assert_eq!(
            refusal(options(mqtt, "anon", Transport::Mqtt, None)).await,
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            refusal(options(websockets, "anon-ws", ws(), None)).await,
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            refusal(options(websockets, "liar", ws(), Some(("alice", "wrong")))).await,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        let (alice, mut alice_in) = connect(options(
            websockets,
            "alice",
            ws(),
            Some(("alice", "alice-pw")),
        ))
        .await;
        let (bob, mut bob_in) = connect(options(
            mqtt,
            "bob",
            Transport::Mqtt,
            Some(("bob", "bob-pw")),
        ))
        .await;
        let granted = alice
            .subscribe(&[
                ("sensors/#", QoS::AtLeastOnce),
                ("other/#", QoS::AtLeastOnce),
            ])
            .await
            .unwrap();
        assert_eq!(granted[0], SubscribeReturnCode::Success(QoS::AtLeastOnce));
        assert!(
            matches!(granted[1], SubscribeReturnCode::Failure(_)),
            "{granted:?}"
        );
        let granted = bob
            .subscribe(&[("sensors/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        assert_eq!(granted[0], SubscribeReturnCode::Success(QoS::AtLeastOnce));
        // Bob may only read: his publish is acknowledged and dropped.
        bob.publish("sensors/from-bob", "no", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        alice
            .publish("sensors/from-alice", "yes", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        for messages in [&mut alice_in, &mut bob_in] {
            let m = recv(messages).await;
            assert_eq!(
                (&*m.topic, &m.payload[..]),
                ("sensors/from-alice", &b"yes"[..])
            );
            assert!(recv_within(messages, Duration::from_millis(300))
                .await
                .is_none());
        }
        alice.disconnect().await.unwrap();
        bob.disconnect().await.unwrap();
    });
    let log = broker.stop();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].ends_with(&format!(
            "{}:3: `user` is ignored: SurgeMQ does not switch users; start it as the user it should run as (User= in contrib/surgemq.service)",
            conf.display()
        )),
        "{log}"
    );
}

/// Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.11-1.2+deb12u2) with a conf.d file
/// as its README suggests; the paths under /var and /etc moved to the test's directory.
#[test]
fn debians_file_runs_as_installed_and_logs_to_its_file() {
    let dir = Dir::new("mosqconf-debian");
    for sub in ["conf.d", "lib", "log"] {
        std::fs::create_dir_all(dir.0.join(sub)).unwrap();
    }
    let port = free_port();
    dir.write(
        "conf.d/README",
        "Any files placed in this directory that have a .conf ending will be loaded as\nconfig files by the broker. Use this to make your local config.\n",
    );
    dir.write(
        "conf.d/local.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nautosave_interval 1800\n"),
    );
    let d = dir.0.display();
    let conf = dir.write(
        "mosquitto.conf",
        &format!(
            "# Place your local configuration in /etc/mosquitto/conf.d/\n\
             #\n\
             # A full description of the configuration file is at\n\
             # /usr/share/doc/mosquitto/examples/mosquitto.conf.example\n\
             \n\
             pid_file /run/mosquitto/mosquitto.pid\n\
             \n\
             persistence true\n\
             persistence_location {d}/lib/\n\
             \n\
             log_dest file {d}/log/mosquitto.log\n\
             \n\
             include_dir {d}/conf.d\n"
        ),
    );
    let broker = Served::start(&["-c", conf.to_str().unwrap(), "--shards", "1"]);
    wait_for_port(port);
    run(LIMIT, async move {
        let (c, mut messages) = connect(options(port, "anon", Transport::Mqtt, None)).await;
        c.subscribe(&[("t", QoS::AtLeastOnce)]).await.unwrap();
        c.publish("t", "kept", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        assert_eq!(&recv(&mut messages).await.payload[..], b"kept");
        c.disconnect().await.unwrap();
    });
    // logrotate: the file is moved away, SIGHUP opens a new one.
    let log_path = dir.0.join("log/mosquitto.log");
    std::fs::rename(&log_path, dir.0.join("log/mosquitto.log.1")).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(broker.0.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while !log_path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no new log file after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = broker.stop();
    assert_eq!(stderr, "", "the log goes to the file");
    let first = std::fs::read_to_string(dir.0.join("log/mosquitto.log.1")).unwrap();
    for expected in [
        format!("{}:6: `pid_file` is ignored", conf.display()),
        format!(
            "{}:3: `autosave_interval` is ignored",
            dir.0.join("conf.d/local.conf").display()
        ),
        "surgemq broker started".to_string(),
    ] {
        assert!(first.contains(&expected), "{expected} in:\n{first}");
    }
    let second = std::fs::read_to_string(&log_path).unwrap();
    assert!(second.contains("stopped"), "{second}");
    // persistence_location is the data directory.
    let files: Vec<String> = std::fs::read_dir(dir.0.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!files.is_empty(), "the data directory is used");
}

#[test]
fn flags_override_the_file() {
    let dir = Dir::new("mosqconf-flags");
    let (in_file, on_flag) = (free_port(), free_port());
    let conf = dir.write("broker.conf", &format!("listener {in_file} 127.0.0.1\n"));
    let broker = Served::start(&[
        "--config",
        conf.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{on_flag}"),
        "--allow-anonymous",
        "--shards",
        "1",
    ]);
    wait_for_port(on_flag);
    assert!(TcpStream::connect(("127.0.0.1", in_file)).is_err());
    run(LIMIT, async move {
        // The file's listener makes allow_anonymous false; the flag says true.
        let (c, _) = connect(options(on_flag, "anon", Transport::Mqtt, None)).await;
        c.disconnect().await.unwrap();
    });
    broker.stop();
}

#[test]
fn errors_are_one_line_naming_file_and_line() {
    let dir = Dir::new("mosqconf-errors");
    let cases = [
        ("listener 1883\nmax_inflight_mesages 20\n", "2: unknown option `max_inflight_mesages`"),
        (
            "listener 1883\nauth_plugin /usr/lib/mosquitto-go-auth.so\n",
            "2: `auth_plugin` is not supported: SurgeMQ loads no plugins; users and ACLs come from password_file and acl_file",
        ),
        (
            "listener 1883\n\nconnection cloud\naddress mqtt.example.com:8883\ntopic sensors/# out 1\nbridge_cafile /ca.pem\nbridge_require_ocsp true\n",
            "3: bridge `cloud`: `bridge_require_ocsp` is not supported (no OCSP checks)",
        ),
        (
            "per_listener_settings true\nlistener 1883\nallow_anonymous true\nlistener 1884\n",
            "1: per_listener_settings true with different password_file, acl_file or allow_anonymous for the listener at",
        ),
        ("listener 1883\ncertfile /etc/server.pem\n", "2: `certfile` needs a `keyfile` on the same listener"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let conf = dir.write(&format!("case{i}.conf"), text);
        let err = refused(&["-c", conf.to_str().unwrap()]);
        let expected = format!("surgemq: {}:{expected}", conf.display());
        assert!(err.starts_with(&expected), "{err}\nexpected: {expected}");
    }
    // A name ending in .toml is still read as TOML.
    let toml = dir.write("broker.toml", "shards = \"two\"\n");
    assert_eq!(
        refused(&["-c", toml.to_str().unwrap()]),
        format!(
            "surgemq: {}: key `shards` must be a non-negative integer",
            toml.display()
        )
    );
    assert!(refused(&["-c", "/no/such/mosquitto.conf"])
        .starts_with("surgemq: invalid --config: cannot read /no/such/mosquitto.conf: "));
}
