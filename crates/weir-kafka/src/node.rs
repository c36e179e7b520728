//! The Kafka front-end's shared state: the log broker it serves, its
//! settings, the group coordinator, producer ids, the wake-up of waiting
//! fetches, and the one seam that says which node leads a partition.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use tokio::sync::Notify;
use weir_io::{Clock, Storage};
use weir_log::{Broker, Partition};

use crate::coordinator::Coordinator;
use crate::limits::{FETCH_WAIT_MS_MAX, REQUEST_BYTES_MAX};
use crate::producer_ids::{ProducerIdError, ProducerIds};

/// Settings of the Kafka front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Create a topic when Metadata names one that does not exist (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (Kafka's
    /// `num.partitions`).
    pub default_partitions: u32,
    /// SASL/PLAIN users and passwords; when empty no authentication is
    /// asked for.
    pub users: BTreeMap<String, String>,
    /// How long the first rebalance of an empty group waits for more
    /// members (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// The largest request accepted (Kafka's `socket.request.max.bytes`).
    pub request_bytes_max: usize,
    /// The longest a fetch waits for records, whatever it asks for.
    pub fetch_wait_ms_max: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            default_partitions: 1,
            users: BTreeMap::new(),
            initial_rebalance_delay_ms: 0,
            request_bytes_max: REQUEST_BYTES_MAX,
            fetch_wait_ms_max: FETCH_WAIT_MS_MAX,
        }
    }
}

/// A node of the cluster as Metadata shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// Its id.
    pub id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port clients connect to.
    pub port: u16,
}

/// Which node leads each partition: the one seam a replication layer
/// replaces. Every request that must reach a partition's leader asks it.
pub trait Leaders: Send + Sync + Debug {
    /// This node's id.
    fn node_id(&self) -> i32;
    /// Every node, as Metadata lists them.
    fn nodes(&self) -> Vec<NodeAddress>;
    /// The node leading a partition, if one does.
    fn leader(&self, topic: &str, partition: u32) -> Option<i32>;
}

/// One node that leads every partition.
#[derive(Clone, Debug)]
pub struct SingleNode {
    /// The node's advertised address; its id is 0.
    pub address: NodeAddress,
}

impl SingleNode {
    /// The single node 0, advertised at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            address: NodeAddress {
                id: 0,
                host: host.into(),
                port,
            },
        }
    }
}

impl Leaders for SingleNode {
    fn node_id(&self) -> i32 {
        self.address.id
    }

    fn nodes(&self) -> Vec<NodeAddress> {
        vec![self.address.clone()]
    }

    fn leader(&self, _topic: &str, _partition: u32) -> Option<i32> {
        Some(self.address.id)
    }
}

/// The Kafka front-end of one node.
#[derive(Debug)]
pub struct Kafka {
    /// The topics, partitions and committed offsets.
    pub log: Arc<Broker>,
    /// Settings.
    pub settings: KafkaSettings,
    /// Who leads what.
    pub leaders: Box<dyn Leaders>,
    /// Consumer groups.
    pub coordinator: Coordinator,
    /// Producer ids.
    pub producer_ids: ProducerIds,
    /// Woken whenever records become readable: waiting fetches re-read.
    pub appended: Notify,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The cluster id Metadata returns.
    pub cluster_id: String,
}

impl Kafka {
    /// The front-end over `log`, keeping its own state (producer ids) in
    /// `storage`.
    pub fn new(
        log: Arc<Broker>,
        storage: Arc<dyn Storage>,
        settings: KafkaSettings,
        leaders: Box<dyn Leaders>,
    ) -> Result<Self, ProducerIdError> {
        let clock = Arc::clone(log.clock());
        Ok(Self {
            producer_ids: ProducerIds::open(storage)?,
            coordinator: Coordinator::new(Arc::clone(&clock), settings.initial_rebalance_delay_ms),
            log,
            settings,
            leaders,
            appended: Notify::new(),
            clock,
            cluster_id: "weir-cluster".into(),
        })
    }

    /// The partition, if it exists and this node leads it.
    pub fn led_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, kafka_protocol::ResponseError> {
        use kafka_protocol::ResponseError;
        let index = u32::try_from(partition).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        let log = self
            .log
            .partition(topic, index)
            .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
        match self.leaders.leader(topic, index) {
            Some(leader) if leader == self.leaders.node_id() => Ok(log),
            Some(_) => Err(ResponseError::NotLeaderOrFollower),
            None => Err(ResponseError::LeaderNotAvailable),
        }
    }
}

/// Runs storage work (syncs, directory changes) off the event loop, so
/// that other connections go on meanwhile: on tokio's blocking pool. Under
/// the simulator (one thread, a disk that never blocks) it runs in place
/// after a pause of simulated time, so that other requests are served
/// while it "runs", as they are while a blocking-pool thread syncs.
pub async fn off_loop<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    #[cfg(madsim)]
    {
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        work()
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}
