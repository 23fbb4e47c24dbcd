//! End-to-end tests of authentication and authorization: password files written by the real
//! `mosquitto_passwd`, CONNACK return codes (3.2.2.3), ACLs deciding SUBACK codes, dropped
//! publishes and wills, and the same through the `surgemq serve` binary with Mosquitto's
//! command-line clients, configured by flags and by a TOML file.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use surgemq::auth::{AclFile, FileAuthenticator, PasswordFile, ReloadableAuthenticator};
use surgemq::broker::BrokerConfig;
use surgemq::protocol::Packet;

// ----- files --------------------------------------------------------------------------------

/// A fresh directory of this test process for one test's files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("surgemq-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds a user to a password file with Mosquitto's own tool (`-c` creates the file).
fn mosquitto_passwd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    cmd.arg("-b");
    if !file.exists() {
        cmd.arg("-c");
    }
    let out = cmd
        .arg(file)
        .arg(user)
        .arg(password)
        .output()
        .expect("mosquitto_passwd (Debian package mosquitto) is installed");
    assert!(
        out.status.success(),
        "mosquitto_passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A password file with alice ("secret one") and bob ("hunter2"), written by mosquitto_passwd.
fn users_file(dir: &Path) -> PathBuf {
    let file = dir.join("users.pw");
    mosquitto_passwd(&file, "alice", "secret one");
    mosquitto_passwd(&file, "bob", "hunter2");
    file
}

fn broker_with(shards: usize, auth: FileAuthenticator) -> Broker {
    Broker::with_config(BrokerConfig {
        shards,
        authenticator: Arc::new(auth),
        ..test_config()
    })
}

fn login(id: &str, user: &str, password: &[u8]) -> ConnectBuilder {
    ConnectBuilder::new(id).username(user).password(password)
}

// ----- password file ------------------------------------------------------------------------

#[test]
fn mosquitto_passwd_file_decides_the_connack_code() {
    let dir = scratch_dir("connack");
    let passwords = PasswordFile::load(&users_file(&dir)).unwrap();
    with_shards(|shards| {
        let broker = broker_with(
            shards,
            FileAuthenticator {
                passwords: Some(passwords.clone()),
                allow_anonymous: false,
                acl: None,
            },
        );
        let mut refused = 0;
        for shard in 0..shards {
            let id = broker.id_on("pw", shard);
            // Right passwords: accepted, and the session works.
            for (user, password) in [("alice", &b"secret one"[..]), ("bob", b"hunter2")] {
                let mut c = broker.connect_with(&login(&id, user, password));
                c.subscribe(1, &[("pw/t", 1)]);
                c.disconnect();
            }
            // 0x04: bad user name or password (wrong password, unknown user, no password);
            // the server then closes the connection (MQTT-3.2.2-5).
            for bad in [
                login(&id, "alice", b"secret two"),
                login(&id, "alice", b"hunter2"),
                login(&id, "mallory", b"secret one"),
                ConnectBuilder::new(&id).username("alice"),
            ] {
                let mut c = broker.connect_expecting(&bad, &[0x20, 0x02, 0x00, 0x04]);
                c.expect_closed();
                refused += 1;
            }
            // 0x05: not authorized, for a client without a user name.
            let mut c =
                broker.connect_expecting(&ConnectBuilder::new(&id), &[0x20, 0x02, 0x00, 0x05]);
            c.expect_closed();
            refused += 1;
        }
        let metrics = broker.shutdown();
        assert_eq!(metrics.iter().map(|m| m.refused_auth).sum::<u64>(), refused);
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn allow_anonymous_accepts_clients_without_a_user_name() {
    let dir = scratch_dir("anonymous");
    let passwords = PasswordFile::load(&users_file(&dir)).unwrap();
    with_shards(|shards| {
        let broker = broker_with(
            shards,
            FileAuthenticator {
                passwords: Some(passwords.clone()),
                allow_anonymous: true,
                acl: None,
            },
        );
        let (anon_id, alice_id) = broker.ids_apart("anon", "anon-alice");
        let mut anon = broker.connect(&anon_id);
        anon.subscribe(1, &[("anon/t", 1)]);
        // A user name is still checked.
        let mut c = broker.connect_expecting(
            &login(&alice_id, "alice", b"wrong"),
            &[0x20, 0x02, 0x00, 0x04],
        );
        c.expect_closed();
        let mut alice = broker.connect_with(&login(&alice_id, "alice", b"secret one"));
        alice.publish1("anon/t", b"hello anonymous", false, 1);
        let (m, _) = anon.next_publish();
        assert_eq!(m.payload, &b"hello anonymous"[..]);
    });
    let _ = std::fs::remove_dir_all(dir);
}

// ----- ACL ----------------------------------------------------------------------------------

/// Without a password file, user names are labels the ACL applies to.
const ACL: &str = "\
# Anonymous clients: only the tests' witnesses (see common::Witness) may read.
topic read witness/#

user alice
topic read sensors/#
topic readwrite alice/#
topic deny alice/private/#

user bob
topic read cmd/#
topic write sensors/#

# Everyone with a user name may write to their own command topic.
pattern write cmd/%u
# Everyone may write to the witnesses.
pattern write witness/#
";

fn acl_broker(shards: usize) -> Broker {
    broker_with(
        shards,
        FileAuthenticator {
            passwords: None,
            allow_anonymous: true,
            acl: Some(AclFile::parse(ACL, "test.acl").unwrap()),
        },
    )
}

fn user(id: &str, name: &str) -> ConnectBuilder {
    ConnectBuilder::new(id).username(name)
}

#[test]
fn acl_decides_each_filter_of_a_subscribe() {
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let (alice_id, bob_id) = broker.ids_apart("acl-alice", "acl-bob");
        let mut alice = broker.connect_with(&user(&alice_id, "alice"));
        // MQTT-3.9.3-1: one return code per filter, in order; 0x80 for the refused ones.
        alice.send(&subscribe(
            7,
            &[
                ("sensors/#", 1),      // read rule: granted QoS 1
                ("cmd/#", 1),          // no read rule: 0x80
                ("sensors/+/temp", 2), // inside the read rule: granted QoS 2
                ("alice/#", 0),        // overlaps the denied alice/private/#: granted, checked
                ("alice/public/#", 1), // granted
            ],
        ));
        alice.expect_bytes(&[0x90, 0x07, 0x00, 0x07, 0x01, 0x80, 0x02, 0x00, 0x01]);
        let mut bob = broker.connect_with(&user(&bob_id, "bob"));
        bob.send(&subscribe(1, &[("sensors/#", 1), ("cmd/#", 1)]));
        bob.expect_bytes(&[0x90, 0x04, 0x00, 0x01, 0x80, 0x01]);
        // The granted subscriptions deliver, the refused ones do not: bob writes a sensor
        // reading (alice gets one copy, at the highest granted QoS capped by the publish),
        // alice writes her command topic, which only bob can read.
        bob.publish1("sensors/kitchen/temp", b"21.5", false, 1);
        let (m, frame) = alice.next_publish();
        assert_eq!(
            frame,
            publish(
                "sensors/kitchen/temp",
                b"21.5",
                1,
                false,
                false,
                m.packet_id
            )
        );
        alice.ack(&m);
        alice.publish1("cmd/alice", b"from alice", false, 1);
        let (m, _) = bob.next_publish();
        assert_eq!(m.payload, &b"from alice"[..]);
        bob.ack(&m);
        alice.send(&publish("alice/public/x", b"marker", 0, false, false, 0));
        assert_eq!(
            alice.payloads_until(b"marker"),
            Vec::<Vec<u8>>::new(),
            "alice was refused cmd/#"
        );
        // An anonymous client may read nothing but the witnesses' topics: `#` is granted
        // (it covers them), `sensors/#` is not.
        let mut anon = broker.connect(&broker.id_on("acl-anon", shards - 1));
        anon.send(&subscribe(2, &[("sensors/#", 0), ("#", 0)]));
        anon.expect_bytes(&[0x90, 0x04, 0x00, 0x02, 0x80, 0x00]);
    });
}

/// Mosquitto's meaning, as paho's interop tests expect it: a subscription that a deny rule
/// overlaps is granted, and only the messages on denied topics are withheld; a subscription
/// to the denied topic alone is refused.
const MOSQUITTO_ACL: &str = "\
topic readwrite #
topic deny test/nosubscribe

user writer
topic write #
";

#[test]
fn a_subscription_overlapping_a_deny_rule_is_granted_and_the_denied_topic_withheld() {
    with_shards(|shards| {
        let broker = broker_with(
            shards,
            FileAuthenticator {
                passwords: None,
                allow_anonymous: true,
                acl: Some(AclFile::parse(MOSQUITTO_ACL, "test.acl").unwrap()),
            },
        );
        let (reader_id, writer_id) = broker.ids_apart("deny-reader", "deny-writer");
        let mut reader = broker.connect(&reader_id);
        reader.send(&subscribe(1, &[("#", 1), ("test/nosubscribe", 1)]));
        reader.expect_bytes(&[0x90, 0x04, 0x00, 0x01, 0x01, 0x80]);
        let mut writer = broker.connect_with(&user(&writer_id, "writer"));
        writer.publish1("test/nosubscribe", b"secret", false, 1);
        writer.publish1("test/ok", b"fine", false, 2);
        writer.publish1("test/nosubscribe", b"secret", true, 3);
        writer.send(&publish("test/ok", b"marker", 0, false, false, 0));
        assert_eq!(reader.payloads_until(b"marker"), vec![b"fine".to_vec()]);
        // Nor is the retained one sent at SUBSCRIBE.
        let mut late = broker.connect(&broker.id_on("deny-late", 0));
        late.subscribe(1, &[("test/#", 0)]);
        writer.send(&publish("test/ok", b"marker2", 0, false, false, 0));
        assert_eq!(late.payloads_until(b"marker2"), Vec::<Vec<u8>>::new());
    });
}

#[test]
fn denied_publish_is_acknowledged_but_not_delivered() {
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let (alice_id, bob_id) = broker.ids_apart("deny-alice", "deny-bob");
        let mut bob = broker.connect_with(&user(&bob_id, "bob"));
        bob.subscribe(1, &[("cmd/#", 2)]);
        let mut alice = broker.connect_with(&user(&alice_id, "alice"));
        alice.subscribe(1, &[("sensors/#", 1), ("alice/public/#", 1)]);
        // Someone else's command topic: the pattern gives alice cmd/alice only. Every QoS is
        // acknowledged as the protocol requires (3.1.1 has no way to refuse a PUBLISH)...
        alice.publish0("cmd/bob", b"denied qos 0", false);
        alice.publish1("cmd/bob", b"denied qos 1", false, 5); // PUBACK 40 02 00 05
        alice.publish2("cmd/bob", b"denied qos 2", false, 6);
        // ...the same for a topic alice may read but not write, and for a denied one.
        alice.publish1("sensors/x", b"denied read-only", false, 7);
        alice.publish1("cmd/alice/x", b"denied: not the pattern's topic", false, 8);
        // ...but none reaches bob, who may read cmd/#, nor alice, who may read sensors/#;
        // the allowed ones do.
        alice.publish1("cmd/alice", b"allowed", false, 9);
        assert_eq!(bob.payloads_until(b"allowed"), Vec::<Vec<u8>>::new());
        bob.ping();
        alice.send(&publish("alice/public/x", b"marker", 0, false, false, 0));
        assert_eq!(alice.payloads_until(b"marker"), Vec::<Vec<u8>>::new());
        let metrics = broker.shutdown();
        assert_eq!(metrics.iter().map(|m| m.publishes_denied).sum::<u64>(), 5);
    });
}

