//! The typed API: the stream commands as Rust calls, with typed arguments,
//! results and errors. The Redis command path ([`Engine::execute`]) parses
//! its arguments and then runs the same code (the `*_core` functions of
//! `commands`), so both behave alike: the same IDs, trims, group state,
//! command-log records and wake-ups of blocked readers.
//!
//! ```
//! use std::sync::Arc;
//! use weir_io::ManualClock;
//! use weir_stream::{AddOptions, Config, Engine, GroupStart, ReadFrom, StreamId};
//!
//! let clock = Arc::new(ManualClock::new(1_000));
//! let mut engine = Engine::new(Config::default(), clock);
//! let id = engine.add(b"orders", &[b"item", b"book"], &AddOptions::default())?;
//! assert_eq!(id, Some(StreamId::new(1_000, 0)));
//!
//! engine.create_group(b"orders", b"billing", GroupStart::Id(StreamId::MIN), false)?;
//! let read = engine.read_group(b"billing", b"alice", &[(b"orders", ReadFrom::New)], None, false)?;
//! assert_eq!(read[0].entries[0].id(), StreamId::new(1_000, 0));
//! assert_eq!(engine.ack(b"orders", b"billing", &[StreamId::new(1_000, 0)]), 1);
//! # Ok::<(), weir_stream::StreamError>(())
//! ```

use crate::commands::{self, ClaimArgs, TrimArgs};
use crate::engine::Engine;
use crate::id::{IdSpec, StreamId};
use crate::reply::{Error, Reply};
use crate::stream::{Entry, TrimStrategy};

/// One entry of a stream, with its fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry's ID.
    pub id: StreamId,
    /// Field-value pairs, in the order they were added.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StreamEntry {
    fn of(entry: &Entry<'_>) -> StreamEntry {
        StreamEntry {
            id: entry.id,
            fields: entry
                .fields()
                .map(|(field, value)| (field.to_vec(), value.to_vec()))
                .collect(),
        }
    }
}

/// An entry a group read or claim delivered: the entry, or only its ID
/// when it was deleted from the stream after it was delivered (it stays
/// pending until acknowledged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The entry as the stream holds it.
    Entry(StreamEntry),
    /// A pending entry deleted from the stream since its delivery.
    Deleted(StreamId),
}

impl Delivered {
    /// The entry's ID.
    pub fn id(&self) -> StreamId {
        match self {
            Delivered::Entry(entry) => entry.id,
            Delivered::Deleted(id) => *id,
        }
    }
}

/// What a read returned for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRead<T> {
    /// The stream's key.
    pub key: Vec<u8>,
    /// Its entries, in ID order.
    pub entries: Vec<T>,
}

/// Where a group read starts, per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries never delivered to the group (`>`): they become pending
    /// for the consumer (unless the read is `noack`).
    New,
    /// The consumer's own pending entries after this ID (its history).
    Pending(StreamId),
}

/// Where a group's last delivered ID is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// This ID (`StreamId::MIN` delivers the whole stream).
    Id(StreamId),
    /// The stream's last ID (`$`): only entries added from now on.
    Last,
}

/// A trim: what to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trim {
    /// Keep at most N entries, or remove those below an ID.
    pub strategy: TrimStrategy,
    /// Trim only whole nodes (`~`): cheaper, may keep a few more entries.
    pub approx: bool,
    /// With `approx`, at most this many entries removed (`LIMIT`); `None`
    /// for the default (100 nodes' worth).
    pub limit: Option<u64>,
}

impl Trim {
    /// Keeps at most `length` entries, exactly.
    pub fn max_len(length: u64) -> Trim {
        Trim {
            strategy: TrimStrategy::MaxLen(length),
            approx: false,
            limit: None,
        }
    }

    /// Removes the entries with IDs below `id`, exactly.
    pub fn min_id(id: StreamId) -> Trim {
        Trim {
            strategy: TrimStrategy::MinId(id),
            approx: false,
            limit: None,
        }
    }

    /// The same trim, approximate (`~`).
    pub fn approximate(self) -> Trim {
        Trim {
            approx: true,
            ..self
        }
    }
}

/// Options of [`Engine::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddOptions {
    /// The new entry's ID: automatic (`*`) by default.
    pub id: IdSpec,
    /// A trim made after the entry is added.
    pub trim: Option<Trim>,
    /// Do not create the stream if it does not exist (`NOMKSTREAM`).
    pub no_mkstream: bool,
}

impl Default for AddOptions {
    fn default() -> AddOptions {
        AddOptions {
            id: IdSpec::Auto,
            trim: None,
            no_mkstream: false,
        }
    }
}

