//! The partition log's operations on a fault-free simulated disk: append,
//! read, roll, indexes, timestamps, truncation, prefix deletion, retention,
//! reopen.

use std::sync::Arc;

use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::{FlushPolicy, LogConfig, LogError, Partition, ProducerInfo, Record};

const START_MS: u64 = 1_700_000_000_000;

struct Fixture {
    disk: Arc<SimDisk>,
    clock: ManualClock,
    config: LogConfig,
}

impl Fixture {
    fn new(config: LogConfig) -> Self {
        Self {
            disk: SimDisk::new(11),
            clock: ManualClock::new(START_MS),
            config,
        }
    }

    fn small_segments() -> Self {
        Self::new(LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        })
    }

    fn storage(&self) -> Arc<dyn Storage> {
        self.disk
            .root()
            .open_or_create_dir("p")
            .expect("partition directory")
    }

    fn open(&self) -> Partition {
        let (partition, _) = Partition::open(
            self.storage(),
            Arc::new(self.clock.clone()),
            self.config.clone(),
        )
        .expect("open");
        partition
    }
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset:06}").into_bytes()
}

/// Appends `count` one-record batches whose values name their offsets.
fn append_values(partition: &Partition, count: u64, timestamp_ms: i64) {
    for _ in 0..count {
        let offset = partition.log_end_offset();
        let value = value(offset);
        let info = partition
            .append(&[Record::value(timestamp_ms, &value)], ProducerInfo::NONE)
            .expect("append");
        assert_eq!(info.base_offset, offset);
    }
}

/// Reads every record from `from` to the high watermark, checking values.
fn read_all(partition: &Partition, from: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut next = from;
    while next < partition.high_watermark() {
        let result = partition.read(next, 700).expect("read");
        assert!(!result.is_empty(), "no progress at {next}");
        for record in result.records() {
            let record = record.expect("record");
            assert_eq!(record.value, Some(&value(record.offset)[..]));
            offsets.push(record.offset);
        }
        assert!(result.info.next_offset > next);
        next = result.info.next_offset;
    }
    offsets
}

#[test]
fn appends_get_consecutive_offsets_and_read_back() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    let records = [
        Record::value(1, b"a"),
        Record::value(2, b"b"),
        Record::value(3, b"c"),
    ];
    let info = partition
        .append(&records, ProducerInfo::NONE)
        .expect("append");
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 2, 3)
    );
    let info = partition
        .append(&records[..1], ProducerInfo::NONE)
        .expect("append");
    assert_eq!((info.base_offset, info.last_offset), (3, 3));
    assert_eq!(partition.log_end_offset(), 4);
    assert_eq!(partition.high_watermark(), 4);
    assert_eq!(partition.durable_offset(), 4, "flush policy always");

    let result = partition.read(1, 1 << 20).expect("read");
    let values: Vec<_> = result.records().map(|r| r.expect("record").value).collect();
    assert_eq!(values, [Some(&b"b"[..]), Some(&b"c"[..]), Some(&b"a"[..])]);
    assert_eq!(result.info.next_offset, 4);
    let empty = partition.read(4, 100).expect("read at the end");
    assert!(empty.is_empty());
    assert_eq!(empty.info.next_offset, 4);
    assert!(matches!(
        partition.read(5, 100),
        Err(LogError::OffsetOutOfRange {
            requested: 5,
            log_start_offset: 0,
            high_watermark: 4
        })
    ));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 400, 5);
    assert!(
        partition.segment_count() > 5,
        "{} segments",
        partition.segment_count()
    );
    assert_eq!(read_all(&partition, 0), (0..400).collect::<Vec<_>>());
    // Every offset can be the start of a read.
    for offset in (0..400).step_by(37) {
        let result = partition.read(offset, 1).expect("read");
        let first = result.records().next().expect("a record").expect("valid");
        assert_eq!(first.offset, offset);
    }
}

