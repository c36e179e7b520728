//! DescribeQuorum (KIP-595, KIP-836): the metadata log's Raft group, as
//! `kafka-metadata-quorum describe` and kafka-python's
//! `describe_metadata_quorum` ask for it (partition 0 of
//! [`METADATA_TOPIC`]). Any node answers from what it knows (a KRaft
//! broker forwards the request to the active controller): the leader, its
//! epoch, the high watermark as this node has it, the voters and the
//! observers. Per-replica log end offsets and fetch times are not tracked
//! (-1, Kafka's "unknown"), nor directory ids (v2: the zero id, Kafka's
//! "unknown"); v2's `nodes` (KIP-853: where the voters take KRaft's own
//! requests) is empty, as weir's nodes take none. One node alone answers
//! as a quorum of itself with an empty metadata log.

use std::sync::Arc;

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::ResponseError;

use crate::node::{Kafka, Quorum};

/// The name Kafka gives the metadata log, the only "topic" DescribeQuorum
/// describes.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Handles DescribeQuorum: partition 0 of [`METADATA_TOPIC`] described,
/// any other partition named answered UNKNOWN_TOPIC_OR_PARTITION.
pub fn describe(kafka: &Arc<Kafka>, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let quorum = quorum(kafka);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let known = topic.topic_name.0.as_str() == METADATA_TOPIC;
            let partitions = topic
                .partitions
                .into_iter()
                .map(|asked| match (known, asked.partition_index) {
                    (true, 0) => described(&quorum),
                    (_, index) => PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// The quorum as this node knows it; one node alone is a quorum of itself
/// with an empty metadata log.
fn quorum(kafka: &Kafka) -> Quorum {
    match kafka.leaders.replication() {
        Some(replication) => replication.quorum(),
        None => {
            let me = u64::try_from(kafka.leaders.node_id()).unwrap_or(0);
            Quorum {
                leader: Some(me),
                voters: vec![me],
                ..Quorum::default()
            }
        }
    }
}

/// Partition 0's answer.
fn described(quorum: &Quorum) -> PartitionData {
    let id = |node: u64| BrokerId(i32::try_from(node).unwrap_or(-1));
    let replica = |node: u64| {
        ReplicaState::default()
            .with_replica_id(id(node))
            .with_log_end_offset(-1)
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(quorum.leader.map_or(BrokerId(-1), id))
        .with_leader_epoch(i32::try_from(quorum.epoch).unwrap_or(i32::MAX))
        .with_high_watermark(i64::try_from(quorum.high_watermark).unwrap_or(i64::MAX))
        .with_current_voters(quorum.voters.iter().copied().map(replica).collect())
        .with_observers(quorum.observers.iter().copied().map(replica).collect())
}
