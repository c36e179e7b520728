//! Record batches: the unit that is appended, stored, replicated and read.
//!
//! A batch is a fixed header followed by its records. All integers are
//! little-endian. The layout, byte by byte (also in `docs/FORMAT.md`):
//!
//! ```text
//! offset size field              protected by
//!      0    8 base_offset        stamp_crc (stamped by the log at append)
//!      8    4 batch_length       stamp_crc (whole batch, header included)
//!     12    4 leader_epoch       stamp_crc (stamped by the log at append)
//!     16    4 synced_position    stamp_crc (stamped by the log; see below)
//!     20    4 stamp_crc          -         (CRC-32 of bytes 0..20)
//!     24    1 magic = 1          crc must match; a version this code reads
//!     25    4 crc                -         (CRC-32 of bytes 29..end)
//!     29    2 attributes         crc       (must be 0 in version 1)
//!     31    4 last_offset_delta  crc
//!     35    8 base_timestamp     crc       (ms since the epoch)
//!     43    8 max_timestamp      crc
//!     51    8 producer_id        crc       (-1: none)
//!     59    2 producer_epoch     crc       (-1: none)
//!     61    4 base_sequence      crc       (-1: none)
//!     65    4 record_count       crc
//!     69    … records            crc
//! ```
//!
//! CRC-32 is CRC-32/ISO-HDLC (`crc32fast`).
//!
//! Each record is: `length` (unsigned varint, bytes after itself),
//! `attributes` (u8, 0), `timestamp_delta` (zigzag varint from
//! `base_timestamp`), `offset_delta` (unsigned varint), `key_length` (zigzag
//! varint, -1 for none) and key, `value_length` (zigzag, -1 for none) and
//! value, `header_count` (unsigned varint) and headers, each `key_length`
//! (unsigned varint), key, `value_length` (zigzag, -1 for none), value.
//!
//! The fields before the main CRC are the ones a node writes for itself:
//! the offsets it assigns, the leader epoch under which the batch was
//! appended, and `synced_position`, the number of bytes of the segment
//! holding the batch that were known durable when the batch was written.
//! Recovery uses that last field to tell a torn, never-synced tail from
//! corruption of synced data (see `recovery`). Stamping them recomputes only
//! the small `stamp_crc`, never the CRC of the records, so a producer's
//! batch is stored as it was checked. Both CRCs are checked before anything
//! read from disk or received is trusted, and computed just before a write.

use thiserror::Error;

use crate::le::{u16_at, u32_at, u64_at};

/// The batch format version this code writes and reads.
pub const MAGIC: u8 = 1;
/// Bytes in a batch header.
pub const HEADER_BYTES: usize = 69;
/// The largest batch the format can describe. Logs use a smaller, configured
/// limit (`LogConfig::max_batch_bytes`).
pub const BATCH_BYTES_LIMIT: usize = 64 << 20;
/// The most records one batch may hold.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;
/// The most headers one record may carry.
pub const RECORD_HEADERS_MAX: u32 = 1 << 10;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const SYNCED_POSITION_AT: usize = 16;
const STAMP_CRC_AT: usize = 20;
/// Where the magic byte sits in a batch header.
pub const MAGIC_AT: usize = 24;
const CRC_AT: usize = 25;
/// The main CRC covers the batch from here to its end.
pub const CRC_COVERS_FROM: usize = 29;
const ATTRIBUTES_AT: usize = 29;
const LAST_OFFSET_DELTA_AT: usize = 31;
const BASE_TIMESTAMP_AT: usize = 35;
const MAX_TIMESTAMP_AT: usize = 43;
const PRODUCER_ID_AT: usize = 51;
const PRODUCER_EPOCH_AT: usize = 59;
const BASE_SEQUENCE_AT: usize = 61;
const RECORD_COUNT_AT: usize = 65;

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the stated length needs.
    #[error("batch truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The length field is impossible.
    #[error("batch length {length} is outside {HEADER_BYTES}..={BATCH_BYTES_LIMIT}")]
    BadLength {
        /// The stated length.
        length: u64,
    },
    /// A format version this code does not know.
    #[error("unsupported batch format version {magic} (expected {MAGIC})")]
    UnsupportedMagic {
        /// The version byte found.
        magic: u8,
    },
    /// The CRC of the stamped fields does not match them.
    #[error("batch header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    StampChecksumMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the stamped fields.
        computed: u32,
    },
    /// The CRC stored in the batch does not match its bytes.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The header or a record breaks a rule of the format.
    #[error("malformed batch at byte {position}: {reason}")]
    Malformed {
        /// Byte position within the batch.
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record to encode is larger than the limit it was given.
    #[error("record {index} takes {size} bytes, above the limit of {max}")]
    RecordTooLarge {
        /// Index of the record in its batch.
        index: usize,
        /// Bytes it would take.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Records to encode break a limit.
    #[error("cannot encode batch: {reason}")]
    Unencodable {
        /// What is wrong.
        reason: &'static str,
    },
}

/// One header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header's key.
    pub key: &'a [u8],
    /// The header's value, or none.
    pub value: Option<&'a [u8]>,
}

