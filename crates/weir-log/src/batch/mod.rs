//! Kafka's record batch v2: the unit that is produced, stored, replicated
//! and fetched, byte for byte as Kafka defines it.
//!
//! All integers of the header are big-endian. The layout (also in
//! `docs/FORMAT.md`):
//!
//! ```text
//! offset size field                  protected by
//!      0    8 base_offset            the weir frame's CRC (stamped at append)
//!      8    4 length                 the frame's CRC (bytes after this field)
//!     12    4 partition_leader_epoch the frame's CRC (stamped at append)
//!     16    1 magic = 2              the frame's CRC
//!     17    4 crc                    the frame's CRC (CRC-32C of 21..end)
//!     21    2 attributes             crc: bits 0-2 compression, 3 timestamp
//!                                    type, 4 transactional, 5 control,
//!                                    6 delete horizon
//!     23    4 last_offset_delta      crc
//!     27    8 base_timestamp         crc (the first record's timestamp)
//!     35    8 max_timestamp          crc
//!     43    8 producer_id            crc (-1: none)
//!     51    2 producer_epoch         crc (-1: none)
//!     53    4 base_sequence          crc (-1: none)
//!     57    4 records_count          crc
//!     61    … records                crc (compressed as a whole when the
//!                                    attributes name a codec)
//! ```
//!
//! Each record (see [`records`]) is: `length` (varint), `attributes` (i8),
//! `timestamp_delta` (varlong), `offset_delta` (varint), `key_length`
//! (varint, -1 for none) and key, `value_length` (varint, -1 for none) and
//! value, `header_count` (varint) and headers, each `key_length` (varint),
//! key, `value_length` (varint, -1 for none) and value. Every varint is
//! zigzag-encoded.
//!
//! The base offset and the partition leader epoch lie outside Kafka's CRC,
//! so the log stamps them at append without recomputing it: a producer's
//! batch is stored as it was checked. What Kafka's batch lacks — a check of
//! those stamped fields, and the evidence that tells a torn tail from
//! corruption of synced data — is in the weir frame around each stored
//! batch ([`crate::frame`]).

mod compression;
mod encode;
pub mod records;

use thiserror::Error;

pub use compression::{Compression, CompressionError};
pub use encode::{encode, encode_compressed, encode_limited, Encoded};
pub use records::{Header, HeaderIter, Record, RecordView, Records};

/// The batch format version (Kafka's "magic") this code reads and writes.
pub const MAGIC: i8 = 2;
/// Bytes of Kafka's record batch v2 header, records excluded.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the length field's count starts (base offset and length).
pub const LOG_OVERHEAD: usize = 12;
/// The largest batch the log handles at all; logs use a smaller, configured
/// limit (`LogConfig::max_batch_bytes`).
pub const BATCH_BYTES_LIMIT: usize = 64 << 20;
/// The most records one batch may hold.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;
/// The most headers one record may carry.
pub const RECORD_HEADERS_MAX: u32 = 1 << 10;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
/// Where the magic byte sits in a batch.
pub const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// Kafka's CRC covers the batch from here to its end.
pub const CRC_COVERS_FROM: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

