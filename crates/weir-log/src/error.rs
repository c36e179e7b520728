//! Errors of the log engine: one enum for partition operations, one for the
//! broker; both carry structured fields.

use std::io;

use thiserror::Error;

use crate::batch::BatchError;

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
    /// A batch given to append is not valid.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
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
