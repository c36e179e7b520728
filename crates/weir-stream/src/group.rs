//! A stream value: its entries, its counters, and its consumer groups with
//! their pending entries lists (PELs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::id::StreamId;
use crate::stream::Entries;

/// `entries_read` when it is unknown.
pub const ENTRIES_READ_UNKNOWN: i64 = -1;

/// A stream and everything Redis keeps with it.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    /// The entries.
    pub entries: Entries,
    /// The last ID generated (never goes back, even if the entry is gone).
    pub last_id: StreamId,
    /// The first live entry's ID as Redis records it.
    pub first_id: StreamId,
    /// The largest ID ever removed by XDEL.
    pub max_deleted_entry_id: StreamId,
    /// Entries ever added.
    pub entries_added: u64,
    /// Consumer groups, by name.
    pub groups: BTreeMap<Vec<u8>, Group>,
}

/// A pending entry: delivered to a consumer and not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The consumer that owns it.
    pub consumer: Arc<[u8]>,
    /// When it was last delivered (ms).
    pub delivery_time: u64,
    /// How many times it was delivered.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consumer {
    /// The last time the consumer tried to read or claim (ms).
    pub seen_time: u64,
    /// The last time it read or claimed something (ms); `None` if never.
    pub active_time: Option<u64>,
    /// Its pending entries.
    pub pending: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Clone, Debug, Default)]
pub struct Group {
    /// The last ID delivered with `>`.
    pub last_id: StreamId,
    /// Entries read up to `last_id`, counting from the first ever added;
    /// [`ENTRIES_READ_UNKNOWN`] when unknown.
    pub entries_read: i64,
    /// The group's PEL.
    pub pending: BTreeMap<StreamId, Pending>,
    /// Consumers by name.
    pub consumers: BTreeMap<Arc<[u8]>, Consumer>,
}

