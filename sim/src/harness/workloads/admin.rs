//! The admin client: starts command-log rewrites (BGREWRITEAOF) at random
//! moments and follows each to its end, or to the crash that cuts it; now
//! and then it asks the nemesis for a power loss while one runs.

use std::time::Duration;

use madsim::time::sleep;
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::super::network::{connect, request, server_address};
use super::super::{note, reached};
use super::Context;
use crate::client::Value;

/// Starts a rewrite with chance `rate` every 50 to 500 ms; with chance
/// `crash_during` asks for a power loss while it runs.
pub(crate) async fn rewrites(
    context: Context,
    rate: f64,
    crash_during: f64,
    mut rng: Xoshiro256PlusPlus,
) {
    let shared = &context.shared;
    loop {
        sleep(Duration::from_millis(rng.random_range(50..500))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        if !rng.random_bool(rate) {
            continue;
        }
        let Some(mut client) = connect(server_address()).await else {
            continue;
        };
        match request(&mut client, shared, &["BGREWRITEAOF"]).await {
            Some(Value::Simple(_)) => {}
            _ => continue,
        }
        note(shared, context.started, "BGREWRITEAOF started".into());
        reached(shared, "rewrite started");
        shared.lock().expect("shared").rewrite_running = true;
        if rng.random_bool(crash_during) {
            sleep(Duration::from_millis(rng.random_range(0..5))).await;
            let mut state = shared.lock().expect("shared");
            state.crash_request = true;
            state.nemesis.notify_one();
        }
        follow(&context).await;
    }
}

/// Watches the node until the rewrite ends (or the node goes down).
async fn follow(context: &Context) {
    let shared = &context.shared;
    loop {
        sleep(Duration::from_millis(1)).await;
        let node = shared.lock().expect("shared").node.clone();
        let Some(node) = node else {
            // Counted by the crash ("crash during a rewrite").
            shared.lock().expect("shared").rewrite_running = false;
            return;
        };
        let running = node
            .lock()
            .db
            .store()
            .is_some_and(|store| store.rewrite_in_progress());
        if !running {
            let mut state = shared.lock().expect("shared");
            if std::mem::take(&mut state.rewrite_running) {
                drop(state);
                reached(shared, "rewrite finished");
            }
            return;
        }
    }
}
