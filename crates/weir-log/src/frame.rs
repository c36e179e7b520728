//! The weir frame: twelve bytes before each Kafka batch in a segment file,
//! holding what Kafka's batch lacks.
//!
//! ```text
//! offset size field            (little-endian)
//!      0    4 magic            "WKB2": a weir frame around a Kafka batch v2
//!      4    4 synced_position  bytes of this segment known durable when the
//!                              batch was written
//!      8    4 frame_crc        CRC-32C of frame bytes 0..8 followed by batch
//!                              bytes 0..21 (base offset, length, leader
//!                              epoch, magic, Kafka's CRC)
//!     12    … the Kafka record batch v2 (see `crate::batch`)
//! ```
//!
//! Kafka's own CRC covers the batch from its attributes on; the frame's CRC
//! covers the rest, so every bit of a stored batch is checked, and stamping
//! the base offset and the leader epoch at append recomputes only the
//! frame's CRC over 29 bytes. `synced_position` is the evidence recovery
//! uses to tell a torn, never-synced tail from corruption of synced data:
//! a valid batch that records more bytes as synced than the position where
//! a scan stopped proves those bytes had been synced.

use crate::batch::{crc32c, Batch, BatchError, BatchHeader, CRC_COVERS_FROM, HEADER_BYTES};

/// Bytes of a frame.
pub const FRAME_BYTES: usize = 12;
const FRAME_BYTES_U32: u32 = 12;
const _: () = assert!(FRAME_BYTES_U32 as usize == FRAME_BYTES);
/// The frame's first four bytes.
pub const FRAME_MAGIC: [u8; 4] = *b"WKB2";
/// Bytes of a frame and the smallest batch header: the least a stored
/// batch takes.
pub const STORED_HEADER_BYTES: usize = FRAME_BYTES + HEADER_BYTES;

const SYNCED_POSITION_AT: usize = 4;
const FRAME_CRC_AT: usize = 8;

/// The frame's CRC over its first eight bytes and the batch's first 21.
fn frame_crc(frame: &[u8], batch: &[u8]) -> u32 {
    let mut covered = [0u8; 8 + CRC_COVERS_FROM];
    covered[..8].copy_from_slice(&frame[..8]);
    covered[8..].copy_from_slice(&batch[..CRC_COVERS_FROM]);
    crc32c(&covered)
}

/// The frame for `batch` (already stamped) in a segment whose first
/// `synced_position` bytes are durable.
pub fn frame_for(batch: &[u8], synced_position: u32) -> [u8; FRAME_BYTES] {
    assert!(
        batch.len() >= HEADER_BYTES,
        "framing a batch shorter than a header"
    );
    let mut frame = [0u8; FRAME_BYTES];
    frame[..4].copy_from_slice(&FRAME_MAGIC);
    frame[SYNCED_POSITION_AT..FRAME_CRC_AT].copy_from_slice(&synced_position.to_le_bytes());
    let crc = frame_crc(&frame, batch);
    frame[FRAME_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// The frame and header of a stored batch, with the frame checked (its
/// magic and CRC) but not the records (Kafka's CRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredHeader {
    /// Bytes of the segment known durable when the batch was written.
    pub synced_position: u32,
    /// The batch's header.
    pub header: BatchHeader,
}

impl StoredHeader {
    /// Parses and checks the frame at the start of `bytes` and the header
    /// of the batch after it.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < STORED_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: STORED_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        if bytes[..4] != FRAME_MAGIC {
            return Err(BatchError::BadFrame {
                reason: "the frame's magic is not WKB2",
            });
        }
        let stored = u32::from_le_bytes([
            bytes[FRAME_CRC_AT],
            bytes[FRAME_CRC_AT + 1],
            bytes[FRAME_CRC_AT + 2],
            bytes[FRAME_CRC_AT + 3],
        ]);
        let computed = frame_crc(bytes, &bytes[FRAME_BYTES..]);
        if stored != computed {
            return Err(BatchError::FrameChecksumMismatch { stored, computed });
        }
        let header = BatchHeader::parse(&bytes[FRAME_BYTES..])?;
        let synced_position = u32::from_le_bytes([
            bytes[SYNCED_POSITION_AT],
            bytes[SYNCED_POSITION_AT + 1],
            bytes[SYNCED_POSITION_AT + 2],
            bytes[SYNCED_POSITION_AT + 3],
        ]);
        Ok(Self {
            synced_position,
            header,
        })
    }

    /// Bytes the frame and its batch take in the segment.
    pub fn stored_bytes(&self) -> u32 {
        FRAME_BYTES_U32 + self.header.batch_bytes
    }
}

