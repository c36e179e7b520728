//! Sparse offset and time indexes of a segment.
//!
//! Both are derived data: they are rebuilt from the segment whenever they
//! are missing or disagree with it, and carry no checksum of their own.
//! Entries are little-endian and fixed-size, so an index file is a plain
//! array that can be memory-mapped and binary-searched in place:
//!
//! - offset index entry (8 bytes): `relative_offset: u32`, `position: u32`,
//!   the base offset (relative to the segment's) and byte position of a
//!   batch; one entry per `index_interval_bytes` of log at most. Entries
//!   strictly increase in both fields. A batch at position 0 has no entry:
//!   lookups fall back to the start of the segment.
//! - time index entry (12 bytes): `timestamp: i64`, `relative_offset: u32`:
//!   the largest timestamp of the segment up to and including the batch at
//!   that offset. Entries strictly increase in timestamp. When a segment is
//!   sealed, a last entry records its largest timestamp.

use std::ops::Deref;

use weir_io::FileView;

use crate::le::{u32_at, u64_at};

/// Bytes in one offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes in one time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// An offset index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment.
    pub position: u32,
}

/// A time index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest timestamp up to and including the batch.
    pub timestamp: i64,
    /// The batch's base offset minus the segment's base offset.
    pub relative_offset: u32,
}

/// Index bytes: growing in memory (the active segment, or a rebuilt index)
/// or a view of a file (a sealed segment).
#[derive(Debug)]
pub enum IndexBytes {
    /// Held in memory.
    Memory(Vec<u8>),
    /// A view of an index file.
    File(FileView),
}

impl Deref for IndexBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            IndexBytes::Memory(bytes) => bytes,
            IndexBytes::File(view) => view,
        }
    }
}

impl Default for IndexBytes {
    fn default() -> Self {
        IndexBytes::Memory(Vec::new())
    }
}

/// The `index`-th entry of an offset index (which must have it).
pub fn offset_entry(bytes: &[u8], index: usize) -> OffsetEntry {
    let at = index * OFFSET_ENTRY_BYTES;
    OffsetEntry {
        relative_offset: u32_at(bytes, at),
        position: u32_at(bytes, at + 4),
    }
}

/// The `index`-th entry of a time index (which must have it).
pub fn time_entry(bytes: &[u8], index: usize) -> TimeEntry {
    let at = index * TIME_ENTRY_BYTES;
    TimeEntry {
        timestamp: u64_at(bytes, at) as i64,
        relative_offset: u32_at(bytes, at + 8),
    }
}

/// The entry with the largest relative offset not above `relative_offset`,
/// or `None` (start at the beginning of the segment). Ignores a trailing
/// partial entry.
pub fn lookup_offset(bytes: &[u8], relative_offset: u32) -> Option<OffsetEntry> {
    let count = bytes.len() / OFFSET_ENTRY_BYTES;
    // The number of entries at or below the target.
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if offset_entry(bytes, middle).relative_offset <= relative_offset {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low.checked_sub(1).map(|index| offset_entry(bytes, index))
}

/// The last entry whose timestamp is below `timestamp`: every batch up to
/// and including its offset has only smaller timestamps, so a search for the
/// first record at or after `timestamp` can start there. `None`: start at
/// the beginning of the segment.
pub fn lookup_time(bytes: &[u8], timestamp: i64) -> Option<TimeEntry> {
    let count = bytes.len() / TIME_ENTRY_BYTES;
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if time_entry(bytes, middle).timestamp < timestamp {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low.checked_sub(1).map(|index| time_entry(bytes, index))
}

/// The last entry of a time index.
pub fn last_time_entry(bytes: &[u8]) -> Option<TimeEntry> {
    let count = bytes.len() / TIME_ENTRY_BYTES;
    count.checked_sub(1).map(|index| time_entry(bytes, index))
}

/// Checks the shape of an offset index for a segment of `segment_bytes`:
/// whole entries, strictly increasing, positions inside the segment.
pub fn check_offset_index(bytes: &[u8], segment_bytes: u32) -> Result<(), &'static str> {
    if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
        return Err("offset index length is not a whole number of entries");
    }
    let mut previous: Option<OffsetEntry> = None;
    for index in 0..bytes.len() / OFFSET_ENTRY_BYTES {
        let entry = offset_entry(bytes, index);
        if entry.position >= segment_bytes {
            return Err("offset index points past the end of the segment");
        }
        if let Some(previous) = previous {
            if entry.relative_offset <= previous.relative_offset
                || entry.position <= previous.position
            {
                return Err("offset index entries do not increase");
            }
        }
        previous = Some(entry);
    }
    Ok(())
}

