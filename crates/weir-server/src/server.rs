//! The node's tasks: the RESP listener, one task per connection, and the
//! timer (blocked-read timeouts, the `everysec` sync, rewrite steps, idle
//! clients). Shutdown: stop accepting, let each connection finish the
//! requests it has read, close them, sync the command log.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use weir_io::{Clock, OsStorage, Storage};
use weir_kafka::node::off_loop;
use weir_kafka::shutdown::Shutdown;
use weir_kafka::{Kafka, KafkaSettings, Leaders, NodeAddress, SingleNode};
use weir_log::{Broker, BrokerConfig, BrokerRecovery, HighWatermarkPolicy, LogConfig};

use crate::cluster::Cluster;

use crate::config::Settings;
use crate::node::{Node, StartError};

/// How often the timer runs when nothing is due sooner (the `everysec`
/// sync and idle-client checks need no more).
const TIMER_PERIOD: Duration = Duration::from_millis(100);

/// How long shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running node: its address and how to stop it.
#[derive(Debug)]
pub struct Running {
    /// The node.
    pub node: Arc<Node>,
    /// The RESP listener's address.
    pub resp_addr: std::net::SocketAddr,
}

/// The Kafka front-end, bound and ready to serve.
#[derive(Debug)]
pub struct KafkaListener {
    /// Its state.
    pub kafka: Arc<Kafka>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The listener.
    pub listener: TcpListener,
    /// What opening the topics recovered.
    pub recovery: BrokerRecovery,
    /// The cluster, when this node is one of several.
    pub cluster: Option<Cluster>,
}

/// Opens the data directory's `log` subdirectory: Kafka topics, committed
/// offsets and producer ids.
pub fn open_log_storage(data_dir: &Path) -> Result<Arc<dyn Storage>, StartError> {
    let log = data_dir.join("log");
    let error = |source| StartError::DataDir {
        path: log.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&log).map_err(error)?;
    let storage = OsStorage::open(&log).map_err(error)?;
    Ok(Arc::new(storage))
}

/// Opens the topics in `storage` and binds the Kafka listener (if it is
/// on).
pub async fn start_kafka(
    settings: &Settings,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
) -> Result<Option<KafkaListener>, StartError> {
    if !crate::config::kafka_enabled(settings) {
        return Ok(None);
    }
    let cluster_settings = settings.cluster()?;
    let high_watermark = match cluster_settings {
        Some(_) => HighWatermarkPolicy::SetByOwner,
        None => HighWatermarkPolicy::FollowsFlush,
    };
    let config = BrokerConfig {
        default_log: LogConfig {
            high_watermark,
            ..settings.kafka.log_config()?
        },
    };
    let (log, recovery) = Broker::open(Arc::clone(&storage), Arc::clone(&clock), config)
        .map_err(|error| StartError::Log(error.to_string()))?;
    let log = Arc::new(log);
    let addr = settings.kafka_addr.clone();
    let bind_error = |source| StartError::Bind {
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let (host, port) = crate::config::parse_host_port(&settings.kafka_advertised_addr)
        .unwrap_or_else(|| {
            let ip = if local.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                local.ip().to_string()
            };
            (ip, local.port())
        });
    let kafka_settings = KafkaSettings {
        auto_create_topics: settings.kafka.auto_create_topics,
        default_partitions: settings.kafka.num_partitions,
        users: settings.kafka.users.clone(),
        initial_rebalance_delay_ms: settings.kafka.group_initial_rebalance_delay_ms,
        retention_check_interval_ms: settings.kafka.log_retention_check_interval_ms,
        ..KafkaSettings::default()
    };
    let own = storage
        .open_or_create_dir("kafka")
        .map_err(|source| StartError::DataDir {
            path: "log/kafka".into(),
            source,
        })?;
    let cluster = match &cluster_settings {
        Some(cluster_settings) => {
            let own_address = NodeAddress {
                id: i32::try_from(cluster_settings.node).unwrap_or(-1),
                host: host.clone(),
                port,
            };
            let cluster = crate::cluster::start(
                cluster_settings,
                Arc::clone(&log),
                storage.as_ref(),
                clock,
                own_address,
                settings.resp_addr.clone(),
                shutdown,
            )
            .await?;
            Some(cluster)
        }
        None => None,
    };
    let leaders: Box<dyn Leaders> = match &cluster {
        Some(cluster) => Box::new(cluster.clone()),
        None => Box::new(SingleNode::new(host, port)),
    };
    let kafka = Kafka::new(Arc::clone(&log), own, kafka_settings, leaders)
        .map_err(|error| StartError::Log(error.to_string()))?;
    let kafka = Arc::new(kafka);
    if let Some(cluster) = &cluster {
        tokio::spawn(wake_fetches(cluster.clone(), Arc::downgrade(&kafka)));
    }
    Ok(Some(KafkaListener {
        kafka,
        addr: local,
        listener,
        recovery,
        cluster,
    }))
}

/// Wakes waiting fetches whenever a group's high watermark (or leader)
/// changes, while the front-end lives.
async fn wake_fetches(cluster: Cluster, kafka: std::sync::Weak<Kafka>) {
    loop {
        cluster.handle().changed().notified().await;
        match kafka.upgrade() {
            Some(kafka) => kafka.appended.notify_waiters(),
            None => return,
        }
    }
}

/// Serves Kafka clients until the node shuts down, then closes the topics
/// cleanly (so that the next start scans nothing).
pub async fn serve_kafka(node: Arc<Node>, kafka: KafkaListener) {
    let shutdown = node.shutdown.clone();
    let state = Arc::clone(&kafka.kafka);
    weir_kafka::server::serve(kafka.kafka, kafka.listener, shutdown).await;
    let log = Arc::clone(&state.log);
    match off_loop(move || log.close()).await {
        Ok(()) => tracing::info!("topics closed"),
        Err(error) => tracing::error!(%error, "closing the topics failed"),
    }
}

