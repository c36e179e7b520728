//! Responses as they are written to the socket: a list of chunks, so that
//! a fetch response's record batches go out with vectored writes straight
//! from the buffers the log read them into, instead of being copied into
//! an encoded response (Kafka sends them with `sendfile` for the same
//! reason).
//!
//! Every response but Fetch is encoded whole by `kafka-protocol`. A fetch
//! response is encoded here, field by field, with each partition's records
//! given as the batches read; a test checks the bytes against
//! `kafka-protocol`'s encoder at every version weir advertises.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// Batches shorter than this are copied into the response: a chunk of its
/// own costs more than the copy.
const SLICE_BYTES_MIN: usize = 4096;

/// A whole size-prefixed response, in chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Reply {
    /// A response encoded in one buffer.
    pub fn whole(bytes: BytesMut) -> Reply {
        let len = bytes.len();
        Reply {
            chunks: vec![bytes.freeze()],
            len,
        }
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Bytes in all, the size prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the reply has no bytes (never, for a reply built here).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The response in one buffer (copied unless it is one chunk).
    pub fn contiguous(&self) -> Bytes {
        match self.chunks.as_slice() {
            [only] => only.clone(),
            chunks => {
                let mut bytes = BytesMut::with_capacity(self.len);
                for chunk in chunks {
                    bytes.put_slice(chunk);
                }
                bytes.freeze()
            }
        }
    }
}

/// Encodes a size-prefixed response in one buffer.
pub fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Reply, String> {
    let capacity = match response {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0) + 64,
        _ => 256,
    };
    let mut bytes = BytesMut::with_capacity(capacity);
    bytes.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut bytes, api.response_header_version(version))
        .and_then(|()| response.encode(&mut bytes, version))
        .map_err(|error| format!("cannot encode the {api:?} v{version} response: {error}"))?;
    let size =
        i32::try_from(bytes.len() - 4).map_err(|_| format!("the {api:?} response is too large"))?;
    bytes[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Reply::whole(bytes))
}

/// A fetch response and, apart, each partition's record batches, in the
/// order of the response's topics and partitions (`None`: null records).
/// The response's own `records` fields are not used.
#[derive(Debug, Default)]
pub struct FetchReply {
    /// The response without its records.
    pub response: FetchResponse,
    /// Each partition's record batches.
    pub records: Vec<Option<Vec<Bytes>>>,
}

impl FetchReply {
    /// The response with the records in it (copied): what a client decodes.
    pub fn into_response(self) -> FetchResponse {
        let mut response = self.response;
        let mut records = self.records.into_iter();
        for partition in partitions_mut(&mut response) {
            partition.records = records.next().flatten().map(|batches| concat(&batches));
        }
        response
    }
}

fn partitions_mut(response: &mut FetchResponse) -> impl Iterator<Item = &mut PartitionData> {
    response
        .responses
        .iter_mut()
        .flat_map(|topic| topic.partitions.iter_mut())
}

fn concat(batches: &[Bytes]) -> Bytes {
    let mut bytes = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
    for batch in batches {
        bytes.put_slice(batch);
    }
    bytes.freeze()
}

/// Encodes a fetch response with its record batches as chunks of their
/// own. A response with anything this encoder does not write (tagged
/// fields, a diverging epoch, …) is encoded whole by `kafka-protocol`.
pub fn encode_fetch(version: i16, correlation_id: i32, reply: FetchReply) -> Result<Reply, String> {
    let partitions = reply
        .response
        .responses
        .iter()
        .map(|topic| topic.partitions.len())
        .sum::<usize>();
    assert_eq!(
        partitions,
        reply.records.len(),
        "one entry of records per partition"
    );
    if !plain(&reply.response, version) {
        let response = ResponseKind::Fetch(reply.into_response());
        return encode(ApiKey::Fetch, version, correlation_id, &response);
    }
    let mut out = Chunks::default();
    write_fetch(&mut out, version, correlation_id, &reply)
        .map_err(|error| format!("cannot encode the Fetch v{version} response: {error}"))?;
    out.finish()
}

