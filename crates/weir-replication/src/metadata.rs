//! The cluster's metadata as a replicated log, after KRaft: nodes and
//! their addresses, topics and each partition's replicas and Raft group,
//! and producer-id blocks, as records of a log of their own (a partition
//! replicated by the metadata group, [`METADATA_GROUP`], on every node).
//! Every node applies the committed records in order to a
//! [`MetadataState`]; nothing else decides who replicates what.
//!
//! A record is a Kafka record whose value is one [`MetadataRecord`] in
//! this format (little-endian):
//!
//! ```text
//! u8 version = 1 | u8 kind | fields
//! kind 1 node:      u64 id | str kafka address | str resp address
//!                   (a node whose cluster address is not recorded)
//! kind 2 topic:     str name | u32 partitions | u32 replication factor |
//!                   u32 n | n × (u64 group | u32 r | r × u64 node)
//! kind 3 deletion:  str name
//! kind 4 producers: u64 node | u64 first id | u64 count: a block of
//!                   producer ids handed to the node (first at least
//!                   every earlier block's end; count 1 to 2^20; no id
//!                   above i64::MAX)
//! kind 5 node:      u64 id | str kafka address | str resp address |
//!                   str cluster address (not empty)
//! kind 6 reassign:  u64 group | u32 r | r × u64 node   (r = 0: cancel)
//! kind 7 reassigned: u64 group | u32 r | r × u64 node
//! kind 8 topic:     as kind 2, then u32 c | c × (str name | str value):
//!                   its Kafka configs (1 to 64, each string at most
//!                   1024 bytes; kind 2 is a topic without any)
//! kind 9 partitions: str name | u32 n | n × (u64 group | u32 r | r × u64
//!                   node): partitions added to a topic, numbered on from
//!                   its last (Kafka's CreatePartitions)
//! kind 10 configs:  str name | u32 c | c × (str name | str value): the
//!                   topic's Kafka configs from now on (0 to 64: none,
//!                   every config at each node's default; AlterConfigs)
//! str               u16 length | UTF-8 bytes
//! ```
//!
//! Decoding checks every length against the bytes left and refuses
//! anything a writer would not produce.

use std::collections::{BTreeMap, BTreeSet};

use weir_log::batch::{encode, ProducerInfo, Record};
use weir_log::{Isolation, LogError, Partition};

/// The Raft group of the metadata log (0 is the liveness channel).
pub const METADATA_GROUP: u64 = 1;
/// The first group id given to a partition.
pub const FIRST_PARTITION_GROUP: u64 = 2;
const VERSION: u8 = 1;
/// The most replicas of one partition.
pub const MAX_REPLICATION_FACTOR: u32 = 7;
/// The most partitions of one topic.
pub const MAX_PARTITIONS: u32 = 4096;
/// The most configs a topic is created with.
pub const MAX_TOPIC_CONFIGS: usize = 64;
/// The longest config name or value.
pub const MAX_CONFIG_BYTES: usize = 1024;
/// The most producer ids one block holds.
pub const MAX_PRODUCER_ID_BLOCK: u64 = 1 << 20;
/// The greatest producer id (Kafka's are i64).
pub const MAX_PRODUCER_ID: u64 = i64::MAX as u64;

/// Whether a topic record can carry `configs`: at most
/// [`MAX_TOPIC_CONFIGS`], names of 1 to [`MAX_CONFIG_BYTES`] bytes, values
/// of at most [`MAX_CONFIG_BYTES`]. The decoder refuses any other (and a
/// record no node can decode would stop every node from reading the log),
/// so proposers check this first.
pub fn configs_fit(configs: &[(String, String)]) -> bool {
    configs.len() <= MAX_TOPIC_CONFIGS
        && configs.iter().all(|(key, value)| {
            !key.is_empty() && key.len() <= MAX_CONFIG_BYTES && value.len() <= MAX_CONFIG_BYTES
        })
}

/// One change to the cluster's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A node joined (or changed its addresses).
    Node {
        /// Its id.
        id: u64,
        /// Where Kafka clients reach it.
        kafka_address: String,
        /// Where Redis clients reach it.
        resp_address: String,
        /// Where its peers reach it (empty in records written before
        /// nodes could join a running cluster).
        cluster_address: String,
    },
    /// A topic was created, with each partition's group and replicas.
    Topic {
        /// Its name.
        name: String,
        /// Each partition: its Raft group and its replicas (the first is
        /// the preferred leader).
        partitions: Vec<PartitionAssignment>,
        /// The Kafka configs it was created with (name, value), which
        /// every node applies over its own defaults, as Kafka's topic
        /// configs override its brokers'.
        configs: Vec<(String, String)>,
    },
    /// Partitions were added to a topic, numbered on from its last.
    Partitions {
        /// The topic.
        name: String,
        /// The new partitions: their groups and replicas.
        partitions: Vec<PartitionAssignment>,
    },
    /// A topic's Kafka configs changed: these replace those it had.
    TopicConfigs {
        /// The topic.
        name: String,
        /// Its configs (name, value) from now on; none: each node's
        /// defaults.
        configs: Vec<(String, String)>,
    },
    /// A topic was deleted.
    TopicDeleted {
        /// Its name.
        name: String,
    },
    /// A block of producer ids was handed to a node, which alone hands
    /// them to its producers.
    ProducerIds {
        /// The node.
        node: u64,
        /// The first id of the block.
        first: u64,
        /// Ids in the block.
        count: u64,
    },
    /// A partition's (or the metadata group's) replicas are to become
    /// `target`, through joint consensus; an empty target cancels a
    /// reassignment not yet done.
    Reassignment {
        /// The partition's Raft group.
        group: u64,
        /// The replicas it is to have.
        target: Vec<u64>,
    },
    /// A reassignment is done: the group's voters are `replicas`.
    Reassigned {
        /// The partition's Raft group.
        group: u64,
        /// Its voters now.
        replicas: Vec<u64>,
    },
}

