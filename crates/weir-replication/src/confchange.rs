//! Configuration changes, read without protobuf's parser.
//!
//! raft-rs stores a configuration change in its entry as protobuf bytes
//! (`ConfChangeV2`), which followers receive off the network. Rather than
//! hand those bytes to protobuf 2's parser (RUSTSEC-2024-0437), weir reads
//! them with this decoder of exactly the subset raft-rs's encoder writes:
//!
//! ```text
//! ConfChangeV2      field 1 varint  transition (0 auto, 1 implicit, 2 explicit)
//!                   field 2 bytes   a ConfChangeSingle (repeated)
//!                   field 3 bytes   context
//! ConfChangeSingle  field 1 varint  change type (0 add, 1 remove, 2 add learner)
//!                   field 2 varint  node id
//! ```
//!
//! Anything else (another field or wire type, a varint longer than ten
//! bytes, a length past the end, an unknown enum value) is refused. The
//! nesting is one level deep by construction.

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

/// The most single changes in one configuration change.
pub const MAX_CHANGES: usize = 64;

/// Why bytes are not a configuration change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a configuration change: {0}")]
pub struct ConfChangeError(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, ConfChangeError> {
    Err(ConfChangeError(reason.into()))
}

/// Encodes a `ConfChangeV2` exactly as protobuf does (fields in order,
/// zero values left out): for the entries weir writes itself.
pub fn encode_conf_change(change: &ConfChangeV2) -> Vec<u8> {
    let mut out = Vec::new();
    let transition = change.transition as u64;
    if transition != 0 {
        put_varint(&mut out, 1 << 3);
        put_varint(&mut out, transition);
    }
    for single in change.changes.iter() {
        let mut inner = Vec::new();
        let change_type = single.change_type as u64;
        if change_type != 0 {
            put_varint(&mut inner, 1 << 3);
            put_varint(&mut inner, change_type);
        }
        if single.node_id != 0 {
            put_varint(&mut inner, 2 << 3);
            put_varint(&mut inner, single.node_id);
        }
        put_varint(&mut out, (2 << 3) | 2);
        put_varint(&mut out, inner.len() as u64);
        out.extend_from_slice(&inner);
    }
    if !change.context.is_empty() {
        put_varint(&mut out, (3 << 3) | 2);
        put_varint(&mut out, change.context.len() as u64);
        out.extend_from_slice(&change.context);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decodes a `ConfChangeV2` as raft-rs encodes it.
pub fn decode_conf_change(bytes: &[u8]) -> Result<ConfChangeV2, ConfChangeError> {
    let mut reader = Reader(bytes);
    let mut change = ConfChangeV2::default();
    while !reader.0.is_empty() {
        match reader.tag()? {
            (1, 0) => change.transition = transition(reader.varint()?)?,
            (2, 2) => {
                if change.changes.len() == MAX_CHANGES {
                    return refuse(format!("more than {MAX_CHANGES} changes"));
                }
                let single = decode_single(reader.bytes()?)?;
                change.changes.push(single);
            }
            (3, 2) => change.context = reader.bytes()?.to_vec().into(),
            (field, wire) => return refuse(format!("field {field} of wire type {wire}")),
        }
    }
    Ok(change)
}

fn decode_single(bytes: &[u8]) -> Result<ConfChangeSingle, ConfChangeError> {
    let mut reader = Reader(bytes);
    let mut single = ConfChangeSingle::default();
    while !reader.0.is_empty() {
        match reader.tag()? {
            (1, 0) => single.change_type = change_type(reader.varint()?)?,
            (2, 0) => single.node_id = reader.varint()?,
            (field, wire) => {
                return refuse(format!("single change field {field} of wire type {wire}"))
            }
        }
    }
    Ok(single)
}

fn transition(value: u64) -> Result<ConfChangeTransition, ConfChangeError> {
    Ok(match value {
        0 => ConfChangeTransition::Auto,
        1 => ConfChangeTransition::Implicit,
        2 => ConfChangeTransition::Explicit,
        other => return refuse(format!("transition {other}")),
    })
}

fn change_type(value: u64) -> Result<ConfChangeType, ConfChangeError> {
    Ok(match value {
        0 => ConfChangeType::AddNode,
        1 => ConfChangeType::RemoveNode,
        2 => ConfChangeType::AddLearnerNode,
        other => return refuse(format!("change type {other}")),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ConfChangeError> {
        let mut value = 0u64;
        for (position, byte) in self.0.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            if position == 9 && bits > 1 {
                return refuse("varint past 64 bits");
            }
            value |= bits << (7 * position);
            if byte & 0x80 == 0 {
                self.0 = &self.0[position + 1..];
                return Ok(value);
            }
        }
        refuse("varint unterminated or longer than ten bytes")
    }

    fn tag(&mut self) -> Result<(u64, u64), ConfChangeError> {
        let tag = self.varint()?;
        Ok((tag >> 3, tag & 7))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ConfChangeError> {
        let length = self.varint()?;
        if length > self.0.len() as u64 {
            return refuse("length past the end");
        }
        let (taken, rest) = self
            .0
            .split_at(usize::try_from(length).expect("below the slice's length"));
        self.0 = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protobuf::Message as _;

    fn single() -> impl Strategy<Value = ConfChangeSingle> {
        (0u8..3, any::<u64>()).prop_map(|(kind, node_id)| ConfChangeSingle {
            change_type: change_type(u64::from(kind)).expect("a known type"),
            node_id,
            ..ConfChangeSingle::default()
        })
    }

    proptest! {
        /// What raft-rs's protobuf encoder writes, this decoder reads back
        /// to the same change.
        #[test]
        fn reads_what_protobuf_writes(
            kind in 0u8..3,
            changes in proptest::collection::vec(single(), 0..6),
            context in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let change = ConfChangeV2 {
                transition: transition(u64::from(kind)).expect("a known transition"),
                changes: changes.into(),
                context: context.into(),
                ..ConfChangeV2::default()
            };
            let bytes = change.write_to_bytes().expect("protobuf encodes");
            prop_assert_eq!(&encode_conf_change(&change), &bytes, "weir's encoding differs from protobuf's");
            prop_assert_eq!(decode_conf_change(&bytes), Ok(change));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_conf_change(&bytes);
        }
    }

    #[test]
    fn unknown_fields_and_nesting_are_refused() {
        // Field 4 (unknown), a group (wire type 3), a length past the end.
        for bytes in [&[0x20, 0x01][..], &[0x0b][..], &[0x12, 0x05, 0x08][..]] {
            assert!(decode_conf_change(bytes).is_err(), "{bytes:?} accepted");
        }
        // A single change nesting a message where a varint belongs.
        assert!(decode_conf_change(&[0x12, 0x02, 0x0a, 0x00]).is_err());
    }
}
