//! Stream storage: entries packed in nodes, the way Redis packs them in
//! listpacks, so that memory per entry is small and node boundaries (which
//! `~` trimming and `XINFO STREAM`'s `radix-tree-keys` expose) are the same
//! as Redis's.
//!
//! A node starts with the field names of its first entry (the master
//! fields); every entry with the same field names stores only its values. An
//! entry is encoded as:
//!
//! ```text
//! flags        u8        bit 0: deleted, bit 1: same fields as the master
//! ms_delta     varint    id.ms - master.ms
//! seq          varint    id.seq - master.seq if ms_delta is 0, else id.seq
//! [count       varint    number of fields, only without the same-fields flag
//!  fields      (varint length, bytes) per field]
//! values       (varint length, bytes) per field
//! ```
//!
//! Beside its bytes, each node tracks the size the same entries would take
//! in a Redis listpack (see [`crate::listpack`]), because Redis starts a new
//! node when that size plus the new entry's field and value bytes reaches
//! `stream-node-max-bytes`, or when the node holds `stream-node-max-entries`
//! entries, deleted ones included.

use std::collections::VecDeque;

use crate::id::StreamId;
use crate::listpack;

const FLAG_DELETED: u8 = 1;
const FLAG_SAME_FIELDS: u8 = 2;

/// Node limits, as Redis's `stream-node-max-entries` and
/// `stream-node-max-bytes` (0 means no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Entries (live and deleted) per node.
    pub max_entries: u64,
    /// Emulated listpack bytes per node.
    pub max_bytes: u64,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_entries: 100,
            max_bytes: 4096,
        }
    }
}

/// The largest listpack Redis lets a node grow to, whatever the limits say.
const LISTPACK_SIZE_LIMIT: u64 = 1 << 30;

#[derive(Clone, Debug)]
struct Node {
    master: StreamId,
    /// The last entry's ID, deleted or not.
    last: StreamId,
    live: u64,
    deleted: u64,
    master_field_count: usize,
    /// Where the entries start in `data`.
    entries_start: usize,
    /// Emulated listpack bytes, except the live and deleted counters.
    emulated_bytes: u64,
    data: Vec<u8>,
    /// Offset of the last entry.
    last_offset: usize,
    /// Offsets of every `SEEK_STRIDE`-th entry, to start a search near the
    /// entry sought rather than at the first one.
    seek_offsets: Vec<u32>,
}

/// Entries between two seek offsets of a node.
const SEEK_STRIDE: u64 = 16;

impl Node {
    fn emulated_size(&self) -> u64 {
        self.emulated_bytes
            + listpack::integer_element_bytes(self.live as i64)
            + listpack::integer_element_bytes(self.deleted as i64)
    }

    /// The offset of an entry at or before the first entry with an ID at
    /// or after `id`.
    fn seek(&self, id: StreamId) -> usize {
        let after = self
            .seek_offsets
            .partition_point(|offset| entry_id_at(self, *offset as usize) <= id);
        match after.checked_sub(1) {
            Some(index) => self.seek_offsets[index] as usize,
            None => self.entries_start,
        }
    }

    fn master_fields(&self) -> FieldNames<'_> {
        FieldNames {
            data: &self.data[..self.entries_start],
            position: 0,
            remaining: self.master_field_count,
        }
    }
}

/// An entry read from a stream: its ID and its field-value pairs, borrowed
/// from the stream.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// The entry's ID.
    pub id: StreamId,
    names: FieldNames<'a>,
    values: &'a [u8],
    count: usize,
}

impl<'a> Entry<'a> {
    /// How many field-value pairs.
    pub fn field_count(&self) -> usize {
        self.count
    }

    /// A size hint for copying the fields out.
    pub fn encoded_hint(&self) -> usize {
        self.values.len() + self.count * 16
    }

