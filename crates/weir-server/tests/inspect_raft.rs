//! `weir inspect raft` on a Raft directory written by weir-replication.

use std::sync::Arc;

use weir_io::{OsStorage, Storage, SystemClock};
use weir_log::batch::{encode, stamp, ProducerInfo, Record};
use weir_log::{HighWatermarkPolicy, LogConfig, Partition};
use weir_replication::raft_types::{Entry, HardState};
use weir_replication::RaftLog;

fn batch(base_offset: u64, term: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(&[Record::value(1, b"v")], ProducerInfo::NONE, &mut bytes).expect("a batch");
    stamp(
        &mut bytes,
        base_offset,
        i32::try_from(term).expect("a small term"),
    );
    bytes
}

#[test]
fn raft_state_terms_and_a_torn_tail_are_reported() {
    let directory = tempfile::tempdir().expect("a directory");
    let storage = OsStorage::open(directory.path()).expect("storage");
    let partition_dir: Arc<dyn Storage> = storage.open_or_create_dir("p").expect("a directory");
    let config = LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        ..LogConfig::default()
    };
    let (partition, _) =
        Partition::open(partition_dir, Arc::new(SystemClock), config).expect("a partition");
    let raft_dir = storage.open_or_create_dir("r").expect("a directory");
    let mut log = RaftLog::open(raft_dir, Arc::new(partition), &[1, 2, 3]).expect("a log");
    // Entries 1 to 3 are the configuration the group was created with.
    let entries = [
        Entry {
            term: 2,
            index: 4,
            ..Entry::default()
        },
        Entry {
            term: 2,
            index: 5,
            data: batch(0, 2).into(),
            ..Entry::default()
        },
        Entry {
            term: 3,
            index: 6,
            data: batch(1, 3).into(),
            ..Entry::default()
        },
    ];
    log.append(&entries, &mut Default::default())
        .expect("an append");
    let mut state = log.state().clone();
    state.hard = HardState {
        term: 3,
        vote: 2,
        commit: 5,
        ..HardState::default()
    };
    log.set_state(state).expect("a state");
    log.sync().expect("a sync");

    let report = weir_server::inspect::raft(&directory.path().join("r")).expect("a report");
    assert!(!report.corrupt, "{}", report.text);
    for expected in [
        "term 3, vote 2, commit 5, applied 3, voters [1, 2, 3]",
        "6 entries (4 raft's own, taking no offset), records up to offset 2",
        "term (leader epoch) 1: from entry 1, offset 0",
        "term (leader epoch) 2: from entry 4, offset 0",
        "term (leader epoch) 3: from entry 6, offset 1",
    ] {
        assert!(
            report.text.contains(expected),
            "{expected:?} not in:\n{}",
            report.text
        );
    }

    // A compacted log names where it starts.
    let mut state = log.state().clone();
    state.applied = 5;
    log.set_state(state).expect("a state");
    let start = log.compact_to(1).expect("a compaction").expect("a start");
    assert_eq!((start.index, start.term, start.offset), (5, 2, 1));
    let report = weir_server::inspect::raft(&directory.path().join("r")).expect("a report");
    assert!(!report.corrupt, "{}", report.text);
    assert!(
        report
            .text
            .contains("compacted through entry 5 (term 2): records from offset 1"),
        "{}",
        report.text
    );

    // A torn tail is reported, and nothing is changed.
    let path = directory.path().join("r").join(weir_replication::SIDE_FILE);
    let mut bytes = std::fs::read(&path).expect("the side file");
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&path, &bytes).expect("a write");
    let report = weir_server::inspect::raft(&directory.path().join("r")).expect("a report");
    assert!(
        report.text.contains("6 bytes after the last valid record"),
        "{}",
        report.text
    );
    assert_eq!(
        std::fs::read(&path).expect("the side file"),
        bytes,
        "inspect changed the file"
    );
}