/// What [`Engine::auto_claim`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoClaim {
    /// Where to continue the scan (`StreamId::MIN`: it reached the end).
    pub next: StreamId,
    /// The entries claimed.
    pub entries: Vec<StreamEntry>,
    /// Pending entries found deleted from the stream, now acknowledged.
    pub deleted: Vec<StreamId>,
}

/// Options of [`Engine::claim`] (those of XCLAIM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimOptions {
    /// Set the entries' idle time to this (`IDLE`).
    pub idle_ms: Option<u64>,
    /// Set the entries' last delivery time to this Unix time (`TIME`).
    pub time_ms: Option<u64>,
    /// Set the delivery count to this (`RETRYCOUNT`).
    pub retry_count: Option<u64>,
    /// Claim IDs that are not pending, if the stream has them (`FORCE`).
    pub force: bool,
    /// Leave the delivery count as it is (`JUSTID`).
    pub just_id: bool,
    /// Move the group's last delivered ID up to this (`LASTID`).
    pub last_id: Option<StreamId>,
}

/// Why a typed call failed. Its text is Redis's error for the same case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// [`Engine::add`] with the ID 0-0.
    #[error("ERR The ID specified in XADD must be greater than 0-0")]
    IdZero,
    /// [`Engine::add`] with an ID not above the stream's last one.
    #[error("ERR The ID specified in XADD is equal or smaller than the target stream top item")]
    IdTooSmall,
    /// The stream's last ID is the largest possible.
    #[error("ERR The stream has exhausted the last possible ID, unable to add more items")]
    Exhausted,
    /// [`Engine::add`] without fields, or with a field lacking its value.
    #[error("ERR wrong number of arguments for 'xadd' command")]
    Fields,
    /// A trim with a limit but not approximate.
    #[error("ERR syntax error, LIMIT cannot be used without the special ~ option")]
    LimitWithoutApprox,
    /// The stream does not exist (and the call does not create it).
    #[error("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.")]
    NoStream,
    /// The consumer group does not exist.
    #[error("{}", Error::no_group(.key, .group).text())]
    NoGroup {
        /// The stream's key.
        key: Vec<u8>,
        /// The group's name.
        group: Vec<u8>,
    },
    /// [`Engine::create_group`] of a group that exists.
    #[error("BUSYGROUP Consumer Group name already exists")]
    GroupExists,
}

impl From<StreamError> for Error {
    fn from(error: StreamError) -> Error {
        Error(std::borrow::Cow::Owned(error.to_string()))
    }
}

/// Collects what a read serves, as replies (the command path) or typed.
pub(crate) trait Sink {
    /// An entry served.
    fn entry(&mut self, entry: &Entry<'_>);
    /// A pending entry deleted since its delivery.
    fn deleted(&mut self, id: StreamId);
}

impl Sink for Vec<Reply> {
    fn entry(&mut self, entry: &Entry<'_>) {
        self.push(commands::entry_reply(entry));
    }

    fn deleted(&mut self, id: StreamId) {
        self.push(Reply::Array(vec![
            Reply::Bulk(id.to_bytes()),
            Reply::NullArray,
        ]));
    }
}

impl Sink for Vec<Delivered> {
    fn entry(&mut self, entry: &Entry<'_>) {
        self.push(Delivered::Entry(StreamEntry::of(entry)));
    }

    fn deleted(&mut self, id: StreamId) {
        self.push(Delivered::Deleted(id));
    }
}

impl Engine {
    /// Runs a typed call as [`Engine::execute`] runs a command: with the
    /// clock read once, and readers blocked on the keys it wrote served
    /// after it (unless a batch is open).
    fn typed<R>(&mut self, call: impl FnOnce(&mut Engine) -> R) -> R {
        self.now = self.clock.now_ms();
        let result = call(self);
        if !self.ready_keys.is_empty() && !self.in_batch {
            self.serve_ready_keys();
        }
        result
    }

    fn trim_args(&self, trim: Option<&Trim>) -> Result<TrimArgs, StreamError> {
        let Some(trim) = trim else {
            return Ok(TrimArgs::default());
        };
        let limit = match (trim.approx, trim.limit) {
            (false, Some(_)) => return Err(StreamError::LimitWithoutApprox),
            (false, None) => 0,
            (true, Some(limit)) => limit,
            (true, None) => commands::default_trim_limit(self),
        };
        Ok(TrimArgs {
            strategy: Some(trim.strategy),
            approx: trim.approx,
            limit,
            ..TrimArgs::default()
        })
    }

    /// Adds an entry (XADD): `fields` are field, value, field, value, ….
    /// Returns its ID, or `None` when the stream does not exist and
    /// `no_mkstream` is set.
    pub fn add(
        &mut self,
        key: &[u8],
        fields: &[&[u8]],
        options: &AddOptions,
    ) -> Result<Option<StreamId>, StreamError> {
        if fields.is_empty() || fields.len() % 2 == 1 {
            return Err(StreamError::Fields);
        }
        let trim = self.trim_args(options.trim.as_ref())?;
        self.typed(|engine| {
            commands::add_core(engine, key, options.id, fields, &trim, options.no_mkstream)
        })
    }

