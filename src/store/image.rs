//! What a shard's log adds up to: the persistent sessions and retained messages to restore at
//! start, rebuilt by applying its [`Record`]s in order. Pure: records in, state out; the
//! broker turns the image into live sessions (issue 13's next part).
//!
//! A record that does not fit the state before it (a message sent that was never queued, a
//! session never begun) cannot come from a log this broker wrote whole; it is an error naming
//! the record, so the start stops instead of restoring something half right.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::record::{MessageExtras, Record, SubscriptionExtras};
use crate::protocol::{ByteStr, PacketId, QoS};

/// A message as a session holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5's properties, expiry and Subscription Identifier, if it had any.
    pub extras: Option<Box<MessageExtras>>,
}

/// A message sent and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInflight {
    pub packet_id: PacketId,
    pub message: StoredMessage,
    /// PUBREC came: the message is delivered, and a PUBREL (not the PUBLISH) is owed.
    pub received: bool,
}

/// One persistent session as the log left it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredSession {
    pub client_id: ByteStr,
    pub username: Option<ByteStr>,
    pub subscriptions: BTreeMap<ByteStr, (QoS, SubscriptionExtras)>,
    /// MQTT 5 Session Expiry Interval in seconds, if the session has one of its own.
    pub expiry_secs: Option<u32>,
    /// Sent and unacknowledged, in the order they went out (resent first, MQTT-4.4.0-1).
    pub inflight: VecDeque<StoredInflight>,
    /// Waiting to be sent, in order.
    pub queue: VecDeque<StoredMessage>,
    /// Incoming QoS 2 ids between PUBLISH and PUBREL, accepted (their PUBREC could go).
    pub incoming_qos2: BTreeSet<PacketId>,
    /// Incoming QoS 2 ids registered (by number) and not yet accepted when the log ended:
    /// their publishers never got a PUBREC; a start forgets them, and the messages they
    /// wrote anywhere (see `qos2::settle`).
    pub pending_qos2: BTreeMap<PacketId, u64>,
    /// When its connection went away (ms since the Unix epoch), if it has none.
    pub detached_at_ms: Option<u64>,
    /// When its client last connected again (ms since the Unix epoch), if the log says: for
    /// a session whose client was connected when the log ended.
    pub attached_at_ms: Option<u64>,
    /// The last packet id given to an outgoing message (0: none yet).
    pub last_packet_id: PacketId,
    /// A will waiting for its delay: when it is due (ms since the Unix epoch), and the will.
    pub delayed_will: Option<(u64, StoredMessage)>,
}

/// A shard's durable state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub sessions: BTreeMap<u64, StoredSession>,
    pub retained: BTreeMap<ByteStr, (Bytes, QoS, Option<Box<MessageExtras>>)>,
    /// Above every session number the log used: where new ones start.
    pub next_session: u64,
    /// Above every incoming QoS 2 registration number the log gave.
    pub next_reg: u64,
}

/// A record that does not fit the state before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record does not fit the log before it: {0}")]
pub struct Inconsistent(pub String);

