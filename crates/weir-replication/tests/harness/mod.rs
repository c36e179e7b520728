//! A deterministic cluster of nodes, each running [`Replicas`] with the
//! same few Raft groups (partitions), in process: simulated disks that
//! lose power (between operations and in the middle of one), a network
//! that delays, drops, duplicates, reorders and partitions messages
//! (through weir's wire codec, one frame per peer per step), clocks that
//! tick at different rates, producers that propose at whichever node
//! thinks it leads a group, and consumers. Checks Raft's safety and the
//! log's promises after every step, and liveness after healing and after
//! the death of the busiest leader. Everything follows from the seed.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use raft::eraftpb::MessageType;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::batch::{encode, ProducerInfo, Record};
use weir_log::{HighWatermarkPolicy, LogConfig, Partition};
use weir_replication::codec::{decode_frame, encode_frame, Envelope, Limits};
use weir_replication::metadata::{record_batch, MetadataLog, MetadataRecord};
use weir_replication::{CommitStatus, Group, ProposeError, Replicas, ReplicasConfig};

/// How hard the run is.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub nodes: u64,
    pub groups: u64,
    /// Steps with faults and proposals.
    pub faulty_steps: u64,
    /// Quiet steps after healing (groups quiesce), before the node leading
    /// most groups is killed.
    pub quiet_steps: u64,
    /// Steps the remaining nodes have to elect and acknowledge a record in
    /// every group.
    pub failover_steps: u64,
    /// Steps after the killed node returns, before the final checks.
    pub settle_steps: u64,
    /// Small segments and a size limit on the partitions (not the
    /// metadata's), with retention applied now and then on each node
    /// (drawn from an RNG of its own, so that runs without it keep their
    /// schedules).
    pub retention: bool,
}

impl Plan {
    /// The plan of the CI runs.
    pub fn standard(nodes: u64, groups: u64) -> Self {
        Self {
            nodes,
            groups,
            faulty_steps: 2_500,
            quiet_steps: 300,
            failover_steps: 600,
            settle_steps: 600,
            retention: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Raft logs compacted by retention, snapshots installed, side files
    /// rewritten.
    pub compactions: usize,
    pub snapshots: usize,
    pub rewrites: u64,
    pub acknowledged: usize,
    pub crashes: usize,
    pub crashes_mid_operation: usize,
    pub elections: usize,
    pub delivered: u64,
    /// Clocks that jumped forward, and processes paused.
    pub clock_jumps: usize,
    pub pauses: usize,
    /// Nodes replaced by a new one through joint consensus.
    pub replacements: usize,
    /// Topics in the metadata at the end.
    pub topics: usize,
    /// Metadata records refused on apply (plans overtaken by others).
    pub metadata_refused: u64,
    /// Groups asleep (on all nodes) when the busiest leader was killed.
    pub asleep_at_kill: usize,
    /// Group ticks saved by quiescence while the cluster was quiet.
    pub quiet_group_ticks: u64,
    /// A hash of every node's groups (term, role, commit, log end, high
    /// watermark, election timeout) after every step: equal for two runs of
    /// one seed, or the run is not determined by its seed.
    pub trace: u64,
}

struct Node {
    id: u64,
    disk: Arc<SimDisk>,
    replicas: Option<Replicas>,
    /// Steps left before a crashed node restarts (`u64::MAX`: kept down).
    down_for: u64,
    /// A crash is scheduled on the disk, to fire mid-operation.
    crash_armed: bool,
    /// Chance in 1000 that a tick is skipped (a slow clock).
    slow: u32,
    /// Steps left in a pause (a stalled process: no ticks, nothing
    /// received, nothing sent; frames for it wait in the network).
    paused_for: u64,
    /// Ticks to add at the next step (the clock jumped forward).
    jump: u64,
    /// Per group: the commit index and high watermark seen in this life.
    seen: BTreeMap<u64, (u64, u64)>,
    /// Joined after the start: its groups begin with no members and learn
    /// them from the log.
    joining: bool,
    /// Gone for good (replaced): out of every check.
    retired: bool,
    /// The cluster metadata this node built from the metadata group's
    /// committed records (rebuilt from its log after a restart).
    metadata: MetadataLog,
    /// Per group: where its Raft log starts (index, and whether a
    /// snapshot put it there), as last seen.
    starts: BTreeMap<u64, (u64, bool)>,
    /// Per group: side-file rewrites of this life, as last seen.
    rewrites: BTreeMap<u64, u64>,
    /// Per group: cuts at a batch that read corrupt in this life, as last
    /// seen (a cut takes the commit index and high watermark back).
    cuts: BTreeMap<u64, u64>,
}

struct InFlight {
    deliver_at: u64,
    from: u64,
    to: u64,
    frame: Vec<u8>,
}

/// A proposal waiting for its fate.
struct Pending {
    node: u64,
    index: u64,
    term: u64,
    base_offset: u64,
    value: Vec<u8>,
    idempotent: bool,
    since: u64,
}

/// What the checks know of one group.
#[derive(Default)]
struct Model {
    /// The leader of each term seen.
    leaders: BTreeMap<u64, u64>,
    /// Entries (index → (term, start, end)) known committed somewhere.
    committed: BTreeMap<u64, (u64, u64, u64)>,
    /// Acknowledged records: offset → value.
    acknowledged: BTreeMap<u64, Vec<u8>>,
    /// What consumers read at each offset.
    observed: BTreeMap<u64, Vec<u8>>,
    pending: Vec<Pending>,
    produced: u64,
    /// The idempotent producer's next sequence, and whether its batch is
    /// in flight.
    idempotent_next: u64,
    idempotent_waiting: bool,
    /// Records acknowledged since the phase began (liveness), and of them
    /// the idempotent producer's.
    acknowledged_in_phase: usize,
    idempotent_acknowledged_in_phase: usize,
}

pub struct Cluster {
    seed: u64,
    rng: Xoshiro256PlusPlus,
    /// Draws when retention runs (with [`Plan::retention`]).
    retention: Option<Xoshiro256PlusPlus>,
    nodes: Vec<Node>,
    groups: Vec<u64>,
    models: BTreeMap<u64, Model>,
    network: Vec<InFlight>,
    /// Pairs (from, to) whose messages are dropped.
    cut: BTreeSet<(u64, u64)>,
    step: u64,
    /// Whether faults are being injected.
    faulty: bool,
    violation: Option<String>,
    /// The group whose log holds the cluster metadata (the last one).
    metadata_group: u64,
    /// The members every group starts with.
    initial_voters: Vec<u64>,
    /// A fingerprint of the metadata state at each applied offset, from
    /// whichever node got there first.
    metadata_at: BTreeMap<u64, String>,
    topics_planned: u64,
    /// (node, group) whose stored records were made to rot: a read there
    /// may fail as corrupt (never return the rotted bytes).
    rotted: BTreeSet<(u64, u64)>,
    /// Whether a consumer now and then reads a partition (a read that
    /// meets rot reports it, so a test of the scrub turns them off).
    consumers_read: bool,
    pub report: Report,
}

fn log_config(retained: bool) -> LogConfig {
    let config = LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        segment_bytes: 64 << 10,
        ..LogConfig::default()
    };
    match retained {
        false => config,
        true => LogConfig {
            segment_bytes: 2048,
            retention_bytes: Some(6144),
            ..config
        },
    }
}

impl Cluster {
    pub fn new(seed: u64, plan: &Plan) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let nodes = (1..=plan.nodes)
            .map(|id| Node {
                id,
                disk: SimDisk::new(seed.wrapping_mul(31).wrapping_add(id)),
                replicas: None,
                down_for: 0,
                crash_armed: false,
                slow: rng.random_range(0..300),
                paused_for: 0,
                jump: 0,
                seen: BTreeMap::new(),
                joining: false,
                retired: false,
                metadata: MetadataLog::new(),
                starts: BTreeMap::new(),
                rewrites: BTreeMap::new(),
                cuts: BTreeMap::new(),
            })
            .collect();
        // The last group carries the cluster metadata.
        let groups: Vec<u64> = (1..=plan.groups + 1).collect();
        let metadata_group = plan.groups + 1;
        let retention = plan
            .retention
            .then(|| Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7e7e_7e7e));
        let mut cluster = Self {
            seed,
            rng,
            retention,
            nodes,
            models: groups.iter().map(|id| (*id, Model::default())).collect(),
            groups,
            network: Vec::new(),
            cut: BTreeSet::new(),
            step: 0,
            faulty: false,
            violation: None,
            metadata_group,
            initial_voters: (1..=plan.nodes).collect(),
            metadata_at: BTreeMap::new(),
            topics_planned: 0,
            rotted: BTreeSet::new(),
            consumers_read: true,
            report: Report::default(),
        };
        for index in 0..cluster.nodes.len() {
            cluster.start(index).expect("a new node starts");
        }
        cluster
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    fn start(&mut self, index: usize) -> Result<(), String> {
        let ids = self.ids();
        let groups = self.groups.clone();
        let voters = match self.nodes[index].joining {
            true => Vec::new(),
            false => self.initial_voters.clone(),
        };
        let node = &mut self.nodes[index];
        let id = node.id;
        let root = node.disk.root();
        let mut config = ReplicasConfig::new(id, self.seed ^ (id << 40));
        if self.retention.is_some() {
            // Side files rewritten often, crashes included.
            config.side_file_rewrite_bytes = 1024;
        }
        let mut replicas = Replicas::new(config, &ids);
        for group in groups {
            let dir: Arc<dyn Storage> = root
                .open_or_create_dir(&format!("p{group}"))
                .map_err(|error| format!("node {id}: {error}"))?;
            let clock = Arc::new(ManualClock::new(1_700_000_000_000));
            let retained = self.retention.is_some() && group != self.metadata_group;
            let (partition, _) = Partition::open(dir, clock, log_config(retained))
                .map_err(|error| format!("node {id}: partition {group}: {error}"))?;
            let raft_dir = root
                .open_or_create_dir(&format!("r{group}"))
                .map_err(|error| format!("node {id}: {error}"))?;
            replicas
                .open_group(group, voters.clone(), raft_dir, Arc::new(partition))
                .map_err(|error| format!("node {id}: group {group}: raft log: {error}"))?;
            let opened = replicas.group(group).expect("just opened");
            node.seen
                .insert(group, (opened.commit_index(), opened.high_watermark()));
        }
        node.replicas = Some(replicas);
        node.rewrites.clear();
        node.cuts.clear();
        node.metadata = MetadataLog::new();
        Ok(())
    }

