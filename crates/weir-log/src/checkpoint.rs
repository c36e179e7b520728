//! The partition checkpoint: the log start offset and the segments known to
//! be durable and intact, so that recovery need not rescan them.
//!
//! Layout (little-endian), written whole to `checkpoint.tmp`, synced, and
//! renamed over `checkpoint`:
//!
//! ```text
//! offset size field
//!      0    8 magic "WEIRCKPT"
//!      8    2 version = 1
//!     10    4 crc (CRC-32/ISO-HDLC of bytes 14..end)
//!     14    8 log_start_offset
//!     22    1 clean_shutdown (0 or 1)
//!     23    4 segment_count
//!     27    … segment_count entries of 36 bytes:
//!             base_offset u64, size u32, next_offset u64,
//!             max_timestamp i64 (i64::MIN: none), max_timestamp_offset u64
//! ```
//!
//! The segments listed are a prefix of the log, in order, each synced with
//! its index files before the checkpoint listing it was written. With
//! `clean_shutdown`, the last one listed is the active segment as it was
//! closed; an open that finds it rewrites the checkpoint without the active
//! segment before the first write, so a crash after that open rescans it.

use weir_io::{read_whole_file, write_file_atomically, Storage};

use crate::error::LogError;
use crate::le::{u32_at, u64_at};

/// The checkpoint's file name in a partition directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 8] = b"WEIRCKPT";
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 27;
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

/// The checkpoint's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first offset of the log.
    pub log_start_offset: u64,
    /// Whether the log was closed cleanly (the last segment listed was the
    /// active one).
    pub clean_shutdown: bool,
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
        bytes.push(u8::from(self.clean_shutdown));
        bytes.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for segment in &self.segments {
            let (timestamp, offset) = segment.max_timestamp.unwrap_or((i64::MIN, 0));
            bytes.extend_from_slice(&segment.base_offset.to_le_bytes());
            bytes.extend_from_slice(&segment.size.to_le_bytes());
            bytes.extend_from_slice(&segment.next_offset.to_le_bytes());
            bytes.extend_from_slice(&timestamp.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[14..]);
        bytes[10..14].copy_from_slice(&crc.to_le_bytes());
        bytes
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
        let computed = crc32fast::hash(&bytes[14..]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let log_start_offset = u64_at(bytes, 14);
        let clean_shutdown = match bytes[22] {
            0 => false,
            1 => true,
            other => return Err(format!("clean-shutdown flag is {other}")),
        };
        let count = u32_at(bytes, 23) as usize;
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
            segments,
        })
    }

    /// Reads the checkpoint of a partition directory, if there is one.
    pub fn read(storage: &dyn Storage) -> Result<Option<Self>, LogError> {
        let bytes = read_whole_file(storage, CHECKPOINT_FILE)
            .map_err(|source| LogError::io("reading", CHECKPOINT_FILE, source))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
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
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint));
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&corrupt).is_err(), "bit {bit}");
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
