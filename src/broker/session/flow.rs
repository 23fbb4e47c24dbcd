//! The session's side of flow control (see `pressure`): whether its queue is over its limits,
//! when the pressure it raised ends, and whether its client still makes progress.

use std::time::Instant;

use super::Session;

impl Session {
    /// Whether one more message of `size` bytes would take the queue past its limits plus
    /// `messages` and `bytes`.
    pub(super) fn over_limits(&self, messages: usize, bytes: usize, size: usize) -> bool {
        let l = &self.limits;
        self.queue.len() >= l.max_queued_messages.saturating_add(messages)
            || self.queued_bytes + size > l.max_queued_bytes.saturating_add(bytes)
    }

    /// Whether the publishers feeding this session are being held back.
    pub fn under_pressure(&self) -> bool {
        self.pressure
    }

    /// Ends the pressure once the queue is back under half its limits (or the subscriber went
    /// away); returns true when it did, and the caller lets the publishers go.
    pub fn relieve_pressure(&mut self) -> bool {
        let l = &self.limits;
        if self.pressure
            && (self.attached == 0
                || (self.queue.len() <= l.max_queued_messages / 2
                    && self.queued_bytes <= l.max_queued_bytes / 2))
        {
            self.pressure = false;
            return true;
        }
        false
    }

    /// The client read or acknowledged something: a stalled subscriber is live again.
    pub fn note_progress(&mut self) {
        self.progressed = true;
        self.stalled = false;
    }

    /// The pressure watch's look at a session under pressure: true when it made no progress
    /// for `stall_timeout` and is now stalled (pressure ended; the caller lets the publishers
    /// go, and its new messages are dropped until it makes progress again).
    pub fn check_stalled(&mut self, now: Instant) -> bool {
        if !self.pressure {
            return false;
        }
        if std::mem::take(&mut self.progressed) {
            self.last_progress = now;
            return false;
        }
        if now.saturating_duration_since(self.last_progress) < self.limits.stall_timeout {
            return false;
        }
        self.pressure = false;
        self.stalled = true;
        true
    }
}
