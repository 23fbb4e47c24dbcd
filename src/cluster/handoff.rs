//! Persistent sessions moving between nodes, over NATS: a client that resumes its session
//! makes its node ask the others for theirs, and a node that holds one hands it over (see
//! `broker::shard::handoff` for what travels, how copies are merged and how it is made live).
//!
//! The question is the client's claim itself (`$SMQ.claim`) with a reply subject and
//! [`TAKE`]: every node answers, a holder with the session's records (in chunks below the
//! NATS server's max payload, named by the node that sends them), the others with an empty
//! message, so the asking node knows when to stop listening without waiting out its timeout.
//! A node that is down cannot answer: after [`TAKE_WAIT`] the client goes on without what it
//! held, and the miss is counted. Sooner when NATS says the node is gone: every answer names
//! its node, and after [`PROBE_AFTER`] the nodes that have not answered are asked whether
//! they are there (`$SMQ.alive.<node>`, as `confirm` does for silent nodes); one that no
//! one answers for has no connection to NATS, so it never got the take and will not answer.
//! A node killed a moment ago (whose interest the others still remember for a while) then
//! holds a resume up for about [`PROBE_AFTER`], not [`TAKE_WAIT`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ahash::{AHashMap, AHashSet};
use async_nats::HeaderMap;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_lite::StreamExt;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use super::node::directory::{Directory, Unreadable};
use crate::broker::cluster_port::{
    answer, directory_copy_as_of, superseded_by, Answer, ClusterShared, HandOver, Held, Taken,
};
use crate::protocol::ByteStr;

/// On a claim: the claiming client resumes its session; the holder hands it over.
pub const TAKE: &str = "Smq-Take";
/// On a take: the user the client authenticated as (base64; absent: none).
const USER: &str = "Smq-User";
/// On a handed session's chunk: `INDEX COUNT`.
const CHUNK: &str = "Smq-Chunk";
/// On a handed session's chunk: the node (incarnation) that sends it.
const FROM: &str = "Smq-From";

/// How long a node asking for a session waits for the other nodes' answers (and for each
/// further chunk of a session being handed over).
pub const TAKE_WAIT: Duration = Duration::from_secs(1);
/// How long a resume that no node handed the session to goes on asking JetStream for the
/// session's copies while it cannot answer (a stream electing a leader): past it, a client
/// whose session this node does not hold is refused (server unavailable), not given a new
/// session that would tell it its subscriptions and messages were gone. Within the
/// connection's wait for the take (`broker::connection`), with [`TAKE_WAIT`].
const STORED_WAIT: Duration = Duration::from_millis(1500);
/// The pause between two attempts to read JetStream's copies.
const STORED_RETRY: Duration = Duration::from_millis(200);
/// How long a take waits for every node's answer before it asks NATS about the nodes that
/// have not answered (see the module docs).
const PROBE_AFTER: Duration = Duration::from_millis(150);
/// How long a node with no other node known yet listens for a holder anyway (it may have
/// joined a moment ago).
const ALONE_WAIT: Duration = Duration::from_millis(100);
/// How long a holder's shard has to answer with the session.
const HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// The headers of a take: [`TAKE`], and the user, if any.
pub fn take_headers(headers: &mut HeaderMap, username: Option<&str>) {
    headers.insert(TAKE, "1");
    if let Some(user) = username {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user);
        headers.insert(USER, encoded.as_str());
    }
}

