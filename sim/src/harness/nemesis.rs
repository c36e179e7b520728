//! What a seed turns on (swarm testing: each fault kind and each workload
//! feature is on for a share of the seeds, with its own rate) and the fault
//! phase, in which the nemesis injects the faults.

use std::time::Duration;

use madsim::time::{sleep, Instant};
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{CrashWeights, Faults};

use super::network::{clog, set_links, unclog};
use super::nodes::{healed_faults, restart};
use super::{count, reached, World};

/// How long the faults last.
pub(crate) const FAULT_PHASE: Duration = Duration::from_secs(20);

/// The fault kinds a seed switched on, with their rates.
#[derive(Clone, Debug)]
pub struct Swarm {
    /// Chance per nemesis step of a crash and restart.
    pub crash: f64,
    /// Chance per step of pausing the node for a while.
    pub pause: f64,
    /// Chance per step of clogging the node's links for a while.
    pub clog: f64,
    /// Chance per step of changing packet loss and latency.
    pub network: f64,
    /// Chance per request that a client drops its connection mid-request.
    pub disconnect: f64,
    /// Chance per sync that the disk fails it.
    pub sync_failure: f64,
    /// Chance per read that the disk returns a flipped bit (transient: the
    /// data on the disk is intact).
    pub read_corruption: f64,
    /// Chance per read that the disk fails it with EIO.
    pub read_error: f64,
    /// Chance per write that the disk fails it with EIO or ENOSPC.
    pub write_error: f64,
    /// Chance per write that the disk stores it with a flipped bit
    /// (persistent corruption of synced data); half as often, a write lands
    /// at another offset of the same file.
    pub write_corruption: f64,
    /// Chance per restart that the node's clock comes back earlier than
    /// it was (an NTP step, a VM restored elsewhere).
    pub clock_jump: f64,
}

impl Swarm {
    /// Picks the fault kinds of a seed: each kind is on for about half of
    /// the seeds, with its own rate.
    pub fn pick(rng: &mut Xoshiro256PlusPlus) -> Self {
        let mut kind = |on: f64, low: f64, high: f64| {
            if rng.random_bool(on) {
                rng.random_range(low..high)
            } else {
                0.0
            }
        };
        Swarm {
            crash: kind(0.7, 0.05, 0.3),
            pause: kind(0.4, 0.02, 0.15),
            clog: kind(0.4, 0.02, 0.15),
            network: kind(0.5, 0.05, 0.3),
            disconnect: kind(0.4, 0.005, 0.05),
            sync_failure: kind(0.25, 0.0005, 0.005),
            clock_jump: kind(0.4, 0.2, 0.8),
            read_corruption: kind(0.25, 0.01, 0.2),
            read_error: kind(0.25, 0.01, 0.2),
            write_error: kind(0.2, 0.0005, 0.005),
            write_corruption: kind(0.15, 0.0005, 0.005),
        }
    }

    /// The stream node's disk faults.
    pub(crate) fn stream_disk_faults(&self, weights: CrashWeights) -> Faults {
        Faults {
            write_corruption: self.write_corruption,
            write_misdirection: self.write_corruption / 2.0,
            ..self.log_disk_faults(weights)
        }
    }

    /// The log node's disk faults (no persistent corruption: the log's
    /// answers to it are tested in weir-log's own crash tests).
    pub(crate) fn log_disk_faults(&self, weights: CrashWeights) -> Faults {
        Faults {
            sync_failure: self.sync_failure,
            read_corruption: self.read_corruption,
            read_error: self.read_error,
            write_error: self.write_error / 2.0,
            no_space: self.write_error / 2.0,
            crash: weights,
            ..Faults::default()
        }
    }
}

/// The workload features a seed switched on.
#[derive(Clone, Debug)]
pub struct Features {
    /// Keys driven by churn clients against the model (0: none).
    pub churn_keys: u32,
    /// Chance that a churn batch is a MULTI/EXEC transaction.
    pub churn_transactions: f64,
    /// Chance that a pipelined batch is written in two parts.
    pub split_pipelines: f64,
    /// Chance per admin step of a BGREWRITEAOF (0: none).
    pub rewrites: f64,
    /// A publisher and a subscriber.
    pub pubsub: bool,
    /// A reader blocked in `XREAD BLOCK ... STREAMS s $`.
    pub watchers: bool,
    /// Small segments on the log node (rolls every few KiB).
    pub log_small_segments: bool,
    /// A topic with size retention, applied while it is written.
    pub log_retention: bool,
    /// A partition truncated while it is written.
    pub log_truncation: bool,
    /// Keys per churn client.
    pub keys_per_client: u32,
    /// `stream-node-max-entries` of the stream node (small values put
    /// trims and deletions at node boundaries).
    pub node_max_entries: u64,
}

