//! Clusters of the real server on madsim (compiled only with `--cfg
//! madsim`): three or five nodes, each running `weir-server`'s own
//! `start_kafka` as a node of a cluster (`node-id`, `peers`) on its own
//! [`SimDisk`] and clock, so that the server's controller, metadata
//! application, replication runner, transport and Kafka front-end all run
//! as they do in `weir serve`.
//!
//! Clients: idempotent producers that follow the partitions' leaders over
//! the Kafka protocol (Metadata, then up to five Produce requests with
//! acks=all pipelined on one connection, now and then followed by a
//! ListOffsets, each batch retried with its sequence until it is
//! acknowledged); a producer without idempotence that pipelines windows
//! the same way and never retries; a consumer that fetches from the
//! leaders; a client that
//! commits a group's offsets through its coordinator; a watcher per node
//! that reads the group's offsets and the partitions' ends; a consumer
//! group whose members join, sync, heartbeat, commit, crash and leave
//! ([`group`]). The nemesis
//! kills nodes with a power loss of their disks (at most a minority down
//! at once) and restarts them, isolates nodes (both ways or one way),
//! makes links lossy and slow, and skews and jumps nodes' clocks; in one
//! seed in four it rots stored bytes of a node's replicas at rest (in
//! sealed segments too, in half of those), which the replicas must find,
//! never serve, and repair from their peers.
//!
//! Checks, after healing: every partition has a leader and takes a
//! produce again within bounded time (liveness), and every node names
//! that leader (one that does not replicate the partition too); every
//! acknowledged record
//! is in the log at its offset, on every replica once they caught up; no
//! two replicas hold different records at one offset; no record twice
//! (idempotence across retries, leader changes and restarts); each
//! producer's records in order; every record a consumer read is the one
//! the log holds at that offset; the consumer group reads every
//! acknowledged record. While running: responses come in request order;
//! a request pipelined behind produce requests sees the records they had
//! acknowledged; a connection's produce requests are acknowledged at
//! offsets in the order it sent them; committed offsets and partition ends, as the newest
//! term's leaders answer them, never move back; a group member's polls
//! continue its assignment without a gap; fetched batches decode.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::{sleep, timeout, Instant};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::net::TcpStream;
use weir_io::{Clock, CrashWeights, Faults, SimDisk, Storage};
use weir_log::batch::{encode, ProducerInfo, Record};
use weir_log::Broker;
use weir_server::cluster::{Halt, METADATA_GROUP, OFFSETS_TOPIC};
use weir_server::Settings;

use crate::check::Violation;
use crate::harness::SeedReport;
use crate::kafka::KafkaClient;

mod churn;
mod group;

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;
const KAFKA_PORT: u16 = 9092;
const CLUSTER_PORT: u16 = 7000;
const CLIENT_IP: [u8; 4] = [10, 0, 2, 1];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const PRODUCERS: usize = 2;
/// The consumer group whose offsets a client commits.
const GROUP: &str = "committer";

/// Whether a seed runs with retention on the topics: one seed in four,
/// the ones whose remainder by 4 is 3, and since the twenty-first session
/// half the rot seeds (remainder 1 by 8), so that rot meets compacted
/// Raft logs, side-file rewrites and snapshots.
pub fn retains(seed: u64) -> bool {
    seed % 4 == 3 || seed % 8 == 1
}

/// Whether a seed's nodes may find their stored data rotted (one seed in
/// four, remainder 1: the others keep their schedules).
pub fn rots(seed: u64) -> bool {
    seed % 4 == 1
}

/// Whether a seed's nodes may have their disks store writes wrong for a
/// while (one seed in four, remainder 2).
pub fn writes_go_astray(seed: u64) -> bool {
    seed % 4 == 2
}

/// The largest log start offset of `partition` over the running nodes:
/// records below it may be gone from the partition's leader.
fn max_log_start(shared: &Shared, partition: i32) -> i64 {
    shared
        .brokers
        .values()
        .filter_map(|broker| broker.partition(TOPIC, partition as u32).ok())
        .map(|log| log.log_start_offset() as i64)
        .max()
        .unwrap_or(0)
}

fn node_ip(id: u64) -> [u8; 4] {
    [10, 0, 1, id as u8]
}

fn kafka_address(id: u64) -> SocketAddr {
    SocketAddr::from((node_ip(id), KAFKA_PORT))
}

/// A node's clock: simulated time plus an offset the nemesis moves.
#[derive(Debug, Default)]
struct NodeClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl Clock for NodeClock {
    fn now_ms(&self) -> u64 {
        let now = weir_io::SystemClock.now_ms() as i64
            + self.offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        now.max(0) as u64
    }
}

/// One record a producer had acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    partition: i32,
    offset: i64,
    value: String,
}

#[derive(Default)]
struct Shared {
    trace: Vec<String>,
    operations: u64,
    faults: BTreeMap<&'static str, u64>,
    coverage: BTreeMap<&'static str, u64>,
    acked: Vec<Acked>,
    /// Records consumers read: (partition, offset) → value.
    read: BTreeMap<(i32, i64), String>,
    violations: Vec<Violation>,
    /// Each node's topics, while it runs.
    brokers: BTreeMap<u64, Arc<Broker>>,
    /// The replicas of each partition, as the metadata says.
    replicas: BTreeMap<i32, Vec<u64>>,
    /// The leader each node saw for each (group, term).
    leaders: BTreeMap<(u64, u64), (u64, u64)>,
    /// The term of the last answer judged, by Raft group.
    judged_terms: BTreeMap<u64, u64>,
    /// Each running node's view of the cluster.
    clusters: BTreeMap<u64, weir_server::cluster::Cluster>,
    /// The highest offset of each partition whose commit for group
    /// [`GROUP`] was acknowledged, and the highest tried.
    commits_acked: BTreeMap<i32, i64>,
    commits_tried: BTreeMap<i32, i64>,
    /// The highest committed offset of each partition an OffsetFetch
    /// returned.
    commits_seen: BTreeMap<i32, i64>,
    /// The highest end (high watermark) of each partition the watchers
    /// were answered by its leader in the newest term.
    ends_seen: BTreeMap<i32, i64>,
    /// (partition, offset) of every record a member of
    /// [`group::CONSUMERS`] read.
    group_read: BTreeSet<(i32, i64)>,
    /// Every replica of a node gone for good has moved.
    replacement_done: bool,
    /// A node gone for good started again with an empty disk under its
    /// id, which must refuse to take part (and whether it has).
    wiped: Option<(u64, bool)>,
    /// Every producer id a node handed out.
    producer_ids: BTreeSet<i64>,
    /// How many times each node was started again.
    restarts: BTreeMap<u64, u64>,
    /// When a node last stopped or started (power loss, restart, a node
    /// joining or started on an empty disk).
    nodes_changed: Option<Instant>,
    /// The topic deleted and created again ([`churn`]).
    churn: churn::Churned,
    /// The faults are over.
    healed: bool,
    stop_producers: bool,
    stop_all: bool,
    producers_done: usize,
    /// When the run began (for the time of a violation in the trace).
    started: Option<Instant>,
    /// Nodes the nemesis just cut off from their peers (clients still
    /// reach them) or paused, by how many such faults are on: the
    /// prober ([`probe_suspects`]) reads from them, where a leader deposed
    /// without knowing it yet answers from its shorter log.
    suspects: BTreeMap<u64, u32>,
    /// Each running node's shutdown signal, as SIGTERM gives `weir serve`
    /// ([`clean_stop`]).
    stoppers: BTreeMap<u64, weir_kafka::shutdown::Shutdown>,
    /// Nodes that shut down cleanly since they last started: whether
    /// closing their topics succeeded.
    closed: BTreeMap<u64, bool>,
}

fn suspect(shared: &SharedRef, node: u64, on: bool) {
    let mut shared = shared.lock().expect("shared");
    let count = shared.suspects.entry(node).or_default();
    match on {
        true => *count += 1,
        false => *count = count.saturating_sub(1),
    }
    if *count == 0 {
        shared.suspects.remove(&node);
    }
}

type SharedRef = Arc<Mutex<Shared>>;

struct World {
    handle: Handle,
    started: Instant,
    rng: Xoshiro256PlusPlus,
    shared: SharedRef,
    nodes: BTreeMap<u64, (NodeHandle, Arc<SimDisk>, Arc<NodeClock>)>,
    down: BTreeSet<u64>,
    client: NodeHandle,
    /// The first nodes' cluster addresses (`--peers`).
    peers: String,
    /// A node gone for good, and the node that replaced it.
    replaced: Option<(u64, u64)>,
    /// Nodes whose stored data the nemesis damaged (rot, writes astray):
    /// the damage may lie unfound, so a node gone for good afterwards
    /// could leave a majority without some records.
    damaged: BTreeSet<u64>,
}

fn note(shared: &SharedRef, started: Instant, text: String) {
    let elapsed = started.elapsed().as_secs_f64();
    let line = format!("{elapsed:>9.3}s {text}");
    if std::env::var_os("WEIR_SIM_LIVE").is_some() {
        eprintln!("{line}");
    }
    shared.lock().expect("shared").trace.push(line);
}

fn violation(shared: &SharedRef, invariant: &'static str, evidence: String) {
    let mut shared = shared.lock().expect("shared");
    if let Some(started) = shared.started {
        let elapsed = started.elapsed().as_secs_f64();
        let line = format!("{elapsed:>9.3}s VIOLATION {invariant}: {evidence}");
        if std::env::var_os("WEIR_SIM_LIVE").is_some() {
            eprintln!("{line}");
        }
        shared.trace.push(line);
    }
    shared.violations.push(Violation {
        invariant,
        evidence,
    });
}

fn count(shared: &SharedRef, what: &'static str) {
    *shared
        .lock()
        .expect("shared")
        .faults
        .entry(what)
        .or_default() += 1;
}

fn reached(shared: &SharedRef, what: &'static str) {
    *shared
        .lock()
        .expect("shared")
        .coverage
        .entry(what)
        .or_default() += 1;
}

/// Runs one cluster seed.
pub fn run_cluster_seed(seed: u64) -> SeedReport {
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(3600));
    runtime.block_on(simulate(seed))
}

/// Runs one cluster seed under madsim's determinism check.
pub fn run_cluster_seed_checked(seed: u64) -> SeedReport {
    Runtime::check_determinism(seed, madsim::Config::default(), || async {
        simulate(Handle::current().seed()).await
    })
}

async fn simulate(seed: u64) -> SeedReport {
    let mut world = build(seed);
    spawn_clients(&world);
    fault_phase(&mut world).await;
    heal(&mut world).await;
    final_checks(&world).await;
    report(&world, seed)
}

