//! Entry points for fuzzing, shared by the cargo-fuzz targets in `fuzz/`
//! and by `cargo test`, which replays the committed corpus through them.

use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use weir_io::{ManualClock, OpenMode, SimDisk, Storage};
use weir_log::batch::{encode, ProducerInfo, Record};
use weir_log::{HighWatermarkPolicy, LogConfig, Partition};

use crate::codec::{decode_frame, encode_frame, Envelope, Limits};
use crate::store::{RaftLog, SIDE_FILE};

/// Decodes `data` as a frame of Raft messages with small limits. Whatever
/// decodes must encode back to the same bytes (one encoding per message,
/// so nothing the decoder accepts is read two ways).
pub fn raft_frame(data: &[u8]) {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_messages: 64,
        max_entries: 64,
        max_nodes: 16,
    };
    if let Ok(Some((envelopes, used))) = decode_frame(data, &limits) {
        let mut encoded = Vec::new();
        encode_frame(&envelopes, &mut encoded);
        assert_eq!(encoded, data[..used], "a decoded frame encodes differently");
        // Configuration changes in the entries are read by weir's decoder
        // (never protobuf's); what it reads, it writes back the same way.
        for envelope in &envelopes {
            for entry in envelope.message.entries.iter() {
                if entry.entry_type == EntryType::EntryConfChangeV2 {
                    if let Ok(change) = crate::confchange::decode_conf_change(&entry.data) {
                        let again = crate::confchange::encode_conf_change(&change);
                        let reread = crate::confchange::decode_conf_change(&again);
                        assert_eq!(reread.as_ref(), Ok(&change), "a change reads two ways");
                    }
                }
            }
        }
    }
}

/// Decodes `data` as a metadata record; whatever decodes encodes back to
/// the same bytes, and applying it to a small cluster's state either
/// changes it or leaves it as it was.
pub fn metadata_record(data: &[u8]) {
    use crate::metadata::{MetadataRecord, MetadataState};
    let Ok(record) = MetadataRecord::decode(data) else {
        return;
    };
    assert_eq!(
        record.encode(),
        data,
        "a decoded record encodes differently"
    );
    let mut state = MetadataState::new();
    for id in 1..=3 {
        state
            .apply(&MetadataRecord::Node {
                id,
                kafka_address: String::new(),
                resp_address: String::new(),
                cluster_address: String::new(),
            })
            .expect("a node");
    }
    let before = state.clone();
    if state.apply(&record).is_err() {
        assert_eq!(state, before, "a refused record changed the state");
    }
}

/// Opens a Raft log whose side file holds `data`, over a partition with a
/// few batches: the log opens or refuses with an error, never panics, and
/// once open its invariants hold.
pub fn raft_log_file(data: &[u8]) {
    let disk = SimDisk::new(7);
    let root = disk.root();
    let partition_dir = root.open_or_create_dir("partition").expect("a directory");
    let config = LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        ..LogConfig::default()
    };
    let (partition, _) = Partition::open(partition_dir, Arc::new(ManualClock::new(0)), config)
        .expect("an empty partition opens");
    let raft_dir = root.open_or_create_dir("raft").expect("a directory");
    let file = raft_dir
        .open_file(SIDE_FILE, OpenMode::CreateIfMissing)
        .expect("a file");
    file.write_at(data, 0).expect("a write");
    // The read-only inspection reads the same bytes the same way.
    let report = crate::store::inspect_side_file(data);
    assert!(report.invalid_tail_bytes <= data.len() as u64);
    if let Ok(log) = RaftLog::open(raft_dir, Arc::new(partition), &[1, 2, 3]) {
        log.check().expect("an opened log holds its invariants");
    }
}

/// Seed inputs: `(target, name, bytes)`.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, envelopes) in sample_frames() {
        let mut bytes = Vec::new();
        encode_frame(&envelopes, &mut bytes);
        seeds.push(("raft_frame", name.to_string(), bytes));
    }
    seeds.push(("raft_log_file", "empty".to_string(), Vec::new()));
    for (name, record) in sample_metadata() {
        seeds.push(("metadata_record", name.to_string(), record.encode()));
    }
    seeds.push((
        "raft_log_file",
        "state-and-own-entries".to_string(),
        sample_side_file(),
    ));
    seeds
}

fn sample_metadata() -> Vec<(&'static str, crate::metadata::MetadataRecord)> {
    use crate::metadata::{MetadataRecord, PartitionAssignment, FIRST_PARTITION_GROUP};
    vec![
        (
            "node",
            MetadataRecord::Node {
                id: 2,
                kafka_address: "127.0.0.1:9092".into(),
                resp_address: "127.0.0.1:6379".into(),
                cluster_address: "127.0.0.1:7002".into(),
            },
        ),
        (
            "reassignment",
            MetadataRecord::Reassignment {
                group: FIRST_PARTITION_GROUP,
                target: vec![1, 2, 4],
            },
        ),
        (
            "reassigned",
            MetadataRecord::Reassigned {
                group: FIRST_PARTITION_GROUP,
                replicas: vec![1, 2, 4],
            },
        ),
        (
            "topic",
            MetadataRecord::Topic {
                name: "orders".into(),
                partitions: vec![
                    PartitionAssignment {
                        group: FIRST_PARTITION_GROUP,
                        replicas: vec![1, 2, 3],
                    },
                    PartitionAssignment {
                        group: FIRST_PARTITION_GROUP + 1,
                        replicas: vec![2, 3, 1],
                    },
                ],
                configs: Vec::new(),
            },
        ),
        (
            "topic-with-configs",
            MetadataRecord::Topic {
                name: "audit".into(),
                partitions: vec![PartitionAssignment {
                    group: FIRST_PARTITION_GROUP + 2,
                    replicas: vec![3, 1, 2],
                }],
                configs: vec![
                    ("retention.ms".into(), "3600000".into()),
                    ("segment.bytes".into(), "1048576".into()),
                ],
            },
        ),
        (
            "partitions",
            MetadataRecord::Partitions {
                name: "orders".into(),
                partitions: vec![PartitionAssignment {
                    group: FIRST_PARTITION_GROUP + 3,
                    replicas: vec![1, 2, 3],
                }],
            },
        ),
        (
            "configs",
            MetadataRecord::TopicConfigs {
                name: "orders".into(),
                configs: vec![("retention.ms".into(), "60000".into())],
            },
        ),
        (
            "deletion",
            MetadataRecord::TopicDeleted {
                name: "orders".into(),
            },
        ),
        (
            "producer-ids",
            MetadataRecord::ProducerIds {
                node: 2,
                first: 0,
                count: 1000,
            },
        ),
    ]
}

