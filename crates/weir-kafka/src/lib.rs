//! weir's Kafka front-end: Kafka's wire protocol over [`weir_log`].
//!
//! This crate is the one that knows Kafka's protocol, through the
//! `kafka-protocol` crate. Today it holds the cross-check of weir-log's
//! record batches with that crate's independent codec ([`interop`]): the
//! batches weir stores are Kafka's record batch v2 byte for byte, so a
//! batch that a Kafka client (or `kafka-protocol`) encodes is stored and
//! served as it came, and a batch that weir encodes decodes as Kafka's.
//! The request handling and the group coordinator build on it.

#![warn(missing_docs)]

pub mod fuzzing;
pub mod interop;
