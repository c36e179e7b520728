//! One seed of the simulation, on madsim (compiled only with `--cfg madsim`).
//!
//! A run has three simulated parts:
//!
//! 1. **Fault phase.** A `weir` node (the real `weir-server` code on
//!    madsim's network and time, its command log on a [`SimDisk`] with
//!    `appendfsync always`) serves producers and consumers running on a
//!    client node over RESP. A fault injector, whose fault kinds and rates
//!    the seed picks (swarm testing), crashes and restarts the node (a kill
//!    is a power loss for its disk), pauses it, clogs its links, adds packet
//!    loss and latency spikes, and makes clients drop their connections in
//!    the middle of requests; the disk fails syncs when the seed says so.
//! 2. **Healed phase.** Faults stop, the node is restarted clean if it was
//!    down or refusing writes, producers stop, and consumers keep reading,
//!    claiming and acknowledging until every acknowledged entry is
//!    processed, within a bounded simulated time.
//! 3. **Check.** The final stream and PEL are read and every invariant of
//!    [`crate::check`] is checked against what the clients saw.
//!
//! Everything random comes from the seed: madsim's scheduler and network
//! from its runtime seed, the workload and the faults from a generator
//! seeded from it, the disk from its own seeded generator.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::{sleep, timeout, Instant};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::net::TcpStream;
use weir_io::{Clock, CrashWeights, Faults, SimDisk, Storage, SystemClock};
use weir_server::{Node, Settings};

use weir_log::{Broker, BrokerConfig, BrokerError, Record, TopicConfig};

use crate::check::{self, parse_id, FinalState, History, Id, LogFinal, LogHistory, Violation};
use crate::client::{Client, Value};

const SERVER_IP: [u8; 4] = [10, 0, 0, 1];
const LOG_IP: [u8; 4] = [10, 0, 0, 3];
const TOPIC: &str = "events";
const GROUP: &str = "g";
const LOG_PARTITIONS: u32 = 2;
const CLIENT_IP: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 6379;
const FAULT_PHASE: Duration = Duration::from_secs(20);
const LIVENESS_BOUND: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const QUIESCENCE: Duration = Duration::from_secs(12);
const PRODUCERS: u32 = 3;
const CONSUMERS: u32 = 2;

/// The fault kinds a seed switched on, with their rates.
#[derive(Clone, Debug)]
pub struct Swarm {
    /// Chance per injector step of a crash and restart.
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
}

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
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// The readable trace (always recorded; printed for `--seed`).
    pub trace: Vec<String>,
    /// A hash of the trace and the final state, for determinism checks.
    pub fingerprint: u64,
}

/// The node's clock: the simulated time of day plus an offset that the
/// fault injector moves backwards.
#[derive(Debug, Default)]
struct SkewedClock {
    offset_ms: AtomicI64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        let now = SystemClock.now_ms() as i64 + self.offset_ms.load(Ordering::SeqCst);
        now.max(0) as u64
    }
}

/// State shared by the supervisor, the node's init and the clients. madsim
/// runs everything on one thread, so a mutex is never contended.
#[derive(Default)]
struct Shared {
    history: History,
    trace: Vec<String>,
    operations: u64,
    faults: BTreeMap<&'static str, u64>,
    coverage: BTreeMap<&'static str, u64>,
    node: Option<Arc<Node>>,
    start_failures: Vec<String>,
    /// What the engines' own invariant checks reported during the run.
    engine_invariants: Vec<String>,
    failed_start: bool,
    log_history: LogHistory,
    log_broker: Option<Arc<Broker>>,
    log_assignment: u64,
    log_failed_start: bool,
    refused_on_corruption: bool,
    healed: bool,
    stop_producers: bool,
    producers_done: u32,
    stop_all: bool,
}

type SharedRef = Arc<Mutex<Shared>>;

fn note(shared: &SharedRef, started: Instant, text: String) {
    let elapsed = started.elapsed();
    let mut shared = shared.lock().expect("shared state");
    shared
        .trace
        .push(format!("{:>9.3}s {text}", elapsed.as_secs_f64()));
}