    /// The field-value pairs.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut names = self.names.clone();
        let mut values = self.values;
        (0..self.count).map(move |_| {
            let name = names.next().unwrap_or_default();
            let (value, rest) = read_bytes(values);
            values = rest;
            (name, value)
        })
    }
}

#[derive(Clone, Debug)]
struct FieldNames<'a> {
    data: &'a [u8],
    position: usize,
    remaining: usize,
}

impl<'a> Iterator for FieldNames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let (name, rest) = read_bytes(&self.data[self.position..]);
        self.position = self.data.len() - rest.len();
        Some(name)
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push((value & 0x7f) as u8);
}

/// Decodes a varint written by this module (the bytes are ours, never
/// untrusted input).
fn read_varint(bytes: &[u8]) -> (u64, &[u8]) {
    let mut value = 0u64;
    let mut shift = 0;
    for (index, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (value, &bytes[index + 1..]);
        }
        shift += 7;
    }
    unreachable!("varints written by this module are complete")
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn read_bytes(bytes: &[u8]) -> (&[u8], &[u8]) {
    let (length, rest) = read_varint(bytes);
    rest.split_at(usize::try_from(length).expect("a length this node wrote"))
}

/// The ID of the entry at `offset`, without decoding its fields.
fn entry_id_at(node: &Node, offset: usize) -> StreamId {
    let (ms_delta, rest) = read_varint(&node.data[offset + 1..]);
    let (seq_part, _) = read_varint(rest);
    if ms_delta == 0 {
        StreamId::new(node.master.ms, node.master.seq + seq_part)
    } else {
        StreamId::new(node.master.ms + ms_delta, seq_part)
    }
}

/// One decoded entry header within a node.
struct RawEntry<'a> {
    offset: usize,
    flags: u8,
    id: StreamId,
    count: usize,
    /// Field names of an entry without the same-fields flag.
    own_names: Option<&'a [u8]>,
    values: &'a [u8],
    end: usize,
}

fn decode_entry(node: &Node, offset: usize) -> RawEntry<'_> {
    let data = &node.data;
    let flags = data[offset];
    let (ms_delta, rest) = read_varint(&data[offset + 1..]);
    let (seq_part, rest) = read_varint(rest);
    let id = if ms_delta == 0 {
        StreamId::new(node.master.ms, node.master.seq + seq_part)
    } else {
        StreamId::new(node.master.ms + ms_delta, seq_part)
    };
    let (count, own_names, mut rest) = if flags & FLAG_SAME_FIELDS != 0 {
        (node.master_field_count, None, rest)
    } else {
        let (count, names_start) = read_varint(rest);
        let mut cursor = names_start;
        for _ in 0..count {
            cursor = read_bytes(cursor).1;
        }
        let names_length = names_start.len() - cursor.len();
        let count = usize::try_from(count).expect("a count this node wrote");
        (count, Some(&names_start[..names_length]), cursor)
    };
    let values_start = data.len() - rest.len();
    for _ in 0..count {
        rest = read_bytes(rest).1;
    }
    let end = data.len() - rest.len();
    RawEntry {
        offset,
        flags,
        id,
        count,
        own_names,
        values: &data[values_start..end],
        end,
    }
}

fn entry_from_raw<'a>(node: &'a Node, raw: &RawEntry<'a>) -> Entry<'a> {
    let names = match raw.own_names {
        Some(names) => FieldNames {
            data: names,
            position: 0,
            remaining: raw.count,
        },
        None => node.master_fields(),
    };
    Entry {
        id: raw.id,
        names,
        values: raw.values,
        count: raw.count,
    }
}

/// The entries of a stream, in nodes.
#[derive(Clone, Debug, Default)]
pub struct Entries {
    nodes: VecDeque<Node>,
    length: u64,
}

/// How a trim chooses what to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimStrategy {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Remove entries with IDs below this one.
    MinId(StreamId),
}

