//! Entry points for fuzzing, shared by the cargo-fuzz targets in `fuzz/`
//! and by `cargo test`, which replays the committed corpus through them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;
use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::batch::{self, BatchLimits, HEADER_BYTES};
use weir_log::{
    Batch, BatchError, Broker, BrokerConfig, Compression, Header, ProducerInfo, Record,
};

use crate::connection::{handle_frame, Outcome};
use crate::handlers::Session;
use crate::interop::{decode_with_kafka_protocol, decode_with_weir, OwnedRecord};
use crate::node::{Kafka, KafkaSettings, SingleNode};
use crate::{samples, shape, versions};

/// The decompressed size both decoders are given room for.
const UNCOMPRESSED_BYTES_MAX: usize = 1 << 20;

/// Differential check of batch validation: `data` is a flag byte and a
/// record batch (usually a valid one, mutated). With flag bit 0 the length
/// field is set to the bytes given, with bit 1 Kafka's CRC is recomputed,
/// so that mutations reach the records. weir-log's validation and
/// kafka-protocol's decoder must then agree:
///
/// - a batch weir accepts, kafka-protocol decodes to the same records
///   (header keys that are not UTF-8, which kafka-protocol refuses, and
///   repeated header keys, which it folds into one, are compared as far as
///   it can represent them);
/// - a batch weir refuses and kafka-protocol accepts breaks one of the
///   rules only weir checks (listed in [`only_weir_checks`]).
///
/// kafka-protocol is not given inputs on which it would allocate without
/// bound or overflow an addition (it trusts counts and adds timestamps
/// unchecked); weir's verdict on those is still computed.
pub fn batch_validation(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 && bytes.len() >= HEADER_BYTES {
        let length = (bytes.len() - batch::LOG_OVERHEAD) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
    }
    if flags & 2 != 0 && bytes.len() >= HEADER_BYTES {
        let crc = batch::crc32c(&bytes[batch::CRC_COVERS_FROM..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let weir = weir_verdict(&bytes);
    if !safe_for_kafka_protocol(&bytes) {
        return;
    }
    let kafka = decode_with_kafka_protocol(&bytes);
    match (weir, kafka) {
        (Ok(ours), Ok(theirs)) => compare(&ours, &theirs),
        (Ok(ours), Err(error)) => assert!(
            has_non_utf8_header_key(&ours),
            "weir accepts a batch that kafka-protocol refuses ({error}): {ours:?}"
        ),
        (Err(error), Ok(_)) => assert!(
            only_weir_checks(&error),
            "weir refuses a batch that kafka-protocol accepts, for a reason both check: {error}"
        ),
        (Err(_), Err(_)) => {}
    }
}

fn weir_verdict(bytes: &[u8]) -> Result<Vec<OwnedRecord>, BatchError> {
    let batch = Batch::parse(bytes)?;
    let limits = BatchLimits {
        record_bytes_max: usize::MAX,
        uncompressed_bytes_max: UNCOMPRESSED_BYTES_MAX,
    };
    batch.validate(&limits, &mut Vec::new())?;
    decode_with_weir(&batch, UNCOMPRESSED_BYTES_MAX)
}

/// The checks weir makes that kafka-protocol's decoder does not: the
/// batch-level rules (record count against the last offset delta,
/// contiguous offsets, the maximum timestamp, producer fields, attribute
/// bits), exact record lengths and no trailing bytes, offset deltas that
/// are not negative and increase, bounds on varints and header counts, no
/// bytes after an lz4 frame, and size limits.
pub fn only_weir_checks(error: &BatchError) -> bool {
    match error {
        BatchError::InvalidRecords { .. }
        | BatchError::UncompressedTooLarge { .. }
        | BatchError::RecordTooLarge { .. } => true,
        BatchError::Decompression { reason, .. } => reason == "bytes after the lz4 frame",
        BatchError::Malformed { reason, .. } => [
            "bytes after the last record",
            "record length does not match its fields",
            "offset deltas do not increase",
            "negative offset delta",
            "offset delta beyond the batch's last offset delta",
            "varint overflows 32 bits",
            "varint longer than its type allows",
            "varlong overflows 64 bits",
            "negative header count or above RECORD_HEADERS_MAX",
        ]
        .contains(reason),
        _ => false,
    }
}

fn compare(ours: &[OwnedRecord], theirs: &[OwnedRecord]) {
    assert_eq!(ours.len(), theirs.len(), "record counts differ");
    for (mine, other) in ours.iter().zip(theirs) {
        assert_eq!(
            (mine.offset, mine.timestamp, &mine.key, &mine.value),
            (other.offset, other.timestamp, &other.key, &other.value),
            "records differ"
        );
        // kafka-protocol keeps headers in a map: one entry per key, at the
        // key's first position, holding its last value.
        let mut folded: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (key, value) in &mine.headers {
            match folded.iter_mut().find(|(seen, _)| seen == key) {
                Some(entry) => entry.1 = value.clone(),
                None => folded.push((key.clone(), value.clone())),
            }
        }
        assert_eq!(folded, other.headers, "headers differ");
    }
}

fn has_non_utf8_header_key(records: &[OwnedRecord]) -> bool {
    records
        .iter()
        .flat_map(|record| &record.headers)
        .any(|(key, _)| std::str::from_utf8(key).is_err())
}

/// Whether kafka-protocol can decode `bytes` without allocating for an
/// untrusted count or overflowing an addition: a batch header it would
/// accept, a record count and header counts no larger than the bytes,
/// records that decompress under the limit, and timestamps and offsets
/// that add up.
fn safe_for_kafka_protocol(bytes: &[u8]) -> bool {
    let Ok(header) = batch::BatchHeader::parse(bytes) else {
        return bytes.len() < HEADER_BYTES || bytes[16] != 2;
    };
    if header.batch_bytes as usize > bytes.len() {
        return true;
    }
    let records_bytes = &bytes[HEADER_BYTES..header.batch_bytes as usize];
    let mut decompressed = Vec::new();
    let records_bytes = match header.attributes.compression() {
        Err(_) | Ok(Compression::None) => records_bytes,
        Ok(compression) => {
            if compression
                .decompress(records_bytes, UNCOMPRESSED_BYTES_MAX, &mut decompressed)
                .is_err()
            {
                return false;
            }
            &decompressed
        }
    };
    if header.record_count as usize > records_bytes.len() {
        return false;
    }
    let mut walk = Walk {
        bytes: records_bytes,
        position: 0,
    };
    for _ in 0..header.record_count {
        match walk.record(header.base_offset as i64, header.base_timestamp) {
            Step::Next => {}
            Step::Stops => return true,
            Step::Unsafe => return false,
        }
    }
    true
}

enum Step {
    Next,
    Stops,
    Unsafe,
}

/// Walks records as kafka-protocol's decoder does, to find where it would
/// stop with an error and whether it would overflow before that.
struct Walk<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Walk<'_> {
    /// A varint as kafka-protocol reads one: at most `max_bytes` bytes,
    /// the last taken as final whatever its continuation bit, higher bits
    /// dropped.
    fn varint(&mut self, max_bytes: usize) -> Option<i64> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = *self.bytes.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f).wrapping_shl(7 * index as u32);
            if byte < 0x80 {
                break;
            }
        }
        if max_bytes == 5 {
            let zigzag = value as u32;
            return Some(i64::from(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32)));
        }
        Some(((value >> 1) as i64) ^ -((value & 1) as i64))
    }

    fn skip(&mut self, length: i64) -> Option<()> {
        let end = self.position.checked_add(usize::try_from(length).ok()?)?;
        (end <= self.bytes.len()).then(|| self.position = end)
    }

    fn record(&mut self, base_offset: i64, base_timestamp: i64) -> Step {
        let Some(size) = self.varint(5).filter(|size| *size >= 0) else {
            return Step::Stops;
        };
        let start = self.position;
        let Some(end) = start
            .checked_add(size as usize)
            .filter(|end| *end <= self.bytes.len())
        else {
            return Step::Stops;
        };
        let mut inner = Walk {
            bytes: &self.bytes[..end],
            position: start,
        };
        self.position = end;
        let step = inner.fields(base_offset, base_timestamp);
        step.unwrap_or(Step::Stops)
    }

    fn fields(&mut self, base_offset: i64, base_timestamp: i64) -> Option<Step> {
        self.skip(1)?;
        let timestamp_delta = self.varint(10)?;
        if base_timestamp.checked_add(timestamp_delta).is_none() {
            return Some(Step::Unsafe);
        }
        let offset_delta = self.varint(5)?;
        if base_offset.checked_add(offset_delta).is_none() {
            return Some(Step::Unsafe);
        }
        for _ in 0..2 {
            let length = self.varint(5)?;
            if length < -1 {
                return None;
            }
            if length >= 0 {
                self.skip(length)?;
            }
        }
        let headers = self.varint(5)?;
        if headers < 0 {
            return None;
        }
        if headers as usize > self.bytes.len() {
            return Some(Step::Unsafe);
        }
        Some(Step::Next)
    }
}

