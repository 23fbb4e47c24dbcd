//! Shared harness of the end-to-end broker tests: an in-process broker on a free port, a
//! raw-socket MQTT client that asserts on exact bytes, and hand-written byte builders for the
//! packets a client sends.
//!
//! Every read has a timeout, so a broker that does not answer fails the test instead of
//! hanging it. Negative checks ("nothing arrives") wait a short, fixed time: that is the only
//! place the tests wait without a read to wait on.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use surgemq::broker::{self, BrokerConfig, BrokerHandle, MetricsSnapshot};
use surgemq::protocol::{decode, frame_len, Ack, Packet, ProtocolLevel, Publish, QoS};

/// How long a read waits for bytes the broker owes us before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a negative check waits for bytes the broker must not send.
pub const QUIET: Duration = Duration::from_millis(300);
/// Largest packet the test client accepts from the broker.
const MAX_PACKET: usize = 1 << 20;

// ----- broker -------------------------------------------------------------------------------

/// A broker running in this process, stopped (and checked to stop) when dropped.
pub struct Broker {
    handle: Option<BrokerHandle>,
    pub addr: SocketAddr,
    /// Every listener's address, in the order of the configuration's `listen`.
    pub addrs: Vec<SocketAddr>,
    pub shards: usize,
    /// A cluster node: it refuses a resume while JetStream cannot answer for the session
    /// (CONNACK "server unavailable"), and a connect tries again, as a client library would.
    clustered: bool,
}

/// CONNACK "server unavailable": 3.1.1 and MQTT 5.
const REFUSED: [&[u8]; 2] = [&[0x20, 0x02, 0x00, 0x03], &[0x20, 0x03, 0x00, 0x88, 0x00]];

/// Sends `connect` to `addr` and expects exactly `connack`, after trying again every 0.5 s
/// for up to 30 s while the CONNACK is "server unavailable", as a client library would: a
/// cluster node refuses a resume while JetStream cannot answer for the session (a leader
/// change, or a machine so loaded that the read outlasts the node's wait, as in a CI run of
/// parallel tests).
#[track_caller]
pub fn connect_past_refusals(
    addr: SocketAddr,
    connect: &ConnectBuilder,
    connack: &[u8],
) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = RawClient::open(addr);
        c.send(&connect.build());
        let frame = c
            .next_frame_within(Duration::from_secs(15))
            .expect("a CONNACK");
        if REFUSED.contains(&&frame[..]) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        assert_eq!(frame, connack, "CONNACK");
        return c;
    }
}

impl Broker {
    /// A broker with the default configuration, `shards` shards, on a free port of 127.0.0.1.
    pub fn start(shards: usize) -> Broker {
        Broker::with_config(BrokerConfig {
            shards,
            ..test_config()
        })
    }

    /// A broker with the given configuration; its `listen` should use port 0.
    pub fn with_config(config: BrokerConfig) -> Broker {
        let shards = config.shards;
        let clustered = config.cluster.is_some();
        let handle = broker::start(config).expect("broker starts");
        let addr = handle.local_addrs()[0];
        let addrs = handle.local_addrs().to_vec();
        Broker {
            handle: Some(handle),
            addr,
            addrs,
            shards,
            clustered,
        }
    }

    /// A TCP connection to the broker, nothing sent yet.
    pub fn socket(&self) -> RawClient {
        RawClient::open(self.addr)
    }

    /// A connected client: CONNECT (MQTT 3.1.1, CleanSession=1, keepalive 0) answered with
    /// exactly CONNACK `20 02 00 00`.
    #[track_caller]
    pub fn connect(&self, client_id: &str) -> RawClient {
        self.connect_with(&ConnectBuilder::new(client_id))
    }

    /// A client connected with the given CONNECT, which the broker must accept.
    #[track_caller]
    pub fn connect_with(&self, connect: &ConnectBuilder) -> RawClient {
        // CONNACK, remaining length 2, session present 0, return code 0 (accepted).
        self.connect_expecting(connect, &[0x20, 0x02, 0x00, 0x00])
    }

    /// A client that reconnects with CleanSession = 0 and must find its session: CONNACK
    /// `20 02 01 00` (Session Present 1, accepted; MQTT-3.2.2-2).
    #[track_caller]
    pub fn resume(&self, connect: &ConnectBuilder) -> RawClient {
        self.connect_expecting(connect, &[0x20, 0x02, 0x01, 0x00])
    }