impl Features {
    /// Picks the features of a seed.
    pub fn pick(rng: &mut Xoshiro256PlusPlus) -> Self {
        Features {
            churn_keys: if rng.random_bool(0.75) {
                rng.random_range(1..=3)
            } else {
                0
            },
            churn_transactions: if rng.random_bool(0.6) {
                rng.random_range(0.1..0.5)
            } else {
                0.0
            },
            split_pipelines: if rng.random_bool(0.5) {
                rng.random_range(0.1..0.5)
            } else {
                0.0
            },
            rewrites: if rng.random_bool(0.5) {
                rng.random_range(0.05..0.4)
            } else {
                0.0
            },
            pubsub: rng.random_bool(0.4),
            watchers: rng.random_bool(0.5),
            log_small_segments: rng.random_bool(0.5),
            log_retention: rng.random_bool(0.4),
            log_truncation: rng.random_bool(0.5),
            keys_per_client: if rng.random_bool(0.5) {
                1
            } else {
                rng.random_range(2..=8)
            },
            node_max_entries: if rng.random_bool(0.5) {
                100
            } else {
                rng.random_range(2..=8)
            },
        }
    }
}

/// The fault phase: the nemesis takes a step every 50 to 500 ms.
pub(crate) async fn fault_phase(world: &mut World) {
    let fault_end = Instant::now() + FAULT_PHASE;
    while Instant::now() < fault_end {
        let step = Duration::from_millis(world.rng.random_range(50..500));
        let wake = world.shared.lock().expect("shared").nemesis.clone();
        // `biased`: tokio's random polling order comes from a thread-local
        // generator that outlives a seed, which would break determinism.
        tokio::select! {
            biased;
            _ = sleep(step) => {}
            _ = wake.notified() => {}
        }
        if std::mem::take(&mut world.shared.lock().expect("shared").crash_request) {
            crash_stream_node(world, true).await;
            continue;
        }
        restart_failed_starts(world);
        if world.rng.random_bool(world.swarm.crash) {
            crash_stream_node(world, true).await;
        }
        if world.rng.random_bool(world.swarm.crash / 2.0) {
            crash_log_node(world).await;
        }
        if world.rng.random_bool(world.swarm.pause) {
            pause(world).await;
        }
        if world.rng.random_bool(world.swarm.clog) {
            clog_links(world).await;
        }
        if world.rng.random_bool(world.swarm.network) {
            let loss = world.rng.random_range(0.0..0.3);
            let high = world.rng.random_range(2..200);
            world.note(format!("network: loss {loss:.2}, latency 1..{high} ms"));
            set_links(loss, 1..high);
            world.count_fault("network");
        }
        world.check_engines();
    }
}

/// A node whose start failed on a disk error is started again, as a
/// supervisor would.
fn restart_failed_starts(world: &World) {
    if std::mem::take(&mut world.shared.lock().expect("shared").failed_start) {
        world.note("restart weir-0 after a failed start".into());
        reached(&world.shared, "start failed on a disk error");
        world.handle.kill(world.server.id());
        world.handle.restart(world.server.id());
    }
    if std::mem::take(&mut world.shared.lock().expect("shared").log_failed_start) {
        world.note("restart log-0 after a failed start".into());
        world.handle.kill(world.log_node.id());
        world.handle.restart(world.log_node.id());
    }
}

