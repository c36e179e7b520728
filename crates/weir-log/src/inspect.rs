//! Read-only inspection of a partition directory, for operators (`weir
//! inspect log`): every batch of every segment checked against both CRCs,
//! the index files checked against the segments, and the first invalid
//! batch of a segment classified as a torn tail (nothing later vouches for
//! it) or corruption (a later batch records it as synced), exactly as
//! recovery would judge it. Nothing is written.

use std::io;

use weir_io::{File, OpenMode, Storage};

use crate::batch::{batches, BatchHeader};
use crate::index::{check_offset_index, check_time_index};
use crate::segment::{
    find_synced_claim_after, index_file_name, log_file_name, parse_file_name, time_index_file_name,
    SegmentFile,
};

/// One batch, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    /// Where it starts in its segment.
    pub position: u64,
    /// Its header (offsets, epoch, timestamps, producer, record count).
    pub header: BatchHeader,
}

/// What is wrong at the end of a segment's valid batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentProblem {
    /// Bytes after the last valid batch that nothing vouches for: a write
    /// cut short by a crash. Recovery would cut them.
    TornTail {
        /// Where the valid batches end.
        position: u64,
        /// Bytes after it.
        bytes: u64,
        /// Why the batch there is invalid.
        reason: String,
    },
    /// An invalid batch in bytes that a later batch records as synced:
    /// corruption. Recovery would refuse to open the partition.
    Corrupt {
        /// Where the invalid batch starts.
        position: u64,
        /// Why it is invalid.
        reason: String,
        /// The synced position the later batch claims.
        vouched_up_to: u32,
    },
}

/// One segment, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInspection {
    /// The segment's base offset (from its file name).
    pub base_offset: u64,
    /// Bytes in the file.
    pub file_bytes: u64,
    /// Bytes of valid batches from the start.
    pub valid_bytes: u64,
    /// The valid batches.
    pub batches: Vec<BatchSummary>,
    /// What follows the valid batches, if anything.
    pub problem: Option<SegmentProblem>,
    /// Whether the offset index is missing, or why it disagrees with the
    /// segment (recovery would rebuild it).
    pub offset_index: Result<(), String>,
    /// The same for the time index.
    pub time_index: Result<(), String>,
}

fn read_all(file: &dyn File) -> io::Result<Vec<u8>> {
    let length = file.len()?;
    let mut bytes = vec![0; length as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

fn check_index(
    storage: &dyn Storage,
    name: &str,
    check: impl FnOnce(&[u8]) -> Result<(), &'static str>,
) -> io::Result<Result<(), String>> {
    if !storage.exists(name)? {
        return Ok(Err("missing".into()));
    }
    let file = storage.open_file(name, OpenMode::Existing)?;
    let bytes = read_all(file.as_ref())?;
    Ok(check(&bytes).map_err(str::to_string))
}

/// Checks the segment with base offset `base_offset` in `storage`.
pub fn inspect_segment(storage: &dyn Storage, base_offset: u64) -> io::Result<SegmentInspection> {
    let file = storage.open_file(&log_file_name(base_offset), OpenMode::Existing)?;
    let bytes = read_all(file.as_ref())?;
    let mut found = Vec::new();
    let mut iterator = batches(&bytes);
    let mut problem = None;
    loop {
        let position = iterator.position() as u64;
        match iterator.next() {
            None => break,
            Some(Ok(batch)) => found.push(BatchSummary {
                position,
                header: *batch.header(),
            }),
            Some(Err(error)) => {
                let claim =
                    find_synced_claim_after(file.as_ref(), position, bytes.len() as u64, 0)?;
                problem = Some(match claim {
                    Some(claim) if u64::from(claim) > position => SegmentProblem::Corrupt {
                        position,
                        reason: error.to_string(),
                        vouched_up_to: claim,
                    },
                    _ => SegmentProblem::TornTail {
                        position,
                        bytes: bytes.len() as u64 - position,
                        reason: error.to_string(),
                    },
                });
                break;
            }
        }
    }
    let valid_bytes = match &problem {
        Some(
            SegmentProblem::TornTail { position, .. } | SegmentProblem::Corrupt { position, .. },
        ) => *position,
        None => bytes.len() as u64,
    };
    let relative_end = found
        .last()
        .map_or(0, |batch| batch.header.next_offset() - base_offset);
    let offset_index = check_index(storage, &index_file_name(base_offset), |index| {
        check_offset_index(index, valid_bytes as u32)
    })?;
    let time_index = check_index(storage, &time_index_file_name(base_offset), |index| {
        check_time_index(index, relative_end)
    })?;
    Ok(SegmentInspection {
        base_offset,
        file_bytes: bytes.len() as u64,
        valid_bytes,
        batches: found,
        problem,
        offset_index,
        time_index,
    })
}

/// Checks every segment of the partition directory `storage`, in offset
/// order.
pub fn inspect_partition(storage: &dyn Storage) -> io::Result<Vec<SegmentInspection>> {
    let mut bases: Vec<u64> = storage
        .list()?
        .into_iter()
        .filter_map(|entry| match parse_file_name(&entry.name) {
            Some((base, SegmentFile::Log)) => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    bases
        .into_iter()
        .map(|base| inspect_segment(storage, base))
        .collect()
}
