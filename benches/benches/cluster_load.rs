//! A weir cluster of three nodes on loopback against one node alone, in
//! one run, and the time a partition takes to accept produce again after
//! its leader is killed.
//!
//! - Throughput: 8 producers, each one connection to the leader of its own
//!   partition (8 partitions) keeping 5 requests in flight, 64 KiB batches
//!   of 1 KiB records, acks=all. One node alone (flush `always`, the
//!   default) against three nodes with replication factor 3 (each replica
//!   synced before it acknowledges). Target: the cluster ≥ 0.5x the single
//!   node (Kafka's published figure for 3x synchronous replication).
//! - Failover: `KILLS` times (default 20), the leader of partition 0 is
//!   killed with SIGKILL; the time until a produce with acks=all to that
//!   partition succeeds again, p50 and p99, printed with the election
//!   timeout. The killed node is started again before the next kill.
//!
//! Run: `cargo xtask bench cluster_load` (builds the release `weir`), or
//! `cargo build --release -p weir-server && cargo bench -p weir-benches
//! --bench cluster_load`. `WEIR_BIN` overrides weir's binary; `ROUNDS`
//! (default 3), `SCALE` (default 1.0: 32 MiB per producer) and `KILLS`
//! (0 skips the failovers) change the run's length; `FLUSH=never` (or
//! `always`) measures one flush policy only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use weir_benches::kafka_wire::{batch, produce_request, weir_binary, Connection, Server};
use weir_benches::{free_port, start_resp_server};

const PRODUCERS: usize = 8;
const IN_FLIGHT: usize = 5;
const TOPIC: &str = "load";
const TICK_MS: u64 = 50;
const ELECTION_TICKS: u64 = 10;

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Starts `weir serve` with `extra` flags on a free RESP port.
fn start(binary: &Path, data: &Path, kafka_port: u16, extra: &[String]) -> Server {
    let (child, _) = start_resp_server("weir", |port| {
        Command::new(binary)
            .arg("serve")
            .args(["--resp-addr", &format!("127.0.0.1:{port}")])
            .args(["--kafka-addr", &format!("127.0.0.1:{kafka_port}")])
            .args(["--log-level", "warn", "--appendonly", "no"])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start weir")
    });
    Server {
        child,
        kafka_port,
        _data: None,
    }
}

/// Three nodes with fixed ports and data directories, so that a killed
/// node starts again where its peers expect it.
struct Cluster {
    binary: PathBuf,
    flush: String,
    root: tempfile::TempDir,
    peers: String,
    kafka_ports: BTreeMap<i32, u16>,
    nodes: BTreeMap<i32, Server>,
}

impl Cluster {
    fn start(binary: &Path, flush: &str) -> Self {
        let ids = [1, 2, 3];
        let peers = ids
            .iter()
            .map(|id| format!("{id}=127.0.0.1:{}", free_port()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            flush: flush.to_string(),
            root: tempfile::tempdir().expect("data directory"),
            peers,
            kafka_ports: ids.iter().map(|id| (*id, free_port())).collect(),
            nodes: BTreeMap::new(),
        };
        for id in ids {
            cluster.start_node(id);
        }
        cluster
    }

    fn start_node(&mut self, id: i32) {
        let extra = [
            "--node-id".to_string(),
            id.to_string(),
            "--peers".to_string(),
            self.peers.clone(),
            "--raft-tick-ms".to_string(),
            TICK_MS.to_string(),
            "--raft-election-ticks".to_string(),
            ELECTION_TICKS.to_string(),
            "--kafka-flush".to_string(),
            self.flush.clone(),
        ];
        let data = self.root.path().join(format!("node-{id}"));
        let server = start(&self.binary, &data, self.kafka_ports[&id], &extra);
        self.nodes.insert(id, server);
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.keys().map(|id| self.kafka_ports[id]).collect()
    }
}

/// Metadata of `TOPIC` from the node at `port`: each partition's leader
/// (-1 when none) and the number of brokers listed.
fn leaders(port: u16) -> Option<(BTreeMap<i32, i32>, usize)> {
    let mut connection = Connection::try_connect(port).ok()?;
    connection.set_timeout(Duration::from_secs(2));
    let request = RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]))
            .with_allow_auto_topic_creation(false),
    );
    let ResponseKind::Metadata(response) =
        connection.try_call(ApiKey::Metadata, 9, &request).ok()?
    else {
        return None;
    };
    let topic = response.topics.first()?;
    let leaders = topic
        .partitions
        .iter()
        .map(|partition| (partition.partition_index, partition.leader_id.0))
        .collect();
    Some((leaders, response.brokers.len()))
}