/// Why bytes are not a valid batch. The variants follow the classes of
/// Kafka's error codes: bytes that do not decode or fail a checksum
/// (`CORRUPT_MESSAGE`), batches that decode but break a rule
/// (`INVALID_RECORD`), codecs and features not supported, and sizes.
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
    #[error("batch length field {length} is outside {}..={}", HEADER_BYTES - LOG_OVERHEAD, BATCH_BYTES_LIMIT - LOG_OVERHEAD)]
    BadLength {
        /// The stated length.
        length: i64,
    },
    /// A batch format version other than 2.
    #[error("unsupported record batch version (magic) {magic}: only v2 is supported")]
    UnsupportedMagic {
        /// The version byte found.
        magic: i8,
    },
    /// Kafka's CRC-32C does not match the batch's bytes.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The weir frame around a stored batch is not one.
    #[error("not a weir batch frame: {reason}")]
    BadFrame {
        /// What is wrong.
        reason: &'static str,
    },
    /// The weir frame's CRC does not match the frame and the batch's
    /// stamped fields.
    #[error("batch frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    FrameChecksumMismatch {
        /// The CRC in the frame.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The bytes do not decode as the format says.
    #[error("malformed batch at byte {position}: {reason}")]
    Malformed {
        /// Byte position within the batch (within the uncompressed records
        /// for a compressed batch).
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The batch decodes but breaks a rule (record count, offsets,
    /// timestamps, producer fields).
    #[error("invalid batch: {reason}")]
    InvalidRecords {
        /// Which rule.
        reason: &'static str,
    },
    /// A compression codec Kafka does not define.
    #[error("unknown compression codec {codec}")]
    UnsupportedCompression {
        /// The codec bits of the attributes.
        codec: u16,
    },
    /// The compressed records do not decompress.
    #[error("{compression:?} records do not decompress: {reason}")]
    Decompression {
        /// The codec.
        compression: Compression,
        /// What the decoder said.
        reason: String,
    },
    /// The records decompress to more than the limit allows.
    #[error("records decompress to more than {limit} bytes")]
    UncompressedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A record takes more bytes than the limit.
    #[error("record {index} takes {size} bytes, above the limit of {max}")]
    RecordTooLarge {
        /// Index of the record in its batch.
        index: usize,
        /// Bytes it takes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A kind of batch weir does not take from producers.
    #[error("unsupported batch: {reason}")]
    Unsupported {
        /// Which kind.
        reason: &'static str,
    },
    /// Records to encode break a limit.
    #[error("cannot encode batch: {reason}")]
    Unencodable {
        /// What is wrong.
        reason: &'static str,
    },
}

impl BatchError {
    /// Whether the bytes are damaged (they do not decode or fail a
    /// checksum), as opposed to a well-formed batch that breaks a rule.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::Truncated { .. }
                | BatchError::BadLength { .. }
                | BatchError::ChecksumMismatch { .. }
                | BatchError::BadFrame { .. }
                | BatchError::FrameChecksumMismatch { .. }
                | BatchError::Malformed { .. }
                | BatchError::Decompression { .. }
        )
    }
}

/// The idempotent producer's identity for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    /// Whether the batch comes from an idempotent producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

impl Default for ProducerInfo {
    fn default() -> Self {
        Self::NONE
    }
}

/// The attribute bits of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes(pub u16);

impl Attributes {
    const CODEC_MASK: u16 = 0x7;
    const LOG_APPEND_TIME: u16 = 1 << 3;
    const TRANSACTIONAL: u16 = 1 << 4;
    const CONTROL: u16 = 1 << 5;
    const DELETE_HORIZON: u16 = 1 << 6;
    const KNOWN: u16 = 0x7f;

    /// The attributes of a batch with `compression` and nothing else set.
    pub fn with_compression(compression: Compression) -> Self {
        Self(compression as u16)
    }

    /// The codec the records are compressed with.
    pub fn compression(self) -> Result<Compression, BatchError> {
        Compression::from_codec(self.0 & Self::CODEC_MASK)
    }

    /// Whether the timestamps are the broker's append time (else the
    /// producer's create time).
    pub fn is_log_append_time(self) -> bool {
        self.0 & Self::LOG_APPEND_TIME != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }

    /// Whether the delete-horizon flag (set by compaction) is on.
    pub fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON != 0
    }

    /// Whether bits Kafka does not define are set.
    pub fn has_unknown_bits(self) -> bool {
        self.0 & !Self::KNOWN != 0
    }
}

/// The parsed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The offset of the first record (the producer's value until the log
    /// stamps it).
    pub base_offset: u64,
    /// Bytes of the whole batch, header included (Kafka's length field plus
    /// [`LOG_OVERHEAD`]).
    pub batch_bytes: u32,
    /// The leader epoch the batch was appended under; -1 before stamping.
    pub leader_epoch: i32,
    /// Kafka's stored CRC-32C.
    pub crc: u32,
    /// Attribute bits.
    pub attributes: Attributes,
    /// The offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// The first record's timestamp; records store deltas from it.
    pub base_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// The producer.
    pub producer: ProducerInfo,
    /// How many records the batch holds.
    pub record_count: u32,
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(word)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(word)
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`: the magic, the length
    /// and the fields that must not be negative. Checks no CRC.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let length = i64::from(be_i32(bytes, LENGTH_AT));
        let total = length + LOG_OVERHEAD as i64;
        if total < HEADER_BYTES as i64 || total > BATCH_BYTES_LIMIT as i64 {
            return Err(BatchError::BadLength { length });
        }
        let last_offset_delta =
            u32::try_from(be_i32(bytes, LAST_OFFSET_DELTA_AT)).map_err(|_| {
                BatchError::Malformed {
                    position: LAST_OFFSET_DELTA_AT,
                    reason: "negative last offset delta",
                }
            })?;
        let record_count =
            u32::try_from(be_i32(bytes, RECORD_COUNT_AT)).map_err(|_| BatchError::Malformed {
                position: RECORD_COUNT_AT,
                reason: "negative record count",
            })?;
        Ok(Self {
            // The wire's signed fields, their bits taken as they are.
            base_offset: be_i64(bytes, BASE_OFFSET_AT).cast_unsigned(),
            batch_bytes: u32::try_from(total).expect("checked against the limit above"),
            leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
            crc: be_i32(bytes, CRC_AT).cast_unsigned(),
            attributes: Attributes(be_i16(bytes, ATTRIBUTES_AT).cast_unsigned()),
            last_offset_delta,
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP_AT),
            producer: ProducerInfo {
                producer_id: be_i64(bytes, PRODUCER_ID_AT),
                producer_epoch: be_i16(bytes, PRODUCER_EPOCH_AT),
                base_sequence: be_i32(bytes, BASE_SEQUENCE_AT),
            },
            record_count,
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

    /// The sequence number of the batch's last record (sequences wrap from
    /// `i32::MAX` to 0).
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.producer.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + delta`, wrapping from `i32::MAX` to 0 as Kafka's sequences
/// do.
pub fn add_sequence(sequence: i32, delta: u32) -> i32 {
    let sum = i64::from(sequence) + i64::from(delta);
    i32::try_from(sum % (i64::from(i32::MAX) + 1)).expect("below 2^31")
}

