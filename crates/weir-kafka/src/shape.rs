//! The shape check: every request body is walked against its schema for
//! the version at hand before `kafka-protocol` decodes it, and refused if
//! an array, string or byte field breaks a named limit or runs past the
//! end of the request.
//!
//! Why a walk before the decoder: `kafka-protocol` 0.18 sizes a vector
//! from an array's count before decoding any element
//! (`Vec::with_capacity(count)`), so a request of a few bytes claiming two
//! billion elements would ask for hundreds of gigabytes and abort the
//! whole process (upstream: kafka-protocol-rs pull requests 152, 161 and
//! 200, open). Here an array's count must fit in the bytes left (every
//! element takes at least one byte) and in [`ARRAY_ELEMENTS_MAX`]; strings
//! and byte fields must fit too.
//!
//! The schemas below follow Kafka's message definitions for the versions
//! weir advertises (and only those: a version outside
//! [`crate::versions::SUPPORTED`] never gets here). The tests encode
//! requests with `kafka-protocol` at every advertised version and check
//! that the walk accepts them and consumes exactly their bytes.

use kafka_protocol::messages::ApiKey;

use crate::limits::{ARRAY_ELEMENTS_MAX, BYTES_FIELD_MAX, STRING_BYTES_MAX};

/// A field's wire type.
#[derive(Clone, Copy, Debug)]
enum T {
    I8,
    I16,
    I32,
    I64,
    Bool,
    Uuid,
    /// A string, nullable or not.
    Str,
    /// A byte field (protocol metadata, assignments, SASL tokens).
    Bytes,
    /// A record batch field (bounded by the request size and, later, by
    /// the log's batch limit).
    Records,
    /// An array of structs (each flexible element ends with tagged fields).
    Structs(&'static [F]),
    /// An array of strings.
    Strings,
    /// An array of 32-bit integers.
    Ints,
}

/// A field present in versions `min..=max`.
#[derive(Clone, Copy, Debug)]
struct F {
    t: T,
    min: i16,
    max: i16,
}

const fn f(t: T, min: i16) -> F {
    F {
        t,
        min,
        max: i16::MAX,
    }
}

const fn upto(t: T, min: i16, max: i16) -> F {
    F { t, min, max }
}

use T::*;

const PRODUCE_PARTITION: &[F] = &[f(I32, 0), f(Records, 0)];
const PRODUCE_TOPIC: &[F] = &[
    upto(Str, 0, 12),
    f(Uuid, 13),
    f(Structs(PRODUCE_PARTITION), 0),
];
const PRODUCE: &[F] = &[
    f(Str, 3),
    f(I16, 0),
    f(I32, 0),
    f(Structs(PRODUCE_TOPIC), 0),
];

const FETCH_PARTITION: &[F] = &[
    f(I32, 0),
    f(I32, 9),
    f(I64, 0),
    f(I32, 12),
    f(I64, 5),
    f(I32, 0),
];
const FETCH_TOPIC: &[F] = &[
    upto(Str, 0, 12),
    f(Uuid, 13),
    f(Structs(FETCH_PARTITION), 0),
];
const FORGOTTEN_TOPIC: &[F] = &[upto(Str, 7, 12), f(Uuid, 13), f(Ints, 7)];
const FETCH: &[F] = &[
    upto(I32, 0, 14),
    f(I32, 0),
    f(I32, 0),
    f(I32, 3),
    f(I8, 4),
    f(I32, 7),
    f(I32, 7),
    f(Structs(FETCH_TOPIC), 0),
    f(Structs(FORGOTTEN_TOPIC), 7),
    f(Str, 11),
];

const LIST_OFFSETS_PARTITION: &[F] = &[f(I32, 0), f(I32, 4), f(I64, 0), upto(I32, 0, 0)];
const LIST_OFFSETS_TOPIC: &[F] = &[f(Str, 0), f(Structs(LIST_OFFSETS_PARTITION), 0)];
const LIST_OFFSETS: &[F] = &[
    f(I32, 0),
    f(I8, 2),
    f(Structs(LIST_OFFSETS_TOPIC), 0),
    f(I32, 10),
];

const METADATA_TOPIC: &[F] = &[f(Uuid, 10), f(Str, 0)];
const METADATA: &[F] = &[
    f(Structs(METADATA_TOPIC), 0),
    f(Bool, 4),
    upto(Bool, 8, 10),
    f(Bool, 8),
];

const COMMIT_PARTITION: &[F] = &[f(I32, 0), f(I64, 0), f(I32, 6), upto(I64, 1, 1), f(Str, 0)];
const COMMIT_TOPIC: &[F] = &[f(Str, 0), f(Structs(COMMIT_PARTITION), 0)];
const OFFSET_COMMIT: &[F] = &[
    f(Str, 0),
    f(I32, 1),
    f(Str, 1),
    f(Str, 7),
    upto(I64, 2, 4),
    f(Structs(COMMIT_TOPIC), 0),
];

const OFFSET_FETCH_TOPIC: &[F] = &[f(Str, 0), f(Ints, 0)];
const OFFSET_FETCH: &[F] = &[
    upto(Str, 0, 7),
    upto(Structs(OFFSET_FETCH_TOPIC), 0, 7),
    f(Bool, 7),
];

const FIND_COORDINATOR: &[F] = &[upto(Str, 0, 3), f(I8, 1), f(Strings, 4)];

const JOIN_PROTOCOL: &[F] = &[f(Str, 0), f(Bytes, 0)];
const JOIN_GROUP: &[F] = &[
    f(Str, 0),
    f(I32, 0),
    f(I32, 1),
    f(Str, 0),
    f(Str, 5),
    f(Str, 0),
    f(Structs(JOIN_PROTOCOL), 0),
    f(Str, 8),
];

const HEARTBEAT: &[F] = &[f(Str, 0), f(I32, 0), f(Str, 0), f(Str, 3)];

const LEAVE_MEMBER: &[F] = &[f(Str, 3), f(Str, 3), f(Str, 5)];
const LEAVE_GROUP: &[F] = &[f(Str, 0), upto(Str, 0, 2), f(Structs(LEAVE_MEMBER), 3)];

const SYNC_ASSIGNMENT: &[F] = &[f(Str, 0), f(Bytes, 0)];
const SYNC_GROUP: &[F] = &[
    f(Str, 0),
    f(I32, 0),
    f(Str, 0),
    f(Str, 3),
    f(Str, 5),
    f(Str, 5),
    f(Structs(SYNC_ASSIGNMENT), 0),
];

const DESCRIBE_GROUPS: &[F] = &[f(Strings, 0), f(Bool, 3)];
const LIST_GROUPS: &[F] = &[f(Strings, 4), f(Strings, 5)];
const SASL_HANDSHAKE: &[F] = &[f(Str, 0)];
const API_VERSIONS: &[F] = &[f(Str, 3), f(Str, 3)];

const CREATE_ASSIGNMENT: &[F] = &[f(I32, 0), f(Ints, 0)];
const CREATE_CONFIG: &[F] = &[f(Str, 0), f(Str, 0)];
const CREATE_TOPIC: &[F] = &[
    f(Str, 0),
    f(I32, 0),
    f(I16, 0),
    f(Structs(CREATE_ASSIGNMENT), 0),
    f(Structs(CREATE_CONFIG), 0),
];
const CREATE_TOPICS: &[F] = &[f(Structs(CREATE_TOPIC), 0), f(I32, 0), f(Bool, 1)];

const DELETE_TOPIC: &[F] = &[f(Str, 6), f(Uuid, 6)];
const DELETE_TOPICS: &[F] = &[f(Structs(DELETE_TOPIC), 6), upto(Strings, 0, 5), f(I32, 0)];

const INIT_PRODUCER_ID: &[F] = &[
    f(Str, 0),
    f(I32, 0),
    f(I64, 3),
    f(I16, 3),
    f(Bool, 6),
    f(Bool, 6),
];

const DESCRIBE_CONFIGS_RESOURCE: &[F] = &[f(I8, 0), f(Str, 0), f(Strings, 0)];
const DESCRIBE_CONFIGS: &[F] = &[
    f(Structs(DESCRIBE_CONFIGS_RESOURCE), 0),
    f(Bool, 1),
    f(Bool, 3),
];

const ALTER_CONFIG: &[F] = &[f(Str, 0), f(Str, 0)];
const ALTER_CONFIGS_RESOURCE: &[F] = &[f(I8, 0), f(Str, 0), f(Structs(ALTER_CONFIG), 0)];
const ALTER_CONFIGS: &[F] = &[f(Structs(ALTER_CONFIGS_RESOURCE), 0), f(Bool, 0)];
const INCREMENTAL_CONFIG: &[F] = &[f(Str, 0), f(I8, 0), f(Str, 0)];
const INCREMENTAL_RESOURCE: &[F] = &[f(I8, 0), f(Str, 0), f(Structs(INCREMENTAL_CONFIG), 0)];
const INCREMENTAL_ALTER_CONFIGS: &[F] = &[f(Structs(INCREMENTAL_RESOURCE), 0), f(Bool, 0)];

const SASL_AUTHENTICATE: &[F] = &[f(Bytes, 0)];
const DELETE_GROUPS: &[F] = &[f(Strings, 0)];

const PARTITIONS_ASSIGNMENT: &[F] = &[f(Ints, 0)];
const PARTITIONS_TOPIC: &[F] = &[f(Str, 0), f(I32, 0), f(Structs(PARTITIONS_ASSIGNMENT), 0)];
const CREATE_PARTITIONS: &[F] = &[f(Structs(PARTITIONS_TOPIC), 0), f(I32, 0), f(Bool, 0)];

const REASSIGN_PARTITION: &[F] = &[f(I32, 0), f(Ints, 0)];
const REASSIGN_TOPIC: &[F] = &[f(Str, 0), f(Structs(REASSIGN_PARTITION), 0)];
const ALTER_REASSIGNMENTS: &[F] = &[f(I32, 0), f(Bool, 1), f(Structs(REASSIGN_TOPIC), 0)];
const LIST_REASSIGNMENTS_TOPIC: &[F] = &[f(Str, 0), f(Ints, 0)];
const LIST_REASSIGNMENTS: &[F] = &[f(I32, 0), f(Structs(LIST_REASSIGNMENTS_TOPIC), 0)];

const QUORUM_PARTITION: &[F] = &[f(I32, 0)];
const QUORUM_TOPIC: &[F] = &[f(Str, 0), f(Structs(QUORUM_PARTITION), 0)];
const DESCRIBE_QUORUM: &[F] = &[f(Structs(QUORUM_TOPIC), 0)];

/// The schema of an API's request and its first flexible version.
fn schema(api: ApiKey) -> Option<(&'static [F], i16)> {
    Some(match api {
        ApiKey::Produce => (PRODUCE, 9),
        ApiKey::Fetch => (FETCH, 12),
        ApiKey::ListOffsets => (LIST_OFFSETS, 6),
        ApiKey::Metadata => (METADATA, 9),
        ApiKey::OffsetCommit => (OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (OFFSET_FETCH, 6),
        ApiKey::FindCoordinator => (FIND_COORDINATOR, 3),
        ApiKey::JoinGroup => (JOIN_GROUP, 6),
        ApiKey::Heartbeat => (HEARTBEAT, 4),
        ApiKey::LeaveGroup => (LEAVE_GROUP, 4),
        ApiKey::SyncGroup => (SYNC_GROUP, 4),
        ApiKey::DescribeGroups => (DESCRIBE_GROUPS, 5),
        ApiKey::ListGroups => (LIST_GROUPS, 3),
        ApiKey::SaslHandshake => (SASL_HANDSHAKE, i16::MAX),
        ApiKey::ApiVersions => (API_VERSIONS, 3),
        ApiKey::CreateTopics => (CREATE_TOPICS, 5),
        ApiKey::DeleteTopics => (DELETE_TOPICS, 4),
        ApiKey::InitProducerId => (INIT_PRODUCER_ID, 2),
        ApiKey::DescribeConfigs => (DESCRIBE_CONFIGS, 4),
        ApiKey::SaslAuthenticate => (SASL_AUTHENTICATE, 2),
        ApiKey::DeleteGroups => (DELETE_GROUPS, 2),
        ApiKey::AlterConfigs => (ALTER_CONFIGS, 2),
        ApiKey::IncrementalAlterConfigs => (INCREMENTAL_ALTER_CONFIGS, 1),
        ApiKey::CreatePartitions => (CREATE_PARTITIONS, 2),
        ApiKey::AlterPartitionReassignments => (ALTER_REASSIGNMENTS, 0),
        ApiKey::ListPartitionReassignments => (LIST_REASSIGNMENTS, 0),
        ApiKey::DescribeQuorum => (DESCRIBE_QUORUM, 0),
        _ => return None,
    })
}

struct Walk<'a> {
    bytes: &'a [u8],
    position: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, count: usize, what: &str) -> Result<&[u8], String> {
        if count > self.remaining() {
            return Err(format!(
                "{what} of {count} bytes runs past the end of the request ({} left)",
                self.remaining()
            ));
        }
        let taken = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(taken)
    }