fn build(seed: u64) -> World {
    let handle = Handle::current();
    let started = Instant::now();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xc105_7e25);
    let size: u64 = if rng.random_bool(0.3) { 5 } else { 3 };
    let shared: SharedRef = Arc::default();
    shared.lock().expect("shared").started = Some(started);
    note(
        &shared,
        started,
        format!("cluster seed {seed}: {size} nodes"),
    );
    let peers = (1..=size)
        .map(|id| format!("{id}={}", SocketAddr::from((node_ip(id), CLUSTER_PORT))))
        .collect::<Vec<_>>()
        .join(",");
    let weights = CrashWeights {
        lose_all: rng.random_range(0..4),
        keep_prefix: rng.random_range(0..4),
        tear: rng.random_range(1..4),
    };
    let mut nodes = BTreeMap::new();
    for id in 1..=size {
        let disk = SimDisk::with_faults(
            rng.random(),
            Faults {
                crash: weights,
                ..Faults::default()
            },
        );
        let clock = Arc::new(NodeClock::default());
        let node = start_node(&handle, id, &peers, false, &disk, &clock, &shared, started);
        nodes.insert(id, (node, disk, clock));
    }
    let client = handle
        .create_node()
        .name("clients")
        .ip(CLIENT_IP.into())
        .build();
    World {
        handle,
        started,
        rng,
        shared,
        nodes,
        down: BTreeSet::new(),
        client,
        peers,
        replaced: None,
        damaged: BTreeSet::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn start_node(
    handle: &Handle,
    id: u64,
    peers: &str,
    join: bool,
    disk: &Arc<SimDisk>,
    clock: &Arc<NodeClock>,
    shared: &SharedRef,
    started: Instant,
) -> NodeHandle {
    let mut settings = Settings {
        node_id: id,
        peers: peers.to_string(),
        cluster_addr: format!("0.0.0.0:{CLUSTER_PORT}"),
        kafka_addr: format!("0.0.0.0:{KAFKA_PORT}"),
        kafka_advertised_addr: kafka_address(id).to_string(),
        raft_tick_ms: 50,
        join,
        ..Settings::default()
    };
    if rots(handle.seed()) && handle.seed() % 8 == 5 {
        // Small segments: rot reaches sealed segments, which recovery
        // trusts (the checkpoint lists them): found when a batch is read
        // for a follower, or by the scrub.
        settings.kafka.log_segment_bytes = 4096;
        // The clients' records carry timestamps of 1970: the default
        // retention by time would delete every sealed segment.
        settings.kafka.log_retention_ms = -1;
    }
    if retains(handle.seed()) {
        // Small segments, a small size limit, retention every second:
        // records go while clients read them, replicas compact their
        // Raft logs, and followers behind a leader's start take its
        // snapshot.
        settings.kafka.log_segment_bytes = 4096;
        settings.kafka.log_retention_bytes = 16 << 10;
        settings.kafka.log_retention_ms = -1;
        settings.kafka.log_retention_check_interval_ms = 1000;
    }
    let (disk, clock, shared) = (Arc::clone(disk), Arc::clone(clock), Arc::clone(shared));
    handle
        .create_node()
        .name(format!("weir-{id}"))
        .ip(node_ip(id).into())
        .init(move || {
            let disk = Arc::clone(&disk);
            let clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
            let (settings, shared) = (settings.clone(), Arc::clone(&shared));
            async move { run_node(id, settings, disk, clock, shared, started).await }
        })
        .build()
}

async fn run_node(
    id: u64,
    settings: Settings,
    disk: Arc<SimDisk>,
    clock: Arc<dyn Clock>,
    shared: SharedRef,
    started: Instant,
) {
    let shutdown = weir_kafka::shutdown::Shutdown::new();
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    let errors_before = io_errors(&disk);
    let listener =
        weir_server::server::start_kafka(&settings, storage, clock, shutdown.clone()).await;
    let listener = match listener {
        Ok(Some(listener)) => listener,
        Ok(None) => return,
        Err(error) => {
            note(
                &shared,
                started,
                format!("weir-{id} failed to start: {error}"),
            );
            // weir's corruption verdicts all say "corrupt"; these disks
            // never store corrupt bytes, so such a verdict is about good
            // data, whatever else failed.
            let verdict = error.to_string().contains("corrupt");
            if io_errors(&disk) > errors_before && !verdict {
                // The disk failed an operation during the start: stopping
                // is right, and the nemesis power cycles the node when the
                // errors end (it must start then).
                reached(&shared, "start failed on a disk error");
            } else {
                violation(&shared, "a node starts", format!("weir-{id}: {error}"));
            }
            return;
        }
    };
    note(&shared, started, format!("weir-{id} up"));
    check_clean_start(id, &listener.recovery, &shared);
    let wiped = shared
        .lock()
        .expect("shared")
        .wiped
        .is_some_and(|(node, _)| node == id);
    if let (true, Some(cluster)) = (wiped, listener.cluster.clone()) {
        // Not one of the cluster's nodes: it must find that out and shut
        // down, taking part in no group meanwhile.
        return run_wiped_node(id, cluster, shutdown, &shared, started).await;
    }
    if let Some(cluster) = listener.cluster.clone() {
        let shared = Arc::clone(&shared);
        madsim::task::spawn(async move {
            // The partitions' replicas, as the metadata says (they move
            // when a node is replaced).
            loop {
                sleep(Duration::from_millis(500)).await;
                if let Some(partitions) = cluster.metadata().topics.get(TOPIC) {
                    let mut shared = shared.lock().expect("shared");
                    if shared.stop_all {
                        return;
                    }
                    for (index, assignment) in partitions.iter().enumerate() {
                        shared
                            .replicas
                            .insert(index as i32, assignment.replicas.clone());
                    }
                }
            }
        });
    }
    if let Some(cluster) = listener.cluster.clone() {
        shared
            .lock()
            .expect("shared")
            .clusters
            .insert(id, cluster.clone());
        madsim::task::spawn(watch_raft(id, cluster, Arc::clone(&shared)));
    }
    let log = Arc::clone(&listener.kafka.log);
    {
        let mut shared = shared.lock().expect("shared");
        shared.brokers.insert(id, Arc::clone(&log));
        shared.stoppers.insert(id, shutdown.clone());
    }
    let Some(cluster) = listener.cluster.clone() else {
        weir_kafka::server::serve(listener.kafka, listener.listener, shutdown.clone()).await;
        return;
    };
    // As `weir serve` does: a node whose replication stopped (its storage
    // failed) shuts down, to be started again (the nemesis power cycles
    // it when its disk's errors end).
    tokio::select! {
        biased;
        () = weir_kafka::server::serve(listener.kafka, listener.listener, shutdown.clone()) => {
            close_cleanly(id, &log, &shared, started);
        }
        () = cluster.handle().stopped() => {
            note(&shared, started, format!("weir-{id} shuts down: its replication stopped"));
            reached(&shared, "a node shuts down when its replication stops");
            shutdown.request();
        }
        halt = cluster.refused() => {
            match halt {
                Halt::Refused(reason) => {
                    let evidence = format!("weir-{id}: {reason}");
                    violation(&shared, "a node with its data takes part", evidence);
                }
                Halt::StorageFailed(reason) => {
                    note(&shared, started, format!("weir-{id} shuts down: {reason}"));
                    reached(&shared, "a node shuts down when its replication stops");
                }
            }
            shutdown.request();
        }
    }
}

/// What `weir serve` does once SIGTERM stops its Kafka listener: closes
/// every topic cleanly (synced, its indexes and producer snapshot
/// written, a checkpoint that trusts its segments), so that the next
/// start scans nothing. The nemesis then ends the process.
fn close_cleanly(id: u64, log: &Broker, shared: &SharedRef, started: Instant) {
    let closed = log.close();
    let text = match &closed {
        Ok(()) => format!("weir-{id} shuts down cleanly: its topics closed"),
        Err(error) => format!("weir-{id} shuts down: closing its topics failed: {error}"),
    };
    note(shared, started, text);
    shared
        .lock()
        .expect("shared")
        .closed
        .insert(id, closed.is_ok());
}

/// A node whose topics closed cleanly opens every partition without
/// scanning it: nothing but that node touched its disk since (the
/// nemesis faults only running nodes' disks, and rots only after a power
/// loss it causes itself), and close made everything durable.
fn check_clean_start(id: u64, recovery: &weir_log::BrokerRecovery, shared: &SharedRef) {
    let mut shared_state = shared.lock().expect("shared");
    if shared_state.closed.remove(&id) != Some(true) {
        return;
    }
    *shared_state
        .coverage
        .entry("a node started after a clean shutdown")
        .or_default() += 1;
    drop(shared_state);
    for ((topic, partition), report) in &recovery.partitions {
        if !report.clean_shutdown || report.segments_scanned > 0 || report.truncation.is_some() {
            violation(
                shared,
                "a node shut down cleanly starts without recovering its logs",
                format!(
                    "weir-{id} {topic}/{partition}: clean_shutdown {}, {} segments scanned, truncation {:?}",
                    report.clean_shutdown, report.segments_scanned, report.truncation
                ),
            );
        }
    }
}

/// A node started with an empty disk under the id of a node gone for
/// good: it must refuse to take part (its peers know the id) before it
/// opens any group.
async fn run_wiped_node(
    id: u64,
    cluster: weir_server::cluster::Cluster,
    shutdown: weir_kafka::shutdown::Shutdown,
    shared: &SharedRef,
    started: Instant,
) {
    loop {
        tokio::select! {
            biased;
            halt = cluster.refused() => {
                note(shared, started, format!("weir-{id} stops before taking part: {halt}"));
                // A storage error came after its peers said they never
                // knew it: it was about to take part, and has not refused.
                if matches!(halt, Halt::Refused(_)) {
                    reached(shared, "a node whose disk was lost refuses to take part");
                    if let Some(wiped) = shared.lock().expect("shared").wiped.as_mut() {
                        wiped.1 = true;
                    }
                }
                shutdown.request();
                return;
            }
            () = sleep(Duration::from_millis(50)) => {
                let groups = cluster.handle().status().await;
                if let Some(group) = groups.first() {
                    violation(
                        shared,
                        "a node whose disk was lost takes part in no group",
                        format!("weir-{id} opened group {} (term {})", group.group, group.term),
                    );
                    shutdown.request();
                    return;
                }
            }
        }
    }
}

/// The operations `disk` has failed so far (reads, writes, syncs).
fn io_errors(disk: &SimDisk) -> u64 {
    let stats = disk.stats();
    stats.read_errors + stats.write_errors + stats.no_space_errors + stats.sync_failures
}

/// Samples node `id`'s groups every 50 ms, for Raft's safety: one leader
/// per term across the nodes, and a high watermark that never moves back
/// while the node runs.
async fn watch_raft(id: u64, cluster: weir_server::cluster::Cluster, shared: SharedRef) {
    let mut high_watermarks: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut repairing, mut repaired) = (BTreeSet::new(), 0u64);
    let mut cuts: BTreeMap<u64, u64> = BTreeMap::new();
    let mut cut_seen = false;
    let mut repairs_of = BTreeSet::new();
    loop {
        sleep(Duration::from_millis(50)).await;
        let groups = cluster.handle().status().await;
        let offsets_groups: BTreeSet<u64> = cluster
            .metadata()
            .topics
            .get(OFFSETS_TOPIC)
            .map(|partitions| partitions.iter().map(|p| p.group).collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        {
            let mut guard = shared.lock().expect("shared");
            for group in groups {
                if let Some(leader) = group.leader {
                    let seen = guard
                        .leaders
                        .entry((group.group, group.term))
                        .or_insert((leader, id));
                    if seen.0 != leader {
                        problems.push((
                            "one leader per term",
                            format!(
                                "group {} term {}: weir-{} saw leader {}, weir-{id} saw {leader}",
                                group.group, group.term, seen.1, seen.0
                            ),
                        ));
                    }
                }
                if cuts.insert(group.group, group.cuts).unwrap_or(0) != group.cuts {
                    // Cut at a batch that read corrupt: its high watermark
                    // went back with the records, which it no longer
                    // serves (it leads no more until repaired).
                    high_watermarks.remove(&group.group);
                    cut_seen = true;
                }
                if group.repairing {
                    repairing.insert(group.group);
                    if group.group == METADATA_GROUP {
                        repairs_of.insert("the metadata group repairs entries lost to rot");
                    } else if offsets_groups.contains(&group.group) {
                        repairs_of.insert("the offsets topic repairs entries lost to rot");
                    }
                    if group.leader == Some(id) {
                        problems.push((
                            "a replica repairing lost entries never leads",
                            format!("weir-{id} group {} term {}", group.group, group.term),
                        ));
                    }
                } else if repairing.remove(&group.group) {
                    repaired += 1;
                }
                let before = high_watermarks.insert(group.group, group.high_watermark);
                if before.is_some_and(|before| before > group.high_watermark) {
                    problems.push((
                        "the high watermark never moves back on a node",
                        format!(
                            "weir-{id} group {}: {} after {}",
                            group.group,
                            group.high_watermark,
                            before.unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        for (invariant, evidence) in problems {
            violation(&shared, invariant, evidence);
        }
        if !repairing.is_empty() {
            reached(&shared, "a replica repairs entries lost to rot");
        }
        if repaired > 0 {
            reached(&shared, "a replica repaired entries lost to rot");
        }
        if cut_seen {
            reached(&shared, "a replica cut at a batch that read corrupt");
        }
        for what in &repairs_of {
            reached(&shared, what);
        }
    }
}

// ------------------------------------------------------------ clients

async fn call(
    client: &mut KafkaClient,
    shared: &SharedRef,
    api: ApiKey,
    version: i16,
    request: &RequestKind,
) -> Option<ResponseKind> {
    if !send(client, shared, api, version, request).await {
        return None;
    }
    receive(client, shared).await
}

/// Sends a request without waiting for its response; false if the
/// connection failed.
async fn send(
    client: &mut KafkaClient,
    shared: &SharedRef,
    api: ApiKey,
    version: i16,
    request: &RequestKind,
) -> bool {
    shared.lock().expect("shared").operations += 1;
    matches!(
        timeout(REQUEST_TIMEOUT, client.send(api, version, request)).await,
        Ok(Ok(()))
    )
}

/// The response to the oldest request sent on `client` and not answered;
/// `None` if the connection failed or timed out, or if the broker sent
/// what does not decode or answers another request (a violation).
async fn receive(client: &mut KafkaClient, shared: &SharedRef) -> Option<ResponseKind> {
    match timeout(REQUEST_TIMEOUT, client.receive()).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
            let evidence = error.to_string();
            violation(
                shared,
                "responses decode and come in request order",
                evidence,
            );
            None
        }
        _ => None,
    }
}

async fn connect(node: u64) -> Option<KafkaClient> {
    match timeout(REQUEST_TIMEOUT, TcpStream::connect(kafka_address(node))).await {
        Ok(Ok(stream)) => Some(KafkaClient::new(stream)),
        _ => None,
    }
}

/// The leader of each partition, as node `node` says.
async fn leaders(node: u64, shared: &SharedRef) -> Option<BTreeMap<i32, u64>> {
    let found = partitions_of(node, shared).await?;
    Some(
        found
            .into_iter()
            .map(|(partition, (leader, _))| (partition, leader))
            .collect(),
    )
}

/// Each partition's leader and leader epoch, as node `node` says.
async fn partitions_of(node: u64, shared: &SharedRef) -> Option<BTreeMap<i32, (u64, i32)>> {
    let mut client = connect(node).await?;
    let request = RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]))
            .with_allow_auto_topic_creation(false),
    );
    let ResponseKind::Metadata(response) =
        call(&mut client, shared, ApiKey::Metadata, 9, &request).await?
    else {
        return None;
    };
    let topic = response.topics.first()?;
    Some(
        topic
            .partitions
            .iter()
            .filter(|partition| partition.leader_id.0 > 0)
            .map(|partition| {
                let leader = partition.leader_id.0 as u64;
                (partition.partition_index, (leader, partition.leader_epoch))
            })
            .collect(),
    )
}

async fn create_topic(
    nodes: u64,
    shared: &SharedRef,
    rng: &mut Xoshiro256PlusPlus,
    started: Instant,
) {
    for attempt in 0u64..3000 {
        let node = rng.random_range(1..=nodes);
        if let Some(mut client) = connect(node).await {
            let request = RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![create_topics_request::CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_num_partitions(PARTITIONS)
                        .with_replication_factor(-1)]),
            );
            let created = call(&mut client, shared, ApiKey::CreateTopics, 4, &request).await;
            let code = match created {
                Some(ResponseKind::CreateTopics(response)) => response.topics[0].error_code,
                _ => -1,
            };
            if matches!(code, 0 | 36) {
                return;
            }
            if attempt % 20 == 0 {
                note(
                    shared,
                    started,
                    format!("creating the topic through weir-{node}: error {code}"),
                );
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    violation(
        shared,
        "a topic is created",
        "no node created the topic in 3,000 tries".into(),
    );
}

/// A producer id from any node, within `within` (`None` after that).
async fn init_producer_id(
    nodes: u64,
    shared: &SharedRef,
    rng: &mut Xoshiro256PlusPlus,
    within: Duration,
) -> Option<i64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let node = rng.random_range(1..=nodes);
        if let Some(id) = producer_id_from(node, shared).await {
            return Some(id);
        }
        sleep(Duration::from_millis(200)).await;
    }
    None
}

