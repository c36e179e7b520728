//! The log as a replication layer drives it: writes that do not wait for
//! the local sync, syncs the owner drives, a high watermark the owner sets,
//! reads at either isolation, a leader's batches appended with the leader's
//! offsets and epoch, leader epochs and their end offsets, a follower that
//! finds where its log diverged and cuts it there, and truncations that a
//! crash at any point leaves at the old or the new end, with the epochs and
//! the producers' state agreeing.

use std::sync::Arc;

use weir_io::{Faults, ManualClock, OpenMode, SimDisk, Storage};
use weir_log::{
    EpochEntry, FlushPolicy, HighWatermarkPolicy, Isolation, LogConfig, LogError, Partition,
    ProducerInfo, Record,
};

fn owned_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        high_watermark: HighWatermarkPolicy::SetByOwner,
        ..LogConfig::default()
    }
}

struct Node {
    disk: Arc<SimDisk>,
    config: LogConfig,
}

impl Node {
    fn new(seed: u64, config: LogConfig) -> Self {
        Self {
            disk: SimDisk::with_faults(seed, Faults::none()),
            config,
        }
    }

    fn storage(&self) -> Arc<dyn Storage> {
        self.disk
            .root()
            .open_or_create_dir("partition")
            .expect("directory")
    }

    fn open(&self) -> Result<Partition, LogError> {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        Partition::open(self.storage(), clock, self.config.clone()).map(|(log, _)| log)
    }
}

fn values(log: &Partition, isolation: Isolation) -> Vec<(u64, Vec<u8>)> {
    let mut found = Vec::new();
    let mut next = log.log_start_offset();
    loop {
        let read = log.read_with(next, 4096, isolation).expect("read");
        for record in read.records() {
            let record = record.expect("record");
            found.push((record.offset, record.value.expect("value").to_vec()));
        }
        if read.info.next_offset == next {
            return found;
        }
        next = read.info.next_offset;
    }
}

fn append(log: &Partition, value: &str) -> u64 {
    log.write(&[Record::value(1, value.as_bytes())], ProducerInfo::NONE)
        .expect("write")
        .base_offset
}

#[test]
fn writes_return_before_the_sync_that_the_owner_drives() {
    let node = Node::new(1, owned_config());
    let log = node.open().expect("open");
    for index in 0..5 {
        assert_eq!(append(&log, &format!("v{index}")), index);
    }
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.durable_offset(), 0, "nothing synced yet");
    assert_eq!(log.sync().expect("sync"), 5);
    assert_eq!(log.durable_offset(), 5);
    log.check_invariants().expect("invariants");
    // A crash keeps what the owner synced.
    append(&log, "unsynced");
    drop(log);
    node.disk.crash();
    let log = node.open().expect("reopen");
    assert!(log.log_end_offset() >= 5);
}

#[test]
fn readers_see_up_to_the_high_watermark_the_owner_sets() {
    let node = Node::new(2, owned_config());
    let log = node.open().expect("open");
    for index in 0..6 {
        append(&log, &format!("v{index}"));
    }
    assert_eq!(log.high_watermark(), 0, "nothing committed yet");
    assert!(values(&log, Isolation::Committed).is_empty());
    assert_eq!(values(&log, Isolation::Uncommitted).len(), 6);
    log.set_high_watermark(4);
    let committed = values(&log, Isolation::Committed);
    assert_eq!(
        committed
            .iter()
            .map(|(offset, _)| *offset)
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(matches!(
        log.read(5, 100),
        Err(LogError::OffsetOutOfRange {
            high_watermark: 4,
            ..
        })
    ));
    // The high watermark may pass what is durable here (a quorum has it).
    assert_eq!(log.durable_offset(), 0);
    log.check_invariants().expect("invariants");
    // A truncation never leaves it above the log end.
    log.truncate(2).expect("truncate");
    assert_eq!(log.high_watermark(), 2);
    log.check_invariants().expect("invariants");
}

#[test]
#[should_panic(expected = "past the log end")]
fn a_high_watermark_past_the_log_end_is_a_bug_of_the_owner() {
    let log = Node::new(3, owned_config()).open().expect("open");
    append(&log, "only");
    log.set_high_watermark(2);
}

#[test]
#[should_panic(expected = "moved back")]
fn a_high_watermark_that_moves_back_is_a_bug_of_the_owner() {
    let log = Node::new(4, owned_config()).open().expect("open");
    append(&log, "a");
    append(&log, "b");
    log.set_high_watermark(2);
    log.set_high_watermark(1);
}

/// The Kafka batches of `log` from `from` on, uncommitted included.
fn batches_from(log: &Partition, from: u64) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut next = from;
    while next < log.log_end_offset() {
        let read = log
            .read_with(next, 1 << 20, Isolation::Uncommitted)
            .expect("read");
        for batch in read.batches() {
            if batch.header().base_offset >= next {
                found.push(batch.bytes().to_vec());
            }
        }
        next = read.info.next_offset;
    }
    found
}

