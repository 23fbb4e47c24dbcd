//! Crash-safe persistence end to end: the real `surgemq serve --data-dir DIR` binary is
//! started, fed over raw MQTT, stopped with SIGTERM or killed with SIGKILL, and started again
//! on the same directory, sometimes with another `--shards`, sometimes after a log was torn or
//! damaged on purpose while it was stopped.
//!
//! The promise under test: what a client was acknowledged (CONNACK, SUBACK followed by a
//! PUBACK for a message queued for the session, PUBACK of a retained message) is there after
//! a crash; a torn tail is cut off; damage before intact records stops the start with one line
//! naming the file and the offset; one broker per directory.
//!
//! Exact bytes where the protocol decides them (CONNACK with Session Present, PUBLISH first
//! byte 0x32 / DUP 0x3a / retained 0x33, QoS 0 deliveries); packet ids of outgoing messages are
//! the broker's choice, so they are read from the PUBLISH and the rest of its bytes compared.
//! Every test has its own directory and ports, and its children are SIGKILLed if it fails.

mod common;
mod persistence;

use std::fs;
use std::path::Path;

use common::*;
use persistence::*;
use surgemq::protocol::Packet;

/// CleanSession = 0.
fn persistent(client_id: &str) -> ConnectBuilder {
    ConnectBuilder::new(client_id).clean(false)
}

/// The next packet must be the first transmission (DUP 0, `0x32`) or a re-send (DUP 1,
/// `0x3a`) of a QoS 1, non-retained PUBLISH of `payload` to `topic`; returns its packet id.
#[track_caller]
fn expect_qos1(c: &mut RawClient, topic: &str, payload: &[u8], dup: bool) -> u16 {
    let (p, frame) = c.next_publish();
    let first = if dup { 0x3a } else { 0x32 };
    assert_eq!(
        frame[0],
        first,
        "first byte of the PUBLISH of {:?}: {frame:02x?}",
        String::from_utf8_lossy(payload)
    );
    assert_ne!(p.packet_id, 0, "QoS 1 needs a packet id: {frame:02x?}");
    assert_eq!(
        frame,
        publish(topic, payload, 1, false, dup, p.packet_id),
        "PUBLISH bytes (packet id {} as the broker chose it)",
        p.packet_id
    );
    p.packet_id
}

/// Like [`expect_qos1`] (DUP 0), then acknowledges it.
#[track_caller]
fn receive_qos1(c: &mut RawClient, topic: &str, payload: &[u8]) {
    let id = expect_qos1(c, topic, payload, false);
    c.send(&puback(id));
}

/// A new clean client subscribes to `filter` at QoS 1 and must get exactly the retained
/// messages `expected` (topic, payload; any order), each as a QoS 1 PUBLISH with RETAIN
/// (`0x33`), and nothing more.
#[track_caller]
fn expect_retained(server: &Server, filter: &str, expected: &[(String, Vec<u8>)]) {
    let mut c = server.clean("retained-check");
    let frames = c.subscribe_expecting(1, &[(filter, 1)], expected.len());
    let mut got = Vec::new();
    for frame in frames {
        let Packet::Publish(p) = parse(&frame) else {
            unreachable!("subscribe_expecting returns PUBLISH frames")
        };
        assert_eq!(frame[0], 0x33, "retained QoS 1 PUBLISH: {frame:02x?}");
        assert_eq!(
            frame,
            publish(p.topic.as_str(), &p.payload, 1, true, false, p.packet_id),
            "retained PUBLISH bytes"
        );
        c.send(&puback(p.packet_id));
        got.push((p.topic.to_string(), p.payload.to_vec()));
    }
    got.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(got, expected, "retained messages under {filter}");
    c.expect_nothing();
    c.disconnect();
}

// ----- sessions -----------------------------------------------------------------------------

