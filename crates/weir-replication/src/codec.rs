//! weir's own wire codec for Raft messages.
//!
//! raft-rs's messages are protobuf 2 types, and protobuf 2.28's parser can
//! overflow its stack on deeply nested input (RUSTSEC-2024-0437), so bytes
//! from the network never reach it: messages travel in this flat format,
//! whose every length is checked against the bytes that remain before
//! anything is allocated.
//!
//! ```text
//! frame     u32 body length | u32 CRC-32C of the body but batch tails | body
//! body      "WRM1" | u32 message count | message*
//! message   u64 group | u8 type | u64 to, from, term, log_term, index,
//!           commit, commit_term, request_snapshot, reject_hint | u8 reject |
//!           i64 priority | bytes context | u32 entry count | entry* |
//!           u8 has_snapshot | snapshot?
//! entry     u8 type | u64 term, index | bytes data | bytes context
//! snapshot  bytes data | u64 index, term | conf state
//! conf      u32 n | u64*n (voters) | the same for learners, voters
//!           outgoing, learners next | u8 auto_leave
//! bytes     u32 length | that many bytes
//! ```
//!
//! Integers are little-endian. Messages a node only makes for itself
//! (hup, beat, unreachable, snapshot status, check quorum) and proposals
//! (never forwarded between nodes here) are refused on decode.
//!
//! A normal entry's data is empty (raft's own entries) or one Kafka batch.
//! Kafka's CRC-32C covers a batch from its attributes on, so the frame's
//! CRC leaves that tail out: it covers the batch's first
//! [`CRC_COVERS_FROM`] bytes (base offset, length, leader epoch, magic,
//! CRC) and every other byte of the body. The decoder checks each batch
//! whole ([`weir_log::batch::check_whole`]) before it accepts the frame, so
//! every byte is checked once on each side: a leader computes no CRC over
//! the batches it sends, and a follower's log does not check them again
//! ([`weir_log::Partition::append_replicated_verified`]). Batches are not
//! copied either: an encoded [`Frame`] shares them with the entries, and
//! a decoded entry's data is a slice of the frame it came in.

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use weir_log::batch::{check_whole, BatchError, Crc32c, CRC_COVERS_FROM};

use crate::store::is_data;

/// Bytes of a frame's header (body length and CRC).
pub const FRAME_HEADER_BYTES: usize = 8;
const MAGIC: [u8; 4] = *b"WRM1";

/// Limits a decoder applies; a frame that passes them may still be refused
/// for being malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body accepted (a frame announcing more is refused before
    /// it is read).
    pub max_frame_bytes: u32,
    /// The most messages in one frame.
    pub max_messages: u32,
    /// The most entries in one message.
    pub max_entries: u32,
    /// The most node ids in one list of a configuration.
    pub max_nodes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 << 20,
            max_messages: 65_536,
            max_entries: 65_536,
            max_nodes: 1_024,
        }
    }
}

/// Why bytes are not a frame of Raft messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame announces a body larger than the limit.
    #[error("frame of {announced} bytes is larger than the limit of {limit}")]
    FrameTooLarge {
        /// Bytes announced.
        announced: u32,
        /// The limit.
        limit: u32,
    },
    /// The body's CRC does not match.
    #[error("frame CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the body.
        computed: u32,
    },
    /// The body does not start with the magic.
    #[error("not a raft message frame (bad magic)")]
    BadMagic,
    /// The body ended inside a field.
    #[error("truncated: {field} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left.
        available: usize,
    },
    /// A count is above its limit.
    #[error("{what}: {count} is more than the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// A message type that is unknown or may not cross the network.
    #[error("message type {0} may not arrive from the network")]
    MessageType(u8),
    /// An unknown entry type.
    #[error("unknown entry type {0}")]
    EntryType(u8),
    /// A boolean that is neither 0 nor 1.
    #[error("{0}: not a boolean")]
    Bool(&'static str),
    /// Bytes after the last message.
    #[error("{0} bytes after the last message")]
    Trailing(usize),
    /// A normal entry's data is not one whole, intact Kafka batch.
    #[error("entry {index}: not a whole Kafka batch: {error}")]
    Batch {
        /// The entry's index.
        index: u64,
        /// What is wrong with the batch.
        error: BatchError,
    },
}

