//! Synchronisation primitives, swapped for `loom`'s under `--cfg loom`.
//!
//! Code whose interleavings are model-checked (the group commit of
//! `weir-log`, the simulated disk) takes its `Mutex`, `Condvar` and atomics
//! from here, so `cargo test` with `RUSTFLAGS="--cfg loom"` explores every
//! interleaving of them, while normal builds use `std` at no cost.

#[cfg(loom)]
pub use loom::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(not(loom))]
pub use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Locks `mutex`.
///
/// A poisoned lock means a thread panicked inside a critical section: a
/// bug, after which the state the lock guards may be half-updated. weir is
/// crash-first there, everywhere: the process aborts (after saying so on
/// stderr), so that nothing half-updated is used or written, and the next
/// start recovers from what is durable. A panic would not do: an async
/// runtime catches a task's panic and goes on, and the other users of the
/// lock would each fail in turn, some after writing.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(_) => poisoned("a mutex"),
    }
}

/// Takes `lock` for reading; a poisoned lock aborts, as with [`lock`].
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match lock.read() {
        Ok(guard) => guard,
        Err(_) => poisoned("a read-write lock"),
    }
}

/// Takes `lock` for writing; a poisoned lock aborts, as with [`lock`].
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match lock.write() {
        Ok(guard) => guard,
        Err(_) => poisoned("a read-write lock"),
    }
}

#[cold]
fn poisoned(what: &str) -> ! {
    eprintln!(
        "weir: {what} is poisoned (a thread panicked while holding it); \
         aborting rather than using what it guards"
    );
    std::process::abort()
}
