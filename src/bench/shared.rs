//! State of a run that the coordinating thread and the generator threads share, and the
//! per-thread state that a thread's clients share.
//!
//! The coordinator drives the run through [`Phase`]s stored in one atomic. Generator threads do
//! not each poll it from every client: one small task per thread watches it and wakes that
//! thread's clients when it changes ([`Control`]), so a phase change costs one wake per client
//! and no traffic at all in between. Counters the coordinator reads for the progress line are
//! per thread, on their own cache lines, and updated once per batch.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::window::{Board, Padded};

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connecting and subscribing; nobody publishes.
    Setup = 0,
    /// Publishers send.
    Running = 1,
    /// Publishers stop; subscribers keep receiving what is still on its way.
    Draining = 2,
    /// `--offline`: every publish is acknowledged; subscribers reconnect and drain.
    Reconnecting = 3,
    /// Everyone disconnects.
    Finished = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Setup,
            1 => Phase::Running,
            2 => Phase::Draining,
            3 => Phase::Reconnecting,
            _ => Phase::Finished,
        }
    }
}

/// Counters one generator thread publishes for the coordinator.
#[derive(Default)]
pub struct ThreadStats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
}

/// Largest latency recorded: anything slower is clamped (and visible as the max).
const MAX_LATENCY_NS: u64 = 600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

pub struct Shared {
    /// The monotonic clock every timestamp is measured from.
    pub base: Instant,
    phase: AtomicU8,
    /// When publishing started, in ns since `base`.
    pub start_ns: AtomicU64,
    /// Clients that finished connecting and subscribing.
    pub ready: AtomicUsize,
    /// Clients that gave up during setup.
    pub failed: AtomicUsize,
    /// Publishers that sent everything they were to send (or died trying).
    pub publishers_done: AtomicUsize,
    pub board: Board,
    pub threads: Box<[Padded<ThreadStats>]>,
    pub errors: Mutex<Vec<String>>,
}

impl Shared {
    /// `group`: the subscribers share one subscription (each message reaches one of them).
    pub fn new(publishers: usize, subscribers: usize, threads: usize, group: bool) -> Shared {
        Shared {
            base: Instant::now(),
            phase: AtomicU8::new(Phase::Setup as u8),
            start_ns: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            publishers_done: AtomicUsize::new(0),
            board: match group {
                true => Board::new_group(publishers, subscribers),
                false => Board::new(publishers, subscribers),
            },
            threads: (0..threads).map(|_| Padded::default()).collect(),
            errors: Mutex::new(Vec::new()),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
        // Publishers parked on a full window must see the change too.
        for p in 0..self.board.publishers() {
            self.board.wake(p);
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        // A broker that drops everyone would otherwise produce thousands of identical lines.
        if errors.len() < 50 {
            errors.push(message);
        }
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        self.threads.iter().fold((0, 0, 0), |(p, d, a), t| {
            (
                p + t.0.published.load(Ordering::Relaxed),
                d + t.0.delivered.load(Ordering::Relaxed),
                a + t.0.acked.load(Ordering::Relaxed),
            )
        })
    }

    /// Messages subscribers should have received by now: what each publisher sent, times the
    /// subscribers (every subscriber of a scenario matches every publisher), or once for a
    /// shared-subscription group.
    pub fn expected(&self) -> u64 {
        let subs = self.board.copies() as u64;
        (0..self.board.publishers())
            .map(|p| self.board.slot(p).sent.load(Ordering::Relaxed) * subs)
            .sum()
    }
}

/// One generator thread's view of the phase, and the wakers of its clients.
pub struct Control {
    phase: Cell<Phase>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Control {
    pub fn new(clients: usize) -> Control {
        Control {
            phase: Cell::new(Phase::Setup),
            wakers: RefCell::new(vec![None; clients]),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// Wake client `slot` on the next phase change.
    pub fn register(&self, slot: usize, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        match &wakers[slot] {
            Some(w) if w.will_wake(waker) => {}
            _ => wakers[slot] = Some(waker.clone()),
        }
    }

    /// Follows the shared phase until the run is finished. A millisecond of delay on a phase
    /// change is nothing next to setup; polling the atomic is cheaper than cross-thread wakes
    /// from the coordinator.
    pub async fn watch(&self, shared: &Shared) {
        loop {
            let phase = shared.phase();
            if phase != self.phase.get() {
                self.phase.set(phase);
                let wakers: Vec<Waker> = self
                    .wakers
                    .borrow_mut()
                    .iter_mut()
                    .flatten()
                    .map(|w| w.clone())
                    .collect();
                for w in wakers {
                    w.wake();
                }
            }
            if phase == Phase::Finished {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// What a thread's clients share: the phase view, the latency histogram, its counters.
pub struct Local {
    pub thread: usize,
    pub control: Control,
    pub histogram: RefCell<Histogram<u64>>,
}
