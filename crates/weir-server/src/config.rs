//! The node's settings: defaults for an embedded single node, an optional
//! TOML file, and command-line flags, in increasing order of precedence.
//! Names are Redis's where Redis has the setting (`appendfsync`,
//! `requirepass`, `maxclients`, ...), so that `CONFIG GET` answers what a
//! Redis user asks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_stream::{Compatibility, FsyncPolicy};

/// Every setting of a node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Where data lives (created if missing).
    pub data_dir: PathBuf,
    /// The RESP listener's address.
    pub resp_addr: String,
    /// Whether streams are persisted to the command log.
    pub appendonly: bool,
    /// When the command log is synced: `always`, `everysec`, `no`.
    pub appendfsync: String,
    /// The password clients must give (AUTH or HELLO ... AUTH); none if
    /// empty.
    pub requirepass: String,
    /// Most clients connected at once; more are refused with an error.
    pub maxclients: usize,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// Threads of the runtime: 1 (the default) is one event loop, as in
    /// Redis; 0 is one worker per core.
    pub threads: usize,
    /// Entries per stream node (Redis's `stream-node-max-entries`).
    pub stream_node_max_entries: u64,
    /// Bytes per stream node (Redis's `stream-node-max-bytes`).
    pub stream_node_max_bytes: u64,
    /// Which Redis release to follow where releases differ: `7.4` or `7.0`.
    pub compatibility: String,
    /// Largest bulk string of a request (Redis's `proto-max-bulk-len`).
    pub proto_max_bulk_len: usize,
    /// Unprocessed input a client may hold (Redis's
    /// `client-query-buffer-limit`).
    pub client_query_buffer_limit: usize,
    /// Pub/sub output limit: a subscriber holding more is disconnected.
    pub pubsub_output_hard_limit: usize,
    /// Pub/sub soft output limit ...
    pub pubsub_output_soft_limit: usize,
    /// ... for this many seconds.
    pub pubsub_output_soft_seconds: u64,
    /// Replies queued for a client that does not read them (blocked-read
    /// wake-ups, kept apart from pub/sub messages): past this, the client is
    /// disconnected.
    pub client_output_limit: usize,
    /// Close clients idle for this many seconds (0: never).
    pub timeout: u64,
    /// The Kafka listener's address; `off` turns it off.
    pub kafka_addr: String,
    /// The address Kafka clients are told to connect to (in Metadata and
    /// FindCoordinator answers); the listener's own when empty.
    pub kafka_advertised_addr: String,
    /// The Kafka front-end's other settings (`[kafka]` in the file).
    pub kafka: KafkaSection,
    /// This node's id in a cluster; 0 (the default) runs one node alone.
    pub node_id: u64,
    /// Where this node listens for its peers; its own entry of `peers`
    /// when empty.
    pub cluster_addr: String,
    /// Every node of the cluster, this one included:
    /// `ID=HOST:PORT,ID=HOST:PORT,...` (their cluster addresses).
    pub peers: String,
    /// The replication layer's tick, in milliseconds.
    pub raft_tick_ms: u64,
    /// Ticks without word from a leader before a follower stands for
    /// election (the timeout is drawn between this and twice this).
    pub raft_election_ticks: usize,
    /// How fast each node reads its replicas' logs back to find rot
    /// before a reader does (KiB per second; 0: never).
    pub raft_scrub_kib_per_sec: u64,
    /// This node joins a running cluster (`peers` names some of its
    /// nodes): it takes the cluster's metadata from them rather than
    /// starting it with `peers` as its first members.
    pub join: bool,
}

/// The `[kafka]` table of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSection {
    /// SASL/PLAIN users and their passwords; when any is set, clients must
    /// authenticate before any other request.
    pub users: BTreeMap<String, String>,
    /// Create topics that Metadata asks for (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of topics created without a count (Kafka's
    /// `num.partitions`).
    pub num_partitions: u32,
    /// How long the first rebalance of an empty group waits for more
    /// members (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// When topics' logs are synced: `always` (before a produce is
    /// acknowledged, with group commit), `never` (durability left to
    /// replication or the OS), or a number of milliseconds.
    pub flush: String,
    /// How long topics keep records, in milliseconds; -1: no limit
    /// (Kafka's `log.retention.ms`).
    pub log_retention_ms: i64,
    /// How many bytes a partition keeps; -1: no limit (Kafka's
    /// `log.retention.bytes`).
    pub log_retention_bytes: i64,
    /// The size of a segment file, the unit retention deletes (Kafka's
    /// `log.segment.bytes`).
    pub log_segment_bytes: u32,
    /// How often retention runs (Kafka's
    /// `log.retention.check.interval.ms`).
    pub log_retention_check_interval_ms: u64,
}

