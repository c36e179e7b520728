//! Records as both codecs see them, for comparing weir-log's batches with
//! `kafka-protocol`'s.

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use weir_log::{Batch, BatchError, Compression, ProducerInfo};

/// One record with everything both codecs decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// kafka-protocol's name for a weir codec.
pub fn kafka_compression(compression: Compression) -> KafkaCompression {
    match compression {
        Compression::None => KafkaCompression::None,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
        Compression::Lz4 => KafkaCompression::Lz4,
        Compression::Zstd => KafkaCompression::Zstd,
    }
}

/// Encodes `records` as one batch with kafka-protocol's encoder: the
/// independent encoder weir's batches are checked against. Offsets are
/// deltas from 0; timestamps must not decrease (kafka-protocol takes the
/// smallest timestamp as the base, weir the first).
pub fn encode_with_kafka_protocol(
    records: &[OwnedRecord],
    producer: ProducerInfo,
    compression: Compression,
) -> Result<Vec<u8>, String> {
    let kafka: Vec<KafkaRecord> = records
        .iter()
        .enumerate()
        .map(|(index, record)| KafkaRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // kafka-protocol starts a new batch wherever offset minus
            // sequence changes, so sequences follow offsets even without a
            // producer (the batch's base sequence is then -1).
            sequence: producer.base_sequence.wrapping_add(index as i32),
            timestamp: record.timestamp,
            key: record.key.clone().map(Bytes::from),
            value: record.value.clone().map(Bytes::from),
            headers: record
                .headers
                .iter()
                .map(|(key, value)| {
                    let key = String::from_utf8(key.clone()).expect("header keys are UTF-8 here");
                    (StrBytes::from_string(key), value.clone().map(Bytes::from))
                })
                .collect(),
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: kafka_compression(compression),
    };
    RecordBatchEncoder::encode(&mut out, kafka.iter(), &options)
        .map_err(|error| error.to_string())?;
    Ok(out.to_vec())
}

/// Decodes one batch with kafka-protocol's decoder.
pub fn decode_with_kafka_protocol(batch: &[u8]) -> Result<Vec<OwnedRecord>, String> {
    let mut bytes = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|error| format!("{error:#}"))?;
    Ok(set
        .records
        .into_iter()
        .map(|record| OwnedRecord {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(|key| key.to_vec()),
            value: record.value.map(|value| value.to_vec()),
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| {
                    (
                        key.as_str().as_bytes().to_vec(),
                        value.map(|value| value.to_vec()),
                    )
                })
                .collect(),
        })
        .collect())
}

/// Decodes one batch with weir-log's decoder (decompressing up to
/// `uncompressed_bytes_max`).
pub fn decode_with_weir(
    batch: &Batch<'_>,
    uncompressed_bytes_max: usize,
) -> Result<Vec<OwnedRecord>, BatchError> {
    let mut scratch = Vec::new();
    batch
        .decode(&mut scratch, uncompressed_bytes_max)?
        .map(|record| {
            let record = record?;
            Ok(OwnedRecord {
                offset: record.offset as i64,
                timestamp: record.timestamp_ms,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers()
                    .map(|header| (header.key.to_vec(), header.value.map(<[u8]>::to_vec)))
                    .collect(),
            })
        })
        .collect()
}
