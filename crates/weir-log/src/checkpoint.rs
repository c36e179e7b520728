//! The partition checkpoint: the log start offset and the segments known to
//! be durable and intact, so that recovery need not rescan them.
//!
//! Layout (little-endian), written whole to `checkpoint.tmp`, synced, and
//! renamed over `checkpoint`:
//!
//! ```text
//! offset size field
//!      0    8 magic "WEIRCKPT"
//!      8    2 version = 2 (the log's format: Kafka record batches v2)
//!     10    4 crc (CRC-32C of bytes 14..end)
//!     14    8 log_start_offset
//!     22    1 flags: bit 0 clean_shutdown, bit 1 truncation pending
//!     23    8 truncation: the new log end offset   (0 unless pending)
//!     31    8 truncation: the cut segment's base   (0 unless pending)
//!     39    4 truncation: the byte position of the cut (0 unless pending)
//!     43    4 segment_count
//!     47    … segment_count entries of 36 bytes:
//!             base_offset u64, size u32, next_offset u64,
//!             max_timestamp i64 (i64::MIN: none), max_timestamp_offset u64
//! ```
//!
//! A truncation writes a checkpoint naming the cut before it removes
//! anything, so that a crash in the middle of it is finished by the next
//! recovery: the log is then at its old end (the checkpoint was not yet
//! durable) or at its new end, never in between. Version 1 was weir's
//! first format (its own batch layout); this code refuses it.
//!
//! The segments listed are a prefix of the log, in order, each synced with
//! its index files before the checkpoint listing it was written. With
//! `clean_shutdown`, the last one listed is the active segment as it was
//! closed; an open that finds it rewrites the checkpoint without the active
//! segment before the first write, so a crash after that open rescans it.

use weir_io::{read_whole_file_agreed, write_file_atomically, Storage};

use crate::batch::crc32c;
use crate::error::{LogError, FORMAT_1_DESCRIPTION};
use crate::le::{u32_at, u64_at};

/// The checkpoint's file name in a partition directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 8] = b"WEIRCKPT";
const VERSION: u16 = 2;
/// The version of weir-log's first format, which this code refuses.
const FORMAT_1_VERSION: u16 = 1;
const HEADER_BYTES: usize = 47;
const FLAG_CLEAN_SHUTDOWN: u8 = 1;
const FLAG_TRUNCATION: u8 = 2;
const ENTRY_BYTES: usize = 36;
/// The most segments one checkpoint lists.
pub const CHECKPOINT_SEGMENTS_MAX: usize = 1 << 20;

/// A segment as the checkpoint records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's base offset.
    pub base_offset: u64,
    /// Its size in bytes.
    pub size: u32,
    /// The offset after its last record.
    pub next_offset: u64,
    /// Its largest timestamp and that record's batch offset, if any.
    pub max_timestamp: Option<(i64, u64)>,
}

/// A truncation that a crash may have interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTruncation {
    /// The log end offset after it.
    pub end_offset: u64,
    /// The segment it cuts.
    pub segment_base_offset: u64,
    /// Where it cuts that segment.
    pub position: u32,
}

/// The checkpoint's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first offset of the log.
    pub log_start_offset: u64,
    /// Whether the log was closed cleanly (the last segment listed was the
    /// active one).
    pub clean_shutdown: bool,
    /// A truncation to finish before anything else.
    pub truncation: Option<PendingTruncation>,
    /// Durable, intact segments: a prefix of the log.
    pub segments: Vec<SegmentSummary>,
}