/// Shuts the node down if it must leave the cluster: its replication
/// stopped (a write or sync of its replicated logs failed: what the disk
/// holds is then unknown, and the node replicates nothing until it starts
/// again and recovers from it), or it found that it must not take part
/// (it starts with no cluster state under the id of a node its peers
/// know). True if that is why the node stopped; false once it shuts down
/// for another reason. `weir serve` then exits with status 1, for its
/// supervisor to restart it, as Kafka halts a broker whose log directory
/// failed: staying up, it would answer clients as a replica of nothing.
pub async fn shut_down_on_cluster_failure(node: Arc<Node>, cluster: Cluster) -> bool {
    let shutdown = node.shutdown.clone();
    tokio::select! {
        biased;
        () = cluster.handle().stopped() => tracing::error!(
            "the replication stopped on a storage error: weir shuts down and exits with status 1, \
             to be restarted (it recovers from what its disk holds)"
        ),
        halt = cluster.refused() => tracing::error!(
            reason = %halt,
            "this node stops before it takes part in the cluster: weir shuts down and exits \
             with status 1"
        ),
        () = shutdown.requested() => return false,
    }
    node.request_shutdown();
    true
}

/// Opens the data directory for the stream command log.
pub fn open_storage(data_dir: &Path) -> Result<Arc<dyn Storage>, StartError> {
    let streams = data_dir.join("streams");
    let error = |source| StartError::DataDir {
        path: streams.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&streams).map_err(error)?;
    let storage = OsStorage::open(&streams).map_err(error)?;
    Ok(Arc::new(storage))
}

/// Opens the node (recovering its data) and binds its listener.
pub async fn start(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<(Running, TcpListener), StartError> {
    let storage = if settings.appendonly {
        Some(open_storage(&settings.data_dir)?)
    } else {
        None
    };
    start_with_storage(settings, storage, clock).await
}

/// [`start`] on a given storage (the simulator passes its simulated disk).
pub async fn start_with_storage(
    settings: Settings,
    storage: Option<Arc<dyn Storage>>,
    clock: Arc<dyn Clock>,
) -> Result<(Running, TcpListener), StartError> {
    let addr = settings.resp_addr.clone();
    let node = Node::open(settings, storage, clock)?;
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let resp_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: addr.clone(),
        source,
    })?;
    *weir_io::sync::lock(&node.resp_addr) = Some(resp_addr);
    Ok((Running { node, resp_addr }, listener))
}

/// Serves until the node is asked to shut down, then shuts down
/// gracefully.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let connections = Arc::new(ConnectionCount::default());
    let timer = tokio::spawn(run_timer(Arc::clone(&node)));
    let shutdown = node.shutdown.clone();
    loop {
        // `biased`: a fixed polling order (tokio's random one comes from a
        // thread-local generator that the simulator cannot reseed).
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let laddr = stream.local_addr().unwrap_or(addr);
                    let node = Arc::clone(&node);
                    let connections = Arc::clone(&connections);
                    connections.opened();
                    tokio::spawn(async move {
                        crate::connection::serve(node, stream, addr, laddr).await;
                        connections.closed();
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, connections.all_closed()).await;
    if drained.is_err() {
        tracing::warn!("some connections did not close within the grace period");
    }
    timer.abort();
    let mut state = node.lock();
    if let Some(store) = state.db.store() {
        match store.sync_now() {
            Ok(()) => tracing::info!(bytes = store.log_bytes(), "command log synced"),
            Err(error) => tracing::error!(%error, "syncing the command log at shutdown failed"),
        }
    }
    tracing::info!("shut down");
}

#[derive(Debug, Default)]
struct ConnectionCount {
    open: AtomicUsize,
    changed: Notify,
}

impl ConnectionCount {
    fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.changed.notified();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Periodic work: expires blocked reads at their deadline, ticks the
/// command log (the `everysec` sync, one key of a rewrite per tick while a
/// rewrite runs), closes idle clients.
async fn run_timer(node: Arc<Node>) {
    let mut last_idle_check = 0;
    loop {
        let wait = {
            let mut state = node.lock();
            let now = node.clock.now_ms();
            if let Err(error) = state.db.tick() {
                state.last_write_error = Some(error.to_string());
                tracing::error!(%error, "command log tick failed");
            }
            state.db.engine().expire_blocked(now);
            let _ = state.settle();
            if state.runtime.timeout > 0 && now.saturating_sub(last_idle_check) >= 1000 {
                last_idle_check = now;
                let limit = state.runtime.timeout * 1000;
                for entry in state.clients.values_mut() {
                    let idle = now.saturating_sub(entry.last_ms) >= limit;
                    if idle && !entry.blocked && entry.subscriptions == 0 {
                        entry.killed = Some("idle timeout");
                        entry.notify.notify_one();
                    }
                }
            }
            let rewriting = state
                .db
                .store()
                .is_some_and(|store| store.rewrite_in_progress());
            let mut wait = if rewriting {
                Duration::from_millis(1)
            } else {
                TIMER_PERIOD
            };
            if let Some(deadline) = state.db.engine().next_deadline() {
                wait = wait.min(Duration::from_millis(deadline.saturating_sub(now)));
            }
            wait
        };
        tokio::select! {
            biased;
            _ = tokio::time::sleep(wait) => {}
            _ = node.timer.notified() => {}
        }
    }
}
