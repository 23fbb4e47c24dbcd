//! One broker over several nodes that share a NATS cluster (`serve --cluster nats://...
//! --node-id NAME`). Within a node nothing changes; between nodes, NATS carries what another
//! node wants, and nothing else.
//!
//! - **Interest.** Shard 0 counts this node's filters (`broker::replica::InterestTracker`)
//!   and tells the cluster thread when one gets its first subscription or loses its last.
//!   The thread subscribes on NATS to the subjects of those filters ([`subject`], the mapping
//!   nats-server's own MQTT support uses, so NATS applications and MQTT clients see each
//!   other's messages), and publishes the node's whole filter set on
//!   `$SMQ.interest.<node>` when it changes and every [`interest::HEARTBEAT`]. Every node
//!   keeps the others' sets ([`interest::RemoteNodes`]; a node silent for
//!   [`interest::EXPIRY`] is forgotten) as one trie the shards read lock-free.
//! - **Publishing.** A message published on this node (by a client, a will or a bridge) that
//!   another node wants goes, after local routing, into a bounded outbox (full: dropped and
//!   counted), and from there to NATS on its topic's subject, with headers naming the origin
//!   node, a sequence number, its QoS and its publisher's order key. Retained messages go to
//!   every node (also on `$SMQ.retained`), each of which keeps its copy, and into a
//!   JetStream key-value bucket when the NATS servers have JetStream, which a starting node
//!   reads (`node::retained_kv`), so they outlive the nodes. A persistent
//!   session's QoS 2 message waits in the outbox, and what follows it too, until this node
//!   accepted it (`broker::qos2_gate`), as it does for local subscribers.
//! - **Receiving.** What NATS delivers (once per matching NATS subscription, so possibly
//!   twice) is de-duplicated by origin and sequence ([`dedupe`]) and handed to a shard's
//!   inbox as `ShardMessage::FromCluster`, always the same shard for one publisher, which
//!   routes it to this node's subscribers only. One publisher's messages keep their order.
//! - **Sessions.** A client id is one session in the cluster: a connect on this node claims
//!   it (`$SMQ.claim`), and a node that had a connection of it ends that one. A client that
//!   resumes a persistent session asks the other nodes for theirs with its claim, and a node
//!   that holds one hands it over, messages in flight and queued included ([`handoff`]);
//!   copies from a node that was down and came back are merged. With JetStream, each
//!   persistent session's subscriptions are also kept in a bucket (`node::directory`), and
//!   a session whose client is away with its messages in a stream (`node::queues`), which a
//!   resume that no node answered takes instead.
//!
//! - **Acknowledgements.** QoS 1/2 messages between nodes are acknowledged by the nodes
//!   that get them and sent again to a node that lost them ([`confirm`]): at least once
//!   while the sending node lives. QoS 0 crosses at most once (NATS core).
//!
//! A QoS 1/2 PUBACK promises delivery on the publisher's node and that every other node
//! whose subscribers want the message has it (`marks`). What a node that dies still loses:
//! see the README.

pub mod confirm;
pub mod dedupe;
mod handoff;
pub mod interest;
pub mod marks;
mod node;
pub mod subject;
mod wire;

pub use node::{start, ClusterHandle, ClusterStartError};
