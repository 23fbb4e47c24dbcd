//! The metrics endpoint (`surgemq::http`) beside an in-process broker: `/metrics` moves with
//! known traffic, `/healthz`, `/stats.json`, the page, and everything a bad or slow client can
//! do (400, 404, 405, 408, 431, 503) without holding up anyone else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use surgemq::broker::{self, BrokerConfig, BrokerHandle};
use surgemq::http::{serve_metrics, MetricsServer, HEAD_DEADLINE, MAX_CONNECTIONS};

/// A broker with its metrics endpoint, both stopped when dropped.
struct Setup {
    broker: Option<BrokerHandle>,
    mqtt: SocketAddr,
    metrics: Option<MetricsServer>,
    http: SocketAddr,
}

impl Setup {
    fn start(shards: usize) -> Setup {
        Setup::start_with(BrokerConfig {
            shards,
            ..test_config()
        })
    }

    fn start_with(config: BrokerConfig) -> Setup {
        let broker = broker::start(config).expect("broker starts");
        let metrics = serve_metrics("127.0.0.1:0".parse().unwrap(), broker.stats())
            .expect("metrics endpoint starts");
        Setup {
            mqtt: broker.local_addrs()[0],
            http: metrics.local_addr(),
            broker: Some(broker),
            metrics: Some(metrics),
        }
    }

    fn connect(&self, id: &str) -> RawClient {
        self.connect_with(ConnectBuilder::new(id))
    }

