use super::*;
use proptest::prelude::*;

fn encode_one(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(records, ProducerInfo::NONE, &mut out).expect("encode");
    out
}

/// Rewrites Kafka's CRC after a test changed covered bytes on purpose.
fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32c(&bytes[CRC_COVERS_FROM..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

const ALL_CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn a_batch_round_trips_with_every_field() {
    let headers = [
        Header {
            key: b"trace",
            value: Some(b"abc"),
        },
        Header {
            key: b"empty",
            value: None,
        },
    ];
    let records = [
        Record {
            timestamp_ms: 1_000,
            key: Some(b"k1"),
            value: Some(b"v1"),
            headers: &headers,
        },
        Record {
            timestamp_ms: 999,
            key: None,
            value: None,
            headers: &[],
        },
        Record::keyed(1_500, b"", b""),
    ];
    let producer = ProducerInfo {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 17,
    };
    for compression in ALL_CODECS {
        let mut bytes = Vec::new();
        let encoded = encode_compressed(&records, producer, compression, usize::MAX, &mut bytes)
            .expect("encode");
        assert_eq!(encoded.length, bytes.len());
        assert_eq!(encoded.max_timestamp, 1_500);
        stamp(&mut bytes, 100, 7);

        let batch = Batch::parse(&bytes).expect("valid");
        let mut scratch = Vec::new();
        let validated = batch
            .validate(&BatchLimits::FORMAT, &mut scratch)
            .expect("records valid");
        assert_eq!(validated.compression, compression);
        let header = batch.header();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.leader_epoch, 7);
        assert_eq!(header.last_offset(), 102);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_500);
        assert_eq!(header.producer, producer);
        assert_eq!(header.last_sequence(), 19);

        let mut scratch = Vec::new();
        let decoded: Vec<RecordView<'_>> = batch
            .decode(&mut scratch, 1 << 20)
            .expect("decode")
            .map(|r| r.expect("record"))
            .collect();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].offset, 100);
        assert_eq!(decoded[0].key, Some(&b"k1"[..]));
        assert_eq!(decoded[0].headers().collect::<Vec<_>>(), headers);
        assert_eq!(decoded[1].timestamp_ms, 999);
        assert_eq!((decoded[1].key, decoded[1].value), (None, None));
        assert_eq!(decoded[2].value, Some(&b""[..]));
    }
}

#[test]
fn the_header_is_big_endian_at_kafkas_positions() {
    let mut bytes = Vec::new();
    let producer = ProducerInfo {
        producer_id: 0x0102_0304_0506_0708,
        producer_epoch: 0x0a0b,
        base_sequence: 0x0c0d_0e0f,
    };
    encode(&[Record::value(0x1122, b"v")], producer, &mut bytes).expect("encode");
    stamp(&mut bytes, 0x10, 0x20);
    assert_eq!(&bytes[0..8], &[0, 0, 0, 0, 0, 0, 0, 0x10]);
    assert_eq!(&bytes[8..12], &((bytes.len() - 12) as i32).to_be_bytes());
    assert_eq!(&bytes[12..16], &[0, 0, 0, 0x20]);
    assert_eq!(bytes[16], 2);
    assert_eq!(&bytes[21..23], &[0, 0]);
    assert_eq!(&bytes[23..27], &[0, 0, 0, 0]);
    assert_eq!(&bytes[27..35], &0x1122i64.to_be_bytes());
    assert_eq!(&bytes[43..51], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&bytes[51..53], &[0x0a, 0x0b]);
    assert_eq!(&bytes[53..57], &[0x0c, 0x0d, 0x0e, 0x0f]);
    assert_eq!(&bytes[57..61], &[0, 0, 0, 1]);
    // The record: length 8, attributes 0, timestamp delta 0, offset delta
    // 0, no key (-1 = zigzag 1), value of length 1 (zigzag 2), no headers.
    assert_eq!(&bytes[61..], &[14, 0, 0, 0, 1, 2, b'v', 0]);
}

#[test]
fn stamping_does_not_invalidate_the_crc() {
    let mut bytes = encode_one(&[Record::value(5, b"x")]);
    for (offset, epoch) in [(0, 0), (i64::MAX as u64 / 2, i32::MAX), (9, 1)] {
        stamp(&mut bytes, offset, epoch);
        assert!(Batch::parse(&bytes).is_ok());
    }
}

