//! Runs a node's [`Replicas`] on (madsim-)tokio: ticks from a timer, frames
//! from the [`Transport`], proposals from the front-ends through a
//! [`ReplicasHandle`]; each proposal is answered when its acks level is
//! reached.
//!
//! The runner is one task that owns the groups, so nothing is locked. It
//! does the groups' disk work (writes and syncs) in place: give it a
//! runtime of its own ([`spawn_on_thread`]) so that the front-ends' event
//! loops never wait for a sync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use weir_io::sync::{lock, read, write, Mutex, RwLock};
use weir_io::Storage;
use weir_log::{LogError, Partition};

use raft::eraftpb::ConfChangeType;

use crate::group::{CommitStatus, Group, ProposeError};
use crate::replicas::Replicas;
use crate::store::StoreError;
use crate::transport::{Inbound, Transport};

/// Application messages queued for the owner before the oldest are
/// dropped (their senders retry).
const APPLICATIONS_QUEUED: usize = 1024;

/// When a produce is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Once the leader has the batch durably (Kafka's `acks=1`).
    Leader,
    /// Once the batch is committed on a majority (Kafka's `acks=all`).
    All,
}

/// Where a produced batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its first record's offset.
    pub base_offset: u64,
    /// Its last record's offset.
    pub last_offset: u64,
}

/// Why a produce failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// This node does not lead the group (the leader it knows of, if any).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id, when known.
        leader: Option<u64>,
    },
    /// A producer's retry of a batch not yet committed: retry later.
    #[error("a retry of a batch not yet committed")]
    InFlight,
    /// The producer is ahead of this leader's log (a stale leader): retry,
    /// after refreshing who leads.
    #[error("the producer is ahead of this leader's log: {0}")]
    SequenceAhead(String),
    /// The log refused the batch.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The batch's entry was replaced by another leader's: not written.
    #[error("the leader changed before the batch was committed")]
    Lost,
    /// Not acknowledged in time (it may still be committed).
    #[error("timed out waiting for the batch to be replicated")]
    TimedOut,
    /// The runner has stopped.
    #[error("the replication runner has stopped")]
    Stopped,
    /// A group's storage could not be opened.
    #[error("opening the group's storage failed: {0}")]
    Storage(String),
}

/// One group as the runner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group's id.
    pub group: u64,
    /// Its leader, when known.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// Its commit index on this node.
    pub commit: u64,
    /// Its high watermark on this node.
    pub high_watermark: u64,
    /// Whether it is quiescent here.
    pub asleep: bool,
    /// Whether this replica is repairing entries it lost to corruption
    /// ([`crate::RaftLog::repair`]).
    pub repairing: bool,
    /// Times it was cut at a batch that read corrupt, since the node
    /// started (its high watermark goes back with the records).
    pub cuts: u64,
}

/// One group as the front-ends see it, published by the runner whenever
/// it changes, so that reading it never waits for the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// Its leader, when known.
    pub leader: Option<u64>,
    /// Its current term (the leader epoch).
    pub term: u64,
    /// Its high watermark on this node.
    pub high_watermark: u64,
    /// Its voters.
    pub voters: Vec<u64>,
    /// Its in-sync replicas as this node knows them ([`Group::in_sync`]).
    pub in_sync: Vec<u64>,
    /// The term of the entry at its commit index: a leader whose commit
    /// is of its own term has every entry committed before it.
    pub commit_term: u64,
    /// Its learners.
    pub learners: Vec<u64>,
    /// Whether it is in joint consensus.
    pub joint: bool,
    /// On its leader, the learners holding every committed entry.
    pub caught_up: Vec<u64>,
    /// Whether this replica repairs entries it lost to corruption: its
    /// log is behind what it held, and so is what its owner built from it.
    pub repairing: bool,
}

impl GroupView {
    fn of(group: &Group) -> Self {
        Self {
            leader: group.leader(),
            term: group.term(),
            high_watermark: group.high_watermark(),
            voters: group.voters(),
            in_sync: group.in_sync(),
            commit_term: group.log().term_of(group.commit_index()).unwrap_or(0),
            learners: group.learners(),
            joint: group.is_joint(),
            caught_up: group.caught_up(),
            repairing: group.log().repair().is_some(),
        }
    }
}

/// Application messages from peers: (sender, payload).
pub type Applications = mpsc::Receiver<(u64, Vec<u8>)>;

/// What the runner publishes.
#[derive(Debug, Default)]
struct Published {
    views: RwLock<BTreeMap<u64, GroupView>>,
    /// Notified whenever a view changes.
    changed: Notify,
    /// Application messages from peers, taken once by the owner.
    applications: Mutex<Option<Applications>>,
    /// The peers taken for down.
    down: RwLock<std::collections::BTreeSet<u64>>,
}

