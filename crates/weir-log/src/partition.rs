//! The partition log: an ordered sequence of segments that records are
//! appended to and read from by offset.
//!
//! Concurrency: one mutex guards the segment list and the offsets. Appends
//! write under it; syncs run outside it, shared by concurrent appenders
//! through the [`GroupCommit`]; reads locate their data under it and read
//! outside it. The checkpoint has a lock of its own, always taken before the
//! segment list's.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_io::sync::{lock, Mutex};
use weir_io::{Clock, File, OpenMode, Storage};

use crate::batch::{self, Batch, BatchHeader, ProducerInfo, Record, RecordView, HEADER_BYTES};
use crate::checkpoint::Checkpoint;
use crate::commit::{CommitError, GroupCommit};
use crate::config::{FlushPolicy, LogConfig, READ_BYTES_MAX};
use crate::error::LogError;
use crate::index::{self, IndexBytes};
use crate::recovery::{
    self, remove_if_present, remove_segment_files, trusted_summaries, RecoveryReport,
};
use crate::segment::{
    self, index_file_name, open_log_file, time_index_file_name, write_index_files, Segment,
    SegmentIndex,
};

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
    /// The first offset of the log at the time of the read.
    pub log_start_offset: u64,
}

/// Batches read from a log, every one checked against its CRC.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole batches, back to back. The first may start before the
    /// requested offset.
    pub bytes: Vec<u8>,
    /// Offsets and watermarks.
    pub info: ReadInfo,
}

impl ReadResult {
    /// The batches.
    pub fn batches(&self) -> impl Iterator<Item = Batch<'_>> {
        // Every batch was checked when it was read.
        batch::batches(&self.bytes).map_while(Result::ok)
    }

    /// The records from the requested offset on.
    pub fn records(&self) -> impl Iterator<Item = Result<RecordView<'_>, batch::BatchError>> {
        let from = self.info.requested_offset;
        self.batches()
            .flat_map(|batch| batch.records())
            .filter(move |record| record.as_ref().map_or(true, |record| record.offset >= from))
    }
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

/// A durable, append-only partition log.
#[derive(Debug)]
pub struct Partition {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    config: LogConfig,
    inner: Mutex<Inner>,
    commit: GroupCommit,
    /// Serialises checkpoint writes; taken before `inner`.
    checkpoint_lock: Mutex<()>,
    /// Batches appended since open.
    appended_batches: std::sync::atomic::AtomicU64,
    /// Group-commit syncs since open.
    syncs: std::sync::atomic::AtomicU64,
    /// Appends between their start and the end of their write.
    appending: std::sync::atomic::AtomicU64,
}

/// How many times a group-commit leader yields, at most, to appenders that
/// are about to write before it syncs. When no other thread is runnable a
/// yield returns at once, so the bound costs a single appender nothing
/// noticeable.
const LEADER_YIELDS_MAX: usize = 64;

/// Counters of a partition since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Batches appended.
    pub appended_batches: u64,
    /// Syncs run by the group commit (so `appended_batches / syncs` is how
    /// many batches a sync covered on average with `FlushPolicy::Always`).
    pub syncs: u64,
}

#[derive(Debug)]
struct Inner {
    /// By base offset; never empty; the last one is active.
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    next_offset: u64,
    high_watermark: u64,
    leader_epoch: u32,
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
            segments: trusted_summaries(&self.segments),
        }
    }

    fn size_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|segment| u64::from(segment.size))
            .sum()
    }
}

/// A sealed segment not yet durable: its base offset, its file and its
/// index files.
type SealedToSync = (u64, Arc<dyn File>, Vec<Arc<dyn File>>);

/// Files to sync for a group commit, taken under the lock and synced
/// outside it.
struct SyncPlan {
    /// Everything below this offset is durable once the plan is carried out.
    target: u64,
    epoch: u64,
    /// Sealed segments not yet durable.
    sealed: Vec<SealedToSync>,
    directory: bool,
    active_base: u64,
    active_file: Arc<dyn File>,
    active_size: u32,
}

