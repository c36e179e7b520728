//! Recovery: turning whatever a crash left in a partition directory into a
//! valid log, and saying what was cut. One function per step:
//!
//! 1. `remove_temporary_files`: leftovers of interrupted atomic writes.
//! 2. `read_checkpoint`: the segments known durable; a directory of
//!    weir-log's first format is refused here.
//! 3. `carry_out_truncation`: a truncation the checkpoint names as
//!    pending (a crash interrupted it) is finished, so the log ends at the
//!    new end and never between the old and the new.
//! 4. `list_segment_files`: index files without their segment, and
//!    segments before the first trusted one (a prefix deletion whose
//!    removal was not yet durable), are removed.
//! 5. `open_trusted_segments`: segments the checkpoint lists were synced,
//!    with their indexes, before it was written. Their sizes must match;
//!    their indexes are loaded lazily and rebuilt if they disagree.
//! 6. `scan_untrusted_segments`: every later segment is scanned batch by
//!    batch (frame, header, CRCs, offsets following on), rebuilding its
//!    indexes. At the first invalid batch, at byte P of segment S, recovery
//!    decides between a torn tail and corruption. Every stored batch
//!    records in its frame how many bytes of its segment were synced when
//!    it was written. If a valid batch after P in S claims more than P
//!    bytes synced, or a valid batch of a later segment claims any
//!    (segments are synced in order), the bytes at P had been synced: that
//!    is corruption, and opening fails with [`LogError::Corrupt`] naming S
//!    and P. Otherwise the bytes from P on were never synced: S is cut at
//!    P, later segments are removed, and the cut is reported in
//!    [`RecoveryReport::truncation`]. Every byte judged is read by the
//!    agreement rule ([`weir_io::read_agreed`]).
//! 7. `apply_log_start`: segments wholly before the log start offset are
//!    removed.
//! 8. `make_recovered_durable`: everything recovered is synced and a new
//!    checkpoint lists the sealed segments.
//! 9. `recover_epochs`: the leader-epoch file loses the entries at or
//!    after the log end; a missing or unreadable one is rebuilt from the
//!    batches.
//! 10. `rebuild_producers`: the idempotent producers' state, from the
//!     newest valid snapshot at or below the log end and the batches after
//!     it; snapshots beyond the log end are removed.
//!
//! A clean shutdown writes a checkpoint listing the active segment too, so
//! the next open scans nothing. The first thing an open does after reading
//! such a checkpoint is to write one that no longer lists the active
//! segment: a crash at any later point, including in the middle of a
//! truncation, is then recovered by a scan.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_io::{Clock, EntryKind, OpenMode, Storage};

use crate::checkpoint::{Checkpoint, PendingTruncation, SegmentSummary};
use crate::config::LogConfig;
use crate::epochs::{LeaderEpochs, LEADER_EPOCHS_FILE};
use crate::error::{LogError, FORMAT_1_DESCRIPTION};
use crate::frame::is_format_1_batch;
use crate::index::{self, IndexBuilder, IndexBytes};
use crate::producers::{parse_snapshot_file_name, snapshot_file_name, ProducerStates};
use crate::segment::{
    self, find_synced_claim_after, index_file_name, open_log_file, parse_file_name,
    time_index_file_name, write_index_files, Segment, SegmentFile, SegmentIndex,
};

/// What recovery found and did when a log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log had been closed cleanly.
    pub clean_shutdown: bool,
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Segments scanned batch by batch.
    pub segments_scanned: usize,
    /// Batches checked by the scans.
    pub batches_scanned: u64,
    /// Bytes checked by the scans.
    pub bytes_scanned: u64,
    /// Sealed segments whose index files were rebuilt.
    pub indexes_rebuilt: usize,
    /// The torn tail cut off, if any.
    pub truncation: Option<Truncation>,
    /// A truncation interrupted by the crash and finished, by its new end.
    pub truncation_finished: Option<u64>,
    /// Segments removed because they lay wholly before the log start offset
    /// (a deletion interrupted by the crash).
    pub segments_removed_before_start: Vec<u64>,
    /// The leader-epoch file was missing or unreadable and was rebuilt.
    pub epochs_rebuilt: bool,
    /// The producer snapshot the producers' state started from.
    pub producer_snapshot: Option<u64>,
    /// Batches replayed after it to rebuild the producers' state.
    pub producer_batches_replayed: u64,
    /// The first offset of the log.
    pub log_start_offset: u64,
    /// The offset after the last record.
    pub log_end_offset: u64,
    /// A replica's checkpoint read corrupt and was done without: every
    /// segment was scanned, the log start taken from the files, and a cut
    /// counted as synced data lost ([`Truncation::synced`]).
    pub checkpoint_lost: bool,
}

