//! Appending without syncs.
//!
//! 1. 1 KiB records in 64 KiB batches, flush `never`, against a plain
//!    `std::fs` sequential write of the same number of bytes to the same
//!    file system: the produce path (batches a producer encoded, validated
//!    and appended as they came; target at least 0.9x) and the native API
//!    (records encoded by weir; target at least 0.8x).
//! 2. The two encoders of a 64 KiB batch: weir's and kafka-protocol's
//!    (the faster one is on the append path).
//! 3. 100-byte records in batches of 100, flush `never`, in process
//!    (target: at least 2 million records/s on one core).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_benches::{
    record, report_comparison, report_rate, report_ratio, temporary_directory, Side,
};
use weir_io::{OsStorage, Storage, SystemClock};
use weir_kafka::interop::{encode_with_kafka_protocol, OwnedRecord};
use weir_log::{Compression, FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

const TOTAL_BYTES: usize = 64 << 20;
const RECORD_BYTES: usize = 1024;
const BATCH_BYTES: usize = 64 << 10;
const RECEIVED_BUFFERS: usize = 8;
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
    // Batches as producers' requests bring them: a few distinct buffers
    // recently received (so in cache, as after the socket read), written
    // in turn by the baseline and appended in turn by the produce path.
    let mut received: Vec<Vec<u8>> = (0..RECEIVED_BUFFERS).map(|_| encoded.clone()).collect();

    let raw = |received: &mut Vec<Vec<u8>>| {
        let directory = temporary_directory();
        let started = Instant::now();
        let mut file = std::fs::File::create(directory.path().join("raw")).expect("create");
        for index in 0..batches {
            file.write_all(&received[index % RECEIVED_BUFFERS])
                .expect("write");
        }
        drop(file);
        started.elapsed()
    };
    // The same writes reserving space ahead as weir-log does: what is left
    // of the difference is weir's own work (checks, frames, indexes).
    let raw_allocated = |received: &mut Vec<Vec<u8>>| {
        let directory = temporary_directory();
        let storage = OsStorage::open(directory.path()).expect("directory");
        let started = Instant::now();
        let file = storage
            .open_file("raw", weir_io::OpenMode::CreateNew)
            .expect("create");
        let step = u64::from(weir_log::ALLOCATION_STEP_BYTES_DEFAULT);
        let (mut position, mut allocated) = (0u64, 0u64);
        for index in 0..batches {
            let batch = &received[index % RECEIVED_BUFFERS];
            let end = position + batch.len() as u64;
            if end > allocated {
                file.allocate(allocated, end + step - allocated)
                    .expect("allocate");
                allocated = end + step;
            }
            file.write_at(batch, position).expect("write");
            position = end;
        }
        drop(file);
        started.elapsed()
    };
    // Each batch is written from its buffer as received, left unchanged.
    let produce = |received: &mut Vec<Vec<u8>>| {
        let directory = temporary_directory();
        let log = open_log(directory.path());
        let started = Instant::now();
        for index in 0..batches {
            log.append_batch(&received[index % RECEIVED_BUFFERS])
                .expect("append");
        }
        started.elapsed()
    };
    let native = |_: &mut Vec<Vec<u8>>| {
        let directory = temporary_directory();
        let log = open_log(directory.path());
        let started = Instant::now();
        for _ in 0..batches {
            log.append(&records, ProducerInfo::NONE).expect("append");
        }
        started.elapsed()
    };
    type Run<'a> = (
        &'a str,
        &'a dyn Fn(&mut Vec<Vec<u8>>) -> std::time::Duration,
    );
    let runs: [Run<'_>; 4] = [
        ("raw_std_fs_write", &raw),
        ("raw_write_with_allocation", &raw_allocated),
        ("weir_log_append_batch_never", &produce),
        ("weir_log_append_never", &native),
    ];
    // The four are measured in turn within every sample (in a rotating
    // order), so that the page cache's and the disk's drift over the run
    // falls on all of them alike.
    let mut group = criterion.benchmark_group("append_1k_records_in_64k_batches");
    group
        .sample_size(20)
        .throughput(Throughput::Bytes(4 * bytes));
    let mut round = 0usize;
    group.bench_function("raw_produce_native_interleaved", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            let mut times = [std::time::Duration::ZERO; 4];
            for _ in 0..iterations {
                for step in 0..runs.len() {
                    let which = (round + step) % runs.len();
                    let elapsed = (runs[which].1)(&mut received);
                    times[which] += elapsed;
                    total += elapsed;
                }
                round += 1;
            }
            for (which, (id, _)) in runs.iter().enumerate() {
                record(id, times[which], iterations);
            }
            total
        });
    });
    group.finish();
    report_ratio(
        "produce path: validate and append producer-encoded 64 KiB batches of 1 KiB records, flush never, vs raw write()",
        "bytes",
        Side {
            id: "weir_log_append_batch_never",
            work: bytes as f64,
        },
        Side {
            id: "raw_std_fs_write",
            work: bytes as f64,
        },
        0.9,
    );
    report_comparison(
        "produce path vs raw write() reserving space the same way (weir's own work: checks, frames, indexes)",
        "bytes",
        Side {
            id: "weir_log_append_batch_never",
            work: bytes as f64,
        },
        Side {
            id: "raw_write_with_allocation",
            work: bytes as f64,
        },
    );
    report_ratio(
        "native API: append 1 KiB records in 64 KiB batches, flush never, vs raw write()",
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

fn encoders(criterion: &mut Criterion) {
    let value = vec![0x5a; RECORD_BYTES - 16];
    let records: Vec<Record<'_>> = (0..BATCH_BYTES / RECORD_BYTES)
        .map(|_| Record::value(1_700_000_000_000, &value))
        .collect();
    let owned: Vec<OwnedRecord> = records
        .iter()
        .enumerate()
        .map(|(offset, record)| OwnedRecord {
            offset: offset as i64,
            timestamp: record.timestamp_ms,
            key: None,
            value: record.value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        })
        .collect();
    const BATCHES: usize = 200;
    let mut group = criterion.benchmark_group("encode_64k_batch");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(BATCHES as u64));
    group.bench_function("weir_encoder", |bencher| {
        let mut out = Vec::with_capacity(BATCH_BYTES * 2);
        bencher.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations * BATCHES as u64 {
                out.clear();
                weir_log::batch::encode(&records, ProducerInfo::NONE, &mut out).expect("encode");
            }
            record("weir_encoder", started.elapsed(), iterations)
        });
    });
    group.bench_function("kafka_protocol_encoder", |bencher| {
        bencher.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations * BATCHES as u64 {
                // Records as kafka-protocol takes them, built outside the
                // timing would favour it; its API needs them built.
                encode_with_kafka_protocol(&owned, ProducerInfo::NONE, Compression::None)
                    .expect("encode");
            }
            record("kafka_protocol_encoder", started.elapsed(), iterations)
        });
    });
    group.finish();
    report_ratio(
        "encoding a 64 KiB batch of 1 KiB records: weir's encoder vs kafka-protocol's",
        "batches",
        Side {
            id: "weir_encoder",
            work: BATCHES as f64,
        },
        Side {
            id: "kafka_protocol_encoder",
            work: BATCHES as f64,
        },
        1.0,
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

criterion_group!(benches, append_bandwidth, encoders, small_records);
criterion_main!(benches);
