//! The Kafka front-end's shared state: the log broker it serves, its
//! settings, the group coordinator, producer ids, the wake-up of waiting
//! fetches, and the one seam that says which node leads a partition.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use tokio::sync::Notify;
use weir_io::{Clock, Storage};
use weir_log::{Broker, CommittedOffset, Partition};

use crate::handlers::configs::ConfigChange;

use crate::coordinator::Coordinator;
use crate::limits::{FETCH_WAIT_MS_MAX, REQUEST_BYTES_MAX};
use crate::producer_ids::{ProducerIdError, ProducerIds};

/// Settings of the Kafka front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Create a topic when Metadata names one that does not exist (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (Kafka's
    /// `num.partitions`).
    pub default_partitions: u32,
    /// SASL/PLAIN users and passwords; when empty no authentication is
    /// asked for.
    pub users: BTreeMap<String, String>,
    /// How long the first rebalance of an empty group waits for more
    /// members (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// The largest request accepted (Kafka's `socket.request.max.bytes`).
    pub request_bytes_max: usize,
    /// The longest a fetch waits for records, whatever it asks for.
    pub fetch_wait_ms_max: u64,
    /// How often retention runs on the topics (Kafka's
    /// `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            default_partitions: 1,
            users: BTreeMap::new(),
            initial_rebalance_delay_ms: 0,
            request_bytes_max: REQUEST_BYTES_MAX,
            fetch_wait_ms_max: FETCH_WAIT_MS_MAX,
            retention_check_interval_ms: 60_000,
        }
    }
}

/// A node of the cluster as Metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// Its id.
    pub id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: u16,
}

/// What the replication seam's calls return.
pub type SeamFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A refusal: Kafka's error and a message for the client.
pub type Refusal = (ResponseError, Option<String>);

/// Work a request leaves to finish later (see `Handled::Later`).
pub struct Later<T>(pub SeamFuture<T>);

impl<T> std::fmt::Debug for Later<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Later(..)")
    }
}

/// When a batch handed to the replication layer is acknowledged: its base
/// offset, or why it was refused.
pub type Acknowledgement = SeamFuture<Result<u64, Refusal>>;

/// Which node leads each partition: the one seam a replication layer
/// replaces. Every request that must reach a partition's leader asks it.
/// The defaults describe one node that holds everything.
pub trait Leaders: Send + Sync + Debug {
    /// This node's id.
    fn node_id(&self) -> i32;
    /// Every node, as Metadata lists them.
    fn nodes(&self) -> Vec<NodeAddress>;
    /// The node leading a partition, if one does.
    fn leader(&self, topic: &str, partition: u32) -> Option<i32>;
    /// The partition's replicas and in-sync replicas.
    fn replicas(&self, _topic: &str, _partition: u32) -> (Vec<i32>, Vec<i32>) {
        (vec![self.node_id()], vec![self.node_id()])
    }
    /// The partition's leader epoch, when the seam knows it better than
    /// the local log (whose epoch is that of its last batch).
    fn leader_epoch(&self, _topic: &str, _partition: u32) -> Option<i32> {
        None
    }
    /// Whether this node, the partition's leader, may serve reads: a new
    /// leader whose high watermark may still be below one an earlier
    /// leader showed answers an error until it has caught up.
    fn serves_reads(&self, _topic: &str, _partition: u32) -> Result<(), ResponseError> {
        Ok(())
    }
    /// Confirms that this node still leads the partition and holds every
    /// record committed before the call, before it tells a client that an
    /// offset is beyond its log: a leader deposed without knowing it yet
    /// (cut off, or paused while the others elected) has a shorter log
    /// than the new leader's, and a consumer told its position is out of
    /// range resets it (skipping or re-reading records). One node always
    /// leads.
    fn confirm_lead(&self, _topic: &str, _partition: u32) -> SeamFuture<Result<(), ResponseError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether a topic is the cluster's own (Metadata marks it internal;
    /// clients may not produce to it nor delete it).
    fn is_internal(&self, _topic: &str) -> bool {
        false
    }
    /// The node Metadata names the controller, where clients send admin
    /// requests (in a cluster, the node answering: it forwards them).
    fn controller(&self) -> i32 {
        self.node_id()
    }
    /// The node that coordinates consumer group `group`, if one does.
    fn coordinator(&self, _group: &str) -> Option<i32> {
        Some(self.node_id())
    }
    /// Whether this node, the coordinator, is still loading the groups'
    /// committed offsets (a new leader of the offsets' group catching up).
    fn coordinator_loading(&self, _group: &str) -> bool {
        false
    }
    /// The replication layer, when partitions are replicated: produce and
    /// topic creation and deletion go through it, not to the local log.
    fn replication(&self) -> Option<&dyn Replication> {
        None
    }
}

