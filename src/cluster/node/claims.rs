//! Client id claims: a connect here tells the other nodes (`$SMQ.claim`, stamped by the
//! node's `ClaimClock`), and a claim from another node ends this node's connection of that
//! client, or hands its session over when the client resumes it there (`handoff`).

use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::warn;

use super::*;

impl Node {
    pub(super) fn claim_headers(&self, at: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE, self.incarnation.as_str());
        headers.insert(AT, at.to_string().as_str());
        headers
    }

    /// Tells the other nodes that a client connected here at `at`.
    pub(super) async fn claim(&self, client: &async_nats::Client, id: String, at: u64) {
        let headers = self.claim_headers(at);
        if let Err(e) = client
            .publish_with_headers(CLAIM, headers, Bytes::from(id))
            .await
        {
            warn!("cluster: cannot claim a client id: {e}");
        }
    }

    /// Another node took a client id: its session here ends, on its home shard, or, when the
    /// client resumes it there, goes over to that node (see `handoff`).
    pub(super) async fn claimed_elsewhere(
        &self,
        client: &async_nats::Client,
        m: async_nats::Message,
        directory: &directory::Directory,
    ) {
        let from = m.headers.as_ref().and_then(|h| h.get(NODE));
        if from.is_none_or(|n| n.as_str() == self.incarnation) {
            return;
        }
        let Ok(id) = std::str::from_utf8(&m.payload) else {
            return;
        };
        let Some(at) = m
            .headers
            .as_ref()
            .and_then(|h| h.get(AT))
            .and_then(|v| v.as_str().parse().ok())
        else {
            return;
        };
        // Whatever this host's clock says, a client connecting here from now on connected
        // after this claim.
        self.shared.claim_clock.observe(at);
        let home = crate::broker::home_shard(id, self.shards);
        let wants = m.headers.as_ref().and_then(handoff::wants_session);
        match (wants, m.reply) {
            (Some(username), Some(reply)) => {
                let taker = handoff::Taker {
                    client_id: id.to_string(),
                    username,
                    node: self.incarnation.clone(),
                };
                let stores = (directory.clone(), self.shared.clone());
                let (request, respond) = handoff::hand_over(client.clone(), reply, taker, stores);
                let msg = ShardMessage::ClaimedElsewhere(ByteStr::from(id), at, Some(request));
                if self.to_shard(home, msg).await {
                    tokio::spawn(respond);
                }
            }
            _ => {
                let msg = ShardMessage::ClaimedElsewhere(ByteStr::from(id), at, None);
                self.to_shard(home, msg).await;
            }
        }
    }
}