/// A torn tail removed by recovery: bytes that were never synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub segment_base_offset: u64,
    /// Where it was cut.
    pub position: u64,
    /// Why the bytes there were not a valid batch.
    pub reason: String,
    /// Bytes removed, from this and later segments.
    pub bytes_removed: u64,
    /// Later segments removed whole.
    pub segments_removed: Vec<u64>,
    /// The offsets of valid batches found after the cut and removed with it
    /// (first, last), if any; bytes that do not parse have no offsets.
    pub offsets_removed: Option<(u64, u64)>,
    /// A later batch recorded the bytes at the cut as synced: corruption
    /// of synced data, cut only in a log whose owner holds its records
    /// elsewhere too ([`crate::HighWatermarkPolicy::SetByOwner`]: a
    /// replica, whose peers give them back). Every other log refuses to
    /// open instead.
    pub synced: bool,
}

/// A recovered log, ready to be wrapped in a partition.
pub(crate) struct Recovered {
    pub segments: BTreeMap<u64, Segment>,
    pub log_start_offset: u64,
    pub epochs: LeaderEpochs,
    pub producers: ProducerStates,
    pub report: RecoveryReport,
}

struct Scanned {
    base_offset: u64,
    file: Arc<dyn weir_io::File>,
    file_bytes: u64,
    report: segment::ScanReport,
}

/// The segment and index files of a directory.
struct SegmentFiles {
    /// Base offsets of the `.log` files, sorted.
    logs: Vec<u64>,
}

pub(crate) fn recover(
    storage: &dyn Storage,
    clock: &dyn Clock,
    config: &LogConfig,
) -> Result<Recovered, LogError> {
    let owner_restores = config.high_watermark == crate::HighWatermarkPolicy::SetByOwner;
    let mut distrust_from = None;
    loop {
        match recover_once(storage, clock, config, distrust_from) {
            // A replica's trusted segment read corrupt (while its batches
            // were walked): recovery runs again scanning it and every
            // later one, so that the corruption is cut and reported
            // (`Truncation::synced`) for the owner to restore.
            Err(LogError::Corrupt {
                segment,
                position,
                reason,
            }) if owner_restores => {
                let base = match parse_file_name(&segment) {
                    Some((base, SegmentFile::Log))
                        if distrust_from.is_none_or(|from| base < from) =>
                    {
                        base
                    }
                    _ => {
                        return Err(LogError::Corrupt {
                            segment,
                            position,
                            reason,
                        })
                    }
                };
                tracing::error!(%segment, position, %reason, "a trusted segment is corrupt: scanning it");
                distrust_from = Some(base);
            }
            result => return result,
        }
    }
}

/// One recovery; with `distrust_from`, the checkpoint's segments from
/// that base offset on are scanned as if it did not list them.
fn recover_once(
    storage: &dyn Storage,
    clock: &dyn Clock,
    config: &LogConfig,
    distrust_from: Option<u64>,
) -> Result<Recovered, LogError> {
    remove_temporary_files(storage)?;
    let (mut checkpoint, checkpoint_lost) = read_checkpoint(storage, config)?;
    // Segments the checkpoint lists were synced before it was written.
    let listed: Vec<u64> = checkpoint
        .segments
        .iter()
        .map(|summary| summary.base_offset)
        .collect();
    if let Some(base) = distrust_from {
        checkpoint
            .segments
            .retain(|summary| summary.base_offset < base);
        checkpoint.clean_shutdown = false;
    }
    let mut report = RecoveryReport {
        clean_shutdown: checkpoint.clean_shutdown,
        checkpoint_lost,
        ..RecoveryReport::default()
    };
    if let Some(cut) = &checkpoint.truncation {
        carry_out_truncation(storage, cut)?;
        report.truncation_finished = Some(cut.end_offset);
        tracing::warn!(
            end_offset = cut.end_offset,
            "finished a truncation interrupted by a crash"
        );
    }
    let mut removed_before = Vec::new();
    let files = list_segment_files(storage, &checkpoint, &mut removed_before)?;
    let now = clock.now_ms();
    let mut segments = open_trusted_segments(storage, &checkpoint, &files, now)?;
    let scanned = scan_untrusted_segments(storage, config, &checkpoint, &files, &mut report)?;
    if let Some(cut) = report.truncation.as_mut() {
        // A cut in a segment the checkpoint listed cut synced data (any
        // cut may have, without the checkpoint).
        cut.synced |= listed.contains(&cut.segment_base_offset) || checkpoint_lost;
        log_truncation(cut);
    }
    add_scanned_segments(storage, &mut segments, scanned, now)?;
    if let Some(last) = segments.values_mut().next_back() {
        if last.trusted {
            // The active segment of a clean shutdown continues its indexes.
            resume_active_index(storage, last, config)?;
        }
    }
    let (log_start_offset, end) = apply_log_start(
        storage,
        &mut segments,
        checkpoint.log_start_offset,
        now,
        &mut removed_before,
    )?;
    make_recovered_durable(storage, &mut segments, log_start_offset)?;
    let epochs = recover_epochs(storage, &segments, end, &mut report)?;
    remove_snapshots_after(storage, end)?;
    let (producers, snapshot, replayed) =
        rebuild_producers_from(storage, &segments, log_start_offset, end)?;
    removed_before.sort_unstable();
    report.segments_removed_before_start = removed_before;
    report.segments = segments.len();
    report.log_start_offset = log_start_offset;
    report.log_end_offset = end;
    report.producer_snapshot = snapshot;
    report.producer_batches_replayed = replayed;
    Ok(Recovered {
        segments,
        log_start_offset,
        epochs,
        producers,
        report,
    })
}