/// Writes that a replication layer makes on the cluster's behalf.
pub trait Replication: Send + Sync + Debug {
    /// Hands a producer's batch to a partition this node leads: done once
    /// it is queued behind every batch handed over before it (a
    /// connection hands its requests' batches over in order, and may read
    /// its next request meanwhile); the [`Acknowledgement`] answers at
    /// `acks` (1: durable on this node, -1: committed on a majority) with
    /// the batch's base offset.
    fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: i16,
    ) -> SeamFuture<Acknowledgement>;
    /// Creates a topic across the cluster (the replication factor defaults
    /// to the cluster's) with Kafka configs (name, value: already checked
    /// against this node's settings), which every node applies over its
    /// own log settings (INVALID_CONFIG for more or longer configs than
    /// the cluster carries); done when this node's metadata has it.
    fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> SeamFuture<Result<(), Refusal>>;
    /// Adds partitions to a topic across the cluster so that it has
    /// `count` (placed as a topic's, with its replication factor); done
    /// when this node's metadata has them.
    fn create_partitions(&self, name: &str, count: u32) -> SeamFuture<Result<(), Refusal>>;
    /// The Kafka configs (name, value) the cluster's metadata gives a
    /// topic over each node's defaults, as this node has applied it;
    /// `None` for a topic it does not have.
    fn topic_configs(&self, name: &str) -> Option<Vec<(String, String)>>;
    /// Changes a topic's configs across the cluster (AlterConfigs when
    /// `replace`, else IncrementalAlterConfigs; already checked against
    /// this node's settings): the controller applies `changes` to the
    /// configs its metadata has; done when this node's metadata has the
    /// result. Every node's log takes the new settings once it applies it.
    fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<ConfigChange>,
        replace: bool,
    ) -> SeamFuture<Result<(), Refusal>>;
    /// Deletes a topic across the cluster; done when this node's metadata
    /// no longer has it.
    fn delete_topic(&self, name: &str) -> SeamFuture<Result<(), Refusal>>;
    /// A block of producer ids (first, count) that the cluster handed to
    /// this node alone, starting at `floor` or above: done once this
    /// node's metadata has it.
    fn producer_id_block(&self, floor: u64) -> SeamFuture<Result<(u64, u64), Refusal>>;
    /// The replication factor of a topic created without one.
    fn default_replication_factor(&self) -> u32;
    /// The nodes a topic's replicas may be placed on: every registered
    /// node, down or not (one that is down catches up when back).
    fn registered_nodes(&self) -> usize;
    /// Commits a consumer group's offsets (topic, partition, offset,
    /// metadata) on the cluster: done once a majority has them durably and
    /// this node has applied them.
    fn commit_offsets(
        &self,
        group: &str,
        entries: Vec<(String, u32, u64, String)>,
    ) -> SeamFuture<Result<(), Refusal>>;
    /// Deletes every offset a group committed, on the cluster; how many.
    fn delete_group_offsets(&self, group: &str) -> SeamFuture<Result<usize, Refusal>>;
    /// The offsets a group committed, as this node has applied them.
    fn committed_offsets(&self, group: &str) -> Vec<(String, u32, CommittedOffset)>;
    /// Every group with committed offsets.
    fn groups_with_offsets(&self) -> Vec<String>;
    /// Moves a partition's replicas to `target` (`None`: cancels the move
    /// under way); done once the controller has recorded it, before the
    /// replicas have moved (Kafka's AlterPartitionReassignments).
    fn reassign(
        &self,
        topic: &str,
        partition: u32,
        target: Option<Vec<u64>>,
    ) -> SeamFuture<Result<(), Refusal>>;
    /// The reassignments under way.
    fn reassignments(&self) -> Vec<Reassignment>;
    /// The metadata log's Raft group as this node knows it (Kafka's
    /// DescribeQuorum).
    fn quorum(&self) -> Quorum;
}

