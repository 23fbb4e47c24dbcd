//! The long-running tasks every shard runs besides its connections: draining the inbox,
//! retrying flushes into full inboxes, expiring sessions, the parking sweep, and the watch over
//! subscribers whose full queues hold publishers back.

use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::mesh::InboxReceiver;
use super::metrics::add;
use super::shard::Shard;

/// Removes sessions that stayed disconnected longer than their expiry: an MQTT 5 client's
/// Session Expiry Interval, `--session-expiry` for 3.1.1 persistent sessions. Looks once a
/// second (or more often for a shorter `--session-expiry`); a shard without sessions only
/// wakes.
pub async fn expire_sessions(shard: Rc<Shard>) {
    let interval = shard
        .config
        .session_expiry
        .map_or(Duration::from_secs(1), |e| {
            (e / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
        });
    loop {
        glommio::timer::sleep(interval).await;
        if shard.metrics.sessions.get() == 0 {
            continue;
        }
        let now = Instant::now();
        let expired: Vec<_> = shard
            .sessions
            .borrow()
            .all()
            .filter(|s| s.borrow().expired(now))
            .cloned()
            .collect();
        for session in expired {
            debug!(client = %session.borrow().client_id, "session expired");
            add(&shard.metrics.sessions_expired, 1);
            shard.expired_in_directory(&session.borrow());
            shard.remove_session(&session);
        }
        shard.flush();
    }
}

/// Starts a parking epoch every `--park-idle-after` and wakes the unparked connections, so
/// those that stayed silent through the whole previous epoch park (see `parking`). Sleeps
/// while every connection is parked, so an idle broker costs nothing.
pub async fn sweep_idle_connections(shard: Rc<Shard>) {
    let Some(lot) = &shard.parking else {
        return;
    };
    loop {
        std::future::poll_fn(|cx| lot.poll_sweep_needed(cx)).await;
        glommio::timer::sleep(lot.after).await;
        lot.next_epoch();
        for session in shard.sessions.borrow().all() {
            let mut s = session.borrow_mut();
            if !s.parked {
                s.wake();
            }
        }
    }
}

/// Drains the shard's inbox. Sleeps on the doorbell when the inbox is empty, so an idle shard
/// costs nothing; yields after a bounded amount of work so connections keep being served.
pub async fn drain_inbox(shard: Rc<Shard>, inbox: InboxReceiver) {
    use futures_lite::AsyncReadExt;
    use std::os::fd::{FromRawFd, IntoRawFd};
    let mesh = shard.mesh();
    let InboxReceiver { rx, bell } = inbox;
    // SAFETY: `bell` is the open, non-blocking read end of the doorbell socketpair, ours alone.
    let mut bell = unsafe { glommio::net::UnixStream::from_raw_fd(bell.into_raw_fd()) };
    let mut rings = [0u8; 64];
    loop {
        let mut handled = 0;
        while handled < 256 {
            match rx.try_recv() {
                Ok(msg) => {
                    mesh.taken(shard.id, &msg);
                    shard.handle(msg);
                    handled += 1;
                }
                Err(_) => break,
            }
        }
        shard.flush();
        if handled == 256 {
            glommio::yield_if_needed().await;
            continue;
        }
        if mesh.going_to_sleep(shard.id, &rx) {
            // Any number of rings (or a stale one) just means: look at the inbox again.
            if bell.read(&mut rings).await.is_err() {
                return; // the mesh is gone: the broker is stopping
            }
            mesh.awake(shard.id);
        }
    }
}

/// Retries flushing while an inbox is full (the flush wakes the publishers once the backlog is
/// below the congestion limit). Sleeps when nothing waits, so it costs nothing in the common case.
pub async fn retry_stalled(shard: Rc<Shard>) {
    loop {
        std::future::poll_fn(|cx| {
            if shard.router.borrow().has_backlog() {
                Poll::Ready(())
            } else {
                *shard.stall_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        glommio::timer::sleep(Duration::from_micros(50)).await;
        // Also wakes the paused publishers once the backlog is under the limit.
        shard.flush();
    }
}

/// Looks at this shard's subscribers under pressure (see `pressure`) a few times per
/// `--stall-timeout`: one that made no progress for that long is stalled, and the publishers it
/// held back go on. Sleeps while no subscriber is under pressure.
pub async fn watch_stalls(shard: Rc<Shard>) {
    let tick =
        (shard.config.stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        std::future::poll_fn(|cx| shard.pressure.poll_watch_needed(cx)).await;
        glommio::timer::sleep(tick).await;
        let now = Instant::now();
        for id in shard.pressure.watched() {
            let session = shard.sessions.borrow().get(id.slot, id.generation).cloned();
            let stalled = match &session {
                Some(s) => s.borrow_mut().check_stalled(now),
                // Gone without being relieved (cannot happen: removal relieves); let go anyway.
                None => true,
            };
            if stalled {
                if let Some(s) = &session {
                    debug!(client = %s.borrow().client_id, "subscriber stalled: its publishers go on, its messages are dropped");
                    add(&shard.metrics.subscribers_stalled, 1);
                }
                shard.release_pressure(id);
            }
        }
        shard.flush();
    }
}

/// With `--data-dir`: waits for the journal on behalf of what waits for it without a task of
/// its own: other shards' messages to confirm (see `durability`) and SUBACK/UNSUBACK replies.
/// Sleeps while nothing waits.
pub async fn confirm_durable(shard: Rc<Shard>) {
    let Some(journal) = shard.journal() else {
        return;
    };
    loop {
        let position = std::future::poll_fn(|cx| {
            let request = shard.durable_requests.borrow().front().map(|r| r.0);
            if request.is_none() {
                *shard.durable_requests_waker.borrow_mut() = Some(cx.waker().clone());
            }
            let oldest = shard.durability.poll_oldest(journal.durable_position(), cx);
            match (request, oldest) {
                (Some(a), Poll::Ready(b)) => Poll::Ready(a.min(b)),
                (Some(a), Poll::Pending) => Poll::Ready(a),
                (None, Poll::Ready(b)) => Poll::Ready(b),
                (None, Poll::Pending) => Poll::Pending,
            }
        })
        .await;
        journal.durable(position).await;
        let durable = journal.durable_position();
        shard.durability.advance(durable);
        loop {
            let token = {
                let mut requests = shard.durable_requests.borrow_mut();
                match requests.front() {
                    Some(&(at, token)) if at <= durable => {
                        requests.pop_front();
                        token
                    }
                    _ => break,
                }
            };
            shard.request_applied(token, Vec::new());
        }
        shard.flush();
    }
}

/// Longest a stopping shard waits for the confirmations its handed-on records need, and for
/// the other shards to finish theirs.
const HAND_ON_AT_STOP: Duration = Duration::from_secs(5);

/// At a stop, with `--data-dir`, before the final sync: waits until the records this shard
/// keeps *handed on* (sessions that gave their shared messages to members elsewhere) are
/// appended, which takes the other shards' confirmations, then until every shard got that far
/// (see `stop_barrier`). Both waits serve the other shards meanwhile and are bounded; what is
/// still handed on after them stays where it was in the log (the messages come back at the
/// next start, also where they went: at least once, as after a crash).
pub async fn finish_handing_on(shard: &Shard) {
    let start = Instant::now();
    while shard.durability.has_handed_on() && start.elapsed() < HAND_ON_AT_STOP {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    if shard.durability.has_handed_on() {
        warn!(
            shard = shard.id.0,
            "stopping before other shards confirmed shared messages handed on to them; they may be delivered again after the next start"
        );
    }
    let mesh = shard.mesh();
    if !mesh.stop_barrier().arrive_and_wait(HAND_ON_AT_STOP).await {
        warn!(
            shard = shard.id.0,
            "stopping before every shard finished handing shared messages on"
        );
    }
}

/// With a cluster: tells the cluster thread that messages from other nodes were handled here
/// once what they wrote is durable (`--data-dir`) and what they queued for offline sessions is
/// copied (see `queue_copies`), oldest first (see `Shard::handled_from_cluster`). Sleeps
/// while none waits.
pub async fn report_from_cluster(shard: Rc<Shard>) {
    let Some(port) = shard.cluster.get() else {
        return;
    };
    loop {
        let (number, ticket) =
            std::future::poll_fn(|cx| shard.durability.poll_cluster_inbox(cx)).await;
        until_durable(&shard, &ticket).await;
        shard.durability.pop_cluster_inbox();
        port.handled(number);
        // (No flush follows here.)
        port.wake_handled();
    }
}

/// Returns once everything `ticket` names is durable.
async fn until_durable(shard: &Shard, ticket: &super::durability::Ticket) {
    std::future::poll_fn(|cx| {
        if shard.poll_ticket(ticket, cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// With `--data-dir`: appends the records of sessions that handed shared messages on to other
/// members (their end, or the messages withdrawn) once what took the messages is durable (see
/// `durability`), oldest first. Sleeps while there are none.
pub async fn hand_on(shard: Rc<Shard>) {
    let Some(journal) = shard.journal() else {
        return;
    };
    loop {
        let ticket = std::future::poll_fn(|cx| shard.durability.poll_handed_on(cx)).await;
        until_durable(&shard, &ticket).await;
        for record in shard.durability.take_handed_on() {
            journal.append(&record);
        }
    }
}