/// Step 1: removes the temporary files of interrupted atomic writes.
fn remove_temporary_files(storage: &dyn Storage) -> Result<(), LogError> {
    let entries = storage.list().map_err(directory_io("listing"))?;
    for entry in &entries {
        if entry.kind == EntryKind::File && entry.name.ends_with(".tmp") {
            storage
                .remove_file(&entry.name)
                .map_err(|source| LogError::io("removing", entry.name.clone(), source))?;
        }
    }
    Ok(())
}

/// Step 2: the checkpoint, or an empty one; and whether a replica's
/// checkpoint read corrupt. A log of its own refuses to open then; a
/// replica (`SetByOwner`) does without it, as if it had never been
/// written: every segment is scanned (none is trusted), the log starts at
/// its first file (records retention had deleted may come back until it
/// runs again), and a truncation it named is finished by the owner, whose
/// Raft log no longer holds the cut entries.
fn read_checkpoint(
    storage: &dyn Storage,
    config: &LogConfig,
) -> Result<(Checkpoint, bool), LogError> {
    match Checkpoint::read(storage) {
        Err(LogError::CorruptCheckpoint { file, reason })
            if config.high_watermark == crate::HighWatermarkPolicy::SetByOwner =>
        {
            tracing::error!(%file, %reason, "a replica's checkpoint is corrupt: every segment is scanned");
            Ok((Checkpoint::default(), true))
        }
        read => Ok((read?.unwrap_or_default(), false)),
    }
}

/// Step 3 (and the second half of [`crate::Partition::truncate`]): removes
/// every segment after the cut one, the cut segment's index files and the
/// producer snapshots beyond the new end, makes the removals durable, cuts
/// the segment file and syncs it, and drops the leader epochs that start
/// at or after the new end. Every step can be repeated: a crash in the
/// middle is finished by doing it all again.
pub(crate) fn carry_out_truncation(
    storage: &dyn Storage,
    cut: &PendingTruncation,
) -> Result<(), LogError> {
    let entries = storage.list().map_err(directory_io("listing"))?;
    for entry in entries.iter().filter(|entry| entry.kind == EntryKind::File) {
        let doomed = match parse_file_name(&entry.name) {
            Some((base, _)) if base > cut.segment_base_offset => true,
            Some((base, SegmentFile::Index | SegmentFile::TimeIndex)) => {
                base == cut.segment_base_offset
            }
            _ => {
                parse_snapshot_file_name(&entry.name).is_some_and(|offset| offset > cut.end_offset)
            }
        };
        if doomed {
            remove_if_present(storage, &entry.name)?;
        }
    }
    storage.sync_dir().map_err(directory_io("syncing"))?;
    let name = segment::log_file_name(cut.segment_base_offset);
    let file = open_log_file(storage, cut.segment_base_offset, OpenMode::Existing)?;
    let length = file
        .len()
        .map_err(|source| LogError::io("reading the length of", name.clone(), source))?;
    if length > u64::from(cut.position) {
        file.set_len(u64::from(cut.position))
            .map_err(|source| LogError::io("truncating", name.clone(), source))?;
    }
    file.sync()
        .map_err(|source| LogError::io("syncing", name, source))?;
    if let Some(Ok(mut epochs)) = LeaderEpochs::read(storage)? {
        if epochs.truncate_from_end(cut.end_offset) {
            epochs.write(storage)?;
        }
    }
    Ok(())
}

/// Step 4: the segment files, with orphaned index files and segments before
/// the first trusted one removed.
fn list_segment_files(
    storage: &dyn Storage,
    checkpoint: &Checkpoint,
    removed_before: &mut Vec<u64>,
) -> Result<SegmentFiles, LogError> {
    let entries = storage.list().map_err(directory_io("listing"))?;
    let mut logs: Vec<u64> = Vec::new();
    let mut index_files: Vec<(u64, String)> = Vec::new();
    for entry in entries.iter().filter(|entry| entry.kind == EntryKind::File) {
        match parse_file_name(&entry.name) {
            Some((base, SegmentFile::Log)) => logs.push(base),
            Some((base, _)) => index_files.push((base, entry.name.clone())),
            None => {}
        }
    }
    logs.sort_unstable();
    // Index files without their segment are leftovers of a removal.
    for (base, name) in &index_files {
        if logs.binary_search(base).is_err() {
            remove_if_present(storage, name)?;
        }
    }
    // Files before the first trusted segment are leftovers of a prefix
    // deletion whose removal was not yet durable.
    if let Some(first) = checkpoint
        .segments
        .first()
        .map(|summary| summary.base_offset)
    {
        for base in logs.iter().copied().filter(|base| *base < first) {
            remove_segment_files(storage, base)?;
            removed_before.push(base);
        }
        logs.retain(|base| *base >= first);
    }
    Ok(SegmentFiles { logs })
}