impl Checkpoint {
    /// Encodes the checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.segments.len() * ENTRY_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&self.log_start_offset.to_le_bytes());
        let mut flags = 0;
        if self.clean_shutdown {
            flags |= FLAG_CLEAN_SHUTDOWN;
        }
        if self.truncation.is_some() {
            flags |= FLAG_TRUNCATION;
        }
        bytes.push(flags);
        let truncation = self.truncation.unwrap_or(PendingTruncation {
            end_offset: 0,
            segment_base_offset: 0,
            position: 0,
        });
        bytes.extend_from_slice(&truncation.end_offset.to_le_bytes());
        bytes.extend_from_slice(&truncation.segment_base_offset.to_le_bytes());
        bytes.extend_from_slice(&truncation.position.to_le_bytes());
        let segments = u32::try_from(self.segments.len()).expect("fewer than 2^32 segments");
        bytes.extend_from_slice(&segments.to_le_bytes());
        for segment in &self.segments {
            let (timestamp, offset) = segment.max_timestamp.unwrap_or((i64::MIN, 0));
            bytes.extend_from_slice(&segment.base_offset.to_le_bytes());
            bytes.extend_from_slice(&segment.size.to_le_bytes());
            bytes.extend_from_slice(&segment.next_offset.to_le_bytes());
            bytes.extend_from_slice(&timestamp.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        let crc = crc32c(&bytes[14..]);
        bytes[10..14].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Whether `bytes` are a checkpoint of weir-log's first format.
    pub fn is_format_1(bytes: &[u8]) -> bool {
        bytes.len() >= 10
            && &bytes[..8] == MAGIC
            && u16::from_le_bytes([bytes[8], bytes[9]]) == FORMAT_1_VERSION
    }

    /// Decodes a checkpoint, checking everything.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES {
            return Err(format!("{} bytes is shorter than the header", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let stored = u32_at(bytes, 10);
        let computed = crc32c(&bytes[14..]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let log_start_offset = u64_at(bytes, 14);
        let flags = bytes[22];
        if flags & !(FLAG_CLEAN_SHUTDOWN | FLAG_TRUNCATION) != 0 {
            return Err(format!("unknown flags {flags:#04x}"));
        }
        let truncation = (flags & FLAG_TRUNCATION != 0).then(|| PendingTruncation {
            end_offset: u64_at(bytes, 23),
            segment_base_offset: u64_at(bytes, 31),
            position: u32_at(bytes, 39),
        });
        let clean_shutdown = flags & FLAG_CLEAN_SHUTDOWN != 0;
        if clean_shutdown && truncation.is_some() {
            return Err("a clean shutdown with a truncation pending".into());
        }
        let count = u32_at(bytes, 43) as usize;
        if count > CHECKPOINT_SEGMENTS_MAX || bytes.len() != HEADER_BYTES + count * ENTRY_BYTES {
            return Err(format!(
                "{count} segments do not match {} bytes",
                bytes.len()
            ));
        }
        let mut segments = Vec::with_capacity(count);
        for index in 0..count {
            let at = HEADER_BYTES + index * ENTRY_BYTES;
            let timestamp = u64_at(bytes, at + 20) as i64;
            let segment = SegmentSummary {
                base_offset: u64_at(bytes, at),
                size: u32_at(bytes, at + 8),
                next_offset: u64_at(bytes, at + 12),
                max_timestamp: (timestamp != i64::MIN).then(|| (timestamp, u64_at(bytes, at + 28))),
            };
            if segment.next_offset < segment.base_offset {
                return Err(format!("segment {index} ends before it starts"));
            }
            if let Some(previous) = segments.last() {
                let previous: &SegmentSummary = previous;
                if previous.next_offset != segment.base_offset {
                    return Err(format!("segment {index} does not follow the one before"));
                }
            }
            segments.push(segment);
        }
        Ok(Self {
            log_start_offset,
            clean_shutdown,
            truncation,
            segments,
        })
    }

    /// Reads the checkpoint of a partition directory, if there is one.
    pub fn read(storage: &dyn Storage) -> Result<Option<Self>, LogError> {
        let bytes = read_whole_file_agreed(storage, CHECKPOINT_FILE)
            .map_err(|source| LogError::io("reading", CHECKPOINT_FILE, source))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        if Self::is_format_1(&bytes) {
            return Err(LogError::UnsupportedFormat {
                file: CHECKPOINT_FILE.into(),
                found: FORMAT_1_DESCRIPTION.into(),
            });
        }
        Self::decode(&bytes)
            .map(Some)
            .map_err(|reason| LogError::CorruptCheckpoint {
                file: CHECKPOINT_FILE.into(),
                reason,
            })
    }

    /// Writes the checkpoint atomically and durably.
    pub fn write(&self, storage: &dyn Storage) -> Result<(), LogError> {
        write_file_atomically(storage, CHECKPOINT_FILE, &self.encode())
            .map_err(|source| LogError::io("writing", CHECKPOINT_FILE, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_reject_any_flipped_bit() {
        let checkpoint = Checkpoint {
            log_start_offset: 17,
            clean_shutdown: true,
            truncation: None,
            segments: vec![
                SegmentSummary {
                    base_offset: 0,
                    size: 4096,
                    next_offset: 40,
                    max_timestamp: Some((1_000, 39)),
                },
                SegmentSummary {
                    base_offset: 40,
                    size: 10,
                    next_offset: 41,
                    max_timestamp: None,
                },
            ],
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint.clone()));
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&corrupt).is_err(), "bit {bit}");
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        let pending = Checkpoint {
            clean_shutdown: false,
            truncation: Some(PendingTruncation {
                end_offset: 30,
                segment_base_offset: 0,
                position: 999,
            }),
            ..checkpoint
        };
        assert_eq!(Checkpoint::decode(&pending.encode()), Ok(pending));
    }

    #[test]
    fn a_format_1_checkpoint_is_recognised() {
        let mut bytes = Checkpoint::default().encode();
        assert!(!Checkpoint::is_format_1(&bytes));
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        assert!(Checkpoint::is_format_1(&bytes));
    }
}
