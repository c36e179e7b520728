//! All the Raft groups of one node, and what they share: the messages to
//! each peer (batched, one list per peer), the liveness of peers, and
//! quiescence of idle groups.
//!
//! [`Replicas`] is driven like a [`Group`]: the owner calls
//! [`Replicas::tick`] from its clock, [`Replicas::receive`] with what a peer
//! sent, [`Replicas::propose`], then [`Replicas::process`] and sends what
//! [`Replicas::take_outbox`] returns. It does no I/O of its own but the
//! groups' storage.
//!
//! **Quiescence.** A group with nothing in flight costs nothing: once a
//! leader has seen every entry committed and applied on every replica for
//! `quiesce_after_ticks` ticks, it sends its followers a quiesce message
//! (a heartbeat with [`QUIESCE`] as context, handled here, never stepped
//! into raft) and stops ticking; a follower whose log matches the leader's
//! commit stops ticking on receiving it. Any other message for the group,
//! or a proposal, wakes it. A sleeping follower cannot notice its leader's
//! death by missed heartbeats, so the node watches its peers instead: it
//! sends each peer a liveness message (group [`LIVENESS_GROUP`]) every
//! heartbeat, and when nothing has come from a peer for two election
//! timeouts it wakes every group that peer leads, which then elect. The
//! cost of idle groups is one message per peer per heartbeat, whatever
//! their number.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use weir_io::Storage;
use weir_log::Partition;

use crate::codec::Envelope;
use crate::group::{Group, GroupConfig, ProposeError, Proposed};
use crate::store::{StoreError, SyncPlan};

/// The group id of node-to-node liveness messages (no Raft group has it).
pub const LIVENESS_GROUP: u64 = 0;
/// The context of a leader's quiesce message.
pub const QUIESCE: &[u8] = b"weir:quiesce";
/// The start of the context of an application message: the owner's bytes
/// from one node to another, on the liveness channel (the owner's own
/// protocol, e.g. requests to the metadata leader).
pub const APPLICATION: &[u8] = b"weir:app:";

/// Settings shared by a node's groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicasConfig {
    /// This node's id (not 0).
    pub node: u64,
    /// Ticks without a leader before an election (see [`GroupConfig`]).
    pub election_ticks: usize,
    /// Ticks between heartbeats, and between liveness messages.
    pub heartbeat_ticks: usize,
    /// Ticks a leader's group must be settled before it quiesces; 0 never.
    pub quiesce_after_ticks: u64,
    /// Ticks a peer may be silent before it is taken for down and the
    /// groups it leads here are woken; `None`: two election timeouts.
    pub silence_ticks: Option<u64>,
    /// Seed of the node; each group's is derived from it and its id.
    pub seed: u64,
    /// Threads that sync the groups' files at once in a turn (1: one
    /// after the other, on the caller's thread). Under madsim, always 1.
    pub sync_threads: usize,
    /// A Raft log's side file is rewritten without the records of
    /// compacted entries once they take this many bytes and more than
    /// half of it (see [`GroupConfig`]).
    pub side_file_rewrite_bytes: u64,
    /// Bytes of one group's log read back and checked each tick (the
    /// groups in turn), so that rot is found and repaired from the
    /// leader before it is needed; 0: no scrub.
    pub scrub_bytes_per_tick: u32,
}

impl ReplicasConfig {
    /// Defaults for node `node`.
    pub fn new(node: u64, seed: u64) -> Self {
        Self {
            node,
            election_ticks: 10,
            heartbeat_ticks: 2,
            quiesce_after_ticks: 20,
            silence_ticks: None,
            seed,
            sync_threads: 1,
            side_file_rewrite_bytes: crate::store::REWRITE_MIN_BYTES,
            scrub_bytes_per_tick: SCRUB_BYTES_PER_TICK,
        }
    }
}

/// See [`ReplicasConfig::scrub_bytes_per_tick`]: with 50 ms ticks, about
/// 1.3 MB/s of reads, a GiB of log checked in under 15 minutes.
pub const SCRUB_BYTES_PER_TICK: u32 = 64 << 10;

struct Slot {
    group: Group,
    /// Consecutive ticks the group has been settled (as leader).
    settled_ticks: u64,
    asleep: bool,
}

impl Slot {
    fn new(group: Group) -> Self {
        Self {
            group,
            settled_ticks: 0,
            asleep: false,
        }
    }
}