    /// Trims a stream (XTRIM); returns how many entries it removed.
    pub fn trim(&mut self, key: &[u8], trim: &Trim) -> Result<u64, StreamError> {
        let trim = self.trim_args(Some(trim))?;
        Ok(self.typed(|engine| commands::trim_core(engine, key, &trim)))
    }

    /// The entries from `start` to `end`, both included, at most `count`
    /// (XRANGE).
    pub fn range(
        &self,
        key: &[u8],
        start: StreamId,
        end: StreamId,
        count: Option<usize>,
    ) -> Vec<StreamEntry> {
        let mut entries = Vec::new();
        commands::range_core(self, key, start, end, false, count, |entry| {
            entries.push(StreamEntry::of(entry));
        });
        entries
    }

    /// The entries from `end` down to `start`, both included, at most
    /// `count` (XREVRANGE).
    pub fn rev_range(
        &self,
        key: &[u8],
        end: StreamId,
        start: StreamId,
        count: Option<usize>,
    ) -> Vec<StreamEntry> {
        let mut entries = Vec::new();
        commands::range_core(self, key, start, end, true, count, |entry| {
            entries.push(StreamEntry::of(entry));
        });
        entries
    }

    /// The number of entries of a stream (XLEN); 0 if it does not exist.
    pub fn stream_len(&self, key: &[u8]) -> u64 {
        self.keys.get(key).map_or(0, |stream| stream.entries.len())
    }

    /// Reads the entries after each stream's ID, at most `count` per
    /// stream (XREAD without BLOCK). Streams with nothing after their ID
    /// are left out.
    pub fn read(
        &mut self,
        streams: &[(&[u8], StreamId)],
        count: Option<usize>,
    ) -> Vec<StreamRead<StreamEntry>> {
        let count = count.unwrap_or(0);
        self.typed(|engine| {
            let mut read = Vec::new();
            for (key, after) in streams {
                let mut served: Vec<Delivered> = Vec::new();
                if commands::serve_key(engine, key, *after, None, false, count, true, &mut served) {
                    let entries = served
                        .into_iter()
                        .filter_map(|delivered| match delivered {
                            Delivered::Entry(entry) => Some(entry),
                            Delivered::Deleted(_) => None,
                        })
                        .collect();
                    read.push(StreamRead {
                        key: key.to_vec(),
                        entries,
                    });
                }
            }
            read
        })
    }

    /// Reads as `consumer` of `group` (XREADGROUP without BLOCK): new
    /// entries become pending for the consumer (unless `noack`), history
    /// reads return its pending entries again and count a delivery. Fails
    /// if a stream or the group on it does not exist.
    pub fn read_group(
        &mut self,
        group: &[u8],
        consumer: &[u8],
        streams: &[(&[u8], ReadFrom)],
        count: Option<usize>,
        noack: bool,
    ) -> Result<Vec<StreamRead<Delivered>>, StreamError> {
        for (key, _) in streams {
            self.group_must_exist(key, group)?;
        }
        let count = count.unwrap_or(0);
        Ok(self.typed(|engine| {
            let mut read = Vec::new();
            for (key, from) in streams {
                let after = match from {
                    ReadFrom::New => StreamId::MAX,
                    ReadFrom::Pending(after) => *after,
                };
                let mut entries = Vec::new();
                let reader = Some((group, consumer));
                if commands::serve_key(engine, key, after, reader, noack, count, true, &mut entries)
                {
                    read.push(StreamRead {
                        key: key.to_vec(),
                        entries,
                    });
                }
            }
            read
        }))
    }

    /// Acknowledges pending entries of a group (XACK); returns how many
    /// were pending. A group that does not exist acknowledges nothing.
    pub fn ack(&mut self, key: &[u8], group: &[u8], ids: &[StreamId]) -> u64 {
        self.typed(|engine| commands::ack_core(engine, key, group, ids))
    }

    /// Moves pending entries idle for at least `min_idle_ms` to `consumer`
    /// (XCLAIM); returns the entries claimed.
    pub fn claim(
        &mut self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
        min_idle_ms: u64,
        ids: &[StreamId],
        options: &ClaimOptions,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        self.group_must_exist(key, group)?;
        Ok(self.typed(|engine| {
            let now = i64::try_from(engine.now).unwrap_or(i64::MAX);
            let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            let claim = ClaimArgs {
                consumer,
                min_idle: as_i64(min_idle_ms),
                delivery_time: options
                    .time_ms
                    .map(as_i64)
                    .or(options.idle_ms.map(|idle| now.saturating_sub(as_i64(idle)))),
                retry_count: options.retry_count.map(as_i64),
                force: options.force,
                just_id: options.just_id,
                last_id: options.last_id.unwrap_or(StreamId::MIN),
            };
            let claimed = commands::claim_core(engine, key, group, ids, &claim);
            engine.entries(key, &claimed)
        }))
    }

