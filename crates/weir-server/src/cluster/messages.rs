//! What the nodes of a cluster ask the controller (the metadata group's
//! leader), carried as application messages of the replication transport.
//!
//! ```text
//! message   u8 version (1) | u8 kind | fields
//! register  (kind 1) u64 node | text kafka address | text resp address |
//!                    text cluster address
//! create    (kind 2) u64 request | text topic | u32 partitions | u32 factor
//!           (kind 9) as kind 2, then u8 count (1 to 64) | count × (text
//!                    config name | text value): a topic with configs
//! delete    (kind 3) u64 request | text topic
//! refused   (kind 4) u64 request | i16 Kafka error code | text message
//! reassign  (kind 5) u64 request | u64 group | nodes target (none: cancel)
//! moved     (kind 6) u64 group | nodes voters (a group leader's report)
//! ask       (kind 7) (a node starting with no cluster state asks whether
//!                    its peers have known its id)
//! answer    (kind 8) u8 known (0 or 1)
//! ids       (kind 10) u64 request | u64 floor (a block of producer ids
//!                    for the asker, from floor at least)
//! grow      (kind 11) u64 request | text topic | u32 partitions (the
//!                    count the topic is to have: CreatePartitions)
//! done      (kind 12) u64 request | u64 offset (the controller made the
//!                    change, or found it made, in the metadata up to
//!                    offset)
//! leading   (kind 14) u32 count (at most 65536) | count × (u64 group |
//!                    u64 term | nodes in-sync): every group the sender
//!                    leads (a group it no longer names it no longer
//!                    leads), sent to every peer when that changes and
//!                    every second
//! configs   (kind 13) u64 request | text topic | u8 replace (0 or 1) |
//!                    u8 count (0 to 64) | count × (text config name |
//!                    u8 operation (0 set, 1 delete, 2 append, 3
//!                    subtract) | u8 has value (0 or 1) | text value if
//!                    so): AlterConfigs (replace) or
//!                    IncrementalAlterConfigs
//! nodes     u8 count (at most 7) | count × u64 node
//! text      u16 length | that many bytes of UTF-8 (at most 1024)
//! ```
//!
//! Integers are little-endian. The decoder refuses anything else: unknown
//! versions and kinds, truncation, bad UTF-8, trailing bytes.

use weir_kafka::handlers::configs::{ConfigChange, ConfigOperation};

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
        /// Where its peers reach it.
        cluster_address: String,
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
        /// Its Kafka configs (name, value), checked by the asker.
        configs: Vec<(String, String)>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// The asker's number for the request.
        request: u64,
        /// The topic.
        name: String,
    },
    /// Change a topic's configs: the controller applies `changes` to the
    /// configs its metadata has (to none first when `replace`).
    AlterConfigs {
        /// The asker's number for the request.
        request: u64,
        /// The topic.
        name: String,
        /// AlterConfigs (the configs become those set) rather than
        /// IncrementalAlterConfigs.
        replace: bool,
        /// The changes, checked by the asker.
        changes: Vec<ConfigChange>,
    },
    /// The sender leads these groups, and no others.
    Leading {
        /// Each group it leads.
        groups: Vec<Led>,
    },
    /// Add partitions to a topic so that it has `partitions`.
    CreatePartitions {
        /// The asker's number for the request.
        request: u64,
        /// The topic.
        name: String,
        /// The count it is to have.
        partitions: u32,
    },
    /// The controller made a request's change (or found it made): its
    /// metadata is applied up to `offset`, which holds it.
    Done {
        /// The asker's number for the request.
        request: u64,
        /// The end of the metadata the controller had applied.
        offset: u64,
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
    /// Move a group's replicas to `target` (empty: cancel the move under
    /// way).
    Reassign {
        /// The asker's number for the request.
        request: u64,
        /// The partition's Raft group.
        group: u64,
        /// The replicas it is to have.
        target: Vec<u64>,
    },
    /// A group's leader reports that its voters are now `voters` (the
    /// target of its reassignment).
    Reassigned {
        /// The partition's Raft group.
        group: u64,
        /// Its voters.
        voters: Vec<u64>,
    },
    /// A node starting with no cluster state asks whether the cluster has
    /// known it (if so, its disk was lost: see `controller::check_not_lost`).
    AskKnown,
    /// The answer: whether this node's metadata log (committed or not)
    /// names the asker.
    Known {
        /// Whether it does.
        known: bool,
    },
    /// Hand the asker a block of producer ids starting at `floor` or
    /// above (the end of every block it has recorded as its own).
    AllocateProducerIds {
        /// The asker's number for the request.
        request: u64,
        /// The lowest id the block may start at.
        floor: u64,
    },
}

/// A group a node leads, as it tells its peers (who do not replicate the
/// group, so know its leader from this alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Led {
    /// The group.
    pub group: u64,
    /// Its term (the leader epoch).
    pub term: u64,
    /// Its in-sync replicas.
    pub in_sync: Vec<u64>,
}

/// The most groups a [`ClusterMessage::Leading`] names.
pub const LED_MAX: usize = 1 << 16;