/// Checks the shape of a time index for a segment whose offsets end before
/// `relative_offset_end`: whole entries, strictly increasing timestamps,
/// non-decreasing offsets inside the segment.
pub fn check_time_index(bytes: &[u8], relative_offset_end: u64) -> Result<(), &'static str> {
    if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
        return Err("time index length is not a whole number of entries");
    }
    let mut previous: Option<TimeEntry> = None;
    for index in 0..bytes.len() / TIME_ENTRY_BYTES {
        let entry = time_entry(bytes, index);
        if u64::from(entry.relative_offset) >= relative_offset_end {
            return Err("time index points past the end of the segment");
        }
        if let Some(previous) = previous {
            if entry.timestamp <= previous.timestamp
                || entry.relative_offset < previous.relative_offset
            {
                return Err("time index entries do not increase");
            }
        }
        previous = Some(entry);
    }
    Ok(())
}

/// Builds the indexes of a segment as batches are appended to it (or
/// scanned during recovery).
#[derive(Debug, Default)]
pub struct IndexBuilder {
    /// Offset index bytes.
    pub offsets: Vec<u8>,
    /// Time index bytes.
    pub times: Vec<u8>,
    /// Position of the last offset index entry (0 when there is none).
    last_offset_entry_position: u32,
    /// Position where the last time index entry was added.
    last_time_entry_position: u32,
    /// The largest timestamp seen, and the relative offset of its batch.
    max_timestamp: Option<(i64, u32)>,
    /// The timestamp of the last time index entry.
    last_indexed_timestamp: Option<i64>,
}