/// Step 5: the segments the checkpoint lists, checked against their files'
/// sizes.
fn open_trusted_segments(
    storage: &dyn Storage,
    checkpoint: &Checkpoint,
    files: &SegmentFiles,
    now: u64,
) -> Result<BTreeMap<u64, Segment>, LogError> {
    let mut segments = BTreeMap::new();
    for (index, summary) in checkpoint.segments.iter().enumerate() {
        if files.logs.get(index) != Some(&summary.base_offset) {
            return Err(LogError::Corrupt {
                segment: segment::log_file_name(summary.base_offset),
                position: 0,
                reason: "the checkpoint lists this segment but it is missing".into(),
            });
        }
        let file = open_log_file(storage, summary.base_offset, OpenMode::Existing)?;
        let name = segment::log_file_name(summary.base_offset);
        let length = file
            .len()
            .map_err(|source| LogError::io("reading the length of", name.clone(), source))?;
        if length != u64::from(summary.size) {
            return Err(LogError::Corrupt {
                segment: name,
                position: length.min(u64::from(summary.size)),
                reason: format!(
                    "the checkpoint records {} bytes but the file has {length}",
                    summary.size
                ),
            });
        }
        segments.insert(summary.base_offset, trusted_segment(file, summary, now));
    }
    Ok(segments)
}

/// Step 6: scans the segments after the trusted prefix; at the first
/// invalid batch, cuts a torn tail or fails with corruption.
fn scan_untrusted_segments(
    storage: &dyn Storage,
    config: &LogConfig,
    checkpoint: &Checkpoint,
    files: &SegmentFiles,
    report: &mut RecoveryReport,
) -> Result<Vec<Scanned>, LogError> {
    let mut expected = checkpoint
        .segments
        .last()
        .map(|summary| summary.next_offset);
    let untrusted: Vec<u64> = files.logs[checkpoint.segments.len()..].to_vec();
    let cut_synced = config.high_watermark == crate::HighWatermarkPolicy::SetByOwner;
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut index = 0;
    while index < untrusted.len() {
        let base = untrusted[index];
        let current = scan_file(storage, base, config)?;
        if let Some(expected) = expected.filter(|expected| *expected != base) {
            if current.file_bytes == 0 {
                // An empty file out of sequence, left by a roll that failed.
                drop(current);
                remove_segment_files(storage, base)?;
                index += 1;
                continue;
            }
            let later = scan_files(storage, &untrusted[index..], config, Some(current))?;
            let previous = scanned
                .last()
                .map(|scan| (scan.base_offset, u64::from(scan.report.valid_bytes)))
                .or_else(|| {
                    let summary = checkpoint.segments.last()?;
                    Some((summary.base_offset, u64::from(summary.size)))
                })
                .expect("an expected offset comes from a segment before");
            report.truncation = Some(judge_gap(
                storage, previous, base, expected, &later, cut_synced,
            )?);
            break;
        }
        report.segments_scanned += 1;
        report.batches_scanned += current.report.batches;
        report.bytes_scanned += u64::from(current.report.valid_bytes);
        expected = Some(current.report.next_offset);
        if current.report.stop.is_none() {
            scanned.push(current);
            index += 1;
            continue;
        }
        let later = scan_files(storage, &untrusted[index + 1..], config, None)?;
        let mut current = current;
        report.truncation = Some(judge_stop(storage, &mut current, &later, cut_synced)?);
        scanned.push(current);
        break;
    }
    Ok(scanned)
}

/// Says what recovery cut: a torn tail (a warning), or corrupt synced
/// data of a replica, for its owner to restore (an error).
fn log_truncation(truncation: &Truncation) {
    if truncation.synced {
        tracing::error!(
            segment = %segment::log_file_name(truncation.segment_base_offset),
            position = truncation.position,
            bytes_removed = truncation.bytes_removed,
            reason = %truncation.reason,
            "recovery cut corrupt synced data: the owner must restore it"
        );
        return;
    }
    tracing::warn!(
        segment = %segment::log_file_name(truncation.segment_base_offset),
        position = truncation.position,
        bytes_removed = truncation.bytes_removed,
        segments_removed = truncation.segments_removed.len(),
        reason = %truncation.reason,
        "recovery cut a torn tail that was never synced"
    );
}