fn count(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
    *map.entry(key).or_default() += 1;
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
    let handle = Handle::current();
    let started = Instant::now();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5715_eed5);
    let swarm = Swarm::pick(&mut rng);
    let shared: SharedRef = Arc::default();
    note(&shared, started, format!("seed {seed}, swarm {swarm:?}"));

    let weights = CrashWeights {
        lose_all: rng.random_range(0..4),
        keep_prefix: rng.random_range(0..4),
        tear: rng.random_range(1..4),
    };
    let disk_faults = Faults {
        sync_failure: swarm.sync_failure,
        read_corruption: swarm.read_corruption,
        read_error: swarm.read_error,
        write_error: swarm.write_error / 2.0,
        no_space: swarm.write_error / 2.0,
        write_corruption: swarm.write_corruption,
        write_misdirection: swarm.write_corruption / 2.0,
        crash: weights,
        ..Faults::default()
    };
    let disk = SimDisk::with_faults(rng.random(), disk_faults);

    let clock = Arc::new(SkewedClock::default());
    let server = start_server(&handle, &disk, &clock, &shared, started);
    let log_faults = Faults {
        sync_failure: swarm.sync_failure,
        read_corruption: swarm.read_corruption,
        read_error: swarm.read_error,
        write_error: swarm.write_error / 2.0,
        no_space: swarm.write_error / 2.0,
        crash: weights,
        ..Faults::default()
    };
    let log_disk = SimDisk::with_faults(rng.random(), log_faults);
    let log_node = start_log_node(&handle, &log_disk, &clock, &shared, rng.random(), started);
    let client_node = handle
        .create_node()
        .name("clients")
        .ip(CLIENT_IP.into())
        .build();
    let address = SocketAddr::from((SERVER_IP, PORT));

    // The workload.
    // The clients run on their own (a dropped madsim handle detaches); they
    // stop through the flags in `Shared`.
    for producer in 0..PRODUCERS {
        let (shared, seed) = (Arc::clone(&shared), rng.random());
        let disconnect = swarm.disconnect;
        client_node.spawn(async move {
            produce(producer, address, shared, seed, disconnect, started).await;
        });
    }
    for consumer in 0..CONSUMERS {
        let (shared, seed) = (Arc::clone(&shared), rng.random());
        let disconnect = swarm.disconnect;
        client_node.spawn(async move {
            consume(consumer, address, shared, seed, disconnect, started).await;
        });
    }

    // The fault phase.
    let net = NetSim::current();
    let fault_end = Instant::now() + FAULT_PHASE;
    while Instant::now() < fault_end {
        sleep(Duration::from_millis(rng.random_range(50..500))).await;
        if std::mem::take(&mut shared.lock().expect("shared").failed_start) {
            note(
                &shared,
                started,
                "restart weir-0 after a failed start".into(),
            );
            count(
                &mut shared.lock().expect("shared").coverage,
                "start failed on a disk error",
            );
            handle.kill(server.id());
            handle.restart(server.id());
        }
        if rng.random_bool(swarm.crash) {
            let down = Duration::from_millis(rng.random_range(0..1000));
            note(
                &shared,
                started,
                format!("crash weir-0 (power loss), down {down:?}"),
            );
            handle.kill(server.id());
            disk.crash();
            count(&mut shared.lock().expect("shared").faults, "crash");
            sleep(down).await;
            if rng.random_bool(swarm.clock_jump) {
                let back = rng.random_range(1..5000);
                clock.offset_ms.fetch_sub(back, Ordering::SeqCst);
                note(
                    &shared,
                    started,
                    format!("clock of weir-0 jumps back {back} ms"),
                );
                count(&mut shared.lock().expect("shared").faults, "clock jump");
            }
            let burst = swarm.read_corruption > 0.0 && rng.random_bool(0.5);
            restart(&handle, &server, &disk, burst).await;
            note(
                &shared,
                started,
                format!(
                    "restart weir-0{}",
                    if burst {
                        " (reads flip bits during its recovery)"
                    } else {
                        ""
                    }
                ),
            );
            if burst {
                count(
                    &mut shared.lock().expect("shared").faults,
                    "read burst at recovery",
                );
            }
        }
        if std::mem::take(&mut shared.lock().expect("shared").log_failed_start) {
            note(
                &shared,
                started,
                "restart log-0 after a failed start".into(),
            );
            handle.kill(log_node.id());
            handle.restart(log_node.id());
        }
        if rng.random_bool(swarm.crash / 2.0) {
            let down = Duration::from_millis(rng.random_range(0..1000));
            note(
                &shared,
                started,
                format!("crash log-0 (power loss), down {down:?}"),
            );
            handle.kill(log_node.id());
            shared.lock().expect("shared").log_broker = None;
            log_disk.crash();
            count(&mut shared.lock().expect("shared").faults, "crash");
            sleep(down).await;
            handle.restart(log_node.id());
        }
        if rng.random_bool(swarm.pause) {
            let pause = Duration::from_millis(rng.random_range(10..2000));
            note(&shared, started, format!("pause weir-0 for {pause:?}"));
            handle.pause(server.id());
            count(&mut shared.lock().expect("shared").faults, "pause");
            sleep(pause).await;
            handle.resume(server.id());
        }
        if rng.random_bool(swarm.clog) {
            let clog = Duration::from_millis(rng.random_range(10..3000));
            let direction = rng.random_range(0..3);
            note(
                &shared,
                started,
                format!(
                    "clog weir-0 ({}) for {clog:?}",
                    ["both ways", "in", "out"][direction]
                ),
            );
            match direction {
                0 => net.clog_node(server.id()),
                1 => net.clog_node_in(server.id()),
                _ => net.clog_node_out(server.id()),
            }
            count(&mut shared.lock().expect("shared").faults, "clog");
            sleep(clog).await;
            net.unclog_node(server.id());
        }
        if rng.random_bool(swarm.network) {
            let loss = rng.random_range(0.0..0.3);
            let high = rng.random_range(2..200);
            note(
                &shared,
                started,
                format!("network: loss {loss:.2}, latency 1..{high} ms"),
            );
            net.update_config(|config| {
                config.packet_loss_rate = loss;
                config.send_latency = Duration::from_millis(1)..Duration::from_millis(high);
            });
            count(&mut shared.lock().expect("shared").faults, "network");
        }
    }

    // Heal: no more faults; a node refusing writes after a failed sync is
    // restarted, as an operator would.
    note(&shared, started, "heal: faults stop, producers stop".into());
    disk.set_faults(Faults {
        crash: weights,
        ..Faults::default()
    });
    net.update_config(|config| {
        config.packet_loss_rate = 0.0;
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(10);
    });
    net.unclog_node(server.id());
    shared.lock().expect("shared").healed = true;
    log_disk.set_faults(Faults {
        crash: weights,
        ..Faults::default()
    });
    note(
        &shared,
        started,
        "restart log-0 (a clean process restart, to clear failed partitions)".into(),
    );
    handle.kill(log_node.id());
    shared.lock().expect("shared").log_broker = None;
    shared.lock().expect("shared").log_failed_start = false;
    handle.restart(log_node.id());
    let failed_start = std::mem::take(&mut shared.lock().expect("shared").failed_start);
    let misconf = failed_start
        || shared
            .lock()
            .expect("shared")
            .node
            .as_ref()
            .is_some_and(|node| node.lock().last_write_error.is_some());
    if misconf || handle.is_exit(server.id()) {
        note(
            &shared,
            started,
            "restart weir-0 to clear a failed sync".into(),
        );
        handle.kill(server.id());
        disk.crash();
        handle.restart(server.id());
    }
    shared.lock().expect("shared").stop_producers = true;

    // The healed phase: wait until everything acknowledged is processed.
    let heal_start = Instant::now();
    let mut healed = false;
    let mut quiet_since: Option<Instant> = None;
    while heal_start.elapsed() < LIVENESS_BOUND {
        sleep(Duration::from_secs(1)).await;
        let Ok(now) = final_state(address, &client_node).await else {
            continue;
        };
        // Done when no producer has a request in flight, nothing is
        // pending, and consumers received every entry in the stream.
        let shared = shared.lock().expect("shared");
        let received = check::received(&shared.history);
        // It must stay so for longer than the network may still hold a
        // request that a client gave up on (madsim retries a clogged
        // link's packets with a backoff of up to 10 s), since such a
        // request may still run.
        let log_done = shared.log_broker.as_ref().is_some_and(|broker| {
            log_final(broker).is_ok_and(|last| {
                (0..LOG_PARTITIONS).all(|partition| {
                    let length = last
                        .records
                        .iter()
                        .filter(|(at, _, _)| *at == partition)
                        .count() as u64;
                    last.committed.get(&partition).copied().unwrap_or(0) == length
                })
            })
        });
        if shared.producers_done == PRODUCERS
            && log_done
            && now.pending.is_empty()
            && now.entries.iter().all(|(id, _)| received.contains(id))
        {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIESCENCE {
                healed = true;
                break;
            }
        } else {
            quiet_since = None;
        }
    }
    note(
        &shared,
        started,
        format!(
            "healed phase: {} after {:?}",
            if healed {
                "all processed"
            } else {
                "bound reached"
            },
            heal_start.elapsed()
        ),
    );
    shared.lock().expect("shared").stop_all = true;
    sleep(Duration::from_secs(1)).await;

    // The final reads.
    let last = final_state(address, &client_node).await;
    let mut shared_state = shared.lock().expect("shared");
    let stats = disk.stats();
    let refused = shared_state.refused_on_corruption && shared_state.healed;
    let promises = check::Promises {
        durability: stats.write_corruptions == 0 && stats.write_misdirections == 0,
        liveness: !refused,
    };
    let mut violations = match &last {
        Ok(last) => check::check(&shared_state.history, last, promises),
        Err(_) if refused => {
            // The node refused to start on corruption it detected: check
            // what the clients saw before it went down.
            check::check(&shared_state.history, &FinalState::default(), promises)
        }
        Err(error) => vec![Violation {
            invariant: "liveness",
            evidence: format!("the final read failed after healing: {error}"),
        }],
    };
    let log_summary = format!(
        "log: {} appends acknowledged, {} records read, {} offset commits; streams: {} XADDs acknowledged, {} deliveries, {} XACKs, {} client requests interrupted",
        shared_state.log_history.acknowledged.len(),
        shared_state.log_history.read.len(),
        shared_state.log_history.committed.len(),
        shared_state.history.acknowledged.len(),
        shared_state.history.delivered.len(),
        shared_state.history.acked.len(),
        shared_state.history.interruptions
    );
    let mut trace = shared_state.trace.clone();
    trace.push(format!(
        "{:>9.3}s {log_summary}",
        started.elapsed().as_secs_f64()
    ));
    let operations = shared_state.operations
        + shared_state.log_history.acknowledged.len() as u64
        + shared_state.log_history.committed.len() as u64;
    match shared_state.log_broker.as_deref().map(log_final) {
        Some(Ok(log_last)) => {
            violations.extend(check::check_log(&shared_state.log_history, &log_last, true));
        }
        Some(Err(error)) => violations.push(Violation {
            invariant: "log-liveness",
            evidence: format!("the final read of the log failed: {error}"),
        }),
        None => violations.push(Violation {
            invariant: "log-liveness",
            evidence: "the log node is not running after healing".into(),
        }),
    }
    for failure in &shared_state.start_failures {
        violations.push(Violation {
            invariant: "node-starts",
            evidence: failure.clone(),
        });
    }
    if let Some(broker) = shared_state.log_broker.clone() {
        check_log_invariants(&broker, &mut shared_state.engine_invariants);
    }
    for failure in shared_state.engine_invariants.iter().take(3) {
        violations.push(Violation {
            invariant: "log-engine-invariants",
            evidence: failure.clone(),
        });
    }
    let mut coverage = shared_state.coverage.clone();
    if refused {
        coverage.insert("refused to start on detected corruption", 1);
    }
    coverage.insert("torn write at a crash", stats.torn_writes);
    coverage.insert("unsynced operations lost", stats.operations_lost);
    let mut faults = shared_state.faults.clone();
    faults.insert("sync failure", stats.sync_failures);
    faults.insert("write corruption", stats.write_corruptions);
    faults.insert("misdirected write", stats.write_misdirections);
    faults.insert("read corruption", stats.read_corruptions);
    faults.insert("read error", stats.read_errors);
    faults.insert("write error", stats.write_errors + stats.no_space_errors);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    shared_state.trace.hash(&mut hasher);
    format!("{last:?}").hash(&mut hasher);
    SeedReport {
        seed,
        simulated: started.elapsed(),
        operations,
        faults,
        coverage,
        violations,
        trace,
        fingerprint: hasher.finish(),
    }
}

