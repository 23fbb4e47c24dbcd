//! Shard unit tests: the congestion wake-up race and the encode-once decision.

use std::sync::atomic::AtomicBool;
use std::task::Wake;

use super::*;
use crate::broker::mesh::CONGESTION_LIMIT;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The race behind a rare stall of a lone publisher: it paused on congestion, then the
/// inbox drain's flush (not the stall task's) sent the whole backlog, and nobody woke it.
#[test]
fn any_flush_that_ends_the_congestion_wakes_the_paused_publishers() {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(async {
            let (mesh, inboxes) = Mesh::new(2).unwrap();
            let config = Arc::new(BrokerConfig {
                park_idle_after: None,
                ..BrokerConfig::default()
            });
            let shard = Shard::new(ShardId(0), config, mesh.clone(), Arc::default());
            // Shard 1's inbox is full, and this shard gathers a congesting backlog for it.
            while mesh.try_send(ShardId(1), ShardMessage::Shutdown).is_ok() {}
            for _ in 0..CONGESTION_LIMIT {
                shard.router_send(ShardId(1), ShardMessage::Shutdown);
            }
            shard.flush();
            assert!(shard.congested());

            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(shard.poll_uncongested(&mut cx).is_pending());

            // Shard 1 catches up; the next flush here sends everything.
            while inboxes[1].rx.try_recv().is_ok() {}
            shard.flush();
            assert!(!shard.congested());
            assert!(
                flag.0.load(Ordering::SeqCst),
                "the paused publisher was not woken"
            );
        });
}

#[test]
fn small_messages_are_encoded_once_for_enough_qos0_subscribers() {
    let sub = |slot, qos| {
        let id = SubscriberId {
            durable: false,
            shard: ShardId(0),
            slot,
            generation: 1,
        };
        (id, crate::broker::mesh::Grant::from(qos))
    };
    let message = |len, qos| Message::new(ByteStr::from("t"), vec![0; len].into(), qos, false);
    let qos0: Vec<_> = (0..ENCODE_ONCE_FROM as u32)
        .map(|i| sub(i, QoS::AtMostOnce))
        .collect();
    let qos1: Vec<_> = (0..10).map(|i| sub(i, QoS::AtLeastOnce)).collect();
    assert!(worth_encoding_once(
        &message(64, QoS::AtMostOnce),
        &qos0,
        SHARE_PAYLOADS_FROM
    ));
    // Too few, or too large (shared instead), or QoS 1 for everyone: no frame.
    assert!(!worth_encoding_once(
        &message(64, QoS::AtMostOnce),
        &qos0[1..],
        SHARE_PAYLOADS_FROM
    ));
    assert!(!worth_encoding_once(
        &message(SHARE_PAYLOADS_FROM, QoS::AtMostOnce),
        &qos0,
        SHARE_PAYLOADS_FROM
    ));
    assert!(!worth_encoding_once(
        &message(64, QoS::AtLeastOnce),
        &qos1,
        SHARE_PAYLOADS_FROM
    ));
    // A QoS 1 message counts the subscribers that get it at QoS 0 (granted 0) ...
    assert!(worth_encoding_once(
        &message(64, QoS::AtLeastOnce),
        &qos0,
        SHARE_PAYLOADS_FROM
    ));
    // ... and a QoS 0 message all of them.
    assert!(worth_encoding_once(
        &message(64, QoS::AtMostOnce),
        &qos1,
        SHARE_PAYLOADS_FROM
    ));
}
