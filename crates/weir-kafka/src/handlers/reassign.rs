//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455):
//! moving a partition's replicas to other nodes, which the replication
//! layer does with Raft's joint consensus. One node alone holds every
//! partition: the only assignment it accepts is itself.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::node::{Kafka, Refusal};

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Handles AlterPartitionReassignments: each partition's answer once the
/// controller has recorded its move (or cancellation).
pub async fn alter(
    kafka: &Arc<Kafka>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let target = partition
                .replicas
                .map(|replicas| replicas.iter().map(|id| i64::from(id.0)).collect());
            let outcome = alter_one(
                kafka,
                &topic.name.0,
                partition.partition_index,
                target,
                request.allow_replication_factor_change,
            )
            .await;
            let answer = ReassignablePartitionResponse::default()
                .with_partition_index(partition.partition_index);
            partitions.push(match outcome {
                Ok(()) => answer,
                Err((error, message)) => answer
                    .with_error_code(error.code())
                    .with_error_message(message.map(text)),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

async fn alter_one(
    kafka: &Arc<Kafka>,
    topic: &str,
    partition: i32,
    target: Option<Vec<i64>>,
    allow_factor_change: bool,
) -> Result<(), Refusal> {
    let index =
        u32::try_from(partition).map_err(|_| (ResponseError::UnknownTopicOrPartition, None))?;
    let target = match target {
        None => None,
        Some(ids) => Some(
            ids.into_iter()
                .map(|id| u64::try_from(id).ok())
                .collect::<Option<Vec<u64>>>()
                .filter(|ids| !ids.is_empty())
                .ok_or((
                    ResponseError::InvalidReplicaAssignment,
                    Some("replicas must be node ids (not negative), at least one".into()),
                ))?,
        ),
    };
    let Some(replication) = kafka.leaders.replication() else {
        kafka
            .known_partition(topic, partition)
            .map_err(|error| (error, None))?;
        return match target {
            None => Err((ResponseError::NoReassignmentInProgress, None)),
            Some(ids) if ids == [0] => Ok(()),
            Some(_) => Err((
                ResponseError::InvalidReplicaAssignment,
                Some("one node alone: the only replica is node 0".into()),
            )),
        };
    };
    if let (Some(ids), false) = (&target, allow_factor_change) {
        let (current, _) = kafka.leaders.replicas(topic, index);
        if !current.is_empty() && current.len() != ids.len() {
            return Err((
                ResponseError::InvalidReplicationFactor,
                Some("the reassignment changes the replication factor, which the request does not allow".into()),
            ));
        }
    }
    replication.reassign(topic, index, target).await
}

/// Handles ListPartitionReassignments: the moves under way, of the
/// partitions asked for (all when none are named).
pub fn list(
    kafka: &Arc<Kafka>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let under_way = kafka
        .leaders
        .replication()
        .map(|replication| replication.reassignments())
        .unwrap_or_default();
    let wanted = |topic: &str, partition: u32| match &request.topics {
        None => true,
        Some(topics) => topics.iter().any(|asked| {
            asked.name.0.as_str() == topic && asked.partition_indexes.contains(&(partition as i32))
        }),
    };
    let ids = |nodes: &[u64]| {
        nodes
            .iter()
            .map(|id| BrokerId(i32::try_from(*id).unwrap_or(-1)))
            .collect::<Vec<_>>()
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for moving in under_way
        .iter()
        .filter(|moving| wanted(&moving.topic, moving.partition))
    {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(moving.partition as i32)
            .with_replicas(ids(&moving.replicas))
            .with_adding_replicas(ids(&moving.adding))
            .with_removing_replicas(ids(&moving.removing));
        match topics
            .iter_mut()
            .find(|topic| topic.name.0.as_str() == moving.topic)
        {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(text(moving.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