/// Whether a claim asks for the session, and for which user's.
pub fn wants_session(headers: &HeaderMap) -> Option<Option<ByteStr>> {
    headers.get(TAKE)?;
    let Some(user) = headers.get(USER) else {
        return Some(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(user.as_str())
        .ok()?;
    Some(Some(ByteStr::from(String::from_utf8(bytes).ok()?.as_str())))
}

/// A take to send: the claim's `headers` (made by the claim path and [`take_headers`]),
/// whose session, and the nodes known to answer it (their names).
pub(super) struct Asked {
    pub headers: HeaderMap,
    pub client_id: String,
    pub known: Vec<String>,
}

/// Asks the other nodes for a client's session: publishes the take and answers with the
/// sessions the holders sent, once every known node answered or is gone from NATS, or
/// [`TAKE_WAIT`] passed.
pub(super) async fn take(
    client: async_nats::Client,
    asked: Asked,
    shared: Arc<ClusterShared>,
    answer: Answer<Taken>,
    stored: Stored,
) {
    let Asked {
        headers,
        client_id,
        known: known_nodes,
    } = asked;
    let held_here = stored.held != Held::Nothing;
    if !shared.nats_up.load(Ordering::Acquire) {
        // Cut off from NATS: no node can answer and JetStream is out of reach, so the client
        // goes on at once with what this node holds (waiting would only stall its connect
        // until the shard gives up). The claim still goes when NATS is back, so that no
        // other node keeps a connection of the client.
        info!(client = %client_id, "cluster: cut off from NATS; a resume takes what this node holds");
        answer.send(Taken {
            sessions: Vec::new(),
            superseded: None,
            unavailable: false,
        });
        let _ = client
            .publish_with_headers(super::wire::CLAIM, headers, client_id.into())
            .await;
        return;
    }
    let inbox = client.new_inbox();
    let mut replies = match client.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(client = %client_id, "cluster: cannot ask for a session: {e}");
            // Still claimed, so that no other node keeps a connection of the client.
            let _ = client
                .publish_with_headers(super::wire::CLAIM, headers, client_id.into())
                .await;
            return;
        }
    };
    if let Err(e) = client
        .publish_with_reply_and_headers(
            super::wire::CLAIM,
            inbox,
            headers,
            Bytes::from(client_id.clone()),
        )
        .await
    {
        warn!(client = %client_id, "cluster: cannot ask for a session: {e}");
        return;
    }
    let known = known_nodes.len();
    let wait = if known == 0 { ALONE_WAIT } else { TAKE_WAIT };
    let mut deadline = Instant::now() + wait;
    let mut answered = 0;
    // Each node answers on its own connection, so one node's chunks come in order; chunks
    // of two nodes may interleave, so they gather by the answering node.
    let mut chunks: AHashMap<String, BytesMut> = AHashMap::new();
    let mut sessions = Vec::new();
    let mut answered_by: AHashSet<String> = AHashSet::new();
    let mut gone: AHashSet<String> = AHashSet::new();
    // An answer that names no node comes from a version before answers did: who has not
    // answered is not known then, and no node is taken for gone.
    let mut unnamed = false;
    let mut probe_at = (known > 0).then(|| Instant::now() + PROBE_AFTER);
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::channel::<String>(known.max(1));
    loop {
        tokio::select! {
            m = timeout_at(deadline, replies.next()) => {
                let Ok(Some(m)) = m else {
                    break;
                };
                if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    // NATS says no other node listens: those not heard from are all gone.
                    let silent = known_nodes.iter().filter(|n| !answered_by.contains(*n));
                    gone.extend(silent.cloned());
                    break;
                }
                let headers = m.headers.as_ref();
                let from = headers.and_then(|h| h.get(FROM)).map(|v| v.to_string());
                let chunk = headers
                    .and_then(|h| h.get(CHUNK))
                    .and_then(|v| parse_chunk(v.as_str()));
                let Some((index, count)) = chunk else {
                    match from {
                        Some(from) => drop(answered_by.insert(node_name(&from).to_string())),
                        None => unnamed = true,
                    }
                    answered += 1;
                    if answered + gone.len() >= known {
                        break;
                    }
                    continue;
                };
                let from = from.unwrap_or_default();
                let gathered = chunks.entry(from.clone()).or_default();
                gathered.extend_from_slice(&m.payload);
                if index + 1 == count {
                    let records = chunks.remove(&from).unwrap_or_default().freeze();
                    info!(client = %client_id, bytes = records.len(), node = %from, "cluster: session handed over by another node");
                    sessions.push(records);
                    answered_by.insert(node_name(&from).to_string());
                    answered += 1;
                    if answered + gone.len() >= known {
                        break;
                    }
                }
                // A large session: each chunk has its own time to come.
                deadline = deadline.max(Instant::now() + TAKE_WAIT);
            }
            _ = tokio::time::sleep_until(probe_at.unwrap_or(deadline)), if probe_at.is_some() => {
                probe_at = None;
                let silent = known_nodes.iter().filter(|n| !answered_by.contains(*n));
                for name in silent {
                    let (client, gone_tx, name) = (client.clone(), gone_tx.clone(), name.clone());
                    tokio::spawn(async move {
                        if super::wire::gone_from_nats(&client, &name, TAKE_WAIT).await {
                            let _ = gone_tx.try_send(name);
                        }
                    });
                }
            }
            Some(name) = gone_rx.recv() => {
                if !unnamed
                    && !answered_by.contains(&name)
                    && gone.insert(name)
                    && answered + gone.len() >= known
                {
                    break;
                }
            }
        }
    }
    if answered < known {
        // What a node that did not answer may have held is missed.
        shared.sessions_missed.fetch_add(1, Ordering::Relaxed);
        let gone: Vec<&String> = gone.iter().collect();
        warn!(client = %client_id, answered, known, ?gone, "cluster: not every node answered whether it holds the session of a client resuming it (those named gone are gone from NATS); what did not come is missed");
    }
    // Only a copy restored here can have been taken elsewhere (one lookup, not on every resume).
    let superseded = match stored.held {
        Held::Restored => stored.directory.superseded_now(&client, &client_id).await,
        Held::Nothing | Held::Session => None,
    };
    let mut unavailable = false;
    if sessions.is_empty() && !answer.is_abandoned() {
        // No node handed one over (none holds it, or the one that does is down): JetStream's
        // copies, asked again while it cannot answer, within [`STORED_WAIT`].
        let deadline = Instant::now() + STORED_WAIT;
        loop {
            let asked = (&client, client_id.as_str(), &stored);
            let read = timeout_at(
                deadline,
                from_jetstream(asked, superseded.is_some(), &answer),
            );
            match read.await {
                Ok(Ok(found)) => {
                    if let Some((node, gone_ms)) = found.mark_taken {
                        // Past the deadline's reach: a mark written (or on its way) with the
                        // copy then dropped for a late answer would have made every later
                        // resume take the copy as taken, its messages lost.
                        shared.queues_taken.fetch_add(1, Ordering::Relaxed);
                        (stored.directory)
                            .mark_taken(&client, &client_id, &node, gone_ms)
                            .await;
                    }
                    for records in found.sessions {
                        take_stored(&shared, &client_id, &mut sessions, records);
                    }
                    break;
                }
                _ if Instant::now() + STORED_RETRY < deadline && !answer.is_abandoned() => {
                    tokio::time::sleep(STORED_RETRY).await;
                }
                _ if held_here => {
                    warn!(client = %client_id, "cluster: JetStream cannot say what it holds of a session this node holds; the client goes on with what is held here");
                    break;
                }
                _ => {
                    warn!(client = %client_id, "cluster: JetStream cannot say what it holds of the session of a client resuming it; refused (server unavailable), not started anew");
                    unavailable = true;
                    break;
                }
            }
        }
    }
    if !sessions.is_empty() && answer.is_abandoned() {
        shared.sessions_missed.fetch_add(1, Ordering::Relaxed);
        warn!(client = %client_id, "cluster: sessions came from other nodes after their client stopped waiting; they are lost");
    }
    answer.send(Taken {
        sessions,
        superseded,
        unavailable,
    });
}

