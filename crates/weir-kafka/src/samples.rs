//! Sample requests of every API weir implements, at every advertised
//! version: every array populated (two elements, whose own arrays are
//! populated too), fields at their defaults elsewhere. The shape check's
//! tests, the fuzz seeds and the session tests use them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::versions::SUPPORTED;

fn two<T: Clone>(element: T) -> Vec<T> {
    vec![element.clone(), element]
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// A request of each API with every array holding two elements whose own
/// arrays are populated too (fields at their defaults elsewhere, which
/// every version can encode).
pub fn populated(api: ApiKey) -> RequestKind {
    match api {
        ApiKey::Produce => RequestKind::Produce(
            ProduceRequest::default().with_topic_data(two(
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(text("topic")))
                    .with_partition_data(two(produce_request::PartitionProduceData::default()
                        .with_records(Some(Bytes::from_static(b"records"))))),
            )),
        ),
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_topics(two(fetch_request::FetchTopic::default()
                    .with_topic(TopicName(text("t")))
                    .with_partitions(two(fetch_request::FetchPartition::default()))))
                .with_forgotten_topics_data(two(
                    fetch_request::ForgottenTopic::default().with_partitions(vec![1, 2])
                )),
        ),
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default().with_topics(two(
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_partitions(two(list_offsets_request::ListOffsetsPartition::default())),
            )),
        ),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(two(metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(text("t"))))))),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(text("g")))
                .with_topics(two(
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text("t")))
                        .with_partitions(two(
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_metadata(Some(text("meta"))),
                        )),
                )),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(text("g")))
                .with_topics(Some(two(
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(TopicName(text("t")))
                        .with_partition_indexes(vec![0, 1, 2]),
                ))),
        ),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(text("g")))
                .with_protocol_type(text("consumer"))
                .with_protocols(two(join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(b"metadata")))),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default().with_assignments(two(
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(text("m"))
                    .with_assignment(Bytes::from_static(b"assignment")),
            )),
        ),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(two(GroupId(text("g")))),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(text("PLAIN")),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default().with_topics(two(
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_assignments(two(
                        create_topics_request::CreatableReplicaAssignment::default()
                            .with_broker_ids(vec![BrokerId(0), BrokerId(1)]),
                    ))
                    .with_configs(two(create_topics_request::CreatableTopicConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text("1000"))))),
            )),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(two(
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_name(text("t"))
                    .with_configuration_keys(Some(two(text("retention.ms")))),
            )),
        ),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p")),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default().with_resources(two(
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("t"))
                    .with_configs(two(alter_configs_request::AlterableConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text("1000"))))),
            )),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(two(
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("t"))
                    .with_configs(two(
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(text("retention.ms"))
                            .with_value(Some(text("1000"))),
                    )),
            )),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(two(GroupId(text("g")))),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default().with_topics(two(
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_count(3)
                    .with_assignments(Some(two(
                        create_partitions_request::CreatePartitionsAssignment::default()
                            .with_broker_ids(vec![BrokerId(0), BrokerId(1)]),
                    ))),
            )),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(two(
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_partitions(two(
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_replicas(Some(vec![BrokerId(1), BrokerId(2)])),
                    )),
            )),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_topics(Some(two(
                list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(text("t")))
                    .with_partition_indexes(vec![0, 1]),
            ))),
        ),
        ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(
            DescribeQuorumRequest::default().with_topics(two(
                describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(text(crate::handlers::quorum::METADATA_TOPIC)))
                    .with_partitions(two(describe_quorum_request::PartitionData::default())),
            )),
        ),
        other => panic!("no populated request for {other:?}"),
    }
}

/// Version-specific arrays the populated requests leave empty.
pub fn versioned(api: ApiKey, version: i16) -> Option<RequestKind> {
    match api {
        ApiKey::FindCoordinator if version >= 4 => Some(RequestKind::FindCoordinator(
            FindCoordinatorRequest::default().with_coordinator_keys(vec![text("a"), text("b")]),
        )),
        ApiKey::LeaveGroup if version >= 3 => Some(RequestKind::LeaveGroup(
            LeaveGroupRequest::default().with_members(vec![
                leave_group_request::MemberIdentity::default()
                    .with_member_id(text("m"));
                2
            ]),
        )),
        ApiKey::DeleteTopics if version >= 6 => Some(RequestKind::DeleteTopics(
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(TopicName(text("t"))));
                2
            ]),
        )),
        ApiKey::DeleteTopics => Some(RequestKind::DeleteTopics(
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("t")); 2]),
        )),
        ApiKey::Fetch if version < 7 => Some(RequestKind::Fetch(
            FetchRequest::default().with_topics(two(fetch_request::FetchTopic::default()
                .with_topic(TopicName(text("t")))
                .with_partitions(two(fetch_request::FetchPartition::default())))),
        )),
        ApiKey::CreatePartitions => Some(RequestKind::CreatePartitions(
            CreatePartitionsRequest::default().with_topics(two(
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_count(3),
            )),
        )),
        ApiKey::ListGroups if version >= 4 => Some(RequestKind::ListGroups(
            ListGroupsRequest::default().with_states_filter(vec![text("Stable")]),
        )),
        _ => None,
    }
}

