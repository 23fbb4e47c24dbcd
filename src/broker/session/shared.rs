//! The session's side of shared subscriptions: what it holds for a group and has not yet got
//! to its client goes to another member when the session ends (MQTT 5.0 4.8.2), or, with
//! `--shared-redispatch`, as soon as its client goes away.

use std::sync::Arc;

use super::{InflightState, Outbound, Session};
use crate::broker::mesh::Message;
use crate::broker::shared::ShareKey;

/// A message a member gives back to its group.
pub struct Unreceived {
    pub message: Arc<Message>,
    pub share: Arc<ShareKey>,
    /// Its number in the session's journal (0 when not journalled).
    pub seq: u64,
}

impl Session {
    /// Takes out every message that came through a shared subscription and that the client
    /// does not have yet: queued, or sent and not acknowledged (QoS 1) or not received
    /// (QoS 2 without PUBREC). A QoS 2 message the client has (PUBREC sent) stays: giving it
    /// to another member would deliver it twice. With `keep_qos2_sent`, QoS 2 messages sent
    /// at all stay (for a client that may come back: it may have taken one already).
    pub fn take_shared_unreceived(&mut self, keep_qos2_sent: bool) -> Vec<Unreceived> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        self.inflight.retain_mut(|f| {
            if f.state == InflightState::Comp || (keep_qos2_sent && f.state == InflightState::Rec) {
                return true;
            }
            match f.share.take() {
                Some(share) => {
                    bytes += f.size as usize;
                    taken.push(Unreceived {
                        message: f.message.clone(),
                        share,
                        seq: f.seq,
                    });
                    false
                }
                None => true,
            }
        });
        self.resend = self.resend.min(self.inflight.len());
        self.queue.retain_mut(|item| match item {
            Outbound::Publish {
                message,
                share,
                seq,
                ..
            } if share.is_some() => {
                bytes += message.payload.len();
                taken.push(Unreceived {
                    message: message.clone(),
                    share: share.take().expect("checked"),
                    seq: *seq,
                });
                false
            }
            _ => true,
        });
        self.queued_bytes -= bytes;
        taken
    }
}