#[test]
fn a_follower_takes_the_leaders_batches_with_their_offsets_and_epochs() {
    let leader = Node::new(5, owned_config()).open().expect("open");
    let follower = Node::new(6, owned_config()).open().expect("open");
    leader.set_leader_epoch(3).expect("epoch");
    for index in 0..4 {
        append(&leader, &format!("e3-{index}"));
    }
    leader.set_leader_epoch(5).expect("epoch");
    append(&leader, "e5-0");
    for batch in batches_from(&leader, 0) {
        let info = follower.append_replicated(&batch).expect("replicate");
        assert!(!info.duplicate);
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(
        follower.leader_epochs(),
        [
            EpochEntry {
                epoch: 3,
                start_offset: 0
            },
            EpochEntry {
                epoch: 5,
                start_offset: 4
            }
        ]
    );
    assert_eq!(follower.epoch_end_offset(3), Some((3, 4)));
    assert_eq!(follower.epoch_end_offset(4), Some((3, 4)));
    assert_eq!(follower.epoch_end_offset(5), Some((5, 5)));
    assert_eq!(follower.epoch_end_offset(2), None);
    follower
        .verify()
        .expect("every batch's epoch is in the epoch file");
    // A batch that does not continue the log, or goes back in epochs, is refused.
    let again = batches_from(&leader, 4).remove(0);
    assert!(matches!(
        follower.append_replicated(&again),
        Err(LogError::NotAtLogEnd {
            expected: 5,
            found: 4
        })
    ));
    let mut old = batches_from(&leader, 0).remove(0);
    old[..8].copy_from_slice(&5i64.to_be_bytes());
    assert!(matches!(
        follower.append_replicated(&old),
        Err(LogError::EpochRegression {
            epoch: 3,
            latest: 5
        })
    ));
    follower.check_invariants().expect("invariants");
}

#[test]
fn a_diverged_follower_cuts_its_log_where_the_leaders_epoch_ends() {
    // Both logs share epoch 1; the old leader (now a follower) wrote more
    // under epoch 2 that no one else has; the new leader wrote under epoch 3.
    let new_leader = Node::new(7, owned_config()).open().expect("open");
    let old_leader = Node::new(8, owned_config()).open().expect("open");
    old_leader.set_leader_epoch(1).expect("epoch");
    for index in 0..3 {
        append(&old_leader, &format!("e1-{index}"));
    }
    for batch in batches_from(&old_leader, 0) {
        new_leader.append_replicated(&batch).expect("replicate");
    }
    old_leader.set_leader_epoch(2).expect("epoch");
    append(&old_leader, "e2-lost");
    append(&old_leader, "e2-lost-too");
    new_leader.set_leader_epoch(3).expect("epoch");
    append(&new_leader, "e3-0");
    // The follower asks where its last epoch ends on the leader.
    let follower_epoch = old_leader.leader_epoch();
    assert_eq!(follower_epoch, 2);
    let (epoch, end) = new_leader
        .epoch_end_offset(follower_epoch)
        .expect("an epoch at or below");
    assert_eq!((epoch, end), (1, 3));
    assert_eq!(old_leader.truncate(end).expect("truncate"), 3);
    assert_eq!(
        old_leader.leader_epochs(),
        [EpochEntry {
            epoch: 1,
            start_offset: 0
        }]
    );
    for batch in batches_from(&new_leader, 3) {
        old_leader.append_replicated(&batch).expect("replicate");
    }
    assert_eq!(
        values(&old_leader, Isolation::Uncommitted),
        values(&new_leader, Isolation::Uncommitted)
    );
    assert_eq!(old_leader.leader_epochs(), new_leader.leader_epochs());
    old_leader.verify().expect("verify");
}

#[test]
fn an_older_leader_epoch_is_refused() {
    let log = Node::new(9, owned_config()).open().expect("open");
    log.set_leader_epoch(4).expect("epoch");
    assert!(matches!(
        log.set_leader_epoch(3),
        Err(LogError::EpochRegression { .. })
    ));
    assert_eq!(log.leader_epoch(), 4);
}

#[test]
fn a_truncation_interrupted_anywhere_leaves_the_old_end_or_the_new() {
    let mut outcomes = [0usize; 2];
    for crash_after in 1..40 {
        let node = Node::new(
            10 + crash_after,
            LogConfig {
                flush: FlushPolicy::Always,
                high_watermark: HighWatermarkPolicy::FollowsFlush,
                ..owned_config()
            },
        );
        let log = node.open().expect("open");
        log.set_leader_epoch(1).expect("epoch");
        for index in 0..30 {
            let producer = ProducerInfo {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: index,
            };
            log.append(
                &[Record::value(
                    1,
                    format!("e1-{index:03}-{}", "x".repeat(40)).as_bytes(),
                )],
                producer,
            )
            .expect("append");
        }
        log.set_leader_epoch(2).expect("epoch");
        for index in 30..40 {
            let producer = ProducerInfo {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: index,
            };
            log.append(
                &[Record::value(1, format!("e2-{index:03}").as_bytes())],
                producer,
            )
            .expect("append");
        }
        let old_end = log.log_end_offset();
        let before = values(&log, Isolation::Committed);
        node.disk.schedule_crash(crash_after);
        let result = log.truncate(12);
        drop(log);
        node.disk.crash();
        let log = node
            .open()
            .expect("recovery after an interrupted truncation");
        log.check_invariants().expect("invariants");
        log.verify().expect("verify");
        let end = log.log_end_offset();
        assert!(
            end == old_end || end == 12,
            "crash after {crash_after}: log end {end}"
        );
        if result.is_ok() {
            assert_eq!(end, 12, "a truncation that returned is durable");
        }
        outcomes[usize::from(end == 12)] += 1;
        let after = values(&log, Isolation::Committed);
        assert_eq!(
            after[..],
            before[..end as usize],
            "crash after {crash_after}"
        );
        let epochs = log.leader_epochs();
        assert!(epochs.iter().all(|entry| entry.start_offset < end));
        assert_eq!(
            epochs.last().map(|entry| entry.epoch),
            Some(if end == 12 { 1 } else { 2 })
        );
        let producer = log.producer_state(9).expect("the producer is known");
        let last = producer.batches.back().expect("a batch");
        assert_eq!(
            last.last_offset,
            end - 1,
            "crash after {crash_after}: the producer state ends with the log"
        );
        assert_eq!(last.last_sequence as u64, end - 1);
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "crashes landed on both sides: {outcomes:?}"
    );
}

#[test]
fn a_directory_of_weirs_first_format_is_refused_by_name() {
    let node = Node::new(11, LogConfig::default());
    let storage = node.storage();
    // A checkpoint of format 1: magic, version 1, the rest irrelevant.
    let mut checkpoint = b"WEIRCKPT".to_vec();
    checkpoint.extend_from_slice(&1u16.to_le_bytes());
    checkpoint.extend_from_slice(&[0; 17]);
    let file = storage
        .open_file("checkpoint", OpenMode::CreateNew)
        .expect("create");
    file.write_at(&checkpoint, 0).expect("write");
    let error = node.open().expect_err("format 1 is refused");
    assert!(
        matches!(error, LogError::UnsupportedFormat { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("format 1"), "{error}");

    // Without a checkpoint, a segment that starts with a format-1 batch.
    let node = Node::new(12, LogConfig::default());
    let storage = node.storage();
    let mut batch = vec![0u8; 80];
    batch[8..12].copy_from_slice(&80u32.to_le_bytes());
    batch[24] = 1;
    let stamp = crc32fast::hash(&batch[..20]);
    batch[20..24].copy_from_slice(&stamp.to_le_bytes());
    let file = storage
        .open_file("00000000000000000000.log", OpenMode::CreateNew)
        .expect("create");
    file.write_at(&batch, 0).expect("write");
    let error = node.open().expect_err("format 1 is refused");
    assert!(
        matches!(error, LogError::UnsupportedFormat { .. }),
        "{error}"
    );
    // And nothing was cut.
    assert_eq!(file.len().expect("len"), 80);
}

/// A follower told by its leader that the records before an offset are
/// gone (a Raft snapshot) restarts its log empty there, whether its own
/// log ends before the offset (it fell behind) or after it (it holds
/// records of its own there, possibly divergent). A crash at any point
/// leaves the old log, the log cut at its start, or the empty log at the
/// offset; a reset that returned is durable.
#[test]
fn a_reset_interrupted_anywhere_leaves_the_old_log_or_an_empty_one_at_the_offset() {
    let mut outcomes = [0usize; 3];
    for (target, crash_after) in [20u64, 200]
        .into_iter()
        .flat_map(|t| (1..30).map(move |c| (t, c)))
    {
        let node = Node::new(100 + target + crash_after, owned_config());
        let log = node.open().expect("open");
        log.set_leader_epoch(1).expect("epoch");
        for index in 0..40 {
            append(&log, &format!("r-{index:03}-{}", "y".repeat(40)));
        }
        log.sync().expect("sync");
        let old_end = log.log_end_offset();
        node.disk.schedule_crash(crash_after);
        let result = log.reset_to(target);
        drop(log);
        node.disk.crash();
        let log = node.open().expect("recovery after an interrupted reset");
        log.check_invariants().expect("invariants");
        log.verify().expect("verify");
        let span = (log.log_start_offset(), log.log_end_offset());
        let outcome = match span {
            (0, end) if end == old_end => 0,
            (0, 0) => 1,
            (start, end) if start == target && end == target => 2,
            other => panic!("target {target}, crash after {crash_after}: log spans {other:?}"),
        };
        if result.is_ok() {
            assert_eq!(outcome, 2, "a reset that returned is durable");
        }
        outcomes[outcome] += 1;
        if outcome == 2 {
            assert!(log.leader_epochs().is_empty());
            assert!(log.producer_state(1).is_none());
        }
    }
    assert!(
        outcomes.iter().all(|count| *count > 0),
        "outcomes {outcomes:?}"
    );
}

/// A replica whose replication log no longer describes its records (rot
/// cut that log back before the segment log's start) restarts its log
/// empty at an offset before its start, and appends from there. A crash
/// at any point leaves the old log, the log cut at its start, or the empty
/// log at the offset; a restart that returned is durable.
#[test]
fn a_log_restarted_before_its_start_is_empty_there_and_a_crash_leaves_no_mix() {
    let mut outcomes = [0usize; 3];
    for crash_after in 1..80u64 {
        let node = Node::new(500 + crash_after, owned_config());
        let log = node.open().expect("open");
        assert_eq!(log.reset_to(30).expect("reset"), 30);
        log.set_leader_epoch(1).expect("epoch");
        for index in 0..10 {
            append(&log, &format!("r-{index:03}-{}", "y".repeat(40)));
        }
        log.sync().expect("sync");
        node.disk.schedule_crash(crash_after);
        let result = log.restart_at(10);
        drop(log);
        node.disk.crash();
        let log = node.open().expect("recovery after an interrupted restart");
        log.check_invariants().expect("invariants");
        log.verify().expect("verify");
        let outcome = match (log.log_start_offset(), log.log_end_offset()) {
            (30, 40) => 0,
            (30, 30) => 1,
            (10, 10) => 2,
            other => panic!("crash after {crash_after}: log spans {other:?}"),
        };
        if result.is_ok() {
            assert_eq!(outcome, 2, "a restart that returned is durable");
        }
        outcomes[outcome] += 1;
        if outcome == 2 {
            assert!(log.leader_epochs().is_empty());
            assert!(matches!(
                log.read_with(30, 4096, Isolation::Uncommitted),
                Err(LogError::OffsetOutOfRange { .. })
            ));
            append(&log, "after");
            assert_eq!(log.log_end_offset(), 11);
        }
    }
    assert!(
        outcomes.iter().all(|count| *count > 0),
        "outcomes {outcomes:?}"
    );
}

#[test]
fn a_reset_log_takes_the_leaders_batches_from_the_offset() {
    let leader = Node::new(7, owned_config()).open().expect("open");
    let node = Node::new(8, owned_config());
    let follower = node.open().expect("open");
    leader.set_leader_epoch(2).expect("epoch");
    for index in 0..30 {
        append(&leader, &format!("l-{index:03}-{}", "z".repeat(40)));
    }
    follower.set_leader_epoch(1).expect("epoch");
    for index in 0..12 {
        append(&follower, &format!("own-{index}"));
    }
    assert_eq!(follower.reset_to(20).expect("reset"), 20);
    assert_eq!(follower.log_start_offset(), 20);
    assert_eq!(follower.log_end_offset(), 20);
    assert!(follower.leader_epochs().is_empty());
    assert!(matches!(
        follower.read_with(5, 4096, Isolation::Uncommitted),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    for batch in batches_from(&leader, 20) {
        follower.append_replicated(&batch).expect("replicate");
    }
    follower.sync().expect("sync");
    follower.set_high_watermark(30);
    let expected = values(&leader, Isolation::Uncommitted)[20..].to_vec();
    assert_eq!(values(&follower, Isolation::Uncommitted), expected);
    assert!(matches!(
        follower.reset_to(10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(follower);
    let follower = node.open().expect("reopen");
    assert_eq!(follower.log_start_offset(), 20);
    assert_eq!(values(&follower, Isolation::Uncommitted), expected);
    follower.verify().expect("verify");
}

/// A log on a disk of `seed` holding sixty records of 100 bytes and
/// more, synced: a replica's (`owned`) or one of its own.
fn sixty_records(seed: u64, owned: bool) -> (Node, Partition) {
    let config = match owned {
        true => owned_config(),
        false => LogConfig {
            high_watermark: HighWatermarkPolicy::FollowsFlush,
            ..owned_config()
        },
    };
    let node = Node::new(seed, config);
    let log = node.open().expect("open");
    for at in 0..60 {
        append(&log, &format!("record {at:03} {}", "x".repeat(100)));
    }
    log.sync().expect("sync");
    (node, log)
}

/// Rot in a sealed segment that the checkpoint vouches for, found while
/// recovery walks the batches (here: the leader-epoch file is gone and is
/// rebuilt from every batch). A replica's log (`SetByOwner`) scans that
/// segment again, cuts at the corrupt batch and reports it; any other
/// log refuses to open.
#[test]
fn rot_in_a_trusted_segment_is_cut_in_a_replica_and_refused_elsewhere() {
    for owned in [true, false] {
        let (node, log) = sixty_records(77, owned);
        log.close().expect("close");
        drop(log);
        let storage = node.storage();
        let mut segments: Vec<String> = storage
            .list()
            .expect("list")
            .into_iter()
            .map(|entry| entry.name)
            .filter(|name| name.ends_with(".log"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 3, "sealed segments: {segments:?}");
        let second = &segments[1];
        let base: u64 = second.trim_end_matches(".log").parse().expect("a base");
        node.disk
            .corrupt(&format!("partition/{second}"), 100, 0x04)
            .expect("a flip");
        storage
            .remove_file("leader-epochs")
            .expect("the epochs file");
        match node.open() {
            Ok(log) => {
                assert!(owned, "a log of its own opened over rot");
                assert_eq!(log.synced_data_cut(), Some(base));
                assert_eq!(log.log_end_offset(), base);
                assert_eq!(values(&log, Isolation::Uncommitted).len() as u64, base);
            }
            Err(error) => {
                assert!(!owned, "a replica refused: {error}");
                assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
            }
        }
    }
}

/// A checkpoint that reads corrupt (a write stored wrong): a replica's
/// log does without it, scanning every segment, and keeps every record;
/// any other log refuses to open.
#[test]
fn a_corrupt_checkpoint_is_done_without_in_a_replica_and_refused_elsewhere() {
    for owned in [true, false] {
        let (node, log) = sixty_records(78, owned);
        let before = values(&log, Isolation::Uncommitted);
        log.close().expect("close");
        drop(log);
        node.disk
            .corrupt("partition/checkpoint", 20, 0x01)
            .expect("a flip");
        match node.open() {
            Ok(log) => {
                assert!(owned, "a log of its own opened over a corrupt checkpoint");
                assert_eq!(values(&log, Isolation::Uncommitted), before);
                assert_eq!(log.synced_data_cut(), None);
                drop(log);
                let log = node.open().expect("a reopen, checkpoint rewritten");
                assert_eq!(values(&log, Isolation::Uncommitted), before);
            }
            Err(error) => {
                assert!(!owned, "a replica refused: {error}");
                assert!(
                    matches!(error, LogError::CorruptCheckpoint { .. }),
                    "{error}"
                );
            }
        }
    }
}

/// A follower whose batch limit was lowered (a config change it applied
/// before the leader's batch reached it) still takes the batch: the limit
/// is the leader's to check when it takes a batch, or the follower would
/// never catch up. Its own appends keep to the new limit.
#[test]
fn a_follower_takes_a_batch_above_its_lowered_limit() {
    let leader = Node::new(11, owned_config()).open().expect("open");
    let follower = Node::new(12, owned_config()).open().expect("open");
    let value = "v".repeat(600);
    append(&leader, &value);
    let lowered = weir_log::TopicSettings {
        max_batch_bytes: 100,
        ..follower.config().settings()
    };
    follower.change_settings(lowered).expect("lowered");
    for batch in batches_from(&leader, 0) {
        assert!(batch.len() > 100);
        follower.append_replicated(&batch).expect("replicated");
    }
    assert_eq!(follower.log_end_offset(), 1);
    assert!(matches!(
        follower.write(&[Record::value(1, value.as_bytes())], ProducerInfo::NONE),
        Err(LogError::BatchTooLarge { max: 100, .. })
    ));
}
