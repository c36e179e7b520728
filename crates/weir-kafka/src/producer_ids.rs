//! Producer ids for idempotent producers: unique for the life of the data
//! directory, across restarts and crashes, and in a cluster across its
//! nodes.
//!
//! Ids are handed out from blocks. Before the first id of a block is
//! handed out, the end of the block is written durably to
//! `producer-ids`, then to its copy `producer-ids.copy` (each atomically:
//! temporary file, sync, rename, directory sync). That end is the floor:
//! every later block starts there or above, so an id is never handed out
//! twice, and at most a block of ids is skipped per restart. One node takes its blocks at the floor
//! ([`ProducerIds::allocate`]); a cluster node asks the controller for a
//! block from the floor up, which the metadata hands to it alone
//! ([`ProducerIds::take`], [`ProducerIds::adopt`]).

use std::sync::Arc;

use weir_io::sync::{lock, Mutex};
use weir_io::{read_whole_file_agreed, write_file_atomically, Storage};
use weir_log::batch::crc32c;

/// The file that records the end of the block in use.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";
/// Its second copy, in a file of its own: a copy that rots (or is lost)
/// is written again from the other, where one file alone refused the
/// node's start for good.
pub const PRODUCER_IDS_COPY: &str = "producer-ids.copy";
/// Ids per block (one durable write per this many allocations; in a
/// cluster one metadata record as well).
pub const PRODUCER_ID_BLOCK: i64 = 1000;
const MAGIC: &[u8; 4] = b"WKPI";
const FILE_BYTES: usize = 16;

/// Why the producer-id file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// The storage failed.
    #[error("producer ids: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not one weir wrote, or is damaged.
    #[error("producer ids: {PRODUCER_IDS_FILE} is corrupt ({0}); refusing to start rather than reuse ids")]
    Corrupt(&'static str),
    /// Every id has been handed out.
    #[error("producer ids exhausted")]
    Exhausted,
}

#[derive(Debug)]
struct Block {
    next: i64,
    end: i64,
}

/// The allocator.
#[derive(Debug)]
pub struct ProducerIds {
    storage: Arc<dyn Storage>,
    block: Mutex<Block>,
}

impl ProducerIds {
    /// Opens the allocator in `storage`, continuing after the last block
    /// recorded there (by either copy: both hold the end of every block
    /// an id was handed out from, so the larger valid one is a floor).
    /// Refuses when no copy is valid and one is damaged.
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, ProducerIdError> {
        let first = read_copy(storage.as_ref(), PRODUCER_IDS_FILE)?;
        let copy = read_copy(storage.as_ref(), PRODUCER_IDS_COPY)?;
        let start = match (first, copy) {
            (None, None) => 0,
            (Some(Ok(first)), Some(Ok(copy))) if first == copy => first,
            (Some(Ok(first)), Some(Ok(copy))) => first.max(copy),
            (Some(Ok(end)), _) | (_, Some(Ok(end))) => {
                tracing::warn!(
                    end,
                    "a copy of {PRODUCER_IDS_FILE} was missing or corrupt: written again"
                );
                write_both(storage.as_ref(), end)?;
                end
            }
            (Some(Err(error)), _) | (None, Some(Err(error))) => return Err(error),
        };
        assert!(start >= 0, "decoded a negative producer id block end");
        Ok(Self {
            storage,
            block: Mutex::new(Block {
                next: start,
                end: start,
            }),
        })
    }

