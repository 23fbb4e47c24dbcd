//! Session state machine tests: packets in, bytes and decisions out, no sockets.

use super::*;
use crate::broker::mesh::ShardId;
use bytes::Bytes;
use std::time::{Duration, Instant};

fn session(max_inflight: usize, max_msgs: usize, max_bytes: usize) -> Session {
    let id = SubscriberId {
        durable: false,
        shard: ShardId(0),
        slot: 0,
        generation: 1,
    };
    let limits = SessionLimits {
        max_inflight,
        max_queued_messages: max_msgs,
        max_queued_bytes: max_bytes,
        queue_qos0: false,
        share_payloads_from: usize::MAX,
        stall_timeout: std::time::Duration::from_secs(10),
    };
    let mut s = Session::new(ByteStr::from("c"), id, true, std::rc::Rc::new(limits));
    s.attach(1);
    s
}

fn msg(payload: &'static [u8], qos: QoS) -> Arc<Message> {
    Arc::new(Message::new(
        ByteStr::from("t"),
        Bytes::from_static(payload),
        qos,
        false,
    ))
}

fn drain(s: &mut Session) -> Vec<u8> {
    let mut out = OutputQueue::default();
    s.fill(&mut out, usize::MAX);
    written(&mut out)
}

/// Everything `out` holds, in the order it would be written.
fn written(out: &mut OutputQueue) -> Vec<u8> {
    let mut slices = [std::io::IoSlice::new(&[]); 256];
    let n = out.io_slices(&mut slices);
    let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(bytes.len(), out.len(), "all of it fits in the slices");
    out.advance(bytes.len());
    bytes
}

#[test]
fn qos0_is_encoded_as_is() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"hi", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    // PUBLISH QoS 0, remaining length 5: topic "t" (00 01 74), payload "hi".
    assert_eq!(drain(&mut s), [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']);
    assert_eq!(s.queued(), 0);
}

#[test]
fn retained_flag_is_set_only_when_asked() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"", QoS::AtMostOnce), QoS::AtMostOnce, true)
        .unwrap();
    assert_eq!(drain(&mut s), [0x31, 0x03, 0x00, 0x01, b't']);
}

#[test]
fn qos0_for_a_disconnected_client_is_dropped_qos1_waits() {
    let mut s = session(10, 10, 1000);
    assert!(s.detach(1));
    assert_eq!(
        s.enqueue(msg(b"x", QoS::AtMostOnce), QoS::AtMostOnce, false),
        Err(Dropped::Offline)
    );
    s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(s.queued(), 1);
}

