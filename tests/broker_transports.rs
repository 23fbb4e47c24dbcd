//! The broker over TLS, WebSockets and WebSockets over TLS: clients on every transport talk to
//! each other (exact MQTT bytes through the layers, on 1 and 2 shards, so connections also move
//! to their client id's home shard with their TLS state), and hostile input on these ports gets
//! a clean close (an HTTP error where one is due) while a healthy client goes on.
//! The test client drives the crate's own sans-IO layer over a blocking socket; independent
//! clients (mosquitto_pub/sub, paho-mqtt) are in scripts/interop.sh.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use surgemq::broker::BrokerConfig;
use surgemq::transport::{tls, ClientTls, Layer, TlsFiles};

/// A certificate for "localhost" made for this test run, and its key.
fn cert(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("surgemq-bt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, made.cert.pem()).unwrap();
    std::fs::write(&k, made.key_pair.serialize_pem()).unwrap();
    (c, k)
}

/// A broker with a plain, a TLS, a WebSocket and a WebSocket-over-TLS listener (in that order
/// in `addrs`).
fn broker(shards: usize, name: &str) -> (Broker, PathBuf) {
    let (c, k) = cert(name);
    let broker = Broker::with_config(BrokerConfig {
        shards,
        listen: [
            "127.0.0.1:0",
            "mqtts://127.0.0.1:0",
            "ws://127.0.0.1:0/mqtt",
            "wss://127.0.0.1:0/mqtt",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect(),
        tls: Some(TlsFiles {
            cert: c.clone(),
            key: k,
            ..TlsFiles::default()
        }),
        connect_timeout: Duration::from_secs(1),
        ..test_config()
    });
    (broker, c)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tls,
    Ws,
    Wss,
}

/// A blocking MQTT client over one of the layered transports.
struct LayeredClient {
    socket: TcpStream,
    layer: Layer,
    app: BytesMut,
}

impl LayeredClient {
    fn connect(broker: &Broker, ca: &Path, kind: Kind) -> LayeredClient {
        let addr = broker.addrs[match kind {
            Kind::Tls => 1,
            Kind::Ws => 2,
            Kind::Wss => 3,
        }];
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let tls_conn = matches!(kind, Kind::Tls | Kind::Wss).then(|| {
            let config = tls::client_config(&ClientTls {
                ca_file: Some(ca.to_path_buf()),
                ..ClientTls::default()
            })
            .unwrap();
            rustls::ClientConnection::new(config, tls::server_name("localhost").unwrap()).unwrap()
        });
        let ws = matches!(kind, Kind::Ws | Kind::Wss).then_some(("localhost", "/mqtt"));
        let (layer, first) = Layer::client(tls_conn, ws).unwrap();
        let mut client = LayeredClient {
            socket,
            layer,
            app: BytesMut::new(),
        };
        client.flush_layer(first);
        client
    }

    fn flush_layer(&mut self, out: BytesMut) {
        if !out.is_empty() {
            self.socket.write_all(&out).unwrap();
        }
    }

    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match self.socket.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                let mut out = BytesMut::new();
                let got = self.layer.ingest(&buf[..n], &mut self.app, &mut out);
                self.flush_layer(out);
                got.map(|g| !g.closed).unwrap_or(false)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("nothing from the broker within {READ_TIMEOUT:?}")
            }
            Err(_) => false,
        }
    }

    fn send(&mut self, mqtt: &[u8]) {
        let mut out = BytesMut::new();
        self.layer.emit(mqtt, &mut out).unwrap();
        self.socket.write_all(&out).unwrap();
    }

    /// Reads exactly `expected` (MQTT bytes) next.
    fn expect(&mut self, expected: &[u8]) {
        while self.app.len() < expected.len() {
            assert!(self.read_some(), "closed before {expected:02x?}");
        }
        let got = self.app.split_to(expected.len());
        assert_eq!(&got[..], expected);
    }
}

fn connect_packet(id: &str) -> Vec<u8> {
    ConnectBuilder::new(id).build()
}

