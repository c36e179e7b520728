//! Group commit: appenders that need their data durable share one sync.
//!
//! Each appender writes its batch, then calls [`GroupCommit::wait_durable`]
//! with the log end offset after its batch. If that offset is already
//! durable it returns at once. Otherwise, if no sync is running, the caller
//! becomes the leader: it runs the sync, which makes durable everything
//! written before the sync started (possibly many appenders' batches), and
//! wakes the others. If a sync is running, the caller waits for it to end
//! and checks again; the batches written while a sync runs are covered by
//! the next one, started by one of the waiters. So with N concurrent
//! appenders a sync covers up to N batches.
//!
//! A failed sync leaves the durable state unknown: the group commit is then
//! failed for good and every waiter, present and future, gets an error until
//! the log is reopened.
//!
//! This is the one piece of the log where threads meet on a condition
//! variable; `tests/loom_group_commit.rs` model-checks it with `loom`.

use weir_io::sync::{lock, Condvar, Mutex};

/// Shared state of the group commit.
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<CommitState>,
    wakeup: Condvar,
}

#[derive(Debug)]
struct CommitState {
    /// Every offset below this is durable.
    durable: u64,
    /// A leader is syncing.
    syncing: bool,
    /// A sync failed.
    failed: bool,
    /// Incremented when the log is truncated (after it made everything
    /// durable), so waiters from before the truncation stop waiting.
    epoch: u64,
    /// Callers that asked for durability (and had to wait or lead) since
    /// the current round began.
    arrived: u64,
    /// How many had arrived in the round before.
    last_round: u64,
}

/// Why [`GroupCommit::wait_durable`] did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitError<E> {
    /// This caller led a sync, and it failed with this error.
    Sync(E),
    /// A sync failed earlier, led by another caller.
    Failed,
}

impl GroupCommit {
    /// A group commit where every offset below `durable` is durable.
    pub fn new(durable: u64) -> Self {
        Self {
            state: Mutex::new(CommitState {
                durable,
                syncing: false,
                failed: false,
                epoch: 0,
                arrived: 0,
                last_round: 0,
            }),
            wakeup: Condvar::new(),
        }
    }

    /// Every offset below this is durable.
    pub fn durable(&self) -> u64 {
        lock(&self.state).durable
    }

    /// The current truncation epoch; pass it to [`GroupCommit::wait_durable`]
    /// for data written now. It must be read under the same lock as the
    /// write it belongs to, and truncations must run under that lock too;
    /// otherwise a truncation could slip between the write and this read
    /// and the wait would return without a sync.
    pub fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }

    /// Whether a sync has failed.
    pub fn has_failed(&self) -> bool {
        lock(&self.state).failed
    }

    /// Returns once every offset below `target` is durable, syncing if need
    /// be. `sync` makes durable everything written before it was called and
    /// returns the offset below which everything is then durable. `epoch` is
    /// [`GroupCommit::epoch`] read when the data was written.
    pub fn wait_durable<E>(
        &self,
        target: u64,
        epoch: u64,
        sync: impl FnOnce() -> Result<u64, E>,
    ) -> Result<(), CommitError<E>> {
        {
            let mut state = lock(&self.state);
            if state.epoch != epoch || state.durable >= target {
                return Ok(());
            }
            state.arrived += 1;
        }
        self.wait_counted(target, epoch, sync)
    }

    /// How many callers have asked for durability since the current round
    /// began (a leader included), and how many did in the round before. A
    /// leader that sees fewer now than last time may give the others a
    /// moment to write their batches so that its sync covers them too (see
    /// `Partition::sync_now`); correctness does not depend on it.
    pub fn participants(&self) -> (u64, u64) {
        let state = lock(&self.state);
        (state.arrived, state.last_round)
    }

    /// Starts a new round: the leader calls it when it takes what its sync
    /// will cover. Callers that arrive from now on wait for the next sync.
    pub fn begin_round(&self) {
        let mut state = lock(&self.state);
        state.last_round = state.arrived;
        state.arrived = 0;
    }

    fn wait_counted<E>(
        &self,
        target: u64,
        epoch: u64,
        sync: impl FnOnce() -> Result<u64, E>,
    ) -> Result<(), CommitError<E>> {
        let mut sync = Some(sync);
        let mut state = lock(&self.state);
        loop {
            if state.epoch != epoch {
                // The log was truncated, and made everything written before
                // the truncation durable first.
                return Ok(());
            }
            if state.durable >= target {
                return Ok(());
            }
            if state.failed {
                return Err(CommitError::Failed);
            }
            if state.syncing {
                state = match self.wakeup.wait(state) {
                    Ok(guard) => guard,
                    Err(_) => panic!("a thread panicked while holding the group-commit lock"),
                };
                continue;
            }
            // Become the leader. Each caller leads at most once: a sync
            // covers everything written before it started, which includes
            // this caller's data.
            let Some(sync) = sync.take() else {
                unreachable!("a leader's own sync covers its data");
            };
            state.syncing = true;
            let leader_epoch = state.epoch;
            drop(state);
            let guard = LeaderGuard { commit: self };
            let result = sync();
            std::mem::forget(guard);
            state = lock(&self.state);
            state.syncing = false;
            let outcome = match result {
                // A truncation during the sync made its result stale: the
                // truncation made everything durable itself.
                Ok(durable) if state.epoch == leader_epoch => {
                    state.durable = state.durable.max(durable);
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(error) => {
                    state.failed = true;
                    Err(CommitError::Sync(error))
                }
            };
            self.wakeup.notify_all();
            outcome?;
            // The sync covered this caller's data unless the log was
            // truncated meanwhile; loop to check.
        }
    }

    /// Records that everything below `durable` was made durable outside
    /// [`GroupCommit::wait_durable`] (a flush under the log's lock).
    pub fn advance(&self, durable: u64) {
        let mut state = lock(&self.state);
        state.durable = state.durable.max(durable);
        self.wakeup.notify_all();
    }

    /// Marks the group commit failed, waking every waiter with an error.
    pub fn fail(&self) {
        let mut state = lock(&self.state);
        state.failed = true;
        self.wakeup.notify_all();
    }

    /// After a truncation to `durable` (which the caller first made durable
    /// in full): starts a new epoch, so that waiters from before it return.
    pub fn truncated(&self, durable: u64) {
        let mut state = lock(&self.state);
        state.durable = durable;
        state.epoch += 1;
        self.wakeup.notify_all();
    }
}