/// A persistent session on one shard, its publisher on the other: two subscriptions (QoS 1 and
/// QoS 0) and two QoS 1 messages queued while it is away. SIGKILL once the publisher has its
/// PUBACKs; after the restart the session is there (Session Present 1), the queued messages
/// come in order as QoS 1 PUBLISHes, and both subscriptions work at their QoS. Acknowledged
/// messages are not delivered again after a further restart.
#[test]
fn a_persistent_session_with_its_subscriptions_and_queued_qos1_survives_sigkill() {
    let dir = TestDir::new("session");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let session = persistent(&id_on_shard("keeper", 0, 2));
    let pub_id = id_on_shard("publisher", 1, 2);

    let mut s = server.connect_new(&session);
    s.subscribe(1, &[("q/t", 1), ("q/zero", 0)]);
    s.disconnect();
    let mut p = server.clean(&pub_id);
    p.publish1("q/t", b"queued 1", false, 1);
    p.publish1("q/t", b"queued 2", false, 2);
    // Both PUBACKs are in: the broker may crash now.
    server.stop(Stop::Kill);
    let first = assert_layout(&data, 2);

    let server = Server::start(&dir, 2, Some(&data));
    let mut s = server.resume(&session);
    let id1 = expect_qos1(&mut s, "q/t", b"queued 1", false);
    let id2 = expect_qos1(&mut s, "q/t", b"queued 2", false);
    assert_ne!(id1, id2, "two messages in flight need two packet ids");
    s.send(&puback(id1));
    s.send(&puback(id2));
    // The subscriptions were restored with their QoS: QoS 1 stays 1, QoS 0 downgrades.
    let mut p = server.clean(&pub_id);
    p.publish1("q/t", b"live", false, 3);
    receive_qos1(&mut s, "q/t", b"live");
    p.publish1("q/zero", b"downgraded", false, 4);
    s.expect_bytes(&qos0_delivery("q/zero", b"downgraded", false));
    s.disconnect();
    p.disconnect();
    server.stop(Stop::Term);
    assert_eq!(
        assert_layout(&data, 2),
        first + 1,
        "one generation per start"
    );

    // What was acknowledged is gone for good; the session (and its subscriptions) stays.
    let server = Server::start(&dir, 2, Some(&data));
    let mut s = server.resume(&session);
    s.expect_nothing();
    let mut p = server.clean(&pub_id);
    p.publish1("q/t", b"third life", false, 5);
    receive_qos1(&mut s, "q/t", b"third life");
    s.disconnect();
    p.disconnect();
    server.stop(Stop::Term);
    assert_eq!(assert_layout(&data, 2), first + 2);
}

/// A QoS 1 message that went out and was never acknowledged is re-sent after the crash with
/// DUP 1 and its original packet id (MQTT-4.4.0-1). One shard, so the later retained PUBLISH,
/// whose PUBACK waits for its record, is written after the record of the delivery.
#[test]
fn an_unacknowledged_delivery_is_resent_with_dup_and_its_packet_id_after_sigkill() {
    let dir = TestDir::new("dup");
    let data = dir.data();
    let server = Server::start(&dir, 1, Some(&data));
    let session = persistent("dup-sub");
    let mut s = server.connect_new(&session);
    s.subscribe(1, &[("d/t", 1)]);
    let mut p = server.clean("dup-pub");
    p.publish1("d/t", b"never acked", false, 1);
    let id = expect_qos1(&mut s, "d/t", b"never acked", false);
    // No PUBACK from the subscriber. A retained message on the same shard, acknowledged once
    // it is on disk, with the delivery's record before it in the same log.
    p.publish1("d/barrier", b"b", true, 2);
    server.stop(Stop::Kill);
    drop(s);

    let server = Server::start(&dir, 1, Some(&data));
    let mut s = server.resume(&session);
    assert_eq!(
        expect_qos1(&mut s, "d/t", b"never acked", true),
        id,
        "the re-send keeps the packet id of the first transmission"
    );
    s.send(&puback(id));
    s.expect_nothing();
    s.disconnect();
    server.stop(Stop::Term);
}

