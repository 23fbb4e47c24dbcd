//! End-to-end: the load generator against an in-process broker, every scenario at QoS 0 and 1
//! with small counts. Nothing may go missing or arrive twice, and the report must add up. Also
//! the generator against its own sink, publish-only, and every scenario over TLS, WebSockets
//! and WebSockets over TLS (certificates made at test time). `shared` runs against a real
//! Mosquitto (skipped, saying so, when the `mosquitto` binary is not installed).

use std::time::Duration;

use std::path::PathBuf;

use surgemq::bench::{self, BenchConfig, BenchReport, Load, Scenario, SinkConfig};
use surgemq::broker::{self, BrokerConfig};
use surgemq::client::{TlsOptions, Transport};
use surgemq::protocol::{ProtocolLevel, QoS};
use surgemq::transport::TlsFiles;

#[path = "client_util/mosquitto.rs"]
#[allow(dead_code)] // start() is for the client tests
mod mosquitto_util;
use mosquitto_util::Mosquitto;

const MESSAGES: u64 = 2_000;
const CLIENTS: usize = 4;

fn config(scenario: Scenario, port: u16, qos: QoS) -> BenchConfig {
    BenchConfig {
        scenario,
        port,
        clients: (scenario != Scenario::Pair).then_some(CLIENTS),
        load: Load::Messages(MESSAGES),
        qos,
        threads: 2,
        drain: Duration::from_secs(3),
        ..Default::default()
    }
}

/// A broker with 2 shards on a free port of 127.0.0.1, and that port.
fn start_broker() -> (broker::BrokerHandle, u16) {
    let broker = broker::start(BrokerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 2,
        ..Default::default()
    })
    .expect("broker starts");
    let port = broker.local_addrs()[0].port();
    (broker, port)
}

fn check(report: &BenchReport, publishers: u64, subscribers: u64) {
    let mut summary = report.summary();
    if report.missing > 0 {
        summary.push_str(
            "(missing messages with a stalled run: see 'Known problems' in perf/README.md, a \
             broker bug with more than one shard)\n",
        );
    }
    assert!(report.errors.is_empty(), "{summary}");
    assert_eq!(report.published, publishers * MESSAGES, "{summary}");
    assert_eq!(
        report.expected,
        publishers * subscribers * MESSAGES,
        "{summary}"
    );
    assert_eq!(report.delivered, report.expected, "{summary}");
    assert_eq!(report.missing, 0, "{summary}");
    assert_eq!(report.duplicated, 0, "{summary}");
    assert_eq!(report.reordered, 0, "{summary}");
    assert_eq!(report.foreign, 0, "{summary}");
    if report.qos > 0 {
        assert_eq!(report.acked, report.published, "{summary}");
    }
    let latency = report.latency.expect("deliveries have latencies");
    assert_eq!(latency.samples, report.delivered, "{summary}");
    assert!(latency.p50_us <= latency.p99_us && latency.p99_us <= latency.max_us);
    assert!(
        report.deliver_rate > 0.0 && report.publish_rate > 0.0,
        "{summary}"
    );
    assert!(!report.failed(), "{summary}");
}

#[test]
fn every_scenario_delivers_everything_at_qos_0_and_1() {
    let (broker, port) = start_broker();
    let n = CLIENTS as u64;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for (scenario, pubs, subs) in [
            (Scenario::Pair, 1, 1),
            (Scenario::FanIn, n, 1),
            (Scenario::FanOut, 1, n),
            (Scenario::Mesh, n, n),
        ] {
            let report = bench::run(config(scenario, port, qos))
                .unwrap_or_else(|e| panic!("{scenario:?} QoS {qos:?}: {e}"));
            check(&report, pubs, subs);
        }
    }
    broker.shutdown();
}

