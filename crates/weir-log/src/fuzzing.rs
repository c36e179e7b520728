//! Entry points for fuzzing, shared by the cargo-fuzz targets in `fuzz/`
//! and by `cargo test`, which replays the committed corpus through them.
//!
//! Each function takes arbitrary bytes, runs one decoder of the log on them,
//! and panics only if a property fails: decoders never panic, and what they
//! accept behaves as specified.

use std::sync::Arc;

use weir_io::{ManualClock, OpenMode, SimDisk, Storage};

use crate::batch::{self, BatchLimits, Compression, Header, ProducerInfo, Record, RecordView};
use crate::checkpoint::Checkpoint;
use crate::config::LogConfig;
use crate::epochs::LeaderEpochs;
use crate::frame::frame_for;
use crate::index;
use crate::partition::Partition;
use crate::producers::ProducerStates;
use crate::segment::log_file_name;

/// Decodes `data` as concatenated Kafka batches. Every batch that passes
/// validation must decode to records that encode back (with the same codec
/// and producer) to a batch that validates and holds the same records.
pub fn batch_decoding(data: &[u8]) {
    for batch in batch::batches(data) {
        let Ok(batch) = batch else {
            break;
        };
        let mut scratch = Vec::new();
        let Ok(validated) = batch.validate(&BatchLimits::FORMAT, &mut scratch) else {
            continue;
        };
        let mut decompressed = Vec::new();
        let decoded: Vec<RecordView<'_>> = batch
            .decode(
                &mut decompressed,
                BatchLimits::FORMAT.uncompressed_bytes_max,
            )
            .expect("a validated batch decodes")
            .map(|record| record.expect("validated"))
            .collect();
        assert_eq!(decoded.len(), batch.header().record_count as usize);
        let headers: Vec<Vec<Header<'_>>> = decoded
            .iter()
            .map(|record| record.headers().collect())
            .collect();
        let records: Vec<Record<'_>> = decoded
            .iter()
            .zip(&headers)
            .map(|(record, headers)| Record {
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                value: record.value,
                headers,
            })
            .collect();
        let mut encoded = Vec::new();
        let Ok(_) = batch::encode_compressed(
            &records,
            batch.header().producer,
            validated.compression,
            usize::MAX,
            &mut encoded,
        ) else {
            // Timestamps too far apart for one batch of weir's encoder
            // (whose base timestamp is the first record's) are possible in
            // a batch whose base is another one; nothing else fails.
            continue;
        };
        let again = batch::Batch::parse(&encoded).expect("re-encoded batch parses");
        again
            .validate(&BatchLimits::FORMAT, &mut Vec::new())
            .expect("re-encoded batch validates");
        let mut scratch = Vec::new();
        let records_again = again.decode(&mut scratch, usize::MAX).expect("decode");
        for (left, right) in records_again.zip(&decoded) {
            let left = left.expect("record");
            assert_eq!(
                (left.timestamp_ms, left.key, left.value),
                (right.timestamp_ms, right.key, right.value)
            );
            assert!(left.headers().eq(right.headers()));
        }
    }
}

/// Decodes `data` as each of the log's small files (checkpoint, leader
/// epochs, producer snapshot, a topic's metadata): decoders never panic,
/// and what decodes encodes back to the same bytes (a topic's metadata:
/// to bytes that decode the same).
pub fn log_files_decoding(data: &[u8]) {
    if let Ok(checkpoint) = Checkpoint::decode(data) {
        assert_eq!(checkpoint.encode(), data);
    }
    if let Ok(epochs) = LeaderEpochs::decode(data) {
        assert_eq!(epochs.encode(), data);
    }
    if let Ok((offset, producers)) = ProducerStates::decode_snapshot(data) {
        assert_eq!(producers.encode_snapshot(offset), data);
    }
    // A topic's metadata (version 2 is written again as 3, with id 0).
    if let Ok(metadata) = crate::broker::decode_metadata("t", data) {
        let encoded = crate::broker::encode_metadata(&metadata);
        assert_eq!(crate::broker::decode_metadata("t", &encoded), Ok(metadata));
    }
}

/// Puts `data` in a partition directory as its only segment and opens the
/// log. Opening either fails with an error or yields a log whose every
/// record reads back; opening it again yields the same log.
pub fn segment_recovery(data: &[u8]) {
    let disk = SimDisk::new(0);
    let root = disk.root();
    let file = root
        .open_file(&log_file_name(0), OpenMode::CreateNew)
        .expect("create segment");
    file.write_at(data, 0).expect("write segment");
    file.sync().expect("sync");
    root.sync_dir().expect("sync dir");
    drop(file);
    let storage: Arc<dyn Storage> = Arc::new(root);
    let clock = Arc::new(ManualClock::new(0));
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let Ok((log, report)) = Partition::open(Arc::clone(&storage), clock.clone(), config.clone())
    else {
        return;
    };
    let end = log.log_end_offset();
    assert_eq!(report.log_end_offset, end);
    let records = read_everything(&log);
    assert_eq!(records.last().map_or(0, |(offset, _)| offset + 1), end);
    drop(log);
    let (again, report) = Partition::open(storage, clock, config).expect("reopen a recovered log");
    assert_eq!(report.truncation, None, "recovery is idempotent");
    assert_eq!(read_everything(&again), records);
}