/// A Kafka front-end over a fresh simulated disk and a manual clock, for
/// tests and fuzzing.
pub fn kafka_on_sim_storage(seed: u64, settings: KafkaSettings) -> Arc<Kafka> {
    kafka_on_sim_storage_with(seed, settings, BrokerConfig::default())
}

/// Like [`kafka_on_sim_storage`], with the broker's settings (a flush
/// policy, say).
pub fn kafka_on_sim_storage_with(
    seed: u64,
    settings: KafkaSettings,
    broker: BrokerConfig,
) -> Arc<Kafka> {
    let leaders = Box::new(SingleNode::new("127.0.0.1", 9092));
    kafka_on_sim_storage_led(seed, settings, broker, leaders)
}

/// Like [`kafka_on_sim_storage_with`], with the seam that says who leads
/// (a test double of a cluster node, say).
pub fn kafka_on_sim_storage_led(
    seed: u64,
    settings: KafkaSettings,
    broker: BrokerConfig,
    leaders: Box<dyn crate::Leaders>,
) -> Arc<Kafka> {
    let root: Arc<dyn Storage> = Arc::new(SimDisk::new(seed).root());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let (log, _) = Broker::open(Arc::clone(&root), clock, broker)
        .expect("a broker opens on a fresh simulated disk");
    let own = root
        .open_or_create_dir("kafka")
        .expect("a directory on a fresh simulated disk");
    let kafka = Kafka::new(Arc::new(log), own, settings, leaders)
        .expect("the front-end opens on a fresh simulated disk");
    Arc::new(kafka)
}