/// A record to append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's timestamp, in ms since the epoch (the producer's).
    pub timestamp_ms: i64,
    /// The key, used for partitioning; none for keyless records.
    pub key: Option<&'a [u8]>,
    /// The value; none is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: &'a [Header<'a>],
}

impl<'a> Record<'a> {
    /// A record with a value, no key and no headers.
    pub fn value(timestamp_ms: i64, value: &'a [u8]) -> Self {
        Self {
            timestamp_ms,
            key: None,
            value: Some(value),
            headers: &[],
        }
    }

    /// A record with a key and a value.
    pub fn keyed(timestamp_ms: i64, key: &'a [u8], value: &'a [u8]) -> Self {
        Self {
            timestamp_ms,
            key: Some(key),
            value: Some(value),
            headers: &[],
        }
    }
}

/// The idempotent producer's identity for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The producer id; -1 when there is none.
    pub producer_id: i64,
    /// The producer epoch; -1 when there is none.
    pub producer_epoch: i16,
    /// The sequence number of the batch's first record; -1 when there is none.
    pub base_sequence: i32,
}

impl ProducerInfo {
    /// No idempotent producer.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

impl Default for ProducerInfo {
    fn default() -> Self {
        Self::NONE
    }
}

/// The parsed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The offset of the first record.
    pub base_offset: u64,
    /// Bytes in the whole batch.
    pub batch_length: u32,
    /// The leader epoch the batch was appended under.
    pub leader_epoch: u32,
    /// Bytes of the holding segment known durable when this batch was
    /// written.
    pub synced_position: u32,
    /// The stored CRC of the stamped fields.
    pub stamp_crc: u32,
    /// The stored CRC.
    pub crc: u32,
    /// Attribute bits (0 in this version).
    pub attributes: u16,
    /// The offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// The first record's timestamp; records store deltas from it.
    pub base_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// The producer.
    pub producer: ProducerInfo,
    /// How many records follow.
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses a header, checking the CRC of the stamped fields but not the
    /// main CRC or the records.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let stored = u32_at(bytes, STAMP_CRC_AT);
        let computed = crc32fast::hash(&bytes[..STAMP_CRC_AT]);
        if stored != computed {
            return Err(BatchError::StampChecksumMismatch { stored, computed });
        }
        let magic = bytes[MAGIC_AT];
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let batch_length = u32_at(bytes, LENGTH_AT);
        if (batch_length as usize) < HEADER_BYTES || batch_length as usize > BATCH_BYTES_LIMIT {
            return Err(BatchError::BadLength {
                length: u64::from(batch_length),
            });
        }
        Ok(Self {
            base_offset: u64_at(bytes, BASE_OFFSET_AT),
            batch_length,
            leader_epoch: u32_at(bytes, LEADER_EPOCH_AT),
            synced_position: u32_at(bytes, SYNCED_POSITION_AT),
            stamp_crc: u32_at(bytes, STAMP_CRC_AT),
            crc: u32_at(bytes, CRC_AT),
            attributes: u16_at(bytes, ATTRIBUTES_AT),
            last_offset_delta: u32_at(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: u64_at(bytes, BASE_TIMESTAMP_AT) as i64,
            max_timestamp: u64_at(bytes, MAX_TIMESTAMP_AT) as i64,
            producer: ProducerInfo {
                producer_id: u64_at(bytes, PRODUCER_ID_AT) as i64,
                producer_epoch: u16_at(bytes, PRODUCER_EPOCH_AT) as i16,
                base_sequence: u32_at(bytes, BASE_SEQUENCE_AT) as i32,
            },
            record_count: u32_at(bytes, RECORD_COUNT_AT),
        })
    }