/// `reshard`: sessions homed on every old shard (two each), each with a subscription and one
/// queued QoS 1 message, and a retained message on every old shard; stopped as `how` says and
/// started with `to` shards. Every session is back with its message and its subscription,
/// every retained message is there, and the new generation has one log per new shard.
fn reshard(name: &str, from: usize, to: usize, how: Stop) {
    let dir = TestDir::new(name);
    let data = dir.data();
    let server = Server::start(&dir, from, Some(&data));
    let sessions: Vec<(ConnectBuilder, String)> = (0..from)
        .flat_map(|shard| {
            ["a", "b"].map(|tag| {
                let id = id_on_shard(&format!("{tag}-sess"), shard, from);
                (persistent(&id), format!("re/{tag}{shard}"))
            })
        })
        .collect();
    for (connect, topic) in &sessions {
        let mut c = server.connect_new(connect);
        c.subscribe(1, &[(topic, 1)]);
        c.disconnect();
    }
    let mut p = server.clean("re-pub");
    let mut packet_id = 0;
    for (_, topic) in &sessions {
        packet_id += 1;
        p.publish1(
            topic,
            format!("queued for {topic}").as_bytes(),
            false,
            packet_id,
        );
    }
    let retained: Vec<(String, Vec<u8>)> = (0..from)
        .map(|shard| {
            let topic = topic_on_shard("ret", shard, from);
            let payload = format!("retained on {topic}").into_bytes();
            (topic, payload)
        })
        .collect();
    for (topic, payload) in &retained {
        packet_id += 1;
        p.publish1(topic, payload, true, packet_id);
    }
    p.disconnect();
    server.stop(how);
    let before = assert_layout(&data, from);

    let server = Server::start(&dir, to, Some(&data));
    let mut p = server.clean("re-pub");
    for (connect, topic) in &sessions {
        let mut c = server.resume(connect);
        receive_qos1(&mut c, topic, format!("queued for {topic}").as_bytes());
        packet_id += 1;
        p.publish1(topic, b"after the restart", false, packet_id);
        receive_qos1(&mut c, topic, b"after the restart");
        c.disconnect();
    }
    p.disconnect();
    expect_retained(&server, "ret/#", &retained);
    server.stop(Stop::Term);
    assert_eq!(
        assert_layout(&data, to),
        before + 1,
        "the start with {to} shards wrote the next generation"
    );
}

#[test]
fn resharding_2_to_3_after_sigkill_keeps_sessions_queues_and_retained() {
    reshard("reshard-2-3", 2, 3, Stop::Kill);
}

#[test]
fn resharding_3_to_1_after_sigterm_keeps_sessions_queues_and_retained() {
    reshard("reshard-3-1", 3, 1, Stop::Term);
}

/// A clean-session client leaves nothing behind, and neither does a persistent session that
/// a clean-session CONNECT of the same client id discarded: after the restart both get
/// Session Present 0, no queued message and no subscription.
#[test]
fn clean_sessions_find_nothing_after_a_restart() {
    let dir = TestDir::new("clean");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let mut c = server.clean("always-clean");
    c.subscribe(1, &[("c/t", 1)]);
    let mut d = server.connect_new(&persistent("discarded"));
    d.subscribe(1, &[("d/t", 1)]);
    d.disconnect();
    let mut p = server.clean("clean-pub");
    p.publish1("c/t", b"to the clean one", false, 1);
    receive_qos1(&mut c, "c/t", b"to the clean one");
    p.publish1("d/t", b"queued, then discarded", false, 2);
    // CleanSession = 1 discards the stored session (Session Present 0, MQTT-3.2.2-1).
    server.clean("discarded").disconnect();
    server.stop(Stop::Term);
    drop(c);

    let server = Server::start(&dir, 2, Some(&data));
    let mut c = server.connect_new(&persistent("always-clean"));
    let mut d = server.connect_new(&persistent("discarded"));
    let mut p = server.clean("clean-pub");
    p.publish1("c/t", b"nobody subscribed", false, 3);
    p.publish1("d/t", b"nobody subscribed", false, 4);
    c.expect_nothing();
    d.expect_nothing();
    c.disconnect();
    d.disconnect();
    p.disconnect();
    server.stop(Stop::Term);
}

// ----- retained messages --------------------------------------------------------------------

