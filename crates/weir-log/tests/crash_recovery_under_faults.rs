//! Thousands of seeded crashes of a partition log with flush policy
//! `always`, on a simulated disk that also injects faults:
//!
//! - with crashes alone, no acknowledged append is ever lost, and nothing
//!   but what was appended is ever read;
//! - with corruption, every read that returns data returns the right data,
//!   and corruption surfaces as an error;
//! - with failing syncs, writes, full disks and flaky reads, acknowledged
//!   appends survive;
//! - recovery is idempotent: opening a recovered log again changes nothing.
//!
//! A failure prints the seed; `CRASH_SEED=<seed> cargo test -p weir-log
//! --test crash_recovery_under_faults` replays that seed alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::sim::FaultStats;
use weir_io::{Faults, ManualClock, SimDisk, Storage};
use weir_log::{LogConfig, LogError, Partition, ProducerInfo, Record};

const SEEDS: u64 = 2000;
const ROUNDS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    CrashOnly,
    Corruption,
    FlakyReads,
    FailingWrites,
}

impl Scenario {
    fn for_seed(seed: u64) -> Self {
        match seed % 5 {
            0 | 1 => Scenario::CrashOnly,
            2 => Scenario::Corruption,
            3 => Scenario::FlakyReads,
            _ => Scenario::FailingWrites,
        }
    }

    fn faults(self) -> Faults {
        match self {
            Scenario::CrashOnly => Faults::none(),
            Scenario::Corruption => Faults {
                write_corruption: 0.01,
                write_misdirection: 0.01,
                ..Faults::none()
            },
            Scenario::FlakyReads => Faults {
                read_corruption: 0.02,
                read_error: 0.02,
                ..Faults::none()
            },
            Scenario::FailingWrites => Faults {
                sync_failure: 0.02,
                write_error: 0.02,
                no_space: 0.02,
                ..Faults::none()
            },
        }
    }

    /// Whether stored data itself can go bad, so that a loss may be
    /// reported as corruption rather than prevented.
    fn corrupts_storage(self) -> bool {
        self == Scenario::Corruption
    }
}