    /// The offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// How many offsets the batch spans.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.last_offset_delta) + 1
    }
}

/// A batch whose header and CRC have been checked.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks the batch at the start of `bytes` (header, length, CRC) and
    /// returns it; bytes after it are ignored. Records are decoded lazily by
    /// [`Batch::records`]; [`Batch::validate`] checks them all.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(bytes)?;
        let length = header.batch_length as usize;
        let Some(bytes) = bytes.get(..length) else {
            return Err(BatchError::Truncated {
                needed: length,
                available: bytes.len(),
            });
        };
        let computed = crc32fast::hash(&bytes[CRC_COVERS_FROM..]);
        if computed != header.crc {
            return Err(BatchError::ChecksumMismatch {
                stored: header.crc,
                computed,
            });
        }
        if header.attributes != 0 {
            return Err(BatchError::Malformed {
                position: ATTRIBUTES_AT,
                reason: "unsupported attributes (compression and transactions are not supported)",
            });
        }
        if header.record_count == 0 || header.record_count > BATCH_RECORDS_MAX {
            return Err(BatchError::Malformed {
                position: RECORD_COUNT_AT,
                reason: "record count is 0 or above BATCH_RECORDS_MAX",
            });
        }
        if header.last_offset_delta < header.record_count - 1 {
            return Err(BatchError::Malformed {
                position: LAST_OFFSET_DELTA_AT,
                reason: "last offset delta is smaller than the record count allows",
            });
        }
        if header
            .base_offset
            .checked_add(header.offset_count())
            .is_none()
        {
            return Err(BatchError::Malformed {
                position: BASE_OFFSET_AT,
                reason: "offsets overflow",
            });
        }
        Ok(Self { header, bytes })
    }

    /// The header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records, decoded as they are iterated.
    pub fn records(&self) -> Records<'a> {
        Records {
            bytes: self.bytes,
            position: HEADER_BYTES,
            remaining: self.header.record_count,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            last_offset_delta: self.header.last_offset_delta,
            last_delta: None,
        }
    }

    /// Decodes every record and checks the batch as a whole: the record
    /// count, strictly increasing offsets ending at `last_offset_delta`, the
    /// maximum timestamp, and no trailing bytes.
    pub fn validate(&self) -> Result<(), BatchError> {
        let mut records = self.records();
        let mut count = 0u32;
        let mut last_offset = None;
        let mut max_timestamp = i64::MIN;
        for record in records.by_ref() {
            let record = record?;
            count += 1;
            last_offset = Some(record.offset);
            max_timestamp = max_timestamp.max(record.timestamp_ms);
        }
        if records.position != self.bytes.len() {
            return Err(BatchError::Malformed {
                position: records.position,
                reason: "bytes after the last record",
            });
        }
        debug_assert_eq!(count, self.header.record_count);
        if last_offset != Some(self.header.last_offset()) {
            return Err(BatchError::Malformed {
                position: LAST_OFFSET_DELTA_AT,
                reason: "last offset delta does not match the last record",
            });
        }
        if max_timestamp != self.header.max_timestamp {
            return Err(BatchError::Malformed {
                position: MAX_TIMESTAMP_AT,
                reason: "max timestamp does not match the records",
            });
        }
        Ok(())
    }
}

/// A decoded record of a stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset in the log.
    pub offset: u64,
    /// The record's timestamp.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
    /// Bytes the record takes in its batch, length prefix included.
    pub encoded_bytes: usize,
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// The record's headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cursor: Cursor {
                bytes: self.headers,
                position: 0,
            },
            remaining: self.header_count,
        }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }
}

/// Iterator over a record's headers (already validated when the record was
/// decoded).
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The bytes were checked when the record was decoded.
        read_header(&mut self.cursor).ok()
    }
}

/// Iterator over a batch's records; yields an error and stops at the first
/// malformed one.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    position: usize,
    remaining: u32,
    base_offset: u64,
    base_timestamp: i64,
    last_offset_delta: u32,
    last_delta: Option<u32>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let result = self.decode_one();
        match &result {
            Ok(_) => self.remaining -= 1,
            Err(_) => self.remaining = 0,
        }
        Some(result)
    }
}

