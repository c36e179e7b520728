//! Coverage floors: the paths the workload must keep reaching. For each
//! named path, the least number of seeds in a thousand that must reach it;
//! a run of at least [`FLOOR_MIN_SEEDS`] seeds fails when a path falls
//! below its floor (scaled to the seeds run), so a change to the workload or
//! the nemesis cannot silently stop exercising it. The floors sit at about
//! half of what the CI range reaches (docs/SIMULATION.md has both).

use std::collections::BTreeMap;

use crate::check::Violation;

/// Runs shorter than this are not held to the floors.
pub const FLOOR_MIN_SEEDS: usize = 500;

/// (path, seeds per thousand that must reach it).
pub const FLOORS: &[(&str, u64)] = &[
    // Every state-changing stream command, with its trim flavours.
    ("XADD", 500),
    ("XADD MAXLEN =", 500),
    ("XADD MAXLEN ~", 500),
    ("XADD MINID", 500),
    ("XTRIM =", 500),
    ("XTRIM ~", 500),
    ("XDEL", 500),
    ("XSETID", 500),
    ("XGROUP CREATE", 500),
    ("XGROUP SETID", 500),
    ("XGROUP DESTROY", 500),
    ("XGROUP CREATECONSUMER", 500),
    ("XGROUP DELCONSUMER", 500),
    ("XREADGROUP", 500),
    ("XACK", 500),
    ("XCLAIM", 500),
    ("XAUTOCLAIM", 500),
    ("DEL", 450),
    // Batching.
    ("pipelined batch", 500),
    ("pipelined batch split in two writes", 200),
    ("pipelined batch ran in part", 150),
    ("MULTI/EXEC transaction", 250),
    ("transaction whose reply was lost", 150),
    ("churn batch settled after a failure", 350),
    // Background work of the stream node.
    ("rewrite started", 300),
    ("rewrite finished", 300),
    ("crash during a rewrite", 150),
    ("churn write during a rewrite", 150),
    // Crashes and recovery.
    ("torn write at a crash", 600),
    ("torn tail cut at recovery", 15),
    ("start failed on a disk error", 40),
    ("refused to start on detected corruption", 40),
    ("claim of a stuck entry", 600),
    ("blocked reader woken by an XADD", 250),
    ("message published to a subscriber", 200),
    // The log node.
    ("log segment rolled by size", 250),
    ("log segment rolled on request", 250),
    ("log truncated", 250),
    ("log reopened after truncations", 100),
    ("log retention deleted segments", 200),
    ("log closed cleanly, then power lost", 400),
    ("log torn tail cut at recovery", 10),
    // The log node's Kafka clients.
    ("kafka produce retried", 400),
    ("kafka retried batch acknowledged", 400),
    ("kafka member resumed from a committed offset", 400),
    ("kafka member reset to the log start", 25),
    ("kafka member crashed", 120),
    ("kafka member left", 120),
    ("kafka member rejoined after a heartbeat error", 400),
    ("kafka commit refused", 45),
    ("kafka producer gave up a batch", 70),
];

/// (the nodes' event, the invariant it breaks): events no seed's nodes may
/// log. Each answers a fault the nemesis never makes (it corrupts no
/// frame or message on the wire, and sends none of its own), so a node
/// that logs one was sent something wrong by a peer: a bug of the peer.
/// Cluster seed 142 logged the first once, for a frame of 85 MB.
pub const FORBIDDEN_EVENTS: &[(&str, &str)] = &[
    (
        "weir_replication: closing a cluster connection: bad frame",
        "no node refuses a peer's frame",
    ),
    (
        "weir_replication: a raft message larger than the frame limit: dropped",
        "no node refuses a peer's frame",
    ),
    (
        "weir_server: a peer sent a bad cluster message",
        "no node refuses a peer's frame",
    ),
];

/// The violations the events a seed's nodes logged (`crate: message`,
/// times) make: one per forbidden event logged.
pub fn forbidden_events_logged(events: &BTreeMap<&str, u64>) -> Vec<Violation> {
    FORBIDDEN_EVENTS
        .iter()
        .filter_map(|(event, invariant)| {
            let times = events.get(event).copied().unwrap_or(0);
            (times > 0).then(|| Violation {
                invariant,
                evidence: format!(
                    "the nodes logged `{event}` {times} times (WEIR_SIM_TRACE=warn shows them)"
                ),
            })
        })
        .collect()
}

/// Cluster runs shorter than this are not held to [`CLUSTER_EVENT_FLOORS`]
/// (CI runs cluster seeds 0..90, which are deterministic: the counts do
/// not move from run to run, only when the code or the workload does).
pub const CLUSTER_FLOOR_MIN_SEEDS: usize = 90;