impl IndexBuilder {
    /// Accounts for a batch appended at `position`.
    pub fn add_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        max_timestamp: i64,
        interval_bytes: u32,
    ) {
        if position > 0 && position - self.last_offset_entry_position >= interval_bytes {
            self.offsets
                .extend_from_slice(&relative_offset.to_le_bytes());
            self.offsets.extend_from_slice(&position.to_le_bytes());
            self.last_offset_entry_position = position;
        }
        if self
            .max_timestamp
            .is_none_or(|(max, _)| max_timestamp > max)
        {
            self.max_timestamp = Some((max_timestamp, relative_offset));
            let due = self.last_indexed_timestamp.is_none()
                || position - self.last_time_entry_position >= interval_bytes;
            if due {
                self.push_time_entry(max_timestamp, relative_offset, position);
            }
        }
    }

    fn push_time_entry(&mut self, timestamp: i64, relative_offset: u32, position: u32) {
        self.times.extend_from_slice(&timestamp.to_le_bytes());
        self.times.extend_from_slice(&relative_offset.to_le_bytes());
        self.last_indexed_timestamp = Some(timestamp);
        self.last_time_entry_position = position;
    }

    /// Adds the last time index entry of a sealed segment, so that its last
    /// entry holds the segment's largest timestamp.
    pub fn seal(&mut self) {
        if let Some((timestamp, relative_offset)) = self.max_timestamp {
            if self.last_indexed_timestamp != Some(timestamp) {
                let position = self.last_time_entry_position;
                self.push_time_entry(timestamp, relative_offset, position);
            }
        }
    }

    /// Continues building indexes loaded from files (the active segment
    /// after a clean shutdown). `max_timestamp` is the segment's largest
    /// timestamp and the relative offset of its batch.
    pub fn resume(offsets: Vec<u8>, times: Vec<u8>, max_timestamp: Option<(i64, u32)>) -> Self {
        let last_offset_entry_position = (offsets.len() / OFFSET_ENTRY_BYTES)
            .checked_sub(1)
            .map_or(0, |index| offset_entry(&offsets, index).position);
        let last_indexed_timestamp = last_time_entry(&times).map(|entry| entry.timestamp);
        Self {
            offsets,
            times,
            last_offset_entry_position,
            // Only the spacing of time entries depends on this.
            last_time_entry_position: last_offset_entry_position,
            max_timestamp,
            last_indexed_timestamp,
        }
    }

    /// The largest timestamp seen and the relative offset of its batch.
    pub fn max_timestamp(&self) -> Option<(i64, u32)> {
        self.max_timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(entries: &[(u32, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (relative_offset, position) in entries {
            bytes.extend_from_slice(&relative_offset.to_le_bytes());
            bytes.extend_from_slice(&position.to_le_bytes());
        }
        bytes
    }

    fn times(entries: &[(i64, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (timestamp, relative_offset) in entries {
            bytes.extend_from_slice(&timestamp.to_le_bytes());
            bytes.extend_from_slice(&relative_offset.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn offset_lookup_finds_the_greatest_entry_at_or_below() {
        let index = offsets(&[(10, 4096), (20, 8192), (30, 12288)]);
        let check = |target, expected: Option<(u32, u32)>| {
            let found = lookup_offset(&index, target).map(|e| (e.relative_offset, e.position));
            assert_eq!(found, expected, "target {target}");
        };
        check(0, None);
        check(9, None);
        check(10, Some((10, 4096)));
        check(25, Some((20, 8192)));
        check(30, Some((30, 12288)));
        check(u32::MAX, Some((30, 12288)));
        assert_eq!(lookup_offset(&[], 5), None);
        assert_eq!(
            lookup_offset(&index[..12], 25),
            Some(OffsetEntry {
                relative_offset: 10,
                position: 4096
            })
        );
    }

    #[test]
    fn time_lookup_finds_the_last_entry_strictly_below() {
        let index = times(&[(100, 0), (200, 5), (300, 9)]);
        let check = |target, expected: Option<u32>| {
            assert_eq!(
                lookup_time(&index, target).map(|e| e.relative_offset),
                expected,
                "{target}"
            );
        };
        check(50, None);
        check(100, None);
        check(101, Some(0));
        check(300, Some(5));
        check(301, Some(9));
    }

    #[test]
    fn shape_checks_reject_what_a_crash_or_bit_rot_can_leave() {
        assert!(check_offset_index(&offsets(&[(1, 10), (2, 20)]), 30).is_ok());
        assert!(check_offset_index(&offsets(&[(1, 10), (2, 20)])[..12], 30).is_err());
        assert!(check_offset_index(&offsets(&[(2, 10), (1, 20)]), 30).is_err());
        assert!(check_offset_index(&offsets(&[(1, 10), (2, 40)]), 30).is_err());
        assert!(check_time_index(&times(&[(5, 0), (6, 3)]), 4).is_ok());
        assert!(check_time_index(&times(&[(5, 0), (5, 3)]), 4).is_err());
        assert!(check_time_index(&times(&[(5, 0), (6, 4)]), 4).is_err());
    }

    #[test]
    fn the_builder_indexes_every_interval_and_seals_with_the_maximum() {
        let mut builder = IndexBuilder::default();
        // Batches of 100 bytes, 10 records each, with an interval of 250.
        for batch in 0..10u32 {
            let timestamp = if batch == 3 {
                50
            } else {
                i64::from(batch) * 10
            };
            builder.add_batch(batch * 10, batch * 100, timestamp, 250);
        }
        let entries: Vec<(u32, u32)> = (0..builder.offsets.len() / 8)
            .map(|i| offset_entry(&builder.offsets, i))
            .map(|e| (e.relative_offset, e.position))
            .collect();
        assert_eq!(entries, [(30, 300), (60, 600), (90, 900)]);
        builder.seal();
        let last = last_time_entry(&builder.times).expect("entry");
        assert_eq!((last.timestamp, last.relative_offset), (90, 90));
        assert!(check_time_index(&builder.times, 100).is_ok());
        assert!(check_offset_index(&builder.offsets, 1000).is_ok());
    }
}