/// Where one partition lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// Its Raft group.
    pub group: u64,
    /// Its replicas' node ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
}

/// Why bytes are not a metadata record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The record ended inside a field.
    #[error("metadata record truncated in {0}")]
    Truncated(&'static str),
    /// A version this node does not know.
    #[error("metadata record version {0} is not known")]
    Version(u8),
    /// A kind this node does not know.
    #[error("metadata record kind {0} is not known")]
    Kind(u8),
    /// A field out of its range.
    #[error("metadata record: {0}")]
    Invalid(String),
    /// Bytes after the record.
    #[error("{0} bytes after a metadata record")]
    Trailing(usize),
}

impl MetadataRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Self::Node {
                id,
                kafka_address,
                resp_address,
                cluster_address,
            } => {
                out.push(if cluster_address.is_empty() { 1 } else { 5 });
                out.extend_from_slice(&id.to_le_bytes());
                put_str(&mut out, kafka_address);
                put_str(&mut out, resp_address);
                if !cluster_address.is_empty() {
                    put_str(&mut out, cluster_address);
                }
            }
            Self::Topic {
                name,
                partitions,
                configs,
            } => {
                out.push(if configs.is_empty() { 2 } else { 8 });
                put_str(&mut out, name);
                put_partitions(&mut out, partitions);
                if !configs.is_empty() {
                    put_u32(&mut out, configs.len());
                    for (key, value) in configs {
                        put_str(&mut out, key);
                        put_str(&mut out, value);
                    }
                }
            }
            Self::Partitions { name, partitions } => {
                out.push(9);
                put_str(&mut out, name);
                put_partitions(&mut out, partitions);
            }
            Self::TopicConfigs { name, configs } => {
                out.push(10);
                put_str(&mut out, name);
                put_u32(&mut out, configs.len());
                for (key, value) in configs {
                    put_str(&mut out, key);
                    put_str(&mut out, value);
                }
            }
            Self::TopicDeleted { name } => {
                out.push(3);
                put_str(&mut out, name);
            }
            Self::ProducerIds { node, first, count } => {
                out.push(4);
                out.extend_from_slice(&node.to_le_bytes());
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Self::Reassignment { group, target } => {
                out.push(6);
                out.extend_from_slice(&group.to_le_bytes());
                put_nodes(&mut out, target);
            }
            Self::Reassigned { group, replicas } => {
                out.push(7);
                out.extend_from_slice(&group.to_le_bytes());
                put_nodes(&mut out, replicas);
            }
        }
        out
    }

    /// Decodes a record written by [`MetadataRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        let mut reader = Reader(bytes);
        let version = reader.u8("version")?;
        if version != VERSION {
            return Err(MetadataError::Version(version));
        }
        let record = match reader.u8("kind")? {
            1 => Self::Node {
                id: reader.u64("node id")?,
                kafka_address: reader.str("kafka address")?,
                resp_address: reader.str("resp address")?,
                cluster_address: String::new(),
            },
            5 => Self::Node {
                id: reader.u64("node id")?,
                kafka_address: reader.str("kafka address")?,
                resp_address: reader.str("resp address")?,
                cluster_address: match reader.str("cluster address")? {
                    empty if empty.is_empty() => {
                        return Err(MetadataError::Invalid("an empty cluster address".into()))
                    }
                    address => address,
                },
            },
            6 => Self::Reassignment {
                group: reader.u64("group")?,
                target: reader.nodes(0)?,
            },
            7 => Self::Reassigned {
                group: reader.u64("group")?,
                replicas: reader.nodes(1)?,
            },
            2 => Self::Topic {
                name: reader.str("topic name")?,
                partitions: reader.partitions()?,
                configs: Vec::new(),
            },
            8 => Self::Topic {
                name: reader.str("topic name")?,
                partitions: reader.partitions()?,
                configs: reader.configs(1)?,
            },
            10 => Self::TopicConfigs {
                name: reader.str("topic name")?,
                configs: reader.configs(0)?,
            },
            9 => Self::Partitions {
                name: reader.str("topic name")?,
                partitions: reader.partitions()?,
            },
            3 => Self::TopicDeleted {
                name: reader.str("topic name")?,
            },
            4 => {
                let node = reader.u64("node id")?;
                let first = reader.u64("first producer id")?;
                let count = reader.u64("producer id count")?;
                producer_block_fits(first, count)?;
                Self::ProducerIds { node, first, count }
            }
            other => return Err(MetadataError::Kind(other)),
        };
        match reader.0.len() {
            0 => Ok(record),
            left => Err(MetadataError::Trailing(left)),
        }
    }
}

/// Whether `count` producer ids from `first` are a block a controller
/// hands out: 1 to [`MAX_PRODUCER_ID_BLOCK`] ids, none above
/// [`MAX_PRODUCER_ID`].
fn producer_block_fits(first: u64, count: u64) -> Result<(), MetadataError> {
    let fits = (1..=MAX_PRODUCER_ID_BLOCK).contains(&count)
        && first
            .checked_add(count)
            .is_some_and(|end| end - 1 <= MAX_PRODUCER_ID);
    if fits {
        Ok(())
    } else {
        Err(MetadataError::Invalid(format!(
            "a block of {count} producer ids from {first}"
        )))
    }
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).expect("counts of a metadata record fit in u32");
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[PartitionAssignment]) {
    put_u32(out, partitions.len());
    for partition in partitions {
        out.extend_from_slice(&partition.group.to_le_bytes());
        put_nodes(out, &partition.replicas);
    }
}

