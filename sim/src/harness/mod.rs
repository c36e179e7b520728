//! One seed of the simulation, on madsim (compiled only with `--cfg madsim`).
//!
//! Laid out as iggy's simulator is: [`network`] (addresses, connections,
//! pipelines, link faults), [`nodes`] (the stream node running the real
//! `weir-server` code and the log node running a `weir_log::Broker`, each on
//! its own [`SimDisk`] whose power loss is the node's kill), [`nemesis`]
//! (which faults and which workload features a seed turns on, and the
//! fault phase), [`workloads`] (the clients), and [`checks`] (the final
//! reads and every invariant). This module runs the phases:
//!
//! 1. **Fault phase.** The workloads run while the nemesis crashes and
//!    restarts the nodes, pauses them, clogs their links, changes packet
//!    loss and latency, makes clients hang up mid-request, and has the
//!    disks fail syncs, reads and writes, as the seed says (swarm testing).
//!    The engines' own invariant checks run after every step.
//! 2. **Heal.** Faults stop; nodes refusing writes are restarted; the
//!    producers stop.
//! 3. **Healed phase.** Consumers keep going until everything acknowledged
//!    is processed, within a bounded simulated time.
//! 4. **Check.** The final reads, the invariants of [`crate::check`] and
//!    of the churn model ([`crate::model`]); then the stream node loses
//!    power once more, recovers, and the state is checked again.
//!
//! Everything random comes from the seed: madsim's scheduler and network
//! from its runtime seed, the workload and the faults from generators
//! seeded from it, the disks from their own seeded generators.

mod checks;
mod nemesis;
mod network;
mod nodes;
mod workloads;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::Instant;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{CrashWeights, SimDisk};
use weir_log::Broker;
use weir_server::Node;

use crate::check::{History, LogHistory, PubSubHistory, Violation};
use crate::model::KeyModel;

pub use nemesis::{Features, Swarm};

/// What happened in one seed.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Requests the clients sent.
    pub operations: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// How often interesting paths were taken.
    pub coverage: BTreeMap<&'static str, u64>,
    /// The nodes' own log events, by name (filled in by the runner:
    /// [`crate::events`]).
    pub events: BTreeMap<&'static str, u64>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// The readable trace (always recorded; printed for `--seed`).
    pub trace: Vec<String>,
    /// A hash of the trace and the final state, for determinism checks.
    pub fingerprint: u64,
}

/// State shared by the supervisor, the nodes' init and the clients. madsim
/// runs everything on one thread, so a mutex is never contended.
#[derive(Default)]
pub(crate) struct Shared {
    history: History,
    trace: Vec<String>,
    operations: u64,
    faults: BTreeMap<&'static str, u64>,
    coverage: BTreeMap<&'static str, u64>,
    node: Option<Arc<Node>>,
    start_failures: Vec<String>,
    /// What the engines' own invariant checks reported.
    engine_invariants: Vec<String>,
    failed_start: bool,
    log_history: LogHistory,
    log_broker: Option<Arc<Broker>>,
    log_assignment: u64,
    log_failed_start: bool,
    /// Acknowledged truncations when the log node last lost power.
    log_truncations_at_crash: usize,
    refused_on_corruption: bool,
    pubsub: PubSubHistory,
    /// The churned keys' models, handed back when their clients stop.
    churn_models: Vec<KeyModel>,
    /// Disagreements of the churn clients with their model.
    churn_violations: Vec<Violation>,
    /// Churn clients that finished (handed their models back or gave up).
    churn_done: u32,
    /// Whether a rewrite of the command log was seen running.
    rewrite_running: bool,
    /// A client asks the nemesis for a power loss of the stream node now.
    crash_request: bool,
    /// Wakes the nemesis for a crash request.
    nemesis: Arc<tokio::sync::Notify>,
    healed: bool,
    stop_producers: bool,
    producers_done: u32,
    stop_all: bool,
}

pub(crate) type SharedRef = Arc<Mutex<Shared>>;

/// Adds a line to the seed's trace.
pub(crate) fn note(shared: &SharedRef, started: Instant, text: String) {
    let elapsed = started.elapsed();
    let mut shared = shared.lock().expect("shared state");
    shared
        .trace
        .push(format!("{:>9.3}s {text}", elapsed.as_secs_f64()));
}

/// Counts one occurrence of `key`.
pub(crate) fn count(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
    *map.entry(key).or_default() += 1;
}