/// The copies of a session JetStream has, for a resume that no node handed it to: the copy
/// its node made when its client went away, with its messages, if there is one; else the
/// session directory's copy, with the session's subscriptions (see [`take`]).
/// `superseded`: this node's restored copy was taken by another node while this one was
/// down. Only reads: what must be written, that the copy is taken, is in [`Found`].
async fn from_jetstream(
    (client, client_id, stored): (&async_nats::Client, &str, &Stored),
    superseded: bool,
    answer: &Answer<Taken>,
) -> Result<Found, Unreadable> {
    let Stored {
        directory,
        username,
        held,
    } = stored;
    let held_here = *held != Held::Nothing;
    let mut sessions = Vec::new();
    let mut mark_taken = None;
    let Some(entry) = directory
        .get(client, client_id, username.as_deref())
        .await?
    else {
        debug!(client = %client_id, "cluster: the session directory has no entry for a resuming session");
        return Ok(Found {
            sessions,
            mark_taken,
        });
    };
    let records = entry.records;
    // Another node wrote the entry: it may have resumed the session held here while this
    // node was cut off from NATS (so never heard of it), and died since. Its copy of the
    // session then, with the subscriptions made there, goes into the merge ranked by when it
    // was written: the newer copy's subscriptions win.
    let written_elsewhere = entry
        .written_elsewhere_ms
        .filter(|_| held_here)
        .map(|at| directory_copy_as_of(&records, at));
    // The copy restored here was taken by another node while this one was down (the shard
    // drops it), and that node, down now too, left no copy: the client goes on with what the
    // directory has, the subscriptions it made there included, not with a new session.
    let directory_copy = superseded.then(|| records.clone());
    let copied = super::node::queues::read(client, client_id, || answer.is_abandoned());
    let copied = copied.await?;
    debug!(
        client = %client_id,
        held_here,
        superseded,
        copy_from = copied.as_ref().map(|c| c.node.as_str()),
        copy_bytes = copied.as_ref().map(|c| c.records.len()),
        directory_bytes = records.len(),
        "cluster: what JetStream holds of a resuming session"
    );
    match copied {
        Some(copy) if held_here && directory.is_own(&copy.node) => {
            // This node's own copy of the session it holds: nothing to take, but what
            // another node wrote.
            sessions.extend(written_elsewhere);
        }
        Some(copy) => {
            let taken = directory.taken_from_now(client, client_id, &copy.node);
            if superseded_by(Some(copy.gone_ms), taken.await) {
                // Taken before, by a node whose purge of it has not come yet: its messages
                // went to that session.
                info!(client = %client_id, node = %copy.node, "cluster: the session's copy in JetStream was taken before; not again");
                if !held_here {
                    sessions.push(records);
                }
            } else {
                mark_taken = Some((copy.node, copy.gone_ms));
                sessions.push(copy.records);
            }
        }
        // The directory's copy has the subscriptions only: a session held here has them
        // (merging it in would cost a pass over the whole queue, for nothing), unless another
        // node wrote it.
        None if held_here => sessions.extend(written_elsewhere),
        None => sessions.push(records),
    }
    if let (true, Some(records)) = (sessions.is_empty(), directory_copy) {
        sessions.push(records);
    }
    Ok(Found {
        sessions,
        mark_taken,
    })
}