/// Waits until some live node reports a leader for every partition.
fn wait_for_leaders(ports: &[u16], partitions: usize) -> BTreeMap<i32, i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for port in ports {
            if let Some((leaders, _)) = leaders(*port) {
                if leaders.len() == partitions && leaders.values().all(|leader| *leader >= 0) {
                    return leaders;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leaders after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates `TOPIC` through the node at `port`, retrying while the
/// cluster forms.
fn create_topic(port: u16, partitions: i32, factor: i16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(factor)]),
        );
        let answer = Connection::try_connect(port)
            .and_then(|mut connection| connection.try_call(ApiKey::CreateTopics, 4, &request));
        if let Ok(ResponseKind::CreateTopics(response)) = answer {
            if matches!(response.topics[0].error_code, 0 | 36) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic not created in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `PRODUCERS` producers, producer `i` to partition `i` at the port of its
/// leader, each sending `count` batches with acks=all; the seconds until
/// all are acknowledged.
fn produce(targets: &[(i32, u16)], batch: &Bytes, count: usize) -> f64 {
    let started = Instant::now();
    let threads: Vec<_> = targets
        .iter()
        .map(|&(partition, port)| {
            let batch = batch.clone();
            std::thread::spawn(move || {
                let mut connection = Connection::connect(port);
                let request = produce_request(TOPIC, partition, -1, &batch);
                let mut encoded = connection.encode(ApiKey::Produce, 9, &request);
                connection.correlation = 0;
                let (mut sent, mut received) = (0, 0);
                while received < count {
                    while sent < count && sent - received < IN_FLIGHT {
                        connection.send_again(&mut encoded);
                        sent += 1;
                    }
                    let ResponseKind::Produce(response) = connection.receive(ApiKey::Produce, 9)
                    else {
                        panic!("not a produce response")
                    };
                    let error = response.responses[0].partition_responses[0].error_code;
                    assert_eq!(error, 0, "produce to {partition} failed with {error}");
                    received += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a producer");
    }
    started.elapsed().as_secs_f64()
}

/// One produce of `batch` with acks=all to partition 0 through whichever
/// node the live nodes name its leader; whether it succeeded.
fn produce_once(cluster: &Cluster, batch: &Bytes) -> bool {
    let ports = cluster.live_ports();
    let Some(leader) = ports
        .iter()
        .find_map(|port| leaders(*port).and_then(|(leaders, _)| leaders.get(&0).copied()))
    else {
        return false;
    };
    let Some(port) = cluster.nodes.get(&leader).map(|node| node.kafka_port) else {
        return false;
    };
    let Ok(mut connection) = Connection::try_connect(port) else {
        return false;
    };
    connection.set_timeout(Duration::from_secs(5));
    let request = produce_request(TOPIC, 0, -1, batch);
    match connection.try_call(ApiKey::Produce, 9, &request) {
        Ok(ResponseKind::Produce(response)) => {
            response.responses[0].partition_responses[0].error_code == 0
        }
        _ => false,
    }
}

/// Kills partition 0's leader `kills` times; the milliseconds until a
/// produce to it succeeded again, each time.
fn failovers(cluster: &mut Cluster, kills: usize) -> Vec<f64> {
    let small = batch(1024, 1100);
    let mut times = Vec::with_capacity(kills);
    for _ in 0..kills {
        let leaders = wait_for_leaders(&cluster.live_ports(), PRODUCERS);
        let victim = leaders[&0];
        let mut server = cluster.nodes.remove(&victim).expect("the leader is live");
        let killed = Instant::now();
        let _ = server.child.kill();
        let _ = server.child.wait();
        drop(server);
        while !produce_once(cluster, &small) {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "partition 0 did not accept produce within 60 s of its leader's death"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        cluster.start_node(victim);
        // Let the returning node catch up before the next kill.
        wait_for_leaders(&cluster.live_ports(), PRODUCERS);
        std::thread::sleep(Duration::from_millis(1000));
    }
    times
}

/// Medians of `rounds` rounds of produce (MB/s): one node alone, then
/// three nodes with replication factor 3, both with `flush`.
fn throughput(
    binary: &Path,
    flush: &str,
    rounds: usize,
    batch: &Bytes,
    count: usize,
) -> (f64, f64) {
    let megabytes = (PRODUCERS * count * batch.len()) as f64 / 1e6;
    let (mut single, mut replicated) = (Vec::new(), Vec::new());
    let cluster = Cluster::start(binary, flush);
    create_topic(cluster.live_ports()[0], PRODUCERS as i32, 3);
    for round in 0..rounds {
        let data = tempfile::tempdir().expect("data directory");
        let flags = ["--kafka-flush".to_string(), flush.to_string()];
        let alone = start(binary, data.path(), free_port(), &flags);
        create_topic(alone.kafka_port, PRODUCERS as i32, 1);
        wait_for_leaders(&[alone.kafka_port], PRODUCERS);
        let targets: Vec<(i32, u16)> = (0..PRODUCERS as i32)
            .map(|partition| (partition, alone.kafka_port))
            .collect();
        single.push(megabytes / produce(&targets, batch, count));
        drop(alone);
        let leaders = wait_for_leaders(&cluster.live_ports(), PRODUCERS);
        let targets: Vec<(i32, u16)> = leaders
            .iter()
            .map(|(partition, leader)| (*partition, cluster.kafka_ports[leader]))
            .collect();
        replicated.push(megabytes / produce(&targets, batch, count));
        println!(
            "flush {flush}, round {round}: one node {:.0} MB/s, three nodes RF 3 {:.0} MB/s",
            single[round], replicated[round]
        );
    }
    (median(&mut single), median(&mut replicated))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter naming another bench skips.
    if std::env::args()
        .skip(1)
        .any(|arg| !arg.starts_with('-') && !"cluster_load".contains(arg.as_str()))
    {
        return;
    }
    let binary = weir_binary();
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p weir-server`",
        binary.display()
    );
    let rounds = env_number("ROUNDS", 3.0).max(1.0) as usize;
    let per_producer = (env_number("SCALE", 1.0) * (32 << 20) as f64) as usize;
    let kills = env_number("KILLS", 20.0).max(0.0) as usize;
    let flushes = std::env::var("FLUSH").unwrap_or_else(|_| "always,never".into());
    let batch = batch(1024, 64 << 10);
    let count = (per_producer / batch.len()).max(1);
    for flush in flushes.split(',').filter(|flush| !flush.is_empty()) {
        let (single, replicated) = throughput(&binary, flush, rounds, &batch, count);
        let ratio = replicated / single;
        let verdict = if ratio >= 0.5 { "meets" } else { "MISSES" };
        println!(
            "RESULT produce acks=all, flush {flush}, 8 producers, 1 KiB records in 64 KiB batches: one node \
             {single:.0} MB/s, three nodes RF 3 {replicated:.0} MB/s: {ratio:.2}x ({verdict} the 0.5x target; \
             medians of {rounds} rounds)"
        );
    }
    if kills == 0 {
        return;
    }
    let mut cluster = Cluster::start(&binary, "always");
    create_topic(cluster.live_ports()[0], PRODUCERS as i32, 3);
    let mut times = failovers(&mut cluster, kills);
    times.sort_by(f64::total_cmp);
    let longest_timeout = 2 * ELECTION_TICKS * TICK_MS;
    let beyond = times
        .iter()
        .filter(|ms| **ms > longest_timeout as f64 + 100.0)
        .count();
    println!(
        "RESULT failover after SIGKILL of partition 0's leader: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {kills} kills \
         (election timeout {}-{longest_timeout} ms: {ELECTION_TICKS} ticks of {TICK_MS} ms, drawn up to twice that); \
         {beyond} of them took over 100 ms more than the longest election timeout",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        ELECTION_TICKS * TICK_MS,
    );
}
