//! A deterministic cluster of Raft groups for one partition, in process:
//! nodes on simulated disks that lose power, a network that delays, drops,
//! duplicates, reorders and partitions messages (through weir's wire
//! codec), clocks that tick at different rates, and a producer that
//! proposes batches at whichever node thinks it leads. Checks Raft's
//! safety and the log's promises after every step, and liveness after
//! healing. Everything follows from the seed.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{ManualClock, SimDisk, Storage};
use weir_log::batch::{encode, ProducerInfo, Record};
use weir_log::{HighWatermarkPolicy, LogConfig, Partition};
use weir_replication::codec::{decode_frame, encode_frame, Envelope, Limits};
use weir_replication::{CommitStatus, Group, GroupConfig, ProposeError};

/// How hard the run is.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub nodes: u64,
    pub steps: u64,
    /// Steps with faults and proposals; the rest heal and settle.
    pub faulty_steps: u64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub acknowledged: usize,
    pub crashes: usize,
    pub crashes_mid_operation: usize,
    pub elections: usize,
    pub delivered: u64,
    /// A hash of every node's term, role, commit and log end after every
    /// step: equal for two runs of one seed, or the run is not determined
    /// by its seed.
    pub trace: u64,
}

struct Node {
    id: u64,
    disk: Arc<SimDisk>,
    group: Option<Group>,
    /// Steps left before a crashed node restarts.
    down_for: u64,
    /// A crash is scheduled on the disk, to fire mid-operation.
    crash_armed: bool,
    /// Chance in 1000 that a tick is skipped (a slow clock).
    slow: u32,
    /// The commit index and high watermark seen in this life.
    commit_seen: u64,
    high_watermark_seen: u64,
}

