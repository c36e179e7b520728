//! [`SimStorage`]: an in-memory, seeded disk with an explicit durability
//! model and injectable faults.
//!
//! # Durability model
//!
//! A [`SimDisk`] holds a tree of directories and files, each with two
//! images: the *live* image that reads see, and the *durable* image that
//! survives a crash.
//!
//! - A write (or length change) is visible at once and is appended to the
//!   file's list of *pending* operations. [`File::sync`] makes the live image
//!   durable and empties that list.
//! - A directory entry (a file or subdirectory created, renamed or removed)
//!   is durable only after [`Storage::sync_dir`] of the directory holding it.
//!   A file whose entry never became durable vanishes in a crash, whatever
//!   was synced into it.
//! - [`SimDisk::crash`] is a power loss. Every handle opened before it fails
//!   from then on (the process that held it is gone). Each directory reverts
//!   to its durable entries. Each file keeps its durable image plus, chosen
//!   per file by seeded dice weighted by [`CrashWeights`]:
//!   - none of its pending operations (`lose_all`), or
//!   - a random prefix of them, in the order they were issued
//!     (`keep_prefix`), or
//!   - a random prefix followed by a *torn* next write: a random prefix of
//!     that write's bytes, cut at any byte (`tear`).
//!
//!   Operations on different files are independent. The model assumes what
//!   the prefix rule states: a file's unsynced writes reach the media in the
//!   order they were issued. Within one write, any byte may be the last.
//!
//! # Faults
//!
//! Each fault has its own probability in [`Faults`], drawn from the disk's
//! seeded generator at each operation, so one seed gives one sequence of
//! faults for one sequence of operations:
//!
//! | fault | effect |
//! |---|---|
//! | `read_corruption` | one bit of the returned bytes is flipped; the disk is unchanged |
//! | `read_error` | the read fails with `EIO` |
//! | `write_corruption` | one bit of the written bytes is flipped, persistently |
//! | `write_misdirection` | the write lands at another offset of the file (±1 to 64 sectors); the intended range is unchanged |
//! | `write_error` | `EIO`; a random prefix of the bytes may have been written |
//! | `no_space` | `ENOSPC`; a random prefix of the bytes may have been written. Also whenever the disk would exceed `capacity_bytes` |
//! | `sync_failure` | `EIO` from a file or directory sync. For a file, its unsynced writes are then, at random, still pending, partly durable, or dropped from the live image too (the Linux "fsyncgate" behaviour): callers must treat the file as lost back to its last durable state |
//!
//! Latency is not modelled here; the simulator adds it around storage calls.
//! Reads and writes of pending data cost memory: this disk is for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::sync::{lock, Mutex};
use crate::{validate_name, DirEntry, EntryKind, File, FileView, OpenMode, Storage};

/// Linux's `EIO`.
const EIO: i32 = 5;
/// Linux's `ENOSPC`.
const ENOSPC: i32 = 28;
/// The sector size used for misdirected writes.
const SECTOR_BYTES: u64 = 512;
/// The farthest a misdirected write lands from its intended offset.
const MISDIRECTION_SECTORS_MAX: u64 = 64;
/// The root directory's node id.
const ROOT: NodeId = 0;

type NodeId = u64;

/// Probabilities of injected faults (each in `0.0..=1.0`, per operation) and
/// the shape of crashes. The default injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A read returns bytes with one bit flipped.
    pub read_corruption: f64,
    /// A read fails with `EIO`.
    pub read_error: f64,
    /// A write stores its bytes with one bit flipped.
    pub write_corruption: f64,
    /// A write lands at a different offset of the same file.
    pub write_misdirection: f64,
    /// A write fails with `EIO`, possibly after writing a prefix.
    pub write_error: f64,
    /// A write fails with `ENOSPC`, possibly after writing a prefix.
    pub no_space: f64,
    /// A file or directory sync fails with `EIO`.
    pub sync_failure: f64,
    /// Writes that would make the disk hold more live bytes fail with
    /// `ENOSPC`.
    pub capacity_bytes: Option<u64>,
    /// How crashes treat unsynced writes.
    pub crash: CrashWeights,
}

