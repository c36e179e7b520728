//! The cost of idle partitions: 1,000 Raft groups on 3 nodes (every node
//! a replica of every group, as with a replication factor of 3), in one
//! process on simulated disks, messages handed over in memory. Once every
//! group has a leader and nothing is produced, one round (each node ticks
//! once, takes its peers' messages, processes what is ready) costs:
//!
//! - with quiescence (the default: groups settled for 20 ticks sleep),
//! - without (every group ticks and heartbeats, as raft-rs alone does).
//!
//! Prints the time per round of each, their ratio (target: quiescent
//! rounds at least 20x cheaper), the group ticks and messages per round,
//! and what that means at weir's 100 ms tick.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use weir_benches::{record, report_ratio, Side};
use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::{HighWatermarkPolicy, LogConfig, Partition};
use weir_replication::{Replicas, ReplicasConfig};

const NODES: u64 = 3;
const GROUPS: u64 = 1_000;

struct Cluster {
    /// Node `i + 1` at index `i`.
    nodes: Vec<Replicas>,
    /// Messages delivered so far.
    messages: u64,
}

fn open_cluster(quiesce: bool) -> Cluster {
    let ids: Vec<u64> = (1..=NODES).collect();
    let nodes = ids
        .iter()
        .map(|id| {
            let disk = SimDisk::new(*id);
            let root = disk.root();
            let mut config = ReplicasConfig::new(*id, *id);
            if !quiesce {
                config.quiesce_after_ticks = 0;
            }
            let mut replicas = Replicas::new(config, &ids);
            for group in 1..=GROUPS {
                let dir: Arc<dyn Storage> = root
                    .open_or_create_dir(&format!("p{group}"))
                    .expect("a directory");
                let log_config = LogConfig {
                    high_watermark: HighWatermarkPolicy::SetByOwner,
                    ..LogConfig::default()
                };
                let (partition, _) =
                    Partition::open(dir, Arc::new(ManualClock::new(0)), log_config)
                        .expect("a partition");
                let raft_dir = root
                    .open_or_create_dir(&format!("r{group}"))
                    .expect("a directory");
                replicas
                    .open_group(group, ids.clone(), raft_dir, Arc::new(partition))
                    .expect("a group");
            }
            replicas
        })
        .collect();
    Cluster { nodes, messages: 0 }
}

impl Cluster {
    /// One round: every node ticks, processes, and its messages reach
    /// their peers.
    fn round(&mut self) {
        let mut outgoing = Vec::new();
        for replicas in &mut self.nodes {
            replicas.tick();
            replicas.process().expect("in-memory storage does not fail");
            outgoing.push(replicas.take_outbox());
        }
        for (index, outbox) in outgoing.into_iter().enumerate() {
            let from = index as u64 + 1;
            for (to, envelopes) in outbox {
                self.messages += envelopes.len() as u64;
                self.nodes[to as usize - 1].receive(from, envelopes);
            }
        }
        for replicas in &mut self.nodes {
            replicas.process().expect("in-memory storage does not fail");
        }
    }

    fn leaders(&self) -> usize {
        (1..=GROUPS)
            .filter(|group| {
                self.nodes.iter().any(|replicas| {
                    replicas
                        .group(*group)
                        .is_some_and(|group| group.is_leader())
                })
            })
            .count()
    }

    fn group_ticks(&self) -> u64 {
        self.nodes
            .iter()
            .map(|replicas| replicas.stats().group_ticks)
            .sum()
    }

    fn asleep(&self) -> usize {
        self.nodes
            .iter()
            .map(|replicas| replicas.stats().asleep)
            .sum()
    }
}

/// A cluster whose groups all have leaders and have had time to settle.
fn settled(quiesce: bool) -> Cluster {
    let mut cluster = open_cluster(quiesce);
    let mut rounds = 0;
    while cluster.leaders() < GROUPS as usize {
        cluster.round();
        rounds += 1;
        assert!(rounds < 2_000, "1,000 groups did not elect leaders");
    }
    for _ in 0..100 {
        cluster.round();
    }
    cluster
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("replication_idle");
    group.sample_size(10);
    for (quiesce, id) in [(true, "quiescent"), (false, "ticking")] {
        let mut cluster = settled(quiesce);
        let (ticks_before, messages_before) = (cluster.group_ticks(), cluster.messages);
        let mut rounds = 0u64;
        group.bench_function(id, |b| {
            b.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    cluster.round();
                }
                rounds += iterations;
                record(id, started.elapsed(), iterations)
            })
        });
        let ticks = (cluster.group_ticks() - ticks_before) as f64 / rounds.max(1) as f64;
        let messages = (cluster.messages - messages_before) as f64 / rounds.max(1) as f64;
        println!(
            "RESULT replication_idle {id}: {GROUPS} groups on {NODES} nodes: {ticks:.1} group ticks and {messages:.1} messages per round, {} of {} replicas asleep; at a 100 ms tick: {:.0} messages/s",
            cluster.asleep(),
            GROUPS * NODES,
            messages * 10.0
        );
    }
    group.finish();
    report_ratio(
        "replication_idle: rounds per second, quiescent vs ticking",
        "rounds",
        Side {
            id: "quiescent",
            work: 1.0,
        },
        Side {
            id: "ticking",
            work: 1.0,
        },
        20.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