/// One InitProducerId to node `node`: the id it hands out, checked to be
/// one no node handed out before.
async fn producer_id_from(node: u64, shared: &SharedRef) -> Option<i64> {
    let mut client = connect(node).await?;
    let request = RequestKind::InitProducerId(
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    let response = call(&mut client, shared, ApiKey::InitProducerId, 2, &request).await;
    let Some(ResponseKind::InitProducerId(response)) = response else {
        return None;
    };
    if response.error_code != 0 {
        return None;
    }
    let id = response.producer_id.0;
    let mut state = shared.lock().expect("shared");
    let fresh = state.producer_ids.insert(id);
    let restarted = state.restarts.get(&node).copied().unwrap_or(0) > 0;
    drop(state);
    if !fresh {
        let evidence = format!("weir-{node} handed out id {id} again");
        violation(shared, "no producer id is handed out twice", evidence);
    }
    if restarted {
        reached(shared, "a node started again hands out producer ids");
    }
    Some(id)
}

/// Asks a random node for a producer id every 0.3 to 1.5 s while the
/// faults go on, as producers that start (and restart) do: ids handed
/// out across power losses, restarts and controller changes must never
/// repeat (a second producer under one id has its batches taken for the
/// first's duplicates: acknowledged, never written).
async fn hand_out_producer_ids(nodes: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    while !shared.lock().expect("shared").stop_producers {
        sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let node = rng.random_range(1..=nodes);
        producer_id_from(node, &shared).await;
    }
}

fn spawn_clients(world: &World) {
    let nodes = world.nodes.len() as u64;
    let (shared, started) = (Arc::clone(&world.shared), world.started);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(world.handle.seed() ^ 0x9e0d);
    world.client.spawn(async move {
        create_topic(nodes, &shared, &mut rng, started).await;
        note(&shared, started, format!("topic {TOPIC} created"));
        for producer in 0..PRODUCERS {
            let (shared, rng) = (
                Arc::clone(&shared),
                Xoshiro256PlusPlus::seed_from_u64(rng.random()),
            );
            madsim::task::spawn(produce(producer, nodes, shared, rng, started));
        }
        let consumer_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        madsim::task::spawn(consume(nodes, Arc::clone(&shared), consumer_rng));
        let committer_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        madsim::task::spawn(commit_offsets(nodes, Arc::clone(&shared), committer_rng));
        for node in 1..=nodes {
            let watcher_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
            madsim::task::spawn(watch_commits(node, Arc::clone(&shared), watcher_rng));
        }
        let plain_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        madsim::task::spawn(produce_plain(nodes, Arc::clone(&shared), plain_rng));
        for _ in 0..group::MEMBERS {
            let member_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
            let member = group::member(nodes, Arc::clone(&shared), member_rng, started);
            madsim::task::spawn(member);
        }
        let prober_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        madsim::task::spawn(probe_suspects(nodes, Arc::clone(&shared), prober_rng));
        let ids_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        madsim::task::spawn(hand_out_producer_ids(nodes, Arc::clone(&shared), ids_rng));
        let churn_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        let churn = churn::churn(nodes, Arc::clone(&shared), churn_rng, started);
        madsim::task::spawn(churn);
    });
}

/// The batch of one record `value` with the producer's sequence.
fn batch(producer_id: i64, sequence: i32, value: &str) -> Bytes {
    let mut bytes = Vec::new();
    let producer = ProducerInfo {
        producer_id,
        producer_epoch: 0,
        base_sequence: sequence,
    };
    encode(&[Record::value(1, value.as_bytes())], producer, &mut bytes).expect("a batch");
    Bytes::from(bytes)
}

/// The most produce requests a producer sends on one connection before
/// their responses: Kafka clients' `max.in.flight.requests.per.connection`
/// for idempotence.
const IN_FLIGHT_MAX: i32 = 5;

/// A batch of a producer's window, and the offset it was acknowledged at.
struct Pending {
    value: String,
    batch: Bytes,
    acked: Option<i64>,
}

/// One idempotent producer: windows of 1 to [`IN_FLIGHT_MAX`] batches of
/// one record `p<producer>-<partition>-<n>` to each partition in turn,
/// each window sent on one connection before its responses (as Kafka
/// clients pipeline), every batch retried with its sequence until it is
/// acknowledged.
async fn produce(
    producer: usize,
    nodes: u64,
    shared: SharedRef,
    mut rng: Xoshiro256PlusPlus,
    started: Instant,
) {
    let within = Duration::from_secs(600);
    let Some(producer_id) = init_producer_id(nodes, &shared, &mut rng, within).await else {
        let evidence = format!("producer {producer}: no id in 600 s");
        violation(&shared, "producers get an id", evidence);
        shared.lock().expect("shared").producers_done += 1;
        return;
    };
    note(
        &shared,
        started,
        format!("producer {producer} has id {producer_id}"),
    );
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut known: BTreeMap<i32, u64> = BTreeMap::new();
    let mut partition = 0;
    while !shared.lock().expect("shared").stop_producers {
        let first = sequences[partition as usize];
        let width = match rng.random_range(0..10) {
            0..=3 => 1,
            _ => rng.random_range(2..=IN_FLIGHT_MAX),
        };
        let mut window: Vec<Pending> = (first..first + width)
            .map(|sequence| {
                let value = format!("p{producer}-{partition}-{sequence}");
                let batch = batch(producer_id, sequence, &value);
                Pending {
                    value,
                    batch,
                    acked: None,
                }
            })
            .collect();
        loop {
            if shared.lock().expect("shared").stop_producers {
                break;
            }
            let sent = produce_window(&shared, &mut known, nodes, partition, &mut window, &mut rng);
            if let Err(evidence) = sent.await {
                violation(
                    &shared,
                    "an idempotent producer's retries are accepted",
                    evidence,
                );
                shared.lock().expect("shared").stop_producers = true;
                break;
            }
            if window.iter().all(|pending| pending.acked.is_some()) {
                sequences[partition as usize] = first + width;
                break;
            }
            sleep(Duration::from_millis(rng.random_range(5..100))).await;
        }
        partition = (partition + 1) % PARTITIONS;
    }
    shared.lock().expect("shared").producers_done += 1;
}

/// A producer without idempotence (no producer id, no sequences):
/// windows of 1 to [`IN_FLIGHT_MAX`] batches of one record
/// `plain-<partition>-n<n>` to each partition in turn, each window on one
/// connection before its responses, never retried (a record not
/// acknowledged is given up). Nothing but the connection orders its
/// batches, so the offsets they are acknowledged at must follow the order
/// their requests were sent in.
async fn produce_plain(nodes: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    let mut known: BTreeMap<i32, u64> = BTreeMap::new();
    let (mut partition, mut sent) = (0, 0u64);
    while !shared.lock().expect("shared").stop_producers {
        let width = rng.random_range(1..=IN_FLIGHT_MAX);
        let window: Vec<Pending> = (0..width)
            .map(|_| {
                sent += 1;
                let value = format!("plain-{partition}-n{sent}");
                let mut bytes = Vec::new();
                let record = [Record::value(1, value.as_bytes())];
                encode(&record, ProducerInfo::NONE, &mut bytes).expect("a batch");
                let batch = Bytes::from(bytes);
                Pending {
                    value,
                    batch,
                    acked: None,
                }
            })
            .collect();
        if !plain_window(&shared, &mut known, nodes, partition, &window, &mut rng).await {
            known.remove(&partition);
        }
        partition = (partition + 1) % PARTITIONS;
        sleep(Duration::from_millis(rng.random_range(5..60))).await;
    }
}

/// Sends a plain producer's window and checks the order of its
/// acknowledged offsets; false if the leader did not answer or refused.
async fn plain_window(
    shared: &SharedRef,
    known: &mut BTreeMap<i32, u64>,
    nodes: u64,
    partition: i32,
    window: &[Pending],
    rng: &mut Xoshiro256PlusPlus,
) -> bool {
    let Some(leader) = leader_of(shared, known, nodes, partition, rng).await else {
        return false;
    };
    let Some(mut client) = connect(leader).await else {
        return false;
    };
    let all: Vec<usize> = (0..window.len()).collect();
    if !send_window(&mut client, shared, partition, window, &all, (false, true)).await {
        return false;
    }
    let mut last: Option<(i64, &str)> = None;
    for pending in window {
        let Some(ResponseKind::Produce(response)) = receive(&mut client, shared).await else {
            return false;
        };
        let answer = &response.responses[0].partition_responses[0];
        if answer.error_code != 0 {
            return false;
        }
        let offset = answer.base_offset;
        if let Some((before, earlier)) = last.filter(|(before, _)| offset <= *before) {
            let evidence = format!(
                "partition {partition}: {} sent after {earlier} on one connection to weir-{leader}, \
                 acknowledged at {offset}, {earlier} at {before}",
                pending.value
            );
            violation(
                shared,
                "a connection's produce requests are applied in their order",
                evidence,
            );
        }
        last = Some((offset, &pending.value));
        if window.len() > 1 {
            reached(shared, "pipelined plain records acknowledged");
        }
        shared.lock().expect("shared").acked.push(Acked {
            partition,
            offset,
            value: pending.value.clone(),
        });
    }
    true
}

/// The leader of `partition`, as the producer knows it or a random node's
/// metadata says.
async fn leader_of(
    shared: &SharedRef,
    known: &mut BTreeMap<i32, u64>,
    nodes: u64,
    partition: i32,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<u64> {
    if let Some(leader) = known.get(&partition) {
        return Some(*leader);
    }
    *known = leaders(rng.random_range(1..=nodes), shared).await?;
    known.get(&partition).copied()
}

/// Sends the window's batches not yet acknowledged to the partition's
/// leader, one produce request each, all before the first response; half
/// the time a ListOffsets for the partition's end follows them on the same
/// connection. Reads the responses in order and keeps each batch's
/// offset. Violations: responses out of order or undecodable, and an end
/// below a record acknowledged before it on the same connection (the
/// broker must finish a connection's produce requests before a later
/// request). `Err` for an answer an idempotent producer's retry must never
/// get (OUT_OF_ORDER_SEQUENCE_NUMBER among them, unless a batch before it
/// in the window failed).
async fn produce_window(
    shared: &SharedRef,
    known: &mut BTreeMap<i32, u64>,
    nodes: u64,
    partition: i32,
    window: &mut [Pending],
    rng: &mut Xoshiro256PlusPlus,
) -> Result<(), String> {
    let Some(leader) = leader_of(shared, known, nodes, partition, rng).await else {
        return Ok(());
    };
    let Some(mut client) = connect(leader).await else {
        known.remove(&partition);
        return Ok(());
    };
    let unacked: Vec<usize> = (0..window.len())
        .filter(|at| window[*at].acked.is_none())
        .collect();
    let ask_end = rng.random_bool(0.5);
    let together = rng.random_bool(0.5);
    let how = (ask_end, together);
    if !send_window(&mut client, shared, partition, window, &unacked, how).await {
        known.remove(&partition);
        return Ok(());
    }
    if unacked.len() > 1 {
        reached(shared, "produce requests pipelined on a connection");
    }
    let mut highest: Option<i64> = None;
    let mut before: Option<bool> = None;
    for &at in &unacked {
        let Some(ResponseKind::Produce(response)) = receive(&mut client, shared).await else {
            known.remove(&partition);
            return Ok(());
        };
        let answer = &response.responses[0].partition_responses[0];
        let value = &window[at].value;
        match answer.error_code {
            0 => {
                let offset = answer.base_offset;
                window[at].acked = Some(offset);
                highest = highest.max(Some(offset));
                shared.lock().expect("shared").acked.push(Acked {
                    partition,
                    offset,
                    value: value.clone(),
                });
                before = Some(true);
            }
            // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC,
            // REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, NOT_ENOUGH_REPLICAS,
            // NOT_ENOUGH_REPLICAS_AFTER_APPEND: retriable.
            6 | 5 | 3 | 7 | 56 | 19 | 20 => {
                known.remove(&partition);
                before = Some(false);
            }
            // OUT_OF_ORDER_SEQUENCE_NUMBER after a batch before it failed.
            45 if before == Some(false) => {}
            code => return Err(format!("{value} refused with error {code}")),
        }
    }
    if ask_end {
        check_end(&mut client, shared, partition, highest).await;
    }
    Ok(())
}

/// Writes the produce requests of `window[unacked]`, then, if `ask_end`,
/// a ListOffsets of the partition's end: in one write if `together` (so
/// that the broker reads them at once), else one write each; false if the
/// connection failed.
async fn send_window(
    client: &mut KafkaClient,
    shared: &SharedRef,
    partition: i32,
    window: &[Pending],
    unacked: &[usize],
    (ask_end, together): (bool, bool),
) -> bool {
    if together {
        return send_together(client, shared, partition, window, unacked, ask_end).await;
    }
    for &at in unacked {
        let request = produce_of(partition, &window[at].batch);
        if !send(client, shared, ApiKey::Produce, 9, &request).await {
            return false;
        }
    }
    if !ask_end {
        return true;
    }
    let request = list_ends(partition..partition + 1);
    send(client, shared, ApiKey::ListOffsets, 5, &request).await
}

/// [`send_window`]'s requests, queued and written at once.
async fn send_together(
    client: &mut KafkaClient,
    shared: &SharedRef,
    partition: i32,
    window: &[Pending],
    unacked: &[usize],
    ask_end: bool,
) -> bool {
    let produces = unacked
        .iter()
        .map(|&at| produce_of(partition, &window[at].batch));
    let mut requests: Vec<(ApiKey, i16, RequestKind)> = produces
        .map(|request| (ApiKey::Produce, 9, request))
        .collect();
    if ask_end {
        requests.push((ApiKey::ListOffsets, 5, list_ends(partition..partition + 1)));
    }
    for (api, version, request) in &requests {
        if client.queue(*api, *version, request).is_err() {
            return false;
        }
    }
    shared.lock().expect("shared").operations += requests.len() as u64;
    reached(shared, "requests written together");
    matches!(timeout(REQUEST_TIMEOUT, client.flush()).await, Ok(Ok(())))
}

/// A produce request of one batch with acks=all.
fn produce_of(partition: i32, batch: &Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch.clone())),
                ])]),
    )
}

