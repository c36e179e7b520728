//! Idempotent producers against a reference model of Kafka's rules (KIP-98),
//! across crashes, truncations, rolls and reopens on a simulated disk.
//!
//! Producers send batches as a client would: the next one, a retry of one
//! sent before, one with a gap, one under a bumped epoch, one under an old
//! epoch. The model computes, from the batches the log holds, what the
//! partition must answer (append, duplicate with the original offsets,
//! out-of-order, fenced), and after every crash the partition's producer
//! state must equal the model's state for the batches that survived — the
//! durable prefix and whatever unacknowledged writes the crash kept. A
//! damaged or missing snapshot is derived data: the state is the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use weir_io::{Faults, ManualClock, OpenMode, SimDisk, Storage};
use weir_log::batch::{self, add_sequence};
use weir_log::{LogConfig, LogError, Partition, ProducerInfo, Record, SequenceError};

const PRODUCERS: i64 = 3;
const KEPT: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Send {
    Next,
    Retry(usize),
    Gap(i32),
    Bump,
    Stale,
}

#[derive(Clone, Debug)]
enum Operation {
    Produce {
        producer: i64,
        send: Send,
        records: usize,
    },
    Crash,
    CrashDuringProduces {
        operations: u64,
    },
    Truncate {
        at: u64,
    },
    Roll,
    CloseAndReopen,
    DamageSnapshotsAndReopen,
}

fn send() -> impl Strategy<Value = Send> {
    prop_oneof![
        6 => Just(Send::Next),
        3 => any::<usize>().prop_map(Send::Retry),
        1 => (1i32..4).prop_map(Send::Gap),
        1 => Just(Send::Bump),
        1 => Just(Send::Stale),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        12 => (0..PRODUCERS, send(), 1usize..4).prop_map(|(producer, send, records)| Operation::Produce { producer, send, records }),
        1 => Just(Operation::Crash),
        2 => (1u64..30).prop_map(|operations| Operation::CrashDuringProduces { operations }),
        1 => any::<u64>().prop_map(|at| Operation::Truncate { at }),
        1 => Just(Operation::Roll),
        1 => Just(Operation::CloseAndReopen),
        1 => Just(Operation::DamageSnapshotsAndReopen),
    ]
}

/// A producer's batch as the log holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    producer: i64,
    epoch: i16,
    first: i32,
    last: i32,
    base_offset: u64,
    last_offset: u64,
}

/// What the partition must remember of each producer, from the batches in
/// the log: the epoch of its last batch and its last five batches.
fn expected_state(log: &[Written]) -> BTreeMap<i64, (i16, Vec<Written>)> {
    let mut state: BTreeMap<i64, (i16, Vec<Written>)> = BTreeMap::new();
    for batch in log {
        let entry = state
            .entry(batch.producer)
            .or_insert((batch.epoch, Vec::new()));
        if entry.0 != batch.epoch {
            *entry = (batch.epoch, Vec::new());
        }
        entry.1.push(*batch);
        if entry.1.len() > KEPT {
            entry.1.remove(0);
        }
    }
    state
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Append,
    Duplicate(u64, u64),
    OutOfOrder,
    Fenced,
}

fn expected_verdict(
    state: &BTreeMap<i64, (i16, Vec<Written>)>,
    producer: i64,
    epoch: i16,
    first: i32,
    last: i32,
) -> Verdict {
    let Some((current, batches)) = state.get(&producer) else {
        return Verdict::Append;
    };
    if epoch < *current {
        return Verdict::Fenced;
    }
    if epoch > *current {
        return if first == 0 {
            Verdict::Append
        } else {
            Verdict::OutOfOrder
        };
    }
    if let Some(original) = batches
        .iter()
        .find(|batch| batch.first == first && batch.last == last)
    {
        return Verdict::Duplicate(original.base_offset, original.last_offset);
    }
    match batches.last() {
        Some(previous) if add_sequence(previous.last, 1) != first => Verdict::OutOfOrder,
        _ => Verdict::Append,
    }
}

