//! One Raft group: the replicas of one partition, driven by their owner.
//!
//! A [`Group`] wraps raft-rs's `RawNode` over a [`RaftLog`]. It has no
//! threads, reads no clock and draws no randomness of its own: the owner
//! calls [`Group::tick`] from its clock, hands it messages with
//! [`Group::step`], proposes producers' batches with
//! [`Group::propose_batch`] and calls [`Group::process_ready`], which
//! persists what raft asks (durably, before returning the messages that
//! depend on it), applies what is committed (the high watermark) and
//! returns the messages to send.
//!
//! raft-rs draws its randomized election timeout from an unseeded RNG. The
//! group overwrites it, after every call into raft, with a timeout drawn
//! from its own seeded RNG whenever the term, the role or the leader
//! changed: raft's draw never reaches a tick.

use std::collections::VecDeque;
use std::sync::Arc;

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType,
    Message, MessageType,
};
use raft::{Config, RawNode, StateRole};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::Storage;
use weir_log::{batch, LogError, Partition, SequenceError};

use crate::confchange::decode_conf_change;
use crate::store::{
    is_data, LeaderWrite, PersistedState, RaftLog, RepairPoint, Scrubbed, StoreError, SyncPlan,
};

/// Settings of one group on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// This node's id (not 0).
    pub node: u64,
    /// The voters when the group is created (ignored once it exists).
    pub voters: Vec<u64>,
    /// Ticks without a leader before an election: the timeout is drawn
    /// from `election_ticks..2 * election_ticks`.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Seed of the group's RNG (election jitter).
    pub seed: u64,
    /// The most bytes of entries in one append message.
    pub max_size_per_message: u64,
    /// The most append messages in flight to one follower.
    pub max_inflight_messages: usize,
    /// Bytes of compacted entries' records in the side file from which it
    /// is rewritten without them (when they are over half of it).
    pub side_file_rewrite_bytes: u64,
}

impl GroupConfig {
    /// Defaults for node `node` of a group of `voters`.
    pub fn new(node: u64, voters: Vec<u64>, seed: u64) -> Self {
        Self {
            node,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            seed,
            max_size_per_message: 1 << 20,
            max_inflight_messages: 256,
            side_file_rewrite_bytes: crate::store::REWRITE_MIN_BYTES,
        }
    }
}

/// Why a batch was not proposed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; the leader it knows of, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id, when known.
        leader: Option<u64>,
    },
    /// The batch is a producer's retry of one not yet committed: retry later.
    #[error("a retry of a batch not yet committed")]
    InFlight,
    /// The producer's batch is ahead of every batch of it this leader's
    /// log holds: the leader may be stale (a newer one has the batches it
    /// lacks). Retriable, like a change of leader: a leader whose log is
    /// complete never sees this from a correct producer.
    #[error("producer {producer_id}: sequence {found} is ahead of this leader's {expected}")]
    SequenceAhead {
        /// The producer.
        producer_id: i64,
        /// The sequence this leader's log expects.
        expected: i32,
        /// The batch's first sequence.
        found: i32,
    },
    /// The segment log refused the batch (invalid, out of sequence, …).
    #[error(transparent)]
    Log(#[from] LogError),
    /// raft dropped the proposal (a leadership transfer, too much
    /// uncommitted data).
    #[error("proposal dropped by raft: {0}")]
    Dropped(raft::Error),
}

/// Where a proposed batch went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// Its entry's index (0 for a duplicate, which has no new entry).
    pub index: u64,
    /// Its entry's term.
    pub term: u64,
    /// The offset of its first record.
    pub base_offset: u64,
    /// The offset of its last record.
    pub last_offset: u64,
    /// A retry of a committed batch: the original's offsets, nothing new.
    pub duplicate: bool,
}

/// What became of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStatus {
    /// Committed: on a majority, never lost.
    Committed,
    /// Not yet known.
    Pending,
    /// Replaced by another leader's entry: it will never commit.
    Lost,
}

