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

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handlers::{self, Handled, Session};
use crate::limits::REQUEST_BYTES_MIN;
use crate::node::{Kafka, Later};
use crate::reply::{self, encode, Reply};
use crate::shape;
use crate::versions;

/// What to do after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this response.
    Reply(Reply),
    /// Write nothing.
    Nothing,
    /// Write this response (if any), then close the connection.
    Close(Option<Reply>, String),
    /// Do what this gives once it is done; later produce requests may run
    /// meanwhile (see [`Handled::Later`]).
    Later(Later<Outcome>),
}

/// Replies held back at most, to go out in one write.
const REPLIES_HELD_MAX: usize = 8;
/// Produce requests of one connection waiting for their syncs or
/// replicas at most, before the connection stops reading (Kafka clients
/// keep at most 5 in flight by default).
const IN_FLIGHT_MAX: usize = 16;

/// Serves one client until it disconnects or must be disconnected.
///
/// Replies go out in order. A produce waiting for its sync or its
/// replicas does not stop the connection: its next requests are read,
/// and the next produce requests written (or queued for the replicas)
/// behind it, while it waits; any other request first waits for the
/// produce requests before it, as Kafka runs a connection's requests one
/// at a time. The reply of a produce answered at once (it waited for no
/// sync) is held back while the next request, also a produce, is already
/// read, so that a pipelining producer's replies go out several to a
/// write: on loopback each write wakes the client, and that wake-up cost
/// the broker more than the rest of a small reply. A reply is never held
/// while a request waits for storage or the network.
pub async fn serve<S>(kafka: Arc<Kafka>, stream: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut frames = FrameReader::new(reader, kafka.settings.request_bytes_max);
    let mut session = Session {
        peer: peer.clone(),
        ..Session::default()
    };
    let mut held: Vec<Reply> = Vec::new();
    let mut in_flight: VecDeque<Later<Outcome>> = VecDeque::new();
    loop {
        let hold = session.answered_at_once
            && in_flight.is_empty()
            && held.len() < REPLIES_HELD_MAX
            && frames.buffered_api_key() == Some(ApiKey::Produce as i16);
        if !hold && write_replies(&mut writer, &mut held).await.is_err() {
            return;
        }
        let frame = match next_event(&mut frames, &mut in_flight).await {
            Event::Finished(outcome) => {
                if finished(outcome, &mut held, &peer, &mut writer).await {
                    return;
                }
                continue;
            }
            Event::Frame(Ok(Some(frame))) => frame,
            Event::Frame(end) => {
                // The client may have closed only its side: it still gets
                // the replies of the requests it sent.
                if let Err(reason) = end {
                    tracing::warn!(%peer, %reason, "closing a Kafka connection");
                }
                settle(&mut in_flight, &mut held).await;
                let _ = write_replies(&mut writer, &mut held).await;
                return;
            }
        };
        if !is_produce(&frame) && settle(&mut in_flight, &mut held).await.is_some() {
            let _ = write_replies(&mut writer, &mut held).await;
            return;
        }
        match handle_frame(&kafka, &mut session, frame).await {
            Outcome::Later(later) => in_flight.push_back(later),
            Outcome::Nothing => {}
            outcome if !in_flight.is_empty() && !matches!(outcome, Outcome::Close(..)) => {
                in_flight.push_back(Later(Box::pin(async move { outcome })));
            }
            outcome => {
                settle(&mut in_flight, &mut held).await;
                if finished(outcome, &mut held, &peer, &mut writer).await {
                    return;
                }
            }
        }
    }
}

/// What a connection waits for.
enum Event {
    /// The next request frame (or the end of the stream, or why it
    /// cannot be read).
    Frame(Result<Option<Bytes>, String>),
    /// The oldest request in flight finished.
    Finished(Outcome),
}

/// The next request frame, or the oldest request in flight finishing,
/// whichever comes first (only the latter once [`IN_FLIGHT_MAX`] wait).
/// Held replies imply a whole request in the buffer or one in flight:
/// this does not wait on the socket alone with replies held.
async fn next_event<R>(
    frames: &mut FrameReader<R>,
    in_flight: &mut VecDeque<Later<Outcome>>,
) -> Event
where
    R: AsyncRead + Unpin,
{
    let full = in_flight.len() >= IN_FLIGHT_MAX;
    let Some(oldest) = in_flight.front_mut() else {
        return Event::Frame(frames.next().await);
    };
    let event = if full {
        Event::Finished((&mut oldest.0).await)
    } else {
        tokio::select! {
            biased;
            outcome = &mut oldest.0 => Event::Finished(outcome),
            next = frames.next() => Event::Frame(next),
        }
    };
    if matches!(event, Event::Finished(_)) {
        in_flight.pop_front();
    }
    event
}

/// Whether a request frame is a produce.
fn is_produce(frame: &[u8]) -> bool {
    frame.get(..2) == Some(&(ApiKey::Produce as i16).to_be_bytes()[..])
}

/// Waits for every request in flight, in order, holding their replies;
/// the reason to close the connection if one gives one.
async fn settle(in_flight: &mut VecDeque<Later<Outcome>>, held: &mut Vec<Reply>) -> Option<String> {
    while let Some(later) = in_flight.pop_front() {
        match later.0.await {
            Outcome::Reply(reply) => held.push(reply),
            Outcome::Nothing => {}
            Outcome::Close(reply, reason) => {
                held.extend(reply);
                return Some(reason);
            }
            Outcome::Later(_) => return Some("a request deferred twice".into()),
        }
    }
    None
}