impl Faults {
    /// No faults at all (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any fault can fire during normal operation (crashes aside).
    pub fn any(&self) -> bool {
        let probabilities = [
            self.read_corruption,
            self.read_error,
            self.write_corruption,
            self.write_misdirection,
            self.write_error,
            self.no_space,
            self.sync_failure,
        ];
        probabilities.iter().any(|probability| *probability > 0.0) || self.capacity_bytes.is_some()
    }
}

/// Relative weights of what a crash does to each file's unsynced writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashWeights {
    /// Lose every unsynced write.
    pub lose_all: u32,
    /// Keep a random prefix of the unsynced writes.
    pub keep_prefix: u32,
    /// Keep a random prefix and tear the write after it.
    pub tear: u32,
}

impl Default for CrashWeights {
    fn default() -> Self {
        Self {
            lose_all: 1,
            keep_prefix: 1,
            tear: 1,
        }
    }
}

/// How many times each fault fired, and how many crashes happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Reads returned with a flipped bit.
    pub read_corruptions: u64,
    /// Reads failed with `EIO`.
    pub read_errors: u64,
    /// Writes stored with a flipped bit.
    pub write_corruptions: u64,
    /// Writes that landed elsewhere.
    pub write_misdirections: u64,
    /// Writes failed with `EIO`.
    pub write_errors: u64,
    /// Writes failed with `ENOSPC`.
    pub no_space_errors: u64,
    /// Syncs that failed.
    pub sync_failures: u64,
    /// Crashes.
    pub crashes: u64,
    /// Files whose last kept write was torn by a crash.
    pub torn_writes: u64,
    /// Unsynced operations discarded by crashes.
    pub operations_lost: u64,
}

/// A simulated disk: the shared state behind every [`SimStorage`] handle.
pub struct SimDisk {
    state: Mutex<DiskState>,
}

struct DiskState {
    rng: Xoshiro256PlusPlus,
    faults: Faults,
    /// Incremented by every crash; handles of an older generation are dead.
    generation: u64,
    next_node: NodeId,
    files: BTreeMap<NodeId, FileNode>,
    directories: BTreeMap<NodeId, DirectoryNode>,
    stats: FaultStats,
    /// Mutating operations left before a scheduled crash.
    crash_countdown: Option<u64>,
}

#[derive(Default)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Operations since the last sync, oldest first.
    pending: Vec<Operation>,
    /// Open handles; a removed file's node is kept while it has any.
    handles: u64,
}

enum Operation {
    Write { offset: u64, data: Vec<u8> },
    SetLength(u64),
}

#[derive(Default)]
struct DirectoryNode {
    live: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(NodeId),
    Directory(NodeId),
}

