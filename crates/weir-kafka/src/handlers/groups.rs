//! The group APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups), committed
//! offsets (OffsetCommit, OffsetFetch) and InitProducerId.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProducerId, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_log::{GROUP_ID_BYTES_MAX, OFFSET_METADATA_BYTES_MAX};

use crate::coordinator::{GroupState, JoinRequest, JoinResult, Reply, SyncResult};
use crate::node::{off_loop, Kafka, NodeAddress, Replication};
use crate::producer_ids::ProducerIdError;

/// FindCoordinator's key type for consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn optional(value: Option<&StrBytes>) -> Option<String> {
    value.map(|value| value.to_string())
}

/// Handles FindCoordinator: the node the leader seam names for each group
/// (this node, on one node).
pub fn find_coordinator(
    kafka: &Kafka,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let find = |key: &str| -> Result<NodeAddress, (ResponseError, &'static str)> {
        if request.key_type != KEY_TYPE_GROUP {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                "weir coordinates consumer groups only, not transactions",
            ));
        }
        let unavailable = (
            ResponseError::CoordinatorNotAvailable,
            "no node coordinates the group now",
        );
        let id = kafka.leaders.coordinator(key).ok_or(unavailable)?;
        let nodes = kafka.leaders.nodes();
        nodes
            .into_iter()
            .find(|node| node.id == id)
            .ok_or(unavailable)
    };
    let answer = |found: Result<NodeAddress, (ResponseError, &'static str)>| match found {
        Ok(node) => (0, None, node.id, text(node.host), i32::from(node.port)),
        Err((error, message)) => (
            error.code(),
            Some(text(message)).filter(|_| version >= 1),
            -1,
            text(""),
            -1,
        ),
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (code, message, id, host, port) = answer(find(key));
                FoundCoordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(id))
                    .with_host(host)
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message, id, host, port) = answer(find(&request.key));
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(BrokerId(id))
        .with_host(host)
        .with_port(port)
}

async fn settle<T>(reply: Reply<T>, gone: T) -> T {
    match reply {
        Reply::Now(value) => value,
        Reply::Later(receiver) => receiver.await.unwrap_or(gone),
    }
}

/// Handles JoinGroup; waits (without a thread) until the group's
/// generation forms.
pub async fn join_group(
    kafka: &Kafka,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    if let Err(error) = kafka.coordinates(&request.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1);
    }
    let join = JoinRequest {
        group: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: optional(request.group_instance_id.as_ref()),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        requires_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    let result = settle(
        kafka.coordinator.join(join),
        JoinResult {
            error: ResponseError::UnknownMemberId.code(),
            generation: -1,
            member_id,
            ..JoinResult::default()
        },
    )
    .await;
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.filter(|_| version >= 7).map(text))
        .with_protocol_name(Some(text(result.protocol.unwrap_or_default())))
        .with_leader(text(result.leader))
        .with_member_id(text(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(id))
                        .with_group_instance_id(instance.filter(|_| version >= 5).map(text))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

/// Handles SyncGroup; members wait for the leader's assignment.
pub async fn sync_group(
    kafka: &Kafka,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    if let Err(error) = kafka.coordinates(&request.group_id.0) {
        return SyncGroupResponse::default().with_error_code(error.code());
    }
    let reply = kafka.coordinator.sync(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.protocol_type.as_deref(),
        request.protocol_name.as_deref(),
        request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    );
    let result = settle(
        reply,
        SyncResult {
            error: ResponseError::RebalanceInProgress.code(),
            ..SyncResult::default()
        },
    )
    .await;
    SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_protocol_type(result.protocol_type.filter(|_| version >= 5).map(text))
        .with_protocol_name(result.protocol.filter(|_| version >= 5).map(text))
        .with_assignment(result.assignment)
}

/// Handles Heartbeat.
pub fn heartbeat(kafka: &Kafka, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(error) = kafka.coordinates(&request.group_id.0) {
        return HeartbeatResponse::default().with_error_code(error.code());
    }
    let error = kafka.coordinator.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    );
    HeartbeatResponse::default().with_error_code(error)
}

