//! Changes to the log other than appends: truncation of a suffix (for a
//! replica whose log diverged), deletion of a prefix and retention, a clean
//! close, and the operator's full verification.

use std::sync::Arc;

use weir_io::sync::lock;
use weir_io::{write_file_atomically, File};

use super::{Inner, Partition, RetentionReport};
use crate::checkpoint::PendingTruncation;
use crate::error::LogError;
use crate::producers::snapshot_file_name;
use crate::recovery::{self, rebuild_producers};
use crate::segment::{self, write_index_files, SegmentIndex};

impl Partition {
    /// Removes every record at or after `end_offset` (rounded down to the
    /// start of the batch holding it), for a replica whose log diverged. A
    /// cut that rounds down below the log start offset empties the log and
    /// moves the start down to the cut. Everything appended before is made
    /// durable first; a crash at any point leaves the log at its old end or
    /// at its new one, with the leader epochs and the producers' state
    /// agreeing with it. Returns the new log end offset.
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
        match &result {
            Err(error) => self.fail_locked(&mut inner, format!("truncation failed: {error}")),
            Ok(new_end) => {
                // After the cut: the log, its epochs and its producers end
                // at the new end.
                assert_eq!(inner.next_offset, *new_end);
                assert!(inner
                    .epochs
                    .latest()
                    .is_none_or(|latest| latest.start_offset < *new_end));
                assert!(inner
                    .producers
                    .last_offset()
                    .is_none_or(|last| last < *new_end));
            }
        }
        result
    }

    fn truncate_locked(&self, inner: &mut Inner, end_offset: u64) -> Result<u64, LogError> {
        let storage = Arc::clone(&self.storage);
        let cut = self.find_cut(inner, end_offset)?;
        let new_end = cut.end_offset;
        // A cut below the log start (into the batch holding it) empties
        // the log, which then starts at the cut.
        inner.log_start_offset = inner.log_start_offset.min(new_end);
        // First make the cut durable as an intent: from here on, a crash is
        // finished by the next recovery.
        for (_, segment) in inner.segments.range_mut(cut.segment_base_offset..) {
            segment.trusted = false;
        }
        let mut intent = inner.checkpoint(false);
        intent.truncation = Some(cut);
        intent.write(storage.as_ref())?;
        let later: Vec<u64> = inner
            .segments
            .range(cut.segment_base_offset + 1..)
            .map(|(base, _)| *base)
            .collect();
        recovery::carry_out_truncation(storage.as_ref(), &cut)?;
        for base in &later {
            inner.segments.remove(base);
        }
        self.reload_cut_segment(inner, &cut)?;
        inner.next_offset = new_end;
        inner.high_watermark = inner.high_watermark.min(new_end);
        inner.unflushed_bytes = 0;
        inner.epochs.truncate_from_end(new_end);
        let (producers, _) = rebuild_producers(
            storage.as_ref(),
            &inner.segments,
            inner.log_start_offset,
            new_end,
        )?;
        inner.producers = producers;
        self.commit.truncated(new_end);
        inner.checkpoint(false).write(storage.as_ref())?;
        tracing::info!(end_offset = new_end, "truncated the log");
        Ok(new_end)
    }

    /// The first offset of the first batch that fails its checks in the
    /// segment holding `offset`, from the segment's start up to the batch
    /// holding `offset` (that batch included), if any. A replica's owner
    /// about to cut at a corrupt batch asks first: a truncation reads the
    /// segment up to its cut, and would fail on an earlier corrupt batch
    /// (one written wrong after the scrub passed it), which must be cut
    /// too. Reads up to the whole segment, outside the log's lock.
    pub fn first_corrupt_batch_up_to(&self, offset: u64) -> Result<Option<u64>, LogError> {
        let (base, file, size) = {
            let mut inner = lock(&self.inner);
            inner.check_usable()?;
            let Some(segment) = inner.segment_for(offset) else {
                return Ok(None);
            };
            (segment.base_offset, Arc::clone(&segment.file), segment.size)
        };
        let name = segment::log_file_name(base);
        let walked = segment::walk(file.as_ref(), base, u64::from(size), |_, _| {})
            .map_err(|source| LogError::io("checking", name, source))?;
        Ok(walked
            .stop
            .is_some()
            .then_some(walked.next_offset)
            .filter(|corrupt| *corrupt <= offset))
    }

    /// Where a truncation to `end_offset` cuts: the start of the batch
    /// holding it.
    fn find_cut(&self, inner: &mut Inner, end_offset: u64) -> Result<PendingTruncation, LogError> {
        let storage = Arc::clone(&self.storage);
        let interval = self.config.index_interval_bytes;
        let segment = inner
            .segment_for(end_offset)
            .expect("offsets from the log start on are in a segment");
        segment.load_index(storage.as_ref(), interval)?;
        let (mut position, mut new_end) = segment.locate(end_offset);
        // A cut at a batch's first offset is found without reading that
        // batch, which may be the corrupt one a replica cuts away.
        while position < segment.size && new_end < end_offset {
            let stored = segment::read_batch_at(segment.file.as_ref(), u64::from(position))
                .map_err(|error| LogError::Corrupt {
                    segment: segment.name(),
                    position: u64::from(position),
                    reason: error.to_string(),
                })?;
            if stored.header.next_offset() > end_offset {
                new_end = stored.header.base_offset;
                break;
            }
            position += stored.stored_bytes();
            new_end = stored.header.next_offset();
        }
        Ok(PendingTruncation {
            end_offset: new_end,
            segment_base_offset: segment.base_offset,
            position,
        })
    }

    /// Rescans the cut segment (now ending at the cut) and makes it the
    /// active one.
    fn reload_cut_segment(
        &self,
        inner: &mut Inner,
        cut: &PendingTruncation,
    ) -> Result<(), LogError> {
        let interval = self.config.index_interval_bytes;
        let segment = inner
            .segments
            .get_mut(&cut.segment_base_offset)
            .expect("the cut segment is kept");
        let scan = segment::scan(
            segment.file.as_ref(),
            cut.segment_base_offset,
            u64::from(cut.position),
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
        assert_eq!(
            scan.next_offset, cut.end_offset,
            "the cut segment ends at the cut"
        );
        segment.size = cut.position;
        segment.synced_position = cut.position;
        segment.next_offset = cut.end_offset;
        segment.max_timestamp = scan.max_timestamp;
        segment.index = SegmentIndex::Building(scan.index);
        segment.unsynced_index_files.clear();
        Ok(())
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
            recovery::remove_segment_files(self.storage.as_ref(), *base)?;
            inner.directory_dirty = true;
        }
        let mut epochs = inner.epochs.clone();
        if epochs.truncate_from_start(offset) && epochs.write(self.storage.as_ref()).is_ok() {
            inner.epochs = epochs;
        }
        Ok(doomed)
    }

    /// Empties the log and makes it start at `offset`, for a replica told
    /// by its leader that the records before `offset` are gone (a Raft
    /// snapshot): none of its own records, older or divergent, may be
    /// served afterwards, and the next append takes `offset`. A crash at
    /// any point leaves the log as it was (cut at its log start at most)
    /// or empty at `offset`. Returns the log start offset.
    pub fn reset_to(&self, offset: u64) -> Result<u64, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        if offset < inner.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: inner.log_start_offset,
                high_watermark: inner.high_watermark,
            });
        }
        self.empty_locked(&mut inner, offset)
    }

    /// Empties the log and makes it start at `offset`, which may lie
    /// before its log start (as Kafka's `truncateFullyAndStartAt`): for a
    /// replica whose own records its replication log no longer describes
    /// (rot cut that log back before the segment log's start), so that
    /// the two agree again and the leader sends the records anew. A crash
    /// leaves the log as it was, cut at its log start, or empty at
    /// `offset`. Returns the log start offset.
    pub fn restart_at(&self, offset: u64) -> Result<u64, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        self.empty_locked(&mut inner, offset)
    }

    fn empty_locked(&self, inner: &mut Inner, offset: u64) -> Result<u64, LogError> {
        self.sync_locked(inner)?;
        if inner.next_offset > offset {
            let start = inner.log_start_offset;
            if let Err(error) = self.truncate_locked(inner, start) {
                self.fail_locked(inner, format!("truncation failed: {error}"));
                return Err(error);
            }
        }
        // Before: nothing at or after `offset` is left, nor any record if
        // `offset` lies before the log start.
        assert!(inner.next_offset <= offset.max(inner.log_start_offset));
        assert!(offset >= inner.log_start_offset || inner.next_offset == inner.log_start_offset);
        if let Err(error) = self.restart_empty_locked(inner, offset) {
            self.fail_locked(inner, format!("reset failed: {error}"));
            return Err(error);
        }
        // After: one empty segment at `offset`, which starts and ends the log.
        assert_eq!(inner.segments.len(), 1);
        assert_eq!(inner.active_base(), offset);
        assert_eq!(
            (inner.log_start_offset, inner.next_offset),
            (offset, offset)
        );
        tracing::info!(offset, "the log restarts empty");
        Ok(offset)
    }

    /// With every record before `offset`: a checkpoint naming `offset` as
    /// the log start (recovery restarts a log whose start is past its end
    /// empty at its start), then the files go and an empty segment starts
    /// at `offset`.
    fn restart_empty_locked(&self, inner: &mut Inner, offset: u64) -> Result<(), LogError> {
        let storage = Arc::clone(&self.storage);
        // The epochs go first (a log without the file rebuilds them from
        // its batches, an empty one has none), so that no crash leaves
        // the empty log with the epochs of records it no longer holds.
        recovery::remove_if_present(storage.as_ref(), crate::epochs::LEADER_EPOCHS_FILE)?;
        storage
            .sync_dir()
            .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        let intent = crate::checkpoint::Checkpoint {
            log_start_offset: offset,
            clean_shutdown: false,
            truncation: None,
            segments: Vec::new(),
        };
        intent.write(storage.as_ref())?;
        let doomed: Vec<u64> = inner.segments.keys().copied().collect();
        for base in doomed {
            inner.segments.remove(&base);
            recovery::remove_segment_files(storage.as_ref(), base)?;
        }
        recovery::remove_producer_snapshots(storage.as_ref())?;
        let now = self.clock.now_ms();
        let segment = recovery::empty_segment(storage.as_ref(), offset, now)?;
        inner.segments.insert(offset, segment);
        inner.log_start_offset = offset;
        inner.next_offset = offset;
        inner.high_watermark = offset;
        inner.unflushed_bytes = 0;
        inner.producers = Default::default();
        inner.epochs = Default::default();
        self.commit.truncated(offset);
        storage
            .sync_dir()
            .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        inner.directory_dirty = false;
        inner.checkpoint(false).write(storage.as_ref())
    }

    /// Deletes sealed segments past the retention time or size (whole
    /// segments, oldest first; never the active one). A log whose high
    /// watermark its owner sets is left alone: its owner (a replication
    /// layer) applies retention itself, through [`Partition::retention_cut`]
    /// and [`Partition::delete_before`].
    pub fn apply_retention(&self) -> Result<RetentionReport, LogError> {
        let _checkpoint = lock(&self.checkpoint_lock);
        let mut inner = lock(&self.inner);
        inner.check_usable()?;
        if self.config.high_watermark == crate::HighWatermarkPolicy::SetByOwner {
            return Ok(RetentionReport {
                log_start_offset: inner.log_start_offset,
                ..RetentionReport::default()
            });
        }
        let cut = self.retention_cut_locked(&inner);
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

    /// Where retention would cut the log now (the end of the last sealed
    /// segment past the retention time or size, below the high
    /// watermark), if past the log start.
    pub fn retention_cut(&self) -> Option<u64> {
        let inner = lock(&self.inner);
        self.retention_cut_locked(&inner)
            .filter(|cut| *cut > inner.log_start_offset)
    }

    fn retention_cut_locked(&self, inner: &Inner) -> Option<u64> {
        let now = self.clock.now_ms() as i64;
        let mut remaining = inner.size_bytes();
        let mut cut = None;
        let sealed = inner.segments.len() - 1;
        let settings = self.live();
        for segment in inner.segments.values().take(sealed) {
            let expired = settings.retention_ms.is_some_and(|retention| {
                segment
                    .max_timestamp
                    .is_none_or(|(max, _)| max < now.saturating_sub(retention as i64))
            });
            let oversize = settings
                .retention_bytes
                .is_some_and(|limit| remaining - u64::from(segment.size) >= limit);
            if !(expired || oversize) || segment.next_offset > inner.high_watermark {
                break;
            }
            remaining -= u64::from(segment.size);
            cut = Some(segment.next_offset);
        }
        cut
    }

    /// Syncs everything, leaves a durable producer snapshot at the log end
    /// and writes a checkpoint that lets the next open skip recovery. The
    /// log refuses further work afterwards.
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
        let end = inner.next_offset;
        let snapshot = inner.producers.encode_snapshot(end);
        write_file_atomically(storage, &snapshot_file_name(end), &snapshot)
            .map_err(|source| LogError::io("writing", snapshot_file_name(end), source))?;
        storage
            .sync_dir()
            .map_err(|source| LogError::io("syncing", "partition directory", source))?;
        for segment in inner.segments.values_mut() {
            segment.trusted = true;
        }
        inner.checkpoint(true).write(storage)?;
        inner.closed = true;
        tracing::info!(log_end_offset = end, "closed partition log");
        Ok(())
    }

    /// Reads every batch of every segment and checks it, for operators: both
    /// CRCs, offsets following on, and each batch's leader epoch against
    /// the leader-epoch file. Returns the number of batches checked.
    pub fn verify(&self) -> Result<u64, LogError> {
        let (segments, epochs) = {
            let inner = lock(&self.inner);
            inner.check_usable()?;
            let segments: Vec<(u64, Arc<dyn File>, u32)> = inner
                .segments
                .values()
                .map(|segment| (segment.base_offset, Arc::clone(&segment.file), segment.size))
                .collect();
            (segments, inner.epochs.clone())
        };
        let mut batches = 0;
        for (base, file, size) in segments {
            let name = segment::log_file_name(base);
            let mut mismatch = None;
            let walked = segment::walk(file.as_ref(), base, u64::from(size), |position, stored| {
                let epoch = u32::try_from(stored.header.leader_epoch).ok();
                if mismatch.is_none() && epoch != epochs.epoch_at(stored.header.base_offset) {
                    mismatch = Some((position, stored.header.leader_epoch));
                }
            })
            .map_err(|source| LogError::io("verifying", name.clone(), source))?;
            if let Some(stop) = walked.stop {
                return Err(LogError::Corrupt {
                    segment: name,
                    position: u64::from(stop.position),
                    reason: stop.reason.to_string(),
                });
            }
            if let Some((position, epoch)) = mismatch {
                return Err(LogError::Corrupt {
                    segment: name,
                    position: u64::from(position),
                    reason: format!(
                        "batch of leader epoch {epoch} disagrees with the leader-epoch file"
                    ),
                });
            }
            batches += walked.batches;
        }
        Ok(batches)
    }
}