/// What [`from_jetstream`] found: the session copies to take, and, when one is a node's
/// queue copy, that node and when its client went away there, for the mark that it is taken
/// (written by the caller once the reads are done, whatever their deadline).
struct Found {
    sessions: Vec<Bytes>,
    mark_taken: Option<(String, u64)>,
}

/// A node's name: its incarnation (`name/start-time`) without the start time.
fn node_name(incarnation: &str) -> &str {
    incarnation
        .split_once('/')
        .map_or(incarnation, |(name, _)| name)
}

/// Takes a session copy from JetStream (the queue copy's records, or the directory's).
fn take_stored(shared: &ClusterShared, client_id: &str, sessions: &mut Vec<Bytes>, records: Bytes) {
    info!(client = %client_id, bytes = records.len(), "cluster: session taken from JetStream (its queue's copy or, without one, the session directory's)");
    shared.sessions_stored.fetch_add(1, Ordering::Relaxed);
    sessions.push(records);
}

fn parse_chunk(text: &str) -> Option<(usize, usize)> {
    let (index, count) = text.split_once(' ')?;
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index < count).then_some((index, count))
}

/// A take came: asks the client id's home shard here for the session (it ends the client's
/// connection here either way) and answers on `reply`, with the session's records in chunks
/// or with an empty message when this node has none to hand over. A copy this node restored
/// at start is not handed over if another node took it from JetStream while this one was down
/// (`directory` is asked, the bucket itself if its watch has not told yet: this node may have
/// just started). A session handed over counts in `shared`'s `sessions/out`.
pub(super) fn hand_over(
    client: async_nats::Client,
    reply: async_nats::Subject,
    taker: Taker,
    (directory, shared): (Directory, Arc<ClusterShared>),
) -> (Box<HandOver>, impl std::future::Future<Output = ()>) {
    let (sender, wait) = answer();
    let Taker {
        client_id,
        username,
        node,
    } = taker;
    let request = Box::new(HandOver {
        username,
        answer: sender,
    });
    let respond = async move {
        let session = tokio::time::timeout(HAND_OVER_WAIT, wait)
            .await
            .ok()
            .flatten()
            .flatten();
        let records = match session {
            Some(handed) if handed.restored_gone_ms.is_some() => {
                let taken = directory.superseded_now(&client, &client_id).await;
                if superseded_by(handed.restored_gone_ms, taken) {
                    info!(client = %client_id, "cluster: the session restored here was resumed on another node from its copy in JetStream while this node was down; dropped");
                    None
                } else {
                    Some(handed.records)
                }
            }
            session => session.map(|handed| handed.records),
        };
        let Some(records) = records else {
            // Named, so the taker knows who answered (see [`take`]).
            let mut headers = HeaderMap::new();
            headers.insert(FROM, node.as_str());
            let _ = client
                .publish_with_headers(reply, headers, Bytes::new())
                .await;
            return;
        };
        let max = client.server_info().max_payload.max(64 * 1024);
        // Room for the headers and the protocol line.
        let size = max - 4096;
        let count = records.len().div_ceil(size).max(1);
        for index in 0..count {
            let part = records.slice(index * size..((index + 1) * size).min(records.len()));
            let mut headers = HeaderMap::new();
            headers.insert(CHUNK, format!("{index} {count}").as_str());
            headers.insert(FROM, node.as_str());
            if let Err(e) = client
                .publish_with_headers(reply.clone(), headers, part)
                .await
            {
                warn!("cluster: cannot hand a session over: {e}");
                return;
            }
        }
        let _ = client.flush().await;
        info!(client = %client_id, bytes = records.len(), "cluster: session handed over to another node");
        shared.sessions_out.fetch_add(1, Ordering::Relaxed);
    };
    (request, respond)
}