/// A Raft message and the group (partition) it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The group's id, the same on every node.
    pub group: u64,
    /// The message.
    pub message: Message,
}

/// A frame ready to write, in parts. Raft's fields and the first
/// [`CRC_COVERS_FROM`] bytes of each batch are copied into the frame's own
/// buffers; the rest of a large batch is shared with its entry, not copied,
/// and written with the others in one vectored write.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    parts: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// The frame's bytes, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes (never, once encoded).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The frame's bytes in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len);
        for part in &self.parts {
            bytes.extend_from_slice(part);
        }
        bytes
    }
}

/// Batch bytes copied into the frame's buffer rather than shared: below
/// this, a part of its own costs more than the copy.
const SHARED_TAIL_MIN_BYTES: usize = 4 << 10;

/// Builds a frame's parts and the CRC of the bytes it covers.
struct Encoder {
    parts: Vec<Bytes>,
    owned: Vec<u8>,
    /// Bytes of `owned` fed to the CRC so far.
    hashed: usize,
    crc: Crc32c,
    body_len: usize,
}

impl Encoder {
    /// Feeds `owned`'s bytes written since the last call to the CRC.
    fn hash(&mut self) {
        self.crc.update(&self.owned[self.hashed..]);
        self.hashed = self.owned.len();
    }

    /// A batch's bytes past its CRC'd head, which the frame CRC does not
    /// cover (the batch's own CRC does).
    fn put_tail(&mut self, tail: Bytes) {
        self.hash();
        if tail.len() < SHARED_TAIL_MIN_BYTES {
            self.owned.extend_from_slice(&tail);
        } else {
            self.flush();
            self.body_len += tail.len();
            self.parts.push(tail);
        }
        self.hashed = self.owned.len();
    }

    fn flush(&mut self) {
        if !self.owned.is_empty() {
            self.body_len += self.owned.len();
            self.parts.push(std::mem::take(&mut self.owned).into());
        }
        self.hashed = 0;
    }
}

/// Encodes `envelopes` as one frame. A normal entry's data, when not empty,
/// must be one whole Kafka batch: the decoder refuses anything else.
pub fn encode_frame_parts(envelopes: &[Envelope]) -> Frame {
    let mut encoder = Encoder {
        parts: vec![Bytes::new()],
        owned: Vec::with_capacity(256),
        hashed: 0,
        crc: Crc32c::new(),
        body_len: 0,
    };
    encoder.owned.extend_from_slice(&MAGIC);
    put_u32(&mut encoder.owned, len_u32(envelopes.len()));
    for envelope in envelopes {
        put_u64(&mut encoder.owned, envelope.group);
        put_message(&mut encoder, &envelope.message);
    }
    encoder.hash();
    encoder.flush();
    let mut header = Vec::with_capacity(FRAME_HEADER_BYTES);
    put_u32(&mut header, len_u32(encoder.body_len));
    put_u32(&mut header, encoder.crc.value());
    encoder.parts[0] = header.into();
    Frame {
        len: FRAME_HEADER_BYTES + encoder.body_len,
        parts: encoder.parts,
    }
}

/// The bytes `envelope` takes in a frame's body: its group, its message's
/// fixed fields, its context, entries and snapshot, with their length
/// prefixes.
pub fn envelope_encoded_len(envelope: &Envelope) -> usize {
    const MESSAGE_FIXED: usize = 8 + 1 + 9 * 8 + 1 + 8 + 4 + 4 + 1;
    const ENTRY_FIXED: usize = 1 + 8 + 8 + 4 + 4;
    const SNAPSHOT_FIXED: usize = 4 + 8 + 8 + 4 * 4 + 1;
    let message = &envelope.message;
    let entries: usize = message
        .entries
        .iter()
        .map(|entry| ENTRY_FIXED + entry.data.len() + entry.context.len())
        .sum();
    let snapshot = message.snapshot.as_ref().map_or(0, |snapshot| {
        let conf = snapshot.get_metadata().get_conf_state();
        let ids = conf.voters.len()
            + conf.learners.len()
            + conf.voters_outgoing.len()
            + conf.learners_next.len();
        SNAPSHOT_FIXED + snapshot.data.len() + 8 * ids
    });
    MESSAGE_FIXED + message.context.len() + entries + snapshot
}