/// Whether the response holds only what [`write_fetch`] writes.
fn plain(response: &FetchResponse, version: i16) -> bool {
    (4..=12).contains(&version)
        && response.unknown_tagged_fields.is_empty()
        && response.node_endpoints.is_empty()
        && response.responses.iter().all(|topic| {
            topic.unknown_tagged_fields.is_empty()
                && topic.partitions.iter().all(|partition| {
                    partition.unknown_tagged_fields.is_empty()
                        && partition.diverging_epoch == Default::default()
                        && partition.current_leader == Default::default()
                        && partition.snapshot_id == Default::default()
                        && (version >= 11 || partition.preferred_read_replica == -1)
                        && (version >= 5 || partition.log_start_offset == -1)
                })
        })
}

fn write_fetch(
    out: &mut Chunks,
    version: i16,
    correlation_id: i32,
    reply: &FetchReply,
) -> Result<(), String> {
    let flexible = version >= 12;
    let response = &reply.response;
    let head = &mut out.head;
    head.put_i32(correlation_id);
    tags(head, flexible);
    head.put_i32(response.throttle_time_ms);
    if version >= 7 {
        head.put_i16(response.error_code);
        head.put_i32(response.session_id);
    }
    length(head, response.responses.len(), flexible);
    let mut records = reply.records.iter();
    for topic in &response.responses {
        string(&mut out.head, &topic.topic.0, flexible);
        length(&mut out.head, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            write_partition_head(&mut out.head, partition, version)?;
            match records.next().and_then(Option::as_ref) {
                None => null_bytes(&mut out.head, flexible),
                Some(batches) => {
                    let len = batches.iter().map(Bytes::len).sum();
                    length(&mut out.head, len, flexible);
                    out.put_batches(batches);
                }
            }
            tags(&mut out.head, flexible);
        }
        tags(&mut out.head, flexible);
    }
    tags(&mut out.head, flexible);
    Ok(())
}

/// A partition's fields before its records.
fn write_partition_head(
    head: &mut BytesMut,
    partition: &PartitionData,
    version: i16,
) -> Result<(), String> {
    head.put_i32(partition.partition_index);
    head.put_i16(partition.error_code);
    head.put_i64(partition.high_watermark);
    head.put_i64(partition.last_stable_offset);
    if version >= 5 {
        head.put_i64(partition.log_start_offset);
    }
    match &partition.aborted_transactions {
        None => null_bytes(head, version >= 12),
        Some(aborted) => {
            length(head, aborted.len(), version >= 12);
            for transaction in aborted {
                transaction
                    .encode(head, version)
                    .map_err(|error| error.to_string())?;
            }
        }
    }
    if version >= 11 {
        head.put_i32(*partition.preferred_read_replica);
    }
    Ok(())
}

/// A string: its length (compact: plus one, as a varint), then its bytes.
fn string(head: &mut BytesMut, value: &str, flexible: bool) {
    if flexible {
        put_unsigned_varint(head, value.len() as u64 + 1);
    } else {
        head.put_i16(i16::try_from(value.len()).expect("topic names are under 250 bytes"));
    }
    head.put_slice(value.as_bytes());
}

/// An array's or a byte field's length (compact: plus one, as a varint).
fn length(head: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_unsigned_varint(head, len as u64 + 1);
    } else {
        head.put_i32(i32::try_from(len).expect("a fetch response is under 2 GiB"));
    }
}

/// A null array or byte field.
fn null_bytes(head: &mut BytesMut, flexible: bool) {
    if flexible {
        head.put_u8(0);
    } else {
        head.put_i32(-1);
    }
}

/// No tagged fields.
fn tags(head: &mut BytesMut, flexible: bool) {
    if flexible {
        head.put_u8(0);
    }
}

fn put_unsigned_varint(head: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        head.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    head.put_u8(value as u8);
}

