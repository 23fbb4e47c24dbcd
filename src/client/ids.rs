//! Packet identifier allocation: which of the 65535 identifiers are in use by requests the
//! server has not finished acknowledging, and which one to hand out next.
//!
//! Identifiers are handed out in increasing order (wrapping from 65535 to 1), skipping the
//! ones in use. An identifier is never handed out again while it is in use (MQTT-2.3.1-2),
//! however long one request stays unacknowledged. A bitmap (8 KiB) makes both checks O(1);
//! the skip scan is amortised O(1) because the window bounds how many are in use.

use crate::protocol::PacketId;

pub(crate) struct PacketIds {
    used: Box<[u64; 1024]>,
    in_use: usize,
    last: PacketId,
}

impl Default for PacketIds {
    fn default() -> Self {
        PacketIds {
            used: Box::new([0; 1024]),
            in_use: 0,
            last: 0,
        }
    }
}

impl PacketIds {
    /// The next free identifier, now marked in use; `None` when all 65535 are taken.
    pub fn allocate(&mut self) -> Option<PacketId> {
        if self.in_use >= usize::from(u16::MAX) {
            return None;
        }
        let mut id = self.last;
        loop {
            id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.is_used(id) {
                break;
            }
        }
        self.mark(id);
        self.last = id;
        Some(id)
    }

    pub fn is_used(&self, id: PacketId) -> bool {
        self.used[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    /// Marks `id` in use (no-op if it already is).
    pub fn mark(&mut self, id: PacketId) {
        if !self.is_used(id) {
            self.used[usize::from(id >> 6)] |= 1 << (id & 63);
            self.in_use += 1;
        }
    }

    /// Frees `id` (no-op if it is not in use).
    pub fn release(&mut self, id: PacketId) {
        if self.is_used(id) {
            self.used[usize::from(id >> 6)] &= !(1 << (id & 63));
            self.in_use -= 1;
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_wrapping_skipping_ids_in_use() {
        let mut ids = PacketIds::default();
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(2));
        ids.release(1);
        // Freed ids are not reused before the counter comes round.
        assert_eq!(ids.allocate(), Some(3));
        ids.last = 65_534;
        assert_eq!(ids.allocate(), Some(65_535));
        // 0 is never handed out; 1 is free again, 2 and 3 are in use.
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(4));
        assert_eq!(ids.in_use(), 5);
    }

    #[test]
    fn never_hands_out_an_id_in_use_and_says_when_all_are() {
        let mut ids = PacketIds::default();
        for expected in 1..=u16::MAX {
            assert_eq!(ids.allocate(), Some(expected));
        }
        assert_eq!(ids.allocate(), None);
        ids.release(40_000);
        assert_eq!(ids.allocate(), Some(40_000));
        assert_eq!(ids.allocate(), None);
    }
}
