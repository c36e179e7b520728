//! Sessions through the request handlers, in process, on a simulated
//! disk: what a client sees for the cases real clients reach only by
//! accident (retried batches, fetches at the high watermark, bad frames,
//! SASL refusals).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use weir_kafka::connection::{handle_frame, Outcome};
use weir_kafka::fuzzing::{
    kafka_on_sim_storage, kafka_on_sim_storage_led, kafka_on_sim_storage_with,
};
use weir_kafka::handlers::Session;
use weir_kafka::node::SeamFuture;
use weir_kafka::reply::Reply;
use weir_kafka::samples::{self, batch, fetch, produce};
use weir_kafka::{Kafka, KafkaSettings, Leaders, NodeAddress, SingleNode};
use weir_log::{BrokerConfig, FlushPolicy, LogConfig};

fn kafka() -> Arc<Kafka> {
    kafka_on_sim_storage(3, KafkaSettings::default())
}

fn session() -> Session {
    Session {
        peer: "test".into(),
        ..Session::default()
    }
}

fn decode(api: ApiKey, version: i16, reply: &Reply) -> ResponseKind {
    let bytes = reply.contiguous();
    let size = i32::from_be_bytes(bytes[..4].try_into().expect("a size prefix"));
    assert_eq!(
        size as usize,
        bytes.len() - 4,
        "the size prefix counts the rest"
    );
    let mut body = bytes.slice(4..);
    ResponseHeader::decode(&mut body, api.response_header_version(version)).expect("header");
    ResponseKind::decode(api, &mut body, version).expect("response")
}

async fn call(
    kafka: &Arc<Kafka>,
    session: &mut Session,
    api: ApiKey,
    version: i16,
    request: RequestKind,
) -> Option<ResponseKind> {
    let frame = samples::frame(api, version, 7, &request);
    let outcome = match handle_frame(kafka, session, Bytes::from(frame)).await {
        Outcome::Later(later) => later.0.await,
        outcome => outcome,
    };
    match outcome {
        Outcome::Later(_) => panic!("{api:?} v{version} deferred twice"),
        Outcome::Reply(bytes) => Some(decode(api, version, &bytes)),
        Outcome::Nothing => None,
        Outcome::Close(_, reason) => panic!("{api:?} v{version} closed the connection: {reason}"),
    }
}

async fn produce_at(kafka: &Arc<Kafka>, session: &mut Session, records: Bytes) -> (i16, i64) {
    let Some(ResponseKind::Produce(response)) = call(
        kafka,
        session,
        ApiKey::Produce,
        9,
        produce("orders", 0, -1, records),
    )
    .await
    else {
        panic!("no produce response");
    };
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

async fn create_topic(kafka: &Arc<Kafka>, session: &mut Session) {
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders")))),
    ])));
    let Some(ResponseKind::Metadata(response)) =
        call(kafka, session, ApiKey::Metadata, 1, request).await
    else {
        panic!("no metadata response");
    };
    assert_eq!(response.topics[0].error_code, 0, "auto-created");
}

#[tokio::test]
async fn an_unknown_api_versions_version_gets_the_v0_fallback() {
    let kafka = kafka();
    let mut frame = samples::frame(
        ApiKey::ApiVersions,
        3,
        1,
        &RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    frame[2..4].copy_from_slice(&99i16.to_be_bytes());
    let Outcome::Reply(bytes) = handle_frame(&kafka, &mut session(), Bytes::from(frame)).await
    else {
        panic!("no fallback reply");
    };
    let ResponseKind::ApiVersions(response) = decode(ApiKey::ApiVersions, 0, &bytes) else {
        unreachable!()
    };
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code()
    );
    let produce = response
        .api_keys
        .iter()
        .find(|api| api.api_key == ApiKey::Produce as i16)
        .expect("produce advertised");
    assert_eq!((produce.min_version, produce.max_version), (3, 10));
}

