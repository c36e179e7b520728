//! The partition log: an ordered sequence of segments that Kafka record
//! batches are appended to and read from by offset.
//!
//! The concerns live in their own files: [`append`](self) (writing batches,
//! producers' idempotence, leader epochs, rolls), `sync` (group commit,
//! durability, the high watermark, checkpoints), `read` (batches by offset
//! and by timestamp) and `maintenance` (truncation, deletion of a prefix,
//! retention, close, verification).
//!
//! Concurrency: one mutex guards the segment list, the offsets, the leader
//! epochs and the producers' state. Appends write under it; syncs run
//! outside it, shared by concurrent appenders through the [`GroupCommit`];
//! reads locate their data under it and read outside it. The checkpoint
//! has a lock of its own, always taken before the segment list's.
//!
//! What holds between operations is stated in [`Partition::check_invariants`]
//! and asserted on the append, sync and truncate paths.

mod append;
mod maintenance;
mod read;
mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use weir_io::sync::{lock, Mutex};
use weir_io::{Clock, Storage};

use crate::checkpoint::Checkpoint;
use crate::commit::GroupCommit;
use crate::config::{FlushPolicy, HighWatermarkPolicy, LogConfig, TopicSettings};
use crate::epochs::{EpochEntry, LeaderEpochs};
use crate::error::LogError;
use crate::producers::{ProducerEntry, ProducerStates};
use crate::recovery::{self, trusted_summaries, RecoveryReport};
use crate::segment::Segment;

pub(crate) use append::remove_old_snapshots;
pub use read::{ReadRecords, ReadResult};

/// Where an append put its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset of the first record.
    pub base_offset: u64,
    /// The offset of the last record.
    pub last_offset: u64,
    /// Records appended.
    pub record_count: u32,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// The batch was an idempotent producer's retry of a batch already in
    /// the log: nothing was written, and the offsets are the original's.
    pub duplicate: bool,
}

/// Which records a read may return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Records below the high watermark: what consumers may see.
    #[default]
    Committed,
    /// Every record written, up to the log end: what a replication layer
    /// ships to followers.
    Uncommitted,
}

/// What a read returned besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadInfo {
    /// The offset the read asked for.
    pub requested_offset: u64,
    /// The offset after the last record returned (the next offset to read),
    /// or `requested_offset` if nothing was returned.
    pub next_offset: u64,
    /// The offset after the last committed record at the time of the read.
    pub high_watermark: u64,
    /// The offset after the last record written at the time of the read.
    pub log_end_offset: u64,
    /// The first offset of the log at the time of the read.
    pub log_start_offset: u64,
}

/// The first record at or after a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp.
    pub timestamp_ms: i64,
}

/// What retention removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Base offsets of the segments deleted.
    pub segments_deleted: Vec<u64>,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start_offset: u64,
}

/// Counters of a partition since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Batches appended.
    pub appended_batches: u64,
    /// Syncs run by the group commit (so `appended_batches / syncs` is how
    /// many batches a sync covered on average with `FlushPolicy::Always`).
    pub syncs: u64,
    /// Idempotent producers' retries answered without writing.
    pub duplicates: u64,
}

/// A durable, append-only partition log.
#[derive(Debug)]
pub struct Partition {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    /// The settings it opened with; the changeable ones are read from
    /// `settings`, never from here.
    config: LogConfig,
    settings: LiveSettings,
    inner: Mutex<Inner>,
    commit: GroupCommit,
    /// Serialises checkpoint writes; taken before `inner`.
    checkpoint_lock: Mutex<()>,
    appended_batches: AtomicU64,
    syncs: AtomicU64,
    duplicates: AtomicU64,
    /// Appends between their start and the end of their write.
    appending: AtomicU64,
    /// See [`Partition::synced_data_cut`].
    synced_data_cut: Option<u64>,
    /// See [`Partition::take_corrupt_read`] (`u64::MAX`: none).
    corrupt_read: AtomicU64,
}

