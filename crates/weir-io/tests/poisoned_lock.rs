//! A poisoned lock aborts the process (crash-first): the test runs itself
//! again as a child that poisons a lock and takes it, and checks that the
//! child died of SIGABRT rather than going on or merely panicking.

use std::process::Command;
use std::sync::{Arc, Mutex, RwLock};

const CHILD: &str = "WEIR_POISONED_LOCK_CHILD";

/// In the child: poisons a lock of the kind named by the environment, then
/// takes it through weir-io's helper. Exiting normally means no abort.
fn poison_and_take(kind: &str) {
    let mutex = Arc::new(Mutex::new(0u32));
    let rwlock = Arc::new(RwLock::new(0u32));
    let (held_mutex, held_rwlock) = (Arc::clone(&mutex), Arc::clone(&rwlock));
    let _ = std::thread::spawn(move || {
        let _mutex = held_mutex.lock();
        let _rwlock = held_rwlock.write();
        panic!("a bug inside a critical section");
    })
    .join();
    match kind {
        "mutex" => drop(weir_io::sync::lock(&mutex)),
        "read" => drop(weir_io::sync::read(&rwlock)),
        "write" => drop(weir_io::sync::write(&rwlock)),
        other => panic!("unknown kind {other}"),
    }
    std::process::exit(0);
}

#[test]
fn a_poisoned_lock_aborts_the_process() {
    if let Ok(kind) = std::env::var(CHILD) {
        poison_and_take(&kind);
    }
    for kind in ["mutex", "read", "write"] {
        let output = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "a_poisoned_lock_aborts_the_process",
                "--nocapture",
            ])
            .env(CHILD, kind)
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                output.status.signal(),
                Some(libc::SIGABRT),
                "{kind}: the child ended with {:?}; stderr: {stderr}",
                output.status
            );
        }
        assert!(!output.status.success(), "{kind}: the child went on");
        assert!(stderr.contains("is poisoned"), "{kind}: {stderr}");
    }
}
