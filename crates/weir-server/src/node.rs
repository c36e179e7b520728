//! The node's shared state: the stream keyspace (with or without its
//! command log), the connected clients, statistics and the settings that
//! can change at run time, behind one lock.
//!
//! A connection takes the lock once per batch of pipelined requests, runs
//! them, commits the command log, hands the replies of clients that the
//! batch unblocked to those clients, and lets go before writing its own
//! replies. Nothing inside the lock waits on the network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use weir_io::Clock;
use weir_kafka::shutdown::Shutdown;
use weir_stream::{
    ClientId, Config, Context, Engine, FsyncPolicy, LogRecovery, NodeLimits, Outcome,
    PersistenceError, Reply, Store,
};

use crate::config::Settings;

/// The keyspace, persisted or not.
#[derive(Debug)]
pub enum Db {
    /// With a command log.
    Persistent(Box<Store>),
    /// In memory only (`appendonly no`).
    Memory(Box<Engine>),
}

impl Db {
    /// Runs one command.
    pub fn execute(&mut self, context: &Context, args: &[&[u8]]) -> Outcome {
        match self {
            Db::Persistent(store) => store.execute(context, args),
            Db::Memory(engine) => engine.execute(context, args),
        }
    }

    /// Starts a transaction: with a command log, what the commands run
    /// until [`Db::end_transaction`] change is logged as one record (kept
    /// whole or not at all by a crash).
    pub fn begin_transaction(&mut self) {
        if let Db::Persistent(store) = self {
            store.begin_transaction();
        }
    }

    /// Ends the transaction begun by [`Db::begin_transaction`].
    pub fn end_transaction(&mut self) {
        if let Db::Persistent(store) = self {
            store.end_transaction();
        }
    }

    /// Ends the engine's batch (a MULTI/EXEC), serving the readers blocked
    /// on the keys it wrote; what that changes goes to the command log.
    pub fn end_batch(&mut self) {
        match self {
            Db::Persistent(store) => store.end_batch(),
            Db::Memory(engine) => engine.end_batch(),
        }
    }

    /// The engine.
    pub fn engine(&mut self) -> &mut Engine {
        match self {
            Db::Persistent(store) => store.engine(),
            Db::Memory(engine) => engine,
        }
    }

    /// Whether commands have changed what the command log must hold and
    /// it is not written yet.
    pub fn has_uncommitted(&self) -> bool {
        matches!(self, Db::Persistent(store) if store.has_uncommitted())
    }

    /// Writes what the commands run so far changed, and syncs it with
    /// `appendfsync always`.
    pub fn commit(&mut self) -> Result<(), PersistenceError> {
        match self {
            Db::Persistent(store)
                if store.has_uncommitted() || store.policy() == FsyncPolicy::Always =>
            {
                store.commit()
            }
            _ => Ok(()),
        }
    }

    /// Periodic work of the log (the `everysec` sync, rewrite steps).
    pub fn tick(&mut self) -> Result<(), PersistenceError> {
        match self {
            Db::Persistent(store) => store.tick(),
            Db::Memory(_) => Ok(()),
        }
    }

    /// The store, when persisted.
    pub fn store(&mut self) -> Option<&mut Store> {
        match self {
            Db::Persistent(store) => Some(store),
            Db::Memory(_) => None,
        }
    }
}

/// A connected client, as the node sees it.
#[derive(Debug)]
pub struct ClientEntry {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Our address on that connection.
    pub laddr: SocketAddr,
    /// CLIENT SETNAME.
    pub name: Vec<u8>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Vec<u8>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Vec<u8>,
    /// When it connected (ms).
    pub created_ms: u64,
    /// When it last sent a command (ms).
    pub last_ms: u64,
    /// The last command's name, lower case.
    pub last_command: String,
    /// 2 or 3.
    pub resp: u8,
    /// Commands queued in MULTI, if in MULTI.
    pub multi: Option<usize>,
    /// Whether it waits in a blocking read.
    pub blocked: bool,
    /// Pub/sub subscriptions (channels and patterns).
    pub subscriptions: usize,
    /// Whether a key it watches was modified.
    pub watch_dirty: bool,
    /// Keys it watches.
    pub watched: Vec<Vec<u8>>,
    /// Replies waiting to be sent (a blocked read's outcome), and their size.
    pub inbox: Vec<Reply>,
    /// Bytes of `inbox`, roughly.
    pub inbox_bytes: usize,
    /// Set when the client must be closed, with the reason.
    pub killed: Option<&'static str>,
    /// Wakes the connection's task.
    pub notify: Arc<Notify>,
}

