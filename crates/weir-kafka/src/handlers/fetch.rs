//! Fetch and ListOffsets: whole stored batches from the one holding the
//! requested offset, up to the high watermark; a long poll (max wait, min
//! bytes) that waits on the front-end's wake-up, not on a thread.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::ResponseError;
use weir_log::{Isolation, LogError, Partition};

use crate::limits::FETCH_RESPONSE_BYTES_MAX;
use crate::node::Kafka;
use crate::reply::FetchReply;

/// ListOffsets' timestamp for the offset after the last committed record.
const LATEST: i64 = -1;
/// ListOffsets' timestamp for the first offset.
const EARLIEST: i64 = -2;

/// Handles a fetch: answers as soon as `min_bytes` are available, an error
/// is to be reported, or `max_wait_ms` has passed.
pub async fn fetch(kafka: &Arc<Kafka>, request: FetchRequest, version: i16) -> FetchReply {
    let wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(kafka.settings.fetch_wait_ms_max);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes)
        .ok()
        .filter(|bytes| *bytes > 0)
        .map_or(FETCH_RESPONSE_BYTES_MAX, |bytes| {
            bytes.min(FETCH_RESPONSE_BYTES_MAX)
        });
    let mut doubts = Doubts::default();
    loop {
        // Registered before reading, so that an append between the read
        // and the wait still wakes this fetch.
        let appended = kafka.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let (mut response, bytes, errors) = read_all(kafka, &request, max_bytes, version);
        if errors {
            let doubtful = doubts.unsettled(&request, &response);
            if !doubtful.is_empty() {
                doubts.settle(kafka, &request, doubtful).await;
                // Read again: a confirmed lead has applied what it must.
                continue;
            }
            doubts.refuse(&mut response);
        }
        if bytes >= min_bytes || errors || tokio::time::Instant::now() >= deadline {
            return response;
        }
        tokio::select! {
            biased;
            _ = appended => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Partitions (their positions in the request: topic, partition) whose
/// fetch offset is beyond this node's high watermark. Before a client is
/// told so (OFFSET_OUT_OF_RANGE, on which a consumer resets its position),
/// the node confirms that it still leads them and holds every committed
/// record ([`crate::Leaders::confirm_lead`]); where it cannot, the
/// partition is answered with the retriable error the confirmation gave.
#[derive(Default)]
struct Doubts {
    confirmed: Vec<(usize, usize)>,
    refused: Vec<((usize, usize), ResponseError)>,
}

impl Doubts {
    /// The partitions answered out of range beyond their high watermark,
    /// neither confirmed nor refused yet.
    fn unsettled(&self, request: &FetchRequest, reply: &FetchReply) -> Vec<(usize, usize)> {
        let settled = |at: &(usize, usize)| {
            self.confirmed.contains(at) || self.refused.iter().any(|(refused, _)| refused == at)
        };
        let mut doubtful = Vec::new();
        for (t, topic) in reply.response.responses.iter().enumerate() {
            for (p, answer) in topic.partitions.iter().enumerate() {
                let wanted = &request.topics[t].partitions[p];
                let beyond = answer.error_code == ResponseError::OffsetOutOfRange.code()
                    && wanted.fetch_offset > answer.high_watermark;
                if beyond && !settled(&(t, p)) {
                    doubtful.push((t, p));
                }
            }
        }
        doubtful
    }

    /// Confirms the leads of the `doubtful` partitions, all at once (on a
    /// deposed leader each may take two election timeouts to fail).
    async fn settle(
        &mut self,
        kafka: &Kafka,
        request: &FetchRequest,
        doubtful: Vec<(usize, usize)>,
    ) {
        let asked: Vec<_> = doubtful
            .into_iter()
            .map(|(t, p)| {
                let topic = &request.topics[t];
                let partition = u32::try_from(topic.partitions[p].partition).unwrap_or(u32::MAX);
                let confirming = kafka.leaders.confirm_lead(&topic.topic.0, partition);
                ((t, p), tokio::spawn(confirming))
            })
            .collect();
        for (at, confirming) in asked {
            match confirming.await {
                Ok(Ok(())) => self.confirmed.push(at),
                Ok(Err(error)) => self.refused.push((at, error)),
                Err(_) => self.refused.push((at, ResponseError::NotLeaderOrFollower)),
            }
        }
    }

    /// Puts the refusals in place of the out-of-range answers.
    fn refuse(&self, reply: &mut FetchReply) {
        for ((t, p), error) in &self.refused {
            let answer = &mut reply.response.responses[*t].partitions[*p];
            if answer.error_code == ResponseError::OffsetOutOfRange.code() {
                answer.error_code = error.code();
            }
        }
    }
}

/// One pass over the requested partitions: the response, the record bytes
/// in it, and whether any partition has an error.
fn read_all(
    kafka: &Kafka,
    request: &FetchRequest,
    max_bytes: usize,
    version: i16,
) -> (FetchReply, usize, bool) {
    let mut budget = Budget {
        bytes: max_bytes,
        first_batch_taken: false,
    };
    let mut total = 0;
    let mut errors = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut records = Vec::new();
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let (data, batches) =
                read_partition(kafka, &topic.topic.0, wanted, &mut budget, version);
            total += batches.iter().flatten().map(Bytes::len).sum::<usize>();
            errors |= data.error_code != 0;
            partitions.push(data);
            records.push(batches);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    let reply = FetchReply {
        response: FetchResponse::default().with_responses(topics),
        records,
    };
    (reply, total, errors)
}

/// What a fetch response may still take: bytes left under its max bytes,
/// and whether a batch is in it yet. As Kafka does (KIP-74), the first
/// batch of the response is returned whole however large it is, so that a
/// consumer always progresses; after it, a batch that does not fit is left
/// for the next fetch.
struct Budget {
    bytes: usize,
    first_batch_taken: bool,
}

/// A partition's answer and its record batches (none, not null, with an
/// error, as Kafka answers).
type PartitionRead = (PartitionData, Option<Vec<Bytes>>);

fn read_partition(
    kafka: &Kafka,
    topic: &str,
    wanted: &FetchPartition,
    budget: &mut Budget,
    version: i16,
) -> PartitionRead {
    let empty = PartitionData::default()
        .with_partition_index(wanted.partition)
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1));
    let log = match kafka.readable_partition(topic, wanted.partition, wanted.current_leader_epoch) {
        Ok(log) => log,
        Err(error) => {
            let data = empty
                .with_error_code(error.code())
                .with_high_watermark(-1)
                .with_last_stable_offset(-1);
            return (data, Some(Vec::new()));
        }
    };
    let offsets = |data: PartitionData, log: &Partition| {
        let high_watermark = log.high_watermark() as i64;
        let data = data
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark);
        if version >= 5 {
            data.with_log_start_offset(log.log_start_offset() as i64)
        } else {
            data
        }
    };
    let failed = |error: ResponseError| {
        let data = offsets(empty.clone(), &log).with_error_code(error.code());
        (data, Some(Vec::new()))
    };
    let Ok(offset) = u64::try_from(wanted.fetch_offset) else {
        return failed(ResponseError::OffsetOutOfRange);
    };
    let limit = usize::try_from(wanted.partition_max_bytes)
        .unwrap_or(0)
        .min(budget.bytes);
    if limit == 0 {
        return (offsets(empty, &log), Some(Vec::new()));
    }
    match log.read_with(offset, limit as u32, Isolation::Committed) {
        Ok(read) => {
            let (stored, ranges) = read.into_kafka_batch_ranges();
            let stored = Bytes::from(stored);
            let batches: Vec<Bytes> = ranges
                .into_iter()
                .map(|range| stored.slice(range))
                .collect();
            let bytes: usize = batches.iter().map(Bytes::len).sum();
            if bytes > limit && budget.first_batch_taken {
                // One batch larger than what is left: for the next fetch.
                return (offsets(empty, &log), Some(Vec::new()));
            }
            budget.bytes = budget.bytes.saturating_sub(bytes);
            budget.first_batch_taken |= bytes > 0;
            (offsets(empty, &log), Some(batches))
        }
        Err(LogError::OffsetOutOfRange { .. }) => failed(ResponseError::OffsetOutOfRange),
        Err(error) => {
            tracing::error!(topic, partition = wanted.partition, %error, "fetch failed");
            failed(super::errors::for_log(&error))
        }
    }
}