fn put_nodes(out: &mut Vec<u8>, nodes: &[u64]) {
    put_u32(out, nodes.len());
    for node in nodes {
        out.extend_from_slice(&node.to_le_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let length = u16::try_from(text.len()).expect("names and addresses below 64 KiB");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], MetadataError> {
        if self.0.len() < count {
            return Err(MetadataError::Truncated(field));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, MetadataError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, MetadataError> {
        Ok(u32::from_le_bytes(
            self.take(4, field)?.try_into().expect("4"),
        ))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, MetadataError> {
        Ok(u64::from_le_bytes(
            self.take(8, field)?.try_into().expect("8"),
        ))
    }

    fn str(&mut self, field: &'static str) -> Result<String, MetadataError> {
        let length = u16::from_le_bytes(self.take(2, field)?.try_into().expect("2"));
        let bytes = self.take(usize::from(length), field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| MetadataError::Invalid(format!("{field} is not UTF-8")))
    }

    /// A list of at least `least` and at most [`MAX_REPLICATION_FACTOR`]
    /// node ids.
    fn nodes(&mut self, least: u32) -> Result<Vec<u64>, MetadataError> {
        let count = self.u32("node count")?;
        if count < least || count > MAX_REPLICATION_FACTOR {
            return Err(MetadataError::Invalid(format!("{count} replicas")));
        }
        (0..count).map(|_| self.u64("replica")).collect()
    }

    /// A topic's configs: `least` to [`MAX_TOPIC_CONFIGS`] pairs of
    /// strings of at most [`MAX_CONFIG_BYTES`].
    fn configs(&mut self, least: usize) -> Result<Vec<(String, String)>, MetadataError> {
        let count = self.u32("config count")? as usize;
        if count < least || count > MAX_TOPIC_CONFIGS {
            return Err(MetadataError::Invalid(format!("{count} configs")));
        }
        let configs = (0..count)
            .map(|_| Ok((self.str("config name")?, self.str("config value")?)))
            .collect::<Result<Vec<_>, MetadataError>>()?;
        if !configs_fit(&configs) {
            return Err(MetadataError::Invalid(
                "a config name or value out of range".into(),
            ));
        }
        Ok(configs)
    }

    fn partitions(&mut self) -> Result<Vec<PartitionAssignment>, MetadataError> {
        let count = self.u32("partition count")?;
        if count == 0 || count > MAX_PARTITIONS {
            return Err(MetadataError::Invalid(format!("{count} partitions")));
        }
        let mut partitions = Vec::new();
        for _ in 0..count {
            let group = self.u64("group")?;
            let nodes = self.nodes(1)?;
            partitions.push(PartitionAssignment {
                group,
                replicas: nodes,
            });
        }
        Ok(partitions)
    }
}

/// Addresses of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where Kafka clients reach it.
    pub kafka_address: String,
    /// Where Redis clients reach it.
    pub resp_address: String,
    /// Where its peers reach it (empty if not recorded).
    pub cluster_address: String,
}

/// The cluster's metadata: what the committed records say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// The topics, by name: their partitions in order.
    pub topics: BTreeMap<String, Vec<PartitionAssignment>>,
    /// The Kafka configs of the topics created with any, by name.
    pub topic_configs: BTreeMap<String, Vec<(String, String)>>,
    /// The next group id to give a partition.
    pub next_group: u64,
    /// The next producer id to hand out: every block handed out so far
    /// ends at or below it.
    pub next_producer_id: u64,
    /// The last block of producer ids handed to each node (first, count).
    pub producer_blocks: BTreeMap<u64, (u64, u64)>,
    /// Partitions created so far (spreads the preferred leaders).
    pub partitions_created: u64,
    /// Reassignments under way: group → the replicas it is to have.
    pub reassignments: BTreeMap<u64, Vec<u64>>,
    /// Each partition's replicas when its topic was created (those that
    /// bootstrapped its Raft log), by group.
    pub original_replicas: BTreeMap<u64, Vec<u64>>,
    /// The metadata group's voters, once reassigned (before that, the
    /// cluster's initial peers).
    pub metadata_voters: Option<Vec<u64>>,
}

impl MetadataState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self {
            next_group: FIRST_PARTITION_GROUP,
            ..Self::default()
        }
    }

    /// Applies a committed record. A record that contradicts the state (a
    /// topic that exists, groups out of order) is a bug of whoever
    /// proposed it: refused, and the state is unchanged.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::Node {
                id,
                kafka_address,
                resp_address,
                cluster_address,
            } => {
                self.nodes.insert(
                    *id,
                    NodeInfo {
                        kafka_address: kafka_address.clone(),
                        resp_address: resp_address.clone(),
                        cluster_address: cluster_address.clone(),
                    },
                );
            }
            MetadataRecord::Reassignment { group, target } => {
                self.apply_reassignment(*group, target)?;
            }
            MetadataRecord::Reassigned { group, replicas } => {
                self.apply_reassigned(*group, replicas)?;
            }
            MetadataRecord::Topic {
                name,
                partitions,
                configs,
            } => {
                self.apply_topic(name, partitions)?;
                if !configs.is_empty() {
                    self.topic_configs.insert(name.clone(), configs.clone());
                }
            }
            MetadataRecord::Partitions { name, partitions } => {
                self.apply_partitions(name, partitions)?;
            }
            MetadataRecord::TopicConfigs { name, configs } => {
                if !self.topics.contains_key(name) {
                    return Err(MetadataError::Invalid(format!(
                        "no topic {name} to configure"
                    )));
                }
                if !configs_fit(configs) {
                    return Err(MetadataError::Invalid(format!(
                        "configs of topic {name} out of range"
                    )));
                }
                if configs.is_empty() {
                    self.topic_configs.remove(name);
                } else {
                    self.topic_configs.insert(name.clone(), configs.clone());
                }
            }
            MetadataRecord::TopicDeleted { name } => {
                let Some(partitions) = self.topics.remove(name) else {
                    return Err(MetadataError::Invalid(format!("no topic {name} to delete")));
                };
                self.topic_configs.remove(name);
                for partition in partitions {
                    self.reassignments.remove(&partition.group);
                    self.original_replicas.remove(&partition.group);
                }
            }
            MetadataRecord::ProducerIds { node, first, count } => {
                producer_block_fits(*first, *count)?;
                if *first < self.next_producer_id {
                    return Err(MetadataError::Invalid(format!(
                        "producer ids from {first}, below {} already handed out",
                        self.next_producer_id
                    )));
                }
                self.next_producer_id = first + count;
                self.producer_blocks.insert(*node, (*first, *count));
            }
        }
        Ok(())
    }

    fn apply_topic(
        &mut self,
        name: &str,
        partitions: &[PartitionAssignment],
    ) -> Result<(), MetadataError> {
        if self.topics.contains_key(name) {
            return Err(MetadataError::Invalid(format!("topic {name} exists")));
        }
        self.check_new_partitions(name, 0, partitions)?;
        self.topics.insert(name.to_string(), Vec::new());
        self.add_partitions(name, partitions);
        Ok(())
    }

    fn apply_partitions(
        &mut self,
        name: &str,
        partitions: &[PartitionAssignment],
    ) -> Result<(), MetadataError> {
        let Some(existing) = self.topics.get(name) else {
            return Err(MetadataError::Invalid(format!(
                "no topic {name} to add partitions to"
            )));
        };
        let first = existing.len();
        if first + partitions.len() > MAX_PARTITIONS as usize {
            return Err(MetadataError::Invalid(format!(
                "{name} would have more than {MAX_PARTITIONS} partitions"
            )));
        }
        self.check_new_partitions(name, first, partitions)?;
        self.add_partitions(name, partitions);
        Ok(())
    }

    /// Checks partitions that are to be numbered from `first` in topic
    /// `name`: groups given in order from the next free one, replicas
    /// known and not repeated.
    fn check_new_partitions(
        &self,
        name: &str,
        first: usize,
        partitions: &[PartitionAssignment],
    ) -> Result<(), MetadataError> {
        for (offset, partition) in partitions.iter().enumerate() {
            let index = first + offset;
            if partition.group != self.next_group + offset as u64 {
                return Err(MetadataError::Invalid(format!(
                    "partition {index} of {name} has group {}, expected {}",
                    partition.group,
                    self.next_group + offset as u64
                )));
            }
            let mut unique = partition.replicas.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() != partition.replicas.len()
                || unique.iter().any(|node| !self.nodes.contains_key(node))
            {
                return Err(MetadataError::Invalid(format!(
                    "partition {index} of {name}: replicas {:?} repeat or name unknown nodes",
                    partition.replicas
                )));
            }
        }
        Ok(())
    }

    /// Appends checked partitions to topic `name`'s list.
    fn add_partitions(&mut self, name: &str, partitions: &[PartitionAssignment]) {
        self.next_group += partitions.len() as u64;
        self.partitions_created += partitions.len() as u64;
        for partition in partitions {
            self.original_replicas
                .insert(partition.group, partition.replicas.clone());
        }
        self.topics
            .get_mut(name)
            .expect("the topic was checked")
            .extend_from_slice(partitions);
    }

    /// The current replicas of group `group` (a partition's, or the
    /// metadata group's when reassigned), if it is known.
    pub fn replicas_of(&self, group: u64) -> Option<Vec<u64>> {
        if group == METADATA_GROUP {
            return self.metadata_voters.clone();
        }
        self.topics
            .values()
            .flatten()
            .find(|partition| partition.group == group)
            .map(|partition| partition.replicas.clone())
    }

    fn apply_reassignment(&mut self, group: u64, target: &[u64]) -> Result<(), MetadataError> {
        if target.is_empty() {
            return match self.reassignments.remove(&group) {
                Some(_) => Ok(()),
                None => Err(MetadataError::Invalid(format!(
                    "no reassignment of group {group} to cancel"
                ))),
            };
        }
        let known = group == METADATA_GROUP || self.replicas_of(group).is_some();
        let mut unique = target.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if !known
            || unique.len() != target.len()
            || unique.iter().any(|node| !self.nodes.contains_key(node))
            || self.reassignments.contains_key(&group)
        {
            return Err(MetadataError::Invalid(format!(
                "group {group} cannot be reassigned to {target:?}"
            )));
        }
        self.reassignments.insert(group, target.to_vec());
        Ok(())
    }

    fn apply_reassigned(&mut self, group: u64, replicas: &[u64]) -> Result<(), MetadataError> {
        if self.reassignments.get(&group).map(Vec::as_slice) != Some(replicas) {
            return Err(MetadataError::Invalid(format!(
                "group {group} was not being reassigned to {replicas:?}"
            )));
        }
        self.reassignments.remove(&group);
        if group == METADATA_GROUP {
            self.metadata_voters = Some(replicas.to_vec());
            return Ok(());
        }
        let partition = self
            .topics
            .values_mut()
            .flatten()
            .find(|partition| partition.group == group)
            .expect("a reassignment's group is known while it lasts");
        partition.replicas = replicas.to_vec();
        Ok(())
    }

    /// The block of producer ids `node` holds that starts at `floor` or
    /// above (none handed to anyone before), if the metadata has one.
    pub fn producer_block(&self, node: u64, floor: u64) -> Option<(u64, u64)> {
        let block = *self.producer_blocks.get(&node)?;
        (block.0 >= floor).then_some(block)
    }

    /// The record that hands `node` the next `count` producer ids, from
    /// `floor` at least (the end of every block the node recorded as its
    /// own); an error once the ids would pass [`MAX_PRODUCER_ID`].
    pub fn plan_producer_ids(
        &self,
        node: u64,
        floor: u64,
        count: u64,
    ) -> Result<MetadataRecord, MetadataError> {
        let first = self.next_producer_id.max(floor);
        producer_block_fits(first, count)?;
        Ok(MetadataRecord::ProducerIds { node, first, count })
    }

    /// The record that creates topic `name` with `partitions` partitions
    /// and `replication_factor` replicas each (at most the nodes known),
    /// spreading replicas and preferred leaders across the nodes
    /// round-robin from where the previous topic stopped, and placing
    /// them on the nodes not in `down` first.
    pub fn plan_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        down: &BTreeSet<u64>,
    ) -> Result<MetadataRecord, MetadataError> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(MetadataError::Invalid(format!("{partitions} partitions")));
        }
        let factor = usize::try_from(replication_factor).expect("u32 fits usize");
        if factor == 0 || replication_factor > MAX_REPLICATION_FACTOR {
            return Err(MetadataError::Invalid(format!(
                "replication factor {replication_factor}"
            )));
        }
        Ok(MetadataRecord::Topic {
            name: name.to_string(),
            partitions: self.place(u64::from(partitions), factor, down)?,
            configs: Vec::new(),
        })
    }

    /// The record that adds partitions to topic `name` so that it has
    /// `count` (Kafka's CreatePartitions), each with as many replicas as
    /// the topic's first partition, placed as [`Self::plan_topic`] places
    /// them; an error for an unknown topic, a count not above the topic's
    /// or above [`MAX_PARTITIONS`], or too few nodes for the replicas.
    pub fn plan_partitions(
        &self,
        name: &str,
        count: u32,
        down: &BTreeSet<u64>,
    ) -> Result<MetadataRecord, MetadataError> {
        let existing = self
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::Invalid(format!("no topic {name}")))?;
        let current = existing.len() as u64;
        if u64::from(count) <= current || count > MAX_PARTITIONS {
            return Err(MetadataError::Invalid(format!(
                "topic {name} has {current} partitions: it cannot grow to {count}"
            )));
        }
        let factor = existing.first().map_or(1, |first| first.replicas.len());
        Ok(MetadataRecord::Partitions {
            name: name.to_string(),
            partitions: self.place(u64::from(count) - current, factor, down)?,
        })
    }

    /// `count` new partitions with `factor` replicas each, from the next
    /// free group, spread round-robin from where the last partition
    /// created stopped: over the nodes not in `down` (as Kafka places
    /// replicas on unfenced brokers only), then, when those are fewer than
    /// `factor`, over the others. An error when the nodes known are fewer
    /// than `factor`, or when those up are too few to make a majority of
    /// every partition's replicas (its group could elect no leader until
    /// the others came back).
    fn place(
        &self,
        count: u64,
        factor: usize,
        down: &BTreeSet<u64>,
    ) -> Result<Vec<PartitionAssignment>, MetadataError> {
        let (up, away): (Vec<u64>, Vec<u64>) =
            self.nodes.keys().partition(|node| !down.contains(node));
        if factor > up.len() + away.len() || up.len() < factor / 2 + 1 {
            return Err(MetadataError::Invalid(format!(
                "replication factor {factor} with {} nodes, {} of them up",
                up.len() + away.len(),
                up.len()
            )));
        }
        let start = self.partitions_created;
        let rotated = |nodes: &[u64], by: u64| -> Vec<u64> {
            let len = nodes.len() as u64;
            (0..len)
                .map(|i| nodes[usize::try_from((by + i) % len).expect("below the count")])
                .collect()
        };
        let placed = (0..count)
            .map(|partition| {
                let mut replicas = rotated(&up, start + partition);
                if replicas.len() < factor {
                    replicas.extend(rotated(&away, start + partition));
                }
                replicas.truncate(factor);
                assert!(replicas.iter().filter(|r| !down.contains(r)).count() > factor / 2);
                PartitionAssignment {
                    group: self.next_group + partition,
                    replicas,
                }
            })
            .collect();
        Ok(placed)
    }

    /// The groups of which node `node` is a replica: (group, replicas).
    pub fn groups_of(&self, node: u64) -> Vec<(u64, Vec<u64>)> {
        self.topics
            .values()
            .flatten()
            .filter(|partition| partition.replicas.contains(&node))
            .map(|partition| (partition.group, partition.replicas.clone()))
            .collect()
    }
}