/// The replica of one partition on this node.
pub struct Group {
    node: RawNode<RaftLog>,
    election_ticks: usize,
    rng: Xoshiro256PlusPlus,
    timeout: usize,
    observed: (u64, StateRole, u64),
    /// Batches written as leader whose entries raft has not handed back.
    written: VecDeque<LeaderWrite>,
    applied: u64,
    /// A ready written by [`Group::write_ready`], to finish.
    pending: Option<raft::Ready>,
    /// Followers sent a snapshot in the pending ready.
    snapshots_sent: Vec<u64>,
    /// Confirmations of this leader's lead raft answered (read index
    /// rounds): each request's id and the commit index it was confirmed at.
    confirmed: Vec<(u64, u64)>,
    /// A batch read corrupt: this replica gave up leading and does not
    /// campaign until its log is cut there ([`Group::reopen_cut_at`]).
    cut_pending: bool,
    /// Ticks counted while repairing (a notice of the lost entries goes
    /// out at the first and then once an election timeout).
    repair_ticks: usize,
    /// Notices of lost entries to send ([`LOST_ENTRIES`]).
    notices: Vec<Message>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("node", &self.node.raft.id)
            .field("term", &self.node.raft.term)
            .field("role", &self.node.raft.state)
            .field("commit", &self.node.raft.raft_log.committed)
            .finish_non_exhaustive()
    }
}

/// A sequence ahead of the leader's log (rather than behind it, or of an
/// older epoch) is what a stale leader sees: made retriable.
fn sequence_ahead(error: LogError) -> ProposeError {
    match error {
        LogError::Sequence(SequenceError::OutOfOrder {
            producer_id,
            expected,
            found,
            ..
        }) if found.wrapping_sub(expected) > 0 => ProposeError::SequenceAhead {
            producer_id,
            expected,
            found,
        },
        other => ProposeError::Log(other),
    }
}

/// The start of the context of a leader's confirmation round (see
/// [`Group::confirm_lead`]); the request's id follows, big-endian.
const CONFIRM: &[u8] = b"weir:confirm:";

/// The context of a repairing replica's notice to its leader: a refused
/// append (`MsgAppendResponse`, `reject`) naming its last entry
/// (`reject_hint`) below the repair point (`index`), which no append
/// asked for. Handled by [`Group::step`], never stepped into raft, so that
/// its term cannot depose anyone.
const LOST_ENTRIES: &[u8] = b"weir:lost";

