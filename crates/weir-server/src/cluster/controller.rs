//! Starting a cluster node, and its cluster task: applies the committed
//! metadata to the local log and groups, and, on the metadata group's
//! leader, turns the nodes' requests into metadata records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::mpsc;
use weir_io::sync::{lock, write};
use weir_io::{Clock, Storage};
use weir_kafka::handlers::configs::{altered_configs, ConfigChange};
use weir_kafka::handlers::metadata::topic_log_config;
use weir_kafka::handlers::partitions::partitions_not_added;
use weir_kafka::node::off_loop;
use weir_kafka::producer_ids::PRODUCER_ID_BLOCK;
use weir_kafka::shutdown::Shutdown;
use weir_kafka::NodeAddress;
use weir_log::{Broker, HighWatermarkPolicy, LogConfig, Partition, TopicConfig};
use weir_replication::codec::Limits;
use weir_replication::metadata::METADATA_GROUP;
use weir_replication::metadata::{
    configs_fit, record_batch, MetadataLog, MetadataRecord, MetadataState, NodeInfo,
    PartitionAssignment, MAX_REPLICATION_FACTOR,
};
use weir_replication::raft_types::ConfChangeType;
use weir_replication::runner::{self, Acks, GroupView, ReplicasHandle, RunnerConfig};
use weir_replication::transport::Transport;
use weir_replication::{Replicas, ReplicasConfig};

use super::messages::{ClusterMessage, Led};
use super::{config_misfit, Answer, Cluster, ClusterSettings, Halt, Shared, OFFSETS_TOPIC};
use crate::node::StartError;

/// How often the cluster task looks again when nothing woke it (its own
/// registration, a controller that changed).
const PERIOD: Duration = Duration::from_millis(250);
/// How long the controller waits for one of its records to be applied.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many rounds of asking (one a [`PERIOD`]) a node with no cluster
/// state waits between two notes that it still waits.
const WAITING_NOTE_ROUNDS: u64 = 40;
/// How long a node waits before proposing a group's membership change
/// again.
const MEMBERSHIP_RETRY: Duration = Duration::from_secs(1);
/// How often a node tells its peers the groups it leads when that has not
/// changed (for a peer that missed it, or started since).
const ANNOUNCE_PERIOD: Duration = Duration::from_secs(1);
/// Threads syncing the replication's files at once (see
/// `ReplicasConfig::sync_threads`).
const SYNC_THREADS: usize = 8;

/// Starts this node's replication (the metadata group, the transport and
/// the runner) and its cluster task; `log` is the node's topics (opened
/// with [`HighWatermarkPolicy::SetByOwner`]), `storage` the directory that
/// holds them, where the metadata group lives in `cluster/metadata`.
pub async fn start(
    settings: &ClusterSettings,
    log: Arc<Broker>,
    storage: &dyn Storage,
    clock: Arc<dyn Clock>,
    own_kafka: NodeAddress,
    resp_address: String,
    shutdown: Shutdown,
) -> Result<Cluster, StartError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        StartError::Log(format!("cluster: {what}: {error}"))
    };
    let cluster_dir = storage
        .open_or_create_dir("cluster")
        .map_err(|error| failed("opening cluster", &error))?;
    let dir = cluster_dir
        .open_or_create_dir("metadata")
        .map_err(|error| failed("opening cluster/metadata", &error))?;
    let config = LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        retention_ms: None,
        ..LogConfig::default()
    };
    let (partition, _) = Partition::open(Arc::clone(&dir), Arc::clone(&clock), config)
        .map_err(|error| failed("opening the metadata log", &error))?;
    let partition = Arc::new(partition);
    let fresh = claim_data_directory(
        cluster_dir.as_ref(),
        dir.as_ref(),
        &partition,
        settings.node,
    )
    .map_err(|error| failed("checking the data directory", &error))?;
    let peers: Vec<u64> = settings.peers.keys().copied().collect();
    let mut replicas_config = ReplicasConfig::new(settings.node, settings.node);
    replicas_config.election_ticks = settings.election_ticks;
    replicas_config.scrub_bytes_per_tick = settings.scrub_bytes_per_tick;
    // A turn's syncs (one or two files per group written) run together.
    replicas_config.sync_threads = SYNC_THREADS;
    let mut replicas = Replicas::new(replicas_config, &peers);
    // A joining node starts the metadata group empty: the controller makes
    // it a learner, and the log tells it the members.
    let first_voters = if settings.join {
        Vec::new()
    } else {
        peers.clone()
    };
    // A node with no cluster state opens the metadata group only once its
    // peers have said that they never knew it (`Task::check_not_lost`).
    let opening = if fresh {
        Some(Opening {
            voters: first_voters,
            cluster_dir,
            dir,
        })
    } else {
        replicas
            .open_group(
                METADATA_GROUP,
                first_voters,
                Arc::clone(&dir),
                Arc::clone(&partition),
            )
            .map_err(|error| failed("opening the metadata group", &error))?;
        None
    };
    let mut metadata = MetadataLog::new();
    metadata
        .catch_up(&partition)
        .map_err(|error| failed("reading the metadata log", &error))?;
    let runner_config = RunnerConfig {
        tick: settings.tick,
        ..RunnerConfig::default()
    };
    let handle = spawn_runner(settings, replicas, runner_config).await?;
    let applications = handle
        .applications()
        .expect("a new runner's application messages");
    let (local_tx, local_rx) = mpsc::channel(256);
    let shared = Arc::new(Shared::default());
    *write(&shared.metadata) = metadata.state().clone();
    let cluster = Cluster {
        node: settings.node,
        peers: Arc::new(peers),
        own_kafka: own_kafka.clone(),
        handle: handle.clone(),
        shared,
        local: local_tx,
        clock,
    };
    let task = Task {
        cluster: cluster.clone(),
        log,
        metadata,
        metadata_partition: partition,
        opened: BTreeMap::new(),
        registration: MetadataRecord::Node {
            id: settings.node,
            kafka_address: format!("{}:{}", own_kafka.host, own_kafka.port),
            resp_address,
            cluster_address: settings
                .peers
                .get(&settings.node)
                .map(ToString::to_string)
                .unwrap_or_default(),
        },
        materialized: None,
        retention_check_interval: settings.retention_check_interval,
        peers_added: settings.peers.keys().copied().collect(),
        proposed_membership: BTreeMap::new(),
        registered_at: None,
        opening,
        announced: (Vec::new(), None),
    };
    tokio::spawn(task.run(applications, local_rx, shutdown));
    Ok(cluster)
}

/// Binds the cluster listener and starts the transport and the runner: on
/// a thread of their own (so that syncs never stall the front-ends), or,
/// under the simulator, as tasks.
async fn spawn_runner(
    settings: &ClusterSettings,
    replicas: Replicas,
    config: RunnerConfig,
) -> Result<ReplicasHandle, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: settings.listen.clone(),
        source,
    };
    let (node, peers) = (settings.node, settings.peers.clone());
    #[cfg(madsim)]
    {
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(bind_error)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let transport = Transport::start(node, listener, &peers, inbound_tx, Limits::default());
        let (handle, _task) = runner::spawn(replicas, transport, inbound_rx, config);
        Ok(handle)
    }
    #[cfg(not(madsim))]
    {
        let listener = std::net::TcpListener::bind(&settings.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        runner::spawn_on_thread("weir-raft", async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "the cluster listener cannot be used");
                    return;
                }
            };
            let (inbound_tx, inbound_rx) = mpsc::channel(1024);
            let transport = Transport::start(node, listener, &peers, inbound_tx, Limits::default());
            let (handle, task) = runner::spawn(replicas, transport.clone(), inbound_rx, config);
            let _ = handle_tx.send(handle);
            let _ = task.await;
            transport.stop();
            // After a storage failure, which the runner has logged, or at
            // shutdown.
            tracing::info!("the replication runner stopped");
        })
        .map_err(bind_error)?;
        handle_rx
            .await
            .map_err(|_| StartError::Log("cluster: the replication runner did not start".into()))
    }
}

/// The file in a partition's directory naming the group its Raft log
/// belongs to.
const GROUP_MARKER: &str = "cluster-group";

/// A second copy of [`GROUP_MARKER`], in a file of its own (other blocks
/// of the disk): a copy that rots, or is lost, is written again from the
/// other, where one copy alone would close the replica for good.
const GROUP_MARKER_COPY: &str = "cluster-group.copy";

/// The file in `cluster/` naming the node whose cluster state the data
/// directory holds; written before the node first takes part.
const NODE_MARKER: &str = "node";