    /// Scans the group's pending entries from `start` and moves up to
    /// `count` of those idle for at least `min_idle_ms` to `consumer`
    /// (XAUTOCLAIM); pending entries deleted from the stream are
    /// acknowledged and reported. With `just_id` the delivery counts stay.
    #[allow(clippy::too_many_arguments)]
    pub fn auto_claim(
        &mut self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
        min_idle_ms: u64,
        start: StreamId,
        count: usize,
        just_id: bool,
    ) -> Result<AutoClaim, StreamError> {
        self.group_must_exist(key, group)?;
        let min_idle = i64::try_from(min_idle_ms).unwrap_or(i64::MAX);
        // Redis's bound on COUNT, which keeps count * 10 attempts in range.
        let count = i64::try_from(count)
            .unwrap_or(i64::MAX)
            .clamp(1, i64::MAX / 16);
        Ok(self.typed(|engine| {
            let claimed = commands::auto_claim_core(
                engine, key, group, consumer, min_idle, start, count, just_id,
            );
            AutoClaim {
                next: claimed.next,
                entries: engine.entries(key, &claimed.claimed),
                deleted: claimed.deleted,
            }
        }))
    }

    /// Creates a consumer group (XGROUP CREATE), delivering entries after
    /// `start`; with `mkstream`, creates the stream if it does not exist.
    pub fn create_group(
        &mut self,
        key: &[u8],
        group: &[u8],
        start: GroupStart,
        mkstream: bool,
    ) -> Result<(), StreamError> {
        if !mkstream && !self.keys.contains_key(key) {
            return Err(StreamError::NoStream);
        }
        let id = self.group_start(key, start);
        self.typed(|engine| {
            commands::group_create_core(engine, key, group, id, crate::group::ENTRIES_READ_UNKNOWN)
        })
    }

    /// Sets a group's last delivered ID (XGROUP SETID).
    pub fn set_group_id(
        &mut self,
        key: &[u8],
        group: &[u8],
        start: GroupStart,
    ) -> Result<(), StreamError> {
        self.group_must_exist(key, group)?;
        let id = self.group_start(key, start);
        self.typed(|engine| {
            commands::group_set_id_core(engine, key, group, id, crate::group::ENTRIES_READ_UNKNOWN);
        });
        Ok(())
    }

    /// Removes a consumer group and its pending entries (XGROUP DESTROY);
    /// returns whether it existed.
    pub fn destroy_group(&mut self, key: &[u8], group: &[u8]) -> bool {
        self.typed(|engine| commands::group_destroy_core(engine, key, group))
    }

    /// Creates a consumer in a group (XGROUP CREATECONSUMER); returns
    /// whether it was new.
    pub fn create_consumer(
        &mut self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
    ) -> Result<bool, StreamError> {
        self.group_must_exist(key, group)?;
        Ok(self.typed(|engine| commands::consumer_create_core(engine, key, group, consumer)))
    }

    /// Removes a consumer and its pending entries (XGROUP DELCONSUMER);
    /// returns how many entries it had pending.
    pub fn delete_consumer(
        &mut self,
        key: &[u8],
        group: &[u8],
        consumer: &[u8],
    ) -> Result<u64, StreamError> {
        self.group_must_exist(key, group)?;
        Ok(self.typed(|engine| commands::consumer_delete_core(engine, key, group, consumer)))
    }

    /// The entries of `key` with these IDs (a claim's), in that order.
    fn entries(&self, key: &[u8], ids: &[StreamId]) -> Vec<StreamEntry> {
        let Some(stream) = self.keys.get(key) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| stream.entries.get(*id))
            .map(|entry| StreamEntry::of(&entry))
            .collect()
    }

    fn group_must_exist(&self, key: &[u8], group: &[u8]) -> Result<(), StreamError> {
        let exists = self
            .keys
            .get(key)
            .is_some_and(|stream| stream.groups.contains_key(group));
        if exists {
            Ok(())
        } else {
            Err(StreamError::NoGroup {
                key: key.to_vec(),
                group: group.to_vec(),
            })
        }
    }

    fn group_start(&self, key: &[u8], start: GroupStart) -> StreamId {
        match start {
            GroupStart::Id(id) => id,
            GroupStart::Last => self
                .keys
                .get(key)
                .map_or(StreamId::MIN, |stream| stream.last_id),
        }
    }
}
