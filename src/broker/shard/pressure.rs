//! Flow control on the shard (see `pressure`): raising, announcing and ending the pressure a
//! subscriber of this shard puts on the publishers that feed it.

use std::cell::RefCell;

use super::Shard;
use crate::broker::mesh::SubscriberId;
use crate::broker::metrics::add;
use crate::broker::session::Session;

impl Shard {
    /// A subscriber of this shard went over its queue limits while reading: every shard holds
    /// back the publishers that reach it, and the stall watch starts looking at it.
    pub(super) fn raise_pressure(&self, id: SubscriberId) {
        if !self.pressure.raise(id) {
            return;
        }
        add(&self.metrics.pressure_raised, 1);
        self.pressure.watch(id);
        if self.shards > 1 {
            self.pressure.announce(id, true);
        }
    }

    /// The pressure on a subscriber of this shard ended: its publishers everywhere may go on.
    pub fn release_pressure(&self, id: SubscriberId) {
        self.pressure.lower(&id);
        if self.shards > 1 {
            self.pressure.announce(id, false);
        }
    }

    /// Ends the pressure on `session` when its queue drained enough (or it went away). The
    /// other shards hear of it at once: nothing else may flush this shard's router for a while,
    /// and their publishers wait until they do.
    pub fn relieve(&self, session: &RefCell<Session>) {
        let mut s = session.borrow_mut();
        if s.under_pressure() && s.relieve_pressure() {
            let id = s.id;
            drop(s);
            self.release_pressure(id);
            self.flush();
        }
    }
}
