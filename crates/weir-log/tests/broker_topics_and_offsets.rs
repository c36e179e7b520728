//! The broker: topic creation and deletion, routing, limits, and durable
//! consumer-group offsets with their compaction, across crashes.

use std::sync::Arc;

use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::{
    partition_for_key, Broker, BrokerConfig, BrokerError, FlushPolicy, LogConfig, LogError, Record,
    TopicConfig, TopicSettings,
};

fn open(disk: &Arc<SimDisk>, clock: &ManualClock) -> Broker {
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let (broker, _) =
        Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default()).expect("open");
    broker
}

fn fixture() -> (Arc<SimDisk>, ManualClock) {
    (SimDisk::new(3), ManualClock::new(1_700_000_000_000))
}

#[test]
fn topics_are_created_validated_listed_and_survive_a_crash() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("orders", TopicConfig::with_partitions(3))
        .expect("create");
    let custom = LogConfig {
        flush: FlushPolicy::Never,
        segment_bytes: 8192,
        ..LogConfig::default()
    };
    broker
        .create_topic(
            "metrics",
            TopicConfig {
                partitions: 1,
                log: Some(custom.clone()),
            },
        )
        .expect("create");
    assert!(matches!(
        broker.create_topic("orders", TopicConfig::with_partitions(1)),
        Err(BrokerError::TopicExists { .. })
    ));
    assert!(matches!(
        broker.create_topic("bad/name", TopicConfig::with_partitions(1)),
        Err(BrokerError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        broker.create_topic("zero", TopicConfig::with_partitions(0)),
        Err(BrokerError::InvalidPartitionCount { count: 0, .. })
    ));
    assert!(matches!(
        broker.create_topic(
            "tiny",
            TopicConfig {
                partitions: 1,
                log: Some(LogConfig {
                    segment_bytes: 1,
                    ..LogConfig::default()
                })
            }
        ),
        Err(BrokerError::InvalidTopicConfig { .. })
    ));
    assert!(matches!(
        broker.append("orders", 3, &[Record::value(1, b"x")]),
        Err(BrokerError::UnknownPartition { partitions: 3, .. })
    ));
    assert!(matches!(
        broker.append("nope", 0, &[Record::value(1, b"x")]),
        Err(BrokerError::UnknownTopic { .. })
    ));
    broker
        .append("orders", 2, &[Record::value(1, b"kept")])
        .expect("append");
    drop(broker);

    disk.crash();
    let broker = open(&disk, &clock);
    let names: Vec<String> = broker.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["metrics", "orders"]);
    assert_eq!(broker.topic("orders").expect("topic").partitions, 3);
    assert_eq!(broker.topic("metrics").expect("topic").log, custom);
    let read = broker.read("orders", 2, 0, 1000).expect("read");
    assert_eq!(
        read.records().next().expect("record").expect("valid").value,
        Some(&b"kept"[..])
    );
}

#[test]
fn records_route_by_key_like_kafka_and_keyless_ones_rotate() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("t", TopicConfig::with_partitions(4))
        .expect("create");
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    let records: Vec<Record<'_>> = keys.iter().map(|key| Record::keyed(1, key, b"v")).collect();
    let produced = broker.produce("t", &records).expect("produce");
    let total: u32 = produced.iter().map(|batch| batch.info.record_count).sum();
    assert_eq!(total, 40);
    for batch in &produced {
        let read = broker.read("t", batch.partition, 0, 1 << 20).expect("read");
        for record in read.records() {
            let record = record.expect("record");
            let key = record.key.expect("key");
            assert_eq!(partition_for_key(key, 4), batch.partition);
        }
    }
    let mut partitions = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let produced = broker
            .produce("t", &[Record::value(1, b"keyless")])
            .expect("produce");
        partitions.insert(produced[0].partition);
    }
    assert_eq!(
        partitions.len(),
        4,
        "keyless records rotate over partitions"
    );
}