/// Retained messages on both shards, set, replaced and cleared (empty retained payload) with
/// QoS 1; SIGKILL after the PUBACKs. After the restart the kept and replaced ones are there
/// with their newest payload, the cleared ones stay cleared.
#[test]
fn retained_messages_set_replaced_and_cleared_survive_sigkill() {
    let dir = TestDir::new("retained");
    let data = dir.data();
    let server = Server::start(&dir, 2, Some(&data));
    let mut p = server.clean("ret-pub");
    let mut expected = Vec::new();
    let mut id = 0;
    for shard in 0..2 {
        let kept = topic_on_shard("r/kept", shard, 2);
        let replaced = topic_on_shard("r/replaced", shard, 2);
        let cleared = topic_on_shard("r/cleared", shard, 2);
        for (topic, payload) in [
            (&kept, &b"kept"[..]),
            (&replaced, b"old"),
            (&cleared, b"soon gone"),
            (&replaced, b"new"),
            (&cleared, b""),
        ] {
            id += 1;
            p.publish1(topic, payload, true, id);
        }
        expected.push((kept, b"kept".to_vec()));
        expected.push((replaced, b"new".to_vec()));
    }
    server.stop(Stop::Kill);

    let server = Server::start(&dir, 2, Some(&data));
    expect_retained(&server, "r/#", &expected);
    server.stop(Stop::Kill);

    // And once more: the compacted generation keeps them as they are.
    let server = Server::start(&dir, 2, Some(&data));
    expect_retained(&server, "r/#", &expected);
    server.stop(Stop::Term);
}

// ----- the data directory -------------------------------------------------------------------

/// `DIR/lock` holds the running broker's pid; a second broker on the same directory exits
/// non-zero with one line naming the directory and that pid, and the first goes on. Once
/// the first is killed, its stale lock file does not keep the next one out.
#[test]
fn a_second_broker_on_the_same_data_dir_is_refused_naming_the_first_ones_pid() {
    let dir = TestDir::new("lock");
    let data = dir.data();
    let first = Server::start(&dir, 1, Some(&data));
    let pid = first.proc.pid();
    let lock = data.join("lock");
    let holder = || fs::read_to_string(&lock).expect("read DIR/lock");
    assert_eq!(holder().trim(), pid.to_string(), "DIR/lock holds the pid");

    let err = serve_must_fail(&dir, &serve_args(1, Some(&data)));
    let line = one_line(&err);
    assert!(
        line.contains(path_str(&data)),
        "names the directory: {line}"
    );
    assert!(
        line.contains(&format!("in use by another broker (pid {pid})")),
        "names the other broker's pid: {line}"
    );
    assert_eq!(
        holder().trim(),
        pid.to_string(),
        "the refused broker left the lock file alone"
    );

    let mut c = first.clean("still-served");
    c.ping();
    c.disconnect();
    first.stop(Stop::Kill);

    let next = Server::start(&dir, 1, Some(&data));
    assert_eq!(holder().trim(), next.proc.pid().to_string());
    next.stop(Stop::Term);
}

/// `--data-dir` naming a regular file: one line naming it, non-zero exit, the file untouched.
#[test]
fn a_data_dir_that_is_a_regular_file_is_a_one_line_error() {
    let dir = TestDir::new("file");
    let file = dir.path("not-a-directory");
    fs::write(&file, b"some file\n").unwrap();
    let err = serve_must_fail(&dir, &serve_args(1, Some(&file)));
    let line = one_line(&err);
    assert!(line.contains(path_str(&file)), "names the path: {line}");
    assert_eq!(
        fs::read(&file).unwrap(),
        b"some file\n",
        "the file is untouched"
    );
}

/// `data-dir` in the `--config` file works like the flag.
#[test]
fn the_data_dir_config_key_works_like_the_flag() {
    let dir = TestDir::new("config");
    let data = dir.data();
    let config = dir.path("surgemq.toml");
    fs::write(
        &config,
        format!("shards = 1\ndata-dir = {:?}\n", path_str(&data)),
    )
    .unwrap();
    let args = ["--config".to_string(), path_str(&config).to_string()];
    let server = Server::start_with(&dir, &args, |_| {});
    let mut p = server.clean("cfg-pub");
    p.publish1("cfg/t", b"from the config", true, 1);
    server.stop(Stop::Kill);
    assert_layout(&data, 1);

    let server = Server::start_with(&dir, &args, |_| {});
    expect_retained(
        &server,
        "cfg/#",
        &[("cfg/t".to_string(), b"from the config".to_vec())],
    );
    server.stop(Stop::Term);
}