    /// Sends `connect` on a new socket and expects exactly `connack`.
    #[track_caller]
    pub fn connect_expecting(&self, connect: &ConnectBuilder, connack: &[u8]) -> RawClient {
        if !self.clustered || REFUSED.contains(&connack) {
            let mut c = self.socket();
            c.send(&connect.build());
            c.expect_bytes(connack);
            return c;
        }
        connect_past_refusals(self.addr, connect, connack)
    }

    /// Stops the broker and returns every shard's final counters.
    pub fn shutdown(mut self) -> Vec<MetricsSnapshot> {
        let handle = self.handle.take().expect("broker still running");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.shutdown());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("broker shuts down within 10 s")
    }

    /// The running broker's handle.
    #[allow(dead_code)]
    pub fn handle(&self) -> &BrokerHandle {
        self.handle.as_ref().expect("running")
    }

    /// A client id that starts with `prefix` and whose home is `shard`.
    pub fn id_on(&self, prefix: &str, shard: usize) -> String {
        id_on_shard(prefix, shard, self.shards)
    }

    /// Two client ids whose homes differ when the broker has more than one shard.
    pub fn ids_apart(&self, a: &str, b: &str) -> (String, String) {
        (self.id_on(a, 0), self.id_on(b, 1 % self.shards))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        // A shutdown that hangs must fail the test, not hang it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.shutdown());
        });
        let stopped = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        if !stopped && !std::thread::panicking() {
            panic!("broker did not shut down within 10 s");
        }
    }
}

/// The default configuration on a free port of 127.0.0.1 with 1 shard.
pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 1,
        ..Default::default()
    }
}

/// A client id starting with `prefix` whose home shard is `shard` (of `shards`).
pub fn id_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| broker::home_shard(id, shards).0 as usize == shard)
        .expect("some id hashes to every shard")
}

/// A topic starting with `prefix` whose retained messages live on `shard` (of `shards`).
pub fn topic_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}/{n}"))
        .find(|topic| broker::home_shard(topic, shards).0 as usize == shard)
        .expect("some topic hashes to every shard")
}

/// Runs `test` against 1 and 2 shards, in parallel threads; a failure names the shard count.
pub fn with_shards(test: impl Fn(usize) + Sync) {
    let test = &test;
    std::thread::scope(|s| {
        let runs: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|shards| (shards, s.spawn(move || test(shards))))
            .collect();
        let mut failed = Vec::new();
        for (shards, run) in runs {
            if run.join().is_err() {
                failed.push(shards);
            }
        }
        assert!(failed.is_empty(), "failed with shards = {failed:?}");
    });
}

// ----- raw client ---------------------------------------------------------------------------

/// A plain TCP client that speaks MQTT byte by byte.
pub struct RawClient {
    stream: TcpStream,
    /// Bytes received and not consumed yet.
    buf: BytesMut,
}

/// How a read attempt ended.
enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
}

