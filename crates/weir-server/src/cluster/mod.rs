//! A node of a weir cluster: every partition is a Raft group of
//! [`weir_replication`], the cluster's metadata is a group of its own on
//! every node (after KRaft), and the Kafka front-end reaches both through
//! [`Cluster`], its [`Leaders`] and [`Replication`] seams.
//!
//! - The metadata group's leader is the controller: it alone proposes
//!   metadata records (nodes, topics, deletions). Other nodes ask it with
//!   [`messages::ClusterMessage`]s over the replication transport and
//!   retry until their own metadata shows the change.
//! - The cluster task of every node applies the committed metadata: it
//!   creates and deletes topics in the local log and opens the groups of
//!   the partitions this node replicates ([`controller`]).
//! - Produce goes to the partition's group on its leader; the group's
//!   high watermark is what consumers read up to.

pub mod controller;
pub mod messages;
pub mod offsets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, Notify};
use weir_io::sync::{lock, read, write, Mutex, RwLock};
use weir_io::Clock;
use weir_kafka::handlers::configs::ConfigChange;
use weir_kafka::handlers::errors::for_log;
use weir_kafka::handlers::partitions::partitions_not_added;
use weir_kafka::node::{Acknowledgement, SeamFuture};
use weir_kafka::{Leaders, NodeAddress, Quorum, Reassignment, Refusal, Replication};
use weir_log::{offsets_batch, validate_topic_name, CommittedOffset, PARTITIONS_PER_TOPIC_MAX};
use weir_replication::metadata::{configs_fit, MetadataState, MAX_CONFIG_BYTES, MAX_TOPIC_CONFIGS};
use weir_replication::runner::{Acks, ProduceError, ReplicasHandle};

use messages::ClusterMessage;
use offsets::ReplicatedOffsets;

/// The internal topic of the consumer groups' committed offsets: one
/// partition, whose leader coordinates every group, so that the
/// coordinator moves with it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The Raft group of the cluster metadata (every node's first group).
pub use weir_replication::metadata::METADATA_GROUP;

/// How long a node waits for the controller to make a metadata change.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a request to the controller is sent again meanwhile.
const ADMIN_RETRY: Duration = Duration::from_millis(500);

/// The refusal of topic configs the metadata log cannot carry
/// ([`configs_fit`]).
fn config_misfit() -> (ResponseError, String) {
    (
        ResponseError::InvalidConfig,
        format!(
            "a cluster carries at most {MAX_TOPIC_CONFIGS} configs of a topic, names of 1 to \
             {MAX_CONFIG_BYTES} bytes and values of at most {MAX_CONFIG_BYTES}"
        ),
    )
}

/// Settings of a cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id (not 0).
    pub node: u64,
    /// Where this node listens for its peers.
    pub listen: String,
    /// Every node's id and cluster address, this one's included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The replication layer's tick.
    pub tick: Duration,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// Bytes of its replicas' logs the node reads back each tick, to find
    /// rot (0: none).
    pub scrub_bytes_per_tick: u32,
    /// The node joins a running cluster: its metadata group starts empty
    /// and learns its members from the controller.
    pub join: bool,
    /// How often the replicated partitions' retention runs.
    pub retention_check_interval: Duration,
}

/// What the front-ends and the cluster task share.
#[derive(Debug, Default)]
struct Shared {
    /// The metadata as this node has applied it.
    metadata: RwLock<MetadataState>,
    /// The committed offsets as this node has applied them (when it
    /// replicates [`OFFSETS_TOPIC`]).
    offsets: RwLock<ReplicatedOffsets>,
    /// Notified whenever metadata or offsets are applied.
    applied: Notify,
    /// The end of the metadata this node has applied (the offset after
    /// the last record), as `metadata` shows it.
    applied_offset: AtomicU64,
    /// Requests to the controller awaiting an answer, by number.
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Answer>>>,
    next_request: AtomicU64,
    /// The leaders of groups this node does not replicate, as their
    /// leaders announce them ([`ClusterMessage::Leading`]), by group.
    remote_leaders: RwLock<BTreeMap<u64, RemoteLead>>,
    /// Why this node stopped before taking part in the cluster (set
    /// once, by the cluster task, which then stops).
    refused: Mutex<Option<Halt>>,
    /// Notified when `refused` is set.
    refusal: Notify,
}

