//! Messages from other nodes arrive once per NATS subscription they match, so a node with
//! overlapping filters (`a/#` and `a/+`) gets some twice. Each carries its origin node and a
//! sequence number that grows by one per message that node sends; this remembers the last
//! [`WINDOW`] numbers of each origin and lets each through once. The copies of one message
//! arrive close together (one connection, in order), well within the window.

use ahash::AHashMap;

/// Sequence numbers remembered per origin node.
pub const WINDOW: u64 = 1 << 16;

#[derive(Default)]
pub struct Dedupe {
    origins: AHashMap<String, Window>,
}

/// The highest number seen and a bitmap of the [`WINDOW`] numbers below it.
struct Window {
    highest: u64,
    seen: Vec<u64>,
}

impl Window {
    fn new() -> Window {
        Window {
            highest: 0,
            seen: vec![0; (WINDOW / 64) as usize],
        }
    }

    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.seen[(i / 64) as usize], 1 << (i % 64))
    }

    /// True the first time `seq` is offered.
    fn first(&mut self, seq: u64) -> bool {
        if seq + WINDOW <= self.highest {
            // Older than the window: a straggler; let it through rather than lose it.
            return true;
        }
        if seq > self.highest {
            // Forget the numbers the window moves past.
            let from = self.highest + 1;
            let clear = (seq - self.highest).min(WINDOW);
            for s in (seq + 1 - clear)..=seq {
                if s >= from {
                    let (word, mask) = self.bit(s);
                    *word &= !mask;
                }
            }
            self.highest = seq;
        }
        let (word, mask) = self.bit(seq);
        let new = *word & mask == 0;
        *word |= mask;
        new
    }
}

impl Dedupe {
    /// Whether the message `seq` from `origin` is seen for the first time.
    pub fn first(&mut self, origin: &str, seq: u64) -> bool {
        match self.origins.get_mut(origin) {
            Some(w) => w.first(seq),
            None => {
                let mut w = Window::new();
                let first = w.first(seq);
                self.origins.insert(origin.to_string(), w);
                first
            }
        }
    }

    /// A node that restarted numbers from 1 again: start its window afresh.
    pub fn forget(&mut self, origin: &str) {
        self.origins.remove(origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_passes_once_per_origin() {
        let mut d = Dedupe::default();
        assert!(d.first("a", 1));
        assert!(!d.first("a", 1));
        assert!(d.first("b", 1));
        assert!(d.first("a", 3));
        assert!(d.first("a", 2), "out of order, still first");
        assert!(!d.first("a", 2));
        assert!(!d.first("a", 3));
    }

    #[test]
    fn the_window_moves_on_without_forgetting_too_early() {
        let mut d = Dedupe::default();
        for s in 1..=3 * WINDOW {
            assert!(d.first("a", s));
            assert!(!d.first("a", s));
        }
        // A jump far ahead clears what the window passed over.
        assert!(d.first("a", 10 * WINDOW));
        assert!(d.first("a", 10 * WINDOW - 5));
        assert!(!d.first("a", 10 * WINDOW - 5));
    }
}