/// What happened to a message or a tick, for the owner's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicasStats {
    /// Group ticks done.
    pub group_ticks: u64,
    /// Groups asleep now.
    pub asleep: usize,
    /// Groups in all.
    pub groups: usize,
    /// Messages queued for peers.
    pub messages_out: u64,
    /// Messages for groups this node does not have.
    pub unknown_group: u64,
}

/// The Raft groups of one node.
pub struct Replicas {
    config: ReplicasConfig,
    groups: BTreeMap<u64, Slot>,
    /// Groups ticked, stepped or proposed to since the last
    /// [`Replicas::process`]: the only ones that may have something ready,
    /// so that idle groups cost nothing there either.
    touched: BTreeSet<u64>,
    outbox: BTreeMap<u64, Vec<Envelope>>,
    /// The tick at which something last came from each peer.
    heard: BTreeMap<u64, u64>,
    /// Peers taken for down (their groups were woken).
    down: BTreeMap<u64, bool>,
    /// Application messages received, with their senders.
    applications: Vec<(u64, Vec<u8>)>,
    /// Groups that had something ready since [`Replicas::take_processed`].
    processed: BTreeSet<u64>,
    /// Groups whose ready [`Replicas::write_ready`] wrote, to finish.
    writing: Vec<u64>,
    /// Leads confirmed since [`Replicas::take_confirmed`]: (group, request,
    /// commit index).
    confirmed: Vec<(u64, u64, u64)>,
    ticks: u64,
    /// The tick of the last scrub turn.
    scrubbed_at: u64,
    /// Times each group was cut at a corrupt batch.
    cuts: BTreeMap<u64, u64>,
    /// Corrupt batches of groups without another replica, reported once.
    unrepairable: BTreeSet<(u64, u64)>,
    /// The group whose log the scrub reads next (the first from this id).
    scrub_next: u64,
    /// Groups to cut at a batch that read corrupt, once they no longer
    /// lead (the step down published first).
    cuts_pending: BTreeMap<u64, u64>,
    stats: ReplicasStats,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("node", &self.config.node)
            .field("groups", &self.groups.len())
            .field("ticks", &self.ticks)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// No groups yet; `peers` are the other nodes watched for liveness.
    pub fn new(config: ReplicasConfig, peers: &[u64]) -> Self {
        let others = peers.iter().copied().filter(|peer| *peer != config.node);
        Self {
            heard: others.clone().map(|peer| (peer, 0)).collect(),
            down: others.map(|peer| (peer, false)).collect(),
            config,
            groups: BTreeMap::new(),
            touched: BTreeSet::new(),
            outbox: BTreeMap::new(),
            applications: Vec::new(),
            processed: BTreeSet::new(),
            writing: Vec::new(),
            confirmed: Vec::new(),
            ticks: 0,
            scrubbed_at: 0,
            cuts: BTreeMap::new(),
            cuts_pending: BTreeMap::new(),
            scrub_next: 0,
            unrepairable: BTreeSet::new(),
            stats: ReplicasStats::default(),
        }
    }

    /// Opens this node's replica of group `id` (not [`LIVENESS_GROUP`]),
    /// whose voters are `voters` when it is created.
    pub fn open_group(
        &mut self,
        id: u64,
        voters: Vec<u64>,
        dir: Arc<dyn Storage>,
        partition: Arc<Partition>,
    ) -> Result<(), StoreError> {
        assert_ne!(id, LIVENESS_GROUP, "group id 0 is the liveness channel");
        let group = Group::open(&self.group_config(id, voters), dir, partition)?;
        self.groups.insert(id, Slot::new(group));
        self.touched.insert(id);
        Ok(())
    }

    fn group_config(&self, id: u64, voters: Vec<u64>) -> GroupConfig {
        let mut config =
            GroupConfig::new(self.config.node, voters, group_seed(self.config.seed, id));
        config.election_ticks = self.config.election_ticks;
        config.heartbeat_ticks = self.config.heartbeat_ticks;
        config.side_file_rewrite_bytes = self.config.side_file_rewrite_bytes;
        config
    }