/// A batch whose header, length and CRC have been checked.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks the batch at the start of `bytes` (header, length, CRC-32C,
    /// record count and offsets) and returns it; bytes after it are
    /// ignored. Records are decoded lazily ([`Batch::records`],
    /// [`Batch::decode`]); [`Batch::validate`] checks them all.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(bytes)?;
        let length = header.batch_bytes as usize;
        let Some(bytes) = bytes.get(..length) else {
            return Err(BatchError::Truncated {
                needed: length,
                available: bytes.len(),
            });
        };
        let computed = crc32c(&bytes[CRC_COVERS_FROM..]);
        if computed != header.crc {
            return Err(BatchError::ChecksumMismatch {
                stored: header.crc,
                computed,
            });
        }
        if header.record_count == 0 || header.record_count > BATCH_RECORDS_MAX {
            return Err(BatchError::InvalidRecords {
                reason: "record count is 0 or above BATCH_RECORDS_MAX",
            });
        }
        if header.last_offset_delta < header.record_count - 1 {
            return Err(BatchError::InvalidRecords {
                reason: "last offset delta is smaller than the record count allows",
            });
        }
        if header
            .base_offset
            .checked_add(header.offset_count())
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(BatchError::InvalidRecords {
                reason: "offsets overflow",
            });
        }
        Ok(Self { header, bytes })
    }

    /// The header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as stored and as Kafka clients read them.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The codec of the records.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        self.header.attributes.compression()
    }

    /// The records of an uncompressed batch, decoded as they are iterated.
    /// A compressed batch needs [`Batch::decode`].
    pub fn records(&self) -> Result<Records<'a>, BatchError> {
        match self.compression()? {
            Compression::None => Ok(Records::new(&self.header, &self.bytes[HEADER_BYTES..])),
            compression => Err(BatchError::Unsupported {
                reason: match compression {
                    Compression::Gzip => "gzip batch read without decompressing",
                    Compression::Snappy => "snappy batch read without decompressing",
                    Compression::Lz4 => "lz4 batch read without decompressing",
                    _ => "zstd batch read without decompressing",
                },
            }),
        }
    }

    /// The records, decompressed into `scratch` when the batch is
    /// compressed (at most `uncompressed_bytes_max` bytes).
    pub fn decode<'s>(
        &self,
        scratch: &'s mut Vec<u8>,
        uncompressed_bytes_max: usize,
    ) -> Result<Records<'s>, BatchError>
    where
        'a: 's,
    {
        let compressed = &self.bytes[HEADER_BYTES..];
        match self.compression()? {
            Compression::None => Ok(Records::new(&self.header, compressed)),
            compression => {
                scratch.clear();
                compression
                    .decompress(compressed, uncompressed_bytes_max, scratch)
                    .map_err(|error| error.into_batch_error(compression))?;
                Ok(Records::new(&self.header, scratch))
            }
        }
    }

    /// Decodes every record and checks the batch as a whole, as a producer's
    /// batch must be before it is stored: the codec and attributes, one
    /// record per offset delta from 0 to `last_offset_delta`, the record
    /// count, no bytes after the last record, the maximum timestamp, the
    /// producer fields, and the limits.
    pub fn validate(
        &self,
        limits: &BatchLimits,
        scratch: &mut Vec<u8>,
    ) -> Result<Validated, BatchError> {
        let header = &self.header;
        if header.attributes.has_unknown_bits() {
            return Err(BatchError::InvalidRecords {
                reason: "attribute bits that Kafka does not define are set",
            });
        }
        let compression = self.compression()?;
        check_producer_fields(&header.producer)?;
        if header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::InvalidRecords {
                reason: "offset deltas are not contiguous from 0 (last offset delta is not the record count minus one)",
            });
        }
        let mut records = self.decode(scratch, limits.uncompressed_bytes_max)?;
        let mut max_timestamp = i64::MIN;
        let mut index = 0u32;
        for record in records.by_ref() {
            let record = record?;
            if u64::from(index) != record.offset - header.base_offset {
                return Err(BatchError::InvalidRecords {
                    reason: "offset deltas are not contiguous from 0",
                });
            }
            if record.encoded_bytes > limits.record_bytes_max {
                return Err(BatchError::RecordTooLarge {
                    index: index as usize,
                    size: record.encoded_bytes,
                    max: limits.record_bytes_max,
                });
            }
            max_timestamp = max_timestamp.max(record.timestamp_ms);
            index += 1;
        }
        if index != header.record_count {
            return Err(BatchError::InvalidRecords {
                reason: "fewer records than the record count",
            });
        }
        let uncompressed_bytes = records.position();
        if !records.at_end() {
            return Err(BatchError::Malformed {
                position: uncompressed_bytes,
                reason: "bytes after the last record",
            });
        }
        if max_timestamp != header.max_timestamp && !header.attributes.is_log_append_time() {
            return Err(BatchError::InvalidRecords {
                reason: "max timestamp does not match the records",
            });
        }
        Ok(Validated {
            compression,
            max_timestamp,
            uncompressed_bytes,
        })
    }
}