/// Restarts the node; with `burst`, half of the disk's reads return a
/// flipped bit while it recovers (the data on the disk stays intact), so
/// recovery's judgement of torn and corrupt records is put to the test.
async fn restart(handle: &Handle, server: &NodeHandle, disk: &Arc<SimDisk>, burst: bool) {
    if !burst {
        handle.restart(server.id());
        return;
    }
    let normal = disk.faults();
    disk.set_faults(Faults {
        read_corruption: 0.5,
        ..normal.clone()
    });
    handle.restart(server.id());
    // Recovery reads the log before the node serves anything.
    sleep(Duration::from_millis(5)).await;
    disk.set_faults(normal);
}

fn start_server(
    handle: &Handle,
    disk: &Arc<SimDisk>,
    clock: &Arc<SkewedClock>,
    shared: &SharedRef,
    started: Instant,
) -> NodeHandle {
    let disk = Arc::clone(disk);
    let clock = Arc::clone(clock);
    let shared = Arc::clone(shared);
    handle
        .create_node()
        .name("weir-0")
        .ip(SERVER_IP.into())
        .init(move || {
            let disk = Arc::clone(&disk);
            let clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
            let shared = Arc::clone(&shared);
            async move {
                let settings = Settings {
                    resp_addr: format!("0.0.0.0:{PORT}"),
                    appendfsync: "always".into(),
                    ..Settings::default()
                };
                let storage: Arc<dyn Storage> = Arc::new(disk.root());
                match weir_server::server::start_with_storage(settings, Some(storage), clock).await
                {
                    Ok((running, listener)) => {
                        let recovery = running.node.recovery.clone();
                        if let Some(recovery) = &recovery {
                            if recovery.truncated.is_some() {
                                count(
                                    &mut shared.lock().expect("shared").coverage,
                                    "torn tail cut at recovery",
                                );
                            }
                        }
                        note(&shared, started, format!("weir-0 up: {recovery:?}"));
                        {
                            let mut shared = shared.lock().expect("shared");
                            shared.node = Some(Arc::clone(&running.node));
                            shared.refused_on_corruption = false;
                        }
                        weir_server::server::serve(running.node, listener).await;
                    }
                    Err(error) => {
                        // With faults on, a start that fails on a disk error
                        // is retried, as a supervisor would; after healing
                        // it must start.
                        note(&shared, started, format!("weir-0 failed to start: {error}"));
                        let corrupt = matches!(
                            error,
                            weir_server::StartError::Recovery(
                                weir_stream::PersistenceError::Corrupt { .. }
                            )
                        );
                        let mut shared = shared.lock().expect("shared");
                        shared.failed_start = true;
                        if corrupt {
                            // Detected, reported, refused: what GUARANTEES.md
                            // promises for corrupt synced data.
                            shared.refused_on_corruption = true;
                        } else if shared.healed {
                            shared.start_failures.push(error.to_string());
                        }
                    }
                }
            }
        })
        .build()
}