/// Appends a frame holding `envelopes` to `out` (the bytes of
/// [`encode_frame_parts`], in one buffer).
pub fn encode_frame(envelopes: &[Envelope], out: &mut Vec<u8>) {
    for part in encode_frame_parts(envelopes).parts() {
        out.extend_from_slice(part);
    }
}

/// The length of the frame that `bytes` start with, header included, once
/// its header is there: checked against the limit before any of the rest
/// is read or room made for it.
pub fn frame_length(bytes: &[u8], limits: &Limits) -> Result<Option<usize>, CodecError> {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes(header[0..4].try_into().expect("four bytes"));
    if length > limits.max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            announced: length,
            limit: limits.max_frame_bytes,
        });
    }
    Ok(Some(FRAME_HEADER_BYTES + length as usize))
}

/// Decodes the frame at the start of `bytes`: `Ok(None)` if more bytes are
/// needed, otherwise the messages and the bytes the frame took. The
/// messages' data is copied out of `bytes` (see [`decode_whole_frame`]).
pub fn decode_frame(
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<Envelope>, usize)>, CodecError> {
    let Some(end) = frame_length(bytes, limits)? else {
        return Ok(None);
    };
    let Some(frame) = bytes.get(..end) else {
        return Ok(None);
    };
    decode_whole_frame(Bytes::copy_from_slice(frame), limits)
        .map(|envelopes| Some((envelopes, end)))
}

/// Decodes `frame`, exactly one whole frame. Entries' data and contexts
/// are slices of `frame`, not copies. The frame's CRC covers every byte
/// but the batches' own CRC'd bytes; each batch is checked whole (its CRC
/// among the rest) before the frame is accepted, so a follower's log need
/// not check it again.
pub fn decode_whole_frame(frame: Bytes, limits: &Limits) -> Result<Vec<Envelope>, CodecError> {
    let end = frame_length(&frame, limits)?.ok_or(CodecError::Truncated {
        field: "frame header",
        needed: FRAME_HEADER_BYTES as u64,
        available: frame.len(),
    })?;
    if end != frame.len() {
        return Err(CodecError::Truncated {
            field: "frame",
            needed: end as u64,
            available: frame.len(),
        });
    }
    let stored = u32::from_le_bytes(frame[4..8].try_into().expect("four bytes"));
    let mut reader = Reader {
        body: frame.slice(FRAME_HEADER_BYTES..),
        position: 0,
        tails: Vec::new(),
    };
    let envelopes = reader.body(limits)?;
    let computed = reader.covered_crc();
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    check_batches(&envelopes)?;
    Ok(envelopes)
}

/// Every normal entry's data is empty or one whole Kafka batch.
fn check_batches(envelopes: &[Envelope]) -> Result<(), CodecError> {
    let entries = envelopes
        .iter()
        .flat_map(|envelope| envelope.message.entries.iter());
    for entry in entries.filter(|entry| is_data(entry)) {
        check_whole(&entry.data).map_err(|error| CodecError::Batch {
            index: entry.index,
            error,
        })?;
    }
    Ok(())
}

/// Decodes a frame's body (after its length and CRC), without checking a
/// CRC: the messages and their batches as they are.
pub fn decode_body(body: &[u8], limits: &Limits) -> Result<Vec<Envelope>, CodecError> {
    let mut reader = Reader {
        body: Bytes::copy_from_slice(body),
        position: 0,
        tails: Vec::new(),
    };
    reader.body(limits)
}

/// Whether a message of this type may arrive from another node: not those
/// a node makes for itself, nor proposals (never forwarded here).
pub fn crosses_the_network(message_type: MessageType) -> bool {
    network_type(message_type as u8) == Some(message_type)
}

