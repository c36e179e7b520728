//! The broker: topics of partition logs in one data directory, routing, and
//! consumer-group offsets.
//!
//! Layout of the data directory:
//!
//! ```text
//! topics/<topic>/topic.meta        partition count and log settings
//! topics/<topic>/<partition>/      one partition log per directory
//! topics/~creating-<topic>/        a creation in progress (removed on open)
//! topics/~deleting-<topic>/        a deletion in progress (finished on open)
//! offsets/                         the consumer-offsets log
//! ```
//!
//! A topic appears atomically: it is built under a temporary name and
//! renamed into place. `~` cannot occur in topic names, so temporary names
//! never clash with topics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use weir_io::sync::{lock, read, write, Mutex, RwLock, RwLockReadGuard};
use weir_io::{read_whole_file_agreed, write_file_atomically, Clock, EntryKind, Storage};

use crate::batch::{crc32c, Compression, ProducerInfo, Record};
use crate::config::{FlushPolicy, HighWatermarkPolicy, LogConfig, TopicSettings};
use crate::error::LogError;
use crate::error::FORMAT_1_DESCRIPTION;
use crate::le::{u32_at, u64_at};
use crate::offsets::{CommittedOffset, OffsetStore, OffsetsError, OffsetsRecovery};
use crate::partition::{AppendInfo, Partition, ReadResult, RetentionReport};
use crate::recovery::RecoveryReport;

/// The longest topic name, as Kafka allows.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The most partitions a topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 4096;
/// The longest consumer group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// The longest metadata attached to a committed offset, as Kafka's
/// `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

const TOPICS_DIRECTORY: &str = "topics";
const OFFSETS_DIRECTORY: &str = "offsets";
const TOPIC_METADATA_FILE: &str = "topic.meta";
/// A second copy of `topic.meta`, in a file of its own: a copy that rots
/// (or is lost) is written again from the other, where one file alone
/// refused the broker's start.
const TOPIC_METADATA_COPY: &str = "topic.meta.copy";
const CREATING_PREFIX: &str = "~creating-";
const DELETING_PREFIX: &str = "~deleting-";
const METADATA_MAGIC: &[u8; 8] = b"WEIRTOPC";
const METADATA_VERSION: u16 = 3;