impl Image {
    pub fn apply(&mut self, record: Record) -> Result<(), Inconsistent> {
        match record {
            Record::SessionBegan {
                session,
                client_id,
                username,
            } => {
                self.next_session = self.next_session.max(session + 1);
                let stored = StoredSession {
                    client_id,
                    username,
                    ..StoredSession::default()
                };
                if self.sessions.insert(session, stored).is_some() {
                    return Err(Inconsistent(format!("session {session} began twice")));
                }
            }
            Record::SessionEnded { session } => {
                self.sessions
                    .remove(&session)
                    .ok_or_else(|| unknown(session))?;
            }
            Record::Subscribed {
                session,
                filter,
                qos,
                extras,
            } => {
                self.session(session)?
                    .subscriptions
                    .insert(filter, (qos, extras));
            }
            Record::Unsubscribed { session, filter } => {
                self.session(session)?.subscriptions.remove(&filter);
            }
            Record::Queued {
                session,
                seq,
                topic,
                payload,
                qos,
                retain,
                extras,
            } => {
                let queue = &mut self.session(session)?.queue;
                // The record's body holds topic and payload; a queued message may be kept for
                // long, so it keeps its own copy of the payload (the body is freed) and shares
                // its topic with the message before it when they are the same (one session
                // usually gets few topics).
                let topic = match queue.back() {
                    Some(last) if last.topic == topic => last.topic.clone(),
                    _ => ByteStr::from(&*topic),
                };
                queue.push_back(StoredMessage {
                    seq,
                    topic,
                    payload: Bytes::copy_from_slice(&payload),
                    qos,
                    retain,
                    extras,
                })
            }
            Record::Sent {
                session,
                seq,
                packet_id,
            } => {
                let s = self.session(session)?;
                let at = s.queue.iter().position(|m| m.seq == seq).ok_or_else(|| {
                    Inconsistent(format!(
                        "session {session}: message {seq} sent, never queued"
                    ))
                })?;
                let message = s.queue.remove(at).expect("found");
                s.last_packet_id = packet_id;
                s.inflight.push_back(StoredInflight {
                    packet_id,
                    message,
                    received: false,
                });
            }
            Record::Received { session, packet_id } => {
                let s = self.session(session)?;
                let entry = inflight(s, session, packet_id)?;
                s.inflight[entry].received = true;
            }
            Record::Completed { session, packet_id } => {
                let s = self.session(session)?;
                let entry = inflight(s, session, packet_id)?;
                s.inflight.remove(entry);
            }
            Record::IncomingQos2 {
                session,
                packet_id,
                reg,
            } => {
                let s = self.session(session)?;
                if reg == 0 {
                    s.incoming_qos2.insert(packet_id);
                } else {
                    s.pending_qos2.insert(packet_id, reg);
                    self.next_reg = self.next_reg.max(reg + 1);
                }
            }
            Record::Qos2Accepted { session, packet_id } => {
                let s = self.session(session)?;
                s.pending_qos2.remove(&packet_id);
                s.incoming_qos2.insert(packet_id);
            }
            Record::Qos2Counter { next } => self.next_reg = self.next_reg.max(next),
            Record::Released { session, packet_id } => {
                let s = self.session(session)?;
                s.incoming_qos2.remove(&packet_id);
                s.pending_qos2.remove(&packet_id);
            }
            Record::Detached { session, at_ms } => {
                self.session(session)?.detached_at_ms = Some(at_ms)
            }
            Record::Attached { session, at_ms } => {
                let s = self.session(session)?;
                s.detached_at_ms = None;
                s.attached_at_ms = (at_ms != 0).then_some(at_ms);
            }
            Record::Retained {
                topic,
                payload,
                qos,
                extras,
            } => {
                self.retained.insert(topic, (payload, qos, extras));
            }
            Record::SessionExpiry { session, secs } => {
                self.session(session)?.expiry_secs = (secs != u32::MAX).then_some(secs);
            }
            Record::DelayedWill {
                session,
                due_ms,
                topic,
                payload,
                qos,
                retain,
                extras,
            } => {
                let will = StoredMessage {
                    seq: 0,
                    topic,
                    payload,
                    qos,
                    retain,
                    extras,
                };
                self.session(session)?.delayed_will = Some((due_ms, will));
            }
            Record::WillDone { session } => self.session(session)?.delayed_will = None,
            Record::Withdrawn { session, seq } => {
                let s = self.session(session)?;
                if let Some(at) = s.queue.iter().position(|m| m.seq == seq) {
                    s.queue.remove(at);
                } else if let Some(at) = s.inflight.iter().position(|f| f.message.seq == seq) {
                    s.inflight.remove(at);
                } else {
                    return Err(Inconsistent(format!(
                        "session {session}: message {seq} withdrawn, never queued"
                    )));
                }
            }
            Record::RetainCleared { topic } => {
                self.retained.remove(&topic);
            }
            Record::SnapshotEnd => {}
            Record::LastPacketId { session, packet_id } => {
                self.session(session)?.last_packet_id = packet_id
            }
        }
        Ok(())
    }

    fn session(&mut self, session: u64) -> Result<&mut StoredSession, Inconsistent> {
        self.sessions
            .get_mut(&session)
            .ok_or_else(|| unknown(session))
    }
}

fn unknown(session: u64) -> Inconsistent {
    Inconsistent(format!("session {session} was never begun (or ended)"))
}

