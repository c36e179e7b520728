//! Model checking of the group commit with `loom`: every interleaving of
//! appenders, syncs, failures and truncations. Runs only with
//! `RUSTFLAGS="--cfg loom"` (see `cargo xtask ci`), in a target directory of
//! its own.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use weir_log::commit::{CommitError, GroupCommit};

/// A log: the end of what was written, and what a sync made durable. Its
/// lock stands for the partition's, under which a write reads the commit
/// epoch and a truncation runs.
#[derive(Default)]
struct Log {
    lock: Mutex<()>,
    written: AtomicU64,
    durable: AtomicU64,
    syncs: AtomicU64,
}

impl Log {
    /// Writes one record under the log's lock; returns the log end after
    /// it and the commit epoch it was written in.
    fn write_locked(&self, commit: &GroupCommit) -> (u64, u64) {
        let _guard = self.lock.lock().expect("log lock");
        (self.write(), commit.epoch())
    }

    /// Writes one record and returns the log end after it.
    fn write(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Syncs everything written so far, or fails.
    fn sync(&self, fail: bool) -> Result<u64, &'static str> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if fail {
            return Err("EIO");
        }
        let covered = self.written.load(Ordering::SeqCst);
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(covered)
    }
}

#[test]
fn an_append_returns_only_after_a_sync_that_covers_it() {
    loom::model(|| {
        let commit = Arc::new(GroupCommit::new(0));
        let log = Arc::new(Log::default());
        let appender = |commit: Arc<GroupCommit>, log: Arc<Log>| {
            move || {
                let target = log.write();
                commit
                    .wait_durable(target, 0, || log.sync(false))
                    .expect("no sync fails here");
                assert!(log.durable.load(Ordering::SeqCst) >= target);
            }
        };
        let first = thread::spawn(appender(commit.clone(), log.clone()));
        let second = thread::spawn(appender(commit.clone(), log.clone()));
        appender(commit.clone(), log.clone())();
        first.join().expect("first");
        second.join().expect("second");
        assert_eq!(commit.durable(), 3);
        assert!(log.syncs.load(Ordering::SeqCst) <= 3);
    });
}

#[test]
fn a_failed_sync_never_acknowledges_what_it_did_not_cover() {
    loom::model(|| {
        let commit = Arc::new(GroupCommit::new(0));
        let log = Arc::new(Log::default());
        let failing = {
            let (commit, log) = (commit.clone(), log.clone());
            thread::spawn(move || {
                let target = log.write();
                let result = commit.wait_durable(target, 0, || log.sync(true));
                if result.is_ok() {
                    assert!(log.durable.load(Ordering::SeqCst) >= target);
                }
            })
        };
        let target = log.write();
        match commit.wait_durable(target, 0, || log.sync(false)) {
            Ok(()) => assert!(log.durable.load(Ordering::SeqCst) >= target),
            Err(CommitError::Failed | CommitError::Sync(_)) => {}
        }
        failing.join().expect("failing");
        // After a failure, nothing new is ever acknowledged.
        let target = log.write();
        let late = commit.wait_durable(target, 0, || log.sync(false));
        if commit.has_failed() {
            assert_eq!(late, Err(CommitError::Failed));
        }
    });
}

#[test]
fn a_truncation_releases_waiters_whose_data_it_made_durable() {
    loom::model(|| {
        let commit = Arc::new(GroupCommit::new(0));
        let log = Arc::new(Log::default());
        let waiter = {
            let (commit, log) = (commit.clone(), log.clone());
            thread::spawn(move || {
                let (target, epoch) = log.write_locked(&commit);
                commit
                    .wait_durable(target, epoch, || log.sync(false))
                    .expect("no sync fails here");
                assert!(log.durable.load(Ordering::SeqCst) >= target);
            })
        };
        // The truncation, under the log's lock, makes everything durable
        // first, then cuts.
        {
            let _guard = log.lock.lock().expect("log lock");
            let everything = log.sync(false).expect("sync");
            commit.advance(everything);
            commit.truncated(0);
        }
        waiter.join().expect("waiter");
    });
}