/// A stored batch whose frame and Kafka CRC have been checked.
#[derive(Clone, Copy, Debug)]
pub struct StoredBatch<'a> {
    /// Bytes of the segment known durable when the batch was written.
    pub synced_position: u32,
    /// The Kafka batch.
    pub batch: Batch<'a>,
}

impl<'a> StoredBatch<'a> {
    /// Checks the frame and batch at the start of `bytes`; bytes after them
    /// are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let stored = StoredHeader::parse(bytes)?;
        let batch = Batch::parse(&bytes[FRAME_BYTES..])?;
        Ok(Self {
            synced_position: stored.synced_position,
            batch,
        })
    }

    /// Bytes the frame and its batch take.
    pub fn stored_bytes(&self) -> usize {
        FRAME_BYTES + self.batch.bytes().len()
    }
}

/// Iterates over stored batches back to back (a segment's bytes, or what a
/// read returned), checking each one. Stops with an error at the first
/// invalid one.
pub fn stored_batches(bytes: &[u8]) -> StoredBatches<'_> {
    StoredBatches { bytes, position: 0 }
}

/// Iterator returned by [`stored_batches`].
#[derive(Clone, Debug)]
pub struct StoredBatches<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> StoredBatches<'a> {
    /// Where the next stored batch starts.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for StoredBatches<'a> {
    type Item = Result<StoredBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        match StoredBatch::parse(&self.bytes[self.position..]) {
            Ok(stored) => {
                self.position += stored.stored_bytes();
                Some(Ok(stored))
            }
            Err(error) => {
                self.position = self.bytes.len();
                Some(Err(error))
            }
        }
    }
}

/// Whether `bytes` start with a batch of weir-log's first format (its own
/// batch layout, before Kafka's record batch v2), which this code refuses
/// to read: a 69-byte little-endian header whose magic byte at 24 is 1 and
/// whose stamp CRC (CRC-32 of bytes 0..20, at 20) matches.
pub fn is_format_1_batch(bytes: &[u8]) -> bool {
    const FORMAT_1_HEADER_BYTES: usize = 69;
    if bytes.len() < FORMAT_1_HEADER_BYTES || bytes[24] != 1 {
        return false;
    }
    let stored = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    crc32fast::hash(&bytes[..20]) == stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode, stamp, ProducerInfo, Record};

    fn stored(records: &[Record<'_>], base_offset: u64, epoch: i32, synced: u32) -> Vec<u8> {
        let mut batch = Vec::new();
        encode(records, ProducerInfo::NONE, &mut batch).expect("encode");
        stamp(&mut batch, base_offset, epoch);
        let mut bytes = frame_for(&batch, synced).to_vec();
        bytes.extend_from_slice(&batch);
        bytes
    }

    #[test]
    fn a_stored_batch_round_trips_its_stamped_fields() {
        let bytes = stored(&[Record::value(5, b"x"), Record::value(6, b"y")], 40, 3, 77);
        let parsed = StoredBatch::parse(&bytes).expect("valid");
        assert_eq!(parsed.synced_position, 77);
        assert_eq!(parsed.batch.header().base_offset, 40);
        assert_eq!(parsed.batch.header().leader_epoch, 3);
        assert_eq!(parsed.batch.header().last_offset(), 41);
        assert_eq!(parsed.stored_bytes(), bytes.len());
    }

    #[test]
    fn every_single_bit_flip_of_a_stored_batch_is_detected() {
        let bytes = stored(
            &[Record::keyed(5, b"key", b"value"), Record::value(6, b"w")],
            9,
            1,
            0,
        );
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(
                StoredBatch::parse(&corrupt).is_err(),
                "bit {bit} not detected"
            );
        }
    }

    #[test]
    fn format_1_batches_are_recognised_and_nothing_else_is() {
        let mut format_1 = vec![0u8; 80];
        format_1[24] = 1;
        let crc = crc32fast::hash(&format_1[..20]);
        format_1[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(is_format_1_batch(&format_1));
        assert!(!is_format_1_batch(&stored(
            &[Record::value(1, b"a")],
            0,
            0,
            0
        )));
        assert!(!is_format_1_batch(&[0; 10]));
    }
}