#[tokio::test]
async fn unsupported_versions_unknown_apis_and_bad_bodies_close_the_connection_only() {
    let kafka = kafka();
    let metadata = RequestKind::Metadata(MetadataRequest::default());
    let mut old = samples::frame(ApiKey::Metadata, 1, 1, &metadata);
    old[2..4].copy_from_slice(&13i16.to_be_bytes());
    let mut unknown = old.clone();
    unknown[0..2].copy_from_slice(&999i16.to_be_bytes());
    let mut huge = samples::frame(ApiKey::Metadata, 1, 1, &metadata);
    let body = huge.len() - 4;
    huge[body..].copy_from_slice(&0x7fff_ffffi32.to_be_bytes());
    for frame in [old, unknown, huge, vec![0, 0, 0]] {
        let outcome = handle_frame(&kafka, &mut session(), Bytes::from(frame)).await;
        assert!(matches!(outcome, Outcome::Close(None, _)), "{outcome:?}");
    }
    // Another client is served as before.
    create_topic(&kafka, &mut session()).await;
}

#[tokio::test]
async fn a_retried_batch_gets_its_original_offsets_and_is_stored_once() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    let Some(ResponseKind::InitProducerId(id)) = call(
        &kafka,
        &mut session,
        ApiKey::InitProducerId,
        4,
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
    )
    .await
    else {
        panic!("no producer id");
    };
    let producer = id.producer_id.0;
    assert_eq!((id.error_code, id.producer_epoch), (0, 0));
    assert_eq!(
        produce_at(&kafka, &mut session, batch(producer, 0, 3)).await,
        (0, 0)
    );
    assert_eq!(
        produce_at(&kafka, &mut session, batch(producer, 0, 3)).await,
        (0, 0),
        "the retry"
    );
    assert_eq!(
        produce_at(&kafka, &mut session, batch(producer, 3, 2)).await,
        (0, 3)
    );
    let (error, _) = produce_at(&kafka, &mut session, batch(producer, 9, 1)).await;
    assert_eq!(error, ResponseError::OutOfOrderSequenceNumber.code());
    let log = kafka.log.partition("orders", 0).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (5, 5));
    assert_eq!(log.stats().duplicates, 1);
}

/// Fetch v11 of partition 0 of `orders` at `offset`: the partition's answer.
async fn fetch_orders(
    kafka: &Arc<Kafka>,
    session: &mut Session,
    offset: i64,
) -> fetch_response::PartitionData {
    let Some(ResponseKind::Fetch(response)) = call(
        kafka,
        session,
        ApiKey::Fetch,
        11,
        fetch("orders", 0, offset, 0),
    )
    .await
    else {
        panic!("no fetch response");
    };
    response.responses[0].partitions[0].clone()
}

#[tokio::test]
async fn fetches_stop_at_the_high_watermark() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    produce_at(&kafka, &mut session, batch(-1, 0, 4)).await;
    let fetched = |offset| {
        let kafka = Arc::clone(&kafka);
        async move { fetch_orders(&kafka, &mut Session::default(), offset).await }
    };
    let whole = fetched(2).await;
    assert_eq!((whole.error_code, whole.high_watermark), (0, 4));
    let records = whole.records.expect("records");
    assert_eq!(
        i64::from_be_bytes(records[..8].try_into().unwrap()),
        0,
        "the whole batch holding offset 2"
    );
    let at_end = fetched(4).await;
    assert_eq!(at_end.error_code, 0);
    assert!(at_end.records.unwrap_or_default().is_empty());
    let beyond = fetched(5).await;
    assert_eq!(beyond.error_code, ResponseError::OffsetOutOfRange.code());
}

/// One node that leads everything, whose lead is confirmed or not as the
/// test says; it counts the confirmations asked.
#[derive(Debug)]
struct Doubtful {
    node: SingleNode,
    confirms: bool,
    asked: Arc<AtomicUsize>,
}

impl Leaders for Doubtful {
    fn node_id(&self) -> i32 {
        self.node.node_id()
    }

    fn nodes(&self) -> Vec<NodeAddress> {
        self.node.nodes()
    }

    fn leader(&self, topic: &str, partition: u32) -> Option<i32> {
        self.node.leader(topic, partition)
    }

    fn confirm_lead(&self, _topic: &str, _partition: u32) -> SeamFuture<Result<(), ResponseError>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let confirms = self.confirms;
        Box::pin(async move {
            match confirms {
                true => Ok(()),
                false => Err(ResponseError::NotLeaderOrFollower),
            }
        })
    }
}