/// A producer batch holding one metadata record, to propose to the
/// metadata group.
pub fn record_batch(record: &MetadataRecord, timestamp_ms: i64) -> Vec<u8> {
    let value = record.encode();
    let mut batch = Vec::new();
    encode(
        &[Record::value(timestamp_ms, &value)],
        ProducerInfo::NONE,
        &mut batch,
    )
    .expect("a metadata record is far below the batch limits");
    batch
}

/// Why the metadata log could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A committed record does not decode: written by a newer version, or
    /// corrupt. Nothing after it can be applied.
    #[error("metadata record at offset {offset}: {error}")]
    Record {
        /// Its offset.
        offset: u64,
        /// Why it does not decode.
        error: MetadataError,
    },
}

/// The state built from a metadata log's committed records, and how far
/// it has read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataLog {
    state: MetadataState,
    next_offset: u64,
    refused: u64,
}

impl Default for MetadataLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataLog {
    /// Nothing applied yet.
    pub fn new() -> Self {
        Self {
            state: MetadataState::new(),
            next_offset: 0,
            refused: 0,
        }
    }

    /// The state so far.
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    /// The offset of the next record to apply: every record below it is
    /// applied.
    pub fn applied_offset(&self) -> u64 {
        self.next_offset
    }

    /// Committed records that contradicted the state (refused, the same way
    /// on every node).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Applies the records committed since the last call (those below the
    /// partition's high watermark); returns how many were read.
    pub fn catch_up(&mut self, partition: &Partition) -> Result<u64, MetadataLogError> {
        let mut read = 0;
        while self.next_offset < partition.high_watermark() {
            let result = partition.read(self.next_offset, 1 << 20)?;
            let before = self.next_offset;
            for record in result.records() {
                let record = record.map_err(LogError::from)?;
                self.apply_value(record.offset, record.value.unwrap_or_default())?;
                self.next_offset = record.offset + 1;
                read += 1;
            }
            if self.next_offset == before {
                break;
            }
        }
        Ok(read)
    }