#[test]
fn segments_roll_by_age() {
    let fixture = Fixture::new(LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    });
    let partition = fixture.open();
    append_values(&partition, 3, 5);
    assert_eq!(partition.segment_count(), 1);
    fixture.clock.advance(1000);
    append_values(&partition, 1, 5);
    assert_eq!(partition.segment_base_offsets(), [0, 3]);
}

#[test]
fn a_read_returns_at_least_one_whole_batch_however_large() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    let big = vec![7u8; 3000];
    partition
        .append(&[Record::value(1, &big)], ProducerInfo::NONE)
        .expect("append");
    append_values(&partition, 1, 1);
    let result = partition.read(0, 10).expect("read");
    assert_eq!(result.batches().count(), 1);
    assert_eq!(result.info.next_offset, 1);
}

#[test]
fn timestamps_find_the_first_record_at_or_after() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    // Timestamps 1000, 1010, ... with one record out of order.
    for offset in 0..300u64 {
        let timestamp = if offset == 150 {
            5
        } else {
            1000 + offset as i64 * 10
        };
        let value = value(offset);
        partition
            .append(&[Record::value(timestamp, &value)], ProducerInfo::NONE)
            .expect("append");
    }
    let check = |timestamp: i64, expected: Option<u64>| {
        let found = partition.offset_for_timestamp(timestamp).expect("lookup");
        assert_eq!(found.map(|f| f.offset), expected, "timestamp {timestamp}");
    };
    check(0, Some(0));
    check(1000, Some(0));
    check(1001, Some(1));
    check(2000, Some(100));
    check(2495, Some(151));
    check(3990, Some(299));
    check(3991, None);
}

#[test]
fn a_clean_close_reopens_without_scanning() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 300, 5);
    partition.close().expect("close");
    assert!(matches!(partition.read(0, 10), Err(LogError::Closed)));
    let (partition, report) = Partition::open(
        fixture.storage(),
        Arc::new(fixture.clock.clone()),
        fixture.config.clone(),
    )
    .expect("reopen");
    assert!(report.clean_shutdown);
    assert_eq!(report.segments_scanned, 0);
    assert_eq!(report.truncation, None);
    assert_eq!(read_all(&partition, 0), (0..300).collect::<Vec<_>>());
    append_values(&partition, 10, 5);
    assert_eq!(read_all(&partition, 0), (0..310).collect::<Vec<_>>());
    assert_eq!(
        partition
            .offset_for_timestamp(5)
            .expect("lookup")
            .map(|f| f.offset),
        Some(0)
    );
}

#[test]
fn a_reopen_without_close_scans_only_the_active_segment() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 300, 5);
    let segments = partition.segment_count();
    drop(partition);
    let (partition, report) = Partition::open(
        fixture.storage(),
        Arc::new(fixture.clock.clone()),
        fixture.config.clone(),
    )
    .expect("reopen");
    assert!(!report.clean_shutdown);
    assert_eq!(report.segments_scanned, 1, "{report:?}");
    assert_eq!(report.segments, segments);
    assert_eq!(read_all(&partition, 0), (0..300).collect::<Vec<_>>());
}

#[test]
fn truncation_removes_the_suffix_and_appends_continue_from_there() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 300, 5);
    assert_eq!(partition.truncate(120).expect("truncate"), 120);
    assert_eq!(partition.log_end_offset(), 120);
    assert_eq!(read_all(&partition, 0), (0..120).collect::<Vec<_>>());
    append_values(&partition, 30, 5);
    assert_eq!(read_all(&partition, 0), (0..150).collect::<Vec<_>>());
    drop(partition);
    fixture.disk.crash();
    let partition = fixture.open();
    assert_eq!(read_all(&partition, 0), (0..150).collect::<Vec<_>>());
    // Truncating into the middle of a batch removes the whole batch.
    let records = [Record::value(1, b"x"), Record::value(1, b"y")];
    partition
        .append(&records, ProducerInfo::NONE)
        .expect("append");
    assert_eq!(partition.truncate(151).expect("truncate"), 150);
}

