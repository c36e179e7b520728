//! The leader-epoch file: for each leader epoch, the offset of its first
//! batch, so that a follower can ask where the leader's log for an epoch
//! ends (Kafka's `OffsetForLeaderEpoch`) and cut its own log there.
//!
//! Epochs strictly increase along the file, start offsets never decrease,
//! and every batch's `partition_leader_epoch` is in the file: an entry for
//! a new epoch is made durable before the first batch of that epoch is
//! written. A crash can leave an entry whose epoch has no batch yet; like
//! Kafka, recovery and truncation drop every entry that starts at or after
//! the log end. The file is written whole, atomically (temporary file,
//! sync, rename, directory sync). One that is missing or fails its
//! checksum is rebuilt from the batches' headers.
//!
//! Layout (little-endian), `leader-epochs`:
//!
//! ```text
//! offset size field
//!      0    8 magic "WEIREPCH"
//!      8    2 version = 1
//!     10    4 crc (CRC-32C of bytes 14..end)
//!     14    4 entry_count
//!     18    … entries of 12 bytes: epoch u32, start_offset u64
//! ```

use weir_io::{read_whole_file_agreed, write_file_atomically, Storage};

use crate::batch::crc32c;
use crate::error::LogError;

/// The file's name in a partition directory.
pub const LEADER_EPOCHS_FILE: &str = "leader-epochs";
/// The most epochs the file keeps; older ones are dropped first (a
/// follower asking for an epoch older than all of them is told the oldest).
pub const LEADER_EPOCHS_MAX: usize = 1 << 16;

const MAGIC: &[u8; 8] = b"WEIREPCH";
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 18;
const ENTRY_BYTES: usize = 12;

/// One epoch and the offset of its first batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: u32,
    /// The offset of its first batch.
    pub start_offset: u64,
}