/// The changeable settings, read by appends, rolls and retention without
/// the log's lock. A reader racing a change may see some fields old and
/// some new: each is valid alone.
#[derive(Debug)]
struct LiveSettings {
    segment_bytes: AtomicU32,
    segment_ms: AtomicU64,
    max_batch_bytes: AtomicU32,
    /// `u64::MAX`: no limit.
    retention_ms: AtomicU64,
    /// `u64::MAX`: no limit.
    retention_bytes: AtomicU64,
}

impl LiveSettings {
    fn new(settings: TopicSettings) -> Self {
        let live = Self {
            segment_bytes: AtomicU32::new(0),
            segment_ms: AtomicU64::new(0),
            max_batch_bytes: AtomicU32::new(0),
            retention_ms: AtomicU64::new(0),
            retention_bytes: AtomicU64::new(0),
        };
        live.store(settings);
        live
    }

    fn store(&self, settings: TopicSettings) {
        let limit = |value: Option<u64>| value.unwrap_or(u64::MAX);
        self.segment_bytes
            .store(settings.segment_bytes, Ordering::Relaxed);
        self.segment_ms
            .store(settings.segment_ms, Ordering::Relaxed);
        self.max_batch_bytes
            .store(settings.max_batch_bytes, Ordering::Relaxed);
        self.retention_ms
            .store(limit(settings.retention_ms), Ordering::Relaxed);
        self.retention_bytes
            .store(limit(settings.retention_bytes), Ordering::Relaxed);
    }