#[test]
fn deleting_a_prefix_moves_the_start_and_removes_whole_segments() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 300, 5);
    let before = partition.segment_count();
    assert_eq!(partition.delete_before(100).expect("delete"), 100);
    assert!(partition.segment_count() < before);
    assert!(partition.segment_base_offsets()[0] <= 100);
    assert!(matches!(
        partition.read(99, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&partition, 100), (100..300).collect::<Vec<_>>());
    assert!(matches!(
        partition.delete_before(301),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(partition);
    fixture.disk.crash();
    let partition = fixture.open();
    assert_eq!(partition.log_start_offset(), 100);
    assert_eq!(read_all(&partition, 100), (100..300).collect::<Vec<_>>());
}

#[test]
fn retention_deletes_old_and_excess_segments_but_never_the_active_one() {
    let fixture = Fixture::new(LogConfig {
        segment_bytes: 4096,
        retention_ms: Some(60_000),
        retention_bytes: Some(10_000),
        ..LogConfig::default()
    });
    let partition = fixture.open();
    let now = START_MS as i64;
    append_values(&partition, 200, now - 120_000);
    append_values(&partition, 200, now);
    let report = partition.apply_retention().expect("retention");
    assert!(!report.segments_deleted.is_empty());
    assert!(
        partition.size_bytes() <= 10_000 + 4096,
        "{}",
        partition.size_bytes()
    );
    assert!(
        report.log_start_offset >= 200,
        "old records are gone: {report:?}"
    );
    fixture.clock.advance(1_000_000);
    partition.apply_retention().expect("retention");
    assert_eq!(partition.segment_count(), 1, "the active segment stays");
}

#[test]
fn oversize_batches_and_records_get_typed_errors() {
    let fixture = Fixture::new(LogConfig {
        max_batch_bytes: 2000,
        max_record_bytes: 500,
        ..LogConfig::default()
    });
    let partition = fixture.open();
    let big = vec![0u8; 600];
    assert!(matches!(
        partition.append(&[Record::value(1, &big)], ProducerInfo::NONE),
        Err(LogError::RecordTooLarge {
            index: 0,
            max: 500,
            ..
        })
    ));
    let medium = vec![0u8; 400];
    let records: Vec<_> = (0..6).map(|_| Record::value(1, &medium)).collect();
    assert!(matches!(
        partition.append(&records, ProducerInfo::NONE),
        Err(LogError::BatchTooLarge { max: 2000, .. })
    ));
    assert!(matches!(
        partition.append(&[], ProducerInfo::NONE),
        Err(LogError::InvalidBatch(_))
    ));
    assert_eq!(partition.log_end_offset(), 0);
}

#[test]
fn encoded_batches_are_validated_and_restamped() {
    let fixture = Fixture::small_segments();
    let partition = fixture.open();
    append_values(&partition, 5, 1);
    let mut bytes = Vec::new();
    weir_log::batch::encode(&[Record::value(9, b"wire")], ProducerInfo::NONE, &mut bytes)
        .expect("encode");
    let info = partition.append_batch(&bytes).expect("append");
    assert_eq!(info.base_offset, 5);
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        partition.append_batch(&corrupt),
        Err(LogError::InvalidBatch(_))
    ));
    bytes.push(0);
    assert!(matches!(
        partition.append_batch(&bytes),
        Err(LogError::InvalidBatch(_))
    ));
}

#[test]
fn interval_and_never_policies_show_records_at_once_and_sync_later() {
    for flush in [
        FlushPolicy::Interval {
            interval_ms: 1000,
            interval_bytes: 1 << 30,
        },
        FlushPolicy::Never,
    ] {
        let fixture = Fixture::new(LogConfig {
            flush,
            ..LogConfig::default()
        });
        let partition = fixture.open();
        append_values(&partition, 3, 1);
        assert_eq!(partition.high_watermark(), 3);
        assert_eq!(partition.durable_offset(), 0);
        fixture.clock.advance(1000);
        partition.tick().expect("tick");
        let expected = if flush == FlushPolicy::Never { 0 } else { 3 };
        assert_eq!(partition.durable_offset(), expected, "{flush:?}");
        partition.flush().expect("flush");
        assert_eq!(partition.durable_offset(), 3);
    }
}
