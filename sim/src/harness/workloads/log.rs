//! The log node, `log-0`: a `weir_log::Broker` served to Kafka clients by
//! the Kafka front-end (`weir_kafka`) on port 9092; the producers and the
//! consumer group that use it run on the client node
//! ([`super::kafka`]). In process, as the seed says: small segments and
//! explicit rolls, size retention applied to a topic while it is written,
//! and a partition truncated while it is written (with its own in-process
//! producer: truncation is a replication layer's operation, not a
//! client's).
//!
//! The checkers know a partition by its index: `events` 0 and 1
//! (consumed), `retained` 0 as 2 (consumed; retention may move its start),
//! `cut` 0 as 3 (truncated; checked by [`check::check_truncated`]).

use std::sync::Arc;
use std::time::Duration;

use madsim::time::{sleep, Instant};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::Storage;
use weir_kafka::{Kafka, KafkaSettings, SingleNode};
use weir_log::{Broker, BrokerError, LogConfig, Partition, Record, TopicConfig};

use super::kafka::KAFKA_PORT;

use super::super::nemesis::Features;
use super::super::{count, note, SharedRef};
use crate::check::{self, LogFinal};

use super::kafka::GROUP;

/// The partitions of the workload: (topic, partition in the topic).
pub(crate) const PARTITIONS: [(&str, u32); 4] =
    [("events", 0), ("events", 1), ("retained", 0), ("cut", 0)];
/// The index of the partition with retention.
pub(crate) const RETAINED: u32 = 2;
/// The index of the truncated partition.
pub(crate) const CUT: u32 = 3;
/// Size retention of `retained`.
const RETENTION_BYTES: u64 = 6 * 1024;

/// The partition indexes the seed writes.
pub(crate) fn active(features: &Features) -> Vec<u32> {
    let mut active = vec![0, 1];
    if features.log_retention {
        active.push(RETAINED);
    }
    if features.log_truncation {
        active.push(CUT);
    }
    active
}

/// The indexes the consumer group reads (and Kafka producers write).
pub(crate) fn consumed_indexes(features: &Features) -> Vec<u32> {
    active(features)
        .into_iter()
        .filter(|index| *index != CUT)
        .collect()
}

fn partition(broker: &Broker, index: u32) -> Result<Arc<Partition>, BrokerError> {
    let (topic, number) = PARTITIONS[index as usize];
    broker.partition(topic, number)
}

fn topic_config(topic: &str, features: &Features) -> TopicConfig {
    let mut log = LogConfig::default();
    if features.log_small_segments || topic != "events" {
        log.segment_bytes = 2048;
        log.index_interval_bytes = 256;
    }
    if topic == "retained" {
        log.retention_ms = None;
        log.retention_bytes = Some(RETENTION_BYTES);
    }
    TopicConfig {
        partitions: if topic == "events" { 2 } else { 1 },
        log: Some(log),
    }
}

/// Runs the Kafka front-end and the in-process workload on a freshly
/// opened broker until the node is killed.
pub(crate) async fn run_on_node(
    broker: Arc<Broker>,
    storage: Arc<dyn Storage>,
    shared: SharedRef,
    features: Features,
    seed: u64,
    started: Instant,
) {
    let mut topics = vec!["events"];
    topics.extend(features.log_retention.then_some("retained"));
    topics.extend(features.log_truncation.then_some("cut"));
    for topic in topics {
        match broker.create_topic(topic, topic_config(topic, &features)) {
            Ok(()) | Err(BrokerError::TopicExists { .. }) => {}
            Err(error) => {
                note(
                    &shared,
                    started,
                    format!("log-0 cannot create topic {topic}: {error}"),
                );
                shared.lock().expect("shared").log_failed_start = true;
                return;
            }
        }
    }
    let assignment = {
        let mut shared = shared.lock().expect("shared");
        shared.log_assignment += 1;
        shared.log_broker = Some(Arc::clone(&broker));
        shared.log_assignment
    };
    note(
        &shared,
        started,
        format!("log-0 up (assignment {assignment})"),
    );
    let rng = |salt: u64| Xoshiro256PlusPlus::seed_from_u64(seed ^ (salt << 40) ^ assignment);
    if features.log_truncation {
        let (producer, shared_producer, producer_rng) = (
            Arc::clone(&broker),
            Arc::clone(&shared),
            rng(u64::from(CUT) + 1),
        );
        tokio::spawn(async move { produce(producer, CUT, shared_producer, producer_rng).await });
        let (broker, shared, rng) = (Arc::clone(&broker), Arc::clone(&shared), rng(10));
        tokio::spawn(async move { truncate(broker, shared, rng).await });
    }
    if features.log_retention {
        let (broker, shared, rng) = (Arc::clone(&broker), Arc::clone(&shared), rng(11));
        tokio::spawn(async move { retain(broker, shared, rng).await });
    }
    serve_kafka(broker, storage, shared, started).await;
}