    fn connect_with(&self, connect: ConnectBuilder) -> RawClient {
        let mut c = RawClient::open(self.mqtt);
        c.send(&connect.build());
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]);
        c
    }

    fn get(&self, path: &str) -> HttpResponse {
        request(
            self.http,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"),
        )
    }

    /// Polls `/metrics` until `check` holds for it (the board is refreshed once a second);
    /// fails after 6 s with the last page.
    #[track_caller]
    fn metrics_until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let page = self.get("/metrics");
            assert_eq!(page.status, 200);
            if check(&page.body) {
                return page.body;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{}", page.body);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.metrics.take());
        let Some(handle) = self.broker.take() else {
            return;
        };
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

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

/// Sends `raw` and reads the whole response (the endpoint always closes).
fn request(addr: SocketAddr, raw: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> HttpResponse {
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)
        .expect("a response before the close");
    let text = String::from_utf8(bytes).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The sum of a metric's samples (over shards and labels); None when it has none.
fn sum(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A subscriber that acknowledges nothing, with one message in flight at most, has the rest
/// waiting in its queue: /metrics shows its depth in `surgemq_session_queue_depth`, beside the
/// publisher's empty queue.
#[test]
fn session_queue_depths_show_a_subscriber_that_falls_behind() {
    let setup = Setup::start_with(BrokerConfig {
        shards: 1,
        max_inflight: 1,
        ..test_config()
    });
    let mut sub = setup.connect("behind");
    sub.subscribe_expecting(1, &[("depth/t", 1)], 0);
    let mut publisher = setup.connect("publisher");
    for id in 1..=5u16 {
        publisher.send(&publish("depth/t", b"m", 1, false, false, id));
        publisher.expect_bytes(&puback(id));
    }
    // One message is in flight (unacknowledged), four wait.
    let page = setup.metrics_until("a queue of 4", |p| {
        sum(p, "surgemq_session_queue_depth_sum") == Some(4.0)
    });
    assert_eq!(sum(&page, "surgemq_session_queue_depth_count"), Some(2.0));
    for (le, n) in [("1", 1), ("2", 1), ("4", 2), ("+Inf", 2)] {
        let line = format!("surgemq_session_queue_depth_bucket{{shard=\"0\",le=\"{le}\"}} {n}\n");
        assert!(page.contains(&line), "{line} in:\n{page}");
    }
    drop(sub);
}

#[test]
fn metrics_move_with_known_traffic() {
    let setup = Setup::start(2);
    let page = setup.get("/metrics");
    assert_eq!(page.status, 200);
    assert!(
        page.head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        page.head
    );
    assert!(page
        .body
        .contains("# TYPE surgemq_publish_received_total counter\n"));
    assert!(page.body.contains("# HELP surgemq_connections "));
    assert!(page
        .body
        .contains("surgemq_publish_received_total{shard=\"1\"} "));
    assert_eq!(sum(&page.body, "surgemq_shards"), Some(2.0));
    let before = sum(&page.body, "surgemq_publish_received_total").unwrap();

    const N: usize = 25;
    let mut subscriber = setup.connect(&id_on_shard("sub", 0, 2));
    subscriber.subscribe(1, &[("metrics/#", 0)]);
    let mut publisher = setup.connect(&id_on_shard("pub", 1, 2));
    for i in 0..N {
        publisher.send(&publish(
            "metrics/test",
            format!("m{i}").as_bytes(),
            0,
            false,
            false,
            0,
        ));
    }
    publisher.ping();
    for _ in 0..N {
        subscriber.next_publish();
    }
    let page = setup.metrics_until("counted the publishes", |p| {
        sum(p, "surgemq_publish_received_total") == Some(before + N as f64)
            && sum(p, "surgemq_publish_sent_total") >= Some(N as f64)
    });
    assert_eq!(sum(&page, "surgemq_connections"), Some(2.0), "{page}");
    assert_eq!(sum(&page, "surgemq_subscriptions"), Some(1.0), "{page}");
    assert_eq!(sum(&page, "surgemq_connections_accepted_total"), Some(2.0));
    assert!(sum(&page, "surgemq_bytes_received_total").unwrap() > (N * 16) as f64);
    // The message crossed from shard 1 to shard 0's subscriber.
    assert!(sum(&page, "surgemq_cross_shard_batches_total").unwrap() >= 1.0);

    let stats = setup.get("/stats.json");
    assert_eq!(stats.status, 200);
    assert!(stats.head.contains("Content-Type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(v["total"]["messages_routed"], N as u64 + before as u64);
    assert_eq!(v["total"]["connections"], 2);
    assert_eq!(v["shards"], 2);
    assert_eq!(v["per_shard"].as_array().unwrap().len(), 2);
    let samples = v["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{}", stats.body);
    assert_eq!(samples[0]["shards"].as_array().unwrap().len(), 2);
    // Only newer samples after `since`.
    let last = samples.last().unwrap()["t"].as_u64().unwrap();
    let newer: serde_json::Value =
        serde_json::from_str(&setup.get(&format!("/stats.json?since={last}")).body).unwrap();
    for s in newer["samples"].as_array().unwrap() {
        assert!(s["t"].as_u64().unwrap() > last);
    }
    assert_eq!(setup.get("/stats.json?since=soon").status, 400);
}

/// With `--data-dir`, `surgemq_log_commits_total` counts the log's commits while the broker
/// runs (it was read only at the stop, so a running broker showed 0).
#[test]
fn log_commits_are_counted_while_the_broker_runs() {
    let dir = std::env::temp_dir().join(format!("surgemq-metrics-commits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let setup = Setup::start_with(BrokerConfig {
        shards: 1,
        data_dir: Some(dir.clone()),
        ..test_config()
    });
    let mut sub = setup.connect_with(ConnectBuilder::new("commits-sub").clean(false));
    sub.subscribe(1, &[("commits/t", 1)]);
    sub.disconnect();
    let mut publisher = setup.connect("commits-pub");
    for id in 1..=3u16 {
        // Queued for the away persistent session: acknowledged once it is in the log.
        publisher.send(&publish("commits/t", b"m", 1, false, false, id));
        publisher.expect_bytes(&puback(id));
    }
    let page = setup.metrics_until("counted a commit", |p| {
        sum(p, "surgemq_log_commits_total") >= Some(1.0)
    });
    assert!(
        page.contains("surgemq_log_commits_total{shard=\"0\"} "),
        "{page}"
    );
    drop(setup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn protocol_errors_are_counted_by_rule_with_the_rule_escaped() {
    let setup = Setup::start(1);
    // A client-chosen protocol name ends up in the rule's text: quotes and backslashes.
    let mut bad = RawClient::open(setup.mqtt);
    let mut connect = ConnectBuilder::new("bad");
    connect.protocol_name = br#"MQ"T\T"#.to_vec();
    bad.send(&connect.build());
    bad.expect_closed();
    let page = setup.metrics_until("counted the protocol error", |p| {
        sum(p, "surgemq_protocol_errors_total") == Some(1.0)
    });
    let line = page
        .lines()
        .find(|l| l.starts_with("surgemq_protocol_errors_by_rule_total{"))
        .unwrap_or_else(|| panic!("no rule series:\n{page}"));
    // Debug-quoted by the broker ("MQ\"T\\T"), then escaped again for the label.
    assert!(
        line.contains(r#"protocol name \"MQ\\\"T\\\\T\" is neither \"MQTT\""#),
        "{line}"
    );
    assert!(line.ends_with("} 1"), "{line}");
}

#[test]
fn health_page_and_errors() {
    let setup = Setup::start(1);
    let health = setup.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let page = setup.get("/");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("Content-Type: text/html"));
    assert!(page
        .head
        .contains("Content-Security-Policy: default-src 'none'"));
    assert!(page.body.contains("/stats.json"));
    assert!(!page.body.contains("<script src"), "the page loads nothing");

    assert_eq!(setup.get("/nope").status, 404);
    assert_eq!(setup.get("/metrics/../etc/passwd").status, 404);
    let post = request(
        setup.http,
        "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"));
    let head = request(setup.http, "HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert!(head.head.contains("Content-Length: 3"));
    // HTTP/1.0 is fine too.
    assert_eq!(
        request(setup.http, "GET /healthz HTTP/1.0\r\n\r\n").status,
        200
    );

    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET /metrics HTTP/9.9\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        "\u{0}\u{1}\u{2}\r\n\r\n",
    ] {
        assert_eq!(request(setup.http, garbage).status, 400, "{garbage:?}");
    }
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(request(setup.http, &huge).status, 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert_eq!(request(setup.http, &many).status, 431);
    // A client that connects and closes without a word gets nothing, and the endpoint lives.
    drop(TcpStream::connect(setup.http).unwrap());
    assert_eq!(setup.get("/healthz").status, 200);
}

#[test]
fn slow_clients_hold_up_nobody_and_time_out() {
    let setup = Setup::start(1);
    // Every connection thread taken by clients that send half a request and stall.
    let mut stalled: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect(setup.http).unwrap();
            s.write_all(b"GET /met").unwrap();
            s
        })
        .collect();
    // Give the accept thread time to take them all.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let busy = setup.get("/healthz");
    assert_eq!(busy.status, 503, "{busy:?}");
    assert!(busy.head.contains("Retry-After: 1"));
    assert!(started.elapsed() < Duration::from_secs(2));

    // They get 408 once their deadline passes, and free their threads.
    let first = &mut stalled[0];
    first.set_read_timeout(Some(HEAD_DEADLINE * 2)).unwrap();
    let timed_out = read_response(first);
    assert_eq!(timed_out.status, 408);
    assert!(started.elapsed() < HEAD_DEADLINE + Duration::from_secs(1));
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(3);
    while setup.get("/healthz").status != 200 {
        assert!(Instant::now() < deadline, "threads never freed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // One stalled client among others: the others are answered at once.
    let _slow = TcpStream::connect(setup.http).unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(setup.get("/metrics").status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn shutdown_stops_listening() {
    let mut setup = Setup::start(1);
    assert_eq!(setup.get("/healthz").status, 200);
    let started = Instant::now();
    setup.metrics.take().unwrap().shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect(setup.http).is_err());
    // Another endpoint can take the port again.
    let again = serve_metrics(setup.http, setup.broker.as_ref().unwrap().stats())
        .expect("the port is free again");
    assert_eq!(
        request(again.local_addr(), "GET /healthz HTTP/1.1\r\n\r\n").status,
        200
    );
}

#[test]
fn a_taken_port_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let board = surgemq::broker::stats::StatsBoard::new(1);
    let err = serve_metrics(addr, board).unwrap_err();
    assert!(
        matches!(err, surgemq::http::HttpError::Listen { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
