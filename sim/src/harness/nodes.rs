//! The simulated machines: the stream node (`weir-0`, the real
//! `weir-server` code with its command log on a [`SimDisk`], `appendfsync
//! always`), the log node (`log-0`, a `weir_log::Broker` on its own
//! [`SimDisk`], driven in process by the log workload), and the client
//! node the other workloads run on. A madsim kill of a node is a power loss
//! of its disk.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use madsim::time::{sleep, timeout, Instant};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use weir_io::{Clock, CrashWeights, Faults, SimDisk, Storage, SystemClock};
use weir_log::{Broker, BrokerConfig, BrokerError, LogError};
use weir_server::Settings;

use super::nemesis::{Features, Swarm};
use super::network::{
    connect, server_address, CLIENT_IP, LOG_IP, PORT, REQUEST_TIMEOUT, SERVER_IP,
};
use super::workloads::stream::read_entries;
use super::{count, note, SharedRef, World};
use crate::check::{parse_id, FinalState};
use crate::client::Value;

/// A node's clock: the simulated time of day plus an offset that the
/// nemesis moves backwards.
#[derive(Debug, Default)]
pub(crate) struct SkewedClock {
    offset_ms: AtomicI64,
}

impl SkewedClock {
    /// Moves the clock back by `ms`.
    pub(crate) fn jump_back(&self, ms: i64) {
        self.offset_ms.fetch_sub(ms, Ordering::SeqCst);
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        let now = SystemClock.now_ms() as i64 + self.offset_ms.load(Ordering::SeqCst);
        now.max(0) as u64
    }
}

/// Builds the seed's world: picks its faults and features, makes the disks
/// and starts the nodes.
pub(crate) fn build(seed: u64) -> World {
    let handle = Handle::current();
    let started = Instant::now();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5715_eed5);
    let swarm = Swarm::pick(&mut rng);
    let features = Features::pick(&mut rng);
    let shared: SharedRef = Arc::default();
    note(
        &shared,
        started,
        format!("seed {seed}, swarm {swarm:?}, features {features:?}"),
    );
    let weights = CrashWeights {
        lose_all: rng.random_range(0..4),
        keep_prefix: rng.random_range(0..4),
        tear: rng.random_range(1..4),
    };
    let disk = SimDisk::with_faults(rng.random(), swarm.stream_disk_faults(weights));
    let clock = Arc::new(SkewedClock::default());
    let server = start_server(
        &handle,
        &disk,
        &clock,
        &shared,
        started,
        features.node_max_entries,
    );
    let log_disk = SimDisk::with_faults(rng.random(), swarm.log_disk_faults(weights));
    let log_node = start_log_node(
        &handle,
        &log_disk,
        &clock,
        &shared,
        &features,
        rng.random(),
        started,
    );
    let client_node = handle
        .create_node()
        .name("clients")
        .ip(CLIENT_IP.into())
        .build();
    World {
        handle,
        started,
        rng,
        swarm,
        features,
        shared,
        weights,
        disk,
        log_disk,
        clock,
        server,
        log_node,
        client_node,
    }
}

/// Restarts the stream node; with `burst`, half of the disk's reads return
/// a flipped bit while it recovers (the data on the disk stays intact), so
/// recovery's judgement of torn and corrupt records is put to the test.
pub(crate) async fn restart(world: &World, burst: bool) {
    if !burst {
        world.handle.restart(world.server.id());
        return;
    }
    let normal = world.disk.faults();
    world.disk.set_faults(Faults {
        read_corruption: 0.5,
        ..normal.clone()
    });
    world.handle.restart(world.server.id());
    // Recovery reads the log before the node serves anything.
    sleep(Duration::from_millis(5)).await;
    world.disk.set_faults(normal);
}

fn start_server(
    handle: &Handle,
    disk: &Arc<SimDisk>,
    clock: &Arc<SkewedClock>,
    shared: &SharedRef,
    started: Instant,
    node_max_entries: u64,
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
            async move { serve_stream_node(disk, clock, shared, started, node_max_entries).await }
        })
        .build()
}