/// Checks that the data directory's cluster state (in `cluster_dir`,
/// the metadata log in `metadata_dir`) is node `node`'s, as its marker
/// says; true when there is none (an empty metadata log and no Raft side
/// file: the node never voted nor acknowledged, or lost its disk), and the
/// node must ask its peers before it takes part, whatever the marker says
/// (one written just before a crash, or left by a partial wipe). State
/// without a marker (from a version before the marker) gets one; so does
/// state whose marker reads corrupt, which only the id check needs.
fn claim_data_directory(
    cluster_dir: &dyn Storage,
    metadata_dir: &dyn Storage,
    metadata: &Partition,
    node: u64,
) -> std::io::Result<bool> {
    let marker = weir_io::read_whole_file_agreed(cluster_dir, NODE_MARKER)?;
    let owner = marker.as_deref().and_then(checked_id);
    if marker.is_some() && owner.is_none() {
        tracing::warn!("cluster/{NODE_MARKER} is corrupt: ignored (and written again)");
    }
    if let Some(owner) = owner.filter(|owner| *owner != node) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the data directory holds node {owner}'s cluster state, not node {node}'s \
                 (start it with --node-id {owner})"
            ),
        ));
    }
    let empty =
        metadata.log_end_offset() == 0 && !metadata_dir.exists(weir_replication::SIDE_FILE)?;
    if !empty && owner.is_none() {
        weir_io::write_file_atomically(cluster_dir, NODE_MARKER, &encode_id_marker(node))?;
    }
    Ok(empty)
}

/// How many of its peers a node with no cluster state must hear say they
/// never knew it, in a cluster of `nodes` voters, before it takes part:
/// enough that every majority holds one of them beside the node itself
/// (which, if it lost its disk, may have been in the majority of any
/// commit). None with no peers: a lone node that lost its disk has nothing
/// left to protect.
fn answers_needed(nodes: usize) -> usize {
    let majority = nodes / 2 + 1;
    (nodes - majority + 1).min(nodes.saturating_sub(1))
}

/// Says that a node with no cluster state still waits for `needed`
/// answers, and from whom.
fn note_waiting(peers: &[u64], answered: &BTreeSet<u64>, needed: usize) {
    let silent: Vec<u64> = peers
        .iter()
        .copied()
        .filter(|peer| !answered.contains(peer))
        .collect();
    tracing::warn!(
        needed,
        answered = answered.len(),
        ?silent,
        "still waiting for peers to say whether they knew this node (a new cluster's nodes \
         must all be started)"
    );
}

/// What a node with no cluster state opens once its peers have answered.
struct Opening {
    /// The metadata group's first voters.
    voters: Vec<u64>,
    /// Where the node marker goes.
    cluster_dir: Arc<dyn Storage>,
    /// The metadata group's directory.
    dir: Arc<dyn Storage>,
}

/// What opening a replica did.
enum Opened {
    Yes,
    Failed,
    /// The partition's files belong to another group.
    Stale,
}

/// Whether the partition directory `dir` may hold group `group`'s log:
/// it names that group, or it is new (then it is made to name it, durably,
/// before the group's log is created). A directory that names another
/// group, or holds a Raft log without naming one, is an earlier topic's,
/// and the caller removes it: so the marker is read by the agreement rule
/// and checked against its CRC, and one that cannot be read or fails its
/// CRC is an error (the replica stays closed), never a verdict that the
/// files are another group's: a flipped read here removed a replica's
/// acknowledged records and its vote.
fn claim_for_group(dir: &dyn Storage, group: u64) -> std::io::Result<bool> {
    match marked_group(dir)? {
        Some(named) => Ok(named == group),
        None if dir.exists(weir_replication::SIDE_FILE)? => Ok(false),
        None => {
            let marker = encode_id_marker(group);
            weir_io::write_file_atomically(dir, GROUP_MARKER, &marker)?;
            weir_io::write_file_atomically(dir, GROUP_MARKER_COPY, &marker)?;
            Ok(true)
        }
    }
}

/// The group the two markers of `dir` name (`None`: neither exists),
/// each read by the agreement rule and checked against its CRC. A copy
/// that is missing (a directory from before the copy, or a crash between
/// the two writes) or fails its CRC is written again from the other; two
/// valid copies that differ, or no valid one, are an error.
fn marked_group(dir: &dyn Storage) -> std::io::Result<Option<u64>> {
    let read = |name| -> std::io::Result<Option<std::io::Result<u64>>> {
        let bytes = weir_io::read_whole_file_agreed(dir, name)?;
        Ok(bytes.map(|bytes| decode_group_marker(&bytes)))
    };
    match (read(GROUP_MARKER)?, read(GROUP_MARKER_COPY)?) {
        (None, None) => Ok(None),
        (Some(Ok(first)), Some(Ok(copy))) if first == copy => Ok(Some(first)),
        (Some(Ok(first)), Some(Ok(copy))) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{GROUP_MARKER} names group {first}, its copy {copy}: not removing the partition's files"),
        )),
        (Some(Ok(group)), _) => restore_marker(dir, GROUP_MARKER_COPY, group),
        (_, Some(Ok(group))) => restore_marker(dir, GROUP_MARKER, group),
        (Some(Err(error)), _) | (None, Some(Err(error))) => Err(error),
    }
}

/// Writes the marker `name` again, naming `group` as its valid copy does.
fn restore_marker(dir: &dyn Storage, name: &str, group: u64) -> std::io::Result<Option<u64>> {
    tracing::warn!(
        group,
        marker = name,
        "a group marker was missing or corrupt: written again from its copy"
    );
    weir_io::write_file_atomically(dir, name, &encode_id_marker(group))?;
    Ok(Some(group))
}

/// `u64 id | u32 CRC-32C of those 8 bytes`, little-endian: a group
/// marker, the node marker.
fn encode_id_marker(id: u64) -> [u8; 12] {
    let mut bytes = [0; 12];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    let crc = weir_log::batch::crc32c(&bytes[..8]);
    bytes[8..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The id a 12-byte marker names, if its CRC matches.
fn checked_id(bytes: &[u8]) -> Option<u64> {
    let (id, crc) = (bytes.get(..8)?, bytes.get(8..)?);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    (crc == weir_log::batch::crc32c(id))
        .then(|| u64::from_le_bytes(id.try_into().expect("eight bytes")))
}

/// The group a marker names. Markers of 8 bytes (no CRC) were written by
/// versions before the CRC and are taken as they are.
fn decode_group_marker(bytes: &[u8]) -> std::io::Result<u64> {
    let corrupt = |reason: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{GROUP_MARKER} is corrupt ({reason}): not removing the partition's files"),
        )
    };
    match bytes.len() {
        8 => Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes"))),
        12 => checked_id(bytes).ok_or_else(|| corrupt("checksum mismatch")),
        length => Err(corrupt(&format!("{length} bytes"))),
    }
}

/// What making a topic of the local log match the metadata came to.
enum Made {
    /// It has the metadata's partitions.
    Ready,
    /// It could not be made (or was removed, to be made again).
    Failed,
    /// It has more partitions than this node's metadata so far.
    Ahead,
    /// It is a later topic of the same name than this node's metadata's
    /// so far: none of its partitions is opened.
    Later,
}

/// Whether node `node` is to hold a replica of group `group`: one of its
/// replicas, or of the replicas it is being moved to.
fn hosts(state: &MetadataState, group: u64, replicas: &[u64], node: u64) -> bool {
    replicas.contains(&node)
        || state
            .reassignments
            .get(&group)
            .is_some_and(|target| target.contains(&node))
}

/// A topic's record with the configs it is created with, if the metadata
/// log can carry them ([`configs_fit`]; the asking node checked them
/// against its settings).
fn with_configs(
    mut record: MetadataRecord,
    configs: &[(String, String)],
) -> Result<MetadataRecord, (ResponseError, String)> {
    if !configs_fit(configs) {
        return Err(config_misfit());
    }
    if let MetadataRecord::Topic { configs: slot, .. } = &mut record {
        *slot = configs.to_vec();
    }
    Ok(record)
}

/// The controller's answer to a reassignment request: the record, nothing
/// when the metadata already says so, or Kafka's error.
/// What the controller makes of a request: the record to propose, if any,
/// or a refusal (Kafka's error and why).
type Planned = Result<Option<MetadataRecord>, (ResponseError, String)>;