/// Holds a finished request's reply; true if the connection was closed
/// (the replies held written first).
async fn finished<W>(outcome: Outcome, held: &mut Vec<Reply>, peer: &str, writer: &mut W) -> bool
where
    W: AsyncWrite + Unpin,
{
    let reason = match outcome {
        Outcome::Reply(reply) => {
            held.push(reply);
            return false;
        }
        Outcome::Nothing => return false,
        Outcome::Close(reply, reason) => {
            held.extend(reply);
            reason
        }
        Outcome::Later(_) => "a request deferred twice".into(),
    };
    tracing::warn!(%peer, %reason, "closing a Kafka connection");
    let _ = write_replies(writer, held).await;
    let _ = writer.shutdown().await;
    true
}

/// Writes the replies held, in order, in as few writes as they fit.
async fn write_replies<W>(writer: &mut W, held: &mut Vec<Reply>) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    if held.is_empty() {
        return Ok(());
    }
    let chunks: Vec<Bytes> = held
        .drain(..)
        .flat_map(|reply| reply.chunks().to_vec())
        .collect();
    write_chunks(writer, &chunks).await?;
    writer.flush().await
}

/// Bytes asked of the socket at a time: several pipelined requests, or a
/// good part of a large one, per read.
const READ_CHUNK_BYTES: usize = 256 << 10;

/// Reads size-prefixed request frames from a connection through a buffer
/// of its own, so that a read takes whatever has arrived (several
/// pipelined requests in one system call) and a frame is handed on
/// without a copy.
struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(reader: R, limit: usize) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// The next request frame (without its size prefix): `Ok(None)` at a
    /// clean end of stream. The buffer grows as bytes arrive, so a client
    /// announcing a large request and sending nothing holds no memory.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        if !self.fill(4).await? {
            return match self.buffer.is_empty() {
                true => Ok(None),
                false => Err("the client closed mid-request".into()),
            };
        }
        let size = i32::from_be_bytes(self.buffer[..4].try_into().expect("4 bytes"));
        let size = usize::try_from(size)
            .ok()
            .filter(|size| (REQUEST_BYTES_MIN..=self.limit).contains(size))
            .ok_or_else(|| {
                format!(
                    "request size {size} is outside {REQUEST_BYTES_MIN}..={} (socket.request.max.bytes)",
                    self.limit
                )
            })?;
        if !self.fill(4 + size).await? {
            return Err(format!(
                "the client closed mid-request ({} of {size} bytes)",
                self.buffer.len() - 4
            ));
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(size).freeze()))
    }

    /// The API key of the next request if all of it is in the buffer
    /// already.
    fn buffered_api_key(&self) -> Option<i16> {
        let size = self.buffer.get(..4)?;
        let size = usize::try_from(i32::from_be_bytes(size.try_into().ok()?)).ok()?;
        if size < 2 || self.buffer.len() < 4 + size {
            return None;
        }
        Some(i16::from_be_bytes([self.buffer[4], self.buffer[5]]))
    }

    /// Reads until the buffer holds `wanted` bytes: `false` if the stream
    /// ends first.
    async fn fill(&mut self, wanted: usize) -> Result<bool, String> {
        while self.buffer.len() < wanted {
            // At most a chunk more than has arrived: the buffer grows
            // with the bytes, not with the size announced.
            self.buffer.reserve(READ_CHUNK_BYTES);
            let read = self
                .reader
                .read_buf(&mut self.buffer)
                .await
                .map_err(|error| format!("reading failed: {error}"))?;
            if read == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
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
    respond(handled, api.key, version, correlation_id)
}

/// Encodes a handled request's response.
fn respond(handled: Handled, key: ApiKey, version: i16, correlation_id: i32) -> Outcome {
    let close = |reason: String| Outcome::Close(None, reason);
    let (encoded, reason) = match handled {
        Handled::Later(later) => {
            return Outcome::Later(Later(Box::pin(async move {
                match later.0.await {
                    Handled::Later(_) => close("a request deferred twice".into()),
                    handled => respond(handled, key, version, correlation_id),
                }
            })))
        }
        Handled::Nothing => return Outcome::Nothing,
        Handled::Reply(response) => (encode(key, version, correlation_id, &response), None),
        Handled::Fetch(reply) => (reply::encode_fetch(version, correlation_id, reply), None),
        Handled::ReplyAndClose(response, reason) => (
            encode(key, version, correlation_id, &response),
            Some(reason),
        ),
    };
    match (encoded, reason) {
        (Ok(bytes), None) => Outcome::Reply(bytes),
        (Ok(bytes), Some(reason)) => Outcome::Close(Some(bytes), reason),
        (Err(reason), _) => close(reason),
    }
}

/// Writes chunks with vectored writes (as many per call as the writer
/// takes).
async fn write_chunks<W>(writer: &mut W, chunks: &[Bytes]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let (mut index, mut offset) = (0, 0);
    while index < chunks.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[index][offset..])
            .chain(chunks[index + 1..].iter().map(|chunk| &chunk[..]))
            .take(IOV_MAX)
            .map(IoSlice::new)
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = chunks[index].len() - offset;
            if written < left {
                offset += written;
                written = 0;
            } else {
                written -= left;
                index += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}

/// Chunks handed to one vectored write (Linux takes up to 1024).
const IOV_MAX: usize = 64;
