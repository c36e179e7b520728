//! The log node's clients over the Kafka protocol, on the client node:
//! idempotent producers (acks=all, retrying a batch with its sequence
//! after a lost response, a timeout or a restart of the node) and the
//! members of consumer group `g` (join, sync with an assignment the
//! leader computes, heartbeats, fetches, commits after processing), which
//! now and then leave the group or crash without leaving.
//!
//! What they observe goes to the same [`crate::check::LogHistory`] the
//! in-process workload fills; a member's session (for the order check) is
//! one generation of one incarnation, and a reset to the log start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use madsim::time::{sleep, timeout};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::net::TcpStream;
use weir_log::{Batch, ProducerInfo, Record};

use super::super::network::{LOG_IP, REQUEST_TIMEOUT};
use super::super::{count, note, SharedRef};
use super::log::{consumed_indexes, PARTITIONS};
use super::Context;
use crate::kafka::KafkaClient;

/// The Kafka listener of the log node.
pub(crate) const KAFKA_PORT: u16 = 9092;
/// The consumer group.
pub(crate) const GROUP: &str = "g";
/// Members of the group.
pub(crate) const MEMBERS: u32 = 2;
const SESSION_TIMEOUT_MS: i32 = 6_000;
const REBALANCE_TIMEOUT_MS: i32 = 8_000;