/// The block of producer ids to hand `node`, which holds none from
/// `floor` up: the next [`PRODUCER_ID_BLOCK`] ids (as KIP-730's
/// controller hands brokers blocks of them); nothing when the metadata
/// already has one for it (a request sent again).
fn plan_producer_ids(state: &MetadataState, node: u64, floor: u64) -> Planned {
    if state.producer_block(node, floor).is_some() {
        return Ok(None);
    }
    state
        .plan_producer_ids(node, floor, PRODUCER_ID_BLOCK.unsigned_abs())
        .map(Some)
        .map_err(|error| (ResponseError::UnknownServerError, error.to_string()))
}

/// The record that grows topic `name` to `count` partitions; Kafka's
/// errors for an unknown topic or a count it cannot grow to (as many as it
/// has included: a request whose first answer was lost is refused so, as
/// Kafka refuses a retried one).
fn plan_partitions(state: &MetadataState, name: &str, count: u32, down: &BTreeSet<u64>) -> Planned {
    let Some(existing) = state.topics.get(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name}"),
        ));
    };
    if count as usize <= existing.len() {
        return Err((
            ResponseError::InvalidPartitions,
            partitions_not_added(name, existing.len(), count),
        ));
    }
    state
        .plan_partitions(name, count, down)
        .map(Some)
        .map_err(|error| (ResponseError::InvalidPartitions, error.to_string()))
}

/// The record that gives topic `name` the configs `changes` make of those
/// the metadata has (of none, when `replace`), checked against this
/// node's settings as the asker checked them against its own; nothing
/// when they are the configs it has already (a request sent again).
fn plan_configs(
    state: &MetadataState,
    defaults: &LogConfig,
    name: &str,
    changes: &[ConfigChange],
    replace: bool,
) -> Planned {
    if !state.topics.contains_key(name) {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name}"),
        ));
    }
    let current = state.topic_configs.get(name).map_or(&[][..], Vec::as_slice);
    let configs = altered_configs(current, changes, replace)?;
    topic_log_config(defaults, &configs)
        .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
    if !configs_fit(&configs) {
        return Err(config_misfit());
    }
    let mut sorted = current.to_vec();
    sorted.sort();
    if sorted == configs {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::TopicConfigs {
        name: name.to_string(),
        configs,
    }))
}

fn plan_reassignment(state: &MetadataState, group: u64, target: &[u64]) -> Planned {
    let under_way = state.reassignments.get(&group);
    if target.is_empty() {
        return match under_way {
            Some(_) => Ok(Some(MetadataRecord::Reassignment {
                group,
                target: Vec::new(),
            })),
            None => Err((
                ResponseError::NoReassignmentInProgress,
                "no reassignment of this partition is under way".into(),
            )),
        };
    }
    if under_way.map(Vec::as_slice) == Some(target) {
        return Ok(None);
    }
    if under_way.is_some() {
        return Err((
            ResponseError::ReassignmentInProgress,
            "another reassignment of this partition is under way: cancel it first".into(),
        ));
    }
    let mut unique = target.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != target.len() || target.len() > MAX_REPLICATION_FACTOR as usize {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("replicas {target:?} repeat a node or are more than {MAX_REPLICATION_FACTOR}"),
        ));
    }
    if let Some(unknown) = target.iter().find(|node| !state.nodes.contains_key(node)) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("node {unknown} has not joined the cluster"),
        ));
    }
    Ok(Some(MetadataRecord::Reassignment {
        group,
        target: target.to_vec(),
    }))
}

/// What a group's leader does next to move the group to `target`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Propose this change of members.
    Change(Vec<(ConfChangeType, u64)>),
    /// Hand the lead to this voter (the leader is to go).
    HandOver(u64),
    /// The voters are the target: tell the controller.
    Report,
    /// Wait for the new replicas to catch up.
    Wait,
}

/// The next step of a reassignment, on the group's leader `node` (not in
/// joint consensus): learners first, then one joint change once they
/// hold every committed entry, which makes them voters and applies
/// `removal` to the voters that go (removed, or made learners).
fn next_membership_step(
    view: &GroupView,
    target: &[u64],
    node: u64,
    removal: ConfChangeType,
) -> Step {
    let mut wanted = target.to_vec();
    wanted.sort_unstable();
    if view.voters == wanted {
        return Step::Report;
    }
    let adding: Vec<u64> = wanted
        .iter()
        .copied()
        .filter(|id| !view.voters.contains(id))
        .collect();
    let removing: Vec<u64> = view
        .voters
        .iter()
        .copied()
        .filter(|id| !wanted.contains(id))
        .collect();
    let not_learning: Vec<(ConfChangeType, u64)> = adding
        .iter()
        .filter(|id| !view.learners.contains(id))
        .map(|id| (ConfChangeType::AddLearnerNode, *id))
        .collect();
    if !not_learning.is_empty() {
        return Step::Change(not_learning);
    }
    if !adding.iter().all(|id| view.caught_up.contains(id)) {
        return Step::Wait;
    }
    if removing.contains(&node) {
        let staying = view
            .voters
            .iter()
            .copied()
            .find(|id| *id != node && wanted.contains(id) && view.in_sync.contains(id));
        if let Some(to) = staying {
            return Step::HandOver(to);
        }
    }
    let changes = adding
        .iter()
        .map(|id| (ConfChangeType::AddNode, *id))
        .chain(removing.iter().map(|id| (removal, *id)))
        .collect();
    Step::Change(changes)
}

/// The cluster task of one node.
struct Task {
    cluster: Cluster,
    log: Arc<Broker>,
    /// How often retention runs on the groups' partitions.
    retention_check_interval: Duration,
    metadata: MetadataLog,
    metadata_partition: Arc<Partition>,
    /// The groups opened here, and their topics.
    opened: BTreeMap<u64, String>,
    /// This node's record, until the metadata has it.
    registration: MetadataRecord,
    /// The metadata offset last applied to the local log and groups.
    materialized: Option<u64>,
    /// The nodes the transport knows the addresses of.
    peers_added: BTreeSet<u64>,
    /// When this node last proposed a change of each group's members.
    proposed_membership: BTreeMap<u64, tokio::time::Instant>,
    /// When this node last asked the controller to register it.
    registered_at: Option<tokio::time::Instant>,
    /// The metadata group to open once the peers have answered, when the
    /// node started with no cluster state.
    opening: Option<Opening>,
    /// The groups this node last told its peers it leads, and when it is
    /// to tell them again.
    announced: (Vec<Led>, Option<tokio::time::Instant>),
}