impl<'a> Records<'a> {
    fn decode_one(&mut self) -> Result<RecordView<'a>, BatchError> {
        let mut cursor = Cursor {
            bytes: self.bytes,
            position: self.position,
        };
        let length = cursor.unsigned()? as usize;
        let body_start = cursor.position;
        let body_end = body_start
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(cursor.malformed("record length runs past the batch"))?;
        let mut cursor = Cursor {
            bytes: &self.bytes[..body_end],
            position: body_start,
        };
        if cursor.byte()? != 0 {
            return Err(cursor.malformed("unsupported record attributes"));
        }
        let timestamp_delta = cursor.signed()?;
        let offset_delta = u32::try_from(cursor.unsigned()?)
            .map_err(|_| cursor.malformed("offset delta too large"))?;
        if self.last_delta.is_some_and(|last| offset_delta <= last) {
            return Err(cursor.malformed("offset deltas do not increase"));
        }
        if offset_delta > self.last_offset_delta {
            return Err(cursor.malformed("offset delta beyond the batch's last offset"));
        }
        let key = cursor.nullable_bytes()?;
        let value = cursor.nullable_bytes()?;
        let header_count = u32::try_from(cursor.unsigned()?)
            .ok()
            .filter(|count| *count <= RECORD_HEADERS_MAX)
            .ok_or(cursor.malformed("too many headers"))?;
        let headers_start = cursor.position;
        for _ in 0..header_count {
            read_header(&mut cursor)?;
        }
        let headers = &self.bytes[headers_start..cursor.position];
        if cursor.position != body_end {
            return Err(cursor.malformed("record length does not match its fields"));
        }
        let timestamp_ms = self
            .base_timestamp
            .checked_add(timestamp_delta)
            .ok_or(cursor.malformed("timestamp overflows"))?;
        let offset = self.base_offset + u64::from(offset_delta);
        self.last_delta = Some(offset_delta);
        let encoded_bytes = body_end - self.position;
        self.position = body_end;
        Ok(RecordView {
            offset,
            timestamp_ms,
            key,
            value,
            encoded_bytes,
            headers,
            header_count,
        })
    }
}

fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<Header<'a>, BatchError> {
    let key_length = cursor.unsigned()? as usize;
    let key = cursor.take(key_length)?;
    let value = cursor.nullable_bytes()?;
    Ok(Header { key, value })
}

/// Iterates over concatenated batches, checking each one. Stops with an
/// error at the first invalid batch.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches { bytes, position: 0 }
}

/// Iterator returned by [`batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Batches<'a> {
    /// Where the next batch starts.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        match Batch::parse(&self.bytes[self.position..]) {
            Ok(batch) => {
                self.position += batch.bytes().len();
                Some(Ok(batch))
            }
            Err(error) => {
                self.position = self.bytes.len();
                Some(Err(error))
            }
        }
    }
}

/// Sets the stamped fields of the batch at the start of `batch` and their
/// CRC.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: u32, synced_position: u32) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "stamping a batch shorter than a header"
    );
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_le_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_le_bytes());
    batch[SYNCED_POSITION_AT..SYNCED_POSITION_AT + 4]
        .copy_from_slice(&synced_position.to_le_bytes());
    let stamp_crc = crc32fast::hash(&batch[..STAMP_CRC_AT]);
    batch[STAMP_CRC_AT..STAMP_CRC_AT + 4].copy_from_slice(&stamp_crc.to_le_bytes());
}

/// What [`encode`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Bytes of the batch.
    pub length: usize,
    /// Records in the batch.
    pub record_count: u32,
    /// The largest record timestamp.
    pub max_timestamp: i64,
}