enum Command {
    Open {
        group: u64,
        voters: Vec<u64>,
        dir: Arc<dyn Storage>,
        partition: Arc<Partition>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Close {
        group: u64,
    },
    Send {
        peer: u64,
        payload: Vec<u8>,
    },
    Propose {
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
        reply: oneshot::Sender<Result<Appended, ProduceError>>,
    },
    Status {
        reply: oneshot::Sender<Vec<GroupStatus>>,
    },
    ConfirmLead {
        group: u64,
        reply: oneshot::Sender<Result<(), ProduceError>>,
    },
    Membership {
        group: u64,
        changes: Vec<(ConfChangeType, u64)>,
        reply: oneshot::Sender<Result<(), ProduceError>>,
    },
    TransferLeader {
        group: u64,
        to: u64,
    },
    AddPeer {
        peer: u64,
        address: Option<std::net::SocketAddr>,
    },
    ApplyRetention,
}

/// Talks to a running node's groups.
#[derive(Clone, Debug)]
pub struct ReplicasHandle {
    commands: mpsc::Sender<Command>,
    published: Arc<Published>,
}

impl ReplicasHandle {
    /// Opens this node's replica of group `group` (see
    /// [`Replicas::open_group`]).
    pub async fn open_group(
        &self,
        group: u64,
        voters: Vec<u64>,
        dir: Arc<dyn Storage>,
        partition: Arc<Partition>,
    ) -> Result<(), ProduceError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Open {
            group,
            voters,
            dir,
            partition,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ProduceError::Stopped)?;
        match answer.await.map_err(|_| ProduceError::Stopped)? {
            Ok(()) => Ok(()),
            Err(error) => Err(ProduceError::Storage(error.to_string())),
        }
    }

    /// Closes this node's replica of group `group` (its files stay).
    pub async fn close_group(&self, group: u64) {
        let _ = self.commands.send(Command::Close { group }).await;
    }

    /// Sends `payload` to node `peer` as an application message; dropped
    /// when the peer cannot be reached (the sender retries).
    pub async fn send(&self, peer: u64, payload: Vec<u8>) {
        let _ = self.commands.send(Command::Send { peer, payload }).await;
    }

    /// The application messages from peers: the receiver, to the first
    /// caller only.
    pub fn applications(&self) -> Option<Applications> {
        lock(&self.published.applications).take()
    }

    /// Group `group` as last published; `None` for a group not open here,
    /// and for every group once the runner has stopped (its storage
    /// failed: the node is then a replica of nothing until restarted).
    pub fn view(&self, group: u64) -> Option<GroupView> {
        read(&self.published.views).get(&group).cloned()
    }

    /// Every group's view on this node, by group.
    pub fn views(&self) -> BTreeMap<u64, GroupView> {
        read(&self.published.views).clone()
    }

    /// The peers this node takes for down (silent for two election
    /// timeouts).
    pub fn down_peers(&self) -> std::collections::BTreeSet<u64> {
        read(&self.published.down).clone()
    }

    /// Notified whenever a group's view changes (a leader, a term, a high
    /// watermark).
    pub fn changed(&self) -> &Notify {
        &self.published.changed
    }

