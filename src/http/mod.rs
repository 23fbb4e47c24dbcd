//! The metrics endpoint (`surgemq serve --metrics-listen ADDR`), served by plain threads of its
//! own, never by the shards: it reads the [`StatsBoard`] the shards refresh once a second, so
//! the message path pays nothing for it (see `broker::stats`).
//!
//! - `GET /metrics`: the Prometheus text exposition format (see [`exposition`]);
//! - `GET /healthz`: `200 ok`;
//! - `GET /stats.json[?since=MS]`: the counters now, broker-wide and per shard, and the
//!   once-a-second samples newer than `since` (milliseconds since the Unix epoch);
//! - `GET /`: a live page embedded in the binary (inline script and SVG, no external assets)
//!   that polls `/stats.json` every second and charts messages/s in and out, connections,
//!   drops and per-shard load over the last minutes.
//!
//! One thread accepts connections and samples the board for the page's history (see `live`);
//! each connection is answered on a thread of its own (at most [`MAX_CONNECTIONS`] at once,
//! more get `503`), which has [`HEAD_DEADLINE`] to send its request and [`WRITE_TIMEOUT`] per
//! write of the answer, so a slow client holds one thread for seconds, never the others.
//! Bad requests get `400`, `404`, `405`, `408` or `431`; nothing a client sends can panic it.

pub mod exposition;
pub mod live;
pub mod request;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::broker::stats::{StatsBoard, STATS_PERIOD};
use live::{now_ms, History, Tracker, OBSERVE_PERIOD};
use request::{close_gracefully, read_request, ReadError, Request, Response};

/// Connections answered at once; more are turned away with `503`.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long one write of a response may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept thread waits after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The live page, embedded in the binary.
const PAGE: &str = include_str!("page.html");
/// Nothing but this page's own inline script and style may run or load.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
                        style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start the metrics thread: {0}")]
    Thread(io::Error),
}

/// A running endpoint; stops when shut down or dropped (connections being answered finish on
/// their own, within their timeouts).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on, with the port the OS chose for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread to end (at most about 0.05 s).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What every connection thread shares.
struct State {
    board: Arc<StatsBoard>,
    history: Mutex<History>,
    active: AtomicUsize,
}

/// Serves the endpoint on `addr` from `board` (e.g. `BrokerHandle::stats()`) until the
/// returned server is shut down or dropped.
pub fn serve_metrics(addr: SocketAddr, board: Arc<StatsBoard>) -> Result<MetricsServer, HttpError> {
    let listen_error = |source| HttpError::Listen { addr, source };
    let listener = TcpListener::bind(addr).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let stop = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State {
        board,
        history: Mutex::default(),
        active: AtomicUsize::new(0),
    });
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("surgemq-metrics".into())
        .spawn(move || accept_loop(listener, state, thread_stop))
        .map_err(HttpError::Thread)?;
    info!(addr = %local, "metrics endpoint: /metrics, /healthz, /stats.json, /");
    Ok(MetricsServer {
        addr: local,
        stop,
        thread: Some(thread),
    })
}

/// Connections turned away with `503`, kept open for [`LINGER`] after the answer (at most
/// [`MAX_LINGERING`]): closing a socket with the client's request still unread would reset
/// the connection, and a reset can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGERING: usize = 256;