async fn serve_stream_node(
    disk: Arc<SimDisk>,
    clock: Arc<dyn Clock>,
    shared: SharedRef,
    started: Instant,
    node_max_entries: u64,
) {
    let settings = Settings {
        resp_addr: format!("0.0.0.0:{PORT}"),
        appendfsync: "always".into(),
        stream_node_max_entries: node_max_entries,
        ..Settings::default()
    };
    let storage: Arc<dyn Storage> = Arc::new(disk.root());
    match weir_server::server::start_with_storage(settings, Some(storage), clock).await {
        Ok((running, listener)) => {
            let recovery = running.node.recovery.clone();
            if recovery
                .as_ref()
                .is_some_and(|recovery| recovery.truncated.is_some())
            {
                count(
                    &mut shared.lock().expect("shared").coverage,
                    "torn tail cut at recovery",
                );
            }
            note(&shared, started, format!("weir-0 up: {recovery:?}"));
            {
                let mut shared = shared.lock().expect("shared");
                shared.node = Some(Arc::clone(&running.node));
                shared.refused_on_corruption = false;
                shared.rewrite_running = false;
            }
            weir_server::server::serve(running.node, listener).await;
        }
        Err(error) => {
            // With faults on, a start that fails on a disk error is
            // retried, as a supervisor would; after healing it must start.
            note(&shared, started, format!("weir-0 failed to start: {error}"));
            let corrupt = matches!(
                error,
                weir_server::StartError::Recovery(weir_stream::PersistenceError::Corrupt { .. })
            );
            let mut shared = shared.lock().expect("shared");
            shared.failed_start = true;
            if corrupt {
                // Detected, reported, refused: what GUARANTEES.md promises
                // for corrupt synced data.
                shared.refused_on_corruption = true;
            } else if shared.healed {
                shared.start_failures.push(error.to_string());
            }
        }
    }
}

fn start_log_node(
    handle: &Handle,
    disk: &Arc<SimDisk>,
    clock: &Arc<SkewedClock>,
    shared: &SharedRef,
    features: &Features,
    seed: u64,
    started: Instant,
) -> NodeHandle {
    let disk = Arc::clone(disk);
    let clock = Arc::clone(clock);
    let shared = Arc::clone(shared);
    let features = features.clone();
    handle
        .create_node()
        .name("log-0")
        .ip(LOG_IP.into())
        .init(move || {
            let disk = Arc::clone(&disk);
            let clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
            let (shared, features) = (Arc::clone(&shared), features.clone());
            async move {
                let storage: Arc<dyn Storage> = Arc::new(disk.root());
                let broker =
                    match Broker::open(Arc::clone(&storage), clock, BrokerConfig::default()) {
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
                            if corruption_verdict(&error) {
                                // log-0's disk never stores corrupt bytes
                                // (only reads flip): a verdict of
                                // corruption there is about good data.
                                shared
                                    .start_failures
                                    .push(format!("log-0 called good data corrupt: {error}"));
                            } else if shared.healed {
                                shared.start_failures.push(format!("log-0: {error}"));
                            }
                            return;
                        }
                    };
                super::workloads::log::run_on_node(
                    broker, storage, shared, features, seed, started,
                )
                .await;
            }
        })
        .build()
}

/// Whether the broker refused to open on a verdict that stored bytes
/// are corrupt (rather than on an I/O error).
fn corruption_verdict(error: &BrokerError) -> bool {
    let corrupt = |source: &LogError| matches!(source, LogError::Corrupt { .. });
    match error {
        BrokerError::CorruptTopicMetadata { .. } => true,
        BrokerError::Log { source, .. } => corrupt(source),
        BrokerError::Offsets { source, .. } => source.as_ref().is_none_or(corrupt),
        _ => false,
    }
}

/// The stream `s` and its group `g` as they are now: the final reads.
pub(crate) async fn stream_final_state(client_node: &NodeHandle) -> Result<FinalState, String> {
    client_node
        .spawn(async move {
            let mut client = connect(server_address()).await.ok_or("cannot connect")?;
            let entries = timeout(REQUEST_TIMEOUT, client.call(&["XRANGE", "s", "-", "+"]))
                .await
                .map_err(|_| "XRANGE timed out".to_string())?
                .map_err(|error| error.to_string())?;
            let pending = timeout(
                REQUEST_TIMEOUT,
                client.call(&["XPENDING", "s", "g", "-", "+", "100000000"]),
            )
            .await
            .map_err(|_| "XPENDING timed out".to_string())?
            .map_err(|error| error.to_string())?;
            let entries = read_entries(Some(&entries));
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

/// The seed's crash weights and fault rates on a node's disk.
pub(crate) fn healed_faults(weights: CrashWeights) -> Faults {
    Faults {
        crash: weights,
        ..Faults::default()
    }
}
