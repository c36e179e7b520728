//! weir's segment-log engine: durable, partitioned, replayable logs.
//!
//! A [`Partition`] is an append-only log of record batches, stored as
//! segment files with sparse offset and time indexes, recovered after a
//! crash by checking every batch that was not known durable. A [`Broker`]
//! manages topics of partitions in a data directory, routes records to
//! partitions, and keeps consumer-group offsets durably.
//!
//! Everything reaches the outside world through [`weir_io`]: the log reads
//! no clock but the [`weir_io::Clock`] it is given and touches no file but
//! through the [`weir_io::Storage`] it is given, so the same code runs on a
//! real disk and on the simulator's faulty one.
//!
//! ```
//! use std::sync::Arc;
//! use weir_io::{SimStorage, SystemClock};
//! use weir_log::{Broker, BrokerConfig, Record, TopicConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A real node would use `OsStorage::open("data")`.
//! let storage = Arc::new(SimStorage::new(1));
//! let (broker, _recovery) = Broker::open(storage, Arc::new(SystemClock), BrokerConfig::default())?;
//! broker.create_topic("orders", TopicConfig::with_partitions(3))?;
//!
//! let appended = broker.append("orders", 0, &[Record::keyed(1_700_000_000_000, b"id-1", b"hello")])?;
//! let read = broker.read("orders", 0, appended.base_offset, 1 << 20)?;
//! let record = read.records().next().expect("one record")?;
//! assert_eq!(record.value, Some(&b"hello"[..]));
//!
//! broker.commit_offset("billing", "orders", 0, appended.last_offset + 1, "")?;
//! assert_eq!(broker.committed_offset("billing", "orders", 0)?.map(|c| c.offset), Some(1));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Lossy `as` casts are refused in the engines: each conversion either
// cannot lose (checked with `try_from`) or says why losing is intended.
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)
)]

pub mod batch;
mod broker;
pub mod checkpoint;
pub mod commit;
mod config;
pub mod epochs;
mod error;
pub mod frame;
pub mod fuzzing;
pub mod index;
pub mod inspect;
mod le;
mod offsets;
mod partition;
pub mod producers;
pub mod recovery;
pub mod segment;

pub use batch::{
    Attributes, Batch, BatchError, BatchHeader, BatchLimits, Compression, Header, ProducerInfo,
    Record, RecordView,
};
pub use broker::{
    partition_for_key, validate_topic_name, Broker, BrokerConfig, BrokerError, BrokerRecovery,
    ProducedBatch, TopicConfig, TopicMetadata, GROUP_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX,
    PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX,
};
pub use config::{
    FlushPolicy, HighWatermarkPolicy, LogConfig, TopicSettings, ALLOCATION_STEP_BYTES_DEFAULT,
    INDEX_INTERVAL_BYTES_DEFAULT, MAX_BATCH_BYTES_DEFAULT, MAX_RECORD_BYTES_DEFAULT,
    MAX_UNCOMPRESSED_BATCH_BYTES_DEFAULT, READ_BYTES_MAX, RETENTION_MS_DEFAULT,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
};
pub use epochs::EpochEntry;
pub use error::LogError;
pub use offsets::{decode_offset_record, offsets_batch, CommittedOffset, OffsetsRecovery};
pub use partition::{
    AppendInfo, Isolation, Partition, PartitionStats, ReadInfo, ReadRecords, ReadResult,
    RetentionReport, TimestampOffset,
};
pub use producers::{ProducerBatch, ProducerEntry, SequenceError};
pub use recovery::{RecoveryReport, Truncation};

/// The crate's README, whose examples `cargo test --doc` compiles.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
