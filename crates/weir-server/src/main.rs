//! The `weir` binary: `weir serve` runs a node; `weir inspect` checks a
//! data directory offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use weir_server::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "weir: a durable segment log and a Redis-compatible stream engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a node (defaults: data in ./weir-data, RESP on 127.0.0.1:6379,
    /// persistence on with appendfsync everysec, Kafka on 127.0.0.1:9092
    /// with topics synced before produce acknowledgements).
    Serve(Box<ServeArgs>),
    /// Checks a data directory offline, changing nothing.
    Inspect {
        #[command(subcommand)]
        what: InspectCommand,
    },
}

#[derive(Subcommand, Debug)]
enum InspectCommand {
    /// The stream command log: every record's CRC, torn tail or corruption.
    Streams {
        /// The data directory (or its `streams` subdirectory).
        #[arg(default_value = "weir-data")]
        dir: PathBuf,
        /// List every logged command.
        #[arg(long)]
        dump: bool,
    },
    /// weir-log segments under a directory: every batch's CRCs, the index
    /// files, torn tail or corruption.
    Log {
        /// A broker, topic or partition directory.
        dir: PathBuf,
        /// List every batch.
        #[arg(long)]
        dump: bool,
    },
    /// A replicated partition's Raft state: term, vote, commit, applied,
    /// configuration, entries and their terms (leader epochs).
    Raft {
        /// The directory holding the partition's `raft-log`.
        dir: PathBuf,
    },
}

/// Every setting, as a flag; each overrides the config file.
#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// A TOML file with settings (names as the flags, e.g. `data-dir`).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Where data lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The RESP listener's address.
    #[arg(long)]
    resp_addr: Option<String>,
    /// Persist streams to the command log: yes or no.
    #[arg(long, value_parser = parse_yes_no)]
    appendonly: Option<bool>,
    /// When to sync the command log: always, everysec, no.
    #[arg(long)]
    appendfsync: Option<String>,
    /// Password clients must give.
    #[arg(long)]
    requirepass: Option<String>,
    /// Most clients at once.
    #[arg(long)]
    maxclients: Option<usize>,
    /// error, warn, info, debug, trace.
    #[arg(long)]
    log_level: Option<String>,
    /// Runtime threads: 1 (default) is one event loop; 0 is one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Entries per stream node.
    #[arg(long)]
    stream_node_max_entries: Option<u64>,
    /// Bytes per stream node.
    #[arg(long)]
    stream_node_max_bytes: Option<u64>,
    /// Redis release to follow where releases differ: 7.4 or 7.0.
    #[arg(long)]
    compatibility: Option<String>,
    /// Largest bulk string of a request.
    #[arg(long)]
    proto_max_bulk_len: Option<usize>,
    /// Unprocessed input a client may hold.
    #[arg(long)]
    client_query_buffer_limit: Option<usize>,
    /// Pub/sub hard output limit (bytes).
    #[arg(long)]
    pubsub_output_hard_limit: Option<usize>,
    /// Pub/sub soft output limit (bytes) ...
    #[arg(long)]
    pubsub_output_soft_limit: Option<usize>,
    /// ... held for this many seconds.
    #[arg(long)]
    pubsub_output_soft_seconds: Option<u64>,
    /// Replies queued for a client that does not read them (bytes).
    #[arg(long)]
    client_output_limit: Option<usize>,
    /// Close clients idle this many seconds (0: never).
    #[arg(long)]
    timeout: Option<u64>,
    /// The Kafka listener's address (`off`: no Kafka listener).
    #[arg(long)]
    kafka_addr: Option<String>,
    /// HOST:PORT that Kafka clients are told to connect to.
    #[arg(long)]
    kafka_advertised_addr: Option<String>,
    /// Partitions of auto-created topics.
    #[arg(long)]
    kafka_num_partitions: Option<u32>,
    /// Create topics that clients ask Metadata for: yes or no.
    #[arg(long, value_parser = parse_yes_no)]
    kafka_auto_create_topics: Option<bool>,
    /// When topic logs are synced: always, never, or milliseconds.
    #[arg(long)]
    kafka_flush: Option<String>,
    /// How long topics keep records (ms; -1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    kafka_log_retention_ms: Option<i64>,
    /// How many bytes a partition keeps (-1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    kafka_log_retention_bytes: Option<i64>,
    /// The size of a topic's segment files (bytes).
    #[arg(long)]
    kafka_log_segment_bytes: Option<u32>,
    /// How often retention runs (ms).
    #[arg(long)]
    kafka_log_retention_check_interval_ms: Option<u64>,
    /// How long an empty group's first rebalance waits for members (ms).
    #[arg(long)]
    kafka_group_initial_rebalance_delay_ms: Option<u64>,
    /// A SASL/PLAIN user, as USER:PASSWORD (repeatable).
    #[arg(long = "kafka-user", value_name = "USER:PASSWORD")]
    kafka_users: Vec<String>,
    /// This node's id in a cluster (0: one node alone).
    #[arg(long)]
    node_id: Option<u64>,
    /// Where this node listens for its peers (default: its entry in
    /// --peers).
    #[arg(long)]
    cluster_addr: Option<String>,
    /// Every node: ID=HOST:PORT,... (cluster addresses).
    #[arg(long)]
    peers: Option<String>,
    /// The replication tick (ms).
    #[arg(long)]
    raft_tick_ms: Option<u64>,
    /// Ticks before a follower without a leader stands for election.
    #[arg(long)]
    raft_election_ticks: Option<usize>,
    /// How fast each node reads its replicas' logs back to find rot
    /// before a reader does, in KiB/s (0: never; default 1280).
    #[arg(long)]
    raft_scrub_kib_per_sec: Option<u64>,
    /// Join a running cluster (--peers names its nodes and this one); its
    /// replicas then move here with AlterPartitionReassignments.
    #[arg(long)]
    join: bool,
}

fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err(format!("expected yes or no, not {text:?}")),
    }
}

impl ServeArgs {
    fn settings(&self) -> Result<Settings, weir_server::config::ConfigError> {
        let mut settings = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! apply {
            ($($field:ident),*) => {
                $(if let Some(value) = &self.$field {
                    settings.$field = value.clone();
                })*
            };
        }
        apply!(
            data_dir,
            resp_addr,
            appendonly,
            appendfsync,
            requirepass,
            maxclients,
            log_level,
            threads,
            stream_node_max_entries,
            stream_node_max_bytes,
            compatibility,
            proto_max_bulk_len,
            client_query_buffer_limit,
            pubsub_output_hard_limit,
            pubsub_output_soft_limit,
            pubsub_output_soft_seconds,
            client_output_limit,
            timeout,
            kafka_addr,
            kafka_advertised_addr,
            node_id,
            cluster_addr,
            peers,
            raft_tick_ms,
            raft_election_ticks,
            raft_scrub_kib_per_sec
        );
        if self.join {
            settings.join = true;
        }
        if let Some(partitions) = self.kafka_num_partitions {
            settings.kafka.num_partitions = partitions;
        }
        if let Some(create) = self.kafka_auto_create_topics {
            settings.kafka.auto_create_topics = create;
        }
        if let Some(flush) = &self.kafka_flush {
            settings.kafka.flush = flush.clone();
        }
        if let Some(retention) = self.kafka_log_retention_ms {
            settings.kafka.log_retention_ms = retention;
        }
        if let Some(retention) = self.kafka_log_retention_bytes {
            settings.kafka.log_retention_bytes = retention;
        }
        if let Some(bytes) = self.kafka_log_segment_bytes {
            settings.kafka.log_segment_bytes = bytes;
        }
        if let Some(interval) = self.kafka_log_retention_check_interval_ms {
            settings.kafka.log_retention_check_interval_ms = interval;
        }
        if let Some(delay) = self.kafka_group_initial_rebalance_delay_ms {
            settings.kafka.group_initial_rebalance_delay_ms = delay;
        }
        for user in &self.kafka_users {
            let Some((name, password)) = user.split_once(':') else {
                return Err(weir_server::config::ConfigError::Invalid {
                    name: "kafka-user",
                    value: user.clone(),
                    expected: "USER:PASSWORD",
                });
            };
            settings.kafka.users.insert(name.into(), password.into());
        }
        settings.validate()?;
        Ok(settings)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Inspect { what } => inspect(what),
    }
}