/// The metadata log's Raft group, as one node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quorum {
    /// Its leader (the controller), if one is known.
    pub leader: Option<u64>,
    /// Its term (Kafka's leader epoch).
    pub epoch: u64,
    /// Its high watermark on this node.
    pub high_watermark: u64,
    /// Its voters.
    pub voters: Vec<u64>,
    /// Nodes that follow it without a vote (learners).
    pub observers: Vec<u64>,
}

/// A partition whose replicas are moving (ListPartitionReassignments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The replicas now and to come.
    pub replicas: Vec<u64>,
    /// Those being added.
    pub adding: Vec<u64>,
    /// Those being removed.
    pub removing: Vec<u64>,
}

/// One node that leads every partition.
#[derive(Clone, Debug)]
pub struct SingleNode {
    /// The node's advertised address; its id is 0.
    pub address: NodeAddress,
}

impl SingleNode {
    /// The single node 0, advertised at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            address: NodeAddress {
                id: 0,
                host: host.into(),
                port,
            },
        }
    }
}

impl Leaders for SingleNode {
    fn node_id(&self) -> i32 {
        self.address.id
    }

    fn nodes(&self) -> Vec<NodeAddress> {
        vec![self.address.clone()]
    }

    fn leader(&self, _topic: &str, _partition: u32) -> Option<i32> {
        Some(self.address.id)
    }
}

/// The Kafka front-end of one node.
#[derive(Debug)]
pub struct Kafka {
    /// The topics, partitions and committed offsets.
    pub log: Arc<Broker>,
    /// Settings.
    pub settings: KafkaSettings,
    /// Who leads what.
    pub leaders: Box<dyn Leaders>,
    /// Consumer groups.
    pub coordinator: Coordinator,
    /// Producer ids.
    pub producer_ids: ProducerIds,
    /// Woken whenever records become readable: waiting fetches re-read.
    pub appended: Notify,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The cluster id Metadata returns.
    pub cluster_id: String,
}

impl Kafka {
    /// The front-end over `log`, keeping its own state (producer ids) in
    /// `storage`.
    pub fn new(
        log: Arc<Broker>,
        storage: Arc<dyn Storage>,
        settings: KafkaSettings,
        leaders: Box<dyn Leaders>,
    ) -> Result<Self, ProducerIdError> {
        let clock = Arc::clone(log.clock());
        Ok(Self {
            producer_ids: ProducerIds::open(storage)?,
            coordinator: Coordinator::new(Arc::clone(&clock), settings.initial_rebalance_delay_ms),
            log,
            settings,
            leaders,
            appended: Notify::new(),
            clock,
            cluster_id: "weir-cluster".into(),
        })
    }

