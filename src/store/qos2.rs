//! Exactly once across a crash for QoS 2 PUBLISHes from persistent sessions, when the
//! publisher's log and its subscribers' logs are different files.
//!
//! The publisher's shard registers the incoming packet id in its log with a number
//! ([`Record::IncomingQos2`] `reg`), and every copy of the message queued anywhere carries
//! that origin ([`Qos2Origin`]). Once all of it is durable, the publisher's shard writes
//! [`Record::Qos2Accepted`]; only once that is durable does its PUBREC go and any copy get
//! delivered. So after a crash, per registration, either:
//! - it was accepted (or accepted and released since): every copy is durable, none was
//!   delivered twice, and the id stays known, so a repeated PUBLISH is not forwarded again;
//! - or it was not (its record waits for acceptance, or never became durable: its number is
//!   at or above what the log says it gave): no subscriber saw a copy and the publisher got
//!   no PUBREC. Its copies are dropped wherever they were written and the id is forgotten, so
//!   the PUBLISH the publisher sends again is forwarded as new: once.
//!
//! [`settle`] applies this to the logs of a data directory, before their state is dealt out.

use std::collections::{BTreeMap, BTreeSet};

use super::image::{Image, StoredMessage};
use super::record::Qos2Origin;

#[cfg(doc)]
use super::record::Record;

/// What [`settle`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Copies of messages whose registration was not accepted, dropped.
    pub dropped: usize,
    /// Registrations forgotten (their publishers send the PUBLISH again).
    pub forgotten: usize,
}

/// Settles the incoming QoS 2 messages of the logs `images` (each with the shard index
/// that wrote it, which the origins name): see the module docs. Kept copies lose their
/// origin; no registration is left waiting.
pub fn settle(images: &mut [(usize, Image)]) -> Settled {
    // Per shard index: the numbers it gave, and those still waiting.
    let registrations: BTreeMap<usize, (u64, BTreeSet<u64>)> = images
        .iter()
        .map(|(shard, image)| {
            let waiting = image
                .sessions
                .values()
                .flat_map(|s| s.pending_qos2.values().copied())
                .collect();
            (*shard, (image.next_reg, waiting))
        })
        .collect();
    let accepted = |origin: &Qos2Origin| {
        registrations
            .get(&usize::from(origin.shard))
            .is_some_and(|(next, waiting)| origin.reg < *next && !waiting.contains(&origin.reg))
    };
    let mut settled = Settled::default();
    for (_, image) in images.iter_mut() {
        for session in image.sessions.values_mut() {
            settled.forgotten += session.pending_qos2.len();
            session.pending_qos2.clear();
            let mut keep = |m: &mut StoredMessage| {
                let Some(extras) = m.extras.as_mut() else {
                    return true;
                };
                let Some(origin) = extras.origin.take() else {
                    return true;
                };
                let kept = accepted(&origin);
                settled.dropped += usize::from(!kept);
                kept
            };
            session.queue.retain_mut(&mut keep);
            session.inflight.retain_mut(|f| keep(&mut f.message));
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByteStr, QoS};
    use crate::store::record::MessageExtras;
    use crate::store::StoredSession;
    use bytes::Bytes;

    fn message(seq: u64, origin: Option<(u16, u64)>) -> StoredMessage {
        StoredMessage {
            seq,
            topic: ByteStr::from("t"),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            extras: origin.map(|(shard, reg)| {
                Box::new(MessageExtras {
                    origin: Some(Qos2Origin { shard, reg }),
                    ..MessageExtras::default()
                })
            }),
        }
    }

    #[test]
    fn only_copies_of_accepted_registrations_stay() {
        // Shard 0: the publisher's log. It gave numbers 1..=4: 2 waits for acceptance, 1 and
        // 3 were accepted (3 then released), 4's record never became durable (next_reg 4).
        let mut publisher = Image {
            next_reg: 4,
            ..Image::default()
        };
        let mut p = StoredSession::default();
        p.pending_qos2.insert(9, 2);
        p.incoming_qos2.insert(8);
        publisher.sessions.insert(0, p);
        // Shard 1: a subscriber with a copy of each, and a message of no registration.
        let mut subscriber = Image::default();
        let mut s = StoredSession::default();
        for (seq, reg) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
            s.queue.push_back(message(seq, Some((0, reg))));
        }
        s.queue.push_back(message(5, None));
        // A copy naming a shard whose log is not there: nothing of it was durable.
        s.queue.push_back(message(6, Some((7, 1))));
        subscriber.sessions.insert(0, s);
        let mut images = vec![(0, publisher), (1, subscriber)];
        let settled = settle(&mut images);
        assert_eq!(
            settled,
            Settled {
                dropped: 3,
                forgotten: 1
            }
        );
        let kept: Vec<u64> = images[1].1.sessions[&0]
            .queue
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(kept, [1, 3, 5]);
        assert!(images[1].1.sessions[&0]
            .queue
            .iter()
            .all(|m| m.extras.as_ref().is_none_or(|e| e.origin.is_none())));
        let p = &images[0].1.sessions[&0];
        assert!(p.pending_qos2.is_empty(), "the waiting id is forgotten");
        assert!(p.incoming_qos2.contains(&8), "the accepted id stays known");
    }
}