/// A segment that does not follow on from the one before: that one lost a
/// tail that was never synced, unless a batch from here on records synced
/// data. Cuts the tail, or fails.
fn judge_gap(
    storage: &dyn Storage,
    (previous_base, previous_end): (u64, u64),
    base: u64,
    expected: u64,
    later: &[Scanned],
    cut_synced: bool,
) -> Result<Truncation, LogError> {
    let reason = format!("the next segment starts at offset {base}, not {expected}");
    let synced = later.iter().any(|scan| scan.report.synced_claim > 0);
    if synced && !cut_synced {
        return Err(LogError::Corrupt {
            segment: segment::log_file_name(previous_base),
            position: previous_end,
            reason: format!("{reason}, and a batch after it records synced data"),
        });
    }
    let cut = cut_tail(storage, previous_base, previous_end, reason, None, later)?;
    Ok(Truncation { synced, ..cut })
}

/// A scan that stopped at an invalid batch: a torn tail, or corruption of
/// synced data? Cuts the tail (and `current` with it), or fails.
fn judge_stop(
    storage: &dyn Storage,
    current: &mut Scanned,
    later: &[Scanned],
    cut_synced: bool,
) -> Result<Truncation, LogError> {
    let stop = current.report.stop.as_ref().expect("a scan that stopped");
    let base = current.base_offset;
    let stop_position = u64::from(stop.position);
    if stop_position == 0 {
        refuse_format_1(current)?;
    }
    let claim_here = find_synced_claim_after(
        current.file.as_ref(),
        stop_position,
        current.file_bytes,
        current.report.next_offset,
    )
    .map_err(|source| LogError::io("scanning", segment::log_file_name(base), source))?;
    let later_claim = later
        .iter()
        .map(|scan| scan.report.synced_claim)
        .max()
        .unwrap_or(0);
    let synced =
        claim_here.is_some_and(|claim| u64::from(claim) > stop_position) || later_claim > 0;
    if synced && !cut_synced {
        return Err(LogError::Corrupt {
            segment: segment::log_file_name(base),
            position: stop_position,
            reason: format!(
                "{} in data that a later batch records as synced",
                stop.reason
            ),
        });
    }
    let reason = stop.reason.to_string();
    let truncation = cut_tail(
        storage,
        base,
        stop_position,
        reason,
        Some((current.file.as_ref(), current.file_bytes)),
        later,
    )?;
    current.file_bytes = stop_position;
    current.report.stop = None;
    Ok(Truncation {
        synced,
        ..truncation
    })
}

/// A segment whose first bytes are a batch of weir-log's first format is
/// refused, not cut as a torn tail.
fn refuse_format_1(scanned: &Scanned) -> Result<(), LogError> {
    let first = weir_io::read_agreed(scanned.file.as_ref(), 0, 128).map_err(|source| {
        LogError::io(
            "reading",
            segment::log_file_name(scanned.base_offset),
            source,
        )
    })?;
    if is_format_1_batch(&first) {
        return Err(LogError::UnsupportedFormat {
            file: segment::log_file_name(scanned.base_offset),
            found: FORMAT_1_DESCRIPTION.into(),
        });
    }
    Ok(())
}

/// Step 6, continued: the scanned segments join the trusted ones; the last
/// one is active and keeps building its indexes.
fn add_scanned_segments(
    storage: &dyn Storage,
    segments: &mut BTreeMap<u64, Segment>,
    scanned: Vec<Scanned>,
    now: u64,
) -> Result<(), LogError> {
    let last_scanned = scanned.len().checked_sub(1);
    for (index, scan) in scanned.into_iter().enumerate() {
        let active = Some(index) == last_scanned;
        let segment = scanned_segment(storage, scan, active, now)?;
        segments.insert(segment.base_offset, segment);
    }
    Ok(())
}

/// Step 7: removes the sealed segments wholly before the log start, and
/// restarts an empty log at its start when the crash took back everything
/// up to it. Returns the log start and end offsets.
fn apply_log_start(
    storage: &dyn Storage,
    segments: &mut BTreeMap<u64, Segment>,
    log_start_offset: u64,
    now: u64,
    removed_before: &mut Vec<u64>,
) -> Result<(u64, u64), LogError> {
    if segments.is_empty() {
        segments.insert(
            log_start_offset,
            empty_segment(storage, log_start_offset, now)?,
        );
    }
    let removable: Vec<u64> = segments
        .values()
        .take(segments.len() - 1)
        .filter(|segment| segment.next_offset <= log_start_offset)
        .map(|segment| segment.base_offset)
        .collect();
    for base in removable {
        segments.remove(&base);
        remove_segment_files(storage, base)?;
        removed_before.push(base);
    }
    let first_base = segments.keys().next().copied().unwrap_or(0);
    let mut end = segments
        .values()
        .next_back()
        .map_or(first_base, |segment| segment.next_offset);
    if log_start_offset > end {
        // Records were deleted up to an offset that the crash took back
        // (they were never synced). Offsets below the start are never
        // reused: the log restarts, empty, at its start offset.
        for base in std::mem::take(segments).into_keys() {
            remove_segment_files(storage, base)?;
            removed_before.push(base);
        }
        segments.insert(
            log_start_offset,
            empty_segment(storage, log_start_offset, now)?,
        );
        end = log_start_offset;
    }
    let first_base = segments.keys().next().copied().unwrap_or(end);
    Ok((log_start_offset.clamp(first_base, end), end))
}