impl Group {
    /// A group starting at `last_id`.
    pub fn new(last_id: StreamId, entries_read: i64) -> Self {
        Self {
            last_id,
            entries_read,
            pending: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// The consumer's shared name, creating the consumer (seen now) if
    /// needed; returns whether it was created.
    pub fn consumer_entry(&mut self, name: &[u8], now: u64) -> (Arc<[u8]>, bool) {
        if let Some((key, _)) = self.consumers.get_key_value(name) {
            return (Arc::clone(key), false);
        }
        let key: Arc<[u8]> = Arc::from(name);
        self.consumers.insert(
            Arc::clone(&key),
            Consumer {
                seen_time: now,
                active_time: None,
                pending: BTreeSet::new(),
            },
        );
        (key, true)
    }

    /// Removes an entry from the PELs; returns whether it was pending.
    pub fn acknowledge(&mut self, id: StreamId) -> bool {
        match self.pending.remove(&id) {
            Some(entry) => {
                if let Some(consumer) = self.consumers.get_mut(&entry.consumer) {
                    consumer.pending.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Gives a pending entry (existing or new) to `consumer`, with the
    /// given delivery time and count.
    pub fn assign(
        &mut self,
        id: StreamId,
        consumer: &Arc<[u8]>,
        delivery_time: u64,
        delivery_count: u64,
    ) {
        if let Some(previous) = self
            .pending
            .get(&id)
            .map(|entry| Arc::clone(&entry.consumer))
        {
            if previous != *consumer {
                if let Some(old) = self.consumers.get_mut(&previous) {
                    old.pending.remove(&id);
                }
            }
        }
        self.pending.insert(
            id,
            Pending {
                consumer: Arc::clone(consumer),
                delivery_time,
                delivery_count,
            },
        );
        if let Some(owner) = self.consumers.get_mut(consumer) {
            owner.pending.insert(id);
        }
    }
}

impl Group {
    /// Checks that the group's PEL and its consumers' lists agree (see
    /// [`Stream::check`]).
    pub fn check(&self) -> Result<(), String> {
        for (id, entry) in &self.pending {
            match self.consumers.get(&entry.consumer) {
                None => {
                    return Err(format!(
                        "pending {id} owned by missing consumer {}",
                        String::from_utf8_lossy(&entry.consumer)
                    ))
                }
                Some(consumer) if !consumer.pending.contains(id) => {
                    return Err(format!(
                        "pending {id} not in its owner {}'s list",
                        String::from_utf8_lossy(&entry.consumer)
                    ))
                }
                Some(_) => {}
            }
        }
        let listed: usize = self
            .consumers
            .values()
            .map(|consumer| consumer.pending.len())
            .sum();
        if listed != self.pending.len() {
            return Err(format!(
                "consumers list {listed} pending entries, the group {}",
                self.pending.len()
            ));
        }
        if self.entries_read < ENTRIES_READ_UNKNOWN {
            return Err(format!("entries read {}", self.entries_read));
        }
        Ok(())
    }
}

impl Stream {
    /// Whether an XDEL tombstone may lie in `start..=end` (Redis's
    /// `streamRangeHasTombstones`).
    pub fn range_has_tombstones(&self, start: StreamId, end: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted_entry_id.is_zero() {
            return false;
        }
        if self.first_id > self.max_deleted_entry_id {
            return false;
        }
        start <= self.max_deleted_entry_id && self.max_deleted_entry_id <= end
    }

    /// The logical read counter of `id`: how many entries, counting from the
    /// first ever added, lie at or before it, when that can be known (Redis's
    /// `streamEstimateDistanceFromFirstEverEntry`). `tombstone_rule` (Redis
    /// 7.4) also gives up for an ID below the last XDEL tombstone.
    pub fn estimate_entries_read(&self, id: StreamId, tombstone_rule: bool) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(self.entries_added);
        }
        if tombstone_rule && !id.is_zero() && id < self.max_deleted_entry_id {
            return None;
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        if self.max_deleted_entry_id.is_zero() || self.max_deleted_entry_id < self.first_id {
            if id < self.first_id {
                return Some(self.entries_added - self.entries.len());
            }
            if id == self.first_id {
                return Some(self.entries_added - self.entries.len() + 1);
            }
        }
        None
    }

    /// A group's lag: entries added and not yet read by it, when known. It
    /// can be negative, as in Redis, when ENTRIESREAD was set past the
    /// entries added.
    pub fn lag(&self, group: &Group, tombstone_rule: bool) -> Option<i64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        let added = self.entries_added as i64;
        if group.entries_read != ENTRIES_READ_UNKNOWN
            && !self.range_has_tombstones(group.last_id, StreamId::MAX)
        {
            return Some(added.wrapping_sub(group.entries_read));
        }
        self.estimate_entries_read(group.last_id, tombstone_rule)
            .map(|read| added.wrapping_sub(read as i64))
    }

    /// Checks what must hold of a stream whatever commands ran: its nodes
    /// ([`Entries::check`]); the last live entry and the largest deleted ID
    /// at or below the last generated ID; at least as many entries added as
    /// are live; in every group, each pending entry owned by an existing
    /// consumer whose own list holds it, each consumer's list holding only
    /// the group's pending entries it owns, and a read counter that is a
    /// count or unknown.
    pub fn check(&self) -> Result<(), String> {
        self.entries.check()?;
        if self.last_live_id() > self.last_id {
            return Err(format!(
                "last entry {} above the last ID {}",
                self.last_live_id(),
                self.last_id
            ));
        }
        if self.max_deleted_entry_id > self.last_id {
            return Err(format!(
                "max deleted ID {} above the last ID {}",
                self.max_deleted_entry_id, self.last_id
            ));
        }
        if self.entries_added < self.entries.len() {
            return Err(format!(
                "{} entries added but {} live",
                self.entries_added,
                self.entries.len()
            ));
        }
        for (name, group) in &self.groups {
            let name = String::from_utf8_lossy(name);
            group
                .check()
                .map_err(|what| format!("group {name}: {what}"))?;
        }
        Ok(())
    }

    /// The last live entry's ID, or `0-0`.
    pub fn last_live_id(&self) -> StreamId {
        self.entries.last_id().unwrap_or(StreamId::MIN)
    }

    /// Bytes of heap memory held by the stream (entries, groups, PELs).
    pub fn heap_bytes(&self) -> usize {
        let mut bytes = self.entries.heap_bytes();
        for (name, group) in &self.groups {
            bytes += name.capacity() + std::mem::size_of::<Group>();
            bytes += group.pending.len() * (std::mem::size_of::<(StreamId, Pending)>() + 16);
            for (consumer_name, consumer) in &group.consumers {
                bytes += consumer_name.len() + std::mem::size_of::<Consumer>() + 16;
                bytes += consumer.pending.len() * (std::mem::size_of::<StreamId>() + 8);
            }
        }
        bytes
    }
}