enum ReadFailure {
    IndexDisagrees,
    Corrupt { position: u64, reason: String },
    Io(std::io::Error),
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
            truncated_bytes = report
                .truncation
                .as_ref()
                .map_or(0, |cut| cut.bytes_removed),
            "opened partition log"
        );
        let now = clock.now_ms();
        let partition = Self {
            storage,
            clock,
            inner: Mutex::new(Inner {
                segments: recovered.segments,
                log_start_offset: recovered.log_start_offset,
                next_offset,
                high_watermark: next_offset,
                leader_epoch: 0,
                directory_dirty: false,
                checkpoint_stale: false,
                unflushed_bytes: 0,
                last_flush_ms: now,
                failure: None,
                closed: false,
            }),
            commit: GroupCommit::new(next_offset),
            checkpoint_lock: Mutex::new(()),
            appended_batches: std::sync::atomic::AtomicU64::new(0),
            syncs: std::sync::atomic::AtomicU64::new(0),
            appending: std::sync::atomic::AtomicU64::new(0),
            config,
        };
        Ok((partition, report))
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first offset the log holds.
    pub fn log_start_offset(&self) -> u64 {
        lock(&self.inner).log_start_offset
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        lock(&self.inner).next_offset
    }

    /// The offset after the last record readers may see: with
    /// [`FlushPolicy::Always`] the durable end of the log, otherwise its end.
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
        use std::sync::atomic::Ordering::Relaxed;
        PartitionStats {
            appended_batches: self.appended_batches.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
        }
    }

    /// The leader epoch stamped on appended batches.
    pub fn leader_epoch(&self) -> u32 {
        lock(&self.inner).leader_epoch
    }

    /// Sets the leader epoch stamped on batches appended from now on.
    pub fn set_leader_epoch(&self, epoch: u32) {
        lock(&self.inner).leader_epoch = epoch;
    }

    /// Appends `records` as one batch and returns their offsets. With
    /// [`FlushPolicy::Always`] it returns once they are durable.
    pub fn append(
        &self,
        records: &[Record<'_>],
        producer: ProducerInfo,
    ) -> Result<AppendInfo, LogError> {
        let max_record = self.config.max_record_bytes as usize;
        with_scratch(|bytes| {
            let encoded = match batch::encode_limited(records, producer, max_record, bytes) {
                Ok(encoded) => encoded,
                Err(batch::BatchError::RecordTooLarge { index, size, max }) => {
                    return Err(LogError::RecordTooLarge {
                        index,
                        size: size as u64,
                        max: max as u64,
                    })
                }
                Err(error) => return Err(error.into()),
            };
            let offsets = u64::from(encoded.record_count);
            self.append_checked(bytes, offsets, encoded.max_timestamp)
        })
    }

    /// Appends one encoded batch (as a producer sent it), assigning it the
    /// next offsets. The batch is checked in full first.
    pub fn append_batch(&self, bytes: &[u8]) -> Result<AppendInfo, LogError> {
        self.check_batch_size(bytes.len())?;
        let batch = Batch::parse(bytes)?;
        if batch.bytes().len() != bytes.len() {
            return Err(LogError::InvalidBatch(batch::BatchError::Malformed {
                position: batch.bytes().len(),
                reason: "bytes after the batch",
            }));
        }
        batch.validate()?;
        let max_record = u64::from(self.config.max_record_bytes);
        for (index, record) in batch.records().enumerate() {
            let size = record?.encoded_bytes as u64;
            if size > max_record {
                return Err(LogError::RecordTooLarge {
                    index,
                    size,
                    max: max_record,
                });
            }
        }
        let header = *batch.header();
        with_scratch(|scratch| {
            scratch.extend_from_slice(bytes);
            self.append_checked(scratch, header.offset_count(), header.max_timestamp)
        })
    }

    fn check_batch_size(&self, size: usize) -> Result<(), LogError> {
        let max = u64::from(self.config.max_batch_bytes);
        if size as u64 > max {
            return Err(LogError::BatchTooLarge {
                size: size as u64,
                max,
            });
        }
        Ok(())
    }

    fn append_checked(
        &self,
        bytes: &mut [u8],
        offset_count: u64,
        max_timestamp: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_batch_size(bytes.len())?;
        self.appending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let written = {
            let mut inner = lock(&self.inner);
            self.write_locked(&mut inner, bytes, offset_count, max_timestamp)
                .map(|info| (info, self.commit.epoch(), self.flush_due(&inner)))
        };
        self.appending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let (info, epoch, flush_due) = written?;
        match self.config.flush {
            FlushPolicy::Always => self.wait_durable(info.last_offset + 1, epoch)?,
            FlushPolicy::Interval { .. } if flush_due => self.flush()?,
            FlushPolicy::Interval { .. } | FlushPolicy::Never => {}
        }
        Ok(info)
    }

    fn flush_due(&self, inner: &Inner) -> bool {
        match self.config.flush {
            FlushPolicy::Interval {
                interval_ms,
                interval_bytes,
            } => {
                inner.unflushed_bytes > 0
                    && (inner.unflushed_bytes >= interval_bytes
                        || self.clock.now_ms().saturating_sub(inner.last_flush_ms) >= interval_ms)
            }
            FlushPolicy::Always | FlushPolicy::Never => false,
        }
    }

    fn write_locked(
        &self,
        inner: &mut Inner,
        bytes: &mut [u8],
        offset_count: u64,
        max_timestamp: i64,
    ) -> Result<AppendInfo, LogError> {
        inner.check_usable()?;
        let now = self.clock.now_ms();
        let length = bytes.len() as u64;
        let active = inner.active();
        let too_big = u64::from(active.size) + length > u64::from(self.config.segment_bytes);
        let too_old = now.saturating_sub(active.created_ms) >= self.config.segment_ms;
        let offsets_full =
            inner.next_offset + offset_count - active.base_offset > u64::from(u32::MAX);
        if !active.is_empty() && (too_big || too_old || offsets_full) {
            self.roll_locked(inner, now)?;
        }
        let base_offset = inner.next_offset;
        let epoch = inner.leader_epoch;
        let interval = self.config.index_interval_bytes;
        let active = inner.active_mut();
        let position = active.size;
        batch::stamp(bytes, base_offset, epoch, active.synced_position);
        if let Err(source) = active.file.write_at(bytes, u64::from(position)) {
            let error = LogError::io("appending to", active.name(), source);
            // Drop whatever part of the batch was written, so the next
            // append starts at a batch boundary.
            if let Err(undo) = active.file.set_len(u64::from(position)) {
                let cause = format!("{error}; then truncating back failed: {undo}");
                self.fail_locked(inner, cause);
            }
            return Err(error);
        }
        let relative = active.relative(base_offset);
        if let SegmentIndex::Building(builder) = &mut active.index {
            builder.add_batch(relative, position, max_timestamp, interval);
        }
        if active
            .max_timestamp
            .is_none_or(|(max, _)| max_timestamp > max)
        {
            active.max_timestamp = Some((max_timestamp, base_offset));
        }
        active.size += length as u32;
        active.next_offset = base_offset + offset_count;
        inner.next_offset = base_offset + offset_count;
        inner.unflushed_bytes += length;
        self.appended_batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.config.flush != FlushPolicy::Always {
            inner.high_watermark = inner.next_offset;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: base_offset + offset_count - 1,
            record_count: BatchHeader::parse(bytes).map_or(0, |header| header.record_count),
            max_timestamp,
        })
    }

    fn fail_locked(&self, inner: &mut Inner, cause: String) {
        tracing::error!(%cause, "partition log failed; it must be reopened");
        if inner.failure.is_none() {
            inner.failure = Some(cause);
        }
        self.commit.fail();
    }

    /// Seals the active segment and starts a new one at the log end. On
    /// failure the active segment stays active.
    fn roll_locked(&self, inner: &mut Inner, now: u64) -> Result<(), LogError> {
        let base_offset = inner.next_offset;
        let storage = self.storage.as_ref();
        if inner.active().is_empty() {
            return Ok(());
        }
        // The new file first: a failed roll must leave the active segment
        // able to take appends. A file left by an earlier failed roll is
        // empty and is reused.
        let file = open_log_file(storage, base_offset, OpenMode::CreateIfMissing)?;
        let length = file.len().map_err(|source| {
            LogError::io(
                "reading the length of",
                segment::log_file_name(base_offset),
                source,
            )
        })?;
        if length != 0 {
            return Err(LogError::Corrupt {
                segment: segment::log_file_name(base_offset),
                position: 0,
                reason: "a segment past the end of the log holds data".into(),
            });
        }
        let active = inner.active_mut();
        let SegmentIndex::Building(builder) = &mut active.index else {
            unreachable!("the active segment builds its index");
        };
        builder.seal();
        let files = match write_index_files(storage, active.base_offset, builder) {
            Ok(files) => files,
            Err(error) => {
                // Best effort: recovery also removes empty segment files
                // that are not the last one.
                let _ = storage.remove_file(&segment::log_file_name(base_offset));
                return Err(error);
            }
        };
        let SegmentIndex::Building(builder) =
            std::mem::replace(&mut active.index, SegmentIndex::Unloaded)
        else {
            unreachable!("checked above");
        };
        active.index = SegmentIndex::Sealed {
            offsets: IndexBytes::Memory(builder.offsets),
            times: IndexBytes::Memory(builder.times),
        };
        active.unsynced_index_files = files;
        inner
            .segments
            .insert(base_offset, Segment::empty(base_offset, file, now));
        inner.directory_dirty = true;
        tracing::debug!(base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Seals the active segment now (if it holds anything) and starts a new
    /// one.
    pub fn roll(&self) -> Result<(), LogError> {
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let now = self.clock.now_ms();
        self.roll_locked(&mut inner, now)
    }

    fn wait_durable(&self, target: u64, epoch: u64) -> Result<(), LogError> {
        match self.commit.wait_durable(target, epoch, || self.sync_now()) {
            Ok(()) => Ok(()),
            Err(CommitError::Sync(error)) => Err(error),
            Err(CommitError::Failed) => {
                let inner = lock(&self.inner);
                Err(LogError::Failed {
                    cause: inner
                        .failure
                        .clone()
                        .unwrap_or_else(|| "a sync failed".into()),
                })
            }
        }
    }

    /// Makes every appended record durable.
    pub fn flush(&self) -> Result<(), LogError> {
        let (target, epoch) = {
            let inner = lock(&self.inner);
            inner.check_usable()?;
            (inner.next_offset, self.commit.epoch())
        };
        self.wait_durable(target, epoch)?;
        let stale = lock(&self.inner).checkpoint_stale;
        if stale {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Flushes if the interval policy says a flush is due. Owners call this
    /// from a timer so that an idle log is flushed too; the log has no
    /// threads of its own.
    pub fn tick(&self) -> Result<(), LogError> {
        let due = self.flush_due(&lock(&self.inner));
        if due {
            self.flush()?;
        }
        Ok(())
    }

    /// The group-commit leader's sync.
    fn sync_now(&self) -> Result<u64, LogError> {
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A sync covers only what was written before it starts. The
        // appenders the last sync released are about to write their next
        // batches; if this sync started at once, they would wait for the
        // one after, and syncs would alternate between two halves of the
        // appenders. So the leader yields, a bounded number of times, until
        // as many appenders wait as did last time and none is mid-write.
        for _ in 0..LEADER_YIELDS_MAX {
            let (waiting, last_round) = self.commit.participants();
            let writing = self.appending.load(std::sync::atomic::Ordering::SeqCst);
            if waiting >= last_round && writing == 0 {
                break;
            }
            std::thread::yield_now();
        }
        let plan = {
            let mut inner = lock(&self.inner);
            inner.check_usable()?;
            self.plan_sync(&mut inner)
        };
        if let Err(error) = self.execute_sync(&plan) {
            let mut inner = lock(&self.inner);
            self.fail_locked(&mut inner, error.to_string());
            return Err(error);
        }
        let checkpoint_due = {
            let mut inner = lock(&self.inner);
            self.finish_sync(&mut inner, &plan)
        };
        if checkpoint_due {
            self.write_checkpoint_or_mark_stale();
        }
        Ok(plan.target)
    }

    fn plan_sync(&self, inner: &mut Inner) -> SyncPlan {
        let active_base = inner.active_base();
        let sealed = inner
            .segments
            .values()
            .filter(|segment| !segment.trusted && segment.base_offset != active_base)
            .map(|segment| {
                (
                    segment.base_offset,
                    Arc::clone(&segment.file),
                    segment.unsynced_index_files.clone(),
                )
            })
            .collect();
        let directory = std::mem::take(&mut inner.directory_dirty);
        let active = inner.active();
        SyncPlan {
            target: inner.next_offset,
            epoch: self.commit.epoch(),
            sealed,
            directory,
            active_base,
            active_file: Arc::clone(&active.file),
            active_size: active.size,
        }
    }

    fn execute_sync(&self, plan: &SyncPlan) -> Result<(), LogError> {
        // Sealed segments first: a batch of a later segment that records
        // synced bytes implies every earlier segment is durable.
        for (base, file, index_files) in &plan.sealed {
            file.sync()
                .map_err(|source| LogError::io("syncing", segment::log_file_name(*base), source))?;
            for index_file in index_files {
                index_file.sync().map_err(|source| {
                    LogError::io("syncing an index of", segment::log_file_name(*base), source)
                })?;
            }
        }
        if plan.directory {
            self.storage
                .sync_dir()
                .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        }
        plan.active_file.sync().map_err(|source| {
            LogError::io("syncing", segment::log_file_name(plan.active_base), source)
        })
    }

    /// Records what a sync made durable; returns whether the checkpoint
    /// should be rewritten.
    fn finish_sync(&self, inner: &mut Inner, plan: &SyncPlan) -> bool {
        if plan.epoch != self.commit.epoch() {
            // A truncation synced and rewrote everything meanwhile.
            return false;
        }
        let active_base = inner.active_base();
        let mut newly_trusted = false;
        for (base, _, _) in &plan.sealed {
            if let Some(segment) = inner.segments.get_mut(base) {
                if *base != active_base && !segment.trusted {
                    segment.trusted = true;
                    segment.synced_position = segment.size;
                    segment.unsynced_index_files.clear();
                    newly_trusted = true;
                }
            }
        }
        if let Some(segment) = inner.segments.get_mut(&plan.active_base) {
            segment.synced_position = segment
                .synced_position
                .max(plan.active_size.min(segment.size));
        }
        if self.config.flush == FlushPolicy::Always {
            inner.high_watermark = inner.high_watermark.max(plan.target.min(inner.next_offset));
        }
        inner.unflushed_bytes = 0;
        inner.last_flush_ms = self.clock.now_ms();
        newly_trusted || inner.checkpoint_stale
    }

    /// Syncs everything under the lock (for operations that hold it).
    fn sync_locked(&self, inner: &mut Inner) -> Result<(), LogError> {
        let plan = self.plan_sync(inner);
        if let Err(error) = self.execute_sync(&plan) {
            self.fail_locked(inner, error.to_string());
            return Err(error);
        }
        self.finish_sync(inner, &plan);
        if self.config.flush == FlushPolicy::Always {
            inner.high_watermark = inner.next_offset;
        }
        self.commit.advance(inner.next_offset);
        Ok(())
    }

    fn write_checkpoint(&self) -> Result<(), LogError> {
        let _guard = lock(&self.checkpoint_lock);
        let checkpoint = lock(&self.inner).checkpoint(false);
        let result = checkpoint.write(self.storage.as_ref());
        lock(&self.inner).checkpoint_stale = result.is_err();
        result
    }

    /// A checkpoint that fails to be written leaves the previous one, which
    /// is valid (it trusts fewer segments), so the failure only delays the
    /// next recovery; the write is retried at the next sync.
    fn write_checkpoint_or_mark_stale(&self) {
        if let Err(error) = self.write_checkpoint() {
            tracing::warn!(%error, "writing the checkpoint failed; will retry");
        }
    }

    /// Reads whole batches from `offset` on, up to about `max_bytes` (at
    /// least one batch is returned if there is one, however large).
    pub fn read(&self, offset: u64, max_bytes: u32) -> Result<ReadResult, LogError> {
        let mut bytes = Vec::new();
        let info = self.read_into(offset, max_bytes, &mut bytes)?;
        Ok(ReadResult { bytes, info })
    }

    /// Like [`Partition::read`], into a buffer the caller reuses.
    pub fn read_into(
        &self,
        offset: u64,
        max_bytes: u32,
        out: &mut Vec<u8>,
    ) -> Result<ReadInfo, LogError> {
        let result = self.read_into_buffer(offset, max_bytes, out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn read_into_buffer(
        &self,
        offset: u64,
        max_bytes: u32,
        out: &mut Vec<u8>,
    ) -> Result<ReadInfo, LogError> {
        let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
        let mut rebuilt = false;
        loop {
            let (plan, info) = {
                let mut inner = lock(&self.inner);
                inner.check_usable()?;
                let info = ReadInfo {
                    requested_offset: offset,
                    next_offset: offset,
                    high_watermark: inner.high_watermark,
                    log_start_offset: inner.log_start_offset,
                };
                if offset < inner.log_start_offset || offset > inner.high_watermark {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        log_start_offset: inner.log_start_offset,
                        high_watermark: inner.high_watermark,
                    });
                }
                if offset == inner.high_watermark {
                    out.clear();
                    return Ok(info);
                }
                let storage = Arc::clone(&self.storage);
                let interval = self.config.index_interval_bytes;
                let segment = inner
                    .segment_for(offset)
                    .expect("offsets from the log start on are in a segment");
                segment.load_index(storage.as_ref(), interval)?;
                let (position, batch_base) = segment.locate(offset);
                let plan = ReadPlan {
                    file: Arc::clone(&segment.file),
                    base_offset: segment.base_offset,
                    end: segment.size,
                    position,
                    batch_base,
                    from_index: position > 0,
                };
                (plan, info)
            };
            match self.read_segment(&plan, &info, max_bytes, out) {
                Ok(next_offset) => {
                    return Ok(ReadInfo {
                        next_offset,
                        ..info
                    })
                }
                Err(ReadFailure::IndexDisagrees) if !rebuilt => {
                    rebuilt = true;
                    tracing::warn!(
                        segment = %segment::log_file_name(plan.base_offset),
                        "offset index disagrees with the log; rebuilding it"
                    );
                    let mut inner = lock(&self.inner);
                    let storage = Arc::clone(&self.storage);
                    if let Some(segment) = inner.segments.get_mut(&plan.base_offset) {
                        if matches!(segment.index, SegmentIndex::Building(_)) {
                            let scan = segment::scan(
                                segment.file.as_ref(),
                                segment.base_offset,
                                u64::from(segment.size),
                                self.config.index_interval_bytes,
                            )
                            .map_err(|source| LogError::io("scanning", segment.name(), source))?;
                            segment.index = SegmentIndex::Building(scan.index);
                        } else {
                            segment.rebuild_index(
                                storage.as_ref(),
                                self.config.index_interval_bytes,
                            )?;
                        }
                    }
                }
                Err(ReadFailure::IndexDisagrees) => {
                    return Err(LogError::Corrupt {
                        segment: segment::log_file_name(plan.base_offset),
                        position: u64::from(plan.position),
                        reason: "the batch at the indexed position does not match its index entry"
                            .into(),
                    })
                }
                Err(ReadFailure::Corrupt { position, reason }) => {
                    return Err(LogError::Corrupt {
                        segment: segment::log_file_name(plan.base_offset),
                        position,
                        reason,
                    })
                }
                Err(ReadFailure::Io(source)) => {
                    return Err(LogError::io(
                        "reading",
                        segment::log_file_name(plan.base_offset),
                        source,
                    ))
                }
            }
        }
    }

    /// Reads batches of one segment into `out`; returns the next offset.
    fn read_segment(
        &self,
        plan: &ReadPlan,
        info: &ReadInfo,
        max_bytes: u32,
        out: &mut Vec<u8>,
    ) -> Result<u64, ReadFailure> {
        let start = u64::from(plan.position);
        let end = u64::from(plan.end);
        let slack = u64::from(self.config.index_interval_bytes) + HEADER_BYTES as u64;
        let mut buffered = 0usize;
        let initial = (end - start).min(u64::from(max_bytes) + slack) as usize;
        fill(plan.file.as_ref(), out, &mut buffered, start, initial).map_err(ReadFailure::Io)?;
        let mut cursor = 0usize;
        let mut first: Option<usize> = None;
        let mut expected = plan.batch_base;
        let mut next_offset = info.requested_offset;
        while start + (cursor as u64) < end {
            let position = start + cursor as u64;
            if buffered - cursor < HEADER_BYTES {
                let more = (end - start - buffered as u64).min(64 << 10) as usize;
                if more == 0 {
                    break;
                }
                fill(plan.file.as_ref(), out, &mut buffered, start, more)
                    .map_err(ReadFailure::Io)?;
                continue;
            }
            let header = match BatchHeader::parse(&out[cursor..buffered]) {
                Ok(header) => header,
                Err(_) if cursor == 0 && plan.from_index => {
                    return Err(ReadFailure::IndexDisagrees)
                }
                Err(_) => {
                    self.reread_batch(plan, position, out, cursor, &mut buffered)?;
                    continue;
                }
            };
            if header.base_offset != expected {
                if cursor == 0 && plan.from_index {
                    return Err(ReadFailure::IndexDisagrees);
                }
                self.reread_batch(plan, position, out, cursor, &mut buffered)?;
                let header = BatchHeader::parse(&out[cursor..buffered])
                    .map_err(|error| corrupt(position, error))?;
                if header.base_offset != expected {
                    return Err(ReadFailure::Corrupt {
                        position,
                        reason: format!(
                            "batch has base offset {}, expected {expected}",
                            header.base_offset
                        ),
                    });
                }
                continue;
            }
            if header.base_offset >= info.high_watermark {
                break;
            }
            let length = header.batch_length as usize;
            if let Some(first) = first {
                if cursor + length - first > max_bytes as usize {
                    break;
                }
            }
            if buffered - cursor < length {
                if position + length as u64 > end {
                    return Err(ReadFailure::Corrupt {
                        position,
                        reason: "batch runs past the end of the segment".into(),
                    });
                }
                let more = (length - (buffered - cursor)).max(64 << 10);
                let more = (end - start - buffered as u64).min(more as u64) as usize;
                fill(plan.file.as_ref(), out, &mut buffered, start, more)
                    .map_err(ReadFailure::Io)?;
                continue;
            }
            if Batch::parse(&out[cursor..cursor + length]).is_err() {
                self.reread_batch(plan, position, out, cursor, &mut buffered)?;
                continue;
            }
            if header.next_offset() > info.requested_offset && first.is_none() {
                first = Some(cursor);
            }
            if first.is_some() {
                next_offset = header.next_offset();
            }
            expected = header.next_offset();
            cursor += length;
        }
        match first {
            Some(first) => {
                out.truncate(cursor);
                out.drain(..first);
            }
            None => out.clear(),
        }
        Ok(next_offset)
    }

    /// Reads the batch at `position` again, straight from the storage, into
    /// `out[cursor..]`, until two reads agree; fails as corrupt if the bytes
    /// that the storage holds are not a valid batch. The rest of the buffer
    /// is dropped.
    fn reread_batch(
        &self,
        plan: &ReadPlan,
        position: u64,
        out: &mut Vec<u8>,
        cursor: usize,
        buffered: &mut usize,
    ) -> Result<(), ReadFailure> {
        let bytes =
            read_batch_bytes(plan.file.as_ref(), position).map_err(|error| match error {
                segment::ScanError::Io(error) => ReadFailure::Io(error),
                other => ReadFailure::Corrupt {
                    position,
                    reason: other.to_string(),
                },
            })?;
        if position + bytes.len() as u64 > u64::from(plan.end) {
            return Err(ReadFailure::Corrupt {
                position,
                reason: "batch runs past the end of the segment".into(),
            });
        }
        out.truncate(cursor);
        out.extend_from_slice(&bytes);
        *buffered = out.len();
        Ok(())
    }

    /// The first record with a timestamp at or after `timestamp_ms`, among
    /// the readable records, or `None` if every record is older.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let (start_offset, high_watermark, candidates) = {
            let mut inner = lock(&self.inner);
            inner.check_usable()?;
            let storage = Arc::clone(&self.storage);
            let interval = self.config.index_interval_bytes;
            let (log_start, high_watermark) = (inner.log_start_offset, inner.high_watermark);
            let mut candidates = Vec::new();
            for segment in inner.segments.values_mut() {
                if segment
                    .max_timestamp
                    .is_none_or(|(max, _)| max < timestamp_ms)
                {
                    continue;
                }
                segment.load_index(storage.as_ref(), interval)?;
                let from = segment
                    .time_index()
                    .and_then(|times| index::lookup_time(times, timestamp_ms))
                    .map_or(segment.base_offset, |entry| {
                        segment.base_offset + u64::from(entry.relative_offset)
                    });
                let (position, _) = segment.locate(from.max(log_start));
                candidates.push((
                    segment.base_offset,
                    Arc::clone(&segment.file),
                    position,
                    segment.size,
                ));
            }
            (log_start, high_watermark, candidates)
        };
        for (base, file, position, size) in candidates {
            let mut position = u64::from(position);
            while position < u64::from(size) {
                let bytes =
                    read_batch_bytes(file.as_ref(), position).map_err(|error| match error {
                        segment::ScanError::Io(source) => {
                            LogError::io("reading", segment::log_file_name(base), source)
                        }
                        other => LogError::Corrupt {
                            segment: segment::log_file_name(base),
                            position,
                            reason: other.to_string(),
                        },
                    })?;
                let batch = Batch::parse(&bytes).map_err(|error| LogError::Corrupt {
                    segment: segment::log_file_name(base),
                    position,
                    reason: error.to_string(),
                })?;
                let header = *batch.header();
                if header.base_offset >= high_watermark {
                    return Ok(None);
                }
                if header.max_timestamp >= timestamp_ms && header.next_offset() > start_offset {
                    for record in batch.records() {
                        let record = record.map_err(|error| LogError::Corrupt {
                            segment: segment::log_file_name(base),
                            position,
                            reason: error.to_string(),
                        })?;
                        if record.offset >= start_offset && record.timestamp_ms >= timestamp_ms {
                            return Ok(Some(TimestampOffset {
                                offset: record.offset,
                                timestamp_ms: record.timestamp_ms,
                            }));
                        }
                    }
                }
                position += u64::from(header.batch_length);
            }
        }
        Ok(None)
    }

    /// Removes every record at or after `end_offset` (rounded down to the
    /// start of the batch holding it), for a replica whose log diverged. A
    /// cut that rounds down below the log start offset empties the log and
    /// moves the start down to the cut.
    /// Everything appended before is made durable first. Returns the new log
    /// end offset.
    pub fn truncate(&self, end_offset: u64) -> Result<u64, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        if end_offset >= inner.next_offset {
            return Ok(inner.next_offset);
        }
        if end_offset < inner.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: end_offset,
                log_start_offset: inner.log_start_offset,
                high_watermark: inner.high_watermark,
            });
        }
        self.sync_locked(&mut inner)?;
        let result = self.truncate_locked(&mut inner, end_offset);
        if let Err(error) = &result {
            self.fail_locked(&mut inner, format!("truncation failed: {error}"));
        }
        result
    }

    fn truncate_locked(&self, inner: &mut Inner, end_offset: u64) -> Result<u64, LogError> {
        let storage = Arc::clone(&self.storage);
        let interval = self.config.index_interval_bytes;
        let segment = inner
            .segment_for(end_offset)
            .expect("offsets from the log start on are in a segment");
        let cut_base = segment.base_offset;
        segment.load_index(storage.as_ref(), interval)?;
        // Find the batch holding `end_offset`.
        let (mut position, _) = segment.locate(end_offset);
        let mut new_end = segment.base_offset;
        while position < segment.size {
            let header = segment::read_batch_at(segment.file.as_ref(), u64::from(position))
                .map_err(|error| LogError::Corrupt {
                    segment: segment.name(),
                    position: u64::from(position),
                    reason: error.to_string(),
                })?;
            if header.next_offset() > end_offset {
                new_end = header.base_offset;
                break;
            }
            position += header.batch_length;
            new_end = header.next_offset();
        }
        // A cut below the log start (into the batch holding it) empties
        // the log, which then starts at the cut.
        inner.log_start_offset = inner.log_start_offset.min(new_end);
        // First make the cut segment and all later ones untrusted, durably.
        for (_, segment) in inner.segments.range_mut(cut_base..) {
            segment.trusted = false;
        }
        inner.checkpoint(false).write(storage.as_ref())?;
        let later: Vec<u64> = inner
            .segments
            .range(cut_base + 1..)
            .map(|(base, _)| *base)
            .collect();
        for base in later {
            inner.segments.remove(&base);
            remove_segment_files(storage.as_ref(), base)?;
        }
        for name in [index_file_name(cut_base), time_index_file_name(cut_base)] {
            remove_if_present(storage.as_ref(), &name)?;
        }
        storage
            .sync_dir()
            .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        let segment = inner
            .segments
            .get_mut(&cut_base)
            .expect("the cut segment is kept");
        segment
            .file
            .set_len(u64::from(position))
            .map_err(|source| LogError::io("truncating", segment.name(), source))?;
        segment
            .file
            .sync()
            .map_err(|source| LogError::io("syncing", segment.name(), source))?;
        let scan = segment::scan(
            segment.file.as_ref(),
            cut_base,
            u64::from(position),
            interval,
        )
        .map_err(|source| LogError::io("scanning", segment.name(), source))?;
        if let Some(stop) = scan.stop {
            return Err(LogError::Corrupt {
                segment: segment.name(),
                position: u64::from(stop.position),
                reason: stop.reason.to_string(),
            });
        }
        segment.size = position;
        segment.synced_position = position;
        segment.next_offset = new_end;
        segment.max_timestamp = scan.max_timestamp;
        segment.index = SegmentIndex::Building(scan.index);
        segment.unsynced_index_files.clear();
        inner.next_offset = new_end;
        inner.high_watermark = inner.high_watermark.min(new_end);
        inner.unflushed_bytes = 0;
        self.commit.truncated(new_end);
        tracing::info!(end_offset = new_end, "truncated the log");
        Ok(new_end)
    }

    /// Makes `offset` the log start offset, deleting the segments wholly
    /// before it (the active segment is kept). `offset` may not pass the
    /// high watermark. Returns the log start offset.
    pub fn delete_before(&self, offset: u64) -> Result<u64, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        if offset > inner.high_watermark {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: inner.log_start_offset,
                high_watermark: inner.high_watermark,
            });
        }
        if offset <= inner.log_start_offset {
            return Ok(inner.log_start_offset);
        }
        self.delete_before_locked(&mut inner, offset)?;
        Ok(inner.log_start_offset)
    }

    fn delete_before_locked(
        &self,
        inner: &mut Inner,
        offset: u64,
    ) -> Result<Vec<(u64, u32)>, LogError> {
        let active_base = inner.active_base();
        let doomed: Vec<(u64, u32)> = inner
            .segments
            .values()
            .filter(|segment| segment.base_offset != active_base && segment.next_offset <= offset)
            .map(|segment| (segment.base_offset, segment.size))
            .collect();
        let previous_start = inner.log_start_offset;
        inner.log_start_offset = offset;
        let mut checkpoint = inner.checkpoint(false);
        checkpoint
            .segments
            .retain(|summary| summary.next_offset > offset || summary.base_offset == active_base);
        if let Err(error) = checkpoint.write(self.storage.as_ref()) {
            inner.log_start_offset = previous_start;
            return Err(error);
        }
        for (base, _) in &doomed {
            inner.segments.remove(base);
            remove_segment_files(self.storage.as_ref(), *base)?;
            inner.directory_dirty = true;
        }
        Ok(doomed)
    }

    /// Deletes sealed segments past the retention time or size (whole
    /// segments, oldest first; never the active one).
    pub fn apply_retention(&self) -> Result<RetentionReport, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let now = self.clock.now_ms() as i64;
        let mut remaining = inner.size_bytes();
        let mut cut = None;
        let sealed = inner.segments.len() - 1;
        for segment in inner.segments.values().take(sealed) {
            let expired = self.config.retention_ms.is_some_and(|retention| {
                segment
                    .max_timestamp
                    .is_none_or(|(max, _)| max < now.saturating_sub(retention as i64))
            });
            let oversize = self
                .config
                .retention_bytes
                .is_some_and(|limit| remaining - u64::from(segment.size) >= limit);
            if !(expired || oversize) || segment.next_offset > inner.high_watermark {
                break;
            }
            remaining -= u64::from(segment.size);
            cut = Some(segment.next_offset);
        }
        let mut report = RetentionReport {
            log_start_offset: inner.log_start_offset,
            ..RetentionReport::default()
        };
        if let Some(cut) = cut.filter(|cut| *cut > inner.log_start_offset) {
            let deleted = self.delete_before_locked(&mut inner, cut)?;
            report.bytes_deleted = deleted.iter().map(|(_, size)| u64::from(*size)).sum();
            report.segments_deleted = deleted.into_iter().map(|(base, _)| base).collect();
            report.log_start_offset = inner.log_start_offset;
            tracing::info!(
                segments = report.segments_deleted.len(),
                bytes = report.bytes_deleted,
                log_start_offset = report.log_start_offset,
                "retention deleted segments"
            );
        }
        Ok(report)
    }

    /// Syncs everything and writes a checkpoint that lets the next open skip
    /// recovery. The log refuses further work afterwards.
    pub fn close(&self) -> Result<(), LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Ok(());
        }
        if let Err(error) = inner.check_usable() {
            inner.closed = true;
            return Err(error);
        }
        self.sync_locked(&mut inner)?;
        let storage = self.storage.as_ref();
        let active = inner.active_mut();
        let SegmentIndex::Building(builder) = &active.index else {
            unreachable!("the active segment builds its index");
        };
        for file in write_index_files(storage, active.base_offset, builder)? {
            file.sync()
                .map_err(|source| LogError::io("syncing an index of", active.name(), source))?;
        }
        storage
            .sync_dir()
            .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        for segment in inner.segments.values_mut() {
            segment.trusted = true;
        }
        inner.checkpoint(true).write(storage)?;
        inner.closed = true;
        tracing::info!(log_end_offset = inner.next_offset, "closed partition log");
        Ok(())
    }

    /// Reads every batch of every segment and checks it (CRC, offsets),
    /// for operators. Returns the number of batches checked.
    pub fn verify(&self) -> Result<u64, LogError> {
        let segments: Vec<(u64, Arc<dyn File>, u32)> = {
            let inner = lock(&self.inner);
            inner.check_usable()?;
            inner
                .segments
                .values()
                .map(|segment| (segment.base_offset, Arc::clone(&segment.file), segment.size))
                .collect()
        };
        let mut batches = 0;
        for (base, file, size) in segments {
            let scan = segment::scan(
                file.as_ref(),
                base,
                u64::from(size),
                self.config.index_interval_bytes,
            )
            .map_err(|source| LogError::io("verifying", segment::log_file_name(base), source))?;
            if let Some(stop) = scan.stop {
                return Err(LogError::Corrupt {
                    segment: segment::log_file_name(base),
                    position: u64::from(stop.position),
                    reason: stop.reason.to_string(),
                });
            }
            batches += scan.batches;
        }
        Ok(batches)
    }
}