    fn load(&self) -> TopicSettings {
        let limit = |value: u64| (value != u64::MAX).then_some(value);
        TopicSettings {
            segment_bytes: self.segment_bytes.load(Ordering::Relaxed),
            segment_ms: self.segment_ms.load(Ordering::Relaxed),
            max_batch_bytes: self.max_batch_bytes.load(Ordering::Relaxed),
            retention_ms: limit(self.retention_ms.load(Ordering::Relaxed)),
            retention_bytes: limit(self.retention_bytes.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// By base offset; never empty; the last one is active.
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    next_offset: u64,
    high_watermark: u64,
    epochs: LeaderEpochs,
    producers: ProducerStates,
    /// Segment files were created or removed since the last directory sync.
    directory_dirty: bool,
    /// The last checkpoint write failed; retry at the next sync.
    checkpoint_stale: bool,
    unflushed_bytes: u64,
    last_flush_ms: u64,
    failure: Option<String>,
    closed: bool,
}

impl Inner {
    fn check_usable(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        if let Some(cause) = &self.failure {
            return Err(LogError::Failed {
                cause: cause.clone(),
            });
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_base(&self) -> u64 {
        self.active().base_offset
    }

    /// The segment holding `offset` (the last one starting at or before it).
    fn segment_for(&mut self, offset: u64) -> Option<&mut Segment> {
        self.segments
            .range_mut(..=offset)
            .next_back()
            .map(|(_, segment)| segment)
    }

    fn checkpoint(&self, clean_shutdown: bool) -> Checkpoint {
        Checkpoint {
            log_start_offset: self.log_start_offset,
            clean_shutdown,
            truncation: None,
            segments: trusted_summaries(&self.segments),
        }
    }

    fn size_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|segment| u64::from(segment.size))
            .sum()
    }

    /// The epoch stamped on batches this node appends: the latest.
    fn current_epoch(&self) -> u32 {
        self.epochs.latest().map_or(0, |entry| entry.epoch)
    }
}

impl Partition {
    /// Opens the log in `storage` (a directory of its own), recovering it
    /// from whatever a crash left (see [`crate::recovery`]).
    pub fn open(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport), LogError> {
        config.validate()?;
        let recovered = recovery::recover(storage.as_ref(), clock.as_ref(), &config)?;
        let report = recovered.report;
        let next_offset = report.log_end_offset;
        tracing::info!(
            clean_shutdown = report.clean_shutdown,
            segments = report.segments,
            segments_scanned = report.segments_scanned,
            bytes_scanned = report.bytes_scanned,
            log_start_offset = report.log_start_offset,
            log_end_offset = report.log_end_offset,
            producers = recovered.producers.len(),
            batches_replayed_for_producers = report.producer_batches_replayed,
            truncated_bytes = report
                .truncation
                .as_ref()
                .map_or(0, |cut| cut.bytes_removed),
            "opened partition log"
        );
        let high_watermark = match config.high_watermark {
            HighWatermarkPolicy::FollowsFlush => next_offset,
            HighWatermarkPolicy::SetByOwner => recovered.log_start_offset,
        };
        let now = clock.now_ms();
        let partition = Self {
            storage,
            clock,
            inner: Mutex::new(Inner {
                segments: recovered.segments,
                log_start_offset: recovered.log_start_offset,
                next_offset,
                high_watermark,
                epochs: recovered.epochs,
                producers: recovered.producers,
                directory_dirty: false,
                checkpoint_stale: false,
                unflushed_bytes: 0,
                last_flush_ms: now,
                failure: None,
                closed: false,
            }),
            commit: GroupCommit::new(next_offset),
            checkpoint_lock: Mutex::new(()),
            appended_batches: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            appending: AtomicU64::new(0),
            synced_data_cut: report
                .truncation
                .as_ref()
                .filter(|cut| cut.synced)
                .map(|_| next_offset),
            corrupt_read: AtomicU64::new(u64::MAX),
            settings: LiveSettings::new(config.settings()),
            config,
        };
        partition.check_invariants()?;
        Ok((partition, report))
    }

    /// Where recovery cut corrupt synced data when the log was opened (a
    /// replica's: [`crate::recovery::Truncation::synced`]): the log end
    /// after the cut. The records from there on had been synced, may have
    /// been acknowledged, and are gone from this replica.
    pub fn synced_data_cut(&self) -> Option<u64> {
        self.synced_data_cut
    }

    /// The lowest offset a read failed at as corrupt since the last call
    /// (the corrupt batch holds it or follows it), once: a replica's
    /// owner cuts and repairs it at once rather than when its scrub gets
    /// there, whichever reader (a consumer, a follower) found it.
    pub fn take_corrupt_read(&self) -> Option<u64> {
        let offset = self.corrupt_read.swap(u64::MAX, Ordering::Relaxed);
        (offset != u64::MAX).then_some(offset)
    }

    /// The log's settings, with the changeable ones as they are now.
    pub fn config(&self) -> LogConfig {
        self.config.with_settings(self.settings.load())
    }

    /// Changes the settings that may change while the log is open (Kafka's
    /// dynamic topic configs); they apply from the next append, roll or
    /// retention pass. Settings outside a log's limits are refused and
    /// change nothing.
    pub fn change_settings(&self, settings: TopicSettings) -> Result<(), LogError> {
        self.config.with_settings(settings).validate()?;
        self.settings.store(settings);
        Ok(())
    }

    /// The changeable settings as they are now.
    fn live(&self) -> TopicSettings {
        self.settings.load()
    }

    /// The first offset the log holds.
    pub fn log_start_offset(&self) -> u64 {
        lock(&self.inner).log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        lock(&self.inner).next_offset
    }

    /// The offset after the last record consumers may see: by default,
    /// with [`FlushPolicy::Always`] the durable end of the log, otherwise
    /// its end; with [`HighWatermarkPolicy::SetByOwner`], what the owner
    /// set.
    pub fn high_watermark(&self) -> u64 {
        lock(&self.inner).high_watermark
    }

    /// Every offset below this is durable.
    pub fn durable_offset(&self) -> u64 {
        self.commit.durable()
    }

    /// Segments in the log.
    pub fn segment_count(&self) -> usize {
        lock(&self.inner).segments.len()
    }

    /// Base offsets of the segments, in order.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        lock(&self.inner).segments.keys().copied().collect()
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.inner).size_bytes()
    }

    /// Counters since open.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            appended_batches: self.appended_batches.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }

    /// The leader epoch stamped on batches appended by this node: the
    /// latest epoch of the log (0 for a log that never had one).
    pub fn leader_epoch(&self) -> u32 {
        lock(&self.inner).current_epoch()
    }

    /// Every epoch of the log and where it starts, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        lock(&self.inner).epochs.entries().to_vec()
    }