#[tokio::test]
async fn a_fetch_beyond_the_end_is_out_of_range_only_once_the_lead_is_confirmed() {
    for confirms in [true, false] {
        let asked = Arc::new(AtomicUsize::new(0));
        let leaders = Doubtful {
            node: SingleNode::new("127.0.0.1", 9092),
            confirms,
            asked: Arc::clone(&asked),
        };
        let settings = KafkaSettings::default();
        let kafka =
            kafka_on_sim_storage_led(3, settings, BrokerConfig::default(), Box::new(leaders));
        let mut session = session();
        create_topic(&kafka, &mut session).await;
        produce_at(&kafka, &mut session, batch(-1, 0, 4)).await;
        let mut answers = Vec::new();
        for offset in [2, 4, 5] {
            answers.push(fetch_orders(&kafka, &mut session, offset).await.error_code);
        }
        let beyond = match confirms {
            true => ResponseError::OffsetOutOfRange.code(),
            false => ResponseError::NotLeaderOrFollower.code(),
        };
        assert_eq!(answers, [0, 0, beyond], "lead confirmed: {confirms}");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one confirmation, for the offset beyond the end only"
        );
    }
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_a_waiting_fetch_wakes_on_append() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    let waiting = {
        let kafka = Arc::clone(&kafka);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let response = call(
                &kafka,
                &mut Session::default(),
                ApiKey::Fetch,
                12,
                fetch("orders", 0, 0, 20_000),
            )
            .await;
            (response, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let none = call(
        &kafka,
        &mut session,
        ApiKey::Produce,
        9,
        produce("orders", 0, 0, batch(-1, 0, 2)),
    )
    .await;
    assert!(none.is_none(), "acks=0 is answered");
    let (response, waited) = waiting.await.unwrap();
    let Some(ResponseKind::Fetch(response)) = response else {
        panic!("no fetch response")
    };
    let partition = &response.responses[0].partitions[0];
    assert!(!partition.records.clone().unwrap_or_default().is_empty());
    assert!(
        waited < Duration::from_secs(10),
        "woken after {waited:?}, not by the append"
    );
}

#[tokio::test]
async fn sasl_plain_is_required_and_wrong_passwords_are_refused() {
    let mut settings = KafkaSettings::default();
    settings.users.insert("alice".into(), "wonderland".into());
    let kafka = kafka_on_sim_storage(5, settings);
    let metadata = samples::frame(
        ApiKey::Metadata,
        1,
        1,
        &RequestKind::Metadata(MetadataRequest::default()),
    );
    let early = handle_frame(&kafka, &mut session(), Bytes::from(metadata.clone())).await;
    assert!(matches!(early, Outcome::Close(None, _)), "{early:?}");
    for (password, accepted) in [("nope", false), ("wonderland", true)] {
        let mut session = session();
        let handshake = RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        let Some(ResponseKind::SaslHandshake(shake)) =
            call(&kafka, &mut session, ApiKey::SaslHandshake, 1, handshake).await
        else {
            panic!("no handshake response");
        };
        assert_eq!(shake.error_code, 0);
        let token = Bytes::from(format!("\0alice\0{password}"));
        let frame = samples::frame(
            ApiKey::SaslAuthenticate,
            2,
            2,
            &RequestKind::SaslAuthenticate(
                SaslAuthenticateRequest::default().with_auth_bytes(token),
            ),
        );
        let outcome = handle_frame(&kafka, &mut session, Bytes::from(frame)).await;
        match (outcome, accepted) {
            (Outcome::Reply(bytes), true) => {
                let ResponseKind::SaslAuthenticate(response) =
                    decode(ApiKey::SaslAuthenticate, 2, &bytes)
                else {
                    unreachable!()
                };
                assert_eq!(response.error_code, 0);
                let after = handle_frame(&kafka, &mut session, Bytes::from(metadata.clone())).await;
                assert!(matches!(after, Outcome::Reply(_)));
            }
            (Outcome::Close(Some(bytes), reason), false) => {
                let ResponseKind::SaslAuthenticate(response) =
                    decode(ApiKey::SaslAuthenticate, 2, &bytes)
                else {
                    unreachable!()
                };
                assert_eq!(
                    response.error_code,
                    ResponseError::SaslAuthenticationFailed.code()
                );
                assert!(reason.contains("alice"), "{reason}");
            }
            (other, accepted) => panic!("password accepted={accepted}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_flow_is_answered_throughout() {
    let kafka = kafka();
    let mut session = session();
    for (api, version, request) in samples::session() {
        call(&kafka, &mut session, api, version, request).await;
    }
    let committed = kafka.log.committed_offset("billing", "orders", 0).unwrap();
    assert_eq!(
        committed.map(|c| (c.offset, c.metadata)),
        Some((5, "kept".to_string()))
    );
}

#[tokio::test]
async fn a_fetch_never_returns_records_written_but_not_yet_durable() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    produce_at(&kafka, &mut session, batch(-1, 0, 2)).await;
    // Written, not synced: above the high watermark.
    let log = kafka.log.partition("orders", 0).unwrap();
    let unsynced = batch(-1, 0, 3).to_vec();
    log.write_batch(&unsynced).unwrap();
    assert_eq!((log.high_watermark(), log.log_end_offset()), (2, 5));
    let Some(ResponseKind::Fetch(response)) = call(
        &kafka,
        &mut session,
        ApiKey::Fetch,
        12,
        fetch("orders", 0, 0, 0),
    )
    .await
    else {
        panic!("no fetch response");
    };
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.high_watermark, 2);
    let records = partition.records.clone().unwrap_or_default();
    let mut last = 0;
    let mut rest = &records[..];
    while rest.len() >= 61 {
        let base = i64::from_be_bytes(rest[..8].try_into().unwrap());
        let length = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(rest[23..27].try_into().unwrap()) as i64;
        last = base + delta;
        rest = &rest[12 + length..];
    }
    assert_eq!(last, 1, "a record above the high watermark was returned");
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

#[tokio::test]
async fn a_fetch_response_keeps_to_its_max_bytes_after_its_first_batch() {
    let kafka = kafka();
    let mut session = session();
    let create = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(1_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(text("wide")))
                .with_num_partitions(3)
                .with_replication_factor(1)]),
    );
    let Some(ResponseKind::CreateTopics(created)) =
        call(&kafka, &mut session, ApiKey::CreateTopics, 5, create).await
    else {
        panic!("no CreateTopics response");
    };
    assert_eq!(created.topics[0].error_code, 0);
    let records = batch(-1, 0, 100);
    for partition in 0..3 {
        let request = produce("wide", partition, -1, records.clone());
        let Some(ResponseKind::Produce(response)) =
            call(&kafka, &mut session, ApiKey::Produce, 9, request).await
        else {
            panic!("no produce response");
        };
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
    let fetch_all = |max_bytes: i32| {
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(max_bytes)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(TopicName(text("wide")))
                    .with_partitions(
                        (0..3)
                            .map(|partition| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(partition)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]),
        )
    };
    let sizes = |response: &FetchResponse| -> Vec<usize> {
        response.responses[0]
            .partitions
            .iter()
            .map(|partition| partition.records.as_ref().map_or(0, Bytes::len))
            .collect()
    };
    let one = records.len();
    // A limit below one batch: the first batch still comes (the consumer
    // must progress), nothing after it.
    let Some(ResponseKind::Fetch(response)) =
        call(&kafka, &mut session, ApiKey::Fetch, 11, fetch_all(1)).await
    else {
        panic!("no fetch response");
    };
    assert_eq!(sizes(&response), vec![one, 0, 0]);
    // Room for two batches and a half: two.
    let limit = i32::try_from(one * 5 / 2).unwrap();
    let Some(ResponseKind::Fetch(response)) =
        call(&kafka, &mut session, ApiKey::Fetch, 11, fetch_all(limit)).await
    else {
        panic!("no fetch response");
    };
    assert_eq!(sizes(&response), vec![one, one, 0]);
    // The partitions left out are not errors: their high watermarks are there.
    assert!(response.responses[0]
        .partitions
        .iter()
        .all(|partition| partition.error_code == 0 && partition.high_watermark == 100));
}

