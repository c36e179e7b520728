//! Configuration of a partition log, with every limit named.

use crate::batch::{Compression, BATCH_BYTES_LIMIT, HEADER_BYTES};
use crate::error::LogError;

/// The smallest segment size a log accepts (small segments are for tests).
pub const SEGMENT_BYTES_MIN: u32 = 1024;
/// The largest segment size: byte positions in a segment are `u32`, and a
/// batch may be written past the configured size by at most one batch.
pub const SEGMENT_BYTES_LIMIT: u32 = 1 << 31;
/// The default segment size.
pub const SEGMENT_BYTES_DEFAULT: u32 = 1 << 30;
/// The default age at which the active segment is rolled: 7 days.
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// The default spacing of index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// The default limit on one batch, as Kafka's `message.max.bytes`.
pub const MAX_BATCH_BYTES_DEFAULT: u32 = 1024 * 1024 + 12;
/// The default limit on one encoded record.
pub const MAX_RECORD_BYTES_DEFAULT: u32 = 1024 * 1024;
/// The default limit on the bytes a compressed batch's records may
/// decompress to.
pub const MAX_UNCOMPRESSED_BATCH_BYTES_DEFAULT: u32 = 64 << 20;
/// The default time retention: 7 days.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// The default space reserved ahead of appends in the active segment.
pub const ALLOCATION_STEP_BYTES_DEFAULT: u32 = 4 << 20;
/// The most bytes one read returns (a larger `max_bytes` is clamped).
pub const READ_BYTES_MAX: u32 = 64 << 20;

/// When appended data is synced to the storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Sync before an append returns; concurrent appends share one sync
    /// (group commit). Readers see only synced records.
    #[default]
    Always,
    /// Sync when `interval_ms` has passed or `interval_bytes` have been
    /// appended since the last sync, checked at each append and at
    /// [`crate::Partition::tick`]. Readers see records at once.
    Interval {
        /// Sync at least this often while appends arrive (and at ticks).
        interval_ms: u64,
        /// Sync once this many bytes are unsynced.
        interval_bytes: u64,
    },
    /// Never sync except on [`crate::Partition::flush`] or
    /// [`crate::Partition::sync`] (the owner's), a truncation and close;
    /// durability comes from replication. A roll neither syncs nor writes
    /// a checkpoint. Readers see records at once.
    Never,
}

/// Who moves the high watermark, the offset below which readers (with
/// [`crate::Isolation::Committed`]) see records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HighWatermarkPolicy {
    /// The log: with [`FlushPolicy::Always`] the high watermark is the
    /// durable end of the log, otherwise the end of the log. A single node.
    #[default]
    FollowsFlush,
    /// The owner, through [`crate::Partition::set_high_watermark`]: a
    /// replication layer that commits records on a quorum. It starts at the
    /// log start offset on open and never passes the log end.
    SetByOwner,
}

/// Settings of one partition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment when a batch would take it past this size.
    pub segment_bytes: u32,
    /// Roll the active segment when it is this old (by the clock).
    pub segment_ms: u64,
    /// Bytes of log between index entries.
    pub index_interval_bytes: u32,
    /// The largest batch an append accepts.
    pub max_batch_bytes: u32,
    /// The largest encoded record an append accepts.
    pub max_record_bytes: u32,
    /// The most bytes a compressed batch's records may decompress to.
    pub max_uncompressed_batch_bytes: u32,
    /// The codec of batches encoded by [`crate::Partition::append`]
    /// (producers' batches are stored as they come).
    pub compression: Compression,
    /// When to sync.
    pub flush: FlushPolicy,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Who moves the high watermark (a setting of the owner, not stored
    /// with a topic).
    pub high_watermark: HighWatermarkPolicy,
    /// Disk space reserved ahead of appends, this many bytes at a time
    /// ([`weir_io::File::allocate`]: the file's length does not change), so
    /// that appends do not allocate blocks one write at a time; 0 turns it
    /// off. A setting of the node, not stored with a topic.
    pub allocation_step_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            max_record_bytes: MAX_RECORD_BYTES_DEFAULT,
            max_uncompressed_batch_bytes: MAX_UNCOMPRESSED_BATCH_BYTES_DEFAULT,
            compression: Compression::None,
            flush: FlushPolicy::Always,
            retention_ms: Some(RETENTION_MS_DEFAULT),
            retention_bytes: None,
            high_watermark: HighWatermarkPolicy::FollowsFlush,
            allocation_step_bytes: ALLOCATION_STEP_BYTES_DEFAULT,
        }
    }
}

/// The settings of a log that may change while it is open, as Kafka's
/// dynamic topic configs (`segment.bytes`, `segment.ms`,
/// `max.message.bytes`, `retention.ms`, `retention.bytes`): a change takes
/// effect at the next append, roll or retention pass. The others are fixed
/// when the log is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// See [`LogConfig::segment_bytes`].
    pub segment_bytes: u32,
    /// See [`LogConfig::segment_ms`].
    pub segment_ms: u64,
    /// See [`LogConfig::max_batch_bytes`].
    pub max_batch_bytes: u32,
    /// See [`LogConfig::retention_ms`].
    pub retention_ms: Option<u64>,
    /// See [`LogConfig::retention_bytes`].
    pub retention_bytes: Option<u64>,
}

impl LogConfig {
    /// The settings that may change while the log is open.
    pub fn settings(&self) -> TopicSettings {
        TopicSettings {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_batch_bytes: self.max_batch_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        }
    }

    /// These settings with `settings` in place of their changeable ones.
    pub fn with_settings(&self, settings: TopicSettings) -> Self {
        Self {
            segment_bytes: settings.segment_bytes,
            segment_ms: settings.segment_ms,
            max_batch_bytes: settings.max_batch_bytes,
            retention_ms: settings.retention_ms,
            retention_bytes: settings.retention_bytes,
            ..self.clone()
        }
    }
}

impl LogConfig {
    /// Checks every setting against its limits.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid =
            |field: &'static str, reason: String| Err(LogError::InvalidConfig { field, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&self.segment_bytes) {
            return invalid(
                "segment_bytes",
                format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT}",
                    self.segment_bytes
                ),
            );
        }
        if self.segment_ms == 0 {
            return invalid("segment_ms", "must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes", "must be positive".into());
        }
        let batch_range = batch_bytes_range();
        if !batch_range.contains(&self.max_batch_bytes) {
            return invalid(
                "max_batch_bytes",
                format!("{} is outside {batch_range:?}", self.max_batch_bytes),
            );
        }
        if self.max_record_bytes == 0 {
            return invalid("max_record_bytes", "must be positive".into());
        }
        if !batch_bytes_range().contains(&self.max_uncompressed_batch_bytes) {
            return invalid(
                "max_uncompressed_batch_bytes",
                format!(
                    "{} is outside {HEADER_BYTES}..={BATCH_BYTES_LIMIT}",
                    self.max_uncompressed_batch_bytes
                ),
            );
        }
        if let FlushPolicy::Interval {
            interval_ms,
            interval_bytes,
        } = self.flush
        {
            if interval_ms == 0 || interval_bytes == 0 {
                return invalid(
                    "flush",
                    "interval_ms and interval_bytes must be positive".into(),
                );
            }
        }
        Ok(())
    }
}

/// The sizes a batch may have.
fn batch_bytes_range() -> std::ops::RangeInclusive<u32> {
    let small = u32::try_from(HEADER_BYTES).expect("61 bytes");
    let large = u32::try_from(BATCH_BYTES_LIMIT).expect("64 MiB");
    small..=large
}