impl KafkaSection {
    /// The log settings of topics created without their own.
    pub fn log_config(&self) -> Result<weir_log::LogConfig, ConfigError> {
        let limit = |value: i64, name: &'static str| match value {
            -1 => Ok(None),
            value if value > 0 => Ok(Some(value as u64)),
            other => Err(invalid(
                name,
                &other.to_string(),
                "-1 (no limit) or above 0",
            )),
        };
        let config = weir_log::LogConfig {
            flush: parse_log_flush(&self.flush)?,
            retention_ms: limit(self.log_retention_ms, "kafka log-retention-ms")?,
            retention_bytes: limit(self.log_retention_bytes, "kafka log-retention-bytes")?,
            segment_bytes: self.log_segment_bytes,
            ..weir_log::LogConfig::default()
        };
        if config.validate().is_err() {
            return Err(invalid(
                "kafka log-segment-bytes",
                &self.log_segment_bytes.to_string(),
                "1024 to 2147483648",
            ));
        }
        if self.log_retention_check_interval_ms == 0 {
            return Err(invalid(
                "kafka log-retention-check-interval-ms",
                "0",
                "at least 1",
            ));
        }
        Ok(config)
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            users: BTreeMap::new(),
            auto_create_topics: true,
            num_partitions: 1,
            group_initial_rebalance_delay_ms: 0,
            flush: "always".into(),
            log_retention_ms: weir_log::RETENTION_MS_DEFAULT as i64,
            log_retention_bytes: -1,
            log_segment_bytes: weir_log::LogConfig::default().segment_bytes,
            log_retention_check_interval_ms: 60_000,
        }
    }
}

/// Splits `HOST:PORT`.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|port| *port > 0)?;
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

/// Whether the Kafka listener is on.
pub fn kafka_enabled(settings: &Settings) -> bool {
    !settings.kafka_addr.is_empty() && settings.kafka_addr != "off"
}

/// Parses the `flush` setting of the `[kafka]` table.
pub fn parse_log_flush(text: &str) -> Result<weir_log::FlushPolicy, ConfigError> {
    match text {
        "always" => Ok(weir_log::FlushPolicy::Always),
        "never" => Ok(weir_log::FlushPolicy::Never),
        other => match other.parse::<u64>() {
            Ok(interval_ms) if interval_ms > 0 => Ok(weir_log::FlushPolicy::Interval {
                interval_ms,
                interval_bytes: u64::MAX,
            }),
            _ => Err(invalid(
                "kafka flush",
                other,
                "always, never, or a number of milliseconds",
            )),
        },
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("weir-data"),
            resp_addr: "127.0.0.1:6379".into(),
            appendonly: true,
            appendfsync: "everysec".into(),
            requirepass: String::new(),
            maxclients: 10_000,
            log_level: "info".into(),
            threads: 1,
            stream_node_max_entries: 100,
            stream_node_max_bytes: 4096,
            compatibility: "7.4".into(),
            proto_max_bulk_len: 512 << 20,
            client_query_buffer_limit: 1 << 30,
            pubsub_output_hard_limit: 32 << 20,
            pubsub_output_soft_limit: 8 << 20,
            pubsub_output_soft_seconds: 60,
            client_output_limit: 256 << 20,
            timeout: 0,
            kafka_addr: "127.0.0.1:9092".into(),
            kafka_advertised_addr: String::new(),
            kafka: KafkaSection::default(),
            node_id: 0,
            cluster_addr: String::new(),
            peers: String::new(),
            raft_tick_ms: 50,
            raft_election_ticks: 10,
            raft_scrub_kib_per_sec: DEFAULT_SCRUB_KIB_PER_SEC,
            join: false,
        }
    }
}

/// The scrub's default rate: the replication layer's default of 64 KiB
/// a tick at the default tick of 50 ms.
pub const DEFAULT_SCRUB_KIB_PER_SEC: u64 = 1280;

/// The fastest scrub the settings accept.
const MAX_SCRUB_KIB_PER_SEC: u64 = 4 << 20;