#[tokio::test]
async fn init_producer_id_always_allocates_a_new_id_as_kafka_does() {
    let kafka = kafka();
    let mut session = session();
    let init = |id: i64, epoch: i16, transactional: Option<&str>| {
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(transactional.map(|id| TransactionalId(text(id))))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
        )
    };
    let mut answers = Vec::new();
    for request in [init(-1, -1, None), init(-1, -1, None)] {
        let Some(ResponseKind::InitProducerId(response)) =
            call(&kafka, &mut session, ApiKey::InitProducerId, 4, request).await
        else {
            panic!("no InitProducerId response");
        };
        assert_eq!(response.error_code, 0);
        answers.push((response.producer_id.0, response.producer_epoch));
    }
    let (first, second) = (answers[0], answers[1]);
    assert_eq!((first.1, second.1), (0, 0));
    assert_ne!(first.0, second.0);
    // Naming the first producer's id and epoch (a KIP-360 bump) gets a
    // fresh id, not the first's next epoch: the first is not fenced.
    let Some(ResponseKind::InitProducerId(bumped)) = call(
        &kafka,
        &mut session,
        ApiKey::InitProducerId,
        4,
        init(first.0, first.1, None),
    )
    .await
    else {
        panic!("no InitProducerId response");
    };
    assert_eq!(bumped.error_code, 0);
    assert_eq!(bumped.producer_epoch, 0);
    assert!(![first.0, second.0].contains(&bumped.producer_id.0));
    create_topic(&kafka, &mut session).await;
    let (error, offset) = produce_at(&kafka, &mut session, batch(first.0, 0, 2)).await;
    assert_eq!((error, offset), (0, 0), "the first producer still writes");
    // A transactional id: weir has no transactions; an empty one is invalid.
    for (transactional, expected) in [
        ("", ResponseError::InvalidRequest),
        ("tx", ResponseError::TransactionalIdAuthorizationFailed),
    ] {
        let Some(ResponseKind::InitProducerId(response)) = call(
            &kafka,
            &mut session,
            ApiKey::InitProducerId,
            4,
            init(-1, -1, Some(transactional)),
        )
        .await
        else {
            panic!("no InitProducerId response");
        };
        assert_eq!(response.error_code, expected.code(), "{transactional:?}");
    }
}