fn sample_frames() -> Vec<(&'static str, Vec<Envelope>)> {
    let mut batch = Vec::new();
    encode(
        &[Record::value(1, b"value")],
        ProducerInfo::NONE,
        &mut batch,
    )
    .expect("a batch");
    let append = Message {
        msg_type: MessageType::MsgAppend,
        to: 2,
        from: 1,
        term: 3,
        log_term: 2,
        index: 10,
        commit: 9,
        entries: vec![
            Entry {
                term: 3,
                index: 11,
                ..Entry::default()
            },
            Entry {
                term: 3,
                index: 12,
                data: batch.into(),
                ..Entry::default()
            },
        ]
        .into(),
        ..Message::default()
    };
    let vote = Message {
        msg_type: MessageType::MsgRequestVoteResponse,
        to: 1,
        from: 3,
        term: 4,
        reject: true,
        reject_hint: 7,
        ..Message::default()
    };
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 5;
    snapshot.mut_metadata().set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..ConfState::default()
    });
    let mut with_snapshot = Message {
        msg_type: MessageType::MsgSnapshot,
        to: 2,
        from: 1,
        term: 2,
        ..Message::default()
    };
    with_snapshot.set_snapshot(snapshot);
    let conf = Entry {
        entry_type: EntryType::EntryConfChangeV2,
        term: 2,
        index: 3,
        data: vec![1, 2, 3].into(),
        context: vec![9].into(),
        ..Entry::default()
    };
    let conf_append = Message {
        msg_type: MessageType::MsgAppend,
        to: 3,
        from: 1,
        entries: vec![conf].into(),
        ..Message::default()
    };
    vec![
        (
            "append",
            vec![Envelope {
                group: 1,
                message: append,
            }],
        ),
        (
            "two-groups",
            vec![
                Envelope {
                    group: 7,
                    message: vote,
                },
                Envelope {
                    group: 8,
                    message: conf_append,
                },
            ],
        ),
        (
            "snapshot",
            vec![Envelope {
                group: 1,
                message: with_snapshot,
            }],
        ),
        ("empty", Vec::new()),
    ]
}

/// A side file as a follower writes it: raft's own entries and states.
fn sample_side_file() -> Vec<u8> {
    let disk = SimDisk::new(1);
    let root = disk.root();
    let partition_dir = root.open_or_create_dir("partition").expect("a directory");
    let config = LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        ..LogConfig::default()
    };
    let (partition, _) =
        Partition::open(partition_dir, Arc::new(ManualClock::new(0)), config).expect("a partition");
    let raft_dir = root.open_or_create_dir("raft").expect("a directory");
    let mut log =
        RaftLog::open(Arc::clone(&raft_dir), Arc::new(partition), &[1, 2, 3]).expect("a new log");
    let own = |index| Entry {
        term: 2,
        index,
        ..Entry::default()
    };
    // After the three configuration entries of the group's creation.
    log.append(&[own(4), own(5)], &mut Default::default())
        .expect("an append");
    let mut state = log.state().clone();
    state.hard = HardState {
        term: 2,
        vote: 1,
        commit: 5,
        ..HardState::default()
    };
    log.set_state(state).expect("a state");
    log.sync().expect("a sync");
    let file = raft_dir
        .open_file(SIDE_FILE, OpenMode::Existing)
        .expect("the file");
    let mut bytes = vec![0; usize::try_from(file.len().expect("a length")).expect("small")];
    file.read_at(&mut bytes, 0).expect("a read");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_corpus_runs() {
        for (target, _, input) in seed_corpus() {
            match target {
                "raft_frame" => raft_frame(&input),
                "raft_log_file" => raft_log_file(&input),
                "metadata_record" => metadata_record(&input),
                other => panic!("unknown target {other}"),
            }
        }
    }

    #[test]
    fn the_sample_side_file_reopens_with_its_state() {
        let bytes = sample_side_file();
        assert!(!bytes.is_empty());
        raft_log_file(&bytes);
        let report = crate::store::inspect_side_file(&bytes);
        assert_eq!((report.entries, report.own_entries), (5, 5));
        assert_eq!(report.terms, [(1, 1, 0), (2, 4, 0)]);
        assert_eq!(
            report
                .state
                .map(|state| (state.hard.term, state.hard.vote, state.hard.commit)),
            Some((2, 1, 5))
        );
        assert_eq!(report.invalid_tail_bytes, 0);
        // The last state record torn: the one before it is reported, and
        // the torn bytes counted.
        let torn = crate::store::inspect_side_file(&bytes[..bytes.len() - 3]);
        assert!(torn.invalid_tail_bytes > 0);
        assert_eq!(torn.state.map(|state| state.hard.term), Some(1));
        assert_eq!(torn.entries, 5);
    }
}