#[test]
fn committed_offsets_are_durable_atomic_and_compacted_on_open() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("a", TopicConfig::with_partitions(2))
        .expect("create");
    broker
        .create_topic("b", TopicConfig::with_partitions(1))
        .expect("create");
    for offset in 0..50u64 {
        broker
            .commit_offset("g1", "a", 0, offset, "meta")
            .expect("commit");
    }
    broker
        .commit_offsets("g1", &[("a", 1, 7, ""), ("b", 0, 9, "x")])
        .expect("commit");
    broker.commit_offset("g2", "a", 0, 3, "").expect("commit");
    assert!(matches!(
        broker.commit_offset("", "a", 0, 1, ""),
        Err(BrokerError::InvalidGroupId { .. })
    ));
    assert!(matches!(
        broker.commit_offset("g1", "a", 9, 1, ""),
        Err(BrokerError::UnknownPartition { .. })
    ));
    let long = "m".repeat(5000);
    assert!(matches!(
        broker.commit_offset("g1", "a", 0, 1, &long),
        Err(BrokerError::MetadataTooLarge { .. })
    ));
    drop(broker);

    disk.crash();
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let (broker, recovery) =
        Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default()).expect("open");
    assert_eq!(recovery.offsets.records_replayed, 53);
    assert_eq!(recovery.offsets.live_offsets, 4);
    assert!(recovery.offsets.compacted);
    let committed = broker
        .committed_offset("g1", "a", 0)
        .expect("fetch")
        .expect("committed");
    assert_eq!(
        (committed.offset, committed.metadata.as_str()),
        (49, "meta")
    );
    assert_eq!(committed.commit_timestamp_ms, 1_700_000_000_000);
    assert_eq!(broker.committed_offsets("g1").expect("group").len(), 3);
    assert_eq!(broker.committed_offset("g3", "a", 0).expect("fetch"), None);
    drop(broker);

    // After compaction the log holds only the live entries.
    disk.crash();
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let (broker, recovery) =
        Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default()).expect("open");
    assert_eq!(recovery.offsets.records_replayed, 4);
    assert!(!recovery.offsets.compacted);
    assert_eq!(broker.delete_group_offsets("g1").expect("delete"), 3);
    assert_eq!(broker.committed_offset("g1", "a", 0).expect("fetch"), None);
    assert_eq!(
        broker
            .committed_offset("g2", "a", 0)
            .expect("fetch")
            .map(|c| c.offset),
        Some(3)
    );
}

#[test]
fn a_crash_in_the_middle_of_the_offsets_compaction_loses_no_commit() {
    for operations in 1..60 {
        let (disk, clock) = fixture();
        let broker = open(&disk, &clock);
        broker
            .create_topic("t", TopicConfig::with_partitions(2))
            .expect("create");
        for offset in 0..20u64 {
            broker
                .commit_offset("g", "t", (offset % 2) as u32, offset, "")
                .expect("commit");
        }
        broker
            .commit_offset("other", "t", 0, 5, "m")
            .expect("commit");
        drop(broker);
        disk.crash();
        // The next open compacts; the power fails somewhere inside it.
        disk.schedule_crash(operations);
        let storage: Arc<dyn Storage> = Arc::new(disk.root());
        let _ = Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default());
        disk.crash();
        let broker = open(&disk, &clock);
        let committed = |group: &str, partition: u32| {
            broker
                .committed_offset(group, "t", partition)
                .expect("fetch")
                .map(|committed| committed.offset)
        };
        assert_eq!(
            committed("g", 0),
            Some(18),
            "crash after {operations} operations"
        );
        assert_eq!(
            committed("g", 1),
            Some(19),
            "crash after {operations} operations"
        );
        assert_eq!(
            committed("other", 0),
            Some(5),
            "crash after {operations} operations"
        );
    }
}