/// Every (API, version, request) whose request encodes at that version.
pub fn requests() -> Vec<(ApiKey, i16, RequestKind)> {
    let mut all = Vec::new();
    for api in SUPPORTED {
        for version in api.min..=api.max {
            let mut candidates = vec![populated(api.key)];
            candidates.extend(versioned(api.key, version));
            for request in candidates {
                if encode_body(&request, version).is_some() {
                    all.push((api.key, version, request));
                }
            }
        }
    }
    all
}

/// The request's body encoded, if every field it sets exists in this
/// version.
pub fn encode_body(request: &RequestKind, version: i16) -> Option<Vec<u8>> {
    let mut bytes = BytesMut::new();
    request.encode(&mut bytes, version).ok()?;
    Some(bytes.to_vec())
}

/// A whole request frame (without the size prefix): header and body.
pub fn frame(api: ApiKey, version: i16, correlation_id: i32, request: &RequestKind) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("weir-test")));
    let mut bytes = BytesMut::new();
    header
        .encode(&mut bytes, api.request_header_version(version))
        .expect("a request header encodes");
    request
        .encode(&mut bytes, version)
        .unwrap_or_else(|error| panic!("{api:?} v{version} does not encode: {error}"));
    bytes.to_vec()
}

/// A record batch of `count` records of an idempotent producer (or of
/// none when `producer_id` is -1), as a client sends it.
pub fn batch(producer_id: i64, base_sequence: i32, count: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("value-{i}").into_bytes())
        .collect();
    let records: Vec<weir_log::Record<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, value)| weir_log::Record::keyed(1_700_000_000_000 + i as i64, b"key", value))
        .collect();
    let producer = weir_log::ProducerInfo {
        producer_id,
        producer_epoch: if producer_id < 0 { -1 } else { 0 },
        base_sequence: if producer_id < 0 { -1 } else { base_sequence },
    };
    let mut bytes = Vec::new();
    weir_log::batch::encode(&records, producer, &mut bytes).expect("sample records encode");
    Bytes::from(bytes)
}

/// A produce request of one batch to one partition.
pub fn produce(topic: &str, partition: i32, acks: i16, records: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ])]),
    )
}

/// A fetch of one partition from `offset`.
pub fn fetch(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    )
}

/// A session as a client runs it: versions, metadata (creating the
/// topic), an idempotent producer's id and two batches (one retried),
/// fetches, offsets by time, a group member's join, sync, heartbeat,
/// commit, offset fetch and leave.
pub fn session() -> Vec<(ApiKey, i16, RequestKind)> {
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    let group = || GroupId(StrBytes::from_static_str("billing"));
    let join = |member: &'static str| {
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(StrBytes::from_static_str(member))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"m"))]),
        )
    };
    vec![
        (
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ),
        (
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(
                MetadataRequest::default()
                    .with_allow_auto_topic_creation(true)
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic()))])),
            ),
        ),
        (
            ApiKey::InitProducerId,
            4,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ),
        ),
        (ApiKey::Produce, 9, produce("orders", 0, -1, batch(0, 0, 3))),
        (ApiKey::Produce, 9, produce("orders", 0, -1, batch(0, 0, 3))),
        (ApiKey::Produce, 7, produce("orders", 0, 1, batch(0, 3, 2))),
        (ApiKey::Fetch, 12, fetch("orders", 0, 0, 0)),
        (ApiKey::Fetch, 4, fetch("orders", 0, 4, 0)),
        (
            ApiKey::ListOffsets,
            6,
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2),
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_timestamp(1_700_000_000_001),
                    ]),
            ])),
        ),
        (
            ApiKey::OffsetCommit,
            7,
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(group())
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(5)
                                    .with_committed_metadata(Some(StrBytes::from_static_str(
                                        "kept",
                                    ))),
                            ]),
                    ]),
            ),
        ),
        (
            ApiKey::FindCoordinator,
            2,
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("billing")),
            ),
        ),
        (ApiKey::JoinGroup, 5, join("weir-test-member")),
        (ApiKey::JoinGroup, 3, join("")),
        (
            ApiKey::OffsetFetch,
            7,
            RequestKind::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_group_id(group())
                    .with_topics(None),
            ),
        ),
        (
            ApiKey::ListGroups,
            4,
            RequestKind::ListGroups(ListGroupsRequest::default()),
        ),
        (
            ApiKey::DescribeGroups,
            5,
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![group()]),
            ),
        ),
    ]
}
