//! Runs a node's [`Replicas`] on (madsim-)tokio: ticks from a timer, frames
//! from the [`Transport`], proposals from the front-ends through a
//! [`ReplicasHandle`]; each proposal is answered when its acks level is
//! reached.
//!
//! The runner is one task that owns the groups, so nothing is locked. It
//! does the groups' disk work (writes and syncs) in place: give it a
//! runtime of its own ([`spawn_on_thread`]) so that the front-ends' event
//! loops never wait for a sync.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use weir_log::LogError;

use crate::group::{CommitStatus, ProposeError};
use crate::replicas::Replicas;
use crate::transport::{Inbound, Transport};

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
}

enum Command {
    Propose {
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
        reply: oneshot::Sender<Result<Appended, ProduceError>>,
    },
    Status {
        reply: oneshot::Sender<Vec<GroupStatus>>,
    },
}

/// Talks to a running node's groups.
#[derive(Clone, Debug)]
pub struct ReplicasHandle {
    commands: mpsc::Sender<Command>,
}

impl ReplicasHandle {
    /// Produces a producer's batch to `group` (this node must lead it).
    pub async fn produce(
        &self,
        group: u64,
        batch: Vec<u8>,
        acks: Acks,
    ) -> Result<Appended, ProduceError> {
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
        answer.await.map_err(|_| ProduceError::Stopped)?
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

struct Runner {
    replicas: Replicas,
    transport: Transport,
    config: RunnerConfig,
    waiters: Vec<Waiter>,
    ticks: u64,
}

/// Starts the runner as a task of the current runtime.
pub fn spawn(
    replicas: Replicas,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    config: RunnerConfig,
) -> (ReplicasHandle, JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let runner = Runner {
        replicas,
        transport,
        config,
        waiters: Vec::new(),
        ticks: 0,
    };
    let task = tokio::spawn(runner.run(commands_rx, inbound));
    (
        ReplicasHandle {
            commands: commands_tx,
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
                    Some((from, envelopes)) => self.replicas.receive(from, envelopes),
                    None => break,
                },
                _ = timer.tick() => {
                    self.ticks += 1;
                    self.replicas.tick();
                }
            }
            // Whatever else is queued joins this turn's writes and syncs.
            while let Ok(command) = commands.try_recv() {
                self.command(command);
            }
            while let Ok((from, envelopes)) = inbound.try_recv() {
                self.replicas.receive(from, envelopes);
            }
            if !self.turn() {
                break;
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(ProduceError::Stopped));
        }
    }

    /// Persists, sends and answers; false if the node's storage failed
    /// (the node must stop: its disk is in an unknown state).
    fn turn(&mut self) -> bool {
        if let Err((group, error)) = self.replicas.process() {
            tracing::error!(group, %error, "replication storage failed; the node stops replicating");
            return false;
        }
        for (peer, envelopes) in self.replicas.take_outbox() {
            self.transport.send(peer, &envelopes);
        }
        self.answer_waiters();
        true
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Propose {
                group,
                batch,
                acks,
                reply,
            } => self.propose(group, &batch, acks, reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn propose(
        &mut self,
        group: u64,
        batch: &[u8],
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
                })
            })
            .collect()
    }
}