/// The producer fields must be all -1 (no producer) or name one.
fn check_producer_fields(producer: &ProducerInfo) -> Result<(), BatchError> {
    match producer.producer_id {
        -1 => Ok(()),
        id if id >= 0 => {
            if producer.producer_epoch < 0 {
                return Err(BatchError::InvalidRecords {
                    reason: "an idempotent producer's batch has a negative producer epoch",
                });
            }
            if producer.base_sequence < 0 {
                return Err(BatchError::InvalidRecords {
                    reason: "an idempotent producer's batch has a negative base sequence",
                });
            }
            Ok(())
        }
        _ => Err(BatchError::InvalidRecords {
            reason: "producer id below -1",
        }),
    }
}

/// Limits that a batch's records are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// The largest record, in bytes as encoded.
    pub record_bytes_max: usize,
    /// The most bytes a compressed batch's records may decompress to.
    pub uncompressed_bytes_max: usize,
}

impl BatchLimits {
    /// No limit beyond the format's own.
    pub const FORMAT: Self = Self {
        record_bytes_max: usize::MAX,
        uncompressed_bytes_max: BATCH_BYTES_LIMIT,
    };
}

/// What [`Batch::validate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validated {
    /// The records' codec.
    pub compression: Compression,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// Bytes of the records once decompressed.
    pub uncompressed_bytes: usize,
}

/// Sets the two fields Kafka leaves to the broker, outside its CRC: the
/// base offset and the partition leader epoch.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: i32) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "stamping a batch shorter than a header"
    );
    assert!(
        base_offset <= i64::MAX as u64,
        "base offset {base_offset} does not fit Kafka's i64"
    );
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// CRC-32C (Castagnoli), as Kafka's batches use it, in hardware where the
/// processor has it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    u32::try_from(crc_fast::checksum(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        bytes,
    ))
    .expect("a CRC-32 has 32 bits")
}

/// CRC-32C computed over pieces fed one after the other: the same value as
/// [`crc32c`] of their concatenation.
pub struct Crc32c(crc_fast::Digest);

impl Crc32c {
    /// A CRC over nothing yet.
    pub fn new() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    /// Feeds the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of every piece fed so far.
    pub fn value(&self) -> u32 {
        u32::try_from(self.0.finalize()).expect("a CRC-32 has 32 bits")
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks that `bytes` are exactly one batch, whole: its header, its CRC,
/// its counts, and nothing after it (records are not decoded). What a
/// follower's log requires of a batch its leader sends
/// ([`crate::Partition::append_replicated_verified`]).
pub fn check_whole(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let batch = Batch::parse(bytes)?;
    if batch.bytes().len() != bytes.len() {
        return Err(BatchError::Malformed {
            position: batch.bytes().len(),
            reason: "bytes after the batch",
        });
    }
    Ok(batch)
}

/// Iterates over concatenated Kafka batches (as a fetch returns them),
/// checking each one. Stops with an error at the first invalid batch.
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

#[cfg(test)]
mod tests;
