//! Running a benchmark: generator threads, the phases of a run, the progress line, and
//! turning what the clients counted into a [`BenchReport`].
//!
//! The calling thread coordinates and never touches a socket. It starts one glommio executor
//! per `--threads` (not pinned: on a small machine the broker's pinned shards and the generator
//! share the cores, and the kernel places us better than a fixed choice would), spreads the
//! clients over them round-robin, waits until every client has connected and subscribed, and
//! only then starts the clock and lets publishers go. After publishing ends it waits until
//! everything expected has arrived, or until nothing has moved for `--drain`, so what is
//! counted as missing really is missing and not merely late. With `--offline` (see
//! [`super::offline`]) the subscribers are away until every publish is acknowledged; then
//! the coordinator calls them back ([`Phase::Reconnecting`]) and waits for them the same way.

use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use super::client::{self, ClientResult, ClientSpec};
use super::config::{BenchConfig, BenchError, Load, Plan};
use super::group::{self, SeqSet, Tally};
use super::report::{progress_line, BenchReport, GroupShare, Latency};
use super::scenario::DEFAULT_GROUP;
use super::shared::{new_histogram, Control, Local, Phase, Shared};
use super::tracker::SubResult;
use crate::protocol::QoS;

/// glommio registers this much memory with io_uring per executor; we do no file I/O.
const IO_MEMORY: usize = 64 * 1024;
/// How often the coordinator looks at the counters.
const TICK: Duration = Duration::from_millis(10);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What one generator thread hands back.
struct ThreadResult {
    histogram: hdrhistogram::Histogram<u64>,
    clients: Vec<ClientResult>,
}

/// Runs one benchmark to the end and reports what was measured.
pub fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let plan = Arc::new(config.plan()?);
    crate::sys::ensure_locked_memory().map_err(|e| BenchError::LockedMemory {
        have_kib: e.have_kib,
        need_kib: e.need_kib,
    })?;
    let threads = plan.config.threads;
    let group = plan.config.scenario.is_shared();
    let shared = Arc::new(Shared::new(
        plan.publishers,
        plan.subscribers,
        threads,
        group,
    ));
    let specs = client_specs(&plan, threads);
    let total_clients: usize = specs.iter().map(Vec::len).sum();

    let mut handles = Vec::with_capacity(threads);
    for (t, specs) in specs.into_iter().enumerate() {
        let (plan, thread_shared) = (plan.clone(), shared.clone());
        let spawned = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("surgemq-bench-{t}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move { thread_main(t, specs, plan, thread_shared).await });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.set_phase(Phase::Finished);
                join_all(handles);
                return Err(BenchError::Thread(e.to_string()));
            }
        }
    }

    // Setup: every client connected and subscribed, or one gave up.
    let deadline = Instant::now() + plan.config.setup_timeout + Duration::from_secs(1);
    loop {
        let ready = shared.ready.load(Ordering::Acquire);
        let failed = shared.failed.load(Ordering::Acquire);
        if failed > 0 || Instant::now() > deadline {
            shared.set_phase(Phase::Finished);
            join_all(handles);
            let errors = shared.errors.lock().unwrap_or_else(|e| e.into_inner());
            let first = errors
                .first()
                .cloned()
                .unwrap_or_else(|| "timed out".into());
            return Err(BenchError::Setup(format!(
                "{ready} of {total_clients} clients ready; {failed} failed; first error: {first}"
            )));
        }
        if ready == total_clients {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(plan.config.settle);

    let start_ns = shared.now_ns().max(1);
    shared.start_ns.store(start_ns, Ordering::Release);
    shared.set_phase(Phase::Running);
    let end = coordinate(&plan, &shared, start_ns);
    shared.set_phase(Phase::Finished);
    let results = join_all(handles);
    if plan.config.progress {
        // Clear the progress line so the summary starts on a clean one.
        eprint!("\r\x1b[K");
    }
    Ok(build_report(&plan, &shared, results, start_ns, end))
}

/// Assigns clients to threads round-robin: publishers first, then subscribers, so both
/// roles spread evenly.
fn client_specs(plan: &Plan, threads: usize) -> Vec<Vec<ClientSpec>> {
    let mut roles: Vec<(Option<usize>, Option<usize>)> = Vec::new();
    if plan.shared_connections {
        roles.extend((0..plan.publishers).map(|i| (Some(i), Some(i))));
    } else {
        roles.extend((0..plan.publishers).map(|i| (Some(i), None)));
        roles.extend((0..plan.subscribers).map(|i| (None, Some(i))));
    }
    let mut per_thread: Vec<Vec<ClientSpec>> = vec![Vec::new(); threads];
    for (index, (publisher, subscriber)) in roles.into_iter().enumerate() {
        let t = index % threads;
        let slot = per_thread[t].len();
        per_thread[t].push(ClientSpec {
            index,
            slot,
            publisher,
            subscriber,
        });
    }
    per_thread
}

async fn thread_main(
    thread: usize,
    specs: Vec<ClientSpec>,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
) -> ThreadResult {
    let local = Rc::new(Local {
        thread,
        control: Control::new(specs.len()),
        histogram: std::cell::RefCell::new(new_histogram()),
    });
    let watcher = {
        let (local, shared) = (local.clone(), shared.clone());
        glommio::spawn_local(async move { local.control.watch(&shared).await })
    };
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            glommio::spawn_local(client::run(
                spec,
                plan.clone(),
                shared.clone(),
                local.clone(),
            ))
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await);
    }
    watcher.await;
    let histogram = local.histogram.replace(new_histogram());
    ThreadResult { histogram, clients }
}