impl SimDisk {
    /// An empty disk with no faults, its dice seeded with `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Self::with_faults(seed, Faults::none())
    }

    /// An empty disk with the given faults.
    pub fn with_faults(seed: u64, faults: Faults) -> Arc<Self> {
        let mut directories = BTreeMap::new();
        directories.insert(ROOT, DirectoryNode::default());
        Arc::new(Self {
            state: Mutex::new(DiskState {
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                faults,
                generation: 0,
                next_node: ROOT + 1,
                files: BTreeMap::new(),
                directories,
                stats: FaultStats::default(),
                crash_countdown: None,
            }),
        })
    }

    /// A handle on the root directory, valid until the next crash.
    pub fn root(self: &Arc<Self>) -> SimStorage {
        let generation = lock(&self.state).generation;
        SimStorage {
            disk: Arc::clone(self),
            directory: ROOT,
            generation,
        }
    }

    /// Replaces the fault probabilities.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// The current fault probabilities.
    pub fn faults(&self) -> Faults {
        lock(&self.state).faults.clone()
    }

    /// What has happened so far.
    pub fn stats(&self) -> FaultStats {
        lock(&self.state).stats.clone()
    }

    /// Loses power: see the module documentation. Every handle opened before
    /// the crash fails from now on.
    pub fn crash(&self) {
        lock(&self.state).crash();
    }

    /// Loses power just before the `operations`-th mutating operation from
    /// now (a write, length change, sync, creation, rename or removal; 1 is
    /// the next one), which then fails like every later use of a handle from
    /// before the crash. Crashes mid-way through whatever the engine is
    /// doing, such as between a write and its sync.
    pub fn schedule_crash(&self, operations: u64) {
        lock(&self.state).crash_countdown = Some(operations.max(1));
    }

    /// Cancels a scheduled crash that has not fired.
    pub fn cancel_crash(&self) {
        lock(&self.state).crash_countdown = None;
    }

    /// Whether a scheduled crash is still pending.
    pub fn crash_pending(&self) -> bool {
        lock(&self.state).crash_countdown.is_some()
    }

    /// Flips the bits of `mask` in the byte at `offset` of file `path`
    /// (components separated by `/`, from the root), in both the live and
    /// the durable image: corruption at rest, for tests.
    pub fn corrupt(&self, path: &str, offset: u64, mask: u8) -> io::Result<()> {
        let mut state = lock(&self.state);
        let mut directory = ROOT;
        let components: Vec<&str> = path.split('/').collect();
        let (file_name, parents) = components
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
        for component in parents {
            directory = match state.directory(directory)?.live.get(*component) {
                Some(Node::Directory(id)) => *id,
                _ => return Err(not_found(component)),
            };
        }
        let id = match state.directory(directory)?.live.get(*file_name) {
            Some(Node::File(id)) => *id,
            _ => return Err(not_found(file_name)),
        };
        let file = state.file(id)?;
        let index = usize::try_from(offset).unwrap_or(usize::MAX);
        for image in [&mut file.live, &mut file.durable] {
            if let Some(byte) = image.get_mut(index) {
                *byte ^= mask;
            }
        }
        for operation in &mut file.pending {
            if let Operation::Write {
                offset: start,
                data,
            } = operation
            {
                if offset >= *start {
                    let at = usize::try_from(offset - *start).unwrap_or(usize::MAX);
                    if let Some(byte) = data.get_mut(at) {
                        *byte ^= mask;
                    }
                }
            }
        }
        Ok(())
    }

    /// Total bytes in live file images.
    pub fn live_bytes(&self) -> u64 {
        lock(&self.state).live_bytes()
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        formatter
            .debug_struct("SimDisk")
            .field("generation", &state.generation)
            .field("files", &state.files.len())
            .field("directories", &state.directories.len())
            .field("faults", &state.faults)
            .finish()
    }
}

impl DiskState {
    fn crash(&mut self) {
        let state = self;
        state.crash_countdown = None;
        state.generation += 1;
        state.stats.crashes += 1;
        for directory in state.directories.values_mut() {
            directory.live = directory.durable.clone();
        }
        let weights = state.faults.crash;
        for file in state.files.values_mut() {
            file.handles = 0;
            if file.pending.is_empty() {
                file.live = file.durable.clone();
                continue;
            }
            let total = u64::from(weights.lose_all)
                + u64::from(weights.keep_prefix)
                + u64::from(weights.tear);
            let dice = if total == 0 {
                0
            } else {
                state.rng.random_range(0..total)
            };
            let mut image = std::mem::take(&mut file.durable);
            let pending = std::mem::take(&mut file.pending);
            let kept = if dice < u64::from(weights.lose_all) {
                0
            } else {
                state.rng.random_range(0..=pending.len())
            };
            for operation in &pending[..kept] {
                apply(&mut image, operation);
            }
            let tear = dice >= u64::from(weights.lose_all) + u64::from(weights.keep_prefix);
            let mut lost = pending.len() - kept;
            if tear {
                if let Some(Operation::Write { offset, data }) = pending.get(kept) {
                    let cut = state.rng.random_range(0..=data.len());
                    apply(
                        &mut image,
                        &Operation::Write {
                            offset: *offset,
                            data: data[..cut].to_vec(),
                        },
                    );
                    state.stats.torn_writes += 1;
                    lost -= 1;
                }
            }
            state.stats.operations_lost += lost as u64;
            file.live = image.clone();
            file.durable = image;
        }
        state.collect_garbage();
    }