fn read_everything(log: &Partition) -> Vec<(u64, Option<Vec<u8>>)> {
    let mut records = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let result = log.read(next, 4096).expect("read a recovered log");
        for record in result.records() {
            let record = record.expect("records of a recovered log decode");
            records.push((record.offset, record.value.map(<[u8]>::to_vec)));
        }
        assert!(result.info.next_offset > next, "reads make progress");
        next = result.info.next_offset;
    }
    records
}

/// Treats `data` as a target offset (first 4 bytes) and an offset index (the
/// rest). Lookups never panic; on an index that passes its shape check, a
/// lookup agrees with a linear search.
pub fn index_lookup(data: &[u8]) {
    let Some((target, bytes)) = data.split_first_chunk::<4>() else {
        return;
    };
    let target = u32::from_le_bytes(*target);
    let found = index::lookup_offset(bytes, target);
    let _ = index::lookup_time(bytes, i64::from(target));
    let _ = index::check_time_index(bytes, u64::from(target));
    if index::check_offset_index(bytes, u32::MAX).is_ok() {
        let linear = (0..bytes.len() / index::OFFSET_ENTRY_BYTES)
            .map(|position| index::offset_entry(bytes, position))
            .take_while(|entry| entry.relative_offset <= target)
            .last();
        assert_eq!(found, linear);
    }
}

/// Seed inputs for the fuzz corpus: (target, name, bytes). `cargo xtask
/// fuzz-seed` writes them under `fuzz/corpus/`.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut corpus = Vec::new();
    let mut segment = Vec::new();
    let mut kafka = Vec::new();
    let headers = [Header {
        key: b"h",
        value: Some(b"v"),
    }];
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for offset in 0..12u64 {
        let value = format!("value-{offset}");
        let records = [
            Record::keyed(1_000 + offset as i64, b"key", value.as_bytes()),
            Record {
                timestamp_ms: 999,
                key: None,
                value: None,
                headers: &headers,
            },
        ];
        let producer = ProducerInfo {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: i32::try_from(offset).expect("a few seeds") * 2,
        };
        let compression = codecs[usize::try_from(offset).expect("a few seeds") % codecs.len()];
        let mut one = Vec::new();
        batch::encode_compressed(&records, producer, compression, usize::MAX, &mut one)
            .expect("encode");
        batch::stamp(&mut one, offset * 2, 0);
        kafka.extend_from_slice(&one);
        let position = u32::try_from(segment.len()).expect("a small segment");
        segment.extend_from_slice(&frame_for(&one, position));
        segment.extend_from_slice(&one);
    }
    corpus.push((
        "batch_decoding",
        "two-batches".into(),
        kafka[..kafka.len() / 2].to_vec(),
    ));
    corpus.push(("batch_decoding", "twelve-batches".into(), kafka.clone()));
    let mut producers = ProducerStates::default();
    for stored in crate::frame::stored_batches(&segment).flatten() {
        producers.record(stored.batch.header(), stored.batch.header().base_offset);
    }
    corpus.push((
        "log_files_decoding",
        "producers".into(),
        producers.encode_snapshot(24),
    ));
    let mut epochs = LeaderEpochs::default();
    epochs.assign(1, 0);
    epochs.assign(4, 10);
    corpus.push(("log_files_decoding", "epochs".into(), epochs.encode()));
    corpus.push((
        "log_files_decoding",
        "checkpoint".into(),
        Checkpoint::default().encode(),
    ));
    corpus.push(("segment_recovery", "valid".into(), segment.clone()));
    let mut torn = segment.clone();
    torn.truncate(torn.len() - 7);
    corpus.push(("segment_recovery", "torn-tail".into(), torn));
    let mut corrupt = segment.clone();
    corrupt[100] ^= 0x10;
    corpus.push(("segment_recovery", "corrupt-middle".into(), corrupt));
    corpus.push(("segment_recovery", "empty".into(), Vec::new()));
    let mut index_bytes = 17u32.to_le_bytes().to_vec();
    for entry in 0..6u32 {
        index_bytes.extend_from_slice(&(entry * 5).to_le_bytes());
        index_bytes.extend_from_slice(&(entry * 4096).to_le_bytes());
    }
    corpus.push(("index_lookup", "six-entries".into(), index_bytes));
    corpus
}