#[test]
fn deleting_a_topic_removes_its_data_and_offsets_even_across_a_crash() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("gone", TopicConfig::with_partitions(2))
        .expect("create");
    broker
        .create_topic("stays", TopicConfig::with_partitions(1))
        .expect("create");
    broker
        .append("gone", 0, &[Record::value(1, b"x")])
        .expect("append");
    broker.commit_offset("g", "gone", 0, 1, "").expect("commit");
    broker
        .commit_offset("g", "stays", 0, 5, "")
        .expect("commit");
    broker.delete_topic("gone").expect("delete");
    assert!(matches!(
        broker.delete_topic("gone"),
        Err(BrokerError::UnknownTopic { .. })
    ));
    assert!(matches!(
        broker.read("gone", 0, 0, 10),
        Err(BrokerError::UnknownTopic { .. })
    ));
    assert_eq!(
        broker.committed_offset("g", "gone", 0).expect("fetch"),
        None
    );
    drop(broker);
    disk.crash();
    let broker = open(&disk, &clock);
    assert_eq!(broker.topics().len(), 1);
    assert_eq!(
        broker
            .committed_offset("g", "stays", 0)
            .expect("fetch")
            .map(|c| c.offset),
        Some(5)
    );
    // The name can be reused, empty.
    broker
        .create_topic("gone", TopicConfig::with_partitions(1))
        .expect("create again");
    assert_eq!(
        broker
            .partition("gone", 0)
            .expect("partition")
            .log_end_offset(),
        0
    );
}

#[test]
fn a_topic_creation_interrupted_by_a_crash_leaves_all_of_it_or_none() {
    let mut outcomes = std::collections::BTreeSet::new();
    for operations in 1..40 {
        let (disk, clock) = fixture();
        let broker = open(&disk, &clock);
        disk.schedule_crash(operations);
        let created = broker
            .create_topic("t", TopicConfig::with_partitions(3))
            .is_ok();
        drop(broker);
        disk.crash();
        let broker = open(&disk, &clock);
        match broker.topic("t") {
            Ok(topic) => {
                assert_eq!(topic.partitions, 3, "crash after {operations} operations");
                for partition in 0..3 {
                    broker
                        .append("t", partition, &[Record::value(1, b"x")])
                        .expect("append");
                }
                outcomes.insert("whole");
            }
            Err(BrokerError::UnknownTopic { .. }) => {
                assert!(!created, "a creation that succeeded was lost");
                broker
                    .create_topic("t", TopicConfig::with_partitions(3))
                    .expect("the name is free");
                outcomes.insert("absent");
            }
            Err(error) => panic!("crash after {operations} operations: {error}"),
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both outcomes were reached: {outcomes:?}"
    );
}

#[test]
fn a_clean_close_reopens_every_partition_without_scanning() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("t", TopicConfig::with_partitions(3))
        .expect("create");
    for partition in 0..3 {
        broker
            .append("t", partition, &[Record::value(1, b"x")])
            .expect("append");
    }
    broker.close().expect("close");
    assert!(matches!(
        broker.append("t", 0, &[Record::value(1, b"x")]),
        Err(BrokerError::Log {
            source: LogError::Closed,
            ..
        })
    ));
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let (_, recovery) =
        Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default()).expect("open");
    assert_eq!(recovery.partitions.len(), 3);
    for report in recovery.partitions.values() {
        assert!(report.clean_shutdown);
        assert_eq!(report.segments_scanned, 0);
    }
}