#[test]
fn every_bit_flip_from_the_magic_on_is_detected() {
    let bytes = encode_one(&[Record::keyed(5, b"key", b"value"), Record::value(6, b"w")]);
    // Base offset, length and leader epoch are the frame's to check.
    for bit in MAGIC_AT * 8..bytes.len() * 8 {
        let mut corrupt = bytes.clone();
        corrupt[bit / 8] ^= 1 << (bit % 8);
        assert!(Batch::parse(&corrupt).is_err(), "bit {bit} not detected");
    }
}

#[test]
fn structural_errors_are_typed() {
    let bytes = encode_one(&[Record::value(5, b"x")]);
    assert_eq!(
        Batch::parse(&bytes[..10]).map(|_| ()),
        Err(BatchError::Truncated {
            needed: HEADER_BYTES,
            available: 10
        })
    );
    assert!(matches!(
        Batch::parse(&bytes[..bytes.len() - 1]),
        Err(BatchError::Truncated { .. })
    ));
    let mut wrong_magic = bytes.clone();
    wrong_magic[MAGIC_AT] = 1;
    assert_eq!(
        Batch::parse(&wrong_magic).map(|_| ()),
        Err(BatchError::UnsupportedMagic { magic: 1 })
    );
    let mut short_length = bytes.clone();
    short_length[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&3i32.to_be_bytes());
    assert_eq!(
        Batch::parse(&short_length).map(|_| ()),
        Err(BatchError::BadLength { length: 3 })
    );
    let mut bad_codec = bytes.clone();
    bad_codec[ATTRIBUTES_AT + 1] = 5;
    fix_crc(&mut bad_codec);
    let batch = Batch::parse(&bad_codec).expect("header and CRC are fine");
    assert_eq!(
        batch.validate(&BatchLimits::FORMAT, &mut Vec::new()),
        Err(BatchError::UnsupportedCompression { codec: 5 })
    );
    let mut out = Vec::new();
    assert!(matches!(
        encode(&[], ProducerInfo::NONE, &mut out),
        Err(BatchError::Unencodable { .. })
    ));
}

#[test]
fn validation_refuses_what_breaks_kafkas_rules() {
    let limits = BatchLimits::FORMAT;
    let two = encode_one(&[Record::value(5, b"a"), Record::value(9, b"b")]);
    let check = |mutate: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = two.clone();
        mutate(&mut bytes);
        fix_crc(&mut bytes);
        Batch::parse(&bytes).and_then(|batch| batch.validate(&limits, &mut Vec::new()).map(|_| ()))
    };
    assert_eq!(check(&|_| {}), Ok(()));
    // A wrong max timestamp.
    let result = check(&|bytes| bytes[MAX_TIMESTAMP_AT + 7] = 8);
    assert!(
        matches!(result, Err(BatchError::InvalidRecords { .. })),
        "{result:?}"
    );
    // Offset deltas 0, 2 with a last offset delta of 2: not contiguous.
    let result = check(&|bytes| {
        bytes[LAST_OFFSET_DELTA_AT + 3] = 2;
        let second = HEADER_BYTES + 8;
        assert_eq!(bytes[second + 3], 2, "the second record's offset delta");
        bytes[second + 3] = 4;
    });
    assert!(
        matches!(result, Err(BatchError::InvalidRecords { .. })),
        "{result:?}"
    );
    // A record count above the records.
    let result = check(&|bytes| bytes[RECORD_COUNT_AT + 3] = 3);
    assert!(result.is_err(), "{result:?}");
    // A record count below them leaves bytes after the last record.
    let result = check(&|bytes| {
        bytes[RECORD_COUNT_AT + 3] = 1;
        bytes[LAST_OFFSET_DELTA_AT + 3] = 0;
    });
    assert!(
        matches!(result, Err(BatchError::Malformed { .. })),
        "{result:?}"
    );
    // An idempotent producer without a sequence.
    let result = check(&|bytes| {
        bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&7i64.to_be_bytes())
    });
    assert!(
        matches!(result, Err(BatchError::InvalidRecords { .. })),
        "{result:?}"
    );
    // Undefined attribute bits.
    let result = check(&|bytes| bytes[ATTRIBUTES_AT] = 0x80);
    assert!(
        matches!(result, Err(BatchError::InvalidRecords { .. })),
        "{result:?}"
    );
}

