//! Durability: syncs shared by concurrent appenders (group commit), the
//! syncs an owner drives, the high watermark, and the checkpoint that
//! records which segments are durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use weir_io::sync::lock;
use weir_io::File;

use super::{Inner, Partition};
use crate::commit::CommitError;
use crate::config::{FlushPolicy, HighWatermarkPolicy};
use crate::error::LogError;
use crate::segment;

/// How many times a group-commit leader yields, at most, to appenders that
/// are about to write before it syncs. When no other thread is runnable a
/// yield returns at once, so the bound costs a single appender nothing
/// noticeable.
const LEADER_YIELDS_MAX: usize = 512;

/// A sealed segment not yet durable: its base offset, its file and its
/// index files.
type SealedToSync = (u64, Arc<dyn File>, Vec<Arc<dyn File>>);

/// Files to sync, taken under the lock and synced outside it.
pub(super) struct SyncPlan {
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

impl Partition {
    /// Makes every batch written so far durable, sharing the sync with
    /// concurrent callers, and returns the durable offset: how an owner
    /// that writes with [`Partition::write`] drives durability.
    pub fn sync(&self) -> Result<u64, LogError> {
        let (target, epoch) = {
            let inner = lock(&self.inner);
            inner.check_usable()?;
            (inner.next_offset, self.commit.epoch())
        };
        self.wait_durable(target, epoch)?;
        Ok(self.commit.durable())
    }

    /// Makes every appended record durable, and retries a checkpoint write
    /// that failed earlier.
    pub fn flush(&self) -> Result<(), LogError> {
        self.sync()?;
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

    /// Sets the high watermark, for an owner that commits records on a
    /// quorum ([`HighWatermarkPolicy::SetByOwner`]). It never moves back
    /// and never passes the log end; either is a bug of the owner.
    pub fn set_high_watermark(&self, offset: u64) {
        assert_eq!(
            self.config.high_watermark,
            HighWatermarkPolicy::SetByOwner,
            "the high watermark of this log follows its flushes"
        );
        let mut inner = lock(&self.inner);
        assert!(
            offset <= inner.next_offset,
            "high watermark {offset} past the log end {}",
            inner.next_offset
        );
        assert!(
            offset >= inner.high_watermark,
            "high watermark moved back from {} to {offset}",
            inner.high_watermark
        );
        inner.high_watermark = offset;
    }

    pub(super) fn flush_due(&self, inner: &Inner) -> bool {
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

    pub(super) fn wait_durable(&self, target: u64, epoch: u64) -> Result<(), LogError> {
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

    /// The group-commit leader's sync.
    fn sync_now(&self) -> Result<u64, LogError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.wait_for_appenders();
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

    /// A sync covers only what was written before it starts. The appenders
    /// the last sync released are about to write their next batches; if
    /// this sync started at once, they would wait for the one after, and
    /// syncs would alternate between two halves of the appenders. So the
    /// leader yields, a bounded number of times, until as many appenders
    /// have arrived in this round as in the last and none is mid-write,
    /// then begins a new round.
    fn wait_for_appenders(&self) {
        for _ in 0..LEADER_YIELDS_MAX {
            let (arrived, last_round) = self.commit.participants();
            let writing = self.appending.load(Ordering::SeqCst);
            if arrived >= last_round && writing == 0 {
                break;
            }
            std::thread::yield_now();
        }
        self.commit.begin_round();
    }

    pub(super) fn plan_sync(&self, inner: &mut Inner) -> SyncPlan {
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

    pub(super) fn execute_sync(&self, plan: &SyncPlan) -> Result<(), LogError> {
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
    pub(super) fn finish_sync(&self, inner: &mut Inner, plan: &SyncPlan) -> bool {
        if plan.epoch != self.commit.epoch() {
            // A truncation synced and rewrote everything meanwhile.
            return false;
        }
        assert!(
            plan.target <= inner.next_offset,
            "a sync covered more than was written"
        );
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
        self.commit.advance(plan.target);
        if self.config.flush == FlushPolicy::Always
            && self.config.high_watermark == HighWatermarkPolicy::FollowsFlush
        {
            inner.high_watermark = inner.high_watermark.max(plan.target);
        }
        inner.unflushed_bytes = 0;
        inner.last_flush_ms = self.clock.now_ms();
        newly_trusted || inner.checkpoint_stale
    }

    /// Syncs everything under the lock (for operations that hold it).
    pub(super) fn sync_locked(&self, inner: &mut Inner) -> Result<(), LogError> {
        let plan = self.plan_sync(inner);
        if let Err(error) = self.execute_sync(&plan) {
            self.fail_locked(inner, error.to_string());
            return Err(error);
        }
        self.finish_sync(inner, &plan);
        assert_eq!(
            self.commit.durable(),
            inner.next_offset,
            "a sync under the lock covers the log"
        );
        Ok(())
    }

    pub(super) fn write_checkpoint(&self) -> Result<(), LogError> {
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
}
