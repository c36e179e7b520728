//! Recovery: turning whatever a crash left in a partition directory into a
//! valid log, and saying what was cut.
//!
//! 1. Leftover temporary files are removed; the checkpoint is read.
//! 2. Segments the checkpoint lists are trusted: they were synced, with
//!    their indexes, before it was written. Their sizes must match; their
//!    indexes are loaded lazily and rebuilt if they disagree with the log.
//! 3. Every later segment is scanned batch by batch (header, CRC, offsets
//!    following on), rebuilding its indexes.
//! 4. At the first invalid batch, at byte P of segment S, recovery decides
//!    between a torn tail and corruption. Every batch records, outside its
//!    CRC, how many bytes of its segment were synced when it was written. If
//!    a valid batch after P in S claims more than P bytes synced, or a valid
//!    batch of a later segment claims any (segments are synced in order), the
//!    bytes at P had been synced: that is corruption, and opening fails with
//!    [`LogError::Corrupt`] naming S and P. Otherwise the bytes from P on
//!    were never synced: S is truncated at P, later segments are removed, and
//!    the cut is reported in [`RecoveryReport::truncation`].
//! 5. Segments wholly before the log start offset are removed. Everything
//!    recovered is synced and a new checkpoint lists the sealed segments.
//!
//! A clean shutdown writes a checkpoint listing the active segment too, so
//! the next open scans nothing. The first thing an open does after reading
//! such a checkpoint is to write one that no longer lists the active
//! segment: a crash at any later point, including in the middle of a
//! truncation, is then recovered by a scan.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_io::{Clock, EntryKind, OpenMode, Storage};

use crate::checkpoint::{Checkpoint, SegmentSummary};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{self, IndexBuilder, IndexBytes};
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
    /// Segments removed because they lay wholly before the log start offset
    /// (a deletion interrupted by the crash).
    pub segments_removed_before_start: Vec<u64>,
    /// The first offset of the log.
    pub log_start_offset: u64,
    /// The offset after the last record.
    pub log_end_offset: u64,
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
}

/// A recovered log, ready to be wrapped in a partition.
pub(crate) struct Recovered {
    pub segments: BTreeMap<u64, Segment>,
    pub log_start_offset: u64,
    pub report: RecoveryReport,
}

struct Scanned {
    base_offset: u64,
    file: Arc<dyn weir_io::File>,
    file_bytes: u64,
    report: segment::ScanReport,
}