    /// One node's allocation: a producer id no one has had, from the block
    /// in use or from the next [`PRODUCER_ID_BLOCK`] at the floor, made
    /// durable before it is returned.
    pub fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut block = lock(&self.block);
        if block.next == block.end {
            let first = block.end;
            let end = first
                .checked_add(PRODUCER_ID_BLOCK)
                .ok_or(ProducerIdError::Exhausted)?;
            self.record(&mut block, first, end)?;
        }
        Ok(take_from(&mut block).expect("a block with ids left"))
    }

    /// An id from the block in use, if any is left.
    pub fn take(&self) -> Option<i64> {
        take_from(&mut lock(&self.block))
    }

    /// The end of every block recorded here: the next block starts there
    /// or above.
    pub fn floor(&self) -> i64 {
        lock(&self.block).end
    }

    /// Makes `count` ids from `first` (a block no one else holds, as the
    /// cluster's metadata hands it to this node) the block in use, once
    /// its end is recorded durably. `Ok(false)`, and nothing changes,
    /// when the block starts below the floor: another caller took a later
    /// block meanwhile, or this one was taken before.
    pub fn adopt(&self, first: i64, count: i64) -> Result<bool, ProducerIdError> {
        assert!(
            first >= 0 && count > 0,
            "a block of {count} ids from {first}"
        );
        let end = first.checked_add(count).ok_or(ProducerIdError::Exhausted)?;
        let mut block = lock(&self.block);
        if first < block.end {
            return Ok(false);
        }
        self.record(&mut block, first, end)?;
        Ok(true)
    }

    /// Records `end` durably, then hands out ids from `first` up to it.
    fn record(&self, block: &mut Block, first: i64, end: i64) -> Result<(), ProducerIdError> {
        assert!(
            block.end <= first && first < end,
            "a block [{first}, {end}) below the floor {}",
            block.end
        );
        write_both(self.storage.as_ref(), end)?;
        *block = Block { next: first, end };
        Ok(())
    }
}

/// One copy of the block end, read by the agreement rule (a read that
/// flipped a bit is not a damaged file); `None` if it does not exist.
fn read_copy(
    storage: &dyn Storage,
    name: &str,
) -> Result<Option<Result<i64, ProducerIdError>>, ProducerIdError> {
    Ok(read_whole_file_agreed(storage, name)?.map(|bytes| decode(&bytes)))
}

/// Records `end` durably in both copies, the first before its copy.
fn write_both(storage: &dyn Storage, end: i64) -> Result<(), ProducerIdError> {
    write_file_atomically(storage, PRODUCER_IDS_FILE, &encode(end))?;
    write_file_atomically(storage, PRODUCER_IDS_COPY, &encode(end))?;
    Ok(())
}

fn take_from(block: &mut Block) -> Option<i64> {
    if block.next == block.end {
        return None;
    }
    let id = block.next;
    block.next += 1;
    assert!(
        block.next <= block.end,
        "handed out an id past the durable block end"
    );
    Some(id)
}

