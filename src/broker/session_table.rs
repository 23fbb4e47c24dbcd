//! A shard's sessions, addressable by slot (deliveries name a slot and its generation) and by
//! client id (CONNECT finds an existing session by it). A freed slot gets a new generation
//! when reused, so a delivery addressed to a session that has ended finds nothing.

use std::cell::RefCell;
use std::rc::Rc;

use ahash::AHashMap;

use super::mesh::SubscriberId;
use super::session::Session;
use crate::protocol::ByteStr;

struct Slot {
    generation: u32,
    session: Option<Rc<RefCell<Session>>>,
}

/// Sessions of this shard, addressable by slot (for deliveries) and by client id (for CONNECT).
#[derive(Default)]
pub struct SessionTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_client: AHashMap<ByteStr, u32>,
}

impl SessionTable {
    pub fn get(&self, slot: u32, generation: u32) -> Option<&Rc<RefCell<Session>>> {
        let s = self.slots.get(slot as usize)?;
        if s.generation == generation {
            s.session.as_ref()
        } else {
            None
        }
    }

    pub fn find(&self, client_id: &str) -> Option<Rc<RefCell<Session>>> {
        let slot = *self.by_client.get(client_id)?;
        self.slots[slot as usize].session.clone()
    }

    /// A fresh slot (a new generation if reused) for a session built by `make`.
    pub fn insert(
        &mut self,
        client_id: ByteStr,
        make: impl FnOnce(u32, u32) -> Session,
    ) -> Rc<RefCell<Session>> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    session: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        let session = Rc::new(RefCell::new(make(slot, entry.generation)));
        entry.session = Some(session.clone());
        self.by_client.insert(client_id, slot);
        session
    }

    pub fn remove(&mut self, id: SubscriberId, client_id: &str) {
        let Some(entry) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        if entry.generation != id.generation || entry.session.is_none() {
            return;
        }
        entry.session = None;
        self.free.push(id.slot);
        if self.by_client.get(client_id) == Some(&id.slot) {
            self.by_client.remove(client_id);
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Rc<RefCell<Session>>> {
        self.slots.iter().filter_map(|s| s.session.as_ref())
    }
}