/// A group's leader as that leader announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RemoteLead {
    leader: u64,
    term: u64,
    in_sync: Vec<u64>,
}

impl Shared {
    /// Takes in a peer's announcement of every group it leads: it leads
    /// those, unless another announced a later term, and no others.
    fn learn_leaders(&self, from: u64, groups: &[messages::Led]) {
        let mut remote = write(&self.remote_leaders);
        let named: std::collections::BTreeSet<u64> = groups.iter().map(|led| led.group).collect();
        remote.retain(|group, lead| lead.leader != from || named.contains(group));
        for led in groups {
            let later = remote
                .get(&led.group)
                .is_some_and(|known| known.term > led.term);
            if !later {
                let lead = RemoteLead {
                    leader: from,
                    term: led.term,
                    in_sync: led.in_sync.clone(),
                };
                remote.insert(led.group, lead);
            }
        }
    }
}

/// The controller's answer to a request.
#[derive(Debug)]
enum Answer {
    /// Refused: Kafka's error and why.
    Refused(Refusal),
    /// Done (or found done) in the metadata up to this offset.
    Done(u64),
}

/// Why a node stopped before it took part in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// It must not take part: a peer knows it, so its disk was lost.
    Refused(String),
    /// Its storage failed while it made ready to take part (as a storage
    /// error stops the replication runner later on).
    StorageFailed(String),
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(reason) => write!(f, "{reason}"),
            Self::StorageFailed(reason) => write!(f, "a storage error: {reason}"),
        }
    }
}

/// This node's view of the cluster, for the Kafka front-end.
#[derive(Clone, Debug)]
pub struct Cluster {
    node: u64,
    peers: Arc<Vec<u64>>,
    own_kafka: NodeAddress,
    handle: ReplicasHandle,
    shared: Arc<Shared>,
    /// Requests made on this node, for the cluster task.
    local: mpsc::Sender<ClusterMessage>,
    clock: Arc<dyn Clock>,
}

impl Cluster {
    /// The replication runner's handle.
    pub fn handle(&self) -> &ReplicasHandle {
        &self.handle
    }

    /// Done, with the reason, once this node has found that it must not
    /// take part in the cluster (see `controller::check_not_lost`), or
    /// its storage failed before it did: the server then shuts down.
    pub async fn refused(&self) -> Halt {
        loop {
            let notified = self.shared.refusal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = lock(&self.shared.refused).clone() {
                return reason;
            }
            notified.await;
        }
    }