    fn int(&mut self, width: usize) -> Result<i64, String> {
        let bytes = self.take(width, "an integer")?;
        let mut value: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for byte in bytes {
            value = (value << 8) | i64::from(*byte);
        }
        Ok(value)
    }

    fn unsigned_varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1, "a varint")?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".into())
    }

    /// A length or count: `None` for null.
    fn length(&mut self, width: usize) -> Result<Option<usize>, String> {
        let raw = if self.flexible {
            self.unsigned_varint()? as i64 - 1
        } else {
            self.int(width)?
        };
        match raw {
            -1 => Ok(None),
            raw if raw < 0 => Err(format!("negative length {raw}")),
            raw => Ok(Some(raw as usize)),
        }
    }

    fn sized(&mut self, width: usize, limit: usize, what: &str) -> Result<(), String> {
        if let Some(length) = self.length(width)? {
            if length > limit {
                return Err(format!(
                    "{what} of {length} bytes exceeds the limit of {limit}"
                ));
            }
            self.take(length, what)?;
        }
        Ok(())
    }

    fn count(&mut self) -> Result<usize, String> {
        let Some(count) = self.length(4)? else {
            return Ok(0);
        };
        if count > ARRAY_ELEMENTS_MAX {
            return Err(format!(
                "an array of {count} elements exceeds the limit of {ARRAY_ELEMENTS_MAX}"
            ));
        }
        if count > self.remaining() {
            return Err(format!(
                "an array of {count} elements cannot fit in the {} bytes left",
                self.remaining()
            ));
        }
        Ok(count)
    }

    fn field(&mut self, t: T) -> Result<(), String> {
        match t {
            I8 | Bool => self.take(1, "a field").map(drop),
            I16 => self.take(2, "a field").map(drop),
            I32 => self.take(4, "a field").map(drop),
            I64 => self.take(8, "a field").map(drop),
            Uuid => self.take(16, "a uuid").map(drop),
            Str => self.sized(2, STRING_BYTES_MAX, "a string"),
            Bytes => self.sized(4, BYTES_FIELD_MAX, "a byte field"),
            Records => self.sized(4, usize::MAX, "a record batch"),
            Structs(fields) => {
                for _ in 0..self.count()? {
                    self.structure(fields)?;
                }
                Ok(())
            }
            Strings => {
                for _ in 0..self.count()? {
                    self.field(Str)?;
                }
                Ok(())
            }
            Ints => {
                let count = self.count()?;
                self.take(count * 4, "an array of integers").map(drop)
            }
        }
    }

    fn structure(&mut self, fields: &[F]) -> Result<(), String> {
        for field in fields {
            if (field.min..=field.max).contains(&self.version) {
                self.field(field.t)?;
            }
        }
        if self.flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self) -> Result<(), String> {
        let count = self.unsigned_varint()? as usize;
        if count > self.remaining() {
            return Err(format!("{count} tagged fields cannot fit in the request"));
        }
        let mut previous = None;
        for _ in 0..count {
            let tag = self.unsigned_varint()?;
            if tag > i32::MAX as u64 {
                return Err(format!("tag {tag} is out of range"));
            }
            // Kafka writes tags in ascending order, each once.
            if previous.is_some_and(|previous| tag <= previous) {
                return Err(format!("tag {tag} out of order or repeated"));
            }
            previous = Some(tag);
            let size = self.unsigned_varint()? as usize;
            self.take(size, "a tagged field")?;
        }
        Ok(())
    }
}

/// Checks a request body (after its header) of `api` at `version`.
pub fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    check_consumed(api, version, body).map(drop)
}

/// [`check`], returning how many bytes the body's fields took.
pub fn check_consumed(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let (fields, flexible_from) =
        schema(api).ok_or_else(|| format!("{api:?} requests are not handled"))?;
    let mut walk = Walk {
        bytes: body,
        position: 0,
        version,
        flexible: version >= flexible_from,
    };
    walk.structure(fields)?;
    Ok(walk.position)
}

#[cfg(test)]
mod tests;