/// (the nodes' event, `crate: message` as [`crate::events`] names it;
/// seeds per thousand whose nodes must log it) in cluster runs: the
/// recovery, repair and failover paths the nemesis must keep reaching.
/// A message reworded without its floor reads as never reached.
pub const CLUSTER_EVENT_FLOORS: &[(&str, u64)] = &[
    // A replica's Raft log and segment log after faults.
    (
        "weir_replication: raft log: synced entries lost to corruption; repairing from the leader",
        150,
    ),
    ("weir_replication: raft log: repaired", 150),
    (
        "weir_replication: a batch reads corrupt: cutting the replica there to repair it",
        70,
    ),
    (
        "weir_replication: an earlier batch reads corrupt too: cut there",
        30,
    ),
    (
        "weir_replication: raft log: side-file records before the cut read corrupt: cut there too",
        30,
    ),
    (
        "weir_replication: raft log: a synced term or vote was lost to corruption; restored",
        30,
    ),
    (
        "weir_replication: raft log: dropping entries the segment log lost",
        20,
    ),
    (
        "weir_replication: raft log: truncating batches never made stable",
        190,
    ),
    (
        "weir_replication: a follower lost entries it had acknowledged: probing it again",
        90,
    ),
    (
        "weir_replication: replica replaced by the leader's snapshot",
        120,
    ),
    ("weir_replication: raft log compacted", 120),
    (
        "weir_replication: replication storage failed; the node stops replicating",
        420,
    ),
    (
        "weir_log: recovery cut corrupt synced data: the owner must restore it",
        60,
    ),
    (
        "weir_log: recovery cut a torn tail that was never synced",
        70,
    ),
    ("weir_log: a trusted segment is corrupt: scanning it", 20),
    ("weir_log: the log restarts empty", 120),
    // A node shut down cleanly (the nemesis's SIGTERM).
    ("weir_log: closed partition log", 350),
    (
        "weir_log: offset index disagrees with the log; rebuilding it",
        150,
    ),
    // The cluster's metadata on each node.
    (
        "weir_server: local files of an earlier topic of the same name: removed",
        480,
    ),
    (
        "weir_server: the metadata log is being repaired: topics and replicas left as they are",
        20,
    ),
    ("weir_server: a node joined the cluster", 200),
    // Group coordination and producer ids through failovers.
    ("weir_kafka: member session timed out: removed", 480),
    ("weir_kafka: member did not sync in time: removed", 250),
    (
        "weir_kafka: no block of producer ids from the controller",
        250,
    ),
];

/// The paths below their floor in a run of `seeds` seeds, given how many
/// seeds reached each path; empty for runs too short to judge.
pub fn below_floors(reached: &BTreeMap<&str, u64>, seeds: usize) -> Vec<String> {
    judged(FLOORS, FLOOR_MIN_SEEDS, reached, seeds)
}

/// The nodes' events below their floor in a cluster run of `seeds` seeds,
/// given how many seeds' nodes logged each; empty for runs too short.
pub fn cluster_events_below_floors(reached: &BTreeMap<&str, u64>, seeds: usize) -> Vec<String> {
    judged(
        CLUSTER_EVENT_FLOORS,
        CLUSTER_FLOOR_MIN_SEEDS,
        reached,
        seeds,
    )
}

fn judged(
    floors: &[(&str, u64)],
    min_seeds: usize,
    reached: &BTreeMap<&str, u64>,
    seeds: usize,
) -> Vec<String> {
    if seeds < min_seeds {
        return Vec::new();
    }
    floors
        .iter()
        .filter_map(|(path, per_thousand)| {
            let floor = per_thousand * seeds as u64 / 1000;
            let got = reached.get(path).copied().unwrap_or(0);
            (got < floor).then(|| format!("{path}: reached in {got} seeds, floor {floor}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_below_its_floor_is_reported_and_short_runs_are_not_judged() {
        let mut reached: BTreeMap<&str, u64> =
            FLOORS.iter().map(|(path, floor)| (*path, *floor)).collect();
        assert!(below_floors(&reached, 1000).is_empty());
        reached.insert("rewrite finished", 10);
        let below = below_floors(&reached, 1000);
        assert_eq!(below.len(), 1);
        assert!(below[0].starts_with("rewrite finished"), "{below:?}");
        assert!(below_floors(&reached, 100).is_empty());
        reached.remove("XSETID");
        assert_eq!(
            below_floors(&reached, 1000).len(),
            2,
            "a path never reached"
        );
    }

    #[test]
    fn a_cluster_event_below_its_floor_is_reported() {
        let mut reached: BTreeMap<&str, u64> = CLUSTER_EVENT_FLOORS
            .iter()
            .map(|(name, floor)| (*name, floor * 9 / 100))
            .collect();
        assert!(cluster_events_below_floors(&reached, 90).is_empty());
        reached.remove("weir_replication: raft log: repaired");
        let below = cluster_events_below_floors(&reached, 90);
        assert_eq!(below.len(), 1, "{below:?}");
        assert!(
            below[0].contains("reached in 0 seeds, floor 13"),
            "{below:?}"
        );
        assert!(cluster_events_below_floors(&BTreeMap::new(), 89).is_empty());
    }

    #[test]
    fn a_forbidden_event_logged_is_a_violation_and_others_are_not() {
        let mut events = BTreeMap::new();
        events.insert("weir_replication: raft log: repaired", 3);
        assert!(forbidden_events_logged(&events).is_empty());
        events.insert(
            "weir_replication: closing a cluster connection: bad frame",
            2,
        );
        let violations = forbidden_events_logged(&events);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].invariant, "no node refuses a peer's frame");
        assert!(violations[0].evidence.contains("2 times"));
    }
}
