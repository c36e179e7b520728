//! A lean Kafka client for the load generators (the repeated produce
//! request is encoded once, responses are read through a buffer), and the
//! `weir` processes they run against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use weir_log::{ProducerInfo, Record};

/// A batch of as many `record_bytes`-byte records as fit in `bytes_max`.
pub fn batch(record_bytes: usize, bytes_max: usize) -> Bytes {
    let value = vec![b'x'; record_bytes];
    let mut records = Vec::new();
    let mut encoded = Vec::new();
    loop {
        records.push(Record::value(1_700_000_000_000, &value));
        encoded.clear();
        weir_log::batch::encode(&records, ProducerInfo::NONE, &mut encoded).expect("encodes");
        if encoded.len() > bytes_max {
            records.pop();
            encoded.clear();
            weir_log::batch::encode(&records, ProducerInfo::NONE, &mut encoded).expect("encodes");
            return Bytes::from(encoded);
        }
    }
}

/// A client connection, as lean as a real client's: responses read
/// through a buffer, a repeated request encoded once.
pub struct Connection {
    stream: TcpStream,
    responses: std::io::BufReader<TcpStream>,
    /// The last correlation id sent.
    pub correlation: i32,
}

impl Connection {
    /// Connects to a Kafka listener on loopback.
    pub fn connect(port: u16) -> Connection {
        Self::try_connect(port).expect("connect")
    }

    /// Connects, or says why not.
    pub fn try_connect(port: u16) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let responses = std::io::BufReader::with_capacity(64 << 10, stream.try_clone()?);
        Ok(Connection {
            stream,
            responses,
            correlation: 0,
        })
    }

    /// Bounds how long a read or write waits.
    pub fn set_timeout(&self, timeout: std::time::Duration) {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let _ = self.stream.set_write_timeout(Some(timeout));
    }

    /// Sends a request.
    pub fn send(&mut self, api: ApiKey, version: i16, request: &RequestKind) {
        let bytes = self.encode(api, version, request);
        self.stream.write_all(&bytes).expect("send");
    }

    /// Sends a request encoded by [`Connection::encode`] again, with the
    /// next correlation id: what a producer's repeated batch costs the
    /// client is then the kernel's copy only, as with librdkafka's
    /// vectored writes from its batch buffers.
    pub fn send_again(&mut self, encoded: &mut [u8]) {
        self.correlation += 1;
        encoded[8..12].copy_from_slice(&self.correlation.to_be_bytes());
        self.stream.write_all(encoded).expect("send");
    }

    /// A size-prefixed request with the next correlation id.
    pub fn encode(&mut self, api: ApiKey, version: i16, request: &RequestKind) -> BytesMut {
        self.correlation += 1;
        let mut bytes = BytesMut::with_capacity((64 << 10) + 256);
        bytes.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("weir-load")))
            .encode(&mut bytes, api.request_header_version(version))
            .expect("header");
        request.encode(&mut bytes, version).expect("request");
        let size = (bytes.len() - 4) as i32;
        bytes[..4].copy_from_slice(&size.to_be_bytes());
        bytes
    }

    /// Reads the next response.
    pub fn receive(&mut self, api: ApiKey, version: i16) -> ResponseKind {
        self.try_receive(api, version).expect("response")
    }

    /// Reads the next response, or says why not.
    pub fn try_receive(&mut self, api: ApiKey, version: i16) -> std::io::Result<ResponseKind> {
        let mut size = [0u8; 4];
        self.responses.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.responses.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let invalid = |error: String| std::io::Error::other(error);
        ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|error| invalid(error.to_string()))?;
        ResponseKind::decode(api, &mut body, version).map_err(|error| invalid(error.to_string()))
    }

    /// Sends a request and reads its response.
    pub fn call(&mut self, api: ApiKey, version: i16, request: &RequestKind) -> ResponseKind {
        self.send(api, version, request);
        self.receive(api, version)
    }

    /// Sends a request and reads its response, or says why not.
    pub fn try_call(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> std::io::Result<ResponseKind> {
        let bytes = self.encode(api, version, request);
        self.stream.write_all(&bytes)?;
        self.try_receive(api, version)
    }
}

/// A produce request of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, acks: i16, batch: &Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch.clone())),
                ])]),
    )
}

/// A broker process, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its Kafka port.
    pub kafka_port: u16,
    /// Its data directory, removed when dropped.
    pub _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `weir` binary beside the bench (or `WEIR_BIN`).
pub fn weir_binary() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the bench's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/release")
        .join("weir")
}