impl RawClient {
    pub fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to the broker");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {bytes:02x?}: {e}"));
    }

    /// Another handle on the socket, to write from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the socket")
    }

    /// Sends, ignoring errors: for bytes a broker may already have stopped reading.
    pub fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Closes the socket without DISCONNECT (for wills): FIN, then the socket is dropped.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Sends DISCONNECT and waits until the broker closes the connection: from then on the
    /// broker is done with it (session detached, or removed when clean).
    #[track_caller]
    pub fn disconnect(mut self) {
        self.send(&[0xe0, 0x00]);
        self.expect_closed();
    }

    /// Drops the connection the way a crashed client does (FIN, no DISCONNECT), then waits
    /// until the broker closes its side, i.e. has finished with the connection. What the broker
    /// sent meanwhile is returned unread, as a crashed client would never see it.
    #[track_caller]
    pub fn crash_and_wait(mut self) -> Vec<u8> {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => return self.buf.to_vec(),
                ReadOutcome::TimedOut => {
                    panic!("the broker did not close a connection whose client went away")
                }
            }
        }
    }

    /// One read into `buf`, waiting at most until `deadline`.
    fn read_more(&mut self, deadline: Instant) -> ReadOutcome {
        let now = Instant::now();
        if now >= deadline {
            return ReadOutcome::TimedOut;
        }
        self.stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => ReadOutcome::Closed,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                ReadOutcome::Data
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                ReadOutcome::TimedOut
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => ReadOutcome::Data,
            // Reset, aborted, broken pipe: the broker closed the connection.
            Err(_) => ReadOutcome::Closed,
        }
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    #[track_caller]
    pub fn expect_bytes(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < expected.len() {
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => panic!(
                    "connection closed while expecting {expected:02x?}; received only {:02x?}",
                    &self.buf[..]
                ),
                ReadOutcome::TimedOut => panic!(
                    "timed out expecting {expected:02x?}; received only {:02x?}",
                    &self.buf[..]
                ),
            }
        }
        let got = self.buf.split_to(expected.len());
        assert_eq!(&got[..], expected, "broker sent other bytes than expected");
    }

    /// Asserts the broker closes the connection within `within` without sending anything
    /// (more). Returns how long the close took.
    #[track_caller]
    pub fn expect_closed_within(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the connection to close without more bytes, got {:02x?}",
                &self.buf[..]
            );
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => return start.elapsed(),
                ReadOutcome::TimedOut => panic!("connection still open after {within:?}"),
            }
        }
    }

    /// Asserts the broker closes the connection (soon) without sending anything (more).
    #[track_caller]
    pub fn expect_closed(&mut self) {
        self.expect_closed_within(READ_TIMEOUT);
    }

    /// Asserts the connection is still open and silent for `dur`.
    #[track_caller]
    pub fn expect_open_and_silent(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected silence, got {:02x?}",
                &self.buf[..]
            );
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => panic!("connection closed; expected it to stay open"),
                ReadOutcome::TimedOut => return,
            }
        }
    }

    /// Asserts nothing arrives for [`QUIET`] (the connection may stay open).
    #[track_caller]
    pub fn expect_nothing(&mut self) {
        self.expect_open_and_silent(QUIET);
    }

    /// The raw bytes of the next complete packet, waiting at most `within`; `None` on timeout.
    #[track_caller]
    pub fn next_frame_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            match frame_len(&self.buf, MAX_PACKET, ProtocolLevel::V5) {
                Ok(Some(len)) if self.buf.len() >= len => {
                    return Some(self.buf.split_to(len).to_vec())
                }
                Ok(_) => {}
                Err(e) => panic!(
                    "broker sent a malformed packet ({e}): {:02x?}",
                    &self.buf[..]
                ),
            }
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => panic!(
                    "connection closed while waiting for a packet; pending bytes {:02x?}",
                    &self.buf[..]
                ),
                ReadOutcome::TimedOut => return None,
            }
        }
    }

    /// The next complete packet, or `None` when the broker closes the connection first (bytes
    /// of an incomplete packet left at the close fail the test). Fails on a timeout.
    #[track_caller]
    pub fn next_frame_or_close(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match frame_len(&self.buf, MAX_PACKET, ProtocolLevel::V5) {
                Ok(Some(len)) if self.buf.len() >= len => {
                    return Some(self.buf.split_to(len).to_vec())
                }
                Ok(_) => {}
                Err(e) => panic!(
                    "broker sent a malformed packet ({e}): {:02x?}",
                    &self.buf[..]
                ),
            }
            match self.read_more(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed in the middle of a packet: {:02x?}",
                        &self.buf[..]
                    );
                    return None;
                }
                ReadOutcome::TimedOut => {
                    panic!("timed out waiting for a packet or the close of the connection")
                }
            }
        }
    }

    /// Asserts the next packet is the broker's MQTT 5 DISCONNECT with `reason` and at most a
    /// Reason String (what rule was broken, free text) as property, then that the connection
    /// closes. Returns the Reason String.
    #[track_caller]
    pub fn expect_disconnect_v5(&mut self, reason: u8) -> Option<String> {
        let frame = self
            .next_frame_or_close()
            .unwrap_or_else(|| panic!("closed without DISCONNECT {reason:#04x}"));
        let mut buf = bytes::BytesMut::from(&frame[..]);
        let packet = surgemq::protocol::decode(&mut buf, MAX_PACKET, ProtocolLevel::V5);
        let Ok(Some(surgemq::protocol::Packet::Disconnect(d))) = packet else {
            panic!("expected DISCONNECT {reason:#04x}, got {frame:02x?}");
        };
        assert_eq!(d.reason.0, reason, "DISCONNECT reason in {frame:02x?}");
        let text = d.properties.and_then(|p| {
            let text = p.reason_string.clone();
            let only_text = surgemq::protocol::Properties {
                reason_string: text.clone(),
                ..Default::default()
            };
            assert_eq!(*p, only_text, "DISCONNECT properties: only a Reason String");
            text.map(|t| t.as_str().to_string())
        });
        self.expect_closed();
        text
    }

    /// The raw bytes of the next complete packet.
    #[track_caller]
    pub fn next_frame(&mut self) -> Vec<u8> {
        self.next_frame_within(READ_TIMEOUT)
            .unwrap_or_else(|| panic!("timed out waiting for a packet from the broker"))
    }

    /// The next packet, decoded with the crate's codec.
    #[track_caller]
    pub fn next_packet(&mut self) -> Packet {
        parse(&self.next_frame())
    }

    /// The next packet of an MQTT 5 connection, decoded with the crate's codec.
    #[track_caller]
    pub fn next_packet_v5(&mut self) -> Packet {
        parse_at(&self.next_frame(), ProtocolLevel::V5)
    }

    /// The next packet of an MQTT 5 connection, which must be a PUBLISH.
    #[track_caller]
    pub fn next_publish_v5(&mut self) -> Publish {
        match self.next_packet_v5() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH; returns it with its raw bytes.
    #[track_caller]
    pub fn next_publish(&mut self) -> (Publish, Vec<u8>) {
        let frame = self.next_frame();
        match parse(&frame) {
            Packet::Publish(p) => (p, frame),
            other => panic!("expected PUBLISH, got {other:?} ({frame:02x?})"),
        }
    }

    /// Reads publishes until one with payload `marker`; returns the payloads before it.
    /// Acknowledges QoS 1 publishes with PUBACK and QoS 2 ones with PUBREC (the PUBREL that
    /// follows is answered too).
    #[track_caller]
    pub fn payloads_until(&mut self, marker: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next_frame();
            match parse(&frame) {
                Packet::Publish(p) => {
                    self.ack(&p);
                    if &p.payload[..] == marker {
                        return seen;
                    }
                    seen.push(p.payload.to_vec());
                }
                Packet::PubRel(Ack { packet_id: id, .. }) => self.send(&pubcomp(id)),
                other => panic!("expected PUBLISH, got {other:?} ({frame:02x?})"),
            }
        }
    }

    /// Like [`RawClient::payloads_until`], but returns every PUBLISH before the marker whole
    /// (decoded, and its raw bytes), in arrival order. Then finishes the QoS 2 flows still
    /// open: a PINGREQ round trip, answering the PUBRELs that come before the PINGRESP (a
    /// PUBLISH there fails the test), so the connection is quiet when this returns.
    #[track_caller]
    pub fn publishes_until(&mut self, marker: &[u8]) -> Vec<(Publish, Vec<u8>)> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next_frame();
            match parse(&frame) {
                Packet::Publish(p) => {
                    self.ack(&p);
                    if &p.payload[..] == marker {
                        break;
                    }
                    seen.push((p, frame));
                }
                Packet::PubRel(Ack { packet_id: id, .. }) => self.send(&pubcomp(id)),
                other => panic!("expected PUBLISH, got {other:?} ({frame:02x?})"),
            }
        }
        self.send(&[0xc0, 0x00]);
        loop {
            let frame = self.next_frame();
            match parse(&frame) {
                Packet::PingResp => return seen,
                Packet::PubRel(Ack { packet_id: id, .. }) => self.send(&pubcomp(id)),
                other => panic!("expected PUBREL or PINGRESP, got {other:?} ({frame:02x?})"),
            }
        }
    }

    /// Sends the acknowledgement a subscriber owes for `p` (none for QoS 0).
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&puback(p.packet_id)),
            QoS::ExactlyOnce => self.send(&pubrec(p.packet_id)),
        }
    }

    /// Subscribes and expects the SUBACK granting exactly the requested QoS for every filter.
    #[track_caller]
    pub fn subscribe(&mut self, packet_id: u16, filters: &[(&str, u8)]) {
        self.send(&subscribe(packet_id, filters));
        let mut ack = vec![0x90, 2 + filters.len() as u8];
        ack.extend_from_slice(&packet_id.to_be_bytes());
        ack.extend(filters.iter().map(|&(_, qos)| qos));
        self.expect_bytes(&ack);
    }

    /// Subscribes and collects the SUBACK (which must be exactly the requested grants) and
    /// `publishes` PUBLISH packets (retained messages), in whatever order they come: the spec
    /// lets a server send matching PUBLISHes before the SUBACK (3.8.4). Returns the PUBLISH
    /// frames, unacknowledged.
    #[track_caller]
    pub fn subscribe_expecting(
        &mut self,
        packet_id: u16,
        filters: &[(&str, u8)],
        publishes: usize,
    ) -> Vec<Vec<u8>> {
        self.send(&subscribe(packet_id, filters));
        let mut ack = vec![0x90, 2 + filters.len() as u8];
        ack.extend_from_slice(&packet_id.to_be_bytes());
        ack.extend(filters.iter().map(|&(_, qos)| qos));
        let mut suback_seen = false;
        let mut frames = Vec::new();
        while !suback_seen || frames.len() < publishes {
            let frame = self.next_frame();
            if frame[0] >> 4 == 9 {
                assert!(!suback_seen, "second SUBACK {frame:02x?}");
                assert_eq!(frame, ack, "SUBACK bytes");
                suback_seen = true;
            } else {
                assert_eq!(
                    frame[0] >> 4,
                    3,
                    "expected PUBLISH or SUBACK, got {frame:02x?}"
                );
                assert!(
                    frames.len() < publishes,
                    "more PUBLISHes than the {publishes} expected: {frame:02x?}"
                );
                frames.push(frame);
            }
        }
        frames
    }

    /// PINGREQ, then expects exactly PINGRESP: everything sent before was processed.
    #[track_caller]
    pub fn ping(&mut self) {
        self.send(&[0xc0, 0x00]);
        self.expect_bytes(&[0xd0, 0x00]);
    }

    /// Publishes QoS 0 and waits until the broker processed it (a PINGREQ round trip).
    #[track_caller]
    pub fn publish0(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.send(&publish(topic, payload, 0, retain, false, 0));
        self.ping();
    }

    /// Publishes QoS 1 and expects exactly PUBACK `40 02 id`.
    #[track_caller]
    pub fn publish1(&mut self, topic: &str, payload: &[u8], retain: bool, packet_id: u16) {
        self.send(&publish(topic, payload, 1, retain, false, packet_id));
        self.expect_bytes(&puback(packet_id));
    }

    /// Publishes QoS 2 and completes the flow: PUBREC `50 02 id`, PUBREL, PUBCOMP `70 02 id`.
    #[track_caller]
    pub fn publish2(&mut self, topic: &str, payload: &[u8], retain: bool, packet_id: u16) {
        self.send(&publish(topic, payload, 2, retain, false, packet_id));
        self.expect_bytes(&pubrec(packet_id));
        self.send(&pubrel(packet_id));
        self.expect_bytes(&pubcomp(packet_id));
    }
}