/// Step 8: makes what was recovered durable, then records it in a new
/// checkpoint (no truncation pending, no clean shutdown).
fn make_recovered_durable(
    storage: &dyn Storage,
    segments: &mut BTreeMap<u64, Segment>,
    log_start_offset: u64,
) -> Result<(), LogError> {
    for segment in segments.values_mut() {
        if !segment.trusted || segment.synced_position < segment.size {
            segment
                .file
                .sync()
                .map_err(|source| LogError::io("syncing", segment.name(), source))?;
            segment.synced_position = segment.size;
        }
        for file in std::mem::take(&mut segment.unsynced_index_files) {
            file.sync()
                .map_err(|source| LogError::io("syncing an index of", segment.name(), source))?;
        }
    }
    storage.sync_dir().map_err(directory_io("syncing"))?;
    let active_base = segments.keys().next_back().copied();
    for segment in segments.values_mut() {
        segment.trusted = Some(segment.base_offset) != active_base;
    }
    Checkpoint {
        log_start_offset,
        clean_shutdown: false,
        truncation: None,
        segments: trusted_summaries(segments),
    }
    .write(storage)
}

/// Step 9: the leader epochs, without entries at or after the log end;
/// rebuilt from the batches when the file is missing (and the log is not
/// empty) or unreadable.
fn recover_epochs(
    storage: &dyn Storage,
    segments: &BTreeMap<u64, Segment>,
    log_end: u64,
    report: &mut RecoveryReport,
) -> Result<LeaderEpochs, LogError> {
    let log_empty = segments.values().all(Segment::is_empty);
    let mut epochs = match LeaderEpochs::read(storage)? {
        Some(Ok(epochs)) => epochs,
        None if log_empty => return Ok(LeaderEpochs::default()),
        unreadable => {
            let why = match unreadable {
                Some(Err(reason)) => reason,
                _ => "missing".into(),
            };
            tracing::warn!(reason = %why, "rebuilding the leader-epoch file from the batches");
            report.epochs_rebuilt = true;
            let epochs = epochs_from_batches(segments)?;
            epochs.write(storage)?;
            epochs
        }
    };
    if epochs.truncate_from_end(log_end) {
        epochs.write(storage)?;
    }
    Ok(epochs)
}

fn epochs_from_batches(segments: &BTreeMap<u64, Segment>) -> Result<LeaderEpochs, LogError> {
    let mut epochs = LeaderEpochs::default();
    let mut problem = None;
    walk_segments(segments, 0, |stored| {
        match u32::try_from(stored.header.leader_epoch) {
            Ok(epoch) if epochs.accepts(epoch) => {
                epochs.assign(epoch, stored.header.base_offset);
            }
            _ => {
                problem.get_or_insert(stored.header.base_offset);
            }
        }
    })?;
    if let Some(offset) = problem {
        return Err(LogError::Corrupt {
            segment: LEADER_EPOCHS_FILE.into(),
            position: offset,
            reason: "a batch's leader epoch is negative or older than the batch before".into(),
        });
    }
    Ok(epochs)
}

/// Removes the producer snapshots beyond the log end: a crash took back the
/// batches they cover, and offsets after the end will be reused.
fn remove_snapshots_after(storage: &dyn Storage, log_end: u64) -> Result<(), LogError> {
    crate::partition::remove_old_snapshots(storage, usize::MAX, |offset| offset <= log_end)
        .map_err(|source| LogError::io("removing snapshots in", "partition directory", source))
}

/// Step 10 (and after a truncation): the producers' state at `log_end`,
/// from the newest valid snapshot at or below it and the batches after it;
/// returns it and how many batches were replayed.
pub(crate) fn rebuild_producers(
    storage: &dyn Storage,
    segments: &BTreeMap<u64, Segment>,
    log_start: u64,
    log_end: u64,
) -> Result<(ProducerStates, u64), LogError> {
    rebuild_producers_from(storage, segments, log_start, log_end)
        .map(|(state, _, replayed)| (state, replayed))
}

fn rebuild_producers_from(
    storage: &dyn Storage,
    segments: &BTreeMap<u64, Segment>,
    log_start: u64,
    log_end: u64,
) -> Result<(ProducerStates, Option<u64>, u64), LogError> {
    let (mut state, snapshot) = newest_snapshot(storage, log_end)?;
    let from = snapshot.unwrap_or(log_start).max(log_start);
    let mut replayed = 0;
    if from < log_end {
        walk_segments(segments, from, |stored| {
            if stored.header.base_offset >= from {
                state.record(&stored.header, stored.header.base_offset);
                replayed += 1;
            }
        })?;
    }
    Ok((state, snapshot, replayed))
}

