//! A model-based property test of the partition log: random sequences of
//! appends, reads, truncations, prefix deletions, rolls, flushes, clean
//! reopens and crashes (between operations and in the middle of them), on a
//! simulated disk, against a simple in-memory model that knows which prefix
//! of the log is durable. After every crash the recovered log must equal
//! the durable prefix plus possibly some of what was not yet synced, in
//! order, and nothing else.

use std::sync::Arc;

use proptest::prelude::*;
use weir_io::{CrashWeights, Faults, ManualClock, SimDisk, Storage};
use weir_log::{FlushPolicy, LogConfig, Partition, ProducerInfo, Record};

#[derive(Clone, Debug)]
enum Operation {
    Append { records: usize, padding: usize },
    Read { at: u64, max_bytes: u32 },
    Truncate { at: u64 },
    DeletePrefix { at: u64 },
    Roll,
    Flush,
    CloseAndReopen,
    Crash,
    CrashDuringAppends { operations: u64, appends: usize },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        8 => (1usize..5, 0usize..300).prop_map(|(records, padding)| Operation::Append { records, padding }),
        3 => (any::<u64>(), 1u32..3000).prop_map(|(at, max_bytes)| Operation::Read { at, max_bytes }),
        1 => any::<u64>().prop_map(|at| Operation::Truncate { at }),
        1 => any::<u64>().prop_map(|at| Operation::DeletePrefix { at }),
        1 => Just(Operation::Roll),
        1 => Just(Operation::Flush),
        1 => Just(Operation::CloseAndReopen),
        2 => Just(Operation::Crash),
        2 => (1u64..40, 1usize..6).prop_map(|(operations, appends)| Operation::CrashDuringAppends { operations, appends }),
    ]
}

fn flush_policy() -> impl Strategy<Value = FlushPolicy> {
    prop_oneof![
        Just(FlushPolicy::Always),
        Just(FlushPolicy::Never),
        (1u64..2000).prop_map(|interval_bytes| FlushPolicy::Interval {
            interval_ms: 1_000_000,
            interval_bytes
        }),
    ]
}

/// What the log should hold.
#[derive(Debug, Default)]
struct Model {
    /// Records from the log start on, with the batch each belongs to.
    records: Vec<(u64, Vec<u8>, u64)>,
    start: u64,
    /// Offsets below this are durable, as the log reported.
    durable: u64,
    /// Records of appends that failed in a crash: they may or may not have
    /// reached the disk.
    in_flight: Vec<(Vec<u8>, u64)>,
    /// Base offset of every batch appended, by batch.
    batch_bases: std::collections::BTreeMap<u64, u64>,
    next_value: u64,
    next_batch: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.records
            .last()
            .map_or(self.start, |(offset, _, _)| offset + 1)
    }

    fn values(&mut self, count: usize, padding: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                self.next_value += 1;
                let mut value = format!("value-{}", self.next_value).into_bytes();
                value.extend(std::iter::repeat_n(b'~', padding));
                value
            })
            .collect()
    }
}

struct Harness {
    disk: Arc<SimDisk>,
    clock: ManualClock,
    config: LogConfig,
    log: Option<Partition>,
    model: Model,
}

impl Harness {
    fn storage(&self) -> Arc<dyn Storage> {
        self.disk
            .root()
            .open_or_create_dir("log")
            .expect("directory")
    }

    fn open(&mut self) {
        let (log, _) = Partition::open(
            self.storage(),
            Arc::new(self.clock.clone()),
            self.config.clone(),
        )
        .expect("recovery of a fault-free disk succeeds");
        self.log = Some(log);
    }

    fn log(&self) -> &Partition {
        self.log.as_ref().expect("open")
    }