/// Accepts connections; between them, looks at the board every [`OBSERVE_PERIOD`] and
/// samples it every [`STATS_PERIOD`] for the page (see `live`).
fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    let mut tracker = Tracker::default();
    let mut next_observe = Instant::now();
    let mut next_sample = next_observe;
    let mut lingering: VecDeque<(Instant, TcpStream)> = VecDeque::new();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        while lingering.front().is_some_and(|(until, _)| *until <= now) {
            lingering.pop_front();
        }
        if now >= next_observe {
            tracker.observe(&state.board.shards(), now_ms());
            next_observe = later(next_observe, OBSERVE_PERIOD, now);
        }
        if now >= next_sample {
            lock(&state.history).push(tracker.sample(now_ms()));
            next_sample = later(next_sample, STATS_PERIOD, now);
        }
        let wait = next_observe.saturating_duration_since(now);
        if !readable(&listener, wait) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Some(turned_away) = dispatch(stream, peer, &state) {
                    if lingering.len() == MAX_LINGERING {
                        lingering.pop_front();
                    }
                    lingering.push_back((Instant::now() + LINGER, turned_away));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!("metrics endpoint: accept failed: {e}");
                std::thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// The next tick of a period after `now`, skipping the ticks missed.
fn later(tick: Instant, period: Duration, now: Instant) -> Instant {
    let next = tick + period;
    if next <= now {
        now + period
    } else {
        next
    }
}

/// Waits up to `wait` for a connection to accept.
fn readable(listener: &TcpListener, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: poll on one pollfd we own, for its length of 1.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 && fd.revents & libc::POLLIN != 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrements the count of connections being answered when a connection thread ends.
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a new connection on a thread of its own, or, when [`MAX_CONNECTIONS`] are being
/// answered, with `503` at once; then returns it, to be closed a little later.
fn dispatch(mut stream: TcpStream, peer: SocketAddr, state: &Arc<State>) -> Option<TcpStream> {
    let _ = stream.set_nodelay(true);
    if state.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        state.active.fetch_sub(1, Ordering::AcqRel);
        debug!(%peer, "metrics endpoint busy: 503");
        // Without blocking: the accept thread must never wait on a client. The small answer
        // fits in an empty socket buffer.
        let _ = stream.set_nonblocking(true);
        let busy = Response::error(503, "busy").header("Retry-After", "1");
        let _ = busy.write_to(&mut stream, false);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        return Some(stream);
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let slot = Slot(state.clone());
    let spawned = std::thread::Builder::new()
        .name("surgemq-metrics-conn".into())
        .spawn(move || {
            let slot = slot;
            answer(&mut stream, &slot.0);
        });
    if let Err(e) = spawned {
        // The closure (and its slot) was dropped: the count is right again.
        warn!("metrics endpoint: cannot start a connection thread: {e}");
    }
    None
}

fn answer(stream: &mut TcpStream, state: &State) {
    let (response, head_only) = match read_request(stream, Instant::now() + HEAD_DEADLINE) {
        Ok(request) => (route(&request, state), request.method == "HEAD"),
        Err(ReadError::Closed) => return,
        Err(ReadError::Malformed) => (Response::error(400, "bad request"), false),
        Err(ReadError::TooLarge) => (Response::error(431, "request head too large"), false),
        Err(ReadError::TimedOut) => (Response::error(408, "request timeout"), false),
    };
    if response.write_to(stream, head_only).is_ok() {
        close_gracefully(stream, Duration::from_millis(200));
    }
}

/// The response to a well-formed request.
fn route(request: &Request, state: &State) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::error(405, "only GET and HEAD").header("Allow", "GET, HEAD");
    }
    match request.path.as_str() {
        "/metrics" => Response::ok(exposition::CONTENT_TYPE, exposition::render(&state.board)),
        "/healthz" => Response::ok("text/plain; charset=utf-8", "ok\n"),
        "/stats.json" => {
            let since = match request.param("since").map(str::parse::<u64>) {
                None => 0,
                Some(Ok(ms)) => ms,
                Some(Err(_)) => return Response::error(400, "since: milliseconds expected"),
            };
            let body = live::stats_json(&state.board, &lock(&state.history), since);
            Response::ok("application/json", body)
        }
        "/" | "/index.html" => Response::ok("text/html; charset=utf-8", PAGE)
            .header("Content-Security-Policy", PAGE_CSP),
        _ => Response::error(404, "not found: try /metrics, /healthz, /stats.json or /"),
    }
}
