//! A small Kafka client for the simulator's workload, on `kafka-protocol`
//! and the simulated network: one connection, one request at a time.

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
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl KafkaClient {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            correlation: 0,
        }
    }

    /// Sends a request and reads its response (`None` for a produce with
    /// acks=0, which gets none).
    pub async fn call(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> io::Result<ResponseKind> {
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
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|size| *size <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| invalid("response size out of range".into()))?;
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|error| invalid(error.to_string()))?;
        if header.correlation_id != self.correlation {
            return Err(invalid(format!(
                "response {} to request {}",
                header.correlation_id, self.correlation
            )));
        }
        ResponseKind::decode(api, &mut body, version).map_err(|error| invalid(error.to_string()))
    }
}
