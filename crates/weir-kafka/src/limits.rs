//! Named limits on what a Kafka client may send. Each has Kafka's name
//! where Kafka has the setting; a request that breaks one closes its
//! connection (with the reason logged) or gets Kafka's error code, and
//! nothing of it is stored.

/// The largest request, size prefix excluded (Kafka's
/// `socket.request.max.bytes`, 100 MiB by default).
pub const REQUEST_BYTES_MAX: usize = 100 << 20;

/// The smallest request that can be one: API key, version, correlation id
/// and the client id's length.
pub const REQUEST_BYTES_MIN: usize = 10;

/// The most elements any array of a request may hold, whatever the bytes
/// left (each element takes at least one byte, so fewer are possible in a
/// small request): topics in a produce or fetch, partitions per topic,
/// group members, protocols.
pub const ARRAY_ELEMENTS_MAX: usize = 100_000;

/// The longest string of a request (Kafka's strings have an `i16` length;
/// compact strings are held to the same).
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

/// The largest byte field that is not a record batch: group protocol
/// metadata, member assignments, SASL tokens.
pub const BYTES_FIELD_MAX: usize = 1 << 20;

/// The largest fetch response weir builds (Kafka's `fetch.max.bytes`,
/// 55 MiB by default): a request asking for more gets this.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 55 << 20;

/// The longest a fetch may wait for records by default (a client asking
/// for more gets this; [`crate::KafkaSettings::fetch_wait_ms_max`]).
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// The shortest and longest session timeouts a group member may ask for
/// (Kafka's `group.min.session.timeout.ms` and
/// `group.max.session.timeout.ms`).
pub const GROUP_SESSION_TIMEOUT_MS_MIN: i32 = 6_000;
/// See [`GROUP_SESSION_TIMEOUT_MS_MIN`].
pub const GROUP_SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;

/// The most members a group may have (Kafka's `group.max.size`, unbounded
/// by default there; bounded here so that one client cannot grow the
/// coordinator without end).
pub const GROUP_MEMBERS_MAX: usize = 1_000;

/// The most groups the coordinator keeps in memory.
pub const GROUPS_MAX: usize = 100_000;

/// The most member ids handed out and not yet used to join (the "member id
/// required" round trip), per group.
pub const PENDING_MEMBERS_MAX: usize = 1_000;