async fn connect(address: SocketAddr) -> Option<Client<TcpStream>> {
    match timeout(REQUEST_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Some(Client::new(stream)),
        _ => None,
    }
}

/// Sends one request with a timeout; `None` when it failed (the
/// connection must then be dropped: its reply may still arrive).
async fn request(
    client: &mut Client<TcpStream>,
    shared: &SharedRef,
    args: &[&str],
) -> Option<Value> {
    shared.lock().expect("shared").operations += 1;
    match timeout(REQUEST_TIMEOUT, client.call(args)).await {
        Ok(Ok(value)) => Some(value),
        _ => None,
    }
}

async fn produce(
    producer: u32,
    address: SocketAddr,
    shared: SharedRef,
    seed: u64,
    disconnect: f64,
    started: Instant,
) {
    produce_until_stopped(
        producer,
        address,
        Arc::clone(&shared),
        seed,
        disconnect,
        started,
    )
    .await;
    shared.lock().expect("shared").producers_done += 1;
}

async fn produce_until_stopped(
    producer: u32,
    address: SocketAddr,
    shared: SharedRef,
    seed: u64,
    disconnect: f64,
    started: Instant,
) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut sequence = 0u64;
    'connection: loop {
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        let Some(mut client) = connect(address).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if shared.lock().expect("shared").stop_producers {
                return;
            }
            sequence += 1;
            let value = format!("p{producer}-{sequence}");
            shared
                .lock()
                .expect("shared")
                .history
                .sent
                .insert(value.clone(), (producer, sequence));
            if rng.random_bool(disconnect) {
                // Send, then hang up before the reply.
                let _ = timeout(
                    Duration::from_millis(1),
                    client.call(&["XADD", "s", "*", "v", &value]),
                )
                .await;
                note(
                    &shared,
                    started,
                    format!("producer {producer} hangs up during XADD {value}"),
                );
                count(
                    &mut shared.lock().expect("shared").faults,
                    "client disconnect",
                );
                continue 'connection;
            }
            match request(&mut client, &shared, &["XADD", "s", "*", "v", &value]).await {
                Some(Value::Bulk(Some(id))) => {
                    let id = parse_id(&String::from_utf8_lossy(&id)).expect("an entry ID");
                    shared
                        .lock()
                        .expect("shared")
                        .history
                        .acknowledged
                        .push((producer, sequence, value, id));
                }
                Some(_) => {
                    // MISCONF after a failed sync, or LOADING: not acknowledged.
                    sleep(Duration::from_millis(50)).await;
                }
                None => {
                    shared.lock().expect("shared").history.interruptions += 1;
                    continue 'connection;
                }
            }
            sleep(Duration::from_millis(rng.random_range(1..30))).await;
        }
    }
}