/// Decodes one whole frame with the crate's codec, as MQTT 3.1.1.
#[track_caller]
pub fn parse(frame: &[u8]) -> Packet {
    parse_at(frame, ProtocolLevel::V311)
}

/// Decodes one whole frame with the crate's codec at `level`.
#[track_caller]
pub fn parse_at(frame: &[u8], level: ProtocolLevel) -> Packet {
    let mut buf = BytesMut::from(frame);
    match decode(&mut buf, MAX_PACKET, level) {
        Ok(Some(p)) if buf.is_empty() => p,
        other => panic!("cannot decode broker packet {frame:02x?}: {other:?}"),
    }
}

/// A subscriber and a publisher, on different home shards when there are several, that check
/// the broker still delivers QoS 1 messages.
pub struct Healthy {
    sub: RawClient,
    publisher: RawClient,
    round: u16,
}

impl Healthy {
    pub fn new(broker: &Broker) -> Healthy {
        let (sub_id, pub_id) = broker.ids_apart("healthy-sub", "healthy-pub");
        let mut sub = broker.connect(&sub_id);
        sub.subscribe(1, &[("healthy/t", 1)]);
        let publisher = broker.connect(&pub_id);
        Healthy {
            sub,
            publisher,
            round: 0,
        }
    }

    /// A QoS 1 publish goes through: PUBACK to the publisher, the message to the subscriber.
    #[track_caller]
    pub fn check(&mut self) {
        self.round += 1;
        let payload = format!("still alive {}", self.round);
        self.publisher
            .publish1("healthy/t", payload.as_bytes(), false, self.round);
        let (p, frame) = self.sub.next_publish();
        assert_eq!(frame[0], 0x32, "QoS 1 delivery header: {frame:02x?}");
        assert_eq!(p.topic.as_str(), "healthy/t");
        assert_eq!(&p.payload[..], payload.as_bytes());
        self.sub.ack(&p);
    }
}