pub(crate) fn recover(
    storage: &dyn Storage,
    clock: &dyn Clock,
    config: &LogConfig,
) -> Result<Recovered, LogError> {
    let directory_io =
        |operation| move |source| LogError::io(operation, "partition directory", source);
    let entries = storage.list().map_err(directory_io("listing"))?;
    for entry in &entries {
        if entry.kind == EntryKind::File && entry.name.ends_with(".tmp") {
            storage
                .remove_file(&entry.name)
                .map_err(|source| LogError::io("removing", entry.name.clone(), source))?;
        }
    }
    let checkpoint = Checkpoint::read(storage)?.unwrap_or_default();
    let mut report = RecoveryReport {
        clean_shutdown: checkpoint.clean_shutdown,
        ..RecoveryReport::default()
    };
    let mut log_files: Vec<u64> = Vec::new();
    let mut index_files: Vec<(u64, String)> = Vec::new();
    for entry in entries.iter().filter(|entry| entry.kind == EntryKind::File) {
        match parse_file_name(&entry.name) {
            Some((base, SegmentFile::Log)) => log_files.push(base),
            Some((base, _)) => index_files.push((base, entry.name.clone())),
            None => {}
        }
    }
    log_files.sort_unstable();
    // Index files without their segment are leftovers of a removal.
    for (base, name) in &index_files {
        if log_files.binary_search(base).is_err() {
            remove_if_present(storage, name)?;
        }
    }

    // Files before the first trusted segment are leftovers of a prefix
    // deletion whose removal was not yet durable.
    let first_trusted = checkpoint
        .segments
        .first()
        .map(|summary| summary.base_offset);
    let mut removed_before: Vec<u64> = Vec::new();
    if let Some(first) = first_trusted {
        for base in log_files.iter().copied().filter(|base| *base < first) {
            remove_segment_files(storage, base)?;
            removed_before.push(base);
        }
        log_files.retain(|base| *base >= first);
    }

    let now = clock.now_ms();
    let mut segments = BTreeMap::new();
    for (index, summary) in checkpoint.segments.iter().enumerate() {
        if log_files.get(index) != Some(&summary.base_offset) {
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

    // Scan every segment after the trusted prefix.
    let mut expected = checkpoint
        .segments
        .last()
        .map(|summary| summary.next_offset);
    let untrusted: Vec<u64> = log_files[checkpoint.segments.len()..].to_vec();
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
            // The segment does not follow on from the one before, which
            // lost a tail that was never synced, unless a batch from here on
            // records synced data.
            let mut later = vec![current];
            for later_base in &untrusted[index + 1..] {
                later.push(scan_file(storage, *later_base, config)?);
            }
            let (previous_base, previous_end) = scanned
                .last()
                .map(|scan| (scan.base_offset, u64::from(scan.report.valid_bytes)))
                .or_else(|| {
                    checkpoint
                        .segments
                        .last()
                        .map(|summary| (summary.base_offset, u64::from(summary.size)))
                })
                .expect("an expected offset comes from a segment before");
            let reason = format!("the next segment starts at offset {base}, not {expected}");
            if later.iter().any(|scan| scan.report.synced_claim > 0) {
                return Err(LogError::Corrupt {
                    segment: segment::log_file_name(previous_base),
                    position: previous_end,
                    reason: format!("{reason}, and a batch after it records synced data"),
                });
            }
            let truncation = cut_tail(storage, previous_base, previous_end, reason, None, &later)?;
            report.truncation = Some(truncation);
            break;
        }
        report.segments_scanned += 1;
        report.batches_scanned += current.report.batches;
        report.bytes_scanned += u64::from(current.report.valid_bytes);
        expected = Some(current.report.next_offset);
        let Some(stop) = &current.report.stop else {
            scanned.push(current);
            index += 1;
            continue;
        };
        // An invalid batch: a torn tail, or corruption of synced data?
        let stop_position = u64::from(stop.position);
        let claim_here = find_synced_claim_after(
            current.file.as_ref(),
            stop_position,
            current.file_bytes,
            current.report.next_offset,
        )
        .map_err(|source| LogError::io("scanning", segment::log_file_name(base), source))?;
        let mut later = Vec::new();
        for later_base in &untrusted[index + 1..] {
            later.push(scan_file(storage, *later_base, config)?);
        }
        let later_claim = later
            .iter()
            .map(|scan| scan.report.synced_claim)
            .max()
            .unwrap_or(0);
        if claim_here.is_some_and(|claim| u64::from(claim) > stop_position) || later_claim > 0 {
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
            &later,
        )?;
        report.truncation = Some(truncation);
        let mut current = current;
        current.file_bytes = stop_position;
        current.report.stop = None;
        scanned.push(current);
        break;
    }
    if let Some(truncation) = &report.truncation {
        tracing::warn!(
            segment = %segment::log_file_name(truncation.segment_base_offset),
            position = truncation.position,
            bytes_removed = truncation.bytes_removed,
            segments_removed = truncation.segments_removed.len(),
            reason = %truncation.reason,
            "recovery cut a torn tail that was never synced"
        );
    }

    let last_scanned = scanned.len().checked_sub(1);
    for (index, scan) in scanned.into_iter().enumerate() {
        let active = Some(index) == last_scanned;
        let segment = scanned_segment(storage, scan, active, now)?;
        segments.insert(segment.base_offset, segment);
    }

    // The active segment of a clean shutdown continues its indexes.
    if let Some(last) = segments.values_mut().next_back() {
        if last.trusted {
            resume_active_index(storage, last, config)?;
        }
    }

    let mut log_start_offset = checkpoint.log_start_offset;
    if segments.is_empty() {
        segments.insert(
            log_start_offset,
            empty_segment(storage, log_start_offset, now)?,
        );
    }
    // Remove sealed segments wholly before the log start.
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
        for base in std::mem::take(&mut segments).into_keys() {
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
    log_start_offset = log_start_offset.clamp(first_base, end);

    // Make what was recovered durable, then record it.
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
        segments: trusted_summaries(&segments),
    }
    .write(storage)?;

    removed_before.sort_unstable();
    report.segments_removed_before_start = removed_before;
    report.segments = segments.len();
    report.log_start_offset = log_start_offset;
    report.log_end_offset = end;
    Ok(Recovered {
        segments,
        log_start_offset,
        report,
    })
}

/// Summaries of the trusted segments, in order (a prefix of the log).
pub(crate) fn trusted_summaries(segments: &BTreeMap<u64, Segment>) -> Vec<SegmentSummary> {
    segments
        .values()
        .take_while(|segment| segment.trusted)
        .map(Segment::summary)
        .collect()
}

fn empty_segment(storage: &dyn Storage, base_offset: u64, now: u64) -> Result<Segment, LogError> {
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
    storage
        .sync_dir()
        .map_err(|source| LogError::io("syncing", "partition directory", source))?;
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

/// Removes a file, which may already be gone.
pub(crate) fn remove_if_present(storage: &dyn Storage, name: &str) -> Result<(), LogError> {
    match storage.remove_file(name) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::io("removing", name, source)),
    }
}