/// DeleteGroups of `names`: each group's error code.
async fn delete_groups(kafka: &Arc<Kafka>, session: &mut Session, names: &[&str]) -> Vec<i16> {
    let request = RequestKind::DeleteGroups(
        DeleteGroupsRequest::default()
            .with_groups_names(names.iter().map(|name| GroupId(text(name))).collect()),
    );
    let Some(ResponseKind::DeleteGroups(deleted)) =
        call(kafka, session, ApiKey::DeleteGroups, 2, request).await
    else {
        panic!("no DeleteGroups response");
    };
    deleted
        .results
        .iter()
        .map(|result| result.error_code)
        .collect()
}

#[tokio::test]
async fn delete_groups_removes_empty_groups_with_their_offsets_and_refuses_busy_ones() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    // "quiet": offsets committed outside any generation (a consumer that
    // assigns its partitions itself).
    let commit = RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text("quiet")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("orders")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(5),
                    ]),
            ]),
    );
    let Some(ResponseKind::OffsetCommit(committed)) =
        call(&kafka, &mut session, ApiKey::OffsetCommit, 8, commit).await
    else {
        panic!("no OffsetCommit response");
    };
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    // "busy": a member (the member-id round trip, then the join).
    let join = |member: &str| {
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(text("busy")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(text(member))
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"m"))]),
        )
    };
    let Some(ResponseKind::JoinGroup(first)) =
        call(&kafka, &mut session, ApiKey::JoinGroup, 5, join("")).await
    else {
        panic!("no JoinGroup response");
    };
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let Some(ResponseKind::JoinGroup(joined)) = call(
        &kafka,
        &mut session,
        ApiKey::JoinGroup,
        5,
        join(first.member_id.as_str()),
    )
    .await
    else {
        panic!("no JoinGroup response");
    };
    assert_eq!(joined.error_code, 0);
    let codes = delete_groups(&kafka, &mut session, &["quiet", "busy", "never-seen"]).await;
    assert_eq!(
        codes,
        vec![
            0,
            ResponseError::NonEmptyGroup.code(),
            ResponseError::GroupIdNotFound.code()
        ]
    );
    let fetch_offsets = RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text("quiet")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("orders")))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    let Some(ResponseKind::OffsetFetch(fetched)) =
        call(&kafka, &mut session, ApiKey::OffsetFetch, 7, fetch_offsets).await
    else {
        panic!("no OffsetFetch response");
    };
    assert_eq!(
        fetched.topics[0].partitions[0].committed_offset, -1,
        "offsets deleted"
    );
    // The member leaves: the group, empty now and without offsets, is
    // deleted (it exists, so it is not "not found").
    let leave = RequestKind::LeaveGroup(
        LeaveGroupRequest::default()
            .with_group_id(GroupId(text("busy")))
            .with_member_id(joined.member_id.clone()),
    );
    let Some(ResponseKind::LeaveGroup(left)) =
        call(&kafka, &mut session, ApiKey::LeaveGroup, 2, leave).await
    else {
        panic!("no LeaveGroup response");
    };
    assert_eq!(left.error_code, 0);
    let codes = delete_groups(&kafka, &mut session, &["busy", "quiet"]).await;
    assert_eq!(codes, vec![0, ResponseError::GroupIdNotFound.code()]);
}