/// Counts one occurrence of a coverage path.
pub(crate) fn reached(shared: &SharedRef, path: &'static str) {
    count(&mut shared.lock().expect("shared").coverage, path);
}

/// Everything a seed's run holds: its generator, what the seed turned on,
/// the disks, clocks and nodes.
pub(crate) struct World {
    handle: Handle,
    started: Instant,
    rng: Xoshiro256PlusPlus,
    swarm: Swarm,
    features: Features,
    shared: SharedRef,
    weights: CrashWeights,
    disk: Arc<SimDisk>,
    log_disk: Arc<SimDisk>,
    clock: Arc<nodes::SkewedClock>,
    server: NodeHandle,
    log_node: NodeHandle,
    client_node: NodeHandle,
}

impl World {
    fn note(&self, text: String) {
        note(&self.shared, self.started, text);
    }

    fn count_fault(&self, kind: &'static str) {
        count(&mut self.shared.lock().expect("shared").faults, kind);
    }

    /// Runs the engines' invariant checks and keeps what they report.
    fn check_engines(&self) {
        check_stream_engine(&self.shared);
        let broker = self.shared.lock().expect("shared").log_broker.clone();
        if let Some(broker) = broker {
            let mut reports = Vec::new();
            workloads::log::check_log_invariants(&broker, &mut reports);
            self.shared
                .lock()
                .expect("shared")
                .engine_invariants
                .extend(reports);
        }
    }
}

/// Runs the stream engine's invariant checks on the running node (the
/// nemesis after each step, the churn clients after each batch).
pub(crate) fn check_stream_engine(shared: &SharedRef) {
    let node = shared.lock().expect("shared").node.clone();
    let Some(node) = node else { return };
    let checked = node.lock().db.engine().check_invariants();
    if let Err(what) = checked {
        let mut shared = shared.lock().expect("shared");
        shared
            .engine_invariants
            .push(format!("stream engine: {what}"));
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64) -> SeedReport {
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(3600));
    runtime.block_on(simulate(seed))
}

/// Runs one seed twice under madsim's determinism check (every random
/// draw of the scheduler and network compared) and returns the report.
pub fn run_seed_checked(seed: u64) -> SeedReport {
    Runtime::check_determinism(seed, madsim::Config::default(), || async {
        simulate(Handle::current().seed()).await
    })
}

async fn simulate(seed: u64) -> SeedReport {
    let mut world = nodes::build(seed);
    workloads::spawn(&mut world);
    nemesis::fault_phase(&mut world).await;
    nemesis::heal(&mut world).await;
    let healed = checks::healed_phase(&world).await;
    let violations = checks::final_checks(&mut world, healed).await;
    report(&world, seed, violations)
}

fn report(world: &World, seed: u64, violations: Vec<Violation>) -> SeedReport {
    let shared = world.shared.lock().expect("shared");
    let stats = world.disk.stats();
    let log_stats = world.log_disk.stats();
    let mut coverage = shared.coverage.clone();
    coverage.insert(
        "torn write at a crash",
        stats.torn_writes + log_stats.torn_writes,
    );
    coverage.insert(
        "unsynced operations lost",
        stats.operations_lost + log_stats.operations_lost,
    );
    let mut faults = shared.faults.clone();
    faults.insert(
        "sync failure",
        stats.sync_failures + log_stats.sync_failures,
    );
    faults.insert("write corruption", stats.write_corruptions);
    faults.insert("misdirected write", stats.write_misdirections);
    faults.insert(
        "read corruption",
        stats.read_corruptions + log_stats.read_corruptions,
    );
    faults.insert("read error", stats.read_errors + log_stats.read_errors);
    faults.insert(
        "write error",
        stats.write_errors
            + stats.no_space_errors
            + log_stats.write_errors
            + log_stats.no_space_errors,
    );
    let operations = shared.operations
        + shared.log_history.acknowledged.len() as u64
        + shared.log_history.committed.len() as u64;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    shared.trace.hash(&mut hasher);
    format!("{violations:?}").hash(&mut hasher);
    SeedReport {
        seed,
        simulated: world.started.elapsed(),
        operations,
        faults,
        coverage: coverage
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .collect(),
        events: BTreeMap::new(),
        violations,
        trace: shared.trace.clone(),
        fingerprint: hasher.finish(),
    }
}

/// A generator for a task, seeded from the world's.
pub(crate) fn seeded(rng: &mut Xoshiro256PlusPlus) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(rng.random())
}