/// A client's view of one producer: its epoch, its next sequence, and what
/// it sent (to retry).
#[derive(Clone, Debug, Default)]
struct Client {
    epoch: i16,
    next: i32,
    sent: Vec<(i16, i32, usize)>,
}

struct Harness {
    disk: Arc<SimDisk>,
    clock: ManualClock,
    config: LogConfig,
    log: Option<Partition>,
    clients: Vec<Client>,
    /// Acknowledged appends (not duplicates): they must stay in the log
    /// until a truncation removes them.
    acknowledged: Vec<Written>,
    next_value: u64,
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
        log.check_invariants().expect("invariants after open");
        self.log = Some(log);
    }

    fn log(&self) -> &Partition {
        self.log.as_ref().expect("open")
    }

    /// The producers' batches the log holds, in order.
    fn written(&self) -> Result<Vec<Written>, LogError> {
        let log = self.log();
        let mut found = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.high_watermark() {
            let read = log.read(next, 1 << 16)?;
            for batch in read.batches() {
                let header = batch.header();
                found.push(Written {
                    producer: header.producer.producer_id,
                    epoch: header.producer.producer_epoch,
                    first: header.producer.base_sequence,
                    last: header.last_sequence(),
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                });
            }
            next = read.info.next_offset;
        }
        Ok(found)
    }

    /// The partition's producer state must be the model's for the log.
    fn check_state(&self) {
        let written = self.written().expect("read the log");
        let expected = expected_state(&written);
        for producer in 0..PRODUCERS {
            let actual = self.log().producer_state(producer).map(|entry| {
                let batches: Vec<(i32, i32, u64, u64)> = entry
                    .batches
                    .iter()
                    .map(|batch| {
                        (
                            batch.first_sequence,
                            batch.last_sequence,
                            batch.first_offset,
                            batch.last_offset,
                        )
                    })
                    .collect();
                (entry.epoch, batches)
            });
            let wanted = expected.get(&producer).map(|(epoch, batches)| {
                let batches: Vec<(i32, i32, u64, u64)> = batches
                    .iter()
                    .map(|batch| {
                        (
                            batch.first,
                            batch.last,
                            batch.base_offset,
                            batch.last_offset,
                        )
                    })
                    .collect();
                (*epoch, batches)
            });
            assert_eq!(
                actual, wanted,
                "producer {producer}'s state disagrees with the log"
            );
        }
        for acknowledged in &self.acknowledged {
            let copies = written
                .iter()
                .filter(|batch| *batch == acknowledged)
                .count();
            assert_eq!(
                copies, 1,
                "acknowledged batch {acknowledged:?} is in the log {copies} times"
            );
        }
    }

    fn produce(&mut self, producer: i64, send: Send, records: usize) -> Result<(), LogError> {
        let client = &mut self.clients[producer as usize];
        let (epoch, first, count) = match send {
            Send::Next => (client.epoch, client.next, records),
            Send::Retry(pick) if !client.sent.is_empty() => client.sent[pick % client.sent.len()],
            Send::Retry(_) => (client.epoch, client.next, records),
            Send::Gap(gap) => (client.epoch, add_sequence(client.next, gap as u32), records),
            Send::Bump => {
                client.epoch += 1;
                client.next = 0;
                (client.epoch, 0, records)
            }
            Send::Stale if client.epoch > 0 => (client.epoch - 1, 0, records),
            Send::Stale => (client.epoch, client.next, records),
        };
        let values: Vec<Vec<u8>> = (0..count)
            .map(|index| {
                format!(
                    "p{producer}-e{epoch}-s{}-{}",
                    add_sequence(first, index as u32),
                    self.next_value
                )
                .into_bytes()
            })
            .collect();
        self.next_value += 1;
        let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(7, value)).collect();
        let info = ProducerInfo {
            producer_id: producer,
            producer_epoch: epoch,
            base_sequence: first,
        };
        let mut bytes = Vec::new();
        batch::encode(&records, info, &mut bytes).expect("encode");
        let last = add_sequence(first, count as u32 - 1);
        let verdict = expected_verdict(
            &expected_state(&self.written()?),
            producer,
            epoch,
            first,
            last,
        );
        let result = self.log().append_batch(&bytes);
        if let Err(error) = &result {
            if !matches!(error, LogError::Sequence(_)) {
                return result.map(|_| ());
            }
        }
        match (&verdict, &result) {
            (Verdict::Append, Ok(appended)) if !appended.duplicate => {
                self.acknowledged.push(Written {
                    producer,
                    epoch,
                    first,
                    last,
                    base_offset: appended.base_offset,
                    last_offset: appended.last_offset,
                });
                let client = &mut self.clients[producer as usize];
                client.sent.push((epoch, first, count));
                if epoch == client.epoch {
                    client.next = add_sequence(last, 1);
                }
            }
            (Verdict::Duplicate(base, end), Ok(appended)) => {
                assert!(appended.duplicate, "a retry was written again");
                assert_eq!((appended.base_offset, appended.last_offset), (*base, *end));
            }
            (Verdict::OutOfOrder, Err(LogError::Sequence(SequenceError::OutOfOrder { .. })))
            | (Verdict::Fenced, Err(LogError::Sequence(SequenceError::InvalidEpoch { .. }))) => {}
            _ => panic!("expected {verdict:?}, the log answered {result:?}"),
        }
        Ok(())
    }

    fn crash_and_recover(&mut self) {
        self.log = None;
        self.disk.crash();
        self.open();
        self.check_state();
    }

    fn apply(&mut self, operation: Operation) {
        match operation {
            Operation::Produce {
                producer,
                send,
                records,
            } => {
                self.produce(producer, send, records)
                    .expect("append on a fault-free disk");
            }
            Operation::Crash => self.crash_and_recover(),
            Operation::CrashDuringProduces { operations } => {
                self.disk.schedule_crash(operations);
                for producer in 0..PRODUCERS {
                    if self.produce(producer, Send::Next, 2).is_err() {
                        break;
                    }
                }
                self.crash_and_recover();
            }
            Operation::Truncate { at } => {
                let log = self.log();
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                let new_end = log
                    .truncate(start + at % (end - start + 1))
                    .expect("truncate");
                self.acknowledged
                    .retain(|batch| batch.last_offset < new_end);
            }
            Operation::Roll => self.log().roll().expect("roll"),
            Operation::CloseAndReopen => {
                self.log().close().expect("close");
                self.log = None;
                self.open();
            }
            Operation::DamageSnapshotsAndReopen => {
                self.log().close().expect("close");
                self.log = None;
                let storage = self.storage();
                for entry in storage.list().expect("list") {
                    if entry.name.ends_with(".producers") {
                        let file = storage
                            .open_file(&entry.name, OpenMode::Existing)
                            .expect("open");
                        let length = file.len().expect("len");
                        file.write_at(&[0xff], length / 2).expect("damage");
                        file.sync().expect("sync");
                    }
                }
                self.open();
            }
        }
        if let Some(log) = &self.log {
            log.check_invariants().expect("invariants");
        }
        self.check_state();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn producer_state_follows_kip_98_across_crashes(
        seed in any::<u64>(),
        segment_bytes in 1024u32..4000,
        operations in proptest::collection::vec(operation(), 1..80),
    ) {
        let mut harness = Harness {
            disk: SimDisk::with_faults(seed, Faults::none()),
            clock: ManualClock::new(1_700_000_000_000),
            config: LogConfig { segment_bytes, index_interval_bytes: 300, ..LogConfig::default() },
            log: None,
            clients: vec![Client::default(); PRODUCERS as usize],
            acknowledged: Vec::new(),
            next_value: 0,
        };
        harness.open();
        for operation in operations {
            harness.apply(operation);
        }
        harness.crash_and_recover();
    }
}