    /// The metadata as this node has applied it.
    pub fn metadata(&self) -> MetadataState {
        read(&self.shared.metadata).clone()
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Whether Metadata lists node `node` (this one always is; others
    /// once registered, unless taken for down).
    fn is_listed(&self, node: u64) -> bool {
        node == self.node
            || (read(&self.shared.metadata).nodes.contains_key(&node)
                && !self.handle.down_peers().contains(&node))
    }

    /// A group's leader as it announced itself.
    fn remote_lead(&self, group: u64) -> Option<RemoteLead> {
        read(&self.shared.remote_leaders).get(&group).cloned()
    }

    /// The group of a partition, if the metadata has it.
    fn group_of(&self, topic: &str, partition: u32) -> Option<(u64, Vec<u64>)> {
        let metadata = read(&self.shared.metadata);
        let assignment = metadata.topics.get(topic)?.get(partition as usize)?;
        Some((assignment.group, assignment.replicas.clone()))
    }

    /// Asks the controller for a change and waits until it answers, then,
    /// if it made the change (or found it made), until this node has
    /// applied the metadata up to where the controller said, so that what
    /// this node serves next shows it. Sent again every [`ADMIN_RETRY`]
    /// until answered (a request the controller already made is found
    /// made, or refused as Kafka refuses a retry: TOPIC_ALREADY_EXISTS for
    /// a creation whose first answer was lost).
    async fn ask(&self, make: impl Fn(u64) -> ClusterMessage) -> Result<(), Refusal> {
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        lock(&self.shared.pending).insert(request, reply);
        // Forgotten when the asker is done or gone (a request given up
        // part way, as InitProducerId gives up waiting for its block).
        let _pending = Forget {
            shared: &self.shared,
            request,
        };
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        let offset = self.answer(&make(request), &mut answer, deadline).await?;
        self.applied_up_to(offset, deadline).await
    }

    /// The controller's answer to `message`, sent again until it comes.
    async fn answer(
        &self,
        message: &ClusterMessage,
        answer: &mut oneshot::Receiver<Answer>,
        deadline: tokio::time::Instant,
    ) -> Result<u64, Refusal> {
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            if self.local.send(message.clone()).await.is_err() {
                return Err((
                    ResponseError::KafkaStorageError,
                    Some("the node is stopping".into()),
                ));
            }
            tokio::select! {
                biased;
                answered = &mut *answer => {
                    return match answered {
                        Ok(Answer::Done(offset)) => Ok(offset),
                        Ok(Answer::Refused(refusal)) => Err(refusal),
                        Err(_) => Err((ResponseError::UnknownServerError, None)),
                    };
                }
                _ = tokio::time::sleep(ADMIN_RETRY) => {}
            }
        }
    }

    /// Waits until this node has applied the metadata up to `offset`.
    async fn applied_up_to(
        &self,
        offset: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), Refusal> {
        loop {
            let applied = self.shared.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if self.shared.applied_offset.load(Ordering::Acquire) >= offset {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            tokio::select! {
                biased;
                _ = applied => {}
                _ = tokio::time::sleep(ADMIN_RETRY) => {}
            }
        }
    }
}

fn timed_out() -> Refusal {
    (
        ResponseError::RequestTimedOut,
        Some("the cluster's controller did not make the change in time".into()),
    )
}

/// Removes a request from those awaiting an answer when dropped.
struct Forget<'a> {
    shared: &'a Shared,
    request: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.request);
    }
}

fn as_id(node: u64) -> i32 {
    i32::try_from(node).unwrap_or(-1)
}

impl Leaders for Cluster {
    fn node_id(&self) -> i32 {
        as_id(self.node)
    }

    /// The registered nodes this node does not take for down (as Kafka
    /// lists the brokers that are not fenced), and itself.
    fn nodes(&self) -> Vec<NodeAddress> {
        let metadata = read(&self.shared.metadata);
        let down = self.handle.down_peers();
        let mut nodes: Vec<NodeAddress> = metadata
            .nodes
            .iter()
            .filter(|(id, _)| !down.contains(id))
            .filter_map(|(id, info)| {
                let (host, port) = crate::config::parse_host_port(&info.kafka_address)?;
                Some(NodeAddress {
                    id: as_id(*id),
                    host,
                    port,
                })
            })
            .collect();
        if !metadata.nodes.contains_key(&self.node) {
            nodes.push(self.own_kafka.clone());
        }
        nodes
    }

    /// The group's leader, once clients can reach it: as this node's
    /// replica knows it, or, for a group this node does not replicate (or
    /// whose leader its replica does not know yet), as the leader
    /// announced it.
    fn leader(&self, topic: &str, partition: u32) -> Option<i32> {
        let (group, _) = self.group_of(topic, partition)?;
        let local = self.handle.view(group).and_then(|view| view.leader);
        let leader = local.or_else(|| self.remote_lead(group).map(|lead| lead.leader))?;
        self.is_listed(leader).then(|| as_id(leader))
    }

    fn replicas(&self, topic: &str, partition: u32) -> (Vec<i32>, Vec<i32>) {
        let Some((group, assigned)) = self.group_of(topic, partition) else {
            return (Vec::new(), Vec::new());
        };
        let ids = |nodes: &[u64]| nodes.iter().copied().map(as_id).collect::<Vec<_>>();
        match self.handle.view(group) {
            // Learners are replicas being added (Kafka lists them too).
            Some(view) => {
                let mut replicas = view.voters.clone();
                replicas.extend(view.learners.iter().copied());
                (ids(&replicas), ids(&view.in_sync))
            }
            None => {
                let in_sync = self
                    .remote_lead(group)
                    .map(|lead| lead.in_sync)
                    .unwrap_or_default();
                (ids(&assigned), ids(&in_sync))
            }
        }
    }