impl Entries {
    /// Live entries.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether there is no live entry.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Nodes (Redis's `radix-tree-keys`).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Checks the structure of the nodes: every entry decodes and ends
    /// where the next begins, IDs strictly increase within and across
    /// nodes, each node's counters, last ID, last offset and seek offsets
    /// agree with its entries, and the live entries add up to the length.
    pub fn check(&self) -> Result<(), String> {
        let mut live_total = 0u64;
        let mut previous: Option<StreamId> = None;
        for (index, node) in self.nodes.iter().enumerate() {
            let problem =
                |what: String| Err(format!("node {index} (master {}): {what}", node.master));
            let (mut live, mut deleted, mut last_offset) = (0u64, 0u64, node.entries_start);
            let mut offset = node.entries_start;
            let mut seeks = Vec::new();
            while offset < node.data.len() {
                let entries = live + deleted;
                if entries > 0 && entries.is_multiple_of(SEEK_STRIDE) {
                    seeks.push(u32::try_from(offset).expect("a node below 4 GiB"));
                }
                let raw = decode_entry(node, offset);
                if previous.is_some_and(|before| raw.id <= before) {
                    return problem(format!("entry {} does not follow {previous:?}", raw.id));
                }
                if raw.id < node.master {
                    return problem(format!("entry {} is below the master ID", raw.id));
                }
                previous = Some(raw.id);
                if raw.flags & FLAG_DELETED == 0 {
                    live += 1;
                } else {
                    deleted += 1;
                }
                last_offset = offset;
                offset = raw.end;
            }
            if offset != node.data.len() {
                return problem("entries run past the node's bytes".into());
            }
            if (live, deleted) != (node.live, node.deleted) {
                return problem(format!(
                    "counts {}/{} but the entries are {live} live, {deleted} deleted",
                    node.live, node.deleted
                ));
            }
            if live + deleted == 0 {
                return problem("a node without entries".into());
            }
            if previous != Some(node.last) || last_offset != node.last_offset {
                return problem(format!(
                    "last entry {previous:?} at {last_offset}, recorded {} at {}",
                    node.last, node.last_offset
                ));
            }
            if seeks != node.seek_offsets {
                return problem("seek offsets do not point at every 16th entry".into());
            }
            live_total += live;
        }
        if live_total != self.length {
            return Err(format!("{live_total} live entries, length {}", self.length));
        }
        Ok(())
    }

    /// Appends an entry whose ID is larger than every ID in the stream.
    /// `fields` holds names and values alternately.
    pub fn append(&mut self, id: StreamId, fields: &[&[u8]], limits: NodeLimits) {
        let raw_bytes: u64 = fields.iter().map(|part| part.len() as u64).sum();
        let needs_node = match self.nodes.back() {
            None => true,
            Some(node) => {
                let max_bytes = if limits.max_bytes == 0 || limits.max_bytes > LISTPACK_SIZE_LIMIT {
                    LISTPACK_SIZE_LIMIT
                } else {
                    limits.max_bytes
                };
                node.emulated_size() + raw_bytes >= max_bytes
                    || (limits.max_entries != 0 && node.live + node.deleted >= limits.max_entries)
            }
        };
        if needs_node {
            if let Some(node) = self.nodes.back_mut() {
                node.data.shrink_to_fit();
                node.seek_offsets.shrink_to_fit();
            }
            self.nodes.push_back(new_node(id, fields));
        }
        let node = self.nodes.back_mut().expect("a node was just ensured");
        let same_fields = fields.len() / 2 == node.master_field_count
            && node
                .master_fields()
                .zip(fields.chunks_exact(2))
                .all(|(master, pair)| master == pair[0]);
        let ms_delta = id.ms - node.master.ms;
        let seq_part = if ms_delta == 0 {
            id.seq - node.master.seq
        } else {
            id.seq
        };
        let flags = if same_fields { FLAG_SAME_FIELDS } else { 0 };
        let entries = node.live + node.deleted;
        if entries > 0 && entries.is_multiple_of(SEEK_STRIDE) {
            let offset = u32::try_from(node.data.len()).expect("a node below 4 GiB");
            node.seek_offsets.push(offset);
        }
        node.last_offset = node.data.len();
        node.data.push(flags);
        put_varint(&mut node.data, ms_delta);
        put_varint(&mut node.data, seq_part);
        if !same_fields {
            put_varint(&mut node.data, (fields.len() / 2) as u64);
            for pair in fields.chunks_exact(2) {
                put_bytes(&mut node.data, pair[0]);
            }
        }
        for pair in fields.chunks_exact(2) {
            put_bytes(&mut node.data, pair[1]);
        }
        node.emulated_bytes += listpack::entry_bytes(id, node.master, fields, same_fields);
        node.live += 1;
        node.last = id;
        self.length += 1;
    }