async fn consume(
    consumer: u32,
    address: SocketAddr,
    shared: SharedRef,
    seed: u64,
    disconnect: f64,
    started: Instant,
) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let name = format!("c{consumer}");
    let mut session = 0u64;
    'connection: loop {
        if shared.lock().expect("shared").stop_all {
            return;
        }
        let Some(mut client) = connect(address).await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        session += 1;
        // The group: created once; BUSYGROUP afterwards.
        match request(
            &mut client,
            &shared,
            &["XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"],
        )
        .await
        {
            Some(_) => {}
            None => continue 'connection,
        }
        loop {
            if shared.lock().expect("shared").stop_all {
                return;
            }
            let healed = shared.lock().expect("shared").stop_producers;
            if rng.random_bool(disconnect) && !healed {
                let _ = timeout(
                    Duration::from_millis(1),
                    client.call(&[
                        "XREADGROUP",
                        "GROUP",
                        "g",
                        &name,
                        "COUNT",
                        "5",
                        "STREAMS",
                        "s",
                        ">",
                    ]),
                )
                .await;
                note(
                    &shared,
                    started,
                    format!("consumer {name} hangs up during XREADGROUP"),
                );
                count(
                    &mut shared.lock().expect("shared").faults,
                    "client disconnect",
                );
                continue 'connection;
            }
            let reply = request(
                &mut client,
                &shared,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    &name,
                    "COUNT",
                    "5",
                    "BLOCK",
                    "200",
                    "STREAMS",
                    "s",
                    ">",
                ],
            )
            .await;
            let Some(reply) = reply else {
                shared.lock().expect("shared").history.interruptions += 1;
                continue 'connection;
            };
            let mut to_ack = Vec::new();
            for stream in reply.items() {
                for entry in stream.items().get(1).map_or(&[][..], Value::items) {
                    let Some(id) = parse_id(&entry.items()[0].text()) else {
                        continue;
                    };
                    let value = entry.items()[1]
                        .items()
                        .get(1)
                        .map(Value::text)
                        .unwrap_or_default();
                    {
                        let mut shared = shared.lock().expect("shared");
                        *shared.history.observed_deliveries.entry(id).or_default() += 1;
                        shared
                            .history
                            .delivered
                            .push((name.clone(), session, id, value));
                    }
                    to_ack.push(id);
                }
            }
            // Entries left pending by a crash or a lost XACK: claim them.
            let min_idle = if healed { "0" } else { "1000" };
            match request(
                &mut client,
                &shared,
                &["XAUTOCLAIM", "s", "g", &name, min_idle, "0", "COUNT", "10"],
            )
            .await
            {
                Some(Value::Array(Some(items))) => {
                    // Without JUSTID: the claimed entries, each delivered
                    // again (its delivery count goes up).
                    let claimed: Vec<Id> = items
                        .get(1)
                        .map_or(&[][..], Value::items)
                        .iter()
                        .filter_map(|entry| parse_id(&entry.items().first()?.text()))
                        .collect();
                    {
                        let mut shared = shared.lock().expect("shared");
                        for id in &claimed {
                            *shared.history.observed_deliveries.entry(*id).or_default() += 1;
                        }
                    }
                    // A claim moves ownership and raises the delivery
                    // count: ask the PEL right away (before healing, the
                    // 1 s minimum idle keeps other consumers off it).
                    if let (Some(first), false) = (claimed.first(), healed) {
                        let shown = check::show(*first);
                        // The deliveries seen before the question is sent: a
                        // later claim's reply may arrive before this reply
                        // while the server ran it after this XPENDING.
                        let observed = shared
                            .lock()
                            .expect("shared")
                            .history
                            .observed_deliveries
                            .get(first)
                            .copied()
                            .unwrap_or(0);
                        match request(
                            &mut client,
                            &shared,
                            &["XPENDING", "s", "g", &shown, &shown, "1"],
                        )
                        .await
                        {
                            Some(Value::Array(Some(rows))) => {
                                let row = rows.first().map(Value::items).unwrap_or_default();
                                let owner = row.get(1).map(Value::text).unwrap_or_default();
                                let count = match row.get(3) {
                                    Some(Value::Int(count)) => *count as u64,
                                    _ => 0,
                                };
                                let mut shared = shared.lock().expect("shared");
                                shared.history.claim_checks.push((
                                    *first,
                                    name.clone(),
                                    owner,
                                    count,
                                    observed,
                                ));
                            }
                            Some(_) => {}
                            None => {
                                shared.lock().expect("shared").history.interruptions += 1;
                                continue 'connection;
                            }
                        }
                    }
                    if !claimed.is_empty() {
                        count(
                            &mut shared.lock().expect("shared").coverage,
                            "claim of a stuck entry",
                        );
                        to_ack.extend(&claimed);
                        shared
                            .lock()
                            .expect("shared")
                            .history
                            .claimed
                            .push((name.clone(), claimed));
                    }
                }
                Some(_) => {}
                None => {
                    let mut shared = shared.lock().expect("shared");
                    shared.history.interruptions += 1;
                    shared.history.lost_claims.insert(name.clone());
                    drop(shared);
                    continue 'connection;
                }
            }
            for id in to_ack {
                let shown = check::show(id);
                match request(&mut client, &shared, &["XACK", "s", "g", &shown]).await {
                    Some(Value::Int(acked)) => {
                        shared
                            .lock()
                            .expect("shared")
                            .history
                            .acked
                            .push((id, acked));
                    }
                    Some(_) => {}
                    None => {
                        shared.lock().expect("shared").history.interruptions += 1;
                        continue 'connection;
                    }
                }
            }
        }
    }
}