/// Without `--data-dir` nothing is written (not in the working directory, not in $HOME) and
/// nothing survives a restart.
#[test]
fn without_data_dir_nothing_is_written_and_nothing_survives() {
    let dir = TestDir::new("memory");
    let cwd = dir.path("cwd");
    let home = dir.path("home");
    fs::create_dir_all(&cwd).unwrap();
    fs::create_dir_all(&home).unwrap();
    let args = serve_args(1, None);
    let env = |cmd: &mut std::process::Command| {
        cmd.current_dir(&cwd)
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CACHE_HOME");
    };
    let server = Server::start_with(&dir, &args, env);
    let session = persistent("mem-sub");
    let mut s = server.connect_new(&session);
    s.subscribe(1, &[("m/t", 1)]);
    s.disconnect();
    let mut p = server.clean("mem-pub");
    p.publish1("m/t", b"queued", false, 1);
    p.publish1("m/retained", b"retained", true, 2);
    server.stop(Stop::Term);
    for d in [&cwd, &home] {
        let entries: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            entries.is_empty(),
            "written without --data-dir: {entries:?}"
        );
    }

    let server = Server::start_with(&dir, &args, env);
    let mut s = server.connect_new(&session);
    s.expect_nothing();
    s.disconnect();
    expect_retained(&server, "m/#", &[]);
    server.stop(Stop::Term);
}

// ----- torn tails and damage ----------------------------------------------------------------

/// One shard: a persistent session subscribed to `q/t` with two queued QoS 1 messages, and a
/// retained message on `r/t`. Stopped with SIGTERM, so its log is whole.
fn populate(dir: &TestDir, data: &Path) {
    let server = Server::start(dir, 1, Some(data));
    let mut s = server.connect_new(&persistent("keeper"));
    s.subscribe(1, &[("q/t", 1)]);
    s.disconnect();
    let mut p = server.clean("filler");
    p.publish1("q/t", b"queued 1", false, 1);
    p.publish1("q/t", b"queued 2", false, 2);
    p.publish1("r/t", b"kept", true, 3);
    p.disconnect();
    server.stop(Stop::Term);
}

/// Everything [`populate`] left is there: Session Present 1, the two queued messages in
/// order, the subscription, the retained message.
fn verify_populated(server: &Server) {
    let mut s = server.resume(&persistent("keeper"));
    receive_qos1(&mut s, "q/t", b"queued 1");
    receive_qos1(&mut s, "q/t", b"queued 2");
    let mut p = server.clean("filler");
    p.publish1("q/t", b"live", false, 4);
    receive_qos1(&mut s, "q/t", b"live");
    s.disconnect();
    p.disconnect();
    expect_retained(server, "r/#", &[("r/t".to_string(), b"kept".to_vec())]);
}

/// Appends `tail` (which must hold no intact frame) to the only log of a stopped one-shard
/// broker; the next start cuts it off and restores everything before it, and the generation
/// it writes is clean.
fn torn_tail(name: &str, tail: impl FnOnce(&[u8], &[std::ops::Range<usize>]) -> Vec<u8>) {
    let dir = TestDir::new(name);
    let data = dir.data();
    populate(&dir, &data);
    let generation = assert_layout(&data, 1);
    let log = log_file(&data, generation, 0);
    let (mut bytes, frames) = read_clean_log(&log);
    assert!(!frames.is_empty(), "{} holds records", log.display());
    let tail = tail(&bytes, &frames);
    bytes.extend_from_slice(&tail);
    assert!(
        !any_intact_frame_from(&bytes, frames.last().unwrap().end),
        "the test's tail must hold no intact frame"
    );
    fs::write(&log, &bytes).unwrap();

    let server = Server::start(&dir, 1, Some(&data));
    verify_populated(&server);
    server.stop(Stop::Term);
    let next = assert_layout(&data, 1);
    assert_eq!(next, generation + 1);
    read_clean_log(&log_file(&data, next, 0));
}

/// A record whose write was cut short: the first half of a copy of the log's last frame.
#[test]
fn a_frame_cut_short_at_the_end_of_a_log_is_cut_off_and_the_rest_restored() {
    torn_tail("torn-frame", |bytes, frames| {
        let last = frames.last().unwrap().clone();
        bytes[last.start..last.start + (last.len() / 2).max(1)].to_vec()
    });
}