/// Reads the answer to a ListOffsets of the partition's end sent after
/// produce requests on the same connection: a record acknowledged before
/// it (`highest`) must be below that end.
async fn check_end(
    client: &mut KafkaClient,
    shared: &SharedRef,
    partition: i32,
    highest: Option<i64>,
) {
    let Some(ResponseKind::ListOffsets(response)) = receive(client, shared).await else {
        return;
    };
    let answer = &response.topics[0].partitions[0];
    let Some(highest) = highest else {
        return;
    };
    if answer.error_code != 0 {
        return;
    }
    reached(shared, "end read after produce requests on its connection");
    if answer.offset <= highest {
        violation(
            shared,
            "a request sees the produce requests its connection sent before it",
            format!(
                "partition {partition}: end {} after offset {highest} was acknowledged",
                answer.offset
            ),
        );
    }
}

// ------------------------------------------------------------ offsets

/// Commits offsets for group [`GROUP`] (a group without members, as a
/// client that manages its own assignment commits: generation -1), each
/// partition's higher than the last tried, to whichever node FindCoordinator
/// names, and reads them back: an offset acknowledged must be there in
/// every later read, whichever node coordinates the group by then, and no
/// read may go below an earlier one.
async fn commit_offsets(nodes: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    let mut coordinator: Option<u64> = None;
    while !shared.lock().expect("shared").stop_producers {
        sleep(Duration::from_millis(rng.random_range(5..100))).await;
        let node = match coordinator {
            Some(node) => node,
            None => match find_coordinator(GROUP, rng.random_range(1..=nodes), &shared).await {
                Some(node) => node,
                None => continue,
            },
        };
        coordinator = Some(node);
        let Some(mut client) = connect(node).await else {
            coordinator = None;
            continue;
        };
        let kept = if rng.random_bool(0.5) {
            let partition = rng.random_range(0..PARTITIONS);
            let offset = {
                let mut shared = shared.lock().expect("shared");
                let tried = shared.commits_tried.entry(partition).or_default();
                *tried += rng.random_range(1..50);
                *tried
            };
            commit(&mut client, &shared, partition, offset).await
        } else {
            read_commits(&mut client, &shared, node).await.is_some()
        };
        if !kept {
            coordinator = None;
        }
    }
}

/// The node that coordinates `group`, as node `asked` says.
async fn find_coordinator(group: &'static str, asked: u64, shared: &SharedRef) -> Option<u64> {
    let mut client = connect(asked).await?;
    let request = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(group))
            .with_key_type(0),
    );
    let ResponseKind::FindCoordinator(response) =
        call(&mut client, shared, ApiKey::FindCoordinator, 2, &request).await?
    else {
        return None;
    };
    (response.error_code == 0 && response.node_id.0 > 0).then_some(response.node_id.0 as u64)
}

/// Commits `offset` for `partition`; false if the coordinator refused it
/// or did not answer.
async fn commit(client: &mut KafkaClient, shared: &SharedRef, partition: i32, offset: i64) -> bool {
    let request = offset_commit(GROUP, (-1, ""), partition, offset);
    let Some(ResponseKind::OffsetCommit(response)) =
        call(client, shared, ApiKey::OffsetCommit, 7, &request).await
    else {
        return false;
    };
    if response.topics[0].partitions[0].error_code != 0 {
        return false;
    }
    reached(shared, "offset commit acknowledged");
    let mut shared = shared.lock().expect("shared");
    let acked = shared.commits_acked.entry(partition).or_default();
    *acked = (*acked).max(offset);
    true
}

/// An OffsetCommit of `offset` for `partition` of [`TOPIC`] by `group`'s
/// member (generation, member id; -1 and "" for a client without
/// membership).
fn offset_commit(
    group: &'static str,
    member: (i32, &str),
    partition: i32,
    offset: i64,
) -> RequestKind {
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_generation_id_or_member_epoch(member.0)
            .with_member_id(StrBytes::from_string(member.1.to_string()))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset),
                    ]),
            ]),
    )
}

fn offset_fetch() -> RequestKind {
    RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_indexes((0..PARTITIONS).collect()),
            ])),
    )
}

/// Reads the group's committed offsets from `node` and checks them; the
/// offsets read, or `None` if the node did not answer them.
async fn read_commits(
    client: &mut KafkaClient,
    shared: &SharedRef,
    node: u64,
) -> Option<BTreeMap<i32, i64>> {
    let floors = Floors::now(shared);
    let Some(ResponseKind::OffsetFetch(response)) =
        call(client, shared, ApiKey::OffsetFetch, 5, &offset_fetch()).await
    else {
        return None;
    };
    let read = offsets_read(&response)?;
    check_commits(shared, node, &floors, &read);
    Some(read)
}

/// Each partition's committed offset in an OffsetFetch answer without
/// errors.
fn offsets_read(response: &OffsetFetchResponse) -> Option<BTreeMap<i32, i64>> {
    if response.error_code != 0 {
        return None;
    }
    let mut read = BTreeMap::new();
    for answer in &response.topics.first()?.partitions {
        if answer.error_code != 0 {
            return None;
        }
        read.insert(answer.partition_index, answer.committed_offset);
    }
    Some(read)
}

/// Whether `node` leads the group of `topic`'s `partition` in the newest
/// term known: the newest any running node knows now, any node was seen
/// leading in (sampled every 50 ms), or an answer judged before came from.
/// (With five nodes and three replicas, every node that knows a newer
/// term may be down at once, while a deposed leader runs on.)
fn leads_in_the_newest_term(shared: &mut Shared, node: u64, topic: &str, partition: usize) -> bool {
    let views: Vec<_> = shared
        .clusters
        .iter()
        .filter_map(|(id, cluster)| {
            let metadata = cluster.metadata();
            let group = metadata.topics.get(topic)?.get(partition)?.group;
            Some((*id, group, cluster.handle().view(group)?))
        })
        .collect();
    let Some(&(_, group, _)) = views.first() else {
        return false;
    };
    let sampled = shared
        .leaders
        .range((group, 0)..=(group, u64::MAX))
        .next_back()
        .map(|((_, term), _)| *term);
    let judged = shared.judged_terms.get(&group).copied();
    let newest = views
        .iter()
        .map(|(_, _, view)| view.term)
        .chain(sampled)
        .chain(judged)
        .max();
    let leads = views
        .iter()
        .any(|(id, _, view)| *id == node && view.leader == Some(node) && Some(view.term) == newest);
    if let (true, Some(term)) = (leads, newest) {
        shared.judged_terms.insert(group, term);
    }
    leads
}

/// Checks offsets `node` answered against those acknowledged before the
/// read was sent (`floor`) and those read before. Only the answers of a
/// node that leads the offsets group in the newest term when they arrive
/// are judged: a coordinator cut off from the others answers from its own
/// state until it steps down (OffsetFetch names no epoch to fence it, in
/// Kafka as here), and a node that has stepped down is asked again.
fn check_commits(shared: &SharedRef, node: u64, floors: &Floors, read: &BTreeMap<i32, i64>) {
    let mut shared = shared.lock().expect("shared");
    if !leads_in_the_newest_term(&mut shared, node, OFFSETS_TOPIC, 0) {
        return;
    }
    *shared.coverage.entry("committed offsets read").or_default() += 1;
    for (&partition, &offset) in read {
        let acked = floors.commits_acked.get(&partition).copied().unwrap_or(-1);
        let seen = floors.commits_seen.get(&partition).copied().unwrap_or(-1);
        let tried = shared.commits_tried.get(&partition).copied().unwrap_or(-1);
        let evidence = format!(
            "partition {partition}: weir-{node} answered {offset} after {acked} was acknowledged and {seen} read"
        );
        if offset < acked || offset < seen {
            shared.violations.push(Violation {
                invariant: "committed offsets never move back",
                evidence,
            });
        } else if offset > tried {
            shared.violations.push(Violation {
                invariant: "a committed offset is one a client committed",
                evidence: format!("partition {partition}: read {offset}, highest tried {tried}"),
            });
        }
        let highest = shared.commits_seen.entry(partition).or_insert(-1);
        *highest = (*highest).max(offset);
    }
}

/// What a read must not go below, as it stood when the read was sent: the
/// commits acknowledged, and the offsets and ends answered (and judged)
/// before. Reads answered while this one was in flight are concurrent
/// with it and may be ordered either way.
struct Floors {
    commits_acked: BTreeMap<i32, i64>,
    commits_seen: BTreeMap<i32, i64>,
    ends_seen: BTreeMap<i32, i64>,
}

impl Floors {
    fn now(shared: &SharedRef) -> Self {
        let shared = shared.lock().expect("shared");
        Self {
            commits_acked: shared.commits_acked.clone(),
            commits_seen: shared.commits_seen.clone(),
            ends_seen: shared.ends_seen.clone(),
        }
    }
}

/// Asks node `node` for the group's committed offsets and the partitions'
/// ends every 10 to 40 ms, with short deadlines: a node that has just
/// become a leader is asked within its first round trips, when it could
/// answer before its commit index covers its predecessor's.
async fn watch_commits(node: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    const WAIT: Duration = Duration::from_millis(200);
    let mut client: Option<KafkaClient> = None;
    while !shared.lock().expect("shared").stop_producers {
        sleep(Duration::from_millis(rng.random_range(10..40))).await;
        if client.is_none() {
            let connected = timeout(WAIT, TcpStream::connect(kafka_address(node))).await;
            client = connected.ok().and_then(Result::ok).map(KafkaClient::new);
        }
        let Some(connection) = client.as_mut() else {
            continue;
        };
        let floors = Floors::now(&shared);
        shared.lock().expect("shared").operations += 2;
        // Both requests at once: one round trip a round.
        let answers = timeout(WAIT, async {
            connection
                .send(ApiKey::OffsetFetch, 5, &offset_fetch())
                .await?;
            connection
                .send(ApiKey::ListOffsets, 5, &list_ends(0..PARTITIONS))
                .await?;
            Ok::<_, std::io::Error>((connection.receive().await?, connection.receive().await?))
        });
        let Ok(Ok((ResponseKind::OffsetFetch(offsets), ResponseKind::ListOffsets(ends)))) =
            answers.await
        else {
            client = None;
            continue;
        };
        if let Some(read) = offsets_read(&offsets) {
            check_commits(&shared, node, &floors, &read);
        }
        check_ends(&shared, node, &floors, &ends);
    }
}

/// ListOffsets of the ends (high watermarks) of `partitions`.
fn list_ends(partitions: std::ops::Range<i32>) -> RequestKind {
    let partitions = partitions
        .map(|partition| {
            list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(-1)
        })
        .collect();
    RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(partitions)]),
    )
}