fn address() -> SocketAddr {
    SocketAddr::from((LOG_IP, KAFKA_PORT))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

async fn connect(shared: &SharedRef) -> Option<KafkaClient> {
    shared.lock().expect("shared").operations += 1;
    match timeout(REQUEST_TIMEOUT, TcpStream::connect(address())).await {
        Ok(Ok(stream)) => Some(KafkaClient::new(stream)),
        _ => None,
    }
}

/// One request with a deadline; `None` when it failed (the connection must
/// then be dropped).
async fn call(
    client: &mut KafkaClient,
    shared: &SharedRef,
    api: ApiKey,
    version: i16,
    request: RequestKind,
    wait: Duration,
) -> Option<ResponseKind> {
    shared.lock().expect("shared").operations += 1;
    match timeout(wait, client.call(api, version, &request)).await {
        Ok(Ok(response)) => Some(response),
        _ => None,
    }
}

// ------------------------------------------------------------ producers

/// An idempotent producer of one partition (`PARTITIONS[index]`).
pub(crate) async fn produce(index: u32, context: Context, mut rng: Xoshiro256PlusPlus) {
    let shared = &context.shared;
    let (topic, number) = PARTITIONS[index as usize];
    let tag: u32 = rng.random();
    let mut sequence_value = 0u64;
    let mut client: Option<KafkaClient> = None;
    let mut producer: Option<(i64, i16)> = None;
    let mut next_sequence = 0i32;
    loop {
        sleep(Duration::from_millis(rng.random_range(1..30))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let values: Vec<String> = (0..rng.random_range(1..=4))
            .map(|_| {
                sequence_value += 1;
                format!("k{index}-{tag:x}-{sequence_value}")
            })
            .collect();
        shared
            .lock()
            .expect("shared")
            .log_history
            .sent
            .extend(values.iter().cloned());
        let mut attempts = 0;
        let mut acknowledged = false;
        while attempts < 40 && !acknowledged {
            attempts += 1;
            if attempts > 1 {
                count(
                    &mut shared.lock().expect("shared").coverage,
                    "kafka produce retried",
                );
                sleep(Duration::from_millis(rng.random_range(20..200))).await;
            }
            if client.is_none() {
                client = connect(shared).await;
            }
            let Some(connection) = client.as_mut() else {
                continue;
            };
            if producer.is_none() {
                producer = init_producer_id(connection, shared, None).await;
                next_sequence = 0;
                if producer.is_none() {
                    client = None;
                    continue;
                }
            }
            let (id, epoch) = producer.expect("set above");
            let batch = encode(&values, id, epoch, next_sequence);
            let request = produce_request(topic, number, batch);
            let Some(ResponseKind::Produce(response)) = call(
                connection,
                shared,
                ApiKey::Produce,
                9,
                request,
                REQUEST_TIMEOUT,
            )
            .await
            else {
                client = None;
                continue;
            };
            let answer = &response.responses[0].partition_responses[0];
            match ResponseError::try_from_code(answer.error_code) {
                None => {
                    let base = answer.base_offset as u64;
                    let mut shared = shared.lock().expect("shared");
                    for (at, value) in values.iter().enumerate() {
                        shared.log_history.acknowledged.push((
                            index,
                            base + at as u64,
                            value.clone(),
                        ));
                    }
                    if attempts > 1 {
                        count(&mut shared.coverage, "kafka retried batch acknowledged");
                    }
                    next_sequence = next_sequence.wrapping_add(values.len() as i32);
                    acknowledged = true;
                }
                Some(
                    ResponseError::OutOfOrderSequenceNumber
                    | ResponseError::InvalidProducerEpoch
                    | ResponseError::UnknownProducerId,
                ) => {
                    // The batch is given up (its values stay unacknowledged)
                    // and the producer bumps its epoch (KIP-360).
                    count(
                        &mut shared.lock().expect("shared").coverage,
                        "kafka producer epoch bumped",
                    );
                    producer = init_producer_id(connection, shared, Some((id, epoch))).await;
                    next_sequence = 0;
                    break;
                }
                Some(_) => {}
            }
        }
        if !acknowledged && attempts >= 40 {
            // Given up: the batch may be in the log, so its sequence numbers
            // must not carry other records. A new producer id (as a client
            // whose delivery timed out resets its idempotence state).
            count(
                &mut shared.lock().expect("shared").coverage,
                "kafka producer gave up a batch",
            );
            producer = None;
        }
    }
}

async fn init_producer_id(
    client: &mut KafkaClient,
    shared: &SharedRef,
    current: Option<(i64, i16)>,
) -> Option<(i64, i16)> {
    let (id, epoch) = current.unwrap_or((-1, -1));
    let request = RequestKind::InitProducerId(
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
    );
    match call(
        client,
        shared,
        ApiKey::InitProducerId,
        4,
        request,
        REQUEST_TIMEOUT,
    )
    .await
    {
        Some(ResponseKind::InitProducerId(response)) if response.error_code == 0 => {
            Some((response.producer_id.0, response.producer_epoch))
        }
        _ => None,
    }
}

fn encode(values: &[String], id: i64, epoch: i16, sequence: i32) -> Bytes {
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|value| Record::value(1_700_000_000_000, value.as_bytes()))
        .collect();
    let producer = ProducerInfo {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: sequence,
    };
    let mut bytes = Vec::new();
    weir_log::batch::encode(&records, producer, &mut bytes).expect("the workload's records encode");
    Bytes::from(bytes)
}

fn produce_request(topic: &str, partition: u32, batch: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition as i32)
                        .with_records(Some(batch)),
                ])]),
    )
}

// ------------------------------------------------------------ group members

/// Why an incarnation of a member ended.
enum End {
    /// It crashed: dropped its connection without leaving.
    Crashed,
    /// It left the group.
    Left,
    /// Its connection failed.
    Failed,
    /// The run is over.
    Stopped,
}