fn join_all(handles: Vec<glommio::ExecutorJoinHandle<ThreadResult>>) -> Vec<ThreadResult> {
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

/// How the publishing phase ended.
struct End {
    /// When publishers were told to stop, or found done (ns since the clock base).
    publish_ns: u64,
    /// Publishing stopped because nothing moved for the drain time.
    stalled: bool,
    /// `--offline`: when the subscribers were told to reconnect (ns since the clock base).
    reconnect_ns: Option<u64>,
}

/// Drives the running and draining phases.
fn coordinate(plan: &Plan, shared: &Shared, start_ns: u64) -> End {
    let config = &plan.config;
    let started = Instant::now();
    let qos_acks = config.qos != QoS::AtMostOnce;
    let mut progress = Progress::new(config.progress && std::io::stderr().is_terminal());
    let mut last_moved = Instant::now();
    let mut last_totals = shared.totals();
    let mut end_publish_ns = None;
    let mut stalled = false;
    let mut reconnect_ns = None;
    loop {
        std::thread::sleep(TICK);
        let totals = shared.totals();
        if totals != last_totals {
            last_totals = totals;
            last_moved = Instant::now();
        }
        let (published, delivered, acked) = totals;
        progress.tick(started, published, delivered);
        let phase = shared.phase();
        if phase == Phase::Running {
            let all_sent = shared.publishers_done.load(Ordering::Acquire) >= plan.publishers;
            let timed_out = matches!(config.load, Load::Duration(d) if started.elapsed() >= d);
            // A run that stops moving (dead broker, lost subscriber with a full window) must
            // not hang: treat it as the end of publishing.
            let stuck = last_moved.elapsed() >= config.drain;
            if all_sent || timed_out || stuck {
                shared.set_phase(Phase::Draining);
                stalled = stuck && !all_sent && !timed_out;
                end_publish_ns = Some(shared.now_ns());
                last_moved = Instant::now();
            }
            continue;
        }
        if phase == Phase::Draining && config.offline {
            // Nobody receives yet: once the broker has acknowledged everything (or stopped
            // moving), call the subscribers back.
            if !qos_acks || acked >= published || last_moved.elapsed() >= config.drain {
                shared.set_phase(Phase::Reconnecting);
                reconnect_ns = Some(shared.now_ns());
                last_moved = Instant::now();
            }
            continue;
        }
        // Draining (offline: reconnected): done when everything expected arrived (and was
        // acknowledged), or when nothing has moved for the drain time.
        let complete = delivered >= shared.expected() && (!qos_acks || acked >= published);
        if complete || last_moved.elapsed() >= config.drain {
            return End {
                publish_ns: end_publish_ns.unwrap_or(start_ns),
                stalled,
                reconnect_ns,
            };
        }
    }
}

/// The live progress line on a terminal.
struct Progress {
    enabled: bool,
    last: Instant,
    last_counts: (u64, u64),
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            last: Instant::now(),
            last_counts: (0, 0),
        }
    }

    fn tick(&mut self, started: Instant, published: u64, delivered: u64) {
        if !self.enabled || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        let dt = self.last.elapsed().as_secs_f64();
        let line = progress_line(
            started.elapsed().as_secs_f64(),
            published,
            delivered,
            (published - self.last_counts.0) as f64 / dt,
            (delivered - self.last_counts.1) as f64 / dt,
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.last = Instant::now();
        self.last_counts = (published, delivered);
    }
}

