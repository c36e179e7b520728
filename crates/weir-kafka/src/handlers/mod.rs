//! Request handlers, one module per family of APIs, and the dispatch from a
//! decoded request to its handler.

pub mod configs;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod partitions;
pub mod produce;
pub mod quorum;
pub mod reassign;

use std::sync::Arc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiVersionsResponse, RequestKind, ResponseKind, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::node::Kafka;
use crate::versions::SUPPORTED;

/// The one SASL mechanism weir offers.
pub const SASL_PLAIN: &str = "PLAIN";

/// What a connection knows about its client.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// The client's address, for logs and DescribeGroups.
    pub peer: String,
    /// The client id of its last request.
    pub client_id: String,
    /// It chose SASL/PLAIN with SaslHandshake.
    pub mechanism_chosen: bool,
    /// The user it authenticated as.
    pub user: Option<String>,
    /// Its last request was a produce answered without waiting for
    /// storage (nothing to sync): the connection may hold its reply back
    /// to write it with the next one's.
    pub answered_at_once: bool,
}

/// What to do with a handled request.
#[derive(Debug)]
pub enum Handled {
    /// Send this response.
    Reply(ResponseKind),
    /// Send this fetch response, its batches from the log's read buffers.
    Fetch(crate::reply::FetchReply),
    /// Send nothing (`acks=0` produce).
    Nothing,
    /// Send this response, then close the connection with this reason.
    ReplyAndClose(ResponseKind, String),
    /// Send what this gives once it is done (a produce waiting for its
    /// sync or its replicas); the connection's next produce requests may
    /// run meanwhile, and their responses follow this one.
    Later(crate::node::Later<Handled>),
}