/// Counters since the node started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_received: u64,
    /// Connections refused (maxclients).
    pub rejected_connections: u64,
    /// Commands processed.
    pub commands: u64,
    /// Error replies, by their first word.
    pub errors: BTreeMap<String, u64>,
    /// Error replies.
    pub error_replies: u64,
    /// Bytes read from clients.
    pub net_input_bytes: u64,
    /// Bytes written to clients.
    pub net_output_bytes: u64,
    /// Clients closed for their query buffer.
    pub query_buffer_disconnections: u64,
    /// Clients closed for their output buffer.
    pub output_buffer_disconnections: u64,
    /// Protocol errors (clients closed for malformed requests).
    pub protocol_errors: u64,
    /// INFO commandstats, by command name (`xgroup|create` for a
    /// subcommand), as Redis counts them.
    pub commands_by_name: BTreeMap<String, CommandStat>,
}

/// One line of INFO commandstats. As Redis: a call is counted when the
/// command has run (a blocking read when it completes), a rejected call is
/// one refused before running (arity, authentication, a subscribed RESP2
/// client), a failed call one that ran and replied with an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStat {
    /// Runs.
    pub calls: u64,
    /// Microseconds spent running.
    pub usec: u64,
    /// Refused before running.
    pub rejected_calls: u64,
    /// Ran and replied with an error.
    pub failed_calls: u64,
}

/// Settings that CONFIG SET can change.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The password (empty: none).
    pub requirepass: Vec<u8>,
    /// Most clients at once.
    pub maxclients: usize,
    /// Idle timeout in seconds (0: none).
    pub timeout: u64,
    /// Largest bulk string.
    pub proto_max_bulk_len: usize,
    /// Largest query buffer.
    pub client_query_buffer_limit: usize,
    /// Largest inbox of a normal client.
    pub client_output_limit: usize,
    /// Pub/sub output limits.
    pub pubsub_limits: weir_stream::pubsub::Limits,
}

/// The state behind the node's lock.
#[derive(Debug)]
pub struct State {
    /// The keyspace.
    pub db: Db,
    /// Connected clients.
    pub clients: BTreeMap<ClientId, ClientEntry>,
    /// Clients watching each key.
    pub watchers: HashMap<Vec<u8>, BTreeSet<ClientId>>,
    /// Counters.
    pub stats: Stats,
    /// Changeable settings.
    pub runtime: Runtime,
    /// What the last command-log write did, for INFO: ok or the error.
    pub last_write_error: Option<String>,
    /// The engine's change counter when the node started serving (after
    /// the command log's replay, which Redis does not count either).
    pub changes_at_start: u64,
    next_client_id: ClientId,
}

impl State {
    /// Registers a new connection, or refuses it (counted) when the node
    /// already has `maxclients`.
    pub fn register_client(
        &mut self,
        addr: SocketAddr,
        laddr: SocketAddr,
        now_ms: u64,
        notify: Arc<Notify>,
    ) -> Option<ClientId> {
        self.stats.connections_received += 1;
        if self.clients.len() >= self.runtime.maxclients {
            self.stats.rejected_connections += 1;
            return None;
        }
        let id = self.next_client_id();
        self.clients.insert(
            id,
            ClientEntry {
                addr,
                laddr,
                name: Vec::new(),
                lib_name: Vec::new(),
                lib_ver: Vec::new(),
                created_ms: now_ms,
                last_ms: now_ms,
                last_command: String::new(),
                resp: 2,
                multi: None,
                blocked: false,
                subscriptions: 0,
                watch_dirty: false,
                watched: Vec::new(),
                inbox: Vec::new(),
                inbox_bytes: 0,
                killed: None,
                notify,
            },
        );
        Some(id)
    }