#[test]
fn queue_is_bounded_by_count_and_by_bytes() {
    let mut s = session(10, 2, 1000);
    s.enqueue(msg(b"a", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    s.enqueue(msg(b"b", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(
        s.enqueue(msg(b"c", QoS::AtMostOnce), QoS::AtMostOnce, false),
        Err(Dropped::QueueFull)
    );
    let mut s = session(10, 100, 5);
    s.enqueue(msg(b"1234", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(
        s.enqueue(msg(b"12", QoS::AtMostOnce), QoS::AtMostOnce, false),
        Err(Dropped::QueueFull)
    );
    // Sending frees the bytes again.
    drain(&mut s);
    s.enqueue(msg(b"12", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
}

fn qos1(s: &mut Session) -> Result<Queued, Dropped> {
    s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
}

#[test]
fn a_live_subscriber_gets_qos1_beyond_the_limit_and_its_publishers_are_told_to_wait() {
    let mut s = session(10, 2, 1000);
    assert_eq!(qos1(&mut s), Ok(Queued::Normally));
    assert_eq!(qos1(&mut s), Ok(Queued::Normally));
    assert!(!s.under_pressure());
    // The third is acknowledged to its publisher already: queued, and the pressure raised once.
    assert_eq!(qos1(&mut s), Ok(Queued::OverLimit));
    assert_eq!(qos1(&mut s), Ok(Queued::Normally), "raised once");
    assert!(s.under_pressure());
    assert_eq!(s.queued(), 4);
    // QoS 0 is never pushed back: dropped at the limit.
    assert_eq!(
        s.enqueue(msg(b"x", QoS::AtMostOnce), QoS::AtMostOnce, false),
        Err(Dropped::QueueFull)
    );
    assert!(!s.relieve_pressure(), "still over half the limit");
    drain(&mut s);
    assert!(s.relieve_pressure());
    assert!(!s.under_pressure() && !s.relieve_pressure());
}

#[test]
fn the_pressure_ends_at_half_the_limit() {
    let mut s = session(1, 4, 1000);
    for _ in 0..4 {
        assert_eq!(qos1(&mut s), Ok(Queued::Normally));
    }
    assert_eq!(qos1(&mut s), Ok(Queued::OverLimit));
    let mut relieved_at = None;
    for id in 1..=5u16 {
        drain(&mut s); // one in flight at a time
        if s.relieve_pressure() {
            relieved_at = Some(s.queued());
            break;
        }
        assert_eq!(s.on_puback(id), Ack::Done);
    }
    assert_eq!(
        relieved_at,
        Some(2),
        "relieved once the queue is at half of 4"
    );
}

#[test]
fn the_byte_limit_pushes_back_too() {
    let mut s = session(10, 100, 4);
    assert_eq!(
        s.enqueue(msg(b"1234", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
        Ok(Queued::Normally)
    );
    assert_eq!(
        s.enqueue(msg(b"1", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
        Ok(Queued::OverLimit)
    );
}

#[test]
fn bytes_in_flight_count_against_the_byte_limit_until_acknowledged() {
    // A wide window must not widen what a session holds: sent but unacknowledged payloads
    // still count, so --max-queued-bytes bounds queue and window together.
    let mut s = session(1000, 1000, 8);
    s.enqueue(msg(b"1234", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    s.enqueue(msg(b"5678", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    drain(&mut s); // both in flight now, neither acknowledged
    s.detach(1);
    assert_eq!(
        s.enqueue(msg(b"9", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
        Err(Dropped::QueueFull)
    );
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(
        s.enqueue(msg(b"9", QoS::AtLeastOnce), QoS::AtLeastOnce, false),
        Ok(Queued::Normally)
    );
}

#[test]
fn an_offline_session_drops_qos1_at_the_limit() {
    let mut s = session(10, 2, 1000);
    s.detach(1);
    qos1(&mut s).unwrap();
    qos1(&mut s).unwrap();
    assert_eq!(qos1(&mut s), Err(Dropped::QueueFull));
    assert!(!s.under_pressure());
}

#[test]
fn over_the_limit_is_bounded_too() {
    let mut s = session(10, 2, usize::MAX / 2);
    for _ in 0..2 + OVERSHOOT_MESSAGES {
        assert!(qos1(&mut s).is_ok());
    }
    assert_eq!(qos1(&mut s), Err(Dropped::QueueFull));
    assert_eq!(s.queued(), 2 + OVERSHOOT_MESSAGES);
    // And in bytes.
    let mut s = session(10, 100, 10);
    let big = Arc::new(Message::new(
        ByteStr::from("t"),
        Bytes::from(vec![0u8; OVERSHOOT_BYTES]),
        QoS::AtLeastOnce,
        false,
    ));
    assert_eq!(
        s.enqueue(big.clone(), QoS::AtLeastOnce, false),
        Ok(Queued::OverLimit)
    );
    assert_eq!(
        s.enqueue(big, QoS::AtLeastOnce, false),
        Err(Dropped::QueueFull)
    );
}

#[test]
fn what_another_shard_sent_is_taken_past_the_overshoot() {
    // Routed there before its shard heard of the pressure, and acknowledged: the mesh's
    // in-flight budget bounds it, not the overshoot.
    let mut s = session(10, 2, usize::MAX / 2);
    for _ in 0..2 + OVERSHOOT_MESSAGES {
        assert!(qos1(&mut s).is_ok());
    }
    assert_eq!(qos1(&mut s), Err(Dropped::QueueFull));
    let from_shard = |s: &mut Session| {
        s.enqueue_shared(
            msg(b"x", QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false,
            0,
            None,
            Arrival::FromShard,
        )
    };
    assert_eq!(from_shard(&mut s), Ok(Queued::Normally));
    assert_eq!(s.queued(), 3 + OVERSHOOT_MESSAGES);
    // Not for an offline session: that drops at the limit (as a stalled subscriber does).
    s.detach(1);
    assert_eq!(from_shard(&mut s), Err(Dropped::QueueFull));
}

#[test]
fn a_subscriber_without_progress_for_the_stall_timeout_is_stalled_until_it_reads() {
    let mut s = session(1, 2, 1000);
    qos1(&mut s).unwrap();
    qos1(&mut s).unwrap();
    assert_eq!(qos1(&mut s), Ok(Queued::OverLimit));
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    assert!(!s.check_stalled(start + timeout / 2));
    // An acknowledgement is progress: the clock starts again.
    drain(&mut s);
    assert_eq!(s.on_puback(1), Ack::Done);
    let later = start + timeout + Duration::from_secs(1);
    assert!(!s.check_stalled(later), "progress since the last look");
    assert!(!s.check_stalled(later + timeout / 2));
    assert!(
        s.check_stalled(later + timeout),
        "no progress for the timeout"
    );
    assert!(
        !s.under_pressure(),
        "a stalled subscriber holds nobody back"
    );
    assert_eq!(
        qos1(&mut s),
        Err(Dropped::QueueFull),
        "and loses its new messages"
    );
    // It reads again: live again, and the pressure can be raised again.
    s.note_progress();
    assert_eq!(qos1(&mut s), Ok(Queued::OverLimit));
}

#[test]
fn acknowledgements_of_the_wrong_kind_are_told_apart_from_unknown_ids() {
    let mut s = session(10, 10, 1000);
    qos1(&mut s).unwrap(); // id 1, QoS 1
    s.enqueue(msg(b"y", QoS::ExactlyOnce), QoS::ExactlyOnce, false)
        .unwrap(); // id 2, QoS 2
    drain(&mut s);
    assert_eq!(s.on_pubrec(1), Ack::WrongKind, "PUBREC for QoS 1");
    assert_eq!(s.on_pubcomp(1), Ack::WrongKind, "PUBCOMP for QoS 1");
    assert_eq!(s.on_puback(2), Ack::WrongKind, "PUBACK for QoS 2");
    assert_eq!(s.on_pubcomp(2), Ack::WrongKind, "PUBCOMP before PUBREC");
    assert_eq!(s.on_pubrec(2), Ack::Done);
    assert_eq!(
        s.on_puback(2),
        Ack::WrongKind,
        "PUBACK where PUBCOMP is due"
    );
    assert_eq!(
        s.on_pubrec(2),
        Ack::WrongKind,
        "PUBREC where PUBCOMP is due"
    );
    assert_eq!(s.on_puback(9), Ack::NotInFlight);
    assert_eq!(s.on_pubrec(9), Ack::NotInFlight);
    // Nothing of the wrong kind changed what is owed.
    assert_eq!(s.inflight(), 2);
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(s.on_pubcomp(2), Ack::Done);
    assert_eq!(s.inflight(), 0);
}

#[test]
fn qos1_window_limits_what_is_in_flight() {
    let mut s = session(2, 10, 1000);
    for _ in 0..3 {
        s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
            .unwrap();
    }
    // Two PUBLISH QoS 1 with ids 1 and 2; the third waits for the window.
    assert_eq!(
        drain(&mut s),
        [
            0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x', //
            0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x02, b'x',
        ]
    );
    assert_eq!((s.inflight(), s.queued()), (2, 1));
    assert!(!s.has_sendable());
    assert_eq!(s.on_puback(7), Ack::NotInFlight, "unknown id is ignored");
    assert_eq!(s.on_puback(1), Ack::Done);
    assert!(s.has_sendable());
    assert_eq!(
        drain(&mut s),
        [0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x03, b'x']
    );
}

#[test]
fn delivered_qos_is_the_one_asked_for_not_the_published_one() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"x", QoS::ExactlyOnce), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(drain(&mut s)[0], 0x32);
}

#[test]
fn qos2_outgoing_flow() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"x", QoS::ExactlyOnce), QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(
        drain(&mut s),
        [0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x']
    );
    assert_eq!(
        s.on_pubcomp(1),
        Ack::WrongKind,
        "PUBCOMP before PUBREC completes nothing"
    );
    assert_eq!(
        s.on_puback(1),
        Ack::WrongKind,
        "PUBACK for a QoS 2 delivery"
    );
    s.on_pubrec(1);
    assert_eq!(s.inflight(), 1);
    assert_eq!(s.on_pubcomp(1), Ack::Done);
    assert_eq!(s.inflight(), 0);
}

#[test]
fn resumed_session_resends_publish_with_dup_and_pubrel_in_order() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"a", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    s.enqueue(msg(b"b", QoS::ExactlyOnce), QoS::ExactlyOnce, false)
        .unwrap();
    drain(&mut s);
    s.on_pubrec(2); // second now waits for PUBCOMP: a PUBREL is what must be resent
    s.detach(1);
    s.attach(2);
    assert_eq!(
        drain(&mut s),
        [
            0x3a, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'a', // PUBLISH QoS 1 DUP id 1
            0x62, 0x02, 0x00, 0x02, // PUBREL id 2
        ]
    );
    // Acknowledging after the resend leaves nothing to resend.
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(s.on_pubcomp(2), Ack::Done);
    assert!(!s.has_sendable());
}

#[test]
fn ack_before_resend_cancels_that_resend() {
    let mut s = session(10, 10, 1000);
    for _ in 0..2 {
        s.enqueue(msg(b"a", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
            .unwrap();
    }
    drain(&mut s);
    s.detach(1);
    s.attach(2);
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(
        drain(&mut s),
        [0x3a, 0x06, 0x00, 0x01, b't', 0x00, 0x02, b'a']
    );
}

#[test]
fn packet_ids_wrap_and_never_reuse_one_in_flight() {
    let mut s = session(65_535, 70_000, usize::MAX);
    // Id 1 stays unacknowledged while 65,534 others come and go.
    s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    drain(&mut s);
    for id in 2..=u16::MAX {
        s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
            .unwrap();
        drain(&mut s);
        assert_eq!(s.on_puback(id), Ack::Done);
    }
    // The next id would be 1 again: it waits until 1 is acknowledged.
    s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    assert!(!s.has_sendable());
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(drain(&mut s)[5..7], [0x00, 0x01]);
}

#[test]
fn incoming_qos2_is_forwarded_once_until_released() {
    let mut s = session(10, 10, 1000);
    assert!(s.on_incoming_qos2(7));
    assert!(!s.on_incoming_qos2(7), "duplicate before PUBREL");
    s.on_pubrel(7);
    assert!(s.on_incoming_qos2(7), "the id is free again after PUBREL");
}

#[test]
fn a_new_connection_kicks_the_old_one() {
    let mut s = session(10, 10, 1000);
    assert_eq!(s.kicked(1), None);
    s.attach(2);
    // Attached while connected, the session continues (no will for the old connection).
    assert_eq!(s.kicked(1), Some(Kick::Continued));
    assert_eq!(s.kicked(2), None);
    assert!(
        !s.detach(1),
        "the old connection no longer owns the session"
    );
    s.kick(Kick::Shutdown);
    assert_eq!(s.kicked(2), Some(Kick::Shutdown));
}

#[test]
fn control_packets_keep_their_place_in_the_queue() {
    let mut s = session(10, 10, 1000);
    s.enqueue(msg(b"x", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    s.enqueue_control(Outbound::UnsubAck(crate::protocol::UnsubAck::new(9)));
    assert_eq!(
        drain(&mut s),
        [0x30, 0x04, 0x00, 0x01, b't', b'x', 0xb0, 0x02, 0x00, 0x09]
    );
}

#[test]
fn a_suback_passes_messages_that_wait_for_the_window() {
    // A client that waits for its SUBACK before acknowledging (a bridge resubscribing on a
    // resumed session) must get it even when the window is full of messages to it.
    let mut s = session(1, 10, 1000);
    for _ in 0..3 {
        s.enqueue(msg(b"x", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
            .unwrap();
    }
    assert_eq!(
        drain(&mut s),
        [0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x']
    );
    assert!(!s.has_sendable());
    s.enqueue_control(Outbound::UnsubAck(crate::protocol::UnsubAck::new(9)));
    assert!(s.has_sendable());
    assert_eq!(drain(&mut s), [0xb0, 0x02, 0x00, 0x09]);
    assert!(!s.has_sendable());
    // The messages keep their order behind it.
    assert_eq!(s.on_puback(1), Ack::Done);
    assert_eq!(
        drain(&mut s),
        [0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x02, b'x']
    );
    assert_eq!(s.queued(), 1);
}

#[test]
fn large_payloads_are_shared_not_copied() {
    let limits = SessionLimits {
        max_inflight: 10,
        max_queued_messages: 10,
        max_queued_bytes: 1000,
        queue_qos0: false,
        share_payloads_from: 4,
        stall_timeout: std::time::Duration::from_secs(10),
    };
    let id = SubscriberId {
        durable: false,
        shard: ShardId(0),
        slot: 0,
        generation: 1,
    };
    let mut s = Session::new(ByteStr::from("c"), id, true, std::rc::Rc::new(limits));
    s.attach(1);
    let big = msg(b"LARGE", QoS::AtLeastOnce);
    s.enqueue(msg(b"abc", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    s.enqueue(big.clone(), QoS::AtMostOnce, false).unwrap();
    s.enqueue(big.clone(), QoS::AtLeastOnce, true).unwrap();
    s.enqueue_control(Outbound::UnsubAck(crate::protocol::UnsubAck::new(9)));
    let mut out = OutputQueue::default();
    assert_eq!(s.fill(&mut out, usize::MAX), 4);
    // Only the small payload and the headers were copied; the large one is referenced twice.
    assert_eq!(out.encoded().len(), 8 + 5 + 7 + 4);
    let mut slices = [std::io::IoSlice::new(&[]); 8];
    let n = out.io_slices(&mut slices);
    assert!(slices[..n]
        .iter()
        .any(|s| s.as_ptr() == big.payload.as_ptr()));
    assert_eq!(
        written(&mut out),
        [
            0x30, 0x06, 0x00, 0x01, b't', b'a', b'b', b'c', // PUBLISH QoS 0 "abc", copied
            0x30, 0x08, 0x00, 0x01, b't', // PUBLISH QoS 0 header ...
            b'L', b'A', b'R', b'G', b'E', // ... and its shared payload
            0x33, 0x0a, 0x00, 0x01, b't', 0x00, 0x01, // PUBLISH QoS 1 RETAIN id 1 header ...
            b'L', b'A', b'R', b'G', b'E', // ... and the same payload again
            0xb0, 0x02, 0x00, 0x09, // UNSUBACK in its place
        ]
    );
    // A resend after reconnect shares it too, with DUP set.
    s.detach(1);
    s.attach(2);
    s.fill(&mut out, usize::MAX);
    assert_eq!(out.encoded().len(), 7);
    assert_eq!(
        written(&mut out),
        [0x3b, 0x0a, 0x00, 0x01, b't', 0x00, 0x01, b'L', b'A', b'R', b'G', b'E']
    );
}

#[test]
fn a_message_encoded_once_is_copied_as_is_to_qos0_live_forwards() {
    let m = Message::new(
        ByteStr::from("t"),
        Bytes::from_static(b"hi"),
        QoS::AtLeastOnce,
        false,
    );
    m.encode_qos0_frame();
    assert_eq!(
        m.qos0_frame().unwrap()[..],
        [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']
    );
    // A sentinel frame shows which deliveries copy the frame and which encode their own.
    let m = Arc::new(
        Message::new(
            ByteStr::from("t"),
            Bytes::from_static(b"hi"),
            QoS::AtLeastOnce,
            false,
        )
        .with_qos0_frame(Bytes::from_static(b"FRAME")),
    );
    let mut s = session(10, 10, 1000);
    s.enqueue(m.clone(), QoS::AtMostOnce, false).unwrap();
    s.enqueue(m.clone(), QoS::AtMostOnce, true).unwrap(); // retained: RETAIN 1, own header
    s.enqueue(m.clone(), QoS::AtLeastOnce, false).unwrap(); // QoS 1: own packet id
    assert_eq!(
        drain(&mut s),
        [
            b'F', b'R', b'A', b'M', b'E', //
            0x31, 0x05, 0x00, 0x01, b't', b'h', b'i', //
            0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x01, b'h', b'i',
        ]
    );
}

/// MQTT 5 subscribers share a frame of their own (with the forwarded properties) when the
/// 3.1.1 one was made; one with a Subscription Identifier encodes its own PUBLISH.
#[test]
fn mqtt5_subscribers_share_a_qos0_frame_with_the_forwarded_properties() {
    let v5 = crate::broker::mesh::V5Message {
        // User Property k=v
        properties: Bytes::from_static(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']),
        expires_at: None,
    };
    let m = Arc::new(
        Message::new(
            ByteStr::from("t"),
            Bytes::from_static(b"hi"),
            QoS::AtMostOnce,
            false,
        )
        .with_v5(Some(Box::new(v5))),
    );
    // Not worth sharing (no 3.1.1 frame): no v5 frame either.
    assert!(m.qos0_frame_v5().is_none());
    m.encode_qos0_frame();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x30, 0x0d, 0x00, 0x01, b't',                 // PUBLISH QoS 0, topic "t"
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // properties: User Property k=v
        b'h', b'i',
    ];
    assert_eq!(&m.qos0_frame_v5().unwrap()[..], expected);
    let mut s = session(10, 10, 1000);
    s.peer.level = crate::protocol::ProtocolLevel::V5;
    s.enqueue(m.clone(), QoS::AtMostOnce, false).unwrap();
    s.enqueue_as(m.clone(), QoS::AtMostOnce, false, 5).unwrap();
    let out = drain(&mut s);
    assert_eq!(&out[..expected.len()], expected);
    #[rustfmt::skip]
    assert_eq!(&out[expected.len()..], &[
        0x30, 0x0f, 0x00, 0x01, b't',
        0x09, 0x0b, 0x05,                               // Subscription Identifier 5 first
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        b'h', b'i',
    ]);
}

/// One session per client, connected or not: keep it small (see `parking` for the rest of an
/// idle connection's cost). MQTT 5 added 24 bytes (the client's limits, the expiry, the
/// discard counts) to the 320 of 3.1.1.
#[test]
fn a_session_stays_small() {
    let size = std::mem::size_of::<Session>();
    assert!(size <= 344, "Session is {size} bytes");
}

/// A session the journal kept: its message in flight goes again first, with DUP and its packet
/// id (PUBREL where its PUBREC came), then the queue, numbered on from the last id it used
/// even though that message completed: a message sent just before a crash, whose `Sent` was
/// not yet on disk, gets the same id again and a QoS 2 receiver takes it as the repeat it is.
#[test]
fn a_restored_session_resends_in_order_and_numbers_on_from_its_last_id() {
    use crate::store::{StoredInflight, StoredMessage, StoredSession};
    let stored_msg = |seq: u64, qos: QoS| StoredMessage {
        seq,
        topic: ByteStr::from("t"),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        extras: Default::default(),
    };
    let stored = StoredSession {
        client_id: ByteStr::from("c"),
        inflight: [
            StoredInflight {
                packet_id: 7,
                message: stored_msg(1, QoS::AtLeastOnce),
                received: false,
            },
            StoredInflight {
                packet_id: 8,
                message: stored_msg(2, QoS::ExactlyOnce),
                received: true,
            },
        ]
        .into(),
        queue: [stored_msg(3, QoS::ExactlyOnce)].into(),
        last_packet_id: 41,
        ..StoredSession::default()
    };
    let limits = session(10, 10, 1000).limits.clone();
    let id = SubscriberId {
        durable: true,
        shard: ShardId(0),
        slot: 0,
        generation: 1,
    };
    let mut s = Session::restore(id, limits, Some(5), stored, Instant::now());
    assert_eq!((s.stored_as(), s.queued(), s.inflight()), (Some(5), 1, 2));
    s.attach(2);
    assert_eq!(
        drain(&mut s),
        [
            0x3a, 0x06, 0x00, 0x01, b't', 0x00, 0x07, b'm', // PUBLISH QoS 1 DUP, id 7
            0x62, 0x02, 0x00, 0x08, // PUBREL 8
            0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x2a, b'm', // PUBLISH QoS 2, id 42
        ]
    );
    assert_eq!(s.take_sent().collect::<Vec<_>>(), [(3, 42)]);
    // The next message queued is numbered after the restored ones.
    s.enqueue(msg(b"n", QoS::AtLeastOnce), QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(s.last_seq(), 4);
}

#[test]
fn a_message_behind_a_closed_gate_waits_and_holds_back_what_follows() {
    use crate::broker::qos2_gate::Qos2Gate;
    use crate::store::Qos2Origin;
    let mut s = session(10, 10, 1000);
    let gate = Arc::new(Qos2Gate::new(Qos2Origin { shard: 0, reg: 1 }));
    let gated = Arc::new(
        Message::new(
            ByteStr::from("t"),
            Bytes::from_static(b"g"),
            QoS::ExactlyOnce,
            false,
        )
        .with_gate(gate.clone()),
    );
    s.enqueue(gated, QoS::ExactlyOnce, false).unwrap();
    s.enqueue(msg(b"after", QoS::AtMostOnce), QoS::AtMostOnce, false)
        .unwrap();
    assert!(!s.has_sendable());
    assert_eq!(drain(&mut s), Vec::<u8>::new(), "nothing passes the gate");
    assert!(s.at_closed_gate(), "the shard is told to wake it");
    // An UNSUBACK is not a message: it does not wait behind the gate.
    s.enqueue_control(Outbound::UnsubAck(crate::protocol::UnsubAck::new(9)));
    assert!(s.has_sendable());
    assert_eq!(drain(&mut s), [0xb0, 0x02, 0x00, 0x09]);
    assert!(s.at_closed_gate(), "still behind the gate");
    gate.open();
    assert!(s.has_sendable());
    let out = drain(&mut s);
    // PUBLISH QoS 2 "g" (packet id 1), then the QoS 0 one behind it.
    assert_eq!(&out[..8], &[0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'g']);
    assert_eq!(
        &out[8..],
        &[0x30, 0x08, 0x00, 0x01, b't', b'a', b'f', b't', b'e', b'r']
    );
    assert!(!s.at_closed_gate());
}