/// Bytes that are no frame at all after the last record.
#[test]
fn garbage_appended_to_a_log_is_cut_off_and_the_rest_restored() {
    torn_tail("torn-garbage", |_, _| garbage(97, 0x5eed_f00d_5a1d));
}

/// A header promising more bytes than the file has: torn too.
#[test]
fn a_frame_header_promising_more_than_the_file_holds_is_cut_off() {
    torn_tail("torn-header", |_, _| {
        let mut tail = 1000u32.to_le_bytes().to_vec();
        tail.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        tail.extend_from_slice(b"\x05only a few bytes of the body");
        tail
    });
}

/// A byte flipped inside the first frame, then inside a middle frame, of a log with intact
/// frames after it: the start stops, non-zero, with one line naming the log and the frame's
/// offset, and leaves the log and CURRENT alone. With the byte restored, the broker starts and
/// everything is there.
#[test]
fn damage_before_intact_records_stops_the_start_naming_file_and_offset() {
    let dir = TestDir::new("damage");
    let data = dir.data();
    populate(&dir, &data);
    let generation = assert_layout(&data, 1);
    let log = log_file(&data, generation, 0);
    let (original, frames) = read_clean_log(&log);
    assert!(
        frames.len() >= 3,
        "the test needs a log of at least 3 records, {} has {}",
        log.display(),
        frames.len()
    );

    for damaged in [0, frames.len() / 2] {
        let frame = frames[damaged].clone();
        assert!(damaged + 1 < frames.len(), "intact frames follow");
        let mut bytes = original.clone();
        // The frame's last byte: its body (or its kind), covered by the checksum.
        bytes[frame.end - 1] ^= 0xff;
        fs::write(&log, &bytes).unwrap();

        let err = serve_must_fail(&dir, &serve_args(1, Some(&data)));
        let line = one_line(&err);
        assert!(line.contains(path_str(&log)), "names the log file: {line}");
        assert!(
            mentions_offset(line, frame.start),
            "names offset {} (frame {damaged}): {line}",
            frame.start
        );
        assert_eq!(
            fs::read(&log).unwrap(),
            bytes,
            "a refused start leaves the damaged log as it was"
        );
        assert_eq!(current_generation(&data), generation, "CURRENT unchanged");
    }

    fs::write(&log, &original).unwrap();
    let server = Server::start(&dir, 1, Some(&data));
    verify_populated(&server);
    server.stop(Stop::Term);
    assert_eq!(assert_layout(&data, 1), generation + 1);
}

/// The harness's own frame reader, on frames built by hand as src/store/frame.rs documents
/// them (its unit test pins the same bytes): the torn-tail and damage tests above stand on it.
#[test]
fn the_tests_frame_reader_reads_the_documented_format() {
    let frame = |kind: u8, body: &[u8]| {
        let len = (body.len() as u32 + 1).to_le_bytes();
        let mut covered = len.to_vec();
        covered.push(kind);
        covered.extend_from_slice(body);
        let mut out = len.to_vec();
        out.extend_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(body);
        out
    };
    let mut log = frame(7, b"hi");
    assert_eq!(&log[..4], &[3, 0, 0, 0]);
    log.extend(frame(1, b""));
    log.extend(frame(13, b"a longer body"));
    let (found, end) = frames(&log);
    assert_eq!(found, vec![0..11, 11..20, 20..42]);
    assert_eq!(end, log.len());
    // Zeros after the last frame end the log; a cut frame is not intact.
    let mut padded = log.clone();
    padded.resize(log.len() + 64, 0);
    assert_eq!(frames(&padded), (found.clone(), log.len()));
    for cut in 21..log.len() {
        assert_eq!(frames(&log[..cut]).1, 20, "cut at {cut}");
    }
    // Every flipped byte makes its frame (and what follows) unreadable.
    for at in 0..log.len() {
        let mut bad = log.clone();
        bad[at] ^= 0x01;
        let first_bad = found.iter().position(|f| f.contains(&at)).unwrap();
        assert_eq!(frames(&bad).0, found[..first_bad].to_vec(), "byte {at}");
    }
}