#[test]
fn will_to_a_topic_the_user_may_not_publish_gets_connack_5() {
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let (alice_id, bob_id) = broker.ids_apart("will-alice", "will-bob");
        let mut bob = broker.connect_with(&user(&bob_id, "bob"));
        bob.subscribe(1, &[("cmd/#", 1)]);
        // alice may read sensors/# but not write it: refused at CONNECT, not silently dropped.
        let refused = user(&alice_id, "alice").will("sensors/alarm", b"gone", 1, false);
        let mut c = broker.connect_expecting(&refused, &[0x20, 0x02, 0x00, 0x05]);
        c.expect_closed();
        // A will to her own command topic is allowed, and published when she drops.
        let allowed = user(&alice_id, "alice").will("cmd/alice", b"alice is gone", 1, false);
        broker.connect_with(&allowed).drop_connection();
        let (m, _) = bob.next_publish();
        assert_eq!(m.payload, &b"alice is gone"[..]);
        bob.ack(&m);
    });
}

#[test]
fn another_user_resuming_a_session_does_not_inherit_its_read_rights() {
    // The ACL grants reads per user: alice may read sensors/#, bob may not. A persistent
    // session is found by client id only, so bob can connect with alice's client id; whatever
    // the broker does then (refuse him, start a fresh session, or keep the session and check
    // again), the sensor readings must not reach bob through alice's subscription.
    with_shards(|shards| {
        let broker = acl_broker(shards);
        let (shared_id, writer_id) = broker.ids_apart("acl-shared", "acl-writer");
        let mut alice = broker.connect_with(&user(&shared_id, "alice").clean(false));
        alice.subscribe(1, &[("sensors/#", 1)]);
        alice.disconnect();
        let mut writer = broker.connect_with(&user(&writer_id, "bob"));
        let mut witness = Witness::new(&broker, "acl-shared", 0);
        writer.publish1("sensors/kitchen/temp", b"while alice is away", false, 1);
        witness.settle(&mut writer);
        let mut bob = broker.socket();
        bob.send(&user(&shared_id, "bob").clean(false).build());
        let connack = bob.next_frame();
        assert_eq!(&connack[..2], &[0x20, 0x02], "CONNACK: {connack:02x?}");
        if connack[3] != 0x00 {
            return; // refused: nothing can reach him
        }
        // bob may read cmd/#: once subscribed, his own marker ends the check.
        bob.send(&subscribe(9, &[("cmd/#", 1)]));
        let mut got = Vec::new();
        let mut subscribed = false;
        loop {
            let frame = bob.next_frame();
            match parse(&frame) {
                Packet::SubAck(_) => {
                    assert_eq!(frame, [0x90, 0x03, 0x00, 0x09, 0x01]);
                    assert!(!subscribed, "second SUBACK");
                    subscribed = true;
                    writer.publish1("sensors/kitchen/temp", b"after bob came", false, 2);
                    writer.publish1("cmd/bob", b"marker", false, 3);
                }
                Packet::Publish(p) => {
                    bob.ack(&p);
                    if &p.payload[..] == b"marker" {
                        break;
                    }
                    got.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            got,
            Vec::<String>::new(),
            "bob received sensor readings he may not read (CONNACK {connack:02x?})"
        );
    });
}

// ----- the binary ---------------------------------------------------------------------------

/// A process this test started, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `surgemq serve` with `args` and waits until it accepts connections.
fn serve(args: &[&str], port: u16) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_surgemq"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!("surgemq serve {args:?} exited with {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// mosquitto_pub of one QoS 1 message; its output once it exits.
fn mosquitto_pub(port: u16, user: &str, password: &str, topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-u", user, "-P", password, "-t", topic, "-m", message, "-q", "1",
        ])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients) is installed")
}

