//! The client library and `surgemq pub` / `surgemq sub` over TLS, WebSockets and WebSockets
//! over TLS, against Mosquitto (the Debian `mosquitto`, started per test with a generated
//! configuration on free loopback ports) and against small fake servers for the failures a
//! real broker does not show on demand (a server that never answers, a refused upgrade).
//!
//! Certificates are made at test time with rcgen: a CA, a server certificate it signs for
//! "localhost" and 127.0.0.1, a client certificate it signs, and a second, unrelated CA.
//! Every test runs under a deadline and every child process is killed when its guard drops.
//! WebSocket tests are skipped (with the reason printed) only if this Mosquitto build has no
//! WebSocket support; TLS tests are never skipped.

mod client_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use client_util::{recv, run};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use surgemq::client::{
    Client, ClientError, ClientOptions, Messages, TlsOptions, TlsVersion, Transport,
};
use surgemq::protocol::QoS;

const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Certificates

struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here.
    other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &(rcgen::Certificate, KeyPair),
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn certs(name: &str) -> Certs {
    let dir = std::env::temp_dir().join(format!(
        "surgemq-client-transports-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, pem: &str| {
        let path = dir.join(file);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ours = ca("surgemq test CA");
    let theirs = ca("some other CA");
    let (sc, sk) = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ours,
    );
    let (cc, ck) = leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth, &ours);
    let (xc, xk) = leaf(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth, &theirs);
    Certs {
        ca: write("ca.pem", &ours.0.pem()),
        other_ca: write("other-ca.pem", &theirs.0.pem()),
        server_cert: write("server.pem", &sc),
        server_key: write("server-key.pem", &sk),
        client_cert: write("client.pem", &cc),
        client_key: write("client-key.pem", &ck),
        stranger_cert: write("stranger.pem", &xc),
        stranger_key: write("stranger-key.pem", &xk),
        dir,
    }
}

// ---------------------------------------------------------------------------------------
// Mosquitto