#[test]
fn limits_apply_to_records_and_to_decompressed_size() {
    let value = vec![7u8; 10_000];
    let records = [Record::value(1, &value)];
    let mut bytes = Vec::new();
    encode_compressed(
        &records,
        ProducerInfo::NONE,
        Compression::Zstd,
        usize::MAX,
        &mut bytes,
    )
    .expect("encode");
    let batch = Batch::parse(&bytes).expect("parse");
    let small_records = BatchLimits {
        record_bytes_max: 1_000,
        uncompressed_bytes_max: 1 << 20,
    };
    assert!(matches!(
        batch.validate(&small_records, &mut Vec::new()),
        Err(BatchError::RecordTooLarge { index: 0, .. })
    ));
    let small_output = BatchLimits {
        record_bytes_max: usize::MAX,
        uncompressed_bytes_max: 1_000,
    };
    assert_eq!(
        batch.validate(&small_output, &mut Vec::new()).map(|_| ()),
        Err(BatchError::UncompressedTooLarge { limit: 1_000 })
    );
}

#[test]
fn a_record_claiming_more_bytes_than_the_batch_is_malformed_not_a_panic() {
    let mut bytes = encode_one(&[Record::value(5, b"abc")]);
    bytes[HEADER_BYTES] = 0x7e;
    fix_crc(&mut bytes);
    let batch = Batch::parse(&bytes).expect("header and CRC are fine");
    assert!(matches!(
        batch.validate(&BatchLimits::FORMAT, &mut Vec::new()),
        Err(BatchError::Malformed { .. })
    ));
}

#[test]
fn concatenated_batches_iterate_and_stop_at_garbage() {
    let mut bytes = encode_one(&[Record::value(1, b"a")]);
    let mut second = encode_one(&[Record::value(2, b"b"), Record::value(3, b"c")]);
    stamp(&mut second, 1, 0);
    bytes.extend_from_slice(&second);
    let valid = bytes.len();
    bytes.extend_from_slice(&[0xAB; 70]);
    let mut iterator = batches(&bytes);
    let first = iterator.next().expect("first").expect("ok");
    assert_eq!(first.header().base_offset, 0);
    let second = iterator.next().expect("second").expect("ok");
    assert_eq!(second.header().base_offset, 1);
    assert_eq!(iterator.position(), valid);
    assert!(iterator.next().expect("garbage").is_err());
    assert!(iterator.next().is_none());
}

#[test]
fn record_size_matches_the_encoding() {
    let record = Record::keyed(10, b"key", &[7; 300]);
    let mut out = Vec::new();
    encode(&[record], ProducerInfo::NONE, &mut out).expect("encode");
    assert_eq!(
        out.len(),
        HEADER_BYTES + records::record_size(&record, 0, 0)
    );
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(add_sequence(i32::MAX, 1), 0);
    assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
    assert_eq!(add_sequence(5, 0), 5);
}

/// (timestamp, key, value, headers) of one record.
type RawRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn arbitrary_record() -> impl Strategy<Value = RawRecord> {
    (
        -1_000_000i64..1_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            ),
            0..3,
        ),
    )
}

proptest! {
    #[test]
    fn any_records_round_trip_in_every_codec(
        raw in proptest::collection::vec(arbitrary_record(), 1..20),
        base_offset in 0u64..1 << 40,
        codec in 0usize..5,
    ) {
        let headers: Vec<Vec<Header<'_>>> = raw
            .iter()
            .map(|(_, _, _, headers)| {
                headers
                    .iter()
                    .map(|(key, value)| Header { key, value: value.as_deref() })
                    .collect()
            })
            .collect();
        let records: Vec<Record<'_>> = raw
            .iter()
            .zip(&headers)
            .map(|((timestamp, key, value, _), headers)| Record {
                timestamp_ms: *timestamp,
                key: key.as_deref(),
                value: value.as_deref(),
                headers,
            })
            .collect();
        let mut bytes = Vec::new();
        encode_compressed(&records, ProducerInfo::NONE, ALL_CODECS[codec], usize::MAX, &mut bytes)
            .expect("encode");
        stamp(&mut bytes, base_offset, 1);
        let batch = Batch::parse(&bytes).expect("parse");
        batch.validate(&BatchLimits::FORMAT, &mut Vec::new()).expect("validate");
        let mut scratch = Vec::new();
        let decoded = batch.decode(&mut scratch, 1 << 20).expect("decode");
        for (index, (decoded, original)) in decoded.zip(&records).enumerate() {
            let decoded = decoded.expect("record");
            prop_assert_eq!(decoded.offset, base_offset + index as u64);
            prop_assert_eq!(decoded.timestamp_ms, original.timestamp_ms);
            prop_assert_eq!(decoded.key, original.key);
            prop_assert_eq!(decoded.value, original.value);
            prop_assert_eq!(decoded.headers().collect::<Vec<_>>(), original.headers.to_vec());
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for batch in batches(&bytes).flatten() {
            let _ = batch.validate(&BatchLimits::FORMAT, &mut Vec::new());
        }
    }
}