/// Found by the simulator (weir-sim seed 570): a topic creation whose last
/// directory sync failed leaves the topic visible but not durable; the
/// broker opened next (a process restart, no power loss) used it and
/// acknowledged appends, and the next power loss took the topic with them.
/// Opening a broker now makes every directory entry it finds durable.
#[test]
fn a_topic_left_by_a_failed_creation_is_made_durable_when_opened() {
    let mut reached = 0;
    for seed in 0..400 {
        let disk = SimDisk::new(seed);
        let clock = ManualClock::new(1_700_000_000_000);
        drop(open(&disk, &clock));
        disk.set_faults(weir_io::Faults {
            sync_failure: 0.3,
            ..weir_io::Faults::default()
        });
        let storage: Arc<dyn Storage> = Arc::new(disk.root());
        let Ok((broker, _)) =
            Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default())
        else {
            continue;
        };
        // The case: everything of the creation worked but the last sync of
        // the topics directory, so the topic is visible, not durable.
        match broker.create_topic("events", TopicConfig::with_partitions(1)) {
            Err(error) if error.to_string().contains("syncing topics") => reached += 1,
            _ => continue,
        }
        drop(broker);
        disk.set_faults(weir_io::Faults::default());
        let broker = open(&disk, &clock);
        match broker.create_topic("events", TopicConfig::with_partitions(1)) {
            Ok(()) | Err(BrokerError::TopicExists { .. }) => {}
            Err(error) => panic!("seed {seed}: create: {error}"),
        }
        let appended = broker
            .append("events", 0, &[Record::value(1, b"acknowledged")])
            .expect("append");
        drop(broker);
        disk.crash();
        let broker = open(&disk, &clock);
        let read = broker
            .read("events", 0, appended.base_offset, 1 << 20)
            .unwrap_or_else(|error| panic!("seed {seed}: the topic is gone: {error}"));
        let values: Vec<Vec<u8>> = read
            .records()
            .map(|record| record.expect("record").value.unwrap_or_default().to_vec())
            .collect();
        assert_eq!(values, vec![b"acknowledged".to_vec()], "seed {seed}");
    }
    assert!(reached > 0, "no seed failed exactly the last sync");
}

/// A read that flips a bit while the broker opens is not a damaged topic:
/// every open sees the topics, their partitions and the commits as they
/// were written (the files are read by the agreement rule before they
/// are judged).
#[test]
fn reads_that_flip_bits_while_opening_change_nothing() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    for (name, partitions) in [("orders", 3), ("metrics", 1), ("audit", 2)] {
        broker
            .create_topic(name, TopicConfig::with_partitions(partitions))
            .expect("create");
    }
    broker
        .commit_offset("g", "orders", 2, 17, "m")
        .expect("commit");
    let topics = broker.topics();
    drop(broker);
    disk.set_faults(weir_io::Faults {
        read_corruption: 0.2,
        ..weir_io::Faults::none()
    });
    for attempt in 0..30 {
        let before = disk.stats().read_corruptions;
        let broker = open(&disk, &clock);
        assert_eq!(broker.topics(), topics, "open {attempt}");
        let committed = broker.committed_offset("g", "orders", 2).expect("fetch");
        assert_eq!(committed.map(|c| c.offset), Some(17), "open {attempt}");
        assert!(
            disk.stats().read_corruptions > before,
            "open {attempt} saw no flip"
        );
    }
}

/// `topic.meta` is kept in two files: rot in either, or the loss of one
/// (a topic from before the copy), costs nothing (the other is written
/// again); rot in both refuses the start as corrupt, never opening the
/// topic with settings it was not given.
#[test]
fn a_topic_metadata_copy_that_rots_is_written_again_from_the_other() {
    let (disk, clock) = fixture();
    let settings = LogConfig {
        segment_bytes: 1 << 20,
        retention_ms: Some(60_000),
        ..LogConfig::default()
    };
    let broker = open(&disk, &clock);
    broker
        .create_topic(
            "kept",
            TopicConfig {
                partitions: 3,
                log: Some(settings.clone()),
            },
        )
        .expect("create");
    drop(broker);
    let (first, copy) = ("topics/kept/topic.meta", "topics/kept/topic.meta.copy");
    let remove_copy = || {
        let topics = disk.root().open_dir("topics").expect("the topics");
        let topic = topics.open_dir("kept").expect("the topic");
        topic.remove_file("topic.meta.copy").expect("a removal");
        topic.sync_dir().expect("a sync");
    };
    for damage in ["first", "copy", "copy lost"] {
        disk.crash();
        match damage {
            "first" => disk.corrupt(first, 20, 0x08).expect("a flip"),
            "copy" => disk.corrupt(copy, 3, 0x40).expect("a flip"),
            _ => remove_copy(),
        }
        let broker = open(&disk, &clock);
        let topic = broker.topic("kept").expect("the topic");
        assert_eq!(topic.partitions, 3, "{damage}");
        assert_eq!(
            (topic.log.segment_bytes, topic.log.retention_ms),
            (settings.segment_bytes, settings.retention_ms),
            "{damage}"
        );
        drop(broker);
    }
    // Both copies again, whole: a flip in each refuses the start.
    disk.crash();
    disk.corrupt(first, 20, 0x08).expect("a flip");
    disk.corrupt(copy, 25, 0x01).expect("a flip");
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let refused = Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default());
    assert!(
        matches!(refused, Err(BrokerError::CorruptTopicMetadata { .. })),
        "{:?}",
        refused.map(|_| ())
    );
}