    /// Done once the runner has stopped: its storage failed (or its
    /// transport ended), and the node replicates nothing until restarted.
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }

    /// Produces a producer's batch to `group` (this node must lead it).
    pub async fn produce(
        &self,
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
    ) -> Result<Appended, ProduceError> {
        self.propose(group, batch, acks).await?.await
    }

    /// Hands a producer's batch to `group` (this node must lead it): done
    /// once it is queued, behind everything sent to the runner before it
    /// (so that one producer's batches, proposed one after the other,
    /// keep their order); the future returned answers at `acks`.
    pub async fn propose(
        &self,
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
    ) -> Result<
        impl std::future::Future<Output = Result<Appended, ProduceError>> + Send + 'static,
        ProduceError,
    > {
        let (reply, answer) = oneshot::channel();
        let command = Command::Propose {
            group,
            batch,
            acks,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ProduceError::Stopped)?;
        Ok(async move { answer.await.map_err(|_| ProduceError::Stopped)? })
    }

    /// Confirms that this node still leads `group`: a round of heartbeats
    /// acknowledged by a majority in its term (raft's read index), then
    /// the commit index of that moment applied here. After `Ok`, this
    /// node's log holds every record committed before the call, so an
    /// offset beyond its high watermark was never committed. A deposed
    /// leader that does not know it yet (cut off, or paused while the
    /// others elected) gets `NotLeader` or `TimedOut`, never `Ok`.
    pub async fn confirm_lead(&self, group: u64) -> Result<(), ProduceError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ConfirmLead { group, reply })
            .await
            .map_err(|_| ProduceError::Stopped)?;
        answer.await.map_err(|_| ProduceError::Stopped)?
    }

    /// Proposes a change of group `group`'s members (this node must lead
    /// it): see [`Replicas::propose_membership`]. Done when proposed; the
    /// group's view shows when it is applied.
    pub async fn change_membership(
        &self,
        group: u64,
        changes: Vec<(ConfChangeType, u64)>,
    ) -> Result<(), ProduceError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Membership {
            group,
            changes,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ProduceError::Stopped)?;
        answer.await.map_err(|_| ProduceError::Stopped)?
    }

    /// Asks this node's replica of `group`, its leader, to hand the lead
    /// to voter `to`.
    pub async fn transfer_leader(&self, group: u64, to: u64) {
        let _ = self
            .commands
            .send(Command::TransferLeader { group, to })
            .await;
    }

    /// Adds node `peer` (one that joined) to the transport and to the
    /// peers watched for liveness.
    pub async fn add_peer(&self, peer: u64, address: Option<std::net::SocketAddr>) {
        let _ = self.commands.send(Command::AddPeer { peer, address }).await;
    }

    /// Applies retention to the partitions of this node's groups
    /// ([`crate::Group::apply_retention`]).
    pub async fn apply_retention(&self) {
        let _ = self.commands.send(Command::ApplyRetention).await;
    }

    /// The state of every group of this node.
    pub async fn status(&self) -> Vec<GroupStatus> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Status { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

/// Settings of a runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// The time of one tick.
    pub tick: Duration,
    /// Ticks a produce may wait for its acks level.
    pub produce_timeout_ticks: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            produce_timeout_ticks: 300,
        }
    }
}

struct Waiter {
    group: u64,
    index: u64,
    term: u64,
    appended: Appended,
    acks: Acks,
    deadline: u64,
    reply: oneshot::Sender<Result<Appended, ProduceError>>,
}

/// A confirmation of a lead (see [`ReplicasHandle::confirm_lead`]) under
/// way: asked in `term`, answered by raft at commit `index`.
struct Confirming {
    group: u64,
    request: u64,
    term: u64,
    index: Option<u64>,
    deadline: u64,
    reply: oneshot::Sender<Result<(), ProduceError>>,
}

struct Runner {
    replicas: Replicas,
    transport: Transport,
    config: RunnerConfig,
    waiters: Vec<Waiter>,
    confirming: Vec<Confirming>,
    requests: u64,
    ticks: u64,
    published: Arc<Published>,
    applications: mpsc::Sender<(u64, Vec<u8>)>,
}

/// Starts the runner as a task of the current runtime.
pub fn spawn(
    replicas: Replicas,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    config: RunnerConfig,
) -> (ReplicasHandle, JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (applications, applications_rx) = mpsc::channel(APPLICATIONS_QUEUED);
    let published = Arc::new(Published {
        applications: Mutex::new(Some(applications_rx)),
        ..Published::default()
    });
    let mut runner = Runner {
        replicas,
        transport,
        config,
        waiters: Vec::new(),
        confirming: Vec::new(),
        requests: 0,
        ticks: 0,
        published: Arc::clone(&published),
        applications,
    };
    let all = runner.replicas.group_ids().into_iter().collect();
    runner.publish(all);
    let task = tokio::spawn(runner.run(commands_rx, inbound));
    (
        ReplicasHandle {
            commands: commands_tx,
            published,
        },
        task,
    )
}

/// Runs `future` on a current-thread runtime of its own thread (named
/// `name`): for the runner, whose syncs must not stall other tasks.
#[cfg(not(madsim))]
pub fn spawn_on_thread<F>(name: &str, future: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || runtime.block_on(future))
}