/// Fuzz target `kafka_request`: `data` is a request frame (header and
/// body, without the size prefix). The shape check must stand between the
/// bytes and `kafka-protocol`'s decoder: whatever it lets through decodes
/// without unbounded allocation, and every request the decoder produces,
/// re-encoded, passes the check to its last byte.
pub fn kafka_request(data: &[u8]) {
    let Some((api, version, body)) = split_request(data) else {
        return;
    };
    if shape::check(api, version, &body).is_err() {
        return;
    }
    let Ok(request) = RequestKind::decode(api, &mut body.clone(), version) else {
        return;
    };
    if let Some(again) = samples::encode_body(&request, version) {
        let consumed = shape::check_consumed(api, version, &again)
            .unwrap_or_else(|error| panic!("{api:?} v{version} re-encoded is refused: {error}"));
        assert_eq!(consumed, again.len(), "{api:?} v{version} re-encoded");
    }
}

/// The API, version and body of a frame of a supported version.
fn split_request(data: &[u8]) -> Option<(ApiKey, i16, Bytes)> {
    let key = i16::from_be_bytes([*data.first()?, *data.get(1)?]);
    let version = i16::from_be_bytes([*data.get(2)?, *data.get(3)?]);
    let api = versions::supported(key)?;
    if !versions::is_supported(key, version) {
        return None;
    }
    let mut frame = Bytes::copy_from_slice(data);
    RequestHeader::decode(&mut frame, api.key.request_header_version(version)).ok()?;
    Some((api.key, version, frame))
}