/// The most memory a thread keeps between appends for encoding batches.
const SCRATCH_BYTES_KEPT_MAX: usize = 4 << 20;

/// Runs `action` with this thread's empty encoding buffer, reused across
/// appends so that encoding a batch does not allocate.
fn with_scratch<T>(action: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        // A nested append (there is none today) gets a buffer of its own.
        let mut taken = cell.take();
        taken.clear();
        let result = action(&mut taken);
        if taken.capacity() <= SCRATCH_BYTES_KEPT_MAX {
            *cell.borrow_mut() = taken;
        }
        result
    })
}

struct ReadPlan {
    file: Arc<dyn File>,
    base_offset: u64,
    end: u32,
    position: u32,
    batch_base: u64,
    from_index: bool,
}

/// Reads `wanted` more bytes of the file into `out[*buffered..]`, from
/// `start + *buffered`.
fn fill(
    file: &dyn File,
    out: &mut Vec<u8>,
    buffered: &mut usize,
    start: u64,
    wanted: usize,
) -> std::io::Result<()> {
    if wanted == 0 {
        return Ok(());
    }
    // The buffer keeps its length between reads: bytes past `buffered`
    // are stale and only overwritten, never zeroed again.
    if out.len() < *buffered + wanted {
        out.resize(*buffered + wanted, 0);
    }
    let read = file.read_at(
        &mut out[*buffered..*buffered + wanted],
        start + *buffered as u64,
    )?;
    *buffered += read;
    if read < wanted {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "segment shorter than its recorded size",
        ));
    }
    Ok(())
}

fn corrupt(position: u64, error: batch::BatchError) -> ReadFailure {
    ReadFailure::Corrupt {
        position,
        reason: error.to_string(),
    }
}

/// Reads the whole batch at `position`, with reads that must agree twice
/// (see [`segment::read_stable`]), and checks it.
fn read_batch_bytes(file: &dyn File, position: u64) -> Result<Vec<u8>, segment::ScanError> {
    let header = segment::read_stable(file, position, HEADER_BYTES)?;
    let parsed = BatchHeader::parse(&header)?;
    let bytes = segment::read_stable(file, position, parsed.batch_length as usize)?;
    Batch::parse(&bytes)?;
    Ok(bytes)
}
