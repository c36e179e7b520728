//! Kafka's error code for each way the log refuses or fails.

use kafka_protocol::ResponseError;
use weir_log::{BatchError, BrokerError, LogError, SequenceError};

/// The error a producer gets for a batch the log refused or could not
/// write.
pub fn for_log(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch(batch) => for_batch(batch),
        LogError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::BatchTooLarge { .. } | LogError::RecordTooLarge { .. } => {
            ResponseError::MessageTooLarge
        }
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. }
        | LogError::Corrupt { .. }
        | LogError::CorruptCheckpoint { .. }
        | LogError::Failed { .. }
        | LogError::Closed
        | LogError::UnsupportedFormat { .. } => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

/// The error for a batch that does not validate: Kafka's CORRUPT_MESSAGE
/// when its bytes or checksum are wrong, INVALID_RECORD when it decodes but
/// breaks a rule, MESSAGE_TOO_LARGE for sizes.
pub fn for_batch(error: &BatchError) -> ResponseError {
    match error {
        BatchError::Truncated { .. }
        | BatchError::BadLength { .. }
        | BatchError::ChecksumMismatch { .. }
        | BatchError::BadFrame { .. }
        | BatchError::FrameChecksumMismatch { .. }
        | BatchError::Malformed { .. }
        | BatchError::Decompression { .. } => ResponseError::CorruptMessage,
        BatchError::UncompressedTooLarge { .. } | BatchError::RecordTooLarge { .. } => {
            ResponseError::MessageTooLarge
        }
        _ => ResponseError::InvalidRecord,
    }
}

/// The error for a topic operation the broker refused.
pub fn for_broker(error: &BrokerError) -> ResponseError {
    match error {
        BrokerError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        BrokerError::InvalidPartitionCount { .. } | BrokerError::PartitionsNotAdded { .. } => {
            ResponseError::InvalidPartitions
        }
        BrokerError::InvalidTopicConfig { .. } => ResponseError::InvalidConfig,
        BrokerError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        BrokerError::UnknownTopic { .. } | BrokerError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        BrokerError::InvalidGroupId { .. } => ResponseError::InvalidGroupId,
        BrokerError::MetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        BrokerError::Log { source, .. } => for_log(source),
        BrokerError::Offsets { .. }
        | BrokerError::CorruptTopicMetadata { .. }
        | BrokerError::Io { .. } => ResponseError::KafkaStorageError,
    }
}