    /// Counts down to a scheduled crash; fails if the crash happens now.
    fn tick_crash(&mut self) -> io::Result<()> {
        match self.crash_countdown {
            Some(1) => {
                self.crash();
                Err(crashed())
            }
            Some(left) => {
                self.crash_countdown = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn roll(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.random_bool(probability.min(1.0))
    }

    fn directory(&mut self, id: NodeId) -> io::Result<&mut DirectoryNode> {
        self.directories
            .get_mut(&id)
            .ok_or_else(|| not_found("directory"))
    }

    fn file(&mut self, id: NodeId) -> io::Result<&mut FileNode> {
        self.files.get_mut(&id).ok_or_else(|| not_found("file"))
    }

    fn allocate(&mut self) -> NodeId {
        let id = self.next_node;
        self.next_node += 1;
        id
    }

    fn live_bytes(&self) -> u64 {
        self.files.values().map(|file| file.live.len() as u64).sum()
    }

    /// Applies a write to a file's live image and records it as pending.
    fn write(&mut self, id: NodeId, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let operation = Operation::Write { offset, data };
        let file = self.file(id)?;
        apply(&mut file.live, &operation);
        file.pending.push(operation);
        Ok(())
    }

    /// Frees nodes that no live entry, durable entry or open handle reaches.
    fn collect_garbage(&mut self) {
        let mut reachable_files = std::collections::BTreeSet::new();
        let mut reachable_directories = std::collections::BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if !reachable_directories.insert(id) {
                continue;
            }
            if let Some(directory) = self.directories.get(&id) {
                for node in directory.live.values().chain(directory.durable.values()) {
                    match node {
                        Node::File(file) => {
                            reachable_files.insert(*file);
                        }
                        Node::Directory(child) => stack.push(*child),
                    }
                }
            }
        }
        self.files
            .retain(|id, file| reachable_files.contains(id) || file.handles > 0);
        self.directories
            .retain(|id, _| reachable_directories.contains(id));
    }
}

fn apply(image: &mut Vec<u8>, operation: &Operation) {
    match operation {
        Operation::Write { offset, data } => {
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(data.len());
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
        Operation::SetLength(length) => {
            image.resize(usize::try_from(*length).unwrap_or(usize::MAX), 0);
        }
    }
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what}: not found"))
}

fn crashed() -> io::Error {
    io::Error::other("simulated disk crashed: this handle belongs to a dead process")
}

fn io_error() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(ENOSPC)
}

/// A directory on a [`SimDisk`]. Cheap to clone; dead after a crash.
#[derive(Clone)]
pub struct SimStorage {
    disk: Arc<SimDisk>,
    directory: NodeId,
    generation: u64,
}

impl SimStorage {
    /// The root directory of a new, fault-free disk seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk::new(seed).root()
    }

    /// The disk this directory lives on.
    pub fn disk(&self) -> &Arc<SimDisk> {
        &self.disk
    }

    fn state(&self) -> io::Result<crate::sync::MutexGuard<'_, DiskState>> {
        let state = lock(&self.disk.state);
        if state.generation != self.generation {
            return Err(crashed());
        }
        Ok(state)
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimStorage")
            .field("directory", &self.directory)
            .field("generation", &self.generation)
            .finish()
    }
}