/// Serves the broker to Kafka clients on port 9092 until the node dies.
async fn serve_kafka(
    broker: Arc<Broker>,
    storage: Arc<dyn Storage>,
    shared: SharedRef,
    started: Instant,
) {
    let own = match storage.open_or_create_dir("kafka") {
        Ok(own) => own,
        Err(error) => {
            note(
                &shared,
                started,
                format!("log-0 cannot open its Kafka state: {error}"),
            );
            shared.lock().expect("shared").log_failed_start = true;
            return;
        }
    };
    let kafka = match Kafka::new(
        broker,
        own,
        KafkaSettings::default(),
        Box::new(SingleNode::new("10.0.0.3", KAFKA_PORT)),
    ) {
        Ok(kafka) => Arc::new(kafka),
        Err(error) => {
            note(
                &shared,
                started,
                format!("log-0 cannot start the Kafka front-end: {error}"),
            );
            let mut shared = shared.lock().expect("shared");
            shared.log_failed_start = true;
            if matches!(error, weir_kafka::producer_ids::ProducerIdError::Corrupt(_)) {
                // Its disk never stores corrupt bytes (only reads flip).
                shared
                    .start_failures
                    .push(format!("log-0 called good data corrupt: {error}"));
            } else if shared.healed {
                shared
                    .start_failures
                    .push(format!("log-0 Kafka front-end: {error}"));
            }
            return;
        }
    };
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", KAFKA_PORT)).await {
        Ok(listener) => listener,
        Err(error) => {
            note(&shared, started, format!("log-0 cannot listen: {error}"));
            return;
        }
    };
    let shutdown = weir_kafka::shutdown::Shutdown::new();
    weir_kafka::server::serve(kafka, listener, shutdown).await;
}

/// Runs the log engine's own invariant checks on every partition and keeps
/// what they report.
pub(crate) fn check_log_invariants(broker: &Broker, reports: &mut Vec<String>) {
    for index in 0..PARTITIONS.len() as u32 {
        if let Ok(log) = partition(broker, index) {
            if let Err(error) = log.check_invariants() {
                reports.push(format!("partition {index}: {error}"));
            }
        }
    }
}