/// Handles ListOffsets: the earliest offset, the latest (the high
/// watermark), or the first offset whose record's timestamp is at or
/// after the one asked for.
pub fn list_offsets(
    kafka: &Kafka,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|wanted| {
                    let answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(wanted.partition_index);
                    match list_one(kafka, &topic.name.0, wanted) {
                        Ok((offset, timestamp, epoch)) => answer
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        Err(error) => answer
                            .with_error_code(error.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn list_one(
    kafka: &Kafka,
    topic: &str,
    wanted: &kafka_protocol::messages::list_offsets_request::ListOffsetsPartition,
) -> Result<(i64, i64, i32), ResponseError> {
    let partition = wanted.partition_index;
    let log = kafka.readable_partition(topic, partition, wanted.current_leader_epoch)?;
    let epoch = u32::try_from(partition)
        .ok()
        .and_then(|index| kafka.leaders.leader_epoch(topic, index))
        .unwrap_or(log.leader_epoch() as i32);
    match wanted.timestamp {
        LATEST => Ok((log.high_watermark() as i64, -1, epoch)),
        EARLIEST => Ok((log.log_start_offset() as i64, -1, epoch)),
        wanted if wanted >= 0 => match log.offset_for_timestamp(wanted) {
            Ok(Some(found)) => Ok((found.offset as i64, found.timestamp_ms, epoch)),
            Ok(None) => Ok((-1, -1, -1)),
            Err(error) => Err(super::errors::for_log(&error)),
        },
        _ => Err(ResponseError::InvalidRequest),
    }
}
