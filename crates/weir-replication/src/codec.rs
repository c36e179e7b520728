//! weir's own wire codec for Raft messages.
//!
//! raft-rs's messages are protobuf 2 types, and protobuf 2.28's parser can
//! overflow its stack on deeply nested input (RUSTSEC-2024-0437), so bytes
//! from the network never reach it: messages travel in this flat format,
//! whose every length is checked against the bytes that remain before
//! anything is allocated.
//!
//! ```text
//! frame     u32 body length | u32 CRC-32C of the body | body
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

use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use weir_log::batch::crc32c;

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
}

/// A Raft message and the group (partition) it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The group's id, the same on every node.
    pub group: u64,
    /// The message.
    pub message: Message,
}

/// Appends a frame holding `envelopes` to `out`.
pub fn encode_frame(envelopes: &[Envelope], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.extend_from_slice(&MAGIC);
    put_u32(out, len_u32(envelopes.len()));
    for envelope in envelopes {
        put_u64(out, envelope.group);
        put_message(out, &envelope.message);
    }
    let body = &out[start + FRAME_HEADER_BYTES..];
    let length = len_u32(body.len());
    let crc = crc32c(body);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `bytes`: `Ok(None)` if more bytes are
/// needed, otherwise the messages and the bytes the frame took.
pub fn decode_frame(
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<Envelope>, usize)>, CodecError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("four bytes"));
    if length > limits.max_frame_bytes {
        return Err(CodecError::FrameTooLarge {
            announced: length,
            limit: limits.max_frame_bytes,
        });
    }
    let end = FRAME_HEADER_BYTES + length as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("four bytes"));
    let body = &bytes[FRAME_HEADER_BYTES..end];
    let computed = crc32c(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    decode_body(body, limits).map(|envelopes| Some((envelopes, end)))
}

/// Decodes a frame's body (after its length and CRC).
pub fn decode_body(body: &[u8], limits: &Limits) -> Result<Vec<Envelope>, CodecError> {
    let mut reader = Reader { bytes: body };
    if reader.take(4, "magic")? != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let count = reader.count("messages", limits.max_messages, 8 + 1 + 9 * 8)?;
    let mut envelopes = Vec::with_capacity(count);
    for _ in 0..count {
        let group = reader.u64("group")?;
        let message = reader.message(limits)?;
        envelopes.push(Envelope { group, message });
    }
    if !reader.bytes.is_empty() {
        return Err(CodecError::Trailing(reader.bytes.len()));
    }
    Ok(envelopes)
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

fn put_message(out: &mut Vec<u8>, message: &Message) {
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
        put_entry(out, entry);
    }
    match message.snapshot.as_ref() {
        None => out.push(0),
        Some(snapshot) => {
            out.push(1);
            put_snapshot(out, snapshot);
        }
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    let entry_type = match entry.entry_type {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    };
    out.push(entry_type);
    put_u64(out, entry.term);
    put_u64(out, entry.index);
    put_bytes(out, &entry.data);
    put_bytes(out, &entry.context);
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

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, needed: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < needed {
            return Err(CodecError::Truncated {
                field,
                needed: needed as u64,
                available: self.bytes.len(),
            });
        }
        let (taken, rest) = self.bytes.split_at(needed);
        self.bytes = rest;
        Ok(taken)
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
        if needed > self.bytes.len() as u64 {
            return Err(CodecError::Truncated {
                field: what,
                needed,
                available: self.bytes.len(),
            });
        }
        Ok(count as usize)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, CodecError> {
        let length = self.u32(field)? as usize;
        Ok(self.take(length, field)?.to_vec())
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
        message.context = self.bytes("context")?.into();
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
        Ok(Entry {
            entry_type,
            term: self.u64("entry term")?,
            index: self.u64("entry index")?,
            data: self.bytes("entry data")?.into(),
            context: self.bytes("entry context")?.into(),
            ..Entry::default()
        })
    }

    fn snapshot(&mut self, limits: &Limits) -> Result<Snapshot, CodecError> {
        let mut snapshot = Snapshot {
            data: self.bytes("snapshot data")?.into(),
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

    fn network_types() -> Vec<MessageType> {
        (0..=u8::MAX).filter_map(network_type).collect()
    }

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            0u8..3,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(kind, term, index, data, context)| Entry {
                entry_type: [
                    EntryType::EntryNormal,
                    EntryType::EntryConfChange,
                    EntryType::EntryConfChangeV2,
                ][kind as usize],
                term,
                index,
                data: data.into(),
                context: context.into(),
                ..Entry::default()
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
        fn bodies_of_random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&body);
            let _ = decode_body(&body, &Limits::default());
            let _ = decode_body(&with_magic, &Limits::default());
        }
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