    /// Once a tick, finds batches that read corrupt (sent to a follower,
    /// or scrubbed) and cuts each such group there, reopened to repair
    /// from its leader. Between readies only (no group is mid-ready when
    /// nothing is being written).
    fn repair_corruption(&mut self) -> Result<(), (u64, StoreError)> {
        // Once a tick: a turn runs for every batch of messages, and this
        // looks at every group.
        if self.ticks == self.scrubbed_at {
            return Ok(());
        }
        self.scrubbed_at = self.ticks;
        let mut budget_left = u64::from(self.config.scrub_bytes_per_tick);
        // The scrub reads one group's log to its end, then the next's.
        let ids: Vec<u64> = self
            .groups
            .range(self.scrub_next..)
            .chain(self.groups.range(..self.scrub_next))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let budget = u32::try_from(budget_left).expect("at most a tick's budget");
            let slot = self.groups.get_mut(&id).expect("a group listed");
            let pending = self.cuts_pending.get(&id).copied();
            let found = match pending {
                Some(offset) => Some(offset),
                None => {
                    let scrubbed = slot
                        .group
                        .find_corruption(budget)
                        .map_err(|error| (id, error))?;
                    if budget > 0 {
                        budget_left = budget_left.saturating_sub(scrubbed.bytes.max(1));
                        if scrubbed.pass_done {
                            self.scrub_next = id + 1;
                        } else {
                            budget_left = 0;
                            self.scrub_next = id;
                        }
                    }
                    scrubbed.corrupt
                }
            };
            let Some(offset) = found else {
                continue;
            };
            if slot.group.is_alone(self.config.node) {
                // Cutting would lose every later record for good: the
                // batch stays, and reading it fails.
                if self.unrepairable.insert((id, offset)) {
                    tracing::error!(
                        group = id,
                        offset,
                        "a batch reads corrupt, and no other replica holds it"
                    );
                }
                continue;
            }
            if !slot.group.prepare_cut() || pending.is_none() {
                // Cut at a later turn, once the step down is out.
                tracing::error!(
                    group = id,
                    offset,
                    "a batch reads corrupt: cutting the replica there to repair it"
                );
                self.cuts_pending.insert(id, offset);
                self.touched.insert(id);
                continue;
            }
            self.cuts_pending.remove(&id);
            let config = self.group_config(id, Vec::new());
            let slot = self.groups.remove(&id).expect("a group listed");
            let group = slot
                .group
                .reopen_cut_at(&config, offset)
                .map_err(|error| (id, error))?;
            self.groups.insert(id, Slot::new(group));
            self.touched.insert(id);
            *self.cuts.entry(id).or_default() += 1;
        }
        Ok(())
    }

    /// Watches node `peer` for liveness from now on (a node that joined).
    pub fn add_peer(&mut self, peer: u64) {
        if peer != self.config.node {
            self.heard.entry(peer).or_insert(self.ticks);
            self.down.entry(peer).or_insert(false);
        }
    }

    /// Proposes a change of group `id`'s members (see
    /// [`Group::propose_membership`]), waking it.
    pub fn propose_membership(
        &mut self,
        id: u64,
        changes: &[(raft::eraftpb::ConfChangeType, u64)],
    ) -> Result<(u64, u64), ProposeError> {
        self.wake_to_propose(id)?.propose_membership(changes)
    }

    /// Group `id`, woken (heartbeats sent at once if it slept) and marked
    /// for the next [`Replicas::process`], for a proposal.
    fn wake_to_propose(&mut self, id: u64) -> Result<&mut Group, ProposeError> {
        let Some(slot) = self.groups.get_mut(&id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        if slot.asleep {
            slot.asleep = false;
            slot.group.ping();
        }
        slot.settled_ticks = 0;
        self.touched.insert(id);
        Ok(&mut slot.group)
    }

    /// Asks this node's replica of group `id`, its leader, to confirm that
    /// it still leads (see [`Group::confirm_lead`]), waking it; the answer,
    /// if one comes, is in [`Replicas::take_confirmed`].
    pub fn confirm_lead(&mut self, id: u64, request: u64) -> Result<(), ProposeError> {
        let Some(slot) = self.groups.get(&id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        if !slot.group.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: slot.group.leader(),
            });
        }
        self.wake_to_propose(id)?.confirm_lead(request);
        Ok(())
    }

    /// The leads confirmed since the last call: (group, request, the
    /// commit index at which it was confirmed).
    pub fn take_confirmed(&mut self) -> Vec<(u64, u64, u64)> {
        std::mem::take(&mut self.confirmed)
    }

    /// Asks this node's replica of group `id` (its leader) to hand the
    /// lead to voter `to`.
    pub fn transfer_leader(&mut self, id: u64, to: u64) {
        if let Ok(group) = self.wake_to_propose(id) {
            group.transfer_leader(to);
        }
    }

    /// Closes this node's replica of group `id`.
    pub fn close_group(&mut self, id: u64) -> Option<Group> {
        self.cuts_pending.remove(&id);
        self.groups.remove(&id).map(|slot| slot.group)
    }

    /// The group, if this node has it.
    pub fn group(&self, id: u64) -> Option<&Group> {
        self.groups.get(&id).map(|slot| &slot.group)
    }

    /// Applies retention to each group's partition ([`Group::apply_retention`]),
    /// but not to groups whose ready is being written (they wait for the
    /// next call). Returns each group's log start offset, or its error.
    pub fn apply_retention(&mut self) -> Vec<(u64, Result<u64, StoreError>)> {
        let writing: BTreeSet<u64> = self.writing.iter().copied().collect();
        self.groups
            .iter_mut()
            .filter(|(id, _)| !writing.contains(id))
            .map(|(id, slot)| (*id, slot.group.apply_retention()))
            .collect()
    }

    /// The ids of the groups this node has.
    pub fn group_ids(&self) -> Vec<u64> {
        self.groups.keys().copied().collect()
    }

    /// Times group `id` was cut at a batch that read corrupt.
    pub fn cuts(&self, id: u64) -> u64 {
        self.cuts.get(&id).copied().unwrap_or(0)
    }

    /// Whether group `id` is quiescent here.
    pub fn is_asleep(&self, id: u64) -> bool {
        self.groups.get(&id).is_some_and(|slot| slot.asleep)
    }

    /// Counters.
    pub fn stats(&self) -> ReplicasStats {
        ReplicasStats {
            asleep: self.groups.values().filter(|slot| slot.asleep).count(),
            groups: self.groups.len(),
            ..self.stats
        }
    }

    /// Counts one tick: ticks the groups that are awake, quiesces settled
    /// leaders, sends liveness messages and wakes the groups of peers gone
    /// silent.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let quiesce_after = self.config.quiesce_after_ticks;
        let unheard = self.unheard_peers();
        let mut quiescing = Vec::new();
        for (id, slot) in &mut self.groups {
            // A leader that has not heard from a majority of its voters
            // within an election timeout may have been deposed: it stays
            // (or wakes) awake, so that raft's quorum check makes it step
            // down rather than lead on, asleep, serving reads from a state
            // the others have left behind (cluster seed 239: a leader cut
            // off from every peer quiesced a second later and answered
            // reads in its old term until the link came back).
            let cut_off = !unheard.is_empty()
                && slot.group.is_leader()
                && !heard_from_majority(&slot.group, self.config.node, &unheard);
            if slot.asleep && !cut_off {
                continue;
            }
            if slot.asleep {
                slot.asleep = false;
                slot.settled_ticks = 0;
            }
            slot.group.tick();
            self.touched.insert(*id);
            self.stats.group_ticks += 1;
            let settled_leader = slot.group.is_leader() && slot.group.is_settled() && !cut_off;
            slot.settled_ticks = if settled_leader {
                slot.settled_ticks + 1
            } else {
                0
            };
            if quiesce_after > 0 && slot.settled_ticks >= quiesce_after {
                slot.asleep = true;
                quiescing.push(*id);
            }
        }
        for id in quiescing {
            self.send_quiesce(id);
        }
        if self
            .ticks
            .is_multiple_of(self.config.heartbeat_ticks as u64)
        {
            self.send_liveness();
        }
        self.watch_peers();
    }

    fn send_quiesce(&mut self, id: u64) {
        let group = &self.groups[&id].group;
        let (term, commit, from) = (group.term(), group.commit_index(), group.id());
        for voter in group.voters() {
            if voter == from {
                continue;
            }
            let message = Message {
                msg_type: MessageType::MsgHeartbeat,
                to: voter,
                from,
                term,
                commit,
                context: QUIESCE.to_vec().into(),
                ..Message::default()
            };
            self.queue(id, message);
        }
    }

    fn send_liveness(&mut self) {
        let peers: Vec<u64> = self.heard.keys().copied().collect();
        for peer in peers {
            let message = Message {
                msg_type: MessageType::MsgHeartbeat,
                to: peer,
                from: self.config.node,
                ..Message::default()
            };
            self.queue(LIVENESS_GROUP, message);
        }
    }

    /// The peers not heard from within an election timeout.
    fn unheard_peers(&self) -> BTreeSet<u64> {
        let window = self.config.election_ticks as u64;
        self.heard
            .iter()
            .filter(|(_, heard)| self.ticks - **heard > window)
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// The peers silent for two election timeouts (taken for down).
    pub fn down_peers(&self) -> BTreeSet<u64> {
        self.down
            .iter()
            .filter(|(_, down)| **down)
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Wakes the groups led by a peer that has been silent for two
    /// election timeouts (or `silence_ticks`), once per silence.
    fn watch_peers(&mut self) {
        let silence = self
            .config
            .silence_ticks
            .unwrap_or(2 * self.config.election_ticks as u64);
        let ticks = self.ticks;
        let silent: Vec<u64> = self
            .heard
            .iter()
            .filter(|(peer, heard)| ticks - **heard > silence && !self.down[*peer])
            .map(|(peer, _)| *peer)
            .collect();
        for peer in silent {
            self.down.insert(peer, true);
            self.wake_groups_led_by(peer);
        }
    }

    /// The connection with `peer` ended: wakes the groups it leads here
    /// at once, so that their election timeouts run now instead of after
    /// the silence watch (two election timeouts) has taken it for down. A
    /// peer still alive keeps its groups: a woken follower's pre-vote wakes
    /// the leader's group and the others' refuse it (they heard from the
    /// leader within their election timeout), and the leader's heartbeats
    /// settle the group again.
    pub fn peer_lost(&mut self, peer: u64) {
        self.wake_groups_led_by(peer);
    }

    fn wake_groups_led_by(&mut self, peer: u64) {
        for slot in self.groups.values_mut() {
            if slot.asleep && slot.group.leader() == Some(peer) {
                slot.asleep = false;
                slot.settled_ticks = 0;
            }
        }
    }

    /// Hands over what peer `from` sent. Messages for unknown groups are
    /// counted and dropped; raft ignores stale ones.
    pub fn receive(&mut self, from: u64, envelopes: Vec<Envelope>) {
        if let Some(heard) = self.heard.get_mut(&from) {
            *heard = self.ticks;
            self.down.insert(from, false);
        }
        for envelope in envelopes {
            if envelope.group == LIVENESS_GROUP {
                let context = envelope.message.context;
                if let Some(payload) = context.strip_prefix(APPLICATION) {
                    self.applications.push((from, payload.to_vec()));
                }
                continue;
            }
            let Some(slot) = self.groups.get_mut(&envelope.group) else {
                self.stats.unknown_group += 1;
                continue;
            };
            let message = envelope.message;
            if message.msg_type == MessageType::MsgHeartbeat && message.context.as_ref() == QUIESCE
            {
                quiesce_follower(slot, &message);
                continue;
            }
            let keepalive = matches!(
                message.msg_type,
                MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
            ) && message.term == slot.group.term();
            // A message raft refuses (a stale term, an unknown peer) is
            // dropped, as raft would drop it.
            let _ = slot.group.step(message);
            self.touched.insert(envelope.group);
            // A sleeping group stays asleep through the heartbeats still in
            // flight when it quiesced, unless they show it is not settled
            // (a follower behind); anything else wakes it.
            if slot.asleep && !(keepalive && slot.group.is_settled()) {
                slot.asleep = false;
                slot.settled_ticks = 0;
            }
        }
    }

    /// Proposes a producer's batch to group `id`, waking it (the batch is
    /// stamped in place and becomes the entry's data, not copied).
    pub fn propose(&mut self, id: u64, batch: Vec<u8>) -> Result<Proposed, ProposeError> {
        self.wake_to_propose(id)?.propose_batch(batch)
    }

    /// Persists and applies what every group has ready, and queues the
    /// messages. Stops at the first group whose storage fails (the node
    /// must stop: its disk is in an unknown state).
    pub fn process(&mut self) -> Result<(), (u64, StoreError)> {
        self.write_ready()?;
        self.finish_ready()
    }

    /// The first half of [`Replicas::process`]: every group with something
    /// ready writes it (not yet durably) and queues the messages that may
    /// leave before it is durable (a leader's appends), for the owner to
    /// send before [`Replicas::finish_ready`].
    pub fn write_ready(&mut self) -> Result<(), (u64, StoreError)> {
        if self.writing.is_empty() {
            self.repair_corruption()?;
        }
        for id in std::mem::take(&mut self.touched) {
            let Some(slot) = self.groups.get_mut(&id) else {
                continue;
            };
            if !slot.group.has_ready() {
                continue;
            }
            let messages = slot.group.write_ready().map_err(|error| (id, error))?;
            let confirmed = slot.group.take_confirmed();
            self.confirmed.extend(
                confirmed
                    .into_iter()
                    .map(|(request, index)| (id, request, index)),
            );
            self.writing.push(id);
            for message in messages {
                self.queue(id, message);
            }
        }
        Ok(())
    }

    /// The second half of [`Replicas::process`]: syncs what the groups
    /// wrote, all at once (on up to [`ReplicasConfig::sync_threads`]
    /// threads), then applies what they committed and queues the messages
    /// that waited for the sync.
    pub fn finish_ready(&mut self) -> Result<(), (u64, StoreError)> {
        let writing = std::mem::take(&mut self.writing);
        let plans: Vec<(u64, SyncPlan)> = writing
            .iter()
            .filter_map(|id| {
                let plan = self.groups.get(id)?.group.sync_plan();
                (!plan.is_empty()).then_some((*id, plan))
            })
            .collect();
        run_syncs(&plans, self.config.sync_threads)?;
        for (id, plan) in &plans {
            if let Some(slot) = self.groups.get_mut(id) {
                slot.group.synced(plan);
            }
        }
        for id in writing {
            let Some(slot) = self.groups.get_mut(&id) else {
                continue;
            };
            let messages = slot.group.finish_ready().map_err(|error| (id, error))?;
            self.processed.insert(id);
            if slot.group.has_ready() {
                self.touched.insert(id);
            }
            for message in messages {
                self.queue(id, message);
            }
        }
        Ok(())
    }

    /// Queues an application message for `peer` (see [`APPLICATION`]).
    pub fn send_application(&mut self, peer: u64, payload: &[u8]) {
        let mut context = APPLICATION.to_vec();
        context.extend_from_slice(payload);
        let message = Message {
            msg_type: MessageType::MsgHeartbeat,
            to: peer,
            from: self.config.node,
            context: context.into(),
            ..Message::default()
        };
        self.queue(LIVENESS_GROUP, message);
    }

    /// The application messages received since the last call, with their
    /// senders, in arrival order.
    pub fn take_applications(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.applications)
    }

    /// The groups that had something ready (and may have changed leader,
    /// term or high watermark) since the last call.
    pub fn take_processed(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.processed)
    }

    fn queue(&mut self, group: u64, message: Message) {
        self.stats.messages_out += 1;
        self.outbox
            .entry(message.to)
            .or_default()
            .push(Envelope { group, message });
    }

    /// The messages to send, one list per peer, in peer order.
    pub fn take_outbox(&mut self) -> Vec<(u64, Vec<Envelope>)> {
        std::mem::take(&mut self.outbox).into_iter().collect()
    }
}