    fn node_index_for(&self, id: StreamId) -> Option<usize> {
        let after = self.nodes.partition_point(|node| node.master <= id);
        after.checked_sub(1)
    }

    /// The live entry with this ID.
    pub fn get(&self, id: StreamId) -> Option<Entry<'_>> {
        let node = &self.nodes[self.node_index_for(id)?];
        if id > node.last {
            return None;
        }
        let mut offset = node.seek(id);
        while offset < node.data.len() {
            let raw = decode_entry(node, offset);
            if raw.id == id {
                return (raw.flags & FLAG_DELETED == 0).then(|| entry_from_raw(node, &raw));
            }
            if raw.id > id {
                return None;
            }
            offset = raw.end;
        }
        None
    }

    /// Marks the live entry with this ID deleted; removes its node when it
    /// was the node's last live entry. Returns whether there was one.
    pub fn delete(&mut self, id: StreamId) -> bool {
        let Some(index) = self.node_index_for(id) else {
            return false;
        };
        let node = &mut self.nodes[index];
        if id > node.last {
            return false;
        }
        let mut offset = node.seek(id);
        while offset < node.data.len() {
            let raw = decode_entry(node, offset);
            if raw.id > id {
                return false;
            }
            if raw.id == id {
                if raw.flags & FLAG_DELETED != 0 {
                    return false;
                }
                let at = raw.offset;
                node.data[at] |= FLAG_DELETED;
                self.length -= 1;
                if node.live == 1 {
                    self.nodes.remove(index);
                } else {
                    node.live -= 1;
                    node.deleted += 1;
                }
                return true;
            }
            offset = raw.end;
        }
        false
    }

    /// Removes entries from the head: whole nodes while they can go, and
    /// with `approx` false, single entries of the next node. With `limit`
    /// (approx only), stops before a node that would take the count past it.
    /// Returns the number of entries removed.
    pub fn trim(&mut self, strategy: TrimStrategy, approx: bool, limit: u64) -> u64 {
        let mut removed = 0u64;
        while let Some(node) = self.nodes.front_mut() {
            if let TrimStrategy::MaxLen(max) = strategy {
                if self.length <= max {
                    break;
                }
            }
            if limit != 0 && removed + node.live > limit {
                break;
            }
            let remove_node = match strategy {
                TrimStrategy::MaxLen(max) => self.length - node.live >= max,
                TrimStrategy::MinId(min) => node.last < min,
            };
            if remove_node {
                self.length -= node.live;
                removed += node.live;
                self.nodes.pop_front();
                continue;
            }
            if approx {
                break;
            }
            // Mark single entries of this node deleted.
            let mut offset = node.entries_start;
            while offset < node.data.len() {
                let (at, flags, id, end) = {
                    let raw = decode_entry(node, offset);
                    (raw.offset, raw.flags, raw.id, raw.end)
                };
                let stop = match strategy {
                    TrimStrategy::MaxLen(max) => self.length <= max,
                    TrimStrategy::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                if flags & FLAG_DELETED == 0 {
                    node.data[at] |= FLAG_DELETED;
                    node.live -= 1;
                    node.deleted += 1;
                    self.length -= 1;
                    removed += 1;
                }
                offset = end;
            }
            break;
        }
        removed
    }

    /// Live entries with IDs in `start..=end`, in order, or in reverse.
    pub fn range(&self, start: StreamId, end: StreamId, reverse: bool) -> Range<'_> {
        let (node_index, done) = if start > end {
            (0, true)
        } else if reverse {
            match self.node_index_for(end) {
                Some(index) => (index, false),
                None => (0, true),
            }
        } else {
            (
                self.node_index_for(start).unwrap_or(0),
                self.nodes.is_empty(),
            )
        };
        Range {
            entries: self,
            start,
            end,
            reverse,
            node_index,
            offsets: Vec::new(),
            cursor: None,
            done,
        }
    }

    /// The first live entry.
    pub fn first(&self) -> Option<Entry<'_>> {
        self.range(StreamId::MIN, StreamId::MAX, false).next()
    }

    /// The ID of the last live entry, without decoding entries when the
    /// last one is live (the common case).
    pub fn last_id(&self) -> Option<StreamId> {
        let node = self.nodes.back()?;
        if node.data[node.last_offset] & FLAG_DELETED == 0 {
            return Some(node.last);
        }
        self.last().map(|entry| entry.id)
    }

    /// The last live entry.
    pub fn last(&self) -> Option<Entry<'_>> {
        self.range(StreamId::MIN, StreamId::MAX, true).next()
    }

    /// Bytes of heap memory held for the entries.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self
                .nodes
                .iter()
                .map(|node| node.data.capacity())
                .sum::<usize>()
    }
}

