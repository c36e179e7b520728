//! Writing batches: native records, producers' batches (validated, then
//! checked against their producer's state), a leader's batches on a
//! follower; leader epochs; segment rolls and the producer snapshots they
//! leave.

use std::sync::atomic::Ordering;

use weir_io::sync::lock;
use weir_io::OpenMode;

use super::{AppendInfo, Inner, Partition};
use crate::batch::{
    self, Batch, BatchError, BatchHeader, BatchLimits, ProducerInfo, Record, BATCH_BYTES_LIMIT,
};
use crate::config::{FlushPolicy, HighWatermarkPolicy};
use crate::error::LogError;
use crate::frame::{frame_for, FRAME_BYTES};
use crate::index::IndexBytes;
use crate::producers::{parse_snapshot_file_name, snapshot_file_name, SequenceCheck};
use crate::segment::{self, open_log_file, write_index_files, Segment, SegmentIndex};

/// How many producer snapshots a partition keeps (the newest ones).
pub(crate) const PRODUCER_SNAPSHOTS_KEPT: usize = 3;

/// How a batch gets its base offset and leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// This node assigns them: the log end and the current epoch.
    Assign,
    /// This node assigns the base offset (the log end); the owner gives the
    /// epoch (a Raft leader's term), not older than the latest.
    AssignIn(u32),
    /// A leader assigned them; the batch must start at the log end.
    Keep,
}

