//! Sessions through the request handlers, in process, on a simulated
//! disk: what a client sees for the cases real clients reach only by
//! accident (retried batches, fetches at the high watermark, bad frames,
//! SASL refusals).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use weir_kafka::connection::{handle_frame, Outcome};
use weir_kafka::fuzzing::kafka_on_sim_storage;
use weir_kafka::handlers::Session;
use weir_kafka::reply::Reply;
use weir_kafka::samples::{self, batch, fetch, produce};
use weir_kafka::{Kafka, KafkaSettings};

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
    match handle_frame(kafka, session, Bytes::from(frame)).await {
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

#[tokio::test]
async fn fetches_stop_at_the_high_watermark() {
    let kafka = kafka();
    let mut session = session();
    create_topic(&kafka, &mut session).await;
    produce_at(&kafka, &mut session, batch(-1, 0, 4)).await;
    let fetched = |offset| {
        let kafka = Arc::clone(&kafka);
        async move {
            let Some(ResponseKind::Fetch(response)) = call(
                &kafka,
                &mut Session::default(),
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