/// Fuzz target `kafka_session`: `data` is a sequence of request frames,
/// each preceded by its length (two bytes, big-endian), run in order on
/// one connection of a fresh node until one closes it. Nothing panics,
/// every response decodes as Kafka's client decoders read it, and every
/// partition's invariants hold at the end.
pub fn kafka_session(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let settings = KafkaSettings {
        fetch_wait_ms_max: 0,
        ..KafkaSettings::default()
    };
    let kafka = kafka_on_sim_storage(1, settings);
    runtime.block_on(async {
        let mut session = Session {
            peer: "fuzz".into(),
            ..Session::default()
        };
        let mut rest = data;
        while rest.len() >= 2 {
            let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let frame = &rest[2..(2 + length).min(rest.len())];
            rest = &rest[(2 + length).min(rest.len())..];
            let api = split_request(frame).map(|(api, version, _)| (api, version));
            let outcome = tokio::time::timeout(Duration::from_millis(20), async {
                match handle_frame(&kafka, &mut session, Bytes::copy_from_slice(frame)).await {
                    Outcome::Later(later) => later.0.await,
                    outcome => outcome,
                }
            })
            .await;
            match outcome {
                // A request parked (a join waiting for other members).
                Err(_) => break,
                Ok(Outcome::Nothing) => {}
                Ok(Outcome::Reply(bytes)) => check_response(api, &bytes.contiguous()),
                Ok(Outcome::Close(bytes, _)) => {
                    if let Some(bytes) = bytes {
                        check_response(api, &bytes.contiguous());
                    }
                    break;
                }
                Ok(Outcome::Later(_)) => panic!("a request deferred twice"),
            }
        }
    });
    for topic in kafka.log.topics() {
        for partition in 0..topic.partitions {
            let log = kafka.log.partition(&topic.name, partition).expect("listed");
            log.check_invariants()
                .unwrap_or_else(|error| panic!("{}/{partition}: {error}", topic.name));
        }
    }
}

/// A response decodes as the client would read it.
fn check_response(api: Option<(ApiKey, i16)>, bytes: &[u8]) {
    let Some((api, version)) = api else {
        // Only ApiVersions' fallback answers a version it does not know.
        return;
    };
    let size = i32::from_be_bytes(bytes[..4].try_into().expect("a size prefix"));
    assert_eq!(
        size as usize,
        bytes.len() - 4,
        "the size prefix is the response's"
    );
    let mut body = Bytes::copy_from_slice(&bytes[4..]);
    kafka_protocol::messages::ResponseHeader::decode(
        &mut body,
        api.response_header_version(version),
    )
    .unwrap_or_else(|error| panic!("{api:?} v{version} response header: {error}"));
    ResponseKind::decode(api, &mut body, version)
        .unwrap_or_else(|error| panic!("{api:?} v{version} response: {error}"));
}

/// Seed inputs for the fuzz corpus: (target, name, bytes).
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let headers = [
        Header {
            key: b"trace",
            value: Some(b"1"),
        },
        Header {
            key: b"trace",
            value: None,
        },
    ];
    let records = [
        Record::keyed(1_000, b"key", b"value"),
        Record {
            timestamp_ms: 1_003,
            key: None,
            value: None,
            headers: &headers,
        },
        Record::value(999, b""),
    ];
    let producer = ProducerInfo {
        producer_id: 3,
        producer_epoch: 1,
        base_sequence: 40,
    };
    let mut corpus = Vec::new();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut bytes = Vec::new();
        batch::encode_compressed(&records, producer, compression, usize::MAX, &mut bytes)
            .expect("encode");
        for flags in [0u8, 3] {
            let mut input = vec![flags];
            input.extend_from_slice(&bytes);
            corpus.push((
                "batch_validation",
                format!("{}-{flags}", compression.name()),
                input,
            ));
        }
    }
    corpus.extend(request_seeds());
    corpus
}

/// Every sample request as a `kafka_request` seed, and sessions of them
/// for `kafka_session`: one per API (every version in turn) and one that
/// creates a topic, produces, fetches, lists offsets and commits.
fn request_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut per_api: std::collections::BTreeMap<i16, Vec<u8>> = Default::default();
    for (index, (api, version, request)) in samples::requests().into_iter().enumerate() {
        let frame = samples::frame(api, version, index as i32, &request);
        seeds.push((
            "kafka_request",
            format!("{api:?}-v{version}-{index}"),
            frame.clone(),
        ));
        let session = per_api.entry(api as i16).or_default();
        session.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        session.extend_from_slice(&frame);
    }
    for (key, session) in per_api {
        seeds.push(("kafka_session", format!("api-{key}"), session));
    }
    let mut flow = Vec::new();
    for (index, (api, version, request)) in samples::session().into_iter().enumerate() {
        let frame = samples::frame(api, version, index as i32, &request);
        flow.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        flow.extend_from_slice(&frame);
    }
    seeds.push(("kafka_session", "client-flow".into(), flow));
    seeds
}