    /// Whether the records of `partition` past those applied (up to its
    /// log end, committed or not) register node `node`: with
    /// [`MetadataState::nodes`], what this node's log says of a node that
    /// asks whether the cluster has known it.
    pub fn tail_registers(
        &self,
        partition: &Partition,
        node: u64,
    ) -> Result<bool, MetadataLogError> {
        let mut offset = self.next_offset;
        while offset < partition.log_end_offset() {
            let result = partition.read_with(offset, 1 << 20, Isolation::Uncommitted)?;
            let before = offset;
            for record in result.records() {
                let record = record.map_err(LogError::from)?;
                offset = record.offset + 1;
                let value = record.value.unwrap_or_default();
                if matches!(MetadataRecord::decode(value), Ok(MetadataRecord::Node { id, .. }) if id == node)
                {
                    return Ok(true);
                }
            }
            if offset == before {
                break;
            }
        }
        Ok(false)
    }

    fn apply_value(&mut self, offset: u64, value: &[u8]) -> Result<(), MetadataLogError> {
        let record = MetadataRecord::decode(value)
            .map_err(|error| MetadataLogError::Record { offset, error })?;
        if let Err(error) = self.state.apply(&record) {
            // A proposal made from a state that changed before it was
            // committed: every node refuses it alike.
            tracing::debug!(offset, %error, "metadata record refused");
            self.refused += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn three_nodes() -> MetadataState {
        let mut state = MetadataState::new();
        for id in 1..=3 {
            state
                .apply(&MetadataRecord::Node {
                    id,
                    kafka_address: format!("127.0.0.1:909{id}"),
                    resp_address: format!("127.0.0.1:637{id}"),
                    cluster_address: format!("127.0.0.1:700{id}"),
                })
                .expect("a node");
        }
        state
    }

    #[test]
    fn topics_spread_replicas_and_preferred_leaders() {
        let mut state = three_nodes();
        let orders = state
            .plan_topic("orders", 6, 3, &BTreeSet::new())
            .expect("a plan");
        state.apply(&orders).expect("applied");
        let leaders: Vec<u64> = state.topics["orders"]
            .iter()
            .map(|p| p.replicas[0])
            .collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        assert_eq!(state.topics["orders"][1].replicas, [2, 3, 1]);
        assert_eq!(state.topics["orders"][5].group, FIRST_PARTITION_GROUP + 5);
        // The next topic starts where this one stopped.
        let events = state
            .plan_topic("events", 2, 2, &BTreeSet::new())
            .expect("a plan");
        state.apply(&events).expect("applied");
        assert_eq!(state.topics["events"][0].replicas, [1, 2]);
        assert_eq!(state.topics["events"][0].group, FIRST_PARTITION_GROUP + 6);
        assert_eq!(state.groups_of(3).len(), 6 + 1);
        // A plan made before another topic was applied is refused.
        assert!(state.apply(&orders).is_err());
        assert!(state.plan_topic("big", 1, 4, &BTreeSet::new()).is_err());
    }

    fn nodes(count: u64) -> MetadataState {
        let mut state = MetadataState::new();
        for id in 1..=count {
            let node = MetadataRecord::Node {
                id,
                kafka_address: format!("127.0.0.1:{}", 9090 + id),
                resp_address: format!("127.0.0.1:{}", 6370 + id),
                cluster_address: format!("127.0.0.1:{}", 7000 + id),
            };
            state.apply(&node).expect("a node");
        }
        state
    }

    fn replicas_of(record: &MetadataRecord) -> Vec<Vec<u64>> {
        match record {
            MetadataRecord::Topic { partitions, .. }
            | MetadataRecord::Partitions { partitions, .. } => partitions
                .iter()
                .map(|partition| partition.replicas.clone())
                .collect(),
            other => panic!("not a placement: {other:?}"),
        }
    }

    /// Replicas go to the nodes up (as Kafka places them on unfenced
    /// brokers), then, when those are too few, to the others after them;
    /// a placement that would leave a partition without a majority up is
    /// refused, and so is one asking more replicas than nodes.
    #[test]
    fn replicas_are_placed_on_nodes_up_first() {
        let down = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
        let mut state = nodes(3);
        let two = state.plan_topic("two", 3, 2, &down(&[3])).expect("a plan");
        assert_eq!(replicas_of(&two), [[1, 2], [2, 1], [1, 2]]);
        state.apply(&two).expect("applied");
        let grown = state
            .plan_partitions("two", 5, &down(&[1]))
            .expect("a plan");
        assert_eq!(replicas_of(&grown), [[3, 2], [2, 3]]);
        let three = state
            .plan_topic("three", 2, 3, &down(&[2]))
            .expect("a plan");
        assert_eq!(replicas_of(&three), [[3, 1, 2], [1, 3, 2]]);
        for (factor, away) in [(2, &[1, 2][..]), (3, &[2, 3]), (1, &[1, 2, 3])] {
            let refused = state.plan_topic("t", 1, factor, &down(away));
            assert!(refused.is_err(), "factor {factor}, down {away:?}");
        }
        assert!(state.plan_partitions("two", 6, &down(&[2, 3])).is_err());
        assert!(state.plan_topic("t", 1, 4, &down(&[])).is_err());
        let mut five = nodes(5);
        let spread = five.plan_topic("t", 5, 3, &down(&[2, 4])).expect("a plan");
        for replicas in replicas_of(&spread) {
            assert_eq!(replicas.len(), 3, "{replicas:?}");
            assert!(!down(&[2, 4]).contains(&replicas[0]), "{replicas:?}");
            assert!(
                replicas.iter().all(|r| [1, 3, 5].contains(r)),
                "{replicas:?}"
            );
        }
        five.apply(&spread).expect("applied");
        let unknown_down = five.plan_topic("u", 1, 3, &down(&[9])).expect("a plan");
        assert_eq!(replicas_of(&unknown_down)[0].len(), 3);
    }

    /// CreatePartitions: the new partitions are numbered on, take the next
    /// groups, keep the topic's replication factor and go on spreading
    /// leaders; a topic never shrinks, and a plan made stale by another
    /// record is refused.
    #[test]
    fn partitions_added_to_a_topic_take_the_next_groups() {
        let mut state = three_nodes();
        let orders = state
            .plan_topic("orders", 2, 2, &BTreeSet::new())
            .expect("a plan");
        state.apply(&orders).expect("applied");
        let grown = state
            .plan_partitions("orders", 5, &BTreeSet::new())
            .expect("a plan");
        let events = state
            .plan_topic("events", 1, 3, &BTreeSet::new())
            .expect("a plan");
        state.apply(&grown).expect("applied");
        let partitions = &state.topics["orders"];
        assert_eq!(partitions.len(), 5);
        let groups: Vec<u64> = partitions.iter().map(|p| p.group).collect();
        assert_eq!(
            groups,
            (0..5)
                .map(|g| FIRST_PARTITION_GROUP + g)
                .collect::<Vec<_>>()
        );
        assert!(partitions.iter().all(|p| p.replicas.len() == 2));
        let leaders: Vec<u64> = partitions.iter().map(|p| p.replicas[0]).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2]);
        assert_eq!(
            state.original_replicas[&(FIRST_PARTITION_GROUP + 4)],
            [2, 3]
        );
        // A plan made before the addition took groups is refused.
        let before = state.clone();
        assert!(state.apply(&events).is_err());
        assert!(state.apply(&grown).is_err(), "applied twice");
        assert_eq!(state, before);
        for refused in [5, 3, 0, MAX_PARTITIONS + 1] {
            assert!(
                state
                    .plan_partitions("orders", refused, &BTreeSet::new())
                    .is_err(),
                "{refused}"
            );
        }
        assert!(state
            .plan_partitions("absent", 3, &BTreeSet::new())
            .is_err());
        let unknown = MetadataRecord::Partitions {
            name: "absent".into(),
            partitions: vec![PartitionAssignment {
                group: state.next_group,
                replicas: vec![1],
            }],
        };
        assert!(state.apply(&unknown).is_err());
        // Deleting the topic forgets its added partitions too.
        state
            .apply(&MetadataRecord::TopicDeleted {
                name: "orders".into(),
            })
            .expect("deleted");
        assert!(state.original_replicas.is_empty());
    }