/// An error of a broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic name breaks the naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The partition count is outside `1..=PARTITIONS_PER_TOPIC_MAX`.
    #[error("invalid partition count {count}: must be 1..={max}")]
    InvalidPartitionCount {
        /// The count given.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The topic's log settings are invalid.
    #[error("invalid settings for topic {topic}: {source}")]
    InvalidTopicConfig {
        /// The topic.
        topic: String,
        /// What is wrong.
        #[source]
        source: LogError,
    },
    /// A topic with this name exists.
    #[error("topic {name} already exists")]
    TopicExists {
        /// The name.
        name: String,
    },
    /// No topic has this name.
    #[error("unknown topic {name}")]
    UnknownTopic {
        /// The name.
        name: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// The consumer group id is empty or too long.
    #[error("invalid group id {group:?}: {reason}")]
    InvalidGroupId {
        /// The id given.
        group: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Offset metadata is longer than `OFFSET_METADATA_BYTES_MAX`.
    #[error("offset metadata of {bytes} bytes exceeds the limit of {max}")]
    MetadataTooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A partition log failed.
    #[error("partition {topic}/{partition}: {source}")]
    Log {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The consumer-offsets log failed or holds undecodable records.
    #[error("consumer offsets: {reason}")]
    Offsets {
        /// What failed.
        reason: String,
        /// The log's error, if that is what failed.
        #[source]
        source: Option<LogError>,
    },
    /// A topic cannot grow to the partition count asked for: it has as
    /// many or more already, or the count is above the limit.
    #[error("topic {topic} has {current} partitions: it cannot grow to {count} (at most {max})")]
    PartitionsNotAdded {
        /// The topic.
        topic: String,
        /// How many partitions it has.
        current: u32,
        /// The count asked for.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A topic's metadata file is unreadable.
    #[error("corrupt metadata of topic {topic}: {reason}")]
    CorruptTopicMetadata {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The storage failed.
    #[error("I/O error while {operation} {path}: {source}")]
    Io {
        /// What the broker was doing.
        operation: &'static str,
        /// The file or directory.
        path: String,
        /// The storage's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<OffsetsError> for BrokerError {
    fn from(error: OffsetsError) -> Self {
        match error {
            OffsetsError::Log(source) => BrokerError::Offsets {
                reason: source.to_string(),
                source: Some(source),
            },
            corrupt @ OffsetsError::Corrupt { .. } => BrokerError::Offsets {
                reason: corrupt.to_string(),
                source: None,
            },
        }
    }
}

fn offsets_error(source: LogError) -> BrokerError {
    BrokerError::Offsets {
        reason: source.to_string(),
        source: Some(source),
    }
}

/// Settings of a broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Log settings for topics created without their own. Its
    /// `high_watermark` is the node's: every topic's partitions open with
    /// it (a replication layer sets [`HighWatermarkPolicy::SetByOwner`]).
    pub default_log: LogConfig,
}

/// Settings of a new topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// How many partitions.
    pub partitions: u32,
    /// Log settings; the broker's default when `None`.
    pub log: Option<LogConfig>,
}

impl TopicConfig {
    /// `partitions` partitions with the broker's default log settings.
    pub fn with_partitions(partitions: u32) -> Self {
        Self {
            partitions,
            log: None,
        }
    }
}

/// What a topic is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Its name.
    pub name: String,
    /// How many partitions.
    pub partitions: u32,
    /// Its log settings.
    pub log: LogConfig,
    /// The identity its creator gave it ([`Broker::create_identified_topic`];
    /// 0: none), kept as partitions are added and settings change: a
    /// replicated topic's owner tells an earlier topic of the same name
    /// from the one it should hold by it, as Kafka by its topic id.
    pub id: u64,
}

/// Records appended to one partition by [`Broker::produce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducedBatch {
    /// The partition.
    pub partition: u32,
    /// Where the records went.
    pub info: AppendInfo,
}

/// What opening a broker recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerRecovery {
    /// Each partition's recovery, by topic and partition.
    pub partitions: BTreeMap<(String, u32), RecoveryReport>,
    /// The consumer-offsets log's recovery and compaction.
    pub offsets: OffsetsRecovery,
    /// Unfinished topic creations and deletions cleaned up.
    pub leftovers_removed: Vec<String>,
}

#[derive(Debug)]
struct Topic {
    metadata: TopicMetadata,
    partitions: Vec<Arc<Partition>>,
    /// Picks partitions for records without a key.
    round_robin: AtomicU64,
}

/// Topics of partition logs in one data directory, with consumer-group
/// offsets.
#[derive(Debug)]
pub struct Broker {
    topics_storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    config: BrokerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    offsets: OffsetStore,
    /// Serialises topic creation and deletion.
    admin: Mutex<()>,
}

impl Broker {
    /// Opens the broker in `storage`, recovering every partition and the
    /// consumer offsets.
    pub fn open(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        config: BrokerConfig,
    ) -> Result<(Self, BrokerRecovery), BrokerError> {
        config
            .default_log
            .validate()
            .map_err(|source| BrokerError::InvalidTopicConfig {
                topic: "(default)".into(),
                source,
            })?;
        let topics_storage = storage
            .open_or_create_dir(TOPICS_DIRECTORY)
            .map_err(io("opening", TOPICS_DIRECTORY))?;
        let offsets_storage = storage
            .open_or_create_dir(OFFSETS_DIRECTORY)
            .map_err(io("opening", OFFSETS_DIRECTORY))?;
        let mut recovery = BrokerRecovery::default();
        let mut topics = BTreeMap::new();
        for entry in topics_storage
            .list()
            .map_err(io("listing", TOPICS_DIRECTORY))?
        {
            if entry.kind != EntryKind::Directory {
                continue;
            }
            if entry.name.starts_with(CREATING_PREFIX) || entry.name.starts_with(DELETING_PREFIX) {
                topics_storage
                    .remove_dir_all(&entry.name)
                    .map_err(io("removing", &entry.name))?;
                recovery.leftovers_removed.push(entry.name);
                continue;
            }
            let opening = Opening {
                clock: &clock,
                high_watermark: config.default_log.high_watermark,
            };
            let topic = open_topic(
                topics_storage.as_ref(),
                &opening,
                &entry.name,
                &mut recovery,
            )?;
            topics.insert(entry.name, Arc::new(topic));
        }
        // Make every directory entry found here durable before anything is
        // acknowledged on top of it: an earlier creation whose last sync
        // failed leaves a topic visible but not durable, and appends to it
        // would vanish with it at the next power loss. (Found by the
        // simulator, weir-sim seed 570.)
        topics_storage
            .sync_dir()
            .map_err(io("syncing", TOPICS_DIRECTORY))?;
        storage
            .sync_dir()
            .map_err(io("syncing", "the data directory"))?;
        // The committed offsets are this node's own: their log's high
        // watermark follows its flushes whoever owns the topics'.
        let offsets_log = LogConfig {
            high_watermark: HighWatermarkPolicy::FollowsFlush,
            ..config.default_log.clone()
        };
        let (offsets, offsets_recovery) =
            OffsetStore::open(offsets_storage, Arc::clone(&clock), offsets_log)?;
        recovery.offsets = offsets_recovery;
        tracing::info!(
            topics = topics.len(),
            committed_offsets = recovery.offsets.live_offsets,
            "opened broker"
        );
        Ok((
            Self {
                topics_storage,
                clock,
                config,
                topics: RwLock::new(topics),
                offsets,
                admin: Mutex::new(()),
            },
            recovery,
        ))
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<(), BrokerError> {
        self.create_identified_topic(name, config, 0)
    }

    /// Creates a topic with the identity `id` ([`TopicMetadata::id`]),
    /// written with its metadata: a crash leaves the topic with it or no
    /// topic.
    pub fn create_identified_topic(
        &self,
        name: &str,
        config: TopicConfig,
        id: u64,
    ) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        if config.partitions == 0 || config.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::InvalidPartitionCount {
                count: config.partitions,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        let log = config
            .log
            .unwrap_or_else(|| self.config.default_log.clone());
        log.validate()
            .map_err(|source| BrokerError::InvalidTopicConfig {
                topic: name.into(),
                source,
            })?;
        let _admin = lock(&self.admin);
        if self.read_topics().contains_key(name) {
            return Err(BrokerError::TopicExists { name: name.into() });
        }
        let metadata = TopicMetadata {
            name: name.into(),
            partitions: config.partitions,
            log,
            id,
        };
        let staging = format!("{CREATING_PREFIX}{name}");
        let storage = self.topics_storage.as_ref();
        if storage.exists(&staging).map_err(io("checking", &staging))? {
            storage
                .remove_dir_all(&staging)
                .map_err(io("removing", &staging))?;
        }
        storage
            .create_dir(&staging)
            .map_err(io("creating", &staging))?;
        let directory = storage
            .open_dir(&staging)
            .map_err(io("opening", &staging))?;
        let encoded = encode_metadata(&metadata);
        for name in [TOPIC_METADATA_FILE, TOPIC_METADATA_COPY] {
            write_file_atomically(directory.as_ref(), name, &encoded)
                .map_err(io("writing", name))?;
        }
        for partition in 0..metadata.partitions {
            directory
                .create_dir(&partition.to_string())
                .map_err(io("creating", &staging))?;
        }
        directory.sync_dir().map_err(io("syncing", &staging))?;
        storage
            .rename(&staging, name)
            .map_err(io("renaming", &staging))?;
        storage
            .sync_dir()
            .map_err(io("syncing", TOPICS_DIRECTORY))?;
        let mut reports = BrokerRecovery::default();
        let opening = Opening {
            clock: &self.clock,
            high_watermark: self.config.default_log.high_watermark,
        };
        let topic = open_topic(storage, &opening, name, &mut reports)?;
        write(&self.topics).insert(name.into(), Arc::new(topic));
        tracing::info!(
            topic = name,
            partitions = metadata.partitions,
            "created topic"
        );
        Ok(())
    }

    /// Deletes a topic, its partitions' data and the offsets committed for
    /// it. Handles to its partitions held elsewhere keep working on the
    /// removed files until dropped.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = lock(&self.admin);
        let removed = write(&self.topics).remove(name);
        if removed.is_none() {
            return Err(BrokerError::UnknownTopic { name: name.into() });
        }
        let doomed = format!("{DELETING_PREFIX}{name}");
        let storage = self.topics_storage.as_ref();
        storage
            .rename(name, &doomed)
            .map_err(io("renaming", name))?;
        storage
            .sync_dir()
            .map_err(io("syncing", TOPICS_DIRECTORY))?;
        storage
            .remove_dir_all(&doomed)
            .map_err(io("removing", &doomed))?;
        storage
            .sync_dir()
            .map_err(io("syncing", TOPICS_DIRECTORY))?;
        self.offsets
            .remove_where(|(_, topic, _)| topic == name)
            .map_err(offsets_error)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Adds partitions to a topic so that it has `count` (Kafka's
    /// CreatePartitions); the new ones are empty and take the topic's
    /// settings. Their directories are made durable first, then the topic's
    /// metadata is written again, `topic.meta` before its copy: a crash
    /// before `topic.meta` leaves the topic as it was (and empty
    /// directories that a later addition reuses), a crash between the two
    /// is finished at the next open (`topic.meta` is the newer, see
    /// FORMAT.md, `topic.meta`).
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<(), BrokerError> {
        let _admin = lock(&self.admin);
        let topic = self.topic_handle(name)?;
        let current = topic.metadata.partitions;
        if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::PartitionsNotAdded {
                topic: name.into(),
                current,
                count,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        let directory = self
            .topics_storage
            .open_dir(name)
            .map_err(io("opening", name))?;
        for partition in current..count {
            directory
                .open_or_create_dir(&partition.to_string())
                .map_err(io("creating", &format!("{name}/{partition}")))?;
        }
        directory.sync_dir().map_err(io("syncing", name))?;
        let metadata = TopicMetadata {
            partitions: count,
            ..topic.metadata.clone()
        };
        let encoded = encode_metadata(&metadata);
        for file in [TOPIC_METADATA_FILE, TOPIC_METADATA_COPY] {
            write_file_atomically(directory.as_ref(), file, &encoded)
                .map_err(io("writing", file))?;
        }
        let opening = Opening {
            clock: &self.clock,
            high_watermark: self.config.default_log.high_watermark,
        };
        let mut partitions = topic.partitions.clone();
        for partition in current..count {
            let (log, _report) =
                open_partition(directory.as_ref(), &opening, &metadata, partition)?;
            partitions.push(Arc::new(log));
        }
        assert_eq!(partitions.len(), count as usize, "one log per partition");
        let grown = Topic {
            metadata,
            partitions,
            round_robin: AtomicU64::new(topic.round_robin.load(Ordering::Relaxed)),
        };
        write(&self.topics).insert(name.into(), Arc::new(grown));
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Changes a topic's changeable settings (Kafka's AlterConfigs): its
    /// metadata is written again, `topic.meta` before its copy (the rule of
    /// [`Broker::add_partitions`]: a crash before `topic.meta` leaves the
    /// old settings, one after it the new), then every partition takes
    /// them. Settings outside a log's limits are refused and change
    /// nothing.
    pub fn change_topic_settings(
        &self,
        name: &str,
        settings: TopicSettings,
    ) -> Result<(), BrokerError> {
        let _admin = lock(&self.admin);
        let topic = self.topic_handle(name)?;
        let log = topic.metadata.log.with_settings(settings);
        log.validate()
            .map_err(|source| BrokerError::InvalidTopicConfig {
                topic: name.into(),
                source,
            })?;
        if log == topic.metadata.log {
            return Ok(());
        }
        let directory = self
            .topics_storage
            .open_dir(name)
            .map_err(io("opening", name))?;
        let metadata = TopicMetadata {
            log,
            ..topic.metadata.clone()
        };
        let encoded = encode_metadata(&metadata);
        for file in [TOPIC_METADATA_FILE, TOPIC_METADATA_COPY] {
            write_file_atomically(directory.as_ref(), file, &encoded)
                .map_err(io("writing", file))?;
        }
        for partition in &topic.partitions {
            partition
                .change_settings(settings)
                .expect("settings checked against the topic's log settings");
        }
        let changed = Topic {
            metadata,
            partitions: topic.partitions.clone(),
            round_robin: AtomicU64::new(topic.round_robin.load(Ordering::Relaxed)),
        };
        write(&self.topics).insert(name.into(), Arc::new(changed));
        tracing::info!(topic = name, ?settings, "changed topic settings");
        Ok(())
    }

    fn read_topics(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        read(&self.topics)
    }

    fn topic_handle(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic { name: name.into() })
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicMetadata> {
        self.read_topics()
            .values()
            .map(|topic| topic.metadata.clone())
            .collect()
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Result<TopicMetadata, BrokerError> {
        Ok(self.topic_handle(name)?.metadata.clone())
    }

    /// A partition's log.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, BrokerError> {
        let handle = self.topic_handle(topic)?;
        handle
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or(BrokerError::UnknownPartition {
                topic: topic.into(),
                partition,
                partitions: handle.metadata.partitions,
            })
    }

    /// The directory of a partition's files (a replication layer keeps its
    /// own beside them).
    pub fn partition_dir(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<dyn Storage>, BrokerError> {
        self.partition(topic, partition)?;
        let path = format!("{topic}/{partition}");
        self.topics_storage
            .open_dir(topic)
            .and_then(|directory| directory.open_dir(&partition.to_string()))
            .map_err(io("opening", &path))
    }

    /// Appends records to one partition.
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record<'_>],
    ) -> Result<AppendInfo, BrokerError> {
        self.partition(topic, partition)?
            .append(records, ProducerInfo::NONE)
            .map_err(|source| BrokerError::Log {
                topic: topic.into(),
                partition,
                source,
            })
    }

    /// Appends records to the partitions their keys hash to (Kafka's
    /// partitioner: murmur2 of the key), keyless records all to one
    /// partition chosen round-robin per call. One batch per partition, in
    /// record order.
    pub fn produce(
        &self,
        topic: &str,
        records: &[Record<'_>],
    ) -> Result<Vec<ProducedBatch>, BrokerError> {
        let handle = self.topic_handle(topic)?;
        let partitions = handle.metadata.partitions;
        let keyless = u32::try_from(
            handle.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions),
        )
        .expect("below the partition count");
        let mut groups: BTreeMap<u32, Vec<Record<'_>>> = BTreeMap::new();
        for record in records {
            let partition = match record.key {
                Some(key) => partition_for_key(key, partitions),
                None => keyless,
            };
            groups.entry(partition).or_default().push(*record);
        }
        let mut produced = Vec::with_capacity(groups.len());
        for (partition, records) in groups {
            let info = self.append(topic, partition, &records)?;
            produced.push(ProducedBatch { partition, info });
        }
        Ok(produced)
    }

    /// Reads from a partition (see [`Partition::read`]).
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<ReadResult, BrokerError> {
        self.partition(topic, partition)?
            .read(offset, max_bytes)
            .map_err(|source| BrokerError::Log {
                topic: topic.into(),
                partition,
                source,
            })
    }

    /// Commits one offset for a consumer group, durably.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        self.commit_offsets(group, &[(topic, partition, offset, metadata)])
    }

    /// Commits offsets for a consumer group atomically (all or none survive
    /// a crash) and durably. Each entry is (topic, partition, offset,
    /// metadata); the offset is the next one the group will consume.
    pub fn commit_offsets(
        &self,
        group: &str,
        entries: &[(&str, u32, u64, &str)],
    ) -> Result<(), BrokerError> {
        validate_group(group)?;
        let mut commits = Vec::with_capacity(entries.len());
        for (topic, partition, offset, metadata) in entries {
            self.partition(topic, *partition)?;
            if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(BrokerError::MetadataTooLarge {
                    bytes: metadata.len(),
                    max: OFFSET_METADATA_BYTES_MAX,
                });
            }
            let key = (group.to_string(), topic.to_string(), *partition);
            commits.push((key, *offset, metadata.to_string()));
        }
        self.offsets.commit(&commits).map_err(offsets_error)
    }

    /// The offset a group committed for a partition, if any.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<CommittedOffset>, BrokerError> {
        validate_group(group)?;
        Ok(self
            .offsets
            .get(&(group.to_string(), topic.to_string(), partition)))
    }

    /// Every offset a group committed: (topic, partition, offset).
    pub fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(String, u32, CommittedOffset)>, BrokerError> {
        validate_group(group)?;
        Ok(self.offsets.group(group))
    }

    /// Every group that has committed offsets, by name.
    pub fn groups_with_offsets(&self) -> Vec<String> {
        self.offsets.groups()
    }

    /// Deletes every offset a group committed; returns how many.
    pub fn delete_group_offsets(&self, group: &str) -> Result<usize, BrokerError> {
        validate_group(group)?;
        self.offsets
            .remove_where(|(entry_group, _, _)| entry_group == group)
            .map_err(offsets_error)
    }

    fn each_partition(
        &self,
        mut action: impl FnMut(&Partition) -> Result<(), LogError>,
    ) -> Result<(), BrokerError> {
        let topics: Vec<Arc<Topic>> = self.read_topics().values().cloned().collect();
        for topic in topics {
            for (partition, log) in topic.partitions.iter().enumerate() {
                action(log).map_err(|source| BrokerError::Log {
                    topic: topic.metadata.name.clone(),
                    partition: partition_number(partition),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Applies every partition's retention.
    pub fn apply_retention(&self) -> Result<Vec<(String, u32, RetentionReport)>, BrokerError> {
        let mut reports = Vec::new();
        let topics: Vec<Arc<Topic>> = self.read_topics().values().cloned().collect();
        for topic in topics {
            for (partition, log) in topic.partitions.iter().enumerate() {
                let report = log.apply_retention().map_err(|source| BrokerError::Log {
                    topic: topic.metadata.name.clone(),
                    partition: partition_number(partition),
                    source,
                })?;
                if !report.segments_deleted.is_empty() {
                    reports.push((
                        topic.metadata.name.clone(),
                        partition_number(partition),
                        report,
                    ));
                }
            }
        }
        Ok(reports)
    }

    /// Flushes partitions whose interval flush is due (call from a timer).
    pub fn tick(&self) -> Result<(), BrokerError> {
        self.each_partition(Partition::tick)
    }

    /// Flushes every partition.
    pub fn flush(&self) -> Result<(), BrokerError> {
        self.each_partition(Partition::flush)
    }

    /// Closes every partition cleanly, so that the next open scans nothing.
    pub fn close(&self) -> Result<(), BrokerError> {
        self.each_partition(Partition::close)?;
        self.offsets.log().close().map_err(offsets_error)
    }

    /// The log settings of topics created without their own.
    pub fn default_log_config(&self) -> &LogConfig {
        &self.config.default_log
    }

    /// The clock the broker reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Wraps a storage error with what the broker was doing and where.
fn io(operation: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> BrokerError {
    let path = path.to_string();
    move |source| BrokerError::Io {
        operation,
        path,
        source,
    }
}

/// What a topic's partitions are opened with besides its stored settings:
/// the node's.
struct Opening<'a> {
    clock: &'a Arc<dyn Clock>,
    /// Who moves the high watermark: the broker's default log settings say
    /// (a replication layer sets it on every topic of its node).
    high_watermark: HighWatermarkPolicy,
}

fn open_topic(
    topics_storage: &dyn Storage,
    opening: &Opening<'_>,
    name: &str,
    recovery: &mut BrokerRecovery,
) -> Result<Topic, BrokerError> {
    let directory = topics_storage.open_dir(name).map_err(io("opening", name))?;
    let mut metadata = read_topic_metadata(directory.as_ref(), name)?;
    metadata.log.high_watermark = opening.high_watermark;
    let mut partitions = Vec::with_capacity(metadata.partitions as usize);
    for partition in 0..metadata.partitions {
        let (log, report) = open_partition(directory.as_ref(), opening, &metadata, partition)?;
        recovery
            .partitions
            .insert((name.to_string(), partition), report);
        partitions.push(Arc::new(log));
    }
    Ok(Topic {
        metadata,
        partitions,
        round_robin: AtomicU64::new(0),
    })
}

/// Opens (creating its directory if missing) one partition of a topic.
fn open_partition(
    directory: &dyn Storage,
    opening: &Opening<'_>,
    metadata: &TopicMetadata,
    partition: u32,
) -> Result<(Partition, RecoveryReport), BrokerError> {
    let name = &metadata.name;
    let storage = directory
        .open_or_create_dir(&partition.to_string())
        .map_err(io("opening", &format!("{name}/{partition}")))?;
    Partition::open(storage, Arc::clone(opening.clock), metadata.log.clone()).map_err(|source| {
        BrokerError::Log {
            topic: name.clone(),
            partition,
            source,
        }
    })
}

/// Checks a topic name against Kafka's rules: 1 to 249 bytes of ASCII
/// letters, digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > TOPIC_NAME_BYTES_MAX {
        Some("it is longer than 249 bytes")
    } else if name == "." || name == ".." {
        Some("it is '.' or '..'")
    } else if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BrokerError::InvalidTopicName {
            name: name.into(),
            reason,
        }),
    }
}

/// A partition's number from its index in the topic's list.
fn partition_number(index: usize) -> u32 {
    u32::try_from(index).expect("at most PARTITIONS_PER_TOPIC_MAX partitions")
}

fn validate_group(group: &str) -> Result<(), BrokerError> {
    let reason = if group.is_empty() {
        Some("it is empty")
    } else if group.len() > GROUP_ID_BYTES_MAX {
        Some("it is longer than GROUP_ID_BYTES_MAX")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BrokerError::InvalidGroupId {
            group: group.into(),
            reason,
        }),
    }
}

/// The partition Kafka's default partitioner picks for `key`: the positive
/// part of murmur2 of the key, modulo the partition count.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's murmur2 (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka's Java takes the length as an int: its low 32 bits.
    let length = u32::try_from(data.len() & 0xffff_ffff).expect("masked to 32 bits");
    let mut hash: u32 = 0x9747_b28c ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash
}

/// Topic metadata file: magic "WEIRTOPC", version u16, crc u32 (of what
/// follows), partitions u32, segment_bytes u32, segment_ms u64,
/// index_interval_bytes u32, max_batch_bytes u32, max_record_bytes u32,
/// flush kind u8 (0 always, 1 interval, 2 never), interval_ms u64,
/// interval_bytes u64, retention_ms u64 and retention_bytes u64
/// (`u64::MAX`: none), max_uncompressed_batch_bytes u32, compression u8
/// and (version 3) id u64. Little-endian. Version 2, without the id, is
/// read as id 0.
pub(crate) fn encode_metadata(metadata: &TopicMetadata) -> Vec<u8> {
    let log = &metadata.log;
    let (flush_kind, interval_ms, interval_bytes) = match log.flush {
        FlushPolicy::Always => (0u8, 0, 0),
        FlushPolicy::Interval {
            interval_ms,
            interval_bytes,
        } => (1, interval_ms, interval_bytes),
        FlushPolicy::Never => (2, 0, 0),
    };
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&metadata.partitions.to_le_bytes());
    body.extend_from_slice(&log.segment_bytes.to_le_bytes());
    body.extend_from_slice(&log.segment_ms.to_le_bytes());
    body.extend_from_slice(&log.index_interval_bytes.to_le_bytes());
    body.extend_from_slice(&log.max_batch_bytes.to_le_bytes());
    body.extend_from_slice(&log.max_record_bytes.to_le_bytes());
    body.push(flush_kind);
    body.extend_from_slice(&interval_ms.to_le_bytes());
    body.extend_from_slice(&interval_bytes.to_le_bytes());
    body.extend_from_slice(&log.retention_ms.unwrap_or(u64::MAX).to_le_bytes());
    body.extend_from_slice(&log.retention_bytes.unwrap_or(u64::MAX).to_le_bytes());
    body.extend_from_slice(&log.max_uncompressed_batch_bytes.to_le_bytes());
    body.push(log.compression as u8);
    body.extend_from_slice(&metadata.id.to_le_bytes());
    let mut bytes = Vec::with_capacity(14 + body.len());
    bytes.extend_from_slice(METADATA_MAGIC);
    bytes.extend_from_slice(&METADATA_VERSION.to_le_bytes());
    bytes.extend_from_slice(&crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// One copy of a topic's metadata as stored, and what it decodes to.
type MetadataCopy = (Vec<u8>, Result<TopicMetadata, String>);

/// A topic's metadata from `topic.meta` or its copy, each read by the
/// agreement rule (a flipped read must not refuse a good topic) and
/// checked: a copy missing (a topic from before the copy) or damaged is
/// written again from the other; two valid that differ are an update cut
/// short (`topic.meta` is always written first, so it is the newer) and
/// the copy is written again from `topic.meta`; none valid is corrupt.
fn read_topic_metadata(directory: &dyn Storage, name: &str) -> Result<TopicMetadata, BrokerError> {
    let read = |file: &str| -> Result<Option<MetadataCopy>, BrokerError> {
        let bytes = read_whole_file_agreed(directory, file)
            .map_err(io("reading", &format!("{name}/{file}")))?;
        Ok(bytes.map(|bytes| {
            let decoded = decode_metadata(name, &bytes);
            (bytes, decoded)
        }))
    };
    let corrupt = |reason: String| BrokerError::CorruptTopicMetadata {
        topic: name.into(),
        reason,
    };
    let (bytes, metadata, rewrite) = match (read(TOPIC_METADATA_FILE)?, read(TOPIC_METADATA_COPY)?)
    {
        (Some((first, Ok(metadata))), Some((copy, Ok(_)))) if first == copy => {
            (first, metadata, None)
        }
        (Some((bytes, Ok(metadata))), _) => (bytes, metadata, Some(TOPIC_METADATA_COPY)),
        (_, Some((bytes, Ok(metadata)))) => (bytes, metadata, Some(TOPIC_METADATA_FILE)),
        (Some((_, Err(reason))), _) | (None, Some((_, Err(reason)))) => {
            return Err(corrupt(reason))
        }
        (None, None) => return Err(corrupt(format!("{TOPIC_METADATA_FILE} is missing"))),
    };
    if let Some(file) = rewrite {
        tracing::warn!(
            topic = name,
            file,
            "a copy of the topic's metadata was missing, corrupt or older: written again"
        );
        write_file_atomically(directory, file, &bytes).map_err(io("writing", file))?;
    }
    Ok(metadata)
}

pub(crate) fn decode_metadata(name: &str, bytes: &[u8]) -> Result<TopicMetadata, String> {
    if bytes.len() >= 10 && &bytes[..8] == METADATA_MAGIC && bytes[8..10] == 1u16.to_le_bytes() {
        return Err(format!(
            "the topic was written in {FORMAT_1_DESCRIPTION}, which this version does not read"
        ));
    }
    if bytes.len() < 14 || &bytes[..8] != METADATA_MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let body_bytes = match version {
        2 => 66,
        METADATA_VERSION => 74,
        other => return Err(format!("unsupported version {other}")),
    };
    if bytes.len() != 14 + body_bytes {
        return Err(format!(
            "{} bytes, expected {} for version {version}",
            bytes.len(),
            14 + body_bytes
        ));
    }
    let body = &bytes[14..];
    let stored = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    if stored != crc32c(body) {
        return Err("checksum mismatch".into());
    }
    let optional = |value: u64| (value != u64::MAX).then_some(value);
    let flush = match body[28] {
        0 => FlushPolicy::Always,
        1 => FlushPolicy::Interval {
            interval_ms: u64_at(body, 29),
            interval_bytes: u64_at(body, 37),
        },
        2 => FlushPolicy::Never,
        other => return Err(format!("unknown flush policy {other}")),
    };
    let metadata = TopicMetadata {
        name: name.into(),
        partitions: u32_at(body, 0),
        log: LogConfig {
            segment_bytes: u32_at(body, 4),
            segment_ms: u64_at(body, 8),
            index_interval_bytes: u32_at(body, 16),
            max_batch_bytes: u32_at(body, 20),
            max_record_bytes: u32_at(body, 24),
            max_uncompressed_batch_bytes: u32_at(body, 61),
            compression: Compression::from_codec(u16::from(body[65]))
                .map_err(|error| error.to_string())?,
            flush,
            retention_ms: optional(u64_at(body, 45)),
            retention_bytes: optional(u64_at(body, 53)),
            high_watermark: HighWatermarkPolicy::FollowsFlush,
            allocation_step_bytes: crate::config::ALLOCATION_STEP_BYTES_DEFAULT,
        },
        id: if version == 2 { 0 } else { u64_at(body, 66) },
    };
    if metadata.partitions == 0 || metadata.partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(format!("partition count {}", metadata.partitions));
    }
    metadata.log.validate().map_err(|error| error.to_string())?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2, as signed 32-bit values.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in ["a", "orders.v2", "x_y-z", &"n".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ünïcode",
            "~creating-x",
            &"n".repeat(250),
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_metadata_round_trips() {
        let metadata = TopicMetadata {
            name: "t".into(),
            partitions: 12,
            log: LogConfig {
                flush: FlushPolicy::Interval {
                    interval_ms: 5,
                    interval_bytes: 6,
                },
                retention_ms: None,
                retention_bytes: Some(1 << 40),
                ..LogConfig::default()
            },
            id: 0x0102_0304_0506_0708,
        };
        let bytes = encode_metadata(&metadata);
        assert_eq!(decode_metadata("t", &bytes), Ok(metadata.clone()));
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_metadata("t", &corrupt).is_err(), "bit {bit}");
        }
        // Version 2, written before topics had an identity, reads as id 0;
        // a version 2 header on a version 3 body does not read.
        let mut version_2 = bytes[..bytes.len() - 8].to_vec();
        version_2[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c(&version_2[14..]);
        version_2[10..14].copy_from_slice(&crc.to_le_bytes());
        let old = TopicMetadata { id: 0, ..metadata };
        assert_eq!(decode_metadata("t", &version_2), Ok(old));
        let mut mislabelled = bytes.clone();
        mislabelled[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert!(decode_metadata("t", &mislabelled).is_err());
    }
}
