//! Idempotent producers' state of a partition (Kafka's KIP-98): per
//! producer id, its epoch and its last five batches, by which a retried
//! batch is recognised and answered with its original offsets instead of
//! being written again, and a gap or a fenced producer is refused.
//!
//! The rules, checked before a producer's batch is written:
//!
//! - an epoch older than the producer's → [`SequenceError::InvalidEpoch`];
//! - the same epoch, and the batch's first and last sequences equal those
//!   of one of the last five batches → a duplicate, answered with that
//!   batch's offsets, nothing written;
//! - the same epoch, and a first sequence other than the last one plus one
//!   (wrapping from `i32::MAX` to 0) → [`SequenceError::OutOfOrder`];
//! - a newer epoch whose first sequence is not 0 → `OutOfOrder`;
//! - a producer the partition does not know → accepted.
//!
//! The state is derived from batch headers, which carry the producer id,
//! epoch and base sequence: the log rebuilds it on open by replaying
//! headers after the newest snapshot (a `.producers` file written at each
//! segment roll and at close), and after a truncation. Snapshots are
//! derived data: one that fails its checksum, lies beyond the log end or
//! contradicts itself is ignored and the state is rebuilt from an older
//! one or from the log start.
//!
//! Snapshot layout (little-endian), `<offset, 20 digits>.producers`:
//!
//! ```text
//! offset size field
//!      0    8 magic "WEIRPRDS"
//!      8    2 version = 1
//!     10    4 crc (CRC-32C of bytes 14..end)
//!     14    8 offset (the state covers every batch below it)
//!     22    4 producer_count
//!     26    … producers: producer_id i64, epoch i16, batch_count u8, then
//!             batch_count × (first_sequence i32, last_sequence i32,
//!             first_offset u64, last_offset u64, max_timestamp i64)
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::batch::{crc32c, BatchHeader};

/// Batches remembered per producer, as Kafka remembers them.
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// The most producers a partition remembers; beyond it, the producer whose
/// last batch is oldest in the log is forgotten (and its next batch is
/// accepted as an unknown producer's).
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

const SNAPSHOT_MAGIC: &[u8; 8] = b"WEIRPRDS";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 26;

/// The file name of the producer snapshot taken at `offset`.
pub fn snapshot_file_name(offset: u64) -> String {
    format!("{offset:020}.producers")
}

/// The offset of a producer snapshot's file name.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".producers")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One batch a producer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The sequence of its first record.
    pub first_sequence: i32,
    /// The sequence of its last record.
    pub last_sequence: i32,
    /// The offset of its first record.
    pub first_offset: u64,
    /// The offset of its last record.
    pub last_offset: u64,
    /// Its largest timestamp.
    pub max_timestamp: i64,
}

/// What a partition knows of one producer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's epoch.
    pub epoch: i16,
    /// Its last batches, oldest first (at most [`PRODUCER_BATCHES_KEPT`]).
    pub batches: VecDeque<ProducerBatch>,
}

/// Why a producer's batch is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The producer was fenced by a newer epoch (Kafka's
    /// `INVALID_PRODUCER_EPOCH`).
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    InvalidEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the partition knows.
        current: i16,
    },
    /// The batch does not follow the producer's last one (Kafka's
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {found} where {expected} was expected"
    )]
    OutOfOrder {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the partition expected.
        expected: i32,
        /// The batch's first sequence.
        found: i32,
    },
}

/// What the state says of a producer's batch about to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// It was written already: answer with these offsets.
    Duplicate(ProducerBatch),
}