/// `surgemq bench -V 5`: every client speaks MQTT 5 (the broker answers in kind, and the
/// generator reads the property block of every PUBLISH), at every QoS, persistent sessions
/// too (Session Expiry instead of CleanSession).
#[test]
fn mqtt5_runs_deliver_everything() {
    let (broker, port) = start_broker();
    let n = CLIENTS as u64;
    for (scenario, qos, pubs, subs) in [
        (Scenario::Pair, QoS::AtMostOnce, 1, 1),
        (Scenario::FanOut, QoS::AtLeastOnce, 1, n),
        (Scenario::FanIn, QoS::ExactlyOnce, n, 1),
    ] {
        let report = bench::run(BenchConfig {
            protocol: surgemq::protocol::ProtocolLevel::V5,
            ..config(scenario, port, qos)
        })
        .unwrap_or_else(|e| panic!("{scenario:?} QoS {qos:?}: {e}"));
        assert_eq!(report.protocol, "5");
        check(&report, pubs, subs);
    }
    let report = bench::run(BenchConfig {
        protocol: surgemq::protocol::ProtocolLevel::V5,
        persistent: true,
        ..config(Scenario::Pair, port, QoS::AtLeastOnce)
    })
    .unwrap();
    check(&report, 1, 1);
    broker.shutdown();
}

#[test]
fn qos_2_and_duration_runs_complete() {
    let (broker, port) = start_broker();
    let report = bench::run(config(Scenario::FanOut, port, QoS::ExactlyOnce)).unwrap();
    check(&report, 1, CLIENTS as u64);
    let report = bench::run(BenchConfig {
        load: Load::Duration(Duration::from_millis(300)),
        ..config(Scenario::Pair, port, QoS::AtLeastOnce)
    })
    .unwrap();
    assert!(report.published > 0, "{}", report.summary());
    assert_eq!(report.missing, 0, "{}", report.summary());
    assert_eq!(report.delivered, report.published, "{}", report.summary());
    broker.shutdown();
}

#[test]
fn publish_only_against_the_sink() {
    let sink = bench::start_sink(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
    })
    .expect("sink starts");
    let port = sink.local_addr().port();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let report = bench::run(BenchConfig {
            publish_only: true,
            ..config(Scenario::FanIn, port, qos)
        })
        .unwrap();
        let summary = report.summary();
        assert_eq!(report.subscribers, 0, "{summary}");
        assert_eq!(report.published, CLIENTS as u64 * MESSAGES, "{summary}");
        assert_eq!(report.expected, 0, "{summary}");
        if qos != QoS::AtMostOnce {
            assert_eq!(report.acked, report.published, "{summary}");
        }
        assert!(!report.failed(), "{summary}");
    }
    // QoS 0 publishes may still be in the sink's socket when the run ends: give it a moment.
    let want = 3 * CLIENTS as u64 * MESSAGES;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sink.stats().publishes < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = sink.shutdown();
    assert_eq!(stats.publishes, want, "{stats:?}");
    assert_eq!(stats.connections, 3 * CLIENTS as u64);
}

#[test]
fn setup_failure_is_an_error_not_a_hang() {
    // Nothing listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = bench::run(BenchConfig {
        setup_timeout: Duration::from_secs(2),
        ..config(Scenario::Pair, port, QoS::AtMostOnce)
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("setup failed"), "{err}");
}

#[test]
fn a_run_that_stops_moving_ends_by_itself_and_says_so() {
    // The sink never delivers anything, so the subscribers' window fills and nothing moves.
    let sink = bench::start_sink(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
    })
    .expect("sink starts");
    let started = std::time::Instant::now();
    let report = bench::run(BenchConfig {
        window: Some(10),
        drain: Duration::from_millis(300),
        ..config(Scenario::FanOut, sink.local_addr().port(), QoS::AtMostOnce)
    })
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let summary = report.summary();
    assert_eq!(report.published, 10, "{summary}");
    assert_eq!(report.missing, 10 * CLIENTS as u64, "{summary}");
    assert!(
        report.errors.iter().any(|e| e.starts_with("stalled")),
        "{summary}"
    );
    assert!(report.failed(), "{summary}");
    sink.shutdown();
}