impl Partition {
    /// Appends `records` as one batch and returns their offsets. With
    /// [`FlushPolicy::Always`] it returns once they are durable.
    pub fn append(
        &self,
        records: &[Record<'_>],
        producer: ProducerInfo,
    ) -> Result<AppendInfo, LogError> {
        let (info, commit_epoch) = self.write_records(records, producer)?;
        self.wait_per_policy(&info, commit_epoch)?;
        Ok(info)
    }

    /// Writes `records` as one batch and returns once it is written, not
    /// durable, whatever the flush policy: the owner drives syncs
    /// ([`Partition::sync`]).
    pub fn write(
        &self,
        records: &[Record<'_>],
        producer: ProducerInfo,
    ) -> Result<AppendInfo, LogError> {
        self.write_records(records, producer).map(|(info, _)| info)
    }

    /// Appends a producer's batch, as it came: checks it in full
    /// ([`Batch::validate`]), applies the idempotent producer's rules and
    /// writes it with the base offset and the leader epoch stamped (outside
    /// Kafka's CRC, so nothing else changes; `batch` itself is left as it
    /// is, so that it can be a slice of a request buffer). A retry of a
    /// batch already written gets its original offsets
    /// ([`AppendInfo::duplicate`]). With [`FlushPolicy::Always`] it
    /// returns once the records are durable.
    pub fn append_batch(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        let (info, commit_epoch) = self.write_producer_batch(batch, Stamp::Assign)?;
        self.wait_per_policy(&info, commit_epoch)?;
        Ok(info)
    }

    /// Like [`Partition::append_batch`], returning once written, not
    /// durable.
    pub fn write_batch(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        self.write_producer_batch(batch, Stamp::Assign)
            .map(|(info, _)| info)
    }

    /// Like [`Partition::write_batch`], stamping `epoch` rather than the
    /// latest epoch: for a Raft leader, whose term is the epoch. The epoch
    /// is recorded when the first batch of it is written, so an epoch in
    /// which this node wrote nothing leaves no trace. An epoch older than
    /// the latest is refused.
    pub fn write_batch_in_epoch(&self, batch: &[u8], epoch: u32) -> Result<AppendInfo, LogError> {
        self.write_producer_batch(batch, Stamp::AssignIn(epoch))
            .map(|(info, _)| info)
    }

    /// Appends a batch that a leader wrote, keeping its base offset and
    /// leader epoch: for a follower. The batch must start at this log's end
    /// and its epoch must not be older than the log's latest; it is checked
    /// against its CRCs, not decoded (its leader validated it). Returns once
    /// written; the owner drives syncs.
    pub fn append_replicated(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        check_replicated_size(batch.len())?;
        let parsed = whole_batch(batch)?;
        let max_timestamp = parsed.header().max_timestamp;
        let mut inner = lock(&self.inner);
        self.write_locked(&mut inner, batch, Stamp::Keep, max_timestamp)
    }

    /// [`Partition::append_replicated`] of a batch the caller has already
    /// checked whole with [`batch::check_whole`] (weir-replication's wire
    /// codec checks every batch a follower receives before raft sees it):
    /// its CRC is not computed a second time. Its header is still read and
    /// its length checked.
    pub fn append_replicated_verified(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        check_replicated_size(batch.len())?;
        let header = BatchHeader::parse(batch)?;
        // Before the write: the caller's check held (a whole batch).
        assert_eq!(
            header.batch_bytes as usize,
            batch.len(),
            "a verified batch is exactly one whole batch"
        );
        let mut inner = lock(&self.inner);
        self.write_locked(&mut inner, batch, Stamp::Keep, header.max_timestamp)
    }

    /// Makes `epoch` the leader epoch stamped on batches this node appends
    /// from now on, starting at the log end, and records it durably. An
    /// epoch older than the latest is refused.
    pub fn set_leader_epoch(&self, epoch: u32) -> Result<(), LogError> {
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let start = inner.next_offset;
        self.assign_epoch_locked(&mut inner, epoch, start)
    }

    /// Seals the active segment now (if it holds anything) and starts a new
    /// one.
    pub fn roll(&self) -> Result<(), LogError> {
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        let now = self.clock.now_ms();
        self.roll_locked(&mut inner, now)
    }

    fn write_records(
        &self,
        records: &[Record<'_>],
        producer: ProducerInfo,
    ) -> Result<(AppendInfo, u64), LogError> {
        let max_record = self.config.max_record_bytes as usize;
        with_scratch(|scratch| {
            let encoded = batch::encode_compressed(
                records,
                producer,
                self.config.compression,
                max_record,
                scratch,
            )
            .map_err(record_too_large)?;
            self.check_batch_size(scratch.len())?;
            let header = BatchHeader::parse(scratch)?;
            self.write_checked(scratch, &header, encoded.max_timestamp, Stamp::Assign)
        })
    }

    fn write_producer_batch(
        &self,
        batch: &[u8],
        stamp: Stamp,
    ) -> Result<(AppendInfo, u64), LogError> {
        self.check_batch_size(batch.len())?;
        let parsed = whole_batch(batch)?;
        let attributes = parsed.header().attributes;
        if attributes.is_transactional() {
            return Err(BatchError::Unsupported {
                reason: "transactional batches (weir has no transaction coordinator)",
            }
            .into());
        }
        if attributes.is_control() {
            return Err(BatchError::Unsupported {
                reason: "control batches from a producer",
            }
            .into());
        }
        let limits = BatchLimits {
            record_bytes_max: self.config.max_record_bytes as usize,
            uncompressed_bytes_max: self.config.max_uncompressed_batch_bytes as usize,
        };
        let validated = with_decompression_scratch(|scratch| parsed.validate(&limits, scratch))
            .map_err(record_too_large)?;
        let header = *parsed.header();
        self.write_checked(batch, &header, validated.max_timestamp, stamp)
    }

    /// Applies the producer's rules and writes under the lock; returns the
    /// group-commit epoch read with the write.
    fn write_checked(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        max_timestamp: i64,
        stamp: Stamp,
    ) -> Result<(AppendInfo, u64), LogError> {
        self.appending.fetch_add(1, Ordering::SeqCst);
        let written = {
            let mut inner = lock(&self.inner);
            let check = match header.producer.is_idempotent() {
                true => inner.producers.check(header)?,
                false => SequenceCheck::Append,
            };
            match check {
                SequenceCheck::Append => self.write_locked(&mut inner, batch, stamp, max_timestamp),
                SequenceCheck::Duplicate(original) => {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    Ok(AppendInfo {
                        base_offset: original.first_offset,
                        last_offset: original.last_offset,
                        record_count: header.record_count,
                        max_timestamp: original.max_timestamp,
                        duplicate: true,
                    })
                }
            }
            .map(|info| (info, self.commit.epoch()))
        };
        self.appending.fetch_sub(1, Ordering::SeqCst);
        written
    }

    /// Waits for durability as the flush policy says.
    fn wait_per_policy(&self, info: &AppendInfo, commit_epoch: u64) -> Result<(), LogError> {
        match self.config.flush {
            FlushPolicy::Always => self.wait_durable(info.last_offset + 1, commit_epoch),
            FlushPolicy::Interval { .. } if self.flush_due(&lock(&self.inner)) => self.flush(),
            FlushPolicy::Interval { .. } | FlushPolicy::Never => Ok(()),
        }
    }

    /// A batch this node appends as leader (or alone) keeps to the log's
    /// batch limit as it is now (`max.message.bytes`).
    fn check_batch_size(&self, size: usize) -> Result<(), LogError> {
        let max = u64::from(self.live().max_batch_bytes);
        if size as u64 > max {
            return Err(LogError::BatchTooLarge {
                size: size as u64,
                max,
            });
        }
        Ok(())
    }

    /// Writes one checked batch at the end of the active segment, with its
    /// frame, and records it: offsets, indexes, epoch, producer.
    fn write_locked(
        &self,
        inner: &mut Inner,
        batch: &[u8],
        stamp: Stamp,
        max_timestamp: i64,
    ) -> Result<AppendInfo, LogError> {
        inner.check_usable()?;
        let header = BatchHeader::parse(batch)?;
        let (base_offset, epoch) = self.offsets_for(inner, &header, stamp)?;
        let offset_count = header.offset_count();
        let stored_bytes = u32::try_from(FRAME_BYTES + batch.len()).expect("a batch below 64 MiB");
        self.roll_if_due(inner, stored_bytes, offset_count)?;
        self.assign_epoch_locked(inner, epoch, base_offset)?;
        // The header with the offset and epoch stamped, written in place
        // of the batch's own: the caller's bytes are not changed.
        let mut head = [0u8; batch::HEADER_BYTES];
        head.copy_from_slice(&batch[..batch::HEADER_BYTES]);
        batch::stamp(&mut head, base_offset, epoch as i32);
        let interval = self.config.index_interval_bytes;
        let active = inner.active_mut();
        let position = active.size;
        // Before the write: the batch continues the active segment, which
        // ends where the log ends.
        assert_eq!(
            active.next_offset, base_offset,
            "a batch must start at the log end"
        );
        assert!(
            active.synced_position <= position,
            "synced past the end of the segment"
        );
        let frame = frame_for(&head, active.synced_position);
        allocate_ahead(
            active,
            u64::from(position + stored_bytes),
            self.config.allocation_step_bytes,
        );
        if let Err(source) = active.file.write_vectored_at(
            &[&frame, &head, &batch[batch::HEADER_BYTES..]],
            u64::from(position),
        ) {
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
        active.size = position + stored_bytes;
        active.next_offset = base_offset + offset_count;
        inner.next_offset = base_offset + offset_count;
        inner.unflushed_bytes += u64::from(stored_bytes);
        inner.producers.record(&header, base_offset);
        self.appended_batches.fetch_add(1, Ordering::Relaxed);
        if self.config.flush != FlushPolicy::Always
            && self.config.high_watermark == HighWatermarkPolicy::FollowsFlush
        {
            inner.high_watermark = inner.next_offset;
        }
        // After the write: the log ends after the batch, in its epoch.
        assert_eq!(inner.active().next_offset, inner.next_offset);
        assert_eq!(inner.epochs.epoch_at(base_offset), Some(epoch));
        Ok(AppendInfo {
            base_offset,
            last_offset: base_offset + offset_count - 1,
            record_count: header.record_count,
            max_timestamp,
            duplicate: false,
        })
    }

    /// The base offset and epoch a batch gets.
    fn offsets_for(
        &self,
        inner: &Inner,
        header: &BatchHeader,
        stamp: Stamp,
    ) -> Result<(u64, u32), LogError> {
        match stamp {
            Stamp::Assign => Ok((inner.next_offset, inner.current_epoch())),
            Stamp::AssignIn(epoch) => Ok((inner.next_offset, epoch)),
            Stamp::Keep => {
                if header.base_offset != inner.next_offset {
                    return Err(LogError::NotAtLogEnd {
                        expected: inner.next_offset,
                        found: header.base_offset,
                    });
                }
                let epoch = u32::try_from(header.leader_epoch)
                    .ok()
                    .filter(|epoch| inner.epochs.accepts(*epoch))
                    .ok_or(LogError::EpochRegression {
                        epoch: header.leader_epoch,
                        latest: inner.current_epoch(),
                    })?;
                Ok((header.base_offset, epoch))
            }
        }
    }

    /// Records durably that `epoch` starts at `start_offset` if it is new,
    /// before any batch of it is written.
    fn assign_epoch_locked(
        &self,
        inner: &mut Inner,
        epoch: u32,
        start_offset: u64,
    ) -> Result<(), LogError> {
        if !inner.epochs.accepts(epoch) {
            return Err(LogError::EpochRegression {
                epoch: epoch as i32,
                latest: inner.current_epoch(),
            });
        }
        let mut updated = inner.epochs.clone();
        if !updated.assign(epoch, start_offset) {
            return Ok(());
        }
        updated.write(self.storage.as_ref())?;
        inner.epochs = updated;
        Ok(())
    }

    fn roll_if_due(
        &self,
        inner: &mut Inner,
        stored_bytes: u32,
        offset_count: u64,
    ) -> Result<(), LogError> {
        let now = self.clock.now_ms();
        let settings = self.live();
        let active = inner.active();
        let too_big =
            u64::from(active.size) + u64::from(stored_bytes) > u64::from(settings.segment_bytes);
        let too_old = now.saturating_sub(active.created_ms) >= settings.segment_ms;
        let offsets_full =
            inner.next_offset + offset_count - active.base_offset > u64::from(u32::MAX);
        if !active.is_empty() && (too_big || too_old || offsets_full) {
            self.roll_locked(inner, now)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end, and
    /// leaves a producer snapshot there. On failure the active segment
    /// stays active.
    pub(super) fn roll_locked(&self, inner: &mut Inner, now: u64) -> Result<(), LogError> {
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
        self.write_producer_snapshot(inner, base_offset);
        tracing::debug!(base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Writes the producers' state as of `offset` (the log end) to a
    /// snapshot file, unsynced (snapshots are derived data, checked by
    /// their CRC when read), and removes the oldest ones. A failure only
    /// costs a longer replay at the next open.
    pub(super) fn write_producer_snapshot(&self, inner: &mut Inner, offset: u64) {
        assert_eq!(
            offset, inner.next_offset,
            "a snapshot is taken at the log end"
        );
        let storage = self.storage.as_ref();
        let name = snapshot_file_name(offset);
        let temporary = format!("{name}.tmp");
        let bytes = inner.producers.encode_snapshot(offset);
        let written = storage
            .open_file(&temporary, OpenMode::CreateIfMissing)
            .and_then(|file| {
                file.set_len(0)?;
                file.write_at(&bytes, 0)
            })
            .and_then(|()| storage.rename(&temporary, &name));
        if let Err(error) = written {
            tracing::warn!(%error, offset, "writing a producer snapshot failed");
            return;
        }
        inner.directory_dirty = true;
        if let Err(error) = remove_old_snapshots(storage, PRODUCER_SNAPSHOTS_KEPT, |_| true) {
            tracing::warn!(%error, "removing old producer snapshots failed");
        }
    }
}

/// Removes producer snapshots beyond the newest `kept` among those `keep`
/// accepts, and every snapshot `keep` refuses.
pub(crate) fn remove_old_snapshots(
    storage: &dyn weir_io::Storage,
    kept: usize,
    keep: impl Fn(u64) -> bool,
) -> std::io::Result<()> {
    let mut offsets: Vec<u64> = storage
        .list()?
        .iter()
        .filter_map(|entry| parse_snapshot_file_name(&entry.name))
        .collect();
    offsets.sort_unstable();
    let accepted: Vec<u64> = offsets
        .iter()
        .copied()
        .filter(|offset| keep(*offset))
        .collect();
    let newest: Vec<u64> = accepted.iter().rev().take(kept).copied().collect();
    for offset in offsets {
        if !newest.contains(&offset) {
            match storage.remove_file(&snapshot_file_name(offset)) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

/// Reserves disk space ahead of the append ending at `end`, a step at a
/// time. Only a hint: a failure is logged and the write goes ahead (it
/// reports a full disk itself); the next attempt is a step later.
fn allocate_ahead(segment: &mut Segment, end: u64, step: u32) {
    if step == 0 || end <= segment.allocated {
        return;
    }
    let from = segment.allocated.max(u64::from(segment.size));
    let target = end + u64::from(step);
    if let Err(error) = segment.file.allocate(from, target - from) {
        tracing::debug!(%error, segment = %segment.name(), "reserving space ahead of appends failed");
    }
    segment.allocated = target;
}

/// Parses a batch that must fill `bytes` exactly.
fn whole_batch(bytes: &[u8]) -> Result<Batch<'_>, LogError> {
    Ok(batch::check_whole(bytes)?)
}

fn record_too_large(error: BatchError) -> LogError {
    match error {
        BatchError::RecordTooLarge { index, size, max } => LogError::RecordTooLarge {
            index,
            size: size as u64,
            max: max as u64,
        },
        other => LogError::InvalidBatch(other),
    }
}

/// The most memory a thread keeps between appends for encoding batches.
const SCRATCH_BYTES_KEPT_MAX: usize = 4 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static DECOMPRESSION: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `action` with this thread's empty encoding buffer, reused across
/// appends so that encoding a batch does not allocate.
fn with_scratch<T>(action: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    with_buffer(&SCRATCH, action)
}

/// The same, with a second buffer for decompressing a batch to validate it.
fn with_decompression_scratch<T>(action: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    with_buffer(&DECOMPRESSION, action)
}

fn with_buffer<T>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<u8>>>,
    action: impl FnOnce(&mut Vec<u8>) -> T,
) -> T {
    key.with(|cell| {
        // A nested use (there is none today) gets a buffer of its own.
        let mut taken = cell.take();
        taken.clear();
        let result = action(&mut taken);
        if taken.capacity() <= SCRATCH_BYTES_KEPT_MAX {
            *cell.borrow_mut() = taken;
        }
        result
    })
}

/// A batch a leader wrote keeps to the format's limit only: the leader
/// checked it against the topic's limit when it took it, and a follower
/// that has since lowered the limit (a config change it applied before
/// the batch reached it) must still take it, or it could never catch up
/// (Kafka checks `max.message.bytes` on the leader alone).
fn check_replicated_size(size: usize) -> Result<(), LogError> {
    if size > BATCH_BYTES_LIMIT {
        return Err(LogError::BatchTooLarge {
            size: size as u64,
            max: BATCH_BYTES_LIMIT as u64,
        });
    }
    Ok(())
}