async fn final_state(address: SocketAddr, client_node: &NodeHandle) -> Result<FinalState, String> {
    client_node
        .spawn(async move {
            let mut client = connect(address).await.ok_or("cannot connect")?;
            let call = |args: &'static [&'static str]| args;
            let entries = timeout(
                REQUEST_TIMEOUT,
                client.call(call(&["XRANGE", "s", "-", "+"])),
            )
            .await
            .map_err(|_| "XRANGE timed out".to_string())?
            .map_err(|error| error.to_string())?;
            let pending = timeout(
                REQUEST_TIMEOUT,
                client.call(call(&["XPENDING", "s", "g", "-", "+", "100000000"])),
            )
            .await
            .map_err(|_| "XPENDING timed out".to_string())?
            .map_err(|error| error.to_string())?;
            let entries = entries
                .items()
                .iter()
                .filter_map(|entry| {
                    let id = parse_id(&entry.items()[0].text())?;
                    Some((
                        id,
                        entry.items()[1]
                            .items()
                            .get(1)
                            .map(Value::text)
                            .unwrap_or_default(),
                    ))
                })
                .collect();
            let pending = pending
                .items()
                .iter()
                .filter_map(|row| {
                    let id = parse_id(&row.items()[0].text())?;
                    let count = match row.items().get(3) {
                        Some(Value::Int(count)) => *count as u64,
                        _ => 0,
                    };
                    Some((id, row.items()[1].text(), count))
                })
                .collect();
            Ok(FinalState { entries, pending })
        })
        .await
        .map_err(|error| format!("the final reader failed: {error}"))?
}