/// Checks that the ends `node` answered, for the partitions it leads in
/// the newest term, are not below an end answered before. A leader cut
/// off from the others answers until it steps down; a consumer that names
/// the newest epoch it saw fences it (KIP-320), this reader names none, so
/// only the newest term's leader is judged.
fn check_ends(shared: &SharedRef, node: u64, floors: &Floors, response: &ListOffsetsResponse) {
    let mut shared = shared.lock().expect("shared");
    let Some(topic) = response.topics.first() else {
        return;
    };
    for answer in topic
        .partitions
        .iter()
        .filter(|answer| answer.error_code == 0)
    {
        let partition = answer.partition_index;
        let index = usize::try_from(partition).unwrap_or(usize::MAX);
        if !leads_in_the_newest_term(&mut shared, node, TOPIC, index) {
            continue;
        }
        *shared.coverage.entry("end read from a leader").or_default() += 1;
        let seen = floors.ends_seen.get(&partition).copied().unwrap_or(0);
        if answer.offset < seen {
            shared.violations.push(Violation {
                invariant: "the high watermark never moves back for a reader",
                evidence: format!(
                    "partition {partition}: weir-{node} answered an end of {} after {seen}",
                    answer.offset
                ),
            });
        }
        let highest = shared.ends_seen.entry(partition).or_insert(0);
        *highest = (*highest).max(answer.offset);
    }
}

/// Fetches every partition from its leader, round after round, keeping
/// what it read; names the newest leader epoch it has seen (as Kafka's
/// consumers do, KIP-320), and checks that the high watermark it is told
/// never moves back.
async fn consume(nodes: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    let mut next = [0i64; PARTITIONS as usize];
    let mut epochs = [-1i32; PARTITIONS as usize];
    let mut high_watermarks = [0i64; PARTITIONS as usize];
    while !shared.lock().expect("shared").stop_all {
        let asked = rng.random_range(1..=nodes);
        let Some(found) = partitions_of(asked, &shared).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        for (partition, (named, epoch)) in found {
            let index = partition as usize;
            epochs[index] = epochs[index].max(epoch);
            // A third of the time, any node: one that answers must lead in
            // the epoch named or a newer one (a deposed leader is fenced).
            let leader = match rng.random_range(0..3) {
                0 => rng.random_range(1..=nodes),
                _ => named,
            };
            let fetched = fetch(&shared, leader, partition, next[index], epochs[index]).await;
            let (high_watermark, records) = match fetched {
                Some(Fetched::Records(high_watermark, records)) => (high_watermark, records),
                Some(Fetched::BelowStart(start)) => {
                    next[index] = start;
                    continue;
                }
                None => continue,
            };
            if high_watermark < high_watermarks[index] {
                let evidence = format!(
                    "partition {partition}: high watermark {high_watermark} from weir-{leader} \
                     after {} (epoch {})",
                    high_watermarks[index], epochs[index]
                );
                violation(
                    &shared,
                    "the high watermark never moves back for a consumer",
                    evidence,
                );
            }
            high_watermarks[index] = high_watermarks[index].max(high_watermark);
            if let Some((offset, _)) = records.iter().find(|(offset, _)| *offset >= high_watermark)
            {
                let evidence = format!(
                    "partition {partition}: offset {offset} read from weir-{leader}, whose high watermark is {high_watermark}"
                );
                violation(&shared, "reads stop at the high watermark", evidence);
            }
            for (offset, value) in records {
                let mut guard = shared.lock().expect("shared");
                if let Some(seen) = guard.read.get(&(partition, offset)) {
                    if *seen != value {
                        let evidence =
                            format!("partition {partition} offset {offset}: {seen} then {value}");
                        drop(guard);
                        violation(&shared, "one record per offset across reads", evidence);
                        continue;
                    }
                }
                guard.read.insert((partition, offset), value);
                next[index] = next[index].max(offset + 1);
            }
        }
        sleep(Duration::from_millis(rng.random_range(5..60))).await;
    }
}

/// Reads, naming no leader epoch (as clients before Fetch v9 do, e.g.
/// kafka-python), from the nodes the nemesis just cut off from their peers
/// or paused, at the furthest position a client may hold: the end another
/// node's leader reports (where a consumer reset to the latest offset
/// starts), or one past the last record read. A leader deposed without
/// knowing it yet may answer from its shorter log, but never that such a
/// position is out of range ([`fetch`] checks). Then at a position read
/// before, naming the leader epoch that node reported, which a deposed
/// leader must refuse.
async fn probe_suspects(nodes: u64, shared: SharedRef, mut rng: Xoshiro256PlusPlus) {
    while !shared.lock().expect("shared").stop_all {
        sleep(Duration::from_millis(rng.random_range(10..40))).await;
        let partition = rng.random_range(0..PARTITIONS);
        let (suspects, read) = {
            let shared = shared.lock().expect("shared");
            let read = shared
                .read
                .range((partition, 0)..(partition + 1, 0))
                .next_back()
                .map_or(0, |((_, offset), _)| offset + 1);
            let suspects: Vec<u64> = shared.suspects.keys().copied().collect();
            (suspects, read)
        };
        let others: Vec<u64> = (1..=nodes)
            .filter(|node| !suspects.contains(node))
            .collect();
        if suspects.is_empty() || others.is_empty() {
            continue;
        }
        let asked = others[rng.random_range(0..others.len())];
        let Some(found) = partitions_of(asked, &shared).await else {
            continue;
        };
        let Some(&(leader, epoch)) = found.get(&partition) else {
            continue;
        };
        if suspects.contains(&leader) {
            continue;
        }
        let Some(Fetched::Records(end, _)) = fetch(&shared, leader, partition, read, epoch).await
        else {
            continue;
        };
        let node = suspects[rng.random_range(0..suspects.len())];
        reached(
            &shared,
            "a node just cut off or paused read from without an epoch",
        );
        let _ = fetch(&shared, node, partition, end.max(read), -1).await;
        // And naming the epoch the other node reported, at a position read
        // before: a deposed leader must refuse it ([`fetch`] checks the term
        // of whoever answers).
        let earlier = rng.random_range(0..=read);
        let _ = fetch(&shared, node, partition, earlier, epoch).await;
    }
}

/// What a fetch returned: the high watermark and the records (offset,
/// value), or, for a position below the answering replica's log start
/// (retention deleted the records there), that log start, where a Kafka
/// consumer resets to (`auto.offset.reset=earliest`).
enum Fetched {
    Records(i64, Vec<(i64, String)>),
    BelowStart(i64),
}

/// One fetch at `offset` from `node`, naming leader epoch `epoch`.
async fn fetch(
    shared: &SharedRef,
    node: u64,
    partition: i32,
    offset: i64,
    epoch: i32,
) -> Option<Fetched> {
    let mut client = connect(node).await?;
    let request = RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(200)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(epoch)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    let ResponseKind::Fetch(response) =
        call(&mut client, shared, ApiKey::Fetch, 11, &request).await?
    else {
        return None;
    };
    let answer = response.responses.first()?.partitions.first()?;
    if answer.error_code == ResponseError::UnknownLeaderEpoch.code() {
        reached(shared, "a deposed leader refused a newer epoch");
    }
    if answer.error_code == ResponseError::OffsetOutOfRange.code()
        && offset < answer.log_start_offset
    {
        reached(shared, "a position below the log start reset to it");
        return Some(Fetched::BelowStart(answer.log_start_offset));
    }
    if answer.error_code == ResponseError::OffsetOutOfRange.code() {
        // Positions are 0, one past a record read below a high watermark,
        // or an offset committed after such reads: committed offsets, which
        // stay in range (retention aside, above). A Kafka consumer told
        // otherwise resets to its `auto.offset.reset`, skipping records or
        // reading them again: a deposed leader that did not fence a newer
        // epoch answers so from its shorter log.
        let evidence = format!(
            "partition {partition}: weir-{node} said offset {offset} is out of range (epoch {epoch} named; \
             after the answer: {}; the other nodes: {})",
            describe_replica(shared, node, partition),
            describe_others(shared, node, partition)
        );
        violation(
            shared,
            "a position reached by reading is never out of range",
            evidence,
        );
    }
    if answer.error_code != 0 {
        return None;
    }
    if epoch >= 0 {
        check_answered_in_epoch(shared, node, partition, epoch);
    }
    let mut bytes = answer.records.clone().unwrap_or_default();
    let mut decoded = Vec::new();
    // Every batch of the answer (weir returns whole batches only).
    while !bytes.is_empty() {
        match kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => decoded.extend(set.records),
            Err(error) => {
                let evidence = format!(
                    "partition {partition}: a fetch at {offset} from weir-{node} returned a batch \
                     that does not decode ({error}), {} bytes before the end",
                    bytes.len()
                );
                violation(shared, "fetched batches decode", evidence);
                return None;
            }
        }
    }
    let records = decoded
        .into_iter()
        .filter(|record| record.offset >= offset)
        .map(|record| {
            let value = record
                .value
                .map(|value| String::from_utf8_lossy(&value[..]).into_owned());
            (record.offset, value.unwrap_or_default())
        })
        .collect();
    Some(Fetched::Records(answer.high_watermark, records))
}

/// A node's replica of `partition` as the node sees it now: its term,
/// leader, high watermark and log end (for a violation's evidence).
fn describe_replica(shared: &SharedRef, node: u64, partition: i32) -> String {
    let shared = shared.lock().expect("shared");
    let view = shared.clusters.get(&node).and_then(|cluster| {
        let metadata = cluster.metadata();
        let group = metadata.topics.get(TOPIC)?.get(partition as usize)?.group;
        cluster.handle().view(group)
    });
    let end = shared
        .brokers
        .get(&node)
        .and_then(|broker| broker.partition(TOPIC, partition as u32).ok())
        .map(|log| log.log_end_offset());
    match view {
        Some(view) => format!(
            "term {}, leader {:?}, high watermark {}, log end {end:?}",
            view.term, view.leader, view.high_watermark
        ),
        None => format!("no replica open, log end {end:?}"),
    }
}

/// Every other running node's replica of `partition` ([`describe_replica`]).
fn describe_others(shared: &SharedRef, node: u64, partition: i32) -> String {
    let others: Vec<u64> = {
        let shared = shared.lock().expect("shared");
        shared
            .clusters
            .keys()
            .copied()
            .filter(|id| *id != node)
            .collect()
    };
    let described: Vec<String> = others
        .into_iter()
        .map(|id| format!("weir-{id} {}", describe_replica(shared, id, partition)))
        .collect();
    described.join("; ")
}

/// A read naming leader epoch `epoch` is answered by the leader of that
/// epoch only: a node still in an older term is a deposed leader that has
/// not heard of the new one, and must refuse it (UNKNOWN_LEADER_EPOCH, as
/// KIP-320 has Kafka do), not answer from its stale state. Terms never go
/// down, so a term below `epoch` seen after the answer was below it when
/// the node answered.
fn check_answered_in_epoch(shared: &SharedRef, node: u64, partition: i32, epoch: i32) {
    let term = {
        let shared = shared.lock().expect("shared");
        shared.clusters.get(&node).and_then(|cluster| {
            let metadata = cluster.metadata();
            let group = metadata.topics.get(TOPIC)?.get(partition as usize)?.group;
            cluster.handle().view(group).map(|view| view.term)
        })
    };
    if let Some(term) = term.filter(|term| *term < epoch as u64) {
        let evidence = format!(
            "partition {partition}: weir-{node}, in term {term}, answered a fetch naming leader epoch {epoch}"
        );
        violation(
            shared,
            "a read naming a leader epoch is answered in that epoch",
            evidence,
        );
    }
}

// ------------------------------------------------------------ the nemesis

async fn fault_phase(world: &mut World) {
    let steps = world.rng.random_range(40..80);
    for _ in 0..steps {
        sleep(Duration::from_millis(world.rng.random_range(200..1500))).await;
        match world.rng.random_range(0..13) {
            0..=2 => kill_or_restart(world).await,
            3 | 4 => isolate(world).await,
            7 if world.replaced.is_none() && world.rng.random_bool(0.3) => replace_node(world),
            9 => disk_errors(world).await,
            12 if rots(world.handle.seed()) && world.rng.random_bool(0.5) => rot(world),
            12 if writes_go_astray(world.handle.seed()) && world.rng.random_bool(0.5) => {
                astray_writes(world).await
            }
            12 => read_faults(world).await,
            10 => pause(world).await,
            11 => bridge(world).await,
            5 => {
                let loss = world.rng.random_range(0.0..0.2);
                set_links(loss, 1..world.rng.random_range(2..40));
                world.note(format!("links: loss {loss:.2}"));
                count(&world.shared, "lossy links");
            }
            6 => {
                let (id, (_, _, clock)) = pick(&world.nodes, &mut world.rng);
                let jump = world.rng.random_range(-3_000..60_000i64);
                clock
                    .offset_ms
                    .fetch_add(jump, std::sync::atomic::Ordering::SeqCst);
                world.note(format!("weir-{id}'s clock moves by {jump} ms"));
                count(&world.shared, "clock jump");
            }
            _ => set_links(0.0, 1..5),
        }
    }
}