#[tokio::test]
async fn sasl_handshakes_without_sasl_get_illegal_sasl_state_as_from_kafka() {
    let kafka = kafka();
    let mut session = session();
    let handshake =
        RequestKind::SaslHandshake(SaslHandshakeRequest::default().with_mechanism(text("PLAIN")));
    let Some(ResponseKind::SaslHandshake(response)) =
        call(&kafka, &mut session, ApiKey::SaslHandshake, 1, handshake).await
    else {
        panic!("no SaslHandshake response");
    };
    assert_eq!(response.error_code, ResponseError::IllegalSaslState.code());
    assert!(response.mechanisms.is_empty());
    // The connection goes on: SASL is not required here.
    let Some(ResponseKind::Metadata(_)) = call(
        &kafka,
        &mut session,
        ApiKey::Metadata,
        1,
        RequestKind::Metadata(MetadataRequest::default()),
    )
    .await
    else {
        panic!("no Metadata response");
    };
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_each_once() {
    // Synced before each reply (no reply held back), and not synced (the
    // replies of produces answered at once held back while the next
    // produce is already read).
    for flush in [FlushPolicy::Always, FlushPolicy::Never] {
        let broker = BrokerConfig {
            default_log: LogConfig {
                flush,
                ..LogConfig::default()
            },
        };
        let kafka = kafka_on_sim_storage_with(5, KafkaSettings::default(), broker);
        pipelined_produces_then_a_fetch(kafka).await;
    }
}

async fn pipelined_produces_then_a_fetch(kafka: Arc<Kafka>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    let (client, server) = tokio::io::duplex(1 << 20);
    let serving = tokio::spawn(weir_kafka::connection::serve(
        Arc::clone(&kafka),
        server,
        "pipelined".into(),
    ));
    let (mut from_server, mut to_server) = tokio::io::split(client);
    // Eleven produces, acks=0 among them (no reply), then a fetch, written
    // in one go: the broker holds some produce replies back to write them
    // together, and must still answer each, in order.
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut put = |frame: Vec<u8>| {
        bytes.extend((frame.len() as i32).to_be_bytes());
        bytes.extend(frame);
    };
    // One of them, to a partition that does not exist, is refused at
    // once, while the produces before it may still wait for their sync.
    for correlation in 0..11 {
        let acks = if correlation == 4 { 0 } else { 1 };
        let partition = if correlation == 7 { 99 } else { 0 };
        let request = produce("orders", partition, acks, batch(-1, 0, 2));
        put(samples::frame(ApiKey::Produce, 9, correlation, &request));
        if acks != 0 {
            expected.push(correlation);
        }
    }
    put(samples::frame(
        ApiKey::Fetch,
        11,
        11,
        &fetch("orders", 0, 0, 0),
    ));
    expected.push(11);
    to_server.write_all(&bytes).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        let mut size = [0u8; 4];
        // Generous: the replies are in memory; a lost one must fail the
        // test, not hang it.
        let read = tokio::time::timeout(Duration::from_secs(30), from_server.read_exact(&mut size));
        match read.await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("the connection closed after replies {seen:?}"),
            Err(_) => panic!("no reply after {seen:?} (expected {expected:?})"),
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        from_server.read_exact(&mut body).await.unwrap();
        let correlation = i32::from_be_bytes(body[..4].try_into().unwrap());
        seen.push(correlation);
        if correlation == 11 {
            // The fetch ran after every produce before it was answered
            // (durable, under `always`): it sees all ten batches.
            let mut framed = size.to_vec();
            framed.extend(&body);
            let ResponseKind::Fetch(response) =
                decode(ApiKey::Fetch, 11, &Reply::whole(framed[..].into()))
            else {
                panic!("not a fetch response");
            };
            let partition = &response.responses[0].partitions[0];
            assert_eq!(partition.high_watermark, 20);
        }
    }
    assert_eq!(seen, expected);
    let log = kafka.log.partition("orders", 0).unwrap();
    assert_eq!(log.log_end_offset(), 20, "ten batches of two records");
    // The client closes its side: the connection ends.
    to_server.shutdown().await.unwrap();
    serving.await.unwrap();
}

