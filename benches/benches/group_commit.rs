//! Group commit: 8 concurrent appenders with flush `always` against one
//! appender doing an fsync per batch (target: at least 6x the records/s),
//! on this machine's disk, and on the same disk behind a storage that adds
//! 3 ms to every sync (the few-ms fdatasync of a cloud volume, where one
//! appender waits out every sync alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use weir_benches::{record, report_ratio, temporary_directory, Side, SlowSyncStorage};
use weir_io::{OsStorage, SystemClock};
use weir_log::{FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

const APPENDERS: usize = 8;
const APPENDS_PER_APPENDER: usize = 40;
const RECORDS_PER_BATCH: usize = 10;
const RECORD_BYTES: usize = 100;

/// The added sync latency of the slow-disk runs.
const SLOW_SYNC: Duration = Duration::from_millis(3);

fn open_log(directory: &std::path::Path, slow: bool) -> Arc<Partition> {
    let os: Arc<dyn weir_io::Storage> = Arc::new(OsStorage::open(directory).expect("directory"));
    let storage: Arc<dyn weir_io::Storage> = if slow {
        Arc::new(SlowSyncStorage::new(os, SLOW_SYNC))
    } else {
        os
    };
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    Arc::new(
        Partition::open(storage, Arc::new(SystemClock), config)
            .expect("open")
            .0,
    )
}

static BATCHES_PER_SYNC: std::sync::Mutex<Vec<(bool, f64)>> = std::sync::Mutex::new(Vec::new());

fn run(appenders: usize, slow: bool) -> Duration {
    let directory = temporary_directory();
    let log = open_log(directory.path(), slow);
    let started = Instant::now();
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let value = vec![7u8; RECORD_BYTES];
                let records: Vec<Record<'_>> = (0..RECORDS_PER_BATCH)
                    .map(|_| Record::value(1_700_000_000_000, &value))
                    .collect();
                for _ in 0..APPENDS_PER_APPENDER {
                    log.append(&records, ProducerInfo::NONE).expect("append");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    let elapsed = started.elapsed();
    if appenders > 1 {
        let stats = log.stats();
        BATCHES_PER_SYNC.lock().expect("stats").push((
            slow,
            stats.appended_batches as f64 / stats.syncs.max(1) as f64,
        ));
    }
    elapsed
}

fn group_commit(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("flush_always");
    group.sample_size(10);
    for (slow, disk) in [(false, "this_disk"), (true, "sync_plus_3ms")] {
        let one = format!("one_appender_fsync_per_batch_{disk}");
        let eight = format!("eight_appenders_group_commit_{disk}");
        group.bench_function(&one, |bencher| {
            bencher.iter_custom(|iterations| {
                let elapsed = (0..iterations).map(|_| run(1, slow)).sum();
                record(&one, elapsed, iterations)
            });
        });
        group.bench_function(&eight, |bencher| {
            bencher.iter_custom(|iterations| {
                let elapsed = (0..iterations).map(|_| run(APPENDERS, slow)).sum();
                record(&eight, elapsed, iterations)
            });
        });
        let records = (APPENDS_PER_APPENDER * RECORDS_PER_BATCH) as f64;
        report_ratio(
            &format!("flush always, {disk}: 8 concurrent appenders vs 1 appender (records/s)"),
            "records",
            Side {
                id: &eight,
                work: records * APPENDERS as f64,
            },
            Side {
                id: &one,
                work: records,
            },
            6.0,
        );
        let mut covered: Vec<f64> = BATCHES_PER_SYNC
            .lock()
            .expect("stats")
            .iter()
            .filter(|(was_slow, _)| *was_slow == slow)
            .map(|(_, covered)| *covered)
            .collect();
        covered.sort_by(f64::total_cmp);
        if let Some(median) = covered.get(covered.len() / 2) {
            println!("RESULT flush always, {disk}, 8 appenders: a sync covered {median:.2} batches (median run)");
        }
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
