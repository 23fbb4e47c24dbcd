//! SIGHUP under load (issue 17: "SIGHUP reload under load, with no connection dropped"): a
//! `surgemq serve` with a password file, an ACL file and a TLS listener carries QoS 1 traffic
//! from three publishers (two over TLS) to a subscriber (over TLS) while the test rewrites all
//! three files and sends SIGHUP several times. After each reload a user added to the password
//! file can log in and use the topic its new ACL lines grant, and a new TLS connection is
//! served the new certificate; at the end every client is still connected (none reconnects:
//! the client library does not unless asked) and every message arrived, once.

mod client_util;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_util::{recv, recv_within, run};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use surgemq::auth::PasswordFile;
use surgemq::client::{Client, ClientOptions, Messages, TlsOptions, Transport};
use surgemq::protocol::{QoS, SubscribeReturnCode};

const PUBLISHERS: usize = 3;
const RELOADS: usize = 4;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` whole: to a file beside it, then renamed over it, so the broker
/// never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Ca(rcgen::Certificate, KeyPair);

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "sighup test CA");
    let key = KeyPair::generate().unwrap();
    Ca(params.self_signed(&key).unwrap(), key)
}

/// A server certificate for 127.0.0.1 named `name`: its PEM, its key's PEM and its DER.
fn server_cert(ca: &Ca, name: &str) -> (String, String, Vec<u8>) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// The certificate a new TLS connection to `port` is served (verified against `ca`).
fn served_certificate(port: u16, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.0.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut socket).unwrap();
    }
    tls.peer_certificates().unwrap()[0].to_vec()
}

fn passwords(users: &[String]) -> String {
    let mut file = PasswordFile::default();
    for user in users {
        file.set(user, format!("{user}-pw").as_bytes()).unwrap();
    }
    file.to_text()
}

/// The load's users, and each user added by a reload with a topic of its own.
fn acl(added: &[String]) -> String {
    let mut text = String::from("user sub\ntopic read load/#\n");
    for i in 0..PUBLISHERS {
        text.push_str(&format!("user pub{i}\ntopic write load/{i}\n"));
    }
    for user in added {
        text.push_str(&format!("user {user}\ntopic readwrite own/{user}\n"));
    }
    text
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

fn wait_for(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn options(port: u16, user: &str, tls: Option<&Path>) -> ClientOptions {
    ClientOptions {
        client_id: user.to_string(),
        connect_timeout: Duration::from_secs(5),
        username: Some(user.to_string()),
        password: Some(format!("{user}-pw").into_bytes().into()),
        transport: if tls.is_some() {
            Transport::Mqtts
        } else {
            Transport::Mqtt
        },
        tls: TlsOptions {
            ca_file: tls.map(Path::to_path_buf),
            ..TlsOptions::default()
        },
        ..ClientOptions::new("127.0.0.1", port)
    }
}

async fn connect(options: ClientOptions) -> (Client, Messages) {
    let id = options.client_id.clone();
    Client::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
}

/// What the load saw: messages each publisher had acknowledged, and the subscriber's count.
#[derive(Default)]
struct Tally {
    acked: [u64; PUBLISHERS],
    /// Publishers that stopped (their `acked` is final).
    done: usize,
    received: u64,
}

#[test]
fn sighup_under_load_drops_no_connection_and_loses_no_message() {
    let dir = Dir(std::env::temp_dir().join(format!("surgemq-sighup-load-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let ca = ca();
    let ca_file = dir.0.join("ca.pem");
    std::fs::write(&ca_file, ca.0.pem()).unwrap();
    let (cert_path, key_path) = (dir.0.join("server.pem"), dir.0.join("server-key.pem"));
    let (pem, key, mut der) = server_cert(&ca, "server 0");
    std::fs::write(&cert_path, pem).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut users: Vec<String> = (0..PUBLISHERS).map(|i| format!("pub{i}")).collect();
    users.push("sub".into());
    let mut added: Vec<String> = Vec::new();
    let passwd = dir.0.join("passwd");
    let acl_path = dir.0.join("acl");
    std::fs::write(&passwd, passwords(&users)).unwrap();
    std::fs::write(&acl_path, acl(&added)).unwrap();

    let (mqtt, mqtts) = (free_port(), free_port());
    let broker = Served(
        Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .args(["serve", "--shards", "2", "--log-level", "warn"])
            .args(["--listen", &format!("127.0.0.1:{mqtt}")])
            .args(["--listen", &format!("mqtts://127.0.0.1:{mqtts}")])
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg("--password-file")
            .arg(&passwd)
            .arg("--acl-file")
            .arg(&acl_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(mqtt);
    wait_for(mqtts);
    assert_eq!(served_certificate(mqtts, &ca), der);

    // The load, on a thread of its own: publishers send QoS 1 until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let subscribed = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, tally, subscribed) = (stop.clone(), tally.clone(), subscribed.clone());
        let ca_file = ca_file.clone();
        std::thread::spawn(move || {
            run(Duration::from_secs(120), async move {
                let (sub, mut inbox) = connect(options(mqtts, "sub", Some(&ca_file))).await;
                let granted = sub
                    .subscribe(&[("load/#", QoS::AtLeastOnce)])
                    .await
                    .unwrap();
                assert_eq!(granted, [SubscribeReturnCode::Success(QoS::AtLeastOnce)]);
                subscribed.store(true, Ordering::SeqCst);
                let mut publishers = Vec::new();
                for i in 0..PUBLISHERS {
                    // Two over TLS, one over TCP.
                    let tls = (i < 2).then_some(ca_file.as_path());
                    let (client, _) =
                        connect(options(mqtt_or(mqtt, mqtts, tls), &format!("pub{i}"), tls)).await;
                    let (stop, tally) = (stop.clone(), tally.clone());
                    publishers.push(glommio::spawn_local(async move {
                        let topic = format!("load/{i}");
                        let mut n = 0u64;
                        while !stop.load(Ordering::SeqCst) {
                            // A window of 10 in flight.
                            let acks: Vec<_> = (0..10)
                                .map(|k| {
                                    client.publish(
                                        &topic,
                                        format!("{}", n + k).into_bytes(),
                                        QoS::AtLeastOnce,
                                        false,
                                    )
                                })
                                .collect();
                            for ack in acks {
                                ack.await.unwrap_or_else(|e| panic!("pub{i}: {e}"));
                            }
                            n += 10;
                            tally.lock().unwrap().acked[i] = n;
                        }
                        tally.lock().unwrap().done += 1;
                        client
                    }));
                }
                // Every message of every publisher, in order per publisher, once.
                let receiving = glommio::spawn_local({
                    let tally = tally.clone();
                    async move {
                        let mut next = [0u64; PUBLISHERS];
                        loop {
                            let all_in = {
                                let t = tally.lock().unwrap();
                                t.done == PUBLISHERS && t.received == t.acked.iter().sum::<u64>()
                            };
                            if all_in {
                                break;
                            }
                            // Waits a little at most, to see the publishers stop.
                            let Some(m) = recv_within(&mut inbox, Duration::from_millis(100)).await
                            else {
                                continue;
                            };
                            let i: usize = m.topic.strip_prefix("load/").unwrap().parse().unwrap();
                            let seq: u64 =
                                std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                            assert_eq!(seq, next[i], "publisher {i}: a message lost or repeated");
                            next[i] += 1;
                            tally.lock().unwrap().received += 1;
                        }
                    }
                });
                let mut clients = Vec::new();
                for p in publishers {
                    clients.push(p.await);
                }
                // The publishers are done: whatever they had acknowledged must arrive.
                receiving.await;
                assert!(sub.is_connected(), "the subscriber was dropped");
                for (i, c) in clients.iter().enumerate() {
                    assert!(c.is_connected(), "pub{i} was dropped");
                    c.disconnect().await.unwrap();
                }
                sub.disconnect().await.unwrap();
            });
        })
    };
    let start = Instant::now();
    while !subscribed.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the load never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    for round in 1..=RELOADS {
        let before = tally.lock().unwrap().received;
        // New password and ACL files (a user more), a new certificate and key.
        let user = format!("late{round}");
        users.push(user.clone());
        added.push(user.clone());
        replace(&passwd, &passwords(&users));
        replace(&acl_path, &acl(&added));
        let (pem, key, new_der) = server_cert(&ca, &format!("server {round}"));
        replace(&key_path, &key);
        replace(&cert_path, &pem);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(broker.0.id() as i32, libc::SIGHUP) };
        // The reload is asynchronous: a new TLS connection gets the new certificate soon.
        let start = Instant::now();
        while served_certificate(mqtts, &ca) != new_der {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}: still the old certificate"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(new_der, der);
        der = new_der;
        // The new user logs in (over TLS) and may use its own topic: both files were read.
        let ca_file = ca_file.clone();
        run(Duration::from_secs(20), async move {
            let (c, mut inbox) = connect(options(mqtts, &user, Some(&ca_file))).await;
            let own = format!("own/{user}");
            let granted = c
                .subscribe(&[(own.as_str(), QoS::AtLeastOnce)])
                .await
                .unwrap();
            assert_eq!(
                granted,
                [SubscribeReturnCode::Success(QoS::AtLeastOnce)],
                "{user}"
            );
            c.publish(&own, "mine", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            assert_eq!(&recv(&mut inbox).await.payload[..], b"mine");
            c.disconnect().await.unwrap();
        });
        // Traffic went on across the reload (a few hundred messages at least).
        let start = Instant::now();
        while tally.lock().unwrap().received < before + 300 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}: no message arrived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::SeqCst);
    load.join().expect("the load saw no error");
    let t = tally.lock().unwrap();
    let sent: u64 = t.acked.iter().sum();
    assert!(t.acked.iter().all(|&n| n > 0), "{:?}", t.acked);
    assert_eq!(t.received, sent);
    println!("{RELOADS} reloads under load: {sent} messages, all delivered");
}

/// Publishers over TLS use the mqtts listener, the other the plain one.
fn mqtt_or(mqtt: u16, mqtts: u16, tls: Option<&Path>) -> u16 {
    if tls.is_some() {
        mqtts
    } else {
        mqtt
    }
}