fn config_change(
    name: &str,
    operation: i8,
    value: Option<&str>,
) -> incremental_alter_configs_request::AlterableConfig {
    incremental_alter_configs_request::AlterableConfig::default()
        .with_name(text(name))
        .with_config_operation(operation)
        .with_value(value.map(text))
}

async fn incremental_alter(
    kafka: &Arc<Kafka>,
    session: &mut Session,
    resources: Vec<(
        i8,
        &str,
        Vec<incremental_alter_configs_request::AlterableConfig>,
    )>,
) -> Vec<i16> {
    let resources = resources
        .into_iter()
        .map(|(resource_type, name, configs)| {
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(name))
                .with_configs(configs)
        })
        .collect();
    let request = RequestKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsRequest::default().with_resources(resources),
    );
    let Some(ResponseKind::IncrementalAlterConfigs(response)) =
        call(kafka, session, ApiKey::IncrementalAlterConfigs, 1, request).await
    else {
        panic!("no IncrementalAlterConfigs response");
    };
    response.responses.iter().map(|r| r.error_code).collect()
}

/// The topic's configs as DescribeConfigs reports them: (name, value,
/// source) of those that are not the node's default.
async fn own_configs(kafka: &Arc<Kafka>, session: &mut Session) -> Vec<(String, String)> {
    let request = RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(
        vec![describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("orders"))
            .with_configuration_keys(None)],
    ));
    let Some(ResponseKind::DescribeConfigs(response)) =
        call(kafka, session, ApiKey::DescribeConfigs, 4, request).await
    else {
        panic!("no DescribeConfigs response");
    };
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    result
        .configs
        .iter()
        .filter(|config| config.config_source == 1)
        .map(|config| {
            let value = config.value.as_ref().map_or("", |value| value.as_str());
            (config.name.to_string(), value.to_string())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// AlterConfigs replaces a topic's configs, IncrementalAlterConfigs
/// changes those it names; DescribeConfigs shows each change at once, the
/// log takes it (a batch above the new `max.message.bytes` is refused),
/// and requests Kafka refuses change nothing.
#[tokio::test]
async fn topic_configs_change_and_take_effect_at_once() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    let errors = incremental_alter(
        &kafka,
        &mut session,
        vec![(
            2,
            "orders",
            vec![
                config_change("retention.ms", 0, Some("60000")),
                config_change("max.message.bytes", 0, Some("200")),
            ],
        )],
    )
    .await;
    assert_eq!(errors, [0]);
    assert_eq!(
        own_configs(&kafka, &mut session).await,
        pairs(&[("max.message.bytes", "200"), ("retention.ms", "60000")])
    );
    let large = batch(-1, -1, 30);
    let (error, _) = produce_at(&kafka, &mut session, large).await;
    assert_eq!(error, ResponseError::MessageTooLarge.code());
    let refused = [
        vec![config_change("retention.ms", 2, Some("1"))],
        vec![config_change("segment.bytes", 0, Some("10"))],
        vec![config_change("cleanup.policy", 0, Some("compact"))],
        vec![config_change("retention.ms", 0, None)],
        vec![
            config_change("retention.ms", 0, Some("1")),
            config_change("retention.ms", 1, None),
        ],
        vec![config_change("retention.ms", 9, Some("1"))],
    ];
    let expected = [
        ResponseError::InvalidConfig,
        ResponseError::InvalidConfig,
        ResponseError::InvalidConfig,
        ResponseError::InvalidRequest,
        ResponseError::InvalidRequest,
        ResponseError::InvalidRequest,
    ];
    for (configs, error) in refused.into_iter().zip(expected) {
        let errors = incremental_alter(&kafka, &mut session, vec![(2, "orders", configs)]).await;
        assert_eq!(errors, [error.code()]);
    }
    let others = incremental_alter(
        &kafka,
        &mut session,
        vec![
            (
                2,
                "absent",
                vec![config_change("retention.ms", 0, Some("1"))],
            ),
            (4, "1", vec![config_change("num.partitions", 0, Some("3"))]),
        ],
    )
    .await;
    assert_eq!(
        others,
        [
            ResponseError::UnknownTopicOrPartition.code(),
            ResponseError::InvalidRequest.code()
        ]
    );
    assert_eq!(
        own_configs(&kafka, &mut session).await,
        pairs(&[("max.message.bytes", "200"), ("retention.ms", "60000")]),
        "refused changes changed nothing"
    );
    let deleted = incremental_alter(
        &kafka,
        &mut session,
        vec![(
            2,
            "orders",
            vec![config_change("max.message.bytes", 1, None)],
        )],
    )
    .await;
    assert_eq!(deleted, [0]);
    let (error, _) = produce_at(&kafka, &mut session, batch(-1, -1, 30)).await;
    assert_eq!(error, 0, "the default batch limit again");
    let request = RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("orders"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(text("segment.ms"))
                .with_value(Some(text("3600000")))]),
    ]));
    let Some(ResponseKind::AlterConfigs(response)) =
        call(&kafka, &mut session, ApiKey::AlterConfigs, 2, request).await
    else {
        panic!("no AlterConfigs response");
    };
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(
        own_configs(&kafka, &mut session).await,
        pairs(&[("segment.ms", "3600000")]),
        "AlterConfigs sets what it names and resets the rest"
    );
}