impl Task {
    async fn run(
        mut self,
        mut applications: mpsc::Receiver<(u64, Vec<u8>)>,
        mut local: mpsc::Receiver<ClusterMessage>,
        shutdown: Shutdown,
    ) {
        if let Some(opening) = self.opening.take() {
            match self.check_not_lost(&mut applications, &shutdown).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(reason) => return self.halt(Halt::Refused(reason)),
            }
            if let Err(reason) = self.open_metadata_group(opening).await {
                return self.halt(Halt::StorageFailed(reason));
            }
        }
        let handle = self.cluster.handle.clone();
        let period = self.retention_check_interval;
        let mut retention_at = tokio::time::Instant::now() + period;
        loop {
            if tokio::time::Instant::now() >= retention_at {
                retention_at += period;
                handle.apply_retention().await;
            }
            let changed = handle.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.catch_up();
            self.learn_peers().await;
            self.materialize().await;
            self.catch_up_offsets();
            self.register().await;
            self.ensure_offsets_topic().await;
            self.drive_reassignments().await;
            self.announce_leadership().await;
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                message = local.recv() => match message {
                    Some(message) => self.handle(self.cluster.node, message).await,
                    None => break,
                },
                received = applications.recv() => match received {
                    Some((from, bytes)) => match ClusterMessage::decode(&bytes) {
                        Ok(message) => self.handle(from, message).await,
                        Err(error) => tracing::warn!(from, %error, "a peer sent a bad cluster message"),
                    },
                    None => break,
                },
                _ = changed => {}
                _ = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    /// A node that starts with no cluster state may be new, or may have
    /// lost its disk (or been started on an empty directory by mistake).
    /// Having lost it, it may have been in the majority that committed a
    /// record, or voted in a term: taking part again with nothing, it could
    /// elect a leader without that record, or vote twice. So it asks its
    /// peers whether their metadata log (committed or not) registers it,
    /// until [`answers_needed`] of them say no (then any such majority
    /// holds one of them), and refuses to take part if one says yes. Its
    /// own registration comes after it opens its groups, so a node that
    /// never got that far was never known; not covered: one that lost its
    /// disk between its first vote and its registration reaching its
    /// peers, seconds after its very first start. `Ok(false)`: shut down
    /// meanwhile.
    async fn check_not_lost(
        &self,
        applications: &mut mpsc::Receiver<(u64, Vec<u8>)>,
        shutdown: &Shutdown,
    ) -> Result<bool, String> {
        let node = self.cluster.node;
        let peers: Vec<u64> = self
            .cluster
            .peers
            .iter()
            .copied()
            .filter(|peer| *peer != node)
            .collect();
        let needed = answers_needed(self.cluster.peers.len());
        let mut answered = BTreeSet::new();
        tracing::info!(
            needed,
            "no cluster state here: asking the peers whether they knew this node"
        );
        let mut rounds = 0u64;
        while answered.len() < needed {
            rounds += 1;
            if rounds.is_multiple_of(WAITING_NOTE_ROUNDS) {
                note_waiting(&peers, &answered, needed);
            }
            for peer in peers.iter().filter(|peer| !answered.contains(*peer)) {
                self.cluster
                    .handle
                    .send(*peer, ClusterMessage::AskKnown.encode())
                    .await;
            }
            let wait = tokio::time::sleep(PERIOD);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.requested() => return Ok(false),
                    received = applications.recv() => {
                        let Some((from, bytes)) = received else { return Ok(false) };
                        self.while_asking(from, &bytes, &peers, &mut answered).await?;
                    }
                    _ = &mut wait => break,
                }
            }
        }
        tracing::info!(
            answered = answered.len(),
            "no peer knew this node: it takes part"
        );
        Ok(true)
    }

    /// A message that reaches a node asking its peers: a peer's answer,
    /// counted in `answered` (an error if the peer knew this node), or a
    /// peer's own question, answered no (this node has no metadata).
    /// Requests wait: their senders ask again.
    async fn while_asking(
        &self,
        from: u64,
        bytes: &[u8],
        peers: &[u64],
        answered: &mut BTreeSet<u64>,
    ) -> Result<(), String> {
        let node = self.cluster.node;
        match ClusterMessage::decode(bytes) {
            Ok(ClusterMessage::AskKnown) => {
                let answer = ClusterMessage::Known { known: false };
                self.cluster.handle.send(from, answer.encode()).await;
            }
            Ok(ClusterMessage::Known { known: true }) => {
                return Err(format!(
                    "node {node} starts with no cluster state, but node {from} knows it as a \
                     member: its disk was lost, or this is not its data directory. Taking part \
                     with nothing, it could help lose records it acknowledged. Restore its data \
                     directory, or start it under a new --node-id with --join and move its \
                     replicas there"
                ));
            }
            Ok(ClusterMessage::Known { known: false }) if peers.contains(&from) => {
                answered.insert(from);
            }
            _ => {}
        }
        Ok(())
    }

    /// Marks the data directory as this node's and opens the metadata
    /// group (after [`Task::check_not_lost`]).
    async fn open_metadata_group(&self, opening: Opening) -> Result<(), String> {
        let node = self.cluster.node;
        let marker = encode_id_marker(node);
        let dir = Arc::clone(&opening.cluster_dir);
        off_loop(move || weir_io::write_file_atomically(dir.as_ref(), NODE_MARKER, &marker))
            .await
            .map_err(|error| format!("writing cluster/{NODE_MARKER}: {error}"))?;
        self.cluster
            .handle
            .open_group(
                METADATA_GROUP,
                opening.voters,
                opening.dir,
                Arc::clone(&self.metadata_partition),
            )
            .await
            .map_err(|error| format!("opening the metadata group: {error}"))
    }

    /// Records why this node stops before taking part (the server shuts
    /// down).
    fn halt(&self, reason: Halt) {
        tracing::error!(%reason, "this node stops before it takes part in the cluster");
        *lock(&self.cluster.shared.refused) = Some(reason);
        self.cluster.shared.refusal.notify_waiters();
    }

    /// Whether this node's metadata log, committed or not, registers
    /// `node` (a read that fails says yes: the asker then waits or
    /// refuses, never takes part wrongly).
    fn knows(&self, node: u64) -> bool {
        self.metadata.state().nodes.contains_key(&node)
            || self
                .metadata
                .tail_registers(&self.metadata_partition, node)
                .unwrap_or(true)
    }

    /// Applies the metadata committed since the last call.
    fn catch_up(&mut self) {
        match self.metadata.catch_up(&self.metadata_partition) {
            Ok(0) => {}
            Ok(_) => {
                *write(&self.cluster.shared.metadata) = self.metadata.state().clone();
                self.cluster
                    .shared
                    .applied_offset
                    .store(self.metadata.applied_offset(), Ordering::Release);
                self.cluster.shared.applied.notify_waiters();
            }
            Err(error) => {
                tracing::error!(%error, "the metadata log cannot be applied");
            }
        }
    }

    /// Applies the committed offsets records since the last call, when
    /// this node replicates the offsets partition.
    fn catch_up_offsets(&mut self) {
        let Some(assignment) = self
            .metadata
            .state()
            .topics
            .get(OFFSETS_TOPIC)
            .and_then(|partitions| partitions.first())
        else {
            return;
        };
        if !self.opened.contains_key(&assignment.group) {
            return;
        }
        let Ok(partition) = self.log.partition(OFFSETS_TOPIC, 0) else {
            return;
        };
        let applied = write(&self.cluster.shared.offsets).catch_up(&partition);
        match applied {
            Ok(0) => {}
            Ok(_) => self.cluster.shared.applied.notify_waiters(),
            Err(error) => tracing::error!(%error, "the committed offsets cannot be applied"),
        }
    }

    /// The controller creates the offsets topic once enough nodes have
    /// registered for its replicas.
    async fn ensure_offsets_topic(&mut self) {
        let state = self.metadata.state();
        if state.topics.contains_key(OFFSETS_TOPIC) || !self.is_controller() {
            return;
        }
        let factor = (self.cluster.peers.len() as u32).min(3);
        if (state.nodes.len() as u32) < factor {
            return;
        }
        let down = self.cluster.handle.down_peers();
        match state.plan_topic(OFFSETS_TOPIC, 1, factor, &down) {
            Ok(record) => {
                self.propose(record).await;
            }
            Err(error) => tracing::warn!(%error, "cannot plan the offsets topic"),
        }
    }

    fn is_controller(&self) -> bool {
        let view = self.cluster.handle.view(METADATA_GROUP);
        view.and_then(|view| view.leader) == Some(self.cluster.node)
    }

    fn controller(&self) -> Option<u64> {
        self.cluster
            .handle
            .view(METADATA_GROUP)
            .and_then(|view| view.leader)
    }

    /// Asks the controller to record this node's addresses, until the
    /// metadata has them and this node is a member of the metadata group;
    /// at most once a [`PERIOD`] (a request that wakes its receiver must
    /// not feed a storm between two nodes that each take the other for
    /// the controller).
    async fn register(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .registered_at
            .is_some_and(|last| now.duration_since(last) < PERIOD)
        {
            return;
        }
        let MetadataRecord::Node {
            id,
            kafka_address,
            resp_address,
            cluster_address,
        } = &self.registration
        else {
            return;
        };
        let wanted = NodeInfo {
            kafka_address: kafka_address.clone(),
            resp_address: resp_address.clone(),
            cluster_address: cluster_address.clone(),
        };
        let member = self
            .cluster
            .handle
            .view(METADATA_GROUP)
            .is_some_and(|view| view.voters.contains(id) || view.learners.contains(id));
        if member && self.metadata.state().nodes.get(id) == Some(&wanted) {
            return;
        }
        tracing::debug!(member, "registering with the controller");
        let message = ClusterMessage::Register {
            node: *id,
            kafka_address: wanted.kafka_address,
            resp_address: wanted.resp_address,
            cluster_address: wanted.cluster_address,
        };
        self.registered_at = Some(now);
        self.handle(self.cluster.node, message).await;
    }

    /// A request from `from` (this node's own included), or an answer.
    async fn handle(&mut self, from: u64, message: ClusterMessage) {
        match message {
            ClusterMessage::AskKnown => {
                let answer = ClusterMessage::Known {
                    known: self.knows(from),
                };
                self.cluster.handle.send(from, answer.encode()).await;
                return;
            }
            // Late answers to a question this node no longer asks.
            ClusterMessage::Known { .. } => return,
            ClusterMessage::Leading { groups } => {
                if from != self.cluster.node {
                    self.cluster.shared.learn_leaders(from, &groups);
                }
                return;
            }
            _ => {}
        }
        let answered = match &message {
            ClusterMessage::Refused {
                request,
                code,
                message,
            } => {
                let error = ResponseError::try_from_code(*code)
                    .unwrap_or(ResponseError::UnknownServerError);
                Some((*request, Answer::Refused((error, Some(message.clone())))))
            }
            ClusterMessage::Done { request, offset } => Some((*request, Answer::Done(*offset))),
            _ => None,
        };
        if let Some((request, answer)) = answered {
            let waiting = lock(&self.cluster.shared.pending).remove(&request);
            if let Some(waiting) = waiting {
                let _ = waiting.send(answer);
            }
            return;
        }
        if self.is_controller() {
            self.decide(from, message).await;
        } else if from == self.cluster.node {
            // Forwarded to the controller. A node that knows of none (a
            // joining node before the metadata reaches it) sends it to every
            // peer: the controller among them takes it, the others drop it.
            // The asker sends it again until its metadata shows it done.
            let to: Vec<u64> = match self.controller() {
                Some(controller) => vec![controller],
                None => self
                    .cluster
                    .peers
                    .iter()
                    .copied()
                    .filter(|peer| *peer != from)
                    .collect(),
            };
            for peer in to {
                self.cluster.handle.send(peer, message.encode()).await;
            }
        }
        // A peer's request reaching a node that no longer leads is dropped:
        // the peer sends it again to the leader it learns of.
    }

    /// The controller's decision on a request: the record that makes it,
    /// proposed and applied before the next request is looked at; nothing
    /// when the metadata already says so; a refusal when it cannot be.
    async fn decide(&mut self, from: u64, message: ClusterMessage) {
        if !self.controller_caught_up() {
            // Its answers would come from metadata older than what the
            // cluster committed: the asker sends the request again.
            return;
        }
        let state = self.metadata.state();
        let (request, outcome) = match &message {
            ClusterMessage::Register {
                node,
                kafka_address,
                resp_address,
                cluster_address,
            } => {
                if *node != from {
                    return;
                }
                self.admit_to_metadata(*node).await;
                let state = self.metadata.state();
                let record = MetadataRecord::Node {
                    id: *node,
                    kafka_address: kafka_address.clone(),
                    resp_address: resp_address.clone(),
                    cluster_address: cluster_address.clone(),
                };
                let known = state.nodes.get(node).is_some_and(|info| {
                    info.kafka_address == *kafka_address
                        && info.resp_address == *resp_address
                        && info.cluster_address == *cluster_address
                });
                (None, Ok((!known).then_some(record)))
            }
            ClusterMessage::Reassign {
                request,
                group,
                target,
            } => (Some(*request), plan_reassignment(state, *group, target)),
            ClusterMessage::Reassigned { group, voters } => {
                let done = state.reassignments.get(group) == Some(voters);
                let record = MetadataRecord::Reassigned {
                    group: *group,
                    replicas: voters.clone(),
                };
                (None, Ok(done.then_some(record)))
            }
            ClusterMessage::CreateTopic {
                request,
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let planned = if state.topics.contains_key(name) {
                    Err((
                        ResponseError::TopicAlreadyExists,
                        format!("topic {name} already exists"),
                    ))
                } else {
                    state
                        .plan_topic(
                            name,
                            *partitions,
                            *replication_factor,
                            &self.cluster.handle.down_peers(),
                        )
                        .map_err(|error| {
                            (ResponseError::InvalidReplicationFactor, error.to_string())
                        })
                        .and_then(|record| with_configs(record, configs))
                        .map(Some)
                };
                (Some(*request), planned)
            }
            ClusterMessage::CreatePartitions {
                request,
                name,
                partitions,
            } => {
                let down = self.cluster.handle.down_peers();
                (
                    Some(*request),
                    plan_partitions(state, name, *partitions, &down),
                )
            }
            ClusterMessage::AlterConfigs {
                request,
                name,
                replace,
                changes,
            } => {
                let defaults = self.log.default_log_config();
                let planned = plan_configs(state, defaults, name, changes, *replace);
                (Some(*request), planned)
            }
            ClusterMessage::AllocateProducerIds { request, floor } => {
                (Some(*request), plan_producer_ids(state, from, *floor))
            }
            ClusterMessage::DeleteTopic { request, name } => {
                let planned = if state.topics.contains_key(name) {
                    Ok(Some(MetadataRecord::TopicDeleted { name: name.clone() }))
                } else {
                    Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {name}"),
                    ))
                };
                (Some(*request), planned)
            }
            ClusterMessage::Refused { .. }
            | ClusterMessage::Done { .. }
            | ClusterMessage::AskKnown
            | ClusterMessage::Leading { .. }
            | ClusterMessage::Known { .. } => unreachable!("answers are handled before"),
        };
        let answer = match outcome {
            Ok(Some(record)) => match self.propose(record).await {
                Some(offset) => Ok(offset),
                None => return,
            },
            Ok(None) => Ok(self.metadata.applied_offset()),
            Err(refusal) => Err(refusal),
        };
        let Some(request) = request else { return };
        let answer = match answer {
            Ok(offset) => ClusterMessage::Done { request, offset },
            Err((error, message)) => ClusterMessage::Refused {
                request,
                code: error.code(),
                message,
            },
        };
        if from == self.cluster.node {
            Box::pin(self.handle(from, answer)).await;
        } else {
            self.cluster.handle.send(from, answer.encode()).await;
        }
    }

    /// Whether this node, the controller, has applied every metadata
    /// record committed before its term: a new leader's state may lack
    /// records an earlier one committed until it commits one of its own
    /// term and applies up to its high watermark.
    fn controller_caught_up(&self) -> bool {
        self.cluster
            .handle
            .view(METADATA_GROUP)
            .is_some_and(|view| {
                view.commit_term == view.term
                    && self.metadata.applied_offset() >= view.high_watermark
            })
    }

    /// Proposes a metadata record and waits until it is applied here: the
    /// end of the metadata applied then, or `None` if it was not committed
    /// or applied in time.
    async fn propose(&mut self, record: MetadataRecord) -> Option<u64> {
        let batch = record_batch(&record, 0);
        let appended = self
            .cluster
            .handle
            .produce(METADATA_GROUP, batch, Acks::All)
            .await;
        let appended = match appended {
            Ok(appended) => appended,
            Err(error) => {
                tracing::warn!(%error, ?record, "a metadata record was not committed");
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        while self.metadata.applied_offset() <= appended.last_offset {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    ?record,
                    "a committed metadata record was not applied in time"
                );
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.catch_up();
        }
        tracing::info!(?record, "metadata changed");
        Some(self.metadata.applied_offset())
    }

    /// Makes the local log and groups match the applied metadata: topics
    /// created and deleted, the groups of this node's partitions opened.
    async fn materialize(&mut self) {
        let applied = self.metadata.applied_offset();
        if self.materialized == Some(applied) {
            return;
        }
        if self.metadata_repairing() {
            return;
        }
        let state = self.metadata.state().clone();
        let mut complete = true;
        for topic in self.log.topics() {
            if !state.topics.contains_key(&topic.name) {
                complete &= self.remove_topic(&topic.name).await;
            }
        }
        for (name, partitions) in &state.topics {
            match self.materialize_topic(&state, name, partitions).await {
                Made::Ready => complete &= self.reconfigure_topic(&state, name).await,
                Made::Ahead => complete = false,
                Made::Failed | Made::Later => {
                    complete = false;
                    continue;
                }
            }
            for (index, assignment) in partitions.iter().enumerate() {
                let group = assignment.group;
                let mine = hosts(&state, group, &assignment.replicas, self.cluster.node);
                if !mine || self.opened.contains_key(&group) {
                    continue;
                }
                // Only the replicas the topic was created with start its log
                // (all alike); a replica added later starts empty and learns
                // the members from the leader.
                let first_voters = state
                    .original_replicas
                    .get(&group)
                    .filter(|original| original.contains(&self.cluster.node))
                    .cloned()
                    .unwrap_or_default();
                match self.open(name, index as u32, group, &first_voters).await {
                    Opened::Yes => {}
                    Opened::Failed => complete = false,
                    Opened::Stale => {
                        tracing::warn!(
                            topic = name,
                            "local files of an earlier topic of the same name: removed"
                        );
                        self.remove_topic(name).await;
                        complete = false;
                        break;
                    }
                }
            }
        }
        self.close_moved_away(&state).await;
        if complete {
            self.materialized = Some(applied);
        }
    }

    /// Makes topic `name` of the local log have as many partitions as the
    /// metadata gives it: created when missing, grown when it has fewer
    /// (CreatePartitions). A local topic with more is either an earlier
    /// topic of the same name (removed, to be made again) or ahead of what
    /// this node has applied so far (left as it is).
    async fn materialize_topic(
        &mut self,
        state: &MetadataState,
        name: &str,
        partitions: &[PartitionAssignment],
    ) -> Made {
        let count = u32::try_from(partitions.len()).expect("at most MAX_PARTITIONS partitions");
        let first_group = partitions.first().expect("a topic has partitions").group;
        let local = self.log.topic(name);
        if let Some(made) = self
            .other_incarnation(name, local.as_ref().ok(), first_group)
            .await
        {
            return made;
        }
        let local = local.map(|topic| topic.partitions);
        let log = Arc::clone(&self.log);
        let topic = name.to_string();
        let made = match local {
            Ok(local) if local == count => return Made::Ready,
            Ok(local) if local < count => off_loop(move || log.add_partitions(&topic, count)).await,
            Ok(local) => {
                return self
                    .more_than_the_metadata(state, name, partitions, local)
                    .await
            }
            Err(_) => {
                let configs = state.topic_configs.get(name).map_or(&[][..], Vec::as_slice);
                let config = topic_config(&log, name, count, configs);
                off_loop(move || log.create_identified_topic(&topic, config, first_group)).await
            }
        };
        match made {
            Ok(()) => Made::Ready,
            Err(error) => {
                tracing::error!(topic = name, %error, "making a replicated topic failed");
                Made::Failed
            }
        }
    }

    /// A local topic `name` made for another topic of that name than the
    /// metadata's, whose first partition's group is `first_group` (each
    /// local copy is made with its topic's first group as its id): an
    /// earlier one (a lower group) is removed, to be made again (`Failed`
    /// for now); a later one (this node made it, then restarted with less
    /// of the metadata applied) is left alone until the metadata catches
    /// up (`Later`). `None` for the metadata's own, or one made without an
    /// id (before the twentieth session: the group markers tell those).
    async fn other_incarnation(
        &mut self,
        name: &str,
        local: Option<&weir_log::TopicMetadata>,
        first_group: u64,
    ) -> Option<Made> {
        let id = local.map_or(0, |topic| topic.id);
        if id == 0 || id == first_group {
            return None;
        }
        if id > first_group {
            tracing::debug!(
                topic = name,
                id,
                first_group,
                "a later local topic: waiting"
            );
            return Some(Made::Later);
        }
        tracing::warn!(
            topic = name,
            id,
            first_group,
            "local files of an earlier topic of the same name: removed"
        );
        self.remove_topic(name).await;
        Some(Made::Failed)
    }

    /// Gives the local topic `name` the settings its configs in the
    /// metadata make of this node's defaults (AlterConfigs); whether it
    /// has them.
    async fn reconfigure_topic(&self, state: &MetadataState, name: &str) -> bool {
        let Ok(local) = self.log.topic(name) else {
            return false;
        };
        let configs = state.topic_configs.get(name).map_or(&[][..], Vec::as_slice);
        let wanted = topic_config(&self.log, name, local.partitions, configs)
            .log
            .unwrap_or_else(|| self.log.default_log_config().clone())
            .settings();
        if local.log.settings() == wanted {
            return true;
        }
        let log = Arc::clone(&self.log);
        let topic = name.to_string();
        match off_loop(move || log.change_topic_settings(&topic, wanted)).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(topic = name, %error, "changing a replicated topic's settings failed");
                false
            }
        }
    }

    /// A local topic with more partitions than the metadata gives it: an
    /// earlier topic of the same name when a partition's group marker
    /// names a group other than the metadata's for it, or, past the
    /// metadata's partitions, a group given out before the last one (a
    /// topic never shrinks, and groups are given out in order); removed
    /// then. Otherwise this node has not yet applied the addition that
    /// made them (it restarted with less applied): left alone.
    async fn more_than_the_metadata(
        &mut self,
        state: &MetadataState,
        name: &str,
        partitions: &[PartitionAssignment],
        local: u32,
    ) -> Made {
        let mut earlier = false;
        for index in 0..local {
            let marked = self
                .log
                .partition_dir(name, index)
                .map_err(|error| std::io::Error::other(error.to_string()))
                .and_then(|dir| marked_group(dir.as_ref()));
            earlier |= match (marked, partitions.get(index as usize)) {
                (Ok(Some(group)), Some(assignment)) => group != assignment.group,
                (Ok(Some(group)), None) => group < state.next_group,
                (Ok(None), _) | (Err(_), _) => false,
            };
        }
        if !earlier {
            tracing::debug!(
                topic = name,
                local,
                "more local partitions than applied: waiting"
            );
            return Made::Ahead;
        }
        tracing::warn!(
            topic = name,
            local,
            "local files of an earlier topic of the same name (more partitions): removed"
        );
        self.remove_topic(name).await;
        Made::Failed
    }

    /// Tells every peer the groups this node leads, when that changed and
    /// every [`ANNOUNCE_PERIOD`]: a node that does not replicate a group
    /// knows its leader from this alone, and names it in Metadata (a
    /// topic whose replicas are not on every node).
    async fn announce_leadership(&mut self) {
        let node = self.cluster.node;
        let led: Vec<Led> = self
            .cluster
            .handle
            .views()
            .into_iter()
            .filter(|(_, view)| view.leader == Some(node))
            .map(|(group, view)| Led {
                group,
                term: view.term,
                in_sync: view.in_sync,
            })
            .collect();
        let now = tokio::time::Instant::now();
        let due = self.announced.1.is_none_or(|at| now >= at);
        if !due && led == self.announced.0 {
            return;
        }
        let message = ClusterMessage::Leading {
            groups: led.clone(),
        }
        .encode();
        let mut peers: BTreeSet<u64> = self.cluster.peers.iter().copied().collect();
        peers.extend(self.metadata.state().nodes.keys().copied());
        peers.remove(&node);
        for peer in peers {
            self.cluster.handle.send(peer, message.clone()).await;
        }
        self.announced = (led, Some(now + ANNOUNCE_PERIOD));
    }

    /// Whether the metadata log lost entries to corruption and is being
    /// repaired: what this node applied from it after a restart is then
    /// older than what it had applied before, and acting on it would
    /// delete topics and replicas the cluster still has (a replica that
    /// forgets what it acknowledged, and its votes; cluster seed 185).
    /// Nothing is created, opened, closed or deleted until the repair ends.
    fn metadata_repairing(&self) -> bool {
        let view = self.cluster.handle.view(METADATA_GROUP);
        let repairing = view.is_some_and(|view| view.repairing);
        if repairing {
            tracing::debug!(
                "the metadata log is being repaired: topics and replicas left as they are"
            );
        }
        repairing
    }

    /// Closes the replicas of groups that moved away from this node (their
    /// files stay until the topic is deleted).
    async fn close_moved_away(&mut self, state: &MetadataState) {
        let node = self.cluster.node;
        let gone: Vec<u64> = self
            .opened
            .keys()
            .copied()
            .filter(|group| {
                state
                    .replicas_of(*group)
                    .is_some_and(|replicas| !hosts(state, *group, &replicas, node))
            })
            .collect();
        for group in gone {
            self.cluster.handle.close_group(group).await;
            self.opened.remove(&group);
            tracing::info!(
                group,
                "replica closed: the partition moved away from this node"
            );
        }
    }

    /// Tells the transport the addresses of nodes that joined.
    async fn learn_peers(&mut self) {
        let nodes: Vec<(u64, String)> = self
            .metadata
            .state()
            .nodes
            .iter()
            .filter(|(id, info)| !info.cluster_address.is_empty() && !self.peers_added.contains(id))
            .map(|(id, info)| (*id, info.cluster_address.clone()))
            .collect();
        for (id, address) in nodes {
            match address.parse() {
                Ok(address) => {
                    self.cluster.handle.add_peer(id, Some(address)).await;
                    tracing::info!(node = id, %address, "a node joined the cluster");
                }
                Err(error) => {
                    tracing::warn!(node = id, address, %error, "a node's cluster address does not parse")
                }
            }
            self.peers_added.insert(id);
        }
    }

    /// On the controller: makes node `node` a learner of the metadata group
    /// unless it is a member, so that it receives the metadata.
    async fn admit_to_metadata(&mut self, node: u64) {
        let Some(view) = self.cluster.handle.view(METADATA_GROUP) else {
            return;
        };
        if view.voters.contains(&node) || view.learners.contains(&node) {
            return;
        }
        self.change_membership(METADATA_GROUP, vec![(ConfChangeType::AddLearnerNode, node)])
            .await;
    }

    /// Proposes a change of a group's members, at most once a second per
    /// group (raft refuses a change while another is under way).
    async fn change_membership(&mut self, group: u64, changes: Vec<(ConfChangeType, u64)>) {
        let now = tokio::time::Instant::now();
        if let Some(last) = self.proposed_membership.get(&group) {
            if now.duration_since(*last) < MEMBERSHIP_RETRY {
                return;
            }
        }
        self.proposed_membership.insert(group, now);
        match self
            .cluster
            .handle
            .change_membership(group, changes.clone())
            .await
        {
            Ok(()) => tracing::info!(group, ?changes, "membership change proposed"),
            Err(error) => {
                tracing::debug!(group, ?changes, %error, "membership change not proposed")
            }
        }
    }

    /// On the leader of each group being reassigned: adds the new replicas
    /// as learners, then, once they hold every committed entry, makes them
    /// voters and removes the old ones in one joint-consensus change (left
    /// automatically), and reports the new voters to the controller. A
    /// leader that is to go hands the lead to a staying voter first.
    async fn drive_reassignments(&mut self) {
        let reassignments = self.metadata.state().reassignments.clone();
        for (group, target) in reassignments {
            let Some(view) = self.cluster.handle.view(group) else {
                continue;
            };
            if view.leader != Some(self.cluster.node) || view.joint {
                continue;
            }
            // Nodes leaving the metadata group stay as learners: every node
            // keeps the metadata.
            let removal = if group == METADATA_GROUP {
                ConfChangeType::AddLearnerNode
            } else {
                ConfChangeType::RemoveNode
            };
            match next_membership_step(&view, &target, self.cluster.node, removal) {
                Step::Report => {
                    let message = ClusterMessage::Reassigned {
                        group,
                        voters: target,
                    };
                    self.handle(self.cluster.node, message).await;
                }
                Step::Change(changes) => self.change_membership(group, changes).await,
                Step::HandOver(to) => self.cluster.handle.transfer_leader(group, to).await,
                Step::Wait => {}
            }
        }
    }

    /// Opens this node's replica of a partition's group; `Stale` when the
    /// partition's files are another group's (the topic was deleted and
    /// created again under its name while this node was away).
    async fn open(&mut self, topic: &str, partition: u32, group: u64, replicas: &[u64]) -> Opened {
        let opened = match (
            self.log.partition_dir(topic, partition),
            self.log.partition(topic, partition),
        ) {
            (Ok(dir), Ok(log)) => match claim_for_group(dir.as_ref(), group) {
                Ok(true) => self
                    .cluster
                    .handle
                    .open_group(group, replicas.to_vec(), dir, log)
                    .await
                    .map_err(|error| error.to_string()),
                Ok(false) => return Opened::Stale,
                Err(error) => Err(error.to_string()),
            },
            (Err(error), _) | (_, Err(error)) => Err(error.to_string()),
        };
        match opened {
            Ok(()) => {
                self.opened.insert(group, topic.to_string());
                tracing::info!(topic, partition, group, ?replicas, "replica opened");
                Opened::Yes
            }
            Err(error) => {
                tracing::error!(topic, partition, group, %error, "opening a replica failed");
                Opened::Failed
            }
        }
    }

    async fn remove_topic(&mut self, name: &str) -> bool {
        let groups: BTreeSet<u64> = self
            .opened
            .iter()
            .filter(|(_, topic)| topic.as_str() == name)
            .map(|(group, _)| *group)
            .collect();
        for group in &groups {
            self.cluster.handle.close_group(*group).await;
            self.opened.remove(group);
        }
        let log = Arc::clone(&self.log);
        let topic = name.to_string();
        match off_loop(move || log.delete_topic(&topic)).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(topic = name, %error, "deleting a replicated topic failed");
                false
            }
        }
    }
}

