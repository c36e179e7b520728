//! Produce: one record batch per partition, validated and stored as it
//! came; acknowledged once durable under the log's flush policy.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_log::{AppendInfo, FlushPolicy, Partition};

use super::errors::for_log;
use crate::node::{off_loop, Acknowledgement, Kafka, SeamFuture};

/// One partition's outcome before the sync.
struct Written {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
}

/// A produce request's response.
pub enum Produced {
    /// Answered at once (`None` for `acks=0`, which gets no response).
    Now(Option<ProduceResponse>),
    /// Answered once the batches are durable (or replicated) as `acks`
    /// asks. They are written, or queued behind every earlier batch,
    /// already: the connection may read its next request meanwhile.
    Later(SeamFuture<ProduceResponse>),
}

/// Handles a produce request.
pub async fn produce(kafka: &Arc<Kafka>, request: ProduceRequest, version: i16) -> Produced {
    if kafka.leaders.replication().is_some() {
        return produce_replicated(kafka, request, version).await;
    }
    let acks = request.acks;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut to_sync: Vec<Written> = Vec::new();
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (partition_index, data) in topic.partition_data.into_iter().enumerate() {
            let outcome = if !matches!(acks, -1..=1) {
                Err((ResponseError::InvalidRequiredAcks, None))
            } else if request.transactional_id.is_some() {
                Err((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    Some("weir does not implement transactions".to_string()),
                ))
            } else {
                write_one(kafka, &topic.name.0, data.index, data.records)
            };
            partitions.push(match outcome {
                Ok((log, info)) => {
                    let response = success(data.index, &log, info.base_offset, version);
                    let durable_per_policy = log.config().flush == FlushPolicy::Always;
                    if durable_per_policy {
                        to_sync.push(Written {
                            topic: topic_index,
                            partition: partition_index,
                            log,
                        });
                    }
                    response
                }
                Err((error, message)) => failure(data.index, error, message, version),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    if to_sync.is_empty() {
        kafka.appended.notify_waiters();
        return Produced::Now((acks != 0).then_some(response));
    }
    let kafka = Arc::clone(kafka);
    if acks == 0 {
        tokio::spawn(async move {
            let _ = sync(to_sync).await;
            kafka.appended.notify_waiters();
        });
        return Produced::Now(None);
    }
    Produced::Later(Box::pin(async move {
        for failed in sync(to_sync).await {
            let partition = &mut response.responses[failed.0].partition_responses[failed.1];
            *partition = failure(
                partition.index,
                ResponseError::KafkaStorageError,
                None,
                version,
            );
        }
        kafka.appended.notify_waiters();
        response
    }))
}

/// Syncs the partitions written (sharing syncs with other connections'
/// through the log's group commit, on the blocking pool so that the event
/// loop goes on); returns the (topic, partition) indexes whose sync failed.
async fn sync(written: Vec<Written>) -> Vec<(usize, usize)> {
    off_loop(move || {
        let mut failed = Vec::new();
        for entry in written {
            if let Err(error) = entry.log.sync() {
                tracing::error!(%error, "syncing a partition failed: its writes are not acknowledged");
                failed.push((entry.topic, entry.partition));
            }
        }
        failed
    })
    .await
}

type WriteError = (ResponseError, Option<String>);

/// A partition's batch handed to the replication layer.
struct Replicating {
    topic: usize,
    partition: usize,
    log: Arc<Partition>,
    acknowledgement: Acknowledgement,
}

/// Produce through the replication layer: each partition's batch is
/// queued for its group (this node must lead it), in the request's order;
/// answered at the acks level asked for, all partitions at once.
async fn produce_replicated(kafka: &Arc<Kafka>, request: ProduceRequest, version: i16) -> Produced {
    let acks = request.acks;
    let replication = kafka
        .leaders
        .replication()
        .expect("called with a replication layer");
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (partition_index, data) in topic.partition_data.into_iter().enumerate() {
            let checked = check_replicated(
                kafka,
                &request.transactional_id,
                acks,
                &topic.name.0,
                data.index,
                data.records,
            );
            match checked {
                Ok((log, records)) => {
                    let acknowledgement = replication
                        .produce(&topic.name.0, data.index as u32, records, acks)
                        .await;
                    pending.push(Replicating {
                        topic: topic_index,
                        partition: partition_index,
                        log,
                        acknowledgement,
                    });
                    partitions.push(failure(
                        data.index,
                        ResponseError::UnknownServerError,
                        None,
                        version,
                    ));
                }
                Err((error, message)) => {
                    partitions.push(failure(data.index, error, message, version))
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        // Nobody waits for the acknowledgements: the batches are queued.
        return Produced::Now(None);
    }
    Produced::Later(Box::pin(async move {
        for replicating in pending {
            let outcome = replicating.acknowledgement.await;
            let slot = &mut responses[replicating.topic].partition_responses[replicating.partition];
            *slot = match outcome {
                Ok(base_offset) => success(slot.index, &replicating.log, base_offset, version),
                Err((error, message)) => failure(slot.index, error, message, version),
            };
        }
        ProduceResponse::default().with_responses(responses)
    }))
}

/// A replicated partition's batch, checked as far as this node can before
/// the group takes it.
fn check_replicated(
    kafka: &Kafka,
    transactional_id: &Option<kafka_protocol::messages::TransactionalId>,
    acks: i16,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> Result<(Arc<Partition>, Bytes), WriteError> {
    if !matches!(acks, -1..=1) {
        return Err((ResponseError::InvalidRequiredAcks, None));
    }
    if transactional_id.is_some() {
        return Err((
            ResponseError::TransactionalIdAuthorizationFailed,
            Some("weir does not implement transactions".to_string()),
        ));
    }
    if kafka.leaders.is_internal(topic) {
        return Err((
            ResponseError::InvalidTopicException,
            Some(format!(
                "{topic} is internal: clients may not produce to it"
            )),
        ));
    }
    let log = kafka
        .led_partition(topic, index)
        .map_err(|error| (error, None))?;
    let records = records.unwrap_or_default();
    check_one_batch(&records)?;
    Ok((log, records))
}

fn write_one(
    kafka: &Kafka,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> Result<(Arc<Partition>, AppendInfo), WriteError> {
    let log = kafka
        .led_partition(topic, index)
        .map_err(|error| (error, None))?;
    let records = records.unwrap_or_default();
    check_one_batch(&records)?;
    let info = log.write_batch(&records).map_err(|error| {
        tracing::debug!(topic, partition = index, %error, "produce refused");
        (for_log(&error), Some(error.to_string()))
    })?;
    Ok((log, info))
}

/// Kafka takes exactly one record batch per partition from v3 on.
fn check_one_batch(records: &[u8]) -> Result<(), WriteError> {
    let invalid = |message: &str| (ResponseError::InvalidRecord, Some(message.to_string()));
    if records.is_empty() {
        return Err(invalid("no record batch"));
    }
    let Some(length) = records.get(8..12) else {
        return Err((
            ResponseError::CorruptMessage,
            Some("truncated batch".into()),
        ));
    };
    let length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
    let whole = usize::try_from(length)
        .ok()
        .and_then(|length| length.checked_add(12));
    match whole {
        Some(whole) if whole < records.len() => Err(invalid(
            "produce requests must contain exactly one record batch per partition",
        )),
        _ => Ok(()),
    }
}

fn success(
    index: i32,
    log: &Partition,
    base_offset: u64,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(base_offset as i64)
        .with_log_append_time_ms(-1);
    if version >= 5 {
        response.with_log_start_offset(log.log_start_offset() as i64)
    } else {
        response
    }
}

fn failure(
    index: i32,
    error: ResponseError,
    message: Option<String>,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1);
    if version >= 8 {
        response.with_error_message(message.map(StrBytes::from_string))
    } else {
        response
    }
}