    fn leader_epoch(&self, topic: &str, partition: u32) -> Option<i32> {
        let (group, _) = self.group_of(topic, partition)?;
        let term = match self.handle.view(group) {
            Some(view) => view.term,
            None => self.remote_lead(group)?.term,
        };
        i32::try_from(term).ok()
    }

    /// This node, once it knows the metadata group's leader (-1 until
    /// then), as a KRaft broker names a live broker rather than the
    /// active controller: any node takes admin requests and forwards them
    /// to the controller, so a client never sends one to a controller
    /// that died since its last Metadata. DescribeQuorum names the
    /// controller itself.
    fn controller(&self) -> i32 {
        let knows_leader = self
            .handle
            .view(METADATA_GROUP)
            .is_some_and(|view| view.leader.is_some());
        if knows_leader {
            as_id(self.node)
        } else {
            -1
        }
    }

    /// Every consumer group is coordinated by the leader of
    /// [`OFFSETS_TOPIC`]'s partition.
    fn coordinator(&self, _group: &str) -> Option<i32> {
        self.leader(OFFSETS_TOPIC, 0)
    }

    /// A new leader of the offsets' partition serves once it has committed
    /// an entry of its term (so every earlier commit is committed too) and
    /// applied the offsets up to its high watermark.
    fn coordinator_loading(&self, _group: &str) -> bool {
        let Some((group, _)) = self.group_of(OFFSETS_TOPIC, 0) else {
            return true;
        };
        let Some(view) = self.handle.view(group) else {
            return true;
        };
        let applied = read(&self.shared.offsets).applied_offset();
        let ready = view.leader == Some(self.node)
            && view.commit_term == view.term
            && applied >= view.high_watermark;
        !ready
    }