/// Power loss of the stream node, down for a moment, then a restart (with
/// the clock jumping back and flipped reads during recovery when the seed
/// says so, during the fault phase).
pub(crate) async fn crash_stream_node(world: &mut World, faults: bool) {
    let down = Duration::from_millis(world.rng.random_range(0..1000));
    world.note(format!("crash weir-0 (power loss), down {down:?}"));
    if world.shared.lock().expect("shared").rewrite_running {
        reached(&world.shared, "crash during a rewrite");
    }
    world.handle.kill(world.server.id());
    world.shared.lock().expect("shared").node = None;
    world.disk.crash();
    world.count_fault("crash");
    sleep(down).await;
    if faults && world.rng.random_bool(world.swarm.clock_jump) {
        let back = world.rng.random_range(1..5000);
        world.clock.jump_back(back);
        world.note(format!("clock of weir-0 jumps back {back} ms"));
        world.count_fault("clock jump");
    }
    let burst = faults && world.swarm.read_corruption > 0.0 && world.rng.random_bool(0.5);
    restart(world, burst).await;
    world.note(format!(
        "restart weir-0{}",
        if burst {
            " (reads flip bits during its recovery)"
        } else {
            ""
        }
    ));
    if burst {
        world.count_fault("read burst at recovery");
    }
}

/// Power loss of the log node; half the time it is closed cleanly first
/// (everything synced, a checkpoint that lets the next open skip the
/// scan), so the clean path after truncations, rolls and retention is
/// tested too.
pub(crate) async fn crash_log_node(world: &mut World) {
    let down = Duration::from_millis(world.rng.random_range(0..1000));
    let broker = world.shared.lock().expect("shared").log_broker.clone();
    if let Some(broker) = broker.filter(|_| world.rng.random_bool(0.5)) {
        let closed = broker.close();
        world.note(format!("close log-0 cleanly: {closed:?}"));
        if closed.is_ok() {
            reached(&world.shared, "log closed cleanly, then power lost");
        }
    }
    world.note(format!("crash log-0 (power loss), down {down:?}"));
    {
        let mut shared = world.shared.lock().expect("shared");
        let truncations = shared.log_history.truncations.len();
        if truncations > std::mem::replace(&mut shared.log_truncations_at_crash, truncations) {
            count(&mut shared.coverage, "log reopened after truncations");
        }
    }
    world.handle.kill(world.log_node.id());
    world.shared.lock().expect("shared").log_broker = None;
    world.log_disk.crash();
    world.count_fault("crash");
    sleep(down).await;
    world.handle.restart(world.log_node.id());
}

async fn pause(world: &mut World) {
    let pause = Duration::from_millis(world.rng.random_range(10..2000));
    world.note(format!("pause weir-0 for {pause:?}"));
    world.handle.pause(world.server.id());
    world.count_fault("pause");
    sleep(pause).await;
    world.handle.resume(world.server.id());
}

async fn clog_links(world: &mut World) {
    let duration = Duration::from_millis(world.rng.random_range(10..3000));
    let direction = world.rng.random_range(0..3);
    world.note(format!(
        "clog weir-0 ({}) for {duration:?}",
        ["both ways", "in", "out"][direction]
    ));
    clog(&world.server, direction);
    world.count_fault("clog");
    sleep(duration).await;
    unclog(&world.server);
}

/// Heal: no more faults; a node refusing writes after a failed sync is
/// restarted, as an operator would; the producers stop.
pub(crate) async fn heal(world: &mut World) {
    world.note("heal: faults stop, producers stop".into());
    world.disk.set_faults(healed_faults(world.weights));
    world.log_disk.set_faults(healed_faults(world.weights));
    set_links(0.0, 1..10);
    unclog(&world.server);
    world.shared.lock().expect("shared").healed = true;
    world.note("restart log-0 (a clean process restart, to clear failed partitions)".into());
    world.handle.kill(world.log_node.id());
    {
        let mut shared = world.shared.lock().expect("shared");
        shared.log_broker = None;
        shared.log_failed_start = false;
    }
    world.handle.restart(world.log_node.id());
    let failed_start = std::mem::take(&mut world.shared.lock().expect("shared").failed_start);
    let misconf = failed_start
        || world
            .shared
            .lock()
            .expect("shared")
            .node
            .as_ref()
            .is_some_and(|node| node.lock().last_write_error.is_some());
    if misconf || world.handle.is_exit(world.server.id()) {
        world.note("restart weir-0 to clear a failed sync".into());
        world.handle.kill(world.server.id());
        world.shared.lock().expect("shared").node = None;
        world.disk.crash();
        world.handle.restart(world.server.id());
    }
    world.shared.lock().expect("shared").stop_producers = true;
}