/// Reads that flip bits (30 % of them) never refuse a good topic: both
/// copies of `topic.meta` are read by the agreement rule, and every open
/// finds the topic as it was created.
#[test]
fn flipped_reads_never_refuse_a_topic() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("steady", TopicConfig::with_partitions(2))
        .expect("create");
    drop(broker);
    disk.set_faults(weir_io::Faults {
        read_corruption: 0.3,
        ..weir_io::Faults::none()
    });
    for attempt in 0..40 {
        disk.crash();
        let storage: Arc<dyn Storage> = Arc::new(disk.root());
        let (broker, _) = Broker::open(storage, Arc::new(clock.clone()), BrokerConfig::default())
            .unwrap_or_else(|error| panic!("open {attempt}: {error}"));
        assert_eq!(broker.topic("steady").expect("the topic").partitions, 2);
    }
    assert!(disk.stats().read_corruptions > 20);
}

/// Kafka's CreatePartitions: a topic grows, the new partitions take
/// records at once and keys route by the new count; it never shrinks, and
/// it survives a crash.
#[test]
fn partitions_added_to_a_topic_take_records_and_survive_a_crash() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_topic("grows", TopicConfig::with_partitions(2))
        .expect("create");
    for partition in 0..2 {
        broker
            .append("grows", partition, &[Record::value(1, b"before")])
            .expect("append");
    }
    broker.add_partitions("grows", 5).expect("add");
    assert_eq!(broker.topic("grows").expect("the topic").partitions, 5);
    for partition in 0..5 {
        broker
            .append("grows", partition, &[Record::value(2, b"after")])
            .expect("append");
    }
    for refused in [5, 4, 1, 0, weir_log::PARTITIONS_PER_TOPIC_MAX + 1] {
        let error = broker
            .add_partitions("grows", refused)
            .expect_err("refused");
        assert!(
            matches!(error, BrokerError::PartitionsNotAdded { current: 5, .. }),
            "{refused}: {error}"
        );
    }
    assert!(matches!(
        broker.add_partitions("absent", 3),
        Err(BrokerError::UnknownTopic { .. })
    ));
    broker.flush().expect("flush");
    drop(broker);
    disk.crash();
    let broker = open(&disk, &clock);
    assert_eq!(broker.topic("grows").expect("the topic").partitions, 5);
    for partition in 0..5 {
        let expected = if partition < 2 { 2 } else { 1 };
        let log = broker.partition("grows", partition).expect("partition");
        assert_eq!(log.log_end_offset(), expected, "partition {partition}");
    }
    let stored = |file: &str| {
        let topic = disk
            .root()
            .open_dir("topics")
            .and_then(|t| t.open_dir("grows"));
        weir_io::read_whole_file(topic.expect("the topic").as_ref(), file).expect("a read")
    };
    assert_eq!(stored("topic.meta"), stored("topic.meta.copy"));
}