#[derive(Default)]
struct Totals {
    acknowledged: u64,
    crashes: u64,
    mid_operation_crashes: u64,
    truncations: u64,
    corruption_detected: u64,
    stats: Vec<FaultStats>,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

fn tag(seed: u64, round: usize, sequence: u64) -> Vec<u8> {
    format!("s{seed}-r{round}-n{sequence}").into_bytes()
}

/// Retries an operation that may fail with transient read faults.
fn retry<T>(
    scenario: Scenario,
    mut operation: impl FnMut() -> Result<T, LogError>,
) -> Result<T, LogError> {
    let attempts = if scenario == Scenario::FlakyReads {
        20
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        match operation() {
            Ok(value) => return Ok(value),
            Err(error) => last = Some(error),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// What reading the whole log found: offset -> value.
fn read_all(partition: &Partition, scenario: Scenario) -> Result<BTreeMap<u64, Vec<u8>>, LogError> {
    let mut found = BTreeMap::new();
    let mut next = partition.log_start_offset();
    while next < partition.high_watermark() {
        let result = retry(scenario, || partition.read(next, 1500))?;
        for record in result.records() {
            let record = record.map_err(LogError::InvalidBatch)?;
            found.insert(
                record.offset,
                record.value.expect("values are set").to_vec(),
            );
        }
        assert!(result.info.next_offset > next, "reads make progress");
        next = result.info.next_offset;
    }
    Ok(found)
}

fn run_seed(seed: u64, totals: &mut Totals) {
    let scenario = Scenario::for_seed(seed);
    let disk = SimDisk::with_faults(seed, scenario.faults());
    let clock = ManualClock::new(1_700_000_000_000);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
    // Every value ever appended, acknowledged or not, and where the
    // acknowledged ones went.
    let mut attempted: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    let mut acknowledged: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    // Base offsets of the acknowledged batches, in order.
    let mut acknowledged_batches: Vec<u64> = Vec::new();
    let mut sequence = 0u64;
    for round in 0..ROUNDS {
        let crashes_before = disk.stats().crashes;
        let root = disk.root();
        let storage: Arc<dyn Storage> = match root.open_or_create_dir("partition") {
            Ok(storage) => storage,
            Err(_) if scenario != Scenario::CrashOnly => {
                disk.crash();
                continue;
            }
            Err(error) => panic!("seed {seed}: {error}"),
        };
        if std::env::var("CRASH_DEBUG").is_ok() {
            eprintln!(
                "round {round} files: {:?}",
                storage
                    .list()
                    .map(|l| l.into_iter().map(|e| e.name).collect::<Vec<_>>())
            );
        }
        let opened = retry(scenario, || {
            Partition::open(Arc::clone(&storage), Arc::new(clock.clone()), config())
        });
        let (partition, report) = match opened {
            Ok(opened) => opened,
            Err(LogError::Corrupt { .. } | LogError::CorruptCheckpoint { .. })
                if scenario.corrupts_storage() =>
            {
                totals.corruption_detected += 1;
                break;
            }
            Err(LogError::Io { .. }) if scenario != Scenario::CrashOnly => {
                disk.crash();
                continue;
            }
            Err(error) => panic!("seed {seed} round {round}: open failed: {error}"),
        };
        if report.truncation.is_some() {
            totals.truncations += 1;
        }
        if std::env::var("CRASH_DEBUG").is_ok() {
            eprintln!(
                "round {round}: {report:?} segments {:?}",
                partition.segment_base_offsets()
            );
        }

        // Corruption can take the last two acknowledged batches (a corrupt
        // batch and its successor, which alone vouched for it).
        let vouch_floor = acknowledged_batches
            .len()
            .checked_sub(2)
            .map_or(0, |index| acknowledged_batches[index]);
        // Everything acknowledged is there; everything there was appended.
        match read_all(&partition, scenario) {
            Ok(found) => {
                for (offset, value) in &found {
                    assert!(
                        attempted.contains_key(value),
                        "seed {seed}: offset {offset} holds a value never appended: {value:?}"
                    );
                    if let Some(expected) = acknowledged.get(offset) {
                        assert_eq!(value, expected, "seed {seed}: offset {offset} changed");
                    }
                }
                for (offset, value) in &acknowledged {
                    if found.get(offset) != Some(value) {
                        assert!(
                            scenario.corrupts_storage() && report.truncation.is_some(),
                            "seed {seed} round {round}: acknowledged offset {offset} ({}) lost; \
                             recovery: {report:?}",
                            String::from_utf8_lossy(value)
                        );
                        // A cut may take acknowledged records only from the
                        // last batches: every earlier one is vouched for by
                        // a later batch recording it synced, so its
                        // corruption must fail the open instead.
                        assert!(
                            *offset >= vouch_floor,
                            "seed {seed} round {round}: a cut removed acknowledged offset {offset} \
                             below {vouch_floor}, which later batches record as synced: {report:?}"
                        );
                    }
                }
                acknowledged.retain(|offset, value| found.get(offset) == Some(value));
                acknowledged_batches.retain(|base| acknowledged.contains_key(base));
            }
            Err(LogError::Corrupt { .. }) if scenario.corrupts_storage() => {
                totals.corruption_detected += 1;
                break;
            }
            Err(error) => panic!("seed {seed} round {round}: read failed: {error}"),
        }

        // Recovery is idempotent.
        if round == 0 || rng.random_bool(0.3) {
            let end = partition.log_end_offset();
            drop(partition);
            let again = retry(scenario, || {
                Partition::open(Arc::clone(&storage), Arc::new(clock.clone()), config())
            });
            match again {
                Ok((partition, report)) => {
                    assert_eq!(
                        report.truncation, None,
                        "seed {seed}: second recovery cut more"
                    );
                    assert_eq!(partition.log_end_offset(), end, "seed {seed}");
                    drop(partition);
                }
                Err(error) if scenario != Scenario::CrashOnly => {
                    let _ = error;
                }
                Err(error) => panic!("seed {seed}: reopen failed: {error}"),
            }
            let Ok((reopened, _)) = retry(scenario, || {
                Partition::open(Arc::clone(&storage), Arc::new(clock.clone()), config())
            }) else {
                disk.crash();
                continue;
            };
            schedule_crash(&disk, &mut rng);
            append_round(
                &reopened,
                &disk,
                seed,
                round,
                &mut rng,
                &mut sequence,
                &mut attempted,
                &mut acknowledged,
                &mut acknowledged_batches,
                totals,
            );
        } else {
            schedule_crash(&disk, &mut rng);
            append_round(
                &partition,
                &disk,
                seed,
                round,
                &mut rng,
                &mut sequence,
                &mut attempted,
                &mut acknowledged,
                &mut acknowledged_batches,
                totals,
            );
        }
        if !disk.crash_pending() && disk.stats().crashes > crashes_before {
            totals.mid_operation_crashes += 1;
        }
        disk.crash();
        totals.crashes += 1;
    }
    totals.stats.push(disk.stats());
}

/// Most rounds end with a power loss in the middle of some operation: a
/// write, a sync, a roll.
fn schedule_crash(disk: &SimDisk, rng: &mut Xoshiro256PlusPlus) {
    if rng.random_bool(0.8) {
        disk.schedule_crash(rng.random_range(1..120));
    }
}

#[allow(clippy::too_many_arguments)]
fn append_round(
    partition: &Partition,
    disk: &SimDisk,
    seed: u64,
    round: usize,
    rng: &mut Xoshiro256PlusPlus,
    sequence: &mut u64,
    attempted: &mut BTreeMap<Vec<u8>, ()>,
    acknowledged: &mut BTreeMap<u64, Vec<u8>>,
    acknowledged_batches: &mut Vec<u64>,
    totals: &mut Totals,
) {
    let appends = rng.random_range(1..40);
    let crashes_before = disk.stats().crashes;
    for _ in 0..appends {
        if disk.stats().crashes > crashes_before {
            // The power went out; this process is gone.
            return;
        }
        let count = rng.random_range(1..6);
        let values: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                *sequence += 1;
                let mut value = tag(seed, round, *sequence);
                let padding = rng.random_range(0..150);
                value.extend(std::iter::repeat_n(b'.', padding));
                value
            })
            .collect();
        for value in &values {
            attempted.insert(value.clone(), ());
        }
        let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(7, value)).collect();
        match partition.append(&records, ProducerInfo::NONE) {
            Ok(info) => {
                totals.acknowledged += u64::from(info.record_count);
                acknowledged_batches.push(info.base_offset);
                for (index, value) in values.into_iter().enumerate() {
                    acknowledged.insert(info.base_offset + index as u64, value);
                }
            }
            Err(LogError::Failed { .. }) => return,
            Err(_) => {}
        }
        if rng.random_bool(0.05) {
            let _ = partition.roll();
        }
    }
}

#[test]
fn no_acknowledged_append_is_lost_across_thousands_of_crashes() {
    let seeds: Vec<u64> = match std::env::var("CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("CRASH_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    let mut totals = Totals::default();
    for seed in seeds {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, &mut totals)));
        if let Err(panic) = result {
            eprintln!(
                "crash test failed at seed {seed} ({:?}); replay it with:\n  \
                 CRASH_SEED={seed} cargo test -p weir-log --test crash_recovery_under_faults",
                Scenario::for_seed(seed)
            );
            std::panic::resume_unwind(panic);
        }
    }
    let sum = |field: fn(&FaultStats) -> u64| totals.stats.iter().map(field).sum::<u64>();
    eprintln!(
        "crashes {} (mid-operation {}) acknowledged records {} torn tails cut {} corruption detected {} \
         torn writes {} write corruptions {} misdirections {} read corruptions {} \
         sync failures {} write errors {} ENOSPC {}",
        totals.crashes,
        totals.mid_operation_crashes,
        totals.acknowledged,
        totals.truncations,
        totals.corruption_detected,
        sum(|s| s.torn_writes),
        sum(|s| s.write_corruptions),
        sum(|s| s.write_misdirections),
        sum(|s| s.read_corruptions),
        sum(|s| s.sync_failures),
        sum(|s| s.write_errors),
        sum(|s| s.no_space_errors),
    );
    if std::env::var("CRASH_SEED").is_err() {
        // The scenarios reached what they are for.
        assert!(totals.crashes > SEEDS * 2);
        assert!(
            totals.mid_operation_crashes > SEEDS,
            "crashes strike mid-operation"
        );
        assert!(totals.truncations > 100, "torn tails are exercised");
        assert!(totals.corruption_detected > 10, "corruption is exercised");
        assert!(sum(|s| s.sync_failures) > 100);
    }
}
