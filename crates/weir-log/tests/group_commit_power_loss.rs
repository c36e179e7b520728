//! Group commit under real concurrency and power loss: the real `Partition`
//! with flush `always`, several appender threads sharing syncs, and the
//! simulated disk losing power at a random point of the storage operations
//! they issue (in the middle of a write, between a write and its sync,
//! during a sync, a roll or a checkpoint). Every append that returned must
//! be in the log after recovery, at the offset it was given.
//!
//! The simulator runs one thread; loom checks a model of the group commit;
//! this test checks the real code with real threads. Seeds choose where the
//! power goes; the threads' interleaving is the machine's, so a failure
//! prints the seed and the acknowledged append that was lost, and the
//! replay command (`GROUP_COMMIT_SEED=<seed>`) runs that seed alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{CrashWeights, Faults, ManualClock, SimDisk, Storage};
use weir_log::{FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

const SEEDS: u64 = 300;
const APPENDERS: usize = 4;
const APPENDS_PER_THREAD: usize = 150;

fn config(segment_bytes: u32) -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(disk: &Arc<SimDisk>, segment_bytes: u32) -> Partition {
    let storage: Arc<dyn Storage> = disk.root().open_or_create_dir("p").expect("directory");
    Partition::open(
        storage,
        Arc::new(ManualClock::new(1_700_000_000_000)),
        config(segment_bytes),
    )
    .expect("recovery of a fault-free disk succeeds")
    .0
}

/// Runs one seed; returns how many appends were acknowledged.
fn run_seed(seed: u64) -> usize {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let faults = Faults {
        crash: CrashWeights {
            lose_all: rng.random_range(0..3),
            keep_prefix: rng.random_range(0..3),
            tear: rng.random_range(1..3),
        },
        ..Faults::none()
    };
    let disk = SimDisk::with_faults(seed, faults);
    let segment_bytes = rng.random_range(1024..8192);
    let log = Arc::new(open(&disk, segment_bytes));
    // Power goes somewhere among the next few hundred storage operations.
    disk.schedule_crash(rng.random_range(1..600));
    let acknowledged: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let threads: Vec<_> = (0..APPENDERS)
        .map(|thread| {
            let (log, acknowledged) = (Arc::clone(&log), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                for sequence in 0..APPENDS_PER_THREAD {
                    let value = format!("t{thread}-{sequence:04}");
                    let records = [Record::value(1, value.as_bytes())];
                    match log.append(&records, ProducerInfo::NONE) {
                        Ok(info) => acknowledged
                            .lock()
                            .expect("acknowledged")
                            .push((info.base_offset, value)),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    drop(log);
    disk.crash();
    let log = open(&disk, segment_bytes);
    log.check_invariants().expect("invariants after recovery");
    log.verify().expect("every batch checks");
    let mut found: BTreeMap<u64, String> = BTreeMap::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let read = log.read(next, 1 << 16).expect("read");
        for record in read.records() {
            let record = record.expect("record");
            let value = String::from_utf8_lossy(record.value.expect("value")).into_owned();
            found.insert(record.offset, value);
        }
        next = read.info.next_offset;
    }
    let acknowledged = acknowledged.lock().expect("acknowledged");
    for (offset, value) in acknowledged.iter() {
        assert_eq!(
            found.get(offset),
            Some(value),
            "seed {seed}: acknowledged append {value} at offset {offset} is lost after power loss; \
             replay with GROUP_COMMIT_SEED={seed} cargo test -p weir-log --test group_commit_power_loss"
        );
    }
    acknowledged.len()
}

#[test]
fn every_acknowledged_append_of_concurrent_appenders_survives_power_loss() {
    let seeds: Vec<u64> = match std::env::var("GROUP_COMMIT_SEED") {
        Ok(seed) => vec![seed.parse().expect("a seed")],
        Err(_) => (0..SEEDS).collect(),
    };
    let mut total = 0;
    for seed in &seeds {
        total += run_seed(*seed);
    }
    eprintln!(
        "{} seeds, {total} acknowledged appends, all found after power loss",
        seeds.len()
    );
    assert!(
        total > seeds.len() * 10,
        "the appenders got through before power went: {total}"
    );
}