fn encode(end: i64) -> [u8; FILE_BYTES] {
    let mut bytes = [0u8; FILE_BYTES];
    bytes[..4].copy_from_slice(MAGIC);
    bytes[4..12].copy_from_slice(&end.to_le_bytes());
    let crc = crc32c(&bytes[..12]);
    bytes[12..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<i64, ProducerIdError> {
    if bytes.len() != FILE_BYTES {
        return Err(ProducerIdError::Corrupt("wrong length"));
    }
    if &bytes[..4] != MAGIC {
        return Err(ProducerIdError::Corrupt("wrong magic"));
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if stored != crc32c(&bytes[..12]) {
        return Err(ProducerIdError::Corrupt("checksum mismatch"));
    }
    let end = i64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    if end < 0 {
        return Err(ProducerIdError::Corrupt("negative block end"));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_io::{SimDisk, SimStorage};

    #[test]
    fn ids_are_unique_across_reopens_and_crashes() {
        let disk = SimDisk::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let ids = ProducerIds::open(Arc::new(disk.root())).unwrap();
            for _ in 0..(PRODUCER_ID_BLOCK + 5) {
                assert!(seen.insert(ids.allocate().unwrap()), "an id came twice");
            }
            // A power loss: what was not synced is lost.
            disk.crash();
        }
    }

    #[test]
    fn reads_that_flip_bits_are_not_taken_for_a_damaged_file() {
        let mut flipped = 0;
        for seed in 0..40 {
            let disk = SimDisk::new(seed);
            let first = ProducerIds::open(Arc::new(disk.root())).unwrap();
            let id = first.allocate().unwrap();
            disk.set_faults(weir_io::Faults {
                read_corruption: 0.3,
                ..weir_io::Faults::none()
            });
            let before = disk.stats().read_corruptions;
            let again = ProducerIds::open(Arc::new(disk.root()))
                .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
            flipped += usize::from(disk.stats().read_corruptions > before);
            assert!(
                again.allocate().unwrap() > id,
                "seed {seed}: an id came twice"
            );
        }
        assert!(flipped > 3, "only {flipped} opens saw a flip");
    }

    #[test]
    fn adopted_blocks_start_at_the_floor_and_survive_a_crash() {
        let disk = SimDisk::new(3);
        let ids = ProducerIds::open(Arc::new(disk.root())).unwrap();
        assert_eq!((ids.take(), ids.floor()), (None, 0));
        assert!(ids.adopt(5000, 2).unwrap());
        assert_eq!(ids.floor(), 5002);
        // A block below the floor (one taken twice) is not used.
        assert!(!ids.adopt(5000, 2).unwrap());
        assert!(!ids.adopt(4000, 1000).unwrap());
        assert_eq!(
            (ids.take(), ids.take(), ids.take()),
            (Some(5000), Some(5001), None)
        );
        disk.crash();
        let again = ProducerIds::open(Arc::new(disk.root())).unwrap();
        assert_eq!((again.take(), again.floor()), (None, 5002));
        assert!(!again.adopt(5001, 1000).unwrap());
        assert_eq!(again.allocate().unwrap(), 5002);
    }

    #[test]
    fn a_damaged_file_without_a_valid_copy_is_refused() {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(7));
        let mut bytes = encode(5000);
        bytes[6] ^= 1;
        write_file_atomically(storage.as_ref(), PRODUCER_IDS_FILE, &bytes).unwrap();
        assert!(matches!(
            ProducerIds::open(Arc::clone(&storage)),
            Err(ProducerIdError::Corrupt("checksum mismatch"))
        ));
        write_file_atomically(storage.as_ref(), PRODUCER_IDS_COPY, &bytes).unwrap();
        assert!(matches!(
            ProducerIds::open(storage),
            Err(ProducerIdError::Corrupt("checksum mismatch"))
        ));
        assert_eq!(decode(&encode(5000)).unwrap(), 5000);
    }

    /// Rot in either copy, or the loss of one, costs nothing: the other
    /// gives the floor, both are written again, and no id comes twice.
    #[test]
    fn a_copy_that_rots_is_written_again_from_the_other() {
        for (damaged, byte) in [
            (PRODUCER_IDS_FILE, 6),
            (PRODUCER_IDS_COPY, 0),
            (PRODUCER_IDS_FILE, 99),
        ] {
            let disk = SimDisk::new(9);
            let ids = ProducerIds::open(Arc::new(disk.root())).unwrap();
            let handed = ids.allocate().unwrap();
            if byte < FILE_BYTES {
                disk.corrupt(damaged, byte as u64, 0x04).unwrap();
            } else {
                let root = disk.root();
                root.remove_file(damaged).unwrap();
                root.sync_dir().unwrap();
            }
            disk.crash();
            let again = ProducerIds::open(Arc::new(disk.root()))
                .unwrap_or_else(|error| panic!("{damaged} damaged: {error}"));
            assert_eq!(again.floor(), PRODUCER_ID_BLOCK, "{damaged} damaged");
            assert!(again.allocate().unwrap() > handed);
            for name in [PRODUCER_IDS_FILE, PRODUCER_IDS_COPY] {
                let bytes = weir_io::read_whole_file(&disk.root(), name).unwrap();
                assert_eq!(
                    bytes.map(|bytes| decode(&bytes).unwrap()),
                    Some(2 * PRODUCER_ID_BLOCK)
                );
            }
        }
    }

    /// A crash between the two writes of a block's end leaves the copies
    /// apart: the larger is taken (no id of the new block went out, so
    /// either would do).
    #[test]
    fn copies_apart_after_a_crash_give_the_larger_floor() {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(7));
        write_file_atomically(storage.as_ref(), PRODUCER_IDS_FILE, &encode(3000)).unwrap();
        write_file_atomically(storage.as_ref(), PRODUCER_IDS_COPY, &encode(2000)).unwrap();
        let ids = ProducerIds::open(storage).unwrap();
        assert_eq!(ids.floor(), 3000);
        assert_eq!(ids.allocate().unwrap(), 3000);
    }
}