    #[test]
    fn producer_id_blocks_never_overlap_and_start_at_the_floor() {
        let mut state = three_nodes();
        let mut handed = Vec::new();
        for (node, floor) in [(1, 0), (2, 0), (1, 0), (3, 50_000), (2, 10)] {
            let plan = state.plan_producer_ids(node, floor, 1000).expect("a plan");
            state.apply(&plan).expect("applied");
            let (first, count) = state.producer_block(node, floor).expect("a block");
            assert!(first >= floor);
            assert!(handed.iter().all(|(a, n)| first >= a + n), "{handed:?}");
            handed.push((first, count));
        }
        assert_eq!(state.producer_blocks[&1], (2000, 1000));
        assert_eq!(state.producer_blocks[&3], (50_000, 1000));
        assert_eq!(state.next_producer_id, 52_000);
        // A node's block below its floor is not one it may take.
        assert_eq!(state.producer_block(1, 2001), None);
        // A block below what was handed out is refused, so is the end of
        // the id space.
        let before = state.clone();
        let again = MetadataRecord::ProducerIds {
            node: 2,
            first: 51_500,
            count: 1000,
        };
        assert!(state.apply(&again).is_err());
        assert!(state.plan_producer_ids(2, MAX_PRODUCER_ID, 2).is_err());
        assert!(state
            .plan_producer_ids(2, 0, MAX_PRODUCER_ID_BLOCK + 1)
            .is_err());
        assert_eq!(state, before);
    }