/// Proof that a shard has handled everything one publisher published so far: a client homed on
/// that shard, subscribed to a topic of its own. Messages from one shard to another keep their
/// order, so once the witness has its message, every earlier message of the same publisher
/// has reached (been queued for, or been refused by) every session on the witness's shard:
/// a synchronisation point without sleeping, for sessions that have no connection to read on.
pub struct Witness {
    client: RawClient,
    topic: String,
    round: u32,
}

impl Witness {
    pub fn new(broker: &Broker, name: &str, shard: usize) -> Witness {
        let mut client = broker.connect(&broker.id_on(&format!("witness-{name}"), shard));
        let topic = format!("witness/{name}");
        client.subscribe(1, &[(&topic, 0)]);
        Witness {
            client,
            topic,
            round: 0,
        }
    }

    /// Returns once the witness's shard has handled everything `publisher` sent before.
    #[track_caller]
    pub fn settle(&mut self, publisher: &mut RawClient) {
        self.round += 1;
        let payload = format!("settled {}", self.round);
        publisher.publish0(&self.topic, payload.as_bytes(), false);
        self.client
            .expect_bytes(&qos0_delivery(&self.topic, payload.as_bytes(), false));
    }
}

// ----- byte builders ------------------------------------------------------------------------

/// Remaining Length (2.2.3): 7 bits per byte, least significant first, high bit = more.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

