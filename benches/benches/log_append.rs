//! Appending without syncs.
//!
//! 1. 1 KiB records in 64 KiB batches, flush `never`, against a plain
//!    `std::fs` sequential write of the same number of bytes to the same
//!    file system (target: at least 0.8x).
//! 2. 100-byte records in batches of 100, flush `never`, in process
//!    (target: at least 2 million records/s on one core).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_benches::{record, report_rate, report_ratio, temporary_directory, Side};
use weir_io::{OsStorage, SystemClock};
use weir_log::{FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

const TOTAL_BYTES: usize = 64 << 20;
const RECORD_BYTES: usize = 1024;
const BATCH_BYTES: usize = 64 << 10;
const SMALL_RECORD_BYTES: usize = 100;
const SMALL_BATCH_RECORDS: usize = 100;
const SMALL_BATCHES: usize = 2000;

fn never() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

fn open_log(directory: &std::path::Path) -> Partition {
    let storage = Arc::new(OsStorage::open(directory).expect("directory"));
    Partition::open(storage, Arc::new(SystemClock), never())
        .expect("open")
        .0
}

fn append_bandwidth(criterion: &mut Criterion) {
    let value = vec![0x5a; RECORD_BYTES - 16];
    let records: Vec<Record<'_>> = (0..BATCH_BYTES / RECORD_BYTES)
        .map(|_| Record::value(1_700_000_000_000, &value))
        .collect();
    let mut encoded = Vec::new();
    weir_log::batch::encode(&records, ProducerInfo::NONE, &mut encoded).expect("encode");
    let batches = TOTAL_BYTES / encoded.len();
    let bytes = (batches * encoded.len()) as u64;

    let mut group = criterion.benchmark_group("append_1k_records_in_64k_batches");
    group.sample_size(10).throughput(Throughput::Bytes(bytes));
    group.bench_function("raw_std_fs_write", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let directory = temporary_directory();
                let started = Instant::now();
                let mut file = std::fs::File::create(directory.path().join("raw")).expect("create");
                for _ in 0..batches {
                    file.write_all(&encoded).expect("write");
                }
                drop(file);
                elapsed += started.elapsed();
            }
            record("raw_std_fs_write", elapsed, iterations)
        });
    });
    group.bench_function("weir_log_append_never", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let directory = temporary_directory();
                let log = open_log(directory.path());
                let started = Instant::now();
                for _ in 0..batches {
                    log.append(&records, ProducerInfo::NONE).expect("append");
                }
                elapsed += started.elapsed();
                drop(log);
            }
            record("weir_log_append_never", elapsed, iterations)
        });
    });
    group.finish();
    report_ratio(
        "append 1 KiB records in 64 KiB batches, flush never, vs raw write()",
        "bytes",
        Side {
            id: "weir_log_append_never",
            work: bytes as f64,
        },
        Side {
            id: "raw_std_fs_write",
            work: bytes as f64,
        },
        0.8,
    );
}

fn small_records(criterion: &mut Criterion) {
    let value = vec![0x33; SMALL_RECORD_BYTES];
    let records: Vec<Record<'_>> = (0..SMALL_BATCH_RECORDS)
        .map(|_| Record::value(1_700_000_000_000, &value))
        .collect();
    let total = (SMALL_BATCHES * SMALL_BATCH_RECORDS) as u64;
    let mut group = criterion.benchmark_group("append_100_byte_records");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(total));
    group.bench_function("weir_log_append_100b_batches_of_100", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                let directory = temporary_directory();
                let log = open_log(directory.path());
                let started = Instant::now();
                for _ in 0..SMALL_BATCHES {
                    log.append(&records, ProducerInfo::NONE).expect("append");
                }
                elapsed += started.elapsed();
                drop(log);
            }
            record("weir_log_append_100b_batches_of_100", elapsed, iterations)
        });
    });
    group.finish();
    report_rate(
        "100-byte records in process, flush never, one appender",
        "records",
        Side {
            id: "weir_log_append_100b_batches_of_100",
            work: total as f64,
        },
        2e6,
    );
}

criterion_group!(benches, append_bandwidth, small_records);
criterion_main!(benches);
