//! weir-log's batches are Kafka's record batch v2 byte for byte: a batch
//! that kafka-protocol's independent encoder writes is appended as it came
//! and read back byte for byte (with the base offset and leader epoch the
//! log stamps), and every batch weir encodes decodes with kafka-protocol's
//! decoder to the same records, in every codec.

use std::sync::Arc;

use proptest::prelude::*;
use weir_io::{ManualClock, SimStorage, Storage};
use weir_kafka::interop::{decode_with_kafka_protocol, encode_with_kafka_protocol, OwnedRecord};
use weir_log::batch::{self, Batch};
use weir_log::{Compression, Header, LogConfig, Partition, ProducerInfo, Record};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn open(compression: Compression) -> Partition {
    let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(1));
    let config = LogConfig {
        compression,
        ..LogConfig::default()
    };
    Partition::open(storage, Arc::new(ManualClock::new(0)), config)
        .expect("open")
        .0
}

fn owned(records: &[Record<'_>], base: i64) -> Vec<OwnedRecord> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| OwnedRecord {
            offset: base + index as i64,
            timestamp: record.timestamp_ms,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers
                .iter()
                .map(|header| (header.key.to_vec(), header.value.map(<[u8]>::to_vec)))
                .collect(),
        })
        .collect()
}

/// (timestamp step, key, value, header values) of one record.
type RawRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<Option<Vec<u8>>>);

/// Records with non-decreasing timestamps and unique UTF-8 header keys, so
/// that both encoders' conventions coincide.
fn arbitrary_records() -> impl Strategy<Value = Vec<RawRecord>> {
    proptest::collection::vec(
        (
            0i64..5_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
                0..3,
            ),
        ),
        1..30,
    )
}

const HEADER_KEYS: [&[u8]; 3] = [b"a", b"trace-id", b"z"];

fn build<'a>(raw: &'a [RawRecord], headers: &'a [Vec<Header<'a>>]) -> Vec<Record<'a>> {
    let mut timestamp = 1_700_000_000_000;
    raw.iter()
        .zip(headers)
        .map(|((step, key, value, _), headers)| {
            timestamp += step;
            Record {
                timestamp_ms: timestamp,
                key: key.as_deref(),
                value: value.as_deref(),
                headers,
            }
        })
        .collect()
}

fn headers_of(raw: &[RawRecord]) -> Vec<Vec<Header<'_>>> {
    raw.iter()
        .map(|(_, _, _, values)| {
            values
                .iter()
                .zip(HEADER_KEYS)
                .map(|(value, key)| Header {
                    key,
                    value: value.as_deref(),
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kafka_protocols_batches_are_stored_and_served_byte_for_byte(
        raw in arbitrary_records(),
        codec in 0usize..5,
        idempotent in any::<bool>(),
    ) {
        let headers = headers_of(&raw);
        let records = build(&raw, &headers);
        let producer = if idempotent {
            ProducerInfo { producer_id: 11, producer_epoch: 2, base_sequence: 0 }
        } else {
            ProducerInfo::NONE
        };
        let encoded = encode_with_kafka_protocol(&owned(&records, 0), producer, CODECS[codec]).expect("encode");
        let log = open(Compression::None);
        log.append(&[Record::value(1, b"first")], ProducerInfo::NONE).expect("append");
        let info = log.append_batch(&encoded).expect("a kafka-protocol batch is valid");
        prop_assert_eq!(info.base_offset, 1);
        let read = log.read(1, 1 << 20).expect("read");
        let stored: Vec<Batch<'_>> = read.batches().collect();
        prop_assert_eq!(stored.len(), 1);
        let bytes = stored[0].bytes();
        prop_assert_eq!(bytes.len(), encoded.len());
        // The stamped fields: base offset 1, leader epoch 0.
        prop_assert_eq!(&bytes[..8], &1i64.to_be_bytes());
        prop_assert_eq!(&bytes[12..16], &0i32.to_be_bytes());
        // Everything else exactly as the encoder wrote it.
        prop_assert_eq!(&bytes[8..12], &encoded[8..12]);
        prop_assert_eq!(&bytes[16..], &encoded[16..]);
        let decoded: Vec<OwnedRecord> = read
            .records()
            .map(|record| record.expect("record"))
            .map(|record| OwnedRecord {
                offset: record.offset as i64,
                timestamp: record.timestamp_ms,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record.headers().map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec))).collect(),
            })
            .collect();
        prop_assert_eq!(decoded, owned(&records, 1));
    }

    #[test]
    fn weirs_batches_decode_with_kafka_protocol(
        raw in arbitrary_records(),
        codec in 0usize..5,
    ) {
        let headers = headers_of(&raw);
        let records = build(&raw, &headers);
        let log = open(CODECS[codec]);
        log.append(&[Record::value(1, b"first")], ProducerInfo::NONE).expect("append");
        log.append(&records, ProducerInfo::NONE).expect("append");
        let read = log.read(1, 1 << 20).expect("read");
        let mut kafka_bytes = Vec::new();
        read.copy_kafka_batches(&mut kafka_bytes);
        let decoded = decode_with_kafka_protocol(&kafka_bytes).expect("kafka-protocol decodes weir's batch");
        prop_assert_eq!(decoded, owned(&records, 1));
    }

    #[test]
    fn weirs_encoder_writes_the_bytes_kafka_protocols_writes(
        raw in arbitrary_records(),
        idempotent in any::<bool>(),
    ) {
        let headers = headers_of(&raw);
        let records = build(&raw, &headers);
        let producer = if idempotent {
            ProducerInfo { producer_id: 5, producer_epoch: 0, base_sequence: 17 }
        } else {
            ProducerInfo::NONE
        };
        let theirs = encode_with_kafka_protocol(&owned(&records, 0), producer, Compression::None).expect("encode");
        let mut ours = Vec::new();
        batch::encode(&records, producer, &mut ours).expect("encode");
        prop_assert_eq!(ours, theirs);
    }
}