fn pick<'a, V>(map: &'a BTreeMap<u64, V>, rng: &mut Xoshiro256PlusPlus) -> (u64, &'a V) {
    let index = rng.random_range(0..map.len());
    let (id, value) = map.iter().nth(index).expect("an index below the length");
    (*id, value)
}

fn set_links(loss: f64, latency_ms: std::ops::Range<u64>) {
    NetSim::current().update_config(|config| {
        config.packet_loss_rate = loss;
        config.send_latency =
            Duration::from_millis(latency_ms.start)..Duration::from_millis(latency_ms.end);
    });
}

impl World {
    fn note(&self, text: String) {
        note(&self.shared, self.started, text);
    }

    /// Power loss of a node.
    fn kill(&mut self, id: u64) {
        self.shared.lock().expect("shared").closed.remove(&id);
        self.stop(id, true);
        count(&self.shared, "power loss");
    }

    /// Ends node `id`'s process; with `power_loss`, what its disk had not
    /// made durable is lost too.
    fn stop(&mut self, id: u64, power_loss: bool) {
        let (node, disk, _) = &self.nodes[&id];
        self.handle.kill(node.id());
        if power_loss {
            disk.crash();
        }
        let mut shared = self.shared.lock().expect("shared");
        shared.brokers.remove(&id);
        shared.clusters.remove(&id);
        shared.stoppers.remove(&id);
        shared.nodes_changed = Some(Instant::now());
        drop(shared);
        self.down.insert(id);
        self.note(match power_loss {
            true => format!("weir-{id} loses power"),
            false => format!("weir-{id}'s process ends"),
        });
    }

    /// The nodes that are down but not gone for good.
    fn down_for_now(&self) -> Vec<u64> {
        let gone = self.replaced.map(|(old, _)| old);
        self.down
            .iter()
            .copied()
            .filter(|id| Some(*id) != gone)
            .collect()
    }

    /// The nodes in the cluster (not gone for good).
    fn members(&self) -> usize {
        self.nodes.len() - usize::from(self.replaced.is_some())
    }

    /// Whether one more node may lose stored data (rot, writes astray)
    /// with a majority of every partition's replicas still holding it: a
    /// node gone for good counts as one without it (its replicas may not
    /// have moved yet, and the new node starts empty). Cluster seed 149
    /// rotted one of the two nodes left after a replacement, whose repair
    /// then had no majority to come from: no leader, as it must be.
    fn may_lose_data(&self) -> bool {
        let minority = (self.members() - 1) / 2;
        self.down_for_now().len() + usize::from(self.replaced.is_some()) < minority
    }

    fn restart(&mut self, id: u64) {
        let (node, _, _) = &self.nodes[&id];
        self.handle.restart(node.id());
        self.down.remove(&id);
        let mut shared = self.shared.lock().expect("shared");
        *shared.restarts.entry(id).or_default() += 1;
        shared.nodes_changed = Some(Instant::now());
        drop(shared);
        self.note(format!("weir-{id} restarts"));
    }
}

/// Kills a node (keeping a majority up), a quarter of the time through a
/// clean shutdown, or restarts a dead one.
async fn kill_or_restart(world: &mut World) {
    let minority = (world.members() - 1) / 2;
    let down = world.down_for_now();
    if !down.is_empty() && (down.len() >= minority || world.rng.random_bool(0.5)) {
        world.restart(down[0]);
        return;
    }
    let up: Vec<u64> = world
        .nodes
        .keys()
        .filter(|id| !world.down.contains(id))
        .copied()
        .collect();
    let id = up[world.rng.random_range(0..up.len())];
    if world.rng.random_bool(0.25) {
        clean_stop(world, id).await;
    } else {
        world.kill(id);
    }
}

/// Stops node `id` as SIGTERM stops `weir serve`: its Kafka listener
/// stops, its topics close cleanly ([`close_cleanly`]) and the process
/// ends; half the time the machine then loses power too (closing made
/// every topic durable). A node not serving (starting, or stopping on
/// its own) just loses power.
async fn clean_stop(world: &mut World, id: u64) {
    let stopper = world.shared.lock().expect("shared").stoppers.remove(&id);
    let Some(stopper) = stopper else {
        world.kill(id);
        return;
    };
    world.note(format!("weir-{id} is asked to shut down"));
    count(&world.shared, "clean shutdown");
    stopper.request();
    for _ in 0..100 {
        if world
            .shared
            .lock()
            .expect("shared")
            .closed
            .contains_key(&id)
        {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let power_loss = world.rng.random_bool(0.5);
    world.stop(id, power_loss);
}

/// Cuts a node off (both ways, or only in or out) for a while.
async fn isolate(world: &mut World) {
    let (id, (node, _, _)) = pick(&world.nodes, &mut world.rng);
    let node = node.id();
    let net = NetSim::current();
    let direction = world.rng.random_range(0..4);
    // 3: cut off from the other nodes only; clients still reach it (a
    // leader cut off so serves them until it steps down).
    let peers: Vec<madsim::task::NodeId> = world
        .nodes
        .values()
        .map(|(other, _, _)| other.id())
        .filter(|other| *other != node)
        .collect();
    if direction == 3 {
        suspect(&world.shared, id, true);
    }
    match direction {
        0 => net.clog_node(node),
        1 => net.clog_node_in(node),
        2 => net.clog_node_out(node),
        _ => peers.iter().for_each(|peer| {
            net.clog_link(node, *peer);
            net.clog_link(*peer, node);
        }),
    }
    let lasting = Duration::from_millis(world.rng.random_range(300..5000));
    world.note(format!("weir-{id} cut off ({direction}) for {lasting:?}"));
    count(&world.shared, "partition");
    sleep(lasting).await;
    net.unclog_node(node);
    for peer in &peers {
        net.unclog_link(node, *peer);
        net.unclog_link(*peer, node);
    }
    if direction == 3 {
        suspect(&world.shared, id, false);
    }
}

/// Stops a node's tasks for a while (a process stall: a GC pause, a VM
/// migration); its peers take it for dead, then it resumes.
async fn pause(world: &mut World) {
    let (id, (node, _, _)) = pick(&world.nodes, &mut world.rng);
    if world.down.contains(&id) {
        return;
    }
    let node = node.id();
    let lasting = Duration::from_millis(world.rng.random_range(100..3000));
    world.note(format!("weir-{id} paused for {lasting:?}"));
    count(&world.shared, "pause");
    suspect(&world.shared, id, true);
    world.handle.pause(node);
    sleep(lasting).await;
    world.handle.resume(node);
    // Resumed, it may lead on in its old term until a message of the new
    // one reaches it: a suspect for a second more.
    let shared = Arc::clone(&world.shared);
    world.client.spawn(async move {
        sleep(Duration::from_secs(1)).await;
        suspect(&shared, id, false);
    });
}

/// A node is gone for good (power lost, never back): a new node joins and
/// a client moves every replica of the old one to it with
/// AlterPartitionReassignments (the topic's partitions, the offsets
/// topic's and the metadata log's), retrying until the metadata shows the
/// moves done; the nemesis goes on meanwhile.
fn replace_node(world: &mut World) {
    if !world.down_for_now().is_empty() {
        return;
    }
    let (old, (_, disk, _)) = pick(&world.nodes, &mut world.rng);
    if world.damaged.iter().any(|id| *id != old) {
        // Another node's data was damaged: losing this one could leave
        // some records on a minority (cluster seed 134 in the twenty-first
        // session: writes astray on weir-1, then weir-2 replaced, left a
        // partition whose entries only weir-1 had synced).
        return;
    }
    let crash = disk.faults().crash;
    world.kill(old);
    let new = world.nodes.keys().max().expect("nodes") + 1;
    world.replaced = Some((old, new));
    if world.handle.seed() % 4 == 3 {
        if registered(&world.shared, old) {
            wipe_and_restart(world, old);
        } else {
            // GUARANTEES.md leaves out a disk lost before the node's
            // registration reached its peers (cluster seed 283): none of
            // them can tell that the node voted.
            world.note(format!("weir-{old} is not registered yet: not wiped"));
            reached(
                &world.shared,
                "a node gone before it registered is not wiped",
            );
        }
    }
    let peers = format!(
        "{},{new}={}",
        world.peers,
        SocketAddr::from((node_ip(new), CLUSTER_PORT))
    );
    let disk = SimDisk::with_faults(
        world.rng.random(),
        Faults {
            crash,
            ..Faults::default()
        },
    );
    let clock = Arc::new(NodeClock::default());
    let (shared, started) = (&world.shared, world.started);
    let node = start_node(
        &world.handle,
        new,
        &peers,
        true,
        &disk,
        &clock,
        shared,
        started,
    );
    world.nodes.insert(new, (node, disk, clock));
    world.shared.lock().expect("shared").nodes_changed = Some(Instant::now());
    world.note(format!(
        "weir-{old} is gone for good: weir-{new} joins to replace it"
    ));
    count(&world.shared, "node replaced");
    let (shared, nodes) = (Arc::clone(&world.shared), new);
    let rng = Xoshiro256PlusPlus::seed_from_u64(world.rng.random());
    world
        .client
        .spawn(move_replicas(old, new, nodes, shared, started, rng));
}

/// Whether a running node's applied metadata registers `node`.
fn registered(shared: &SharedRef, node: u64) -> bool {
    let shared = shared.lock().expect("shared");
    shared
        .clusters
        .values()
        .any(|cluster| cluster.metadata().nodes.contains_key(&node))
}

/// The disk of node `old`, gone for good, is replaced by an empty one and
/// the node started again under its id (an operator's mistake, or a
/// supervisor's restart after a disk swap): it must refuse to take part
/// (`run_wiped_node`), or it could vote away what it acknowledged.
fn wipe_and_restart(world: &mut World, old: u64) {
    let (node, disk, _) = &world.nodes[&old];
    let root = disk.root();
    let entries = root.list().expect("the root of a powered-off disk");
    for entry in entries {
        let removed = match entry.kind {
            weir_io::EntryKind::Directory => root.remove_dir_all(&entry.name),
            _ => root.remove_file(&entry.name),
        };
        removed.expect("a removal on a powered-off disk");
    }
    root.sync_dir().expect("a sync on a powered-off disk");
    let mut shared = world.shared.lock().expect("shared");
    shared.wiped = Some((old, false));
    shared.nodes_changed = Some(Instant::now());
    drop(shared);
    world.handle.restart(node.id());
    world.note(format!(
        "weir-{old} starts again on an empty disk under its id"
    ));
    count(&world.shared, "node started on an empty disk");
}

/// The moves still to make: each partition (of the topic, the offsets
/// topic and the metadata log) whose replicas, as a running node's
/// metadata says, include `old`, with `new` in its place (or another node,
/// or none, where it has `new` already). `None` until a
/// running node knows `new` and the topic.
fn replacement_plan(
    shared: &SharedRef,
    old: u64,
    new: u64,
) -> Option<Vec<(String, i32, Vec<i32>)>> {
    let shared = shared.lock().expect("shared");
    let cluster = shared.clusters.values().next()?;
    let metadata = cluster.metadata();
    if !metadata.nodes.contains_key(&new) || !metadata.topics.contains_key(TOPIC) {
        return None;
    }
    let others: Vec<u64> = metadata
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old)
        .collect();
    let swap = |replicas: &[u64]| -> Option<Vec<i32>> {
        if !replicas.contains(&old) {
            return None;
        }
        // `new` in the place of `old`; where the partition has `new`
        // already (a topic created after `new` joined, while `old` was
        // still registered: cluster seed 489), another node it lacks.
        let stand_in = std::iter::once(new)
            .chain(others.iter().copied())
            .find(|id| !replicas.contains(id));
        let target = replicas
            .iter()
            .filter_map(|id| if *id == old { stand_in } else { Some(*id) })
            .map(|id| id as i32)
            .collect();
        Some(target)
    };
    let mut plan = Vec::new();
    for name in [TOPIC, "__consumer_offsets"] {
        for (index, assignment) in metadata.topics.get(name).into_iter().flatten().enumerate() {
            if let Some(target) = swap(&assignment.replicas) {
                plan.push((name.to_string(), index as i32, target));
            }
        }
    }
    // The metadata log's voters (group 1), as this node's replica knows them.
    let voters = cluster
        .handle()
        .view(1)
        .map(|view| view.voters)
        .unwrap_or_default();
    if let Some(target) = swap(&voters) {
        plan.push(("__cluster_metadata".to_string(), 0, target));
    }
    Some(plan)
}

async fn move_replicas(
    old: u64,
    new: u64,
    nodes: u64,
    shared: SharedRef,
    started: Instant,
    mut rng: Xoshiro256PlusPlus,
) {
    loop {
        sleep(Duration::from_millis(500)).await;
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(plan) = replacement_plan(&shared, old, new) else {
            continue;
        };
        if plan.is_empty() {
            shared.lock().expect("shared").replacement_done = true;
            note(
                &shared,
                started,
                format!("every replica of weir-{old} moved to weir-{new}"),
            );
            return;
        }
        let node = rng.random_range(1..=nodes);
        let Some(mut client) = connect(node).await else {
            continue;
        };
        let topics = plan
            .iter()
            .map(|(name, partition, target)| {
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(*partition)
                            .with_replicas(Some(target.iter().copied().map(BrokerId).collect())),
                    ])
            })
            .collect();
        let request = RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(topics),
        );
        let answer = call(
            &mut client,
            &shared,
            ApiKey::AlterPartitionReassignments,
            0,
            &request,
        )
        .await;
        if let Some(ResponseKind::AlterPartitionReassignments(response)) = answer {
            let codes: Vec<i16> = response
                .responses
                .iter()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .map(|partition| partition.error_code)
                })
                .collect();
            note(
                &shared,
                started,
                format!("reassignments through weir-{node}: errors {codes:?}"),
            );
        }
    }
}

