//! With `--data-dir`, acknowledgements are promises about the disk: these tests make the disk
//! fail (the storage layer's full-disk fault hook: every log commit fails with ENOSPC while the
//! counter is above 0) and check that PUBACK, PUBREC's PUBREL and SUBACK wait for it, in order,
//! while what needs no disk goes on; and that all of it comes once writes succeed again.
//! Run with 1 shard and with 2 (publisher and subscriber on different shards: the wait crosses
//! shards).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use surgemq::protocol::QoS;

/// Long enough that a PUBACK sent without waiting would surely have arrived.
const MUST_WAIT: Duration = Duration::from_millis(800);

struct DiskBroker {
    broker: Broker,
    full: Arc<AtomicU32>,
    dir: PathBuf,
}

impl DiskBroker {
    fn start(shards: usize, name: &str) -> DiskBroker {
        let dir = std::env::temp_dir().join(format!(
            "surgemq-faults-{name}-{shards}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let full = Arc::new(AtomicU32::new(0));
        let broker = Broker::with_config(surgemq::broker::BrokerConfig {
            shards,
            data_dir: Some(dir.clone()),
            full_disk_fault: Some(full.clone()),
            ..test_config()
        });
        DiskBroker { broker, full, dir }
    }

    fn disk_full(&self, full: bool) {
        self.full
            .store(if full { u32::MAX } else { 0 }, Ordering::Relaxed);
    }
}

impl Drop for DiskBroker {
    fn drop(&mut self) {
        self.disk_full(false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_puback_waits_for_a_full_disk_and_keeps_its_order() {
    with_shards(|shards| {
        let b = DiskBroker::start(shards, "puback");
        let (sub_id, pub_id) = b.broker.ids_apart("sub", "pub");
        let mut durable_sub = b
            .broker
            .connect_with(&ConnectBuilder::new(&sub_id).clean(false));
        durable_sub.subscribe(1, &[("disk/t", 1)]);
        let mut clean_sub = b.broker.connect("clean-sub");
        clean_sub.subscribe(1, &[("clean/t", 1)]);
        let mut publisher = b.broker.connect(&pub_id);

        b.disk_full(true);
        // Only clean sessions get it: nothing to write, acknowledged at once.
        publisher.publish1("clean/t", b"no disk needed", false, 1);
        let (p, _) = clean_sub.next_publish();
        clean_sub.ack(&p);
        // A persistent subscriber gets it: the PUBACK waits for the disk...
        publisher.send(&publish("disk/t", b"kept", 1, false, false, 2));
        // ...and so does the next one, which needs no disk: PUBACKs leave in order.
        publisher.send(&publish("clean/t", b"after", 1, false, false, 3));
        assert_eq!(
            publisher.next_frame_within(MUST_WAIT),
            None,
            "PUBACK sent while the disk was full ({shards} shards)"
        );
        // Delivery itself does not wait.
        let (p, _) = clean_sub.next_publish();
        assert_eq!(&p.payload[..], b"after");

        b.disk_full(false);
        publisher.expect_bytes(&puback(2));
        publisher.expect_bytes(&puback(3));
        let (p, _) = durable_sub.next_publish();
        assert_eq!((&p.payload[..], p.qos), (&b"kept"[..], QoS::AtLeastOnce));
    });
}

#[test]
fn a_pubrel_waits_until_the_pubrec_is_on_disk() {
    with_shards(|shards| {
        let b = DiskBroker::start(shards, "pubrel");
        let (sub_id, pub_id) = b.broker.ids_apart("sub", "pub");
        let mut sub = b
            .broker
            .connect_with(&ConnectBuilder::new(&sub_id).clean(false));
        sub.subscribe(1, &[("q2/t", 2)]);
        let mut publisher = b.broker.connect(&pub_id);
        publisher.publish2("q2/t", b"exactly once", false, 7);
        let (p, _) = sub.next_publish();
        assert_eq!(p.qos, QoS::ExactlyOnce);

        b.disk_full(true);
        sub.send(&pubrec(p.packet_id));
        assert_eq!(
            sub.next_frame_within(MUST_WAIT),
            None,
            "PUBREL sent before the PUBREC was on disk ({shards} shards)"
        );
        b.disk_full(false);
        sub.expect_bytes(&pubrel(p.packet_id));
        sub.send(&pubcomp(p.packet_id));
        sub.ping();
    });
}

#[test]
fn a_suback_waits_until_the_subscription_is_on_disk() {
    with_shards(|shards| {
        let b = DiskBroker::start(shards, "suback");
        let mut sub = b
            .broker
            .connect_with(&ConnectBuilder::new(&b.broker.id_on("sub", 0)).clean(false));
        b.disk_full(true);
        sub.send(&subscribe(3, &[("s/t", 1)]));
        assert_eq!(
            sub.next_frame_within(MUST_WAIT),
            None,
            "SUBACK sent before the subscription was on disk ({shards} shards)"
        );
        b.disk_full(false);
        sub.expect_bytes(&[0x90, 0x03, 0x00, 0x03, 0x01]);
        // A clean session's subscription writes nothing: no wait even on a full disk.
        let mut clean = b.broker.connect(&b.broker.id_on("clean", 0));
        b.disk_full(true);
        clean.subscribe(4, &[("s/t", 1)]);
    });
}

/// A client resuming its session before its will's delay ran out cancels the will. Its CONNACK
/// waits until the cancellation is on disk: sent earlier, a crash right after it would bring
/// the will back at the restart and publish it for a client that had returned.
#[test]
fn a_connack_that_cancels_a_delayed_will_waits_for_the_disk() {
    let b = DiskBroker::start(1, "will-cancel");
    let session = |will: bool| {
        let mut expiry = vec![0x11]; // Session Expiry Interval 3600 s
        expiry.extend_from_slice(&3600u32.to_be_bytes());
        let connect = ConnectBuilder::v5("will-back", &expiry).clean(false);
        match will {
            // Will Delay Interval 30 s
            true => connect
                .will("wills/back", b"late", 1, false)
                .will_properties(&[0x18, 0x00, 0x00, 0x00, 0x1e]),
            false => connect,
        }
    };
    b.broker
        .connect_expecting(&session(true), &connack_v5(false))
        .crash_and_wait();

    b.disk_full(true);
    let mut resumed = b.broker.socket();
    resumed.send(&session(false).build());
    assert_eq!(
        resumed.next_frame_within(MUST_WAIT),
        None,
        "CONNACK sent before the will's cancellation was on disk"
    );
    b.disk_full(false);
    resumed.expect_bytes(&connack_v5(true));
}