/// Marks the group commit failed if the leader's sync panics, so that the
/// waiters do not wait forever.
struct LeaderGuard<'a> {
    commit: &'a GroupCommit,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.commit.state);
        state.syncing = false;
        state.failed = true;
        self.commit.wakeup.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn an_already_durable_target_needs_no_sync() {
        let commit = GroupCommit::new(10);
        let result: Result<(), CommitError<()>> =
            commit.wait_durable(10, 0, || panic!("no sync needed"));
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_failed_sync_fails_everyone_after() {
        let commit = GroupCommit::new(0);
        assert_eq!(
            commit.wait_durable(5, 0, || Err("EIO")),
            Err(CommitError::Sync("EIO"))
        );
        assert_eq!(
            commit.wait_durable(5, 0, || -> Result<u64, &str> {
                panic!("must not sync again")
            }),
            Err(CommitError::Failed)
        );
        assert!(commit.has_failed());
    }

    #[test]
    fn a_panicking_leader_fails_the_commit_instead_of_hanging() {
        let commit = Arc::new(GroupCommit::new(0));
        let leader = Arc::clone(&commit);
        let panicked = std::thread::spawn(move || {
            let _ = leader.wait_durable(1, 0, || -> Result<u64, ()> { panic!("sync bug") });
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(
            commit.wait_durable(1, 0, || Ok::<u64, ()>(1)),
            Err(CommitError::Failed)
        );
    }

    #[test]
    fn concurrent_appenders_share_syncs() {
        const THREADS: u64 = 8;
        const ROUNDS: u64 = 200;
        let commit = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (commit, written, syncs) = (commit.clone(), written.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let target = written.fetch_add(1, Ordering::SeqCst) + 1;
                        commit
                            .wait_durable(target, 0, || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                let covered = written.load(Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                Ok::<u64, ()>(covered)
                            })
                            .expect("sync");
                        assert!(commit.durable() >= target);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < THREADS * ROUNDS, "{syncs} syncs: no sharing at all");
    }

    #[test]
    fn a_truncation_releases_waiters_of_the_old_epoch() {
        let commit = GroupCommit::new(0);
        commit.truncated(3);
        assert_eq!(commit.epoch(), 1);
        let result: Result<(), CommitError<()>> =
            commit.wait_durable(100, 0, || panic!("old epoch: no sync"));
        assert_eq!(result, Ok(()));
    }
}