    /// A leader serves reads once it has committed an entry of its term:
    /// its commit then covers every entry an earlier leader committed, so
    /// its high watermark is not below one a consumer saw before.
    fn serves_reads(&self, topic: &str, partition: u32) -> Result<(), ResponseError> {
        let (group, _) = self
            .group_of(topic, partition)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        match self.handle.view(group) {
            Some(view) if view.leader == Some(self.node) && view.commit_term == view.term => Ok(()),
            Some(view) if view.leader == Some(self.node) => Err(ResponseError::LeaderNotAvailable),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// A round of heartbeats a majority acknowledges in this term (raft's
    /// read index), then that moment's commit applied here; a deposed
    /// leader gets NOT_LEADER_OR_FOLLOWER (retriable: the client refreshes
    /// its metadata and finds the new leader).
    fn confirm_lead(&self, topic: &str, partition: u32) -> SeamFuture<Result<(), ResponseError>> {
        let group = self.group_of(topic, partition).map(|(group, _)| group);
        let handle = self.handle.clone();
        Box::pin(async move {
            let group = group.ok_or(ResponseError::UnknownTopicOrPartition)?;
            handle
                .confirm_lead(group)
                .await
                .map_err(|_| ResponseError::NotLeaderOrFollower)
        })
    }

    fn is_internal(&self, topic: &str) -> bool {
        topic == OFFSETS_TOPIC
    }

    fn replication(&self) -> Option<&dyn Replication> {
        Some(self)
    }
}

impl Replication for Cluster {
    // The future yields the acknowledgement's future on purpose: the first
    // is done when the batch is queued, in order; the second when it is
    // acknowledged.
    #[allow(clippy::async_yields_async)]
    fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: i16,
    ) -> SeamFuture<Acknowledgement> {
        let group = self.group_of(topic, partition).map(|(group, _)| group);
        let handle = self.handle.clone();
        let refused =
            |refusal: Refusal| -> Acknowledgement { Box::pin(async move { Err(refusal) }) };
        Box::pin(async move {
            let Some(group) = group else {
                return refused((ResponseError::UnknownTopicOrPartition, None));
            };
            let level = if acks == -1 { Acks::All } else { Acks::Leader };
            match handle.propose(group, batch.to_vec(), level).await {
                Ok(answer) => Box::pin(async move {
                    match answer.await {
                        Ok(appended) => Ok(appended.base_offset),
                        Err(error) => Err(refusal(&error)),
                    }
                }) as Acknowledgement,
                Err(error) => refused(refusal(&error)),
            }
        })
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> SeamFuture<Result<(), Refusal>> {
        let cluster = self.clone();
        let name = name.to_string();
        let factor = replication_factor.unwrap_or_else(|| self.default_replication_factor());
        Box::pin(async move {
            if let Err(error) = validate_topic_name(&name) {
                return Err((
                    ResponseError::InvalidTopicException,
                    Some(error.to_string()),
                ));
            }
            if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
                return Err((
                    ResponseError::InvalidPartitions,
                    Some(format!(
                        "{partitions} partitions: 1 to {PARTITIONS_PER_TOPIC_MAX}"
                    )),
                ));
            }
            if !configs_fit(&configs) {
                let (error, message) = config_misfit();
                return Err((error, Some(message)));
            }
            // Whether it exists is the controller's to say: this node's
            // metadata may be behind it.
            let make = |request| ClusterMessage::CreateTopic {
                request,
                name: name.clone(),
                partitions,
                replication_factor: factor,
                configs: configs.clone(),
            };
            cluster.ask(make).await
        })
    }

    fn create_partitions(&self, name: &str, count: u32) -> SeamFuture<Result<(), Refusal>> {
        let cluster = self.clone();
        let name = name.to_string();
        Box::pin(async move {
            if count > PARTITIONS_PER_TOPIC_MAX {
                return Err((
                    ResponseError::InvalidPartitions,
                    Some(partitions_not_added(&name, 0, count)),
                ));
            }
            // The topic and its count are the controller's to check.
            let make = |request| ClusterMessage::CreatePartitions {
                request,
                name: name.clone(),
                partitions: count,
            };
            cluster.ask(make).await
        })
    }

    fn topic_configs(&self, name: &str) -> Option<Vec<(String, String)>> {
        let state = read(&self.shared.metadata);
        state
            .topics
            .contains_key(name)
            .then(|| state.topic_configs.get(name).cloned().unwrap_or_default())
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<ConfigChange>,
        replace: bool,
    ) -> SeamFuture<Result<(), Refusal>> {
        let cluster = self.clone();
        let name = name.to_string();
        Box::pin(async move {
            let pairs: Vec<(String, String)> = changes
                .iter()
                .map(|change| {
                    (
                        change.name.clone(),
                        change.value.clone().unwrap_or_default(),
                    )
                })
                .collect();
            if !configs_fit(&pairs) {
                let (error, message) = config_misfit();
                return Err((error, Some(message)));
            }
            // The configs they change are the controller's metadata's.
            let make = |request| ClusterMessage::AlterConfigs {
                request,
                name: name.clone(),
                replace,
                changes: changes.clone(),
            };
            cluster.ask(make).await
        })
    }

    fn delete_topic(&self, name: &str) -> SeamFuture<Result<(), Refusal>> {
        let cluster = self.clone();
        let name = name.to_string();
        Box::pin(async move {
            // Whether it exists is the controller's to say (a topic just
            // created through another node may not be applied here yet).
            let make = |request| ClusterMessage::DeleteTopic {
                request,
                name: name.clone(),
            };
            cluster.ask(make).await
        })
    }

    /// Asks the controller for a block, and takes it from this node's
    /// metadata once applied (the last block the metadata hands this node,
    /// which no other node holds).
    fn producer_id_block(&self, floor: u64) -> SeamFuture<Result<(u64, u64), Refusal>> {
        let cluster = self.clone();
        Box::pin(async move {
            let node = cluster.node;
            let make = |request| ClusterMessage::AllocateProducerIds { request, floor };
            cluster.ask(make).await?;
            read(&cluster.shared.metadata)
                .producer_block(node, floor)
                .ok_or((ResponseError::UnknownServerError, None))
        })
    }

    fn default_replication_factor(&self) -> u32 {
        (self.peers.len() as u32).min(3)
    }

    fn registered_nodes(&self) -> usize {
        read(&self.shared.metadata).nodes.len().max(1)
    }

    fn commit_offsets(
        &self,
        group: &str,
        entries: Vec<(String, u32, u64, String)>,
    ) -> SeamFuture<Result<(), Refusal>> {
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        let commits: Vec<(&str, &str, u32, Option<CommittedOffset>)> = entries
            .iter()
            .map(|(topic, partition, offset, metadata)| {
                let committed = CommittedOffset {
                    offset: *offset,
                    metadata: metadata.clone(),
                    commit_timestamp_ms: now,
                };
                (group, topic.as_str(), *partition, Some(committed))
            })
            .collect();
        let batch = offsets_batch(&commits, now);
        let cluster = self.clone();
        Box::pin(async move {
            let batch = batch.map_err(|error| (for_log(&error), Some(error.to_string())))?;
            cluster.append_offsets(batch).await
        })
    }

    fn delete_group_offsets(&self, group: &str) -> SeamFuture<Result<usize, Refusal>> {
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        let keys = read(&self.shared.offsets).keys_of(group);
        let deletions: Vec<(&str, &str, u32, Option<CommittedOffset>)> = keys
            .iter()
            .map(|(topic, partition)| (group, topic.as_str(), *partition, None))
            .collect();
        let batch = (!deletions.is_empty()).then(|| offsets_batch(&deletions, now));
        let cluster = self.clone();
        let count = keys.len();
        Box::pin(async move {
            if let Some(batch) = batch {
                let batch = batch.map_err(|error| (for_log(&error), Some(error.to_string())))?;
                cluster.append_offsets(batch).await?;
            }
            Ok(count)
        })
    }

    fn committed_offsets(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        read(&self.shared.offsets).group(group)
    }

    fn groups_with_offsets(&self) -> Vec<String> {
        read(&self.shared.offsets).groups()
    }

    fn reassign(
        &self,
        topic: &str,
        partition: u32,
        target: Option<Vec<u64>>,
    ) -> SeamFuture<Result<(), Refusal>> {
        let group = self.reassignable_group(topic, partition);
        let cluster = self.clone();
        Box::pin(async move {
            let group = group.ok_or((ResponseError::UnknownTopicOrPartition, None))?;
            let target = target.unwrap_or_default();
            let make = |request| ClusterMessage::Reassign {
                request,
                group,
                target: target.clone(),
            };
            cluster.ask(make).await
        })
    }

    fn quorum(&self) -> Quorum {
        match self.handle.view(METADATA_GROUP) {
            Some(view) => Quorum {
                leader: view.leader,
                epoch: view.term,
                high_watermark: view.high_watermark,
                voters: view.voters,
                observers: view.learners,
            },
            None => Quorum::default(),
        }
    }

    fn reassignments(&self) -> Vec<Reassignment> {
        let metadata = read(&self.shared.metadata);
        let mut moving = Vec::new();
        for (group, target) in &metadata.reassignments {
            let (topic, partition) = match self.partition_of(&metadata, *group) {
                Some(found) => found,
                None => continue,
            };
            let current = match *group {
                METADATA_GROUP => self
                    .handle
                    .view(METADATA_GROUP)
                    .map(|view| view.voters)
                    .unwrap_or_default(),
                _ => metadata.replicas_of(*group).unwrap_or_default(),
            };
            let adding: Vec<u64> = target
                .iter()
                .copied()
                .filter(|id| !current.contains(id))
                .collect();
            let removing: Vec<u64> = current
                .iter()
                .copied()
                .filter(|id| !target.contains(id))
                .collect();
            let mut replicas = target.clone();
            replicas.extend(removing.iter().copied());
            moving.push(Reassignment {
                topic,
                partition,
                replicas,
                adding,
                removing,
            });
        }
        moving
    }
}

/// The name under which the metadata group's voters are reassigned and
/// described, as KRaft's metadata log is named.
pub use weir_kafka::handlers::quorum::METADATA_TOPIC;

impl Cluster {
    /// The group a reassignment names: a partition's, or the metadata
    /// group's as partition 0 of [`METADATA_TOPIC`].
    fn reassignable_group(&self, topic: &str, partition: u32) -> Option<u64> {
        if topic == METADATA_TOPIC {
            return (partition == 0).then_some(METADATA_GROUP);
        }
        self.group_of(topic, partition).map(|(group, _)| group)
    }