/// Appends to `out` one batch holding `records`, with base offset 0 and
/// leader epoch 0 (the log stamps both), and its CRCs computed last.
pub fn encode(
    records: &[Record<'_>],
    producer: ProducerInfo,
    out: &mut Vec<u8>,
) -> Result<Encoded, BatchError> {
    encode_limited(records, producer, usize::MAX, out)
}

/// Like [`encode`], failing with [`BatchError::RecordTooLarge`] if a record
/// would take more than `record_bytes_max` bytes in the batch.
pub fn encode_limited(
    records: &[Record<'_>],
    producer: ProducerInfo,
    record_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<Encoded, BatchError> {
    let Some(first) = records.first() else {
        return Err(BatchError::Unencodable {
            reason: "a batch needs at least one record",
        });
    };
    let record_count = u32::try_from(records.len())
        .ok()
        .filter(|count| *count <= BATCH_RECORDS_MAX)
        .ok_or(BatchError::Unencodable {
            reason: "more records than BATCH_RECORDS_MAX",
        })?;
    let base_timestamp = first.timestamp_ms;
    // First pass: sizes and checks, so the batch is written into memory
    // reserved once.
    let mut length = HEADER_BYTES;
    let mut max_timestamp = i64::MIN;
    for (index, record) in records.iter().enumerate() {
        max_timestamp = max_timestamp.max(record.timestamp_ms);
        let timestamp_delta =
            record
                .timestamp_ms
                .checked_sub(base_timestamp)
                .ok_or(BatchError::Unencodable {
                    reason: "timestamps too far apart",
                })?;
        check_record(record)?;
        let size = record_size(record, timestamp_delta, index as u64);
        if size > record_bytes_max {
            return Err(BatchError::RecordTooLarge {
                index,
                size,
                max: record_bytes_max,
            });
        }
        length += size;
        if length > BATCH_BYTES_LIMIT {
            return Err(BatchError::Unencodable {
                reason: "batch larger than BATCH_BYTES_LIMIT",
            });
        }
    }
    let start = out.len();
    out.reserve(length);
    out.resize(start + HEADER_BYTES, 0);
    for (index, record) in records.iter().enumerate() {
        let timestamp_delta = record.timestamp_ms - base_timestamp;
        encode_record(record, timestamp_delta, index as u64, out);
    }
    debug_assert_eq!(out.len() - start, length);
    let batch = &mut out[start..];
    batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&(length as u32).to_le_bytes());
    batch[MAGIC_AT] = MAGIC;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&0u16.to_le_bytes());
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&(record_count - 1).to_le_bytes());
    batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_timestamp.to_le_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_le_bytes());
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer.producer_id.to_le_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
        .copy_from_slice(&producer.producer_epoch.to_le_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
        .copy_from_slice(&producer.base_sequence.to_le_bytes());
    batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&record_count.to_le_bytes());
    let crc = crc32fast::hash(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    stamp(batch, 0, 0, 0);
    Ok(Encoded {
        length,
        record_count,
        max_timestamp,
    })
}

/// Bytes `record` takes in a batch, including its length prefix, with the
/// given deltas.
pub fn record_size(record: &Record<'_>, timestamp_delta: i64, offset_delta: u64) -> usize {
    let body = record_body_size(record, timestamp_delta, offset_delta);
    unsigned_size(body as u64) + body
}

fn record_body_size(record: &Record<'_>, timestamp_delta: i64, offset_delta: u64) -> usize {
    let mut size = 1 + signed_size(timestamp_delta) + unsigned_size(offset_delta);
    size += nullable_size(record.key) + nullable_size(record.value);
    size += unsigned_size(record.headers.len() as u64);
    for header in record.headers {
        size += unsigned_size(header.key.len() as u64) + header.key.len();
        size += nullable_size(header.value);
    }
    size
}

/// Checks the limits of the format on one record.
fn check_record(record: &Record<'_>) -> Result<(), BatchError> {
    if record.headers.len() > RECORD_HEADERS_MAX as usize {
        return Err(BatchError::Unencodable {
            reason: "more headers than RECORD_HEADERS_MAX",
        });
    }
    for field in [record.key, record.value].into_iter().flatten() {
        if field.len() > i32::MAX as usize {
            return Err(BatchError::Unencodable {
                reason: "key or value larger than i32::MAX bytes",
            });
        }
    }
    Ok(())
}

/// Writes one record (checked by [`check_record`]) into reserved memory.
fn encode_record(record: &Record<'_>, timestamp_delta: i64, offset_delta: u64, out: &mut Vec<u8>) {
    let body = record_body_size(record, timestamp_delta, offset_delta);
    put_unsigned(out, body as u64);
    out.push(0);
    put_signed(out, timestamp_delta);
    put_unsigned(out, offset_delta);
    put_nullable(out, record.key);
    put_nullable(out, record.value);
    put_unsigned(out, record.headers.len() as u64);
    for header in record.headers {
        put_unsigned(out, header.key.len() as u64);
        out.extend_from_slice(header.key);
        put_nullable(out, header.value);
    }
}

