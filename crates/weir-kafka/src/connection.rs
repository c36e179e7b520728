//! One client connection: read a size-prefixed request, check its API key
//! and version before the body, check its shape against the named limits,
//! decode it, run it, write the response. Requests of one connection are
//! answered one at a time, in order, as Kafka does.
//!
//! A request that cannot be one (a size out of bounds, an unknown API, a
//! version weir does not implement, a body that does not decode or breaks
//! a limit) closes this connection only, with the reason logged. The one
//! exception is Kafka's: ApiVersions at a version weir lacks is answered at
//! v0 with UNSUPPORTED_VERSION and weir's versions, so that the client
//! retries with one it can use.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handlers::{self, Handled, Session};
use crate::limits::REQUEST_BYTES_MIN;
use crate::node::Kafka;
use crate::shape;
use crate::versions;

/// What to do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write these bytes (a whole size-prefixed response).
    Reply(BytesMut),
    /// Write nothing.
    Nothing,
    /// Write these bytes (if any), then close the connection.
    Close(Option<BytesMut>, String),
}

/// Serves one client until it disconnects or must be disconnected.
pub async fn serve<S>(kafka: Arc<Kafka>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut session = Session {
        peer: peer.clone(),
        ..Session::default()
    };
    loop {
        let frame = match read_frame(&mut reader, kafka.settings.request_bytes_max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "closing a Kafka connection");
                return;
            }
        };
        let (bytes, close) = match handle_frame(&kafka, &mut session, frame).await {
            Outcome::Reply(bytes) => (Some(bytes), None),
            Outcome::Nothing => (None, None),
            Outcome::Close(bytes, reason) => (bytes, Some(reason)),
        };
        if let Some(bytes) = bytes {
            if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        if let Some(reason) = close {
            tracing::warn!(%peer, %reason, "closing a Kafka connection");
            let _ = writer.shutdown().await;
            return;
        }
    }
}

/// Reads one request frame: `Ok(None)` at a clean end of stream. The
/// buffer grows as bytes arrive, so a client announcing a large request
/// and sending nothing holds no memory.
async fn read_frame<R>(reader: &mut R, limit: usize) -> Result<Option<Bytes>, String>
where
    R: AsyncRead + Unpin,
{
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(format!("reading failed: {error}")),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|size| (REQUEST_BYTES_MIN..=limit).contains(size))
        .ok_or_else(|| {
            format!("request size {size} is outside {REQUEST_BYTES_MIN}..={limit} (socket.request.max.bytes)")
        })?;
    let mut frame = Vec::with_capacity(size.min(64 << 10));
    let read = (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(|error| format!("reading failed: {error}"))?;
    if read != size {
        return Err(format!(
            "the client closed mid-request ({read} of {size} bytes)"
        ));
    }
    Ok(Some(Bytes::from(frame)))
}

/// Runs one request frame (without its size prefix).
pub async fn handle_frame(kafka: &Arc<Kafka>, session: &mut Session, mut frame: Bytes) -> Outcome {
    let close = |reason: String| Outcome::Close(None, reason);
    if frame.len() < REQUEST_BYTES_MIN {
        return close(format!("request of {} bytes is too short", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Some(api) = versions::supported(key) else {
        return close(format!("unknown or unsupported API key {key}"));
    };
    if !(api.min..=api.max).contains(&version) {
        if api.key == ApiKey::ApiVersions {
            let body = handlers::api_versions(Some(ResponseError::UnsupportedVersion));
            return match encode(api.key, 0, correlation_id, &ResponseKind::ApiVersions(body)) {
                Ok(bytes) => Outcome::Reply(bytes),
                Err(reason) => close(reason),
            };
        }
        return close(format!(
            "{:?} v{version} is not implemented (weir implements v{}..=v{})",
            api.key, api.min, api.max
        ));
    }
    let header = match RequestHeader::decode(&mut frame, api.key.request_header_version(version)) {
        Ok(header) => header,
        Err(error) => return close(format!("undecodable request header: {error}")),
    };
    if let Err(reason) = shape::check(api.key, version, &frame) {
        return close(format!("{:?} v{version} refused: {reason}", api.key));
    }
    let request = match RequestKind::decode(api.key, &mut frame, version) {
        Ok(request) => request,
        Err(error) => return close(format!("undecodable {:?} v{version}: {error}", api.key)),
    };
    session.client_id = header.client_id.as_deref().unwrap_or("").to_string();
    let needs_authentication = !kafka.settings.users.is_empty() && session.user.is_none();
    let authentication_api = matches!(
        api.key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    );
    if needs_authentication && !authentication_api {
        return close(format!(
            "{:?} before SASL authentication (users are configured)",
            api.key
        ));
    }
    let handled = handlers::dispatch(kafka, session, request, version).await;
    let (response, reason) = match handled {
        Handled::Nothing => return Outcome::Nothing,
        Handled::Reply(response) => (response, None),
        Handled::ReplyAndClose(response, reason) => (response, Some(reason)),
    };
    match (encode(api.key, version, correlation_id, &response), reason) {
        (Ok(bytes), None) => Outcome::Reply(bytes),
        (Ok(bytes), Some(reason)) => Outcome::Close(Some(bytes), reason),
        (Err(reason), _) => close(reason),
    }
}

/// Encodes a size-prefixed response.
pub fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<BytesMut, String> {
    // Sized up front: a fetch response of megabytes would otherwise be
    // copied at every doubling of the buffer.
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
    Ok(bytes)
}