/// The ApiVersions response: weir's table (also the body of the
/// UNSUPPORTED_VERSION fallback).
pub fn api_versions(error: Option<ResponseError>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |error| error.code()))
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|api| {
                    ApiVersion::default()
                        .with_api_key(api.key as i16)
                        .with_min_version(api.min)
                        .with_max_version(api.max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}

/// Runs one request.
pub async fn dispatch(
    kafka: &Arc<Kafka>,
    session: &mut Session,
    request: RequestKind,
    version: i16,
) -> Handled {
    use Handled::Reply;
    session.answered_at_once = false;
    match request {
        RequestKind::ApiVersions(_) => Reply(ResponseKind::ApiVersions(api_versions(None))),
        RequestKind::Metadata(request) => Reply(ResponseKind::Metadata(
            metadata::metadata(kafka, request, version).await,
        )),
        RequestKind::Produce(request) => match produce::produce(kafka, request, version).await {
            produce::Produced::Now(response) => {
                session.answered_at_once = true;
                response.map_or(Handled::Nothing, |response| {
                    Reply(ResponseKind::Produce(response))
                })
            }
            produce::Produced::Later(response) => {
                Handled::Later(crate::node::Later(Box::pin(async move {
                    Reply(ResponseKind::Produce(response.await))
                })))
            }
        },
        RequestKind::Fetch(request) => Handled::Fetch(fetch::fetch(kafka, request, version).await),
        RequestKind::ListOffsets(request) => Reply(ResponseKind::ListOffsets(fetch::list_offsets(
            kafka, request, version,
        ))),
        RequestKind::CreateTopics(request) => Reply(ResponseKind::CreateTopics(
            metadata::create_topics(kafka, request, version).await,
        )),
        RequestKind::CreatePartitions(request) => Reply(ResponseKind::CreatePartitions(
            partitions::create_partitions(kafka, request).await,
        )),
        RequestKind::DeleteTopics(request) => Reply(ResponseKind::DeleteTopics(
            metadata::delete_topics(kafka, request, version).await,
        )),
        RequestKind::DescribeConfigs(request) => Reply(ResponseKind::DescribeConfigs(
            metadata::describe_configs(kafka, request),
        )),
        RequestKind::AlterConfigs(request) => Reply(ResponseKind::AlterConfigs(
            configs::alter_configs(kafka, request).await,
        )),
        RequestKind::IncrementalAlterConfigs(request) => {
            Reply(ResponseKind::IncrementalAlterConfigs(
                configs::incremental_alter_configs(kafka, request).await,
            ))
        }
        RequestKind::InitProducerId(request) => Reply(ResponseKind::InitProducerId(
            groups::init_producer_id(kafka, request).await,
        )),
        RequestKind::FindCoordinator(request) => Reply(ResponseKind::FindCoordinator(
            groups::find_coordinator(kafka, request, version),
        )),
        RequestKind::JoinGroup(request) => {
            let host = session.peer.clone();
            Reply(ResponseKind::JoinGroup(
                groups::join_group(kafka, request, version, &session.client_id, &host).await,
            ))
        }
        RequestKind::SyncGroup(request) => Reply(ResponseKind::SyncGroup(
            groups::sync_group(kafka, request, version).await,
        )),
        RequestKind::Heartbeat(request) => {
            Reply(ResponseKind::Heartbeat(groups::heartbeat(kafka, request)))
        }
        RequestKind::LeaveGroup(request) => Reply(ResponseKind::LeaveGroup(groups::leave_group(
            kafka, request, version,
        ))),
        RequestKind::OffsetCommit(request) => Reply(ResponseKind::OffsetCommit(
            groups::offset_commit(kafka, request).await,
        )),
        RequestKind::OffsetFetch(request) => Reply(ResponseKind::OffsetFetch(
            groups::offset_fetch(kafka, request, version),
        )),
        RequestKind::DescribeGroups(request) => Reply(ResponseKind::DescribeGroups(
            groups::describe_groups(kafka, request, version),
        )),
        RequestKind::ListGroups(request) => Reply(ResponseKind::ListGroups(groups::list_groups(
            kafka, request, version,
        ))),
        RequestKind::DeleteGroups(request) => Reply(ResponseKind::DeleteGroups(
            groups::delete_groups(kafka, request).await,
        )),
        RequestKind::AlterPartitionReassignments(request) => Reply(
            ResponseKind::AlterPartitionReassignments(reassign::alter(kafka, request).await),
        ),
        RequestKind::ListPartitionReassignments(request) => Reply(
            ResponseKind::ListPartitionReassignments(reassign::list(kafka, request)),
        ),
        RequestKind::DescribeQuorum(request) => Reply(ResponseKind::DescribeQuorum(
            quorum::describe(kafka, request),
        )),
        RequestKind::SaslHandshake(request) => Reply(ResponseKind::SaslHandshake(sasl_handshake(
            kafka, session, request,
        ))),
        RequestKind::SaslAuthenticate(request) => sasl_authenticate(kafka, session, request),
        other => unreachable!(
            "the connection decodes only advertised APIs, and each has a handler: {other:?}"
        ),
    }
}

/// SaslHandshake: PLAIN is accepted when users are configured; another
/// mechanism gets UNSUPPORTED_SASL_MECHANISM and the list. Without users
/// (no SASL on the listener) or once authenticated, Kafka answers
/// ILLEGAL_SASL_STATE with no mechanisms, and so does weir.
fn sasl_handshake(
    kafka: &Kafka,
    session: &mut Session,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    if kafka.settings.users.is_empty() || session.user.is_some() {
        return SaslHandshakeResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code());
    }
    let response = SaslHandshakeResponse::default()
        .with_mechanisms(vec![StrBytes::from_static_str(SASL_PLAIN)]);
    session.mechanism_chosen = request.mechanism.as_str() == SASL_PLAIN;
    if session.mechanism_chosen {
        response
    } else {
        response.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
    }
}

fn sasl_authenticate(
    kafka: &Kafka,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> Handled {
    let refuse = |error: ResponseError, message: &str| {
        ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message.to_string()))),
        )
    };
    if !session.mechanism_chosen || session.user.is_some() {
        return Handled::ReplyAndClose(
            refuse(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate without a SaslHandshake choosing PLAIN",
            ),
            "SASL authentication out of order".into(),
        );
    }
    let mut fields = request.auth_bytes.split(|byte| *byte == 0);
    let (_authorization, user, password) = (fields.next(), fields.next(), fields.next());
    let user = user.map(|user| String::from_utf8_lossy(user).into_owned());
    let known = match (&user, password) {
        (Some(user), Some(password)) if fields.next().is_none() => kafka
            .settings
            .users
            .get(user)
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), password)),
        _ => false,
    };
    if !known {
        let reason = format!(
            "authentication failed for user {:?}",
            user.unwrap_or_default()
        );
        return Handled::ReplyAndClose(
            refuse(
                ResponseError::SaslAuthenticationFailed,
                "Authentication failed: Invalid username or password",
            ),
            reason,
        );
    }
    tracing::info!(peer = %session.peer, user = user.as_deref().unwrap_or(""), "client authenticated");
    session.user = user;
    Handled::Reply(ResponseKind::SaslAuthenticate(
        SaslAuthenticateResponse::default(),
    ))
}

/// Compares secrets in time that depends on their lengths only.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut difference = expected.len() ^ given.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}