/// Whether this node (`node`) and the voters of `group` it has heard from
/// lately make a majority of the voters.
fn heard_from_majority(group: &Group, node: u64, unheard: &BTreeSet<u64>) -> bool {
    group.majority_of_voters(|voter| voter == node || !unheard.contains(&voter))
}

/// A follower quiesces on its leader's word if its log holds everything
/// the leader committed.
fn quiesce_follower(slot: &mut Slot, message: &Message) {
    let group = &slot.group;
    let from_leader = group.leader() == Some(message.from) && group.term() == message.term;
    if from_leader
        && !group.is_leader()
        && group.is_settled()
        && group.commit_index() == message.commit
    {
        slot.asleep = true;
    }
}

/// A group's seed: the node's, mixed with the group id (splitmix64).
fn group_seed(seed: u64, group: u64) -> u64 {
    let mut z = seed ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `plans`, on up to `threads` threads at once (a disk serves
/// concurrent syncs together: one journal commit, one cache flush); the
/// first failure, with its group.
fn run_syncs(plans: &[(u64, SyncPlan)], threads: usize) -> Result<(), (u64, StoreError)> {
    let run = |chunk: &[(u64, SyncPlan)]| {
        chunk
            .iter()
            .try_for_each(|(id, plan)| plan.run().map_err(|error| (*id, error)))
    };
    if cfg!(madsim) || threads <= 1 || plans.len() <= 1 {
        return run(plans);
    }
    let per_thread = plans.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let others: Vec<_> = plans
            .chunks(per_thread)
            .skip(1)
            .map(|chunk| scope.spawn(move || run(chunk)))
            .collect();
        let mut result = run(&plans[..per_thread]);
        for other in others {
            let outcome = other.join().expect("a sync thread panicked");
            result = result.and(outcome);
        }
        result
    })
}