/// The log engine's node: a `weir_log::Broker` on its own `SimDisk`, driven
/// in process (until the Kafka front-end exists) by one producer per
/// partition and one consumer of group `g` that commits after reading.
fn start_log_node(
    handle: &Handle,
    disk: &Arc<SimDisk>,
    clock: &Arc<SkewedClock>,
    shared: &SharedRef,
    seed: u64,
    started: Instant,
) -> NodeHandle {
    let disk = Arc::clone(disk);
    let clock = Arc::clone(clock);
    let shared = Arc::clone(shared);
    handle
        .create_node()
        .name("log-0")
        .ip(LOG_IP.into())
        .init(move || {
            let disk = Arc::clone(&disk);
            let clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
            let shared = Arc::clone(&shared);
            async move {
                let storage: Arc<dyn Storage> = Arc::new(disk.root());
                let broker = match Broker::open(storage, clock, BrokerConfig::default()) {
                    Ok((broker, recovery)) => {
                        let cut = recovery
                            .partitions
                            .iter()
                            .filter(|(_, report)| report.truncation.is_some())
                            .count();
                        if cut > 0 {
                            count(
                                &mut shared.lock().expect("shared").coverage,
                                "log torn tail cut at recovery",
                            );
                        }
                        Arc::new(broker)
                    }
                    Err(error) => {
                        note(&shared, started, format!("log-0 failed to start: {error}"));
                        let mut shared = shared.lock().expect("shared");
                        shared.log_failed_start = true;
                        if shared.healed {
                            shared.start_failures.push(format!("log-0: {error}"));
                        }
                        return;
                    }
                };
                match broker.create_topic(TOPIC, TopicConfig::with_partitions(LOG_PARTITIONS)) {
                    Ok(()) | Err(BrokerError::TopicExists { .. }) => {}
                    Err(error) => {
                        note(
                            &shared,
                            started,
                            format!("log-0 cannot create its topic: {error}"),
                        );
                        shared.lock().expect("shared").log_failed_start = true;
                        return;
                    }
                }
                let assignment = {
                    let mut shared = shared.lock().expect("shared");
                    shared.log_assignment += 1;
                    shared.log_broker = Some(Arc::clone(&broker));
                    shared.log_assignment
                };
                note(
                    &shared,
                    started,
                    format!("log-0 up (assignment {assignment})"),
                );
                for partition in 0..LOG_PARTITIONS {
                    let (broker, shared) = (Arc::clone(&broker), Arc::clone(&shared));
                    let seed = seed ^ (u64::from(partition) << 32) ^ assignment;
                    tokio::spawn(async move { log_produce(broker, partition, shared, seed).await });
                }
                log_consume(broker, assignment, shared).await;
            }
        })
        .build()
}