    /// Runs an operation of node `index`. If the node's disk lost power
    /// during it (a crash scheduled mid-operation), whatever it did or
    /// returned is void: the node is down. Otherwise an error or a panic is
    /// a violation.
    fn guarded<T>(
        &mut self,
        index: usize,
        what: &str,
        operation: impl FnOnce(&mut Replicas) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let node = &mut self.nodes[index];
        let id = node.id;
        let Some(replicas) = node.replicas.as_mut() else {
            return Ok(None);
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation(replicas)));
        if node.crash_armed && !node.disk.crash_pending() {
            self.report.crashes_mid_operation += 1;
            let down_for = self.rng.random_range(1..100);
            self.crash_for(index, down_for);
            return Ok(None);
        }
        match outcome {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(error)) => Err(format!("node {id}: {what}: {error}")),
            Err(panic) => Err(format!("node {id}: {what}: panic: {}", panic_text(&panic))),
        }
    }

    fn chance(&mut self, per_million: u32) -> bool {
        self.rng.random_range(0..1_000_000) < per_million
    }

    /// Runs the plan; the first violation as an error.
    pub fn run(&mut self, plan: Plan) -> Result<(), String> {
        for _ in 0..plan.faulty_steps {
            self.step_once(true)?;
        }
        self.heal()?;
        let ticks_before = self.group_ticks();
        for _ in 0..plan.quiet_steps {
            self.step_once(false)?;
        }
        // A node that restarts in the quiet steps (a crash scheduled in the
        // faulty ones) starts its counters again: saturate.
        let ticked = self.group_ticks().saturating_sub(ticks_before);
        let possible = plan.quiet_steps * plan.nodes * self.groups.len() as u64;
        self.report.quiet_group_ticks += possible.saturating_sub(ticked);
        // Liveness through a failover: the node leading most groups dies
        // and stays down; every group must acknowledge a record anyway.
        self.check_caught_up()?;
        self.report.asleep_at_kill += self
            .nodes
            .iter()
            .filter_map(|node| node.replicas.as_ref())
            .map(|replicas| replicas.stats().asleep)
            .sum::<usize>();
        let victim = self.busiest_leader();
        self.crash_for(victim, u64::MAX);
        self.live_phase(plan.failover_steps, "after the busiest leader died")?;
        if self.seed.is_multiple_of(2) {
            // The dead node returns.
            self.nodes[victim].down_for = 1;
        } else {
            // The dead node is gone for good: a new node replaces it in
            // every group, through joint consensus.
            self.replace(victim, plan.failover_steps)?;
        }
        self.live_phase(plan.settle_steps, "after healing")?;
        self.check_settled()
    }

    /// A leader whose groups sleep, then cut off from every peer, must step
    /// down within a few election timeouts (10 ticks each): asleep, it
    /// would lead on and serve reads in its old term while the others
    /// elect a new leader. The number of groups it led and had asleep.
    pub fn cut_off_leader_steps_down(&mut self) -> Result<(usize, usize), String> {
        let (index, id, led) = self.settled_busiest_leader("before the cut")?;
        let asleep = self.asleep_on(index, &led).len();
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
        for _ in 0..100 {
            self.step_once(false)?;
        }
        let still = self.led_by(index);
        if !still.is_empty() {
            return Err(format!(
                "weir-{id}, cut off from every peer for 100 steps, still leads groups {still:?}"
            ));
        }
        Ok((led.len(), asleep))
    }

    /// A leader whose groups sleep crashes, and its peers learn at once
    /// that their connection to it ended ([`Replicas::peer_lost`]): the
    /// groups it led must wake on every follower then, not only once the
    /// silence watch takes it for down two election timeouts later, and
    /// elect new leaders; the groups others lead stay asleep. The number
    /// of (follower, group) pairs asleep before the crash.
    pub fn lost_connection_wakes_followers(&mut self) -> Result<usize, String> {
        let (index, id, led) = self.settled_busiest_leader("before the crash")?;
        let followers: Vec<usize> = (0..self.nodes.len()).filter(|i| *i != index).collect();
        let others: Vec<u64> = self
            .groups
            .iter()
            .copied()
            .filter(|g| !led.contains(g))
            .collect();
        let others_asleep: Vec<Vec<u64>> = followers
            .iter()
            .map(|f| self.asleep_on(*f, &others))
            .collect();
        let asleep_before = followers
            .iter()
            .map(|f| self.asleep_on(*f, &led).len())
            .sum();
        self.crash_for(index, u64::MAX);
        for (follower, others_asleep) in followers.iter().zip(others_asleep) {
            let follower_id = self.nodes[*follower].id;
            if let Some(replicas) = self.nodes[*follower].replicas.as_mut() {
                replicas.peer_lost(id);
            }
            let still = self.asleep_on(*follower, &led);
            if !still.is_empty() {
                return Err(format!(
                    "weir-{follower_id} still sleeps in groups {still:?} after its connection to their leader weir-{id} ended"
                ));
            }
            if self.asleep_on(*follower, &others) != others_asleep {
                return Err(format!(
                    "weir-{follower_id} woke groups led by others when weir-{id}'s connection ended"
                ));
            }
        }
        for _ in 0..200 {
            self.step_once(false)?;
        }
        let leaderless: Vec<u64> = led
            .iter()
            .copied()
            .filter(|group| !followers.iter().any(|f| self.led_by(*f).contains(group)))
            .collect();
        if !leaderless.is_empty() {
            return Err(format!(
                "groups {leaderless:?} have no leader 200 steps after weir-{id} crashed"
            ));
        }
        Ok(asleep_before)
    }

    /// A follower's synced records rot while its groups sleep, found when
    /// it restarts (`restart`) or by its scrub while it runs: with no new
    /// record to carry them, the leader must still send the lost entries
    /// back and the follower end its repair, within 600 quiet steps.
    /// Whether the follower was seen repairing (a flip that hit no record
    /// would check nothing).
    pub fn rotted_follower_repairs_while_idle(&mut self, restart: bool) -> Result<bool, String> {
        let (index, id, led) = self.settled_busiest_leader("before the rot")?;
        let group = led
            .iter()
            .copied()
            .find(|group| *group != self.metadata_group)
            .or(led.first().copied())
            .ok_or(format!("weir-{id} leads no group"))?;
        let follower = (0..self.nodes.len())
            .find(|other| *other != index)
            .expect("a follower");
        let follower_id = self.nodes[follower].id;
        if restart {
            self.crash_for(follower, u64::MAX);
        }
        // Running, only the scrub may find the rot: no consumer reads it.
        self.consumers_read = restart;
        self.rot_in_the_middle(follower, group)?;
        if restart {
            self.start(follower)?;
        }
        let mut repairing = false;
        for _ in 0..600 {
            let replica = self.group_on(follower, group)?;
            repairing |= replica.log().repair().is_some();
            self.step_once(false)?;
        }
        let (replica, leader) = (
            self.group_on(follower, group)?,
            self.group_on(index, group)?,
        );
        if let Some(point) = replica.log().repair() {
            return Err(format!(
                "weir-{follower_id} still repairs group {group} up to {point:?} 600 quiet steps after the rot, at entry {} of the leader's {}",
                replica.last_index(),
                leader.last_index()
            ));
        }
        if replica.last_index() != leader.last_index()
            || common_entries(replica, leader) != common_entries(leader, replica)
        {
            return Err(format!(
                "weir-{follower_id} group {group}: entries up to {} after its repair, leader weir-{id} up to {}",
                replica.last_index(),
                leader.last_index()
            ));
        }
        check_acknowledged(follower_id, replica, &self.models[&group].acknowledged)?;
        Ok(repairing)
    }

    /// Flips a bit in the middle of node `index`'s first segment of group
    /// `group`'s partition.
    fn rot_in_the_middle(&mut self, index: usize, group: u64) -> Result<(), String> {
        self.rotted.insert((self.nodes[index].id, group));
        let disk = &self.nodes[index].disk;
        let name = weir_log::segment::log_file_name(0);
        let length = disk
            .root()
            .open_dir(&format!("p{group}"))
            .and_then(|dir| dir.open_file(&name, weir_io::OpenMode::Existing))
            .and_then(|file| file.len())
            .map_err(|error| format!("group {group}'s segment: {error}"))?;
        disk.corrupt(&format!("p{group}/{name}"), length / 2, 0x10)
            .map_err(|error| format!("a flip: {error}"))
    }

    /// Group `group` on node `index`, which must run.
    fn group_on(&self, index: usize, group: u64) -> Result<&Group, String> {
        self.nodes[index]
            .replicas
            .as_ref()
            .and_then(|replicas| replicas.group(group))
            .ok_or_else(|| format!("weir-{} does not run group {group}", self.nodes[index].id))
    }

    /// The groups of `groups` asleep on node `index`.
    fn asleep_on(&self, index: usize, groups: &[u64]) -> Vec<u64> {
        let replicas = self.nodes[index].replicas.as_ref();
        groups
            .iter()
            .copied()
            .filter(|group| replicas.is_some_and(|r| r.is_asleep(*group)))
            .collect()
    }

    /// Records acknowledged in every group, then 400 quiet steps (long
    /// enough for settled groups to quiesce): the node leading most groups
    /// (its index and id) and the groups it leads.
    fn settled_busiest_leader(&mut self, what: &str) -> Result<(usize, u64, Vec<u64>), String> {
        self.live_phase(600, what)?;
        for _ in 0..400 {
            self.step_once(false)?;
        }
        let index = self.busiest_leader();
        Ok((index, self.nodes[index].id, self.led_by(index)))
    }

    /// The groups node `index` leads (as it believes).
    fn led_by(&self, index: usize) -> Vec<u64> {
        let replicas = self.nodes[index].replicas.as_ref();
        self.groups
            .iter()
            .copied()
            .filter(|group| replicas.is_some_and(|r| r.group(*group).is_some_and(Group::is_leader)))
            .collect()
    }

    /// Asks node `index` to confirm its lead of `groups` (request ids from
    /// `first` on), then steps `steps` times; the requests raft confirmed.
    fn confirm(
        &mut self,
        index: usize,
        groups: &[u64],
        first: u64,
        steps: u64,
    ) -> Result<BTreeSet<u64>, String> {
        let replicas = self.nodes[index]
            .replicas
            .as_mut()
            .ok_or("the node is down")?;
        for (offset, group) in groups.iter().enumerate() {
            replicas
                .confirm_lead(*group, first + offset as u64)
                .map_err(|error| format!("group {group}: {error}"))?;
        }
        let mut confirmed = BTreeSet::new();
        for _ in 0..steps {
            self.step_once(false)?;
            if let Some(replicas) = self.nodes[index].replicas.as_mut() {
                let answered = replicas.take_confirmed();
                confirmed.extend(answered.into_iter().map(|(_, request, _)| request));
            }
        }
        Ok(confirmed)
    }

    /// A leader confirms its lead (raft's read index) within a few
    /// heartbeat rounds; one paused while the others elected and committed
    /// more, resuming cut off and still believing it leads, never does,
    /// cut off or healed: it would otherwise take a log shorter than the
    /// others' commit for complete (a fetch beyond its end answered out of
    /// range). The number of groups it believed it led after the pause.
    pub fn deposed_leader_confirms_nothing(&mut self) -> Result<usize, String> {
        let (index, id, led) = self.settled_busiest_leader("before the pause")?;
        let confirmed = self.confirm(index, &led, 1, 40)?;
        if confirmed.len() != led.len() {
            return Err(format!(
                "weir-{id}, leading {led:?} with every peer reachable, confirmed only requests {confirmed:?}"
            ));
        }
        self.nodes[index].paused_for = u64::MAX;
        self.live_phase(600, "while the leader is paused")?;
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
        self.network.retain(|flight| flight.to != id);
        self.nodes[index].paused_for = 0;
        let believed = self.led_by(index);
        let mut confirmed = self.confirm(index, &believed, 100, 100)?;
        self.cut.clear();
        confirmed.extend(self.confirm(index, &[], 0, 100)?);
        if !confirmed.is_empty() {
            return Err(format!(
                "weir-{id}, deposed while paused, confirmed its lead (requests {confirmed:?} of groups {believed:?})"
            ));
        }
        Ok(believed.len())
    }

    /// Adds a new node, and in every group swaps it for `victim` (one
    /// configuration change: add the new voter, remove the dead one, joint
    /// consensus left automatically); every group must have the new
    /// members within `steps`.
    fn replace(&mut self, victim: usize, steps: u64) -> Result<(), String> {
        let old = self.nodes[victim].id;
        let new = self.nodes.iter().map(|node| node.id).max().expect("nodes") + 1;
        self.nodes[victim].retired = true;
        self.nodes.push(Node {
            id: new,
            disk: SimDisk::new(self.seed.wrapping_mul(31).wrapping_add(new)),
            replicas: None,
            down_for: 0,
            crash_armed: false,
            slow: 0,
            paused_for: 0,
            jump: 0,
            seen: BTreeMap::new(),
            metadata: MetadataLog::new(),
            joining: true,
            retired: false,
            starts: BTreeMap::new(),
            rewrites: BTreeMap::new(),
            cuts: BTreeMap::new(),
        });
        for node in &mut self.nodes {
            if let Some(replicas) = node.replicas.as_mut() {
                replicas.add_peer(new);
            }
        }
        self.start(self.nodes.len() - 1)?;
        let mut expected: Vec<u64> = self
            .nodes
            .iter()
            .filter(|node| !node.retired)
            .map(|node| node.id)
            .collect();
        expected.sort_unstable();
        for offset in 0..steps {
            let pending = self.groups_not_reconfigured(&expected);
            if pending.is_empty() {
                self.report.replacements += 1;
                // One member restarts from what it persisted of the change.
                let live: Vec<usize> = (0..self.nodes.len())
                    .filter(|index| !self.nodes[*index].retired)
                    .collect();
                let index = live[self.rng.random_range(0..live.len())];
                self.crash_for(index, 5);
                return Ok(());
            }
            if offset.is_multiple_of(25) {
                for group in pending {
                    self.propose_replacement(group, old, new)?;
                }
            }
            self.step_once(false)?;
        }
        Err(format!(
            "groups {:?} did not replace node {old} by node {new} in {steps} steps",
            self.groups_not_reconfigured(&expected)
        ))
    }

    /// The groups whose leader does not yet have `expected` as its voters.
    fn groups_not_reconfigured(&self, expected: &[u64]) -> Vec<u64> {
        self.groups
            .iter()
            .copied()
            .filter(|group| {
                !self.nodes.iter().any(|node| {
                    node.replicas
                        .as_ref()
                        .and_then(|replicas| replicas.group(*group))
                        .is_some_and(|group| group.is_leader() && group.voters() == expected)
                })
            })
            .collect()
    }

    fn propose_replacement(&mut self, group: u64, old: u64, new: u64) -> Result<(), String> {
        use weir_replication::raft_types::ConfChangeType;
        let changes = [
            (ConfChangeType::AddNode, new),
            (ConfChangeType::RemoveNode, old),
        ];
        for index in 0..self.nodes.len() {
            let leads = self.nodes[index]
                .replicas
                .as_ref()
                .and_then(|replicas| replicas.group(group))
                .is_some_and(Group::is_leader);
            if leads {
                // Refused while another change is in flight: retried later.
                let _ = self.guarded(index, "propose membership", |replicas| {
                    Ok(replicas.propose_membership(group, &changes))
                })?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Steps without faults, producing until every group has a record
    /// acknowledged in the phase.
    fn live_phase(&mut self, steps: u64, what: &str) -> Result<(), String> {
        for model in self.models.values_mut() {
            model.acknowledged_in_phase = 0;
            model.idempotent_acknowledged_in_phase = 0;
        }
        for offset in 0..steps {
            if offset.is_multiple_of(25) {
                for group in self.groups.clone() {
                    if !self.live_in_phase(group) {
                        self.propose(group)?;
                    }
                }
            }
            self.step_once(false)?;
        }
        for group in &self.groups {
            if !self.live_in_phase(*group) {
                return Err(format!(
                    "group {group}: no record (or none of the idempotent producer's) acknowledged in the {steps} steps {what}"
                ));
            }
        }
        Ok(())
    }

    /// Whether group `group` acknowledged a record in this phase, and one
    /// of its idempotent producer's (which a stale or incomplete log would
    /// block).
    fn live_in_phase(&self, group: u64) -> bool {
        let model = &self.models[&group];
        model.acknowledged_in_phase > 0
            && (group == self.metadata_group || model.idempotent_acknowledged_in_phase > 0)
    }

    fn group_ticks(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|node| node.replicas.as_ref())
            .map(|replicas| replicas.stats().group_ticks)
            .sum()
    }

    fn busiest_leader(&self) -> usize {
        (0..self.nodes.len())
            .max_by_key(|index| {
                let led = self.nodes[*index].replicas.as_ref().map_or(0, |replicas| {
                    self.groups
                        .iter()
                        .filter(|group| replicas.group(**group).is_some_and(Group::is_leader))
                        .count()
                });
                (led, std::cmp::Reverse(*index))
            })
            .expect("nodes")
    }

    fn step_once(&mut self, faulty: bool) -> Result<(), String> {
        self.step += 1;
        self.faulty = faulty;
        if faulty {
            self.inject_faults();
            if self.chance(300_000) {
                let group = self.groups[self.rng.random_range(0..self.groups.len())];
                self.propose(group)?;
            }
        }
        self.restart_due()?;
        self.tick_all()?;
        self.deliver()?;
        self.process_all()?;
        self.apply_retention()?;
        self.resolve_pending();
        if self.chance(100_000) && self.consumers_read {
            self.consume()?;
        }
        self.apply_metadata()?;
        self.check_step()
    }

    /// Now and then (with [`Plan::retention`]) one node applies retention
    /// to its groups: compaction, then deletion.
    fn apply_retention(&mut self) -> Result<(), String> {
        let Some(rng) = self.retention.as_mut() else {
            return Ok(());
        };
        if rng.random_range(0..100) >= 3 {
            return Ok(());
        }
        let index = rng.random_range(0..self.nodes.len());
        self.guarded(index, "retention", |replicas| {
            replicas
                .apply_retention()
                .into_iter()
                .try_for_each(|(group, result)| {
                    result
                        .map(|_| ())
                        .map_err(|error| format!("group {group}: {error}"))
                })
        })?;
        Ok(())
    }

    fn inject_faults(&mut self) {
        if self.chance(1_000) {
            // A clock that jumps forward: many ticks at once.
            let index = self.rng.random_range(0..self.nodes.len());
            self.nodes[index].jump = self.rng.random_range(5..60);
            self.report.clock_jumps += 1;
        }
        if self.chance(1_000) {
            // A process that stalls (a long pause), then resumes as if
            // nothing happened.
            let index = self.rng.random_range(0..self.nodes.len());
            self.nodes[index].paused_for = self.rng.random_range(5..80);
            self.report.pauses += 1;
        }
        if self.chance(1_500) {
            let index = self.rng.random_range(0..self.nodes.len());
            if self.nodes[index].replicas.is_some() {
                let down_for = self.rng.random_range(20..300);
                self.crash_for(index, down_for);
            }
        }
        if self.chance(1_000) {
            // Power lost in the middle of whatever the node does next: a
            // write, a sync, a truncation.
            let index = self.rng.random_range(0..self.nodes.len());
            let countdown = self.rng.random_range(1..40);
            let node = &mut self.nodes[index];
            if node.replicas.is_some() && !node.crash_armed {
                node.crash_armed = true;
                node.disk.schedule_crash(countdown);
            }
        }
        if self.chance(2_000) {
            self.partition_randomly();
        }
        if self.chance(4_000) {
            self.cut.clear();
        }
    }

    fn crash_for(&mut self, index: usize, down_for: u64) {
        let node = &mut self.nodes[index];
        node.disk.crash();
        node.crash_armed = false;
        node.replicas = None;
        node.down_for = down_for;
        self.report.crashes += 1;
    }

    /// Cuts the network: a node alone, a bridge, or one way.
    fn partition_randomly(&mut self) {
        self.cut.clear();
        let ids = self.ids();
        match self.rng.random_range(0..3) {
            0 => {
                let alone = ids[self.rng.random_range(0..ids.len())];
                for other in &ids {
                    if *other != alone {
                        self.cut.insert((alone, *other));
                        self.cut.insert((*other, alone));
                    }
                }
            }
            1 => {
                // Two halves that only a bridge node joins.
                let bridge = ids[self.rng.random_range(0..ids.len())];
                let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != bridge).collect();
                let (left, right) = rest.split_at(rest.len() / 2);
                for a in left {
                    for b in right {
                        self.cut.insert((*a, *b));
                        self.cut.insert((*b, *a));
                    }
                }
            }
            _ => {
                let from = ids[self.rng.random_range(0..ids.len())];
                let to = ids[self.rng.random_range(0..ids.len())];
                if from != to {
                    self.cut.insert((from, to));
                }
            }
        }
    }

    fn heal(&mut self) -> Result<(), String> {
        self.cut.clear();
        for node in &mut self.nodes {
            node.paused_for = 0;
            node.jump = 0;
            if node.crash_armed && node.disk.crash_pending() {
                node.disk.cancel_crash();
                node.crash_armed = false;
            }
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].replicas.is_none() {
                self.start(index)?;
            }
        }
        Ok(())
    }

    fn restart_due(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if node.replicas.is_none() && node.down_for != u64::MAX {
                node.down_for = node.down_for.saturating_sub(1);
                if node.down_for == 0 {
                    self.start(index)?;
                }
            }
        }
        Ok(())
    }

    fn tick_all(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused_for > 0 {
                self.nodes[index].paused_for -= 1;
                continue;
            }
            let skip = self.rng.random_range(0..1000) < self.nodes[index].slow;
            let ticks = u64::from(!skip) + std::mem::take(&mut self.nodes[index].jump);
            self.guarded(index, "tick", |replicas| {
                for _ in 0..ticks {
                    replicas.tick();
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn propose(&mut self, group: u64) -> Result<(), String> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|index| self.nodes[*index].paused_for == 0)
            .filter(|index| {
                self.nodes[*index]
                    .replicas
                    .as_ref()
                    .and_then(|replicas| replicas.group(group))
                    .is_some_and(Group::is_leader)
            })
            .collect();
        let Some(&index) = leaders.first() else {
            return Ok(());
        };
        if group == self.metadata_group {
            return self.propose_metadata(index);
        }
        let idempotent = self.rng.random_range(0..2) == 0;
        let model = self.models.get_mut(&group).expect("a model per group");
        let (value, producer) = match idempotent {
            true if model.idempotent_waiting => return Ok(()),
            true => {
                let sequence = model.idempotent_next;
                let producer = ProducerInfo {
                    producer_id: i64::try_from(group).expect("a small group id"),
                    producer_epoch: 0,
                    base_sequence: i32::try_from(sequence).expect("fewer than 2^31 batches"),
                };
                (format!("{group}-i-{sequence}").into_bytes(), producer)
            }
            false => {
                model.produced += 1;
                (
                    format!("{group}-n-{}", model.produced).into_bytes(),
                    ProducerInfo::NONE,
                )
            }
        };
        let records = [Record::value(1_700_000_000_000, &value)];
        let mut batch = Vec::new();
        encode(&records, producer, &mut batch).expect("a small batch encodes");
        let id = self.nodes[index].id;
        let outcome = self.guarded(index, "propose", |replicas| {
            Ok(replicas.propose(group, batch.clone()))
        })?;
        let Some(outcome) = outcome else {
            return Ok(());
        };
        match outcome {
            Ok(proposed) if proposed.duplicate => {
                // A retry of a committed batch: acknowledged with the
                // original's offsets, which must hold this very record.
                self.acknowledge(group, proposed.base_offset, value, true);
            }
            Ok(proposed) => {
                let step = self.step;
                let model = self.models.get_mut(&group).expect("a model");
                model.idempotent_waiting |= idempotent;
                model.pending.push(Pending {
                    node: id,
                    index: proposed.index,
                    term: proposed.term,
                    base_offset: proposed.base_offset,
                    value,
                    idempotent,
                    since: step,
                });
            }
            // A stale leader (one that has not heard of the newer term)
            // answers a producer ahead of its log with a retriable error.
            Err(
                ProposeError::NotLeader { .. }
                | ProposeError::Dropped(_)
                | ProposeError::InFlight
                | ProposeError::SequenceAhead { .. },
            ) => {}
            Err(error) => return Err(format!("node {id}: group {group}: propose: {error}")),
        }
        Ok(())
    }

    /// Proposes a metadata change planned from the leader's own view: a
    /// node's registration, a topic, or a block of producer ids. A plan
    /// overtaken by another change is refused when applied, alike on
    /// every node.
    fn propose_metadata(&mut self, index: usize) -> Result<(), String> {
        let state = self.nodes[index].metadata.state().clone();
        let unregistered = self
            .ids()
            .into_iter()
            .find(|id| !state.nodes.contains_key(id));
        let record = match (unregistered, self.rng.random_range(0..3)) {
            (Some(id), _) => MetadataRecord::Node {
                id,
                kafka_address: format!("127.0.0.1:{}", 9090 + id),
                resp_address: format!("127.0.0.1:{}", 6370 + id),
                cluster_address: format!("127.0.0.1:{}", 7000 + id),
            },
            (None, 0) => state
                .plan_producer_ids(self.nodes[index].id, 0, 1000)
                .map_err(|error| format!("planning producer ids: {error}"))?,
            (None, _) => {
                self.topics_planned += 1;
                let partitions = self.rng.random_range(1..4);
                let factor = state.nodes.len().min(3) as u32;
                state
                    .plan_topic(
                        &format!("t{}", self.topics_planned),
                        partitions,
                        factor,
                        &std::collections::BTreeSet::new(),
                    )
                    .map_err(|error| format!("planning a topic: {error}"))?
            }
        };
        let batch = record_batch(&record, 1_700_000_000_000);
        let group = self.metadata_group;
        let id = self.nodes[index].id;
        let outcome = self.guarded(index, "propose metadata", |replicas| {
            Ok(replicas.propose(group, batch.clone()))
        })?;
        match outcome {
            Some(Ok(proposed)) => {
                let step = self.step;
                self.models
                    .get_mut(&group)
                    .expect("a model")
                    .pending
                    .push(Pending {
                        node: id,
                        index: proposed.index,
                        term: proposed.term,
                        base_offset: proposed.base_offset,
                        value: record.encode(),
                        idempotent: false,
                        since: step,
                    });
            }
            Some(Err(ProposeError::NotLeader { .. } | ProposeError::Dropped(_))) | None => {}
            Some(Err(error)) => return Err(format!("node {id}: propose metadata: {error}")),
        }
        Ok(())
    }

    /// Every node applies the metadata records committed so far; two nodes
    /// that have applied up to the same offset hold the same metadata.
    fn apply_metadata(&mut self) -> Result<(), String> {
        let group = self.metadata_group;
        for node in &mut self.nodes {
            if node.crash_armed {
                continue;
            }
            let Some(replicas) = node.replicas.as_ref() else {
                continue;
            };
            let partition = replicas
                .group(group)
                .expect("the metadata group")
                .log()
                .partition();
            node.metadata
                .catch_up(partition)
                .map_err(|error| format!("node {}: metadata: {error}", node.id))?;
            let offset = node.metadata.applied_offset();
            let fingerprint = format!("{:?}", node.metadata.state());
            match self.metadata_at.get(&offset) {
                Some(known) if *known != fingerprint => {
                    return Err(format!(
                        "node {}: metadata at offset {offset} differs from another node's:\n{fingerprint}\n{known}",
                        node.id
                    ))
                }
                Some(_) => {}
                None => {
                    self.metadata_at.insert(offset, fingerprint);
                }
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, group: u64, offset: u64, value: Vec<u8>, idempotent: bool) {
        self.report.acknowledged += 1;
        let model = self.models.get_mut(&group).expect("a model");
        model.acknowledged_in_phase += 1;
        model.idempotent_acknowledged_in_phase += usize::from(idempotent);
        if idempotent {
            model.idempotent_next += 1;
            model.idempotent_waiting = false;
        }
        if let Some(earlier) = model.acknowledged.insert(offset, value.clone()) {
            if earlier != value {
                self.violation.get_or_insert(format!(
                    "group {group}: offset {offset} acknowledged for {:?} and for {:?}",
                    String::from_utf8_lossy(&earlier),
                    String::from_utf8_lossy(&value)
                ));
            }
        }
    }

    /// Delivers the frames due, through the wire codec; some are lost, some
    /// duplicated, and those due together arrive in random order.
    fn deliver(&mut self) -> Result<(), String> {
        let now = self.step;
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.network.len() {
            let to = self.network[index].to;
            let paused = self
                .nodes
                .iter()
                .any(|node| node.id == to && node.paused_for > 0);
            if self.network[index].deliver_at <= now && !paused {
                due.push(self.network.swap_remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by(|a, b| {
            (a.deliver_at, a.from, a.to, &a.frame).cmp(&(b.deliver_at, b.from, b.to, &b.frame))
        });
        for position in (1..due.len()).rev() {
            let other = self.rng.random_range(0..=position);
            due.swap(position, other);
        }
        for flight in due {
            let (envelopes, _) = decode_frame(&flight.frame, &Limits::default())
                .map_err(|error| format!("a frame did not decode: {error}"))?
                .ok_or("a frame was cut short")?;
            self.report.delivered += envelopes.len() as u64;
            let index = self
                .nodes
                .iter()
                .position(|node| node.id == flight.to)
                .expect("a node");
            self.guarded(index, "receive", |replicas| {
                replicas.receive(flight.from, envelopes);
                Ok(())
            })?;
        }
        Ok(())
    }

    fn send(&mut self, from: u64, outbox: Vec<(u64, Vec<Envelope>)>) {
        for (to, envelopes) in outbox {
            if self.cut.contains(&(from, to)) || self.chance(20_000) {
                continue;
            }
            let copies = if self.chance(10_000) { 2 } else { 1 };
            // Mostly quick; now and then late, overtaken by later frames.
            let late = self.chance(50_000);
            let mut frame = Vec::new();
            encode_frame(&envelopes, &mut frame);
            for _ in 0..copies {
                let delay = match late {
                    true => self.rng.random_range(4..30),
                    false => self.rng.random_range(1..4),
                };
                self.network.push(InFlight {
                    deliver_at: self.step + delay,
                    from,
                    to,
                    frame: frame.clone(),
                });
            }
        }
    }

    fn process_all(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused_for > 0 {
                continue;
            }
            let id = self.nodes[index].id;
            let outbox = self.guarded(index, "process", |replicas| {
                replicas
                    .process()
                    .map_err(|(group, error)| format!("group {group}: {error}"))?;
                Ok(replicas.take_outbox())
            })?;
            let Some(outbox) = outbox else {
                continue;
            };
            // The moments a crash hurts most: just after granting a vote or
            // acknowledging entries. Back at once, before the election or
            // the round moves on.
            let granted = |wanted: MessageType| {
                outbox
                    .iter()
                    .flat_map(|(_, envelopes)| envelopes)
                    .any(|envelope| envelope.message.msg_type == wanted && !envelope.message.reject)
            };
            let odds = match (
                granted(MessageType::MsgRequestVoteResponse),
                granted(MessageType::MsgAppendResponse),
            ) {
                (true, _) => 200_000,
                (false, true) => 5_000,
                (false, false) => 0,
            };
            self.send(id, outbox);
            if self.faulty && odds > 0 && self.chance(odds) {
                let down_for = self.rng.random_range(1..4);
                self.crash_for(index, down_for);
            }
        }
        Ok(())
    }

    /// Settles proposals: acknowledged once committed; the idempotent
    /// producer retries one that was lost, whose leader crashed, or that
    /// took too long (its request timed out; the original may still
    /// commit, and the retry must not write it twice).
    fn resolve_pending(&mut self) {
        for group in self.groups.clone() {
            let pendings =
                std::mem::take(&mut self.models.get_mut(&group).expect("a model").pending);
            let mut still = Vec::new();
            for pending in pendings {
                let node = self
                    .nodes
                    .iter()
                    .find(|node| node.id == pending.node)
                    .expect("a node");
                let status = node
                    .replicas
                    .as_ref()
                    .and_then(|replicas| replicas.group(group))
                    .map(|group| group.commit_status(pending.index, pending.term));
                let timed_out = self.step - pending.since > 100;
                match status {
                    Some(CommitStatus::Committed) => self.acknowledge(
                        group,
                        pending.base_offset,
                        pending.value,
                        pending.idempotent,
                    ),
                    Some(CommitStatus::Pending) if !timed_out => still.push(pending),
                    None | Some(CommitStatus::Lost | CommitStatus::Pending) => {
                        let model = self.models.get_mut(&group).expect("a model");
                        model.idempotent_waiting &= !pending.idempotent;
                    }
                }
            }
            self.models
                .get_mut(&group)
                .expect("a model")
                .pending
                .extend(still);
        }
    }

    /// A consumer reads a few records below a node's high watermark: every
    /// read of an offset, on any node, returns the same record.
    fn consume(&mut self) -> Result<(), String> {
        let index = self.rng.random_range(0..self.nodes.len());
        let group_id = self.groups[self.rng.random_range(0..self.groups.len())];
        let node = &self.nodes[index];
        if node.crash_armed {
            return Ok(());
        }
        let Some(group) = node
            .replicas
            .as_ref()
            .and_then(|replicas| replicas.group(group_id))
        else {
            return Ok(());
        };
        let id = node.id;
        let partition = group.log().partition();
        let (start, end) = (partition.log_start_offset(), partition.high_watermark());
        if start == end {
            return Ok(());
        }
        let from = self.rng.random_range(start..end);
        let read = match partition.read(from, 4096) {
            Ok(read) => read,
            Err(weir_log::LogError::Corrupt { .. }) if self.rotted.contains(&(id, group_id)) => {
                return Ok(());
            }
            Err(error) => return Err(format!("node {id}: consumer read at {from}: {error}")),
        };
        let observed = &mut self.models.get_mut(&group_id).expect("a model").observed;
        for record in read.records() {
            let record = record.map_err(|error| format!("node {id}: record: {error}"))?;
            if record.offset >= end {
                return Err(format!(
                    "node {id}: group {group_id}: read offset {} at or above the high watermark {end}",
                    record.offset
                ));
            }
            let value = record.value.unwrap_or_default().to_vec();
            match observed.get(&record.offset) {
                Some(seen) if *seen != value => {
                    return Err(format!(
                        "node {id}: group {group_id}: offset {} read as {:?}, earlier as {:?}",
                        record.offset,
                        String::from_utf8_lossy(&value),
                        String::from_utf8_lossy(seen)
                    ))
                }
                Some(_) => {}
                None => {
                    observed.insert(record.offset, value);
                }
            }
        }
        Ok(())
    }

    /// What must hold after every step.
    fn check_step(&mut self) -> Result<(), String> {
        if let Some(violation) = self.violation.take() {
            return Err(violation);
        }
        for node in &mut self.nodes {
            let Some(replicas) = node.replicas.as_ref() else {
                continue;
            };
            for group_id in &self.groups {
                let group = replicas
                    .group(*group_id)
                    .expect("every node has every group");
                let model = self.models.get_mut(group_id).expect("a model");
                let seen = node.seen.get_mut(group_id).expect("seen at start");
                let cuts = replicas.cuts(*group_id);
                if node.cuts.insert(*group_id, cuts).unwrap_or(0) != cuts {
                    // Cut at a corrupt batch: what it had committed went
                    // with the records, to be repaired from the others.
                    *seen = (group.commit_index(), group.high_watermark());
                }
                check_group(node.id, *group_id, group, model, seen, &mut self.report)?;
                let rewrites = group.log().rewrites();
                let before = node.rewrites.insert(*group_id, rewrites).unwrap_or(0);
                self.report.rewrites += rewrites - before;
                let start = group.log().log_start();
                let now = (start.index, start.reset);
                if node
                    .starts
                    .insert(*group_id, now)
                    .is_some_and(|before| before != now)
                {
                    match now.1 {
                        true => self.report.snapshots += 1,
                        false => self.report.compactions += 1,
                    }
                }
                for value in [
                    self.step,
                    node.id,
                    *group_id,
                    group.term(),
                    u64::from(group.is_leader()),
                    group.commit_index(),
                    group.log().last_index_(),
                    group.high_watermark(),
                    group.election_timeout() as u64,
                ] {
                    self.report.trace = (self.report.trace ^ value).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        Ok(())
    }

    /// After the quiet steps: in every group every node holds what the
    /// leader committed (a follower left behind while its group sleeps
    /// would serve stale reads and slow the next failover).
    fn check_caught_up(&self) -> Result<(), String> {
        for group_id in &self.groups {
            let groups: Vec<(u64, &Group)> = self
                .nodes
                .iter()
                .filter_map(|node| Some((node.id, node.replicas.as_ref()?.group(*group_id)?)))
                .collect();
            let Some(leader) = groups.iter().find(|(_, group)| group.is_leader()) else {
                return Err(format!("group {group_id}: no leader after the quiet steps"));
            };
            for (id, group) in &groups {
                if group.commit_index() != leader.1.commit_index() {
                    return Err(format!(
                        "group {group_id}: node {id} at commit {} after the quiet steps, leader {} at {}",
                        group.commit_index(),
                        leader.0,
                        leader.1.commit_index()
                    ));
                }
            }
        }
        Ok(())
    }

    /// After healing: in every group one leader, every node caught up,
    /// every acknowledged record on every node at its offset, no duplicate.
    fn check_settled(&self) -> Result<(), String> {
        for group_id in &self.groups {
            let groups: Vec<(u64, &Group)> = self
                .nodes
                .iter()
                .filter(|node| !node.retired)
                .map(|node| {
                    let replicas = node.replicas.as_ref().expect("every node runs at the end");
                    (node.id, replicas.group(*group_id).expect("every group"))
                })
                .collect();
            let leaders: Vec<u64> = groups
                .iter()
                .filter(|(_, group)| group.is_leader())
                .map(|(id, _)| *id)
                .collect();
            if leaders.len() != 1 {
                return Err(format!(
                    "group {group_id}: no single leader at the end: {leaders:?}"
                ));
            }
            let leader = groups
                .iter()
                .find(|(id, _)| *id == leaders[0])
                .expect("the leader")
                .1;
            let model = &self.models[group_id];
            for (id, group) in &groups {
                if group.voters() != leader.voters() {
                    return Err(format!(
                        "group {group_id}: node {id} has voters {:?}, leader {} has {:?}",
                        group.voters(),
                        leaders[0],
                        leader.voters()
                    ));
                }
                if group.commit_index() != leader.commit_index()
                    || common_entries(group, leader) != common_entries(leader, group)
                {
                    return Err(format!(
                        "group {group_id}: node {id} did not catch up with leader {} (commit {} vs {})",
                        leaders[0],
                        group.commit_index(),
                        leader.commit_index()
                    ));
                }
                check_acknowledged(*id, group, &model.acknowledged)?;
            }
            if *group_id != self.metadata_group {
                check_no_duplicates(leaders[0], leader)?;
            }
        }
        self.check_metadata_settled()
    }

    /// At the end every node holds the same metadata, with every node
    /// registered.
    fn check_metadata_settled(&self) -> Result<(), String> {
        let live: Vec<&Node> = self.nodes.iter().filter(|node| !node.retired).collect();
        let first = &live[0].metadata;
        for node in &live {
            if node.metadata != *first {
                return Err(format!(
                    "node {} ends with other metadata than node {}",
                    node.id, live[0].id
                ));
            }
        }
        let state = first.state();
        if state.nodes.len() != self.nodes.len() {
            // Every node ever started registers (the replaced one too).
            return Err(format!("only {} nodes registered", state.nodes.len()));
        }
        Ok(())
    }
}

/// One node's view of one group after a step.
fn check_group(
    id: u64,
    group_id: u64,
    group: &Group,
    model: &mut Model,
    seen: &mut (u64, u64),
    report: &mut Report,
) -> Result<(), String> {
    if group.is_leader() {
        match model.leaders.insert(group.term(), id) {
            Some(other) if other != id => {
                return Err(format!(
                    "group {group_id}: two leaders in term {}: nodes {other} and {id}",
                    group.term()
                ))
            }
            None => report.elections += 1,
            _ => {}
        }
    }
    let (commit, high_watermark) = (group.commit_index(), group.high_watermark());
    if commit < seen.0 {
        return Err(format!(
            "node {id}: group {group_id}: commit index moved back from {} to {commit}",
            seen.0
        ));
    }
    if high_watermark < seen.1 {
        return Err(format!(
            "node {id}: group {group_id}: high watermark moved back from {} to {high_watermark}",
            seen.1
        ));
    }
    let committed_end = group.log().end_offset_at(commit);
    if high_watermark > committed_end {
        return Err(format!(
            "node {id}: group {group_id}: high watermark {high_watermark} above the end of its committed entries {committed_end}"
        ));
    }
    *seen = (commit, high_watermark);
    for (index, term, start, end) in group.log().data_entries() {
        if index > commit {
            break;
        }
        match model.committed.get(&index) {
            Some(known) if *known != (term, start, end) => {
                return Err(format!(
                    "node {id}: group {group_id}: committed entry {index} is (term {term}, offsets {start}..{end}), \
                     another node committed (term {}, offsets {}..{})",
                    known.0, known.1, known.2
                ))
            }
            Some(_) => {}
            None => {
                model.committed.insert(index, (term, start, end));
            }
        }
    }
    Ok(())
}

/// The data entries of `group` that `other` has not compacted away either.
fn common_entries(group: &Group, other: &Group) -> Vec<(u64, u64, u64, u64)> {
    let after = group
        .log()
        .log_start()
        .index
        .max(other.log().log_start().index);
    let mut entries = group.log().data_entries();
    entries.retain(|(index, ..)| *index > after);
    entries
}

/// Every acknowledged record is readable below the high watermark at its
/// offset, with its value (unless retention deleted it).
fn check_acknowledged(
    id: u64,
    group: &Group,
    acknowledged: &BTreeMap<u64, Vec<u8>>,
) -> Result<(), String> {
    let partition = group.log().partition();
    for (offset, value) in acknowledged.range(partition.log_start_offset()..) {
        if *offset >= partition.high_watermark() {
            return Err(format!(
                "node {id}: acknowledged offset {offset} is above the high watermark {}",
                partition.high_watermark()
            ));
        }
        let read = partition
            .read(*offset, 1 << 16)
            .map_err(|error| format!("node {id}: read at {offset}: {error}"))?;
        let record = read
            .records()
            .next()
            .ok_or(format!(
                "node {id}: nothing at acknowledged offset {offset}"
            ))?
            .map_err(|error| format!("node {id}: record at {offset}: {error}"))?;
        if record.offset != *offset || record.value != Some(value.as_slice()) {
            return Err(format!(
                "node {id}: offset {offset} holds {:?} at {}, acknowledged {:?}",
                record.value.map(String::from_utf8_lossy),
                record.offset,
                String::from_utf8_lossy(value)
            ));
        }
    }
    Ok(())
}

/// The whole committed log, read once: the idempotent producer's batches
/// appear once each and in sequence order, and no record appears twice.
fn check_no_duplicates(id: u64, group: &Group) -> Result<(), String> {
    let partition = group.log().partition();
    let mut offset = partition.log_start_offset();
    let mut seen = BTreeSet::new();
    // Retention may have deleted the first batches: the sequence then
    // goes on from the first one kept.
    let mut next_sequence = None;
    while offset < partition.high_watermark() {
        let read = partition
            .read(offset, 1 << 20)
            .map_err(|error| format!("node {id}: read at {offset}: {error}"))?;
        for record in read.records() {
            let record = record.map_err(|error| format!("node {id}: record: {error}"))?;
            let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
            if let Some((_, sequence)) = value.split_once("-i-") {
                let sequence: u64 = sequence.parse().expect("a sequence");
                let due = next_sequence.unwrap_or(match partition.log_start_offset() {
                    0 => 0,
                    _ => sequence,
                });
                if sequence != due {
                    return Err(format!(
                        "node {id}: offset {}: idempotent batch {sequence} where {due} was due (a duplicate or a gap)",
                        record.offset
                    ));
                }
                next_sequence = Some(due + 1);
            }
            if !seen.insert(value.clone()) {
                return Err(format!(
                    "node {id}: {value:?} stored twice (offset {})",
                    record.offset
                ));
            }
            offset = record.offset + 1;
        }
    }
    Ok(())
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_default()
}

/// Runs one seed; panics with the seed and the command that replays it.
pub fn run_seed(seed: u64, plan: Plan) -> Report {
    let mut cluster = Cluster::new(seed, &plan);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.run(plan)));
    let outcome = outcome.unwrap_or_else(|panic| Err(format!("panic: {}", panic_text(&panic))));
    if let Err(violation) = outcome {
        panic!(
            "seed {seed} ({} nodes, {} groups), step {}: {violation}\nreplay: WEIR_RAFT_SEED={seed} cargo test -p weir-replication --test cluster -- --nocapture",
            plan.nodes, plan.groups, cluster.step
        );
    }
    let live = cluster
        .nodes
        .iter()
        .find(|node| !node.retired)
        .expect("a live node");
    cluster.report.topics = live.metadata.state().topics.len();
    cluster.report.metadata_refused = live.metadata.refused();
    cluster.report
}