/// A member of group `g`, incarnation after incarnation.
pub(crate) async fn member(
    number: u32,
    context: Context,
    consumed: Vec<u32>,
    mut rng: Xoshiro256PlusPlus,
) {
    let shared = &context.shared;
    let mut member_id = String::new();
    loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(mut client) = connect(shared).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        let seed: u64 = rng.random();
        let end = incarnation(
            &mut client,
            &context,
            &consumed,
            &mut member_id,
            Xoshiro256PlusPlus::seed_from_u64(seed),
        )
        .await;
        match end {
            End::Stopped => return,
            End::Crashed => {
                note(
                    shared,
                    context.started,
                    format!("kafka member {number} crashed"),
                );
                count(
                    &mut shared.lock().expect("shared").coverage,
                    "kafka member crashed",
                );
                member_id.clear();
                sleep(Duration::from_millis(rng.random_range(500..8_000))).await;
            }
            End::Left => {
                count(
                    &mut shared.lock().expect("shared").coverage,
                    "kafka member left",
                );
                member_id.clear();
                sleep(Duration::from_millis(rng.random_range(100..3_000))).await;
            }
            End::Failed => sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One generation's assignment.
struct Assignment {
    generation: i32,
    partitions: Vec<u32>,
}

async fn incarnation(
    client: &mut KafkaClient,
    context: &Context,
    consumed: &[u32],
    member_id: &mut String,
    mut rng: Xoshiro256PlusPlus,
) -> End {
    let shared = &context.shared;
    loop {
        let Some(assignment) = join_and_sync(client, shared, consumed, member_id).await else {
            return End::Failed;
        };
        match consume(client, context, member_id, assignment, &mut rng).await {
            Some(end) => return end,
            None => continue,
        }
    }
}

/// Joins (with the member-id round trip) and syncs; `None` when the
/// connection failed.
async fn join_and_sync(
    client: &mut KafkaClient,
    shared: &SharedRef,
    consumed: &[u32],
    member_id: &mut String,
) -> Option<Assignment> {
    loop {
        let request = RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(text(member_id))
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(text("sim"))
                .with_metadata(Bytes::from_static(b"events,retained"))]),
        );
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + REQUEST_TIMEOUT;
        let Some(ResponseKind::JoinGroup(joined)) =
            call(client, shared, ApiKey::JoinGroup, 5, request, wait).await
        else {
            return None;
        };
        match ResponseError::try_from_code(joined.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                *member_id = joined.member_id.to_string();
                continue;
            }
            Some(ResponseError::UnknownMemberId) => {
                member_id.clear();
                continue;
            }
            Some(_) => {
                sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        *member_id = joined.member_id.to_string();
        let assignments = if joined.leader == joined.member_id {
            assign(&joined, consumed)
        } else {
            Vec::new()
        };
        let request = RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_generation_id(joined.generation_id)
                .with_member_id(text(member_id))
                .with_assignments(assignments),
        );
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + REQUEST_TIMEOUT;
        let Some(ResponseKind::SyncGroup(synced)) =
            call(client, shared, ApiKey::SyncGroup, 3, request, wait).await
        else {
            return None;
        };
        match ResponseError::try_from_code(synced.error_code) {
            None => {}
            Some(ResponseError::UnknownMemberId) => {
                member_id.clear();
                continue;
            }
            Some(_) => continue,
        }
        let partitions = String::from_utf8_lossy(&synced.assignment)
            .split(',')
            .filter_map(|index| index.parse().ok())
            .collect();
        return Some(Assignment {
            generation: joined.generation_id,
            partitions,
        });
    }
}

/// The leader's assignment: the consumed partitions dealt round-robin to
/// the members in id order.
fn assign(
    joined: &JoinGroupResponse,
    consumed: &[u32],
) -> Vec<sync_group_request::SyncGroupRequestAssignment> {
    crate::kafka::deal_round_robin(joined, consumed.iter().map(u32::to_string))
}

