//! A small Kafka client for the simulator's workload, on `kafka-protocol`
//! and the simulated network: one connection, requests sent one at a time
//! ([`KafkaClient::call`]) or several before their responses
//! ([`KafkaClient::send`], then [`KafkaClient::receive`] in order), as a
//! pipelining producer sends them.

use std::collections::VecDeque;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response the client accepts.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// One connection to a Kafka broker.
pub struct KafkaClient {
    stream: TcpStream,
    correlation: i32,
    /// The requests sent and not yet answered, oldest first: correlation
    /// id, API and version.
    waiting: VecDeque<(i32, ApiKey, i16)>,
    /// Requests queued and not yet written.
    outgoing: Vec<u8>,
}

/// An error that is the broker's fault (a response that does not decode,
/// or answers another request than the oldest one waiting) rather than
/// the network's: [`io::ErrorKind::InvalidData`].
fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl KafkaClient {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            correlation: 0,
            waiting: VecDeque::new(),
            outgoing: Vec::new(),
        }
    }

    /// Sends a request and reads its response.
    pub async fn call(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> io::Result<ResponseKind> {
        self.send(api, version, request).await?;
        self.receive().await
    }

    /// Sends a request without waiting for its response (one that gets a
    /// response: not a produce with acks=0).
    pub async fn send(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> io::Result<()> {
        self.queue(api, version, request)?;
        self.flush().await
    }

    /// Writes the requests queued, in one write.
    pub async fn flush(&mut self) -> io::Result<()> {
        let bytes = std::mem::take(&mut self.outgoing);
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    /// Queues a request to be written by the next [`KafkaClient::flush`]
    /// (requests queued together reach the broker in one segment, as a
    /// pipelining client's often do), its response to be read in turn.
    pub fn queue(&mut self, api: ApiKey, version: i16, request: &RequestKind) -> io::Result<()> {
        self.correlation += 1;
        let mut bytes = BytesMut::with_capacity(256);
        bytes.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir-sim")))
            .encode(&mut bytes, api.request_header_version(version))
            .map_err(|error| invalid(error.to_string()))?;
        request
            .encode(&mut bytes, version)
            .map_err(|error| invalid(error.to_string()))?;
        let size = (bytes.len() - 4) as i32;
        bytes[..4].copy_from_slice(&size.to_be_bytes());
        self.outgoing.extend_from_slice(&bytes);
        self.waiting.push_back((self.correlation, api, version));
        Ok(())
    }

    /// Reads the response to the oldest request sent and not answered.
    pub async fn receive(&mut self) -> io::Result<ResponseKind> {
        let Some(&(correlation, api, version)) = self.waiting.front() else {
            return Err(io::Error::other("no request waits for a response"));
        };
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|size| *size <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| invalid("response size out of range".into()))?;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await?;
        self.waiting.pop_front();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|error| invalid(error.to_string()))?;
        if header.correlation_id != correlation {
            return Err(invalid(format!(
                "response {} to request {correlation} ({api:?})",
                header.correlation_id
            )));
        }
        ResponseKind::decode(api, &mut body, version).map_err(|error| invalid(error.to_string()))
    }
}

/// A group leader's assignment: `items` dealt round-robin to the members
/// of `joined` in member-id order, each member's as a comma-separated list.
pub fn deal_round_robin(
    joined: &kafka_protocol::messages::JoinGroupResponse,
    items: impl IntoIterator<Item = String>,
) -> Vec<kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment> {
    let mut members: Vec<&StrBytes> = joined
        .members
        .iter()
        .map(|member| &member.member_id)
        .collect();
    members.sort();
    let mut dealt: std::collections::BTreeMap<&StrBytes, Vec<String>> = Default::default();
    for (at, item) in items.into_iter().enumerate() {
        dealt
            .entry(members[at % members.len()])
            .or_default()
            .push(item);
    }
    members
        .into_iter()
        .map(|member| {
            kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(Bytes::from(
                    dealt.get(member).cloned().unwrap_or_default().join(","),
                ))
        })
        .collect()
}