#[test]
fn bad_flag_values_give_one_line_naming_the_flag() {
    for (args, flag) in [
        (&["pair", "--qos", "3"][..], "--qos"),
        (&["pair", "--size", "3"][..], "--size"),
        (&["pair", "--clients", "5"][..], "--clients"),
        (&["fan-in", "--duration", "0"][..], "--duration"),
        (&["fan-in", "--window", "0"][..], "--window"),
        (&["fan-out", "--rate", "-5"][..], "--rate"),
        (&["mesh", "--publishers", "3"][..], "--publishers"),
        (&["pair", "--threads", "0"][..], "--threads"),
        (&["pair", "--password", "x"][..], "--password"),
        (&["sink", "--threads", "0"][..], "--threads"),
        (&["pair", "--cafile", "ca.pem"][..], "--tls"),
        (&["pair", "--ws", "mqtt"][..], "--ws"),
        (&["shared", "--group", "a/b"][..], "--group"),
        (&["fan-in", "--group", "g"][..], "--group"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn persistent_subscribers_get_everything_and_leave_no_session_behind() {
    let (broker, port) = start_broker();
    for (scenario, pubs, subs) in [(Scenario::Pair, 1, 1), (Scenario::FanOut, 1, CLIENTS)] {
        let report = bench::run(BenchConfig {
            persistent: true,
            ..config(scenario, port, QoS::AtLeastOnce)
        })
        .unwrap();
        assert!(report.persistent);
        assert!(
            report.summary().contains("persistent sub"),
            "{}",
            report.summary()
        );
        check(&report, pubs, subs as u64);
    }
    let metrics = broker.shutdown();
    let total =
        |f: fn(&surgemq::broker::MetricsSnapshot) -> u64| metrics.iter().map(f).sum::<u64>();
    // Each persistent subscriber came back once with a clean session to remove its own.
    let clients = (1 + 1) + (1 + CLIENTS as u64);
    let subscribers = 1 + CLIENTS as u64;
    assert_eq!(total(|m| m.connections_total), clients + subscribers);
    assert_eq!(
        total(|m| m.sessions),
        0,
        "no session left behind: {metrics:?}"
    );
}

#[test]
fn offline_subscribers_drain_everything_after_reconnecting_in_memory_and_on_disk() {
    let dir = std::env::temp_dir().join(format!("surgemq-bench-offline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for data_dir in [None, Some(dir.clone())] {
        let broker = broker::start(BrokerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            shards: 2,
            // Everything a run publishes is queued at once for an offline session.
            max_queued_messages: 100_000,
            data_dir: data_dir.clone(),
            ..Default::default()
        })
        .expect("broker starts");
        let port = broker.local_addrs()[0].port();
        for (scenario, qos, pubs, subs) in [
            (Scenario::Pair, QoS::AtLeastOnce, 1, 1),
            (Scenario::FanIn, QoS::AtLeastOnce, CLIENTS as u64, 1),
            (Scenario::FanOut, QoS::ExactlyOnce, 1, CLIENTS as u64),
        ] {
            let report = bench::run(BenchConfig {
                persistent: true,
                offline: true,
                ..config(scenario, port, qos)
            })
            .unwrap_or_else(|e| panic!("{scenario:?} {data_dir:?}: {e}"));
            let summary = format!("{data_dir:?}\n{}", report.summary());
            assert!(report.offline && report.persistent, "{summary}");
            assert!(report.errors.is_empty(), "{summary}");
            assert_eq!(report.published, pubs * MESSAGES, "{summary}");
            assert_eq!(report.acked, report.published, "{summary}");
            assert_eq!(report.expected, pubs * subs * MESSAGES, "{summary}");
            assert_eq!(report.delivered, report.expected, "{summary}");
            assert_eq!(report.missing, 0, "{summary}");
            assert_eq!(report.duplicated, 0, "{summary}");
            assert_eq!(report.reordered, 0, "{summary}");
            assert_eq!(report.foreign, 0, "{summary}");
            assert!(report.latency.is_none(), "{summary}");
            assert!(report.publish_rate > 0.0, "{summary}");
            assert!(report.deliver_rate > 0.0, "{summary}");
            assert!(report.to_json().contains("\"offline\":true"), "{summary}");
            assert!(!report.failed(), "{summary}");
        }
        let metrics = broker.shutdown();
        let sessions: u64 = metrics.iter().map(|m| m.sessions).sum();
        assert_eq!(sessions, 0, "no session left behind: {metrics:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn offline_without_persistent_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_surgemq"))
        .args(["bench", "pair", "--offline", "--qos", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--persistent"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_surgemq"))
        .args(["bench", "mesh", "--persistent", "--offline"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("invalid --offline"), "{err}");
}

/// A self-signed certificate for 127.0.0.1 (and localhost) made for this run, and its key.
fn test_cert(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("surgemq-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn every_scenario_over_tls_ws_and_wss() {
    let (cert, key) = test_cert("transports");
    let broker = broker::start(BrokerConfig {
        listen: [
            "mqtts://127.0.0.1:0",
            "ws://127.0.0.1:0/mqtt",
            "wss://127.0.0.1:0/mqtt",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect(),
        tls: Some(TlsFiles {
            cert: cert.clone(),
            key,
            ..TlsFiles::default()
        }),
        shards: 2,
        ..Default::default()
    })
    .expect("broker starts");
    let addrs = broker.local_addrs().to_vec();
    let ws = || "/mqtt".to_string();
    let n = CLIENTS as u64;
    for (transport, port) in [
        (Transport::Mqtts, addrs[0].port()),
        (Transport::Ws { path: ws() }, addrs[1].port()),
        (Transport::Wss { path: ws() }, addrs[2].port()),
    ] {
        let tls = TlsOptions {
            ca_file: transport.uses_tls().then(|| cert.clone()),
            ..TlsOptions::default()
        };
        for (scenario, qos, pubs, subs) in [
            (Scenario::Pair, QoS::AtLeastOnce, 1, 1),
            (Scenario::FanIn, QoS::AtMostOnce, n, 1),
            (Scenario::FanOut, QoS::AtLeastOnce, 1, n),
            (Scenario::Mesh, QoS::ExactlyOnce, n, n),
        ] {
            let report = bench::run(BenchConfig {
                transport: transport.clone(),
                tls: tls.clone(),
                ..config(scenario, port, qos)
            })
            .unwrap_or_else(|e| panic!("{transport:?} {scenario:?}: {e}"));
            assert_eq!(report.transport, transport.scheme());
            assert!(
                report
                    .to_json()
                    .contains(&format!("\"transport\":\"{}\"", transport.scheme())),
                "{}",
                report.to_json()
            );
            check(&report, pubs, subs);
        }
    }
    // A persistent subscriber over TLS: its session removed at the end over TLS too.
    let report = bench::run(BenchConfig {
        transport: Transport::Mqtts,
        tls: TlsOptions {
            ca_file: Some(cert.clone()),
            ..TlsOptions::default()
        },
        persistent: true,
        ..config(Scenario::Pair, addrs[0].port(), QoS::AtLeastOnce)
    })
    .unwrap();
    check(&report, 1, 1);
    let metrics = broker.shutdown();
    assert_eq!(metrics.iter().map(|m| m.sessions).sum::<u64>(), 0);
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}

#[test]
fn tls_mistakes_are_reported_not_hung() {
    let (cert, key) = test_cert("mistakes");
    let broker = broker::start(BrokerConfig {
        listen: vec!["mqtts://127.0.0.1:0".parse().unwrap()],
        tls: Some(TlsFiles {
            cert: cert.clone(),
            key,
            ..TlsFiles::default()
        }),
        shards: 1,
        ..Default::default()
    })
    .expect("broker starts");
    let port = broker.local_addrs()[0].port();
    let base = config(Scenario::Pair, port, QoS::AtMostOnce);
    // A CA file that is not there: refused before anything connects, naming the flag.
    let err = bench::run(BenchConfig {
        transport: Transport::Mqtts,
        tls: TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        },
        ..base.clone()
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("invalid --cafile"), "{err}");
    // A certificate the client does not trust (checked against the system's CAs): a setup
    // error, or a refusal up front on a system without CA certificates.
    let err = bench::run(BenchConfig {
        transport: Transport::Mqtts,
        setup_timeout: Duration::from_secs(3),
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("setup failed") || err.starts_with("invalid --tls"),
        "{err}"
    );
    // --insecure takes it anyway.
    let report = bench::run(BenchConfig {
        transport: Transport::Mqtts,
        tls: TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        },
        ..base.clone()
    })
    .unwrap();
    check(&report, 1, 1);
    // Plain MQTT at a TLS port: a setup error, not a hang.
    let err = bench::run(BenchConfig {
        setup_timeout: Duration::from_secs(3),
        ..base
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("setup failed"), "{err}");
    broker.shutdown();
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}

/// The Debian `mosquitto` on a free port (tests/client_util's guard); `None`, saying why, when
/// it is not installed. No queue or in-flight limit below the generator's window (compare.sh's
/// settings): with Mosquitto's defaults QoS 2 messages are dropped under this load.
fn mosquitto(test: &str) -> Option<Mosquitto> {
    if std::process::Command::new("mosquitto")
        .arg("-h")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED {test}: no mosquitto binary (Debian package mosquitto)");
        return None;
    }
    Some(Mosquitto::start_with(
        "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 100\n",
    ))
}

/// `bench shared` against Mosquitto's shared subscriptions, from 3.1.1 and MQTT 5 members:
/// every message reaches the group exactly once, spread over all members.
#[test]
fn shared_group_gets_everything_once_from_mosquitto() {
    let Some(mosquitto) = mosquitto("shared_group_gets_everything_once_from_mosquitto") else {
        return;
    };
    let n = CLIENTS as u64;
    for (protocol, qos) in [
        (ProtocolLevel::V311, QoS::AtMostOnce),
        (ProtocolLevel::V311, QoS::AtLeastOnce),
        (ProtocolLevel::V5, QoS::AtLeastOnce),
        (ProtocolLevel::V5, QoS::ExactlyOnce),
    ] {
        let report = bench::run(BenchConfig {
            subscribers: Some(CLIENTS),
            group: Some("smoke".into()),
            protocol,
            ..config(Scenario::Shared, mosquitto.addr.port(), qos)
        })
        .unwrap_or_else(|e| panic!("{protocol:?} {qos:?}: {e}"));
        let summary = report.summary();
        // Each message once: what fan-in's check expects of one subscriber.
        check(&report, n, 1);
        let group = report
            .group
            .as_ref()
            .expect("a shared run reports its group");
        assert_eq!(group.name, "smoke", "{summary}");
        assert_eq!(group.per_member.len(), CLIENTS, "{summary}");
        assert_eq!(
            group.per_member.iter().sum::<u64>(),
            n * MESSAGES,
            "{summary}"
        );
        let (min, max) = group.range_pct.expect("shares");
        assert!(min >= 15.0 && max <= 35.0, "{summary}");
        assert!(summary.contains("share      per member min"), "{summary}");
        assert!(report
            .to_json()
            .contains("\"group\":\"smoke\",\"share_min_pct\""));
    }
}

/// A broker that never delivers to the group (the sink, like a broker that takes $share/... for
/// a plain filter) fails the run and says why, at QoS 0 too.
#[test]
fn shared_run_that_reaches_nobody_says_so() {
    let sink = bench::start_sink(SinkConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
    })
    .expect("sink starts");
    let report = bench::run(BenchConfig {
        drain: Duration::from_millis(300),
        ..config(Scenario::Shared, sink.local_addr().port(), QoS::AtMostOnce)
    })
    .unwrap();
    let summary = report.summary();
    assert_eq!(report.delivered, 0, "{summary}");
    assert!(report.failed(), "{summary}");
    assert!(summary.contains("the group received none"), "{summary}");
    assert!(
        summary.contains("(the group received nothing)"),
        "{summary}"
    );
    sink.shutdown();
}