/// The epochs of a log, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochs {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether `epoch` may be stamped on a batch appended now: it is the
    /// latest epoch, or newer.
    pub fn accepts(&self, epoch: u32) -> bool {
        self.latest().is_none_or(|latest| epoch >= latest.epoch)
    }

    /// Records that `epoch` starts at `start_offset`; returns whether that
    /// changed anything (the epoch is newer than the latest).
    pub fn assign(&mut self, epoch: u32, start_offset: u64) -> bool {
        if let Some(latest) = self.latest() {
            assert!(
                epoch >= latest.epoch,
                "epoch {epoch} assigned after epoch {}",
                latest.epoch
            );
            assert!(
                start_offset >= latest.start_offset,
                "epoch {epoch} starts at {start_offset}, before epoch {} at {}",
                latest.epoch,
                latest.start_offset
            );
            if epoch == latest.epoch {
                return false;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        if self.entries.len() > LEADER_EPOCHS_MAX {
            self.entries.remove(0);
        }
        true
    }

    /// The largest epoch at or below `epoch` and the offset where it ends
    /// in this log (the start of the next epoch, or `log_end`): where a
    /// follower whose last epoch is `epoch` must cut its log. `None` when
    /// every epoch is newer.
    pub fn end_offset(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let index = self.entries.partition_point(|entry| entry.epoch <= epoch);
        let found = self.entries.get(index.checked_sub(1)?)?;
        let end = self
            .entries
            .get(index)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The epoch the batch at `offset` was written under.
    pub fn epoch_at(&self, offset: u64) -> Option<u32> {
        let index = self
            .entries
            .partition_point(|entry| entry.start_offset <= offset);
        Some(self.entries.get(index.checked_sub(1)?)?.epoch)
    }

    /// Drops the entries that start at or after `end_offset` (the log was
    /// cut there); returns whether any was dropped.
    pub fn truncate_from_end(&mut self, end_offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Drops the entries wholly before `start_offset` (retention moved the
    /// log start), keeping the one that covers it; returns whether any was
    /// dropped.
    pub fn truncate_from_start(&mut self, start_offset: u64) -> bool {
        let covering = self
            .entries
            .partition_point(|entry| entry.start_offset <= start_offset);
        let drop = covering.saturating_sub(1);
        self.entries.drain(..drop);
        drop > 0
    }

    /// Checks the file's rules: epochs strictly increase, start offsets
    /// never decrease.
    pub fn check(&self) -> Result<(), String> {
        for pair in self.entries.windows(2) {
            if pair[1].epoch <= pair[0].epoch {
                return Err(format!(
                    "epoch {} follows epoch {}",
                    pair[1].epoch, pair[0].epoch
                ));
            }
            if pair[1].start_offset < pair[0].start_offset {
                return Err(format!(
                    "epoch {} starts at {}, before epoch {} at {}",
                    pair[1].epoch, pair[1].start_offset, pair[0].epoch, pair[0].start_offset
                ));
            }
        }
        Ok(())
    }

    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let entries = u32::try_from(self.entries.len()).expect("fewer than 2^32 epochs");
        bytes.extend_from_slice(&entries.to_le_bytes());
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.epoch.to_le_bytes());
            bytes.extend_from_slice(&entry.start_offset.to_le_bytes());
        }
        let crc = crc32c(&bytes[14..]);
        bytes[10..14].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes the file, checking everything.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
            return Err("not a leader-epoch file".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let stored = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
        let computed = crc32c(&bytes[14..]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let count = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]) as usize;
        if count > LEADER_EPOCHS_MAX || bytes.len() != HEADER_BYTES + count * ENTRY_BYTES {
            return Err(format!(
                "{count} entries do not match {} bytes",
                bytes.len()
            ));
        }
        let entries = bytes[HEADER_BYTES..]
            .chunks_exact(ENTRY_BYTES)
            .map(|chunk| {
                let mut epoch = [0; 4];
                let mut start = [0; 8];
                epoch.copy_from_slice(&chunk[..4]);
                start.copy_from_slice(&chunk[4..]);
                EpochEntry {
                    epoch: u32::from_le_bytes(epoch),
                    start_offset: u64::from_le_bytes(start),
                }
            })
            .collect();
        let epochs = Self { entries };
        epochs.check()?;
        Ok(epochs)
    }

    /// Reads the file of a partition directory: `Ok(None)` if it is
    /// missing, `Err` with the reason if it is unreadable.
    pub fn read(storage: &dyn Storage) -> Result<Option<Result<Self, String>>, LogError> {
        let bytes = read_whole_file_agreed(storage, LEADER_EPOCHS_FILE)
            .map_err(|source| LogError::io("reading", LEADER_EPOCHS_FILE, source))?;
        Ok(bytes.map(|bytes| Self::decode(&bytes)))
    }

    /// Writes the file atomically and durably.
    pub fn write(&self, storage: &dyn Storage) -> Result<(), LogError> {
        write_file_atomically(storage, LEADER_EPOCHS_FILE, &self.encode())
            .map_err(|source| LogError::io("writing", LEADER_EPOCHS_FILE, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(u32, u64)]) -> LeaderEpochs {
        let mut epochs = LeaderEpochs::default();
        for (epoch, start) in entries {
            epochs.assign(*epoch, *start);
        }
        epochs
    }

    #[test]
    fn end_offsets_answer_as_kafka_does() {
        let epochs = epochs(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(epochs.end_offset(0, 40), None);
        assert_eq!(epochs.end_offset(1, 40), Some((1, 10)));
        assert_eq!(epochs.end_offset(2, 40), Some((1, 10)));
        assert_eq!(epochs.end_offset(3, 40), Some((3, 25)));
        assert_eq!(epochs.end_offset(4, 40), Some((4, 40)));
        assert_eq!(epochs.end_offset(9, 40), Some((4, 40)));
        assert_eq!(epochs.epoch_at(24), Some(3));
        assert_eq!(epochs.epoch_at(25), Some(4));
    }

    #[test]
    fn truncation_drops_entries_from_either_end() {
        let mut cut = epochs(&[(1, 0), (3, 10), (4, 25)]);
        assert!(cut.truncate_from_end(25));
        assert_eq!(cut, epochs(&[(1, 0), (3, 10)]));
        assert!(!cut.truncate_from_end(11));
        let mut start = epochs(&[(1, 0), (3, 10), (4, 25)]);
        assert!(start.truncate_from_start(12));
        assert_eq!(start, epochs(&[(3, 10), (4, 25)]));
        assert_eq!(start.end_offset(1, 40), None);
    }

    #[test]
    fn the_file_round_trips_and_rejects_any_flipped_bit() {
        let epochs = epochs(&[(1, 0), (3, 10)]);
        let bytes = epochs.encode();
        assert_eq!(LeaderEpochs::decode(&bytes), Ok(epochs));
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(LeaderEpochs::decode(&corrupt).is_err(), "bit {bit}");
        }
    }

    #[test]
    #[should_panic(expected = "assigned after")]
    fn an_older_epoch_is_a_programming_error() {
        epochs(&[(3, 0), (2, 5)]);
    }
}