/// A mosquitto_sub waiting for one message on `filter`; returns once its SUBSCRIBE was
/// acknowledged, with the receiver of its output lines.
fn mosquitto_sub(
    port: u16,
    user: &str,
    password: &str,
    filter: &str,
) -> (Running, mpsc::Receiver<String>) {
    // Line-buffered output (stdbuf execs the client): a pipe would otherwise hold the lines.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", user, "-P", password, "-t", filter, "-q", "1"])
        // One message, at most 10 s; -d prints the protocol steps, -F the message.
        .args(["-C", "1", "-W", "10", "-d", "-F", "message: %t %p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("stdbuf (coreutils) and mosquitto_sub (mosquitto-clients) are installed");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let sub = Running(child);
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("mosquitto_sub reports its SUBACK");
        if line.contains("received SUBACK") {
            return (sub, rx);
        }
    }
}

/// What both ways of configuring the binary must give: the right password works end to end,
/// a wrong one makes mosquitto_pub fail, and the ACL holds.
fn check_served(port: u16) {
    let (mut sub, lines) = mosquitto_sub(port, "alice", "secret one", "sensors/#");
    // bob's pattern lets him write sensors/bob/# only: acknowledged, not delivered.
    let denied = mosquitto_pub(port, "bob", "hunter2", "sensors/kitchen/temp", "denied");
    assert!(denied.status.success(), "{denied:?}");
    let wrong = mosquitto_pub(port, "bob", "hunter3", "sensors/bob/temp", "wrong password");
    assert!(
        !wrong.status.success(),
        "a wrong password must fail: {wrong:?}"
    );
    // With a password file, clients without a user name are refused unless allowed.
    let anonymous = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "sensors/bob/temp", "-m", "anonymous", "-q", "1"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "anonymous must fail: {anonymous:?}"
    );
    let ok = mosquitto_pub(port, "bob", "hunter2", "sensors/bob/temp", "21.5");
    assert!(ok.status.success(), "{ok:?}");
    // mosquitto_sub exits after one message: the allowed one, not the denied one before it.
    let deadline = Instant::now() + READ_TIMEOUT;
    let message = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("mosquitto_sub prints the message");
        if let Some(m) = line.strip_prefix("message: ") {
            break m.to_string();
        }
    };
    assert_eq!(message, "sensors/bob/temp 21.5");
    let status = sub.0.wait().unwrap();
    assert!(status.success(), "mosquitto_sub: {status}");
}

