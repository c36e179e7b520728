//! Synchronisation primitives, swapped for `loom`'s under `--cfg loom`.
//!
//! Code whose interleavings are model-checked (the group commit of
//! `weir-log`, the simulated disk) takes its `Mutex`, `Condvar` and atomics
//! from here, so `cargo test` with `RUSTFLAGS="--cfg loom"` explores every
//! interleaving of them, while normal builds use `std` at no cost.

#[cfg(loom)]
pub use loom::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Locks `mutex`. A poisoned lock means another thread panicked inside a
/// critical section, which is a bug: the panic is propagated rather than the
/// half-updated state used.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(_) => panic!("a thread panicked while holding this lock"),
    }
}