    /// The topic and partition of group `group`.
    fn partition_of(&self, metadata: &MetadataState, group: u64) -> Option<(String, u32)> {
        if group == METADATA_GROUP {
            return Some((METADATA_TOPIC.to_string(), 0));
        }
        metadata.topics.iter().find_map(|(name, partitions)| {
            let index = partitions
                .iter()
                .position(|partition| partition.group == group)?;
            Some((name.clone(), index as u32))
        })
    }
}

impl Cluster {
    /// Appends a batch of offsets records to [`OFFSETS_TOPIC`] (this node
    /// must lead it), committed on a majority, and waits until this node
    /// has applied it.
    async fn append_offsets(&self, batch: Vec<u8>) -> Result<(), Refusal> {
        let not_available = || (ResponseError::CoordinatorNotAvailable, None);
        let (group, _) = self.group_of(OFFSETS_TOPIC, 0).ok_or_else(not_available)?;
        let appended = self
            .handle
            .produce(group, batch, Acks::All)
            .await
            .map_err(|error| match error {
                ProduceError::NotLeader { .. } | ProduceError::Lost => {
                    (ResponseError::NotCoordinator, Some(error.to_string()))
                }
                other => refusal(&other),
            })?;
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let applied = self.shared.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if read(&self.shared.offsets).applied_offset() > appended.last_offset {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err((ResponseError::RequestTimedOut, None));
            }
            tokio::select! {
                biased;
                _ = applied => {}
                _ = tokio::time::sleep(ADMIN_RETRY) => {}
            }
        }
    }
}

