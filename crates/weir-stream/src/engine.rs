//! The engine: a keyspace of streams, command dispatch, blocking reads and
//! pub/sub, with no threads, no I/O and no clock but the one it is given.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use weir_io::Clock;

use crate::group::Stream;
use crate::id::StreamId;
use crate::pubsub::PubSub;
use crate::reply::{Error, Reply};
use crate::stream::NodeLimits;

/// A client of the engine (a connection, for the server).
pub type ClientId = u64;

/// Which Redis release to follow where releases differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compatibility {
    /// Redis 7.4 (the default): `XREAD ... +`, consumers' `active-time` and
    /// `inactive`, consumers created by every XREADGROUP, XSETID refusing
    /// IDs below the last deleted one, XDEL checking IDs before the key.
    #[default]
    Redis74,
    /// Redis 7.0, for comparison with a 7.0 server.
    Redis70,
}

/// Settings of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `stream-node-max-entries` and `stream-node-max-bytes`.
    pub node_limits: NodeLimits,
    /// Which Redis release to follow.
    pub compatibility: Compatibility,
}

/// How a command is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The client running it.
    pub client: ClientId,
    /// Inside MULTI/EXEC: `BLOCK` acts as an immediate timeout.
    pub no_blocking: bool,
    /// Replayed from the command log: `LIMIT` is ignored (trims were logged
    /// exactly) and nothing blocks.
    pub replaying: bool,
    /// The time to run it at, when the caller read the clock already (a
    /// server reads it once per batch of pipelined commands); `None`: the
    /// engine reads its clock.
    pub now_ms: Option<u64>,
}

/// What executing a command did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The reply to send.
    Reply(Reply),
    /// The client is blocked; its reply will come from
    /// [`Engine::take_wakeups`].
    Blocked,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome::Reply(reply)
    }
}

impl From<Error> for Outcome {
    fn from(error: Error) -> Self {
        Outcome::Reply(Reply::Error(error))
    }
}