    #[test]
    fn records_that_contradict_the_state_change_nothing() {
        let mut state = three_nodes();
        let before = state.clone();
        let unknown_node = MetadataRecord::Topic {
            name: "t".into(),
            partitions: vec![PartitionAssignment {
                group: FIRST_PARTITION_GROUP,
                replicas: vec![1, 9],
            }],
            configs: Vec::new(),
        };
        assert!(state.apply(&unknown_node).is_err());
        assert!(state
            .apply(&MetadataRecord::TopicDeleted { name: "t".into() })
            .is_err());
        assert!(state
            .apply(&MetadataRecord::ProducerIds {
                node: 1,
                first: 5,
                count: 0
            })
            .is_err());
        let configs = vec![("retention.ms".into(), "1".into())];
        assert!(state
            .apply(&MetadataRecord::TopicConfigs {
                name: "t".into(),
                configs: configs.clone(),
            })
            .is_err());
        assert_eq!(state, before);
        let topic = state
            .plan_topic("t", 1, 3, &BTreeSet::new())
            .expect("a plan");
        state.apply(&topic).expect("applied");
        let configured = MetadataRecord::TopicConfigs {
            name: "t".into(),
            configs: configs.clone(),
        };
        state.apply(&configured).expect("applied");
        assert_eq!(state.topic_configs.get("t"), Some(&configs));
        let reset = MetadataRecord::TopicConfigs {
            name: "t".into(),
            configs: Vec::new(),
        };
        state.apply(&reset).expect("applied");
        assert!(!state.topic_configs.contains_key("t"));
    }