/// Every producer's state in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// What a producer's state is.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// How many producers are known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a batch of an idempotent producer against the rules.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let producer = header.producer;
        debug_assert!(producer.is_idempotent());
        let Some(entry) = self.producers.get(&producer.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let first = producer.base_sequence;
        if producer.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: producer.producer_id,
                epoch: producer.producer_epoch,
                current: entry.epoch,
            });
        }
        if producer.producer_epoch > entry.epoch {
            if first != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: producer.producer_id,
                    epoch: producer.producer_epoch,
                    expected: 0,
                    found: first,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last = header.last_sequence();
        if let Some(original) = entry
            .batches
            .iter()
            .find(|batch| batch.first_sequence == first && batch.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        match entry.batches.back() {
            Some(previous) => {
                let expected = crate::batch::add_sequence(previous.last_sequence, 1);
                if first != expected {
                    return Err(SequenceError::OutOfOrder {
                        producer_id: producer.producer_id,
                        epoch: producer.producer_epoch,
                        expected,
                        found: first,
                    });
                }
                Ok(SequenceCheck::Append)
            }
            None => Ok(SequenceCheck::Append),
        }
    }

    /// Records a producer's batch written at `base_offset` (by this node or
    /// replicated from a leader). Batches without a producer are ignored.
    pub fn record(&mut self, header: &BatchHeader, base_offset: u64) {
        let producer = header.producer;
        if !producer.is_idempotent() {
            return;
        }
        if !self.producers.contains_key(&producer.producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.forget_oldest();
        }
        let entry = self.producers.entry(producer.producer_id).or_default();
        if producer.producer_epoch != entry.epoch {
            entry.epoch = producer.producer_epoch;
            entry.batches.clear();
        }
        let batch = ProducerBatch {
            first_sequence: producer.base_sequence,
            last_sequence: header.last_sequence(),
            first_offset: base_offset,
            last_offset: base_offset + u64::from(header.last_offset_delta),
            max_timestamp: header.max_timestamp,
        };
        if let Some(previous) = entry.batches.back() {
            assert!(
                previous.last_offset < batch.first_offset,
                "producer {} batches recorded out of log order",
                producer.producer_id
            );
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(id, entry)| (entry.batches.back().map_or(0, |b| b.last_offset), **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// The largest offset any remembered batch ends at.
    pub fn last_offset(&self) -> Option<u64> {
        self.producers
            .values()
            .filter_map(|entry| entry.batches.back())
            .map(|batch| batch.last_offset)
            .max()
    }

    /// Encodes a snapshot of the state, which covers every batch below
    /// `offset`.
    pub fn encode_snapshot(&self, offset: u64) -> Vec<u8> {
        assert!(
            self.last_offset().is_none_or(|last| last < offset),
            "a producer snapshot at {offset} would hold a later batch"
        );
        let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + self.producers.len() * 64);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&offset.to_le_bytes());
        let producers = u32::try_from(self.producers.len()).expect("fewer than 2^32 producers");
        bytes.extend_from_slice(&producers.to_le_bytes());
        for (id, entry) in &self.producers {
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&entry.epoch.to_le_bytes());
            bytes.push(u8::try_from(entry.batches.len()).expect("a few batches per producer"));
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_sequence.to_le_bytes());
                bytes.extend_from_slice(&batch.last_sequence.to_le_bytes());
                bytes.extend_from_slice(&batch.first_offset.to_le_bytes());
                bytes.extend_from_slice(&batch.last_offset.to_le_bytes());
                bytes.extend_from_slice(&batch.max_timestamp.to_le_bytes());
            }
        }
        let crc = crc32c(&bytes[14..]);
        bytes[10..14].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes a snapshot, checking everything; returns its offset and the
    /// state.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Self), String> {
        let mut reader = Reader { bytes, position: 0 };
        if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
            return Err("not a producer snapshot".into());
        }
        reader.position = 8;
        let version = u16::from_le_bytes(reader.array()?);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unsupported producer snapshot version {version}"));
        }
        let stored = u32::from_le_bytes(reader.array()?);
        let computed = crc32c(&bytes[14..]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let offset = u64::from_le_bytes(reader.array()?);
        let count = u32::from_le_bytes(reader.array()?) as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(format!("{count} producers is above the limit"));
        }
        let mut state = Self::default();
        for _ in 0..count {
            let (id, entry) = reader.producer()?;
            if id < 0 || state.producers.insert(id, entry).is_some() {
                return Err(format!("producer id {id} is negative or repeated"));
            }
        }
        if reader.position != bytes.len() {
            return Err("bytes after the last producer".into());
        }
        if state.last_offset().is_some_and(|last| last >= offset) {
            return Err(format!("a batch at or after the snapshot offset {offset}"));
        }
        Ok((offset, state))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.position + N;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or_else(|| "producer snapshot cut short".to_string())?;
        self.position = end;
        let mut array = [0; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn producer(&mut self) -> Result<(i64, ProducerEntry), String> {
        let id = i64::from_le_bytes(self.array()?);
        let epoch = i16::from_le_bytes(self.array()?);
        let [count] = self.array::<1>()?;
        if count as usize > PRODUCER_BATCHES_KEPT {
            return Err(format!("producer {id} has {count} batches"));
        }
        let mut batches = VecDeque::with_capacity(count as usize);
        for _ in 0..count {
            let batch = ProducerBatch {
                first_sequence: i32::from_le_bytes(self.array()?),
                last_sequence: i32::from_le_bytes(self.array()?),
                first_offset: u64::from_le_bytes(self.array()?),
                last_offset: u64::from_le_bytes(self.array()?),
                max_timestamp: i64::from_le_bytes(self.array()?),
            };
            let ordered = batches
                .back()
                .is_none_or(|previous: &ProducerBatch| previous.last_offset < batch.first_offset);
            if batch.first_offset > batch.last_offset || !ordered {
                return Err(format!("producer {id} has batches out of order"));
            }
            batches.push_back(batch);
        }
        Ok((id, ProducerEntry { epoch, batches }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode, Batch, ProducerInfo, Record};

    fn header(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> BatchHeader {
        let records: Vec<Record<'_>> = (0..records).map(|_| Record::value(1, b"v")).collect();
        let mut bytes = Vec::new();
        let producer = ProducerInfo {
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
        };
        encode(&records, producer, &mut bytes).expect("encode");
        *Batch::parse(&bytes).expect("parse").header()
    }

    #[test]
    fn the_rules_of_kip_98() {
        let mut state = ProducerStates::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(state.check(&first), Ok(SequenceCheck::Append));
        state.record(&first, 100);
        // A retry of the same batch.
        let Ok(SequenceCheck::Duplicate(original)) = state.check(&first) else {
            panic!("a duplicate");
        };
        assert_eq!((original.first_offset, original.last_offset), (100, 102));
        // The next batch, then a gap.
        assert_eq!(state.check(&header(7, 0, 3, 1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            state.check(&header(7, 0, 5, 1)),
            Err(SequenceError::OutOfOrder {
                expected: 3,
                found: 5,
                ..
            })
        ));
        // A new epoch starts at 0; an old one is fenced.
        assert!(matches!(
            state.check(&header(7, 1, 3, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        state.record(&header(7, 1, 0, 1), 103);
        assert!(matches!(
            state.check(&header(7, 0, 3, 1)),
            Err(SequenceError::InvalidEpoch { current: 1, .. })
        ));
        // An unknown producer is accepted at any sequence.
        assert_eq!(
            state.check(&header(8, 4, 999, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut state = ProducerStates::default();
        let mut sequence = i32::MAX - 3;
        for index in 0..7u64 {
            let batch = header(1, 0, sequence, 2);
            assert_eq!(
                state.check(&batch),
                Ok(SequenceCheck::Append),
                "batch {index}"
            );
            state.record(&batch, index * 2);
            sequence = crate::batch::add_sequence(sequence, 2);
        }
        assert_eq!(
            state.get(1).expect("known").batches.len(),
            PRODUCER_BATCHES_KEPT
        );
        // The first two batches are forgotten: a retry of the first is out
        // of order, a retry of the third a duplicate.
        assert!(state.check(&header(1, 0, i32::MAX - 3, 2)).is_err());
        assert!(matches!(
            state.check(&header(1, 0, 0, 2)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn snapshots_round_trip_and_reject_any_flipped_bit() {
        let mut state = ProducerStates::default();
        state.record(&header(1, 0, 0, 2), 0);
        state.record(&header(1, 0, 2, 1), 2);
        state.record(&header(9, 3, 0, 1), 3);
        let bytes = state.encode_snapshot(4);
        assert_eq!(
            ProducerStates::decode_snapshot(&bytes),
            Ok((4, state.clone()))
        );
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(
                ProducerStates::decode_snapshot(&corrupt).is_err(),
                "bit {bit}"
            );
        }
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(4)), Some(4));
    }
}