/// How a replicated topic is created: with the node's log settings, but
/// the consumer offsets' topic without retention (its records are the
/// groups' committed offsets, which a coordinator rebuilds from the first
/// record; Kafka compacts that topic, weir keeps it whole).
/// Another topic takes its Kafka configs over the node's settings (as
/// each node of a Kafka cluster applies a topic's configs over its own
/// defaults).
fn topic_config(
    log: &Broker,
    name: &str,
    partitions: u32,
    configs: &[(String, String)],
) -> TopicConfig {
    if name != OFFSETS_TOPIC && configs.is_empty() {
        return TopicConfig::with_partitions(partitions);
    }
    if name != OFFSETS_TOPIC {
        let settings = topic_log_config(log.default_log_config(), configs);
        return match settings {
            Ok(settings) => TopicConfig {
                partitions,
                log: Some(settings),
            },
            Err(reason) => {
                // Checked on the node that asked, with its settings; these
                // differ. The topic exists everywhere: this node's copy takes
                // its own settings.
                tracing::error!(topic = name, %reason, "the topic's configs do not apply here");
                TopicConfig::with_partitions(partitions)
            }
        };
    }
    TopicConfig {
        partitions,
        log: Some(LogConfig {
            retention_ms: None,
            retention_bytes: None,
            ..log.default_log_config().clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flipped read of the group marker must not pass for another
    /// group's: the caller would remove the replica's files.
    #[test]
    fn a_group_marker_read_with_flipped_bits_still_names_its_group() {
        let disk = weir_io::SimDisk::new(5);
        let dir = disk.root();
        assert!(claim_for_group(&dir, 7).expect("a new directory"));
        let side = dir
            .open_file(weir_replication::SIDE_FILE, weir_io::OpenMode::CreateNew)
            .expect("a side file");
        side.write_at(b"raft", 0).expect("a write");
        disk.set_faults(weir_io::Faults {
            read_corruption: 0.3,
            ..weir_io::Faults::none()
        });
        for attempt in 0..60 {
            assert!(
                claim_for_group(&dir, 7).expect("a claim"),
                "claim {attempt}"
            );
            assert!(
                !claim_for_group(&dir, 8).expect("a claim"),
                "claim {attempt}"
            );
        }
        assert!(disk.stats().read_corruptions > 10);
    }

    #[test]
    fn a_damaged_group_marker_is_an_error_and_an_old_one_is_read() {
        let dir = weir_io::SimStorage::new(3);
        let mut marker = encode_id_marker(7);
        marker[2] ^= 4;
        weir_io::write_file_atomically(&dir, GROUP_MARKER, &marker).expect("a write");
        let error = claim_for_group(&dir, 7).expect_err("a damaged marker");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        weir_io::write_file_atomically(&dir, GROUP_MARKER, &7u64.to_le_bytes()).expect("a write");
        assert!(claim_for_group(&dir, 7).expect("an 8-byte marker"));
        // The copy an old directory lacked is written.
        let copy = weir_io::read_whole_file(&dir, GROUP_MARKER_COPY).expect("a copy");
        assert_eq!(copy.as_deref(), Some(&encode_id_marker(7)[..]));
        assert!(!claim_for_group(&dir, 9).expect("an 8-byte marker"));
        assert_eq!(
            decode_group_marker(&encode_id_marker(u64::MAX)).expect("a marker"),
            u64::MAX
        );
    }

    /// Rot in either copy of the group marker, or the loss of one, is
    /// repaired from the other: the replica still opens as its group's,
    /// and both copies name it again. Copies naming different groups, or
    /// both damaged, are an error (the files are never taken for another
    /// group's, nor kept as this one's).
    #[test]
    fn a_group_marker_copy_that_rots_is_written_again_from_the_other() {
        let marker = encode_id_marker(7);
        for (damaged, byte) in [
            (GROUP_MARKER, 0),
            (GROUP_MARKER_COPY, 11),
            (GROUP_MARKER, 99),
        ] {
            let dir = weir_io::SimStorage::new(4);
            assert!(claim_for_group(&dir, 7).expect("a new directory"));
            if byte < marker.len() {
                let mut rotted = marker;
                rotted[byte] ^= 0x20;
                weir_io::write_file_atomically(&dir, damaged, &rotted).expect("a write");
            } else {
                dir.remove_file(damaged).expect("a removal");
            }
            assert!(claim_for_group(&dir, 7).expect("one copy holds"));
            for name in [GROUP_MARKER, GROUP_MARKER_COPY] {
                let bytes = weir_io::read_whole_file(&dir, name).expect("a read");
                assert_eq!(
                    bytes.as_deref(),
                    Some(&marker[..]),
                    "{name} after {damaged} rotted"
                );
            }
            assert!(!claim_for_group(&dir, 8).expect("both copies"));
        }
        let dir = weir_io::SimStorage::new(4);
        assert!(claim_for_group(&dir, 7).expect("a new directory"));
        let other = encode_id_marker(8);
        weir_io::write_file_atomically(&dir, GROUP_MARKER_COPY, &other).expect("a write");
        let error = claim_for_group(&dir, 7).expect_err("copies that differ");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        for name in [GROUP_MARKER, GROUP_MARKER_COPY] {
            let mut rotted = marker;
            rotted[3] ^= 1;
            weir_io::write_file_atomically(&dir, name, &rotted).expect("a write");
        }
        let error = claim_for_group(&dir, 7).expect_err("both copies rotted");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }

    /// Opens the metadata log of the data directory on `disk`, as
    /// `start` does: (cluster dir, metadata dir, metadata log).
    fn metadata_of(
        disk: &Arc<weir_io::SimDisk>,
    ) -> (Arc<dyn Storage>, Arc<dyn Storage>, Partition) {
        let root = disk.root();
        let cluster = root.open_or_create_dir("cluster").expect("cluster/");
        let metadata = cluster.open_or_create_dir("metadata").expect("metadata/");
        let config = LogConfig {
            high_watermark: HighWatermarkPolicy::SetByOwner,
            retention_ms: None,
            ..LogConfig::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(weir_io::ManualClock::new(0));
        let (log, _) = Partition::open(Arc::clone(&metadata), clock, config).expect("the log");
        (cluster, metadata, log)
    }

    #[test]
    fn a_data_directory_is_claimed_once_and_only_by_its_node() {
        let disk = weir_io::SimDisk::new(11);
        let (cluster, metadata, log) = metadata_of(&disk);
        let claim = |node| claim_data_directory(cluster.as_ref(), metadata.as_ref(), &log, node);
        // Nothing here: the node must ask its peers, and nothing is marked
        // until they answer.
        assert!(claim(2).expect("a claim"));
        assert!(!cluster.exists(NODE_MARKER).expect("exists"));
        // State without a marker (written before there were markers) gets one.
        metadata
            .open_file(weir_replication::SIDE_FILE, weir_io::OpenMode::CreateNew)
            .expect("a side file")
            .write_at(b"raft", 0)
            .expect("a write");
        assert!(!claim(2).expect("a claim"));
        assert!(cluster.exists(NODE_MARKER).expect("exists"));
        // The marker names node 2: node 3 is refused, node 2 goes on.
        let error = claim(3).expect_err("another node's directory");
        assert!(
            error.to_string().contains("node 2's cluster state"),
            "{error}"
        );
        assert!(!claim(2).expect("a claim"));
        // A damaged marker is written again over the state it stands for.
        let mut marker = encode_id_marker(3);
        marker[0] ^= 1;
        weir_io::write_file_atomically(cluster.as_ref(), NODE_MARKER, &marker).expect("a write");
        assert!(!claim(2).expect("a claim"));
        assert!(claim(3).is_err(), "the marker names node 2 again");
        // A marker over no state (a crash right after it was written, a
        // partial wipe): the node asks again.
        metadata
            .remove_file(weir_replication::SIDE_FILE)
            .expect("remove");
        assert!(claim(2).expect("a claim"));
    }

    /// Every majority of the voters holds one of the peers that answered,
    /// besides the asking node; a lone node asks no one.
    #[test]
    fn enough_peers_answer_that_every_majority_holds_one() {
        assert_eq!(answers_needed(1), 0);
        assert_eq!(answers_needed(2), 1);
        assert_eq!(answers_needed(3), 2);
        assert_eq!(answers_needed(4), 2);
        assert_eq!(answers_needed(5), 3);
        assert_eq!(answers_needed(7), 4);
        for nodes in 2..=7usize {
            let majority = nodes / 2 + 1;
            // The worst case: the asker was in the majority, the rest of
            // it (majority - 1 peers) did not answer.
            let unanswered = nodes - 1 - answers_needed(nodes);
            assert!(unanswered < majority - 1, "{nodes} nodes");
        }
    }

    fn view(voters: &[u64], learners: &[u64], caught_up: &[u64]) -> GroupView {
        GroupView {
            leader: Some(1),
            term: 2,
            high_watermark: 10,
            voters: voters.to_vec(),
            in_sync: voters.to_vec(),
            commit_term: 2,
            learners: learners.to_vec(),
            joint: false,
            caught_up: caught_up.to_vec(),
            repairing: false,
        }
    }

    const REMOVE: ConfChangeType = ConfChangeType::RemoveNode;

    #[test]
    fn a_reassignment_adds_learners_waits_for_them_then_changes_once() {
        use ConfChangeType::{AddLearnerNode, AddNode};
        let target = [1, 2, 4];
        let step = |view: &GroupView| next_membership_step(view, &target, 1, REMOVE);
        assert_eq!(
            step(&view(&[1, 2, 3], &[], &[])),
            Step::Change(vec![(AddLearnerNode, 4)])
        );
        assert_eq!(step(&view(&[1, 2, 3], &[4], &[])), Step::Wait);
        assert_eq!(
            step(&view(&[1, 2, 3], &[4], &[4])),
            Step::Change(vec![(AddNode, 4), (REMOVE, 3)])
        );
        assert_eq!(step(&view(&[1, 2, 4], &[], &[])), Step::Report);
        // A learner is not yet a voter: not done.
        assert_ne!(step(&view(&[1, 2], &[4], &[4])), Step::Report);
    }

    #[test]
    fn a_leader_that_is_to_go_hands_over_to_a_staying_voter() {
        let step = next_membership_step(
            &view(&[1, 2, 3], &[4], &[1, 2, 3, 4]),
            &[2, 3, 4],
            1,
            REMOVE,
        );
        assert_eq!(step, Step::HandOver(2));
        // The metadata group's voters that go stay learners.
        let step = next_membership_step(
            &view(&[1, 2, 3], &[4], &[4]),
            &[1, 2, 4],
            1,
            ConfChangeType::AddLearnerNode,
        );
        assert_eq!(
            step,
            Step::Change(vec![
                (ConfChangeType::AddNode, 4),
                (ConfChangeType::AddLearnerNode, 3)
            ])
        );
    }

    fn state_with_topic() -> MetadataState {
        let mut state = MetadataState::new();
        for id in 1..=4 {
            let node = MetadataRecord::Node {
                id,
                kafka_address: String::new(),
                resp_address: String::new(),
                cluster_address: format!("127.0.0.1:700{id}"),
            };
            state.apply(&node).expect("a node");
        }
        let topic = state
            .plan_topic("t", 1, 3, &BTreeSet::new())
            .expect("a plan");
        state.apply(&topic).expect("a topic");
        state
    }

    #[test]
    fn reassignment_requests_are_checked_against_the_metadata() {
        let mut state = state_with_topic();
        let group = state.topics["t"][0].group;
        let code = |result: Result<Option<MetadataRecord>, (ResponseError, String)>| {
            result.map_err(|(error, _)| error)
        };
        assert_eq!(
            code(plan_reassignment(&state, group, &[1, 1, 2])),
            Err(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(plan_reassignment(&state, group, &[1, 2, 9])),
            Err(ResponseError::InvalidReplicaAssignment)
        );
        assert_eq!(
            code(plan_reassignment(&state, group, &[])),
            Err(ResponseError::NoReassignmentInProgress)
        );
        let record = plan_reassignment(&state, group, &[1, 2, 4])
            .expect("accepted")
            .expect("a record");
        state.apply(&record).expect("applied");
        assert_eq!(plan_reassignment(&state, group, &[1, 2, 4]), Ok(None));
        assert_eq!(
            code(plan_reassignment(&state, group, &[2, 3, 4])),
            Err(ResponseError::ReassignmentInProgress)
        );
        let done = MetadataRecord::Reassigned {
            group,
            replicas: vec![1, 2, 4],
        };
        state.apply(&done).expect("done");
        assert_eq!(state.topics["t"][0].replicas, [1, 2, 4]);
        assert!(state.reassignments.is_empty());
        // The replicas the topic started with are kept: they alone start
        // its log.
        assert_eq!(state.original_replicas[&group], [1, 2, 3]);
        assert!(state.apply(&done).is_err(), "done twice");
    }
}
