//! What the nodes of a cluster ask the controller (the metadata group's
//! leader), carried as application messages of the replication transport.
//!
//! ```text
//! message   u8 version (1) | u8 kind | fields
//! register  (kind 1) u64 node | text kafka address | text resp address
//! create    (kind 2) u64 request | text topic | u32 partitions | u32 factor
//! delete    (kind 3) u64 request | text topic
//! refused   (kind 4) u64 request | i16 Kafka error code | text message
//! text      u16 length | that many bytes of UTF-8 (at most 1024)
//! ```
//!
//! Integers are little-endian. The decoder refuses anything else: unknown
//! versions and kinds, truncation, bad UTF-8, trailing bytes.

const VERSION: u8 = 1;
/// The longest text field.
pub const TEXT_BYTES_MAX: usize = 1024;

/// A request to the controller, or its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterMessage {
    /// A node's addresses, for the controller to record.
    Register {
        /// The node's id.
        node: u64,
        /// Where Kafka clients reach it.
        kafka_address: String,
        /// Where Redis clients reach it.
        resp_address: String,
    },
    /// Create a topic.
    CreateTopic {
        /// The asker's number for the request.
        request: u64,
        /// The topic.
        name: String,
        /// Its partitions.
        partitions: u32,
        /// Replicas of each.
        replication_factor: u32,
    },
    /// Delete a topic.
    DeleteTopic {
        /// The asker's number for the request.
        request: u64,
        /// The topic.
        name: String,
    },
    /// The controller refused a request.
    Refused {
        /// The asker's number for the request.
        request: u64,
        /// Kafka's error code.
        code: i16,
        /// Why.
        message: String,
    },
}

/// Why bytes are not a cluster message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cluster message: {0}")]
pub struct MessageError(pub String);

impl ClusterMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Self::Register {
                node,
                kafka_address,
                resp_address,
            } => {
                out.push(1);
                out.extend_from_slice(&node.to_le_bytes());
                put_text(&mut out, kafka_address);
                put_text(&mut out, resp_address);
            }
            Self::CreateTopic {
                request,
                name,
                partitions,
                replication_factor,
            } => {
                out.push(2);
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
                out.extend_from_slice(&partitions.to_le_bytes());
                out.extend_from_slice(&replication_factor.to_le_bytes());
            }
            Self::DeleteTopic { request, name } => {
                out.push(3);
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
            }
            Self::Refused {
                request,
                code,
                message,
            } => {
                out.push(4);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&code.to_le_bytes());
                put_text(&mut out, message);
            }
        }
        out
    }

    /// Decodes a whole message.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut reader = Reader { bytes };
        let version = reader.u8()?;
        if version != VERSION {
            return Err(MessageError(format!("version {version} is not known")));
        }
        let message = match reader.u8()? {
            1 => Self::Register {
                node: reader.u64()?,
                kafka_address: reader.text()?,
                resp_address: reader.text()?,
            },
            2 => Self::CreateTopic {
                request: reader.u64()?,
                name: reader.text()?,
                partitions: reader.u32()?,
                replication_factor: reader.u32()?,
            },
            3 => Self::DeleteTopic {
                request: reader.u64()?,
                name: reader.text()?,
            },
            4 => Self::Refused {
                request: reader.u64()?,
                code: i16::from_le_bytes(reader.take(2)?.try_into().expect("two bytes")),
                message: reader.text()?,
            },
            kind => return Err(MessageError(format!("kind {kind} is not known"))),
        };
        if !reader.bytes.is_empty() {
            return Err(MessageError(format!(
                "{} bytes after the message",
                reader.bytes.len()
            )));
        }
        Ok(message)
    }
}

/// Writes a text field, cut to [`TEXT_BYTES_MAX`] at a character boundary.
fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], MessageError> {
        if self.bytes.len() < count {
            return Err(MessageError(format!(
                "truncated: {count} bytes needed, {} left",
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("eight bytes"),
        ))
    }

    fn text(&mut self) -> Result<String, MessageError> {
        let length = usize::from(u16::from_le_bytes(
            self.take(2)?.try_into().expect("two bytes"),
        ));
        if length > TEXT_BYTES_MAX {
            return Err(MessageError(format!(
                "text of {length} bytes, more than {TEXT_BYTES_MAX}"
            )));
        }
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MessageError("text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = ClusterMessage> {
        let text = "\\PC{0,40}";
        prop_oneof![
            (any::<u64>(), text, text).prop_map(|(node, kafka_address, resp_address)| {
                ClusterMessage::Register {
                    node,
                    kafka_address,
                    resp_address,
                }
            }),
            (any::<u64>(), text, any::<u32>(), any::<u32>()).prop_map(
                |(request, name, partitions, replication_factor)| ClusterMessage::CreateTopic {
                    request,
                    name,
                    partitions,
                    replication_factor,
                }
            ),
            (any::<u64>(), text)
                .prop_map(|(request, name)| ClusterMessage::DeleteTopic { request, name }),
            (any::<u64>(), any::<i16>(), text).prop_map(|(request, code, message)| {
                ClusterMessage::Refused {
                    request,
                    code,
                    message,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip_and_every_cut_is_refused(message in message()) {
            let bytes = message.encode();
            prop_assert_eq!(ClusterMessage::decode(&bytes), Ok(message));
            for cut in 0..bytes.len() {
                prop_assert!(ClusterMessage::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(ClusterMessage::decode(&longer).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ClusterMessage::decode(&bytes);
        }
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let name = "é".repeat(TEXT_BYTES_MAX);
        let bytes = ClusterMessage::DeleteTopic { request: 1, name }.encode();
        match ClusterMessage::decode(&bytes) {
            Ok(ClusterMessage::DeleteTopic { name, .. }) => {
                assert_eq!(name.len(), TEXT_BYTES_MAX);
            }
            other => panic!("{other:?}"),
        }
        let mut unknown = bytes.clone();
        unknown[1] = 9;
        assert!(ClusterMessage::decode(&unknown).is_err());
    }
}