    /// A client id, never reused.
    pub fn next_client_id(&mut self) -> ClientId {
        self.next_client_id += 1;
        self.next_client_id
    }

    /// Marks the clients watching `key` as having seen it modified.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(watchers) = self.watchers.get(key) {
            for client in watchers {
                if let Some(entry) = self.clients.get_mut(client) {
                    entry.watch_dirty = true;
                }
            }
        }
    }

    /// Marks every watching client (FLUSHALL).
    pub fn touch_all(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        for entry in self.clients.values_mut() {
            if !entry.watched.is_empty() {
                entry.watch_dirty = true;
            }
        }
    }

    /// Forgets a client's watches.
    pub fn unwatch(&mut self, client: ClientId) {
        let Some(entry) = self.clients.get_mut(&client) else {
            return;
        };
        entry.watch_dirty = false;
        for key in std::mem::take(&mut entry.watched) {
            if let Some(watchers) = self.watchers.get_mut(&key) {
                watchers.remove(&client);
                if watchers.is_empty() {
                    self.watchers.remove(&key);
                }
            }
        }
    }

    /// After commands ran: commits the log, then delivers the replies of
    /// clients they unblocked and wakes subscribers with new messages and
    /// clients to disconnect.
    ///
    /// With `appendfsync always`, replies may only leave once the commands
    /// are durable: when the commit fails, this returns the error, the
    /// caller drops its own replies and closes its connection, and the
    /// clients this batch unblocked are closed too, without their replies.
    /// (The log then refuses writes with MISCONF until restart; see
    /// GUARANTEES.md.) With `everysec` and `no`, replies never promised
    /// durability: they go out, and the records stay queued for the next
    /// write.
    pub fn settle(&mut self) -> Result<(), PersistenceError> {
        let committed = self.db.commit();
        let withhold = committed.is_err()
            && self
                .db
                .store()
                .is_some_and(|store| store.policy() == FsyncPolicy::Always);
        match &committed {
            Ok(()) => self.last_write_error = None,
            Err(error) => self.last_write_error = Some(error.to_string()),
        }
        let engine = self.db.engine();
        let wakeups = engine.take_wakeups();
        let ready = engine.pubsub().take_ready();
        let dropped = engine.pubsub().take_disconnected();
        for (client, reply) in wakeups {
            if let Some(entry) = self.clients.get_mut(&client) {
                entry.blocked = false;
                if withhold {
                    entry.killed = Some("command log failure");
                } else {
                    entry.inbox_bytes += approximate_size(&reply);
                    entry.inbox.push(reply);
                    if entry.inbox_bytes > self.runtime.client_output_limit {
                        entry.killed = Some("output buffer limit");
                        self.stats.output_buffer_disconnections += 1;
                    }
                }
                entry.notify.notify_one();
            }
        }
        for client in ready {
            if let Some(entry) = self.clients.get(&client) {
                entry.notify.notify_one();
            }
        }
        for client in dropped {
            if let Some(entry) = self.clients.get_mut(&client) {
                entry.killed = Some("pub/sub output buffer limit");
                self.stats.output_buffer_disconnections += 1;
                entry.notify.notify_one();
            }
        }
        if withhold {
            committed
        } else {
            Ok(())
        }
    }

    /// The commandstats line of `name`.
    pub fn command_stat(&mut self, name: &str) -> &mut CommandStat {
        if !self.stats.commands_by_name.contains_key(name) {
            self.stats
                .commands_by_name
                .insert(name.to_string(), CommandStat::default());
        }
        self.stats
            .commands_by_name
            .get_mut(name)
            .expect("inserted above")
    }

    /// Counts an error reply in the statistics.
    pub fn count_error(&mut self, text: &str) {
        self.stats.error_replies += 1;
        let code = text.split(' ').next().unwrap_or("ERR");
        match self.stats.errors.get_mut(code) {
            Some(count) => *count += 1,
            None => {
                // Like Redis, keep at most 128 distinct codes.
                if self.stats.errors.len() < 128 {
                    self.stats.errors.insert(code.to_string(), 1);
                }
            }
        }
    }

    /// Removes a client that disconnected: its blocked read, its
    /// subscriptions, its watches.
    pub fn remove_client(&mut self, client: ClientId) {
        self.unwatch(client);
        let engine = self.db.engine();
        engine.unblock(client);
        engine.pubsub().remove_client(client);
        self.clients.remove(&client);
    }
}