/// One node alone describes the metadata quorum as itself (leader and only
/// voter, epoch 0, an empty log) and names itself the controller; any
/// other topic or partition is UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test]
async fn one_node_describes_a_quorum_of_itself() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let kafka = kafka();
    let mut session = session();
    let asked = |topic: &'static str, partitions: &[i32]| {
        TopicData::default()
            .with_topic_name(TopicName(text(topic)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|index| PartitionData::default().with_partition_index(*index))
                    .collect(),
            )
    };
    for version in 0..=2 {
        let request =
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
                asked("__cluster_metadata", &[0, 1]),
                asked("orders", &[0]),
            ]));
        let Some(ResponseKind::DescribeQuorum(response)) = call(
            &kafka,
            &mut session,
            ApiKey::DescribeQuorum,
            version,
            request,
        )
        .await
        else {
            panic!("no DescribeQuorum response");
        };
        assert_eq!(response.error_code, 0);
        let described = &response.topics[0].partitions[0];
        assert_eq!(described.error_code, 0);
        assert_eq!(described.leader_id.0, kafka.leaders.node_id());
        assert_eq!(described.leader_epoch, 0);
        assert_eq!(described.high_watermark, 0);
        let voters: Vec<i32> = described
            .current_voters
            .iter()
            .map(|v| v.replica_id.0)
            .collect();
        assert_eq!(voters, [kafka.leaders.node_id()]);
        assert!(described.observers.is_empty());
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(response.topics[0].partitions[1].error_code, unknown);
        assert_eq!(response.topics[0].partitions[1].partition_index, 1);
        assert_eq!(response.topics[1].partitions[0].error_code, unknown);
        assert_eq!(response.topics[1].topic_name.0.as_str(), "orders");
    }
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
    let Some(ResponseKind::Metadata(metadata)) =
        call(&kafka, &mut session, ApiKey::Metadata, 9, request).await
    else {
        panic!("no Metadata response");
    };
    assert_eq!(metadata.controller_id.0, kafka.leaders.node_id());
}