/// The newest producer snapshot at or below `log_end` that reads back
/// whole, or an empty state.
fn newest_snapshot(
    storage: &dyn Storage,
    log_end: u64,
) -> Result<(ProducerStates, Option<u64>), LogError> {
    let entries = storage.list().map_err(directory_io("listing"))?;
    let mut offsets: Vec<u64> = entries
        .iter()
        .filter_map(|entry| parse_snapshot_file_name(&entry.name))
        .filter(|offset| *offset <= log_end)
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    for offset in offsets {
        let name = snapshot_file_name(offset);
        let bytes = weir_io::read_whole_file_agreed(storage, &name)
            .map_err(|source| LogError::io("reading", name.clone(), source))?;
        match bytes.map(|bytes| ProducerStates::decode_snapshot(&bytes)) {
            Some(Ok((found, state))) if found == offset => return Ok((state, Some(offset))),
            Some(Ok(_)) => {
                tracing::warn!(file = %name, "producer snapshot names another offset; ignored")
            }
            Some(Err(reason)) => {
                tracing::warn!(file = %name, %reason, "unreadable producer snapshot; ignored")
            }
            None => {}
        }
    }
    Ok((ProducerStates::default(), None))
}

/// Walks every batch from the segment holding `from` on, checking each
/// (see [`segment::walk`]).
fn walk_segments(
    segments: &BTreeMap<u64, Segment>,
    from: u64,
    mut visit: impl FnMut(&crate::frame::StoredHeader),
) -> Result<(), LogError> {
    let first = segments
        .range(..=from)
        .next_back()
        .map_or(0, |(base, _)| *base);
    for segment in segments.range(first..).map(|(_, segment)| segment) {
        let walked = segment::walk(
            segment.file.as_ref(),
            segment.base_offset,
            u64::from(segment.size),
            |_, stored| visit(stored),
        )
        .map_err(|source| LogError::io("reading", segment.name(), source))?;
        if let Some(stop) = walked.stop {
            return Err(LogError::Corrupt {
                segment: segment.name(),
                position: u64::from(stop.position),
                reason: stop.reason.to_string(),
            });
        }
    }
    Ok(())
}

/// Summaries of the trusted segments, in order (a prefix of the log).
pub(crate) fn trusted_summaries(segments: &BTreeMap<u64, Segment>) -> Vec<SegmentSummary> {
    segments
        .values()
        .take_while(|segment| segment.trusted)
        .map(Segment::summary)
        .collect()
}

fn directory_io(operation: &'static str) -> impl Fn(std::io::Error) -> LogError {
    move |source| LogError::io(operation, "partition directory", source)
}

pub(crate) fn empty_segment(
    storage: &dyn Storage,
    base_offset: u64,
    now: u64,
) -> Result<Segment, LogError> {
    let file = open_log_file(storage, base_offset, OpenMode::CreateIfMissing)?;
    file.set_len(0).map_err(|source| {
        LogError::io("truncating", segment::log_file_name(base_offset), source)
    })?;
    Ok(Segment::empty(base_offset, file, now))
}

fn trusted_segment(file: Arc<dyn weir_io::File>, summary: &SegmentSummary, now: u64) -> Segment {
    Segment {
        base_offset: summary.base_offset,
        file,
        size: summary.size,
        next_offset: summary.next_offset,
        max_timestamp: summary.max_timestamp,
        synced_position: summary.size,
        created_ms: now,
        index: SegmentIndex::Unloaded,
        trusted: true,
        unsynced_index_files: Vec::new(),
        allocated: u64::from(summary.size),
    }
}

fn scan_file(storage: &dyn Storage, base: u64, config: &LogConfig) -> Result<Scanned, LogError> {
    let name = segment::log_file_name(base);
    let file = open_log_file(storage, base, OpenMode::Existing)?;
    let file_bytes = file
        .len()
        .map_err(|source| LogError::io("reading the length of", name.clone(), source))?;
    let report = segment::scan(file.as_ref(), base, file_bytes, config.index_interval_bytes)
        .map_err(|source| LogError::io("scanning", name, source))?;
    Ok(Scanned {
        base_offset: base,
        file,
        file_bytes,
        report,
    })
}

/// Scans the segments `bases` (the first already scanned if given).
fn scan_files(
    storage: &dyn Storage,
    bases: &[u64],
    config: &LogConfig,
    first: Option<Scanned>,
) -> Result<Vec<Scanned>, LogError> {
    let skip = usize::from(first.is_some());
    let mut scanned: Vec<Scanned> = first.into_iter().collect();
    for base in &bases[skip..] {
        scanned.push(scan_file(storage, *base, config)?);
    }
    Ok(scanned)
}