/// The most nodes in a message's list.
pub const NODES_MAX: usize = 7;
/// The most configs of a topic to create (callers keep within it: see
/// `metadata::configs_fit`).
pub const CONFIGS_MAX: usize = weir_replication::metadata::MAX_TOPIC_CONFIGS;
// A config that fits a metadata record goes whole into a message.
const _: () = assert!(weir_replication::metadata::MAX_CONFIG_BYTES <= TEXT_BYTES_MAX);

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
                cluster_address,
            } => {
                out.push(1);
                out.extend_from_slice(&node.to_le_bytes());
                put_text(&mut out, kafka_address);
                put_text(&mut out, resp_address);
                put_text(&mut out, cluster_address);
            }
            Self::CreateTopic {
                request,
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                out.push(if configs.is_empty() { 2 } else { 9 });
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
                out.extend_from_slice(&partitions.to_le_bytes());
                out.extend_from_slice(&replication_factor.to_le_bytes());
                if !configs.is_empty() {
                    let count = configs.len().min(CONFIGS_MAX);
                    out.push(count as u8);
                    for (key, value) in &configs[..count] {
                        put_text(&mut out, key);
                        put_text(&mut out, value);
                    }
                }
            }
            Self::AlterConfigs {
                request,
                name,
                replace,
                changes,
            } => {
                out.push(13);
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
                out.push(u8::from(*replace));
                let count = changes.len().min(CONFIGS_MAX);
                out.push(count as u8);
                for change in &changes[..count] {
                    put_text(&mut out, &change.name);
                    out.push(change.operation.code() as u8);
                    out.push(u8::from(change.value.is_some()));
                    if let Some(value) = &change.value {
                        put_text(&mut out, value);
                    }
                }
            }
            Self::Leading { groups } => {
                out.push(14);
                let count = groups.len().min(LED_MAX);
                out.extend_from_slice(&(count as u32).to_le_bytes());
                for led in &groups[..count] {
                    out.extend_from_slice(&led.group.to_le_bytes());
                    out.extend_from_slice(&led.term.to_le_bytes());
                    put_nodes(&mut out, &led.in_sync);
                }
            }
            Self::CreatePartitions {
                request,
                name,
                partitions,
            } => {
                out.push(11);
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
                out.extend_from_slice(&partitions.to_le_bytes());
            }
            Self::DeleteTopic { request, name } => {
                out.push(3);
                out.extend_from_slice(&request.to_le_bytes());
                put_text(&mut out, name);
            }
            Self::Done { request, offset } => {
                out.push(12);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
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
            Self::Reassign {
                request,
                group,
                target,
            } => {
                out.push(5);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&group.to_le_bytes());
                put_nodes(&mut out, target);
            }
            Self::Reassigned { group, voters } => {
                out.push(6);
                out.extend_from_slice(&group.to_le_bytes());
                put_nodes(&mut out, voters);
            }
            Self::AskKnown => out.push(7),
            Self::Known { known } => {
                out.push(8);
                out.push(u8::from(*known));
            }
            Self::AllocateProducerIds { request, floor } => {
                out.push(10);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&floor.to_le_bytes());
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
                cluster_address: reader.text()?,
            },
            kind @ (2 | 9) => Self::CreateTopic {
                request: reader.u64()?,
                name: reader.text()?,
                partitions: reader.u32()?,
                replication_factor: reader.u32()?,
                configs: if kind == 9 {
                    reader.configs()?
                } else {
                    Vec::new()
                },
            },
            3 => Self::DeleteTopic {
                request: reader.u64()?,
                name: reader.text()?,
            },
            12 => Self::Done {
                request: reader.u64()?,
                offset: reader.u64()?,
            },
            11 => Self::CreatePartitions {
                request: reader.u64()?,
                name: reader.text()?,
                partitions: reader.u32()?,
            },
            4 => Self::Refused {
                request: reader.u64()?,
                code: i16::from_le_bytes(reader.take(2)?.try_into().expect("two bytes")),
                message: reader.text()?,
            },
            5 => Self::Reassign {
                request: reader.u64()?,
                group: reader.u64()?,
                target: reader.nodes()?,
            },
            6 => Self::Reassigned {
                group: reader.u64()?,
                voters: reader.nodes()?,
            },
            7 => Self::AskKnown,
            8 => Self::Known {
                known: match reader.u8()? {
                    0 => false,
                    1 => true,
                    flag => return Err(MessageError(format!("known flag {flag}"))),
                },
            },
            14 => Self::Leading {
                groups: reader.led()?,
            },
            13 => Self::AlterConfigs {
                request: reader.u64()?,
                name: reader.text()?,
                replace: reader.flag("replace")?,
                changes: reader.changes()?,
            },
            10 => Self::AllocateProducerIds {
                request: reader.u64()?,
                floor: reader.u64()?,
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

/// Writes a list of node ids (callers keep it within [`NODES_MAX`]).
fn put_nodes(out: &mut Vec<u8>, nodes: &[u64]) {
    let count = nodes.len().min(NODES_MAX);
    out.push(count as u8);
    for node in &nodes[..count] {
        out.extend_from_slice(&node.to_le_bytes());
    }
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

    fn nodes(&mut self) -> Result<Vec<u64>, MessageError> {
        let count = usize::from(self.u8()?);
        if count > NODES_MAX {
            return Err(MessageError(format!(
                "{count} nodes, more than {NODES_MAX}"
            )));
        }
        (0..count).map(|_| self.u64()).collect()
    }

    fn configs(&mut self) -> Result<Vec<(String, String)>, MessageError> {
        let count = usize::from(self.u8()?);
        if count == 0 || count > CONFIGS_MAX {
            return Err(MessageError(format!("{count} configs")));
        }
        (0..count)
            .map(|_| Ok((self.text()?, self.text()?)))
            .collect()
    }

    fn flag(&mut self, field: &str) -> Result<bool, MessageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(MessageError(format!("{field} flag {other}"))),
        }
    }

    fn led(&mut self) -> Result<Vec<Led>, MessageError> {
        let count = self.u32()? as usize;
        // Each takes at least 17 bytes.
        if count > LED_MAX || count > self.bytes.len() / 17 {
            return Err(MessageError(format!("{count} groups led")));
        }
        (0..count)
            .map(|_| {
                Ok(Led {
                    group: self.u64()?,
                    term: self.u64()?,
                    in_sync: self.nodes()?,
                })
            })
            .collect()
    }

    fn changes(&mut self) -> Result<Vec<ConfigChange>, MessageError> {
        let count = usize::from(self.u8()?);
        if count > CONFIGS_MAX {
            return Err(MessageError(format!("{count} config changes")));
        }
        (0..count)
            .map(|_| {
                let name = self.text()?;
                let code = self.u8()?;
                let operation = i8::try_from(code)
                    .ok()
                    .and_then(ConfigOperation::from_code)
                    .ok_or_else(|| MessageError(format!("config operation {code}")))?;
                let value = if self.flag("value")? {
                    Some(self.text()?)
                } else {
                    None
                };
                Ok(ConfigChange {
                    name,
                    operation,
                    value,
                })
            })
            .collect()
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
            (any::<u64>(), text, text, text).prop_map(
                |(node, kafka_address, resp_address, cluster_address)| ClusterMessage::Register {
                    node,
                    kafka_address,
                    resp_address,
                    cluster_address,
                }
            ),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u64>(), 0..=NODES_MAX)
            )
                .prop_map(|(request, group, target)| ClusterMessage::Reassign {
                    request,
                    group,
                    target,
                }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u64>(), 0..=NODES_MAX)
            )
                .prop_map(|(group, voters)| ClusterMessage::Reassigned { group, voters }),
            (
                any::<u64>(),
                text,
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec((text, text), 0..4)
            )
                .prop_map(
                    |(request, name, partitions, replication_factor, configs)| {
                        ClusterMessage::CreateTopic {
                            request,
                            name,
                            partitions,
                            replication_factor,
                            configs,
                        }
                    }
                ),
            (any::<u64>(), text)
                .prop_map(|(request, name)| ClusterMessage::DeleteTopic { request, name }),
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    proptest::collection::vec(any::<u64>(), 0..4)
                ),
                0..5
            )
            .prop_map(|groups| ClusterMessage::Leading {
                groups: groups
                    .into_iter()
                    .map(|(group, term, in_sync)| Led {
                        group,
                        term,
                        in_sync,
                    })
                    .collect(),
            }),
            (
                any::<u64>(),
                text,
                any::<bool>(),
                proptest::collection::vec((text, 0i8..4, proptest::option::of(text)), 0..5)
            )
                .prop_map(|(request, name, replace, changes)| {
                    ClusterMessage::AlterConfigs {
                        request,
                        name,
                        replace,
                        changes: changes
                            .into_iter()
                            .map(|(name, code, value)| ConfigChange {
                                name,
                                operation: ConfigOperation::from_code(code).expect("0 to 3"),
                                value,
                            })
                            .collect(),
                    }
                }),
            (any::<u64>(), text, any::<u32>()).prop_map(|(request, name, partitions)| {
                ClusterMessage::CreatePartitions {
                    request,
                    name,
                    partitions,
                }
            }),
            (any::<u64>(), any::<i16>(), text).prop_map(|(request, code, message)| {
                ClusterMessage::Refused {
                    request,
                    code,
                    message,
                }
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(request, offset)| ClusterMessage::Done { request, offset }),
            Just(ClusterMessage::AskKnown),
            any::<bool>().prop_map(|known| ClusterMessage::Known { known }),
            (any::<u64>(), any::<u64>()).prop_map(|(request, floor)| {
                ClusterMessage::AllocateProducerIds { request, floor }
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
        unknown[1] = 99;
        assert!(ClusterMessage::decode(&unknown).is_err());
    }

    #[test]
    fn a_known_flag_other_than_0_or_1_is_refused() {
        assert_eq!(
            ClusterMessage::decode(&[VERSION, 8, 1]),
            Ok(ClusterMessage::Known { known: true })
        );
        assert!(ClusterMessage::decode(&[VERSION, 8, 2]).is_err());
        assert!(ClusterMessage::decode(&[VERSION, 7, 0]).is_err());
    }
}