impl Storage for SimStorage {
    fn open_file(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        validate_name(name)?;
        let mut state = self.state()?;
        let existing = state.directory(self.directory)?.live.get(name).copied();
        let id = match (existing, mode) {
            (Some(Node::Directory(_)), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is a directory"),
                ))
            }
            (Some(Node::File(_)), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{name} exists"),
                ))
            }
            (Some(Node::File(id)), _) => id,
            (None, OpenMode::Existing) => return Err(not_found(name)),
            (None, OpenMode::CreateIfMissing | OpenMode::CreateNew) => {
                state.tick_crash()?;
                let id = state.allocate();
                state.files.insert(id, FileNode::default());
                state
                    .directory(self.directory)?
                    .live
                    .insert(name.to_string(), Node::File(id));
                id
            }
        };
        state.file(id)?.handles += 1;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            id,
            generation: self.generation,
            name: name.to_string(),
        }))
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        validate_name(name)?;
        let mut state = self.state()?;
        state.tick_crash()?;
        if state.directory(self.directory)?.live.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        let id = state.allocate();
        state.directories.insert(id, DirectoryNode::default());
        state
            .directory(self.directory)?
            .live
            .insert(name.to_string(), Node::Directory(id));
        Ok(())
    }

    fn open_dir(&self, name: &str) -> io::Result<Arc<dyn Storage>> {
        validate_name(name)?;
        let mut state = self.state()?;
        match state.directory(self.directory)?.live.get(name) {
            Some(Node::Directory(id)) => Ok(Arc::new(SimStorage {
                disk: Arc::clone(&self.disk),
                directory: *id,
                generation: self.generation,
            })),
            Some(Node::File(_)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{name} is not a directory"),
            )),
            None => Err(not_found(name)),
        }
    }

    fn list(&self) -> io::Result<Vec<DirEntry>> {
        let mut state = self.state()?;
        Ok(state
            .directory(self.directory)?
            .live
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                kind: match node {
                    Node::File(_) => EntryKind::File,
                    Node::Directory(_) => EntryKind::Directory,
                },
            })
            .collect())
    }

    fn rename(&self, source: &str, target: &str) -> io::Result<()> {
        validate_name(source)?;
        validate_name(target)?;
        let mut state = self.state()?;
        state.tick_crash()?;
        let directory = state.directory(self.directory)?;
        let node = *directory
            .live
            .get(source)
            .ok_or_else(|| not_found(source))?;
        match (node, directory.live.get(target)) {
            (_, Some(Node::Directory(_))) | (Node::Directory(_), Some(Node::File(_))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot rename {source} over {target}"),
                ))
            }
            _ => {}
        }
        if source != target {
            directory.live.remove(source);
            directory.live.insert(target.to_string(), node);
        }
        Ok(())
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        validate_name(name)?;
        let mut state = self.state()?;
        state.tick_crash()?;
        let directory = state.directory(self.directory)?;
        match directory.live.get(name) {
            Some(Node::File(_)) => {
                directory.live.remove(name);
                state.collect_garbage();
                Ok(())
            }
            Some(Node::Directory(_)) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{name} is a directory"),
            )),
            None => Err(not_found(name)),
        }
    }

    fn remove_dir(&self, name: &str) -> io::Result<()> {
        validate_name(name)?;
        let mut state = self.state()?;
        state.tick_crash()?;
        let id = match state.directory(self.directory)?.live.get(name) {
            Some(Node::Directory(id)) => *id,
            Some(Node::File(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{name} is not a directory"),
                ))
            }
            None => return Err(not_found(name)),
        };
        if !state.directory(id)?.live.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{name} is not empty"),
            ));
        }
        state.directory(self.directory)?.live.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state()?;
        state.tick_crash()?;
        let failure = state.faults.sync_failure;
        if state.roll(failure) {
            state.stats.sync_failures += 1;
            return Err(io_error());
        }
        let directory = state.directory(self.directory)?;
        directory.durable = directory.live.clone();
        Ok(())
    }
}

struct SimFile {
    disk: Arc<SimDisk>,
    id: NodeId,
    generation: u64,
    name: String,
}

impl SimFile {
    fn state(&self) -> io::Result<crate::sync::MutexGuard<'_, DiskState>> {
        let state = lock(&self.disk.state);
        if state.generation != self.generation {
            return Err(crashed());
        }
        Ok(state)
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimFile")
            .field("name", &self.name)
            .field("node", &self.id)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = lock(&self.disk.state);
        if state.generation == self.generation {
            if let Some(file) = state.files.get_mut(&self.id) {
                file.handles = file.handles.saturating_sub(1);
                if file.handles == 0 {
                    // Free the node now if it was removed while open.
                    state.collect_garbage();
                }
            }
        }
    }
}

