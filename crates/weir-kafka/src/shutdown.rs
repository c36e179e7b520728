//! The shutdown signal of a server's tasks.
//!
//! A flag raised once and never lowered, which any number of tasks wait
//! on. It replaces tokio's `watch` channel for this: a `watch` receiver
//! waits on one of eight wakers picked by a thread-local generator that
//! tokio seeds from a process-wide counter, so a send wakes its waiters in
//! an order that differs between two runs of one simulation seed in one
//! process (madsim's determinism check found it). A [`Shutdown`] wakes
//! its waiters in the order they began to wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A shared shutdown signal; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal, waking every task waiting on it; later waits
    /// return at once.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether the signal was raised.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Returns once the signal is raised (at once if it already was).
    pub async fn requested(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a request between the read
        // and the wait still wakes this waiter.
        notified.as_mut().enable();
        if self.is_requested() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_and_later_waits_return_at_once() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_requested());
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let shutdown = shutdown.clone();
                tokio::spawn(async move { shutdown.requested().await })
            })
            .collect();
        tokio::task::yield_now().await;
        shutdown.request();
        for waiter in waiters {
            waiter.await.expect("a waiter");
        }
        assert!(shutdown.is_requested());
        shutdown.requested().await;
    }

    #[tokio::test]
    async fn a_wait_that_never_sees_a_request_does_not_return() {
        let shutdown = Shutdown::new();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), shutdown.requested()).await;
        assert!(waited.is_err(), "returned without a request");
    }
}
