//! The healed phase and the final checks: the final reads of every
//! workload, the invariants of [`crate::check`], the churn models
//! ([`crate::model`]) and the engines' own checks; then one more power loss
//! of each node and the same checks on what recovery brings back (with
//! `appendfsync always` and a synced log, exactly the state served before).

use std::time::Duration;

use madsim::time::{sleep, Instant};

use super::nemesis::{crash_log_node, crash_stream_node};
use super::network::{connect, server_address};
use super::nodes::stream_final_state;
use super::workloads::{churn, log, PRODUCERS};
use super::{note, reached, World};
use crate::check::{self, FinalState, Promises, Violation};
use crate::model::{show_all, KeyModel};

/// How long the healed phase may take before liveness is judged broken.
const LIVENESS_BOUND: Duration = Duration::from_secs(120);
/// How long everything must stay done: longer than the network may still
/// hold a request a client gave up on (madsim retries a clogged link's
/// packets with a backoff of up to 10 s), since such a request may still
/// run.
const QUIESCENCE: Duration = Duration::from_secs(12);

/// Waits until everything acknowledged is processed and every churn client
/// has settled; `false` if the bound passed first.
/// Returns what was still not done when the bound passed.
pub(crate) async fn healed_phase(world: &World) -> Result<(), String> {
    let heal_start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut waiting_for = String::new();
    while heal_start.elapsed() < LIVENESS_BOUND {
        sleep(Duration::from_secs(1)).await;
        let done = match stream_final_state(&world.client_node).await {
            Ok(now) => all_done(world, &now),
            Err(error) => Err(format!("the final read of s: {error}")),
        };
        match done {
            Ok(()) => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= QUIESCENCE {
                    world.note(format!(
                        "healed phase: all processed after {:?}",
                        heal_start.elapsed()
                    ));
                    return Ok(());
                }
            }
            Err(what) => {
                quiet_since = None;
                waiting_for = what;
            }
        }
    }
    world.note(format!(
        "healed phase: bound reached, waiting for {waiting_for}"
    ));
    Err(waiting_for)
}

fn all_done(world: &World, now: &FinalState) -> Result<(), String> {
    let shared = world.shared.lock().expect("shared");
    let received = check::received(&shared.history);
    let log_done = shared.log_broker.as_ref().is_some_and(|broker| {
        log::log_final(broker, &world.features)
            .is_ok_and(|last| log::consumed_all(&last, &world.features))
    });
    let unread = now
        .entries
        .iter()
        .filter(|(id, _)| !received.contains(id))
        .count();
    let waiting = [
        (
            shared.producers_done < PRODUCERS,
            "producers to stop".to_string(),
        ),
        (
            shared.churn_done < world.features.churn_keys,
            format!(
                "{} churn clients to settle",
                world.features.churn_keys - shared.churn_done
            ),
        ),
        (!log_done, "the log consumer to catch up".to_string()),
        (
            !now.pending.is_empty(),
            format!("{} pending entries of s", now.pending.len()),
        ),
        (
            unread > 0,
            format!("{unread} entries of s no consumer received"),
        ),
    ];
    let waiting: Vec<String> = waiting
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| what)
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join(", "))
    }
}

/// The final reads and checks, then a power loss of each node and the
/// checks again.
pub(crate) async fn final_checks(world: &mut World, healed: Result<(), String>) -> Vec<Violation> {
    world.shared.lock().expect("shared").stop_all = true;
    sleep(Duration::from_secs(1)).await;
    let (mut violations, last, promises) = stream_checks(world).await;
    if promises.liveness {
        violations.extend(churn_checks(world, promises, "after healing").await);
    }
    violations.extend(log_checks(world, "after healing"));
    violations.extend(other_checks(world));
    if let (Err(waiting_for), true) = (healed, violations.is_empty() && promises.liveness) {
        violations.push(Violation {
            invariant: "liveness",
            evidence: format!(
                "the healed phase did not finish within its bound, waiting for {waiting_for}"
            ),
        });
    }
    summarise(world);
    // One more power loss of each node: what recovery brings back must be
    // what was served.
    crash_stream_node(world, false).await;
    crash_log_node(world).await;
    let after = wait_for_stream_node(world).await;
    match (&last, after) {
        (Ok(before), Some(after)) if promises.durability => {
            if *before != after {
                violations.push(Violation {
                    invariant: "recovery-replays-the-served-state",
                    evidence: format!(
                        "stream s after a power loss of the healed node: {} entries, {} pending; before it: {} entries, {} pending",
                        after.entries.len(),
                        after.pending.len(),
                        before.entries.len(),
                        before.pending.len()
                    ),
                });
            }
            violations.extend(churn_checks(world, promises, "after one more power loss").await);
        }
        (Ok(_), None) if !world.shared.lock().expect("shared").refused_on_corruption => {
            violations.push(Violation {
                invariant: "liveness",
                evidence: "the stream node did not come back after the final power loss".into(),
            });
        }
        _ => {}
    }
    wait_for_log_node(world).await;
    violations.extend(log_checks(world, "after one more power loss"));
    violations
}