/// Handles LeaveGroup (one member before v3, a list after).
pub fn leave_group(kafka: &Kafka, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if let Err(error) = kafka.coordinates(&request.group_id.0) {
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| {
                (
                    member.member_id.to_string(),
                    optional(member.group_instance_id.as_ref()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let errors = kafka.coordinator.leave(&request.group_id.0, &leaving);
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(errors.first().copied().unwrap_or(0));
    }
    let members = leaving
        .into_iter()
        .zip(errors)
        .map(|((member_id, instance), error)| {
            MemberResponse::default()
                .with_member_id(text(member_id))
                .with_group_instance_id(instance.map(text))
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

fn group_id_error(group: &str) -> Option<ResponseError> {
    (group.is_empty() || group.len() > GROUP_ID_BYTES_MAX).then_some(ResponseError::InvalidGroupId)
}

/// Handles OffsetCommit: checks the member and generation, then commits
/// every valid partition's offset atomically and durably.
pub async fn offset_commit(
    kafka: &Arc<Kafka>,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let refused = group_id_error(&group).or_else(|| {
        if let Err(error) = kafka.coordinates(&group) {
            return Some(error);
        }
        kafka.coordinator.validate_commit(
            &group,
            request.generation_id_or_member_epoch,
            &request.member_id,
            request.group_instance_id.as_deref(),
        )
    });
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(request.topics.len());
    let mut entries: Vec<(String, u32, u64, String)> = Vec::new();
    let mut positions: Vec<(usize, usize)> = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let mut topic_codes = Vec::with_capacity(topic.partitions.len());
        for (partition_index, partition) in topic.partitions.iter().enumerate() {
            let metadata = partition.committed_metadata.as_deref().unwrap_or("");
            let code = if let Some(error) = refused {
                error.code()
            } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                ResponseError::OffsetMetadataTooLarge.code()
            } else if partition.committed_offset < 0 {
                ResponseError::InvalidCommitOffsetSize.code()
            } else {
                match kafka.known_partition(&topic.name.0, partition.partition_index) {
                    Ok(_) => {
                        entries.push((
                            topic.name.0.to_string(),
                            partition.partition_index as u32,
                            partition.committed_offset as u64,
                            metadata.to_string(),
                        ));
                        positions.push((topic_index, partition_index));
                        0
                    }
                    Err(error) => error.code(),
                }
            };
            topic_codes.push(code);
        }
        codes.push(topic_codes);
    }
    if !entries.is_empty() {
        if let Err((error, _)) = kafka.commit_offsets(group, entries).await {
            for (topic, partition) in positions {
                codes[topic][partition] = error.code();
            }
        }
    }
    let topics = request
        .topics
        .into_iter()
        .zip(codes)
        .map(|(topic, codes)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .zip(codes)
                        .map(|(partition, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Handles OffsetFetch (v1–7: one group; every partition the group
/// committed when no topics are named).
pub fn offset_fetch(
    kafka: &Kafka,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    // Before v2 there is no group-level error: every partition carries it.
    let refused = |code: i16,
                   topics: Option<
        Vec<kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic>,
    >| {
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code);
        }
        let topics = topics
            .unwrap_or_default()
            .into_iter()
            .map(|topic| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(
                        topic
                            .partition_indexes
                            .into_iter()
                            .map(|index| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(-1)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    };
    if let Some(error) = group_id_error(&group) {
        return refused(error.code(), request.topics);
    }
    if let Err(error) = kafka.coordinates(&group) {
        return refused(error.code(), request.topics);
    }
    let committed = match kafka.committed_offsets(&group) {
        Ok(committed) => committed,
        Err(error) => return refused(error.code(), request.topics),
    };
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
            .collect(),
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for (topic, partition, _) in &committed {
                match all.last_mut() {
                    Some((last, partitions)) if last == topic => partitions.push(*partition as i32),
                    _ => all.push((topic.clone(), vec![*partition as i32])),
                }
            }
            all
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    let found = committed
                        .iter()
                        .find(|(name, partition, _)| *name == topic && *partition as i32 == index);
                    let answer = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_leader_epoch(-1);
                    match found {
                        Some((_, _, offset)) => answer
                            .with_committed_offset(offset.offset as i64)
                            .with_metadata(Some(text(offset.metadata.clone()))),
                        None => answer
                            .with_committed_offset(-1)
                            .with_metadata(Some(text(""))),
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// Handles DescribeGroups.
pub fn describe_groups(
    kafka: &Kafka,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group| {
            let described = DescribedGroup::default().with_group_id(group.clone());
            if let Err(error) = kafka.coordinates(&group.0) {
                return described.with_error_code(error.code());
            }
            match kafka.coordinator.describe(&group.0) {
                Some(description) => described
                    .with_group_state(text(description.state.name()))
                    .with_protocol_type(text(description.protocol_type))
                    .with_protocol_data(text(description.protocol))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|member| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(member.member_id))
                                    .with_group_instance_id(
                                        member.instance_id.filter(|_| version >= 4).map(text),
                                    )
                                    .with_client_id(text(member.client_id))
                                    .with_client_host(text(member.client_host))
                                    .with_member_metadata(member.metadata)
                                    .with_member_assignment(member.assignment)
                            })
                            .collect(),
                    )
                    .with_authorized_operations(i32::MIN),
                None => {
                    let known = kafka
                        .log
                        .committed_offsets(&group.0)
                        .is_ok_and(|offsets| !offsets.is_empty());
                    // Kafka describes a group it does not know as Dead.
                    described
                        .with_group_state(text(if known { "Empty" } else { "Dead" }))
                        .with_protocol_type(text(if known { "consumer" } else { "" }))
                        .with_authorized_operations(i32::MIN)
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Handles ListGroups: groups with members, and groups known only by
/// their committed offsets (as `Empty`).
pub fn list_groups(kafka: &Kafka, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut seen = BTreeSet::new();
    let mut listed = Vec::new();
    for (name, state, protocol_type) in kafka.coordinator.list() {
        seen.insert(name.clone());
        listed.push((name, state, protocol_type));
    }
    for name in kafka.groups_with_offsets() {
        if seen.insert(name.clone()) {
            listed.push((name, GroupState::Empty, "consumer".into()));
        }
    }
    let groups = listed
        .into_iter()
        .filter(|(_, state, _)| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
        })
        .map(|(name, state, protocol_type)| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(name)))
                .with_protocol_type(text(protocol_type));
            match version {
                0..=3 => listed,
                4 => listed.with_group_state(text(state.name())),
                _ => listed
                    .with_group_state(text(state.name()))
                    .with_group_type(text("classic")),
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// Handles DeleteGroups: only groups without members, with their offsets.
pub async fn delete_groups(
    kafka: &Arc<Kafka>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group in request.groups_names {
        let name = group.0.to_string();
        // Known to the coordinator (members, or empty after they left),
        // before it is removed: such a group is deleted even without
        // offsets.
        let known = kafka.coordinator.describe(&group.0).is_some();
        let code = match kafka.coordinator.remove_if_empty(&name) {
            Err(error) => error.code(),
            Ok(()) => match kafka.delete_group_offsets(name).await {
                Ok(0) if !known => ResponseError::GroupIdNotFound.code(),
                Ok(_) => 0,
                Err(error) => error.code(),
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Handles InitProducerId for idempotent producers: a new durable id with
/// epoch 0, always, as Kafka answers a request without a transactional id
/// (a producer bumping its epoch after KIP-360 names its current id and
/// epoch, and gets a fresh id: the id it names is not trusted, so that no
/// client can take over, and fence, another producer's id).
pub async fn init_producer_id(
    kafka: &Arc<Kafka>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match request.transactional_id.as_ref().map(|id| id.as_str()) {
        None => {}
        Some("") => return failed(ResponseError::InvalidRequest),
        Some(_) => return failed(ResponseError::TransactionalIdAuthorizationFailed),
    }
    match allocate_producer_id(kafka).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => failed(error),
    }
}

/// A producer id no other producer has had: on one node from its own
/// blocks; in a cluster from the blocks the controller hands this node
/// (KIP-730), asked for when the one in use runs out.
async fn allocate_producer_id(kafka: &Arc<Kafka>) -> Result<i64, ResponseError> {
    let Some(replication) = kafka.leaders.replication() else {
        let kafka = Arc::clone(kafka);
        return off_loop(move || kafka.producer_ids.allocate())
            .await
            .map_err(storage_failed);
    };
    // Concurrent requests may each take a block; one that finds its block
    // already behind the floor asks again.
    for _ in 0..3 {
        if let Some(id) = kafka.producer_ids.take() {
            return Ok(id);
        }
        let floor = kafka.producer_ids.floor().unsigned_abs();
        let (first, count) = block_from_controller(replication, floor).await?;
        let adopter = Arc::clone(kafka);
        off_loop(move || adopter.producer_ids.adopt(first, count))
            .await
            .map_err(storage_failed)?;
    }
    Err(ResponseError::CoordinatorLoadInProgress)
}

/// How long InitProducerId waits for the controller to hand this node a
/// block of producer ids before it answers COORDINATOR_LOAD_IN_PROGRESS
/// (clients retry it; a client that times the request out itself, as
/// kafka-python does after its `request_timeout_ms`, gives up for good).
/// A block asked for goes on being made meanwhile: the retry finds it.
const BLOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A block of producer ids the controller handed this node, from `floor`
/// up, within [`BLOCK_WAIT`].
async fn block_from_controller(
    replication: &dyn Replication,
    floor: u64,
) -> Result<(i64, i64), ResponseError> {
    let asked = tokio::time::timeout(BLOCK_WAIT, replication.producer_id_block(floor)).await;
    let (first, count) = asked
        .unwrap_or(Err((ResponseError::RequestTimedOut, None)))
        .map_err(|(error, message)| {
            tracing::warn!(
                ?error,
                detail = ?message,
                "no block of producer ids from the controller"
            );
            match error {
                // Retried by the clients, as Kafka's broker answers while
                // its controller has no block for it.
                ResponseError::RequestTimedOut => ResponseError::CoordinatorLoadInProgress,
                error => error,
            }
        })?;
    match (i64::try_from(first), i64::try_from(count)) {
        (Ok(first), Ok(count)) => Ok((first, count)),
        _ => Err(ResponseError::UnknownServerError),
    }
}

fn storage_failed(error: ProducerIdError) -> ResponseError {
    tracing::error!(%error, "allocating a producer id failed");
    ResponseError::KafkaStorageError
}