/// The message type with this number, if it may cross the network.
fn network_type(number: u8) -> Option<MessageType> {
    use MessageType::*;
    Some(match number {
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

fn len_u32(length: usize) -> u32 {
    u32::try_from(length).expect("a frame's lengths fit in u32 (the frame limit is below 4 GiB)")
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, len_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_u32(out, len_u32(ids.len()));
    for id in ids {
        put_u64(out, *id);
    }
}

fn message_type_byte(message_type: MessageType) -> u8 {
    u8::try_from(message_type as i32).expect("raft's message types are below 256")
}

fn put_message(encoder: &mut Encoder, message: &Message) {
    let out = &mut encoder.owned;
    out.push(message_type_byte(message.msg_type));
    for value in [
        message.to,
        message.from,
        message.term,
        message.log_term,
        message.index,
        message.commit,
        message.commit_term,
        message.request_snapshot,
        message.reject_hint,
    ] {
        put_u64(out, value);
    }
    out.push(u8::from(message.reject));
    out.extend_from_slice(&message.priority.to_le_bytes());
    put_bytes(out, &message.context);
    put_u32(out, len_u32(message.entries.len()));
    for entry in message.entries.iter() {
        put_entry(encoder, entry);
    }
    let out = &mut encoder.owned;
    match message.snapshot.as_ref() {
        None => out.push(0),
        Some(snapshot) => {
            out.push(1);
            put_snapshot(out, snapshot);
        }
    }
}

fn put_entry(encoder: &mut Encoder, entry: &Entry) {
    let entry_type = match entry.entry_type {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    };
    let out = &mut encoder.owned;
    out.push(entry_type);
    put_u64(out, entry.term);
    put_u64(out, entry.index);
    match batch_tail_at(entry.entry_type, entry.data.len()) {
        Some(tail_at) => {
            put_u32(out, len_u32(entry.data.len()));
            out.extend_from_slice(&entry.data[..tail_at]);
            encoder.put_tail(entry.data.slice(tail_at..));
        }
        None => put_bytes(out, &entry.data),
    }
    put_bytes(&mut encoder.owned, &entry.context);
}

/// Where the part of an entry's data that the frame CRC does not cover
/// starts: in a normal entry's batch, after the bytes Kafka's CRC leaves
/// out (base offset, length, leader epoch, magic and the CRC itself).
fn batch_tail_at(entry_type: EntryType, data_len: usize) -> Option<usize> {
    (entry_type == EntryType::EntryNormal && data_len > CRC_COVERS_FROM).then_some(CRC_COVERS_FROM)
}

fn put_snapshot(out: &mut Vec<u8>, snapshot: &Snapshot) {
    put_bytes(out, &snapshot.data);
    let metadata = snapshot.get_metadata();
    put_u64(out, metadata.index);
    put_u64(out, metadata.term);
    let conf = metadata.get_conf_state();
    put_ids(out, &conf.voters);
    put_ids(out, &conf.learners);
    put_ids(out, &conf.voters_outgoing);
    put_ids(out, &conf.learners_next);
    out.push(u8::from(conf.auto_leave));
}

struct Reader {
    body: Bytes,
    position: usize,
    /// Ranges of the body that the frame CRC does not cover (batch tails).
    tails: Vec<std::ops::Range<usize>>,
}

impl Reader {
    fn left(&self) -> usize {
        self.body.len() - self.position
    }

    fn take(&mut self, needed: usize, field: &'static str) -> Result<&[u8], CodecError> {
        let range = self.skip(needed, field)?;
        Ok(&self.body[range])
    }

    fn skip(
        &mut self,
        needed: usize,
        field: &'static str,
    ) -> Result<std::ops::Range<usize>, CodecError> {
        if self.left() < needed {
            return Err(CodecError::Truncated {
                field,
                needed: needed as u64,
                available: self.left(),
            });
        }
        let start = self.position;
        self.position += needed;
        Ok(start..self.position)
    }

    /// The CRC-32C of the body without its batch tails.
    fn covered_crc(&self) -> u32 {
        let mut crc = Crc32c::new();
        let mut from = 0;
        for tail in &self.tails {
            crc.update(&self.body[from..tail.start]);
            from = tail.end;
        }
        crc.update(&self.body[from..]);
        crc.value()
    }

    fn body(&mut self, limits: &Limits) -> Result<Vec<Envelope>, CodecError> {
        if self.take(4, "magic")? != MAGIC {
            return Err(CodecError::BadMagic);
        }
        let count = self.count("messages", limits.max_messages, 8 + 1 + 9 * 8)?;
        let mut envelopes = Vec::with_capacity(count);
        for _ in 0..count {
            let group = self.u64("group")?;
            let message = self.message(limits)?;
            envelopes.push(Envelope { group, message });
        }
        if self.left() != 0 {
            return Err(CodecError::Trailing(self.left()));
        }
        Ok(envelopes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, field)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::Bool(field)),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let bytes = self.take(4, field)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let bytes = self.take(8, field)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    /// A count of items of at least `item_bytes` each, checked against its
    /// limit and against the bytes left, before anything is allocated.
    fn count(
        &mut self,
        what: &'static str,
        limit: u32,
        item_bytes: usize,
    ) -> Result<usize, CodecError> {
        let count = self.u32(what)?;
        if count > limit {
            return Err(CodecError::TooMany { what, count, limit });
        }
        let needed = u64::from(count) * item_bytes as u64;
        if needed > self.left() as u64 {
            return Err(CodecError::Truncated {
                field: what,
                needed,
                available: self.left(),
            });
        }
        Ok(count as usize)
    }

    /// Length-prefixed bytes: a slice of the frame, not a copy.
    fn bytes(&mut self, field: &'static str) -> Result<Bytes, CodecError> {
        let length = self.u32(field)? as usize;
        let range = self.skip(length, field)?;
        Ok(self.body.slice(range))
    }

    fn ids(&mut self, what: &'static str, limits: &Limits) -> Result<Vec<u64>, CodecError> {
        let count = self.count(what, limits.max_nodes, 8)?;
        (0..count).map(|_| self.u64(what)).collect()
    }

    fn message(&mut self, limits: &Limits) -> Result<Message, CodecError> {
        let type_byte = self.u8("message type")?;
        let message_type = network_type(type_byte).ok_or(CodecError::MessageType(type_byte))?;
        let mut message = Message {
            msg_type: message_type,
            to: self.u64("to")?,
            from: self.u64("from")?,
            term: self.u64("term")?,
            log_term: self.u64("log term")?,
            index: self.u64("index")?,
            commit: self.u64("commit")?,
            commit_term: self.u64("commit term")?,
            request_snapshot: self.u64("request snapshot")?,
            reject_hint: self.u64("reject hint")?,
            reject: self.bool("reject")?,
            ..Message::default()
        };
        message.priority = i64::from_le_bytes(self.take(8, "priority")?.try_into().expect("8"));
        message.context = self.bytes("context")?;
        let entries = self.count("entries", limits.max_entries, 1 + 16 + 8)?;
        let mut list = Vec::with_capacity(entries);
        for _ in 0..entries {
            list.push(self.entry()?);
        }
        message.entries = list.into();
        if self.bool("has snapshot")? {
            message.snapshot = Some(self.snapshot(limits)?).into();
        }
        Ok(message)
    }

    fn entry(&mut self) -> Result<Entry, CodecError> {
        let entry_type = match self.u8("entry type")? {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            other => return Err(CodecError::EntryType(other)),
        };
        let term = self.u64("entry term")?;
        let index = self.u64("entry index")?;
        let data = self.bytes("entry data")?;
        if let Some(tail_at) = batch_tail_at(entry_type, data.len()) {
            let end = self.position;
            self.tails.push(end - data.len() + tail_at..end);
        }
        Ok(Entry {
            entry_type,
            term,
            index,
            data,
            context: self.bytes("entry context")?,
            ..Entry::default()
        })
    }

    fn snapshot(&mut self, limits: &Limits) -> Result<Snapshot, CodecError> {
        let mut snapshot = Snapshot {
            data: self.bytes("snapshot data")?,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.u64("snapshot index")?;
        metadata.term = self.u64("snapshot term")?;
        let conf = ConfState {
            voters: self.ids("voters", limits)?,
            learners: self.ids("learners", limits)?,
            voters_outgoing: self.ids("voters outgoing", limits)?,
            learners_next: self.ids("learners next", limits)?,
            auto_leave: self.bool("auto leave")?,
            ..ConfState::default()
        };
        metadata.set_conf_state(conf);
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use weir_log::batch::{encode, ProducerInfo, Record};

    fn network_types() -> Vec<MessageType> {
        (0..=u8::MAX).filter_map(network_type).collect()
    }

    /// A Kafka batch of records of these sizes (large ones are sent as
    /// shared parts of a frame, small ones copied into it).
    fn batch(sizes: &[usize]) -> Vec<u8> {
        let values: Vec<Vec<u8>> = sizes.iter().map(|size| vec![7; *size]).collect();
        let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(1, value)).collect();
        let mut batch = Vec::new();
        encode(&records, ProducerInfo::NONE, &mut batch).expect("a batch");
        batch
    }

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            0u8..3,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(0usize..6000, 0..3),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(kind, term, index, data, records, context)| {
                let entry_type = [
                    EntryType::EntryNormal,
                    EntryType::EntryConfChange,
                    EntryType::EntryConfChangeV2,
                ][kind as usize];
                // A normal entry carries a batch or nothing.
                let data = match (entry_type, records.is_empty()) {
                    (EntryType::EntryNormal, true) => Vec::new(),
                    (EntryType::EntryNormal, false) => batch(&records),
                    _ => data,
                };
                Entry {
                    entry_type,
                    term,
                    index,
                    data: data.into(),
                    context: context.into(),
                    ..Entry::default()
                }
            })
    }

    fn ids() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(any::<u64>(), 0..5)
    }

    fn snapshot_strategy() -> impl Strategy<Value = Option<Snapshot>> {
        proptest::option::of(
            (
                proptest::collection::vec(any::<u8>(), 0..32),
                any::<u64>(),
                any::<u64>(),
                (ids(), ids(), ids(), ids(), any::<bool>()),
            )
                .prop_map(|(data, index, term, conf)| {
                    let mut snapshot = Snapshot {
                        data: data.into(),
                        ..Snapshot::default()
                    };
                    snapshot.mut_metadata().index = index;
                    snapshot.mut_metadata().term = term;
                    snapshot.mut_metadata().set_conf_state(ConfState {
                        voters: conf.0,
                        learners: conf.1,
                        voters_outgoing: conf.2,
                        learners_next: conf.3,
                        auto_leave: conf.4,
                        ..ConfState::default()
                    });
                    snapshot
                }),
        )
    }

    fn envelope_strategy() -> impl Strategy<Value = Envelope> {
        let types = network_types();
        (
            any::<u64>(),
            proptest::sample::select(types),
            proptest::array::uniform9(any::<u64>()),
            any::<bool>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(entry_strategy(), 0..4),
            snapshot_strategy(),
        )
            .prop_map(
                |(group, msg_type, n, reject, priority, context, entries, snapshot)| {
                    let mut message = Message {
                        msg_type,
                        to: n[0],
                        from: n[1],
                        term: n[2],
                        log_term: n[3],
                        index: n[4],
                        commit: n[5],
                        commit_term: n[6],
                        request_snapshot: n[7],
                        reject_hint: n[8],
                        reject,
                        priority,
                        context: context.into(),
                        entries: entries.into(),
                        ..Message::default()
                    };
                    if let Some(snapshot) = snapshot {
                        message.set_snapshot(snapshot);
                    }
                    Envelope { group, message }
                },
            )
    }

    proptest! {
        #[test]
        fn an_envelopes_encoded_length_is_what_it_takes_in_a_frame(
            envelopes in proptest::collection::vec(envelope_strategy(), 0..6),
        ) {
            let body: usize = envelopes.iter().map(envelope_encoded_len).sum();
            let frame = encode_frame_parts(&envelopes);
            prop_assert_eq!(frame.len(), FRAME_HEADER_BYTES + MAGIC.len() + 4 + body);
        }

        #[test]
        fn frames_round_trip(envelopes in proptest::collection::vec(envelope_strategy(), 0..6)) {
            let mut bytes = Vec::new();
            encode_frame(&envelopes, &mut bytes);
            let limits = Limits::default();
            let (decoded, used) = decode_frame(&bytes, &limits).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(decoded, envelopes);
            // Every strict prefix asks for more bytes or is refused; none
            // decodes to something else.
            for cut in 0..bytes.len() {
                prop_assert!(decode_frame(&bytes[..cut], &limits).unwrap().is_none());
            }
        }

        #[test]
        fn flipped_bits_are_refused(
            envelopes in proptest::collection::vec(envelope_strategy(), 1..4),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut bytes = Vec::new();
            encode_frame(&envelopes, &mut bytes);
            let at = position.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let decoded = decode_frame(&bytes, &Limits::default());
            prop_assert!(!matches!(decoded, Ok(Some(_))), "corrupt frame decoded: {decoded:?}");
        }

        #[test]
        fn frames_in_parts_are_the_frames_bytes(envelopes in proptest::collection::vec(envelope_strategy(), 0..6)) {
            let frame = encode_frame_parts(&envelopes);
            let bytes = frame.to_vec();
            prop_assert_eq!(bytes.len(), frame.len());
            let decoded = decode_whole_frame(Bytes::from(bytes), &Limits::default()).unwrap();
            prop_assert_eq!(decoded, envelopes);
        }

        #[test]
        fn bodies_of_random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&body);
            let _ = decode_body(&body, &Limits::default());
            let _ = decode_body(&with_magic, &Limits::default());
        }
    }

    fn append_of(data: Vec<u8>) -> Envelope {
        Envelope {
            group: 2,
            message: Message {
                msg_type: MessageType::MsgAppend,
                entries: vec![Entry {
                    term: 1,
                    index: 5,
                    data: data.into(),
                    ..Entry::default()
                }]
                .into(),
                ..Message::default()
            },
        }
    }

    #[test]
    fn large_batches_are_shared_not_copied() {
        let data = Bytes::from(batch(&[10_000, 10_000]));
        let mut envelope = append_of(Vec::new());
        envelope.message.entries[0].data = data.clone();
        let frame = encode_frame_parts(&[envelope]);
        let shared = frame
            .parts()
            .iter()
            .find(|part| part.len() == data.len() - CRC_COVERS_FROM)
            .expect("the batch's tail is a part of its own");
        assert_eq!(shared.as_ptr(), data[CRC_COVERS_FROM..].as_ptr());
        let bytes = Bytes::from(frame.to_vec());
        let decoded = decode_whole_frame(bytes.clone(), &Limits::default()).unwrap();
        let entry = &decoded[0].message.entries[0];
        assert_eq!(entry.data, data);
        // The decoded batch is a slice of the frame's buffer.
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&entry.data.as_ptr()));
    }

    #[test]
    fn a_normal_entry_must_carry_a_whole_batch() {
        for data in [vec![1, 2, 3], vec![0; 100], {
            let mut twice = batch(&[5]);
            twice.extend_from_slice(&batch(&[5]));
            twice
        }] {
            let mut bytes = Vec::new();
            encode_frame(&[append_of(data)], &mut bytes);
            assert!(
                matches!(
                    decode_frame(&bytes, &Limits::default()),
                    Err(CodecError::Batch { index: 5, .. })
                ),
                "{:?}",
                decode_frame(&bytes, &Limits::default())
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_a_batch_tail_fails_the_batch_crc() {
        let data = batch(&[10_000]);
        let mut bytes = Vec::new();
        encode_frame(&[append_of(data.clone())], &mut bytes);
        let at = bytes
            .windows(data.len())
            .position(|window| window == data)
            .expect("the batch is in the frame");
        bytes[at + CRC_COVERS_FROM + 100] ^= 4;
        assert!(matches!(
            decode_frame(&bytes, &Limits::default()),
            Err(CodecError::Batch {
                error: BatchError::ChecksumMismatch { .. },
                ..
            })
        ));
    }

    #[test]
    fn local_messages_are_refused() {
        for local in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgPropose,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            let envelope = Envelope {
                group: 1,
                message: Message {
                    msg_type: local,
                    ..Message::default()
                },
            };
            let mut bytes = Vec::new();
            encode_frame(&[envelope], &mut bytes);
            assert_eq!(
                decode_frame(&bytes, &Limits::default()),
                Err(CodecError::MessageType(local as u8))
            );
        }
    }

    #[test]
    fn counts_beyond_the_bytes_are_refused_before_allocating() {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_body(&body, &Limits::default()),
            Err(CodecError::TooMany { .. })
        ));
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            decode_body(&body, &Limits::default()),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn oversized_frames_are_refused_from_their_header() {
        let limits = Limits {
            max_frame_bytes: 100,
            ..Limits::default()
        };
        let mut bytes = 101u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode_frame(&bytes, &limits),
            Err(CodecError::FrameTooLarge {
                announced: 101,
                limit: 100
            })
        );
    }
}