#[test]
fn clients_on_every_transport_talk_to_each_other() {
    with_shards(|shards| {
        let (broker, ca) = broker(shards, &format!("talk{shards}"));
        let mut clients: Vec<(Kind, LayeredClient)> = Vec::new();
        for (i, kind) in [Kind::Tls, Kind::Ws, Kind::Wss].into_iter().enumerate() {
            let mut c = LayeredClient::connect(&broker, &ca, kind);
            // Ids spread over the shards: with 2, some connections move with their TLS state.
            c.send(&connect_packet(&broker.id_on(&format!("t{i}"), i % shards)));
            c.expect(&[0x20, 0x02, 0x00, 0x00]);
            c.send(&subscribe(1, &[("x/#", 1)]));
            c.expect(&[0x90, 0x03, 0x00, 0x01, 0x01]);
            clients.push((kind, c));
        }
        let mut plain = broker.connect(&broker.id_on("plain", 1 % shards));
        plain.publish1("x/1", b"from tcp", false, 5);
        for (kind, c) in &mut clients {
            // PUBLISH QoS 1, topic x/1, packet id 1, payload "from tcp".
            let mut expected = vec![0x32, 0x0f, 0x00, 0x03, b'x', b'/', b'1', 0x00, 0x01];
            expected.extend_from_slice(b"from tcp");
            c.expect(&expected);
            c.send(&puback(1));
            let _ = kind;
        }
        // Each layered client publishes; everyone (the TCP client too) gets it.
        plain.subscribe(2, &[("y", 0)]);
        for (_, c) in &mut clients {
            c.send(&publish("y", b"hi", 0, false, false, 0));
        }
        for _ in 0..3 {
            let (p, _) = plain.next_publish();
            assert_eq!(&p.payload[..], b"hi");
        }
        // Ping through every layer.
        for (_, c) in &mut clients {
            c.send(&[0xc0, 0x00]);
            c.expect(&[0xd0, 0x00]);
        }
    });
}

/// Sends raw bytes to `addr` and returns what comes back until the broker closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("still open after {:?}: {e}", start.elapsed()),
        }
    }
}

fn masked_frame(first: u8, len_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    f.extend_from_slice(len_bytes);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn upgrade(path: &str, protocol: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn hostile_input_on_every_port_gets_a_clean_close() {
    with_shards(|shards| {
        let (broker, ca) = broker(shards, &format!("hostile{shards}"));
        let mut healthy = Healthy::new(&broker);
        let [plain, tls_port, ws, _wss] = [
            broker.addrs[0],
            broker.addrs[1],
            broker.addrs[2],
            broker.addrs[3],
        ];
        let connect = connect_packet("intruder");
        // Plaintext MQTT on the TLS port: a TLS alert at most, never a CONNACK.
        let got = raw_exchange(tls_port, &connect);
        assert!(!got.starts_with(&[0x20]), "{got:02x?}");
        healthy.check();
        // A TLS ClientHello on the plain port: not MQTT, closed without an answer.
        let hello = [
            0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
        ];
        assert_eq!(raw_exchange(plain, &hello), b"");
        healthy.check();
        // The WebSocket port: wrong path, wrong subprotocol, garbage, oversized head.
        let cases: [(Vec<u8>, &str); 4] = [
            (upgrade("/nope", "mqtt"), "HTTP/1.1 404 "),
            (upgrade("/mqtt", "chat"), "HTTP/1.1 400 "),
            (b"\x00\x01garbage\r\n\r\n".to_vec(), "HTTP/1.1 400 "),
            (
                format!("GET /mqtt HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000)).into_bytes(),
                "HTTP/1.1 431 ",
            ),
        ];
        for (bytes, answer) in cases {
            let got = raw_exchange(ws, &bytes);
            assert!(
                got.starts_with(answer.as_bytes()),
                "{answer}: {:?}",
                String::from_utf8_lossy(&got)
            );
            healthy.check();
        }
        // After a good upgrade: a text frame, then a frame of 2^63 bytes.
        for frame in [
            masked_frame(0x81, &[0x02], b"hi"),
            masked_frame(0x82, &[0xff, 0x80, 0, 0, 0, 0, 0, 0, 0], b""),
        ] {
            let mut bytes = upgrade("/mqtt", "mqtt");
            bytes.extend_from_slice(&frame);
            let got = raw_exchange(ws, &bytes);
            assert!(
                got.starts_with(b"HTTP/1.1 101 "),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
            healthy.check();
        }
        // A handshake that never finishes: closed by the connect timeout (1 s here).
        let partial: [(SocketAddr, &[u8]); 2] = [
            (tls_port, b"\x16\x03"),
            (ws, b"GET /mqtt HTTP/1.1\r\nHost: x\r\n"),
        ];
        for (addr, bytes) in partial {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            s.write_all(bytes).unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            assert_eq!(n, 0, "{:02x?}", &buf[..n]);
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
                "closed after {waited:?}, not by the 1 s connect timeout"
            );
            healthy.check();
        }
        // And the TLS port still serves.
        let mut c = LayeredClient::connect(&broker, &ca, Kind::Tls);
        c.send(&connect_packet("after"));
        c.expect(&[0x20, 0x02, 0x00, 0x00]);
    });
}