/// The stream `s`: [`check::check`] and the woken readers.
async fn stream_checks(world: &World) -> (Vec<Violation>, Result<FinalState, String>, Promises) {
    let last = stream_final_state(&world.client_node).await;
    let shared = world.shared.lock().expect("shared");
    let stats = world.disk.stats();
    let refused = shared.refused_on_corruption && shared.healed;
    let promises = Promises {
        durability: stats.write_corruptions == 0 && stats.write_misdirections == 0,
        liveness: !refused,
    };
    let mut violations = match &last {
        Ok(last) => check::check(&shared.history, last, promises),
        // The node refused to start on corruption it detected: check what
        // the clients saw before it went down.
        Err(_) if refused => check::check(&shared.history, &FinalState::default(), promises),
        Err(error) => vec![Violation {
            invariant: "liveness",
            evidence: format!("the final read failed after healing: {error}"),
        }],
    };
    if let (Ok(last), true) = (&last, promises.durability) {
        violations.extend(check::check_watched(&shared.history, last));
    }
    drop(shared);
    if refused {
        reached(&world.shared, "refused to start on detected corruption");
    }
    (violations, last, promises)
}

/// Each churned key as the node has it against its model; the violations
/// the churn clients found on the way. Both excused when the disk
/// corrupted synced data (the documented limit of durability).
async fn churn_checks(world: &World, promises: Promises, when: &str) -> Vec<Violation> {
    let (models, mut violations) = {
        let mut shared = world.shared.lock().expect("shared");
        (
            std::mem::take(&mut shared.churn_models),
            shared.churn_violations.clone(),
        )
    };
    let shared = std::sync::Arc::clone(&world.shared);
    let when = when.to_string();
    let compared = world
        .client_node
        .spawn(async move { compare_models(shared, models, when).await })
        .await;
    let (models, found) = compared.expect("the churn comparison does not panic");
    violations.extend(found);
    world.shared.lock().expect("shared").churn_models = models;
    if !promises.durability {
        if !violations.is_empty() {
            reached(&world.shared, "churn checks excused by corrupt synced data");
        }
        return Vec::new();
    }
    world
        .shared
        .lock()
        .expect("shared")
        .churn_violations
        .clear();
    violations
}

async fn compare_models(
    shared: super::SharedRef,
    mut models: Vec<KeyModel>,
    when: String,
) -> (Vec<KeyModel>, Vec<Violation>) {
    let mut violations = Vec::new();
    let Some(mut client) = connect(server_address()).await else {
        if !models.is_empty() {
            violations.push(Violation {
                invariant: "liveness",
                evidence: format!("cannot connect to read the churned keys {when}"),
            });
        }
        return (models, violations);
    };
    for model in &mut models {
        let Some(server) = churn::read_dump(&mut client, &shared, model).await else {
            violations.push(Violation {
                invariant: "liveness",
                evidence: format!("cannot read key {} {when}", model.key()),
            });
            break;
        };
        let expected = model.dump();
        if server != expected {
            violations.push(Violation {
                invariant: "churn-final-state",
                evidence: format!(
                    "key {} {when} ({} commands known to have run):\n  node  {}\n  model {}",
                    model.key(),
                    model.commands(),
                    show_all(&server),
                    show_all(&expected)
                ),
            });
        }
    }
    (models, violations)
}

/// The log node: [`log::check`] on its final read.
fn log_checks(world: &World, when: &str) -> Vec<Violation> {
    let mut shared = world.shared.lock().expect("shared");
    let Some(broker) = shared.log_broker.clone() else {
        return vec![Violation {
            invariant: "log-liveness",
            evidence: format!("the log node is not running {when}"),
        }];
    };
    log::check_log_invariants(&broker, &mut shared.engine_invariants);
    match log::log_final(&broker, &world.features) {
        Ok(last) => log::check(&shared.log_history, &last, &world.features, true),
        Err(error) => vec![Violation {
            invariant: "log-liveness",
            evidence: format!("the final read of the log failed {when}: {error}"),
        }],
    }
}

/// Pub/sub, nodes that failed to start after healing, the engines' own
/// invariant checks.
fn other_checks(world: &World) -> Vec<Violation> {
    world.check_engines();
    let shared = world.shared.lock().expect("shared");
    let mut violations = check::check_pubsub(&shared.pubsub);
    for failure in &shared.start_failures {
        violations.push(Violation {
            invariant: "node-starts",
            evidence: failure.clone(),
        });
    }
    for failure in shared.engine_invariants.iter().take(3) {
        violations.push(Violation {
            invariant: "engine-invariants",
            evidence: failure.clone(),
        });
    }
    violations
}

/// Waits (bounded) until the stream node serves the final read again.
async fn wait_for_stream_node(world: &World) -> Option<FinalState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(state) = stream_final_state(&world.client_node).await {
            return Some(state);
        }
        if world.shared.lock().expect("shared").refused_on_corruption {
            return None;
        }
        sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn wait_for_log_node(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && world.shared.lock().expect("shared").log_broker.is_none() {
        sleep(Duration::from_millis(50)).await;
    }
}

fn summarise(world: &World) {
    let summary = {
        let shared = world.shared.lock().expect("shared");
        format!(
            "log: {} appends acknowledged, {} records read, {} offset commits, {} truncations; streams: {} XADDs acknowledged, {} deliveries, {} XACKs, {} client requests interrupted; churn: {} keys, {} commands; pub/sub: {} published, {} received",
            shared.log_history.acknowledged.len(),
            shared.log_history.read.len(),
            shared.log_history.committed.len(),
            shared.log_history.truncations.len(),
            shared.history.acknowledged.len(),
            shared.history.delivered.len(),
            shared.history.acked.len(),
            shared.history.interruptions,
            shared.churn_models.len(),
            shared.churn_models.iter().map(KeyModel::commands).sum::<usize>(),
            shared.pubsub.published.len(),
            shared.pubsub.received.len(),
        )
    };
    note(&world.shared, world.started, summary);
}