    /// The largest epoch at or below `epoch` and where it ends in this log
    /// (Kafka's `OffsetForLeaderEpoch`): a follower whose last epoch is
    /// `epoch` cuts its log there. `None` when every epoch of this log is
    /// newer.
    pub fn epoch_end_offset(&self, epoch: u32) -> Option<(u32, u64)> {
        let inner = lock(&self.inner);
        inner.epochs.end_offset(epoch, inner.next_offset)
    }

    /// What the partition knows of an idempotent producer.
    pub fn producer_state(&self, producer_id: i64) -> Option<ProducerEntry> {
        lock(&self.inner).producers.get(producer_id).cloned()
    }

    /// Checks what must hold between operations, returning the first
    /// violation as [`LogError::Invariant`]: segments contiguous and in order, each one
    /// ending where the next begins; the log start within the first
    /// segment; the high watermark at or below the log end, and (when the
    /// log moves it with [`FlushPolicy::Always`]) at or below the durable
    /// offset; the durable offset at or below the log end; epochs strictly
    /// increasing with non-decreasing starts below the log end; producers'
    /// batches below the log end. Cheap: no I/O. Tests and the simulator
    /// call it after every step.
    pub fn check_invariants(&self) -> Result<(), LogError> {
        let inner = lock(&self.inner);
        let violation = |what: String| Err(LogError::Invariant { what });
        let mut expected: Option<u64> = None;
        for (base, segment) in &inner.segments {
            if *base != segment.base_offset {
                return violation(format!(
                    "segment keyed {base} has base {}",
                    segment.base_offset
                ));
            }
            if expected.is_some_and(|expected| expected != *base) {
                return violation(format!("segment {base} does not follow on at {expected:?}"));
            }
            if segment.next_offset < segment.base_offset {
                return violation(format!("segment {base} ends before it starts"));
            }
            if segment.synced_position > segment.size {
                return violation(format!("segment {base} synced past its size"));
            }
            expected = Some(segment.next_offset);
        }
        if expected != Some(inner.next_offset) {
            return violation(format!(
                "the last segment ends at {expected:?}, the log at {}",
                inner.next_offset
            ));
        }
        let first_base = *inner
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        if inner.log_start_offset < first_base || inner.log_start_offset > inner.next_offset {
            return violation(format!(
                "log start {} outside {first_base}..={}",
                inner.log_start_offset, inner.next_offset
            ));
        }
        if inner.high_watermark > inner.next_offset {
            return violation(format!(
                "high watermark {} above the log end {}",
                inner.high_watermark, inner.next_offset
            ));
        }
        let durable = self.commit.durable();
        if inner.failure.is_none() && durable > inner.next_offset {
            return violation(format!(
                "durable offset {durable} above the log end {}",
                inner.next_offset
            ));
        }
        let follows_durability = self.config.high_watermark == HighWatermarkPolicy::FollowsFlush
            && self.config.flush == FlushPolicy::Always;
        if follows_durability && inner.high_watermark > durable.max(inner.log_start_offset) {
            return violation(format!(
                "high watermark {} above the durable offset {durable}",
                inner.high_watermark
            ));
        }
        if let Err(what) = inner.epochs.check() {
            return violation(format!("leader epochs: {what}"));
        }
        if let Some(latest) = inner.epochs.latest() {
            if latest.start_offset > inner.next_offset {
                return violation(format!("epoch {} starts past the log end", latest.epoch));
            }
        }
        if let Some(last) = inner.producers.last_offset() {
            if last >= inner.next_offset {
                return violation(format!(
                    "a producer's batch ends at {last}, past the log end"
                ));
            }
        }
        Ok(())
    }

    /// Marks the log failed: its durable state is unknown until it is
    /// reopened.
    fn fail_locked(&self, inner: &mut Inner, cause: String) {
        tracing::error!(%cause, "partition log failed; it must be reopened");
        if inner.failure.is_none() {
            inner.failure = Some(cause);
        }
        self.commit.fail();
    }
}