/// A size estimate of a reply, for the output limit.
pub fn approximate_size(reply: &Reply) -> usize {
    let mut out = Vec::new();
    reply.write_resp2(&mut out);
    out.len()
}

/// The node: shared state and what does not change.
#[derive(Debug)]
pub struct Node {
    state: Mutex<State>,
    /// The settings it started with.
    pub settings: Settings,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// When it started (ms).
    pub started_ms: u64,
    /// What recovery did at start.
    pub recovery: Option<LogRecovery>,
    /// Set when shutting down.
    pub shutdown: Shutdown,
    /// Wakes the timer task when a client blocks with a deadline.
    pub timer: Notify,
    /// The RESP listener's address, once bound.
    pub resp_addr: Mutex<Option<SocketAddr>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory cannot be used.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command log could not be recovered.
    #[error("cannot recover the stream command log: {0}")]
    Recovery(#[from] PersistenceError),
    /// The topics could not be opened.
    #[error("cannot open the Kafka topics: {0}")]
    Log(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Node {
    /// Opens a node: recovers the keyspace from the data directory's
    /// command log (if persistence is on).
    pub fn open(
        settings: Settings,
        storage: Option<Arc<dyn weir_io::Storage>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Node>, StartError> {
        settings.validate()?;
        let config = Config {
            node_limits: NodeLimits {
                max_entries: settings.stream_node_max_entries,
                max_bytes: settings.stream_node_max_bytes,
            },
            compatibility: settings.compatibility()?,
        };
        let pubsub_limits = weir_stream::pubsub::Limits {
            hard_bytes: settings.pubsub_output_hard_limit,
            soft_bytes: settings.pubsub_output_soft_limit,
            soft_seconds: settings.pubsub_output_soft_seconds,
        };
        let (mut db, recovery) = match (settings.appendonly, storage) {
            (true, Some(storage)) => {
                let (store, recovery) = Store::open(
                    storage,
                    Arc::clone(&clock),
                    config,
                    settings.fsync_policy()?,
                )?;
                (Db::Persistent(Box::new(store)), Some(recovery))
            }
            _ => (
                Db::Memory(Box::new(Engine::new(config, Arc::clone(&clock)))),
                None,
            ),
        };
        db.engine().pubsub().set_limits(pubsub_limits);
        let changes_at_start = db.engine().stats().changes;
        let runtime = Runtime {
            requirepass: settings.requirepass.as_bytes().to_vec(),
            maxclients: settings.maxclients,
            timeout: settings.timeout,
            proto_max_bulk_len: settings.proto_max_bulk_len,
            client_query_buffer_limit: settings.client_query_buffer_limit,
            client_output_limit: settings.client_output_limit,
            pubsub_limits,
        };
        let started_ms = clock.now_ms();
        let shutdown = Shutdown::new();
        Ok(Arc::new(Node {
            state: Mutex::new(State {
                db,
                clients: BTreeMap::new(),
                watchers: HashMap::new(),
                stats: Stats::default(),
                runtime,
                last_write_error: None,
                changes_at_start,
                next_client_id: 0,
            }),
            settings,
            clock,
            started_ms,
            recovery,
            shutdown,
            timer: Notify::new(),
            resp_addr: Mutex::new(None),
        }))
    }

    /// Locks the state. A panic while it was held (a bug) may have left
    /// the keyspace and its command log half-updated: the process aborts
    /// rather than use them (crash-first, as everywhere in weir; the next
    /// start recovers from the log).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        weir_io::sync::lock(&self.state)
    }

    /// Starts a graceful shutdown.
    pub fn request_shutdown(&self) {
        self.shutdown.request();
    }

    /// Whether a shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_requested()
    }
}