/// A fixed header byte, then the Remaining Length of `body`, then `body`.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    out.extend(remaining_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string or binary field: two-byte big-endian length, then the bytes (1.5.3).
pub fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The CONNECT a test sends; `build` writes its bytes.
#[derive(Clone, Debug)]
pub struct ConnectBuilder {
    pub protocol_name: Vec<u8>,
    pub level: u8,
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive: u16,
    /// Topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// MQTT 5 (level 5 only): the CONNECT's property bytes, without their length.
    pub properties: Vec<u8>,
    /// MQTT 5: the will's property bytes, without their length.
    pub will_properties: Vec<u8>,
}

impl ConnectBuilder {
    /// MQTT 3.1.1 ("MQTT", level 4), CleanSession = 1, keepalive 0 (off), no will.
    pub fn new(client_id: &str) -> ConnectBuilder {
        ConnectBuilder {
            protocol_name: b"MQTT".to_vec(),
            level: 4,
            client_id: client_id.to_string(),
            clean_session: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
            properties: Vec::new(),
            will_properties: Vec::new(),
        }
    }

    /// An MQTT 5 CONNECT ("MQTT", level 5; Clean Start = 1) with these property bytes.
    pub fn v5(client_id: &str, properties: &[u8]) -> ConnectBuilder {
        ConnectBuilder {
            level: 5,
            properties: properties.to_vec(),
            ..ConnectBuilder::new(client_id)
        }
    }

    pub fn will_properties(mut self, properties: &[u8]) -> Self {
        self.will_properties = properties.to_vec();
        self
    }

    pub fn clean(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some((topic.to_string(), payload.to_vec(), qos, retain));
        self
    }

    pub fn username(mut self, username: &str) -> Self {
        self.username = Some(username.to_string());
        self
    }

    pub fn password(mut self, password: &[u8]) -> Self {
        self.password = Some(password.to_vec());
        self
    }

    pub fn protocol(mut self, name: &[u8], level: u8) -> Self {
        self.protocol_name = name.to_vec();
        self.level = level;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        // Variable header (3.1.2): protocol name, protocol level, connect flags, keep alive.
        let mut body = field(&self.protocol_name);
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean_session {
            flags |= 0x02; // bit 1: CleanSession
        }
        if let Some((_, _, qos, retain)) = &self.will {
            flags |= 0x04; // bit 2: Will Flag
            flags |= qos << 3; // bits 4-3: Will QoS
            if *retain {
                flags |= 0x20; // bit 5: Will Retain
            }
        }
        if self.username.is_some() {
            flags |= 0x80; // bit 7: User Name Flag
        }
        if self.password.is_some() {
            flags |= 0x40; // bit 6: Password Flag
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        if self.level == 5 {
            body.extend(remaining_length(self.properties.len()));
            body.extend_from_slice(&self.properties);
        }
        // Payload (3.1.3): client id, will topic, will message, user name, password.
        body.extend(field(self.client_id.as_bytes()));
        if let Some((topic, payload, _, _)) = &self.will {
            if self.level == 5 {
                body.extend(remaining_length(self.will_properties.len()));
                body.extend_from_slice(&self.will_properties);
            }
            body.extend(field(topic.as_bytes()));
            body.extend(field(payload));
        }
        if let Some(username) = &self.username {
            body.extend(field(username.as_bytes()));
        }
        if let Some(password) = &self.password {
            body.extend(field(password));
        }
        frame(0x10, &body) // CONNECT: type 1, flags 0
    }
}

/// SUBSCRIBE (3.8): `82`, packet id, then (filter, requested QoS) pairs.
pub fn subscribe(packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        body.extend(field(filter.as_bytes()));
        body.push(*qos);
    }
    frame(0x82, &body) // type 8, reserved flags 0010 (MQTT-3.8.1-1)
}