impl File for SimFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.state()?;
        let error = state.faults.read_error;
        if state.roll(error) {
            state.stats.read_errors += 1;
            return Err(io_error());
        }
        let file = state.file(self.id)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let available = file.live.len().saturating_sub(start);
        let read = available.min(buffer.len());
        if read > 0 {
            buffer[..read].copy_from_slice(&file.live[start..start + read]);
        }
        let corruption = state.faults.read_corruption;
        if read > 0 && state.roll(corruption) {
            state.stats.read_corruptions += 1;
            let bit = state.rng.random_range(0..read * 8);
            buffer[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(read)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state()?;
        state.tick_crash()?;
        let faults = state.faults.clone();
        let length = state.file(self.id)?.live.len() as u64;
        let growth = (offset + data.len() as u64).saturating_sub(length);
        let over_capacity = faults
            .capacity_bytes
            .is_some_and(|capacity| state.live_bytes() + growth > capacity);
        let failure = if state.roll(faults.write_error) {
            state.stats.write_errors += 1;
            Some(io_error())
        } else if over_capacity || state.roll(faults.no_space) {
            state.stats.no_space_errors += 1;
            Some(no_space())
        } else {
            None
        };
        if let Some(failure) = failure {
            // A failed write may still have written some of its bytes.
            let written = if over_capacity {
                0
            } else {
                state.rng.random_range(0..=data.len())
            };
            if written > 0 {
                state.write(self.id, offset, data[..written].to_vec())?;
            }
            return Err(failure);
        }
        let mut data = data.to_vec();
        let mut offset = offset;
        if !data.is_empty() && state.roll(faults.write_corruption) {
            state.stats.write_corruptions += 1;
            let bit = state.rng.random_range(0..data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
        }
        if state.roll(faults.write_misdirection) {
            state.stats.write_misdirections += 1;
            let distance = state.rng.random_range(1..=MISDIRECTION_SECTORS_MAX) * SECTOR_BYTES;
            offset = if state.rng.random_bool(0.5) {
                offset + distance
            } else {
                offset.saturating_sub(distance)
            };
        }
        state.write(self.id, offset, data)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.state()?;
        Ok(state.file(self.id)?.live.len() as u64)
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let mut state = self.state()?;
        state.tick_crash()?;
        let faults = state.faults.clone();
        let current = state.file(self.id)?.live.len() as u64;
        if length > current {
            let over_capacity = faults
                .capacity_bytes
                .is_some_and(|capacity| state.live_bytes() + (length - current) > capacity);
            if over_capacity || state.roll(faults.no_space) {
                state.stats.no_space_errors += 1;
                return Err(no_space());
            }
        }
        let operation = Operation::SetLength(length);
        let file = state.file(self.id)?;
        apply(&mut file.live, &operation);
        file.pending.push(operation);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state()?;
        state.tick_crash()?;
        let failure = state.faults.sync_failure;
        if state.roll(failure) {
            state.stats.sync_failures += 1;
            let outcome = state.rng.random_range(0..3u8);
            let kept = {
                let pending = state.file(self.id)?.pending.len();
                state.rng.random_range(0..=pending)
            };
            let file = state.file(self.id)?;
            match outcome {
                // Nothing reached the media; the writes are still pending.
                0 => {}
                // Some of the writes reached the media.
                1 => {
                    let rest = file.pending.split_off(kept);
                    for operation in &file.pending {
                        apply(&mut file.durable, operation);
                    }
                    file.pending = rest;
                }
                // The kernel dropped the dirty pages: reads now return the
                // durable image.
                _ => {
                    file.pending.clear();
                    file.live = file.durable.clone();
                }
            }
            return Err(io_error());
        }
        let file = state.file(self.id)?;
        file.pending.clear();
        file.durable = file.live.clone();
        Ok(())
    }

    fn view(&self) -> io::Result<FileView> {
        let length = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut bytes = vec![0; length];
        let read = self.read_at(&mut bytes, 0)?;
        bytes.truncate(read);
        Ok(FileView::from_vec(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(file: &dyn File) -> Vec<u8> {
        let mut bytes = vec![0; file.len().expect("len") as usize];
        file.read_exact_at(&mut bytes, 0).expect("read");
        bytes
    }

    #[test]
    fn unsynced_writes_and_entries_vanish_in_a_crash() {
        let disk = SimDisk::with_faults(
            1,
            Faults {
                crash: CrashWeights {
                    lose_all: 1,
                    keep_prefix: 0,
                    tear: 0,
                },
                ..Faults::none()
            },
        );
        let root = disk.root();
        let kept = root.open_file("kept", OpenMode::CreateNew).expect("create");
        kept.write_at(b"durable", 0).expect("write");
        kept.sync().expect("sync");
        root.sync_dir().expect("sync dir");
        kept.write_at(b" and not", 7).expect("write");
        let lost = root.open_file("lost", OpenMode::CreateNew).expect("create");
        lost.write_at(b"synced but never linked", 0).expect("write");
        lost.sync().expect("sync");

        disk.crash();
        assert!(kept.len().is_err(), "handles die with the process");
        let root = disk.root();
        let names: Vec<String> = root
            .list()
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["kept"]);
        let kept = root.open_file("kept", OpenMode::Existing).expect("open");
        assert_eq!(read_all(kept.as_ref()), b"durable");
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_unsynced_writes_in_order() {
        for seed in 0..200 {
            let disk = SimDisk::new(seed);
            let root = disk.root();
            let file = root.open_file("log", OpenMode::CreateNew).expect("create");
            root.sync_dir().expect("sync dir");
            for index in 0..8u8 {
                file.write_at(&[index + 1; 4], u64::from(index) * 4)
                    .expect("write");
            }
            disk.crash();
            let file = disk
                .root()
                .open_file("log", OpenMode::Existing)
                .expect("open");
            let bytes = read_all(file.as_ref());
            // Every byte present is the one written there, and the bytes
            // present are a prefix of what was written.
            for (position, byte) in bytes.iter().enumerate() {
                assert_eq!(*byte, position as u8 / 4 + 1, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_failed_sync_may_drop_the_page_cache() {
        let disk = SimDisk::with_faults(
            3,
            Faults {
                sync_failure: 1.0,
                ..Faults::none()
            },
        );
        let root = disk.root();
        let file = root.open_file("f", OpenMode::CreateNew).expect("create");
        let mut outcomes = std::collections::BTreeSet::new();
        for round in 0..64u64 {
            file.write_at(&[1; 8], round * 8).expect("write");
            assert!(file.sync().is_err());
            outcomes.insert(file.len().expect("len") == (round + 1) * 8);
        }
        assert_eq!(
            outcomes.len(),
            2,
            "some failed syncs drop the written pages"
        );
        assert_eq!(disk.stats().sync_failures, 64);
    }

    #[test]
    fn a_scheduled_crash_strikes_mid_operation() {
        let disk = SimDisk::new(9);
        let root = disk.root();
        let file = root.open_file("f", OpenMode::CreateNew).expect("create");
        root.sync_dir().expect("sync dir");
        disk.schedule_crash(2);
        file.write_at(b"one", 0).expect("first write");
        assert!(
            file.write_at(b"two", 3).is_err(),
            "the crash strikes the second write"
        );
        assert!(!disk.crash_pending());
        assert_eq!(disk.stats().crashes, 1);
        let file = disk
            .root()
            .open_file("f", OpenMode::Existing)
            .expect("open");
        assert!(file.len().expect("len") <= 3);
    }

    #[test]
    fn corruption_at_rest_flips_the_stored_byte() {
        let disk = SimDisk::new(4);
        let root = disk.root();
        root.create_dir("d").expect("mkdir");
        let directory = root.open_dir("d").expect("open dir");
        let file = directory
            .open_file("f", OpenMode::CreateNew)
            .expect("create");
        file.write_at(&[0; 4], 0).expect("write");
        disk.corrupt("d/f", 2, 0x80).expect("corrupt");
        assert_eq!(read_all(file.as_ref()), [0, 0, 0x80, 0]);
    }

    #[test]
    fn capacity_gives_enospc_and_writes_nothing() {
        let disk = SimDisk::with_faults(
            5,
            Faults {
                capacity_bytes: Some(10),
                ..Faults::none()
            },
        );
        let root = disk.root();
        let file = root.open_file("f", OpenMode::CreateNew).expect("create");
        file.write_at(&[1; 10], 0).expect("fits");
        let error = file.write_at(&[1], 10).expect_err("full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.len().expect("len"), 10);
        // Overwriting in place needs no space.
        file.write_at(&[2; 10], 0).expect("overwrite");
    }
}