fn inflight(s: &StoredSession, session: u64, packet_id: PacketId) -> Result<usize, Inconsistent> {
    s.inflight
        .iter()
        .position(|e| e.packet_id == packet_id)
        .ok_or_else(|| {
            Inconsistent(format!(
                "session {session}: packet id {packet_id} not in flight"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> ByteStr {
        ByteStr::from(v)
    }

    fn queued(seq: u64, qos: QoS) -> Record {
        Record::Queued {
            session: 1,
            seq,
            topic: s("t"),
            payload: Bytes::from(format!("m{seq}")),
            qos,
            retain: false,
            extras: Default::default(),
        }
    }

    fn image(records: Vec<Record>) -> Result<Image, Inconsistent> {
        let mut image = Image::default();
        for r in records {
            image.apply(r)?;
        }
        Ok(image)
    }

    fn began(session: u64) -> Record {
        Record::SessionBegan {
            session,
            client_id: s(&format!("c{session}")),
            username: None,
        }
    }

    #[test]
    fn a_withdrawn_message_leaves_the_queue_or_the_window() {
        let sent = |seq, packet_id| Record::Sent {
            session: 1,
            seq,
            packet_id,
        };
        let withdrawn = |seq| Record::Withdrawn { session: 1, seq };
        let image = image(vec![
            began(1),
            queued(1, QoS::AtLeastOnce),
            queued(2, QoS::AtLeastOnce),
            queued(3, QoS::AtLeastOnce),
            sent(1, 7),
            withdrawn(1), // in flight
            withdrawn(3), // queued
        ])
        .unwrap();
        let s = &image.sessions[&1];
        assert!(s.inflight.is_empty());
        assert_eq!(s.queue.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
        let err = super::tests::image(vec![began(1), withdrawn(9)]).unwrap_err();
        assert!(err.0.contains("message 9 withdrawn"), "{err}");
    }

    #[test]
    fn a_session_replays_to_what_is_still_owed_in_order() {
        let image = image(vec![
            began(1),
            Record::Subscribed {
                session: 1,
                filter: s("t"),
                qos: QoS::ExactlyOnce,
                extras: Default::default(),
            },
            queued(1, QoS::AtLeastOnce),
            queued(2, QoS::ExactlyOnce),
            queued(3, QoS::ExactlyOnce),
            queued(4, QoS::AtLeastOnce),
            Record::Sent {
                session: 1,
                seq: 1,
                packet_id: 10,
            },
            Record::Sent {
                session: 1,
                seq: 2,
                packet_id: 11,
            },
            Record::Sent {
                session: 1,
                seq: 3,
                packet_id: 12,
            },
            // 1 (QoS 1) is done; 2 (QoS 2) got PUBREC: a PUBREL is owed, not the PUBLISH.
            Record::Completed {
                session: 1,
                packet_id: 10,
            },
            Record::Received {
                session: 1,
                packet_id: 11,
            },
            Record::IncomingQos2 {
                session: 1,
                packet_id: 5,
                reg: 0,
            },
            // 6 waits for its acceptance when the log ends; 7 got it, then its PUBREL.
            Record::IncomingQos2 {
                session: 1,
                packet_id: 6,
                reg: 3,
            },
            Record::IncomingQos2 {
                session: 1,
                packet_id: 7,
                reg: 4,
            },
            Record::Qos2Accepted {
                session: 1,
                packet_id: 7,
            },
            Record::Released {
                session: 1,
                packet_id: 7,
            },
            Record::Detached {
                session: 1,
                at_ms: 1000,
            },
        ])
        .unwrap();
        let session = &image.sessions[&1];
        assert_eq!(session.client_id, s("c1"));
        assert_eq!(session.subscriptions[&s("t")].0, QoS::ExactlyOnce);
        let inflight: Vec<(u16, u64, bool)> = session
            .inflight
            .iter()
            .map(|e| (e.packet_id, e.message.seq, e.received))
            .collect();
        assert_eq!(inflight, [(11, 2, true), (12, 3, false)]);
        let queue: Vec<u64> = session.queue.iter().map(|m| m.seq).collect();
        assert_eq!(queue, [4]);
        assert_eq!(session.incoming_qos2, BTreeSet::from([5]));
        assert_eq!(session.pending_qos2, BTreeMap::from([(6, 3)]));
        assert_eq!(image.next_reg, 5);
        assert_eq!(session.detached_at_ms, Some(1000));
        assert_eq!(image.next_session, 2);
    }

    #[test]
    fn an_ended_session_leaves_nothing_and_its_number_is_not_reused() {
        let image = image(vec![
            began(1),
            queued(1, QoS::AtLeastOnce),
            began(2),
            Record::SessionEnded { session: 1 },
        ])
        .unwrap();
        assert_eq!(image.sessions.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(image.next_session, 3);
    }

    #[test]
    fn retained_messages_are_set_replaced_and_cleared() {
        let retained = |topic: &str, payload: &'static [u8]| Record::Retained {
            topic: s(topic),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            extras: Default::default(),
        };
        let image = image(vec![
            retained("a", b"1"),
            retained("b", b"1"),
            retained("a", b"2"),
            Record::RetainCleared { topic: s("b") },
        ])
        .unwrap();
        assert_eq!(
            image.retained,
            BTreeMap::from([(s("a"), (Bytes::from_static(b"2"), QoS::AtLeastOnce, None))])
        );
    }

    #[test]
    fn records_that_do_not_fit_are_errors() {
        assert!(
            image(vec![queued(1, QoS::AtLeastOnce)]).is_err(),
            "no session"
        );
        assert!(image(vec![began(1), began(1)]).is_err(), "began twice");
        assert!(image(vec![
            began(1),
            Record::Sent {
                session: 1,
                seq: 9,
                packet_id: 1
            }
        ])
        .is_err());
        assert!(image(vec![
            began(1),
            Record::Completed {
                session: 1,
                packet_id: 1
            }
        ])
        .is_err());
    }
}