    /// The partition, if it exists here (led by this node or not).
    pub fn known_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        let index = u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        self.log
            .partition(topic, index)
            .map_err(|_| ResponseError::UnknownTopicOrPartition)
    }

    /// The partition, for a read (fetch, list offsets): this node must
    /// lead it and serve reads, and a client that names the leader epoch it
    /// knows (`current_leader_epoch`, -1 for none) must know the current
    /// one: an older epoch is fenced (FENCED_LEADER_EPOCH), a newer one is
    /// unknown here (UNKNOWN_LEADER_EPOCH: this node is a stale leader), as
    /// Kafka answers (KIP-320). Only a replication layer's epochs are
    /// checked.
    pub fn readable_partition(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        let log = self.led_partition(topic, partition)?;
        let index = u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        self.leaders.serves_reads(topic, index)?;
        if current_leader_epoch >= 0 {
            if let Some(epoch) = self.leaders.leader_epoch(topic, index) {
                if current_leader_epoch < epoch {
                    return Err(ResponseError::FencedLeaderEpoch);
                }
                if current_leader_epoch > epoch {
                    return Err(ResponseError::UnknownLeaderEpoch);
                }
            }
        }
        Ok(log)
    }

    /// Commits a group's offsets (topic, partition, offset, metadata),
    /// durably: on the cluster, or in the local log.
    pub async fn commit_offsets(
        &self,
        group: String,
        entries: Vec<(String, u32, u64, String)>,
    ) -> Result<(), Refusal> {
        if let Some(replication) = self.leaders.replication() {
            return replication.commit_offsets(&group, entries).await;
        }
        let log = Arc::clone(&self.log);
        off_loop(move || {
            let borrowed: Vec<(&str, u32, u64, &str)> = entries
                .iter()
                .map(|(topic, partition, offset, metadata)| {
                    (topic.as_str(), *partition, *offset, metadata.as_str())
                })
                .collect();
            log.commit_offsets(&group, &borrowed)
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "committing offsets failed");
            (
                crate::handlers::errors::for_broker(&error),
                Some(error.to_string()),
            )
        })
    }

    /// The offsets a group committed.
    pub fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(String, u32, CommittedOffset)>, ResponseError> {
        match self.leaders.replication() {
            Some(replication) => Ok(replication.committed_offsets(group)),
            None => self
                .log
                .committed_offsets(group)
                .map_err(|error| crate::handlers::errors::for_broker(&error)),
        }
    }

    /// Every group with committed offsets.
    pub fn groups_with_offsets(&self) -> Vec<String> {
        match self.leaders.replication() {
            Some(replication) => replication.groups_with_offsets(),
            None => self.log.groups_with_offsets(),
        }
    }

    /// Deletes a group's committed offsets; how many there were.
    pub async fn delete_group_offsets(&self, group: String) -> Result<usize, ResponseError> {
        if let Some(replication) = self.leaders.replication() {
            return replication
                .delete_group_offsets(&group)
                .await
                .map_err(|(error, _)| error);
        }
        let log = Arc::clone(&self.log);
        off_loop(move || log.delete_group_offsets(&group))
            .await
            .map_err(|error| crate::handlers::errors::for_broker(&error))
    }

    /// Whether this node coordinates consumer group `group`.
    pub fn coordinates(&self, group: &str) -> Result<(), ResponseError> {
        match self.leaders.coordinator(group) {
            Some(node) if node == self.leaders.node_id() => {
                if self.leaders.coordinator_loading(group) {
                    Err(ResponseError::CoordinatorLoadInProgress)
                } else {
                    Ok(())
                }
            }
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// The partition, if it exists and this node leads it.
    pub fn led_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        let index = u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        let log = self
            .log
            .partition(topic, index)
            .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        match self.leaders.leader(topic, index) {
            Some(leader) if leader == self.leaders.node_id() => Ok(log),
            Some(_) => Err(ResponseError::NotLeaderOrFollower),
            None => Err(ResponseError::LeaderNotAvailable),
        }
    }
}

/// Runs storage work (syncs, directory changes) off the event loop, so
/// that other connections go on meanwhile: on tokio's blocking pool. Under
/// the simulator (one thread, a disk that never blocks) it runs in place
/// after a pause of simulated time, so that other requests are served
/// while it "runs", as they are while a blocking-pool thread syncs.
pub async fn off_loop<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    #[cfg(madsim)]
    {
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        work()
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}