fn nullable_size(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => signed_size(-1),
        Some(bytes) => signed_size(bytes.len() as i64) + bytes.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_signed(out, -1),
        Some(bytes) => {
            put_signed(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn unsigned_size(mut value: u64) -> usize {
    let mut size = 1;
    while value >= 0x80 {
        value >>= 7;
        size += 1;
    }
    size
}

fn signed_size(value: i64) -> usize {
    unsigned_size(zigzag(value))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, zigzag(value));
}

#[derive(Clone, Debug)]
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, reason: &'static str) -> BatchError {
        BatchError::Malformed {
            position: self.position,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, BatchError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(self.malformed("record ends early"))?;
        self.position += 1;
        Ok(byte)
    }

    fn unsigned(&mut self) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift == 63 && byte > 1 {
                    return Err(self.malformed("varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    fn signed(&mut self) -> Result<i64, BatchError> {
        Ok(unzigzag(self.unsigned()?))
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(self.malformed("field runs past the record"))?;
        let bytes = &self.bytes[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.signed()? {
            -1 => Ok(None),
            length if length >= 0 => Ok(Some(self.take(length as usize)?)),
            _ => Err(self.malformed("negative length other than -1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_one(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(records, ProducerInfo::NONE, &mut out).expect("encode");
        out
    }

    #[test]
    fn a_batch_round_trips_with_every_field() {
        let headers = [
            Header {
                key: b"trace",
                value: Some(b"abc"),
            },
            Header {
                key: b"empty",
                value: None,
            },
        ];
        let records = [
            Record {
                timestamp_ms: 1_000,
                key: Some(b"k1"),
                value: Some(b"v1"),
                headers: &headers,
            },
            Record {
                timestamp_ms: 999,
                key: None,
                value: None,
                headers: &[],
            },
            Record::keyed(1_500, b"", b""),
        ];
        let producer = ProducerInfo {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
        };
        let mut bytes = Vec::new();
        let encoded = encode(&records, producer, &mut bytes).expect("encode");
        assert_eq!(encoded.length, bytes.len());
        assert_eq!(encoded.max_timestamp, 1_500);
        stamp(&mut bytes, 100, 7, 12);

        let batch = Batch::parse(&bytes).expect("valid");
        batch.validate().expect("records valid");
        let header = batch.header();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.leader_epoch, 7);
        assert_eq!(header.synced_position, 12);
        assert_eq!(header.last_offset(), 102);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_500);
        assert_eq!(header.producer, producer);

        let decoded: Vec<RecordView<'_>> = batch.records().map(|r| r.expect("record")).collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].offset, 100);
        assert_eq!(decoded[0].key, Some(&b"k1"[..]));
        assert_eq!(decoded[0].headers().collect::<Vec<_>>(), headers);
        assert_eq!(decoded[1].timestamp_ms, 999);
        assert_eq!((decoded[1].key, decoded[1].value), (None, None));
        assert_eq!(decoded[2].value, Some(&b""[..]));
    }

    #[test]
    fn stamping_does_not_invalidate_the_crc() {
        let mut bytes = encode_one(&[Record::value(5, b"x")]);
        for (offset, epoch) in [(0, 0), (u64::MAX / 2, u32::MAX), (9, 1)] {
            stamp(&mut bytes, offset, epoch, 0);
            assert!(Batch::parse(&bytes).is_ok());
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode_one(&[Record::keyed(5, b"key", b"value"), Record::value(6, b"w")]);
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(Batch::parse(&corrupt).is_err(), "bit {bit} not detected");
        }
    }

    #[test]
    fn structural_errors_are_typed() {
        let bytes = encode_one(&[Record::value(5, b"x")]);
        assert_eq!(
            Batch::parse(&bytes[..10]).map(|_| ()),
            Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: 10
            })
        );
        assert!(matches!(
            Batch::parse(&bytes[..bytes.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut stamped = bytes.clone();
        stamped[BASE_OFFSET_AT] ^= 1;
        assert!(matches!(
            Batch::parse(&stamped),
            Err(BatchError::StampChecksumMismatch { .. })
        ));
        let mut wrong_magic = bytes.clone();
        wrong_magic[MAGIC_AT] = 9;
        assert_eq!(
            Batch::parse(&wrong_magic).map(|_| ()),
            Err(BatchError::UnsupportedMagic { magic: 9 })
        );
        let mut short_length = bytes.clone();
        short_length[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&3u32.to_le_bytes());
        let stamp_crc = crc32fast::hash(&short_length[..STAMP_CRC_AT]);
        short_length[STAMP_CRC_AT..STAMP_CRC_AT + 4].copy_from_slice(&stamp_crc.to_le_bytes());
        assert_eq!(
            Batch::parse(&short_length).map(|_| ()),
            Err(BatchError::BadLength { length: 3 })
        );
        let mut out = Vec::new();
        assert!(matches!(
            encode(&[], ProducerInfo::NONE, &mut out),
            Err(BatchError::Unencodable { .. })
        ));
    }

    #[test]
    fn a_record_claiming_more_bytes_than_the_batch_is_malformed_not_a_panic() {
        let mut bytes = encode_one(&[Record::value(5, b"abc")]);
        // The record's length varint is the first byte after the header.
        bytes[HEADER_BYTES] = 0x7f;
        let crc = crc32fast::hash(&bytes[CRC_COVERS_FROM..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        let batch = Batch::parse(&bytes).expect("header and CRC are fine");
        assert!(matches!(
            batch.validate(),
            Err(BatchError::Malformed { .. })
        ));
    }

    #[test]
    fn concatenated_batches_iterate_and_stop_at_garbage() {
        let mut bytes = encode_one(&[Record::value(1, b"a")]);
        let mut second = encode_one(&[Record::value(2, b"b"), Record::value(3, b"c")]);
        stamp(&mut second, 1, 0, 0);
        bytes.extend_from_slice(&second);
        let valid = bytes.len();
        bytes.extend_from_slice(&[0xAB; 30]);
        let mut iterator = batches(&bytes);
        assert_eq!(
            iterator
                .next()
                .expect("first")
                .expect("ok")
                .header()
                .base_offset,
            0
        );
        assert_eq!(
            iterator
                .next()
                .expect("second")
                .expect("ok")
                .header()
                .base_offset,
            1
        );
        assert_eq!(iterator.position(), valid);
        assert!(iterator.next().expect("garbage").is_err());
        assert!(iterator.next().is_none());
    }

    #[test]
    fn record_size_matches_the_encoding() {
        let record = Record::keyed(10, b"key", &[7; 300]);
        let mut out = Vec::new();
        encode(&[record], ProducerInfo::NONE, &mut out).expect("encode");
        assert_eq!(out.len(), HEADER_BYTES + record_size(&record, 0, 0));
    }

    /// (timestamp, key, value, headers) of one record.
    type RawRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn arbitrary_record() -> impl Strategy<Value = RawRecord> {
        (
            -1_000_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
        )
    }

    proptest! {
        #[test]
        fn any_records_round_trip(
            raw in proptest::collection::vec(arbitrary_record(), 1..20),
            base_offset in 0u64..1 << 40,
        ) {
            let headers: Vec<Vec<Header<'_>>> = raw
                .iter()
                .map(|(_, _, _, headers)| {
                    headers
                        .iter()
                        .map(|(key, value)| Header { key, value: value.as_deref() })
                        .collect()
                })
                .collect();
            let records: Vec<Record<'_>> = raw
                .iter()
                .zip(&headers)
                .map(|((timestamp, key, value, _), headers)| Record {
                    timestamp_ms: *timestamp,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers,
                })
                .collect();
            let mut bytes = Vec::new();
            encode(&records, ProducerInfo::NONE, &mut bytes).expect("encode");
            stamp(&mut bytes, base_offset, 1, 0);
            let batch = Batch::parse(&bytes).expect("parse");
            batch.validate().expect("validate");
            for (index, (decoded, original)) in batch.records().zip(&records).enumerate() {
                let decoded = decoded.expect("record");
                prop_assert_eq!(decoded.offset, base_offset + index as u64);
                prop_assert_eq!(decoded.timestamp_ms, original.timestamp_ms);
                prop_assert_eq!(decoded.key, original.key);
                prop_assert_eq!(decoded.value, original.value);
                prop_assert_eq!(decoded.headers().collect::<Vec<_>>(), original.headers.to_vec());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for batch in batches(&bytes).flatten() {
                let _ = batch.validate();
            }
        }
    }
}