/// A node's disk fails writes and syncs with EIO (some writes after a
/// prefix), or is full (writes fail with ENOSPC), for a while; the node
/// must stop using what it could not make
/// durable (its replication stops on a storage error), and is then power
/// cycled, as a supervisor restarts a node whose disk failed: it recovers
/// from what the disk holds. Keeps a majority of nodes without trouble.
async fn disk_errors(world: &mut World) {
    let minority = (world.members() - 1) / 2;
    if world.down_for_now().len() >= minority {
        return;
    }
    let (id, (_, disk, _)) = pick(&world.nodes, &mut world.rng);
    if world.down.contains(&id) {
        return;
    }
    let probability = world.rng.random_range(0.01..0.2);
    let lasting = Duration::from_millis(world.rng.random_range(100..2000));
    // A third of the time the disk is full: writes fail with ENOSPC,
    // syncs do not fail.
    let full = world.rng.random_bool(0.33);
    let healthy = disk.faults();
    disk.set_faults(Faults {
        write_error: if full { 0.0 } else { probability },
        no_space: if full { probability } else { 0.0 },
        sync_failure: if full { 0.0 } else { probability },
        ..healthy.clone()
    });
    world.note(format!(
        "weir-{id}'s disk {} ({probability:.2}) for {lasting:?}",
        if full {
            "is full: writes fail with ENOSPC"
        } else {
            "fails writes and syncs"
        }
    ));
    if full {
        count(&world.shared, "disk full");
    }
    count(&world.shared, "disk errors");
    sleep(lasting).await;
    let (_, disk, _) = &world.nodes[&id];
    disk.set_faults(healthy);
    world.kill(id);
}

/// Reads on one node's disk flip bits, and now and then fail, for a
/// while (the disk holds good data). Half the time the node is power
/// cycled as they begin, so that it recovers its logs while they do: a
/// flipped read judged as a torn tail would cut synced records (its vote,
/// entries it acknowledged). If reads failed, the node is power cycled at
/// the end, as after other disk errors (a failed read of the Raft log
/// stops its replication).
async fn read_faults(world: &mut World) {
    let (id, (_, disk, _)) = pick(&world.nodes, &mut world.rng);
    if world.down.contains(&id) {
        return;
    }
    let healthy = disk.faults();
    let flips = world.rng.random_range(0.01..0.3);
    let errors = if world.rng.random_bool(0.3) {
        world.rng.random_range(0.001..0.05)
    } else {
        0.0
    };
    disk.set_faults(Faults {
        read_corruption: flips,
        read_error: errors,
        ..healthy.clone()
    });
    let minority = (world.members() - 1) / 2;
    let recover = world.down_for_now().len() < minority && world.rng.random_bool(0.5);
    let lasting = Duration::from_millis(world.rng.random_range(200..3000));
    world.note(format!(
        "weir-{id}'s disk flips bits in reads ({flips:.2}) and fails them ({errors:.3}) for {lasting:?}{}",
        if recover { ", from a power cycle" } else { "" }
    ));
    count(&world.shared, "read faults");
    if recover {
        world.kill(id);
        world.restart(id);
        count(&world.shared, "recovery under read faults");
    }
    sleep(lasting).await;
    let (_, disk, _) = &world.nodes[&id];
    disk.set_faults(healthy);
    if errors > 0.0 && !world.down.contains(&id) {
        world.kill(id);
        world.restart(id);
    }
}

/// Bit rot at rest: a node loses power, one to three bytes of its stored
/// cluster data flip (any file of the replicated logs' directories:
/// segments, Raft side files, indexes, checkpoints, leader epochs,
/// producer snapshots, group markers, topic metadata; and the files of
/// `cluster/` and `kafka/`: the node marker, the producer-id floor; synced
/// or not), and it starts again. Its replicas must find the damage, never
/// serve or count what rotted, and get the records back from their peers;
/// small files that say what a directory is must not close it for good.
fn rot(world: &mut World) {
    let (id, (_, disk, _)) = pick(&world.nodes, &mut world.rng);
    if world.down.contains(&id) || !world.may_lose_data() {
        return;
    }
    let disk = Arc::clone(disk);
    world.kill(id);
    world.damaged.insert(id);
    let mut files = Vec::new();
    stored_files(&disk.root(), "", &mut files);
    // Every replicated log (the topic's partitions, the consumer offsets
    // topic, the cluster metadata group: every file of their directories)
    // and the node's cluster and Kafka state.
    files.retain(|(path, length)| {
        let replicated = path.contains(&format!("/{TOPIC}/"))
            || path.contains(&format!("/{OFFSETS_TOPIC}/"))
            || path.starts_with("cluster/");
        *length > 0 && (replicated || path.starts_with("kafka/"))
    });
    // One to three flips in the logs' records (segments and Raft side
    // files), as before the sixteenth session; half the time one more
    // in another file (indexes, checkpoints, leader epochs, producer
    // snapshots, group markers, topic metadata, the node marker, the
    // producer-id floor).
    let (records, small): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|(path, _)| path.ends_with(".log") || path.ends_with("/raft-log"));
    for _ in 0..world.rng.random_range(1..=3) {
        flip_a_bit(world, id, &disk, &records);
    }
    if world.rng.random_bool(0.5) {
        flip_a_bit(world, id, &disk, &small);
        count(&world.shared, "bit rot in a small file");
    }
    world.restart(id);
}

/// Flips one bit at rest in one of `files` (path, length) of node `id`.
fn flip_a_bit(world: &mut World, id: u64, disk: &SimDisk, files: &[(String, u64)]) {
    if files.is_empty() {
        return;
    }
    let (path, length) = &files[world.rng.random_range(0..files.len())];
    let offset = world.rng.random_range(0..*length);
    let mask = 1u8 << world.rng.random_range(0..8);
    disk.corrupt(path, offset, mask).expect("a listed file");
    world.note(format!("weir-{id}: a bit of {path} rots at byte {offset}"));
    count(&world.shared, "bit rot");
}

/// A node's disk stores some writes wrong for a while, silently: a bit
/// flipped, or the bytes 1 to 64 sectors away from where they belong
/// (which keeps its old bytes). The node runs on; its replicas must find
/// the damage when they read it (for a follower, a consumer, the scrub)
/// or at their next start, never serve it or count it, and repair from
/// their peers. Half the time the node is power cycled after. Keeps a
/// majority of nodes without trouble.
async fn astray_writes(world: &mut World) {
    let (id, (_, disk, _)) = pick(&world.nodes, &mut world.rng);
    if world.down.contains(&id) || !world.may_lose_data() {
        return;
    }
    let healthy = disk.faults();
    world.damaged.insert(id);
    let flips = world.rng.random_range(0.0..0.02);
    let misdirected = world.rng.random_range(0.0..0.02);
    disk.set_faults(Faults {
        write_corruption: flips,
        write_misdirection: misdirected,
        ..healthy.clone()
    });
    let lasting = Duration::from_millis(world.rng.random_range(100..2000));
    world.note(format!(
        "weir-{id}'s disk stores writes wrong for {lasting:?}: bits flipped ({flips:.3}), misdirected ({misdirected:.3})"
    ));
    count(&world.shared, "writes astray");
    sleep(lasting).await;
    let (_, disk, _) = &world.nodes[&id];
    disk.set_faults(healthy);
    if world.rng.random_bool(0.5) && !world.down.contains(&id) {
        world.kill(id);
        world.restart(id);
    }
}

/// Every file under `dir`, by path from the disk's root, with its length.
fn stored_files(dir: &dyn Storage, prefix: &str, files: &mut Vec<(String, u64)>) {
    for entry in dir.list().unwrap_or_default() {
        let path = if prefix.is_empty() {
            entry.name.clone()
        } else {
            format!("{prefix}/{}", entry.name)
        };
        match entry.kind {
            weir_io::EntryKind::Directory => {
                if let Ok(sub) = dir.open_dir(&entry.name) {
                    stored_files(sub.as_ref(), &path, files);
                }
            }
            _ => {
                let length = dir
                    .open_file(&entry.name, weir_io::OpenMode::Existing)
                    .and_then(|file| file.len())
                    .unwrap_or(0);
                files.push((path, length));
            }
        }
    }
}

/// Splits the nodes in two halves that cannot reach each other, but both
/// reach one bridge node.
async fn bridge(world: &mut World) {
    let ids: Vec<u64> = world.nodes.keys().copied().collect();
    let bridge = ids[world.rng.random_range(0..ids.len())];
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != bridge).collect();
    let half = others.len() / 2;
    let (left, right) = others.split_at(half);
    let net = NetSim::current();
    let links: Vec<(madsim::task::NodeId, madsim::task::NodeId)> = left
        .iter()
        .flat_map(|a| right.iter().map(move |b| (*a, *b)))
        .flat_map(|(a, b)| {
            let (a, b) = (world.nodes[&a].0.id(), world.nodes[&b].0.id());
            [(a, b), (b, a)]
        })
        .collect();
    for (a, b) in &links {
        net.clog_link(*a, *b);
    }
    let lasting = Duration::from_millis(world.rng.random_range(500..5000));
    world.note(format!(
        "{left:?} and {right:?} cut apart, weir-{bridge} between them, for {lasting:?}"
    ));
    count(&world.shared, "bridge partition");
    sleep(lasting).await;
    for (a, b) in &links {
        net.unclog_link(*a, *b);
    }
}

