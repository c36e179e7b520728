//! Read-only inspection of a partition directory, for operators (`weir
//! inspect log`): every stored batch of every segment checked against its
//! frame's CRC and Kafka's, the index files checked against the segments,
//! the first invalid batch of a segment classified as a torn tail (nothing
//! later vouches for it) or corruption (a later batch records it as
//! synced), exactly as recovery would judge it, and the partition's small
//! files (checkpoint, leader epochs, producer snapshots) decoded. Nothing
//! is written.

use std::io;

use weir_io::{File, OpenMode, Storage};

use crate::batch::BatchHeader;
use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::epochs::{LeaderEpochs, LEADER_EPOCHS_FILE};
use crate::frame::{is_format_1_batch, stored_batches};
use crate::index::{check_offset_index, check_time_index};
use crate::producers::{parse_snapshot_file_name, snapshot_file_name, ProducerStates};
use crate::segment::{
    find_synced_claim_after, index_file_name, log_file_name, parse_file_name, time_index_file_name,
    SegmentFile,
};

/// One stored batch, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    /// Where its frame starts in its segment.
    pub position: u64,
    /// Bytes of the segment known durable when it was written (its frame).
    pub synced_position: u32,
    /// Its Kafka header (offsets, leader epoch, attributes, timestamps,
    /// producer, record count).
    pub header: BatchHeader,
}

/// The partition's small files, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFiles {
    /// The checkpoint, if there is one, or why it is unreadable.
    pub checkpoint: Option<Result<Checkpoint, String>>,
    /// The leader epochs, if the file exists, or why it is unreadable.
    pub epochs: Option<Result<LeaderEpochs, String>>,
    /// Each producer snapshot by offset: how many producers it holds, or
    /// why it is unreadable.
    pub producer_snapshots: Vec<(u64, Result<usize, String>)>,
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
    /// The segment holds weir-log's first format (its own batch layout):
    /// this version refuses to open it.
    Format1,
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
    let length = usize::try_from(length)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file larger than memory"))?;
    let mut bytes = vec![0; length];
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
    let mut iterator = stored_batches(&bytes);
    let mut problem = None;
    loop {
        let position = iterator.position() as u64;
        match iterator.next() {
            None => break,
            Some(Ok(stored)) => found.push(BatchSummary {
                position,
                synced_position: stored.synced_position,
                header: *stored.batch.header(),
            }),
            Some(Err(_)) if position == 0 && is_format_1_batch(&bytes) => {
                problem = Some(SegmentProblem::Format1);
                break;
            }
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
        Some(SegmentProblem::Format1) => 0,
        None => bytes.len() as u64,
    };
    let relative_end = found
        .last()
        .map_or(0, |batch| batch.header.next_offset() - base_offset);
    let offset_index = check_index(storage, &index_file_name(base_offset), |index| {
        check_offset_index(index, u32::try_from(valid_bytes).unwrap_or(u32::MAX))
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

/// Decodes the checkpoint, the leader-epoch file and the producer snapshots
/// of the partition directory `storage`.
pub fn inspect_partition_files(storage: &dyn Storage) -> io::Result<PartitionFiles> {
    let read = |name: &str| -> io::Result<Option<Vec<u8>>> {
        if !storage.exists(name)? {
            return Ok(None);
        }
        read_all(storage.open_file(name, OpenMode::Existing)?.as_ref()).map(Some)
    };
    let checkpoint = read(CHECKPOINT_FILE)?.map(|bytes| {
        if Checkpoint::is_format_1(&bytes) {
            return Err(crate::error::FORMAT_1_DESCRIPTION.to_string());
        }
        Checkpoint::decode(&bytes)
    });
    let epochs = read(LEADER_EPOCHS_FILE)?.map(|bytes| LeaderEpochs::decode(&bytes));
    let mut offsets: Vec<u64> = storage
        .list()?
        .iter()
        .filter_map(|entry| parse_snapshot_file_name(&entry.name))
        .collect();
    offsets.sort_unstable();
    let mut producer_snapshots = Vec::new();
    for offset in offsets {
        let bytes = read(&snapshot_file_name(offset))?.unwrap_or_default();
        let decoded = ProducerStates::decode_snapshot(&bytes).map(|(_, state)| state.len());
        producer_snapshots.push((offset, decoded));
    }
    Ok(PartitionFiles {
        checkpoint,
        epochs,
        producer_snapshots,
    })
}
