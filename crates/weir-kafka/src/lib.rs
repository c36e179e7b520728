//! weir's Kafka front-end: Kafka's wire protocol over [`weir_log`], so
//! that unmodified Kafka clients and tools (librdkafka and its kcat and
//! confluent-kafka, kafka-python, ...) produce to and consume from weir.
//!
//! - [`connection`]: one task per client: size-prefixed requests, API key
//!   and version checked before the body, answered in order;
//! - [`shape`]: every request body walked against its schema and the named
//!   [`limits`] before `kafka-protocol` decodes it;
//! - [`versions`]: the API versions weir implements and advertises;
//! - [`reply`]: responses in chunks; fetch responses encoded with their
//!   batches sent from the log's read buffers (vectored writes);
//! - [`handlers`]: produce, fetch (long poll), offsets, metadata and admin,
//!   groups, SASL/PLAIN;
//! - [`coordinator`]: Kafka's classic consumer-group protocol on the
//!   injected clock;
//! - [`producer_ids`]: durable, unique ids for idempotent producers;
//! - [`node`]: the shared state, and the [`node::Leaders`] seam that a
//!   replication layer replaces to make weir a cluster;
//! - [`server`]: the listener and the timer;
//! - [`interop`], [`fuzzing`]: the cross-check of weir-log's record
//!   batches with `kafka-protocol`'s independent codec.
//!
//! Networking and timers come from `tokio`, which is `madsim-tokio`: the
//! same code runs under madsim's deterministic simulator.

#![warn(missing_docs)]

pub mod connection;
pub mod coordinator;
pub mod fuzzing;
pub mod handlers;
pub mod interop;
pub mod limits;
pub mod node;
pub mod producer_ids;
pub mod reply;
pub mod samples;
pub mod server;
pub mod shape;
pub mod shutdown;
pub mod versions;

pub use node::{
    Kafka, KafkaSettings, Leaders, NodeAddress, Quorum, Reassignment, Refusal, Replication,
    SingleNode,
};