async fn heal(world: &mut World) {
    set_links(0.0, 1..5);
    for (node, _, _) in world.nodes.values() {
        NetSim::current().unclog_node(node.id());
    }
    for id in world.down_for_now() {
        world.restart(id);
    }
    world.note("healed".into());
    world.shared.lock().expect("shared").healed = true;
    sleep(Duration::from_secs(5)).await;
    world.shared.lock().expect("shared").stop_producers = true;
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.shared.lock().expect("shared").producers_done < PRODUCERS {
        if Instant::now() > deadline {
            violation(
                &world.shared,
                "producers finish after healing",
                "a producer still waits 60 s after healing".into(),
            );
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    // A churn cycle tries each step for at most 15 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !world.shared.lock().expect("shared").churn.done {
        if Instant::now() > deadline {
            let evidence = format!("the {} client still runs 90 s after healing", churn::CHURN);
            violation(&world.shared, "producers finish after healing", evidence);
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------ checks

async fn final_checks(world: &World) {
    liveness(world).await;
    leaders_named(world).await;
    controllers_named(world).await;
    commits_kept(world).await;
    group::consumes_everything(world).await;
    replacement_finishes(world).await;
    let caught_up = replicas_catch_up(world).await;
    world.shared.lock().expect("shared").stop_all = true;
    let shared = world.shared.lock().expect("shared");
    let mut problems = Vec::new();
    let logs: BTreeMap<u64, BTreeMap<(i32, i64), String>> = shared
        .brokers
        .iter()
        .map(|(id, broker)| (*id, committed(broker)))
        .collect();
    // Where each replica's records begin (retention deleted those before).
    let starts: BTreeMap<(u64, i32), i64> = shared
        .brokers
        .iter()
        .flat_map(|(id, broker)| {
            (0..PARTITIONS).filter_map(move |partition| {
                let log = broker.partition(TOPIC, partition as u32).ok()?;
                Some(((*id, partition), log.log_start_offset() as i64))
            })
        })
        .collect();
    let start_of = |id: u64, partition: i32| starts.get(&(id, partition)).copied().unwrap_or(0);
    let retention_deleted = starts.values().any(|start| *start > 0);
    if !retains(world.handle.seed()) {
        // Without retention nothing deletes a replica's records: a log
        // start above 0 would hide lost records from the checks below.
        for ((id, partition), start) in starts.iter().filter(|(_, start)| **start > 0) {
            problems.push((
                "a replica's records go only to retention",
                format!("weir-{id}: partition {partition} starts at {start}"),
            ));
        }
    }
    // The groups' committed offsets are rebuilt from the offsets topic's
    // first record: retention must never touch it.
    for (id, broker) in &shared.brokers {
        if let Ok(log) = broker.partition(OFFSETS_TOPIC, 0) {
            if log.log_start_offset() > 0 {
                problems.push((
                    "the consumer offsets topic keeps every record",
                    format!(
                        "weir-{id}: {OFFSETS_TOPIC} starts at {}",
                        log.log_start_offset()
                    ),
                ));
            }
        }
    }
    // No two replicas hold different records at one offset.
    let mut union: BTreeMap<(i32, i64), (u64, String)> = BTreeMap::new();
    for (id, log) in &logs {
        for (at, value) in log {
            match union.get(at) {
                Some((other, seen)) if seen != value => problems.push((
                    "replicas agree at every offset",
                    format!("{at:?}: weir-{other} has {seen}, weir-{id} has {value}"),
                )),
                Some(_) => {}
                None => {
                    union.insert(*at, (*id, value.clone()));
                }
            }
        }
    }
    // Every acknowledged record, at its offset, on every caught-up replica.
    for acked in &shared.acked {
        let at = (acked.partition, acked.offset);
        let replicas = shared
            .replicas
            .get(&acked.partition)
            .cloned()
            .unwrap_or_default();
        for (id, log) in logs.iter().filter(|(id, _)| replicas.contains(id)) {
            let kept = acked.offset >= start_of(*id, acked.partition);
            if caught_up && kept && log.get(&at) != Some(&acked.value) {
                problems.push((
                    "no acknowledged record lost",
                    format!(
                        "{} acknowledged at {at:?}; weir-{id} has {:?}",
                        acked.value,
                        log.get(&at)
                    ),
                ));
            }
        }
    }
    // Each record once, each producer's records in order.
    let mut seen: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
    let mut last: BTreeMap<(String, i32), (i64, u64)> = BTreeMap::new();
    for (at, (_, value)) in &union {
        if let Some(first) = seen.insert(value.as_str(), *at) {
            problems.push((
                "no duplicates from idempotent producers",
                format!("{value} at {first:?} and at {at:?}"),
            ));
        }
        let mut parts = value.split('-');
        let (who, sequence) = (
            parts.next().unwrap_or(""),
            parts.nth(1).and_then(|n| n.parse::<u64>().ok()),
        );
        if let Some(sequence) = sequence {
            let key = (who.to_string(), at.0);
            if let Some((offset, previous)) = last.get(&key) {
                if *previous >= sequence {
                    problems.push((
                        "a producer's records in order",
                        format!("{value} at {at:?} after sequence {previous} at offset {offset}"),
                    ));
                }
            }
            last.insert(key, (at.1, sequence));
        }
    }
    // Every record a consumer read is the log's.
    for (at, value) in &shared.read {
        if let Some((_, logged)) = union.get(at) {
            if logged != value {
                problems.push((
                    "reads return the log's record",
                    format!("{at:?}: read {value}, the log has {logged}"),
                ));
            }
        } else if caught_up && at.1 >= max_log_start(&shared, at.0) {
            problems.push((
                "reads return the log's record",
                format!("{at:?}: read {value}, which no replica holds"),
            ));
        }
    }
    problems.extend(churn::check(&shared));
    let acked = shared.acked.len();
    let read = shared.read.len();
    let churned = shared.churn.created;
    let grown = shared.churn.grown;
    let reconfigured = shared.churn.reconfigured;
    drop(shared);
    if churned >= 2 {
        reached(&world.shared, "a topic deleted and created again");
    }
    if grown >= 1 {
        reached(&world.shared, "partitions added to a topic");
    }
    if reconfigured >= 1 {
        reached(&world.shared, "a topic's configs changed");
    }
    if retention_deleted {
        reached(&world.shared, "retention deleted records of a replica");
    }
    for (invariant, evidence) in problems {
        violation(&world.shared, invariant, evidence);
    }
    world.note(format!("{acked} records acknowledged, {read} read"));
    if acked > 0 {
        reached(&world.shared, "records acknowledged");
    }
}

/// The committed records of every partition of `TOPIC` in a node's log.
fn committed(broker: &Broker) -> BTreeMap<(i32, i64), String> {
    let mut records = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let Ok(log) = broker.partition(TOPIC, partition as u32) else {
            continue;
        };
        for (offset, value) in log_records(&log) {
            records.insert((partition, offset), value);
        }
    }
    records
}

/// The committed records of one partition log: offset → value.
fn log_records(log: &weir_log::Partition) -> BTreeMap<i64, String> {
    let mut records = BTreeMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let Ok(read) = log.read(offset, 1 << 20) else {
            break;
        };
        let before = offset;
        for record in read.records().flatten() {
            let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
            records.insert(record.offset as i64, value);
            offset = record.offset + 1;
        }
        if offset == before {
            break;
        }
    }
    records
}

/// After healing, every partition has a leader that takes a produce
/// within bounded time.
async fn liveness(world: &World) {
    let shared = Arc::clone(&world.shared);
    let nodes = world.nodes.len() as u64;
    let seed = world.handle.seed();
    let done = world
        .client
        .spawn(async move {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x11fe);
            let deadline = Instant::now() + Duration::from_secs(60);
            let Some(producer_id) =
                init_producer_id(nodes, &shared, &mut rng, Duration::from_secs(60)).await
            else {
                return Err("no producer id within 60 s of healing".to_string());
            };
            let mut known = BTreeMap::new();
            for partition in 0..PARTITIONS {
                let value = format!("final-{partition}-0");
                let batch = batch(producer_id, 0, &value);
                let mut window = [Pending {
                    value,
                    batch,
                    acked: None,
                }];
                while window[0].acked.is_none() {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "partition {partition} took no produce within 60 s of healing"
                        ));
                    }
                    let sent = produce_window(
                        &shared,
                        &mut known,
                        nodes,
                        partition,
                        &mut window,
                        &mut rng,
                    );
                    sent.await
                        .map_err(|evidence| format!("final produce: {evidence}"))?;
                    if window[0].acked.is_none() {
                        sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            Ok(())
        })
        .await;
    if let Ok(Err(evidence)) = done {
        violation(&world.shared, "liveness after healing", evidence);
    }
}

/// Asks every running node with `ask` every 200 ms until `agreed` holds
/// of their answers; 60 s after healing, a violation of `invariant` whose
/// evidence lists the last answers (`what`).
async fn nodes_agree<T, Ask, Answer>(
    world: &World,
    invariant: &'static str,
    what: &'static str,
    ask: Ask,
    agreed: fn(&BTreeMap<u64, T>) -> bool,
) where
    T: std::fmt::Debug + Send + 'static,
    Ask: Fn(u64, SharedRef) -> Answer + Send + 'static,
    Answer: std::future::Future<Output = T> + Send,
{
    let shared = Arc::clone(&world.shared);
    let done = world
        .client
        .spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let running: Vec<u64> = {
                    let shared = shared.lock().expect("shared");
                    shared.brokers.keys().copied().collect()
                };
                let mut named = BTreeMap::new();
                for node in running {
                    named.insert(node, ask(node, Arc::clone(&shared)).await);
                }
                if agreed(&named) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "60 s after healing, {what} as each node names them: {named:?}"
                    ));
                }
                sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    if let Ok(Err(evidence)) = done {
        violation(&world.shared, invariant, evidence);
    }
}

/// After healing, every running node's Metadata names the same leader
/// and leader epoch for every partition within bounded time: a node that
/// does not replicate a partition (five nodes, three replicas) too, from
/// the leaders' announcements.
async fn leaders_named(world: &World) {
    nodes_agree(
        world,
        "every node names each partition's leader",
        "(leader, epoch) by partition",
        |node, shared| async move { partitions_of(node, &shared).await.unwrap_or_default() },
        |named| {
            let first = named.values().next().cloned().unwrap_or_default();
            first.len() == PARTITIONS as usize && named.values().all(|found| *found == first)
        },
    )
    .await;
}

/// The controller node `node`'s Metadata names, and the metadata log's
/// (leader, epoch) its DescribeQuorum names.
async fn controller_of(node: u64, shared: &SharedRef) -> Option<(i32, (i32, i32))> {
    let mut client = connect(node).await?;
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
    let ResponseKind::Metadata(metadata) =
        call(&mut client, shared, ApiKey::Metadata, 9, &request).await?
    else {
        return None;
    };
    let request = RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(
        vec![describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![describe_quorum_request::PartitionData::default()])],
    ));
    let ResponseKind::DescribeQuorum(quorum) =
        call(&mut client, shared, ApiKey::DescribeQuorum, 2, &request).await?
    else {
        return None;
    };
    let partition = quorum.topics.first()?.partitions.first()?;
    (partition.error_code == 0).then_some((
        metadata.controller_id.0,
        (partition.leader_id.0, partition.leader_epoch),
    ))
}

/// After healing, within bounded time, every running node names itself
/// the controller in Metadata (it forwards admin requests to the real
/// one), and all name the same running node, in the same epoch, as the
/// metadata log's leader in DescribeQuorum.
async fn controllers_named(world: &World) {
    nodes_agree(
        world,
        "every node names itself the controller and the same quorum leader",
        "(controller, (quorum leader, epoch))",
        |node, shared| async move { controller_of(node, &shared).await },
        |named| {
            let first = named.values().next().copied().flatten();
            let leader_runs = first.is_some_and(|(_, (leader, _))| {
                u64::try_from(leader).is_ok_and(|leader| named.contains_key(&leader))
            });
            leader_runs
                && named.iter().all(|(node, seen)| {
                    seen.is_some_and(|(controller, quorum)| {
                        i64::from(controller) == *node as i64 && Some(quorum) == first.map(|f| f.1)
                    })
                })
        },
    )
    .await;
}

/// After healing, the group's coordinator answers within bounded time
/// with every offset commit acknowledged (`read_commits` checks them).
async fn commits_kept(world: &World) {
    let shared = Arc::clone(&world.shared);
    let nodes = world.nodes.len() as u64;
    let seed = world.handle.seed();
    let done = world
        .client
        .spawn(async move {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xc0ff);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Some(node) =
                    find_coordinator(GROUP, rng.random_range(1..=nodes), &shared).await
                {
                    if let Some(mut client) = connect(node).await {
                        if read_commits(&mut client, &shared, node).await.is_some() {
                            return true;
                        }
                    }
                }
                sleep(Duration::from_millis(100)).await;
            }
            false
        })
        .await;
    if !matches!(done, Ok(true)) {
        let evidence = "no coordinator answered OffsetFetch within 60 s of healing".into();
        violation(&world.shared, "liveness after healing", evidence);
    }
}

/// A node gone for good has every replica moved to its replacement
/// within 60 s of healing.
async fn replacement_finishes(world: &World) {
    let Some((old, new)) = world.replaced else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    wiped_node_refuses(world, deadline).await;
    while !world.shared.lock().expect("shared").replacement_done {
        if Instant::now() > deadline {
            let plan = replacement_plan(&world.shared, old, new);
            violation(
                &world.shared,
                "a dead node's replicas move to its replacement",
                format!(
                    "60 s after healing, still to move from weir-{old} to weir-{new}: {plan:?}"
                ),
            );
            return;
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// A node gone for good and started again on an empty disk has refused
/// to take part by `deadline`.
async fn wiped_node_refuses(world: &World, deadline: Instant) {
    loop {
        let wiped = world.shared.lock().expect("shared").wiped;
        match wiped {
            Some((id, false)) if Instant::now() > deadline => {
                let evidence =
                    format!("weir-{id}, started on an empty disk, still runs 60 s after healing");
                violation(
                    &world.shared,
                    "a node whose disk was lost refuses to take part",
                    evidence,
                );
                return;
            }
            Some((_, false)) => sleep(Duration::from_millis(200)).await,
            _ => return,
        }
    }
}

/// Waits until every node runs and holds the same committed records (up
/// to 60 s); whether they do.
async fn replicas_catch_up(world: &World) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agree = {
            let shared = world.shared.lock().expect("shared");
            shared.brokers.len() == world.members()
                && (0..PARTITIONS).all(|partition| {
                    let replicas = shared.replicas.get(&partition).cloned().unwrap_or_default();
                    let ends: BTreeSet<u64> = replicas
                        .iter()
                        .filter_map(|id| shared.brokers.get(id))
                        .map(|broker| {
                            broker
                                .partition(TOPIC, partition as u32)
                                .map_or(0, |log| log.high_watermark())
                        })
                        .collect();
                    !replicas.is_empty() && ends.len() == 1
                })
        };
        if agree {
            return true;
        }
        if Instant::now() > deadline {
            let ends: Vec<String> = {
                let shared = world.shared.lock().expect("shared");
                shared
                    .brokers
                    .iter()
                    .map(|(id, broker)| {
                        let ends: Vec<(u64, u64)> = (0..PARTITIONS as u32)
                            .map(|p| {
                                broker.partition(TOPIC, p).map_or((0, 0), |log| {
                                    (log.high_watermark(), log.log_end_offset())
                                })
                            })
                            .collect();
                        format!("weir-{id} (high watermark, end) {ends:?}")
                    })
                    .collect()
            };
            violation(
                &world.shared,
                "replicas catch up after healing",
                format!("60 s after healing the nodes differ: {}", ends.join("; ")),
            );
            return false;
        }
        sleep(Duration::from_millis(200)).await;
    }
}

fn report(world: &World, seed: u64) -> SeedReport {
    let shared = world.shared.lock().expect("shared");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&shared.trace, &mut hasher);
    std::hash::Hash::hash(&format!("{:?}", shared.violations), &mut hasher);
    let mut faults = shared.faults.clone();
    let flipped: u64 = world
        .nodes
        .values()
        .map(|(_, disk, _)| disk.stats().read_corruptions)
        .sum();
    if flipped > 0 {
        faults.insert("flipped read", flipped);
    }
    SeedReport {
        seed,
        simulated: world.started.elapsed(),
        operations: shared.operations,
        faults,
        coverage: shared.coverage.clone(),
        events: BTreeMap::new(),
        violations: shared.violations.clone(),
        trace: shared.trace.clone(),
        fingerprint: std::hash::Hasher::finish(&hasher),
    }
}
