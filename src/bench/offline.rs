//! `--offline`: the subscribers' side of a run against sessions that are away while the load
//! is published, which is how a broker's persistence is used (devices that come back later)
//! and what makes it work hardest: every message is queued, kept, and sent on reconnect.
//!
//! A subscriber connects with CleanSession = 0, subscribes, and disconnects (it waits until
//! the broker has closed the connection, so the session is offline before anyone publishes).
//! Publishers then run the whole load; their window counts only the broker's
//! acknowledgements. Once every publish is acknowledged (or nothing moved for `--drain`), the
//! coordinator moves the run to [`Phase::Reconnecting`]: each subscriber connects again with
//! CleanSession = 0, expects the broker to say it kept the session (Session Present), and
//! receives what was queued, acknowledging it as it comes, with the same per-stream tracking as
//! an online run, so what is missing, duplicated or reordered is counted the same way. The
//! drain rate is measured from the moment the subscribers are told to reconnect to the last
//! message received.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_lite::future::or;

use super::client::{
    client_id, failed_setup, remove_session, setup, Client, ClientResult, ClientSpec,
};
use super::config::Plan;
use super::conn::Conn;
use super::shared::{Local, Phase, Shared};
use super::tracker::SubResult;

/// How long a subscriber waits for the broker to close its connection after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs one `--offline` subscriber from its first connect to the removal of its session.
pub async fn run_subscriber(
    spec: ClientSpec,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    local: Rc<Local>,
) -> ClientResult {
    let timeout = plan.config.setup_timeout;
    let setup = or(async { Some(setup(spec, &plan).await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await;
    match setup {
        Some(Ok(conn)) => conn.close(CLOSE_TIMEOUT).await,
        Some(Err(e)) => return failed_setup(spec, &plan, &shared, e).await,
        None => {
            let e = format!("no SUBACK/CONNACK within {timeout:?}");
            return failed_setup(spec, &plan, &shared, e).await;
        }
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);

    // Away while the publishers run.
    let phase = poll_fn(|cx| {
        let phase = local.control.phase();
        if phase >= Phase::Reconnecting {
            return Poll::Ready(phase);
        }
        // The phase changes on this thread (the watcher task), so nothing is missed between
        // the look and the registration.
        local.control.register(spec.slot, cx.waker());
        Poll::Pending
    })
    .await;
    if phase == Phase::Finished {
        // The run was abandoned before the subscribers were due back.
        remove_session(&plan, spec).await;
        return ClientResult::default();
    }

    let reconnect = or(reconnect(spec, &plan), async {
        glommio::timer::sleep(timeout).await;
        Err(format!("no CONNACK within {timeout:?} on reconnect"))
    })
    .await;
    let result = match reconnect {
        Ok(conn) => {
            let mut client = Client::new(spec, &plan, shared.clone(), local, conn);
            if let Err(e) = client.run().await {
                shared.error(format!("client {}: {e}", spec.index));
            }
            client.finish().await
        }
        Err(e) => {
            shared.error(format!("client {}: {e}", spec.index));
            // Nothing was received: every message of every stream counts as missing.
            ClientResult {
                publisher: None,
                subscriber: spec.subscriber.map(|index| SubResult::new(index, &plan)),
            }
        }
    };
    remove_session(&plan, spec).await;
    result
}

/// Connects again with CleanSession = 0; the broker must still have the session (and with it
/// the subscription and the queued messages), which starts coming right after the CONNACK.
async fn reconnect(spec: ClientSpec, plan: &Plan) -> Result<Conn, String> {
    let c = &plan.config;
    let addr = super::client::addr_of(plan, spec);
    let mut conn = Conn::connect(addr, c.setup_timeout, plan.dial.as_ref())
        .await
        .map_err(|e| format!("reconnect to {addr}: {e}"))?;
    let id = client_id(plan, spec);
    let present = conn
        .handshake(&id, false, c.username.as_deref(), c.password.as_deref())
        .await?;
    if !present {
        return Err(
            "reconnected, but the broker no longer had the session (CONNACK Session \
                    Present = 0): everything queued for it is lost"
                .into(),
        );
    }
    Ok(conn)
}