/// A response being built: chunks done, and the small fields and short
/// batches gathered since the last one.
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    head: BytesMut,
    len: usize,
}

impl Chunks {
    fn put_batches(&mut self, batches: &[Bytes]) {
        for batch in batches {
            if batch.len() < SLICE_BYTES_MIN {
                self.head.put_slice(batch);
            } else {
                self.close_head();
                self.len += batch.len();
                self.done.push(batch.clone());
            }
        }
    }

    fn close_head(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split().freeze();
            self.len += head.len();
            self.done.push(head);
        }
    }

    /// The reply, with its size prefix.
    fn finish(mut self) -> Result<Reply, String> {
        self.close_head();
        let size = i32::try_from(self.len).map_err(|_| "the Fetch response is too large")?;
        let mut chunks = Vec::with_capacity(self.done.len() + 1);
        chunks.push(Bytes::copy_from_slice(&size.to_be_bytes()));
        chunks.extend(self.done);
        Ok(Reply {
            chunks,
            len: self.len + 4,
        })
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn batch(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    fn partition(index: i32, version: i16) -> PartitionData {
        let partition = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(if index == 2 { 1 } else { 0 })
            .with_high_watermark(1_000 + i64::from(index))
            .with_last_stable_offset(999)
            .with_preferred_read_replica(BrokerId(-1));
        match version {
            5.. => partition.with_log_start_offset(7),
            _ => partition,
        }
    }

    fn sample(version: i16) -> FetchReply {
        let topic = |name: &str, partitions: Vec<PartitionData>| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(partitions)
        };
        let mut with_aborted = partition(3, version);
        with_aborted.aborted_transactions = Some(vec![AbortedTransaction::default()
            .with_producer_id(ProducerId(5))
            .with_first_offset(9)]);
        let mut response = FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_responses(vec![
                topic("orders", vec![partition(0, version), partition(1, version)]),
                topic("t", vec![partition(2, version), with_aborted]),
            ]);
        if version >= 7 {
            response = response.with_error_code(0).with_session_id(42);
        }
        FetchReply {
            response,
            records: vec![
                Some(vec![batch(70_000, 1), batch(100, 2), batch(5_000, 3)]),
                Some(Vec::new()),
                None,
                Some(vec![batch(61, 4), batch(300, 5)]),
            ],
        }
    }

    #[test]
    fn a_fetch_response_is_the_bytes_kafka_protocol_encodes_at_every_version() {
        for version in 4..=12 {
            let expected = encode(
                ApiKey::Fetch,
                version,
                77,
                &ResponseKind::Fetch(sample(version).into_response()),
            )
            .expect("kafka-protocol encodes")
            .contiguous();
            let reply = encode_fetch(version, 77, sample(version)).expect("encodes");
            assert_eq!(reply.len(), expected.len(), "v{version}");
            assert_eq!(reply.contiguous(), expected, "v{version}");
            assert!(
                reply.chunks().iter().any(|chunk| chunk.len() == 70_000),
                "v{version}: a large batch goes out as a chunk of its own"
            );
        }
    }

    #[test]
    fn a_response_with_fields_this_encoder_does_not_write_is_encoded_whole() {
        let version = 12;
        let mut reply = sample(version);
        reply.response.responses[0].partitions[0].diverging_epoch =
            EpochEndOffset::default().with_epoch(3).with_end_offset(10);
        let expected = encode(
            ApiKey::Fetch,
            version,
            5,
            &ResponseKind::Fetch(sample_with_divergence(version).into_response()),
        )
        .expect("encodes")
        .contiguous();
        let encoded = encode_fetch(version, 5, reply).expect("encodes");
        assert_eq!(encoded.chunks().len(), 1);
        assert_eq!(encoded.contiguous(), expected);
    }

    fn sample_with_divergence(version: i16) -> FetchReply {
        let mut reply = sample(version);
        reply.response.responses[0].partitions[0].diverging_epoch =
            EpochEndOffset::default().with_epoch(3).with_end_offset(10);
        reply
    }
}