/// UNSUBSCRIBE (3.10): `a2`, packet id, then filters.
pub fn unsubscribe(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for filter in filters {
        body.extend(field(filter.as_bytes()));
    }
    frame(0xa2, &body) // type 10, reserved flags 0010 (MQTT-3.10.1-1)
}

/// PUBLISH (3.3): type 3 with DUP (bit 3), QoS (bits 2-1) and RETAIN (bit 0); topic name; a
/// packet id for QoS 1 and 2 only; the payload.
pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, dup: bool, id: u16) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = field(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// PUBACK `40 02 id`.
pub fn puback(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [0x40, 0x02, hi, lo]
}

/// PUBREC `50 02 id`.
pub fn pubrec(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [0x50, 0x02, hi, lo]
}

/// PUBREL `62 02 id` (reserved flags 0010, MQTT-3.6.1-1).
pub fn pubrel(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [0x62, 0x02, hi, lo]
}

/// PUBCOMP `70 02 id`.
pub fn pubcomp(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [0x70, 0x02, hi, lo]
}

/// The exact bytes of a PUBLISH the broker sends for QoS 0 (no packet id to guess).
pub fn qos0_delivery(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    publish(topic, payload, 0, retain, false, 0)
}

// ----- hostile clients and process measurements -----------------------------------------------

impl RawClient {
    /// A client over a socket connected elsewhere (e.g. bound to a chosen source address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The client's end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Sends `bytes` in writes of `piece` bytes each (TCP_NODELAY is on, so each write leaves
    /// as its own segment), pausing `pause` after every `pause_every`-th write.
    pub fn send_in_pieces(
        &mut self,
        bytes: &[u8],
        piece: usize,
        pause_every: usize,
        pause: Duration,
    ) {
        for (i, chunk) in bytes.chunks(piece.max(1)).enumerate() {
            self.send(chunk);
            if pause_every > 0 && (i + 1) % pause_every == 0 {
                std::thread::sleep(pause);
            }
        }
    }

    /// Shuts down the client's write side only (the broker reads EOF); reading goes on.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }

    /// Closes the socket with SO_LINGER 0, so the kernel sends RST instead of FIN and drops
    /// whatever was not sent yet: a client that crashed mid-packet, or a middlebox reset.
    pub fn reset(self) {
        let sock = socket2::SockRef::from(&self.stream);
        sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
        drop(self);
    }
}

/// CPU time (user + system, all threads) this process has used so far, from /proc/self/stat.
/// Its resolution is one clock tick (usually 10 ms).
pub fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_sec)
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn process_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("resident field")
        .parse()
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

/// Protocol errors of all shards by rule text, added up.
pub fn protocol_errors_by_rule(
    metrics: &[MetricsSnapshot],
) -> std::collections::BTreeMap<String, u64> {
    let mut rules = std::collections::BTreeMap::new();
    for m in metrics {
        for (rule, n) in &m.protocol_errors_by_rule {
            *rules.entry(rule.clone()).or_insert(0) += n;
        }
    }
    rules
}

/// How many protocol errors of all shards name a rule containing `needle`.
pub fn protocol_errors_matching(metrics: &[MetricsSnapshot], needle: &str) -> u64 {
    protocol_errors_by_rule(metrics)
        .iter()
        .filter(|(rule, _)| rule.contains(needle))
        .map(|(_, n)| n)
        .sum()
}

