//! Retained messages between nodes: a node that joins asks one other node for all of them
//! (`$SMQ.sync`, a queue group: one node answers), and answers such questions from others.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_lite::StreamExt;
use tracing::{info, warn};

use super::*;

/// How long a joining node waits for the next retained message from the node answering it.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Asks another node for the retained messages and hands them to the main loop (`to`);
/// gives up after [`SYNC_WAIT`] without one, or at once when no node answers. False when
/// the main loop is gone.
async fn fetch(client: &async_nats::Client, node: &str, to: &mpsc::Sender<Arrived>) -> bool {
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return true;
    };
    if client
        .publish_with_reply(SYNC, inbox, Bytes::new())
        .await
        .is_err()
    {
        return true;
    }
    let mut count = 0usize;
    loop {
        let next = tokio::time::timeout(SYNC_WAIT, replies.next()).await;
        let Ok(Some(m)) = next else { break };
        // The end, or NATS saying nobody answers (no other node yet).
        if m.status.is_some() || m.headers.as_ref().is_some_and(|h| h.get(END).is_some()) {
            break;
        }
        count += 1;
        let arrived = Arrived {
            subject: m.subject,
            headers: m.headers,
            payload: m.payload,
            group: None,
        };
        if to.send(arrived).await.is_err() {
            return false;
        }
    }
    if count > 0 {
        info!(node = %node, count, "cluster: retained messages fetched from another node");
    }
    true
}

impl Node {
    /// Asks another node for the retained messages (they reach a node only while it runs)
    /// and hands them to the main loop as they come (`to`, where messages from NATS go), in a
    /// task of their own so that the loop runs meanwhile: a node that starts while NATS is
    /// unreachable waits [`SYNC_WAIT`] for answers that cannot come, and resuming connects
    /// (a take), claims and publishes must not wait with it (they did: 3 s per resume). Then
    /// the task forwards the retained changes other nodes made since (`live`, subscribed
    /// before asking): after those fetched, as when the loop waited for them, so that an
    /// older copy fetched does not overwrite a newer change.
    pub(super) fn fetch_retained(
        &self,
        client: &async_nats::Client,
        live: async_nats::Subscriber,
        to: mpsc::Sender<Arrived>,
    ) {
        let (client, node) = (client.clone(), self.id.clone());
        tokio::spawn(async move {
            if fetch(&client, &node, &to).await {
                super::forward_all(live, to, None).await;
            }
        });
    }

    /// A joining node asked for the retained messages: every shard's, then an end marker.
    pub(super) async fn send_retained(&self, client: &async_nats::Client, reply: String) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for shard in 0..self.shards {
            let msg = ShardMessage::CollectRetained(tx.clone());
            if self.to_shard(ShardId(shard as u16), msg).await {
                asked += 1;
            }
        }
        drop(tx);
        let gathered = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for _ in 0..asked {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(part) => all.extend(part),
                    Err(_) => break,
                }
            }
            all
        })
        .await
        .unwrap_or_default();
        let origin = format!("{}/sync", self.incarnation);
        for (i, m) in gathered.iter().enumerate() {
            let meta = Meta {
                origin: &origin,
                seq: i as u64 + 1,
                qos: m.qos,
                key: 0,
                retain: true,
            };
            let mut headers = HeaderMap::new();
            headers.insert(META, meta.to_string().as_str());
            headers.insert(TOPIC, &*m.topic);
            if let Err(e) = client
                .publish_with_headers(reply.clone(), headers, m.payload.clone())
                .await
            {
                return warn!("cluster: cannot send retained messages: {e}");
            }
        }
        let mut end = HeaderMap::new();
        end.insert(END, "1");
        let _ = client.publish_with_headers(reply, end, Bytes::new()).await;
    }
}