/// Consumes an assignment until the group rebalances (`None`: rejoin) or
/// the incarnation ends.
async fn consume(
    client: &mut KafkaClient,
    context: &Context,
    member_id: &str,
    assignment: Assignment,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<End> {
    let shared = &context.shared;
    let session = {
        let mut shared = shared.lock().expect("shared");
        shared.log_assignment += 1;
        shared.log_assignment << 16
    };
    let mut positions: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for &index in &assignment.partitions {
        let committed = fetch_committed(client, shared, index).await?;
        let Ok(committed) = committed else {
            return Some(End::Failed);
        };
        let mut state = shared.lock().expect("shared");
        let before = state.log_history.committed.len();
        state
            .log_history
            .committed_at_start
            .push((index, committed, before));
        if committed > 0 {
            count(
                &mut state.coverage,
                "kafka member resumed from a committed offset",
            );
        }
        positions.insert(index, (committed, 0));
    }
    loop {
        let healed = shared.lock().expect("shared").healed;
        if shared.lock().expect("shared").stop_all {
            return Some(End::Stopped);
        }
        if !healed && rng.random_bool(0.002) {
            return Some(End::Crashed);
        }
        if !healed && rng.random_bool(0.002) {
            let request = RequestKind::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(text(GROUP)))
                    .with_member_id(text(member_id)),
            );
            let _ = call(
                client,
                shared,
                ApiKey::LeaveGroup,
                1,
                request,
                REQUEST_TIMEOUT,
            )
            .await;
            return Some(End::Left);
        }
        let request = RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_generation_id(assignment.generation)
                .with_member_id(text(member_id)),
        );
        let Some(ResponseKind::Heartbeat(beat)) = call(
            client,
            shared,
            ApiKey::Heartbeat,
            3,
            request,
            REQUEST_TIMEOUT,
        )
        .await
        else {
            return Some(End::Failed);
        };
        if beat.error_code != 0 {
            count(
                &mut shared.lock().expect("shared").coverage,
                "kafka member rejoined after a heartbeat error",
            );
            return None;
        }
        for &index in &assignment.partitions {
            let (position, jumps) = positions[&index];
            let read = fetch(client, shared, index, position).await;
            let next = match read {
                Fetched::Failed => return Some(End::Failed),
                Fetched::OutOfRange => {
                    let Some(start) = earliest(client, shared, index).await else {
                        return Some(End::Failed);
                    };
                    count(
                        &mut shared.lock().expect("shared").coverage,
                        "kafka member reset to the log start",
                    );
                    positions.insert(index, (start, jumps + 1));
                    continue;
                }
                Fetched::Records(records) => {
                    let mut next = position;
                    let mut state = shared.lock().expect("shared");
                    for (offset, value) in records {
                        if offset < position {
                            continue;
                        }
                        state
                            .log_history
                            .read
                            .push((session | jumps, index, offset, value));
                        next = offset + 1;
                    }
                    next
                }
            };
            if next == position {
                continue;
            }
            match commit(
                client,
                shared,
                member_id,
                assignment.generation,
                index,
                next,
            )
            .await
            {
                None => return Some(End::Failed),
                Some(true) => {
                    shared
                        .lock()
                        .expect("shared")
                        .log_history
                        .committed
                        .push((index, next));
                }
                Some(false) => return None,
            }
            positions.insert(index, (next, jumps));
        }
        sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

/// The group's committed offset of a partition: `None` when the connection
/// failed, `Err` when the broker refused.
async fn fetch_committed(
    client: &mut KafkaClient,
    shared: &SharedRef,
    index: u32,
) -> Option<Result<u64, i16>> {
    let (topic, number) = PARTITIONS[index as usize];
    let request = RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partition_indexes(vec![number as i32]),
            ])),
    );
    let Some(ResponseKind::OffsetFetch(response)) = call(
        client,
        shared,
        ApiKey::OffsetFetch,
        5,
        request,
        REQUEST_TIMEOUT,
    )
    .await
    else {
        return None;
    };
    if response.error_code != 0 {
        return Some(Err(response.error_code));
    }
    let partition = response.topics.first()?.partitions.first()?;
    if partition.error_code != 0 {
        return Some(Err(partition.error_code));
    }
    Some(Ok(partition.committed_offset.max(0) as u64))
}

enum Fetched {
    Failed,
    OutOfRange,
    Records(Vec<(u64, String)>),
}