/// FxHash: a fast, deterministic hasher for the keyspace (no random seed,
/// so iteration order is the same in every run).
#[derive(Default)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for byte in chunks.remainder() {
            self.add(u64::from(*byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

/// The keyspace map type.
pub type Keyspace = HashMap<Vec<u8>, Stream, BuildHasherDefault<FxHasher>>;

/// A read waiting for data.
#[derive(Clone, Debug)]
pub(crate) struct BlockedRead {
    pub keys: Vec<Vec<u8>>,
    /// For XREAD: entries must be after these IDs.
    pub ids: Vec<StreamId>,
    pub group: Option<BlockedGroup>,
    pub count: usize,
    /// `None`: wait forever.
    pub deadline_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct BlockedGroup {
    pub group: Vec<u8>,
    pub consumer: Vec<u8>,
    pub noack: bool,
}

/// The stream engine.
#[derive(Debug)]
pub struct Engine {
    pub(crate) keys: Keyspace,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    /// The time of the command being executed.
    pub(crate) now: u64,
    pub(crate) blocked: BTreeMap<ClientId, BlockedRead>,
    /// Clients blocked on each key, first blocked first.
    pub(crate) blocked_on_key: HashMap<Vec<u8>, VecDeque<ClientId>, BuildHasherDefault<FxHasher>>,
    pub(crate) ready_keys: Vec<Vec<u8>>,
    pub(crate) wakeups: Vec<(ClientId, Reply)>,
    /// Commands that reproduce the effects of what ran, for the log.
    pub(crate) propagated: Vec<Vec<Vec<u8>>>,
    /// Whether to record them (only when something logs them).
    propagation: bool,
    pub(crate) pubsub: PubSub,
    /// Entries served to readers, for the statistics.
    pub(crate) stats: Stats,
    /// Inside a batch (a MULTI/EXEC): blocked readers are served when it
    /// ends, not after each command.
    pub(crate) in_batch: bool,
}

/// Counters since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands executed.
    pub commands: u64,
    /// Commands that replied with an error.
    pub errors: u64,
    /// Changes, counted where Redis counts its `dirty` counter (INFO
    /// `rdb_changes_since_last_save`): an XADD 1, an XDEL or XTRIM the
    /// entries removed, an XACK the entries acknowledged, a group read 1
    /// per stream whose group state it changed, a claim 1 per entry, a
    /// consumer created 1, a group or ID change 1, a DEL the keys removed.
    pub changes: u64,
}

impl Engine {
    /// An empty engine reading time from `clock`.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        Self {
            keys: Keyspace::default(),
            config,
            clock,
            now,
            blocked: BTreeMap::new(),
            blocked_on_key: HashMap::default(),
            ready_keys: Vec::new(),
            wakeups: Vec::new(),
            propagated: Vec::new(),
            propagation: false,
            pubsub: PubSub::default(),
            stats: Stats::default(),
            in_batch: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Changes the node limits (`CONFIG SET stream-node-max-*`).
    pub fn set_node_limits(&mut self, limits: NodeLimits) {
        self.config.node_limits = limits;
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Executes one command (`args[0]` is its name). Write commands append
    /// what they did to the propagation queue ([`Engine::take_propagated`]);
    /// writes that unblock readers queue their replies
    /// ([`Engine::take_wakeups`]).
    pub fn execute(&mut self, context: &Context, args: &[&[u8]]) -> Outcome {
        self.now = context.now_ms.unwrap_or_else(|| self.clock.now_ms());
        self.stats.commands += 1;
        let outcome = crate::commands::dispatch(self, context, args);
        if matches!(outcome, Outcome::Reply(Reply::Error(_))) {
            self.stats.errors += 1;
        }
        if !self.ready_keys.is_empty() && !self.in_batch {
            self.serve_ready_keys();
        }
        outcome
    }

    /// Begins a batch of commands that run as one (MULTI/EXEC): readers
    /// blocked on keys it writes are served when it ends, with the keys as
    /// they are then, as Redis serves them after the whole command (so a
    /// reader sees every entry a transaction added, and nothing it added
    /// then deleted).
    pub fn begin_batch(&mut self) {
        assert!(!self.in_batch, "batches do not nest");
        self.in_batch = true;
    }

    /// Ends the batch begun by [`Engine::begin_batch`] and serves the
    /// readers blocked on the keys it made ready.
    pub fn end_batch(&mut self) {
        assert!(self.in_batch, "a batch was begun");
        self.in_batch = false;
        if !self.ready_keys.is_empty() {
            self.serve_ready_keys();
        }
    }

    /// Replies for clients that a write unblocked or that timed out.
    pub fn take_wakeups(&mut self) -> Vec<(ClientId, Reply)> {
        std::mem::take(&mut self.wakeups)
    }

    /// Commands to log so that a replay reproduces the state (explicit IDs,
    /// exact trims, group deliveries as XCLAIMs); empty unless
    /// [`Engine::enable_propagation`] was called.
    pub fn take_propagated(&mut self) -> Vec<Vec<Vec<u8>>> {
        std::mem::take(&mut self.propagated)
    }

    /// Whether any client is blocked.
    pub fn blocked_clients(&self) -> usize {
        self.blocked.len()
    }

    /// The earliest deadline of a blocked client, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.blocked
            .values()
            .filter_map(|read| read.deadline_ms)
            .min()
    }

    /// Times out the blocked clients whose deadline has passed: each gets a
    /// null reply from [`Engine::take_wakeups`].
    pub fn expire_blocked(&mut self, now_ms: u64) {
        let expired: Vec<ClientId> = self
            .blocked
            .iter()
            .filter(|(_, read)| read.deadline_ms.is_some_and(|deadline| deadline <= now_ms))
            .map(|(client, _)| *client)
            .collect();
        for client in expired {
            self.unblock(client);
            self.wakeups.push((client, Reply::NullArray));
        }
    }

    /// Forgets a blocked client (it disconnected); no reply is queued.
    pub fn unblock(&mut self, client: ClientId) -> bool {
        let Some(read) = self.blocked.remove(&client) else {
            return false;
        };
        for key in &read.keys {
            if let Some(queue) = self.blocked_on_key.get_mut(key) {
                queue.retain(|waiting| *waiting != client);
                if queue.is_empty() {
                    self.blocked_on_key.remove(key);
                }
            }
        }
        true
    }

    pub(crate) fn signal_ready(&mut self, key: &[u8]) {
        if self.blocked.is_empty() {
            return;
        }
        if self.blocked_on_key.contains_key(key)
            && !self.ready_keys.iter().any(|ready| ready == key)
        {
            self.ready_keys.push(key.to_vec());
        }
    }

    pub(crate) fn propagate(&mut self, command: impl FnOnce() -> Vec<Vec<u8>>) {
        if self.propagation {
            self.propagated.push(command());
        }
    }

    pub(crate) fn propagating(&self) -> bool {
        self.propagation
    }

    /// Records, from now on, the commands that reproduce what each command
    /// changed, for [`Engine::take_propagated`]. Off by default: an engine
    /// without a log keeps nothing.
    pub fn enable_propagation(&mut self) {
        self.propagation = true;
    }

    /// Checks every stream's invariants ([`crate::group::Stream::check`]);
    /// tests and the simulator call it after every step. Returns the first
    /// violation, naming the key.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, stream) in self.keys.iter() {
            stream
                .check()
                .map_err(|what| format!("stream {}: {what}", String::from_utf8_lossy(key)))?;
        }
        Ok(())
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The stream at `key`.
    pub fn stream(&self, key: &[u8]) -> Option<&Stream> {
        self.keys.get(key)
    }

    /// The commands that rebuild the stream at `key` exactly (the log
    /// rewrite's snapshot; empty when there is no such key). They include
    /// replay-only commands: run them with [`Context::replaying`] set.
    pub fn snapshot_key(&self, key: &[u8]) -> Vec<Vec<Vec<u8>>> {
        self.keys
            .get(key)
            .map(|stream| crate::snapshot::snapshot_stream(key, stream))
            .unwrap_or_default()
    }

    /// Every key, in the keyspace's (deterministic) order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.keys().map(Vec::as_slice)
    }

    /// Removes every key; blocked group readers get `-NOGROUP`.
    pub fn flush_all(&mut self) {
        let keys: Vec<Vec<u8>> = self.keys.keys().cloned().collect();
        self.keys.clear();
        for key in keys {
            self.signal_ready(&key);
        }
        self.propagate(|| vec![b"FLUSHALL".to_vec()]);
        if !self.ready_keys.is_empty() && !self.in_batch {
            self.serve_ready_keys();
        }
    }

    /// Heap bytes held by the stream at `key` (an estimate of `MEMORY
    /// USAGE`).
    pub fn memory_usage(&self, key: &[u8]) -> Option<usize> {
        self.keys
            .get(key)
            .map(|stream| key.len() + std::mem::size_of::<Stream>() + stream.heap_bytes())
    }

    /// The pub/sub state.
    pub fn pubsub(&mut self) -> &mut PubSub {
        &mut self.pubsub
    }

    /// The clock's current time.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}