/// A port free on every address, from below the kernel's ephemeral range: Mosquitto's
/// WebSocket listeners (libwebsockets) bind every address, and on a busy machine the
/// ephemeral ports are full of other connections' TIME-WAIT sockets, which block that bind.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(12000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut x = u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1;
    for _ in 0..1000 {
        // xorshift: a different sequence per process and call.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10000 + (x % u64::from(low - 10000)) as u16;
        if TcpListener::bind(("::", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

/// A Mosquitto with one listener under test (`port`) configured by the caller, and a plain
/// MQTT listener (`plain`) after it: this Mosquitto (2.0.11) refuses to start with a lone
/// WebSocket listener bound to an address.
struct Mosquitto {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    port: u16,
}

enum Started {
    Up(Mosquitto),
    /// This build lacks the feature; the log line says so.
    Unsupported(String),
}

impl Mosquitto {
    /// `listener` holds the lines for the listener under test (protocol, TLS files...).
    fn start(name: &str, listener: &str) -> Started {
        // A port taken between the check and Mosquitto's bind: again with others.
        for _ in 0..4 {
            match Mosquitto::start_on_fresh_ports(name, listener) {
                Err(log) if log.contains("Unable to create websockets listener") => {
                    eprintln!("{name}: port taken, trying another:\n{log}");
                }
                Err(log) => {
                    let unsupported = log.lines().find(|l| {
                        l.contains("support not available") || l.contains("not supported")
                    });
                    match unsupported {
                        Some(line) => return Started::Unsupported(line.to_string()),
                        None => panic!("mosquitto did not start ({name}):\n{log}"),
                    }
                }
                Ok(m) => return Started::Up(m),
            }
        }
        panic!("mosquitto did not start ({name}): no free port");
    }

    fn start_on_fresh_ports(name: &str, listener: &str) -> Result<Mosquitto, String> {
        let port = free_port();
        let plain = free_port();
        let dir = std::env::temp_dir().join(format!(
            "surgemq-transports-mosquitto-{name}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            "allow_anonymous true\nlistener {port} 127.0.0.1\n{listener}\nlistener {plain} 127.0.0.1\n"
        );
        // Mosquitto drops root privileges to user "mosquitto" unless told otherwise, and that
        // user could not read the key files.
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            config.push_str("user root\n");
        }
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config).unwrap();
        let log = dir.join("mosquitto.log");
        let mut m = Mosquitto {
            child: None,
            dir,
            conf,
            log,
            port,
        };
        m.launch()?;
        Ok(m)
    }

    /// Starts the process and waits until the listener under test accepts TCP connections;
    /// on failure, the log.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .arg("-v")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        self.child = Some(child);
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect(addr).is_ok() {
                return Ok(());
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap().is_some();
            if exited || started.elapsed() > Duration::from_secs(5) {
                self.stop();
                return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker (clients see their connections drop) and starts it again on the same
    /// ports.
    fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        while let Err(log) = self.launch() {
            // The port may take a moment to be free again.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not restart:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_lines(certs: &Certs) -> String {
    format!(
        "certfile {}\nkeyfile {}\n",
        certs.server_cert.display(),
        certs.server_key.display()
    )
}

/// A TLS listener; `extra` adds lines (require_certificate, tls_version...).
fn mosquitto_tls(name: &str, certs: &Certs, extra: &str) -> Mosquitto {
    match Mosquitto::start(name, &format!("{}{extra}", tls_lines(certs))) {
        Started::Up(m) => m,
        // TLS is never skipped.
        Started::Unsupported(why) => panic!("this mosquitto cannot do TLS: {why}"),
    }
}

/// A WebSocket listener (over TLS with `certs`), or None, with the reason printed, if this
/// Mosquitto has no WebSocket support.
fn mosquitto_ws(name: &str, certs: Option<&Certs>) -> Option<Mosquitto> {
    let tls = certs.map(tls_lines).unwrap_or_default();
    match Mosquitto::start(name, &format!("protocol websockets\n{tls}")) {
        Started::Up(m) => Some(m),
        Started::Unsupported(why) => {
            eprintln!("SKIPPED {name}: this mosquitto has no WebSocket support ({why})");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client helpers

fn options(port: u16, id: &str, transport: Transport, tls: TlsOptions) -> ClientOptions {
    ClientOptions {
        client_id: id.to_string(),
        connect_timeout: Duration::from_secs(5),
        transport,
        tls,
        ..ClientOptions::new("127.0.0.1", port)
    }
}

fn trusting(certs: &Certs) -> TlsOptions {
    TlsOptions {
        ca_file: Some(certs.ca.clone()),
        ..TlsOptions::default()
    }
}

async fn connect(options: ClientOptions) -> (Client, Messages) {
    let id = options.client_id.clone();
    Client::connect(options)
        .await
        .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
}

/// Subscribes, publishes at every QoS to itself (and a payload bigger than a TLS record and
/// a read), and checks what comes back.
async fn round_trip(options: ClientOptions) {
    let (client, mut messages) = connect(options).await;
    client
        .subscribe(&[("transports/#", QoS::ExactlyOnce)])
        .await
        .unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("transports/{i}");
        client
            .publish(&topic, format!("payload {i}"), qos, false)
            .await
            .unwrap();
        let m = recv(&mut messages).await;
        assert_eq!(m.topic.as_str(), topic);
        assert_eq!(&m.payload[..], format!("payload {i}").as_bytes());
        assert_eq!(m.qos, qos);
    }
    client
        .publish("transports/big", big.clone(), QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = recv(&mut messages).await;
    assert_eq!(m.payload.len(), big.len());
    assert!(m.payload[..] == big[..], "the big payload came back intact");
    client.disconnect().await.unwrap();
}

/// The error `Client::connect` ends with.
async fn connect_error(options: ClientOptions) -> ClientError {
    match Client::connect(options).await {
        Ok(_) => panic!("connected, but should not have"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// The library over TLS

#[test]
fn mqtts_round_trip_with_ca_file() {
    let certs = certs("mqtts");
    let m = mosquitto_tls("mqtts", &certs, "");
    run(
        LIMIT,
        round_trip(options(m.port, "mqtts", Transport::Mqtts, trusting(&certs))),
    );
    // The name checked can differ from the host connected to.
    let by_name = TlsOptions {
        server_name: Some("localhost".into()),
        ..trusting(&certs)
    };
    run(
        LIMIT,
        round_trip(options(m.port, "by-name", Transport::Mqtts, by_name)),
    );
}

#[test]
fn an_untrusted_server_is_a_clear_tls_error() {
    let certs = certs("wrong-ca");
    let m = mosquitto_tls("wrong-ca", &certs, "");
    run(LIMIT, async {
        let wrong = TlsOptions {
            ca_file: Some(certs.other_ca.clone()),
            ..TlsOptions::default()
        };
        let e = connect_error(options(m.port, "wrong-ca", Transport::Mqtts, wrong)).await;
        assert!(
            matches!(
                e,
                ClientError::Tls(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "TLS error: invalid peer certificate: UnknownIssuer"
        );
        // The right CA, the wrong name.
        let other_name = TlsOptions {
            server_name: Some("broker.example.com".into()),
            ..trusting(&certs)
        };
        let e = connect_error(options(m.port, "wrong-name", Transport::Mqtts, other_name)).await;
        assert!(
            matches!(e, ClientError::Tls(rustls::Error::InvalidCertificate(_))),
            "{e:?}"
        );
        assert!(e.to_string().contains("broker.example.com"), "{e}");
    });
}

#[test]
fn insecure_accepts_any_certificate() {
    let certs = certs("insecure");
    let m = mosquitto_tls("insecure", &certs, "");
    let insecure = TlsOptions {
        insecure: true,
        server_name: Some("not-the-name.example".into()),
        ..TlsOptions::default()
    };
    run(
        LIMIT,
        round_trip(options(m.port, "insecure", Transport::Mqtts, insecure)),
    );
}

#[test]
fn client_certificate_accepted_when_required() {
    let certs = certs("client-cert");
    let m = mosquitto_tls(
        "client-cert",
        &certs,
        &format!(
            "cafile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            certs.ca.display()
        ),
    );
    let with = |cert: &Path, key: &Path| TlsOptions {
        cert: Some(cert.to_path_buf()),
        key: Some(key.to_path_buf()),
        ..trusting(&certs)
    };
    run(
        LIMIT,
        round_trip(options(
            m.port,
            "with-cert",
            Transport::Mqtts,
            with(&certs.client_cert, &certs.client_key),
        )),
    );
    run(LIMIT, async {
        // No certificate, or one from a CA the broker does not trust: TLS refuses, in the
        // handshake (TLS 1.2) or right after it (TLS 1.3, where the alert follows the
        // client's Finished), and `connect` says so.
        for (id, tls) in [
            ("no-cert", trusting(&certs)),
            ("stranger", with(&certs.stranger_cert, &certs.stranger_key)),
        ] {
            for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
                let tls = TlsOptions {
                    version: Some(version),
                    ..tls.clone()
                };
                let e = connect_error(options(m.port, id, Transport::Mqtts, tls)).await;
                assert!(
                    matches!(e, ClientError::Tls(rustls::Error::AlertReceived(_))),
                    "{id} {version:?}: {e:?}"
                );
                eprintln!("{id} {version:?}: {e}");
            }
        }
    });
    assert!(
        m.log().contains("u'client'"),
        "mosquitto saw the client certificate:\n{}",
        m.log()
    );
}

#[test]
fn tls_version_can_be_pinned() {
    let certs = certs("versions");
    let pinned = |v| TlsOptions {
        version: Some(v),
        ..trusting(&certs)
    };
    // Mosquitto's listeners allow TLS 1.2 and 1.3 by default: either, when pinned, works.
    let m = mosquitto_tls("versions", &certs, "");
    for (id, v) in [("tls12", TlsVersion::Tls12), ("tls13", TlsVersion::Tls13)] {
        run(
            LIMIT,
            round_trip(options(m.port, id, Transport::Mqtts, pinned(v))),
        );
    }
    // A listener at TLS 1.3 at least: a client held to 1.2 is refused, in the handshake.
    let m13 = mosquitto_tls("versions13", &certs, "tls_version tlsv1.3\n");
    run(
        LIMIT,
        round_trip(options(m13.port, "any", Transport::Mqtts, trusting(&certs))),
    );
    run(LIMIT, async {
        let e = connect_error(options(
            m13.port,
            "tls12",
            Transport::Mqtts,
            pinned(TlsVersion::Tls12),
        ))
        .await;
        assert!(
            matches!(e, ClientError::Tls(rustls::Error::AlertReceived(_))),
            "{e:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// The library over WebSockets

#[test]
fn ws_round_trip() {
    let Some(m) = mosquitto_ws("ws", None) else {
        return;
    };
    let ws = Transport::Ws {
        path: "/mqtt".into(),
    };
    run(
        LIMIT,
        round_trip(options(m.port, "ws", ws, TlsOptions::default())),
    );
}

#[test]
fn wss_round_trip() {
    let certs = certs("wss");
    let Some(m) = mosquitto_ws("wss", Some(&certs)) else {
        return;
    };
    let wss = Transport::Wss {
        path: "/mqtt".into(),
    };
    run(
        LIMIT,
        round_trip(options(m.port, "wss", wss, trusting(&certs))),
    );
}

// ---------------------------------------------------------------------------------------
// Reconnecting

/// The client loses its broker (killed, started again) and comes back over its transport:
/// a retained publish made while it reconnects reaches its own subscription again.
fn reconnects(mut m: Mosquitto, transport: Transport, tls: TlsOptions) {
    let name = transport.scheme();
    run(Duration::from_secs(60), async {
        let (client, mut messages) = connect(ClientOptions {
            reconnect_interval: Some(Duration::from_millis(100)),
            ..options(m.port, name, transport.clone(), tls)
        })
        .await;
        client
            .subscribe(&[("again/#", QoS::AtLeastOnce)])
            .await
            .unwrap();
        client
            .publish("again/before", "before", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert_eq!(&recv(&mut messages).await.payload[..], b"before");
        m.restart();
        // The client may not have noticed the loss yet: a publish in flight on the old
        // connection fails with it (clean session), one made while it reconnects waits for
        // the new connection. The broker kept no session, so the client subscribes again;
        // the retained message reaches it whichever comes first.
        let mut attempts = 0;
        while let Err(e) = client
            .publish("again/after", "after", QoS::AtLeastOnce, true)
            .await
        {
            attempts += 1;
            assert!(attempts < 50, "{name}: publish after the restart: {e}");
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        let m2 = recv(&mut messages).await;
        assert_eq!(&m2.payload[..], b"after", "{name}");
        client.disconnect().await.unwrap();
    });
}

#[test]
fn reconnects_over_tls() {
    let certs = certs("reconnect-tls");
    let m = mosquitto_tls("reconnect-tls", &certs, "");
    reconnects(m, Transport::Mqtts, trusting(&certs));
}

#[test]
fn reconnects_over_websockets() {
    let certs = certs("reconnect-ws");
    if let Some(m) = mosquitto_ws("reconnect-ws", None) {
        let path = "/mqtt".to_string();
        reconnects(m, Transport::Ws { path }, TlsOptions::default());
    }
    if let Some(m) = mosquitto_ws("reconnect-wss", Some(&certs)) {
        let path = "/mqtt".to_string();
        reconnects(m, Transport::Wss { path }, trusting(&certs));
    }
}

// ---------------------------------------------------------------------------------------
// Failures no broker shows on demand

/// A server that accepts connections, reads what comes, and answers `answer` (if any) once
/// it has read something; it holds every connection open until the test ends.
fn fake_server(answer: Option<&'static [u8]>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    if let Some(answer) = answer {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(answer);
                    }
                    held.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, handle)
}

#[test]
fn handshakes_count_against_connect_timeout() {
    let (port, _server) = fake_server(None);
    for (transport, step) in [
        (Transport::Mqtts, "TLS handshake"),
        (
            Transport::Ws {
                path: "/mqtt".into(),
            },
            "WebSocket upgrade",
        ),
        (
            Transport::Wss {
                path: "/mqtt".into(),
            },
            "TLS handshake",
        ),
    ] {
        let tls = if transport.uses_tls() {
            TlsOptions {
                insecure: true,
                ..TlsOptions::default()
            }
        } else {
            TlsOptions::default()
        };
        let started = Instant::now();
        let e = run_result(async {
            connect_error(ClientOptions {
                connect_timeout: Duration::from_millis(300),
                ..options(port, "silent", transport.clone(), tls)
            })
            .await
        });
        let took = started.elapsed();
        assert_eq!(
            e.to_string(),
            format!("timed out after 0.3 s waiting for {step}"),
            "{transport:?}"
        );
        assert!(took < Duration::from_secs(3), "{transport:?} took {took:?}");
    }
}

#[test]
fn a_refused_websocket_upgrade_is_an_error() {
    let (port, _server) = fake_server(Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    let e = run_result(async {
        connect_error(options(
            port,
            "refused",
            Transport::Ws {
                path: "/nowhere".into(),
            },
            TlsOptions::default(),
        ))
        .await
    });
    assert!(matches!(e, ClientError::WebSocket(_)), "{e:?}");
    assert!(e.to_string().contains("WebSocket handshake failed"), "{e}");
}

#[test]
fn bad_tls_files_name_the_option_and_the_file() {
    let certs = certs("bad-files");
    let garbage = certs.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = certs.dir.join("missing.pem");
    for (tls, what, file) in [
        (
            TlsOptions {
                ca_file: Some(missing.clone()),
                ..TlsOptions::default()
            },
            "tls ca_file",
            &missing,
        ),
        (
            TlsOptions {
                ca_file: Some(garbage.clone()),
                ..TlsOptions::default()
            },
            "tls ca_file",
            &garbage,
        ),
        (
            TlsOptions {
                cert: Some(garbage.clone()),
                key: Some(certs.client_key.clone()),
                ..trusting(&certs)
            },
            "tls cert",
            &garbage,
        ),
        (
            TlsOptions {
                cert: Some(certs.client_cert.clone()),
                key: Some(garbage.clone()),
                ..trusting(&certs)
            },
            "tls key",
            &garbage,
        ),
        (
            // A key that is not the certificate's.
            TlsOptions {
                cert: Some(certs.client_cert.clone()),
                key: Some(certs.stranger_key.clone()),
                ..trusting(&certs)
            },
            "tls key",
            &certs.stranger_key,
        ),
    ] {
        let e = tls.client_config().unwrap_err();
        match &e {
            ClientError::Invalid { what: w, reason } => {
                assert_eq!(*w, what, "{e}");
                assert!(reason.contains(&file.display().to_string()), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // And `connect` fails the same way before opening anything.
        let e2 = run_result(connect_error(options(1, "x", Transport::Mqtts, tls)));
        assert_eq!(e2.to_string(), e.to_string());
    }
}

/// Runs `future` on a fresh executor under the usual deadline and returns its output.
fn run_result<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut out = None;
    run(LIMIT, async {
        out = Some(future.await);
    });
    out.expect("finished")
}

// ---------------------------------------------------------------------------------------
// The command-line clients

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
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run surgemq {args:?}: {e}"));
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Running { child, out, err }
    }

    /// Waits for a line containing `needle` on stderr.
    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.err.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} on stderr within 10 s");
    }

    /// Waits for the exit (at most 10 s); the status and the remaining output.
    fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running after 10 s");
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `surgemq sub ... -C 1` until SUBACK, then `surgemq pub`, then what the subscriber printed.
fn cli_round_trip(sub: &[&str], publish: &[&str], message: &str) {
    let subscriber = Running::spawn(&[&["sub", "-d", "-C", "1", "-v"], sub].concat());
    subscriber.wait_for_stderr("SUBACK");
    let publisher = Running::spawn(&[&["pub", "-m", message, "-q", "1"], publish].concat());
    let (status, _, err) = publisher.finish();
    assert!(status.success(), "pub {publish:?} failed: {err:?}");
    let (status, out, err) = subscriber.finish();
    assert!(status.success(), "sub {sub:?} failed: {err:?}");
    assert_eq!(
        out.last().map(|l| l.split_once(' ').unwrap().1),
        Some(message)
    );
}

#[test]
fn cli_pub_sub_over_mqtts() {
    let certs = certs("cli-mqtts");
    let m = mosquitto_tls("cli-mqtts", &certs, "");
    let port = m.port.to_string();
    // -h/-p with --cafile on one side, a mosquitto_pub URL on the other.
    cli_round_trip(
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            s(&certs.ca),
            "-t",
            "cli/tls",
        ],
        &[
            "-L",
            &format!("mqtts://localhost:{port}/cli/tls"),
            "--cafile",
            s(&certs.ca),
        ],
        "over mqtts",
    );
    // TLS 1.2 pinned, and --insecure without a CA file.
    cli_round_trip(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--insecure",
            "-t",
            "cli/tls",
        ],
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            s(&certs.ca),
            "--tls-version",
            "tlsv1.2",
            "-t",
            "cli/tls",
        ],
        "pinned",
    );
}

#[test]
fn cli_client_certificate() {
    let certs = certs("cli-client-cert");
    let m = mosquitto_tls(
        "cli-client-cert",
        &certs,
        &format!("cafile {}\nrequire_certificate true\n", certs.ca.display()),
    );
    let port = m.port.to_string();
    let tls = [
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        s(&certs.ca),
        "--cert",
        s(&certs.client_cert),
        "--key",
        s(&certs.client_key),
        "-t",
        "cli/cert",
    ];
    cli_round_trip(&tls, &tls, "with a certificate");
    // Without one: a one-line error that says what to do.
    let (status, _, err) = Running::spawn(&[
        "pub",
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        s(&certs.ca),
        "-t",
        "x",
        "-m",
        "y",
    ])
    .finish();
    assert_eq!(status.code(), Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].starts_with("surgemq: TLS error:"), "{err:?}");
    assert!(err[0].contains("--cert"), "{err:?}");
}

#[test]
fn cli_tls_errors_are_one_line() {
    let certs = certs("cli-errors");
    let m = mosquitto_tls("cli-errors", &certs, "");
    let port = m.port.to_string();
    let garbage = certs.dir.join("garbage.pem");
    std::fs::write(&garbage, "junk\n").unwrap();
    let missing = certs.dir.join("missing.pem");
    let base = ["pub", "-h", "localhost", "-p", &port, "-t", "x", "-m", "y"];
    for (flags, needles) in [
        (
            vec!["--cafile", s(&missing)],
            vec!["invalid --cafile:", s(&missing)],
        ),
        (
            vec!["--cafile", s(&garbage)],
            vec!["invalid --cafile:", s(&garbage), "no PEM certificate"],
        ),
        (
            vec![
                "--cafile",
                s(&certs.ca),
                "--cert",
                s(&garbage),
                "--key",
                s(&certs.client_key),
            ],
            vec!["invalid --cert:", s(&garbage)],
        ),
        (
            vec![
                "--cafile",
                s(&certs.ca),
                "--cert",
                s(&certs.client_cert),
                "--key",
                s(&garbage),
            ],
            vec!["invalid --key:", s(&garbage)],
        ),
        (
            // The wrong CA: the broker's certificate is not trusted.
            vec!["--cafile", s(&certs.other_ca)],
            vec![
                "TLS error: invalid peer certificate: UnknownIssuer",
                "--cafile",
            ],
        ),
    ] {
        let (status, out, err) = Running::spawn(&[&base[..], &flags].concat()).finish();
        assert_eq!(status.code(), Some(1), "{flags:?}: {err:?}");
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(err.len(), 1, "{flags:?}: {err:?}");
        for needle in needles {
            assert!(
                err[0].contains(needle),
                "{flags:?}: {:?} lacks {needle:?}",
                err[0]
            );
        }
    }
}

#[test]
fn cli_pub_sub_over_websockets() {
    let certs = certs("cli-ws");
    if let Some(m) = mosquitto_ws("cli-ws", None) {
        let port = m.port.to_string();
        cli_round_trip(
            &["-h", "127.0.0.1", "-p", &port, "--ws", "-t", "cli/ws"],
            &[
                "-L",
                &format!("ws://127.0.0.1:{port}/cli/ws"),
                "--ws",
                "/mqtt",
            ],
            "over ws",
        );
    }
    if let Some(m) = mosquitto_ws("cli-wss", Some(&certs)) {
        let port = m.port.to_string();
        cli_round_trip(
            &[
                "-L",
                &format!("wss://localhost:{port}/cli/wss"),
                "--cafile",
                s(&certs.ca),
            ],
            &[
                "-h",
                "localhost",
                "-p",
                &port,
                "--ws",
                "/mqtt",
                "--cafile",
                s(&certs.ca),
                "-t",
                "cli/wss",
            ],
            "over wss",
        );
    }
}