async fn fetch(client: &mut KafkaClient, shared: &SharedRef, index: u32, position: u64) -> Fetched {
    let (topic, number) = PARTITIONS[index as usize];
    let request = RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(64 << 10)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(number as i32)
                    .with_fetch_offset(position as i64)
                    .with_partition_max_bytes(16 << 10)])]),
    );
    let Some(ResponseKind::Fetch(response)) =
        call(client, shared, ApiKey::Fetch, 11, request, REQUEST_TIMEOUT).await
    else {
        return Fetched::Failed;
    };
    let Some(partition) = response
        .responses
        .first()
        .and_then(|topic| topic.partitions.first())
    else {
        return Fetched::Failed;
    };
    match ResponseError::try_from_code(partition.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange)
            if (partition.log_start_offset.max(0) as u64) > position =>
        {
            return Fetched::OutOfRange
        }
        Some(_) => return Fetched::Records(Vec::new()),
    }
    let bytes = partition.records.clone().unwrap_or_default();
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let Ok(batch) = Batch::parse(rest) else {
            shared
                .lock()
                .expect("shared")
                .engine_invariants
                .push(format!(
                    "fetch of partition {index} at {position} returned a batch that does not parse"
                ));
            break;
        };
        let Ok(decoded) = weir_kafka::interop::decode_with_weir(&batch, 1 << 20) else {
            shared
                .lock()
                .expect("shared")
                .engine_invariants
                .push(format!(
                    "fetch of partition {index} at {position} returned records that do not decode"
                ));
            break;
        };
        let high_watermark = partition.high_watermark.max(0) as u64;
        for record in decoded {
            let value = String::from_utf8_lossy(&record.value.unwrap_or_default()).into_owned();
            if record.offset as u64 >= high_watermark {
                shared
                    .lock()
                    .expect("shared")
                    .log_history
                    .above_high_watermark
                    .push((index, record.offset as u64, high_watermark));
            }
            records.push((record.offset as u64, value));
        }
        rest = &rest[batch.header().batch_bytes as usize..];
    }
    Fetched::Records(records)
}

async fn earliest(client: &mut KafkaClient, shared: &SharedRef, index: u32) -> Option<u64> {
    let (topic, number) = PARTITIONS[index as usize];
    let request = RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(number as i32)
                .with_timestamp(-2)]),
    ]));
    match call(
        client,
        shared,
        ApiKey::ListOffsets,
        5,
        request,
        REQUEST_TIMEOUT,
    )
    .await
    {
        Some(ResponseKind::ListOffsets(response)) => {
            let partition = response.topics.first()?.partitions.first()?;
            (partition.error_code == 0).then_some(partition.offset.max(0) as u64)
        }
        _ => None,
    }
}

/// Commits one offset with the member's generation: `Some(true)` when
/// acknowledged, `Some(false)` when refused (rejoin), `None` when the
/// connection failed.
async fn commit(
    client: &mut KafkaClient,
    shared: &SharedRef,
    member_id: &str,
    generation: i32,
    index: u32,
    next: u64,
) -> Option<bool> {
    let (topic, number) = PARTITIONS[index as usize];
    let request = RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member_id))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(number as i32)
                            .with_committed_offset(next as i64)
                            .with_committed_metadata(Some(text("sim"))),
                    ]),
            ]),
    );
    let Some(ResponseKind::OffsetCommit(response)) = call(
        client,
        shared,
        ApiKey::OffsetCommit,
        7,
        request,
        REQUEST_TIMEOUT,
    )
    .await
    else {
        return None;
    };
    let code = response.topics.first()?.partitions.first()?.error_code;
    if code != 0 {
        count(
            &mut shared.lock().expect("shared").coverage,
            "kafka commit refused",
        );
    }
    Some(code == 0)
}

/// The partitions the group consumes.
pub(crate) fn group_partitions(features: &super::super::nemesis::Features) -> Vec<u32> {
    consumed_indexes(features)
}
