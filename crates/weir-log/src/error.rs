//! Errors of partition operations ([`LogError`]), with structured fields.
//! The broker's errors are `BrokerError` in `broker.rs`; a batch's are
//! `BatchError` in `batch`.

use std::io;

use thiserror::Error;

use crate::batch::BatchError;
use crate::producers::SequenceError;

/// How errors name weir-log's first on-disk format.
pub const FORMAT_1_DESCRIPTION: &str =
    "weir-log format 1 (weir's own batch layout, before Kafka record batches v2)";

/// An error of a partition log operation.
#[derive(Debug, Error)]
pub enum LogError {
    /// The storage failed.
    #[error("I/O error while {operation} {file}: {source}")]
    Io {
        /// What the log was doing.
        operation: &'static str,
        /// The file or directory concerned.
        file: String,
        /// The storage's error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed its checksum or another check: it is never
    /// returned as valid.
    #[error("corrupt data in segment {segment} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: String,
        /// Byte position in it.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The recovery checkpoint file is unreadable. Removing it makes the
    /// next open rescan every segment.
    #[error("corrupt checkpoint {file}: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The data directory holds a format this code does not read.
    #[error("{file} holds {found}; this version reads only weir-log format 2 (Kafka record batches v2) and does not migrate older data: remove the directory or open it with the version that wrote it")]
    UnsupportedFormat {
        /// The file that shows it.
        file: String,
        /// What it holds.
        found: String,
    },
    /// A batch given to append is not valid.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// An idempotent producer's batch breaks the sequence rules.
    #[error("{0}")]
    Sequence(#[from] SequenceError),
    /// A replicated batch does not start at the log end.
    #[error("a replicated batch starts at offset {found}, not at the log end {expected}")]
    NotAtLogEnd {
        /// The log end offset.
        expected: u64,
        /// The batch's base offset.
        found: u64,
    },
    /// A batch's leader epoch is older than the log's latest epoch.
    #[error("a batch of leader epoch {epoch} after epoch {latest}")]
    EpochRegression {
        /// The batch's epoch.
        epoch: i32,
        /// The log's latest epoch.
        latest: u32,
    },
    /// A batch is larger than `max_batch_bytes`.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The batch's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A record is larger than `max_record_bytes`.
    #[error("record {index} of the batch is {size} bytes, above the limit of {max} bytes")]
    RecordTooLarge {
        /// Index of the record in its batch.
        index: usize,
        /// The record's encoded size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The offset is outside what the log holds.
    #[error(
        "offset {requested} is out of range: the log holds {log_start_offset}..{high_watermark}"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first offset the log holds.
        log_start_offset: u64,
        /// The offset after the last readable record.
        high_watermark: u64,
    },
    /// A setting is outside its limits.
    #[error("invalid log setting {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An earlier failure (a failed sync or write) left the log's durable
    /// state unknown; it refuses further work until it is reopened, which
    /// recovers from what is durable.
    #[error("the log failed earlier and must be reopened: {cause}")]
    Failed {
        /// The first failure.
        cause: String,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// A check of what must hold between operations failed: a bug, reported
    /// by [`crate::Partition::check_invariants`].
    #[error("log invariant violated: {what}")]
    Invariant {
        /// What does not hold.
        what: String,
    },
}

impl LogError {
    pub(crate) fn io(operation: &'static str, file: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            operation,
            file: file.into(),
            source,
        }
    }

    /// Whether this error left the log unusable until it is reopened.
    pub fn is_fatal(&self) -> bool {
        matches!(self, LogError::Failed { .. })
    }
}