/// Runs the log engine's own invariant checks on every partition and keeps
/// what they report.
fn check_log_invariants(broker: &Broker, reports: &mut Vec<String>) {
    for partition in 0..LOG_PARTITIONS {
        if let Ok(log) = broker.partition(TOPIC, partition) {
            if let Err(error) = log.check_invariants() {
                reports.push(format!("partition {partition}: {error}"));
            }
        }
    }
}

async fn log_produce(broker: Arc<Broker>, partition: u32, shared: SharedRef, seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut sequence = 0u64;
    loop {
        sleep(Duration::from_millis(rng.random_range(1..30))).await;
        if shared.lock().expect("shared").stop_producers {
            return;
        }
        sequence += 1;
        let value = format!("l{partition}-{seed:x}-{sequence}");
        shared
            .lock()
            .expect("shared")
            .log_history
            .sent
            .insert(value.clone());
        let now = broker.clock().now_ms() as i64;
        let appended = broker.append(TOPIC, partition, &[Record::value(now, value.as_bytes())]);
        check_log_invariants(
            &broker,
            &mut shared.lock().expect("shared").engine_invariants,
        );
        match appended {
            Ok(info) => {
                shared
                    .lock()
                    .expect("shared")
                    .log_history
                    .acknowledged
                    .push((partition, info.base_offset, value));
            }
            Err(_) => {
                // A failed sync fails the partition until the node restarts.
                sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn log_consume(broker: Arc<Broker>, assignment: u64, shared: SharedRef) {
    let mut positions: BTreeMap<u32, u64> = BTreeMap::new();
    for partition in 0..LOG_PARTITIONS {
        let committed = broker
            .committed_offset(GROUP, TOPIC, partition)
            .ok()
            .flatten()
            .map_or(0, |committed| committed.offset);
        positions.insert(partition, committed);
    }
    loop {
        sleep(Duration::from_millis(20)).await;
        for partition in 0..LOG_PARTITIONS {
            let position = positions[&partition];
            let Ok(read) = broker.read(TOPIC, partition, position, 16 * 1024) else {
                continue;
            };
            let mut next = position;
            let mut seen = Vec::new();
            for record in read.records() {
                let Ok(record) = record else { break };
                let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
                seen.push((assignment, partition, record.offset, value));
                next = record.offset + 1;
            }
            if next == position {
                continue;
            }
            shared.lock().expect("shared").log_history.read.extend(seen);
            // Commit after processing: at-least-once.
            if broker
                .commit_offset(GROUP, TOPIC, partition, next, "")
                .is_ok()
            {
                shared
                    .lock()
                    .expect("shared")
                    .log_history
                    .committed
                    .push((partition, next));
            }
            positions.insert(partition, next);
        }
    }
}

/// Reads every partition of the log from offset 0, and the committed
/// offsets.
fn log_final(broker: &Broker) -> Result<LogFinal, String> {
    let mut last = LogFinal::default();
    for partition in 0..LOG_PARTITIONS {
        let mut offset = 0;
        loop {
            let read = broker
                .read(TOPIC, partition, offset, 1 << 20)
                .map_err(|error| error.to_string())?;
            let before = offset;
            for record in read.records() {
                let record = record.map_err(|error| error.to_string())?;
                last.records.push((
                    partition,
                    record.offset,
                    String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned(),
                ));
                offset = record.offset + 1;
            }
            if offset == before {
                break;
            }
        }
        let committed = broker
            .committed_offset(GROUP, TOPIC, partition)
            .map_err(|error| error.to_string())?
            .map_or(0, |committed| committed.offset);
        last.committed.insert(partition, committed);
    }
    Ok(last)
}