impl Runner {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut timer = tokio::time::interval(self.config.tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                frame = inbound.recv() => match frame {
                    Some(inbound) => self.inbound(inbound),
                    None => break,
                },
                _ = timer.tick() => {
                    self.ticks += 1;
                    self.replicas.tick();
                    let down = self.replicas.down_peers();
                    if *read(&self.published.down) != down {
                        *write(&self.published.down) = down;
                    }
                }
            }
            // Whatever else is queued joins this turn's writes and syncs.
            while let Ok(command) = commands.try_recv() {
                self.command(command);
            }
            while let Ok(inbound) = inbound.try_recv() {
                self.inbound(inbound);
            }
            if !self.turn() {
                break;
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(ProduceError::Stopped));
        }
        // A stopped runner leads and follows nothing. Its views go, so that
        // the node's front-end answers as a replica of no group (clients
        // move to the leader the others elect) instead of from a state
        // frozen at the failure: a leader view left behind kept serving
        // reads from a log shorter than the new leader's high watermark.
        write(&self.published.views).clear();
        self.published.changed.notify_waiters();
    }

    fn inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Frame { from, envelopes } => self.replicas.receive(from, envelopes),
            Inbound::Lost { peer } => self.replicas.peer_lost(peer),
        }
    }

    /// Persists, sends and answers; false if the node's storage failed
    /// (the node must stop: its disk is in an unknown state).
    /// A leader's appends leave before its own syncs, so that its
    /// followers write while it syncs.
    fn turn(&mut self) -> bool {
        let processed = self.replicas.write_ready();
        self.send_outbox();
        if let Err((group, error)) = processed.and_then(|()| self.replicas.finish_ready()) {
            tracing::error!(group, %error, "replication storage failed; the node stops replicating");
            return false;
        }
        self.send_outbox();
        self.answer_waiters();
        self.answer_confirmations();
        let processed = self.replicas.take_processed();
        self.publish(processed);
        for (from, payload) in self.replicas.take_applications() {
            if self.applications.try_send((from, payload)).is_err() {
                tracing::debug!(from, "application message dropped: the owner is behind");
            }
        }
        true
    }

    fn send_outbox(&mut self) {
        for (peer, envelopes) in self.replicas.take_outbox() {
            self.transport.send(peer, &envelopes);
        }
    }

    /// Publishes the views of `groups` that changed (and forgets closed
    /// ones), waking whoever waits for a change.
    fn publish(&mut self, groups: std::collections::BTreeSet<u64>) {
        if groups.is_empty() {
            return;
        }
        let mut changed = false;
        {
            let mut views = write(&self.published.views);
            for id in groups {
                match self.replicas.group(id).map(GroupView::of) {
                    Some(view) => {
                        if views.get(&id) != Some(&view) {
                            views.insert(id, view);
                            changed = true;
                        }
                    }
                    None => changed |= views.remove(&id).is_some(),
                }
            }
        }
        if changed {
            self.published.changed.notify_waiters();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Open {
                group,
                voters,
                dir,
                partition,
                reply,
            } => {
                let opened = if self.replicas.group(group).is_some() {
                    Ok(())
                } else {
                    self.replicas.open_group(group, voters, dir, partition)
                };
                self.publish([group].into());
                let _ = reply.send(opened);
            }
            Command::Close { group } => {
                self.replicas.close_group(group);
                self.publish([group].into());
            }
            Command::Send { peer, payload } => self.replicas.send_application(peer, &payload),
            Command::Propose {
                group,
                batch,
                acks,
                reply,
            } => self.propose(group, batch, acks, reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::ConfirmLead { group, reply } => self.confirm_lead(group, reply),
            Command::Membership {
                group,
                changes,
                reply,
            } => {
                let proposed = self
                    .replicas
                    .propose_membership(group, &changes)
                    .map(|_| ())
                    .map_err(|error| match error {
                        ProposeError::NotLeader { leader } => ProduceError::NotLeader { leader },
                        ProposeError::InFlight => ProduceError::InFlight,
                        other => ProduceError::Storage(other.to_string()),
                    });
                let _ = reply.send(proposed);
            }
            Command::TransferLeader { group, to } => self.replicas.transfer_leader(group, to),
            Command::AddPeer { peer, address } => {
                self.transport.add_peer(peer, address);
                self.replicas.add_peer(peer);
            }
            Command::ApplyRetention => {
                for (group, result) in self.replicas.apply_retention() {
                    if let Err(error) = result {
                        tracing::error!(group, %error, "applying retention failed");
                    }
                }
            }
        }
    }

    fn propose(
        &mut self,
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
        reply: oneshot::Sender<Result<Appended, ProduceError>>,
    ) {
        let proposed = match self.replicas.propose(group, batch) {
            Ok(proposed) => proposed,
            Err(error) => {
                let _ = reply.send(Err(match error {
                    ProposeError::NotLeader { leader } => ProduceError::NotLeader { leader },
                    ProposeError::InFlight => ProduceError::InFlight,
                    error @ ProposeError::SequenceAhead { .. } => {
                        ProduceError::SequenceAhead(error.to_string())
                    }
                    ProposeError::Log(error) => ProduceError::Log(error),
                    ProposeError::Dropped(_) => ProduceError::NotLeader { leader: None },
                }));
                return;
            }
        };
        let appended = Appended {
            base_offset: proposed.base_offset,
            last_offset: proposed.last_offset,
        };
        if proposed.duplicate {
            let _ = reply.send(Ok(appended));
            return;
        }
        self.waiters.push(Waiter {
            group,
            index: proposed.index,
            term: proposed.term,
            appended,
            acks,
            deadline: self.ticks + self.config.produce_timeout_ticks,
            reply,
        });
    }

    fn answer_waiters(&mut self) {
        let ticks = self.ticks;
        let mut waiting = Vec::with_capacity(self.waiters.len());
        for waiter in self.waiters.drain(..) {
            let outcome = match self.replicas.group(waiter.group) {
                None => Some(Err(ProduceError::Lost)),
                Some(group) => {
                    match (group.commit_status(waiter.index, waiter.term), waiter.acks) {
                        (CommitStatus::Committed, _) => Some(Ok(waiter.appended)),
                        (CommitStatus::Lost, _) => Some(Err(ProduceError::Lost)),
                        (CommitStatus::Pending, Acks::Leader)
                            if group.log().term_of(waiter.index) == Some(waiter.term) =>
                        {
                            Some(Ok(waiter.appended))
                        }
                        (CommitStatus::Pending, _) if ticks >= waiter.deadline => {
                            Some(Err(ProduceError::TimedOut))
                        }
                        (CommitStatus::Pending, _) => None,
                    }
                }
            };
            match outcome {
                Some(result) => {
                    let _ = waiter.reply.send(result);
                }
                None => waiting.push(waiter),
            }
        }
        self.waiters = waiting;
    }

    fn confirm_lead(&mut self, group: u64, reply: oneshot::Sender<Result<(), ProduceError>>) {
        self.requests += 1;
        let request = self.requests;
        if let Err(error) = self.replicas.confirm_lead(group, request) {
            let leader = match error {
                ProposeError::NotLeader { leader } => leader,
                _ => None,
            };
            let _ = reply.send(Err(ProduceError::NotLeader { leader }));
            return;
        }
        let group_now = self
            .replicas
            .group(group)
            .expect("a group that just confirmed");
        // Raft answers within a heartbeat round if a majority is reachable;
        // a leader cut off steps down within two election timeouts.
        let deadline = self.ticks + 2 * group_now.election_timeout() as u64;
        self.confirming.push(Confirming {
            group,
            request,
            term: group_now.term(),
            index: None,
            deadline,
            reply,
        });
    }

    /// Answers the confirmations whose round a majority acknowledged and
    /// whose commit index is applied here, and those that cannot succeed
    /// (the node lost the lead, or the deadline passed).
    fn answer_confirmations(&mut self) {
        for (group, request, index) in self.replicas.take_confirmed() {
            let asked = self
                .confirming
                .iter_mut()
                .find(|asked| asked.request == request && asked.group == group);
            if let Some(asked) = asked {
                asked.index = Some(index);
            }
        }
        let ticks = self.ticks;
        let mut waiting = Vec::with_capacity(self.confirming.len());
        for asked in self.confirming.drain(..) {
            let outcome = match self.replicas.group(asked.group) {
                None => Some(Err(ProduceError::NotLeader { leader: None })),
                Some(group) if group.term() != asked.term || !group.is_leader() => {
                    Some(Err(ProduceError::NotLeader {
                        leader: group.leader(),
                    }))
                }
                Some(group)
                    if asked
                        .index
                        .is_some_and(|index| group.applied_index() >= index) =>
                {
                    Some(Ok(()))
                }
                Some(_) if ticks >= asked.deadline => Some(Err(ProduceError::TimedOut)),
                Some(_) => None,
            };
            match outcome {
                Some(result) => {
                    let _ = asked.reply.send(result);
                }
                None => waiting.push(asked),
            }
        }
        self.confirming = waiting;
    }

    fn status(&self) -> Vec<GroupStatus> {
        self.replicas
            .group_ids()
            .into_iter()
            .filter_map(|id| {
                let group = self.replicas.group(id)?;
                Some(GroupStatus {
                    group: id,
                    leader: group.leader(),
                    term: group.term(),
                    commit: group.commit_index(),
                    high_watermark: group.high_watermark(),
                    asleep: self.replicas.is_asleep(id),
                    repairing: group.log().repair().is_some(),
                    cuts: self.replicas.cuts(id),
                })
            })
            .collect()
    }
}