fn new_node(id: StreamId, fields: &[&[u8]]) -> Node {
    let mut data = Vec::new();
    for pair in fields.chunks_exact(2) {
        put_bytes(&mut data, pair[0]);
    }
    let entries_start = data.len();
    Node {
        master: id,
        last: id,
        live: 0,
        deleted: 0,
        master_field_count: fields.len() / 2,
        entries_start,
        emulated_bytes: listpack::master_bytes(fields),
        last_offset: entries_start,
        data,
        seek_offsets: Vec::new(),
    }
}

/// Iterator over a range of entries; see [`Entries::range`].
pub struct Range<'a> {
    entries: &'a Entries,
    start: StreamId,
    end: StreamId,
    reverse: bool,
    node_index: usize,
    /// Entry offsets of the current node, for reverse iteration.
    offsets: Vec<usize>,
    /// The next offset (forward) or index into `offsets` (reverse).
    cursor: Option<usize>,
    done: bool,
}

impl<'a> Iterator for Range<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        while !self.done {
            let Some(node) = self.entries.nodes.get(self.node_index) else {
                self.done = true;
                break;
            };
            if self.reverse {
                let cursor = match self.cursor {
                    Some(cursor) => cursor,
                    None => {
                        self.offsets.clear();
                        let mut offset = node.entries_start;
                        while offset < node.data.len() {
                            self.offsets.push(offset);
                            offset = decode_entry(node, offset).end;
                        }
                        self.offsets.len()
                    }
                };
                if cursor == 0 {
                    self.cursor = None;
                    if self.node_index == 0 {
                        self.done = true;
                    } else {
                        self.node_index -= 1;
                    }
                    continue;
                }
                self.cursor = Some(cursor - 1);
                let raw = decode_entry(node, self.offsets[cursor - 1]);
                if raw.id < self.start {
                    self.done = true;
                    break;
                }
                if raw.id <= self.end && raw.flags & FLAG_DELETED == 0 {
                    return Some(entry_from_raw(node, &raw));
                }
            } else {
                let offset = match self.cursor {
                    Some(offset) => offset,
                    None => node.seek(self.start),
                };
                if offset >= node.data.len() {
                    self.cursor = None;
                    self.node_index += 1;
                    continue;
                }
                let raw = decode_entry(node, offset);
                self.cursor = Some(raw.end);
                if raw.id > self.end {
                    self.done = true;
                    break;
                }
                if raw.id >= self.start && raw.flags & FLAG_DELETED == 0 {
                    return Some(entry_from_raw(node, &raw));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(entries: &mut Entries, ms: u64, fields: &[(&str, &str)]) {
        let fields: Vec<&[u8]> = fields
            .iter()
            .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()])
            .collect();
        entries.append(StreamId::new(ms, 0), &fields, NodeLimits::default());
    }

    fn ids(range: Range<'_>) -> Vec<u64> {
        range.map(|entry| entry.id.ms).collect()
    }

    #[test]
    fn entries_read_back_with_their_fields_across_nodes() {
        let mut entries = Entries::default();
        for ms in 1..=250 {
            if ms % 3 == 0 {
                add(&mut entries, ms, &[("other", "x"), ("y", &ms.to_string())]);
            } else {
                add(&mut entries, ms, &[("f", &ms.to_string())]);
            }
        }
        assert_eq!(entries.len(), 250);
        assert_eq!(entries.node_count(), 3, "100 entries per node");
        let entry = entries.get(StreamId::new(99, 0)).expect("entry");
        let fields: Vec<_> = entry.fields().collect();
        assert_eq!(
            fields,
            [(&b"other"[..], &b"x"[..]), (&b"y"[..], &b"99"[..])]
        );
        assert_eq!(
            ids(entries.range(StreamId::new(98, 0), StreamId::new(102, 0), false)),
            [98, 99, 100, 101, 102]
        );
        assert_eq!(
            ids(entries.range(StreamId::new(98, 0), StreamId::new(102, 0), true)),
            [102, 101, 100, 99, 98]
        );
        assert_eq!(entries.first().map(|e| e.id.ms), Some(1));
        assert_eq!(entries.last().map(|e| e.id.ms), Some(250));
    }

    #[test]
    fn deleting_every_entry_of_a_node_removes_it() {
        let mut entries = Entries::default();
        for ms in 1..=150 {
            add(&mut entries, ms, &[("f", "v")]);
        }
        assert!(entries.delete(StreamId::new(5, 0)));
        assert!(!entries.delete(StreamId::new(5, 0)));
        assert!(!entries.delete(StreamId::new(500, 0)));
        assert_eq!(entries.len(), 149);
        for ms in 101..=150 {
            assert!(entries.delete(StreamId::new(ms, 0)));
        }
        assert_eq!(entries.node_count(), 1);
        assert_eq!(
            ids(entries.range(StreamId::new(3, 0), StreamId::new(7, 0), false)),
            [3, 4, 6, 7]
        );
    }

    #[test]
    fn approximate_trimming_removes_whole_nodes_only() {
        let mut entries = Entries::default();
        for ms in 1..=1000 {
            add(&mut entries, ms, &[("f", "v")]);
        }
        // Redis's own test: 1000 entries, MAXLEN ~ 555 leaves 600.
        assert_eq!(entries.trim(TrimStrategy::MaxLen(555), true, 0), 400);
        assert_eq!(entries.len(), 600);
        assert_eq!(entries.trim(TrimStrategy::MaxLen(555), false, 0), 45);
        assert_eq!(entries.len(), 555);
        assert_eq!(entries.first().map(|e| e.id.ms), Some(446));
        // Nodes ending before 700 go; the node ending at 700 stays.
        assert_eq!(
            entries.trim(TrimStrategy::MinId(StreamId::new(700, 0)), true, 0),
            155
        );
        assert_eq!(entries.first().map(|e| e.id.ms), Some(601));
        // LIMIT stops before a node that would take the count past it.
        assert_eq!(entries.trim(TrimStrategy::MaxLen(0), true, 150), 100);
    }
}