struct InFlight {
    deliver_at: u64,
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

pub struct Cluster {
    seed: u64,
    rng: Xoshiro256PlusPlus,
    nodes: Vec<Node>,
    network: Vec<InFlight>,
    /// Pairs (from, to) whose messages are dropped.
    cut: BTreeSet<(u64, u64)>,
    step: u64,
    pending: Vec<Pending>,
    /// Acknowledged records: offset → value.
    acknowledged: BTreeMap<u64, Vec<u8>>,
    /// The leader of each term seen.
    leaders: BTreeMap<u64, u64>,
    /// Entries (index → (term, start, end)) known committed somewhere.
    committed: BTreeMap<u64, (u64, u64, u64)>,
    /// What consumers read at each offset (below a high watermark).
    observed: BTreeMap<u64, Vec<u8>>,
    produced: u64,
    /// Whether faults are being injected (not while settling).
    faulty: bool,
    acknowledged_after_heal: usize,
    /// The idempotent producer's next sequence, and whether its batch is
    /// in flight.
    idempotent_next: u64,
    idempotent_waiting: bool,
    violation: Option<String>,
    pub report: Report,
}

fn log_config() -> LogConfig {
    LogConfig {
        high_watermark: HighWatermarkPolicy::SetByOwner,
        segment_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

impl Cluster {
    pub fn new(seed: u64, nodes: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let nodes = (1..=nodes)
            .map(|id| Node {
                id,
                disk: SimDisk::new(seed.wrapping_mul(31).wrapping_add(id)),
                group: None,
                down_for: 0,
                crash_armed: false,
                slow: rng.random_range(0..300),
                commit_seen: 0,
                high_watermark_seen: 0,
            })
            .collect();
        let mut cluster = Self {
            seed,
            rng,
            nodes,
            network: Vec::new(),
            cut: BTreeSet::new(),
            step: 0,
            pending: Vec::new(),
            acknowledged: BTreeMap::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            observed: BTreeMap::new(),
            produced: 0,
            faulty: false,
            acknowledged_after_heal: 0,
            idempotent_next: 0,
            idempotent_waiting: false,
            violation: None,
            report: Report::default(),
        };
        for index in 0..cluster.nodes.len() {
            cluster.start(index).expect("a new node starts");
        }
        cluster
    }

    fn voters(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    fn start(&mut self, index: usize) -> Result<(), String> {
        let voters = self.voters();
        let node = &mut self.nodes[index];
        let root = node.disk.root();
        let dir: Arc<dyn Storage> = root
            .open_or_create_dir("partition")
            .map_err(|error| format!("node {}: {error}", node.id))?;
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let (partition, _) = Partition::open(dir, clock, log_config())
            .map_err(|error| format!("node {}: partition: {error}", node.id))?;
        let raft_dir = root
            .open_or_create_dir("raft")
            .map_err(|error| format!("node {}: {error}", node.id))?;
        let config = GroupConfig::new(node.id, voters, self.seed ^ (node.id << 32));
        let group = Group::open(&config, raft_dir.as_ref(), Arc::new(partition))
            .map_err(|error| format!("node {}: raft log: {error}", node.id))?;
        node.commit_seen = group.commit_index();
        node.high_watermark_seen = group.high_watermark();
        node.group = Some(group);
        Ok(())
    }

    /// Runs an operation of node `index`'s group. If the node's disk lost
    /// power during it (a crash scheduled mid-operation), whatever it did
    /// or returned is void: the node is down. Otherwise an error or a panic
    /// is a violation.
    fn guarded<T>(
        &mut self,
        index: usize,
        what: &str,
        operation: impl FnOnce(&mut Group) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let node = &mut self.nodes[index];
        let id = node.id;
        let Some(group) = node.group.as_mut() else {
            return Ok(None);
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation(group)));
        let crashed = node.crash_armed && !node.disk.crash_pending();
        if crashed {
            node.crash_armed = false;
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
        let healed_at = self.step;
        let deadline = self.step + (plan.steps - plan.faulty_steps);
        while self.step < deadline {
            // Liveness: after healing, a producer keeps trying until one
            // more record is acknowledged.
            if self.acknowledged_after_heal == 0 && (self.step - healed_at).is_multiple_of(50) {
                self.propose()?;
            }
            self.step_once(false)?;
        }
        if self.acknowledged_after_heal == 0 {
            return Err(format!(
                "no record acknowledged in the {} steps after healing",
                deadline - healed_at
            ));
        }
        self.check_settled()
    }

    fn step_once(&mut self, faulty: bool) -> Result<(), String> {
        self.step += 1;
        self.faulty = faulty;
        if faulty {
            self.inject_faults()?;
            if self.chance(300_000) {
                self.propose()?;
            }
        }
        self.restart_due()?;
        self.tick_all()?;
        self.deliver()?;
        self.drain_all()?;
        self.resolve_pending();
        if self.chance(100_000) {
            self.consume()?;
        }
        self.check_step()
    }

    /// A consumer reads a few records below a node's high watermark: every
    /// read of an offset, on any node, returns the same record.
    fn consume(&mut self) -> Result<(), String> {
        let index = self.rng.random_range(0..self.nodes.len());
        let Some(group) = self.nodes[index].group.as_ref() else {
            return Ok(());
        };
        if self.nodes[index].crash_armed {
            return Ok(());
        }
        let id = self.nodes[index].id;
        let partition = group.log().partition();
        let (start, end) = (partition.log_start_offset(), partition.high_watermark());
        if start == end {
            return Ok(());
        }
        let from = self.rng.random_range(start..end);
        let read = partition
            .read(from, 4096)
            .map_err(|error| format!("node {id}: consumer read at {from}: {error}"))?;
        for record in read.records() {
            let record = record.map_err(|error| format!("node {id}: record: {error}"))?;
            if record.offset >= end {
                return Err(format!(
                    "node {id}: read offset {} at or above the high watermark {end}",
                    record.offset
                ));
            }
            let value = record.value.unwrap_or_default().to_vec();
            match self.observed.get(&record.offset) {
                Some(seen) if *seen != value => {
                    return Err(format!(
                        "node {id}: offset {} read as {:?}, earlier as {:?}",
                        record.offset,
                        String::from_utf8_lossy(&value),
                        String::from_utf8_lossy(seen)
                    ))
                }
                Some(_) => {}
                None => {
                    self.observed.insert(record.offset, value);
                }
            }
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        if self.chance(1_500) {
            let index = self.rng.random_range(0..self.nodes.len());
            if self.nodes[index].group.is_some() {
                self.crash(index);
            }
        }
        if self.chance(1_000) {
            // Power lost in the middle of whatever the node does next: a
            // write, a sync, a truncation.
            let index = self.rng.random_range(0..self.nodes.len());
            let node = &mut self.nodes[index];
            if node.group.is_some() && !node.crash_armed {
                node.crash_armed = true;
                node.disk.schedule_crash(self.rng.random_range(1..40));
            }
        }
        if self.chance(2_000) {
            self.partition_randomly();
        }
        if self.chance(4_000) {
            self.cut.clear();
        }
        Ok(())
    }

    fn crash(&mut self, index: usize) {
        let down_for = self.rng.random_range(20..300);
        self.crash_for(index, down_for);
    }

    fn crash_for(&mut self, index: usize, down_for: u64) {
        let node = &mut self.nodes[index];
        node.disk.crash();
        node.crash_armed = false;
        node.group = None;
        node.down_for = down_for;
        self.report.crashes += 1;
    }

    /// Cuts the network: a minority apart, a bridge, or one way.
    fn partition_randomly(&mut self) {
        self.cut.clear();
        let ids = self.voters();
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
        for index in 0..self.nodes.len() {
            if self.nodes[index].group.is_none() {
                self.start(index)?;
            }
        }
        Ok(())
    }

    fn restart_due(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if node.group.is_none() {
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
            let skip = self.rng.random_range(0..1000) < self.nodes[index].slow;
            if !skip {
                self.guarded(index, "tick", |group| {
                    group.tick();
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn propose(&mut self) -> Result<(), String> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|index| {
                self.nodes[*index]
                    .group
                    .as_ref()
                    .is_some_and(Group::is_leader)
            })
            .collect();
        let Some(&index) = leaders.first() else {
            return Ok(());
        };
        let idempotent = self.rng.random_range(0..2) == 0;
        let (value, producer) = match idempotent {
            true if self.idempotent_waiting => return Ok(()),
            true => {
                let sequence = self.idempotent_next;
                let producer = ProducerInfo {
                    producer_id: 1,
                    producer_epoch: 0,
                    base_sequence: i32::try_from(sequence).expect("fewer than 2^31 batches"),
                };
                (format!("i-{sequence}").into_bytes(), producer)
            }
            false => {
                self.produced += 1;
                (
                    format!("n-{}", self.produced).into_bytes(),
                    ProducerInfo::NONE,
                )
            }
        };
        let records = [Record::value(1_700_000_000_000, &value)];
        let mut batch = Vec::new();
        encode(&records, producer, &mut batch).expect("a small batch encodes");
        let id = self.nodes[index].id;
        let outcome = self.guarded(index, "propose", |group| Ok(group.propose_batch(&batch)))?;
        let Some(outcome) = outcome else {
            return Ok(());
        };
        match outcome {
            Ok(proposed) if proposed.duplicate => {
                // A retry of a committed batch: acknowledged with the
                // original's offsets, which must hold this very record.
                self.acknowledge(proposed.base_offset, value, true);
            }
            Ok(proposed) => {
                self.idempotent_waiting |= idempotent;
                self.pending.push(Pending {
                    node: id,
                    index: proposed.index,
                    term: proposed.term,
                    base_offset: proposed.base_offset,
                    value,
                    idempotent,
                    since: self.step,
                });
            }
            Err(
                ProposeError::NotLeader { .. } | ProposeError::Dropped(_) | ProposeError::InFlight,
            ) => {}
            Err(error) => return Err(format!("node {id}: propose: {error}")),
        }
        Ok(())
    }

    fn acknowledge(&mut self, offset: u64, value: Vec<u8>, idempotent: bool) {
        self.acknowledged_after_heal += usize::from(!self.faulty);
        self.report.acknowledged += 1;
        if idempotent {
            self.idempotent_next += 1;
            self.idempotent_waiting = false;
        }
        if let Some(earlier) = self.acknowledged.insert(offset, value.clone()) {
            if earlier != value {
                self.violation.get_or_insert(format!(
                    "offset {offset} acknowledged for {:?} and for {:?}",
                    String::from_utf8_lossy(&earlier),
                    String::from_utf8_lossy(&value)
                ));
            }
        }
    }

    /// Delivers the messages due, through the wire codec; some are lost,
    /// some duplicated, and those due together arrive in random order.
    fn deliver(&mut self) -> Result<(), String> {
        let now = self.step;
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.network.len() {
            if self.network[index].deliver_at <= now {
                due.push(self.network.swap_remove(index));
            } else {
                index += 1;
            }
        }
        // swap_remove scrambles the order: sort by deterministic keys, then
        // shuffle from the seed.
        due.sort_by(|a, b| (a.deliver_at, a.to, &a.frame).cmp(&(b.deliver_at, b.to, &b.frame)));
        for position in (1..due.len()).rev() {
            let other = self.rng.random_range(0..=position);
            due.swap(position, other);
        }
        for flight in due {
            let (envelopes, _) = decode_frame(&flight.frame, &Limits::default())
                .map_err(|error| format!("a frame did not decode: {error}"))?
                .ok_or("a frame was cut short")?;
            let index = self
                .nodes
                .iter()
                .position(|node| node.id == flight.to)
                .expect("a node");
            for envelope in envelopes {
                self.report.delivered += 1;
                // A refused message is dropped, as the owner would.
                self.guarded(index, "step", |group| {
                    let _ = group.step(envelope.message);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn send(&mut self, from: u64, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            if self.cut.contains(&(from, to)) || self.chance(20_000) {
                continue;
            }
            let copies = if self.chance(10_000) { 2 } else { 1 };
            // Mostly quick; now and then late, overtaken by later messages.
            let late = self.chance(50_000);
            let mut frame = Vec::new();
            encode_frame(&[Envelope { group: 1, message }], &mut frame);
            for _ in 0..copies {
                let delay = match late {
                    true => self.rng.random_range(4..30),
                    false => self.rng.random_range(1..4),
                };
                self.network.push(InFlight {
                    deliver_at: self.step + delay,
                    to,
                    frame: frame.clone(),
                });
            }
        }
    }

    fn drain_all(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let id = self.nodes[index].id;
            let messages = self.guarded(index, "ready", |group| {
                group.process_ready().map_err(|error| error.to_string())
            })?;
            let Some(messages) = messages else {
                continue;
            };
            // The moments a crash hurts most: just after granting a vote or
            // acknowledging entries. Back at once, before the election or
            // the round moves on.
            let granted = |wanted: MessageType| {
                messages
                    .iter()
                    .any(|message| message.msg_type == wanted && !message.reject)
            };
            let odds = match (
                granted(MessageType::MsgRequestVoteResponse),
                granted(MessageType::MsgAppendResponse),
            ) {
                (true, _) => 200_000,
                (false, true) => 5_000,
                (false, false) => 0,
            };
            self.send(id, messages);
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
        let mut still = Vec::new();
        for pending in std::mem::take(&mut self.pending) {
            let node = self
                .nodes
                .iter()
                .find(|node| node.id == pending.node)
                .expect("a node");
            let status = node
                .group
                .as_ref()
                .map(|group| group.commit_status(pending.index, pending.term));
            let timed_out = self.step - pending.since > 100;
            match status {
                Some(CommitStatus::Committed) => {
                    self.acknowledge(pending.base_offset, pending.value, pending.idempotent)
                }
                Some(CommitStatus::Pending) if !timed_out => still.push(pending),
                None | Some(CommitStatus::Lost | CommitStatus::Pending) => {
                    self.idempotent_waiting &= !pending.idempotent;
                }
            }
        }
        self.pending = still;
    }

    /// What must hold after every step.
    fn check_step(&mut self) -> Result<(), String> {
        if let Some(violation) = self.violation.take() {
            return Err(violation);
        }
        for node in &mut self.nodes {
            let Some(group) = node.group.as_ref() else {
                continue;
            };
            if group.is_leader() {
                match self.leaders.insert(group.term(), node.id) {
                    Some(other) if other != node.id => {
                        return Err(format!(
                            "two leaders in term {}: nodes {other} and {}",
                            group.term(),
                            node.id
                        ))
                    }
                    None => self.report.elections += 1,
                    _ => {}
                }
            }
            if group.commit_index() < node.commit_seen {
                return Err(format!(
                    "node {}: commit index moved back from {} to {}",
                    node.id,
                    node.commit_seen,
                    group.commit_index()
                ));
            }
            if group.high_watermark() < node.high_watermark_seen {
                return Err(format!(
                    "node {}: high watermark moved back from {} to {}",
                    node.id,
                    node.high_watermark_seen,
                    group.high_watermark()
                ));
            }
            let committed_end = group.log().end_offset_at(group.commit_index());
            if group.high_watermark() > committed_end {
                return Err(format!(
                    "node {}: high watermark {} above the end of its committed entries {committed_end}",
                    node.id,
                    group.high_watermark()
                ));
            }
            for value in [
                self.step,
                node.id,
                group.term(),
                u64::from(group.is_leader()),
                group.commit_index(),
                group.log().last_index_(),
                group.high_watermark(),
                group.election_timeout() as u64,
            ] {
                self.report.trace = (self.report.trace ^ value).wrapping_mul(0x0100_0000_01b3);
            }
            node.commit_seen = group.commit_index();
            node.high_watermark_seen = group.high_watermark();
            check_committed_entries(node.id, group, &mut self.committed)?;
        }
        Ok(())
    }

    /// After healing: one leader, every node caught up, every acknowledged
    /// record on every node at its offset.
    fn check_settled(&self) -> Result<(), String> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter_map(|node| {
                node.group
                    .as_ref()
                    .filter(|group| group.is_leader())
                    .map(|_| node.id)
            })
            .collect();
        if leaders.len() != 1 {
            return Err(format!("no single leader after healing: {leaders:?}"));
        }
        let leader = self.group(leaders[0]);
        for node in &self.nodes {
            let group = node.group.as_ref().expect("every node runs after healing");
            if group.commit_index() != leader.commit_index()
                || group.log().data_entries() != leader.log().data_entries()
            {
                return Err(format!(
                    "node {} did not catch up with leader {} after healing (commit {} vs {})",
                    node.id,
                    leaders[0],
                    group.commit_index(),
                    leader.commit_index()
                ));
            }
            check_acknowledged(node.id, group, &self.acknowledged)?;
        }
        check_no_duplicates(leaders[0], leader)
    }

    fn group(&self, id: u64) -> &Group {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .and_then(|node| node.group.as_ref())
            .expect("a live node")
    }
}

/// Every committed entry a node holds matches what any node committed at
/// that index (log matching and leader completeness, seen from the data).
fn check_committed_entries(
    id: u64,
    group: &Group,
    committed: &mut BTreeMap<u64, (u64, u64, u64)>,
) -> Result<(), String> {
    let commit = group.commit_index();
    for (index, term, start, end) in group.log().data_entries() {
        if index > commit {
            break;
        }
        match committed.get(&index) {
            Some(known) if *known != (term, start, end) => {
                return Err(format!(
                    "node {id}: committed entry {index} is (term {term}, offsets {start}..{end}), \
                     another node committed (term {}, offsets {}..{})",
                    known.0, known.1, known.2
                ))
            }
            Some(_) => {}
            None => {
                committed.insert(index, (term, start, end));
            }
        }
    }
    Ok(())
}

/// Every acknowledged record is readable below the high watermark at its
/// offset, with its value.
fn check_acknowledged(
    id: u64,
    group: &Group,
    acknowledged: &BTreeMap<u64, Vec<u8>>,
) -> Result<(), String> {
    let partition = group.log().partition();
    for (offset, value) in acknowledged {
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
    let mut next_sequence = 0u64;
    while offset < partition.high_watermark() {
        let read = partition
            .read(offset, 1 << 20)
            .map_err(|error| format!("node {id}: read at {offset}: {error}"))?;
        for record in read.records() {
            let record = record.map_err(|error| format!("node {id}: record: {error}"))?;
            let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
            if let Some(sequence) = value.strip_prefix("i-") {
                let sequence: u64 = sequence.parse().expect("a sequence");
                if sequence != next_sequence {
                    return Err(format!(
                        "node {id}: offset {}: idempotent batch {sequence} where {next_sequence} was due (a duplicate or a gap)",
                        record.offset
                    ));
                }
                next_sequence += 1;
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
    let mut cluster = Cluster::new(seed, plan.nodes);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.run(plan)));
    let outcome = outcome.unwrap_or_else(|panic| Err(format!("panic: {}", panic_text(&panic))));
    if let Err(violation) = outcome {
        panic!(
            "seed {seed} ({} nodes), step {}: {violation}\nreplay: WEIR_RAFT_SEED={seed} cargo test -p weir-replication --test cluster -- --nocapture",
            plan.nodes, cluster.step
        );
    }
    cluster.report
}