async fn produce(broker: Arc<Broker>, index: u32, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    let (topic, number) = PARTITIONS[index as usize];
    let mut sequence = 0u64;
    let tag: u32 = rng.random();
    loop {
        sleep(Duration::from_millis(rng.random_range(1..30))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let values: Vec<String> = (0..rng.random_range(1..=4))
            .map(|_| {
                sequence += 1;
                format!("l{index}-{tag:x}-{sequence}")
            })
            .collect();
        shared
            .lock()
            .expect("shared")
            .log_history
            .sent
            .extend(values.iter().cloned());
        let now = broker.clock().now_ms() as i64;
        let records: Vec<Record> = values
            .iter()
            .map(|value| Record::value(now, value.as_bytes()))
            .collect();
        let segments = partition(&broker, index)
            .map(|log| log.segment_count())
            .unwrap_or(0);
        let appended = broker.append(topic, number, &records);
        let failed = {
            let mut shared = shared.lock().expect("shared");
            check_log_invariants(&broker, &mut shared.engine_invariants);
            match appended {
                Ok(info) => {
                    shared
                        .log_history
                        .batch_starts
                        .insert((index, info.base_offset));
                    let acknowledged = &mut shared.log_history.acknowledged;
                    for (at, value) in values.into_iter().enumerate() {
                        acknowledged.push((index, info.base_offset + at as u64, value));
                    }
                    if partition(&broker, index).is_ok_and(|log| log.segment_count() > segments) {
                        count(&mut shared.coverage, "log segment rolled by size");
                    }
                    if rng.random_bool(0.01)
                        && partition(&broker, index).is_ok_and(|log| log.roll().is_ok())
                    {
                        count(&mut shared.coverage, "log segment rolled on request");
                    }
                    false
                }
                Err(_) => true,
            }
        };
        if failed {
            // A failed sync fails the partition until the node restarts.
            sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Cuts the partition `cut` a few records below its end now and then. A
/// truncation that returned is acknowledged; one that failed may or may
/// not have happened.
async fn truncate(broker: Arc<Broker>, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    loop {
        sleep(Duration::from_millis(rng.random_range(100..800))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let Ok(log) = partition(&broker, CUT) else {
            continue;
        };
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let target = end.saturating_sub(rng.random_range(0..8)).max(start);
        let result = log.truncate(target);
        let mut shared = shared.lock().expect("shared");
        check_log_invariants(&broker, &mut shared.engine_invariants);
        let before = shared.log_history.acknowledged.len();
        match result {
            Ok(new_end) => {
                if new_end > target.max(start) {
                    shared.engine_invariants.push(format!(
                        "truncate({target}) left the log ending at {new_end}: a cut rounds down to a batch start"
                    ));
                }
                shared.log_history.truncations.push((CUT, new_end, before));
                if new_end < end {
                    count(&mut shared.coverage, "log truncated");
                }
            }
            Err(_) => {
                // A cut that happened went down to the start of the batch
                // holding `target`.
                let rounded = shared
                    .log_history
                    .batch_starts
                    .range(..=(CUT, target))
                    .next_back()
                    .filter(|(at, _)| *at == CUT)
                    .map_or(target, |(_, start)| *start);
                shared
                    .log_history
                    .uncertain_truncations
                    .push((CUT, rounded, before));
            }
        }
    }
}

/// Applies size retention to `retained` now and then, checking Kafka's
/// rule: a segment is deleted only if the log keeps at least the retained
/// size without it.
async fn retain(broker: Arc<Broker>, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    loop {
        sleep(Duration::from_millis(rng.random_range(200..1000))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let Ok(log) = partition(&broker, RETAINED) else {
            continue;
        };
        let before = log.size_bytes();
        let Ok(report) = log.apply_retention() else {
            continue;
        };
        let after = log.size_bytes();
        let mut shared = shared.lock().expect("shared");
        if !report.segments_deleted.is_empty() {
            count(&mut shared.coverage, "log retention deleted segments");
        }
        if after < before.min(RETENTION_BYTES) {
            shared.engine_invariants.push(format!(
                "retention left {after} bytes of {before}, below the retained size {RETENTION_BYTES}"
            ));
        }
    }
}

/// Reads every partition the seed wrote from its start, and the committed
/// offsets.
pub(crate) fn log_final(broker: &Broker, features: &Features) -> Result<LogFinal, String> {
    let mut last = LogFinal::default();
    for index in active(features) {
        let (topic, number) = PARTITIONS[index as usize];
        let log = broker
            .partition(topic, number)
            .map_err(|error| error.to_string())?;
        let mut offset = log.log_start_offset();
        last.log_start.insert(index, offset);
        loop {
            let read = broker
                .read(topic, number, offset, 1 << 20)
                .map_err(|error| error.to_string())?;
            let before = offset;
            for record in read.records() {
                let record = record.map_err(|error| error.to_string())?;
                let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
                last.records.push((index, record.offset, value));
                offset = record.offset + 1;
            }
            if offset == before {
                break;
            }
        }
        let committed = broker
            .committed_offset(GROUP, topic, number)
            .map_err(|error| error.to_string())?
            .map_or(0, |committed| committed.offset);
        last.committed.insert(index, committed);
    }
    Ok(last)
}

/// Whether the consumer has caught up with every consumed partition.
pub(crate) fn consumed_all(last: &LogFinal, features: &Features) -> bool {
    consumed_indexes(features).iter().all(|index| {
        let end = last
            .records
            .iter()
            .filter(|(at, _, _)| at == index)
            .map(|(_, offset, _)| offset + 1)
            .max()
            .unwrap_or_else(|| last.log_start.get(index).copied().unwrap_or(0));
        last.committed.get(index).copied().unwrap_or(0) >= end
    })
}

/// The checks of the log: [`check::check_log`] on the consumed partitions,
/// [`check::check_truncated`] on the truncated one.
pub(crate) fn check(
    history: &check::LogHistory,
    last: &LogFinal,
    features: &Features,
    liveness: bool,
) -> Vec<check::Violation> {
    let mut history = history.clone();
    if features.log_truncation {
        history.truncated_partitions.insert(CUT);
    }
    let mut violations = check::check_log(&history, last, liveness);
    if features.log_truncation {
        violations.extend(check::check_truncated(&history, last, CUT));
    }
    violations
}
