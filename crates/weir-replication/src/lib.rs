//! weir's replication layer: one Raft group per partition.
//!
//! - [`Group`]: the replica of one partition on one node, on tikv's `raft`
//!   crate (raft-rs), driven by its owner: ticks, messages, proposals and
//!   ready handling, with no threads, clock or randomness of its own.
//! - [`Replicas`]: all the groups of one node: messages batched per peer,
//!   quiescence of idle groups, liveness of peers.
//! - [`RaftLog`]: raft's log storage over the partition's segment log (the
//!   data, one Kafka batch per entry, its offsets assigned by the leader)
//!   and a small side file (terms, raft's own entries, hard state).
//! - [`transport`]: one TCP connection per pair of nodes on
//!   (madsim-)tokio, frames of the codec both ways.
//! - [`runner`]: a node's groups run as one task: ticks, frames,
//!   proposals answered at their acks level.
//! - [`metadata`]: the cluster's metadata as records of a replicated log
//!   (nodes, topics and their partitions' groups and replicas, producer-id
//!   blocks) and the state every node applies them to.
//! - [`codec`]: the wire format of Raft messages between nodes, so that
//!   bytes from the network never reach protobuf 2's parser.
//!
//! Terms are the partitions' leader epochs; the high watermark is the
//! commit index in offsets.

#![warn(missing_docs)]

pub mod codec;
pub mod confchange;

/// raft-rs's types that weir-replication's API takes (entries, hard
/// state), for crates that do not depend on raft themselves.
pub mod raft_types {
    pub use raft::eraftpb::{ConfChangeType, ConfState, Entry, HardState};
}
pub mod fuzzing;
mod group;
pub mod metadata;
mod replicas;
pub mod runner;
mod store;
pub mod transport;

pub use group::{CommitStatus, Group, GroupConfig, ProposeError, Proposed};
pub use replicas::{
    Replicas, ReplicasConfig, ReplicasStats, APPLICATION, LIVENESS_GROUP, QUIESCE,
    SCRUB_BYTES_PER_TICK,
};
pub use store::{
    inspect_side_file, is_data, LeaderWrite, LogStart, PersistedState, RaftLog, RepairPoint,
    Scrubbed, SideFileReport, StoreError, SyncPlan, REWRITE_MIN_BYTES, SIDE_FILE,
};