fn build_report(
    plan: &Plan,
    shared: &Shared,
    results: Vec<ThreadResult>,
    start_ns: u64,
    end: End,
) -> BenchReport {
    let config = &plan.config;
    let mut histogram = new_histogram();
    let mut sent = vec![0u64; plan.publishers];
    let mut published = 0;
    let mut acked = 0;
    let mut last_send_ns = start_ns;
    let mut last_ack_ns = start_ns;
    let mut subs = Vec::new();
    for t in results {
        let _ = histogram.add(&t.histogram);
        for c in t.clients {
            if let Some(p) = c.publisher {
                sent[p.index] = p.sent;
                published += p.sent;
                acked += p.acked;
                last_send_ns = last_send_ns.max(p.last_send_ns);
                last_ack_ns = last_ack_ns.max(p.last_ack_ns);
            }
            if let Some(s) = c.subscriber {
                subs.push(s);
            }
        }
    }
    let mut last_recv_ns = start_ns;
    for s in &subs {
        last_recv_ns = last_recv_ns.max(s.last_recv_ns);
    }
    let lost_subscribers = plan.subscribers - subs.len();
    let (mut tally, expected, group) = match config.scenario.is_shared() {
        true => {
            let sets: Vec<&[SeqSet]> = subs.iter().map(|s| s.received.as_slice()).collect();
            let tally = group::tally(&sent, &sets);
            let name = config.group.as_deref().unwrap_or(DEFAULT_GROUP);
            let share = GroupShare::new(name, tally.per_member.clone());
            let expected = if plan.subscribers > 0 {
                tally.delivered + tally.missing
            } else {
                0
            };
            (tally, expected, Some(share))
        }
        false => {
            let (tally, expected) = each_subscriber(&sent, &subs, lost_subscribers);
            (tally, expected, None)
        }
    };
    tally.foreign += subs.iter().map(|s| s.foreign).sum::<u64>();
    let mut errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if end.stalled {
        errors.push(format!(
            "stalled: nothing was published or delivered from {:.1} s to {:.1} s; publishing stopped",
            (end.publish_ns - start_ns).saturating_sub(config.drain.as_nanos() as u64) as f64 / 1e9,
            (end.publish_ns - start_ns) as f64 / 1e9
        ));
    }
    if lost_subscribers > 0 {
        errors.push(format!("{lost_subscribers} subscriber(s) reported nothing"));
    }
    if group.is_some() && subs.len() == plan.subscribers && published > 0 && tally.delivered == 0 {
        // At QoS 0 missing messages are a measurement, but none at all is a broker that took
        // the $share/... filter for a plain one (or dropped everything).
        errors.push(format!(
            "the group received none of the {published} messages: does the broker support \
             shared subscriptions ($share/...)?"
        ));
    }
    // Rates are over the time the run was meant to take, not just the part where something
    // happened: a duration run (or a stalled one) publishes until it was told to stop, and a
    // broker that went quiet before that gets no credit for the quiet time.
    let timed = matches!(config.load, Load::Duration(_)) || end.stalled;
    let publish_end = if timed {
        end.publish_ns.max(last_send_ns)
    } else {
        last_send_ns
    };
    let deliver_end = if timed {
        end.publish_ns.max(last_recv_ns)
    } else {
        last_recv_ns
    };
    let secs = |end: u64| (end.saturating_sub(start_ns)) as f64 / 1e9;
    let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let mut publish_secs = secs(publish_end);
    let mut deliver_secs = if subs.is_empty() {
        0.0
    } else {
        secs(deliver_end)
    };
    let mut publish_rate = rate(published, publish_secs);
    if let Some(reconnect_ns) = end.reconnect_ns {
        // Offline: publishing lasts until the broker acknowledged the last message, and the
        // rate counts what it acknowledged; delivery is the drain after reconnecting.
        if config.qos != QoS::AtMostOnce {
            publish_secs = secs(publish_end.max(last_ack_ns));
            publish_rate = rate(acked, publish_secs);
        }
        deliver_secs = last_recv_ns.saturating_sub(reconnect_ns) as f64 / 1e9;
    }
    BenchReport {
        scenario: config.scenario.name(),
        transport: config.transport.scheme(),
        protocol: if config.protocol.is_v5() {
            "5"
        } else {
            "3.1.1"
        },
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        qos: config.qos as u8,
        size: config.size,
        threads: config.threads,
        window: plan.window,
        rate: config.rate,
        persistent: config.persistent,
        persistent_publishers: config.persistent_publishers,
        offline: config.offline,
        published,
        acked,
        expected,
        delivered: tally.delivered,
        missing: tally.missing,
        duplicated: tally.duplicated,
        reordered: tally.reordered,
        foreign: tally.foreign,
        publish_secs,
        deliver_secs,
        publish_rate,
        deliver_rate: rate(tally.delivered, deliver_secs),
        latency: Latency::from_histogram(&histogram),
        group,
        errors,
    }
}

/// Counts when every subscriber should receive every message, and how many that makes. A
/// subscriber that never reported (its thread died) lost everything it should have had.
fn each_subscriber(sent: &[u64], subs: &[SubResult], lost_subscribers: usize) -> (Tally, u64) {
    let mut t = Tally::default();
    let mut expected = 0;
    for s in subs {
        for (p, tracker) in s.trackers.iter().enumerate() {
            expected += sent[p];
            t.delivered += tracker.unique().min(sent[p]);
            t.missing += tracker.missing(sent[p]);
            t.duplicated += tracker.duplicates();
            t.reordered += tracker.late();
            t.foreign += tracker.unexpected(sent[p]);
        }
    }
    let lost: u64 = sent.iter().sum::<u64>() * lost_subscribers as u64;
    t.missing += lost;
    (t, expected + lost)
}