/// A crash anywhere in an addition leaves the topic with its old count
/// (and the addition not acknowledged) or with the new one, every
/// partition usable; a second addition after the old count works.
#[test]
fn a_partition_addition_interrupted_by_a_crash_leaves_all_of_it_or_none() {
    let mut outcomes = std::collections::BTreeSet::new();
    for operations in 1..40 {
        let (disk, clock) = fixture();
        let broker = open(&disk, &clock);
        broker
            .create_topic("t", TopicConfig::with_partitions(2))
            .expect("create");
        disk.schedule_crash(operations);
        let added = broker.add_partitions("t", 4).is_ok();
        drop(broker);
        disk.crash();
        let broker = open(&disk, &clock);
        let partitions = broker.topic("t").expect("the topic").partitions;
        match partitions {
            4 => {
                outcomes.insert("whole");
            }
            2 => {
                assert!(!added, "an addition that succeeded was lost");
                broker.add_partitions("t", 4).expect("added again");
                outcomes.insert("none");
            }
            other => panic!("crash after {operations} operations: {other} partitions"),
        }
        for partition in 0..4 {
            broker
                .append("t", partition, &[Record::value(1, b"x")])
                .expect("append");
        }
        drop(broker);
        disk.crash();
        let broker = open(&disk, &clock);
        assert_eq!(broker.topic("t").expect("the topic").partitions, 4);
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both outcomes were reached: {outcomes:?}"
    );
}

fn small_segments() -> TopicConfig {
    TopicConfig {
        partitions: 2,
        log: Some(LogConfig {
            segment_bytes: 4096,
            retention_ms: None,
            ..LogConfig::default()
        }),
    }
}

/// A topic's changeable settings (Kafka's AlterConfigs) take effect at
/// once on every partition, are refused whole when out of range, and are
/// what the topic reopens with after a crash.
#[test]
fn changed_topic_settings_apply_at_once_and_survive_a_crash() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker.create_topic("t", small_segments()).expect("create");
    let big = vec![7u8; 3000];
    broker
        .append("t", 1, &[Record::value(1, &big)])
        .expect("a 3000-byte record fits the default batch limit");
    let before = broker.topic("t").expect("the topic").log.settings();
    let smaller = TopicSettings {
        max_batch_bytes: 1024,
        retention_bytes: Some(8192),
        ..before
    };
    broker.change_topic_settings("t", smaller).expect("changed");
    assert_eq!(
        broker.topic("t").expect("the topic").log.settings(),
        smaller
    );
    for partition in 0..2 {
        let log = broker.partition("t", partition).expect("partition");
        assert_eq!(log.config().settings(), smaller, "partition {partition}");
        assert!(
            matches!(
                broker.append("t", partition, &[Record::value(1, &big)]),
                Err(BrokerError::Log {
                    source: LogError::BatchTooLarge { max: 1024, .. },
                    ..
                })
            ),
            "partition {partition} takes the new batch limit"
        );
    }
    let refused = TopicSettings {
        segment_bytes: 10,
        ..smaller
    };
    assert!(matches!(
        broker.change_topic_settings("t", refused),
        Err(BrokerError::InvalidTopicConfig { .. })
    ));
    assert!(matches!(
        broker.change_topic_settings("absent", smaller),
        Err(BrokerError::UnknownTopic { .. })
    ));
    assert_eq!(
        broker.topic("t").expect("the topic").log.settings(),
        smaller
    );
    drop(broker);
    disk.crash();
    let broker = open(&disk, &clock);
    assert_eq!(
        broker.topic("t").expect("the topic").log.settings(),
        smaller
    );
    let log = broker.partition("t", 0).expect("partition");
    assert_eq!(log.config().settings(), smaller);
}