/// Kafka's answer to a produce the replication layer refused.
fn refusal(error: &ProduceError) -> Refusal {
    let message = Some(error.to_string());
    let code = match error {
        ProduceError::NotLeader { .. } | ProduceError::SequenceAhead(_) | ProduceError::Lost => {
            ResponseError::NotLeaderOrFollower
        }
        ProduceError::InFlight | ProduceError::TimedOut => ResponseError::RequestTimedOut,
        ProduceError::Log(error) => for_log(error),
        ProduceError::Stopped | ProduceError::Storage(_) => ResponseError::KafkaStorageError,
    };
    (code, message)
}

pub use controller::start;

#[cfg(test)]
mod tests {
    use super::messages::Led;
    use super::*;

    fn led(group: u64, term: u64) -> Led {
        Led {
            group,
            term,
            in_sync: vec![1, 2],
        }
    }

    fn leader_of(shared: &Shared, group: u64) -> Option<(u64, u64)> {
        read(&shared.remote_leaders)
            .get(&group)
            .map(|lead| (lead.leader, lead.term))
    }

    /// A later term wins whatever order announcements arrive in, and a
    /// node's announcement drops the groups it no longer names (not those
    /// another node has since announced).
    #[test]
    fn announcements_keep_the_latest_leader_of_each_group() {
        let shared = Shared::default();
        shared.learn_leaders(1, &[led(5, 3), led(6, 3)]);
        shared.learn_leaders(2, &[led(5, 4)]);
        assert_eq!(leader_of(&shared, 5), Some((2, 4)));
        // Node 1's stale announcement of group 5 does not win it back.
        shared.learn_leaders(1, &[led(5, 3), led(6, 3)]);
        assert_eq!(leader_of(&shared, 5), Some((2, 4)));
        assert_eq!(leader_of(&shared, 6), Some((1, 3)));
        // Node 1 no longer leads group 6; node 2 still leads group 5.
        shared.learn_leaders(1, &[]);
        assert_eq!(leader_of(&shared, 6), None);
        assert_eq!(leader_of(&shared, 5), Some((2, 4)));
        shared.learn_leaders(2, &[]);
        assert_eq!(leader_of(&shared, 5), None);
    }
}