    /// A node's registration only written, not yet committed, already
    /// counts for a node that asks whether it was known: it may be
    /// committed on a majority this node is not yet told of.
    #[test]
    fn the_uncommitted_tail_tells_who_registered() {
        use std::sync::Arc;
        use weir_io::{ManualClock, SimDisk};
        use weir_log::{HighWatermarkPolicy, LogConfig};
        let config = LogConfig {
            high_watermark: HighWatermarkPolicy::SetByOwner,
            ..LogConfig::default()
        };
        let disk = SimDisk::new(3);
        let dir = Arc::new(disk.root());
        let (partition, _) =
            Partition::open(dir, Arc::new(ManualClock::new(0)), config).expect("a partition");
        let node = |id| MetadataRecord::Node {
            id,
            kafka_address: "k".into(),
            resp_address: "r".into(),
            cluster_address: "c".into(),
        };
        let mut log = MetadataLog::new();
        for id in [1, 2] {
            partition
                .write_batch(&record_batch(&node(id), 0))
                .expect("a write");
        }
        partition.set_high_watermark(1);
        assert_eq!(log.catch_up(&partition).expect("applied"), 1);
        assert!(log.state().nodes.contains_key(&1));
        // Node 2 is written past the high watermark: not applied, but known.
        assert!(!log.state().nodes.contains_key(&2));
        assert!(log.tail_registers(&partition, 2).expect("a read"));
        assert!(!log.tail_registers(&partition, 3).expect("a read"));
        // Node 1 is applied, no longer in the tail (the state says it).
        assert!(!log.tail_registers(&partition, 1).expect("a read"));
    }

    fn record_strategy() -> impl Strategy<Value = MetadataRecord> {
        let name = "[a-z0-9._-]{1,20}";
        prop_oneof![
            (any::<u64>(), name, name, "|[a-z0-9.:]{1,20}").prop_map(
                |(id, kafka_address, resp_address, cluster_address)| MetadataRecord::Node {
                    id,
                    kafka_address,
                    resp_address,
                    cluster_address,
                }
            ),
            (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..4))
                .prop_map(|(group, target)| MetadataRecord::Reassignment { group, target }),
            (any::<u64>(), proptest::collection::vec(any::<u64>(), 1..4))
                .prop_map(|(group, replicas)| MetadataRecord::Reassigned { group, replicas }),
            (
                name,
                proptest::collection::vec(
                    (any::<u64>(), proptest::collection::vec(any::<u64>(), 1..4)),
                    1..5
                ),
                proptest::collection::vec((name, "\\PC{0,12}"), 0..4)
            )
                .prop_map(|(name, partitions, configs)| MetadataRecord::Topic {
                    name,
                    partitions: partitions
                        .into_iter()
                        .map(|(group, replicas)| PartitionAssignment { group, replicas })
                        .collect(),
                    configs,
                }),
            name.prop_map(|name| MetadataRecord::TopicDeleted { name }),
            (name, proptest::collection::vec((name, "\\PC{0,12}"), 0..4))
                .prop_map(|(name, configs)| MetadataRecord::TopicConfigs { name, configs }),
            (
                name,
                proptest::collection::vec(
                    (any::<u64>(), proptest::collection::vec(any::<u64>(), 1..4)),
                    1..5
                )
            )
                .prop_map(|(name, partitions)| MetadataRecord::Partitions {
                    name,
                    partitions: partitions
                        .into_iter()
                        .map(|(group, replicas)| PartitionAssignment { group, replicas })
                        .collect(),
                }),
            (any::<u64>(), 0..MAX_PRODUCER_ID, 1..=MAX_PRODUCER_ID_BLOCK)
                .prop_filter("ids fit in i64", |(_, first, count)| {
                    first + count - 1 <= MAX_PRODUCER_ID
                })
                .prop_map(|(node, first, count)| MetadataRecord::ProducerIds {
                    node,
                    first,
                    count
                }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record_strategy()) {
            let bytes = record.encode();
            prop_assert_eq!(MetadataRecord::decode(&bytes), Ok(record));
            for cut in 0..bytes.len() {
                prop_assert!(MetadataRecord::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MetadataRecord::decode(&bytes);
        }
    }
}
