//! The native encoder: records into a Kafka record batch v2, as a Kafka
//! producer would send it (base offset 0 and leader epoch -1, which the
//! log stamps; the first record's timestamp as the base timestamp).

use super::records::{check_record, encode_record, record_size};
use super::{
    crc32c, Attributes, BatchError, Compression, ProducerInfo, Record, ATTRIBUTES_AT,
    BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, BATCH_BYTES_LIMIT, BATCH_RECORDS_MAX, CRC_AT,
    CRC_COVERS_FROM, HEADER_BYTES, LAST_OFFSET_DELTA_AT, LEADER_EPOCH_AT, LENGTH_AT, LOG_OVERHEAD,
    MAGIC, MAGIC_AT, MAX_TIMESTAMP_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT, RECORD_COUNT_AT,
};

/// What an encoder produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Bytes of the batch.
    pub length: usize,
    /// Records in the batch.
    pub record_count: u32,
    /// The largest record timestamp.
    pub max_timestamp: i64,
}

/// Appends to `out` one uncompressed batch holding `records`.
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
    let plan = plan(records, record_bytes_max)?;
    let start = out.len();
    out.reserve(HEADER_BYTES + plan.records_bytes);
    out.resize(start + HEADER_BYTES, 0);
    encode_records(records, plan.base_timestamp, out);
    debug_assert_eq!(out.len() - start, HEADER_BYTES + plan.records_bytes);
    finish(&mut out[start..], &plan, producer, Compression::None);
    Ok(plan.encoded(out.len() - start))
}

/// Appends to `out` one batch holding `records`, compressed with
/// `compression`.
pub fn encode_compressed(
    records: &[Record<'_>],
    producer: ProducerInfo,
    compression: Compression,
    record_bytes_max: usize,
    out: &mut Vec<u8>,
) -> Result<Encoded, BatchError> {
    if compression == Compression::None {
        return encode_limited(records, producer, record_bytes_max, out);
    }
    let plan = plan(records, record_bytes_max)?;
    let mut uncompressed = Vec::with_capacity(plan.records_bytes);
    encode_records(records, plan.base_timestamp, &mut uncompressed);
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    compression
        .compress(&uncompressed, out)
        .map_err(|error| error.into_batch_error(compression))?;
    if out.len() - start > BATCH_BYTES_LIMIT {
        out.truncate(start);
        return Err(BatchError::Unencodable {
            reason: "batch larger than BATCH_BYTES_LIMIT",
        });
    }
    finish(&mut out[start..], &plan, producer, compression);
    Ok(plan.encoded(out.len() - start))
}

/// Sizes and checks, done before anything is written.
struct Plan {
    record_count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    records_bytes: usize,
}

impl Plan {
    fn encoded(&self, length: usize) -> Encoded {
        Encoded {
            length,
            record_count: self.record_count,
            max_timestamp: self.max_timestamp,
        }
    }
}

fn plan(records: &[Record<'_>], record_bytes_max: usize) -> Result<Plan, BatchError> {
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
    let mut records_bytes = 0;
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
        let size = record_size(record, timestamp_delta, record_index(index));
        if size > record_bytes_max {
            return Err(BatchError::RecordTooLarge {
                index,
                size,
                max: record_bytes_max,
            });
        }
        records_bytes += size;
        if HEADER_BYTES + records_bytes > BATCH_BYTES_LIMIT {
            return Err(BatchError::Unencodable {
                reason: "batch larger than BATCH_BYTES_LIMIT",
            });
        }
    }
    Ok(Plan {
        record_count,
        base_timestamp,
        max_timestamp,
        records_bytes,
    })
}

/// A record's offset delta in its batch.
fn record_index(index: usize) -> u32 {
    u32::try_from(index).expect("a batch holds fewer than 2^32 records")
}

fn encode_records(records: &[Record<'_>], base_timestamp: i64, out: &mut Vec<u8>) {
    for (index, record) in records.iter().enumerate() {
        encode_record(
            record,
            record.timestamp_ms - base_timestamp,
            record_index(index),
            out,
        );
    }
}

/// Writes the header of the batch in `batch` (whose records follow it) and
/// its CRC, computed last.
fn finish(batch: &mut [u8], plan: &Plan, producer: ProducerInfo, compression: Compression) {
    let length = i32::try_from(batch.len() - LOG_OVERHEAD).expect("a batch below 64 MiB");
    batch[..8].copy_from_slice(&0i64.to_be_bytes());
    batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    batch[MAGIC_AT] = MAGIC as u8;
    let attributes = Attributes::with_compression(compression).0;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let last_offset_delta = (plan.record_count - 1) as i32;
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
        .copy_from_slice(&plan.base_timestamp.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
        .copy_from_slice(&plan.max_timestamp.to_be_bytes());
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer.producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
        .copy_from_slice(&producer.producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
        .copy_from_slice(&producer.base_sequence.to_be_bytes());
    batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
        .copy_from_slice(&(plan.record_count as i32).to_be_bytes());
    let crc = crc32c(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}