/// The bytes a tick of `tick_ms` scrubs at `kib_per_sec` (at least one
/// unless 0).
fn scrub_bytes_per_tick(kib_per_sec: u64, tick_ms: u64) -> u32 {
    let bytes = kib_per_sec * 1024 * tick_ms / 1000;
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    match kib_per_sec {
        0 => 0,
        _ => bytes.max(1),
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A value out of its range.
    #[error("invalid value {value:?} for {name}: {expected}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

impl Settings {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let settings: Settings = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fsync_policy()?;
        self.kafka.log_config()?;
        if self.kafka.num_partitions == 0
            || self.kafka.num_partitions > weir_log::PARTITIONS_PER_TOPIC_MAX
        {
            return Err(invalid(
                "kafka num-partitions",
                &self.kafka.num_partitions.to_string(),
                "1 to 4096",
            ));
        }
        if !self.kafka_advertised_addr.is_empty()
            && parse_host_port(&self.kafka_advertised_addr).is_none()
        {
            return Err(invalid(
                "kafka-advertised-addr",
                &self.kafka_advertised_addr,
                "HOST:PORT",
            ));
        }
        self.compatibility()?;
        self.cluster()?;
        parse_level(&self.log_level)?;
        if self.maxclients == 0 {
            return Err(invalid("maxclients", "0", "at least 1"));
        }
        if self.proto_max_bulk_len < 1024 {
            return Err(invalid(
                "proto-max-bulk-len",
                &self.proto_max_bulk_len.to_string(),
                "at least 1024",
            ));
        }
        if self.client_query_buffer_limit < 1024 * 1024 {
            return Err(invalid(
                "client-query-buffer-limit",
                &self.client_query_buffer_limit.to_string(),
                "at least 1 MiB",
            ));
        }
        Ok(())
    }

    /// The sync policy.
    pub fn fsync_policy(&self) -> Result<FsyncPolicy, ConfigError> {
        parse_fsync(&self.appendfsync)
    }

    /// The cluster settings: `None` for a node alone (`node-id` 0).
    pub fn cluster(&self) -> Result<Option<crate::cluster::ClusterSettings>, ConfigError> {
        if self.node_id == 0 {
            if !self.peers.is_empty() || !self.cluster_addr.is_empty() {
                return Err(invalid(
                    "node-id",
                    "0",
                    "a node id (1 or more) when peers or cluster-addr are given",
                ));
            }
            return Ok(None);
        }
        let peers = parse_peers(&self.peers)?;
        let Some(own) = peers.get(&self.node_id) else {
            return Err(invalid(
                "peers",
                &self.peers,
                "a list that includes this node's id (node-id)",
            ));
        };
        if !(1..=60_000).contains(&self.raft_tick_ms) {
            return Err(invalid(
                "raft-tick-ms",
                &self.raft_tick_ms.to_string(),
                "1 to 60000",
            ));
        }
        if !(3..=1000).contains(&self.raft_election_ticks) {
            return Err(invalid(
                "raft-election-ticks",
                &self.raft_election_ticks.to_string(),
                "3 to 1000",
            ));
        }
        if self.raft_scrub_kib_per_sec > MAX_SCRUB_KIB_PER_SEC {
            return Err(invalid(
                "raft-scrub-kib-per-sec",
                &self.raft_scrub_kib_per_sec.to_string(),
                "0 to 4194304 (4 GiB/s)",
            ));
        }
        let listen = if self.cluster_addr.is_empty() {
            own.to_string()
        } else {
            self.cluster_addr.clone()
        };
        Ok(Some(crate::cluster::ClusterSettings {
            node: self.node_id,
            listen,
            peers,
            tick: std::time::Duration::from_millis(self.raft_tick_ms),
            election_ticks: self.raft_election_ticks,
            scrub_bytes_per_tick: scrub_bytes_per_tick(
                self.raft_scrub_kib_per_sec,
                self.raft_tick_ms,
            ),
            join: self.join,
            retention_check_interval: std::time::Duration::from_millis(
                self.kafka.log_retention_check_interval_ms,
            ),
        }))
    }

    /// The compatibility level.
    pub fn compatibility(&self) -> Result<Compatibility, ConfigError> {
        match self.compatibility.as_str() {
            "7.4" => Ok(Compatibility::Redis74),
            "7.0" => Ok(Compatibility::Redis70),
            other => Err(invalid("compatibility", other, "7.4 or 7.0")),
        }
    }
}

/// Parses `ID=HOST:PORT,...` (host names resolved now).
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, std::net::SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    const EXPECTED: &str = "ID=HOST:PORT,ID=HOST:PORT,... with distinct ids of 1 or more";
    let mut peers = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let parsed = entry.split_once('=').and_then(|(id, address)| {
            let id = id.trim().parse::<u64>().ok().filter(|id| *id > 0)?;
            let address = address.trim().to_socket_addrs().ok()?.next()?;
            Some((id, address))
        });
        let Some((id, address)) = parsed else {
            return Err(invalid("peers", entry, EXPECTED));
        };
        if peers.insert(id, address).is_some() {
            return Err(invalid("peers", text, EXPECTED));
        }
    }
    if peers.is_empty() {
        return Err(invalid("peers", text, EXPECTED));
    }
    Ok(peers)
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        expected,
    }
}

