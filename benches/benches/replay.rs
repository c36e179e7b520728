//! Sequential replay of a log from the page cache, against a plain read of
//! the same segment files (targets: at least 1 GB/s, and at least 0.8x).

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_benches::{record, report_rate, report_ratio, temporary_directory, Side};
use weir_io::{OsStorage, SystemClock};
use weir_log::{FlushPolicy, Isolation, LogConfig, Partition, ProducerInfo, Record};

const LOG_BYTES: usize = 256 << 20;
const READ_BYTES: u32 = 1 << 20;

fn replay(criterion: &mut Criterion) {
    let directory = temporary_directory();
    let storage = Arc::new(OsStorage::open(directory.path()).expect("directory"));
    let config = LogConfig {
        flush: FlushPolicy::Never,
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    };
    let (log, _) = Partition::open(storage, Arc::new(SystemClock), config).expect("open");
    let value = vec![0x42; 1000];
    let records: Vec<Record<'_>> = (0..64).map(|_| Record::value(1, &value)).collect();
    while (log.size_bytes() as usize) < LOG_BYTES {
        log.append(&records, ProducerInfo::NONE).expect("append");
    }
    log.flush().expect("flush");
    let bytes = log.size_bytes();
    let segments: Vec<std::path::PathBuf> = std::fs::read_dir(directory.path())
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();

    let raw = |buffer: &mut Vec<u8>| {
        buffer.resize(READ_BYTES as usize, 0);
        let started = Instant::now();
        let mut total = 0usize;
        for path in &segments {
            let mut file = std::fs::File::open(path).expect("open");
            loop {
                let read = file.read(buffer).expect("read");
                if read == 0 {
                    break;
                }
                total += read;
            }
        }
        assert_eq!(total as u64, bytes);
        started.elapsed()
    };
    let weir = |buffer: &mut Vec<u8>| {
        let started = Instant::now();
        let mut next = 0;
        let mut total = 0usize;
        while next < log.high_watermark() {
            let info = log
                .read_into(next, READ_BYTES, Isolation::Committed, buffer)
                .expect("read");
            total += buffer.len();
            next = info.next_offset;
        }
        assert_eq!(total as u64, bytes);
        started.elapsed()
    };
    type Run<'a> = (&'a str, &'a dyn Fn(&mut Vec<u8>) -> std::time::Duration);
    let runs: [Run<'_>; 2] = [("raw_std_fs_read", &raw), ("weir_log_read", &weir)];
    let mut group = criterion.benchmark_group("replay_from_page_cache");
    group
        .sample_size(20)
        .throughput(Throughput::Bytes(2 * bytes));
    let mut buffer = Vec::with_capacity(2 * READ_BYTES as usize);
    let mut round = 0usize;
    // Both are measured in turn within every sample (in a rotating order).
    group.bench_function("raw_and_weir_interleaved", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            let mut times = [std::time::Duration::ZERO; 2];
            for _ in 0..iterations {
                for step in 0..runs.len() {
                    let which = (round + step) % runs.len();
                    let elapsed = (runs[which].1)(&mut buffer);
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
        "sequential replay from the page cache vs plain read of the segments",
        "bytes",
        Side {
            id: "weir_log_read",
            work: bytes as f64,
        },
        Side {
            id: "raw_std_fs_read",
            work: bytes as f64,
        },
        0.8,
    );
    report_rate(
        "sequential replay from the page cache",
        "bytes",
        Side {
            id: "weir_log_read",
            work: bytes as f64,
        },
        1e9,
    );
}

criterion_group!(benches, replay);
criterion_main!(benches);