fn inspect(what: InspectCommand) -> ExitCode {
    let (dir, result) = match &what {
        InspectCommand::Streams { dir, dump } => (dir, weir_server::inspect::streams(dir, *dump)),
        InspectCommand::Log { dir, dump } => (dir, weir_server::inspect::log(dir, *dump)),
        InspectCommand::Raft { dir } => (dir, weir_server::inspect::raft(dir)),
    };
    match result {
        Ok(report) => {
            print!("{}", report.text);
            if report.corrupt {
                eprintln!("corruption found");
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("weir inspect: {}: {error}", dir.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(madsim))]
fn serve(args: &ServeArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("weir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let level =
        weir_server::config::parse_level(&settings.log_level).unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    // One thread (the default) runs every connection on one event loop,
    // like Redis: the keyspace is behind one lock anyway, and on a loaded
    // machine a second worker costs more in wake-ups than it gains.
    let mut builder = if settings.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if settings.threads > 1 {
            builder.worker_threads(settings.threads);
        }
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let clock = std::sync::Arc::new(weir_io::SystemClock);
        let (running, listener) = match weir_server::server::start(settings.clone(), clock).await {
            Ok(started) => started,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let node = std::sync::Arc::clone(&running.node);
        let storage = match weir_server::server::open_log_storage(&settings.data_dir) {
            Ok(storage) => storage,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let clock = std::sync::Arc::clone(&node.clock);
        let shutdown = node.shutdown.clone();
        let kafka = match weir_server::server::start_kafka(&settings, storage, clock, shutdown).await {
            Ok(kafka) => kafka,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let kafka_addr = kafka
            .as_ref()
            .map_or_else(|| "off".to_string(), |kafka| kafka.addr.to_string());
        let topics = kafka.as_ref().map_or(0, |kafka| kafka.kafka.log.topics().len());
        let recovery = node.recovery.as_ref();
        tracing::info!(
            resp = %running.resp_addr,
            kafka = %kafka_addr,
            topics,
            data_dir = %settings.data_dir.display(),
            appendonly = settings.appendonly,
            appendfsync = %settings.appendfsync,
            recovered_commands = recovery.map_or(0, |recovery| recovery.commands),
            recovered_bytes = recovery.map_or(0, |recovery| recovery.bytes),
            torn_tail_cut = recovery.and_then(|recovery| recovery.truncated.as_ref()).map_or(0, |cut| cut.1),
            keys = node.lock().db.engine().key_count(),
            "weir {} ready", env!("CARGO_PKG_VERSION")
        );
        let signals = std::sync::Arc::clone(&node);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: shutting down");
            signals.request_shutdown();
        });
        let replication = kafka.as_ref().and_then(|kafka| kafka.cluster.clone()).map(|cluster| {
            tokio::spawn(weir_server::server::shut_down_on_cluster_failure(
                std::sync::Arc::clone(&node),
                cluster,
            ))
        });
        let kafka_task = kafka.map(|kafka| {
            tokio::spawn(weir_server::server::serve_kafka(std::sync::Arc::clone(&node), kafka))
        });
        weir_server::server::serve(node, listener).await;
        if let Some(task) = kafka_task {
            let _ = task.await;
        }
        let replication_failed = match replication {
            Some(task) => task.await.unwrap_or(false),
            None => false,
        };
        if replication_failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

#[cfg(not(madsim))]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                biased;
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Under the simulator the binary is not used: nodes are started by the
/// simulation through the library.
#[cfg(madsim)]
fn serve(_: &ServeArgs) -> ExitCode {
    eprintln!("weir serve is not available in a --cfg madsim build");
    ExitCode::FAILURE
}
