//! The walk's schemas against `kafka-protocol`'s encoder: requests with
//! every array populated, encoded at every advertised version, must be
//! accepted and consumed to their last byte; a count that cannot fit is
//! refused before anything is allocated.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;
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
fn populated(api: ApiKey) -> RequestKind {
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
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(two(GroupId(text("g")))),
        ),
        other => panic!("no populated request for {other:?}"),
    }
}

/// Version-specific arrays the populated requests leave empty.
fn versioned(api: ApiKey, version: i16) -> Option<RequestKind> {
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
        ApiKey::ListGroups if version >= 4 => Some(RequestKind::ListGroups(
            ListGroupsRequest::default().with_states_filter(vec![text("Stable")]),
        )),
        _ => None,
    }
}

/// The request encoded, if every field it sets exists in this version.
fn encode(request: &RequestKind, version: i16) -> Option<Vec<u8>> {
    let mut bytes = BytesMut::new();
    request.encode(&mut bytes, version).ok()?;
    Some(bytes.to_vec())
}

#[test]
fn every_advertised_version_walks_to_the_last_byte() {
    let mut checked = 0;
    for api in SUPPORTED {
        for version in api.min..=api.max {
            let mut requests = vec![populated(api.key)];
            requests.extend(versioned(api.key, version));
            let mut encoded = 0;
            for request in requests {
                let Some(bytes) = encode(&request, version) else {
                    continue;
                };
                encoded += 1;
                let consumed = check_consumed(api.key, version, &bytes).unwrap_or_else(|error| {
                    panic!("{:?} v{version} refused: {error}\n{request:?}", api.key)
                });
                assert_eq!(
                    consumed,
                    bytes.len(),
                    "{:?} v{version}: the walk took {consumed} of {} bytes",
                    api.key,
                    bytes.len()
                );
                // Every strict prefix is refused: nothing is read past the end.
                for cut in 0..bytes.len() {
                    assert!(
                        check_consumed(api.key, version, &bytes[..cut]).is_err() || cut == consumed,
                        "{:?} v{version} accepted a request cut at {cut} of {}",
                        api.key,
                        bytes.len()
                    );
                }
                checked += 1;
            }
            assert!(
                encoded > 0,
                "no request of {:?} v{version} encodes",
                api.key
            );
        }
    }
    assert!(checked > 100, "only {checked} requests checked");
}

#[test]
fn a_count_that_cannot_fit_is_refused_before_decoding() {
    // Metadata v0: an array of 54,265,856 topics in 5 bytes (the reproducer
    // of kafka-protocol-rs pull request 152).
    let body = [0x03, 0x3c, 0x0c, 0x00, 0xb6];
    let error = check(ApiKey::Metadata, 0, &body).unwrap_err();
    assert!(
        error.contains("cannot fit") || error.contains("exceeds"),
        "{error}"
    );
    // A flexible count past the limit.
    let mut produce = Vec::new();
    produce.push(0); // null transactional id (compact)
    produce.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
    produce.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // 2^31 topics
    let error = check(ApiKey::Produce, 9, &produce).unwrap_err();
    assert!(
        error.contains("exceeds") || error.contains("cannot fit"),
        "{error}"
    );
    // A string longer than the bytes left.
    let join = [0, 200, b'g'];
    assert!(check(ApiKey::JoinGroup, 0, &join).is_err());
}