    fn read_all(&self) -> Vec<(u64, Vec<u8>)> {
        let log = self.log();
        let mut records = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let result = log.read(next, 1000).expect("read");
            for record in result.records() {
                let record = record.expect("record");
                records.push((record.offset, record.value.expect("value").to_vec()));
            }
            assert!(result.info.next_offset > next);
            next = result.info.next_offset;
        }
        records
    }

    fn append(&mut self, records: usize, padding: usize) -> Result<(), ()> {
        let values = self.model.values(records, padding);
        let batch = self.model.next_batch;
        self.model.next_batch += 1;
        let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(1, value)).collect();
        match self.log().append(&records, ProducerInfo::NONE) {
            Ok(info) => {
                assert_eq!(info.base_offset, self.model.end());
                self.model.batch_bases.insert(batch, info.base_offset);
                for (index, value) in values.into_iter().enumerate() {
                    self.model
                        .records
                        .push((info.base_offset + index as u64, value, batch));
                }
                Ok(())
            }
            Err(_) => {
                self.model
                    .in_flight
                    .extend(values.into_iter().map(|value| (value, batch)));
                Err(())
            }
        }
    }

    /// Crashes (if the disk has not already) and checks recovery against the
    /// model.
    fn crash_and_recover(&mut self) {
        self.log = None;
        self.disk.crash();
        self.open();
        let recovered = self.read_all();
        assert_eq!(
            self.log().log_start_offset(),
            self.model.start,
            "the start offset is durable"
        );
        // Candidates: what the model holds, then what was in flight.
        let mut candidates: Vec<(u64, Vec<u8>, u64)> = self.model.records.clone();
        let end = self.model.end();
        for (next, (value, batch)) in (end..).zip(self.model.in_flight.drain(..)) {
            self.model.batch_bases.entry(batch).or_insert(next);
            candidates.push((next, value, batch));
        }
        assert!(
            recovered.len() <= candidates.len(),
            "recovered more than was appended"
        );
        for (found, expected) in recovered.iter().zip(&candidates) {
            assert_eq!(
                (found.0, &found.1),
                (expected.0, &expected.1),
                "recovered log diverges"
            );
        }
        let durable = self.model.durable.max(self.model.start);
        let recovered_end = recovered
            .last()
            .map_or(self.model.start, |(offset, _)| offset + 1);
        assert!(
            recovered_end >= durable,
            "lost durable records: recovered up to {recovered_end}, durable up to {durable}"
        );
        // Recovery cuts at batch boundaries.
        if let Some(next) = candidates.get(recovered.len()) {
            if let Some(last) = recovered
                .len()
                .checked_sub(1)
                .map(|index| &candidates[index])
            {
                assert_ne!(last.2, next.2, "recovery kept part of a batch");
            }
        }
        candidates.truncate(recovered.len());
        self.model.records = candidates;
        self.model.durable = self.log().durable_offset();
        assert_eq!(self.log().log_end_offset(), self.model.end());
    }

    fn apply(&mut self, operation: Operation) {
        match operation {
            Operation::Append { records, padding } => {
                self.append(records, padding)
                    .expect("append on a fault-free disk");
            }
            Operation::Read { at, max_bytes } => {
                let log = self.log();
                let (start, high_watermark) = (log.log_start_offset(), log.high_watermark());
                if high_watermark > start {
                    let offset = start + at % (high_watermark - start);
                    let result = log.read(offset, max_bytes).expect("read");
                    let first = result.records().next().expect("a record").expect("valid");
                    assert_eq!(first.offset, offset);
                    let index = (offset - self.model.start) as usize;
                    assert_eq!(first.value, Some(&self.model.records[index].1[..]));
                }
            }
            Operation::Truncate { at } => {
                let (start, end) = (self.model.start, self.model.end());
                let target = start + at % (end - start + 1);
                let new_end = self.log().truncate(target).expect("truncate");
                // The whole batch holding the target goes.
                let expected = match self
                    .model
                    .records
                    .iter()
                    .find(|(offset, _, _)| *offset == target)
                {
                    Some((_, _, batch)) => self.model.batch_bases[batch],
                    None => end,
                };
                assert_eq!(new_end, expected);
                self.model.start = self.model.start.min(new_end);
                self.model
                    .records
                    .retain(|(offset, _, _)| *offset < new_end);
            }
            Operation::DeletePrefix { at } => {
                let log = self.log();
                let (start, high_watermark) = (log.log_start_offset(), log.high_watermark());
                let target = start + at % (high_watermark - start + 1);
                let new_start = log.delete_before(target).expect("delete");
                assert_eq!(new_start, target.max(start));
                self.model
                    .records
                    .retain(|(offset, _, _)| *offset >= new_start);
                self.model.start = new_start;
            }
            Operation::Roll => self.log().roll().expect("roll"),
            Operation::Flush => self.log().flush().expect("flush"),
            Operation::CloseAndReopen => {
                self.log().close().expect("close");
                self.log = None;
                self.open();
                assert_eq!(self.read_all().len(), self.model.records.len());
            }
            Operation::Crash => self.crash_and_recover(),
            Operation::CrashDuringAppends {
                operations,
                appends,
            } => {
                self.disk.schedule_crash(operations);
                for _ in 0..appends {
                    if self.append(2, 40).is_err() {
                        break;
                    }
                }
                self.model.durable = self.log().durable_offset();
                self.crash_and_recover();
            }
        }
        if let Some(log) = &self.log {
            self.model.durable = log.durable_offset();
            assert_eq!(log.log_end_offset(), self.model.end());
            assert_eq!(log.log_start_offset(), self.model.start);
            let high_watermark = log.high_watermark();
            match self.config.flush {
                FlushPolicy::Always => assert_eq!(high_watermark, self.model.durable),
                _ => assert_eq!(high_watermark, self.model.end()),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_its_model_across_crashes(
        seed in any::<u64>(),
        flush in flush_policy(),
        segment_bytes in 1024u32..6000,
        crash_weights in (0u32..3, 0u32..3, 0u32..3),
        operations in proptest::collection::vec(operation(), 1..60),
    ) {
        let (lose_all, keep_prefix, tear) = crash_weights;
        let faults = Faults {
            crash: CrashWeights { lose_all, keep_prefix, tear },
            ..Faults::none()
        };
        let mut harness = Harness {
            disk: SimDisk::with_faults(seed, faults),
            clock: ManualClock::new(1_700_000_000_000),
            config: LogConfig { segment_bytes, index_interval_bytes: 300, flush, ..LogConfig::default() },
            log: None,
            model: Model::default(),
        };
        harness.open();
        for operation in operations {
            harness.apply(operation);
        }
        harness.crash_and_recover();
    }
}