/// `always`, `everysec` or `no`.
pub fn parse_fsync(text: &str) -> Result<FsyncPolicy, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "always" => Ok(FsyncPolicy::Always),
        "everysec" => Ok(FsyncPolicy::EverySec),
        "no" => Ok(FsyncPolicy::No),
        _ => Err(invalid("appendfsync", text, "always, everysec or no")),
    }
}

/// The name of a sync policy.
pub fn fsync_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "always",
        FsyncPolicy::EverySec => "everysec",
        FsyncPolicy::No => "no",
    }
}

/// A log level name.
pub fn parse_level(text: &str) -> Result<tracing::Level, ConfigError> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" | "notice" => Ok(tracing::Level::INFO),
        "debug" | "verbose" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        _ => Err(invalid(
            "log-level",
            text,
            "error, warn, info, debug or trace",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_rejects_unknown_settings() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("weir.toml");
        std::fs::write(
            &path,
            "data-dir = \"/tmp/x\"\nappendfsync = \"always\"\nmaxclients = 7\n",
        )
        .unwrap();
        let settings = Settings::from_file(&path).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(settings.fsync_policy().unwrap(), FsyncPolicy::Always);
        assert_eq!(settings.maxclients, 7);
        assert_eq!(settings.resp_addr, "127.0.0.1:6379");

        std::fs::write(&path, "no-such-setting = 1\n").unwrap();
        let error = Settings::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("no-such-setting"), "{error}");
        std::fs::write(&path, "appendfsync = \"sometimes\"\n").unwrap();
        let error = Settings::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("always, everysec or no"), "{error}");
    }

    #[test]
    fn the_scrub_rate_is_read_back_in_bytes_a_tick() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("weir.toml");
        let cluster = |lines: &str| {
            let file = format!("node-id = 1\npeers = \"1=127.0.0.1:7001\"\n{lines}\n");
            std::fs::write(&path, file).unwrap();
            Settings::from_file(&path).and_then(|settings| settings.cluster())
        };
        let scrub = |lines: &str| cluster(lines).unwrap().unwrap().scrub_bytes_per_tick;
        assert_eq!(scrub(""), weir_replication::SCRUB_BYTES_PER_TICK);
        assert_eq!(scrub("raft-scrub-kib-per-sec = 0"), 0);
        assert_eq!(
            scrub("raft-scrub-kib-per-sec = 10240\nraft-tick-ms = 100"),
            1 << 20
        );
        assert_eq!(scrub("raft-scrub-kib-per-sec = 1\nraft-tick-ms = 1"), 1);
        let error = cluster("raft-scrub-kib-per-sec = 4194305").unwrap_err();
        assert!(
            error.to_string().contains("raft-scrub-kib-per-sec"),
            "{error}"
        );
    }

    #[test]
    fn topic_log_settings_come_from_the_kafka_table_as_kafkas_do() {
        let defaults = Settings::default().kafka.log_config().unwrap();
        assert_eq!(defaults.retention_ms, Some(weir_log::RETENTION_MS_DEFAULT));
        assert_eq!(defaults.retention_bytes, None);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("weir.toml");
        let table = "[kafka]\nlog-retention-ms = -1\nlog-retention-bytes = 1048576\n\
                     log-segment-bytes = 65536\nlog-retention-check-interval-ms = 5000\n";
        std::fs::write(&path, table).unwrap();
        let settings = Settings::from_file(&path).unwrap();
        let config = settings.kafka.log_config().unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, Some(1 << 20));
        assert_eq!(config.segment_bytes, 65536);
        assert_eq!(settings.kafka.log_retention_check_interval_ms, 5000);
        for (line, complaint) in [
            ("log-retention-ms = 0", "log-retention-ms"),
            ("log-retention-bytes = -2", "log-retention-bytes"),
            ("log-segment-bytes = 100", "log-segment-bytes"),
            ("log-retention-check-interval-ms = 0", "check-interval"),
        ] {
            std::fs::write(&path, format!("[kafka]\n{line}\n")).unwrap();
            let error = Settings::from_file(&path).unwrap_err().to_string();
            assert!(error.contains(complaint), "{line}: {error}");
        }
    }
}