/// Where a resume looks when no node hands the session over: the session directory (and the
/// queue copies in JetStream), for `username`'s session; `held`: what this node holds of it.
pub(super) struct Stored {
    pub directory: Directory,
    pub username: Option<String>,
    pub held: Held,
}

/// Whose session a take asks this node for, and this node's name to answer with.
pub(super) struct Taker {
    pub client_id: String,
    pub username: Option<ByteStr>,
    /// This node (its incarnation), named on each chunk.
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_says_whose_session_it_wants() {
        let mut headers = HeaderMap::new();
        assert_eq!(wants_session(&headers), None, "a plain claim");
        take_headers(&mut headers, None);
        assert_eq!(wants_session(&headers), Some(None));
        let mut headers = HeaderMap::new();
        take_headers(&mut headers, Some("ü ser\r\n"));
        assert_eq!(
            wants_session(&headers),
            Some(Some(ByteStr::from("ü ser\r\n")))
        );
    }

    #[test]
    fn chunk_headers_read_back() {
        assert_eq!(parse_chunk("0 1"), Some((0, 1)));
        assert_eq!(parse_chunk("2 3"), Some((2, 3)));
        assert_eq!(parse_chunk("3 3"), None);
        assert_eq!(parse_chunk("x"), None);
    }
}
