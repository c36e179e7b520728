//! Opening a 1 GiB log: after a crash (the process died without closing it,
//! so the active segment is scanned batch by batch) and after a clean close
//! (nothing is scanned).

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_benches::{record, report_rate, report_time, temporary_directory, Side};
use weir_io::{OsStorage, SystemClock};
use weir_log::{FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

const LOG_BYTES: u64 = 1 << 30;

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Never,
        segment_bytes: 1 << 30,
        ..LogConfig::default()
    }
}

fn open(directory: &std::path::Path) -> (Partition, weir_log::RecoveryReport) {
    let storage = Arc::new(OsStorage::open(directory).expect("directory"));
    Partition::open(storage, Arc::new(SystemClock), config()).expect("open")
}

fn recovery(criterion: &mut Criterion) {
    let directory = temporary_directory();
    {
        let (log, _) = open(directory.path());
        let value = vec![0x17; 1000];
        let records: Vec<Record<'_>> = (0..64).map(|_| Record::value(1, &value)).collect();
        while log.size_bytes() + 70_000 < LOG_BYTES {
            log.append(&records, ProducerInfo::NONE).expect("append");
        }
        log.flush().expect("flush");
        // Dropped without close: the state a crash leaves.
    }
    let bytes = open(directory.path()).0.size_bytes();

    let mut group = criterion.benchmark_group("open_1_gib_log");
    group.sample_size(10).throughput(Throughput::Bytes(bytes));
    group.bench_function("after_crash", |bencher| {
        bencher.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                let (_, report) = open(directory.path());
                assert_eq!(report.bytes_scanned, bytes, "the whole log is scanned");
            }
            record("after_crash", started.elapsed(), iterations)
        });
    });
    group.bench_function("after_clean_close", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut elapsed = std::time::Duration::ZERO;
            for _ in 0..iterations {
                open(directory.path()).0.close().expect("close");
                let started = Instant::now();
                let (log, report) = open(directory.path());
                elapsed += started.elapsed();
                assert_eq!(report.segments_scanned, 0, "nothing is scanned");
                drop(log);
            }
            record("after_clean_close", elapsed, iterations)
        });
    });
    group.finish();
    report_time("recovery of a 1 GiB log after a crash", "after_crash");
    report_rate(
        "recovery scan rate after a crash",
        "bytes",
        Side {
            id: "after_crash",
            work: bytes as f64,
        },
        1e9,
    );
    report_time("open of a cleanly closed 1 GiB log", "after_clean_close");
}

criterion_group!(benches, recovery);
criterion_main!(benches);