/// Raises this process's soft limit of open files to its hard limit; returns the new limit.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// CONNECT (3.1.1, CleanSession) with raw client id, will topic, user name and password bytes,
/// so that invalid UTF-8, U+0000 or control characters can be put in any string.
pub fn raw_connect(
    client_id: &[u8],
    will_topic: Option<&[u8]>,
    username: Option<&[u8]>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.push(4);
    let mut flags = 0x02;
    if will_topic.is_some() {
        flags |= 0x04;
    }
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&[0, 0]); // keepalive 0
    body.extend(field(client_id));
    if let Some(topic) = will_topic {
        body.extend(field(topic));
        body.extend(field(b"will"));
    }
    if let Some(user) = username {
        body.extend(field(user));
    }
    if let Some(password) = password {
        body.extend(field(password));
    }
    frame(0x10, &body)
}

// ----- MQTT 5 -------------------------------------------------------------------------------

/// The CONNACK properties the broker announces to every MQTT 5 client with the default
/// configuration, in the order it writes them (by property id).
pub const CONNACK_V5_PROPERTIES: [u8; 15] = [
    0x21, 0xff, 0xff, // Receive Maximum 65535
    0x22, 0x00, 0x0a, // Topic Alias Maximum 10
    0x27, 0x00, 0x10, 0x00, 0x00, // Maximum Packet Size 1048576
    0x29, 0x01, // Subscription Identifier Available 1
    0x2a, 0x01, // Shared Subscription Available 1
];

/// The CONNACK accepting an MQTT 5 client with the default configuration:
/// `20 12 sp 00 0f` and [`CONNACK_V5_PROPERTIES`].
pub fn connack_v5(session_present: bool) -> Vec<u8> {
    let mut body = vec![u8::from(session_present), 0x00]; // flags, reason 0x00 Success
    body.extend(remaining_length(CONNACK_V5_PROPERTIES.len()));
    body.extend_from_slice(&CONNACK_V5_PROPERTIES);
    frame(0x20, &body)
}

/// MQTT 5 PUBLISH (5.0 3.3): like [`publish`] (DUP 0), with a property block between the packet
/// id and the payload.
pub fn publish_v5(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    id: u16,
    properties: &[u8],
) -> Vec<u8> {
    let first = 0x30 | (qos << 1) | u8::from(retain);
    let mut body = field(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend(remaining_length(properties.len()));
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// MQTT 5 SUBSCRIBE (5.0 3.8): `82`, packet id, property block, then (filter, subscription
/// options byte) pairs; the options byte is QoS (bits 1-0), No Local (bit 2), Retain As
/// Published (bit 3) and Retain Handling (bits 5-4).
pub fn subscribe_v5(packet_id: u16, properties: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(remaining_length(properties.len()));
    body.extend_from_slice(properties);
    for (filter, options) in filters {
        body.extend(field(filter.as_bytes()));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// MQTT 5 SUBACK without properties: `90`, packet id, property length 0, reason codes.
pub fn suback_v5(packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0x00); // property length 0
    body.extend_from_slice(codes);
    frame(0x90, &body)
}

/// MQTT 5 UNSUBSCRIBE (5.0 3.10): `a2`, packet id, property length 0, filters.
pub fn unsubscribe_v5(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0x00); // property length 0
    for filter in filters {
        body.extend(field(filter.as_bytes()));
    }
    frame(0xa2, &body)
}

impl Broker {
    /// An MQTT 5 client the broker must accept with exactly [`connack_v5`]`(false)`.
    #[track_caller]
    pub fn connect_v5(&self, connect: &ConnectBuilder) -> RawClient {
        self.connect_expecting(connect, &connack_v5(false))
    }

    /// An MQTT 5 client (Clean Start 0) that must find its session: [`connack_v5`]`(true)`.
    #[track_caller]
    pub fn resume_v5(&self, connect: &ConnectBuilder) -> RawClient {
        self.connect_expecting(connect, &connack_v5(true))
    }
}

impl RawClient {
    /// MQTT 5 SUBSCRIBE without properties; expects the SUBACK granting each filter the QoS
    /// of its options byte.
    #[track_caller]
    pub fn subscribe_v5(&mut self, packet_id: u16, filters: &[(&str, u8)]) {
        self.subscribe_v5_with(packet_id, &[], filters);
    }

    /// [`RawClient::subscribe_v5`] with SUBSCRIBE properties (a Subscription Identifier).
    #[track_caller]
    pub fn subscribe_v5_with(&mut self, packet_id: u16, properties: &[u8], filters: &[(&str, u8)]) {
        self.send(&subscribe_v5(packet_id, properties, filters));
        let codes: Vec<u8> = filters.iter().map(|&(_, options)| options & 0x03).collect();
        self.expect_bytes(&suback_v5(packet_id, &codes));
    }
}