/// Retention and rolls follow the settings as they are when they run: a
/// log kept whole is cut once `retention.bytes` is set, and segments roll
/// at the new `segment.bytes`.
#[test]
fn retention_and_rolls_follow_changed_settings() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker.create_topic("t", small_segments()).expect("create");
    let record = vec![1u8; 900];
    for _ in 0..20 {
        broker
            .append("t", 0, &[Record::value(1, &record)])
            .expect("append");
    }
    let log = broker.partition("t", 0).expect("partition");
    let segments = log.segment_count();
    assert!(segments >= 4, "{segments} segments");
    assert!(broker.apply_retention().expect("retention").is_empty());
    assert_eq!(log.log_start_offset(), 0);
    let settings = broker.topic("t").expect("the topic").log.settings();
    let bounded = TopicSettings {
        retention_bytes: Some(4096),
        segment_bytes: 64 * 1024,
        ..settings
    };
    broker.change_topic_settings("t", bounded).expect("changed");
    let cut = broker.apply_retention().expect("retention");
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert!(log.log_start_offset() > 0);
    let left = log.segment_count();
    for _ in 0..20 {
        broker
            .append("t", 0, &[Record::value(1, &record)])
            .expect("append");
    }
    assert!(
        log.segment_count() <= left + 1,
        "20 records of 900 bytes fit one 64 KiB segment: {} segments, {left} before",
        log.segment_count()
    );
}

/// A crash anywhere in a change leaves the old settings (and the change
/// not acknowledged) or the new ones; never a topic that does not open.
#[test]
fn a_settings_change_interrupted_by_a_crash_leaves_the_old_or_the_new() {
    let mut outcomes = std::collections::BTreeSet::new();
    for operations in 1..30 {
        let (disk, clock) = fixture();
        let broker = open(&disk, &clock);
        broker.create_topic("t", small_segments()).expect("create");
        let old = broker.topic("t").expect("the topic").log.settings();
        let new = TopicSettings {
            retention_ms: Some(60_000),
            ..old
        };
        disk.schedule_crash(operations);
        let changed = broker.change_topic_settings("t", new).is_ok();
        drop(broker);
        disk.crash();
        let broker = open(&disk, &clock);
        let settings = broker.topic("t").expect("the topic").log.settings();
        if settings == new {
            outcomes.insert("new");
        } else {
            assert_eq!(settings, old, "crash after {operations} operations");
            assert!(!changed, "a change that succeeded was lost");
            outcomes.insert("old");
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both outcomes were reached: {outcomes:?}"
    );
}

/// A topic's identity (`create_identified_topic`) is written with its
/// metadata and kept as partitions are added and settings change, across
/// crashes; a topic created without one has id 0, and a topic deleted and
/// created again has the new one's.
#[test]
fn a_topic_keeps_its_identity_across_changes_and_crashes() {
    let (disk, clock) = fixture();
    let broker = open(&disk, &clock);
    broker
        .create_identified_topic("t", TopicConfig::with_partitions(1), 41)
        .expect("create");
    broker
        .create_topic("plain", TopicConfig::with_partitions(1))
        .expect("create");
    broker.add_partitions("t", 3).expect("grown");
    let settings = TopicSettings {
        retention_ms: Some(60_000),
        ..broker.topic("t").expect("the topic").log.settings()
    };
    broker
        .change_topic_settings("t", settings)
        .expect("changed");
    drop(broker);
    disk.crash();
    let broker = open(&disk, &clock);
    let topic = broker.topic("t").expect("the topic");
    assert_eq!((topic.id, topic.partitions), (41, 3));
    assert_eq!(topic.log.retention_ms, Some(60_000));
    assert_eq!(broker.topic("plain").expect("the topic").id, 0);
    broker.delete_topic("t").expect("deleted");
    broker
        .create_identified_topic("t", TopicConfig::with_partitions(1), 57)
        .expect("created again");
    drop(broker);
    disk.crash();
    let broker = open(&disk, &clock);
    assert_eq!(broker.topic("t").expect("the topic").id, 57);
}