const SERVE_ACL: &str = "\
user alice
topic read sensors/#

pattern write sensors/%u/#
";

#[test]
fn serve_with_password_and_acl_flags_works_with_mosquitto_clients() {
    let dir = scratch_dir("serve-flags");
    let users = users_file(&dir);
    let acl = dir.join("acl");
    std::fs::write(&acl, SERVE_ACL).unwrap();
    let port = free_port();
    let _broker = serve(
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "2",
            "--password-file",
            users.to_str().unwrap(),
            "--acl-file",
            acl.to_str().unwrap(),
        ],
        port,
    );
    check_served(port);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_with_a_toml_config_file_gives_the_same_settings() {
    let dir = scratch_dir("serve-toml");
    users_file(&dir);
    std::fs::write(dir.join("acl"), SERVE_ACL).unwrap();
    let port = free_port();
    // Relative paths are relative to the file's directory.
    let config = dir.join("surgemq.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nshards = 2\n\
             password-file = \"users.pw\"\nacl-file = \"acl\"\n"
        ),
    )
    .unwrap();
    let _broker = serve(&["--config", config.to_str().unwrap()], port);
    check_served(port);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_config_file_gives_one_line_naming_the_key() {
    let dir = scratch_dir("serve-bad");
    users_file(&dir);
    for (text, key) in [
        ("pasword-file = \"users.pw\"\n", "pasword-file"),
        ("allow-anonymous = \"yes\"\n", "allow-anonymous"),
        ("acl-file = 3\n", "acl-file"),
    ] {
        let config = dir.join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} must be refused");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{text:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reloaded_acl_applies_to_subscriptions_that_exist() {
    // SIGHUP in `surgemq serve`: the files are read again and the ACL applied again to the
    // subscriptions already there. Here: `a/#` was wholly readable; the new ACL denies
    // a/secret, so its messages are withheld from then on, without a new SUBSCRIBE.
    with_shards(|shards| {
        let dir = std::env::temp_dir().join(format!(
            "surgemq-acl-reload-{}-{shards}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic readwrite #\n").unwrap();
        let auth = Arc::new(ReloadableAuthenticator::load(None, Some(acl.clone()), true).unwrap());
        let broker = Broker::with_config(BrokerConfig {
            shards,
            authenticator: auth.clone(),
            ..test_config()
        });
        let (reader_id, writer_id) = broker.ids_apart("reload-reader", "reload-writer");
        let mut reader = broker.connect(&reader_id);
        reader.subscribe(1, &[("a/#", 0)]);
        let mut writer = broker.connect(&writer_id);
        writer.send(&publish("a/secret", b"before", 0, false, false, 0));
        writer.send(&publish("a/x", b"marker1", 0, false, false, 0));
        assert_eq!(reader.payloads_until(b"marker1"), vec![b"before".to_vec()]);

        std::fs::write(
            &acl,
            "topic readwrite #\ntopic deny a/secret\nuser w\ntopic write #\n",
        )
        .unwrap();
        auth.reload().unwrap();
        broker.handle().reauthorize();
        let mut writer = broker.connect_with(&user(&broker.id_on("reload-w2", shards - 1), "w"));
        // The shards apply it on their own time: within a moment, the denied topic's
        // messages stop (never, without the reauthorization).
        let mut withheld = false;
        for i in 0..50 {
            writer.send(&publish("a/secret", b"after", 0, false, false, 0));
            let marker = format!("marker-{i}");
            writer.send(&publish("a/x", marker.as_bytes(), 0, false, false, 0));
            if reader.payloads_until(marker.as_bytes()).is_empty() {
                withheld = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(withheld, "a/secret still delivered after the reload");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