/// The request id of a confirmation round's context.
fn confirmation_id(context: &[u8]) -> Option<u64> {
    let id = context.strip_prefix(CONFIRM)?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

impl Group {
    /// Opens this node's replica: its Raft log in `dir` over `partition`
    /// (whose high watermark policy must be `SetByOwner`).
    pub fn open(
        config: &GroupConfig,
        dir: Arc<dyn Storage>,
        partition: Arc<Partition>,
    ) -> Result<Self, StoreError> {
        let mut store = RaftLog::open(dir, partition, &config.voters)?;
        store.set_rewrite_min_bytes(config.side_file_rewrite_bytes);
        let applied = store.state().applied;
        let raft_config = Config {
            id: config.node,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            max_size_per_msg: config.max_size_per_message,
            max_inflight_msgs: config.max_inflight_messages,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        // The Raft log hands raft committed entries without their batches
        // (store.rs), which would upset raft's count of uncommitted bytes:
        // that limit stays off.
        assert_eq!(raft_config.max_uncommitted_size, raft::NO_LIMIT);
        raft_config
            .validate()
            .map_err(|error| StoreError::Corrupt(format!("raft configuration: {error}")))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, store, &logger)
            .map_err(|error| StoreError::Corrupt(format!("raft refused the log: {error}")))?;
        let mut group = Self {
            node,
            election_ticks: config.election_ticks,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.seed),
            timeout: config.election_ticks,
            observed: (u64::MAX, StateRole::Follower, 0),
            written: VecDeque::new(),
            applied,
            pending: None,
            snapshots_sent: Vec::new(),
            confirmed: Vec::new(),
            cut_pending: false,
            repair_ticks: 0,
            notices: Vec::new(),
        };
        if group.node.store().repair().is_some() && group.is_alone(config.node) {
            group.node.mut_store().abandon_repair()?;
        }
        let high_watermark = group.node.store().end_offset_at(applied);
        group.raise_high_watermark(high_watermark);
        group.after_raft();
        Ok(group)
    }

    /// Counts one tick of the owner's clock.
    pub fn tick(&mut self) {
        self.node.tick();
        self.after_raft();
        self.notice_lost_entries();
    }

    /// While repairing, tells the leader (every other voter while none is
    /// known) which entries this replica lost, at once and then once an
    /// election timeout: a leader that counted them as matched sends them
    /// only when it learns they are gone, and an idle group's leader (one
    /// asleep, too) would never learn it from raft's own messages.
    fn notice_lost_entries(&mut self) {
        let Some(point) = self.node.store().repair() else {
            self.repair_ticks = 0;
            return;
        };
        self.repair_ticks += 1;
        if !(self.repair_ticks - 1).is_multiple_of(self.election_ticks) {
            return;
        }
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        let to = match raft.leader_id {
            raft::INVALID_ID => self.voters(),
            leader => vec![leader],
        };
        let notice = |to| Message {
            msg_type: MessageType::MsgAppendResponse,
            to,
            from: raft.id,
            term: raft.term,
            reject: true,
            index: point.index,
            reject_hint: last,
            log_term: raft.raft_log.term(last).unwrap_or(0),
            context: LOST_ENTRIES.to_vec().into(),
            ..Message::default()
        };
        let notices: Vec<Message> = to
            .into_iter()
            .filter(|to| *to != raft.id)
            .map(notice)
            .collect();
        self.notices.extend(notices);
    }

    /// Starts an election now.
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        let result = self.node.campaign();
        self.after_raft();
        result
    }

    /// Hands the group a message from a peer. Messages of older terms and
    /// from unknown peers are ignored by raft; an error is a message raft
    /// refused, which the owner logs and drops.
    pub fn step(&mut self, mut message: Message) -> Result<(), raft::Error> {
        if self.refuses_in_repair(&message) {
            return Ok(());
        }
        if message.context.as_ref() == LOST_ENTRIES {
            if self.note_lost_entries(&message) {
                self.node.raft.send_append(message.from);
            }
            return Ok(());
        }
        match message.get_msg_type() {
            MessageType::MsgHeartbeat => {
                // A leader that counted entries this replica has since
                // lost to corruption names a commit past its log, at which
                // raft would panic: what is committed here is what it has.
                message.commit = message.commit.min(self.node.raft.raft_log.last_index());
            }
            MessageType::MsgAppendResponse => {
                self.note_lost_entries(&message);
            }
            _ => {}
        }
        let result = self.node.step(message);
        self.after_raft();
        result
    }

    /// While this replica repairs entries lost to corruption: a vote for a
    /// log behind its repair point, or a leader's request to campaign now,
    /// is not answered (it may lack entries it acknowledged, which such a
    /// leader would lack too).
    fn refuses_in_repair(&self, message: &Message) -> bool {
        if self.cut_pending && message.get_msg_type() == MessageType::MsgTimeoutNow {
            return true;
        }
        let Some(point) = self.node.store().repair() else {
            return false;
        };
        let candidate = RepairPoint {
            term: message.log_term,
            index: message.index,
        };
        match message.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => candidate < point,
            MessageType::MsgTimeoutNow => true,
            _ => false,
        }
    }

    /// A follower refusing an append with a hint below what the leader
    /// counted as matched lost entries it had acknowledged (to corruption,
    /// or to a power loss under a flush policy other than `always`): raft
    /// would take the refusal for a stale one and never send them again.
    /// The leader probes it again from its hint (its entries up to there
    /// matched, and are still the ones it has). Whether it did.
    fn note_lost_entries(&mut self, message: &Message) -> bool {
        if !message.reject || !self.is_leader() {
            return false;
        }
        let Some(progress) = self.node.raft.mut_prs().get_mut(message.from) else {
            return false;
        };
        let lost = message.reject_hint < progress.matched;
        if lost {
            tracing::warn!(
                follower = message.from,
                matched = progress.matched,
                hint = message.reject_hint,
                "a follower lost entries it had acknowledged: probing it again"
            );
            progress.matched = message.reject_hint;
            progress.become_probe();
        }
        lost
    }

    /// Messages a repairing replica keeps to itself: its campaigns.
    fn outgoing(&self, mut messages: Vec<Message>) -> Vec<Message> {
        if self.node.store().repair().is_some() || self.cut_pending {
            messages.retain(|message| {
                !matches!(
                    message.get_msg_type(),
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                )
            });
        }
        messages
    }

    /// Proposes a producer's batch: the leader validates it, applies the
    /// idempotent producer's rules and writes it with its offsets and the
    /// term as leader epoch, then hands it to raft. A retry of a committed
    /// batch returns the original's offsets.
    pub fn propose_batch(&mut self, producer_batch: Vec<u8>) -> Result<Proposed, ProposeError> {
        if self.node.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        let term = self.node.raft.term;
        let epoch = u32::try_from(term).expect("terms stay below 2^32 (leader epochs)");
        self.check_leader_writes();
        let partition = Arc::clone(self.node.store().partition());
        let info = partition
            .write_batch_in_epoch(&producer_batch, epoch)
            .map_err(sequence_ahead)?;
        if info.duplicate {
            return match info.last_offset < partition.high_watermark() {
                true => Ok(Proposed {
                    index: 0,
                    term,
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    duplicate: true,
                }),
                false => Err(ProposeError::InFlight),
            };
        }
        let mut stamped = producer_batch;
        batch::stamp(&mut stamped, info.base_offset, epoch as i32);
        let index = self.node.raft.raft_log.last_index() + 1;
        if let Err(error) = self.node.propose(Vec::new(), stamped) {
            partition.truncate(info.base_offset)?;
            self.after_raft();
            return Err(ProposeError::Dropped(error));
        }
        // After the proposal: raft holds the entry where it was expected.
        assert_eq!(self.node.raft.raft_log.last_index(), index);
        self.written.push_back(LeaderWrite {
            term,
            start: info.base_offset,
            end: info.last_offset + 1,
        });
        self.after_raft();
        Ok(Proposed {
            index,
            term,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            duplicate: false,
        })
    }

    /// The partition's log ends after the stable entries and the batches
    /// written as leader since.
    fn check_leader_writes(&self) {
        let store = self.node.store();
        let expected = self
            .written
            .back()
            .map_or(store.end_offset(), |write| write.end);
        assert_eq!(
            store.partition().log_end_offset(),
            expected,
            "the segment log ends elsewhere than the entries and the leader's writes"
        );
    }

    /// Persists what raft asks, applies what it committed, and returns the
    /// messages to send: every message returned may leave now (what it
    /// depends on is durable). The three steps of [`Group::write_ready`],
    /// [`RaftLog::sync`] and [`Group::finish_ready`], which a node with
    /// many groups runs across them, so that their syncs go together.
    pub fn process_ready(&mut self) -> Result<Vec<Message>, StoreError> {
        let mut outgoing = self.write_ready()?;
        self.node.mut_store().sync()?;
        outgoing.extend(self.finish_ready()?);
        Ok(outgoing)
    }

    /// Takes what raft has ready and writes what it asks to persist, not
    /// yet durably; returns the messages that may leave before it is (a
    /// leader's appends). [`Group::finish_ready`] must follow once the
    /// log is synced ([`Group::sync_plan`]), before anything else is
    /// asked of the group.
    pub fn write_ready(&mut self) -> Result<Vec<Message>, StoreError> {
        assert!(self.pending.is_none(), "a ready written twice");
        // Notices of lost entries depend on nothing unwritten (the repair
        // point was made durable when the repair began).
        let notices = std::mem::take(&mut self.notices);
        if !self.node.has_ready() {
            return Ok(notices);
        }
        let mut ready = self.node.ready();
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot())?;
        }
        for state in ready.take_read_states() {
            if let Some(request) = confirmation_id(&state.request_ctx) {
                self.confirmed.push((request, state.index));
            }
        }
        // A leader's appends may leave before its own write.
        let outgoing = ready.take_messages();
        self.snapshots_sent = outgoing
            .iter()
            .filter(|message| message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot)
            .map(|message| message.to)
            .collect();
        self.persist(ready.entries(), ready.hs().cloned())?;
        self.pending = Some(ready);
        let mut outgoing = self.outgoing(outgoing);
        outgoing.extend(notices);
        Ok(outgoing)
    }

    /// A leader's snapshot (this log is behind the leader's start):
    /// replaces the log, durably, before anything else of the ready.
    fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) -> Result<(), StoreError> {
        self.written.clear();
        let start = self.node.mut_store().install_snapshot(snapshot)?;
        tracing::info!(
            index = start.index,
            term = start.term,
            offset = start.offset,
            "replica replaced by the leader's snapshot"
        );
        self.applied = start.index;
        self.raise_high_watermark(start.offset);
        Ok(())
    }

    /// Applies the partition's retention: the log is compacted through
    /// the entries whose records retention would delete (applied ones
    /// only), durably, and only then are the records deleted, so that a
    /// follower behind them gets a snapshot instead of a missing entry.
    /// Returns the partition's log start offset.
    pub fn apply_retention(&mut self) -> Result<u64, StoreError> {
        let store = self.node.mut_store();
        let partition = Arc::clone(store.partition());
        if let Some(cut) = partition.retention_cut() {
            if let Some(start) = store.compact_to(cut)? {
                tracing::debug!(
                    index = start.index,
                    offset = start.offset,
                    "raft log compacted"
                );
            }
        }
        let offset = store.log_start().offset;
        if offset > partition.log_start_offset() {
            partition.delete_before(offset)?;
        }
        Ok(partition.log_start_offset())
    }

    /// Where this replica found a batch that reads corrupt, if it did
    /// since it was last asked: while sending entries to a follower, or
    /// scrubbing `scrub_budget` more bytes of its log (0: no scrub).
    pub fn find_corruption(&mut self, scrub_budget: u32) -> Result<Scrubbed, StoreError> {
        let store = self.node.mut_store();
        if let Some(from) = store.take_suspect() {
            if let Some(offset) = store.locate_corruption(from)? {
                return Ok(Scrubbed {
                    corrupt: Some(offset),
                    ..Scrubbed::default()
                });
            }
        }
        if scrub_budget == 0 {
            return Ok(Scrubbed::default());
        }
        store.scrub(scrub_budget)
    }

    /// Whether `node` is the group's only member: nobody to repair from.
    pub fn is_alone(&self, node: u64) -> bool {
        self.voters() == [node] && self.learners().is_empty() && !self.is_joint()
    }

    /// Readies the cut of a batch found corrupt: a leader steps down
    /// first (its front-ends stop answering for the partition before its
    /// records and high watermark go back), and the replica campaigns no
    /// more until the cut. Returns whether it may be cut now (it does not
    /// lead).
    pub fn prepare_cut(&mut self) -> bool {
        self.cut_pending = true;
        if self.is_leader() {
            let term = self.node.raft.term;
            self.node.raft.become_follower(term, raft::INVALID_ID);
            self.after_raft();
            return false;
        }
        true
    }

    /// Cuts the log at the corrupt batch at `offset`
    /// ([`RaftLog::cut_for_repair`]) and opens the replica again over it,
    /// as a follower that repairs from the leader. Returns the new group.
    pub fn reopen_cut_at(mut self, config: &GroupConfig, offset: u64) -> Result<Self, StoreError> {
        assert!(self.pending.is_none(), "a cut in the middle of a ready");
        let store = self.node.mut_store();
        store.cut_for_repair(offset)?;
        let (dir, partition) = (Arc::clone(store.dir()), Arc::clone(store.partition()));
        drop(self);
        Group::open(config, dir, partition)
    }

    /// What must be synced before [`Group::finish_ready`].
    pub fn sync_plan(&self) -> SyncPlan {
        self.node.store().sync_plan()
    }

    /// Records that `plan` ([`Group::sync_plan`]) has run.
    pub fn synced(&mut self, plan: &SyncPlan) {
        self.node.mut_store().synced(plan);
    }

    /// Once what [`Group::write_ready`] wrote is durable: applies what is
    /// committed and returns the messages that waited for the sync.
    pub fn finish_ready(&mut self) -> Result<Vec<Message>, StoreError> {
        let Some(mut ready) = self.pending.take() else {
            return Ok(Vec::new());
        };
        let mut outgoing = ready.take_persisted_messages();
        let committed = ready.take_committed_entries();
        self.apply(&committed)?;
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut state = self.node.store().state().clone();
            state.hard.commit = commit;
            self.node.mut_store().set_state(state)?;
        }
        outgoing.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(&committed)?;
        self.node.advance_apply();
        self.node.mut_store().end_repair_if_caught_up()?;
        self.report_snapshots();
        self.after_raft();
        self.forget_replicated();
        Ok(self.outgoing(outgoing))
    }

    /// Tells raft that the snapshots sent have gone: raft keeps a follower
    /// it sent one to paused until told, and a snapshot lost on the way
    /// would leave it paused for good. Told at once (weir's snapshots are
    /// a few bytes), the leader probes the follower again: one that
    /// installed it accepts the next append, one that never got it
    /// refuses, and is sent the snapshot again.
    fn report_snapshots(&mut self) {
        for to in std::mem::take(&mut self.snapshots_sent) {
            self.node.report_snapshot(to, raft::SnapshotStatus::Finish);
        }
    }

    /// Lets the log forget the batches it kept for followers that every
    /// follower has (all of them on a follower).
    fn forget_replicated(&mut self) {
        let raft = &self.node.raft;
        let below = match raft.state {
            StateRole::Leader => raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != raft.id)
                .map(|(_, progress)| progress.matched + 1)
                .min()
                .unwrap_or(u64::MAX),
            _ => u64::MAX,
        };
        self.node.mut_store().forget_below(below);
    }

    fn persist(
        &mut self,
        entries: &[Entry],
        hard: Option<raft::eraftpb::HardState>,
    ) -> Result<(), StoreError> {
        let store = self.node.mut_store();
        store.append(entries, &mut self.written)?;
        if let Some(hard) = hard {
            let mut state = store.state().clone();
            state.hard = hard;
            store.set_state(state)?;
        }
        Ok(())
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        // Before applying: the entries continue what was applied and are
        // durable here.
        assert_eq!(entries[0].index, self.applied + 1, "applied out of order");
        assert!(
            last.index <= self.node.store().last_index_(),
            "entry {} applied before it was persisted",
            last.index
        );
        let mut conf = None;
        for entry in entries {
            match entry.entry_type {
                EntryType::EntryNormal => debug_assert!(is_data(entry) || entry.data.is_empty()),
                EntryType::EntryConfChangeV2 => {
                    conf = self.apply_conf_change(entry)?.or(conf);
                    self.record_conf_at(entry.index, conf.clone())?;
                }
                EntryType::EntryConfChange => {
                    return Err(StoreError::Corrupt(format!(
                        "entry {} is a version 1 configuration change, which weir never proposes",
                        entry.index
                    )))
                }
            }
        }
        self.applied = last.index;
        let high_watermark = self.node.store().end_offset_at(last.index);
        self.raise_high_watermark(high_watermark);
        let mut state: PersistedState = self.node.store().state().clone();
        state.applied = last.index;
        state.hard.commit = state.hard.commit.max(last.index);
        if let Some(conf) = conf {
            state.conf = conf;
        }
        self.node.mut_store().set_state(state)
    }

    /// Persists the configuration right after the change at `index` (with
    /// that index as applied), which a compaction stopping there records.
    fn record_conf_at(
        &mut self,
        index: u64,
        conf: Option<raft::eraftpb::ConfState>,
    ) -> Result<(), StoreError> {
        let store = self.node.mut_store();
        let mut state: PersistedState = store.state().clone();
        state.applied = index;
        state.hard.commit = state.hard.commit.max(index);
        if let Some(conf) = conf {
            state.conf = conf;
        }
        store.set_state(state)
    }

    /// Applies a committed configuration change, read with weir's own
    /// decoder; the new configuration, or `None` if raft refused the change
    /// (as it does on every node alike).
    fn apply_conf_change(
        &mut self,
        entry: &Entry,
    ) -> Result<Option<raft::eraftpb::ConfState>, StoreError> {
        let change = decode_conf_change(&entry.data)
            .map_err(|error| StoreError::Corrupt(format!("entry {}: {error}", entry.index)))?;
        match self.node.apply_conf_change(&change) {
            Ok(conf) => Ok(Some(conf)),
            Err(error) => {
                tracing::warn!(index = entry.index, %error, "configuration change refused");
                Ok(None)
            }
        }
    }

    /// Proposes a change of the group's members (a leader only): each
    /// `(change, node)` adds a voter, removes a node or adds a learner.
    /// Several changes go through joint consensus, left automatically once
    /// committed. Returns the entry's index and term.
    pub fn propose_membership(
        &mut self,
        changes: &[(ConfChangeType, u64)],
    ) -> Result<(u64, u64), ProposeError> {
        if self.node.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        let change = ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: changes
                .iter()
                .map(|(change_type, node_id)| ConfChangeSingle {
                    change_type: *change_type,
                    node_id: *node_id,
                    ..ConfChangeSingle::default()
                })
                .collect::<Vec<_>>()
                .into(),
            ..ConfChangeV2::default()
        };
        let index = self.node.raft.raft_log.last_index() + 1;
        let result = self.node.propose_conf_change(Vec::new(), change);
        self.after_raft();
        result.map_err(ProposeError::Dropped)?;
        Ok((index, self.node.raft.term))
    }

    fn raise_high_watermark(&self, offset: u64) {
        let partition = self.node.store().partition();
        if offset > partition.high_watermark() {
            partition.set_high_watermark(offset);
        }
    }

    /// Redraws the election timeout from the seeded RNG when the term, the
    /// role or the leader changed, and puts it in place of raft's.
    fn after_raft(&mut self) {
        let raft = &self.node.raft;
        let now = (raft.term, raft.state, raft.leader_id);
        if now != self.observed {
            self.observed = now;
            let jitter = self.rng.random_range(0..self.election_ticks);
            self.timeout = self.election_ticks + jitter;
        }
        self.node.raft.set_randomized_election_timeout(self.timeout);
    }

    /// What became of the entry proposed at `index` in `term`.
    pub fn commit_status(&self, index: u64, term: u64) -> CommitStatus {
        let log = &self.node.raft.raft_log;
        match log.term(index) {
            // Compacted away (or replaced by a snapshot): whether it was
            // this entry is no longer known here.
            Err(raft::Error::Store(raft::StorageError::Compacted)) => CommitStatus::Pending,
            Ok(found) if found != term => CommitStatus::Lost,
            Ok(_) if index <= log.committed && index <= self.applied => CommitStatus::Committed,
            Ok(_) => CommitStatus::Pending,
            // Not in this log: truncated below its end (lost), or not yet
            // received (a follower behind; it may still come).
            Err(_) if index <= log.last_index() => CommitStatus::Lost,
            Err(_) => CommitStatus::Pending,
        }
    }

    /// Whether raft has something for [`Group::process_ready`], or a
    /// notice of lost entries waits.
    pub fn has_ready(&self) -> bool {
        self.node.has_ready() || !self.notices.is_empty()
    }

    /// Whether nothing is in flight: every entry committed and applied
    /// here, and, on a leader, on every replica too, with no confirmation
    /// of its lead under way.
    pub fn is_settled(&self) -> bool {
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        // A repairing replica is not settled: it must tick (its notices
        // of lost entries) until the leader gave the entries back.
        let settled_here = raft.raft_log.committed == last
            && self.applied == last
            && self.node.store().repair().is_none();
        match raft.state {
            StateRole::Leader => {
                settled_here
                    && self.written.is_empty()
                    && raft.pending_read_count() == 0
                    && raft
                        .prs()
                        .iter()
                        .all(|(_, progress)| progress.matched == last)
            }
            _ => settled_here,
        }
    }

    /// Asks raft to confirm that this node still leads (a read index round,
    /// raft's `ReadOnlySafe`): heartbeats to every voter, answered once a
    /// majority acknowledges them in this term. The answer, if it comes,
    /// is in [`Group::take_confirmed`] under `request`; none comes if the
    /// node is deposed, cut off, or has not committed an entry of its term.
    pub fn confirm_lead(&mut self, request: u64) {
        let mut context = CONFIRM.to_vec();
        context.extend_from_slice(&request.to_be_bytes());
        self.node.read_index(context);
        self.after_raft();
    }

    /// The confirmations raft answered since the last call: each request's
    /// id and the commit index at which the lead was confirmed.
    pub fn take_confirmed(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.confirmed)
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Sends heartbeats now (a leader woken from quiescence).
    pub fn ping(&mut self) {
        self.node.ping();
        self.after_raft();
    }

    /// The index of the last entry (stable or not).
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// The ids of the group's voters.
    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        voters.sort_unstable();
        voters
    }

    /// Whether the voters for which `heard` holds are a majority of the
    /// voters (counted without building a list: a leader asks every tick
    /// while a peer is silent).
    pub fn majority_of_voters(&self, heard: impl Fn(u64) -> bool) -> bool {
        let ids = self.node.raft.prs().conf().voters().ids();
        let (mut all, mut yes) = (0, 0);
        for voter in ids.iter() {
            all += 1;
            yes += usize::from(heard(voter));
        }
        2 * yes > all
    }

    /// The ids of the group's learners (nodes that receive its log and do
    /// not vote: joining nodes, before they are made voters).
    pub fn learners(&self) -> Vec<u64> {
        let mut learners: Vec<u64> = self
            .node
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        learners.sort_unstable();
        learners
    }

    /// Whether the group is between two configurations (joint consensus).
    pub fn is_joint(&self) -> bool {
        !self
            .node
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters_outgoing
            .is_empty()
    }

    /// On a leader, the learners that hold every committed entry (ready to
    /// be made voters); elsewhere, or without learners, none. Voters are
    /// left out: their progress moves with every append, and the view that
    /// holds this list is published whenever it changes.
    pub fn caught_up(&self) -> Vec<u64> {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return Vec::new();
        }
        let commit = raft.raft_log.committed;
        self.learners()
            .into_iter()
            .filter(|id| {
                raft.prs()
                    .get(*id)
                    .is_some_and(|progress| progress.matched >= commit)
            })
            .collect()
    }

    /// Asks voter `to` to take over as leader (a leader that is to be
    /// removed hands over first).
    pub fn transfer_leader(&mut self, to: u64) {
        self.node.transfer_leader(to);
        self.after_raft();
    }

    /// On a leader, Kafka's in-sync replicas: the leader first, then the
    /// voters that hold every committed entry or are being replicated to
    /// and were heard from within an election timeout (Kafka counts a
    /// follower that keeps up within a time, not one that holds the very
    /// last entry); elsewhere, the leader alone when known (a follower
    /// cannot tell how far the others are).
    pub fn in_sync(&self) -> Vec<u64> {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return self.leader().into_iter().collect();
        }
        let commit = raft.raft_log.committed;
        let mut in_sync = vec![raft.id];
        for voter in self.voters() {
            let caught_up = raft.prs().get(voter).is_some_and(|progress| {
                progress.matched >= commit
                    || (progress.recent_active && progress.state == raft::ProgressState::Replicate)
            });
            if voter != raft.id && caught_up {
                in_sync.push(voter);
            }
        }
        in_sync
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.node.raft.id
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        Some(self.node.raft.leader_id).filter(|id| *id != raft::INVALID_ID)
    }

    /// Whether this node leads the group.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The commit index this node knows.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The high watermark: the offset after the last committed record this
    /// node applied.
    pub fn high_watermark(&self) -> u64 {
        self.node.store().partition().high_watermark()
    }

    /// The Raft log.
    pub fn log(&self) -> &RaftLog {
        self.node.store()
    }

    /// The election timeout in force, in ticks.
    pub fn election_timeout(&self) -> usize {
        self.node.raft.randomized_election_timeout()
    }
}
