//! Entry points for fuzzing, shared by the cargo-fuzz targets in `fuzz/`
//! and by `cargo test`, which replays the committed corpus through them.

use weir_log::batch::{self, BatchLimits, HEADER_BYTES};
use weir_log::{Batch, BatchError, Compression, Header, ProducerInfo, Record};

use crate::interop::{decode_with_kafka_protocol, decode_with_weir, OwnedRecord};

/// The decompressed size both decoders are given room for.
const UNCOMPRESSED_BYTES_MAX: usize = 1 << 20;

/// Differential check of batch validation: `data` is a flag byte and a
/// record batch (usually a valid one, mutated). With flag bit 0 the length
/// field is set to the bytes given, with bit 1 Kafka's CRC is recomputed,
/// so that mutations reach the records. weir-log's validation and
/// kafka-protocol's decoder must then agree:
///
/// - a batch weir accepts, kafka-protocol decodes to the same records
///   (header keys that are not UTF-8, which kafka-protocol refuses, and
///   repeated header keys, which it folds into one, are compared as far as
///   it can represent them);
/// - a batch weir refuses and kafka-protocol accepts breaks one of the
///   rules only weir checks (listed in [`only_weir_checks`]).
///
/// kafka-protocol is not given inputs on which it would allocate without
/// bound or overflow an addition (it trusts counts and adds timestamps
/// unchecked); weir's verdict on those is still computed.
pub fn batch_validation(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 && bytes.len() >= HEADER_BYTES {
        let length = (bytes.len() - batch::LOG_OVERHEAD) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
    }
    if flags & 2 != 0 && bytes.len() >= HEADER_BYTES {
        let crc = batch::crc32c(&bytes[batch::CRC_COVERS_FROM..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let weir = weir_verdict(&bytes);
    if !safe_for_kafka_protocol(&bytes) {
        return;
    }
    let kafka = decode_with_kafka_protocol(&bytes);
    match (weir, kafka) {
        (Ok(ours), Ok(theirs)) => compare(&ours, &theirs),
        (Ok(ours), Err(error)) => assert!(
            has_non_utf8_header_key(&ours),
            "weir accepts a batch that kafka-protocol refuses ({error}): {ours:?}"
        ),
        (Err(error), Ok(_)) => assert!(
            only_weir_checks(&error),
            "weir refuses a batch that kafka-protocol accepts, for a reason both check: {error}"
        ),
        (Err(_), Err(_)) => {}
    }
}

fn weir_verdict(bytes: &[u8]) -> Result<Vec<OwnedRecord>, BatchError> {
    let batch = Batch::parse(bytes)?;
    let limits = BatchLimits {
        record_bytes_max: usize::MAX,
        uncompressed_bytes_max: UNCOMPRESSED_BYTES_MAX,
    };
    batch.validate(&limits, &mut Vec::new())?;
    decode_with_weir(&batch, UNCOMPRESSED_BYTES_MAX)
}

/// The checks weir makes that kafka-protocol's decoder does not: the
/// batch-level rules (record count against the last offset delta,
/// contiguous offsets, the maximum timestamp, producer fields, attribute
/// bits), exact record lengths and no trailing bytes, offset deltas that
/// are not negative and increase, bounds on varints and header counts, no
/// bytes after an lz4 frame, and size limits.
pub fn only_weir_checks(error: &BatchError) -> bool {
    match error {
        BatchError::InvalidRecords { .. }
        | BatchError::UncompressedTooLarge { .. }
        | BatchError::RecordTooLarge { .. } => true,
        BatchError::Decompression { reason, .. } => reason == "bytes after the lz4 frame",
        BatchError::Malformed { reason, .. } => [
            "bytes after the last record",
            "record length does not match its fields",
            "offset deltas do not increase",
            "negative offset delta",
            "offset delta beyond the batch's last offset delta",
            "varint overflows 32 bits",
            "varint longer than its type allows",
            "varlong overflows 64 bits",
            "negative header count or above RECORD_HEADERS_MAX",
        ]
        .contains(reason),
        _ => false,
    }
}

fn compare(ours: &[OwnedRecord], theirs: &[OwnedRecord]) {
    assert_eq!(ours.len(), theirs.len(), "record counts differ");
    for (mine, other) in ours.iter().zip(theirs) {
        assert_eq!(
            (mine.offset, mine.timestamp, &mine.key, &mine.value),
            (other.offset, other.timestamp, &other.key, &other.value),
            "records differ"
        );
        // kafka-protocol keeps headers in a map: one entry per key, at the
        // key's first position, holding its last value.
        let mut folded: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (key, value) in &mine.headers {
            match folded.iter_mut().find(|(seen, _)| seen == key) {
                Some(entry) => entry.1 = value.clone(),
                None => folded.push((key.clone(), value.clone())),
            }
        }
        assert_eq!(folded, other.headers, "headers differ");
    }
}

fn has_non_utf8_header_key(records: &[OwnedRecord]) -> bool {
    records
        .iter()
        .flat_map(|record| &record.headers)
        .any(|(key, _)| std::str::from_utf8(key).is_err())
}

/// Whether kafka-protocol can decode `bytes` without allocating for an
/// untrusted count or overflowing an addition: a batch header it would
/// accept, a record count and header counts no larger than the bytes,
/// records that decompress under the limit, and timestamps and offsets
/// that add up.
fn safe_for_kafka_protocol(bytes: &[u8]) -> bool {
    let Ok(header) = batch::BatchHeader::parse(bytes) else {
        return bytes.len() < HEADER_BYTES || bytes[16] != 2;
    };
    if header.batch_bytes as usize > bytes.len() {
        return true;
    }
    let records_bytes = &bytes[HEADER_BYTES..header.batch_bytes as usize];
    let mut decompressed = Vec::new();
    let records_bytes = match header.attributes.compression() {
        Err(_) | Ok(Compression::None) => records_bytes,
        Ok(compression) => {
            if compression
                .decompress(records_bytes, UNCOMPRESSED_BYTES_MAX, &mut decompressed)
                .is_err()
            {
                return false;
            }
            &decompressed
        }
    };
    if header.record_count as usize > records_bytes.len() {
        return false;
    }
    let mut walk = Walk {
        bytes: records_bytes,
        position: 0,
    };
    for _ in 0..header.record_count {
        match walk.record(header.base_offset as i64, header.base_timestamp) {
            Step::Next => {}
            Step::Stops => return true,
            Step::Unsafe => return false,
        }
    }
    true
}

enum Step {
    Next,
    Stops,
    Unsafe,
}

/// Walks records as kafka-protocol's decoder does, to find where it would
/// stop with an error and whether it would overflow before that.
struct Walk<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Walk<'_> {
    /// A varint as kafka-protocol reads one: at most `max_bytes` bytes,
    /// the last taken as final whatever its continuation bit, higher bits
    /// dropped.
    fn varint(&mut self, max_bytes: usize) -> Option<i64> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = *self.bytes.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f).wrapping_shl(7 * index as u32);
            if byte < 0x80 {
                break;
            }
        }
        if max_bytes == 5 {
            let zigzag = value as u32;
            return Some(i64::from(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32)));
        }
        Some(((value >> 1) as i64) ^ -((value & 1) as i64))
    }

    fn skip(&mut self, length: i64) -> Option<()> {
        let end = self.position.checked_add(usize::try_from(length).ok()?)?;
        (end <= self.bytes.len()).then(|| self.position = end)
    }

    fn record(&mut self, base_offset: i64, base_timestamp: i64) -> Step {
        let Some(size) = self.varint(5).filter(|size| *size >= 0) else {
            return Step::Stops;
        };
        let start = self.position;
        let Some(end) = start
            .checked_add(size as usize)
            .filter(|end| *end <= self.bytes.len())
        else {
            return Step::Stops;
        };
        let mut inner = Walk {
            bytes: &self.bytes[..end],
            position: start,
        };
        self.position = end;
        let step = inner.fields(base_offset, base_timestamp);
        step.unwrap_or(Step::Stops)
    }

    fn fields(&mut self, base_offset: i64, base_timestamp: i64) -> Option<Step> {
        self.skip(1)?;
        let timestamp_delta = self.varint(10)?;
        if base_timestamp.checked_add(timestamp_delta).is_none() {
            return Some(Step::Unsafe);
        }
        let offset_delta = self.varint(5)?;
        if base_offset.checked_add(offset_delta).is_none() {
            return Some(Step::Unsafe);
        }
        for _ in 0..2 {
            let length = self.varint(5)?;
            if length < -1 {
                return None;
            }
            if length >= 0 {
                self.skip(length)?;
            }
        }
        let headers = self.varint(5)?;
        if headers < 0 {
            return None;
        }
        if headers as usize > self.bytes.len() {
            return Some(Step::Unsafe);
        }
        Some(Step::Next)
    }
}

/// Seed inputs for the fuzz corpus: (target, name, bytes).
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let headers = [
        Header {
            key: b"trace",
            value: Some(b"1"),
        },
        Header {
            key: b"trace",
            value: None,
        },
    ];
    let records = [
        Record::keyed(1_000, b"key", b"value"),
        Record {
            timestamp_ms: 1_003,
            key: None,
            value: None,
            headers: &headers,
        },
        Record::value(999, b""),
    ];
    let producer = ProducerInfo {
        producer_id: 3,
        producer_epoch: 1,
        base_sequence: 40,
    };
    let mut corpus = Vec::new();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut bytes = Vec::new();
        batch::encode_compressed(&records, producer, compression, usize::MAX, &mut bytes)
            .expect("encode");
        for flags in [0u8, 3] {
            let mut input = vec![flags];
            input.extend_from_slice(&bytes);
            corpus.push((
                "batch_validation",
                format!("{}-{flags}", compression.name()),
                input,
            ));
        }
    }
    corpus
}