/// Cuts segment `segment_base` at `position` (its file, if given, is
/// truncated there) and removes the later segments.
fn cut_tail(
    storage: &dyn Storage,
    segment_base: u64,
    position: u64,
    reason: String,
    cut_file: Option<(&dyn weir_io::File, u64)>,
    later: &[Scanned],
) -> Result<Truncation, LogError> {
    let name = segment::log_file_name(segment_base);
    let mut bytes_removed = cut_file.map_or(0, |(_, file_bytes)| file_bytes - position);
    let mut offsets_removed: Option<(u64, u64)> = None;
    for scan in later {
        bytes_removed += scan.file_bytes;
        if scan.report.batches > 0 {
            let first = scan.base_offset;
            let last = scan.report.next_offset - 1;
            offsets_removed = Some(match offsets_removed {
                None => (first, last),
                Some((low, high)) => (low.min(first), high.max(last)),
            });
        }
    }
    // Later segments go first: if the cut is interrupted, the next recovery
    // finds the same torn batch and no later segment claiming it synced.
    for scan in later {
        remove_segment_files(storage, scan.base_offset)?;
    }
    storage.sync_dir().map_err(directory_io("syncing"))?;
    if let Some((file, _)) = cut_file {
        file.set_len(position)
            .map_err(|source| LogError::io("truncating", name.clone(), source))?;
        file.sync()
            .map_err(|source| LogError::io("syncing", name, source))?;
    }
    Ok(Truncation {
        segment_base_offset: segment_base,
        position,
        reason,
        bytes_removed,
        segments_removed: later.iter().map(|scan| scan.base_offset).collect(),
        offsets_removed,
        synced: false,
    })
}

fn scanned_segment(
    storage: &dyn Storage,
    scan: Scanned,
    active: bool,
    now: u64,
) -> Result<Segment, LogError> {
    let mut builder = scan.report.index;
    let mut unsynced_index_files = Vec::new();
    let index = if active {
        SegmentIndex::Building(builder)
    } else {
        builder.seal();
        unsynced_index_files = write_index_files(storage, scan.base_offset, &builder)?;
        SegmentIndex::Sealed {
            offsets: IndexBytes::Memory(builder.offsets),
            times: IndexBytes::Memory(builder.times),
        }
    };
    Ok(Segment {
        base_offset: scan.base_offset,
        file: scan.file,
        size: scan.report.valid_bytes,
        next_offset: scan.report.next_offset,
        max_timestamp: scan.report.max_timestamp,
        synced_position: 0,
        created_ms: now,
        index,
        trusted: false,
        unsynced_index_files,
        allocated: u64::from(scan.report.valid_bytes),
    })
}

/// Loads the index files of a cleanly closed active segment into a builder
/// that appends can continue; rescans the segment if they disagree with it.
fn resume_active_index(
    storage: &dyn Storage,
    segment: &mut Segment,
    config: &LogConfig,
) -> Result<(), LogError> {
    let read = |name: String| -> Option<Vec<u8>> {
        weir_io::read_whole_file(storage, &name).ok().flatten()
    };
    let offsets = read(index_file_name(segment.base_offset));
    let times = read(time_index_file_name(segment.base_offset));
    let relative_end = segment.next_offset - segment.base_offset;
    let resumed = match (offsets, times) {
        (Some(offsets), Some(times))
            if index::check_offset_index(&offsets, segment.size).is_ok()
                && index::check_time_index(&times, relative_end).is_ok() =>
        {
            let max = segment
                .max_timestamp
                .map(|(timestamp, offset)| (timestamp, segment.relative(offset)));
            Some(IndexBuilder::resume(offsets, times, max))
        }
        _ => None,
    };
    let builder = match resumed {
        Some(builder) => builder,
        None => {
            let scan = segment::scan(
                segment.file.as_ref(),
                segment.base_offset,
                u64::from(segment.size),
                config.index_interval_bytes,
            )
            .map_err(|source| LogError::io("scanning", segment.name(), source))?;
            if let Some(stop) = scan.stop {
                return Err(LogError::Corrupt {
                    segment: segment.name(),
                    position: u64::from(stop.position),
                    reason: format!("{} in a cleanly closed segment", stop.reason),
                });
            }
            scan.index
        }
    };
    segment.index = SegmentIndex::Building(builder);
    Ok(())
}

pub(crate) fn remove_segment_files(storage: &dyn Storage, base: u64) -> Result<(), LogError> {
    for name in [
        segment::log_file_name(base),
        index_file_name(base),
        time_index_file_name(base),
    ] {
        remove_if_present(storage, &name)?;
    }
    Ok(())
}

/// Removes every producer snapshot (the log restarts empty elsewhere).
pub(crate) fn remove_producer_snapshots(storage: &dyn Storage) -> Result<(), LogError> {
    for entry in storage.list().map_err(directory_io("listing"))? {
        if parse_snapshot_file_name(&entry.name).is_some() {
            remove_if_present(storage, &entry.name)?;
        }
    }
    Ok(())
}

/// Removes a file, which may already be gone.
pub(crate) fn remove_if_present(storage: &dyn Storage, name: &str) -> Result<(), LogError> {
    match storage.remove_file(name) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::io("removing", name, source)),
    }
}
